"""The core API: model types, factory, keyword routing, image intake, device choice, results."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

import scene_from_views_ros as sfv
from scene_from_views_ros.core.base import ModelOptions, SceneFromViewsBase
from scene_from_views_ros.core.options import BUILD, option
from scene_from_views_ros.core.result import PointCloud, SceneFromViewsResult
from scene_from_views_ros.geometry.ply import read_ply, write_ply
from scene_from_views_ros.optimizers import (
    SceneOptimizerBase,
    SceneOptimizerOutput,
    available_optimizers,
    optimizer_input_from_result,
    scene_optimizer_factory,
)
from scene_from_views_ros.optimizers import factory as optimizer_factory


@dataclass(frozen=True)
class PlaneOptions(ModelOptions):
    distance: float = option(2.0, "Distance of the plane.", low=0.1, high=10.0, stage=BUILD)
    size: int = option(8, "Crop size.", low=1, high=64)
    scale: float = option(1.0, "Depth scale.", low=0.0, high=10.0)


class PlaneModel(SceneFromViewsBase):
    """A toy model for pipeline tests: every view sees a fronto-parallel plane at `distance`."""

    model_type = sfv.SceneFromViewsType.VGGT
    options_class = PlaneOptions

    def __init__(self, device=None, **options):
        super().__init__(device, **options)
        self.distance = self.options.distance

    def preprocess_images(self, images, **kwargs):
        size = self.call_options(kwargs).size
        return [img[:size, :size] for img in images]

    def infer(self, processed, **kwargs):
        return [np.full(img.shape[:2], self.distance, np.float32) for img in processed]

    def create_optimizer_input(self, raw, processed):
        return optimizer_input_from_result(self.postprocess_results(raw, processed, processed))

    def postprocess_results(self, raw, images, processed, as_pointcloud=True, **kwargs):
        depths = [d * self.call_options(kwargs).scale for d in raw]
        k = np.array([[4.0, 0, 4], [0, 4.0, 4], [0, 0, 1]])
        points = []
        for depth in depths:
            v, u = np.mgrid[: depth.shape[0], : depth.shape[1]]
            rays = np.stack([(u - 4) / 4.0, (v - 4) / 4.0, np.ones_like(u, float)], -1)
            points.append((rays * depth[..., None]).astype(np.float32))
        return SceneFromViewsResult(
            global_point_cloud=PointCloud.from_views(points, processed),
            camera_poses=[np.eye(4) for _ in depths],
            processed_images=processed,
            depth_predictions=depths,
            point_clouds=points,
            intrinsics=[k for _ in depths],
            confidences=[np.ones_like(d) for d in depths],
        )


def test_types_from_enum_and_strings():
    assert sfv.SceneFromViewsType("vggt") is sfv.SceneFromViewsType.VGGT
    assert sfv.SceneFromViewsType("VGGT-Robust") is sfv.SceneFromViewsType.VGGT_ROBUST
    assert sfv.SceneFromViewsType("depth anything v3") is sfv.SceneFromViewsType.DEPTH_ANYTHING_V3
    assert {t.value for t in sfv.SceneFromViewsType} == {
        "depth_anything_v3", "mast3r", "mvdust3r", "vggt", "vggt_robust", "dust3r", "fast3r"}
    with pytest.raises(sfv.UnknownModelTypeError, match="valid types: .*vggt"):
        sfv.SceneFromViewsType("nerf")


def test_factory_refuses_unimplemented_types_clearly(monkeypatch):
    from scene_from_views_ros.core import factory

    monkeypatch.setitem(factory._MODEL_CLASSES, sfv.SceneFromViewsType.DEPTH_ANYTHING_V3, None)  # as before it landed
    with pytest.raises(sfv.ModelNotImplementedError, match="'depth_anything_v3' is not implemented.*implemented: vggt"):
        sfv.scene_from_views_factory("depth_anything_v3")


def test_factory_rejects_unknown_kwargs_listing_valid_ones():
    with pytest.raises(sfv.UnknownKwargError) as caught:
        sfv.scene_from_views_factory("vggt", device="cpu", not_a_kwarg=1, checkpoint="x/y")
    message = str(caught.value)
    assert "unknown option model.not_a_kwarg" in message and "model.checkpoint" in message and "model.conf_thres" in message


def test_factory_missing_weights_error_is_clear(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(sfv.CheckpointNotFoundError, match="facebook/VGGT-1B.*local file or folder"):
        sfv.scene_from_views_factory("vggt", device="cpu")
    # a release that is one file of a repo holding several
    with pytest.raises(sfv.CheckpointNotFoundError, match="'Zhenggang/MV-DUSt3R'.*checkpoints/MVDp_s2.pth.*local file or folder"):
        sfv.scene_from_views_factory("mvdust3r", device="cpu")


def test_device_choice(monkeypatch):
    assert sfv.resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert sfv.resolve_device(None) == torch.device("cpu")
    assert sfv.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(sfv.SceneFromViewsError, match="CUDA is not available"):
        sfv.resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert sfv.resolve_device(None) == torch.device("cuda")
    with pytest.raises(sfv.SceneFromViewsError, match="invalid device"):
        sfv.resolve_device("gpu-please")


def test_options_reach_the_stages_and_defaults_are_overridable_per_call():
    model = PlaneModel(device="cpu", distance=3.0, scale=2.0)
    assert PlaneModel.valid_kwargs() == ["distance", "size", "scale"]
    assert (PlaneModel.construction_kwargs(), PlaneModel.call_kwargs()) == (["distance"], ["size", "scale"])
    images = [np.zeros((10, 12, 3), np.uint8) for _ in range(2)]
    result = model.reconstruct(images, size=6)
    assert result.depth_predictions[0].shape == (6, 6)
    assert np.allclose(result.depth_predictions[1], 6.0)  # construction default scale=2
    assert np.allclose(model.reconstruct(images, scale=0.5).depth_predictions[0], 1.5)
    assert model.options.scale == 2.0  # a per-call value does not stick
    with pytest.raises(sfv.UnknownKwargError, match=r"model\.sclae \(did you mean model\.scale\?\)"):
        model.reconstruct(images, sclae=1.0)
    with pytest.raises(sfv.UnknownKwargError, match="distance is a construction option of PlaneModel"):
        model.reconstruct(images, distance=1.0)
    with pytest.raises(sfv.InvalidOptionError, match=r"model\.scale=20\.0 is not allowed: expected a number in \[0, 10\]"):
        model.reconstruct(images, scale=20.0)
    with pytest.raises(sfv.UnknownKwargError, match="model.bogus"):
        PlaneModel(device="cpu", bogus=1)
    tuned = model.with_call_options(size=4)
    assert tuned.reconstruct(images).depth_predictions[0].shape == (4, 4) and tuned.options.distance == 3.0


def test_images_bgr_by_default_rgb_switch_and_paths(tmp_path):
    import cv2

    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV order
    (rgb_from_bgr,) = sfv.load_images([bgr])
    assert rgb_from_bgr[0, 0].tolist() == [0, 0, 200]
    (unchanged,) = sfv.load_images([bgr], rgb=True)
    assert unchanged[0, 0].tolist() == [200, 0, 0]
    path = tmp_path / "blue.png"
    cv2.imwrite(str(path), bgr)
    (from_file,) = sfv.load_images([path])
    assert from_file[0, 0].tolist() == [0, 0, 200]


@pytest.mark.parametrize(
    "images, pattern",
    [
        ([], "empty window"),
        ([np.zeros((4, 4), np.uint8)], "single-channel.*COLOR_GRAY2BGR"),
        ([np.zeros((4, 4, 4), np.uint8)], r"drop the alpha channel"),
        ([np.zeros((4, 4, 3), np.float32)], "dtype float32; expected uint8"),
        (["/nonexistent/image.png"], "does not exist"),
    ],
)
def test_bad_images_give_clear_errors(images, pattern):
    with pytest.raises(sfv.InvalidImageError, match=pattern):
        sfv.load_images(images)


def test_undecodable_image_file(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(sfv.InvalidImageError, match="cannot decode"):
        sfv.load_images([bad])


def test_result_ply_round_trip_and_open3d(tmp_path):
    rng = np.random.default_rng(0)
    points = rng.normal(size=(500, 3)).astype(np.float32)
    colors = rng.integers(0, 256, size=(500, 3), dtype=np.uint8)
    result = SceneFromViewsResult(
        global_point_cloud=PointCloud(points, colors), camera_poses=[np.eye(4)], processed_images=[],
        depth_predictions=[], point_clouds=[], intrinsics=[], confidences=[],
    )
    path = result.save_ply(tmp_path / "cloud.ply")
    read_points, read_colors = read_ply(path)
    np.testing.assert_array_equal(read_points, points)
    np.testing.assert_array_equal(read_colors, colors)
    import open3d as o3d

    loaded = o3d.io.read_point_cloud(str(path))
    np.testing.assert_allclose(np.asarray(loaded.points), points, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(loaded.colors) * 255, colors, atol=0.5)
    converted = result.to_open3d()
    assert len(converted.points) == 500
    np.testing.assert_allclose(np.asarray(converted.colors)[7] * 255, colors[7], atol=1e-3)


def test_point_cloud_from_views_keeps_masked_finite_pixels():
    maps = [np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)]
    maps[0][0, 0] = np.nan
    images = [np.full((2, 3, 3), 9, np.uint8)]
    mask = [np.array([[True, True, False], [True, True, True]])]
    cloud = PointCloud.from_views(maps, images, mask)
    assert len(cloud) == 4 and cloud.colors.min() == 9
    with pytest.raises(ValueError, match="2 points but 1 colours"):
        write_ply("/tmp/never.ply", np.zeros((2, 3)), np.zeros((1, 3), np.uint8))


class ShiftOptimizer(SceneOptimizerBase):
    name = "shift"

    def optimize(self, optimizer_input):
        result = optimizer_input.result
        shifted = [p + np.float32(1.0) for p in result.point_clouds]
        return SceneOptimizerOutput(
            camera_poses=result.camera_poses, depth_predictions=result.depth_predictions,
            point_clouds=shifted, intrinsics=result.intrinsics, confidences=result.confidences,
        )


def test_optimizer_extension_point(monkeypatch):
    names = available_optimizers()
    assert set(names) >= {"dense_scene_optimizer", "global_aligner", "sparse_scene_optimizer", "tsdf_refinement"}
    monkeypatch.setitem(optimizer_factory._OPTIMIZERS, "future_optimizer", None)
    with pytest.raises(sfv.ModelNotImplementedError, match="not implemented in this release"):
        scene_optimizer_factory("future_optimizer")
    with pytest.raises(sfv.UnknownModelTypeError, match="valid names"):
        scene_optimizer_factory("bundle_adjuster")
    model = PlaneModel(device="cpu")
    images = [np.zeros((8, 8, 3), np.uint8)]
    plain = model.reconstruct(images)
    refined = model.reconstruct(images, optimizer=ShiftOptimizer())
    np.testing.assert_allclose(refined.global_point_cloud.points, plain.global_point_cloud.points + 1.0)


def test_factory_names_a_missing_optional_dependency(monkeypatch):
    import sys

    for name in [m for m in sys.modules if m.startswith("scene_from_views_ros.models")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "PIL", None)  # makes `import PIL` raise ImportError
    with pytest.raises(sfv.MissingDependencyError, match="'vggt' needs the Python package 'PIL'.*pip install pillow"):
        sfv.scene_from_views_factory("vggt", device="cpu")
