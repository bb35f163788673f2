"""Which view pairs a pairwise model (DUSt3R, MASt3R) is run on: the scene graph.

A pairwise model predicts two views at a time, so a reconstruction of N views first decides
which pairs to infer.  The graphs are those of DUSt3R's ``make_pairs``, on view indices:

* ``complete``: every pair, (i, j) for i > j, N (N - 1) / 2 pairs before symmetrisation;
* ``swin``: each view with the next ``winsize`` views (sliding window); ``cyclic`` wraps the
  window around the end of the sequence, an explicit loop closure;
* ``logwin``: each view with the views 2**k away, k < ``winsize`` (both sides, wrapped when
  ``cyclic``);
* ``oneref``: the reference view ``refid`` with every other view;
* ``auto``: ``swin`` when there are more than 8 views (the complete graph grows
  quadratically), else ``complete``.

With ``symmetrize`` the list of pairs is followed by every pair swapped, as the model's
prediction is not symmetric in its two inputs.  The reference's string spellings
(``swin-4``, ``swin-4-noncyclic``, ``logwin-3``, ``oneref-2``) are accepted too.

Differences from the reference, on purpose: ``swin`` and ``logwin`` emit their pairs in
sorted order (the reference iterates a Python set, so only its order differs); a cyclic
``swin`` whose window reaches around to the view itself (winsize >= N) does not pair a view
with itself; an unparsable window size raises instead of silently meaning 3.
"""
from __future__ import annotations

import difflib
from typing import Any

from ..core.errors import InvalidOptionError

SCENE_GRAPHS = ("auto", "complete", "swin", "logwin", "oneref")

#: Above this many views, ``auto`` uses a sliding window instead of the complete graph.
AUTO_COMPLETE_MAX_VIEWS = 8


def parse_scene_graph(name: str) -> tuple[str, dict[str, Any]]:
    """Split a reference spelling such as ``swin-4-noncyclic`` into the graph and its parameters.

    Returns (graph, parameters) where parameters holds only what the name spells out
    (``winsize``, ``cyclic``, ``refid``), so that `make_pairs` can let it override its
    keyword defaults.
    """
    if not isinstance(name, str):
        raise InvalidOptionError(f"scene_graph={name!r} is not allowed: expected a string, one of {', '.join(SCENE_GRAPHS)}")
    graph, *rest = name.strip().lower().split("-")
    if graph not in SCENE_GRAPHS:
        close = difflib.get_close_matches(graph, SCENE_GRAPHS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InvalidOptionError(
            f"unknown scene_graph={name!r}{hint}: expected one of {', '.join(SCENE_GRAPHS)}, optionally spelled "
            "as swin-<winsize>[-noncyclic], logwin-<winsize>[-noncyclic] or oneref-<refid>"
        )
    parameters: dict[str, Any] = {}
    if graph in ("swin", "logwin"):
        if rest and rest[-1] == "noncyclic":
            parameters["cyclic"] = False
            rest = rest[:-1]
        if len(rest) == 1 and rest[0].isdigit():
            parameters["winsize"] = int(rest[0])
            rest = []
        usage = f"{graph}-<winsize>[-noncyclic], e.g. {graph}-4 or {graph}-4-noncyclic"
    elif graph == "oneref":
        if len(rest) == 1 and rest[0].isdigit():
            parameters["refid"] = int(rest[0])
            rest = []
        usage = "oneref-<refid>, e.g. oneref-2"
    else:
        usage = graph
    if rest:
        raise InvalidOptionError(f"scene_graph={name!r} cannot be parsed: expected {usage}")
    return graph, parameters


def make_pairs(
    num_views: int,
    scene_graph: str = "auto",
    winsize: int = 3,
    cyclic: bool = True,
    refid: int = 0,
    symmetrize: bool = True,
) -> list[tuple[int, int]]:
    """The ordered view pairs (i, j) a pairwise model should infer for `num_views` views.

    `scene_graph` is one of `SCENE_GRAPHS` or a reference spelling (``swin-4``); parameters
    spelled in the name win over `winsize`, `cyclic` and `refid`.  The list holds no
    duplicates and no view paired with itself; with `symmetrize` the pairs are followed by
    the same pairs swapped.
    """
    graph, spelled = parse_scene_graph(scene_graph)
    winsize = spelled.get("winsize", winsize)
    cyclic = spelled.get("cyclic", cyclic)
    refid = spelled.get("refid", refid)
    if isinstance(num_views, bool) or not isinstance(num_views, int):
        raise InvalidOptionError(f"num_views={num_views!r} is not allowed: expected an integer >= 2")
    if num_views < 2:
        raise InvalidOptionError(
            f"num_views={num_views} is not allowed: a pairwise model needs at least 2 views; duplicate the image "
            "on purpose if you want a single-view result"
        )
    if graph in ("auto", "swin", "logwin") and (isinstance(winsize, bool) or not isinstance(winsize, int) or winsize < 1):
        raise InvalidOptionError(f"winsize={winsize!r} is not allowed for scene_graph={scene_graph!r}: expected an integer >= 1")
    if graph == "oneref" and (isinstance(refid, bool) or not isinstance(refid, int) or not 0 <= refid < num_views):
        raise InvalidOptionError(
            f"refid={refid!r} is out of range for {num_views} views: expected the index of the reference view, "
            f"an integer in [0, {num_views - 1}]"
        )
    if graph == "auto":
        graph = "swin" if num_views > AUTO_COMPLETE_MAX_VIEWS else "complete"

    if graph == "complete":
        pairs = [(i, j) for i in range(num_views) for j in range(i)]
    elif graph == "oneref":
        pairs = [(refid, j) for j in range(num_views) if j != refid]
    else:
        offsets = range(1, winsize + 1) if graph == "swin" else [2**k for k in range(winsize)]
        if graph == "logwin":
            offsets = [*offsets, *(-offset for offset in offsets)]
        unordered: set[tuple[int, int]] = set()
        for i in range(num_views):
            for offset in offsets:
                j = (i + offset) % num_views if cyclic else i + offset
                if 0 <= j < num_views and j != i:
                    unordered.add((min(i, j), max(i, j)))
        pairs = sorted(unordered)
    if symmetrize:
        pairs += [(j, i) for i, j in pairs]
    return pairs
