"""Depth Anything 3's networks, checkpoint-compatible with the hub releases (keys under `model.`):
the any-view presets (DA3-SMALL/BASE/LARGE/GIANT; GIANT has SwiGLU blocks, its Gaussian-splatting
head is not built and its keys are dropped knowingly), the monocular METRIC/MONO-LARGE (one
architecture; the checkpoint's model_name says how to read its depth) and NESTED-GIANT-LARGE
(an any-view GIANT under `da3.` whose depth and poses a METRIC-LARGE under `da3_metric.` scales
to metres).

Architecture (key names as in the releases):
- `backbone.pretrained`: DINOv2 (patch 14, cls token, learned position embedding of a 37x37
  grid resized bicubically with DINOv2's 0.1 offset, LayerScale, LayerNorm eps 1e-6 in the
  blocks and 1e-5 in the final `norm`).  From block `alt_start` on, token 0 of each view is a
  camera token (`camera_token[0]` for the reference view, `[1]` for the others), odd blocks
  attend over all views' tokens at once (global) and even blocks within each view (local);
  those blocks have QK-norm and 2D RoPE (local: patch (row+1, col+1), token 0 at (0, 0);
  global: every patch at (1, 1), so no relative position across views).  Before block
  `alt_start - 1` the reference view is chosen (3+ views) and moved to the front.  Four
  `out_layers` give [local tokens, normed global tokens] (2C wide) per view.
- `head`: DualDPT's depth branch, the DPT of VGGT with residual units that add x (depth =
  exp, confidence = 1 + exp).  Its ray branch (`*_aux`) is discarded by the reference unless
  poses come from rays: it is not built, its keys are dropped knowingly.
- `cam_dec`: an MLP on the camera token of the last out layer -> translation, quaternion
  (xyzw) and two fields of view -> camera-to-world [R | t], focal lengths, centred principal
  point.
- `cam_enc`: given cameras (world-to-camera extrinsics with intrinsics) -> the same encoding ->
  an MLP and 4 transformer blocks over the views (16 heads) -> camera tokens that replace the
  learned ones at block `alt_start` (no reference view is chosen then).

The monocular presets (`alt_start` -1) are plain DINOv2-L (every block within its view, no
camera token, QK-norm or RoPE; features = normed tokens) with a DPT head without token norm or
UV embedding giving depth (exp) and a sky score (ReLU); depth of sky pixels (score >= 0.3) is
set to the 99th percentile of the other pixels' depth.  Metres = depth x focal / 300.

The reference estimates its percentiles on 100 000 randomly drawn pixels when there are more;
here they are exact (deterministic), equal to the reference's below that count.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...geometry.camera import matrix_to_quaternion, quaternion_to_matrix
from ..layers import Block, DPTHead, Mlp, Rope2D

PATCH = 14
POS_GRID = 37  # the learned position embedding's grid (518 / 14)
REFERENCE_STRATEGIES = ("saddle_balanced", "saddle_sim_range", "first", "middle")
MIN_VIEWS_FOR_REFERENCE = 3  # the reference selects a reference view only from 3 views on
# Keys of the hub files that give no depth or camera, dropped knowingly: DualDPT's ray branch (computed
# and discarded by the reference unless poses come from rays) and GIANT's Gaussian-splatting head.
UNUSED_HEADS = tuple(f"model.{branch}{name}" for branch in ("", "da3.") for name in (
    *(f"head.scratch.{head}" for head in ("refinenet1_aux.", "refinenet2_aux.", "refinenet3_aux.", "refinenet4_aux.",
                                          "output_conv1_aux.", "output_conv2_aux.")), "gs_head."))
SKY_SCORE = 0.3  # pixels scoring this or more are sky
SKY_DEPTH_CAP = 200.0  # NESTED: sky depth is at most this (metres)
METRIC_FOCAL_UNIT = 300.0  # METRIC-LARGE's depth x focal (pixels) / 300 = metres


@dataclass(frozen=True)
class Da3Config:
    """One any-view preset (configs/da3-*.yaml of the reference)."""

    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    out_layers: tuple[int, int, int, int] = (5, 7, 9, 11)
    alt_start: int = 4
    head_features: int = 64
    head_out_channels: tuple[int, int, int, int] = (48, 96, 192, 384)
    camera_encoder_heads: int = 16  # a constant of the reference's camera encoder; tiny test networks change it
    swiglu: bool = False  # DINOv2-giant's feed-forward (DA3-GIANT)

    @property
    def any_view(self) -> bool:
        """Alternating attention, camera tokens and cameras; False: a monocular (METRIC/MONO) network."""
        return self.alt_start >= 0

    @property
    def head_dim_in(self) -> int:
        return 2 * self.embed_dim if self.any_view else self.embed_dim


PRESETS = {
    "da3-small": Da3Config(),
    "da3-base": Da3Config(768, 12, 12, (5, 7, 9, 11), 4, 128, (96, 192, 384, 768)),
    "da3-large": Da3Config(1024, 24, 16, (11, 15, 19, 23), 8, 256, (256, 512, 1024, 1024)),
    "da3-giant": Da3Config(1536, 40, 24, (19, 27, 33, 39), 13, 256, (256, 512, 1024, 1024), swiglu=True),
    "da3metric-large": Da3Config(1024, 24, 16, (4, 11, 17, 23), -1, 256, (256, 512, 1024, 1024)),
}
PRESETS["da3mono-large"] = PRESETS["da3metric-large"]  # the same network; its depth is relative
NESTED_PRESET = "da3nested-giant-large"
NESTED_BRANCHES = (PRESETS["da3-giant"], PRESETS["da3metric-large"])
METRIC_PRESETS = ("da3metric-large", NESTED_PRESET)
MODEL_NAMES = (*PRESETS, NESTED_PRESET)


def quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """Exact linear-interpolation quantile of a 1-D tensor of any length (torch.quantile stops at 2**24)."""
    position = q * (values.numel() - 1)
    low = int(position)
    lower = values.kthvalue(low + 1).values
    upper = values.kthvalue(min(low + 2, values.numel())).values
    return torch.lerp(lower, upper, position - low)


def select_reference_view(cls_tokens: torch.Tensor, strategy: str) -> int:
    """The reference's choice among S views from their token-0 features (S, C)."""
    count = cls_tokens.shape[0]
    if strategy == "first" or count <= 1:
        return 0
    if strategy == "middle":
        return count // 2
    unit = cls_tokens / cls_tokens.norm(dim=-1, keepdim=True)
    similarity = unit @ unit.T - torch.eye(count, dtype=unit.dtype, device=unit.device)
    if strategy == "saddle_sim_range":
        return int((similarity.max(dim=-1).values - similarity.min(dim=-1).values).argmax())
    if strategy != "saddle_balanced":
        raise ValueError(f"unknown reference view strategy {strategy!r}; expected one of {', '.join(REFERENCE_STRATEGIES)}")

    def normalised(metric: torch.Tensor) -> torch.Tensor:
        return (metric - metric.min()) / (metric.max() - metric.min() + 1e-8)

    scores = [normalised(similarity.sum(dim=-1) / (count - 1)), normalised(cls_tokens.norm(dim=-1)), normalised(unit.var(dim=-1))]
    return int(sum((metric - 0.5).abs() for metric in scores).argmin())


class Da3Backbone(nn.Module):
    """DINOv2 with alternating local/global attention and camera tokens (keys `pretrained.*`)."""

    def __init__(self, cfg: Da3Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.pretrained = nn.Module()
        pretrained = self.pretrained
        pretrained.patch_embed = nn.Module()
        pretrained.patch_embed.proj = nn.Conv2d(3, cfg.embed_dim, PATCH, PATCH)
        pretrained.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        if cfg.any_view:
            pretrained.camera_token = nn.Parameter(torch.zeros(1, 2, cfg.embed_dim))
        pretrained.pos_embed = nn.Parameter(torch.zeros(1, POS_GRID * POS_GRID + 1, cfg.embed_dim))
        pretrained.blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, init_values=1.0, qk_norm=cfg.any_view and i >= cfg.alt_start, norm_eps=1e-6,
                  swiglu=cfg.swiglu)
            for i in range(cfg.depth)
        )
        pretrained.norm = nn.LayerNorm(cfg.embed_dim)
        self.rope = Rope2D(100.0)

    def _pos_embed(self, rows: int, cols: int) -> torch.Tensor:
        """DINOv2's resize of the 37x37 embedding: bicubic, scale factors (n + 0.1) / 37."""
        pos = self.pretrained.pos_embed
        if rows == cols == POS_GRID:
            return pos
        dim = pos.shape[-1]
        grid = pos[:, 1:].float().reshape(1, POS_GRID, POS_GRID, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((rows + 0.1) / POS_GRID, (cols + 0.1) / POS_GRID), mode="bicubic", antialias=False)
        return torch.cat([pos[:, :1].float(), grid.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)], dim=1).to(pos.dtype)

    def _rope_tables(self, rows: int, cols: int, views: int, device: torch.device, dtype: torch.dtype) -> tuple:
        """RoPE of local blocks (patch at (row+1, col+1)) and global ones (every patch at (1, 1)); token 0 at (0, 0)."""
        rr, cc = torch.meshgrid(torch.arange(rows, device=device), torch.arange(cols, device=device), indexing="ij")
        local = torch.cat([torch.zeros(1, 2, dtype=torch.long, device=device), torch.stack([rr.reshape(-1), cc.reshape(-1)], -1) + 1])
        flat = torch.zeros_like(local)
        flat[1:] = 1
        head_dim = self.cfg.embed_dim // self.cfg.num_heads
        return (self.rope.tables(local[None], head_dim, dtype),
                self.rope.tables(flat.repeat(views, 1)[None], head_dim, dtype))

    def forward(self, images: torch.Tensor, strategy: str = "saddle_balanced",
                camera_tokens_in: torch.Tensor | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor], int]:
        """images (S, 3, H, W), ImageNet-normalised -> per out layer the patch features (S, P, 2C)
        and camera tokens (S, 2C), in the input's view order, and the reference view chosen
        (view 0 when `camera_tokens_in` (S, C), from given cameras, replace the learned ones).
        Monocular presets: features (S, P, C) of each view alone, no camera tokens."""
        cfg, net = self.cfg, self.pretrained
        views, _, height, width = images.shape
        rows, cols = height // PATCH, width // PATCH
        x = net.patch_embed.proj(images).flatten(2).transpose(1, 2)
        x = torch.cat([net.cls_token.expand(views, -1, -1), x], dim=1) + self._pos_embed(rows, cols)
        if not cfg.any_view:
            features = []
            for i, block in enumerate(net.blocks):
                x = block(x)
                if i in cfg.out_layers:
                    features.append(net.norm(x)[:, 1:])
            return features, [], 0
        local_rope, global_rope = self._rope_tables(rows, cols, views, x.device, x.dtype)
        order = torch.arange(views, device=x.device)
        reference = 0
        local_x = x
        features, camera_tokens = [], []
        for i, block in enumerate(net.blocks):
            if i == cfg.alt_start - 1 and views >= MIN_VIEWS_FOR_REFERENCE and camera_tokens_in is None:
                reference = select_reference_view(x[:, 0], strategy)
                order = torch.cat([torch.tensor([reference]), torch.arange(reference), torch.arange(reference + 1, views)]).to(x.device)
                x, local_x = x[order], local_x[order]
            if i == cfg.alt_start:
                x = x.clone()
                if camera_tokens_in is not None:
                    x[:, 0] = camera_tokens_in.to(x.dtype)
                else:
                    x[:1, 0] = net.camera_token[0, :1]
                    x[1:, 0] = net.camera_token[0, 1:]
            rope = (local_rope if i >= cfg.alt_start else None)
            if i >= cfg.alt_start and i % 2 == 1:
                x = block(x.reshape(1, -1, x.shape[-1]), rope=global_rope).reshape(x.shape)
            else:
                x = block(x, rope=rope)
                local_x = x
            if i in cfg.out_layers:
                restore = torch.argsort(order)
                out = torch.cat([local_x, net.norm(x)], dim=-1)[restore]
                camera_tokens.append(torch.cat([local_x, x], dim=-1)[restore][:, 0])
                features.append(out[:, 1:])
        return features, camera_tokens, reference


class CameraDecoder(nn.Module):
    """Camera token (S, 2C) -> pose encoding [t (3), quaternion xyzw (4), fov_h, fov_w] (keys `backbone`, `fc_*`)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU())
        self.fc_t = nn.Linear(dim, 3)
        self.fc_qvec = nn.Linear(dim, 4)
        self.fc_fov = nn.Sequential(nn.Linear(dim, 2), nn.ReLU())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.backbone(tokens).float()
        return torch.cat([self.fc_t(x), self.fc_qvec(x), self.fc_fov(x)], dim=-1)


class CameraEncoder(nn.Module):
    """Given cameras -> one camera token per view (keys `pose_branch`, `token_norm`, `trunk`, `trunk_norm`)."""

    def __init__(self, dim: int, depth: int = 4, num_heads: int = 16) -> None:
        super().__init__()
        self.pose_branch = Mlp(9, dim // 2, dim)
        self.token_norm = nn.LayerNorm(dim)
        self.trunk = nn.Sequential(*(Block(dim, num_heads, init_values=0.01) for _ in range(depth)))
        self.trunk_norm = nn.LayerNorm(dim)

    def forward(self, extrinsics: torch.Tensor, intrinsics: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        """World-to-camera extrinsics (S, 4, 4) and intrinsics (S, 3, 3) in network-input pixels -> (S, C)."""
        return self.trunk_norm(self.trunk(self.token_norm(self.pose_branch(encode_cameras(extrinsics, intrinsics, image_hw)))[None]))[0]


def encode_cameras(extrinsics: torch.Tensor, intrinsics: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """The pose encoding of given cameras: camera-to-world translation, its rotation as a
    quaternion (xyzw, w >= 0) and the vertical and horizontal fields of view."""
    rotation_t = extrinsics[:, :3, :3].transpose(1, 2)
    translation = -(rotation_t @ extrinsics[:, :3, 3:])[..., 0]
    height, width = image_hw
    fov_h = 2 * torch.atan((height / 2) / intrinsics[:, 1, 1])
    fov_w = 2 * torch.atan((width / 2) / intrinsics[:, 0, 0])
    return torch.cat([translation, matrix_to_quaternion(rotation_t), fov_h[:, None], fov_w[:, None]], dim=-1).float()


def decode_cameras(encoding: torch.Tensor, image_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pose encodings (S, 9) -> world-to-camera extrinsics (S, 3, 4) and intrinsics (S, 3, 3) in
    pixels of the network input (principal point at the centre)."""
    rotation = quaternion_to_matrix(encoding[:, 3:7])
    height, width = image_hw
    fy = (height / 2.0) / torch.clamp(torch.tan(encoding[:, 7] / 2.0), 1e-6)
    fx = (width / 2.0) / torch.clamp(torch.tan(encoding[:, 8] / 2.0), 1e-6)
    intrinsics = torch.zeros(encoding.shape[0], 3, 3, device=encoding.device)
    intrinsics[:, 0, 0], intrinsics[:, 1, 1] = fx, fy
    intrinsics[:, 0, 2], intrinsics[:, 1, 2], intrinsics[:, 2, 2] = width / 2, height / 2, 1.0
    rotation_t = rotation.transpose(1, 2)
    extrinsics = torch.cat([rotation_t, -rotation_t @ encoding[:, :3, None]], dim=-1)
    return extrinsics, intrinsics


class DepthSkyHead(DPTHead):
    """The monocular presets' DPT: depth (exp) and a sky score (ReLU, keys `sky_output_conv2`)
    from one fusion chain, no token norm, no UV embedding."""

    def __init__(self, cfg: Da3Config) -> None:
        super().__init__(cfg.head_dim_in, patch_size=PATCH, output_dim=1, activation="exp", features=cfg.head_features,
                         out_channels=cfg.head_out_channels, intermediate_layer_idx=(0, 1, 2, 3), pos_embed=False,
                         skip_after_relu=False, token_norm=False)
        half = cfg.head_features // 2
        self.scratch.sky_output_conv2 = nn.Sequential(nn.Conv2d(half, 32, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(32, 1, 1))

    def _predict(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.exp(self.scratch.output_conv2(features)[:, 0]), F.relu(self.scratch.sky_output_conv2(features)[:, 0])


def fill_sky(depth: torch.Tensor, sky: torch.Tensor, cap: float | None = None, require: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sky pixels (score >= 0.3) get the 99th percentile of the other pixels' depth (at most `cap`);
    nothing changes unless both sets have more than `require` pixels.  Returns (depth, non-sky mask)."""
    ground = sky < SKY_SCORE
    if int(ground.sum()) <= require or int((~ground).sum()) <= require:
        return depth, ground
    far = quantile(depth[ground], 0.99)
    if cap is not None:
        far = torch.clamp(far, max=cap)
    return torch.where(ground, depth, far), ground


class DepthAnything3Net(nn.Module):
    """Views (S, 3, H, W) -> the reference's `DepthAnything3Net` outputs.  Any-view presets: depth
    (S, H, W), its confidence, world-to-camera extrinsics (S, 3, 4) and intrinsics (S, 3, 3).
    Monocular presets: depth (sky filled, as the reference) and the sky score (S, H, W)."""

    def __init__(self, cfg: Da3Config | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or Da3Config()
        self.backbone = Da3Backbone(cfg)
        self.head: DPTHead
        if not cfg.any_view:
            self.head = DepthSkyHead(cfg)
            return
        self.head = DPTHead(cfg.head_dim_in, patch_size=PATCH, output_dim=2, activation="exp", conf_activation="expp1",
                            features=cfg.head_features, out_channels=cfg.head_out_channels, intermediate_layer_idx=(0, 1, 2, 3),
                            skip_after_relu=False)
        self.cam_dec = CameraDecoder(cfg.head_dim_in)
        self.cam_enc = CameraEncoder(cfg.embed_dim, num_heads=cfg.camera_encoder_heads)

    def forward(self, images: torch.Tensor, strategy: str = "saddle_balanced", extrinsics: torch.Tensor | None = None,
                intrinsics: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """`extrinsics` (S, 4, 4) world-to-camera, normalised as the reference does, with
        `intrinsics` (S, 3, 3) in network-input pixels: given cameras (any-view presets only)."""
        height, width = images.shape[-2:]
        if height % PATCH or width % PATCH:
            raise ValueError(f"image size {height}x{width} is not a multiple of the {PATCH}-pixel patch")
        given = None
        if extrinsics is not None:
            if not self.cfg.any_view:
                raise ValueError("a monocular Depth Anything 3 network takes no cameras")
            if intrinsics is None:
                raise ValueError("given extrinsics need their intrinsics")
            with torch.autocast(device_type=images.device.type, enabled=False):
                given = self.cam_enc(extrinsics.float(), intrinsics.float(), (height, width))
        features, camera_tokens, reference = self.backbone(images, strategy, given)
        with torch.autocast(device_type=images.device.type, enabled=False):
            depth, second = self.head([f.float()[None] for f in features], (height, width), patch_start_idx=0)
            if not self.cfg.any_view:
                depth, _ = fill_sky(depth[0], second[0], require=10)
                return {"depth": depth, "sky": second[0]}
            extrinsics, intrinsics = decode_cameras(self.cam_dec(camera_tokens[-1].float()), (height, width))
        return {"depth": depth[0, ..., 0], "depth_conf": second[0], "extrinsics": extrinsics, "intrinsics": intrinsics,
                "reference_view": torch.tensor(reference)}


class NestedDepthAnything3Net(nn.Module):
    """DA3NESTED: the any-view branch (`da3`) in metres.  The monocular metric branch
    (`da3_metric`) gives depth x mean focal / 300 (the predicted focal; given intrinsics
    without extrinsics, which the reference ignores, are the better focal and used instead);
    one least-squares scale on the confident (>= median confidence), non-sky pixels maps the
    any-view depth and camera translations onto it; sky pixels get the 99th depth percentile
    (at most 200 m), confidence 1."""

    def __init__(self, anyview: Da3Config | None = None, metric: Da3Config | None = None) -> None:
        super().__init__()
        anyview, metric = anyview or NESTED_BRANCHES[0], metric or NESTED_BRANCHES[1]
        if not anyview.any_view or metric.any_view:
            raise ValueError("NESTED pairs an any-view configuration with a monocular one")
        self.da3, self.da3_metric = DepthAnything3Net(anyview), DepthAnything3Net(metric)

    def forward(self, images: torch.Tensor, strategy: str = "saddle_balanced", extrinsics: torch.Tensor | None = None,
                intrinsics: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        out = self.da3(images, strategy, extrinsics, intrinsics if extrinsics is not None else None)
        metric = self.da3_metric(images)
        with torch.autocast(device_type=images.device.type, enabled=False):
            cameras = intrinsics if extrinsics is None and intrinsics is not None else out["intrinsics"]
            focal = cameras[:, [0, 1], [0, 1]].float().mean(dim=-1)
            metric_depth = metric["depth"] * (focal / METRIC_FOCAL_UNIT)[:, None, None]
            ground = metric["sky"] < SKY_SCORE
            if int(ground.sum()) <= 10:
                raise ValueError("NESTED cannot scale a window that is all sky: fewer than 11 non-sky pixels")
            depth, conf = out["depth"], out["depth_conf"]
            median_conf = quantile(conf[ground], 0.5)
            usable = (conf >= median_conf) & ground & (metric_depth > 1e-2) & (depth > 1e-3)
            scale = (metric_depth[usable] * depth[usable]).sum() / (depth[usable] * depth[usable]).sum().clamp_min(1e-12)
            depth = depth * scale
            extrinsics_out = out["extrinsics"].clone()
            extrinsics_out[:, :, 3] *= scale
            depth, ground = fill_sky(depth, metric["sky"], cap=SKY_DEPTH_CAP)
            conf = torch.where(ground, conf, torch.ones_like(conf))
        return {**out, "depth": depth, "depth_conf": conf, "extrinsics": extrinsics_out, "sky": metric["sky"], "scale_factor": scale}


def config_from_mapping(values: Mapping[str, Any]) -> Da3Config:
    """A Da3Config from JSON-like values (lists for tuples); unknown names are refused."""
    unknown = set(values) - {f.name for f in fields(Da3Config)}
    if unknown:
        raise ValueError(f"unknown Depth Anything 3 configuration fields {sorted(unknown)}; valid: {[f.name for f in fields(Da3Config)]}")
    return Da3Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def da3_network(model_name: str | None, config: Da3Config | Mapping[str, Any] | None = None) -> nn.Module:
    """The network of a checkpoint's `model_name` (a key of PRESETS, or NESTED_PRESET): its
    preset, or `config` for reduced test networks (NESTED: {"anyview": ..., "metric": ...})."""
    if model_name == NESTED_PRESET:
        if config is None:
            return NestedDepthAnything3Net()
        if not isinstance(config, Mapping) or set(config) != {"anyview", "metric"}:
            raise ValueError('a NESTED configuration has two parts: {"anyview": {...}, "metric": {...}}')
        return NestedDepthAnything3Net(config_from_mapping(config["anyview"]), config_from_mapping(config["metric"]))
    if config is None:
        if model_name not in PRESETS:
            raise ValueError(f"unknown Depth Anything 3 model_name {model_name!r}; known: {', '.join(MODEL_NAMES)}")
        return DepthAnything3Net(PRESETS[model_name])
    return DepthAnything3Net(config if isinstance(config, Da3Config) else config_from_mapping(config))


def strip_model_prefix(key: str) -> str:
    """Hub keys start with `model.` (the reference wrapper's attribute)."""
    return key[len("model."):] if key.startswith("model.") else key


__all__ = ["METRIC_PRESETS", "MODEL_NAMES", "NESTED_PRESET", "PRESETS", "UNUSED_HEADS", "Da3Config", "DepthAnything3Net",
           "NestedDepthAnything3Net", "da3_network", "decode_cameras", "select_reference_view", "strip_model_prefix"]

