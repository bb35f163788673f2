"""The ROS 2 node: camera images in; map and window clouds, depth, path, TF and diagnostics out.

A thin shell around `SlidingWindowMapper`: image callbacks convert the message and offer the
frame to the mapper (cheap; keyframe selection only), the mapper reconstructs windows on its
worker thread and calls `_on_window` there, which builds and publishes every output of that
window.  rclpy publishers are thread-safe; `_publish_lock` orders window publishing against
`~/reset` so that a window finished just before a reset is never published after it.

Outputs (node-private names), all in `map_frame` (REP-105, z up; see ros/tf_links.py) unless
said otherwise:
  ~/map_cloud (PointCloud2, reliable + transient local), ~/window_cloud (the latest window),
  ~/depth/image and ~/confidence/image (32FC1 per keyframe of the window, frame = the image's
  optical frame, NaN = invalid), each with its camera_info beside it (image_transport's
  naming), ~/path (the newest publish.path_max_poses keyframes), ~/keyframe_poses (the
  keyframes each window adds), ~/odometry (nav_msgs/Odometry of the base, or without odometry
  the camera, in the map at each new keyframe; no covariance estimate: zeros), /tf (tf_mode:
  map -> odom, or map -> camera; keyframe frames with publish.keyframe_frames), /diagnostics.
Inputs besides the cameras: /tf and /tf_static (the robot's odometry and camera mount).
Services: ~/reset (std_srvs/Trigger), ~/save_map (scene_from_views_interfaces/SaveMap: a folder
and formats).  With rig_slop_s the cameras' images of one moment are one multi-view keyframe.  Units are metres with a metric model or
an odometry scale (scale_source), else the model's ("map units").  No message stops the node: what an input callback cannot use
is dropped, logged once per topic and reason, and counted in /diagnostics.  However it ends
(Ctrl-C, SIGTERM, SIGHUP) the node finishes the window in flight and saves its map
(map.save_on_shutdown).  Stamps or, under use_sim_time, the clock going back by more than
keyframe.time_jump_s (a looping bag, a simulation reset) restart keyframing (map.reset_on_time_jump:
and the map).
"""
from __future__ import annotations

import os
import pathlib
import sys
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TransformStamped
from nav_msgs.msg import Odometry, Path
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import JumpThreshold, TimeJump
from rclpy.duration import Duration
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile
from rclpy.qos_overriding_options import QoSOverridingOptions, QoSPolicyKind
from rclpy.service import Service
from rclpy.signals import SignalHandlerOptions
from rclpy.subscription import Subscription
from rclpy.timer import Timer
from scene_from_views_interfaces.srv import SaveMap
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage

from ..core.checkpoint import check_checkpoint_reference
from ..core.errors import SceneFromViewsError
from ..core.result import PointCloud
from ..core.signals import signals_interrupt
from ..io.camera_info_sync import CameraInfoByStamp
from ..io.exports import KeyframeImages, write_map_exports
from ..io.messages import (
    UnsupportedEncodingError,
    check_camera_info,
    compressed_to_rgb,
    image_to_rgb,
    masked_depth,
    stamp_to_ns,
)
from ..io.outputs import write_keyframes_json
from ..io.undistort import Undistorter
from ..mapping.chaining import WindowInMap, usable_intrinsics
from ..mapping.exports import MAP_FORMATS
from ..mapping.keyframes import Frame
from ..mapping.map_frame import MapFrame
from ..mapping.mapper import SlidingWindowMapper
from ..mapping.rig import RigSynchronizer
from ..mapping.settings import DEFAULT_NODE_NAME, NODE_SAVE_FORMATS, MappingSettings, read_yaml_file, settings_from_parameters
from ..mapping.windows import Window
from .conversions import (
    diagnostic_array,
    float_image_msg,
    intrinsics_to_camera_info,
    make_pointcloud2,
    make_pointcloud2_from_views,
    pose_to_odometry,
    poses_to_path,
    poses_to_transforms,
    transform_to_matrix,
)
from .params import (
    Backend,
    BackendRebuilder,
    build_backend,
    declare_node_parameters,
    is_ros_parameter,
    parameter_values,
)
from .qos import DIAGNOSTICS_QOS, MAP_CLOUD_QOS, TF_QOS, TF_STATIC_QOS, WINDOW_QOS, image_qos
from .tf_buffer import TransformBuffer
from .tf_links import TfLinks, camera_frame_of, check_scale_source

_SIGNAL_POLL_S = 0.2  # longest wait of the executor, so that a signal is handled promptly
# The output profiles a user may override (qos_overrides.<topic>.publisher.<policy>).
QOS_OVERRIDES = QoSOverridingOptions(
    policy_kinds=(QoSPolicyKind.HISTORY, QoSPolicyKind.DEPTH, QoSPolicyKind.RELIABILITY, QoSPolicyKind.DURABILITY))
IMAGE_EXPORTS = ("colmap", "nerfstudio")  # the exports that need the keyframe images
TF_CACHE_S = 60.0  # TF history kept for keyframe lookups (windows finish seconds after their frames)
MAP_TO_ODOM_PERIOD_S = 0.1  # map -> odom republished at the current time

# ---------------------------------------------------------------- window -> messages
@dataclass
class WindowMessages:
    """The messages of one placed window (the map cloud comes from the map, separately)."""

    window_cloud: PointCloud2
    depths: list[Image]
    confidences: list[Image]
    camera_infos: list[CameraInfo]
    transforms: TFMessage
    new_keyframes: Path
    path: Path
    views_without_intrinsics: int = 0  # views whose depth was not published: the model's K was not finite and positive


def window_cloud_masks(window: WindowInMap, min_confidence: float, stride: int) -> list[np.ndarray]:
    """Per view, the (strided) pixels that the model kept, finite and at least `min_confidence`."""
    return [
        mask[::stride, ::stride] & np.isfinite(points[::stride, ::stride, 2]) & (confidence[::stride, ::stride] >= min_confidence)
        for points, confidence, mask in zip(window.points, window.confidences, window.masks, strict=True)
    ]


class PathCache:
    """The newest `max_poses` keyframe poses (internal map), as nav_msgs/Path in the published
    map frame: each window adds its new keyframes (a keyframe's pose never changes once placed),
    the conversion is of at most `max_poses` poses, so a window's path does not cost more as
    the run grows (and follows a map scale that is still being estimated)."""

    def __init__(self, max_poses: int) -> None:
        self._poses: deque[tuple[np.ndarray, int]] = deque(maxlen=max_poses)

    def clear(self) -> None:
        self._poses.clear()

    def add(self, window: WindowInMap, frame_id: str, map_frame: MapFrame) -> Path:
        """Take the keyframes `window` added; returns them as a Path of their own."""
        views = window.new_views
        self._poses.extend((window.poses[v], window.keyframes[v].stamp_ns) for v in views)
        return poses_to_path(list(map_frame.poses(np.stack([window.poses[v] for v in views]))) if views else [],
                             [window.keyframes[v].stamp_ns for v in views], frame_id, window_stamp_ns(window))

    def path(self, frame_id: str, stamp_ns: int, max_poses: int, map_frame: MapFrame) -> Path:
        """The newest keyframes (at most `max_poses`, which may change at runtime)."""
        if max_poses != self._poses.maxlen:
            self._poses = deque(self._poses, maxlen=max_poses)
        if not self._poses:
            return poses_to_path([], [], frame_id, stamp_ns)
        poses = map_frame.poses(np.stack([pose for pose, _ in self._poses]))
        return poses_to_path(list(poses), [stamp for _, stamp in self._poses], frame_id, stamp_ns)


def window_stamp_ns(window: WindowInMap) -> int:
    """A window's outputs carry the stamp of its newest keyframe."""
    return max(keyframe.stamp_ns for keyframe in window.keyframes)


def build_window_messages(window: WindowInMap, settings: MappingSettings, path_cache: PathCache, map_frame: MapFrame,
                          transforms: list[TransformStamped]) -> WindowMessages:
    """Turn a placed window and the trajectory into messages in the published map frame
    (vectorised: the 1.6M points of 8 views at 518x392 are written straight into the message
    buffer, see bench/bench_publish.py); `transforms` are the window's TF (see the node)."""
    stamp_ns = window_stamp_ns(window)
    min_confidence, stride, names = settings.mapper.map.min_confidence, settings.publish.window_cloud_stride, settings.frames
    window_cloud = make_pointcloud2_from_views(
        [map_frame.points(points[::stride, ::stride]) for points in window.points], [image[::stride, ::stride] for image in window.images],
        window_cloud_masks(window, min_confidence, stride), stamp_ns, names.map_frame,
    )
    depths, confidences, camera_infos = [], [], []
    without_intrinsics = 0
    if settings.publish.depth:
        for view, keyframe in enumerate(window.keyframes):
            if not usable_intrinsics(window.intrinsics[view]):  # depth_image_proc would divide by it
                without_intrinsics += 1
                continue
            depth, confidence = window.depths[view] * np.float32(map_frame.scale), window.confidences[view]
            valid = window.masks[view] & (confidence >= min_confidence)
            frame = camera_frame_of(keyframe, names)
            depths.append(float_image_msg(masked_depth(depth, valid), keyframe.stamp_ns, frame))
            confidences.append(float_image_msg(confidence, keyframe.stamp_ns, frame))
            height, width = depth.shape
            camera_infos.append(intrinsics_to_camera_info(window.intrinsics[view], width, height, keyframe.stamp_ns, frame))
    return WindowMessages(
        window_cloud=window_cloud,
        depths=depths,
        confidences=confidences,
        camera_infos=camera_infos,
        transforms=TFMessage(transforms=transforms),
        new_keyframes=path_cache.add(window, names.map_frame, map_frame),
        path=path_cache.path(names.map_frame, stamp_ns, settings.publish.path_max_poses, map_frame),
        views_without_intrinsics=without_intrinsics,
    )


class OutputPublishers:
    """The node's output topics and the publish step of a window (also used by the bench)."""

    def __init__(self, node: Node, path_max_poses: int) -> None:
        def publisher(kind: type, topic: str, qos: QoSProfile) -> Any:
            # qos_overrides.<topic>.publisher.<policy> parameters change the profile at start-up,
            # in place: each publisher gets its own copy of the shared one
            own = QoSProfile(history=qos.history, depth=qos.depth, reliability=qos.reliability, durability=qos.durability)
            return node.create_publisher(kind, topic, own, qos_overriding_options=QOS_OVERRIDES)

        self.map_cloud = publisher(PointCloud2, "~/map_cloud", MAP_CLOUD_QOS)
        self.window_cloud = publisher(PointCloud2, "~/window_cloud", WINDOW_QOS)
        self.depth = publisher(Image, "~/depth/image", WINDOW_QOS)
        self.depth_info = publisher(CameraInfo, "~/depth/camera_info", WINDOW_QOS)
        self.confidence = publisher(Image, "~/confidence/image", WINDOW_QOS)
        self.confidence_info = publisher(CameraInfo, "~/confidence/camera_info", WINDOW_QOS)
        self.path = publisher(Path, "~/path", MAP_CLOUD_QOS)
        self.new_keyframes = publisher(Path, "~/keyframe_poses", WINDOW_QOS)
        self.odometry = publisher(Odometry, "~/odometry", WINDOW_QOS)
        self.tf = node.create_publisher(TFMessage, "/tf", TF_QOS)
        self.path_cache = PathCache(path_max_poses)

    def publish_window(self, window: WindowInMap, map_snapshot: Callable[[], PointCloud], settings: MappingSettings,
                       map_frame: MapFrame, transforms: list[TransformStamped]) -> WindowMessages:
        """Build and publish everything one placed window changes, the map included; returns the window's messages."""
        messages = build_window_messages(window, settings, self.path_cache, map_frame, transforms)
        cloud = map_snapshot()
        self.publish(messages, make_pointcloud2(map_frame.points(cloud.points), cloud.colors, window_stamp_ns(window),
                                                settings.frames.map_frame))
        return messages

    def publish(self, messages: WindowMessages, map_cloud: PointCloud2) -> None:
        """Publish a window's messages and the map cloud."""
        self.window_cloud.publish(messages.window_cloud)
        for depth, confidence, info in zip(messages.depths, messages.confidences, messages.camera_infos, strict=True):
            self.depth.publish(depth)
            self.depth_info.publish(info)
            self.confidence.publish(confidence)
            self.confidence_info.publish(info)
        if messages.transforms.transforms:
            self.tf.publish(messages.transforms)
        self.new_keyframes.publish(messages.new_keyframes)
        self.path.publish(messages.path)
        self.map_cloud.publish(map_cloud)

    def publishers(self) -> list[Any]:
        """Every publisher of the window outputs (/tf included)."""
        return [self.map_cloud, self.window_cloud, self.depth, self.depth_info, self.confidence, self.confidence_info,
                self.path, self.new_keyframes, self.odometry, self.tf]

    def publish_empty_map(self, frame_id: str, stamp_ns: int) -> None:
        """After a reset: an empty map cloud and path (latched for late joiners)."""
        self.path_cache.clear()
        empty = np.zeros((0, 3), np.float32)
        self.map_cloud.publish(make_pointcloud2(empty, empty.astype(np.uint8), stamp_ns, frame_id))
        self.path.publish(poses_to_path([], [], frame_id, stamp_ns))


def device_memory_mb(device: Any) -> tuple[str, float]:
    """("cuda_allocated_mb", MB) for a CUDA device, else ("process_rss_mb", resident MB)."""
    if getattr(device, "type", "") == "cuda":
        import torch

        return "cuda_allocated_mb", torch.cuda.memory_allocated(device) / 2**20
    try:
        with open("/proc/self/statm") as statm:
            return "process_rss_mb", int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return "process_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- the node
class MappingNodeBody:
    """What the mapping node does, for the plain node and the lifecycle node: `_configure`
    builds the model, the mapper and every topic, service and timer; `_unconfigure` undoes it.
    Images are mapped while `_active`."""

    _active = True

    def _configure(self: Any) -> None:
        """Build the model (from the declared parameters), the mapper and the interface."""
        self._entities: list[Any] = []
        own = self._entities.append
        self._backend: Backend = build_backend(self._settings)
        check_scale_source(self._settings.frames, self._backend.model)
        self._publish_lock = threading.Lock()
        self._counts_lock = threading.Lock()
        self._received: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()  # by kind: image, camera_info
        self._last_rejection = ""
        self._reported: set[tuple[str, str]] = set()
        self._camera_info: defaultdict[str, CameraInfoByStamp] = defaultdict(CameraInfoByStamp)
        self._undistorter = Undistorter()  # frames of a camera with lens distortion become pinhole ones
        topics = self._settings.inputs.image_topics
        # a camera rig: the cameras' frames of one moment become one multi-view keyframe
        self._rig = RigSynchronizer(topics, self._settings.inputs.rig_slop_s) if self._settings.inputs.rig_slop_s > 0 and len(topics) > 1 else None
        self.tf_buffer = TransformBuffer(cache_s=TF_CACHE_S)
        self._tf_links = TfLinks(self)
        self._publish_s = 0.0
        self._views_without_intrinsics = self._last_without_intrinsics = 0
        self.keyframe_images = KeyframeImages()  # for the COLMAP and nerfstudio exports (map.save_formats)
        self._last_diagnostics = (time.monotonic(), 0, 0, 0, 0)
        self._model_status = "ready"

        settings = self._settings
        self.outputs = OutputPublishers(self, settings.publish.path_max_poses)
        self._entities.extend(self.outputs.publishers())
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
        own(self.diagnostics_pub)

        self.mapper = SlidingWindowMapper(
            self._backend.model, settings.mapper, threaded=True, on_window=self._on_window,
            on_error=self._on_window_error, reconstruct_kwargs=self._backend.reconstruct_kwargs,
        )
        self.mapper.on_new_map = self._on_new_map
        # Under use_sim_time a looping bag or a simulation reset moves the clock back.
        self._clock_jumps = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-1), on_clock_change=False),
            post_callback=self._on_clock_jump,
        )
        # A new model is built on a thread of its own, never in a callback.
        self._rebuilder = BackendRebuilder(self._on_backend_ready, self._on_backend_failed)
        # Images get their own callback group so that a slow service or parameter callback
        # (default group) never stalls them under a MultiThreadedExecutor.
        inputs = MutuallyExclusiveCallbackGroup()
        qos = image_qos(settings.inputs.image_qos, settings.inputs.image_qos_depth)
        camera_info_topics = settings.inputs.camera_info_topics
        for index, topic in enumerate(settings.inputs.image_topics):
            compressed = topic.rstrip("/").endswith("/compressed")
            own(self.create_subscription(
                CompressedImage if compressed else Image, topic,
                lambda msg, topic=topic, compressed=compressed: self._on_image(msg, topic, compressed),
                qos, callback_group=inputs,
            ))
            if index < len(camera_info_topics) and camera_info_topics[index]:
                info_topic = camera_info_topics[index]
                own(self.create_subscription(
                    CameraInfo, info_topic,
                    lambda msg, topic=topic, info_topic=info_topic: self._on_camera_info(msg, topic, info_topic),
                    qos, callback_group=inputs,
                ))
        own(self.create_subscription(TFMessage, "/tf", lambda msg: self._on_tf(msg, False), TF_QOS, callback_group=inputs))
        own(self.create_subscription(TFMessage, "/tf_static", lambda msg: self._on_tf(msg, True), TF_STATIC_QOS, callback_group=inputs))
        own(self.create_timer(MAP_TO_ODOM_PERIOD_S, self._republish_map_to_odom))
        own(self.create_service(Trigger, "~/reset", self._on_reset))
        own(self.create_service(SaveMap, "~/save_map", self._on_save_map))
        own(self.create_timer(settings.inputs.diagnostics_period_s, self._publish_diagnostics))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.get_logger().info(
            f"mapping {', '.join(settings.inputs.image_topics)} with {settings.model_type} on {self._backend.model.device} "
            f"(window {settings.mapper.window.size}/{settings.mapper.window.overlap})"
        )

    @property
    def settings(self) -> MappingSettings:
        return self._settings

    @property
    def backend(self) -> Backend:
        """The model and optimizer the mapper uses now."""
        return self._backend

    @property
    def model_status(self) -> str:
        """"ready", "rebuilding" or "rebuild failed: <reason>"."""
        return "rebuilding" if self._rebuilder.busy else self._model_status

    def close(self) -> None:
        """Stop the model builder and the mapping worker (the window in flight is finished first)."""
        self._rebuilder.close()
        self.mapper.close()

    def _unconfigure(self: Any) -> None:
        """Undo `_configure`: the mapper stopped, every topic, service and timer destroyed."""
        self.close()
        self._clock_jumps.unregister()
        self.remove_on_set_parameters_callback(self._on_set_parameters)
        for entity in self._entities:
            {Subscription: self.destroy_subscription, Publisher: self.destroy_publisher, Timer: self.destroy_timer,
             Service: self.destroy_service}[type(entity)](entity)
        self._entities.clear()

    # ---- input -------------------------------------------------------------------------
    def _on_image(self, msg: Image | CompressedImage, topic: str, compressed: bool) -> None:
        if not self._active:  # a lifecycle node maps only when active
            return
        with self._counts_lock:
            self._received[topic] += 1
        try:
            rgb = compressed_to_rgb(msg) if compressed else image_to_rgb(msg)
            stamp_ns = stamp_to_ns(msg.header.stamp) or self.get_clock().now().nanoseconds
            info = self._camera_info[topic].for_stamp(stamp_ns, self._settings.inputs.camera_info_slop_s)
            if info is not None and info.width and info.height and (info.width, info.height) != (rgb.shape[1], rgb.shape[0]):
                self._warn_camera_info_size(topic, (info.width, info.height), (rgb.shape[1], rgb.shape[0]))
            rgb, intrinsics = self._undistorter.calibrated(rgb, info)
            frame = Frame(rgb, stamp_ns, topic, intrinsics, msg.header.frame_id)
            if self._rig is None:
                self.mapper.add_frame(frame)
            elif (group := self._rig.add(frame)) is not None:
                self.mapper.add_frames(group)
        except Exception as error:  # noqa: BLE001 - no message may stop the node (or lose its map)
            self._reject(topic, "image", error)

    def _warn_camera_info_size(self, topic: str, info_size: tuple[int, int], image_size: tuple[int, int]) -> None:
        """A CameraInfo for images of another size: K is scaled to the image (a resized stream);
        said once per topic and sizes, with the fix when the aspect ratio differs too."""
        reason = f"camera_info size {info_size}"
        with self._counts_lock:
            first = (topic, reason) not in self._reported
            self._reported.add((topic, reason))
        if first:
            (iw, ih), (w, h) = info_size, image_size
            aspect = abs(iw / ih - w / h) > 0.01 * (w / h)
            self.get_logger().warning(
                f"{topic}: its CameraInfo is for {iw}x{ih} images, these are {w}x{h}: K is scaled to them"
                + ("; the aspect ratio differs (cropped images, or the wrong CameraInfo topic?): publish the CameraInfo of "
                   "these images" if aspect else "")
            )

    def _on_camera_info(self, msg: CameraInfo, image_topic: str, topic: str) -> None:
        try:
            check_camera_info(msg)
        except Exception as error:  # noqa: BLE001 - no message may stop the node
            self._reject(topic, "camera_info", error)
            return
        self._camera_info[image_topic].add(msg, stamp_to_ns(msg.header.stamp))

    def _reject(self, topic: str, kind: str, error: Exception) -> None:
        """Count a message the node cannot use; log each reason once per topic (a bad camera
        repeats it every frame), e.g. an unsupported encoding, a truncated image."""
        reason = type(error).__name__ + (f" {error}" if isinstance(error, UnsupportedEncodingError) else "")
        with self._counts_lock:
            self._rejected[kind] += 1
            self._last_rejection = f"{topic}: {type(error).__name__}: {error}"
            first = (topic, reason) not in self._reported
            self._reported.add((topic, reason))
        if first:
            self.get_logger().error(
                f"{topic}: {type(error).__name__}: {error}; {kind} messages like this are dropped and counted "
                "in /diagnostics (logged once per topic and reason)"
            )

    # ---- window outputs ----------------------------------------------------------------
    def _on_window(self, window: WindowInMap) -> None:
        """Called on the mapper's worker thread for each placed window."""
        with self._publish_lock:
            if self.mapper.latest_window is not window:  # a reset came in between
                return
            started = time.perf_counter()
            transforms, bodies = self._tf_links.place(window, self._settings, self.mapper.metric)
            messages = self.outputs.publish_window(window, self.mapper.map_cloud, self._settings, self._tf_links.map_frame, transforms)
            if set(IMAGE_EXPORTS) & set(self._settings.output.save_formats):
                self.keyframe_images.add_window(window)
            self._views_without_intrinsics += messages.views_without_intrinsics
            for body in bodies:
                self.outputs.odometry.publish(pose_to_odometry(body.pose, self._settings.frames.map_frame, body.child_frame, body.stamp_ns))
            self._publish_s = time.perf_counter() - started

    def _on_tf(self, msg: TFMessage, static: bool) -> None:
        for transform in msg.transforms:
            try:
                self.tf_buffer.add(transform.header.frame_id, transform.child_frame_id, stamp_to_ns(transform.header.stamp),
                                   transform_to_matrix(transform.transform), static)
            except Exception as error:  # noqa: BLE001 - no message may stop the node
                self._reject("/tf_static" if static else "/tf", "tf", error)

    def _republish_map_to_odom(self) -> None:
        """map -> odom stamped now, so that TF users at the current time find it (tf2 does not
        extrapolate past the last keyframe's stamp)."""
        latest = self._tf_links.latest_map_to_odom
        if latest is not None and self._settings.frames.tf_mode != "none":
            self.outputs.tf.publish(TFMessage(transforms=poses_to_transforms(
                [latest], self._settings.frames.map_frame, [self._settings.frames.odom_frame], [self.get_clock().now().nanoseconds])))

    def _on_window_error(self, window: Window, error: Exception) -> None:
        self.get_logger().warning(
            f"window {window.index} ({len(window)} keyframes) failed and was skipped, the map is kept: "
            f"{type(error).__name__}: {error}"
        )

    # ---- services ----------------------------------------------------------------------
    def _on_clock_jump(self, jump: TimeJump) -> None:
        """The ROS clock went back by more than keyframe.time_jump_s: keyframing restarts for
        every camera (and the map, with map.reset_on_time_jump), as for a jump in the stamps."""
        back_s = -jump.delta.nanoseconds / 1e9
        if back_s > self._settings.mapper.keyframe.time_jump_s:
            if self._rig is not None:
                self._rig.clear()
            self.mapper.time_jumped_back(back_s)

    def _on_reset(self, _: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._publish_lock:
            self.mapper.reset()
            self._publish_empty_map()
        self.get_logger().info("map reset")
        response.success, response.message = True, "map, trajectory and pending keyframes cleared"
        return response

    def _publish_empty_map(self) -> None:
        """After a reset (the service, or a time jump with map.reset_on_time_jump): an empty map
        cloud and path, latched for late joiners; the next map aligns itself afresh."""
        self._tf_links.clear()
        self.keyframe_images.clear()
        self.outputs.publish_empty_map(self._settings.frames.map_frame, self.get_clock().now().nanoseconds)

    def _on_new_map(self) -> None:
        with self._publish_lock:
            self._publish_empty_map()

    def _on_save_map(self, request: SaveMap.Request, response: SaveMap.Response) -> SaveMap.Response:
        try:
            files = self.save_map(request.directory, tuple(request.formats))
        except (OSError, ValueError) as error:
            where = str(self._settings.node_output_dir(request.directory))
            response.success, response.message = False, f"cannot write the map to {where!r}: {error}"
            self.get_logger().error(response.message)
            return response
        response.success, response.files = True, [str(path) for path in files]
        response.message = f"wrote {', '.join(response.files)} ({self.mapper.stats.map_points} points)"
        return response

    def save_map(self, directory: str = "", formats: tuple[str, ...] = ()) -> list[pathlib.Path]:
        """Write the map in `formats` (NODE_SAVE_FORMATS; default map.save_formats: map.ply, map.pcd,
        map_trajectory.tum, keyframes.json, colmap/, nerfstudio/) into `directory` (default map.output_dir; a relative
        one under $ROS_HOME/scene_from_views), in the published map frame and units; each file
        under a temporary name, then renamed: a failed write leaves the previous files.
        Returns the files written.  Raises OSError, or ValueError for an unknown format."""
        settings = self._settings
        unknown = sorted(set(formats) - set(NODE_SAVE_FORMATS))
        if unknown:
            raise ValueError(f"unknown format(s) {', '.join(unknown)}: choose from {', '.join(NODE_SAVE_FORMATS)} "
                             "(none: map.save_formats)")
        formats = formats or settings.output.save_formats
        output_dir = settings.node_output_dir(directory)
        output_dir.mkdir(parents=True, exist_ok=True)
        map_frame, status = self._tf_links.map_frame, self._tf_links.status
        files = list(self.mapper.save(output_dir, map_frame=map_frame, formats=tuple(f for f in formats if f in MAP_FORMATS)).values())
        if "json" in formats:
            metres = self.mapper.metric or (status.scale_source == "odometry" and status.scale_pairs > 0)
            files.append(write_keyframes_json(output_dir, self.mapper.trajectory(), settings.frames, metres, files=(), map_frame=map_frame))
        exports = [name for name in IMAGE_EXPORTS if name in formats]
        if exports:
            if not len(self.keyframe_images):
                raise ValueError(f"{' and '.join(exports)} need the keyframe images, which the node keeps only while "
                                 "map.save_formats names colmap or nerfstudio: add it there (from then on, keyframes are kept)")
            written = write_map_exports(output_dir, exports, self.mapper.trajectory(), self.mapper.map_cloud(),
                                        self.keyframe_images.image_of, map_frame)
            files.extend(path for name in exports for path in written[name])
        self.get_logger().info(f"wrote {', '.join(map(str, files))} ({self.mapper.stats.map_points} points)")
        return files

    def shutdown(self) -> None:
        """End of the run: stop taking windows (the one in flight is finished), save the map when
        map.save_on_shutdown is set and anything was mapped, stop the model builder."""
        self.close()
        if self._settings.output.save_on_shutdown and self.mapper.stats.windows_done:
            try:
                self.save_map()
            except OSError as error:
                self.get_logger().error(f"cannot save the map on shutdown to {str(self._settings.node_output_dir())!r}: {error}")

    # ---- diagnostics -------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        stats = self.mapper.stats
        with self._counts_lock:
            received, rejected = sum(self._received.values()), self._rejected["image"]
            info_rejected, last_rejection = self._rejected["camera_info"], self._last_rejection
        since, last_received, last_rejected, last_failed, last_jumps = self._last_diagnostics
        self._last_diagnostics = (now, received, rejected + info_rejected, stats.windows_failed, stats.time_jumps)
        memory_key, memory_mb = device_memory_mb(self._backend.model.device)
        problems = []
        if received == last_received:
            problems.append("no images received")
        if rejected + info_rejected > last_rejected:
            problems.append(f"{rejected + info_rejected - last_rejected} messages rejected ({last_rejection})")
        if stats.windows_failed > last_failed:
            problems.append(f"window failed: {stats.last_error}")
        if stats.time_jumps > last_jumps:
            problems.append(f"time jumped back ({stats.last_time_jump}): a new segment started")
        if self._views_without_intrinsics > self._last_without_intrinsics:
            problems.append(f"{self._views_without_intrinsics - self._last_without_intrinsics} depth images not published: "
                            "the model's intrinsics were not finite and positive")
        self._last_without_intrinsics = self._views_without_intrinsics
        if self.model_status.startswith("rebuild failed"):
            problems.append(self.model_status)
        tf = self._tf_links.status
        if tf.problem:
            problems.append(tf.problem)
        if stats.windows_done and tf.scale_source == "none":
            problems.append("no scale: the map is in the model's units, not metres (scale_source)")
        elif stats.windows_done and tf.scale_source == "odometry" and not tf.scale_pairs:
            problems.append(f"no scale yet: no two keyframes {self._settings.frames.scale_min_baseline_m} m apart in odometry")
        values = {
            "input_rate_hz": (received - last_received) / max(now - since, 1e-9),
            "frames_received": received,
            "frames_rejected": rejected,
            "camera_info_rejected": info_rejected,
            "last_rejection": last_rejection,
            "frames_out_of_order": stats.frames_out_of_order,
            "time_jumps": stats.time_jumps,
            "last_time_jump": stats.last_time_jump,
            "keyframes": stats.keyframes,
            "keyframes_dropped": stats.keyframes_dropped,
            "pending_keyframes": stats.pending,
            "windows_done": stats.windows_done,
            "windows_failed": stats.windows_failed,
            "views_rejected": stats.views_rejected,
            "window_latency_s": stats.latency_s,
            "reconstruct_s": stats.reconstruct_s,
            "chain_s": stats.chain_s,
            "publish_s": self._publish_s,
            "map_points": stats.map_points,
            "device": str(self._backend.model.device),
            "model": self.model_status,
            memory_key: memory_mb,
            "last_error": stats.last_error,
            "tf_mode": tf.mode,
            "scale_source": tf.scale_source,
            "scale": tf.scale,
            "scale_spread": tf.scale_spread,
            "scale_pairs": tf.scale_pairs,
            "keyframes_without_tf": tf.keyframes_without_tf,
            "depth_views_without_intrinsics": self._views_without_intrinsics,
            "rig_frames_unmatched": self._rig.unmatched if self._rig is not None else 0,
        }
        self.diagnostics_pub.publish(diagnostic_array(
            f"{self.get_name()}: mapping", self._settings.model_type.value, "warn" if problems else "ok",
            "; ".join(problems) or "mapping", values, self.get_clock().now().nanoseconds,
        ))

    # ---- parameters --------------------------------------------------------------------
    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Check a change as a whole with the declaration (as the offline tool does); apply it
        only if everything is valid.  Mapping settings and per-call model options apply from
        the next frame or window; a change that needs a new model (checkpoint, device, ...)
        is built in the background while the current model keeps mapping (map kept)."""
        values = parameter_values(self)
        values.update((p.name, p.value) for p in parameters if not is_ros_parameter(p.name))
        try:
            settings = settings_from_parameters(values)
            signature = settings.model_signature()
            rebuild = signature != self._backend.settings.model_signature()
            if rebuild:
                check_checkpoint_reference(settings.model_options.checkpoint, settings.model_class.checkpoint_filenames)
            else:
                backend = build_backend(settings, self._backend)  # per-call options or optimizer: cheap
        except Exception as error:  # noqa: BLE001 - any invalid change is refused, never the node
            return self._reject_parameters(f"{type(error).__name__}: {error}")
        if not rebuild:
            self._rebuilder.cancel()
            self._use_backend(backend)
        elif self._rebuilder.target != signature:  # per-call options follow when the build is done
            self._model_status = "ready"
            self._rebuilder.request(settings)
            self.get_logger().info("building the model with the new parameters; the current one maps until it is ready")
        self.mapper.update_config(settings.mapper)  # keyframe, chaining and map filters; the map is kept
        self._settings = settings
        return SetParametersResult(successful=True)

    def _use_backend(self, backend: Backend) -> None:
        """Map with `backend` from the next window.  A model in other units (metres against the
        model's own scale, e.g. a DA3 checkpoint changed to NESTED) cannot extend the map: the
        map so far is saved (map.output_dir) and a new one starts."""
        units_change = bool(getattr(backend.model, "is_metric", False)) != bool(getattr(self._backend.model, "is_metric", False))
        if units_change and self.mapper.trajectory():
            with self._publish_lock:
                try:
                    folder = self._settings.node_output_dir() / f"before_units_change_{self.get_clock().now().nanoseconds}"
                    saved = f"saved in {folder}: {', '.join(path.name for path in self.save_map(str(folder)))}"
                except OSError as error:
                    saved = f"could not save it ({error})"
                self.mapper.reset()
                self._publish_empty_map()
            self.get_logger().warning(
                f"the new model maps in {'metres' if getattr(backend.model, 'is_metric', False) else 'its own units'}, the map so far "
                f"in other units: a new map starts; the previous one: {saved}"
            )
        self.mapper.set_reconstructor(backend.model, **backend.reconstruct_kwargs)
        self._backend = backend

    def _on_backend_ready(self, backend: Backend) -> None:
        """From the builder thread: swap the new model in, with the latest per-call options."""
        current = self._settings
        if backend.settings.model_signature() != current.model_signature():
            return  # the parameters changed back meanwhile
        self._use_backend(build_backend(current, backend))
        self._model_status = "ready"
        self.get_logger().info(f"model rebuilt ({backend.model.device}); used from the next window, map kept")

    def _on_backend_failed(self, settings: MappingSettings, error: Exception) -> None:
        """From the builder thread: keep the current model and put its parameters back."""
        if settings.model_signature() != self._settings.model_signature():
            return  # the parameters changed again meanwhile
        self._model_status = f"rebuild failed: {type(error).__name__}: {error}"
        active = self._backend.settings
        revert = {
            name: _parameter_value(active, name) for name, value in parameter_values(self).items()
            if (name in ("model_type", "device") or name.startswith("model.")) and value != _parameter_value(active, name)
        }
        self.get_logger().error(
            f"cannot build the model with the new parameters, keeping the current one: {type(error).__name__}: {error}; "
            f"reverting {', '.join(revert) or 'nothing'}"
        )
        if revert:
            self.set_parameters([Parameter(name, value=value) for name, value in revert.items()])

    def _reject_parameters(self, reason: str) -> SetParametersResult:
        self.get_logger().warning(f"parameter change rejected, keeping the current settings: {reason}")
        return SetParametersResult(successful=False, reason=reason)


class SceneFromViewsNode(MappingNodeBody, Node):
    """Sliding-window mapping node; see the module docstring for its interface."""

    def __init__(self, node_name: str = DEFAULT_NODE_NAME, **node_kwargs: Any) -> None:
        Node.__init__(self, node_name, allow_undeclared_parameters=True, **node_kwargs)
        self._settings = declare_node_parameters(self)
        self._configure()


class SceneFromViewsLifecycleNode(MappingNodeBody, LifecycleNode):
    """The mapping node as a managed node (REP-2012 style lifecycle): parameters declared at
    construction; configure builds the model and the interface from their current values (a
    bad one fails the transition, naming the problem); images are mapped only while active;
    cleanup undoes configure; shutdown finishes the window in flight and saves the map, as the
    plain node does when it ends."""

    _active = False

    def __init__(self, node_name: str = DEFAULT_NODE_NAME, **node_kwargs: Any) -> None:
        LifecycleNode.__init__(self, node_name, allow_undeclared_parameters=True, **node_kwargs)
        self._settings = declare_node_parameters(self)
        self._configured = False

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._settings = settings_from_parameters(parameter_values(self))
            self._configure()
        except (SceneFromViewsError, ValueError, TypeError, OSError, RuntimeError) as error:
            self.get_logger().error(f"cannot configure: {type(error).__name__}: {error}")
            return TransitionCallbackReturn.FAILURE
        self._configured = True
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = True
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unconfigure()
        self._configured = False
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        """Also release the lifecycle state machine, which holds the node's handle (rclpy leaves
        it, so the node, and its /rosout publisher, would outlive destroy_node: a later node of
        the same name then logs into the dead one)."""
        super().destroy_node()
        self._state_machine.destroy_when_not_in_use()

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        if self._configured:
            self.shutdown()
            self._unconfigure()
            self._configured = False
        return TransitionCallbackReturn.SUCCESS


def _parameter_value(settings: MappingSettings, name: str) -> Any:
    """The value that parameter `name` (model_type, device or model.*) has in `settings`."""
    if name in ("model_type", "device"):
        return getattr(settings.run, name)
    return settings.model_options.parameters().get(name)


def _check_parameter_files(argv: list[str]) -> None:
    """Refuse a --params-file that is missing or not YAML with our one-line error, before rcl
    parses it (rcl's own error is a paragraph of parser locations)."""
    for index, argument in enumerate(argv[:-1]):
        if argument == "--params-file":
            read_yaml_file(argv[index + 1])


def main(args: list[str] | None = None, node_class: type[MappingNodeBody] | None = None) -> int:
    """Entry point of `scene_from_views_node` (`node_class`: the lifecycle node for
    `scene_from_views_lifecycle_node`); returns the process exit status (1: could not start).

    SIGINT, SIGTERM and SIGHUP end the node alike (our handlers, not rclpy's, so that the
    context is still valid while the map is saved): the window in flight is finished and the
    map saved (map.save_on_shutdown) before it exits, without a traceback.  The executor
    wakes at least every `_SIGNAL_POLL_S` to let a signal through.
    """
    logger = rclpy.logging.get_logger(DEFAULT_NODE_NAME)
    argv = list(sys.argv if args is None else args)
    node = None
    with signals_interrupt():
        try:
            try:
                _check_parameter_files(argv)
                rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
                node = (node_class or SceneFromViewsNode)()
            except (SceneFromViewsError, ParameterException, ValueError, TypeError, OSError, RuntimeError) as error:
                logger.fatal(f"cannot start: {str(error).split(', at /')[0]}")
                return 1
            executor = MultiThreadedExecutor(num_threads=3)
            executor.add_node(node)
            while True:
                executor.spin_once(timeout_sec=_SIGNAL_POLL_S)
        except (KeyboardInterrupt, ExternalShutdownException):
            if node is None:
                logger.info("interrupted while starting")
        finally:
            try:
                if node is not None:
                    if getattr(node, "_configured", True):
                        node.shutdown()
                    node.destroy_node()
            except KeyboardInterrupt:  # a second signal while saving: the files are written atomically
                logger.warning("interrupted while saving the map; files already there are complete")
            rclpy.try_shutdown()
    return 0


def lifecycle_main(args: list[str] | None = None) -> int:
    """Entry point of `scene_from_views_lifecycle_node`: the managed node (configure, activate
    with `ros2 lifecycle set`); it saves the map when it ends, as the plain node does."""
    return main(args, SceneFromViewsLifecycleNode)


if __name__ == "__main__":
    sys.exit(main())
