"""Unit tests of the mapping core: keyframes, windows, Sim(3), voxel map, exports, mapper control."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from scene_from_views_ros.core.errors import InvalidOptionError
from scene_from_views_ros.geometry.pcd import read_pcd
from scene_from_views_ros.geometry.ply import read_ply
from scene_from_views_ros.geometry.pointcloud import VoxelAccumulator, confidence_mask, voxel_downsample
from scene_from_views_ros.geometry.sim3 import (
    apply_sim3,
    decompose_sim3,
    estimate_sim3_robust,
    invert_sim3,
    pose_to_translation_quaternion,
    quaternion_to_rotation,
    rotation_to_quaternion,
    sim3_matrix,
    transform_pose,
    umeyama,
)
from scene_from_views_ros.mapping import (
    ChainConfig,
    Frame,
    KeyframeConfig,
    KeyframeSelector,
    MapConfig,
    MapperConfig,
    SlidingWindowMapper,
    WindowBuilder,
    WindowConfig,
    WindowError,
    read_tum,
    write_tum,
)
from scene_from_views_ros.mapping.keyframes import Keyframe
from scene_from_views_ros.mapping.rig import RigSynchronizer
from scene_from_views_ros.mapping.settings import settings_from_parameters
from scene_from_views_ros.mapping.synthetic import SyntheticWindowBackend, make_sequence, trajectory_error, with_rig_camera


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    quaternion = rng.normal(size=4)
    return quaternion_to_rotation(quaternion / np.linalg.norm(quaternion))


def textured(seed: int, shape: tuple[int, int] = (48, 64)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(*shape, 3), dtype=np.uint8)


def keyframe(stamp_s: float) -> Keyframe:
    return Keyframe(Frame(textured(0, (8, 8)), int(stamp_s * 1e9)))


@pytest.fixture(scope="module")
def short_sequence():
    return make_sequence(num_frames=40, width=96, height=72)


# ---- keyframes ---------------------------------------------------------------------------------
def test_keyframe_selection_needs_image_change() -> None:
    selector = KeyframeSelector(KeyframeConfig(min_change=0.05))
    image = textured(1)
    assert selector.select(Frame(image, 0)) is not None  # the first frame always is one
    assert selector.select(Frame(image.copy(), 10**9)) is None  # identical: no change
    brighter = np.clip(image.astype(int) + 5, 0, 255).astype(np.uint8)  # ~2 % change
    assert selector.select(Frame(brighter, 2 * 10**9)) is None
    assert selector.select(Frame(textured(2), 3 * 10**9)) is not None


def test_keyframe_min_interval_is_per_camera_and_max_rate_is_global() -> None:
    selector = KeyframeSelector(KeyframeConfig(min_interval_s=0.5, min_change=0.0))
    assert selector.select(Frame(textured(1), 0, "left")) is not None
    assert selector.select(Frame(textured(2), int(0.2e9), "left")) is None
    assert selector.select(Frame(textured(3), int(0.2e9), "right")) is not None  # other camera
    assert selector.select(Frame(textured(4), int(0.6e9), "left")) is not None

    capped = KeyframeSelector(KeyframeConfig(min_change=0.0, max_rate_hz=2.0))
    stamps = np.arange(0, 3e9, 0.1e9).astype(np.int64)  # 10 Hz over 3 s, two cameras alternating
    chosen = [s for i, s in enumerate(stamps) if capped.select(Frame(textured(i), int(s), f"cam{i % 2}"))]
    assert len(chosen) == 6 and np.all(np.diff(chosen) >= 0.5e9)


def test_frame_rejects_non_rgb_images() -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8 RGB"):
        Frame(np.zeros((4, 4), np.uint8), 0)
    with pytest.raises(ValueError, match="min_change"):
        KeyframeConfig(min_change=2.0)


# ---- windows -----------------------------------------------------------------------------------
def test_windows_overlap_by_window_overlap_keyframes() -> None:
    builder = WindowBuilder(WindowConfig(size=5, overlap=2))
    keyframes = [keyframe(i) for i in range(14)]
    windows = []
    for kf in keyframes:
        builder.push(kf)
        window = builder.take()
        if window is not None:
            windows.append(window)
            builder.commit(window)
    ids = [[kf.keyframe_id - keyframes[0].keyframe_id for kf in w.keyframes] for w in windows]
    assert ids == [[0, 1, 2, 3, 4], [3, 4, 5, 6, 7], [6, 7, 8, 9, 10], [9, 10, 11, 12, 13]]
    assert [w.num_overlap for w in windows] == [0, 2, 2, 2]
    assert builder.dropped == 0


def test_window_period_trigger_and_forced_flush() -> None:
    builder = WindowBuilder(WindowConfig(size=6, overlap=2, period_s=1.0))
    builder.push(keyframe(0.0))
    builder.push(keyframe(0.5))
    assert builder.take() is None  # neither full nor a period old
    builder.push(keyframe(1.2))
    first = builder.take()
    assert first is not None and len(first) == 3
    builder.commit(first)
    builder.push(keyframe(1.5))
    assert builder.take() is None
    flushed = builder.take(force=True)
    assert flushed is not None and len(flushed) == 3 and flushed.num_overlap == 2
    assert builder.take(force=True) is None  # nothing new left


def test_pending_queue_is_bounded_and_newest_keyframes_win() -> None:
    builder = WindowBuilder(WindowConfig(size=4, overlap=1))
    for i in range(4):
        builder.push(keyframe(i))
    in_flight = builder.take()
    assert in_flight is not None
    late = [keyframe(10 + i) for i in range(9)]
    for kf in late:  # arrive while the window is being reconstructed
        builder.push(kf)
    assert builder.num_pending == 4 and builder.dropped == 5
    builder.commit(in_flight)  # anchor takes one slot: one more pending keyframe must go
    assert builder.num_pending == 3 and builder.dropped == 6
    window = builder.take()
    assert [kf.keyframe_id for kf in window.keyframes] == [in_flight.keyframes[-1].keyframe_id] + [kf.keyframe_id for kf in late[-3:]]


def test_window_config_validation_names_the_setting() -> None:
    with pytest.raises(ValueError, match=r"window\.overlap=4 is not allowed with window\.size=4"):
        WindowConfig(size=4, overlap=4)


# ---- Sim(3) ------------------------------------------------------------------------------------
def test_umeyama_recovers_exact_sim3_and_batches() -> None:
    rng = np.random.default_rng(0)
    truth = sim3_matrix(2.5, random_rotation(rng), rng.normal(size=3))
    source = rng.normal(size=(50, 3))
    np.testing.assert_allclose(umeyama(source, apply_sim3(truth, source)), truth, atol=1e-10)
    batch = umeyama(np.stack([source, source]), np.stack([apply_sim3(truth, source), source]))
    np.testing.assert_allclose(batch[0], truth, atol=1e-10)
    np.testing.assert_allclose(batch[1], np.eye(4), atol=1e-10)


def test_robust_sim3_rejects_outliers() -> None:
    rng = np.random.default_rng(1)
    rotation, scale, translation = random_rotation(rng), 0.37, np.array([3.0, -1.0, 2.0])
    truth = sim3_matrix(scale, rotation, translation)
    source = rng.uniform(-2, 2, size=(5000, 3)) + [0, 0, 4]
    target = apply_sim3(truth, source)
    depth = np.linalg.norm(target - translation, axis=1)
    target += rng.normal(size=target.shape) * 0.01 * depth[:, None]
    outliers = rng.random(5000) < 0.35
    target[outliers] = rng.uniform(-5, 5, size=(outliers.sum(), 3))
    plain = umeyama(source, target)
    fit = estimate_sim3_robust(source, target, residual_scale=depth, rng=rng)
    s, r, t = decompose_sim3(fit.transform)
    assert abs(s / scale - 1) < 2e-3
    assert np.degrees(np.arccos(np.clip((np.trace(r @ rotation.T) - 1) / 2, -1, 1))) < 0.1
    assert np.linalg.norm(t - translation) < 5e-3
    assert abs(decompose_sim3(plain)[0] / scale - 1) > 0.05  # the outliers do bias a plain fit
    assert fit.inliers[~outliers].mean() > 0.95 and fit.inliers[outliers].mean() < 0.05


def test_robust_se3_keeps_unit_scale() -> None:
    rng = np.random.default_rng(2)
    truth = sim3_matrix(1.0, random_rotation(rng), rng.normal(size=3))
    source = rng.normal(size=(500, 3))
    fit = estimate_sim3_robust(source, apply_sim3(truth, source) + 1e-3 * rng.normal(size=(500, 3)), with_scale=False)
    assert fit.scale == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(fit.transform, truth, atol=1e-3)


def test_sim3_pose_helpers_and_quaternions() -> None:
    rng = np.random.default_rng(3)
    transform = sim3_matrix(3.0, random_rotation(rng), rng.normal(size=3))
    np.testing.assert_allclose(transform @ invert_sim3(transform), np.eye(4), atol=1e-12)
    pose = sim3_matrix(1.0, random_rotation(rng), rng.normal(size=3))
    moved = transform_pose(transform, pose)
    np.testing.assert_allclose(moved[:3, :3] @ moved[:3, :3].T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(moved[:3, 3], apply_sim3(transform, pose[:3, 3]), atol=1e-12)
    rotations = np.stack([random_rotation(rng) for _ in range(200)] + [np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.eye(3)])
    quaternions = rotation_to_quaternion(rotations)
    assert np.all(quaternions[:, 3] >= 0)
    np.testing.assert_allclose(quaternion_to_rotation(quaternions), rotations, atol=1e-12)


def test_quaternions_match_scipy_including_half_turns() -> None:
    rotations = Rotation.random(200, random_state=3).as_matrix()
    half_turns = Rotation.from_rotvec(np.pi * np.eye(3)).as_matrix()
    matrices = np.concatenate([rotations, half_turns, np.eye(3)[None]])
    ours = rotation_to_quaternion(matrices)
    reference = Rotation.from_matrix(matrices).as_quat()
    same_sign = np.where((ours * reference).sum(1, keepdims=True) < 0, -reference, reference)
    np.testing.assert_allclose(ours, same_sign, atol=1e-9)
    assert (ours[:, 3] >= 0).all()
    poses = np.tile(np.eye(4), (len(matrices), 1, 1))
    poses[:, :3, :3], poses[:, :3, 3] = matrices, np.arange(3 * len(matrices)).reshape(-1, 3)
    translations, from_poses = pose_to_translation_quaternion(poses)
    np.testing.assert_array_equal(translations, poses[:, :3, 3])
    np.testing.assert_array_equal(from_poses, ours)


# ---- voxel map ---------------------------------------------------------------------------------
def test_voxel_accumulator_averages_by_weight_and_keeps_its_grid() -> None:
    voxels = VoxelAccumulator(voxel_size=1.0, max_points=100)
    voxels.add(np.array([[0.2, 0.2, 0.2]]), np.array([[0, 0, 0]], np.uint8), np.array([1.0]))
    voxels.add(np.array([[0.8, 0.8, 0.8], [5.5, 0.5, 0.5]]), np.array([[90, 90, 90], [1, 2, 3]], np.uint8), np.array([2.0, 1.0]))
    points, colors = voxels.points(), voxels.colors()
    assert len(voxels) == 2
    np.testing.assert_allclose(points[0], [0.6, 0.6, 0.6], atol=1e-6)
    np.testing.assert_array_equal(colors, [[60, 60, 60], [1, 2, 3]])
    ref_points, _ = voxel_downsample(np.array([[0.2, 0.2, 0.2], [0.8, 0.8, 0.8]]), np.zeros((2, 3), np.uint8), 1.0)
    np.testing.assert_allclose(ref_points, [[0.5, 0.5, 0.5]], atol=1e-6)


def test_voxel_map_is_capped_at_max_points_and_keeps_coverage() -> None:
    rng = np.random.default_rng(4)
    voxels = VoxelAccumulator(voxel_size=0.01, max_points=2000)
    for _ in range(5):
        plane = np.column_stack([rng.uniform(0, 2, 20000), rng.uniform(0, 1, 20000), np.zeros(20000)])
        voxels.add(plane, rng.integers(0, 255, (20000, 3), dtype=np.uint8))
        assert 0 < len(voxels) <= 2000
    assert voxels.voxel_size > 0.02
    points = voxels.points()
    assert points[:, 0].min() < 0.1 and points[:, 0].max() > 1.9 and points[:, 1].max() > 0.9
    voxels.clear()
    assert len(voxels) == 0 and voxels.voxel_size == 0.01


def test_voxel_snapshots_are_shared_read_only_and_kept_by_later_adds() -> None:
    """points()/colors() hand out the map's own arrays (publishing a 1M-point map copies
    nothing); merging, inserting and coarsening build new ones, so a snapshot never changes."""
    voxels = VoxelAccumulator(voxel_size=1.0, max_points=3)
    voxels.add(np.array([[0.2, 0.2, 0.2], [2.5, 0.5, 0.5]]), np.array([[0, 0, 0], [7, 8, 9]], np.uint8))
    points, colors = voxels.points(), voxels.colors()
    assert voxels.points() is points and voxels.colors() is colors
    with pytest.raises(ValueError, match="read-only"):
        points[0, 0] = 1.0
    kept = points.copy(), colors.copy()
    voxels.add(np.array([[0.8, 0.8, 0.8], [1.5, 0.5, 0.5]]), np.array([[90, 90, 90], [1, 2, 3]], np.uint8), np.array([2.0, 1.0]))
    np.testing.assert_array_equal(points, kept[0])
    np.testing.assert_array_equal(colors, kept[1])
    np.testing.assert_array_equal(voxels.colors(), [[60, 60, 60], [1, 2, 3], [7, 8, 9]])  # kept up to date per merge
    voxels.add(np.array([[4.5, 0.5, 0.5]]), np.array([[200, 100, 50]], np.uint8))  # a 4th voxel: coarsened
    assert len(voxels) <= 3 and voxels.voxel_size > 1.0
    np.testing.assert_array_equal(colors, kept[1])
    assert voxels.colors().dtype == np.uint8 and voxels.points().flags.c_contiguous


def test_confidence_mask_absolute_and_percentile() -> None:
    confidence = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, np.nan, 8.0]], np.float32)
    assert confidence_mask(confidence, min_confidence=4.0).sum() == 4
    assert confidence_mask(confidence, drop_percentile=50).sum() == 4


# ---- exports -----------------------------------------------------------------------------------
def test_tum_round_trip_keeps_nanosecond_stamps(tmp_path) -> None:
    rng = np.random.default_rng(5)
    stamps = [1_700_000_000_123_456_789, 1_700_000_001_000_000_001]
    poses = [sim3_matrix(1.0, random_rotation(rng), rng.normal(size=3)) for _ in stamps]
    path = write_tum(tmp_path / "t.tum", stamps, poses)
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert lines[0].split()[0] == "1700000000.123456789" and len(lines[0].split()) == 8
    read_stamps, read_poses = read_tum(path)
    assert read_stamps == stamps
    np.testing.assert_allclose(np.stack(read_poses), np.stack(poses), atol=1e-7)


# ---- mapper ------------------------------------------------------------------------------------
def run_sequence(mapper: SlidingWindowMapper, sequence) -> None:
    for frame in sequence.frames():
        mapper.add_frame(frame)
    mapper.flush()


def small_config(**chain) -> MapperConfig:
    return MapperConfig(
        keyframe=KeyframeConfig(min_change=0.03),
        window=WindowConfig(size=5, overlap=2),
        chain=ChainConfig(**chain),
        map=MapConfig(voxel_size=0.02, drop_percentile=25.0),  # the synthetic backend gives no masks
    )


def test_map_and_trajectory_export_round_trip(tmp_path, short_sequence) -> None:
    mapper = SlidingWindowMapper(SyntheticWindowBackend(short_sequence), small_config())
    run_sequence(mapper, short_sequence)
    saved = mapper.save(tmp_path / "out", formats=("ply", "pcd", "tum"))
    ply_path, tum_path = saved["ply"], saved["tum"]
    points, colors = read_ply(ply_path)
    pcd_points, pcd_colors = read_pcd(saved["pcd"])  # the same cloud as PCD
    np.testing.assert_array_equal(pcd_points, points)
    np.testing.assert_array_equal(pcd_colors, colors)
    cloud = mapper.map_cloud()
    assert len(points) == len(cloud) > 1000
    np.testing.assert_array_equal(points, cloud.points)
    np.testing.assert_array_equal(colors, cloud.colors)
    import open3d as o3d

    assert len(o3d.io.read_point_cloud(str(ply_path)).points) == len(points)
    stamps, poses = read_tum(tum_path)
    trajectory = mapper.trajectory()
    assert stamps == [kf.stamp_ns for kf in trajectory]
    np.testing.assert_allclose(np.stack(poses), np.stack([kf.pose for kf in trajectory]), atol=1e-6)
    np.testing.assert_allclose(poses[0], np.eye(4), atol=1e-9)  # the first keyframe is the map frame


def test_reset_clears_everything_and_mapping_restarts(short_sequence) -> None:
    mapper = SlidingWindowMapper(SyntheticWindowBackend(short_sequence), small_config())
    frames = list(short_sequence.frames())
    for frame in frames[:20]:
        mapper.add_frame(frame)
    assert len(mapper.map) > 0 and mapper.trajectory() and mapper.latest_window is not None
    mapper.reset()
    stats = mapper.stats
    assert len(mapper.map) == 0 and mapper.trajectory() == [] and mapper.latest_window is None
    assert (stats.frames, stats.keyframes, stats.windows_done, stats.pending) == (0, 0, 0, 0)
    for frame in frames[20:]:
        mapper.add_frame(frame)
    mapper.flush()
    trajectory = mapper.trajectory()
    assert trajectory[0].stamp_ns == frames[20].stamp_ns
    np.testing.assert_allclose(trajectory[0].pose, np.eye(4), atol=1e-9)


def test_metric_model_is_chained_with_unit_scale(short_sequence) -> None:
    backend = SyntheticWindowBackend(short_sequence, metric=True)
    mapper = SlidingWindowMapper(backend, small_config(metric=True))
    run_sequence(mapper, short_sequence)
    assert mapper.stats.windows_done >= 3
    assert mapper.latest_window.scale == pytest.approx(1.0, abs=1e-12)
    stamp_to_index = {int(s): i for i, s in enumerate(short_sequence.stamps_ns)}
    for kf in mapper.trajectory():  # metric and anchored at the first keyframe: poses are exact up to noise
        truth = np.linalg.inv(short_sequence.poses[0]) @ short_sequence.poses[stamp_to_index[kf.stamp_ns]]
        assert np.linalg.norm(kf.pose[:3, 3] - truth[:3, 3]) < 0.01


def test_failed_window_is_counted_and_the_map_stays_connected(short_sequence) -> None:
    backend = SyntheticWindowBackend(short_sequence)
    calls = {"n": 0}

    def flaky(keyframes):
        calls["n"] += 1
        result = backend.reconstruct([kf.image for kf in keyframes])
        if calls["n"] == 2:  # garbage geometry: chaining must refuse it
            rng = np.random.default_rng(0)
            result.point_clouds = [rng.normal(size=p.shape).astype(np.float32) for p in result.point_clouds]
        return result

    errors = []
    mapper = SlidingWindowMapper(flaky, small_config(), on_error=lambda window, error: errors.append(error))
    run_sequence(mapper, short_sequence)
    stats = mapper.stats
    assert stats.windows_failed == 1 and isinstance(errors[0], WindowError) and "inlier" in str(errors[0])
    assert stats.windows_done >= 3
    # Later windows chained to the last good anchor: the whole trajectory is still consistent.
    trajectory = mapper.trajectory()
    stamp_to_index = {int(s): i for i, s in enumerate(short_sequence.stamps_ns)}
    true = short_sequence.poses[[stamp_to_index[kf.stamp_ns] for kf in trajectory], :3, 3]
    error = trajectory_error(np.stack([kf.pose[:3, 3] for kf in trajectory]), true)
    assert error.rmse < 0.005 * short_sequence.path_length()
    assert max(kf.window_index for kf in trajectory) == stats.windows_done + stats.windows_failed - 1


def gated_backend(sequence):
    """A synthetic backend that blocks in each window until `release` is set; `entered` says
    a window is being reconstructed.  Returns (backend, entered, release)."""
    backend = SyntheticWindowBackend(sequence)
    entered, release = threading.Event(), threading.Event()

    def gated(keyframes):
        entered.set()
        release.wait(5.0)
        return backend.reconstruct([kf.image for kf in keyframes])

    return gated, entered, release


THREADED_CONFIG = MapperConfig(keyframe=KeyframeConfig(min_change=0.0), window=WindowConfig(size=4, overlap=1))


def test_threaded_mapper_keeps_memory_bounded_when_inference_is_slow(short_sequence) -> None:
    slow, entered, release = gated_backend(short_sequence)
    placed = []
    frames = list(short_sequence.frames())
    with SlidingWindowMapper(slow, THREADED_CONFIG, threaded=True, on_window=placed.append) as mapper:
        for frame in frames[:4]:
            mapper.add_frame(frame)
        assert entered.wait(5.0)  # the first window is now being reconstructed
        started = time.perf_counter()
        for frame in frames[4:]:
            mapper.add_frame(frame)
        assert time.perf_counter() - started < 2.0  # add_frame never waited for inference
        stats = mapper.stats
        assert stats.keyframes == 40 and stats.pending <= 4 and stats.keyframes_dropped >= 40 - 4 - 4
        release.set()
        assert mapper.flush(timeout=20.0)
        stats = mapper.stats
    assert stats.windows_done == len(placed) >= 2 and stats.pending == 0
    last_stamp = short_sequence.frame(len(short_sequence) - 1).stamp_ns
    assert placed[-1].keyframes[-1].stamp_ns == last_stamp  # the newest keyframe made it
    assert stats.keyframes == stats.keyframes_dropped + len({kf.keyframe_id for w in placed for kf in w.keyframes})


def test_reset_discards_the_window_in_flight(short_sequence) -> None:
    blocking, entered, release = gated_backend(short_sequence)
    placed = []
    with SlidingWindowMapper(blocking, THREADED_CONFIG, threaded=True, on_window=placed.append) as mapper:
        for frame in list(short_sequence.frames())[:4]:
            mapper.add_frame(frame)
        assert entered.wait(5.0)
        mapper.reset()
        release.set()
        assert mapper.flush(timeout=10.0)
        assert placed == [] and len(mapper.map) == 0 and mapper.trajectory() == []
        assert mapper.stats.windows_done == 0


def test_views_rejected_by_the_model_are_left_out(short_sequence) -> None:
    backend = SyntheticWindowBackend(short_sequence)
    rejected = set()

    def rejecting(keyframes):
        """Drop the third view of every window, as robust models do with outlier views."""
        result = backend.reconstruct([kf.image for kf in keyframes])
        keep = [i for i in range(len(keyframes)) if i != 2]
        for name in ("camera_poses", "processed_images", "depth_predictions", "point_clouds", "intrinsics", "confidences"):
            setattr(result, name, [getattr(result, name)[i] for i in keep])
        result.survivor_indices, result.rejected_indices = keep, [2]
        rejected.add(keyframes[2].keyframe_id)
        return result

    placed = []
    mapper = SlidingWindowMapper(rejecting, small_config(), on_window=placed.append)
    run_sequence(mapper, short_sequence)
    assert mapper.stats.windows_failed == 0 and len(placed) >= 3
    assert all(len(w.keyframes) == len(w.poses) == len(w.points) for w in placed)
    trajectory_ids = [kf.keyframe_id for kf in mapper.trajectory()]
    assert rejected and not rejected & set(trajectory_ids)
    assert trajectory_ids == sorted({kf.keyframe_id for w in placed for kf in w.keyframes})
    error = trajectory_error(
        np.stack([kf.pose[:3, 3] for kf in mapper.trajectory()]),
        short_sequence.poses[[list(short_sequence.stamps_ns).index(kf.stamp_ns) for kf in mapper.trajectory()], :3, 3],
    )
    assert error.rmse < 0.005 * short_sequence.path_length()


def test_update_config_applies_to_the_next_windows_and_keeps_the_map(short_sequence) -> None:
    placed = []
    mapper = SlidingWindowMapper(SyntheticWindowBackend(short_sequence), small_config(), on_window=placed.append)
    frames = list(short_sequence.frames())
    for frame in frames[:20]:
        mapper.add_frame(frame)
    points_before, windows_before = len(mapper.map), len(placed)
    assert windows_before >= 2 and all(len(w.keyframes) == 5 for w in placed)
    new = small_config()
    new.window = WindowConfig(size=3, overlap=1)
    new.map = MapConfig(voxel_size=0.02, max_points=points_before + 500)
    mapper.update_config(new)
    for frame in frames[20:]:
        mapper.add_frame(frame)
    mapper.flush()
    later = placed[windows_before:]
    # Each later window starts with the last keyframe of the one before (pairs of consecutive windows).
    pairs = zip(placed[windows_before - 1 : -1], later, strict=True)
    assert later and all(len(w.keyframes) <= 3 and w.keyframes[0].keyframe_id == p.keyframes[-1].keyframe_id for p, w in pairs)
    assert len(mapper.map) <= points_before + 500 and mapper.map.voxel_size > 0.02  # the new cap was applied
    assert len(mapper.trajectory()) > 10  # the map and trajectory were kept


def test_a_failing_window_without_an_error_callback_is_logged(short_sequence, caplog: pytest.LogCaptureFixture) -> None:
    def broken(keyframes):
        raise RuntimeError("model exploded")

    frames = list(short_sequence.frames())
    with caplog.at_level("WARNING", logger="scene_from_views_ros.mapping.mapper"), \
            SlidingWindowMapper(broken, THREADED_CONFIG, threaded=True) as mapper:
        for frame in frames[:4]:
            mapper.add_frame(frame)
        assert mapper.flush(timeout=10)
        assert mapper.stats.windows_failed == 1
    assert any("window 0 (4 keyframes) failed and was skipped" in r.getMessage() and "model exploded" in r.getMessage()
               for r in caplog.records)


def test_the_mapper_does_not_ask_the_model_for_a_fused_cloud(short_sequence) -> None:
    """The mapper uses the per-view outputs only: `reconstruct` is told not to fuse a cloud."""
    backend = SyntheticWindowBackend(short_sequence)
    calls = []

    class Recording:
        def reconstruct(self, images, **kwargs):
            calls.append(kwargs)
            return backend.reconstruct(images, **kwargs)

    mapper = SlidingWindowMapper(Recording(), THREADED_CONFIG, reconstruct_kwargs={"conf_thres": 10.0})
    for frame in list(short_sequence.frames())[:4]:
        mapper.add_frame(frame)
    assert calls == [{"rgb": True, "as_pointcloud": False, "conf_thres": 10.0}]


# ---------------------------------------------------------------- camera rigs
def rig_frame(camera: str, stamp_ms: float, seed: int = 0) -> Frame:
    image = np.random.default_rng(seed).integers(0, 255, (12, 16, 3), dtype=np.uint8)
    return Frame(image, round(stamp_ms * 1e6), camera, frame_id=f"{camera}_optical")


def test_rig_frames_pair_within_the_slop_only() -> None:
    rig = RigSynchronizer(["left", "right"], slop_s=0.005)
    assert rig.add(rig_frame("left", 0.0)) is None  # waits for the right camera
    group = rig.add(rig_frame("right", 4.0))
    assert [(f.camera_id, f.stamp_ns) for f in group] == [("left", 0), ("right", 4_000_000)]
    assert rig.add(rig_frame("left", 100.0)) is None
    assert rig.add(rig_frame("right", 106.0)) is None  # 6 ms apart: more than the slop
    assert rig.add(rig_frame("left", 133.0)) is None  # the right frame of 106 ms is 27 ms away
    group = rig.add(rig_frame("right", 134.0))
    assert [f.stamp_ns for f in group] == [133_000_000, 134_000_000] and [f.frame_id for f in group] == ["left_optical", "right_optical"]
    assert rig.unmatched == 2  # left 100 ms and right 106 ms left without a partner
    wider = RigSynchronizer(["left", "right"], slop_s=0.01)
    wider.add(rig_frame("left", 100.0))
    assert [f.stamp_ns for f in wider.add(rig_frame("right", 106.0))] == [100_000_000, 106_000_000]  # the slop decides
    with pytest.raises(ValueError, match="not in the rig"):
        rig.add(rig_frame("third", 0.0))


def test_a_rig_capture_is_keyframed_and_dropped_whole() -> None:
    selector = KeyframeSelector(KeyframeConfig(min_interval_s=0.05, min_change=0.0))
    group = selector.select_group([rig_frame("left", 0.0), rig_frame("right", 1.0)])
    assert [k.camera_id for k in group] == ["left", "right"] and group[0].rig_group == group[1].rig_group == group[0].keyframe_id
    assert selector.select_group([rig_frame("left", 20.0), rig_frame("right", 21.0)]) is None  # the reference camera decides
    builder = WindowBuilder(WindowConfig(size=4, overlap=2))
    captures = [selector.select_group([rig_frame("left", 100.0 * i), rig_frame("right", 100.0 * i + 1)]) for i in range(1, 5)]
    for capture in captures:
        for keyframe in capture:
            builder.push(keyframe)
    window = builder.take()  # 4 pending captures, room for 2: the oldest two captures dropped whole
    assert [k.keyframe_id for k in window.keyframes] == [k.keyframe_id for capture in captures[2:] for k in capture]
    assert builder.dropped == 4


def test_rig_windows_must_be_multiples_of_the_camera_count() -> None:
    topics = ["/left/image_raw", "/right/image_raw"]
    settings = settings_from_parameters({"image_topics": topics, "rig_slop_s": 0.01, "window.size": 6, "window.overlap": 2})
    assert settings.inputs.rig_slop_s == 0.01
    with pytest.raises(InvalidOptionError, match=r"window.size \(7\) and window.overlap \(2\) must be multiples of 2"):
        settings_from_parameters({"image_topics": topics, "rig_slop_s": 0.01, "window.size": 7})
    settings_from_parameters({"image_topics": topics, "window.size": 7})  # no rig: any size


def test_the_mapper_places_a_rig_as_multi_view_keyframes() -> None:
    sequence = make_sequence(12, 64, 48)
    first_from_second = np.eye(4)
    first_from_second[:3, 3] = [0.25, 0.0, 0.0]
    rig = with_rig_camera(sequence, first_from_second)
    config = MapperConfig(keyframe=KeyframeConfig(min_change=0.0), window=WindowConfig(size=4, overlap=2))
    mapper = SlidingWindowMapper(SyntheticWindowBackend(rig, depth_noise=0.0), config)
    for index in range(len(sequence)):
        mapper.add_frames([Frame(rig.render(index)[0], int(rig.stamps_ns[index]), "left"),
                           Frame(rig.render(len(sequence) + index)[0], int(rig.stamps_ns[index]) + 1, "right")])
    mapper.flush()
    trajectory = mapper.trajectory()
    assert [k.camera_id for k in trajectory] == ["left", "right"] * len(sequence)
    for left, right in zip(trajectory[::2], trajectory[1::2], strict=True):
        relative = np.linalg.inv(left.pose) @ right.pose  # the rig in the map's units (the first window's gauge)
        np.testing.assert_allclose(relative[:3, :3], np.eye(3), atol=1e-6)
        assert relative[0, 3] > 0 and np.allclose(relative[1:3, 3], 0, atol=1e-6)


def test_a_degenerate_predicted_k_falls_back_to_the_cameras_own() -> None:
    """A model whose predicted field of view collapsed (focal = inf, as random weights give):
    the view keeps the camera's K (CameraInfo / --intrinsics) mapped into the processed image
    with the model's scales and offsets; without a known K the model's stays (the node then
    publishes no depth for it)."""
    sequence = make_sequence(6, 64, 48)
    backend = SyntheticWindowBackend(sequence, depth_noise=0.0)
    scales, offsets = np.array([[0.5, 0.5]] * 4), np.array([[2.0, 3.0]] * 4)

    def degenerate(keyframes: list[Keyframe]) -> object:
        result = backend.reconstruct([keyframe.image for keyframe in keyframes])
        result.intrinsics[1] = np.diag([np.inf, 40.0, 1.0])
        result.extras.update(scales=scales[: len(keyframes)], offsets=offsets[: len(keyframes)])
        return result

    known = np.array([[80.0, 0, 32], [0, 80.0, 24], [0, 0, 1]])
    mapper = SlidingWindowMapper(degenerate, MapperConfig(keyframe=KeyframeConfig(min_change=0.0), window=WindowConfig(size=4, overlap=2)))
    for index in range(4):
        mapper.add_frame(Frame(sequence.render(index)[0], int(sequence.stamps_ns[index]), "camera", known if index != 3 else None))
    mapper.flush()
    placed = mapper.latest_window
    np.testing.assert_allclose(placed.intrinsics[1], [[40.0, 0, 18.0], [0, 40.0, 15.0], [0, 0, 1]])  # 0.5 x known + offsets
    np.testing.assert_allclose(placed.intrinsics[0], sequence.intrinsics)  # the model's own where usable
