"""Checkpoint resolution (hub repo id, local file or folder) and strict state-dict loading.

Shared by every model: a model names its default repo id and the weight file names it
accepts; the user passes ``checkpoint=`` as a Hugging Face repo id, a local file or a local
folder.  Loading is strict so that a wrong or corrupt file never yields a silently
half-initialised network.
"""
from __future__ import annotations

import argparse
import os
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch

from .errors import CheckpointCorruptError, CheckpointMismatchError, CheckpointNotFoundError

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Objects that official .pth checkpoints pickle beside their weights (DUSt3R stores its
# argparse namespace); allowed by name so that arbitrary unpickling stays disabled.
_SAFE_PICKLE_GLOBALS: list[object] = [argparse.Namespace]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time (HF_HUB_CACHE, HF_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"
    return Path(hf_home).expanduser() / "hub"


def _weights_in_folder(folder: Path, filenames: Sequence[str]) -> Path:
    for name in filenames:
        if (folder / name).is_file():
            return folder / name
    candidates = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise CheckpointNotFoundError(
            f"folder {folder} holds no weight file (looked for {', '.join(filenames)} or any "
            f"{'/'.join(WEIGHT_SUFFIXES)} file); pass the weight file itself as checkpoint="
        )
    raise CheckpointNotFoundError(
        f"folder {folder} holds several weight files ({', '.join(p.name for p in candidates)}); "
        "pass the one to load as checkpoint="
    )


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the hub's host accepts a TCP connection: a quick probe, so that a robot without
    internet fails in seconds instead of waiting out huggingface_hub's retries."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "huggingface.co", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _download_from_hub(repo_id: str, filenames: Sequence[str], revision: str | None) -> Path:
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    except ImportError as error:  # pragma: no cover - huggingface_hub is a hard dependency
        raise CheckpointNotFoundError(
            f"{repo_id!r} looks like a Hugging Face repo id but huggingface_hub is not installed: "
            "pip install huggingface_hub, or pass a local file/folder as checkpoint="
        ) from error
    cache_dir = hub_cache_dir()
    for filename in filenames:
        try:
            return Path(hf_hub_download(
                repo_id, filename, revision=revision, cache_dir=cache_dir, local_files_only=True,
            ))
        except LocalEntryNotFoundError:
            continue
    fix = (
        f"Download it on a machine with internet (huggingface-cli download {repo_id}) and copy the "
        "cache (HF_HOME), or pass a local file or folder as checkpoint= "
        "(ROS: model.checkpoint:=/path/to/model.safetensors)."
    )
    if _env_flag("HF_HUB_OFFLINE") or not hub_reachable():
        why = "HF_HUB_OFFLINE is set" if _env_flag("HF_HUB_OFFLINE") else "the hub is unreachable"
        raise CheckpointNotFoundError(
            f"cannot obtain weights for {repo_id!r}: {why} and no cached copy of "
            f"{' or '.join(filenames)} exists in {cache_dir}. {fix}"
        )
    reasons = []
    for filename in filenames:
        try:
            return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir))
        except EntryNotFoundError:
            reasons.append(f"{filename}: not in the repo")
        except Exception as error:  # network and auth stacks raise many kinds; report them alike
            reasons.append(f"{filename}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    raise CheckpointNotFoundError(f"cannot download weights for {repo_id!r} ({'; '.join(reasons)}). {fix}")


def resolve_checkpoint(
    checkpoint: str | os.PathLike[str],
    filenames: Sequence[str] = ("model.safetensors", "model.pt"),
    revision: str | None = None,
) -> Path:
    """Return the local path of the weight file named by `checkpoint`.

    `checkpoint` is a local weight file, a local folder holding one of `filenames` (or a single
    weight file), or a Hugging Face repo id ``owner/name`` downloaded into the standard cache
    (HF_HOME / HF_HUB_CACHE; HF_HUB_OFFLINE=1 uses the cache only).
    """
    path = Path(checkpoint).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        return _weights_in_folder(path, filenames)
    text = str(checkpoint)
    if _REPO_ID.match(text) and not text.startswith((".", "/", "~")) and not text.endswith(WEIGHT_SUFFIXES):
        return _download_from_hub(text, filenames, revision)
    raise CheckpointNotFoundError(
        f"checkpoint {text!r} is neither an existing file or folder nor a Hugging Face repo id "
        "(owner/name); check the path"
    )


def _unwrap_state_dict(loaded: object, source: Path) -> dict[str, torch.Tensor]:
    if isinstance(loaded, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            inner = loaded.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
        if loaded and all(isinstance(v, torch.Tensor) for v in loaded.values()):
            return dict(loaded)
    raise CheckpointCorruptError(
        f"{source} does not contain a state dict of tensors (found {type(loaded).__name__}); "
        "pass the model's weight file"
    )


def _reason(error: Exception) -> str:
    """One line of why reading failed (torch's unpickling errors span many lines of advice)."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {first_line}"


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a .safetensors or torch pickle file into a CPU state dict, without arbitrary unpickling."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        with torch.serialization.safe_globals(_SAFE_PICKLE_GLOBALS):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as error:
        raise CheckpointNotFoundError(f"checkpoint file {path} does not exist") from error
    except Exception as error:
        raise CheckpointCorruptError(
            f"cannot read checkpoint {path}: {_reason(error)}. The file is corrupt, truncated, not a "
            "weight file or pickles objects that are not allowed to load safely; download it again or "
            "pass another checkpoint"
        ) from error
    return _unwrap_state_dict(loaded, path)


def _listing(keys: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def load_state_dict_strict(
    module: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    drop_prefixes: Iterable[str] = (),
    source: str = "checkpoint",
) -> None:
    """Load `state_dict` into `module`, requiring every key and shape to match.

    Keys under `drop_prefixes` are removed first: the caller knowingly skips parts it did not
    build (e.g. a track head not needed at inference).  Anything else that differs raises
    CheckpointMismatchError naming the missing, unexpected and mis-shaped keys.
    """
    drop = tuple(drop_prefixes)
    state = {k: v for k, v in state_dict.items() if not (drop and k.startswith(drop))}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{k} (checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)})"
        for k in set(state) & set(expected)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_listing(unexpected)}")
        if misshaped:
            parts.append(f"mis-shaped keys: {_listing(misshaped)}")
        raise CheckpointMismatchError(
            f"{source} does not match {type(module).__name__}: " + "; ".join(parts)
            + ". Is it a checkpoint of another model or configuration?"
        )
    module.load_state_dict(state, strict=True)


def load_checkpoint_into(
    module: torch.nn.Module,
    checkpoint: str | os.PathLike[str],
    filenames: Sequence[str] = ("model.safetensors", "model.pt"),
    *,
    drop_prefixes: Iterable[str] = (),
) -> Path:
    """Resolve `checkpoint`, read it and load it strictly into `module`; returns the file used."""
    path = resolve_checkpoint(checkpoint, filenames)
    load_state_dict_strict(module, load_state_dict(path), drop_prefixes=drop_prefixes, source=str(path))
    return path
