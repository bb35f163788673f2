"""VGGT network: DINOv2 patch encoder, alternating frame/global attention, four heads.

Written to load the released ``facebook/VGGT-1B`` state_dict strictly (every key and
shape, track head included).  `VggtConfig()` is that release; smaller configurations
share the code and are used by the parity fixtures.

Shapes: B batch, S frames, P tokens per frame (1 camera + R registers + patches),
C embed_dim; the aggregator outputs frame and global tokens concatenated (2C).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Block, DinoVisionTransformer, DPTHead, Mlp, Rope2D, grid_positions, sincos_1d

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DptConfig:
    features: int = 256
    out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    intermediate_layer_idx: tuple[int, int, int, int] = (4, 11, 17, 23)


@dataclass
class TrackConfig:
    features: int = 128
    dpt_out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    iters: int = 4
    stride: int = 2
    corr_levels: int = 7
    corr_radius: int = 4
    hidden_size: int = 384
    depth: int = 6
    num_heads: int = 8
    num_virtual_tracks: int = 64
    max_scale: int = 518


@dataclass
class VggtConfig:
    """Architecture hyper-parameters; the defaults are the released VGGT-1B."""

    img_size: int = 518
    patch_size: int = 14
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    rope_base: float = 100.0
    init_values: float = 0.01
    encoder_depth: int = 24
    encoder_num_heads: int = 16
    camera_trunk_depth: int = 4
    camera_num_heads: int = 16
    camera_iterations: int = 4
    dpt: DptConfig = field(default_factory=DptConfig)
    track: TrackConfig = field(default_factory=TrackConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VggtConfig:
        data = dict(data)
        dpt = DptConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.pop("dpt", {}).items()})
        track = TrackConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.pop("track", {}).items()})
        return cls(dpt=dpt, track=track, **data)


def _first_and_rest(token: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
    """(1, 2, X, C) learned tokens -> (B*S, X, C): slot 0 for each first frame, slot 1 for the rest."""
    per_frame = torch.cat([token[:, :1], token[:, 1:].expand(1, frames - 1, *token.shape[2:])], dim=1)
    return per_frame.expand(batch, -1, -1, -1).reshape(batch * frames, *token.shape[2:])


class Aggregator(nn.Module):
    """Alternating-attention trunk: each layer i runs frame_blocks[i] within each frame,
    then global_blocks[i] across all frames' tokens; both use 2D RoPE on patch tokens."""

    def __init__(self, cfg: VggtConfig) -> None:
        super().__init__()
        c = cfg.embed_dim
        self.patch_size = cfg.patch_size
        self.depth = cfg.depth
        self.patch_start_idx = 1 + cfg.num_register_tokens
        self.patch_embed = DinoVisionTransformer(
            img_size=cfg.img_size,
            patch_size=cfg.patch_size,
            embed_dim=c,
            depth=cfg.encoder_depth,
            num_heads=cfg.encoder_num_heads,
            num_register_tokens=cfg.num_register_tokens,
            init_values=1.0,
        )
        self.rope = Rope2D(cfg.rope_base)

        def blocks() -> nn.ModuleList:
            return nn.ModuleList(
                Block(c, cfg.num_heads, cfg.mlp_ratio, init_values=cfg.init_values, qk_norm=True) for _ in range(cfg.depth)
            )

        self.frame_blocks = blocks()
        self.global_blocks = blocks()
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, c))
        self.register_token = nn.Parameter(torch.zeros(1, 2, cfg.num_register_tokens, c))

    def forward(self, images: torch.Tensor, keep_layers: Iterable[int] | None = None) -> dict[int, torch.Tensor]:
        """images (B, S, 3, H, W) in [0, 1] -> {layer: (B, S, P, 2C)} for the kept layers.

        Keeping only the layers the heads read (not all `depth`) is what bounds memory.
        """
        batch, frames, channels, height, width = images.shape
        if channels != 3:
            raise ValueError(f"expected 3 colour channels, got {channels}")
        keep = set(range(self.depth)) if keep_layers is None else set(keep_layers)
        # Constants made here, not buffers: the network is built on the meta device and only
        # the checkpoint's tensors are materialised.
        mean = images.new_tensor(_IMAGENET_MEAN).view(1, 1, 3, 1, 1)
        std = images.new_tensor(_IMAGENET_STD).view(1, 1, 3, 1, 1)
        x = ((images - mean) / std).reshape(batch * frames, 3, height, width)
        patches = self.patch_embed(x)
        tokens = torch.cat(
            [_first_and_rest(self.camera_token, batch, frames), _first_and_rest(self.register_token, batch, frames), patches],
            dim=1,
        )
        num_tokens, dim = tokens.shape[1:]
        head_dim = dim // self.frame_blocks[0].attn.num_heads
        rows, cols = height // self.patch_size, width // self.patch_size
        positions = grid_positions(1, rows, cols, self.patch_start_idx, images.device)
        frame_rope = self.rope.tables(positions, head_dim, tokens.dtype)
        global_rope = self.rope.tables(positions.repeat(1, frames, 1), head_dim, tokens.dtype)

        outputs: dict[int, torch.Tensor] = {}
        for i in range(self.depth):
            tokens = self.frame_blocks[i](tokens.reshape(batch * frames, num_tokens, dim), rope=frame_rope)
            frame_out = tokens.reshape(batch, frames, num_tokens, dim) if i in keep else None
            tokens = self.global_blocks[i](tokens.reshape(batch, frames * num_tokens, dim), rope=global_rope)
            if i in keep:
                outputs[i] = torch.cat([frame_out, tokens.reshape(batch, frames, num_tokens, dim)], dim=-1)
        return outputs


class CameraHead(nn.Module):
    """Camera tokens -> pose encoding [t(3), quaternion xyzw(4), fov_h, fov_w], refined
    iteratively: each pass embeds the previous estimate, modulates the tokens (adaLN),
    runs the trunk and adds a delta.  FoV goes through a ReLU, the rest is linear."""

    target_dim = 9

    def __init__(self, dim_in: int, trunk_depth: int = 4, num_heads: int = 16, mlp_ratio: float = 4.0, init_values: float = 0.01) -> None:
        super().__init__()
        self.trunk = nn.Sequential(*(Block(dim_in, num_heads, mlp_ratio, init_values=init_values) for _ in range(trunk_depth)))
        self.token_norm = nn.LayerNorm(dim_in)
        self.trunk_norm = nn.LayerNorm(dim_in)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, self.target_dim))
        self.embed_pose = nn.Linear(self.target_dim, dim_in)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_in, 3 * dim_in))
        self.adaln_norm = nn.LayerNorm(dim_in, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim_in, dim_in // 2, self.target_dim)

    def forward(self, last_tokens: torch.Tensor, num_iterations: int = 4) -> list[torch.Tensor]:
        """last_tokens (B, S, P, C) -> list over iterations of (B, S, 9)."""
        pose_tokens = self.token_norm(last_tokens[:, :, 0])
        normed = self.adaln_norm(pose_tokens)
        estimate = None
        estimates = []
        for _ in range(num_iterations):
            source = self.empty_pose_tokens.expand(*pose_tokens.shape[:2], -1) if estimate is None else estimate.detach()
            shift, scale, gate = self.poseLN_modulation(self.embed_pose(source)).chunk(3, dim=-1)
            x = gate * (normed * (1 + scale) + shift) + pose_tokens
            delta = self.pose_branch(self.trunk_norm(self.trunk(x)))
            estimate = delta if estimate is None else estimate + delta
            estimates.append(torch.cat([estimate[..., :7], F.relu(estimate[..., 7:])], dim=-1))
        return estimates


# ----------------------------------------------------------------------------- track head


def _grid_sample_pixels(values: torch.Tensor, coords: torch.Tensor, padding_mode: str) -> torch.Tensor:
    """Bilinear sampling at pixel coordinates (x, y) with pixel centres at integers."""
    height, width = values.shape[-2:]
    scale = torch.tensor([2 / max(width - 1, 1), 2 / max(height - 1, 1)], device=coords.device, dtype=values.dtype)
    grid = coords.to(values.dtype) * scale - 1
    return F.grid_sample(values, grid, align_corners=True, padding_mode=padding_mode)


def _sample_at_points(fmap: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """fmap (B, C, H, W), coords (B, N, 2) -> features (B, N, C), border padding."""
    return _grid_sample_pixels(fmap, coords.unsqueeze(2), "border")[..., 0].transpose(1, 2)


def _track_grid_embedding(dim: int, rows: int, cols: int) -> torch.Tensor:
    """(1, dim, rows, cols): first half encodes the column (x), second half the row (y)."""
    xx, yy = torch.meshgrid(torch.arange(cols, dtype=torch.float32), torch.arange(rows, dtype=torch.float32), indexing="xy")
    emb = torch.cat([sincos_1d(dim // 2, xx), sincos_1d(dim // 2, yy)], dim=1)
    return emb.reshape(1, rows, cols, dim).permute(0, 3, 1, 2)


def _flow_embedding(flows: torch.Tensor, channels: int) -> torch.Tensor:
    """(..., 2) displacements -> (..., 2*channels) interleaved sin/cos of x then of y."""
    freqs = torch.arange(0, channels, 2, device=flows.device, dtype=torch.float32) * (1000.0 / channels)
    parts = []
    for axis in range(2):
        angles = flows[..., axis : axis + 1] * freqs
        parts.append(torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2))
    return torch.cat(parts, dim=-1)


class _AttnBlock(nn.Module):
    """Track-head self-attention block; the residual starts from the normed input."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        x = x + self.attn(x, x, x, need_weights=True)[0]  # the explicit-softmax path of the reference; bit-equal tracks
        return x + self.mlp(self.norm2(x))


class _CrossAttnBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        context = self.norm_context(context)
        x = x + self.cross_attn(x, context, context, need_weights=True)[0]  # the explicit-softmax path of the reference; bit-equal tracks
        return x + self.mlp(self.norm2(x))


class _UpdateFormer(nn.Module):
    """Time attention per track, space attention through virtual tracks (CoTracker-style)."""

    def __init__(self, depth: int, input_dim: int, hidden: int, num_heads: int, output_dim: int, num_virtual: int) -> None:
        super().__init__()
        self.input_norm = nn.LayerNorm(input_dim)
        self.input_transform = nn.Linear(input_dim, hidden)
        self.output_norm = nn.LayerNorm(hidden)
        self.flow_head = nn.Linear(hidden, output_dim)
        self.virual_tracks = nn.Parameter(torch.zeros(1, num_virtual, 1, hidden))  # (sic) checkpoint key
        self.time_blocks = nn.ModuleList(_AttnBlock(hidden, num_heads, 4.0) for _ in range(depth))
        self.space_virtual_blocks = nn.ModuleList(_AttnBlock(hidden, num_heads, 4.0) for _ in range(depth))
        self.space_point2virtual_blocks = nn.ModuleList(_CrossAttnBlock(hidden, num_heads, 4.0) for _ in range(depth))
        self.space_virtual2point_blocks = nn.ModuleList(_CrossAttnBlock(hidden, num_heads, 4.0) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, N, T, input_dim) -> (B, N, T, output_dim)."""
        init = self.input_transform(self.input_norm(x))
        batch, num_points, frames, hidden = init.shape
        tokens = torch.cat([init, self.virual_tracks.repeat(batch, 1, frames, 1)], dim=1)
        total = tokens.shape[1]
        for i in range(len(self.time_blocks)):
            tokens = self.time_blocks[i](tokens.reshape(batch * total, frames, hidden)).view(batch, total, frames, hidden)
            space = tokens.permute(0, 2, 1, 3).reshape(batch * frames, total, hidden)
            points, virtual = space[:, :num_points], space[:, num_points:]
            virtual = self.space_virtual2point_blocks[i](virtual, points)
            virtual = self.space_virtual_blocks[i](virtual)
            points = self.space_point2virtual_blocks[i](points, virtual)
            tokens = torch.cat([points, virtual], dim=1).view(batch, frames, total, hidden).permute(0, 2, 1, 3)
        tokens = tokens[:, :num_points] + init
        return self.flow_head(self.output_norm(tokens))


class TrackPredictor(nn.Module):
    """Iterative point tracker on DPT feature maps with a multi-level correlation pyramid."""

    def __init__(self, cfg: TrackConfig) -> None:
        super().__init__()
        latent = cfg.features
        self.cfg = cfg
        self.corr_mlp = Mlp(cfg.corr_levels * (2 * cfg.corr_radius + 1) ** 2, cfg.hidden_size, latent)
        self.transformer_dim = 3 * latent + 4
        self.query_ref_token = nn.Parameter(torch.zeros(1, 2, self.transformer_dim))
        self.updateformer = _UpdateFormer(
            cfg.depth, self.transformer_dim, cfg.hidden_size, cfg.num_heads, latent + 2, cfg.num_virtual_tracks
        )
        self.fmap_norm = nn.LayerNorm(latent)
        self.ffeat_norm = nn.GroupNorm(1, latent)
        self.ffeat_updater = nn.Sequential(nn.Linear(latent, latent), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(latent, 1))
        self.conf_predictor = nn.Sequential(nn.Linear(latent, 1))

    def _correlations(self, pyramid: list[torch.Tensor], feats: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """Correlation of track features with each level, sampled on a (2r+1)^2 window."""
        batch, frames, num_points, channels = feats.shape
        r = self.cfg.corr_radius
        lin = torch.linspace(-r, r, 2 * r + 1, device=coords.device, dtype=coords.dtype)
        window = torch.stack(torch.meshgrid(lin, lin, indexing="ij"), dim=-1).view(1, 2 * r + 1, 2 * r + 1, 2)
        sampled = []
        for level, fmap in enumerate(pyramid):
            height, width = fmap.shape[-2:]
            corr = torch.matmul(feats, fmap.reshape(batch, frames, channels, height * width)) / math.sqrt(channels)
            grid = coords.reshape(-1, 1, 1, 2) / (2**level) + window
            values = _grid_sample_pixels(corr.reshape(-1, 1, height, width), grid, "zeros")
            sampled.append(values.view(batch, frames, num_points, -1))
        return torch.cat(sampled, dim=-1)

    def forward(self, query_points: torch.Tensor, fmaps: torch.Tensor, iters: int) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        batch, num_points, _ = query_points.shape
        _, frames, latent, height, width = fmaps.shape
        fmaps = self.fmap_norm(fmaps.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)
        query = query_points / float(cfg.stride)
        coords = query.reshape(batch, 1, num_points, 2).repeat(1, frames, 1, 1)
        feats = _sample_at_points(fmaps[:, 0], coords[:, 0]).unsqueeze(1).repeat(1, frames, 1, 1)

        pyramid = [fmaps]
        for _ in range(cfg.corr_levels - 1):
            prev = pyramid[-1]
            pooled = F.avg_pool2d(prev.reshape(-1, *prev.shape[2:]), kernel_size=2, stride=2)
            pyramid.append(pooled.reshape(batch, frames, *pooled.shape[1:]))

        grid_emb = _track_grid_embedding(self.transformer_dim, height, width).to(query.device)
        pos_emb = _sample_at_points(grid_emb.expand(batch, -1, -1, -1), coords[:, 0]).reshape(batch * num_points, 1, -1)
        ref_token = torch.cat([self.query_ref_token[:, :1], self.query_ref_token[:, 1:2].expand(-1, frames - 1, -1)], dim=1)

        predictions = []
        for _ in range(iters):
            coords = coords.detach()
            corr = self._correlations(pyramid, feats, coords).permute(0, 2, 1, 3).reshape(batch * num_points, frames, -1)
            corr = self.corr_mlp(corr)
            flows = (coords - coords[:, :1]).permute(0, 2, 1, 3).reshape(batch * num_points, frames, 2)
            flow_emb = torch.cat([_flow_embedding(flows, latent // 2), flows / cfg.max_scale, flows / cfg.max_scale], dim=-1)
            track_feats = feats.permute(0, 2, 1, 3).reshape(batch * num_points, frames, latent)
            x = torch.cat([flow_emb, corr, track_feats], dim=2) + pos_emb + ref_token.to(flows.dtype)
            delta = self.updateformer(x.reshape(batch, num_points, frames, -1)).reshape(batch * num_points * frames, -1)
            track_feats = track_feats.reshape(-1, latent)
            track_feats = self.ffeat_updater(self.ffeat_norm(delta[:, 2:])) + track_feats
            feats = track_feats.reshape(batch, num_points, frames, latent).permute(0, 2, 1, 3)
            coords = coords + delta[:, :2].reshape(batch, num_points, frames, 2).permute(0, 2, 1, 3)
            coords[:, 0] = query
            predictions.append(coords * cfg.stride)

        flat = feats.reshape(batch * frames * num_points, latent)
        vis = torch.sigmoid(self.vis_predictor(flat)).reshape(batch, frames, num_points)
        conf = torch.sigmoid(self.conf_predictor(flat)).reshape(batch, frames, num_points)
        return predictions, vis, conf


class TrackHead(nn.Module):
    """DPT feature extractor at half resolution + iterative tracker."""

    def __init__(self, dim_in: int, patch_size: int, cfg: TrackConfig, intermediate_layer_idx: Iterable[int]) -> None:
        super().__init__()
        self.iters = cfg.iters
        self.feature_extractor = DPTHead(
            dim_in,
            patch_size=patch_size,
            features=cfg.features,
            out_channels=cfg.dpt_out_channels,
            intermediate_layer_idx=tuple(intermediate_layer_idx),
            feature_only=True,
            down_ratio=2,
            pos_embed=False,
        )
        self.tracker = TrackPredictor(cfg)

    def forward(
        self, tokens: dict[int, torch.Tensor], image_hw: tuple[int, int], patch_start_idx: int, query_points: torch.Tensor,
        frames_chunk_size: int | None = 8,
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        fmaps = self.feature_extractor(tokens, image_hw, patch_start_idx, frames_chunk_size)
        return self.tracker(query_points, fmaps, self.iters)


# ----------------------------------------------------------------------------- full model


class VGGT(nn.Module):
    """VGGT: images (S, 3, H, W) or (B, S, 3, H, W) in [0, 1] -> cameras, depth, points, tracks.

    Set `build_track_head=False` to skip the track head (the mapping pipeline never
    tracks); its ``track_head.*`` checkpoint keys are then dropped knowingly at load time
    (see `TRACK_HEAD_PREFIX`).
    """

    TRACK_HEAD_PREFIX = "track_head."

    def __init__(self, cfg: VggtConfig | None = None, build_track_head: bool = True) -> None:
        super().__init__()
        cfg = cfg or VggtConfig()
        self.cfg = cfg
        dim = 2 * cfg.embed_dim
        idx = cfg.dpt.intermediate_layer_idx
        self.aggregator = Aggregator(cfg)
        self.camera_head = CameraHead(dim, cfg.camera_trunk_depth, cfg.camera_num_heads, cfg.mlp_ratio, cfg.init_values)
        dpt = dict(patch_size=cfg.patch_size, features=cfg.dpt.features, out_channels=cfg.dpt.out_channels, intermediate_layer_idx=idx)
        self.point_head = DPTHead(dim, output_dim=4, activation="inv_log", conf_activation="expp1", **dpt)
        self.depth_head = DPTHead(dim, output_dim=2, activation="exp", conf_activation="expp1", **dpt)
        self.track_head = TrackHead(dim, cfg.patch_size, cfg.track, idx) if build_track_head else None
        self.head_layers = sorted(set(idx) | {cfg.depth - 1})

    def forward(
        self,
        images: torch.Tensor,
        query_points: torch.Tensor | None = None,
        frames_chunk_size: int | None = 8,
        compute_points: bool = True,
        compute_depth: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Predictions keyed as the reference: pose_enc (B,S,9), depth (B,S,H,W,1),
        depth_conf (B,S,H,W), world_points (B,S,H,W,3), world_points_conf (B,S,H,W),
        and with query_points (B,N,2 pixels) track (B,S,N,2), vis and conf (B,S,N).

        Under CUDA autocast only the aggregator runs in reduced precision; the heads get
        float32 tokens and run in float32, as the reference does.
        """
        if images.dim() == 4:
            images = images.unsqueeze(0)
        if query_points is not None and query_points.dim() == 2:
            query_points = query_points.unsqueeze(0)
        image_hw = (images.shape[-2], images.shape[-1])
        tokens = self.aggregator(images, keep_layers=self.head_layers)
        start = self.aggregator.patch_start_idx
        predictions: dict[str, torch.Tensor] = {}
        with torch.autocast(device_type=images.device.type, enabled=False):
            tokens = {k: v.float() for k, v in tokens.items()}
            predictions["pose_enc"] = self.camera_head(tokens[self.cfg.depth - 1], self.cfg.camera_iterations)[-1]
            if compute_depth:
                predictions["depth"], predictions["depth_conf"] = self.depth_head(tokens, image_hw, start, frames_chunk_size)
            if compute_points:
                predictions["world_points"], predictions["world_points_conf"] = self.point_head(tokens, image_hw, start, frames_chunk_size)
            if query_points is not None:
                if self.track_head is None:
                    raise ValueError("query_points given but the track head was not built; construct VGGT(build_track_head=True)")
                tracks, vis, conf = self.track_head(tokens, image_hw, start, query_points.float(), frames_chunk_size)
                predictions["track"], predictions["vis"], predictions["conf"] = tracks[-1], vis, conf
        return predictions
