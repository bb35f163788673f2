#!/usr/bin/env python3
"""How each scene optimizer's time and memory grow with views and pixels (ours only).

Synthetic pair predictions of every ordered pair (`synthetic_pairs.make_scene`; descriptors for
the sparse optimizer as in bench_sparse_optimizer.py).  For each optimizer and number of views
prints wall time and the peak resident memory the call adds (each call in a fresh process), at the optimizers' defaults
(300 iterations; sparse 300 + 300; TSDF on the true geometry with TSDF_thresh 1% of the depth).

    python bench/bench_optimizer_scaling.py --views 4 8 16 --height 96 --width 128
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import synthetic_pairs
from bench_sparse_optimizer import add_descriptors
from reference_harness import forward_peak_mib

from scene_from_views_ros.core.result import PointCloud, SceneFromViewsResult
from scene_from_views_ros.optimizers import scene_optimizer_factory
from scene_from_views_ros.optimizers.base import SceneOptimizerInput


def _with_true_result(scene: synthetic_pairs.SyntheticScene) -> SceneOptimizerInput:
    """The input with a reconstruction attached (the true geometry), what the TSDF refinement refines."""
    inp = scene.optimizer_input
    num, height, width = scene.depths.shape
    intrinsics = [np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]]) for f in scene.focals]
    rng = np.random.default_rng(0)
    depths = [(d * (1.0 + 0.01 * rng.standard_normal(d.shape))).astype(np.float32) for d in scene.depths]
    inp.result = SceneFromViewsResult(
        global_point_cloud=PointCloud(np.zeros((0, 3)), np.zeros((0, 3))), camera_poses=list(scene.camera_poses),
        processed_images=inp.images, depth_predictions=depths,
        point_clouds=[np.zeros((height, width, 3), np.float32)] * num, intrinsics=intrinsics,
        confidences=[np.ones((height, width), np.float32)] * num,
    )
    return inp


def _child(name: str, views: int, args: argparse.Namespace, queue: Any) -> None:
    torch.set_num_threads(args.threads)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # its first use imports torch._dynamo (~2 s): not timed
    scene = add_descriptors(synthetic_pairs.make_scene(views, args.height, args.width, focal=0.875 * args.width, seed=1))
    inp = _with_true_result(scene)
    options = {"TSDF_thresh": 0.01 * float(np.median(scene.depths))} if name == "tsdf_refinement" else {}
    optimizer = scene_optimizer_factory(name, **options)
    started = time.perf_counter()
    peak = forward_peak_mib(lambda: optimizer.optimize(inp))
    queue.put({"seconds": round(time.perf_counter() - started, 2), "peak_added_mib": round(peak, 1)})


def measure(name: str, views: int, args: argparse.Namespace) -> dict[str, float]:
    """Time and added peak memory of one call, in a fresh process (memory freed by an earlier
    call would otherwise be reused and hide this one's peak)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_child, args=(name, views, args, queue))
    child.start()
    result = queue.get()
    child.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--optimizers", nargs="+", default=["dense_scene_optimizer", "sparse_scene_optimizer", "tsdf_refinement"])
    args = parser.parse_args()
    for views in args.views:
        row: dict[str, Any] = {"views": views, "pairs": views * (views - 1), "shape": [args.height, args.width]}
        for name in args.optimizers:
            row[name] = measure(name, views, args)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
