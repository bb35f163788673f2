"""Frames of cameras with lens distortion become pinhole frames before the model sees them:
images distorted with a known calibration (OpenCV's own inverse mapping) come back to the
pinhole render; a model this package cannot undo is refused with the fix."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from test_io import camera_info_msg, image_msg, sample_frames, write_bag

from scene_from_views_ros.io.bag_reader import BagSource
from scene_from_views_ros.io.messages import InvalidCameraInfoError, check_camera_info
from scene_from_views_ros.io.undistort import Undistorter

WIDTH, HEIGHT = 192, 144
K = np.array([[150.0, 0.0, 95.5], [0.0, 150.0, 71.5], [0.0, 0.0, 1.0]])
DISTORTIONS = {
    "plumb_bob": np.array([-0.28, 0.09, 0.001, -0.0015, 0.0]),
    "rational_polynomial": np.array([-0.25, 0.05, 0.001, 0.0, 0.0, 0.02, 0.0, 0.0]),
    "equidistant": np.array([-0.05, 0.01, 0.0, 0.0]),
}


def info(model: str, coefficients: np.ndarray, width: int = WIDTH, height: int = HEIGHT) -> SimpleNamespace:
    return SimpleNamespace(k=K.reshape(-1), d=coefficients, distortion_model=model, width=width, height=height)


def pinhole_image() -> np.ndarray:
    """A synthetic render, smoothed so that resampling twice (distort, undistort) blurs little."""
    frames, _ = sample_frames(1, WIDTH, HEIGHT)
    return cv2.GaussianBlur(frames[0], (0, 0), 1.5)


def distort(image: np.ndarray, model: str, coefficients: np.ndarray) -> np.ndarray:
    """What the lens makes of a pinhole image: each distorted pixel samples the pinhole image
    where OpenCV's undistortPoints sends it."""
    grid = np.stack(np.meshgrid(np.arange(WIDTH), np.arange(HEIGHT)), axis=-1).reshape(-1, 1, 2).astype(np.float64)
    if model == "equidistant":
        undistorted = cv2.fisheye.undistortPoints(grid, K, coefficients, P=K)
    else:
        undistorted = cv2.undistortPoints(grid, K, coefficients, P=K)
    maps = undistorted.reshape(HEIGHT, WIDTH, 2).astype(np.float32)
    return cv2.remap(image, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR)


@pytest.mark.parametrize("model", list(DISTORTIONS))
def test_distorted_frames_come_back_to_the_pinhole_image(model: str) -> None:
    pinhole = pinhole_image()
    distorted = distort(pinhole, model, DISTORTIONS[model])
    restored, k = Undistorter().calibrated(distorted, info(model, DISTORTIONS[model]))
    np.testing.assert_allclose(k, K)
    inner = (slice(HEIGHT // 6, -HEIGHT // 6), slice(WIDTH // 6, -WIDTH // 6))
    error = np.abs(restored[inner].astype(float) - pinhole[inner]).mean()
    untouched = np.abs(distorted[inner].astype(float) - pinhole[inner]).mean()
    assert error < 0.2 * untouched, (error, untouched)


def test_no_distortion_leaves_the_frame_and_a_smaller_image_scales_k() -> None:
    image = pinhole_image()
    same, k = Undistorter().calibrated(image, info("plumb_bob", np.zeros(5)))
    assert same is image and np.allclose(k, K)
    half = cv2.resize(image, (WIDTH // 2, HEIGHT // 2))
    undistorter = Undistorter()
    out, k = undistorter.calibrated(half, info("plumb_bob", DISTORTIONS["plumb_bob"]))
    np.testing.assert_allclose(k[:2], K[:2] / 2)
    assert out.shape == half.shape and not np.array_equal(out, half)
    assert undistorter.calibrated(half, None) == (half, None)


def test_a_distortion_this_package_cannot_undo_is_refused_with_the_fix() -> None:
    with pytest.raises(InvalidCameraInfoError, match="model 'double_sphere' is not one this node undoes.*image_proc's rectify node"):
        check_camera_info(info("double_sphere", np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])))
    check_camera_info(info("double_sphere", np.zeros(6)))  # no distortion: nothing to undo
    with pytest.raises(InvalidCameraInfoError, match="not finite"):
        check_camera_info(info("plumb_bob", np.array([np.nan, 0, 0, 0, 0])))
    with pytest.raises(InvalidCameraInfoError, match="rational_polynomial distortion with 5 coefficients is not valid"):
        check_camera_info(info("rational_polynomial", np.ones(5) * 0.01))


def test_a_bag_of_a_distorted_camera_gives_pinhole_frames(tmp_path: Path) -> None:
    pinhole = pinhole_image()
    distorted = distort(pinhole, "plumb_bob", DISTORTIONS["plumb_bob"])
    calibration = camera_info_msg(K, WIDTH, HEIGHT, 10**9)
    calibration.d = DISTORTIONS["plumb_bob"]
    bag = write_bag(tmp_path / "bag", "mcap", {"/cam/image_raw": "sensor_msgs/msg/Image", "/cam/camera_info": "sensor_msgs/msg/CameraInfo"},
                    [("/cam/camera_info", 10**9, calibration), ("/cam/image_raw", 10**9 + 1, image_msg(distorted, 10**9))])
    frame = next(iter(BagSource(bag)))
    inner = (slice(HEIGHT // 6, -HEIGHT // 6), slice(WIDTH // 6, -WIDTH // 6))
    assert np.abs(frame.image[inner].astype(float) - pinhole[inner]).mean() < 0.2 * np.abs(distorted[inner].astype(float) - pinhole[inner]).mean()
    np.testing.assert_allclose(frame.intrinsics, K)
