"""launch/scene_from_views.launch.py and scene_from_views_ros.ros.launch_setup, which computes what it starts.

`launch`/`launch_ros` are not installable here: the launch file runs against stand-ins with their
constructors' signatures (a wrong keyword fails), and the plan is checked on its own.
"""
from __future__ import annotations

import ast
import importlib.util
import logging
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import pytest
import rclpy
import yaml
from ament_index_python.packages import PackageNotFoundError
from lifecycle_msgs.msg import Transition
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.context import Context
from rclpy.node import Node

from scene_from_views_ros.core import implemented_types
from scene_from_views_ros.ros.launch_setup import (
    LAUNCH_ARGUMENTS,
    LaunchArgumentError,
    LaunchPlan,
    namespaced_rviz_config,
    node_namespace,
    plan_launch,
    rviz_installed,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO_ROOT / "launch" / "scene_from_views.launch.py"
CONFIG = REPO_ROOT / "config"
SHARED_YAML = str(CONFIG / "scene_from_views.yaml")
ALLOWED = ", ".join(t.value for t in implemented_types())


@pytest.fixture(autouse=True)
def temporary_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The plan's temporary copies go to this test's folder."""
    folder = tmp_path / "temporary"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def plan(rviz: bool = False, **arguments: str) -> LaunchPlan:
    """The plan for these arguments (the others at their defaults), RViz installed or not."""
    configurations = {argument.name: argument.default for argument in LAUNCH_ARGUMENTS}
    configurations.update(arguments)
    return plan_launch(configurations, REPO_ROOT, rviz_available=lambda: rviz)


def params_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return str(path)


# ---------------------------------------------------------------- parameters
def test_nothing_given_loads_only_the_two_yaml_files() -> None:
    result = plan()
    assert result == LaunchPlan(namespace=None, executable="scene_from_views_node",
                                parameters=[SHARED_YAML, str(CONFIG / "models" / "vggt.yaml")], arguments=[])
    for model_type in implemented_types():  # every default model file exists
        assert (CONFIG / "models" / f"{model_type.value}.yaml").is_file()


def test_a_given_model_type_picks_its_file_and_overrides_the_yaml() -> None:
    result = plan(model_type="VGGT-Robust")
    assert result.parameters == [SHARED_YAML, str(CONFIG / "models" / "vggt_robust.yaml"), {"model_type": "vggt_robust"}]


@pytest.mark.parametrize("section", ["scene_from_views", "/**"])
def test_the_model_file_follows_the_params_file_model_type(tmp_path: Path, section: str) -> None:
    own = params_file(tmp_path, f"{section}:\n  ros__parameters:\n    model_type: dust3r\n")
    assert plan(params_file=own).parameters == [own, str(CONFIG / "models" / "dust3r.yaml")]
    unset = params_file(tmp_path, f"{section}:\n  ros__parameters:\n    device: cpu\n")
    assert plan(params_file=unset).parameters == [unset, str(CONFIG / "models" / "vggt.yaml")]
    # The argument wins over the file, and a model file given is used as it is.
    assert plan(params_file=own, model_type="fast3r").parameters[1:] == [str(CONFIG / "models" / "fast3r.yaml"), {"model_type": "fast3r"}]
    mine = str(CONFIG / "models" / "mast3r.yaml")
    assert plan(params_file=own, model_params_file=mine).parameters == [own, mine]


def test_topics_split_on_commas() -> None:
    result = plan(image_topics="/a/image_raw, /b/image_raw/compressed", camera_info_topics=",/b/camera_info")
    assert result.parameters[2] == {"image_topics": ["/a/image_raw", "/b/image_raw/compressed"], "camera_info_topics": ["", "/b/camera_info"]}
    assert plan(image_topic="/camera/color/image_raw").parameters[2] == {"image_topics": ["/camera/color/image_raw"]}
    with pytest.raises(LaunchArgumentError, match="image_topic is the older name of image_topics: give one of them, not both"):
        plan(image_topic="/a/image_raw", image_topics="/b/image_raw")


def test_use_sim_time_and_log_level() -> None:
    result = plan(use_sim_time="True", log_level="DEBUG")
    assert result.parameters[2] == {"use_sim_time": True}
    assert result.arguments == ["--ros-args", "--log-level", "debug"]
    assert plan(use_sim_time="false").parameters[2] == {"use_sim_time": False}


@pytest.mark.parametrize(("arguments", "message"), [
    ({"model_type": "vggt2"}, f"model_type 'vggt2' \\(the model_type argument\\) is not a model type; allowed: {ALLOWED}$"),
    ({"params_file": "/nonexistent/params.yaml"}, "params_file '/nonexistent/params.yaml' does not exist"),
    ({"model_params_file": "/nonexistent/model.yaml"}, "model_params_file '/nonexistent/model.yaml' does not exist"),
    ({"use_sim_time": "yes"}, "use_sim_time must be true or false, not 'yes'"),
    ({"use_rviz": "1"}, "use_rviz must be true or false, not '1'"),
    ({"log_level": "verbose"}, "log_level must be one of debug, info, warn, error, fatal, not 'verbose'"),
    ({"namespace": "robot 1"}, "namespace 'robot 1' is not a valid ROS namespace"),
    ({"namespace": "1robot"}, "namespace '1robot' is not a valid ROS namespace"),
])
def test_bad_arguments_are_refused_with_what_is_allowed(arguments: dict[str, str], message: str) -> None:
    with pytest.raises(LaunchArgumentError, match=message):
        plan(**arguments)


def test_a_bad_params_file_is_refused(tmp_path: Path) -> None:
    unknown = params_file(tmp_path, "scene_from_views:\n  ros__parameters:\n    model_type: nerf\n")
    with pytest.raises(LaunchArgumentError, match=f"model_type 'nerf' \\(model_type in params_file {unknown}\\) is not a model type; allowed: {ALLOWED}"):
        plan(params_file=unknown)
    broken = params_file(tmp_path, "scene_from_views: [\n")
    with pytest.raises(LaunchArgumentError, match=f"params_file: parameter file {broken} is not valid YAML"):
        plan(params_file=broken)


# ---------------------------------------------------------------- RViz
def test_rviz_is_off_by_default_and_missing_rviz_leaves_the_mapper_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    assert plan(rviz=True).rviz_config is None
    monkeypatch.setenv("ROS_DISTRO", "jazzy")
    missing = plan(use_rviz="true", use_sim_time="true")
    assert missing.rviz_config is None and missing.rviz_parameters == []
    assert missing.warnings == ["use_rviz:=true but RViz (rviz2) is not installed: the mapper runs without RViz. "
                                "Install it with: sudo apt install ros-jazzy-rviz2"]
    assert missing.parameters[2] == {"use_sim_time": True}
    started = plan(rviz=True, use_rviz="TRUE", use_sim_time="true")
    assert started.rviz_config == str(CONFIG / "scene_from_views.rviz") and started.warnings == []
    assert started.rviz_parameters == [{"use_sim_time": True}]


def test_rviz_installed_reads_the_ament_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path))
    assert not rviz_installed()
    marker = tmp_path / "share" / "ament_index" / "resource_index" / "packages" / "rviz2"
    marker.parent.mkdir(parents=True)
    marker.touch()
    (tmp_path / "share" / "rviz2").mkdir()
    assert rviz_installed()


def test_rviz_topics_follow_the_namespace() -> None:
    original = (CONFIG / "scene_from_views.rviz").read_text()
    result = plan(rviz=True, use_rviz="true", namespace="robot1")
    assert result.namespace == "/robot1"
    rewritten = Path(result.rviz_config).read_text()
    assert rewritten == namespaced_rviz_config(original, "/robot1")
    changed = [(before, after) for before, after in zip(original.splitlines(), rewritten.splitlines(), strict=True) if before != after]
    assert len(changed) == original.count("Value: /scene_from_views/") == 4
    for before, after in changed:
        assert before.strip().startswith("Value: /scene_from_views/")
        assert after == before.replace("Value: /scene_from_views/", "Value: /robot1/scene_from_views/")
    topics = [display["Topic"]["Value"] for display in yaml.safe_load(rewritten)["Visualization Manager"]["Displays"] if "Topic" in display]
    assert topics and all(topic.startswith("/robot1/scene_from_views/") for topic in topics)


@pytest.mark.parametrize(("pushed", "namespace", "expected"), [
    ("", "", ""), ("", "robot1", "/robot1"), ("", "/robot1/", "/robot1"), ("", "fleet/robot1", "/fleet/robot1"),
    ("/fleet", "robot1", "/fleet/robot1"), ("/fleet", "/robot1", "/robot1"), ("/fleet", "", "/fleet"), ("/", "robot1", "/robot1"),
])
def test_namespace_resolves_as_launch_ros_does(pushed: str, namespace: str, expected: str) -> None:
    assert node_namespace(pushed, namespace) == expected


# ---------------------------------------------------------------- parameter files under a namespace
def declared_parameters(files: list[str], namespace: str) -> dict[str, Any]:
    """What rclpy gives a node named scene_from_views in `namespace` from these parameter files."""
    args = ["--ros-args", "-r", "__node:=scene_from_views", "-r", f"__ns:={namespace}"]
    for path in files:
        args += ["--params-file", path]
    context = Context()
    rclpy.init(args=args, context=context)
    try:
        node = Node("placeholder", context=context)
        try:
            values = {name: node.declare_parameter(name, None, ParameterDescriptor(dynamic_typing=True)).value
                      for name in ("model_type", "image_topics", "model.checkpoint")}
            return {name: value for name, value in values.items() if value is not None}
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_the_parameter_files_still_apply_under_a_namespace() -> None:
    files = [SHARED_YAML, str(CONFIG / "models" / "dust3r.yaml")]
    assert declared_parameters(files, "/robot1") == {}  # rcl applies a 'scene_from_views:' section in / only
    result = plan(namespace="robot1", model_type="dust3r")
    assert result.parameters[2] == {"model_type": "dust3r"}
    copies = result.parameters[:2]
    assert all(Path(path).parent == Path(tempfile.gettempdir()) for path in copies)
    for copy, path in zip(copies, files, strict=True):
        assert Path(copy).read_text() == Path(path).read_text().replace("\nscene_from_views:\n", "\n/robot1/scene_from_views:\n")
    assert declared_parameters(copies, "/robot1") == declared_parameters(files, "/") == {
        "model_type": "dust3r", "image_topics": ["/camera/image_raw"], "model.checkpoint": "naver/DUSt3R_ViTLarge_BaseDecoder_512_dpt"}


# ---------------------------------------------------------------- the launch file
def test_the_launch_file_parses_and_takes_everything_from_the_module() -> None:
    tree = ast.parse(LAUNCH_FILE.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and node.module == "scene_from_views_ros.ros.launch_setup" for alias in node.names}
    assert imported == {"LAUNCH_ARGUMENTS", "LIFECYCLE_EXECUTABLE", "plan_launch"}
    (declaration,) = [node for node in ast.walk(tree) if isinstance(node, ast.GeneratorExp)
                      and ast.unparse(node.elt).startswith("DeclareLaunchArgument(")]
    assert ast.unparse(declaration.generators[0].iter) == "LAUNCH_ARGUMENTS"
    (call,) = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and ast.unparse(node.func) == "plan_launch"]
    assert ast.unparse(call.args[0]) == "context.launch_configurations"
    assert len({argument.name for argument in LAUNCH_ARGUMENTS}) == len(LAUNCH_ARGUMENTS)


class Action:
    """Stand-in of a launch action: keeps its keyword arguments."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


def stand_ins() -> dict[str, types.ModuleType]:
    """`launch`, `launch_ros` and the submodules the launch file imports, with the real signatures."""

    class DeclareLaunchArgument(Action):
        def __init__(self, name: str, *, default_value: str | None = None, description: str | None = None,
                     choices: list[str] | None = None) -> None:
            super().__init__(name=name, default_value=default_value, description=description, choices=choices)

    class OpaqueFunction(Action):
        def __init__(self, *, function: Any, args: Any = None, kwargs: Any = None) -> None:
            super().__init__(function=function, args=args, kwargs=kwargs)

    class LaunchNode(Action):
        def __init__(self, *, executable: str, package: str | None = None, name: str | None = None, namespace: str | None = None,
                     exec_name: str | None = None, parameters: list | None = None, remappings: list | None = None,
                     ros_arguments: list | None = None, arguments: list | None = None, output: str = "log") -> None:
            super().__init__(executable=executable, package=package, name=name, namespace=namespace, parameters=parameters,
                             arguments=arguments, output=output)

    class LifecycleNode(LaunchNode):
        def __init__(self, *, name: str, namespace: str, **kwargs: Any) -> None:
            super().__init__(name=name, namespace=namespace, **kwargs)

    class EmitEvent(Action):
        def __init__(self, *, event: Any) -> None:
            super().__init__(event=event)

    class RegisterEventHandler(Action):
        def __init__(self, event_handler: Any) -> None:
            super().__init__(event_handler=event_handler)

    class ChangeState(Action):
        def __init__(self, *, lifecycle_node_matcher: Any, transition_id: int) -> None:
            super().__init__(lifecycle_node_matcher=lifecycle_node_matcher, transition_id=transition_id)

    class OnStateTransition(Action):
        def __init__(self, *, entities: Any, target_lifecycle_node: Any = None, transition: str | None = None,
                     start_state: str | None = None, goal_state: str | None = None, matcher: Any = None) -> None:
            super().__init__(entities=entities, target_lifecycle_node=target_lifecycle_node, transition=transition,
                             start_state=start_state, goal_state=goal_state, matcher=matcher)

    def matches_action(target_action: Any) -> Any:
        return ("matches", target_action)

    class LaunchDescription(Action):
        def __init__(self, initial_entities: list | None = None, *, deprecated_reason: str | None = None) -> None:
            super().__init__(entities=list(initial_entities or []))

    names = ("launch", "launch.actions", "launch.events", "launch.logging", "launch_ros", "launch_ros.actions",
             "launch_ros.event_handlers", "launch_ros.events", "launch_ros.events.lifecycle")
    modules = {name: types.ModuleType(name) for name in names}
    modules["launch.actions"].EmitEvent = EmitEvent
    modules["launch.actions"].RegisterEventHandler = RegisterEventHandler
    modules["launch.events"].matches_action = matches_action
    modules["launch_ros.actions"].LifecycleNode = LifecycleNode
    modules["launch_ros.event_handlers"].OnStateTransition = OnStateTransition
    modules["launch_ros.events.lifecycle"].ChangeState = ChangeState
    modules["launch"].LaunchDescription = LaunchDescription
    modules["launch.actions"].DeclareLaunchArgument = DeclareLaunchArgument
    modules["launch.actions"].OpaqueFunction = OpaqueFunction
    modules["launch.logging"].get_logger = logging.getLogger
    modules["launch_ros.actions"].Node = LaunchNode
    return modules


def load_launch_file(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    for name, module in stand_ins().items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("scene_from_views_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "get_package_share_directory", {"scene_from_views_ros": str(REPO_ROOT)}.__getitem__)
    return module


def run_launch(monkeypatch: pytest.MonkeyPatch, **arguments: str) -> tuple[list[Action], list[Action]]:
    """The declared arguments and the nodes the launch file starts with these arguments."""
    description = load_launch_file(monkeypatch).generate_launch_description()
    *declared, opaque = description.kwargs["entities"]
    configurations = {action.kwargs["name"]: action.kwargs["default_value"] for action in declared}
    configurations.update(arguments)
    return declared, opaque.kwargs["function"](types.SimpleNamespace(launch_configurations=configurations))


def test_the_launch_file_declares_every_argument_and_starts_the_mapper(monkeypatch: pytest.MonkeyPatch) -> None:
    declared, nodes = run_launch(monkeypatch)
    assert [(a.kwargs["name"], a.kwargs["default_value"], a.kwargs["description"]) for a in declared] == list(LAUNCH_ARGUMENTS)
    (mapper,) = nodes
    assert mapper.kwargs == {"executable": "scene_from_views_node", "package": "scene_from_views_ros", "name": "scene_from_views",
                             "namespace": None, "parameters": plan().parameters, "arguments": [], "output": "screen"}
    assert "scene_from_views_node = scene_from_views_ros.ros.node:main" in (REPO_ROOT / "setup.py").read_text()
    assert 'glob("config/models/*.yaml")' in (REPO_ROOT / "setup.py").read_text()  # the model files are installed


def test_lifecycle_starts_the_managed_node_and_drives_it_to_active(monkeypatch: pytest.MonkeyPatch) -> None:
    _, (mapper, activate, configure) = run_launch(monkeypatch, lifecycle="true", namespace="robot1")
    assert mapper.kwargs["executable"] == "scene_from_views_lifecycle_node" and mapper.kwargs["namespace"] == "/robot1"
    assert "scene_from_views_lifecycle_node = scene_from_views_ros.ros.node:lifecycle_main" in (REPO_ROOT / "setup.py").read_text()
    assert configure.kwargs["event"].kwargs == {"lifecycle_node_matcher": ("matches", mapper), "transition_id": Transition.TRANSITION_CONFIGURE}
    handler = activate.kwargs["event_handler"].kwargs
    assert handler["target_lifecycle_node"] is mapper and (handler["start_state"], handler["goal_state"]) == ("configuring", "inactive")
    (activation,) = handler["entities"]
    assert activation.kwargs["event"].kwargs == {"lifecycle_node_matcher": ("matches", mapper), "transition_id": Transition.TRANSITION_ACTIVATE}
    with pytest.raises(LaunchArgumentError, match="lifecycle must be true or false"):
        plan(lifecycle="yes")


def test_the_launch_file_warns_without_rviz_and_starts_it_in_the_namespace(monkeypatch: pytest.MonkeyPatch,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    def not_installed(name: str) -> str:
        raise PackageNotFoundError(name)

    monkeypatch.setattr("scene_from_views_ros.ros.launch_setup.get_package_share_directory", not_installed)
    with caplog.at_level(logging.WARNING, logger="launch.user"):
        _, nodes = run_launch(monkeypatch, use_rviz="true", log_level="warn")
    assert [node.kwargs["executable"] for node in nodes] == ["scene_from_views_node"]
    assert nodes[0].kwargs["arguments"] == ["--ros-args", "--log-level", "warn"]
    assert [record.getMessage() for record in caplog.records if record.name == "launch.user"] == plan(use_rviz="true").warnings
    monkeypatch.setattr("scene_from_views_ros.ros.launch_setup.get_package_share_directory", str)  # rviz2 installed
    _, (mapper, rviz) = run_launch(monkeypatch, use_rviz="true", namespace="robot1")
    assert mapper.kwargs["namespace"] == rviz.kwargs["namespace"] == "/robot1"
    assert rviz.kwargs["executable"] == "rviz2" and rviz.kwargs["arguments"][0] == "-d"
    assert "Value: /robot1/scene_from_views/map_cloud" in Path(rviz.kwargs["arguments"][1]).read_text()
