"""Scene optimizers that refine a feed-forward reconstruction (extension point)."""
from .base import (
    OptimizerOptions,
    PairPrediction,
    SceneOptimizerBase,
    SceneOptimizerInput,
    SceneOptimizerOutput,
    optimizer_input_from_result,
)
from .factory import available_optimizers, optimizer_class, scene_optimizer_factory

__all__ = [
    "OptimizerOptions",
    "PairPrediction",
    "SceneOptimizerBase",
    "SceneOptimizerInput",
    "SceneOptimizerOutput",
    "available_optimizers",
    "optimizer_class",
    "optimizer_input_from_result",
    "scene_optimizer_factory",
]
