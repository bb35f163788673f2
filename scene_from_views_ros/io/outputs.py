"""Files an offline mapping run leaves in its output folder.

::

    map.ply                    the map cloud (binary PLY, map frame)
    map_trajectory.tum         keyframe poses, camera-to-map (TUM: t tx ty tz qx qy qz qw)
    keyframes.json             the same poses as 4x4 matrices, with intrinsics and file names
    keyframes/kf_<id>_depth.npy         depth, float32 HxW in map units (model input size), NaN where
                                        the model or the map's confidence filter dropped the pixel
    keyframes/kf_<id>_depth.png         the depth colour-mapped (turbo, near = blue)
    keyframes/kf_<id>_confidence.png    the confidence colour-mapped (viridis, high = yellow)
    windows/window_<n>.ply     each window's cloud in the map frame (optional)
    map.pcd, colmap/, nerfstudio/       the exports chosen (`exports`, see io/exports.py)
    summary.json               counts, timings, skipped frames, warnings
    parameters.yaml            the run's parameters, reusable with the node

Per-keyframe files (`KEYFRAME_FILES`: none, depth or all) and, with the colmap or nerfstudio
export, the keyframe images (nerfstudio/images/kf_<id>.png) are written as each window is
placed, so memory does not grow with the run.  Every file is written under a temporary name
and renamed into place; JSON is strict (non-finite numbers are null).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..core.files import atomic_path, write_json
from ..core.result import PointCloud
from ..geometry.ply import write_ply
from ..geometry.pointcloud import confidence_mask
from ..mapping.chaining import WindowInMap
from ..mapping.global_map import KeyframePose, MapConfig
from ..mapping.map_frame import MapFrame
from ..mapping.settings import FrameNames
from .exports import EXPORT_FORMATS, IMAGE_DIR, NERFSTUDIO_DIR, keyframe_image_name, write_map_exports, write_png

KEYFRAME_DIR = "keyframes"
WINDOW_DIR = "windows"
# What --keyframe-files writes per keyframe: nothing, the depth map, or depth and the PNGs.
KEYFRAME_FILES = {"none": (), "depth": ("depth",), "all": ("depth", "depth_png", "confidence_png")}
# Everything a run writes into its output folder (what --overwrite removes first).
RUN_OUTPUTS = ("map.ply", "map_trajectory.tum", "keyframes.json", "summary.json", "parameters.yaml", KEYFRAME_DIR, WINDOW_DIR, "bag",
               "map.pcd", "colmap", "nerfstudio")


def colorize(values: np.ndarray, colormap: int, valid: np.ndarray | None = None) -> np.ndarray:
    """BGR uint8 image of `values` stretched between their 2nd and 98th percentiles; invalid
    (non-finite or masked-out) pixels black."""
    values = np.asarray(values, np.float32)
    keep = np.isfinite(values) if valid is None else np.isfinite(values) & valid
    scaled = np.zeros(values.shape, np.uint8)
    if keep.any():
        low, high = np.percentile(values[keep], [2.0, 98.0])
        span = max(float(high - low), 1e-12)
        scaled = np.round(np.clip((np.where(keep, values, low) - low) / span, 0, 1) * 255).astype(np.uint8)
    image = cv2.applyColorMap(scaled, colormap)
    image[~keep] = 0
    return image


def keyframe_files(keyframe_id: int, kinds: tuple[str, ...] = KEYFRAME_FILES["all"]) -> dict[str, str]:
    """Paths (relative to the output folder) of one keyframe's files of the given `kinds`."""
    stem = f"{KEYFRAME_DIR}/kf_{keyframe_id:06d}"
    names = {"depth": f"{stem}_depth.npy", "depth_png": f"{stem}_depth.png", "confidence_png": f"{stem}_confidence.png"}
    return {kind: names[kind] for kind in kinds}


@dataclass
class WindowRecord:
    """What one window did; times in seconds."""

    index: int
    views: int
    new_keyframes: int
    reconstruct_s: float
    chain_s: float
    integrate_s: float
    scale: float
    inlier_ratio: float | None


@dataclass
class RunSummary:
    """The run in numbers, as printed and written to summary.json."""

    input: str
    model: str
    frames_read: int = 0
    keyframes: int = 0
    keyframes_dropped: int = 0
    keyframes_in_map: int = 0
    windows: int = 0
    windows_failed: int = 0
    views_rejected: int = 0
    frames_skipped: int = 0
    frames_out_of_order: int = 0
    time_jumps: int = 0
    map_points: int = 0
    voxel_size: float = 0.0
    units: str = "map units"
    total_s: float = 0.0
    mean_window_s: float = 0.0
    stopped: str = ""  # why the run ended early ("" when it read its whole input)
    window_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # the first reasons frames were skipped for
    warnings: dict[str, int] = field(default_factory=dict)  # warning -> how often
    outputs: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        """A few human-readable lines."""
        rate = self.frames_read / self.total_s if self.total_s > 0 else 0.0
        lines = [
            f"input:      {self.input}",
            f"model:      {self.model}",
            f"frames:     {self.frames_read} read ({rate:.1f} frames/s overall), {self.keyframes} keyframes"
            f" ({self.keyframes_dropped} dropped, {self.keyframes_in_map} in the map)",
            f"windows:    {self.windows} placed, {self.windows_failed} failed; {self.mean_window_s:.2f} s per window on average"
            + (f"; {self.views_rejected} views rejected by the model" if self.views_rejected else ""),
            f"map:        {self.map_points} points (voxel {self.voxel_size:.4g} {self.units})",
            f"time:       {self.total_s:.1f} s",
        ]
        if self.frames_skipped or self.time_jumps or self.frames_out_of_order:
            lines.append(f"inputs:     {self.frames_skipped} frames skipped, {self.time_jumps} time jumps back, "
                         f"{self.frames_out_of_order} frames out of order")
        if self.stopped:
            lines.append(f"stopped:    {self.stopped}")
        lines += [f"failed:     {failure}" for failure in self.failures]
        lines += [f"{name + ':':<11} {path}" for name, path in self.outputs.items()]
        return "\n".join(lines)


def write_keyframes_json(
    output_dir: str | Path, trajectory: list[KeyframePose], frames: FrameNames, metric: bool, *,
    files: tuple[str, ...] = KEYFRAME_FILES["all"], map_frame: MapFrame | None = None,
) -> Path:
    """keyframes.json: poses (camera-to-map 4x4, OpenCV optical axes), intrinsics (the model's
    and, where the input gave them, the camera's) and the names of the keyframe `files`
    written; by the offline tool and by the node's ~/save_map (which writes none)."""
    entries = []
    for keyframe in trajectory:
        entries.append({
            "keyframe_id": keyframe.keyframe_id,
            "stamp_ns": int(keyframe.stamp_ns),
            "stamp_s": keyframe.stamp_ns / 1e9,
            "camera_id": keyframe.camera_id,
            "frame_id": frames.keyframe_frame(keyframe.keyframe_id),
            "window_index": keyframe.window_index,
            "pose": np.asarray(keyframe.pose if map_frame is None else map_frame.poses(keyframe.pose), np.float64).tolist(),
            "intrinsics": np.asarray(keyframe.intrinsics, np.float64).tolist(),
            "image_size": list(keyframe.image_size),
            "camera_intrinsics": None if keyframe.camera_intrinsics is None else np.asarray(keyframe.camera_intrinsics).tolist(),
            **keyframe_files(keyframe.keyframe_id, files),
        })
    document = {
        "map_frame": frames.map_frame,
        "units": "metres" if metric else "map units (the model's own scale)",
        "pose": "camera-to-map 4x4, OpenCV optical axes (x right, y down, z forward)",
        "intrinsics": "3x3 in the pixels of the model's input image (image_size = width, height), which the depth maps use",
        "camera_intrinsics": "3x3 of the source camera, where the input provided them",
        "keyframes": entries,
    }
    return write_json(Path(output_dir) / "keyframes.json", document)


class MapOutputs:
    """Writes per-window products as windows arrive (`on_window`) and the rest at the end."""

    def __init__(self, output_dir: str | Path, map_config: MapConfig, save_windows: bool = False, keyframe_files: str = "all",
                 exports: tuple[str, ...] = ()) -> None:
        unknown = sorted(set(exports) - set(EXPORT_FORMATS))
        if unknown:
            raise ValueError(f"unknown export format(s) {', '.join(unknown)}; choose from {', '.join(EXPORT_FORMATS)}")
        self.output_dir = Path(output_dir)
        self.map_config = map_config
        self.save_windows = save_windows
        self.files = KEYFRAME_FILES[keyframe_files]
        self.exports = tuple(name for name in EXPORT_FORMATS if name in exports)
        # Both exports name the keyframe images, written as windows arrive.
        self.image_dir = self.output_dir / NERFSTUDIO_DIR / IMAGE_DIR if {"colmap", "nerfstudio"} & set(exports) else None
        self.windows: list[WindowRecord] = []
        self.started = time.perf_counter()
        if self.files:
            (self.output_dir / KEYFRAME_DIR).mkdir(parents=True, exist_ok=True)
        if save_windows:
            (self.output_dir / WINDOW_DIR).mkdir(parents=True, exist_ok=True)

    def on_window(self, window: WindowInMap) -> None:
        """Save the files of the keyframes this window added (their images too, for the
        exports), and its cloud."""
        if self.image_dir is not None:
            for view in window.new_views:
                write_png(self.image_dir / keyframe_image_name(window.keyframes[view].keyframe_id), window.images[view])
        keep = [
            mask & confidence_mask(confidence, self.map_config.min_confidence, self.map_config.drop_percentile)
            for confidence, mask in zip(window.confidences, window.masks, strict=True)
        ]
        for view in window.new_views:
            files = keyframe_files(window.keyframes[view].keyframe_id, self.files)
            depth = np.where(keep[view], np.asarray(window.depths[view], np.float32), np.float32(np.nan))
            writers = {
                "depth": lambda path, depth=depth: np.save(path, depth),
                "depth_png": lambda path, depth=depth: cv2.imwrite(str(path), colorize(depth, cv2.COLORMAP_TURBO, depth > 0)),
                "confidence_png": lambda path, view=view: cv2.imwrite(
                    str(path), colorize(window.confidences[view], cv2.COLORMAP_VIRIDIS)),
            }
            for kind, name in files.items():
                with atomic_path(self.output_dir / name) as temporary:
                    writers[kind](temporary)
        if self.save_windows:
            write_ply(
                self.output_dir / WINDOW_DIR / f"window_{window.index:04d}.ply",
                np.concatenate([points[mask] for points, mask in zip(window.points, keep, strict=True)]),
                np.concatenate([image[mask] for image, mask in zip(window.images, keep, strict=True)]),
            )
        self.windows.append(WindowRecord(
            index=window.index,
            views=len(window.keyframes),
            new_keyframes=len(window.new_views),
            reconstruct_s=window.timings.get("reconstruct_s", 0.0),
            chain_s=window.timings.get("chain_s", 0.0),
            integrate_s=window.timings.get("integrate_s", 0.0),
            scale=float(window.scale),
            inlier_ratio=None if window.fit is None else float(window.fit.inlier_ratio),
        ))

    def depth_of(self, keyframe: KeyframePose) -> np.ndarray:
        """A saved keyframe depth map (memory-mapped)."""
        return np.load(self.output_dir / keyframe_files(keyframe.keyframe_id, ("depth",))["depth"], mmap_mode="r")

    def write_keyframes_json(self, trajectory: list[KeyframePose], frames: FrameNames, metric: bool) -> Path:
        """keyframes.json in the output folder (see `write_keyframes_json`)."""
        return write_keyframes_json(self.output_dir, trajectory, frames, metric, files=self.files)

    def write_exports(self, trajectory: list[KeyframePose], cloud: PointCloud, map_frame: MapFrame | None = None) -> dict[str, list[Path]]:
        """Write the chosen exports into the output folder (`write_map_exports`), with the
        keyframe images `on_window` wrote; {} without exports.  Returns the files per format."""
        if not self.exports:
            return {}
        return write_map_exports(self.output_dir, self.exports, trajectory, cloud, None, map_frame)

    def summary(self, summary: RunSummary) -> RunSummary:
        """Fill in the window timings and total time, and write summary.json."""
        summary.window_s = [round(w.reconstruct_s + w.chain_s + w.integrate_s, 4) for w in self.windows]
        summary.mean_window_s = float(np.mean(summary.window_s)) if summary.window_s else 0.0
        summary.total_s = time.perf_counter() - self.started
        path = self.output_dir / "summary.json"
        summary.outputs["summary"] = str(path)
        document: dict[str, Any] = asdict(summary)
        document["window_details"] = [asdict(window) for window in self.windows]
        write_json(path, document)
        return summary
