"""Message <-> numpy conversions of the ROS node (io.messages on rclpy messages, and
ros.conversions), checked against independent references (per-point struct packing, scipy
rotations, OpenCV decoding) and real rclpy serialization."""
from __future__ import annotations

import array
import struct

import cv2
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CompressedImage, Image, PointCloud2, PointField

from scene_from_views_ros.core.errors import InvalidImageError
from scene_from_views_ros.io.messages import (
    UnsupportedEncodingError,
    camera_info_intrinsics,
    compressed_to_rgb,
    image_to_rgb,
    pointcloud2_to_arrays,
    stamp_to_ns,
)
from scene_from_views_ros.ros.conversions import (
    diagnostic_array,
    float_image_msg,
    intrinsics_to_camera_info,
    make_pointcloud2,
    make_pointcloud2_from_views,
    ns_to_stamp,
    poses_to_path,
    poses_to_transforms,
    rgb_to_image_msg,
    set_byte_data,
)

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)


def image_msg(pixels: np.ndarray, encoding: str, pad: int = 0, big_endian: bool = False) -> Image:
    """An Image message of `pixels` (HxWxC) with `pad` bytes of padding per row."""
    pixels = pixels.astype(pixels.dtype.newbyteorder(">" if big_endian else "<"))
    rows = pixels.reshape(pixels.shape[0], -1).view(np.uint8)
    padded = np.concatenate([rows, np.full((rows.shape[0], pad), 0xAB, np.uint8)], axis=1)
    return Image(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding, is_bigendian=int(big_endian),
                 step=padded.shape[1], data=padded.tobytes())


@pytest.mark.parametrize("pad", [0, 3])
def test_colour_encodings_give_rgb(pad: int) -> None:
    alpha = np.full((5, 7, 1), 9, np.uint8)
    cases = {
        "rgb8": RGB, "8UC3": RGB, "bgr8": RGB[..., ::-1],
        "rgba8": np.concatenate([RGB, alpha], 2), "bgra8": np.concatenate([RGB[..., ::-1], alpha], 2),
    }
    for encoding, pixels in cases.items():
        rgb = image_to_rgb(image_msg(pixels, encoding, pad))
        assert rgb.dtype == np.uint8 and rgb.flags.c_contiguous, encoding
        np.testing.assert_array_equal(rgb, RGB, err_msg=encoding)


def test_grey_encodings_are_replicated_and_mono16_is_stretched() -> None:
    grey = RGB[..., :1]
    np.testing.assert_array_equal(image_to_rgb(image_msg(grey, "mono8", pad=1)), np.repeat(grey, 3, 2))
    deep = (np.arange(35, dtype=np.uint16).reshape(5, 7, 1) * 100)  # max 3400 of a 12-bit sensor
    for big_endian in (False, True):
        rgb = image_to_rgb(image_msg(deep, "mono16", pad=2, big_endian=big_endian))
        expected = np.round(deep.astype(np.float32) * (255.0 / 3400)).astype(np.uint8)
        np.testing.assert_array_equal(rgb, np.repeat(expected, 3, 2))


def test_unsupported_and_truncated_images_raise_clear_errors() -> None:
    with pytest.raises(UnsupportedEncodingError, match="bayer_rggb8.*supported: rgb8"):
        image_to_rgb(image_msg(RGB[..., :1], "bayer_rggb8"))
    truncated = image_msg(RGB, "rgb8")
    truncated.data = bytes(truncated.data)[:-5]
    with pytest.raises(InvalidImageError, match="truncated"):
        image_to_rgb(truncated)
    with pytest.raises(InvalidImageError, match="truncated JPEG"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b"\xff\xd8 not a jpeg"))
    with pytest.raises(InvalidImageError, match="cannot decode"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b"\xff\xd8 not a jpeg \xff\xd9"))
    with pytest.raises(InvalidImageError, match=r"cannot decode CompressedImage of format 'jpeg' \(0 bytes\)"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b""))  # it killed the node (cv2.error)


def test_compressed_png_round_trips_exactly_and_jpeg_closely() -> None:
    smooth = cv2.GaussianBlur(RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8), (9, 9), 3)
    png = CompressedImage(format="png", data=cv2.imencode(".png", smooth[..., ::-1])[1].tobytes())
    np.testing.assert_array_equal(compressed_to_rgb(png), smooth)
    jpeg = CompressedImage(format="jpeg", data=cv2.imencode(".jpg", smooth[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
    assert np.abs(compressed_to_rgb(jpeg).astype(int) - smooth).mean() < 3


def test_rgb_image_message_round_trip_and_stamps() -> None:
    msg = rgb_to_image_msg(RGB, 1_700_000_000_123_456_789, "cam")
    assert (msg.encoding, msg.step, msg.header.frame_id) == ("rgb8", 21, "cam")
    assert stamp_to_ns(msg.header.stamp) == 1_700_000_000_123_456_789
    assert ns_to_stamp(5_000_000_001).sec == 5 and ns_to_stamp(5_000_000_001).nanosec == 1
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)


def reference_cloud_bytes(points: np.ndarray, colors: np.ndarray) -> bytes:
    """The plain definition: x, y, z float32 and the rgb field's bits 0x00RRGGBB, per point."""
    return b"".join(struct.pack("<fffI", *map(float, p), (int(c[0]) << 16) | (int(c[1]) << 8) | int(c[2]))
                    for p, c in zip(points, colors, strict=True))


def test_pointcloud2_layout_is_what_rviz_reads() -> None:
    points = RNG.normal(size=(50, 3)).astype(np.float32)
    colors = RNG.integers(0, 256, (50, 3), dtype=np.uint8)
    msg = make_pointcloud2(points, colors, 42, "map")
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, PointField.FLOAT32, 1), ("y", 4, PointField.FLOAT32, 1), ("z", 8, PointField.FLOAT32, 1),
        ("rgb", 12, PointField.FLOAT32, 1)]
    assert (msg.height, msg.width, msg.point_step, msg.row_step, msg.is_dense, msg.is_bigendian) == (1, 50, 16, 800, True, False)
    assert bytes(msg.data) == reference_cloud_bytes(points, colors)
    back_points, back_colors = pointcloud2_to_arrays(msg)
    np.testing.assert_array_equal(back_points, points)
    np.testing.assert_array_equal(back_colors, colors)
    # Real rclpy serialization keeps the array.array data intact.
    again = deserialize_message(serialize_message(msg), PointCloud2)
    assert bytes(again.data) == bytes(msg.data) and again.header.frame_id == "map"


def test_pointcloud2_from_views_equals_packing_the_selected_pixels() -> None:
    maps = [RNG.normal(size=(6, 9, 3)).astype(np.float32) for _ in range(3)]
    images = [RNG.integers(0, 256, (6, 9, 3), dtype=np.uint8) for _ in range(3)]
    masks = [RNG.random((6, 9)) > 0.4, None, np.ones((6, 9), bool)]
    msg = make_pointcloud2_from_views(maps, images, masks, 7, "map")
    selected = [(m[k], i[k]) if k is not None else (m.reshape(-1, 3), i.reshape(-1, 3)) for m, i, k in zip(maps, images, masks, strict=True)]
    points = np.concatenate([p for p, _ in selected])
    colors = np.concatenate([c for _, c in selected])
    assert msg.width == len(points) == masks[0].sum() + 2 * 54
    assert bytes(msg.data) == reference_cloud_bytes(points, colors)
    # Strided (non-contiguous) views, as the node passes with publish.window_cloud_stride.
    strided = make_pointcloud2_from_views([m[::2, ::3] for m in maps], [i[::2, ::3] for i in images], [None] * 3, 7, "map")
    expected = np.concatenate([m[::2, ::3].reshape(-1, 3) for m in maps])
    np.testing.assert_array_equal(pointcloud2_to_arrays(strided)[0], expected)
    assert make_pointcloud2(np.zeros((0, 3)), np.zeros((0, 3)), 0, "map").width == 0


def test_byte_data_is_handed_over_without_a_copy() -> None:
    data = array.array("B", b"abcd")
    msg = Image()
    set_byte_data(msg, data)
    assert msg.data is data
    with pytest.raises(TypeError, match="array.array"):
        set_byte_data(msg, b"abcd")


def test_float_images_and_camera_info() -> None:
    depth = RNG.uniform(0.5, 3.0, (4, 6)).astype(np.float32)
    depth[1, 2] = np.nan
    msg = float_image_msg(depth, 99, "kf_3")
    assert (msg.encoding, msg.height, msg.width, msg.step, msg.header.frame_id) == ("32FC1", 4, 6, 24, "kf_3")
    np.testing.assert_array_equal(np.frombuffer(bytes(msg.data), "<f4").reshape(4, 6), depth)
    again = deserialize_message(serialize_message(msg), Image)
    np.testing.assert_array_equal(np.frombuffer(bytes(again.data), "<f4").reshape(4, 6), depth)
    k = np.array([[300.0, 0, 31.5], [0, 310.0, 23.5], [0, 0, 1]])
    info = intrinsics_to_camera_info(k, 64, 48, 99, "kf_3")
    assert (info.width, info.height, info.header.frame_id) == (64, 48, "kf_3")
    np.testing.assert_array_equal(camera_info_intrinsics(info, 64, 48), k)
    np.testing.assert_array_equal(np.reshape(info.p, (3, 4))[:, :3], k)


def test_transforms_and_path_carry_the_poses() -> None:
    poses = []
    for index in range(3):
        pose = np.eye(4)
        pose[:3, :3] = Rotation.from_euler("xyz", [0.1 * index, 0.2, -0.3]).as_matrix()
        pose[:3, 3] = [index, 2.0 * index, -1.0]
        poses.append(pose)
    transforms = poses_to_transforms(poses, "map", ["kf_0", "kf_1", "kf_2"], [10, 20, 30])
    for transform, pose, stamp in zip(transforms, poses, [10, 20, 30], strict=True):
        assert transform.header.frame_id == "map" and stamp_to_ns(transform.header.stamp) == stamp
        t, q = transform.transform.translation, transform.transform.rotation
        np.testing.assert_allclose([t.x, t.y, t.z], pose[:3, 3])
        np.testing.assert_allclose(Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix(), pose[:3, :3], atol=1e-12)
    path = poses_to_path(poses, [10, 20, 30], "map", 30)
    assert [stamp_to_ns(p.header.stamp) for p in path.poses] == [10, 20, 30]
    assert path.poses[2].pose.position.y == pytest.approx(4.0)
    assert len(poses_to_path([], [], "map", 0).poses) == 0


def test_diagnostic_array_levels_and_values() -> None:
    array = diagnostic_array("sfv: mapping", "vggt", "warn", "2 images rejected",
                             {"input_rate_hz": 29.97002, "keyframes": 12, "device": "cpu"}, 5)
    status = array.status[0]
    assert status.level == b"\x01" and status.message == "2 images rejected" and status.hardware_id == "vggt"
    assert {v.key: v.value for v in status.values} == {"input_rate_hz": "29.97", "keyframes": "12", "device": "cpu"}
