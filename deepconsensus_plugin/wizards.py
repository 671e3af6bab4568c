"""Wizards of the Deep Consensus form.

The consensus radius decides which picks of different pickers are one
particle.  The paper's 0.1 of the box is a guess at how far pickers place
their centres apart; the pickers at hand can be asked instead: picks of two
pickers that are each other's nearest neighbour within a quarter box are
the same particle (neighbouring particles are at least a particle diameter,
typically half a box or more, apart), and their distances show how far
apart these pickers put the same particle.
"""
import math

import numpy as np
from pyworkflow.gui import dialog
from pyworkflow.wizard import Wizard

from . import convert
from .core.consensus import pair_distances
from .core.stages import BOX_PER_DIAMETER
from .protocols import ProtDeepConsensus

SEARCH_FRACTION = 0.25
"""Picks of two pickers farther apart than this fraction of the box are different particles."""
COVERED = 95
"""The proposed radius holds this percentage of the same-particle distances."""
RADIUS_RANGE = (0.05, 0.25)
"""A radius below 0.05 box is lost in rounding; above 0.25 box it merges neighbours."""
PAPER_RADIUS = 0.1
MIN_PAIRS = 20
"""Fewer same-particle pairs say too little: the paper's radius is proposed instead."""


def proposeRadius(pickers, box):
    """Proposed consensus radius (fraction of ``box``) and the distances it rests on.

    ``pickers`` holds, per picker, a dict micrograph name -> (n, 2) picks, all
    in one pixel size.  The proposal covers :data:`COVERED` % of the
    same-particle distances of every pair of pickers, rounded up to 0.01 and
    kept within :data:`RADIUS_RANGE`; with fewer than :data:`MIN_PAIRS` pairs
    it is the paper's 0.1.
    """
    parts = [np.empty(0)]
    for i, first in enumerate(pickers):
        for second in pickers[i + 1:]:
            for name in set(first) & set(second):
                parts.append(pair_distances(first[name], second[name], SEARCH_FRACTION * box))
    distances = np.concatenate(parts)
    if len(distances) < MIN_PAIRS:
        return PAPER_RADIUS, distances
    fraction = math.ceil(100 * np.percentile(distances, COVERED) / box) / 100
    return float(np.clip(fraction, *RADIUS_RANGE)), distances


def describeProposal(fraction, distances, box):
    """The wizard's explanation of its proposal, in pixels and fractions of the box."""
    lines = []
    if len(distances) >= MIN_PAIRS:
        lines.append("Picks of different pickers on the same particle are %.1f px apart "
                     "(median) and %d%% of them within %.1f px (%d pairs)."
                     % (np.median(distances), COVERED, np.percentile(distances, COVERED),
                        len(distances)))
    else:
        lines.append("Only %d picks of different pickers pair up: too few to measure how "
                     "far apart the pickers place a particle; the paper's radius is "
                     "proposed." % len(distances))
    lines.append("Proposed consensus radius: %.2f of the box = %.1f px (the paper's %.2f "
                 "= %.1f px)." % (fraction, fraction * box, PAPER_RADIUS, PAPER_RADIUS * box))
    return "\n".join(lines)


class DeepConsensusRadiusWizard(Wizard):
    """Propose the consensus radius from how far apart the input pickers place a particle."""

    _targets = [(ProtDeepConsensus, ["consensusRadius"])]

    def show(self, form, *params):
        sets = [pointer.get() for pointer in form.protocol.inputCoordinates
                if pointer.get() is not None]
        if len(sets) < 2:
            dialog.showWarning("Consensus radius",
                               "Choose the coordinates of at least two pickers first.",
                               form.root)
            return
        box = form.protocol._workingBox(sets[0])
        if not box:
            dialog.showWarning("Consensus radius", "The first input set has no box size.",
                               form.root)
            return
        fraction, distances = proposeRadius(inputPicks(sets), box)
        boxes = ", ".join("%s px" % s.getBoxSize() for s in sets[1:])
        origin = ("from the first input set (the others: %s)" % boxes
                  if box == sets[0].getBoxSize()
                  else "%.1f times the particle diameter on the form" % BOX_PER_DIAMETER)
        message = ("Box size: %d px, %s; particles are cut with it and the radius is a "
                   "fraction of it.\n\n%s\n\nUse %.2f?"
                   % (box, origin, describeProposal(fraction, distances, box), fraction))
        if dialog.askYesNo("Consensus radius", message, form.root):
            form.setVar("consensusRadius", fraction)


def inputPicks(sets):
    """Per set, micrograph name -> picks, in the first set's pixel size (as the protocol does)."""
    return convert.picksInReferenceFrame(sets, [s.getObjLabel() for s in sets])[0]
