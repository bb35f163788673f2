"""Creation of scene optimizers by name, as the seed API and the ROS `optimizer.type` parameter use."""
from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from ..core.errors import InvalidOptionError, ModelNotImplementedError, UnknownModelTypeError
from .base import SceneOptimizerBase

# name -> "module:Class" of its implementation, or None while the optimizer is not implemented.
# "global_aligner" is the seed API's other name of the dense optimizer.
_OPTIMIZERS: dict[str, str | None] = {
    "dense_scene_optimizer": "scene_from_views_ros.optimizers.dense:DenseSceneOptimizer",
    "global_aligner": "scene_from_views_ros.optimizers.dense:DenseSceneOptimizer",
    "sparse_scene_optimizer": "scene_from_views_ros.optimizers.sparse:SparseSceneOptimizer",
    "tsdf_refinement": "scene_from_views_ros.optimizers.tsdf:TsdfRefinement",
}


NO_OPTIMIZER = "none"  # no optimizer: a model's own result (DUSt3R/MASt3R: the spanning-tree fast path)


def optimizer_from_config(config: Mapping[str, Any] | None, default: str) -> SceneOptimizerBase | None:
    """The optimizer an `optimizer_config` ({"type": name, **options}) describes; None for
    type "none"; `default` (a model's own choice) when no config or no type is given."""
    values = dict(config or {})
    name = str(values.pop("type", default) or NO_OPTIMIZER)
    if name.strip().lower() == NO_OPTIMIZER:
        if values:
            raise InvalidOptionError(
                f"optimizer options {', '.join(sorted(values))} given but the optimizer type is none; name the optimizer "
                '(optimizer_config={"type": "dense_scene_optimizer", ...}) or drop them'
            )
        return None
    return scene_optimizer_factory(name, **values)


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
            "(ROS: optimizer.type:=none)"
        )
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def scene_optimizer_factory(name: str, **kwargs: Any) -> SceneOptimizerBase:
    """Build optimizer `name` with its options (unknown ones are rejected with the valid list)."""
    return optimizer_class(name)(**kwargs)


def optimizer_chain(names: Sequence[str], values: Mapping[str, Any], *, exposed_only: bool = False) -> list[SceneOptimizerBase]:
    """Optimizers `names`, run in turn, each given the options of `values` it declares (one value may
    serve several, e.g. `subsample` of the sparse optimizer and of the TSDF refinement, as in
    MASt3R's demo); an option that none of them declares raises UnknownKwargError."""
    classes = [optimizer_class(name) for name in names]
    declared = [set(cls.options_class.names(exposed=True) if exposed_only else cls.options_class.names()) for cls in classes]
    unused = sorted(set(values) - set().union(*declared))
    if unused:
        if not classes:
            raise InvalidOptionError(f"optimizer options {', '.join(unused)} given but no optimizer runs; name one or drop them")
        everything = sorted(set().union(*declared))
        raise classes[0].options_class.unknown(unused, everything, "parameter" if exposed_only else "option")
    return [cls(**{k: v for k, v in values.items() if k in own}) for cls, own in zip(classes, declared, strict=True)]


def chain_uses_known_intrinsics(optimizer: Any) -> bool:
    """Whether `optimizer` (a name, an instance, a list of them, None or "none") keeps known
    intrinsics fixed: any member of a chain that does."""
    return _chain_uses(optimizer, "uses_known_intrinsics")


def chain_uses_known_poses(optimizer: Any) -> bool:
    """Whether `optimizer` (as `chain_uses_known_intrinsics`) keeps known poses fixed."""
    return _chain_uses(optimizer, "uses_known_poses")


def _chain_uses(optimizer: Any, flag: str) -> bool:
    if optimizer is None:
        return False
    if isinstance(optimizer, (list, tuple)):
        return any(_chain_uses(member, flag) for member in optimizer)
    if isinstance(optimizer, str):
        return optimizer.strip().lower() not in ("", NO_OPTIMIZER) and bool(getattr(optimizer_class(optimizer), flag))
    return bool(getattr(optimizer, flag, False))
