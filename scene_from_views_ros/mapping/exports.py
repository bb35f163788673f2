"""Writing the map to disk: the cloud as PLY and PCD, the keyframe trajectory in TUM format.

TUM format (one pose per line, what evo and the TUM RGB-D tools read):
``timestamp tx ty tz qx qy qz qw`` with the timestamp in seconds and the pose camera-to-map.
Stamps are written from integer nanoseconds with all nine decimals, so they round-trip exactly.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.files import write_text
from ..geometry.pcd import write_pcd
from ..geometry.ply import write_ply
from ..geometry.sim3 import pose_to_translation_quaternion, quaternion_to_rotation
from .global_map import GlobalMap
from .map_frame import MapFrame


def write_tum(path: str | Path, stamps_ns: list[int], poses: list[np.ndarray]) -> Path:
    """Write camera-to-map 4x4 poses with their nanosecond stamps as a TUM trajectory."""
    if len(stamps_ns) != len(poses):
        raise ValueError(f"{len(stamps_ns)} stamps but {len(poses)} poses")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# timestamp tx ty tz qx qy qz qw"]
    if poses:
        translations, quaternions = pose_to_translation_quaternion(np.stack(poses))
        for stamp, translation, quaternion in zip(stamps_ns, translations, quaternions, strict=True):
            seconds, nanoseconds = divmod(int(stamp), 1_000_000_000)
            values = " ".join(f"{value:.9g}" for value in (*translation, *quaternion))
            lines.append(f"{seconds}.{nanoseconds:09d} {values}")
    return write_text(path, "\n".join(lines) + "\n")


def read_tum(path: str | Path) -> tuple[list[int], list[np.ndarray]]:
    """Read a TUM trajectory back into (stamps in ns, 4x4 camera-to-map poses)."""
    stamps, poses = [], []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 8:
            raise ValueError(f"{path}:{number}: expected 8 fields 'timestamp tx ty tz qx qy qz qw', got {len(fields)}")
        seconds, _, fraction = fields[0].partition(".")
        stamps.append(int(seconds) * 1_000_000_000 + int((fraction + "000000000")[:9]))
        values = np.array([float(value) for value in fields[1:]])
        pose = np.eye(4)
        pose[:3, :3] = quaternion_to_rotation(values[3:])
        pose[:3, 3] = values[:3]
        poses.append(pose)
    return stamps, poses


MAP_FORMATS = ("ply", "pcd", "tum")  # what `save_map` writes: <prefix>.ply, <prefix>.pcd, <prefix>_trajectory.tum


def save_map(global_map: GlobalMap, output_dir: str | Path, prefix: str = "map", map_frame: MapFrame | None = None,
             formats: tuple[str, ...] = ("ply", "tum")) -> dict[str, Path]:
    """Write the map cloud (`<prefix>.ply`, `<prefix>.pcd`) and the keyframes
    (`<prefix>_trajectory.tum`), those of `formats`, into `output_dir`, in `map_frame` (the
    node's published map) or the mapper's own frame.  Returns the path of each format."""
    unknown = sorted(set(formats) - set(MAP_FORMATS))
    if unknown:
        raise ValueError(f"unknown map format(s) {', '.join(unknown)}; choose from {', '.join(MAP_FORMATS)}")
    output_dir = Path(output_dir)
    cloud = global_map.cloud()
    trajectory = global_map.trajectory()
    poses = np.stack([keyframe.pose for keyframe in trajectory]) if trajectory else np.zeros((0, 4, 4))
    points = cloud.points
    if map_frame is not None:
        poses, points = map_frame.poses(poses), map_frame.points(points)
    writers = {
        "ply": lambda: write_ply(output_dir / f"{prefix}.ply", points, cloud.colors),
        "pcd": lambda: write_pcd(output_dir / f"{prefix}.pcd", points, cloud.colors),
        "tum": lambda: write_tum(output_dir / f"{prefix}_trajectory.tum", [keyframe.stamp_ns for keyframe in trajectory], list(poses)),
    }
    return {name: writers[name]() for name in MAP_FORMATS if name in formats}
