"""Parity of our Fast3R network with the reference implementation, and the CI fixture.

Two steps, because the reference (facebookresearch/fast3r) imports packages this project does
not install (omegaconf, lightning utilities):

1. `reference`, run with a Python where the reference imports (its own venv), writes a folder:
   the network with seeded random weights in the hub layout (config.json as the hub mixin writes
   it, model.safetensors), the images it saw (paths under ../shared/data, the input size, the
   sha256 of the reference's input tensors) and its outputs for fixed image-index ids;
2. `compare`, run with this project's Python, loads that folder into our network, preprocesses
   the same files with our loader and prints the largest relative error of every output.

  /work/ref/venv-fast3r/bin/python tools/make_fast3r_fixtures.py reference tiny --reference /work/ref/fast3r \
      --stubs /work/ref/stubs-fast3r --out test/fixtures/fast3r_tiny
  /work/ref/venv-fast3r/bin/python tools/make_fast3r_fixtures.py reference full ... --out /tmp/fast3r_full
  .venv/bin/python tools/make_fast3r_fixtures.py compare /tmp/fast3r_full

The post-processing (local-to-global alignment, focal, PnP poses) is compared on a synthetic
window with true geometry, since random weights make PnP meaningless: `synthetic` writes
Fast3R-like raw outputs of a textured room (bench/synthetic_pairs.py; 1% noise, 10% outliers at
low confidence, a scale per view on the local points), `reference-postprocess` runs the
reference's align_local_pts3d_to_global and estimate_camera_poses on them (demo settings),
`compare-postprocess` runs ours and prints both errors against the truth.

  .venv/bin/python tools/make_fast3r_fixtures.py synthetic --out /tmp/fast3r_post
  /work/ref/venv-fast3r/bin/python tools/make_fast3r_fixtures.py reference-postprocess /tmp/fast3r_post --reference ...
  .venv/bin/python tools/make_fast3r_fixtures.py compare-postprocess /tmp/fast3r_post

The tiny network keeps the code paths (decoder depth 10, DPT hooks 0/5/7/10) with narrow widths;
the reference's DPT widths are constants of its head factory, changed here for the tiny network
only (its code runs unchanged otherwise).  Weights: every tensor drawn from one seeded generator in
sorted key order (N(0, 1/fan_in), biases 0.02 N, norms 1 + 0.02 N), the heads' output layer x0.05.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

from parity_cli import parity_main  # noqa: E402

DATA = REPO.parent / "shared" / "data"
INF = float("inf")
RELEASED = {
    "encoder_args": {"encoder_type": "croco", "img_size": 512, "patch_size": 16, "patch_embed_cls": "PatchEmbedDust3R",
                     "embed_dim": 1024, "num_heads": 16, "depth": 24, "mlp_ratio": 4, "pos_embed": "RoPE100",
                     "attn_implementation": "pytorch_naive"},
    "decoder_args": {"decoder_type": "fast3r", "random_image_idx_embedding": True, "enc_embed_dim": 1024, "embed_dim": 1024,
                     "num_heads": 16, "depth": 24, "mlp_ratio": 4.0, "qkv_bias": True, "drop": 0.0, "attn_drop": 0.0,
                     "attn_implementation": "pytorch_naive", "attn_bias_for_inference_enabled": False},
    "head_args": {"head_type": "dpt", "output_mode": "pts3d", "landscape_only": False, "depth_mode": ["exp", -INF, INF],
                  "conf_mode": ["exp", 1, INF], "patch_size": 16, "with_local_head": True},
}
CASES: dict[str, dict[str, Any]] = {
    "tiny": {
        "config": {
            "encoder_args": {**RELEASED["encoder_args"], "embed_dim": 16, "num_heads": 2, "depth": 2},
            "decoder_args": {**RELEASED["decoder_args"], "enc_embed_dim": 16, "embed_dim": 16, "num_heads": 2, "depth": 10},
            "head_args": {**RELEASED["head_args"], "dpt_feature_dim": 16, "dpt_layer_dims": [8, 8, 16, 16]},
        },
        # a portrait view among landscape ones: the heads run per view shape
        "images": ["notredame/1.jpeg", "trevi/5.jpeg", "chateau/Chateau1.png", "notredame/4.jpeg"],
        "size": 64,
        "image_ids": [0, 317, 42, 998],
    },
    "full": {
        "config": RELEASED,
        "images": ["notredame/2.jpeg", "trevi/3.jpeg", "chateau/Chateau2.png"],
        "size": 512,
        "image_ids": [0, 731, 12],
    },
}
OUTPUTS = ("pts3d_in_other_view", "conf", "pts3d_local", "conf_local")


def _reseed(model: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    done: set[tuple[int, int]] = set()
    with torch.no_grad():
        for key in sorted(state):
            tensor = state[key]
            where = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
            if not tensor.is_floating_point() or where in done:
                continue
            done.add(where)
            noise = torch.randn(tensor.shape, generator=generator)
            if key.endswith("bias"):
                tensor.copy_(0.02 * noise)
            elif tensor.ndim == 1:
                tensor.copy_(1.0 + 0.02 * noise)
            else:
                tensor.copy_(noise / math.sqrt(max(1, tensor.numel() // tensor.shape[0])))
            if ".dpt.head.4." in key:
                tensor.mul_(0.05)


def build_reference(config: dict[str, Any], seed: int) -> torch.nn.Module:
    """The reference network for a hub `config` with seeded random weights (module doc), in eval mode."""
    from fast3r.dust3r.heads import dpt_head
    from fast3r.models.fast3r import Fast3R

    head = config["head_args"]
    original = dpt_head.DPTOutputAdapter_fix.__init__
    if "dpt_feature_dim" in head:
        def reduced(self: Any, **kwargs: Any) -> None:
            kwargs.update(feature_dim=head["dpt_feature_dim"], last_dim=head["dpt_feature_dim"] // 2, layer_dims=head["dpt_layer_dims"])
            original(self, **kwargs)
        dpt_head.DPTOutputAdapter_fix.__init__ = reduced
    try:
        torch.manual_seed(seed)
        model = Fast3R(*(json.loads(json.dumps(config[k])) for k in ("encoder_args", "decoder_args", "head_args")))
    finally:
        dpt_head.DPTOutputAdapter_fix.__init__ = original
    _reseed(model, seed)
    return model.eval()


def fix_image_ids(model: torch.nn.Module, image_ids: list[int]) -> None:
    """Make the reference use `image_ids` (view order) instead of its random draw on every forward."""
    ids = torch.tensor([image_ids])
    table = model.decoder.image_idx_emb

    def fixed_ids(encoded_feats: list, batch_size: int, num_views: int, max_image_idx: int, device: Any) -> torch.Tensor:
        return torch.cat([table[ids[:, v].to(device)].unsqueeze(1).repeat(1, feats.shape[1], 1)
                          for v, feats in enumerate(encoded_feats)], dim=1)

    model.decoder._get_random_image_pos = fixed_ids  # noqa: SLF001 - the reference's own hook for its draw


def reference_views(names: list[str], size: int) -> list[dict[str, Any]]:
    """The reference's load_images on files of ../shared/data, as its inference() hands them over."""
    from fast3r.dust3r.utils.image import load_images

    views = load_images([str(DATA / name) for name in names], size=size, verbose=False)
    for view in views:  # true_shape as a tensor; plus the keys its slow-encoder debug print reads
        view.update(true_shape=torch.from_numpy(view["true_shape"]), dataset="fixture", label=view["instance"])
    return views


def reference(case_name: str, out: Path, seed: int) -> None:
    """Build, run and save the reference network (see the module doc, step 1)."""
    from safetensors.torch import save_model

    case = CASES[case_name]
    config = json.loads(json.dumps(case["config"]))
    model = build_reference(config, seed)
    fix_image_ids(model, case["image_ids"])
    views = reference_views(case["images"], case["size"])
    started = time.perf_counter()
    with torch.no_grad():
        preds = model(views)
    seconds = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_model(model, str(out / "model.safetensors"))
    arrays = {"image_ids": np.array(case["image_ids"])}
    for index, pred in enumerate(preds):
        for key in OUTPUTS:
            arrays[f"{key}_{index}"] = pred[key][0].numpy().astype(np.float32)
    np.savez_compressed(out / "expected.npz", **arrays)
    inputs = {"images": case["images"], "size": case["size"], "seed": seed,
              "input_sha256": [hashlib.sha256(view["img"].numpy().tobytes()).hexdigest() for view in views]}
    (out / "inputs.json").write_text(json.dumps(inputs, indent=2) + "\n")
    print(f"reference {case_name}: {len(views)} views, forward {seconds:.1f} s, written to {out}")


def compare(folder: Path) -> dict[str, float]:
    """Our network on the folder's weights and images: largest relative error per output."""
    sys.path.insert(0, str(REPO))
    from scene_from_views_ros.core.checkpoint import build_network
    from scene_from_views_ros.core.images import load_images as our_load
    from scene_from_views_ros.models.dust3r import preprocess_pair_images
    from scene_from_views_ros.models.layers.dpt_adapter import canonical_dpt_key
    from scene_from_views_ros.models.networks.fast3r import Fast3R, Fast3RConfig

    inputs = json.loads((folder / "inputs.json").read_text())
    cfg = Fast3RConfig.from_hub_config(json.loads((folder / "config.json").read_text()))
    network = build_network(lambda: Fast3R(cfg), folder / "model.safetensors", "cpu", rename=canonical_dpt_key)
    images = our_load([DATA / name for name in inputs["images"]], rgb=True)
    views = preprocess_pair_images(images, inputs["size"])
    tensors = views.tensors
    digests = [hashlib.sha256(t.numpy().tobytes()).hexdigest() for t in tensors]
    expected = np.load(folder / "expected.npz")
    with torch.no_grad():
        ours = network(tensors, torch.from_numpy(expected["image_ids"]))
    errors = {"inputs_identical": float(digests == inputs["input_sha256"])}
    for key in OUTPUTS:
        worst = 0.0
        for index, value in enumerate(ours[key]):
            reference_value = expected[f"{key}_{index}"]
            scale = np.abs(reference_value).max()
            worst = max(worst, float(np.abs(value[0].numpy() - reference_value).max() / scale))
        errors[key] = worst
    return errors


def synthetic(out: Path, views: int = 5, height: int = 384, width: int = 512, seed: int = 0) -> None:
    """Fast3R-like raw outputs of a synthetic room and its truth (see the module doc)."""
    sys.path[:0] = [str(REPO / "bench"), str(REPO)]
    import synthetic_pairs

    rng = np.random.default_rng(seed)
    truth = synthetic_pairs.render_views(views, height, width, 0.8 * width, rng)
    arrays: dict[str, np.ndarray] = {"camera_poses": truth.camera_poses, "focals": truth.focals, "depths": truth.depths}
    for v in range(views):
        noisy = truth.points[v] * (1.0 + 0.01 * rng.standard_normal((height, width)))[..., None]
        pose = truth.camera_poses[v]
        world = noisy @ pose[:3, :3].T + pose[:3, 3]
        conf = 1.0 + np.exp(rng.normal(1.5, 0.3, (height, width)))
        bad = rng.random((height, width)) < 0.1
        world[bad] += rng.normal(0.0, 1.0, (int(bad.sum()), 3))
        conf[bad] = 1.0 + np.exp(rng.normal(-1.0, 0.3, int(bad.sum())))
        arrays[f"pts3d_in_other_view_{v}"] = world.astype(np.float32)
        arrays[f"conf_{v}"] = conf.astype(np.float32)
        arrays[f"pts3d_local_{v}"] = (rng.uniform(0.5, 2.0) * noisy).astype(np.float32)
        arrays[f"conf_local_{v}"] = conf.astype(np.float32)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "synthetic.npz", **arrays)
    print(f"synthetic window of {views} views at {height}x{width} written to {out}")


def reference_postprocess(folder: Path) -> None:
    """The reference demo's post-processing on the synthetic outputs: aligned points, poses, focals."""
    from fast3r.models.multiview_dust3r_module import MultiViewDUSt3RLitModule

    data = np.load(folder / "synthetic.npz")
    count = len(data["focals"])
    preds = [{key: torch.from_numpy(data[f"{key}_{v}"])[None] for key in OUTPUTS} for v in range(count)]
    views = [{"img": torch.zeros(1, 3, *data["depths"].shape[1:])} for _ in range(count)]
    started = time.perf_counter()
    MultiViewDUSt3RLitModule.align_local_pts3d_to_global(None, preds, views, min_conf_thr_percentile=85)
    poses, focals = MultiViewDUSt3RLitModule.estimate_camera_poses(
        preds, views, niter_PnP=100, focal_length_estimation_method="first_view_from_global_head")
    seconds = time.perf_counter() - started
    np.savez_compressed(
        folder / "reference_post.npz", poses=np.stack(poses[0]), focals=np.array([float(f) for f in focals[0]]), seconds=seconds,
        **{f"aligned_{v}": preds[v]["pts3d_local_aligned_to_global"][0].numpy() for v in range(count)},
    )
    print(f"reference post-processing: {seconds:.2f} s")


def compare_postprocess(folder: Path) -> dict[str, Any]:
    """Ours on the same synthetic outputs; both against the truth (poses relative to view 0)."""
    sys.path[:0] = [str(REPO / "bench"), str(REPO)]
    import synthetic_pairs

    from scene_from_views_ros.models.dust3r import PairViews
    from scene_from_views_ros.models.fast3r import Fast3rOptions, Fast3rOutputs, SceneFromViewsFast3r

    data, ref = np.load(folder / "synthetic.npz"), np.load(folder / "reference_post.npz")
    count, height, width = data["depths"].shape
    outputs = {key: np.stack([data[f"{key}_{v}"] for v in range(count)]) for key in OUTPUTS}
    processed = PairViews([], [np.zeros((height, width, 3), np.uint8)] * count, np.ones((count, 2)), np.zeros((count, 2)))
    model = SceneFromViewsFast3r.__new__(SceneFromViewsFast3r)  # the post-processing needs no network
    model.options = Fast3rOptions()
    started = time.perf_counter()
    ours = model.postprocess_results(Fast3rOutputs(outputs, np.arange(count)), processed.rgb, processed, as_pointcloud=False)
    seconds = time.perf_counter() - started

    def errors(poses: np.ndarray, focals: np.ndarray) -> dict[str, float]:
        relative = np.einsum("ij,njk->nik", np.linalg.inv(poses[0]), poses)
        found = synthetic_pairs.pose_errors(relative, data["camera_poses"])
        found["max_position_error"] = float(np.max(np.linalg.norm(relative[:, :3, 3] - data["camera_poses"][:, :3, 3], axis=1)))
        found["focal"] = float(np.max(np.abs(np.asarray(focals) / data["focals"] - 1.0)))
        return found

    aligned = max(float(np.abs(ours.point_clouds[v] - _to_first(ref[f"aligned_{v}"], ref["poses"][0])).max()) for v in range(count))
    return {
        "ours": errors(np.stack(ours.camera_poses), ours.extras["focals"]) | {"seconds": seconds},
        "reference": errors(ref["poses"].astype(np.float64), ref["focals"]) | {"seconds": float(ref["seconds"])},
        "aligned_points_max_abs_difference": aligned,
    }


def _to_first(points: np.ndarray, first_pose: np.ndarray) -> np.ndarray:
    """Points of the common frame in the frame of view 0's PnP camera (as our output is)."""
    to_first = np.linalg.inv(first_pose.astype(np.float64))
    return (points.reshape(-1, 3) @ to_first[:3, :3].T + to_first[:3, 3]).reshape(points.shape)


def main() -> None:
    steps = {
        "reference": reference,
        "compare": compare,
        "synthetic": synthetic,
        "reference-postprocess": reference_postprocess,
        "compare-postprocess": compare_postprocess,
    }
    parity_main(__doc__.splitlines()[0], "facebookresearch/fast3r", CASES, steps)


if __name__ == "__main__":
    main()
