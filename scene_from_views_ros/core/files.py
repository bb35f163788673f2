"""Files written so that they are never half-written: a temporary name, then a rename.

Every output of the package (PLY, TUM, JSON, YAML, depth maps, bags) goes through
`atomic_path`: readers never see a partial file, and a write that fails (a full disk, a
second Ctrl-C) leaves the previous file as it was.  JSON documents are strict (`strict_json`):
non-finite numbers become null and are counted, as JSON has no NaN or Infinity.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


def remove_path(path: Path) -> None:
    """Remove a file or a folder tree (nothing if it does not exist)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):  # cleaning up after a failed write: its error is already raised
        remove_path(path)


def _sync(path: Path) -> None:
    """Flush a written file to the disk, so that the rename never exposes unwritten data."""
    if path.is_file():
        with path.open("rb+") as stream:
            os.fsync(stream.fileno())


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, folder: bool = False) -> Iterator[Path]:
    """A temporary path to write `path` at, moved onto `path` when the block ends without an
    exception and removed otherwise.  A file's temporary name is beside it with the same
    suffix (writers such as OpenCV and numpy choose the format by it); a `folder` (a bag) is
    written under its own name inside a temporary folder beside it, as writers name the
    files inside after the folder."""
    path = Path(path)
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    staging = path.with_name(f".{path.name}.{token}.partial") if folder else None
    temporary = staging / path.name if staging is not None else path.with_name(f".{path.stem}.{token}.partial{path.suffix}")
    try:
        if staging is not None:
            staging.mkdir()
        yield temporary
        _sync(temporary)
        if folder and path.exists():
            # A folder cannot replace a folder in one step: move the old one aside first.
            previous = path.with_name(f".{path.name}.{token}.previous")
            path.rename(previous)
            temporary.rename(path)
            _remove(previous)
        else:
            os.replace(temporary, path)
    except BaseException:
        _remove(temporary)
        raise
    finally:
        if staging is not None:
            _remove(staging)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` to `path` atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as temporary:
        temporary.write_text(text)
    return path


def write_bytes(path: str | os.PathLike[str], *chunks: bytes | memoryview | np.ndarray) -> Path:
    """Write `chunks` one after another to `path` atomically; returns the path.  A chunk may be
    a C-contiguous numpy array (a structured array of records), written as its raw bytes
    without a copy."""
    path = Path(path)
    with atomic_path(path) as temporary, open(temporary, "wb") as stream:
        for chunk in chunks:
            stream.write(chunk.data if isinstance(chunk, np.ndarray) else chunk)
    return path


def _finite(value: Any, counter: list[int]) -> Any:
    if isinstance(value, dict):
        return {key: _finite(item, counter) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item, counter) for item in value]
    if isinstance(value, np.ndarray):
        return _finite(value.tolist(), counter)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        counter[0] += 1
        return None
    return value


def strict_json(document: Any) -> tuple[str, int]:
    """`document` as strict JSON text (indented), non-finite numbers written as null; also
    returns how many there were."""
    counter = [0]
    clean = _finite(document, counter)
    return json.dumps(clean, indent=1, allow_nan=False), counter[0]


def write_json(path: str | os.PathLike[str], document: dict[str, Any]) -> Path:
    """Write `document` as strict JSON, atomically; if it held non-finite numbers (written as
    null), `non_finite_values` says how many."""
    text, count = strict_json(document)
    if count:
        text, _ = strict_json({**document, "non_finite_values": count})
    return write_text(path, text)
