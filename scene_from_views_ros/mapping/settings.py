"""Mapping settings from ROS-style parameters, shared by the node and the offline tool.

Both read the same flat parameter names (what ``ros2 param`` shows and what
``config/scene_from_views.yaml`` holds under ``scene_from_views: ros__parameters:``):

==========================  ===============================================================
``model_type``              factory type ("vggt", "vggt_robust", ...)
``device``                  "cpu", "cuda", "cuda:1"; "" or "auto" picks cuda when available
``model.<kwarg>``           keyword argument of the model (checkpoint, config, target_size,
                            conf_thres, ...); "" (ROS has no None) means the model's default
``optimizer.type``          scene optimizer name, "" for none
``optimizer.<kwarg>``       keyword argument of that optimizer
``keyframe.<field>``        `KeyframeConfig` fields (min_interval_s, min_change, ...)
``window.size``,            `WindowConfig.window_size`, `.window_overlap`, `.period_s`
``window.overlap``,
``window.period_s``
``chain.<field>``           `ChainConfig` fields (metric is forced on for metric models)
``map.<field>``             `MapConfig` fields (voxel_size, max_points, ...), plus
                            ``map.output_dir`` (where maps are saved, default "sfv_map")
``map_frame`` ...           the TF frame names (`FrameNames`)
==========================  ===============================================================

Defaults are the config dataclasses' (`default_parameters`), descriptions and ranges are in
`PARAMETER_SPECS`; the node declares its ROS parameters from these.  Any other name (image
topics, QoS, publish.*, ...) is kept in `MappingSettings.other` for the node, so one YAML file
serves both programs; a misspelt name inside the keyframe, window, chain and map groups is an
error that lists the valid names.  No rclpy here.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core.errors import ModelNotImplementedError, SceneFromViewsError
from ..core.factory import implemented_types, model_class, scene_from_views_factory
from ..core.types import SceneFromViewsType
from .chaining import ChainConfig
from .global_map import MapConfig
from .keyframes import KeyframeConfig
from .mapper import MapperConfig
from .windows import WindowConfig

DEFAULT_NODE_NAME = "scene_from_views"
DEFAULT_OUTPUT_DIR = "sfv_map"
OUTPUT_DIR_PARAMETER = "map.output_dir"
OPTIMIZER_TYPE = "optimizer.type"
_GROUPS: dict[str, type] = {"keyframe": KeyframeConfig, "window": WindowConfig, "chain": ChainConfig, "map": MapConfig}
# Parameter names that differ from "<group>.<field>" (the window group drops the repetition).
_RENAMED = {("window", "window_size"): "window.size", ("window", "window_overlap"): "window.overlap"}
# Parameter name -> (MapperConfig group, field), for every mapper setting.
MAPPER_PARAMETERS: dict[str, tuple[str, str]] = {
    _RENAMED.get((group, item.name), f"{group}.{item.name}"): (group, item.name)
    for group, cls in _GROUPS.items()
    for item in dataclasses.fields(cls)
}


class SettingsError(SceneFromViewsError, ValueError):
    """A parameter name or value is invalid, or a parameter file cannot be read."""


@dataclass
class FrameNames:
    """TF frame names: the map, the newest keyframe's camera, and each keyframe (prefix + id)."""

    map_frame: str = "map"
    camera_frame: str = "sfv_camera"
    keyframe_frame_prefix: str = "sfv_keyframe_"

    def __post_init__(self) -> None:
        names = [self.map_frame, self.camera_frame, self.keyframe_frame_prefix]
        if not all(names) or self.map_frame == self.camera_frame:
            raise SettingsError(
                f"map_frame, camera_frame and keyframe_frame_prefix must be non-empty and map_frame != camera_frame, got {names}"
            )

    def keyframe_frame(self, keyframe_id: int) -> str:
        return f"{self.keyframe_frame_prefix}{keyframe_id}"


@dataclass
class MappingSettings:
    """Everything a mapping run needs, translated from parameters."""

    model_type: SceneFromViewsType = SceneFromViewsType.VGGT
    device: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    optimizer_type: str | None = None
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)
    mapper: MapperConfig = field(default_factory=MapperConfig)
    frames: FrameNames = field(default_factory=FrameNames)
    output_dir: str = DEFAULT_OUTPUT_DIR
    other: dict[str, Any] = field(default_factory=dict)

    def build_model(self) -> Any:
        """The model, via the factory (unknown kwargs and missing weights raise its clear errors)."""
        return scene_from_views_factory(self.model_type, device=self.device, **self.model_kwargs)

    def build_optimizer(self) -> Any:
        """The scene optimizer instance, or None; built up front so a bad name fails at start."""
        if not self.optimizer_type:
            return None
        from ..optimizers import scene_optimizer_factory

        return scene_optimizer_factory(self.optimizer_type, **self.optimizer_kwargs)


def default_parameters() -> dict[str, Any]:
    """Every shared parameter name with its default value (the node declares these too)."""
    params: dict[str, Any] = {"model_type": SceneFromViewsType.VGGT.value, "device": "", OPTIMIZER_TYPE: ""}
    configs = {group: cls() for group, cls in _GROUPS.items()}
    params.update({name: getattr(configs[group], attr) for name, (group, attr) in MAPPER_PARAMETERS.items()})
    params[OUTPUT_DIR_PARAMETER] = DEFAULT_OUTPUT_DIR
    params.update(dataclasses.asdict(FrameNames()))
    return params


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its default, what it does, and its valid values ((min, max) for numbers,
    `choices` for strings).  Shared parameters take their default from the code
    (`default_parameters`); the node declares each with a ROS descriptor made from this."""

    name: str
    default: Any
    description: str
    value_range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None


def _spec(name: str, description: str, value_range: tuple[float, float] | None = None,
          choices: tuple[str, ...] | None = None) -> ParamSpec:
    return ParamSpec(name, _DEFAULTS[name], description, value_range, choices)


_DEFAULTS = default_parameters()
# Every shared parameter (the test suite checks that none is missing).
PARAMETER_SPECS: tuple[ParamSpec, ...] = (
    _spec("model_type", "Reconstruction model family (restart to change).",
          choices=tuple(t.value for t in implemented_types())),
    _spec("device", "Torch device for the model: '' picks cuda when available, else cpu; "
          "e.g. 'cpu', 'cuda', 'cuda:1'. A change rebuilds the model between windows."),
    _spec(OPTIMIZER_TYPE, "Scene optimizer run on each window ('' = none); its settings are "
          "optimizer.<kwarg> parameters."),
    _spec("map_frame", "Frame of the map (the first keyframe's optical frame)."),
    _spec("camera_frame", "TF frame of the newest keyframe's camera (optical axes)."),
    _spec("keyframe_frame_prefix", "TF frame of keyframe <id> is <prefix><id>."),
    _spec("keyframe.min_interval_s", "Per camera, minimum time between keyframes (stamps).", (0.0, 3600.0)),
    _spec("keyframe.min_change", "Minimum mean absolute grey difference (0-1) of a frame's thumbnail to "
          "the last keyframe's; 0 accepts every frame.", (0.0, 1.0)),
    _spec("keyframe.max_rate_hz", "Cap on keyframes per second over all cameras (0 = none).", (0.0, 1000.0)),
    _spec("keyframe.thumbnail_width", "Width in pixels of the grey thumbnail the change is measured on.", (4, 1024)),
    _spec("window.size", "Keyframes per reconstruction window.", (2, 512)),
    _spec("window.overlap", "Keyframes shared by consecutive windows (1 .. window.size - 1).", (1, 511)),
    _spec("window.period_s", "Also reconstruct a partial window when its newest keyframe is this many "
          "seconds newer than the last window's (0 = full windows only).", (0.0, 3600.0)),
    _spec("chain.metric", "Chain windows with SE(3) instead of Sim(3) (always on for metric models)."),
    _spec("chain.max_correspondences", "Overlap pixels sampled to place a window.", (3, 10_000_000)),
    _spec("chain.drop_percentile", "Drop sampled pixels under this confidence percentile (0-100).", (0.0, 99.0)),
    _spec("chain.inlier_threshold", "RANSAC inlier distance relative to the point's distance from the camera.",
          (1e-6, 10.0)),
    _spec("chain.min_correspondences", "Fewer valid correspondences reject the window.", (3, 10_000_000)),
    _spec("chain.min_inlier_ratio", "A lower inlier ratio rejects the window.", (0.0, 1.0)),
    _spec("chain.seed", "Seed of pixel sampling and RANSAC (reproducible maps).", (0, 2**31 - 1)),
    _spec("map.voxel_size", "Initial voxel edge of the map in map units (grows to respect map.max_points).",
          (1e-6, 100.0)),
    _spec("map.max_points", "Upper bound on map points.", (1, 1_000_000_000)),
    _spec("map.min_confidence", "Absolute confidence below which a pixel is neither mapped nor in the window "
          "cloud (model scale: VGGT's is >= 1).", (0.0, 1e9)),
    _spec("map.drop_percentile", "Also leave out the lowest this-percentile of each window's confidences "
          "from the map.", (0.0, 99.0)),
    _spec("map.pixel_stride", "Map every n-th pixel in both directions.", (1, 64)),
    _spec(OUTPUT_DIR_PARAMETER, "Folder that ~/save_map writes map.ply and map_trajectory.tum into."),
)


def flatten_parameters(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> dotted names, as ROS 2 flattens parameter files (``{a: {b: 1}}`` -> ``a.b``)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_parameters(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def load_parameter_file(path: str | Path, node_name: str = DEFAULT_NODE_NAME) -> dict[str, Any]:
    """Flat parameters of `node_name` from a ROS 2 parameter YAML file.

    Reads ``<node>: ros__parameters: {...}`` (also ``/<node>``, ``/<namespace>/<node>`` and the
    ``/**`` wildcard, which the node-specific section overrides); nested dicts and dotted keys
    are both accepted.
    """
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as error:
        raise SettingsError(f"cannot read parameter file {path}: {error.strerror or error}") from error
    except yaml.YAMLError as error:
        raise SettingsError(f"parameter file {path} is not valid YAML: {error}") from error
    expected = f"expected '{node_name}: ros__parameters: {{...}}' (the ROS 2 parameter file format)"
    if not isinstance(document, dict):
        raise SettingsError(f"parameter file {path} holds no parameters; {expected}")
    sections = {str(key): value for key, value in document.items() if isinstance(value, dict) and "ros__parameters" in value}
    wildcard = sections.get("/**")
    own = [value for key, value in sections.items() if key.rstrip("/").split("/")[-1] == node_name]
    if wildcard is None and not own:
        found = ", ".join(sections) or "none"
        raise SettingsError(
            f"parameter file {path} has no section for node {node_name!r} (sections with ros__parameters: {found}); "
            f"{expected}, or name the node section to use"
        )
    params: dict[str, Any] = {}
    for section in ([wildcard] if wildcard is not None else []) + own:
        body = section["ros__parameters"] or {}
        if not isinstance(body, dict):
            raise SettingsError(f"parameter file {path}: ros__parameters must be a mapping, got {type(body).__name__}")
        params.update(flatten_parameters(body))
    return params


def _coerce(name: str, value: Any, default: Any) -> Any:
    """`value` as the type of the field's default (ints accepted for floats, integral floats for ints)."""
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(value, kind):
        return value
    raise SettingsError(f"parameter {name} must be {kind.__name__}, got {value!r} ({type(value).__name__})")


def _mapper_config(values: dict[str, Any], is_metric: bool) -> MapperConfig:
    """MapperConfig from mapper parameters (names of MAPPER_PARAMETERS), values type-checked."""
    fields: dict[str, dict[str, Any]] = {group: {} for group in _GROUPS}
    defaults = {group: cls() for group, cls in _GROUPS.items()}
    for name, value in values.items():
        group, attr = MAPPER_PARAMETERS[name]
        fields[group][attr] = _coerce(name, value, getattr(defaults[group], attr))
    fields["chain"]["metric"] = bool(fields["chain"].get("metric", False) or is_metric)
    configs = {}
    for group, cls in _GROUPS.items():
        try:
            configs[group] = cls(**fields[group])
        except ValueError as error:
            raise SettingsError(f"invalid {group}.* parameters: {error}") from error
    return MapperConfig(**configs)


def _kwargs(params: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """`prefix.<name>` parameters as keyword arguments; "" and None (ROS's "unset") are left out."""
    return {
        name[len(prefix) + 1 :]: value
        for name, value in params.items()
        if name.startswith(f"{prefix}.") and value is not None and value != ""
    }


def settings_from_parameters(params: Mapping[str, Any]) -> MappingSettings:
    """Translate flat parameters (dotted names) into `MappingSettings`; see the module table."""
    params = dict(params)
    model_type = SceneFromViewsType(str(params.pop("model_type", SceneFromViewsType.VGGT.value)))
    device = str(params.pop("device", "") or "").strip()
    optimizer_type = str(params.pop(OPTIMIZER_TYPE, "") or "").strip() or None
    model_kwargs, optimizer_kwargs = _kwargs(params, "model"), _kwargs(params, "optimizer")
    if optimizer_kwargs and optimizer_type is None:
        names = ", ".join(f"optimizer.{name}" for name in optimizer_kwargs)
        raise SettingsError(f"{names} set but optimizer.type is empty; set optimizer.type or remove them")
    output_dir = params.pop(OUTPUT_DIR_PARAMETER, DEFAULT_OUTPUT_DIR)
    if not isinstance(output_dir, str) or not output_dir:
        raise SettingsError(f"parameter {OUTPUT_DIR_PARAMETER} must be a non-empty folder path, got {output_dir!r}")
    frame_defaults = dataclasses.asdict(FrameNames())
    frames = FrameNames(**{name: _coerce(name, params.pop(name), default) for name, default in frame_defaults.items() if name in params})
    mapper_values: dict[str, Any] = {}
    other: dict[str, Any] = {}
    for name, value in params.items():
        group, dot, _ = name.partition(".")
        if dot and group in ("model", "optimizer"):
            continue
        if name in MAPPER_PARAMETERS:
            mapper_values[name] = value
        elif dot and group in _GROUPS:
            valid = ", ".join(n for n in [*MAPPER_PARAMETERS, OUTPUT_DIR_PARAMETER] if n.startswith(f"{group}."))
            raise SettingsError(f"unknown parameter {name}; valid: {valid}")
        else:
            other[name] = value
    return MappingSettings(
        model_type=model_type,
        device=None if device in ("", "auto") else device,
        model_kwargs=model_kwargs,
        optimizer_type=optimizer_type,
        optimizer_kwargs=optimizer_kwargs,
        mapper=_mapper_config(mapper_values, _model_is_metric(model_type)),
        frames=frames,
        output_dir=output_dir,
        other=other,
    )


def _model_is_metric(model_type: SceneFromViewsType) -> bool:
    """Whether the model predicts metres (chaining then fits SE(3)); False if not implemented
    (building such a model fails later with the factory's clear error)."""
    try:
        return bool(model_class(model_type).is_metric)
    except ModelNotImplementedError:
        return False
