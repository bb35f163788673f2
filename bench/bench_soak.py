"""Soak: a long run of the node's mapping and publishing stays flat in memory and time.

Frames of the synthetic sequence (default 10,000 frames, 10 laps of the room, every frame a
keyframe) go through a `SlidingWindowMapper` with the synthetic backend, and every placed
window through the node's publish step (`OutputPublishers.publish_window` on a real rclpy
node, the map cloud included).  Over the run it records the process's resident memory, the
publish time and the window latency (reconstruct + chain + integrate), and compares the
first and the last thousand frames:

* resident memory may grow by no more than what the keyframes the map must keep cost
  (limit --max-bytes-per-keyframe, default 2048) from the end of the first thousand frames;
* median publish time and median window latency of the last thousand frames within
  --max-drift (default 10 %) of the first thousand's (after the map reached map.max_points);
* the map never holds more than map.max_points points.

Exit status 1 when a limit is exceeded.

  .venv/bin/python bench/bench_soak.py                # 10k frames, about 2-3 minutes here
  .venv/bin/python bench/bench_soak.py --frames 3000  # quicker
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not in /proc/self/status")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--laps", type=float, default=10.0)
    parser.add_argument("--size", default="128x96", help="frame size WxH")
    parser.add_argument("--max-points", type=int, default=100_000, help="map.max_points (reached early, on purpose)")
    parser.add_argument("--max-bytes-per-keyframe", type=float, default=2048.0)
    parser.add_argument("--max-drift", type=float, default=0.10)
    args = parser.parse_args()

    import rclpy

    from scene_from_views_ros.mapping.mapper import SlidingWindowMapper
    from scene_from_views_ros.mapping.settings import settings_from_parameters
    from scene_from_views_ros.mapping.synthetic import SyntheticWindowBackend, make_sequence
    from scene_from_views_ros.ros.node import OutputPublishers

    width, height = (int(v) for v in args.size.split("x"))
    sequence = make_sequence(args.frames, width, height, loops=args.laps)
    settings = settings_from_parameters({
        "keyframe.min_change": 0.0, "window.size": 8, "window.overlap": 2, "map.max_points": args.max_points,
        "map.voxel_size": 0.01, "map.drop_percentile": 25.0,
    })
    rclpy.init()
    node = rclpy.create_node("bench_soak")
    outputs = OutputPublishers(node, settings.publish.path_max_poses)
    records: list[tuple[int, float, float, int]] = []  # (frame index, publish s, latency s, map points)
    memory: dict[int, int] = {}
    frame_index = 0

    def on_window(window: object) -> None:
        started = time.perf_counter()
        outputs.publish_window(window, mapper.map_cloud, settings)
        publish_s = time.perf_counter() - started
        timings = window.timings  # type: ignore[attr-defined]
        latency = timings["reconstruct_s"] + timings["chain_s"] + timings["integrate_s"]
        records.append((frame_index, publish_s, latency, len(mapper.map)))

    mapper = SlidingWindowMapper(SyntheticWindowBackend(sequence, depth_noise=0.01), settings.mapper, on_window=on_window)
    started = time.perf_counter()
    for frame_index in range(args.frames):
        mapper.add_frame(sequence.frame(frame_index))
        if (frame_index + 1) % 1000 == 0:
            memory[frame_index + 1] = rss_bytes()
            print(f"{frame_index + 1:6d} frames  {mapper.stats.keyframes:6d} keyframes  {len(mapper.map):7d} map points  "
                  f"RSS {memory[frame_index + 1] / 2**20:7.1f} MiB  {time.perf_counter() - started:6.1f} s", flush=True)
    mapper.flush()
    node.destroy_node()
    rclpy.shutdown()

    first = [r for r in records if 1000 <= r[0] < 2000]  # the map is at its cap by then
    last = [r for r in records if r[0] >= args.frames - 1000]
    publish_first, publish_last = statistics.median(r[1] for r in first), statistics.median(r[1] for r in last)
    latency_first, latency_last = statistics.median(r[2] for r in first), statistics.median(r[2] for r in last)
    keyframes_after = mapper.stats.keyframes - 1000
    growth = (memory[max(memory)] - memory[1000]) / max(keyframes_after, 1)
    peak_points = max(r[3] for r in records)
    print(f"windows {len(records)}, keyframes {mapper.stats.keyframes}, path published {settings.publish.path_max_poses} poses at most")
    print(f"publish time   frames 1000-2000 {publish_first * 1e3:7.2f} ms   last 1000 {publish_last * 1e3:7.2f} ms   "
          f"ratio {publish_last / publish_first:.3f}")
    print(f"window latency frames 1000-2000 {latency_first * 1e3:7.2f} ms   last 1000 {latency_last * 1e3:7.2f} ms   "
          f"ratio {latency_last / latency_first:.3f}")
    print(f"RSS growth after 1000 frames: {growth:.0f} bytes per keyframe (limit {args.max_bytes_per_keyframe:.0f})")
    print(f"map points at most {peak_points} (map.max_points {args.max_points})")
    ok = (
        growth <= args.max_bytes_per_keyframe
        and publish_last <= publish_first * (1 + args.max_drift)
        and latency_last <= latency_first * (1 + args.max_drift)
        and peak_points <= args.max_points
    )
    print("ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
