"""The map kept for the whole run: a voxel-downsampled coloured cloud and the keyframe trajectory.

Only the keyframes a window adds contribute points (the overlap keyframes were added by the
window that placed them), after a confidence filter.  All methods are thread-safe, so a ROS
publisher can read while the mapping worker writes.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..core.options import Options, option
from ..core.result import PointCloud
from ..geometry.pointcloud import VoxelAccumulator, confidence_mask
from .chaining import WindowInMap


@dataclass(frozen=True)
class MapConfig(Options):
    """Map settings (parameters ``map.*``; lengths in map units: metres for metric models)."""

    prefix: ClassVar[str] = "map."
    voxel_size: float = option(
        0.01, "Initial voxel edge of the map; grows automatically to keep the map under map.max_points.",
        unit="map units", low=1e-6, high=100.0, restart=True,
    )
    max_points: int = option(1_000_000, "Upper bound on map points (voxels).", low=1, high=1_000_000_000, restart=True)
    min_confidence: float = option(
        0.0, "Absolute confidence below which a pixel enters neither the map, the window cloud nor the "
        "depth images (model scale: VGGT's confidence is >= 1).", low=0.0, high=1e9,
    )
    drop_percentile: float = option(
        0.0, "Also leave out of the map the lowest this-percentile of each window's confidences; a model "
        "with a threshold of its own (VGGT's model.conf_thres) needs none.",
        unit="percentile", low=0.0, high=99.0,
    )
    reset_on_time_jump: bool = option(
        False, "Start a new map when the stamps jump back (keyframe.time_jump_s); otherwise the map continues.",
    )
    pixel_stride: int = option(
        2, "Map every n-th pixel in both directions; at model resolution a pixel covers far less than a "
        "voxel, so 2 loses little detail and adds a window about 4x faster.", low=1, high=64,
    )


@dataclass(slots=True)
class KeyframePose:
    """A keyframe placed in the map frame.

    pose: 4x4 camera-to-map, OpenCV optical axes.  intrinsics / image_size (width, height):
    of the model's processed image, which the depth output uses.  camera_intrinsics: the
    source camera's own intrinsics, if the frame carried them.  A long run keeps one per
    keyframe: slots keep each small (bench/bench_soak.py).
    """

    keyframe_id: int
    stamp_ns: int
    camera_id: str
    pose: np.ndarray
    intrinsics: np.ndarray
    image_size: tuple[int, int]
    camera_intrinsics: np.ndarray | None = None
    window_index: int = -1


class GlobalMap:
    """Accumulated map cloud plus the keyframe trajectory."""

    def __init__(self, config: MapConfig | None = None) -> None:
        self.config = config or MapConfig()
        self._lock = threading.RLock()
        self._voxels = VoxelAccumulator(self.config.voxel_size, self.config.max_points)
        self._trajectory: dict[int, KeyframePose] = {}

    def configure(self, config: MapConfig) -> None:
        """New filters and point cap apply from the next window on; a new voxel_size from the
        next `clear` (re-gridding the map would blur it)."""
        with self._lock:
            self.config = config
            self._voxels.initial_voxel_size = config.voxel_size
            self._voxels.max_points = config.max_points

    def clear(self) -> None:
        """Drop all points and keyframes (the voxel size returns to its initial value)."""
        with self._lock:
            self._voxels.clear()
            self._trajectory.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._voxels)

    @property
    def voxel_size(self) -> float:
        """Current voxel edge (>= the configured one once the point cap was hit)."""
        return self._voxels.voxel_size

    def add_window(self, window: WindowInMap) -> None:
        """Add the window's new keyframes: their poses to the trajectory, their pixels to the cloud
        (those the model kept, then filtered by confidence)."""
        stride = self.config.pixel_stride
        views = window.new_views
        cloud: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        if views:
            confidence = np.concatenate([window.confidences[v][::stride, ::stride].reshape(-1) for v in views])
            model_mask = np.concatenate([window.masks[v][::stride, ::stride].reshape(-1) for v in views])
            keep = model_mask & confidence_mask(confidence, self.config.min_confidence, self.config.drop_percentile)
            points = np.concatenate([window.points[v][::stride, ::stride].reshape(-1, 3) for v in views])[keep]
            colors = np.concatenate([window.images[v][::stride, ::stride].reshape(-1, 3) for v in views])[keep]
            cloud = (points, colors, confidence[keep])
        with self._lock:
            for view in window.new_views:
                keyframe = window.keyframes[view]
                height, width = window.images[view].shape[:2]
                self._trajectory[keyframe.keyframe_id] = KeyframePose(
                    keyframe_id=keyframe.keyframe_id,
                    stamp_ns=keyframe.stamp_ns,
                    camera_id=keyframe.camera_id,
                    pose=window.poses[view],
                    intrinsics=window.intrinsics[view],
                    image_size=(width, height),
                    camera_intrinsics=keyframe.frame.intrinsics,
                    window_index=window.index,
                )
            if cloud is not None:
                self._voxels.add(*cloud)

    def cloud(self) -> PointCloud:
        """Snapshot of the map cloud (float32 points in the map frame, uint8 RGB): read-only
        arrays that later windows do not change, handed out without a copy."""
        with self._lock:
            return PointCloud(self._voxels.points(), self._voxels.colors())

    def trajectory(self) -> list[KeyframePose]:
        """Snapshot of the placed keyframes, in the order they were placed."""
        with self._lock:
            return list(self._trajectory.values())
