"""The model base class: preprocess -> infer -> postprocess (-> optional scene optimizer)."""
from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import torch

from .device import resolve_device
from .errors import UnknownKwargError
from .images import ImageInput, load_images
from .kwargs import check_kwargs, keyword_names
from .result import PointCloud, SceneFromViewsResult
from .types import SceneFromViewsType

_STAGES = ("preprocess_images", "infer", "postprocess_results")


class SceneFromViewsBase(abc.ABC):
    """A feed-forward reconstruction model behind the common `reconstruct` pipeline.

    Subclasses implement the three stages with explicit keyword-only options; `reconstruct`
    routes each user keyword to the stages that declare it, so options can be given per call
    or once at construction (``SceneFromViewsVggt(conf_thres=30)``, ROS ``model.conf_thres``).
    Construction options (checkpoint, sizes, dtype) are the subclass ``__init__``'s own
    keyword-only parameters.  Stage inputs are RGB uint8: `reconstruct` converts BGR once.
    """

    model_type: ClassVar[SceneFromViewsType]
    default_checkpoint: ClassVar[str | None] = None
    checkpoint_filenames: ClassVar[tuple[str, ...]] = ("model.safetensors", "model.pt")
    is_metric: ClassVar[bool] = False

    def __init__(self, device: str | torch.device | None = None, **call_defaults: Any) -> None:
        self.device = resolve_device(device)
        self.check_call_kwargs(call_defaults)
        self.call_defaults = dict(call_defaults)

    # ----------------------------------------------------------------- keyword handling
    @classmethod
    def construction_kwargs(cls) -> list[str]:
        """Keywords taken when the model is built (checkpoint, sizes, ...)."""
        return keyword_names(cls.__init__)

    @classmethod
    def call_kwargs(cls) -> list[str]:
        """Keywords taken by the pipeline stages (also settable as construction defaults)."""
        return sorted({name for stage in _STAGES for name in keyword_names(getattr(cls, stage))})

    @classmethod
    def valid_kwargs(cls) -> list[str]:
        """Every keyword the factory accepts for this model."""
        return sorted(set(cls.construction_kwargs()) | set(cls.call_kwargs()))

    @classmethod
    def check_call_kwargs(cls, kwargs: dict[str, Any]) -> None:
        check_kwargs(kwargs, [getattr(cls, stage) for stage in _STAGES], f"{cls.__name__}", UnknownKwargError)

    def _stage_kwargs(self, stage: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        accepted = keyword_names(getattr(self, stage))
        return {name: value for name, value in kwargs.items() if name in accepted}

    # ----------------------------------------------------------------- pipeline stages
    @abc.abstractmethod
    def preprocess_images(self, images: list[np.ndarray], **kwargs: Any) -> Any:
        """Turn RGB uint8 images into the network's input (resized, normalised tensors)."""

    @abc.abstractmethod
    def infer(self, processed: Any, **kwargs: Any) -> Any:
        """Run the network on preprocessed input; returns the raw predictions."""

    @abc.abstractmethod
    def postprocess_results(
        self, raw: Any, images: list[np.ndarray], processed: Any, as_pointcloud: bool = True, **kwargs: Any
    ) -> SceneFromViewsResult:
        """Turn raw predictions into a `SceneFromViewsResult` (poses, depth, clouds, ...)."""

    # ----------------------------------------------------------------- the pipeline
    def reconstruct(
        self,
        images: Sequence[ImageInput],
        as_pointcloud: bool = True,
        optimizer: Any = None,
        optimizer_kwargs: dict[str, Any] | None = None,
        rgb: bool = False,
        **kwargs: Any,
    ) -> SceneFromViewsResult:
        """Reconstruct a scene from images (BGR arrays unless ``rgb=True``, or file paths).

        `optimizer` is None, an optimizer name ("dense_scene_optimizer", ...) or a
        `SceneOptimizerBase` instance; `optimizer_kwargs` configure a named one.
        """
        self.check_call_kwargs(kwargs)
        options = {**self.call_defaults, **kwargs}
        rgb_images = load_images(images, rgb=rgb)
        with torch.inference_mode():
            processed = self.preprocess_images(rgb_images, **self._stage_kwargs("preprocess_images", options))
            raw = self.infer(processed, **self._stage_kwargs("infer", options))
        result = self.postprocess_results(
            raw, rgb_images, processed, as_pointcloud=as_pointcloud,
            **self._stage_kwargs("postprocess_results", options),
        )
        if optimizer is not None:
            result = self.apply_optimizer_postprocessing(result, raw, processed, optimizer, optimizer_kwargs)
        return result

    def apply_optimizer_postprocessing(
        self,
        result: SceneFromViewsResult,
        raw: Any,
        processed: Any,
        optimizer: Any,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> SceneFromViewsResult:
        """Refine `result` with a scene optimizer and rebuild the fused cloud from its output."""
        from ..optimizers import SceneOptimizerBase, SceneOptimizerInput, scene_optimizer_factory

        if not isinstance(optimizer, SceneOptimizerBase):
            optimizer = scene_optimizer_factory(str(optimizer), **(optimizer_kwargs or {}))
        output = optimizer.optimize(
            SceneOptimizerInput(result=result, images=result.processed_images, raw=raw, device=str(self.device))
        )
        masks = result.extras.get("masks")
        return replace(
            result,
            camera_poses=output.camera_poses,
            depth_predictions=output.depth_predictions,
            point_clouds=output.point_clouds,
            intrinsics=output.intrinsics,
            confidences=output.confidences,
            global_mesh=output.global_mesh if output.global_mesh is not None else result.global_mesh,
            global_point_cloud=PointCloud.from_views(output.point_clouds, result.processed_images, masks),
        )
