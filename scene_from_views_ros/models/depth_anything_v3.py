"""Depth Anything 3 on the core API: the any-view presets (DA3-SMALL, DA3-BASE, DA3-LARGE,
DA3-GIANT and their -1.1 re-releases), every view of a window in one pass.

The network (networks/depth_anything_v3.py) gives per view its depth, a confidence and its
camera (world-to-camera extrinsics in the frame of the reference view it chose, intrinsics).
Here the cameras are re-expressed in view 0's frame (the convention of every model), each
view's points are its depth unprojected with its camera, and pixels under the `conf_thres`
percentile of the window's confidences are masked.  Output scale is the model's own ("map
units").

Preprocessing is the reference's `InputProcessor` ("upper_bound_resize"): the longest side
resized to `process_res` (cv2 INTER_CUBIC enlarging, INTER_AREA shrinking), each side then
resized to the nearest multiple of 14 (ties up), ImageNet normalisation; views of different
sizes are centre-cropped to the smallest height and width.

Known cameras (`reconstruct(..., known_intrinsics=, known_poses=)`): with poses, and their
intrinsics, the network is conditioned on them as the reference does (world-to-camera
extrinsics relative to view 0, translations divided by the median camera distance, at least
0.1; intrinsics in the network input's pixels), and the result is in the given frame and units:
the given poses, the depth divided by the scale of the Sim(3) (Umeyama, on the camera centres)
from the given cameras to the predicted ones.  The reference ignores intrinsics given alone;
here they replace the predicted intrinsics and the points are unprojected with them.  Unlike
the reference, no RANSAC is run on the camera centres from 10 views on.

Not yet here (issue 14): METRIC, MONO and NESTED, sky masks.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import torch

from ..core.base import ModelOptions, checkpoint_option
from ..core.cameras import KnownCameras
from ..core.checkpoint import build_network, resolve_checkpoint
from ..core.errors import CheckpointMismatchError, CheckpointNotFoundError, InvalidImageError, InvalidOptionError
from ..core.images import check_rgb_image
from ..core.options import BUILD, option
from ..core.result import PointCloud, SceneFromViewsResult
from ..core.types import SceneFromViewsType
from ..geometry.camera import intrinsics_in_original_pixels, intrinsics_in_processed_pixels, unproject_depth
from ..geometry.sim3 import umeyama
from .dust3r import PairViews, network_dtype_option, read_config_json
from .networks.depth_anything_v3 import PATCH, PRESETS, REFERENCE_STRATEGIES, UNUSED_HEADS, Da3Config, DepthAnything3Net, strip_model_prefix
from .one_pass import OnePassModel, ViewOutputs
from .vggt import autocast_dtype

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
LATER_PRESETS = ("da3metric-large", "da3mono-large", "da3nested-giant-large")


@dataclass(frozen=True)
class DepthAnythingV3Options(ModelOptions):
    """The options of `SceneFromViewsDepthAnythingV3` (ROS: ``model.<name>``); defaults = the reference's."""

    checkpoint: str = checkpoint_option("depth-anything/DA3-LARGE")
    config: str = option(
        "", "Architecture JSON (Da3Config fields) for reduced configurations; '' = the preset named by the config.json "
        "beside the weights (its model_name). The Python API also takes a Da3Config or a dict.",
        path=True, python_types=(Da3Config, dict), stage=BUILD,
    )
    dtype: str = network_dtype_option()
    process_res: int = option(
        504, "Longest image side the views are resized to (then each side to a multiple of 14), as the reference's "
        "process_res.", unit="pixels", low=PATCH, high=2016,
    )
    ref_view_strategy: str = option(
        "saddle_balanced", "How the network picks its reference view among 3 or more views (the reference's "
        "strategies); the outputs are in view 0's frame whichever it picks.", choices=REFERENCE_STRATEGIES,
    )
    conf_thres: float = option(
        40.0, "Pixels under this percentile of the window's confidences are left out of the clouds, the depth images "
        "and the map (the reference's export default); 0 keeps every pixel.", unit="percentile", low=0.0, high=100.0,
    )


class Da3Outputs(ViewOutputs):
    """Raw outputs per view (`depth`, `depth_conf`, `extrinsics`, `intrinsics`), the reference view
    the network chose, and the known cameras it was given (intrinsics in network-input pixels)."""

    def __init__(self, outputs: Mapping[str, Any], reference_view: int, known_intrinsics: np.ndarray | None = None,
                 known_poses: np.ndarray | None = None) -> None:
        super().__init__(outputs)
        self.reference_view, self.known_intrinsics, self.known_poses = reference_view, known_intrinsics, known_poses


def _nearest_multiple(value: int) -> int:
    down = value // PATCH * PATCH
    return down + PATCH if abs(down + PATCH - value) <= abs(value - down) else down


def processed_size(width: int, height: int, process_res: int) -> tuple[int, int, int, int]:
    """(width, height) after the longest-side resize, then after rounding to multiples of 14."""
    longest = max(width, height)
    if longest != process_res:
        scale = process_res / float(longest)
        width, height = max(1, round(width * scale)), max(1, round(height * scale))
    final_w, final_h = max(1, _nearest_multiple(width)), max(1, _nearest_multiple(height))
    if min(final_w, final_h) < PATCH:
        raise InvalidImageError(
            f"the image becomes {width}x{height} at process_res {process_res}, less than one {PATCH}-pixel patch on a side: "
            "it is too elongated; crop it, or raise process_res"
        )
    return width, height, final_w, final_h


def preprocess_da3_images(images: list[np.ndarray], process_res: int) -> PairViews:
    """Resize, normalise and centre-crop RGB uint8 images exactly as the reference (module doc)."""
    resized = []
    for index, image in enumerate(images):
        check_rgb_image(image, index)
        height, width = image.shape[:2]
        mid_w, mid_h, final_w, final_h = processed_size(width, height, process_res)
        out = image
        if (mid_w, mid_h) != (width, height):
            out = cv2.resize(out, (mid_w, mid_h), interpolation=cv2.INTER_CUBIC if process_res > max(width, height) else cv2.INTER_AREA)
        if (final_w, final_h) != (mid_w, mid_h):
            out = cv2.resize(out, (final_w, final_h), interpolation=cv2.INTER_CUBIC if final_w > mid_w or final_h > mid_h else cv2.INTER_AREA)
        resized.append(out)
    crop_h, crop_w = min(r.shape[0] for r in resized), min(r.shape[1] for r in resized)
    tensors, rgb, scales, offsets = [], [], [], []
    for image, out in zip(images, resized, strict=True):
        top, left = (out.shape[0] - crop_h) // 2, (out.shape[1] - crop_w) // 2
        crop = np.ascontiguousarray(out[top : top + crop_h, left : left + crop_w])
        rgb.append(crop)
        tensors.append(((torch.from_numpy(crop).permute(2, 0, 1).float().div(255) - IMAGENET_MEAN) / IMAGENET_STD)[None])
        scales.append((out.shape[1] / image.shape[1], out.shape[0] / image.shape[0]))
        offsets.append((-left, -top))
    return PairViews(tensors, rgb, np.asarray(scales, dtype=np.float64), np.asarray(offsets, dtype=np.float64))


def read_network_config(weights: Path, config: Any) -> Da3Config:
    """The architecture: `config` when given, else the preset named by the config.json beside the weights."""
    if isinstance(config, Da3Config):
        return config
    if isinstance(config, Mapping) or config:
        values = dict(config) if isinstance(config, Mapping) else json.loads(Path(config).read_text())
        known = {f.name for f in fields(Da3Config)}
        return Da3Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in known})
    beside = weights.parent / "config.json"
    if not beside.is_file():
        raise CheckpointNotFoundError(
            f"{weights} has no config.json beside it (the hub repo holds both: huggingface-cli download "
            "depth-anything/DA3-LARGE config.json); pass config=<Da3Config JSON>"
        )
    name = read_config_json(beside).get("model_name")
    if name in PRESETS:
        return PRESETS[name]
    if name in LATER_PRESETS:
        raise CheckpointMismatchError(f"{weights} is a {name} checkpoint: this release implements {', '.join(PRESETS)} only")
    raise CheckpointMismatchError(
        f"{beside} names model_name {name!r}, not a Depth Anything 3 preset ({', '.join((*PRESETS, *LATER_PRESETS))}): "
        "is it another model's checkpoint?"
    )


def normalised_extrinsics(world_to_camera: np.ndarray) -> np.ndarray:
    """The reference's normalisation of given extrinsics (N, 4, 4): relative to view 0, the
    translations divided by the median distance of the cameras from view 0 (the lower middle
    value for an even count, view 0's zero included), at least 0.1."""
    relative = world_to_camera @ np.linalg.inv(world_to_camera[0])
    distances = np.linalg.norm(np.linalg.inv(relative)[:, :3, 3], axis=1)
    median = np.sort(distances)[(len(distances) - 1) // 2]
    relative[:, :3, 3] /= max(float(median), 0.1)
    return relative


class SceneFromViewsDepthAnythingV3(OnePassModel):
    """Depth Anything 3 (Lin et al., 2025): depth and cameras of every view in one pass."""

    model_type: ClassVar[SceneFromViewsType] = SceneFromViewsType.DEPTH_ANYTHING_V3
    options_class: ClassVar[type[ModelOptions]] = DepthAnythingV3Options
    checkpoint_filenames: ClassVar[tuple[str, ...]] = ("model.safetensors",)
    accepts_known_intrinsics: ClassVar[bool] = True
    accepts_known_poses: ClassVar[bool] = True  # with their intrinsics: the camera encoder needs both
    options: DepthAnythingV3Options

    def __init__(self, device: str | torch.device | None = None, **options: Any) -> None:
        """Options: see `DepthAnythingV3Options` (construction ones: checkpoint, config, dtype)."""
        super().__init__(device, **options)
        opts = self.options
        self.amp_dtype = autocast_dtype(self.device, opts.dtype)
        self.checkpoint_path = resolve_checkpoint(opts.checkpoint, self.checkpoint_filenames, companions=("config.json",))
        cfg = read_network_config(self.checkpoint_path, opts.config)
        self.network = build_network(lambda: DepthAnything3Net(cfg), self.checkpoint_path, self.device, drop_prefixes=UNUSED_HEADS,
                                     rename=strip_model_prefix)

    def check_image(self, image: np.ndarray) -> None:
        super().check_image(image)
        processed_size(image.shape[1], image.shape[0], self.options.process_res)

    def preprocess_images(self, images: list[np.ndarray], **kwargs: Any) -> PairViews:
        """Resize and normalise as the reference (`process_res`)."""
        opts = self.call_options(kwargs)
        if not images:
            raise InvalidImageError("empty window: Depth Anything 3 needs at least one image")
        return preprocess_da3_images(images, opts.process_res)

    def infer(self, processed: PairViews, known_cameras: KnownCameras | None = None, **kwargs: Any) -> Da3Outputs:
        """One pass: `depth`, `depth_conf` (N, H, W), `extrinsics` (N, 3, 4) world-to-camera,
        `intrinsics` (N, 3, 3), under the reference's names; `.reference_view`: the one it chose;
        `.known_intrinsics` (network-input pixels) and `.known_poses` when given."""
        opts = self.call_options(kwargs)
        known_k = known_poses = None
        given: dict[str, torch.Tensor] = {}
        if known_cameras is not None:
            if known_cameras.intrinsics is not None:
                known_k = intrinsics_in_processed_pixels(known_cameras.intrinsics, processed.scales, processed.offsets)
            if known_cameras.poses is not None:
                if known_k is None:
                    raise InvalidOptionError(
                        "Depth Anything 3's camera encoder needs the intrinsics of known poses: give known_intrinsics too"
                    )
                known_poses = known_cameras.poses
                extrinsics = normalised_extrinsics(np.linalg.inv(known_poses))
                given = {"extrinsics": torch.as_tensor(extrinsics, dtype=torch.float32, device=self.device),
                         "intrinsics": torch.as_tensor(known_k, dtype=torch.float32, device=self.device)}
        images = torch.cat(processed.tensors).to(self.device)
        with torch.inference_mode(), torch.autocast(device_type=self.device.type, dtype=self.amp_dtype or torch.float32,
                                                    enabled=self.amp_dtype is not None):
            out = self.network(images, opts.ref_view_strategy, **given)
        arrays = ViewOutputs.from_views({key: out[key] for key in ("depth", "depth_conf", "extrinsics", "intrinsics")})
        return Da3Outputs(arrays, int(out["reference_view"]), known_k, known_poses)

    def postprocess_results(
        self, raw: Da3Outputs, images: list[np.ndarray], processed: PairViews, as_pointcloud: bool = True, **kwargs: Any
    ) -> SceneFromViewsResult:
        """Cameras in view 0's frame, depth unprojected, the confidence mask (module doc)."""
        opts = self.call_options(kwargs)
        count = len(processed.rgb)
        world_to_camera = np.tile(np.eye(4), (count, 1, 1))
        world_to_camera[:, :3, :] = raw["extrinsics"]
        depth = np.asarray(raw["depth"], dtype=np.float32)
        known_poses = raw.known_poses
        if known_poses is not None:  # the given frame and units
            predicted_centres = np.linalg.inv(world_to_camera)[:, :3, 3]
            scale = float(np.cbrt(np.linalg.det(umeyama(known_poses[:, :3, 3], predicted_centres)[:3, :3])))
            poses, depth = np.array(known_poses, dtype=np.float64), (depth / scale).astype(np.float32)
        else:
            poses = np.einsum("ij,njk->nik", world_to_camera[0], np.linalg.inv(world_to_camera))
            poses[0] = np.eye(4)
        known_k = raw.known_intrinsics
        intrinsics = np.asarray(raw["intrinsics"] if known_k is None else known_k, dtype=np.float64)
        clouds = unproject_depth(depth, intrinsics, poses)
        confidences = np.asarray(raw["depth_conf"], dtype=np.float32)
        threshold = np.percentile(confidences, opts.conf_thres) if opts.conf_thres > 0 else -np.inf
        masks = [conf >= threshold for conf in confidences]
        cloud = PointCloud.from_views(list(clouds), processed.rgb, masks) if as_pointcloud else PointCloud(np.zeros((0, 3)), np.zeros((0, 3)))
        return SceneFromViewsResult(
            global_point_cloud=cloud, camera_poses=list(poses), processed_images=processed.rgb, depth_predictions=list(depth),
            point_clouds=[c.astype(np.float32) for c in clouds], intrinsics=list(intrinsics), confidences=list(confidences), masks=masks,
            extras={
                "reference_view": raw.reference_view, "focals": intrinsics[:, 0, 0].copy(),
                "intrinsics_original": list(intrinsics_in_original_pixels(intrinsics, processed.scales, processed.offsets)),
                "scales": processed.scales, "offsets": processed.offsets,
            },
        )


__all__ = ["Da3Outputs", "DepthAnythingV3Options", "SceneFromViewsDepthAnythingV3", "preprocess_da3_images"]
