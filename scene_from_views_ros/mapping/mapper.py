"""SlidingWindowMapper: frames in; keyframes, windows, chaining and the global map out.

Both the ROS node and the offline tool drive this one class:

    mapper = SlidingWindowMapper(model, MapperConfig(...), threaded=True, on_window=publish)
    mapper.add_frame(Frame(rgb, stamp_ns, "front"))   # cheap; never blocks on inference
    ...
    mapper.flush(); mapper.save("out/"); mapper.close()

With ``threaded=True`` windows are reconstructed on a worker thread and `on_window` /
`on_error` are called from that thread; with ``threaded=False`` (offline) `add_frame` runs a
window inline when one is due.  A window that fails (backend error, or chaining rejected it
as `WindowError`) is counted in `stats` and passed to `on_error`; without `on_error` the
synchronous mapper re-raises it, the threaded one only records it in `stats.last_error`.

The reconstruction backend is any object with ``reconstruct(images, rgb=True, **kw) ->
SceneFromViewsResult`` or any callable taking the window's keyframes (e.g. to pass their
camera intrinsics to a model that uses them); `set_reconstructor` swaps it between windows
(the map is kept).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import SceneFromViewsError
from ..core.result import PointCloud, SceneFromViewsResult
from ..geometry.sim3 import invert_sim3
from .chaining import ChainConfig, OverlapReference, WindowInMap, estimate_window_to_map, move_to_map, result_views
from .exports import save_map
from .global_map import GlobalMap, KeyframePose, MapConfig
from .keyframes import Frame, Keyframe, KeyframeConfig, KeyframeSelector
from .map_frame import MapFrame
from .windows import Window, WindowBuilder, WindowConfig

logger = logging.getLogger(__name__)
Reconstructor = Callable[[list[Keyframe]], SceneFromViewsResult]


def check_finite(result: SceneFromViewsResult, index: int) -> None:
    """Raise WindowError for a result that must not be placed: a non-finite camera pose (a
    broken checkpoint, diverged inputs) or not one finite point where the model kept pixels."""
    bad = [view for view, pose in enumerate(result.camera_poses) if not np.isfinite(pose).all()]
    if bad:
        raise WindowError(f"window {index}: the model returned non-finite camera poses for views {bad}; not placed")
    masks: list[np.ndarray | None] = list(result.masks) if result.masks is not None else [None] * result.num_views
    if not any(np.isfinite(points if mask is None else points[mask]).all(axis=-1).any()
               for points, mask in zip(result.point_clouds, masks, strict=True)):
        raise WindowError(f"window {index}: the model returned no finite point; not placed")


def kept_confidence(confidence: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The confidence with the pixels the model did not keep set to 0, so that chaining
    (which ignores zero weights) uses only what the model vouches for."""
    return confidence if mask is None else np.where(mask, confidence, np.float32(0))


def as_reconstructor(backend: Any, **kwargs: Any) -> Reconstructor:
    """Adapt a model (anything with ``reconstruct(images, rgb=True, **kw)``) to a Reconstructor.

    `kwargs` are passed to every `reconstruct` call; a plain callable is returned unchanged.
    The mapper uses the per-view outputs only, so the model skips fusing a global cloud.  A
    model that accepts known intrinsics gets the keyframes' (CameraInfo, the offline tool's
    --intrinsics) when every keyframe of the window has them.
    """
    if hasattr(backend, "reconstruct"):
        uses = getattr(backend, "uses_known_intrinsics", None)
        takes_intrinsics = bool(uses(kwargs.get("optimizer"))) if callable(uses) else False

        def reconstruct(keyframes: list[Keyframe]) -> SceneFromViewsResult:
            intrinsics = [keyframe.frame.intrinsics for keyframe in keyframes]
            known = {"known_intrinsics": intrinsics} if takes_intrinsics and all(k is not None for k in intrinsics) else {}
            return backend.reconstruct([keyframe.image for keyframe in keyframes], rgb=True, as_pointcloud=False, **known, **kwargs)

        return reconstruct
    if callable(backend):
        return backend
    raise TypeError(f"a mapping backend needs a reconstruct(images, rgb=True) method or must be callable, got {type(backend).__name__}")


@dataclass
class MapperConfig:
    """All mapping settings, grouped as the node's parameters are (keyframe.*, window.*, ...)."""

    keyframe: KeyframeConfig = field(default_factory=KeyframeConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    chain: ChainConfig = field(default_factory=ChainConfig)
    map: MapConfig = field(default_factory=MapConfig)


@dataclass
class MapperStats:
    """Counters for diagnostics.  Times are seconds of the last processed window."""

    frames: int = 0
    keyframes: int = 0
    keyframes_dropped: int = 0
    pending: int = 0
    windows_done: int = 0
    windows_failed: int = 0
    views_rejected: int = 0  # keyframes a model left out of its window (e.g. VGGT-Robust's outliers)
    frames_out_of_order: int = 0  # older than their camera's last keyframe by less than a time jump
    time_jumps: int = 0  # stamps that jumped back: each starts a new segment
    last_time_jump: str = ""
    map_points: int = 0
    reconstruct_s: float = 0.0
    chain_s: float = 0.0  # Sim(3) fit + moving the window's outputs into the map frame
    integrate_s: float = 0.0
    latency_s: float = 0.0
    last_error: str = ""


class WindowError(SceneFromViewsError, RuntimeError):
    """A reconstructed window could not be placed in the map (too little or inconsistent overlap)."""


class SlidingWindowMapper:
    """Keyframe selection, sliding windows, chaining and the global map in one object."""

    def __init__(
        self,
        backend: Any,
        config: MapperConfig | None = None,
        *,
        threaded: bool = False,
        on_window: Callable[[WindowInMap], None] | None = None,
        on_error: Callable[[Window, Exception], None] | None = None,
        reconstruct_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.config = config or MapperConfig()
        self._reconstructor = as_reconstructor(backend, **(reconstruct_kwargs or {}))
        self._check_image: Callable[[np.ndarray], None] | None = getattr(backend, "check_image", None)
        self._model_metric = bool(getattr(backend, "is_metric", False))
        self.on_window = on_window
        self.on_error = on_error
        self.on_new_map: Callable[[], None] | None = None  # called when a time jump started a new map
        self.selector = KeyframeSelector(self.config.keyframe)
        self.builder = WindowBuilder(self.config.window)
        self.map = GlobalMap(self.config.map)
        # _lock (short holds): selector, builder, counters, flags.  _state_lock: what placing a
        # window changes (references, latest window, map).  Order: _state_lock, then _lock.
        self._lock = threading.Condition()
        self._state_lock = threading.RLock()
        self._references: dict[int, OverlapReference] = {}
        self._placed = False
        self._latest: WindowInMap | None = None
        self._stats = MapperStats()
        self._epoch = 0
        self._busy = False
        self._flush_requested = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._work, name="sfv-mapper", daemon=True)
            self._thread.start()

    # ---- input -------------------------------------------------------------------------
    def add_frame(self, frame: Frame) -> bool:
        """Offer a frame; returns True if it became a keyframe.  In synchronous mode a due
        window is reconstructed before returning.  Raises InvalidImageError for a frame the
        model cannot take (e.g. too elongated to resize), before it reaches a window."""
        return self.add_frames([frame])

    def add_frames(self, frames: list[Frame]) -> bool:
        """Offer a camera rig's synchronised frames (`RigSynchronizer`), or one frame: they
        become keyframes together, as one multi-view keyframe that no window splits, or not at
        all.  A time jump back restarts keyframing for the frame's camera (a rig: every camera)."""
        if self._check_image is not None:
            for frame in frames:
                self._check_image(frame.image)
        with self._lock:
            self._stats.frames += len(frames)
            jump_s = self.selector.time_jump_s(frames[0])
        if jump_s is not None:
            self._start_segment(frames[0].camera_id if len(frames) == 1 else None, jump_s)
        with self._lock:
            group = self.selector.select_group(frames)
            self._stats.frames_out_of_order = self.selector.out_of_order
            if group is None:
                return False
            self._stats.keyframes += len(group)
            for keyframe in group:
                self.builder.push(keyframe)
            self._lock.notify_all()
        if self._thread is None:
            self._run_due(force=False)
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Reconstruct the keyframes still pending even if their window is not full, and wait
        until the mapper is idle.  Returns False if `timeout` (seconds) expired first."""
        if self._thread is None:
            self._run_due(force=True)
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._flush_requested = True
            self._lock.notify_all()
            while self._busy or self._flush_requested:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._lock.wait(remaining)
        return True

    def set_reconstructor(self, backend: Any, **reconstruct_kwargs: Any) -> None:
        """Use another model from the next window on (the map and trajectory are kept)."""
        reconstructor = as_reconstructor(backend, **reconstruct_kwargs)
        with self._lock:
            self._reconstructor = reconstructor
            self._check_image = getattr(backend, "check_image", None)
            self._model_metric = bool(getattr(backend, "is_metric", False))

    @property
    def metric(self) -> bool:
        """Whether the map is in metres: windows chained with SE(3) (`chain.metric`, forced on
        by a metric model, which a loaded checkpoint may make so)."""
        return self.config.chain.metric or self._model_metric

    def update_config(self, config: MapperConfig) -> None:
        """Apply new settings (the map is kept): keyframe, window and chain settings from the
        next frame or window on, map filters and max_points from the next window on;
        map.voxel_size only after the next `reset` (the existing map keeps its grid)."""
        with self._state_lock, self._lock:
            self.config = config
            self.selector.config = config.keyframe
            self.builder.configure(config.window)
            self.map.configure(config.map)

    def reset(self) -> None:
        """Forget keyframes, windows, map and trajectory; a window in flight is discarded."""
        with self._state_lock, self._lock:
            self._clear()
            self._stats = MapperStats()

    def _clear(self) -> None:
        """Drop everything mapped (callers hold both locks)."""
        self._epoch += 1
        self.selector.reset()
        self.builder.reset()
        self.map.clear()
        self._references.clear()
        self._placed = False
        self._latest = None

    def time_jumped_back(self, jump_s: float) -> None:
        """The clock jumped back (a looping bag under use_sim_time, a simulation reset):
        keyframing restarts for every camera, as for a jump seen in one camera's stamps."""
        self._start_segment(None, jump_s)

    def _start_segment(self, camera_id: str | None, jump_s: float) -> None:
        """Time jumped back: keyframing restarts for the camera (None: the clock, every camera);
        the map continues, or a new one starts (map.reset_on_time_jump).  Logged once per jump
        and counted."""
        with self._state_lock, self._lock:
            reset = self.config.map.reset_on_time_jump
            if reset:
                self._clear()
            else:
                self.selector.start_segment(camera_id)
                self.builder.restart_clock()
            self._stats.time_jumps += 1
            source = camera_id or "clock"
            self._stats.last_time_jump = f"{source}: {jump_s:.3f} s back"
            count = self._stats.time_jumps
        logger.warning(
            "%s: stamps jumped back by %.3f s (clock reset or replay): a new segment starts, %s (%d jumps so far)",
            source, jump_s, "with a new map" if reset else "the map continues", count,
        )
        if reset and self.on_new_map is not None:
            self.on_new_map()

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop the worker thread (the window in flight, if any, is finished first)."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> SlidingWindowMapper:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ---- outputs -----------------------------------------------------------------------
    @property
    def latest_window(self) -> WindowInMap | None:
        """The last window placed in the map frame (None before the first, or after reset)."""
        return self._latest

    def map_cloud(self) -> PointCloud:
        """Snapshot of the global map cloud."""
        return self.map.cloud()

    def trajectory(self) -> list[KeyframePose]:
        """Snapshot of all keyframes placed so far, in map frame, oldest first."""
        return self.map.trajectory()

    @property
    def stats(self) -> MapperStats:
        """Copy of the counters."""
        with self._lock:
            return replace(
                self._stats,
                keyframes_dropped=self.builder.dropped,
                pending=self.builder.num_pending,
                map_points=len(self.map),
            )

    def save(self, output_dir: str | Path, prefix: str = "map", map_frame: MapFrame | None = None,
             formats: tuple[str, ...] = ("ply", "tum")) -> dict[str, Path]:
        """Write the map cloud (PLY, PCD) and keyframe trajectory (TUM), those of `formats`,
        into `output_dir` (in `map_frame`, else the mapper's own frame); the path of each."""
        return save_map(self.map, output_dir, prefix, map_frame, formats)

    # ---- processing --------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._lock:
                window = None
                while not self._stopping:
                    window = self.builder.take(force=self._flush_requested)
                    self._flush_requested = False
                    if window is not None:
                        break
                    self._lock.notify_all()
                    self._lock.wait()
                if self._stopping or window is None:
                    return
                self._busy = True
                epoch, reconstructor = self._epoch, self._reconstructor
            try:
                self._process(window, epoch, reconstructor)
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()

    def _run_due(self, force: bool) -> None:
        while True:
            with self._lock:
                window = self.builder.take(force=force)
                epoch, reconstructor = self._epoch, self._reconstructor
            if window is None:
                return
            self._process(window, epoch, reconstructor)

    def _process(self, window: Window, epoch: int, reconstructor: Reconstructor) -> None:
        """Reconstruct (no lock held), then chain and integrate (state lock only, so frames
        keep flowing in meanwhile)."""
        started = time.perf_counter()
        try:
            result = reconstructor(window.keyframes)
            reconstruct_s = time.perf_counter() - started
            with self._state_lock:
                if epoch != self._epoch:
                    return
                placed = self._place(window, result)
                placed.timings["reconstruct_s"] = reconstruct_s
                with self._lock:
                    self._stats.views_rejected += len(window) - len(placed.keyframes)
                    self._stats.reconstruct_s = reconstruct_s
                    self._stats.chain_s = placed.timings["chain_s"]
                    self._stats.integrate_s = placed.timings["integrate_s"]
                    self._stats.latency_s = time.perf_counter() - started
                    self._stats.windows_done += 1
        except Exception as error:
            with self._state_lock, self._lock:
                if epoch != self._epoch:
                    return
                self._stats.windows_failed += 1
                self._stats.last_error = f"window {window.index}: {error}"
            if self.on_error is not None:
                self.on_error(window, error)
            elif self._thread is None:
                raise
            else:
                logger.warning("window %d (%d keyframes) failed and was skipped, the map is kept: %s: %s",
                               window.index, len(window), type(error).__name__, error)
            return
        if self.on_window is not None:
            self.on_window(placed)

    def _place(self, window: Window, result: SceneFromViewsResult) -> WindowInMap:
        views = result_views(result, len(window))
        check_finite(result, window.index)
        keyframes = [window.keyframes[i] for i in views]
        started = time.perf_counter()
        if not self._placed:
            # The first keyframe defines the map frame (its optical frame, the model's units).
            transform, fit = invert_sim3(np.asarray(result.camera_poses[0], np.float64)), None
        else:
            shared = [(position, self._references[kf.keyframe_id]) for position, kf in enumerate(keyframes) if kf.keyframe_id in self._references]
            if not shared:
                raise WindowError(f"window {window.index} has none of its overlap keyframes left (all rejected by the model)")
            fit = estimate_window_to_map(
                [reference for _, reference in shared],
                [result.point_clouds[position] for position, _ in shared],
                [kept_confidence(result.confidences[position], None if result.masks is None else result.masks[position]) for position, _ in shared],
                self.config.chain.changed(metric=self.metric),
            )
            if not fit.ok:
                raise WindowError(f"window {window.index} not placed: {fit.reason}")
            transform = fit.transform
        fitted = time.perf_counter()
        new_ids = {kf.keyframe_id for kf in window.new_keyframes}
        placed = move_to_map(window.index, keyframes, result, transform, fit, new_ids)
        moved = time.perf_counter()
        self.map.add_window(placed)
        integrate_s = time.perf_counter() - moved
        anchor = window.keyframes[-self.config.window.overlap :]
        position_of = {kf.keyframe_id: position for position, kf in enumerate(keyframes)}
        self._references = {
            kf.keyframe_id: OverlapReference(
                placed.points[position_of[kf.keyframe_id]],
                kept_confidence(placed.confidences[position_of[kf.keyframe_id]], placed.masks[position_of[kf.keyframe_id]]),
                placed.poses[position_of[kf.keyframe_id]][:3, 3],
            )
            for kf in anchor
            if kf.keyframe_id in position_of
        }
        with self._lock:
            self.builder.commit(window)
        self._placed = True
        self._latest = placed
        placed.timings.update(fit_s=fitted - started, transform_s=moved - fitted, chain_s=moved - started, integrate_s=integrate_s)
        return placed
