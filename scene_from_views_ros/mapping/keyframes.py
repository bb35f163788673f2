"""Frames in, keyframes out: drop frames that would add nothing to the map.

A frame becomes a keyframe when (per camera) at least `min_interval_s` passed since that
camera's last keyframe, its downscaled grey image differs enough from that keyframe's, and
(over all cameras) the keyframe rate stays under `max_rate_hz`.  The test costs one
`cv2.resize` of the frame to a thumbnail, so it can run inside an image callback.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import ClassVar

import cv2
import numpy as np

from ..core.options import Options, option


@dataclass
class Frame:
    """One camera image as it arrives: RGB uint8 HxWx3, stamp in nanoseconds, source camera,
    optionally the camera's 3x3 intrinsics in this image's pixels (e.g. from CameraInfo) and
    its optical TF frame (the image header's frame_id)."""

    image: np.ndarray
    stamp_ns: int
    camera_id: str = "camera"
    intrinsics: np.ndarray | None = None
    frame_id: str = ""

    def __post_init__(self) -> None:
        if not (isinstance(self.image, np.ndarray) and self.image.dtype == np.uint8 and self.image.ndim == 3 and self.image.shape[2] == 3):
            shape = getattr(self.image, "shape", None)
            dtype = getattr(self.image, "dtype", None)
            raise ValueError(f"Frame.image must be an HxWx3 uint8 RGB array, got shape {shape} dtype {dtype}; convert the image first")
        if self.intrinsics is not None:
            self.intrinsics = np.asarray(self.intrinsics, dtype=np.float64).reshape(3, 3)


_keyframe_ids = itertools.count()


@dataclass
class Keyframe:
    """A selected frame with an id unique in its run (the selector numbers them 0, 1, ... in
    arrival order; without one, unique in the process); the keyframes of one
    rig capture share `rig_group` (the id of its first), which windows never split."""

    frame: Frame
    keyframe_id: int = field(default_factory=lambda: next(_keyframe_ids))
    thumbnail: np.ndarray | None = field(default=None, repr=False)
    rig_group: int | None = None

    @property
    def image(self) -> np.ndarray:
        return self.frame.image

    @property
    def stamp_ns(self) -> int:
        return self.frame.stamp_ns

    @property
    def camera_id(self) -> str:
        return self.frame.camera_id


@dataclass(frozen=True)
class KeyframeConfig(Options):
    """Keyframe selection settings (parameters ``keyframe.*``)."""

    prefix: ClassVar[str] = "keyframe."
    min_interval_s: float = option(
        0.0, "Per camera, minimum time between two keyframes (frame stamps).", unit="s", low=0.0, high=3600.0,
    )
    min_change: float = option(
        0.05, "Minimum mean absolute difference (0-1) between the grey thumbnails of a frame and of its "
        "camera's last keyframe; 0 accepts every frame that passes the timing.", low=0.0, high=1.0,
    )
    max_rate_hz: float = option(
        0.0, "Cap on keyframes per second over all cameras (0 = no cap).", unit="Hz", low=0.0, high=1000.0,
    )
    thumbnail_width: int = option(
        32, "Width of the grey thumbnail the image change is measured on.", unit="pixels", low=4, high=1024,
    )
    time_jump_s: float = option(
        1.0, "A frame this much older (stamps) than its camera's last keyframe, or the ROS clock (use_sim_time) "
        "going back by more, starts a new segment (a clock reset, a bag played again): keyframing restarts there "
        "and the map continues (map.reset_on_time_jump starts a new one); a frame older by less is out of order and "
        "dropped. Both are counted in /diagnostics.",
        unit="s", low=0.0, high=86400.0,
    )


def grey_thumbnail(image: np.ndarray, width: int) -> np.ndarray:
    """Area-downscaled grey image in [0, 1] (float32), aspect ratio kept."""
    height = max(1, round(image.shape[0] * width / image.shape[1]))
    small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / 255.0


class KeyframeSelector:
    """Stateful keyframe test; `reset` forgets the history.  `out_of_order` counts the frames
    dropped for being (a little) older than their camera's last keyframe."""

    def __init__(self, config: KeyframeConfig | None = None) -> None:
        self.config = config or KeyframeConfig()
        self._last_by_camera: dict[str, Keyframe] = {}
        self._last_stamp_ns: int | None = None
        self.out_of_order = 0
        self._ids = itertools.count()  # keyframe ids of this selector's run: 0, 1, ... (outputs name files by them)

    def reset(self) -> None:
        self._last_by_camera = {}
        self._last_stamp_ns = None

    def time_jump_s(self, frame: Frame) -> float | None:
        """How far (seconds) `frame` jumped back in time from its camera's last keyframe, when
        that is more than `time_jump_s` (a new segment); None otherwise."""
        last = self._last_by_camera.get(frame.camera_id)
        if last is None or last.stamp_ns - frame.stamp_ns <= self.config.time_jump_s * 1e9:
            return None
        return (last.stamp_ns - frame.stamp_ns) / 1e9

    def start_segment(self, camera_id: str | None) -> None:
        """Forget the camera's (None: every camera's) timing and image history: its next frame
        starts afresh."""
        if camera_id is None:
            self._last_by_camera.clear()
        else:
            self._last_by_camera.pop(camera_id, None)
        self._last_stamp_ns = None

    def select(self, frame: Frame) -> Keyframe | None:
        """Return a Keyframe if `frame` should become one, else None."""
        config = self.config
        last = self._last_by_camera.get(frame.camera_id)
        if last is not None and frame.stamp_ns < last.stamp_ns:
            self.out_of_order += 1
            return None
        if last is not None and frame.stamp_ns - last.stamp_ns < config.min_interval_s * 1e9:
            return None
        if config.max_rate_hz > 0 and self._last_stamp_ns is not None and frame.stamp_ns - self._last_stamp_ns < 1e9 / config.max_rate_hz:
            return None
        thumbnail = grey_thumbnail(frame.image, config.thumbnail_width)
        previous = None if last is None else last.thumbnail
        if previous is not None and thumbnail.shape == previous.shape and float(np.mean(np.abs(thumbnail - previous))) < config.min_change:
            return None
        keyframe = Keyframe(frame=frame, keyframe_id=next(self._ids), thumbnail=thumbnail)
        self._last_by_camera[frame.camera_id] = keyframe
        self._last_stamp_ns = frame.stamp_ns
        return keyframe

    def select_group(self, frames: list[Frame]) -> list[Keyframe] | None:
        """A rig's synchronised frames (or one frame): all become keyframes together when the
        first (the rig's reference camera) passes the test, else none does."""
        first = self.select(frames[0])
        if first is None or len(frames) == 1:
            return None if first is None else [first]
        group = [first] + [Keyframe(frame=frame, keyframe_id=next(self._ids), thumbnail=grey_thumbnail(frame.image, self.config.thumbnail_width))
                           for frame in frames[1:]]
        for keyframe in group:
            keyframe.rig_group = first.keyframe_id
            self._last_by_camera[keyframe.camera_id] = keyframe
        return group
