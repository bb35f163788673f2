"""Fleet mapping: wall time for N recordings, sequential in-process against Ray, in one command.

N recordings (copies of ../shared/data/robot_unitree.mp4 under other names, so every one is
the same work) are mapped with the tiny VGGT fixture, first one after another in this process
(one model, `--threads T`), then on an embedded Ray with W model replicas of T threads each.
Reported: both wall times and their ratio, and Ray's start-up overhead (ray.init plus the
replicas loading their model, timed on their own), which a long fleet run pays once.

On this 2-core machine W=2 replicas of 1 thread can at best halve the time; the fixed start-up
cost (several seconds) decides for short fleets.  On a cluster with GPUs the same command with
`--ray auto --gpus-per-worker 1` runs one replica per GPU: recordings are independent, so the
mapping time scales with the number of GPUs until the driver (reading, keyframing, chaining and
writing, a few percent of a window's reconstruction on a GPU) or the storage becomes the limit.

Run:  python bench/bench_fleet.py [--recordings 4] [--workers 2] [--threads 1] [--seconds 12]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scene_from_views_ros.cli.fleet_ray import RayFleet
from scene_from_views_ros.cli.map import build_parser, collect_parameters, main

REPO = Path(__file__).resolve().parents[1]
VIDEO = REPO.parent / "shared" / "data" / "robot_unitree.mp4"
TINY = REPO / "test" / "fixtures" / "vggt_tiny"


def timed_run(arguments: list[str]) -> float:
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(arguments)
    if code != 0:
        raise SystemExit(f"the run failed ({code}): {' '.join(arguments)}")
    return time.perf_counter() - started


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recordings", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=12.0, help="seconds of video per recording")
    args = parser.parse_args()
    import ray

    work = Path(tempfile.mkdtemp(prefix="bench_fleet_"))
    try:
        inputs = []
        for index in range(args.recordings):
            inputs.append(str(shutil.copy(VIDEO, work / f"robot_{index}.mp4")))
        common = [*inputs, "--checkpoint", str(TINY / "weights.safetensors"), "--model-arg", f"config={TINY / 'config.json'}",
                  "-p", "model.target_size=70", "--device", "cpu", "--min-change", "0", "--window-size", "8", "--window-overlap", "2",
                  "--end", str(args.seconds), "--keyframe-files", "none", "-q"]
        sequential = timed_run([*common, "--out", str(work / "sequential"), "--threads", str(args.threads)])

        ray.init(num_cpus=args.workers * args.threads, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        try:
            fleet_args = build_parser().parse_args([*common, "--ray", "--workers", str(args.workers), "--cpus-per-worker", str(args.threads)])
            started = time.perf_counter()
            RayFleet(fleet_args, collect_parameters(fleet_args)).close()  # replicas started, models loaded, stopped
            replicas_s = time.perf_counter() - started
            on_ray = timed_run([*common, "--out", str(work / "ray"), "--ray", "--workers", str(args.workers),
                                "--cpus-per-worker", str(args.threads)])
        finally:
            ray.shutdown()
        started = time.perf_counter()
        ray.init(num_cpus=args.workers * args.threads, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        init_s = time.perf_counter() - started
        ray.shutdown()
        frames = sum(row["frames"] for row in json.loads((work / "ray" / "fleet.json").read_text())["recordings"])
        print(json.dumps({
            "recordings": args.recordings, "frames": frames, "workers": args.workers, "threads_per_worker": args.threads,
            "sequential_s": round(sequential, 2), "ray_s": round(on_ray, 2), "ray_over_sequential": round(on_ray / sequential, 3),
            "ray_startup_s": round(init_s + replicas_s, 2), "ray_init_s": round(init_s, 2), "replicas_ready_s": round(replicas_s, 2),
            "ray_without_startup_over_sequential": round((on_ray - replicas_s) / sequential, 3),
        }, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main_bench()
