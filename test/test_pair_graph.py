"""Scene graphs of pairwise models: exact pair lists worked out by hand, invariants, errors."""
from __future__ import annotations

import pytest

from scene_from_views_ros.core.errors import InvalidOptionError
from scene_from_views_ros.models.pair_graph import SCENE_GRAPHS, make_pairs, parse_scene_graph


def swapped(pairs):
    return [(j, i) for i, j in pairs]


def test_complete_three_views_exact_order():
    assert make_pairs(3, "complete") == [(1, 0), (2, 0), (2, 1), (0, 1), (0, 2), (1, 2)]
    assert make_pairs(3, "complete", symmetrize=False) == [(1, 0), (2, 0), (2, 1)]


def test_swin_two_cyclic_and_noncyclic_on_five_views():
    # each view with the next 2; cyclic wraps 3->0, 4->0, 4->1, which on 5 views is every pair
    cyclic = [(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)]
    noncyclic = [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3), (2, 4), (3, 4)]
    assert make_pairs(5, "swin", winsize=2) == cyclic + swapped(cyclic)
    assert make_pairs(5, "swin", winsize=2, cyclic=False) == noncyclic + swapped(noncyclic)
    assert make_pairs(5, "swin-2") == make_pairs(5, "swin", winsize=2)
    assert make_pairs(5, "swin-2-noncyclic") == make_pairs(5, "swin", winsize=2, cyclic=False)


def test_swin_two_cyclic_on_six_views_closes_the_loop():
    unswapped = [(0, 1), (0, 2), (0, 4), (0, 5), (1, 2), (1, 3), (1, 5), (2, 3), (2, 4), (3, 4), (3, 5), (4, 5)]
    assert make_pairs(6, "swin", winsize=2, symmetrize=False) == unswapped
    noncyclic = make_pairs(6, "swin", winsize=2, cyclic=False, symmetrize=False)
    assert set(unswapped) - set(noncyclic) == {(0, 4), (0, 5), (1, 5)}


def test_logwin():
    # offsets 1, 2, 4 both ways, no wrap: pairs 1, 2 or 4 apart
    expected = [(0, 1), (0, 2), (0, 4), (1, 2), (1, 3), (1, 5), (2, 3), (2, 4), (3, 4), (3, 5), (4, 5)]
    assert make_pairs(6, "logwin", winsize=3, cyclic=False, symmetrize=False) == expected
    assert make_pairs(6, "logwin-3-noncyclic") == expected + swapped(expected)
    # cyclic on 8 views: circular distance 1 (8 pairs), 2 (8 pairs) or 4 (4 pairs)
    cyclic = make_pairs(8, "logwin-3", symmetrize=False)
    assert len(cyclic) == 20
    assert all(min(j - i, 8 - (j - i)) in (1, 2, 4) for i, j in cyclic)


def test_oneref():
    assert make_pairs(4, "oneref", refid=2) == [(2, 0), (2, 1), (2, 3), (0, 2), (1, 2), (3, 2)]
    assert make_pairs(4, "oneref-2") == make_pairs(4, "oneref", refid=2)
    assert make_pairs(3, "oneref", symmetrize=False) == [(0, 1), (0, 2)]


def test_auto_switches_to_a_sliding_window_above_eight_views():
    assert make_pairs(8) == make_pairs(8, "complete")
    assert len(make_pairs(8)) == 56
    nine = make_pairs(9)
    assert nine == make_pairs(9, "swin", winsize=3, cyclic=True)
    assert len(nine) == 2 * 9 * 3
    assert make_pairs(9, "auto", winsize=2, cyclic=False) == make_pairs(9, "swin-2-noncyclic")


def test_spelled_parameters():
    assert parse_scene_graph("swin-4") == ("swin", {"winsize": 4})
    assert parse_scene_graph("swin-4-noncyclic") == ("swin", {"winsize": 4, "cyclic": False})
    assert parse_scene_graph("logwin-3") == ("logwin", {"winsize": 3})
    assert parse_scene_graph("oneref-2") == ("oneref", {"refid": 2})
    assert parse_scene_graph("Complete") == ("complete", {})
    # the name's parameters win over the keyword defaults
    assert make_pairs(7, "swin-1", winsize=3) == make_pairs(7, "swin", winsize=1)


@pytest.mark.parametrize("num_views", range(2, 13))
@pytest.mark.parametrize(
    "graph", ["auto", "complete", "swin", "swin-1", "swin-2-noncyclic", "swin-12", "logwin", "logwin-4-noncyclic", "oneref-1"]
)
def test_invariants(num_views, graph):
    pairs = make_pairs(num_views, graph)
    half = len(pairs) // 2
    assert len(pairs) == len(set(pairs)), "duplicates"
    assert all(i != j for i, j in pairs), "a view paired with itself"
    assert all(0 <= i < num_views and 0 <= j < num_views for i, j in pairs)
    assert pairs[half:] == swapped(pairs[:half]), "symmetrised: unswapped then swapped"
    # every view is reached, so the pairs can be chained into one reconstruction
    assert {v for pair in pairs for v in pair} == set(range(num_views))
    if graph == "complete":
        assert len(pairs) == num_views * (num_views - 1)
    if graph == "swin-12":
        assert set(pairs) == set(make_pairs(num_views, "complete"))


def test_small_graphs_have_no_duplicates():
    assert make_pairs(2, "swin") == [(0, 1), (1, 0)]
    assert make_pairs(2, "logwin-3") == [(0, 1), (1, 0)]
    # a cyclic window reaching around to the view itself pairs it with every other view, once
    upper = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert make_pairs(4, "swin", winsize=10) == upper + swapped(upper)


def test_unknown_graph_lists_the_valid_ones_and_suggests_the_closest():
    with pytest.raises(InvalidOptionError, match=r"did you mean 'swin'\?.*auto, complete, swin, logwin, oneref") as info:
        make_pairs(4, "swim")
    assert isinstance(info.value, ValueError)
    with pytest.raises(InvalidOptionError, match="did you mean 'complete'"):
        make_pairs(4, "compelte")
    with pytest.raises(InvalidOptionError, match="cannot be parsed: expected swin-<winsize>"):
        make_pairs(4, "swin-x")
    with pytest.raises(InvalidOptionError, match="cannot be parsed"):
        make_pairs(4, "complete-3")
    assert set(SCENE_GRAPHS) == {"auto", "complete", "swin", "logwin", "oneref"}


@pytest.mark.parametrize("num_views", [1, 0, -3])
def test_too_few_views(num_views):
    with pytest.raises(InvalidOptionError, match="at least 2 views; duplicate the image on purpose"):
        make_pairs(num_views)


@pytest.mark.parametrize("refid", [4, -1])
def test_refid_out_of_range(refid):
    with pytest.raises(InvalidOptionError, match=r"refid=.* out of range for 4 views.*\[0, 3\]"):
        make_pairs(4, "oneref", refid=refid)
    with pytest.raises(InvalidOptionError, match="out of range"):
        make_pairs(4, f"oneref-{refid}" if refid >= 0 else "oneref-9")


@pytest.mark.parametrize("graph", ["swin", "logwin", "auto"])
def test_winsize_below_one(graph):
    with pytest.raises(InvalidOptionError, match="winsize=0 is not allowed.*integer >= 1"):
        make_pairs(12, graph, winsize=0)
    with pytest.raises(InvalidOptionError, match="winsize=0"):
        make_pairs(5, "swin-0")
