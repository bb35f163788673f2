"""Network blocks shared across model families (ViT/DINOv2, attention, RoPE, DPT)."""
from .activations import activate_confidence, activate_values, inverse_log_transform
from .attention import Attention
from .block import Block
from .dinov2 import DinoVisionTransformer
from .dpt import DPTHead, interpolate_bilinear
from .layer_scale import LayerScale
from .mlp import Mlp
from .patch_embed import PatchEmbed
from .rope2d import Rope2D, RopeTables, apply_rope2d, grid_positions
from .sincos import sincos_1d

__all__ = [
    "Attention",
    "Block",
    "DPTHead",
    "DinoVisionTransformer",
    "LayerScale",
    "Mlp",
    "PatchEmbed",
    "Rope2D",
    "RopeTables",
    "activate_confidence",
    "activate_values",
    "apply_rope2d",
    "grid_positions",
    "interpolate_bilinear",
    "inverse_log_transform",
    "sincos_1d",
]
