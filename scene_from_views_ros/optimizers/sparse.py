"""Sparse scene optimizer: MASt3R's sparse global alignment, our implementation.

Pipeline (as the reference `sparse_global_alignment`):

1. matching: per ordered pair prediction, fast reciprocal nearest neighbours of the two views'
   unit descriptors (dot product), started from a grid of every `subsample`-th pixel and
   iterated up to 10 times; the matches of (i, j) and (j, i) are merged, each weighted by
   sqrt(desc_conf_a * desc_conf_b);
2. canonical views: each view's own-frame point maps (every pair where it is view i) averaged
   with weights (conf - 0.999); a coarse grid of depth anchors (one per `subsample` block)
   carries the depth, every pixel is its block anchor's depth times a fixed relative offset;
   the base focal is estimated from the canonical map;
3. kinematic chain: a spanning tree over the views (maximum number of matches, or the
   reference's hierarchical clustering of the match-count affinities), cameras parametrised
   relative to their parent, with the reference's reparametrisation (camera distance to the
   focal plane follows the focal, scale sizes normalised so that the smallest is 1);
4. coarse stage: Adam (lr1, niter1, cosine decay to 0) on poses and sizes, loss = gamma-1.5
   distance between the 3D anchors of matched pixels; pairs whose best match confidence is
   not above `matching_conf_thr` fall back to DUSt3R's 3D regression (weight 0.01);
5. fine stage (lr2, niter2): also focals, principal points (opt_pp) and (refine+depth) the anchor
   depths, loss = gamma-0.5 reprojection error of matched anchors;
6. dense depth: every pixel from its anchor and offset, unprojected into the world.

Differences from the reference, on purpose:

* relative depth offsets are ratios of the canonical (averaged) depth map, not the
  reference's 'avg-angle' average over pairs; each own-frame map is normalised by its median
  depth before averaging (our pairs each have their own scale);
* the DUSt3R fallback scales its targets by their view's size (the reference compares them at the
  pair's own scale, which only agrees with the world's by chance);
* match and anchor block indices are clipped to the grid (the reference overflows when H or
  W is not a multiple of `subsample`); low-rank depth (`lora_depth`) and `init` are not offered;
* the output is in view 0's camera frame, at the scale of view 0's most confident own-frame
  pair prediction (the reference leaves its arbitrary frame);
* the principal points stay at the image centre unless `opt_pp` (the reference frees them): on
  synthetic scenes freeing them moves the cameras by half their spread in both implementations
  (bench/bench_sparse_optimizer.py);
* `cache_dir` receives the matches and canonical views as .npz files (for inspection); they
  are never read back, results are recomputed every call.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.cluster.hierarchy as sch
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph
import torch
from scipy.spatial.distance import squareform

from ..core.errors import InvalidOptionError
from ..core.options import option
from ..geometry.camera import quaternion_to_matrix
from ..geometry.pair_chain import estimate_focal
from .base import OptimizerOptions, PairPrediction, SceneOptimizerBase, SceneOptimizerInput, SceneOptimizerOutput, known_intrinsics
from .dense import _check_input, _intrinsics

KINEMATIC_MODES = ("mst", "hclust-ward", "hclust-complete", "hclust-single", "hclust-average", "hclust-weighted",
                   "hclust-centroid", "hclust-median")
OPTIM_LEVELS = ("coarse", "refine", "refine+depth")
BETAS = (0.9, 0.9)  # Adam's betas (reference)
MAX_NN_ITER = 10  # reciprocal-NN iterations from the grid (reference fast_reciprocal_NNs)
DUST3R_FALLBACK_WEIGHT = 0.01  # weight of the 3D regression of pairs without good matches (reference)


@dataclass(frozen=True)
class SparseOptimizerOptions(OptimizerOptions):
    """Options of the sparse scene optimizer (MASt3R sparse global alignment); defaults = the reference demo."""

    subsample: int = option(8, "Pixel stride of the matching seeds and of the depth anchors.", unit="pixels", low=1, high=64)
    matching_conf_thr: float = option(
        0.0, "A pair whose best match confidence (sqrt of both descriptor confidences) is not above this falls back to "
        "DUSt3R's 3D regression (reference demo default 0; the library function's default is 5).", low=0.0, high=1e6,
    )
    kinematic_mode: str = option(
        "hclust-ward", "Spanning tree of the camera chain: mst (most matches) or hclust-<linkage> (hierarchical "
        "clustering of the match affinities, as the reference).", choices=KINEMATIC_MODES,
    )
    lr1: float = option(0.07, "Initial learning rate of the coarse 3D-matching stage (cosine decay to 0).", low=1e-8, high=10.0)
    niter1: int = option(300, "Adam iterations of the coarse stage.", unit="iterations", low=0, high=100000)
    lr2: float = option(0.01, "Initial learning rate of the fine 2D-reprojection stage (cosine decay to 0).", low=1e-8, high=10.0)
    niter2: int = option(300, "Adam iterations of the fine stage (ignored with optim_level=coarse).", unit="iterations", low=0, high=100000)
    optim_level: str = option(
        "refine+depth", "coarse: 3D matching only; refine: then 2D reprojection with the focals (and opt_pp principal points); "
        "refine+depth: also the anchor depths.", choices=OPTIM_LEVELS,
    )
    opt_pp: bool = option(
        False, "Also optimise the principal points in the fine stage (the reference does by default). Off keeps them "
        "at the image centre: with them free, few matches let them drift and the cameras with them.",
    )
    shared_intrinsics: bool = option(
        False, "Optimise one focal and principal point for all views: set it when the views come from one camera (a focal "
        "per view can trade against the distance to a shallow scene in the fine stage; README, sparse benchmark).",
    )
    cache_dir: str = option(
        "", "Folder that receives the matches (matches/<i>-<j>.npz) and canonical views (canon/<i>.npz) for inspection; "
        "they are never read back. Empty: a temporary folder removed after the call.",
    )


@dataclass
class SparseRunInfo:
    """What the last `optimize` call did: matches per pair, tree, losses of both stages, time (all, and matching)."""

    num_matches: dict[tuple[int, int], int] = field(default_factory=dict)
    fallback_pairs: list[tuple[int, int]] = field(default_factory=list)
    tree_root: int = 0
    tree_edges: list[tuple[int, int]] = field(default_factory=list)
    coarse_losses: list[float] = field(default_factory=list)
    fine_losses: list[float] = field(default_factory=list)
    cache_dir: str = ""
    matching_seconds: float = 0.0
    seconds: float = 0.0


# --------------------------------------------------------------------------- validation


def _check_descriptors(pairs: list[PairPrediction]) -> None:
    """Raise unless every pair carries finite descriptors and confidences that fit its point maps."""
    for pair in pairs:
        for side, desc, conf, points in (("i", pair.desc_i, pair.desc_conf_i, pair.pts3d_i), ("j", pair.desc_j, pair.desc_conf_j, pair.pts3d_j_in_i)):
            if desc is None or conf is None:
                raise InvalidOptionError(
                    f"pair ({pair.i}, {pair.j}) has no descriptors (desc_{side}/desc_conf_{side}): the sparse optimizer needs "
                    "MASt3R's local features; use a MASt3R model, or the dense optimizer (optimizer='dense_scene_optimizer')"
                )
            desc, conf = np.asarray(desc), np.asarray(conf)
            shape = np.shape(points)[:2]
            if desc.ndim != 3 or desc.shape[:2] != shape or conf.shape != shape:
                raise InvalidOptionError(
                    f"pair ({pair.i}, {pair.j}): desc_{side} {desc.shape} / desc_conf_{side} {conf.shape} do not fit the "
                    f"point map {shape}: expected (H, W, D) and (H, W) on the same pixel grid"
                )
            if not (np.isfinite(desc).all() and np.isfinite(conf).all()):
                raise InvalidOptionError(f"pair ({pair.i}, {pair.j}): desc_{side} or desc_conf_{side} contain NaN or infinity")


# --------------------------------------------------------------------------- matching


def _nearest(queries: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Index in `base` of each query's largest dot product.

    On the CPU in chunks of 32 queries, so that the similarity block stays in the cache (against
    49k pixels 2.3x faster than 1024 rows: the argmax is memory-bound); on a GPU 4096 at a time.
    """
    chunk = 32 if queries.device.type == "cpu" else 4096
    return torch.cat([(queries[s:s + chunk] @ base.T).argmax(dim=1) for s in range(0, len(queries), chunk)])


def reciprocal_matches(desc_a: torch.Tensor, desc_b: torch.Tensor, subsample: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat pixel indices (a, b) of reciprocal nearest neighbours, seeded on a grid of `a`.

    Each seed follows a -> b -> a until it comes back to itself (at most MAX_NN_ITER rounds),
    as the reference's fast_reciprocal_NNs: far fewer queries than the full reciprocal test.
    """
    height, width = desc_a.shape[:2]
    flat_a, flat_b = desc_a.reshape(-1, desc_a.shape[-1]), desc_b.reshape(-1, desc_b.shape[-1])
    rows, cols = np.mgrid[subsample // 2:height:subsample, subsample // 2:width:subsample].reshape(2, -1)
    current = torch.from_numpy(np.unique(rows * width + cols)).to(desc_a.device)
    found_a, found_b = [], []
    for _ in range(MAX_NN_ITER):
        if len(current) == 0:
            break
        forward = _nearest(flat_a[current], flat_b)
        back = _nearest(flat_b[forward], flat_a)
        done = back == current
        found_a.append(current[done])
        found_b.append(forward[done])
        current = torch.unique(back[~done])
    if not found_a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return torch.cat(found_a).cpu().numpy(), torch.cat(found_b).cpu().numpy()


def _pair_matches(forward: PairPrediction | None, backward: PairPrediction | None, shape_a: tuple[int, int],
                  shape_b: tuple[int, int], subsample: int, device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merged matches of views a < b from their pair predictions (a, b) and (b, a): flat pixels and confidences."""
    idx_a, idx_b, confs = [], [], []
    for pred, a_is_i in ((forward, True), (backward, False)):
        if pred is None:
            continue
        desc_a, desc_b = (pred.desc_i, pred.desc_j) if a_is_i else (pred.desc_j, pred.desc_i)
        qa, qb = (pred.desc_conf_i, pred.desc_conf_j) if a_is_i else (pred.desc_conf_j, pred.desc_conf_i)
        ta = torch.as_tensor(np.asarray(desc_a, dtype=np.float32), device=device)
        tb = torch.as_tensor(np.asarray(desc_b, dtype=np.float32), device=device)
        for first, second, flip in ((ta, tb, False), (tb, ta, True)):
            m1, m2 = reciprocal_matches(first, second, subsample)
            ia, ib = (m2, m1) if flip else (m1, m2)
            idx_a.append(ia)
            idx_b.append(ib)
            confs.append(np.sqrt(np.clip(np.asarray(qa, np.float64).ravel()[ia] * np.asarray(qb, np.float64).ravel()[ib], 0.0, None)))
    ia, ib, conf = np.concatenate(idx_a), np.concatenate(idx_b), np.concatenate(confs)
    _, keep = np.unique(ia * (shape_b[0] * shape_b[1]) + ib, return_index=True)
    return ia[keep], ib[keep], conf[keep]


# --------------------------------------------------------------------------- canonical views and anchors


@dataclass
class _Canonical:
    """One view's canonical geometry: anchor depths (grid), relative offsets (H, W), base focal, confidence."""

    core_depth: np.ndarray
    grid: tuple[int, int]
    offsets: np.ndarray
    focal: float
    conf: np.ndarray
    points: np.ndarray


def _canonical_view(maps: list[np.ndarray], confs: list[np.ndarray], subsample: int) -> _Canonical:
    """Confidence-weighted average of a view's own-frame point maps (each normalised by its median depth)."""
    stack = np.stack([m / max(float(np.median(m[..., 2])), 1e-12) for m in maps]).astype(np.float64)
    weight = np.maximum(np.stack(confs).astype(np.float64) - 0.999, 1e-6)[..., None]
    canon = (weight * stack).sum(0) / weight.sum(0)
    height, width = canon.shape[:2]
    half = subsample // 2
    depth = np.maximum(canon[..., 2], 1e-6)
    core = depth[half::subsample, half::subsample]
    rows, cols = np.mgrid[:height, :width]
    block_depth = core[np.minimum(rows // subsample, core.shape[0] - 1), np.minimum(cols // subsample, core.shape[1] - 1)]
    conf = ((weight[..., 0] ** 2).sum(0) / weight[..., 0].sum(0)).astype(np.float32)
    focal = estimate_focal(canon, principal_point=(width / 2.0, height / 2.0), min_focal=0.5 * max(height, width) / 2.0,
                           max_focal=3.5 * max(height, width))
    return _Canonical(core, core.shape, depth / block_depth, focal, conf, canon)


def _block_index(flat: np.ndarray, width: int, grid: tuple[int, int], subsample: int) -> np.ndarray:
    """Anchor index (row-major in the anchor grid) of flat pixel indices."""
    rows, cols = flat // width, flat % width
    return np.minimum(rows // subsample, grid[0] - 1) * grid[1] + np.minimum(cols // subsample, grid[1] - 1)


# --------------------------------------------------------------------------- kinematic chain


def _spanning_tree(weights: np.ndarray) -> tuple[int, list[tuple[int, int]]]:
    """Maximum spanning tree of `weights`, rooted at its most central node; edges (parent, child) in BFS order."""
    graph = sp.csr_array(np.where(weights > 0, -weights - 1e-9, 0.0))
    tree = csgraph.minimum_spanning_tree(graph)

    def ranks(start: int) -> np.ndarray:
        order = csgraph.breadth_first_order(tree, start, directed=False, return_predecessors=False)
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        return rank

    far = int(ranks(0).argmax())
    rank_a = ranks(far)
    rank_b = ranks(int(rank_a.argmax()))
    root = int(np.minimum(rank_a, rank_b).argmax())
    order, predecessors = csgraph.breadth_first_order(tree, root, directed=False)
    return root, [(int(predecessors[v]), int(v)) for v in order[1:]]


def kinematic_tree(scores: np.ndarray, patches: np.ndarray, mode: str) -> tuple[int, list[tuple[int, int]]]:
    """The camera chain from the pairwise match counts `scores` (N, N) (reference's mst / hclust modes)."""
    num_views = len(scores)
    if mode == "mst":
        return _spanning_tree(scores)
    linkage = mode.split("-", 1)[1]
    affinity = np.clip(scores / (3.0 * np.minimum(patches[:, None], patches[None, :])), None, 1.0)
    np.fill_diagonal(affinity, 1.0)
    distance = np.where(affinity > 0, 1.0 - affinity, 2.0)
    np.fill_diagonal(distance, 0.0)
    merges = sch.linkage(squareform(distance, checks=False), method=linkage)
    tree = np.zeros((num_views, num_views))
    representative = {v: v for v in range(num_views)}
    for step, (a, b) in enumerate(merges[:, :2].astype(int)):
        a, b = representative[a], representative[b]
        tree[a, b] = tree[b, a] = 1.0
        best = a if affinity[a].sum() > affinity[b].sum() else b
        representative[num_views + step] = best
        affinity[best] = np.maximum(affinity[a], affinity[b])
    return _spanning_tree(tree)


# --------------------------------------------------------------------------- losses


def gamma_loss(distance: torch.Tensor, gamma: float) -> torch.Tensor:
    """(d + c)^gamma - c^gamma with c where the slope at 0 is 1 (reference gamma_loss)."""
    if gamma == 1.0:
        return distance
    offset = (1.0 / gamma) ** (1.0 / (gamma - 1.0))
    return (distance + offset) ** gamma - offset**gamma


def _cosine(alpha: float, lr: float) -> float:
    return lr * (1.0 + np.cos(alpha * np.pi)) / 2.0


# --------------------------------------------------------------------------- the problem


@dataclass
class SparseProblem:
    """Everything the two stages need, as flat tensors.

    Anchors are the matched pixels of every view (one entry per match and side): view, pixel
    (u, v, 1), global core index and relative offset.  `match_a`/`match_b` index the anchors of
    the two sides of every good match, `match_conf` their weights.  `fallback_*` are DUSt3R's
    3D regression terms (anchor, target point in the other view's frame, that view, weight).
    """

    shapes: list[tuple[int, int]]
    core_view: torch.Tensor
    core_start: list[int]
    core_depth: torch.Tensor
    median_depth: torch.Tensor
    base_focal: torch.Tensor
    anchor_view: torch.Tensor
    anchor_pix: torch.Tensor
    anchor_core: torch.Tensor
    anchor_offset: torch.Tensor
    match_a: torch.Tensor
    match_b: torch.Tensor
    match_conf: torch.Tensor
    fallback_anchor: torch.Tensor
    fallback_target: torch.Tensor
    fallback_view: torch.Tensor
    fallback_conf: torch.Tensor


class SparseModel(torch.nn.Module):
    """The parameters (reference layout) and the map from them to intrinsics, poses and anchor depths."""

    def __init__(self, problem: SparseProblem, root: int, edges: list[tuple[int, int]], shared: bool, canon_conf: np.ndarray,
                 known: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """`known` (focals (N,), principal points (N, 2) px) fixes the intrinsics (`fixed_intrinsics`)."""
        super().__init__()
        n = len(problem.shapes)
        dev = problem.core_depth.device
        self.problem, self.root, self.edges = problem, root, edges
        self.shared, self.fixed_intrinsics = shared and known is None, known is not None
        self.sizes_wh = torch.tensor([(w, h) for h, w in problem.shapes], dtype=torch.float32, device=dev)
        diag = self.sizes_wh.norm(dim=1)
        self.min_focal, self.max_focal = 0.25 * diag, 10.0 * diag
        pp = torch.full((n, 2), 0.5, device=dev)
        log_focal = problem.base_focal.log()
        if known is not None:
            log_focal = torch.as_tensor(np.log(known[0]), dtype=torch.float32, device=dev)
            pp = torch.as_tensor(known[1], dtype=torch.float32, device=dev) / self.sizes_wh
        elif shared:
            weight = torch.as_tensor(canon_conf / canon_conf.sum(), dtype=torch.float32, device=dev)
            pp, log_focal = (weight @ pp)[None], (weight @ problem.base_focal).log()[None]
        self.pp = torch.nn.Parameter(pp)
        self.log_focal = torch.nn.Parameter(log_focal.clone())
        self.quat = torch.nn.Parameter(torch.tensor([0.0, 0.0, 0.0, 1.0], device=dev).repeat(n, 1))
        self.trans = torch.nn.Parameter(torch.zeros(n, 3, device=dev))
        self.log_size = torch.nn.Parameter(torch.zeros(n, device=dev))
        self.core = torch.nn.Parameter(problem.core_depth.clone())

    def intrinsics(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.problem.shapes)
        if self.fixed_intrinsics:
            return self.log_focal.exp(), self.pp * self.sizes_wh
        focal = self.log_focal.exp().expand(n).clip(self.min_focal, self.max_focal)
        # The principal point stays in the central 80% of the image (the reference leaves it free;
        # weak matches, e.g. of an untrained network, can push it outside the image).
        pp = self.pp.clamp(0.1, 0.9).expand(n, 2) * self.sizes_wh
        return focal, pp

    def forward(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Focals (N,), principal points (N, 2) px, camera-to-world (N, 4, 4), anchor-grid depths (all views)."""
        p = self.problem
        focal, pp = self.intrinsics()
        sizes = self.log_size.exp()
        scaling = 1.0 / sizes.min()
        z_cam = sizes * p.median_depth * focal / p.base_focal
        rel = torch.eye(4, device=focal.device).repeat(len(focal), 1, 1)
        rel[:, :3, :3] = quaternion_to_matrix(self.quat)
        rel[:, :3, 3] = self.trans
        chain: list[torch.Tensor | None] = [None] * len(focal)
        chain[self.root] = rel[self.root]
        for parent, child in self.edges:
            above = chain[parent]
            assert above is not None
            chain[child] = above @ rel[child]
        cam = torch.stack([c for c in chain if c is not None])
        # the camera sits z_cam behind the focal plane's centre: moving the focal moves the camera, not the scene
        ones = torch.ones_like(focal)[:, None]
        offset = z_cam[:, None] * torch.cat(((self.sizes_wh / 2.0 - pp) / focal[:, None], ones), dim=1)
        centre = scaling * (cam[:, :3, 3] - (cam[:, :3, :3] @ offset[:, :, None])[..., 0])
        cam2w = torch.cat((torch.cat((cam[:, :3, :3], centre[:, :, None]), dim=2), rel[:, 3:4]), dim=1)
        depth = z_cam[p.core_view] + (self.core - 1.0) * (p.median_depth * sizes)[p.core_view]
        return focal, pp, cam2w, scaling * depth


def _anchor_points(model: SparseModel, depth: torch.Tensor, focal: torch.Tensor, pp: torch.Tensor, cam2w: torch.Tensor) -> torch.Tensor:
    """World points of all anchors (offsets corrected for the focal change, as the reference)."""
    p = model.problem
    view = p.anchor_view
    offset = 1.0 + (p.anchor_offset - 1.0) * p.base_focal[view] / focal[view]
    z = depth[p.anchor_core] * offset
    xy = (p.anchor_pix - pp[view]) / focal[view][:, None] * z[:, None]
    local = torch.cat((xy, z[:, None]), dim=1)
    return (cam2w[view, :3, :3] @ local[:, :, None])[..., 0] + cam2w[view, :3, 3]


def _project(cam2w: torch.Tensor, focal: torch.Tensor, pp: torch.Tensor, view: torch.Tensor, world: torch.Tensor) -> torch.Tensor:
    """Pixels of world points in cameras `view` (z clipped at 1e-3 and pixels to [-1000, 2000] as the reference)."""
    rot = cam2w[view, :3, :3]
    local = (rot.transpose(1, 2) @ (world - cam2w[view, :3, 3])[:, :, None])[..., 0]
    uv = local[:, :2] / local[:, 2:3].clip(min=1e-3) * focal[view][:, None] + pp[view]
    return uv.clip(-1000.0, 2000.0)


def _loss_3d(model: SparseModel, world: torch.Tensor, cam2w: torch.Tensor) -> torch.Tensor:
    p = model.problem
    total = torch.zeros((), device=world.device)
    if len(p.match_a):
        dist = (world[p.match_a] - world[p.match_b]).norm(dim=1)
        total = total + p.match_conf @ gamma_loss(dist, 1.5) / p.match_conf.sum()
    return total + _loss_fallback(model, world, cam2w)


def _loss_fallback(model: SparseModel, world: torch.Tensor, cam2w: torch.Tensor) -> torch.Tensor:
    """DUSt3R's 3D regression for pairs without good matches (reference loss_dust3r, weight 0.01)."""
    p = model.problem
    if not len(p.fallback_anchor):
        return torch.zeros((), device=world.device)
    # targets are in their view's median-normalised units: that view's world scale is its size / the smallest size
    sizes = model.log_size.exp()
    local = p.fallback_target * (sizes / sizes.min())[p.fallback_view][:, None]
    target = (cam2w[p.fallback_view, :3, :3] @ local[:, :, None])[..., 0] + cam2w[p.fallback_view, :3, 3]
    dist = (world[p.fallback_anchor] - target).norm(dim=1)
    return DUST3R_FALLBACK_WEIGHT * (p.fallback_conf @ gamma_loss(dist, 1.1)) / p.fallback_conf.sum()


def _loss_2d(model: SparseModel, world: torch.Tensor, focal: torch.Tensor, pp: torch.Tensor, cam2w: torch.Tensor) -> torch.Tensor:
    p = model.problem
    total = torch.zeros((), device=world.device)
    if len(p.match_a):
        a, b = torch.cat((p.match_a, p.match_b)), torch.cat((p.match_b, p.match_a))
        uv = _project(cam2w, focal, pp, p.anchor_view[a], world[b])
        conf = torch.cat((p.match_conf, p.match_conf))
        total = total + conf @ gamma_loss((uv - p.anchor_pix[a]).norm(dim=1), 0.5) / conf.sum()
    return total + _loss_fallback(model, world, cam2w)


# --------------------------------------------------------------------------- the optimizer


class SparseSceneOptimizer(SceneOptimizerBase):
    """MASt3R's sparse global alignment: descriptor matches, kinematic chain, 3D then 2D stage, dense depth from anchors."""

    name: ClassVar[str] = "sparse_scene_optimizer"
    uses_known_intrinsics: ClassVar[bool] = True
    options_class: ClassVar[type[OptimizerOptions]] = SparseOptimizerOptions
    needs_descriptors: ClassVar[bool] = True  # it matches MASt3R's local features
    options: SparseOptimizerOptions

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.last_run = SparseRunInfo()

    def optimize(self, optimizer_input: SceneOptimizerInput) -> SceneOptimizerOutput:
        """Align all views from the pairs' descriptor matches; output in view 0's camera frame."""
        started = time.perf_counter()
        shapes = _check_input(optimizer_input)
        pairs = optimizer_input.pair_predictions
        _check_descriptors(pairs)
        self.last_run = SparseRunInfo()
        opts = self.options
        temporary = not opts.cache_dir
        cache = Path(tempfile.mkdtemp(prefix="sparse_ga_")) if temporary else Path(opts.cache_dir).expanduser()
        try:
            cache.mkdir(parents=True, exist_ok=True)
            self.last_run.cache_dir = str(cache)
            output = self._optimize(optimizer_input, shapes, cache)
        finally:
            if temporary:
                shutil.rmtree(cache, ignore_errors=True)
        self.last_run.seconds = time.perf_counter() - started
        return output

    def _optimize(self, optimizer_input: SceneOptimizerInput, shapes: list[tuple[int, int]], cache: Path) -> SceneOptimizerOutput:
        opts = self.options
        pairs = optimizer_input.pair_predictions
        n = optimizer_input.num_views
        device = torch.device(optimizer_input.device)
        sub = opts.subsample
        own = [[p for p in pairs if p.i == v] for v in range(n)]
        lacking = [v for v in range(n) if not own[v]]
        if lacking:
            raise InvalidOptionError(
                f"views {lacking} are never the first view of a pair: the canonical views need every view's own-frame "
                "prediction; infer symmetric pairs (both (i, j) and (j, i))"
            )
        canon = [_canonical_view([np.asarray(p.pts3d_i) for p in own[v]], [np.asarray(p.conf_i) for p in own[v]], sub) for v in range(n)]
        (cache / "canon").mkdir(exist_ok=True)
        for v, c in enumerate(canon):
            np.savez(cache / "canon" / f"{v}.npz", points=c.points, offsets=c.offsets, conf=c.conf, focal=c.focal)

        # matches per unordered pair
        by_pair = {(p.i, p.j): p for p in pairs}
        scores = np.zeros((n, n))
        (cache / "matches").mkdir(exist_ok=True)
        anchors: list[list[np.ndarray]] = [[] for _ in range(n)]  # flat pixel indices per view
        count = [0] * n
        match_a, match_b, match_conf = [], [], []
        fb_anchor, fb_target, fb_view, fb_conf = [], [], [], []
        for a, b in sorted({(min(p.i, p.j), max(p.i, p.j)) for p in pairs}):
            matching_started = time.perf_counter()
            ia, ib, conf = _pair_matches(by_pair.get((a, b)), by_pair.get((b, a)), shapes[a], shapes[b], sub, device)
            self.last_run.matching_seconds += time.perf_counter() - matching_started
            np.savez(cache / "matches" / f"{a}-{b}.npz", pixels_a=ia, pixels_b=ib, conf=conf)
            self.last_run.num_matches[(a, b)] = len(ia)
            scores[a, b] = scores[b, a] = len(ia)
            good = len(conf) > 0 and float(conf.max()) > opts.matching_conf_thr
            if good:
                anchors[a].append(ia)
                anchors[b].append(ib)
                # (view, index among that view's anchors): made global once all views' anchors are known
                match_a.append(np.stack((np.full(len(ia), a), np.arange(count[a], count[a] + len(ia)))))
                match_b.append(np.stack((np.full(len(ib), b), np.arange(count[b], count[b] + len(ib)))))
                match_conf.append(conf)
                count[a] += len(ia)
                count[b] += len(ib)
                continue
            self.last_run.fallback_pairs.append((a, b))
            for first, second in ((a, b), (b, a)):
                pred = by_pair.get((second, first))
                if pred is None:
                    continue
                rows, cols = np.mgrid[sub // 2:shapes[first][0]:sub, sub // 2:shapes[first][1]:sub].reshape(2, -1)
                grid_pixels = rows * shapes[first][1] + cols  # the anchors themselves (relative offset 1)
                anchors[first].append(grid_pixels)
                fb_anchor.append(np.stack((np.full(len(grid_pixels), first), np.arange(count[first], count[first] + len(grid_pixels)))))
                count[first] += len(grid_pixels)
                # the other view's prediction of `first`, at the scale of `second`'s canonical view
                target = np.asarray(pred.pts3d_j_in_i, np.float64).reshape(-1, 3)[grid_pixels]
                target /= max(float(np.median(np.asarray(pred.pts3d_i)[..., 2])), 1e-12)
                fb_target.append(target)
                fb_view.append(np.full(len(grid_pixels), second))
                fb_conf.append(np.asarray(pred.conf_j, np.float64).ravel()[grid_pixels])

        problem = _build_problem(shapes, canon, anchors, match_a, match_b, match_conf, fb_anchor, fb_target, fb_view, fb_conf, sub, device)
        patches = np.array([(h // sub) * (w // sub) for h, w in shapes], dtype=np.float64)
        root, edges = kinematic_tree(scores, np.maximum(patches, 1.0), opts.kinematic_mode)
        self.last_run.tree_root, self.last_run.tree_edges = root, edges
        model, self.last_run.coarse_losses, self.last_run.fine_losses = align_anchors(
            problem, root, edges, opts, np.array([c.conf.mean() for c in canon]), known_intrinsics(optimizer_input, shapes))
        with torch.no_grad():
            focal, pp, cam2w, depth = model()
        return _dense_output(pairs, canon, problem, focal, pp, cam2w, depth, sub)


def align_anchors(problem: SparseProblem, root: int, edges: list[tuple[int, int]], options: SparseOptimizerOptions,
                  canon_conf: np.ndarray, known: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[SparseModel, list[float], list[float]]:
    """The two optimisation stages on a prepared problem: the model and the loss of every iteration of each.

    Coarse: poses and sizes on the 3D distances of matched anchors.  Fine (unless optim_level is
    coarse): also focals, principal points (opt_pp) and anchor depths (refine+depth), on the
    reprojection errors.  Separate from the matching so that a benchmark can run it on the
    reference's own prepared data (same initialisation, comparable loss curves).  `known`
    intrinsics (focals, principal points) stay fixed in both stages.
    """
    model = SparseModel(problem, root, edges, options.shared_intrinsics, canon_conf, known)
    model.pp.requires_grad_(False)
    model.log_focal.requires_grad_(False)
    model.core.requires_grad_(False)
    coarse = _adam_loop(model, options.lr1, options.niter1, fine=False)
    fine: list[float] = []
    if options.optim_level != "coarse" and options.niter2:
        model.pp.requires_grad_(options.opt_pp and not model.fixed_intrinsics)
        model.log_focal.requires_grad_(not model.fixed_intrinsics)
        model.core.requires_grad_(options.optim_level == "refine+depth")
        fine = _adam_loop(model, options.lr2, options.niter2, fine=True)
    return model, coarse, fine


def _adam_loop(model: SparseModel, lr: float, niter: int, fine: bool) -> list[float]:
    """Adam with the reference's cosine decay to 0; quaternions renormalised after each step."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr, betas=BETAS)
    losses: list[torch.Tensor] = []
    for step in range(niter):
        for group in optimizer.param_groups:
            group["lr"] = _cosine(step / niter, lr)
        optimizer.zero_grad(set_to_none=True)
        focal, pp, cam2w, depth = model()
        world = _anchor_points(model, depth, focal, pp, cam2w)
        loss = _loss_2d(model, world, focal, pp, cam2w) if fine else _loss_3d(model, world, cam2w)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.quat.copy_(model.quat / model.quat.norm(dim=1, keepdim=True))
        losses.append(loss.detach())
    return torch.stack(losses).cpu().tolist() if losses else []


def _build_problem(shapes: list[tuple[int, int]], canon: list[_Canonical], anchors: list[list[np.ndarray]],
                   match_a: list[np.ndarray], match_b: list[np.ndarray], match_conf: list[np.ndarray],
                   fb_anchor: list[np.ndarray], fb_target: list[np.ndarray], fb_view: list[np.ndarray],
                   fb_conf: list[np.ndarray], sub: int, device: torch.device) -> SparseProblem:
    """Flatten anchors of all views into one list; (view, local index) pairs become global anchor indices."""
    n = len(shapes)
    sizes = [int(np.prod(c.grid)) for c in canon]
    core_start = np.concatenate(([0], np.cumsum(sizes)))
    medians = np.array([max(float(np.median(c.core_depth)), 1e-12) for c in canon])
    per_view = [np.concatenate(a) if a else np.zeros(0, np.int64) for a in anchors]
    anchor_start = np.concatenate(([0], np.cumsum([len(a) for a in per_view])))
    views, pix, core, offs = [], [], [], []
    for v in range(n):
        flat = per_view[v].astype(np.int64)
        width = shapes[v][1]
        views.append(np.full(len(flat), v))
        pix.append(np.stack((flat % width, flat // width), axis=1))
        core.append(core_start[v] + _block_index(flat, width, canon[v].grid, sub))
        offs.append(canon[v].offsets.ravel()[flat])

    def glob(items: list[np.ndarray]) -> torch.Tensor:
        if not items:
            return torch.zeros(0, dtype=torch.long, device=device)
        joined = np.concatenate(items, axis=1)
        return torch.as_tensor(anchor_start[joined[0]] + joined[1], dtype=torch.long, device=device)

    def floats(items: list[np.ndarray], width: int = 0) -> torch.Tensor:
        shape = (0, width) if width else (0,)
        data = np.concatenate(items) if items else np.zeros(shape)
        return torch.as_tensor(data, dtype=torch.float32, device=device)

    return SparseProblem(
        shapes=shapes,
        core_view=torch.as_tensor(np.repeat(np.arange(n), sizes), device=device),
        core_start=core_start.tolist(),
        core_depth=torch.as_tensor(np.concatenate([c.core_depth.ravel() / m for c, m in zip(canon, medians, strict=True)]), dtype=torch.float32, device=device),
        median_depth=torch.as_tensor(medians, dtype=torch.float32, device=device),
        base_focal=torch.as_tensor([c.focal for c in canon], dtype=torch.float32, device=device),
        anchor_view=torch.as_tensor(np.concatenate(views), dtype=torch.long, device=device),
        anchor_pix=floats(pix, 2),
        anchor_core=torch.as_tensor(np.concatenate(core), dtype=torch.long, device=device),
        anchor_offset=floats(offs),
        match_a=glob(match_a),
        match_b=glob(match_b),
        match_conf=floats(match_conf),
        fallback_anchor=glob(fb_anchor),
        fallback_target=floats(fb_target, 3),
        fallback_view=torch.as_tensor(np.concatenate(fb_view) if fb_view else np.zeros(0), dtype=torch.long, device=device),
        fallback_conf=floats(fb_conf),
    )


def _dense_output(pairs: list[PairPrediction], canon: list[_Canonical], problem: SparseProblem, focal: torch.Tensor, pp: torch.Tensor,
                  cam2w: torch.Tensor, depth: torch.Tensor, sub: int) -> SceneOptimizerOutput:
    """Every pixel's depth from its anchor and offset, in view 0's frame at view 0's best pair's scale."""
    focal_np, pp_np = focal.double().cpu().numpy(), pp.double().cpu().numpy()
    poses = cam2w.double().cpu().numpy()
    base = problem.base_focal.double().cpu().numpy()
    depth_np = depth.double().cpu().numpy()
    depths = []
    for v, (h, w) in enumerate(problem.shapes):
        block = _block_index(np.arange(h * w), w, canon[v].grid, sub) + problem.core_start[v]
        offset = 1.0 + (canon[v].offsets.ravel() - 1.0) * base[v] / focal_np[v]
        depths.append((depth_np[block] * offset).reshape(h, w))
    best = max((p for p in pairs if p.i == 0), key=lambda p: float(np.mean(p.conf_i)))
    factor = float(np.median(np.asarray(best.pts3d_i)[..., 2])) / max(float(np.median(depths[0])), 1e-12)
    to_view0 = np.linalg.inv(poses[0])
    poses = np.einsum("ij,njk->nik", to_view0, poses)
    poses[:, :3, 3] *= factor
    poses[0] = np.eye(4)
    out_depths, clouds, intrinsics = [], [], []
    for v, (h, w) in enumerate(problem.shapes):
        d = depths[v] * factor
        rows, cols = np.mgrid[:h, :w]
        local = np.stack(((cols - pp_np[v, 0]) * d / focal_np[v], (rows - pp_np[v, 1]) * d / focal_np[v], d), axis=-1)
        clouds.append((local @ poses[v][:3, :3].T + poses[v][:3, 3]).astype(np.float32))
        out_depths.append(d.astype(np.float32))
        intrinsics.append(_intrinsics(float(focal_np[v]), pp_np[v]))
    return SceneOptimizerOutput(
        camera_poses=list(poses), depth_predictions=out_depths, point_clouds=clouds, intrinsics=intrinsics,
        confidences=[c.conf.astype(np.float32) for c in canon],
    )
