"""Metres from odometry: the map's scale error and its ATE in metres (scale_source odometry).

A synthetic room is mapped along a known camera path by `SyntheticWindowBackend` (each
window's true geometry in a random Sim(3) gauge, 1% depth noise): the map comes out in the
first window's arbitrary units.  Odometry gives the camera's positions in metres with a
drift (distances overestimated by `drift`) and white noise; `OdometryScale` (what the node
uses) turns keyframe pairs at least `baseline` apart into metres per map unit.  Reported per
scenario: the scale error, its reported spread, the pairs used, and the ATE in metres of the
scaled map after a rigid (SE(3), no scale) alignment to the truth, as a fraction of the path
and against the ATE of the map with the true scale (the baseline: what a perfect scale gives).

Run:  python bench/bench_odometry_scale.py [--frames 120]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scene_from_views_ros.geometry.sim3 import umeyama
from scene_from_views_ros.mapping import KeyframeConfig, MapperConfig, SlidingWindowMapper, WindowConfig
from scene_from_views_ros.mapping.map_frame import OdometryScale
from scene_from_views_ros.mapping.synthetic import SyntheticWindowBackend, make_sequence

SCENARIOS = [  # (odometry drift, odometry noise in metres, minimum baseline in metres)
    (0.0, 0.0, 0.2), (0.003, 0.0, 0.2), (0.01, 0.0, 0.2), (0.003, 0.005, 0.2), (0.003, 0.005, 0.05),
]


def rigid_ate(positions: np.ndarray, truth: np.ndarray) -> float:
    fit = umeyama(positions, truth, with_scale=False)
    return float(np.sqrt(np.mean(np.sum((positions @ fit[:3, :3].T + fit[:3, 3] - truth) ** 2, axis=1))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=120)
    args = parser.parse_args()
    sequence = make_sequence(args.frames, 160, 120)
    mapper = SlidingWindowMapper(SyntheticWindowBackend(sequence, depth_noise=0.01),
                                 MapperConfig(keyframe=KeyframeConfig(min_change=0.0), window=WindowConfig(size=6, overlap=2)))
    for index in range(len(sequence)):
        mapper.add_frame(sequence.frame(index))
    mapper.flush()
    trajectory = mapper.trajectory()
    index_of = {int(stamp): i for i, stamp in enumerate(sequence.stamps_ns)}
    truth = np.stack([sequence.poses[index_of[kf.stamp_ns], :3, 3] for kf in trajectory])
    mapped = np.stack([kf.pose[:3, 3] for kf in trajectory])
    true_scale = float(np.cbrt(np.linalg.det(umeyama(mapped, truth)[:3, :3])))
    path = sequence.path_length()
    baseline_ate = rigid_ate(mapped * true_scale, truth)
    rng = np.random.default_rng(0)
    rows = []
    for drift, noise, min_baseline in SCENARIOS:
        odometry = truth * (1 + drift) + rng.normal(scale=noise, size=truth.shape)
        estimator = OdometryScale(min_baseline)
        for keyframe, position, odom in zip(trajectory, mapped, odometry, strict=True):
            estimator.add(keyframe.keyframe_id, position, odom)
        estimate = estimator.estimate()
        assert estimate is not None, "no keyframe pair with the baseline"
        scale, spread, pairs = estimate
        ate = rigid_ate(mapped * scale, truth)
        rows.append({"drift": drift, "noise_m": noise, "min_baseline_m": min_baseline, "scale_error": scale / true_scale - 1,
                     "reported_spread": spread, "pairs": pairs, "ate_m": ate, "ate_of_path": ate / path,
                     "ate_over_true_scale_ate": ate / baseline_ate})
        print(f"drift {drift:.3f} noise {noise:.3f} m baseline {min_baseline:.2f} m: scale error {rows[-1]['scale_error']:+.4f} "
              f"(spread {spread:.4f}, {pairs} pairs), ATE {ate:.4f} m = {ate / path:.4%} of the path, "
              f"{ate / baseline_ate:.2f}x the true scale's", flush=True)
    print(json.dumps({"keyframes": len(trajectory), "path_m": path, "true_scale_ate_m": baseline_ate, "scenarios": rows}, indent=1))


if __name__ == "__main__":
    main()
