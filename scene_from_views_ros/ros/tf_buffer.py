"""The lookup part of tf2's buffer, for the transforms on /tf and /tf_static (tf2_ros is not
available as a wheel; the node needs only "where was frame A in frame B at time t").

Each child frame has one parent and a time-sorted history of its transform (a static one is
valid at any time).  `lookup(target, source, stamp)` walks both frames up to their common
ancestor and composes the edges, each interpolated at `stamp` (translation linearly, rotation
by slerp) as tf2 does; a stamp outside an edge's history raises `TransformUnavailable`, with
the reason (unknown frame, no connection, waiting for newer data, older than the cache).
"""
from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..geometry.sim3 import quaternion_to_rotation, rotation_to_quaternion


class TransformUnavailable(LookupError):
    """A transform that the buffer cannot give (yet)."""


@dataclass
class _Edge:
    parent: str
    static: bool
    stamps: list[int] = field(default_factory=list)
    translations: list[np.ndarray] = field(default_factory=list)
    quaternions: list[np.ndarray] = field(default_factory=list)  # xyzw


def _slerp(q0: np.ndarray, q1: np.ndarray, weight: float) -> np.ndarray:
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:
        out = q0 + weight * (q1 - q0)
        return out / np.linalg.norm(out)
    angle = np.arccos(dot)
    return (np.sin((1 - weight) * angle) * q0 + np.sin(weight * angle) * q1) / np.sin(angle)


def _matrix(translation: np.ndarray, quaternion: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = quaternion_to_rotation(quaternion)
    out[:3, 3] = translation
    return out


class TransformBuffer:
    """Transforms by child frame, `cache_s` seconds of history each (thread-safe)."""

    def __init__(self, cache_s: float = 10.0) -> None:
        self.cache_ns = int(cache_s * 1e9)
        self._edges: dict[str, _Edge] = {}
        self._lock = threading.Lock()
        self._arrived = threading.Condition()

    def add(self, parent: str, child: str, stamp_ns: int, transform: np.ndarray, static: bool = False) -> None:
        """Record parent <- child (`transform` maps child coordinates into the parent, 4x4)."""
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if not parent or not child or parent == child:
            raise ValueError(f"a transform needs two different frame names, got {parent!r} -> {child!r}")
        translation = np.asarray(transform[:3, 3], np.float64)
        quaternion = rotation_to_quaternion(np.asarray(transform)[:3, :3])
        with self._lock:
            edge = self._edges.get(child)
            if edge is None or edge.parent != parent or edge.static != static:  # a re-parented frame starts afresh
                edge = self._edges[child] = _Edge(parent, static)
            if static:
                edge.stamps, edge.translations, edge.quaternions = [0], [translation], [quaternion]
            else:
                self._insert(edge, stamp_ns, translation, quaternion)
        with self._arrived:
            self._arrived.notify_all()

    def _insert(self, edge: _Edge, stamp_ns: int, translation: np.ndarray, quaternion: np.ndarray) -> None:
        """Into the time-sorted history (a stamp seen before is replaced), the oldest beyond the cache dropped."""
        index = bisect.bisect_left(edge.stamps, stamp_ns)
        if index < len(edge.stamps) and edge.stamps[index] == stamp_ns:
            edge.translations[index], edge.quaternions[index] = translation, quaternion
        else:
            edge.stamps.insert(index, stamp_ns)
            edge.translations.insert(index, translation)
            edge.quaternions.insert(index, quaternion)
        expired = bisect.bisect_left(edge.stamps, edge.stamps[-1] - self.cache_ns)
        if expired:
            del edge.stamps[:expired], edge.translations[:expired], edge.quaternions[:expired]

    def wait_for(self, target: str, source: str, stamp_ns: int, timeout_s: float) -> np.ndarray:
        """`lookup`, waiting up to `timeout_s` for transforms still on their way (TF arrives on
        its own topic, possibly after the image it describes)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self.lookup(target, source, stamp_ns)
            except TransformUnavailable:
                if time.monotonic() >= deadline:
                    raise
            with self._arrived:
                self._arrived.wait(max(0.0, min(0.05, deadline - time.monotonic())))

    def frames(self) -> dict[str, str]:
        """Every known child frame and its parent."""
        with self._lock:
            return {child: edge.parent for child, edge in self._edges.items()}

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        """The 4x4 transform mapping `source` coordinates into `target` at `stamp_ns`."""
        target, source = target.lstrip("/"), source.lstrip("/")
        with self._lock:
            if target == source:
                return np.eye(4)
            up_source, up_target = self._chain(source), self._chain(target)
            common = next((frame for frame in up_source if frame in up_target), None)
            if common is None:
                unknown = [frame for frame in (source, target) if frame not in self._edges and all(frame != e.parent for e in self._edges.values())]
                if unknown:
                    raise TransformUnavailable(
                        f"frame {unknown[0]!r} is not on /tf or /tf_static (publish the camera's mount, e.g. with "
                        "robot_state_publisher or a static_transform_publisher, or set tf_mode standalone)")
                raise TransformUnavailable(f"frames {source!r} and {target!r} are not connected in the TF tree")
            from_source = self._compose(up_source[: up_source.index(common)], stamp_ns)
            from_target = self._compose(up_target[: up_target.index(common)], stamp_ns)
        return np.linalg.inv(from_target) @ from_source

    def _chain(self, frame: str) -> list[str]:
        """The frame and its ancestors up to the root."""
        chain = [frame]
        while chain[-1] in self._edges and len(chain) <= len(self._edges):
            chain.append(self._edges[chain[-1]].parent)
        return chain

    def _compose(self, frames: list[str], stamp_ns: int) -> np.ndarray:
        """ancestor <- frames[0], through each frame's parent."""
        out = np.eye(4)
        for frame in frames:
            out = self._edge_at(frame, stamp_ns) @ out
        return out

    def _edge_at(self, child: str, stamp_ns: int) -> np.ndarray:
        edge = self._edges[child]
        if edge.static:
            return _matrix(edge.translations[0], edge.quaternions[0])
        stamps = edge.stamps
        if stamp_ns > stamps[-1]:
            raise TransformUnavailable(
                f"{edge.parent} -> {child} is known up to {stamps[-1] / 1e9:.3f} s, not yet at {stamp_ns / 1e9:.3f} s "
                "(waiting for newer data: is the odometry running, and with bags is use_sim_time set?)"
            )
        if stamp_ns < stamps[0]:
            raise TransformUnavailable(
                f"{edge.parent} -> {child} at {stamp_ns / 1e9:.3f} s is older than its history (from {stamps[0] / 1e9:.3f} s)"
            )
        index = bisect.bisect_left(stamps, stamp_ns)
        if stamps[index] == stamp_ns:
            return _matrix(edge.translations[index], edge.quaternions[index])
        weight = (stamp_ns - stamps[index - 1]) / (stamps[index] - stamps[index - 1])
        translation = (1 - weight) * edge.translations[index - 1] + weight * edge.translations[index]
        return _matrix(translation, _slerp(edge.quaternions[index - 1], edge.quaternions[index], weight))
