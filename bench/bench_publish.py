"""Speed of the node's publish step: one placed window -> every ROS message, published.

The window is what VGGT yields for 8 keyframes at 518x392 (1.62M pixels, all valid), the map
(a real GlobalMap) holds about `--map-points` points and the trajectory `--keyframes` poses.
Measured in one run, on real rclpy publishers:

  * PointCloud2 packing of the window cloud (`make_pointcloud2_from_views`) against a plain
    per-point Python baseline (one ``struct.pack`` per point, then ``b"".join``);
  * the window's own outputs (window cloud, 8 depth, confidence and camera_info messages,
    TF, path), built and published;
  * the map cloud's parts: `GlobalMap.cloud()` snapshot and packing;
  * the whole step of the node (`OutputPublishers.publish_window`, what the node runs for
    each window) against the same step with both clouds packed by the baseline.

    python bench/bench_publish.py [--repeats 20] [--subscriber]

`--subscriber` adds a subscriber to the main topics in this process: DDS then delivers every
message into their queues during the timings (they are read afterwards).  Reports minimum and
median ms and the ratios; targets: whole step <= 30 ms and >= 20x faster than the baseline.
"""
from __future__ import annotations

import argparse
import os
import statistics
import struct
import time

import numpy as np
import rclpy
from nav_msgs.msg import Path
from sensor_msgs.msg import Image, PointCloud2, PointField
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from scene_from_views_ros.mapping.chaining import WindowInMap
from scene_from_views_ros.mapping.global_map import GlobalMap, MapConfig
from scene_from_views_ros.mapping.keyframes import Frame, Keyframe
from scene_from_views_ros.mapping.map_frame import MapFrame
from scene_from_views_ros.mapping.settings import settings_from_parameters
from scene_from_views_ros.ros.conversions import make_pointcloud2, make_pointcloud2_from_views, ns_to_stamp
from scene_from_views_ros.ros.node import OutputPublishers, build_window_messages, window_cloud_masks
from scene_from_views_ros.ros.qos import MAP_CLOUD_QOS, TF_QOS, WINDOW_QOS

WIDTH, HEIGHT, VIEWS = 518, 392, 8


def make_window(rng: np.random.Generator, offset: float = 0.0) -> WindowInMap:
    """A placed window with VGGT's output layout (per view HxW maps, map frame)."""
    k = np.array([[400.0, 0, WIDTH / 2], [0, 400.0, HEIGHT / 2], [0, 0, 1]])
    keyframes, poses, depths, points, confidences, images = [], [], [], [], [], []
    u, v = np.meshgrid((np.arange(WIDTH) - k[0, 2]) / k[0, 0], (np.arange(HEIGHT) - k[1, 2]) / k[1, 1])
    rays = np.stack([u, v, np.ones_like(u)], -1)
    for view in range(VIEWS):
        image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        keyframes.append(Keyframe(Frame(image, 1_700_000_000_000_000_000 + view * 100_000_000, "camera")))
        pose = np.eye(4)
        pose[:3, 3] = [offset + 0.1 * view, 0.0, 0.0]
        depth = rng.uniform(1.0, 5.0, (HEIGHT, WIDTH)).astype(np.float32)
        poses.append(pose)
        depths.append(depth)
        points.append((rays * depth[..., None] + pose[:3, 3]).astype(np.float32))
        confidences.append(rng.uniform(1.0, 10.0, (HEIGHT, WIDTH)).astype(np.float32))
        images.append(image)
    return WindowInMap(
        index=1, keyframes=keyframes, poses=poses, depths=depths, points=points, confidences=confidences,
        images=images, intrinsics=[k] * VIEWS, masks=[np.ones((HEIGHT, WIDTH), bool)] * VIEWS, transform=np.eye(4),
        fit=None, new_views=list(range(2, VIEWS)),
    )


def make_map(rng: np.random.Generator, target_points: int) -> GlobalMap:
    """A GlobalMap of about `target_points` points."""
    global_map = GlobalMap(MapConfig(voxel_size=0.002, max_points=target_points, drop_percentile=0.0))
    offset = 0.0
    while len(global_map) < 0.9 * target_points:
        global_map.add_window(make_window(rng, offset))
        offset += 5.0
    return global_map


_FIELDS = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate("xyz")] + [
    PointField(name="rgb", offset=12, datatype=PointField.FLOAT32, count=1)]


def baseline_pointcloud2(points: np.ndarray, colors: np.ndarray, stamp_ns: int, frame_id: str) -> PointCloud2:
    """The plain approach: one struct.pack per point."""
    pack = struct.Struct("<fffI").pack
    data = b"".join(
        pack(float(x), float(y), float(z), (int(r) << 16) | (int(g) << 8) | int(b))
        for (x, y, z), (r, g, b) in zip(points.tolist(), colors.tolist(), strict=True)
    )
    return PointCloud2(header=Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id), height=1, width=len(points),
                       fields=_FIELDS, is_bigendian=False, point_step=16, row_step=16 * len(points), is_dense=True, data=data)


def timed(function, repeats: int) -> tuple[float, float, object]:
    """(minimum, median) wall time in ms over `repeats` calls, and the last result.  The
    minimum is the figure least disturbed by other processes on a shared machine."""
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append((time.perf_counter() - started) * 1e3)
    return min(times), statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--baseline-repeats", type=int, default=1)
    parser.add_argument("--map-points", type=int, default=1_000_000)
    parser.add_argument("--keyframes", type=int, default=1000)
    parser.add_argument("--subscriber", action="store_true")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    window = make_window(rng)
    global_map = make_map(rng, args.map_points)
    settings = settings_from_parameters({})
    stamp = window.keyframes[-1].stamp_ns
    masks = window_cloud_masks(window, 0.0, 1)
    points = np.concatenate([p[m] for p, m in zip(window.points, masks, strict=True)])
    colors = np.concatenate([i[m] for i, m in zip(window.images, masks, strict=True)])

    rclpy.init()
    node = rclpy.create_node("bench_publish")
    outputs = OutputPublishers(node, settings.publish.path_max_poses)
    while len(outputs.path_cache.path("map", stamp, settings.publish.path_max_poses, MapFrame()).poses) < min(args.keyframes, settings.publish.path_max_poses):
        outputs.path_cache.add(window, "map", MapFrame())  # the path of a long run (capped at publish.path_max_poses)
    received = []
    if args.subscriber:
        for topic, kind, qos in [("/bench_publish/map_cloud", PointCloud2, MAP_CLOUD_QOS), ("/bench_publish/window_cloud", PointCloud2, WINDOW_QOS),
                                 ("/bench_publish/depth", Image, WINDOW_QOS), ("/tf", TFMessage, TF_QOS), ("/bench_publish/path", Path, MAP_CLOUD_QOS)]:
            node.create_subscription(kind, topic, received.append, qos)
        time.sleep(1.0)

    def fast_step() -> None:
        """What SceneFromViewsNode._on_window does."""
        outputs.publish_window(window, global_map.cloud, settings, MapFrame(), [])

    def baseline_step() -> None:
        """The same step with both clouds packed point by point.  (It also runs the vectorised
        window-cloud packing inside build_window_messages: ~10 ms, under 1% of this step.)"""
        messages = build_window_messages(window, settings, outputs.path_cache, MapFrame(), [])
        messages.window_cloud = baseline_pointcloud2(points, colors, stamp, "map")
        map_cloud = global_map.cloud()
        outputs.publish(messages, baseline_pointcloud2(map_cloud.points, map_cloud.colors, stamp, "map"))

    fast_step()  # warm up (first publish creates DDS writers' buffers; fills the path cache)
    load_before = os.getloadavg()[0]
    # All vectorised figures first: the per-point baselines leave a fragmented heap behind.
    pack = timed(lambda: make_pointcloud2_from_views(window.points, window.images, masks, stamp, "map"), args.repeats)
    no_map = make_pointcloud2(np.zeros((0, 3)), np.zeros((0, 3)), stamp, "map")
    window_only = timed(lambda: outputs.publish(
        build_window_messages(window, settings, outputs.path_cache, MapFrame(), []), no_map), args.repeats)
    snapshot = timed(global_map.cloud, args.repeats)
    map_cloud = global_map.cloud()
    map_pack = timed(lambda: make_pointcloud2(map_cloud.points, map_cloud.colors, stamp, "map"), args.repeats)
    step = timed(fast_step, args.repeats)
    pack_base = timed(lambda: baseline_pointcloud2(points, colors, stamp, "map"), args.baseline_repeats)
    assert bytes(pack[2].data) == bytes(pack_base[2].data), "fast and baseline packing differ"
    step_base = timed(baseline_step, args.baseline_repeats)
    if args.subscriber:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)

    load = os.getloadavg()
    path_poses = len(outputs.path_cache.path("map", stamp, settings.publish.path_max_poses, MapFrame()).poses)
    print(f"window: {VIEWS} views at {WIDTH}x{HEIGHT} = {len(points):,} points; map {len(global_map):,} points; "
          f"path {path_poses} poses; {os.cpu_count()} cpus, load avg {load_before:.2f} before, "
          f"{load[0]:.2f} after{'; with subscribers' if args.subscriber else ''}")
    print(f"{'(ms)':34s} {'min':>8s} {'median':>8s}   {'baseline':>9s}   ratio (baseline / min)")
    print(f"{'PointCloud2 packing, window cloud':34s} {pack[0]:8.2f} {pack[1]:8.2f}   {pack_base[0]:9.1f}   {pack_base[0] / pack[0]:6.1f}x")
    print(f"{'window outputs, built + published':34s} {window_only[0]:8.2f} {window_only[1]:8.2f}   "
          "(cloud, 8 depth/confidence/info, TF, path)")
    print(f"{'map snapshot (GlobalMap.cloud)':34s} {snapshot[0]:8.2f} {snapshot[1]:8.2f}")
    print(f"{'map cloud packing':34s} {map_pack[0]:8.2f} {map_pack[1]:8.2f}")
    print(f"{'whole step: window outputs + map':34s} {step[0]:8.2f} {step[1]:8.2f}   {step_base[0]:9.1f}   {step_base[0] / step[0]:6.1f}x")
    print("targets: whole step <= 30 ms, ratio >= 20x")
    if args.subscriber:
        print(f"subscriber received {len(received)} messages")
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
