"""Offline inputs and outputs: frame sources, bag reading and writing, message payloads."""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from scene_from_views_ros.core.errors import InvalidImageError
from scene_from_views_ros.core.result import PointCloud
from scene_from_views_ros.io import ImageFilesSource, InputError, Selection, VideoSource, colorize, open_source
from scene_from_views_ros.io.bag_reader import BagSource
from scene_from_views_ros.io.bag_writer import bag_topics, write_map_bag
from scene_from_views_ros.io.messages import compressed_to_rgb, image_to_rgb, pack_xyzrgb, unpack_xyzrgb
from scene_from_views_ros.mapping.global_map import KeyframePose
from scene_from_views_ros.mapping.settings import FrameNames
from scene_from_views_ros.mapping.synthetic import make_sequence

TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
T = TYPESTORE.types
K = np.array([[80.0, 0.0, 47.5], [0.0, 80.0, 35.5], [0.0, 0.0, 1.0]])


# ---------------------------------------------------------------------------- bag helpers
def header(stamp_ns: int, frame_id: str = "cam") -> object:
    sec, nanosec = divmod(int(stamp_ns), 10**9)
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=frame_id)


def image_msg(rgb: np.ndarray, stamp_ns: int, encoding: str = "rgb8") -> object:
    data = rgb[..., ::-1] if encoding == "bgr8" else rgb
    return T["sensor_msgs/msg/Image"](
        header=header(stamp_ns), height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, is_bigendian=0,
        step=rgb.shape[1] * 3, data=np.ascontiguousarray(data).reshape(-1),
    )


def compressed_msg(rgb: np.ndarray, stamp_ns: int) -> object:
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return T["sensor_msgs/msg/CompressedImage"](header=header(stamp_ns), format="png", data=png.reshape(-1))


def camera_info_msg(k: np.ndarray, width: int, height: int, stamp_ns: int) -> object:
    projection = np.zeros((3, 4))
    projection[:, :3] = k
    roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return T["sensor_msgs/msg/CameraInfo"](
        header=header(stamp_ns), height=height, width=width, distortion_model="plumb_bob", d=np.zeros(5),
        k=np.asarray(k, float).reshape(-1), r=np.eye(3).reshape(-1), p=projection.reshape(-1), binning_x=0, binning_y=0, roi=roi,
    )


def string_msg(text: str) -> object:
    return T["std_msgs/msg/String"](data=text)


def write_bag(path: Path, storage: str, topics: dict[str, str], messages: list[tuple[str, int, object]]) -> Path:
    """A rosbag2 folder with the given topics (name -> type; some may stay empty) and
    (topic, log time, message) records."""
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=8, storage_plugin=plugin) as writer:
        connections = {name: writer.add_connection(name, msgtype, typestore=TYPESTORE) for name, msgtype in topics.items()}
        for topic, log_time, msg in messages:
            writer.write(connections[topic], log_time, TYPESTORE.serialize_cdr(msg, topics[topic]))
    return path


def sample_frames(count: int = 8, width: int = 96, height: int = 72) -> tuple[list[np.ndarray], np.ndarray]:
    """Rendered RGB frames of the synthetic sequence and their stamps (ns)."""
    sequence = make_sequence(count, width, height, fps=10.0)
    return [sequence.render(i)[0] for i in range(count)], sequence.stamps_ns.copy()


def camera_bag(path: Path, storage: str, count: int = 6, log_offset_ns: int = 5_000_000) -> tuple[Path, list[np.ndarray], np.ndarray]:
    """A bag with /cam/image_raw (rgb8), /cam/image_raw/compressed (png), /cam/camera_info,
    an empty image topic and a String topic; log times lag the header stamps by `log_offset_ns`."""
    images, stamps = sample_frames(count)
    topics = {
        "/cam/image_raw": "sensor_msgs/msg/Image",
        "/cam/image_raw/compressed": "sensor_msgs/msg/CompressedImage",
        "/cam/camera_info": "sensor_msgs/msg/CameraInfo",
        "/empty/image_raw": "sensor_msgs/msg/Image",
        "/chatter": "std_msgs/msg/String",
    }
    height, width = images[0].shape[:2]
    messages: list[tuple[str, int, object]] = []
    for image, stamp in zip(images, stamps, strict=True):
        log = int(stamp) + log_offset_ns
        messages += [
            ("/cam/camera_info", log - 1, camera_info_msg(K, width, height, int(stamp))),
            ("/cam/image_raw", log, image_msg(image, int(stamp))),
            ("/cam/image_raw/compressed", log, compressed_msg(image, int(stamp))),
            ("/chatter", log, string_msg("hello")),
        ]
    return write_bag(path, storage, topics, messages), images, stamps


# ---------------------------------------------------------------------------- folders
def test_folder_is_read_in_natural_name_order_with_fps_stamps(tmp_path: Path) -> None:
    images, _ = sample_frames(4)
    for name, image in zip(["f_10.png", "f_2.png", "f_1.jpg", "f_3.png"], images, strict=True):
        cv2.imwrite(str(tmp_path / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 100])
    (tmp_path / "notes.txt").write_text("not an image")
    source = open_source([tmp_path], fps=4.0)
    assert isinstance(source, ImageFilesSource)
    assert [p.name for p in source.paths] == ["f_1.jpg", "f_2.png", "f_3.png", "f_10.png"]
    frames = list(source)
    assert [f.stamp_ns for f in frames] == [0, 250_000_000, 500_000_000, 750_000_000]
    np.testing.assert_array_equal(frames[1].image, images[1])  # PNG is lossless, RGB order kept
    np.testing.assert_array_equal(frames[3].image, images[0])
    assert frames[0].image.shape == (72, 96, 3) and frames[0].image.dtype == np.uint8


def test_selection_step_range_and_cap(tmp_path: Path) -> None:
    images, _ = sample_frames(1)
    for i in range(12):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), images[0])
    stamps = lambda **kw: [f.stamp_ns // 100_000_000 for f in ImageFilesSource.from_folder(tmp_path, 10.0, Selection(**kw))]  # noqa: E731
    assert stamps(step=3) == [0, 3, 6, 9]
    assert stamps(start_s=0.25, end_s=0.8) == [3, 4, 5, 6, 7, 8]
    assert stamps(step=2, start_s=0.3, end_s=1.0) == [3, 5, 7, 9]
    assert stamps(step=2, max_frames=2) == [0, 2]
    assert ImageFilesSource.from_folder(tmp_path, 10.0, Selection(step=5)).expected() == 3
    with pytest.raises(InputError, match="step"):
        Selection(step=0)
    with pytest.raises(InputError, match="start <= end"):
        Selection(start_s=2.0, end_s=1.0)


def test_unreadable_image_in_folder_names_the_file(tmp_path: Path) -> None:
    images, _ = sample_frames(1)
    cv2.imwrite(str(tmp_path / "a.png"), images[0])
    (tmp_path / "b.png").write_bytes(b"\x89PNG garbage")
    source = open_source([tmp_path])
    assert [frame.image.shape for frame in source] == [(72, 96, 3)]  # b.png is skipped ...
    assert len(source.skipped) == 1 and re.search(r"cannot read image .*b\.png", source.skipped[0])  # ... and named
    source.stop_on_bad_frame = True
    with pytest.raises(InputError, match=r"cannot read image .*b\.png.*--on-bad-frame stop"):
        list(source)


def test_missing_empty_and_mixed_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        open_source([tmp_path / "nope.mp4"])
    with pytest.raises(InputError, match="holds no image files"):
        open_source([tmp_path])
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "b.mp4").write_bytes(b"x")
    with pytest.raises(InputError, match="must all be image files"):
        open_source([tmp_path / "a.png", tmp_path / "b.mp4"])
    with pytest.raises(InputError, match="ROS 2 bags"):
        open_source([tmp_path / "a.png"], topic="/cam/image_raw")


# ---------------------------------------------------------------------------- video
def test_video_frames_step_and_time_range(shared_data: Path) -> None:
    path = shared_data / "redkitchen.mp4"
    source = open_source([path])
    assert isinstance(source, VideoSource) and source.available() == 30  # the container's count
    frames = list(source)
    assert len(frames) == 29 and frames[0].image.shape == (480, 640, 3)  # what decodes
    assert frames[1].stamp_ns == round(1e9 / source.fps)
    step = list(open_source([path], selection=Selection(step=7)))
    assert [f.stamp_ns for f in step] == [frames[i].stamp_ns for i in (0, 7, 14, 21, 28)]
    np.testing.assert_array_equal(step[2].image, frames[14].image)
    ranged = open_source([path], selection=Selection(step=2, start_s=5 / source.fps, end_s=12 / source.fps))
    assert ranged.expected() == 4
    assert [f.stamp_ns for f in ranged] == [frames[i].stamp_ns for i in (5, 7, 9, 11)]


def test_video_that_cannot_be_decoded(tmp_path: Path, shared_data: Path) -> None:
    garbage = tmp_path / "broken.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match="cannot decode video"):
        open_source([garbage])
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes((shared_data / "redkitchen.mp4").read_bytes()[:2000])
    with pytest.raises(InputError, match="cannot decode video"):
        open_source([truncated])


# ---------------------------------------------------------------------------- bags
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_frames_stamps_and_camera_info(tmp_path: Path, storage: str) -> None:
    bag, images, stamps = camera_bag(tmp_path / "bag", storage)
    source = open_source([bag], topic="/cam/image_raw")
    assert isinstance(source, BagSource) and source.camera_info_topic == "/cam/camera_info"
    assert source.expected() == 6
    frames = list(source)
    assert [f.stamp_ns for f in frames] == [int(s) for s in stamps]  # header stamps, not log times
    for frame, image in zip(frames, images, strict=True):
        np.testing.assert_array_equal(frame.image, image)
        np.testing.assert_allclose(frame.intrinsics, K)
    compressed = list(open_source([bag], topic="/cam/image_raw/compressed", selection=Selection(step=2)))
    assert len(compressed) == 3
    np.testing.assert_array_equal(compressed[1].image, images[2])
    np.testing.assert_allclose(compressed[1].intrinsics, K)


def test_bare_storage_file_is_read(tmp_path: Path) -> None:
    bag, images, _ = camera_bag(tmp_path / "bag", "sqlite3", count=3)
    (storage_file,) = bag.glob("*.db3")
    frames = list(open_source([storage_file], topic="/cam/image_raw"))
    assert len(frames) == 3
    np.testing.assert_array_equal(frames[2].image, images[2])


def test_camera_info_scaled_to_the_image_size(tmp_path: Path) -> None:
    images, stamps = sample_frames(2)
    topics = {"/c/image": "sensor_msgs/msg/Image", "/calib": "sensor_msgs/msg/CameraInfo"}
    messages = [("/c/image", int(stamps[0]), image_msg(images[0], int(stamps[0]), "bgr8")),
                ("/calib", int(stamps[1]), camera_info_msg(K * [[2], [2], [1]], 192, 144, int(stamps[1]))),
                ("/c/image", int(stamps[1]) + 1, image_msg(images[1], int(stamps[1]), "bgr8"))]
    bag = write_bag(tmp_path / "bag", "mcap", topics, messages)
    source = open_source([bag])  # the only image topic; the only CameraInfo topic
    assert source.topic == "/c/image" and source.camera_info_topic == "/calib"
    frames = list(source)
    np.testing.assert_array_equal(frames[0].image, images[0])  # bgr8 decoded to RGB
    for frame in frames:  # the first image predates the info and gets the first info
        np.testing.assert_allclose(frame.intrinsics, K)


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        ("/chatter", r"/chatter .* carries std_msgs/msg/String, not sensor_msgs/msg/Image"),
        ("/empty/image_raw", r"/empty/image_raw .* has no messages"),
        ("/nope", r"/nope is not in bag"),
        (None, "several image topics: .*choose one with --topic"),
    ],
)
def test_bag_topic_errors(tmp_path: Path, topic: str | None, message: str) -> None:
    bag, _, _ = camera_bag(tmp_path / "bag", "mcap", count=2)
    with pytest.raises(InputError, match=message):
        open_source([bag], topic=topic)


def test_bag_without_images_and_unreadable_bag(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "bag", "sqlite3", {"/chatter": "std_msgs/msg/String"}, [("/chatter", 1, string_msg("hi"))])
    with pytest.raises(InputError, match=r"has no image topic .*its topics: /chatter \(std_msgs/msg/String, 1 msgs\)"):
        open_source([bag])
    corrupt = tmp_path / "corrupt.mcap"
    corrupt.write_bytes(b"\x89MCAP0\r\n" + b"\x00" * 64)
    with pytest.raises(InputError, match="cannot read ROS 2 bag"):
        open_source([corrupt])
    with pytest.raises(InputError, match="camera info topic /chatter is not"):
        open_source([camera_bag(tmp_path / "cam", "mcap", count=1)[0]], topic="/cam/image_raw", camera_info_topic="/chatter")


# ---------------------------------------------------------------------------- message payloads
def test_image_decoding_handles_padding_encodings_and_truncation() -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)

    class Msg:
        def __init__(self, encoding: str, pixels: np.ndarray, pad: int = 0, big: int = 0) -> None:
            rows = pixels.reshape(pixels.shape[0], -1).view(np.uint8)
            padded = np.concatenate([rows, np.full((rows.shape[0], pad), 7, np.uint8)], axis=1)
            self.encoding, self.height, self.width = encoding, pixels.shape[0], pixels.shape[1]
            self.step, self.is_bigendian, self.data = padded.shape[1], big, padded.reshape(-1)

    np.testing.assert_array_equal(image_to_rgb(Msg("rgb8", rgb, pad=3)), rgb)
    np.testing.assert_array_equal(image_to_rgb(Msg("bgra8", np.concatenate([rgb[..., ::-1], rgb[..., :1]], 2), pad=2)), rgb)
    grey = np.array([[0, 1000], [2000, 4000]], dtype=">u2")[..., None]
    np.testing.assert_array_equal(image_to_rgb(Msg("mono16", grey, big=1))[..., 0], [[0, 64], [128, 255]])
    with pytest.raises(InvalidImageError, match="unsupported image encoding 'bayer_rggb8'"):
        image_to_rgb(Msg("bayer_rggb8", rgb))
    short = Msg("rgb8", rgb)
    short.data = short.data[:-1]
    with pytest.raises(InvalidImageError, match="truncated"):
        image_to_rgb(short)
    bad = T["sensor_msgs/msg/CompressedImage"](header=header(0), format="jpeg", data=np.zeros(10, np.uint8))
    with pytest.raises(InvalidImageError, match="cannot decode CompressedImage"):
        compressed_to_rgb(bad)


def test_cloud_packing_round_trip_and_rviz_colour_layout() -> None:
    points = np.array([[1.0, -2.0, 3.5], [0.25, 0.5, -0.75]], np.float32)
    colors = np.array([[255, 0, 16], [1, 2, 3]], np.uint8)
    data = pack_xyzrgb(points, colors)
    assert data.dtype == np.uint8 and data.size == 32
    assert int.from_bytes(data[12:16].tobytes(), "little") == 0x00FF0010  # 0x00RRGGBB
    unpacked_points, unpacked_colors = unpack_xyzrgb(data)
    np.testing.assert_array_equal(unpacked_points, points)
    np.testing.assert_array_equal(unpacked_colors, colors)


def test_colorize_blacks_out_invalid_pixels() -> None:
    depth = np.linspace(1, 5, 12, dtype=np.float32).reshape(3, 4)
    depth[0, 0] = np.nan
    image = colorize(depth, cv2.COLORMAP_TURBO, depth > 1.5)
    assert image.shape == (3, 4, 3) and image.dtype == np.uint8
    assert not image[0, 0].any() and not image[0, 1].any() and image[2, 3].any()
    assert not np.array_equal(image[1, 0], image[2, 3])


# ---------------------------------------------------------------------------- bag writing
def test_written_map_bag_reads_back_with_types_and_stamps(tmp_path: Path) -> None:
    poses = []
    for i in range(3):
        pose = np.eye(4)
        angle = 0.3 * i
        pose[:3, :3] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
        pose[:3, 3] = [i, 0.5 * i, -i]
        poses.append(pose)
    stamps = [3_000_000_000 + 100 * i for i in (2, 0, 1)]  # out of order on purpose
    keyframes = [KeyframePose(10 + i, stamps[i], "cam", poses[i], K, (96, 72)) for i in range(3)]
    depth = np.full((72, 96), 2.0, np.float32)
    depth[0, 0] = 0.0
    cloud = PointCloud(np.arange(12, dtype=np.float32).reshape(4, 3), np.arange(12, dtype=np.uint8).reshape(4, 3))
    frames = FrameNames(map_frame="world", camera_frame="cam_now", keyframe_frame_prefix="kf_")
    counts = write_map_bag(tmp_path / "out", cloud, keyframes, lambda kf: depth * (kf.keyframe_id - 9), frames, "mapper")
    topics = bag_topics("mapper")
    assert counts == {topics["map_cloud"]: 1, topics["depth"]: 3, topics["camera_info"]: 3, topics["path"]: 3, "/tf": 3}
    with AnyReader([tmp_path / "out"]) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        assert types == {
            "/mapper/map_cloud": "sensor_msgs/msg/PointCloud2", "/mapper/depth/image": "sensor_msgs/msg/Image",
            "/mapper/depth/camera_info": "sensor_msgs/msg/CameraInfo", "/mapper/path": "nav_msgs/msg/Path", "/tf": "tf2_msgs/msg/TFMessage",
        }
        read = [(c.topic, t, reader.deserialize(raw, c.msgtype)) for c, t, raw in reader.messages()]
    assert [t for _, t, _ in read] == sorted(t for _, t, _ in read)
    by_topic: dict[str, list] = {}
    for topic, log_time, msg in read:
        by_topic.setdefault(topic, []).append((log_time, msg))
    ordered = sorted(range(3), key=lambda i: stamps[i])
    for position, (log_time, msg) in enumerate(by_topic["/mapper/depth/image"]):
        i = ordered[position]
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        assert stamp == log_time == stamps[i] and msg.header.frame_id == f"kf_{10 + i}"
        assert msg.encoding == "32FC1" and (msg.height, msg.width, msg.step) == (72, 96, 384)
        values = np.frombuffer(msg.data, "<f4").reshape(72, 96)
        assert np.isnan(values[0, 0]) and values[5, 5] == 2.0 * (i + 1)
    for position, (_, info) in enumerate(by_topic["/mapper/depth/camera_info"]):
        np.testing.assert_allclose(np.asarray(info.k).reshape(3, 3), K)
        assert (info.width, info.height, info.header.frame_id) == (96, 72, f"kf_{10 + ordered[position]}")
    for position, (_, tf) in enumerate(by_topic["/tf"]):
        i = ordered[position]
        assert [t.child_frame_id for t in tf.transforms] == [f"kf_{10 + i}", "cam_now"]
        assert tf.transforms[0].header.frame_id == "world"
        translation = tf.transforms[0].transform.translation
        np.testing.assert_allclose([translation.x, translation.y, translation.z], poses[i][:3, 3])
        q = tf.transforms[0].transform.rotation
        np.testing.assert_allclose([q.x, q.y, q.z, q.w], [0, np.sin(0.15 * i), 0, np.cos(0.15 * i)], atol=1e-12)
    assert [len(msg.poses) for _, msg in by_topic["/mapper/path"]] == [1, 2, 3]
    ((cloud_time, cloud_msg),) = by_topic["/mapper/map_cloud"]
    assert cloud_time == min(stamps) and cloud_msg.header.frame_id == "world" and cloud_msg.width == 4
    assert [f.name for f in cloud_msg.fields] == ["x", "y", "z", "rgb"] and cloud_msg.point_step == 16
    np.testing.assert_array_equal(unpack_xyzrgb(cloud_msg.data)[0], cloud.points)
