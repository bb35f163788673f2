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
    assert infos.for_stamp(1 * S, 0.0) == "info 4"  # beyond the history of 3: the newest
