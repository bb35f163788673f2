"""A synthetic mapping sequence with ground truth, and a backend that returns that truth.

`make_sequence` renders a textured room with boxes (numpy ray casting against axis-aligned
boxes, procedural value-noise textures, view-independent shading) along a known camera path:
RGB uint8 frames, true z-depth, true camera-to-world poses and intrinsics.  It serves as the
accuracy benchmark of the mapping core and as the built-in sample sequence of the offline tool.

`SyntheticWindowBackend` stands in for a reconstruction model: for a window of those frames it
returns the true geometry in the window's own gauge (first view's camera frame, scaled by a
random factor, as non-metric models do), with multiplicative depth noise, gross outliers and
optional per-view pose noise.  The evaluation helpers measure trajectory and map error.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ..core.result import PointCloud, SceneFromViewsResult
from ..geometry.sim3 import apply_sim3, sim3_matrix, umeyama
from .chaining import WindowInMap
from .keyframes import Frame
from .mapper import SlidingWindowMapper


@dataclass
class SyntheticScene:
    """A room (seen from inside) containing boxes, all axis-aligned; z is up, metres."""

    room_min: np.ndarray
    room_max: np.ndarray
    box_min: np.ndarray  # (B, 3)
    box_max: np.ndarray  # (B, 3)
    colors: np.ndarray  # (6 + 6B, 2, 3) two base colours per face, floats in [0, 1]

    def surface_distance(self, points: np.ndarray) -> np.ndarray:
        """Unsigned distance of points (..., 3) to the nearest wall, floor, ceiling or box face."""
        lows = np.concatenate([self.room_min[None], self.box_min])
        highs = np.concatenate([self.room_max[None], self.box_max])
        centre, half = (lows + highs) / 2, (highs - lows) / 2
        q = np.abs(points[..., None, :] - centre) - half
        signed = np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(-1), 0)
        return np.abs(signed).min(-1)

    def cast(self, origin: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """First hit along rays origin + t * direction: (t, hit points, face id)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            inverse = 1.0 / directions  # (N, 3)
            # Room from inside: the exit face.
            t_low = (self.room_min - origin) * inverse
            t_high = (self.room_max - origin) * inverse
            t_far = np.maximum(t_low, t_high)
            axis = np.argmin(t_far, axis=1)
            t = t_far[np.arange(len(t_far)), axis]
            face = axis * 2 + (directions[np.arange(len(t_far)), axis] > 0)
            # Boxes from outside: the entry face.
            t_low = (self.box_min[None] - origin) * inverse[:, None]  # (N, B, 3)
            t_high = (self.box_max[None] - origin) * inverse[:, None]
            t_near = np.minimum(t_low, t_high)
            entry = t_near.max(-1)
            exit_ = np.maximum(t_low, t_high).min(-1)
            hit = (entry <= exit_) & (entry > 1e-6)
            entry = np.where(hit, entry, np.inf)
            box = np.argmin(entry, axis=1)
            t_box = entry[np.arange(len(entry)), box]
            closer = t_box < t
            box_axis = np.argmax(t_near[np.arange(len(entry)), box], axis=1)
            box_face = 6 + box * 6 + box_axis * 2 + (directions[np.arange(len(entry)), box_axis] < 0)
        t = np.where(closer, t_box, t)
        face = np.where(closer, box_face, face)
        return t, origin + t[:, None] * directions, face

    def shade(self, points: np.ndarray, face: np.ndarray) -> np.ndarray:
        """Procedural texture: multi-scale value noise blending two colours per face."""
        axis = np.where(face < 6, face // 2, ((face - 6) % 6) // 2)
        u = np.where(axis == 0, points[:, 1], points[:, 0])
        v = np.where(axis == 2, points[:, 1], points[:, 2])
        blend = sum(_value_noise(u / scale, v / scale, face * 7 + octave) / 2**octave for octave, scale in enumerate((0.6, 0.2, 0.06)))
        blend = blend / 1.75
        detail = _value_noise(u / 0.03, v / 0.03, face * 7 + 5)
        colors = self.colors[face]
        rgb = colors[:, 0] * (1 - blend[:, None]) + colors[:, 1] * blend[:, None]
        light = np.array([0.6, 0.25, 0.55, 0.35, 0.8, 0.5])[axis * 2 + (face % 2)]
        return np.clip(rgb * (0.55 + 0.3 * light + 0.3 * detail)[:, None], 0, 1)

    def render(self, camera_to_world: np.ndarray, intrinsics: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 HxWx3 and z-depth float32 HxW of a pinhole camera (OpenCV axes)."""
        rays = camera_rays(intrinsics, width, height).reshape(-1, 3)
        directions = rays @ camera_to_world[:3, :3].T
        t, points, face = self.cast(camera_to_world[:3, 3], directions)
        rgb = self.shade(points, face)
        image = np.round(rgb * 255).astype(np.uint8).reshape(height, width, 3)
        return image, t.astype(np.float32).reshape(height, width)


def _value_noise(u: np.ndarray, v: np.ndarray, seed: np.ndarray | int) -> np.ndarray:
    """Smooth 2D value noise in [0, 1] from hashed lattice values (vectorised)."""
    iu, iv = np.floor(u), np.floor(v)
    fu, fv = u - iu, v - iv
    fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)

    def lattice(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        value = np.sin(a * 12.9898 + b * 78.233 + np.asarray(seed) * 37.719) * 43758.5453
        return value - np.floor(value)

    top = lattice(iu, iv) * (1 - fu) + lattice(iu + 1, iv) * fu
    bottom = lattice(iu, iv + 1) * (1 - fu) + lattice(iu + 1, iv + 1) * fu
    return top * (1 - fv) + bottom * fv


def camera_rays(intrinsics: np.ndarray, width: int, height: int) -> np.ndarray:
    """Per-pixel camera-frame directions (x, y, 1) at pixel centres (integer coordinates), HxWx3."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    k = intrinsics
    return np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], axis=-1)


def look_pose(position: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """Camera-to-world pose at `position` looking along `forward`, world z up, OpenCV axes."""
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, down, forward], axis=1)
    pose[:3, 3] = position
    return pose


def default_scene(seed: int = 0) -> SyntheticScene:
    """An 8 x 6 x 3 m room with six boxes along the walls and one in the middle."""
    rng = np.random.default_rng(seed)
    box_min = np.array([[-0.4, -0.4, 0.0], [2.6, 1.6, 0.0], [-3.6, -2.6, 0.0], [2.8, -2.5, 0.0], [-3.5, 1.5, 0.0], [-0.8, 2.2, 0.0], [0.5, -2.7, 0.0]])
    box_max = np.array([[0.4, 0.4, 0.9], [3.6, 2.6, 1.2], [-2.6, -1.8, 0.7], [3.7, -1.6, 1.6], [-2.8, 2.7, 1.0], [0.6, 2.8, 0.6], [1.5, -2.2, 1.1]])
    colors = rng.uniform(0.15, 1.0, size=(6 + 6 * len(box_min), 2, 3))
    return SyntheticScene(np.array([-4.0, -3.0, 0.0]), np.array([4.0, 3.0, 3.0]), box_min, box_max, colors)


@dataclass
class SyntheticSequence:
    """Frames rendered along a known path, with their truth.  Frames are rendered on demand
    (deterministically) and the last `cache_size` kept; `index_of` recognises any image
    rendered so far by its content hash."""

    scene: SyntheticScene
    poses: np.ndarray  # (N, 4, 4) camera-to-world
    stamps_ns: np.ndarray  # (N,)
    intrinsics: np.ndarray  # 3x3
    width: int
    height: int
    camera_id: str = "synthetic"
    cache_size: int = 64
    _cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=OrderedDict, repr=False)
    _index: dict[bytes, int] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.poses)

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(RGB uint8 image, true depth float32) of frame `index`."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        image, depth = self.scene.render(self.poses[index], self.intrinsics, self.width, self.height)
        self._cache[index] = (image, depth)
        self._index.setdefault(_digest(image), index)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return image, depth

    def frame(self, index: int) -> Frame:
        """Frame `index` as the mapper receives it (intrinsics included)."""
        return Frame(self.render(index)[0], int(self.stamps_ns[index]), self.camera_id, self.intrinsics.copy())

    def frames(self) -> Iterator[Frame]:
        """All frames in order."""
        return (self.frame(index) for index in range(len(self)))

    def index_of(self, image: np.ndarray) -> int:
        """Which rendered frame `image` is (exact pixel content)."""
        try:
            return self._index[_digest(image)]
        except KeyError:
            raise KeyError("image is not a frame rendered by this SyntheticSequence; render it via frame()/render() first") from None

    def path_length(self) -> float:
        """Length of the camera path in metres."""
        return float(np.linalg.norm(np.diff(self.poses[:, :3, 3], axis=0), axis=1).sum())


def _digest(image: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()


def make_sequence(
    num_frames: int = 300,
    width: int = 160,
    height: int = 120,
    fps: float = 30.0,
    loops: float = 1.0,
    seed: int = 0,
) -> SyntheticSequence:
    """Render-on-demand sequence: a camera circling the room on an ellipse at about 1.4 m,
    looking between its direction of travel and the walls, with a gentle yaw and height sway."""
    phase = np.linspace(0.0, 2 * np.pi * loops, num_frames, endpoint=False)
    position = np.stack([2.0 * np.cos(phase), 1.3 * np.sin(phase), 1.4 + 0.15 * np.sin(3 * phase)], axis=1)
    tangent = np.stack([-2.0 * np.sin(phase), 1.3 * np.cos(phase), np.zeros_like(phase)], axis=1)
    heading = np.arctan2(tangent[:, 1], tangent[:, 0]) - np.radians(50) + np.radians(20) * np.sin(2 * phase)
    forward = np.stack([np.cos(heading), np.sin(heading), np.full_like(phase, -0.2)], axis=1)
    poses = np.stack([look_pose(p, f) for p, f in zip(position, forward, strict=True)])
    focal = 0.8 * width
    intrinsics = np.array([[focal, 0.0, (width - 1) / 2], [0.0, focal, (height - 1) / 2], [0.0, 0.0, 1.0]])
    stamps = (np.arange(num_frames) * (1e9 / fps)).astype(np.int64) + 1_700_000_000 * 10**9
    return SyntheticSequence(default_scene(seed), poses, stamps, intrinsics, width, height)


def with_rig_camera(sequence: SyntheticSequence, first_from_second: np.ndarray, stamp_offset_ns: int = 0) -> SyntheticSequence:
    """`sequence` plus a second camera rigidly mounted at `first_from_second` (4x4, the second
    camera in the first's optical frame), stamped `stamp_offset_ns` later: frames 0..N-1 are
    the first camera's, N..2N-1 the second's, so one backend recognises both."""
    poses = np.concatenate([sequence.poses, sequence.poses @ first_from_second])
    stamps = np.concatenate([sequence.stamps_ns, sequence.stamps_ns + stamp_offset_ns])
    return SyntheticSequence(sequence.scene, poses, stamps, sequence.intrinsics, sequence.width, sequence.height)


class SyntheticWindowBackend:
    """A stand-in model returning the true geometry of a window in its own random gauge.

    depth_noise: std of the multiplicative Gaussian depth noise (0.01 = 1 %).
    outlier_fraction: share of pixels whose depth is scaled by a random factor in
        [e^-1, e^1]; their confidence is drawn from [1, 3] against [2, 5] for good pixels,
        so confidence helps but does not separate them.
    pose_noise_deg / pose_noise_m: per-view pose error (rotation std in degrees,
        translation std in metres before the gauge scale); the point maps follow the noisy
        pose, so a window is self-consistent but slightly wrong, like a real model.
    metric: keep scale 1 (the gauge is then SE(3)).
    """

    def __init__(
        self,
        sequence: SyntheticSequence,
        depth_noise: float = 0.01,
        outlier_fraction: float = 0.0,
        pose_noise_deg: float = 0.0,
        pose_noise_m: float = 0.0,
        metric: bool = False,
        seed: int = 0,
    ) -> None:
        self.sequence = sequence
        self.depth_noise = depth_noise
        self.outlier_fraction = outlier_fraction
        self.pose_noise_deg = pose_noise_deg
        self.pose_noise_m = pose_noise_m
        self.metric = metric
        self.rng = np.random.default_rng(seed)
        self.calls = 0

    def _pose_perturbation(self) -> np.ndarray:
        axis = self.rng.normal(size=3)
        angle = np.radians(self.pose_noise_deg) * self.rng.normal()
        axis = axis / np.linalg.norm(axis)
        skew = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        rotation = np.eye(3) + np.sin(angle) * skew + (1 - np.cos(angle)) * skew @ skew
        return sim3_matrix(1.0, rotation, self.rng.normal(scale=self.pose_noise_m, size=3))

    def reconstruct(self, images: list[np.ndarray], rgb: bool = True, **_: object) -> SceneFromViewsResult:
        """Geometry of `images` (frames of the sequence) in the frame of the first, scaled."""
        self.calls += 1
        indices = [self.sequence.index_of(image) for image in images]
        scale = 1.0 if self.metric else float(np.exp(self.rng.uniform(np.log(0.3), np.log(3.0))))
        true_poses = [self.sequence.poses[i] @ (self._pose_perturbation() if n else np.eye(4)) for n, i in enumerate(indices)]
        gauge = sim3_matrix(scale, np.eye(3), np.zeros(3)) @ np.linalg.inv(true_poses[0])
        rays = camera_rays(self.sequence.intrinsics, self.sequence.width, self.sequence.height)
        poses, depths, point_maps, confidences, processed = [], [], [], [], []
        for index, true_pose in zip(indices, true_poses, strict=True):
            image, depth = self.sequence.render(index)
            noisy = depth * (1 + self.depth_noise * self.rng.standard_normal(depth.shape))
            outliers = self.rng.random(depth.shape) < self.outlier_fraction
            noisy = np.where(outliers, depth * np.exp(self.rng.uniform(-1, 1, depth.shape)), noisy)
            confidence = np.where(outliers, self.rng.uniform(1, 3, depth.shape), self.rng.uniform(2, 5, depth.shape))
            pose = gauge @ true_pose
            world = (rays * noisy[..., None]) @ true_pose[:3, :3].T + true_pose[:3, 3]
            point_maps.append(apply_sim3(gauge, world).astype(np.float32))
            camera = np.eye(4)
            camera[:3, :3] = pose[:3, :3] / scale
            camera[:3, 3] = pose[:3, 3]
            poses.append(camera)
            depths.append((noisy * scale).astype(np.float32))
            confidences.append(confidence.astype(np.float32))
            processed.append(image)
        stride = (slice(None, None, 4), slice(None, None, 4))
        cloud = PointCloud(
            np.concatenate([p[stride].reshape(-1, 3) for p in point_maps]),
            np.concatenate([im[stride].reshape(-1, 3) for im in processed]),
        )
        return SceneFromViewsResult(
            global_point_cloud=cloud,
            camera_poses=poses,
            processed_images=processed,
            depth_predictions=depths,
            point_clouds=point_maps,
            intrinsics=[self.sequence.intrinsics.copy() for _ in indices],
            confidences=confidences,
        )


@dataclass
class TrajectoryError:
    """Keyframe position error after a Sim(3) alignment to the truth (metres)."""

    rmse: float
    errors: np.ndarray
    alignment: np.ndarray  # estimated -> true Sim(3)


def trajectory_error(estimated: np.ndarray, true: np.ndarray) -> TrajectoryError:
    """ATE: Sim(3)-align estimated positions (N, 3) to the true ones, then per-point errors."""
    alignment = umeyama(estimated, true, with_scale=True)
    errors = np.linalg.norm(apply_sim3(alignment, estimated) - true, axis=1)
    return TrajectoryError(float(np.sqrt(np.mean(errors**2))), errors, alignment)


def thirds_rmse(errors: np.ndarray) -> tuple[float, float]:
    """RMSE of the first and of the last third of per-keyframe errors (drift growth check)."""
    third = max(1, len(errors) // 3)
    return float(np.sqrt(np.mean(errors[:third] ** 2))), float(np.sqrt(np.mean(errors[-third:] ** 2)))


def drift_error(estimated: np.ndarray, true: np.ndarray) -> float:
    """Accumulated drift: align on the first third of the path only, RMSE over the last third."""
    third = max(3, len(true) // 3)
    alignment = umeyama(estimated[:third], true[:third], with_scale=True)
    errors = np.linalg.norm(apply_sim3(alignment, estimated[-third:]) - true[-third:], axis=1)
    return float(np.sqrt(np.mean(errors**2)))


@dataclass
class MapError:
    """Map quality against the true surface, in metres.

    accuracy_*: distance of map points to the nearest true surface (analytic);
    completeness: share of true surface samples with a map point within `threshold`.
    """

    accuracy_mean: float
    accuracy_median: float
    accuracy_inlier_ratio: float
    completeness: float
    threshold: float


def surface_samples(sequence: SyntheticSequence, indices: list[int], stride: int = 4) -> np.ndarray:
    """True surface points seen by frames `indices` (every `stride`-th pixel), world frame."""
    rays = camera_rays(sequence.intrinsics, sequence.width, sequence.height)[::stride, ::stride]
    points = []
    for index in indices:
        depth = sequence.render(index)[1][::stride, ::stride]
        pose = sequence.poses[index]
        points.append(((rays * depth[..., None]) @ pose[:3, :3].T + pose[:3, 3]).reshape(-1, 3))
    return np.concatenate(points)


def map_error(
    map_points: np.ndarray, alignment: np.ndarray, sequence: SyntheticSequence, seen_by: list[int], threshold: float = 0.05
) -> MapError:
    """Accuracy and completeness of a map (map frame) brought into the true frame by `alignment`."""
    from ..core.imports import import_optional

    o3d = import_optional("open3d", "open3d-cpu", "map completeness")
    aligned = apply_sim3(alignment, np.asarray(map_points, np.float64))
    distance = sequence.scene.surface_distance(aligned)
    truth = surface_samples(sequence, seen_by)
    cloud_truth, cloud_map = o3d.geometry.PointCloud(), o3d.geometry.PointCloud()
    cloud_truth.points = o3d.utility.Vector3dVector(truth)
    cloud_map.points = o3d.utility.Vector3dVector(aligned)
    nearest = np.asarray(cloud_truth.compute_point_cloud_distance(cloud_map))
    return MapError(
        accuracy_mean=float(distance.mean()),
        accuracy_median=float(np.median(distance)),
        accuracy_inlier_ratio=float((distance < threshold).mean()),
        completeness=float((nearest < threshold).mean()),
        threshold=threshold,
    )


@dataclass
class MappingAccuracy:
    """What `evaluate_mapper` measured; lengths in metres, `*_fraction` relative to the path.
    Timings per chained window (the first window needs no fit and is left out)."""

    frames: int
    keyframes: int
    windows_done: int
    windows_failed: int
    path_length: float
    ate_rmse: float
    ate_fraction: float
    rotation_error_deg: float
    first_third_fraction: float
    last_third_fraction: float
    drift_fraction: float
    map_points: int
    map: MapError
    fit_ms: list[float]
    chain_ms: list[float]
    integrate_ms: list[float]


def evaluate_mapper(mapper: SlidingWindowMapper, sequence: SyntheticSequence, map_threshold: float = 0.05) -> MappingAccuracy:
    """Feed every frame of `sequence` to a synchronous `SlidingWindowMapper`, flush, and
    measure its keyframe trajectory and map against the truth."""
    windows: list[WindowInMap] = []
    previous = mapper.on_window
    mapper.on_window = windows.append
    try:
        for frame in sequence.frames():
            mapper.add_frame(frame)
        mapper.flush()
    finally:
        mapper.on_window = previous
    trajectory = mapper.trajectory()
    if len(trajectory) < 3:
        raise ValueError(f"only {len(trajectory)} keyframes were placed; a trajectory error needs at least 3")
    stamp_to_index = {int(stamp): index for index, stamp in enumerate(sequence.stamps_ns)}
    indices = [stamp_to_index[keyframe.stamp_ns] for keyframe in trajectory]
    estimated = np.stack([keyframe.pose for keyframe in trajectory])
    true = sequence.poses[indices]
    error = trajectory_error(estimated[:, :3, 3], true[:, :3, 3])
    rotation = error.alignment[:3, :3] / np.cbrt(np.linalg.det(error.alignment[:3, :3]))
    relative = np.einsum("nji,jk,nkl->nil", true[:, :3, :3], rotation, estimated[:, :3, :3])
    angles = np.degrees(np.arccos(np.clip((np.trace(relative, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    length = sequence.path_length()
    first, last = thirds_rmse(error.errors)
    stats = mapper.stats
    return MappingAccuracy(
        frames=len(sequence),
        keyframes=len(trajectory),
        windows_done=stats.windows_done,
        windows_failed=stats.windows_failed,
        path_length=length,
        ate_rmse=error.rmse,
        ate_fraction=error.rmse / length,
        rotation_error_deg=float(np.sqrt(np.mean(angles**2))),
        first_third_fraction=first / length,
        last_third_fraction=last / length,
        drift_fraction=drift_error(estimated[:, :3, 3], true[:, :3, 3]) / length,
        map_points=len(mapper.map),
        map=map_error(mapper.map_cloud().points, error.alignment, sequence, indices, map_threshold),
        fit_ms=[1e3 * window.timings["fit_s"] for window in windows[1:]],
        chain_ms=[1e3 * window.timings["chain_s"] for window in windows[1:]],
        integrate_ms=[1e3 * window.timings["integrate_s"] for window in windows],
    )
