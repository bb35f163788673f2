"""VGGT-Robust on the tiny fixture: scores as robust_vggt.py computes them, and the second pass."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scene_from_views_ros import load_images, scene_from_views_factory
from scene_from_views_ros.models.vggt_robust import SceneFromViewsVggtRobust

FIXTURE = Path(__file__).parent / "fixtures" / "vggt_tiny"
NAMES = ["notredame/1.jpeg", "notredame/2.jpeg", "trevi/1.jpeg", "notredame/4.jpeg", "trevi/5.jpeg"]


@pytest.fixture(scope="module")
def model() -> SceneFromViewsVggtRobust:
    return scene_from_views_factory(
        "vggt_robust", checkpoint=FIXTURE / "weights.safetensors", config=FIXTURE / "config.json", device="cpu"
    )


@pytest.fixture(scope="module")
def processed(model: SceneFromViewsVggtRobust, shared_data: Path):
    return model.preprocess_images(load_images([str(shared_data / n) for n in NAMES]), target_size=140)


def _robust_vggt_scores(q, k, tokens, patch_start, image_hw, patch):
    """robust_vggt.py's steps, written out literally: anchor = view 0, full logits, per-view
    bilinear maps normalised by the global min/max, token-pair cosine matrices, min-max."""
    height, width = image_hw
    rows, cols = height // patch, width // patch
    per_frame = patch_start + rows * cols
    frames = tokens.shape[0]
    feats = F.normalize(tokens, dim=-1)
    cos = torch.einsum("bic,bjc->bij", feats, feats[0:1]).mean(-1).mean(-1)
    queries = q[:, :, patch_start : patch_start + rows * cols]
    probs = torch.softmax(torch.einsum("bhqd,bhtd->bhqt", queries, k) / math.sqrt(q.shape[-1]), dim=-1)
    attn = probs.mean(dim=1).mean(dim=1)[0]
    maps = [attn[i * per_frame + patch_start : (i + 1) * per_frame].view(rows, cols) for i in range(frames)]
    low, high = min(m.min() for m in maps), max(m.max() for m in maps)
    ups = [F.interpolate(m[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0] for m in maps]
    att = torch.tensor([float(((u - low) / (high - low)).mean()) for u in ups])
    cos = (cos - cos.min()) / (cos.max() - cos.min() + 1e-6)
    att = (att - att.min()) / (att.max() - att.min() + 1e-6)
    return 0.5 * att + 0.5 * cos


def test_scores_with_flags_off_follow_robust_vggt(model, processed) -> None:
    _raw, q, k, tokens = model._first_pass(processed.images, 8, "pointmap")
    start, dim = model.network.aggregator.patch_start_idx, model.network.cfg.embed_dim
    expected = _robust_vggt_scores(q, k, tokens[0, :, start:, dim:], start, tuple(processed.images.shape[-2:]), 14)
    out = model.infer(processed, use_most_central_as_reference=False, use_anchor_relative_score=False)
    scores = out["scores"]
    assert scores.anchor == 0
    np.testing.assert_allclose(scores.scores, expected.numpy(), rtol=1e-5, atol=1e-6)
    assert scores.rejected == [i for i in range(1, len(NAMES)) if expected[i] < 0.4]


def test_rejected_views_are_dropped_and_survivors_reconstructed(model, processed, shared_data) -> None:
    images = load_images([str(shared_data / n) for n in NAMES])
    result = model.reconstruct(images, rgb=True, target_size=140, rej_thresh=0.95, conf_thres=0.0)
    scores = model.infer(processed, rej_thresh=0.95)["scores"]
    assert result.rejected_indices == scores.rejected and len(scores.rejected) > 0
    assert scores.anchor not in result.rejected_indices
    assert result.survivor_indices == sorted(set(range(len(NAMES))) - set(result.rejected_indices))
    assert len(result.view_scores) == len(NAMES) and result.view_scores[scores.anchor] == pytest.approx(1.0)
    assert result.num_views == len(result.survivor_indices)
    # second pass: the survivors alone, anchor first, reported in input order
    order = [scores.anchor] + [i for i in result.survivor_indices if i != scores.anchor]
    with torch.inference_mode():
        direct = model.network(processed.images[order])
    for position, index in enumerate(order):
        np.testing.assert_allclose(
            result.depth_predictions[result.survivor_indices.index(index)], direct["depth"][0, position, ..., 0].numpy(), rtol=1e-5
        )
    np.testing.assert_allclose(result.camera_poses[0], np.eye(4), atol=1e-6)


def test_no_rejection_keeps_first_pass(model, processed) -> None:
    out = model.infer(processed, rej_thresh=0.0)  # scores are >= 0: nothing is under the threshold
    assert out["scores"].rejected == [] and out["raw"]["depth"].shape[0] == len(NAMES)


def test_score_options_change_the_view_scores(model, processed) -> None:
    """attn_a, cos_a and the two normalisation flags decide each view's score (which
    rej_thresh compares): each of them changes the scores."""
    base = dict(use_most_central_as_reference=False, use_anchor_relative_score=False, rej_thresh=0.0)
    scores = {name: model.infer(processed, **{**base, **change})["scores"] for name, change in {
        "base": {}, "attn_a": {"attn_a": 1.0}, "cos_a": {"cos_a": 1.0},
        "relative": {"use_anchor_relative_score": True}, "central": {"use_most_central_as_reference": True},
    }.items()}
    for name in ("attn_a", "cos_a", "relative", "central"):
        assert not np.allclose(scores[name].scores, scores["base"].scores), name
    np.testing.assert_allclose(scores["attn_a"].scores - scores["base"].scores, 0.5 * scores["base"].attention, atol=1e-6)
    np.testing.assert_allclose(scores["cos_a"].scores - scores["base"].scores, 0.5 * scores["base"].cosine, atol=1e-6)
    assert scores["relative"].scores[0] == pytest.approx(1.0)  # relative to the anchor (view 0 here)
    assert scores["central"].anchor != 0  # the most central view of this set is not the first
