"""The node's parameters (declared from the option declarations) and the RViz file.

Parameter declaration runs on a real rclpy node (descriptors, overrides as ``-p`` arguments
and YAML files); runtime changes go through a running node's parameter callback, as
``ros2 param set`` does; the offline tool runs in-process.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import rclpy
import yaml
from rcl_interfaces.msg import ParameterType
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter

from scene_from_views_ros.cli.map import main as cli_main
from scene_from_views_ros.core import implemented_types, model_class
from scene_from_views_ros.core.errors import InvalidOptionError, UnknownKwargError
from scene_from_views_ros.mapping.settings import FrameNames, parameters, settings_from_parameters
from scene_from_views_ros.mapping.synthetic import make_sequence
from scene_from_views_ros.ros.node import SceneFromViewsNode
from scene_from_views_ros.ros.params import build_backend, declare_node_parameters, parameter_values

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / "config" / "scene_from_views.yaml"
TINY = REPO_ROOT / "test" / "fixtures" / "vggt_tiny"
TINY_PARAMS = {"model.checkpoint": str(TINY / "weights.safetensors"), "model.config": str(TINY / "config.json"),
               "model.target_size": 70, "device": "cpu"}


@pytest.fixture()
def context():
    context = Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


def ros_args(values: dict[str, Any]) -> list[str]:
    """``--ros-args -p name:=value`` for each entry (values written as YAML, as ROS reads them)."""
    args = ["--ros-args"]
    for name, value in values.items():
        args += ["-p", f"{name}:={value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"]
    return args


def declared(context: Context, *args: str) -> tuple[Node, Any]:
    node = Node("scene_from_views", context=context, allow_undeclared_parameters=True, cli_args=list(args))
    try:
        return node, declare_node_parameters(node)
    except BaseException:
        node.destroy_node()
        raise


# ---------------------------------------------------------------- declaration
def test_every_parameter_is_declared_with_its_descriptor(context: Context) -> None:
    """``ros2 param describe`` shows each parameter's description, unit, range (with step),
    allowed values and read-only flag, as its declaration says."""
    node, settings = declared(context)
    try:
        expected = list(parameters("vggt"))
        held = {name for name in node.get_parameters_by_prefix("")} - {"use_sim_time", "start_type_description_service"}
        assert held == {p.name for p in expected}
        for parameter in expected:
            spec, descriptor = parameter.spec, node.describe_parameter(parameter.name)
            assert descriptor.description.startswith(spec.description), parameter.name
            assert descriptor.read_only == spec.restart, parameter.name
            assert descriptor.additional_constraints == f"allowed: {spec.allowed()}", parameter.name
            value = parameter_values(node)[parameter.name]
            assert (list(value) if isinstance(value, (list, tuple)) else value) == (
                list(spec.default) if spec.kind is tuple else spec.default), parameter.name
            if spec.kind in (int, float) and spec.low is not None:
                ranges = descriptor.floating_point_range if spec.kind is float else descriptor.integer_range
                assert (ranges[0].from_value, ranges[0].to_value) == pytest.approx((spec.low, spec.high)), parameter.name
        target = node.describe_parameter("model.target_size").integer_range[0]
        assert (target.from_value, target.step) == (14, 14)
        assert "one of crop, pad" in node.describe_parameter("model.preprocess_mode").additional_constraints
        assert "[percentile]" in node.describe_parameter("model.conf_thres").description
        assert node.describe_parameter("camera_info_topics").type == ParameterType.PARAMETER_STRING_ARRAY
        assert settings.model_options == model_class("vggt").options_class()
        assert settings.frames == FrameNames() and settings.inputs.image_topics == ("/camera/image_raw",)
    finally:
        node.destroy_node()


def test_the_robust_model_declares_its_own_options(context: Context) -> None:
    node, settings = declared(context, *ros_args({"model_type": "vggt_robust", "model.rej_thresh": 0.6}))
    try:
        assert node.get_parameter("model.rej_thresh").value == 0.6 and settings.model_options.rej_thresh == 0.6
        assert node.describe_parameter("model.attn_a").floating_point_range[0].to_value == 1.0
    finally:
        node.destroy_node()
    with pytest.raises(UnknownKwargError, match=r"model\.rej_thresh.*valid \(VggtOptions\)"):
        declared(context, *ros_args({"model_type": "vggt", "model.rej_thresh": 0.6}))


@pytest.mark.parametrize("model_type", [t.value for t in implemented_types()])
def test_each_model_starts_from_the_shared_file_and_its_own(context: Context, model_type: str) -> None:
    """config/scene_from_views.yaml + config/models/<type>.yaml (what the launch file loads)."""
    model_file = REPO_ROOT / "config" / "models" / f"{model_type}.yaml"
    node, settings = declared(context, "--ros-args", "--params-file", str(CONFIG), "--params-file", str(model_file))
    try:
        assert settings.model_type.value == model_type
        assert settings.model_options == model_class(model_type).options_class()
    finally:
        node.destroy_node()
    # The VGGT file cannot start another model: its model.* keys are VGGT's (a robust file can).
    if model_type == "vggt_robust":
        with pytest.raises(UnknownKwargError, match=r"model\.attn_a"):
            declared(context, "--ros-args", "--params-file", str(model_file), "-p", "model_type:=vggt")


# ---------------------------------------------------------------- node and CLI agree
# (parameter, value as typed on a command line, accepted?)  The same text goes to the
# offline tool (-p NAME=VALUE), the node's start-up (--ros-args -p NAME:=VALUE) and a
# running node (ros2 param set NAME VALUE), which all read it as YAML.
VALUE_TABLE = [
    ("model.conf_thres", "30", True),  # an integer where a float is expected
    ("model.conf_thres", "99.5", True),
    ("model.conf_thres", "150", False),
    ("model.conf_thres", "-1.0", False),
    ("model.conf_thres", "high", False),
    ("model.prediction_mode", "depthmap", True),
    ("model.prediction_mode", "bogus", False),
    ("model.frames_chunk_size", "0", True),
    ("model.frames_chunk_size", "-3", False),
    ("model.target_size", "140", True),
    ("model.target_size", "140.0", False),  # a float where an integer is expected
    ("model.target_size", "100", False),  # not a multiple of 14
    ("model.mask_black_bg", "true", True),
    ("model.mask_black_bg", "1", False),
    ("model.dtype", "float16", True),
    ("model.dtype", "half", False),
    ("model.bogus", "1", False),
    ("chain.drop_percentile", "99.0", True),
    ("chain.drop_percentile", "99.5", False),
    ("chain.min_inlier_ratio", "1.5", False),
    ("keyframe.min_change", "0", True),
    ("keyframe.min_change", "1.5", False),
    ("keyframe.min_interval_s", "0.5", True),
    ("map.min_confidence", "1.5", True),
    ("map.pixel_stride", "0", False),
    ("map.voxel_size", "0.0", False),
    ("window.size", "2", False),  # with the default overlap of 2
    ("window.size", "6", True),
    ("window.sise", "6", False),
    ("image_qos", "reliable", True),
    ("image_qos", "fast", False),
    ("publish.window_cloud_stride", "2", True),
    ("publish.window_cloud_stride", "100", False),
    ("device", "cpu", True),
    ("device", "gpu", False),
    ("camera_frame", "map", False),
    ("map_frame", "world", True),
    ("map_frame", "odom", False),  # the odom_frame
    ("optimizer.type", "magic", False),
]


def cli_accepts(capsys: pytest.CaptureFixture[str], name: str, text: str) -> tuple[bool, str]:
    code = cli_main(["--list-parameters", "-p", f"{name}={text}"])
    _out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code == 0, err


def node_start_accepts(context: Context, name: str, text: str) -> tuple[bool, str]:
    try:
        node, _ = declared(context, "--ros-args", "-p", f"{name}:={text}")
    except (InvalidOptionError, UnknownKwargError, rclpy.exceptions.ParameterException) as error:
        return False, str(error)
    node.destroy_node()
    return True, ""


@pytest.fixture()
def running_node(context: Context):
    node = SceneFromViewsNode(context=context, cli_args=ros_args(TINY_PARAMS))
    yield node
    node.close()
    node.destroy_node()


def test_node_and_cli_accept_exactly_the_same_values(
    context: Context, running_node: SceneFromViewsNode, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, text, good in VALUE_TABLE:
        cli_ok, cli_error = cli_accepts(capsys, name, text)
        start_ok, start_error = node_start_accepts(context, name, text)
        assert (cli_ok, start_ok) == (good, good), (name, text, cli_error, start_error)
        if not good:
            assert name in cli_error and name in start_error, (name, cli_error, start_error)
        before = parameter_values(running_node).get(name)
        result = running_node.set_parameters([Parameter(name, value=yaml.safe_load(text))])[0]
        read_only = name in {"window.size", "image_qos"}
        assert result.successful == (good and not read_only), (name, text, result.reason)
        if result.successful:
            assert running_node.set_parameters([Parameter(name, value=before)])[0].successful
        else:
            assert name in result.reason and (not read_only or "read-only" in result.reason), (name, result.reason)
    # A value refused at runtime left everything as it was.
    assert running_node.settings.model_options.conf_thres == 50.0 and running_node.get_parameter("model.conf_thres").value == 50.0


def test_exponent_notation_is_a_number_for_both(context: Context, capsys: pytest.CaptureFixture[str]) -> None:
    """ROS reads ``-p x:=1e-5`` as a number (YAML 1.1 would read a string): so does the CLI."""
    assert cli_accepts(capsys, "chain.inlier_threshold", "1e-5")[0]
    assert node_start_accepts(context, "chain.inlier_threshold", "1e-5")[0]
    assert not cli_accepts(capsys, "chain.inlier_threshold", "1e-9")[0]
    assert not node_start_accepts(context, "chain.inlier_threshold", "1e-9")[0]


def test_bad_values_name_the_parameter_the_value_and_what_is_allowed(capsys: pytest.CaptureFixture[str]) -> None:
    _, error = cli_accepts(capsys, "model.conf_thres", "150")
    assert "model.conf_thres=150 is not allowed: expected a number in [0, 100] (percentile)" in error
    _, error = cli_accepts(capsys, "model.prediction_mode", "bogus")
    assert "model.prediction_mode='bogus' is not allowed: expected one of pointmap, depthmap" in error
    _, error = cli_accepts(capsys, "model.conf_thre", "10")
    assert "unknown parameter model.conf_thre (did you mean model.conf_thres?)" in error
    _, error = cli_accepts(capsys, "window.sise", "6")
    assert "unknown parameter window.sise (did you mean window.size?)" in error


# ---------------------------------------------------------------- runtime changes
def test_call_option_changes_reuse_the_loaded_network() -> None:
    settings = settings_from_parameters(TINY_PARAMS)
    first = build_backend(settings)
    call_change = build_backend(settings_from_parameters({**TINY_PARAMS, "model.conf_thres": 10.0}), previous=first)
    assert call_change.model is not first.model and call_change.model.network is first.model.network
    assert call_change.model.options.conf_thres == 10.0 and first.model.options.conf_thres == 50.0
    rebuilt = build_backend(settings_from_parameters({**TINY_PARAMS, "model.dtype": "float32"}), previous=first)
    assert rebuilt.model.network is not first.model.network


def test_a_model_change_is_built_in_the_background_and_the_old_model_keeps_working(
    running_node: SceneFromViewsNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parameter callback returns while the new model is still loading; the mapper keeps
    the old model until the new one is ready, then uses it; the map is never reset."""
    from scene_from_views_ros.mapping import settings as settings_module

    release, building = threading.Event(), threading.Event()
    original = settings_module.MappingSettings.build_model

    def slow_build(self):
        building.set()
        assert release.wait(30)
        return original(self)

    monkeypatch.setattr(settings_module.MappingSettings, "build_model", slow_build)
    old_model = running_node.backend.model
    result = running_node.set_parameters([Parameter("model.dtype", value="float32")])[0]
    assert result.successful and building.wait(10)
    assert running_node.model_status == "rebuilding" and running_node.backend.model is old_model
    # The mapper keeps mapping with the old model meanwhile.
    sequence = make_sequence(4, 96, 72)
    for index in range(len(sequence)):
        running_node.mapper.add_frame(sequence.frame(index))
    assert running_node.mapper.flush(timeout=30)
    assert running_node.mapper.stats.windows_done == 1 and running_node.model_status == "rebuilding"
    # Meanwhile a per-call option changes: it will apply to the new model too.
    assert running_node.set_parameters([Parameter("model.conf_thres", value=20.0)])[0].successful
    release.set()
    for _ in range(200):
        if running_node.model_status == "ready" and running_node.backend.model is not old_model:
            break
        threading.Event().wait(0.05)
    new_model = running_node.backend.model
    assert new_model is not old_model and new_model.network is not old_model.network
    assert new_model.options.dtype == "float32" and new_model.options.conf_thres == 20.0


def test_a_failed_rebuild_keeps_the_model_and_reverts_its_parameters(
    running_node: SceneFromViewsNode, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    old_model = running_node.backend.model
    # A path that does not exist is refused at once, in the callback.
    missing = running_node.set_parameters([Parameter("model.checkpoint", value=str(tmp_path / "none.safetensors"))])[0]
    assert not missing.successful and "neither an existing file" in missing.reason
    # A corrupt file is only found when loading it: accepted, then reverted.
    assert running_node.set_parameters([Parameter("model.checkpoint", value=str(corrupt))])[0].successful
    for _ in range(200):
        if running_node.model_status.startswith("rebuild failed") and running_node.get_parameter("model.checkpoint").value != str(corrupt):
            break
        threading.Event().wait(0.05)
    assert running_node.model_status.startswith("rebuild failed: CheckpointCorruptError")
    assert running_node.get_parameter("model.checkpoint").value == TINY_PARAMS["model.checkpoint"]
    assert running_node.backend.model.network is old_model.network


def test_optimizer_then_is_set_at_runtime_and_checked(running_node: SceneFromViewsNode) -> None:
    refused = running_node.set_parameters([Parameter("optimizer.then", value=["bogus"])])[0]
    assert not refused.successful and "optimizer.then" in refused.reason and "tsdf_refinement" in refused.reason
    assert running_node.backend.optimizer is None
    assert running_node.set_parameters([Parameter("optimizer.then", value=["tsdf_refinement"])])[0].successful
    assert running_node.backend.optimizer.name == "tsdf_refinement"
    assert running_node.set_parameters([Parameter("optimizer.then", value=[""])])[0].successful is False


def test_optimizer_parameters_are_forwarded_and_checked() -> None:
    settings = settings_from_parameters({**TINY_PARAMS, "optimizer.type": "dense_scene_optimizer", "optimizer.niter": 100})
    assert settings.build_optimizer().options.niter == 100
    with pytest.raises(InvalidOptionError, match=r"optimizer\.niter=-5 is not allowed"):
        settings_from_parameters({**TINY_PARAMS, "optimizer.type": "dense_scene_optimizer", "optimizer.niter": -5})
    with pytest.raises(InvalidOptionError, match="sparse_scene_optimizer.*local descriptors, which model_type 'vggt' does not give"):
        settings_from_parameters({**TINY_PARAMS, "optimizer.type": "sparse_scene_optimizer"})
    with pytest.raises(InvalidOptionError, match=r"optimizer\.niter set but no optimizer runs \(optimizer\.type 'auto' for model_type 'vggt'\)"):
        settings_from_parameters({**TINY_PARAMS, "optimizer.niter": 100})


# ---------------------------------------------------------------- RViz file (the launch file: test_launch_setup.py)
def test_rviz_config_shows_map_window_path_and_tf_in_the_map_frame() -> None:
    rviz = yaml.safe_load((REPO_ROOT / "config" / "scene_from_views.rviz").read_text())
    manager = rviz["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == FrameNames().map_frame
    displays = {display["Class"].split("/")[-1] + ":" + display.get("Topic", {}).get("Value", ""): display
                for display in manager["Displays"]}
    map_cloud = displays["PointCloud2:/scene_from_views/map_cloud"]
    assert map_cloud["Topic"]["Durability Policy"] == "Transient Local" and map_cloud["Color Transformer"] == "RGB8"
    assert "PointCloud2:/scene_from_views/window_cloud" in displays
    assert "Path:/scene_from_views/path" in displays and "TF:" in displays
