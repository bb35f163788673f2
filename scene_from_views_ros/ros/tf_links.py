"""How the node's map joins the robot's TF tree (REP-105) and gets its metres: per placed
window, the published map frame (`MapFrame`) and the window's transforms.

- map_to_odom: the camera's pose in odom comes from TF at each keyframe's stamp; the node
  publishes only map -> odom (map pose of the camera composed with the inverse of its odom
  pose), so every frame keeps one parent.  The map is `base_frame` at the map's first keyframe.
- standalone: map -> the keyframe's camera frame, at each new keyframe; the map is the first
  camera's position with ROS axes (x forward, z up).
- none: no TF; poses on topics only.  The map is laid out as in standalone.
With `publish.keyframe_frames` each new keyframe also gets a frame of its own, once.

Scale (`scale_source`): a metric model's units; or metres per map unit from odometry
(`OdometryScale`, refreshed each window, so published outputs follow the estimate); or none.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from geometry_msgs.msg import TransformStamped

from ..core.errors import InvalidOptionError
from ..mapping.chaining import WindowInMap
from ..mapping.keyframes import Keyframe
from ..mapping.map_frame import OPTICAL_TO_ROS, MapFrame, OdometryScale
from ..mapping.settings import FrameNames, MappingSettings
from .conversions import poses_to_transforms
from .tf_buffer import TransformBuffer, TransformUnavailable

LOG_THROTTLE_S = 5.0  # a camera missing from TF is said at most this often
TF_WAIT_S = 0.5  # how long a keyframe waits for its TF (published on its own topic, maybe after the image)


def check_scale_source(frames: FrameNames, model: Any) -> None:
    """scale_source model needs a metric model: refused at start-up, not at the first window."""
    if frames.scale_source == "model" and not getattr(model, "is_metric", False):
        raise InvalidOptionError(
            f"scale_source=model needs a metric model (MASt3R, Depth Anything 3 NESTED/METRIC); this "
            f"{type(model).__name__} gives map units: set scale_source to odometry (with odom in TF) or none"
        )


def camera_frame_of(keyframe: Keyframe, names: FrameNames) -> str:
    """A keyframe's optical TF frame: its image's header frame_id, else `camera_frame`."""
    return keyframe.frame.frame_id or names.camera_frame


@dataclass
class BodyPose:
    """The robot's pose in the map at a keyframe (for nav_msgs/Odometry)."""

    stamp_ns: int
    child_frame: str
    pose: np.ndarray


@dataclass
class TfStatus:
    """What /diagnostics reports about TF and scale."""

    mode: str = "waiting for the first window"
    scale_source: str = "none"
    scale: float = 1.0
    scale_spread: float = float("nan")
    scale_pairs: int = 0
    keyframes_without_tf: int = 0  # new keyframes whose camera was not in TF (left out of TF and odometry)
    problem: str = ""


class TfLinks:
    """The map frame and TF of each placed window (called on the mapper's thread)."""

    def __init__(self, node: Any) -> None:
        self._node = node
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        """A new map: align afresh at its first keyframe."""
        with self._lock:
            self.map_frame = MapFrame()
            self.status = TfStatus()
            self.latest_map_to_odom: np.ndarray | None = None
            self._origin: Keyframe | None = None
            self._mode: str | None = None
            settings = self._node.settings
            self._odometry = OdometryScale(settings.frames.scale_min_baseline_m)

    @property
    def buffer(self) -> TransformBuffer:
        return self._node.tf_buffer

    def _odom_pose(self, keyframe: Keyframe, names: FrameNames) -> np.ndarray:
        return self.buffer.wait_for(names.odom_frame, camera_frame_of(keyframe, names), keyframe.stamp_ns, TF_WAIT_S)

    def _resolve(self, names: FrameNames) -> None:
        """The map's layout, from its first keyframe (`_origin`, the identity of the internal map)."""
        assert self._origin is not None
        wanted = names.tf_mode
        if wanted in ("auto", "map_to_odom"):
            try:
                odom_camera = self._odom_pose(self._origin, names)
                odom_base = self.buffer.wait_for(names.odom_frame, names.base_frame, self._origin.stamp_ns, TF_WAIT_S)
            except TransformUnavailable as error:
                if wanted == "map_to_odom":
                    self.status.problem = f"tf_mode map_to_odom waits for TF: {error}"
                    self._node.get_logger().warning(self.status.problem, throttle_duration_sec=LOG_THROTTLE_S)
                    return
                self._mode, self.map_frame.alignment = "standalone", OPTICAL_TO_ROS.copy()
                self.status.problem = ""
                self._node.get_logger().info(f"tf_mode auto: standalone ({names.odom_frame} -> camera not in TF: {error})")
                return
            self._mode, self.map_frame.alignment = "map_to_odom", np.linalg.inv(odom_base) @ odom_camera
            self.status.problem = ""
            self._node.get_logger().info(f"tf_mode {wanted}: publishing {names.map_frame} -> {names.odom_frame}")
        else:
            self._mode, self.map_frame.alignment = wanted, OPTICAL_TO_ROS.copy()

    def _scale_source(self, names: FrameNames, metric: bool) -> str:
        if names.scale_source != "auto":
            return names.scale_source
        return "model" if metric else "odometry" if self._mode == "map_to_odom" else "none"

    def place(self, window: WindowInMap, settings: MappingSettings, metric: bool) -> tuple[list[TransformStamped], list[BodyPose]]:
        """Update the map frame with `window`; return its transforms and the robot's pose in
        the map at each new keyframe (base_frame with odometry, else the camera)."""
        names = settings.frames
        with self._lock:
            self.status.problem = ""  # what this window finds
            if self._origin is None:
                self._origin = window.keyframes[0]  # the first window's first view: the internal map's origin
            if self._mode is None:
                self._resolve(names)
            new = [(window.keyframes[v], window.poses[v]) for v in window.new_views]
            self._odometry.min_baseline_m = names.scale_min_baseline_m
            odom_poses: dict[int, np.ndarray] = {}
            if self._mode == "map_to_odom" or names.scale_source == "odometry":
                for keyframe, pose in new:
                    try:
                        odom_poses[keyframe.keyframe_id] = self._odom_pose(keyframe, names)
                    except TransformUnavailable as error:
                        self.status.keyframes_without_tf += 1
                        self.status.problem = f"keyframe {keyframe.keyframe_id} left out of TF: {error}"
                        self._node.get_logger().warning(f"{self.status.problem} (mapped, without TF or odometry)",
                                                        throttle_duration_sec=LOG_THROTTLE_S)
                        continue
                    self._odometry.add(keyframe.keyframe_id, pose[:3, 3], odom_poses[keyframe.keyframe_id][:3, 3])
            self._update_scale(names, metric)
            return self._transforms(new, odom_poses, names, settings.publish.keyframe_frames), self._bodies(new, odom_poses, names)

    def _bodies(self, new: list[tuple[Keyframe, np.ndarray]], odom_poses: dict[int, np.ndarray], names: FrameNames) -> list[BodyPose]:
        if not new:
            return []
        published = self.map_frame.poses(np.stack([pose for _, pose in new]))
        bodies = []
        for (keyframe, _), camera in zip(new, published, strict=True):
            if self._mode == "map_to_odom":
                if keyframe.keyframe_id not in odom_poses:
                    continue
                try:  # the base in the map: the camera's map pose through the robot's camera mount
                    base_camera = self.buffer.lookup(names.base_frame, camera_frame_of(keyframe, names), keyframe.stamp_ns)
                except TransformUnavailable:
                    continue
                bodies.append(BodyPose(keyframe.stamp_ns, names.base_frame, camera @ np.linalg.inv(base_camera)))
            elif self._mode is not None:
                bodies.append(BodyPose(keyframe.stamp_ns, camera_frame_of(keyframe, names), camera))
        return bodies

    def _update_scale(self, names: FrameNames, metric: bool) -> None:
        source = self._scale_source(names, metric)
        self.status.scale_source, self.status.mode = source, self._mode or "waiting for TF"
        if source == "odometry":
            estimate = self._odometry.estimate()
            if estimate is not None:
                self.map_frame.scale, self.status.scale_spread, self.status.scale_pairs = estimate
        else:
            self.map_frame.scale = 1.0
        self.status.scale = self.map_frame.scale

    def _transforms(self, new: list[tuple[Keyframe, np.ndarray]], odom_poses: dict[int, np.ndarray], names: FrameNames,
                    keyframe_frames: bool) -> list[TransformStamped]:
        if self._mode in (None, "none") or not new:
            return []
        published = self.map_frame.poses(np.stack([pose for _, pose in new]))
        children, poses, stamps = [], [], []
        for (keyframe, _), pose in zip(new, published, strict=True):
            if self._mode == "map_to_odom":
                if keyframe.keyframe_id not in odom_poses:
                    continue
                self.latest_map_to_odom = pose @ np.linalg.inv(odom_poses[keyframe.keyframe_id])
                children.append(names.odom_frame)
                poses.append(self.latest_map_to_odom)
            else:
                children.append(camera_frame_of(keyframe, names))
                poses.append(pose)
            stamps.append(keyframe.stamp_ns)
        if keyframe_frames:
            for (keyframe, _), pose in zip(new, published, strict=True):
                children.append(names.keyframe_frame(keyframe.keyframe_id))
                poses.append(pose)
                stamps.append(keyframe.stamp_ns)
        return poses_to_transforms(poses, names.map_frame, children, stamps) if poses else []
