"""Scene optimizers that refine a feed-forward reconstruction (extension point)."""
from .base import (
    OptimizerOptions,
    PairPrediction,
    SceneOptimizerBase,
    SceneOptimizerInput,
    SceneOptimizerOutput,
    optimizer_input_from_result,
)
from .factory import (
    NO_OPTIMIZER,
    available_optimizers,
    chain_uses_known_intrinsics,
    chain_uses_known_poses,
    optimizer_chain,
    optimizer_class,
    optimizer_from_config,
    scene_optimizer_factory,
)

__all__ = [
    "NO_OPTIMIZER",
    "OptimizerOptions",
    "PairPrediction",
    "SceneOptimizerBase",
    "SceneOptimizerInput",
    "SceneOptimizerOutput",
    "available_optimizers",
    "chain_uses_known_intrinsics",
    "chain_uses_known_poses",
    "optimizer_chain",
    "optimizer_class",
    "optimizer_from_config",
    "optimizer_input_from_result",
    "scene_optimizer_factory",
]
