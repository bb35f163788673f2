"""Fast3R's network against the reference: a tiny network with the release's code paths and
seeded random weights, saved by the reference in the hub layout with its outputs on real images
(tools/make_fast3r_fixtures.py); our network loads it strictly and must agree to 1e-4."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch

from scene_from_views_ros.core.checkpoint import build_network
from scene_from_views_ros.core.errors import CheckpointMismatchError
from scene_from_views_ros.core.images import load_images
from scene_from_views_ros.models.dust3r import preprocess_pair_images
from scene_from_views_ros.models.layers.dpt_adapter import canonical_dpt_key
from scene_from_views_ros.models.networks.croco_stereo import ConfigError
from scene_from_views_ros.models.networks.fast3r import Fast3R, Fast3RConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURE = REPO_ROOT / "test" / "fixtures" / "fast3r_tiny"
DATA = REPO_ROOT.parent / "shared" / "data"
OUTPUTS = ("pts3d_in_other_view", "conf", "pts3d_local", "conf_local")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def network() -> Fast3R:
    cfg = Fast3RConfig.from_hub_config(json.loads((FIXTURE / "config.json").read_text()))
    return build_network(lambda: Fast3R(cfg), FIXTURE / "model.safetensors", "cpu", rename=canonical_dpt_key)


@pytest.fixture(scope="module")
def views() -> tuple[list[torch.Tensor], dict]:
    inputs = json.loads((FIXTURE / "inputs.json").read_text())
    images = load_images([DATA / name for name in inputs["images"]], rgb=True)
    return preprocess_pair_images(images, inputs["size"]).tensors, inputs


def test_outputs_equal_the_reference(network: Fast3R, views) -> None:
    tensors, inputs = views
    # the reference's own loader gave byte-identical inputs (one view is portrait)
    assert [hashlib.sha256(t.numpy().tobytes()).hexdigest() for t in tensors] == inputs["input_sha256"]
    assert any(t.shape[-2] > t.shape[-1] for t in tensors) and any(t.shape[-2] < t.shape[-1] for t in tensors)
    expected = np.load(FIXTURE / "expected.npz")
    with torch.no_grad():
        ours = network(tensors, torch.from_numpy(expected["image_ids"]))
    for key in OUTPUTS:
        assert len(ours[key]) == len(tensors)
        for index, value in enumerate(ours[key]):
            reference = expected[f"{key}_{index}"]
            assert value.shape[1:] == reference.shape
            error = np.abs(value[0].numpy() - reference).max() / np.abs(reference).max()
            assert error < 1e-4, (key, index, error)  # measured: 1.0e-6


def test_image_ids_change_the_outputs(network: Fast3R, views) -> None:
    """The ids are the only thing telling views apart in the decoder: other ids, other points."""
    tensors, _ = views
    expected = np.load(FIXTURE / "expected.npz")
    with torch.no_grad():
        other = network(tensors, torch.tensor([0, 1, 2, 3]))
    assert not np.allclose(other["pts3d_in_other_view"][1][0].numpy(), expected["pts3d_in_other_view_1"], rtol=1e-3)
    with pytest.raises(ValueError, match="one id per view"):
        network(tensors, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        network(tensors, torch.tensor([0, 1, 2, 1000]))


def test_hub_config_is_read_and_unsupported_settings_are_refused() -> None:
    text = (FIXTURE / "config.json").read_text()
    assert "Infinity" in text  # written as the hub mixin writes it
    values = json.loads(text)
    cfg = Fast3RConfig.from_hub_config(values)
    assert (cfg.enc_embed_dim, cfg.dec_depth, cfg.with_local_head, cfg.dpt_layer_dims) == (16, 10, True, (8, 8, 16, 16))
    released = Fast3RConfig.from_hub_config({k: {n: v for n, v in group.items() if not n.startswith("dpt_")} for k, group in values.items()} | {
        "encoder_args": {"embed_dim": 1024, "depth": 24, "num_heads": 16}, "decoder_args": {"embed_dim": 1024, "depth": 24, "num_heads": 16}})
    assert released == Fast3RConfig()
    for group, name, value in (("decoder_args", "attn_bias_for_inference_enabled", True), ("head_args", "landscape_only", True),
                               ("encoder_args", "patch_embed_cls", "ManyAR_PatchEmbed"), ("head_args", "output_mode", "pts3d+desc24")):
        changed = json.loads(text)
        changed[group][name] = value
        with pytest.raises(ConfigError, match=f"{group}.{name}"):
            Fast3RConfig.from_hub_config(changed)
    with pytest.raises(ConfigError, match="not a Fast3R config.json"):
        Fast3RConfig.from_hub_config({"enc_embed_dim": 1024})


def test_a_checkpoint_of_another_network_is_refused(tmp_path: Path) -> None:
    cfg = Fast3RConfig.from_hub_config(json.loads((FIXTURE / "config.json").read_text()))
    dust3r = REPO_ROOT / "test" / "fixtures" / "dust3r_tiny" / "weights.safetensors"
    with pytest.raises(CheckpointMismatchError, match="missing"):
        build_network(lambda: Fast3R(cfg), dust3r, "cpu", rename=canonical_dpt_key)


# ----------------------------------------------------------------------------- the model
@pytest.fixture(scope="module")
def model():
    from scene_from_views_ros.core.factory import scene_from_views_factory

    return scene_from_views_factory("fast3r", device="cpu", checkpoint=str(FIXTURE / "model.safetensors"))


def test_infer_returns_the_reference_outputs_in_view_order(model, views) -> None:
    _tensors, inputs = views
    images = load_images([DATA / name for name in inputs["images"]], rgb=True)
    expected = np.load(FIXTURE / "expected.npz")
    processed = preprocess_pair_images(images, inputs["size"])  # the fixture's 64-pixel inputs
    raw = model.infer(processed, image_ids=expected["image_ids"])
    assert isinstance(raw, Mapping) and set(raw) == set(OUTPUTS)  # the reference's names
    for key in OUTPUTS:
        for index in range(len(images)):
            np.testing.assert_allclose(raw.view(key, index), expected[f"{key}_{index}"], rtol=1e-4, atol=1e-4 * np.abs(expected[f"{key}_{index}"]).max())
    with pytest.raises(Exception, match="distinct"):
        model.infer(processed, image_ids=[0, 5, 5, 7])


def test_image_id_seed_makes_outputs_reproducible(model) -> None:
    from scene_from_views_ros.models.fast3r import draw_image_ids

    ids = draw_image_ids(6, 0)
    assert ids[0] == 0 and len(set(ids.tolist())) == 6 and ids[1:].min() >= 1 and ids.max() <= 999
    assert np.array_equal(ids, draw_image_ids(6, 0)) and not np.array_equal(ids, draw_image_ids(6, 1))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    processed = model.preprocess_images(images)
    first, again = model.infer(processed), model.infer(processed)
    other = model.infer(processed, image_id_seed=7)
    np.testing.assert_array_equal(first["pts3d_in_other_view"], again["pts3d_in_other_view"])
    assert not np.allclose(first["pts3d_in_other_view"], other["pts3d_in_other_view"])
    assert list(other.image_ids) == list(draw_image_ids(3, 7))


def test_image_size_is_not_a_per_call_option(model) -> None:
    with pytest.raises(Exception, match="image_size is a construction option"):
        model.preprocess_images([np.zeros((48, 64, 3), np.uint8)], image_size=224)


def _synthetic_window(outliers: float = 0.0, seed: int = 0, biased: bool = False):
    """Fast3R-like raw outputs of a synthetic room with the truth: global points = the true points
    in view 0's frame, local points = each view's own points at a scale of its own, 1% noise;
    `outliers` of the global pixels thrown off (with low confidence): at random, or `biased`
    (pushed away from view 0, which nearly keeps their pixels in the other views on these small
    images, so that only the confidence tells them apart)."""
    import sys

    from scene_from_views_ros.models.dust3r import PairViews
    from scene_from_views_ros.models.fast3r import Fast3rOutputs

    sys.path.insert(0, str(REPO_ROOT / "bench"))
    import synthetic_pairs

    rng = np.random.default_rng(seed)
    truth = synthetic_pairs.render_views(4, 48, 64, 56.0, rng)
    glob, local, conf = [], [], []
    for v in range(4):
        pose = truth.camera_poses[v]
        noisy = truth.points[v] * (1.0 + 0.01 * rng.standard_normal(truth.depths[v].shape))[..., None]
        world = noisy @ pose[:3, :3].T + pose[:3, 3]
        c = 1.0 + np.exp(rng.normal(1.5, 0.3, truth.depths[v].shape))
        bad = rng.random(truth.depths[v].shape) < outliers
        if biased:
            world[bad] *= rng.uniform(1.3, 2.0, (int(bad.sum()), 1))
        else:
            world[bad] += rng.normal(0.0, 2.0, (int(bad.sum()), 3))
        c[bad] = 1.0 + np.exp(rng.normal(-1.0, 0.3, int(bad.sum())))
        glob.append(world.astype(np.float32))
        local.append((rng.uniform(0.5, 2.0) * noisy).astype(np.float32))
        conf.append(c.astype(np.float32))
    outputs = {"pts3d_in_other_view": np.stack(glob), "conf": np.stack(conf), "pts3d_local": np.stack(local), "conf_local": np.stack(conf)}
    processed = PairViews([], truth.images, np.ones((4, 2)), np.zeros((4, 2)))
    return truth, Fast3rOutputs(outputs, np.arange(4)), processed


def _pose_errors(truth, result) -> tuple[float, float]:
    """Largest camera position error (room units) and rotation error (degrees)."""
    position = max(np.linalg.norm(p[:3, 3] - t[:3, 3]) for p, t in zip(result.camera_poses, truth.camera_poses, strict=True))
    angles = [np.degrees(np.arccos(np.clip((np.trace(p[:3, :3].T @ t[:3, :3]) - 1) / 2, -1, 1)))
              for p, t in zip(result.camera_poses, truth.camera_poses, strict=True)]
    return float(position), float(max(angles))


def test_postprocessing_recovers_the_synthetic_cameras(model) -> None:
    truth, raw, processed = _synthetic_window(outliers=0.05)
    result = model.postprocess_results(raw, truth.images, processed)
    position, rotation = _pose_errors(truth, result)
    assert position < 0.03 and rotation < 0.5  # measured: 0.008, 0.09 deg
    focals = np.array([k[0, 0] for k in result.intrinsics])
    assert np.ptp(focals) == 0.0 and abs(focals[0] / 56.0 - 1) < 0.02  # one shared focal, from view 0
    for depth, true_depth in zip(result.depth_predictions, truth.depths, strict=True):
        assert np.median(np.abs(depth / true_depth - 1)) < 0.02  # local points brought to the global scale


def test_postprocessing_options_change_the_result(model) -> None:
    truth, raw, processed = _synthetic_window(outliers=0.2, seed=1)
    default = model.postprocess_results(raw, truth.images, processed)
    individual = model.postprocess_results(raw, truth.images, processed, focal_length_estimation_method="individual")
    assert np.ptp([k[0, 0] for k in individual.intrinsics]) > 0  # a focal per view, from its PnP sweep
    from_local = model.postprocess_results(raw, truth.images, processed, focal_length_estimation_method="first_view_from_local_head")
    assert from_local.intrinsics[0][0, 0] != default.intrinsics[0][0, 0]
    # the alignment percentile: with 30% biased outliers, fitting on every pixel (0) pulls the local points off
    truth_biased, biased, _ = _synthetic_window(outliers=0.3, seed=1, biased=True)
    default_biased = model.postprocess_results(biased, truth_biased.images, processed)
    everything = model.postprocess_results(biased, truth_biased.images, processed, min_conf_thr_percentile=0.0)
    off = [np.median(np.abs(d / t - 1)) for d, t in zip(everything.depth_predictions, truth_biased.depths, strict=True)]
    kept = [np.median(np.abs(d / t - 1)) for d, t in zip(default_biased.depth_predictions, truth_biased.depths, strict=True)]
    assert max(kept) < 0.02 and max(off) > 3 * max(kept), (kept, off)
    # RANSAC iterations: one is not enough against 20% outliers (measured: 0.02 and 3.8 room units)
    position_100 = _pose_errors(truth, default)[0]
    position_1 = _pose_errors(truth, model.postprocess_results(raw, truth.images, processed, niter_PnP=1))[0]
    assert position_100 < 0.05 and position_1 > 2 * position_100
    # the cloud threshold: a higher percentile keeps fewer pixels
    assert model.postprocess_results(raw, truth.images, processed, conf_thres=50.0).masks[1].sum() < default.masks[1].sum()


def test_the_encoder_chunk_bounds_memory_without_changing_outputs(network: Fast3R, views) -> None:
    tensors, _ = views
    same_shape = [t for t in tensors if t.shape == tensors[0].shape]
    assert len(same_shape) >= 2
    with torch.no_grad():
        whole, chunked = network.encode(same_shape * 3, chunk=8), network.encode(same_shape * 3, chunk=2)
    for a, b in zip(whole, chunked, strict=True):
        torch.testing.assert_close(a.tokens, b.tokens, rtol=1e-5, atol=1e-5)


def test_an_image_size_the_checkpoint_was_not_trained_at_is_refused_when_built() -> None:
    from scene_from_views_ros.core.errors import InvalidOptionError
    from scene_from_views_ros.core.factory import model_class, scene_from_views_factory

    assert "image_size" in model_class("fast3r").construction_kwargs()  # a change rebuilds (and re-checks) the model
    with pytest.raises(InvalidOptionError, match="trained at 512.*image_size 512 or use a 224 checkpoint"):
        scene_from_views_factory("fast3r", device="cpu", checkpoint=str(FIXTURE / "model.safetensors"), image_size=224)
