"""MV-DUSt3R and MV-DUSt3R+: all views in one pass, checkpoint-compatible with the releases
(MVD.pth, MVDp_s1.pth, MVDp_s2.pth of Zhenggang/MV-DUSt3R).

Architecture (key names as in the official checkpoints; the CroCo stereo network's, extended):
- encoder: CroCo's ViT-L (`patch_embed.proj`, `enc_blocks`, `enc_norm`), each view on its own;
- decoder: `decoder_embed`, then per layer every view attends to its own tokens and to the
  tokens of all other views at once (the CroCo decoder block with the other views' tokens
  concatenated as memory): the reference view through `dec_blocks`, the other ("source")
  views through `dec_blocks2`; `dec_norm` closes the last layer;
- MV-DUSt3R+ (`m_ref_flag`) runs the decoder in `NUM_REFERENCES` paths, path r with view r as
  its reference, and after each layer fuses the paths: each view's tokens of path r attend to
  the same view's tokens in the other paths (`dec_same_view_blocks`).  Path 0 (view 0 the
  reference) gives the outputs, as the reference demo reads them;
- heads `downstream_head1` (reference view) and `downstream_head2` (the others): DUSt3R's
  linear head plus a convolutional skip branch from the input image (`skip_proj`, four
  conv + BatchNorm blocks, added at 1e-4 scale to the raw points).  BatchNorm runs in eval
  mode (the running statistics the weights were trained with).
- `downstream_GS_head.{0,1}` (Gaussian-splatting parameters) are in the checkpoints but give
  no points: they are not built, their keys are dropped knowingly on load.
`mask_token` is CroCo's pretraining token: unused, kept so that checkpoints load strictly.

Every view's tokens lie on the same patch grid, so the memory's positions carry no view
identity: the keys and values of each view are projected once per block and shared by all
the queries that attend to it (the reference projects them again for every query view).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import RopeTables, apply_rope2d
from ..layers.cross_attention import DecoderBlock
from .croco_stereo import ConfigError, CroCoEncoder, CroCoStereoConfig, Mode, PointsHead, WrongFamilyError, parse_constructor

NUM_REFERENCES = 4  # MV-DUSt3R+'s reference views: what the checkpoints were trained and evaluated with
SKIP_WIDTH = 256  # channels of the skip branch (a constant of the reference head)
SKIP_SCALE = 1e-4  # the skip branch's weight in the raw points
MEMORY_ELEMENTS = 2**25  # gathered key/value elements per attention chunk (bounds memory on long windows)
INF = math.inf


@dataclass(frozen=True)
class MvDust3rConfig:
    """The constructor arguments of the reference class (AsymmetricCroCo3DStereoMultiView);
    defaults are MVD.pth's.  `multi_reference` is MV-DUSt3R+'s `m_ref_flag`."""

    img_size: int = 224
    patch_size: int = 16
    enc_embed_dim: int = 1024
    enc_depth: int = 24
    enc_num_heads: int = 16
    dec_embed_dim: int = 768
    dec_depth: int = 12
    dec_num_heads: int = 12
    mlp_ratio: float = 4.0
    rope_base: float = 100.0
    depth_mode: Mode = ("exp", -INF, INF)
    conf_mode: Mode = ("exp", 1.0, 1e9)
    norm_im2_in_dec: bool = True
    multi_reference: bool = False
    gaussian_heads: bool = True
    skip_width: int = SKIP_WIDTH

    def with_skip_width(self, width: int) -> MvDust3rConfig:
        """The skip branch's width is a constant of the reference head (256); tiny test networks
        narrow it, and a checkpoint's tensors say which."""
        return replace(self, skip_width=width)

    def head_config(self) -> CroCoStereoConfig:
        """The point heads are DUSt3R's linear head with these widths (plus the skip branch)."""
        return CroCoStereoConfig(
            head_type="linear", depth_mode=self.depth_mode, conf_mode=self.conf_mode, patch_size=self.patch_size,
            enc_embed_dim=self.enc_embed_dim, dec_embed_dim=self.dec_embed_dim, dec_depth=self.dec_depth,
        )

    @classmethod
    def from_constructor(cls, text: str) -> MvDust3rConfig:
        """From the constructor string the official .pth files store in args.model (parsed as
        data, never evaluated); settings the releases do not use are refused with what they are."""
        family, values = parse_constructor(text)
        if family != "mvdust3r":
            raise WrongFamilyError(family, f"the checkpoint describes a {family} network, not MV-DUSt3R")
        return cls.from_dict(values)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> MvDust3rConfig:
        expected = {
            "head_type": (values.get("head_type", "linear"), "linear"),
            "output_mode": (values.get("output_mode", "pts3d"), "pts3d"),
            "GS_skip": (bool(values.get("GS_skip", False)), False),
            "skip": (bool(dict(values.get("pts_head_config") or {}).get("skip", False)), True),
        }
        for name, (value, wanted) in expected.items():
            if value != wanted:
                raise ConfigError(f"MV-DUSt3R {name}={value!r} is not supported (the releases use {wanted!r})")
        pos_embed = str(values.get("pos_embed", "RoPE100"))
        if not pos_embed.startswith("RoPE"):
            raise ConfigError(f"MV-DUSt3R pos_embed={pos_embed!r} is not supported (the releases use RoPE100)")
        size = values.get("img_size", 224)
        sizes = tuple(int(v) for v in size) if isinstance(size, (tuple, list)) else (int(size), int(size))
        if sizes[0] != sizes[1]:
            raise ConfigError(f"MV-DUSt3R img_size={sizes} is not supported (the releases are square, 224)")

        def mode(name: str, default: Mode) -> Mode:
            value = values.get(name)
            return default if value is None else (str(value[0]), float(value[1]), float(value[2]))

        defaults = cls()
        return cls(
            img_size=sizes[0], patch_size=int(values.get("patch_size", 16)),
            enc_embed_dim=int(values.get("enc_embed_dim", 1024)), enc_depth=int(values.get("enc_depth", 24)),
            enc_num_heads=int(values.get("enc_num_heads", 16)), dec_embed_dim=int(values.get("dec_embed_dim", 768)),
            dec_depth=int(values.get("dec_depth", 12)), dec_num_heads=int(values.get("dec_num_heads", 12)),
            mlp_ratio=float(values.get("mlp_ratio", 4.0)), rope_base=float(pos_embed[len("RoPE"):] or 100),
            depth_mode=mode("depth_mode", defaults.depth_mode), conf_mode=mode("conf_mode", defaults.conf_mode),
            norm_im2_in_dec=bool(values.get("norm_im2_in_dec", True)),
            multi_reference=bool(values.get("m_ref_flag", False)), gaussian_heads=bool(values.get("GS", False)),
        )


class ConvBatchNorm(nn.Module):
    """Conv (same padding) -> BatchNorm -> optional SELU (keys `conv`, `norm`)."""

    def __init__(self, channels_in: int, channels_out: int, kernel_size: int, activation: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels_in, channels_out, kernel_size, padding=kernel_size // 2)
        self.norm = nn.BatchNorm2d(channels_out)
        self.activation = nn.SELU() if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.norm(self.conv(x)))


class SkipPointsHead(PointsHead):
    """DUSt3R's linear head whose raw points get a convolutional correction from the input
    image and those raw points (`skip_proj`), scaled by 1e-4."""

    def __init__(self, cfg: CroCoStereoConfig, width: int = SKIP_WIDTH) -> None:
        super().__init__(cfg)
        self.skip_proj = nn.Sequential(
            ConvBatchNorm(6, width, 3, True), ConvBatchNorm(width, width, 5, True),
            ConvBatchNorm(width, width, 5, True), ConvBatchNorm(width, 3, 3, False),
        )

    def forward_with_images(self, tokens: torch.Tensor, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """tokens (B, P, C) of the last decoder layer, images (B, 3, H, W) in [-1, 1]."""
        maps = self.maps([tokens], (images.shape[-2], images.shape[-1]))
        points = maps[:, :3] + SKIP_SCALE * self.skip_proj(torch.cat([images, maps[:, :3]], dim=1))
        return self.activate(torch.cat([points, maps[:, 3:]], dim=1))


def attend_to_others(block: DecoderBlock, features: torch.Tensor, queries: torch.Tensor, rope: RopeTables) -> torch.Tensor:
    """`block` on the members `queries` (G, Q) of each group of `features` (G, M, P, C), each
    attending to its own tokens and then to the tokens of every other member of its group.

    Keys and values are projected once per member and gathered per query (the reference
    concatenates the memory and projects it again for every query).  Returns (G, Q, P, C).
    """
    groups, members, tokens, dim = features.shape
    count = queries.shape[1]
    group_index = torch.arange(groups, device=features.device)[:, None]
    x = features[group_index, queries].reshape(groups * count, tokens, dim)
    x = x + block.attn(block.norm1(x), rope=rope)
    cross = block.cross_attn
    heads, head_dim = cross.num_heads, cross.head_dim
    memory = block.norm_y(features).reshape(groups * members, tokens, dim)
    keys = apply_rope2d(cross.split_heads(cross.projk(memory)), rope).reshape(groups, members, heads, tokens, head_dim)
    values = cross.split_heads(cross.projv(memory)).reshape(groups, members, heads, tokens, head_dim)
    query = apply_rope2d(cross.split_heads(cross.projq(block.norm2(x))), rope)
    member_index = torch.arange(members, device=features.device)
    others = torch.stack([torch.cat([member_index[:m], member_index[m + 1 :]]) for m in range(members)])
    flat_groups = group_index.expand(groups, count).reshape(-1)
    flat_others = others[queries.reshape(-1)]  # (G*Q, M-1)
    chunk = max(1, MEMORY_ELEMENTS // max(1, (members - 1) * tokens * dim))
    attended = []
    for start in range(0, groups * count, chunk):
        rows = slice(start, start + chunk)
        gathered_k = keys[flat_groups[rows, None], flat_others[rows]]  # (n, M-1, H, P, d)
        gathered_v = values[flat_groups[rows, None], flat_others[rows]]
        n = gathered_k.shape[0]
        gathered_k = gathered_k.transpose(1, 2).reshape(n, heads, (members - 1) * tokens, head_dim)
        gathered_v = gathered_v.transpose(1, 2).reshape(n, heads, (members - 1) * tokens, head_dim)
        attended.append(F.scaled_dot_product_attention(query[rows], gathered_k, gathered_v))
    out = torch.cat(attended).transpose(1, 2).reshape(groups * count, tokens, dim)
    x = x + cross.proj(out)
    x = x + block.mlp(block.norm3(x))
    return x.reshape(groups, count, tokens, dim)


class MvDust3r(CroCoEncoder):
    """Views (at least 2; MV-DUSt3R+ at least `NUM_REFERENCES`) in, every view's points in
    view 0's camera frame out, with confidences."""

    def __init__(self, cfg: MvDust3rConfig | None = None) -> None:
        cfg = cfg or MvDust3rConfig()
        super().__init__(cfg.enc_embed_dim, cfg.enc_depth, cfg.enc_num_heads, cfg.mlp_ratio, cfg.patch_size, cfg.rope_base)
        self.cfg = cfg
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.dec_embed_dim))
        self.decoder_embed = nn.Linear(cfg.enc_embed_dim, cfg.dec_embed_dim)
        self.dec_blocks = self._decoder_blocks()
        self.dec_blocks2 = self._decoder_blocks()
        self.dec_same_view_blocks = self._decoder_blocks() if cfg.multi_reference else None
        self.dec_norm = nn.LayerNorm(cfg.dec_embed_dim, eps=1e-6)
        head = cfg.head_config()
        self.downstream_head1 = SkipPointsHead(head, cfg.skip_width)
        self.downstream_head2 = SkipPointsHead(head, cfg.skip_width)

    def _decoder_blocks(self) -> nn.ModuleList:
        cfg = self.cfg
        return nn.ModuleList(
            DecoderBlock(cfg.dec_embed_dim, cfg.dec_num_heads, cfg.mlp_ratio, norm_memory=cfg.norm_im2_in_dec)
            for _ in range(cfg.dec_depth)
        )

    @property
    def min_views(self) -> int:
        return NUM_REFERENCES if self.cfg.multi_reference else 2

    def decode(self, tokens: torch.Tensor, rope: RopeTables) -> torch.Tensor:
        """Encoder tokens (N, P, enc_dim) -> last decoder layer (N, P, C) of path 0, normalised."""
        views = tokens.shape[0]
        device = tokens.device
        paths = NUM_REFERENCES if self.cfg.multi_reference else 1
        features = self.decoder_embed(tokens)[None].expand(paths, -1, -1, -1).contiguous()  # (paths, N, P, C)
        references = torch.arange(paths, device=device)[:, None]
        sources = torch.stack([torch.cat([torch.arange(r, device=device), torch.arange(r + 1, views, device=device)]) for r in range(paths)])
        every_path = torch.arange(paths, device=device)[None].expand(views, -1)
        fusion_blocks = self.dec_same_view_blocks if self.dec_same_view_blocks is not None else [None] * len(self.dec_blocks)
        for reference_block, source_block, fusion_block in zip(self.dec_blocks, self.dec_blocks2, fusion_blocks, strict=True):
            updated = torch.empty_like(features)
            updated[references[:, 0], references[:, 0]] = attend_to_others(reference_block, features, references, rope)[:, 0]
            updated[torch.arange(paths, device=device)[:, None], sources] = attend_to_others(source_block, features, sources, rope)
            if fusion_block is not None:  # each view attends to itself as the other paths see it
                updated = attend_to_others(fusion_block, updated.transpose(0, 1).contiguous(), every_path, rope).transpose(0, 1)
            features = updated
        return self.dec_norm(features[0])

    def forward(self, images: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """images: per view (1, 3, H, W) in [-1, 1], one shape.  Returns `pts3d` (N, H, W, 3)
        (view 0's points in its own frame, the others' in view 0's frame) and `conf` (N, H, W)."""
        if len(images) < self.min_views:
            raise ValueError(f"{len(images)} views: this network needs at least {self.min_views}")
        batch = torch.cat(list(images))
        encoded = self.encode_views(images)
        tokens = torch.cat([view.tokens for view in encoded])
        rope = self._rope(encoded[0].positions, self.cfg.dec_embed_dim, self.cfg.dec_num_heads, tokens.dtype)
        last = self.decode(tokens, rope)
        outputs: list[dict[str, torch.Tensor]] = []
        with torch.autocast(device_type=batch.device.type, enabled=False):
            last, batch = last.float(), batch.float()
            # one view at a time: the skip branch's full-resolution 256-channel maps dominate the
            # memory, and larger batches are no faster on the CPU
            for view in range(len(images)):
                head = self.downstream_head1 if view == 0 else self.downstream_head2
                outputs.append(head.forward_with_images(last[view : view + 1], batch[view : view + 1]))
        return {key: torch.cat([out[key] for out in outputs]) for key in ("pts3d", "conf")}
