"""The retained / pruned split: a score threshold and no particle twice.

Two pickers that centre the same particle further apart than the consensus
radius leave two OR coordinates on it, and a network that likes the particle
likes both boxes.  Kept together they put the same particle twice into the
particle set: in a refinement it lands in both half-sets and inflates the
FSC.  The rule here is the detector's non-maximum suppression: going down
the ranking, a retained coordinate closer than the minimum distance to a
better-scored retained coordinate on the same micrograph is a duplicate.

A coordinate closer to the micrograph's edge than a particle's radius is a
particle cut by the edge (or the edge itself, which some pickers like): its
image is partly outside the micrograph, useless for a refinement, and
extraction programs drop it (cryoSPARC's extraction leaves such particles
out).  It is pruned as well, marked as at the edge, and suppresses no
neighbour as a duplicate.  The edge is that of the micrograph's data: a padded
border (:class:`MicrographFrame`) counts as outside.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, NamedTuple, Optional, Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.spatial import cKDTree

DEFAULT_MIN_DISTANCE = 0.3
"""Default minimum distance in boxes: about half a particle diameter for the usual box
of 1.5-2 particle diameters.  Two particles are at least a diameter apart, while
off-centre picks of one particle are within half a diameter of each other."""
DEFAULT_EDGE_MARGIN = DEFAULT_MIN_DISTANCE
"""Default edge margin in boxes: about a particle radius (half a diameter), as above; a
particle centred closer than that to the micrograph's edge is cut by it."""


def tiled_plane(mic: np.ndarray, xy: np.ndarray, gap: float) -> np.ndarray:
    """Coordinates of many micrographs moved onto one plane, each micrograph on its own tile.

    Tiles are further apart than ``gap``, so one k-d tree over the plane finds
    exactly the pairs within ``gap`` on the same micrograph: one tree instead
    of thousands of small ones.
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if len(xy) == 0:
        return xy.copy()
    _, tile = np.unique(np.asarray(mic), return_inverse=True)
    stride = float(np.ptp(xy[:, 0])) + 2 * gap + 1.0
    return np.column_stack([xy[:, 0] - xy[:, 0].min() + tile * stride, xy[:, 1]])


def find_duplicates(mic: np.ndarray, xy: np.ndarray, scores: np.ndarray,
                    candidates: np.ndarray, min_distance: float) -> np.ndarray:
    """Mask of the candidates that lie closer than ``min_distance`` to a better kept candidate.

    ``candidates`` is a boolean mask over the rows (the retained coordinates);
    rows outside it are never duplicates and never suppress one.  Candidates
    are visited by decreasing score (ties: lower row first); one is kept
    unless a kept candidate on the same micrograph lies within
    ``min_distance``, so a chain of close picks keeps every other one, as
    non-maximum suppression does.
    """
    candidates = np.asarray(candidates, dtype=bool)
    duplicate = np.zeros(len(candidates), dtype=bool)
    rows = np.flatnonzero(candidates)
    if len(rows) < 2 or min_distance <= 0:
        return duplicate
    plane = tiled_plane(np.asarray(mic)[rows], np.asarray(xy)[rows], min_distance)
    pairs = cKDTree(plane).query_pairs(min_distance, output_type="ndarray")
    if len(pairs) == 0:
        return duplicate
    n = len(rows)
    adjacency = coo_matrix((np.ones(2 * len(pairs), dtype=bool),
                            (np.r_[pairs[:, 0], pairs[:, 1]], np.r_[pairs[:, 1], pairs[:, 0]])),
                           shape=(n, n)).tocsr()
    order = np.lexsort((np.arange(n), -np.asarray(scores, dtype=np.float64)[rows]))
    kept = np.zeros(n, dtype=bool)
    dropped = np.zeros(n, dtype=bool)
    crowded = np.diff(adjacency.indptr) > 0
    for i in order[crowded[order]]:  # isolated candidates are kept as they are
        neighbours = adjacency.indices[adjacency.indptr[i]:adjacency.indptr[i + 1]]
        if kept[neighbours].any():
            dropped[i] = True
        else:
            kept[i] = True
    duplicate[rows[dropped]] = True
    return duplicate


@dataclass(frozen=True)
class Split:
    """Rows of the OR set on each side of the cut.

    ``retained`` and ``pruned`` partition the scored rows (NaN scores, on
    skipped micrographs, are in neither); ``duplicate`` marks the pruned rows
    that scored above the threshold but lie too close to a better retained one;
    ``at_edge`` the pruned rows that scored above the threshold but lie closer
    to the micrograph's edge than the edge margin.
    """

    retained: np.ndarray
    pruned: np.ndarray
    duplicate: np.ndarray
    at_edge: np.ndarray

    @property
    def n_duplicates(self) -> int:
        return int(np.count_nonzero(self.duplicate))

    @property
    def n_at_edge(self) -> int:
        return int(np.count_nonzero(self.at_edge))

    def retained_mask(self) -> np.ndarray:
        mask = np.zeros(len(self.duplicate), dtype=bool)
        mask[self.retained] = True
        return mask


def split_scores(scores: np.ndarray, threshold: float, mic: np.ndarray, xy: np.ndarray,
                 min_distance: float, edge_distance: Optional[np.ndarray] = None,
                 edge_margin: float = 0.0) -> Split:
    """The protocols' rule: retained when the score is at least ``threshold``, the
    coordinate lies at least ``edge_margin`` px from its micrograph's edge
    (``edge_distance`` per row, see :func:`edge_distances`; 0 or None: no limit) and no
    better retained coordinate on the micrograph lies within ``min_distance`` (px; 0: no
    limit)."""
    scores = np.asarray(scores, dtype=np.float64)
    scored = np.isfinite(scores)
    above = scored & (scores >= threshold)
    at_edge = np.zeros(len(scores), dtype=bool)
    if edge_distance is not None and edge_margin > 0:
        at_edge = above & (np.asarray(edge_distance, dtype=np.float64) < edge_margin)
    candidates = above & ~at_edge
    duplicate = find_duplicates(mic, xy, scores, candidates, min_distance)
    retained = candidates & ~duplicate
    return Split(retained=np.flatnonzero(retained), pruned=np.flatnonzero(scored & ~retained),
                 duplicate=duplicate, at_edge=at_edge)


class MicrographFrame(NamedTuple):
    """A micrograph's size and the padded border along each edge.

    Motion correction and format conversion can leave a border that holds no
    data: rows or columns that repeat their inward neighbour (or a constant
    fill) where the frames were shifted.  Pickers pick its stripes, and a box
    reaching into it is not a whole particle image, so the edge rule measures
    from the padding's inner edge.  ``low_y`` counts the padded rows from row
    0 (y = 0 in the picks' frame), ``high_y`` those from the last row, and
    ``low_x``, ``high_x`` the padded columns likewise.
    """

    rows: int
    columns: int
    low_y: int = 0
    high_y: int = 0
    low_x: int = 0
    high_x: int = 0


def edge_distances(mic: np.ndarray, xy: np.ndarray,
                   frames: Mapping[int, Optional[Sequence[int]]]) -> np.ndarray:
    """Each coordinate's distance in px to the nearest edge of its micrograph's data.

    ``frames`` maps micrograph ids to :class:`MicrographFrame` (or a plain
    (rows, columns): no padding); pixel centres run from 0 to columns - 1, so
    a coordinate on the first or last pixel of the data lies half a pixel
    from the edge, and one inside the padding at a negative distance.
    Micrographs of unknown shape (None or missing: an unreadable file) give
    infinity, so no edge rule applies to them.
    """
    mic = np.asarray(mic)
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    distance = np.full(len(mic), np.inf)
    for mic_id in np.unique(mic):
        frame = frames.get(int(mic_id))
        if frame is None:
            continue
        frame = MicrographFrame(*frame)
        rows = np.flatnonzero(mic == mic_id)
        x, y = xy[rows, 0], xy[rows, 1]
        distance[rows] = np.minimum.reduce([
            x + 0.5 - frame.low_x, y + 0.5 - frame.low_y,
            frame.columns - frame.high_x - 0.5 - x, frame.rows - frame.high_y - 0.5 - y])
    return distance


GALLERY_KINDS = ("highest", "lowest", "threshold")
"""The particles a gallery shows: best scored, worst scored, or those nearest the threshold."""


def gallery_rows(scores: np.ndarray, n: int, kind: str, threshold: float) -> np.ndarray:
    """The ``n`` rows a gallery shows, in decreasing score.

    ``kind`` is one of :data:`GALLERY_KINDS`.  Unscored (NaN) rows are never
    shown: they have no place in a ranking.
    """
    if kind not in GALLERY_KINDS:
        raise ValueError(f"gallery kind must be one of {GALLERY_KINDS}, not {kind!r}")
    scores = np.asarray(scores, dtype=np.float64)
    scored = np.flatnonzero(np.isfinite(scores))
    if kind == "highest":
        key = -scores[scored]
    elif kind == "lowest":
        key = scores[scored]
    else:
        key = np.abs(scores[scored] - threshold)
    chosen = scored[np.argsort(key, kind="stable")[:n]]
    return chosen[np.argsort(-scores[chosen], kind="stable")]
