"""The TF lookup the node does itself (tf2_ros is not a wheel): chains, interpolation, the errors."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from scene_from_views_ros.ros.tf_buffer import TransformBuffer, TransformUnavailable

S = 10**9


def pose(yaw_deg: float, x: float, y: float = 0.0, z: float = 0.0) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = Rotation.from_euler("z", yaw_deg, degrees=True).as_matrix()
    out[:3, 3] = [x, y, z]
    return out


def robot_tree() -> TransformBuffer:
    """odom -> base_link moving (yaw 0 -> 90 deg, x 0 -> 2 m over 2 s), base_link -> camera_optical static."""
    buffer = TransformBuffer()
    for second in (0, 1, 2):
        buffer.add("odom", "base_link", second * S, pose(45.0 * second, float(second)))
    camera = np.eye(4)
    camera[:3, :3] = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # optical axes in the base frame
    camera[:3, 3] = [0.2, 0.0, 0.5]
    buffer.add("base_link", "camera_optical", 0, camera, static=True)
    return buffer


def test_a_chain_composes_and_interpolates_as_tf2() -> None:
    buffer = robot_tree()
    camera = buffer.lookup("base_link", "camera_optical", 123)
    np.testing.assert_allclose(buffer.lookup("odom", "camera_optical", 1 * S), pose(45.0, 1.0) @ camera, atol=1e-12)
    # halfway between two stamps: linear translation, slerped rotation (22.5 deg at 0.5 m)
    np.testing.assert_allclose(buffer.lookup("odom", "base_link", S // 2), pose(22.5, 0.5), atol=1e-12)
    # the inverse direction, and two frames under a common ancestor
    np.testing.assert_allclose(buffer.lookup("camera_optical", "odom", 2 * S), np.linalg.inv(pose(90.0, 2.0) @ camera), atol=1e-12)
    buffer.add("base_link", "lidar", 0, pose(0.0, 0.0, 0.0, 1.0), static=True)
    np.testing.assert_allclose(buffer.lookup("lidar", "camera_optical", 5 * S // 4),
                               np.linalg.inv(pose(0.0, 0.0, 0.0, 1.0)) @ camera, atol=1e-12)
    assert buffer.frames() == {"base_link": "odom", "camera_optical": "base_link", "lidar": "base_link"}


def test_what_cannot_be_looked_up_says_why() -> None:
    buffer = robot_tree()
    with pytest.raises(TransformUnavailable, match="frame 'camera_left' is not on /tf or /tf_static \\(publish the camera's mount"):
        buffer.lookup("odom", "camera_left", S)
    with pytest.raises(TransformUnavailable, match=r"known up to 2.000 s, not yet at 3.000 s \(waiting for newer data: is the odometry running"):
        buffer.lookup("odom", "camera_optical", 3 * S)
    with pytest.raises(TransformUnavailable, match="older than its history"):
        buffer.lookup("odom", "camera_optical", -S)
    buffer.add("map", "other", 0, np.eye(4), static=True)
    with pytest.raises(TransformUnavailable, match="'other' and 'odom' are not connected"):
        buffer.lookup("odom", "other", S)
    with pytest.raises(ValueError, match="two different frame names"):
        buffer.add("odom", "odom", 0, np.eye(4))


def test_history_is_bounded_and_out_of_order_stamps_are_sorted() -> None:
    buffer = TransformBuffer(cache_s=2.0)
    for second in (3, 0, 1, 2, 4):
        buffer.add("odom", "base_link", second * S, pose(0.0, float(second)))
    np.testing.assert_allclose(buffer.lookup("odom", "base_link", 5 * S // 2)[:3, 3], [2.5, 0, 0])
    with pytest.raises(TransformUnavailable, match="older than its history"):
        buffer.lookup("odom", "base_link", S)  # beyond the 2 s kept before the newest stamp
    buffer.add("odom", "base_link", 4 * S, pose(0.0, 7.0))  # the same stamp again replaces it
    np.testing.assert_allclose(buffer.lookup("odom", "base_link", 4 * S)[:3, 3], [7.0, 0, 0])


def test_wait_for_gives_a_transform_that_arrives_late() -> None:
    buffer = robot_tree()
    late = threading.Timer(0.1, lambda: buffer.add("odom", "base_link", 3 * S, pose(90.0, 3.0)))
    late.start()
    np.testing.assert_allclose(buffer.wait_for("odom", "base_link", 3 * S, timeout_s=5.0)[:3, 3], [3.0, 0, 0])
    late.join()
    with pytest.raises(TransformUnavailable, match="waiting for newer data"):
        buffer.wait_for("odom", "base_link", 4 * S, timeout_s=0.05)
