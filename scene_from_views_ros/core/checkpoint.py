"""Checkpoint resolution (hub repo id, local file or folder) and strict state-dict loading.

Shared by every model: a model names its default repo id and the weight file names it
accepts; the user passes ``checkpoint=`` as a Hugging Face repo id, a local file or a local
folder.  Loading is strict so that a wrong or corrupt file never yields a silently
half-initialised network.

`build_network` constructs a network on the meta device (no parameter is allocated or
initialised) and fills it with the checkpoint's tensors, read from a .safetensors file
straight into their final memory on the target device: building VGGT-1B costs about what
reading its file costs, in time and in memory (bench/bench_load.py).
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import re
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import torch

from .errors import CheckpointCorruptError, CheckpointMismatchError, CheckpointNotFoundError

logger = logging.getLogger(__name__)
_ModuleT = TypeVar("_ModuleT", bound=torch.nn.Module)
_ValueT = TypeVar("_ValueT")

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# A file inside a hub repo: owner/name/path/in/repo.pth (repos that hold several checkpoints).
_HUB_FILE = re.compile(r"^([A-Za-z0-9][\w.-]*/[\w.-]+)/([\w.-]+(?:/[\w.-]+)*)$")
# Objects that official .pth checkpoints pickle beside their weights (DUSt3R stores its
# argparse namespace); allowed by name so that arbitrary unpickling stays disabled.
_SAFE_PICKLE_GLOBALS: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [argparse.Namespace]


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


def _download_from_hub(repo_id: str, filenames: Sequence[str], revision: str | None, companions: Sequence[str] = ()) -> Path:
    """The first of `filenames` in the repo, from the cache or downloaded, with `companions`
    (e.g. config.json) fetched beside it when the repo has them."""
    path = _download_weights(repo_id, filenames, revision)
    for companion in companions:
        _download_companion(repo_id, companion, revision)
    return path


def _download_companion(repo_id: str, filename: str, revision: str | None) -> None:
    """Put `filename` of the repo beside its weights in the cache when it can be had; a model
    that needs it reports its absence with the fix."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache_dir = hub_cache_dir()
    try:
        hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir, local_files_only=True)
        return
    except LocalEntryNotFoundError:
        if _env_flag("HF_HUB_OFFLINE") or not hub_reachable():
            return
    try:
        hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir)
    except Exception as error:  # noqa: BLE001 - the network stack raises many kinds; the model reports what is missing
        logger.warning("cannot download %s of %s: %s", filename, repo_id, error)


def _download_weights(repo_id: str, filenames: Sequence[str], revision: str | None) -> Path:
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
            path = Path(hf_hub_download(
                repo_id, filename, revision=revision, cache_dir=cache_dir, local_files_only=True,
            ))
        except LocalEntryNotFoundError:
            continue
        logger.debug("using cached %s/%s: %s", repo_id, filename, path)
        return path
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
            logger.info("downloading %s from %s into %s", filename, repo_id, cache_dir)
            return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir))
        except EntryNotFoundError:
            reasons.append(f"{filename}: not in the repo")
        except Exception as error:  # noqa: BLE001 - network and auth stacks raise many kinds; report them alike
            reasons.append(f"{filename}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    raise CheckpointNotFoundError(f"cannot download weights for {repo_id!r} ({'; '.join(reasons)}). {fix}")


def resolve_checkpoint(
    checkpoint: str | os.PathLike[str],
    filenames: Sequence[str] = ("model.safetensors", "model.pt"),
    revision: str | None = None,
    companions: Sequence[str] = (),
) -> Path:
    """Return the local path of the weight file named by `checkpoint`.

    `checkpoint` is a local weight file, a local folder holding one of `filenames` (or a single
    weight file), or a Hugging Face repo id ``owner/name`` downloaded into the standard cache
    (HF_HOME / HF_HUB_CACHE; HF_HUB_OFFLINE=1 uses the cache only); from a repo the
    `companions` (e.g. config.json) come too, beside the weights; ``owner/name/path/file.pth``
    names one file of a repo that holds several (when no such local file exists).
    """
    path = Path(checkpoint).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        return _weights_in_folder(path, filenames)
    text = str(checkpoint)
    if _is_repo_id(text):
        return _download_from_hub(text, filenames, revision, companions)
    hub_file = _hub_file(text)
    if hub_file is not None:
        return _download_from_hub(hub_file[0], [hub_file[1]], revision, companions)
    raise CheckpointNotFoundError(
        f"checkpoint {text!r} is neither an existing file or folder nor a Hugging Face repo id "
        "(owner/name); check the path"
    )


def check_checkpoint_reference(checkpoint: str | os.PathLike[str], filenames: Sequence[str] = ("model.safetensors", "model.pt")) -> None:
    """Fail fast, without downloading or reading weights, when `checkpoint` can never resolve:
    a path that does not exist or a folder without weights (a repo id is checked when used)."""
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        _weights_in_folder(path, filenames)
    elif not path.is_file() and not _is_repo_id(str(checkpoint)) and _hub_file(str(checkpoint)) is None:
        resolve_checkpoint(checkpoint, filenames)  # raises its "neither a file nor a repo id" error


def _hub_file(text: str) -> tuple[str, str] | None:
    """(repo id, file path) of ``owner/name/path/file.ext`` naming a weight file in a hub repo."""
    match = _HUB_FILE.match(text)
    if match is None or text.startswith((".", "/", "~")) or not text.endswith(WEIGHT_SUFFIXES):
        return None
    return match.group(1), match.group(2)


def _is_repo_id(text: str) -> bool:
    return bool(_REPO_ID.match(text)) and not text.startswith((".", "/", "~")) and not text.endswith(WEIGHT_SUFFIXES)


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


_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
_MAX_HEADER_BYTES = 100 * 2**20


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor of a .safetensors file lies: dtype, shape and absolute byte range."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    end: int


def _corrupt(path: Path, why: str) -> CheckpointCorruptError:
    return CheckpointCorruptError(
        f"cannot read checkpoint {path}: {why}. The file is corrupt, truncated or not a weight file; "
        "download it again or pass another checkpoint"
    )


def safetensors_index(path: str | os.PathLike[str]) -> dict[str, TensorEntry]:
    """The tensors of a .safetensors file from its header alone (no tensor data is read)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            prefix = file.read(8)
            header_bytes = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
            if not 0 < header_bytes <= min(size - 8, _MAX_HEADER_BYTES):
                raise _corrupt(path, "no valid safetensors header")
            header = json.loads(file.read(header_bytes))
    except FileNotFoundError as error:
        raise CheckpointNotFoundError(f"checkpoint file {path} does not exist") from error
    except (OSError, ValueError) as error:
        if isinstance(error, CheckpointCorruptError):
            raise
        raise _corrupt(path, _reason(error)) from error
    base = 8 + header_bytes
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _SAFETENSORS_DTYPES[info["dtype"]]
            shape = tuple(int(n) for n in info["shape"])
            begin, end = (int(n) for n in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as error:
            raise _corrupt(path, f"tensor {name!r} has an invalid header entry ({_reason(error)})") from error
        if end - begin != math.prod(shape) * dtype.itemsize or base + end > size:
            raise _corrupt(path, f"tensor {name!r} needs bytes {begin}..{end} of the data, the file has {size - base}")
        entries[name] = TensorEntry(dtype, shape, base + begin, base + end)
    return entries


def _read_exactly(file: io.RawIOBase, buffer: memoryview, path: Path, name: str) -> None:
    done = 0
    while done < len(buffer):
        count = file.readinto(buffer[done:])
        if not count:
            raise _corrupt(path, f"the data of tensor {name!r} ends early")
        done += count


def read_safetensors(
    path: str | os.PathLike[str], entries: Mapping[str, TensorEntry], device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Read the tensors `entries` (from `safetensors_index`) into new tensors on `device`.

    Each tensor's bytes go straight from the file into the tensor's own memory (no memory
    map, no intermediate copy); for another device one tensor at a time passes through the
    host, so host memory never holds more than the largest tensor extra.
    """
    path, device = Path(path), torch.device(device)
    out: dict[str, torch.Tensor] = {}
    with path.open("rb", buffering=0) as file:
        for name, entry in sorted(entries.items(), key=lambda item: item[1].start):
            tensor = torch.empty(entry.shape, dtype=entry.dtype)
            file.seek(entry.start)
            _read_exactly(file, memoryview(tensor.reshape(-1).view(torch.uint8).numpy()), path, name)  # type: ignore[arg-type]
            out[name] = tensor if device.type == "cpu" else tensor.to(device)
    return out


def read_pickle(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> Any:
    """The whole object of a torch pickle (e.g. DUSt3R's {'model': ..., 'args': Namespace}),
    memory-mapped where the format allows (its metadata is read without reading the
    weights) and with only allow-listed globals: never arbitrary unpickling."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_SAFE_PICKLE_GLOBALS):
            try:  # memory-mapped: the pickle's tensors are not read twice
                return torch.load(path, map_location=device, weights_only=True, mmap=True)
            except RuntimeError:  # a legacy (non-zip) pickle cannot be memory-mapped
                return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError as error:
        raise CheckpointNotFoundError(f"checkpoint file {path} does not exist") from error
    except Exception as error:
        raise CheckpointCorruptError(
            f"cannot read checkpoint {path}: {_reason(error)}. The file is corrupt, truncated, not a "
            "weight file or pickles objects that are not allowed to load safely; download it again or "
            "pass another checkpoint"
        ) from error


def load_state_dict(
    path: str | os.PathLike[str], device: torch.device | str = "cpu", select: Callable[[str], bool] | None = None
) -> dict[str, torch.Tensor]:
    """Read a .safetensors or torch pickle file into a state dict on `device`, without
    arbitrary unpickling; `select` (key -> bool) reads only some keys of a .safetensors file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        entries = safetensors_index(path)
        return read_safetensors(path, {k: e for k, e in entries.items() if select is None or select(k)}, device)
    loaded = read_pickle(path, device)
    state = _unwrap_state_dict(loaded, path)
    return {k: v for k, v in state.items() if select is None or select(k)}


def _listing(keys: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def check_keys_and_shapes(
    expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], source: str, target: str
) -> None:
    """Raise CheckpointMismatchError naming the missing, unexpected and mis-shaped keys."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = sorted(
        f"{k} (checkpoint {tuple(found[k])} vs model {tuple(expected[k])})"
        for k in set(found) & set(expected)
        if tuple(found[k]) != tuple(expected[k])
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
            f"{source} does not match {target}: " + "; ".join(parts)
            + ". Is it a checkpoint of another model or configuration?"
        )


def _shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(tensor.shape) for key, tensor in state.items()}


def _not_dropped(drop_prefixes: Iterable[str]) -> Callable[[str], bool]:
    drop = tuple(drop_prefixes)
    return lambda key: not (drop and key.startswith(drop))


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
    keep = _not_dropped(drop_prefixes)
    state = {k: v for k, v in state_dict.items() if keep(k)}
    if len(state) < len(state_dict):
        logger.info("%s: %d keys under %s dropped (not built)", source, len(state_dict) - len(state), ", ".join(drop_prefixes))
    check_keys_and_shapes(_shapes(module.state_dict()), _shapes(state), source, type(module).__name__)
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


def _renamed(items: Mapping[str, _ValueT], rename: Callable[[str], str] | None) -> dict[str, _ValueT]:
    """`items` under `rename`d keys; keys that become equal (aliases of one tensor) collapse."""
    if rename is None:
        return dict(items)
    out: dict[str, _ValueT] = {}
    for key, value in items.items():
        out.setdefault(rename(key), value)
    return out


def build_network(
    build: Callable[[], _ModuleT],
    path: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    *,
    drop_prefixes: Iterable[str] = (),
    rename: Callable[[str], str] | None = None,
) -> _ModuleT:
    """`build()` on the meta device, then filled with the weight file `path` on `device`.

    No parameter is initialised only to be overwritten, and a .safetensors file is checked
    against the network from its header before any tensor is read; tensors are read
    straight to `device` and converted to the network's dtype where the file differs
    (e.g. float16 fixtures).  `rename` maps checkpoint keys to the network's (aliases of
    one tensor map to one key).  Returns the network in eval mode without gradients.
    """
    path, device = Path(path), torch.device(device)
    with torch.device("meta"):
        module = build()
    expected = module.state_dict()
    keep = _not_dropped(drop_prefixes)
    target = type(module).__name__
    if path.suffix == ".safetensors":
        entries = safetensors_index(path)
        selected = _renamed({k: e for k, e in entries.items() if keep(k)}, rename)
        check_keys_and_shapes(_shapes(expected), {k: e.shape for k, e in selected.items()}, str(path), target)
        dropped = sum(1 for k in entries if not keep(k))
        state = read_safetensors(path, selected, device)
    else:
        everything = load_state_dict(path, device)
        # a pickle is read memory-mapped: copy each tensor into memory of its own, so that the
        # network neither depends on the file staying as it is nor counts its pages as its own
        state = _renamed({k: v.clone() if v.device.type == "cpu" else v for k, v in everything.items() if keep(k)}, rename)
        dropped = sum(1 for k in everything if not keep(k))
        check_keys_and_shapes(_shapes(expected), _shapes(state), str(path), target)
    if dropped:
        logger.info("%s: %d keys under %s dropped (not built)", path, dropped, ", ".join(drop_prefixes))
    for key, tensor in state.items():
        if tensor.dtype != expected[key].dtype:
            state[key] = tensor.to(expected[key].dtype)
    module.load_state_dict(state, strict=True, assign=True)
    unfilled = [name for name, tensor in (*module.named_parameters(), *module.named_buffers()) if tensor.is_meta]
    if unfilled:  # a non-persistent buffer: such constants belong in forward (or the state dict)
        raise RuntimeError(f"{target} tensors not in its state dict stay unallocated: {_listing(unfilled)}")
    return module.eval().requires_grad_(False)
