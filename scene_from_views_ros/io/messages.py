"""Message payloads <-> numpy, for any message object with the ROS field names.

Works on rosbags' deserialised messages (``data`` a uint8 array) as well as rclpy's (``data``
an array.array or bytes), so it needs neither rclpy nor cv_bridge.  Everything is vectorised.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from ..core.errors import InvalidImageError

SUPPORTED_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "8UC3", "8UC1", "16UC1")
# PointCloud2 records x, y, z, rgb (float32 each; RViz reads "rgb" as float bits 0x00RRGGBB).
CLOUD_FIELDS = (("x", 0), ("y", 4), ("z", 8), ("rgb", 12))
CLOUD_POINT_STEP = 16
POINTFIELD_FLOAT32 = 7


def _pixels(msg: Any, channels: int, dtype: np.dtype) -> np.ndarray:
    """The image buffer as HxWxC, honouring `step` row padding and byte order."""
    dtype = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    if msg.step < msg.width * channels * dtype.itemsize or buffer.size < msg.step * msg.height:
        raise InvalidImageError(
            f"Image message is truncated: {buffer.size} bytes for {msg.height} rows of step {msg.step} "
            f"({msg.width}x{msg.height} {msg.encoding})"
        )
    rows = buffer[: msg.step * msg.height].reshape(msg.height, msg.step)[:, : msg.width * channels * dtype.itemsize]
    return np.ascontiguousarray(rows).view(dtype).reshape(msg.height, msg.width, channels)


def image_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/Image -> RGB uint8 HxWx3 (mono16 stretched by the image's own maximum)."""
    encoding = msg.encoding.lower()
    if encoding in ("rgb8", "8uc3"):
        rgb = _pixels(msg, 3, np.uint8)
    elif encoding == "bgr8":
        rgb = _pixels(msg, 3, np.uint8)[..., ::-1]
    elif encoding == "rgba8":
        rgb = _pixels(msg, 4, np.uint8)[..., :3]
    elif encoding == "bgra8":
        rgb = _pixels(msg, 4, np.uint8)[..., 2::-1]
    elif encoding in ("mono8", "8uc1"):
        rgb = np.repeat(_pixels(msg, 1, np.uint8), 3, axis=2)
    elif encoding in ("mono16", "16uc1"):
        grey = _pixels(msg, 1, np.uint16).astype(np.float32)
        grey = np.round(grey * (255.0 / max(float(grey.max()), 1.0))).astype(np.uint8)
        rgb = np.repeat(grey, 3, axis=2)
    else:
        raise InvalidImageError(
            f"unsupported image encoding {msg.encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    return np.ascontiguousarray(rgb)


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> RGB uint8 HxWx3."""
    bgr = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InvalidImageError(f"cannot decode CompressedImage of format {msg.format!r} ({len(msg.data)} bytes)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def pack_xyzrgb(points: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """PointCloud2 data (uint8, 16 bytes a point) of x, y, z float32 and rgb bytes B, G, R, 0."""
    points = np.asarray(points, dtype="<f4").reshape(-1, 3)
    colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    records = np.zeros((points.shape[0], 4), dtype="<f4")
    records[:, :3] = points
    records.view(np.uint8).reshape(-1, CLOUD_POINT_STEP)[:, 12:15] = colors[:, ::-1]
    return records.view(np.uint8).reshape(-1)


def unpack_xyzrgb(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `pack_xyzrgb`: (points float32 Nx3, colors uint8 Nx3 RGB)."""
    records = np.frombuffer(np.asarray(data, np.uint8), dtype="<f4").reshape(-1, 4)
    colors = records.view(np.uint8).reshape(-1, CLOUD_POINT_STEP)[:, 14:11:-1]
    return records[:, :3].copy(), np.ascontiguousarray(colors)
