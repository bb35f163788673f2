"""DUSt3R and MASt3R: parity with the references (tiny fixtures), preprocessing, checkpoint
layouts, pair graphs in the wrapper, the fast path, the optimizer input, bad input.

The fixtures in fixtures/{dust3r,dust3r_linear,mast3r}_tiny and fixtures/dust3r_preprocess.json
were written by tools/make_dust3r_fixtures.py from the reference implementations (naver/mast3r
with its dust3r and croco submodules) on real images from ../shared/data.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from scene_from_views_ros import scene_from_views_factory
from scene_from_views_ros.core.errors import (
    CheckpointCorruptError,
    CheckpointMismatchError,
    InvalidImageError,
    InvalidOptionError,
)
from scene_from_views_ros.core.images import load_images
from scene_from_views_ros.models.dust3r import (
    SceneFromViewsDust3r,
    SceneFromViewsMast3r,
    preprocess_pair_images,
)
from scene_from_views_ros.models.networks.croco_stereo import CroCoStereo, CroCoStereoConfig
from scene_from_views_ros.optimizers import SceneOptimizerBase, SceneOptimizerInput, SceneOptimizerOutput

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from make_dust3r_fixtures import read_inputs

FIXTURES = Path(__file__).parent / "fixtures"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TOLERANCE = 1e-4  # relative to the largest magnitude of each output, fp32
CLASSES = {"dust3r_tiny": SceneFromViewsDust3r, "dust3r_linear_tiny": SceneFromViewsDust3r, "mast3r_tiny": SceneFromViewsMast3r}


def fixture_inputs(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name / "inputs.json").read_text())


def tiny(name: str, **options: Any) -> SceneFromViewsDust3r:
    folder = FIXTURES / name
    return CLASSES[name](checkpoint=folder / "weights.safetensors", config=folder / "config.json", device="cpu", **options)


@pytest.fixture(scope="module")
def dust3r() -> SceneFromViewsDust3r:
    return tiny("dust3r_tiny")


@pytest.fixture(scope="module")
def mast3r() -> SceneFromViewsMast3r:
    return tiny("mast3r_tiny")  # type: ignore[return-value]


def read(names: list[str]) -> list[np.ndarray]:
    """The fixtures' images, read as tools/make_dust3r_fixtures.py read them."""
    return read_inputs(tuple(names))


def sha256(tensors: list[torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor[0].contiguous().numpy().tobytes())
    return digest.hexdigest()


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours.astype(np.float64) - reference).max() / np.abs(reference).max())


def worst_errors(model: SceneFromViewsDust3r, name: str) -> dict[str, float]:
    """Run `model` on the fixture's images; worst relative error per output against the reference."""
    meta = fixture_inputs(name)
    processed = model.preprocess_images(read(meta["images"]), image_size=meta["image_size"])
    assert sha256(processed.tensors) == meta["sha256"], "preprocessing differs from the reference's"
    raw = model.infer(processed, scene_graph="complete")
    expected = np.load(FIXTURES / name / "reference_outputs.npz")
    reference_pairs = [tuple(p) for p in expected["pairs"].tolist()]
    assert sorted(raw.pairs) == sorted(reference_pairs) and len(raw.pairs) == len(reference_pairs)
    worst: dict[str, float] = {}
    for n, pair in enumerate(reference_pairs):
        k = raw.pairs.index(pair)
        for side, ours in (("view1", raw.view1[k]), ("view2", raw.view2[k])):
            for key in ours:
                reference = expected[f"{n}.{side}.{key}"]
                assert ours[key].shape == reference.shape, (pair, side, key)
                worst[f"{side}.{key}"] = max(worst.get(f"{side}.{key}", 0.0), relative_error(ours[key], reference))
    return worst


# ----------------------------------------------------------------------------- parity
@pytest.mark.usefixtures("shared_data")
@pytest.mark.parametrize("name", list(CLASSES))
def test_tiny_networks_match_the_reference(name: str) -> None:
    worst = worst_errors(tiny(name), name)
    expected_outputs = {"view1.pts3d", "view1.conf", "view2.pts3d_in_other_view", "view2.conf"}
    if name.startswith("mast3r"):
        expected_outputs |= {"view1.desc", "view1.desc_conf", "view2.desc", "view2.desc_conf"}
    assert set(worst) == expected_outputs
    assert max(worst.values()) < TOLERANCE, worst


@pytest.mark.usefixtures("shared_data")
def test_the_parity_check_can_fail(dust3r: SceneFromViewsDust3r) -> None:
    model = tiny("dust3r_tiny")
    with torch.no_grad():
        model.network.dec_blocks2[3].mlp.fc2.bias.add_(0.05)  # one decoder bias of the second view
    worst = worst_errors(model, "dust3r_tiny")
    assert worst["view2.conf"] > TOLERANCE and worst["view1.conf"] < TOLERANCE


@pytest.mark.usefixtures("shared_data")
@pytest.mark.parametrize("case", sorted(json.loads((FIXTURES / "dust3r_preprocess.json").read_text())))
def test_preprocessing_is_byte_identical_to_the_reference(case: str) -> None:
    spec = json.loads((FIXTURES / "dust3r_preprocess.json").read_text())[case]
    processed = preprocess_pair_images(read(spec["images"]), spec["image_size"], spec["square_ok"], 16)
    assert sha256(processed.tensors) == spec["sha256"]
    assert processed.true_shapes.tolist() == spec["true_shapes"] and processed.true_shapes.dtype == np.int32
    for tensor, rgb in zip(processed.tensors, processed.rgb, strict=True):
        assert tensor.shape == (1, 3, *rgb.shape[:2]) and tensor.min() >= -1.0 and tensor.max() <= 1.0


def test_square_and_short_side_modes_and_the_map_back_to_the_original() -> None:
    square = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    wide = np.random.default_rng(1).integers(0, 255, (200, 400, 3), dtype=np.uint8)
    views = preprocess_pair_images([square, wide], 512, square_ok=False)
    assert views.true_shapes.tolist() == [[384, 512], [256, 512]]  # square -> 4:3
    assert preprocess_pair_images([square], 512, square_ok=True).true_shapes.tolist() == [[512, 512]]
    assert preprocess_pair_images([wide], 224).true_shapes.tolist() == [[224, 224]]
    # x_processed = scale * x_original + offset: the original centre lands on the crop centre
    scale, offset = views.scales[1], views.offsets[1]
    centre = scale * np.array([200.0, 100.0]) + offset
    np.testing.assert_allclose(centre, [256, 128], atol=1.0)


def test_exif_orientation_is_applied_to_files(tmp_path: Path) -> None:
    pixels = np.random.default_rng(2).integers(0, 255, (40, 64, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(pixels).save(tmp_path / "rotated.png", exif=exif.tobytes())
    loaded = load_images([tmp_path / "rotated.png"])[0]
    assert loaded.shape == (64, 40, 3)
    np.testing.assert_array_equal(loaded, np.rot90(pixels, k=-1))


# ----------------------------------------------------------------------------- checkpoints
def official_pth(name: str, path: Path, constructor: str | None = None) -> Path:
    """The fixture's weights in the official .pth layout, with the DPT's aliased keys."""
    state = {k: v.float() for k, v in load_file(str(FIXTURES / name / "weights.safetensors")).items()}
    for key in [k for k in state if ".scratch.layer" in k and "_rn." in k]:
        number = int(key.split(".scratch.layer")[1][0])
        state[key.replace(f".scratch.layer{number}_rn.", f".scratch.layer_rn.{number - 1}.")] = state[key]
    torch.save({"model": state, "args": argparse.Namespace(model=constructor or fixture_inputs(name)["constructor"])}, path)
    return path


@pytest.mark.usefixtures("shared_data")
@pytest.mark.parametrize("name", list(CLASSES))
def test_the_official_pth_layout_loads_and_equals_the_hub_layout(name: str, tmp_path: Path) -> None:
    pth = official_pth(name, tmp_path / "checkpoint.pth")
    from_pth = CLASSES[name](checkpoint=pth, device="cpu")  # architecture read from args.model, not evaluated
    from_hub = tiny(name)
    assert from_pth.cfg == from_hub.cfg
    for (key, a), (_, b) in zip(from_pth.network.state_dict().items(), from_hub.network.state_dict().items(), strict=True):
        assert torch.equal(a, b), key


def test_hub_config_fields_unknown_ignored_missing_defaulted(tmp_path: Path) -> None:
    config = json.loads((FIXTURES / "mast3r_tiny" / "config.json").read_text())
    config.update(freeze="none", patch_embed_cls="PatchEmbedDust3R", landscape_only=False, some_future_field=[1, 2])
    del config["desc_mode"], config["family"]
    folder = tmp_path / "hub"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))  # json writes Infinity as the hub mixin does
    assert "Infinity" in (folder / "config.json").read_text()
    (folder / "model.safetensors").symlink_to(FIXTURES / "mast3r_tiny" / "weights.safetensors")
    model = SceneFromViewsMast3r(checkpoint=folder, device="cpu")
    assert model.cfg.family == "mast3r" and model.cfg.desc_mode == "norm" and model.cfg.descriptor_dim == 8


def test_constructor_strings_are_parsed_never_evaluated(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for text in (f"__import__('pathlib').Path('{marker}').touch()", f"AsymmetricCroCo3DStereo(enc_depth=__import__('pathlib').Path('{marker}').touch())"):
        pth = official_pth("dust3r_tiny", tmp_path / "evil.pth", constructor=text)
        with pytest.raises(CheckpointMismatchError, match="not one of AsymmetricCroCo3DStereo|non-literal value"):
            SceneFromViewsDust3r(checkpoint=pth, device="cpu")
    assert not marker.exists()
    parsed = CroCoStereoConfig.from_constructor(fixture_inputs("mast3r_tiny")["constructor"])
    assert parsed.family == "mast3r" and parsed.desc_conf_mode == ("exp", 0.0, float("inf")) and parsed.depth_mode[1] == -float("inf")


class Payload:
    """Not on the allow-list: unpickling it must be refused."""


def test_a_pickle_with_other_objects_is_refused(tmp_path: Path) -> None:
    state = load_file(str(FIXTURES / "dust3r_tiny" / "weights.safetensors"))
    torch.save({"model": state, "args": Payload()}, tmp_path / "other.pth")
    with pytest.raises(CheckpointCorruptError, match="other.pth"):
        SceneFromViewsDust3r(checkpoint=tmp_path / "other.pth", device="cpu")


def test_a_checkpoint_of_the_other_family_or_head_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(CheckpointMismatchError, match="is a MASt3R checkpoint, not DUSt3R: use model type 'mast3r'"):
        SceneFromViewsDust3r(checkpoint=FIXTURES / "mast3r_tiny" / "weights.safetensors", config=FIXTURES / "mast3r_tiny" / "config.json", device="cpu")
    with pytest.raises(CheckpointMismatchError, match="is a DUSt3R checkpoint, not MASt3R: use model type 'dust3r'"):
        SceneFromViewsMast3r(checkpoint=FIXTURES / "dust3r_tiny" / "weights.safetensors", config=FIXTURES / "dust3r_tiny" / "config.json", device="cpu")
    with pytest.raises(CheckpointMismatchError, match="holds a 'dpt' head but its configuration describes a 'linear' head"):
        SceneFromViewsDust3r(checkpoint=FIXTURES / "dust3r_tiny" / "weights.safetensors", config=FIXTURES / "dust3r_linear_tiny" / "config.json", device="cpu")
    pth = official_pth("mast3r_tiny", tmp_path / "mast3r.pth")
    with pytest.raises(CheckpointMismatchError, match="use model type 'mast3r'"):
        SceneFromViewsDust3r(checkpoint=pth, device="cpu")
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "model.safetensors").symlink_to(FIXTURES / "dust3r_tiny" / "weights.safetensors")
    with pytest.raises(FileNotFoundError, match="no config.json beside it"):
        SceneFromViewsDust3r(checkpoint=lonely, device="cpu")


# ----------------------------------------------------------------------------- the wrapper
def views(count: int, size: tuple[int, int] = (80, 60), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8) for _ in range(count)]


def test_one_image_is_refused_unless_duplicated_on_purpose(dust3r: SceneFromViewsDust3r) -> None:
    image = views(1)[0]
    with pytest.raises(InvalidImageError, match="pairwise model and needs at least 2 views.*pass it twice"):
        dust3r.reconstruct([image], rgb=True)
    result = dust3r.reconstruct([image, image], rgb=True)
    assert result.num_views == 2 and np.allclose(result.camera_poses[0], np.eye(4))


def test_images_smaller_than_a_patch_are_refused(dust3r: SceneFromViewsDust3r) -> None:
    small = np.zeros((10, 12, 3), np.uint8)
    with pytest.raises(InvalidImageError, match="12x10 image is smaller than one 16-pixel patch.*at least 16x16"):
        dust3r.check_image(small)
    with pytest.raises(InvalidImageError, match="smaller than one 16-pixel patch"):
        dust3r.reconstruct([small, small], rgb=True)
    thin = np.zeros((16, 200, 3), np.uint8)  # a strip: its crop at image_size 64 has no full row of patches
    with pytest.raises(InvalidImageError, match="gives a 64x0 input at image_size 64.*crop the image closer to 4:3"):
        dust3r.preprocess_images([thin, thin], image_size=64)


def test_an_unknown_scene_graph_is_refused_where_given() -> None:
    with pytest.raises(InvalidOptionError, match="model.scene_graph='star' is not allowed.*complete"):
        tiny("dust3r_tiny", scene_graph="star")
    with pytest.raises(InvalidOptionError, match="scene_graph"):
        tiny("dust3r_tiny").reconstruct(views(3), scene_graph="star")


def test_scene_graph_options_choose_the_pairs(dust3r: SceneFromViewsDust3r) -> None:
    nine = views(9, (48, 32))
    processed = dust3r.preprocess_images(nine, image_size=64)
    pairs = {name: dust3r.infer(processed, scene_graph=name, winsize=2).pairs for name in ("complete", "swin", "logwin", "oneref", "auto")}
    assert len(pairs["complete"]) == 9 * 8
    assert len(pairs["swin"]) == 2 * 9 * 2 and pairs["auto"] == pairs["swin"]  # auto = swin above 8 views
    assert {frozenset(p) for p in pairs["oneref"]} == {frozenset((0, j)) for j in range(1, 9)}
    assert len(dust3r.infer(processed, scene_graph="swin", winsize=2, win_cyclic=False).pairs) == 2 * (8 + 7)
    assert {p[0] for p in dust3r.infer(processed, scene_graph="oneref", refid=4).pairs[:8]} == {4}
    assert len(dust3r.infer(dust3r.preprocess_images(nine[:8], image_size=64)).pairs) == 8 * 7  # complete up to 8
    with pytest.raises(InvalidOptionError, match="refid"):
        dust3r.infer(processed, scene_graph="oneref", refid=9)


def test_batch_size_bounds_the_passes_without_changing_outputs(dust3r: SceneFromViewsDust3r) -> None:
    processed = dust3r.preprocess_images(views(4) + views(2, (60, 80)), image_size=64)
    calls: list[int] = []
    hook = dust3r.network.dec_blocks[0].register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    encodes: list[int] = []
    encode_hook = dust3r.network.enc_norm.register_forward_hook(lambda m, i, o: encodes.append(o.shape[0]))
    try:
        one = dust3r.infer(processed, scene_graph="complete", batch_size=1)
        passes_one, calls[:] = len(calls), []
        many = dust3r.infer(processed, scene_graph="complete", batch_size=8)
    finally:
        hook.remove()
        encode_hook.remove()
    assert passes_one == 30 and max(calls) == 8 and len(calls) == 5  # 30 pairs in 4 shape groups: (8+4)+8+8+2
    assert encodes == [4, 2, 4, 2]  # each view encoded once per call, one batch per image size
    for a, b in zip(one.view1 + one.view2, many.view1 + many.view2, strict=True):
        for key in a:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_image_size_and_square_ok_change_the_network_input(dust3r: SceneFromViewsDust3r) -> None:
    square = views(2, (90, 90))
    assert dust3r.preprocess_images(square, image_size=64).true_shapes.tolist() == [[48, 64]] * 2
    assert dust3r.preprocess_images(square, image_size=64, square_ok=True).true_shapes.tolist() == [[64, 64]] * 2
    assert dust3r.preprocess_images(square).true_shapes.tolist() == [[384, 512]] * 2  # 0: the training size
    result = dust3r.reconstruct(square, rgb=True, image_size=128)
    assert result.depth_predictions[0].shape == (96, 128)


@pytest.mark.usefixtures("shared_data")
def test_reconstruct_takes_the_fast_path(dust3r: SceneFromViewsDust3r) -> None:
    images = read(fixture_inputs("dust3r_tiny")["images"])
    result = dust3r.reconstruct(images, rgb=True, image_size=64, optimizer="none")
    assert result.num_views == 3
    np.testing.assert_allclose(result.camera_poses[0], np.eye(4), atol=1e-9)
    for pose, depth, points, k, conf, mask, image in zip(
        result.camera_poses, result.depth_predictions, result.point_clouds, result.intrinsics, result.confidences, result.masks,
        result.processed_images, strict=True,
    ):
        assert depth.shape == points.shape[:2] == conf.shape == mask.shape == image.shape[:2]
        np.testing.assert_allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-6)
        assert k[0, 0] > 0 and k[0, 2] == pytest.approx(image.shape[1] / 2) and k[1, 2] == pytest.approx(image.shape[0] / 2)
        np.testing.assert_array_equal(mask, conf >= dust3r.options.min_conf_thr)
    assert len(result.extras["tree_edges"]) == 2 and len(result.extras["pairs"]) == 6
    median_confidence = float(np.median(np.concatenate([c.ravel() for c in result.confidences])))
    stricter = dust3r.reconstruct(images, rgb=True, image_size=64, optimizer="none", min_conf_thr=median_confidence)
    assert 0 < len(stricter.global_point_cloud) < len(result.global_point_cloud)


@pytest.mark.usefixtures("shared_data")
def test_the_optimizer_input_holds_every_pair(mast3r: SceneFromViewsMast3r, dust3r: SceneFromViewsDust3r) -> None:
    images = read(fixture_inputs("mast3r_tiny")["images"])
    processed = mast3r.preprocess_images(images + images[:1], image_size=64)
    raw = mast3r.infer(processed, scene_graph="complete")
    optimizer_input = mast3r.create_optimizer_input(raw, processed)
    assert isinstance(optimizer_input, SceneOptimizerInput) and len(optimizer_input.pair_predictions) == 6
    np.testing.assert_array_equal(optimizer_input.true_shapes, processed.true_shapes)
    assert optimizer_input.images is processed.rgb
    for prediction in optimizer_input.pair_predictions:
        h_i, w_i = processed.true_shapes[prediction.i]
        h_j, w_j = processed.true_shapes[prediction.j]
        assert prediction.pts3d_i.shape == (h_i, w_i, 3) and prediction.pts3d_j_in_i.shape == (h_j, w_j, 3)
        width = mast3r.cfg.descriptor_dim
        assert prediction.desc_i.shape == (h_i, w_i, width) and prediction.desc_j.shape == (h_j, w_j, width)
        np.testing.assert_allclose(np.linalg.norm(prediction.desc_i, axis=-1), 1.0, atol=1e-5)
        assert prediction.conf_i.min() >= 1.0 and prediction.desc_conf_j.min() > 0.0
        assert np.median(prediction.pts3d_i[..., 2]) > 0  # the fixture's heads put points in front
    plain = dust3r.create_optimizer_input(dust3r.infer(dust3r.preprocess_images(images, image_size=64)), dust3r.preprocess_images(images, image_size=64))
    assert all(p.desc_i is None and p.desc_conf_j is None for p in plain.pair_predictions)


def test_factory_builds_both_families() -> None:
    folder = FIXTURES / "mast3r_tiny"
    model = scene_from_views_factory("mast3r", device="cpu", checkpoint=str(folder / "weights.safetensors"), config=str(folder / "config.json"))
    assert isinstance(model, SceneFromViewsMast3r) and model.is_metric
    assert SceneFromViewsDust3r.options_class().checkpoint == "naver/DUSt3R_ViTLarge_BaseDecoder_512_dpt"
    assert SceneFromViewsMast3r.options_class().checkpoint == "naver/MASt3R_ViTLarge_BaseDecoder_512_catmlpdpt_metric"


def test_landscape_only_runs_portrait_views_transposed() -> None:
    """The hub wrapper's mode: a portrait view is processed as its transpose and the outputs transposed back."""
    cfg = CroCoStereoConfig.from_dict(json.loads((FIXTURES / "dust3r_tiny" / "config.json").read_text()))
    state = {k: v.float() for k, v in load_file(str(FIXTURES / "dust3r_tiny" / "weights.safetensors")).items()}
    plain, landscape = CroCoStereo(cfg).eval(), CroCoStereo(replace(cfg, landscape_only=True)).eval()
    plain.load_state_dict(state)
    landscape.load_state_dict(state)
    portrait = torch.randn(1, 3, 64, 32) * 0.5
    other = torch.randn(1, 3, 48, 64) * 0.5
    with torch.no_grad():
        expected1, expected2 = plain(portrait.transpose(-1, -2), other)
        got1, got2 = landscape(portrait, other)
        untransposed, _ = plain(portrait, other)
    torch.testing.assert_close(got1["pts3d"], expected1["pts3d"].transpose(1, 2))
    torch.testing.assert_close(got2["pts3d_in_other_view"], expected2["pts3d_in_other_view"])
    assert not torch.allclose(got1["pts3d"], untransposed["pts3d"], atol=1e-3)


def test_the_default_repo_id_loads_from_an_offline_hub_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The hub repo's two files (weights and config.json) laid out as huggingface_hub caches them."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="naver/DUSt3R_ViTLarge_BaseDecoder_512_dpt.*HF_HUB_OFFLINE is set.*local file or folder"):
        SceneFromViewsDust3r(device="cpu")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--naver--DUSt3R_ViTLarge_BaseDecoder_512_dpt"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, source in (("model.safetensors", "weights.safetensors"), ("config.json", "config.json")):
        data = (FIXTURES / "dust3r_tiny" / source).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(exist_ok=True)
        blob.write_bytes(data)
        (snapshot / name).symlink_to(blob)
    model = SceneFromViewsDust3r(device="cpu")
    assert model.checkpoint_path == snapshot / "model.safetensors" and model.cfg.enc_embed_dim == 16


class CentroidOptimizer(SceneOptimizerBase):
    """Reads only what every optimizer may rely on (pair predictions, images, true shapes) and
    returns each view's points of its best pair, shifted so that view 0's centroid is the origin."""

    name = "centroid"

    def optimize(self, optimizer_input: SceneOptimizerInput) -> SceneOptimizerOutput:
        own = {}
        for prediction in optimizer_input.pair_predictions:
            own.setdefault(prediction.i, prediction)
        shift = own[0].pts3d_i.reshape(-1, 3).mean(axis=0)
        views = range(optimizer_input.num_views)
        return SceneOptimizerOutput(
            camera_poses=[np.eye(4) for _ in views], depth_predictions=[own[v].pts3d_i[..., 2] for v in views],
            point_clouds=[own[v].pts3d_i - shift for v in views], intrinsics=[np.eye(3) for _ in views],
            confidences=[own[v].conf_i for v in views],
        )


def test_with_an_optimizer_reconstruct_returns_its_result(dust3r: SceneFromViewsDust3r) -> None:
    images = views(3)
    fast = dust3r.reconstruct(images, rgb=True, image_size=64, optimizer="none")
    refined = dust3r.reconstruct(images, rgb=True, image_size=64, optimizer=CentroidOptimizer())
    assert refined.num_views == 3 and all(np.array_equal(p, np.eye(4)) for p in refined.camera_poses)
    np.testing.assert_allclose(refined.point_clouds[0].reshape(-1, 3).mean(axis=0), 0.0, atol=1e-4)
    assert not np.allclose(refined.point_clouds[1], fast.point_clouds[1])
    np.testing.assert_array_equal(refined.processed_images[2], fast.processed_images[2])


def test_reduced_precision_is_for_cuda_only() -> None:
    model = tiny("dust3r_tiny", dtype="bfloat16")
    assert model.amp_dtype is None and model.network.patch_embed.proj.weight.dtype == torch.float32


def test_the_optimizer_is_chosen_at_construction_and_dense_by_default() -> None:
    assert tiny("dust3r_tiny").optimizer.name == "dense_scene_optimizer"
    assert tiny("dust3r_tiny", optimizer_config={"type": "none"}).optimizer is None
    model = tiny("dust3r_tiny", optimizer_config={"type": "dense_scene_optimizer", "niter": 5})
    assert model.optimizer.options.niter == 5
    images = views(3)
    default = model.reconstruct(images, rgb=True, image_size=64)
    fast = model.reconstruct(images, rgb=True, image_size=64, optimizer="none")
    assert not np.allclose(default.camera_poses[1], fast.camera_poses[1])
    with pytest.raises(InvalidOptionError, match="optimizer options niter given but the optimizer type is none"):
        tiny("dust3r_tiny", optimizer_config={"type": "none", "niter": 5})
    with pytest.raises(InvalidOptionError, match="niter"):
        tiny("dust3r_tiny", optimizer_config={"niter": -1})
    with pytest.raises(ValueError, match="unknown optimizer 'bundle'"):
        tiny("dust3r_tiny", optimizer_config={"type": "bundle"})
