"""The map kept for the whole run: a voxel-downsampled coloured cloud and the keyframe trajectory.

Only the keyframes a window adds contribute points (the overlap keyframes were added by the
window that placed them), after a confidence filter.  All methods are thread-safe, so a ROS
publisher can read while the mapping worker writes.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..core.result import PointCloud
from ..geometry.pointcloud import VoxelAccumulator, confidence_mask
from .chaining import WindowInMap


@dataclass
class MapConfig:
    """Map settings (lengths in map units: metres for metric models).

    voxel_size: initial voxel edge; grows automatically to keep the map under max_points.
    max_points: upper bound on the number of map points (voxels).
    min_confidence: absolute confidence below which a pixel is not added (model-specific
        scale: VGGT's confidence is >= 1).
    drop_percentile: also drop the lowest this-percentile (0-100) of each window's confidences.
    pixel_stride: add every n-th pixel in both directions (1 = all).  At model resolution
        (~518 px wide) a pixel covers far less than a default voxel, so 2 loses little detail
        and makes adding a window about 4x cheaper.
    """

    voxel_size: float = 0.01
    max_points: int = 1_000_000
    min_confidence: float = 0.0
    drop_percentile: float = 25.0
    pixel_stride: int = 2

    def __post_init__(self) -> None:
        if self.voxel_size <= 0:
            raise ValueError(f"map voxel_size must be > 0, got {self.voxel_size}")
        if self.max_points < 1:
            raise ValueError(f"map max_points must be >= 1, got {self.max_points}")
        if not 0 <= self.drop_percentile < 100:
            raise ValueError(f"map drop_percentile must be in [0, 100), got {self.drop_percentile}")
        if self.pixel_stride < 1:
            raise ValueError(f"map pixel_stride must be >= 1, got {self.pixel_stride}")


@dataclass
class KeyframePose:
    """A keyframe placed in the map frame.

    pose: 4x4 camera-to-map, OpenCV optical axes.  intrinsics / image_size (width, height):
    of the model's processed image, which the depth output uses.  camera_intrinsics: the
    source camera's own intrinsics, if the frame carried them.
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
        """Add the window's new keyframes: their poses to the trajectory, their pixels to the cloud."""
        stride = self.config.pixel_stride
        views = window.new_views
        points = colors = weights = None
        if views:
            confidence = np.concatenate([window.confidences[v][::stride, ::stride].reshape(-1) for v in views])
            keep = confidence_mask(confidence, self.config.min_confidence, self.config.drop_percentile)
            points = np.concatenate([window.points[v][::stride, ::stride].reshape(-1, 3) for v in views])[keep]
            colors = np.concatenate([window.images[v][::stride, ::stride].reshape(-1, 3) for v in views])[keep]
            weights = confidence[keep]
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
            if points is not None:
                self._voxels.add(points, colors, weights)

    def cloud(self) -> PointCloud:
        """Snapshot of the map cloud (float32 points in the map frame, uint8 RGB): read-only
        arrays that later windows do not change, handed out without a copy."""
        with self._lock:
            return PointCloud(self._voxels.points(), self._voxels.colors())

    def trajectory(self) -> list[KeyframePose]:
        """Snapshot of the placed keyframes, in the order they were placed."""
        with self._lock:
            return list(self._trajectory.values())
