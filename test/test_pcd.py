"""Binary PCD files (geometry.pcd) checked against open3d's reader, a per-point struct packing of
PCL's PointXYZRGB layout, and the failure modes of an atomic write."""
from __future__ import annotations

import errno
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest

from scene_from_views_ros.geometry.pcd import pack_rgb, read_pcd, unpack_rgb, write_pcd

RNG = np.random.default_rng(11)


def header(fields: str, count: int) -> bytes:
    """The header write_pcd must write, spelled out."""
    size, kind, one = (" ".join(value for _ in fields.split()) for value in ("4", "F", "1"))
    return (f"# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS {fields}\nSIZE {size}\nTYPE {kind}\nCOUNT {one}\n"
            f"WIDTH {count}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {count}\nDATA binary\n").encode()


def cloud(count: int) -> tuple[np.ndarray, np.ndarray]:
    points = (RNG.normal(size=(count, 3)) * [1e-3, 10.0, 1e4]).astype(np.float32)
    colors = RNG.integers(0, 256, (count, 3), dtype=np.uint8)
    colors[:4] = [[255, 255, 255], [0, 0, 0], [255, 0, 128], [1, 2, 3]]
    return points, colors


def files_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_open3d_reads_back_the_same_points_and_colours(tmp_path: Path) -> None:
    points, colors = cloud(2000)
    path = write_pcd(tmp_path / "map.pcd", points, colors)
    assert path == tmp_path / "map.pcd" and files_in(tmp_path) == ["map.pcd"]
    read = o3d.io.read_point_cloud(str(path))
    assert np.array_equal(np.asarray(read.points), points.astype(np.float64))  # float32 values, exactly
    assert np.array_equal(np.asarray(read.colors), colors / 255.0)
    ours_points, ours_colors = read_pcd(path)
    assert ours_points.dtype == np.float32 and np.array_equal(ours_points, points) and np.array_equal(ours_colors, colors)


def test_records_follow_pcl_point_xyzrgb(tmp_path: Path) -> None:
    """Header as PCL writes it, then per point x y z as float32 and rgb as the float32 whose bits
    are the uint32 0x00RRGGBB."""
    points, colors = cloud(5)
    data = write_pcd(tmp_path / "map.pcd", points, colors).read_bytes()
    expected = b"".join(struct.pack("<fffI", *p, int(c[0]) << 16 | int(c[1]) << 8 | int(c[2])) for p, c in zip(points.tolist(), colors.tolist(), strict=True))
    assert data == header("x y z rgb", 5) + expected
    rgb = np.frombuffer(data[len(header("x y z rgb", 5)):], dtype=[("xyz", "<f4", 3), ("rgb", "<f4")])["rgb"]
    assert rgb.view("<u4")[2] == 0x00FF0080 and rgb.view("<u4")[3] == 0x00010203
    assert np.array_equal(unpack_rgb(pack_rgb(colors)), colors)


def test_points_without_colours(tmp_path: Path) -> None:
    points, _ = cloud(300)
    path = write_pcd(tmp_path / "map.pcd", points.astype(np.float64))  # cast to float32 on the way
    data = path.read_bytes()
    assert data[:len(header("x y z", 300))] == header("x y z", 300) and len(data) == len(header("x y z", 300)) + 300 * 12
    read = o3d.io.read_point_cloud(str(path))
    assert not read.has_colors() and np.array_equal(np.asarray(read.points), points.astype(np.float64))
    ours_points, ours_colors = read_pcd(path)
    assert ours_colors is None and np.array_equal(ours_points, points)


@pytest.mark.parametrize("with_colours", [True, False])
def test_an_empty_cloud_is_a_valid_file(tmp_path: Path, with_colours: bool) -> None:
    """The header alone, with WIDTH and POINTS 0 (as PCL writes an empty cloud).  open3d reads
    0 points from it, but it refuses every empty PCD ('PCD has no data'), so our reader checks
    the file too."""
    colors = np.zeros((0, 3), np.uint8) if with_colours else None
    path = write_pcd(tmp_path / "empty.pcd", np.zeros((0, 3), np.float32), colors)
    assert path.read_bytes() == header("x y z rgb" if with_colours else "x y z", 0)
    assert len(o3d.io.read_point_cloud(str(path)).points) == 0
    points, read_colors = read_pcd(path)
    assert points.shape == (0, 3) and points.dtype == np.float32
    assert (read_colors is not None and read_colors.shape == (0, 3)) if with_colours else read_colors is None


@pytest.mark.parametrize(("points_shape", "colors_shape", "message"), [
    ((3,), None, r"points must have shape \(N, 3\), got \(3,\)"),
    ((4, 2), None, r"points must have shape \(N, 3\), got \(4, 2\)"),
    ((2, 3, 1), None, r"points must have shape \(N, 3\), got \(2, 3, 1\)"),
    ((4, 3), (4, 4), r"colors must have shape \(N, 3\) with N = 4 as the points, got \(4, 4\)"),
    ((4, 3), (3, 3), r"colors must have shape \(N, 3\) with N = 4 as the points, got \(3, 3\)"),
    ((4, 3), (12,), r"colors must have shape \(N, 3\) with N = 4 as the points, got \(12,\)"),
])
def test_bad_shapes_raise_value_error_naming_the_expected_shape(tmp_path: Path, points_shape: tuple[int, ...],
                                                                colors_shape: tuple[int, ...] | None, message: str) -> None:
    colors = None if colors_shape is None else np.zeros(colors_shape, np.uint8)
    with pytest.raises(ValueError, match=message):
        write_pcd(tmp_path / "bad.pcd", np.zeros(points_shape, np.float32), colors)
    assert files_in(tmp_path) == []


def test_colours_must_be_uint8(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="colors must be uint8"):
        write_pcd(tmp_path / "bad.pcd", np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32))
    assert files_in(tmp_path) == []


def test_a_missing_folder_is_created(tmp_path: Path) -> None:
    points, colors = cloud(10)
    path = write_pcd(tmp_path / "a" / "b" / "map.pcd", points, colors)
    assert np.array_equal(read_pcd(path)[0], points) and files_in(path.parent) == ["map.pcd"]


def test_a_folder_that_cannot_be_made_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file where the folder should be")
    with pytest.raises(OSError):
        write_pcd(tmp_path / "taken" / "map.pcd", *cloud(10))
    assert files_in(tmp_path) == ["taken"] and (tmp_path / "taken").read_text() == "a file where the folder should be"


def test_a_write_that_fails_midway_leaves_no_partial_file_and_the_old_file_intact(tmp_path: Path) -> None:
    """A real short write: the child process may not grow a file past 64 KiB (RLIMIT_FSIZE; the
    write then fails with EFBIG, as on a full disk with ENOSPC) and writes a 1.6 MB cloud over
    an existing file."""
    (tmp_path / "map.pcd").write_bytes(b"the previous map")
    script = textwrap.dedent(f"""
        import errno, resource, signal
        import numpy as np
        from scene_from_views_ros.geometry.pcd import write_pcd
        points = np.zeros((100_000, 3), np.float32)
        colors = np.zeros((100_000, 3), np.uint8)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
        try:
            write_pcd({str(tmp_path / "map.pcd")!r}, points, colors)
        except OSError as error:
            print(error.errno)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.split() == [str(errno.EFBIG)], result.stderr
    assert files_in(tmp_path) == ["map.pcd"] and (tmp_path / "map.pcd").read_bytes() == b"the previous map"


def test_read_pcd_reads_open3d_binary_and_ascii_files(tmp_path: Path) -> None:
    """Another writer (open3d writes rgb as TYPE U) in both encodings."""
    points, colors = cloud(50)
    source = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
    source.colors = o3d.utility.Vector3dVector(colors / 255.0)
    for ascii_data in (False, True):
        path = tmp_path / f"open3d_{ascii_data}.pcd"
        assert o3d.io.write_point_cloud(str(path), source, write_ascii=ascii_data)
        read_points, read_colors = read_pcd(path)
        assert np.array_equal(read_points, points) and np.array_equal(read_colors, colors), ascii_data


def test_read_pcd_refuses_other_layouts(tmp_path: Path) -> None:
    path = tmp_path / "normals.pcd"
    source = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.ones((3, 3))))
    source.normals = o3d.utility.Vector3dVector(np.ones((3, 3)))
    assert o3d.io.write_point_cloud(str(path), source)
    with pytest.raises(ValueError, match="only the fields"):
        read_pcd(path)
    (tmp_path / "junk.pcd").write_text("junk")
    with pytest.raises(ValueError, match="not a PCD file"):
        read_pcd(tmp_path / "junk.pcd")
