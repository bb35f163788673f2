"""Accuracy and chaining cost of the sliding-window mapper on a synthetic sequence with ground truth.

Part 1 renders a textured room along a known camera loop (360 frames by default) and maps it
through `SyntheticWindowBackend`, which returns each window's true geometry in a random
Sim(3) gauge with multiplicative depth noise (and, per scenario, outliers, per-view pose
noise or metric scale).  It reports the keyframe ATE RMSE after Sim(3) alignment as a
fraction of the path length, the error of the first and last thirds of the path, the drift
(aligned on the first third only, measured on the last), and the map's accuracy and
completeness against the true surface.  The first scenario is the target: at 1 % depth
noise, ATE < 0.5 % of the path and no drift growth (last third <= 2 x first third + 0.1 %).
For contrast, the same scenario with outliers is also chained by a plain least-squares
Umeyama fit over the same correspondences (the baseline).

Part 2 times chaining at model resolution: 8-keyframe windows of 518x392 (1.6 M points),
split into the robust Sim(3) fit, moving the window's outputs into the map frame, and adding
the new keyframes to the global map.

Run:  python bench/bench_mapping_accuracy.py [--frames 360] [--json results.json]
Exit status 1 if the target scenario misses its target.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scene_from_views_ros.geometry import sim3
from scene_from_views_ros.mapping import (
    ChainConfig,
    KeyframeConfig,
    MapConfig,
    MapperConfig,
    SlidingWindowMapper,
    WindowConfig,
)
from scene_from_views_ros.mapping.synthetic import SyntheticWindowBackend, evaluate_mapper, make_sequence

SCENARIOS = {
    "depth noise 1% (target)": dict(depth_noise=0.01),
    "depth noise 1% + 10% outliers": dict(depth_noise=0.01, outlier_fraction=0.10),
    "depth noise 1% + pose noise 0.2deg/5mm": dict(depth_noise=0.01, pose_noise_deg=0.2, pose_noise_m=0.005),
    "depth noise 3% + 10% outliers": dict(depth_noise=0.03, outlier_fraction=0.10),
    "metric SE(3), depth noise 1%": dict(depth_noise=0.01, metric=True),
}
BASELINE_SCENARIO = "depth noise 1% + 10% outliers"


def mapper_config(metric: bool = False) -> MapperConfig:
    return MapperConfig(
        keyframe=KeyframeConfig(min_change=0.03),
        window=WindowConfig(size=8, overlap=2),
        chain=ChainConfig(metric=metric),
        map=MapConfig(voxel_size=0.01, max_points=1_000_000, drop_percentile=25.0),  # the synthetic backend gives no masks
    )


def plain_least_squares(source, target, weights=None, with_scale=True, **_):
    """Baseline chaining: one weighted Umeyama fit over all correspondences, no robustness."""
    transform = sim3.umeyama(source, target, weights, with_scale)
    return sim3.Sim3Fit(transform, np.ones(len(source), bool), 0.0, 1.0)


def run_accuracy(frames: int, width: int, height: int) -> dict:
    sequence = make_sequence(num_frames=frames, width=width, height=height)
    results = {}
    runs = [(name, options, False) for name, options in SCENARIOS.items()]
    runs.append((f"{BASELINE_SCENARIO} [baseline: plain Umeyama]", SCENARIOS[BASELINE_SCENARIO], True))
    for name, options, baseline in runs:
        backend = SyntheticWindowBackend(sequence, seed=1, **options)
        mapper = SlidingWindowMapper(backend, mapper_config(options.get("metric", False)))
        started = time.perf_counter()
        if baseline:
            with mock.patch("scene_from_views_ros.mapping.chaining.estimate_sim3_robust", plain_least_squares):
                accuracy = evaluate_mapper(mapper, sequence)
        else:
            accuracy = evaluate_mapper(mapper, sequence)
        record = asdict(accuracy)
        for key in ("fit_ms", "chain_ms", "integrate_ms"):
            values = record.pop(key)
            record[key.replace("_ms", "_ms_mean")] = float(np.mean(values)) if values else 0.0
        record["wall_s"] = time.perf_counter() - started
        results[name] = record
        m = record["map"]
        print(
            f"{name:52s} kf={record['keyframes']:3d} win={record['windows_done']:2d}/{record['windows_failed']} "
            f"ATE={100 * record['ate_fraction']:.3f}% rot={record['rotation_error_deg']:.3f}deg "
            f"thirds={100 * record['first_third_fraction']:.3f}%/{100 * record['last_third_fraction']:.3f}% "
            f"drift={100 * record['drift_fraction']:.3f}% acc(med)={100 * m['accuracy_median']:.1f}cm "
            f"acc<5cm={100 * m['accuracy_inlier_ratio']:.1f}% compl<5cm={100 * m['completeness']:.1f}% "
            f"fit={record['fit_ms_mean']:.1f}ms",
            flush=True,
        )
    print(f"path length {sequence.path_length():.2f} m, {frames} frames of {width}x{height}")
    return results


def run_timing(windows: int) -> dict:
    """Chaining cost per window at model resolution (518x392, 8 keyframes per window)."""
    step = 6
    sequence = make_sequence(num_frames=8 + step * windows, width=518, height=392, loops=0.25)
    backend = SyntheticWindowBackend(sequence, depth_noise=0.01, outlier_fraction=0.05, seed=2)
    config = mapper_config()
    config.keyframe = KeyframeConfig(min_change=0.0)
    placed = []
    mapper = SlidingWindowMapper(backend, config, on_window=placed.append)
    for frame in sequence.frames():
        mapper.add_frame(frame)
    chained = placed[1:]
    timing = {
        key: float(np.median([1e3 * w.timings[f"{key}_s"] for w in chained]))
        for key in ("fit", "transform", "chain", "integrate", "reconstruct")
    }
    timing["points_per_window"] = int(sum(p.shape[0] * p.shape[1] for p in chained[0].points))
    timing["windows"] = len(chained)
    print(
        f"518x392 x 8 keyframes ({timing['points_per_window'] / 1e6:.2f} M points), median of {len(chained)} windows: "
        f"fit {timing['fit']:.1f} ms + transform {timing['transform']:.1f} ms = chaining {timing['chain']:.1f} ms; "
        f"map integration {timing['integrate']:.1f} ms (synthetic backend itself: {timing['reconstruct']:.0f} ms)"
    )
    return timing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=360)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--timing-windows", type=int, default=6)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    accuracy = run_accuracy(args.frames, args.width, args.height)
    timing = run_timing(args.timing_windows)
    target = accuracy[next(iter(SCENARIOS))]
    ate_ok = target["ate_fraction"] < 0.005
    drift_ok = target["last_third_fraction"] <= 2 * target["first_third_fraction"] + 0.001
    print(f"target (1% depth noise): ATE < 0.5% of path: {'PASS' if ate_ok else 'FAIL'}; no drift growth: {'PASS' if drift_ok else 'FAIL'}")
    if args.json:
        args.json.write_text(json.dumps({"accuracy": accuracy, "timing": timing}, indent=2))
    return 0 if ate_ok and drift_ok else 1


if __name__ == "__main__":
    sys.exit(main())
