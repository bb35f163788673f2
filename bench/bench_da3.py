"""Time our Depth Anything 3 network against the reference's, same weights, same input, same CPU.

Interleaved timing in one process, peak memory of the forward in a child per implementation
(reference_harness.py).  A released preset with seeded random weights (tools/make_da3_fixtures.py's
draw), saved by the reference's own save_pretrained and loaded by both; 3 real images at
process_res 504 (preprocessed once; the two preprocessings are byte-identical).  Both run in true
float32: the reference's network is called directly (its `inference` autocasts to float16 even on
the CPU), with the reference view chosen by saddle_balanced.

The reference imports packages this project does not install: run this with its Python (our
package imports there too):

  /work/ref/venv-da3/bin/python bench/bench_da3.py --reference /work/ref/da3/src --stubs /work/ref/stubs-da3 --preset small
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from reference_harness import compare_workloads  # noqa: E402

IMAGES = ["notredame/1.jpeg", "notredame/2.jpeg", "notredame/3.jpeg"]


def _workloads(args: argparse.Namespace, weights: str, which: tuple[str, ...]) -> dict[str, Callable[[], object]]:
    import torch
    from make_da3_fixtures import CASES, DATA

    from scene_from_views_ros.core.checkpoint import build_network
    from scene_from_views_ros.core.images import load_images
    from scene_from_views_ros.models.depth_anything_v3 import preprocess_da3_images
    from scene_from_views_ros.models.networks.depth_anything_v3 import PRESETS, UNUSED_HEADS, DepthAnything3Net, strip_model_prefix

    sys.path[:0] = [args.reference] + ([args.stubs] if args.stubs else [])
    images = torch.cat(preprocess_da3_images(load_images([DATA / name for name in IMAGES], rgb=True), 504).tensors)
    work: dict[str, Callable[[], object]] = {}
    if "reference" in which:
        from depth_anything_3.api import DepthAnything3

        api = DepthAnything3.from_pretrained(str(Path(weights).parent)).eval()
        work["reference"] = partial(api.model, images[None], None, None, [], False, False, "saddle_balanced")
    if "ours" in which:
        cfg = PRESETS[CASES[args.preset]["model_name"]]
        ours = build_network(lambda: DepthAnything3Net(cfg), weights, "cpu", drop_prefixes=UNUSED_HEADS, rename=strip_model_prefix)
        work["ours"] = partial(ours, images, "saddle_balanced")
    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="ByteDance-Seed/Depth-Anything-3 src/ folder")
    parser.add_argument("--stubs", help="stand-ins for what the reference imports but does not use here")
    parser.add_argument("--preset", choices=("small", "large"), default="small")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import torch

    sys.path[:0] = [args.reference] + ([args.stubs] if args.stubs else [])
    from depth_anything_3.api import DepthAnything3
    from make_da3_fixtures import CASES, _reseed

    with tempfile.TemporaryDirectory() as tmp:
        model_name = CASES[args.preset]["model_name"]
        torch.manual_seed(0)
        api = DepthAnything3(model_name=model_name)
        _reseed(api.model, 0)
        api.save_pretrained(tmp, config={"model_name": model_name})
        del api
        torch.set_grad_enabled(False)
        results = compare_workloads(_workloads, args, str(Path(tmp) / "model.safetensors"))
    results["setup"] = {"preset": args.preset, "views": len(IMAGES), "process_res": 504, "runs": args.runs,
                        "threads": torch.get_num_threads(), "torch": torch.__version__}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
