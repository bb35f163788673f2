"""Fixed sine-cosine embeddings of 1D positions (MAE's get_1d_sincos_pos_embed_from_grid)."""
from __future__ import annotations

import torch


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(len, dim) float32: [sin(p * w), cos(p * w)] with w_i = 1 / 10000^(i / (dim / 2)), all sines
    first; computed in float64 as the references (numpy) do, then cast."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angles = torch.outer(positions.reshape(-1).double().cpu(), omega)
    return torch.cat([angles.sin(), angles.cos()], dim=1).float().to(positions.device)
