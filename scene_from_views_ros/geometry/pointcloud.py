"""Point-cloud helpers: confidence masks and a fixed-grid voxel accumulator.

The accumulator keeps one count-weighted mean point and colour per voxel of a grid anchored
at the map origin.  Unlike re-running a voxel downsample (e.g. open3d's, whose grid starts at
each cloud's minimum corner) on the growing map, adding a window never moves or re-averages
the points already there, and the cost of an update is O(new points + map size) memory
moves, with the sort only over the new points.
"""
from __future__ import annotations

import numpy as np

_KEY_BITS = 21
_KEY_OFFSET = 1 << (_KEY_BITS - 1)
_KEY_LIMIT = _KEY_OFFSET - 1


def confidence_mask(
    confidence: np.ndarray, min_confidence: float = 0.0, drop_percentile: float = 0.0
) -> np.ndarray:
    """Pixels to keep: confidence >= `min_confidence` (absolute) and above the
    `drop_percentile`-th percentile (0-100) of this array's finite confidences."""
    confidence = np.asarray(confidence)
    finite = np.isfinite(confidence)
    threshold = min_confidence
    if drop_percentile > 0 and finite.any():
        threshold = max(threshold, float(np.percentile(confidence[finite], drop_percentile)))
    return finite & (confidence >= threshold)


def voxel_keys(points: np.ndarray, voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Pack each point's voxel index into one int64; also return which points are in range."""
    cells = np.floor(points / voxel_size)
    valid = np.all(np.isfinite(cells) & (np.abs(cells) <= _KEY_LIMIT), axis=-1)
    ijk = cells[valid].astype(np.int64) + _KEY_OFFSET
    keys = (ijk[:, 0] << (2 * _KEY_BITS)) | (ijk[:, 1] << _KEY_BITS) | ijk[:, 2]
    return keys, valid


def _reduce_by_key(keys: np.ndarray, values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct key (sorted): weighted means of `values` (N x C) and, as a last column,
    the summed weights; float32 (K x C+1)."""
    unique, inverse = np.unique(keys, return_inverse=True)
    total = np.bincount(inverse, weights=weights, minlength=unique.size)
    sums = [np.bincount(inverse, values[:, k] * weights, unique.size) for k in range(values.shape[1])]
    reduced = np.empty((unique.size, values.shape[1] + 1), dtype=np.float32)
    reduced[:, :-1] = np.stack(sums, axis=1) / np.maximum(total, 1e-30)[:, None]
    reduced[:, -1] = total
    return unique, reduced


def voxel_downsample(
    points: np.ndarray, colors: np.ndarray, voxel_size: float
) -> tuple[np.ndarray, np.ndarray]:
    """One mean point and colour per occupied voxel (float32 points, uint8 colours)."""
    points = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    keys, valid = voxel_keys(points, voxel_size)
    values = np.concatenate([points[valid], np.asarray(colors).reshape(-1, 3)[valid]], axis=1, dtype=np.float64)
    _, reduced = _reduce_by_key(keys, values, np.ones(keys.size))
    return reduced[:, :3], np.clip(np.rint(reduced[:, 3:6]), 0, 255).astype(np.uint8)


class VoxelAccumulator:
    """Count-weighted mean point and colour per voxel, bounded to `max_points` voxels.

    When the bound is exceeded the grid is coarsened (voxel size grows) and the existing
    voxels are merged exactly by their weights, so coverage is kept and detail is lost
    evenly, rather than dropping whole regions.
    """

    def __init__(self, voxel_size: float, max_points: int) -> None:
        if voxel_size <= 0:
            raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
        if max_points < 1:
            raise ValueError(f"max_points must be >= 1, got {max_points}")
        self.initial_voxel_size = float(voxel_size)
        self.max_points = int(max_points)
        self.clear()

    def clear(self) -> None:
        """Forget all points and return to the initial voxel size."""
        self.voxel_size = self.initial_voxel_size
        self._keys = np.empty(0, dtype=np.int64)
        self._data = np.empty((0, 7), dtype=np.float32)  # x y z r g b weight, sorted by key

    def __len__(self) -> int:
        return int(self._keys.size)

    def add(self, points: np.ndarray, colors: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Merge points (Nx3) with colours (Nx3 uint8) and optional positive weights (N)."""
        points = np.asarray(points, dtype=np.float32).reshape(-1, 3)
        weights = np.ones(points.shape[0]) if weights is None else np.asarray(weights, np.float64).reshape(-1)
        keys, valid = voxel_keys(points, self.voxel_size)
        if keys.size == 0:
            return
        values = np.concatenate([points[valid], np.asarray(colors).reshape(-1, 3)[valid]], axis=1, dtype=np.float64)
        self._merge(*_reduce_by_key(keys, values, weights[valid]))
        if len(self) > self.max_points:
            self._coarsen()

    def _merge(self, keys: np.ndarray, data: np.ndarray) -> None:
        position = np.searchsorted(self._keys, keys)
        exists = np.zeros(keys.size, dtype=bool)
        if self._keys.size:
            exists = self._keys[np.minimum(position, self._keys.size - 1)] == keys
        slots = position[exists]
        old, new = self._data[slots], data[exists]
        total = old[:, 6:] + new[:, 6:]
        self._data[slots, :6] = (old[:, :6] * old[:, 6:] + new[:, :6] * new[:, 6:]) / total
        self._data[slots, 6:] = total
        fresh = ~exists
        self._keys = np.insert(self._keys, position[fresh], keys[fresh])
        self._data = np.insert(self._data, position[fresh], data[fresh], axis=0)

    def _coarsen(self) -> None:
        while len(self) > self.max_points:
            # Surface points: the count falls roughly with the square of the voxel size.
            self.voxel_size *= max(1.1, 1.05 * np.sqrt(len(self) / self.max_points))
            keys, valid = voxel_keys(self._data[:, :3], self.voxel_size)
            data = self._data[valid].astype(np.float64)
            self._keys, self._data = _reduce_by_key(keys, data[:, :6], data[:, 6])

    def points(self) -> np.ndarray:
        """Copy of the voxel mean points (Nx3 float32)."""
        return self._data[:, :3].copy()

    def colors(self) -> np.ndarray:
        """Voxel mean colours (Nx3 uint8)."""
        return np.clip(np.rint(self._data[:, 3:6]), 0, 255).astype(np.uint8)
