"""Fast3R on the core API: every view of a window in one network pass.

The network (networks/fast3r.py) gives per view its points in view 0's camera frame (global
head) and in its own frame (local head).  Post-processing follows the reference demo:

1. local -> global: each view's local points are fitted (Sim(3), unweighted Umeyama) to its
   global points on the pixels whose global confidence is at or above the
   `min_conf_thr_percentile` percentile, and the fit is applied to all its pixels;
2. focal (`focal_length_estimation_method`): from view 0's global points
   (first_view_from_global_head, the demo's), from its aligned local points
   (first_view_from_local_head), or per view by PnP over a focal sweep (individual); the
   estimate is DUSt3R's Weiszfeld fit on the pixels above the 10th confidence percentile;
3. poses: PnP RANSAC (SQPnP, `niter_PnP` iterations, 5-pixel threshold) of every view's global
   points, then expressed relative to view 0 (whose PnP pose is not exactly the identity).

Depth is each view's aligned local points' z; the clouds are those aligned points (as the
demo shows them).  Preprocessing is DUSt3R's `load_images`, byte for byte.

Image-index ids: view 0 gets 0, the others distinct ids in 1..999 drawn from `image_id_seed`
(the reference draws them from the global random state on every forward, so its outputs vary
from call to call); `infer(processed, image_ids=[...])` takes explicit ones.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import torch

from ..core.base import ModelOptions, checkpoint_option
from ..core.checkpoint import build_network, resolve_checkpoint
from ..core.errors import CheckpointMismatchError, CheckpointNotFoundError, InvalidImageError, InvalidOptionError
from ..core.options import BUILD, option
from ..core.result import SceneFromViewsResult
from ..core.types import SceneFromViewsType
from ..geometry.camera import pnp_pose
from ..geometry.pair_chain import estimate_focal
from ..geometry.sim3 import umeyama
from .dust3r import PairViews, network_dtype_option, preprocess_pair_images, processed_size, read_config_json
from .layers.dpt_adapter import canonical_dpt_key
from .networks.croco_stereo import ConfigError
from .networks.fast3r import MAX_IMAGE_IDS, Fast3R, Fast3RConfig
from .one_pass import OnePassModel, ViewOutputs
from .vggt import autocast_dtype

FOCAL_METHODS = ("first_view_from_global_head", "first_view_from_local_head", "individual")
FOCAL_CONF_PERCENTILE = 10.0  # the reference's estimate_focal keeps pixels at or above this percentile
PNP_REPROJECTION_PX = 5.0  # the demo's SQPnP RANSAC threshold
FOCAL_SWEEP = 100  # focals tried by PnP per view with method 'individual' (geometric, S/2 .. 3S)


@dataclass(frozen=True)
class Fast3rOptions(ModelOptions):
    """The options of `SceneFromViewsFast3r` (ROS: ``model.<name>``); defaults = the reference demo."""

    checkpoint: str = checkpoint_option("jedyang97/Fast3R_ViT_Large_512")
    config: str = option(
        "", "Architecture JSON (the hub's config.json) for reduced configurations; '' = the config.json beside the "
        "weights. The Python API also takes a Fast3RConfig or a dict.", path=True, python_types=(Fast3RConfig, dict), stage=BUILD,
    )
    dtype: str = network_dtype_option()
    image_size: int = option(
        512, "Input size the checkpoint was trained at (checked when the model is built): 512 (the long side resized, cropped to multiples of 16) or 224 "
        "(the short side resized, the centre square kept); it must match the checkpoint's.", unit="pixels", low=224, high=512,
        step=288, stage=BUILD,
    )
    image_id_seed: int = option(
        0, "Seed of the image-index ids of views 1..N-1 (view 0 gets 0): the same seed gives the same outputs; the "
        "reference draws new ids on every call.", low=0, high=2**31 - 1,
    )
    min_conf_thr_percentile: float = option(
        85.0, "Local-to-global alignment: pixels whose global confidence is at or above this percentile of their view's "
        "fit the local points to the global ones (the demo's 85).", unit="percentile", low=0.0, high=100.0,
    )
    niter_PnP: int = option(100, "RANSAC iterations of each PnP pose (the demo's 100).", unit="iterations", low=1, high=100000)
    focal_length_estimation_method: str = option(
        "first_view_from_global_head", "One focal for all views from view 0's global points (the demo's) or its aligned "
        "local points, or individual: each view's own by PnP over a focal sweep.", choices=FOCAL_METHODS,
    )
    conf_thres: float = option(
        10.0, "Pixels under this percentile of their view's confidences are left out of the clouds, the depth images "
        "and the map (the demo's display default); 0 keeps every pixel.", unit="percentile", low=0.0, high=100.0,
    )


class Fast3rOutputs(ViewOutputs):
    """Raw outputs per view (`pts3d_in_other_view`, `conf`, `pts3d_local`, `conf_local`), and
    the image-index ids used (`image_ids`)."""

    def __init__(self, outputs: Mapping[str, Any], image_ids: np.ndarray) -> None:
        super().__init__(outputs)
        self.image_ids = np.asarray(image_ids)


def draw_image_ids(num_views: int, seed: int) -> np.ndarray:
    """View 0 -> 0, views 1..N-1 -> distinct ids in 1..999, as the reference's draw (a permutation of
    999 from a generator), but from `seed` instead of the global random state."""
    if num_views > MAX_IMAGE_IDS:
        raise InvalidImageError(
            f"{num_views} views: Fast3R tells views apart by {MAX_IMAGE_IDS} image ids; reconstruct at most {MAX_IMAGE_IDS} "
            "views at once (lower window.size)"
        )
    generator = torch.Generator().manual_seed(seed)
    rest = torch.randperm(MAX_IMAGE_IDS - 1, generator=generator)[: num_views - 1] + 1
    return np.concatenate(([0], rest.numpy())).astype(np.int64)


def read_network_config(weights: Path, config: Any) -> Fast3RConfig:
    """The architecture: `config` when given, else the config.json beside the weights."""
    try:
        if isinstance(config, Fast3RConfig):
            return config
        if isinstance(config, Mapping):
            return Fast3RConfig.from_hub_config(config)
        path = Path(config) if config else weights.parent / "config.json"
        if not path.is_file():
            raise CheckpointNotFoundError(
                f"{weights} has no config.json beside it (the hub repo holds both: huggingface-cli download "
                "jedyang97/Fast3R_ViT_Large_512 config.json); pass config=<config.json>"
            )
        return Fast3RConfig.from_hub_config(read_config_json(path))
    except ConfigError as error:
        raise CheckpointMismatchError(f"{weights}: {error}; is it a Fast3R checkpoint?") from error


def align_local_to_global(local: np.ndarray, global_points: np.ndarray, conf: np.ndarray, percentile: float) -> tuple[np.ndarray, float]:
    """Local points (H, W, 3) moved onto the global ones by the Sim(3) fitted on the pixels whose
    confidence is at or above `percentile` (linear-interpolated quantile, as torch.quantile);
    the identity when fewer than 3 such pixels are finite.  Returns the points and the scale."""
    threshold = np.quantile(conf.astype(np.float64), percentile / 100.0)
    mask = (conf >= threshold) & np.isfinite(local).all(-1) & np.isfinite(global_points).all(-1)
    if mask.sum() < 3:
        return local.copy(), 1.0
    transform = umeyama(local[mask], global_points[mask])
    moved = local.reshape(-1, 3).astype(np.float64) @ transform[:3, :3].T + transform[:3, 3]
    return moved.reshape(local.shape).astype(np.float32), float(np.cbrt(np.linalg.det(transform[:3, :3])))


def first_view_focal(points: np.ndarray, conf: np.ndarray) -> float:
    """The reference's estimate_focal: Weiszfeld (100 iterations) on the pixels at or above the
    10th confidence percentile, principal point at the centre."""
    mask = conf >= np.quantile(conf.astype(np.float64), FOCAL_CONF_PERCENTILE / 100.0)
    height, width = points.shape[:2]
    return estimate_focal(points, mask.astype(np.float64), (width / 2.0, height / 2.0), min_focal=0.0, iterations=100)


class SceneFromViewsFast3r(OnePassModel):
    """Fast3R (Yang et al., CVPR 2025): all views through one network pass; poses by PnP.

    Output scale is the model's own ("map units"), not metres.
    """

    model_type: ClassVar[SceneFromViewsType] = SceneFromViewsType.FAST3R
    options_class: ClassVar[type[ModelOptions]] = Fast3rOptions
    checkpoint_filenames: ClassVar[tuple[str, ...]] = ("model.safetensors",)
    options: Fast3rOptions

    def __init__(self, device: str | torch.device | None = None, **options: Any) -> None:
        """Options: see `Fast3rOptions` (construction ones: checkpoint, config, dtype)."""
        super().__init__(device, **options)
        opts = self.options
        self.amp_dtype = autocast_dtype(self.device, opts.dtype)
        self.checkpoint_path = resolve_checkpoint(opts.checkpoint, self.checkpoint_filenames, companions=("config.json",))
        cfg = read_network_config(self.checkpoint_path, opts.config)
        self.network = build_network(lambda: Fast3R(cfg), self.checkpoint_path, self.device, rename=canonical_dpt_key)
        self._check_size(opts.image_size)

    @property
    def cfg(self) -> Fast3RConfig:
        return self.network.cfg

    def _check_size(self, size: int) -> None:
        if size != self.cfg.img_size:
            raise InvalidOptionError(
                f"model.image_size={size} is not allowed with {self.checkpoint_path}: that checkpoint was trained at "
                f"{self.cfg.img_size}; set image_size {self.cfg.img_size} or use a {size} checkpoint"
            )

    def check_image(self, image: np.ndarray) -> None:
        super().check_image(image)
        processed_size(image.shape[1], image.shape[0], self.options.image_size, False, self.cfg.patch_size)

    def preprocess_images(self, images: list[np.ndarray], **kwargs: Any) -> PairViews:
        """Resize and crop as the reference's load_images (`image_size`)."""
        opts = self.call_options(kwargs)
        if not images:
            raise InvalidImageError("empty window: Fast3R needs at least one image")
        return preprocess_pair_images(images, opts.image_size, False, self.cfg.patch_size)

    def infer(self, processed: PairViews, image_ids: Any = None, **kwargs: Any) -> Fast3rOutputs:
        """One pass over all views; `image_ids` (view 0 first, distinct, in [0, 1000)) or drawn
        from `image_id_seed`."""
        opts = self.call_options(kwargs)
        ids = draw_image_ids(len(processed.tensors), opts.image_id_seed) if image_ids is None else np.asarray(image_ids, dtype=np.int64)
        if ids.shape != (len(processed.tensors),) or len(set(ids.tolist())) != len(ids):
            raise InvalidOptionError(f"image_ids {ids.tolist()} must be {len(processed.tensors)} distinct ids, one per view")
        with torch.inference_mode(), torch.autocast(device_type=self.device.type, dtype=self.amp_dtype or torch.float32,
                                                    enabled=self.amp_dtype is not None):
            out = self.network([t.to(self.device) for t in processed.tensors], torch.from_numpy(ids))
        return Fast3rOutputs(ViewOutputs.from_views({key: [v[0] for v in values] for key, values in out.items()}), ids)

    def postprocess_results(
        self, raw: Fast3rOutputs, images: list[np.ndarray], processed: PairViews, as_pointcloud: bool = True, **kwargs: Any
    ) -> SceneFromViewsResult:
        """Local points aligned to the global ones, focal, PnP poses (see the module doc)."""
        opts = self.call_options(kwargs)
        num = len(processed.rgb)
        local_key = "pts3d_local" if "pts3d_local" in raw else "pts3d_in_other_view"
        aligned, scales = [], []
        for v in range(num):
            points, scale = align_local_to_global(raw.view(local_key, v), raw.view("pts3d_in_other_view", v), raw.view("conf", v),
                                                  opts.min_conf_thr_percentile)
            aligned.append(points)
            scales.append(scale)
        method = opts.focal_length_estimation_method
        shared: float | None = None
        if method == "first_view_from_global_head":
            shared = first_view_focal(raw.view("pts3d_in_other_view", 0), raw.view("conf", 0))
        elif method == "first_view_from_local_head":
            shared = first_view_focal(aligned[0], raw.view("conf_local" if "conf_local" in raw else "conf", 0))
        poses, focals = [], []
        for v in range(num):
            height, width = processed.rgb[v].shape[:2]
            size = max(width, height)
            candidates = [shared] if shared is not None else list(np.geomspace(size / 2, 3 * size, FOCAL_SWEEP))
            found = pnp_pose(raw.view("pts3d_in_other_view", v), candidates, opts.niter_PnP, PNP_REPROJECTION_PX, method=cv2.SOLVEPNP_SQPNP)
            poses.append(found[0] if found is not None else np.eye(4))
            focals.append(found[1] if found is not None else shared or max(height, width) / (2 * np.tan(np.radians(30))))
        to_first = np.linalg.inv(poses[0])
        poses = [to_first @ pose for pose in poses]
        poses[0] = np.eye(4)
        clouds = [(p.reshape(-1, 3) @ to_first[:3, :3].T + to_first[:3, 3]).reshape(p.shape).astype(np.float32) for p in aligned]
        local = [raw.view(local_key, v) for v in range(num)]
        depths = [(local[v][..., 2] * scales[v]).astype(np.float32) for v in range(num)]
        confidences = [raw.view("conf", v).astype(np.float32) for v in range(num)]
        masks = [c >= np.percentile(c, opts.conf_thres) if opts.conf_thres > 0 else np.ones(c.shape, bool) for c in confidences]
        extras = {"image_ids": raw.image_ids, "local_to_global_scales": np.asarray(scales)}
        return self.assemble_result(processed, poses, depths, clouds, confidences, masks, focals, as_pointcloud, extras)


__all__ = ["Fast3rOptions", "Fast3rOutputs", "SceneFromViewsFast3r", "draw_image_ids"]
