#!/usr/bin/env python3
"""What the dense scene optimizer does to a VGGT window: accuracy and time.

No trained VGGT weights can be downloaded here, so accuracy is measured on a synthetic window
with ground truth: a textured room (`synthetic_pairs.render_views`) and VGGT-like raw outputs
whose errors follow a stated model, one per head:

* camera head: rotation error `--rot-deg` and position error `--trans` (fraction of the
  cameras' spread) per view, focal error `--focal`; view 0 is exact (VGGT's frame);
* depth head: a per-view scale error `--depth-scale` and 1 % multiplicative pixel noise;
* point head: world points of each view moved by a small rigid error of their own
  (`--points-rot-deg`, `--points-trans`) and 1 % pixel noise along the ray;
* confidences: lognormal, with 3 % outliers (depth off by up to 60 %) at low confidence.

The raw outputs go through the model's own post-processing (`build_result`) and
`create_optimizer_input` path (`optimizer_input_from_result`), then the dense optimizer (its
defaults: MST init, 300 iterations).  Reported per prediction mode (pointmap, depthmap): camera
ATE after Sim(3) (fraction of the spread), mean relative rotation error, max focal error, depth
abs-rel, before and after refinement; and the refinement's wall time as a ratio to VGGT's
forward pass (full architecture, random weights: the time does not depend on them) on the same
window in the same process.

    python bench/bench_vggt_refinement.py --views 8 --height 294 --width 518 [--no-forward]

The result depends on the error model: refinement replaces the camera head's poses and focals
by ones consistent with the point maps, so it helps where the camera head is the weaker head.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import synthetic_pairs

from scene_from_views_ros.models.vggt import ProcessedViews, VggtOptions, build_result
from scene_from_views_ros.optimizers.base import optimizer_input_from_result
from scene_from_views_ros.optimizers.dense import DenseSceneOptimizer


def _rigid_error(rng: np.random.Generator, rot_deg: float, trans: float) -> np.ndarray:
    error = np.eye(4)
    error[:3, :3] = Rotation.from_rotvec(np.radians(rot_deg) * rng.standard_normal(3) / np.sqrt(3)).as_matrix()
    error[:3, 3] = trans * rng.standard_normal(3) / np.sqrt(3)
    return error


def synthetic_raw(views: synthetic_pairs.RenderedViews, args: argparse.Namespace, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """VGGT-like raw predictions of `views` under the error model of the module docstring."""
    num, height, width = views.depths.shape
    truth = views.camera_poses
    spread = float(np.linalg.norm(truth[:, :3, 3] - truth[:, :3, 3].mean(0), axis=1).mean())
    pose_enc, depth, world, depth_conf, points_conf = [], [], [], [], []
    for v in range(num):
        pose = truth[v] @ (_rigid_error(rng, args.rot_deg, args.trans * spread) if v else np.eye(4))
        extrinsic = np.linalg.inv(pose)
        focal = views.focals[v] * (1.0 + (args.focal * rng.standard_normal() if v or args.focal_view0 else 0.0))
        fov_h, fov_w = 2 * np.arctan(height / 2 / focal), 2 * np.arctan(width / 2 / focal)
        pose_enc.append(np.concatenate((extrinsic[:3, 3], Rotation.from_matrix(extrinsic[:3, :3]).as_quat(), [fov_h, fov_w])))

        outliers = rng.random((height, width)) < 0.03
        factor = 1.0 + 0.01 * rng.standard_normal((height, width))
        factor[outliers] = rng.uniform(0.6, 1.6, int(outliers.sum()))
        conf = 1.0 + np.exp(rng.normal(1.8, 0.3, (height, width)))
        conf[outliers] = 1.0 + np.exp(rng.normal(-0.5, 0.3, int(outliers.sum())))
        depth.append(views.depths[v] * factor * (1.0 + args.depth_scale * rng.standard_normal()))
        depth_conf.append(conf)

        factor = 1.0 + 0.01 * rng.standard_normal((height, width))
        factor[outliers] = rng.uniform(0.6, 1.6, int(outliers.sum()))
        moved = truth[v] @ (_rigid_error(rng, args.points_rot_deg, args.points_trans * spread) if v else np.eye(4))
        local = views.points[v] * factor[..., None]
        world.append(local @ moved[:3, :3].T + moved[:3, 3])
        points_conf.append(conf)
    f32 = np.float32
    return {
        "pose_enc": np.stack(pose_enc).astype(f32), "depth": np.stack(depth)[..., None].astype(f32),
        "depth_conf": np.stack(depth_conf).astype(f32), "world_points": np.stack(world).astype(f32),
        "world_points_conf": np.stack(points_conf).astype(f32),
    }


def _metrics(views: synthetic_pairs.RenderedViews, poses: list[np.ndarray], intrinsics: list[np.ndarray],
             depths: list[np.ndarray]) -> dict[str, float]:
    errors = synthetic_pairs.pose_errors(np.stack(poses).astype(np.float64), views.camera_poses)
    errors["focal"] = float(np.max(np.abs(np.array([k[0, 0] for k in intrinsics]) / views.focals - 1.0)))
    errors["depth_abs_rel"] = synthetic_pairs.depth_abs_rel(depths, views.depths)
    return {k: round(v, 5) for k, v in errors.items()}


def forward_seconds(num_views: int, height: int, width: int) -> float:
    """One VGGT forward (full architecture, random weights, no track head) on the window."""
    from scene_from_views_ros.models.networks.vggt import VGGT

    torch.manual_seed(0)
    network = VGGT(build_track_head=False).eval()
    images = torch.rand(num_views, 3, height, width)
    with torch.inference_mode():
        started = time.perf_counter()
        network(images)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--height", type=int, default=294, help="processed height (a multiple of 14 for the forward pass)")
    parser.add_argument("--width", type=int, default=518)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rot-deg", type=float, default=1.0, help="camera head rotation error per view (deg)")
    parser.add_argument("--trans", type=float, default=0.05, help="camera head position error (fraction of the spread)")
    parser.add_argument("--focal", type=float, default=0.03, help="camera head focal error (relative)")
    parser.add_argument("--focal-view0", action="store_true", help="view 0's focal wrong too (default: exact)")
    parser.add_argument("--depth-scale", type=float, default=0.02, help="depth head per-view scale error")
    parser.add_argument("--points-rot-deg", type=float, default=0.3, help="point head per-view rotation error (deg)")
    parser.add_argument("--points-trans", type=float, default=0.01, help="point head per-view position error (fraction of spread)")
    parser.add_argument("--niter", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-forward", action="store_true", help="skip timing VGGT's forward pass (about 5 GB of memory)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # its first use imports torch._dynamo (~2 s): not timed

    rng = np.random.default_rng(args.seed)
    focal = 0.8 * args.width
    views = synthetic_pairs.render_views(args.views, args.height, args.width, focal, rng)
    raw = synthetic_raw(views, args, rng)
    num = args.views
    processed = ProcessedViews(
        images=torch.zeros(num, 3, args.height, args.width), rgb=views.images,
        valid=[np.ones((args.height, args.width), dtype=bool)] * num, scales=np.ones((num, 2)), offsets=np.zeros((num, 2)),
    )
    report: dict = {"views": num, "shape": [args.height, args.width], "pairs": num * (num - 1), "niter": args.niter,
                    "error_model": {k: getattr(args, k) for k in ("rot_deg", "trans", "focal", "depth_scale", "points_rot_deg", "points_trans")}}
    refine_seconds = []
    for mode in ("pointmap", "depthmap"):
        result = build_result(raw, processed, VggtOptions(prediction_mode=mode), as_pointcloud=False)
        entry = {"vggt": _metrics(views, result.camera_poses, result.intrinsics, result.depth_predictions)}
        optimizer = DenseSceneOptimizer(niter=args.niter)
        started = time.perf_counter()
        output = optimizer.optimize(optimizer_input_from_result(result))
        refine_seconds.append(time.perf_counter() - started)
        entry["vggt_dense"] = _metrics(views, output.camera_poses, output.intrinsics, output.depth_predictions)
        entry["dense_seconds"] = round(refine_seconds[-1], 2)
        report[mode] = entry
    if not args.no_forward:
        seconds = forward_seconds(num, args.height, args.width)
        report["forward_seconds"] = round(seconds, 2)
        report["dense_over_forward"] = [round(s / seconds, 2) for s in refine_seconds]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
