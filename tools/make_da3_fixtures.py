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
  /work/ref/venv-da3/bin/python tools/make_da3_fixtures.py reference small ... --out /tmp/da3_small
  .venv/bin/python tools/make_da3_fixtures.py compare /tmp/da3_small

The tiny network keeps the code paths (alternating attention from block 2, QK-norm and RoPE,
reference-view selection, the camera encoder and decoder, DualDPT) with narrow widths, built from
the reference's own modules; the released presets are built by model name.  Weights: every
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
CASES: dict[str, dict[str, Any]] = {
    "tiny": {"model_name": None, "process_res": 112, "stride": 2},
    "small": {"model_name": "da3-small", "process_res": 504, "stride": 1},
    "large": {"model_name": "da3-large", "process_res": 504, "stride": 1},
}
OUTPUTS = ("depth", "depth_conf", "extrinsics", "intrinsics")


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


def _tiny_network() -> torch.nn.Module:
    """The reference's DepthAnything3Net assembled from its own modules at the TINY widths."""
    from depth_anything_3.model.cam_dec import CameraDec
    from depth_anything_3.model.cam_enc import CameraEnc
    from depth_anything_3.model.da3 import DepthAnything3Net
    from depth_anything_3.model.dinov2.dinov2 import DinoV2
    from depth_anything_3.model.dinov2.vision_transformer import DinoVisionTransformer
    from depth_anything_3.model.dualdpt import DualDPT

    start = TINY["alt_start"]
    backbone = DinoV2("vits", out_layers=TINY["out_layers"], alt_start=start, qknorm_start=start, rope_start=start, cat_token=True)
    backbone.pretrained = DinoVisionTransformer(
        img_size=518, patch_size=14, embed_dim=TINY["embed_dim"], depth=TINY["depth"], num_heads=TINY["num_heads"], mlp_ratio=4,
        ffn_layer="mlp", alt_start=start, qknorm_start=start, rope_start=start, cat_token=True,
    )
    width = 2 * TINY["embed_dim"]
    head = DualDPT(dim_in=width, output_dim=2, features=TINY["head_features"], out_channels=TINY["head_out_channels"])
    return DepthAnything3Net(net=backbone, head=head, cam_dec=CameraDec(dim_in=width),
                             cam_enc=CameraEnc(dim_out=TINY["embed_dim"], num_heads=TINY["camera_encoder_heads"]))


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
    torch.manual_seed(seed)
    api = DepthAnything3(model_name=case["model_name"] or "da3-small")
    if case["model_name"] is None:
        api.model = _tiny_network()
    _reseed(api.model, seed)
    api.eval()
    seen: dict[str, Any] = {}

    def fp32_forward(self: Any, image: torch.Tensor, extrinsics: Any = None, intrinsics: Any = None, export_feat_layers: Any = None,
                     infer_gs: bool = False, use_ray_pose: bool = False, ref_view_strategy: str = "saddle_balanced") -> Any:
        seen["inputs"] = (image.clone(), None if extrinsics is None else extrinsics.clone(), None if intrinsics is None else intrinsics.clone())
        with torch.inference_mode():
            started = time.perf_counter()
            output = self.model(image, extrinsics, intrinsics, [], infer_gs, use_ray_pose, ref_view_strategy)
            seen["seconds"] = time.perf_counter() - started
        seen["raw"] = {key: output[key].detach().clone() for key in OUTPUTS}
        return output

    api.forward = types.MethodType(fp32_forward, api)
    paths = [DATA / name for name in IMAGES]
    given_extrinsics, given_intrinsics = _given_cameras(paths)
    arrays: dict[str, np.ndarray] = {}
    record: dict[str, Any] = {"images": IMAGES, "process_res": case["process_res"], "stride": case["stride"], "seed": seed,
                              "model_name": case["model_name"], "config": TINY if case["model_name"] is None else None, "cases": {}}
    for name, strategy, cameras in (("nocam", "saddle_balanced", False), ("first", "first", False), ("cams", "saddle_balanced", True)):
        prediction = api.inference([str(p) for p in paths], extrinsics=given_extrinsics if cameras else None,
                                   intrinsics=given_intrinsics if cameras else None, ref_view_strategy=strategy,
                                   process_res=case["process_res"], export_dir=None)
        image, extrinsics, intrinsics = seen["inputs"]
        stride = case["stride"]
        for key, value in seen["raw"].items():
            value = value[0].numpy()
            arrays[f"{name}/{key}"] = value[:, ::stride, ::stride] if key.startswith("depth") else value
        if cameras:  # what the network got, what the caller gave, and the reference's final answer
            arrays["cams/given_extrinsics"] = extrinsics[0].numpy()
            arrays["cams/given_intrinsics"] = intrinsics[0].numpy()
            arrays["cams/caller_extrinsics"], arrays["cams/caller_intrinsics"] = given_extrinsics, given_intrinsics
            arrays["cams/prediction_depth"] = np.asarray(prediction.depth)[:, ::stride, ::stride]
            arrays["cams/prediction_extrinsics"] = np.asarray(prediction.extrinsics)
            arrays["cams/prediction_intrinsics"] = np.asarray(prediction.intrinsics)
        record["cases"][name] = {"strategy": strategy, "seconds": seen["seconds"],
                                 "input_sha256": hashlib.sha256(image.numpy().tobytes()).hexdigest()}
        arrays["input"] = image[0].numpy()  # the same for every case
        print(f"reference {case_name}/{name}: input {tuple(image.shape)}, forward {seen['seconds']:.1f} s")
    out.mkdir(parents=True, exist_ok=True)
    api.save_pretrained(str(out), config={"model_name": case["model_name"] or "tiny-test", "config": {}})
    (out / "README.md").unlink(missing_ok=True)
    np.savez_compressed(out / "expected.npz", **arrays)
    (out / "cases.json").write_text(json.dumps(record, indent=2) + "\n")


def compare(folder: Path) -> dict[str, float]:
    """Our network on the folder's weights and processed images: largest relative error per output."""
    sys.path.insert(0, str(REPO))
    from scene_from_views_ros.core.checkpoint import build_network
    from scene_from_views_ros.models.networks.depth_anything_v3 import (
        PRESETS,
        UNUSED_HEADS,
        Da3Config,
        DepthAnything3Net,
        strip_model_prefix,
    )

    record = json.loads((folder / "cases.json").read_text())
    expected = np.load(folder / "expected.npz")
    cfg = PRESETS[record["model_name"]] if record["model_name"] else Da3Config(**{
        k: tuple(v) if isinstance(v, list) else v for k, v in record["config"].items()})
    network = build_network(lambda: DepthAnything3Net(cfg), folder / "model.safetensors", "cpu", drop_prefixes=UNUSED_HEADS,
                            rename=strip_model_prefix)
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
        for key in OUTPUTS:
            value = ours[key].numpy()
            if key.startswith("depth"):
                value = value[:, :: record["stride"], :: record["stride"]]
            reference_value = expected[f"{name}/{key}"]
            errors[f"{name}/{key}"] = float(np.abs(value - reference_value).max() / np.abs(reference_value).max())
    return errors


def main() -> None:
    parity_main(__doc__.splitlines()[0], "ByteDance-Seed/Depth-Anything-3 (its src/ folder)", CASES,
                {"reference": reference, "compare": compare})


if __name__ == "__main__":
    main()
