"""Every parameter of the node and the offline tool: declared once, read by both.

The parameters are flat dotted names (what ``ros2 param`` shows and what the node's YAML
file holds under ``scene_from_views: ros__parameters:``).  Each group is an `Options`
dataclass declared beside the code that uses it (`KeyframeConfig` in keyframes.py, ...) or
here; `PARAMETER_GROUPS` lists them, and ``model.*`` are the options of the model class
that ``model_type`` names (its ``options_class``), ``optimizer.*`` those of the optimizer:

==========================  ===============================================================
``model_type``, ``device``  `RunOptions`: the model family and torch device
``model.<option>``          the model's declared options (`SceneFromViewsBase.options_class`)
``optimizer.type``          `OptimizerChoice`; ``optimizer.<option>`` the optimizer's options
``keyframe.*``              `KeyframeConfig`
``window.*``                `WindowConfig`
``chain.*``                 `ChainConfig` (metric is forced on for metric models)
``map.*``                   `MapConfig` and `OutputConfig` (``map.output_dir``)
``map_frame`` ...           `FrameNames`
``image_topics`` ...        `NodeInputs` (node only; the offline tool checks and ignores them)
``publish.*``               `PublishConfig` (node only)
==========================  ===============================================================

`settings_from_parameters` checks a whole set of values (types, ranges, choices, unknown
names with the close matches) and returns `MappingSettings`; the node calls it at start-up
and on every ``ros2 param set``, the offline tool on its parameter file and ``-p`` values,
so both accept exactly the same values.  No rclpy here.
"""
from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from ..core.base import ModelOptions, SceneFromViewsBase
from ..core.device import resolve_device
from ..core.errors import InvalidOptionError, SceneFromViewsError, UnknownKwargError
from ..core.factory import implemented_types, model_class, scene_from_views_factory
from ..core.options import Options, OptionSpec, option
from ..core.types import SceneFromViewsType
from ..optimizers import NO_OPTIMIZER, SceneOptimizerBase, available_optimizers, optimizer_chain
from .chaining import ChainConfig
from .global_map import MapConfig
from .keyframes import KeyframeConfig
from .mapper import MapperConfig
from .windows import WindowConfig

DEFAULT_NODE_NAME = "scene_from_views"
IMAGE_QOS_CHOICES = ("sensor_data", "reliable")
_GroupT = TypeVar("_GroupT", bound=Options)
_DEVICE = re.compile(r"^(|auto|cpu|cuda(:\d+)?)$")


class SettingsError(SceneFromViewsError, ValueError):
    """A parameter file cannot be read, or holds no section for the node."""


@dataclass(frozen=True)
class RunOptions(Options):
    """The model family and where it runs."""

    model_type: str = option(
        SceneFromViewsType.VGGT.value, "Reconstruction model family; its options are the model.* parameters.",
        choices=tuple(t.value for t in implemented_types()), restart=True,
    )
    device: str = option(
        "", "Torch device of the model: '' or 'auto' = cuda when available, else cpu; or 'cpu', 'cuda', "
        "'cuda:1'. A change rebuilds the model between windows (the map is kept).",
    )

    def check_together(self) -> None:
        if not _DEVICE.match(self.device.strip().lower()):
            raise InvalidOptionError(f"device={self.device!r} is not allowed: expected '', auto, cpu, cuda or cuda:N")
        try:
            resolve_device(self.device)
        except SceneFromViewsError as error:
            raise InvalidOptionError(f"device={self.device!r} is not allowed: {error}") from error


@dataclass(frozen=True)
class OptimizerChoice(Options):
    """The scene optimizer run on each window."""

    prefix: ClassVar[str] = "optimizer."
    type: str = option(
        "auto", "Scene optimizer run on each window: auto (the model's own: dense_scene_optimizer for dust3r, "
        "sparse_scene_optimizer for mast3r, none for the others), none (the model's result as it is; dust3r/mast3r: the "
        "spanning-tree fast path) or an optimizer; its settings are optimizer.<option> parameters.",
        choices=("auto", "none", *available_optimizers()),
    )
    then: tuple[str, ...] = option(
        (), "Optimizers run after optimizer.type, in turn, on its output (also after none): e.g. [tsdf_refinement] "
        "with optimizer.TSDF_thresh > 0, MASt3R's TSDF post-processing. An optimizer.<option> goes to every optimizer of "
        "the chain that declares it.",
    )

    def check_together(self) -> None:
        known = available_optimizers()
        wrong = [name for name in self.then if name.strip().lower() not in known]
        if wrong:
            raise InvalidOptionError(
                f"optimizer.then={list(self.then)!r}: {', '.join(map(repr, wrong))} is no optimizer; expected a list of "
                f"{', '.join(known)} (auto and none only apply to optimizer.type)"
            )


@dataclass(frozen=True)
class FrameNames(Options):
    """TF: frame names (REP-105), how the node joins the TF tree, and the map's scale."""

    map_frame: str = option("map", "Frame of the map (REP-105; z up).", nonempty=True)
    odom_frame: str = option("odom", "The robot's odometry frame (tf_mode map_to_odom).", nonempty=True)
    base_frame: str = option(
        "base_link", "The robot's base frame (tf_mode map_to_odom): the map is this frame at the first keyframe.", nonempty=True,
    )
    camera_frame: str = option(
        "sfv_camera", "Optical frame of cameras whose images have no header frame_id (the images' frame_id otherwise).",
        nonempty=True,
    )
    keyframe_frame_prefix: str = option(
        "sfv_keyframe_", "TF frame of keyframe <id> is <prefix><id> (publish.keyframe_frames).", nonempty=True,
    )
    tf_mode: str = option(
        "auto", "How the node joins the TF tree. map_to_odom: it looks up odom -> camera at each keyframe and "
        "publishes only the map -> odom correction (one parent per frame), the map being base_frame at the first "
        "keyframe. standalone: it publishes map -> camera at each new keyframe, the map being the first camera's "
        "position with x forward, z up. none: no TF (poses on topics only). auto: map_to_odom when odom -> camera "
        "resolves at the first keyframe, else standalone.", choices=("auto", "map_to_odom", "standalone", "none"),
    )
    scale_source: str = option(
        "auto", "Where metres come from. model: a metric model (SE(3) chaining). odometry: metres per map unit "
        "estimated from the odometry between keyframes (needs odom -> camera in TF). none: map units, flagged WARN "
        "in /diagnostics. auto: model for a metric model, else odometry with tf_mode map_to_odom, else none.",
        choices=("auto", "model", "odometry", "none"),
    )
    scale_min_baseline_m: float = option(
        0.2, "scale_source odometry: keyframe pairs closer than this in odometry are not used for the scale.",
        unit="m", low=0.0, high=1000.0,
    )

    def check_together(self) -> None:
        seen: dict[str, str] = {}
        for name in ("map_frame", "odom_frame", "base_frame", "camera_frame"):
            value = getattr(self, name)
            if value in seen:
                raise InvalidOptionError(f"{name}={value!r} is not allowed: it must differ from {seen[value]}")
            seen[value] = name

    def keyframe_frame(self, keyframe_id: int) -> str:
        return f"{self.keyframe_frame_prefix}{keyframe_id}"


NODE_SAVE_FORMATS = ("ply", "pcd", "tum", "json", "colmap", "nerfstudio")  # what ~/save_map can write


@dataclass(frozen=True)
class OutputConfig(Options):
    """Where maps are saved."""

    prefix: ClassVar[str] = "map."
    output_dir: str = option(
        "sfv_map", "Folder that ~/save_map (and the offline tool without --out) writes the map into. The node "
        "resolves a relative path against $ROS_HOME/scene_from_views ($ROS_HOME defaults to ~/.ros), not its "
        "working directory (which a launch file does not fix); the offline tool against the current directory.",
        nonempty=True,
    )
    save_on_shutdown: bool = option(
        True, "When the node shuts down (Ctrl-C, SIGTERM, SIGHUP, ros2 lifecycle end), write the map into "
        "map.output_dir as ~/save_map does, if anything was mapped.",
    )
    save_formats: tuple = option(
        ("ply", "pcd", "tum", "json"), "What the node's ~/save_map (when its request names none) and the save on "
        "shutdown write: ply (map.ply), pcd (map.pcd), tum (map_trajectory.tum), json (keyframes.json), colmap "
        "(colmap/*.txt) and nerfstudio (nerfstudio/transforms.json with the keyframe images; with colmap or "
        "nerfstudio here the node keeps each keyframe's image, JPEG-compressed, from then on). The offline tool "
        "uses --export instead.", nonempty=True,
    )

    def check_together(self) -> None:
        unknown = [name for name in self.save_formats if name not in NODE_SAVE_FORMATS]
        if unknown:
            raise InvalidOptionError(
                f"{self.label('save_formats')}={list(self.save_formats)} is not allowed: unknown {', '.join(map(repr, unknown))}; "
                f"choose from {', '.join(NODE_SAVE_FORMATS)}"
            )


# A ROS 2 topic name: tokens of letters, digits and underscores (not starting with a digit),
# separated by single slashes, optionally absolute (/) or private (~/), no trailing slash.
_TOPIC = re.compile(r"^(~/|/)?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")


def _check_topics(label: str, topics: tuple[str, ...], allow_empty: bool) -> None:
    bad = [topic for topic in topics if not (_TOPIC.match(topic) or (allow_empty and topic == ""))]
    if bad:
        raise InvalidOptionError(
            f"{label}={list(topics)} is not allowed: {', '.join(map(repr, bad))} "
            f"{'is not a valid topic name' if len(bad) == 1 else 'are not valid topic names'} (letters, digits, "
            "underscores and single slashes, e.g. /camera/image_raw)"
        )


@dataclass(frozen=True)
class NodeInputs(Options):
    """The node's camera inputs and diagnostics (the offline tool checks and ignores them)."""

    image_topics: tuple = option(
        ("/camera/image_raw",), "Camera topics; a name ending in '/compressed' is subscribed as "
        "sensor_msgs/CompressedImage, others as sensor_msgs/Image.", nonempty=True, restart=True,
    )
    camera_info_topics: tuple = option(
        (), "Optional CameraInfo topics, one per image topic in the same order ('' skips one); their K is "
        "kept with each keyframe.", restart=True,
    )
    camera_info_slop_s: float = option(
        0.02, "An image takes the CameraInfo with its stamp, else the nearest within this many seconds "
        "(approximate time), else the newest received (a camera that publishes its calibration rarely).",
        unit="s", low=0.0, high=10.0,
    )
    rig_slop_s: float = option(
        0.0, "Camera rig: > 0 groups the images of all image_topics whose stamps lie within this many seconds "
        "(approximate time) into one multi-view keyframe that windows never split (window.size and "
        "window.overlap then multiples of the camera count); each view keeps its camera's frame_id and "
        "CameraInfo, and the rig's extrinsics come from TF. 0 = every camera keyframed on its own.",
        unit="s", low=0.0, high=1.0, restart=True,
    )
    image_qos: str = option(
        "sensor_data", "QoS of the camera subscriptions: sensor_data (best effort, as camera drivers "
        "publish) or reliable (bag playback, republishers).", choices=IMAGE_QOS_CHOICES, restart=True,
    )
    image_qos_depth: int = option(5, "History depth of the camera subscriptions.", unit="messages", low=1, high=1000, restart=True)
    diagnostics_period_s: float = option(1.0, "Period of /diagnostics.", unit="s", low=0.1, high=60.0, restart=True)

    def check_together(self) -> None:
        _check_topics("image_topics", self.image_topics, allow_empty=False)
        _check_topics("camera_info_topics", self.camera_info_topics, allow_empty=True)
        if len(self.camera_info_topics) > len(self.image_topics):
            raise InvalidOptionError(
                f"camera_info_topics={list(self.camera_info_topics)} is not allowed: at most one per image topic "
                f"({len(self.image_topics)}), in the same order"
            )


@dataclass(frozen=True)
class PublishConfig(Options):
    """What the node publishes per window."""

    prefix: ClassVar[str] = "publish."
    window_cloud_stride: int = option(1, "Publish every n-th pixel of each view in ~/window_cloud.", low=1, high=64)
    depth: bool = option(True, "Publish ~/depth/image and ~/confidence/image per keyframe, each with its camera_info beside it.")
    keyframe_frames: bool = option(
        False, "Also broadcast a TF frame per keyframe (<keyframe_frame_prefix><id>; they grow without end): once, "
        "when its window places it.",
    )
    path_max_poses: int = option(
        1000, "~/path holds the newest this many keyframes (the whole trajectory is in ~/save_map's files, and "
        "each window's new keyframes are on ~/keyframe_poses): publishing stays as cheap on long runs.",
        unit="keyframes", low=1, high=1_000_000,
    )


# Every group of fixed parameters, in the order the YAML file and the docs list them.
PARAMETER_GROUPS: tuple[type[Options], ...] = (
    RunOptions, OptimizerChoice, NodeInputs, FrameNames, KeyframeConfig, WindowConfig, ChainConfig, MapConfig,
    OutputConfig, PublishConfig,
)
NODE_ONLY_GROUPS: tuple[type[Options], ...] = (NodeInputs, PublishConfig)
MODEL_PREFIX = ModelOptions.prefix
OPTIMIZER_PREFIX = OptimizerChoice.prefix


def _fixed_parameters() -> dict[str, tuple[type[Options], str]]:
    table = {}
    for group in PARAMETER_GROUPS:
        for name in group.names(exposed=True):
            table[group.label(name)] = (group, name)
    return table


# Parameter name -> (group, option name) of every parameter but model.* and optimizer.<option>.
FIXED_PARAMETERS = _fixed_parameters()


@dataclass(frozen=True)
class Parameter:
    """One parameter: its name, its declaration, and the group that owns it."""

    name: str
    spec: OptionSpec
    group: type[Options]


def parameters(model_type: str | SceneFromViewsType = SceneFromViewsType.VGGT) -> Iterator[Parameter]:
    """Every parameter of a run with `model_type`: the fixed ones, then its model's options."""
    for name, (group, option_name) in FIXED_PARAMETERS.items():
        yield Parameter(name, group.spec(option_name), group)
    options = model_class(model_type).options_class
    for spec in options.specs():
        if spec.exposed:
            yield Parameter(options.label(spec.name), spec, options)


def default_parameters(model_type: str | SceneFromViewsType = SceneFromViewsType.VGGT) -> dict[str, Any]:
    """{name: default} of every parameter of a run with `model_type`."""
    defaults = {p.name: list(p.spec.default) if p.spec.kind is tuple else p.spec.default for p in parameters(model_type)}
    defaults["model_type"] = SceneFromViewsType(model_type).value
    return defaults


@dataclass(frozen=True)
class MappingSettings:
    """Everything a mapping run needs, checked; built by `settings_from_parameters`."""

    run: RunOptions = field(default_factory=RunOptions)
    model: ModelOptions | None = None
    optimizer: OptimizerChoice = field(default_factory=OptimizerChoice)
    optimizer_kwargs: Mapping[str, Any] = field(default_factory=dict)
    inputs: NodeInputs = field(default_factory=NodeInputs)
    frames: FrameNames = field(default_factory=FrameNames)
    mapper: MapperConfig = field(default_factory=MapperConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    given: frozenset[str] = frozenset()  # the parameter names that were set (not defaulted)

    @property
    def model_type(self) -> SceneFromViewsType:
        return SceneFromViewsType(self.run.model_type)

    @property
    def device(self) -> str | None:
        """The torch device, None for "pick cuda when available"."""
        device = self.run.device.strip()
        return None if device in ("", "auto") else device

    @property
    def model_class(self) -> type[SceneFromViewsBase]:
        return model_class(self.model_type)

    @property
    def model_options(self) -> ModelOptions:
        return self.model if self.model is not None else self.model_class.options_class()

    @property
    def output_dir(self) -> str:
        return self.output.output_dir

    def node_output_dir(self, directory: str = "") -> Path:
        """The node's folder `directory` (default map.output_dir): a relative path lies under
        $ROS_HOME/scene_from_views."""
        path = Path(directory or self.output.output_dir).expanduser()
        if path.is_absolute():
            return path
        return Path(os.environ.get("ROS_HOME") or Path.home() / ".ros").expanduser() / "scene_from_views" / path

    def node_only_given(self) -> list[str]:
        """Parameters set for the node alone (the offline tool reports and ignores them)."""
        node_only = {name for name, (group, _) in FIXED_PARAMETERS.items() if group in NODE_ONLY_GROUPS}
        return sorted(self.given & node_only)

    def model_signature(self) -> tuple[Any, ...]:
        """What building the model depends on: a change of it means a rebuild, any other
        model change is a per-call option applied to the loaded network."""
        values = self.model_options.values()
        construction = [(name, values[name]) for name in self.model_class.construction_kwargs()]
        return (self.model_type, self.device, repr(construction))

    def build_model(self) -> SceneFromViewsBase:
        """The model, via the factory (missing weights raise its clear errors), checked against
        the window size (a network that needs more views per window is refused here)."""
        model = scene_from_views_factory(self.model_type, device=self.device, **self.model_options.values())
        model.check_window(self.mapper.window.size)
        return model

    @property
    def optimizer_type(self) -> str:
        """The main optimizer: `optimizer.type`, "auto" resolved to the model's own."""
        return resolved_optimizer_type(self.optimizer.type, self.run.model_type)

    @property
    def optimizer_types(self) -> list[str]:
        """Every optimizer that runs, in turn: the main one (unless none) and `optimizer.then`."""
        return optimizer_names(self.optimizer, self.run.model_type)

    def build_optimizer(self) -> SceneOptimizerBase | list[SceneOptimizerBase] | None:
        """The scene optimizer (a list when several run in turn), or None; built up front so a
        bad one fails at start."""
        chain = optimizer_chain(self.optimizer_types, self.optimizer_kwargs, exposed_only=True)
        return None if not chain else chain[0] if len(chain) == 1 else chain


def _unknown_parameters(names: list[str], valid: list[str]) -> UnknownKwargError:
    hints = []
    for name in names:
        close = difflib.get_close_matches(name, valid, n=1)
        hints.append(name + (f" (did you mean {close[0]}?)" if close else ""))
    return UnknownKwargError(
        f"unknown parameter{'s' if len(names) > 1 else ''} {', '.join(hints)}; every parameter is listed "
        "in config/scene_from_views.yaml and by scene_from_views_map --list-parameters"
    )


def resolved_optimizer_type(choice: str, model_type: SceneFromViewsType | str) -> str:
    """`optimizer.type` with "auto" replaced by the model's own optimizer."""
    return model_class(model_type).default_optimizer if choice == "auto" else choice


def optimizer_names(choice: OptimizerChoice, model_type: SceneFromViewsType | str) -> list[str]:
    """The optimizers of `choice` that run, in turn ("none" left out)."""
    main = resolved_optimizer_type(choice.type, model_type)
    return ([] if main == NO_OPTIMIZER else [main]) + [name.strip().lower() for name in choice.then]


def settings_from_parameters(params: Mapping[str, Any]) -> MappingSettings:
    """Check flat parameters (dotted names; unset ones keep their defaults) and return the
    settings.  Raises UnknownKwargError for a name that is no parameter and InvalidOptionError
    for a value of the wrong type, out of range or not among the choices."""
    grouped: dict[type[Options], dict[str, Any]] = {group: {} for group in PARAMETER_GROUPS}
    model_values: dict[str, Any] = {}
    optimizer_values: dict[str, Any] = {}
    unknown = []
    for name, value in params.items():
        if name.startswith("qos_overrides."):  # rclpy's QoS overrides of the node's publishers
            continue
        if name in FIXED_PARAMETERS:
            group, option_name = FIXED_PARAMETERS[name]
            grouped[group][option_name] = value
        elif name.startswith(MODEL_PREFIX):
            model_values[name[len(MODEL_PREFIX):]] = value
        elif name.startswith(OPTIMIZER_PREFIX):
            optimizer_values[name[len(OPTIMIZER_PREFIX):]] = value
        else:
            unknown.append(name)
    if unknown:
        raise _unknown_parameters(sorted(unknown), list(FIXED_PARAMETERS))
    def built(group: type[_GroupT]) -> _GroupT:
        return group.create(grouped[group], exposed_only=True)

    run = built(RunOptions)
    model_cls = model_class(run.model_type)
    model = model_cls.options_class.create(model_values, exposed_only=True)
    optimizer = built(OptimizerChoice)
    names = optimizer_names(optimizer, run.model_type)
    if optimizer_values and not names:
        given = ", ".join(f"{OPTIMIZER_PREFIX}{name}" for name in optimizer_values)
        raise InvalidOptionError(
            f"{given} set but no optimizer runs (optimizer.type {optimizer.type!r} for model_type {SceneFromViewsType(run.model_type).value!r}); "
            "set optimizer.type or remove them"
        )
    # an optimizer that is not implemented, or a bad or unknown option, is refused here
    for chosen in optimizer_chain(names, optimizer_values, exposed_only=True):
        if chosen.needs_descriptors and not model_cls.gives_descriptors:
            raise InvalidOptionError(
                f"optimizer {chosen.name!r} matches local descriptors, which model_type {SceneFromViewsType(run.model_type).value!r} "
                "does not give; use model_type mast3r, or optimizer.type dense_scene_optimizer"
            )
    chain = built(ChainConfig)
    mapper = MapperConfig(
        keyframe=built(KeyframeConfig), window=built(WindowConfig), map=built(MapConfig),
        chain=chain.changed(metric=True) if model_cls.is_metric else chain,
    )
    model.check_window(mapper.window.size)
    inputs = built(NodeInputs)
    _check_rig_windows(inputs, mapper.window)
    return MappingSettings(
        run=run, model=model, optimizer=optimizer, optimizer_kwargs=dict(optimizer_values),
        inputs=inputs, frames=built(FrameNames), mapper=mapper, output=built(OutputConfig),
        publish=built(PublishConfig), given=frozenset(params),
    )


def _check_rig_windows(inputs: NodeInputs, window: WindowConfig) -> None:
    """A rig's keyframes come in groups of one view per camera, which windows never split."""
    cameras = len(inputs.image_topics)
    if inputs.rig_slop_s > 0 and cameras > 1 and (window.size % cameras or window.overlap % cameras):
        raise InvalidOptionError(
            f"rig_slop_s={inputs.rig_slop_s} makes the {cameras} cameras of image_topics one multi-view keyframe: "
            f"window.size ({window.size}) and window.overlap ({window.overlap}) must be multiples of {cameras}, e.g. "
            f"window.size {cameras * max(2, window.size // cameras)} and window.overlap {cameras}"
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


def read_yaml_file(path: str | Path) -> Any:
    """A YAML file's content, or SettingsError with one line saying why it cannot be read."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except OSError as error:
        raise SettingsError(f"cannot read parameter file {path}: {error.strerror or error}") from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SettingsError(f"parameter file {path} is not valid YAML: {problem}{where}") from error


def load_parameter_file(path: str | Path, node_name: str = DEFAULT_NODE_NAME) -> dict[str, Any]:
    """Flat parameters of `node_name` from a ROS 2 parameter YAML file.

    Reads ``<node>: ros__parameters: {...}`` (also ``/<node>``, ``/<namespace>/<node>`` and the
    ``/**`` wildcard, which the node-specific section overrides); nested dicts and dotted keys
    are both accepted.
    """
    path = Path(path)
    document = read_yaml_file(path)
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
