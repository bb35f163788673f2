"""Which CameraInfo belongs to an image: paired by stamp as message_filters' synchronisers do
(exact, else approximate within a slop), falling back to the newest one received, since many
cameras publish an unchanging calibration rarely or with stamps of their own."""
from __future__ import annotations

import bisect
import threading
from typing import Any


class CameraInfoByStamp:
    """The recent CameraInfos of one camera, by stamp (thread-safe)."""

    def __init__(self, history: int = 64) -> None:
        self._stamps: list[int] = []
        self._infos: list[Any] = []
        self._newest: Any | None = None
        self._history = history
        self._lock = threading.Lock()

    def add(self, info: Any, stamp_ns: int) -> None:
        with self._lock:
            index = bisect.bisect_left(self._stamps, stamp_ns)
            if index < len(self._stamps) and self._stamps[index] == stamp_ns:
                self._infos[index] = info
            else:
                self._stamps.insert(index, stamp_ns)
                self._infos.insert(index, info)
            del self._stamps[: -self._history], self._infos[: -self._history]
            self._newest = info

    def for_stamp(self, stamp_ns: int, slop_s: float) -> Any | None:
        """The info stamped `stamp_ns`, else the nearest within `slop_s`, else the newest (None if none yet)."""
        with self._lock:
            if not self._stamps:
                return None
            index = bisect.bisect_left(self._stamps, stamp_ns)
            nearest = min((i for i in (index - 1, index) if 0 <= i < len(self._stamps)), key=lambda i: abs(self._stamps[i] - stamp_ns))
            if abs(self._stamps[nearest] - stamp_ns) <= slop_s * 1e9:
                return self._infos[nearest]
            return self._newest
