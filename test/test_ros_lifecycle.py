"""The managed (lifecycle) node over real DDS: nothing before configure, the model on configure
(a bad parameter fails the transition with the reason), images mapped only while active,
cleanup undoes configure, shutdown saves the map."""
from __future__ import annotations

import gc
import time
from pathlib import Path

from lifecycle_msgs.msg import State
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from test_ros_node import TINY, produce_windows, running_node, test_params_file, wait_for, wait_for_inputs

from scene_from_views_ros.ros.node import SceneFromViewsLifecycleNode


def test_the_lifecycle_node_maps_only_when_active_and_saves_on_shutdown(tmp_path: Path) -> None:
    with running_node(["--ros-args", "--params-file", str(test_params_file(tmp_path))], SceneFromViewsLifecycleNode) as (node, probe):
        assert probe.camera.get_subscription_count() == 0  # unconfigured: no interface, no model
        # a bad value set before configure fails the transition, naming it
        node.set_parameters([Parameter("model.checkpoint", value=str(tmp_path / "missing.safetensors"))])
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        node.set_parameters([Parameter("model.checkpoint", value=str(TINY / "weights.safetensors"))])
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        wait_for_inputs(node)
        probe.publish_frames(6)  # configured but inactive: frames are dropped
        time.sleep(0.5)
        assert node.mapper.stats.frames == 0
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        produce_windows(probe, 2)
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        frames = node.mapper.stats.frames
        probe.publish_frames(4)
        time.sleep(0.5)
        assert node.mapper.stats.frames == frames
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        wait_for(lambda: probe.camera.get_subscription_count() == 0, 10, "the subscriptions gone after cleanup")
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS  # configure again: a new mapper
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        wait_for_inputs(node)
        produce_windows(probe, 1)
        assert node.trigger_shutdown() == TransitionCallbackReturn.SUCCESS
        assert node._state_machine.current_state[0] == State.PRIMARY_STATE_FINALIZED
        assert (tmp_path / "saved" / "map.ply").stat().st_size > 0 and (tmp_path / "saved" / "keyframes.json").is_file()


def test_a_node_of_the_same_name_after_the_lifecycle_node_still_logs_to_rosout(tmp_path: Path) -> None:
    """rclpy's lifecycle state machine holds the node's handle: unless released, the destroyed
    node (and its /rosout publisher) lives on and a later node of that name logs into it."""
    args = ["--ros-args", "--params-file", str(test_params_file(tmp_path))]
    with running_node(args, SceneFromViewsLifecycleNode) as (managed, _probe):
        assert managed.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert managed.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert managed.trigger_shutdown() == TransitionCallbackReturn.SUCCESS
    # `managed` is still referenced, as reference cycles keep a node until the collector runs:
    # if its handle were still alive, collecting it now would take the new node's /rosout entry
    with running_node(args) as (node, probe):
        del managed
        gc.collect()
        node.get_logger().warning("a line after the lifecycle node")
        wait_for(lambda: any(log.msg == "a line after the lifecycle node" for log in probe.messages("/rosout")), 10, "the line on /rosout")
