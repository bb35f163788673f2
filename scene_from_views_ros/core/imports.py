"""Import of optional dependencies with an error that says what to install."""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError


def import_optional(module: str, pip_name: str | None = None, purpose: str = "") -> ModuleType:
    """Import `module`, or raise MissingDependencyError naming the pip package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        what = f" (needed for {purpose})" if purpose else ""
        raise MissingDependencyError(
            f"optional dependency {module!r} is not installed{what}: "
            f"pip install {pip_name or module}  ({error})"
        ) from error
