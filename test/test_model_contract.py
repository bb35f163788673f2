"""The contract every implemented model keeps, checked for each one on a tiny configuration.

Adding a model to the factory adds rows here: a test fails until the model has its fixture
(test/fixtures/<model_type>_tiny/model.yaml: its options, paths relative to that folder),
returns results of the common shape, starts the node from the shipped parameter files and
runs through the offline tool.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import rclpy
import yaml
from rclpy.context import Context

from scene_from_views_ros import SceneFromViewsResult, implemented_types, scene_from_views_factory
from scene_from_views_ros.cli.map import main as cli_main
from scene_from_views_ros.mapping.synthetic import make_sequence
from scene_from_views_ros.ros.node import SceneFromViewsNode

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "test" / "fixtures"
MODEL_TYPES = [t.value for t in implemented_types()]


def tiny_options(model_type: str) -> dict[str, Any]:
    folder = FIXTURES / f"{model_type}_tiny"
    options = yaml.safe_load((folder / "model.yaml").read_text())
    for key in ("checkpoint", "config"):
        if isinstance(options.get(key), str) and options[key]:
            options[key] = str((folder / options[key]).resolve())
    return options


def views() -> list[np.ndarray]:
    """Five RGB views of two sizes, one of them odd-sized."""
    sequence = make_sequence(5, 96, 72)
    images = [sequence.frame(i).image for i in range(5)]
    images[2] = np.ascontiguousarray(images[2][:61, :83])
    return images


def check_result(result: SceneFromViewsResult, num_inputs: int) -> None:
    survivors = result.survivor_indices if result.survivor_indices is not None else list(range(num_inputs))
    rejected = result.rejected_indices or []
    assert sorted(survivors + rejected) == list(range(num_inputs)) and survivors == sorted(survivors)
    if result.view_scores is not None:
        assert len(result.view_scores) == num_inputs and np.isfinite(result.view_scores).all()
    count = result.num_views
    assert count == len(survivors) >= 1
    lists = (result.camera_poses, result.processed_images, result.depth_predictions, result.point_clouds,
             result.intrinsics, result.confidences, result.masks)
    assert all(len(values) == count for values in lists)
    for view in range(count):
        pose, image = result.camera_poses[view], result.processed_images[view]
        depth, points, k = result.depth_predictions[view], result.point_clouds[view], result.intrinsics[view]
        confidence, mask = result.confidences[view], result.masks[view]
        height, width = image.shape[:2]
        assert image.dtype == np.uint8 and image.shape == (height, width, 3)
        assert pose.shape == (4, 4) and pose.dtype == np.float64
        rotation = pose[:3, :3]
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-6)
        assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-6)
        np.testing.assert_array_equal(pose[3], [0, 0, 0, 1])
        assert k.shape == (3, 3) and k[0, 0] > 0 and k[1, 1] > 0 and k[2, 2] == 1.0 and k[0, 1] == 0.0
        assert 0 < k[0, 2] < width and 0 < k[1, 2] < height
        assert depth.shape == (height, width) and depth.dtype == np.float32
        assert points.shape == (height, width, 3) and points.dtype == np.float32
        assert confidence.shape == (height, width) and confidence.dtype == np.float32 and np.isfinite(confidence).all()
        assert mask.shape == (height, width) and mask.dtype == bool and mask.any()
        assert np.isfinite(depth[mask]).all() and np.isfinite(points[mask]).all()
    np.testing.assert_allclose(result.camera_poses[0], np.eye(4), atol=1e-6)  # the first view's frame
    assert len(result.global_point_cloud) == sum(int(mask.sum()) for mask in result.masks)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_result_contract(model_type: str) -> None:
    model = scene_from_views_factory(model_type, device="cpu", **tiny_options(model_type))
    images = views()
    result = model.reconstruct(images, rgb=True)
    check_result(result, len(images))
    assert np.isfinite(result.global_point_cloud.points).all() and result.global_point_cloud.colors.dtype == np.uint8
    bare = model.reconstruct(images, rgb=True, as_pointcloud=False)  # what the mapper asks for
    assert len(bare.global_point_cloud) == 0 and bare.num_views == result.num_views


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_the_node_starts_from_the_shipped_parameter_files(model_type: str) -> None:
    overrides = [arg for name, value in tiny_options(model_type).items() for arg in ("-p", f"model.{name}:={value}")]
    context = Context()
    rclpy.init(context=context)
    try:
        node = SceneFromViewsNode(context=context, cli_args=[
            "--ros-args", "--params-file", str(REPO_ROOT / "config" / "scene_from_views.yaml"),
            "--params-file", str(REPO_ROOT / "config" / "models" / f"{model_type}.yaml"), *overrides, "-p", "device:=cpu",
        ])
        try:
            assert node.settings.model_type.value == model_type
            assert type(node.backend.model).model_type.value == model_type
        finally:
            node.close()
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_one_shot_through_the_offline_tool(model_type: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = []
    for index, image in enumerate(views()):
        files.append(tmp_path / f"view_{index}.png")
        cv2.imwrite(str(files[-1]), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    overrides = [arg for name, value in tiny_options(model_type).items() for arg in ("--model-arg", f"{name}={value}")]
    out = tmp_path / "out"
    code = cli_main([*map(str, files), "--one-shot", "--out", str(out), "--device", "cpu", "-q",
                     "--params-file", str(REPO_ROOT / "config" / "models" / f"{model_type}.yaml"), *overrides])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"].startswith(f"{model_type} on cpu")
    assert summary["windows"] == 1 and summary["keyframes_in_map"] + summary["views_rejected"] == len(files)
    assert (out / "map.ply").stat().st_size > 0


def test_every_implemented_model_has_a_tiny_fixture() -> None:
    assert {path.parent.name for path in FIXTURES.glob("*_tiny/model.yaml")} >= {f"{t}_tiny" for t in MODEL_TYPES}
