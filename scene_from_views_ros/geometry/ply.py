"""Binary PLY reading and writing for coloured point clouds (what RViz, MeshLab and open3d read)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.files import write_bytes

_VERTEX_DTYPE = np.dtype(
    [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
)


def write_ply(path: str | Path, points: np.ndarray, colors: np.ndarray | None = None) -> Path:
    """Write an Nx3 cloud (float32 metres or map units) with optional Nx3 uint8 RGB colours."""
    points = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    if colors is None:
        colors = np.full_like(points, 255, dtype=np.uint8)
    colors = np.asarray(colors).reshape(-1, 3)
    if colors.shape[0] != points.shape[0]:
        raise ValueError(f"{points.shape[0]} points but {colors.shape[0]} colours")
    if colors.dtype != np.uint8:
        colors = np.clip(np.rint(colors * 255.0 if colors.max(initial=0) <= 1.0 else colors), 0, 255).astype(np.uint8)
    vertices = np.empty(points.shape[0], dtype=_VERTEX_DTYPE)
    vertices["x"], vertices["y"], vertices["z"] = points.T
    vertices["red"], vertices["green"], vertices["blue"] = colors.T
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {points.shape[0]}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        "end_header\n"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_bytes(path, header.encode("ascii"), vertices)


def read_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a PLY written by `write_ply` back into (points float32 Nx3, colors uint8 Nx3)."""
    data = Path(path).read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path} is not a PLY file")
    header = data[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in header:
        raise ValueError(f"{path}: only binary little-endian PLY files written by write_ply are supported")
    count = next(int(line.split()[2]) for line in header if line.startswith("element vertex"))
    vertices = np.frombuffer(data, dtype=_VERTEX_DTYPE, count=count, offset=end + len(b"end_header\n"))
    points = np.stack([vertices["x"], vertices["y"], vertices["z"]], axis=1)
    colors = np.stack([vertices["red"], vertices["green"], vertices["blue"]], axis=1)
    return points, colors
