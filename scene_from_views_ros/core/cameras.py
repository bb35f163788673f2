"""Cameras a caller already knows for the views of one reconstruction (CameraInfo, calibration
files, odometry), checked where they are given.

Intrinsics are 3x3 in the pixels of the caller's images (as loaded: EXIF orientation applied to
files); poses are 4x4 camera-to-world with OpenCV axes (x right, y down, z forward), in any
common frame.  A model that can use them declares it (`accepts_known_intrinsics`,
`accepts_known_poses`); the others refuse them rather than ignore them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidOptionError


@dataclass(frozen=True)
class KnownCameras:
    """Checked known cameras of N views: intrinsics (N, 3, 3) and/or poses (N, 4, 4)."""

    intrinsics: np.ndarray | None = None
    poses: np.ndarray | None = None

    @classmethod
    def checked(cls, intrinsics: Any, poses: Any, image_sizes: Sequence[tuple[int, int]]) -> KnownCameras | None:
        """Check `intrinsics` / `poses` (None, or one matrix per image) against the images'
        (height, width); None when neither is given.  InvalidOptionError names what is wrong."""
        if intrinsics is None and poses is None:
            return None
        count = len(image_sizes)
        return cls(
            None if intrinsics is None else _checked_intrinsics(intrinsics, image_sizes),
            None if poses is None else _checked_poses(poses, count),
        )


def _stack(values: Any, name: str, shape: tuple[int, int], count: int) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InvalidOptionError(f"{name} must be {count} {shape[0]}x{shape[1]} matrices, one per image: {error}") from error
    if array.shape != (count, *shape):
        raise InvalidOptionError(
            f"{name} has shape {array.shape} for {count} images: give one {shape[0]}x{shape[1]} matrix per image, in the images' order"
        )
    bad = [index for index, matrix in enumerate(array) if not np.isfinite(matrix).all()]
    if bad:
        raise InvalidOptionError(f"{name} of views {bad} hold non-finite values")
    return array


def _checked_intrinsics(values: Any, image_sizes: Sequence[tuple[int, int]]) -> np.ndarray:
    array = _stack(values, "known_intrinsics", (3, 3), len(image_sizes))
    for index, (matrix, (height, width)) in enumerate(zip(array, image_sizes, strict=True)):
        if not (matrix[0, 0] > 0 and matrix[1, 1] > 0 and np.allclose(matrix[2], [0, 0, 1]) and matrix[1, 0] == 0):
            raise InvalidOptionError(
                f"known_intrinsics of view {index} is not a pinhole camera matrix [[fx, s, cx], [0, fy, cy], [0, 0, 1]] "
                f"with fx, fy > 0: {matrix.tolist()}"
            )
        if not (0 <= matrix[0, 2] <= width and 0 <= matrix[1, 2] <= height):
            raise InvalidOptionError(
                f"known_intrinsics of view {index} puts the principal point ({matrix[0, 2]:g}, {matrix[1, 2]:g}) outside its "
                f"{width}x{height} image: intrinsics are in the pixels of the given images (rescale them after resizing)"
            )
    return array


def _checked_poses(values: Any, count: int) -> np.ndarray:
    array = _stack(values, "known_poses", (4, 4), count)
    for index, pose in enumerate(array):
        rotation = pose[:3, :3]
        if not (np.allclose(pose[3], [0, 0, 0, 1]) and np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-5)
                and np.linalg.det(rotation) > 0):
            raise InvalidOptionError(
                f"known_poses of view {index} is not a rigid camera-to-world transform (rotation, translation, last row "
                "0 0 0 1)"
            )
    return array
