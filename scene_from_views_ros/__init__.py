"""scene_from_views_ros: feed-forward 3D reconstruction for mapping, with a ROS 2 node on top.

The names below form the `scene_from_views` API; they never import rclpy.
"""
from .core import *  # noqa: F403  (the public API is core's __all__)
from .core import __all__
from .optimizers import SceneOptimizerBase, scene_optimizer_factory

__all__ = [*__all__, "SceneOptimizerBase", "scene_optimizer_factory"]
__version__ = "0.1.0"
