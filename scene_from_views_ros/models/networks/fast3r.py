"""Fast3R: all views in one pass, checkpoint-compatible with the release (jedyang97/Fast3R_ViT_Large_512).

Architecture (key names as in the official checkpoint):
- `encoder.*`: CroCo's ViT-L encoder (`CroCoEncoder`), each view on its own;
- `decoder.*`: the fusion decoder: `decoder_embed` projects every view's encoder tokens, each
  view's tokens get the sine-cosine embedding of its image index (a fixed, unsaved table of
  1000 ids: at most 1000 views), then `dec_blocks` (plain pre-norm ViT blocks, LayerNorm eps
  1e-5, no positional encoding) attend over the tokens of all views together; `dec_norm` (eps
  1e-6) closes the last layer;
- `downstream_head.*` (global: every view's points in view 0's camera frame) and
  `downstream_head_local.*` (local: each view's points in its own camera frame): DUSt3R's DPT
  head over [encoder output, decoder layers depth/2, 3 depth/4, depth].

Image-index ids: the reference gives view 0 id 0 and draws the others' ids at random among
1..999 on every forward, even in eval mode; here they are an argument (`image_ids`), so that
a caller decides (and parity tests pass the reference's draw).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..layers import Block, sincos_1d
from .croco_stereo import ConfigError, CroCoEncoder, CroCoStereoConfig, EncodedViews, Mode, PointsHead

MAX_IMAGE_IDS = 1000  # rows of the image-index embedding table: ids 0..999
ENCODER_CHUNK = 8  # views per encoder pass: long windows do not hold every view's activations at once
INF = math.inf


@dataclass(frozen=True)
class Fast3RConfig:
    """The released network's constructor arguments (the hub's config.json: encoder_args,
    decoder_args, head_args); defaults are Fast3R_ViT_Large_512's.  `dpt_feature_dim` and
    `dpt_layer_dims` are constants of the reference's DPT; only tiny test networks change them."""

    img_size: int = 512
    patch_size: int = 16
    enc_embed_dim: int = 1024
    enc_depth: int = 24
    enc_num_heads: int = 16
    enc_mlp_ratio: float = 4.0
    rope_base: float = 100.0
    dec_embed_dim: int = 1024
    dec_depth: int = 24
    dec_num_heads: int = 16
    dec_mlp_ratio: float = 4.0
    depth_mode: Mode = ("exp", -INF, INF)
    conf_mode: Mode = ("exp", 1.0, INF)
    with_local_head: bool = True
    dpt_feature_dim: int = 256
    dpt_layer_dims: tuple[int, int, int, int] = (96, 192, 384, 768)

    def __post_init__(self) -> None:
        if self.dec_depth <= 9:
            raise ConfigError(f"decoder depth {self.dec_depth}: the DPT heads need more than 9 decoder layers")

    def head_config(self) -> CroCoStereoConfig:
        """The heads are DUSt3R's DPT head with these widths (hooks 0, depth/2, 3 depth/4, depth)."""
        return CroCoStereoConfig(
            head_type="dpt", depth_mode=self.depth_mode, conf_mode=self.conf_mode, patch_size=self.patch_size,
            enc_embed_dim=self.enc_embed_dim, dec_embed_dim=self.dec_embed_dim, dec_depth=self.dec_depth,
            dpt_feature_dim=self.dpt_feature_dim, dpt_layer_dims=self.dpt_layer_dims,
        )

    @classmethod
    def from_hub_config(cls, values: Mapping[str, Any]) -> Fast3RConfig:
        """From the hub's config.json ({encoder_args, decoder_args, head_args}); settings the
        release does not use are refused with what they are, rather than silently changed."""
        if not all(isinstance(values.get(k), Mapping) for k in ("encoder_args", "decoder_args", "head_args")):
            raise ConfigError(
                f"not a Fast3R config.json: expected encoder_args, decoder_args and head_args, got {sorted(values)}"
            )
        enc, dec, head = values["encoder_args"], values["decoder_args"], values["head_args"]
        expected = {
            ("encoder_args", "encoder_type"): (enc.get("encoder_type", "croco"), "croco"),
            ("encoder_args", "patch_embed_cls"): (enc.get("patch_embed_cls", "PatchEmbedDust3R"), "PatchEmbedDust3R"),
            ("decoder_args", "decoder_type"): (dec.get("decoder_type", "fast3r"), "fast3r"),
            ("decoder_args", "attn_bias_for_inference_enabled"): (bool(dec.get("attn_bias_for_inference_enabled", False)), False),
            ("decoder_args", "random_image_idx_embedding"): (bool(dec.get("random_image_idx_embedding", True)), True),
            ("head_args", "head_type"): (head.get("head_type", "dpt"), "dpt"),
            ("head_args", "output_mode"): (head.get("output_mode", "pts3d"), "pts3d"),
            ("head_args", "landscape_only"): (bool(head.get("landscape_only", False)), False),
        }
        for (group, name), (value, wanted) in expected.items():
            if value != wanted:
                raise ConfigError(f"Fast3R config {group}.{name}={value!r} is not supported (the release uses {wanted!r})")
        pos_embed = str(enc.get("pos_embed", "RoPE100"))
        if not pos_embed.startswith("RoPE"):
            raise ConfigError(f"Fast3R config encoder_args.pos_embed={pos_embed!r} is not supported (the release uses RoPE100)")
        if int(enc.get("patch_size", 16)) != int(head.get("patch_size", enc.get("patch_size", 16))):
            raise ConfigError("Fast3R config: encoder and head patch sizes differ")

        def mode(value: Any, default: Mode) -> Mode:
            return default if value is None else (str(value[0]), float(value[1]), float(value[2]))

        if int(dec.get("enc_embed_dim", enc.get("embed_dim", 1024))) != int(enc.get("embed_dim", 1024)):
            raise ConfigError("Fast3R config: decoder_args.enc_embed_dim differs from encoder_args.embed_dim")
        defaults = cls()
        return cls(
            img_size=int(enc.get("img_size", 512)), patch_size=int(enc.get("patch_size", 16)), enc_embed_dim=int(enc.get("embed_dim", 1024)),
            enc_depth=int(enc.get("depth", 24)), enc_num_heads=int(enc.get("num_heads", 16)),
            enc_mlp_ratio=float(enc.get("mlp_ratio", 4.0)), rope_base=float(pos_embed[len("RoPE"):] or 100),
            dec_embed_dim=int(dec.get("embed_dim", 1024)), dec_depth=int(dec.get("depth", 24)),
            dec_num_heads=int(dec.get("num_heads", 16)), dec_mlp_ratio=float(dec.get("mlp_ratio", 4.0)),
            depth_mode=mode(head.get("depth_mode"), defaults.depth_mode), conf_mode=mode(head.get("conf_mode"), defaults.conf_mode),
            with_local_head=bool(head.get("with_local_head", False)),
            dpt_feature_dim=int(head.get("dpt_feature_dim", 256)),
            dpt_layer_dims=tuple(int(v) for v in head.get("dpt_layer_dims", (96, 192, 384, 768))),  # type: ignore[arg-type]
        )


class Fast3RDecoder(nn.Module):
    """The fusion decoder: global attention over the tokens of all views, each view marked by
    the sine-cosine embedding of its image-index id."""

    def __init__(self, cfg: Fast3RConfig) -> None:
        super().__init__()
        self.decoder_embed = nn.Linear(cfg.enc_embed_dim, cfg.dec_embed_dim)
        self.dec_blocks = nn.ModuleList(
            Block(cfg.dec_embed_dim, cfg.dec_num_heads, cfg.dec_mlp_ratio, qkv_bias=True, norm_eps=1e-5) for _ in range(cfg.dec_depth)
        )
        self.dec_norm = nn.LayerNorm(cfg.dec_embed_dim, eps=1e-6)
        self.dec_embed_dim = cfg.dec_embed_dim

    def forward(self, tokens: Sequence[torch.Tensor], image_ids: torch.Tensor) -> list[torch.Tensor]:
        """tokens: per view (B, P_v, enc_dim); image_ids (V,) -> [encoder tokens, block 1, ...,
        normalised last block], each (B, sum P_v, C)."""
        x = torch.cat(list(tokens), dim=1)
        layers = [x]
        # the rows of the reference's (unsaved) table of ids 0..999 that these views use
        embedding = sincos_1d(self.dec_embed_dim, image_ids).to(x.dtype)
        x = self.decoder_embed(x) + torch.cat([embedding[v].expand(t.shape[1], -1) for v, t in enumerate(tokens)])[None]
        for block in self.dec_blocks:
            x = block(x)
            layers.append(x)
        layers[-1] = self.dec_norm(layers[-1])
        return layers


class Fast3R(nn.Module):
    """Views in, per view: points of every view in view 0's camera frame (global head) and in
    its own frame (local head), with confidences."""

    def __init__(self, cfg: Fast3RConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or Fast3RConfig()
        self.encoder = CroCoEncoder(cfg.enc_embed_dim, cfg.enc_depth, cfg.enc_num_heads, cfg.enc_mlp_ratio, cfg.patch_size, cfg.rope_base)
        self.decoder = Fast3RDecoder(cfg)
        head = cfg.head_config()
        self.downstream_head = PointsHead(head)
        self.downstream_head_local = PointsHead(head) if cfg.with_local_head else None

    def encode(self, images: Sequence[torch.Tensor], chunk: int = ENCODER_CHUNK) -> list[EncodedViews]:
        """Each view (1, 3, H, W) normalised to [-1, 1], `chunk` views of one shape at a time."""
        return self.encoder.encode_views(images, chunk)

    def forward(self, images: Sequence[torch.Tensor], image_ids: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """Per view: `pts3d_in_other_view` (1, H, W, 3), `conf` (1, H, W), and with the local
        head `pts3d_local`, `conf_local`; image_ids (V,) distinct ids in [0, 1000).  The heads
        run one view at a time (their full-resolution maps dominate the memory)."""
        if image_ids.shape != (len(images),):
            raise ValueError(f"image_ids has shape {tuple(image_ids.shape)}: expected one id per view ({len(images)})")
        if int(image_ids.min()) < 0 or int(image_ids.max()) >= MAX_IMAGE_IDS:
            raise ValueError(f"image ids must lie in [0, {MAX_IMAGE_IDS}): Fast3R's embedding has {MAX_IMAGE_IDS} rows")
        views = self.encode(images)
        layers = self.decoder([view.tokens for view in views], image_ids.to(views[0].tokens.device))
        bounds = [0]
        for view in views:
            bounds.append(bounds[-1] + view.tokens.shape[1])
        out: dict[str, list[torch.Tensor]] = {"pts3d_in_other_view": [], "conf": [], "pts3d_local": [], "conf_local": []}
        with torch.autocast(device_type=views[0].tokens.device.type, enabled=False):
            for index, view in enumerate(views):
                per_view = [layer[:, bounds[index] : bounds[index + 1]].float() for layer in layers]
                global_out = self.downstream_head(per_view, view.image_hw)
                out["pts3d_in_other_view"].append(global_out["pts3d"])
                out["conf"].append(global_out["conf"])
                if self.downstream_head_local is not None:
                    local_out = self.downstream_head_local(per_view, view.image_hw)
                    out["pts3d_local"].append(local_out["pts3d"])
                    out["conf_local"].append(local_out["conf"])
        return {key: value for key, value in out.items() if value}
