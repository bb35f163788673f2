"""Every parameter the node and the offline tool expose changes what they publish or write.

Each row maps the built-in sample sequence with the tiny random-weight VGGT through
`scene_from_views_map`, once with the baseline parameters and once with one parameter
changed, and asserts the change in the files written (map.ply, keyframes.json,
summary.json, depth maps, the replay bag).  Parameters whose effect only the node shows
(its subscriptions and publishers), or that act where files cannot see it (CUDA precision,
memory chunking, the robust model's scores), name the test that shows their effect; the
completeness test makes a new parameter without an effect test fail.
"""
from __future__ import annotations

import ast
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from rosbags.highlevel import AnyReader
from safetensors.torch import load_file, save_file

from scene_from_views_ros.cli.map import main
from scene_from_views_ros.core import implemented_types
from scene_from_views_ros.geometry.ply import read_ply
from scene_from_views_ros.mapping.settings import parameters
from scene_from_views_ros.mapping.synthetic import make_sequence

TEST_DIR = Path(__file__).resolve().parent
TINY = TEST_DIR / "fixtures" / "vggt_tiny"
BASELINE = {
    "model.checkpoint": str(TINY / "weights.safetensors"), "model.config": str(TINY / "config.json"),
    "model.target_size": 56, "device": "cpu", "keyframe.min_change": 0.0, "window.size": 4, "window.overlap": 2,
    "chain.min_inlier_ratio": 0.0,  # random weights: accept any finite fit
    "map.voxel_size": 0.002,  # the tiny model's scenes are small: a finer grid keeps more points
}
SAMPLE = ["--sample", "--sample-frames", "16", "--sample-size", "96x72"]


@dataclass
class Run:
    """What one run wrote."""

    code: int
    stderr: str
    out: Path
    summary: dict[str, Any]
    keyframes: list[dict[str, Any]]
    map_frame: str
    points: np.ndarray
    colors: np.ndarray

    @property
    def poses(self) -> np.ndarray:
        return np.array([keyframe["pose"] for keyframe in self.keyframes])

    def depth(self, index: int) -> np.ndarray:
        return np.load(self.out / self.keyframes[index]["depth"])


def run(tmp_path: Path, capsys: pytest.CaptureFixture[str], params: dict[str, Any], *extra: str,
        inputs: list[str] | None = None, out: Path | None = None) -> Run:
    """Run the tool; it writes into `out` (given as --out unless the parameters choose it)."""
    given_out = out is None
    out = out or tmp_path / f"run_{len(list(tmp_path.glob('run_*')))}"
    args = [*(inputs or SAMPLE), "--threads", "1", "-q", *(["--out", str(out)] if given_out else []), *extra]
    for name, value in params.items():
        text = value if isinstance(value, str) else np.format_float_positional(value) if isinstance(value, float) else json.dumps(value)
        args += ["-p", f"{name}={text}"]
    code = main(args)
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    if code != 0 or not (out / "summary.json").is_file():
        return Run(code, stderr, out, {}, [], "", np.zeros((0, 3)), np.zeros((0, 3)))
    document = json.loads((out / "keyframes.json").read_text()) if (out / "keyframes.json").is_file() else {"keyframes": [], "map_frame": ""}
    points, colors = read_ply(out / "map.ply") if (out / "map.ply").is_file() else (np.zeros((0, 3)), np.zeros((0, 3)))
    return Run(code, stderr, out, json.loads((out / "summary.json").read_text()), document["keyframes"],
               document["map_frame"], points, colors)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("effects")


@pytest.fixture(scope="module")
def perturbed_checkpoint(workdir: Path) -> Path:
    state = load_file(str(TINY / "weights.safetensors"))
    generator = torch.Generator().manual_seed(1)
    perturbed = {k: (v.float() * (1 + 0.2 * torch.randn(v.shape, generator=generator))).to(v.dtype) for k, v in state.items()}
    path = workdir / "perturbed.safetensors"
    save_file(perturbed, str(path))
    return path


@pytest.fixture(scope="module")
def fewer_camera_iterations(workdir: Path) -> Path:
    """The tiny architecture with 2 instead of 4 camera-head refinements: same weights fit."""
    document = json.loads((TINY / "config.json").read_text())
    document["config"]["camera_iterations"] = 2
    path = workdir / "config_2_iterations.json"
    path.write_text(json.dumps(document))
    return path


@pytest.fixture(scope="module")
def black_and_white_frames(workdir: Path) -> Path:
    """Sample frames with a black band on top and a white band at the bottom."""
    folder = workdir / "bw_frames"
    folder.mkdir()
    sequence = make_sequence(8, 96, 72)
    for index in range(len(sequence)):
        image = sequence.frame(index).image.copy()
        image[:20] = 0
        image[-20:] = 255
        cv2.imwrite(str(folder / f"frame_{index:02d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return folder


def differs(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape != b.shape or not np.allclose(a, b, rtol=1e-6, atol=1e-7)


Check = Callable[[Run, Run], bool]
# parameter -> (changed parameters, check(baseline run, changed run)).  The baseline is
# BASELINE, or BASELINE with BASE_CHANGES[parameter] (then the changed run has them too).
FILE_EFFECTS: dict[str, tuple[dict[str, Any], Check]] = {
    "keyframe.min_interval_s": ({"keyframe.min_interval_s": 0.1}, lambda b, c: c.summary["keyframes"] < b.summary["keyframes"]),
    "keyframe.min_change": ({"keyframe.min_change": 0.1}, lambda b, c: c.summary["keyframes"] < b.summary["keyframes"]),
    "keyframe.max_rate_hz": ({"keyframe.max_rate_hz": 12.0}, lambda b, c: c.summary["keyframes"] < b.summary["keyframes"]),
    "window.size": ({"window.size": 6}, lambda b, c: c.summary["windows"] < b.summary["windows"]),
    "window.overlap": ({"window.overlap": 3}, lambda b, c: c.summary["windows"] > b.summary["windows"]),
    "chain.metric": ({"chain.metric": True},
                     lambda b, c: all(abs(w["scale"] - 1) < 1e-9 for w in c.summary["window_details"])
                     and any(abs(w["scale"] - 1) > 1e-5 for w in b.summary["window_details"])),
    "chain.max_correspondences": ({"chain.max_correspondences": 60}, lambda b, c: differs(b.poses, c.poses)),
    "chain.drop_percentile": ({"chain.drop_percentile": 80.0}, lambda b, c: differs(b.poses, c.poses)),
    "chain.inlier_threshold": ({"chain.inlier_threshold": 0.00001},
                               lambda b, c: [w["inlier_ratio"] for w in c.summary["window_details"]]
                               != [w["inlier_ratio"] for w in b.summary["window_details"]]),
    "chain.min_correspondences": ({"chain.min_correspondences": 10_000_000},
                                  lambda b, c: c.summary["windows_failed"] > b.summary["windows_failed"] == 0),
    "chain.min_inlier_ratio": ({"chain.min_inlier_ratio": 0.95},
                               lambda b, c: c.summary["windows_failed"] > b.summary["windows_failed"] == 0),
    "chain.seed": ({"chain.seed": 7}, lambda b, c: differs(b.poses, c.poses)),
    "map.voxel_size": ({"map.voxel_size": 0.2}, lambda b, c: len(c.points) < len(b.points)),
    "map.max_points": ({"map.max_points": 50}, lambda b, c: len(c.points) <= 50 < len(b.points)),
    "map.min_confidence": ({"map.min_confidence": 1.99}, lambda b, c: 0 < len(c.points) < len(b.points)),
    "map.drop_percentile": ({"map.drop_percentile": 60.0}, lambda b, c: 0 < len(c.points) < len(b.points)),
    "map.pixel_stride": ({"map.pixel_stride": 1}, lambda b, c: len(c.points) > len(b.points)),
    "map_frame": ({"map_frame": "world"}, lambda b, c: (b.map_frame, c.map_frame) == ("map", "world")),
    "keyframe_frame_prefix": ({"keyframe_frame_prefix": "kf_"},
                              lambda b, c: all(k["frame_id"].startswith("kf_") for k in c.keyframes)
                              and all(k["frame_id"].startswith("sfv_keyframe_") for k in b.keyframes)),
    # The robust model rejects no view of this sequence at its defaults, so its map equals
    # VGGT's (its rejection is model.rej_thresh's row); the summary names the model that ran.
    "model_type": ({"model_type": "vggt_robust"},
                   lambda b, c: c.summary["model"].startswith("vggt_robust on") and b.summary["model"].startswith("vggt on")),
    "model.preprocess_mode": ({"model.preprocess_mode": "pad"},
                              lambda b, c: (b.keyframes[0]["image_size"], c.keyframes[0]["image_size"]) == ([56, 42], [56, 56])),
    "model.target_size": ({"model.target_size": 70},
                          lambda b, c: (b.keyframes[0]["image_size"], c.keyframes[0]["image_size"]) == ([56, 42], [70, 56])),
    "model.prediction_mode": ({"model.prediction_mode": "depthmap"}, lambda b, c: differs(b.points, c.points)),
    "model.conf_thres": ({"model.conf_thres": 90.0},
                         lambda b, c: 0 < len(c.points) < 0.5 * len(b.points)
                         and np.isnan(c.depth(0)).mean() > np.isnan(b.depth(0)).mean() + 0.3),
    "model.checkpoint": ({"model.checkpoint": "<perturbed>"}, lambda b, c: differs(b.poses, c.poses) and differs(b.points, c.points)),
    "model.config": ({"model.config": "<fewer_camera_iterations>"}, lambda b, c: differs(b.poses, c.poses)),
    "model.rej_thresh": ({"model_type": "vggt_robust", "model.rej_thresh": 2.0},
                         lambda b, c: c.summary["views_rejected"] > 0 == b.summary["views_rejected"]
                         and c.summary["keyframes_in_map"] < b.summary["keyframes_in_map"]),
}


# The tiny model's windows agree on their overlap within 0.1 %: every inlier ratio is 1 at
# the default inlier distance, so the ratio a window needs shows at a tighter distance.
BASE_CHANGES = {"chain.min_inlier_ratio": {"chain.inlier_threshold": 0.0001}}


def _resolve(changes: dict[str, Any], fixtures: dict[str, Path]) -> dict[str, Any]:
    return {name: str(fixtures[value[1:-1]]) if isinstance(value, str) and value.startswith("<") else value
            for name, value in changes.items()}


@pytest.fixture(scope="module")
def baseline(workdir: Path) -> Run:
    out = workdir / "baseline"  # module-scoped: run without capsys
    code = main([*SAMPLE, "--threads", "1", "-q", "--out", str(out),
                 *[arg for name, value in BASELINE.items() for arg in ("-p", f"{name}={value}")]])
    assert code == 0
    document = json.loads((out / "keyframes.json").read_text())
    points, colors = read_ply(out / "map.ply")
    return Run(0, "", out, json.loads((out / "summary.json").read_text()), document["keyframes"], document["map_frame"], points, colors)


@pytest.mark.parametrize("name", sorted(FILE_EFFECTS))
def test_parameter_changes_the_written_map(
    name: str, baseline: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    perturbed_checkpoint: Path, fewer_camera_iterations: Path,
) -> None:
    changes, check = FILE_EFFECTS[name]
    fixtures = {"perturbed": perturbed_checkpoint, "fewer_camera_iterations": fewer_camera_iterations}
    base_params = {**BASELINE, **BASE_CHANGES.get(name, {})}
    if name in BASE_CHANGES:
        baseline = run(tmp_path, capsys, base_params)
    changed = run(tmp_path, capsys, {**base_params, **_resolve(changes, fixtures)})
    assert changed.code == 0, changed.stderr
    assert check(baseline, changed), f"{name}: no effect on the output ({changes})"


def test_window_period_places_partial_windows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """window.period_s: with keyframes at most every 0.1 s, full windows of 8 need 0.6 s of
    new keyframes; a period of 0.25 s places windows before they are full."""
    base = run(tmp_path, capsys, {**BASELINE, "window.size": 8, "keyframe.min_interval_s": 0.1})
    periodic = run(tmp_path, capsys, {**BASELINE, "window.size": 8, "keyframe.min_interval_s": 0.1, "window.period_s": 0.25})
    assert periodic.summary["windows"] > base.summary["windows"]
    assert min(w["views"] for w in periodic.summary["window_details"]) < 8


def test_thumbnail_width_changes_which_frames_become_keyframes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    counts = {width: run(tmp_path, capsys, {**BASELINE, "keyframe.min_change": 0.06, "keyframe.thumbnail_width": width}).summary["keyframes"]
              for width in (4, 64)}
    assert counts[4] != counts[64], counts


def test_background_masks_leave_black_and_white_pixels_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], black_and_white_frames: Path
) -> None:
    params = {**BASELINE, "model.conf_thres": 0.0}
    runs = {
        flags: run(tmp_path, capsys, {**params, **dict(flags)}, inputs=[str(black_and_white_frames)])
        for flags in [(), (("model.mask_black_bg", True),), (("model.mask_white_bg", True),)]
    }
    plain, black, white = runs.values()
    assert ((plain.colors.astype(int).sum(1) < 16).sum() > 0) and ((plain.colors > 240).all(1).sum() > 0)
    assert (black.colors.astype(int).sum(1) < 16).sum() < 0.2 * (plain.colors.astype(int).sum(1) < 16).sum()
    assert (white.colors > 240).all(1).sum() < 0.2 * (plain.colors > 240).all(1).sum()
    assert len(black.points) < len(plain.points) and len(white.points) < len(plain.points)


def test_output_dir_is_where_maps_go_without_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "from_parameter"
    written = run(tmp_path, capsys, {**BASELINE, "map.output_dir": str(target)}, out=target)
    assert written.code == 0 and (target / "map.ply").is_file() and (target / "summary.json").is_file()


def test_camera_frame_names_the_newest_camera_in_the_replay_bag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    written = run(tmp_path, capsys, {**BASELINE, "camera_frame": "front_camera"}, "--write-bag")
    with AnyReader([written.out / "bag"]) as reader:
        connections = [c for c in reader.connections if c.topic == "/tf"]
        children = {t.child_frame_id for _, _, raw in reader.messages(connections=connections)
                    for t in reader.deserialize(raw, connections[0].msgtype).transforms}
    assert "front_camera" in children and "sfv_camera" not in children


def test_device_is_the_one_the_model_runs_on(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(tmp_path, capsys, {**BASELINE, "device": "cpu"}).summary["model"].startswith("vggt on cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    refused = run(tmp_path, capsys, {**BASELINE, "device": "cuda"})
    assert refused.code == 2 and "device='cuda' is not allowed" in refused.stderr and "CUDA is not available" in refused.stderr


def test_the_optimizer_refines_every_window(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = run(tmp_path, capsys, BASELINE)
    dense = run(tmp_path, capsys, {**BASELINE, "optimizer.type": "dense_scene_optimizer", "optimizer.niter": 10})
    assert dense.code == 0 and len(dense.keyframes) == len(plain.keyframes)
    assert not np.allclose(dense.poses, plain.poses, atol=1e-4)
    refused = run(tmp_path, capsys, {**BASELINE, "optimizer.type": "sparse_scene_optimizer"})
    assert refused.code == 2 and "does not give" in refused.stderr and not refused.out.exists()


def test_optimizers_then_run_after_the_main_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """optimizer.then: TSDF refinement after the dense optimizer re-chooses depths, not cameras.
    (After the random tiny VGGT alone it would refuse windows: their focal lengths are not positive.)"""
    dense = {**BASELINE, "optimizer.type": "dense_scene_optimizer", "optimizer.niter": 10}
    plain = run(tmp_path, capsys, dense)
    tsdf = run(tmp_path, capsys, {**dense, "optimizer.then": ["tsdf_refinement"], "optimizer.TSDF_thresh": 0.05,
                                  "optimizer.subsample": 2, "optimizer.num_samples": 32})
    assert tsdf.code == 0 and len(tsdf.keyframes) == len(plain.keyframes)
    # the first window's cameras stay (later windows are chained through the refined depths)
    np.testing.assert_allclose(tsdf.poses[:4], plain.poses[:4], atol=1e-5)
    changed = np.mean(~np.isclose(tsdf.depth(0), plain.depth(0), rtol=1e-4))
    assert changed > 0.01, changed
    refused = run(tmp_path, capsys, {**BASELINE, "optimizer.then": ["tsdf"]})
    assert refused.code == 2 and "optimizer.then" in refused.stderr and "tsdf_refinement" in refused.stderr
    unused = run(tmp_path, capsys, {**BASELINE, "optimizer.then": ["tsdf_refinement"], "optimizer.niter": 5})
    assert unused.code == 2 and "optimizer.niter" in unused.stderr


# Parameters whose effect another test shows (file::test, or one per model that declares it), and why not here.
SHOWN_ELSEWHERE: dict[str, str | tuple[str, ...]] = {
    "window.period_s": "test_option_effects.py::test_window_period_places_partial_windows",
    "keyframe.thumbnail_width": "test_option_effects.py::test_thumbnail_width_changes_which_frames_become_keyframes",
    "model.mask_black_bg": "test_option_effects.py::test_background_masks_leave_black_and_white_pixels_out",
    "model.mask_white_bg": "test_option_effects.py::test_background_masks_leave_black_and_white_pixels_out",
    "map.output_dir": "test_option_effects.py::test_output_dir_is_where_maps_go_without_out",
    "camera_frame": "test_option_effects.py::test_camera_frame_names_the_newest_camera_in_the_replay_bag",
    "device": "test_option_effects.py::test_device_is_the_one_the_model_runs_on",
    "optimizer.type": "test_option_effects.py::test_the_optimizer_refines_every_window",
    "optimizer.then": "test_option_effects.py::test_optimizers_then_run_after_the_main_one",
    # CUDA precision: the CPU always computes in float32.
    "model.dtype": "test_vggt.py::test_reduced_precision_only_on_cuda",
    # A memory bound: outputs are equal by design, the heads run in more, smaller chunks.
    "model.frames_chunk_size": "test_vggt.py::test_frames_chunk_size_bounds_the_heads_without_changing_outputs",
    # The robust model's scores decide rejection (rej_thresh above shows rejection in the map).
    "model.attn_a": "test_vggt_robust.py::test_score_options_change_the_view_scores",
    "model.cos_a": "test_vggt_robust.py::test_score_options_change_the_view_scores",
    "model.use_most_central_as_reference": "test_vggt_robust.py::test_score_options_change_the_view_scores",
    "model.use_anchor_relative_score": "test_vggt_robust.py::test_score_options_change_the_view_scores",
    # The pairwise models (DUSt3R, MASt3R): which pairs, at what size, which pixels.
    "model.image_size": "test_dust3r.py::test_image_size_and_square_ok_change_the_network_input",
    "model.square_ok": "test_dust3r.py::test_image_size_and_square_ok_change_the_network_input",
    "model.scene_graph": "test_dust3r.py::test_scene_graph_options_choose_the_pairs",
    "model.winsize": "test_dust3r.py::test_scene_graph_options_choose_the_pairs",
    "model.win_cyclic": "test_dust3r.py::test_scene_graph_options_choose_the_pairs",
    "model.refid": "test_dust3r.py::test_scene_graph_options_choose_the_pairs",
    "model.min_conf_thr": ("test_dust3r.py::test_reconstruct_takes_the_fast_path",
                           "test_mvdust3r.py::test_postprocessing_options_change_the_result"),
    # A memory bound: outputs are equal by design, the pairs run in more, smaller batches.
    "model.batch_size": "test_dust3r.py::test_batch_size_bounds_the_passes_without_changing_outputs",
    # Fast3R: its image-index ids and the demo's post-processing.
    "model.image_id_seed": "test_fast3r.py::test_image_id_seed_makes_outputs_reproducible",
    "model.min_conf_thr_percentile": "test_fast3r.py::test_postprocessing_options_change_the_result",
    "model.niter_PnP": ("test_fast3r.py::test_postprocessing_options_change_the_result",
                        "test_mvdust3r.py::test_postprocessing_options_change_the_result"),
    "model.focal_length_estimation_method": "test_fast3r.py::test_postprocessing_options_change_the_result",
    # Depth Anything 3: its input size, how it picks its reference view, its sky masks.
    "model.process_res": "test_depth_anything_v3.py::test_conf_thres_and_ref_view_strategy_change_the_result",
    "model.ref_view_strategy": "test_depth_anything_v3.py::test_conf_thres_and_ref_view_strategy_change_the_result",
    "model.drop_sky": "test_depth_anything_v3_variants.py::test_nested_maps_in_metres_with_sky_masks",
    # The node in the robot's TF tree, and the map's metres.
    "odom_frame": "test_ros_tf.py::test_map_to_odom_keeps_one_parent_per_frame_and_maps_in_metres",
    "base_frame": "test_ros_tf.py::test_map_to_odom_keeps_one_parent_per_frame_and_maps_in_metres",
    "tf_mode": ("test_ros_tf.py::test_map_to_odom_keeps_one_parent_per_frame_and_maps_in_metres",
                "test_ros_tf.py::test_without_odometry_the_map_is_z_up_at_the_first_camera"),
    "scale_source": ("test_ros_tf.py::test_without_a_scale_the_map_stays_in_model_units_and_says_so",
                     "test_ros_tf.py::test_scale_source_model_needs_a_metric_model"),
    "scale_min_baseline_m": "test_ros_tf.py::test_without_a_scale_the_map_stays_in_model_units_and_says_so",
    "publish.keyframe_frames": ("test_ros_tf.py::test_without_odometry_the_map_is_z_up_at_the_first_camera",
                                "test_ros_node.py::test_window_outputs"),
    # The node's own inputs and outputs.
    "camera_info_slop_s": "test_ros_node.py::test_the_node_gives_each_keyframe_the_calibration_of_its_stamp",
    "rig_slop_s": ("test_ros_tf.py::test_a_camera_rig_maps_each_moment_as_one_multi_view_keyframe",
                   "test_mapping.py::test_rig_frames_pair_within_the_slop_only"),
    "image_topics": "test_ros_node.py::test_compressed_topic_frames_are_mapped",
    "camera_info_topics": "test_ros_node.py::test_save_map_writes_readable_files",
    "image_qos": "test_ros_node.py::test_options_change_what_the_node_publishes",
    "image_qos_depth": "test_ros_node.py::test_options_change_what_the_node_publishes",
    "diagnostics_period_s": "test_ros_node.py::test_options_change_what_the_node_publishes",
    "publish.window_cloud_stride": "test_ros_node.py::test_options_change_what_the_node_publishes",
    "publish.depth": "test_ros_node.py::test_options_change_what_the_node_publishes",
    "publish.path_max_poses": "test_ros_node.py::test_options_change_what_the_node_publishes",
    "map.save_on_shutdown": "test_ros_node.py::test_every_way_the_node_ends_saves_its_map",
    "map.save_formats": "test_ros_node.py::test_save_map_exports_colmap_and_nerfstudio_of_the_keyframes_it_kept",
    # Time that jumps back (a clock reset, a replayed bag).
    "keyframe.time_jump_s": "test_reliability.py::test_small_steps_back_are_out_of_order_and_counted",
    "map.reset_on_time_jump": "test_reliability.py::test_a_clock_reset_starts_a_new_segment_and_the_map_continues",
}


def test_every_exposed_parameter_has_an_effect_test() -> None:
    exposed = {parameter.name for model_type in implemented_types() for parameter in parameters(model_type)}
    covered = set(FILE_EFFECTS) | set(SHOWN_ELSEWHERE)
    assert exposed - covered == set(), "parameters without an effect test"
    assert covered - exposed == set(), "effect tests of parameters that no longer exist"
    references = {ref for value in SHOWN_ELSEWHERE.values() for ref in ((value,) if isinstance(value, str) else value)}
    for reference in references:
        file_name, test_name = reference.split("::")
        tree = ast.parse((TEST_DIR / file_name).read_text())
        assert test_name in {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}, reference
