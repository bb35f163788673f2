"""scene_from_views_map end to end with the tiny random-weight VGGT: every input kind, the
output files, the replay bag, parameter files and the error messages."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
import pytest
from rosbags.highlevel import AnyReader
from test_io import K, camera_bag, sample_frames, string_msg, write_bag

from scene_from_views_ros.cli.map import main
from scene_from_views_ros.io.messages import unpack_xyzrgb
from scene_from_views_ros.mapping.exports import read_tum
from scene_from_views_ros.mapping.settings import load_parameter_file
from scene_from_views_ros.mapping.synthetic import make_sequence

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "test" / "fixtures" / "vggt_tiny"
# One torch thread: several small matrix products per window run fastest unthreaded on 2 busy cores.
TINY_MODEL = ["--checkpoint", TINY / "weights.safetensors", "--model-arg", f"config={TINY / 'config.json'}",
              "-p", "model.target_size=56", "--device", "cpu", "--threads", "1"]


def run_cli(capsys: pytest.CaptureFixture[str], *args: object, quiet: bool = True) -> tuple[int, str, str]:
    code = main([str(a) for a in (*args, *(["-q"] if quiet else []))])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def image_folder(path: Path, count: int, width: int = 96, height: int = 72) -> tuple[Path, list[np.ndarray]]:
    images, _ = sample_frames(count, width, height)
    path.mkdir()
    for i, image in enumerate(images):
        cv2.imwrite(str(path / f"frame_{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path, images


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def check_map_outputs(out: Path, summary: dict) -> dict:
    """The files every successful run leaves, checked for format and mutual consistency."""
    cloud = o3d.io.read_point_cloud(str(out / "map.ply"))
    assert len(cloud.points) == summary["map_points"] > 0
    assert np.isfinite(np.asarray(cloud.points)).all() and cloud.has_colors()
    lines = [line for line in (out / "map_trajectory.tum").read_text().splitlines() if not line.startswith("#")]
    assert all(len(line.split()) == 8 for line in lines)
    stamps, poses = read_tum(out / "map_trajectory.tum")
    document = json.loads((out / "keyframes.json").read_text())
    keyframes = document["keyframes"]
    assert len(keyframes) == len(stamps) == summary["keyframes_in_map"] > 0
    assert [kf["stamp_ns"] for kf in keyframes] == stamps
    non_finite = 0
    for keyframe, pose in zip(keyframes, poses, strict=True):
        np.testing.assert_allclose(np.array(keyframe["pose"]), pose, atol=1e-6)
        width, height = keyframe["image_size"]
        # The tiny random model can predict a field of view of 0, an infinite focal length:
        # strict JSON writes it as null and counts it.
        intrinsics = np.array(keyframe["intrinsics"], dtype=float)
        non_finite += int(np.isnan(intrinsics).sum())
        assert intrinsics.shape == (3, 3) and not intrinsics[0, 0] <= 0 and intrinsics[2, 2] == 1
        depth = np.load(out / keyframe["depth"])
        assert depth.dtype == np.float32 and depth.shape == (height, width)
        for name in ("depth_png", "confidence_png"):
            image = cv2.imread(str(out / keyframe[name]))
            assert image.shape == (height, width, 3)
    assert document.get("non_finite_values", 0) == non_finite
    assert len(summary["window_s"]) == summary["windows"] and all(t > 0 for t in summary["window_s"])
    return document


def test_image_folder_to_map_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = image_folder(tmp_path / "frames", 10)
    out = tmp_path / "out"
    code, stdout, _ = run_cli(capsys, folder, "--out", out, *TINY_MODEL, "--min-change", "0", "--window-size", "4",
                              "--window-overlap", "1", "--save-windows")
    assert code == 0
    summary = summary_of(out)
    # Every frame is a keyframe; windows of 4 sharing 1: keyframes 0-3, 3-6, 6-9.
    assert (summary["frames_read"], summary["keyframes"], summary["windows"] + summary["windows_failed"]) == (10, 10, 3)
    assert summary["windows"] >= 1 and summary["mean_window_s"] > 0
    document = check_map_outputs(out, summary)
    assert document["keyframes"][0]["image_size"] == [56, 42] and document["keyframes"][0]["camera_intrinsics"] is None
    assert document["keyframes"][1]["stamp_ns"] - document["keyframes"][0]["stamp_ns"] == 100_000_000  # --fps 10
    window_clouds = sorted((out / "windows").glob("window_*.ply"))
    assert len(window_clouds) == summary["windows"]
    assert all(len(o3d.io.read_point_cloud(str(p)).points) > 0 for p in window_clouds)
    assert load_parameter_file(out / "parameters.yaml")["window.size"] == 4
    assert "frames:     10 read" in stdout and f"map:        {summary['map_points']} points" in stdout


def test_video_with_step_and_cap(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, _, _ = run_cli(capsys, shared_data / "redkitchen.mp4", "--out", out, *TINY_MODEL, "--step", "4",
                         "--max-frames", "5", "--min-change", "0", "--window-size", "3", "--window-overlap", "1")
    assert code == 0
    summary = summary_of(out)
    assert summary["frames_read"] == 5 and summary["keyframes"] == 5 and "redkitchen.mp4" in summary["input"]
    document = check_map_outputs(out, summary)
    fps = 1.0344827586206897
    assert [kf["stamp_ns"] for kf in document["keyframes"]][:2] == [0, round(4 * 1e9 / fps)]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_to_map_and_replay_bag(storage: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bag, _, stamps = camera_bag(tmp_path / "in_bag", storage, count=6)
    out = tmp_path / "out"
    code, _, _ = run_cli(capsys, bag, "--topic", "/cam/image_raw/compressed", "--out", out, *TINY_MODEL,
                         "--min-change", "0", "--window-size", "3", "--window-overlap", "1", "--write-bag", "-p", "map_frame=world")
    assert code == 0
    summary = summary_of(out)
    assert summary["frames_read"] == 6 and summary["outputs"]["bag"] == str(out / "bag")
    document = check_map_outputs(out, summary)
    keyframes = document["keyframes"]
    assert set(kf["stamp_ns"] for kf in keyframes) <= set(int(s) for s in stamps)  # header stamps
    for keyframe in keyframes:
        np.testing.assert_allclose(np.array(keyframe["camera_intrinsics"]), K)
        assert keyframe["camera_id"] == "/cam/image_raw/compressed"

    with AnyReader([out / "bag"]) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        messages: dict[str, list] = {}
        for connection, log_time, raw in reader.messages():
            messages.setdefault(connection.topic, []).append((log_time, reader.deserialize(raw, connection.msgtype)))
    assert types == {
        "/scene_from_views/map_cloud": "sensor_msgs/msg/PointCloud2",
        "/scene_from_views/depth/image": "sensor_msgs/msg/Image",
        "/scene_from_views/depth/camera_info": "sensor_msgs/msg/CameraInfo",
        "/scene_from_views/path": "nav_msgs/msg/Path",
        "/tf": "tf2_msgs/msg/TFMessage",
    }
    stamp = lambda msg: msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec  # noqa: E731
    expected = sorted(kf["stamp_ns"] for kf in keyframes)
    depth = messages["/scene_from_views/depth/image"]
    assert [stamp(msg) for _, msg in depth] == [t for t, _ in depth] == expected
    by_stamp = {kf["stamp_ns"]: kf for kf in keyframes}
    for _, msg in depth:
        keyframe = by_stamp[stamp(msg)]
        assert msg.encoding == "32FC1" and [msg.width, msg.height] == keyframe["image_size"]
        assert msg.header.frame_id == keyframe["frame_id"] == f"sfv_keyframe_{keyframe['keyframe_id']}"
        saved = np.load(out / keyframe["depth"])
        values = np.frombuffer(msg.data, "<f4").reshape(saved.shape)
        valid = saved > 0
        np.testing.assert_array_equal(values[valid], saved[valid])
        assert np.isnan(values[~valid]).all()
    infos = messages["/scene_from_views/depth/camera_info"]
    assert [stamp(msg) for _, msg in infos] == expected
    np.testing.assert_allclose(np.asarray(infos[0][1].k).reshape(3, 3), np.array(by_stamp[expected[0]]["intrinsics"]))
    tfs = messages["/tf"]
    assert [t.header.frame_id for _, msg in tfs for t in msg.transforms] == ["world"] * 2 * len(expected)
    assert [msg.transforms[1].child_frame_id for _, msg in tfs] == ["sfv_camera"] * len(expected)
    paths = messages["/scene_from_views/path"]
    assert [len(msg.poses) for _, msg in paths] == list(range(1, len(expected) + 1))
    ((cloud_time, cloud),) = messages["/scene_from_views/map_cloud"]
    assert cloud_time == expected[0] and cloud.header.frame_id == "world"
    ply = np.asarray(o3d.io.read_point_cloud(str(out / "map.ply")).points)
    np.testing.assert_allclose(unpack_xyzrgb(cloud.data)[0], ply, atol=1e-6)


def test_parameter_file_in_node_format_is_used(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = image_folder(tmp_path / "frames", 7)
    params = tmp_path / "params.yaml"
    params.write_text(
        "scene_from_views:\n  ros__parameters:\n"
        "    model_type: vggt\n    image_topics: [/camera/image_raw]\n    image_qos: reliable\n"
        f"    model:\n      checkpoint: {TINY / 'weights.safetensors'}\n      config: {TINY / 'config.json'}\n      target_size: 70\n"
        "    keyframe.min_change: 0.0\n    window:\n      size: 3\n      overlap: 1\n"
        "    map.voxel_size: 0.02\n"
    )
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, folder, "--params-file", params, "--out", out, "--threads", "1", quiet=False)
    assert code == 0
    assert "node-only parameters not used offline: image_qos, image_topics" in err
    assert "frames:" in err and "windows:" in err  # the progress bars
    summary = summary_of(out)
    assert (summary["keyframes"], summary["windows"] + summary["windows_failed"]) == (7, 3)  # 0-2, 2-4, 4-6
    assert summary["voxel_size"] >= 0.02
    document = check_map_outputs(out, summary)
    assert document["keyframes"][0]["image_size"] == [70, 56]  # model.target_size from the file
    # A dedicated option overrides the file.
    code, _, _ = run_cli(capsys, folder, "--params-file", params, "--out", tmp_path / "out2", "--threads", "1", "--window-size", "7")
    assert code == 0 and summary_of(tmp_path / "out2")["windows"] + summary_of(tmp_path / "out2")["windows_failed"] == 1


def test_one_shot_reconstructs_all_images_as_one_window(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = image_folder(tmp_path / "frames", 3)
    files = [folder / "frame_0.png", folder / "frame_1.png", folder / "frame_1.png", folder / "frame_2.png"]
    out = tmp_path / "out"
    code, _, _ = run_cli(capsys, *files, "--one-shot", "--out", out, *TINY_MODEL)
    assert code == 0
    summary = summary_of(out)
    # No keyframe selection: the repeated image is kept.
    assert (summary["frames_read"], summary["keyframes"], summary["windows"], summary["keyframes_in_map"]) == (4, 4, 1, 4)
    check_map_outputs(out, summary)


def test_one_shot_with_an_optimizer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = image_folder(tmp_path / "frames", 3)
    code, _, err = run_cli(capsys, folder, "--one-shot", "--out", tmp_path / "plain", *TINY_MODEL)
    assert code == 0, err
    code, _, err = run_cli(capsys, folder, "--one-shot", "--optimizer", "dense_scene_optimizer", "--optimizer-arg", "niter=20",
                           "--out", tmp_path / "dense", *TINY_MODEL)
    assert code == 0, err
    plain, dense = (json.loads((tmp_path / name / "keyframes.json").read_text())["keyframes"] for name in ("plain", "dense"))
    assert len(plain) == len(dense) == 3 and not np.allclose([k["pose"] for k in plain], [k["pose"] for k in dense])
    code, _, err = run_cli(capsys, folder, "--one-shot", "--optimizer", "sparse_scene_optimizer", "--out", tmp_path / "out", *TINY_MODEL)
    assert code == 2 and "matches local descriptors, which model_type 'vggt' does not give; use model_type mast3r" in err
    code, _, err = run_cli(capsys, folder, "--one-shot", "--optimizer", "magic", "--out", tmp_path / "out", *TINY_MODEL)
    assert code == 2 and "optimizer.type='magic' is not allowed: expected one of auto, none, dense_scene_optimizer" in err


def test_sample_sequence_with_the_tiny_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, _, _ = run_cli(capsys, "--sample", "--sample-frames", "12", "--sample-size", "96x72", "--out", out, *TINY_MODEL,
                         "--min-change", "0", "--window-size", "4", "--window-overlap", "2")
    assert code == 0
    summary = summary_of(out)
    assert summary["frames_read"] == 12 and "built-in sample sequence" in summary["input"]
    document = check_map_outputs(out, summary)
    truth = make_sequence(12, 96, 72).intrinsics
    np.testing.assert_allclose(np.array(document["keyframes"][0]["camera_intrinsics"]), truth)


def test_too_few_keyframes_exit_with_status_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = image_folder(tmp_path / "frames", 1)
    code, _, err = run_cli(capsys, folder, "--out", tmp_path / "out", *TINY_MODEL)
    assert code == 1 and "no map was built: 1 frames gave 1 keyframes" in err
    assert summary_of(tmp_path / "out")["windows"] == 0


def _error_inputs(tmp_path: Path) -> dict[str, list[object]]:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(3000))
    bag, _, _ = camera_bag(tmp_path / "bag", "mcap", count=2)
    no_images = write_bag(tmp_path / "no_images", "sqlite3", {"/chatter": "std_msgs/msg/String"}, [("/chatter", 1, string_msg("x"))])
    return {
        "missing": [tmp_path / "missing.mp4"],
        "video": [broken],
        "wrong_type": [bag, "--topic", "/chatter"],
        "empty_topic": [bag, "--topic", "/empty/image_raw"],
        "no_images": [no_images],
        "weights": [bag, "--topic", "/cam/image_raw", "--checkpoint", tmp_path / "nowhere" / "model.safetensors",
                    "--model-arg", f"config={TINY / 'config.json'}"],
        "parameter": [bag, "-p", "window.sise=3"],
    }


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", r"input .*missing\.mp4 does not exist"),
        ("video", r"cannot decode video .*broken\.mp4"),
        ("wrong_type", r"topic /chatter in bag .* carries std_msgs/msg/String, not sensor_msgs/msg/Image"),
        ("empty_topic", r"topic /empty/image_raw in bag .* has no messages"),
        ("no_images", r"bag .*no_images has no image topic"),
        ("weights", r"checkpoint '.*nowhere/model\.safetensors' is neither an existing file or folder"),
        ("parameter", r"unknown parameter window\.sise \(did you mean window\.size\?\)"),
    ],
)
def test_errors_are_one_clear_message(
    case: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # an error that slipped through must not wait for the network
    args = _error_inputs(tmp_path)[case]
    code, stdout, err = run_cli(capsys, *args, "--out", tmp_path / "out", *TINY_MODEL[4:])
    assert code == 2 and stdout == ""
    lines = err.strip().splitlines()
    assert lines[-1 if case != "weights" else -2].startswith("scene_from_views_map: error: ")
    assert re.search(message, err), err
    assert not (tmp_path / "out" / "summary.json").exists()


def test_output_folder_from_parameters_and_existing_bag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = image_folder(tmp_path / "frames", 2)
    code, _, _ = run_cli(capsys, folder, "-p", f"map.output_dir={tmp_path / 'from_param'}", "--min-change", "0", *TINY_MODEL)
    assert code == 0 and summary_of(tmp_path / "from_param")["keyframes"] == 2
    # ROS's NAME:=VALUE spelling is accepted too
    code, _, _ = run_cli(capsys, folder, "-p", f"map.output_dir:={tmp_path / 'ros_style'}", "--min-change", "0", *TINY_MODEL)
    assert code == 0 and summary_of(tmp_path / "ros_style")["keyframes"] == 2
    (tmp_path / "out" / "bag").mkdir(parents=True)
    code, _, err = run_cli(capsys, folder, "--out", tmp_path / "out", "--write-bag", *TINY_MODEL)
    assert code == 2 and "holds the outputs of an earlier run (bag)" in err and "--overwrite" in err


def test_sample_with_default_weights_offline_names_how_to_supply_them(tmp_path: Path) -> None:
    """The README's main job on a machine without the weights: one clear error, no traceback."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(REPO)}
    env.pop("HF_HUB_CACHE", None)
    result = subprocess.run(
        [sys.executable, "-m", "scene_from_views_ros.cli.map", "--sample", "--sample-frames", "4", "--out", tmp_path / "out", "-q"],
        capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "cannot obtain weights for 'facebook/VGGT-1B'" in result.stderr
    assert "huggingface-cli download facebook/VGGT-1B" in result.stderr and "--checkpoint" in result.stderr
