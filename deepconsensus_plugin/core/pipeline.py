"""The Deep Consensus pipeline over whole datasets, as tables of coordinates.

A dataset is a list of micrographs (index -> file) and, for each picker, the
picks per micrograph.  The stages pass :class:`CoordinateTable` objects,
saved as ``.npz`` between Scipion steps so that a continued run can start
from any of them.  Tables are kept sorted by micrograph so that extraction
reads each micrograph once.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator, Mapping, Optional, Sequence

import numpy as np
from scipy.spatial import cKDTree

from .consensus import consensus
from .negatives import allocate, offcentre_negatives, sample_negatives

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CoordinateTable:
    """Coordinates of many micrographs: ``mic[i]`` is the micrograph index of ``xy[i]``.

    ``voters`` (n, n_pickers) is set for consensus tables and says which
    pickers picked each coordinate.
    """

    mic: np.ndarray
    xy: np.ndarray
    voters: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.mic)

    @property
    def votes(self) -> np.ndarray:
        if self.voters is None:
            return np.ones(len(self), dtype=np.int64)
        return self.voters.sum(axis=1).astype(np.int64)

    def save(self, path: str) -> None:
        arrays = {"mic": self.mic, "xy": self.xy}
        if self.voters is not None:
            arrays["voters"] = self.voters
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: str) -> "CoordinateTable":
        with np.load(path) as data:
            voters = data["voters"] if "voters" in data.files else None
            return cls(mic=data["mic"], xy=data["xy"], voters=voters)

    @classmethod
    def from_picks(cls, picks: Mapping[int, np.ndarray]) -> "CoordinateTable":
        """Table of one picker's (or a user's) picks given per micrograph index."""
        keys = sorted(k for k, xy in picks.items() if len(xy))
        if not keys:
            return cls(mic=np.empty(0, dtype=np.int64), xy=np.empty((0, 2)))
        mic = np.concatenate([np.full(len(picks[k]), k, dtype=np.int64) for k in keys])
        xy = np.concatenate([np.asarray(picks[k], dtype=np.float64).reshape(-1, 2) for k in keys])
        return cls(mic=mic, xy=xy)

    def per_micrograph(self) -> Iterator[tuple[int, np.ndarray]]:
        """(micrograph index, row indices) for every micrograph present, in table order."""
        if len(self) == 0:
            return
        starts = np.flatnonzero(np.r_[True, self.mic[1:] != self.mic[:-1]])
        ends = np.r_[starts[1:], len(self)]
        for start, end in zip(starts, ends):
            yield int(self.mic[start]), np.arange(start, end)

    def subset(self, rows: np.ndarray) -> "CoordinateTable":
        voters = None if self.voters is None else self.voters[rows]
        return CoordinateTable(mic=self.mic[rows], xy=self.xy[rows], voters=voters)


SAME_PICK_PX = 0.5
"""Picks of two pickers closer than this (px) are the same pick: two pickers that find
the same particle place it a few pixels apart, not on the same sub-pixel position."""
MIN_SAME_PICKS = 10
"""Fewer shared picks than this say nothing of how two inputs were made (a tiny test set
can coincide by chance)."""
NESTED_SHARE = 0.9
"""Share of one input's picks found at the other's positions that makes it that other's
subset: between different pickers a few percent coincide at most, even on coarse grids."""


@dataclass(frozen=True)
class SharedPicks:
    """Picks that inputs ``first`` and ``second`` hold at the same positions
    (:data:`SAME_PICK_PX`): ``shared`` of ``first``'s ``n_first`` and ``second``'s
    ``n_second`` picks."""

    first: int
    second: int
    shared: int
    n_first: int
    n_second: int

    @property
    def identical(self) -> bool:
        """One picker given twice: every pick of each is one of the other's."""
        return self.shared == self.n_first == self.n_second

    @property
    def share(self) -> float:
        """The share of the smaller input's picks that the other holds too."""
        return self.shared / max(1, min(self.n_first, self.n_second))

    @property
    def notable(self) -> bool:
        """At least :data:`MIN_SAME_PICKS` picks at the same positions, and the inputs
        identical or one holding :data:`NESTED_SHARE` of the other's."""
        return self.shared >= MIN_SAME_PICKS and (self.identical or self.share >= NESTED_SHARE)

    def row(self) -> list[int]:
        """The pair as the run record and a stream's state keep it (``SharedPicks(*row)``
        reads it back)."""
        return [self.first, self.second, self.shared, self.n_first, self.n_second]

    def plus(self, other: "SharedPicks") -> "SharedPicks":
        """The counts of this pair and ``other`` (the same pair, on other micrographs)."""
        return SharedPicks(self.first, self.second, self.shared + other.shared,
                           self.n_first + other.n_first, self.n_second + other.n_second)


def pick_overlaps(pickers: Sequence[Mapping[int, np.ndarray]]) -> list[SharedPicks]:
    """The picks each pair of inputs holds at the same positions, for every pair (i < j):
    counts that add up over micrographs, so that a stream can keep them batch by batch."""
    return [_shared(pickers[i], pickers[j], i, j)
            for i in range(len(pickers)) for j in range(i + 1, len(pickers))]


def shared_picks(pickers: Sequence[Mapping[int, np.ndarray]]) -> list[SharedPicks]:
    """The pairs of inputs whose overlap is :attr:`SharedPicks.notable`.

    Two different pickers never are.  Identical inputs are one picker given twice (the
    same set selected twice, one file imported twice); a nested pair is one picker's
    output and its subset (the same picker at a stricter threshold, or its particles
    after 2D classification).  Consensus counts such a pair's agreement as if two
    pickers had found each particle: every pick of the subset, junk included, becomes
    an AND particle, and the agreement counts its votes twice.
    """
    return [pair for pair in pick_overlaps(pickers) if pair.notable]


def require_different_pickers(overlaps: Sequence[SharedPicks],
                              names: Sequence[str]) -> list[SharedPicks]:
    """Refuse one picker given twice among ``overlaps`` (:func:`pick_overlaps`), naming
    both inputs; the nested pairs, which a run may go on with, are returned for the
    caller to warn of."""
    pairs = [pair for pair in overlaps if pair.notable]
    same = [p for p in pairs if p.identical]
    if same:
        raise ValueError(
            "%s: one picker given twice? Deep consensus needs the picks of different "
            "pickers; remove one of each pair"
            % "; ".join("the picks of %s and %s are the same %d coordinates"
                        % (names[p.first], names[p.second], p.shared) for p in same))
    return pairs


def _shared(first: Mapping[int, np.ndarray], second: Mapping[int, np.ndarray],
            i: int, j: int) -> SharedPicks:
    """Count the picks of ``first`` and ``second`` at the same positions, micrograph by
    micrograph: the smaller of the two directions' counts, so that a pick is counted
    once however many of the other input's lie on it."""
    shared = n_first = n_second = 0
    for mic in set(first) | set(second):
        a = np.asarray(first.get(mic, ()), dtype=np.float64).reshape(-1, 2)
        b = np.asarray(second.get(mic, ()), dtype=np.float64).reshape(-1, 2)
        n_first += len(a)
        n_second += len(b)
        if len(a) and len(b):
            a_in_b = np.isfinite(cKDTree(b).query(a, distance_upper_bound=SAME_PICK_PX)[0])
            b_in_a = np.isfinite(cKDTree(a).query(b, distance_upper_bound=SAME_PICK_PX)[0])
            shared += int(min(a_in_b.sum(), b_in_a.sum()))
    return SharedPicks(i, j, shared, n_first, n_second)


CONSENSUS_CHUNK_PICKS = 100_000
"""The consensus merges micrographs on one plane (:func:`consensus_table`) this many picks
at a time, or one micrograph that has more.  The plane's k-d trees, pairs and groups take
about 0.2 KB a pick while they work: for 2.2 million picks on 1,000 micrographs
(``scale.py``'s), 420 MiB above the picks on one plane, 84 MiB a chunk at a time (the
26 MiB table they leave included), and 4 to 5 s instead of 7 to 8."""


def consensus_table(pickers: Sequence[Mapping[int, np.ndarray]], radius: float,
                    chunk_picks: int = CONSENSUS_CHUNK_PICKS) -> CoordinateTable:
    """Consensus of several pickers over all micrographs at once.

    ``pickers[p][m]`` holds picker p's (n, 2) coordinates on micrograph m, all
    in one pixel size.  A micrograph missing from a picker counts as picked
    by it with no particles.

    Rather than looping over micrographs (thousands of small k-d trees), each
    micrograph is moved to its own tile of a large plane, tiles further apart
    than the radius, and the consensus runs on the plane a chunk of about
    ``chunk_picks`` picks at a time: no pick can pair across tiles, so the result
    is that of micrograph-by-micrograph matching, rows sorted by micrograph.  Every
    chunk shares the plane's origin and tile spacing, so each coordinate goes through
    the same arithmetic whatever the chunk size, and the table is the same to the bit.
    """
    mics = sorted(set().union(*(p.keys() for p in pickers)))
    tile = {m: i for i, m in enumerate(mics)}
    per_picker = [[(tile[m], np.asarray(xy, dtype=np.float64).reshape(-1, 2))
                   for m, xy in picker.items()] for picker in pickers]
    filled = [xy for picks in per_picker for _, xy in picks if len(xy)]
    if not filled:
        return CoordinateTable(np.empty(0, dtype=np.int64), np.empty((0, 2)),
                               np.empty((0, len(pickers)), dtype=bool))
    origin = np.min([xy.min(axis=0) for xy in filled], axis=0)
    stride = float(max(xy[:, 0].max() for xy in filled) - origin[0]) + 4 * radius + 1.0
    chunk_of = _tile_chunks(per_picker, len(mics), chunk_picks)
    chunks: list[list[list[tuple[int, np.ndarray]]]] = [
        [[] for _ in pickers] for _ in range(int(chunk_of[-1]) + 1)]
    for p, picks in enumerate(per_picker):
        for t, xy in picks:
            chunks[chunk_of[t]][p].append((t, xy))
    tile_parts, xy_parts, voter_parts = [], [], []
    for chunk in chunks:
        shifted = [np.concatenate([np.column_stack([xy[:, 0] - origin[0] + t * stride,
                                                    xy[:, 1] - origin[1]])
                                   for t, xy in picks]) if picks else np.empty((0, 2))
                   for picks in chunk]
        result = consensus(shifted, radius)
        tiles = np.floor(result.xy[:, 0] / stride).astype(np.int64)
        tile_parts.append(tiles)
        xy_parts.append(np.column_stack([result.xy[:, 0] - tiles * stride + origin[0],
                                         result.xy[:, 1] + origin[1]]))
        voter_parts.append(result.voters)
    tiles = np.concatenate(tile_parts)
    xy, voters = np.concatenate(xy_parts), np.concatenate(voter_parts)
    order = np.argsort(tiles, kind="stable")
    return CoordinateTable(mic=np.asarray(mics, dtype=np.int64)[tiles[order]], xy=xy[order],
                           voters=voters[order])


def _tile_chunks(per_picker: Sequence[Sequence[tuple[int, np.ndarray]]], n_tiles: int,
                 chunk_picks: int) -> np.ndarray:
    """The chunk of each tile: consecutive tiles, a new chunk wherever the picks would
    pass ``chunk_picks`` (a tile with more is a chunk of its own)."""
    counts = np.zeros(n_tiles, dtype=np.int64)
    for picks in per_picker:
        for t, xy in picks:
            counts[t] += len(xy)
    chunk_of = np.empty(n_tiles, dtype=np.int64)
    chunk, held = 0, 0
    for t, count in enumerate(counts.tolist()):
        if held and held + count > chunk_picks:
            chunk, held = chunk + 1, 0
        chunk_of[t] = chunk
        held += count
    return chunk_of


def median_spacing(table: CoordinateTable, min_neighbours: int = 10) -> Optional[float]:
    """The median distance from each coordinate of ``table`` to its nearest neighbour on
    the same micrograph; None when fewer than ``min_neighbours`` coordinates have one.

    Particles do not overlap, so in a crowded field this is about one particle diameter
    (0.9 to 1.05 on both development datasets, whatever box they were picked in) and
    larger in a sparse one: a box several times this spacing shows the network whole
    neighbours, which is what the summary warns of."""
    nearest = []
    for _, rows in table.per_micrograph():
        if len(rows) > 1:
            points = table.xy[rows]
            nearest.append(cKDTree(points).query(points, k=2)[0][:, 1])
    distances = np.concatenate(nearest) if nearest else np.empty(0)
    return float(np.median(distances)) if len(distances) >= min_neighbours else None


def agreement_shares(table: CoordinateTable,
                     radius: float) -> tuple[list[float], list[Optional[float]]]:
    """Per picker of a consensus ``table``: the share of its picks that another picker
    picked too, and how many times more often than chance its best-agreeing partner
    picked them (None: no partner picked on its micrographs).

    The chance that picker q picks near one of p's picks is, on each micrograph, the
    area q's consensus coordinates cover with discs of the consensus ``radius`` over the
    area the micrograph's coordinates span, averaged over p's picks.  A picker whose
    coordinates are in another frame (picked on binned micrographs, y flipped, another
    pixel size) or belong to other micrographs agrees with every other picker at about
    that rate: 0.8 to 1.3 times chance for each of the development datasets' pickers with
    its coordinates divided by 4, where the real pickers agree with their best partner 9
    to 25 times as often as chance (7 to 17 times when the other picker is the one moved).
    The best partner, not all others at once, so that a good picker whose usual partner
    is the one in another frame is not taken for it.
    """
    voters = table.voters
    n_pickers = voters.shape[1]
    picked = np.maximum(voters.sum(axis=0), 1)
    confirmed = (voters & (voters.sum(axis=1) >= 2)[:, None]).sum(axis=0) / picked
    together = voters.T.astype(np.int64) @ voters.astype(np.int64)
    chance = np.zeros((n_pickers, n_pickers))
    disc = np.pi * radius ** 2
    for _, rows in table.per_micrograph():
        counts = voters[rows].sum(axis=0)
        area = max(float(np.prod(np.ptp(table.xy[rows], axis=0) + 2 * radius)), disc)
        chance += np.outer(counts, np.minimum(1.0, counts * disc / area))
    best: list[Optional[float]] = []
    for p in range(n_pickers):
        ratios = [together[p, q] / chance[p, q] for q in range(n_pickers)
                  if q != p and chance[p, q] > 0]
        best.append(max(ratios) if ratios else None)
    return confirmed.tolist(), best


def negatives_table(avoid: CoordinateTable, shapes: Mapping[int, tuple[int, int]], box: int,
                    total: int, min_distance: float, seed: int) -> CoordinateTable:
    """``total`` random negative centres spread evenly over the micrographs in ``shapes``.

    Each lies wholly inside its micrograph and at least ``min_distance`` from
    every coordinate of ``avoid`` on the same micrograph.  Negatives keep a
    quarter box from each other: enough to avoid repeating a patch, little
    enough that crowded micrographs still hold their share.  Micrographs whose
    share cannot be met pass the rest to the others.
    """
    spacing = box / 4.0
    rng = np.random.default_rng(seed)
    mics = sorted(shapes)
    rows_of = dict(avoid.per_micrograph())
    wanted = allocate(total, len(mics))
    picked: dict[int, np.ndarray] = {}
    shortfall = 0
    full: set[int] = set()
    for m, count in zip(mics, wanted):
        avoid_xy = avoid.xy[rows_of[m]] if m in rows_of else np.empty((0, 2))
        picked[m] = sample_negatives(shapes[m], box, avoid_xy, int(count) + shortfall,
                                     min_distance, rng, spacing=spacing)
        shortfall = int(count) + shortfall - len(picked[m])
        if shortfall > 0:
            full.add(m)
    # What the last (crowded) micrographs could not take goes back to the earlier ones.
    for m in mics:
        if shortfall <= 0:
            break
        if m in full:
            continue
        avoid_xy = avoid.xy[rows_of[m]] if m in rows_of else np.empty((0, 2))
        extra = sample_negatives(shapes[m], box, avoid_xy, shortfall, min_distance, rng,
                                 spacing=spacing, existing=picked[m])
        picked[m] = np.vstack([picked[m], extra])
        shortfall -= len(extra)
    if shortfall:
        logger.warning("%d of %d negatives could not be placed: the micrographs are crowded",
                       shortfall, total)
    return CoordinateTable.from_picks(picked)


def merge_tables(*tables: CoordinateTable) -> CoordinateTable:
    """One table of the coordinates of several, sorted by micrograph (one read each when
    extracting); voters are dropped (they belong to consensus tables only)."""
    mic = np.concatenate([t.mic for t in tables]) if tables else np.empty(0, dtype=np.int64)
    xy = np.concatenate([t.xy for t in tables]) if tables else np.empty((0, 2))
    order = np.argsort(mic, kind="stable")
    return CoordinateTable(mic=mic[order].astype(np.int64), xy=xy[order].reshape(-1, 2))


def offcentre_table(positives: CoordinateTable, avoid: CoordinateTable,
                    shapes: Mapping[int, tuple[int, int]], shift: float, clearance: float,
                    seed: int) -> CoordinateTable:
    """Off-centre negatives (:func:`.negatives.offcentre_negatives`) around every positive.

    Only micrographs in ``shapes`` (readable ones) get them.  Each lies ``shift`` px from
    its positive and at least ``clearance`` px from every coordinate of ``avoid``.
    """
    rng = np.random.default_rng(seed)
    rows_of = dict(avoid.per_micrograph())
    picked = {}
    for m, rows in positives.per_micrograph():
        if m in shapes:
            near = avoid.xy[rows_of[m]] if m in rows_of else np.empty((0, 2))
            picked[m] = offcentre_negatives(positives.xy[rows], near, shapes[m], shift,
                                            clearance, rng)
    return CoordinateTable.from_picks(picked)


def self_training_rows(posterior: np.ndarray, positive: np.ndarray, usable: np.ndarray,
                       confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the OR set that a second round trains on: (positives, hard negatives).

    After a first round, the combined score of every OR coordinate says what
    it most likely is.  Coordinates it is confident about (posterior at
    least ``confidence``, or at most ``1 - confidence``) become training
    examples: confident particles join the AND set, and confident junk (what
    the pickers wrongly picked: the kind of box random background never
    shows) becomes negatives.  Unusable rows (skipped micrographs) are left out.
    """
    posterior = np.asarray(posterior, dtype=np.float64)
    finite = usable & np.isfinite(posterior)
    chosen = finite & (positive | (posterior >= confidence))
    hard = finite & ~positive & (posterior <= 1.0 - confidence)
    return np.flatnonzero(chosen), np.flatnonzero(hard)


def extraction_jobs(table: CoordinateTable,
                    paths: Mapping[int, str]) -> Iterator[tuple[str, np.ndarray]]:
    """(micrograph file, centres) for :func:`extraction.extract_to_stack`, in table order."""
    for m, rows in table.per_micrograph():
        yield paths[m], table.xy[rows]
