"""Keyword-argument introspection, so that unknown kwargs fail early and list the valid ones."""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

# Positional data arguments of the pipeline stages; never user-settable keywords.
_NOT_KWARGS = {"self", "cls", "device", "images", "processed", "raw", "as_pointcloud"}


def keyword_names(function: Callable[..., Any]) -> list[str]:
    """The named parameters of `function` that a caller may pass by keyword."""
    names = []
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            if parameter.name not in _NOT_KWARGS:
                names.append(parameter.name)
    return names


def check_kwargs(
    kwargs: Mapping[str, Any],
    functions: Iterable[Callable[..., Any]],
    owner: str,
    error: type[Exception],
) -> None:
    """Raise `error` naming every kwarg not accepted by any of `functions`, and the valid ones."""
    valid = sorted({name for function in functions for name in keyword_names(function)})
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise error(
            f"unknown keyword argument{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"for {owner}; valid: {', '.join(valid) or '(none)'}"
        )
