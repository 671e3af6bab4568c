"""Consensus of several pickers' coordinates on one micrograph.

Deep Consensus trains on the coordinates that several independent pickers
agree on (the AND set) and scores everything any picker found (the OR set).
Two picks "agree" when they lie within a radius of each other, by default 10%
of the box: close enough to be the same particle, far enough apart for two
neighbouring particles to stay distinct.

Matching is done with k-d trees and mutual nearest neighbours, so it is
O(n log n) per micrograph and one-to-one: a picker can vote at most once for a
consensus coordinate, and two particles of one picker never fuse into one.
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
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])),
                       shape=(len(xy), len(xy)))
    n_groups, labels = connected_components(graph, directed=False)
    counts = np.bincount(labels, minlength=n_groups).astype(np.float64)
    merged = np.empty((n_groups, 2))
    merged[:, 0] = np.bincount(labels, weights=xy[:, 0], minlength=n_groups) / counts
    merged[:, 1] = np.bincount(labels, weights=xy[:, 1], minlength=n_groups) / counts
    return merged


def _tree(xy: np.ndarray) -> cKDTree:
    """A k-d tree built for one round of queries: unbalanced builds are faster and
    query as fast on picks, which are spread evenly."""
    return cKDTree(xy, balanced_tree=False, compact_nodes=False)


def mutual_nearest_pairs(centres: np.ndarray, picks: np.ndarray,
                          radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (centre index, pick index) that are each other's nearest neighbour within ``radius``."""
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

    Pickers are merged one after the other into a growing list of consensus
    centres (running means).  Each round pairs centres and picks that are
    mutual nearest neighbours within ``radius``; the rounds repeat on what is
    left unpaired until nothing pairs, and the remaining picks start new
    centres.  Each picker is first cleaned of its own duplicates.
    """
    n_pickers = len(picks)
    sums = np.empty((0, 2))
    counts = np.empty(0)
    voters = np.empty((0, n_pickers), dtype=bool)
    for p, raw in enumerate(picks):
        xy = merge_duplicates(raw, radius)
        free_centres = np.arange(len(sums))
        free_picks = np.arange(len(xy))
        while len(free_centres) and len(free_picks):
            centres = sums[free_centres] / counts[free_centres, None]
            ci, pi = mutual_nearest_pairs(centres, xy[free_picks], radius)
            if len(ci) == 0:
                break
            matched_c, matched_p = free_centres[ci], free_picks[pi]
            sums[matched_c] += xy[matched_p]
            counts[matched_c] += 1
            voters[matched_c, p] = True
            free_centres = np.setdiff1d(free_centres, matched_c, assume_unique=True)
            free_picks = np.setdiff1d(free_picks, matched_p, assume_unique=True)
        new_voters = np.zeros((len(free_picks), n_pickers), dtype=bool)
        new_voters[:, p] = True
        sums = np.vstack([sums, xy[free_picks]])
        counts = np.concatenate([counts, np.ones(len(free_picks))])
        voters = np.vstack([voters, new_voters])
    return Consensus(xy=sums / np.maximum(counts, 1)[:, None], voters=voters)


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
