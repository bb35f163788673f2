"""MASt3R's TSDF depth refinement as a scene optimizer that runs after any model or optimizer.

Every view's depth map is a truncated signed distance vote on the others: a 3D point X is
in front of view b's surface by ``sdf_b(X) = depth_b[pixel_b(X)] - z_b(X)`` (the depth view b
saw along X's ray minus X's own depth in view b).  Votes further than ``TSDF_thresh`` behind
the seen surface are dropped (X is hidden from b), the rest are clipped below at
``-TSDF_thresh`` and averaged with weights ``exp(confidence_b)``.  Each pixel's depth is then
replaced by the depth along its ray, among ``num_samples`` random candidates drawn from
N(depth - TSDF_thresh, TSDF_thresh^2), whose vote is closest to zero: the point where the
views agree the surface lies.  This is MASt3R's ``TSDFPostProcess`` (one iteration, 1000
samples, all views voting, the refined view itself included, as there).

Differences from the reference, all on inputs it does not handle: points behind a camera
(z <= 0), non-positive candidate depths and pixels with a non-finite or non-positive depth
neither vote nor are chosen; a pixel no valid vote reaches keeps its depth (the reference
takes its first random candidate); confidence weights are ``exp(conf - max conf)`` (the same
weighted mean, without float32 overflow above conf ~ 88).

``subsample`` is the reference's anchor grid (its sparse alignment holds one depth per
``subsample`` x ``subsample`` block and densifies each pixel as anchor depth x its relative
offset): the vote runs at each block's centre pixel and every pixel of the block is scaled by
its anchor's refined/original depth ratio.  ``subsample=1`` refines every pixel on its own,
exactly the reference's per-pixel search; larger values cut the cost by subsample^2.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import SceneFromViewsError
from ..core.options import option
from ..geometry.camera import unproject_depth
from .base import OptimizerOptions, SceneOptimizerBase, SceneOptimizerInput, SceneOptimizerOutput


class TsdfInputError(SceneFromViewsError, ValueError):
    """The reconstruction handed to the TSDF refinement is missing or inconsistent."""


@dataclass(frozen=True)
class TsdfOptions(OptimizerOptions):
    """The options of `TsdfRefinement` (ROS: ``optimizer.<name>``)."""

    TSDF_thresh: float = option(
        0.0, "Truncation distance of the signed distance vote and spread of the depth search, in the scene's units "
        "(metres only for metric models, otherwise the model's own scale); 0 = no TSDF refinement (depths pass "
        "through unchanged), as in MASt3R. Around 1% of the scene depth is a useful start.",
        unit="scene units", low=0.0, kind=float,
    )
    subsample: int = option(
        8, "Anchor grid: the vote runs at the centre of each subsample x subsample block and the whole block is "
        "rescaled by its anchor's refinement (MASt3R's densification); 1 = refine every pixel on its own.",
        unit="pixels", low=1, high=256,
    )
    num_samples: int = option(
        1000, "Random candidate depths per pixel (MASt3R: 1000); more finds the zero crossing more precisely.",
        unit="samples", low=1, high=100_000,
    )
    seed: int = option(0, "Seed of the candidate depths, so that a refinement is reproducible.", low=0, high=2**31 - 1)
    batch_size: int = option(
        1 << 22, "Point-view evaluations per vectorised batch: bounds memory (about 100 bytes each) without "
        "changing any output on the CPU (on CUDA the random candidates may differ with it).", unit="evaluations", low=1 << 10, high=1 << 30,
    )


@dataclass
class _Views:
    """Every view's depth, confidence weight and camera as torch tensors, padded to one size."""

    depth: torch.Tensor  # (N*Hm*Wm,) flattened, padded depth
    valid: torch.Tensor  # (N*Hm*Wm,) finite, positive and inside the view
    weight: torch.Tensor  # (N*Hm*Wm,) exp(conf - max conf); 0 where invalid or conf is not finite
    to_camera: torch.Tensor  # (N, 3, 4) world-to-camera [R|t]
    to_world: torch.Tensor  # (N, 3, 4) camera-to-world [R|t]
    focal: torch.Tensor  # (N, 2) fx, fy
    centre: torch.Tensor  # (N, 2) cx, cy
    size: torch.Tensor  # (N, 2) H, W
    padded: tuple[int, int]  # Hm, Wm


class TsdfRefinement(SceneOptimizerBase):
    """Refines an existing reconstruction's depths by MASt3R's TSDF vote; poses, intrinsics and
    confidences pass through.  It needs `optimizer_input.result` (a model's or a previous
    optimizer's reconstruction): pairwise predictions alone carry no common frame to vote in."""

    name = "tsdf_refinement"
    options_class = TsdfOptions
    options: TsdfOptions

    def optimize(self, optimizer_input: SceneOptimizerInput) -> SceneOptimizerOutput:
        """Refined depths and the point clouds unprojected from them (world = view 0's frame)."""
        result = optimizer_input.result
        if result is None:
            raise TsdfInputError(
                "tsdf_refinement refines an existing reconstruction but the optimizer input has no result; pass it "
                "after a model (model.reconstruct(images, optimizer='tsdf_refinement')) or build the input with "
                "optimizer_input_from_result(result)"
            )
        depths = refine_depths(
            result.depth_predictions, result.camera_poses, result.intrinsics, result.confidences,
            self.options, device=optimizer_input.device,
        )
        poses = [np.asarray(pose) for pose in result.camera_poses]
        intrinsics = [np.asarray(k) for k in result.intrinsics]
        points = [unproject_depth(d[None], k[None], pose[None])[0] for d, k, pose in zip(depths, intrinsics, poses, strict=True)]
        return SceneOptimizerOutput(poses, depths, points, intrinsics, list(result.confidences))


def refine_depths(
    depths: list[np.ndarray],
    poses: list[np.ndarray],
    intrinsics: list[np.ndarray],
    confidences: list[np.ndarray],
    options: TsdfOptions | None = None,
    device: str | torch.device = "cpu",
) -> list[np.ndarray]:
    """Each view's z-depth (H, W) refined by the TSDF vote of all views (see the module doc).

    `poses` are 4x4 camera-to-world, `intrinsics` 3x3 in the depth maps' pixels (centres at
    integer coordinates), `confidences` (H, W) per view; depths and `TSDF_thresh` share units.
    """
    options = options or TsdfOptions()
    _check_inputs(depths, poses, intrinsics, confidences)
    originals = [np.asarray(d, dtype=np.float32) for d in depths]
    if options.TSDF_thresh <= 0:
        return [d.copy() for d in originals]
    views = _stack_views(originals, poses, intrinsics, confidences, torch.device(device))
    generator = torch.Generator(device=torch.device(device)).manual_seed(options.seed)
    refined = []
    for index, original in enumerate(originals):
        new = _refine_view(index, views, options, generator).cpu().numpy()
        refined.append(np.where(np.isfinite(original) & (original > 0), new, original).astype(np.float32))
    return refined


def _check_inputs(depths: list[np.ndarray], poses: list[np.ndarray], intrinsics: list[np.ndarray], confidences: list[np.ndarray]) -> None:
    counts = {"depth_predictions": len(depths), "camera_poses": len(poses), "intrinsics": len(intrinsics), "confidences": len(confidences)}
    if len(set(counts.values())) != 1:
        raise TsdfInputError(f"tsdf_refinement needs one entry per view in every list, got {counts}; pass a consistent reconstruction")
    if not depths:
        raise TsdfInputError("tsdf_refinement got a reconstruction without views; reconstruct at least one image first")
    for index, (depth, pose, k, conf) in enumerate(zip(depths, poses, intrinsics, confidences, strict=True)):
        depth, pose, k, conf = (np.asarray(a) for a in (depth, pose, k, conf))
        if depth.ndim != 2 or min(depth.shape) == 0:
            raise TsdfInputError(f"view {index}: depth must be a non-empty (H, W) map, got shape {depth.shape}")
        if conf.shape != depth.shape:
            raise TsdfInputError(f"view {index}: confidence shape {conf.shape} differs from depth shape {depth.shape}; pass per-pixel confidences")
        if pose.shape != (4, 4) or not np.isfinite(pose).all():
            raise TsdfInputError(f"view {index}: camera pose must be a finite 4x4 camera-to-world matrix, got shape {pose.shape}")
        if k.shape != (3, 3) or not np.isfinite(k).all() or k[0, 0] <= 0 or k[1, 1] <= 0:
            raise TsdfInputError(f"view {index}: intrinsics must be a finite 3x3 matrix with positive focal lengths, got {k.tolist()}")


def _stack_views(
    depths: list[np.ndarray], poses: list[np.ndarray], intrinsics: list[np.ndarray], confidences: list[np.ndarray], device: torch.device
) -> _Views:
    """Pad every view to the largest size so that one flat index reaches any view's pixel."""
    count = len(depths)
    height, width = max(d.shape[0] for d in depths), max(d.shape[1] for d in depths)
    depth = np.full((count, height, width), np.nan, dtype=np.float32)
    conf = np.full((count, height, width), -np.inf, dtype=np.float32)
    for index, (d, c) in enumerate(zip(depths, confidences, strict=True)):
        depth[index, : d.shape[0], : d.shape[1]] = d
        conf[index, : d.shape[0], : d.shape[1]] = np.nan_to_num(np.asarray(c, dtype=np.float32), nan=-np.inf, posinf=np.finfo(np.float32).max, neginf=-np.inf)
    valid = np.isfinite(depth) & (depth > 0)
    votes = valid & np.isfinite(conf)
    top = conf[votes].max() if votes.any() else 0.0
    weight = np.where(votes, np.exp(np.where(votes, conf - top, 0.0)), 0.0).astype(np.float32)
    to_world = np.stack([np.asarray(p, dtype=np.float32)[:3] for p in poses])
    rotation_t = np.swapaxes(to_world[:, :, :3], 1, 2)
    to_camera = np.concatenate([rotation_t, -rotation_t @ to_world[:, :, 3:]], axis=2)
    k = np.stack([np.asarray(m, dtype=np.float32) for m in intrinsics])

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), device=device)

    return _Views(
        depth=tensor(np.where(valid, depth, 1.0).reshape(-1)), valid=tensor(valid.reshape(-1)), weight=tensor(weight.reshape(-1)),
        to_camera=tensor(to_camera), to_world=tensor(to_world), focal=tensor(k[:, [0, 1], [0, 1]]), centre=tensor(k[:, :2, 2]),
        size=tensor(np.array([d.shape for d in depths], dtype=np.int64)), padded=(height, width),
    )


def _refine_view(index: int, views: _Views, options: TsdfOptions, generator: torch.Generator) -> torch.Tensor:
    """View `index`'s refined depth (H, W) where its depth is valid: the vote at its anchor
    pixels, spread over their blocks as refined/original depth ratios."""
    step, samples, thresh = options.subsample, options.num_samples, options.TSDF_thresh
    height, width = (int(s) for s in views.size[index])
    padded_h, padded_w = views.padded
    device = views.depth.device
    offset = index * padded_h * padded_w
    depth = views.depth[offset : offset + padded_h * padded_w].reshape(padded_h, padded_w)[:height, :width]
    # Anchors at the block centres, as MASt3R's grid; a view smaller than half a block gets one.
    rows = torch.arange(min(step // 2, height - 1), height, step, device=device)
    cols = torch.arange(min(step // 2, width - 1), width, step, device=device)
    anchor_v, anchor_u = (g.reshape(-1) for g in torch.meshgrid(rows, cols, indexing="ij"))
    anchor_flat = offset + anchor_v * padded_w + anchor_u
    anchor_depth, anchor_valid = views.depth[anchor_flat], views.valid[anchor_flat]
    # On the CPU generator, chunks of a multiple of 16 pixels draw the same candidates as one
    # whole-view draw (MASt3R's), so batch_size changes memory only.
    chunk = max(16, options.batch_size // (samples * views.size.shape[0]) // 16 * 16)
    refined = []
    for start in range(0, anchor_flat.numel(), chunk):
        part = slice(start, start + chunk)
        noise = torch.randn((anchor_flat[part].numel(), samples), generator=generator, device=device)
        found = _search(index, anchor_u[part], anchor_v[part], anchor_depth[part], noise, views, thresh)
        refined.append(torch.where(anchor_valid[part], found, anchor_depth[part]))
    new_depth = torch.cat(refined)
    if step == 1:
        return new_depth.reshape(height, width)
    ratio = torch.where(anchor_valid, new_depth / torch.where(anchor_valid, anchor_depth, 1.0), 1.0)
    block_v = torch.clamp(torch.arange(height, device=device) // step, max=rows.numel() - 1)
    block_u = torch.clamp(torch.arange(width, device=device) // step, max=cols.numel() - 1)
    return depth * ratio.reshape(rows.numel(), cols.numel())[block_v[:, None], block_u[None, :]]


def _search(index: int, u: torch.Tensor, v: torch.Tensor, depth: torch.Tensor, noise: torch.Tensor, views: _Views, thresh: float) -> torch.Tensor:
    """For P pixels of view `index` with depths (P,) and standard normal draws (P, S): the
    candidate depth along each ray whose TSDF vote is closest to zero (P,)."""
    candidates = depth[:, None] + (noise - 1.0) * thresh  # (P, S), N(depth - thresh, thresh^2)
    focal, centre = views.focal[index], views.centre[index]
    ray = torch.stack([(u - centre[0]) / focal[0], (v - centre[1]) / focal[1], torch.ones_like(depth)], dim=-1)  # (P, 3)
    camera = ray[:, None, :] * candidates[..., None]  # (P, S, 3)
    to_world = views.to_world[index]
    world = camera.reshape(-1, 3) @ to_world[:, :3].T + to_world[:, 3]  # (P*S, 3)
    vote, voted = _tsdf(world, views, thresh)
    score = torch.where(voted & (candidates.reshape(-1) > 0), vote.abs(), torch.inf).reshape(candidates.shape)
    best = torch.argmin(score, dim=-1, keepdim=True)
    # As the reference: leave pixels whose every candidate sits exactly at the truncation; also
    # those no vote reaches (the reference would take a random candidate there).
    keep = (score == thresh).all(dim=-1) | torch.isinf(score).all(dim=-1)
    return torch.where(keep, depth, torch.gather(candidates, -1, best)[:, 0])


def _tsdf(points: torch.Tensor, views: _Views, thresh: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Confidence-weighted truncated signed distance of world points (M, 3) over all views, and
    whether any view voted (M,)."""
    rotation, translation = views.to_camera[:, :, :3], views.to_camera[:, :, 3]
    camera = torch.einsum("nij,mj->nmi", rotation, points) + translation[:, None, :]  # (N, M, 3)
    z = camera[..., 2]
    u = torch.round(views.focal[:, 0, None] * camera[..., 0] / z + views.centre[:, 0, None])
    v = torch.round(views.focal[:, 1, None] * camera[..., 1] / z + views.centre[:, 1, None])
    height, width = views.size[:, 0, None], views.size[:, 1, None]
    inside = (z > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    padded_h, padded_w = views.padded
    base = torch.arange(views.size.shape[0], device=points.device)[:, None] * (padded_h * padded_w)
    flat = base + torch.where(inside, v, 0).long() * padded_w + torch.where(inside, u, 0).long()
    sdf = views.depth[flat] - z
    weight = torch.where(inside & (sdf >= -thresh), views.weight[flat], 0.0)
    total = weight.sum(dim=0)
    weighted = (weight * torch.where(weight > 0, sdf.clamp(min=-thresh), 0.0)).sum(dim=0)
    voted = total > 0
    return torch.where(voted, weighted / torch.where(voted, total, 1.0), 0.0), voted
