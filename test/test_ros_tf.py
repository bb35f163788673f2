"""The node in a robot's TF tree (REP-105), over real DDS, with a simulated robot.

A synthetic scene is rendered from a known camera trajectory; the probe publishes what a robot
does: odom -> base_link at each frame's stamp (odometry in metres with a 0.3% drift),
base_link -> camera_optical on /tf_static, the images (frame_id camera_optical) and CameraInfo.
The model is the synthetic backend: each window's true geometry in a random Sim(3) gauge, so
the node must find the metres itself (scale_source odometry).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from geometry_msgs.msg import TransformStamped
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from scene_from_views_interfaces.srv import SaveMap
from sensor_msgs.msg import CameraInfo, Image
from test_ros_node import CAMERA, CAMERA_INFO, NODE, running_node, test_params_file, wait_for
from tf2_msgs.msg import TFMessage

from scene_from_views_ros.geometry.sim3 import umeyama
from scene_from_views_ros.io.messages import stamp_to_ns
from scene_from_views_ros.mapping.map_frame import OPTICAL_TO_ROS
from scene_from_views_ros.mapping.synthetic import SyntheticWindowBackend, make_sequence, with_rig_camera
from scene_from_views_ros.ros.conversions import (
    intrinsics_to_camera_info,
    poses_to_transforms,
    rgb_to_image_msg,
    transform_to_matrix,
)
from scene_from_views_ros.ros.tf_buffer import TransformBuffer

FRAMES = 28
CAMERA_FRAME = "camera_optical"
ODOM, BASE = "wheel_odom", "base_footprint"  # not the defaults: the parameters name the robot's frames
BASE_FROM_CAMERA = OPTICAL_TO_ROS.copy()
BASE_FROM_CAMERA[:3, 3] = [0.2, 0.0, 0.5]
ODOMETRY_DRIFT = 0.003  # odometry overestimates distances by 0.3%


def robot_params(tmp_path: Path, **changes: object) -> Path:
    path = test_params_file(tmp_path)
    config = yaml.safe_load(path.read_text())
    params = config["scene_from_views"]["ros__parameters"]
    params.update(map_frame="map", odom_frame=ODOM, base_frame=BASE, **changes)
    params["keyframe"]["min_change"] = 0.0
    path.write_text(yaml.safe_dump(config))
    return path


def all_transforms(probe, odometry: bool) -> list[TransformStamped]:
    """Every transform on /tf (the probe records it), and the camera mount it put on /tf_static."""
    static = poses_to_transforms([BASE_FROM_CAMERA], BASE, [CAMERA_FRAME], [0]) if odometry else []
    return [t for msg in probe.messages("/tf") for t in msg.transforms] + static


def settle(node, probe) -> None:
    """Wait until every placed window's keyframe poses and odometry messages arrived."""
    wait_for(lambda: probe.count(f"{NODE}/keyframe_poses") >= node.mapper.stats.windows_done, 10, "keyframe poses")
    keyframes = lambda: sum(len(message.poses) for message in probe.messages(f"{NODE}/keyframe_poses"))  # noqa: E731
    wait_for(lambda: probe.count(f"{NODE}/odometry") >= keyframes() or node._tf_links.status.problem, 10, "odometry")


def drive(node, probe, odometry: bool, lost_frame_from: int = FRAMES) -> object:
    """Publish the simulated robot's frames (and, with `odometry`, its TF); returns the sequence.
    From frame `lost_frame_from` on the images name an optical frame that TF does not have."""
    sequence = make_sequence(FRAMES, 160, 120)
    node.mapper.set_reconstructor(SyntheticWindowBackend(sequence, depth_noise=0.0))
    latched = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    tf = probe.node.create_publisher(TFMessage, "/tf", 100)
    tf_static = probe.node.create_publisher(TFMessage, "/tf_static", latched)
    if odometry:
        tf_static.publish(TFMessage(transforms=poses_to_transforms([BASE_FROM_CAMERA], BASE, [CAMERA_FRAME], [0])))
        wait_for(lambda: BASE in node.tf_buffer.frames().values(), 10, "the static camera mount in the node's TF buffer")
    for index in range(FRAMES):
        stamp = int(sequence.stamps_ns[index])
        if odometry:
            base = sequence.poses[index] @ np.linalg.inv(BASE_FROM_CAMERA)
            base[:3, 3] *= 1.0 + ODOMETRY_DRIFT
            tf.publish(TFMessage(transforms=poses_to_transforms([base], ODOM, [BASE], [stamp])))
        frame_id = CAMERA_FRAME if index < lost_frame_from else "lost_optical"
        probe.camera_info.publish(intrinsics_to_camera_info(sequence.intrinsics, 160, 120, stamp, frame_id))
        probe.camera.publish(rgb_to_image_msg(sequence.render(index)[0], stamp, frame_id))
        wait_for(lambda index=index: node.mapper.stats.frames > index, 10, f"frame {index} at the node")
    assert node.mapper.flush(timeout=60.0)
    wait_for(lambda: node.mapper.stats.windows_done >= 4, 30, "four placed windows")
    return sequence


def run_robot(tmp_path: Path, odometry: bool, **params: object) -> tuple[object, dict[str, str], list, list, object, list]:
    """The node with the simulated robot: (sequence, final diagnostics, transforms, each window's
    new keyframe poses, the final path, the ~/odometry messages)."""
    with running_node(["--ros-args", "--params-file", str(robot_params(tmp_path, **params)), "-p", "device:=cpu"]) as (node, probe):
        sequence = drive(node, probe, odometry)
        settle(node, probe)
        diagnostics = probe.fresh_diagnostics()
        diagnostics["message"] = next(s.message for a in reversed(probe.messages("/diagnostics")) for s in a.status
                                      if s.name.startswith("scene_from_views"))
        assert probe.call(probe.save_map, SaveMap.Request()).success
        return (sequence, diagnostics, all_transforms(probe, odometry), probe.messages(f"{NODE}/keyframe_poses"),
                probe.messages(f"{NODE}/path")[-1], probe.messages(f"{NODE}/odometry"))


def path_scale(sequence, path) -> tuple[float, np.ndarray, np.ndarray]:
    """The scale of the best similarity from the published path to the true camera positions."""
    index_of = {int(stamp): i for i, stamp in enumerate(sequence.stamps_ns)}
    truth = np.stack([sequence.poses[index_of[stamp_to_ns(p.header.stamp)], :3, 3] for p in path.poses])
    mapped = np.stack([pose_matrix(p.pose)[:3, 3] for p in path.poses])
    return float(np.cbrt(np.linalg.det(umeyama(mapped, truth)[:3, :3]))), mapped, truth


def test_map_to_odom_keeps_one_parent_per_frame_and_maps_in_metres(tmp_path: Path) -> None:
    sequence, diagnostics, transforms, new_keyframes, path, odometry = run_robot(tmp_path, odometry=True)
    assert (diagnostics["tf_mode"], diagnostics["scale_source"]) == ("map_to_odom", "odometry")
    assert int(diagnostics["scale_pairs"]) >= 3 and float(diagnostics["scale_spread"]) < 0.01

    # one parent per frame: the node publishes map -> odom only
    parents: dict[str, set[str]] = {}
    for transform in transforms:
        parents.setdefault(transform.child_frame_id, set()).add(transform.header.frame_id)
    assert parents == {ODOM: {"map"}, BASE: {ODOM}, CAMERA_FRAME: {BASE}}
    buffer = TransformBuffer(cache_s=1e9)  # the synthetic stamps are far older than the republished "now" ones
    for transform in transforms:
        buffer.add(transform.header.frame_id, transform.child_frame_id, stamp_to_ns(transform.header.stamp),
                   transform_to_matrix(transform.transform), static=transform.child_frame_id == CAMERA_FRAME)
    # map -> odom -> base_link -> camera equals each window's keyframe poses at their stamps
    for message in new_keyframes:
        for stamped in message.poses:
            pose = pose_matrix(stamped.pose)
            np.testing.assert_allclose(buffer.lookup("map", CAMERA_FRAME, stamp_to_ns(stamped.header.stamp)), pose, atol=1e-6)
    # the map is base_link at the first keyframe: z up as the robot's
    first = new_keyframes[0].poses[0]
    np.testing.assert_allclose(buffer.lookup("map", BASE, stamp_to_ns(first.header.stamp)), np.eye(4), atol=1e-6)
    # ~/odometry: the base in the map at each new keyframe, as TF has it
    assert len(odometry) == sum(len(message.poses) for message in new_keyframes)
    for message in odometry:
        assert (message.header.frame_id, message.child_frame_id) == ("map", BASE)
        np.testing.assert_allclose(buffer.lookup("map", BASE, stamp_to_ns(message.header.stamp)), pose_matrix(message.pose.pose), atol=1e-6)
    # metres: the path against the true camera positions (scale 1 within 2%), ATE under 1% of the path
    scale, mapped, truth = path_scale(sequence, path)
    assert abs(scale - 1.0) < 0.02, scale
    # ~/save_map writes the map as published: the path's poses, in metres
    saved = json.loads((tmp_path / "saved" / "keyframes.json").read_text())
    assert saved["units"] == "metres"
    saved_poses = {keyframe["stamp_ns"]: np.array(keyframe["pose"]) for keyframe in saved["keyframes"]}
    for stamped in path.poses:
        np.testing.assert_allclose(saved_poses[stamp_to_ns(stamped.header.stamp)], pose_matrix(stamped.pose), atol=1e-9)
    rigid = umeyama(mapped, truth, with_scale=False)
    ate = np.sqrt(np.mean(np.sum((mapped @ rigid[:3, :3].T + rigid[:3, 3] - truth) ** 2, axis=1)))
    assert ate < 0.01 * sequence.path_length(), (ate, sequence.path_length())


def pose_matrix(pose) -> np.ndarray:
    from scene_from_views_ros.geometry.sim3 import quaternion_to_rotation

    out = np.eye(4)
    q, t = pose.orientation, pose.position
    out[:3, :3] = quaternion_to_rotation(np.array([q.x, q.y, q.z, q.w]))
    out[:3, 3] = [t.x, t.y, t.z]
    return out


@pytest.mark.parametrize("params", [{"scale_source": "none"}, {"scale_min_baseline_m": 1000.0}], ids=["no_source", "no_baseline"])
def test_without_a_scale_the_map_stays_in_model_units_and_says_so(tmp_path: Path, params: dict[str, object]) -> None:
    sequence, diagnostics, _, _, path, _ = run_robot(tmp_path, odometry=True, **params)
    assert diagnostics["tf_mode"] == "map_to_odom" and float(diagnostics["scale"]) == 1.0 and int(diagnostics["scale_pairs"]) == 0
    assert abs(path_scale(sequence, path)[0] - 1.0) > 0.1  # the first window's gauge, not metres
    if params.get("scale_source") == "none":
        assert diagnostics["scale_source"] == "none"


def test_map_to_odom_without_the_cameras_tf_waits_and_says_which_transform(tmp_path: Path) -> None:
    """No odometry on TF: nothing is published on /tf, the windows are still mapped, and
    /diagnostics names the missing transform."""
    _, diagnostics, transforms, new_keyframes, _, odometry = run_robot(tmp_path, odometry=False, tf_mode="map_to_odom")
    assert transforms == [] and odometry == [] and len(new_keyframes) >= 4
    assert diagnostics["tf_mode"] == "waiting for TF"
    assert f"waits for TF: frame '{CAMERA_FRAME}' is not on /tf or /tf_static" in diagnostics["message"]


def test_a_camera_frame_missing_from_tf_is_counted_named_and_mapping_goes_on(tmp_path: Path) -> None:
    """Midway the images name an optical frame TF does not have: those keyframes are mapped but
    left out of TF and ~/odometry, counted, and /diagnostics names the missing transform."""
    with running_node(["--ros-args", "--params-file", str(robot_params(tmp_path)), "-p", "device:=cpu"]) as (node, probe):
        sequence = drive(node, probe, odometry=True, lost_frame_from=FRAMES // 2)
        settle(node, probe)
        problem = node._tf_links.status.problem
        diagnostics = probe.fresh_diagnostics()
        stamps = [stamp_to_ns(p.header.stamp) for message in probe.messages(f"{NODE}/keyframe_poses") for p in message.poses]
        odometry = [stamp_to_ns(message.header.stamp) for message in probe.messages(f"{NODE}/odometry")]
        wait_for(lambda: any("frame 'lost_optical' is not on /tf or /tf_static (publish the camera's mount" in log.msg
                             and "(mapped, without TF or odometry)" in log.msg for log in probe.messages("/rosout")), 10, "the warning")
    assert "frame 'lost_optical' is not on /tf or /tf_static" in problem
    lost_from = int(sequence.stamps_ns[FRAMES // 2])
    lost = [stamp for stamp in stamps if stamp >= lost_from]
    assert diagnostics["tf_mode"] == "map_to_odom" and int(diagnostics["keyframes_without_tf"]) == len(lost) >= 4
    assert int(diagnostics["windows_done"]) >= 4 and odometry == [stamp for stamp in stamps if stamp < lost_from]


def test_scale_source_model_needs_a_metric_model() -> None:
    from scene_from_views_ros.core.errors import InvalidOptionError
    from scene_from_views_ros.mapping.settings import FrameNames
    from scene_from_views_ros.ros.tf_links import check_scale_source

    metric, relative = SyntheticWindowBackend(make_sequence(2, 16, 12)), SyntheticWindowBackend(make_sequence(2, 16, 12))
    metric.is_metric = True
    check_scale_source(FrameNames(scale_source="model"), metric)
    check_scale_source(FrameNames(scale_source="odometry"), relative)
    with pytest.raises(InvalidOptionError, match="scale_source=model needs a metric model"):
        check_scale_source(FrameNames(scale_source="model"), relative)


@pytest.mark.parametrize("tf_mode", ["standalone", "none"])
def test_without_odometry_the_map_is_z_up_at_the_first_camera(tmp_path: Path, tf_mode: str) -> None:
    params = robot_params(tmp_path, tf_mode=tf_mode)
    with running_node(["--ros-args", "--params-file", str(params), "-p", "device:=cpu", "-p", "publish.keyframe_frames:=true"]) as (node, probe):
        drive(node, probe, odometry=False)
        settle(node, probe)
        transforms = all_transforms(probe, odometry=False)
        first = probe.messages(f"{NODE}/keyframe_poses")[0].poses[0]
        odometry, new_keyframes = probe.messages(f"{NODE}/odometry"), probe.messages(f"{NODE}/keyframe_poses")
        assert probe.fresh_diagnostics()["scale_source"] == "none"
    # the first camera looks along the map's x axis, its image "down" along -z: z is up
    np.testing.assert_allclose(pose_matrix(first.pose), OPTICAL_TO_ROS, atol=1e-9)
    # ~/odometry without odometry: the camera in the map, as the keyframe poses
    poses = {stamp_to_ns(p.header.stamp): pose_matrix(p.pose) for message in new_keyframes for p in message.poses}
    assert len(odometry) == len(poses) and all(message.child_frame_id == CAMERA_FRAME for message in odometry)
    for message in odometry:
        np.testing.assert_allclose(pose_matrix(message.pose.pose), poses[stamp_to_ns(message.header.stamp)], atol=1e-9)
    if tf_mode == "none":
        assert transforms == []
        return
    children = [t.child_frame_id for t in transforms]
    keyframe_frames = [c for c in children if c.startswith("test_kf_")]
    # the camera at each new keyframe, and each keyframe's own frame exactly once
    assert set(children) == {CAMERA_FRAME, *keyframe_frames} and len(keyframe_frames) == len(set(keyframe_frames))
    assert children.count(CAMERA_FRAME) == len(keyframe_frames)


RIGHT, RIGHT_INFO, RIGHT_FRAME = "/sfv_test/right/image_raw", "/sfv_test/right/camera_info", "right_optical"
RIG_OFFSET_NS = 4_000_000  # the right camera's shutter 4 ms after the left's


def rig_extrinsics() -> np.ndarray:
    """The right camera in the left one's optical frame: 0.3 m to its right, turned 25 degrees right."""
    angle = np.radians(25.0)
    left_from_right = np.eye(4)
    left_from_right[:3, :3] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    left_from_right[:3, 3] = [0.3, 0.0, 0.0]
    return left_from_right


def test_a_camera_rig_maps_each_moment_as_one_multi_view_keyframe(tmp_path: Path) -> None:
    """Two cameras (left and right, rig extrinsics on /tf_static, right stamped 4 ms later, each
    with its own CameraInfo): each moment is one two-view keyframe, windows never split it, each
    view keeps its camera's frame and calibration, and TF places both cameras through the rig."""
    left_from_right = rig_extrinsics()
    left = make_sequence(FRAMES, 160, 120)
    sequence = with_rig_camera(left, left_from_right, RIG_OFFSET_NS)
    right_intrinsics = sequence.intrinsics + np.array([[4.0, 0, 2.0], [0, 4.0, -1.0], [0, 0, 0]])  # its own calibration
    params = robot_params(tmp_path, image_topics=[CAMERA, RIGHT], camera_info_topics=[CAMERA_INFO, RIGHT_INFO], rig_slop_s=0.01)
    mounts = [BASE_FROM_CAMERA, BASE_FROM_CAMERA @ left_from_right]
    with running_node(["--ros-args", "--params-file", str(params), "-p", "device:=cpu"]) as (node, probe):
        node.mapper.set_reconstructor(SyntheticWindowBackend(sequence, depth_noise=0.0))
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        right, right_info = probe.node.create_publisher(Image, RIGHT, reliable), probe.node.create_publisher(CameraInfo, RIGHT_INFO, reliable)
        tf = probe.node.create_publisher(TFMessage, "/tf", 100)
        latched = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        probe.node.create_publisher(TFMessage, "/tf_static", latched).publish(
            TFMessage(transforms=poses_to_transforms(mounts, BASE, [CAMERA_FRAME, RIGHT_FRAME], [0, 0])))
        wait_for(lambda: {CAMERA_FRAME, RIGHT_FRAME} <= set(node.tf_buffer.frames()), 10, "the rig on /tf_static")
        wait_for(lambda: all(sub.get_publisher_count() for sub in node.subscriptions if sub.topic_name in (RIGHT, RIGHT_INFO)), 10, "right")
        for index in range(FRAMES):
            stamp = int(left.stamps_ns[index])
            base = left.poses[index] @ np.linalg.inv(BASE_FROM_CAMERA)
            base[:3, 3] *= 1.0 + ODOMETRY_DRIFT
            tf.publish(TFMessage(transforms=poses_to_transforms([base, base], ODOM, [BASE, BASE], [stamp, stamp + RIG_OFFSET_NS])))
            probe.camera_info.publish(intrinsics_to_camera_info(sequence.intrinsics, 160, 120, stamp, CAMERA_FRAME))
            probe.camera.publish(rgb_to_image_msg(sequence.render(index)[0], stamp, CAMERA_FRAME))
            right_info.publish(intrinsics_to_camera_info(right_intrinsics, 160, 120, stamp + RIG_OFFSET_NS, RIGHT_FRAME))
            right.publish(rgb_to_image_msg(sequence.render(FRAMES + index)[0], stamp + RIG_OFFSET_NS, RIGHT_FRAME))
            wait_for(lambda index=index: node.mapper.stats.frames >= 2 * (index + 1), 10, f"rig frame {index} at the node")
        assert node.mapper.flush(timeout=60.0)
        wait_for(lambda: node.mapper.stats.windows_done >= 4, 30, "four placed windows")
        settle(node, probe)
        diagnostics = probe.fresh_diagnostics()
        trajectory = node.mapper.trajectory()
        transforms = [t for msg in probe.messages("/tf") for t in msg.transforms]
        new_keyframes, depth_infos = probe.messages(f"{NODE}/keyframe_poses"), probe.messages(f"{NODE}/depth/camera_info")
        assert probe.call(probe.save_map, SaveMap.Request()).success
    assert diagnostics["scale_source"] == "odometry" and int(diagnostics["rig_frames_unmatched"]) == 0
    # one two-view keyframe per moment: left then right, 4 ms apart, never split by a window
    assert len(trajectory) >= 8 and len(trajectory) % 2 == 0
    for first, second in zip(trajectory[::2], trajectory[1::2], strict=True):
        assert (first.camera_id, second.camera_id) == (CAMERA, RIGHT)
        assert second.stamp_ns - first.stamp_ns == RIG_OFFSET_NS and first.window_index == second.window_index
        np.testing.assert_allclose(first.camera_intrinsics, sequence.intrinsics)  # each camera's own CameraInfo
        np.testing.assert_allclose(second.camera_intrinsics, right_intrinsics)
    assert {info.header.frame_id for info in depth_infos} == {CAMERA_FRAME, RIGHT_FRAME}
    # one parent per frame; map -> odom -> base_link -> each camera is that camera's keyframe pose
    parents: dict[str, set[str]] = {}
    for transform in transforms:
        parents.setdefault(transform.child_frame_id, set()).add(transform.header.frame_id)
    assert parents == {ODOM: {"map"}, BASE: {ODOM}}
    buffer = TransformBuffer(cache_s=1e9)
    for transform in transforms:
        buffer.add(transform.header.frame_id, transform.child_frame_id, stamp_to_ns(transform.header.stamp),
                   transform_to_matrix(transform.transform), static=False)
    for mount, frame in zip(mounts, (CAMERA_FRAME, RIGHT_FRAME), strict=True):
        buffer.add(BASE, frame, 0, mount, static=True)
    poses = {stamp_to_ns(p.header.stamp): pose_matrix(p.pose) for message in new_keyframes for p in message.poses}
    for keyframe in trajectory:
        frame = CAMERA_FRAME if keyframe.camera_id == CAMERA else RIGHT_FRAME
        np.testing.assert_allclose(buffer.lookup("map", frame, keyframe.stamp_ns), poses[keyframe.stamp_ns], atol=1e-6)
    # in the map (metres), the right camera sits where the rig puts it: within the odometry's 0.3% drift
    for first, second in zip(trajectory[::2], trajectory[1::2], strict=True):
        relative = np.linalg.inv(poses[first.stamp_ns]) @ poses[second.stamp_ns]
        np.testing.assert_allclose(relative[:3, :3], left_from_right[:3, :3], atol=1e-6)
        np.testing.assert_allclose(relative[:3, 3], left_from_right[:3, 3], atol=0.01 * 0.3)
