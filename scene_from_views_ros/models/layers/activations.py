"""Output activations of dense heads (DPT) and pose heads."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def inverse_log_transform(y: torch.Tensor) -> torch.Tensor:
    """sign(y) * (exp(|y|) - 1): the inverse of a signed log1p, for unbounded coordinates."""
    return torch.sign(y) * torch.expm1(torch.abs(y))


def activate_values(x: torch.Tensor, activation: str) -> torch.Tensor:
    """Activate regression channels (last dim)."""
    if activation == "linear":
        return x
    if activation == "inv_log":
        return inverse_log_transform(x)
    if activation == "exp":
        return torch.exp(x)
    if activation == "relu":
        return F.relu(x)
    if activation == "norm_exp":
        norm = x.norm(dim=-1, keepdim=True).clamp(min=1e-8)
        return x / norm * torch.expm1(norm)
    raise ValueError(f"unknown activation {activation!r}; use linear, inv_log, exp, relu or norm_exp")


def activate_confidence(x: torch.Tensor, activation: str) -> torch.Tensor:
    """Activate a confidence channel: 'expp1' gives 1 + exp(x) (>= 1), as VGGT and DUSt3R do."""
    if activation == "expp1":
        return 1 + x.exp()
    if activation == "expp0":
        return x.exp()
    if activation == "sigmoid":
        return torch.sigmoid(x)
    raise ValueError(f"unknown confidence activation {activation!r}; use expp1, expp0 or sigmoid")
