"""Consensus of several pickers' coordinates on one micrograph.

Deep Consensus trains on the coordinates that several independent pickers
agree on (the AND set) and scores everything any picker found (the OR set).
Two picks "agree" when they lie within a radius of each other, by default 10%
of the box: close enough to be the same particle, far enough apart for two
neighbouring particles to stay distinct.

Candidate pairs come from a k-d tree and are joined closest first, so matching
is one-to-one (a picker votes at most once for a consensus coordinate, and two
particles of one picker never fuse into one) and independent of the order in
which the pickers are given.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree


@dataclass(frozen=True)
class Consensus:
    """Consensus coordinates of one micrograph.

    ``xy`` holds the mean position of the picks merged into each consensus
    coordinate, ``voters[i, p]`` says whether picker ``p`` picked coordinate
    ``i`` and ``votes`` is the row sum of ``voters``.
    """

    xy: np.ndarray
    voters: np.ndarray

    @property
    def votes(self) -> np.ndarray:
        return self.voters.sum(axis=1).astype(np.int64)

    def __len__(self) -> int:
        return len(self.xy)

    def and_mask(self, min_votes: int) -> np.ndarray:
        """Coordinates picked by at least ``min_votes`` pickers."""
        return self.votes >= min_votes


def merge_duplicates(xy: np.ndarray, radius: float) -> np.ndarray:
    """Merge picks of one picker that lie within ``radius`` of each other.

    A picker that reports the same particle twice would otherwise vote twice
    and create spurious consensus coordinates; clusters of such picks (chains
    included) are replaced by their mean.
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if len(xy) < 2 or radius <= 0:
        return xy.copy()
    pairs = _tree(xy).query_pairs(radius, output_type="ndarray")
    if len(pairs) == 0:
        return xy.copy()
    n_groups, labels = _components(pairs, len(xy))
    return _group_means(xy, labels, n_groups)


def _tree(xy: np.ndarray) -> cKDTree:
    """A k-d tree built for one round of queries: unbalanced builds are faster and
    query as fast on picks, which are spread evenly."""
    return cKDTree(xy, balanced_tree=False, compact_nodes=False)


def _components(pairs: np.ndarray, n: int) -> tuple[int, np.ndarray]:
    """The connected components of ``n`` points linked by ``pairs``: their number and
    each point's component."""
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)


def _group_means(xy: np.ndarray, labels: np.ndarray, n_groups: int) -> np.ndarray:
    """The mean position of each group of points; every group 0..n_groups-1 has one."""
    counts = np.bincount(labels, minlength=n_groups).astype(np.float64)
    means = np.empty((n_groups, 2))
    for k in (0, 1):
        means[:, k] = np.bincount(labels, weights=xy[:, k], minlength=n_groups) / counts
    return means


def mutual_nearest_pairs(centres: np.ndarray, picks: np.ndarray,
                         radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (centre index, pick index) that are each other's nearest neighbour within
    ``radius``."""
    if len(centres) == 0 or len(picks) == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    dist_p, near_c = _tree(centres).query(picks, distance_upper_bound=radius, workers=-1)
    dist_c, near_p = _tree(picks).query(centres, distance_upper_bound=radius, workers=-1)
    pick_idx = np.flatnonzero(np.isfinite(dist_p))
    centre_idx = near_c[pick_idx]
    mutual = near_p[centre_idx] == pick_idx
    return centre_idx[mutual], pick_idx[mutual]


def consensus(picks: Sequence[np.ndarray], radius: float) -> Consensus:
    """Merge the picks of several pickers on one micrograph.

    Each picker is first cleaned of its own duplicates.  Then picks of
    different pickers are joined closest pair first: a pair closer than
    ``radius`` joins the two groups it belongs to when their mean positions
    are closer than ``radius`` too and no picker would vote twice.  Each group
    is one consensus coordinate at the mean of its picks.  A pick thus agrees
    with a group when it lies within the radius of the group's mean, as in
    Xmipp's running means.

    Unlike there, nothing depends on the order in which the pickers are given
    (ties in distance are broken by the picks' coordinates, and the rows come
    sorted by position): a user who lists the input sets in another order on
    the form gets the same particles, voters' columns permuted accordingly.
    Merging the pickers one after the other, as Xmipp does, moved a few
    coordinates where picks crowd when the order changed.
    """
    n_pickers = len(picks)
    cleaned = [merge_duplicates(raw, radius) for raw in picks]
    xy = np.vstack([np.empty((0, 2))] + cleaned)
    owner = np.repeat(np.arange(n_pickers), [len(c) for c in cleaned]).astype(np.int64)
    group = _join_closest_first(xy, owner, radius)
    n_groups = int(group.max()) + 1 if len(group) else 0
    centres = _group_means(xy, group, n_groups)
    voters = np.zeros((n_groups, n_pickers), dtype=bool)
    voters[group, owner] = True
    order = np.lexsort((centres[:, 1], centres[:, 0]))
    return Consensus(xy=centres[order], voters=voters[order])


def _join_closest_first(xy: np.ndarray, owner: np.ndarray, radius: float) -> np.ndarray:
    """Group number of each pick: picks of different pickers joined closest pair first.

    Pairs in different connected components of the pair graph never meet, so
    each component is settled on its own.  Most hold one, two or three picks
    and are settled at once: a lone pick or pair is a group as it is; of
    three, the closest pair joins and the third joins it when it is another
    picker's and lies within the radius of the pair's mean.  Only larger
    components go through the pair-by-pair loop.
    """
    n = len(xy)
    if n < 2 or radius <= 0:
        return np.arange(n)
    pairs, distance = _candidate_pairs(xy, owner, radius)
    n_components, component = _components(pairs, n)
    size = np.bincount(component, minlength=n_components)
    group = component.copy()

    in_three = size[component[pairs[:, 0]]] == 3
    if in_three.any():
        three_pairs = pairs[in_three]
        which = component[three_pairs[:, 0]]
        rank = np.empty(len(three_pairs), dtype=np.int64)
        rank[_closest_first(xy, three_pairs, distance[in_three])] = np.arange(len(rank))
        by_rank = np.lexsort((rank, which))
        first = by_rank[np.unique(which[by_rank], return_index=True)[1]]
        closest = three_pairs[first]                      # one row per component, sorted
        picks = np.flatnonzero(size[component] == 3)
        picks = picks[np.argsort(component[picks], kind="stable")].reshape(-1, 3)
        third = picks[(picks != closest[:, :1]) & (picks != closest[:, 1:])]
        centre = (xy[closest[:, 0]] + xy[closest[:, 1]]) / 2
        joins = ((owner[third] != owner[closest[:, 0]]) & (owner[third] != owner[closest[:, 1]])
                 & (((xy[third] - centre) ** 2).sum(axis=1) < radius * radius))
        group[third[~joins]] = n_components + third[~joins]

    in_crowd = np.flatnonzero(size[component] > 3)
    if len(in_crowd):
        local = np.full(n, -1)
        local[in_crowd] = np.arange(len(in_crowd))
        keep = size[component[pairs[:, 0]]] > 3
        roots = _greedy_groups(xy[in_crowd], owner[in_crowd], local[pairs[keep]],
                               distance[keep], radius)
        group[in_crowd] = n_components + in_crowd[roots]
    return np.unique(group, return_inverse=True)[1]


def _candidate_pairs(xy: np.ndarray, owner: np.ndarray,
                     radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of picks of different pickers closer than ``radius``, and their distances."""
    pairs = _tree(xy).query_pairs(radius, output_type="ndarray").reshape(-1, 2)
    pairs = pairs[owner[pairs[:, 0]] != owner[pairs[:, 1]]]
    distance = np.hypot(*(xy[pairs[:, 0]] - xy[pairs[:, 1]]).T)
    inside = distance < radius
    return pairs[inside], distance[inside]


def _closest_first(xy: np.ndarray, pairs: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """The order in which ``pairs`` are joined: by distance, ties broken by the pairs' ends'
    coordinates (each pair's ends in coordinate order), never by which picker came first."""
    first_x, first_y = xy[pairs[:, 0], 0], xy[pairs[:, 0], 1]
    second_x, second_y = xy[pairs[:, 1], 0], xy[pairs[:, 1], 1]
    swap = (second_x < first_x) | ((second_x == first_x) & (second_y < first_y))
    lo_x, lo_y = np.where(swap, second_x, first_x), np.where(swap, second_y, first_y)
    hi_x, hi_y = np.where(swap, first_x, second_x), np.where(swap, first_y, second_y)
    return np.lexsort((hi_y, hi_x, lo_y, lo_x, distance))


def _greedy_groups(xy: np.ndarray, owner: np.ndarray, pairs: np.ndarray,
                   distance: np.ndarray, radius: float) -> np.ndarray:
    """Join ``pairs`` of picks closest first when their groups' means are closer than
    ``radius`` and no picker would vote twice; the group (a representative pick) of each
    pick.  A plain Python loop on Python floats: each step looks at two small groups."""
    mean = [tuple(p) for p in xy.tolist()]
    members = [[i] for i in range(len(xy))]
    pickers = [1 << int(p) for p in owner]
    root = list(range(len(xy)))
    radius_sq = radius * radius
    first, second = pairs[:, 0].tolist(), pairs[:, 1].tolist()
    for k in _closest_first(xy, pairs, distance).tolist():
        a, b = root[first[k]], root[second[k]]
        if a == b or pickers[a] & pickers[b]:
            continue
        (ax, ay), (bx, by) = mean[a], mean[b]
        if (ax - bx) ** 2 + (ay - by) ** 2 >= radius_sq:
            continue
        for i in members[b]:
            root[i] = a
        na, nb = len(members[a]), len(members[b])
        mean[a] = ((na * ax + nb * bx) / (na + nb), (na * ay + nb * by) / (na + nb))
        members[a] += members[b]
        pickers[a] |= pickers[b]
    return np.asarray(root)


def pair_distances(first: np.ndarray, second: np.ndarray, max_distance: float) -> np.ndarray:
    """Distances between picks of two pickers that are mutual nearest neighbours closer
    than ``max_distance``: the same particle, as the two pickers placed it."""
    first = np.asarray(first, dtype=np.float64).reshape(-1, 2)
    second = np.asarray(second, dtype=np.float64).reshape(-1, 2)
    i, j = mutual_nearest_pairs(first, second, max_distance)
    return np.hypot(*(first[i] - second[j]).T)


def rescale(xy: np.ndarray, from_sampling: float, to_sampling: float) -> np.ndarray:
    """Bring coordinates picked at one pixel size to another (A/px)."""
    return np.asarray(xy, dtype=np.float64) * (from_sampling / to_sampling)
