"""Pre-norm transformer block with LayerScale (DINOv2 / VGGT layout)."""
from __future__ import annotations

from functools import partial

import torch
from torch import nn

from .attention import Attention
from .layer_scale import LayerScale
from .mlp import Mlp, SwiGLU
from .rope2d import RopeTables


class Block(nn.Module):
    """x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x))).

    `norm_eps` is the eps of norm1/norm2 (DINOv2: 1e-6, VGGT's own blocks: 1e-5, the
    PyTorch default); QK-norm LayerNorms keep the PyTorch default eps.  LayerScale is
    omitted when `init_values` is None (keys ls1/ls2 absent), as in the reference designs.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        init_values: float | None = None,
        qk_norm: bool = False,
        norm_eps: float = 1e-5,
        swiglu: bool = False,
    ) -> None:
        """`swiglu`: DINOv2-giant's SwiGLU feed-forward (keys mlp.w12, mlp.w3) instead of the MLP."""
        super().__init__()
        norm = partial(nn.LayerNorm, eps=norm_eps)
        self.norm1 = norm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias, qk_norm=qk_norm)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = norm(dim)
        self.mlp: nn.Module = SwiGLU(dim, int(dim * mlp_ratio), bias=ffn_bias) if swiglu else Mlp(dim, int(dim * mlp_ratio), bias=ffn_bias)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(self, x: torch.Tensor, rope: RopeTables | None = None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), rope=rope))
        return x + self.ls2(self.mlp(self.norm2(x)))
