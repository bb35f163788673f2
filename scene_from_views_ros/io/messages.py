"""Message payloads <-> numpy, for any message object with the ROS field names.

The one implementation of image decoding, PointCloud2 x,y,z,rgb records, 32FC1 images,
CameraInfo and stamps, shared by the node (rclpy messages, ``data`` an array.array or bytes)
and the offline tool (rosbags' messages, ``data`` a uint8 array).  Duck-typed on the message
fields, so it needs neither rclpy nor cv_bridge.  Everything is vectorised.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from ..core.errors import InvalidImageError

SUPPORTED_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "8UC3", "8UC1", "16UC1")
# PointCloud2 records x, y, z, rgb (float32 each; RViz reads "rgb" as float bits 0x00RRGGBB).
CLOUD_FIELDS = (("x", 0), ("y", 4), ("z", 8), ("rgb", 12))
CLOUD_POINT_STEP = 16
POINTFIELD_FLOAT32 = 7
FLOAT_IMAGE_ENCODING = "32FC1"


class UnsupportedEncodingError(InvalidImageError):
    """An Image message uses an encoding that cannot be turned into RGB."""


class InvalidCameraInfoError(InvalidImageError):
    """A CameraInfo message cannot describe the camera (non-finite or negative K)."""


# ---------------------------------------------------------------- stamps
def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time (sec, nanosec) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def split_stamp(stamp_ns: int) -> tuple[int, int]:
    """Integer nanoseconds -> (sec, nanosec) of a builtin_interfaces/Time."""
    seconds, nanoseconds = divmod(int(stamp_ns), 1_000_000_000)
    return seconds, nanoseconds


# ---------------------------------------------------------------- images in
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
    """sensor_msgs/Image -> RGB uint8 HxWx3.

    mono16 is stretched by the image's own maximum so that 10/12-bit sensors stay visible.
    """
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
        raise UnsupportedEncodingError(
            f"unsupported image encoding {msg.encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)} "
            "(publish one of these, e.g. with image_proc's debayer for Bayer images)"
        )
    return np.ascontiguousarray(rgb)


def is_truncated_jpeg(data: bytes | np.ndarray) -> bool:
    """A JPEG stream without its end-of-image marker (FF D9) near its end: truncated, which
    some decoders fill in grey without a word."""
    return b"\xff\xd9" not in bytes(data[-32:])


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> RGB uint8 HxWx3."""
    data = np.frombuffer(msg.data, np.uint8)
    if data[:2].tobytes() == b"\xff\xd8" and is_truncated_jpeg(data):
        raise InvalidImageError(f"CompressedImage is a truncated JPEG (no end-of-image marker, {data.size} bytes)")
    try:
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except cv2.error:  # OpenCV raises, rather than returning None, for some malformed buffers
        bgr = None
    if bgr is None:
        raise InvalidImageError(f"cannot decode CompressedImage of format {msg.format!r} ({data.size} bytes)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# ---------------------------------------------------------------- camera info
def check_camera_info(info: Any) -> None:
    """Raise InvalidCameraInfoError if a CameraInfo cannot describe a camera: K not 9 finite
    numbers, negative focal lengths (K = 0 is an uncalibrated camera: allowed), or a lens
    distortion that cannot be undone (see `camera_info_distortion`)."""
    k = np.asarray(info.k, dtype=np.float64).reshape(-1)
    if k.size != 9 or not np.isfinite(k).all():
        raise InvalidCameraInfoError(f"CameraInfo K is not 9 finite numbers: {k.tolist()}")
    if k[0] < 0 or k[4] < 0:
        raise InvalidCameraInfoError(f"CameraInfo K has negative focal lengths fx={k[0]}, fy={k[4]}")
    camera_info_distortion(info)


# Lens models undone before the model sees a frame (io/undistort.py): OpenCV's
# radial-tangential (coefficient counts it takes) and fisheye (4 coefficients).
PINHOLE_MODELS = {"plumb_bob": (4, 5, 8, 12, 14), "rational_polynomial": (8, 12, 14)}
FISHEYE_MODELS = {"equidistant": 4}


def camera_info_distortion(info: Any) -> tuple[str, np.ndarray] | None:
    """(model, coefficients) of a CameraInfo with lens distortion; None when it has none (no or
    all-zero coefficients).  Raises InvalidCameraInfoError for a model this package cannot undo."""
    coefficients = np.asarray(info.d, dtype=np.float64).reshape(-1)
    if not np.isfinite(coefficients).all():
        raise InvalidCameraInfoError(f"CameraInfo distortion coefficients are not finite: {coefficients.tolist()}")
    if not coefficients.any():
        return None
    model = str(info.distortion_model)
    if model in FISHEYE_MODELS and coefficients.size >= FISHEYE_MODELS[model]:
        return model, coefficients[: FISHEYE_MODELS[model]]
    if model in PINHOLE_MODELS and coefficients.size in PINHOLE_MODELS[model]:
        return model, coefficients
    if model in PINHOLE_MODELS or model in FISHEYE_MODELS:
        raise InvalidCameraInfoError(f"CameraInfo {model} distortion with {coefficients.size} coefficients is not valid")
    raise InvalidCameraInfoError(
        f"CameraInfo distortion model {model!r} is not one this node undoes ({', '.join([*PINHOLE_MODELS, *FISHEYE_MODELS])}): "
        "rectify the images first with image_proc's rectify node (ros2 run image_proc rectify_node) and map its image_rect"
    )


def camera_info_intrinsics(info: Any, width: int, height: int) -> np.ndarray | None:
    """The 3x3 K of a sensor_msgs/CameraInfo in the pixels of a `width` x `height` image
    (scaled when the info is for another size); None for an uncalibrated camera (K = 0).
    Check the info with `check_camera_info` first."""
    k = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        return None
    if info.width and info.height and (int(info.width), int(info.height)) != (width, height):
        k = np.diag([width / info.width, height / info.height, 1.0]) @ k
    return k


def camera_info_fields(k: np.ndarray, width: int, height: int) -> dict[str, Any]:
    """The CameraInfo fields (no header) of an undistorted pinhole image of the given size."""
    k = np.asarray(k, dtype=np.float64).reshape(3, 3)
    projection = np.zeros((3, 4))
    projection[:, :3] = k
    return {
        "height": int(height), "width": int(width), "distortion_model": "plumb_bob", "d": np.zeros(5),
        "k": k.reshape(-1), "r": np.eye(3).reshape(-1), "p": projection.reshape(-1),
    }


# ---------------------------------------------------------------- 32FC1 images out
def masked_depth(depth: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """HxW little-endian float32 depth, NaN where it is not a positive finite number or not
    `valid`: the convention of the depth outputs (~/depth/image and the replay bag)."""
    depth = np.asarray(depth, dtype="<f4")
    keep = np.isfinite(depth) & (depth > 0)
    if valid is not None:
        keep &= valid
    return np.where(keep, depth, np.float32(np.nan)).astype("<f4", copy=False)


def float_image_fields(image: np.ndarray) -> dict[str, Any]:
    """The Image fields (no header, no data) of an HxW float32 image sent as 32FC1."""
    height, width = image.shape
    return {"height": int(height), "width": int(width), "encoding": FLOAT_IMAGE_ENCODING, "is_bigendian": 0, "step": int(width) * 4}


# ---------------------------------------------------------------- PointCloud2 x,y,z,rgb
def view_pixels(
    point_maps: Sequence[np.ndarray], images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(points Nx3, colours Nx3) of each view's HxWx3 point map and RGB image, keeping the
    `masks` pixels (None = all)."""
    selected = []
    for point_map, image, mask in zip(point_maps, images, masks, strict=True):
        if mask is None or mask.all():
            selected.append((point_map.reshape(-1, 3), image.reshape(-1, 3)))
        else:
            selected.append((point_map[mask], image[mask]))
    return selected


def write_xyzrgb(buffer: Any, parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
    """Write the (points, colours) `parts` one after the other as x,y,z,rgb records into a
    writable buffer (array.array('B') or uint8 array) of 16 bytes a point.

    Two OpenCV SIMD passes per part, about twice as fast as numpy's strided record copies:
    the colours become B,G,R,0 words, then xyz and that word are interleaved (as int32
    channels, so the bits are copied unchanged) straight into the buffer.
    """
    start = 0
    for points, colors in parts:
        count = points.shape[0]
        if colors.shape[0] != count:
            raise ValueError(f"{count} points but {colors.shape[0]} colours")
        if count == 0:
            continue
        xyz = np.ascontiguousarray(points, dtype="<f4").reshape(count, 1, 3)
        rgb = np.ascontiguousarray(colors, dtype=np.uint8).reshape(count, 1, 3)
        bgr0 = np.empty((count, 1, 4), np.uint8)
        cv2.mixChannels([rgb, np.zeros((count, 1, 1), np.uint8)], [bgr0], [2, 0, 1, 1, 0, 2, 3, 3])
        records = np.ndarray((count, 1, 4), np.int32, buffer=buffer, offset=CLOUD_POINT_STEP * start)
        if cv2.merge([xyz.view(np.int32), bgr0.view(np.int32)], dst=records) is not records:
            raise RuntimeError("OpenCV did not write the point records in place")
        start += count


def pack_xyzrgb(points: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """PointCloud2 data (uint8, 16 bytes a point) of x, y, z float32 and rgb bytes B, G, R, 0."""
    points = np.asarray(points, dtype="<f4").reshape(-1, 3)
    colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    data = np.empty(CLOUD_POINT_STEP * points.shape[0], dtype=np.uint8)
    write_xyzrgb(data, [(points, colors)])
    return data


def unpack_xyzrgb(data: Any) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `pack_xyzrgb`: (points float32 Nx3, colors uint8 Nx3 RGB)."""
    records = np.frombuffer(data, dtype="<f4").reshape(-1, 4)
    colors = records.view(np.uint8).reshape(-1, CLOUD_POINT_STEP)[:, 14:11:-1]
    return records[:, :3].copy(), np.ascontiguousarray(colors)


def pointcloud2_to_arrays(msg: Any) -> tuple[np.ndarray, np.ndarray]:
    """(points, colours) of an x,y,z,rgb PointCloud2 as written here (for tests and tools)."""
    return unpack_xyzrgb(np.frombuffer(msg.data, dtype=np.uint8)[: CLOUD_POINT_STEP * msg.width * msg.height])
