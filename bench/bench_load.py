"""Time and memory of building VGGT-1B from its safetensors file, against reading that file.

The full released architecture (track head included in the file, as facebook/VGGT-1B has
it) with seeded random float32 weights is written once to --file (5.0 GB).  Then, each in a
fresh process so that peak resident memory (VmHWM) is the step's own, interleaved over
--repeats rounds after one warm-up read (the file then sits in the page cache for all):

* read:  ``path.read_bytes()``, the whole file into memory (the least any loader must do;
  the fastest of the plain ways measured here);
* build: ``scene_from_views_factory("vggt", checkpoint=file, device="cpu")``, the path the
  node and the CLI take (network built on the meta device, weights read into place);
* eager (with --eager): what this package did before: build the network with initialised
  parameters, read the file into a state dict, copy it in.

Reported: median seconds of each, build/read time ratio, and peak resident memory of each
process relative to the file size.  Exit status 1 when build/read > --max-time-ratio or the
build's peak memory / file size > --max-memory-ratio.

  .venv/bin/python bench/bench_load.py --repeats 3 --eager
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FILE = Path.home() / ".cache" / "scene_from_views_bench" / "vggt1b_random.safetensors"


def _peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not in /proc/self/status")


def write_file(path: Path) -> None:
    """Seeded random weights for every key of the released VGGT-1B (track head included)."""
    import torch
    from safetensors.torch import save_file

    from scene_from_views_ros.models.networks.vggt import VGGT, VggtConfig

    with torch.device("meta"):
        network = VGGT(VggtConfig(), build_track_head=True)
    generator = torch.Generator().manual_seed(0)
    state = {name: torch.randn(tensor.shape, generator=generator) * 0.02 for name, tensor in network.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    save_file(state, str(partial))
    partial.rename(path)


def step(kind: str, path: Path) -> dict[str, float]:
    """One measured step in this (fresh) process."""
    started = time.perf_counter()
    if kind == "read":
        data = path.read_bytes()
        assert len(data) == path.stat().st_size
    elif kind == "build":
        import torch

        from scene_from_views_ros import scene_from_views_factory

        torch.set_grad_enabled(False)
        started = time.perf_counter()  # the import of torch is not part of loading
        model = scene_from_views_factory("vggt", checkpoint=str(path), device="cpu")
        assert sum(p.numel() for p in model.network.parameters()) > 1_000_000_000
    elif kind == "eager":
        import torch

        from scene_from_views_ros.core.checkpoint import load_state_dict_strict
        from scene_from_views_ros.models.networks.vggt import VGGT, VggtConfig

        torch.set_grad_enabled(False)
        started = time.perf_counter()
        from safetensors.torch import load_file

        network = VGGT(VggtConfig(), build_track_head=False)
        load_state_dict_strict(network, load_file(str(path)), drop_prefixes=(VGGT.TRACK_HEAD_PREFIX,))
    else:
        raise ValueError(kind)
    return {"seconds": time.perf_counter() - started, "peak_rss_bytes": _peak_rss_bytes()}


def run_step(kind: str, path: Path) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, __file__, "--step", kind, "--file", str(path)], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE, help=f"weight file (written if missing; default {DEFAULT_FILE})")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eager", action="store_true", help="also measure the former eager build")
    parser.add_argument("--max-time-ratio", type=float, default=1.5)
    parser.add_argument("--max-memory-ratio", type=float, default=1.2)
    parser.add_argument("--step", choices=("read", "build", "eager"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        print(json.dumps(step(args.step, args.file)))
        return 0
    if not args.file.is_file():
        print(f"writing {args.file} ...", file=sys.stderr)
        write_file(args.file)
    size = args.file.stat().st_size
    kinds = ["read", "build"] + (["eager"] if args.eager else [])
    run_step("read", args.file)  # warm-up: the file is in the page cache for every measured step
    results: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    for _ in range(args.repeats):
        for kind in kinds:
            results[kind].append(run_step(kind, args.file))
    summary = {"file_gb": size / 1e9}
    for kind in kinds:
        summary[f"{kind}_s"] = statistics.median(r["seconds"] for r in results[kind])
        summary[f"{kind}_peak_rss_per_file"] = max(r["peak_rss_bytes"] for r in results[kind]) / size
    summary["build_per_read_time"] = summary["build_s"] / summary["read_s"]
    if args.eager:
        summary["eager_per_read_time"] = summary["eager_s"] / summary["read_s"]
    for key, value in summary.items():
        print(f"{key:28s} {value:8.3f}")
    ok = summary["build_per_read_time"] <= args.max_time_ratio and summary["build_peak_rss_per_file"] <= args.max_memory_ratio
    print("ok" if ok else f"FAILED: limits are time ratio {args.max_time_ratio}, memory ratio {args.max_memory_ratio}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
