"""TSDF refinement (MASt3R's TSDFPostProcess) as a scene optimizer: accuracy on a synthetic
scene with known depth, option effects, validation, and use after the tiny VGGT / DUSt3R."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scene_from_views_ros.core.errors import InvalidOptionError, UnknownKwargError
from scene_from_views_ros.core.factory import scene_from_views_factory
from scene_from_views_ros.geometry.camera import unproject_depth
from scene_from_views_ros.mapping.synthetic import make_sequence
from scene_from_views_ros.optimizers import SceneOptimizerInput, optimizer_class, scene_optimizer_factory
from scene_from_views_ros.optimizers.tsdf import TsdfInputError, TsdfOptions, TsdfRefinement, refine_depths

FIXTURES = Path(__file__).parent / "fixtures"
VIEWS = [0, 1, 2, 3, 4]


def make_scene() -> dict:
    """Five 40x30 views of the synthetic room (depths 1.2-3.4 m) in view 0's frame, with true
    depths and noisy ones: 2% multiplicative noise plus 2% outliers off by +-20%."""
    sequence = make_sequence(240, 40, 30)
    to_first = np.linalg.inv(sequence.poses[VIEWS[0]])
    poses = [(to_first @ sequence.poses[i]).astype(np.float32) for i in VIEWS]
    true = [sequence.render(i)[1] for i in VIEWS]
    rng = np.random.default_rng(0)
    noisy, outliers = [], []
    for depth in true:
        outlier = rng.random(depth.shape) < 0.02
        noise = 1 + 0.02 * rng.standard_normal(depth.shape)
        noise[outlier] = rng.choice([0.8, 1.2], int(outlier.sum()))
        noisy.append((depth * noise).astype(np.float32))
        outliers.append(outlier)
    intrinsics = [sequence.intrinsics.astype(np.float32)] * len(VIEWS)
    confidences = [np.ones_like(depth) for depth in true]
    return dict(poses=poses, true=true, noisy=noisy, outliers=np.stack(outliers), intrinsics=intrinsics, confidences=confidences)


@pytest.fixture(scope="module")
def scene() -> dict:
    return make_scene()


def refine(scene: dict, depths: list[np.ndarray] | None = None, **options: Any) -> list[np.ndarray]:
    options.setdefault("num_samples", 200)
    depths = scene["noisy"] if depths is None else depths
    return refine_depths(depths, scene["poses"], scene["intrinsics"], scene["confidences"], TsdfOptions(**options))


def rmse(depths: list[np.ndarray], true: list[np.ndarray]) -> float:
    return float(np.sqrt(np.mean((np.stack(depths) - np.stack(true)) ** 2)))


def test_noisy_depths_move_towards_the_truth(scene):
    refined = refine(scene, TSDF_thresh=0.2, subsample=1)
    true, outliers = np.stack(scene["true"]), scene["outliers"]
    before, after = np.abs(np.stack(scene["noisy"]) - true), np.abs(np.stack(refined) - true)
    # The vote averages all five views' depths along each ray (the refined view's own one
    # included, as in MASt3R): measured factors are 1.30 (RMSE), 1.72 (median), 1.34 (inliers)
    # and 2.02 (outliers); the bounds leave a margin.
    assert rmse(refined, scene["true"]) < rmse(scene["noisy"], scene["true"]) / 1.2
    assert np.median(after) < np.median(before) / 1.5
    assert after[~outliers].mean() < before[~outliers].mean() / 1.2
    assert after[outliers].mean() < before[outliers].mean() / 1.7


def test_subsample_corrects_a_view_scale_error_block_wise(scene):
    # Views 1..4 exact, view 0 5% too far (~0.1 m): the vote at one anchor per 4x4 block
    # rescales the whole block (measured: median error / 4.0).
    depths = [d * 1.05 if i == 0 else d for i, d in enumerate(scene["true"])]
    refined = refine(scene, depths, TSDF_thresh=0.2, subsample=4)
    before = np.median(np.abs(depths[0] - scene["true"][0]))
    after = np.median(np.abs(refined[0] - scene["true"][0]))
    assert after < before / 3


def test_thresh_and_subsample_change_the_output(scene):
    off = refine(scene, TSDF_thresh=0.0)
    assert all(np.array_equal(a, b) for a, b in zip(off, scene["noisy"], strict=True))  # 0 = no TSDF, as MASt3R
    base = refine(scene, TSDF_thresh=0.1, subsample=2)
    assert not np.allclose(np.stack(base), np.stack(refine(scene, TSDF_thresh=0.2, subsample=2)))
    assert not np.allclose(np.stack(base), np.stack(refine(scene, TSDF_thresh=0.1, subsample=3)))


def test_seeded_and_batch_size_only_bounds_memory(scene):
    first = refine(scene, TSDF_thresh=0.1, subsample=2, num_samples=64)
    again = refine(scene, TSDF_thresh=0.1, subsample=2, num_samples=64, batch_size=1024)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    other_seed = refine(scene, TSDF_thresh=0.1, subsample=2, num_samples=64, seed=1)
    assert not np.array_equal(np.stack(first), np.stack(other_seed))


def test_invalid_depths_are_kept_and_neither_vote_nor_move(scene):
    depths = [d.copy() for d in scene["noisy"]]
    depths[1][:5, :5] = np.nan
    depths[2][10:12, :] = 0.0
    refined = refine(scene, depths, TSDF_thresh=0.2, subsample=1, num_samples=50)
    assert np.isnan(refined[1][:5, :5]).all() and np.isfinite(refined[1]).sum() == 30 * 40 - 25
    assert (refined[2][10:12] == 0).all()


def test_views_of_different_sizes(scene):
    # View 1 cropped to its left 30 columns and view 2 to 5 rows (same intrinsics: the crop keeps the origin).
    depths = [d[:, :30] if i == 1 else d[:5] if i == 2 else d for i, d in enumerate(scene["noisy"])]
    confidences = [np.ones_like(d) for d in depths]
    options = TsdfOptions(TSDF_thresh=0.2, subsample=8, num_samples=50)
    refined = refine_depths(depths, scene["poses"], scene["intrinsics"], confidences, options)
    assert [r.shape for r in refined] == [d.shape for d in depths]
    assert all(np.isfinite(r).all() for r in refined)
    assert not np.allclose(refined[2], depths[2])


def test_options_are_checked_at_construction():
    assert optimizer_class("tsdf_refinement") is TsdfRefinement
    defaults = TsdfRefinement().options
    assert (defaults.TSDF_thresh, defaults.subsample, defaults.num_samples) == (0.0, 8, 1000)  # MASt3R's defaults
    with pytest.raises(InvalidOptionError, match="optimizer.TSDF_thresh"):
        TsdfRefinement(TSDF_thresh=-0.1)
    with pytest.raises(InvalidOptionError, match="optimizer.subsample"):
        scene_optimizer_factory("tsdf_refinement", subsample=0)
    with pytest.raises(InvalidOptionError, match="optimizer.num_samples"):
        TsdfRefinement(num_samples=2.5)
    with pytest.raises(UnknownKwargError, match="did you mean optimizer.TSDF_thresh"):
        TsdfRefinement(TSDF_tresh=0.1)


def test_bad_inputs_name_the_problem(scene):
    optimizer = TsdfRefinement(TSDF_thresh=0.1)
    with pytest.raises(TsdfInputError, match="refines an existing reconstruction"):
        optimizer.optimize(SceneOptimizerInput([], [], np.zeros((0, 2), np.int32)))
    args = [scene["noisy"], scene["poses"], scene["intrinsics"], scene["confidences"]]
    with pytest.raises(TsdfInputError, match="one entry per view"):
        refine_depths(args[0], args[1][:2], args[2], args[3])
    with pytest.raises(TsdfInputError, match="without views"):
        refine_depths([], [], [], [])
    with pytest.raises(TsdfInputError, match="confidence shape"):
        refine_depths(args[0], args[1], args[2], [c[:-1] for c in args[3]])
    with pytest.raises(TsdfInputError, match="4x4"):
        refine_depths(args[0], [p[:3] for p in args[1]], args[2], args[3])
    with pytest.raises(TsdfInputError, match="positive focal"):
        refine_depths(args[0], args[1], [np.zeros((3, 3))] * len(VIEWS), args[3])
    with pytest.raises(TsdfInputError, match=r"\(H, W\)"):
        refine_depths([d[..., None] for d in args[0]], args[1], args[2], args[3])


@pytest.mark.parametrize(
    "kind, kwargs",
    [
        ("vggt", dict(checkpoint=FIXTURES / "vggt_tiny" / "weights.safetensors", config=FIXTURES / "vggt_tiny" / "config.json", target_size=56)),
        ("dust3r", dict(checkpoint=FIXTURES / "dust3r_tiny" / "weights.safetensors", config=FIXTURES / "dust3r_tiny" / "config.json", image_size=64)),
    ],
)
def test_runs_after_a_model(kind, kwargs):
    model = scene_from_views_factory(kind, device="cpu", **kwargs)
    sequence = make_sequence(60, 64, 48)
    images = [sequence.render(i)[0] for i in (0, 2, 4)]
    plain = model.reconstruct(images, rgb=True, optimizer="none")  # the model's own result (DUSt3R: the fast path)
    thresh = float(0.05 * np.median(np.concatenate([d.ravel() for d in plain.depth_predictions])))
    refined = model.reconstruct(
        images, rgb=True, optimizer="tsdf_refinement", optimizer_kwargs=dict(TSDF_thresh=thresh, subsample=2, num_samples=64)
    )
    assert len(refined.depth_predictions) == len(images)
    for before, after, points, pose in zip(plain.depth_predictions, refined.depth_predictions, refined.point_clouds, refined.camera_poses, strict=True):
        assert after.shape == before.shape and points.shape == before.shape + (3,) and pose.shape == (4, 4)
        assert np.isfinite(after).all() and np.isfinite(points).all()
    assert all(np.allclose(a, b) for a, b in zip(plain.camera_poses, refined.camera_poses, strict=True))
    assert not np.allclose(np.stack(plain.depth_predictions), np.stack(refined.depth_predictions))
    # Point clouds are the refined depths unprojected into the world (view 0's frame).
    expected = unproject_depth(np.stack(refined.depth_predictions), np.stack(refined.intrinsics), np.stack(refined.camera_poses))
    assert np.allclose(np.stack(refined.point_clouds), expected, atol=1e-4)


def test_runs_after_an_optimizer_in_a_list():
    model = scene_from_views_factory(
        "dust3r", device="cpu", checkpoint=FIXTURES / "dust3r_tiny" / "weights.safetensors",
        config=FIXTURES / "dust3r_tiny" / "config.json", image_size=64,
    )
    sequence = make_sequence(60, 64, 48)
    images = [sequence.render(i)[0] for i in (0, 2, 4)]
    dense = scene_optimizer_factory("dense_scene_optimizer", niter=10)
    aligned = model.reconstruct(images, rgb=True, optimizer=dense)
    thresh = float(0.05 * np.median(np.concatenate([d.ravel() for d in aligned.depth_predictions])))
    tsdf = scene_optimizer_factory("tsdf_refinement", TSDF_thresh=thresh, subsample=2, num_samples=64)
    both = model.reconstruct(images, rgb=True, optimizer=[dense, tsdf])
    assert all(np.allclose(a, b) for a, b in zip(aligned.camera_poses, both.camera_poses, strict=True))  # TSDF keeps the aligned poses
    assert not np.allclose(np.stack(aligned.depth_predictions), np.stack(both.depth_predictions))
    with pytest.raises(UnknownKwargError, match="pass configured instances"):
        model.reconstruct(images, rgb=True, optimizer=["dense_scene_optimizer", "tsdf_refinement"], optimizer_kwargs={"niter": 5})
