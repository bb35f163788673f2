"""The map as the robot's TF tree sees it: REP-103 axes, metres where a scale is known.

The mapper builds its map in the first keyframe's optical frame, in the model's units.  What is
published (topics, TF, the node's saved files) is that map moved by `MapFrame`: translations
and points scaled to metres (`scale`), then a rigid `alignment` to the published map frame:
- standalone / none: ROS axes at the first keyframe's camera (x forward, y left, z up: `OPTICAL_TO_ROS`);
- map_to_odom: the robot's base frame at the first keyframe (z up as the robot's), from TF.

`OdometryScale` estimates metres per map unit from odometry: the camera's positions in the
odom frame (TF, metres) against the same keyframes in the map, over pairs of keyframes whose
odometry baseline is long enough; the median ratio, and its spread (median absolute deviation
relative to it).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

# ROS body axes (x forward, y left, z up) from OpenCV optical axes (x right, y down, z forward).
OPTICAL_TO_ROS = np.array([[0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


@dataclass
class MapFrame:
    """published = alignment @ (the internal map with its translations times `scale`)."""

    alignment: np.ndarray = field(default_factory=lambda: OPTICAL_TO_ROS.copy())
    scale: float = 1.0

    def poses(self, poses: np.ndarray) -> np.ndarray:
        """Camera-to-map 4x4 poses (..., 4, 4) of the internal map -> of the published map."""
        scaled = np.array(poses, dtype=np.float64)
        scaled[..., :3, 3] *= self.scale
        return self.alignment @ scaled

    def points(self, points: np.ndarray) -> np.ndarray:
        """Points (..., 3) of the internal map -> of the published map (float32)."""
        rotation, translation = self.alignment[:3, :3], self.alignment[:3, 3]
        return (np.asarray(points, np.float64) * self.scale @ rotation.T + translation).astype(np.float32)


class OdometryScale:
    """Metres per map unit from keyframe positions in odometry (metres) and in the map."""

    def __init__(self, min_baseline_m: float, max_keyframes: int = 500) -> None:
        self.min_baseline_m = min_baseline_m
        self._positions: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._max = max_keyframes

    def clear(self) -> None:
        self._positions.clear()

    def add(self, keyframe_id: int, map_position: np.ndarray, odom_position: np.ndarray) -> None:
        self._positions[keyframe_id] = (np.asarray(map_position, np.float64), np.asarray(odom_position, np.float64))
        while len(self._positions) > self._max:
            self._positions.popitem(last=False)

    def estimate(self) -> tuple[float, float, int] | None:
        """(scale, relative spread, pairs used), or None before one pair has the baseline.
        Each keyframe is paired with the next one at least `min_baseline_m` away in odometry."""
        entries = list(self._positions.values())
        if len(entries) < 2:
            return None
        in_map = np.stack([m for m, _ in entries])
        in_odom = np.stack([o for _, o in entries])
        ratios = []
        for i in range(len(entries) - 1):
            odom_steps = np.linalg.norm(in_odom[i + 1 :] - in_odom[i], axis=1)
            far = np.flatnonzero(odom_steps >= self.min_baseline_m)
            if far.size:
                j = i + 1 + far[0]
                map_step = np.linalg.norm(in_map[j] - in_map[i])
                if map_step > 0:
                    ratios.append(odom_steps[far[0]] / map_step)
        if not ratios:
            return None
        scale = float(np.median(ratios))
        spread = float(np.median(np.abs(np.asarray(ratios) - scale)) / scale)
        return scale, spread, len(ratios)
