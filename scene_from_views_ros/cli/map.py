"""scene_from_views_map: map an image folder, a video or a ROS 2 bag offline, with the node's core.

Frames go through the same keyframe selection, sliding windows, Sim(3) chaining and global
map as in the ROS node (`SlidingWindowMapper`), configured by the same parameters (a node
YAML file via --params-file, then -p name=value, then the dedicated options).  Examples::

    scene_from_views_map --sample --out sample_map                 # built-in procedural scene
    scene_from_views_map frames/ --out map_out --window-size 8
    scene_from_views_map walk.mp4 --step 5 --start 2 --end 30 --out map_out
    scene_from_views_map recording/ --topic /camera/image_raw/compressed --out map_out --write-bag
    scene_from_views_map a.jpg b.jpg c.jpg --one-shot --out scene_out
    scene_from_views_map frames/ --params-file config/scene_from_views.yaml --out map_out
    scene_from_views_map day1/*.mcap fleet.yaml --out maps --ray --export all   # several recordings (cli/fleet.py)

Errors (unreadable input, wrong topic, missing weights, bad parameters) are printed as one
message and the exit status is 2; a run in which no window could be placed exits with 1.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..core.errors import CheckpointNotFoundError, InvalidImageError, InvalidOptionError, SceneFromViewsError
from ..core.files import remove_path, write_text
from ..core.signals import signals_interrupt
from ..io.exports import parse_exports
from ..io.outputs import KEYFRAME_FILES, RUN_OUTPUTS, MapOutputs, RunSummary
from ..io.sources import FrameSource, InputError, Selection, SyntheticSource, open_source
from ..mapping.keyframes import Frame, KeyframeConfig
from ..mapping.mapper import SlidingWindowMapper
from ..mapping.settings import (
    DEFAULT_NODE_NAME,
    MappingSettings,
    default_parameters,
    load_parameter_file,
    parameters,
    settings_from_parameters,
)
from ..mapping.windows import Window, WindowConfig
from ..optimizers import NO_OPTIMIZER
from .recordings import MANIFEST_SUFFIXES, SAMPLE, Recording, expand_recordings, is_pattern

PROG = "scene_from_views_map"
EXIT_ERROR = 2
EXIT_NO_MAP = 1
EXIT_INTERRUPTED = 130

# Shortcuts for the parameters every run sets (model options go through -p / --model-arg:
# they depend on the model, see --list-parameters).
PARAMETER_OPTIONS: list[tuple[str, str, type, str]] = [
    ("--model-type", "model_type", str, "model family: vggt, vggt_robust, ... (default vggt)"),
    ("--device", "device", str, "cpu, cuda, cuda:1 (default: cuda when available)"),
    ("--checkpoint", "model.checkpoint", str, "weights: Hugging Face repo id, local file or folder (default: the model's release)"),
    ("--optimizer", "optimizer.type", str, "scene optimizer applied to each window (default auto: the model's own; none)"),
    ("--window-size", "window.size", int, "keyframes per window"),
    ("--window-overlap", "window.overlap", int, "keyframes shared by consecutive windows"),
    ("--min-interval", "keyframe.min_interval_s", float, "minimum seconds between keyframes"),
    ("--min-change", "keyframe.min_change", float, "minimum image change (0-1) for a new keyframe"),
    ("--max-rate", "keyframe.max_rate_hz", float, "maximum keyframes per second (0 = no cap)"),
    ("--voxel-size", "map.voxel_size", float, "map voxel edge (map units)"),
    ("--max-points", "map.max_points", int, "maximum map points"),
]


_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)$")


def parse_value(text: str) -> Any:
    """A parameter value as ROS reads ``-p name:=value``: YAML, except that a number in
    exponent notation without a dot (1e-5), a string for YAML 1.1, is a number as for ROS."""
    try:
        parsed = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text
    if isinstance(parsed, str) and _FLOAT.match(parsed.strip()):
        return float(parsed)
    return "" if parsed is None else parsed


def _key_value(text: str) -> tuple[str, Any]:
    """NAME=VALUE (or ROS's NAME:=VALUE) with VALUE read as the node reads it (`parse_value`)."""
    name, sep, value = text.partition("=")
    name = name.removesuffix(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), parse_value(value)


def _exports(text: str) -> tuple[str, ...]:
    try:
        return parse_exports(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit() or int(width) < 16 or int(height) < 16:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT (each >= 16), e.g. 256x192, got {text!r}")
    return int(width), int(height)


def _camera_matrix(text: str) -> np.ndarray:
    """FX,FY,CX,CY (pixels) -> 3x3 pinhole matrix."""
    try:
        fx, fy, cx, cy = (float(value) for value in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FX,FY,CX,CY in pixels, e.g. 525,525,319.5,239.5, got {text!r}") from None
    if not (fx > 0 and fy > 0 and np.isfinite([cx, cy]).all()):
        raise argparse.ArgumentTypeError(f"focal lengths must be positive and the principal point finite, got {text!r}")
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Map an image folder, a video or a ROS 2 bag offline with the scene_from_views mapping core "
        "(keyframes, sliding windows, Sim(3) chaining), or reconstruct a set of images in one shot.",
        epilog="Parameters use the node's names (model.*, optimizer.*, keyframe.*, window.*, chain.*, map.*); "
        "later sources win: --params-file, then -p, then the dedicated options.",
    )
    source = parser.add_argument_group("input")
    source.add_argument("inputs", nargs="*", metavar="INPUT", help="an image folder, a video, a ROS 2 bag (folder, .mcap or .db3) or image files")
    source.add_argument("--sample", action="store_true", help="map the built-in procedurally rendered sample sequence")
    source.add_argument("--sample-frames", type=int, default=90, help="frames of the sample sequence (default 90)")
    source.add_argument("--sample-size", type=_size, default=(256, 192), metavar="WxH", help="sample image size (default 256x192)")
    source.add_argument("--topic", help="bag image topic (sensor_msgs/Image or CompressedImage; default: the bag's only one)")
    source.add_argument("--camera-info-topic", help="bag CameraInfo topic (default: the image topic's sibling camera_info)")
    source.add_argument("--step", type=int, default=1, help="use every STEP-th frame (default 1)")
    source.add_argument("--start", type=float, default=0.0, metavar="S", help="skip frames before S seconds from the first frame")
    source.add_argument("--end", type=float, default=None, metavar="S", help="stop after S seconds from the first frame")
    source.add_argument("--max-frames", type=int, default=None, help="use at most this many frames")
    source.add_argument("--intrinsics", type=_camera_matrix, metavar="FX,FY,CX,CY",
                        help="the camera's intrinsics in the input images' pixels, for frames that carry none (image folders, "
                             "videos, bags without CameraInfo); for models that use known intrinsics (DUSt3R/MASt3R with a scene optimizer, "
                             "Depth Anything 3)")
    source.add_argument("--fps", type=float, default=10.0, help="frame rate assumed for image files, which carry no stamps (default 10)")

    mode = parser.add_argument_group("mode and outputs")
    mode.add_argument("--one-shot", action="store_true", help="reconstruct all (selected) frames as one window, no keyframe selection")
    mode.add_argument("--out", type=Path, help="output folder (default: the map.output_dir parameter, sfv_map)")
    mode.add_argument("--save-windows", action="store_true", help="also write each window's cloud as windows/window_<n>.ply")
    mode.add_argument("--keyframe-files", choices=tuple(KEYFRAME_FILES), default="all",
                      help="per-keyframe files under keyframes/: none, depth (.npy) or all (depth and PNG previews; default)")
    mode.add_argument("--export", type=_exports, default=(), metavar="FORMATS",
                      help="also write these exports, comma-separated: colmap (colmap/*.txt), nerfstudio (nerfstudio/"
                           "transforms.json and the keyframe images), pcd (map.pcd), or all")
    mode.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in --out (removed first)")
    mode.add_argument("--on-bad-frame", choices=("skip", "stop"), default="skip",
                      help="a frame that cannot be used (undecodable, unsupported, unusable by the model): skip it with a "
                      "warning (default) or stop the run (what was mapped is written either way)")
    mode.add_argument(
        "--write-bag", nargs="?", const="", default=None, metavar="PATH",
        help="write a ROS 2 bag (mcap) for replay with ros2 bag play (default PATH: OUT/bag)",
    )
    mode.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    fleet = parser.add_argument_group(
        "several recordings (a fleet)",
        "Several inputs that are not image files (bags, videos, folders), glob patterns or manifest files (.yaml/.json "
        "listing recordings with their own topic and time range) are mapped one recording per folder OUT/<name>/, "
        "with OUT/fleet.json and a table at the end.")
    fleet.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                       help="map the recordings on Ray: without ADDRESS an embedded local Ray, 'auto' or ray://host:port "
                            "joins a cluster (pip install .[ray])")
    fleet.add_argument("--workers", type=int, default=None, help="Ray: model replicas (default: as many as the CPUs/GPUs allow)")
    fleet.add_argument("--cpus-per-worker", type=float, default=1.0, help="Ray: CPUs per model replica (default 1; its torch threads)")
    fleet.add_argument("--gpus-per-worker", type=float, default=0.0, help="Ray: GPUs per model replica (default 0)")
    fleet.add_argument("--resume", action="store_true", help="skip recordings whose outputs in OUT/<name>/ are complete")
    mode.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice; 1 is fastest on a busy machine)")

    params = parser.add_argument_group("model and mapping parameters (as the node's)")
    params.add_argument("--list-parameters", action="store_true",
                        help="print every parameter of --model-type (default vggt) with its default and allowed values, then exit")
    params.add_argument("--params-file", type=Path, help="ROS 2 parameter YAML file of the node (e.g. config/scene_from_views.yaml)")
    params.add_argument("--node-name", default=DEFAULT_NODE_NAME,
                        help=f"node section of the parameter file, and bag topic namespace (default {DEFAULT_NODE_NAME})")
    params.add_argument("-p", "--param", type=_key_value, action="append", default=[], metavar="NAME=VALUE",
                        help="set any node parameter, e.g. -p model.conf_thres=30 (see --list-parameters)")
    params.add_argument("--model-arg", type=_key_value, action="append", default=[], metavar="KEY=VALUE", help="model keyword argument (= -p model.KEY=VALUE)")
    params.add_argument("--optimizer-arg", type=_key_value, action="append", default=[], metavar="KEY=VALUE", help="optimizer keyword argument")
    for flag, name, kind, text in PARAMETER_OPTIONS:
        params.add_argument(flag, dest=name, type=kind, default=None, metavar=kind.__name__.upper(), help=f"{text} [{name}]")
    return parser


def collect_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """Flat node parameters: parameter file, then -p, then --model-arg/--optimizer-arg, then options."""
    params: dict[str, Any] = load_parameter_file(args.params_file, args.node_name) if args.params_file else {}
    params.update(dict(args.param))
    params.update({f"model.{key}": value for key, value in args.model_arg})
    params.update({f"optimizer.{key}": value for key, value in args.optimizer_arg})
    params.update({name: getattr(args, name) for _, name, _, _ in PARAMETER_OPTIONS if getattr(args, name) is not None})
    return params


def fleet_recordings(args: argparse.Namespace) -> list[Recording] | None:
    """The recordings of a fleet run, or None for one input mapped into --out as such (one
    folder, video or bag, or image files)."""
    from ..io.sources import IMAGE_SUFFIXES

    images = bool(args.inputs) and all(Path(text).is_file() and Path(text).suffix.lower() in IMAGE_SUFFIXES for text in args.inputs)
    patterns = any(is_pattern(text) or Path(text).suffix.lower() in MANIFEST_SUFFIXES for text in args.inputs)
    several = len(args.inputs) + bool(args.sample) > 1
    if images or not (args.ray or patterns or several):
        return None
    if args.one_shot or args.write_bag is not None:
        raise InputError("--one-shot and --write-bag map a single input; run them per recording")
    sample = Recording(SAMPLE, sample_frames=args.sample_frames, sample_size=args.sample_size) if args.sample else None
    common = {"topic": args.topic, "camera_info_topic": args.camera_info_topic, "start": args.start, "end": args.end,
              "step": args.step, "max_frames": args.max_frames}
    return expand_recordings(args.inputs, sample=sample, common=common)


def open_recording(recording: Recording, args: argparse.Namespace) -> FrameSource:
    """The frames of one recording of a fleet."""
    if recording.is_sample:
        from ..mapping.synthetic import make_sequence

        width, height = recording.sample_size
        return SyntheticSource(make_sequence(recording.sample_frames, width, height), recording.selection)
    return open_source([recording.path], selection=recording.selection, fps=args.fps, topic=recording.topic,
                       camera_info_topic=recording.camera_info_topic)


def _open_input(args: argparse.Namespace) -> FrameSource:
    if not (math.isfinite(args.fps) and args.fps > 0):
        raise InputError(f"--fps must be a positive number, got {args.fps}")
    selection = Selection(args.step, args.start, args.end, args.max_frames)
    if args.sample:
        if args.inputs:
            raise InputError("--sample maps the built-in sequence; do not pass inputs with it")
        if args.sample_frames < 2:
            raise InputError(f"--sample-frames must be >= 2, got {args.sample_frames}")
        from ..mapping.synthetic import make_sequence

        width, height = args.sample_size
        return SyntheticSource(make_sequence(args.sample_frames, width, height), selection)
    return open_source(args.inputs, selection=selection, fps=args.fps, topic=args.topic, camera_info_topic=args.camera_info_topic)


def parameter_listing(settings: MappingSettings) -> str:
    """Every parameter of the run's model type: name = default, what it does, what it takes."""
    lines = []
    for parameter in parameters(settings.model_type):
        spec = parameter.spec
        default = list(spec.default) if spec.kind is tuple else spec.default
        restart = "; node: read-only" if spec.restart else ""
        lines.append(f"{parameter.name} = {default!r}\n    {spec.description}\n    allowed: {spec.allowed()}{restart}")
    return "\n".join(lines)


def _prepare_output(args: argparse.Namespace, settings: MappingSettings) -> tuple[Path, Path | None]:
    """The output folder (and bag path), checked before any model loads: writable, and not
    holding an earlier run unless --overwrite (which removes that run's files)."""
    out = args.out or Path(settings.output_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder; choose another --out")
    bag = None if args.write_bag is None else (Path(args.write_bag) if args.write_bag else out / "bag")
    if bag is not None and args.keyframe_files == "none":
        raise InputError("--write-bag puts each keyframe's depth in the bag: use --keyframe-files depth or all with it")
    earlier = [out / name for name in RUN_OUTPUTS if (out / name).exists()] + ([bag] if bag is not None and bag.exists() else [])
    if earlier and not args.overwrite:
        raise InputError(
            f"{out} holds the outputs of an earlier run ({', '.join(sorted({p.name for p in earlier}))}); "
            "choose another --out, or pass --overwrite to replace them"
        )
    try:
        for path in earlier:
            remove_path(path)
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as error:
        raise InputError(f"cannot write into {out}: {error.strerror or error}; choose another --out") from error
    return out, bag


def _one_shot(settings: MappingSettings, frames: list[Frame]) -> MappingSettings:
    """Every frame a keyframe and all of them in one window."""
    largest = WindowConfig.spec("size").high
    if not 2 <= len(frames) <= (largest or len(frames)):
        raise InputError(f"one-shot reconstruction takes 2 to {largest:g} images, got {len(frames)}")
    mapper = replace(
        settings.mapper,
        keyframe=KeyframeConfig(min_interval_s=0.0, min_change=0.0, max_rate_hz=0.0),
        window=WindowConfig(size=len(frames), overlap=1),
    )
    return replace(settings, mapper=mapper)


def _progress(quiet: bool, **kwargs: Any) -> Any:
    from tqdm import tqdm

    return tqdm(disable=quiet, dynamic_ncols=True, file=sys.stderr, **kwargs)


def _save_parameters(path: Path, settings: MappingSettings, params: dict[str, Any], node_name: str) -> None:
    """The run's effective parameters as a node parameter file, to reuse with the node."""
    effective = {**default_parameters(settings.model_type), **params}
    write_text(path, yaml.safe_dump({node_name: {"ros__parameters": effective}}, sort_keys=True))


def _set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise InputError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def _with_intrinsics(frames: Iterable[Frame], intrinsics: np.ndarray) -> Iterable[Frame]:
    """The frames, those without intrinsics of their own given `intrinsics` (a list stays a list)."""
    given = (frame if frame.intrinsics is not None else replace(frame, intrinsics=intrinsics) for frame in frames)
    return list(given) if isinstance(frames, list) else given


def _map_frames(
    mapper: SlidingWindowMapper, frames: Iterable[Frame], source: FrameSource, total: int | None, outputs: MapOutputs, quiet: bool,
    position: int = 0, stop: threading.Event | None = None,
) -> tuple[list[str], str]:
    """Feed every frame to the mapper with progress bars; returns (window failures, why the
    run stopped early: "" when it did not).  A frame the model cannot take is a bad frame of
    the source (skipped or, with --on-bad-frame stop, the end of the run)."""
    failures: list[str] = []
    frame_bar = _progress(quiet, total=total, desc="frames", unit="frame", position=position, leave=position == 0)
    window_bar = _progress(quiet, desc="windows", unit="window", position=position + 1, leave=position == 0)
    source.on_warning = lambda message: window_bar.write(f"{PROG}: warning: {message}", file=sys.stderr)

    def on_window(window: Any) -> None:
        outputs.on_window(window)
        record = outputs.windows[-1]
        window_bar.update(1)
        window_bar.set_postfix(last=f"{record.reconstruct_s:.2f}s", views=record.views, scale=f"{record.scale:.3g}")

    def on_error(window: Window, error: Exception) -> None:
        failures.append(f"window {window.index}: {error}")
        window_bar.write(f"{PROG}: window {window.index} not placed: {error}", file=sys.stderr)

    mapper.on_window, mapper.on_error = on_window, on_error
    stopped = ""
    try:
        for frame in frames:
            if stop is not None and stop.is_set():
                raise KeyboardInterrupt
            try:
                mapper.add_frame(frame)
            except InvalidImageError as error:
                source.skip(f"frame at {frame.stamp_ns / 1e9:.3f} s: {error}")
            frame_bar.update(1)
            frame_bar.set_postfix(keyframes=mapper.stats.keyframes, refresh=False)
        mapper.flush()
    except KeyboardInterrupt:
        stopped = "interrupted"
    except SceneFromViewsError as error:
        stopped = str(error)
    except Exception as error:  # noqa: BLE001 - whatever ends the run, what was mapped is written
        stopped = f"{type(error).__name__}: {error}"
    finally:
        frame_bar.close()
        window_bar.close()
    if stopped:
        print(f"{PROG}: {stopped}; writing what was mapped so far", file=sys.stderr)
    return failures, stopped


@dataclass
class LoadedModel:
    """The model a run maps with (or a stand-in that reconstructs elsewhere, e.g. on Ray) and
    the keyword arguments of each reconstruct call."""

    model: Any
    reconstruct_kwargs: dict[str, Any]
    description: str


def load_model(settings: MappingSettings, intrinsics: np.ndarray | None) -> LoadedModel:
    """Build the optimizer and the model (missing weights raise their clear errors); refuse
    --intrinsics for a model that would not use them."""
    optimizer = settings.build_optimizer()
    model = settings.build_model()
    if intrinsics is not None and not model.uses_known_intrinsics(optimizer if optimizer is not None else NO_OPTIMIZER):
        raise InvalidOptionError(
            f"--intrinsics is not used by model_type {settings.model_type.value} with optimizer.type {settings.optimizer_type}: "
            f"{model.known_intrinsics_refusal()}; drop --intrinsics or change them"
        )
    checkpoint = getattr(model, "checkpoint_path", None)
    description = f"{settings.model_type.value} on {getattr(model, 'device', 'cpu')}" + (f" ({checkpoint})" if checkpoint else "")
    return LoadedModel(model, {"optimizer": optimizer if optimizer is not None else NO_OPTIMIZER}, description)


def map_into(out: Path, source: FrameSource, settings: MappingSettings, params: dict[str, Any], loaded: LoadedModel,
             args: argparse.Namespace, bag_path: Path | None = None, position: int = 0,
             stop: threading.Event | None = None) -> tuple[RunSummary, str, list[str]]:
    """Map `source` into the folder `out` with `loaded`: every output file and summary.json.
    Returns (the summary, why the run stopped early or "", the window failures); `stop` set
    ends the run as Ctrl-C does (for runs on other threads than the main one)."""
    frames: Iterable[Frame] = source
    total = source.expected()
    if args.one_shot:
        frames = list(source)
        total = len(frames)
        settings = _one_shot(settings, frames)
        loaded.model.check_window(len(frames))
    if args.intrinsics is not None:
        frames = _with_intrinsics(frames, args.intrinsics)
    _save_parameters(out / "parameters.yaml", settings, params, args.node_name)
    outputs = MapOutputs(out, settings.mapper.map, save_windows=args.save_windows, keyframe_files=args.keyframe_files,
                         exports=args.export)
    mapper = SlidingWindowMapper(loaded.model, settings.mapper, threaded=False, reconstruct_kwargs=loaded.reconstruct_kwargs)
    failures, stopped = _map_frames(mapper, frames, source, total, outputs, args.quiet, position, stop)

    stats, trajectory = mapper.stats, mapper.trajectory()
    metric = mapper.metric
    summary = RunSummary(
        input=source.description,
        model=loaded.description,
        frames_read=stats.frames,
        keyframes=stats.keyframes,
        keyframes_dropped=stats.keyframes_dropped,
        keyframes_in_map=len(trajectory),
        windows=stats.windows_done,
        windows_failed=stats.windows_failed,
        views_rejected=stats.views_rejected,
        frames_skipped=len(source.skipped),
        frames_out_of_order=stats.frames_out_of_order,
        time_jumps=stats.time_jumps,
        map_points=stats.map_points,
        voxel_size=mapper.map.voxel_size,
        units="m" if metric else "map units",
        stopped=stopped,
        failures=failures,
        skipped=source.skipped[:100],
        warnings=dict(source.warnings),
    )
    if stats.windows_done:
        saved = mapper.save(out)
        summary.outputs.update(map=str(saved["ply"]), trajectory=str(saved["tum"]))
        summary.outputs["keyframes"] = str(outputs.write_keyframes_json(trajectory, settings.frames, metric))
        for name, paths in outputs.write_exports(trajectory, mapper.map_cloud()).items():
            summary.outputs[name] = str(paths[0].parent if name != "pcd" else paths[0])
        if bag_path is not None:
            from ..io.bag_writer import write_map_bag

            write_map_bag(bag_path, mapper.map_cloud(), trajectory, outputs.depth_of, settings.frames, args.node_name,
                          settings.publish.path_max_poses)
            summary.outputs["bag"] = str(bag_path)
    outputs.summary(summary)
    return summary, stopped, failures


def no_map_reason(summary: RunSummary) -> str:
    """Why a run placed no window, with the fix."""
    return summary.failures[-1] if summary.failures else (
        f"{summary.frames_read} frames gave {summary.keyframes} keyframes, and a window needs at least 2; "
        "lower keyframe.min_change / keyframe.min_interval_s or give more frames"
    )


def run(args: argparse.Namespace) -> int:
    """The whole run; raises SceneFromViewsError for problems the user can fix."""
    params = collect_parameters(args)
    settings = settings_from_parameters(params)
    if args.list_parameters:
        print(parameter_listing(settings))
        return 0
    recordings = fleet_recordings(args)
    if recordings is not None:
        from .fleet import run_fleet

        return run_fleet(args, recordings, settings, params)
    out, bag_path = _prepare_output(args, settings)
    _set_threads(args.threads)
    source = _open_input(args)
    source.stop_on_bad_frame = args.on_bad_frame == "stop"
    say = (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr))
    say(f"{PROG}: input {source.description}")
    if settings.node_only_given():
        say(f"{PROG}: node-only parameters not used offline: {', '.join(settings.node_only_given())}")
    say(f"{PROG}: loading model {settings.model_type.value} ...")
    loaded = load_model(settings, args.intrinsics)
    summary, stopped, _ = map_into(out, source, settings, params, loaded, args, bag_path)
    print(summary.text())
    if stopped == "interrupted":
        return EXIT_INTERRUPTED
    if stopped:
        print(f"{PROG}: error: the run stopped early: {stopped}", file=sys.stderr)
        return EXIT_ERROR
    if not summary.windows:
        print(f"{PROG}: error: no map was built: {no_map_reason(summary)}", file=sys.stderr)
        return EXIT_NO_MAP
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        with signals_interrupt():  # SIGTERM and SIGHUP end the run as Ctrl-C does
            return run(args)
    except SceneFromViewsError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        if isinstance(error, CheckpointNotFoundError):
            print(f"{PROG}: to use local weights here, pass --checkpoint /path/to/model.safetensors (or the folder holding it)", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
