"""DUSt3R and MASt3R through the mapping stack: windows -> pairs -> chained map, offline and in the node."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_ros_node import NODE, OVERLAP, WINDOW, model_params_file, produce_windows, running_node, wait_for

from scene_from_views_ros.cli.map import main
from scene_from_views_ros.core.errors import InvalidOptionError
from scene_from_views_ros.geometry.ply import read_ply
from scene_from_views_ros.io.messages import pointcloud2_to_arrays
from scene_from_views_ros.mapping.settings import settings_from_parameters

FIXTURES = Path(__file__).parent / "fixtures"
PAIR_MODELS = ("dust3r", "mast3r")
IMAGE_SIZE = 64


def model_parameters(model_type: str) -> dict[str, object]:
    folder = FIXTURES / f"{model_type}_tiny"
    return {"model_type": model_type, "model.checkpoint": str(folder / "weights.safetensors"),
            "model.config": str(folder / "config.json"), "model.image_size": IMAGE_SIZE}


@pytest.mark.parametrize("model_type", PAIR_MODELS)
def test_the_offline_tool_maps_several_windows(model_type: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    args = ["--sample", "--sample-frames", "12", "--sample-size", "96x72", "--out", str(out), "--device", "cpu", "-q",
            "-p", "keyframe.min_change:=0.0", "-p", "window.size:=4", "-p", "window.overlap:=2", "-p", "chain.min_inlier_ratio:=0.0",
            "-p", "map.voxel_size:=0.002", "-p", "model.scene_graph:=swin", "-p", "model.winsize:=1"]
    for name, value in model_parameters(model_type).items():
        args += ["-p", f"{name}:={value}"]
    assert main(args) == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"].startswith(f"{model_type} on cpu")
    assert summary["windows"] >= 4 and summary["keyframes_in_map"] == 12
    keyframes = json.loads((out / "keyframes.json").read_text())["keyframes"]
    poses = np.array([k["pose"] for k in keyframes])
    assert np.isfinite(poses).all() and len({tuple(np.round(p[:3, 3], 9)) for p in poses}) > 1
    points, _colors = read_ply(out / "map.ply")
    assert len(points) > 100 and np.isfinite(points).all()
    depth = np.load(next((out / "keyframes").glob("*.npy")))
    assert depth.shape == (48, 64)  # 96x72 at image_size 64


@pytest.mark.parametrize("model_type", PAIR_MODELS)
def test_the_node_maps_windows_of_pairs(model_type: str, tmp_path: Path) -> None:
    params_file = model_params_file(tmp_path, model_parameters(model_type))
    with running_node(["--ros-args", "--params-file", str(params_file), "-p", "device:=cpu"]) as (node, probe):
        assert type(node.backend.model).model_type.value == model_type
        produce_windows(probe, 3, timeout=60.0)
        wait_for(lambda: probe.count(f"{NODE}/map_cloud") > 0, 10, "map cloud")
        points, colors = pointcloud2_to_arrays(probe.messages(f"{NODE}/window_cloud")[-1])
        assert len(points) > 0 and np.isfinite(points).all() and colors.dtype == np.uint8
        depth = probe.messages(f"{NODE}/depth/image")[-1]
        assert (depth.height, depth.width) == (48, 64)  # 160x120 at image_size 64
        assert len(node.mapper.trajectory()) >= WINDOW + 2 * (WINDOW - OVERLAP)


def test_the_oneref_reference_view_is_checked_against_the_window_where_given(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    given = {**model_parameters("dust3r"), "model.scene_graph": "oneref", "window.size": 4}
    assert settings_from_parameters({**given, "model.refid": 3}).model.refid == 3
    with pytest.raises(InvalidOptionError, match=r"model.refid=4 is not allowed with windows of 4 views.*enlarge window.size"):
        settings_from_parameters({**given, "model.refid": 4})
    args = ["--sample", "--sample-frames", "4", "--out", str(tmp_path / "out"), "--device", "cpu"]
    for name, value in {**given, "model.refid": 7}.items():
        args += ["-p", f"{name}={value}"]
    assert main(args) == 2 and "model.refid=7 is not allowed with windows of 4 views" in capsys.readouterr().err
    assert not (tmp_path / "out" / "summary.json").exists()
