"""Time our VGGT forward against the reference implementation's, same weights, same CPU.

Interleaved timing in one process, peak forward memory in a child per implementation
(reference_harness.py).  The reference checkout is not part of the repo: pass --reference (and --stubs for a
torchvision stand-in).

  python bench/bench_vggt.py --reference /work/ref/RobustVGGT --stubs /work/ref/stubs --config medium
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from reference_harness import compare, forward_peak_mib, interleaved_times  # noqa: E402


def _configs():
    from make_vggt_fixtures import TINY_CONFIG

    from scene_from_views_ros.models.networks.vggt import DptConfig, VggtConfig

    medium = VggtConfig(
        embed_dim=384, depth=12, num_heads=6, encoder_depth=12, encoder_num_heads=6, camera_num_heads=6,
        dpt=DptConfig(features=128, out_channels=(96, 192, 384, 384), intermediate_layer_idx=(2, 5, 8, 11)),
    )
    return {"tiny": TINY_CONFIG, "medium": medium, "full": VggtConfig()}


def _child(which: str, args: argparse.Namespace, weights: str, queue) -> None:
    import torch
    from make_vggt_fixtures import build_reference, import_reference

    from scene_from_views_ros.core.checkpoint import load_checkpoint_into, load_state_dict
    from scene_from_views_ros.models.networks.vggt import VGGT

    import_reference(args.reference, args.stubs)
    torch.set_grad_enabled(False)
    cfg = _configs()[args.config]
    if which == "reference":
        model = build_reference(cfg).eval()
        model.load_state_dict(load_state_dict(weights), strict=True)
    else:
        model = VGGT(cfg).eval()
        load_checkpoint_into(model, weights)
    images = _images(args)
    with torch.inference_mode():
        queue.put(forward_peak_mib(lambda: model(images)))


def _images(args: argparse.Namespace):
    from make_vggt_fixtures import load_inputs

    names = [f"notredame/{i % 12 + 1}.jpeg" for i in range(args.frames)]
    return torch_from_u8(load_inputs(names, args.size))


def torch_from_u8(array):
    import torch

    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div(255)


def _interleaved_times(args: argparse.Namespace, weights: str) -> dict[str, list[float]]:
    import torch
    from make_vggt_fixtures import build_reference

    from scene_from_views_ros.core.checkpoint import load_checkpoint_into, load_state_dict
    from scene_from_views_ros.models.networks.vggt import VGGT

    cfg = _configs()[args.config]
    reference = build_reference(cfg).eval()
    reference.load_state_dict(load_state_dict(weights), strict=True)
    ours = VGGT(cfg).eval()
    load_checkpoint_into(ours, weights)
    images = _images(args)
    with torch.inference_mode():
        return interleaved_times({"reference": lambda: reference(images), "ours": lambda: ours(images)}, args.runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True)
    parser.add_argument("--stubs")
    parser.add_argument("--config", choices=("tiny", "medium", "full"), default="medium")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=224, help="target_size (crop mode)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    import torch
    from make_vggt_fixtures import build_reference, import_reference, perturb_
    from safetensors.torch import save_file

    import_reference(args.reference, args.stubs)
    with tempfile.TemporaryDirectory() as tmp:
        weights = str(Path(tmp) / "weights.safetensors")
        torch.manual_seed(0)
        reference = build_reference(_configs()[args.config])
        perturb_(reference, 0)
        save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, weights)
        del reference
        torch.set_grad_enabled(False)
        results = compare(_child, (args, weights), lambda: _interleaved_times(args, weights))
    results["setup"] = {"config": args.config, "frames": args.frames, "target_size": args.size, "runs": args.runs,
                        "threads": torch.get_num_threads(), "torch": torch.__version__}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
