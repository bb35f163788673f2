"""Depth Anything 3's any-view network against the reference: a tiny network assembled from the
reference's own modules with seeded random weights, saved by its own save_pretrained (so the
ray branch's tied LayerNorm is stored once, as in the releases), with the outputs of its
`inference` pipeline called in true float32 on real images (tools/make_da3_fixtures.py): with
the reference view chosen by saddle_balanced, by "first", and with given cameras."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from scene_from_views_ros.core.checkpoint import build_network, safetensors_index
from scene_from_views_ros.geometry.camera import matrix_to_quaternion, quaternion_to_matrix
from scene_from_views_ros.models.networks.depth_anything_v3 import (
    REFERENCE_STRATEGIES,
    UNUSED_HEADS,
    Da3Config,
    DepthAnything3Net,
    decode_cameras,
    encode_cameras,
    strip_model_prefix,
)

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "depth_anything_v3_tiny"
RECORD = json.loads((FIXTURE / "cases.json").read_text())

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def network() -> DepthAnything3Net:
    cfg = Da3Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in RECORD["config"].items()})
    return build_network(lambda: DepthAnything3Net(cfg), FIXTURE / "model.safetensors", "cpu", drop_prefixes=UNUSED_HEADS,
                         rename=strip_model_prefix)


@pytest.mark.parametrize("case", ["nocam", "first", "cams"])
def test_outputs_equal_the_reference(network: DepthAnything3Net, case: str) -> None:
    expected = np.load(FIXTURE / "expected.npz")
    given = {}
    if case == "cams":
        given = {"extrinsics": torch.from_numpy(expected["cams/given_extrinsics"]), "intrinsics": torch.from_numpy(expected["cams/given_intrinsics"])}
    with torch.inference_mode():
        ours = network(torch.from_numpy(expected["input"]), RECORD["cases"][case]["strategy"], **given)
    stride = RECORD["stride"]
    for key in ("depth", "depth_conf", "extrinsics", "intrinsics"):
        value = ours[key].numpy()
        if key.startswith("depth"):
            value = value[:, ::stride, ::stride]
        reference = expected[f"{case}/{key}"]
        assert value.shape == reference.shape, key
        error = np.abs(value - reference).max() / np.abs(reference).max()
        assert error < 1e-5, (case, key, error)  # measured: 5e-7 (depth), 0 (cameras)


def test_the_reference_view_strategies(network: DepthAnything3Net) -> None:
    images = torch.from_numpy(np.load(FIXTURE / "expected.npz")["input"])
    with torch.inference_mode():
        chosen = {strategy: int(network(images, strategy)["reference_view"]) for strategy in REFERENCE_STRATEGIES}
        two = int(network(images[:2], "middle")["reference_view"])
    assert chosen == {"saddle_balanced": 1, "saddle_sim_range": 2, "first": 0, "middle": 1}
    assert two == 0  # the reference chooses only among 3 views or more
    expected = np.load(FIXTURE / "expected.npz")
    assert np.abs(expected["nocam/depth"] - expected["first/depth"]).max() > 1e-3  # the choice changes the outputs
    with pytest.raises(ValueError, match="unknown reference view strategy 'best'"):
        network(images, "best")


def test_the_ray_branch_is_dropped_knowingly_and_its_tied_norm_is_stored_once() -> None:
    keys = set(safetensors_index(FIXTURE / "model.safetensors"))
    assert "model.head.scratch.output_conv2_aux.0.2.weight" in keys and "model.head.scratch.output_conv2_aux.3.2.weight" not in keys
    ray = {key for key in keys if key.startswith(UNUSED_HEADS)}  # the tiny network has no Gaussian head
    assert ray and all("_aux" in key for key in ray)


def test_camera_encoding_round_trip() -> None:
    generator = torch.Generator().manual_seed(0)
    quaternions = torch.randn(6, 4, generator=generator)
    quaternions = quaternions / quaternions.norm(dim=1, keepdim=True)
    quaternions = torch.where(quaternions[:, 3:] < 0, -quaternions, quaternions)
    torch.testing.assert_close(matrix_to_quaternion(quaternion_to_matrix(quaternions)), quaternions, rtol=1e-5, atol=1e-6)
    encoding = torch.cat([torch.randn(6, 3, generator=generator), quaternions, torch.full((6, 2), 1.1)], dim=1)
    extrinsics, intrinsics = decode_cameras(encoding, (70, 84))
    world_to_camera = torch.cat([extrinsics, torch.tensor([[[0.0, 0.0, 0.0, 1.0]]]).expand(6, 1, 4)], dim=1)
    torch.testing.assert_close(encode_cameras(world_to_camera, intrinsics, (70, 84)), encoding, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- the model
def tiny_model(**options):
    from scene_from_views_ros.core.factory import scene_from_views_factory

    return scene_from_views_factory("depth_anything_v3", device="cpu", checkpoint=str(FIXTURE / "model.safetensors"),
                                    config=str(FIXTURE / "architecture.json"), process_res=RECORD["process_res"], **options)


def real_images() -> list[np.ndarray]:
    from scene_from_views_ros.core.images import load_images

    return load_images([Path(__file__).resolve().parents[2] / "shared" / "data" / name for name in RECORD["images"]], rgb=True)


def test_preprocessing_is_the_references_byte_for_byte_and_infer_gives_its_outputs() -> None:
    model = tiny_model()
    processed = model.preprocess_images(real_images())
    batch = torch.cat(processed.tensors)[None]
    assert hashlib.sha256(batch.numpy().tobytes()).hexdigest() == RECORD["cases"]["nocam"]["input_sha256"], (
        f"the fixtures hold the reference's input under opencv-python-headless 4.12 (scripts/pinned-versions.txt); "
        f"cv2.resize gives other last bits in other releases, and this is {cv2.__version__}")
    # three sizes (two landscape, one portrait) centre-cropped to the smallest height and width
    assert batch.shape == (1, 3, 3, 70, 84) and len({image.shape for image in processed.rgb}) == 1
    raw = model.infer(processed)
    expected = np.load(FIXTURE / "expected.npz")
    assert raw.reference_view == 1 and set(raw) == {"depth", "depth_conf", "extrinsics", "intrinsics"}
    np.testing.assert_allclose(raw["depth"][:, ::2, ::2], expected["nocam/depth"], rtol=1e-5)
    result = model.postprocess_results(raw, processed.rgb, processed)
    # the reference's world is its reference view's camera; ours is view 0's
    world_to_camera = np.tile(np.eye(4), (3, 1, 1))
    world_to_camera[:, :3, :] = expected["nocam/extrinsics"]
    np.testing.assert_allclose(result.camera_poses[0], np.eye(4), atol=1e-12)
    for view in (1, 2):
        np.testing.assert_allclose(result.camera_poses[view], world_to_camera[0] @ np.linalg.inv(world_to_camera[view]), rtol=1e-4, atol=1e-5)


def test_conf_thres_and_ref_view_strategy_change_the_result() -> None:
    model = tiny_model()
    images = real_images()
    default = model.reconstruct(images, rgb=True)
    strict = model.reconstruct(images, rgb=True, conf_thres=80.0)
    assert strict.masks[0].sum() < default.masks[0].sum() and len(strict.global_point_cloud) < len(default.global_point_cloud)
    first = model.reconstruct(images, rgb=True, ref_view_strategy="first")
    assert (default.extras["reference_view"], first.extras["reference_view"]) == (1, 0)
    assert np.abs(first.depth_predictions[1] - default.depth_predictions[1]).max() > 1e-4
    smaller = model.reconstruct(images, rgb=True, process_res=56)
    assert smaller.depth_predictions[0].shape[1] < default.depth_predictions[0].shape[1]


def test_known_cameras_condition_the_network_and_give_the_references_answer() -> None:
    expected = np.load(FIXTURE / "expected.npz")
    model = tiny_model()
    poses = np.linalg.inv(expected["cams/caller_extrinsics"].astype(np.float64))
    intrinsics = expected["cams/caller_intrinsics"].astype(np.float64)
    result = model.reconstruct(real_images(), rgb=True, known_intrinsics=intrinsics, known_poses=poses)
    # in the given frame and units: the given poses, the reference's depth (rescaled by its Umeyama fit)
    np.testing.assert_allclose(np.stack(result.camera_poses), poses)
    np.testing.assert_allclose(np.stack(result.intrinsics), expected["cams/prediction_intrinsics"], rtol=1e-5)
    depth = np.stack(result.depth_predictions)[:, ::2, ::2]
    np.testing.assert_allclose(depth, expected["cams/prediction_depth"], rtol=1e-4)
    # the network saw what the reference's saw
    raw = model.infer(model.preprocess_images(real_images()), known_cameras=model_cameras(intrinsics, poses))
    np.testing.assert_allclose(raw["depth"][:, ::2, ::2], expected["cams/depth"], rtol=1e-5)
    # intrinsics alone (which the reference ignores) replace the predicted ones
    alone = model.reconstruct(real_images(), rgb=True, known_intrinsics=intrinsics)
    np.testing.assert_allclose(np.stack(alone.intrinsics), expected["cams/prediction_intrinsics"], rtol=1e-5)
    np.testing.assert_allclose(alone.camera_poses[0], np.eye(4), atol=1e-12)
    with pytest.raises(Exception, match="needs the intrinsics of known poses"):
        model.reconstruct(real_images(), rgb=True, known_poses=poses)


def model_cameras(intrinsics: np.ndarray, poses: np.ndarray):
    from scene_from_views_ros.core.cameras import KnownCameras

    return KnownCameras(intrinsics, poses)


def test_swiglu_is_dinov2_giants_feed_forward() -> None:
    from scene_from_views_ros.models.layers.mlp import SwiGLU

    torch.manual_seed(0)
    layer = SwiGLU(1536, 4 * 1536)
    assert layer.w12.weight.shape == (2 * 4096, 1536) and layer.w3.weight.shape == (1536, 4096)  # the released shapes
    x = torch.randn(2, 5, 1536)
    gate, value = (x @ layer.w12.weight.T + layer.w12.bias).chunk(2, dim=-1)
    expected = (gate * torch.sigmoid(gate) * value) @ layer.w3.weight.T + layer.w3.bias
    torch.testing.assert_close(layer(x), expected, rtol=1e-4, atol=1e-5)
