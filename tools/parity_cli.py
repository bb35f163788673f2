"""The command line shared by the parity tools (make_fast3r_fixtures.py, make_mvdust3r_fixtures.py):
`reference` and `reference-postprocess` run with the reference's Python (its checkout and the
stand-ins it needs put on sys.path), `compare` and `compare-postprocess` with this project's and
print their report as JSON; `synthetic` writes a synthetic window where a tool has one."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

Step = Callable[..., Any]


def parity_main(description: str, reference_name: str, cases: Iterable[str], steps: Mapping[str, Step]) -> None:
    """Parse the command line and run the chosen step of `steps` (names as the subcommands)."""
    parser = argparse.ArgumentParser(description=description)
    commands = parser.add_subparsers(dest="command", required=True)
    ref = commands.add_parser("reference", help="run the reference (its own Python)")
    ref.add_argument("case", choices=tuple(cases))
    ref.add_argument("--out", type=Path, required=True)
    ref.add_argument("--seed", type=int, default=0)
    commands.add_parser("compare", help="ours on a reference folder").add_argument("folder", type=Path)
    if "synthetic" in steps:
        commands.add_parser("synthetic", help="post-processing: a synthetic window (this project's Python)").add_argument(
            "--out", type=Path, required=True)
    reference_commands = [ref]
    if "reference-postprocess" in steps:
        post = commands.add_parser("reference-postprocess", help="post-processing: the reference's (its own Python)")
        post.add_argument("folder", type=Path)
        reference_commands.append(post)
        commands.add_parser("compare-postprocess", help="post-processing: ours, and both against the truth").add_argument("folder", type=Path)
    for command in reference_commands:
        command.add_argument("--reference", required=True, help=f"{reference_name} checkout")
        command.add_argument("--stubs", help="folder of stand-ins for what the reference imports but this does not use")
    args = parser.parse_args()
    if args.command in ("reference", "reference-postprocess"):
        sys.path[:0] = [p for p in (args.reference, args.stubs) if p]
    if args.command == "reference":
        steps["reference"](args.case, args.out, args.seed)
    elif args.command == "synthetic":
        steps["synthetic"](args.out)
    elif args.command == "reference-postprocess":
        steps["reference-postprocess"](args.folder)
    else:
        print(json.dumps(steps[args.command](args.folder), indent=2))
