"""Parity of our VGGT against the reference implementation, and the CI fixtures.

The reference (facebookresearch/vggt, or the copy inside cvlab-kaist/RobustVGGT with
robust_vggt.py) is NOT part of this repository: point --reference (or $VGGT_REFERENCE) at
a checkout of it.  torchvision is only needed by its image loader; where it is missing,
--stubs / $VGGT_REFERENCE_STUBS may name a folder holding a stand-in module.

  python tools/make_vggt_fixtures.py --reference /work/ref/RobustVGGT tiny   # write test/fixtures/vggt_tiny
  python tools/make_vggt_fixtures.py --reference /work/ref/RobustVGGT full   # full-size parity report
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
FIXTURES = REPO / "test" / "fixtures" / "vggt_tiny"
sys.path.insert(0, str(REPO))

from scene_from_views_ros.core.checkpoint import load_checkpoint_into  # noqa: E402
from scene_from_views_ros.core.images import load_images  # noqa: E402
from scene_from_views_ros.models.networks.vggt import VGGT, DptConfig, TrackConfig, VggtConfig  # noqa: E402
from scene_from_views_ros.models.vggt import preprocess_vggt_images  # noqa: E402

OUTPUT_KEYS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf", "track", "vis", "conf")

TINY_CONFIG = VggtConfig(
    img_size=224,
    embed_dim=32,
    depth=4,
    num_heads=2,
    encoder_depth=2,
    encoder_num_heads=2,
    camera_trunk_depth=1,
    camera_num_heads=4,
    dpt=DptConfig(features=16, out_channels=(16, 16, 32, 32), intermediate_layer_idx=(0, 1, 2, 3)),
    track=TrackConfig(features=16, dpt_out_channels=(16, 16, 32, 32), hidden_size=32, depth=2, corr_levels=3, corr_radius=2),
)
TINY_IMAGES = ("notredame/1.jpeg", "notredame/3.jpeg", "chateau/Chateau1.png")
TINY_TARGET = 140


def import_reference(reference: str | None, stubs: str | None) -> None:
    """Put the reference checkout (and an optional torchvision stand-in) on sys.path."""
    reference = reference or os.environ.get("VGGT_REFERENCE")
    if not reference or not (Path(reference) / "vggt" / "models" / "vggt.py").is_file():
        raise SystemExit("give --reference (or $VGGT_REFERENCE): a checkout holding vggt/models/vggt.py")
    for path in (stubs or os.environ.get("VGGT_REFERENCE_STUBS"), reference):
        if path and path not in sys.path:
            sys.path.insert(0, path)


def build_reference(cfg: VggtConfig) -> torch.nn.Module:
    """The reference VGGT in configuration `cfg` (pieces swapped in where its constructors hard-code sizes)."""
    from vggt.heads.camera_head import CameraHead
    from vggt.heads.dpt_head import DPTHead
    from vggt.heads.track_head import TrackHead
    from vggt.heads.track_modules.base_track_predictor import BaseTrackerPredictor
    from vggt.layers.attention import MemEffAttention
    from vggt.layers.block import NestedTensorBlock
    from vggt.layers.vision_transformer import DinoVisionTransformer
    from vggt.models.aggregator import Aggregator
    from vggt.models.vggt import VGGT as RefVGGT

    if cfg == VggtConfig():
        return RefVGGT()
    model = RefVGGT.__new__(RefVGGT)
    torch.nn.Module.__init__(model)
    dim = 2 * cfg.embed_dim
    model.aggregator = Aggregator(
        img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim, depth=cfg.depth,
        num_heads=cfg.num_heads, patch_embed="dinov2_vits14_reg",
    )
    model.aggregator.patch_embed = DinoVisionTransformer(
        img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim, depth=cfg.encoder_depth,
        num_heads=cfg.encoder_num_heads, mlp_ratio=4, block_fn=partial(NestedTensorBlock, attn_class=MemEffAttention),
        num_register_tokens=cfg.num_register_tokens, interpolate_antialias=True, interpolate_offset=0.0,
        block_chunks=0, init_values=1.0,
    )
    model.camera_head = CameraHead(dim_in=dim, trunk_depth=cfg.camera_trunk_depth, num_heads=cfg.camera_num_heads)
    dpt = dict(features=cfg.dpt.features, out_channels=list(cfg.dpt.out_channels), intermediate_layer_idx=list(cfg.dpt.intermediate_layer_idx))
    model.point_head = DPTHead(dim_in=dim, output_dim=4, activation="inv_log", conf_activation="expp1", **dpt)
    model.depth_head = DPTHead(dim_in=dim, output_dim=2, activation="exp", conf_activation="expp1", **dpt)
    t = cfg.track
    model.track_head = TrackHead(dim_in=dim, patch_size=cfg.patch_size, features=t.features, iters=t.iters, stride=t.stride,
                                 corr_levels=t.corr_levels, corr_radius=t.corr_radius, hidden_size=t.hidden_size)
    model.track_head.feature_extractor = DPTHead(
        dim_in=dim, patch_size=cfg.patch_size, features=t.features, feature_only=True, down_ratio=2, pos_embed=False,
        out_channels=list(t.dpt_out_channels), intermediate_layer_idx=list(cfg.dpt.intermediate_layer_idx),
    )
    model.track_head.tracker = BaseTrackerPredictor(
        latent_dim=t.features, predict_conf=True, stride=t.stride, corr_levels=t.corr_levels,
        corr_radius=t.corr_radius, hidden_size=t.hidden_size, depth=t.depth, max_scale=t.max_scale,
    )
    return model


@torch.no_grad()
def perturb_(model: torch.nn.Module, seed: int) -> None:
    """Add seeded noise to every parameter (norms, LayerScale gammas and tokens included)."""
    gen = torch.Generator().manual_seed(seed)
    for _, param in sorted(model.named_parameters()):
        flat = param.detach().float()
        spread = max(float(flat.std()) if flat.numel() > 1 else 0.0, float(flat.abs().mean()))
        noise = torch.randn(param.shape, generator=gen) * (0.3 * spread + 0.02)
        param.add_(noise.to(param.dtype))


def reference_forward(model: torch.nn.Module, images: torch.Tensor, query: torch.Tensor | None) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        out = model(images, query_points=query)
    out = out[0] if isinstance(out, tuple) else out
    return {k: out[k].float().numpy() for k in OUTPUT_KEYS if k in out}


def our_forward(model: VGGT, images: torch.Tensor, query: torch.Tensor | None) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        out = model(images, query_points=query)
    return {k: v.float().numpy() for k, v in out.items()}


def compare(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Max abs error and max error relative to the output's magnitude, per output."""
    report = {}
    for key in OUTPUT_KEYS:
        if key not in ref:
            continue
        a, b = ours[key].astype(np.float64), ref[key].astype(np.float64)
        if a.shape != b.shape:
            raise AssertionError(f"{key}: shape {a.shape} vs reference {b.shape}")
        diff = np.abs(a - b)
        report[key] = {
            "max_abs": float(diff.max()),
            "max_rel_to_scale": float(diff.max() / max(np.abs(b).max(), 1e-12)),
            "max_rel_elementwise": float((diff / (np.abs(b) + 1e-6 * np.abs(b).max())).max()),
        }
    return report


def load_inputs(names, target: int, mode: str = "crop") -> np.ndarray:
    rgb = load_images([str(DATA / n) for n in names])
    return np.stack(preprocess_vggt_images(rgb, mode=mode, target_size=target).rgb)


def query_points_for(height: int, width: int) -> torch.Tensor:
    ys, xs = np.meshgrid(np.linspace(8, height - 8, 3), np.linspace(8, width - 8, 4), indexing="ij")
    return torch.from_numpy(np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float32))


def run_parity(
    cfg: VggtConfig, images_u8: np.ndarray, seed: int, weights_path: Path, storage: torch.dtype = torch.float32
) -> tuple[dict, dict, dict]:
    """`storage`: dtype of the saved weights; the reference runs (in fp32) on exactly the
    stored values, so a float16 fixture halves its size without loosening parity."""
    torch.manual_seed(seed)
    ref = build_reference(cfg).eval()
    perturb_(ref, seed)
    from safetensors.torch import save_file

    with torch.no_grad():
        for tensor in ref.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(storage))
    save_file({k: v.to(storage).contiguous() if v.is_floating_point() else v.contiguous()
               for k, v in ref.state_dict().items()}, str(weights_path))
    ours = VGGT(cfg).eval()
    load_checkpoint_into(ours, weights_path)
    images = torch.from_numpy(images_u8).permute(0, 3, 1, 2).float().div(255)
    query = query_points_for(*images.shape[-2:])
    t0 = time.perf_counter()
    ref_out = reference_forward(ref, images, query)
    t1 = time.perf_counter()
    our_out = our_forward(ours, images, query)
    t2 = time.perf_counter()
    print(f"reference forward {t1 - t0:.2f}s, ours {t2 - t1:.2f}s")
    return compare(our_out, ref_out), ref_out, our_out


def make_tiny(seed: int) -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    images = load_inputs(TINY_IMAGES, TINY_TARGET)
    report, ref_out, _ = run_parity(TINY_CONFIG, images, seed, FIXTURES / "weights.safetensors", storage=torch.float16)
    np.save(FIXTURES / "images.npy", images)
    np.savez_compressed(FIXTURES / "reference_outputs.npz", query_points=query_points_for(*images.shape[1:3]).numpy(), **ref_out)
    meta = {"config": TINY_CONFIG.to_dict(), "seed": seed, "images": list(TINY_IMAGES), "target_size": TINY_TARGET,
            "preprocess_mode": "crop", "parity": report}
    (FIXTURES / "config.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(report, indent=1))


PREPROCESS_CASES = {"crop": ("notredame/1.jpeg", "notredame/3.jpeg", "trevi/2.jpeg"), "pad": ("notredame/1.jpeg", "trevi/3.jpeg")}


def make_preprocess_reference() -> None:
    """SHA-256 of the reference loader's 518-px output (as uint8) for a few real-image sets."""
    import hashlib

    from vggt.utils.load_fn import load_and_preprocess_images

    cases = {}
    for mode, names in PREPROCESS_CASES.items():
        tensor = load_and_preprocess_images([str(DATA / n) for n in names], mode=mode)
        as_u8 = (tensor.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        ours = load_inputs(names, 518, mode)
        cases[mode] = {"images": list(names), "shape": list(as_u8.shape), "sha256": hashlib.sha256(as_u8.tobytes()).hexdigest(),
                       "ours_equal": bool(np.array_equal(ours, as_u8))}
    (FIXTURES / "preprocess_reference.json").write_text(json.dumps(cases, indent=1) + "\n")
    print(json.dumps(cases, indent=1))


def run_full(seed: int, target: int, workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    images = load_inputs(("notredame/1.jpeg", "notredame/2.jpeg", "chateau/Chateau1.png"), target)
    report, _, _ = run_parity(VggtConfig(), images, seed, workdir / "vggt_full_random.safetensors")
    print(json.dumps(report, indent=1))


ROBUST_IMAGES = ("notredame/1.jpeg", "notredame/2.jpeg", "notredame/4.jpeg", "trevi/1.jpeg", "notredame/5.jpeg", "trevi/2.jpeg")


def reference_robust_scores(model: torch.nn.Module, images: torch.Tensor, workdir: Path) -> dict[str, object]:
    """Run robust_vggt.py's scoring on `images`, reading its local scores as it returns."""
    import robust_vggt

    experiment = robust_vggt.RobustVGGTExperiment.__new__(robust_vggt.RobustVGGTExperiment)
    experiment.config = robust_vggt.ExperimentConfig(image_dir=workdir)
    experiment.device, experiment.amp_dtype, experiment.model = "cpu", torch.float32, model
    experiment.pair_out_dir = workdir
    captured: dict[str, object] = {}

    def profiler(frame, event, _arg):
        if event == "return" and frame.f_code is robust_vggt.RobustVGGTExperiment._forward_once.__code__:  # noqa: SLF001 - the reference keeps its per-frame forward private
            captured.update({k: frame.f_locals.get(k) for k in ("combined_score", "attn_val", "cos_sim", "rejected_image_indices")})

    sys.setprofile(profiler)
    try:
        experiment._forward_once(images, tuple(images.shape[-2:]), torch.device("cpu"))  # noqa: SLF001 - the reference keeps its per-frame forward private
    finally:
        sys.setprofile(None)
    return captured


def run_robust(target: int, workdir: Path) -> None:
    """Scores of our VGGT-Robust (both flags off) against robust_vggt.py, full configuration."""
    from scene_from_views_ros.core.checkpoint import load_state_dict
    from scene_from_views_ros.models.vggt_robust import SceneFromViewsVggtRobust

    weights = workdir / "vggt_full_random.safetensors"
    if not weights.is_file():
        raise SystemExit(f"{weights} missing: run the 'full' command first")
    reference = build_reference(VggtConfig()).eval()
    reference.load_state_dict(load_state_dict(weights), strict=True)
    processed = preprocess_vggt_images(load_images([str(DATA / n) for n in ROBUST_IMAGES]), "crop", target)
    ref = reference_robust_scores(reference, processed.images, workdir)
    del reference
    ours_model = SceneFromViewsVggtRobust(checkpoint=weights, device="cpu")
    report = {}
    for thresh in (0.4, 0.6):
        out = ours_model.infer(processed, use_most_central_as_reference=False, use_anchor_relative_score=False, rej_thresh=thresh)
        scores = out["scores"]
        report[f"rej_thresh={thresh}"] = {"ours_rejected": scores.rejected}
    out = ours_model.infer(processed, use_most_central_as_reference=False, use_anchor_relative_score=False)["scores"]
    report["combined_ours"] = out.scores.tolist()
    report["combined_ref"] = ref["combined_score"].tolist()
    report["max_abs_combined"] = float(np.abs(out.scores - ref["combined_score"].numpy()).max())
    report["max_abs_attention"] = float(np.abs(out.attention - ref["attn_val"].numpy()).max())
    report["max_abs_cosine"] = float(np.abs(out.cosine - ref["cos_sim"].numpy()).max())
    report["rejected_ours"], report["rejected_ref"] = out.rejected, ref["rejected_image_indices"]
    defaults = ours_model.infer(processed)["scores"]
    report["defaults"] = {"anchor": defaults.anchor, "scores": defaults.scores.tolist(), "rejected": defaults.rejected}
    print(json.dumps(report, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", help="checkout of facebookresearch/vggt or cvlab-kaist/RobustVGGT")
    parser.add_argument("--stubs", help="folder with a torchvision stand-in, if torchvision is missing")
    parser.add_argument("--seed", type=int, default=0)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("tiny", help="write test/fixtures/vggt_tiny")
    sub.add_parser("preprocess", help="write the reference preprocessing checksums")
    robust = sub.add_parser("robust", help="VGGT-Robust scores vs robust_vggt.py (after 'full')")
    robust.add_argument("--target-size", type=int, default=140)
    robust.add_argument("--workdir", type=Path, default=Path("/tmp/vggt_parity"))
    full = sub.add_parser("full", help="parity at the released configuration (needs ~12 GB RAM)")
    full.add_argument("--target-size", type=int, default=140)
    full.add_argument("--workdir", type=Path, default=Path("/tmp/vggt_parity"))
    args = parser.parse_args()
    import_reference(args.reference, args.stubs)
    torch.set_grad_enabled(False)
    if args.command == "tiny":
        make_tiny(args.seed)
    elif args.command == "preprocess":
        make_preprocess_reference()
    elif args.command == "robust":
        run_robust(args.target_size, args.workdir)
    else:
        run_full(args.seed, args.target_size, args.workdir)


if __name__ == "__main__":
    main()
