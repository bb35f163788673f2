"""The model types offered by the factory."""
from __future__ import annotations

from enum import Enum

from .errors import UnknownModelTypeError


class SceneFromViewsType(str, Enum):
    """Feed-forward reconstruction model families.

    Members are also constructible from their lower-case names (``SceneFromViewsType("vggt")``),
    case-insensitively and with '-' or ' ' for '_', which is what ROS parameters carry.
    """

    DEPTH_ANYTHING_V3 = "depth_anything_v3"
    MAST3R = "mast3r"
    MVDUST3R = "mvdust3r"
    VGGT = "vggt"
    VGGT_ROBUST = "vggt_robust"
    DUST3R = "dust3r"
    FAST3R = "fast3r"

    @classmethod
    def _missing_(cls, value: object) -> SceneFromViewsType:
        if isinstance(value, str):
            normalised = value.strip().lower().replace("-", "_").replace(" ", "_")
            for member in cls:
                if normalised in (member.value, member.name.lower()):
                    return member
        valid = ", ".join(member.value for member in cls)
        raise UnknownModelTypeError(f"unknown model type {value!r}; valid types: {valid}")

    def __str__(self) -> str:
        return self.value
