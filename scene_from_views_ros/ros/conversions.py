"""Conversions between ROS 2 messages and numpy arrays (no cv_bridge / sensor_msgs_py needed).

Everything here is vectorised: a 1.6M-point cloud is packed with one structured-array copy.
"""
from __future__ import annotations

import array
from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Pose, PoseStamped, TransformStamped
from nav_msgs.msg import Path
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from ..core.errors import InvalidImageError

SUPPORTED_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "8UC3", "8UC1", "16UC1")


class UnsupportedEncodingError(InvalidImageError):
    """An Image message uses an encoding the node cannot turn into RGB."""


def stamp_to_ns(stamp: Time) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(stamp_ns: int) -> Time:
    return Time(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))


def _pixels(msg: Image, channels: int, dtype: np.dtype) -> np.ndarray:
    """View the message buffer as HxWxC honouring `step` padding and byte order."""
    dtype = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    row_items = msg.step // dtype.itemsize
    if msg.step < msg.width * channels * dtype.itemsize or len(msg.data) < msg.step * msg.height:
        raise InvalidImageError(
            f"Image message is truncated: {len(msg.data)} bytes for {msg.height} rows of step {msg.step} "
            f"({msg.width}x{msg.height} {msg.encoding})"
        )
    flat = np.frombuffer(msg.data, dtype=dtype, count=row_items * msg.height)
    return flat.reshape(msg.height, row_items)[:, : msg.width * channels].reshape(msg.height, msg.width, channels)


def image_msg_to_rgb(msg: Image) -> np.ndarray:
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


def compressed_msg_to_rgb(msg: CompressedImage) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> RGB uint8 HxWx3."""
    import cv2

    bgr = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InvalidImageError(f"cannot decode CompressedImage of format {msg.format!r} ({len(msg.data)} bytes)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def rgb_to_image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str) -> Image:
    """RGB uint8 HxWx3 -> sensor_msgs/Image rgb8 (used by tests, tools and bag writing)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    return Image(
        header=Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id), height=rgb.shape[0], width=rgb.shape[1],
        encoding="rgb8", is_bigendian=0, step=rgb.shape[1] * 3, data=rgb.tobytes(),
    )


def float_image_msg(image: np.ndarray, stamp_ns: int, frame_id: str) -> Image:
    """HxW float32 (depth in map units, confidence, ...) -> 32FC1 Image; NaN marks invalid pixels."""
    image = np.ascontiguousarray(image, dtype="<f4")
    data = array.array("B")
    data.frombytes(memoryview(image).cast("B"))
    msg = Image(
        header=Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id), height=image.shape[0],
        width=image.shape[1], encoding="32FC1", is_bigendian=0, step=image.shape[1] * 4,
    )
    set_byte_data(msg, data)
    return msg


def camera_info_to_intrinsics(msg: CameraInfo) -> np.ndarray:
    """The 3x3 K of a CameraInfo (pixels of the raw image)."""
    return np.asarray(msg.k, dtype=np.float64).reshape(3, 3)


def intrinsics_to_camera_info(k: np.ndarray, width: int, height: int, stamp_ns: int, frame_id: str) -> CameraInfo:
    """A pinhole CameraInfo for an undistorted image of the given size."""
    k = np.asarray(k, dtype=np.float64).reshape(3, 3)
    projection = np.zeros((3, 4))
    projection[:, :3] = k
    return CameraInfo(
        header=Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id), height=int(height), width=int(width),
        distortion_model="plumb_bob", d=[0.0] * 5, k=k.ravel().tolist(), r=np.eye(3).ravel().tolist(),
        p=projection.ravel().tolist(),
    )


_CLOUD_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])  # 16-byte records
_CLOUD_FIELDS = [
    PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
    PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
    PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
    # RViz reads "rgb" as a float32 whose bits are 0x00RRGGBB.
    PointField(name="rgb", offset=12, datatype=PointField.FLOAT32, count=1),
]


def _write_records(data: array.array, start: int, points: np.ndarray, colors: np.ndarray) -> None:
    """Write x,y,z,rgb records `start`.. of a zeroed 16-byte-record buffer.

    The xyz triples are moved as one 12-byte item per point and the colours as one 3-byte
    item (BGR, made by OpenCV's SIMD swap), which is several times faster than numpy's
    element-wise strided copies.
    """
    import cv2

    count = points.shape[0]
    if count == 0:
        return
    xyz = np.ascontiguousarray(points, dtype=np.float32).reshape(count, 3)
    bgr = cv2.cvtColor(np.ascontiguousarray(colors, dtype=np.uint8).reshape(count, 1, 3), cv2.COLOR_RGB2BGR)
    np.ndarray((count,), "V12", buffer=data, offset=16 * start, strides=(16,))[:] = xyz.view("V12").reshape(count)
    np.ndarray((count,), "V3", buffer=data, offset=16 * start + 12, strides=(16,))[:] = bgr.view("V3").reshape(count)


def pack_cloud_data(points: np.ndarray, colors: np.ndarray) -> array.array:
    """The PointCloud2 data of x,y,z,rgb records (rgb bits 0x00RRGGBB, i.e. bytes B,G,R,0).

    Written straight into the array.array('B') that the message keeps, so a 1.6M-point cloud
    costs one allocation and two record copies.
    """
    points = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    if points.shape[0] != colors.shape[0]:
        raise ValueError(f"{points.shape[0]} points but {colors.shape[0]} colours")
    data = array.array("B", bytes(16)) * points.shape[0]
    _write_records(data, 0, points, colors)
    return data


def set_byte_data(msg: Image | PointCloud2, data: array.array) -> None:
    """Give a message's uint8[] `data` field this array.array('B') without copying it.

    The generated setter copies every value into a new array.array unless field checks are
    on (ROS_PYTHON_CHECK_FIELDS), which costs ~20 ms for a 1.6M-point cloud; `_data` is the
    slot behind the `data` property in all rosidl_generator_py versions.
    """
    if not (isinstance(data, array.array) and data.typecode == "B"):
        raise TypeError(f"data must be an array.array('B'), got {type(data).__name__}")
    msg._data = data  # noqa: SLF001


def _cloud_message(data: array.array, stamp_ns: int, frame_id: str) -> PointCloud2:
    count = len(data) // 16
    msg = PointCloud2(
        header=Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id), height=1, width=count,
        fields=_CLOUD_FIELDS, is_bigendian=False, point_step=16, row_step=16 * count, is_dense=True,
    )
    set_byte_data(msg, data)
    return msg


def make_pointcloud2(points: np.ndarray, colors: np.ndarray, stamp_ns: int, frame_id: str) -> PointCloud2:
    """An unorganised, dense PointCloud2 with x, y, z and packed rgb."""
    return _cloud_message(pack_cloud_data(points, colors), stamp_ns, frame_id)


def make_pointcloud2_from_views(
    point_maps: Sequence[np.ndarray], images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None],
    stamp_ns: int, frame_id: str,
) -> PointCloud2:
    """One PointCloud2 of several views' HxWx3 point maps coloured by their HxWx3 RGB images,
    keeping each view's `masks` pixels (None = all).  Views are written straight into the
    message buffer, without concatenating them first."""
    selected = []
    for point_map, image, mask in zip(point_maps, images, masks):
        if mask is None or mask.all():
            selected.append((point_map.reshape(-1, 3), image.reshape(-1, 3)))
        else:
            selected.append((point_map[mask], image[mask]))
    data = array.array("B", bytes(16)) * sum(points.shape[0] for points, _ in selected)
    start = 0
    for points, colors in selected:
        _write_records(data, start, points, colors)
        start += points.shape[0]
    return _cloud_message(data, stamp_ns, frame_id)


def pointcloud2_to_arrays(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `make_pointcloud2` (for tests and tools)."""
    records = np.frombuffer(bytes(msg.data), dtype=_CLOUD_DTYPE, count=msg.width * msg.height)
    points = np.stack([records["x"], records["y"], records["z"]], axis=1)
    rgb = records["rgb"]
    colors = np.stack([(rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255], axis=1).astype(np.uint8)
    return points, colors


def rotation_to_quaternions(rotations: np.ndarray) -> np.ndarray:
    """Rotation matrices (...x3x3) -> unit quaternions (..., x y z w), numerically robust (Shepperd)."""
    r = np.asarray(rotations, dtype=np.float64)
    shape = r.shape[:-2]
    r = r.reshape(-1, 3, 3)
    trace = np.trace(r, axis1=1, axis2=2)
    diagonal = np.diagonal(r, axis1=1, axis2=2)
    candidates = np.stack([
        np.stack([r[:, 2, 1] - r[:, 1, 2], r[:, 0, 2] - r[:, 2, 0], r[:, 1, 0] - r[:, 0, 1], 1 + trace], 1),
        np.stack([1 + 2 * diagonal[:, 0] - trace, r[:, 0, 1] + r[:, 1, 0], r[:, 0, 2] + r[:, 2, 0],
                  r[:, 2, 1] - r[:, 1, 2]], 1),
        np.stack([r[:, 0, 1] + r[:, 1, 0], 1 + 2 * diagonal[:, 1] - trace, r[:, 1, 2] + r[:, 2, 1],
                  r[:, 0, 2] - r[:, 2, 0]], 1),
        np.stack([r[:, 0, 2] + r[:, 2, 0], r[:, 1, 2] + r[:, 2, 1], 1 + 2 * diagonal[:, 2] - trace,
                  r[:, 1, 0] - r[:, 0, 1]], 1),
    ], 1)
    choice = np.argmax(np.concatenate([trace[:, None], diagonal], 1), axis=1)
    quaternions = candidates[np.arange(len(r)), choice]
    quaternions /= np.linalg.norm(quaternions, axis=1, keepdims=True)
    quaternions *= np.where(quaternions[:, 3:] < 0, -1.0, 1.0)
    return quaternions.reshape(*shape, 4)


def _fill_pose(translation: object, rotation: object, pose: np.ndarray, quaternion: np.ndarray) -> None:
    """Write a 4x4 pose into a (Vector3|Point, Quaternion) pair of a message."""
    translation.x, translation.y, translation.z = (float(v) for v in pose[:3, 3])
    rotation.x, rotation.y, rotation.z, rotation.w = (float(v) for v in quaternion)


def poses_to_transforms(
    poses: Sequence[np.ndarray], parent_frame: str, child_frames: Sequence[str], stamps_ns: Sequence[int]
) -> list[TransformStamped]:
    """4x4 child-to-parent poses -> TransformStamped (parent_frame -> child frame)."""
    quaternions = rotation_to_quaternions(np.stack([np.asarray(p)[:3, :3] for p in poses]))
    transforms = []
    for pose, quaternion, child, stamp_ns in zip(poses, quaternions, child_frames, stamps_ns):
        transform = TransformStamped(header=Header(stamp=ns_to_stamp(stamp_ns), frame_id=parent_frame),
                                     child_frame_id=child)
        _fill_pose(transform.transform.translation, transform.transform.rotation, np.asarray(pose), quaternion)
        transforms.append(transform)
    return transforms


def poses_to_path(poses: Sequence[np.ndarray], stamps_ns: Sequence[int], frame_id: str, stamp_ns: int) -> Path:
    """Keyframe poses (4x4 camera-to-map) -> nav_msgs/Path."""
    path = Path(header=Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id))
    if len(poses) == 0:
        return path
    quaternions = rotation_to_quaternions(np.stack([np.asarray(p)[:3, :3] for p in poses]))
    for pose, quaternion, pose_stamp in zip(poses, quaternions, stamps_ns):
        stamped = PoseStamped(header=Header(stamp=ns_to_stamp(pose_stamp), frame_id=frame_id), pose=Pose())
        _fill_pose(stamped.pose.position, stamped.pose.orientation, np.asarray(pose), quaternion)
        path.poses.append(stamped)
    return path


DIAGNOSTIC_LEVELS = {"ok": DiagnosticStatus.OK, "warn": DiagnosticStatus.WARN, "error": DiagnosticStatus.ERROR}


def diagnostic_array(
    name: str, hardware_id: str, level: str, message: str, values: dict[str, object], stamp_ns: int
) -> DiagnosticArray:
    """One DiagnosticStatus (level "ok", "warn" or "error") in a DiagnosticArray; floats are
    written with 4 significant digits, everything else with str()."""
    status = DiagnosticStatus(
        level=DIAGNOSTIC_LEVELS[level], name=name, message=message, hardware_id=hardware_id,
        values=[KeyValue(key=key, value=f"{value:.4g}" if isinstance(value, float) else str(value))
                for key, value in values.items()],
    )
    return DiagnosticArray(header=Header(stamp=ns_to_stamp(stamp_ns)), status=[status])
