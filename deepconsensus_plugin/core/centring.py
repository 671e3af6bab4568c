"""Scoring a pick at its best-centred position.

A picker's coordinate is often a few pixels off the particle's centre.  The
network learns from AND coordinates (the mean of several pickers' picks, so
well centred) and, with off-centre negatives, that a box off a particle is not
one; a true particle picked off-centre by one picker then scores lower than
the same particle centred, and is pruned for its offset rather than for what
it is.  Scoring each pick at its coordinate and at a few positions a small
distance around it, and keeping the best score, judges the particle instead.
The distance is small (5% of the box by default) against the off-centre
negatives' 30%, so a box on background beside a particle does not reach it.

The shifted boxes are cut from the micrographs while they are scored
(:class:`ShiftedBoxes`), not stored: a stack per shift would be eight times
the OR stack on disk for a large run.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Collection, Mapping

import numpy as np

from .extraction import blank_padding, extract_particles, pad_for_boxes, read_micrograph
from .pipeline import CoordinateTable
from .stack import STACK_DTYPE

DEFAULT_SEARCH = 0.05
"""How far around each pick the best-centred search looks, as a share of the box."""

DIRECTIONS = 8
"""Positions on the circle of the search distance (with the pick's own: 9 boxes)."""

MICROGRAPHS_KEPT = 4
"""Micrographs held in memory while scoring: one per scoring thread at a part's border."""


def boxes_per_pick(search: float) -> int:
    """Boxes scored per pick: its own, and with a search (``search`` > 0) the
    :data:`DIRECTIONS` around it; what progress and throughput count."""
    return 1 + (DIRECTIONS if search > 0 else 0)


def search_offsets(distance: float, directions: int = DIRECTIONS) -> np.ndarray:
    """(directions, 2) shifts (x, y) in pixels, evenly spaced on a circle of ``distance``."""
    angles = 2.0 * np.pi * np.arange(directions) / directions
    return distance * np.column_stack([np.cos(angles), np.sin(angles)])


class ShiftedBoxes:
    """Every coordinate of ``table`` shifted by every offset, read like a particle stack.

    Row ``i * k + j`` (k offsets) is coordinate i moved by ``offsets[j]``, cut, resized
    and normalised as the OR stack's boxes are, and rounded to the stack's precision, so
    a zero offset gives the OR stack's row to the bit.  Rows on ``skipped`` micrographs
    (unreadable ones, left out at extraction) are zero.  Scoring reads contiguous slices;
    the micrographs they need are read once and a few are kept, so a micrograph is
    normally read once for all its rows.
    """

    def __init__(self, table: CoordinateTable, paths: Mapping[int, str], offsets: np.ndarray,
                 box: int, size: int, invert: bool, skipped: Collection[int] = ()):
        self.table, self.paths = table, paths
        self.offsets = np.asarray(offsets, dtype=np.float64).reshape(-1, 2)
        self.box, self.size, self.invert = box, size, invert
        self.skipped = set(int(m) for m in skipped)
        self.shape = (len(self), size, size)
        self._kept: "OrderedDict[int, np.ndarray]" = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.table) * len(self.offsets)

    def __getitem__(self, key: slice) -> np.ndarray:
        first, last, _ = key.indices(len(self))
        rows = np.arange(first, max(first, last))
        k = len(self.offsets)
        coordinate, shift = rows // k, rows % k
        images = np.zeros((len(rows), self.size, self.size), dtype=STACK_DTYPE)
        mics = self.table.mic[coordinate]
        for mic in np.unique(mics):
            if int(mic) in self.skipped:
                continue
            mine = mics == mic
            centres = self.table.xy[coordinate[mine]] + self.offsets[shift[mine]]
            boxes, _ = extract_particles(self._micrograph(int(mic)), centres, self.box,
                                         self.size, self.invert, margin=self.box)
            images[mine] = boxes
        return images

    def _micrograph(self, mic: int) -> np.ndarray:
        """The micrograph, its padded border blanked, with a box of its mean on every side
        (:func:`.extraction.pad_for_boxes`): the same boxes as cut from the micrograph
        alone, but padded once, where :func:`.extraction.cut_boxes` would pad the whole
        micrograph again for every slice holding a box that crosses its edge."""
        with self._lock:
            if mic in self._kept:
                self._kept.move_to_end(mic)
                return self._kept[mic]
        data = blank_padding(read_micrograph(self.paths[mic]))
        data = pad_for_boxes(data, self.box)
        with self._lock:
            self._kept[mic] = data
            while len(self._kept) > MICROGRAPHS_KEPT:
                self._kept.popitem(last=False)
        return data


def best_of_shifts(centre: np.ndarray, shifted: np.ndarray) -> np.ndarray:
    """Each coordinate's best score: its own box's (``centre``, (n,)) or a shifted one's
    (``shifted``, (n * k,) in :class:`ShiftedBoxes` order)."""
    centre = np.asarray(centre, dtype=np.float64)
    if len(centre) == 0:
        return centre.copy()
    return np.maximum(centre, np.asarray(shifted, dtype=np.float64).reshape(len(centre), -1)
                      .max(axis=1))
