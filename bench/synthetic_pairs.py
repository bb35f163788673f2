"""Synthetic pairwise predictions with ground truth, for testing and benchmarking scene optimizers.

Cameras stand inside a textured box room and turn around; a simulated pairwise model gives, for
every ordered pair (i, j), both views' points in camera i's frame at a random scale of the pair's
own, with 1 % multiplicative depth noise and a few % outlier pixels (depth off by a random factor,
with a low confidence), as DUSt3R's output looks.  Seeded: the same arguments give the same data.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from scene_from_views_ros.optimizers.base import PairPrediction, SceneOptimizerInput

ROOM_LOW = np.array([-3.0, -2.0, -3.5])
ROOM_HIGH = np.array([3.5, 1.5, 3.0])


@dataclass
class SyntheticScene:
    """The optimizer input and the truth: poses (N, 4, 4) camera-to-world in view 0's frame
    (view 0 = identity, the unit of the room), focals (N,), depths (N, H, W)."""

    optimizer_input: SceneOptimizerInput
    camera_poses: np.ndarray
    focals: np.ndarray
    depths: np.ndarray
    pair_scales: np.ndarray


def _render(pose: np.ndarray, height: int, width: int, focal: float) -> np.ndarray:
    """Camera-frame points (H, W, 3) of the room's walls seen through pixel centres (principal point = centre)."""
    u, v = np.meshgrid(np.arange(width) - width / 2.0, np.arange(height) - height / 2.0)
    rays = np.stack([u / focal, v / focal, np.ones_like(u)], axis=-1)
    directions = rays @ pose[:3, :3].T
    with np.errstate(divide="ignore"):
        bound = np.where(directions > 0, ROOM_HIGH, ROOM_LOW)
        exits = np.where(directions != 0, (bound - pose[:3, 3]) / directions, np.inf)
    return rays * exits.min(axis=-1, keepdims=True)


def _texture(world: np.ndarray) -> np.ndarray:
    """A checkerboard-and-gradient colouring of world points, as uint8 RGB."""
    cells = np.floor(world * 2.0).astype(np.int64).sum(axis=-1) % 2
    shade = (world - ROOM_LOW) / (ROOM_HIGH - ROOM_LOW)
    return np.clip(255 * (0.3 + 0.5 * shade * (0.5 + 0.5 * cells[..., None])), 0, 255).astype(np.uint8)


@dataclass
class RenderedViews:
    """True views of the room: camera-to-room poses, the same in view 0's frame, focals, camera-frame
    points (N, H, W, 3), depths and textured images."""

    world_poses: np.ndarray
    camera_poses: np.ndarray
    focals: np.ndarray
    points: np.ndarray
    depths: np.ndarray
    images: list[np.ndarray]


def render_views(num_views: int, height: int, width: int, focal: float, rng: np.random.Generator) -> RenderedViews:
    """Cameras turning ~25 degrees apart at random spots of the room, and what they see."""
    poses = []
    for k in range(num_views):
        pose = np.eye(4)
        angles = [rng.uniform(-0.1, 0.1), 0.45 * k + rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05)]
        pose[:3, :3] = Rotation.from_euler("xyz", angles).as_matrix()
        pose[:3, 3] = rng.uniform(-0.6, 0.6, 3)
        poses.append(pose)
    world_from_0 = np.linalg.inv(poses[0])
    clean = np.stack([_render(pose, height, width, focal) for pose in poses])
    images = [_texture(points @ pose[:3, :3].T + pose[:3, 3]) for points, pose in zip(clean, poses, strict=True)]
    return RenderedViews(np.stack(poses), np.stack([world_from_0 @ pose for pose in poses]), np.full(num_views, float(focal)),
                         clean, clean[..., 2].copy(), images)


def make_scene(
    num_views: int = 5,
    height: int = 48,
    width: int = 64,
    focal: float = 56.0,
    depth_noise: float = 0.01,
    outlier_fraction: float = 0.03,
    seed: int = 0,
    pairs: list[tuple[int, int]] | None = None,
) -> SyntheticScene:
    """A room seen by `num_views` cameras turning ~25 degrees apart; every ordered pair unless `pairs`."""
    rng = np.random.default_rng(seed)
    views = render_views(num_views, height, width, focal, rng)
    poses, clean = views.world_poses, views.points

    def observe(view: int) -> tuple[np.ndarray, np.ndarray]:
        """One noisy prediction of a view's own-frame points, and its confidences."""
        factor = 1.0 + depth_noise * rng.standard_normal((height, width))
        outliers = rng.random((height, width)) < outlier_fraction
        factor[outliers] = rng.uniform(0.6, 1.6, int(outliers.sum()))
        conf = 1.0 + np.exp(rng.normal(1.8, 0.3, (height, width)))
        conf[outliers] = 1.0 + np.exp(rng.normal(-0.5, 0.3, int(outliers.sum())))
        return clean[view] * factor[..., None], conf.astype(np.float32)

    chosen = pairs if pairs is not None else list(itertools.permutations(range(num_views), 2))
    predictions, scales = [], []
    for i, j in chosen:
        scale = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        own, conf_i = observe(i)
        other, conf_j = observe(j)
        j_to_i = np.linalg.inv(poses[i]) @ poses[j]
        other_in_i = other @ j_to_i[:3, :3].T + j_to_i[:3, 3]
        predictions.append(PairPrediction(
            i, j, (scale * own).astype(np.float32), conf_i, (scale * other_in_i).astype(np.float32), conf_j,
        ))
        scales.append(scale)
    shapes = np.tile(np.array([height, width], dtype=np.int32), (num_views, 1))
    optimizer_input = SceneOptimizerInput(predictions, views.images, shapes)
    return SyntheticScene(optimizer_input, views.camera_poses, views.focals, views.depths, np.array(scales))


def sim3_align(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares (s, R, t) with s R source + t ~ target, for (M, 3) point sets (Umeyama)."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    a, b = source - mu_s, target - mu_t
    u, singular, vt = np.linalg.svd(b.T @ a / len(a))
    sign = np.ones(3)
    sign[2] = np.sign(np.linalg.det(u @ vt)) or 1.0
    rotation = u @ np.diag(sign) @ vt
    scale = float((singular * sign).sum() / (a**2).sum(axis=1).mean())
    return scale, rotation, mu_t - scale * rotation @ mu_s


def pose_errors(estimated: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Camera ATE after Sim(3) alignment (fraction of the cameras' spread) and mean relative rotation error (deg)."""
    scale, rotation, translation = sim3_align(estimated[:, :3, 3], truth[:, :3, 3])
    moved = scale * estimated[:, :3, 3] @ rotation.T + translation
    spread = float(np.linalg.norm(truth[:, :3, 3] - truth[:, :3, 3].mean(0), axis=1).mean())
    ate = float(np.sqrt(np.mean(np.sum((moved - truth[:, :3, 3]) ** 2, axis=1)))) / max(spread, 1e-12)
    errors = []
    for a, b in itertools.combinations(range(len(truth)), 2):
        rel_est = estimated[a, :3, :3].T @ estimated[b, :3, :3]
        rel_true = truth[a, :3, :3].T @ truth[b, :3, :3]
        cos = (np.trace(rel_est.T @ rel_true) - 1.0) / 2.0
        errors.append(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    return {"ate": ate, "rotation_deg": float(np.mean(errors)) if errors else 0.0}


def depth_abs_rel(estimated: list[np.ndarray], truth: np.ndarray) -> float:
    """Mean |d - d*| / d* after one median scale over all views (the scene's scale is free)."""
    est = np.stack([np.asarray(d, dtype=np.float64) for d in estimated])
    scale = np.median(truth / est)
    return float(np.mean(np.abs(scale * est - truth) / truth))
