#!/usr/bin/env python3
"""Our dense scene optimizer against DUSt3R's PointCloudOptimizer on the same synthetic pairs.

Runs both in one process on `synthetic_pairs.make_scene` data and prints JSON: camera ATE after
Sim(3) alignment (fraction of the cameras' spread), mean relative rotation error, focal error,
depth abs-rel, wall time at equal iterations, and the final loss of both started from the
identical initialisation (ours, injected into the reference's parameters).

    python bench/bench_dense_optimizer.py --reference /work/ref/dust3r --views 8 --niter 300

The reference imports `roma` (and `torchvision` for image utilities it does not use here); if
they are not installed, small stand-ins written by this script into a temporary folder are put
on the path (or pass a folder of your own with --stubs).  Without --reference only ours runs.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synthetic_pairs import SyntheticScene, depth_abs_rel, make_scene, pose_errors

from scene_from_views_ros.optimizers.dense import DenseSceneOptimizer, DenseState

# Minimal own stand-ins for the few `roma` functions the reference calls (x, y, z, w quaternions).
_ROMA_STAND_IN = '''
import torch
from scipy.spatial.transform import Rotation


def _quat_matrix(q):
    x, y, z, w = q.unbind(-1)
    m = torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
                     2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
                     2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1)
    return m.reshape(q.shape[:-1] + (3, 3))


class RigidUnitQuat:
    def __init__(self, linear, translation):
        self.linear, self.translation = linear, translation

    def normalize(self):
        return RigidUnitQuat(self.linear / self.linear.norm(dim=-1, keepdim=True), self.translation)

    def to_homogeneous(self):
        out = torch.zeros(self.linear.shape[:-1] + (4, 4), dtype=self.linear.dtype, device=self.linear.device)
        out[..., :3, :3] = _quat_matrix(self.linear)
        out[..., :3, 3] = self.translation
        out[..., 3, 3] = 1
        return out


def rotmat_to_unitquat(rotation):
    quat = Rotation.from_matrix(rotation.detach().cpu().double().numpy()).as_quat()
    return torch.as_tensor(quat, dtype=rotation.dtype, device=rotation.device)


def rigid_points_registration(x, y, weights=None, compute_scaling=False):
    x, y = x.double(), y.double()
    w = torch.ones(len(x), dtype=x.dtype) if weights is None else weights.double().reshape(-1)
    w = w / w.sum()
    mx, my = (w[:, None] * x).sum(0), (w[:, None] * y).sum(0)
    a, b = x - mx, y - my
    u, s, vt = torch.linalg.svd((w[:, None] * b).T @ a)
    d = torch.ones(3, dtype=x.dtype)
    d[2] = torch.sign(torch.det(u @ vt))
    r = u @ torch.diag(d) @ vt
    scale = (s * d).sum() / (w * (a * a).sum(1)).sum() if compute_scaling else torch.ones((), dtype=x.dtype)
    t = my - scale * r @ mx
    return r.float(), t.float(), scale.float()
'''

_TORCHVISION_STAND_IN = {
    "torchvision/__init__.py": "",
    "torchvision/transforms/__init__.py": (
        "class _Any:\n    def __init__(self, *a, **k):\n        pass\n\n    def __call__(self, x):\n        return x\n\n\n"
        "Compose = ToTensor = Normalize = _Any\n"
    ),
}


def _stand_ins(folder: Path) -> None:
    """Write the stand-ins of the modules that are missing into `folder`."""
    import importlib.util

    if importlib.util.find_spec("roma") is None:
        (folder / "roma.py").write_text(_ROMA_STAND_IN)
    if importlib.util.find_spec("torchvision") is None:
        for name, text in _TORCHVISION_STAND_IN.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)


def _metrics(scene: SyntheticScene, poses: np.ndarray, focals: np.ndarray, depths: list[np.ndarray]) -> dict[str, float]:
    errors = pose_errors(np.asarray(poses, dtype=np.float64), scene.camera_poses)
    return {
        "ate_fraction_of_spread": errors["ate"],
        "rotation_error_deg": errors["rotation_deg"],
        "focal_error_rel": float(np.mean(np.abs(np.asarray(focals, dtype=np.float64).ravel() / scene.focals - 1.0))),
        "depth_abs_rel": depth_abs_rel(depths, scene.depths),
    }


def _reference_inputs(scene: SyntheticScene) -> tuple[dict, dict, dict, dict]:
    pairs = scene.optimizer_input.pair_predictions
    view1 = {"idx": [p.i for p in pairs]}
    view2 = {"idx": [p.j for p in pairs]}
    pred1 = {"pts3d": torch.from_numpy(np.stack([p.pts3d_i for p in pairs])), "conf": torch.from_numpy(np.stack([p.conf_i for p in pairs]))}
    pred2 = {
        "pts3d_in_other_view": torch.from_numpy(np.stack([p.pts3d_j_in_i for p in pairs])),
        "conf": torch.from_numpy(np.stack([p.conf_j for p in pairs])),
    }
    return view1, view2, pred1, pred2


def _inject(net: Any, state: DenseState) -> None:
    """Set the reference's parameters to our initial state (its own setters)."""
    with torch.no_grad():
        for e, transform in enumerate(state.pair_transforms):
            scale = float(np.cbrt(np.linalg.det(transform[:3, :3])))
            net._set_pose(net.pw_poses, e, torch.tensor(transform[:3, :3] / scale, dtype=torch.float32),  # noqa: SLF001
                          torch.tensor(transform[:3, 3], dtype=torch.float32), scale=scale)
        for view, (pose, focal, depth) in enumerate(zip(state.camera_poses, state.focals, state.depths, strict=True)):
            net._set_depthmap(view, torch.tensor(depth, dtype=torch.float32))  # noqa: SLF001
            net._set_pose(net.im_poses, view, torch.tensor(pose, dtype=torch.float32))  # noqa: SLF001
            net._set_focal(view, float(focal))  # noqa: SLF001


def _reference_outputs(net: Any) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    with torch.no_grad():
        return (net.get_im_poses().double().numpy(), net.get_focals().double().numpy(),
                [d.double().numpy() for d in net.get_depthmaps()])


def _warm_up() -> None:
    """Pay torch.optim's one-time lazy imports (seconds) before anything is timed."""
    weight = torch.zeros(3, requires_grad=True)
    optimizer = torch.optim.Adam([weight], lr=0.1)
    (weight - 1.0).square().sum().backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, help="DUSt3R checkout (folder holding the dust3r package)")
    parser.add_argument("--stubs", type=Path, help="folder with stand-ins for roma/torchvision (default: written to a temp dir)")
    parser.add_argument("--views", type=int, default=6)
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--niter", type=int, default=300)
    parser.add_argument("--schedule", default="linear", choices=("linear", "cosine"))
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, the same for both")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _warm_up()

    scene = make_scene(args.views, args.height, args.width, seed=args.seed)
    report: dict = {"views": args.views, "pairs": len(scene.optimizer_input.pair_predictions), "shape": [args.height, args.width],
                    "niter": args.niter, "schedule": args.schedule, "threads": args.threads}

    ours = DenseSceneOptimizer(niter=args.niter, schedule=args.schedule, lr=args.lr)
    started = time.perf_counter()
    state = ours.initial_state(scene.optimizer_input)
    init_seconds = time.perf_counter() - started
    init_poses = state.camera_poses
    report["mst_init"] = _metrics(scene, init_poses, state.focals, state.depths) | {"seconds": init_seconds}
    output = ours.optimize(scene.optimizer_input, initial_state=state)
    focals = np.array([k[0, 0] for k in output.intrinsics])
    report["ours"] = _metrics(scene, np.stack(output.camera_poses), focals, output.depth_predictions) | {
        "optimize_seconds": ours.last_run.seconds, "initial_loss": ours.last_run.initial_loss, "final_loss": ours.last_run.final_loss,
    }

    if args.reference is not None:
        with tempfile.TemporaryDirectory() as folder:
            stubs = args.stubs or Path(folder)
            if args.stubs is None:
                _stand_ins(stubs)
            sys.path[:0] = [str(stubs), str(args.reference)]
            with contextlib.redirect_stdout(io.StringIO()):  # its "trimesh is not installed" notice
                from dust3r.cloud_opt.base_opt import global_alignment_loop  # type: ignore[import-not-found]
                from dust3r.cloud_opt.optimizer import PointCloudOptimizer  # type: ignore[import-not-found]

            inputs = _reference_inputs(scene)
            torch.manual_seed(args.seed)
            net = PointCloudOptimizer(*inputs, verbose=False, min_conf_thr=3.0)
            _inject(net, state)
            with torch.no_grad():
                initial = float(net())
            started = time.perf_counter()
            global_alignment_loop(net, lr=args.lr, niter=args.niter, schedule=args.schedule)
            seconds = time.perf_counter() - started
            with torch.no_grad():
                final = float(net())
            report["reference_same_init"] = _metrics(scene, *_reference_outputs(net)) | {
                "optimize_seconds": seconds, "initial_loss": initial, "final_loss": final,
            }

            torch.manual_seed(args.seed)
            net = PointCloudOptimizer(*inputs, verbose=False, min_conf_thr=3.0)
            started = time.perf_counter()
            net.compute_global_alignment(init="mst", niter=args.niter, schedule=args.schedule, lr=args.lr)
            seconds = time.perf_counter() - started
            with torch.no_grad():
                final = float(net())
            report["reference_own_mst"] = _metrics(scene, *_reference_outputs(net)) | {"total_seconds": seconds, "final_loss": final}
    report["ours"]["total_seconds"] = init_seconds + report["ours"]["optimize_seconds"]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
