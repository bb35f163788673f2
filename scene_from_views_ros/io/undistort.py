"""Lens distortion: frames whose CameraInfo has a distortion model are undistorted before the
model sees them (every model assumes a pinhole camera), to the same K and image size.

Models: plumb_bob and rational_polynomial (OpenCV's radial-tangential, 5 or 8 coefficients) and
equidistant (OpenCV's fisheye, 4).  Another model with non-zero coefficients is refused where
the CameraInfo arrives, naming the fix (image_proc's rectify node).  The remap tables are built
once per calibration and image size.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import cv2
import numpy as np

from .messages import FISHEYE_MODELS, camera_info_distortion, camera_info_intrinsics


class Undistorter:
    """Undistorts images of calibrated cameras; remap tables cached (thread-safe, bounded)."""

    def __init__(self, max_tables: int = 8) -> None:
        self._tables: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._max_tables = max_tables
        self._lock = threading.Lock()

    def calibrated(self, image: np.ndarray, info: Any | None) -> tuple[np.ndarray, np.ndarray | None]:
        """The image as a pinhole camera would see it, and its K (scaled to this image's size;
        None for no or an uncalibrated CameraInfo).  Check the info with `check_camera_info`."""
        if info is None:
            return image, None
        height, width = image.shape[:2]
        k = camera_info_intrinsics(info, width, height)
        distortion = camera_info_distortion(info)
        if k is None or distortion is None:
            return image, k
        model, coefficients = distortion
        key = (model, coefficients.tobytes(), k.tobytes(), width, height)
        with self._lock:
            tables = self._tables.get(key)
            if tables is not None:
                self._tables.move_to_end(key)
        if tables is None:
            if model in FISHEYE_MODELS:
                tables = cv2.fisheye.initUndistortRectifyMap(k, coefficients, np.eye(3), k, (width, height), cv2.CV_16SC2)
            else:
                tables = cv2.initUndistortRectifyMap(k, coefficients, None, k, (width, height), cv2.CV_16SC2)
            with self._lock:
                self._tables[key] = tables
                while len(self._tables) > self._max_tables:
                    self._tables.popitem(last=False)
        return cv2.remap(image, tables[0], tables[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT), k
