"""Time our MV-DUSt3R / MV-DUSt3R+ forward against the reference's, same weights, same views, same CPU.

Interleaved timing in one process, peak memory of the forward in a child per implementation
(reference_harness.py).  The released architecture with seeded random weights (made by
tools/make_mvdust3r_fixtures.py's builder, the official .pth layout); both in float32 (the
reference runs without autocast on this path; on the CPU its TF32 switch does nothing), BatchNorm
in eval mode.  The reference is called as its demo calls it, on the demo's reordering of the
views; ours is `infer` (the reordering, the forward and putting the outputs back in order).
MV-DUSt3R+ runs the point heads of every reference path in the reference (the demo reads path 0);
ours runs path 0's only.

The reference imports packages this project does not install: run this with its Python (our
package imports there too):

  /work/ref/venv-mvdust3r/bin/python bench/bench_mvdust3r.py --reference /work/ref/mvdust3r --stubs /work/ref/stubs-mvdust3r
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from argparse import Namespace
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from reference_harness import compare_workloads  # noqa: E402

IMAGES = ["notredame/2.jpeg", "trevi/3.jpeg", "chateau/Chateau2.png", "notredame/7.jpeg", "trevi/9.jpeg", "chateau/Chateau1.png",
          "notredame/11.jpeg", "trevi/2.jpeg"]


def _constructor(variant: str) -> str:
    from make_mvdust3r_fixtures import MULTI_REFERENCE, RELEASED

    return RELEASED if variant == "MVD" else RELEASED[:-1] + MULTI_REFERENCE


def _workloads(args: argparse.Namespace, weights: str, which: tuple[str, ...]) -> dict[str, Callable[[], object]]:
    from make_mvdust3r_fixtures import DATA, build_reference, demo_order, reference_views

    from scene_from_views_ros.core.checkpoint import load_state_dict
    from scene_from_views_ros.core.factory import scene_from_views_factory
    from scene_from_views_ros.core.images import load_images

    sys.path[:0] = ([args.stubs] if args.stubs else []) + [args.reference]
    names = IMAGES[: args.views]
    work: dict[str, Callable[[], object]] = {}
    if "reference" in which:
        reference = build_reference(_constructor(args.variant), 256, seed=0)
        reference.load_state_dict(load_state_dict(weights), strict=True)
        views = reference_views(names)
        ordered = [views[i] for i in demo_order(len(views))]
        work["reference"] = partial(reference, ordered[0], ordered[1:])
    if "ours" in which:
        ours = scene_from_views_factory("mvdust3r", device="cpu", checkpoint=weights)
        processed = ours.preprocess_images(load_images([DATA / name for name in names], rgb=True))
        work["ours"] = partial(ours.infer, processed)
    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="facebookresearch/mvdust3r checkout")
    parser.add_argument("--stubs", help="stand-ins for what the reference imports but does not use here")
    parser.add_argument("--variant", choices=("MVD", "MVDp"), default="MVDp")
    parser.add_argument("--views", type=int, default=4, choices=range(2, len(IMAGES) + 1))
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()

    import torch

    sys.path[:0] = ([args.stubs] if args.stubs else []) + [args.reference]
    from make_mvdust3r_fixtures import build_reference

    with tempfile.TemporaryDirectory() as tmp:
        weights = str(Path(tmp) / f"{args.variant}.pth")
        model = build_reference(_constructor(args.variant), 256, seed=0)
        torch.save({"model": model.state_dict(), "args": Namespace(model=_constructor(args.variant))}, weights)
        del model
        torch.set_grad_enabled(False)
        results = compare_workloads(_workloads, args, weights)
    results["setup"] = {"variant": args.variant, "views": args.views, "image_size": 224, "runs": args.runs,
                        "threads": torch.get_num_threads(), "torch": torch.__version__}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
