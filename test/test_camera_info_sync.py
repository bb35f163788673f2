"""An image takes its own CameraInfo: by stamp (exact, then approximate within the slop), else the newest."""
from __future__ import annotations

from scene_from_views_ros.io.camera_info_sync import CameraInfoByStamp

S = 10**9


def test_pairs_by_stamp_then_within_the_slop_then_the_newest() -> None:
    infos = CameraInfoByStamp(history=3)
    assert infos.for_stamp(5 * S, 0.1) is None
    for second in (2, 1, 3):
        infos.add(f"info {second}", second * S)
    assert infos.for_stamp(1 * S, 0.0) == "info 1"  # exact
    assert infos.for_stamp(2 * S + S // 50, 0.05) == "info 2"  # nearest within 50 ms
    assert infos.for_stamp(2 * S + S // 50, 0.0) == "info 3"  # no slop: the newest received
    infos.add("info 4", 4 * S)
    assert infos.for_stamp(2 * S, 0.0) == "info 4"  # the first received left the history of 3: the newest


def test_a_stray_future_stamp_never_pushes_new_calibrations_out() -> None:
    """Trimming is by arrival: after an info stamped far in the future (or a clock that jumped
    back), the new ones are still found by their stamps."""
    infos = CameraInfoByStamp(history=3)
    infos.add("stray", 10**6 * S)
    for second in (1, 2, 3):
        infos.add(f"info {second}", second * S)
    assert infos.for_stamp(2 * S, 0.0) == "info 2" and infos.for_stamp(3 * S, 0.0) == "info 3"
