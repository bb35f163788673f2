"""Which recordings a fleet run maps: paths, glob patterns and manifest files, each recording
with its own name (its output folder) and input options.

A manifest is a YAML (or JSON) file::

    recordings:
      - path: /data/robot1/2026-11-30_run1.mcap   # a bag, a video or an image folder
        name: robot1_run1                         # optional; default: the file name
        topic: /front/image_raw/compressed        # optional bag topic (and camera_info_topic)
        start: 10.0                               # optional time range (seconds from the first frame)
        end: 70.0
        step: 2                                   # optional: every 2nd frame; max_frames too
      - path: /data/robot2/*.mp4                  # a pattern: one recording per match
      - sample: true                              # the built-in rendered sequence (frames, size)

A relative path in a manifest is relative to the manifest's folder.  Names must be unique
(a repeated default name gets _2, _3, ...); an explicit repeated name is an error.
"""
from __future__ import annotations

import glob
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ..io.sources import InputError, Selection
from ..mapping.settings import read_yaml_file

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
SAMPLE = "sample"
_GLOB = re.compile(r"[*?\[]")
_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Recording:
    """One recording to map into OUT/<name>/."""

    name: str
    path: str = ""  # '' for the built-in sample
    topic: str | None = None
    camera_info_topic: str | None = None
    start: float = 0.0
    end: float | None = None
    step: int = 1
    max_frames: int | None = None
    sample_frames: int = 90
    sample_size: tuple[int, int] = (256, 192)

    @property
    def is_sample(self) -> bool:
        return not self.path

    @property
    def selection(self) -> Selection:
        return Selection(self.step, self.start, self.end, self.max_frames)

    def options(self) -> dict[str, Any]:
        """Its options as the fleet summary reports them (defaults left out)."""
        defaults = Recording(self.name)
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != getattr(defaults, f.name)}


def safe_name(text: str) -> str:
    """A folder name from a recording's path or a user's name."""
    name = _NAME.sub("_", text).strip("._")
    return name or "recording"


def is_pattern(text: str) -> bool:
    """Whether `text` is a glob pattern rather than a path (one that exists is a path)."""
    return bool(_GLOB.search(text)) and not Path(text).expanduser().exists()


def _expand(pattern: str, base: Path | None = None) -> list[Path]:
    """The paths a (possibly relative, possibly glob) `pattern` names; InputError when none."""
    path = Path(pattern).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    if path.exists():
        return [path]
    if _GLOB.search(str(path)):
        matches = sorted(Path(match) for match in glob.glob(str(path), recursive=True))
        if not matches:
            raise InputError(f"the pattern {pattern!r} matches no file")
        return matches
    raise InputError(f"input {pattern!r} does not exist")


def _default_name(path: Path) -> str:
    return safe_name(path.name[: -len(path.suffix)] if path.suffix and not path.is_dir() else path.name)


_ENTRY_KEYS = {"path", "name", "topic", "camera_info_topic", "start", "end", "step", "max_frames", "sample", "sample_frames", "sample_size"}


def _from_manifest(manifest: Path) -> list[tuple[Recording, bool]]:
    document = read_yaml_file(manifest)
    entries = document.get("recordings") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InputError(f"manifest {manifest} has no recordings: expected 'recordings:' with a list of entries (path: ..., name: ...)")
    recordings = []
    for number, entry in enumerate(entries, 1):
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, dict):
            raise InputError(f"manifest {manifest}, recording {number}: expected a path or a mapping, got {entry!r}")
        unknown = sorted(set(entry) - _ENTRY_KEYS)
        if unknown:
            raise InputError(f"manifest {manifest}, recording {number}: unknown key(s) {', '.join(unknown)}; "
                             f"allowed: {', '.join(sorted(_ENTRY_KEYS))}")
        options = {key: value for key, value in entry.items() if key not in ("path", "name", "sample")}
        if "sample_size" in options:
            options["sample_size"] = tuple(options["sample_size"])
        if entry.get("sample"):
            recordings.append((_recording(entry.get("name") or SAMPLE, "", options, manifest, number), "name" in entry))
            continue
        if "path" not in entry:
            raise InputError(f"manifest {manifest}, recording {number}: no path (or sample: true)")
        matches = _expand(str(entry["path"]), manifest.parent)
        if "name" in entry and len(matches) > 1:
            raise InputError(f"manifest {manifest}, recording {number}: name {entry['name']!r} given to a pattern with {len(matches)} matches")
        for path in matches:
            recordings.append((_recording(entry.get("name") or _default_name(path), str(path), options, manifest, number), "name" in entry))
    return recordings


def _recording(name: Any, path: str, options: dict[str, Any], manifest: Path, number: int) -> Recording:
    try:
        recording = Recording(safe_name(str(name)), path, **options)
        recording.selection  # noqa: B018 - checks step and range
    except (TypeError, ValueError, InputError) as error:
        raise InputError(f"manifest {manifest}, recording {number}: {error}") from error
    return recording


def expand_recordings(inputs: Sequence[str], *, sample: Recording | None = None, common: dict[str, Any] | None = None) -> list[Recording]:
    """The recordings of `inputs` (paths, glob patterns, manifest files; `common` holds the
    command line's input options for them) plus the built-in `sample`, with unique names."""
    named: list[tuple[Recording, bool]] = [(sample, False)] if sample is not None else []
    for text in inputs:
        for path in _expand(text):
            if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
                named.extend(_from_manifest(path))
            else:
                named.append((Recording(_default_name(path), str(path), **(common or {})), False))
    recordings, taken = [], set()
    for recording, explicit in named:
        name = recording.name
        if name in taken:
            if explicit:
                raise InputError(f"two recordings are named {name!r}; names must be unique (they are the output folders)")
            suffix = 2
            while f"{name}_{suffix}" in taken:
                suffix += 1
            name = f"{name}_{suffix}"
        taken.add(name)
        recordings.append(recording if name == recording.name else replace(recording, name=name))
    return recordings
