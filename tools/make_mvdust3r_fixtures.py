"""Parity of our MV-DUSt3R / MV-DUSt3R+ with the reference implementation, and the CI fixture.

Two steps, because the reference (facebookresearch/mvdust3r) imports packages this project does
not install (pytorch3d, gsplat, torchmetrics: stand-ins in --stubs, never called):

1. `reference`, run with a Python where the reference imports (its own venv), writes a folder:
   per variant a checkpoint in the official layout ({'model': state_dict, 'args': Namespace(model=
   <constructor string>)}) with seeded random weights, and the reference's outputs on real images
   of ../shared/data, loaded by its load_images and reordered as its demo does, with BatchNorm in
   eval mode, the outputs put back in the caller's order (`cases.json` lists images and the sha256
   of the reference's input tensors).  It also prints how far the demo's train-mode BatchNorm is
   from eval mode;
2. `compare`, run with this project's Python, loads every checkpoint through our factory,
   preprocesses the same files and prints the largest relative error of each output.

  /work/ref/venv-mvdust3r/bin/python tools/make_mvdust3r_fixtures.py reference tiny --reference /work/ref/mvdust3r \
      --stubs /work/ref/stubs-mvdust3r --out test/fixtures/mvdust3r_tiny
  /work/ref/venv-mvdust3r/bin/python tools/make_mvdust3r_fixtures.py reference full ... --out /tmp/mvdust3r_full
  .venv/bin/python tools/make_mvdust3r_fixtures.py compare /tmp/mvdust3r_full

The tiny networks keep every code path (two decoder layers, MV-DUSt3R+'s fusion blocks, the skip
branch) with narrow widths, without the Gaussian heads, and store every 4th pixel of each output
(224x224 maps of several views would not fit a small fixture).  The skip branch's width is a
constant of the reference head (256), narrowed here for the tiny networks only (the branch is
rebuilt of the reference's own blocks).  Weights: every tensor drawn from one seeded generator in
sorted key order (N(0, 1/fan_in), biases 0.02 N, norms and BatchNorm scales 1 + 0.1 N, BatchNorm
means 0.1 N, variances U(0.5, 1.5)), so the zero-initialised parts (the fusion blocks, the last skip
convolution) are exercised.

The post-processing (mask, focal, PnP poses) is compared on the synthetic window of
`make_fast3r_fixtures.py synthetic` (global points of a textured room with noise and outliers):
`reference-postprocess` runs the demo's steps with the reference's own estimate_focal_knowing_depth
and calibrate_camera_pnpransac, `compare-postprocess` ours, both against the truth.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from argparse import Namespace
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

from parity_cli import parity_main  # noqa: E402

DATA = REPO.parent / "shared" / "data"
RELEASED = (
    "AsymmetricCroCo3DStereoMultiView(pos_embed='RoPE100', img_size=(224, 224), head_type='linear', output_mode='pts3d', "
    "depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, 1e9), enc_embed_dim=1024, enc_depth=24, enc_num_heads=16, "
    "dec_embed_dim=768, dec_depth=12, dec_num_heads=12, GS = True, sh_degree=0, pts_head_config = {'skip':True})"
)
TINY = RELEASED.replace(
    "enc_embed_dim=1024, enc_depth=24, enc_num_heads=16, dec_embed_dim=768, dec_depth=12, dec_num_heads=12",
    "enc_embed_dim=16, enc_depth=2, enc_num_heads=2, dec_embed_dim=16, dec_depth=2, dec_num_heads=2",
).replace("GS = True", "GS = False")
MULTI_REFERENCE = ", m_ref_flag=True)"
# Per case the variants (checkpoint name -> constructor string), their images and the pixel
# stride of the stored outputs; 8 views for MV-DUSt3R+ so that the demo's reordering changes
# which views are references (under 7 views the swaps keep the set {0, 1, 2, 3}).
CASES: dict[str, dict[str, Any]] = {
    "tiny": {
        "variants": {"tiny_MVD": TINY, "tiny_MVDp_s2": TINY[:-1] + MULTI_REFERENCE},
        "images": {"tiny_MVD": ["notredame/1.jpeg", "trevi/5.jpeg", "chateau/Chateau1.png", "notredame/4.jpeg"],
                   "tiny_MVDp_s2": ["chateau/Chateau2.png", "notredame/2.jpeg", "trevi/3.jpeg", "notredame/10.jpeg", "trevi/1.jpeg",
                                    "notredame/11.jpeg", "chateau/Chateau1.png", "trevi/2.jpeg"]},
        "stride": {"tiny_MVD": 4, "tiny_MVDp_s2": 8},
        "skip_width": 8,
    },
    "full": {
        "variants": {"MVD": RELEASED, "MVDp_s2": RELEASED[:-1] + MULTI_REFERENCE},
        "images": {"MVD": ["notredame/2.jpeg", "trevi/3.jpeg", "chateau/Chateau2.png", "notredame/11.jpeg"],
                   "MVDp_s2": ["notredame/2.jpeg", "trevi/3.jpeg", "chateau/Chateau2.png", "notredame/11.jpeg", "trevi/2.jpeg",
                               "notredame/4.jpeg", "trevi/5.jpeg", "chateau/Chateau1.png"]},
        "stride": {"MVD": 1, "MVDp_s2": 1},
        "skip_width": 256,
    },
}
OUTPUTS = ("pts3d", "conf")


def _reseed(model: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, tensor in sorted(model.state_dict().items()):
            if not tensor.is_floating_point():
                continue
            if key.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if key.endswith("running_mean"):
                tensor.copy_(0.1 * noise)
            elif key.endswith("bias"):
                tensor.copy_(0.02 * noise)
            elif tensor.ndim == 1:
                tensor.copy_(1.0 + 0.1 * noise)
            else:
                tensor.copy_(noise / np.sqrt(max(1, tensor.numel() // tensor.shape[0])))


def build_reference(constructor: str, skip_width: int, seed: int) -> torch.nn.Module:
    """The reference network for `constructor`, as its loader builds it (evaluated in dust3r.model's
    namespace), the skip branch narrowed to `skip_width`, seeded random weights, in eval mode."""
    import dust3r.model as reference_model
    from dust3r.heads.linear_head import MiddleBlock

    torch.manual_seed(seed)
    model = eval(constructor, vars(reference_model))  # the reference loader's own way, on our constructor strings
    if skip_width != 256:
        for head in (model.downstream_head1, model.downstream_head2):
            head.skip_proj = torch.nn.Sequential(
                MiddleBlock(6, skip_width, activation=True), MiddleBlock(skip_width, skip_width, kernel_size=5, activation=True),
                MiddleBlock(skip_width, skip_width, kernel_size=5, activation=True), MiddleBlock(skip_width, 3, activation=False),
            )
    if getattr(model, "m_ref_flag", False):
        model.n_ref = 4  # as the demo builds MV-DUSt3R+ (demo.py: n_ref = 4); not a weight
    _reseed(model, seed)
    return model.eval()


def demo_order(count: int) -> list[int]:
    """The reference demo's view swaps (demo.py, get_reconstructed_scene), as an index list."""
    order = list(range(count))
    if count < 12:
        for a, b, needed in ((1, 3, 3), (2, 6, 6)):
            if count > needed:
                order[a], order[b] = order[b], order[a]
    else:
        for k in (1, 2, 3):
            order[k], order[count * k // 4 + 1] = order[count * k // 4 + 1], order[k]
    return order


def reference_views(names: list[str]) -> list[dict[str, Any]]:
    """The reference's load_images at 224 on files of ../shared/data, as its demo hands them over."""
    from dust3r.utils.image import load_images

    views = load_images([str(DATA / name) for name in names], size=224, verbose=False)
    for view in views:
        view["true_shape"] = torch.from_numpy(view["true_shape"]).long()
    return views


def run_reference(model: torch.nn.Module, views: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The demo's call on its reordered views; outputs (row 0, the path whose reference is the
    first image) back in the caller's order."""
    order = demo_order(len(views))
    ordered = [views[i] for i in order]
    with torch.no_grad():
        pred1, pred2s = model(ordered[0], ordered[1:])
    pts3d = torch.stack([pred1["pts3d"][0]] + [p["pts3d_in_other_view"][0] for p in pred2s])
    conf = torch.stack([pred1["conf"][0]] + [p["conf"][0] for p in pred2s])
    return {"pts3d": pts3d[order].numpy(), "conf": conf[order].numpy()}


def reference(case_name: str, out: Path, seed: int) -> None:
    """Build, run and save the reference networks (see the module doc, step 1)."""
    case = CASES[case_name]
    out.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    cases: dict[str, Any] = {"seed": seed, "variants": {}}
    for offset, (name, constructor) in enumerate(case["variants"].items()):
        model = build_reference(constructor, case["skip_width"], seed + offset)
        views = reference_views(case["images"][name])
        started = time.perf_counter()
        outputs = run_reference(model, views)
        seconds = time.perf_counter() - started
        torch.save({"model": model.state_dict(), "args": Namespace(model=constructor)}, out / f"{name}.pth")
        demo_bn = run_reference(model.train(), views)  # what the demo computes: batch statistics (and it updates them)
        stride = case["stride"][name]
        for key in OUTPUTS:
            arrays[f"{name}/{key}"] = outputs[key][:, ::stride, ::stride].astype(np.float32)
        bn_gap = float(np.abs(demo_bn["pts3d"] - outputs["pts3d"]).max() / np.abs(outputs["pts3d"]).max())
        cases["variants"][name] = {
            "images": case["images"][name], "stride": stride, "seconds": seconds, "train_mode_batchnorm_relative_gap": bn_gap,
            "input_sha256": [hashlib.sha256(view["img"].numpy().tobytes()).hexdigest() for view in views],
        }
        print(f"reference {name}: {len(views)} views, forward {seconds:.1f} s; demo's train-mode BatchNorm differs by {bn_gap:.2e} (relative)")
    np.savez_compressed(out / "expected.npz", **arrays)
    (out / "cases.json").write_text(json.dumps(cases, indent=2) + "\n")


def compare(folder: Path) -> dict[str, dict[str, float]]:
    """Our model on the folder's checkpoints and images: largest relative error per output."""
    sys.path.insert(0, str(REPO))
    from scene_from_views_ros.core.factory import scene_from_views_factory
    from scene_from_views_ros.core.images import load_images as our_load

    cases = json.loads((folder / "cases.json").read_text())
    expected = np.load(folder / "expected.npz")
    report = {}
    for name, case in cases["variants"].items():
        stride = case["stride"]
        model = scene_from_views_factory("mvdust3r", device="cpu", checkpoint=str(folder / f"{name}.pth"))
        processed = model.preprocess_images(our_load([DATA / image for image in case["images"]], rgb=True))
        digests = [hashlib.sha256(t.numpy().tobytes()).hexdigest() for t in processed.tensors]
        started = time.perf_counter()
        raw = model.infer(processed)
        errors = {"inputs_identical": float(digests == case["input_sha256"]), "seconds": time.perf_counter() - started}
        for key in OUTPUTS:
            reference_value = expected[f"{name}/{key}"]
            ours = np.asarray(raw[key])[:, ::stride, ::stride]
            errors[key] = float(np.abs(ours - reference_value).max() / np.abs(reference_value).max())
        report[name] = errors
    return report


def synthetic_outputs(folder: Path) -> tuple[Any, np.ndarray, np.ndarray]:
    """The synthetic window of make_fast3r_fixtures.py as MV-DUSt3R outputs: every view's points in
    view 0's camera frame, and the true poses in that frame."""
    data = np.load(folder / "synthetic.npz")
    count = len(data["focals"])
    to_first = np.linalg.inv(data["camera_poses"][0])
    points = np.stack([data[f"pts3d_in_other_view_{v}"] @ to_first[:3, :3].T + to_first[:3, 3] for v in range(count)])
    conf = np.stack([data[f"conf_{v}"] for v in range(count)])
    return data, points.astype(np.float32), conf


def reference_postprocess(folder: Path) -> None:
    """The demo's steps (get_3D_model_from_scene: mask, focal, PnP) with the reference's functions,
    on CPU (the demo moves tensors to CUDA; here they stay where they are)."""
    from dust3r.losses import calibrate_camera_pnpransac, estimate_focal_knowing_depth

    _data, points, conf_np = synthetic_outputs(folder)
    pts3d, conf = torch.from_numpy(points), torch.from_numpy(conf_np)
    _count, height, width = conf.shape
    started = time.perf_counter()
    ordered = conf.reshape(-1).sort()[0]
    mask = conf >= ordered[int(ordered.shape[0] * 3.0 * 0.01)]
    first = conf[0].reshape(-1).sort()[0]
    valid_first = (conf[0] >= first[int(first.shape[0] * 0.03)])
    focal = estimate_focal_knowing_depth(pts3d[0][None], valid_first[None]).item()
    intrinsics = torch.tensor([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]])
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    pixels = torch.stack([x, y], dim=-1).float().flatten(0, 1)[None]
    poses = [calibrate_camera_pnpransac(p.flatten(0, 1)[None], pixels, m.flatten(0, 1)[None], intrinsics[None])[0]
             for p, m in zip(pts3d, mask, strict=True)]
    seconds = time.perf_counter() - started
    np.savez_compressed(folder / "mvdust3r_reference_post.npz", poses=torch.stack(poses).numpy(), focal=focal, seconds=seconds)
    print(f"reference post-processing: {seconds:.2f} s")


def compare_postprocess(folder: Path) -> dict[str, Any]:
    """Ours on the same outputs; both against the truth (view 0's frame)."""
    sys.path[:0] = [str(REPO / "bench"), str(REPO)]
    import synthetic_pairs

    from scene_from_views_ros.models.dust3r import PairViews
    from scene_from_views_ros.models.mvdust3r import MvDust3rOptions, MvDust3rOutputs, SceneFromViewsMvDust3r

    data, points, conf = synthetic_outputs(folder)
    reference_post = np.load(folder / "mvdust3r_reference_post.npz")
    count, height, width = conf.shape
    truth = np.einsum("ij,njk->nik", np.linalg.inv(data["camera_poses"][0]), data["camera_poses"])
    processed = PairViews([], [np.zeros((height, width, 3), np.uint8)] * count, np.ones((count, 2)), np.zeros((count, 2)))
    model = SceneFromViewsMvDust3r.__new__(SceneFromViewsMvDust3r)  # the post-processing needs no network
    model.options, model.variant = MvDust3rOptions(), "MVD"
    started = time.perf_counter()
    ours = model.postprocess_results(MvDust3rOutputs({"pts3d": points, "conf": conf}, [0]), processed.rgb, processed, as_pointcloud=False)
    seconds = time.perf_counter() - started

    def errors(poses: np.ndarray, focal: float) -> dict[str, float]:
        found = synthetic_pairs.pose_errors(poses, truth)
        found["max_position_error"] = float(np.max(np.linalg.norm(poses[:, :3, 3] - truth[:, :3, 3], axis=1)))
        found["focal"] = float(np.max(np.abs(focal / data["focals"] - 1.0)))
        return found

    return {
        "ours": errors(np.stack(ours.camera_poses), float(ours.extras["focals"][0])) | {"seconds": seconds},
        "reference": errors(reference_post["poses"].astype(np.float64), float(reference_post["focal"])) | {"seconds": float(reference_post["seconds"])},
    }


def main() -> None:
    steps = {
        "reference": reference,
        "compare": compare,
        "reference-postprocess": reference_postprocess,
        "compare-postprocess": compare_postprocess,
    }
    parity_main(__doc__.splitlines()[0], "facebookresearch/mvdust3r", CASES, steps)


if __name__ == "__main__":
    main()
