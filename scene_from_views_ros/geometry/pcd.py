"""Binary PCD writing for point clouds (PCL's format, v0.7; read by PCL, open3d, CloudCompare).

A coloured cloud has the fields `x y z rgb`, the layout of PCL's PointXYZRGB: `rgb` is the
uint32 0x00RRGGBB whose four bytes PCL reads as a float32 (`TYPE F`).  Without colours the
fields are `x y z`.  The cloud is unorganised (WIDTH = POINTS, HEIGHT 1), seen from the origin
(VIEWPOINT 0 0 0 1 0 0 0), and its records are little-endian, as PCL writes them on every
platform it runs on.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.files import write_bytes

_XYZ = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
_XYZ_DTYPE = np.dtype(_XYZ)
# rgb as its uint32 bit pattern: the same four bytes as PCL's float, with no float conversion
# (which could touch the bits of a NaN-like pattern) on the way.
_XYZRGB_DTYPE = np.dtype([*_XYZ, ("rgb", "<u4")])


def _header(fields: list[str], count: int) -> bytes:
    return (
        "# .PCD v0.7 - Point Cloud Data file format\n"
        "VERSION 0.7\n"
        f"FIELDS {' '.join(fields)}\n"
        f"SIZE {' '.join('4' for _ in fields)}\n"
        f"TYPE {' '.join('F' for _ in fields)}\n"
        f"COUNT {' '.join('1' for _ in fields)}\n"
        f"WIDTH {count}\n"
        "HEIGHT 1\n"
        "VIEWPOINT 0 0 0 1 0 0 0\n"
        f"POINTS {count}\n"
        "DATA binary\n"
    ).encode("ascii")


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """Nx3 uint8 RGB -> N uint32 0x00RRGGBB (PCL's packed rgb, as bits)."""
    rgb = colors.astype(np.uint32)
    return (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]


def write_pcd(path: str | Path, points: np.ndarray, colors: np.ndarray | None = None) -> Path:
    """Write an Nx3 cloud (float32, or anything that casts to it) with optional Nx3 uint8 RGB
    colours as a binary PCD file, atomically (a temporary file beside it, then a rename; the
    folder is created if need be).  Returns the path."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {points.shape}")
    count = points.shape[0]
    if colors is None:
        records = np.empty(count, dtype=_XYZ_DTYPE)
        fields = ["x", "y", "z"]
    else:
        colors = np.asarray(colors)
        if colors.shape != (count, 3):
            raise ValueError(f"colors must have shape (N, 3) with N = {count} as the points, got {colors.shape}")
        if colors.dtype != np.uint8:
            raise ValueError(f"colors must be uint8 (0-255), got {colors.dtype}")
        records = np.empty(count, dtype=_XYZRGB_DTYPE)
        records["rgb"] = pack_rgb(colors)
        fields = ["x", "y", "z", "rgb"]
    records["x"], records["y"], records["z"] = points.astype(np.float32, copy=False).T
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_bytes(path, _header(fields, count), records)


def unpack_rgb(rgb: np.ndarray) -> np.ndarray:
    """N uint32 0x00RRGGBB -> Nx3 uint8 RGB (the inverse of `pack_rgb`)."""
    rgb = rgb.astype(np.uint32, copy=False)
    return np.stack([(rgb >> 16) & 0xFF, (rgb >> 8) & 0xFF, rgb & 0xFF], axis=1).astype(np.uint8)


def read_pcd(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a PCD cloud with the fields `x y z` or `x y z rgb` (4-byte fields, one value each,
    DATA binary or ascii: what `write_pcd` writes, and what PCL and open3d write for such clouds)
    into (points float32 Nx3, colours uint8 Nx3, or None without an rgb field).  Other layouts
    (other fields, binary_compressed) raise ValueError."""
    data = Path(path).read_bytes()
    header: dict[str, list[str]] = {}
    offset = 0
    while "DATA" not in header:
        end = data.find(b"\n", offset)
        if end < 0:
            raise ValueError(f"{path}: not a PCD file (no DATA line)")
        line = data[offset:end].decode("ascii", errors="replace").strip()
        offset = end + 1
        if line and not line.startswith("#"):
            key, *values = line.split()
            header[key] = values
    fields = header.get("FIELDS", [])
    if fields not in (["x", "y", "z"], ["x", "y", "z", "rgb"]):
        raise ValueError(f"{path}: only the fields 'x y z' or 'x y z rgb' are supported, got {' '.join(fields)!r}")
    if header.get("SIZE") != ["4"] * len(fields) or header.get("COUNT", ["1"] * len(fields)) != ["1"] * len(fields):
        raise ValueError(f"{path}: only fields of one 4-byte value are supported")
    types = header.get("TYPE", [])
    if types[:3] != ["F", "F", "F"] or (len(fields) == 4 and types[3] not in ("F", "U")):
        raise ValueError(f"{path}: x y z must be float (TYPE F) and rgb float or unsigned, got TYPE {' '.join(types)}")
    count = int(header["POINTS"][0]) if "POINTS" in header else int(header["WIDTH"][0]) * int(header.get("HEIGHT", ["1"])[0])
    kind = header["DATA"][0]
    if kind == "binary":
        records = np.frombuffer(data, dtype=_XYZRGB_DTYPE if len(fields) == 4 else _XYZ_DTYPE, count=count, offset=offset)
        points = np.stack([records["x"], records["y"], records["z"]], axis=1)
        return points, unpack_rgb(records["rgb"]) if len(fields) == 4 else None
    if kind == "ascii":
        tokens = np.array(data[offset:].decode("ascii").split())
        if tokens.size != count * len(fields):
            raise ValueError(f"{path}: {tokens.size} values for {count} points of {len(fields)} fields")
        table = tokens.reshape(count, len(fields))
        points = table[:, :3].astype(np.float32)
        if len(fields) == 3:
            return points, None
        column = table[:, 3]
        # PCL and open3d print rgb as its integer bit pattern; a float rgb may be printed as a float.
        rgb = column.astype(np.uint64) if np.char.isdigit(column).all() else column.astype(np.float32).view(np.uint32)
        return points, unpack_rgb(rgb)
    raise ValueError(f"{path}: DATA {kind} is not supported (binary and ascii are)")
