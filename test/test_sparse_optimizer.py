"""The sparse scene optimizer (MASt3R sparse global alignment) on synthetic pairs whose descriptors
identify each pixel's true world point: pose accuracy of the coarse stage, the fine stages'
outputs, options, input errors, the matches written to cache_dir, and the tiny MASt3R pipeline."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scene_from_views_ros.core.errors import InvalidOptionError
from scene_from_views_ros.optimizers.sparse import SparseSceneOptimizer, kinematic_tree, reciprocal_matches

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURE = REPO_ROOT / "test" / "fixtures" / "mast3r_tiny"
sys.path.insert(0, str(REPO_ROOT / "bench"))
import synthetic_pairs as synthetic  # noqa: E402 - the bench's generator of pairs with ground truth
from bench_sparse_optimizer import add_descriptors  # noqa: E402 - descriptors = each pixel's true world point

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scene():
    return add_descriptors(synthetic.make_scene(num_views=5, height=48, width=64, seed=1))


def _errors(scene, output) -> dict[str, float]:
    errors = synthetic.pose_errors(np.stack(output.camera_poses), scene.camera_poses)
    errors["focal"] = float(np.max(np.abs(np.array([k[0, 0] for k in output.intrinsics]) / scene.focals - 1.0)))
    errors["depth"] = synthetic.depth_abs_rel(output.depth_predictions, scene.depths)
    return errors


def test_coarse_stage_recovers_poses_focals_and_depth(scene):
    optimizer = SparseSceneOptimizer(optim_level="coarse", niter1=200)
    output = optimizer.optimize(scene.optimizer_input)
    errors = _errors(scene, output)
    # measured: ATE 0.018 of the camera spread, 0.25 deg, focal 0.0 %, depth abs-rel 0.005
    assert errors["ate"] < 0.06
    assert errors["rotation_deg"] < 1.0
    assert errors["focal"] < 0.02
    assert errors["depth"] < 0.02
    np.testing.assert_allclose(output.camera_poses[0], np.eye(4), atol=1e-9)
    assert optimizer.last_run.coarse_losses[-1] < 0.1 * optimizer.last_run.coarse_losses[0]
    assert len(optimizer.last_run.tree_edges) == 4
    assert not optimizer.last_run.fine_losses


def test_without_optimisation_the_poses_are_wrong(scene):
    """The accuracy above comes from the coarse stage: at niter1=0 all cameras sit together."""
    output = SparseSceneOptimizer(optim_level="coarse", niter1=0).optimize(scene.optimizer_input)
    assert _errors(scene, output)["rotation_deg"] > 10.0


def test_fine_stages_run_and_keep_the_output_consistent(scene):
    for level in ("refine", "refine+depth"):
        optimizer = SparseSceneOptimizer(optim_level=level, niter1=100, niter2=20)
        output = optimizer.optimize(scene.optimizer_input)
        assert len(optimizer.last_run.fine_losses) == 20
        # the coarse result is already at the matches' pixel quantisation: the fine loss stays there
        assert optimizer.last_run.fine_losses[-1] < 1.05 * optimizer.last_run.fine_losses[0]
        assert np.ptp([k[0, 0] for k in output.intrinsics]) > 0.0  # the focals are optimised per view
        errors = _errors(scene, output)
        assert errors["rotation_deg"] < 3.0
        assert errors["focal"] < 0.3
        np.testing.assert_allclose(output.camera_poses[0], np.eye(4), atol=1e-9)
        k, depth = output.intrinsics[0], output.depth_predictions[0]
        rows, cols = np.mgrid[:48, :64]
        expected = np.stack([(cols - k[0, 2]) * depth / k[0, 0], (rows - k[1, 2]) * depth / k[1, 1], depth], axis=-1)
        np.testing.assert_allclose(output.point_clouds[0], expected, rtol=1e-4, atol=1e-5)


def test_shared_intrinsics_refine_keeps_one_accurate_focal(scene):
    """With one focal for all views the fine 2D stage stays accurate (per-view focals drift on this
    tiny scene, in the reference too: see bench/bench_sparse_optimizer.py)."""
    output = SparseSceneOptimizer(optim_level="refine", niter1=200, niter2=150, shared_intrinsics=True).optimize(scene.optimizer_input)
    focals = np.array([k[0, 0] for k in output.intrinsics])
    assert np.ptp(focals) == 0.0
    errors = _errors(scene, output)
    # measured: ATE 0.038, 0.65 deg, focal 1.6 %, depth abs-rel 0.005
    assert errors["ate"] < 0.08
    assert errors["rotation_deg"] < 1.5
    assert errors["focal"] < 0.05
    assert errors["depth"] < 0.02


def test_reciprocal_matches_find_true_correspondences(scene):
    pair = next(p for p in scene.optimizer_input.pair_predictions if (p.i, p.j) == (0, 1))
    a, b = reciprocal_matches(torch.from_numpy(pair.desc_i), torch.from_numpy(pair.desc_j), 8)
    assert len(a) > 20
    sims = np.sum(pair.desc_i.reshape(-1, 16)[a] * pair.desc_j.reshape(-1, 16)[b], axis=1)
    assert np.all(sims > 1.0 - 1e-4)  # the same world point within ~0.3 m / 20 m on the lifted sphere


def test_kinematic_tree_modes_span_all_views():
    scores = np.array([[0, 9, 1, 0], [9, 0, 8, 2], [1, 8, 0, 7], [0, 2, 7, 0]], dtype=float)
    root, edges = kinematic_tree(scores, np.full(4, 48.0), "mst")
    assert sorted(tuple(sorted(e)) for e in edges) == [(0, 1), (1, 2), (2, 3)]
    assert root in (1, 2)
    for mode in ("hclust-ward", "hclust-single", "hclust-average", "hclust-complete"):
        _, edges = kinematic_tree(scores, np.full(4, 48.0), mode)
        assert len(edges) == 3 and {v for e in edges for v in e} == {0, 1, 2, 3}


def test_options_are_validated_at_construction():
    with pytest.raises(InvalidOptionError):
        SparseSceneOptimizer(optim_level="fine")
    with pytest.raises(InvalidOptionError):
        SparseSceneOptimizer(kinematic_mode="hclust-bogus")
    with pytest.raises(InvalidOptionError):
        SparseSceneOptimizer(subsample=0)
    with pytest.raises(Exception, match="lr_one"):
        SparseSceneOptimizer(lr_one=0.1)
    opts = SparseSceneOptimizer().options
    assert (opts.subsample, opts.lr1, opts.niter1, opts.lr2, opts.niter2) == (8, 0.07, 300, 0.01, 300)
    assert (opts.optim_level, opts.kinematic_mode, opts.matching_conf_thr, opts.shared_intrinsics) == ("refine+depth", "hclust-ward", 0.0, False)
    assert opts.opt_pp is False  # the reference frees them: see the module's differences


def test_missing_descriptors_are_refused_with_the_fix():
    plain = synthetic.make_scene(num_views=3, height=16, width=16, focal=14.0, seed=3)
    with pytest.raises(InvalidOptionError, match="MASt3R.*dense_scene_optimizer"):
        SparseSceneOptimizer().optimize(plain.optimizer_input)


def test_bad_inputs_name_the_problem(scene):
    inp = scene.optimizer_input
    bad = type(inp)(inp.pair_predictions[:0], inp.images, inp.true_shapes)
    with pytest.raises(InvalidOptionError, match="no pair predictions"):
        SparseSceneOptimizer().optimize(bad)
    one_sided = type(inp)([p for p in inp.pair_predictions if p.i < p.j], inp.images, inp.true_shapes)
    with pytest.raises(InvalidOptionError, match="symmetric pairs"):
        SparseSceneOptimizer(niter1=1, niter2=0).optimize(one_sided)
    pair = inp.pair_predictions[0]
    wrong = type(pair)(pair.i, pair.j, pair.pts3d_i, pair.conf_i, pair.pts3d_j_in_i, pair.conf_j,
                       pair.desc_i[:, :10], pair.desc_j, pair.desc_conf_i, pair.desc_conf_j)
    with pytest.raises(InvalidOptionError, match="same pixel grid"):
        SparseSceneOptimizer().optimize(type(inp)([wrong, *inp.pair_predictions[1:]], inp.images, inp.true_shapes))


def test_cache_dir_receives_matches_and_a_temporary_one_is_removed(scene, tmp_path):
    optimizer = SparseSceneOptimizer(optim_level="coarse", niter1=2, cache_dir=str(tmp_path))
    optimizer.optimize(scene.optimizer_input)
    saved = np.load(tmp_path / "matches" / "0-1.npz")
    assert len(saved["conf"]) == optimizer.last_run.num_matches[(0, 1)] > 0
    assert (tmp_path / "canon" / "4.npz").exists()
    optimizer = SparseSceneOptimizer(optim_level="coarse", niter1=2)
    optimizer.optimize(scene.optimizer_input)
    assert optimizer.last_run.cache_dir and not Path(optimizer.last_run.cache_dir).exists()


def test_tiny_mast3r_pipeline_returns_the_optimizer_result():
    from scene_from_views_ros.models.dust3r import SceneFromViewsMast3r

    model = SceneFromViewsMast3r(checkpoint=str(FIXTURE / "weights.safetensors"), config=str(FIXTURE / "config.json"), device="cpu")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    outputs = []

    class Recording(SparseSceneOptimizer):
        def optimize(self, optimizer_input):
            outputs.append(super().optimize(optimizer_input))
            return outputs[-1]

    optimizer = Recording(niter1=5, niter2=5)
    result = model.reconstruct(images, rgb=True, image_size=64, optimizer=optimizer)
    assert len(outputs) == 1 and optimizer.last_run.coarse_losses and optimizer.last_run.fine_losses
    for mine, theirs in zip(outputs[0].depth_predictions, result.depth_predictions, strict=True):
        np.testing.assert_allclose(np.asarray(theirs), mine, rtol=1e-5)
    assert result.num_views == 3
    np.testing.assert_allclose(result.camera_poses[0], np.eye(4), atol=1e-6)
    assert all(np.isfinite(p).all() for p in result.camera_poses)
    assert all(np.isfinite(d).all() for d in result.depth_predictions)


def test_pairs_without_good_matches_fall_back_to_3d_regression(scene):
    """matching_conf_thr above every match confidence: all pairs use DUSt3R's regression of the anchors."""
    optimizer = SparseSceneOptimizer(optim_level="coarse", niter1=100, matching_conf_thr=1e5)
    output = optimizer.optimize(scene.optimizer_input)
    assert len(optimizer.last_run.fallback_pairs) == 10
    errors = _errors(scene, output)
    # measured: ATE 0.005, 0.07 deg, depth abs-rel 0.005
    assert errors["ate"] < 0.05
    assert errors["rotation_deg"] < 1.0
    assert errors["depth"] < 0.02


def test_factory_builds_it_by_name_with_options():
    from scene_from_views_ros.optimizers import available_optimizers, scene_optimizer_factory

    assert available_optimizers()["sparse_scene_optimizer"] is True
    optimizer = scene_optimizer_factory("sparse_scene_optimizer", niter1=7, optim_level="coarse")
    assert isinstance(optimizer, SparseSceneOptimizer)
    assert (optimizer.options.niter1, optimizer.options.optim_level) == (7, "coarse")


def test_subsample_sets_the_density_of_matches(scene):
    """Seeds every 4th pixel instead of every 8th: about 4x the seeds, over 2.5x the matches."""
    counts = {}
    for subsample in (8, 4):
        optimizer = SparseSceneOptimizer(optim_level="coarse", niter1=1, subsample=subsample)
        optimizer.optimize(scene.optimizer_input)
        counts[subsample] = sum(optimizer.last_run.num_matches.values())
    # measured: 562 and 1607
    assert counts[4] > 2.5 * counts[8]


def test_lr1_sets_the_pace_of_the_coarse_stage(scene):
    curves = {}
    for lr1 in (0.07, 0.001):
        optimizer = SparseSceneOptimizer(optim_level="coarse", niter1=40, lr1=lr1)
        optimizer.optimize(scene.optimizer_input)
        curves[lr1] = optimizer.last_run.coarse_losses
    assert curves[0.07][0] == curves[0.001][0]  # the same start
    # measured after 40 iterations: 0.062 and 0.75 (from 0.81)
    assert curves[0.001][-1] > 5.0 * curves[0.07][-1]


def test_lr2_and_niter2_drive_the_fine_stage(scene):
    runs = {}
    for lr2 in (0.01, 1e-6):
        optimizer = SparseSceneOptimizer(optim_level="refine", niter1=100, niter2=30, lr2=lr2)
        output = optimizer.optimize(scene.optimizer_input)
        assert len(optimizer.last_run.fine_losses) == 30
        runs[lr2] = (optimizer.last_run.fine_losses, np.array([k[0, 0] for k in output.intrinsics]))
    # a vanishing lr2 leaves the coarse result (focals at their estimate); 0.01 moves focals by pixels
    assert abs(runs[1e-6][0][-1] - runs[1e-6][0][0]) < 1e-3 * runs[1e-6][0][0]
    assert np.ptp(runs[1e-6][1]) < 0.01 and np.ptp(runs[0.01][1]) > 1.0


def test_opt_pp_frees_or_fixes_the_principal_points(scene):
    centre = np.array([32.0, 24.0])
    for opt_pp in (True, False):
        output = SparseSceneOptimizer(optim_level="refine", niter1=100, niter2=30, opt_pp=opt_pp).optimize(scene.optimizer_input)
        moved = max(float(np.abs(k[:2, 2] - centre).max()) for k in output.intrinsics)
        if opt_pp:
            assert moved > 0.5  # measured: up to 1.2 px
        else:
            assert moved == 0.0


def test_kinematic_mode_picks_the_tree():
    scores = np.array([[0, 67, 115, 98, 57], [67, 0, 92, 80, 162], [115, 92, 0, 114, 164], [98, 80, 114, 0, 93],
                       [57, 162, 164, 93, 0]], dtype=float)
    trees = {mode: sorted(tuple(sorted(e)) for e in kinematic_tree(scores, np.full(5, 48.0), mode)[1])
             for mode in ("mst", "hclust-ward", "hclust-single")}
    assert trees["mst"] == [(0, 2), (1, 4), (2, 3), (2, 4)]  # the heaviest edges
    assert trees["hclust-single"] == [(0, 2), (1, 2), (2, 3), (2, 4)]
    assert trees["hclust-ward"] == [(0, 3), (1, 2), (2, 3), (2, 4)]
