"""Launch the scene_from_views mapping node, optionally with RViz.

    ros2 launch scene_from_views_ros scene_from_views.launch.py \
        image_topic:=/camera/color/image_raw model_type:=vggt use_rviz:=true

Arguments: model_type, image_topic (the one camera topic mapped: image_topics becomes
[image_topic]), params_file (default: the package's config/scene_from_views.yaml, the
parameters every model shares), model_params_file (default: config/models/<model_type>.yaml,
that model's model.* parameters; loaded after params_file), use_rviz.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node

from launch import LaunchDescription

PACKAGE = "scene_from_views_ros"


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    arguments = [
        DeclareLaunchArgument("model_type", default_value="vggt",
                              description="Reconstruction model family (vggt, vggt_robust, ...)."),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw",
                              description="Camera topic to map from (end it in /compressed for CompressedImage)."),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "scene_from_views.yaml"),
                              description="YAML file with the parameters every model shares."),
        DeclareLaunchArgument(
            "model_params_file",
            default_value=PathJoinSubstitution([share, "config", "models", [LaunchConfiguration("model_type"), ".yaml"]]),
            description="YAML file with the model's own model.* parameters (default: the one of model_type).",
        ),
        DeclareLaunchArgument("use_rviz", default_value="true", description="Start RViz with the mapping view."),
    ]
    mapper = Node(
        package=PACKAGE,
        executable="scene_from_views_node",
        name="scene_from_views",
        output="screen",
        parameters=[
            LaunchConfiguration("params_file"),
            LaunchConfiguration("model_params_file"),
            # A list of lists of substitutions is a string array (a flat list would be one string).
            {"model_type": LaunchConfiguration("model_type"), "image_topics": [[LaunchConfiguration("image_topic")]]},
        ],
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="scene_from_views_rviz",
        arguments=["-d", os.path.join(share, "config", "scene_from_views.rviz")],
        condition=IfCondition(LaunchConfiguration("use_rviz")),
        output="log",
    )
    return LaunchDescription([*arguments, mapper, rviz])
