"""Short version of bench/bench_mapping_accuracy.py: the same targets on a 60-frame sequence.

The synthetic backend returns each window's true geometry in a random Sim(3) gauge with 1 %
multiplicative depth noise; the mapper must chain the windows back into one trajectory with
an ATE under 0.5 % of the path length, without drift growth, and a map on the true surface.
"""
from __future__ import annotations

import numpy as np
import pytest

from scene_from_views_ros.mapping import ChainConfig, KeyframeConfig, MapConfig, MapperConfig, SlidingWindowMapper, WindowConfig
from scene_from_views_ros.mapping.synthetic import SyntheticWindowBackend, evaluate_mapper, make_sequence


@pytest.fixture(scope="module")
def sequence():
    return make_sequence(num_frames=60, width=128, height=96)


def config(metric: bool = False) -> MapperConfig:
    return MapperConfig(
        keyframe=KeyframeConfig(min_change=0.03),
        window=WindowConfig(size=5, overlap=2),
        chain=ChainConfig(metric=metric),
        map=MapConfig(voxel_size=0.02, drop_percentile=25.0),  # the synthetic backend gives no masks
    )


@pytest.mark.parametrize(
    "backend_options",
    [dict(depth_noise=0.01), dict(depth_noise=0.01, outlier_fraction=0.1), dict(depth_noise=0.01, metric=True)],
    ids=["noise1%", "noise1%+outliers10%", "metric"],
)
def test_chained_trajectory_and_map_match_the_truth(sequence, backend_options) -> None:
    backend = SyntheticWindowBackend(sequence, seed=3, **backend_options)
    mapper = SlidingWindowMapper(backend, config(backend_options.get("metric", False)))
    accuracy = evaluate_mapper(mapper, sequence)
    assert accuracy.windows_failed == 0 and accuracy.windows_done >= 6
    assert accuracy.keyframes >= 18
    assert accuracy.ate_fraction < 0.005
    assert accuracy.last_third_fraction <= 2 * accuracy.first_third_fraction + 0.001
    assert accuracy.rotation_error_deg < 0.5
    assert accuracy.map.accuracy_median < 0.03  # metres, against the analytic surface
    assert accuracy.map.completeness > 0.95
    assert len(accuracy.chain_ms) == accuracy.windows_done - 1


def test_unchained_windows_would_fail_the_same_check(sequence) -> None:
    """The check can fail: place every window with the identity instead of its Sim(3)."""
    from unittest import mock

    from scene_from_views_ros.geometry.sim3 import Sim3Fit

    def identity(source, target, **_):
        return Sim3Fit(np.eye(4), np.ones(len(source), bool), 0.0, 1.0)

    mapper = SlidingWindowMapper(SyntheticWindowBackend(sequence, seed=3), config())
    with mock.patch("scene_from_views_ros.mapping.chaining.estimate_sim3_robust", identity):
        accuracy = evaluate_mapper(mapper, sequence)
    assert accuracy.ate_fraction > 0.05
