"""Parity of our Depth Anything 3 network with the reference implementation, and the CI fixture.

Two steps, because the reference (ByteDance-Seed/Depth-Anything-3) imports packages this project
does not install (addict, omegaconf, evo, ...; torchvision stand-ins in --stubs):

1. `reference`, run with a Python where the reference imports (its own venv), writes a folder:
   the network with seeded random weights in the hub layout (model.safetensors with the `model.`
   prefix, written by the reference's own save_pretrained, so the tied LayerNorm of the ray
   branch is stored once as in the releases) and what the reference's `inference` pipeline
   computed on real images of ../shared/data, with the network called in true float32 (its
   default call autocasts to float16 even on the CPU): the network input (the processed images), the normalised
   given cameras and the raw outputs for the cases `nocam` (reference view by saddle_balanced),
   `first` and `cams` (given intrinsics and extrinsics, the camera encoder; also the caller's
   cameras and the pipeline's final depth, rescaled to the given cameras' units);
2. `compare`, run with this project's Python, loads the folder into our network and prints the
   largest relative error of every output.

  /work/ref/venv-da3/bin/python tools/make_da3_fixtures.py reference tiny --reference /work/ref/da3/src \\
      --stubs /work/ref/stubs-da3 --out test/fixtures/depth_anything_v3_tiny
  /work/ref/venv-da3/bin/python tools/make_da3_fixtures.py reference tiny_nested ... --out test/fixtures/depth_anything_v3_nested_tiny
  /work/ref/venv-da3/bin/python tools/make_da3_fixtures.py reference small ... --out /tmp/da3_small
  .venv/bin/python tools/make_da3_fixtures.py compare /tmp/da3_small

The tiny network keeps the code paths (alternating attention from block 2, QK-norm and RoPE,
reference-view selection, the camera encoder and decoder, DualDPT) with narrow widths, built from
the reference's own modules; `tiny_nested` pairs it (with SwiGLU blocks, as GIANT) with a tiny
monocular network (METRIC/MONO's DPT with its sky head) as NESTED does; the released presets are
built by model name.  The monocular and NESTED cases also record the metric branch's raw output.
The reference estimates its sky and confidence percentiles on 100 000 randomly drawn pixels when
a window has more; here its draws are replaced by every pixel (exact percentiles, as ours).  Weights: every
parameter redrawn from one seeded generator in sorted name order (N(0, 1/fan_in); norms 1 + 0.1 N;
biases 0.02 N; LayerScale 0.1 (1 + 0.2 N); tokens 0.5 N; position embedding 0.1 N; the field-of-view
bias 1 + 0.1 N so that no view gets a zero field of view after its ReLU).
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

from parity_cli import parity_main  # noqa: E402

DATA = REPO.parent / "shared" / "data"
IMAGES = ["notredame/1.jpeg", "notredame/2.jpeg", "notredame/3.jpeg"]
TINY = {"embed_dim": 32, "depth": 6, "num_heads": 2, "out_layers": [2, 3, 4, 5], "alt_start": 2, "head_features": 16,
        "head_out_channels": [8, 16, 32, 32], "camera_encoder_heads": 2}
TINY_MONOCULAR = {"embed_dim": 32, "depth": 4, "num_heads": 2, "out_layers": [0, 1, 2, 3], "alt_start": -1, "head_features": 16,
                  "head_out_channels": [8, 16, 32, 32]}
CASES: dict[str, dict[str, Any]] = {
    "tiny": {"model_name": None, "process_res": 112, "stride": 2},
    "tiny_nested": {"model_name": "da3nested-giant-large", "process_res": 112, "stride": 2,
                    "config": {"anyview": {**TINY, "swiglu": True}, "metric": TINY_MONOCULAR}},
    "small": {"model_name": "da3-small", "process_res": 504, "stride": 1},
    "base": {"model_name": "da3-base", "process_res": 504, "stride": 1},
    "large": {"model_name": "da3-large", "process_res": 504, "stride": 1},
    "giant": {"model_name": "da3-giant", "process_res": 504, "stride": 1},
    "metric": {"model_name": "da3metric-large", "process_res": 504, "stride": 1},
    "mono": {"model_name": "da3mono-large", "process_res": 504, "stride": 1},
    "nested": {"model_name": "da3nested-giant-large", "process_res": 504, "stride": 1},
}
ANY_VIEW_OUTPUTS = ("depth", "depth_conf", "extrinsics", "intrinsics")
MONOCULAR_OUTPUTS = ("depth", "sky")


def _kind(model_name: str | None) -> str:
    return {"da3nested-giant-large": "nested", "da3metric-large": "monocular", "da3mono-large": "monocular"}.get(model_name or "", "anyview")


def _reseed(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in sorted(module.named_parameters(), key=lambda item: item[0]):
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float64).float()
            if name.endswith("fc_fov.0.bias"):
                parameter.copy_(1.0 + 0.1 * noise)
            elif name.endswith(".gamma"):
                parameter.copy_(0.1 * (1.0 + 0.2 * noise))
            elif name.endswith(("cls_token", "camera_token")):
                parameter.copy_(0.5 * noise)
            elif name.endswith("pos_embed"):
                parameter.copy_(0.1 * noise)
            elif parameter.ndim == 1 and name.endswith("weight"):
                parameter.copy_(1.0 + 0.1 * noise)
            elif parameter.ndim == 1:
                parameter.copy_(0.02 * noise)
            else:
                parameter.copy_(noise / parameter[0].numel() ** 0.5)


def _tiny_network(config: dict[str, Any]) -> torch.nn.Module:
    """The reference's DepthAnything3Net assembled from its own modules at reduced widths: any-view
    (DualDPT and cameras) or, with alt_start -1, monocular (DPT with the sky head)."""
    from depth_anything_3.model.cam_dec import CameraDec
    from depth_anything_3.model.cam_enc import CameraEnc
    from depth_anything_3.model.da3 import DepthAnything3Net
    from depth_anything_3.model.dinov2.dinov2 import DinoV2
    from depth_anything_3.model.dinov2.vision_transformer import DinoVisionTransformer
    from depth_anything_3.model.dpt import DPT
    from depth_anything_3.model.dualdpt import DualDPT

    start, any_view = config["alt_start"], config["alt_start"] >= 0
    backbone = DinoV2("vits", out_layers=config["out_layers"], alt_start=start, qknorm_start=start, rope_start=start, cat_token=any_view)
    backbone.pretrained = DinoVisionTransformer(
        img_size=518, patch_size=14, embed_dim=config["embed_dim"], depth=config["depth"], num_heads=config["num_heads"], mlp_ratio=4,
        ffn_layer="swiglufused" if config.get("swiglu") else "mlp", alt_start=start, qknorm_start=start, rope_start=start,
        cat_token=any_view,
    )
    if not any_view:
        return DepthAnything3Net(net=backbone, head=DPT(dim_in=config["embed_dim"], output_dim=1, features=config["head_features"],
                                                         out_channels=config["head_out_channels"]))
    width = 2 * config["embed_dim"]
    head = DualDPT(dim_in=width, output_dim=2, features=config["head_features"], out_channels=config["head_out_channels"])
    return DepthAnything3Net(net=backbone, head=head, cam_dec=CameraDec(dim_in=width),
                             cam_enc=CameraEnc(dim_out=config["embed_dim"], num_heads=config["camera_encoder_heads"]))


def _tiny_model(case: dict[str, Any]) -> torch.nn.Module:
    if case["model_name"] is None:
        return _tiny_network(TINY)
    from depth_anything_3.model.da3 import NestedDepthAnything3Net

    nested = NestedDepthAnything3Net.__new__(NestedDepthAnything3Net)
    torch.nn.Module.__init__(nested)
    nested.da3, nested.da3_metric = _tiny_network(case["config"]["anyview"]), _tiny_network(case["config"]["metric"])
    return nested


class _EveryPixel:
    """The reference's random 100 000-pixel draws for its percentiles replaced by every pixel."""

    def __enter__(self) -> None:
        import depth_anything_3.model.da3 as da3

        self.saved = torch.randint, da3.sample_tensor_for_quantile
        torch.randint = lambda low, high, size, **kwargs: torch.arange(high, device=kwargs.get("device"))  # type: ignore[assignment]
        da3.sample_tensor_for_quantile = lambda tensor, max_samples=0: tensor

    def __exit__(self, *exc: Any) -> None:
        import depth_anything_3.model.da3 as da3

        torch.randint, da3.sample_tensor_for_quantile = self.saved


def _given_cameras(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """World-to-camera extrinsics of cameras on an arc looking at the origin, and intrinsics
    (f = 1.1 max(w, h), centred) in the original images' pixels."""
    from PIL import Image

    extrinsics, intrinsics = [], []
    for index, path in enumerate(paths):
        width, height = Image.open(path).size
        focal = 1.1 * max(width, height)
        intrinsics.append([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
        yaw = np.deg2rad(12.0 * (index - (len(paths) - 1) / 2))
        centre = np.array([3 * np.sin(yaw), -0.2 * index, -3 * np.cos(yaw)])
        forward = -centre / np.linalg.norm(centre)
        right = np.cross([0.0, 1.0, 0.0], forward)
        right /= np.linalg.norm(right)
        rotation = np.stack([right, np.cross(forward, right), forward], axis=1)  # camera-to-world
        world_to_camera = np.eye(4)
        world_to_camera[:3, :3], world_to_camera[:3, 3] = rotation.T, -rotation.T @ centre
        extrinsics.append(world_to_camera)
    return np.asarray(extrinsics, np.float32), np.asarray(intrinsics, np.float32)


def reference(case_name: str, out: Path, seed: int) -> None:
    """Build, run and save the reference (see the module doc, step 1)."""
    from depth_anything_3.api import DepthAnything3

    case = CASES[case_name]
    kind = _kind(case["model_name"])
    outputs = MONOCULAR_OUTPUTS if kind == "monocular" else ANY_VIEW_OUTPUTS
    torch.manual_seed(seed)
    tiny = case["model_name"] is None or "config" in case
    api = DepthAnything3(model_name="da3-small" if tiny else case["model_name"])
    if tiny:
        api.model = _tiny_model(case)
    _reseed(api.model, seed)
    api.eval()
    seen: dict[str, Any] = {}
    if kind == "nested":  # the metric branch's own output, before NESTED scales it
        api.model.da3_metric.register_forward_hook(
            lambda module, args, output: seen.__setitem__("metric", {key: output[key].detach().clone() for key in MONOCULAR_OUTPUTS}))

    def fp32_forward(self: Any, image: torch.Tensor, extrinsics: Any = None, intrinsics: Any = None, export_feat_layers: Any = None,
                     infer_gs: bool = False, use_ray_pose: bool = False, ref_view_strategy: str = "saddle_balanced") -> Any:
        seen["inputs"] = (image.clone(), None if extrinsics is None else extrinsics.clone(), None if intrinsics is None else intrinsics.clone())
        with torch.inference_mode(), _EveryPixel():
            started = time.perf_counter()
            output = self.model(image, extrinsics, intrinsics, [], infer_gs, use_ray_pose, ref_view_strategy)
            seen["seconds"] = time.perf_counter() - started
        seen["raw"] = {key: output[key].detach().clone() for key in outputs}
        seen["scale_factor"] = output.get("scale_factor")
        return output

    api.forward = types.MethodType(fp32_forward, api)
    paths = [DATA / name for name in IMAGES]
    given_extrinsics, given_intrinsics = _given_cameras(paths)
    arrays: dict[str, np.ndarray] = {}
    record: dict[str, Any] = {"images": IMAGES, "process_res": case["process_res"], "stride": case["stride"], "seed": seed,
                              "model_name": case["model_name"], "config": TINY if case["model_name"] is None else case.get("config"), "cases": {}}
    runs = [("nocam", "saddle_balanced", False), ("first", "first", False), ("cams", "saddle_balanced", True)]
    for name, strategy, cameras in runs[:1] if kind == "monocular" else runs[::2] if kind == "nested" else runs:
        prediction = api.inference([str(p) for p in paths], extrinsics=given_extrinsics if cameras else None,
                                   intrinsics=given_intrinsics if cameras else None, ref_view_strategy=strategy,
                                   process_res=case["process_res"], export_dir=None)
        image, extrinsics, intrinsics = seen["inputs"]
        stride = case["stride"]
        for key, value in (*seen["raw"].items(), *((f"metric_{k}", v) for k, v in seen.get("metric", {}).items())):
            value = value[0].numpy()
            arrays[f"{name}/{key}"] = value[:, ::stride, ::stride] if value.ndim == 3 and value.shape[-1] > 4 else value
        if cameras:  # what the network got, what the caller gave, and the reference's final answer
            arrays["cams/given_extrinsics"] = extrinsics[0].numpy()
            arrays["cams/given_intrinsics"] = intrinsics[0].numpy()
            arrays["cams/caller_extrinsics"], arrays["cams/caller_intrinsics"] = given_extrinsics, given_intrinsics
            arrays["cams/prediction_depth"] = np.asarray(prediction.depth)[:, ::stride, ::stride]
            arrays["cams/prediction_extrinsics"] = np.asarray(prediction.extrinsics)
            arrays["cams/prediction_intrinsics"] = np.asarray(prediction.intrinsics)
        record["cases"][name] = {"strategy": strategy, "seconds": seen["seconds"], "scale_factor": seen["scale_factor"],
                                 "input_sha256": hashlib.sha256(image.numpy().tobytes()).hexdigest()}
        arrays["input"] = image[0].numpy()  # the same for every case
        print(f"reference {case_name}/{name}: input {tuple(image.shape)}, forward {seen['seconds']:.1f} s")
    out.mkdir(parents=True, exist_ok=True)
    api.save_pretrained(str(out), config={"model_name": case["model_name"] or "tiny-test", "config": case.get("config") or {}})
    (out / "README.md").unlink(missing_ok=True)
    np.savez_compressed(out / "expected.npz", **arrays)
    (out / "cases.json").write_text(json.dumps(record, indent=2) + "\n")


def compare(folder: Path) -> dict[str, float]:
    """Our network on the folder's weights and processed images: largest relative error per output."""
    sys.path.insert(0, str(REPO))
    from scene_from_views_ros.core.checkpoint import build_network
    from scene_from_views_ros.models.networks.depth_anything_v3 import UNUSED_HEADS, da3_network, strip_model_prefix

    record = json.loads((folder / "cases.json").read_text())
    expected = np.load(folder / "expected.npz")
    kind = _kind(record["model_name"])
    network = build_network(lambda: da3_network(record["model_name"], record["config"]), folder / "model.safetensors", "cpu",
                            drop_prefixes=UNUSED_HEADS, rename=strip_model_prefix)
    metric_outputs: dict[str, torch.Tensor] = {}
    if kind == "nested":
        network.da3_metric.register_forward_hook(lambda module, args, output: metric_outputs.update(output))
    images = torch.from_numpy(expected["input"])
    errors: dict[str, float] = {}
    for name, case in record["cases"].items():
        errors[f"{name}/inputs_identical"] = float(hashlib.sha256(images[None].numpy().tobytes()).hexdigest() == case["input_sha256"])
        given = {}
        if name == "cams":
            given = {"extrinsics": torch.from_numpy(expected["cams/given_extrinsics"]), "intrinsics": torch.from_numpy(expected["cams/given_intrinsics"])}
        started = time.perf_counter()
        with torch.inference_mode():
            ours = network(images, case["strategy"], **given)
        errors[f"{name}/seconds"] = time.perf_counter() - started
        ours.update({f"metric_{key}": value for key, value in metric_outputs.items()})
        # a pixel whose sky score is within float error of the 0.3 threshold may fall on either side
        sky_key = next((f"{name}/{key}" for key in ("sky", "metric_sky") if f"{name}/{key}" in expected), None)
        borderline = np.zeros((), bool) if sky_key is None else np.abs(expected[sky_key] - 0.3) < 1e-4
        if sky_key is not None:
            errors[f"{name}/sky_borderline_pixels"] = float(borderline.sum())
        for key in ours:
            if f"{name}/{key}" not in expected:
                continue
            value = ours[key].numpy()
            if value.ndim == 3 and value.shape[-1] > 4:
                value = value[:, :: record["stride"], :: record["stride"]]
            reference_value = expected[f"{name}/{key}"]
            difference = np.abs(value - reference_value)
            if difference.shape == borderline.shape:
                errors[f"{name}/{key}_all_pixels"] = float(difference.max() / np.abs(reference_value).max())
                difference = difference[~borderline]
            errors[f"{name}/{key}"] = float(difference.max() / np.abs(reference_value).max())
        if case.get("scale_factor") is not None:
            errors[f"{name}/scale_factor"] = abs(float(ours["scale_factor"]) / case["scale_factor"] - 1)
    return errors


def main() -> None:
    parity_main(__doc__.splitlines()[0], "ByteDance-Seed/Depth-Anything-3 (its src/ folder)", CASES,
                {"reference": reference, "compare": compare})


if __name__ == "__main__":
    main()
