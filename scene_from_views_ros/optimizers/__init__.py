"""Scene optimizers that refine a feed-forward reconstruction (extension point)."""
from .base import OptimizerOptions, SceneOptimizerBase, SceneOptimizerInput, SceneOptimizerOutput
from .factory import available_optimizers, optimizer_class, scene_optimizer_factory

__all__ = [
    "OptimizerOptions",
    "SceneOptimizerBase",
    "SceneOptimizerInput",
    "SceneOptimizerOutput",
    "available_optimizers",
    "optimizer_class",
    "scene_optimizer_factory",
]
