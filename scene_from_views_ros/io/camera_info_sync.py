"""Which CameraInfo belongs to an image: paired by stamp as message_filters' synchronisers do
(exact, else approximate within a slop), falling back to the newest one received, since many
cameras publish an unchanging calibration rarely or with stamps of their own."""
from __future__ import annotations

import threading
from collections import deque
from typing import Any


class CameraInfoByStamp:
    """The last `history` CameraInfos of one camera in arrival order (thread-safe): a clock
    that jumps back, or a stray stamp, never pushes the new ones out."""

    def __init__(self, history: int = 64) -> None:
        self._received: deque[tuple[int, Any]] = deque(maxlen=history)
        self._lock = threading.Lock()

    def add(self, info: Any, stamp_ns: int) -> None:
        with self._lock:
            self._received.append((stamp_ns, info))

    def for_stamp(self, stamp_ns: int, slop_s: float) -> Any | None:
        """The info stamped `stamp_ns` (the newest such), else the nearest within `slop_s`, else
        the newest received (None if none yet)."""
        with self._lock:
            if not self._received:
                return None
            offsets = [abs(stamp - stamp_ns) for stamp, _ in self._received]
            nearest = min(offsets)
            if nearest <= slop_s * 1e9:  # among equally near ones, the newest received
                return self._received[len(offsets) - 1 - offsets[::-1].index(nearest)][1]
            return self._received[-1][1]
