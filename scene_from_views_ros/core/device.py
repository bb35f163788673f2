"""Choice of the torch device: CUDA when present, the CPU otherwise."""
from __future__ import annotations

import torch

from .errors import SceneFromViewsError


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """None or "auto" picks cuda when available else cpu; an unavailable CUDA request is an error."""
    if device is None or (isinstance(device, str) and device.strip().lower() in ("", "auto")):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise SceneFromViewsError(f"invalid device {device!r}: use 'cpu', 'cuda', 'cuda:N' or 'auto'") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise SceneFromViewsError(f"device {device!r} requested but CUDA is not available; use device='cpu'")
    return resolved
