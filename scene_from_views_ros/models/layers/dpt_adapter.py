"""CroCo's DPT output adapter (DUSt3R, MASt3R, MV-DUSt3R, Fast3R), checkpoint-compatible.

Tokens of four layers are reshaped to patch grids, brought to four scales
(`act_postprocess`: 1x1 projection, then x4 / x2 transposed convolutions, identity, and a
stride-2 convolution), projected to `feature_dim` (`scratch.layer{1..4}_rn`), fused
coarse-to-fine by RefineNet blocks, and turned into `num_channels` maps at the input
resolution by the small `head`.  Unlike VGGT's DPT there is no token LayerNorm, no
position embedding, and the residual units add their un-activated input.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .dpt import FeatureFusionBlock

# Keys of the four 3x3 projections: checkpoints hold them under both names (the reference
# keeps a ModuleList aliasing the same convolutions); the hub's safetensors files hold one.
ALIAS_PATTERN = "scratch.layer_rn.{index}."
CANONICAL_PATTERN = "scratch.layer{number}_rn."


def canonical_dpt_key(key: str) -> str:
    """`...scratch.layer_rn.0.weight` -> `...scratch.layer1_rn.weight` (the aliases' one name)."""
    for index in range(4):
        alias = ALIAS_PATTERN.format(index=index)
        if alias in key:
            return key.replace(alias, CANONICAL_PATTERN.format(number=index + 1))
    return key


class DptAdapter(nn.Module):
    """Dense maps (B, num_channels, H, W) from a list of (B, rows*cols, dim) token layers.

    `hooks` picks the four layers of the list; `dims_in` are their widths.  The defaults
    (`layer_dims`, `feature_dim`, `last_dim`) are the released networks'; tiny test
    configurations shrink them.
    """

    def __init__(
        self,
        dims_in: Sequence[int],
        hooks: Sequence[int],
        num_channels: int,
        patch_size: int = 16,
        feature_dim: int = 256,
        last_dim: int = 128,
        layer_dims: Sequence[int] = (96, 192, 384, 768),
    ) -> None:
        super().__init__()
        self.hooks = list(hooks)
        self.patch_size = patch_size
        d0, d1, d2, d3 = layer_dims
        self.act_postprocess = nn.ModuleList([
            nn.Sequential(nn.Conv2d(dims_in[0], d0, 1), nn.ConvTranspose2d(d0, d0, kernel_size=4, stride=4)),
            nn.Sequential(nn.Conv2d(dims_in[1], d1, 1), nn.ConvTranspose2d(d1, d1, kernel_size=2, stride=2)),
            nn.Sequential(nn.Conv2d(dims_in[2], d2, 1)),
            nn.Sequential(nn.Conv2d(dims_in[3], d3, 1), nn.Conv2d(d3, d3, kernel_size=3, stride=2, padding=1)),
        ])
        self.scratch = nn.Module()
        for number, width in enumerate(layer_dims, start=1):
            setattr(self.scratch, f"layer{number}_rn", nn.Conv2d(width, feature_dim, 3, padding=1, bias=False))
        for number in range(1, 5):
            setattr(self.scratch, f"refinenet{number}", FeatureFusionBlock(feature_dim, skip_after_relu=False))
        self.head = nn.Sequential(
            nn.Conv2d(feature_dim, feature_dim // 2, 3, padding=1),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(feature_dim // 2, last_dim, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(last_dim, num_channels, 1),
        )

    def forward(self, layers: Sequence[torch.Tensor], image_hw: tuple[int, int]) -> torch.Tensor:
        rows, cols = image_hw[0] // self.patch_size, image_hw[1] // self.patch_size
        s = self.scratch
        maps = []
        for number, (hook, adapt) in enumerate(zip(self.hooks, self.act_postprocess, strict=True), start=1):
            tokens = layers[hook]
            # A channels-last view, no copy: the convolutions then run channels-last, which on
            # CPU needs less memory than NCHW (no reorder buffers) and is what the reference does.
            grid = tokens.reshape(tokens.shape[0], rows, cols, tokens.shape[2]).permute(0, 3, 1, 2)
            maps.append(getattr(s, f"layer{number}_rn")(adapt(grid)))
        out = s.refinenet4(maps[3])[:, :, : maps[2].shape[2], : maps[2].shape[3]]
        out = s.refinenet3(out, maps[2])
        out = s.refinenet2(out, maps[1])
        out = s.refinenet1(out, maps[0])
        return self.head(out)
