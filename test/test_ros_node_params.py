"""The node's parameters, its YAML file, the launch file and the RViz configuration.

Parameter declaration runs on a real rclpy node (descriptors, overrides from the YAML file);
the launch file is checked by parsing, since `launch`/`launch_ros` are not installable here.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import rclpy
import yaml
from rcl_interfaces.msg import ParameterType
from rclpy.context import Context
from rclpy.node import Node

from scene_from_views_ros.core import model_class
from scene_from_views_ros.core.errors import ModelNotImplementedError, UnknownKwargError
from scene_from_views_ros.ros.params import (
    NODE_PARAMETERS,
    SPECS,
    ParameterError,
    build_backend,
    declare_node_parameters,
    kwarg_defaults,
    parameter_values,
    read_settings,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / "config" / "scene_from_views.yaml"
TINY = REPO_ROOT / "test" / "fixtures" / "vggt_tiny"


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def shipped_parameters() -> dict[str, Any]:
    return flatten(yaml.safe_load(CONFIG.read_text())["scene_from_views"]["ros__parameters"])


def default_values(**changes: Any) -> dict[str, Any]:
    """The flat parameter dict the node starts from with the shipped YAML, plus `changes`."""
    values = {name: spec.default for name, spec in SPECS.items()}
    values.update({f"model.{name}": value for name, value in kwarg_defaults(model_class("vggt")).items()})
    values.update(changes)
    return values


@pytest.fixture()
def context():  # noqa: ANN201
    context = Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


def test_yaml_lists_every_parameter_with_its_default() -> None:
    shipped = shipped_parameters()
    model_kwargs = kwarg_defaults(model_class("vggt"))
    expected = set(SPECS) | {f"model.{name}" for name in model_kwargs}
    assert set(shipped) == expected
    for spec in NODE_PARAMETERS:
        assert shipped[spec.name] == spec.default, spec.name
    for name, default in model_kwargs.items():
        assert shipped[f"model.{name}"] == ("" if default is None else default), name


def test_declared_parameters_have_descriptions_ranges_and_yaml_values(context: Context, tmp_path: Path) -> None:
    config = yaml.safe_load(CONFIG.read_text())
    config["scene_from_views"]["ros__parameters"]["map_frame"] = "world_from_yaml"
    config["scene_from_views"]["ros__parameters"]["window"]["size"] = 12
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(config))
    node = Node("scene_from_views", context=context, allow_undeclared_parameters=True,
                cli_args=["--ros-args", "--params-file", str(params_file)])
    try:
        declare_node_parameters(node)
        for spec in NODE_PARAMETERS:
            descriptor = node.describe_parameter(spec.name)
            assert descriptor.description and descriptor.read_only == spec.read_only, spec.name
            if spec.value_range is not None:
                ranges = descriptor.floating_point_range or descriptor.integer_range
                assert (ranges[0].from_value, ranges[0].to_value) == pytest.approx(spec.value_range), spec.name
        for name in model_class("vggt").valid_kwargs():
            descriptor = node.describe_parameter(f"model.{name}")
            assert "SceneFromViewsVggt" in descriptor.description and descriptor.dynamic_typing
        assert node.describe_parameter("camera_info_topics").type == ParameterType.PARAMETER_STRING_ARRAY
        settings = read_settings(parameter_values(node))
        assert settings.frames.map_frame == "world_from_yaml" and settings.mapper.window.window_size == 12
        assert settings.model_kwargs["target_size"] == 518 and "checkpoint" not in settings.model_kwargs  # "" = default
        assert settings.camera_info_topics == [] and settings.image_topics == ["/camera/image_raw"]
    finally:
        node.destroy_node()


@pytest.mark.parametrize(("override", "error", "message"), [
    ("model.not_a_kwarg:=3", UnknownKwargError, r"model\.not_a_kwarg .*valid: .*model\.target_size"),
    ("window.sise:=3", ParameterError, r"unknown parameter window\.sise"),
])
def test_unknown_overrides_stop_startup(context: Context, override: str, error: type, message: str) -> None:
    node = Node("scene_from_views", context=context, allow_undeclared_parameters=True, cli_args=["--ros-args", "-p", override])
    try:
        with pytest.raises(error, match=message):
            declare_node_parameters(node)
    finally:
        node.destroy_node()


def test_settings_map_onto_the_mapper_config() -> None:
    settings = read_settings(default_values(**{
        "window.size": 6, "window.overlap": 3, "keyframe.min_change": 0.2, "chain.seed": 4, "map.pixel_stride": 3,
        "model.target_size": 140, "model.checkpoint": "", "device": "",
    }))
    mapper = settings.mapper
    assert (mapper.window.window_size, mapper.window.window_overlap) == (6, 3)
    assert mapper.keyframe.min_change == 0.2 and mapper.chain.seed == 4 and mapper.map.pixel_stride == 3
    assert settings.device is None and settings.model_kwargs["target_size"] == 140 and "checkpoint" not in settings.model_kwargs


@pytest.mark.parametrize(("changes", "message"), [
    ({"image_qos": "fast"}, "image_qos must be one of sensor_data, reliable"),
    ({"window.size": 4, "window.overlap": 4}, r"window_overlap must be in \[1, window_size - 1\]"),
    ({"camera_info_topics": ["/a", "/b"]}, "camera_info_topics has 2 entries for 1 image_topics"),
    ({"image_topics": []}, "image_topics must list at least one"),
    ({"camera_frame": "map"}, "map_frame != camera_frame"),
    ({"model.target_size": 70.5}, "model.target_size must be a int"),
    ({"model.mask_black_bg": 1}, "model.mask_black_bg must be a bool"),
    ({"model.bogus": 1}, r"unknown model parameter model\.bogus"),
])
def test_invalid_settings_are_explained(changes: dict[str, Any], message: str) -> None:
    with pytest.raises((ParameterError, UnknownKwargError), match=message):
        read_settings(default_values(**changes))


def test_integers_are_accepted_for_float_kwargs() -> None:
    assert read_settings(default_values(**{"model.conf_thres": 30})).model_kwargs["conf_thres"] == 30.0


def tiny_settings(**changes: Any):  # noqa: ANN201 - NodeSettings
    return read_settings(default_values(**{
        "model.checkpoint": str(TINY / "weights.safetensors"), "model.config": str(TINY / "config.json"),
        "model.target_size": 70, "device": "cpu", **changes,
    }))


def test_backend_reuses_the_network_for_call_options_only() -> None:
    first = build_backend(tiny_settings())
    call_change = build_backend(tiny_settings(**{"model.conf_thres": 10.0}), previous=first)
    assert call_change.model is not first.model and call_change.model.network is first.model.network
    assert call_change.model.call_defaults["conf_thres"] == 10.0 and first.model.call_defaults["conf_thres"] == 50.0
    rebuilt = build_backend(tiny_settings(**{"model.target_size": 56, "model.build_track_head": True}), previous=first)
    assert rebuilt.model.network is not first.model.network
    with pytest.raises(ValueError, match="multiple of 14"):
        build_backend(tiny_settings(**{"model.target_size": 71}), previous=first)


def test_optimizer_parameters_are_forwarded_and_checked() -> None:
    with pytest.raises(ModelNotImplementedError, match="dense_scene_optimizer.*not implemented"):
        build_backend(tiny_settings(**{"optimizer.type": "dense_scene_optimizer", "optimizer.niter": 100}))
    with pytest.raises(ParameterError, match=r"optimizer\.niter set but optimizer\.type is empty"):
        build_backend(tiny_settings(**{"optimizer.niter": 100}))
    assert tiny_settings(**{"optimizer.type": "global_aligner", "optimizer.lr": 0.01}).optimizer_kwargs == {"lr": 0.01}


# ---------------------------------------------------------------- launch and RViz files
def launch_calls() -> dict[str, list[ast.Call]]:
    tree = ast.parse((REPO_ROOT / "launch" / "scene_from_views.launch.py").read_text())
    calls: dict[str, list[ast.Call]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            calls.setdefault(node.func.id, []).append(node)
    return calls


def keyword(call: ast.Call, name: str) -> ast.AST:
    return next(k.value for k in call.keywords if k.arg == name)


def test_launch_file_declares_its_arguments_and_starts_the_node() -> None:
    calls = launch_calls()
    arguments = {ast.literal_eval(call.args[0]) for call in calls["DeclareLaunchArgument"]}
    assert arguments == {"model_type", "image_topic", "params_file", "use_rviz"}
    used = {ast.literal_eval(call.args[0]) for call in calls["LaunchConfiguration"]}
    assert used == arguments
    nodes = {ast.literal_eval(keyword(call, "executable")): call for call in calls["Node"]}
    mapper = nodes["scene_from_views_node"]
    assert ast.literal_eval(keyword(mapper, "name")) == "scene_from_views"
    assert "scene_from_views_node = scene_from_views_ros.ros.node:main" in (REPO_ROOT / "setup.py").read_text()
    assert "use_rviz" in ast.unparse(keyword(nodes["rviz2"], "condition"))
    parameters = ast.unparse(keyword(mapper, "parameters"))
    # A string-array parameter from a substitution needs a list of lists in launch_ros.
    assert "'image_topics': [[LaunchConfiguration('image_topic')]]" in parameters.replace('"', "'")
    source = (REPO_ROOT / "launch" / "scene_from_views.launch.py").read_text()
    for name in re.findall(r'"(scene_from_views\.(?:yaml|rviz))"', source):
        assert (REPO_ROOT / "config" / name).is_file()


def test_rviz_config_shows_map_window_path_and_tf_in_the_map_frame() -> None:
    rviz = yaml.safe_load((REPO_ROOT / "config" / "scene_from_views.rviz").read_text())
    manager = rviz["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == SPECS["map_frame"].default
    displays = {display["Class"].split("/")[-1] + ":" + display.get("Topic", {}).get("Value", ""): display
                for display in manager["Displays"]}
    map_cloud = displays["PointCloud2:/scene_from_views/map_cloud"]
    assert map_cloud["Topic"]["Durability Policy"] == "Transient Local" and map_cloud["Color Transformer"] == "RGB8"
    assert "PointCloud2:/scene_from_views/window_cloud" in displays
    assert "Path:/scene_from_views/path" in displays and "TF:" in displays
