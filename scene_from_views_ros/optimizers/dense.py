"""Dense scene optimizer: DUSt3R's global alignment of pairwise point maps, our implementation.

Every view gets a depth map (log-parametrised), a camera-to-world pose (unit quaternion and a
signed-log translation), a focal length (log, divided by 20 as the reference so that Adam's
step on it is small) and optionally a principal point; every pair prediction gets a
similarity transform into the world.  The loss is the reference's: for each pair (i, j) and
each pixel, the distance between the view's world point (unprojected from its depth) and the
pair's point moved by the pair's similarity, weighted by log(confidence), summed and divided
by the total pixel count of the i (resp. j) side.  The mean log pair scale is pinned to
log(0.5) (the reference's `norm_pw_scale`) so that the world cannot shrink to a point.  Adam
(betas 0.9, 0.9) runs `niter` steps with a linear or cosine decay from `lr` to `lr_min`.

Faster than the reference because pairs of equal shapes are stacked and the loss and its
gradient are one fused pass (`_AlignmentLoss`, closed-form backward, structure-of-arrays
layout) instead of autograd's chain of per-op kernels and saved intermediates.  Memory is linear
in the number of pairs: one float32 stacked copy of the inputs, and during a step one residual
of the same size per stack (the reference keeps several autograd intermediates of that size).

Differences from the reference, on purpose:

* the pair adaptors (`allow_pw_adaptors`, off by default in the reference) are not offered;
* negative or zero depths of the initialisation (random-weight models) are floored to a small
  positive depth instead of becoming NaN parameters; confidence weights are floored at 0;
* the output is expressed in view 0's camera frame, at the scale of view 0's most confident
  pair prediction (the reference leaves it in the optimizer's arbitrary frame at scale 0.5);
* `init="none"` is the reference's random start, drawn from a seeded generator (`seed`).

Known intrinsics (`SceneOptimizerInput.known_intrinsics`) are the reference's preset focals and
principal points: they replace the start's and stay fixed (one focal per view, the mean of fx
and fy), and the two-view shortcut, which estimates its own focals, is not taken.  Known poses
(`known_poses`, the reference's preset poses) likewise: the start is moved into their frame
(the Sim(3) that takes its view 0 onto theirs, scaled by the median ratio of the distances to
view 0), the poses stay fixed, the pair scales are free (the poses fix the scale), and the
output is in the frame and units of the given poses.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
from scipy.spatial.transform import Rotation

from ..core.errors import InvalidOptionError
from ..core.options import option
from ..geometry.camera import quaternion_to_matrix, unproject_depth
from ..geometry.pair_chain import chain_pairs, check_pair_predictions, check_pairs_connected, estimate_focal, view_confidences
from ..geometry.sim3 import invert_sim3, umeyama
from .base import OptimizerOptions, PairPrediction, SceneOptimizerBase, SceneOptimizerInput, SceneOptimizerOutput, known_intrinsics, known_poses

FOCAL_BREAK = 20.0  # focal parameter = 20 log f (reference `focal_break`)
PP_SCALE = 10.0  # principal point = image centre + 10 * parameter (reference)
BASE_SCALE = 0.5  # the geometric mean of the pair scales is pinned here (reference `base_scale`)
BETAS = (0.9, 0.9)  # Adam's betas (reference)
_CONF_TRANSFORMS = ("log", "sqrt", "m1", "none")


@dataclass(frozen=True)
class DenseOptimizerOptions(OptimizerOptions):
    """Options of the dense scene optimizer (DUSt3R global alignment)."""

    init: str = option(
        "mst", "Starting point: mst (the pairs chained along the most confident spanning tree, as the reference's "
        "init='mst') or none (the reference's random start, seeded by seed).", choices=("mst", "none"),
    )
    niter: int = option(300, "Adam iterations; 0 returns the initialisation.", unit="iterations", low=0, high=100000)
    schedule: str = option("linear", "Learning-rate decay from lr to lr_min over niter.", choices=("linear", "cosine"))
    lr: float = option(0.01, "Initial Adam learning rate.", low=1e-8, high=10.0)
    lr_min: float = option(1e-6, "Final learning rate of the schedule.", low=0.0, high=10.0)
    min_conf_thr: float = option(
        3.0, "Absolute confidence (DUSt3R's is 1 + exp(x) >= 1) under which pixels are left out of the PnP pose "
        "estimates (mst init's fallback, the two-view shortcut), as the reference's get_masks(); with "
        "clean_depth, occluded pixels get confidence 0, i.e. fall under it.", low=0.0, high=1e6,
    )
    optimize_pp: bool = option(False, "Also optimise the principal points (otherwise fixed at the image centre).")
    conf_weight: str = option(
        "log", "Pixel weight from the confidence c: log (reference), sqrt, m1 (c - 1) or none (c).", choices=_CONF_TRANSFORMS,
    )
    loss: str = option("l1", "Point distance: l1 (Euclidean norm, reference) or l2 (its square).", choices=("l1", "l2"))
    clean_depth: bool = option(
        False, "After optimising, set to 0 the confidence of pixels that lie in front of another view's depth map "
        "and are less confident than it (the reference's clean_pointcloud).",
    )
    seed: int = option(0, "Seed of the random start of init=none.", low=0, high=2**31 - 1)


@dataclass
class DenseState:
    """Parameters of the alignment in plain numbers (world frame of the optimizer).

    `camera_poses` (N, 4, 4) camera-to-world, `focals` (N,), `principal_points` (N, 2) in
    pixels, `depths` one (H, W) map per view, `pair_transforms` (E, 4, 4) similarity matrices
    [[s R, t], [0, 1]] taking each pair prediction into the world.
    """

    camera_poses: np.ndarray
    focals: np.ndarray
    principal_points: np.ndarray
    depths: list[np.ndarray]
    pair_transforms: np.ndarray


@dataclass
class DenseRunInfo:
    """What the last `optimize` call did: loss before and after, per-iteration losses, time."""

    initial_loss: float = float("nan")
    final_loss: float = float("nan")
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    two_view_shortcut: bool = False


# --------------------------------------------------------------------------- validation


def _check_input(optimizer_input: SceneOptimizerInput) -> list[tuple[int, int]]:
    """Each view's (H, W), after checking indices, shapes (against true_shapes too) and
    finiteness of every pair, and that the pairs connect every view."""
    pairs = optimizer_input.pair_predictions
    num_views = optimizer_input.num_views
    true_shapes = np.asarray(optimizer_input.true_shapes)
    if true_shapes.shape != (num_views, 2):
        raise InvalidOptionError(
            f"true_shapes has shape {true_shapes.shape}: expected ({num_views}, 2), one [H, W] per view of `images`"
        )
    seen = check_pair_predictions(pairs, num_views)
    for view, shape in enumerate(seen):
        if shape is not None and shape != tuple(int(v) for v in true_shapes[view]):
            raise InvalidOptionError(
                f"view {view} is {shape[0]}x{shape[1]} in the pairs but true_shapes[{view}] = {true_shapes[view].tolist()}; "
                "pass the shapes of the images the model saw"
            )
    for pair in pairs:
        for points, conf, name in ((pair.pts3d_i, pair.conf_i, "pts3d_i"), (pair.pts3d_j_in_i, pair.conf_j, "pts3d_j_in_i")):
            if not (np.isfinite(points).all() and np.isfinite(conf).all()):
                raise InvalidOptionError(
                    f"pair ({pair.i}, {pair.j}): {name} or its confidences contain NaN or infinity; check the model's output "
                    "(e.g. half precision overflow) before aligning"
                )
    missing = [view for view, shape in enumerate(seen) if shape is None]
    if missing:
        raise InvalidOptionError(f"views {missing} appear in no pair: every view needs at least one pair prediction")
    check_pairs_connected(((pair.i, pair.j) for pair in pairs), num_views)
    return [shape for shape in seen if shape is not None]


def _check_state(state: DenseState, shapes: list[tuple[int, int]], num_edges: int) -> None:
    """Raise unless a given initial state fits the input (views, pairs, shapes, finite values)."""
    expected = {
        "camera_poses": (len(shapes), 4, 4), "focals": (len(shapes),), "principal_points": (len(shapes), 2),
        "pair_transforms": (num_edges, 4, 4),
    }
    for name, shape in expected.items():
        value = np.asarray(getattr(state, name))
        if value.shape != shape or not np.isfinite(value).all():
            raise InvalidOptionError(
                f"initial_state.{name} has shape {value.shape}: expected finite values of shape {shape}; build it with "
                "initial_state() on the same input"
            )
    depth_shapes = [np.shape(d) for d in state.depths]
    if depth_shapes != shapes:
        raise InvalidOptionError(f"initial_state.depths have shapes {depth_shapes}: expected {shapes}, one per view")
    if not (np.all(np.asarray(state.focals) > 0) and np.all(np.linalg.det(np.asarray(state.pair_transforms)[:, :3, :3]) > 0)):
        raise InvalidOptionError("initial_state needs positive focals and pair transforms of positive scale (no reflections)")


# --------------------------------------------------------------------------- small maths


def _signed_expm1(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(torch.abs(x))


def _signed_log1p(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def _rotation_to_quat(rotation: np.ndarray) -> np.ndarray:
    return Rotation.from_matrix(np.asarray(rotation, dtype=np.float64)).as_quat()  # x, y, z, w


def _conf_weight(conf: np.ndarray, mode: str) -> np.ndarray:
    """Pixel weights from confidences (reference `get_conf_trf`), floored at 0."""
    conf = np.asarray(conf, dtype=np.float64)
    if mode == "log":
        weight = np.log(np.maximum(conf, 1e-30))
    elif mode == "sqrt":
        weight = np.sqrt(np.maximum(conf, 0.0))
    elif mode == "m1":
        weight = conf - 1.0
    else:
        weight = conf
    return np.maximum(weight, 0.0).astype(np.float32)


def _schedule(step: int, niter: int, lr: float, lr_min: float, kind: str) -> float:
    t = step / niter
    if kind == "cosine":
        return lr_min + (lr - lr_min) * (1.0 + np.cos(t * np.pi)) / 2.0
    return lr + (lr_min - lr) * t


# --------------------------------------------------------------------------- the problem


@dataclass
class _Side:
    """One side (i or j) of the pairs of one shape, stacked in structure-of-arrays layout.

    `pred` (E_g, 3, P) and `weight` (E_g, P) of the pairs `edges`, whose view on this side is
    `slot` in view group `group`.  The pairs are sorted by slot; when every view of the group
    appears `repeat` times in a row, the view's points broadcast instead of being gathered.
    """

    edges: torch.Tensor
    group: int
    slot: torch.Tensor
    repeat: int
    pred: torch.Tensor
    weight: torch.Tensor


@dataclass
class _ViewGroup:
    """Views of one shape: their indices and the pixel coordinates (2, H*W) of that shape."""

    shape: tuple[int, int]
    views: torch.Tensor
    pixels: torch.Tensor


@dataclass
class _Problem:
    shapes: list[tuple[int, int]]
    view_groups: list[_ViewGroup]
    sides_i: list[_Side]
    sides_j: list[_Side]
    area_i: float
    area_j: float
    num_edges: int
    device: torch.device


def _build_sides(points: list[np.ndarray], confs: list[np.ndarray], views: list[int], view_slot: list[tuple[int, int]],
                 group_sizes: list[int], conf_mode: str, device: torch.device) -> list[_Side]:
    """Stack one side of every pair, grouped by the view group of that side's view."""
    sides = []
    groups = [view_slot[v][0] for v in views]
    for group in dict.fromkeys(groups):
        members = sorted((e for e, g in enumerate(groups) if g == group), key=lambda e: view_slot[views[e]][1])
        slots = [view_slot[views[e]][1] for e in members]
        count = len(members) // group_sizes[group]
        regular = count * group_sizes[group] == len(members) and slots == [s for s in range(group_sizes[group]) for _ in range(count)]
        pred = np.stack([np.asarray(points[e], dtype=np.float32).reshape(-1, 3).T for e in members])
        weight = np.stack([_conf_weight(confs[e], conf_mode).reshape(-1) for e in members])
        sides.append(_Side(
            edges=torch.tensor(members, device=device), group=group, slot=torch.tensor(slots, device=device),
            repeat=count if regular else 0, pred=torch.from_numpy(np.ascontiguousarray(pred)).to(device),
            weight=torch.from_numpy(weight).to(device),
        ))
    return sides


def _build_problem(pairs: list[PairPrediction], shapes: list[tuple[int, int]], conf_mode: str, device: torch.device) -> _Problem:
    """Stack views and pairs of equal shapes on `device` (float32)."""
    view_groups: list[_ViewGroup] = []
    view_slot: list[tuple[int, int]] = [(0, 0)] * len(shapes)
    for shape in dict.fromkeys(shapes):
        views = [v for v, s in enumerate(shapes) if s == shape]
        for slot, view in enumerate(views):
            view_slot[view] = (len(view_groups), slot)
        height, width = shape
        v, u = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij")
        pixels = torch.stack([u.reshape(-1), v.reshape(-1)]).to(device)
        view_groups.append(_ViewGroup(shape, torch.tensor(views, device=device), pixels))
    sizes = [len(group.views) for group in view_groups]
    area = [h * w for h, w in shapes]
    return _Problem(
        shapes=shapes, view_groups=view_groups,
        sides_i=_build_sides([p.pts3d_i for p in pairs], [p.conf_i for p in pairs], [p.i for p in pairs], view_slot, sizes, conf_mode, device),
        sides_j=_build_sides([p.pts3d_j_in_i for p in pairs], [p.conf_j for p in pairs], [p.j for p in pairs], view_slot, sizes,
                             conf_mode, device),
        area_i=float(sum(area[p.i] for p in pairs)), area_j=float(sum(area[p.j] for p in pairs)),
        num_edges=len(pairs), device=device,
    )


class _Parameters:
    """The optimised tensors, in the reference's parametrisation (so that Adam behaves alike)."""

    def __init__(self, problem: _Problem, state: DenseState, optimize_pp: bool, pin_scale: bool = True) -> None:
        device = problem.device
        self.pin_scale = pin_scale

        def tensor(array: np.ndarray, grad: bool = True) -> torch.Tensor:
            return torch.tensor(np.asarray(array), dtype=torch.float32, device=device, requires_grad=grad)

        poses = np.asarray(state.camera_poses, dtype=np.float64)
        self.quat = tensor(_rotation_to_quat(poses[:, :3, :3]))
        self.trans = tensor(_signed_log1p(poses[:, :3, 3]))
        self.log_focal = tensor(FOCAL_BREAK * np.log(np.asarray(state.focals, dtype=np.float64)))
        centres = np.array([(w / 2.0, h / 2.0) for h, w in problem.shapes])
        self.centres = tensor(centres, grad=False)
        self.pp = tensor((np.asarray(state.principal_points, dtype=np.float64) - centres) / PP_SCALE, grad=optimize_pp)
        floor = 1e-6 * max(float(np.median(np.abs(np.concatenate([d.ravel() for d in state.depths])))), 1e-12)
        self.log_depth = [
            tensor(np.log(np.maximum(np.stack([state.depths[int(v)] for v in group.views.tolist()]).reshape(len(group.views), -1), floor)))
            for group in problem.view_groups
        ]
        pw = np.asarray(state.pair_transforms, dtype=np.float64)
        scale = np.cbrt(np.linalg.det(pw[:, :3, :3]))
        self.pw_quat = tensor(_rotation_to_quat(pw[:, :3, :3] / scale[:, None, None]))
        self.pw_trans = tensor(_signed_log1p(pw[:, :3, 3] / scale[:, None]))
        self.pw_log_scale = tensor(np.log(scale))

    def trainable(self) -> list[torch.Tensor]:
        return [t for t in (self.quat, self.trans, self.log_focal, self.pp, *self.log_depth, self.pw_quat, self.pw_trans, self.pw_log_scale) if t.requires_grad]

    def camera(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rotations (N, 3, 3), translations (N, 3), focals (N,), principal points (N, 2)."""
        return (quaternion_to_matrix(self.quat), _signed_expm1(self.trans), torch.exp(self.log_focal / FOCAL_BREAK),
                self.centres + PP_SCALE * self.pp)

    def pair_similarities(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per pair, s R (E, 3, 3) and s t (E, 3), with the mean log scale pinned to log(BASE_SCALE)
        (unless the poses are known: then they fix the scale)."""
        log_scale = self.pw_log_scale - self.pw_log_scale.mean() + np.log(BASE_SCALE) if self.pin_scale else self.pw_log_scale
        scale = torch.exp(log_scale)
        return scale[:, None, None] * quaternion_to_matrix(self.pw_quat), scale[:, None] * _signed_expm1(self.pw_trans)

    def world_points(self, problem: _Problem) -> list[torch.Tensor]:
        """Per view group, the views' world points (n_g, 3, H*W)."""
        rotation, translation, focal, pp = self.camera()
        out = []
        for group, log_depth in zip(problem.view_groups, self.log_depth, strict=True):
            views = group.views
            depth = torch.exp(log_depth)
            rays = (group.pixels[None] - pp[views, :, None]) / focal[views, None, None]  # (n, 2, P)
            camera = torch.cat([rays * depth[:, None], depth[:, None]], dim=1)
            out.append(torch.baddbmm(translation[views, :, None], rotation[views], camera))
        return out


class _AlignmentLoss(torch.autograd.Function):
    """sum_p w_p dist(world_p, A pred_p + b) over a stack of pairs, with a closed-form backward.

    Autograd would save and replay every elementwise step of the distance; here one pass
    keeps only the residual's weighted direction, and the gradients of the view points, of
    A and of b are three reductions of it.  Structure-of-arrays (E, 3, P) tensors keep every
    elementwise step contiguous (the norm over a trailing axis of 3 is several times slower).
    """

    @staticmethod
    def forward(ctx: Any, world: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor, pred: torch.Tensor,
                weight: torch.Tensor, slot: torch.Tensor, repeat: int, squared: bool) -> torch.Tensor:
        residual = torch.baddbmm(offset[:, :, None], matrix, pred)  # aligned prediction, then minus the target
        if repeat:
            residual.view(world.shape[0], repeat, *world.shape[1:]).sub_(world[:, None])
        else:
            residual.sub_(world.index_select(0, slot))
        x, y, z = residual.unbind(1)
        squared_norm = torch.addcmul(torch.addcmul(x * x, y, y), z, z)  # (E, P), no (E, 3, P) temporary
        if squared:
            loss = torch.dot(squared_norm.view(-1), weight.view(-1))
            direction = residual.mul_((2.0 * weight)[:, None])
        else:
            norm = squared_norm.sqrt_()
            loss = torch.dot(norm.view(-1), weight.view(-1))
            direction = residual.mul_(weight.div(norm.clamp_min_(1e-12))[:, None])
        ctx.save_for_backward(direction, pred, slot)
        ctx.repeat, ctx.num_views = repeat, world.shape[0]
        return loss

    @staticmethod
    def backward(ctx: Any, *grad_outputs: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (grad,) = grad_outputs
        direction, pred, slot = ctx.saved_tensors
        # The upstream gradient scales the three (small) results, not the (E, 3, P) direction.
        grad_matrix = torch.bmm(direction, pred.transpose(1, 2)).mul_(grad)
        grad_offset = direction.sum(dim=2).mul_(grad)
        if ctx.repeat:
            grad_world = direction.view(ctx.num_views, ctx.repeat, *direction.shape[1:]).sum(dim=1).mul_(-grad)
        else:
            grad_world = direction.new_zeros((ctx.num_views, *direction.shape[1:])).index_add_(0, slot, direction).mul_(-grad)
        return grad_world, grad_matrix, grad_offset, None, None, None, None, None


def _loss(problem: _Problem, params: _Parameters, squared: bool) -> torch.Tensor:
    """The reference's alignment loss: i-side sum / i-side area + j-side sum / j-side area."""
    world = params.world_points(problem)
    matrix, offset = params.pair_similarities()
    totals = []
    for sides in (problem.sides_i, problem.sides_j):
        total = torch.zeros((), device=problem.device)
        for side in sides:
            total = total + _AlignmentLoss.apply(
                world[side.group], matrix[side.edges], offset[side.edges], side.pred, side.weight, side.slot, side.repeat, squared,
            )
        totals.append(total)
    return totals[0] / problem.area_i + totals[1] / problem.area_j


def _state_of(problem: _Problem, params: _Parameters) -> DenseState:
    with torch.no_grad():
        rotation, translation, focal, pp = params.camera()
        matrix, offset = params.pair_similarities()
        poses = np.tile(np.eye(4), (len(problem.shapes), 1, 1))
        poses[:, :3, :3] = rotation.double().cpu().numpy()
        poses[:, :3, 3] = translation.double().cpu().numpy()
        pw = np.tile(np.eye(4), (problem.num_edges, 1, 1))
        pw[:, :3, :3] = matrix.double().cpu().numpy()
        pw[:, :3, 3] = offset.double().cpu().numpy()
        depths: list[np.ndarray] = [np.empty(0)] * len(problem.shapes)
        for group, log_depth in zip(problem.view_groups, params.log_depth, strict=True):
            values = torch.exp(log_depth).double().cpu().numpy()
            for row, view in enumerate(group.views.tolist()):
                depths[view] = values[row].reshape(group.shape)
    return DenseState(poses, focal.double().cpu().numpy(), pp.double().cpu().numpy(), depths, pw)


# --------------------------------------------------------------------------- initialisation


def _pair_similarities(pairs: list[PairPrediction], points: list[np.ndarray]) -> np.ndarray:
    """Per pair, the confidence-weighted Sim(3) of its view-i points onto view i's world points."""
    transforms = np.zeros((len(pairs), 4, 4))
    keys = [np.shape(p.conf_i) for p in pairs]
    for key in dict.fromkeys(keys):
        members = [e for e, k in enumerate(keys) if k == key]
        source = np.stack([np.asarray(pairs[e].pts3d_i, dtype=np.float64).reshape(-1, 3) for e in members])
        target = np.stack([points[pairs[e].i].reshape(-1, 3) for e in members])
        weights = np.stack([np.asarray(pairs[e].conf_i, dtype=np.float64).reshape(-1) for e in members])
        transforms[members] = umeyama(source, target, np.maximum(weights, 0.0))
    return transforms


def _mst_state(pairs: list[PairPrediction], num_views: int, shapes: list[tuple[int, int]], min_conf_thr: float) -> DenseState:
    """The reference's init_minimum_spanning_tree + init_from_pts3d, on `chain_pairs`."""
    chain = chain_pairs(pairs, num_views, min_conf_thr=min_conf_thr)
    points = [np.asarray(p, dtype=np.float64) for p in chain.point_clouds]
    pw = _pair_similarities(pairs, points)
    scales = np.cbrt(np.linalg.det(pw[:, :3, :3]))
    factor = np.exp(np.log(BASE_SCALE) - np.mean(np.log(scales)))  # what norm_pw_scale will impose
    pw[:, :3, :] *= factor
    poses = chain.camera_poses.copy()
    poses[:, :3, 3] *= factor
    depths = [np.asarray(d, dtype=np.float64) * factor for d in chain.depths]
    centres = np.array([(w / 2.0, h / 2.0) for h, w in shapes])
    return DenseState(poses, np.asarray(chain.focals, dtype=np.float64), centres, depths, pw)


def _moved_onto(state: DenseState, poses: np.ndarray) -> DenseState:
    """`state` moved by the Sim(3) that takes its view 0 onto `poses[0]`, scaled by the median
    ratio of the cameras' distances to view 0 (1 when the given cameras do not move), with the
    given poses in place of its own."""
    own = np.asarray(state.camera_poses, dtype=np.float64)
    given_distance = np.linalg.norm(poses[1:, :3, 3] - poses[0, :3, 3], axis=1)
    own_distance = np.linalg.norm(own[1:, :3, 3] - own[0, :3, 3], axis=1)
    usable = (own_distance > 1e-12) & (given_distance > 0)
    scale = float(np.median(given_distance[usable] / own_distance[usable])) if usable.any() else 1.0
    rotation = poses[0, :3, :3] @ own[0, :3, :3].T
    move = np.eye(4)
    move[:3, :3] = scale * rotation
    move[:3, 3] = poses[0, :3, 3] - scale * rotation @ own[0, :3, 3]
    return DenseState(poses.copy(), state.focals, state.principal_points, [d * scale for d in state.depths],
                      np.einsum("ij,njk->nik", move, np.asarray(state.pair_transforms, dtype=np.float64)))


def _random_state(num_edges: int, shapes: list[tuple[int, int]], seed: int) -> DenseState:
    """The reference's start without init: random poses, log depths ~ N(-3, 0.1), focal = max(H, W)."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*size: int) -> np.ndarray:
        return torch.randn(*size, generator=generator, dtype=torch.float64).numpy()

    def rigid(raw: np.ndarray) -> np.ndarray:
        poses = np.tile(np.eye(4), (len(raw), 1, 1))
        quat = raw[:, :4] / np.linalg.norm(raw[:, :4], axis=1, keepdims=True)
        poses[:, :3, :3] = Rotation.from_quat(quat).as_matrix()
        poses[:, :3, 3] = np.sign(raw[:, 4:7]) * np.expm1(np.abs(raw[:, 4:7]))
        return poses

    pw_raw = randn(num_edges, 8)
    pw = rigid(pw_raw)
    scale = np.exp(pw_raw[:, 7])
    pw[:, :3, :] *= scale[:, None, None]
    depths = [np.exp(randn(h, w) / 10.0 - 3.0) for h, w in shapes]
    poses = rigid(randn(len(shapes), 7))
    focals = np.array([float(max(h, w)) for h, w in shapes])
    centres = np.array([(w / 2.0, h / 2.0) for h, w in shapes])
    return DenseState(poses, focals, centres, depths, pw)


# --------------------------------------------------------------------------- outputs


def _intrinsics(focal: float, pp: np.ndarray) -> np.ndarray:
    return np.array([[focal, 0.0, pp[0]], [0.0, focal, pp[1]], [0.0, 0.0, 1.0]])


def clean_confidences(
    confidences: list[np.ndarray], camera_poses: np.ndarray, intrinsics: np.ndarray, depths: list[np.ndarray],
    points: list[np.ndarray], tol: float = 0.001,
) -> list[np.ndarray]:
    """Zero the confidence of points seen in front of another view's depth map by a less confident pixel
    (reference `clean_pointcloud`): such points float in free space that the other view saw through."""
    result = [np.array(c, dtype=np.float32, copy=True) for c in confidences]
    world_to_camera = [invert_sim3(pose) for pose in camera_poses]
    for i, pts in enumerate(points):
        for j in range(len(points)):
            if i == j:
                continue
            local = pts @ world_to_camera[j][:3, :3].T + world_to_camera[j][:3, 3]
            z = local[..., 2]
            with np.errstate(divide="ignore", invalid="ignore"):
                u = np.round(intrinsics[j][0, 0] * local[..., 0] / z + intrinsics[j][0, 2])
                v = np.round(intrinsics[j][1, 1] * local[..., 1] / z + intrinsics[j][1, 2])
            height, width = depths[j].shape
            inside = (z > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
            uu, vv = u[inside].astype(np.int64), v[inside].astype(np.int64)
            bad = (z[inside] < (1 - tol) * depths[j][vv, uu]) & (result[i][inside] < result[j][vv, uu])
            mask = np.zeros_like(inside)
            mask[inside] = bad
            result[i][mask] = np.minimum(result[i][mask], 0.0)
    return result


# --------------------------------------------------------------------------- two views


def _pnp_relative(points_in_other: np.ndarray, mask: np.ndarray, focal: float, pp: np.ndarray) -> np.ndarray | None:
    """Camera-to-other pose of a view from its points in the other camera's frame (RANSAC PnP)."""
    height, width = points_in_other.shape[:2]
    u, v = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    pixels = np.stack([u, v], axis=-1)
    if mask.sum() < 4:
        return None
    try:
        ok, rvec, tvec, _inliers = cv2.solvePnPRansac(
            points_in_other[mask].astype(np.float32), pixels[mask], _intrinsics(focal, pp).astype(np.float32), None,
            iterationsCount=100, reprojectionError=5, flags=cv2.SOLVEPNP_SQPNP,
        )
    except cv2.error:
        return None
    if not ok:
        return None
    world_to_camera = np.eye(4)
    world_to_camera[:3, :3] = cv2.Rodrigues(rvec)[0]
    world_to_camera[:3, 3] = tvec.ravel()
    return invert_sim3(world_to_camera)


def _two_view(pairs: list[PairPrediction], shapes: list[tuple[int, int]], confidences: list[np.ndarray],
              min_conf_thr: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]] | None:
    """The reference's PairViewer: no optimisation, the more confident direction's prediction.

    Returns (poses, focals, principal points, depths) in view 0's frame, or None unless the
    input is exactly the pairs (0, 1) and (1, 0).
    """
    by_edge = {(p.i, p.j): p for p in pairs}
    if len(pairs) != 2 or set(by_edge) != {(0, 1), (1, 0)}:
        return None
    focals, pps, relative, scores = [], [], [], []
    for i in (0, 1):
        own, other = by_edge[(i, 1 - i)], by_edge[(1 - i, i)]
        scores.append(float(np.mean(own.conf_i)) * float(np.mean(own.conf_j)))
        height, width = shapes[i]
        pp = np.array([width / 2.0, height / 2.0])
        focal = estimate_focal(np.asarray(own.pts3d_i, dtype=np.float64))
        points = np.asarray(other.pts3d_j_in_i, dtype=np.float64)
        pose = _pnp_relative(points, confidences[i] > min_conf_thr, focal, pp)
        if pose is None:  # the reference falls back to identity; the Procrustes fit is a better guess
            transform = umeyama(np.asarray(own.pts3d_i, dtype=np.float64).reshape(-1, 3), points.reshape(-1, 3),
                                np.asarray(own.conf_i, dtype=np.float64).reshape(-1))
            scale = np.cbrt(np.linalg.det(transform[:3, :3]))
            pose = np.eye(4)
            pose[:3, :3], pose[:3, 3] = transform[:3, :3] / scale, transform[:3, 3]
        focals.append(focal)
        pps.append(pp)
        relative.append(pose)  # camera i -> camera 1 - i
    if scores[0] > scores[1]:  # world = camera 0
        pair = by_edge[(0, 1)]
        poses = np.stack([np.eye(4), relative[1]])
        depth_1 = (np.asarray(pair.pts3d_j_in_i, dtype=np.float64) @ invert_sim3(relative[1])[:3, :3].T + invert_sim3(relative[1])[:3, 3])[..., 2]
        depths = [np.asarray(pair.pts3d_i, dtype=np.float64)[..., 2], depth_1]
    else:  # world = camera 1, then moved into camera 0's frame
        pair = by_edge[(1, 0)]
        to_0 = invert_sim3(relative[0])
        poses = np.stack([np.eye(4), to_0])
        depth_0 = (np.asarray(pair.pts3d_j_in_i, dtype=np.float64) @ to_0[:3, :3].T + to_0[:3, 3])[..., 2]
        depths = [depth_0, np.asarray(pair.pts3d_i, dtype=np.float64)[..., 2]]
    return poses, np.array(focals), np.stack(pps), depths


# --------------------------------------------------------------------------- the optimizer


class DenseSceneOptimizer(SceneOptimizerBase):
    """DUSt3R's global alignment: depth maps, poses and focals fit to all pair predictions at once.

    `last_run` tells what the latest `optimize` did (losses, time); `initial_state` gives the
    starting point, which `optimize(..., initial_state=...)` accepts (comparisons, warm starts).
    """

    name: ClassVar[str] = "dense_scene_optimizer"
    uses_known_intrinsics: ClassVar[bool] = True
    uses_known_poses: ClassVar[bool] = True
    options_class: ClassVar[type[OptimizerOptions]] = DenseOptimizerOptions
    options: DenseOptimizerOptions

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.last_run = DenseRunInfo()

    def initial_state(self, optimizer_input: SceneOptimizerInput) -> DenseState:
        """The starting parameters of `init` (world frame of the optimizer, scale as normalised)."""
        shapes = _check_input(optimizer_input)
        return self._initial_state(optimizer_input, shapes)

    def _initial_state(self, optimizer_input: SceneOptimizerInput, shapes: list[tuple[int, int]]) -> DenseState:
        pairs = optimizer_input.pair_predictions
        if self.options.init == "mst":
            return _mst_state(pairs, optimizer_input.num_views, shapes, self.options.min_conf_thr)
        return _random_state(len(pairs), shapes, self.options.seed)

    def optimize(self, optimizer_input: SceneOptimizerInput, initial_state: DenseState | None = None) -> SceneOptimizerOutput:
        """Align all pair predictions into one scene.

        Two views with both pair directions take the reference's pair-viewer shortcut (no
        optimisation) unless `initial_state` (see `initial_state()`) is given, which replaces
        the `init` start.
        """
        started = time.perf_counter()
        opts = self.options
        shapes = _check_input(optimizer_input)
        pairs = optimizer_input.pair_predictions
        confidences = view_confidences(pairs, shapes)
        self.last_run = DenseRunInfo()
        known = known_intrinsics(optimizer_input, shapes)
        given_poses = known_poses(optimizer_input)
        fixed = known is not None or given_poses is not None
        shortcut = _two_view(pairs, shapes, confidences, opts.min_conf_thr) if initial_state is None and not fixed else None
        if shortcut is not None:
            poses, focals, pps, depths = shortcut
            self.last_run.two_view_shortcut = True
        else:
            if initial_state is not None:
                _check_state(initial_state, shapes, len(pairs))
            state = initial_state if initial_state is not None else self._initial_state(optimizer_input, shapes)
            if known is not None:
                state = replace(state, focals=known[0], principal_points=known[1])
            if given_poses is not None:
                state = _moved_onto(state, given_poses)
            state = self._run(optimizer_input, shapes, state, fixed_intrinsics=known is not None, fixed_poses=given_poses is not None)
            poses, focals, pps, depths = state.camera_poses, state.focals, state.principal_points, state.depths
            if known is not None:  # exactly as given (the float32 parameters round them)
                focals, pps = known
            if given_poses is not None:
                poses = given_poses
            else:
                poses, depths = self._to_view0(pairs, state)
        clouds = [unproject_depth(d[None], _intrinsics(f, pp)[None], pose[None])[0] for d, f, pp, pose in zip(depths, focals, pps, poses, strict=True)]
        intrinsics = [_intrinsics(float(f), pp) for f, pp in zip(focals, pps, strict=True)]
        if opts.clean_depth:
            confidences = clean_confidences(confidences, poses, np.stack(intrinsics), depths, clouds)
        self.last_run.seconds = time.perf_counter() - started
        return SceneOptimizerOutput(
            camera_poses=[np.asarray(p, dtype=np.float64) for p in poses],
            depth_predictions=[np.asarray(d, dtype=np.float32) for d in depths],
            point_clouds=[c.astype(np.float32) for c in clouds],
            intrinsics=intrinsics,
            confidences=[c.astype(np.float32) for c in confidences],
        )

    def _run(self, optimizer_input: SceneOptimizerInput, shapes: list[tuple[int, int]], state: DenseState,
             fixed_intrinsics: bool = False, fixed_poses: bool = False) -> DenseState:
        """Adam over the reference's loss, on the input's device (focals and principal points
        fixed at the state's with `fixed_intrinsics`, poses with `fixed_poses`, which also frees
        the pair scales)."""
        opts = self.options
        device = torch.device(optimizer_input.device)
        problem = _build_problem(optimizer_input.pair_predictions, shapes, opts.conf_weight, device)
        params = _Parameters(problem, state, opts.optimize_pp and not fixed_intrinsics, pin_scale=not fixed_poses)
        params.log_focal.requires_grad_(not fixed_intrinsics)
        params.quat.requires_grad_(not fixed_poses)
        params.trans.requires_grad_(not fixed_poses)
        squared = opts.loss == "l2"
        optimizer = torch.optim.Adam(params.trainable(), lr=opts.lr, betas=BETAS)
        losses: list[torch.Tensor] = []  # kept as tensors: no device sync per step
        for step in range(opts.niter):
            for group in optimizer.param_groups:
                group["lr"] = float(_schedule(step, opts.niter, opts.lr, opts.lr_min, opts.schedule))
            optimizer.zero_grad(set_to_none=True)
            loss = _loss(problem, params, squared)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        with torch.no_grad():
            final = float(_loss(problem, params, squared))
        self.last_run.losses = torch.stack(losses).cpu().tolist() if losses else []
        self.last_run.initial_loss = self.last_run.losses[0] if losses else final
        self.last_run.final_loss = final
        return _state_of(problem, params)

    @staticmethod
    def _to_view0(pairs: list[PairPrediction], state: DenseState) -> tuple[np.ndarray, list[np.ndarray]]:
        """Poses and depths in view 0's camera frame, at the scale of view 0's most confident pair prediction."""
        scores = [float(np.mean(p.conf_i)) * float(np.mean(p.conf_j)) if 0 in (p.i, p.j) else -np.inf for p in pairs]
        anchor = int(np.argmax(scores))
        factor = 1.0 / float(np.cbrt(np.linalg.det(state.pair_transforms[anchor][:3, :3])))
        to_view0 = invert_sim3(state.camera_poses[0])
        poses = np.einsum("ij,njk->nik", to_view0, state.camera_poses)
        poses[:, :3, 3] *= factor
        poses[0] = np.eye(4)
        return poses, [d * factor for d in state.depths]
