"""One declaration per option: type, default, allowed values, unit, description, stage.

Every settable thing (each model's keyword arguments, the mapping settings, the node's own
parameters) is a field of a frozen dataclass deriving from `Options`, declared with
`option(...)`.  That one declaration is what everything else reads:

* construction (`Options.create`, or the dataclass constructor) checks type, range, step,
  choices and non-emptiness, and refuses unknown names with the valid ones listed;
* the factory and the model's pipeline stages take their values from it;
* the ROS node derives each parameter's descriptor (range, step, choices, read-only) from it;
* the offline tool checks ``-p`` / ``--model-arg`` / parameter files with it;
* `options_markdown` renders the README's option tables from it.

Errors name the option (with its parameter prefix, e.g. ``model.conf_thres``), the value
and what is allowed, so the node, the CLI and the Python API report a bad value alike.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from .errors import InvalidOptionError, UnknownKwargError

BUILD = "build"  # a construction option: a change means building the model again
CALL = "call"  # a per-call option: can change with every reconstruct call
_STAGES = (BUILD, CALL)
_KINDS = (bool, int, float, str, tuple)
_METADATA_KEY = "option"

_OptionsT = TypeVar("_OptionsT", bound="Options")


@dataclass(frozen=True)
class OptionSpec:
    """What one option accepts; built from `option(...)` and the field's name and default.

    `kind` is bool, int, float, str or tuple (a list of strings).  `low`/`high` bound numbers
    (inclusive); `step` makes integers multiples of it counted from `low` (the ROS
    IntegerRange rule); `choices` lists the allowed strings; `nonempty` refuses "" (and
    empty lists or list entries); `path` also accepts os.PathLike for a str option;
    `python_types` are further types the Python API accepts as they are (e.g. a config
    object), which parameters cannot express.  `exposed` options are ROS / CLI parameters,
    the others Python-only; `restart` ones are read-only in the node.
    """

    name: str
    kind: type
    default: Any
    description: str
    unit: str = ""
    low: float | None = None
    high: float | None = None
    step: int | None = None
    choices: tuple[str, ...] | None = None
    nonempty: bool = False
    path: bool = False
    python_types: tuple[type, ...] = ()
    stage: str = CALL
    exposed: bool = True
    restart: bool = False

    def allowed(self) -> str:
        """What the option accepts, in words (used by errors, ROS descriptors and docs)."""
        if self.choices is not None:
            text = "one of " + ", ".join(choice or "''" for choice in self.choices)
        elif self.kind is bool:
            text = "true or false"
        elif self.kind is tuple:
            text = "a non-empty list of non-empty strings" if self.nonempty else "a list of strings"
        elif self.kind is str:
            text = "a non-empty string" if self.nonempty else "a string"
        else:
            text = "an integer" if self.kind is int else "a number"
            if self.low is not None and self.high is not None:
                text += f" in [{_number(self.low)}, {_number(self.high)}]"
            elif self.low is not None:
                text += f" >= {_number(self.low)}"
            if self.step:
                text += f", a multiple of {self.step}"
        return f"{text} ({self.unit})" if self.unit else text

    def check(self, value: Any, label: str) -> Any:
        """`value` converted to this option's kind, or InvalidOptionError naming `label`."""
        if self.python_types and isinstance(value, self.python_types):
            return value
        converted = self._convert(value)
        if converted is _INVALID or not self._within(converted):
            raise InvalidOptionError(f"{label}={value!r} is not allowed: expected {self.allowed()}")
        return converted

    def _convert(self, value: Any) -> Any:
        kind = self.kind
        if kind is bool:
            return bool(value) if isinstance(value, (bool, _NumpyBool)) else _INVALID
        if isinstance(value, bool):
            return _INVALID
        if kind is int:
            return int(value) if isinstance(value, numbers.Integral) else _INVALID
        if kind is float:
            return float(value) if isinstance(value, numbers.Real) and math.isfinite(float(value)) else _INVALID
        if kind is str:
            if self.path and isinstance(value, os.PathLike):
                return os.fspath(value)
            if not isinstance(value, str):
                return _INVALID
            return self._choice(value) if self.choices is not None else value
        if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
            return tuple(value)
        return _INVALID

    def _choice(self, value: str) -> Any:
        """The declared choice that `value` names (case, '-' and ' ' do not matter)."""
        wanted = _canonical(value)
        return next((choice for choice in self.choices or () if _canonical(choice) == wanted), _INVALID)

    def _within(self, value: Any) -> bool:
        if self.nonempty and (not value or (self.kind is tuple and not all(value))):
            return False
        if self.kind in (int, float):
            if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
                return False
            if self.step and (value - (self.low or 0)) % self.step:
                return False
        return True


class _Invalid:
    """Marker of a value that cannot be converted (None is a legitimate value elsewhere)."""


_INVALID = _Invalid()
try:  # numpy booleans are not bool subclasses; accept them where a bool is expected
    import numpy as _np

    _NumpyBool: type = _np.bool_
except ImportError:  # pragma: no cover - numpy is a hard dependency
    _NumpyBool = bool


def _canonical(text: str) -> str:
    return text.strip().lower().replace("-", "_").replace(" ", "_")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def option(
    default: Any,
    description: str,
    *,
    unit: str = "",
    low: float | None = None,
    high: float | None = None,
    step: int | None = None,
    choices: tuple[str, ...] | None = None,
    nonempty: bool = False,
    path: bool = False,
    python_types: tuple[type, ...] = (),
    stage: str = CALL,
    exposed: bool = True,
    restart: bool = False,
    kind: type | None = None,
) -> Any:
    """Declare a field of an `Options` dataclass (see `OptionSpec` for the arguments).

    The kind is the default's type unless given (a float option with an integral default
    must say ``kind=float``; list options default to a tuple).
    """
    if stage not in _STAGES:
        raise ValueError(f"stage must be one of {_STAGES}, got {stage!r}")
    resolved = kind or type(default)
    if resolved not in _KINDS:
        raise TypeError(f"option kind must be one of {[k.__name__ for k in _KINDS]}, got {resolved.__name__}")
    metadata = dict(
        kind=resolved, description=description, unit=unit, low=low, high=high, step=step, choices=choices,
        nonempty=nonempty, path=path, python_types=python_types, stage=stage, exposed=exposed, restart=restart,
    )
    return field(default=default, metadata={_METADATA_KEY: metadata})


@dataclass(frozen=True)
class Options:
    """Base of every option declaration: validates on construction, is immutable.

    Subclasses set `prefix` (the parameter group, e.g. "window.", "model.") and may
    override `check_together` for constraints between options.
    """

    prefix: ClassVar[str] = ""
    _specs_cache: ClassVar[tuple[OptionSpec, ...] | None] = None

    def __post_init__(self) -> None:
        for spec in self.specs():
            object.__setattr__(self, spec.name, spec.check(getattr(self, spec.name), self.label(spec.name)))
        self.check_together()

    def check_together(self) -> None:
        """Raise InvalidOptionError when options are valid alone but not together."""

    @classmethod
    def label(cls, name: str) -> str:
        """The option's name as parameters spell it."""
        return f"{cls.prefix}{name}"

    @classmethod
    def specs(cls) -> tuple[OptionSpec, ...]:
        """Every declared option of this class, in declaration order."""
        cached = cls.__dict__.get("_specs_cache")
        if cached is None:
            cached = tuple(
                OptionSpec(name=item.name, default=item.default, **item.metadata[_METADATA_KEY])
                for item in dataclasses.fields(cls)
                if _METADATA_KEY in item.metadata
            )
            cls._specs_cache = cached
        return cached

    @classmethod
    def spec(cls, name: str) -> OptionSpec:
        """The declaration of option `name` (UnknownKwargError if there is none)."""
        for spec in cls.specs():
            if spec.name == name:
                return spec
        raise cls.unknown([name])

    @classmethod
    def names(cls, *, stage: str | None = None, exposed: bool | None = None) -> list[str]:
        """Option names, optionally only those of one stage, or only (non-)exposed ones."""
        return [
            spec.name for spec in cls.specs()
            if (stage is None or spec.stage == stage) and (exposed is None or spec.exposed == exposed)
        ]

    @classmethod
    def unknown(cls, names: list[str], valid: list[str] | None = None, what: str = "option") -> UnknownKwargError:
        """The error for `names` not being options of this class (with close matches)."""
        valid = cls.names() if valid is None else valid
        hints = []
        for name in names:
            close = difflib.get_close_matches(name, valid, n=1)
            hints.append(f"{cls.label(name)}" + (f" (did you mean {cls.label(close[0])}?)" if close else ""))
        plural = "s" if len(names) > 1 else ""
        listing = ", ".join(cls.label(name) for name in valid) or "(none)"
        return UnknownKwargError(f"unknown {what}{plural} {', '.join(hints)}; valid ({cls.__name__}): {listing}")

    @classmethod
    def create(cls: type[_OptionsT], values: Mapping[str, Any], *, exposed_only: bool = False) -> _OptionsT:
        """An instance from `values` (the others keep their defaults); unknown names raise
        UnknownKwargError, bad values InvalidOptionError.  With `exposed_only`, Python-only
        options count as unknown (they are not parameters)."""
        valid = cls.names(exposed=True) if exposed_only else cls.names()
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise cls.unknown(unknown, valid, "parameter" if exposed_only else "option")
        return cls(**values)

    def changed(self: _OptionsT, **changes: Any) -> _OptionsT:
        """A copy with `changes` applied (checked like a new instance)."""
        unknown = sorted(set(changes) - set(self.names()))
        if unknown:
            raise self.unknown(unknown)
        return dataclasses.replace(self, **changes) if changes else self

    def values(self) -> dict[str, Any]:
        """{name: value} of the declared options."""
        return {spec.name: getattr(self, spec.name) for spec in self.specs()}

    def parameters(self) -> dict[str, Any]:
        """{prefixed name: value} of the exposed options, as parameter files write them
        (tuples as lists; a Python-only value of an exposed option as its default)."""
        out = {}
        for spec in self.specs():
            if spec.exposed:
                value = getattr(self, spec.name)
                if spec.python_types and isinstance(value, spec.python_types):
                    value = spec.default
                out[self.label(spec.name)] = list(value) if isinstance(value, tuple) else value
        return out


def options_markdown(cls: type[Options], *, exposed_only: bool = False, stage_column: bool = False) -> str:
    """A Markdown table of `cls`'s options: name, default, allowed values, description."""
    header = "| option | default | allowed | description |"
    rule = "| --- | --- | --- | --- |"
    if stage_column:
        header, rule = header[:-1] + " set |", rule + " --- |"
    rows = [header, rule]
    for spec in cls.specs():
        if exposed_only and not spec.exposed:
            continue
        default = list(spec.default) if isinstance(spec.default, tuple) else spec.default
        default_text = "`\"\"`" if default == "" else f"`{default!r}`" if isinstance(default, (str, list)) else f"`{default}`"
        description = spec.description.replace("|", "\\|")
        if not spec.exposed:
            description += " (Python API only)"
        row = f"| `{cls.label(spec.name)}` | {default_text} | {spec.allowed()} | {description} |"
        if stage_column:
            row += " construction |" if spec.stage == BUILD else " per call |"
        rows.append(row)
    return "\n".join(rows)

