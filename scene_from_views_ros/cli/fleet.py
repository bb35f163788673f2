"""Map several recordings (a fleet of robots, a day of runs) into OUT/<name>/ each.

Without --ray the recordings run one after another in this process with one model (Ray is
not imported).  With --ray they run on Ray model replicas (cli/fleet_ray.py): each replica
keeps its model loaded across recordings, and one driver thread per replica maps a recording
at a time, its windows reconstructed in order by that replica.

A recording is mapped into a hidden OUT/.<name>.partial/ folder that is renamed to
OUT/<name>/ once every file is written, so a folder with the recording's name is always
complete: --resume skips those, and a crash or Ctrl-C never leaves a half-written map that
looks done.  A recording that fails (unreadable input, no matching topic, no window placed,
a lost worker twice) is reported with its error and the others go on.  OUT/fleet.json and
the printed table give frames, keyframes, windows, points, time and status per recording.
"""
from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core.checkpoint import check_checkpoint_reference
from ..core.errors import SceneFromViewsError
from ..core.files import remove_path, write_json
from ..io.sources import InputError
from ..mapping.settings import MappingSettings
from .map import EXIT_ERROR, EXIT_INTERRUPTED, PROG, LoadedModel, _progress, _set_threads, load_model, map_into, no_map_reason, open_recording
from .recordings import Recording

FLEET_SUMMARY = "fleet.json"
ATTEMPTS = 2  # a recording whose worker died is mapped again once, from the start


class WorkerLost(RuntimeError):
    """The model replica mapping a recording died (its recording is mapped again)."""


@dataclass
class RecordingResult:
    """One row of the fleet summary."""

    name: str
    status: str  # done, skipped (complete from an earlier run), failed, interrupted, not started
    frames: int = 0
    keyframes: int = 0
    windows: int = 0
    points: int = 0
    seconds: float = 0.0
    attempts: int = 0
    error: str = ""
    output: str = ""
    options: dict[str, Any] | None = None


def partial_folder(out: Path, name: str) -> Path:
    return out / f".{name}.partial"


def is_complete(folder: Path) -> bool:
    """A recording's folder holds a finished map (only renamed into place when complete)."""
    return (folder / "summary.json").is_file()


def map_recording(recording: Recording, loaded: LoadedModel, out: Path, args: argparse.Namespace, settings: MappingSettings,
                  params: dict[str, Any], position: int = 0, stop: threading.Event | None = None) -> RecordingResult:
    """Map one recording into OUT/<name>/ (through its partial folder).  A lost worker raises
    WorkerLost (the partial folder removed); every other problem is the result's error."""
    final, partial = out / recording.name, partial_folder(out, recording.name)
    remove_path(partial)
    if getattr(loaded.model, "lost", None) is not None:  # a Ray replica that died: wait until Ray restarted it
        loaded.model.revive()
    started = time.perf_counter()
    result = RecordingResult(recording.name, "failed", options=recording.options())
    try:
        partial.mkdir(parents=True)
        source = open_recording(recording, args)
        source.stop_on_bad_frame = args.on_bad_frame == "stop"
        summary, stopped, _ = map_into(partial, source, settings, params, loaded, args, position=position, stop=stop)
    except (SceneFromViewsError, OSError, ValueError) as error:
        remove_path(partial)
        result.error, result.seconds = f"{type(error).__name__}: {error}", time.perf_counter() - started
        return result
    except BaseException:
        remove_path(partial)
        raise
    result.seconds = time.perf_counter() - started
    result.frames, result.keyframes, result.windows, result.points = summary.frames_read, summary.keyframes, summary.windows, summary.map_points
    lost = getattr(loaded.model, "lost", None)
    if lost is not None:
        remove_path(partial)
        raise WorkerLost(str(lost))
    if stopped or not summary.windows:
        remove_path(partial)
        result.status = "interrupted" if stopped == "interrupted" else "failed"
        result.error = stopped if stopped and stopped != "interrupted" else "" if stopped else f"no map: {no_map_reason(summary)}"
        return result
    summary_path = partial / "summary.json"  # its paths as they will be once the folder has its name
    document = json.loads(summary_path.read_text())
    document["outputs"] = {key: value.replace(str(partial), str(final), 1) for key, value in document["outputs"].items()}
    write_json(summary_path, document)
    remove_path(final)  # an incomplete or --overwrite'd earlier one
    partial.rename(final)
    result.status, result.output = "done", str(final)
    return result


def _check_out(out: Path, recordings: list[Recording], args: argparse.Namespace) -> list[Recording]:
    """The recordings to map: complete ones are skipped with --resume, replaced with
    --overwrite, and otherwise an error (nothing is overwritten by surprise)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder; choose another --out")
    complete = [r.name for r in recordings if is_complete(out / r.name)]
    if complete and not (args.resume or args.overwrite):
        raise InputError(f"{out} already holds complete maps of {', '.join(complete)}; pass --resume to skip them, "
                         "--overwrite to map them again, or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot write into {out}: {error.strerror or error}; choose another --out") from error
    return [r for r in recordings if not (args.resume and r.name in complete)]


def run_fleet(args: argparse.Namespace, recordings: list[Recording], settings: MappingSettings, params: dict[str, Any]) -> int:
    """Map every recording; print the table, write OUT/fleet.json; the exit status (0: every
    recording done or skipped, 2: one failed, 130: interrupted)."""
    out = args.out or Path(settings.output_dir).expanduser()
    todo = _check_out(out, recordings, args)
    results = {r.name: RecordingResult(r.name, "skipped", output=str(out / r.name), options=r.options()) for r in recordings}
    for recording in todo:
        results[recording.name] = RecordingResult(recording.name, "not started", options=recording.options())
    say = (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr))
    say(f"{PROG}: {len(recordings)} recordings ({len(recordings) - len(todo)} complete, skipped), into {out}/<name>/")
    started = time.perf_counter()
    bar = _progress(args.quiet, total=len(todo), desc="recordings", unit="rec", position=0)

    def finished(result: RecordingResult) -> None:
        results[result.name] = result
        bar.update(1)
        bar.write(f"{PROG}: {result.name}: {result.status}" + (f" ({result.error})" if result.error else ""), file=sys.stderr)

    interrupted = False
    try:
        if todo and args.ray is None:
            _set_threads(args.threads)
            say(f"{PROG}: loading model {settings.model_type.value} ...")
            loaded = load_model(settings, args.intrinsics)
            for recording in todo:
                result = map_recording(recording, loaded, out, args, settings, params, position=1)
                result.attempts = 1
                finished(result)
                if result.status == "interrupted":
                    interrupted = True
                    break
        elif todo:
            from .fleet_ray import RayFleet

            # a local checkpoint that is not there fails here, not on every replica
            check_checkpoint_reference(settings.model_options.checkpoint, settings.model_class.checkpoint_filenames)

            with RayFleet(args, params) as fleet:
                say(f"{PROG}: Ray: {fleet.description}")
                interrupted = run_on_workers(todo, fleet.models, lambda recording, model, position, stop: map_recording(
                    recording, model, out, args, settings, params, position, stop), finished)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    rows = [results[r.name] for r in recordings]
    write_json(out / FLEET_SUMMARY, {"out": str(out), "seconds": time.perf_counter() - started, "ray": args.ray,
                                     "recordings": [asdict(row) for row in rows]})
    print(fleet_table(rows))
    if interrupted:
        done = [row.name for row in rows if row.status in ("done", "skipped")]
        print(f"{PROG}: interrupted; complete: {', '.join(done) or 'none'} (--resume maps the others)", file=sys.stderr)
        return EXIT_INTERRUPTED
    failed = [row.name for row in rows if row.status == "failed"]
    if failed:
        print(f"{PROG}: error: {len(failed)} of {len(rows)} recordings failed: {', '.join(failed)} (see {out / FLEET_SUMMARY})", file=sys.stderr)
        return EXIT_ERROR
    return 0


def run_on_workers(todo: list[Recording], models: list[LoadedModel],
                   map_one: Callable[[Recording, LoadedModel, int, threading.Event], RecordingResult],
                   finished: Callable[[RecordingResult], None]) -> bool:
    """Map `todo` with one driver thread per model replica, each taking the next recording
    when done; a recording whose worker died goes back to the queue (ATTEMPTS in all).
    Returns True when Ctrl-C stopped the run (the recordings in flight end as interrupted)."""
    pending: queue.Queue[tuple[Recording, int]] = queue.Queue()
    for recording in todo:
        pending.put((recording, 1))
    stop = threading.Event()
    outstanding = [len(todo)]
    lock = threading.Lock()

    def driver(index: int, model: LoadedModel) -> None:
        while not stop.is_set():
            with lock:
                if outstanding[0] == 0:
                    return
            try:
                recording, attempt = pending.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                result = map_one(recording, model, 1 + 2 * index, stop)
            except WorkerLost as error:
                if attempt < ATTEMPTS:
                    pending.put((recording, attempt + 1))
                    continue
                result = RecordingResult(recording.name, "failed", error=f"its worker died {attempt} times: {error}",
                                         options=recording.options())
            except Exception as error:  # noqa: BLE001 - one recording never stops the others
                result = RecordingResult(recording.name, "failed", error=f"{type(error).__name__}: {error}", options=recording.options())
            result.attempts = attempt
            with lock:
                outstanding[0] -= 1
            finished(result)

    threads = [threading.Thread(target=driver, args=(i, model), daemon=True) for i, model in enumerate(models)]
    for thread in threads:
        thread.start()
    try:
        while any(thread.is_alive() for thread in threads):
            for thread in threads:
                thread.join(0.2)
    except KeyboardInterrupt:
        stop.set()
        for thread in threads:
            thread.join()
        return True
    return False


def fleet_table(rows: list[RecordingResult]) -> str:
    """The fleet summary as a text table."""
    header = ("recording", "status", "frames", "keyframes", "windows", "points", "time", "error")
    lines = [header] + [(row.name, row.status, str(row.frames), str(row.keyframes), str(row.windows), str(row.points),
                         f"{row.seconds:.1f} s", row.error[:80]) for row in rows]
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines)
