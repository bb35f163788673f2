"""The dense scene optimizer (DUSt3R global alignment) on synthetic pairs with ground truth:
accuracy against the truth and the spanning-tree start, options, input errors, the two-view
shortcut, and the whole pipeline with the tiny random-weight DUSt3R."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from scene_from_views_ros.core.errors import InvalidOptionError, UnknownKwargError
from scene_from_views_ros.optimizers import SceneOptimizerInput, dense, scene_optimizer_factory
from scene_from_views_ros.optimizers.dense import DenseSceneOptimizer

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURE = REPO_ROOT / "test" / "fixtures" / "dust3r_tiny"
sys.path.insert(0, str(REPO_ROOT / "bench"))
import synthetic_pairs as synthetic  # noqa: E402 - the bench's generator of pairs with ground truth

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scene():
    return synthetic.make_scene(num_views=5, height=48, width=64, seed=1)


@pytest.fixture(scope="module")
def small_scene():
    return synthetic.make_scene(num_views=4, height=24, width=32, focal=28.0, seed=2)


def _focals(output) -> np.ndarray:
    return np.array([k[0, 0] for k in output.intrinsics])


def _errors(scene, output) -> dict[str, float]:
    errors = synthetic.pose_errors(np.stack(output.camera_poses), scene.camera_poses)
    errors["focal"] = float(np.max(np.abs(_focals(output) / scene.focals - 1.0)))
    errors["depth"] = synthetic.depth_abs_rel(output.depth_predictions, scene.depths)
    return errors


def _check_conventions(output, num_views, shape):
    np.testing.assert_allclose(output.camera_poses[0], np.eye(4), atol=1e-9)
    for field in ("camera_poses", "depth_predictions", "point_clouds", "intrinsics", "confidences"):
        assert len(getattr(output, field)) == num_views
        assert all(np.isfinite(item).all() for item in getattr(output, field))
    assert output.depth_predictions[0].shape == shape
    assert output.point_clouds[0].shape == (*shape, 3)
    # view 0's cloud is its depth unprojected with its intrinsics (pose = identity)
    k = output.intrinsics[0]
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    depth = output.depth_predictions[0]
    expected = np.stack([(cols - k[0, 2]) * depth / k[0, 0], (rows - k[1, 2]) * depth / k[1, 1], depth], axis=-1)
    np.testing.assert_allclose(output.point_clouds[0], expected, rtol=1e-4, atol=1e-5)


def test_recovers_poses_and_focals_and_improves_on_the_mst_start(scene):
    start = DenseSceneOptimizer(niter=0).optimize(scene.optimizer_input)
    optimizer = DenseSceneOptimizer(niter=120)
    output = optimizer.optimize(scene.optimizer_input)
    _check_conventions(output, 5, (48, 64))
    before, after = _errors(scene, start), _errors(scene, output)
    assert after["ate"] < 0.025, after
    assert after["rotation_deg"] < 0.2, after
    assert after["focal"] < 0.01, after
    assert after["depth"] < 0.006, after
    # averaging all pairs beats the spanning tree's few
    assert after["ate"] < 0.7 * before["ate"], (before, after)
    assert after["rotation_deg"] < 0.8 * before["rotation_deg"], (before, after)
    assert after["depth"] < 0.5 * before["depth"], (before, after)
    run = optimizer.last_run
    assert len(run.losses) == 120 and run.final_loss < 0.7 * run.initial_loss
    # confidences are each view's best over the pairs (the reference's im_conf)
    best = np.max([p.conf_i for p in scene.optimizer_input.pair_predictions if p.i == 3]
                  + [p.conf_j for p in scene.optimizer_input.pair_predictions if p.j == 3], axis=0)
    np.testing.assert_allclose(output.confidences[3], best)


def test_output_is_at_the_scale_of_view0s_prediction(scene):
    """Depths come back at the scale of view 0's most confident pair, not the optimizer's 0.5."""
    output = DenseSceneOptimizer(niter=10).optimize(scene.optimizer_input)
    pairs = scene.optimizer_input.pair_predictions
    scores = [float(np.mean(p.conf_i) * np.mean(p.conf_j)) if 0 in (p.i, p.j) else -1.0 for p in pairs]
    anchor = int(np.argmax(scores))
    expected = scene.pair_scales[anchor] * np.median(scene.depths[0])
    assert np.median(output.depth_predictions[0]) == pytest.approx(expected, rel=0.05)


def test_init_none_runs_and_decreases_the_loss(small_scene):
    optimizer = DenseSceneOptimizer(init="none", niter=60)
    output = optimizer.optimize(small_scene.optimizer_input)
    _check_conventions(output, 4, (24, 32))
    assert optimizer.last_run.final_loss < 0.7 * optimizer.last_run.initial_loss
    other_seed = DenseSceneOptimizer(init="none", niter=5, seed=1).optimize(small_scene.optimizer_input)
    same_seed = DenseSceneOptimizer(init="none", niter=5, seed=0).optimize(small_scene.optimizer_input)
    assert not np.allclose(other_seed.camera_poses[1], same_seed.camera_poses[1])


@pytest.mark.parametrize(("name", "value"), [
    ("schedule", "cosine"), ("lr", 0.02), ("lr_min", 0.005), ("optimize_pp", True), ("conf_weight", "sqrt"),
    ("loss", "l2"), ("niter", 12),
])
def test_each_option_changes_the_result(small_scene, name, value):
    base = dict(niter=20)
    reference = DenseSceneOptimizer(**base).optimize(small_scene.optimizer_input)
    changed = DenseSceneOptimizer(**(base | {name: value})).optimize(small_scene.optimizer_input)
    difference = max(np.abs(a - b).max() for a, b in zip(reference.depth_predictions, changed.depth_predictions, strict=True))
    assert difference > 1e-5, f"{name}={value!r} did not change the depths"


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("repeat", [0, 2])
def test_closed_form_gradient_matches_autograd(squared, repeat):
    """The fused loss's backward against finite differences (float64), gathered and broadcast views."""
    generator = torch.Generator().manual_seed(0)

    def rand(*size):
        return torch.randn(*size, generator=generator, dtype=torch.float64)

    world = rand(3, 3, 7).requires_grad_()
    matrix = rand(6, 3, 3).requires_grad_()
    offset = rand(6, 3).requires_grad_()
    pred, weight = rand(6, 3, 7), rand(6, 7).abs()
    slot = torch.tensor([0, 0, 1, 1, 2, 2]) if repeat else torch.tensor([2, 0, 1, 0, 2, 2])
    assert torch.autograd.gradcheck(
        lambda w, m, o: dense._AlignmentLoss.apply(w, m, o, pred, weight, slot, repeat, squared), (world, matrix, offset)
    )


def test_views_of_different_sizes_and_a_sparse_graph(scene):
    """View 2 is cropped in every pair (its own shape group) and only neighbour pairs are kept."""
    inp = scene.optimizer_input

    def crop(points, conf, view):
        return (points[4:44], conf[4:44]) if view == 2 else (points, conf)  # keeps the centre

    pairs = []
    for p in inp.pair_predictions:
        if abs(p.i - p.j) == 1 or {p.i, p.j} == {0, 4} or (p.i, p.j) == (0, 2):
            pts_i, conf_i = crop(p.pts3d_i, p.conf_i, p.i)
            pts_j, conf_j = crop(p.pts3d_j_in_i, p.conf_j, p.j)
            pairs.append(dataclasses.replace(p, pts3d_i=pts_i, conf_i=conf_i, pts3d_j_in_i=pts_j, conf_j=conf_j))
    shapes = inp.true_shapes.copy()
    shapes[2] = (40, 64)
    sparse = _with_pairs(inp, pairs, true_shapes=shapes)
    optimizer = DenseSceneOptimizer(niter=80)
    output = optimizer.optimize(sparse)
    assert output.depth_predictions[2].shape == (40, 64) and output.point_clouds[2].shape == (40, 64, 3)
    errors = synthetic.pose_errors(np.stack(output.camera_poses), scene.camera_poses)
    assert errors["ate"] < 0.04 and errors["rotation_deg"] < 0.3, errors
    assert optimizer.last_run.final_loss < 0.8 * optimizer.last_run.initial_loss


def test_cosine_and_linear_schedules_differ_but_both_converge(small_scene):
    linear = DenseSceneOptimizer(niter=40, schedule="linear")
    cosine = DenseSceneOptimizer(niter=40, schedule="cosine")
    a, b = linear.optimize(small_scene.optimizer_input), cosine.optimize(small_scene.optimizer_input)
    assert not np.allclose(a.camera_poses[2], b.camera_poses[2], atol=1e-7)
    assert linear.last_run.losses != cosine.last_run.losses
    for run in (linear.last_run, cosine.last_run):
        assert run.final_loss < run.initial_loss


def test_min_conf_thr_and_clean_depth(small_scene):
    plain = DenseSceneOptimizer(niter=5).optimize(small_scene.optimizer_input)
    cleaned = DenseSceneOptimizer(niter=5, clean_depth=True).optimize(small_scene.optimizer_input)
    lowered = sum(int(np.sum(c < p)) for c, p in zip(cleaned.confidences, plain.confidences, strict=True))
    assert lowered > 0 and all(np.all(c <= p) for c, p in zip(cleaned.confidences, plain.confidences, strict=True))
    np.testing.assert_allclose(cleaned.depth_predictions[1], plain.depth_predictions[1])


def test_options_are_validated_at_construction():
    with pytest.raises(UnknownKwargError, match="niters"):
        DenseSceneOptimizer(niters=10)
    for bad in ({"niter": -1}, {"schedule": "exp"}, {"init": "known_poses"}, {"lr": 0.0}, {"optimize_pp": "yes"}, {"min_conf_thr": -1.0}):
        with pytest.raises(InvalidOptionError):
            DenseSceneOptimizer(**bad)
    assert DenseSceneOptimizer(schedule="Cosine").options.schedule == "cosine"


def test_factory_names():
    assert isinstance(scene_optimizer_factory("dense_scene_optimizer", niter=3), DenseSceneOptimizer)
    assert isinstance(scene_optimizer_factory("global_aligner"), DenseSceneOptimizer)


def _with_pairs(optimizer_input, pairs, **changes):
    return dataclasses.replace(optimizer_input, pair_predictions=pairs, **changes)


def test_bad_inputs_are_refused_with_the_fix(small_scene):
    inp = small_scene.optimizer_input
    pairs = inp.pair_predictions
    optimizer = DenseSceneOptimizer(niter=1)
    with pytest.raises(InvalidOptionError, match="no pair predictions"):
        optimizer.optimize(_with_pairs(inp, []))
    with pytest.raises(InvalidOptionError, match=r"outside \[0, 3\]"):
        optimizer.optimize(_with_pairs(inp, [dataclasses.replace(pairs[0], j=7)] + pairs[1:]))
    with pytest.raises(InvalidOptionError, match="with itself"):
        optimizer.optimize(_with_pairs(inp, [dataclasses.replace(pairs[0], j=pairs[0].i)] + pairs[1:]))
    shapes = inp.true_shapes.copy()
    shapes[1] = (20, 32)
    with pytest.raises(InvalidOptionError, match=r"true_shapes\[1\]"):
        optimizer.optimize(_with_pairs(inp, pairs, true_shapes=shapes))
    view0 = next(k for k, p in enumerate(pairs) if p.i == 0 and k > 0)
    cropped = dataclasses.replace(pairs[view0], pts3d_i=pairs[view0].pts3d_i[:20], conf_i=pairs[view0].conf_i[:20])
    with pytest.raises(InvalidOptionError, match="same pixel grid"):
        optimizer.optimize(_with_pairs(inp, pairs[:view0] + [cropped] + pairs[view0 + 1:]))
    with pytest.raises(InvalidOptionError, match=r"\(H, W, 3\)"):
        optimizer.optimize(_with_pairs(inp, [dataclasses.replace(pairs[0], conf_i=pairs[0].conf_i[..., None])] + pairs[1:]))
    broken = pairs[2].pts3d_j_in_i.copy()
    broken[3, 4, 2] = np.nan
    with pytest.raises(InvalidOptionError, match="NaN"):
        optimizer.optimize(_with_pairs(inp, pairs[:2] + [dataclasses.replace(pairs[2], pts3d_j_in_i=broken)] + pairs[3:]))
    without_3 = [p for p in pairs if 3 not in (p.i, p.j)]
    with pytest.raises(InvalidOptionError, match=r"views \[3\] appear in no pair"):
        optimizer.optimize(_with_pairs(inp, without_3))
    split = [p for p in pairs if {p.i, p.j} in ({0, 1}, {2, 3})]
    with pytest.raises(InvalidOptionError, match="do not connect"):
        optimizer.optimize(_with_pairs(inp, split))


def test_initial_state_round_trip_and_checks(small_scene):
    optimizer = DenseSceneOptimizer(niter=0)
    state = optimizer.initial_state(small_scene.optimizer_input)
    from_state = optimizer.optimize(small_scene.optimizer_input, initial_state=state)
    direct = optimizer.optimize(small_scene.optimizer_input)
    np.testing.assert_allclose(from_state.camera_poses[2], direct.camera_poses[2], atol=1e-9)
    with pytest.raises(InvalidOptionError, match="initial_state.depths"):
        optimizer.optimize(small_scene.optimizer_input, initial_state=dataclasses.replace(state, depths=state.depths[:2]))
    with pytest.raises(InvalidOptionError, match="initial_state.focals"):
        optimizer.optimize(small_scene.optimizer_input, initial_state=dataclasses.replace(state, focals=state.focals * np.nan))


def test_two_views_take_the_pair_viewer_shortcut():
    scene = synthetic.make_scene(num_views=2, height=48, width=64, seed=3)
    optimizer = DenseSceneOptimizer()
    output = optimizer.optimize(scene.optimizer_input)
    assert optimizer.last_run.two_view_shortcut and optimizer.last_run.losses == []
    _check_conventions(output, 2, (48, 64))
    errors = synthetic.pose_errors(np.stack(output.camera_poses), scene.camera_poses)
    assert errors["rotation_deg"] < 1.0
    assert np.max(np.abs(_focals(output) / scene.focals - 1.0)) < 0.02
    direction = output.camera_poses[1][:3, 3] / np.linalg.norm(output.camera_poses[1][:3, 3])
    truth = scene.camera_poses[1][:3, 3] / np.linalg.norm(scene.camera_poses[1][:3, 3])
    assert np.degrees(np.arccos(np.clip(direction @ truth, -1, 1))) < 5.0
    # a single direction is not a symmetric pair: it is optimised instead
    one_way = DenseSceneOptimizer(niter=5)
    inp = scene.optimizer_input
    one_way.optimize(SceneOptimizerInput(inp.pair_predictions[:1], inp.images, inp.true_shapes))
    assert not one_way.last_run.two_view_shortcut and len(one_way.last_run.losses) == 5


def test_tiny_dust3r_pipeline_returns_the_optimizers_result():
    from scene_from_views_ros.models.dust3r import SceneFromViewsDust3r

    model = SceneFromViewsDust3r(checkpoint=str(FIXTURE / "weights.safetensors"), config=str(FIXTURE / "config.json"), device="cpu")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    result = model.reconstruct(images, rgb=True, image_size=64, optimizer="dense_scene_optimizer", optimizer_kwargs={"niter": 20})
    processed = model.preprocess_images(images, image_size=64)
    optimizer_input = model.create_optimizer_input(model.infer(processed), processed)
    direct = DenseSceneOptimizer(niter=20).optimize(optimizer_input)
    assert len(result.camera_poses) == 3
    np.testing.assert_allclose(result.camera_poses[0], np.eye(4), atol=1e-9)
    for item in (*result.camera_poses, *result.point_clouds, *result.depth_predictions):
        assert np.isfinite(item).all()
    np.testing.assert_allclose(result.camera_poses[1], direct.camera_poses[1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.depth_predictions[2], direct.depth_predictions[2], rtol=1e-4, atol=1e-6)


def test_known_intrinsics_are_kept_fixed_and_help(scene):
    truth = np.stack([np.array([[f, 0.0, 32.0], [0.0, f, 24.0], [0.0, 0.0, 1.0]]) for f in scene.focals])
    free = DenseSceneOptimizer(niter=60).optimize(scene.optimizer_input)
    given = DenseSceneOptimizer(niter=60).optimize(dataclasses.replace(scene.optimizer_input, known_intrinsics=truth))
    np.testing.assert_allclose(np.stack(given.intrinsics), truth)  # preset: not optimised
    _check_conventions(given, 5, (48, 64))
    free_errors, given_errors = _errors(scene, free), _errors(scene, given)
    assert given_errors["focal"] == 0.0 and given_errors["ate"] <= free_errors["ate"], (free_errors, given_errors)
    # a wrong focal is honoured too, and the depths pay for it
    wrong = DenseSceneOptimizer(niter=60).optimize(dataclasses.replace(scene.optimizer_input, known_intrinsics=truth * [[1.3], [1.3], [1.0]]))
    np.testing.assert_allclose(_focals(wrong), 1.3 * scene.focals)
    assert _errors(scene, wrong)["depth"] > 2 * given_errors["depth"]
    # two views: the pair-viewer shortcut estimates its own focals, so it is not taken
    two = synthetic.make_scene(num_views=2, height=48, width=64, seed=3)
    optimizer = DenseSceneOptimizer(niter=5)
    out = optimizer.optimize(dataclasses.replace(two.optimizer_input, known_intrinsics=truth[:2]))
    assert not optimizer.last_run.two_view_shortcut and _focals(out).tolist() == two.focals.tolist()
    with pytest.raises(InvalidOptionError, match=r"known_intrinsics of shape \(3, 3, 3\): expected \(5, 3, 3\)"):
        DenseSceneOptimizer(niter=1).optimize(dataclasses.replace(scene.optimizer_input, known_intrinsics=truth[:3]))


def test_known_poses_are_kept_fixed_and_answer_in_their_frame(scene):
    # the true cameras in another frame and unit: rotated, moved, 3x larger
    rotation, offset = Rotation.from_euler("xyz", [0.3, -0.2, 1.0]).as_matrix(), np.array([5.0, -2.0, 1.0])
    given = np.tile(np.eye(4), (5, 1, 1))
    given[:, :3, :3] = rotation @ scene.camera_poses[:, :3, :3]
    given[:, :3, 3] = 3.0 * scene.camera_poses[:, :3, 3] @ rotation.T + offset
    optimizer = DenseSceneOptimizer(niter=60)
    output = optimizer.optimize(dataclasses.replace(scene.optimizer_input, known_poses=given))
    np.testing.assert_allclose(np.stack(output.camera_poses), given)
    # the depths come out in the given unit (3x the truth), as accurate as the free run's
    assert synthetic.depth_abs_rel([d / 3.0 for d in output.depth_predictions], scene.depths) < 0.01
    assert run_loss_decreased(optimizer)
    # view 0's cloud lies where the given camera 0 sees it
    k = output.intrinsics[0]
    rows, cols = np.mgrid[:48, :64]
    depth = output.depth_predictions[0]
    camera = np.stack([(cols - k[0, 2]) * depth / k[0, 0], (rows - k[1, 2]) * depth / k[1, 1], depth], axis=-1)
    np.testing.assert_allclose(output.point_clouds[0], camera @ given[0, :3, :3].T + given[0, :3, 3], rtol=1e-4, atol=1e-4)
    skewed = given.copy()
    skewed[1, 0, 1] += 0.5
    with pytest.raises(InvalidOptionError, match=r"known_poses of shape \(5, 4, 4\): expected \(5, 4, 4\) rigid"):
        DenseSceneOptimizer(niter=1).optimize(dataclasses.replace(scene.optimizer_input, known_poses=skewed))


def run_loss_decreased(optimizer: DenseSceneOptimizer) -> bool:
    run = optimizer.last_run
    return len(run.losses) == 60 and run.final_loss <= run.initial_loss
