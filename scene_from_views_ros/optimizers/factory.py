"""Creation of scene optimizers by name, as the seed API and the ROS `optimizer.type` parameter use."""
from __future__ import annotations

import importlib
from typing import Any

from ..core.errors import ModelNotImplementedError, UnknownModelTypeError
from .base import SceneOptimizerBase

# name -> "module:Class" of its implementation, or None while the optimizer is not implemented.
# "global_aligner" is the seed API's other name of the dense optimizer.
_OPTIMIZERS: dict[str, str | None] = {
    "dense_scene_optimizer": None,
    "global_aligner": None,
    "sparse_scene_optimizer": None,
    "tsdf_refinement": None,
}


def available_optimizers() -> dict[str, bool]:
    """Every optimizer name and whether it is implemented in this release."""
    return {name: target is not None for name, target in _OPTIMIZERS.items()}


def optimizer_class(name: str) -> type[SceneOptimizerBase]:
    """The class implementing optimizer `name` (imported lazily)."""
    key = name.strip().lower()
    if key not in _OPTIMIZERS:
        raise UnknownModelTypeError(f"unknown optimizer {name!r}; valid names: {', '.join(_OPTIMIZERS)}")
    target = _OPTIMIZERS[key]
    if target is None:
        raise ModelNotImplementedError(
            f"optimizer {key!r} is not implemented in this release; run without an optimizer "
            "(ROS: optimizer.type:='')"
        )
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def scene_optimizer_factory(name: str, **kwargs: Any) -> SceneOptimizerBase:
    """Build optimizer `name` with its options (unknown ones are rejected with the valid list)."""
    return optimizer_class(name)(**kwargs)
