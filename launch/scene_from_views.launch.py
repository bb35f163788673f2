"""Launch the scene_from_views mapping node, optionally with RViz.

    ros2 launch scene_from_views_ros scene_from_views.launch.py \
        image_topics:=/camera/color/image_raw model_type:=vggt use_rviz:=true

The arguments (`ros2 launch scene_from_views_ros scene_from_views.launch.py --show-args`) are
declared from scene_from_views_ros.ros.launch_setup.LAUNCH_ARGUMENTS, which also turns them into
the nodes' settings: the parameter files' values stand unless an argument is given.
"""
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.events import matches_action
from launch.logging import get_logger
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

from launch import LaunchDescription
from scene_from_views_ros.mapping.settings import DEFAULT_NODE_NAME
from scene_from_views_ros.ros.launch_setup import LAUNCH_ARGUMENTS, LIFECYCLE_EXECUTABLE, plan_launch

PACKAGE = "scene_from_views_ros"


def launch_nodes(context):
    """The mapper, and RViz when asked for and installed, from the launch arguments."""
    plan = plan_launch(context.launch_configurations, Path(get_package_share_directory(PACKAGE)))
    for warning in plan.warnings:
        get_logger("launch.user").warning(warning)
    mapper = dict(package=PACKAGE, executable=plan.executable, name=DEFAULT_NODE_NAME, parameters=plan.parameters,
                  arguments=plan.arguments, output="screen")
    if plan.executable == LIFECYCLE_EXECUTABLE:
        nodes = managed_node_to_active(LifecycleNode(namespace=plan.namespace or "", **mapper))
    else:
        nodes = [Node(namespace=plan.namespace, **mapper)]
    if plan.rviz_config is not None:
        nodes.append(Node(
            package="rviz2",
            executable="rviz2",
            name="scene_from_views_rviz",
            namespace=plan.namespace,
            parameters=plan.rviz_parameters,
            arguments=["-d", plan.rviz_config],
            output="log",
        ))
    return nodes


def managed_node_to_active(node):
    """The managed node, configured as soon as it starts and activated once configured (only
    then: a later deactivate is left alone)."""
    def change_state(transition_id: int):
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition_id))

    activate = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, start_state="configuring", goal_state="inactive",
        entities=[change_state(Transition.TRANSITION_ACTIVATE)]))
    return [node, activate, change_state(Transition.TRANSITION_CONFIGURE)]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *(DeclareLaunchArgument(argument.name, default_value=argument.default, description=argument.description)
          for argument in LAUNCH_ARGUMENTS),
        OpaqueFunction(function=launch_nodes),
    ])
