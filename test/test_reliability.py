"""Nothing lost, nothing silent, offline: inputs of every shape, time that jumps back, bad
frames, runs that stop early, atomic and strict outputs, clear errors, suspect inputs.

The node's side (fuzzed messages, time jumps, signals, saving on shutdown) is in
test_ros_node.py; these run the offline tool and the mapping core in-process.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from rosbags.rosbag2 import StoragePlugin, Writer
from safetensors.torch import load_file, save_file
from test_io import TYPESTORE, K, camera_info_msg, compressed_msg, image_msg, sample_frames, string_msg, write_bag

from scene_from_views_ros.cli.map import main
from scene_from_views_ros.core.files import atomic_path, strict_json, write_json
from scene_from_views_ros.geometry.ply import read_ply, write_ply
from scene_from_views_ros.io.bag_reader import BagSource
from scene_from_views_ros.io.sources import InputError, open_source
from scene_from_views_ros.mapping import KeyframeConfig, MapConfig, MapperConfig, SlidingWindowMapper, WindowConfig
from scene_from_views_ros.mapping.keyframes import Frame
from scene_from_views_ros.mapping.synthetic import SyntheticWindowBackend, make_sequence

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "test" / "fixtures" / "vggt_tiny"
TINY_MODEL = ["--checkpoint", str(TINY / "weights.safetensors"), "--model-arg", f"config={TINY / 'config.json'}",
              "-p", "model.target_size=56", "--device", "cpu", "--threads", "1", "-p", "chain.min_inlier_ratio=0"]
IMAGE, COMPRESSED, INFO = "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/CameraInfo"


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in (*args, "-q")])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


# ---------------------------------------------------------------------------- bags of every shape
def image_records(topic: str, images: list[np.ndarray], stamps: np.ndarray, compressed: bool = False) -> list:
    make = compressed_msg if compressed else image_msg
    return [(topic, int(stamp) + 1000, make(image, int(stamp))) for image, stamp in zip(images, stamps, strict=True)]


def test_bag_with_only_an_image_topic(tmp_path: Path) -> None:
    """No CameraInfo at all: frames without intrinsics (this crashed: rosbags read every topic
    for the empty list of CameraInfo connections and took an Image as CameraInfo)."""
    images, stamps = sample_frames(5)
    bag = write_bag(tmp_path / "bag", "mcap", {"/cam/image_raw": IMAGE}, image_records("/cam/image_raw", images, stamps))
    frames = list(open_source([bag]))
    assert [f.stamp_ns for f in frames] == stamps.tolist() and all(f.intrinsics is None for f in frames)
    np.testing.assert_array_equal(frames[2].image, images[2])


def test_bag_with_only_compressed_images(tmp_path: Path) -> None:
    images, stamps = sample_frames(4)
    bag = write_bag(tmp_path / "bag", "sqlite3", {"/cam/image_raw/compressed": COMPRESSED},
                    image_records("/cam/image_raw/compressed", images, stamps, compressed=True))
    frames = list(open_source([bag]))
    assert len(frames) == 4 and all(np.array_equal(f.image, i) for f, i in zip(frames, images, strict=True))  # png: lossless


def test_bag_with_two_image_topics_needs_and_takes_topic(tmp_path: Path) -> None:
    images, stamps = sample_frames(4)
    records = image_records("/left/image_raw", images, stamps) + image_records("/right/image_raw", images[::-1], stamps)
    bag = write_bag(tmp_path / "bag", "mcap", {"/left/image_raw": IMAGE, "/right/image_raw": IMAGE}, records)
    with pytest.raises(InputError, match="several image topics.*choose one with --topic"):
        open_source([bag])
    frames = list(open_source([bag], topic="/right/image_raw"))
    assert np.array_equal(frames[0].image, images[-1])


def test_camera_info_with_nan_is_ignored_with_a_warning(tmp_path: Path) -> None:
    images, stamps = sample_frames(4)
    height, width = images[0].shape[:2]
    bad = K.copy()
    bad[0, 0] = np.nan
    records = [("/cam/camera_info", int(stamps[0]), camera_info_msg(K, width, height, int(stamps[0])))]
    records += image_records("/cam/image_raw", images[:2], stamps[:2])
    records += [("/cam/camera_info", int(stamps[2]), camera_info_msg(bad, width, height, int(stamps[2])))]
    records += image_records("/cam/image_raw", images[2:], stamps[2:])
    bag = write_bag(tmp_path / "bag", "mcap", {"/cam/image_raw": IMAGE, "/cam/camera_info": INFO}, records)
    source = open_source([bag])
    frames = list(source)
    assert len(frames) == 4 and all(np.allclose(f.intrinsics, K) for f in frames)  # the good info stays in use
    (warning,) = source.warnings
    assert "ignored CameraInfo messages on /cam/camera_info" in warning and "not 9 finite numbers" in warning


def test_a_folder_with_only_an_mcap_file_is_read(tmp_path: Path) -> None:
    images, stamps = sample_frames(3)
    bag = write_bag(tmp_path / "bag", "mcap", {"/cam/image_raw": IMAGE}, image_records("/cam/image_raw", images, stamps))
    copied = tmp_path / "copied"
    copied.mkdir()
    (mcap,) = bag.glob("*.mcap")
    (copied / "recording.mcap").write_bytes(mcap.read_bytes())
    source = open_source([copied])
    assert isinstance(source, BagSource) and source.path == copied / "recording.mcap" and len(list(source)) == 3
    (copied / "second.mcap").write_bytes(mcap.read_bytes())
    with pytest.raises(InputError, match="no metadata.yaml and 2 storage files .*pass one of them"):
        open_source([copied])


def test_messages_that_cannot_be_decoded_in_the_middle_are_skipped(tmp_path: Path) -> None:
    images, stamps = sample_frames(5)
    records = image_records("/cam/image_raw", images, stamps)
    bayer = image_msg(images[1], int(stamps[1]))
    bayer.encoding = "bayer_rggb8"
    records[1] = ("/cam/image_raw", records[1][1], bayer)
    records += [("/chatter", int(stamps[0]), string_msg("x"))]
    bag = write_bag(tmp_path / "bag", "mcap", {"/cam/image_raw": IMAGE, "/chatter": "std_msgs/msg/String"}, records)
    # A record whose bytes are not a whole message, between frames 2 and 4.
    corrupt = tmp_path / "corrupt"
    with Writer(corrupt, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection("/cam/image_raw", IMAGE, typestore=TYPESTORE)
        for index, (_, log_time, msg) in enumerate(image_records("/cam/image_raw", images, stamps)):
            raw = TYPESTORE.serialize_cdr(msg, IMAGE)
            writer.write(connection, log_time, raw[:40] if index == 3 else raw)
    for path, bad_index in ((bag, 1), (corrupt, 3)):
        source = open_source([path])
        frames = list(source)
        assert [f.stamp_ns for f in frames] == [int(s) for i, s in enumerate(stamps) if i != bad_index], path.name
        assert len(source.skipped) == 1
    assert "bayer_rggb8" in open_source_skipped(bag)[0] and "cannot deserialize" in open_source_skipped(corrupt)[0]


def open_source_skipped(path: Path) -> list[str]:
    source = open_source([path])
    list(source)
    return source.skipped


def test_bad_frames_are_skipped_counted_and_can_stop_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A zero-byte and an undecodable image, an AppleDouble file and an extreme-aspect frame
    (which VGGT cannot resize) are skipped with warnings and counted; --on-bad-frame stop
    ends the run there, writing what was mapped."""
    folder = tmp_path / "frames"
    folder.mkdir()
    images, _ = sample_frames(8)
    for index, image in enumerate(images):
        cv2.imwrite(str(folder / f"f_{index:02d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    (folder / "f_02a.png").write_bytes(b"")
    (folder / "f_03a.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (folder / "._f_04.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    cv2.imwrite(str(folder / "f_05a.png"), np.zeros((3, 4000, 3), np.uint8))  # 3 rows: nothing left at 56 px wide
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, folder, "--out", out, "-p", "keyframe.min_change=0", "-p", "window.size=4", *TINY_MODEL)
    summary = summary_of(out)
    assert code == 0 and summary["windows"] >= 2 and summary["frames_skipped"] == 4
    assert summary["keyframes"] == 8 and "4 frames skipped" in stdout
    reasons = " | ".join(summary["skipped"])
    for text in ("f_02a.png is empty (0 bytes)", "cannot read image", "AppleDouble", "too elongated for VGGT"):
        assert text in reasons
    assert "warning: skipped a frame" in err
    (folder / "._f_04.png").unlink()  # it sorts first: the run would stop before any frame
    stopped = tmp_path / "stopped"
    code, _, err = run_cli(capsys, folder, "--out", stopped, "--on-bad-frame", "stop", "-p", "keyframe.min_change=0",
                           "-p", "window.size=2", "-p", "window.overlap=1", *TINY_MODEL)
    summary = summary_of(stopped)
    assert code == 2 and "stopped early" in err and "--on-bad-frame stop" in summary["stopped"]
    assert summary["frames_read"] == 3 and summary["windows"] >= 1 and (stopped / "map.ply").is_file()


# ---------------------------------------------------------------------------- time that jumps back
def jumping_sequence(count: int = 16) -> tuple[list[Frame], object]:
    """Synthetic frames whose stamps restart one hour lower half-way (a camera clock reset)."""
    sequence = make_sequence(count, 96, 72)
    frames = [sequence.frame(i) for i in range(count)]
    for frame in frames[count // 2:]:
        frame.stamp_ns -= 3600 * 10**9
    return frames, sequence


def test_a_clock_reset_starts_a_new_segment_and_the_map_continues() -> None:
    frames, sequence = jumping_sequence()
    config = MapperConfig(keyframe=KeyframeConfig(min_change=0.0), window=WindowConfig(size=4, overlap=2),
                          map=MapConfig(voxel_size=0.05))
    mapper = SlidingWindowMapper(SyntheticWindowBackend(sequence), config)
    for frame in frames:
        mapper.add_frame(frame)
    mapper.flush()
    stats = mapper.stats
    assert stats.keyframes == 16 and stats.time_jumps == 1 and stats.last_time_jump.startswith("synthetic: 3599.")
    assert len(mapper.trajectory()) == 16  # nothing dropped: both segments are in one map
    # Configured to start a new map instead:
    reset = SlidingWindowMapper(SyntheticWindowBackend(sequence), MapperConfig(
        keyframe=config.keyframe, window=config.window, map=config.map.changed(reset_on_time_jump=True)))
    for frame in frames:
        reset.add_frame(frame)
    reset.flush()
    assert reset.stats.time_jumps == 1 and len(reset.trajectory()) == 8
    assert all(kf.stamp_ns < frames[0].stamp_ns for kf in reset.trajectory())


def test_small_steps_back_are_out_of_order_and_counted() -> None:
    sequence = make_sequence(6, 96, 72)
    mapper = SlidingWindowMapper(SyntheticWindowBackend(sequence), MapperConfig(keyframe=KeyframeConfig(min_change=0.0)))
    frames = [sequence.frame(i) for i in range(6)]
    frames[3].stamp_ns = frames[2].stamp_ns - 10**8  # 0.1 s back: a reordered frame, not a reset
    for frame in frames:
        mapper.add_frame(frame)
    assert mapper.stats.frames_out_of_order == 1 and mapper.stats.time_jumps == 0 and mapper.stats.keyframes == 5
    strict = SlidingWindowMapper(SyntheticWindowBackend(sequence), MapperConfig(
        keyframe=KeyframeConfig(min_change=0.0, time_jump_s=0.05)))
    for frame in frames:
        strict.add_frame(frame)
    assert strict.stats.time_jumps == 1 and strict.stats.keyframes == 6  # keyframe.time_jump_s decides


def test_a_bag_whose_stamps_restart_keeps_all_frames(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Offline, a camera clock reset half-way loses nothing (it lost half the frames) and is
    reported; --start / --end count time forward across the reset."""
    images, stamps = sample_frames(12)
    stamps = stamps.copy()
    stamps[6:] -= 3600 * 10**9
    records = [("/cam/image_raw", 10**9 + index * 10**8, image_msg(image, int(stamp)))
               for index, (image, stamp) in enumerate(zip(images, stamps, strict=True))]
    bag = write_bag(tmp_path / "bag", "mcap", {"/cam/image_raw": IMAGE}, records)
    assert len(list(open_source([bag]))) == 12
    out = tmp_path / "out"
    code, stdout, _ = run_cli(capsys, bag, "--out", out, "-p", "keyframe.min_change=0", "-p", "window.size=4", *TINY_MODEL)
    summary = summary_of(out)
    assert code == 0 and summary["frames_read"] == 12 and summary["keyframes"] == 12 and summary["time_jumps"] == 1
    assert summary["keyframes_in_map"] == 12 and "1 time jumps back" in stdout


# ---------------------------------------------------------------------------- non-finite outputs
def test_a_checkpoint_that_gives_nan_places_no_window(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = load_file(str(TINY / "weights.safetensors"))
    nan = {k: torch.full_like(v, float("nan")) if k.startswith("camera_head.") else v for k, v in state.items()}
    checkpoint = tmp_path / "nan.safetensors"
    save_file(nan, str(checkpoint))
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, image in enumerate(sample_frames(6)[0]):
        cv2.imwrite(str(folder / f"f_{index}.png"), image)
    out = tmp_path / "out"
    args = [arg if arg != str(TINY / "weights.safetensors") else str(checkpoint) for arg in TINY_MODEL]
    code, _, err = run_cli(capsys, folder, "--out", out, "-p", "keyframe.min_change=0", "-p", "window.size=3", *args)
    summary = summary_of(out)
    assert code == 1 and summary["windows"] == 0 and summary["windows_failed"] >= 1
    assert "non-finite camera poses" in summary["failures"][0] and "no map was built" in err
    assert not (out / "map.ply").exists() and not (out / "keyframes.json").exists()


# ---------------------------------------------------------------------------- outputs
def test_a_failed_write_leaves_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "map.ply"
    write_ply(path, np.ones((3, 3)), np.zeros((3, 3), np.uint8))
    before = path.read_bytes()

    def full_disk(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    class FullDisk:
        """A file whose second write fails as a full disk does."""

        def __init__(self, path: Path, mode: str) -> None:
            self.stream = open(path, mode)  # noqa: SIM115 - closed in __exit__
            self.writes = 0

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *_: object) -> None:
            self.stream.close()

        def write(self, data: bytes | memoryview) -> int:
            self.writes += 1
            if self.writes > 1:
                full_disk()
            return self.stream.write(data)

    from scene_from_views_ros.core import files  # where write_ply's bytes are written (write_bytes)

    monkeypatch.setattr(files, "open", FullDisk, raising=False)
    with pytest.raises(OSError, match="No space left"):
        write_ply(path, np.zeros((5, 3)), np.zeros((5, 3), np.uint8))
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["map.ply"]  # no temporary left
    monkeypatch.undo()
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "bag", folder=True) as temporary:
        temporary.mkdir()
        (temporary / "x.mcap").write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.ply"]
    assert read_ply(path)[0].shape == (3, 3)


def test_json_outputs_are_strict(tmp_path: Path) -> None:
    text, count = strict_json({"a": float("nan"), "b": [1.0, float("inf"), np.float32("-inf")], "c": np.arange(2)})
    assert json.loads(text) == {"a": None, "b": [1.0, None, None], "c": [0, 1]} and count == 3
    path = write_json(tmp_path / "x.json", {"scale": float("nan"), "ok": 1.5})
    document = json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"non-strict JSON constant {name}"))
    assert document == {"scale": None, "ok": 1.5, "non_finite_values": 1}


def test_an_earlier_run_is_kept_unless_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, image in enumerate(sample_frames(4)[0]):
        cv2.imwrite(str(folder / f"f_{index}.png"), image)
    out = tmp_path / "out"
    args = [folder, "--out", out, "-p", "keyframe.min_change=0", "-p", "window.size=2", "-p", "window.overlap=1", *TINY_MODEL]
    assert run_cli(capsys, *args)[0] == 0
    first = summary_of(out)
    (out / "windows").mkdir()
    (out / "windows" / "stale.ply").write_bytes(b"from an earlier run")
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "holds the outputs of an earlier run" in err and "--overwrite" in err
    assert summary_of(out) == first  # untouched
    assert run_cli(capsys, *args, "--overwrite", "--keyframe-files", "depth")[0] == 0
    assert not (out / "windows").exists()  # the earlier run's files went first
    assert sorted(p.suffix for p in (out / "keyframes").iterdir()) == [".npy"] * 4  # --keyframe-files depth


def test_an_output_folder_that_cannot_be_written_is_refused_before_the_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from scene_from_views_ros.mapping import settings

    monkeypatch.setattr(settings.MappingSettings, "build_model", lambda self: pytest.fail("the model was loaded"))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(capsys, "--sample", "--out", blocker / "out", *TINY_MODEL)
    assert code == 2 and "cannot write into" in err


@pytest.mark.parametrize("files", ["none", "depth", "all"])
def test_keyframe_files_can_be_turned_off(tmp_path: Path, capsys: pytest.CaptureFixture[str], files: str) -> None:
    out = tmp_path / files
    code, _, _ = run_cli(capsys, "--sample", "--sample-frames", "6", "--sample-size", "96x72", "--out", out,
                         "--keyframe-files", files, "-p", "keyframe.min_change=0", "-p", "window.size=3", *TINY_MODEL)
    assert code == 0
    written = sorted(p.name.split("_", 2)[-1] for p in (out / "keyframes").iterdir()) if (out / "keyframes").exists() else []
    expected = {"none": [], "depth": ["depth.npy"] * 6, "all": sorted(["depth.npy", "depth.png", "confidence.png"] * 6)}
    assert written == expected[files]
    document = json.loads((out / "keyframes.json").read_text())
    assert ("depth" in document["keyframes"][0]) == (files != "none")


# ---------------------------------------------------------------------------- every way a run ends
def default_signal_handling() -> None:
    """In the child: the signals as a terminal gives them, whatever pytest inherited (a shell
    ignores SIGINT for background jobs, nohup SIGHUP: both would be respected)."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signals_end_an_offline_run_with_its_map_written(tmp_path: Path, signum: int) -> None:
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "scene_from_views_ros.cli.map", "--sample", "--sample-frames", "400", "--sample-size", "96x72",
         "--out", str(out), "-p", "keyframe.min_change=0", "-p", "window.size=4", *TINY_MODEL],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, preexec_fn=default_signal_handling,
    )
    deadline = time.monotonic() + 60
    while not list((out / "keyframes").glob("*_depth.npy")) if (out / "keyframes").exists() else True:
        assert time.monotonic() < deadline and process.poll() is None, "no window was mapped"
        time.sleep(0.05)
    process.send_signal(signum)
    _stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted; writing what was mapped so far" in stderr
    summary = summary_of(out)
    assert summary["stopped"] == "interrupted" and summary["windows"] >= 1 and read_ply(out / "map.ply")[0].shape[0] > 0
    assert (out / "keyframes.json").is_file() and not list(out.glob(".*partial*"))


# ---------------------------------------------------------------------------- clear errors
@pytest.mark.parametrize(("args", "message"), [
    (["--fps", "nan"], "--fps must be a positive number, got nan"),
    (["--sample", "--start", "nan"], "--start and --end must be finite"),
    (["--sample", "--end", "inf"], "--start and --end must be finite"),
    (["--sample", "--params-file", "/nonexistent/params.yaml"], "cannot read parameter file /nonexistent/params.yaml"),
    (["--sample", "-p", "image_topics=[bad topic]"], "'bad topic' is not a valid topic name"),
    (["--sample", "-p", "model.conf_thre=5"], "unknown parameter model.conf_thre (did you mean model.conf_thres?)"),
])
def test_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    if "--sample" not in args:
        cv2.imwrite(str(tmp_path / "frame.png"), sample_frames(1)[0][0])
        args = [str(tmp_path / "frame.png"), *args]
    code, _, err = run_cli(capsys, *args, "--out", tmp_path / "out", *TINY_MODEL)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_malformed_parameter_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("scene_from_views:\n  ros__parameters:\n    window: [1,\n")
    code, _, err = run_cli(capsys, "--sample", "--params-file", params, "--out", tmp_path / "out", *TINY_MODEL)
    assert code == 2 and "is not valid YAML" in err


def test_start_past_the_end_of_a_video_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str], shared_data: Path) -> None:
    code, _, err = run_cli(capsys, shared_data / "redkitchen.mp4", "--start", "100", "--out", tmp_path / "out", *TINY_MODEL)
    assert code == 2 and "no frame in the selected time range" in err and "--start is 100 s" in err


def test_ctrl_c_while_the_model_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from scene_from_views_ros.mapping import settings

    def interrupted(self: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(settings.MappingSettings, "build_model", interrupted)
    code, _, err = run_cli(capsys, "--sample", "--out", tmp_path / "out", *TINY_MODEL)
    assert code == 130 and err.strip() == "scene_from_views_map: interrupted"


class UnsafePayload:
    """A pickled object that weights_only loading must refuse."""


def test_an_unsafe_checkpoint_refusal_does_not_advise_disabling_weights_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "unsafe.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": UnsafePayload()}, path)
    code, _, err = run_cli(capsys, "--sample", "--out", tmp_path / "out", *TINY_MODEL, "--checkpoint", path)
    assert code == 2 and "unsafe.pth" in err and "weights_only" not in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------- suspect inputs
def test_sixteen_bit_images_are_scaled_with_a_warning(tmp_path: Path) -> None:
    image = np.zeros((40, 50, 3), np.uint16)
    image[:, 25:] = 4000  # 12-bit data
    cv2.imwrite(str(tmp_path / "a.png"), image)
    source = open_source([tmp_path])
    (frame,) = list(source)
    assert frame.image.dtype == np.uint8 and frame.image[0, 49, 0] == 255 and frame.image[0, 0, 0] == 0
    assert any("16-bit images are scaled" in warning for warning in source.warnings)


def test_a_truncated_jpeg_is_skipped_as_such(tmp_path: Path) -> None:
    images, _ = sample_frames(2)
    for name, image in zip(("a.jpg", "b.jpg"), images, strict=True):
        cv2.imwrite(str(tmp_path / name), image)
    data = (tmp_path / "b.jpg").read_bytes()
    (tmp_path / "b.jpg").write_bytes(data[:-2])  # only the end-of-image marker is missing
    source = open_source([tmp_path])
    assert len(list(source)) == 1
    assert source.skipped == [f"image {tmp_path / 'b.jpg'} is a truncated JPEG (no end-of-image marker)"]


def test_a_video_shorter_than_announced_is_reported(tmp_path: Path) -> None:
    """A Motion-JPEG AVI cut at 70 %: its header announces 30 frames, 15 can be read."""
    path = tmp_path / "video.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for index in range(30):
        writer.write(np.full((48, 64, 3), index * 8, np.uint8))
    writer.release()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 7 // 10])
    source = open_source([path])
    frames = list(source)
    assert 0 < len(frames) < 30
    assert any(f"announces 30 frames but only {len(frames)} could be read" in warning for warning in source.warnings)

