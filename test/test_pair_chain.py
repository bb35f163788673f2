"""Chaining pair predictions along the maximum spanning tree, on a synthetic room seen by a
perfect pairwise model (each pair in its first camera's frame, at a random scale of its own)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from scene_from_views_ros.core.errors import InvalidOptionError
from scene_from_views_ros.geometry.pair_chain import PairChain, chain_pairs, estimate_focal
from scene_from_views_ros.models.pair_graph import make_pairs
from scene_from_views_ros.optimizers.base import PairPrediction

ROOM_LOW = np.array([-3.0, -2.0, -3.5])
ROOM_HIGH = np.array([3.5, 1.5, 3.0])


def pixel_rays(height, width, focal):
    """Camera-frame rays with z = 1 through the pixel centres (integer coordinates), principal
    point at the image centre."""
    u, v = np.meshgrid(np.arange(width) - width / 2, np.arange(height) - height / 2)
    return np.stack([u / focal, v / focal, np.ones_like(u)], axis=-1)


def render_room(pose, height, width, focal):
    """Camera-frame points (H, W, 3) of the inside of an axis-aligned box room."""
    rays = pixel_rays(height, width, focal)
    directions = rays @ pose[:3, :3].T
    centre = pose[:3, 3]
    with np.errstate(divide="ignore"):
        bound = np.where(directions > 0, ROOM_HIGH, ROOM_LOW)
        exits = np.where(directions != 0, (bound - centre) / directions, np.inf)
    return rays * exits.min(axis=-1, keepdims=True)


class Scene:
    """Cameras inside the room with known poses, focals and image sizes."""

    def __init__(self, num_views=5, seed=0, sizes=None, focals=None):
        rng = np.random.default_rng(seed)
        self.sizes = sizes or [(24, 32)] * num_views
        self.focals = np.array(focals or [28.0] * num_views)
        self.poses = []
        for k in range(num_views):
            pose = np.eye(4)
            angles = [rng.uniform(-0.2, 0.2), 2 * np.pi * k / num_views * 0.35 + rng.uniform(-0.2, 0.2), rng.uniform(-0.1, 0.1)]
            pose[:3, :3] = Rotation.from_euler("xyz", angles).as_matrix()
            pose[:3, 3] = rng.uniform(-0.8, 0.8, 3)
            self.poses.append(pose)
        self.poses = np.array(self.poses)
        self.points = [render_room(pose, h, w, f) for pose, (h, w), f in zip(self.poses, self.sizes, self.focals, strict=True)]

    def relative(self, i, j):
        """Camera j to camera i."""
        return np.linalg.inv(self.poses[i]) @ self.poses[j]

    def pair(self, i, j, scale, conf_level, rng):
        to_i = self.relative(i, j)
        pts_j = self.points[j] @ to_i[:3, :3].T + to_i[:3, 3]
        conf_i = conf_level * rng.uniform(0.5, 1.5, self.sizes[i])
        conf_j = conf_level * rng.uniform(0.5, 1.5, self.sizes[j])
        return PairPrediction(i, j, scale * self.points[i], conf_i, scale * pts_j, conf_j)

    def predictions(self, pairs, seed=1):
        rng = np.random.default_rng(seed)
        return [self.pair(i, j, rng.uniform(0.3, 3.0), rng.uniform(1.0, 5.0), rng) for i, j in pairs]


def rotation_angle(a, b):
    return float(Rotation.from_matrix(a.T @ b).magnitude())


def pose_errors(chain: PairChain, scene: Scene):
    """Rotation errors (rad) and position errors relative to the scene size, after removing
    the chain's scale (that of the prediction of view 0's own points)."""
    truth = np.array([scene.relative(0, k) for k in range(len(scene.poses))])
    scale = np.linalg.norm(chain.camera_poses[1, :3, 3]) / np.linalg.norm(truth[1, :3, 3])
    rotations = [rotation_angle(c[:3, :3], t[:3, :3]) for c, t in zip(chain.camera_poses, truth, strict=True)]
    positions = np.abs(chain.camera_poses[:, :3, 3] / scale - truth[:, :3, 3]).max()
    return np.array(rotations), positions, scale


def assert_exact(chain: PairChain, scene: Scene, predictions):
    num_views = len(scene.poses)
    assert np.array_equal(chain.camera_poses[0], np.eye(4))
    rotations, positions, scale = pose_errors(chain, scene)
    assert rotations.max() < 1e-6
    assert positions < 1e-6
    # the scale is that of one pair prediction with view 0's own points, and view 0's points are those
    own = [p for p in predictions if p.i == 0 and np.allclose(p.pts3d_i, scale * scene.points[0], rtol=1e-6)]
    assert own, "the chain's scale is no pair's scale"
    np.testing.assert_allclose(chain.point_clouds[0], own[0].pts3d_i, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(chain.focals, scene.focals, rtol=1e-6)
    for k in range(num_views):
        height, width = scene.sizes[k]
        np.testing.assert_allclose(chain.intrinsics[k], [[scene.focals[k], 0, width / 2], [0, scene.focals[k], height / 2], [0, 0, 1]], rtol=1e-6)
        # world points agree with the truth seen from camera 0, and depths with each camera's own z
        to_0 = scene.relative(0, k)
        expected = scale * (scene.points[k] @ to_0[:3, :3].T + to_0[:3, 3])
        np.testing.assert_allclose(chain.point_clouds[k], expected, rtol=0, atol=1e-6 * scale * 5)
        np.testing.assert_allclose(chain.depths[k], scale * scene.points[k][..., 2], rtol=1e-6)
        assert chain.point_clouds[k].dtype == chain.depths[k].dtype == chain.confidences[k].dtype == np.float32
        assert chain.confidences[k].shape == (height, width)
    assert chain.camera_poses.shape == (num_views, 4, 4) and chain.camera_poses.dtype == np.float64
    assert len(chain.tree_edges) == num_views - 1


def test_estimate_focal_on_a_pinhole_point_map():
    scene = Scene(num_views=1, sizes=[(24, 32)], focals=[31.7])
    points = scene.points[0]
    assert estimate_focal(points) == pytest.approx(31.7, rel=1e-6)
    assert estimate_focal(points * 2.5, conf=np.random.default_rng(0).uniform(1, 3, (24, 32))) == pytest.approx(31.7, rel=1e-6)
    assert estimate_focal(points, max_focal=20.0) == 20.0
    # a principal point off the centre
    shifted = points.copy()
    shifted[..., :2] -= 1.5 * shifted[..., 2:3] / 31.7
    assert estimate_focal(shifted, principal_point=(17.5, 13.5)) == pytest.approx(31.7, rel=1e-6)
    # flying pixels barely move the robust (Weiszfeld) fit
    noisy = points.copy()
    noisy[::7, ::5, :2] *= 1.5
    assert estimate_focal(noisy) == pytest.approx(31.7, rel=0.02)
    with pytest.raises(InvalidOptionError, match=r"expected a point map \(H, W, 3\)"):
        estimate_focal(points[..., :2])
    with pytest.raises(InvalidOptionError, match="no usable point"):
        estimate_focal(np.zeros((4, 4, 3)))


@pytest.mark.parametrize("graph", ["complete", "swin-1", "swin-2", "swin-1-noncyclic", "logwin-2"])
def test_chain_recovers_the_scene(graph):
    scene = Scene(num_views=5, sizes=[(24, 32), (24, 32), (20, 28), (24, 32), (24, 30)], focals=[28.0, 30.0, 24.0, 26.5, 28.0])
    predictions = scene.predictions(make_pairs(5, graph))
    chain = chain_pairs(predictions, 5)
    assert_exact(chain, scene, predictions)
    if graph == "swin-1-noncyclic":
        assert {tuple(sorted(e)) for e in chain.tree_edges} == {(0, 1), (1, 2), (2, 3), (3, 4)}


def test_tree_follows_the_confidences():
    scene = Scene(num_views=4)
    predictions = scene.predictions(make_pairs(4, "complete"))
    chain = chain_pairs(predictions, 4)
    scores = {(p.i, p.j): p.conf_i.mean() * p.conf_j.mean() for p in predictions}
    # the first tree edge is the best-scoring pair; each edge is the better direction of its pair
    assert chain.tree_edges[0] == max(scores, key=scores.get)
    for i, j in chain.tree_edges:
        assert scores[(i, j)] >= scores[(j, i)]
    # the tree is the maximum spanning tree: brute force over all spanning trees of K4
    best = {tuple(sorted(e)): max(scores[e], scores[e[::-1]]) for e in scores}
    edges = list(best)

    def spans(tree):
        reached, grow = {0}, True
        while grow:
            grow = False
            for a, b in tree:
                if (a in reached) != (b in reached):
                    reached |= {a, b}
                    grow = True
        return len(reached) == 4

    trees = [t for t in itertools.combinations(edges, 3) if spans(t)]
    heaviest = max(trees, key=lambda t: sum(best[e] for e in t))
    assert {tuple(sorted(e)) for e in chain.tree_edges} == set(heaviest)


def corrupt(scene, predictions, bad, conf_level, seed=3):
    """Replace both directions of pair `bad` by a wrong relative pose plus noise."""
    rng = np.random.default_rng(seed)
    out = []
    for p in predictions:
        if {p.i, p.j} != set(bad):
            out.append(p)
            continue
        wrong = np.eye(4)
        wrong[:3, :3] = Rotation.from_rotvec([0.0, 0.3, 0.1]).as_matrix()
        wrong[:3, 3] = [0.5, 0.0, 0.2]
        to_i = scene.relative(p.i, p.j) @ wrong
        pts_j = scene.points[p.j] @ to_i[:3, :3].T + to_i[:3, 3] + rng.normal(0, 0.3, scene.points[p.j].shape)
        conf = conf_level * np.ones(p.conf_i.shape), conf_level * np.ones(p.conf_j.shape)
        out.append(PairPrediction(p.i, p.j, p.pts3d_i, conf[0], pts_j, conf[1]))
    return out


def test_low_confidence_corrupted_pair_is_bypassed():
    scene = Scene(num_views=5)
    clean = scene.predictions(make_pairs(5, "complete"))
    predictions = corrupt(scene, clean, (1, 3), conf_level=0.2)
    chain = chain_pairs(predictions, 5)
    assert not any({i, j} == {1, 3} for i, j in chain.tree_edges)
    assert_exact(chain, scene, predictions)


def test_high_confidence_corrupted_pair_is_used():
    # the counterpart of the test above: the same corruption trusted by its confidence is
    # taken by the tree and spoils the result, so the tree is driven by the confidences
    scene = Scene(num_views=5)
    predictions = corrupt(scene, scene.predictions(make_pairs(5, "complete")), (1, 3), conf_level=50.0)
    chain = chain_pairs(predictions, 5)
    assert {chain.tree_edges[0][0], chain.tree_edges[0][1]} == {1, 3}
    rotations, _positions, _scale = pose_errors(chain, scene)
    assert rotations.max() > 0.05


def test_one_direction_only_falls_back_to_pnp():
    # oneref without symmetrisation: views 1..3 start no pair, so PnP gives their pose and focal
    scene = Scene(num_views=4)
    predictions = scene.predictions(make_pairs(4, "oneref", symmetrize=False))
    chain = chain_pairs(predictions, 4, min_conf_thr=0.0)
    rotations, positions, _scale = pose_errors(chain, scene)
    assert np.array_equal(chain.camera_poses[0], np.eye(4))
    assert rotations.max() < 1e-6
    assert positions < 1e-6
    np.testing.assert_allclose(chain.focals, scene.focals, rtol=1e-6)


def test_disconnected_graph_names_the_views_and_the_fix():
    scene = Scene(num_views=5)
    pairs = [(0, 1), (1, 0), (1, 2), (2, 1), (3, 4), (4, 3)]
    with pytest.raises(InvalidOptionError, match=r"views \[3, 4\] share no chain of pairs with view 0.*scene_graph=\"complete\" or a larger winsize"):
        chain_pairs(scene.predictions(pairs), 5)
    with pytest.raises(InvalidOptionError, match=r"view \[4\] share no chain") as info:
        chain_pairs(scene.predictions(pairs[:4] + [(2, 3), (3, 2)]), 5)
    assert isinstance(info.value, ValueError)


def test_bad_inputs():
    scene = Scene(num_views=3)
    predictions = scene.predictions(make_pairs(3, "complete"))
    with pytest.raises(InvalidOptionError, match="at least 2 views"):
        chain_pairs(predictions, 1)
    with pytest.raises(InvalidOptionError, match=r"pair \(2, 0\) is not allowed with num_views=2"):
        chain_pairs(predictions, 2)
    with pytest.raises(InvalidOptionError, match="empty"):
        chain_pairs([], 3)
    p = predictions[0]
    small = PairPrediction(p.i, p.j, p.pts3d_i[:10], p.conf_i[:10], p.pts3d_j_in_i, p.conf_j)
    with pytest.raises(InvalidOptionError, match="same pixel grid"):
        chain_pairs([small, *predictions[1:]], 3)
