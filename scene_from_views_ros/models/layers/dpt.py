"""DPT dense-prediction head over intermediate transformer tokens.

Layout and key names follow VGGT's DPT head (itself after Depth-Anything-V2): per-layer
1x1 projections and resizes to four scales, RefineNet-style fusion (`scratch`), and a small
output convolution stack.  Sinusoidal UV position embeddings are optionally added to the
projected features and to the fused map.  Frames are processed in chunks to bound memory.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .activations import activate_confidence, activate_values

_INTERPOLATE_MAX_ELEMENTS = 1610612736  # F.interpolate indexes with int32 internally


def interpolate_bilinear(x: torch.Tensor, size: tuple[int, int], align_corners: bool = True) -> torch.Tensor:
    """Bilinear resize, split along the batch when the output would overflow int32 indexing."""
    elements = size[0] * size[1] * x.shape[0] * x.shape[1]
    if elements <= _INTERPOLATE_MAX_ELEMENTS:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)
    chunks = torch.chunk(x, elements // _INTERPOLATE_MAX_ELEMENTS + 1, dim=0)
    return torch.cat([F.interpolate(c, size=size, mode="bilinear", align_corners=align_corners) for c in chunks])


def uv_sincos_embedding(rows: int, cols: int, channels: int, aspect_ratio: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(channels, rows, cols) sin/cos embedding of a centred UV grid normalised by its diagonal.

    The grid spans +-aspect/diag horizontally and +-1/diag vertically at pixel centres; x
    fills the first half of the channels, y the second, each as [sin, cos] with base 100.
    """
    diag = (aspect_ratio**2 + 1.0) ** 0.5
    span_x, span_y = aspect_ratio / diag, 1.0 / diag
    xs = torch.linspace(-span_x * (cols - 1) / cols, span_x * (cols - 1) / cols, cols, dtype=dtype, device=device)
    ys = torch.linspace(-span_y * (rows - 1) / rows, span_y * (rows - 1) / rows, rows, dtype=dtype, device=device)
    uu, vv = torch.meshgrid(xs, ys, indexing="xy")  # (rows, cols)
    half = channels // 2
    omega = torch.arange(half // 2, dtype=torch.float64, device=device) / (half / 2.0)
    omega = 1.0 / 100.0**omega

    def sincos(values: torch.Tensor) -> torch.Tensor:
        angles = values.reshape(-1, 1).double() * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1).float()

    emb = torch.cat([sincos(uu), sincos(vv)], dim=-1).view(rows, cols, channels)
    return emb.permute(2, 0, 1)


class ResidualConvUnit(nn.Module):
    """relu -> conv3x3 -> relu -> conv3x3, added to the input.

    VGGT's reference applies an in-place ReLU to its input before the skip connection, so
    its residual carries relu(x) (`skip_after_relu`); CroCo's DPT (DUSt3R family) adds x
    itself.  The checkpoints were trained each way.
    """

    def __init__(self, features: int, skip_after_relu: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)
        self.skip_after_relu = skip_after_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu_(self.conv1(F.relu(x))))  # relu(x) is not held through both convolutions
        return out.add_(F.relu(x) if self.skip_after_relu else x)


class FeatureFusionBlock(nn.Module):
    """Adds the refined skip features, refines, upsamples (bilinear, aligned corners), 1x1 conv."""

    def __init__(self, features: int, has_residual: bool = True, skip_after_relu: bool = True) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        if has_residual:
            self.resConfUnit1 = ResidualConvUnit(features, skip_after_relu)
        self.has_residual = has_residual
        self.resConfUnit2 = ResidualConvUnit(features, skip_after_relu)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, size: tuple[int, int] | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        size = size if size is not None else (int(x.shape[-2] * 2), int(x.shape[-1] * 2))
        return self.out_conv(interpolate_bilinear(x, size, align_corners=True))


class DPTHead(nn.Module):
    """Dense head: tokens of four layers -> per-pixel outputs (or features).

    With `feature_only` it returns features (B, S, features, H/down, W/down); otherwise
    (values (B, S, H, W, output_dim-1), confidence (B, S, H, W)) after the activations.
    """

    def __init__(
        self,
        dim_in: int,
        patch_size: int = 14,
        output_dim: int = 4,
        activation: str = "inv_log",
        conf_activation: str = "expp1",
        features: int = 256,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        intermediate_layer_idx: Sequence[int] = (4, 11, 17, 23),
        pos_embed: bool = True,
        feature_only: bool = False,
        down_ratio: int = 1,
        skip_after_relu: bool = True,
        token_norm: bool = True,
    ) -> None:
        """`skip_after_relu`: VGGT's residual units add relu(x), Depth Anything 3's add x;
        `token_norm`: a LayerNorm on the tokens (DPTs without it have no `norm` keys)."""
        super().__init__()
        self.patch_size = patch_size
        self.activation = activation
        self.conf_activation = conf_activation
        self.use_pos_embed = pos_embed
        self.feature_only = feature_only
        self.down_ratio = down_ratio
        self.intermediate_layer_idx = list(intermediate_layer_idx)
        self._pos_cache: dict[tuple, torch.Tensor] = {}

        self.norm: nn.Module = nn.LayerNorm(dim_in) if token_norm else nn.Identity()
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, oc, 1) for oc in out_channels)
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(out_channels[0], out_channels[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(out_channels[1], out_channels[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(out_channels[3], out_channels[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        self.scratch = nn.Module()
        for i, oc in enumerate(out_channels, start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(oc, features, 3, padding=1, bias=False))
        self.scratch.refinenet1 = FeatureFusionBlock(features, skip_after_relu=skip_after_relu)
        self.scratch.refinenet2 = FeatureFusionBlock(features, skip_after_relu=skip_after_relu)
        self.scratch.refinenet3 = FeatureFusionBlock(features, skip_after_relu=skip_after_relu)
        self.scratch.refinenet4 = FeatureFusionBlock(features, has_residual=False, skip_after_relu=skip_after_relu)
        if feature_only:
            self.scratch.output_conv1 = nn.Conv2d(features, features, 3, padding=1)
        else:
            self.scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
            self.scratch.output_conv2 = nn.Sequential(
                nn.Conv2d(features // 2, 32, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(32, output_dim, 1)
            )

    def _add_pos_embed(self, x: torch.Tensor, image_hw: tuple[int, int], cache: bool) -> torch.Tensor:
        """Add 0.1 x the UV embedding; patch-level ones are cached, the full-resolution one
        (features/2 x H x W, ~140 MB at 518 px) is recomputed rather than held."""
        key = (x.shape[1], x.shape[2], x.shape[3], image_hw, x.dtype, x.device)
        embedding = self._pos_cache.get(key)
        if embedding is None:
            aspect = image_hw[1] / image_hw[0]
            embedding = 0.1 * uv_sincos_embedding(x.shape[2], x.shape[3], x.shape[1], aspect, x.dtype, x.device)
            if cache:
                self._pos_cache[key] = embedding
        return x + embedding

    def forward(
        self,
        tokens: Mapping[int, torch.Tensor] | Sequence[torch.Tensor],
        image_hw: tuple[int, int],
        patch_start_idx: int,
        frames_chunk_size: int | None = 8,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Run over frames in chunks of `frames_chunk_size` (None: all at once).

        `tokens[i]` is layer i's output (B, S, P, dim_in) for every index in
        `intermediate_layer_idx`; `image_hw` is the network input size.
        """
        num_frames = tokens[self.intermediate_layer_idx[0]].shape[1]
        step = num_frames if not frames_chunk_size or frames_chunk_size >= num_frames else frames_chunk_size
        outputs = [self._forward_frames(tokens, image_hw, patch_start_idx, s, min(s + step, num_frames)) for s in range(0, num_frames, step)]
        if len(outputs) == 1:
            return outputs[0]
        if self.feature_only:
            return torch.cat(outputs, dim=1)
        return torch.cat([o[0] for o in outputs], dim=1), torch.cat([o[1] for o in outputs], dim=1)

    def _forward_frames(
        self, tokens: Mapping[int, torch.Tensor] | Sequence[torch.Tensor], image_hw: tuple[int, int], patch_start_idx: int,
        start: int, end: int,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        height, width = image_hw
        rows, cols = height // self.patch_size, width // self.patch_size
        features = []
        for i, layer in enumerate(self.intermediate_layer_idx):
            x = tokens[layer][:, start:end, patch_start_idx:]
            batch, frames = x.shape[:2]
            x = self.norm(x.reshape(batch * frames, rows * cols, x.shape[-1]))
            x = x.permute(0, 2, 1).reshape(batch * frames, -1, rows, cols)
            x = self.projects[i](x)
            if self.use_pos_embed:
                x = self._add_pos_embed(x, image_hw, cache=True)
            features.append(self.resize_layers[i](x))

        out = self._fuse(features)
        out = interpolate_bilinear(out, (int(rows * self.patch_size / self.down_ratio), int(cols * self.patch_size / self.down_ratio)))
        if self.use_pos_embed:
            out = self._add_pos_embed(out, image_hw, cache=False)
        if self.feature_only:
            return out.view(batch, frames, *out.shape[1:])
        values, conf = self._predict(out)
        return values.view(batch, frames, *values.shape[1:]), conf.view(batch, frames, *conf.shape[1:])

    def _predict(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Full-resolution features (B, features/2, H, W) -> activated values and confidence."""
        out = self.scratch.output_conv2(features).permute(0, 2, 3, 1)
        return activate_values(out[..., :-1], self.activation), activate_confidence(out[..., -1], self.conf_activation)

    def _fuse(self, features: list[torch.Tensor]) -> torch.Tensor:
        """RefineNet fusion from the coarsest level up; consumes `features` so that each
        level's maps are freed as soon as they are fused."""
        s = self.scratch
        skips = [getattr(s, f"layer{i}_rn")(features[i - 1]) for i in (1, 2, 3)]
        out = s.refinenet4(s.layer4_rn(features[3]), size=skips[2].shape[2:])
        features.clear()
        out = s.refinenet3(out, skips.pop(), size=skips[1].shape[2:])
        out = s.refinenet2(out, skips.pop(), size=skips[0].shape[2:])
        out = s.refinenet1(out, skips.pop())
        return s.output_conv1(out)
