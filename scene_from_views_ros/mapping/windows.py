"""Sliding windows of keyframes that overlap the previous window, with bounded memory.

A window is the `window_overlap` last keyframes of the previously *placed* window (the
anchor: already in the map frame, they tie the new window to the map) followed by new
keyframes.  New keyframes wait in a pending queue that holds at most the free slots of the
next window; when inference is slower than the camera the oldest pending keyframe is
dropped (the newest win) and counted.  A window whose chaining failed leaves the anchor
unchanged, so the map stays connected.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .keyframes import Keyframe


@dataclass
class WindowConfig:
    """Window settings.

    window_size: keyframes per reconstruction (>= 2).
    window_overlap: keyframes shared by consecutive windows (1 <= overlap < window_size);
        more overlap gives a better-conditioned chaining at the cost of fewer new keyframes.
    period_s: also reconstruct when the newest pending keyframe is this many seconds (by
        stamps) newer than the newest keyframe of the last window, even if the window is not
        full (0 = only full windows).
    """

    window_size: int = 8
    window_overlap: int = 2
    period_s: float = 0.0

    def __post_init__(self) -> None:
        if self.window_size < 2:
            raise ValueError(f"window_size must be >= 2, got {self.window_size}")
        if not 1 <= self.window_overlap < self.window_size:
            raise ValueError(
                f"window_overlap must be in [1, window_size - 1] = [1, {self.window_size - 1}], got {self.window_overlap}"
            )
        if self.period_s < 0:
            raise ValueError(f"window period_s must be >= 0, got {self.period_s}")


@dataclass
class Window:
    """Keyframes to reconstruct together; the first `num_overlap` are already in the map."""

    index: int
    keyframes: list[Keyframe]
    num_overlap: int

    def __len__(self) -> int:
        return len(self.keyframes)

    @property
    def new_keyframes(self) -> list[Keyframe]:
        return self.keyframes[self.num_overlap :]


class WindowBuilder:
    """Collects keyframes and cuts windows; not thread-safe (the mapper holds the lock)."""

    def __init__(self, config: WindowConfig | None = None) -> None:
        self.config = config or WindowConfig()
        self.reset()

    def configure(self, config: WindowConfig) -> None:
        """Use new settings from the next window on (pending keyframes over capacity are dropped)."""
        self.config = config
        self._anchor = self._anchor[-config.window_overlap :]
        self._trim()

    def reset(self) -> None:
        self._anchor: list[Keyframe] = []
        self._pending: deque[Keyframe] = deque()
        self._last_window_stamp_ns: int | None = None
        self._next_index = 0
        self.dropped = 0

    @property
    def capacity(self) -> int:
        """How many new keyframes the next window takes (and the pending queue holds)."""
        return self.config.window_size - len(self._anchor)

    @property
    def num_pending(self) -> int:
        return len(self._pending)

    def _trim(self) -> None:
        while len(self._pending) > self.capacity:
            self._pending.popleft()
            self.dropped += 1

    def push(self, keyframe: Keyframe) -> None:
        """Queue a new keyframe, dropping the oldest pending one if the queue is full."""
        self._pending.append(keyframe)
        self._trim()

    def ready(self) -> bool:
        """True when a window should be reconstructed now (full, or the period elapsed)."""
        if len(self._pending) >= self.capacity:
            return True
        if self.config.period_s <= 0 or not self._pending or len(self._anchor) + len(self._pending) < 2:
            return False
        reference = self._last_window_stamp_ns if self._last_window_stamp_ns is not None else self._pending[0].stamp_ns
        return self._pending[-1].stamp_ns - reference >= self.config.period_s * 1e9

    def take(self, force: bool = False) -> Window | None:
        """Cut the next window if `ready()` (or, with `force`, whenever it would have >= 2
        keyframes and at least one new one); the pending queue is emptied."""
        enough = bool(self._pending) and len(self._anchor) + len(self._pending) >= 2
        if not (self.ready() or (force and enough)):
            return None
        window = Window(self._next_index, self._anchor + list(self._pending), len(self._anchor))
        self._next_index += 1
        self._pending.clear()
        self._last_window_stamp_ns = window.keyframes[-1].stamp_ns
        return window

    def commit(self, window: Window) -> None:
        """The window was placed in the map: its last keyframes become the next anchor."""
        self._anchor = window.keyframes[-self.config.window_overlap :]
        self._trim()
