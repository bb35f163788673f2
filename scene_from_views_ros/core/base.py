"""The model base class: preprocess -> infer -> postprocess (-> optional scene optimizer)."""
from __future__ import annotations

import abc
import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch

from ..geometry.camera import intrinsics_in_original_pixels
from .cameras import KnownCameras
from .device import resolve_device
from .errors import InvalidImageError, InvalidOptionError, UnknownKwargError
from .images import ImageInput, load_images
from .options import BUILD, CALL, Options, option
from .result import PointCloud, SceneFromViewsResult
from .types import SceneFromViewsType

_ModelT = TypeVar("_ModelT", bound="SceneFromViewsBase")


@dataclass(frozen=True)
class ModelOptions(Options):
    """Base of each model's option declaration (its keyword arguments, ROS ``model.*``)."""

    prefix: ClassVar[str] = "model."

    def check_window(self, views: int) -> None:
        """Raise InvalidOptionError when these options cannot reconstruct windows of `views`
        views (checked where the window size is given, not at the first window)."""


def checkpoint_option(default: str) -> Any:
    """The `checkpoint` option every model declares, with that model's release as default."""
    return option(
        default,
        "Weights: a Hugging Face repo id (downloaded into the hub cache, HF_HOME / HF_HUB_OFFLINE "
        "honoured) or one file of a repo (owner/name/path/file.pth), a local .safetensors/.pt/.pth file, "
        "or a folder holding one.",
        nonempty=True, path=True, stage=BUILD,
    )


class SceneFromViewsBase(abc.ABC):
    """A feed-forward reconstruction model behind the common `reconstruct` pipeline.

    Its options are declared once, in `options_class` (a frozen `ModelOptions` dataclass):
    construction options (checkpoint, architecture, precision) are fixed when the model is
    built; per-call options can also be given to each `reconstruct` call.  Every option is
    checked when given; the stages read the checked values from `call_options`.  Stage
    inputs are RGB uint8: `reconstruct` converts BGR once.
    """

    model_type: ClassVar[SceneFromViewsType]
    options_class: ClassVar[type[ModelOptions]]
    checkpoint_filenames: ClassVar[tuple[str, ...]] = ("model.safetensors", "model.pt")
    #: Whether outputs are in metres (per class, or set by the loaded checkpoint).
    is_metric: bool = False
    #: Whether its optimizer input carries local descriptors (what the sparse optimizer matches).
    gives_descriptors: ClassVar[bool] = False
    #: The scene optimizer `reconstruct` runs unless told otherwise ("none": the model's own result).
    default_optimizer: ClassVar[str] = "none"
    #: Whether `reconstruct` can take the views' known intrinsics / camera-to-world poses
    #: (`infer(..., known_cameras=KnownCameras)`); a model that cannot refuses them.
    accepts_known_intrinsics: ClassVar[bool] = False
    accepts_known_poses: ClassVar[bool] = False

    def __init__(
        self, device: str | torch.device | None = None, optimizer_config: Mapping[str, Any] | None = None, **options: Any
    ) -> None:
        """`optimizer_config` ({"type": name, **its options}, or {"type": "none"}) chooses the
        scene optimizer `reconstruct` runs by default; None keeps `default_optimizer`."""
        from ..optimizers import optimizer_from_config

        self.options = self.options_class.create(options)  # first: a bad option builds nothing
        self.optimizer = optimizer_from_config(optimizer_config, self.default_optimizer)
        self.device = resolve_device(device)

    # ----------------------------------------------------------------- options
    @classmethod
    def valid_kwargs(cls) -> list[str]:
        """Every keyword the factory accepts for this model."""
        return cls.options_class.names()

    @classmethod
    def construction_kwargs(cls) -> list[str]:
        """Keywords fixed when the model is built (checkpoint, architecture, precision)."""
        return cls.options_class.names(stage=BUILD)

    @classmethod
    def call_kwargs(cls) -> list[str]:
        """Keywords that `reconstruct` and the stages also take per call."""
        return cls.options_class.names(stage=CALL)

    def call_options(self, overrides: Mapping[str, Any]) -> Any:
        """This model's options with per-call `overrides` applied and checked."""
        fixed = sorted(set(overrides) & set(self.construction_kwargs()))
        if fixed:
            raise UnknownKwargError(
                f"{', '.join(fixed)} {'are construction options' if len(fixed) > 1 else 'is a construction option'} "
                f"of {type(self).__name__}: build another model with it (scene_from_views_factory(..., {fixed[0]}=...)); "
                f"per-call options: {', '.join(self.call_kwargs())}"
            )
        return self.options.changed(**overrides)

    def with_call_options(self: _ModelT, **overrides: Any) -> _ModelT:
        """A copy sharing this model's network whose per-call defaults have `overrides`."""
        clone = copy.copy(self)
        clone.options = self.call_options(overrides)
        return clone

    def check_window(self, views: int) -> None:
        """Raise InvalidOptionError when this model cannot reconstruct windows of `views` views
        (its options' constraints, and what its loaded network needs); called where the window
        size is given, so that a bad size fails at start-up, not at the first window."""
        self.options.check_window(views)

    def uses_known_intrinsics(self, optimizer: Any = None) -> bool:
        """Whether `reconstruct` with `optimizer` (None: this model's own) uses known intrinsics."""
        return self.accepts_known_intrinsics

    def uses_known_poses(self, optimizer: Any = None) -> bool:
        """Whether `reconstruct` with `optimizer` (None: this model's own) uses known poses."""
        return self.accepts_known_poses

    def known_intrinsics_refusal(self) -> str:
        """Why this model refuses known cameras, and what to do instead."""
        return "it estimates its own cameras from the images"

    def check_known_cameras(self, intrinsics: bool, poses: bool, optimizer: Any = None) -> None:
        """Refuse known intrinsics / poses this model (with `optimizer`) cannot use, rather than ignore them."""
        unused = [name for name, given, used in (("intrinsics", intrinsics, self.uses_known_intrinsics),
                                                  ("poses", poses, self.uses_known_poses)) if given and not used(optimizer)]
        if unused:
            raise InvalidOptionError(
                f"{type(self).__name__} cannot use known camera {' or '.join(unused)}: {self.known_intrinsics_refusal()}; "
                "leave them out (the node and the offline tool pass them only to models that use them)"
            )

    def check_image(self, image: np.ndarray) -> None:
        """Raise InvalidImageError if this model cannot take `image` (RGB uint8 HxWx3) with its
        current options.  Cheap: a mapper drops such a frame before it reaches a window."""
        if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 2:
            raise InvalidImageError(f"a {image.shape} image cannot be reconstructed; expected RGB HxWx3 of at least 2x2 pixels")

    # ----------------------------------------------------------------- pipeline stages
    @abc.abstractmethod
    def preprocess_images(self, images: list[np.ndarray], **kwargs: Any) -> Any:
        """Turn RGB uint8 images into the network's input (resized, normalised tensors)."""

    @abc.abstractmethod
    def infer(self, processed: Any, **kwargs: Any) -> Any:
        """Run the network on preprocessed input; returns the raw predictions."""

    @abc.abstractmethod
    def create_optimizer_input(self, raw: Any, processed: Any) -> Any:
        """The `SceneOptimizerInput` of this model's predictions: pairwise models hand over their
        pair predictions, multi-view models one prediction per ordered view pair built from
        their point maps (`optimizer_input_from_result`), so that any optimizer refines any model."""

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
        known_intrinsics: Any = None,
        known_poses: Any = None,
        **kwargs: Any,
    ) -> SceneFromViewsResult:
        """Reconstruct a scene from images (BGR arrays unless ``rgb=True``, or file paths).

        `kwargs` are per-call options (see `call_kwargs`).  `as_pointcloud=False` skips
        fusing the global cloud (the per-view outputs and masks are still there).
        `optimizer` is None (this model's: its `optimizer_config`, else `default_optimizer`),
        "none" (no optimizer), an optimizer name ("dense_scene_optimizer", ...), a
        `SceneOptimizerBase` instance, or a list of them run in turn (e.g. an alignment, then
        "tsdf_refinement"); `optimizer_kwargs` configure a named one.
        `known_intrinsics` (one 3x3 per image, in its pixels) and `known_poses` (one 4x4
        camera-to-world per image, OpenCV axes) are cameras the caller knows, for a model that
        accepts them (`accepts_known_intrinsics` / `accepts_known_poses`); see core/cameras.py.
        """
        self.call_options(kwargs)  # checked before any image is read
        self.check_known_cameras(known_intrinsics is not None, known_poses is not None, optimizer)
        if optimizer is None:
            optimizer = self.optimizer
        elif isinstance(optimizer, str) and optimizer.strip().lower() in ("none", ""):
            optimizer = None
        rgb_images = load_images(images, rgb=rgb)
        cameras = KnownCameras.checked(known_intrinsics, known_poses, [image.shape[:2] for image in rgb_images])
        with torch.inference_mode():
            processed = self.preprocess_images(rgb_images, **kwargs)
            raw = self.infer(processed, **kwargs) if cameras is None else self.infer(processed, known_cameras=cameras, **kwargs)
        result = self.postprocess_results(raw, rgb_images, processed, as_pointcloud=as_pointcloud, **kwargs)
        if optimizer is not None:
            result = self.apply_optimizer_postprocessing(result, raw, processed, optimizer, optimizer_kwargs, as_pointcloud)
        return result

    def apply_optimizer_postprocessing(
        self,
        result: SceneFromViewsResult,
        raw: Any,
        processed: Any,
        optimizer: Any,
        optimizer_kwargs: dict[str, Any] | None = None,
        as_pointcloud: bool = True,
    ) -> SceneFromViewsResult:
        """Refine `result` with a scene optimizer and rebuild the fused cloud from its output
        (left empty with `as_pointcloud=False`, as the mapper asks).  A list of optimizers
        (names or instances) runs in turn, each refining the previous one's result, e.g.
        ["dense_scene_optimizer", "tsdf_refinement"]; configure its members as instances."""
        from ..optimizers import SceneOptimizerBase, scene_optimizer_factory

        if isinstance(optimizer, (list, tuple)):
            if optimizer_kwargs:
                raise UnknownKwargError(
                    "optimizer_kwargs cannot say which optimizer of a list they configure; pass configured instances "
                    "(scene_optimizer_factory(name, **options)) in the list instead"
                )
            for member in optimizer:
                result = self.apply_optimizer_postprocessing(result, raw, processed, member, None, as_pointcloud)
            return result
        if not isinstance(optimizer, SceneOptimizerBase):
            optimizer = scene_optimizer_factory(str(optimizer), **(optimizer_kwargs or {}))
        optimizer_input = self.create_optimizer_input(raw, processed)
        optimizer_input.result = result
        output = optimizer.optimize(optimizer_input)
        extras = dict(result.extras)
        if "focals" in extras:
            extras["focals"] = np.array([k[0, 0] for k in output.intrinsics])
        if {"intrinsics_original", "scales", "offsets"} <= set(extras):
            extras["intrinsics_original"] = list(intrinsics_in_original_pixels(np.asarray(output.intrinsics), extras["scales"], extras["offsets"]))
        return replace(
            result,
            extras=extras,
            camera_poses=output.camera_poses,
            depth_predictions=output.depth_predictions,
            point_clouds=output.point_clouds,
            intrinsics=output.intrinsics,
            confidences=output.confidences,
            global_mesh=output.global_mesh if output.global_mesh is not None else result.global_mesh,
            global_point_cloud=(
                PointCloud.from_views(output.point_clouds, result.processed_images, result.masks) if as_pointcloud else result.global_point_cloud
            ),
        )
