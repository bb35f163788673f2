"""Map exports that other tools read: a COLMAP text model, a nerfstudio dataset, a PCD cloud.

``write_map_exports(folder, formats, ...)`` writes, for each chosen format::

    colmap/cameras.txt          one PINHOLE camera per distinct (intrinsics, image size)
    colmap/images.txt           one image per keyframe (world-to-camera pose), no 2D points
    colmap/points3D.txt         the map cloud: id, x y z, r g b, error -1, empty track
    nerfstudio/transforms.json  one frame per keyframe that has an image (camera-to-world)
    nerfstudio/images/kf_<id>.png   the keyframes' processed images (lossless PNG)
    nerfstudio/sparse_pc.ply    the map cloud, which nerfstudio's splatfacto starts from
    map.pcd                     the map cloud as binary PCD (PCL's PointXYZRGB layout)

The COLMAP model's image names are the file names in ``nerfstudio/images`` (``kf_<id>.png``),
so both exports share one copy of the images (COLMAP: pass ``nerfstudio/images`` as the image
path); the images are written when either of the two is chosen.

Conventions (everything is checked by round trips in test/test_exports.py):

* World frame and units: the map's (``map_frame``: the node's published map frame, REP-103;
  without it, the mapper's own frame, the first keyframe's optical frame).  Lengths are in map
  units: metres for a metric model or a known scale, otherwise the model's own scale.
* Our keyframe poses are camera-to-world with OpenCV optical axes (x right, y down, z forward).
* COLMAP stores world-to-camera (``cam_from_world``): ``QW QX QY QZ TX TY TZ`` is the rotation
  (Hamilton quaternion, scalar first, w >= 0) and translation of ``inv(pose)``; COLMAP's camera
  axes are OpenCV's too.
* nerfstudio (like NeRF's Blender format) stores camera-to-world ``transform_matrix`` with
  OpenGL camera axes (x right, y up, z back: the camera looks down -z), so
  ``transform_matrix = pose @ diag(1, -1, -1, 1)``.
* Pixels: our intrinsics put the centre of the top-left pixel at (0, 0) (OpenCV); COLMAP and
  nerfstudio put it at (0.5, 0.5) (the pixel's corner is (0, 0)).  Both exports therefore
  write ``cx + 0.5`` and ``cy + 0.5``; focal lengths are unchanged.
* Intrinsics and image sizes are those of the model's processed image (the keyframe images
  written here, the depth maps), not the source camera's.

A keyframe without an image (``image_of`` gave None and no file from an earlier write is
there) is left out of transforms.json, which lists its id under
``missing_keyframe_images``, and a warning is logged; if no keyframe has an image at all,
`write_nerfstudio` raises ValueError (a nerfstudio dataset without images is of no use).
COLMAP's images.txt lists every keyframe regardless.  Every file is written under a temporary
name and renamed into place.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import cv2
import numpy as np

from ..core.files import atomic_path, write_json, write_text
from ..core.result import PointCloud
from ..geometry.pcd import write_pcd
from ..geometry.ply import write_ply
from ..geometry.sim3 import rotation_to_quaternion
from ..mapping.chaining import WindowInMap, usable_intrinsics
from ..mapping.global_map import KeyframePose
from ..mapping.map_frame import MapFrame

LOG = logging.getLogger(__name__)

EXPORT_FORMATS = ("colmap", "nerfstudio", "pcd")
COLMAP_DIR = "colmap"
NERFSTUDIO_DIR = "nerfstudio"
IMAGE_DIR = "images"  # inside the nerfstudio folder
PCD_NAME = "map.pcd"
NERFSTUDIO_PLY = "sparse_pc.ply"
# OpenCV camera axes (x right, y down, z forward) <-> OpenGL/nerfstudio (x right, y up, z back).
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])
# COLMAP and nerfstudio put the top-left pixel's centre at (0.5, 0.5), OpenCV at (0, 0).
PIXEL_CENTRE_OFFSET = 0.5

ImageSource = Callable[[KeyframePose], np.ndarray | None]


def parse_exports(text: str) -> tuple[str, ...]:
    """Export formats from a comma-separated list ("colmap,nerfstudio,pcd"), "all", or "" (or
    "none") for none; in `EXPORT_FORMATS` order, each once.  Unknown names raise ValueError."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    if names in ([], ["none"]):
        return ()
    if names == ["all"]:
        return EXPORT_FORMATS
    unknown = [name for name in names if name not in EXPORT_FORMATS]
    if unknown:
        raise ValueError(f"unknown export format(s) {', '.join(repr(name) for name in unknown)}; "
                         f"choose from {', '.join(EXPORT_FORMATS)}, 'all' or '' (none)")
    return tuple(name for name in EXPORT_FORMATS if name in names)


def keyframe_image_name(keyframe_id: int) -> str:
    """File name of a keyframe's image (in nerfstudio/images; also its COLMAP image name)."""
    return f"kf_{keyframe_id:06d}.png"


def _poses(trajectory: list[KeyframePose], map_frame: MapFrame | None) -> np.ndarray:
    """Camera-to-world 4x4 poses (OpenCV axes) of the keyframes, in the export's world frame."""
    poses = np.stack([np.asarray(kf.pose, np.float64) for kf in trajectory]) if trajectory else np.zeros((0, 4, 4))
    return poses if map_frame is None else map_frame.poses(poses)


def _points(cloud: PointCloud, map_frame: MapFrame | None) -> np.ndarray:
    return np.asarray(cloud.points, np.float32) if map_frame is None else map_frame.points(cloud.points)


def world_to_camera(poses: np.ndarray) -> np.ndarray:
    """Inverse of rigid camera-to-world poses (..., 4, 4)."""
    rotation = np.swapaxes(poses[..., :3, :3], -1, -2)
    inverse = np.zeros_like(poses)
    inverse[..., :3, :3] = rotation
    inverse[..., :3, 3] = -(rotation @ poses[..., :3, 3:4])[..., 0]
    inverse[..., 3, 3] = 1.0
    return inverse


def _with_usable_intrinsics(trajectory: list[KeyframePose], export: str) -> list[KeyframePose]:
    """The keyframes whose K the export can hold (finite, positive focals); the others (a
    degenerate predicted K and no known one) are left out, with a warning."""
    kept = [keyframe for keyframe in trajectory if usable_intrinsics(np.asarray(keyframe.intrinsics))]
    if len(kept) < len(trajectory):
        LOG.warning("%s export: %d of %d keyframes have no finite, positive intrinsics and are left out (give the camera's "
                    "CameraInfo or --intrinsics)", export, len(trajectory) - len(kept), len(trajectory))
    return kept


def _pinhole(keyframe: KeyframePose) -> tuple[int, int, float, float, float, float]:
    """(width, height, fx, fy, cx, cy) with COLMAP's / nerfstudio's pixel centres."""
    k = np.asarray(keyframe.intrinsics, np.float64)
    width, height = keyframe.image_size
    return (int(width), int(height), float(k[0, 0]), float(k[1, 1]),
            float(k[0, 2]) + PIXEL_CENTRE_OFFSET, float(k[1, 2]) + PIXEL_CENTRE_OFFSET)


# ---- COLMAP ----------------------------------------------------------------------------------
_POINT_ROW = "%d %.9g %.9g %.9g %d %d %d -1\n"  # float32 coordinates round-trip with 9 digits
_POINT_CHUNK = 65536


def _point_lines(points: np.ndarray, colors: np.ndarray) -> Iterable[str]:
    """points3D.txt rows, a chunk of points at a time: one C-level format of the whole chunk,
    not a Python statement per point (a million points take about a second)."""
    for start in range(0, len(points), _POINT_CHUNK):
        stop = min(start + _POINT_CHUNK, len(points))
        table = np.empty((stop - start, 7))
        table[:, 0] = np.arange(start + 1, stop + 1)
        table[:, 1:4] = points[start:stop]
        table[:, 4:7] = colors[start:stop]
        yield (_POINT_ROW * (stop - start)) % tuple(table.ravel().tolist())


def write_colmap_text(folder: str | Path, trajectory: list[KeyframePose], cloud: PointCloud,
                      map_frame: MapFrame | None = None, image_names: Mapping[int, str] | None = None) -> list[Path]:
    """A COLMAP text model (folder/cameras.txt, images.txt, points3D.txt) of the keyframes and
    the cloud, in `map_frame` (see the module's conventions).  Cameras are PINHOLE, one per
    distinct (intrinsics, image size); image ids are 1..N in trajectory order, named
    `image_names[keyframe_id]` or `keyframe_image_name`; points have ids 1..M, error -1 (not
    computed) and no track; keyframes without a finite, positive K are left out (warned).
    Returns the three paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    trajectory = _with_usable_intrinsics(trajectory, "COLMAP")
    cameras: dict[tuple[int, int, float, float, float, float], int] = {}
    camera_of = [cameras.setdefault(_pinhole(kf), len(cameras) + 1) for kf in trajectory]
    camera_lines = ["# Camera list with one line of data per camera:",
                    "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[] (PINHOLE: fx, fy, cx, cy)",
                    f"# Number of cameras: {len(cameras)}"]
    camera_lines += [f"{camera_id} PINHOLE {w} {h} {fx!r} {fy!r} {cx!r} {cy!r}"
                     for (w, h, fx, fy, cx, cy), camera_id in cameras.items()]

    from_world = world_to_camera(_poses(trajectory, map_frame))
    quaternions = rotation_to_quaternion(from_world[:, :3, :3]) if trajectory else np.zeros((0, 4))
    image_lines = ["# Image list with two lines of data per image:",
                   "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
                   "#   POINTS2D[] as (X, Y, POINT3D_ID)",
                   f"# Number of images: {len(trajectory)}, mean observations per image: 0"]
    for number, (keyframe, pose, (qx, qy, qz, qw), camera_id) in enumerate(
            zip(trajectory, from_world.tolist(), quaternions.tolist(), camera_of, strict=True), 1):
        name = (image_names or {}).get(keyframe.keyframe_id) or keyframe_image_name(keyframe.keyframe_id)
        if not name or any(character.isspace() for character in name):
            raise ValueError(f"COLMAP image names cannot be empty or hold white space: {name!r}")
        tx, ty, tz = (row[3] for row in pose[:3])
        image_lines += [f"{number} {qw!r} {qx!r} {qy!r} {qz!r} {tx!r} {ty!r} {tz!r} {camera_id} {name}", ""]

    points = _points(cloud, map_frame)
    points3d = folder / "points3D.txt"
    with atomic_path(points3d) as temporary, open(temporary, "w") as stream:
        stream.write("# 3D point list with one line of data per point:\n"
                     "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n"
                     f"# Number of points: {len(points)}, mean track length: 0\n")
        for lines in _point_lines(points, np.asarray(cloud.colors, np.uint8)):
            stream.write(lines)
    return [write_text(folder / "cameras.txt", "\n".join(camera_lines) + "\n"),
            write_text(folder / "images.txt", "\n".join(image_lines) + "\n"),
            points3d]


# ---- images ----------------------------------------------------------------------------------
def _check_rgb(image: np.ndarray, what: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{what}: expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
    return image


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an HxWx3 uint8 RGB image as PNG, atomically (the folder is created if need be)."""
    image = _check_rgb(image, str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        if not cv2.imwrite(str(temporary), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")
    return path


def write_keyframe_images(folder: str | Path, trajectory: list[KeyframePose],
                          image_of: ImageSource | None) -> tuple[dict[int, Path], list[int]]:
    """Write each keyframe's image that `image_of` gives as folder/kf_<id>.png (its size must be
    the keyframe's image_size); where it gives None (or there is no `image_of`), a file already
    there (streamed by `MapOutputs`) is kept.  Returns ({keyframe_id: path} of the keyframes
    with an image, ids of those without one)."""
    folder = Path(folder)
    found: dict[int, Path] = {}
    missing: list[int] = []
    for keyframe in trajectory:
        path = folder / keyframe_image_name(keyframe.keyframe_id)
        image = None if image_of is None else image_of(keyframe)
        if image is not None:
            image = _check_rgb(image, f"keyframe {keyframe.keyframe_id}")
            if (image.shape[1], image.shape[0]) != tuple(keyframe.image_size):
                raise ValueError(f"keyframe {keyframe.keyframe_id}: image is {image.shape[1]}x{image.shape[0]} but its "
                                 f"intrinsics are for {keyframe.image_size[0]}x{keyframe.image_size[1]}")
            found[keyframe.keyframe_id] = write_png(path, image)
        elif path.is_file():
            found[keyframe.keyframe_id] = path
        else:
            missing.append(keyframe.keyframe_id)
    return found, missing


# ---- nerfstudio ------------------------------------------------------------------------------
def write_nerfstudio(folder: str | Path, trajectory: list[KeyframePose], image_of: ImageSource | None,
                     map_frame: MapFrame | None = None, cloud: PointCloud | None = None) -> list[Path]:
    """A nerfstudio dataset in `folder`: transforms.json (camera_model PINHOLE; per frame
    file_path "images/kf_<id>.png", transform_matrix camera-to-world with OpenGL axes, fl_x,
    fl_y, cx, cy, w, h), the images (see `write_keyframe_images`) and, given a `cloud`,
    sparse_pc.ply (its ply_file_path) in the same world frame.  Keyframes without an image are
    left out and listed under missing_keyframe_images; none at all raises ValueError.  Returns
    transforms.json, the ply and every image the frames name."""
    folder = Path(folder)
    trajectory = _with_usable_intrinsics(trajectory, "nerfstudio")
    images, missing = write_keyframe_images(folder / IMAGE_DIR, trajectory, image_of)
    if trajectory and not images:
        raise ValueError(f"nerfstudio export: none of the {len(trajectory)} keyframes has an image "
                         "(keyframe images are kept only while exports are enabled)")
    if missing:
        LOG.warning("nerfstudio export: %d of %d keyframes have no image and are left out (ids %s)",
                    len(missing), len(trajectory), ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else ""))
    frames = []
    for keyframe, pose in zip(trajectory, _poses(trajectory, map_frame), strict=True):
        if keyframe.keyframe_id not in images:
            continue
        width, height, fx, fy, cx, cy = _pinhole(keyframe)
        frames.append({
            "file_path": f"{IMAGE_DIR}/{keyframe_image_name(keyframe.keyframe_id)}",
            "transform_matrix": (pose @ OPENCV_TO_OPENGL).tolist(),
            "fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "w": width, "h": height,
            "keyframe_id": keyframe.keyframe_id,
            "stamp_ns": int(keyframe.stamp_ns),
            "camera_id": keyframe.camera_id,
        })
    document: dict[str, object] = {"camera_model": "PINHOLE", "frames": frames}
    written = []
    if cloud is not None:
        written.append(write_ply(folder / NERFSTUDIO_PLY, _points(cloud, map_frame), cloud.colors))
        document["ply_file_path"] = NERFSTUDIO_PLY
    if missing:
        document["missing_keyframe_images"] = missing
    document["conventions"] = ("transform_matrix: camera-to-world, OpenGL camera axes (x right, y up, z back); "
                               "cx, cy: the top-left pixel's centre is (0.5, 0.5)")
    return [write_json(folder / "transforms.json", document), *written, *images.values()]


# ---- all -------------------------------------------------------------------------------------
def write_map_exports(folder: str | Path, formats: Iterable[str], trajectory: list[KeyframePose], cloud: PointCloud,
                      image_of: ImageSource | None, map_frame: MapFrame | None = None) -> dict[str, list[Path]]:
    """Write the chosen `formats` (of `EXPORT_FORMATS`) into `folder`: folder/map.pcd,
    folder/colmap/, folder/nerfstudio/ (the keyframe images in folder/nerfstudio/images for
    both colmap and nerfstudio).  `image_of` gives a keyframe's processed RGB image or None
    (None throughout: the images were written before, by `MapOutputs`).  Returns the files
    written per format; the PCD and COLMAP files are written before a nerfstudio export
    without any image raises."""
    formats = tuple(formats)
    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown:
        raise ValueError(f"unknown export format(s) {', '.join(unknown)}; choose from {', '.join(EXPORT_FORMATS)}")
    folder = Path(folder)
    written: dict[str, list[Path]] = {}
    if "pcd" in formats:
        written["pcd"] = [write_pcd(folder / PCD_NAME, _points(cloud, map_frame), cloud.colors)]
    if "colmap" in formats:
        written["colmap"] = write_colmap_text(folder / COLMAP_DIR, trajectory, cloud, map_frame)
        if "nerfstudio" not in formats:
            images, _ = write_keyframe_images(folder / NERFSTUDIO_DIR / IMAGE_DIR, trajectory, image_of)
            written["colmap"] += list(images.values())
    if "nerfstudio" in formats:
        written["nerfstudio"] = write_nerfstudio(folder / NERFSTUDIO_DIR, trajectory, image_of, map_frame, cloud)
    return written


# ---- keyframe images kept in memory (the node) ------------------------------------------------
class KeyframeImages:
    """Each keyframe's processed image, compressed in memory, for the exports a node writes on
    request.  JPEG at `jpeg_quality` 95 by default: camera images shrink about tenfold (PNG
    manages about 1.5 to 2 times), which matters over a run of thousands of keyframes, and the
    error (a grey level or two) is below a camera's own noise; `jpeg_quality=None` keeps
    lossless PNG.  Thread-safe (the mapping worker adds, a service reads)."""

    def __init__(self, jpeg_quality: int | None = 95) -> None:
        if jpeg_quality is not None and not 1 <= jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be 1..100 or None (PNG), got {jpeg_quality}")
        self.jpeg_quality = jpeg_quality
        self._encoded: dict[int, np.ndarray] = {}
        self._nbytes = 0
        self._lock = threading.Lock()

    def add(self, keyframe_id: int, image: np.ndarray) -> None:
        """Keep (or replace) a keyframe's HxWx3 uint8 RGB image."""
        bgr = cv2.cvtColor(_check_rgb(image, f"keyframe {keyframe_id}"), cv2.COLOR_RGB2BGR)
        if self.jpeg_quality is None:
            ok, encoded = cv2.imencode(".png", bgr)
        else:
            ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            raise ValueError(f"keyframe {keyframe_id}: the image could not be encoded")
        with self._lock:
            previous = self._encoded.pop(keyframe_id, None)
            self._nbytes += encoded.nbytes - (0 if previous is None else previous.nbytes)
            self._encoded[keyframe_id] = encoded

    def add_window(self, window: WindowInMap) -> None:
        """Keep the images of the keyframes `window` added to the map."""
        for view in window.new_views:
            self.add(window.keyframes[view].keyframe_id, window.images[view])

    def get(self, keyframe_id: int) -> np.ndarray | None:
        """The keyframe's RGB image (decoded), or None if it is not kept."""
        with self._lock:
            encoded = self._encoded.get(keyframe_id)
        if encoded is None:
            return None
        decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
        if decoded is None:  # cannot happen for what `add` encoded
            raise ValueError(f"keyframe {keyframe_id}: the kept image does not decode")
        return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)

    def image_of(self, keyframe: KeyframePose) -> np.ndarray | None:
        """`get` by keyframe: the `image_of` that `write_map_exports` takes."""
        return self.get(keyframe.keyframe_id)

    def clear(self) -> None:
        with self._lock:
            self._encoded.clear()
            self._nbytes = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._encoded)

    def __contains__(self, keyframe_id: object) -> bool:
        with self._lock:
            return keyframe_id in self._encoded

    @property
    def nbytes(self) -> int:
        """Bytes of compressed image data kept."""
        with self._lock:
            return self._nbytes
