"""The scene_from_views core API (no ROS imports here)."""
from .base import ModelOptions, SceneFromViewsBase
from .cameras import KnownCameras
from .checkpoint import load_checkpoint_into, load_state_dict, load_state_dict_strict, resolve_checkpoint
from .device import resolve_device
from .errors import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    InvalidImageError,
    InvalidOptionError,
    MissingDependencyError,
    ModelNotImplementedError,
    SceneFromViewsError,
    UnknownKwargError,
    UnknownModelTypeError,
)
from .factory import implemented_types, model_class, scene_from_views_factory
from .images import load_images
from .options import Options, option
from .result import PointCloud, SceneFromViewsResult
from .types import SceneFromViewsType

__all__ = [
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "InvalidImageError",
    "InvalidOptionError",
    "KnownCameras",
    "MissingDependencyError",
    "ModelNotImplementedError",
    "ModelOptions",
    "Options",
    "PointCloud",
    "SceneFromViewsBase",
    "SceneFromViewsError",
    "SceneFromViewsResult",
    "SceneFromViewsType",
    "UnknownKwargError",
    "UnknownModelTypeError",
    "implemented_types",
    "load_checkpoint_into",
    "load_images",
    "load_state_dict",
    "load_state_dict_strict",
    "model_class",
    "option",
    "resolve_checkpoint",
    "resolve_device",
    "scene_from_views_factory",
]
