"""Known cameras (intrinsics, poses) given to `reconstruct`: checked where given, refused by the
models that estimate their own, handed to the ones that accept them, and passed on by the
mapper from the frames' intrinsics (CameraInfo, the offline tool's --intrinsics)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scene_from_views_ros.core.cameras import KnownCameras
from scene_from_views_ros.core.errors import InvalidOptionError
from scene_from_views_ros.mapping import MapperConfig, SlidingWindowMapper
from scene_from_views_ros.mapping.chaining import ChainConfig
from scene_from_views_ros.mapping.global_map import MapConfig
from scene_from_views_ros.mapping.keyframes import Frame, KeyframeConfig
from scene_from_views_ros.mapping.synthetic import make_sequence
from scene_from_views_ros.mapping.windows import WindowConfig
from scene_from_views_ros.models.vggt import SceneFromViewsVggt

TINY = Path(__file__).resolve().parent / "fixtures" / "vggt_tiny"
OPTIONS = {"checkpoint": str(TINY / "weights.safetensors"), "config": str(TINY / "config.json"), "target_size": 56}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class CameraTakingVggt(SceneFromViewsVggt):
    """The tiny VGGT declaring that it takes known cameras, recording what its network stage got."""

    accepts_known_intrinsics = True
    accepts_known_poses = True

    def infer(self, processed: Any, known_cameras: KnownCameras | None = None, **kwargs: Any) -> Any:
        self.seen = known_cameras
        return super().infer(processed, **kwargs)


def images(count: int = 3) -> list[np.ndarray]:
    sequence = make_sequence(count, 64, 48)
    return [sequence.frame(i).image for i in range(count)]


def pinhole(fx: float = 50.0, cx: float = 32.0, cy: float = 24.0) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fx, cy], [0.0, 0.0, 1.0]])


def test_models_that_estimate_their_cameras_refuse_known_ones() -> None:
    model = SceneFromViewsVggt(device="cpu", **OPTIONS)
    with pytest.raises(InvalidOptionError, match="cannot use known camera intrinsics: it estimates its own cameras"):
        model.reconstruct(images(), rgb=True, known_intrinsics=[pinhole()] * 3)
    with pytest.raises(InvalidOptionError, match="cannot use known camera intrinsics or poses: it estimates its own cameras"):
        model.reconstruct(images(), rgb=True, known_intrinsics=[pinhole()] * 3, known_poses=[np.eye(4)] * 3)


def test_known_cameras_are_checked_and_handed_to_the_model() -> None:
    model = CameraTakingVggt(device="cpu", **OPTIONS)
    views = images()
    with pytest.raises(InvalidOptionError, match=r"known_intrinsics has shape \(2, 3, 3\) for 3 images: give one 3x3 matrix per image"):
        model.reconstruct(views, rgb=True, known_intrinsics=[pinhole()] * 2)
    with pytest.raises(InvalidOptionError, match="known_intrinsics of view 1 is not a pinhole camera matrix"):
        model.reconstruct(views, rgb=True, known_intrinsics=[pinhole(), pinhole(fx=-5.0), pinhole()])
    with pytest.raises(InvalidOptionError, match=r"principal point \(640, 24\) outside its 64x48 image"):
        model.reconstruct(views, rgb=True, known_intrinsics=[pinhole(), pinhole(cx=640.0), pinhole()])
    skewed = np.eye(4)
    skewed[0, 1] = 0.5
    with pytest.raises(InvalidOptionError, match="known_poses of view 2 is not a rigid camera-to-world transform"):
        model.reconstruct(views, rgb=True, known_poses=[np.eye(4), np.eye(4), skewed])
    model.reconstruct(views, rgb=True)
    assert model.seen is None
    given = [pinhole(fx=40.0 + i) for i in range(3)]
    model.reconstruct(views, rgb=True, known_intrinsics=given)
    np.testing.assert_array_equal(model.seen.intrinsics, np.stack(given))
    assert model.seen.poses is None


def test_the_mapper_passes_the_frames_intrinsics_to_a_model_that_takes_them() -> None:
    sequence = make_sequence(12, 64, 48)
    config = MapperConfig(
        keyframe=KeyframeConfig(min_change=0.0), window=WindowConfig(size=4, overlap=2),
        chain=ChainConfig(min_inlier_ratio=0.0), map=MapConfig(voxel_size=0.002),
    )
    taking = CameraTakingVggt(device="cpu", **OPTIONS)
    mapper = SlidingWindowMapper(taking, config, threaded=False)
    for index in range(4):
        mapper.add_frame(sequence.frame(index))
    mapper.flush()
    np.testing.assert_allclose(taking.seen.intrinsics, np.stack([sequence.intrinsics] * 4))
    # a window with a frame without intrinsics: none are passed
    mapper = SlidingWindowMapper(taking, config, threaded=False)
    for index in range(4):
        frame = sequence.frame(index)
        mapper.add_frame(Frame(frame.image, frame.stamp_ns, frame.camera_id, None if index == 2 else frame.intrinsics))
    mapper.flush()
    assert taking.seen is None
    # a model that estimates its own cameras is never handed them
    plain = SceneFromViewsVggt(device="cpu", **OPTIONS)
    mapper = SlidingWindowMapper(plain, config, threaded=False)
    for index in range(4):
        mapper.add_frame(sequence.frame(index))
    mapper.flush()
    assert (mapper.stats.windows_done, mapper.stats.windows_failed) == (1, 0)


# ----------------------------------------------------------------------------- DUSt3R / MASt3R
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def pair_model(model_type: str) -> Any:
    import yaml

    from scene_from_views_ros.core.factory import scene_from_views_factory

    folder = FIXTURES / f"{model_type}_tiny"
    options = yaml.safe_load((folder / "model.yaml").read_text())
    options = {k: str(folder / v) if k in ("checkpoint", "config") and v else v for k, v in options.items()}
    return scene_from_views_factory(model_type, device="cpu", **options)


@pytest.mark.parametrize(("model_type", "optimizer", "kwargs"), [
    ("dust3r", "dense_scene_optimizer", {"niter": 5}),
    ("mast3r", "sparse_scene_optimizer", {"niter1": 5, "niter2": 5}),
])
def test_pairwise_models_hand_known_intrinsics_to_their_optimizer(model_type: str, optimizer: str, kwargs: dict[str, Any]) -> None:
    from scene_from_views_ros.geometry.camera import intrinsics_in_original_pixels, intrinsics_in_processed_pixels

    model = pair_model(model_type)
    views = images(3)
    given = [pinhole(fx=40.0 + 5 * i, cx=31.0, cy=25.0) for i in range(3)]
    result = model.reconstruct(views, rgb=True, optimizer=optimizer, optimizer_kwargs=kwargs, known_intrinsics=given)
    scales, offsets = result.extras["scales"], result.extras["offsets"]
    expected = intrinsics_in_processed_pixels(np.stack(given), scales, offsets)
    np.testing.assert_allclose(np.stack(result.intrinsics), expected, rtol=1e-5)  # kept fixed, in the network's pixels
    np.testing.assert_allclose(intrinsics_in_original_pixels(expected, scales, offsets), np.stack(given), rtol=1e-12)
    # the result's extras follow the optimizer's cameras (not the fast path's estimate)
    np.testing.assert_allclose(np.stack(result.extras["intrinsics_original"]), np.stack(given), rtol=1e-5)
    np.testing.assert_allclose(result.extras["focals"], expected[:, 0, 0], rtol=1e-5)
    free = model.reconstruct(views, rgb=True, optimizer=optimizer, optimizer_kwargs=kwargs)
    assert not np.allclose(np.stack(free.intrinsics), expected, rtol=1e-3)
    # the fast path would ignore them: refused, with the fix
    with pytest.raises(InvalidOptionError, match="only its scene optimizers .* use them"):
        model.reconstruct(views, rgb=True, optimizer="none", known_intrinsics=given)
    assert model.uses_known_intrinsics() and not model.uses_known_intrinsics("none")
    assert not model.uses_known_intrinsics("tsdf_refinement") and model.uses_known_intrinsics(["dense_scene_optimizer", "tsdf_refinement"])


def test_the_offline_tool_gives_intrinsics_to_frames_without_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import cv2

    from scene_from_views_ros.cli.map import main as cli_main

    folder = tmp_path / "frames"
    folder.mkdir()
    sequence = make_sequence(6, 96, 72)
    for index in range(6):
        cv2.imwrite(str(folder / f"{index:03d}.png"), cv2.cvtColor(sequence.frame(index).image, cv2.COLOR_RGB2BGR))
    tiny = FIXTURES / "dust3r_tiny"
    common = ["--device", "cpu", "-q", "-p", "model_type=dust3r", "-p", f"model.checkpoint={tiny / 'weights.safetensors'}",
              "-p", f"model.config={tiny / 'config.json'}", "-p", "model.image_size=64", "-p", "keyframe.min_change=0.0",
              "-p", "window.size=3", "-p", "window.overlap=1", "-p", "chain.min_inlier_ratio=0.0", "--intrinsics", "80,80,47.5,35.5"]
    out = tmp_path / "out"
    code = cli_main([str(folder), "--out", str(out), *common, "-p", "optimizer.type=dense_scene_optimizer", "-p", "optimizer.niter=5"])
    assert code == 0, capsys.readouterr().err
    keyframes = json.loads((out / "keyframes.json").read_text())["keyframes"]
    assert keyframes and all(k["camera_intrinsics"] == [[80.0, 0.0, 47.5], [0.0, 80.0, 35.5], [0.0, 0.0, 1.0]] for k in keyframes)
    # 96x72 -> 64x48 (x 2/3, no crop): the model kept the given camera, in its input's pixels
    np.testing.assert_allclose(keyframes[0]["intrinsics"], [[80 * 2 / 3, 0, 47.5 * 2 / 3], [0, 80 * 2 / 3, 35.5 * 2 / 3], [0, 0, 1]], rtol=1e-5)
    refused = cli_main([str(folder), "--out", str(tmp_path / "refused"), *common, "-p", "optimizer.type=none"])
    assert refused != 0 and "--intrinsics is not used by model_type dust3r with optimizer.type none" in capsys.readouterr().err


def test_known_poses_go_to_the_dense_optimizer_and_the_result_is_in_their_frame() -> None:
    views = images(3)
    given = np.tile(np.eye(4), (3, 1, 1))
    given[:, :3, 3] = [[10.0, 0.0, 0.0], [10.5, 0.0, 0.1], [11.0, 0.1, 0.2]]  # metres, a frame that is not view 0's
    model = pair_model("dust3r")
    result = model.reconstruct(views, rgb=True, optimizer="dense_scene_optimizer", optimizer_kwargs={"niter": 5}, known_poses=given)
    np.testing.assert_allclose(np.stack(result.camera_poses), given)
    # clouds placed by the given cameras (identity rotations: world z = the view's depth + its camera's z)
    np.testing.assert_allclose(result.point_clouds[1][..., 2], result.depth_predictions[1] + given[1, 2, 3], rtol=1e-4, atol=1e-4)
    assert model.uses_known_poses("dense_scene_optimizer") and not model.uses_known_poses("sparse_scene_optimizer")
    with pytest.raises(InvalidOptionError, match="cannot use known camera poses: only its scene optimizers"):
        pair_model("mast3r").reconstruct(views, rgb=True, known_poses=given)  # MASt3R's sparse optimizer keeps its own
