"""The box a run works in, and the lengths that follow it.

Every distance of a run that is a share of the box (consensus radius, negatives, the
network's view, best-centred search, minimum distance, edge margin) follows the box the
run works in, which need not be the coordinates' own: a particle diameter chooses it, a
reused network brings its own, and without either a box far larger than the particles'
spacing is fitted to that spacing.  The outputs always keep the coordinates' box.  The
batch consensus, a stream's first batch, the protocol's form and its wizard all take
these decisions here.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from . import pipeline
from .model_file import ModelSpec
from .pipeline import CoordinateTable
from .run_folder import ConsensusInfo
from .selection import DEFAULT_EDGE_MARGIN, DEFAULT_MIN_DISTANCE

BOX_PER_DIAMETER = 1.5
"""Where the user gives the particle diameter, the run works in a box of this many
diameters instead of the coordinates' own: the particle and a ring of background, as
in the boxes of both development datasets (1.67 and 1.5 diameters).  Extraction
boxes are often 2 diameters or more; on the crowded ribosomes of EMPIAR-10028 such
a box lets the neighbours into the network's view (``benchmarks/README.md``)."""
MIN_BOX = 8
"""The smallest box (px) a run works in."""
CROWDED_BOX_PER_SPACING = 2.0
"""Without a particle diameter, a box over this many times the median spacing of the AND
coordinates (:func:`.pipeline.median_spacing`; particles do not overlap, so it is at least
about a diameter, and about one where they crowd) is too large for the particles: a run
that trains its network works in boxes of :data:`BOX_PER_DIAMETER` spacings instead
(:func:`spacing_box`; a stream measures them on its first batch), and one that cannot (a
reused network) is warned of it.
Both development datasets' own boxes are 1.4 and 1.8 spacings; 2.7 to 3.6 cost
EMPIAR-10017 0.03 to 0.21 F1 and 2.9 cost EMPIAR-10028 0.08 (*Another box* in
``benchmarks/README.md``); 1.9 costs EMPIAR-10028 nothing with the off-centre negatives
(0.06 without them).  A lower threshold would change EMPIAR-10017's own box, where
nothing is lost."""


def spacing_box(box: int, spacing: Optional[float]) -> Optional[int]:
    """The box (px) of :data:`BOX_PER_DIAMETER` AND spacings that a run works in where its
    ``box`` exceeds :data:`CROWDED_BOX_PER_SPACING` of them; None where it does not or the
    spacing is unknown (too few AND coordinates with a neighbour)."""
    if spacing is None or box <= CROWDED_BOX_PER_SPACING * spacing:
        return None
    return max(MIN_BOX, int(round(BOX_PER_DIAMETER * spacing)))


def working_box(box: int, diameter_a: float, sampling_rate: Optional[float]) -> int:
    """The box (px) the run works in: :data:`BOX_PER_DIAMETER` particle diameters where
    the user gives one (``diameter_a`` in Å; 0 or less: not given), else the coordinates'
    own ``box``.  Every distance of the run that is a share of the box (consensus radius,
    negatives, the network's view, best-centred search, minimum distance, edge margin)
    follows it; the outputs keep the coordinates' box."""
    if diameter_a <= 0:
        return int(box)
    if not sampling_rate:
        raise ValueError("a particle diameter in Å needs the micrographs' pixel size")
    return max(MIN_BOX, int(round(BOX_PER_DIAMETER * diameter_a / sampling_rate)))


class RunBoxes(NamedTuple):
    """The boxes of :class:`ConsensusInput`: the one the run works in, the coordinates' where
    that differs (else None), and whether it is the reused network's (the same as the
    coordinates' or not)."""

    box: int
    coordinates_box: Optional[int]
    from_network: bool


def run_boxes(box: int, diameter_a: float, sampling_rate: Optional[float],
              network: Optional[int] = None) -> RunBoxes:
    """The box the run works in: :func:`working_box` where a particle diameter is given,
    else a reused network's box ``network`` (:func:`network_box`; None: a new network, or
    a network whose field cannot be told in this run's pixels), else the coordinates'."""
    if diameter_a > 0 or not network:
        work = working_box(box, diameter_a, sampling_rate)
    else:
        work = int(network)
    return RunBoxes(work, int(box) if work != box else None,
                    diameter_a <= 0 and bool(network))


def network_box(model: ModelSpec, sampling_rate: Optional[float]) -> Optional[int]:
    """The box (px at ``sampling_rate``) that shows a reused network the field of view it
    was trained on, which a run reusing it works in unless given a particle diameter: the
    network was trained in a box of its own run's choosing (the coordinates', a diameter's
    or one fitted to the particles), which the next session's coordinates need not carry.
    None where only one of the two pixel sizes is known."""
    if model.sampling_rate and sampling_rate:
        return max(MIN_BOX, int(round(model.box * model.sampling_rate / sampling_rate)))
    if not model.sampling_rate and not sampling_rate:
        return int(model.box)
    return None


def split_lengths_px(consensus: ConsensusInfo, min_distance_a: float,
                     edge_margin_a: float) -> Tuple[float, float]:
    """The minimum distance and the edge margin (Å; negative: their default share of the
    box) in pixels of the box the run worked in, which the consensus may have fitted to the
    particles (:func:`spacing_box`): what the front ends hand :func:`split_stage`."""
    return (length_px(min_distance_a, DEFAULT_MIN_DISTANCE, consensus.box,
                      consensus.sampling_rate),
            length_px(edge_margin_a, DEFAULT_EDGE_MARGIN, consensus.box,
                      consensus.sampling_rate))


def length_px(length_a: float, default_share: float, box: int,
              sampling_rate: Optional[float]) -> float:
    """A length the user gives in Å, in pixels; a negative value asks for the default,
    ``default_share`` of the box (the minimum distance between retained particles,
    :data:`.selection.DEFAULT_MIN_DISTANCE`, and the edge margin,
    :data:`.selection.DEFAULT_EDGE_MARGIN`)."""
    if length_a < 0:
        return default_share * box
    return length_a / (sampling_rate or 1.0)


def and_spacing(table: CoordinateTable, min_votes: int) -> Optional[float]:
    """The median spacing (:func:`.pipeline.median_spacing`) of the coordinates of a
    consensus ``table`` that at least ``min_votes`` pickers picked: the AND set's."""
    return pipeline.median_spacing(table.subset(np.flatnonzero(table.votes >= min_votes)))


def fitted_consensus(picks: Sequence[Mapping[int, np.ndarray]], box: int, radius: float,
                     min_votes: int,
                     fit: bool) -> Tuple[CoordinateTable, int, Optional[float]]:
    """The consensus table of ``picks`` merged with ``radius`` (a share of the box) in
    ``box``; with ``fit``, where ``box`` is too large for the AND coordinates' spacing,
    merged again in :func:`spacing_box`'s box (the radius is a share of the box).  Returns
    (the table, the box it was merged in, the AND spacing measured in ``box``: None
    without ``fit`` or with too few AND coordinates).  The fit of a batch run's consensus
    and of a stream's first batch."""
    table = pipeline.consensus_table(picks, radius * box)
    if not fit:
        return table, box, None
    spacing = and_spacing(table, min_votes)
    fitted = spacing_box(box, spacing)
    if fitted is None:
        return table, box, spacing
    return pipeline.consensus_table(picks, radius * fitted), fitted, spacing


def agreed_spacing(pickers: Sequence[Mapping[str, np.ndarray]], radius: float,
                   min_votes: int) -> Optional[float]:
    """The AND spacing (:func:`and_spacing`) of picks before a run: ``pickers`` (per picker,
    micrograph name -> (n, 2) picks in one pixel size) merged within ``radius`` on the
    micrographs every picker has, as the consensus merges them; None with too few.  What
    the diameter wizard proposes and the form's checks foresee the fit with
    (:func:`spacing_box`)."""
    names = sorted(set.intersection(*(set(p) for p in pickers)))
    ids = {name: i for i, name in enumerate(names)}
    table = pipeline.consensus_table(
        [{ids[n]: xy for n, xy in p.items() if n in ids} for p in pickers], radius)
    return and_spacing(table, min_votes)


def crowded_box(consensus: ConsensusInfo) -> bool:
    """Whether the run worked in the coordinates' own box or a reused network's (no
    particle diameter given) and that box exceeds :data:`CROWDED_BOX_PER_SPACING` spacings
    of the AND coordinates."""
    return ((consensus.coordinates_box is None or consensus.box_from_network)
            and spacing_box(consensus.box, consensus.and_spacing_px) is not None)
