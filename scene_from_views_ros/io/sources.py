"""Frame sources for offline mapping: image folders or lists, videos, and the synthetic sample.

Every source yields `Frame`s (RGB uint8, stamp in ns, camera id, optional intrinsics) lazily,
one decoded image at a time, after the same `Selection` (every n-th frame, a time range
relative to the first frame, a frame cap).  Only selected frames are decoded.  ROS 2 bags are
read by `bag_reader.BagSource`; `open_source` picks the right source for a path.
"""
from __future__ import annotations

import abc
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from ..core.errors import InvalidImageError, SceneFromViewsError
from ..mapping.keyframes import Frame
from .messages import is_truncated_jpeg

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
BAG_SUFFIXES = (".mcap", ".db3")
Candidate = tuple[int, Callable[[], Frame]]


class InputError(SceneFromViewsError, ValueError):
    """An input cannot be used: missing or unreadable file, undecodable video, unsuitable bag or topic."""


@dataclass
class Selection:
    """Which frames to use: every `step`-th frame whose time since the first frame is in
    [`start_s`, `end_s`] (None = to the end), at most `max_frames` (None = all)."""

    step: int = 1
    start_s: float = 0.0
    end_s: float | None = None
    max_frames: int | None = None

    def __post_init__(self) -> None:
        if self.step < 1:
            raise InputError(f"frame step must be >= 1, got {self.step}")
        if not math.isfinite(self.start_s) or (self.end_s is not None and not math.isfinite(self.end_s)):
            raise InputError(f"--start and --end must be finite numbers of seconds, got start={self.start_s} end={self.end_s}")
        if self.start_s < 0 or (self.end_s is not None and self.end_s < self.start_s):
            raise InputError(f"time range must satisfy 0 <= start <= end, got start={self.start_s} end={self.end_s}")
        if self.max_frames is not None and self.max_frames < 1:
            raise InputError(f"max_frames must be >= 1, got {self.max_frames}")

    def expected(self, available: int | None) -> int | None:
        """How many of `available` frames will be selected, when knowable without reading."""
        if available is None or not (self.start_s == 0 and self.end_s is None):
            return None
        count = math.ceil(available / self.step)
        return count if self.max_frames is None else min(count, self.max_frames)


class FrameSource(abc.ABC):
    """Iterable of selected frames; `description` names the input for messages and summaries.

    A frame that cannot be used (undecodable, or refused by `skip` from outside, e.g. by the
    model) is skipped with its reason recorded in `skipped`, or, with `stop_on_bad_frame`,
    ends the iteration with InputError.  Inputs that are usable but suspect (a truncated
    JPEG, 12-bit data in 16-bit images, a video shorter than announced) add to `warnings`
    (message -> count); `on_warning` is told each message once.
    """

    description: str = ""

    def __init__(self, selection: Selection | None = None) -> None:
        self.selection = selection or Selection()
        self.stop_on_bad_frame = False
        self.skipped: list[str] = []
        self.warnings: Counter[str] = Counter()
        self.on_warning: Callable[[str], None] | None = None

    def warn(self, message: str) -> None:
        """Record a warning about the input (reported once, counted every time)."""
        self.warnings[message] += 1
        if self.warnings[message] == 1 and self.on_warning is not None:
            self.on_warning(message)

    def skip(self, reason: str) -> None:
        """A frame cannot be used: record it and go on, or stop (`stop_on_bad_frame`)."""
        if self.stop_on_bad_frame:
            raise InputError(f"{reason} (stopping: --on-bad-frame stop)")
        self.skipped.append(reason)
        self.warn(f"skipped a frame: {reason}" if len(self.skipped) <= 20 else "skipped more frames (see summary.json)")

    @abc.abstractmethod
    def _candidates(self) -> Iterator[Candidate]:
        """(stamp_ns, load) for every frame in order; `load` is called, if at all, before the
        next candidate is requested."""

    def available(self) -> int | None:
        """Number of frames before selection, if known cheaply."""
        return None

    def expected(self) -> int | None:
        """Number of frames iteration will yield, if known (for progress bars)."""
        return self.selection.expected(self.available())

    def __iter__(self) -> Iterator[Frame]:
        """The selected frames.  Time since the first frame adds up the forward steps of the
        stamps, so a clock reset (stamps that jump back) does not throw the rest away."""
        selection = self.selection
        # Range bounds in ns with 1 ns of slack, as stamps are rounded to whole nanoseconds.
        start_ns = round(selection.start_s * 1e9) - 1
        end_ns = None if selection.end_s is None else round(selection.end_s * 1e9) + 1
        previous: int | None = None
        elapsed_ns = seen = in_range = kept = 0
        for stamp_ns, load in self._candidates():
            if previous is not None:
                elapsed_ns += max(stamp_ns - previous, 0)
            previous, seen = stamp_ns, seen + 1
            if end_ns is not None and elapsed_ns > end_ns:
                return
            if elapsed_ns < start_ns:
                continue
            in_range += 1
            if (in_range - 1) % selection.step:
                continue
            try:
                frame = load()
            except (InputError, InvalidImageError) as error:
                self.skip(str(error))
                continue
            yield frame
            kept += 1
            if selection.max_frames is not None and kept >= selection.max_frames:
                return
        if seen and not in_range:
            raise InputError(
                f"no frame in the selected time range: {self.description} spans {elapsed_ns / 1e9:.3f} s, "
                f"--start is {selection.start_s:g} s"
            )


def _natural_key(path: Path) -> list[object]:
    """Sort key putting frame_2 before frame_10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def check_readable(path: Path) -> None:
    """Raise InputError if `path` is missing or cannot be opened for reading."""
    if not path.exists():
        raise InputError(f"input {path} does not exist")
    if path.is_file():
        try:
            with open(path, "rb") as stream:
                stream.read(1)
        except OSError as error:
            raise InputError(f"cannot read {path}: {error.strerror or error}") from error


SIXTEEN_BIT_WARNING = (
    "16-bit images are scaled to 8 bits by each image's own maximum, as the node does for mono16 "
    "(so 10/12-bit data stays visible)"
)


def read_image_rgb(path: Path, warn: Callable[[str], None] | None = None) -> np.ndarray:
    """An image file as RGB uint8 (grey converted; 16-bit scaled by its maximum), or InputError.

    `warn` hears about 16-bit data (scaled, see SIXTEEN_BIT_WARNING).  A JPEG without its
    end-of-image marker is refused as truncated (some decoders would fill the missing rows
    with grey and say nothing).
    """
    if path.name.startswith("._"):
        raise InputError(f"{path} is an AppleDouble file (macOS metadata), not an image")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"cannot read image {path}: {error.strerror or error}") from error
    if not data:
        raise InputError(f"image {path} is empty (0 bytes)")
    if path.suffix.lower() in (".jpg", ".jpeg") and is_truncated_jpeg(data):
        raise InputError(f"image {path} is a truncated JPEG (no end-of-image marker)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"cannot read image {path}: not an image file, corrupt, or an unsupported format")
    if image.dtype != np.uint8:
        if warn is not None:
            warn(SIXTEEN_BIT_WARNING)
        image = np.round(image.astype(np.float32) * (255.0 / max(float(image.max()), 1.0))).astype(np.uint8)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class ImageFilesSource(FrameSource):
    """Images in the given order, stamped `1/fps` seconds apart (image files carry no time)."""

    def __init__(self, paths: Sequence[Path], fps: float = 10.0, selection: Selection | None = None, description: str = "") -> None:
        super().__init__(selection)
        if not (math.isfinite(fps) and fps > 0):
            raise InputError(f"--fps must be a positive number, got {fps}")
        if not paths:
            raise InputError("no images given")
        self.paths = list(paths)
        self.fps = fps
        self.description = description or f"{len(self.paths)} image files"

    @classmethod
    def from_folder(cls, folder: Path, fps: float = 10.0, selection: Selection | None = None) -> ImageFilesSource:
        """The folder's image files sorted by name (numbers in names compared as numbers)."""
        paths = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
        if not paths:
            raise InputError(f"folder {folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        return cls(paths, fps, selection, f"image folder {folder} ({len(paths)} images)")

    def available(self) -> int:
        return len(self.paths)

    def _load(self, index: int, stamp_ns: int) -> Frame:
        return Frame(read_image_rgb(self.paths[index], self.warn), stamp_ns, "camera")

    def _candidates(self) -> Iterator[Candidate]:
        for index in range(len(self.paths)):
            stamp_ns = round(index * 1e9 / self.fps)
            yield stamp_ns, partial(self._load, index, stamp_ns)


class VideoSource(FrameSource):
    """A video file decoded with OpenCV (FFmpeg); stamps are frame index / the video's fps.

    Skipped frames are only grabbed, not converted, so a large `step` is cheap.
    """

    def __init__(self, path: Path, selection: Selection | None = None) -> None:
        super().__init__(selection)
        self.path = path
        capture = self._open()
        try:
            fps = capture.get(cv2.CAP_PROP_FPS)
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            ok, first = capture.read()
        finally:
            capture.release()
        if not ok or first is None:
            raise InputError(f"cannot decode video {path}: OpenCV opened it but could not decode a frame (corrupt file or unsupported codec)")
        if not (fps and math.isfinite(fps) and fps > 0):
            raise InputError(f"video {path} reports no frame rate, so frames cannot be stamped; convert it (e.g. ffmpeg -i in -r 30 out.mp4)")
        self.fps = float(fps)
        self.frame_count = count if count > 0 else None
        self.description = f"video {path} ({first.shape[1]}x{first.shape[0]}, {self.fps:.3g} fps, {count} frames)"

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            capture.release()
            raise InputError(f"cannot decode video {self.path}: not a video file or a format OpenCV cannot open")
        return capture

    def available(self) -> int | None:
        return self.frame_count

    def expected(self) -> int | None:
        if self.frame_count is None:
            return None
        first = math.ceil(self.selection.start_s * self.fps - 1e-9)
        last = self.frame_count if self.selection.end_s is None else min(self.frame_count, math.floor(self.selection.end_s * self.fps + 1e-9) + 1)
        count = max(0, math.ceil((last - first) / self.selection.step))
        return count if self.selection.max_frames is None else min(count, self.selection.max_frames)

    @staticmethod
    def _retrieve(capture: cv2.VideoCapture, stamp_ns: int, path: Path) -> Frame:
        ok, bgr = capture.retrieve()
        if not ok or bgr is None:
            raise InputError(f"cannot decode a frame of video {path} at {stamp_ns / 1e9:.3f} s (corrupt stream)")
        return Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), stamp_ns, "camera")

    def _candidates(self) -> Iterator[Candidate]:
        capture = self._open()
        try:
            index = 0
            while capture.grab():
                stamp_ns = round(index * 1e9 / self.fps)
                yield stamp_ns, partial(self._retrieve, capture, stamp_ns, self.path)
                index += 1
        finally:
            capture.release()
        if self.frame_count is not None and index < self.frame_count:
            self.warn(
                f"video {self.path} announces {self.frame_count} frames but only {index} could be read: "
                "it is truncated or corrupt"
            )


class SyntheticSource(FrameSource):
    """The built-in procedural sample sequence (frames rendered on demand, intrinsics attached)."""

    def __init__(self, sequence: object, selection: Selection | None = None) -> None:
        super().__init__(selection)
        self.sequence = sequence
        self.description = (
            f"built-in sample sequence ({len(sequence)} frames, {sequence.width}x{sequence.height}, procedurally rendered)"
        )

    def available(self) -> int:
        return len(self.sequence)

    def _candidates(self) -> Iterator[Candidate]:
        for index in range(len(self.sequence)):
            yield int(self.sequence.stamps_ns[index]), partial(self.sequence.frame, index)


def is_bag_path(path: Path) -> bool:
    """A rosbag2 directory (metadata.yaml or storage files inside) or a bare .mcap/.db3 file."""
    if path.is_dir():
        return (path / "metadata.yaml").is_file() or any(p.suffix in BAG_SUFFIXES for p in path.iterdir())
    return path.suffix.lower() in BAG_SUFFIXES


def open_source(
    inputs: Sequence[str | os.PathLike[str]],
    *,
    selection: Selection | None = None,
    fps: float = 10.0,
    topic: str | None = None,
    camera_info_topic: str | None = None,
) -> FrameSource:
    """The source for `inputs`: one folder of images, one video, one bag, or image files.

    Problems that can be found without reading everything (missing or unreadable files, an
    undecodable video, a bag without the requested images) raise InputError here.
    """
    paths = [Path(p).expanduser() for p in inputs]
    if not paths:
        raise InputError("no input given: pass an image folder, a video, a ROS 2 bag or image files (or --sample)")
    for path in paths:
        check_readable(path)
    if len(paths) > 1:
        others = [str(p) for p in paths if not (p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)]
        if others:
            raise InputError(f"several inputs must all be image files ({', '.join(IMAGE_SUFFIXES)}); not images: {', '.join(others)}")
        return ImageFilesSource(paths, fps, selection)
    path = paths[0]
    if is_bag_path(path):
        from .bag_reader import BagSource

        return BagSource(path, topic=topic, camera_info_topic=camera_info_topic, selection=selection)
    if topic or camera_info_topic:
        raise InputError(f"--topic / --camera-info-topic apply to ROS 2 bags, but {path} is not one (a rosbag2 folder, .mcap or .db3)")
    if path.is_dir():
        return ImageFilesSource.from_folder(path, fps, selection)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFilesSource([path], fps, selection)
    if path.suffix.lower() == ".bag":
        raise InputError(f"{path} is a ROS 1 bag; convert it to ROS 2 first (rosbags-convert --src {path} --dst out_bag)")
    return VideoSource(path, selection)
