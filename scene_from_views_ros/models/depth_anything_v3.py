"""Depth Anything 3 on the core API: every released variant, every view of a window in one pass.

The checkpoint's config.json (`model_name`) says which network it holds:
- any-view (DA3-SMALL, -BASE, -LARGE, -GIANT and the -1.1 re-releases): per view its depth, a
  confidence and its camera (world-to-camera extrinsics in the frame of the reference view it
  chose, intrinsics).  Output scale is the model's own ("map units").
- DA3NESTED-GIANT-LARGE(-1.1): the same, in metres (`is_metric`): a monocular metric branch
  scales the any-view depth and translations (networks/depth_anything_v3.py).
- DA3METRIC-LARGE / DA3MONO-LARGE: one view at a time, depth and a sky score, no camera.  The
  caller gives the intrinsics (METRIC's depth becomes metres as the release says: depth x mean
  focal of the processed image / 300; MONO's depth is relative) and, for more than one view,
  the poses (METRIC only: MONO's views share no scale).  They map only with a source of poses.
Here the cameras are re-expressed in view 0's frame (the convention of every model), each
view's points are its depth unprojected with its camera, and pixels under the `conf_thres`
percentile of the window's confidences are masked; with `drop_sky`, so are sky pixels (their
depth is only a far filler).

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
the reference, no RANSAC is run on the camera centres from 10 views on.  NESTED given intrinsics
alone takes its metres from their focal instead of the predicted one (the reference ignores them).
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
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
from .networks.depth_anything_v3 import (
    METRIC_FOCAL_UNIT,
    METRIC_PRESETS,
    MODEL_NAMES,
    NESTED_PRESET,
    PATCH,
    REFERENCE_STRATEGIES,
    SKY_SCORE,
    UNUSED_HEADS,
    Da3Config,
    DepthAnything3Net,
    da3_network,
    strip_model_prefix,
)
from .one_pass import OnePassModel, ViewOutputs
from .vggt import autocast_dtype

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
HUB_OWNER = "depth-anything"
# The released hub repos and the model_name their config.json holds.
RELEASES = {
    "DA3-SMALL": "da3-small", "DA3-BASE": "da3-base", "DA3-LARGE": "da3-large", "DA3-LARGE-1.1": "da3-large",
    "DA3-GIANT": "da3-giant", "DA3-GIANT-1.1": "da3-giant", "DA3METRIC-LARGE": "da3metric-large",
    "DA3MONO-LARGE": "da3mono-large", "DA3NESTED-GIANT-LARGE": NESTED_PRESET, "DA3NESTED-GIANT-LARGE-1.1": NESTED_PRESET,
}


def release_named(checkpoint: str) -> str | None:
    """The release a checkpoint reference names: a `depth-anything/<repo>` id, or a local copy
    (a folder, or a file in one) named like a release; None otherwise."""
    match = re.fullmatch(rf"{HUB_OWNER}/([^/]+)", checkpoint.strip())
    if match:
        return match.group(1)
    path = Path(checkpoint).expanduser()
    for name in (path.name, path.parent.name):
        if name.upper() in RELEASES:
            return name.upper()
    return None


@dataclass(frozen=True)
class DepthAnythingV3Options(ModelOptions):
    """The options of `SceneFromViewsDepthAnythingV3` (ROS: ``model.<name>``); defaults = the reference's."""

    checkpoint: str = checkpoint_option("depth-anything/DA3-LARGE")
    config: str = option(
        "", "Architecture JSON (Da3Config fields; NESTED: {\"anyview\": {...}, \"metric\": {...}}) for reduced "
        "configurations; '' = the preset named by the config.json beside the weights (its model_name). The Python API "
        "also takes a Da3Config or a dict.",
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
    drop_sky: bool = option(
        True, "Leave sky pixels (sky score >= 0.3; their depth is only a far filler) out of the clouds, the depth images and "
        "the map. Variants with a sky head only: METRIC, MONO, NESTED.",
    )

    def check_together(self) -> None:
        checkpoint = str(self.checkpoint)
        if checkpoint.startswith(f"{HUB_OWNER}/") and release_named(checkpoint) not in RELEASES:
            raise InvalidOptionError(
                f"model.checkpoint {self.checkpoint!r} is not a Depth Anything 3 release; the variants are "
                + ", ".join(f"{HUB_OWNER}/{name}" for name in RELEASES)
            )


class Da3Outputs(ViewOutputs):
    """Raw outputs per view under the reference's names (`depth`; any-view and NESTED:
    `depth_conf`, `extrinsics`, `intrinsics`; with a sky head: `sky`), the reference view the
    network chose, NESTED's metric scale, and the known cameras it was given (intrinsics in
    network-input pixels)."""

    def __init__(self, outputs: Mapping[str, Any], reference_view: int, known_intrinsics: np.ndarray | None = None,
                 known_poses: np.ndarray | None = None, scale_factor: float | None = None) -> None:
        super().__init__(outputs)
        self.reference_view, self.known_intrinsics, self.known_poses = reference_view, known_intrinsics, known_poses
        self.scale_factor = scale_factor


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


def read_model_name(weights: Path, config: Any, release: str | None) -> str | None:
    """The checkpoint's model_name (config.json beside the weights), checked against the release
    the checkpoint reference names; None for a reduced `config` without config.json."""
    beside = weights.parent / "config.json"
    if not beside.is_file():
        if config:
            return NESTED_PRESET if isinstance(config, Mapping) and "anyview" in config else None
        raise CheckpointNotFoundError(
            f"{weights} has no config.json beside it (the hub repo holds both: huggingface-cli download "
            f"{HUB_OWNER}/DA3-LARGE config.json); pass config=<Da3Config JSON>"
        )
    name = read_config_json(beside).get("model_name")
    if name not in MODEL_NAMES and not config:
        raise CheckpointMismatchError(
            f"{beside} names model_name {name!r}, not a Depth Anything 3 variant ({', '.join(MODEL_NAMES)}): "
            "is it another model's checkpoint?"
        )
    expected = RELEASES.get(release or "")
    if expected is not None and name != expected:
        raise CheckpointMismatchError(
            f"{weights} is named {release} but its config.json says model_name {name!r} ({release} holds {expected!r}): "
            "the files are mixed up; download the release again"
        )
    return name


def read_network_config(config: Any) -> Da3Config | Mapping[str, Any] | None:
    """The `config` option: a Da3Config, a mapping, a JSON file of one, or '' (the preset)."""
    if isinstance(config, (Da3Config, Mapping)) or not config:
        return config or None
    return dict(json.loads(Path(config).read_text()))


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
        self.model_name = read_model_name(self.checkpoint_path, opts.config, release_named(str(opts.checkpoint)))
        config = read_network_config(opts.config)
        self.network = build_network(lambda: da3_network(self.model_name, config), self.checkpoint_path, self.device,
                                     drop_prefixes=UNUSED_HEADS, rename=strip_model_prefix)
        self.is_metric = self.model_name in METRIC_PRESETS
        self.monocular = isinstance(self.network, DepthAnything3Net) and not self.network.cfg.any_view

    @property
    def variant(self) -> str:
        """The release name (DA3-LARGE, DA3METRIC-LARGE, ...; a reduced network says so)."""
        return self.model_name.upper() if self.model_name else "a reduced Depth Anything 3"

    def check_window(self, views: int) -> None:
        super().check_window(views)
        if self.monocular and views > 1:
            raise InvalidOptionError(
                f"{self.variant} ({self.checkpoint_path}) predicts depth but no camera, so it cannot map windows of {views} views "
                f"without known poses; use {HUB_OWNER}/DA3NESTED-GIANT-LARGE (metres, with cameras) or an any-view variant"
            )

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
                if not self.monocular:
                    extrinsics = normalised_extrinsics(np.linalg.inv(known_poses))
                    given = {"extrinsics": torch.as_tensor(extrinsics, dtype=torch.float32, device=self.device)}
            if known_k is not None and not self.monocular and (known_poses is not None or self.model_name == NESTED_PRESET):
                # with poses: the camera encoder's input; alone: NESTED's focal for metres
                given["intrinsics"] = torch.as_tensor(known_k, dtype=torch.float32, device=self.device)
        if self.monocular:
            self._check_monocular_input(len(processed.tensors), known_k is not None, known_poses is not None)
        images = torch.cat(processed.tensors).to(self.device)
        with torch.inference_mode(), torch.autocast(device_type=self.device.type, dtype=self.amp_dtype or torch.float32,
                                                    enabled=self.amp_dtype is not None):
            out = self.network(images, opts.ref_view_strategy, **given)
        arrays = ViewOutputs.from_views({key: out[key] for key in ("depth", "depth_conf", "extrinsics", "intrinsics", "sky") if key in out})
        scale = float(out["scale_factor"]) if "scale_factor" in out else None
        return Da3Outputs(arrays, int(out.get("reference_view", 0)), known_k, known_poses, scale)

    def _check_monocular_input(self, views: int, intrinsics: bool, poses: bool) -> None:
        """METRIC/MONO predict no camera: the caller's intrinsics place the depth, and its poses
        place more than one view (MONO's views share no scale: one view only)."""
        if not intrinsics:
            raise InvalidOptionError(
                f"{self.variant} predicts depth but no camera: give known_intrinsics (CameraInfo, --intrinsics), "
                f"or use {HUB_OWNER}/DA3NESTED-GIANT-LARGE or an any-view variant, which predict them"
            )
        if views > 1 and (self.model_name == "da3mono-large" or not poses):
            raise InvalidOptionError(
                f"{self.variant} sees each view alone: {views} views need known_poses to be placed"
                + (" and share no scale (relative depth): give one view at a time" if self.model_name == "da3mono-large" else "")
                + f", or use {HUB_OWNER}/DA3NESTED-GIANT-LARGE"
            )

    def postprocess_results(
        self, raw: Da3Outputs, images: list[np.ndarray], processed: PairViews, as_pointcloud: bool = True, **kwargs: Any
    ) -> SceneFromViewsResult:
        """Cameras in view 0's frame, depth unprojected, the confidence mask (module doc)."""
        opts = self.call_options(kwargs)
        if self.monocular:
            return self._monocular_result(raw, processed, as_pointcloud, opts)
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
        confidences = np.asarray(raw["depth_conf"], dtype=np.float32)
        threshold = np.percentile(confidences, opts.conf_thres) if opts.conf_thres > 0 else -np.inf
        return self._result(raw, processed, depth, confidences >= threshold, confidences, intrinsics, poses, as_pointcloud, opts)

    def _monocular_result(self, raw: Da3Outputs, processed: PairViews, as_pointcloud: bool,
                          opts: DepthAnythingV3Options) -> SceneFromViewsResult:
        """METRIC/MONO: the depth placed with the given cameras (METRIC's in metres)."""
        intrinsics = np.asarray(raw.known_intrinsics, dtype=np.float64)
        depth = np.asarray(raw["depth"], dtype=np.float32)
        if self.is_metric:
            focal = intrinsics[:, [0, 1], [0, 1]].mean(axis=1)
            depth = (depth * (focal / METRIC_FOCAL_UNIT)[:, None, None]).astype(np.float32)
        poses = np.array(raw.known_poses if raw.known_poses is not None else np.eye(4)[None], dtype=np.float64)
        confidences = np.ones_like(depth)  # no confidence head
        return self._result(raw, processed, depth, np.ones(depth.shape, bool), confidences, intrinsics, poses, as_pointcloud, opts)

    def _result(self, raw: Da3Outputs, processed: PairViews, depth: np.ndarray, kept: np.ndarray, confidences: np.ndarray,
                intrinsics: np.ndarray, poses: np.ndarray, as_pointcloud: bool, opts: DepthAnythingV3Options) -> SceneFromViewsResult:
        """Unproject, mask (confidence, and sky with `drop_sky`) and assemble the result."""
        extras: dict[str, Any] = {
            "reference_view": raw.reference_view, "focals": intrinsics[:, 0, 0].copy(), "model_name": self.model_name,
            "intrinsics_original": list(intrinsics_in_original_pixels(intrinsics, processed.scales, processed.offsets)),
            "scales": processed.scales, "offsets": processed.offsets,
        }
        if "sky" in raw:
            sky = np.asarray(raw["sky"]) >= SKY_SCORE
            extras["sky_masks"] = list(sky)
            if opts.drop_sky:
                kept = kept & ~sky
        if raw.scale_factor is not None:
            extras["scale_factor"] = raw.scale_factor
        clouds = unproject_depth(depth, intrinsics, poses)
        masks = list(kept)
        cloud = PointCloud.from_views(list(clouds), processed.rgb, masks) if as_pointcloud else PointCloud(np.zeros((0, 3)), np.zeros((0, 3)))
        return SceneFromViewsResult(
            global_point_cloud=cloud, camera_poses=list(poses), processed_images=processed.rgb, depth_predictions=list(depth),
            point_clouds=[c.astype(np.float32) for c in clouds], intrinsics=list(intrinsics), confidences=list(confidences), masks=masks,
            extras=extras,
        )


__all__ = ["Da3Outputs", "DepthAnythingV3Options", "SceneFromViewsDepthAnythingV3", "preprocess_da3_images"]
