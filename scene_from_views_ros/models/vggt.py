"""VGGT wrapper on the core API: preprocessing, inference and postprocessing.

`SceneFromViewsVggt` runs our own VGGT network (networks/vggt.py), loading the released
``facebook/VGGT-1B`` checkpoint strictly.  Preprocessing reproduces the reference's
"crop"/"pad" resizing (bicubic, white padding) at a selectable `target_size`;
postprocessing turns the pose encoding into camera-to-world poses and intrinsics and
fuses a coloured cloud, everything in the frame of the first view.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from ..core.base import ModelOptions, SceneFromViewsBase, checkpoint_option
from ..core.checkpoint import build_network, resolve_checkpoint
from ..core.errors import InvalidImageError
from ..core.images import check_rgb_image
from ..core.options import BUILD, option
from ..core.result import PointCloud, SceneFromViewsResult
from ..core.types import SceneFromViewsType
from ..geometry.camera import extrinsics_to_poses, intrinsics_in_original_pixels, pose_encoding_to_extrinsics_intrinsics, unproject_depth
from ..optimizers.base import SceneOptimizerInput, optimizer_input_from_result
from .networks.vggt import VGGT, VggtConfig

PREPROCESS_MODES = ("crop", "pad")
PREDICTION_MODES = ("pointmap", "depthmap")
PRECISIONS = ("auto", "bfloat16", "float16", "float32")
PATCH_SIZE = 14
WHITE = 255


@dataclass(frozen=True)
class VggtOptions(ModelOptions):
    """The options of `SceneFromViewsVggt` (ROS: ``model.<name>``)."""

    checkpoint: str = checkpoint_option("facebook/VGGT-1B")
    config: str = option(
        "", "Architecture JSON (a VggtConfig dict, or {\"config\": {...}}) for reduced configurations; "
        "'' = the released VGGT-1B. The Python API also takes a VggtConfig or a dict.",
        path=True, python_types=(VggtConfig, dict), stage=BUILD,
    )
    dtype: str = option(
        "auto", "Aggregator precision on CUDA: auto (bfloat16 on Ampere or newer, else float16), bfloat16, "
        "float16 or float32. The CPU always computes in float32.", choices=PRECISIONS, stage=BUILD,
    )
    build_track_head: bool = option(
        False, "Also build the point-track head (mapping never tracks); otherwise its checkpoint keys are "
        "dropped knowingly.", stage=BUILD, exposed=False,
    )
    preprocess_mode: str = option(
        "crop", "crop: width = target_size, taller images centre-cropped; pad: longer side = target_size, "
        "white padding to a square (padding never enters the clouds).", choices=PREPROCESS_MODES,
    )
    target_size: int = option(
        518, "Model input width (crop) or longer side (pad); 518 is the trained size, smaller is faster "
        "and coarser.", unit="pixels", low=PATCH_SIZE, high=74 * PATCH_SIZE, step=PATCH_SIZE,
    )
    frames_chunk_size: int = option(
        8, "Frames the DPT heads process at once: bounds their memory on long windows without changing "
        "any output; 0 = all frames together.", unit="frames", low=0, high=1024,
    )
    prediction_mode: str = option(
        "pointmap", "pointmap: the point head's world points; depthmap: depth unprojected with the "
        "predicted cameras.", choices=PREDICTION_MODES,
    )
    conf_thres: float = option(
        50.0, "Pixels under this percentile of the window's confidences are left out of the clouds, the "
        "depth images and the map; 0 keeps every pixel.", unit="percentile", low=0.0, high=100.0,
    )
    mask_black_bg: bool = option(False, "Also leave out near-black pixels (RGB sum < 16).")
    mask_white_bg: bool = option(False, "Also leave out near-white pixels (every channel > 240).")


@dataclass
class ProcessedViews:
    """Network input and the map back to the original images.

    `images` (S, 3, H, W) float in [0, 1]; `rgb` the same as uint8 HxWx3 (padding white);
    `valid` HxW masks of the pixels that come from the image (not padding); per view
    `scales` (sx, sy) and `offsets` (ox, oy) with x_processed = sx * x_original + ox.
    """

    images: torch.Tensor
    rgb: list[np.ndarray]
    valid: list[np.ndarray]
    scales: np.ndarray
    offsets: np.ndarray


def resized_size(width: int, height: int, mode: str, target_size: int, patch_size: int) -> tuple[int, int]:
    """(width, height) an image is resized to before cropping or padding; InvalidImageError
    when a side would vanish (an image too elongated for `target_size`)."""
    if mode == "pad" and height > width:
        size = round(width * (target_size / height) / patch_size) * patch_size, target_size
    else:
        size = target_size, round(height * (target_size / width) / patch_size) * patch_size
    if min(size) < patch_size:
        raise InvalidImageError(
            f"a {width}x{height} image is too elongated for VGGT at target_size {target_size} ({mode}): "
            f"it would be resized to {size[0]}x{size[1]}; crop it, or use a larger target_size"
        )
    return size


def _pad_to(image: np.ndarray, height: int, width: int) -> tuple[np.ndarray, int, int]:
    """Centre `image` on a white canvas of height x width; returns it and the (left, top) offsets."""
    top, left = (height - image.shape[0]) // 2, (width - image.shape[1]) // 2
    if top == 0 and left == 0 and image.shape[:2] == (height, width):
        return image, 0, 0
    canvas = np.full((height, width, 3), WHITE, dtype=np.uint8)
    canvas[top : top + image.shape[0], left : left + image.shape[1]] = image
    return canvas, left, top


def preprocess_vggt_images(
    images: list[np.ndarray], mode: str = "crop", target_size: int = 518, patch_size: int = 14
) -> ProcessedViews:
    """Resize RGB uint8 images as the VGGT reference does (bicubic, PIL).

    "crop": width -> target_size, height keeps the aspect (multiple of the patch) and is
    centre-cropped to target_size if taller.  "pad": the longer side -> target_size, then
    white padding to a target_size square.  Views of different resulting sizes are
    white-padded (centred) to the largest height and width.
    """
    if mode not in PREPROCESS_MODES:
        raise ValueError(f"preprocess_mode must be one of {PREPROCESS_MODES}, got {mode!r}")
    if target_size <= 0 or target_size % patch_size:
        raise ValueError(f"target_size must be a positive multiple of {patch_size}, got {target_size}; e.g. 518, 294 or 140")
    if len(images) == 0:
        raise InvalidImageError("VGGT needs at least one image")
    resized, scales, offsets, content = [], [], [], []
    for index, image in enumerate(images):
        check_rgb_image(image, index)
        height, width = image.shape[:2]
        new_w, new_h = resized_size(width, height, mode, target_size, patch_size)
        out = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BICUBIC))
        ox = oy = 0
        if mode == "crop" and new_h > target_size:
            oy = -((new_h - target_size) // 2)
            out = out[-oy : -oy + target_size]
        content.append((0, 0, out.shape[1], out.shape[0]))  # (x0, y0, w, h) of image pixels in `out`
        if mode == "pad":
            out, ox, oy = _pad_to(out, target_size, target_size)
            content[-1] = (ox, oy, new_w, new_h)
        resized.append(out)
        scales.append((new_w / width, new_h / height))
        offsets.append((ox, oy))
    max_h = max(r.shape[0] for r in resized)
    max_w = max(r.shape[1] for r in resized)
    rgb, valid = [], []
    for i, image in enumerate(resized):
        padded, left, top = _pad_to(image, max_h, max_w)
        rgb.append(np.ascontiguousarray(padded))
        offsets[i] = (offsets[i][0] + left, offsets[i][1] + top)
        x0, y0, w, h = content[i]
        inside = np.zeros((max_h, max_w), dtype=bool)
        inside[top + y0 : top + y0 + h, left + x0 : left + x0 + w] = True
        valid.append(inside)
    tensor = torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2).float().div(255)
    return ProcessedViews(tensor, rgb, valid, np.asarray(scales, dtype=np.float64), np.asarray(offsets, dtype=np.float64))


def load_vggt_config(config: VggtConfig | dict | str | Path | None) -> VggtConfig:
    """A VggtConfig from itself, a dict, or a JSON file (a bare config or {"config": {...}})."""
    if config is None:
        return VggtConfig()
    if isinstance(config, VggtConfig):
        return config
    if isinstance(config, (str, Path)):
        config = json.loads(Path(config).read_text())
        config = config.get("config", config)
    return VggtConfig.from_dict(config)


def autocast_dtype(device: torch.device, dtype: str) -> torch.dtype | None:
    """Reduced precision for the aggregator: CUDA only ("auto": bf16 on Ampere+, else fp16)."""
    if dtype not in PRECISIONS:
        raise ValueError(f"dtype must be one of {', '.join(PRECISIONS)}, got {dtype!r}")
    if device.type != "cuda" or dtype == "float32":
        return None
    if dtype == "auto":
        return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16
    return getattr(torch, dtype)


def confidence_masks(
    conf: np.ndarray, rgb: list[np.ndarray], valid: list[np.ndarray], conf_thres: float, mask_black_bg: bool, mask_white_bg: bool
) -> list[np.ndarray]:
    """Keep pixels at or above the `conf_thres` percentile of all views' confidences (0 keeps
    all), drop padding and, optionally, near-black (RGB sum < 16) or near-white (all > 240)
    pixels."""
    threshold = np.percentile(conf, conf_thres) if conf_thres > 0 else 0.0
    masks = []
    for view_conf, image, inside in zip(conf, rgb, valid, strict=True):
        keep = inside & (view_conf >= threshold) & (view_conf > 1e-5)
        if mask_black_bg:
            keep &= image.astype(np.int32).sum(axis=-1) >= 16
        if mask_white_bg:
            keep &= ~(image > 240).all(axis=-1)
        masks.append(keep)
    return masks


class SceneFromViewsVggt(SceneFromViewsBase):
    """VGGT (Wang et al., CVPR 2025): cameras, depth and point maps from 1..N views in one pass.

    Output scale is VGGT's own normalised scale ("map units"), not metres.
    """

    model_type: ClassVar[SceneFromViewsType] = SceneFromViewsType.VGGT
    options_class: ClassVar[type[ModelOptions]] = VggtOptions
    checkpoint_filenames: ClassVar[tuple[str, ...]] = ("model.safetensors", "model.pt")
    options: VggtOptions

    def __init__(self, device: str | torch.device | None = None, **options: Any) -> None:
        """Options: see `VggtOptions` (construction ones: checkpoint, config, dtype, build_track_head)."""
        super().__init__(device, **options)
        opts = self.options
        self.amp_dtype = autocast_dtype(self.device, opts.dtype)
        # Resolve first: a missing checkpoint is reported before anything is built.
        self.checkpoint_path = resolve_checkpoint(opts.checkpoint, self.checkpoint_filenames)
        config = load_vggt_config(opts.config or None)
        self.network = build_network(
            lambda: VGGT(config, build_track_head=opts.build_track_head), self.checkpoint_path, self.device,
            drop_prefixes=() if opts.build_track_head else (VGGT.TRACK_HEAD_PREFIX,),
        )

    @property
    def patch_size(self) -> int:
        return self.network.cfg.patch_size

    def check_image(self, image: np.ndarray) -> None:
        """Can this image be resized with the current preprocess_mode and target_size?"""
        super().check_image(image)
        resized_size(image.shape[1], image.shape[0], self.options.preprocess_mode, self.options.target_size, self.patch_size)

    def preprocess_images(self, images: list[np.ndarray], **kwargs: Any) -> ProcessedViews:
        """Resize as the reference does (`preprocess_mode`, `target_size`)."""
        opts = self.call_options(kwargs)
        return preprocess_vggt_images(images, opts.preprocess_mode, opts.target_size, self.patch_size)

    def _forward(self, images: torch.Tensor, frames_chunk_size: int, prediction_mode: str) -> dict[str, np.ndarray]:
        """One network pass on (S, 3, H, W); float32 numpy outputs without the batch axis."""
        images = images.to(self.device)
        with torch.inference_mode(), torch.autocast(device_type=self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            out = self.network(images, frames_chunk_size=frames_chunk_size or None, compute_points=prediction_mode == "pointmap")
        return {k: v[0].float().cpu().numpy() for k, v in out.items()}

    def infer(self, processed: ProcessedViews, **kwargs: Any) -> dict[str, np.ndarray]:
        """One network pass (`frames_chunk_size`, `prediction_mode`)."""
        opts = self.call_options(kwargs)
        return self._forward(processed.images, opts.frames_chunk_size, opts.prediction_mode)

    def create_optimizer_input(self, raw: dict[str, np.ndarray], processed: ProcessedViews) -> SceneOptimizerInput:
        """One pair prediction per ordered pair of the (surviving) views, from the point maps."""
        result = self.postprocess_results(raw, processed.rgb, processed, as_pointcloud=False)
        return optimizer_input_from_result(result, raw=raw, device=str(self.device))

    def postprocess_results(
        self,
        raw: dict[str, np.ndarray],
        images: list[np.ndarray],
        processed: ProcessedViews,
        as_pointcloud: bool = True,
        **kwargs: Any,
    ) -> SceneFromViewsResult:
        """Poses, depth and point maps (`prediction_mode`); the masks keep pixels at or above the
        `conf_thres` percentile of all views' confidences, minus padding and the optional
        black/white backgrounds; the fused cloud is built from those pixels."""
        return build_result(raw, processed, self.call_options(kwargs), as_pointcloud)


def build_result(raw: dict[str, np.ndarray], processed: ProcessedViews, opts: VggtOptions, as_pointcloud: bool) -> SceneFromViewsResult:
    """Poses, intrinsics, depth and clouds from raw predictions, re-expressed in the frame of
    the first view (VGGT predicts that frame up to its own error; the rigid re-anchoring
    makes view 0's pose exactly the identity)."""
    height, width = processed.images.shape[-2:]
    extrinsics, intrinsics = pose_encoding_to_extrinsics_intrinsics(torch.from_numpy(raw["pose_enc"]).double(), (height, width))
    poses = extrinsics_to_poses(extrinsics.numpy())
    to_first = np.linalg.inv(poses[0])
    poses = np.einsum("ij,sjk->sik", to_first, poses)
    intrinsics = intrinsics.numpy()
    depth = raw["depth"][..., 0]
    if opts.prediction_mode == "pointmap":
        points = np.einsum("ij,shwj->shwi", to_first[:3, :3], raw["world_points"]) + to_first[:3, 3]
        conf = raw["world_points_conf"]
    else:
        points = unproject_depth(depth, intrinsics, poses)
        conf = raw["depth_conf"]
    points = points.astype(np.float32)
    masks = confidence_masks(conf, processed.rgb, processed.valid, opts.conf_thres, opts.mask_black_bg, opts.mask_white_bg)
    cloud = PointCloud.from_views(list(points), processed.rgb, masks) if as_pointcloud else PointCloud(np.zeros((0, 3)), np.zeros((0, 3)))
    original_k = intrinsics_in_original_pixels(intrinsics, processed.scales, processed.offsets)
    return SceneFromViewsResult(
        global_point_cloud=cloud,
        camera_poses=[p.astype(np.float64) for p in poses],
        processed_images=processed.rgb,
        depth_predictions=[d.astype(np.float32) for d in depth],
        point_clouds=list(points),
        intrinsics=[k.astype(np.float64) for k in intrinsics],
        confidences=[c.astype(np.float32) for c in conf],
        masks=masks,
        extras={
            "pose_encoding": raw["pose_enc"],
            "intrinsics_original": [k for k in original_k],
            "scales": processed.scales,
            "offsets": processed.offsets,
            "prediction_mode": opts.prediction_mode,
        },
    )
