"""The Deep Consensus pipeline, written once: one function per stage on a run folder.

Scipion's steps (``ProtDeepConsensus``), the ``deepconsensus`` command and the
benchmarks all call these functions, in this order::

    consensus_stage -> negatives_stage -> extraction_stage -> model_stage
        -> (training_stage -> scoring_stage) per round -> ranking_stage -> split_stage

(``model_stage`` may reuse an earlier run's model: fine-tuned by the training
rounds, or scoring alone with no training round.)  A large run may extract and score
in shards, one job each, merged into the same files (:mod:`.shards`).

Each stage reads what the previous ones left in the :class:`.RunFolder`,
writes its own files and its section of the run record (:class:`.RunInfo`),
and returns that section.  The front ends only gather the inputs (Scipion
sets, or files on disk) into the plain records below and present the results.

The method's policy lives here too (how many negatives, where off-centre
negatives go, which decisions a second round learns from, how a round's seed
follows the run's; :mod:`.training` says how the learning rate follows the
patience), so that no front end holds a copy of it.  Which box a run works in is
:mod:`.box_policy`'s decision, and what a run says of itself in words
:mod:`.run_summary`'s.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import centring, evaluation, extraction, pipeline, radial
from .agreement import dawid_skene, score_logit
from .box_policy import (BOX_PER_DIAMETER, CROWDED_BOX_PER_SPACING, and_spacing, crowded_box,
                         fitted_consensus)
from .model import DEFAULT_SIZE
from .model_file import (ModelFileError, ModelSpec, compatibility_errors, read_spec,
                         same_extent, write_spec)
from .pick_inputs import Optics
from .pick_outputs import (CoordinateStarFiles, ScoredPicks, write_coordinate_stars,
                           write_particle_star, write_picks_csv)
from .pipeline import CoordinateTable
from .run_folder import (MODEL_FINE_TUNE, MODEL_NEW, MODEL_SCORE_ONLY, MODEL_USES,
                         AgreementInfo, ConsensusInfo, EvaluationInfo, ExportInfo,
                         ExtractionInfo, KnownParticles, Micrograph, ModelInfo, NegativesInfo,
                         PickerCoverage, RankingInfo, RoundInfo, RunFolder, RotationalInfo,
                         RunFolderError, SplitInfo, TrainingInfo)
from .selection import Split, split_scores
from .run_summary import (coverage_lines, crowded_advice, model_origin, nested_lines,
                          unconfirmed_lines)
from .stack import create_stack, open_stack
from .thresholds import automatic_threshold
from .training import TrainingConfig

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------ policy

MIN_POSITIVES = 100
"""Fewer AND particles than this cannot train a classifier that generalises."""
OFFCENTRE_SHIFT = 0.3
"""Off-centre negatives lie this fraction of the box from a positive: about half a
particle diameter for the usual box, so the box shows the particle's edge."""
OFFCENTRE_CLEARANCE = 0.2
"""...and at least this fraction of the box from every pick, so they centre on no particle."""
SELF_TRAINING_CONFIDENCE = 0.9
"""The second round learns from OR coordinates whose first-round combined score is at
least this (particles) or at most one minus this (what the pickers picked by mistake)."""
ROUND_SEED_STEP = 7
"""Round r trains with seed + 7 (r - 1): a new split and initialisation, reproducibly."""
USER_PARTICLE_CHUNK = 5000
"""Known-negative particle images are read this many at a time."""

METHOD_AGREEMENT = "agreement"
"""Network and picker agreement: off-centre negatives, a second round, each pick scored at
its best-centred box, votes combined."""
METHOD_PUBLISHED = "published"
"""As published (Sanchez-Garcia et al. 2018): random negatives, one round, network alone."""
METHODS = (METHOD_AGREEMENT, METHOD_PUBLISHED)

AND_ALL = "all"
AND_AT_LEAST = "at-least"
AND_MAJORITY = "majority"
AND_RULES = (AND_ALL, AND_AT_LEAST, AND_MAJORITY)


def min_votes_for(and_rule: str, n_pickers: int, k: int = 2) -> int:
    """The votes an AND (positive) coordinate needs under ``and_rule``."""
    if and_rule == AND_ALL:
        return n_pickers
    if and_rule == AND_MAJORITY:
        return n_pickers // 2 + 1
    if and_rule == AND_AT_LEAST:
        return k
    raise ValueError("unknown AND rule %r (one of %s)" % (and_rule, ", ".join(AND_RULES)))


@dataclass(frozen=True)
class MethodOptions:
    """What the chosen method switches on; the published method switches all five off."""

    offcentre_negatives: bool = True
    self_training: bool = True
    combine_votes: bool = True
    best_centred: bool = True
    rotational_average: bool = True

    @classmethod
    def for_method(cls, method: str, offcentre_negatives: bool = True,
                   self_training: bool = True, combine_votes: bool = True,
                   best_centred: bool = True,
                   rotational_average: bool = True) -> "MethodOptions":
        if method not in METHODS:
            raise ValueError("unknown method %r (one of %s)" % (method, ", ".join(METHODS)))
        agreement = method == METHOD_AGREEMENT
        return cls(agreement and offcentre_negatives, agreement and self_training,
                   agreement and combine_votes, agreement and best_centred,
                   agreement and rotational_average)

    @property
    def rounds(self) -> int:
        return 2 if self.self_training else 1

    @property
    def centring_search(self) -> float:
        """How far around each pick the final scoring looks for its best-centred box, as
        a share of the box (0: the pick's own box only; :mod:`.centring`)."""
        return centring.DEFAULT_SEARCH if self.best_centred else 0.0


# ------------------------------------------------------------------ inputs and parameters

ProgressFactory = Callable[[str, int, str], object]
"""``factory(description, total, unit)`` returns a bar with ``update(n)`` and ``close()``
(``tqdm`` fits); the stages use one for extraction, training and scoring when given."""


@dataclass(frozen=True)
class PickerInput:
    """One picker's picks: micrograph id -> (n, 2) centres in the run's micrograph pixels."""

    name: str
    picks: Mapping[int, np.ndarray]


@dataclass(frozen=True)
class ConsensusInput:
    """What the front end gathered: micrographs, pickers in one pixel size, the box, and
    notes for the summary (entries left out, other box sizes, rescaled sets)."""

    micrographs: Sequence[Micrograph]
    pickers: Sequence[PickerInput]
    box: int
    """The box the run works in (:func:`.box_policy.working_box`)."""
    sampling_rate: Optional[float]
    ignored_micrograph_entries: int = 0
    other_box_sizes: Sequence[int] = ()
    rescaled_sets: Sequence[str] = ()
    coordinates_box: Optional[int] = None
    """The input coordinates' box where the run works in another (a particle diameter
    was given, or a reused network's box); the outputs keep it.  None: ``box`` is the
    coordinates' own."""
    box_from_network: bool = False
    """``box`` is the reused network's (:func:`.box_policy.network_box`), whether or not
    it is also the coordinates'."""
    fit_box: bool = False
    """Work in boxes of :func:`.box_policy.spacing_box` where ``box`` (the coordinates'
    own) is too large for the AND coordinates' spacing.  The front ends ask for it when no
    particle diameter is given and the run trains its network: a reused network keeps the
    box it was trained in."""


@dataclass(frozen=True)
class ConsensusParams:
    radius: float = 0.1
    """Picks closer than this fraction of the box are one particle."""
    and_rule: str = AND_MAJORITY
    k: int = 2
    """The votes of the 'at-least' rule."""


@dataclass(frozen=True)
class NegativeParams:
    ratio: float = 1.0
    """Random negatives per AND particle."""
    distance: float = 0.5
    """Random negatives keep this fraction of the box from every pick."""
    offcentre: bool = True
    """One negative off each AND particle's centre (:func:`.negatives.offcentre_negatives`)."""
    seed: int = 0
    skip_bad_micrographs: bool = False


@dataclass(frozen=True)
class ExtractionParams:
    network_size: int = DEFAULT_SIZE
    invert: bool = False
    skip_bad_micrographs: bool = False
    rotational_average: bool = True
    """Fit the rotational-average discriminant on the extracted boxes (:mod:`.radial`),
    whose evidence the agreement adds to the network's."""


def field_in_pixels(box: int, sampling_rate: Optional[float],
                    image_sampling: Optional[float]) -> Optional[float]:
    """The run's box (``box`` px at ``sampling_rate`` Å/px) in pixels of ``image_sampling``;
    None where either pixel size is unknown."""
    if not sampling_rate or not image_sampling:
        return None
    return box * sampling_rate / image_sampling


@dataclass(frozen=True)
class TrainingParams:
    architecture: str = "fast"
    max_epochs: int = 30
    patience: int = 4
    learning_rate: float = 1e-4
    batch_size: int = 64
    seed: int = 0
    rounds: int = 2
    epoch_particles: int = TrainingConfig.epoch_particles
    """At most this many boxes of each class an epoch (0: all; :class:`.TrainingConfig`)."""

    def config(self, round_number: int) -> TrainingConfig:
        """The :class:`.training.TrainingConfig` of one round (the policy above; the
        learning rate's patience is the training module's rule)."""
        return TrainingConfig(architecture=self.architecture, max_epochs=self.max_epochs,
                              patience=self.patience, learning_rate=self.learning_rate,
                              batch_size=self.batch_size,
                              seed=self.seed + ROUND_SEED_STEP * (round_number - 1),
                              epoch_particles=self.epoch_particles)


def _bar(progress: Optional[ProgressFactory], description: str, total: int, unit: str):
    return progress(description, total, unit) if progress is not None else None


def _close(bar) -> None:
    if bar is not None:
        bar.close()


def _update(bar) -> Optional[Callable[[int], None]]:
    return bar.update if bar is not None else None


# ------------------------------------------------------------------ stages

def consensus_stage(run: RunFolder, inputs: ConsensusInput,
                    params: ConsensusParams = ConsensusParams()) -> ConsensusInfo:
    """Merge the pickers into the OR table (``consensus.npz``) with each coordinate's voters,
    and record the micrographs (``micrographs.json``).  Where the input asks for the fit
    and its box is too large for the AND coordinates' spacing, merge again in the box of
    :func:`.box_policy.spacing_box`, the box every later stage then works in."""
    start = time.perf_counter()
    n_pickers = len(inputs.pickers)
    if n_pickers < 2:
        raise ValueError("Deep consensus needs the picks of at least two pickers; %d given"
                         % n_pickers)
    min_votes = min_votes_for(params.and_rule, n_pickers, params.k)
    if not 1 <= min_votes <= n_pickers:
        raise ValueError("k must be between 1 and the number of pickers (%d), got %d"
                         % (n_pickers, min_votes))
    names = [p.name for p in inputs.pickers]
    picks = [p.picks for p in inputs.pickers]
    nested = pipeline.require_different_pickers(pipeline.pick_overlaps(picks), names)
    box, coordinates_box, box_spacing = int(inputs.box), inputs.coordinates_box, None
    table, fitted, spacing = fitted_consensus(picks, box, params.radius, min_votes,
                                              inputs.fit_box and coordinates_box is None)
    if fitted != box:
        box_spacing, coordinates_box, box = spacing, box, fitted
        logger.info("The AND coordinates lie a median %.0f px apart, under %.1f of the %d px "
                    "box: the run works in boxes of %d px (%.1f times that), the outputs keep "
                    "%d px", box_spacing, 1.0 / CROWDED_BOX_PER_SPACING, coordinates_box, box,
                    BOX_PER_DIAMETER, coordinates_box)
    radius_px = params.radius * box
    counts = table_counts(table, n_pickers, min_votes, radius_px)
    coverage = picker_coverage(inputs.micrographs, picks)
    run.write_table(run.CONSENSUS, table)
    run.write_micrographs(list(inputs.micrographs))
    info = ConsensusInfo(
        n_pickers=n_pickers, picker_names=names, n_micrographs=len(inputs.micrographs),
        box=box, coordinates_box=None if coordinates_box is None else int(coordinates_box),
        box_spacing_px=box_spacing, box_from_network=bool(inputs.box_from_network),
        sampling_rate=inputs.sampling_rate, radius_px=radius_px, min_votes=min_votes,
        **counts,
        ignored_micrograph_entries=int(inputs.ignored_micrograph_entries),
        other_box_sizes=[int(b) for b in inputs.other_box_sizes],
        nested_pickers=[pair.row() for pair in nested], coverage=coverage,
        rescaled_sets=list(inputs.rescaled_sets), seconds=time.perf_counter() - start)
    run.record_stage("consensus", info)
    logger.info("Consensus of %d pickers on %d micrographs: OR %d, AND (>= %d votes) %d",
                n_pickers, info.n_micrographs, info.n_or, min_votes, info.n_and)
    for line in (nested_lines(info) + unconfirmed_lines(info)
                 + coverage_lines(names, coverage)):
        logger.warning(line)
    if crowded_box(info):
        logger.warning("The AND coordinates lie a median %.0f px apart in a %d px box: %s",
                       info.and_spacing_px, info.box, crowded_advice(info))
    return info


def require_training_set(consensus: ConsensusInfo) -> None:
    """Refuse, right after the consensus, a run that will train on an AND set too small to
    train on: before the negatives and the extraction take their time (hours on a large
    dataset), not after.  Training checks again on the boxes it can use (a skipped
    micrograph's are not)."""
    if consensus.n_and < MIN_POSITIVES:
        raise ValueError(_too_few_positives(consensus.n_and, consensus.min_votes))


def _too_few_positives(n_and: int, min_votes: int) -> str:
    return ("Only %d coordinates were picked by at least %d pickers (the AND set): too few "
            "to train on (at least %d are needed). Use 'picked by at least k pickers' with a "
            "lower k (command line: --and-rule at-least --k K), a larger consensus radius, "
            "or check that the pickers' coordinates are on the same micrographs and pixel "
            "size." % (n_and, min_votes, MIN_POSITIVES))


def table_counts(table: CoordinateTable, n_pickers: int, min_votes: int,
                 radius_px: float) -> dict:
    """The counts a :class:`.ConsensusInfo` keeps of a consensus table made with
    ``radius_px``."""
    votes = table.votes
    is_and = votes >= min_votes
    confirmed, over_chance = pipeline.agreement_shares(table, radius_px)
    return dict(n_or=len(table), n_and=int(is_and.sum()),
                votes_histogram=np.bincount(votes, minlength=n_pickers + 1).tolist(),
                picker_counts=[int(c) for c in table.voters.sum(axis=0)],
                and_spacing_px=and_spacing(table, min_votes),
                confirmed_share=confirmed, agreement_over_chance=over_chance)


def picker_coverage(micrographs: Sequence[Micrograph],
                    picks: Sequence[Mapping[int, np.ndarray]]) -> List[PickerCoverage]:
    """Per picker (``picks[p]``: micrograph id -> (n, 2) centres), its picks outside their
    micrograph and the micrographs it left unpicked where another picker picked
    (:class:`.PickerCoverage`).

    Each micrograph's size comes from its header alone, so the check costs no image
    read; a micrograph that cannot be read is left to the stages that read it, which
    name it.  Pixel centres run from 0 to size - 1, so the pixels span -0.5 to
    size - 0.5.
    """
    coverage = [PickerCoverage() for _ in picks]
    for mic in micrographs:
        centres = [np.asarray(p.get(mic.mic_id, np.empty((0, 2))),
                              dtype=np.float64).reshape(-1, 2) for p in picks]
        try:
            rows, columns = extraction.micrograph_shape(mic.path)
        except extraction.MicrographError:
            rows = columns = None
        picked = sum(len(xy) > 0 for xy in centres)
        for index, xy in enumerate(centres):
            outside = 0 if rows is None else int(np.count_nonzero(
                (xy < -0.5).any(axis=1) | (xy[:, 0] > columns - 0.5) | (xy[:, 1] > rows - 0.5)))
            unpicked = int(len(xy) == 0 and picked > 0)
            coverage[index] = coverage[index].plus(PickerCoverage(
                outside, mic.name if outside else "", unpicked, mic.name if unpicked else ""))
    return coverage


def negatives_stage(run: RunFolder, params: NegativeParams = NegativeParams(),
                    known: Optional[CoordinateTable] = None) -> NegativesInfo:
    """Random negatives (``ratio`` per AND particle), off-centre ones around the AND
    particles, and ``known`` non-particle coordinates, into ``negatives.npz``."""
    start = time.perf_counter()
    consensus = run.section("consensus")
    table = run.consensus()
    shapes = {}
    for mic in run.micrographs().values():
        try:
            shapes[mic.mic_id] = extraction.micrograph_shape(mic.path)
        except extraction.MicrographError as error:
            if not params.skip_bad_micrographs:
                raise
            logger.warning("No negatives from %s (extraction will skip it)", error)
    box = consensus.box
    total = int(round(params.ratio * consensus.n_and))
    parts = [pipeline.negatives_table(table, shapes, box, total, params.distance * box,
                                      params.seed)]
    n_random = len(parts[0])
    n_offcentre = 0
    if params.offcentre:
        positives = table.subset(np.flatnonzero(table.votes >= consensus.min_votes))
        parts.append(pipeline.offcentre_table(positives, table, shapes, OFFCENTRE_SHIFT * box,
                                              OFFCENTRE_CLEARANCE * box, params.seed + 1))
        n_offcentre = len(parts[-1])
    if known is not None:
        parts.append(known)
    negatives = pipeline.merge_tables(*parts)
    run.write_table(run.NEGATIVES, negatives)
    info = NegativesInfo(n_random=n_random, n_offcentre=n_offcentre,
                         n_user_coordinates=len(negatives) - n_random - n_offcentre,
                         seed=params.seed, seconds=time.perf_counter() - start)
    run.record_stage("negatives", info)
    logger.info("Negatives: %d random, %d off-centre, %d given as coordinates",
                info.n_random, info.n_offcentre, info.n_user_coordinates)
    return info


def extraction_stage(run: RunFolder, params: ExtractionParams = ExtractionParams(),
                     known_particles: KnownParticles = KnownParticles(),
                     progress: Optional[ProgressFactory] = None) -> ExtractionInfo:
    """Cut, downsample and normalise the OR and negative boxes into the two stacks;
    ``known_particles`` (non-particle images) end the negatives."""
    consensus = run.section("consensus")
    paths = {m.mic_id: m.path for m in run.micrographs().values()}
    box, size = consensus.box, params.network_size
    table, negatives = run.consensus(), run.negatives()
    n_user = len(known_particles.items)
    bar = _bar(progress, "Extracting", len(table) + len(negatives) + n_user, "particle")
    try:
        logger.info("Extracting %d OR particles (box %d px -> %d px)", len(table), box, size)
        or_stack = create_stack(run.file(run.OR_PARTICLES), len(table), size)
        report = extraction.extract_to_stack(pipeline.extraction_jobs(table, paths), or_stack,
                                             box, params.invert, params.skip_bad_micrographs,
                                             on_progress=_update(bar))
        or_stack.close()
        logger.info("Extracting %d negative particles", len(negatives))
        neg_stack = create_stack(run.file(run.NEG_PARTICLES), len(negatives) + n_user, size)
        neg_report = extraction.extract_to_stack(
            pipeline.extraction_jobs(negatives, paths), neg_stack, box, params.invert,
            params.skip_bad_micrographs, on_progress=_update(bar))
        inverted = add_known_particles(run, neg_stack, len(negatives), known_particles,
                                       consensus, params, bar)
        neg_stack.close()
    finally:
        _close(bar)
    return record_extraction(run, params, paths, n_user, report.n_crossing_border,
                             [report, neg_report], inverted)


CONTRAST_SAMPLE = 2000
"""Boxes of the run (evenly spread over the OR stack) whose contrast the known particles'
is compared with."""
CONTRAST_MIN_IMAGES = 10
"""Fewer known particles than this say too little of their contrast."""
CONTRAST_MIN_SKEWNESS = 0.05
"""A median skewness nearer zero than this (images of plain ice) tells no contrast."""


def known_particles_inverted(run_skewness: float, known_skewness: float,
                             n_known: int) -> bool:
    """Whether known particles have the opposite contrast of the run's boxes: both median
    skewnesses (:func:`.extraction.median_skewness`) clear of zero, and of opposite signs.
    The run's boxes of both development datasets have medians of -0.5 and -0.2 (89 to 95%
    of boxes negative, particles and random negatives alike), and the junk a picker alone
    picked (its lone picks the labels omit) -0.08 to -0.41; particles extracted with the
    contrast inverted, as RELION and Xmipp do by default, have the opposite."""
    return (n_known >= CONTRAST_MIN_IMAGES
            and min(abs(run_skewness), abs(known_skewness)) >= CONTRAST_MIN_SKEWNESS
            and run_skewness * known_skewness < 0)


def _run_skewness(run: RunFolder) -> float:
    """The median skewness of up to :data:`CONTRAST_SAMPLE` of the run's OR boxes."""
    with open_stack(run.file(run.OR_PARTICLES)) as boxes:
        rows = np.unique(np.linspace(0, len(boxes) - 1, min(len(boxes), CONTRAST_SAMPLE))
                         .astype(np.int64)) if len(boxes) else np.empty(0, dtype=np.int64)
        return extraction.median_skewness(np.asarray(boxes[rows]))


def add_known_particles(run: RunFolder, neg_stack, first_row: int,
                        known_particles: KnownParticles, consensus: ConsensusInfo,
                        params: ExtractionParams, bar=None) -> bool:
    """Known non-particle images into the negative stack from ``first_row`` on, each cut
    to the run's field of view (:class:`KnownParticles`), and inverted where they came
    with the opposite contrast of the run's boxes (judged on the first chunk); whether
    they were."""
    field = field_in_pixels(consensus.box, consensus.sampling_rate,
                            known_particles.sampling_rate)
    items = list(known_particles.items)
    inverted = False
    for first in range(0, len(items), USER_PARTICLE_CHUNK):
        chunk = items[first:first + USER_PARTICLE_CHUNK]
        images = extraction.read_particle_images(chunk, params.network_size, params.invert,
                                                 field)
        if first == 0:
            run_skew, known_skew = _run_skewness(run), extraction.median_skewness(images)
            inverted = known_particles_inverted(run_skew, known_skew, len(items))
            if inverted:
                logger.warning("The known negative particles have the opposite contrast of "
                               "the micrographs' boxes (median pixel skewness %+.2f against "
                               "%+.2f): inverted to match.  Extract them without inverting "
                               "the contrast to silence this.", known_skew, run_skew)
        offset = first_row + first
        neg_stack[offset:offset + len(images)] = -images if inverted else images
        if bar is not None:
            bar.update(len(images))
    return inverted


def record_extraction(run: RunFolder, params: ExtractionParams, paths: Mapping[int, str],
                      n_user: int, n_crossing_border: int,
                      reports: Sequence[extraction.ExtractionReport],
                      known_inverted: bool) -> ExtractionInfo:
    """Record the extraction; ``n_crossing_border`` counts the OR boxes only."""
    skipped = sorted(set().union(*(r.skipped_micrographs for r in reports)))
    info = ExtractionInfo(network_size=params.network_size, invert=params.invert,
                          n_crossing_border=n_crossing_border,
                          skipped_micrographs=skipped,
                          skipped_mic_ids=[m for m, p in paths.items() if p in skipped],
                          n_user_particles=n_user,
                          seconds=sum(r.seconds for r in reports),
                          known_particles_inverted=known_inverted)
    if params.rotational_average:
        info.rotational = _fit_rotational(run, info)
    run.record_stage("extraction", info)
    return info


def _usable_rows(table: CoordinateTable, negatives: CoordinateTable,
                 extracted: ExtractionInfo) -> Tuple[np.ndarray, np.ndarray]:
    """Which OR rows of ``table`` and which negative-stack rows (``negatives``, then the
    known non-particle images) come from micrographs the extraction did not skip."""
    skipped = extracted.skipped_mic_ids
    return (~np.isin(table.mic, skipped),
            np.concatenate([~np.isin(negatives.mic, skipped),
                            np.ones(extracted.n_user_particles, dtype=bool)]))


def _fit_rotational(run: RunFolder, extracted: ExtractionInfo) -> Optional[RotationalInfo]:
    """Fit the rotational-average discriminant on the AND boxes against the negatives (the
    network's training labels) and write each OR box's log-likelihood ratio; None, with
    a warning, where there are too few boxes to fit it."""
    start = time.perf_counter()
    consensus = run.section("consensus")
    table = run.consensus()
    usable, neg_usable = _usable_rows(table, run.negatives(), extracted)
    particles = np.flatnonzero(usable & (table.votes >= consensus.min_votes))
    background = np.flatnonzero(neg_usable)
    if min(len(particles), len(background)) < radial.MIN_BOXES:
        logger.warning("Rotational averages left out: %d AND and %d negative boxes, fewer "
                       "than the %d of each the discriminant needs", len(particles),
                       len(background), radial.MIN_BOXES)
        return None
    with open_stack(run.file(run.OR_PARTICLES)) as or_stack, \
            open_stack(run.file(run.NEG_PARTICLES)) as neg_stack:
        power = radial.mean_power([(or_stack, np.flatnonzero(usable))])
        discriminant = radial.fit_discriminant(
            radial.ClassMoments.of_stack(or_stack, particles, power),
            radial.ClassMoments.of_stack(neg_stack, background, power), power)
        evidence = discriminant.score_stack(or_stack, np.arange(len(or_stack)))
    evidence[~usable] = np.nan
    run.write_array(run.ROTATIONAL_LLR, evidence)
    seconds = time.perf_counter() - start
    logger.info("Rotational averages: the AND boxes and the negatives %.1f deviations apart "
                "(%d and %d boxes, %.1f s)", discriminant.separation, len(particles),
                len(background), seconds)
    return RotationalInfo.of(discriminant, len(particles), len(background), seconds)


def run_model_spec(box: int, sampling_rate: Optional[float], network_size: int, invert: bool,
                   architecture: str) -> ModelSpec:
    """What a model trained (or reused) by a run with these boxes and settings must record."""
    return ModelSpec(architecture=architecture, network_size=int(network_size),
                     invert=bool(invert), box=int(box), sampling_rate=sampling_rate)


def reuse_errors(model: ModelSpec, ours: ModelSpec, model_name: str) -> List[str]:
    """:func:`.model_file.compatibility_errors` of reusing ``model`` in a run of ``ours``,
    and where the boxes show other fields, how to make the run work in the network's: a
    front end that reads the network before the consensus takes its boxes
    (:func:`.box_policy.network_box`), so the fields differ only where a particle diameter
    chose others or the consensus was made without the network (the command line's
    'consensus')."""
    errors = compatibility_errors(model, ours, model_name)
    if not same_extent(model, ours) and model.sampling_rate:
        errors.append("To work in the network's boxes (%.0f A), give no particle diameter "
                      "(the protocol and 'deepconsensus run --model' then work in them) or "
                      "%.0f A (the run then works in boxes of %.1f diameters)."
                      % (model.box * model.sampling_rate,
                         model.box * model.sampling_rate / BOX_PER_DIAMETER, BOX_PER_DIAMETER))
    return errors


def model_stage(run: RunFolder, use: str = MODEL_NEW, source: Optional[str] = None,
                source_name: Optional[str] = None,
                architecture: str = TrainingParams.architecture) -> ModelInfo:
    """Choose the run's network: a new one (``use`` :data:`.MODEL_NEW`), or the model file
    ``source`` (named ``source_name`` to the user), fine-tuned on this run's particles or
    scoring them as it is.  A model trained on other boxes (network size, contrast,
    architecture, field of view) is refused with a message naming both values; an
    accepted one is copied into the run folder, so the run does not depend on it staying."""
    if use not in MODEL_USES:
        raise ValueError("unknown model use %r (one of %s)" % (use, ", ".join(MODEL_USES)))
    if use == MODEL_NEW:
        info = ModelInfo(use=use, architecture=architecture)
        run.record_stage("model", info)
        return info
    if source is None:
        raise ValueError("reusing a model (%s) needs its file" % use)
    consensus, extracted = run.section("consensus"), run.section("extraction")
    spec = read_spec(source)
    ours = run_model_spec(consensus.box, consensus.sampling_rate, extracted.network_size,
                          extracted.invert, architecture)
    errors = reuse_errors(spec, ours, source_name or source)
    if errors:
        raise ModelFileError(" ".join(errors))
    target = run.REUSED_MODEL if use == MODEL_FINE_TUNE else run.MODEL
    run.copy_in(source, target)
    info = ModelInfo(use=use, source=source_name or source, path=os.path.abspath(source),
                     architecture=spec.architecture, trained_box=spec.box,
                     trained_sampling_rate=spec.sampling_rate)
    run.record_stage("model", info)
    logger.info("Model: %s", model_origin(info))
    return info


def scoring_round(info) -> int:
    """The round whose network gives the final scores (1 when a reused model scores alone)."""
    if info.model is not None and info.model.use == MODEL_SCORE_ONLY:
        return 1
    if info.training is None:
        raise RunFolderError("the run has no trained network: train first")
    return info.training.n_rounds


SCORING_BATCH = 512
"""Rows scored per batch (:func:`.scoring.score_stack`'s default).  Scoring shards
(:func:`.shards.particle_shards`) start on a whole batch, so every batch holds the same
boxes as in unsharded scoring and the scores are the same to the bit."""


def image_evidence(cnn_scores: np.ndarray, rotational: Optional[np.ndarray] = None) -> np.ndarray:
    """What the boxes say, as log-odds of particle: the network's logit, plus the
    rotational-average log-likelihood ratio where the run has one (:mod:`.radial`): two
    classifiers of the same box trained on the same labels, combined by adding log-odds."""
    logit = score_logit(cnn_scores)
    return logit if rotational is None else logit + rotational


def agreement_posterior(voters: np.ndarray, cnn_scores: np.ndarray,
                        rotational: Optional[np.ndarray] = None):
    """Posterior of the pickers' votes and the boxes' evidence (:func:`image_evidence`),
    and the EM model."""
    return dawid_skene(voters, image_evidence(cnn_scores, rotational))


def training_stage(run: RunFolder, round_number: int, params: TrainingParams = TrainingParams(),
                   gpus: Sequence[int] = (),
                   progress: Optional[ProgressFactory] = None) -> RoundInfo:
    """Train one round: AND vs negatives; a later round adds the first round's confident
    decisions on the OR set (particles to the positives, junk to the negatives)."""
    from .training import train_classifier

    consensus = run.section("consensus")
    skipped = run.section("extraction")
    reused = run.info().model
    if reused is not None and reused.use == MODEL_SCORE_ONLY:
        raise RunFolderError("%s scores with %s without training: there is nothing to train"
                             % (run.path, reused.source))
    initial = (run.file(run.REUSED_MODEL)
               if reused is not None and reused.use == MODEL_FINE_TUNE else None)
    table = run.consensus()
    usable, neg_usable = _usable_rows(table, run.negatives(), skipped)
    is_and = table.votes >= consensus.min_votes
    positives = np.flatnonzero(usable & is_and)
    if len(positives) < MIN_POSITIVES:
        raise ValueError(_too_few_positives(len(positives), consensus.min_votes))
    or_stack = open_stack(run.file(run.OR_PARTICLES))
    neg_stack = open_stack(run.file(run.NEG_PARTICLES))
    negative_sources = [(neg_stack, np.flatnonzero(neg_usable))]
    hard = np.empty(0, dtype=np.int64)
    if round_number > 1:
        first = run.array(run.round_name(run.CNN_SCORES, 1, params.rounds))
        posterior, _ = agreement_posterior(table.voters, first, run.rotational_evidence())
        positives, hard = pipeline.self_training_rows(posterior, is_and, usable,
                                                      SELF_TRAINING_CONFIDENCE)
        negative_sources.append((or_stack, hard))
        logger.info("Round %d trains on %d particles (%d beyond the AND set) and %d picks "
                    "the first round judged junk", round_number, len(positives),
                    int((~is_and[positives]).sum()), len(hard))
    bar = _bar(progress, "Training round %d" % round_number, params.max_epochs, "epoch")
    model_path = run.round_file(run.MODEL, round_number, params.rounds)
    try:
        result = train_classifier([(or_stack, positives)], negative_sources,
                                  params.config(round_number), model_path,
                                  run.round_file(run.HISTORY, round_number, params.rounds),
                                  gpus=list(gpus), on_epoch=_update(bar),
                                  initial_model=initial)
    finally:
        _close(bar)
    write_spec(model_path, run_model_spec(consensus.box, consensus.sampling_rate,
                                          skipped.network_size, skipped.invert,
                                          params.architecture))
    trained = RoundInfo(round=round_number, epochs=result.epochs,
                        val_accuracy=result.val_accuracy, val_loss=result.val_loss,
                        seconds=result.seconds, n_positives=len(positives),
                        n_hard_negatives=len(hard), epoch_size=result.epoch_size)
    previous = run.info().training
    rounds = [r for r in (previous.rounds if previous else []) if r.round < round_number]
    run.record_stage("training", TrainingInfo(architecture=params.architecture,
                                              n_rounds=params.rounds, rounds=rounds + [trained]))
    return trained


def scoring_stage(run: RunFolder, round_number: int, rounds: int, seed: int = 0,
                  gpus: Sequence[int] = (), progress: Optional[ProgressFactory] = None,
                  centring_search: float = 0.0) -> np.ndarray:
    """Score every OR box with the round's network (NaN on skipped micrographs); with
    ``centring_search`` > 0, each pick's best score within that share of the box
    (:mod:`.centring`)."""
    with open_stack(run.file(run.OR_PARTICLES)) as stack:
        model = round_model(run, round_number, rounds)
        start = time.perf_counter()
        total = len(stack) * centring.boxes_per_pick(centring_search)
        bar = _bar(progress, "Scoring round %d" % round_number, total, "box")
        try:
            scores = score_boxes(run, model, stack, np.arange(len(stack)), centring_search,
                                 gpus, seed, _update(bar))
        finally:
            _close(bar)
    return record_scores(run, round_number, rounds, scores, time.perf_counter() - start,
                         centring_search)


def score_boxes(run: RunFolder, model: str, images, rows: np.ndarray, centring_search: float,
                gpus: Sequence[int] = (), seed: int = 0,
                on_progress: Optional[Callable[[int], None]] = None,
                skipped_mic_ids: Optional[Sequence[int]] = None) -> np.ndarray:
    """Scores of the OR rows ``rows`` of the run's table, whose boxes are ``images`` (a
    stack or part of one): each box's own, or with ``centring_search`` > 0 the best of it
    and its shifted boxes, cut from the micrographs (a shard's rows start on a whole
    batch, so its shifted boxes are batched as in one-piece scoring).  The micrographs
    ``skipped_mic_ids`` (default: those the extraction skipped) are not read again."""
    from .scoring import score_stack

    if len(rows) == 0:
        return np.empty(0)
    scores = score_stack(model, images, batch_size=SCORING_BATCH, gpus=list(gpus), seed=seed,
                         on_progress=on_progress)
    if centring_search <= 0:
        return scores
    consensus, extracted = run.section("consensus"), run.section("extraction")
    distance = centring_search * consensus.box
    shifted = centring.ShiftedBoxes(run.consensus().subset(rows),
                                    {m.mic_id: m.path for m in run.micrographs().values()},
                                    centring.search_offsets(distance), consensus.box,
                                    extracted.network_size, extracted.invert,
                                    extracted.skipped_mic_ids if skipped_mic_ids is None
                                    else skipped_mic_ids)
    logger.info("Best-centred search: %d picks scored again at %d positions %.1f px around "
                "each", len(rows), centring.DIRECTIONS, distance)
    around = score_stack(model, shifted, batch_size=SCORING_BATCH, gpus=list(gpus),
                         seed=seed, on_progress=on_progress)
    best = centring.best_of_shifts(scores, around)
    logger.info("Best-centred search: %d of %d picks score higher off their coordinate "
                "(mean gain %.3f)", int((best > scores).sum()), len(best),
                float(np.mean(best - scores)))
    return best


def round_model(run: RunFolder, round_number: int, rounds: int) -> str:
    """The file of the round's trained network, refused where that round has not trained."""
    if not run.has(run.round_name(run.MODEL, round_number, rounds)):
        raise RunFolderError("%s has no trained network for round %d: train first"
                             % (run.path, round_number))
    return run.round_file(run.MODEL, round_number, rounds)


def record_scores(run: RunFolder, round_number: int, rounds: int, scores: np.ndarray,
                  seconds: float, centring_search: float) -> np.ndarray:
    """Write the round's scores (NaN on the micrographs the extraction skipped) and note
    the scoring's time and search in the training record; the scores, as one-piece and
    sharded scoring both leave them."""
    skipped = run.section("extraction")
    table = run.consensus()
    scores[np.isin(table.mic, skipped.skipped_mic_ids)] = np.nan
    run.write_array(run.round_name(run.CNN_SCORES, round_number, rounds), scores)
    training = run.info().training
    if training is not None:
        for trained in training.rounds:
            if trained.round == round_number:
                trained.scoring_seconds = seconds
                trained.centring_search = centring_search
        run.record_stage("training", training)  # new scores: the ranking is stale
    return scores


def training_rounds(run: RunFolder, params: TrainingParams = TrainingParams(),
                    gpus: Sequence[int] = (),
                    progress: Optional[ProgressFactory] = None) -> None:
    """Every training round, each round before the last scored (the next round learns
    from its confident decisions); the last round's network is left for
    :func:`scoring_stage`."""
    for round_number in range(1, params.rounds + 1):
        training_stage(run, round_number, params, gpus=gpus, progress=progress)
        if round_number < params.rounds:
            scoring_stage(run, round_number, params.rounds, seed=params.seed, gpus=gpus,
                          progress=progress)


def ranking_stage(run: RunFolder, combine: bool = True) -> RankingInfo:
    """The final score (``scores.npy``): the last round's network score, or its combination
    with the pickers' votes (each picker weighted by its reliability, estimated by EM)."""
    table = run.consensus()
    cnn = run.array(run.CNN_SCORES)
    agreement = None
    if combine:
        scores, model = agreement_posterior(table.voters, cnn, run.rotational_evidence())
        agreement = AgreementInfo(sensitivity=model.sensitivity.tolist(),
                                  false_pick_rate=model.false_pick_rate.tolist(),
                                  prior=float(model.prior))
    else:
        scores = cnn
    run.write_array(run.SCORES, scores)
    info = RankingInfo(auto_threshold=automatic_threshold(scores), agreement=agreement)
    run.record_stage("ranking", info)
    return info


def split_stage(run: RunFolder, threshold: Optional[float], min_distance: float,
                edge_margin: float = 0.0) -> Split:
    """Cut the final scores: retained at or above ``threshold`` (None: the automatic one),
    at least ``edge_margin`` px from the micrograph's edge and no closer than
    ``min_distance`` px to a better retained one; the rest pruned."""
    run.require(*run.SCORED, stage="splitting the scores")
    ranking = run.section("ranking")
    automatic = threshold is None
    if automatic:
        threshold = ranking.auto_threshold
    table, scores = run.consensus(), run.scores()
    split = split_scores(scores, threshold, table.mic, table.xy, min_distance,
                         _edges(run, table, edge_margin), edge_margin)
    run.record_stage("split", SplitInfo(
        threshold=float(threshold), threshold_mode="automatic" if automatic else "fixed",
        min_distance_px=float(min_distance), n_retained=len(split.retained),
        n_pruned=len(split.pruned), n_duplicates=split.n_duplicates,
        n_unscored=len(table) - len(split.retained) - len(split.pruned),
        edge_margin_px=float(edge_margin), n_at_edge=split.n_at_edge))
    return split


def _edges(run: RunFolder, table: CoordinateTable, edge_margin: float) -> Optional[np.ndarray]:
    """The coordinates' distances to the micrograph edge where an edge rule applies."""
    return run.edge_distances(table.mic, table.xy) if edge_margin > 0 else None


def evaluation_stage(run: RunFolder, good: Optional[CoordinateTable],
                     bad: Optional[CoordinateTable]) -> Optional[EvaluationInfo]:
    """The split's scores and decisions against the user's known-good and known-bad picks
    (tables in the run's micrograph ids and pixels), matched within the consensus radius
    (:mod:`.evaluation`); the labelled rows go to ``known_labels.npy`` for the viewer.
    Without known picks the record says nothing (None)."""
    split_info, consensus = run.section("split"), run.section("consensus")
    if good is None and bad is None:
        run.record_stage("evaluation", None)
        return None
    table, scores = run.consensus(), run.scores()
    known = evaluation.known_labels(table, good, bad, consensus.radius_px)
    run.write_array(run.KNOWN_LABELS, np.column_stack([known.rows, known.labels]))
    retained = split_scores(scores, split_info.threshold, table.mic, table.xy,
                            split_info.min_distance_px,
                            _edges(run, table, split_info.edge_margin_px),
                            split_info.edge_margin_px).retained_mask()
    result = evaluation.agreement(known.labels, scores[known.rows], retained[known.rows])
    info = EvaluationInfo(n_good=known.n_good, n_bad=known.n_bad,
                          n_good_unpicked=known.n_good_unpicked,
                          n_bad_unpicked=known.n_bad_unpicked, n_conflicting=known.n_conflicting,
                          n_labelled=len(known.rows), threshold=split_info.threshold,
                          precision=_defined(result.precision), recall=_defined(result.recall),
                          roc_auc=_defined(result.roc_auc))
    run.record_stage("evaluation", info)
    return info


def _defined(value: float) -> Optional[float]:
    return None if np.isnan(value) else float(value)


def scored_picks(run: RunFolder, split: Split) -> List[ScoredPicks]:
    """The verdict of ``split`` per micrograph (micrographs named by their labels), in
    micrograph order; rows without a score (skipped micrographs) are left out."""
    table, scores = run.consensus(), run.scores()
    kept = split.retained_mask()
    scored = np.isfinite(scores)
    votes = table.votes
    rows_of = dict(table.per_micrograph())
    picks = []
    for mic_id, mic in sorted(run.micrographs().items()):
        rows = rows_of.get(mic_id, np.empty(0, dtype=np.int64))
        rows = rows[scored[rows]]
        picks.append(ScoredPicks(mic.label, table.xy[rows], scores[rows], votes[rows],
                                 kept[rows]))
    return picks


def _remove_stale_coordinates(root: str, written: CoordinateStarFiles) -> None:
    """Delete what an earlier export of this run left in its ``coordinates`` folder and this
    one did not write (the files of micrographs no longer in the run, RELION 3.1's suffix
    file of a micrographs STAR file no longer given): RELION's Extract reads the file of
    every micrograph named in its input, so a stale one would bring back old particles.
    The folder is the run's own; nothing else is kept there."""
    keep = {os.path.abspath(path) for path in (written.coordinate_list, written.suffix_file,
                                               *written.coordinate_files) if path is not None}
    for folder, subfolders, names in os.walk(root, topdown=False):
        for name in names:
            path = os.path.join(folder, name)
            if os.path.abspath(path) not in keep:
                os.remove(path)
        if folder != root and not os.listdir(folder):
            os.rmdir(folder)


def export_stage(run: RunFolder, split: Split) -> ExportInfo:
    """Write what RELION and cryoSPARC users import: ``retained.star`` and ``pruned.star``
    (RELION 3.1+ particle STAR files with the score in ``_rlnAutopickFigureOfMerit``),
    per-micrograph coordinate STAR files of the retained particles under
    ``coordinates/`` (with RELION 4's list ``coordinates/deepconsensus.star``) and
    ``picks.csv`` with every pick's score, votes and verdict."""
    export = run.section("export")
    if export.voltage is None or export.spherical_aberration is None:
        raise RunFolderError("%s: the voltage and spherical aberration of the micrographs are "
                             "unknown; RELION needs them in the optics table" % run.path)
    optics = Optics(pixel_size=export.pixel_size, voltage=export.voltage,
                    spherical_aberration=export.spherical_aberration,
                    amplitude_contrast=export.amplitude_contrast)
    picks = scored_picks(run, split)
    retained = [p.subset(True) for p in picks]
    write_particle_star(run.file(run.RETAINED_STAR), retained, optics=optics,
                        box_size=export.box)
    write_particle_star(run.file(run.PRUNED_STAR), [p.subset(False) for p in picks],
                        optics=optics, box_size=export.box)
    written = write_coordinate_stars(run.file(run.COORDINATES), retained,
                                     micrographs_star=export.micrographs_star)
    _remove_stale_coordinates(run.file(run.COORDINATES), written)
    write_picks_csv(run.file(run.PICKS_CSV), picks)
    files = [run.file(run.RETAINED_STAR), run.file(run.PRUNED_STAR),
             os.fspath(written.coordinate_list)]
    if written.suffix_file is not None:
        files.append(os.fspath(written.suffix_file))
    export.files = files + [run.file(run.PICKS_CSV)]
    run.update_info(export=export)
    return export
