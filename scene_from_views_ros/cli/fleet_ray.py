"""Fleet mapping on Ray: one actor per model replica keeps the model loaded across recordings.

The driver (this process) reads each recording, selects keyframes, chains the windows and
writes the outputs; a replica only reconstructs windows.  A window goes to its recording's
replica as a list of numpy images (and known intrinsics) and comes back as a dict of numpy
arrays (`result_to_arrays`): Ray moves those through its object store without copying, and
no Python object of ours is pickled.  A replica that dies is restarted by Ray (max_restarts)
and its recording mapped again from the start (cli/fleet.py).

Without an address Ray starts embedded in this process (`ray.init()`, resources of this
machine); `auto` or `ray://host:port` joins a cluster, whose workers must reach the model
weights (a Hugging Face id, or a path on storage they share).
"""
from __future__ import annotations

import argparse
import re
import time
from typing import Any

import numpy as np

from ..core.errors import SceneFromViewsError
from ..core.imports import import_optional
from ..core.result import PointCloud, SceneFromViewsResult
from ..io.sources import InputError
from .fleet import WorkerLost
from .map import LoadedModel

RAY_INSTALL = "ray"  # also: pip install .[ray]
REVIVE_S = 120.0  # how long a restarted replica may take to load its model again
_LISTS = ("camera_poses", "processed_images", "depth_predictions", "point_clouds", "intrinsics", "confidences")


def result_to_arrays(result: SceneFromViewsResult) -> dict[str, Any]:
    """A result as plain numpy arrays (lists of per-view arrays), the wire format to the driver."""
    arrays: dict[str, Any] = {name: [np.asarray(value) for value in getattr(result, name)] for name in _LISTS}
    if result.masks is not None:
        arrays["masks"] = [np.asarray(mask) for mask in result.masks]
    for name in ("rejected_indices", "survivor_indices"):
        if getattr(result, name) is not None:
            arrays[name] = np.asarray(getattr(result, name), np.int64)
    # the per-view arrays among the extras (the preprocessing's scales and offsets, sky masks, ...)
    arrays["extras"] = {key: value for key, value in result.extras.items() if isinstance(value, np.ndarray)}
    return arrays


def result_from_arrays(arrays: dict[str, Any]) -> SceneFromViewsResult:
    """The result `result_to_arrays` sent (without the fused cloud: the mapper fuses its own)."""
    indices = {name: [int(i) for i in arrays[name]] for name in ("rejected_indices", "survivor_indices") if name in arrays}
    return SceneFromViewsResult(
        global_point_cloud=PointCloud(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)),
        **{name: list(arrays[name]) for name in _LISTS}, masks=arrays.get("masks"), **indices, extras=dict(arrays["extras"]),
    )


class ReplicaStartError(SceneFromViewsError, RuntimeError):
    """The model could not be built on a Ray worker (missing weights, a bad option, no GPU)."""


def cause_line(error: Exception) -> str:
    """The original exception's line inside a Ray error (which carries the remote traceback)."""
    lines = [line.strip() for line in str(error).splitlines() if re.match(r"^\s*[\w.]*(Error|Exception): ", line)]
    return lines[-1] if lines else str(error).splitlines()[0]


class ModelReplica:
    """The Ray actor: the model and optimizer built from the run's parameters, with as many
    torch threads as the CPUs it was given."""

    def __init__(self, params: dict[str, Any], threads: int) -> None:
        import torch

        from ..mapping.settings import settings_from_parameters
        from .map import load_model

        torch.set_num_threads(max(1, threads))
        self.settings = settings_from_parameters(params)
        self.loaded = load_model(self.settings, None)

    def describe(self) -> dict[str, Any]:
        model = self.loaded.model
        return {"description": self.loaded.description, "is_metric": bool(getattr(model, "is_metric", False)),
                "uses_known_intrinsics": bool(model.uses_known_intrinsics(self.loaded.reconstruct_kwargs["optimizer"]))}

    def reconstruct(self, images: list[np.ndarray], known_intrinsics: list[np.ndarray] | None) -> dict[str, Any]:
        known = {} if known_intrinsics is None else {"known_intrinsics": known_intrinsics}
        result = self.loaded.model.reconstruct(images, rgb=True, as_pointcloud=False, **known, **self.loaded.reconstruct_kwargs)
        return result_to_arrays(result)


class RemoteModel:
    """The driver's stand-in for a replica, as the mapper uses a model (`reconstruct`); `lost`
    holds the error once the replica died during this recording."""

    def __init__(self, ray: Any, replica: Any, info: dict[str, Any]) -> None:
        self._ray, self._replica, self._info = ray, replica, info
        self.is_metric = info["is_metric"]
        self.lost: Exception | None = None

    def revive(self, timeout_s: float = REVIVE_S) -> None:
        """After the replica died: wait until Ray has restarted it (its model loaded), so that
        the next recording does not go to the dying one; WorkerLost if it does not come back."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._ray.get(self._replica.describe.remote(), timeout=max(1.0, deadline - time.monotonic()))
                self.lost = None
                return
            except (self._ray.exceptions.RayActorError, self._ray.exceptions.GetTimeoutError) as error:
                if time.monotonic() > deadline:
                    raise WorkerLost(f"the model replica did not come back within {timeout_s:g} s: {error}") from error
                time.sleep(0.2)

    def uses_known_intrinsics(self, _optimizer: Any = None) -> bool:
        return bool(self._info["uses_known_intrinsics"])

    def check_window(self, size: int) -> None:
        """Checked by each replica's settings when it was built."""

    def reconstruct(self, images: list[np.ndarray], rgb: bool = True, as_pointcloud: bool = False,
                    known_intrinsics: list[np.ndarray] | None = None, **_: Any) -> SceneFromViewsResult:
        if self.lost is not None:
            raise WorkerLost(f"the model replica died: {self.lost}")
        try:
            arrays = self._ray.get(self._replica.reconstruct.remote(list(images), known_intrinsics))
        except self._ray.exceptions.RayActorError as error:
            self.lost = error
            raise WorkerLost(f"the model replica died: {error}") from error
        return result_from_arrays(arrays)


class RayFleet:
    """Ray and the model replicas for one fleet run (a context manager: Ray is shut down
    after, if this run started it)."""

    def __init__(self, args: argparse.Namespace, params: dict[str, Any]) -> None:
        self.ray = import_optional("ray", RAY_INSTALL, "--ray (fleet mapping on Ray; or: pip install .[ray])")
        if not (args.cpus_per_worker > 0 and args.gpus_per_worker >= 0) or (args.workers is not None and args.workers < 1):
            raise InputError(f"--workers must be >= 1, --cpus-per-worker > 0 and --gpus-per-worker >= 0; got {args.workers}, "
                             f"{args.cpus_per_worker}, {args.gpus_per_worker}")
        self._started = not self.ray.is_initialized()
        if self._started:
            self.ray.init(address=None if args.ray == "local" else args.ray, include_dashboard=False, logging_level="ERROR",
                          log_to_driver=False)
        resources = self.ray.cluster_resources()
        fits = int(resources.get("CPU", 1) // args.cpus_per_worker)
        if args.gpus_per_worker > 0:
            fits = min(fits, int(resources.get("GPU", 0) // args.gpus_per_worker))
        workers = args.workers or max(1, fits)
        if workers > max(fits, 1):
            raise InputError(f"--workers {workers} does not fit the cluster ({resources.get('CPU', 0):g} CPUs, "
                             f"{resources.get('GPU', 0):g} GPUs) with --cpus-per-worker {args.cpus_per_worker:g} "
                             f"--gpus-per-worker {args.gpus_per_worker:g}; at most {fits}")
        actor = self.ray.remote(num_cpus=args.cpus_per_worker, num_gpus=args.gpus_per_worker, max_restarts=1)(ModelReplica)
        self.replicas = [actor.remote(params, max(1, int(args.cpus_per_worker))) for _ in range(workers)]
        try:
            infos = self.ray.get([replica.describe.remote() for replica in self.replicas])
        except self.ray.exceptions.RayError as error:
            self.close()
            raise ReplicaStartError(f"the model replicas could not start: {cause_line(error)}") from None
        self.infos = infos
        self.description = f"{workers} model replica(s) of {infos[0]['description']}, {args.cpus_per_worker:g} CPU / " \
                           f"{args.gpus_per_worker:g} GPU each"

    @property
    def models(self) -> list[LoadedModel]:
        """A fresh stand-in per replica (one recording at a time each)."""
        return [LoadedModel(RemoteModel(self.ray, replica, info), {}, f"{info['description']} (Ray replica {index})")
                for index, (replica, info) in enumerate(zip(self.replicas, self.infos, strict=True))]

    def close(self) -> None:
        for replica in self.replicas if hasattr(self, "replicas") else []:
            self.ray.kill(replica)
        if self._started:
            self.ray.shutdown()

    def __enter__(self) -> RayFleet:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
