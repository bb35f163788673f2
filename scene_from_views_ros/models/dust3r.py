"""DUSt3R and MASt3R on the core API: pairwise models chained over a pair graph.

Each pair of views (i, j) of the scene graph gives both views' points in view i's camera
frame.  `create_optimizer_input` hands those pair predictions to any scene optimizer;
without one, `postprocess_results` takes the fast path: a maximum spanning tree over the
pairs' confidences, aligned pair by pair (geometry/pair_chain.py), as the references
initialise their global alignment.

Preprocessing reproduces the references' `load_images` byte for byte: the long side is
resized to `image_size` (LANCZOS when shrinking, BICUBIC when enlarging) and centre-cropped
to multiples of the patch, square images to 4:3 unless `square_ok`; at 224 the short side
is resized and the centre square kept; then (x / 255 - 0.5) / 0.5.
"""
from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from ..core.base import ModelOptions, SceneFromViewsBase, checkpoint_option
from ..core.cameras import KnownCameras
from ..core.checkpoint import build_network, read_pickle, resolve_checkpoint, safetensors_index
from ..core.errors import CheckpointCorruptError, CheckpointMismatchError, CheckpointNotFoundError, InvalidImageError, InvalidOptionError
from ..core.images import check_rgb_image
from ..core.options import BUILD, option
from ..core.result import PointCloud, SceneFromViewsResult
from ..core.types import SceneFromViewsType
from ..geometry.camera import intrinsics_in_original_pixels, intrinsics_in_processed_pixels
from ..geometry.pair_chain import chain_pairs
from ..optimizers import chain_uses_known_intrinsics, chain_uses_known_poses
from ..optimizers.base import PairPrediction, SceneOptimizerInput
from .layers.dpt_adapter import canonical_dpt_key
from .networks.croco_stereo import FAMILY_NAMES, ConfigError, CroCoStereo, CroCoStereoConfig, EncodedViews, WrongFamilyError
from .pair_graph import SCENE_GRAPHS, make_pairs
from .vggt import autocast_dtype

PRECISIONS = ("auto", "bfloat16", "float16", "float32")
SQUARE_SIZE = 224  # the references' one special size: short side resized, centre square kept


def network_dtype_option() -> Any:
    """The `dtype` option of the CroCo-family models (DUSt3R, MASt3R, Fast3R, MV-DUSt3R)."""
    return option(
        "float32", "Encoder/decoder precision on CUDA: float32 (the default), auto (bfloat16 on Ampere or newer, else "
        "float16), bfloat16 or float16; the heads always run in float32, the CPU always in float32.",
        choices=PRECISIONS, stage=BUILD,
    )


@dataclass(frozen=True)
class Dust3rOptions(ModelOptions):
    """The options of `SceneFromViewsDust3r` (ROS: ``model.<name>``)."""

    checkpoint: str = checkpoint_option("naver/DUSt3R_ViTLarge_BaseDecoder_512_dpt")
    config: str = option(
        "", "Architecture JSON (a hub config.json) for reduced configurations; '' = read from the checkpoint "
        "(config.json beside a .safetensors, the args stored in a .pth). The Python API also takes a "
        "CroCoStereoConfig or a dict.", path=True, python_types=(CroCoStereoConfig, dict), stage=BUILD,
    )
    dtype: str = network_dtype_option()
    image_size: int = option(
        0, "Input size: 0 = the checkpoint's training size (512 or 224); 224 resizes the short side and keeps "
        "the centre square; any other value resizes the long side and crops to multiples of 16.",
        unit="pixels", low=0, high=2048, step=16,
    )
    square_ok: bool = option(False, "Keep square images square (otherwise cropped to 4:3, as the model was trained).")
    scene_graph: str = option(
        "auto", "The view pairs the model sees: complete (every pair), swin (sliding window of winsize), logwin "
        "(offsets 1, 2, 4, ... up to 2^(winsize-1)), oneref (every view with view refid), auto (swin above 8 "
        "views, else complete). Every pair is also run swapped.", choices=SCENE_GRAPHS,
    )
    winsize: int = option(3, "Window of the swin and logwin graphs.", unit="views", low=1, high=1024)
    win_cyclic: bool = option(True, "swin/logwin windows wrap from the last view to the first (loop closure).")
    refid: int = option(0, "Reference view of the oneref graph (must be below the number of views).", unit="view index", low=0, high=1023)
    batch_size: int = option(
        8, "Pairs per network pass: bounds memory on large graphs without changing any output.", unit="pairs", low=1, high=256,
    )
    min_conf_thr: float = option(
        3.0, "Pixels whose confidence is under this value are left out of the clouds, the depth images and the "
        "map (absolute, not a percentile: the confidence is 1 + exp(x) >= 1).", low=0.0, high=1e6,
    )


    def check_window(self, views: int) -> None:
        """The oneref graph's reference view must be one of the window's views."""
        if self.scene_graph == "oneref" and self.refid >= views:
            raise InvalidOptionError(
                f"{self.label('refid')}={self.refid} is not allowed with windows of {views} views: the oneref graph's "
                f"reference view must be one of them, an index below {views}; lower it or enlarge window.size"
            )


@dataclass(frozen=True)
class Mast3rOptions(Dust3rOptions):
    """The options of `SceneFromViewsMast3r` (ROS: ``model.<name>``): DUSt3R's, other defaults."""

    checkpoint: str = checkpoint_option("naver/MASt3R_ViTLarge_BaseDecoder_512_catmlpdpt_metric")
    min_conf_thr: float = option(
        1.5, "Pixels whose confidence is under this value are left out of the clouds, the depth images and the "
        "map (absolute, not a percentile: the confidence is 1 + exp(x) >= 1).", low=0.0, high=1e6,
    )


@dataclass
class PairViews:
    """Preprocessed views: per view the network input (1, 3, H, W) in [-1, 1], the processed
    RGB uint8 image, and the map back to the original image, x_processed = scale * x + offset."""

    tensors: list[torch.Tensor]
    rgb: list[np.ndarray]
    scales: np.ndarray
    offsets: np.ndarray

    @property
    def true_shapes(self) -> np.ndarray:
        """(N, 2) int32 [H, W] per view, as the references' `true_shape`."""
        return np.asarray([image.shape[:2] for image in self.rgb], dtype=np.int32)


@dataclass
class PairOutputs:
    """Raw network outputs: the ordered pairs and, per pair, view i's and view j's maps; the
    caller's known intrinsics (in the processed images' pixels) and poses, when given."""

    pairs: list[tuple[int, int]]
    view1: list[dict[str, np.ndarray]]
    view2: list[dict[str, np.ndarray]]
    known_intrinsics: np.ndarray | None = None
    known_poses: np.ndarray | None = None


def _resize_long_side(image: Image.Image, long_side: int) -> Image.Image:
    """The references' resize: LANCZOS when shrinking, BICUBIC otherwise, sides round(x * long / S)."""
    size = max(image.size)
    method = Image.Resampling.LANCZOS if size > long_side else Image.Resampling.BICUBIC
    return image.resize((round(image.size[0] * long_side / size), round(image.size[1] * long_side / size)), method)


def processed_size(width: int, height: int, size: int, square_ok: bool, patch_size: int) -> tuple[int, int, int, int, int]:
    """(long side resized to, resized width, height, crop width, height) of a width x height
    image, as the references compute them; InvalidImageError when the crop is not a positive
    multiple of the patch (an image too elongated, or a square at an image_size the 4:3 crop
    cannot keep on the patch grid)."""
    if min(width, height) < patch_size:
        raise InvalidImageError(
            f"a {width}x{height} image is smaller than one {patch_size}-pixel patch of the network; resizing it up "
            f"would only invent pixels: use images of at least {patch_size}x{patch_size}"
        )
    long_side = round(size * max(width / height, height / width)) if size == SQUARE_SIZE else size
    longest = max(width, height)
    new_w, new_h = round(width * long_side / longest), round(height * long_side / longest)
    cx, cy = new_w // 2, new_h // 2
    if size == SQUARE_SIZE:
        crop_w = crop_h = 2 * min(cx, cy)
    else:
        crop_w, crop_h = (2 * cx) // patch_size * patch_size, (2 * cy) // patch_size * patch_size
        if not square_ok and new_w == new_h:
            crop_h = 3 * crop_w // 4
    if min(crop_w, crop_h) < patch_size or crop_w % patch_size or crop_h % patch_size:
        raise InvalidImageError(
            f"a {width}x{height} image gives a {crop_w}x{crop_h} input at image_size {size}, not a positive multiple "
            f"of the {patch_size}-pixel patch; crop the image closer to 4:3, or use image_size 512 (square images: "
            "a multiple of 64, or square_ok)"
        )
    return long_side, new_w, new_h, crop_w, crop_h


def preprocess_pair_images(images: list[np.ndarray], size: int = 512, square_ok: bool = False, patch_size: int = 16) -> PairViews:
    """Resize and crop RGB uint8 images exactly as the references' `load_images` (see module doc)."""
    if len(images) == 0:
        raise InvalidImageError("empty window: a pairwise model needs at least two images")
    tensors, rgb, scales, offsets = [], [], [], []
    for index, array in enumerate(images):
        check_rgb_image(array, index)
        height, width = array.shape[:2]
        long_side, new_w, new_h, crop_w, crop_h = processed_size(width, height, size, square_ok, patch_size)
        resized = _resize_long_side(Image.fromarray(array), long_side)
        left, top = new_w // 2 - crop_w // 2, new_h // 2 - crop_h // 2
        out = np.array(np.asarray(resized)[top : top + crop_h, left : left + crop_w], copy=True)
        rgb.append(out)
        tensors.append(torch.from_numpy(out).permute(2, 0, 1)[None].float().div(255).sub(0.5).div(0.5))
        scales.append((new_w / width, new_h / height))
        offsets.append((-left, -top))
    return PairViews(tensors, rgb, np.asarray(scales, dtype=np.float64), np.asarray(offsets, dtype=np.float64))


# ----------------------------------------------------------------------------- checkpoints
def head_type_of(keys: Mapping[str, Any] | list[str]) -> str:
    """Which head a checkpoint holds, from its key names."""
    names = list(keys)
    if any(k.startswith("downstream_head1.head_local_features") for k in names):
        return "catmlp+dpt"
    if any(k.startswith("downstream_head1.dpt.") for k in names):
        return "dpt"
    if any(k.startswith("downstream_head1.proj.") for k in names):
        return "linear"
    return "unknown"


def read_config_json(path: Path) -> dict[str, Any]:
    try:
        # The hub mixin writes bare Infinity / -Infinity, which Python's json reads.
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointCorruptError(f"cannot read the network configuration {path}: {error}") from error


def network_config(weights: Path, config: Any, family: str) -> CroCoStereoConfig:
    """The architecture of `weights`: from `config` when given, else from the checkpoint itself
    (config.json beside a .safetensors, the constructor string in a .pth's args)."""
    try:
        if isinstance(config, CroCoStereoConfig):
            return config
        if isinstance(config, Mapping):
            return CroCoStereoConfig.from_dict(config)
        if config:
            return CroCoStereoConfig.from_dict(read_config_json(Path(config)))
        if weights.suffix == ".safetensors":
            beside = weights.parent / "config.json"
            if not beside.is_file():
                raise CheckpointNotFoundError(
                    f"{weights} has no config.json beside it (the hub repo holds both: huggingface-cli download <repo> "
                    "config.json); pass config=<config.json>"
                )
            return CroCoStereoConfig.from_dict(read_config_json(beside))
        return CroCoStereoConfig.from_constructor(stored_constructor(weights, family))
    except WrongFamilyError as error:
        raise wrong_family(weights, error.family, family) from error
    except ConfigError as error:
        raise CheckpointMismatchError(f"{weights}: {error}") from error


def stored_constructor(weights: Path, family: str) -> str:
    """The constructor string an official .pth stores beside its weights (args.model)."""
    loaded = read_pickle(weights)
    args = loaded.get("args") if isinstance(loaded, Mapping) else None
    constructor = getattr(args, "model", None)
    if not isinstance(constructor, str):
        raise CheckpointMismatchError(
            f"{weights} stores no network description (args.model) as the official {FAMILY_NAMES[family]} "
            ".pth files do; pass config=<config.json>"
        )
    return constructor


def wrong_family(weights: Path, found: str, wanted: str) -> CheckpointMismatchError:
    """The error for a checkpoint of another CroCo-family network, naming the model type to use."""
    return CheckpointMismatchError(
        f"{weights} is a {FAMILY_NAMES[found]} checkpoint, not {FAMILY_NAMES[wanted]}: use model type {found!r} "
        f"(ROS: model_type:={found}), or pass a {FAMILY_NAMES[wanted]} checkpoint"
    )


def checkpoint_keys(weights: Path) -> list[str]:
    """The tensor names of a weight file (header only for .safetensors)."""
    if weights.suffix == ".safetensors":
        return list(safetensors_index(weights))
    loaded = read_pickle(weights)
    state = loaded.get("model", loaded) if isinstance(loaded, Mapping) else {}
    return list(state) if isinstance(state, Mapping) else []


def check_family_and_head(weights: Path, cfg: CroCoStereoConfig, family: str) -> None:
    """Refuse, with the fix, a checkpoint of the other family or whose head is not the configured one."""
    if cfg.family != family:
        raise wrong_family(weights, cfg.family, family)
    found = head_type_of(checkpoint_keys(weights))
    if found not in (cfg.head_type, "unknown"):
        raise CheckpointMismatchError(
            f"{weights} holds a {found!r} head but its configuration describes a {cfg.head_type!r} head; "
            "pass the config.json that came with these weights (or leave config empty)"
        )


# ----------------------------------------------------------------------------- the model
class SceneFromViewsDust3r(SceneFromViewsBase):
    """DUSt3R (Wang et al., CVPR 2024): pairwise point maps, chained over a pair graph and, by
    default, globally aligned by the dense scene optimizer (`optimizer="none"`: the fast path).

    Output scale is the model's own ("map units"), not metres.
    """

    model_type: ClassVar[SceneFromViewsType] = SceneFromViewsType.DUST3R
    options_class: ClassVar[type[ModelOptions]] = Dust3rOptions
    checkpoint_filenames: ClassVar[tuple[str, ...]] = ("model.safetensors", "model.pth")
    family: ClassVar[str] = "dust3r"
    default_optimizer: ClassVar[str] = "dense_scene_optimizer"
    accepts_known_intrinsics: ClassVar[bool] = True  # through its scene optimizers
    accepts_known_poses: ClassVar[bool] = True
    options: Dust3rOptions

    def __init__(self, device: str | torch.device | None = None, **options: Any) -> None:
        """Options: see `Dust3rOptions` (construction ones: checkpoint, config, dtype)."""
        super().__init__(device, **options)
        opts = self.options
        self.amp_dtype = autocast_dtype(self.device, opts.dtype)
        self.checkpoint_path = resolve_checkpoint(opts.checkpoint, self.checkpoint_filenames, companions=("config.json",))
        cfg = network_config(self.checkpoint_path, opts.config, self.family)
        check_family_and_head(self.checkpoint_path, cfg, self.family)
        self.network = build_network(lambda: CroCoStereo(cfg), self.checkpoint_path, self.device, rename=canonical_dpt_key)

    @property
    def cfg(self) -> CroCoStereoConfig:
        return self.network.cfg

    def image_size(self, opts: Dust3rOptions) -> int:
        """The preprocessing size: the option, or the checkpoint's training size."""
        return opts.image_size or max(self.cfg.img_size)

    def check_image(self, image: np.ndarray) -> None:
        """Can this image be resized and cropped with the current image_size?"""
        super().check_image(image)
        processed_size(image.shape[1], image.shape[0], self.image_size(self.options), self.options.square_ok, self.cfg.patch_size)

    # ------------------------------------------------------------- stages
    def preprocess_images(self, images: list[np.ndarray], **kwargs: Any) -> PairViews:
        """Resize and crop as the reference (`image_size`, `square_ok`)."""
        opts = self.call_options(kwargs)
        if len(images) < 2:
            raise InvalidImageError(
                f"{type(self).__name__} is a pairwise model and needs at least 2 views, got {len(images)}; to "
                "reconstruct one image, pass it twice on purpose (as the reference demo does: [image, image])"
            )
        return preprocess_pair_images(images, self.image_size(opts), opts.square_ok, self.cfg.patch_size)

    def uses_known_intrinsics(self, optimizer: Any = None) -> bool:
        """Known intrinsics are kept fixed by the scene optimizers that can (dense, sparse)."""
        return chain_uses_known_intrinsics(self.optimizer if optimizer is None else optimizer)

    def uses_known_poses(self, optimizer: Any = None) -> bool:
        """Known poses are kept fixed by the dense optimizer."""
        return chain_uses_known_poses(self.optimizer if optimizer is None else optimizer)

    def known_intrinsics_refusal(self) -> str:
        return ("only its scene optimizers use them (intrinsics: dense_scene_optimizer and sparse_scene_optimizer; poses: "
                "dense_scene_optimizer), and the fast path (optimizer none) would ignore them; choose one of those optimizers")

    def infer(self, processed: PairViews, known_cameras: KnownCameras | None = None, **kwargs: Any) -> PairOutputs:
        """Run the network on every pair of the scene graph (`scene_graph`, `winsize`,
        `win_cyclic`, `refid`), `batch_size` pairs per pass; each view is encoded once.
        `known_cameras` are kept (intrinsics in the processed pixels) for the optimizer."""
        opts = self.call_options(kwargs)
        pairs = make_pairs(len(processed.rgb), opts.scene_graph, winsize=opts.winsize, cyclic=opts.win_cyclic, refid=opts.refid)
        with torch.inference_mode(), torch.autocast(device_type=self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            encoded = self.network.encode_views([t.to(self.device) for t in processed.tensors])
            view1: list[dict[str, np.ndarray]] = [{} for _ in pairs]
            view2: list[dict[str, np.ndarray]] = [{} for _ in pairs]
            for batch in self._pair_batches(pairs, processed.true_shapes, opts.batch_size):
                res1, res2 = self.network.forward_encoded(
                    _stack([encoded[pairs[k][0]] for k in batch]), _stack([encoded[pairs[k][1]] for k in batch])
                )
                for slot, k in enumerate(batch):
                    view1[k] = {name: value[slot].float().cpu().numpy() for name, value in res1.items()}
                    view2[k] = {name: value[slot].float().cpu().numpy() for name, value in res2.items()}
        known = None
        if known_cameras is not None and known_cameras.intrinsics is not None:
            known = intrinsics_in_processed_pixels(known_cameras.intrinsics, processed.scales, processed.offsets)
        return PairOutputs(pairs, view1, view2, known, None if known_cameras is None else known_cameras.poses)

    @staticmethod
    def _pair_batches(pairs: list[tuple[int, int]], shapes: np.ndarray, batch_size: int) -> list[list[int]]:
        """Pair indices in batches of at most `batch_size`, each batch of one (shape i, shape j)."""
        groups: dict[tuple[tuple[int, ...], tuple[int, ...]], list[int]] = defaultdict(list)
        for k, (i, j) in enumerate(pairs):
            groups[(tuple(shapes[i].tolist()), tuple(shapes[j].tolist()))].append(k)
        return [group[s : s + batch_size] for group in groups.values() for s in range(0, len(group), batch_size)]

    def create_optimizer_input(self, raw: PairOutputs, processed: PairViews) -> SceneOptimizerInput:
        """The pair predictions (points of both views in view i's frame, confidences and, for
        MASt3R, descriptors) for any scene optimizer."""
        predictions = []
        for (i, j), out1, out2 in zip(raw.pairs, raw.view1, raw.view2, strict=True):
            predictions.append(PairPrediction(
                i=i, j=j, pts3d_i=out1["pts3d"], conf_i=out1["conf"], pts3d_j_in_i=out2["pts3d_in_other_view"], conf_j=out2["conf"],
                desc_i=out1.get("desc"), desc_j=out2.get("desc"), desc_conf_i=out1.get("desc_conf"), desc_conf_j=out2.get("desc_conf"),
            ))
        return SceneOptimizerInput(
            pair_predictions=predictions, images=processed.rgb, true_shapes=processed.true_shapes, raw=raw, device=str(self.device),
            known_intrinsics=raw.known_intrinsics, known_poses=raw.known_poses,
        )

    def postprocess_results(
        self, raw: PairOutputs, images: list[np.ndarray], processed: PairViews, as_pointcloud: bool = True, **kwargs: Any
    ) -> SceneFromViewsResult:
        """The fast path: the pairs chained along their maximum-confidence spanning tree;
        pixels under `min_conf_thr` are masked out."""
        opts = self.call_options(kwargs)
        chain = chain_pairs(self.create_optimizer_input(raw, processed).pair_predictions, len(processed.rgb))
        masks = [conf >= opts.min_conf_thr for conf in chain.confidences]
        cloud = PointCloud.from_views(chain.point_clouds, processed.rgb, masks) if as_pointcloud else PointCloud(np.zeros((0, 3)), np.zeros((0, 3)))
        original_k = intrinsics_in_original_pixels(chain.intrinsics, processed.scales, processed.offsets)
        return SceneFromViewsResult(
            global_point_cloud=cloud,
            camera_poses=[np.asarray(p, dtype=np.float64) for p in chain.camera_poses],
            processed_images=processed.rgb,
            depth_predictions=[np.asarray(d, dtype=np.float32) for d in chain.depths],
            point_clouds=[np.asarray(p, dtype=np.float32) for p in chain.point_clouds],
            intrinsics=[np.asarray(k, dtype=np.float64) for k in chain.intrinsics],
            confidences=[np.asarray(c, dtype=np.float32) for c in chain.confidences],
            masks=masks,
            extras={
                "pairs": raw.pairs,
                "tree_edges": list(chain.tree_edges),
                "focals": np.asarray(chain.focals),
                "intrinsics_original": list(original_k),
                "scales": processed.scales,
                "offsets": processed.offsets,
            },
        )


class SceneFromViewsMast3r(SceneFromViewsDust3r):
    """MASt3R (Leroy et al., ECCV 2024): DUSt3R with local descriptors, by default aligned by the
    sparse scene optimizer on matched descriptors; the metric release predicts points in metres."""

    model_type: ClassVar[SceneFromViewsType] = SceneFromViewsType.MAST3R
    options_class: ClassVar[type[ModelOptions]] = Mast3rOptions
    family: ClassVar[str] = "mast3r"
    is_metric: bool = True
    gives_descriptors: ClassVar[bool] = True
    default_optimizer: ClassVar[str] = "sparse_scene_optimizer"
    options: Mast3rOptions


def _stack(views: list[EncodedViews]) -> EncodedViews:
    first = views[0]
    return EncodedViews(
        torch.cat([v.tokens for v in views]), torch.cat([v.positions for v in views]), first.image_hw, first.transposed
    )


__all__ = [
    "Dust3rOptions",
    "Mast3rOptions",
    "PairOutputs",
    "PairViews",
    "SceneFromViewsDust3r",
    "SceneFromViewsMast3r",
    "preprocess_pair_images",
    "processed_size",
]
