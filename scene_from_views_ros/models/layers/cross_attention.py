"""Cross-attention and the CroCo decoder block (key names: projq, projk, projv, proj; norm_y).

Shared by the CroCo family (DUSt3R, MASt3R, MV-DUSt3R): each decoder block attends to its
own view, then to the other view's tokens ("memory"), then runs its MLP.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention
from .mlp import Mlp
from .rope2d import RopeTables, apply_rope2d


class CrossAttention(nn.Module):
    """Queries from one token set, keys and values from another, separate q/k/v projections."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.projq = nn.Linear(dim, dim, bias=qkv_bias)
        self.projk = nn.Linear(dim, dim, bias=qkv_bias)
        self.projv = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self, query: torch.Tensor, memory: torch.Tensor, query_rope: RopeTables | None, memory_rope: RopeTables | None
    ) -> torch.Tensor:
        q, k, v = self.split_heads(self.projq(query)), self.split_heads(self.projk(memory)), self.split_heads(self.projv(memory))
        if query_rope is not None and memory_rope is not None:
            q, k = apply_rope2d(q, query_rope), apply_rope2d(k, memory_rope)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(query.shape))


class DecoderBlock(nn.Module):
    """x + attn(norm1 x); x + cross_attn(norm2 x, norm_y memory); x + mlp(norm3 x)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, norm_memory: bool = True, norm_eps: float = 1e-6) -> None:
        super().__init__()
        norm = partial(nn.LayerNorm, eps=norm_eps)
        self.norm1 = norm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=True)
        self.cross_attn = CrossAttention(dim, num_heads, qkv_bias=True)
        self.norm2 = norm(dim)
        self.norm3 = norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_y = norm(dim) if norm_memory else nn.Identity()

    def forward(self, x: torch.Tensor, memory: torch.Tensor, rope: RopeTables | None, memory_rope: RopeTables | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope=rope)
        memory = self.norm_y(memory)
        x = x + self.cross_attn(self.norm2(x), memory, rope, memory_rope)
        return x + self.mlp(self.norm3(x))
