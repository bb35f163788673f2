"""Fleet mapping: several recordings into OUT/<name>/, sequential in-process or on an embedded
Ray (this 2-core machine), with a corrupt recording, --resume and a model replica that dies."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from test_cli import TINY_MODEL, run_cli

from scene_from_views_ros.cli.recordings import Recording, expand_recordings
from scene_from_views_ros.io.sources import InputError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MAPPING = ["--min-change", "0", "--window-size", "4", "--window-overlap", "2", "--keyframe-files", "none", "--end", "8", "--step", "4"]
RECORDINGS = ("sample", "redkitchen", "robot_unitree")


def fleet_inputs(tmp_path: Path) -> list[object]:
    """The built-in sample, two short videos of ../shared/data and a corrupt one."""
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return ["--sample", "--sample-frames", "16", "--sample-size", "96x72", SHARED / "redkitchen.mp4", SHARED / "robot_unitree.mp4", corrupt]


def fleet_rows(out: Path) -> dict[str, dict]:
    return {row["name"]: row for row in json.loads((out / "fleet.json").read_text())["recordings"]}


def same_map(first: Path, second: Path) -> None:
    assert (first / "map.ply").read_bytes() == (second / "map.ply").read_bytes()
    assert (first / "map_trajectory.tum").read_text() == (second / "map_trajectory.tum").read_text()


# ---------------------------------------------------------------- which recordings
def test_recordings_come_from_paths_patterns_and_manifests(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (videos / name).write_bytes(b"x")
    (tmp_path / "bags").mkdir()
    manifest = tmp_path / "fleet.yaml"
    manifest.write_text(
        "recordings:\n"
        "  - {path: videos/a.mp4, name: robot1/run 1, start: 2.5, end: 9, step: 2}\n"
        "  - path: bags\n    topic: /front/image_raw/compressed\n"
        "  - {sample: true, sample_frames: 12}\n"
    )
    recordings = expand_recordings([str(videos / "*.mp4"), str(manifest)])
    assert [r.name for r in recordings] == ["a", "b", "robot1_run_1", "bags", "sample"]
    run = recordings[2]
    assert (run.path, run.start, run.end, run.step) == (str(videos / "a.mp4"), 2.5, 9, 2) and run.selection.end_s == 9
    assert recordings[3].topic == "/front/image_raw/compressed" and recordings[4].is_sample and recordings[4].sample_frames == 12
    assert run.options() == {"path": str(videos / "a.mp4"), "start": 2.5, "end": 9, "step": 2}  # the name is the row's
    # the same file twice: the second default name gets a suffix
    assert [r.name for r in expand_recordings([str(videos / "a.mp4"), str(videos / "a.mp4")])] == ["a", "a_2"]
    assert [r.name for r in expand_recordings([str(videos / "a.mp4")], sample=Recording("sample"))] == ["sample", "a"]


@pytest.mark.parametrize(("manifest", "message"), [
    ("recordings: []\n", "has no recordings"),
    ("recordings:\n  - {path: nowhere.mp4}\n", "'nowhere.mp4' does not exist"),
    ("recordings:\n  - {path: '*.avi'}\n", r"the pattern '\*.avi' matches no file"),
    ("recordings:\n  - {path: x.mp4, topics: /a}\n", "unknown key\\(s\\) topics"),
    ("recordings:\n  - {path: x.mp4, name: r}\n  - {path: x.mp4, name: r}\n", "two recordings are named 'r'"),
    ("recordings:\n  - {path: x.mp4, step: 0}\n", "frame step must be >= 1"),
])
def test_a_bad_manifest_names_the_problem(tmp_path: Path, manifest: str, message: str) -> None:
    (tmp_path / "x.mp4").write_bytes(b"x")
    (tmp_path / "m.yaml").write_text(manifest)
    with pytest.raises(InputError, match=message):
        expand_recordings([str(tmp_path / "m.yaml")])


# ---------------------------------------------------------------- sequential
def test_sequential_fleet_reports_a_corrupt_recording_and_resume_redoes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, *fleet_inputs(tmp_path), "--out", out, *TINY_MODEL, *MAPPING)
    assert code == 2 and "1 of 4 recordings failed: corrupt" in err
    rows = fleet_rows(out)
    assert [rows[name]["status"] for name in (*RECORDINGS, "corrupt")] == ["done", "done", "done", "failed"]
    assert "InputError" in rows["corrupt"]["error"] and not (out / "corrupt").exists() and not list(out.glob(".*partial"))
    for name in RECORDINGS:
        summary = json.loads((out / name / "summary.json").read_text())
        assert rows[name]["windows"] == summary["windows"] > 0 and rows[name]["points"] == summary["map_points"] > 0
        assert stdout.count(f"\n{name} ") == 1  # one table row each
    # an existing output is not overwritten by surprise
    code, _, err = run_cli(capsys, *fleet_inputs(tmp_path), "--out", out, *TINY_MODEL, *MAPPING)
    assert code == 2 and "already holds complete maps of sample, redkitchen, robot_unitree; pass --resume" in err
    # --resume: the complete ones are skipped (untouched), the failed one is tried again
    stamps = {name: (out / name / "map.ply").stat().st_mtime_ns for name in RECORDINGS}
    code, _, _ = run_cli(capsys, *fleet_inputs(tmp_path), "--out", out, *TINY_MODEL, *MAPPING, "--resume")
    rows = fleet_rows(out)
    assert code == 2 and [rows[name]["status"] for name in (*RECORDINGS, "corrupt")] == ["skipped"] * 3 + ["failed"]
    assert stamps == {name: (out / name / "map.ply").stat().st_mtime_ns for name in RECORDINGS}


def test_an_interrupted_recording_leaves_no_folder_that_looks_complete(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during the second recording: the first is complete, the second leaves nothing
    under its name, the third is not started; the exit status is 130 and --resume maps the rest."""
    from scene_from_views_ros.mapping.mapper import SlidingWindowMapper

    add_frame, calls = SlidingWindowMapper.add_frame, [0]

    def interrupt_in_the_second(self: SlidingWindowMapper, frame: object) -> bool:
        calls[0] += 1
        if calls[0] == 17:  # the sample has 16 frames: the first of the second recording
            raise KeyboardInterrupt
        return add_frame(self, frame)

    monkeypatch.setattr(SlidingWindowMapper, "add_frame", interrupt_in_the_second)
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, *fleet_inputs(tmp_path)[:-1], "--out", out, *TINY_MODEL, *MAPPING)
    rows = fleet_rows(out)
    assert code == 130 and "complete: sample (--resume maps the others)" in err
    assert [rows[name]["status"] for name in RECORDINGS] == ["done", "interrupted", "not started"]
    assert sorted(p.name for p in out.iterdir()) == ["fleet.json", "sample"]
    monkeypatch.setattr(SlidingWindowMapper, "add_frame", add_frame)
    code, _, _ = run_cli(capsys, *fleet_inputs(tmp_path)[:-1], "--out", out, *TINY_MODEL, *MAPPING, "--resume")
    assert code == 0 and [fleet_rows(out)[name]["status"] for name in RECORDINGS] == ["skipped", "done", "done"]


# ---------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def ray_cluster():
    """An embedded Ray with this machine's 2 CPUs, shared by the tests (RayFleet leaves a Ray it
    did not start running)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_maps_each_recording_as_the_sequential_path_does(tmp_path: Path, capsys: pytest.CaptureFixture[str], ray_cluster) -> None:
    ray_out, sequential_out = tmp_path / "ray", tmp_path / "sequential"
    code, stdout, _ = run_cli(capsys, *fleet_inputs(tmp_path), "--out", ray_out, *TINY_MODEL, *MAPPING, "--ray", "--workers", "2",
                              "--export", "all")
    rows = fleet_rows(ray_out)
    assert code == 2 and [rows[name]["status"] for name in (*RECORDINGS, "corrupt")] == ["done", "done", "done", "failed"]
    assert json.loads((ray_out / "fleet.json").read_text())["ray"] == "local" and "robot_unitree" in stdout
    run_cli(capsys, *fleet_inputs(tmp_path), "--out", sequential_out, *TINY_MODEL, *MAPPING, "--export", "all")
    for name in RECORDINGS:  # the same points and trajectory, byte for byte (one torch thread on both sides)
        same_map(ray_out / name, sequential_out / name)
        summary = json.loads((ray_out / name / "summary.json").read_text())
        assert "Ray replica" in summary["model"] and summary["outputs"]["map"] == str(ray_out / name / "map.ply")
        for export in ("map.pcd", "colmap/images.txt", "colmap/points3D.txt", "nerfstudio/transforms.json"):
            assert (ray_out / name / export).read_bytes() == (sequential_out / name / export).read_bytes()
        images = sorted(p.name for p in (ray_out / name / "nerfstudio" / "images").iterdir())
        assert images and images == sorted(p.name for p in (sequential_out / name / "nerfstudio" / "images").iterdir())


def test_a_replica_that_dies_is_restarted_and_its_recording_mapped_again(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                        monkeypatch: pytest.MonkeyPatch, ray_cluster) -> None:
    from scene_from_views_ros.cli import fleet_ray

    reconstruct, killed = fleet_ray.RemoteModel.reconstruct, []

    class DiesWithItsTask:
        """The replica dies (e.g. killed for memory) while it holds the window just sent."""

        def __init__(self, replica: object) -> None:
            self.replica, self.reconstruct = replica, self

        def remote(self, *args: object) -> object:
            task = self.replica.reconstruct.remote(*args)
            ray_cluster.kill(self.replica, no_restart=False)  # Ray restarts it (max_restarts)
            return task

    def kill_once(self: fleet_ray.RemoteModel, *args: object, **kwargs: object) -> object:
        if killed:
            return reconstruct(self, *args, **kwargs)
        replica, self._replica = self._replica, DiesWithItsTask(self._replica)
        try:
            return reconstruct(self, *args, **kwargs)
        finally:
            killed.append(self.lost)
            self._replica = replica

    monkeypatch.setattr(fleet_ray.RemoteModel, "reconstruct", kill_once)
    out = tmp_path / "ray"
    code, _, _ = run_cli(capsys, "--sample", "--sample-frames", "16", "--sample-size", "96x72", SHARED / "redkitchen.mp4",
                         "--out", out, *TINY_MODEL, *MAPPING, "--ray", "--workers", "1")
    rows = fleet_rows(out)
    assert killed and killed[0] is not None  # the driver saw the replica die
    assert code == 0 and {name: rows[name]["status"] for name in RECORDINGS[:2]} == {"sample": "done", "redkitchen": "done"}
    assert sorted(row["attempts"] for row in rows.values()) == [1, 2]  # the recording in flight was mapped again
    monkeypatch.setattr(fleet_ray.RemoteModel, "reconstruct", reconstruct)
    run_cli(capsys, "--sample", "--sample-frames", "16", "--sample-size", "96x72", SHARED / "redkitchen.mp4",
            "--out", tmp_path / "sequential", *TINY_MODEL, *MAPPING)
    for name in RECORDINGS[:2]:
        same_map(out / name, tmp_path / "sequential" / name)


def test_without_ray_the_error_names_the_install_command(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    code, _, err = run_cli(capsys, "--sample", SHARED / "redkitchen.mp4", "--out", tmp_path, *TINY_MODEL, "--ray")
    assert code == 2 and "pip install ray" in err and "pip install .[ray]" in err


def test_the_sequential_fleet_never_imports_ray(tmp_path: Path) -> None:
    import subprocess

    arguments = [str(a) for a in ("--sample", "--sample-frames", "8", "--sample-size", "96x72", SHARED / "redkitchen.mp4",
                                  "--out", tmp_path / "out", *TINY_MODEL, *MAPPING, "-q")]
    script = f"import sys\nfrom scene_from_views_ros.cli.map import main\ncode = main({arguments!r})\nprint(code, 'ray' in sys.modules)\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    assert result.stdout.split()[-2:] == ["0", "False"], result.stdout + result.stderr
    assert [row["status"] for row in fleet_rows(tmp_path / "out").values()] == ["done", "done"]


def test_a_model_that_cannot_start_on_the_replicas_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                     ray_cluster) -> None:
    corrupt = tmp_path / "corrupt.safetensors"  # exists (so the driver's quick check passes), but does not load
    corrupt.write_bytes(b"not a checkpoint" * 64)
    model = [corrupt if argument == TINY_MODEL[1] else argument for argument in TINY_MODEL]
    code, _, err = run_cli(capsys, "--sample", SHARED / "redkitchen.mp4", "--out", tmp_path / "out", *model, "--ray", "--workers", "1")
    assert code == 2 and "the model replicas could not start:" in err and "corrupt.safetensors" in err
    code, _, err = run_cli(capsys, "--sample", SHARED / "redkitchen.mp4", "--out", tmp_path / "out", *TINY_MODEL, "--ray", "--workers", "9")
    assert code == 2 and "--workers 9 does not fit the cluster (2 CPUs, 0 GPUs)" in err
