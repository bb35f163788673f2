"""DINOv2 vision transformer with register tokens, as a patch-token encoder.

Key names follow the released DINOv2 checkpoints (cls_token, pos_embed, register_tokens,
mask_token, patch_embed.proj, blocks.N, norm), so DINOv2-initialised models (VGGT,
Depth Anything) load their encoders strictly.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .block import Block
from .patch_embed import PatchEmbed

DINOV2_NORM_EPS = 1e-6


class DinoVisionTransformer(nn.Module):
    """ViT returning the final-normed patch tokens (B, N_patches, D).

    Position embeddings are learned on a square `img_size` grid and resized to the input's
    patch grid with antialiased bicubic interpolation to an explicit output size (the
    `interpolate_offset=0`, `interpolate_antialias=True` variant VGGT uses).
    """

    def __init__(
        self,
        img_size: int = 518,
        patch_size: int = 14,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_register_tokens: int = 4,
        init_values: float | None = 1.0,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.num_register_tokens = num_register_tokens
        self.patch_embed = PatchEmbed(img_size, patch_size, 3, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim)) if num_register_tokens else None
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim), requires_grad=False)  # unused at inference, kept for strict loading
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, init_values=init_values, norm_eps=DINOV2_NORM_EPS) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=DINOV2_NORM_EPS)

    def interpolate_pos_embed(self, rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
        """Position embedding (1, 1 + rows*cols, D) for a rows x cols patch grid."""
        num_grid = self.pos_embed.shape[1] - 1
        side = int(math.sqrt(num_grid))
        if rows * cols == num_grid and rows == cols:
            return self.pos_embed
        pos = self.pos_embed.float()
        dim = pos.shape[-1]
        grid = pos[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", antialias=True)
        grid = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)
        return torch.cat([pos[:, :1], grid], dim=1).to(dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, H, W) -> final-normed patch tokens (B, H/p * W/p, D)."""
        rows, cols = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.interpolate_pos_embed(rows, cols, x.dtype)
        if self.register_tokens is not None:
            x = torch.cat([x[:, :1], self.register_tokens.expand(x.shape[0], -1, -1), x[:, 1:]], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 1 + self.num_register_tokens :]
