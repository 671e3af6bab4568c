"""Wizards of the Deep Consensus form.

The consensus radius decides which picks of different pickers are one
particle.  The paper's 0.1 of the box is a guess at how far pickers place
their centres apart; the pickers at hand can be asked instead: picks of two
pickers that are each other's nearest neighbour within a quarter box are
the same particle (neighbouring particles are at least a particle diameter,
typically half a box or more, apart), and their distances show how far
apart these pickers put the same particle.

The particle diameter sets the box the run works in where the pickers' box
is much larger than the particle.  Particles do not overlap, so the picks
the pickers agree on lie at least about a diameter apart, and where they
crowd the median distance to the nearest one is about a diameter: an upper
bound the wizard proposes where the box exceeds two of them.  A run that
trains its network then works in boxes of 1.5 such distances by itself (a
streaming run measures them on its first batch); a run that reuses a network
works in the boxes the network was trained in.
"""
import math
from typing import Optional

import numpy as np
from pyworkflow.gui import dialog
from pyworkflow.wizard import Wizard

from . import convert
from .core.consensus import pair_distances
from .core.box_policy import BOX_PER_DIAMETER, CROWDED_BOX_PER_SPACING, spacing_box
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
        sets = pickerSets(form, "Consensus radius")
        if sets is None:
            return
        boxes = form.protocol._boxes(sets[0])
        box = boxes.box
        if not box:
            dialog.showWarning("Consensus radius", "The first input set has no box size.",
                               form.root)
            return
        fraction, distances = proposeRadius(convert.inputPicks(sets), box)
        others = ", ".join("%s px" % s.getBoxSize() for s in sets[1:])
        origin = ("from the first input set (the others: %s)" % others
                  if boxes.coordinates_box is None else
                  "the reused network's field of view" if boxes.from_network else
                  "%.1f times the particle diameter on the form" % BOX_PER_DIAMETER)
        message = ("Box size: %d px, %s; particles are cut with it and the radius is a "
                   "fraction of it.\n\n%s\n\nUse %.2f?"
                   % (box, origin, describeProposal(fraction, distances, box), fraction))
        if dialog.askYesNo("Consensus radius", message, form.root):
            form.setVar("consensusRadius", fraction)


def pickerSets(form, title):
    """The form's input coordinate sets, or None after telling the user (in a dialog named
    ``title``) that a wizard needs at least two."""
    sets = [pointer.get() for pointer in form.protocol.inputCoordinates
            if pointer.get() is not None]
    if len(sets) < 2:
        dialog.showWarning(title, "Choose the coordinates of at least two pickers first.",
                           form.root)
        return None
    return sets


def proposeDiameter(spacing: Optional[float], box: int) -> Optional[float]:
    """The diameter (px) to propose: the agreed picks' ``spacing`` where the coordinates'
    ``box`` exceeds :data:`.box_policy.CROWDED_BOX_PER_SPACING` spacings, as the run's summary
    warns (the spacing is at least about a diameter, so a box of
    :data:`.box_policy.BOX_PER_DIAMETER` spacings still holds the particle and some
    background); None where it does not (both development datasets' own boxes, 1.4 and
    1.8 spacings, lose nothing) or the spacing is unknown."""
    return None if spacing_box(box, spacing) is None else float(spacing)


def describeDiameter(spacing: Optional[float], box: int, sampling: float) -> str:
    """The diameter wizard's explanation, in pixels and Å."""
    if spacing is None:
        return ("Too few agreed picks have a neighbour on their micrograph to measure how "
                "far apart particles lie; give the particle's diameter if you know it.")
    lines = ["The picks the pickers agree on (the AND set) lie a median %.0f px (%.0f Å) "
             "from their nearest neighbour.  Particles do not overlap, so where they crowd "
             "this is about one diameter (0.92 and 1.04 of it on the two development "
             "datasets) and elsewhere more." % (spacing, spacing * sampling)]
    if proposeDiameter(spacing, box) is None:
        lines.append("The coordinates' box, %d px, is no larger than %.0f such spacings "
                     "(%.0f px), where nothing was lost on the development datasets: leave "
                     "the diameter at 0 and the run works in that box, unless you know the "
                     "particle's diameter." % (box, CROWDED_BOX_PER_SPACING,
                                               CROWDED_BOX_PER_SPACING * spacing))
    else:
        lines.append("Proposed particle diameter: %.0f Å; the run then works in boxes of "
                     "%d px instead of the coordinates' %d px (the outputs keep theirs), "
                     "as a run that trains its network does by itself when the diameter is "
                     "left at 0.  If you know the particle's diameter, give that instead."
                     % (spacing * sampling, spacing_box(box, spacing), box))
    return "\n\n".join(lines)


REUSED_NETWORK_BOX = ("This run reuses a network: without a particle diameter it works in "
                      "the boxes the network was trained in, %d px here (the coordinates' "
                      "box is %d px, which the outputs keep).  Set the diameter to 0; a "
                      "diameter whose boxes differ from the network's is refused.")


class DeepConsensusDiameterWizard(Wizard):
    """Propose the particle diameter from how far apart the agreed picks lie."""

    _targets = [(ProtDeepConsensus, ["particleDiameter"])]

    def show(self, form, *params):
        protocol = form.protocol
        sets = pickerSets(form, "Particle diameter")
        if sets is None:
            return
        box, sampling = sets[0].getBoxSize(), convert.samplingRate(sets[0])
        if not box or not sampling:
            dialog.showWarning("Particle diameter", "The first input set has no box size "
                               "or no pixel size.", form.root)
            return
        reused = protocol._reusedNetworkBox(sets[0])
        if reused:
            dialog.showInfo("Particle diameter", REUSED_NETWORK_BOX % (reused, box), form.root)
            return
        spacing = protocol._agreedSpacing(sets)
        message = describeDiameter(spacing, box, sampling)
        diameter = proposeDiameter(spacing, box)
        if diameter is None:
            dialog.showInfo("Particle diameter", message, form.root)
        elif dialog.askYesNo("Particle diameter",
                             message + "\n\nUse %.0f Å?" % (diameter * sampling), form.root):
            form.setVar("particleDiameter", round(diameter * sampling))
