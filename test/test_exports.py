"""Map exports (io/exports.py) read back by the tools they are for: the COLMAP text model by
pycolmap, the PCD and nerfstudio's seed cloud by open3d, transforms.json by nerfstudio's
conventions spelled out here; with and without a published map frame.  The pixel checks use a
synthetic map whose window point maps are exact: the point a keyframe saw at pixel (u, v) must
project to that pixel's centre, (u + 0.5, v + 0.5) in COLMAP's and nerfstudio's pixels."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
import pycolmap
import pytest
from scipy.spatial.transform import Rotation

from scene_from_views_ros.core.result import PointCloud
from scene_from_views_ros.io.exports import (
    EXPORT_FORMATS,
    KeyframeImages,
    keyframe_image_name,
    parse_exports,
    write_colmap_text,
    write_map_exports,
    write_nerfstudio,
)
from scene_from_views_ros.io.outputs import RUN_OUTPUTS, MapOutputs
from scene_from_views_ros.mapping import (
    ChainConfig,
    KeyframeConfig,
    MapConfig,
    MapperConfig,
    SlidingWindowMapper,
    WindowConfig,
)
from scene_from_views_ros.mapping.chaining import WindowInMap
from scene_from_views_ros.mapping.global_map import KeyframePose
from scene_from_views_ros.mapping.map_frame import MapFrame
from scene_from_views_ros.mapping.synthetic import SyntheticWindowBackend, make_sequence

GL_FROM_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def config() -> MapperConfig:
    return MapperConfig(
        keyframe=KeyframeConfig(min_change=0.03),
        window=WindowConfig(size=5, overlap=2),
        chain=ChainConfig(),
        map=MapConfig(voxel_size=0.02, drop_percentile=25.0),
    )


@dataclass
class Mapped:
    trajectory: list[KeyframePose]
    cloud: PointCloud
    source: dict[int, tuple[WindowInMap, int]]  # keyframe id -> (the window that placed it, its view)

    def image(self, keyframe: KeyframePose) -> np.ndarray:
        window, view = self.source[keyframe.keyframe_id]
        return window.images[view]


def run_mapper(on_window=None) -> tuple[SlidingWindowMapper, list[WindowInMap]]:
    sequence = make_sequence(num_frames=40, width=96, height=72)
    windows: list[WindowInMap] = []

    def placed(window: WindowInMap) -> None:
        windows.append(window)
        if on_window is not None:
            on_window(window)

    mapper = SlidingWindowMapper(SyntheticWindowBackend(sequence), config(), on_window=placed)
    for frame in sequence.frames():
        mapper.add_frame(frame)
    mapper.flush()
    return mapper, windows


@pytest.fixture(scope="module")
def mapped() -> Mapped:
    mapper, windows = run_mapper()
    source = {window.keyframes[view].keyframe_id: (window, view) for window in windows for view in window.new_views}
    trajectory = mapper.trajectory()
    assert len(trajectory) >= 8 and len(mapper.map_cloud()) > 1000
    assert set(source) == {kf.keyframe_id for kf in trajectory}
    return Mapped(trajectory, mapper.map_cloud(), source)


def published_frame() -> MapFrame:
    alignment = np.eye(4)
    alignment[:3, :3] = Rotation.from_euler("xyz", [30.0, -50.0, 110.0], degrees=True).as_matrix()
    alignment[:3, 3] = [1.5, -2.0, 0.25]
    return MapFrame(alignment=alignment, scale=2.0)


FRAMES = {"mapper frame": None, "published frame": published_frame()}


def in_frame(map_frame: MapFrame | None, pose: np.ndarray | None = None, points: np.ndarray | None = None) -> np.ndarray:
    if pose is not None:
        return pose if map_frame is None else map_frame.poses(pose)
    return np.asarray(points, np.float32) if map_frame is None else map_frame.points(points)


def sample_pixels(window: WindowInMap, view: int, step: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres (u, v) on a grid and the map points the window's point map has there."""
    height, width = window.images[view].shape[:2]
    v, u = np.mgrid[3:height:step, 2:width:step].reshape(2, -1)
    return np.stack([u, v], axis=1).astype(np.float64), window.points[view][v, u].astype(np.float64)


def opencv_projection(keyframe: KeyframePose, pose: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Our own pinhole projection: OpenCV pixels (top-left pixel centre at (0, 0))."""
    camera = (points - pose[:3, 3]) @ pose[:3, :3]
    pixels = camera @ np.asarray(keyframe.intrinsics).T
    return pixels[:, :2] / pixels[:, 2:]


def cam_from_world(image: pycolmap.Image) -> np.ndarray:
    rigid = image.cam_from_world() if callable(image.cam_from_world) else image.cam_from_world
    return np.vstack([rigid.matrix(), [0.0, 0.0, 0.0, 1.0]])


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


# ---- format names ------------------------------------------------------------------------------
def test_parse_exports_names_all_and_none() -> None:
    assert parse_exports("colmap,nerfstudio,pcd") == EXPORT_FORMATS == ("colmap", "nerfstudio", "pcd")
    assert parse_exports(" pcd , COLMAP,pcd") == ("colmap", "pcd")  # canonical order, once each
    assert parse_exports("all") == EXPORT_FORMATS
    assert parse_exports("") == parse_exports("none") == parse_exports(" , ") == ()
    with pytest.raises(ValueError, match=r"'ply'.*choose from colmap, nerfstudio, pcd"):
        parse_exports("colmap,ply")
    with pytest.raises(ValueError, match="'all'"):
        parse_exports("all,pcd")


def test_unknown_formats_are_refused_by_the_writers(tmp_path: Path, mapped: Mapped) -> None:
    with pytest.raises(ValueError, match="ply"):
        write_map_exports(tmp_path, ("pcd", "ply"), mapped.trajectory, mapped.cloud, None)
    with pytest.raises(ValueError, match="gltf"):
        MapOutputs(tmp_path, MapConfig(), exports=("gltf",))
    assert not any(tmp_path.iterdir())


# ---- COLMAP ------------------------------------------------------------------------------------
@pytest.mark.parametrize("map_frame", FRAMES.values(), ids=FRAMES.keys())
def test_colmap_model_reads_back_in_pycolmap(tmp_path: Path, mapped: Mapped, map_frame: MapFrame | None) -> None:
    written = write_colmap_text(tmp_path / "colmap", mapped.trajectory, mapped.cloud, map_frame)
    assert sorted(path.name for path in written) == ["cameras.txt", "images.txt", "points3D.txt"]
    model = pycolmap.Reconstruction(str(tmp_path / "colmap"))
    assert model.num_images() == len(mapped.trajectory)
    assert model.num_cameras() == 1  # the synthetic keyframes share one camera
    assert model.num_points3D() == len(mapped.cloud)

    by_name = {image.name: image for image in model.images.values()}
    assert set(by_name) == {keyframe_image_name(kf.keyframe_id) for kf in mapped.trajectory}
    for keyframe in mapped.trajectory:
        image = by_name[keyframe_image_name(keyframe.keyframe_id)]
        pose = in_frame(map_frame, pose=keyframe.pose)
        np.testing.assert_allclose(cam_from_world(image), np.linalg.inv(pose), atol=1e-6)
        camera = model.cameras[image.camera_id]
        assert camera.model_name == "PINHOLE" and (camera.width, camera.height) == keyframe.image_size
        expected = np.array(keyframe.intrinsics, np.float64)
        expected[:2, 2] += 0.5  # COLMAP's pixel centres
        np.testing.assert_allclose(camera.calibration_matrix(), expected, atol=1e-9)

    ids = sorted(model.points3D)
    assert ids == list(range(1, len(mapped.cloud) + 1))
    xyz = np.stack([model.points3D[i].xyz for i in ids])
    rgb = np.stack([model.points3D[i].color for i in ids])
    np.testing.assert_array_equal(xyz.astype(np.float32), in_frame(map_frame, points=mapped.cloud.points))
    np.testing.assert_array_equal(rgb, mapped.cloud.colors)
    assert all(model.points3D[i].track.length() == 0 for i in ids[:100])


@pytest.mark.parametrize("map_frame", FRAMES.values(), ids=FRAMES.keys())
def test_colmap_projection_lands_on_the_pixel_that_saw_the_point(tmp_path: Path, mapped: Mapped, map_frame: MapFrame | None) -> None:
    write_colmap_text(tmp_path, mapped.trajectory, mapped.cloud, map_frame)
    model = pycolmap.Reconstruction(str(tmp_path))
    by_name = {image.name: image for image in model.images.values()}
    cloud_points = in_frame(map_frame, points=mapped.cloud.points).astype(np.float64)
    for keyframe in mapped.trajectory:
        image = by_name[keyframe_image_name(keyframe.keyframe_id)]
        window, view = mapped.source[keyframe.keyframe_id]
        pixels, points = sample_pixels(window, view)
        points = in_frame(map_frame, points=points).astype(np.float64)
        projected = np.stack([image.project_point(point) for point in points])
        np.testing.assert_allclose(projected, pixels + 0.5, atol=2e-3)
        # The whole cloud: pycolmap's camera model against our own projection, in front of the camera.
        pose = in_frame(map_frame, pose=keyframe.pose)
        camera_points = (cloud_points - pose[:3, 3]) @ pose[:3, :3]
        ahead = camera_points[:, 2] > 0.1
        ours = opencv_projection(keyframe, pose, cloud_points[ahead]) + 0.5
        theirs = model.cameras[image.camera_id].img_from_cam(camera_points[ahead])
        np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-6 * np.abs(ours).max())


def test_colmap_cameras_per_intrinsics_names_and_large_clouds(tmp_path: Path, mapped: Mapped) -> None:
    first, second, third = mapped.trajectory[:3]
    zoomed = np.array(second.intrinsics, np.float64)
    zoomed[:2] *= 1.5
    keyframes = [first, dataclasses.replace(second, intrinsics=zoomed, image_size=(144, 108)), third]
    rng = np.random.default_rng(3)
    count = 2 * 65536 + 7  # across the writer's chunks
    cloud = PointCloud((rng.normal(size=(count, 3)) * [1e-3, 1.0, 1e3]).astype(np.float32),
                       rng.integers(0, 256, (count, 3), dtype=np.uint8))
    names = {second.keyframe_id: "left/frame_0002.jpg"}
    write_colmap_text(tmp_path, keyframes, cloud, image_names=names)
    model = pycolmap.Reconstruction(str(tmp_path))
    assert model.num_cameras() == 2
    by_name = {image.name: image for image in model.images.values()}
    assert set(by_name) == {keyframe_image_name(first.keyframe_id), "left/frame_0002.jpg", keyframe_image_name(third.keyframe_id)}
    assert by_name[keyframe_image_name(first.keyframe_id)].camera_id == by_name[keyframe_image_name(third.keyframe_id)].camera_id
    zoomed_camera = model.cameras[by_name["left/frame_0002.jpg"].camera_id]
    assert (zoomed_camera.width, zoomed_camera.height) == (144, 108)
    np.testing.assert_allclose(zoomed_camera.focal_length_x, zoomed[0, 0])
    np.testing.assert_allclose(zoomed_camera.principal_point_x, zoomed[0, 2] + 0.5)
    ids = sorted(model.points3D)
    assert len(ids) == count
    np.testing.assert_array_equal(np.stack([model.points3D[i].xyz for i in ids]).astype(np.float32), cloud.points)
    np.testing.assert_array_equal(np.stack([model.points3D[i].color for i in ids]), cloud.colors)
    with pytest.raises(ValueError, match="white space"):
        write_colmap_text(tmp_path, keyframes, cloud, image_names={first.keyframe_id: "a b.png"})


# ---- nerfstudio --------------------------------------------------------------------------------
@pytest.mark.parametrize("map_frame", FRAMES.values(), ids=FRAMES.keys())
def test_nerfstudio_transforms_images_and_rays(tmp_path: Path, mapped: Mapped, map_frame: MapFrame | None) -> None:
    written = write_nerfstudio(tmp_path, mapped.trajectory, mapped.image, map_frame, mapped.cloud)
    document = json.loads((tmp_path / "transforms.json").read_text())
    assert written[0] == tmp_path / "transforms.json"
    assert document["camera_model"] == "PINHOLE" and "missing_keyframe_images" not in document
    frames = document["frames"]
    assert [frame["keyframe_id"] for frame in frames] == [kf.keyframe_id for kf in mapped.trajectory]
    for keyframe, frame in zip(mapped.trajectory, frames, strict=True):
        transform = np.array(frame["transform_matrix"])
        pose = in_frame(map_frame, pose=keyframe.pose)
        np.testing.assert_allclose(transform @ GL_FROM_CV, pose, atol=1e-12)
        assert frame["file_path"] == f"images/kf_{keyframe.keyframe_id:06d}.png"
        image = read_rgb(tmp_path / frame["file_path"])
        assert (frame["w"], frame["h"]) == keyframe.image_size == (image.shape[1], image.shape[0])
        np.testing.assert_array_equal(image, mapped.image(keyframe))  # PNG: lossless
        assert tmp_path / frame["file_path"] in written

        # nerfstudio's rays: pixel (row i, column j) at (j + 0.5, i + 0.5), direction in the
        # OpenGL camera ((x - cx) / fx, -(y - cy) / fy, -1), rotated into the world.
        window, view = mapped.source[keyframe.keyframe_id]
        pixels, points = sample_pixels(window, view)
        points = in_frame(map_frame, points=points).astype(np.float64)
        x, y = pixels[:, 0] + 0.5, pixels[:, 1] + 0.5
        directions = np.stack([(x - frame["cx"]) / frame["fl_x"], -(y - frame["cy"]) / frame["fl_y"], -np.ones_like(x)], axis=1)
        directions = directions @ transform[:3, :3].T
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        offsets = points - transform[:3, 3]
        along = np.einsum("ij,ij->i", offsets, directions)
        assert np.all(along > 0)  # in front of the camera
        off_ray = np.linalg.norm(offsets - along[:, None] * directions, axis=1)
        assert off_ray.max() < 1e-5 * along.max()
        # ... and projecting with the OpenGL camera (looking down -z) hits the OpenCV pixel.
        camera = (points - transform[:3, 3]) @ transform[:3, :3]
        assert np.all(camera[:, 2] < 0)
        projected = np.stack([frame["cx"] + frame["fl_x"] * camera[:, 0] / -camera[:, 2],
                              frame["cy"] - frame["fl_y"] * camera[:, 1] / -camera[:, 2]], axis=1)
        np.testing.assert_allclose(projected - 0.5, opencv_projection(keyframe, pose, points), atol=1e-6)
        np.testing.assert_allclose(projected - 0.5, pixels, atol=2e-3)

    assert document["ply_file_path"] == "sparse_pc.ply"
    seed = o3d.io.read_point_cloud(str(tmp_path / document["ply_file_path"]))
    np.testing.assert_array_equal(np.asarray(seed.points).astype(np.float32), in_frame(map_frame, points=mapped.cloud.points))
    np.testing.assert_array_equal(np.rint(np.asarray(seed.colors) * 255).astype(np.uint8), mapped.cloud.colors)


def test_nerfstudio_without_some_or_all_images(tmp_path: Path, mapped: Mapped) -> None:
    trajectory = mapped.trajectory
    kept = {kf.keyframe_id for kf in trajectory[::2]}
    write_nerfstudio(tmp_path, trajectory, lambda kf: mapped.image(kf) if kf.keyframe_id in kept else None)
    document = json.loads((tmp_path / "transforms.json").read_text())
    assert {frame["keyframe_id"] for frame in document["frames"]} == kept
    assert document["missing_keyframe_images"] == [kf.keyframe_id for kf in trajectory if kf.keyframe_id not in kept]
    assert "ply_file_path" not in document
    assert sorted(path.name for path in (tmp_path / "images").iterdir()) == sorted(keyframe_image_name(i) for i in kept)
    # Images already on disk (streamed earlier) count without image_of.
    again = write_nerfstudio(tmp_path, trajectory, None)
    assert len(json.loads((tmp_path / "transforms.json").read_text())["frames"]) == len(kept) == len(again) - 1
    with pytest.raises(ValueError, match="none of the"):
        write_nerfstudio(tmp_path / "empty", trajectory, lambda kf: None)
    with pytest.raises(ValueError, match="intrinsics are for 96x72"):
        write_nerfstudio(tmp_path / "small", trajectory, lambda kf: mapped.image(kf)[:40])


def test_keyframes_without_a_usable_k_are_left_out_of_both_exports(tmp_path: Path, mapped: Mapped) -> None:
    """A keyframe whose K is not finite and positive (a degenerate predicted field of view and no
    CameraInfo) would make COLMAP refuse the whole model: it is left out of both exports."""
    import pycolmap

    degenerate = dataclasses.replace(mapped.trajectory[1], intrinsics=np.diag([np.inf, 40.0, 1.0]))
    trajectory = [mapped.trajectory[0], degenerate, *mapped.trajectory[2:]]
    write_map_exports(tmp_path, ("colmap", "nerfstudio"), trajectory, mapped.cloud, mapped.image)
    reconstruction = pycolmap.Reconstruction(str(tmp_path / "colmap"))
    assert reconstruction.num_images() == len(trajectory) - 1
    assert degenerate.keyframe_id not in {f["keyframe_id"] for f in json.loads((tmp_path / "nerfstudio" / "transforms.json").read_text())["frames"]}


# ---- PCD and everything together ----------------------------------------------------------------
@pytest.mark.parametrize("map_frame", FRAMES.values(), ids=FRAMES.keys())
def test_pcd_export_reads_back_in_open3d(tmp_path: Path, mapped: Mapped, map_frame: MapFrame | None) -> None:
    written = write_map_exports(tmp_path, ("pcd",), mapped.trajectory, mapped.cloud, mapped.image, map_frame)
    assert written == {"pcd": [tmp_path / "map.pcd"]}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["map.pcd"]
    cloud = o3d.io.read_point_cloud(str(tmp_path / "map.pcd"))
    np.testing.assert_array_equal(np.asarray(cloud.points).astype(np.float32), in_frame(map_frame, points=mapped.cloud.points))
    np.testing.assert_array_equal(np.rint(np.asarray(cloud.colors) * 255).astype(np.uint8), mapped.cloud.colors)


def test_all_exports_share_the_keyframe_images(tmp_path: Path, mapped: Mapped) -> None:
    map_frame = published_frame()
    written = write_map_exports(tmp_path, parse_exports("all"), mapped.trajectory, mapped.cloud, mapped.image, map_frame)
    assert set(written) == {"colmap", "nerfstudio", "pcd"}
    assert all(path.is_file() for paths in written.values() for path in paths)
    model = pycolmap.Reconstruction(str(tmp_path / "colmap"))
    images = tmp_path / "nerfstudio" / "images"
    for image in model.images.values():  # COLMAP's names are the nerfstudio images
        assert (images / image.name).is_file()
    document = json.loads((tmp_path / "nerfstudio" / "transforms.json").read_text())
    for frame in document["frames"]:
        image = next(i for i in model.images.values() if i.name == Path(frame["file_path"]).name)
        np.testing.assert_allclose(np.linalg.inv(cam_from_world(image)), np.array(frame["transform_matrix"]) @ GL_FROM_CV, atol=1e-6)
    assert not list(tmp_path.rglob("*.partial*"))  # every file renamed into place

    colmap_only = write_map_exports(tmp_path / "only", ("colmap",), mapped.trajectory, mapped.cloud, mapped.image)
    assert len(colmap_only["colmap"]) == 3 + len(mapped.trajectory)  # the model, then the images it names
    assert not (tmp_path / "only" / "nerfstudio" / "transforms.json").exists()
    assert len(list((tmp_path / "only" / "nerfstudio" / "images").iterdir())) == len(mapped.trajectory)


# ---- offline outputs -----------------------------------------------------------------------------
def test_map_outputs_stream_keyframe_images_then_write_the_exports(tmp_path: Path) -> None:
    assert {"map.pcd", "colmap", "nerfstudio"} <= set(RUN_OUTPUTS)  # --overwrite removes them
    outputs = MapOutputs(tmp_path, config().map, keyframe_files="none", exports=("nerfstudio", "colmap", "pcd"))
    images = tmp_path / "nerfstudio" / "images"
    seen: list[int] = []

    def on_window(window: WindowInMap) -> None:
        outputs.on_window(window)
        for view in window.new_views:
            seen.append(window.keyframes[view].keyframe_id)
            np.testing.assert_array_equal(read_rgb(images / keyframe_image_name(seen[-1])), window.images[view])
        assert sorted(path.name for path in images.iterdir()) == sorted(keyframe_image_name(i) for i in seen)

    mapper, windows = run_mapper(on_window)
    assert len(windows) >= 3  # the images arrived window by window
    trajectory = mapper.trajectory()
    assert sorted(seen) == sorted(kf.keyframe_id for kf in trajectory)
    written = outputs.write_exports(trajectory, mapper.map_cloud())
    assert set(written) == {"colmap", "nerfstudio", "pcd"}
    document = json.loads((tmp_path / "nerfstudio" / "transforms.json").read_text())
    assert len(document["frames"]) == len(trajectory)
    assert pycolmap.Reconstruction(str(tmp_path / "colmap")).num_images() == len(trajectory)
    assert len(o3d.io.read_point_cloud(str(tmp_path / "map.pcd")).points) == len(mapper.map_cloud())

    plain = MapOutputs(tmp_path / "plain", config().map, keyframe_files="none")
    for window in windows:
        plain.on_window(window)
    assert plain.write_exports(trajectory, mapper.map_cloud()) == {}
    assert not (tmp_path / "plain" / "nerfstudio").exists()


# ---- in-memory keyframe images (the node) -----------------------------------------------------------
def test_keyframe_images_round_trip_and_byte_count(mapped: Mapped) -> None:
    lossless = KeyframeImages(jpeg_quality=None)
    compact = KeyframeImages()
    rng = np.random.default_rng(1)
    noisy = np.clip(cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), (0, 0), 2.0).astype(int)
                    + rng.integers(-4, 5, (120, 160, 3)), 0, 255).astype(np.uint8)  # camera-like: texture and noise
    for store in (lossless, compact):
        store.add(7, noisy)
        assert len(store) == 1 and 7 in store and store.get(8) is None
    np.testing.assert_array_equal(lossless.get(7), noisy)
    decoded = compact.get(7)
    assert decoded.shape == noisy.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - noisy).mean() < 3.0  # colours in RGB order, nearly exact
    assert 0 < compact.nbytes < lossless.nbytes < noisy.nbytes

    trajectory = mapped.trajectory
    window, _ = mapped.source[trajectory[0].keyframe_id]
    lossless.add_window(window)
    ids = [window.keyframes[view].keyframe_id for view in window.new_views]
    assert len(lossless) == 1 + len(ids)
    for keyframe_id, view in zip(ids, window.new_views, strict=True):
        np.testing.assert_array_equal(lossless.get(keyframe_id), window.images[view])
    keyframe = next(kf for kf in trajectory if kf.keyframe_id == ids[0])
    np.testing.assert_array_equal(lossless.image_of(keyframe), mapped.image(keyframe))

    before = lossless.nbytes
    lossless.add(7, np.zeros((120, 160, 3), np.uint8))  # replacing one counts only the new bytes
    assert lossless.nbytes < before and len(lossless) == 1 + len(ids)
    lossless.clear()
    assert len(lossless) == 0 and lossless.nbytes == 0 and lossless.get(7) is None
    with pytest.raises(ValueError, match="RGB"):
        lossless.add(1, np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="jpeg_quality"):
        KeyframeImages(jpeg_quality=0)
