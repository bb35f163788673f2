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
    with pytest.raises(InvalidOptionError, match="cannot use known camera intrinsics or poses"):
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
