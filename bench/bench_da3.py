"""Time our Depth Anything 3 network against the reference's, same weights, same input, same CPU;
and (`--window-table`) our time per mapping window.

Against the reference: interleaved timing in one process, peak memory of the forward in a child
per implementation (reference_harness.py).  A released variant with seeded random weights
(tools/make_da3_fixtures.py's draw), saved by the reference's own save_pretrained and loaded by
both; 3 real images at process_res 504 (preprocessed once; the two preprocessings are
byte-identical).  Both run in true float32: the reference's network is called directly (its
`inference` autocasts to float16 even on the CPU), with the reference view chosen by
saddle_balanced; the reference draws its sky/confidence percentiles from 100 000 pixels, ours are
exact.

Window table: our whole `reconstruct` (preprocessing, network, points) on windows of 4 and 8
frames of ../shared/data/robot_unitree.mp4 (1024x576 -> 504x280), seeded random weights.

The reference imports packages this project does not install: run this with its Python (our
package imports there too):

  /work/ref/venv-da3/bin/python bench/bench_da3.py --reference /work/ref/da3/src --stubs /work/ref/stubs-da3 --preset small
  /work/ref/venv-da3/bin/python bench/bench_da3.py --reference /work/ref/da3/src --stubs /work/ref/stubs-da3 --window-table small,large
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
    from scene_from_views_ros.models.networks.depth_anything_v3 import UNUSED_HEADS, da3_network, strip_model_prefix

    sys.path[:0] = [args.reference] + ([args.stubs] if args.stubs else [])
    images = torch.cat(preprocess_da3_images(load_images([DATA / name for name in IMAGES], rgb=True), 504).tensors)
    work: dict[str, Callable[[], object]] = {}
    if "reference" in which:
        from depth_anything_3.api import DepthAnything3

        api = DepthAnything3.from_pretrained(str(Path(weights).parent)).eval()
        work["reference"] = partial(api.model, images[None], None, None, [], False, False, "saddle_balanced")
    if "ours" in which:
        model_name = CASES[args.preset]["model_name"]
        ours = build_network(lambda: da3_network(model_name), weights, "cpu", drop_prefixes=UNUSED_HEADS, rename=strip_model_prefix)
        work["ours"] = partial(ours, images, "saddle_balanced")
    return work


def window_table(presets: list[str], sizes: tuple[int, ...] = (4, 8), runs: int = 2) -> dict[str, dict[str, float]]:
    """Seconds of our `reconstruct` per window (median of `runs` after a warm-up), per preset and window size."""
    import statistics
    import time

    import cv2
    import torch
    from make_da3_fixtures import CASES, DATA, _reseed
    from safetensors.torch import save_file

    from scene_from_views_ros import scene_from_views_factory
    from scene_from_views_ros.models.networks.depth_anything_v3 import da3_network

    video = cv2.VideoCapture(str(DATA / "robot_unitree.mp4"))
    frames = []
    while len(frames) < max(sizes):
        ok, frame = video.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        for _ in range(9):  # every 10th frame, as keyframes would be
            video.grab()
    table: dict[str, dict[str, float]] = {}
    for preset in presets:
        model_name = CASES[preset]["model_name"]
        with tempfile.TemporaryDirectory() as tmp:
            network = da3_network(model_name)
            _reseed(network, 0)
            save_file({f"model.{k}": v.contiguous() for k, v in network.state_dict().items()}, str(Path(tmp) / "model.safetensors"))
            (Path(tmp) / "config.json").write_text(json.dumps({"model_name": model_name}))
            del network
            model = scene_from_views_factory("depth_anything_v3", device="cpu", checkpoint=tmp)
        row = {}
        for size in sizes:
            model.reconstruct(frames[:size], rgb=True, as_pointcloud=False)
            seconds = []
            for _ in range(runs):
                started = time.perf_counter()
                model.reconstruct(frames[:size], rgb=True, as_pointcloud=False)
                seconds.append(time.perf_counter() - started)
            row[f"{size} views"] = statistics.median(seconds)
        table[preset] = row
        print(preset, row, f"threads {torch.get_num_threads()}", flush=True)
        del model
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="ByteDance-Seed/Depth-Anything-3 src/ folder")
    parser.add_argument("--stubs", help="stand-ins for what the reference imports but does not use here")
    parser.add_argument("--preset", choices=("small", "base", "large", "giant", "metric", "mono", "nested"), default="small")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window-table", help="comma-separated presets (small,large): our time per window instead")
    args = parser.parse_args()

    import torch

    sys.path[:0] = [args.reference] + ([args.stubs] if args.stubs else [])
    if args.window_table:
        torch.set_grad_enabled(False)
        print(json.dumps(window_table(args.window_table.split(",")), indent=1))
        return
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
