"""2D rotary position embedding (RoPE) over (row, column) patch positions.

The first half of each head's channels is rotated by the row index, the second half by
the column index, each half with the rotate-half convention of RoPE-ViT / CroCo-style
implementations.  The cos/sin tables for a set of positions are computed once per forward
(`tables`) and shared by every block, instead of being gathered again in each attention.
"""
from __future__ import annotations

from typing import NamedTuple

import torch


class RopeTables(NamedTuple):
    """cos/sin for rows and columns, each (B, 1, N, head_dim/2), broadcast over heads."""

    cos_y: torch.Tensor
    sin_y: torch.Tensor
    cos_x: torch.Tensor
    sin_x: torch.Tensor


def grid_positions(batch: int, rows: int, cols: int, num_prefix: int, device: torch.device) -> torch.Tensor:
    """Integer (row, col) positions (B, num_prefix + rows*cols, 2).

    Patches get their grid index plus one; the `num_prefix` special tokens (camera,
    registers) get position 0, which makes RoPE act on them as the identity.
    """
    rr, cc = torch.meshgrid(torch.arange(rows, device=device), torch.arange(cols, device=device), indexing="ij")
    patch = torch.stack([rr.reshape(-1), cc.reshape(-1)], dim=-1) + 1
    special = torch.zeros(num_prefix, 2, dtype=patch.dtype, device=device)
    return torch.cat([special, patch], dim=0).unsqueeze(0).expand(batch, -1, -1)


class Rope2D:
    """RoPE with base frequency `base` (VGGT uses 100); stateless apart from a table cache."""

    def __init__(self, base: float = 100.0) -> None:
        self.base = float(base)
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _frequencies(self, dim: int, length: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (dim, length, device, dtype)
        if key not in self._cache:
            exponents = torch.arange(0, dim, 2, device=device).float() / dim
            inv_freq = 1.0 / (self.base**exponents)
            angles = torch.outer(torch.arange(length, device=device, dtype=inv_freq.dtype), inv_freq)
            angles = torch.cat([angles, angles], dim=-1).to(dtype)
            self._cache[key] = (angles.cos(), angles.sin())
        return self._cache[key]

    def tables(self, positions: torch.Tensor, head_dim: int, dtype: torch.dtype) -> RopeTables:
        """Gather the cos/sin tables for `positions` (B, N, 2) and heads of width `head_dim`."""
        if head_dim % 4:
            raise ValueError(f"2D RoPE needs a head dimension divisible by 4, got {head_dim}")
        cos, sin = self._frequencies(head_dim // 2, int(positions.max()) + 1, positions.device, dtype)
        rows, cols = positions[..., 0], positions[..., 1]
        return RopeTables(cos[rows][:, None], sin[rows][:, None], cos[cols][:, None], sin[cols][:, None])


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope2d(x: torch.Tensor, tables: RopeTables) -> torch.Tensor:
    """Rotate x (B, heads, N, head_dim): rows act on the first half, columns on the second."""
    y, xx = x.chunk(2, dim=-1)
    y = y * tables.cos_y + _rotate_half(y) * tables.sin_y
    xx = xx * tables.cos_x + _rotate_half(xx) * tables.sin_x
    return torch.cat([y, xx], dim=-1)
