"""rclpy message construction from numpy arrays (no cv_bridge / sensor_msgs_py needed).

The payload formats (image decoding, x,y,z,rgb records, 32FC1, CameraInfo, stamps) are the
ROS-free ones of `io.messages`; what is rclpy-specific here is the fast path for large
payloads: the bytes are written straight into the array.array('B') that the message keeps
(`set_byte_data`), so a 1.6M-point cloud costs one allocation and two record copies.
"""
from __future__ import annotations

import array
from collections.abc import Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Pose, PoseStamped, TransformStamped
from nav_msgs.msg import Odometry, Path
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from ..geometry.sim3 import pose_to_translation_quaternion, quaternion_to_rotation
from ..io.messages import (
    CLOUD_FIELDS,
    CLOUD_POINT_STEP,
    POINTFIELD_FLOAT32,
    camera_info_fields,
    float_image_fields,
    split_stamp,
    view_pixels,
    write_xyzrgb,
)


def ns_to_stamp(stamp_ns: int) -> Time:
    sec, nanosec = split_stamp(stamp_ns)
    return Time(sec=sec, nanosec=nanosec)


def _header(stamp_ns: int, frame_id: str = "") -> Header:
    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


def set_byte_data(msg: Image | PointCloud2, data: array.array) -> None:
    """Give a message's uint8[] `data` field this array.array('B') without copying it.

    The generated setter copies every value into a new array.array unless field checks are
    on (ROS_PYTHON_CHECK_FIELDS), which costs ~20 ms for a 1.6M-point cloud; `_data` is the
    slot behind the `data` property in all rosidl_generator_py versions.
    """
    if not (isinstance(data, array.array) and data.typecode == "B"):
        raise TypeError(f"data must be an array.array('B'), got {type(data).__name__}")
    msg._data = data  # noqa: SLF001


def rgb_to_image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str) -> Image:
    """RGB uint8 HxWx3 -> sensor_msgs/Image rgb8 (used by tests and tools)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    return Image(header=_header(stamp_ns, frame_id), height=rgb.shape[0], width=rgb.shape[1],
                 encoding="rgb8", is_bigendian=0, step=rgb.shape[1] * 3, data=rgb.tobytes())


def float_image_msg(image: np.ndarray, stamp_ns: int, frame_id: str) -> Image:
    """HxW float32 (depth in map units, confidence, ...) -> 32FC1 Image; NaN marks invalid pixels."""
    image = np.ascontiguousarray(image, dtype="<f4")
    data = array.array("B")
    data.frombytes(memoryview(image).cast("B"))
    msg = Image(header=_header(stamp_ns, frame_id), **float_image_fields(image))
    set_byte_data(msg, data)
    return msg


def intrinsics_to_camera_info(k: np.ndarray, width: int, height: int, stamp_ns: int, frame_id: str) -> CameraInfo:
    """A pinhole CameraInfo for an undistorted image of the given size."""
    return CameraInfo(header=_header(stamp_ns, frame_id), **camera_info_fields(k, width, height))


_CLOUD_FIELDS = [PointField(name=name, offset=offset, datatype=POINTFIELD_FLOAT32, count=1) for name, offset in CLOUD_FIELDS]


def _cloud_message(parts: Sequence[tuple[np.ndarray, np.ndarray]], stamp_ns: int, frame_id: str) -> PointCloud2:
    """An unorganised, dense x,y,z,rgb PointCloud2 of the (points, colours) parts, written
    straight into the message's buffer."""
    count = sum(points.shape[0] for points, _ in parts)
    data = array.array("B", bytes(CLOUD_POINT_STEP)) * count  # the fastest way to size an array.array
    write_xyzrgb(data, parts)
    msg = PointCloud2(
        header=_header(stamp_ns, frame_id), height=1, width=count, fields=_CLOUD_FIELDS, is_bigendian=False,
        point_step=CLOUD_POINT_STEP, row_step=CLOUD_POINT_STEP * count, is_dense=True,
    )
    set_byte_data(msg, data)
    return msg


def make_pointcloud2(points: np.ndarray, colors: np.ndarray, stamp_ns: int, frame_id: str) -> PointCloud2:
    """An unorganised, dense PointCloud2 with x, y, z and packed rgb."""
    return _cloud_message([(np.asarray(points).reshape(-1, 3), np.asarray(colors).reshape(-1, 3))], stamp_ns, frame_id)


def make_pointcloud2_from_views(
    point_maps: Sequence[np.ndarray], images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None],
    stamp_ns: int, frame_id: str,
) -> PointCloud2:
    """One PointCloud2 of several views' HxWx3 point maps coloured by their HxWx3 RGB images,
    keeping each view's `masks` pixels (None = all).  Views are written straight into the
    message buffer, without concatenating them first."""
    return _cloud_message(view_pixels(point_maps, images, masks), stamp_ns, frame_id)


def _fill_pose(translation_msg: object, rotation_msg: object, translation: np.ndarray, quaternion: np.ndarray) -> None:
    """Write a translation and quaternion into a (Vector3|Point, Quaternion) pair of a message."""
    translation_msg.x, translation_msg.y, translation_msg.z = (float(v) for v in translation)
    rotation_msg.x, rotation_msg.y, rotation_msg.z, rotation_msg.w = (float(v) for v in quaternion)


def transform_to_matrix(transform: Any) -> np.ndarray:
    """geometry_msgs/Transform -> 4x4 (child coordinates into the parent)."""
    t, q = transform.translation, transform.rotation
    matrix = np.eye(4)
    matrix[:3, :3] = quaternion_to_rotation(np.array([q.x, q.y, q.z, q.w]))
    matrix[:3, 3] = [t.x, t.y, t.z]
    return matrix


def poses_to_transforms(
    poses: Sequence[np.ndarray], parent_frame: str, child_frames: Sequence[str], stamps_ns: Sequence[int]
) -> list[TransformStamped]:
    """4x4 child-to-parent poses -> TransformStamped (parent_frame -> child frame)."""
    translations, quaternions = pose_to_translation_quaternion(np.stack(poses))
    transforms = []
    for translation, quaternion, child, stamp_ns in zip(translations, quaternions, child_frames, stamps_ns, strict=True):
        transform = TransformStamped(header=_header(stamp_ns, parent_frame), child_frame_id=child)
        _fill_pose(transform.transform.translation, transform.transform.rotation, translation, quaternion)
        transforms.append(transform)
    return transforms


def pose_to_odometry(pose: np.ndarray, frame_id: str, child_frame_id: str, stamp_ns: int) -> Odometry:
    """A 4x4 child-to-frame pose -> nav_msgs/Odometry (no twist; the covariances are zeros: no estimate)."""
    odometry = Odometry(header=_header(stamp_ns, frame_id), child_frame_id=child_frame_id)
    translation, quaternion = pose_to_translation_quaternion(np.asarray(pose)[None])
    _fill_pose(odometry.pose.pose.position, odometry.pose.pose.orientation, translation[0], quaternion[0])
    return odometry


def poses_to_path(poses: Sequence[np.ndarray], stamps_ns: Sequence[int], frame_id: str, stamp_ns: int) -> Path:
    """Keyframe poses (4x4 camera-to-map) -> nav_msgs/Path."""
    path = Path(header=_header(stamp_ns, frame_id))
    if len(poses) == 0:
        return path
    translations, quaternions = pose_to_translation_quaternion(np.stack(poses))
    for translation, quaternion, pose_stamp in zip(translations, quaternions, stamps_ns, strict=True):
        stamped = PoseStamped(header=_header(pose_stamp, frame_id), pose=Pose())
        _fill_pose(stamped.pose.position, stamped.pose.orientation, translation, quaternion)
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
    return DiagnosticArray(header=_header(stamp_ns), status=[status])
