"""What launch/scene_from_views.launch.py starts, computed from its launch arguments.

Kept apart from `launch`/`launch_ros` (and rclpy) so that it can be imported and tested anywhere;
the launch file only turns a `LaunchPlan` into actions.  An argument left at '' is not given:
the parameter files' value stands.
"""
from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

from ..core.factory import implemented_types
from ..core.types import SceneFromViewsType
from ..mapping.settings import DEFAULT_NODE_NAME, load_parameter_file


class LaunchArgument(NamedTuple):
    """A launch argument as DeclareLaunchArgument takes it."""

    name: str
    default: str
    description: str


LAUNCH_ARGUMENTS: tuple[LaunchArgument, ...] = (
    LaunchArgument("namespace", "", "ROS namespace of the mapper (and RViz): its topics become "
                   "/<namespace>/scene_from_views/...; '' = none (or the includer's PushRosNamespace)."),
    LaunchArgument("params_file", "", "YAML file with the parameters every model shares; '' = the package's "
                   "config/scene_from_views.yaml."),
    LaunchArgument("model_params_file", "", "YAML file with the model's own model.* parameters, loaded after "
                   "params_file; '' = the package's config/models/<model_type>.yaml."),
    LaunchArgument("model_type", "", "Reconstruction model family, one of: "
                   f"{', '.join(t.value for t in implemented_types())}; '' = params_file's model_type."),
    LaunchArgument("image_topics", "", "Camera topics, comma-separated (/a/image_raw,/b/image_raw); "
                   "'' = params_file's image_topics."),
    LaunchArgument("image_topic", "", "The older name of image_topics (give one of the two)."),
    LaunchArgument("camera_info_topics", "", "CameraInfo topics, comma-separated, one per image topic in the "
                   "same order (an empty entry skips a camera); '' = params_file's camera_info_topics."),
    LaunchArgument("use_sim_time", "", "true: follow /clock (bag playback, simulation); '' = params_file's "
                   "value (false when unset)."),
    LaunchArgument("log_level", "", "Log level of the mapper: debug, info, warn, error or fatal; '' = info."),
    LaunchArgument("lifecycle", "false", "true: start the managed node (scene_from_views_lifecycle_node) and drive "
                   "it to active (configure: the model is loaded; activate: mapping starts)."),
    LaunchArgument("use_rviz", "false", "true: also start RViz with the mapping view (if rviz2 is installed)."),
)

LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
EXECUTABLE, LIFECYCLE_EXECUTABLE = "scene_from_views_node", "scene_from_views_lifecycle_node"
RVIZ_CONFIG = Path("config") / "scene_from_views.rviz"
PARAMS_FILE = Path("config") / "scene_from_views.yaml"
MODEL_PARAMS_DIR = Path("config") / "models"
# The launch configuration in which launch_ros's PushRosNamespace keeps the namespace it pushed.
ROS_NAMESPACE_CONFIGURATION = "ros_namespace"
_NAMESPACE = re.compile(r"^/?([A-Za-z_][A-Za-z0-9_]*)(/[A-Za-z_][A-Za-z0-9_]*)*/?$")


class LaunchArgumentError(ValueError):
    """A launch argument that cannot be used; the message names it and what is allowed."""


@dataclass(frozen=True)
class LaunchPlan:
    """The mapper node and, when asked and installed, RViz."""

    namespace: str | None  # absolute; None = the root namespace
    executable: str  # scene_from_views_node, or the managed scene_from_views_lifecycle_node
    parameters: list[str | dict[str, Any]]  # parameter files, then one dict of the given arguments (if any)
    arguments: list[str]  # extra command-line arguments of the mapper
    rviz_config: str | None = None  # RViz's -d file; None = no RViz
    rviz_parameters: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def rviz_installed() -> bool:
    """Whether rviz2 is in the ament index (where launch_ros looks for its executable)."""
    try:
        get_package_share_directory("rviz2")
    except PackageNotFoundError:
        return False
    return True


def plan_launch(configurations: Mapping[str, str], share: Path,
                rviz_available: Callable[[], bool] = rviz_installed) -> LaunchPlan:
    """The plan for `configurations` (the launch context's launch_configurations); `share`: the
    package's share folder.  Raises LaunchArgumentError for an argument that cannot be used."""
    given = {argument.name: configurations.get(argument.name, argument.default).strip() for argument in LAUNCH_ARGUMENTS}
    namespace = node_namespace(configurations.get(ROS_NAMESPACE_CONFIGURATION, ""), given["namespace"])
    params_file = existing_file("params_file", given["params_file"] or str(share / PARAMS_FILE))
    overrides: dict[str, Any] = {}
    if given["model_type"]:
        overrides["model_type"] = checked_model_type(given["model_type"], "the model_type argument")
    if given["model_params_file"]:
        model_params_file = existing_file("model_params_file", given["model_params_file"])
    else:
        model_type = overrides.get("model_type") or yaml_model_type(params_file)
        model_params_file = existing_file("model_params_file", str(share / MODEL_PARAMS_DIR / f"{model_type}.yaml"))
    if given["image_topics"] and given["image_topic"]:
        raise LaunchArgumentError("image_topic is the older name of image_topics: give one of them, not both")
    if given["image_topics"] or given["image_topic"]:
        overrides["image_topics"] = split_topics(given["image_topics"] or given["image_topic"])
    if given["camera_info_topics"]:
        overrides["camera_info_topics"] = split_topics(given["camera_info_topics"])
    sim_time = {"use_sim_time": boolean("use_sim_time", given["use_sim_time"])} if given["use_sim_time"] else {}
    overrides.update(sim_time)
    arguments = ["--ros-args", "--log-level", log_level(given["log_level"])] if given["log_level"] else []
    rviz_config: str | None = None
    warnings: list[str] = []
    if boolean("use_rviz", given["use_rviz"]):
        if not rviz_available():
            warnings.append("use_rviz:=true but RViz (rviz2) is not installed: the mapper runs without RViz. Install it "
                            f"with: sudo apt install ros-{os.environ.get('ROS_DISTRO', '$ROS_DISTRO')}-rviz2")
        elif namespace:
            rviz_config = write_temporary(namespaced_rviz_config((share / RVIZ_CONFIG).read_text(), namespace), ".rviz")
        else:
            rviz_config = str(share / RVIZ_CONFIG)
    files = [namespaced_parameter_file(path, namespace) for path in (params_file, model_params_file)]
    return LaunchPlan(
        namespace=namespace or None,
        executable=LIFECYCLE_EXECUTABLE if boolean("lifecycle", given["lifecycle"]) else EXECUTABLE,
        parameters=[*files, overrides] if overrides else files,
        arguments=arguments,
        rviz_config=rviz_config,
        rviz_parameters=[sim_time] if rviz_config and sim_time else [],
        warnings=warnings,
    )


def node_namespace(pushed: str, namespace: str) -> str:
    """The absolute namespace of the nodes ('' = root), as launch_ros resolves it: `namespace`
    relative to the one a PushRosNamespace `pushed`, unless it is absolute."""
    for value in (pushed, namespace):
        if value.strip("/") and not _NAMESPACE.match(value):
            raise LaunchArgumentError(f"namespace {value!r} is not a valid ROS namespace (names of letters, digits and "
                                      "underscores, not starting with a digit, joined by single slashes, e.g. robot1)")
    combined = namespace if namespace.startswith("/") else f"{pushed.rstrip('/')}/{namespace}"
    return "/" + combined.strip("/") if combined.strip("/") else ""


def existing_file(argument: str, path: str) -> str:
    """`path` when it is a file, else LaunchArgumentError naming `argument`."""
    if not Path(path).is_file():
        raise LaunchArgumentError(f"{argument} {path!r} does not exist (or is not a file)")
    return path


def checked_model_type(value: str, source: str) -> str:
    """The model type named by `value` (from `source`), else LaunchArgumentError listing the allowed ones."""
    allowed = [t.value for t in implemented_types()]
    try:
        model_type = SceneFromViewsType(value).value
    except ValueError:
        model_type = None
    if model_type not in allowed:
        raise LaunchArgumentError(f"model_type {value!r} ({source}) is not a model type; allowed: {', '.join(allowed)}")
    return model_type


def yaml_model_type(params_file: str) -> str:
    """params_file's model_type for the scene_from_views node (its own section or /**), else vggt."""
    try:
        parameters = load_parameter_file(params_file, DEFAULT_NODE_NAME)
    except ValueError as error:
        raise LaunchArgumentError(f"params_file: {error}") from error
    value = parameters.get("model_type", SceneFromViewsType.VGGT.value)
    return checked_model_type(str(value), f"model_type in params_file {params_file}")


def split_topics(value: str) -> list[str]:
    """Comma-separated topics as a list (entries stripped; an empty entry stays: a skipped camera)."""
    return [topic.strip() for topic in value.split(",")]


def boolean(argument: str, value: str) -> bool:
    """true or false, case-insensitive, else LaunchArgumentError."""
    if value.lower() not in ("true", "false"):
        raise LaunchArgumentError(f"{argument} must be true or false, not {value!r}")
    return value.lower() == "true"


def log_level(value: str) -> str:
    """One of LOG_LEVELS (case-insensitive), else LaunchArgumentError."""
    if value.lower() not in LOG_LEVELS:
        raise LaunchArgumentError(f"log_level must be one of {', '.join(LOG_LEVELS)}, not {value!r}")
    return value.lower()


def namespaced_parameter_file(path: str, namespace: str) -> str:
    """`path`, or under a namespace a temporary copy whose node section `scene_from_views:` is
    renamed `<namespace>/scene_from_views:` (rcl applies a relative section only in the root namespace)."""
    if not namespace:
        return path
    pattern = re.compile(rf"^([\"']?){DEFAULT_NODE_NAME}\1(\s*):", re.MULTILINE)
    text = Path(path).read_text()
    renamed = pattern.sub(rf"{namespace}/{DEFAULT_NODE_NAME}\2:", text)
    return path if renamed == text else write_temporary(renamed, ".yaml")


def namespaced_rviz_config(text: str, namespace: str) -> str:
    """The RViz config `text` with its topics /scene_from_views/... moved under `namespace`."""
    return re.sub(rf"^(\s*Value: )/{DEFAULT_NODE_NAME}/", rf"\g<1>{namespace}/{DEFAULT_NODE_NAME}/", text, flags=re.MULTILINE)


def write_temporary(text: str, suffix: str) -> str:
    """The path of a new temporary file holding `text` (kept: the launched processes read it)."""
    descriptor, name = tempfile.mkstemp(prefix="scene_from_views_", suffix=suffix)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    return name
