"""MV-DUSt3R and MV-DUSt3R+ on the core API: every view of a window in one network pass.

The network (networks/mvdust3r.py) gives every view's points in view 0's camera frame.  The
variant comes from the checkpoint itself: its stored constructor string (parsed, never
evaluated) says MV-DUSt3R (MVD.pth) or MV-DUSt3R+ (`m_ref_flag`, MVDp_s1/s2.pth; the stage
is read from the file name, as the reference demo does, since s1 and s2 differ in weights only).

Views: preprocessing is the references' `load_images` at 224 (the short side resized, the
centre square kept), byte for byte.  As the demo, views 1-3 are swapped with views spread
over the window before the network (MV-DUSt3R+ takes its 4 reference views from the front of
its input: view 0 and three spread ones); outputs come back in the caller's order.
Unlike the demo, BatchNorm runs in eval mode (the running statistics the weights were trained
with): the demo never switches the network to eval, so its heads use each call's batch statistics.

Post-processing follows the demo: pixels under the `min_conf_thr` percentile of all views'
confidences are masked; the focal comes from view 0's points (DUSt3R's Weiszfeld fit on the
pixels above its 3rd confidence percentile); each view's pose is OpenCV's RANSAC PnP of its
masked points at that focal.  View 0's pose is the identity: its camera frame is the frame
the network predicts in.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import torch

from ..core.base import ModelOptions, checkpoint_option
from ..core.checkpoint import build_network, read_pickle, resolve_checkpoint
from ..core.errors import CheckpointMismatchError, InvalidImageError, InvalidOptionError
from ..core.options import option
from ..core.result import SceneFromViewsResult
from ..core.types import SceneFromViewsType
from ..geometry.camera import pnp_pose
from ..geometry.pair_chain import estimate_focal
from .dust3r import SQUARE_SIZE, PairViews, network_dtype_option, preprocess_pair_images, processed_size, stored_constructor, wrong_family
from .networks.croco_stereo import ConfigError, WrongFamilyError
from .networks.mvdust3r import NUM_REFERENCES, MvDust3r, MvDust3rConfig
from .one_pass import OnePassModel, ViewOutputs
from .vggt import autocast_dtype

logger = logging.getLogger(__name__)

FOCAL_CONF_FRACTION = 0.03  # the demo fits the focal on view 0's pixels above this confidence quantile
PNP_REPROJECTION_PX = 8.0  # OpenCV's default RANSAC threshold, which the demo keeps
GAUSSIAN_HEADS = "downstream_GS_head."


@dataclass(frozen=True)
class MvDust3rOptions(ModelOptions):
    """The options of `SceneFromViewsMvDust3r` (ROS: ``model.<name>``); defaults = the reference demo."""

    checkpoint: str = checkpoint_option("Zhenggang/MV-DUSt3R/checkpoints/MVDp_s2.pth")
    dtype: str = network_dtype_option()
    min_conf_thr: float = option(
        3.0, "Pixels under this percentile of all the window's confidences are left out of the clouds, the depth "
        "images, the map and the PnP poses (the demo's 3).", unit="percentile", low=0.0, high=100.0,
    )
    niter_PnP: int = option(100, "RANSAC iterations of each PnP pose (OpenCV's default, as the demo).", unit="iterations", low=1, high=100000)


class MvDust3rOutputs(ViewOutputs):
    """Raw outputs per view in the caller's order: `pts3d` (view 0's points in its own frame,
    the others' in view 0's frame) and `conf`; `reference_views`: the views the network used
    as references (MV-DUSt3R: view 0; MV-DUSt3R+: four)."""

    def __init__(self, outputs: Mapping[str, Any], reference_views: list[int]) -> None:
        super().__init__(outputs)
        self.reference_views = list(reference_views)


def demo_view_order(count: int) -> list[int]:
    """The order in which the reference demo feeds `count` views to the network: views 1-3
    swapped with views spread over the sequence (under 12 views: 1<->3, then 2<->6).  The
    swaps are disjoint, so applying the order twice restores the caller's order."""
    order = list(range(count))

    def swap(a: int, b: int) -> None:
        order[a], order[b] = order[b], order[a]

    if count < 12:
        if count > 3:
            swap(1, 3)
        if count > 6:
            swap(2, 6)
    else:
        for k in (1, 2, 3):
            swap(k, count * k // 4 + 1)
    return order


def read_network_config(weights: Path) -> MvDust3rConfig:
    """The architecture stored in an official .pth (args.model), the skip width from its tensors."""
    if weights.suffix == ".safetensors":
        raise CheckpointMismatchError(
            f"{weights} is not an MV-DUSt3R checkpoint: the releases are .pth files holding their network description "
            "(args.model), such as MVDp_s2.pth of Zhenggang/MV-DUSt3R; a .safetensors file is another model's "
            "(Fast3R, DUSt3R, MASt3R, VGGT: use its model_type)"
        )
    try:
        cfg = MvDust3rConfig.from_constructor(stored_constructor(weights, "mvdust3r"))
    except WrongFamilyError as error:
        raise wrong_family(weights, error.family, "mvdust3r") from error
    except ConfigError as error:
        raise CheckpointMismatchError(f"{weights}: {error}") from error
    loaded = read_pickle(weights)
    state = loaded.get("model") if isinstance(loaded, Mapping) else None
    first_skip = state.get("downstream_head1.skip_proj.0.conv.weight") if isinstance(state, Mapping) else None
    if first_skip is None:
        raise CheckpointMismatchError(f"{weights} holds no point-head skip branch (downstream_head1.skip_proj): is it an MV-DUSt3R checkpoint?")
    return cfg.with_skip_width(int(first_skip.shape[0]))


def variant_name(weights: Path, cfg: MvDust3rConfig) -> str:
    """MVD, MVDp, or MVDp_s1 / MVDp_s2 when the file name says which training stage."""
    if not cfg.multi_reference:
        return "MVD"
    stage = re.search(r"_s([12])$", weights.stem)
    return f"MVDp_s{stage.group(1)}" if stage else "MVDp"


class SceneFromViewsMvDust3r(OnePassModel):
    """MV-DUSt3R / MV-DUSt3R+ (Tang et al., CVPR 2025): all views through one network pass;
    poses by PnP.  Output scale is the model's own ("map units"), not metres."""

    model_type: ClassVar[SceneFromViewsType] = SceneFromViewsType.MVDUST3R
    options_class: ClassVar[type[ModelOptions]] = MvDust3rOptions
    # the hub repo's layout (a bare repo id or a copy of it) first, then a folder of the files
    checkpoint_filenames: ClassVar[tuple[str, ...]] = tuple(
        f"{folder}{name}" for folder in ("checkpoints/", "") for name in ("MVDp_s2.pth", "MVDp_s1.pth", "MVD.pth")
    )
    options: MvDust3rOptions

    def __init__(self, device: str | torch.device | None = None, **options: Any) -> None:
        """Options: see `MvDust3rOptions` (construction ones: checkpoint, dtype)."""
        super().__init__(device, **options)
        self.amp_dtype = autocast_dtype(self.device, self.options.dtype)
        self.checkpoint_path = resolve_checkpoint(self.options.checkpoint, self.checkpoint_filenames)
        cfg = read_network_config(self.checkpoint_path)
        drop = (GAUSSIAN_HEADS,) if cfg.gaussian_heads else ()  # no points come from them: not built
        self.network = build_network(lambda: MvDust3r(cfg), self.checkpoint_path, self.device, drop_prefixes=drop)
        self.variant = variant_name(self.checkpoint_path, cfg)

    @property
    def cfg(self) -> MvDust3rConfig:
        return self.network.cfg

    @property
    def min_views(self) -> int:
        return self.network.min_views

    def check_window(self, views: int) -> None:
        super().check_window(views)
        if views < self.min_views:
            raise InvalidOptionError(
                f"windows of {views} views are too small for {self.variant} ({self.checkpoint_path}): it needs at least "
                f"{self.min_views}; set window.size to {self.min_views} or more"
                + (", or use the MVD checkpoint" if self.cfg.multi_reference else "")
            )

    def check_image(self, image: np.ndarray) -> None:
        super().check_image(image)
        processed_size(image.shape[1], image.shape[0], SQUARE_SIZE, False, self.cfg.patch_size)

    def preprocess_images(self, images: list[np.ndarray], **kwargs: Any) -> PairViews:
        """Resize and crop as the reference's load_images at 224."""
        self.call_options(kwargs)
        if len(images) < self.min_views:
            if self.cfg.multi_reference:
                fix = f"give at least {NUM_REFERENCES} views (window.size >= {NUM_REFERENCES}), or use the MVD checkpoint"
            else:
                fix = "give at least 2 views; to reconstruct one image, pass it twice on purpose (as the reference demo does)"
            raise InvalidImageError(
                f"{self.variant} reconstructs from {NUM_REFERENCES if self.cfg.multi_reference else 1} reference view(s) and "
                f"needs at least {self.min_views} views, got {len(images)}: {fix}"
            )
        return preprocess_pair_images(images, SQUARE_SIZE, False, self.cfg.patch_size)

    def infer(self, processed: PairViews, **kwargs: Any) -> MvDust3rOutputs:
        """One pass over all views (in the demo's order, see the module doc); outputs in the
        caller's order."""
        self.call_options(kwargs)
        order = demo_view_order(len(processed.tensors))
        with torch.inference_mode(), torch.autocast(device_type=self.device.type, dtype=self.amp_dtype or torch.float32,
                                                    enabled=self.amp_dtype is not None):
            out = self.network([processed.tensors[i].to(self.device) for i in order])
        restore = torch.as_tensor(order)  # the order is its own inverse
        references = order[:NUM_REFERENCES] if self.cfg.multi_reference else [0]
        return MvDust3rOutputs(ViewOutputs.from_views({key: value[restore] for key, value in out.items()}), sorted(references))

    def postprocess_results(
        self, raw: MvDust3rOutputs, images: list[np.ndarray], processed: PairViews, as_pointcloud: bool = True, **kwargs: Any
    ) -> SceneFromViewsResult:
        """Confidence mask, focal, PnP poses (see the module doc)."""
        opts = self.call_options(kwargs)
        points = np.asarray(raw["pts3d"], dtype=np.float32)
        confidences = np.asarray(raw["conf"], dtype=np.float32)
        count, height, width = confidences.shape
        ordered = np.sort(confidences.reshape(-1))
        threshold = ordered[min(int(ordered.size * opts.min_conf_thr / 100.0), ordered.size - 1)]
        masks = confidences >= threshold
        first = np.sort(confidences[0].reshape(-1))
        focal_pixels = confidences[0] >= first[int(first.size * FOCAL_CONF_FRACTION)]
        focal = estimate_focal(points[0], focal_pixels.astype(np.float64), (width / 2.0, height / 2.0), iterations=10)
        if not np.isfinite(focal) or focal <= 0:  # points behind the camera: nothing to fit, assume a 60-degree view
            logger.warning("MV-DUSt3R: view 0's points give no focal length (%s); assuming a 60-degree field of view", focal)
            focal = max(width, height) / (2 * np.tan(np.radians(30)))
        poses = [np.eye(4)]
        failed = []
        for v in range(1, count):
            found = pnp_pose(points[v], [focal], opts.niter_PnP, PNP_REPROJECTION_PX, mask=masks[v], method=cv2.SOLVEPNP_ITERATIVE)
            if found is None:
                failed.append(v)
                logger.warning("MV-DUSt3R: no PnP pose for view %d of %d (too few confident points); it keeps view 0's pose", v, count)
            poses.append(np.eye(4) if found is None else found[0])
        depths = []
        for v in range(count):
            world_to_camera = np.linalg.inv(poses[v])
            depths.append((points[v].reshape(-1, 3) @ world_to_camera[2, :3] + world_to_camera[2, 3]).reshape(height, width).astype(np.float32))
        extras = {"variant": self.variant, "reference_views": raw.reference_views, "pnp_failed": failed}
        return self.assemble_result(processed, poses, depths, list(points), list(confidences), list(masks), [focal] * count,
                                    as_pointcloud, extras)


__all__ = ["MvDust3rOptions", "MvDust3rOutputs", "SceneFromViewsMvDust3r", "demo_view_order"]
