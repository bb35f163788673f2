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
from reference_harness import forward_peak_mib

from scene_from_views_ros.optimizers.sparse import SparseOptimizerOptions, SparseProblem, SparseSceneOptimizer, align_anchors

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

    Descriptor confidences of pair (i, j) are, as MASt3R's, a matchability: the point confidence
    where the pixel's surface point is seen by the other view of the pair (in its image, not
    hidden), 0.01 elsewhere; so the matches that reciprocal search still makes between pixels
    that see nothing in common weigh next to nothing, as with the real network."""
    basis, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, 4)))
    descs, worlds = [], []
    for depth, pose, focal in zip(scene.depths, scene.camera_poses, scene.focals, strict=True):
        h, w = depth.shape
        rows, cols = np.mgrid[:h, :w]
        local = np.stack(((cols - w / 2) * depth / focal, (rows - h / 2) * depth / focal, depth), axis=-1)
        world = local @ pose[:3, :3].T + pose[:3, 3]
        worlds.append(world)
        x = world / radius
        lifted = np.concatenate((x, np.sqrt(1.0 - (x**2).sum(-1, keepdims=True))), axis=-1)
        descs.append((lifted @ basis.T).astype(np.float32))

    def seen_by(view: int, other: int) -> np.ndarray:
        """Pixels of `view` whose surface point `other` sees (in its image and not hidden, 2 % depth tolerance)."""
        h, w = scene.depths[other].shape
        to_other = np.linalg.inv(scene.camera_poses[other])
        local = worlds[view] @ to_other[:3, :3].T + to_other[:3, 3]
        z = local[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.round(scene.focals[other] * local[..., 0] / z + w / 2)
            v = np.round(scene.focals[other] * local[..., 1] / z + h / 2)
        inside = (z > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        seen = np.zeros_like(inside)
        seen[inside] = np.abs(scene.depths[other][v[inside].astype(int), u[inside].astype(int)] - z[inside]) < 0.02 * z[inside]
        return seen

    for pair in scene.optimizer_input.pair_predictions:
        pair.desc_i, pair.desc_j = descs[pair.i], descs[pair.j]
        pair.desc_conf_i = np.where(seen_by(pair.i, pair.j), pair.conf_i, 0.01).astype(np.float32)
        pair.desc_conf_j = np.where(seen_by(pair.j, pair.i), pair.conf_j, 0.01).astype(np.float32)
    return scene


def metrics(scene: synthetic_pairs.SyntheticScene, poses: np.ndarray, focals: np.ndarray, depths: list[np.ndarray]) -> dict[str, float]:
    errors = synthetic_pairs.pose_errors(np.asarray(poses, dtype=np.float64), scene.camera_poses)
    errors["focal"] = float(np.max(np.abs(np.asarray(focals) / scene.focals - 1.0)))
    errors["depth_abs_rel"] = synthetic_pairs.depth_abs_rel(depths, scene.depths)
    return errors


def run_ours(scene: synthetic_pairs.SyntheticScene, options: dict[str, Any]) -> dict[str, float]:
    optimizer = SparseSceneOptimizer(**options)
    outputs = []
    started = time.perf_counter()
    peak_mib = forward_peak_mib(lambda: outputs.append(optimizer.optimize(scene.optimizer_input)))
    seconds = time.perf_counter() - started
    out = outputs[0]
    result = metrics(scene, np.stack(out.camera_poses), np.array([k[0, 0] for k in out.intrinsics]), out.depth_predictions)
    return {**result, "seconds": seconds, "matching_seconds": optimizer.last_run.matching_seconds, "peak_added_mib": peak_mib}


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
    started = time.perf_counter()  # the reference's matching is part of its pipeline: timed with it
    matching_seconds = 0.0
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
        matching_started = time.perf_counter()
        corres = sparse_ga.extract_correspondences(feats, qonfs, subsample=subsample, device="cpu")
        matching_seconds += time.perf_counter() - matching_started
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
        "opt_pp": options["opt_pp"],
        "matching_conf_thr": options.get("matching_conf_thr", 0.0), "shared_intrinsics": options.get("shared_intrinsics", False),
        "kinematic_mode": options.get("kinematic_mode", "hclust-ward"),
    }
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
    return {**result, "seconds": seconds, "matching_seconds": matching_seconds}


def _problem_from_reference(captured: dict[str, Any]) -> tuple[SparseProblem, int, list[tuple[int, int]]]:
    """Our problem built from the arguments the reference passed to its sparse_scene_optimizer
    (its canonical depths, anchors, offsets, matches, focals and tree): the same initialisation."""
    anchors, (_, _, slices) = captured["anchors"], captured["corres"]
    imsizes = captured["imsizes"].long().tolist()
    n = len(imsizes)
    per_view = [anchors[v] for v in range(n)]
    anchor_start = np.concatenate(([0], np.cumsum([len(a[0]) for a in per_view])))
    core = [d.reshape(-1) for d in captured["core_depth"]]
    core_start = np.concatenate(([0], np.cumsum([len(c) for c in core])))
    medians = torch.stack([c.median() for c in core])  # torch's median (lower middle), as the reference's
    match_a, match_b, conf = [], [], []
    for sl in slices:
        match_a.append(anchor_start[sl.img1] + np.arange(sl.slice1.start, sl.slice1.stop))
        match_b.append(anchor_start[sl.img2] + np.arange(sl.slice2.start, sl.slice2.stop))
        conf.append(sl.confs)
    empty = torch.zeros(0, dtype=torch.long)
    problem = SparseProblem(
        shapes=[(h, w) for w, h in imsizes],
        core_view=torch.as_tensor(np.repeat(np.arange(n), [len(c) for c in core])),
        core_start=core_start.tolist(),
        core_depth=torch.cat([c / m for c, m in zip(core, medians, strict=True)]).float(),
        median_depth=medians.float(),
        base_focal=captured["base_focals"].float().reshape(-1),
        anchor_view=torch.as_tensor(np.repeat(np.arange(n), [len(a[0]) for a in per_view])),
        anchor_pix=torch.cat([a[0][:, :2] for a in per_view]).float(),
        anchor_core=torch.cat([a[1] + int(start) for a, start in zip(per_view, core_start, strict=False)]).long(),
        anchor_offset=torch.cat([a[2] for a in per_view]).float(),
        match_a=torch.as_tensor(np.concatenate(match_a)), match_b=torch.as_tensor(np.concatenate(match_b)),
        match_conf=torch.cat(conf).float(),
        fallback_anchor=empty, fallback_target=torch.zeros(0, 3), fallback_view=empty, fallback_conf=torch.zeros(0),
    )
    root, edges = captured["mst"]
    return problem, int(root), [(int(a), int(b)) for a, b in edges]


def loss_curves(scene: synthetic_pairs.SyntheticScene, options: dict[str, Any], reference: Path, work: Path) -> dict[str, Any]:
    """Both optimisation loops from the reference's own prepared data: per-iteration losses compared.

    The reference's losses are read from the return values of its loss closures (a profile hook);
    its matching and canonical views are reused from the timed run's cache."""
    sparse_ga = _import_reference(reference, work / "stubs")
    original = sparse_ga.sparse_scene_optimizer
    captured: dict[str, Any] = {}
    traced: dict[str, list[float]] = {"loss_3d": [], "loss_2d": [], "loss_dust3r": []}

    def hook(frame: Any, event: str, value: Any) -> None:
        name = frame.f_code.co_name
        if event == "return" and name in traced and frame.f_code.co_filename == original.__code__.co_filename:
            traced[name].append(float(value))

    def wrapped(imgs, subsample, imsizes, pps, base_focals, core_depth, anchors, corres, corres2d, *args, **kwargs):
        captured.update(imsizes=imsizes.clone(), base_focals=base_focals.clone(), core_depth=[d.clone() for d in core_depth],
                        anchors={k: tuple(t.clone() for t in v) for k, v in anchors.items()}, corres=corres, mst=args[2])
        sys.setprofile(hook)
        try:
            return original(imgs, subsample, imsizes, pps, base_focals, core_depth, anchors, corres, corres2d, *args, **kwargs)
        finally:
            sys.setprofile(None)

    sparse_ga.sparse_scene_optimizer = wrapped
    try:
        run_reference(scene, options, reference, work)
    finally:
        sparse_ga.sparse_scene_optimizer = original
    if traced["loss_dust3r"] and max(traced["loss_dust3r"]) != 0.0:
        raise SystemExit("the loss-curve comparison needs every pair matched (no DUSt3R fallback)")
    reference_losses = traced["loss_3d"] + traced["loss_2d"]
    problem, root, edges = _problem_from_reference(captured)
    opts = SparseOptimizerOptions(**{k: v for k, v in options.items() if k in SparseOptimizerOptions.__dataclass_fields__})
    _, coarse, fine = align_anchors(problem, root, edges, opts, np.ones(len(problem.shapes)))
    ours_losses = coarse + fine
    if len(ours_losses) != len(reference_losses):
        raise SystemExit(f"loss curves differ in length: ours {len(ours_losses)}, reference {len(reference_losses)}")
    ours_arr, ref_arr = np.array(ours_losses), np.array(reference_losses)
    relative = np.abs(ours_arr - ref_arr) / np.abs(ref_arr)
    ends = [len(coarse) - 1] + ([len(ours_losses) - 1] if fine else [])
    return {
        "iterations": len(ours_losses),
        "final_losses": {stage: {"ours": float(ours_arr[k]), "reference": float(ref_arr[k]), "relative_difference": float(relative[k])}
                         for stage, k in zip(("coarse", "fine"), ends, strict=False)},
        "max_relative_difference": float(relative.max()),
        "every_10th": {"ours": ours_arr[::10].round(6).tolist(), "reference": ref_arr[::10].round(6).tolist()},
    }


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
    parser.add_argument("--opt-pp", type=int, default=0, choices=(0, 1),
                        help="optimise the principal points (ours: 0 by default; the reference's default: 1); both run with it")
    parser.add_argument("--shared-intrinsics", action="store_true", help="one focal (and principal point) for all views, both")
    parser.add_argument("--loss-curve", action="store_true",
                        help="also run our loop on the reference's prepared data and compare the losses iteration by iteration")
    parser.add_argument("--same-scale", action="store_true",
                        help="undo the pairs' random scales (the reference's canonical views average pairs at their own scale)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # its first use imports torch._dynamo (~2 s): not timed
    focal = 56.0 * args.width / 64.0
    scene = add_descriptors(synthetic_pairs.make_scene(args.views, args.height, args.width, focal=focal, seed=args.seed))
    if args.same_scale:
        for pair, scale in zip(scene.optimizer_input.pair_predictions, scene.pair_scales, strict=True):
            pair.pts3d_i, pair.pts3d_j_in_i = pair.pts3d_i / scale, pair.pts3d_j_in_i / scale
    options = {"niter1": args.niter1, "niter2": args.niter2, "optim_level": args.optim_level, "opt_pp": bool(args.opt_pp),
               "shared_intrinsics": args.shared_intrinsics}
    report: dict[str, Any] = {"views": args.views, "same_scale": args.same_scale, "shape": [args.height, args.width], "options": options}
    report["ours"] = run_ours(scene, options)
    if args.reference is not None:
        with tempfile.TemporaryDirectory(prefix="bench_sparse_") as work:
            report["reference"] = run_reference(scene, options, args.reference, Path(work))
            if args.loss_curve:
                report["same_initialisation"] = loss_curves(scene, options, args.reference, Path(work))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
