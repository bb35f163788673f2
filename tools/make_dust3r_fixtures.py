"""Parity of our DUSt3R/MASt3R with the reference implementations, and the CI fixtures.

The references (naver/mast3r with its dust3r and croco submodules, as `git clone
--recursive` gives them) are NOT part of this repository: point --reference (or
$MAST3R_REFERENCE) at that checkout.  Its image loader imports torchvision; where it does
not import, --stubs / $REFERENCE_STUBS may name a folder holding a stand-in module.

The reference networks are built with seeded random weights, perturbed (LayerNorms and
biases are constants at initialisation) and with the heads' last layer scaled on a probe
pair so that points lie in front of the cameras, then saved in both official layouts: the
hub folder (model.safetensors + config.json, written by the reference's own hub mixin) and
the .pth dict {'model': state_dict, 'args': Namespace(model=<constructor>)}.  Our models
load each layout and run on real images from ../shared/data; every output is compared.

  python tools/make_dust3r_fixtures.py --reference /work/ref/mast3r tiny        # test/fixtures/*_tiny
  python tools/make_dust3r_fixtures.py --reference /work/ref/mast3r preprocess  # test/fixtures/dust3r_preprocess.json
  python tools/make_dust3r_fixtures.py --reference /work/ref/mast3r full        # full-size parity report
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
FIXTURES = REPO / "test" / "fixtures"
sys.path.insert(0, str(REPO))

from scene_from_views_ros.core.images import load_images  # noqa: E402
from scene_from_views_ros.models.dust3r import SceneFromViewsDust3r, SceneFromViewsMast3r, checkpoint_keys  # noqa: E402
from scene_from_views_ros.models.networks.croco_stereo import CroCoStereoConfig  # noqa: E402

OUTPUT_KEYS = ("pts3d", "conf", "desc", "desc_conf", "pts3d_in_other_view")
FULL = {
    "dust3r_512_dpt": CroCoStereoConfig(),
    "dust3r_512_linear": CroCoStereoConfig(head_type="linear"),
    "dust3r_224_linear": CroCoStereoConfig(head_type="linear", img_size=(224, 224)),
    "mast3r_512_catmlpdpt": CroCoStereoConfig(
        family="mast3r", head_type="catmlp+dpt", output_mode="pts3d+desc24", two_confs=True, desc_conf_mode=("exp", 0.0, float("inf"))
    ),
}
# The reference DPT assumes 16-pixel patches (its adapter's default), so tiny networks keep them.
TINY_DIMS = dict(
    enc_embed_dim=16, enc_depth=2, enc_num_heads=2, dec_embed_dim=16, dec_depth=10, dec_num_heads=2,
    dpt_feature_dim=16, dpt_layer_dims=(8, 8, 16, 16),
)
TINY = {
    "dust3r_tiny": (replace(FULL["dust3r_512_dpt"], **TINY_DIMS), ("notredame/1.jpeg", "notredame/3.jpeg", "chateau/Chateau1.png"), 64),
    "dust3r_linear_tiny": (replace(FULL["dust3r_512_linear"], **TINY_DIMS), ("trevi/2.jpeg", "chateau/Chateau2.png"), 64),
    # The local-feature MLP outputs (descriptor + 1) x 16 x 16 values per token: 8-d descriptors and
    # 8-wide tokens keep the fixture small (the released 24-d head is the same code, checked at full size).
    "mast3r_tiny": (
        replace(FULL["mast3r_512_catmlpdpt"], **{**TINY_DIMS, "enc_embed_dim": 8, "dec_embed_dim": 8}, output_mode="pts3d+desc8"),
        ("notredame/4.jpeg", "trevi/5.jpeg"), 64,
    ),
}
PREPROCESS_CASES = {
    "512": (512, False, ("notredame/1.jpeg", "notredame/5.jpeg", "trevi/3.jpeg", "trevi/5.jpeg", "chateau/Chateau1.png", "frame:redkitchen.mp4")),
    "512_square_ok": (512, True, ("chateau/Chateau2.png", "trevi/8.jpeg")),
    "224": (224, False, ("notredame/4.jpeg", "trevi/14.jpeg", "chateau/Chateau1.png", "frame:robot_unitree.mp4")),
    "320": (320, False, ("notredame/2.jpeg", "trevi/12.jpeg")),
}


def import_reference(reference: str | None, stubs: str | None) -> None:
    """Put the reference checkout (and an optional torchvision stand-in) on sys.path."""
    reference = reference or os.environ.get("MAST3R_REFERENCE")
    if not reference or not (Path(reference) / "mast3r" / "model.py").is_file():
        raise SystemExit("give --reference (or $MAST3R_REFERENCE): a naver/mast3r checkout with its submodules")
    # the dust3r checkout (a submodule of mast3r) first: its package shadows the submodule folder
    for path in (stubs or os.environ.get("REFERENCE_STUBS"), reference, str(Path(reference) / "dust3r")):
        if path and path not in sys.path:
            sys.path.insert(0, path)


def constructor_kwargs(cfg: CroCoStereoConfig) -> dict[str, Any]:
    """The reference constructor's keyword arguments for `cfg`, as its .pth loader builds it."""
    kwargs: dict[str, Any] = dict(
        pos_embed=cfg.pos_embed, patch_embed_cls="PatchEmbedDust3R", img_size=cfg.img_size, head_type=cfg.head_type,
        output_mode=cfg.output_mode, depth_mode=cfg.depth_mode, conf_mode=cfg.conf_mode, enc_embed_dim=cfg.enc_embed_dim,
        enc_depth=cfg.enc_depth, enc_num_heads=cfg.enc_num_heads, dec_embed_dim=cfg.dec_embed_dim, dec_depth=cfg.dec_depth,
        dec_num_heads=cfg.dec_num_heads, patch_size=cfg.patch_size, landscape_only=False,
    )
    if cfg.family == "mast3r":
        kwargs.update(two_confs=cfg.two_confs, desc_conf_mode=cfg.desc_conf_mode)
    return kwargs


def constructor_string(cfg: CroCoStereoConfig) -> str:
    """The `args.model` string the official .pth files store (inf written as a bare name)."""
    name = "AsymmetricMASt3R" if cfg.family == "mast3r" else "AsymmetricCroCo3DStereo"
    kwargs = constructor_kwargs(cfg)
    kwargs["patch_embed_cls"] = "ManyAR_PatchEmbed"
    if cfg.dpt_feature_dim != 256 or cfg.dpt_layer_dims != (96, 192, 384, 768):
        kwargs.update(dpt_feature_dim=cfg.dpt_feature_dim, dpt_layer_dims=cfg.dpt_layer_dims)
    return f"{name}(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"


def build_reference(cfg: CroCoStereoConfig, seed: int) -> torch.nn.Module:
    """The reference network for `cfg` with seeded random weights; a reduced DPT is obtained by
    changing the constants its head factory passes (its code runs unchanged)."""
    from dust3r.heads import dpt_head
    from dust3r.model import AsymmetricCroCo3DStereo
    from mast3r.model import AsymmetricMASt3R

    original = dpt_head.DPTOutputAdapter_fix.__init__

    def reduced(self: Any, **kwargs: Any) -> None:
        kwargs.update(feature_dim=cfg.dpt_feature_dim, last_dim=cfg.dpt_feature_dim // 2, layer_dims=list(cfg.dpt_layer_dims))
        original(self, **kwargs)

    torch.manual_seed(seed)
    dpt_head.DPTOutputAdapter_fix.__init__ = reduced  # type: ignore[method-assign]
    try:
        cls = AsymmetricMASt3R if cfg.family == "mast3r" else AsymmetricCroCo3DStereo
        model = cls(**constructor_kwargs(cfg))
    finally:
        dpt_head.DPTOutputAdapter_fix.__init__ = original  # type: ignore[method-assign]
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith("bias"):
                param.add_(0.02 * noise)
            elif param.ndim == 1:  # LayerNorm weights
                param.mul_(1 + 0.1 * noise)
            else:
                param.add_(0.1 * param.std().nan_to_num(0.02) * noise)
    return model.eval()


def last_layers(model: torch.nn.Module) -> list[tuple[torch.nn.Module, int]]:
    """The heads' output layers and how many point channels each pixel has in them."""
    layers = []
    for head in (model.downstream_head1, model.downstream_head2):
        if hasattr(head, "dpt"):
            layers.append((head.dpt.head[4], 1))
        else:
            layers.append((head.proj, head.patch_size**2))
        if hasattr(head, "head_local_features"):
            layers.append((head.head_local_features.fc2, 0))
    return layers


def calibrate_heads(model: torch.nn.Module, probe: tuple[dict, dict]) -> None:
    """Scale each head's output layer to a unit-ish output on a probe pair and bias the depth
    channel, so that points lie in front of the cameras at moderate distances."""
    captured: dict[int, torch.Tensor] = {}
    hooks = [layer.register_forward_hook(lambda m, i, o, k=k: captured.__setitem__(k, o)) for k, (layer, _) in enumerate(last_layers(model))]
    with torch.no_grad():
        model(*probe)
    for hook in hooks:
        hook.remove()
    with torch.no_grad():
        for k, (layer, pixels) in enumerate(last_layers(model)):
            scale = 0.5 / captured[k].std().item()
            layer.weight.mul_(scale)
            layer.bias.mul_(scale)
            if pixels:  # channel 2 (z) of every pixel: in front, at exp(2) - 1 ~ 6 units
                layer.bias[2 * pixels : 3 * pixels] += 2.0


def read_inputs(names: tuple[str, ...]) -> list[np.ndarray]:
    """RGB uint8 images: files through our loader, 'frame:<video>' as a video's first frame."""
    import cv2

    images = []
    for name in names:
        if name.startswith("frame:"):
            capture = cv2.VideoCapture(str(DATA / name[len("frame:"):]))
            ok, bgr = capture.read()
            capture.release()
            if not ok:
                raise SystemExit(f"cannot read a frame of {name}")
            images.append(np.ascontiguousarray(bgr[..., ::-1]))
        else:
            images.append(load_images([DATA / name], rgb=True)[0])
    return images


def reference_views(images: list[np.ndarray], size: int, square_ok: bool, patch_size: int) -> list[dict]:
    """The reference's `load_images` on our decoded images (written to lossless PNGs first)."""
    from dust3r.utils.image import load_images as reference_load
    from PIL import Image

    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for index, image in enumerate(images):
            path = Path(folder) / f"{index:03d}.png"
            Image.fromarray(image).save(path)
            paths.append(str(path))
        return reference_load(paths, size=size, square_ok=square_ok, verbose=False, patch_size=patch_size)


def sha256(tensors: list[torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _pick(value: Any, n: int) -> np.ndarray:
    """Pair n of a collated reference output (a batched tensor, or a list when shapes differ)."""
    return value[n].numpy()


def reference_pairs(model: torch.nn.Module, views: list[dict], scene_graph: str) -> tuple[list[tuple[int, int]], list[dict], list[dict]]:
    """The reference's make_pairs + inference: ordered pairs and per-pair outputs (numpy)."""
    from dust3r.image_pairs import make_pairs
    from dust3r.inference import inference

    pairs = make_pairs(views, scene_graph=scene_graph, prefilter=None, symmetrize=True)
    out = inference(pairs, model, "cpu", batch_size=1, verbose=False)
    order = [(int(a), int(b)) for a, b in zip(out["view1"]["idx"], out["view2"]["idx"], strict=True)]
    pred1 = [{k: _pick(v, n) for k, v in out["pred1"].items()} for n in range(len(order))]
    pred2 = [{k: _pick(v, n) for k, v in out["pred2"].items()} for n in range(len(order))]
    return order, pred1, pred2


def probe_batch(views: list[dict]) -> tuple[dict, dict]:
    """The first two views as the reference's inference batches them."""
    from dust3r.utils.device import collate_with_cat

    return collate_with_cat([(views[0], views[1])])


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """max |ours - reference| / max |reference|."""
    return float(np.abs(ours.astype(np.float64) - reference).max() / max(np.abs(reference).max(), 1e-12))


def compare(model: SceneFromViewsDust3r, images: list[np.ndarray], ref_order: list, ref1: list, ref2: list, size: int) -> dict[str, float]:
    """Our pair outputs against the reference's, worst relative error per output."""
    processed = model.preprocess_images(images, image_size=size)
    raw = model.infer(processed, scene_graph="complete")
    ours = {pair: (a, b) for pair, a, b in zip(raw.pairs, raw.view1, raw.view2, strict=True)}
    if set(ours) != set(ref_order):
        raise SystemExit(f"pair sets differ: ours {sorted(ours)} vs reference {sorted(ref_order)}")
    worst: dict[str, float] = {}
    for pair, r1, r2 in zip(ref_order, ref1, ref2, strict=True):
        o1, o2 = ours[pair]
        for side, (mine, theirs) in (("view1", (o1, r1)), ("view2", (o2, r2))):
            for key in OUTPUT_KEYS:
                if key in theirs:
                    error = relative_error(mine[key], theirs[key])
                    worst[f"{side}.{key}"] = max(worst.get(f"{side}.{key}", 0.0), error)
    return worst


def save_official_layouts(model: torch.nn.Module, cfg: CroCoStereoConfig, folder: Path) -> tuple[Path, Path]:
    """The hub folder (save_pretrained) and the .pth file of `model`."""
    hub = folder / "hub"
    model.save_pretrained(str(hub))
    pth = folder / "model.pth"
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(model=constructor_string(cfg))}, pth)
    return hub, pth


def model_class(cfg: CroCoStereoConfig) -> type[SceneFromViewsDust3r]:
    return SceneFromViewsMast3r if cfg.family == "mast3r" else SceneFromViewsDust3r


def run_tiny() -> None:
    from safetensors.torch import save_file

    for name, (cfg, names, size) in TINY.items():
        images = read_inputs(names)
        views = reference_views(images, size, False, cfg.patch_size)
        model = build_reference(cfg, seed=len(name))
        calibrate_heads(model, probe_batch(views))
        with torch.no_grad():  # the fixture stores float16 weights: run the reference on the same values
            for tensor in model.state_dict().values():
                tensor.copy_(tensor.half().float())
        order, ref1, ref2 = reference_pairs(model, views, "complete")
        out = FIXTURES / name
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.half().contiguous() for k, v in model.state_dict().items() if ".scratch.layer_rn." not in k}
        save_file(state, str(out / "weights.safetensors"))
        config = {k: v for k, v in asdict(cfg).items()}
        (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
        arrays: dict[str, np.ndarray] = {"pairs": np.asarray(order, dtype=np.int64)}
        for n, (r1, r2) in enumerate(zip(ref1, ref2, strict=True)):
            for key, value in r1.items():
                if key in OUTPUT_KEYS:
                    arrays[f"{n}.view1.{key}"] = value.astype(np.float32)
            for key, value in r2.items():
                if key in OUTPUT_KEYS:
                    arrays[f"{n}.view2.{key}"] = value.astype(np.float32)
        np.savez_compressed(out / "reference_outputs.npz", **arrays)
        meta = {"images": list(names), "image_size": size, "sha256": sha256([v["img"][0] for v in views]),
                "constructor": constructor_string(cfg)}
        (out / "inputs.json").write_text(json.dumps(meta, indent=1) + "\n")
        (out / "model.yaml").write_text(
            f"# Options of the tiny random-weight {name.split('_')[0]} for the model contract test (paths relative to this folder).\n"
            f"checkpoint: weights.safetensors\nconfig: config.json\nimage_size: {size}\n"
        )
        ours = model_class(cfg)(checkpoint=out / "weights.safetensors", config=out / "config.json", device="cpu")
        worst = compare(ours, images, order, ref1, ref2, size)
        print(name, f"{len(order)} pairs", json.dumps({k: f"{v:.2e}" for k, v in worst.items()}))


def run_preprocess() -> None:
    report = {}
    for case, (size, square_ok, names) in PREPROCESS_CASES.items():
        images = read_inputs(names)
        views = reference_views(images, size, square_ok, 16)
        from scene_from_views_ros.models.dust3r import preprocess_pair_images

        ours = preprocess_pair_images(images, size, square_ok, 16)
        equal = all(torch.equal(a, v["img"]) for a, v in zip(ours.tensors, views, strict=True))
        shapes_equal = all(np.array_equal(s, v["true_shape"][0]) for s, v in zip(ours.true_shapes, views, strict=True))
        report[case] = {
            "images": list(names), "image_size": size, "square_ok": square_ok,
            "true_shapes": [v["true_shape"][0].tolist() for v in views],
            "sha256": sha256([v["img"][0] for v in views]), "ours_equal": bool(equal and shapes_equal),
        }
        print(case, report[case]["true_shapes"], "equal" if equal and shapes_equal else "DIFFERENT")
    (FIXTURES / "dust3r_preprocess.json").write_text(json.dumps(report, indent=1) + "\n")


def run_full(names: list[str]) -> None:
    images_names = ("notredame/1.jpeg", "chateau/Chateau1.png")
    results = {}
    for name in names:
        cfg = FULL[name]
        size = max(cfg.img_size)
        images = read_inputs(images_names)
        views = reference_views(images, size, False, cfg.patch_size)
        model = build_reference(cfg, seed=7)
        calibrate_heads(model, probe_batch(views))
        start = time.perf_counter()
        order, ref1, ref2 = reference_pairs(model, views, "complete")
        reference_s = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as folder:
            hub, pth = save_official_layouts(model, cfg, Path(folder))
            keys = {"pth": len(checkpoint_keys(pth)), "hub": len(checkpoint_keys(hub / "model.safetensors"))}
            del model
            for layout, checkpoint in (("hub", hub), ("pth", pth)):
                ours = model_class(cfg)(checkpoint=checkpoint, device="cpu")
                start = time.perf_counter()
                worst = compare(ours, images, order, ref1, ref2, size)
                results[f"{name}/{layout}"] = {"max_rel_error": max(worst.values()), "per_output": worst, "keys": keys[layout],
                                               "ours_s": time.perf_counter() - start, "reference_s": reference_s}
                print(name, layout, json.dumps(results[f"{name}/{layout}"]), flush=True)
                del ours
    print(json.dumps(results, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("tiny", "preprocess", "full"))
    parser.add_argument("--reference")
    parser.add_argument("--stubs")
    parser.add_argument("--models", nargs="*", default=list(FULL), help="full: which configurations")
    args = parser.parse_args()
    import_reference(args.reference, args.stubs)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if args.what == "tiny":
        run_tiny()
    elif args.what == "preprocess":
        run_preprocess()
    else:
        run_full(args.models)


if __name__ == "__main__":
    main()
