"""The node's ROS parameters: declaration (descriptors, ranges, read-only flags) and checks.

The translation of the shared parameter names (model_type, device, model.*, optimizer.*,
keyframe.*, window.*, chain.*, map.*, frame names) into model kwargs and a MapperConfig is
`mapping.settings.settings_from_parameters`, the one the offline tool uses too; so are their
defaults, descriptions and ranges (`PARAMETER_SPECS`).  Here is what only the node has:

* node-only parameters (image topics, camera_info topics, QoS, publish.*, diagnostics);
* which parameters are `read_only` (a change would need a restart: topics, window layout,
  voxel grid);
* ``model.<kwarg>``: every keyword argument of the model class (`model_class(model_type)
  .valid_kwargs()`), declared with the kwarg's default when ROS can express it and untyped
  otherwise, and checked against the model class (ROS has no None, so an empty string
  means "the model's default", e.g. ``model.checkpoint: ""``);
* ``optimizer.<kwarg>``: optimizer kwargs depend on the type, so they are accepted when set
  (the node allows undeclared parameters and validates every change itself);
* building the model, reusing the loaded network when only per-call options changed.

Everything here except `declare_node_parameters` is plain Python on a flat
``{name: value}`` dict, so the checks are the same at startup and in ``ros2 param set``.
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter

from ..core.base import SceneFromViewsBase
from ..core.errors import UnknownKwargError
from ..core.factory import implemented_types, model_class
from ..core.kwargs import keyword_names
from ..mapping.settings import PARAMETER_SPECS, MappingSettings, ParamSpec, SettingsError, settings_from_parameters
from .qos import IMAGE_QOS_CHOICES

# A parameter value or name the node cannot use: the shared settings error, so that the
# translation in mapping.settings and the node's own checks raise one type.
ParameterError = SettingsError

MODEL_PREFIX = "model."
OPTIMIZER_PREFIX = "optimizer."
_STAGES = ("preprocess_images", "infer", "postprocess_results")
_Extended = TypeVar("_Extended")
# Parameters whose change needs a restart (declared read-only).
_READ_ONLY = frozenset({
    "model_type", "image_topics", "camera_info_topics", "image_qos", "image_qos_depth", "window.size",
    "window.overlap", "window.period_s", "map.voxel_size", "map.max_points", "diagnostics_period_s",
})


@dataclass(frozen=True)
class NodeParamSpec(ParamSpec):
    """A parameter as the node declares it: `read_only` ones need a restart."""

    read_only: bool = False


_NODE_ONLY: tuple[ParamSpec, ...] = (
    ParamSpec("image_topics", ["/camera/image_raw"], "Camera topics; a name ending in '/compressed' is "
              "subscribed as sensor_msgs/CompressedImage, others as sensor_msgs/Image."),
    ParamSpec("camera_info_topics", [], "Optional CameraInfo topics, one per image topic in the same "
              "order ('' to skip one); their K is kept with each keyframe."),
    ParamSpec("image_qos", "sensor_data", "QoS of the camera subscriptions: 'sensor_data' (best effort) "
              "or 'reliable'.", choices=IMAGE_QOS_CHOICES),
    ParamSpec("image_qos_depth", 5, "History depth of the camera subscriptions.", value_range=(1, 1000)),
    ParamSpec("publish.window_cloud_stride", 1, "Publish every n-th pixel of each view in ~/window_cloud.",
              value_range=(1, 64)),
    ParamSpec("publish.depth", True, "Publish ~/depth, ~/depth/camera_info and ~/confidence per keyframe."),
    ParamSpec("diagnostics_period_s", 1.0, "Period of /diagnostics.", value_range=(0.1, 60.0)),
)


def _extended(base: Any, cls: type[_Extended], **extra: Any) -> _Extended:
    """An instance of dataclass `cls`, a subclass of `base`'s class: `base`'s fields plus `extra`."""
    return cls(**{item.name: getattr(base, item.name) for item in dataclasses.fields(base)}, **extra)


NODE_PARAMETERS: tuple[NodeParamSpec, ...] = tuple(
    _extended(spec, NodeParamSpec, read_only=spec.name in _READ_ONLY) for spec in (*PARAMETER_SPECS, *_NODE_ONLY)
)
SPECS = {spec.name: spec for spec in NODE_PARAMETERS}


def parameter_descriptor(spec: NodeParamSpec) -> ParameterDescriptor:
    """Descriptor of a fixed parameter: description, read-only flag, range, choices."""
    descriptor = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.value_range is not None:
        low, high = spec.value_range
        if isinstance(spec.default, float):
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
        else:
            descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=0)]
    if spec.choices is not None:
        descriptor.additional_constraints = f"one of: {', '.join(spec.choices)}"
    return descriptor


def kwarg_defaults(cls: type[SceneFromViewsBase]) -> dict[str, Any]:
    """Default value of each valid kwarg of a model class (None where it has none)."""
    defaults: dict[str, Any] = {}
    for function in (cls.__init__, *(getattr(cls, stage) for stage in _STAGES)):
        for name, parameter in inspect.signature(function).parameters.items():
            if name in keyword_names(function) and parameter.default is not inspect.Parameter.empty:
                defaults.setdefault(name, parameter.default)
    return {name: defaults.get(name) for name in cls.valid_kwargs()}


def _ros_expressible(value: Any) -> bool:
    return isinstance(value, (bool, int, float, str))


def declare_node_parameters(node: Node) -> None:
    """Declare the fixed, model and optimizer parameters on `node` (overrides applied).

    Raises ParameterError for an override the node does not know (a misspelt parameter or a
    kwarg the model does not take), listing what is valid.
    """
    for spec in NODE_PARAMETERS:
        if spec.name == "camera_info_topics":  # an empty list has no type of its own in ROS
            node.declare_parameter(spec.name, Parameter.Type.STRING_ARRAY, parameter_descriptor(spec))
        else:
            node.declare_parameter(spec.name, spec.default, parameter_descriptor(spec))
    model_type = str(node.get_parameter("model_type").value)
    cls = _model_class(model_type)
    for name, default in kwarg_defaults(cls).items():
        # Dynamically typed: the type check is ours (an integer is accepted for a float, and a
        # wrong type is rejected with the kwarg's name rather than rclpy's type numbers).
        description = (f"Forwarded to {cls.__name__} as keyword argument {name!r} "
                       f"(see its docstring); '' = the model's default.")
        node.declare_parameter(MODEL_PREFIX + name, default if _ros_expressible(default) else None,
                               ParameterDescriptor(description=description, dynamic_typing=True))
    # The node's own overrides: rclpy keeps them in Node._parameter_overrides (no public accessor).
    overrides = node._parameter_overrides  # noqa: SLF001
    for name in sorted(overrides):
        if name.startswith(OPTIMIZER_PREFIX) and not node.has_parameter(name):
            node.declare_parameter(name, overrides[name].value, ParameterDescriptor(
                description="Forwarded to the optimizer as a keyword argument.", dynamic_typing=True))
    unknown = sorted(name for name in overrides if not node.has_parameter(name))
    if unknown:
        _check_model_kwargs(cls, [name[len(MODEL_PREFIX):] for name in unknown if name.startswith(MODEL_PREFIX)])
        raise ParameterError(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            "see config/scene_from_views.yaml for every parameter"
        )


def _model_class(model_type: str) -> type[SceneFromViewsBase]:
    try:
        return model_class(model_type)
    except ValueError:
        choices = ", ".join(t.value for t in implemented_types())
        raise ParameterError(f"model_type {model_type!r} is not a model type; implemented: {choices}") from None


def _check_model_kwargs(cls: type[SceneFromViewsBase], names: list[str]) -> None:
    """Raise UnknownKwargError, listing the valid ones, if `cls` does not take all of `names`."""
    unknown = sorted(set(names) - set(cls.valid_kwargs()))
    if unknown:
        raise UnknownKwargError(
            f"unknown model parameter{'s' if len(unknown) > 1 else ''} {', '.join(MODEL_PREFIX + n for n in unknown)} "
            f"for {cls.__name__}; valid: {', '.join(MODEL_PREFIX + n for n in cls.valid_kwargs())}"
        )


# ---------------------------------------------------------------- reading the parameters
@dataclass(kw_only=True)
class NodeSettings(MappingSettings):
    """The shared mapping settings plus what only the node reads, all checked."""

    image_topics: list[str]
    camera_info_topics: list[str]
    image_qos: str
    image_qos_depth: int
    window_cloud_stride: int
    publish_depth: bool
    diagnostics_period_s: float

    def model_signature(self) -> tuple[Any, ...]:
        """What the model and optimizer are built from (a change means a rebuild)."""
        return (self.model_type, self.device, sorted(self.model_kwargs.items(), key=str),
                self.optimizer_type, sorted(self.optimizer_kwargs.items(), key=str))


def _check_kwarg_types(cls: type[SceneFromViewsBase], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Check ROS values against the kwarg defaults' types; integers are accepted for floats."""
    defaults = kwarg_defaults(cls)
    checked = {}
    for name, value in kwargs.items():
        default = defaults.get(name)
        if isinstance(default, bool) or default is None or isinstance(default, str):
            ok = default is None or type(value) is type(default)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:  # float
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        if not ok:
            raise ParameterError(
                f"model.{name} must be a {type(default).__name__} like its default {default!r}, "
                f"got {type(value).__name__} {value!r}"
            )
        checked[name] = value
    return checked


def _as_list(value: Any) -> list[str]:
    return [] if value is None else [str(v) for v in value]


def read_settings(values: Mapping[str, Any]) -> NodeSettings:
    """Turn a flat {parameter name: value} dict into NodeSettings, raising ParameterError
    (or UnknownKwargError) with the reason when something is invalid."""
    for spec in NODE_PARAMETERS:
        if spec.choices is not None and values[spec.name] not in spec.choices:
            raise ParameterError(f"{spec.name} must be one of {', '.join(spec.choices)}, got {values[spec.name]!r}")
    shared = settings_from_parameters(values)
    cls = _model_class(shared.model_type)
    _check_model_kwargs(cls, list(shared.model_kwargs))
    shared.model_kwargs = _check_kwarg_types(cls, shared.model_kwargs)
    image_topics = _as_list(values["image_topics"])
    camera_info_topics = _as_list(values["camera_info_topics"])
    if not image_topics or any(not topic for topic in image_topics):
        raise ParameterError(f"image_topics must list at least one non-empty topic, got {image_topics}")
    if len(camera_info_topics) > len(image_topics):
        raise ParameterError(
            f"camera_info_topics has {len(camera_info_topics)} entries for {len(image_topics)} image_topics; "
            "give at most one per image topic, in the same order"
        )
    return _extended(
        shared, NodeSettings,
        image_topics=image_topics,
        camera_info_topics=camera_info_topics,
        image_qos=str(values["image_qos"]),
        image_qos_depth=int(values["image_qos_depth"]),
        window_cloud_stride=int(values["publish.window_cloud_stride"]),
        publish_depth=bool(values["publish.depth"]),
        diagnostics_period_s=float(values["diagnostics_period_s"]),
    )


def parameter_values(node: Node) -> dict[str, Any]:
    """Current value of every parameter the node holds (declared or set), NOT_SET as None."""
    return {name: parameter.value for name, parameter in node.get_parameters_by_prefix("").items()}


# ---------------------------------------------------------------- building the model
@dataclass
class Backend:
    """A built model and the keyword arguments of each `reconstruct` call (the optimizer)."""

    model: SceneFromViewsBase
    reconstruct_kwargs: dict[str, Any]
    settings: NodeSettings


def _check_preprocessing(model: SceneFromViewsBase) -> None:
    """Run the model's preprocessing on a small image: rejects bad resize/crop options now
    rather than at the next window (preprocessing is cheap for every model)."""
    options = {k: v for k, v in model.call_defaults.items() if k in keyword_names(model.preprocess_images)}
    dummy = np.random.default_rng(0).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    model.preprocess_images([dummy, dummy], **options)


def build_backend(settings: NodeSettings, previous: Backend | None = None) -> Backend:
    """Build the model (and optimizer) that `settings` describe.

    When only per-call options changed (e.g. model.conf_thres) the loaded network of
    `previous` is reused, so a 1B-parameter model is not reloaded for a threshold.  Errors
    (unknown kwarg, unloadable checkpoint, bad option value) propagate with their reason.
    """
    cls = _model_class(settings.model_type)
    construction = set(cls.construction_kwargs())
    model = None
    if previous is not None and previous.settings.model_type == settings.model_type and previous.settings.device == settings.device:
        old, new = previous.settings.model_kwargs, settings.model_kwargs
        if all(old.get(name) == new.get(name) for name in construction):
            call = {name: value for name, value in new.items() if name not in construction}
            previous.model.check_call_kwargs(call)
            model = copy.copy(previous.model)
            model.call_defaults = call
    if model is None:
        model = settings.build_model()
    _check_preprocessing(model)
    optimizer = settings.build_optimizer()
    return Backend(model, {} if optimizer is None else {"optimizer": optimizer}, settings)
