"""Time our Fast3R forward against the reference's, same weights, same inputs, same CPU.

Interleaved timing in one process, peak memory of the forward in a child per implementation
(reference_harness.py).  Both run in true float32: the reference's model called directly (its
`inference(..., dtype=torch.float32)` autocasts to bfloat16 on the CPU), with the same fixed
image-index ids.  The released network takes ~2 minutes per forward of 3 views at 512 here, so
the default configuration is reduced: the released widths (ViT-L encoder, 1024-wide decoder,
full DPT heads) with 6 encoder and 10 decoder blocks; --config full runs the released depths.

The reference imports packages this project does not install: run this with its Python (our
package imports there too), as tools/make_fast3r_fixtures.py's reference step:

  /work/ref/venv-fast3r/bin/python bench/bench_fast3r.py --reference /work/ref/fast3r --stubs /work/ref/stubs-fast3r
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from reference_harness import compare_workloads  # noqa: E402

IMAGES = ["notredame/2.jpeg", "trevi/3.jpeg", "chateau/Chateau2.png", "notredame/7.jpeg", "trevi/9.jpeg", "chateau/Chateau1.png"]


def _config(args: argparse.Namespace) -> dict[str, Any]:
    from make_fast3r_fixtures import RELEASED

    if args.config == "full":
        return RELEASED
    return {**RELEASED, "encoder_args": {**RELEASED["encoder_args"], "depth": 6}, "decoder_args": {**RELEASED["decoder_args"], "depth": 10}}


def _workloads(args: argparse.Namespace, weights: str, which: tuple[str, ...]) -> dict[str, Callable[[], object]]:
    import torch
    from make_fast3r_fixtures import build_reference, fix_image_ids, reference_views

    from scene_from_views_ros.core.checkpoint import build_network, load_state_dict
    from scene_from_views_ros.models.layers.dpt_adapter import canonical_dpt_key
    from scene_from_views_ros.models.networks.fast3r import Fast3R, Fast3RConfig

    sys.path[:0] = [args.reference] + ([args.stubs] if args.stubs else [])
    views = reference_views(IMAGES[: args.views], args.size)
    ids = list(range(args.views))
    work: dict[str, Callable[[], object]] = {}
    if "reference" in which:
        reference = build_reference(_config(args), seed=0)
        missing, unexpected = reference.load_state_dict(load_state_dict(weights), strict=False)
        if unexpected or any(".scratch.layer_rn." not in key for key in missing):  # the DPT aliases fill with their twins
            raise RuntimeError(f"weights do not fit the reference: missing {missing[:4]}, unexpected {unexpected[:4]}")
        fix_image_ids(reference, ids)
        work["reference"] = partial(reference, views)
    if "ours" in which:
        cfg = Fast3RConfig.from_hub_config(_config(args))
        ours = build_network(lambda: Fast3R(cfg), weights, "cpu", rename=canonical_dpt_key)
        work["ours"] = partial(ours, [view["img"] for view in views], torch.tensor(ids))
    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="facebookresearch/fast3r checkout")
    parser.add_argument("--stubs", help="stand-ins for what the reference imports but does not use here")
    parser.add_argument("--config", choices=("reduced", "full"), default="reduced")
    parser.add_argument("--views", type=int, default=3, choices=range(1, len(IMAGES) + 1))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import torch
    from make_fast3r_fixtures import build_reference

    sys.path[:0] = [args.reference] + ([args.stubs] if args.stubs else [])
    from safetensors.torch import save_model

    with tempfile.TemporaryDirectory() as tmp:
        weights = str(Path(tmp) / "model.safetensors")
        save_model(build_reference(_config(args), seed=0), weights)
        torch.set_grad_enabled(False)
        results = compare_workloads(_workloads, args, weights)
    config = _config(args)
    results["setup"] = {"config": args.config, "enc_depth": config["encoder_args"]["depth"], "dec_depth": config["decoder_args"]["depth"],
                        "views": args.views, "image_size": args.size, "runs": args.runs, "threads": torch.get_num_threads(),
                        "torch": torch.__version__}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
