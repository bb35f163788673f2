"""Camera rigs: the frames of several cameras taken at (about) the same time become one
multi-view keyframe.

`RigSynchronizer` groups frames by stamp as message_filters' approximate-time policy does, in
a simpler form: each new frame looks, in every other camera's short queue, for the frame
nearest in time; when all of them lie within `slop_s` of it, the group is complete.  Frames
older than a group's are dropped from the queues (counted as unmatched), so every camera's
frames leave in stamp order.  Each frame keeps its camera's frame_id and intrinsics.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from .keyframes import Frame


class RigSynchronizer:
    """Approximate-time grouping of the frames of `cameras` (camera ids, in the rig's order)."""

    def __init__(self, cameras: Sequence[str], slop_s: float, queue_size: int = 10) -> None:
        if len(cameras) < 2 or len(set(cameras)) != len(cameras):
            raise ValueError(f"a rig needs at least two distinct cameras, got {list(cameras)}")
        self.cameras = list(cameras)
        self.slop_ns = round(slop_s * 1e9)
        self._queues: dict[str, deque[Frame]] = {camera: deque(maxlen=queue_size) for camera in cameras}
        self.unmatched = 0  # frames that left a queue without a group

    def clear(self) -> None:
        """Forget the queued frames (time jumped back: old and new stamps must not pair)."""
        for queue in self._queues.values():
            queue.clear()

    def add(self, frame: Frame) -> list[Frame] | None:
        """Queue `frame`; return the rig's frames (in camera order) when it completes a group."""
        queue = self._queues.get(frame.camera_id)
        if queue is None:
            raise ValueError(f"frame of camera {frame.camera_id!r}, which is not in the rig {self.cameras}")
        if len(queue) == queue.maxlen:
            self.unmatched += 1
        queue.append(frame)
        group = []
        for camera in self.cameras:
            candidates = self._queues[camera]
            if not candidates:
                return None
            nearest = min(candidates, key=lambda other: abs(other.stamp_ns - frame.stamp_ns))
            if abs(nearest.stamp_ns - frame.stamp_ns) > self.slop_ns:
                return None
            group.append(nearest)
        for member in group:
            queue = self._queues[member.camera_id]
            while queue and queue[0].stamp_ns <= member.stamp_ns:
                self.unmatched += queue.popleft() is not member
        return group
