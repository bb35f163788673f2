"""Chain pairwise predictions into one reconstruction without an optimizer.

A pairwise model (DUSt3R, MASt3R) predicts, for each view pair (i, j), both views' points in
view i's camera frame, at a scale of the pair's own.  `chain_pairs` glues those pairs along a
maximum spanning tree of the pair graph, scored by the pairs' confidences, as DUSt3R's
minimum-spanning-tree initialisation does: the strongest pair fixes the world, and every
further tree edge is placed by a confidence-weighted similarity (Procrustes with scale) of
the view it shares with what is already placed.  Each view then gets a focal length from its
own-frame points (`estimate_focal`) and a camera pose from the rigid part of the similarity
that carries its own-frame points onto its world points.

This is the fast path, and the starting point of a global alignment: its accuracy is that
of the tree's pairs, with no averaging over the other pairs.

Differences from the reference, on purpose:

* the pose and focal of a view come from its own points in the best-scoring pair that
  starts with it (tree pairs first, as the reference), by Procrustes; the reference takes
  the first such tree pair its queue reaches (a deferred pair can come after a weaker
  one), and uses PnP for views that start no tree pair; we keep PnP (`_pnp_pose`, with a
  refined focal) only for views that start no pair at all;
* the reference estimates a newly reached view's focal from the previous tree edge's points
  (a stale variable); here it is always the view's own points, those that give its pose;
* ties between equal scores are broken by the pair's position in the input, so the result
  does not depend on scipy's sort;
* the result is expressed in view 0's camera frame at the scale of the pair prediction that
  gives view 0's pose, instead of in the first tree edge's frame.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

from ..core.errors import InvalidOptionError
from .sim3 import apply_sim3, decompose_sim3, invert_sim3, transform_pose, umeyama

if TYPE_CHECKING:
    from ..optimizers.base import PairPrediction


@dataclass(frozen=True)
class PairChain:
    """A reconstruction chained from pair predictions, in view 0's camera frame.

    `camera_poses` (N, 4, 4) camera-to-world (OpenCV axes), view 0's exactly identity;
    `focals` (N,) and `intrinsics` (N, 3, 3) in pixels with the principal point at the
    image centre (W / 2, H / 2); `point_clouds` (H, W, 3) world points, `depths` (H, W)
    their z in each view's own camera, `confidences` (H, W) the best confidence any pair
    gives each pixel; `tree_edges` the pairs (i, j) used to place the views, the first
    one the strongest, which fixed the world.
    """

    camera_poses: np.ndarray
    focals: np.ndarray
    intrinsics: np.ndarray
    point_clouds: list[np.ndarray]
    depths: list[np.ndarray]
    confidences: list[np.ndarray]
    tree_edges: list[tuple[int, int]]


def _centred_pixels(height: int, width: int, principal_point: tuple[float, float] | None) -> np.ndarray:
    """Pixel coordinates (H, W, 2) relative to the principal point (default: the image centre)."""
    cx, cy = (width / 2.0, height / 2.0) if principal_point is None else principal_point
    u, v = np.meshgrid(np.arange(width, dtype=np.float64) - cx, np.arange(height, dtype=np.float64) - cy)
    return np.stack([u, v], axis=-1)


def estimate_focal(
    pts3d: np.ndarray,
    conf: np.ndarray | None = None,
    principal_point: tuple[float, float] | None = None,
    min_focal: float = 0.0,
    max_focal: float = np.inf,
    iterations: int = 10,
) -> float:
    """Focal length (pixels, square pixels) of a camera-frame point map (H, W, 3).

    A pixel (u, v) sees the point (x, y, z) when (u, v) - pp = f (x, y) / z, so f is the
    1D fit of the pixel offsets to the projected rays.  As in DUSt3R, the least-squares
    fit starts Weiszfeld iterations towards the L1 (median-like) fit, which shrugs off the
    flying pixels at depth edges.  `conf` weights the pixels (DUSt3R weights them equally);
    points with non-finite coordinates or z = 0 are ignored.  The result is clipped to
    [`min_focal`, `max_focal`] pixels (DUSt3R's bounds are multiples of a 60-degree focal).
    """
    points = np.asarray(pts3d, dtype=np.float64)
    if points.ndim != 3 or points.shape[-1] != 3:
        raise InvalidOptionError(f"pts3d of shape {points.shape} is not allowed: expected a point map (H, W, 3)")
    height, width = points.shape[:2]
    depth = points[..., 2]
    valid = np.isfinite(points).all(axis=-1) & (depth != 0)
    weights: np.ndarray = np.ones((height, width))
    if conf is not None:
        weights = np.asarray(conf, dtype=np.float64)
        if weights.shape != (height, width):
            raise InvalidOptionError(f"conf of shape {weights.shape} does not match pts3d {points.shape}: expected ({height}, {width})")
        valid &= np.isfinite(weights) & (weights > 0)
    rays = points[valid][:, :2] / depth[valid][:, None]
    pixels = _centred_pixels(height, width, principal_point)[valid]
    weights = weights[valid]
    dot_ray_pixel = np.sum(rays * pixels, axis=1)
    dot_ray_ray = np.sum(rays * rays, axis=1)
    if not np.sum(weights * dot_ray_ray) > 0:
        raise InvalidOptionError(
            "pts3d has no usable point off the optical axis (finite, z != 0, positive confidence): the focal length "
            "cannot be estimated; check the point map"
        )
    focal = np.sum(weights * dot_ray_pixel) / np.sum(weights * dot_ray_ray)
    # separate contiguous columns: hypot over them is 3x faster than a row norm of (N, 2)
    ray_x, ray_y, pixel_x, pixel_y = (np.ascontiguousarray(a) for a in (rays[:, 0], rays[:, 1], pixels[:, 0], pixels[:, 1]))
    for _ in range(iterations):
        distance = np.hypot(pixel_x - focal * ray_x, pixel_y - focal * ray_y)
        irls = weights / np.maximum(distance, 1e-8)
        focal = np.dot(irls, dot_ray_pixel) / np.dot(irls, dot_ray_ray)
    return float(np.clip(focal, min_focal, max_focal))


def _fit_sim3(source: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Confidence-weighted Sim(3) taking `source` points onto `target` (the same pixels)."""
    source = np.asarray(source, dtype=np.float64).reshape(-1, 3)
    target = np.asarray(target, dtype=np.float64).reshape(-1, 3)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    valid = np.isfinite(source).all(axis=1) & np.isfinite(target).all(axis=1)
    weights = np.where(np.isfinite(weights), np.maximum(weights, 0.0), 0.0)
    if not weights[valid].sum() > 0:
        weights = np.ones_like(weights)
    valid &= weights > 0
    if valid.sum() < 3:
        raise InvalidOptionError(
            f"only {int(valid.sum())} pixels have finite points and a positive confidence: at least 3 are needed to align "
            "two pair predictions; check the model's output"
        )
    return umeyama(source[valid], target[valid], weights[valid])


def _pnp_pose(
    world: np.ndarray, mask: np.ndarray, focal: float | None = None, refine_steps: int = 40
) -> tuple[float, np.ndarray] | None:
    """Focal and camera-to-world pose of a view from its world points alone (RANSAC PnP).

    Only for a view that starts no pair, so that none of its points is in its own frame.
    As DUSt3R, the focal is the best of a geometric scan (most RANSAC inliers; on small
    images many focals keep every point, so the lower reprojection error decides), refined
    here by a golden-section search on the inliers' reprojection error (after an LM polish of
    each pose) between the scan's neighbouring values.  Returns None when fewer than 4 points are usable.
    """
    height, width = world.shape[:2]
    mask = mask & np.isfinite(world).all(axis=-1)
    if mask.sum() < 4:
        return None
    principal_point = np.array([width / 2.0, height / 2.0])
    all_pixels = (_centred_pixels(height, width, None) + principal_point)[mask]
    all_points = world[mask].astype(np.float64)

    def camera(focal_px: float) -> np.ndarray:
        return np.array([[focal_px, 0.0, principal_point[0]], [0.0, focal_px, principal_point[1]], [0.0, 0.0, 1.0]])

    def solve(focal_px: float, inliers: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        points, pixels = all_points[inliers], all_pixels[inliers]
        _ok, rvec, tvec = cv2.solvePnP(points, pixels, camera(focal_px), None, flags=cv2.SOLVEPNP_SQPNP)
        # SQPnP minimises an object-space error; polishing the reprojection error makes it a
        # smooth function of the focal, which the golden-section search needs.
        rvec, tvec = cv2.solvePnPRefineLM(points, pixels, camera(focal_px), None, rvec, tvec)
        projected, _ = cv2.projectPoints(points, rvec, tvec, camera(focal_px), None)
        return float(np.mean(np.sum((projected.reshape(-1, 2) - pixels) ** 2, axis=1))), rvec, tvec

    size = max(width, height)
    candidates = [focal] if focal is not None else [float(f) for f in np.geomspace(size / 2, size * 3, 21)]
    best: tuple[int, float, int, np.ndarray] | None = None  # (inliers, -error, index, inliers)
    for index, candidate in enumerate(candidates):
        success, _rvec, _tvec, found = cv2.solvePnPRansac(
            all_points, all_pixels, camera(candidate), None, iterationsCount=10, reprojectionError=5.0, flags=cv2.SOLVEPNP_SQPNP
        )
        if not success or found is None or len(found) < 4:
            continue
        inliers = found.ravel()
        error = solve(candidate, inliers)[0]
        if best is None or (len(inliers), -error) > (best[0], best[1]):
            best = (len(inliers), -error, index, inliers)
    if best is None:
        return None
    _count, _error, index, inliers = best

    chosen = candidates[index]
    if focal is None:
        low = np.log(candidates[max(index - 1, 0)])
        high = np.log(candidates[min(index + 1, len(candidates) - 1)])
        ratio = (np.sqrt(5.0) - 1.0) / 2.0
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        error_a, error_b = solve(np.exp(a), inliers)[0], solve(np.exp(b), inliers)[0]
        for _ in range(refine_steps):
            if error_a < error_b:
                high, b, error_b = b, a, error_a
                a = high - ratio * (high - low)
                error_a = solve(np.exp(a), inliers)[0]
            else:
                low, a, error_a = a, b, error_b
                b = low + ratio * (high - low)
                error_b = solve(np.exp(b), inliers)[0]
        chosen = float(np.exp((low + high) / 2.0))
    _error, rvec, tvec = solve(chosen, inliers)
    world_to_camera = np.eye(4)
    world_to_camera[:3, :3] = cv2.Rodrigues(rvec)[0]
    world_to_camera[:3, 3] = tvec.ravel()
    return chosen, invert_sim3(world_to_camera)


def check_pair_predictions(pair_predictions: Sequence[PairPrediction], num_views: int) -> list[tuple[int, int] | None]:
    """Check the pairs' view indices and map shapes (shared by every consumer of pair
    predictions); return each view's (H, W), None for a view no pair mentions."""
    if isinstance(num_views, bool) or not isinstance(num_views, int) or num_views < 2:
        raise InvalidOptionError(
            f"num_views={num_views!r} is not allowed: a pairwise model needs at least 2 views; duplicate the image on "
            "purpose if you want a single-view result"
        )
    if not pair_predictions:
        raise InvalidOptionError(
            "no pair predictions (pair_predictions is empty): run the pairwise model on the pairs of make_pairs(num_views, ...)"
        )
    shapes: list[tuple[int, int] | None] = [None] * num_views
    for pair in pair_predictions:
        i, j = pair.i, pair.j
        if not (isinstance(i, (int, np.integer)) and isinstance(j, (int, np.integer)) and 0 <= i < num_views and 0 <= j < num_views):
            raise InvalidOptionError(
                f"pair ({i}, {j}) is not allowed with num_views={num_views}: it names a view outside [0, {num_views - 1}]; "
                "pair indices must index the images"
            )
        if i == j:
            raise InvalidOptionError(
                f"pair ({i}, {j}) is not allowed with num_views={num_views}: it pairs a view with itself; a pair needs two "
                "different views"
            )
        for view, points, conf, name in ((i, pair.pts3d_i, pair.conf_i, "pts3d_i"), (j, pair.pts3d_j_in_i, pair.conf_j, "pts3d_j_in_i")):
            points_shape, conf_shape = np.shape(points), np.shape(conf)
            if len(points_shape) != 3 or points_shape[2] != 3 or conf_shape != points_shape[:2]:
                raise InvalidOptionError(
                    f"pair ({i}, {j}): {name} {points_shape} with confidences {conf_shape} is not allowed: expected "
                    "points (H, W, 3) and confidences (H, W)"
                )
            known = shapes[int(view)]
            if known is not None and known != conf_shape:
                raise InvalidOptionError(
                    f"pair ({i}, {j}): view {view} is {conf_shape[0]}x{conf_shape[1]} here but {known[0]}x{known[1]} in "
                    "another pair; every pair must predict a view on the same pixel grid"
                )
            shapes[int(view)] = (int(conf_shape[0]), int(conf_shape[1]))
    return shapes


def view_confidences(pair_predictions: Sequence[PairPrediction], shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Each view's best confidence over the pairs that predict it (the references' `im_conf`)."""
    best: list[np.ndarray] = [np.zeros(shape, dtype=np.float32) for shape in shapes]
    for pair in pair_predictions:
        best[pair.i] = np.maximum(best[pair.i], np.asarray(pair.conf_i, dtype=np.float32))
        best[pair.j] = np.maximum(best[pair.j], np.asarray(pair.conf_j, dtype=np.float32))
    return best


def check_pairs_connected(edges: Iterable[tuple[int, int]], num_views: int) -> None:
    """Raise, naming the views cut off from view 0, unless the pairs connect all views (their
    relative scale and pose would be free otherwise)."""
    edge_list = [(int(a), int(b)) for a, b in edges]
    graph = coo_matrix((np.ones(len(edge_list)), ([a for a, _b in edge_list], [b for _a, b in edge_list])), shape=(num_views, num_views))
    count, labels = connected_components(graph, directed=False)
    if count == 1:
        return
    cut_off = [int(view) for view in np.flatnonzero(labels != labels[0])]
    groups = [[int(view) for view in np.flatnonzero(labels == label)] for label in np.unique(labels)]
    raise InvalidOptionError(
        f"the pairs do not connect all {num_views} views: view{'s' if len(cut_off) > 1 else ''} {cut_off} "
        f"share no chain of pairs with view 0 (connected groups: {groups}); infer more pairs, e.g. "
        'scene_graph="complete" or a larger winsize'
    )


def chain_pairs(
    pair_predictions: Sequence[PairPrediction],
    num_views: int,
    min_conf_thr: float = 3.0,
    focal_range: tuple[float, float] = (0.5, 3.5),
) -> PairChain:
    """One reconstruction from pairwise predictions, glued along the most confident tree.

    Each unordered pair is scored, as DUSt3R, by mean(conf_i) * mean(conf_j) of its
    better-scoring direction; the maximum spanning tree of those scores decides which
    predictions place the views, so an unreliable pair is bypassed when the graph allows.
    `min_conf_thr` masks the pixels of the PnP fallback (see `_pnp_pose`); `focal_range`
    bounds each focal length, in multiples of the view's 60-degree-field-of-view focal
    (max(H, W) / (2 tan 30 deg)), as DUSt3R bounds them: a degenerate point map (random
    weights, a textureless wall) cannot give a zero or negative focal.
    """
    shapes = check_pair_predictions(pair_predictions, num_views)
    scores = np.array([float(np.mean(pair.conf_i)) * float(np.mean(pair.conf_j)) for pair in pair_predictions])
    scores = np.where(np.isfinite(scores), scores, -np.inf)
    # Best first; ties keep the input order (a stable sort), so the tree is deterministic.
    order = np.argsort(-scores, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))

    best_of_edge: dict[tuple[int, int], int] = {}
    for index in order:
        pair = pair_predictions[index]
        best_of_edge.setdefault((min(pair.i, pair.j), max(pair.i, pair.j)), int(index))
    check_pairs_connected(best_of_edge, num_views)

    # The spanning tree depends only on the order of the weights, so ranks (all positive,
    # which keeps scipy from dropping an edge as a zero) stand in for the negated scores.
    edge_list = list(best_of_edge.items())
    weights = [1.0 + rank[index] for _edge, index in edge_list]
    graph = coo_matrix(
        (weights, ([a for (a, _b), _index in edge_list], [b for (_a, b), _index in edge_list])), shape=(num_views, num_views)
    )
    tree = minimum_spanning_tree(graph.tocsr()).tocoo()
    tree_pairs = sorted((best_of_edge[(min(a, b), max(a, b))] for a, b in zip(tree.row, tree.col, strict=True)), key=lambda k: rank[k])

    # Place the views: the strongest pair fixes the world; each further pair aligns the
    # view it shares with the placed ones and brings in the other (reference order: a pair
    # not touching the placed views yet goes to the back of the queue).
    world: list[np.ndarray | None] = [None] * num_views
    first = pair_predictions[tree_pairs[0]]
    world[first.i] = np.asarray(first.pts3d_i, dtype=np.float64)
    world[first.j] = np.asarray(first.pts3d_j_in_i, dtype=np.float64)
    tree_edges = [(int(first.i), int(first.j))]
    queue = deque(tree_pairs[1:])
    while queue:
        index = queue.popleft()
        pair = pair_predictions[index]
        placed_i, placed_j = world[pair.i], world[pair.j]
        if placed_i is not None:
            transform = _fit_sim3(pair.pts3d_i, placed_i, pair.conf_i)
            world[pair.j] = apply_sim3(transform, np.asarray(pair.pts3d_j_in_i, dtype=np.float64))
        elif placed_j is not None:
            transform = _fit_sim3(pair.pts3d_j_in_i, placed_j, pair.conf_j)
            world[pair.i] = apply_sim3(transform, np.asarray(pair.pts3d_i, dtype=np.float64))
        else:
            queue.append(index)
            continue
        tree_edges.append((int(pair.i), int(pair.j)))

    # Each view's own-frame points: the best-scoring pair starting with it, tree pairs first.
    in_tree = set(tree_pairs)
    own: list[int | None] = [None] * num_views
    for index in sorted(range(len(pair_predictions)), key=lambda k: (k not in in_tree, rank[k])):
        view = pair_predictions[index].i
        if own[view] is None:
            own[view] = index

    assert all(shape is not None for shape in shapes)  # check_pairs_connected saw every view in a pair
    confidences = view_confidences(pair_predictions, [shape for shape in shapes if shape is not None])

    poses = np.tile(np.eye(4), (num_views, 1, 1))
    focals = np.zeros(num_views)
    own_transforms: list[np.ndarray | None] = [None] * num_views
    for view in range(num_views):
        points = world[view]
        assert points is not None
        index = own[view]
        base = max(points.shape[:2]) / (2 * np.tan(np.deg2rad(30.0)))
        min_focal, max_focal = focal_range[0] * base, focal_range[1] * base
        if index is not None:
            pair = pair_predictions[index]
            transform = _fit_sim3(pair.pts3d_i, points, pair.conf_i)
            _scale, rotation, translation = decompose_sim3(transform)
            poses[view, :3, :3], poses[view, :3, 3] = rotation, translation
            focals[view] = estimate_focal(pair.pts3d_i, min_focal=min_focal, max_focal=max_focal)
            own_transforms[view] = transform
            continue
        mask = confidences[view] > min_conf_thr
        if mask.sum() < 4:
            mask = np.ones_like(mask)
        found = _pnp_pose(points, mask)
        if found is None:
            raise InvalidOptionError(
                f"view {view} starts no pair and PnP on its points failed, so it has no camera pose; symmetrise the "
                "pairs (make_pairs(..., symmetrize=True))"
            )
        focals[view] = float(np.clip(found[0], min_focal, max_focal))
        poses[view] = found[1]

    # Into view 0's camera frame, at the scale of the prediction of view 0's own points.
    anchor = own_transforms[0]
    to_view0 = invert_sim3(anchor if anchor is not None else poses[0])
    camera_poses = np.stack([transform_pose(to_view0, pose) for pose in poses])
    camera_poses[0] = np.eye(4)
    point_clouds, depths = [], []
    for view in range(num_views):
        points = world[view]
        assert points is not None
        moved = apply_sim3(to_view0, points)
        point_clouds.append(moved.astype(np.float32))
        depths.append(apply_sim3(invert_sim3(camera_poses[view]), moved)[..., 2].astype(np.float32))

    intrinsics = np.tile(np.eye(3), (num_views, 1, 1))
    intrinsics[:, 0, 0] = intrinsics[:, 1, 1] = focals
    for view, shape in enumerate(shapes):
        assert shape is not None
        intrinsics[view, 0, 2], intrinsics[view, 1, 2] = shape[1] / 2.0, shape[0] / 2.0
    return PairChain(
        camera_poses=camera_poses,
        focals=focals,
        intrinsics=intrinsics,
        point_clouds=point_clouds,
        depths=depths,
        confidences=confidences,
        tree_edges=tree_edges,
    )
