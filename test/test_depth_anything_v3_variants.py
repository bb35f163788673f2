"""Depth Anything 3's metric variants against the reference: a tiny DA3NESTED (an any-view
branch with SwiGLU blocks, as GIANT's, and a monocular METRIC/MONO branch with its DPT and sky
head) assembled from the reference's own modules with seeded random weights, its `inference`
run in true float32 on real images with every pixel in its percentiles
(tools/make_da3_fixtures.py reference tiny_nested).  The monocular branch alone is METRIC-LARGE's
and MONO-LARGE's architecture (only config.json's model_name tells them apart)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from scene_from_views_ros import scene_from_views_factory
from scene_from_views_ros.cli.map import main as cli_main
from scene_from_views_ros.core.errors import CheckpointMismatchError, InvalidOptionError
from scene_from_views_ros.io.messages import pointcloud2_to_arrays
from scene_from_views_ros.mapping.chaining import ChainConfig
from scene_from_views_ros.mapping.mapper import MapperConfig, SlidingWindowMapper
from scene_from_views_ros.mapping.synthetic import make_sequence
from scene_from_views_ros.mapping.windows import WindowConfig
from scene_from_views_ros.models.depth_anything_v3 import RELEASES, SceneFromViewsDepthAnythingV3
from scene_from_views_ros.models.networks.depth_anything_v3 import UNUSED_HEADS, da3_network, quantile, strip_model_prefix

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURE = REPO_ROOT / "test" / "fixtures" / "depth_anything_v3_nested_tiny"
RECORD = json.loads((FIXTURE / "cases.json").read_text())
STRIDE = RECORD["stride"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def real_images() -> list[np.ndarray]:
    from scene_from_views_ros.core.images import load_images

    return load_images([REPO_ROOT.parent / "shared" / "data" / name for name in RECORD["images"]], rgb=True)


def nested(**options: object) -> SceneFromViewsDepthAnythingV3:
    model = scene_from_views_factory("depth_anything_v3", device="cpu", checkpoint=str(FIXTURE / "model.safetensors"),
                                     config=str(FIXTURE / "architecture.json"), process_res=RECORD["process_res"], **options)
    assert isinstance(model, SceneFromViewsDepthAnythingV3)
    return model


def monocular(tmp_path: Path, model_name: str, folder: str = "tiny") -> SceneFromViewsDepthAnythingV3:
    """The fixture's metric branch as a checkpoint of its own (hub layout, `model.` keys)."""
    out = tmp_path / folder
    out.mkdir(parents=True, exist_ok=True)
    prefix = "model.da3_metric."
    state = {f"model.{key[len(prefix):]}": value for key, value in load_file(FIXTURE / "model.safetensors").items() if key.startswith(prefix)}
    save_file(state, out / "model.safetensors")
    (out / "config.json").write_text(json.dumps({"model_name": model_name, "config": {}}))
    (out / "architecture.json").write_text(json.dumps(RECORD["config"]["metric"]))
    model = scene_from_views_factory("depth_anything_v3", device="cpu", checkpoint=str(out), config=str(out / "architecture.json"),
                                     process_res=RECORD["process_res"])
    assert isinstance(model, SceneFromViewsDepthAnythingV3)
    return model


@pytest.mark.parametrize("case", ["nocam", "cams"])
def test_nested_outputs_equal_the_reference(case: str) -> None:
    expected = np.load(FIXTURE / "expected.npz")
    network = nested().network
    branch: dict[str, torch.Tensor] = {}
    network.da3_metric.register_forward_hook(lambda module, args, output: branch.update(output))
    given = {}
    if case == "cams":
        given = {"extrinsics": torch.from_numpy(expected["cams/given_extrinsics"]), "intrinsics": torch.from_numpy(expected["cams/given_intrinsics"])}
    with torch.inference_mode():
        ours = network(torch.from_numpy(expected["input"]), "saddle_balanced", **given)
    ours.update({f"metric_{key}": value for key, value in branch.items()})
    for key in ("depth", "depth_conf", "extrinsics", "intrinsics", "metric_depth", "metric_sky"):
        value = ours[key].numpy()
        if value.ndim == 3 and value.shape[-1] > 4:
            value = value[:, ::STRIDE, ::STRIDE]
        reference = expected[f"{case}/{key}"]
        assert value.shape == reference.shape, key
        assert np.abs(value - reference).max() / np.abs(reference).max() < 1e-5, (case, key)  # measured: 9e-7 at most
    assert float(ours["scale_factor"]) == pytest.approx(RECORD["cases"][case]["scale_factor"], rel=1e-5)
    sky = expected[f"{case}/metric_sky"] >= 0.3
    assert 0.1 < sky.mean() < 0.9  # both kinds of pixel: the sky fill and the alignment masks are exercised
    depth = expected[f"{case}/depth"]
    assert np.allclose(depth[sky], depth[sky].flat[0]) and (depth[sky].flat[0] >= depth[~sky]).mean() > 0.98


def test_nested_maps_in_metres_with_sky_masks() -> None:
    expected = np.load(FIXTURE / "expected.npz")
    model = nested()
    assert model.is_metric and not model.monocular and model.variant == "DA3NESTED-GIANT-LARGE"
    result = model.reconstruct(real_images(), rgb=True)
    assert result.extras["scale_factor"] == pytest.approx(RECORD["cases"]["nocam"]["scale_factor"], rel=1e-5)
    np.testing.assert_allclose(np.stack(result.depth_predictions)[:, ::STRIDE, ::STRIDE], expected["nocam/depth"], rtol=1e-5)
    # poses in view 0's frame, translations in metres as the reference's scaled extrinsics
    world_to_camera = np.tile(np.eye(4), (3, 1, 1))
    world_to_camera[:, :3, :] = expected["nocam/extrinsics"]
    for view in (1, 2):
        np.testing.assert_allclose(result.camera_poses[view], world_to_camera[0] @ np.linalg.inv(world_to_camera[view]), rtol=1e-4, atol=1e-6)
    sky = np.stack(result.extras["sky_masks"])
    np.testing.assert_array_equal(sky[:, ::STRIDE, ::STRIDE], expected["nocam/metric_sky"] >= 0.3)
    # drop_sky (default) leaves the sky fillers out; without it the confidence threshold alone decides
    assert not np.stack(result.masks)[sky].any()
    kept = model.reconstruct(real_images(), rgb=True, drop_sky=False)
    assert np.stack(kept.masks)[sky].any() and len(kept.global_point_cloud) > len(result.global_point_cloud)
    # known cameras: the reference's answer in the given frame and units
    poses = np.linalg.inv(expected["cams/caller_extrinsics"].astype(np.float64))
    given = model.reconstruct(real_images(), rgb=True, known_intrinsics=expected["cams/caller_intrinsics"].astype(np.float64), known_poses=poses)
    np.testing.assert_allclose(np.stack(given.camera_poses), poses)
    np.testing.assert_allclose(np.stack(given.depth_predictions)[:, ::STRIDE, ::STRIDE], expected["cams/prediction_depth"], rtol=1e-4)


def test_nested_takes_its_metres_from_given_intrinsics() -> None:
    """The reference ignores intrinsics given without poses; NESTED's metric scale is depth x
    focal / 300, so a known focal twice the predicted one doubles the metres."""
    model = nested()
    images = real_images()
    predicted = model.reconstruct(images, rgb=True)
    known = np.stack(predicted.extras["intrinsics_original"])
    known[:, 0, 0] *= 2.0
    known[:, 1, 1] *= 2.0
    given = model.reconstruct(images, rgb=True, known_intrinsics=known)
    assert given.extras["scale_factor"] == pytest.approx(2.0 * predicted.extras["scale_factor"], rel=1e-3)
    ground = ~np.stack(predicted.extras["sky_masks"])
    np.testing.assert_allclose(np.stack(given.depth_predictions)[ground], 2.0 * np.stack(predicted.depth_predictions)[ground], rtol=1e-3)
    np.testing.assert_allclose(given.camera_poses[1][:3, 3], 2.0 * predicted.camera_poses[1][:3, 3], rtol=1e-3)
    with pytest.raises(InvalidOptionError, match=r"known_intrinsics has shape \(2, 3, 3\) for 3 images: give one 3x3 matrix per image"):
        model.reconstruct(images, rgb=True, known_intrinsics=known[:2])


def test_the_mapper_chains_metric_windows_with_se3() -> None:
    sequence = make_sequence(10, 96, 72)
    placed = []
    # random weights give no consistent geometry: every fit is accepted, what matters is its kind
    config = MapperConfig(window=WindowConfig(size=4, overlap=2), chain=ChainConfig(min_inlier_ratio=0.0))
    mapper = SlidingWindowMapper(nested(), config, on_window=placed.append)
    assert mapper.metric and not config.chain.metric  # the checkpoint, not the model class, makes it metric
    for index in range(len(sequence)):
        mapper.add_frame(sequence.frame(index))
    mapper.flush()
    fitted = [window for window in placed if window.fit is not None]
    assert len(fitted) >= 2
    for window in fitted:
        assert np.cbrt(np.linalg.det(window.transform[:3, :3])) == pytest.approx(1.0, abs=1e-9)  # SE(3): no scale


@pytest.mark.parametrize("model_name", ["da3metric-large", "da3mono-large"])
def test_the_monocular_variants_place_their_depth_with_the_given_cameras(tmp_path: Path, model_name: str) -> None:
    expected = np.load(FIXTURE / "expected.npz")
    model = monocular(tmp_path, model_name)
    assert model.monocular and model.is_metric == (model_name == "da3metric-large")
    images = real_images()
    intrinsics = expected["cams/caller_intrinsics"].astype(np.float64)
    poses = np.linalg.inv(expected["cams/caller_extrinsics"].astype(np.float64))
    with pytest.raises(InvalidOptionError, match="predicts depth but no camera: give known_intrinsics"):
        model.reconstruct(images[:1], rgb=True)
    with pytest.raises(InvalidOptionError, match="cannot map windows of 4 views without known poses.*DA3NESTED-GIANT-LARGE"):
        model.check_window(4)
    model.check_window(1)
    raw_depth = expected["nocam/metric_depth"]  # the reference's branch output on the three views at once
    if model_name == "da3mono-large":
        with pytest.raises(InvalidOptionError, match="share no scale"):
            model.reconstruct(images, rgb=True, known_intrinsics=intrinsics, known_poses=poses)
        with torch.inference_mode():
            alone = model.network(torch.from_numpy(expected["input"][:1]))["depth"][0, ::STRIDE, ::STRIDE].numpy()
        ground = expected["nocam/metric_sky"][0] < 0.3  # alone, its sky fill comes from its own pixels
        np.testing.assert_allclose(alone[ground], raw_depth[0][ground], rtol=1e-5)
        single = model.reconstruct(images[:1], rgb=True, known_intrinsics=intrinsics[:1])
        processed = model.preprocess_images(images[:1])
        with torch.inference_mode():
            relative = model.network(torch.cat(processed.tensors))["depth"][0].numpy()
        np.testing.assert_allclose(single.depth_predictions[0], relative)  # relative depth: not scaled
        np.testing.assert_allclose(single.camera_poses[0], np.eye(4))
        return
    result = model.reconstruct(images, rgb=True, known_intrinsics=intrinsics, known_poses=poses)
    processed_k = np.stack(result.intrinsics)
    focal = processed_k[:, [0, 1], [0, 1]].mean(axis=1)
    metres = raw_depth * (focal / 300.0)[:, None, None]
    np.testing.assert_allclose(np.stack(result.depth_predictions)[:, ::STRIDE, ::STRIDE], metres, rtol=1e-5)
    np.testing.assert_allclose(np.stack(result.camera_poses), poses)
    # points: the metric depth placed by the given pose
    view, row, col = 1, 10, 20
    ray = np.linalg.inv(processed_k[view]) @ np.array([col, row, 1.0])
    point = poses[view] @ np.append(ray * result.depth_predictions[view][row, col], 1.0)
    np.testing.assert_allclose(result.point_clouds[view][row, col], point[:3], rtol=1e-4, atol=1e-5)
    with pytest.raises(InvalidOptionError, match="3 views need known_poses"):
        model.reconstruct(images, rgb=True, known_intrinsics=intrinsics)


def test_variant_names_and_model_names_are_checked(tmp_path: Path) -> None:
    with pytest.raises(InvalidOptionError, match="not a Depth Anything 3 release; the variants are .*depth-anything/DA3METRIC-LARGE"):
        scene_from_views_factory("depth_anything_v3", checkpoint="depth-anything/DA3-HUGE")
    assert set(RELEASES) >= {"DA3-SMALL", "DA3-BASE", "DA3-LARGE", "DA3-GIANT", "DA3METRIC-LARGE", "DA3MONO-LARGE",
                             "DA3NESTED-GIANT-LARGE", "DA3-LARGE-1.1", "DA3-GIANT-1.1", "DA3NESTED-GIANT-LARGE-1.1"}
    # a folder named as the metric release whose config.json names another variant
    with pytest.raises(CheckpointMismatchError, match="named DA3METRIC-LARGE but its config.json says model_name 'da3mono-large'"):
        monocular(tmp_path, "da3mono-large", folder="DA3METRIC-LARGE")
    assert monocular(tmp_path, "da3metric-large", folder="DA3METRIC-LARGE").is_metric
    other = tmp_path / "other"
    shutil.copytree(FIXTURE, other)
    (other / "config.json").write_text(json.dumps({"model_name": "da3-huge"}))
    with pytest.raises(CheckpointMismatchError, match="model_name 'da3-huge', not a Depth Anything 3 variant"):
        scene_from_views_factory("depth_anything_v3", checkpoint=str(other))


def test_every_variant_builds_with_the_released_keys() -> None:
    """The full architectures on the meta device: parameter counts of the releases (reference
    notes) and the key names of their files (prefix `model.`, unused heads dropped)."""
    counts = {}
    for name in ("da3-small", "da3-base", "da3-large", "da3metric-large", "da3nested-giant-large"):
        with torch.device("meta"):
            network = da3_network(name)
        counts[name] = sum(parameter.numel() for parameter in network.parameters())
        keys = network.state_dict().keys()
        if name == "da3metric-large":
            assert "head.norm.weight" not in keys and "head.scratch.sky_output_conv2.2.weight" in keys
            assert "backbone.pretrained.camera_token" not in keys and not any("q_norm" in key for key in keys)
        if name == "da3nested-giant-large":
            assert "da3.backbone.pretrained.blocks.39.mlp.w12.weight" in keys and "da3_metric.backbone.pretrained.pos_embed" in keys
    # the reference's totals less the heads not built (ray branch; GIANT's Gaussian head) measured on its files
    assert counts["da3metric-large"] == 334_171_394
    assert counts["da3-small"] < 34_299_463 and counts["da3nested-giant-large"] < 1_689_845_519
    assert all(not key.startswith(UNUSED_HEADS) for key in ("model.head.norm.weight", "model.da3.head.projects.0.weight"))
    assert strip_model_prefix("model.da3_metric.head.norm.weight") == "da3_metric.head.norm.weight"


def test_exact_quantile_matches_torch() -> None:
    values = torch.randn(1001, generator=torch.Generator().manual_seed(0))
    for q in (0.0, 0.5, 0.99, 1.0):
        assert float(quantile(values, q)) == pytest.approx(float(torch.quantile(values, q)), abs=1e-6)


def nested_parameters() -> dict[str, object]:
    return {"model_type": "depth_anything_v3", "model.checkpoint": str(FIXTURE / "model.safetensors"),
            "model.config": str(FIXTURE / "architecture.json"), "model.process_res": RECORD["process_res"]}


def test_the_node_maps_in_metres_with_nested(tmp_path: Path) -> None:
    from scene_from_views_interfaces.srv import SaveMap
    from test_ros_node import NODE, OVERLAP, WINDOW, model_params_file, produce_windows, running_node, wait_for

    params_file = model_params_file(tmp_path, nested_parameters())
    with running_node(["--ros-args", "--params-file", str(params_file), "-p", "device:=cpu"]) as (node, probe):
        assert node.backend.model.is_metric and node.mapper.metric
        produce_windows(probe, 3, timeout=90.0)
        wait_for(lambda: probe.count(f"{NODE}/map_cloud") > 0, 10, "map cloud")
        points, _ = pointcloud2_to_arrays(probe.messages(f"{NODE}/window_cloud")[-1])
        assert len(points) > 0 and np.isfinite(points).all()
        assert len(node.mapper.trajectory()) >= WINDOW + 2 * (WINDOW - OVERLAP)
        assert probe.call(probe.save_map, SaveMap.Request()).success
    keyframes = json.loads((tmp_path / "saved" / "keyframes.json").read_text())
    assert keyframes["units"] == "metres"


def test_the_offline_tool_maps_in_metres_and_refuses_monocular_windows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    args = ["--sample", "--sample-frames", "8", "--sample-size", "96x72", "--out", str(out), "--device", "cpu", "-q",
            "-p", "keyframe.min_change:=0.0", "-p", "window.size:=4", "-p", "window.overlap:=2", "-p", "chain.min_inlier_ratio:=0.0"]
    for name, value in nested_parameters().items():
        args += ["-p", f"{name}:={value}"]
    assert cli_main(args) == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["units"] == "m" and summary["windows"] >= 3
    metric = monocular(tmp_path, "da3metric-large")
    args = ["--sample", "--sample-frames", "4", "--out", str(tmp_path / "mono"), "--device", "cpu", "-p", "model_type:=depth_anything_v3",
            "-p", f"model.checkpoint:={metric.checkpoint_path}", "-p", f"model.config:={metric.checkpoint_path.parent / 'architecture.json'}"]
    assert cli_main(args) != 0
    assert "predicts depth but no camera, so it cannot map windows of 8 views" in capsys.readouterr().err


def test_a_checkpoint_change_to_metres_saves_the_map_and_starts_a_new_one(tmp_path: Path) -> None:
    """A DA3 checkpoint in the model's own units changed at runtime to NESTED (metres): the map
    so far cannot be extended in other units, so it is saved and a new map starts."""
    from rcl_interfaces.srv import SetParametersAtomically
    from rclpy.parameter import Parameter
    from test_ros_node import NODE, model_params_file, produce_windows, running_node, wait_for

    anyview = REPO_ROOT / "test" / "fixtures" / "depth_anything_v3_tiny"
    params_file = model_params_file(tmp_path, {
        "model_type": "depth_anything_v3", "model.checkpoint": str(anyview / "model.safetensors"),
        "model.config": str(anyview / "architecture.json"), "model.process_res": 112})
    with running_node(["--ros-args", "--params-file", str(params_file), "-p", "device:=cpu"]) as (node, probe):
        assert not node.mapper.metric
        produce_windows(probe, 2, timeout=90.0)
        mapped = len(node.mapper.trajectory())
        client = probe.node.create_client(SetParametersAtomically, f"{NODE}/set_parameters_atomically")
        change = [Parameter("model.checkpoint", value=str(FIXTURE / "model.safetensors")),
                  Parameter("model.config", value=str(FIXTURE / "architecture.json"))]
        result = probe.call(client, SetParametersAtomically.Request(parameters=[p.to_parameter_msg() for p in change])).result
        assert result.successful, result.reason
        clouds = probe.count(f"{NODE}/map_cloud")
        wait_for(lambda: node.mapper.metric, 60, "the NESTED model swapped in")
        saved = list((tmp_path / "saved").glob("before_units_change_*/keyframes.json"))
        assert len(saved) == 1 and len(json.loads(saved[0].read_text())["keyframes"]) == mapped
        assert json.loads(saved[0].read_text())["units"] != "metres"
        wait_for(lambda: any(cloud.width == 0 for cloud in probe.messages(f"{NODE}/map_cloud")[clouds:]), 10, "an empty map")
        produce_windows(probe, 1, timeout=90.0)
        assert 0 < len(node.mapper.trajectory()) < mapped + 4
