"""Place a reconstructed window in the map frame.

Every window comes back in its own frame (its first view's camera) and, for non-metric
models, its own scale.  The keyframes it shares with the previous window are already in the
map, and both reconstructions predict a dense point map on the same pixel grid of those
keyframes, so the same pixels give 3D-3D correspondences without any feature matching.  A
robust, confidence-weighted Sim(3) (SE(3) for metric models) fitted to them maps the window
into the map frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..core.options import Options, option
from ..core.result import SceneFromViewsResult
from ..geometry.camera import intrinsics_in_processed_pixels
from ..geometry.sim3 import apply_sim3, decompose_sim3, estimate_sim3_robust, transform_pose
from .keyframes import Keyframe


@dataclass(frozen=True)
class ChainConfig(Options):
    """Chaining settings (parameters ``chain.*``)."""

    prefix: ClassVar[str] = "chain."
    metric: bool = option(False, "Chain windows with SE(3) instead of Sim(3) (always on for metric models).")
    max_correspondences: int = option(
        8000, "Overlap pixels sampled to place a window (the cost is linear in it).", low=3, high=10_000_000,
    )
    drop_percentile: float = option(
        20.0, "Drop sampled pixels whose confidence (the lower of the two windows') is under this percentile "
        "of the sample, before the robust fit.", unit="percentile", low=0.0, high=99.0,
    )
    inlier_threshold: float = option(
        0.05, "RANSAC inlier distance relative to the point's distance from the camera (0.05 = 5 %).",
        low=1e-6, high=10.0,
    )
    min_correspondences: int = option(
        50, "A window with fewer valid overlap correspondences is rejected, not placed.", low=3, high=10_000_000,
    )
    min_inlier_ratio: float = option(
        0.3, "A window whose fit has a lower inlier ratio is rejected, not placed.", low=0.0, high=1.0,
    )
    seed: int = option(0, "Seed of the pixel sampling and RANSAC (reproducible maps).", low=0, high=2**31 - 1)


@dataclass
class OverlapReference:
    """A placed keyframe's dense geometry in the map frame, kept to anchor the next window."""

    points: np.ndarray  # HxWx3 float32, map frame
    confidence: np.ndarray  # HxW float32
    camera_center: np.ndarray  # 3, map frame


@dataclass
class ChainFit:
    """The window-to-map transform and how well it is supported."""

    transform: np.ndarray
    num_correspondences: int
    inlier_ratio: float
    rmse: float
    ok: bool
    reason: str = ""

    @property
    def scale(self) -> float:
        return decompose_sim3(self.transform)[0]


def _sample_grid(shape: tuple[int, int], u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Flat pixel indices of normalised coordinates (u, v) in [0, 1) on an HxW grid."""
    height, width = shape
    return np.minimum((v * height).astype(np.int64), height - 1) * width + np.minimum((u * width).astype(np.int64), width - 1)


def estimate_window_to_map(
    references: list[OverlapReference],
    window_points: list[np.ndarray],
    window_confidences: list[np.ndarray],
    config: ChainConfig,
) -> ChainFit:
    """Fit the window-to-map transform from the overlap keyframes' dense point maps.

    `references[i]` and `window_points[i]` / `window_confidences[i]` describe the same
    keyframe in the map and in the window.  Pixels are matched by normalised image position,
    so the two point maps may have different resolutions (e.g. after a model change).
    """
    rng = np.random.default_rng(config.seed)
    per_view = max(1, config.max_correspondences // max(1, len(references)))
    sources, targets, weights, norms = [], [], [], []
    for reference, points, confidence in zip(references, window_points, window_confidences, strict=True):
        u, v = rng.random(per_view), rng.random(per_view)
        ref_index = _sample_grid(reference.confidence.shape, u, v)
        win_index = _sample_grid(confidence.shape[:2], u, v)
        target = reference.points.reshape(-1, 3)[ref_index].astype(np.float64)
        source = points.reshape(-1, 3)[win_index].astype(np.float64)
        weight = np.minimum(reference.confidence.reshape(-1)[ref_index], confidence.reshape(-1)[win_index]).astype(np.float64)
        sources.append(source)
        targets.append(target)
        weights.append(weight)
        norms.append(np.linalg.norm(target - reference.camera_center, axis=1))
    source, target = np.concatenate(sources), np.concatenate(targets)
    weight, norm = np.concatenate(weights), np.concatenate(norms)
    valid = np.isfinite(source).all(1) & np.isfinite(target).all(1) & np.isfinite(weight) & (weight > 0) & (norm > 0)
    if valid.sum() and config.drop_percentile > 0:
        valid &= weight >= np.percentile(weight[valid], config.drop_percentile)
    count = int(valid.sum())
    if count < max(3, config.min_correspondences):
        return ChainFit(np.eye(4), count, 0.0, float("inf"), False, f"only {count} valid overlap correspondences")
    fit = estimate_sim3_robust(
        source[valid],
        target[valid],
        weights=weight[valid],
        with_scale=not config.metric,
        residual_scale=norm[valid],
        inlier_threshold=config.inlier_threshold,
        rng=rng,
    )
    ok = fit.support >= config.min_inlier_ratio and np.isfinite(fit.transform).all()
    reason = "" if ok else f"inlier ratio {fit.support:.2f} < {config.min_inlier_ratio} (inliers within {config.inlier_threshold:g} of depth)"
    return ChainFit(fit.transform, count, fit.support, fit.rmse, bool(ok), reason)


@dataclass
class WindowInMap:
    """A reconstructed window moved into the map frame (per view lists, window order).

    `depths` and `points` are in map units (scaled by the window's Sim(3) scale);
    `intrinsics` are in the pixels of `images` (the model's processed images); `masks` are
    the pixels the model keeps (all of them when it gives no masks).
    `new_views` are the positions of the keyframes this window added to the map.
    `timings` (seconds): reconstruct_s, fit_s (Sim(3) estimate), transform_s (moving the
    outputs), chain_s (fit + transform), integrate_s (adding to the global map).
    """

    index: int
    keyframes: list[Keyframe]
    poses: list[np.ndarray]
    depths: list[np.ndarray]
    points: list[np.ndarray]
    confidences: list[np.ndarray]
    images: list[np.ndarray]
    intrinsics: list[np.ndarray]
    masks: list[np.ndarray]
    transform: np.ndarray
    fit: ChainFit | None
    new_views: list[int]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def scale(self) -> float:
        return decompose_sim3(self.transform)[0]


def result_views(result: SceneFromViewsResult, num_inputs: int) -> list[int]:
    """Input index of each view in `result` (models may reject views and return survivors)."""
    if result.survivor_indices is not None:
        views = [int(i) for i in result.survivor_indices]
    else:
        views = list(range(result.num_views))
    if len(views) != result.num_views or any(not 0 <= i < num_inputs for i in views):
        raise ValueError(
            f"reconstruction returned {result.num_views} views for {num_inputs} inputs "
            f"(survivor_indices={result.survivor_indices}); a backend must return one view per input or say which survived"
        )
    return views


def usable_intrinsics(k: np.ndarray) -> bool:
    """A K that CameraInfo users (depth_image_proc) can divide by: finite, positive focal lengths."""
    return bool(np.isfinite(k).all() and k[0, 0] > 0 and k[1, 1] > 0)


def window_intrinsics(keyframes: list[Keyframe], result: SceneFromViewsResult) -> list[np.ndarray]:
    """Each view's K in the processed image's pixels: the model's, or where that is not finite
    and positive (a degenerate predicted field of view) the camera's own (CameraInfo,
    --intrinsics) mapped into the processed image with the model's preprocessing
    (extras "scales"/"offsets"); else the model's as it is (the node then publishes no depth)."""
    intrinsics = [np.asarray(k, np.float64) for k in result.intrinsics]
    scales, offsets = result.extras.get("scales"), result.extras.get("offsets")
    for view, (keyframe, k) in enumerate(zip(keyframes, intrinsics, strict=True)):
        known = keyframe.frame.intrinsics
        if usable_intrinsics(k) or known is None or scales is None or offsets is None or len(scales) != len(keyframes):
            continue
        intrinsics[view] = intrinsics_in_processed_pixels(known[None], np.asarray(scales)[view : view + 1], np.asarray(offsets)[view : view + 1])[0]
    return intrinsics


def move_to_map(
    index: int,
    keyframes: list[Keyframe],
    result: SceneFromViewsResult,
    transform: np.ndarray,
    fit: ChainFit | None,
    new_keyframe_ids: set[int],
) -> WindowInMap:
    """Apply the window-to-map `transform` to every per-view output of `result`.

    `keyframes` are the result's views in order (survivors only).
    """
    scale = decompose_sim3(transform)[0]
    transform32 = transform.astype(np.float32)
    masks = result.masks or [np.ones(np.shape(depth), bool) for depth in result.depth_predictions]
    return WindowInMap(
        index=index,
        keyframes=keyframes,
        poses=[transform_pose(transform, np.asarray(pose, np.float64)) for pose in result.camera_poses],
        depths=[np.asarray(depth, np.float32) * np.float32(scale) for depth in result.depth_predictions],
        points=[apply_sim3(transform32, np.asarray(points, np.float32)) for points in result.point_clouds],
        confidences=[np.asarray(confidence, np.float32) for confidence in result.confidences],
        images=list(result.processed_images),
        intrinsics=window_intrinsics(keyframes, result),
        masks=[np.asarray(mask, bool) for mask in masks],
        transform=transform,
        fit=fit,
        new_views=[i for i, keyframe in enumerate(keyframes) if keyframe.keyframe_id in new_keyframe_ids],
    )
