"""The CroCo stereo network of DUSt3R and MASt3R, checkpoint-compatible with the releases.

Architecture (key names as in the official checkpoints):
- encoder: `patch_embed.proj` (16x16 patches of any aspect), `enc_blocks` (ViT-L, 2D RoPE
  with base 100 on (row, column) patch positions), `enc_norm`;
- two ViT-B decoders, `dec_blocks` for the first view of a pair and `dec_blocks2` for the
  second, each block attending to its own tokens and then to the other view's
  (`decoder_embed` projects the encoder width first, `dec_norm` closes both);
- one head per decoder, `downstream_head1/2`: DUSt3R's "linear" (pixel-shuffled points and
  confidence per patch) or "dpt" (CroCo's DPT over the encoder output and three decoder
  layers); MASt3R's "catmlp+dpt" adds an MLP on [encoder, last decoder] tokens giving
  local descriptors (and their confidence) per pixel.
`mask_token` is CroCo's pretraining token: unused here, kept so that checkpoints load strictly.

Outputs per view: points (B, H, W, 3) in the first view's camera frame, confidence
(B, H, W), and for MASt3R unit descriptors (B, H, W, D) and their confidence.
"""
from __future__ import annotations

import ast
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Block, Mlp, Rope2D, RopeTables
from ..layers.cross_attention import DecoderBlock
from ..layers.dpt_adapter import DptAdapter

HEAD_TYPES = ("linear", "dpt", "catmlp+dpt")
# The reference classes whose constructor strings official .pth files store, and their family.
NETWORK_CLASSES = {"AsymmetricCroCo3DStereo": "dust3r", "AsymmetricMASt3R": "mast3r", "AsymmetricCroCo3DStereoMultiView": "mvdust3r"}
FAMILY_NAMES = {"dust3r": "DUSt3R", "mast3r": "MASt3R", "mvdust3r": "MV-DUSt3R"}
INF = math.inf

# An activation mode as the reference writes it: (name, vmin, vmax).
Mode = tuple[str, float, float]


class ConfigError(ValueError):
    """A network description that cannot be built (unknown head, unsafe constructor string)."""


@dataclass(frozen=True)
class CroCoStereoConfig:
    """The constructor arguments of the reference classes (AsymmetricCroCo3DStereo /
    AsymmetricMASt3R); defaults are DUSt3R_ViTLarge_BaseDecoder_512_dpt's.

    `family` says which class ("dust3r" or "mast3r").  `dpt_feature_dim` and
    `dpt_layer_dims` are constants of the reference's DPT (256, (96, 192, 384, 768)); only
    tiny test configurations change them.  `landscape_only` = the reference's hub-loading
    wrapper that runs portrait views transposed (its file loader turns it off).
    """

    family: str = "dust3r"
    output_mode: str = "pts3d"
    head_type: str = "dpt"
    depth_mode: Mode = ("exp", -INF, INF)
    conf_mode: Mode | None = ("exp", 1.0, INF)
    landscape_only: bool = False
    img_size: tuple[int, int] = (512, 512)
    patch_size: int = 16
    enc_embed_dim: int = 1024
    enc_depth: int = 24
    enc_num_heads: int = 16
    dec_embed_dim: int = 768
    dec_depth: int = 12
    dec_num_heads: int = 12
    mlp_ratio: float = 4.0
    norm_im2_in_dec: bool = True
    pos_embed: str = "RoPE100"
    desc_mode: str = "norm"
    two_confs: bool = False
    desc_conf_mode: Mode | None = None
    dpt_feature_dim: int = 256
    dpt_layer_dims: tuple[int, int, int, int] = (96, 192, 384, 768)

    IGNORED: ClassVar[frozenset[str]] = frozenset({"freeze", "patch_embed_cls", "mask_ratio"})

    def __post_init__(self) -> None:
        if self.family not in ("dust3r", "mast3r"):
            raise ConfigError(f"unknown network family {self.family!r}; expected dust3r or mast3r")
        if self.head_type not in HEAD_TYPES:
            raise ConfigError(f"head_type {self.head_type!r} is not supported; supported: {', '.join(HEAD_TYPES)}")
        if (self.head_type == "catmlp+dpt") != self.output_mode.startswith("pts3d+desc"):
            raise ConfigError(f"head_type {self.head_type!r} does not go with output_mode {self.output_mode!r}")
        if not self.pos_embed.startswith("RoPE"):
            raise ConfigError(f"pos_embed {self.pos_embed!r} is not supported; the released networks use RoPE100")

    @property
    def rope_base(self) -> float:
        return float(self.pos_embed[len("RoPE"):])

    @property
    def descriptor_dim(self) -> int:
        """Local descriptor width (MASt3R's output_mode 'pts3d+desc24' -> 24), 0 without."""
        return int(self.output_mode[len("pts3d+desc"):]) if self.output_mode.startswith("pts3d+desc") else 0

    @property
    def hooks(self) -> tuple[int, int, int, int]:
        """The decoder outputs the DPT reads: the encoder output and three decoder layers."""
        depth = self.dec_depth
        return (0, depth * 2 // 4, depth * 3 // 4, depth)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], family: str | None = None) -> CroCoStereoConfig:
        """From a hub config.json dict (unknown fields ignored, missing ones defaulted)."""
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {k: v for k, v in values.items() if k in known}
        if family is not None:
            kwargs["family"] = family
        elif "family" not in kwargs:
            kwargs["family"] = "mast3r" if str(values.get("output_mode", "")).startswith("pts3d+desc") else "dust3r"
        for name in ("depth_mode", "conf_mode", "desc_conf_mode"):
            if kwargs.get(name) is not None:
                mode = kwargs[name]
                kwargs[name] = (str(mode[0]), float(mode[1]), float(mode[2]))
        for name in ("img_size", "dpt_layer_dims"):
            if name in kwargs:
                value = kwargs[name]
                kwargs[name] = tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value), int(value))
        if kwargs.get("family") == "dust3r":
            kwargs.pop("desc_mode", None), kwargs.pop("two_confs", None), kwargs.pop("desc_conf_mode", None)
        return cls(**kwargs)

    @classmethod
    def from_constructor(cls, text: str) -> CroCoStereoConfig:
        """From the constructor string an official .pth stores in args.model, e.g.
        "AsymmetricMASt3R(enc_depth=24, ..., conf_mode=('exp', 1, inf))" (see `parse_constructor`)."""
        family, values = parse_constructor(text)
        if family not in ("dust3r", "mast3r"):
            raise WrongFamilyError(family, f"the checkpoint describes a {FAMILY_NAMES[family]} network, not DUSt3R/MASt3R")
        return cls.from_dict(values, family)


class WrongFamilyError(ConfigError):
    """A checkpoint of another CroCo-family network: `family` says which."""

    def __init__(self, family: str, message: str) -> None:
        super().__init__(message)
        self.family = family


def parse_constructor(text: str) -> tuple[str, dict[str, Any]]:
    """(family, keyword arguments) of a reference constructor string ("Class(a=1, b=('exp', 1, inf))").

    Parsed as data (literals, dicts and `inf` only), never evaluated; the class must be one of
    `NETWORK_CLASSES`.
    """
    try:
        call = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as error:
        raise ConfigError(f"cannot parse the network description {text!r}: {error.msg}") from error
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name) or call.func.id not in NETWORK_CLASSES:
        raise ConfigError(
            f"the checkpoint describes a network {text[:80]!r}, not one of {', '.join(NETWORK_CLASSES)}: "
            "is it a DUSt3R/MASt3R/MV-DUSt3R checkpoint?"
        )
    if call.args:
        raise ConfigError(f"unexpected positional arguments in the network description {text!r}")
    return NETWORK_CLASSES[call.func.id], {kw.arg: _literal(kw.value, text) for kw in call.keywords if kw.arg is not None}


def _literal(node: ast.AST, text: str) -> Any:
    """ast.literal_eval extended with the name `inf` (as the reference's strings use it)."""
    if isinstance(node, ast.Name) and node.id == "inf":
        return INF
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand, text)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_literal(element, text) for element in node.elts)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_literal(key, text): _literal(value, text) for key, value in zip(node.keys, node.values, strict=True)}  # type: ignore[arg-type]
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, bool, type(None))):
        return node.value
    raise ConfigError(f"the network description {text[:120]!r} holds a non-literal value ({ast.dump(node)[:60]}); refusing to evaluate it")


def activate_points(xyz: torch.Tensor, mode: Mode) -> torch.Tensor:
    """The reference's point activation: 'linear', or scale the direction by a function of the norm."""
    name, low, high = mode
    if not (low == -INF and high == INF):
        raise ConfigError(f"bounded depth_mode {mode} is not supported (the reference refuses it too)")
    if name == "linear":
        return xyz
    norm = xyz.norm(dim=-1, keepdim=True)
    direction = xyz / norm.clip(min=1e-8)
    if name == "square":
        return direction * norm.square()
    if name == "exp":
        return direction * torch.expm1(norm)
    raise ConfigError(f"unknown depth_mode {name!r}; expected linear, square or exp")


def activate_confidence(x: torch.Tensor, mode: Mode) -> torch.Tensor:
    """The reference's confidence activation: vmin + exp(x) (capped at vmax), or a scaled sigmoid."""
    name, low, high = mode
    if name == "exp":
        return low + x.exp().clip(max=high - low)
    if name == "sigmoid":
        return (high - low) * torch.sigmoid(x) + low
    raise ConfigError(f"unknown confidence mode {name!r}; expected exp or sigmoid")


class PointsHead(nn.Module):
    """DUSt3R's heads: points (+ confidence) from the decoder outputs of one view.

    "linear": one Linear per token giving patch_size^2 pixels (key `proj`), pixel-shuffled;
    "dpt": CroCo's DPT (keys `dpt.*`).  MASt3R's "catmlp+dpt" adds `head_local_features`,
    an MLP on the concatenated encoder and last decoder tokens giving descriptors (and, with
    `two_confs`, their own confidence) per pixel.
    """

    def __init__(self, cfg: CroCoStereoConfig) -> None:
        super().__init__()
        self.cfg = cfg
        channels = 3 + int(cfg.conf_mode is not None)
        if cfg.head_type == "linear":
            self.proj = nn.Linear(cfg.dec_embed_dim, channels * cfg.patch_size**2)
        else:
            self.dpt = DptAdapter(
                dims_in=(cfg.enc_embed_dim, cfg.dec_embed_dim, cfg.dec_embed_dim, cfg.dec_embed_dim),
                hooks=cfg.hooks, num_channels=channels, patch_size=cfg.patch_size,
                feature_dim=cfg.dpt_feature_dim, last_dim=cfg.dpt_feature_dim // 2, layer_dims=cfg.dpt_layer_dims,
            )
        if cfg.descriptor_dim:
            width = cfg.enc_embed_dim + cfg.dec_embed_dim
            out = (cfg.descriptor_dim + int(cfg.two_confs)) * cfg.patch_size**2
            self.head_local_features = Mlp(width, 4 * width, out)

    def _per_pixel(self, tokens: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        """(B, rows*cols, C*p*p) token outputs -> (B, C, H, W) by pixel shuffle."""
        p = self.cfg.patch_size
        grid = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, image_hw[0] // p, image_hw[1] // p)
        return F.pixel_shuffle(grid, p)

    def maps(self, layers: Sequence[torch.Tensor], image_hw: tuple[int, int]) -> torch.Tensor:
        """The pre-activation maps (B, C, H, W): points, confidence, descriptors."""
        cfg = self.cfg
        if cfg.head_type == "linear":
            maps = self._per_pixel(self.proj(layers[-1]), image_hw)
        else:
            maps = self.dpt(layers, image_hw)
        if cfg.descriptor_dim:
            features = self.head_local_features(torch.cat([layers[0], layers[-1]], dim=-1))
            maps = torch.cat([maps, self._per_pixel(features, image_hw)], dim=1)
        return maps

    def activate(self, maps: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pre-activation maps (B, C, H, W) -> named outputs (B, H, W, ...)."""
        cfg = self.cfg
        fmap = maps.permute(0, 2, 3, 1)
        out = {"pts3d": activate_points(fmap[..., 0:3], cfg.depth_mode)}
        if cfg.conf_mode is not None:
            out["conf"] = activate_confidence(fmap[..., 3], cfg.conf_mode)
        if cfg.descriptor_dim:
            start = 3 + int(cfg.conf_mode is not None)
            desc = fmap[..., start : start + cfg.descriptor_dim]
            out["desc"] = desc / desc.norm(dim=-1, keepdim=True)
            if cfg.two_confs:
                out["desc_conf"] = activate_confidence(fmap[..., start + cfg.descriptor_dim], cfg.desc_conf_mode or cfg.conf_mode)  # type: ignore[arg-type]
            else:
                out["desc_conf"] = out["conf"].clone()
        return out

    def forward(self, layers: Sequence[torch.Tensor], image_hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        return self.activate(self.maps(layers, image_hw))


@dataclass
class EncodedViews:
    """Encoder output of a batch of views: tokens (B, N, enc_dim), their (row, col) patch
    positions (B, N, 2), the network input size (H, W) and whether they were transposed."""

    tokens: torch.Tensor
    positions: torch.Tensor
    image_hw: tuple[int, int]
    transposed: bool


class CroCoEncoder(nn.Module):
    """CroCo's ViT encoder (keys `patch_embed.proj`, `enc_blocks`, `enc_norm`): patches of any
    aspect, pre-norm blocks with 2D RoPE on (row, column) patch positions, LayerNorm eps 1e-6.
    DUSt3R/MASt3R hold it at the top level of their checkpoints, Fast3R under `encoder.`."""

    def __init__(self, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0, patch_size: int = 16,
                 rope_base: float = 100.0, landscape_only: bool = False) -> None:
        super().__init__()
        self.embed_dim, self.num_heads, self.patch_size, self.landscape_only = embed_dim, num_heads, patch_size, landscape_only
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.rope = Rope2D(rope_base)
        self.enc_blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_eps=1e-6) for _ in range(depth))
        self.enc_norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def _rope(self, positions: torch.Tensor, dim: int, heads: int, dtype: torch.dtype) -> RopeTables:
        return self.rope.tables(positions, dim // heads, dtype)

    def encode(self, images: torch.Tensor) -> EncodedViews:
        """Encode (B, 3, H, W) images normalised to [-1, 1]; H and W multiples of the patch."""
        height, width = images.shape[-2:]
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {p}")
        transposed = self.landscape_only and height > width
        if transposed:
            images = images.transpose(-1, -2)
        x = self.patch_embed.proj(images)
        rows, cols = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        rr, cc = torch.meshgrid(torch.arange(rows, device=x.device), torch.arange(cols, device=x.device), indexing="ij")
        positions = torch.stack([rr.reshape(-1), cc.reshape(-1)], dim=-1).unsqueeze(0).expand(x.shape[0], -1, -1)
        rope = self._rope(positions, self.embed_dim, self.num_heads, x.dtype)
        for block in self.enc_blocks:
            x = block(x, rope=rope)
        return EncodedViews(self.enc_norm(x), positions, (int(rows) * p, int(cols) * p), transposed)

    def encode_views(self, images: Sequence[torch.Tensor], chunk: int = 8) -> list[EncodedViews]:
        """Each view (1, 3, H, W) encoded once: views of one shape together, `chunk` at a time
        (views are encoded independently, so the chunk bounds memory only)."""
        encoded: list[EncodedViews | None] = [None] * len(images)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(images):
            by_shape.setdefault(tuple(image.shape), []).append(index)
        for same_shape in by_shape.values():
            for start in range(0, len(same_shape), chunk):
                indices = same_shape[start : start + chunk]
                batch = self.encode(torch.cat([images[i] for i in indices]))
                for row, index in enumerate(indices):
                    encoded[index] = EncodedViews(
                        batch.tokens[row : row + 1], batch.positions[row : row + 1], batch.image_hw, batch.transposed
                    )
        return [view for view in encoded if view is not None]


class CroCoStereo(CroCoEncoder):
    """Two views in, both views' points in the first view's frame out (DUSt3R / MASt3R)."""

    def __init__(self, cfg: CroCoStereoConfig | None = None) -> None:
        cfg = cfg or CroCoStereoConfig()
        super().__init__(cfg.enc_embed_dim, cfg.enc_depth, cfg.enc_num_heads, cfg.mlp_ratio, cfg.patch_size, cfg.rope_base,
                         cfg.landscape_only)
        self.cfg = cfg
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.dec_embed_dim))
        self.decoder_embed = nn.Linear(cfg.enc_embed_dim, cfg.dec_embed_dim)
        self.dec_blocks = self._decoder_blocks()
        self.dec_blocks2 = self._decoder_blocks()
        self.dec_norm = nn.LayerNorm(cfg.dec_embed_dim, eps=1e-6)
        self.downstream_head1 = PointsHead(cfg)
        self.downstream_head2 = PointsHead(cfg)

    def _decoder_blocks(self) -> nn.ModuleList:
        cfg = self.cfg
        return nn.ModuleList(
            DecoderBlock(cfg.dec_embed_dim, cfg.dec_num_heads, cfg.mlp_ratio, norm_memory=cfg.norm_im2_in_dec)
            for _ in range(cfg.dec_depth)
        )

    def decode(self, view1: EncodedViews, view2: EncodedViews) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Both decoders; returns per view [encoder output, block 1, ..., normalised last block]."""
        cfg = self.cfg
        rope1 = self._rope(view1.positions, cfg.dec_embed_dim, cfg.dec_num_heads, view1.tokens.dtype)
        rope2 = self._rope(view2.positions, cfg.dec_embed_dim, cfg.dec_num_heads, view2.tokens.dtype)
        layers1, layers2 = [view1.tokens], [view2.tokens]
        f1, f2 = self.decoder_embed(view1.tokens), self.decoder_embed(view2.tokens)
        for block1, block2 in zip(self.dec_blocks, self.dec_blocks2, strict=True):
            f1, f2 = block1(f1, f2, rope1, rope2), block2(f2, f1, rope2, rope1)
            layers1.append(f1)
            layers2.append(f2)
        layers1[-1], layers2[-1] = self.dec_norm(layers1[-1]), self.dec_norm(layers2[-1])
        return layers1, layers2

    @staticmethod
    def _head(head: PointsHead, layers: list[torch.Tensor], view: EncodedViews) -> dict[str, torch.Tensor]:
        """The head one pair at a time: its full-resolution maps dominate the memory of a
        batch, and running them per pair bounds that at one pair's whatever the batch size."""
        parts = [head([layer[b : b + 1] for layer in layers], view.image_hw) for b in range(layers[0].shape[0])]
        out = {key: torch.cat([part[key] for part in parts]) if len(parts) > 1 else parts[0][key] for key in parts[0]}
        return {k: v.transpose(1, 2) for k, v in out.items()} if view.transposed else out

    def forward_encoded(self, view1: EncodedViews, view2: EncodedViews) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Decoders and heads on encoded views: (view 1's outputs, view 2's outputs), points
        of both in view 1's camera frame (view 2's under `pts3d_in_other_view`)."""
        layers1, layers2 = self.decode(view1, view2)
        with torch.autocast(device_type=view1.tokens.device.type, enabled=False):
            res1 = self._head(self.downstream_head1, [t.float() for t in layers1], view1)
            res2 = self._head(self.downstream_head2, [t.float() for t in layers2], view2)
        res2["pts3d_in_other_view"] = res2.pop("pts3d")
        return res1, res2

    def forward(self, images1: torch.Tensor, images2: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Pairs (images1[b], images2[b]); see `forward_encoded`."""
        return self.forward_encoded(self.encode(images1), self.encode(images2))
