"""The scene-optimizer extension point: refine a feed-forward reconstruction after the fact.

Optimizers (dense global alignment, sparse global alignment, TSDF refinement) take the
model's result plus whatever raw predictions they need and return refined geometry in the
same conventions as `SceneFromViewsResult` (4x4 camera-to-world OpenCV poses, per-view point
maps in the first view's frame).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..core.errors import InvalidOptionError
from ..core.options import Options
from ..core.result import SceneFromViewsResult


@dataclass
class PairPrediction:
    """One ordered view pair (i, j) as a pairwise model predicts it, in view i's camera frame.

    `pts3d_i` (H_i, W_i, 3) are view i's points and `pts3d_j_in_i` (H_j, W_j, 3) view j's
    points, both in view i's camera frame (OpenCV axes); `conf_*` their confidences (H, W).
    Models with local features (MASt3R) also give unit descriptors `desc_*` (H, W, D) and
    their confidences `desc_conf_*` (H, W).
    """

    i: int
    j: int
    pts3d_i: np.ndarray
    conf_i: np.ndarray
    pts3d_j_in_i: np.ndarray
    conf_j: np.ndarray
    desc_i: np.ndarray | None = None
    desc_j: np.ndarray | None = None
    desc_conf_i: np.ndarray | None = None
    desc_conf_j: np.ndarray | None = None


@dataclass
class SceneOptimizerInput:
    """What an optimizer starts from: the pairwise predictions of any model.

    `pair_predictions`, `images` (the processed RGB uint8 views) and `true_shapes` ((N, 2)
    int [H, W] per view) are all an optimizer may rely on; `result` (the model's own
    reconstruction, an initial guess), `raw` (the model's raw output) and `device` are
    optional extras; `known_intrinsics` the cameras' intrinsics when the caller knows them.
    """

    pair_predictions: list[PairPrediction]
    images: list[np.ndarray]
    true_shapes: np.ndarray
    result: SceneFromViewsResult | None = None
    raw: Any = None
    device: str = "cpu"
    #: Known intrinsics (N, 3, 3) in the pixels of `images`: an optimizer that can keeps them fixed.
    known_intrinsics: np.ndarray | None = None
    #: Known camera-to-world poses (N, 4, 4), OpenCV axes, any common frame and units: an optimizer
    #: that can keeps them fixed and answers in their frame.
    known_poses: np.ndarray | None = None

    @property
    def num_views(self) -> int:
        return len(self.images)


def optimizer_input_from_result(result: SceneFromViewsResult, raw: Any = None, device: str = "cpu") -> SceneOptimizerInput:
    """Pair predictions of a multi-view model, built from its own reconstruction: one per
    ordered view pair (i, j), both views' world points re-expressed in camera i's frame."""
    to_camera = [np.linalg.inv(pose) for pose in result.camera_poses]
    points = [np.asarray(p, dtype=np.float64) for p in result.point_clouds]

    def in_camera(i: int, j: int) -> np.ndarray:
        return (points[j] @ to_camera[i][:3, :3].T + to_camera[i][:3, 3]).astype(np.float32)

    own = [in_camera(i, i) for i in range(result.num_views)]
    predictions = [
        PairPrediction(i, j, own[i], result.confidences[i], in_camera(i, j), result.confidences[j])
        for i in range(result.num_views) for j in range(result.num_views) if i != j
    ]
    shapes = np.asarray([image.shape[:2] for image in result.processed_images], dtype=np.int32)
    return SceneOptimizerInput(predictions, list(result.processed_images), shapes, result=result, raw=raw, device=device)


@dataclass
class SceneOptimizerOutput:
    """Refined geometry; every list has one entry per view of the input result."""

    camera_poses: list[np.ndarray]
    depth_predictions: list[np.ndarray]
    point_clouds: list[np.ndarray]
    intrinsics: list[np.ndarray]
    confidences: list[np.ndarray]
    global_mesh: Any | None = None


@dataclass(frozen=True)
class OptimizerOptions(Options):
    """Base of each optimizer's option declaration (its keyword arguments, ROS ``optimizer.*``)."""

    prefix: ClassVar[str] = "optimizer."


class SceneOptimizerBase(abc.ABC):
    """A scene optimizer; its settings are declared in `options_class` and checked when built."""

    name: ClassVar[str]
    options_class: ClassVar[type[OptimizerOptions]] = OptimizerOptions
    #: Whether it needs the pairs' local descriptors (`desc_*`), which only some models give.
    needs_descriptors: ClassVar[bool] = False
    #: Whether it keeps `SceneOptimizerInput.known_intrinsics` fixed (otherwise it has no use for them).
    uses_known_intrinsics: ClassVar[bool] = False
    #: Whether it keeps `SceneOptimizerInput.known_poses` fixed.
    uses_known_poses: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        self.options = self.options_class.create(options)

    @abc.abstractmethod
    def optimize(self, optimizer_input: SceneOptimizerInput) -> SceneOptimizerOutput:
        """Refine `optimizer_input.result` and return the refined geometry."""


def known_intrinsics(optimizer_input: SceneOptimizerInput, shapes: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray] | None:
    """(focals (N,) = the mean of fx and fy, principal points (N, 2)) of the input's known
    intrinsics, checked against the views' (H, W) `shapes`; None when there are none."""
    known = optimizer_input.known_intrinsics
    if known is None:
        return None
    matrices = np.asarray(known, dtype=np.float64)
    if matrices.shape != (len(shapes), 3, 3) or not np.isfinite(matrices).all() or not (matrices[:, [0, 1], [0, 1]] > 0).all():
        raise InvalidOptionError(
            f"known_intrinsics of shape {matrices.shape}: expected ({len(shapes)}, 3, 3) finite pinhole matrices with positive "
            "focals, one per view, in the pixels of the optimizer input's images"
        )
    return matrices[:, [0, 1], [0, 1]].mean(axis=1), matrices[:, :2, 2].copy()


def known_poses(optimizer_input: SceneOptimizerInput) -> np.ndarray | None:
    """The input's known camera-to-world poses (N, 4, 4), checked; None when there are none."""
    known = optimizer_input.known_poses
    if known is None:
        return None
    poses = np.asarray(known, dtype=np.float64)
    rigid = bool(poses.shape == (optimizer_input.num_views, 4, 4) and np.isfinite(poses).all())
    if rigid:
        rotations = poses[:, :3, :3]
        rigid = bool(np.allclose(rotations @ rotations.transpose(0, 2, 1), np.eye(3), atol=1e-5) and (np.linalg.det(rotations) > 0).all()
                     and np.allclose(poses[:, 3], [0, 0, 0, 1]))
    if not rigid:
        raise InvalidOptionError(
            f"known_poses of shape {poses.shape}: expected ({optimizer_input.num_views}, 4, 4) rigid camera-to-world transforms, "
            "one per view"
        )
    return poses
