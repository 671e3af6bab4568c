"""What a run says of itself in words: the summary of its record, and the warnings the
consensus also logs.

The Scipion protocol's summary, the command line's closing summary and the benchmarks print
these lines from a :class:`.RunInfo`, so the words are written once.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

from . import pipeline
from .box_policy import BOX_PER_DIAMETER, CROWDED_BOX_PER_SPACING, crowded_box
from .run_folder import (MODEL_FINE_TUNE, MODEL_NEW, AgreementInfo, ConsensusInfo,
                         EvaluationInfo, ModelInfo, PickerCoverage, RunInfo)


def summary_lines(info: RunInfo) -> List[str]:
    """The run's summary, result first, from its :class:`.RunInfo`."""
    consensus = info.consensus
    if consensus is None:
        return ["Not run yet."]
    lines = ["Consensus of %d pickers on %d micrographs (radius %.1f px): OR %d, "
             "AND (picked by >= %d) %d."
             % (consensus.n_pickers, consensus.n_micrographs, consensus.radius_px,
                consensus.n_or, consensus.min_votes, consensus.n_and)]
    if consensus.ignored_micrograph_entries:
        lines.append("Only micrographs common to all input sets were used; %d "
                     "micrograph entries were left out." % consensus.ignored_micrograph_entries)
    if consensus.coordinates_box is not None:
        lines.append("Worked in boxes of %d px (%s) instead of the coordinates' %d px, which "
                     "the outputs keep." % (consensus.box, box_origin(consensus),
                                            consensus.coordinates_box))
    lines += ["WARNING: " + line
              for line in (nested_lines(consensus) + unconfirmed_lines(consensus)
                           + coverage_lines(consensus.picker_names, consensus.coverage))]
    if crowded_box(consensus):
        lines.append(
            "The AND coordinates lie a median %.0f px from their nearest neighbour, under "
            "%.1f of the %d px box: each box holds whole neighbours, and every distance of "
            "the run (a share of the box) is large for the particles: %s."
            % (consensus.and_spacing_px, 1.0 / CROWDED_BOX_PER_SPACING, consensus.box,
               crowded_advice(consensus)))
    if consensus.other_box_sizes:
        lines.append("The input sets have other box sizes too (%s px); the first set's "
                     "%d px was used." % (", ".join(map(str, consensus.other_box_sizes)),
                                          consensus.output_box))
    if consensus.rescaled_sets:
        lines.append("Rescaled to %.3f A/px: %s." % (consensus.sampling_rate,
                                                     ", ".join(consensus.rescaled_sets)))
    negatives, extracted = info.negatives, info.extraction
    if negatives is not None:
        lines.append("Negatives: %d random, %d off-centre, %d known coordinates, %d known "
                     "particles." % (negatives.n_random, negatives.n_offcentre,
                                     negatives.n_user_coordinates,
                                     extracted.n_user_particles if extracted else 0))
    if extracted is not None and extracted.known_particles_inverted:
        lines.append("The known negative particles came with the opposite contrast of the "
                     "micrographs and were inverted to match.")
    if extracted is not None and extracted.skipped_micrographs:
        lines.append("Skipped %d unreadable micrographs: %s."
                     % (len(extracted.skipped_micrographs),
                        ", ".join(extracted.skipped_micrographs)))
    if extracted is not None and extracted.n_crossing_border:
        lines.append("%d boxes crossed the micrograph border (filled with the mean)."
                     % extracted.n_crossing_border)
    training = info.training
    for trained in (training.rounds if training else []):
        line = ("Network '%s', round %d: %d epochs%s, validation accuracy %.3f"
                % (training.architecture, trained.round, trained.epochs,
                   "" if trained.epoch_size is None else " of %d boxes" % trained.epoch_size,
                   trained.val_accuracy))
        if trained.round > 1:
            line += (" (%d particles, %d hard negatives from the first round)"
                     % (trained.n_positives, trained.n_hard_negatives))
        if trained.centring_search > 0:
            line += ("; each coordinate scored as its best-centred box within %.1f px"
                     % (trained.centring_search * consensus.box))
        lines.append(line + ".")
    if info.ranking is not None and info.ranking.agreement is not None:
        agreement = info.ranking.agreement
        evidence = ("network" if extracted is None or extracted.rotational is None else
                    "network and rotational averages (AND boxes and negatives %.1f deviations "
                    "apart)" % extracted.rotational.separation)
        lines.append("Score = %s combined with picker agreement; sensitivity / "
                     "false-pick rate per input set: %s."
                     % (evidence, ", ".join("%s %.2f / %.2f" % picker for picker in
                                            zip(consensus.picker_names, agreement.sensitivity,
                                                agreement.false_pick_rate))))
        for p in decisive_pickers(agreement):
            lines.append(
                "The agreement follows one input set: %s picked every coordinate it calls a "
                "particle and none it calls junk (sensitivity %.2f, false-pick rate %.2f), so "
                "the retained set follows that set's picks (less duplicates and edge picks) and "
                "the network's score changes few decisions.  It happens with two pickers, "
                "whose votes can explain the OR set without the network."
                % (consensus.picker_names[p], agreement.sensitivity[p],
                   agreement.false_pick_rate[p]))
    if info.model is not None and info.model.use != MODEL_NEW:
        lines.append("Model: %s." % model_origin(info.model))
    split = info.split
    if split is not None:
        total = split.n_retained + split.n_pruned
        result = "Kept {:,} of {:,} coordinates ({:.1f}%) at the {} threshold {:.2f}".format(
            split.n_retained, total, 100.0 * split.n_retained / max(total, 1),
            split.threshold_mode, split.threshold)
        if training is not None and training.last is not None:
            result += ", validation accuracy %.2f" % training.last.val_accuracy
        pruned = "; pruned {:,}".format(split.n_pruned)
        pruned += pruned_reasons(split.n_duplicates, split.min_distance_px, split.n_at_edge,
                                 split.edge_margin_px)
        lines.insert(0, result + pruned + ".")  # the result first
        if info.evaluation is not None:
            lines.append(evaluation_line(info.evaluation))
        if split.n_retained == 0 or split.n_pruned == 0:
            lines.append("WARNING: every score is on one side of the threshold; check "
                         "the training curves and the score histogram.")
    return lines


def evaluation_line(known: EvaluationInfo) -> str:
    """The summary's line on the user's known picks."""
    def figure(value: Optional[float]) -> str:
        return "n/a" if value is None else "%.2f" % value

    counts = []
    for n, unpicked, kind in ((known.n_good, known.n_good_unpicked, "good"),
                              (known.n_bad, known.n_bad_unpicked, "bad")):
        if n:
            counts.append("%d %s" % (n, kind) + (" (%d picked by no picker)" % unpicked
                                                 if unpicked else ""))
    line = ("Known picks, %s: precision %s, recall %s at threshold %.2f; ROC-AUC %s"
            % (" and ".join(counts), figure(known.precision), figure(known.recall),
               known.threshold, figure(known.roc_auc)))
    if known.n_conflicting:
        line += "; %d coordinates matched both a good and a bad pick and were left out" \
                % known.n_conflicting
    return line + "."


def model_origin(model: Optional[ModelInfo]) -> str:
    """Where a run's network came from, in words (for the summary and the viewer)."""
    if model is None or model.use == MODEL_NEW:
        return "trained on this data"
    if model.use == MODEL_FINE_TUNE:
        return "fine-tuned on this data from %s" % model.source
    return "%s, scoring without training" % model.source


def pruned_reasons(n_duplicates: int, min_distance_px: float, n_at_edge: int,
                   edge_margin_px: float) -> str:
    """What a summary says of the pruned coordinates that scored above the threshold."""
    reasons = []
    if n_duplicates:
        reasons.append("{:,} duplicates: closer than {:.0f} px to a better retained one".format(
            n_duplicates, min_distance_px))
    if n_at_edge:
        reasons.append("{:,} at the micrograph edge: closer than {:.0f} px to it".format(
            n_at_edge, edge_margin_px))
    return " (of them %s)" % "; ".join(reasons) if reasons else ""


DECISIVE_RATE = 0.01
"""A picker whose estimated sensitivity is within this of 1 and whose false-pick rate is
within it of 0 decides the agreement alone: EM has found that its picks are the particles."""


def decisive_pickers(agreement: AgreementInfo) -> List[int]:
    """The input sets whose votes alone decide the agreement (:data:`DECISIVE_RATE`).

    EM can reach such a solution when the votes explain the OR set without
    the network (seen with two pickers: particle = what the stronger one
    picked); the user should know that the network then changed little.
    """
    return [p for p, (sensitivity, false_picks) in
            enumerate(zip(agreement.sensitivity, agreement.false_pick_rate))
            if sensitivity >= 1 - DECISIVE_RATE and false_picks <= DECISIVE_RATE]


MIN_CONFIRMATION_PICKS = 50
"""Fewer picks than this say too little of how often a picker is confirmed."""
CONFIRMATION_OVER_CHANCE = 2.0
"""A picker whose best partner agrees with it less than this many times as often as chance
is in another frame (:func:`.pipeline.agreement_shares`)."""


def unconfirmed_lines(consensus: ConsensusInfo) -> List[str]:
    """A warning for each picker of at least :data:`MIN_CONFIRMATION_PICKS` picks that no
    other picker agrees with :data:`CONFIRMATION_OVER_CHANCE` times as often as random
    positions would (:func:`.pipeline.agreement_shares`): its coordinates are almost
    surely in another frame, and the run learns from the other pickers alone."""
    lines = []
    for name, count, confirmed, over_chance in zip(
            consensus.picker_names, consensus.picker_counts, consensus.confirmed_share,
            consensus.agreement_over_chance):
        if (count >= MIN_CONFIRMATION_PICKS and over_chance is not None
                and over_chance < CONFIRMATION_OVER_CHANCE):
            lines.append(
                "The picks of %s agree with no other picker's better than random positions "
                "would (%.0f%% of its %d picks picked by another picker; the best partner "
                "%.1f times as often as chance): coordinates in another frame (picked on "
                "binned micrographs, y flipped, another pixel size) or of other "
                "micrographs?  Check them on a micrograph before using this run."
                % (name, 100 * confirmed, count, over_chance))
    return lines


def coverage_lines(names: Sequence[str], coverages: Sequence[PickerCoverage]) -> List[str]:
    """A warning for each picker (``names``) whose :class:`.PickerCoverage` has picks
    outside their micrographs, or micrographs it left unpicked where another picker
    picked: a stream's batch warns of its own, the run's record of all."""
    lines = []
    for name, coverage in zip(names, coverages):
        if coverage.outside:
            lines.append(
                "%d picks of %s lie outside their micrograph (the first on %s): no particle "
                "image can be cut there.  Coordinates outside the micrograph are in another "
                "frame or pixel size (picked on binned micrographs?) or of other "
                "micrographs: check them on a micrograph."
                % (coverage.outside, name, coverage.outside_micrograph))
        if coverage.unpicked:
            lines.append(
                "%s has no pick on %d micrograph%s that other pickers picked (the first: "
                "%s): there its missing vote counts against every other pick.  If it was "
                "not run on them, run Deep Consensus on the micrographs every picker saw."
                % (name, coverage.unpicked, "" if coverage.unpicked == 1 else "s",
                   coverage.unpicked_micrograph))
    return lines


def nested_warning(pair: pipeline.SharedPicks, names: Sequence[str]) -> str:
    """The warning on a pair of inputs of which one is nearly a subset of the other
    (:func:`.pipeline.shared_picks`), for the log and the summary."""
    small, large = ((pair.first, pair.second) if pair.n_first <= pair.n_second
                    else (pair.second, pair.first))
    return ("%.0f%% of the %d picks of %s are picks of %s at the same positions: one picker "
            "and a subset of its own output (another threshold, or its particles after 2D "
            "classification)?  Consensus counts their agreement as two pickers': each of "
            "those picks, junk included, becomes an AND particle.  Give pickers that pick "
            "independently." % (100 * pair.share, min(pair.n_first, pair.n_second),
                                names[small], names[large]))


def nested_lines(consensus: ConsensusInfo) -> List[str]:
    """:func:`nested_warning` of each nested pair the consensus recorded."""
    return [nested_warning(pipeline.SharedPicks(*row), consensus.picker_names)
            for row in consensus.nested_pickers]


def box_origin(consensus: ConsensusInfo) -> str:
    """Where the run's box came from, where it is not the coordinates' own: the reused
    network's field of view, or :data:`BOX_PER_DIAMETER` times the particle diameter given
    or the AND coordinates' spacing."""
    if consensus.box_from_network:
        return "the reused network's field of view, the one it was trained on"
    if consensus.box_spacing_px is None:
        return "%.1f times the particle diameter given" % BOX_PER_DIAMETER
    return ("%.1f times the AND coordinates' median spacing of %.0f px, as the coordinates' "
            "box exceeded %.0f spacings; give the particle diameter to choose the box"
            % (BOX_PER_DIAMETER, consensus.box_spacing_px, CROWDED_BOX_PER_SPACING))


def crowded_advice(consensus: ConsensusInfo) -> str:
    """What to do about a :func:`crowded_box`: give the particle diameter, or, where the box
    is a reused network's (which a diameter of other boxes cannot reuse), train a new
    network, which fits its box."""
    if consensus.box_from_network:
        return ("the reused network was trained in boxes this large; a new network (no "
                "particle diameter) works in boxes fitted to the particles")
    return ("if the box is much larger than the particle, give the particle diameter (the "
            "run then works in boxes of %.1f diameters; in Scipion the form's wizard "
            "proposes one from this distance)" % BOX_PER_DIAMETER)
