"""The common result type that every model (and optimizer) produces."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..geometry.ply import write_ply


@dataclass
class PointCloud:
    """A coloured point cloud: points Nx3 float32, colors Nx3 uint8 RGB."""

    points: np.ndarray
    colors: np.ndarray

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=np.float32).reshape(-1, 3)
        self.colors = np.asarray(self.colors, dtype=np.uint8).reshape(-1, 3)
        if self.points.shape[0] != self.colors.shape[0]:
            raise ValueError(f"{self.points.shape[0]} points but {self.colors.shape[0]} colours")

    @classmethod
    def from_views(
        cls,
        point_maps: list[np.ndarray],
        images: list[np.ndarray],
        masks: list[np.ndarray] | None = None,
    ) -> PointCloud:
        """Fuse per-view HxWx3 point maps coloured by their HxWx3 RGB images, keeping the
        pixels that are finite and inside each view's optional boolean mask."""
        points, colors = [], []
        for index, (point_map, image) in enumerate(zip(point_maps, images, strict=True)):
            point_map = point_map.reshape(-1, 3)
            keep = np.isfinite(point_map).all(axis=1)
            if masks is not None:
                keep &= np.asarray(masks[index]).reshape(-1)
            points.append(point_map[keep])
            colors.append(image.reshape(-1, 3)[keep])
        if not points:
            return cls(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8))
        return cls(np.concatenate(points), np.concatenate(colors))

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def to_open3d(self) -> Any:
        """Return an ``open3d.geometry.PointCloud`` (colours as floats in [0, 1])."""
        from .imports import import_optional

        o3d = import_optional("open3d", "open3d-cpu")
        cloud = o3d.geometry.PointCloud()
        cloud.points = o3d.utility.Vector3dVector(self.points.astype(np.float64))
        cloud.colors = o3d.utility.Vector3dVector(self.colors.astype(np.float64) / 255.0)
        return cloud


@dataclass
class SceneFromViewsResult:
    """What a reconstruction of N views yields, all in the frame of the first view.

    Poses are 4x4 camera-to-world with OpenCV camera axes (x right, y down, z forward).
    Per-view arrays live in the pixels of the processed (model-input) image; `intrinsics`
    refer to those pixels.  Units are metres only for metric models, otherwise the
    model's own scale ("map units").  `masks` (per view HxW bool, optional) are the pixels
    the model keeps: its confidence threshold, background masks and padding applied; the
    fused cloud and the mapper use only those.
    """

    global_point_cloud: PointCloud
    camera_poses: list[np.ndarray]
    processed_images: list[np.ndarray]
    depth_predictions: list[np.ndarray]
    point_clouds: list[np.ndarray]
    intrinsics: list[np.ndarray]
    confidences: list[np.ndarray]
    global_mesh: Any | None = None
    masks: list[np.ndarray] | None = None
    rejected_indices: list[int] | None = None
    survivor_indices: list[int] | None = None
    view_scores: list[float] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def num_views(self) -> int:
        return len(self.camera_poses)

    def save_ply(self, path: str | Path) -> Path:
        """Write the fused global point cloud as a binary PLY file."""
        return write_ply(path, self.global_point_cloud.points, self.global_point_cloud.colors)

    def to_open3d(self) -> Any:
        """The fused global point cloud as an ``open3d.geometry.PointCloud``."""
        return self.global_point_cloud.to_open3d()
