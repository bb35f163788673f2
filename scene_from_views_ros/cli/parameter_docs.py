"""Parameter files and README tables, generated from the option declarations.

    python -m scene_from_views_ros.cli.parameter_docs --write   # after changing a declaration
    python -m scene_from_views_ros.cli.parameter_docs --check   # exit 1 if a file is stale

Writes ``config/scene_from_views.yaml`` (every parameter shared by all models, with its
description), ``config/models/<model_type>.yaml`` (that model's ``model.*`` parameters) and
the parameter tables of README.md, between ``<!-- parameters:begin -->`` and
``<!-- parameters:end -->``.  The test suite checks that all of them are current.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from ..core.factory import implemented_types, model_class
from ..core.options import OptionSpec, options_markdown
from ..core.types import SceneFromViewsType
from ..mapping.settings import DEFAULT_NODE_NAME, FIXED_PARAMETERS, PARAMETER_GROUPS, Parameter, parameters

README_BEGIN = "<!-- parameters:begin -->"
README_END = "<!-- parameters:end -->"
GENERATED = "generated from the option declarations by `python -m scene_from_views_ros.cli.parameter_docs --write`"
_WIDTH = 100


def _scalar(value: Any) -> str:
    """A YAML flow scalar that reads back as the same value and type."""
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text[: -len("...")].strip() if text.endswith("...") else text


def _comment(spec: OptionSpec, indent: str) -> list[str]:
    text = f"{spec.description} Allowed: {spec.allowed()}." + (" (read-only: restart to change)" if spec.restart else "")
    return textwrap.wrap(text, _WIDTH - len(indent) - 2, initial_indent=f"{indent}# ", subsequent_indent=f"{indent}# ")


def _yaml_body(entries: Iterable[Parameter], overrides: dict[str, Any] | None = None) -> list[str]:
    """Nested YAML lines of `entries` under ``ros__parameters`` (first dotted part = block)."""
    overrides = overrides or {}
    lines: list[str] = []
    block = None
    for entry in entries:
        head, dot, rest = entry.name.partition(".")
        if dot and head != block:
            lines.append(f"\n    {head}:")
        elif not dot and block is not None:
            lines.append("")
        block = head if dot else None
        indent = "      " if dot else "    "
        lines += _comment(entry.spec, indent)
        value = overrides.get(entry.name, entry.spec.default)
        lines.append(f"{indent}{rest if dot else head}: {_scalar(value)}")
    return lines


def shared_parameter_file() -> str:
    """config/scene_from_views.yaml: every parameter that all model types share."""
    entries = [p for p in parameters() if p.name in FIXED_PARAMETERS]
    header = [
        f"# Parameters of scene_from_views_node shared by every model type, with their defaults ({GENERATED}).",
        "# A model's own parameters (model.*) are in config/models/<model_type>.yaml; the launch file loads both.",
        "#   ros2 run scene_from_views_ros scene_from_views_node --ros-args --params-file config/scene_from_views.yaml",
        "# Lengths are in map units: metres for metric models, the model's own scale otherwise.",
        f"{DEFAULT_NODE_NAME}:",
        "  ros__parameters:",
    ]
    return "\n".join(header + _yaml_body(entries)) + "\n"


def model_parameter_file(model_type: SceneFromViewsType | str) -> str:
    """config/models/<model_type>.yaml: the model type and its model.* parameters."""
    model_type = SceneFromViewsType(model_type)
    cls = model_class(model_type)
    entries = [p for p in parameters(model_type) if p.name == "model_type" or p.name not in FIXED_PARAMETERS]
    header = [
        f"# Parameters of scene_from_views_node for model_type {model_type.value} ({cls.__name__}) ({GENERATED}).",
        "# Load after config/scene_from_views.yaml; model.* are the model's options (model.<name> = keyword argument).",
        f"{DEFAULT_NODE_NAME}:",
        "  ros__parameters:",
    ]
    return "\n".join(header + _yaml_body(entries, {"model_type": model_type.value})) + "\n"


def readme_tables() -> str:
    """The README's parameter tables: the shared groups, then each implemented model's options."""
    parts = [README_BEGIN, ""]
    for group in PARAMETER_GROUPS:
        doc = (group.__doc__ or group.__name__).strip().splitlines()[0]
        parts += [f"**{group.__name__}**: {doc}", "", options_markdown(group, exposed_only=True), ""]
    for model_type in implemented_types():
        cls = model_class(model_type)
        parts += [
            f"**`model_type: {model_type.value}`** ({cls.__name__}; `config/models/{model_type.value}.yaml`):", "",
            options_markdown(cls.options_class, stage_column=True), "",
        ]
    parts.append(README_END)
    return "\n".join(parts)


def expected_files(root: Path) -> dict[Path, str]:
    """Every generated file under the repository `root` and the text it must hold."""
    files = {root / "config" / "scene_from_views.yaml": shared_parameter_file()}
    for model_type in implemented_types():
        files[root / "config" / "models" / f"{model_type.value}.yaml"] = model_parameter_file(model_type)
    readme = root / "README.md"
    text = readme.read_text()
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise SystemExit(f"{readme} lacks the {README_BEGIN} ... {README_END} markers")
    files[readme] = text[:start] + readme_tables() + text[end + len(README_END):]
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2], help="repository root")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="write the files")
    mode.add_argument("--check", action="store_true", help="exit 1 if a file differs from the declarations")
    args = parser.parse_args(argv)
    stale = []
    for path, text in expected_files(args.root).items():
        if path.is_file() and path.read_text() == text:
            continue
        stale.append(path)
        if args.write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(f"{'wrote' if args.write else 'stale'}: {path}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
