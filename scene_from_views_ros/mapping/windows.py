"""Sliding windows of keyframes that overlap the previous window, with bounded memory.

A window is the `overlap` last keyframes of the previously *placed* window (the
anchor: already in the map frame, they tie the new window to the map) followed by new
keyframes.  New keyframes wait in a pending queue that holds at most the free slots of the
next window; when inference is slower than the camera the oldest pending keyframe is
dropped (the newest win) and counted.  A window whose chaining failed leaves the anchor
unchanged, so the map stays connected.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import ClassVar

from ..core.errors import InvalidOptionError
from ..core.options import Options, option
from .keyframes import Keyframe


@dataclass(frozen=True)
class WindowConfig(Options):
    """Window settings (parameters ``window.*``)."""

    prefix: ClassVar[str] = "window."
    size: int = option(8, "Keyframes per reconstruction window.", unit="keyframes", low=2, high=512, restart=True)
    overlap: int = option(
        2, "Keyframes shared by consecutive windows (1 .. window.size - 1); more overlap conditions the "
        "chaining better, at the cost of fewer new keyframes per window.", unit="keyframes", low=1, high=511,
        restart=True,
    )
    period_s: float = option(
        0.0, "Also reconstruct a partial window when its newest keyframe is this much newer (stamps) than "
        "the last window's (0 = full windows only).", unit="s", low=0.0, high=3600.0, restart=True,
    )

    def check_together(self) -> None:
        if self.overlap >= self.size:
            raise InvalidOptionError(
                f"{self.label('overlap')}={self.overlap} is not allowed with {self.label('size')}={self.size}: "
                f"expected an integer in [1, {self.size - 1}] (window.size - 1)"
            )


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
        self._anchor: list[Keyframe] = []
        self._pending: deque[Keyframe] = deque()
        self._last_window_stamp_ns: int | None = None
        self._next_index = 0
        self.dropped = 0

    def configure(self, config: WindowConfig) -> None:
        """Use new settings from the next window on (pending keyframes over capacity are dropped)."""
        self.config = config
        self._anchor = self._anchor[-config.overlap :]
        self._trim()

    def restart_clock(self) -> None:
        """Stamps jumped back: measure `period_s` from the next keyframes, not the last window."""
        self._last_window_stamp_ns = None

    def reset(self) -> None:
        self._anchor = []
        self._pending = deque()
        self._last_window_stamp_ns = None
        self._next_index = 0
        self.dropped = 0

    @property
    def capacity(self) -> int:
        """How many new keyframes the next window takes (and the pending queue holds)."""
        return self.config.size - len(self._anchor)

    @property
    def num_pending(self) -> int:
        return len(self._pending)

    def _trim(self) -> None:
        """Drop the oldest pending keyframes over capacity, a rig capture always whole."""
        while len(self._pending) > self.capacity:
            group = self._pending.popleft().rig_group
            self.dropped += 1
            while group is not None and self._pending and self._pending[0].rig_group == group:
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
        self._anchor = window.keyframes[-self.config.overlap :]
        self._trim()
