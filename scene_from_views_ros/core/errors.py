"""Exceptions of the scene_from_views API.

Every error names the problem and the fix, so that the ROS node can log it verbatim and a
user of the Python API knows what to change.  They subclass the built-in exception a caller
would naturally catch (ValueError, TypeError, ...) as well as `SceneFromViewsError`.
"""
from __future__ import annotations


class SceneFromViewsError(Exception):
    """Base class of all errors raised by scene_from_views_ros."""


class UnknownModelTypeError(SceneFromViewsError, ValueError):
    """The requested model type does not exist."""


class ModelNotImplementedError(SceneFromViewsError, NotImplementedError):
    """The model type exists in the API but has no implementation in this release."""


class UnknownKwargError(SceneFromViewsError, TypeError):
    """A keyword argument is not accepted by the model or optimizer."""


class MissingDependencyError(SceneFromViewsError, ImportError):
    """An optional Python package needed by the requested feature is not installed."""


class InvalidImageError(SceneFromViewsError, ValueError):
    """An input image has the wrong type, shape, dtype or encoding, or there is none."""


class CheckpointError(SceneFromViewsError):
    """Base class of checkpoint resolution and loading errors."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint is neither a local file/folder nor obtainable from the hub."""


class CheckpointCorruptError(CheckpointError, ValueError):
    """The checkpoint file exists but cannot be read as a state dict."""


class CheckpointMismatchError(CheckpointError, ValueError):
    """The checkpoint's keys or shapes do not match the network being loaded."""


class InvalidOptionError(SceneFromViewsError, ValueError):
    """An option or parameter has a value of the wrong type, out of range or not among its choices."""
