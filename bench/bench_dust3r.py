"""Time our DUSt3R/MASt3R pair forward against the reference's, same weights, same CPU.

Interleaved timing of one image pair's forward (or, with --window N, of a window's pair
inference as each library runs it) in one process, peak memory in a child per
implementation (reference_harness.py).

The released networks take ~16 s per 512 pair here, so the default configuration is
reduced: the released widths (ViT-L encoder, ViT-B decoders, the full DPT) with 6 encoder
and 10 decoder blocks; --config full runs the released depths.  The reference checkout is
not part of the repo: pass --reference (a naver/mast3r checkout with its submodules) and
--stubs (a torchvision stand-in) as for tools/make_dust3r_fixtures.py.

  python bench/bench_dust3r.py --reference /work/ref/mast3r --stubs /work/ref/stubs --family dust3r
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from reference_harness import compare_workloads  # noqa: E402


def _config(args: argparse.Namespace):
    from make_dust3r_fixtures import FULL

    full = FULL["mast3r_512_catmlpdpt" if args.family == "mast3r" else "dust3r_512_dpt"]
    return full if args.config == "full" else replace(full, enc_depth=6, dec_depth=10)


def _networks(args: argparse.Namespace, weights: str, which: tuple[str, ...]):
    """The reference and/or our network, both filled from `weights`."""
    from make_dust3r_fixtures import build_reference, import_reference

    from scene_from_views_ros.core.checkpoint import build_network, load_state_dict
    from scene_from_views_ros.models.layers.dpt_adapter import canonical_dpt_key
    from scene_from_views_ros.models.networks.croco_stereo import CroCoStereo

    import_reference(args.reference, args.stubs)
    cfg = _config(args)
    networks = {}
    if "reference" in which:
        reference = build_reference(cfg, seed=0)
        missing, unexpected = reference.load_state_dict(load_state_dict(weights), strict=False)
        if unexpected or any(".scratch.layer_rn." not in key for key in missing):  # the DPT aliases fill with their twins
            raise RuntimeError(f"weights do not fit the reference: missing {missing[:4]}, unexpected {unexpected[:4]}")
        networks["reference"] = reference.eval()
    if "ours" in which:
        networks["ours"] = build_network(lambda: CroCoStereo(cfg), weights, "cpu", rename=canonical_dpt_key)
    return networks


WINDOW_IMAGES = ("chateau/Chateau1.png", "chateau/Chateau2.png", "notredame/3.jpeg", "trevi/14.jpeg", "notredame/12.jpeg", "trevi/9.jpeg")


def _workloads(args: argparse.Namespace, weights: str, which: tuple[str, ...]) -> dict[str, Callable[[], object]]:
    """What is measured, per implementation: one pair's forward (default), or with --window N
    the pair inference of a window of N views over the complete graph, batch_size 8, as each
    library runs it (ours encodes each view once; the reference encodes each pair's views)."""
    from make_dust3r_fixtures import probe_batch, read_inputs, reference_views

    networks = _networks(args, weights, which)
    names = WINDOW_IMAGES[: args.window] if args.window else WINDOW_IMAGES[:2]
    images = read_inputs(names)
    views = reference_views(images, args.size, False, 16)
    work: dict[str, Callable[[], object]] = {}
    if not args.window:
        view1, view2 = probe_batch(views)
        if "reference" in networks:
            work["reference"] = partial(networks["reference"], view1, view2)
        if "ours" in networks:
            work["ours"] = partial(networks["ours"], view1["img"], view2["img"])
        return work
    if "reference" in networks:
        from dust3r.image_pairs import make_pairs
        from dust3r.inference import inference

        pairs = make_pairs(views, scene_graph="complete", prefilter=None, symmetrize=True)
        work["reference"] = partial(inference, pairs, networks["reference"], "cpu", batch_size=8, verbose=False)
    if "ours" in networks:
        from scene_from_views_ros.models.dust3r import SceneFromViewsDust3r, SceneFromViewsMast3r

        model_class = SceneFromViewsMast3r if args.family == "mast3r" else SceneFromViewsDust3r
        model = model_class(checkpoint=weights, config=_config(args), device="cpu")
        processed = model.preprocess_images(images, image_size=args.size)
        work["ours"] = partial(model.infer, processed, scene_graph="complete", batch_size=8)
    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True)
    parser.add_argument("--stubs")
    parser.add_argument("--family", choices=("dust3r", "mast3r"), default="dust3r")
    parser.add_argument("--config", choices=("reduced", "full"), default="reduced")
    parser.add_argument("--size", type=int, default=512, help="image_size of the pair (512: 512x384)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--window", type=int, default=0, choices=range(0, len(WINDOW_IMAGES) + 1), metavar="N",
                        help=f"measure a window of N views (2..{len(WINDOW_IMAGES)}, complete graph) instead of one pair")
    args = parser.parse_args()

    import torch
    from make_dust3r_fixtures import build_reference, import_reference
    from safetensors.torch import save_file

    import_reference(args.reference, args.stubs)
    with tempfile.TemporaryDirectory() as tmp:
        weights = str(Path(tmp) / "weights.safetensors")
        reference = build_reference(_config(args), seed=0)
        save_file({k: v.contiguous() for k, v in reference.state_dict().items() if ".scratch.layer_rn." not in k}, weights)
        del reference
        torch.set_grad_enabled(False)
        results = compare_workloads(_workloads, args, weights)
    cfg = _config(args)
    results["setup"] = {"family": args.family, "config": args.config, "enc_depth": cfg.enc_depth, "dec_depth": cfg.dec_depth,
                        "work": f"window of {args.window} views, complete graph" if args.window else "one pair forward",
                        "image_size": args.size, "runs": args.runs, "threads": torch.get_num_threads(),
                        "torch": torch.__version__}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
