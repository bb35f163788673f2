"""ROS 2 bags (mcap or sqlite3) as a frame source, read with the rosbags library (no ROS runtime).

The image topic carries sensor_msgs/Image or CompressedImage; frames are stamped from the
message headers (the bag's receive time where a header stamp is zero).  A CameraInfo topic
(given, or the image topic's sibling ``.../camera_info``, or the bag's only one) supplies the
intrinsics of each frame: the latest info received before the image, the first info for
images that came before any, scaled to the image size if they differ.
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
from .messages import camera_info_intrinsics, compressed_to_rgb, image_to_rgb, stamp_to_ns
from .sources import Candidate, FrameSource, InputError, Selection

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
        self.path = Path(path)
        with self._reader() as reader:
            topics = dict(reader.topics)
        self.topic = self._pick_image_topic(topics, topic)
        self.camera_info_topic = self._pick_camera_info_topic(topics, camera_info_topic)
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
        k = None if info is None else camera_info_intrinsics(info, rgb.shape[1], rgb.shape[0])
        return Frame(rgb, stamp, self.topic, k)

    def _candidates(self) -> Iterator[Candidate]:
        with self._reader() as reader:
            wanted = {self.topic, self.camera_info_topic}
            connections = [c for c in reader.connections if c.topic in wanted]
            info_connections = [c for c in connections if c.topic == self.camera_info_topic]
            latest = None
            for connection, _, raw in reader.messages(connections=info_connections):
                latest = reader.deserialize(raw, connection.msgtype)
                break
            for connection, log_time, raw in reader.messages(connections=connections):
                msg = reader.deserialize(raw, connection.msgtype)
                if connection.topic == self.camera_info_topic:
                    latest = msg
                    continue
                stamp = stamp_to_ns(msg.header.stamp) or int(log_time)
                yield stamp, partial(self._frame, msg, stamp, latest)
