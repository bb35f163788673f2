"""Non-overlapping patch embedding: (B, C, H, W) -> (B, H/p * W/p, D)."""
from __future__ import annotations

import torch
from torch import nn


class PatchEmbed(nn.Module):
    """A stride-p convolution flattened to tokens in row-major patch order (key: proj)."""

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"image size {height}x{width} is not a multiple of the patch size {self.patch_size}; "
                "resize or crop the images to multiples of it"
            )
        return self.proj(x).flatten(2).transpose(1, 2)
