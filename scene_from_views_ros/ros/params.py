"""The node's ROS parameters: declaration (descriptions, ranges), reading, model building.

Three kinds of parameters:

* fixed ones listed in `NODE_PARAMETERS` (inputs, frames, keyframe/window/chain/map settings,
  publishing), declared with a description, a range where numeric and `read_only` where a
  change would need a restart (topics, window layout, voxel grid);
* ``model.<kwarg>``: every keyword argument of the model class (`model_class(model_type)
  .valid_kwargs()`), declared with the kwarg's default when ROS can express it and untyped
  otherwise; forwarded to `scene_from_views_factory`.  ROS has no None, so an empty string
  means "the model's default" (e.g. ``model.checkpoint: ""``);
* ``optimizer.type`` and ``optimizer.<kwarg>``: forwarded to `scene_optimizer_factory`;
  optimizer kwargs depend on the type, so they are accepted when set (the node allows
  undeclared parameters and validates every change itself).

Everything here except `declare_node_parameters` is plain Python on a flat
``{name: value}`` dict, so the checks are the same at startup and in ``ros2 param set``.
"""
from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter

from ..core.base import SceneFromViewsBase
from ..core.errors import SceneFromViewsError, UnknownKwargError
from ..core.factory import implemented_types, model_class, scene_from_views_factory
from ..core.kwargs import keyword_names
from ..mapping.chaining import ChainConfig
from ..mapping.global_map import MapConfig
from ..mapping.keyframes import KeyframeConfig
from ..mapping.mapper import MapperConfig
from ..mapping.windows import WindowConfig
from ..optimizers.factory import scene_optimizer_factory
from .qos import IMAGE_QOS_CHOICES

MODEL_PREFIX = "model."
OPTIMIZER_PREFIX = "optimizer."
OPTIMIZER_TYPE = "optimizer.type"
_STAGES = ("preprocess_images", "infer", "postprocess_results")


class ParameterError(SceneFromViewsError, ValueError):
    """A parameter value or name the node cannot use (the message says which and why)."""


@dataclass(frozen=True)
class ParamSpec:
    """One fixed parameter.  `target` is the (config group, field) it sets in MapperConfig;
    `choices` restrict a string; `value_range` is (min, max) for numbers."""

    name: str
    default: Any
    description: str
    read_only: bool = False
    value_range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    target: tuple[str, str] | None = None


NODE_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("model_type", "vggt", "Reconstruction model family (restart to change).", read_only=True,
              choices=tuple(t.value for t in implemented_types())),
    ParamSpec("device", "", "Torch device for the model: '' picks cuda when available, else cpu; "
              "e.g. 'cpu', 'cuda', 'cuda:1'. A change rebuilds the model between windows."),
    ParamSpec(OPTIMIZER_TYPE, "", "Scene optimizer run on each window ('' = none); its settings are "
              "optimizer.<kwarg> parameters."),
    ParamSpec("image_topics", ["/camera/image_raw"], "Camera topics; a name ending in '/compressed' is "
              "subscribed as sensor_msgs/CompressedImage, others as sensor_msgs/Image.", read_only=True),
    ParamSpec("camera_info_topics", [], "Optional CameraInfo topics, one per image topic in the same "
              "order ('' to skip one); their K is kept with each keyframe.", read_only=True),
    ParamSpec("image_qos", "sensor_data", "QoS of the camera subscriptions: 'sensor_data' (best effort) "
              "or 'reliable'.", read_only=True, choices=IMAGE_QOS_CHOICES),
    ParamSpec("image_qos_depth", 5, "History depth of the camera subscriptions.", read_only=True,
              value_range=(1, 1000)),
    ParamSpec("map_frame", "map", "Frame of the map (the first keyframe's optical frame)."),
    ParamSpec("camera_frame", "sfv_camera", "TF frame of the newest keyframe's camera (optical axes)."),
    ParamSpec("keyframe_frame_prefix", "sfv_keyframe_", "TF frame of keyframe <id> is <prefix><id>."),
    ParamSpec("keyframe.min_interval_s", 0.0, "Per camera, minimum time between keyframes (stamps).",
              value_range=(0.0, 3600.0), target=("keyframe", "min_interval_s")),
    ParamSpec("keyframe.min_change", 0.05, "Minimum mean absolute grey difference (0-1) of a frame's "
              "thumbnail to the last keyframe's; 0 accepts every frame.",
              value_range=(0.0, 1.0), target=("keyframe", "min_change")),
    ParamSpec("keyframe.max_rate_hz", 0.0, "Cap on keyframes per second over all cameras (0 = none).",
              value_range=(0.0, 1000.0), target=("keyframe", "max_rate_hz")),
    ParamSpec("keyframe.thumbnail_width", 32, "Width in pixels of the grey thumbnail the change is "
              "measured on.", value_range=(4, 1024), target=("keyframe", "thumbnail_width")),
    ParamSpec("window.size", 8, "Keyframes per reconstruction window.", read_only=True,
              value_range=(2, 512), target=("window", "window_size")),
    ParamSpec("window.overlap", 2, "Keyframes shared by consecutive windows (1 .. window.size - 1).",
              read_only=True, value_range=(1, 511), target=("window", "window_overlap")),
    ParamSpec("window.period_s", 0.0, "Also reconstruct a partial window when its newest keyframe is this "
              "many seconds newer than the last window's (0 = full windows only).", read_only=True,
              value_range=(0.0, 3600.0), target=("window", "period_s")),
    ParamSpec("chain.metric", False, "Chain windows with SE(3) instead of Sim(3) (always on for metric "
              "models).", target=("chain", "metric")),
    ParamSpec("chain.max_correspondences", 8000, "Overlap pixels sampled to place a window.",
              value_range=(3, 10_000_000), target=("chain", "max_correspondences")),
    ParamSpec("chain.drop_percentile", 20.0, "Drop sampled pixels under this confidence percentile (0-100).",
              value_range=(0.0, 99.0), target=("chain", "drop_percentile")),
    ParamSpec("chain.inlier_threshold", 0.05, "RANSAC inlier distance relative to the point's distance "
              "from the camera.", value_range=(1e-6, 10.0), target=("chain", "inlier_threshold")),
    ParamSpec("chain.min_correspondences", 50, "Fewer valid correspondences reject the window.",
              value_range=(3, 10_000_000), target=("chain", "min_correspondences")),
    ParamSpec("chain.min_inlier_ratio", 0.3, "A lower inlier ratio rejects the window.",
              value_range=(0.0, 1.0), target=("chain", "min_inlier_ratio")),
    ParamSpec("chain.seed", 0, "Seed of pixel sampling and RANSAC (reproducible maps).",
              value_range=(0, 2**31 - 1), target=("chain", "seed")),
    ParamSpec("map.voxel_size", 0.01, "Initial voxel edge of the map in map units (grows to respect "
              "map.max_points).", read_only=True, value_range=(1e-6, 100.0), target=("map", "voxel_size")),
    ParamSpec("map.max_points", 1_000_000, "Upper bound on map points.", read_only=True,
              value_range=(1, 1_000_000_000), target=("map", "max_points")),
    ParamSpec("map.min_confidence", 0.0, "Absolute confidence below which a pixel is neither mapped nor "
              "in the window cloud (model scale: VGGT's is >= 1).", value_range=(0.0, 1e9),
              target=("map", "min_confidence")),
    ParamSpec("map.drop_percentile", 25.0, "Also leave out the lowest this-percentile of each window's "
              "confidences from the map.", value_range=(0.0, 99.0), target=("map", "drop_percentile")),
    ParamSpec("map.pixel_stride", 1, "Map every n-th pixel in both directions.", value_range=(1, 64),
              target=("map", "pixel_stride")),
    ParamSpec("map.output_dir", "sfv_map", "Folder that ~/save_map writes map.ply and "
              "map_trajectory.tum into."),
    ParamSpec("publish.window_cloud_stride", 1, "Publish every n-th pixel of each view in ~/window_cloud.",
              value_range=(1, 64)),
    ParamSpec("publish.depth", True, "Publish ~/depth, ~/depth/camera_info and ~/confidence per keyframe."),
    ParamSpec("diagnostics_period_s", 1.0, "Period of /diagnostics.", read_only=True,
              value_range=(0.1, 60.0)),
)
SPECS = {spec.name: spec for spec in NODE_PARAMETERS}


def parameter_descriptor(spec: ParamSpec) -> ParameterDescriptor:
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
        model_unknown = [name[len(MODEL_PREFIX):] for name in unknown if name.startswith(MODEL_PREFIX)]
        if model_unknown:
            raise UnknownKwargError(
                f"unknown model parameter{'s' if len(model_unknown) > 1 else ''} "
                f"{', '.join('model.' + n for n in model_unknown)} for model_type {model_type!r}; "
                f"valid: {', '.join(MODEL_PREFIX + n for n in cls.valid_kwargs())}"
            )
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


# ---------------------------------------------------------------- reading the parameters
@dataclass
class NodeSettings:
    """Everything the node reads from its parameters, checked."""

    model_type: str
    device: str | None
    model_kwargs: dict[str, Any]
    optimizer_type: str
    optimizer_kwargs: dict[str, Any]
    image_topics: list[str]
    camera_info_topics: list[str]
    image_qos: str
    image_qos_depth: int
    map_frame: str
    camera_frame: str
    keyframe_frame_prefix: str
    mapper: MapperConfig
    output_dir: str
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


def _forwarded(values: Mapping[str, Any], prefix: str, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The `prefix`-ed values that are set (None and '' mean: leave the default)."""
    return {
        name[len(prefix):]: value
        for name, value in values.items()
        if name.startswith(prefix) and name not in skip and value is not None and value != ""
    }


def _as_list(value: Any) -> list[str]:
    return [] if value is None else [str(v) for v in value]


def read_settings(values: Mapping[str, Any]) -> NodeSettings:
    """Turn a flat {parameter name: value} dict into NodeSettings, raising ParameterError
    (or the config classes' ValueError) with the reason when something is invalid."""
    for spec in NODE_PARAMETERS:
        if spec.choices is not None and values[spec.name] not in spec.choices:
            raise ParameterError(f"{spec.name} must be one of {', '.join(spec.choices)}, got {values[spec.name]!r}")
    model_type = str(values["model_type"])
    cls = _model_class(model_type)
    model_kwargs = _forwarded(values, MODEL_PREFIX)
    unknown = sorted(set(model_kwargs) - set(cls.valid_kwargs()))
    if unknown:
        raise UnknownKwargError(
            f"unknown model parameter{'s' if len(unknown) > 1 else ''} {', '.join('model.' + n for n in unknown)} "
            f"for {cls.__name__}; valid: {', '.join(MODEL_PREFIX + n for n in cls.valid_kwargs())}"
        )
    image_topics = _as_list(values["image_topics"])
    camera_info_topics = _as_list(values["camera_info_topics"])
    if not image_topics or any(not topic for topic in image_topics):
        raise ParameterError(f"image_topics must list at least one non-empty topic, got {image_topics}")
    if len(camera_info_topics) > len(image_topics):
        raise ParameterError(
            f"camera_info_topics has {len(camera_info_topics)} entries for {len(image_topics)} image_topics; "
            "give at most one per image topic, in the same order"
        )
    groups: dict[str, dict[str, Any]] = {"keyframe": {}, "window": {}, "chain": {}, "map": {}}
    for spec in NODE_PARAMETERS:
        if spec.target is not None:
            groups[spec.target[0]][spec.target[1]] = values[spec.name]
    groups["chain"]["metric"] = bool(groups["chain"]["metric"] or cls.is_metric)
    try:
        mapper = MapperConfig(
            keyframe=KeyframeConfig(**groups["keyframe"]), window=WindowConfig(**groups["window"]),
            chain=ChainConfig(**groups["chain"]), map=MapConfig(**groups["map"]),
        )
    except ValueError as error:
        raise ParameterError(str(error)) from None
    frames = [str(values[name]) for name in ("map_frame", "camera_frame", "keyframe_frame_prefix")]
    if not all(frames) or frames[0] == frames[1]:
        raise ParameterError(f"map_frame, camera_frame and keyframe_frame_prefix must be non-empty and "
                             f"map_frame != camera_frame, got {frames}")
    return NodeSettings(
        model_type=model_type,
        device=str(values["device"]) or None,
        model_kwargs=_check_kwarg_types(cls, model_kwargs),
        optimizer_type=str(values[OPTIMIZER_TYPE]),
        optimizer_kwargs=_forwarded(values, OPTIMIZER_PREFIX, skip=(OPTIMIZER_TYPE,)),
        image_topics=image_topics,
        camera_info_topics=camera_info_topics,
        image_qos=str(values["image_qos"]),
        image_qos_depth=int(values["image_qos_depth"]),
        map_frame=frames[0],
        camera_frame=frames[1],
        keyframe_frame_prefix=frames[2],
        mapper=mapper,
        output_dir=str(values["map.output_dir"]),
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
        model = scene_from_views_factory(settings.model_type, device=settings.device, **settings.model_kwargs)
    _check_preprocessing(model)
    reconstruct_kwargs: dict[str, Any] = {}
    if settings.optimizer_type:
        reconstruct_kwargs["optimizer"] = scene_optimizer_factory(settings.optimizer_type, **settings.optimizer_kwargs)
    elif settings.optimizer_kwargs:
        names = ", ".join(OPTIMIZER_PREFIX + name for name in settings.optimizer_kwargs)
        raise ParameterError(f"{names} set but optimizer.type is empty; set optimizer.type or remove them")
    return Backend(model, reconstruct_kwargs, settings)
