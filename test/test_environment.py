"""Smoke test of the environment that scripts/setup_env.sh builds.

Run with the venv's interpreter (`.venv/bin/python -m pytest test -q`): it checks that the ROS 2
client library, the message packages (tf2_msgs built from source by the script), open3d and
torch load together in one process, and that real DDS traffic carries a TFMessage.
"""

import importlib
import os
import time

import pytest

# Modules the package needs side by side at run time. Imported in this one order and process
# so that clashes between their native libraries (DDS, Open3D, libtorch) show up here.
REQUIRED_MODULES = (
    "torch",
    "open3d",
    "numpy",
    "rclpy",
    "tf2_msgs.msg",
    "tf2_msgs.srv",
    "tf2_msgs.action",
    "sensor_msgs.msg",
    "geometry_msgs.msg",
    "std_msgs.msg",
    "nav_msgs.msg",
    "std_srvs.srv",
    "diagnostic_msgs.msg",
)


def test_runtime_modules_import_together() -> None:
    failures = {}
    for name in REQUIRED_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            failures[name] = str(exc)
    assert not failures, (
        f"modules missing from this interpreter: {failures}. "
        "Run `bash scripts/setup_env.sh` and test with `.venv/bin/python -m pytest test -q`."
    )
    from tf2_msgs.msg import TF2Error, TFMessage

    # The generated constants and fields must match the tf2_msgs interface definition.
    assert TF2Error.TRANSFORM_ERROR == 6
    assert TFMessage().transforms == []


def _transform(
    parent: str,
    child: str,
    xyz: tuple[float, float, float],
    quat_xyzw: tuple[float, float, float, float],
    sec: int,
):
    from geometry_msgs.msg import TransformStamped

    t = TransformStamped()
    t.header.frame_id = parent
    t.header.stamp.sec = sec
    t.header.stamp.nanosec = 250_000_000
    t.child_frame_id = child
    t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = xyz
    r = t.transform.rotation
    r.x, r.y, r.z, r.w = quat_xyzw
    return t


def test_rclpy_publishes_and_receives_tf_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from tf2_msgs.msg import TFMessage

    # Keep discovery on this host and on a domain of our own, so parallel runs never cross-talk.
    if "ROS_AUTOMATIC_DISCOVERY_RANGE" not in os.environ:
        monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    domain_id = int(os.environ.get("ROS_DOMAIN_ID") or 1 + os.getpid() % 100)

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    try:
        assert rclpy.get_rmw_implementation_identifier() == os.environ.get(
            "RMW_IMPLEMENTATION", "rmw_fastrtps_cpp"
        )
        node = rclpy.create_node("environment_smoke_test", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        received = []
        node.create_subscription(TFMessage, "environment_smoke_tf", received.append, 10)
        publisher = node.create_publisher(TFMessage, "environment_smoke_tf", 10)

        sent = TFMessage(
            transforms=[
                _transform("map", "camera_0", (1.5, -2.0, 0.25), (0.0, 0.0, 0.7071068, 0.7071068), 7),
                _transform("camera_0", "camera_1", (0.1, 0.2, 0.3), (0.5, 0.5, 0.5, 0.5), 8),
            ]
        )
        # Discovery of the subscription by the publisher takes a moment: publish until heard.
        deadline = time.monotonic() + 15.0
        while not received and time.monotonic() < deadline:
            publisher.publish(sent)
            executor.spin_once(timeout_sec=0.1)
        assert received, f"no TFMessage came back over DDS within 15 s (domain {domain_id})"

        got = received[0]
        assert [t.header.frame_id for t in got.transforms] == ["map", "camera_0"]
        assert [t.child_frame_id for t in got.transforms] == ["camera_0", "camera_1"]
        first = got.transforms[0]
        assert (first.header.stamp.sec, first.header.stamp.nanosec) == (7, 250_000_000)
        assert (first.transform.translation.x, first.transform.translation.y,
                first.transform.translation.z) == (1.5, -2.0, 0.25)
        assert got.transforms[1].transform.rotation.w == 0.5
        assert got == sent

        executor.remove_node(node)
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
