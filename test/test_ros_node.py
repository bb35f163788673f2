"""End-to-end tests of scene_from_views_node over real rclpy and DDS (no ROS mocks).

The node runs in this process on a MultiThreadedExecutor thread with the tiny random-weight
VGGT fixture (built through the factory from model.checkpoint / model.config) and its
parameters from a YAML file; a probe node publishes synthetic camera frames (and JPEG frames
of the sample kitchen video) and records every output.  Startup failures run the real
executable in a subprocess.  ROS_DOMAIN_ID / localhost discovery are set by conftest.py.

Random weights give meaningless geometry, so chaining is told to accept any finite fit
(chain.min_inlier_ratio: 0); everything else is the shipped configuration.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import rclpy
import yaml
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nav_msgs.msg import Odometry
from nav_msgs.msg import Path as PathMsg
from rcl_interfaces.msg import Log
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter, parameter_value_to_python
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from scene_from_views_interfaces.srv import SaveMap
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from test_reliability import default_signal_handling
from tf2_msgs.msg import TFMessage

from scene_from_views_ros.geometry.pcd import read_pcd
from scene_from_views_ros.geometry.ply import read_ply
from scene_from_views_ros.io.messages import SUPPORTED_ENCODINGS, pointcloud2_to_arrays, stamp_to_ns
from scene_from_views_ros.mapping.exports import read_tum
from scene_from_views_ros.mapping.synthetic import make_sequence
from scene_from_views_ros.models.vggt import preprocess_vggt_images
from scene_from_views_ros.ros.conversions import intrinsics_to_camera_info, rgb_to_image_msg
from scene_from_views_ros.ros.node import SceneFromViewsNode
from scene_from_views_ros.ros.qos import MAP_CLOUD_QOS, TF_QOS, WINDOW_QOS

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = REPO_ROOT / "test" / "fixtures" / "vggt_tiny"
NODE = "/scene_from_views"
CAMERA = "/sfv_test/camera/image_raw"
KITCHEN = "/sfv_test/kitchen/image_raw/compressed"
CAMERA_INFO = "/sfv_test/camera/camera_info"
TARGET_SIZE = 70
WINDOW, OVERLAP = 4, 2


def processed_shape(width: int, height: int, target_size: int) -> tuple[int, int]:
    """(height, width) of VGGT's processed image, i.e. of the depth output."""
    dummy = np.zeros((height, width, 3), np.uint8)
    return preprocess_vggt_images([dummy], "crop", target_size).rgb[0].shape[:2]


def test_params_file(tmp_path: Path) -> Path:
    """The shipped YAML files (shared + VGGT's) with the test's changes (tiny model, small
    windows, own frame names)."""
    config = yaml.safe_load((REPO_ROOT / "config" / "scene_from_views.yaml").read_text())
    params = config["scene_from_views"]["ros__parameters"]
    params.update(yaml.safe_load((REPO_ROOT / "config" / "models" / "vggt.yaml").read_text())["scene_from_views"]["ros__parameters"])
    params["model"].update(checkpoint=str(TINY / "weights.safetensors"), config=str(TINY / "config.json"), target_size=TARGET_SIZE)
    params.update(
        image_topics=[CAMERA, KITCHEN], camera_info_topics=[CAMERA_INFO], image_qos="reliable", image_qos_depth=100,
        map_frame="test_map", camera_frame="test_camera", keyframe_frame_prefix="test_kf_", diagnostics_period_s=0.2,
    )
    params["keyframe"]["min_change"] = 0.0
    params["window"].update(size=WINDOW, overlap=OVERLAP)
    params["chain"]["min_inlier_ratio"] = 0.0
    params["map"]["output_dir"] = str(tmp_path / "saved")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


test_params_file.__test__ = False  # a helper, not a test


def model_params_file(tmp_path: Path, parameters: dict[str, object]) -> Path:
    """The test's parameter file for another model: its shipped model YAML, then `parameters`
    (model_type and model.* values)."""
    params_file = test_params_file(tmp_path)
    config = yaml.safe_load(params_file.read_text())
    params = config["scene_from_views"]["ros__parameters"]
    model_type = parameters["model_type"]
    params["model"] = yaml.safe_load((REPO_ROOT / "config" / "models" / f"{model_type}.yaml").read_text())[
        "scene_from_views"]["ros__parameters"]["model"]
    for name, value in parameters.items():
        if name.startswith("model."):
            params["model"][name[len("model."):]] = value
        else:
            params[name] = value
    params_file.write_text(yaml.safe_dump(config))
    return params_file


class Probe:
    """A node that feeds the mapper and records what it publishes (thread-safe lists)."""

    def __init__(self, context: Context) -> None:
        self.node = rclpy.create_node("sfv_test_probe", context=context)
        self.lock = threading.Lock()
        self.received: dict[str, list] = defaultdict(list)
        latched = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        for topic, kind, qos in [
            (f"{NODE}/window_cloud", PointCloud2, WINDOW_QOS), (f"{NODE}/map_cloud", PointCloud2, MAP_CLOUD_QOS),
            (f"{NODE}/depth/image", Image, WINDOW_QOS), (f"{NODE}/depth/camera_info", CameraInfo, WINDOW_QOS),
            (f"{NODE}/confidence/image", Image, WINDOW_QOS), (f"{NODE}/confidence/camera_info", CameraInfo, WINDOW_QOS),
            (f"{NODE}/path", PathMsg, MAP_CLOUD_QOS),
            (f"{NODE}/keyframe_poses", PathMsg, WINDOW_QOS), (f"{NODE}/odometry", Odometry, WINDOW_QOS),
            ("/tf", TFMessage, TF_QOS), ("/diagnostics", DiagnosticArray, 10), ("/rosout", Log, latched),
        ]:
            self.node.create_subscription(kind, topic, lambda msg, topic=topic: self._record(topic, msg), qos)
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.camera = self.node.create_publisher(Image, CAMERA, reliable)
        self.kitchen = self.node.create_publisher(CompressedImage, KITCHEN, reliable)
        self.camera_info = self.node.create_publisher(CameraInfo, CAMERA_INFO, reliable)
        self.reset = self.node.create_client(Trigger, f"{NODE}/reset")
        self.save_map = self.node.create_client(SaveMap, f"{NODE}/save_map")
        self.set_parameters = self.node.create_client(SetParameters, f"{NODE}/set_parameters")
        self.get_parameters = self.node.create_client(GetParameters, f"{NODE}/get_parameters")
        self.sequence = make_sequence(64, 160, 120)
        self.next_frame = 0
        self.stamps: set[int] = set()
        self.next_stamp = 1_700_000_000 * 10**9

    def _record(self, topic: str, msg: object) -> None:
        with self.lock:
            self.received[topic].append(msg)

    def messages(self, topic: str) -> list:
        with self.lock:
            return list(self.received[topic])

    def count(self, topic: str) -> int:
        with self.lock:
            return len(self.received[topic])

    def stamp(self) -> int:
        self.next_stamp += 50_000_000
        self.stamps.add(self.next_stamp)
        return self.next_stamp

    def publish_frames(self, count: int, period_s: float = 0.03) -> None:
        """Synthetic camera frames (with camera_info), each with a new stamp."""
        for _ in range(count):
            frame = self.sequence.frame(self.next_frame % len(self.sequence))
            self.next_frame += 1
            stamp = self.stamp()
            self.camera_info.publish(intrinsics_to_camera_info(frame.intrinsics, 160, 120, stamp, "camera"))
            self.camera.publish(rgb_to_image_msg(frame.image, stamp, "camera"))
            time.sleep(period_s)

    def call(self, client, request, timeout: float = 20.0):
        assert client.wait_for_service(timeout_sec=timeout), f"service {client.srv_name} not available"
        future = client.call_async(request)
        wait_for(future.done, timeout, f"no response from {client.srv_name}")
        return future.result()

    def set_parameter(self, name: str, value: object) -> tuple[bool, str]:
        request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        result = self.call(self.set_parameters, request).results[0]
        return result.successful, result.reason

    def diagnostics(self) -> dict[str, str]:
        """Key-values of the node's latest /diagnostics status."""
        for array in reversed(self.messages("/diagnostics")):
            for status in array.status:
                if status.name.startswith("scene_from_views"):
                    return {value.key: value.value for value in status.values}
        return {}

    def fresh_diagnostics(self) -> dict[str, str]:
        """The first /diagnostics published after this call."""
        seen = self.count("/diagnostics")
        wait_for(lambda: self.count("/diagnostics") > seen + 1, 10, "no /diagnostics")
        return self.diagnostics()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s: {what}")
        time.sleep(0.02)


def wait_for_inputs(node: Any) -> None:
    """Until the node's own input subscriptions are matched with the probe's publishers (the
    probe's matched-subscription count may still include a node of an earlier test that left)."""
    settings = node.settings.inputs
    inputs = {CAMERA, KITCHEN, CAMERA_INFO} & {*settings.image_topics, *settings.camera_info_topics}
    wait_for(lambda: sum(sub.get_publisher_count() > 0 for sub in node.subscriptions if sub.topic_name in inputs) == len(inputs),
             10, "the node's image and camera_info subscriptions were not matched")


@contextlib.contextmanager
def running_node(cli_args: list[str], node_class: type = SceneFromViewsNode) -> Iterator[tuple[Any, Probe]]:
    """The node (started with `cli_args`) and a probe, spun by one executor in a thread; a
    plain node's image subscriptions are discovered first (a lifecycle node has none yet)."""
    context = Context()
    rclpy.init(context=context)
    node = node_class(context=context, cli_args=cli_args)
    probe = Probe(context)
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    executor.add_node(node)
    executor.add_node(probe.node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        if node_class is SceneFromViewsNode:
            wait_for_inputs(node)
        yield node, probe
    finally:
        if getattr(node, "_configured", True):
            node.close()
        executor.shutdown()
        node.destroy_node()
        probe.node.destroy_node()
        rclpy.shutdown(context=context)
        spinner.join(5)


@pytest.fixture(scope="module")
def ros(tmp_path_factory: pytest.TempPathFactory):
    tmp_path = tmp_path_factory.mktemp("ros_node")
    with running_node(["--ros-args", "--params-file", str(test_params_file(tmp_path))]) as (node, probe):
        yield node, probe, tmp_path


def produce_windows(probe: Probe, windows: int, timeout: float = 30.0) -> None:
    """Publish frames until `windows` more window clouds arrived."""
    target = probe.count(f"{NODE}/window_cloud") + windows
    deadline = time.monotonic() + timeout
    while probe.count(f"{NODE}/window_cloud") < target:
        assert time.monotonic() < deadline, f"no window cloud within {timeout} s"
        probe.publish_frames(WINDOW - OVERLAP, period_s=0.05)
        time.sleep(0.2)


# ---------------------------------------------------------------- tests
def test_parameters_come_from_the_yaml_file(ros) -> None:
    _, probe, _tmp_path = ros
    names = ["map_frame", "window.size", "model.target_size", "model.checkpoint", "image_topics", "map.voxel_size"]
    response = probe.call(probe.get_parameters, GetParameters.Request(names=names))
    values = {name: parameter_value_to_python(value) for name, value in zip(names, response.values, strict=True)}
    assert values["map_frame"] == "test_map"
    assert values["window.size"] == WINDOW
    assert values["model.target_size"] == TARGET_SIZE
    assert values["model.checkpoint"] == str(TINY / "weights.safetensors")
    assert list(values["image_topics"]) == [CAMERA, KITCHEN]
    assert values["map.voxel_size"] == pytest.approx(0.01)  # untouched value of the shipped YAML


def test_window_outputs(ros) -> None:
    node, probe, _ = ros
    depth_before, path_before = probe.count(f"{NODE}/depth/image"), probe.count(f"{NODE}/path")
    produce_windows(probe, 3)
    wait_for(lambda: probe.count(f"{NODE}/path") >= path_before + 3, 10, "path messages")
    wait_for(lambda: probe.count(f"{NODE}/depth/image") >= depth_before + 3 * WINDOW, 10, "depth images")

    cloud = probe.messages(f"{NODE}/window_cloud")[-1]
    points, colors = pointcloud2_to_arrays(cloud)
    assert cloud.header.frame_id == "test_map"
    height, width = processed_shape(160, 120, TARGET_SIZE)
    assert 0 < len(points) <= WINDOW * height * width
    assert np.isfinite(points).all() and colors.dtype == np.uint8
    assert stamp_to_ns(cloud.header.stamp) in probe.stamps

    map_cloud = probe.messages(f"{NODE}/map_cloud")[-1]
    assert map_cloud.header.frame_id == "test_map" and map_cloud.width > 0
    assert np.isfinite(pointcloud2_to_arrays(map_cloud)[0]).all()

    depths = probe.messages(f"{NODE}/depth/image")[depth_before:]
    infos = probe.messages(f"{NODE}/depth/camera_info")
    confidences = probe.messages(f"{NODE}/confidence/image")
    assert len(depths) >= 3 * WINDOW
    for depth in depths:
        assert (depth.encoding, depth.height, depth.width) == ("32FC1", height, width)
        assert stamp_to_ns(depth.header.stamp) in probe.stamps
        assert depth.header.frame_id == "camera"  # the image's optical frame (its header frame_id)
        values = np.frombuffer(bytes(depth.data), "<f4")
        assert np.isnan(values).sum() < values.size and (values[np.isfinite(values)] > 0).all()
    info_by_frame = {(i.header.frame_id, stamp_to_ns(i.header.stamp)): i for i in infos}
    last = depths[-1]
    info = info_by_frame[(last.header.frame_id, stamp_to_ns(last.header.stamp))]
    assert (info.height, info.width) == (height, width) and info.k[0] > 0 and info.k[8] == 1.0
    assert any(c.header.frame_id == last.header.frame_id and c.encoding == "32FC1" for c in confidences)
    # image_transport's naming: each image topic has its camera_info beside it, paired by frame and stamp
    confidence_infos = {(i.header.frame_id, stamp_to_ns(i.header.stamp)) for i in probe.messages(f"{NODE}/confidence/camera_info")}
    assert {(c.header.frame_id, stamp_to_ns(c.header.stamp)) for c in confidences[-WINDOW:]} <= confidence_infos

    # tf_mode auto without odometry: standalone, map -> camera once per new keyframe at its stamp
    # (no keyframe frames by default; overlap keyframes are never broadcast again)
    transforms = [t for msg in probe.messages("/tf") for t in msg.transforms]
    children = {t.child_frame_id for t in transforms}
    assert children == {"camera"} and {d.header.frame_id for d in depths} <= children
    broadcast = [(t.child_frame_id, stamp_to_ns(t.header.stamp)) for t in transforms]
    assert len(broadcast) == len(set(broadcast)) >= WINDOW
    for transform in transforms:
        assert transform.header.frame_id == "test_map"
        translation, rotation = transform.transform.translation, transform.transform.rotation
        assert np.isfinite([translation.x, translation.y, translation.z]).all()
        assert np.linalg.norm([rotation.x, rotation.y, rotation.z, rotation.w]) == pytest.approx(1.0, abs=1e-6)
        assert stamp_to_ns(transform.header.stamp) in probe.stamps

    lengths = [len(path.poses) for path in probe.messages(f"{NODE}/path")[path_before:]]
    assert lengths == sorted(lengths) and lengths[-1] >= lengths[0] + 2 * (WINDOW - OVERLAP)
    # CameraInfo's K travels with the camera's keyframes (same image size: unscaled).  Topics
    # are not ordered against each other, so the very first image may beat its CameraInfo.
    intrinsics = [kf.camera_intrinsics for kf in node.mapper.trajectory() if kf.camera_id == CAMERA]
    known = [k for k in intrinsics if k is not None]
    assert len(known) >= len(intrinsics) - 1 >= 1
    assert all(np.allclose(k, probe.sequence.intrinsics) for k in known)
    assert all(pose.header.frame_id == "test_map" for pose in probe.messages(f"{NODE}/path")[-1].poses)


def test_compressed_topic_frames_are_mapped(ros, shared_data: Path) -> None:
    _, probe, _ = ros
    video = cv2.VideoCapture(str(shared_data / "redkitchen.mp4"))
    jpegs = []
    for _ in range(3):
        ok, bgr = video.read()
        assert ok, "cannot read redkitchen.mp4"
        jpegs.append(cv2.imencode(".jpg", bgr)[1].tobytes())
        for _ in range(10):  # frames further apart
            video.read()
    video.release()
    before = probe.fresh_diagnostics()
    for jpeg in jpegs:
        stamp = probe.stamp()
        probe.kitchen.publish(CompressedImage(header=rgb_to_image_msg(np.zeros((1, 1, 3), np.uint8), stamp, "kitchen").header,
                                              format="jpeg", data=jpeg))
        time.sleep(0.05)
    wait_for(lambda: int(probe.diagnostics().get("frames_received", 0)) >= int(before["frames_received"]) + 3, 10,
             "compressed frames not counted")
    after = probe.fresh_diagnostics()
    assert int(after["frames_rejected"]) == int(before["frames_rejected"])
    # min_change 0: every decoded frame becomes a keyframe (counts restart only on reset).
    assert int(after["keyframes"]) == int(before["keyframes"]) + 3


def test_bad_encoding_is_reported_once_and_dropped(ros) -> None:
    _, probe, _ = ros
    before = probe.fresh_diagnostics()
    for _ in range(4):
        bayer = Image(header=rgb_to_image_msg(np.zeros((1, 1, 3), np.uint8), probe.stamp(), "camera").header,
                      height=120, width=160, encoding="bayer_rggb8", step=160, data=bytes(160 * 120))
        probe.camera.publish(bayer)
        time.sleep(0.03)
    wait_for(lambda: int(probe.diagnostics().get("frames_rejected", 0)) >= int(before["frames_rejected"]) + 4, 10,
             "bad frames not counted as rejected")
    reports = [log for log in probe.messages("/rosout") if log.name == "scene_from_views" and "bayer_rggb8" in log.msg]
    assert len(reports) == 1 and reports[0].level == Log.ERROR and CAMERA in reports[0].msg
    header = rgb_to_image_msg(np.zeros((1, 1, 3), np.uint8), probe.stamp(), "camera").header
    truncated = Image(header=header, height=120, width=160, encoding="rgb8", step=480, data=bytes(100))
    empty = Image(header=header, height=0, width=0, encoding="rgb8", step=0, data=b"")
    probe.camera.publish(truncated)
    probe.camera.publish(empty)
    wait_for(lambda: int(probe.diagnostics().get("frames_rejected", 0)) >= int(before["frames_rejected"]) + 6, 10,
             "truncated and empty images not counted as rejected")
    produce_windows(probe, 1)  # the node keeps mapping good frames


def test_invalid_parameter_changes_are_rejected_and_the_node_keeps_running(ros) -> None:
    node, probe, _ = ros
    checks = {
        ("model.not_a_kwarg", 3): "unknown parameter model.not_a_kwarg",
        ("model.target_size", 71): "step: 14",
        ("model.checkpoint", "/nonexistent/weights.safetensors"): "nonexistent",
        ("model.conf_thres", "high"): "model.conf_thres='high' is not allowed: expected a number",
        ("window.size", 6): "read-only",
        ("keyframe.min_change", 2.0): "out of range",
        ("image_qos", "best"): "read-only",
        ("not_a_parameter", 1): "unknown parameter",
    }
    for (name, value), reason in checks.items():
        successful, message = probe.set_parameter(name, value)
        assert not successful, f"{name}={value!r} was accepted"
        assert reason in message, f"{name}={value!r}: {message!r}"
    assert node.get_parameter("model.target_size").value == TARGET_SIZE
    assert node.settings.model_options.target_size == TARGET_SIZE
    warnings = [log.msg for log in probe.messages("/rosout") if log.name == "scene_from_views" and log.level == Log.WARN]
    assert any("model.not_a_kwarg" in msg for msg in warnings)
    produce_windows(probe, 1)


def test_model_parameter_change_rebuilds_between_windows_and_keeps_the_map(ros) -> None:
    node, probe, _ = ros
    produce_windows(probe, 1)
    path_length = len(probe.messages(f"{NODE}/path")[-1].poses)
    mapper = node.mapper  # the mapper (and its map) must survive the change
    assert probe.set_parameter("model.conf_thres", 10.0) == (True, "")  # call options: network reused
    assert probe.set_parameter("model.target_size", 56) == (True, "")
    depth_before = probe.count(f"{NODE}/depth/image")
    produce_windows(probe, 2)
    height, width = processed_shape(160, 120, 56)
    newest = probe.messages(f"{NODE}/depth/image")[-1]
    assert (newest.height, newest.width) == (height, width)
    assert len(probe.messages(f"{NODE}/depth/image")) > depth_before
    assert node.mapper is mapper and len(probe.messages(f"{NODE}/path")[-1].poses) > path_length
    assert probe.set_parameter("model.target_size", TARGET_SIZE) == (True, "")


def test_failing_windows_are_logged_and_the_map_is_kept(ros) -> None:
    node, probe, _ = ros
    produce_windows(probe, 1)
    # Chaining settings apply from the next window: demand more overlap pixels than are sampled.
    assert probe.set_parameter("chain.min_correspondences", 10_000_000) == (True, "")
    before = probe.fresh_diagnostics()
    map_points, keyframes = len(node.mapper.map_cloud()), len(node.mapper.trajectory())
    clouds = probe.count(f"{NODE}/window_cloud")
    probe.publish_frames(3 * (WINDOW - OVERLAP), period_s=0.1)
    wait_for(lambda: int(probe.diagnostics().get("windows_failed", 0)) >= int(before["windows_failed"]) + 2, 20,
             "windows did not fail")
    assert probe.count(f"{NODE}/window_cloud") == clouds  # nothing published for a failed window
    assert (len(node.mapper.map_cloud()), len(node.mapper.trajectory())) == (map_points, keyframes)
    failures = [log.msg for log in probe.messages("/rosout") if log.name == "scene_from_views" and "failed and was skipped" in log.msg]
    assert failures and "overlap correspondences" in failures[-1]
    assert probe.diagnostics()["last_error"] != ""
    assert probe.set_parameter("chain.min_correspondences", 50) == (True, "")
    produce_windows(probe, 1)  # placed again, onto the kept anchor
    assert len(node.mapper.trajectory()) > keyframes


def test_images_faster_than_inference_keep_memory_bounded(ros) -> None:
    """While a window is being reconstructed, new keyframes wait in a queue of one window's
    free slots: the newest win, the others are dropped and counted.  The model is held in
    its window by a gate, so the test does not depend on how fast the machine is."""
    node, probe, _ = ros
    entered, release = threading.Event(), threading.Event()
    model = node.backend.model

    def gated(keyframes):
        entered.set()
        assert release.wait(30)
        return model.reconstruct([kf.image for kf in keyframes], rgb=True, as_pointcloud=False)

    before = probe.fresh_diagnostics()
    node.mapper.set_reconstructor(gated)
    try:
        probe.publish_frames(WINDOW, period_s=0.02)
        wait_for(entered.is_set, 10, "no window started")
        probe.publish_frames(20, period_s=0.0)
        wait_for(lambda: int(probe.diagnostics().get("frames_received", 0)) >= int(before["frames_received"]) + WINDOW + 20,
                 10, "frames not received")
        assert node.mapper.stats.pending <= WINDOW - OVERLAP  # the queue never exceeds one window's new slots
    finally:
        release.set()
        node.mapper.set_reconstructor(node.backend.model, **node.backend.reconstruct_kwargs)
    after = probe.fresh_diagnostics()
    assert int(after["keyframes_dropped"]) >= int(before["keyframes_dropped"]) + 20 - (WINDOW - OVERLAP)
    produce_windows(probe, 1)


def test_save_map_writes_readable_files(ros) -> None:
    import open3d as o3d

    _node, probe, tmp_path = ros
    produce_windows(probe, 1)
    response = probe.call(probe.save_map, SaveMap.Request())
    assert response.success, response.message
    ply, tum = tmp_path / "saved" / "map.ply", tmp_path / "saved" / "map_trajectory.tum"
    assert str(ply) in response.message
    assert response.files == [str(tmp_path / "saved" / name) for name in ("map.ply", "map.pcd", "map_trajectory.tum", "keyframes.json")]
    cloud = o3d.io.read_point_cloud(str(ply))
    points = np.asarray(cloud.points)
    assert len(points) > 0 and np.isfinite(points).all() and cloud.has_colors()
    assert np.allclose(read_ply(ply)[0], points, atol=1e-5)
    stamps, poses = read_tum(tum)
    assert len(stamps) >= WINDOW and set(stamps) <= probe.stamps
    assert all(np.isfinite(pose).all() for pose in poses)
    # keyframes.json: the camera_info_topics' K kept with the camera's keyframes, none for the
    # kitchen topic, which has no CameraInfo topic.
    document = json.loads((tmp_path / "saved" / "keyframes.json").read_text())
    assert document["map_frame"] == "test_map" and len(document["keyframes"]) == len(stamps)
    by_camera = defaultdict(list)
    for keyframe in document["keyframes"]:
        by_camera[keyframe["camera_id"]].append(keyframe["camera_intrinsics"])
        assert keyframe["frame_id"].startswith("test_kf_") and "depth" not in keyframe
    known = [k for k in by_camera[CAMERA] if k is not None]
    assert len(known) >= len(by_camera[CAMERA]) - 1 >= 1 and np.allclose(known[0], probe.sequence.intrinsics)
    assert all(k is None for k in by_camera[KITCHEN])
    # a folder and formats of the request's choosing: the files listed in the response
    response = probe.call(probe.save_map, SaveMap.Request(directory=str(tmp_path / "chosen"), formats=["pcd", "tum"]))
    assert response.success and response.files == [str(tmp_path / "chosen" / "map.pcd"), str(tmp_path / "chosen" / "map_trajectory.tum")]
    pcd_points, pcd_colors = read_pcd(tmp_path / "chosen" / "map.pcd")
    assert len(pcd_points) >= len(points) and pcd_colors is not None and sorted(os.listdir(tmp_path / "chosen")) == ["map.pcd", "map_trajectory.tum"]
    response = probe.call(probe.save_map, SaveMap.Request(directory=str(tmp_path / "other"), formats=["las"]))
    assert not response.success and "unknown format(s) las: choose from ply, pcd, tum, json, colmap, nerfstudio" in response.message
    assert not (tmp_path / "other").exists()
    # a relative map.output_dir lies under $ROS_HOME/scene_from_views, whatever the node's working directory
    ros_home = tmp_path / "ros_home"
    os.environ["ROS_HOME"] = str(ros_home)
    try:
        assert probe.set_parameter("map.output_dir", "relative_maps") == (True, "")
        response = probe.call(probe.save_map, SaveMap.Request())
        assert response.success and str(ros_home / "scene_from_views" / "relative_maps" / "map.ply") in response.message
        assert (ros_home / "scene_from_views" / "relative_maps" / "keyframes.json").is_file()
        response = probe.call(probe.save_map, SaveMap.Request(directory="asked", formats=["json"]))  # relative: the same rule
        assert response.files == [str(ros_home / "scene_from_views" / "asked" / "keyframes.json")], response.message
        assert not Path("relative_maps").exists()
    finally:
        del os.environ["ROS_HOME"]
        assert probe.set_parameter("map.output_dir", str(tmp_path / "saved")) == (True, "")


def test_save_map_exports_colmap_and_nerfstudio_of_the_keyframes_it_kept(ros) -> None:
    """map.save_formats with colmap and nerfstudio: the node keeps the keyframe images from
    then on, and ~/save_map (no formats in the request) writes the exports, which COLMAP's own
    reader and the nerfstudio layout read back."""
    import pycolmap

    from scene_from_views_ros.mapping.chaining import usable_intrinsics

    node, probe, tmp_path = ros
    assert len(node.keyframe_images) == 0  # not kept by default
    response = probe.call(probe.save_map, SaveMap.Request(directory=str(tmp_path / "none"), formats=["nerfstudio"]))
    assert not response.success and "add it there" in response.message and "map.save_formats" in response.message
    assert probe.set_parameter("map.save_formats", ["ply", "colmap", "nerfstudio"]) == (True, "")
    assert probe.set_parameter("map.save_formats", ["ply", "las"])[0] is False
    produce_windows(probe, 2)
    out = tmp_path / "exports"
    response = probe.call(probe.save_map, SaveMap.Request(directory=str(out)))
    assert response.success, response.message
    assert {Path(f).relative_to(out).parts[0] for f in response.files} == {"map.ply", "colmap", "nerfstudio"}
    transforms = json.loads((out / "nerfstudio" / "transforms.json").read_text())
    # the keyframes with a usable K (the tiny model's is degenerate where no CameraInfo replaces it)
    usable = {kf.keyframe_id for kf in node.mapper.trajectory() if usable_intrinsics(kf.intrinsics)}
    kept = {kf.keyframe_id for kf in node.mapper.trajectory() if kf.keyframe_id in node.keyframe_images}
    assert {f["keyframe_id"] for f in transforms["frames"]} == kept & usable and len(kept & usable) >= WINDOW // 2
    assert all((out / "nerfstudio" / f["file_path"]).is_file() for f in transforms["frames"])
    reconstruction = pycolmap.Reconstruction(str(out / "colmap"))
    assert reconstruction.num_images() == len(usable) and reconstruction.num_points3D() == node.mapper.stats.map_points
    assert probe.set_parameter("map.save_formats", ["ply", "pcd", "tum", "json"]) == (True, "")


def window_cloud_points(probe: Probe) -> int:
    """Points of the next window cloud with a frame published after this call (a window already
    in flight keeps the options it started with)."""
    changed = probe.next_stamp
    for _ in range(4):
        produce_windows(probe, 1)
        cloud = probe.messages(f"{NODE}/window_cloud")[-1]
        if stamp_to_ns(cloud.header.stamp) > changed:
            return cloud.width
    raise AssertionError("no window of frames published after the change")


def test_options_change_what_the_node_publishes(ros) -> None:
    """publish.window_cloud_stride, model.conf_thres and publish.depth, changed at runtime,
    each change the next window's messages; the input QoS and diagnostics period of the YAML
    file are those the subscriptions and the /diagnostics stream have."""
    node, probe, _ = ros
    assert probe.set_parameter("model.conf_thres", 0.0) == (True, "")
    height, width = processed_shape(160, 120, TARGET_SIZE)
    full = window_cloud_points(probe)
    assert full == WINDOW * height * width  # every pixel: no threshold, the model keeps all
    assert probe.set_parameter("publish.window_cloud_stride", 2) == (True, "")
    strided = window_cloud_points(probe)
    assert strided == WINDOW * ((height + 1) // 2) * ((width + 1) // 2)
    assert probe.set_parameter("publish.window_cloud_stride", 1) == (True, "")
    assert probe.set_parameter("model.conf_thres", 90.0) == (True, "")
    confident = window_cloud_points(probe)
    assert 0 < confident <= 0.11 * full  # the 10 % most confident pixels of the window
    depth = probe.messages(f"{NODE}/depth/image")[-1]
    values = np.frombuffer(bytes(depth.data), "<f4")
    assert 0.5 < np.isnan(values).mean() < 1.0  # the dropped pixels are NaN in the depth images too
    assert probe.set_parameter("publish.depth", False) == (True, "")
    # A window in flight may still send its depth; any window with a frame published after the
    # change (stamped after `changed`) started after it and sends none.
    changed = probe.next_stamp
    produce_windows(probe, 2)
    assert max(stamp_to_ns(depth.header.stamp) for depth in probe.messages(f"{NODE}/depth/image")) <= changed
    assert probe.set_parameter("publish.depth", True) == (True, "")
    assert probe.set_parameter("model.conf_thres", 50.0) == (True, "")
    # publish.path_max_poses caps ~/path to the newest keyframes; ~/keyframe_poses has each
    # window's new ones, the last of which end the path.
    assert probe.set_parameter("publish.path_max_poses", 3) == (True, "")
    produce_windows(probe, 2)
    path, new = probe.messages(f"{NODE}/path")[-1], probe.messages(f"{NODE}/keyframe_poses")[-1]
    assert len(path.poses) == 3 and len(new.poses) == WINDOW - OVERLAP
    assert [stamp_to_ns(p.header.stamp) for p in path.poses][-len(new.poses):] == [stamp_to_ns(p.header.stamp) for p in new.poses]
    assert probe.set_parameter("publish.path_max_poses", 1000) == (True, "")
    # image_qos: reliable and image_qos_depth: 100 from the test's YAML (defaults: best effort,
    # 5).  The graph shows the reliability; the history depth is the subscription's own (it
    # only shows when the callbacks fall behind a burst).
    (endpoint,) = [info for info in probe.node.get_subscriptions_info_by_topic(CAMERA) if info.node_name == "scene_from_views"]
    assert endpoint.qos_profile.reliability == ReliabilityPolicy.RELIABLE
    (subscription,) = [sub for sub in node.subscriptions if sub.topic_name == CAMERA]
    assert subscription.qos_profile.depth == 100
    # diagnostics_period_s: 0.2 in the test's YAML (default 1 s).
    start = probe.count("/diagnostics")
    time.sleep(2.0)
    assert probe.count("/diagnostics") - start >= 6


def test_reset_clears_the_map(ros) -> None:
    node, probe, _ = ros
    produce_windows(probe, 1)
    assert len(node.mapper.trajectory()) > 0
    maps_before = probe.count(f"{NODE}/map_cloud")
    response = probe.call(probe.reset, Trigger.Request())
    assert response.success, response.message
    wait_for(lambda: probe.count(f"{NODE}/map_cloud") > maps_before, 10, "map cloud after reset")
    empty = [msg for msg in probe.messages(f"{NODE}/map_cloud")[maps_before:] if msg.width == 0]
    assert empty, "no empty map cloud published on reset"
    assert len(node.mapper.trajectory()) == 0 and len(node.mapper.map_cloud()) == 0
    wait_for(lambda: len(probe.messages(f"{NODE}/path")[-1].poses) == 0, 5, "an empty path after reset")
    paths_before = probe.count(f"{NODE}/path")
    produce_windows(probe, 1)  # mapping starts over: the first window holds the whole path
    wait_for(lambda: any(path.poses for path in probe.messages(f"{NODE}/path")[paths_before:]), 10, "the new map's path")
    first_path = next(path for path in probe.messages(f"{NODE}/path")[paths_before:] if path.poses)
    assert len(first_path.poses) == WINDOW


# ---------------------------------------------------------------- startup failures
# ---------------------------------------------------------------- malformed input, time jumps
def header_at(stamp_ns: int, frame_id: str = "camera") -> Header:
    return Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame_id)


ENCODINGS = [*SUPPORTED_ENCODINGS, "bayer_rggb8", "32FC1", "yuv422", ""]
UINT32 = st.integers(0, 2**32 - 1)
SIZES = st.one_of(st.integers(0, 48), UINT32)
STAMPS = st.integers(0, 2**62)
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)
SMALL_IMAGE = np.zeros((6, 8, 3), np.uint8)


@st.composite
def bad_images(draw: st.DrawFn) -> tuple[str, Image]:
    height, width = draw(SIZES), draw(SIZES)
    encoding = draw(st.one_of(st.sampled_from(ENCODINGS), st.text(max_size=12)))
    data = draw(st.binary(max_size=4096))
    msg = Image(header=header_at(draw(STAMPS)), height=height, width=width, encoding=encoding,
                is_bigendian=draw(st.integers(0, 255)), step=draw(st.one_of(SIZES, st.just(width * 3))), data=data)
    return "image", msg


@st.composite
def bad_compressed(draw: st.DrawFn) -> tuple[str, CompressedImage]:
    valid = cv2.imencode(".jpg", SMALL_IMAGE)[1].tobytes()
    data = draw(st.one_of(
        st.binary(max_size=2048), st.just(b""),
        st.integers(0, len(valid) - 1).map(lambda cut: valid[:cut]),  # truncated JPEG
        st.binary(min_size=1, max_size=64).map(lambda junk: valid[:20] + junk + valid[-2:]),  # corrupt inside
    ))
    return "compressed", CompressedImage(header=header_at(draw(STAMPS)), format=draw(st.text(max_size=8)), data=data)


@st.composite
def bad_camera_infos(draw: st.DrawFn) -> tuple[str, CameraInfo]:
    k = draw(st.lists(FLOATS, min_size=9, max_size=9))
    return "camera_info", CameraInfo(header=header_at(draw(STAMPS)), height=draw(SIZES), width=draw(SIZES),
                                     distortion_model=draw(st.text(max_size=12)), d=draw(st.lists(FLOATS, max_size=8)), k=k)


@settings(max_examples=300, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(message=st.one_of(bad_images(), bad_compressed(), bad_camera_infos()))
def test_no_message_kills_the_node(ros, message: tuple[str, object]) -> None:
    """Property: a malformed Image, CompressedImage or CameraInfo of any shape is dropped (or,
    if it happens to decode, mapped); the node survives.  300 derandomised examples."""
    _, probe, _ = ros
    kind, msg = message
    {"image": probe.camera, "compressed": probe.kitchen, "camera_info": probe.camera_info}[kind].publish(msg)
    time.sleep(0.002)


def test_after_the_fuzz_the_node_is_alive_and_mapping(ros) -> None:
    """Runs after the property test: every kind of bad message was counted, each reason was
    logged once per topic, and good frames still make windows."""
    node, probe, _ = ros
    wait_for(lambda: int(probe.diagnostics().get("camera_info_rejected", 0)) > 0, 10, "no CameraInfo rejected")
    diagnostics = probe.fresh_diagnostics()
    assert int(diagnostics["frames_rejected"]) > 100 and int(diagnostics["camera_info_rejected"]) > 10
    lines = [log.msg for log in probe.messages("/rosout") if log.name == "scene_from_views" and "logged once per topic" in log.msg]
    keys = [(line.split(": ")[0], line.split(": ")[1]) for line in lines if "UnsupportedEncodingError" not in line]
    assert len(keys) == len(set(keys)), "a reason was logged twice for one topic"
    assert {key[0] for key in keys} >= {CAMERA, KITCHEN, CAMERA_INFO}
    probe.next_stamp = max(probe.next_stamp, stamp_to_ns(node.get_clock().now().to_msg()))
    produce_windows(probe, 2)


def test_frames_from_an_hour_earlier_start_a_new_segment(ros) -> None:
    """A camera clock reset: frames an hour older than the last keyframe keep being mapped (they
    made 0 keyframes while diagnostics said OK); the jump is counted and shown."""
    node, probe, _ = ros
    produce_windows(probe, 1)
    before = probe.fresh_diagnostics()
    keyframes = int(before["keyframes"])
    probe.next_stamp -= 3600 * 10**9
    produce_windows(probe, 2)
    after = probe.fresh_diagnostics()
    assert int(after["time_jumps"]) == int(before["time_jumps"]) + 1 and int(after["keyframes"]) > keyframes + 2
    warnings = [a.status[0] for a in probe.messages("/diagnostics") if a.status and "time jumped back" in a.status[0].message]
    assert warnings and warnings[0].level == DiagnosticStatus.WARN
    # With map.reset_on_time_jump the next jump starts a new map: an empty map is published first.
    assert probe.set_parameter("map.reset_on_time_jump", True) == (True, "")
    clouds = probe.count(f"{NODE}/map_cloud")
    probe.next_stamp -= 3600 * 10**9
    produce_windows(probe, 1)
    assert min(cloud.width for cloud in probe.messages(f"{NODE}/map_cloud")[clouds:]) == 0
    assert len(node.mapper.trajectory()) <= 2 * WINDOW
    assert probe.set_parameter("map.reset_on_time_jump", False) == (True, "")


def test_the_node_gives_each_keyframe_the_calibration_of_its_stamp(ros) -> None:
    """Two calibrations 30 ms apart, then an image 10 ms after the first: within the 20 ms slop
    it takes the first; with no slop, the newest received."""
    node, probe, _ = ros
    sequence = probe.sequence
    zoomed = sequence.intrinsics.copy()
    zoomed[:2, :2] *= 1.5
    images = {}
    for slop, index in ((0.02, 7), (0.0, 9)):
        assert probe.set_parameter("camera_info_slop_s", slop) == (True, "")
        base = probe.stamp()
        for offset, k in ((0, sequence.intrinsics), (30_000_000, zoomed)):
            probe.camera_info.publish(intrinsics_to_camera_info(k, 160, 120, base + offset, "camera"))
        def zoom_arrived(base: int = base) -> bool:
            newest = node._camera_info[CAMERA].for_stamp(base + 30_000_000, 0.0)
            return newest is not None and newest.k[0] == zoomed[0, 0]

        wait_for(zoom_arrived, 10, "the CameraInfos")
        images[slop] = base + 10_000_000
        probe.camera.publish(rgb_to_image_msg(sequence.frame(index).image, images[slop], "camera"))
        produce_windows(probe, 2)
    given = {kf.stamp_ns: kf.camera_intrinsics for kf in node.mapper.trajectory()}
    np.testing.assert_allclose(given[images[0.02]], sequence.intrinsics)
    np.testing.assert_allclose(given[images[0.0]], zoomed)
    assert probe.set_parameter("camera_info_slop_s", 0.02) == (True, "")


def test_a_camera_info_of_another_size_scales_k_and_says_so(ros) -> None:
    node, probe, _ = ros
    sequence = probe.sequence
    doubled = np.diag([2.0, 2.0, 1.0]) @ sequence.intrinsics
    stamp = probe.stamp()
    probe.camera_info.publish(intrinsics_to_camera_info(doubled, 320, 240, stamp, "camera"))
    wait_for(lambda: getattr(node._camera_info[CAMERA].for_stamp(stamp, 0.0), "width", 0) == 320, 10, "the CameraInfo")
    probe.camera.publish(rgb_to_image_msg(sequence.frame(11).image, stamp, "camera"))
    produce_windows(probe, 2)
    given = {kf.stamp_ns: kf.camera_intrinsics for kf in node.mapper.trajectory()}
    np.testing.assert_allclose(given[stamp], sequence.intrinsics)  # 320x240 calibration scaled to the 160x120 image
    wait_for(lambda: any("its CameraInfo is for 320x240 images, these are 160x120: K is scaled to them" in log.msg
                         for log in probe.messages("/rosout")), 10, "the warning")


def test_published_qos_can_be_overridden_as_rclpy_allows(tmp_path: Path) -> None:
    """qos_overrides.<topic>.publisher.<policy> (rclpy's QoS overriding options) changes an
    output's profile; the others keep theirs.  The offline tool accepts the same YAML."""
    params_file = test_params_file(tmp_path)
    config = yaml.safe_load(params_file.read_text())
    config["scene_from_views"]["ros__parameters"]["qos_overrides"] = {
        f"{NODE}/map_cloud": {"publisher": {"durability": "volatile"}}, f"{NODE}/depth/image": {"publisher": {"depth": 3}}}
    params_file.write_text(yaml.safe_dump(config))
    with running_node(["--ros-args", "--params-file", str(params_file)]) as (node, _probe):
        outputs = node.outputs  # the profiles the publishers were created with, after the overrides
        assert outputs.map_cloud.qos_profile.durability == DurabilityPolicy.VOLATILE
        assert outputs.path.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL  # the same default, untouched
        assert outputs.depth.qos_profile.depth == 3 and outputs.confidence.qos_profile.depth == 16
        graph = [info.qos_profile.durability for info in node.get_publishers_info_by_topic(f"{NODE}/map_cloud")]
        assert DurabilityPolicy.VOLATILE in graph  # as DDS announces it
    from scene_from_views_ros.mapping.settings import settings_from_parameters

    assert settings_from_parameters({f"qos_overrides.{NODE}/map_cloud.publisher.depth": 1}).frames.map_frame == "map"


def test_the_sim_clock_going_back_restarts_keyframing(tmp_path: Path) -> None:
    """Under use_sim_time a looping bag moves /clock back: every camera starts a new segment
    (counted, named "clock"); a step back shorter than keyframe.time_jump_s is no jump."""
    args = ["--ros-args", "--params-file", str(test_params_file(tmp_path)), "-p", "use_sim_time:=true"]
    with running_node(args) as (node, probe):
        clock = probe.node.create_publisher(Clock, "/clock", 10)
        wait_for(lambda: clock.get_subscription_count() > 0, 10, "the node's /clock subscription")

        def publish_clock(seconds: float) -> None:
            clock.publish(Clock(clock=Time(sec=int(seconds), nanosec=int(seconds % 1 * 1e9))))
            wait_for(lambda: abs(node.get_clock().now().nanoseconds / 1e9 - seconds) < 1e-6, 10, f"the node's clock at {seconds} s")

        publish_clock(1000.0)
        publish_clock(999.5)  # 0.5 s back: under keyframe.time_jump_s (1 s)
        assert node.mapper.stats.time_jumps == 0
        produce_windows(probe, 1)
        publish_clock(400.0)
        assert node.mapper.stats.time_jumps == 1 and node.mapper.stats.last_time_jump == "clock: 599.500 s back"
        produce_windows(probe, 1)  # mapping goes on
        assert node.mapper.stats.time_jumps == 1


def run_node(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scene_from_views_ros.ros.node", "--ros-args", *args],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, env={**os.environ, "RCUTILS_COLORIZED_OUTPUT": "0"},
    )


def test_startup_errors_stop_the_node_with_one_clear_message(tmp_path: Path) -> None:
    corrupt = tmp_path / "weights.safetensors"
    corrupt.write_bytes(b"not a checkpoint" * 10)
    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("scene_from_views:\n  ros__parameters:\n    window: [1,\n")
    tiny = ["-p", f"model.config:={TINY / 'config.json'}", "-p", "image_topics:=[/sfv_test/unused]"]
    weights = ["-p", f"model.checkpoint:={TINY / 'weights.safetensors'}"]
    cases = {
        "invalid topic": (["-p", "image_topics:=['/camera/image raw']", *weights, "-p", f"model.config:={TINY / 'config.json'}"],
                          ["'/camera/image raw' is not a valid topic name"]),
        "missing params file": (["--params-file", str(tmp_path / "missing.yaml"), *weights, *tiny],
                                ["cannot read parameter file", "missing.yaml"]),
        "malformed params file": (["--params-file", str(malformed), *weights, *tiny], ["is not valid YAML"]),
        "wrong kwarg": (["-p", "model.not_a_kwarg:=1", "-p", f"model.checkpoint:={TINY / 'weights.safetensors'}", *tiny],
                        ["model.not_a_kwarg", "valid (VggtOptions): ", "model.target_size"]),
        "corrupt checkpoint": (["-p", f"model.checkpoint:={corrupt}", *tiny], [str(corrupt)]),
        "missing checkpoint": (["-p", f"model.checkpoint:={tmp_path / 'missing.pt'}", *tiny], ["missing.pt"]),
    }
    with_threads: dict[str, subprocess.CompletedProcess] = {}
    threads = [threading.Thread(target=lambda name=name, args=args: with_threads.__setitem__(name, run_node(args)))
               for name, (args, _) in cases.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, (_, expected) in cases.items():
        result = with_threads[name]
        output = result.stdout + result.stderr
        assert result.returncode == 1, f"{name}: exit status {result.returncode}\n{output}"
        assert "Traceback" not in output, f"{name}: traceback printed\n{output}"
        errors = [line for line in output.splitlines() if "cannot start" in line]
        assert len(errors) == 1 and len(output.strip().splitlines()) == 1, f"{name}: expected one error line\n{output}"
        for text in expected:
            assert text in errors[0], f"{name}: {text!r} not in {errors[0]!r}"


@pytest.mark.parametrize(("signum", "save"), [(signal.SIGINT, True), (signal.SIGTERM, True), (signal.SIGHUP, True),
                                             (signal.SIGTERM, False)])
def test_every_way_the_node_ends_saves_its_map(tmp_path: Path, signum: int, save: bool) -> None:
    """The node run as a process: after mapping, SIGINT, SIGTERM or SIGHUP end it with status 0,
    no traceback, and the map saved into map.output_dir (map.save_on_shutdown, default on; off,
    nothing is written)."""
    namespace = f"/sfv_{signal.Signals(signum).name.lower()}_{int(save)}"
    camera = f"{namespace}/camera/image_raw"
    out = tmp_path / "saved"
    process = subprocess.Popen(
        [sys.executable, "-m", "scene_from_views_ros.ros.node", "--ros-args", "-r", f"__ns:={namespace}",
         "-p", f"model.checkpoint:={TINY / 'weights.safetensors'}", "-p", f"model.config:={TINY / 'config.json'}",
         "-p", f"model.target_size:={TARGET_SIZE}", "-p", f"image_topics:=[{camera}]", "-p", "image_qos:=reliable",
         "-p", "keyframe.min_change:=0.0", "-p", "window.size:=3", "-p", "window.overlap:=1",
         "-p", "chain.min_inlier_ratio:=0.0", "-p", f"map.output_dir:={out}", "-p", f"map.save_on_shutdown:={str(save).lower()}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT,
        env={**os.environ, "RCUTILS_COLORIZED_OUTPUT": "0"}, preexec_fn=default_signal_handling,
    )
    context = Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("sfv_signal_probe", context=context)
        publisher = node.create_publisher(Image, camera, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        clouds = []
        node.create_subscription(PointCloud2, f"{namespace}/scene_from_views/map_cloud", clouds.append, MAP_CLOUD_QOS)
        executor = MultiThreadedExecutor(context=context)
        executor.add_node(node)
        sequence, stamp, deadline = make_sequence(30, 160, 120), 1_700_000_000 * 10**9, time.monotonic() + 60
        index = 0
        while not clouds:
            assert time.monotonic() < deadline and process.poll() is None, "the node mapped nothing"
            if publisher.get_subscription_count():
                stamp += 10**8
                publisher.publish(rgb_to_image_msg(sequence.frame(index % 30).image, stamp, "camera"))
                index += 1
            executor.spin_once(timeout_sec=0.1)
        process.send_signal(signum)
        output, _ = process.communicate(timeout=60)
        node.destroy_node()
    finally:
        if process.poll() is None:
            process.kill()
        rclpy.shutdown(context=context)
    assert process.returncode == 0 and "Traceback" not in output, output
    if not save:
        assert not out.exists() and "wrote" not in output
        return
    assert "wrote" in output, output
    assert read_ply(out / "map.ply")[0].shape[0] > 0 and len(read_tum(out / "map_trajectory.tum")[0]) >= 3
    assert json.loads((out / "keyframes.json").read_text())["keyframes"]


def test_ctrl_c_while_the_node_starts_ends_it_quietly(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """A Ctrl-C while the model loads (which can take a while) ends the node without a traceback."""
    from scene_from_views_ros.ros import node as node_module

    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(node_module, "SceneFromViewsNode", interrupted)
    assert node_module.main(["scene_from_views_node"]) == 0
    output = "".join(capfd.readouterr())
    assert "Traceback" not in output and "interrupted while starting" in output


def test_a_depth_image_is_published_only_with_a_finite_positive_k() -> None:
    """A model's K with an infinite or negative focal (a random-weight network, a degenerate
    field of view) would make depth_image_proc divide by it: that view's depth, confidence and
    camera_info are left out and counted; the other views are published with their K."""
    from scene_from_views_ros.mapping.chaining import WindowInMap
    from scene_from_views_ros.mapping.keyframes import Frame, Keyframe
    from scene_from_views_ros.mapping.map_frame import MapFrame
    from scene_from_views_ros.mapping.settings import MappingSettings
    from scene_from_views_ros.ros.node import PathCache, build_window_messages

    good = np.array([[50.0, 0, 8], [0, 50.0, 6], [0, 0, 1]])
    infinite, negative = good.copy(), good.copy()
    infinite[0, 0], negative[1, 1] = np.inf, -50.0
    views = 3
    window = WindowInMap(
        index=0, keyframes=[Keyframe(Frame(np.zeros((12, 16, 3), np.uint8), 10 + view, "camera", frame_id="cam")) for view in range(views)],
        poses=[np.eye(4)] * views, depths=[np.ones((12, 16), np.float32)] * views,
        points=[np.ones((12, 16, 3), np.float32)] * views, confidences=[np.full((12, 16), 5.0, np.float32)] * views,
        images=[np.zeros((12, 16, 3), np.uint8)] * views, intrinsics=[good, infinite, negative],
        masks=[np.ones((12, 16), bool)] * views, transform=np.eye(4), fit=None, new_views=[0, 1, 2],
    )
    messages = build_window_messages(window, MappingSettings(), PathCache(10), MapFrame(), [])
    assert messages.views_without_intrinsics == 2 and len(messages.depths) == len(messages.confidences) == 1
    (info,) = messages.camera_infos
    assert stamp_to_ns(info.header.stamp) == 10 and np.isfinite(info.k).all() and info.k[0] == info.k[4] == 50.0
