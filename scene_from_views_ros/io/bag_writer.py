"""Write a mapping result as a ROS 2 bag (mcap) for replay into RViz with ``ros2 bag play``.

The topics are the node's (``/<node>/map_cloud``, ``/<node>/depth/image``, ``/<node>/depth/camera_info``,
``/<node>/path``, ``/tf``), so one RViz configuration serves live mapping and replay.  Every
message is stamped with its keyframe's stamp and written at that time; the map cloud comes
first, at the first keyframe's stamp, so the whole map is visible while the path grows (to
the newest `path_max_poses` keyframes, as the node publishes it).
Messages are built and serialised with rosbags' typestore: no ROS runtime needed.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.files import atomic_path
from ..core.imports import import_optional
from ..core.result import PointCloud
from ..geometry.sim3 import pose_to_translation_quaternion
from ..mapping.global_map import KeyframePose
from ..mapping.settings import DEFAULT_NODE_NAME, FrameNames, PublishConfig
from .messages import (
    CLOUD_FIELDS,
    CLOUD_POINT_STEP,
    POINTFIELD_FLOAT32,
    camera_info_fields,
    float_image_fields,
    masked_depth,
    pack_xyzrgb,
    split_stamp,
)

BAG_VERSION = 8  # read by Iron, Jazzy and later (and by Humble's rosbag2 with mcap support)


class _Messages:
    """Typestore message constructors for the few types the bag holds."""

    def __init__(self) -> None:
        import_optional("rosbags", "rosbags", "writing ROS 2 bags")
        from rosbags.typesys import Stores, get_typestore

        self.typestore = get_typestore(Stores.ROS2_HUMBLE)
        self.t = self.typestore.types

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        sec, nanosec = split_stamp(stamp_ns)
        return self.t["std_msgs/msg/Header"](stamp=self.t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=frame_id)

    def cloud(self, cloud: PointCloud, stamp_ns: int, frame_id: str) -> Any:
        fields = [self.t["sensor_msgs/msg/PointField"](name=name, offset=offset, datatype=POINTFIELD_FLOAT32, count=1) for name, offset in CLOUD_FIELDS]
        return self.t["sensor_msgs/msg/PointCloud2"](
            header=self.header(stamp_ns, frame_id), height=1, width=len(cloud), fields=fields, is_bigendian=False,
            point_step=CLOUD_POINT_STEP, row_step=CLOUD_POINT_STEP * len(cloud),
            data=pack_xyzrgb(cloud.points, cloud.colors), is_dense=True,
        )

    def depth(self, depth: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
        """32FC1 with NaN where the depth is not a positive finite number."""
        depth = masked_depth(depth)
        return self.t["sensor_msgs/msg/Image"](
            header=self.header(stamp_ns, frame_id), **float_image_fields(depth), data=depth.reshape(-1).view(np.uint8),
        )

    def camera_info(self, keyframe: KeyframePose, frame_id: str) -> Any:
        width, height = keyframe.image_size
        roi = self.t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return self.t["sensor_msgs/msg/CameraInfo"](
            header=self.header(keyframe.stamp_ns, frame_id), **camera_info_fields(keyframe.intrinsics, width, height),
            binning_x=0, binning_y=0, roi=roi,
        )

    def pose_stamped(self, keyframe: KeyframePose, frame_id: str) -> Any:
        (x, y, z), (qx, qy, qz, qw) = pose_to_translation_quaternion(keyframe.pose)
        pose = self.t["geometry_msgs/msg/Pose"](
            position=self.t["geometry_msgs/msg/Point"](x=float(x), y=float(y), z=float(z)),
            orientation=self.t["geometry_msgs/msg/Quaternion"](x=float(qx), y=float(qy), z=float(qz), w=float(qw)),
        )
        return self.t["geometry_msgs/msg/PoseStamped"](header=self.header(keyframe.stamp_ns, frame_id), pose=pose)

    def path(self, poses: list[Any], stamp_ns: int, frame_id: str) -> Any:
        return self.t["nav_msgs/msg/Path"](header=self.header(stamp_ns, frame_id), poses=list(poses))

    def tf(self, pose: np.ndarray, stamp_ns: int, parent: str, children: Sequence[str]) -> Any:
        (x, y, z), (qx, qy, qz, qw) = pose_to_translation_quaternion(pose)
        transform = self.t["geometry_msgs/msg/Transform"](
            translation=self.t["geometry_msgs/msg/Vector3"](x=float(x), y=float(y), z=float(z)),
            rotation=self.t["geometry_msgs/msg/Quaternion"](x=float(qx), y=float(qy), z=float(qz), w=float(qw)),
        )
        stamped = [
            self.t["geometry_msgs/msg/TransformStamped"](header=self.header(stamp_ns, parent), child_frame_id=child, transform=transform)
            for child in children
        ]
        return self.t["tf2_msgs/msg/TFMessage"](transforms=stamped)


def bag_topics(node_name: str = DEFAULT_NODE_NAME) -> dict[str, str]:
    """Topic of each output, as the node names them (``~/x`` = ``/<node>/x``)."""
    base = f"/{node_name.strip('/')}"
    return {
        "map_cloud": f"{base}/map_cloud",
        "depth": f"{base}/depth/image",
        "camera_info": f"{base}/depth/camera_info",
        "path": f"{base}/path",
        "tf": "/tf",
    }


def write_map_bag(
    path: str | Path,
    cloud: PointCloud,
    keyframes: Sequence[KeyframePose],
    depth_of: Callable[[KeyframePose], np.ndarray],
    frames: FrameNames | None = None,
    node_name: str = DEFAULT_NODE_NAME,
    path_max_poses: int = PublishConfig().path_max_poses,
) -> dict[str, int]:
    """Write the map bag at `path` (a new folder); returns the message count per topic.

    `depth_of(keyframe)` gives the keyframe's HxW depth in map units (loaded lazily, so the
    depth maps of a long run need not all be in memory).
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    frames = frames or FrameNames()
    make = _Messages()
    topics = bag_topics(node_name)
    types = {
        "map_cloud": "sensor_msgs/msg/PointCloud2",
        "depth": "sensor_msgs/msg/Image",
        "camera_info": "sensor_msgs/msg/CameraInfo",
        "path": "nav_msgs/msg/Path",
        "tf": "tf2_msgs/msg/TFMessage",
    }
    ordered = sorted(keyframes, key=lambda keyframe: keyframe.stamp_ns)
    counts = {topic: 0 for topic in topics.values()}
    with atomic_path(path, folder=True) as temporary, Writer(temporary, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {key: writer.add_connection(topics[key], msgtype, typestore=make.typestore) for key, msgtype in types.items()}

        def write(key: str, stamp_ns: int, msg: Any) -> None:
            writer.write(connections[key], int(stamp_ns), make.typestore.serialize_cdr(msg, types[key]))
            counts[topics[key]] += 1

        if ordered:
            write("map_cloud", ordered[0].stamp_ns, make.cloud(cloud, ordered[0].stamp_ns, frames.map_frame))
        poses: deque[Any] = deque(maxlen=path_max_poses)
        for keyframe in ordered:
            stamp, child = keyframe.stamp_ns, frames.keyframe_frame(keyframe.keyframe_id)
            write("tf", stamp, make.tf(keyframe.pose, stamp, frames.map_frame, [child, frames.camera_frame]))
            write("depth", stamp, make.depth(depth_of(keyframe), stamp, child))
            write("camera_info", stamp, make.camera_info(keyframe, child))
            poses.append(make.pose_stamped(keyframe, frames.map_frame))
            write("path", stamp, make.path(list(poses), stamp, frames.map_frame))
    return counts
