#!/usr/bin/env python3
"""Our sparse scene optimizer against MASt3R's sparse_global_alignment on the same synthetic pairs.

Synthetic pairs (`synthetic_pairs.make_scene`) get descriptors that identify each pixel's true
world point (`add_descriptors`), so reciprocal matching finds true correspondences.  The reference
runs through its own `sparse_global_alignment` (its forward pass is replaced by cache files this
script writes in its format, its final SparseGA wrapper by a capture); its dense depth comes from
its `make_dense_pts3d`.  Prints JSON per method: camera ATE after Sim(3) alignment (fraction of the
cameras' spread), mean relative rotation error (deg), max focal error, depth abs-rel, wall time.

    python bench/bench_sparse_optimizer.py --reference /work/ref/mast3r --views 5 --niter1 300 --niter2 300

The reference imports `roma`, `torchvision` and viewers it does not use here; stand-ins for what is
missing are written by this script into a temporary folder.  Without --reference only ours runs.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import synthetic_pairs

from scene_from_views_ros.optimizers.sparse import SparseSceneOptimizer

ROMA_STANDIN = '''
import torch
def unitquat_to_rotmat(q):
    x, y, z, w = (q / q.norm(dim=-1, keepdim=True)).unbind(-1)
    rows = (1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y))
    return torch.stack(rows, -1).reshape(q.shape[:-1] + (3, 3))
'''


def add_descriptors(scene: synthetic_pairs.SyntheticScene, dim: int = 16, radius: float = 20.0, seed: int = 0):
    """Unit descriptors = a fixed random orthonormal map of each pixel's true world point lifted onto a
    sphere (x / R, sqrt(1 - |x / R|^2)): the largest dot product is then the nearest world point.
    Descriptor confidences are the point confidences."""
    basis, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, 4)))
    descs = []
    for depth, pose, focal in zip(scene.depths, scene.camera_poses, scene.focals, strict=True):
        h, w = depth.shape
        rows, cols = np.mgrid[:h, :w]
        local = np.stack(((cols - w / 2) * depth / focal, (rows - h / 2) * depth / focal, depth), axis=-1)
        x = (local @ pose[:3, :3].T + pose[:3, 3]) / radius
        lifted = np.concatenate((x, np.sqrt(1.0 - (x**2).sum(-1, keepdims=True))), axis=-1)
        descs.append((lifted @ basis.T).astype(np.float32))
    for pair in scene.optimizer_input.pair_predictions:
        pair.desc_i, pair.desc_j = descs[pair.i], descs[pair.j]
        pair.desc_conf_i, pair.desc_conf_j = pair.conf_i, pair.conf_j
    return scene


def metrics(scene: synthetic_pairs.SyntheticScene, poses: np.ndarray, focals: np.ndarray, depths: list[np.ndarray]) -> dict[str, float]:
    errors = synthetic_pairs.pose_errors(np.asarray(poses, dtype=np.float64), scene.camera_poses)
    errors["focal"] = float(np.max(np.abs(np.asarray(focals) / scene.focals - 1.0)))
    errors["depth_abs_rel"] = synthetic_pairs.depth_abs_rel(depths, scene.depths)
    return errors


def run_ours(scene: synthetic_pairs.SyntheticScene, options: dict[str, Any]) -> dict[str, float]:
    optimizer = SparseSceneOptimizer(**options)
    started = time.perf_counter()
    out = optimizer.optimize(scene.optimizer_input)
    seconds = time.perf_counter() - started
    result = metrics(scene, np.stack(out.camera_poses), np.array([k[0, 0] for k in out.intrinsics]), out.depth_predictions)
    return {**result, "seconds": seconds}


def _import_reference(reference: Path, stubs: Path) -> Any:
    """The reference's sparse_ga module, with stand-ins for what it imports but this benchmark does not use."""
    (stubs / "roma").mkdir(parents=True, exist_ok=True)
    (stubs / "roma" / "__init__.py").write_text(ROMA_STANDIN)
    sys.path[:0] = [str(stubs), str(reference), str(reference / "dust3r")]
    for name, attrs in {"dust3r.cloud_opt.base_opt": ["clean_pointcloud"], "dust3r.viz": ["SceneViz"]}.items():
        module = types.ModuleType(name)
        for attr in attrs:
            setattr(module, attr, None)
        sys.modules.setdefault(name, module)
    import mast3r.cloud_opt.sparse_ga as sparse_ga  # type: ignore[import-not-found]

    return sparse_ga


def run_reference(scene: synthetic_pairs.SyntheticScene, options: dict[str, Any], reference: Path, work: Path) -> dict[str, float]:
    sparse_ga = _import_reference(reference, work / "stubs")
    from mast3r.utils.misc import hash_md5  # type: ignore[import-not-found]

    inp = scene.optimizer_input
    by_pair = {(p.i, p.j): p for p in inp.pair_predictions}
    names = [f"view{v}" for v in range(inp.num_views)]
    cache = work / "cache"
    subsample = options.get("subsample", 8)
    pairs_in = []
    for (i, j), forward in by_pair.items():
        if i > j:
            continue
        backward = by_pair[(j, i)]
        t = torch.from_numpy
        h1, h2 = hash_md5(names[i]), hash_md5(names[j])
        for path, pred in ((cache / "forward" / h1 / f"{h2}.pth", forward), (cache / "forward" / h2 / f"{h1}.pth", backward)):
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save((t(pred.pts3d_i), t(pred.conf_i), t(pred.pts3d_j_in_i), t(pred.conf_j)), path)
        feats = [t(forward.desc_i), t(forward.desc_j), t(backward.desc_i), t(backward.desc_j)]
        qonfs = [t(forward.desc_conf_i), t(forward.desc_conf_j), t(backward.desc_conf_i), t(backward.desc_conf_j)]
        corres = sparse_ga.extract_correspondences(feats, qonfs, subsample=subsample, device="cpu")
        score = (1.0, float(corres[2].sum()), len(corres[2]))
        path = cache / f"corres_conf=desc_conf_subsample={subsample}" / f"{h1}-{h2}.pth"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save((score, corres), path)
        pairs_in += [({"idx": i}, {"idx": j}), ({"idx": j}, {"idx": i})]  # symmetrised, as the demo's make_pairs

    captured: dict[str, Any] = {}

    def capture(imgs: Any, pairs: Any, res: dict, anchors: Any, canonical_paths: Any) -> None:
        captured.update(res=res, canonical_paths=canonical_paths)

    sparse_ga.SparseGA = capture
    level = options.get("optim_level", "refine+depth")
    kwargs = {
        "lr1": options.get("lr1", 0.07), "niter1": options.get("niter1", 300), "lr2": options.get("lr2", 0.01),
        "niter2": 0 if level == "coarse" else options.get("niter2", 300), "opt_depth": "depth" in level,
        "matching_conf_thr": options.get("matching_conf_thr", 0.0), "shared_intrinsics": options.get("shared_intrinsics", False),
        "kinematic_mode": options.get("kinematic_mode", "hclust-ward"),
    }
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        sparse_ga.sparse_global_alignment(names, pairs_in, str(cache), None, subsample=subsample, device="cpu", **kwargs)
        res = captured["res"]
        _, depths, _ = sparse_ga.make_dense_pts3d(res["intrinsics"], res["cam2w"], res["depthmaps"], captured["canonical_paths"],
                                                  subsample, device="cpu")
    seconds = time.perf_counter() - started
    shapes = [d.shape for d in scene.depths]
    dense = [d.reshape(s).numpy() for d, s in zip(depths, shapes, strict=True)]
    cam2w = res["cam2w"].double().numpy()
    poses = np.einsum("ij,njk->nik", np.linalg.inv(cam2w[0]), cam2w)
    result = metrics(scene, poses, res["intrinsics"][:, 0, 0].numpy(), dense)
    return {**result, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=None, help="MASt3R checkout (with its dust3r submodule)")
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--niter1", type=int, default=300)
    parser.add_argument("--niter2", type=int, default=300)
    parser.add_argument("--optim-level", default="refine+depth", choices=("coarse", "refine", "refine+depth"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--same-scale", action="store_true",
                        help="undo the pairs' random scales (the reference's canonical views average pairs at their own scale)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    focal = 56.0 * args.width / 64.0
    scene = add_descriptors(synthetic_pairs.make_scene(args.views, args.height, args.width, focal=focal, seed=args.seed))
    if args.same_scale:
        for pair, scale in zip(scene.optimizer_input.pair_predictions, scene.pair_scales, strict=True):
            pair.pts3d_i, pair.pts3d_j_in_i = pair.pts3d_i / scale, pair.pts3d_j_in_i / scale
    options = {"niter1": args.niter1, "niter2": args.niter2, "optim_level": args.optim_level}
    report: dict[str, Any] = {"views": args.views, "same_scale": args.same_scale, "shape": [args.height, args.width], "options": options}
    report["ours"] = run_ours(scene, options)
    if args.reference is not None:
        with tempfile.TemporaryDirectory(prefix="bench_sparse_") as work:
            report["reference"] = run_reference(scene, options, args.reference, Path(work))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
