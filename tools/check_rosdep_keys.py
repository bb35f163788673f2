"""Check that every dependency key of package.xml resolves with rosdep on the supported
distributions, against a checkout of ros/rosdistro, and record the verdicts.

A key resolves when it is a package released in the distribution (`<distro>/distribution.yaml`)
or a rosdep rule (`rosdep/base.yaml`, `rosdep/python.yaml`) with an installer for Ubuntu Noble,
the platform of Jazzy and Kilted (apt packages, or pip for the `-pip` keys).  Keys that name a
package of this repository (the interface package under interfaces/) are left out: they are
built from source beside ours, so rosdep skips them as it skips every package of the paths it
is given (`rosdep install --from-paths <paths> --ignore-src`).  Only the verdicts for our keys
are written (test/data/rosdep_keys.json, with the rosdistro commit and its date);
test/test_package.py checks package.xml against them, so a new key fails CI until it is checked
here.

  git clone --filter=blob:none https://github.com/ros/rosdistro /tmp/rosdistro
  .venv/bin/python tools/check_rosdep_keys.py /tmp/rosdistro [--write]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
KEYS_FILE = REPO / "test" / "data" / "rosdep_keys.json"
DISTRIBUTIONS = ("jazzy", "kilted")
PLATFORM = ("ubuntu", "noble")
DEPENDENCY_TAGS = ("buildtool_depend", "build_depend", "exec_depend", "depend", "test_depend", "build_export_depend")
# Files that make colcon, ament and catkin_pkg skip a folder (and everything below it).
IGNORE_MARKERS = ("COLCON_IGNORE", "AMENT_IGNORE", "CATKIN_IGNORE")


def package_keys(package_xml: Path = REPO / "package.xml") -> list[str]:
    """Every dependency key package.xml declares, in order, once."""
    root = ET.parse(package_xml).getroot()
    keys = [element.text.strip() for tag in DEPENDENCY_TAGS for element in root.iter(tag) if element.text]
    return list(dict.fromkeys(keys))


def workspace_packages(root: Path = REPO) -> dict[str, Path]:
    """The packages of this repository other than the root one, by name: every package.xml
    below `root` outside hidden folders and folders with an ignore marker (colcon writes one
    into its build, install and log folders; scripts/tf2_msgs has one, as it is built into the
    venv only)."""
    root_name = (ET.parse(root / "package.xml").getroot().findtext("name") or "").strip()
    found = {}
    for folder, subfolders, files in os.walk(root):
        if any(marker in files for marker in IGNORE_MARKERS):
            subfolders.clear()
            continue
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        if "package.xml" in files:
            name = (ET.parse(Path(folder) / "package.xml").getroot().findtext("name") or "").strip()
            if name and name != root_name:
                found[name] = Path(folder)
    return found


def rosdep_keys(package_xml: Path = REPO / "package.xml") -> list[str]:
    """The keys of package.xml that rosdep must resolve: all but this repository's own packages."""
    own = workspace_packages()
    return [key for key in package_keys(package_xml) if key not in own]


def released_packages(distribution: dict[str, Any]) -> set[str]:
    """Package names released (with a version) in a distribution.yaml (a repository without a
    package list releases one package of its own name)."""
    names = set()
    for repo_name, repo in distribution.get("repositories", {}).items():
        release = repo.get("release") or {}
        if release.get("version"):
            names.update(release.get("packages") or [repo_name])
    return names


def rule_installs(rule: Any) -> str | None:
    """How a rosdep rule installs on Ubuntu Noble: 'apt', 'pip' or None (no installer)."""
    os_name, codename = PLATFORM
    for scope in (os_name, "*"):
        if not isinstance(rule, dict) or scope not in rule:
            continue
        entry = rule[scope]
        if isinstance(entry, dict) and not ({"pip", "apt"} & set(entry)):
            entry = entry[codename] if codename in entry else entry.get("*")
        if entry is None:
            return None
        if isinstance(entry, list):
            return "apt" if entry else None
        if isinstance(entry, dict):
            if "pip" in entry:
                return "pip"
            if "apt" in entry:
                return "apt"
    return None


def verdicts(rosdistro: Path, keys: list[str]) -> dict[str, dict[str, str]]:
    """Per distribution and key: 'ros package', 'apt', 'pip' or 'unresolved'."""
    rules: dict[str, Any] = {}
    for name in ("base.yaml", "python.yaml"):
        rules.update(yaml.safe_load((rosdistro / "rosdep" / name).read_text()))
    result = {}
    for distro in DISTRIBUTIONS:
        released = released_packages(yaml.safe_load((rosdistro / distro / "distribution.yaml").read_text()))
        result[distro] = {key: "ros package" if key in released else (rule_installs(rules[key]) if key in rules else None) or "unresolved"
                          for key in keys}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rosdistro", type=Path, help="a checkout of https://github.com/ros/rosdistro")
    parser.add_argument("--write", action="store_true", help=f"record the verdicts in {KEYS_FILE.relative_to(REPO)}")
    args = parser.parse_args()
    keys = rosdep_keys()
    found = verdicts(args.rosdistro, keys)
    unresolved = sorted({key for distro in found.values() for key, verdict in distro.items() if verdict == "unresolved"})
    print(json.dumps(found, indent=1))
    if unresolved:
        print(f"unresolved on {', '.join(DISTRIBUTIONS)}: {', '.join(unresolved)}", file=sys.stderr)
    if args.write:
        def git(*command: str) -> str:
            return subprocess.run(["git", "-C", str(args.rosdistro), *command], capture_output=True, text=True, check=True).stdout.strip()

        KEYS_FILE.parent.mkdir(parents=True, exist_ok=True)
        record = {"rosdistro_commit": git("rev-parse", "HEAD"), "rosdistro_date": git("log", "-1", "--format=%cs"),
                  "platform": "/".join(PLATFORM), "verdicts": found}
        KEYS_FILE.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return 1 if unresolved else 0


if __name__ == "__main__":
    sys.exit(main())
