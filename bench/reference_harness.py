"""The measuring part shared by the benches that pit our networks against a reference.

Timing: both networks in one process, forwards interleaved (reference, ours, reference,
...) after a warm-up each, so that load from other processes hits both alike; medians of
the runs and the ratio ours/reference.  Memory: each implementation in its own spawned
child runs one forward; the peak resident memory the forward adds (VmHWM reset after
loading, minus VmRSS before).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

IMPLEMENTATIONS = ("reference", "ours")


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def forward_peak_mib(forward: Callable[[], Any]) -> float:
    """Peak resident memory (MiB) that `forward()` adds to this process."""
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter (VmHWM)
    before = status_kib("VmRSS")
    forward()
    return (status_kib("VmHWM") - before) / 1024


def interleaved_times(forwards: dict[str, Callable[[], Any]], runs: int) -> dict[str, list[float]]:
    """Seconds of each forward, `runs` times each, interleaved after one warm-up each."""
    for forward in forwards.values():
        forward()
    times: dict[str, list[float]] = {name: [] for name in forwards}
    for _ in range(runs):
        for name, forward in forwards.items():
            start = time.perf_counter()
            forward()
            times[name].append(time.perf_counter() - start)
    return times


def compare(child: Callable[..., None], child_args: tuple, times: Callable[[], dict[str, list[float]]]) -> dict[str, Any]:
    """Peak memory of each implementation (`child(which, *child_args, queue)` in a spawned
    process puts its forward's peak MiB on the queue), then `times()`; with the ratios."""
    # A fixed mmap threshold stops glibc from adapting it to earlier frees (weight loading),
    # which would otherwise make each child's peak RSS depend on its loading history.
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(128 * 1024))
    context = mp.get_context("spawn")
    results: dict[str, Any] = {}
    for which in IMPLEMENTATIONS:
        queue = context.Queue()
        process = context.Process(target=child, args=(which, *child_args, queue))
        process.start()
        results[which] = {"peak_forward_mib": queue.get()}
        process.join()
    for which, measured in times().items():
        results[which].update(median_s=statistics.median(measured), min_s=min(measured), times_s=measured)
    results["ratio_time_ours_over_reference"] = results["ours"]["median_s"] / results["reference"]["median_s"]
    results["ratio_min_time_ours_over_reference"] = results["ours"]["min_s"] / results["reference"]["min_s"]
    results["ratio_peak_ours_over_reference"] = results["ours"]["peak_forward_mib"] / max(results["reference"]["peak_forward_mib"], 1e-9)
    return results


# What both sides of a bench measure, given `workloads(args, weights, which) -> {name: forward}`.
Workloads = Callable[[Any, str, tuple[str, ...]], dict[str, Callable[[], object]]]


def workload_peak(workloads: Workloads, which: str, args: Any, weights: str, queue: Any) -> None:
    """Child of `compare`: the peak memory of implementation `which`'s forward."""
    import torch

    torch.set_grad_enabled(False)
    work = workloads(args, weights, (which,))[which]
    with torch.inference_mode():
        queue.put(forward_peak_mib(work))


def workload_times(workloads: Workloads, args: Any, weights: str) -> dict[str, list[float]]:
    """Both implementations' forwards, interleaved `args.runs` times."""
    import torch

    work = workloads(args, weights, IMPLEMENTATIONS)
    with torch.inference_mode():
        return interleaved_times(work, args.runs)


def compare_workloads(workloads: Workloads, args: Any, weights: str) -> dict[str, Any]:
    """`compare` for a bench that describes its forwards by `workloads`."""
    from functools import partial

    return compare(partial(workload_peak, workloads), (args, weights), lambda: workload_times(workloads, args, weights))
