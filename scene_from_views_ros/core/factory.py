"""`scene_from_views_factory`: one entry point for every model type, imported lazily."""
from __future__ import annotations

import importlib
from typing import Any

import torch

from .base import SceneFromViewsBase
from .errors import MissingDependencyError, ModelNotImplementedError
from .types import SceneFromViewsType

# type -> "module:Class" of its implementation, or None while the family is not implemented.
_MODEL_CLASSES: dict[SceneFromViewsType, str | None] = {
    SceneFromViewsType.VGGT: "scene_from_views_ros.models.vggt:SceneFromViewsVggt",
    SceneFromViewsType.VGGT_ROBUST: "scene_from_views_ros.models.vggt_robust:SceneFromViewsVggtRobust",
    SceneFromViewsType.DUST3R: "scene_from_views_ros.models.dust3r:SceneFromViewsDust3r",
    SceneFromViewsType.MAST3R: "scene_from_views_ros.models.dust3r:SceneFromViewsMast3r",
    SceneFromViewsType.MVDUST3R: "scene_from_views_ros.models.mvdust3r:SceneFromViewsMvDust3r",
    SceneFromViewsType.FAST3R: "scene_from_views_ros.models.fast3r:SceneFromViewsFast3r",
    SceneFromViewsType.DEPTH_ANYTHING_V3: "scene_from_views_ros.models.depth_anything_v3:SceneFromViewsDepthAnythingV3",
}


# Import names whose pip package is called otherwise.
_PIP_NAMES = {"PIL": "pillow", "cv2": "opencv-python-headless", "yaml": "pyyaml", "open3d": "open3d-cpu"}


def implemented_types() -> list[SceneFromViewsType]:
    """The model types that this release can build."""
    return [model_type for model_type, target in _MODEL_CLASSES.items() if target is not None]


def model_class(scene_from_views_type: SceneFromViewsType | str) -> type[SceneFromViewsBase]:
    """The class of a model type, importing only that model's module."""
    model_type = SceneFromViewsType(scene_from_views_type)
    target = _MODEL_CLASSES[model_type]
    if target is None:
        implemented = ", ".join(t.value for t in implemented_types())
        raise ModelNotImplementedError(
            f"model type {model_type.value!r} is not implemented in this release; implemented: {implemented}"
        )
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        missing = getattr(error, "name", None) or str(error)
        if isinstance(error, MissingDependencyError) or missing.startswith("scene_from_views_ros"):
            raise
        raise MissingDependencyError(
            f"model type {model_type.value!r} needs the Python package {missing!r}, which is not "
            f"installed: pip install {_PIP_NAMES.get(missing, missing)}"
        ) from error
    return getattr(module, class_name)


def scene_from_views_factory(
    scene_from_views_type: SceneFromViewsType | str,
    device: str | torch.device | None = None,
    **kwargs: Any,
) -> SceneFromViewsBase:
    """Build a ready-to-run model; `device=None` picks cuda when available, else cpu.

    Keyword arguments are the model's options (``model_class(type).options_class``), checked
    before anything heavy happens: an unknown one raises UnknownKwargError listing the valid
    ones, a bad value InvalidOptionError saying what is allowed.
    """
    return model_class(scene_from_views_type)(device=device, **kwargs)
