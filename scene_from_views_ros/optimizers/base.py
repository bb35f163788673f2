"""The scene-optimizer extension point: refine a feed-forward reconstruction after the fact.

Optimizers (dense global alignment, sparse global alignment, TSDF refinement) take the
model's result plus whatever raw predictions they need and return refined geometry in the
same conventions as `SceneFromViewsResult` (4x4 camera-to-world OpenCV poses, per-view point
maps in the first view's frame).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..core.options import Options
from ..core.result import SceneFromViewsResult


@dataclass
class SceneOptimizerInput:
    """What an optimizer starts from.

    `raw` carries the model's own predictions (e.g. the pairwise pointmaps of the DUSt3R
    family that global alignment needs); `images` are the processed RGB views.
    """

    result: SceneFromViewsResult
    images: list[np.ndarray]
    raw: Any = None
    device: str = "cpu"


@dataclass
class SceneOptimizerOutput:
    """Refined geometry; every list has one entry per view of the input result."""

    camera_poses: list[np.ndarray]
    depth_predictions: list[np.ndarray]
    point_clouds: list[np.ndarray]
    intrinsics: list[np.ndarray]
    confidences: list[np.ndarray]
    global_mesh: Any | None = None


@dataclass(frozen=True)
class OptimizerOptions(Options):
    """Base of each optimizer's option declaration (its keyword arguments, ROS ``optimizer.*``)."""

    prefix: ClassVar[str] = "optimizer."


class SceneOptimizerBase(abc.ABC):
    """A scene optimizer; its settings are declared in `options_class` and checked when built."""

    name: ClassVar[str]
    options_class: ClassVar[type[OptimizerOptions]] = OptimizerOptions

    def __init__(self, **options: Any) -> None:
        self.options = self.options_class.create(options)

    @abc.abstractmethod
    def optimize(self, optimizer_input: SceneOptimizerInput) -> SceneOptimizerOutput:
        """Refine `optimizer_input.result` and return the refined geometry."""
