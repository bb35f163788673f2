"""ROS 2 bags (mcap or sqlite3) as a frame source, read with the rosbags library (no ROS runtime).

The image topic carries sensor_msgs/Image or CompressedImage; frames are stamped from the
message headers (the bag's receive time where a header stamp is zero).  A CameraInfo topic
(given, or the image topic's sibling ``.../camera_info``, or the bag's only one) supplies the
intrinsics of each frame: the latest valid info received before the image, the first valid
info for images that came before any, scaled to the image size if they differ.  An info with
a non-finite K is ignored with a warning; a message that cannot be deserialized or decoded
is a skipped frame (see `FrameSource`).  A folder holding one .mcap or .db3 file but no
metadata.yaml is read as that file.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..core.imports import import_optional
from ..mapping.keyframes import Frame
from .messages import check_camera_info, compressed_to_rgb, image_to_rgb, stamp_to_ns
from .sources import BAG_SUFFIXES, Candidate, FrameSource, InputError, Selection
from .undistort import Undistorter

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
DECODERS: dict[str, Callable[[Any], np.ndarray]] = {IMAGE: image_to_rgb, COMPRESSED_IMAGE: compressed_to_rgb}


def _rosbags() -> tuple[Any, Any]:
    """(AnyReader, default typestore): the typestore serves bags that carry no definitions."""
    import_optional("rosbags", "rosbags", "reading ROS 2 bags")
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    return AnyReader, get_typestore(Stores.ROS2_HUMBLE)


def _listing(topics: dict[str, Any], types: tuple[str, ...] | None = None) -> str:
    chosen = [(name, info) for name, info in topics.items() if types is None or info.msgtype in types]
    return ", ".join(f"{name} ({info.msgtype}, {info.msgcount} msgs)" for name, info in chosen) or "none"


class BagSource(FrameSource):
    """Frames of one image topic of a rosbag2 folder or bare .mcap / .db3 file."""

    def __init__(
        self,
        path: Path,
        topic: str | None = None,
        camera_info_topic: str | None = None,
        selection: Selection | None = None,
    ) -> None:
        super().__init__(selection)
        self.path = storage_path(Path(path))
        with self._reader() as reader:
            topics = dict(reader.topics)
        self.topic = self._pick_image_topic(topics, topic)
        self.camera_info_topic = self._pick_camera_info_topic(topics, camera_info_topic)
        self._undistorter = Undistorter()  # frames of a camera with lens distortion become pinhole ones
        info = topics[self.topic]
        self.msgtype = info.msgtype
        self.count = info.msgcount
        with_info = f", intrinsics from {self.camera_info_topic}" if self.camera_info_topic else ""
        self.description = f"ROS 2 bag {self.path}, topic {self.topic} ({self.msgtype}, {self.count} msgs{with_info})"

    @contextmanager
    def _reader(self) -> Iterator[Any]:
        AnyReader, typestore = _rosbags()
        try:
            reader = AnyReader([self.path], default_typestore=typestore)
            reader.open()
        except Exception as error:  # rosbags raises several unrelated types for unreadable bags
            raise InputError(f"cannot read ROS 2 bag {self.path}: {error} (expected a rosbag2 folder or an .mcap/.db3 file)") from error
        try:
            yield reader
        finally:
            reader.close()

    def _pick_image_topic(self, topics: dict[str, Any], topic: str | None) -> str:
        images = _listing(topics, tuple(DECODERS))
        if topic is None:
            candidates = [name for name, info in topics.items() if info.msgtype in DECODERS]
            if not candidates:
                raise InputError(
                    f"bag {self.path} has no image topic (sensor_msgs/msg/Image or CompressedImage); "
                    f"its topics: {_listing(topics)}"
                )
            if len(candidates) > 1:
                raise InputError(f"bag {self.path} has several image topics: {images}; choose one with --topic")
            topic = candidates[0]
        if topic not in topics:
            raise InputError(f"topic {topic} is not in bag {self.path}; its image topics: {images}")
        info = topics[topic]
        if info.msgtype not in DECODERS:
            raise InputError(
                f"topic {topic} in bag {self.path} carries {info.msgtype}, not sensor_msgs/msg/Image or "
                f"CompressedImage; its image topics: {images}"
            )
        if info.msgcount == 0:
            raise InputError(f"topic {topic} in bag {self.path} has no messages; its image topics: {images}")
        return topic

    def _pick_camera_info_topic(self, topics: dict[str, Any], requested: str | None) -> str | None:
        if requested is not None:
            if topics.get(requested) is None or topics[requested].msgtype != CAMERA_INFO:
                raise InputError(
                    f"camera info topic {requested} is not a {CAMERA_INFO} topic of bag {self.path}; "
                    f"CameraInfo topics: {_listing(topics, (CAMERA_INFO,))}"
                )
            return requested
        base = self.topic.removesuffix("/compressed").rsplit("/", 1)[0]
        sibling = f"{base}/camera_info"
        infos = [name for name, info in topics.items() if info.msgtype == CAMERA_INFO and info.msgcount > 0]
        if sibling in infos:
            return sibling
        return infos[0] if len(infos) == 1 else None

    def available(self) -> int:
        return self.count

    def _frame(self, msg: Any, stamp: int, info: Any | None) -> Frame:
        try:
            rgb = DECODERS[self.msgtype](msg)
        except Exception as error:
            raise InputError(f"cannot decode the {self.topic} message stamped {stamp / 1e9:.9f} in {self.path}: {error}") from error
        rgb, k = self._undistorter.calibrated(rgb, info)
        return Frame(rgb, stamp, self.topic, k)

    def _undecodable(self, log_time: int, error: Exception) -> Frame:
        raise InputError(f"cannot deserialize the {self.topic} message logged at {log_time / 1e9:.9f} in {self.path}: {error}")

    def _camera_info(self, reader: Any, connection: Any, raw: bytes) -> Any | None:
        """A usable CameraInfo, or None (with a warning) for one that cannot be read or used."""
        try:
            info = reader.deserialize(raw, connection.msgtype)
            check_camera_info(info)
        except Exception as error:  # noqa: BLE001 - a bad info is ignored, the frames stay
            self.warn(f"ignored CameraInfo messages on {self.camera_info_topic} that cannot be used: {error}")
            return None
        return info

    def _candidates(self) -> Iterator[Candidate]:
        with self._reader() as reader:
            info_connections = [c for c in reader.connections if c.topic == self.camera_info_topic]
            image_connections = [c for c in reader.connections if c.topic == self.topic]
            latest = None
            # rosbags reads every topic for an empty connection list: ask only when there is one.
            for connection, _, raw in reader.messages(connections=info_connections) if info_connections else ():
                latest = self._camera_info(reader, connection, raw)
                if latest is not None:
                    break
            for connection, log_time, raw in reader.messages(connections=info_connections + image_connections):
                if connection.topic == self.camera_info_topic:
                    latest = self._camera_info(reader, connection, raw) or latest
                    continue
                try:
                    msg = reader.deserialize(raw, connection.msgtype)
                    stamp = stamp_to_ns(msg.header.stamp) or int(log_time)
                except Exception as error:  # noqa: BLE001 - one corrupt record is one skipped frame
                    yield int(log_time), partial(self._undecodable, int(log_time), error)
                    continue
                yield stamp, partial(self._frame, msg, stamp, latest)


def storage_path(path: Path) -> Path:
    """What to open for `path`: a rosbag2 folder, or the one storage file of a folder without
    metadata.yaml (e.g. an .mcap copied into a folder of its own)."""
    if not path.is_dir() or (path / "metadata.yaml").is_file():
        return path
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in BAG_SUFFIXES)
    if len(files) == 1:
        return files[0]
    raise InputError(
        f"folder {path} has no metadata.yaml and {len(files)} storage files ({', '.join(p.name for p in files)}); "
        "pass one of them, or restore metadata.yaml (ros2 bag reindex)"
    )
