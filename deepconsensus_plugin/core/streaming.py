"""Deep Consensus on coordinate sets that are still growing (on-the-fly processing).

In a facility's live pipeline the pickers' coordinate sets grow while the
microscope collects.  A streaming run takes the micrographs in batches, in
the order they arrive:

1. a micrograph is *ready* when every picker's set has coordinates on it, or
   that set is closed (then the picker found nothing there)
   (:func:`ready_micrographs`); a micrograph whose coordinates arrive in two
   updates (one picker now, another later) waits for the second;
2. each ready batch's consensus is appended to the run's OR table (the
   consensus of a micrograph depends on that micrograph alone, so the table
   is the one a run on all the micrographs would build, rows in arrival order);
   where the pickers' box is too large for the particles, the first batch fits
   the box every batch then works in, as a batch run's consensus does on all
   the micrographs (:func:`.box_policy.fitted_consensus`);
3. once the AND set is large enough (:func:`training_size`), or when the
   inputs close first, the ordinary stages (:mod:`.stages`) train on
   everything so far and score it: with the inputs closed before that, the
   run is exactly the batch run (in the batch run's box, unless the first
   batch's particles fitted another one than all the micrographs' would);
4. every later batch is extracted, scored by that network and combined with
   the votes under the agreement model fitted at training time, so the
   coordinates already handed out keep their scores; optionally, once the
   AND set has grown by a factor since the last training, the network is
   trained again on everything so far and scores the batches after that
   (:meth:`StreamingRun.should_retrain`), the earlier scores kept;
5. each scored batch is split at the run's threshold; since duplicates are
   looked for within a micrograph, the union of the batches' splits is the
   split of the whole table: retained and pruned partition the scored OR set,
   with no coordinate in two batches.

:class:`StreamingRun` keeps what is done in ``stream.json`` in the run
folder, written after each batch (atomically): a run stopped mid-stream and
continued starts after the last finished batch, and rows a batch had
appended before it was stopped are dropped and redone.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from . import box_policy, centring, extraction, pipeline, run_folder, run_summary, stages
from .agreement import AgreementModel, posterior_given
from .pipeline import CoordinateTable
from .run_folder import ConsensusInfo, KnownParticles, Micrograph, RunFolder, RunFolderError
from .selection import Split, split_scores
from .stack import create_stack, open_stack

logger = logging.getLogger(__name__)

STREAM_FILE = "stream.json"
TRAINING_MICROGRAPHS = 20
"""By default training waits for the AND particles of this many micrographs..."""
TRAINING_MINIMUM = 1000
"""...and for at least this many AND particles, ten times the least a network trains on
(:data:`.stages.MIN_POSITIVES`): fewer would give later batches a network trained on a
corner of the data."""


def ready_micrographs(arrived: Sequence[str], picked: Sequence[Set[str]],
                      closed: Sequence[bool], done: Set[str]) -> List[str]:
    """The micrographs (names, in arrival order) that a batch can take now: arrived, not
    ``done``, and picked by every picker whose set is still open."""
    return [name for name in arrived if name not in done
            and all(is_closed or name in names for names, is_closed in zip(picked, closed))]


def training_size(and_per_micrograph: float, requested: int = 0) -> int:
    """The AND set a streaming run trains on: ``requested`` when positive, else the AND
    particles of :data:`TRAINING_MICROGRAPHS` micrographs at the rate seen so far, and at
    least :data:`TRAINING_MINIMUM`."""
    if requested > 0:
        return max(requested, stages.MIN_POSITIVES)
    return max(TRAINING_MINIMUM, int(math.ceil(TRAINING_MICROGRAPHS * and_per_micrograph)))


@dataclass
class StreamBatch:
    """One batch of micrographs: its rows of the OR table and what became of them."""

    number: int
    micrographs: List[str]
    first_row: int
    n_rows: int
    scored: bool = False
    n_retained: int = 0
    n_pruned: int = 0
    skipped_micrographs: List[str] = field(default_factory=list)
    seconds: float = 0.0
    published: bool = False
    """Whether the front end has handed its coordinates out (Scipion's output sets)."""
    model: int = 0
    """Which training's network scored it (1: the first; 0: not scored yet)."""

    @property
    def rows(self) -> np.ndarray:
        return np.arange(self.first_row, self.first_row + self.n_rows)


@dataclass
class StreamState:
    """What a streaming run has done (``stream.json``)."""

    batches: List[StreamBatch] = field(default_factory=list)
    trained_at_and: Optional[int] = None
    """The AND count the latest network was trained on; None before training."""
    trainings: List[int] = field(default_factory=list)
    """The AND count of each training, in order (the first, then each retraining)."""
    agreement: Optional[dict] = None
    """The agreement model fitted at training time (None: the network's score alone)."""
    threshold: Optional[float] = None
    closed: bool = False
    pick_overlaps: List[List[int]] = field(default_factory=list)
    """The finished batches' picks that each pair of pickers holds at the same positions
    (:func:`.pipeline.pick_overlaps`, one [first, second, shared, n_first, n_second] a
    pair), so that a subset is judged on the whole stream, as a batch run judges it."""
    fitted_box: Optional[int] = None
    """The box the first batch fitted (:attr:`StreamSettings.fit_box`) and every batch
    works in; None: the box the run was given."""
    box_spacing_px: Optional[float] = None
    """The first batch's AND spacing that set :attr:`fitted_box`."""
    coverage: List[run_folder.PickerCoverage] = field(default_factory=list)
    """The finished batches' :class:`.PickerCoverage` of each picker, so that the
    consensus record covers the whole stream, as a batch run's covers its micrographs."""

    @property
    def done(self) -> Set[str]:
        return {name for batch in self.batches for name in batch.micrographs}

    @property
    def n_rows(self) -> int:
        return sum(batch.n_rows for batch in self.batches)


@dataclass(frozen=True)
class StreamSettings:
    """The run's parameters: the stages' and the streaming ones."""

    consensus: stages.ConsensusParams = stages.ConsensusParams()
    negatives: stages.NegativeParams = stages.NegativeParams()
    extraction: stages.ExtractionParams = stages.ExtractionParams()
    training: stages.TrainingParams = stages.TrainingParams()
    combine_votes: bool = True
    centring_search: float = centring.DEFAULT_SEARCH
    """How far around each pick the scoring looks for its best-centred box (share of the
    box; :attr:`.stages.MethodOptions.centring_search`)."""
    threshold: Optional[float] = 0.5
    """None: the automatic threshold of the scores at training time."""
    min_distance: float = -1.0
    """The minimum distance between retained particles in Å (0: none; negative: the
    default share of the box the run works in, :func:`.box_policy.split_lengths_px`), as the
    form and the command line give it: a box fitted at the first batch changes it."""
    edge_margin: float = -1.0
    """The edge margin in Å (as :attr:`min_distance`)."""
    fit_box: bool = False
    """Whether the first batch may fit the run's box to the AND spacing
    (:func:`.box_policy.spacing_box`), as :attr:`.stages.ConsensusInput.fit_box` lets a batch
    run's consensus; no fit where the run is given a working box (``coordinates_box``)."""
    train_at: int = 0
    """AND particles to train on (0: :func:`training_size`'s default)."""
    retrain_factor: float = 0.0
    """Train again once the AND set has grown by this factor since the last training
    (0: never)."""
    model_use: str = run_folder.MODEL_NEW
    model_source: Optional[str] = None
    model_name: Optional[str] = None
    gpus: Sequence[int] = ()


class StreamingRun:
    """A deep-consensus run folder fed batch by batch (see the module's description)."""

    def __init__(self, run: RunFolder, settings: StreamSettings, picker_names: Sequence[str],
                 box: int, sampling_rate: Optional[float],
                 coordinates_box: Optional[int] = None, box_from_network: bool = False):
        """``box`` is the box the run works in (:func:`.box_policy.run_boxes`),
        ``coordinates_box`` the input coordinates' where it differs (the outputs keep it),
        ``box_from_network`` whether ``box`` is a reused network's."""
        self.run = run
        self.settings = settings
        self.picker_names = list(picker_names)
        self.box = int(box)
        self.coordinates_box = None if coordinates_box is None else int(coordinates_box)
        self.box_from_network = bool(box_from_network)
        self.sampling_rate = sampling_rate
        self.min_votes = stages.min_votes_for(settings.consensus.and_rule, len(picker_names),
                                              settings.consensus.k)
        self.state = self._load()
        if self.state.fitted_box is not None:  # a resumed stream keeps its first batch's fit
            self.coordinates_box, self.box = self.box, self.state.fitted_box

    @property
    def output_box(self) -> int:
        """The box the outputs carry: the input coordinates'."""
        return self.box if self.coordinates_box is None else self.coordinates_box

    # -- the record ---------------------------------------------------------
    def _load(self) -> StreamState:
        """The state of a run stopped earlier, its table cut back to the finished batches."""
        if not self.run.has(STREAM_FILE):
            return StreamState()
        with open(self.run.file(STREAM_FILE)) as handle:
            data = json.load(handle)
        batches = [StreamBatch(**b) for b in data["batches"]]
        coverage = [run_folder.PickerCoverage(**c) for c in data.get("coverage", [])]
        state = StreamState(**{**data, "batches": batches, "coverage": coverage})
        if self.run.has(self.run.CONSENSUS) and len(self.run.consensus()) != state.n_rows:
            logger.info("Dropping the rows of a batch that did not finish")
            self._truncate(state)
        return state

    def _truncate(self, state: StreamState) -> None:
        keep = np.arange(state.n_rows)
        self.run.write_table(self.run.CONSENSUS, self.run.consensus().subset(keep))
        done = state.done
        self.run.write_micrographs([m for m in self.run.micrographs().values()
                                    if m.name in done])
        for name in (self.run.CNN_SCORES, self.run.SCORES):
            if self.run.has(name):
                self.run.write_array(name, self.run.array(name)[:state.n_rows])

    def _save(self) -> None:
        self.run.write_json(STREAM_FILE, dataclasses.asdict(self.state))

    @property
    def trained(self) -> bool:
        return self.state.trained_at_and is not None

    def next_mic_id(self) -> int:
        """The id the next micrograph gets (ids grow in arrival order)."""
        if not self.run.has(self.run.MICROGRAPHS):
            return 1
        return max(self.run.micrographs(), default=0) + 1

    # -- a batch ------------------------------------------------------------
    def add_batch(self, micrographs: Sequence[Micrograph],
                  picks: Sequence[Mapping[int, np.ndarray]]) -> StreamBatch:
        """Append the consensus of a batch: ``micrographs`` with ids new to the run (Scipion's
        micrograph ids, or :meth:`next_mic_id` on), ``picks[p]`` picker p's centres per
        micrograph id (in the run's pixels).  A micrograph already in the run is refused: no
        coordinate twice.  The table keeps each micrograph's rows together, in arrival
        order."""
        start = time.perf_counter()
        if not micrographs:
            raise ValueError("a batch needs at least one micrograph")
        again = sorted({m.name for m in micrographs} & self.state.done)
        if again:
            raise RunFolderError("%s: micrograph(s) %s are already in an earlier batch"
                                 % (self.run.path, ", ".join(again)))
        ids = [m.mic_id for m in micrographs]
        taken = set(self.run.micrographs()) if self.run.has(self.run.MICROGRAPHS) else set()
        if taken & set(ids) or len(set(ids)) < len(ids):
            raise ValueError("%s: micrograph ids of a batch must be new and distinct (%s)"
                             % (self.run.path, sorted(taken & set(ids))))
        batch_picks = [{i: np.asarray(p.get(i, np.empty((0, 2)))).reshape(-1, 2)
                        for i in ids} for p in picks]
        overlaps = [before.plus(now) for before, now in
                    zip(self._overlaps(), pipeline.pick_overlaps(batch_picks))]
        nested = pipeline.require_different_pickers(overlaps, self.picker_names)
        for pair in nested:
            logger.warning(run_summary.nested_warning(pair, self.picker_names))
        batch_coverage = stages.picker_coverage(micrographs, batch_picks)
        for line in run_summary.coverage_lines(self.picker_names, batch_coverage):
            logger.warning("Batch %d: %s", len(self.state.batches) + 1, line)
        coverage = [before.plus(now) for before, now in
                    zip(self.state.coverage or [run_folder.PickerCoverage()] * len(picks),
                        batch_coverage)]
        fit = (not self.state.batches and self.settings.fit_box
               and self.coordinates_box is None)
        table, box, spacing = box_policy.fitted_consensus(
            batch_picks, self.box, self.settings.consensus.radius, self.min_votes, fit)
        if fit:
            self._keep_fit(box, spacing)
        old = self.run.consensus() if self.run.has(self.run.CONSENSUS) else None
        merged = table if old is None else CoordinateTable(
            mic=np.concatenate([old.mic, table.mic]), xy=np.concatenate([old.xy, table.xy]),
            voters=np.concatenate([old.voters, table.voters]))
        mics = list(self.run.micrographs().values()) if old is not None else []
        self.run.write_table(self.run.CONSENSUS, merged)
        self.run.write_micrographs(mics + list(micrographs))
        self._record_consensus(merged, len(mics) + len(micrographs), nested, coverage)
        batch = StreamBatch(number=len(self.state.batches) + 1,
                            micrographs=[m.name for m in micrographs],
                            first_row=len(merged) - len(table), n_rows=len(table))
        if self.trained:
            self._score_batch(batch)
        batch.seconds = time.perf_counter() - start
        self.state.batches.append(batch)
        self.state.pick_overlaps = [pair.row() for pair in overlaps]
        self.state.coverage = coverage
        self._save()
        logger.info("Batch %d: %d micrographs, %d OR coordinates%s", batch.number,
                    len(micrographs), batch.n_rows,
                    ", scored" if batch.scored else " (waiting for the network)")
        return batch

    def _keep_fit(self, fitted: int, spacing: Optional[float]) -> None:
        """After the first batch's fit (:func:`.box_policy.fitted_consensus`, as a batch run's
        consensus fits on all the micrographs): where it gave another box, work in it from
        now on, the outputs keeping the given one.  A stream cannot fit later: its earlier
        batches were merged, and may be handed out, in the box it has."""
        if spacing is None:
            logger.warning("The first batch has too few AND coordinates with a neighbour to "
                           "tell whether the %d px box suits the particles: the stream works "
                           "in it (give the particle diameter to choose the box)", self.box)
        if fitted == self.box:
            return
        logger.info("The first batch's AND coordinates lie a median %.0f px apart, under "
                    "%.1f of the %d px box: the stream works in boxes of %d px, the outputs "
                    "keep %d px", spacing, 1.0 / box_policy.CROWDED_BOX_PER_SPACING, self.box,
                    fitted, self.box)
        self.state.fitted_box, self.state.box_spacing_px = fitted, spacing
        self.coordinates_box, self.box = self.box, fitted

    def _overlaps(self) -> List[pipeline.SharedPicks]:
        """The finished batches' overlaps of each pair of pickers (zero before the first)."""
        if self.state.pick_overlaps:
            return [pipeline.SharedPicks(*row) for row in self.state.pick_overlaps]
        n = len(self.picker_names)
        return [pipeline.SharedPicks(i, j, 0, 0, 0) for i in range(n) for j in range(i + 1, n)]

    def _record_consensus(self, table: CoordinateTable, n_micrographs: int,
                          nested: Sequence[pipeline.SharedPicks],
                          coverage: Sequence[run_folder.PickerCoverage]) -> None:
        """The consensus record of the table so far; before training a stage record (what
        it described is gone), after it an update that keeps the training's record."""
        radius_px = self.settings.consensus.radius * self.box
        info = ConsensusInfo(n_pickers=len(self.picker_names), picker_names=self.picker_names,
                             n_micrographs=n_micrographs, box=self.box,
                             coordinates_box=self.coordinates_box,
                             box_spacing_px=self.state.box_spacing_px,
                             box_from_network=self.box_from_network,
                             sampling_rate=self.sampling_rate,
                             radius_px=radius_px,
                             min_votes=self.min_votes,
                             **stages.table_counts(table, len(self.picker_names),
                                                   self.min_votes, radius_px),
                             nested_pickers=[pair.row() for pair in nested],
                             coverage=list(coverage))
        if self.trained:
            self.run.update_info(consensus=info)
        else:
            self.run.record_stage("consensus", info)

    # -- training -----------------------------------------------------------
    def n_and(self) -> int:
        return self.run.info().consensus.n_and if self.state.batches else 0

    def should_train(self, inputs_closed: bool) -> bool:
        """Whether to train now: not yet trained, and the AND set is large enough, the
        inputs are closed, or a reused model scores without training."""
        if self.trained or not self.state.batches:
            return False
        if inputs_closed or self.settings.model_use == run_folder.MODEL_SCORE_ONLY:
            return True
        consensus = self.run.info().consensus
        return consensus.n_and >= training_size(consensus.n_and / consensus.n_micrographs,
                                                self.settings.train_at)

    def train(self, progress=None, known: Optional[CoordinateTable] = None,
              known_particles: KnownParticles = KnownParticles()) -> None:
        """Train (or take the reused model) on everything so far, score it and split every
        batch so far: the ordinary stages, as a batch run on these micrographs, with the
        user's ``known`` non-particle coordinates (on the micrographs so far) and
        ``known_particles`` among the negatives."""
        ranking = self._fit(progress, known, known_particles)
        s, run = self.settings, self.run
        self.state.threshold = (ranking.auto_threshold if s.threshold is None
                                else s.threshold)
        self.state.trainings = [self.state.trained_at_and]
        skipped = run.info().extraction.skipped_micrographs
        for batch in self.state.batches:
            self._split_batch(batch)
            batch.model = 1
            batch.skipped_micrographs = [p for p in skipped if p in self._paths(batch)]
        self._save()

    def should_retrain(self) -> bool:
        """Whether the AND set has grown by the retraining factor since the last training."""
        factor = self.settings.retrain_factor
        return (self.trained and factor > 0
                and self.settings.model_use != run_folder.MODEL_SCORE_ONLY
                and self.n_and() >= factor * self.state.trained_at_and)

    def retrain(self, progress=None, known: Optional[CoordinateTable] = None,
                known_particles: KnownParticles = KnownParticles()) -> None:
        """Train a new network on everything so far for the batches still to come (known
        negatives as in :meth:`train`).  Every coordinate scored so far keeps its score, and
        the outputs what they were given; the threshold stays the run's."""
        run = self.run
        kept = {name: run.array(name) for name in (run.CNN_SCORES, run.SCORES)}
        logger.info("Retraining: the AND set has grown from %d to %d particles",
                    self.state.trained_at_and, self.n_and())
        self._fit(progress, known, known_particles)
        for name, values in kept.items():
            run.write_array(name, values)
        self.state.trainings.append(self.state.trained_at_and)
        self._save()

    def _fit(self, progress, known: Optional[CoordinateTable],
             known_particles: KnownParticles):
        """The ordinary stages on everything so far (negatives, extraction, the model,
        training, scoring, ranking) and the agreement model later batches are scored under;
        the ranking's record."""
        s, run = self.settings, self.run
        stages.negatives_stage(run, s.negatives, known)
        stages.extraction_stage(run, s.extraction, known_particles, progress=progress)
        stages.model_stage(run, s.model_use, s.model_source, s.model_name,
                           s.training.architecture)
        rounds = 1 if s.model_use == run_folder.MODEL_SCORE_ONLY else s.training.rounds
        if s.model_use != run_folder.MODEL_SCORE_ONLY:
            stages.training_rounds(run, s.training, gpus=s.gpus, progress=progress)
        stages.scoring_stage(run, rounds, rounds, seed=s.training.seed, gpus=s.gpus,
                             progress=progress, centring_search=s.centring_search)
        ranking = stages.ranking_stage(run, s.combine_votes)
        agreement = None
        if s.combine_votes:  # the ranking's fit again (deterministic), kept for later batches
            _, model = stages.agreement_posterior(run.consensus().voters,
                                                  run.array(run.CNN_SCORES),
                                                  run.rotational_evidence())
            agreement = {name: (value.tolist() if isinstance(value, np.ndarray) else value)
                         for name, value in dataclasses.asdict(model).items()}
        self.state.agreement = agreement
        self.state.trained_at_and = run.info().consensus.n_and
        return ranking

    def _agreement_model(self) -> Optional[AgreementModel]:
        data = self.state.agreement
        if data is None:
            return None
        arrays = {k: (np.asarray(v) if isinstance(v, list) else v) for k, v in data.items()}
        return AgreementModel(**arrays)

    def _paths(self, batch: StreamBatch) -> List[str]:
        names = set(batch.micrographs)
        return [m.path for m in self.run.micrographs().values() if m.name in names]

    # -- scoring a later batch ----------------------------------------------
    def _score_batch(self, batch: StreamBatch) -> None:
        """Extract, score and combine a batch's rows with the network and agreement model
        of the training; then split it."""
        run, s = self.run, self.settings
        table = run.consensus()
        rows = batch.rows
        sub = table.subset(rows)
        paths = {m.mic_id: m.path for m in run.micrographs().values()}
        stack_path = run.file("batch_%04d_particles.npy" % batch.number)
        stack = create_stack(stack_path, len(rows), s.extraction.network_size)
        report = extraction.extract_to_stack(pipeline.extraction_jobs(sub, paths), stack,
                                             self.box, s.extraction.invert,
                                             s.extraction.skip_bad_micrographs)
        stack.close()
        if report.skipped_micrographs:
            logger.warning("Batch %d: skipped unreadable micrographs %s", batch.number,
                           ", ".join(report.skipped_micrographs))
        batch.skipped_micrographs = list(report.skipped_micrographs)
        bad_ids = [i for i, p in paths.items() if p in report.skipped_micrographs]
        with open_stack(stack_path) as images:
            cnn = stages.score_boxes(run, run.file(run.MODEL), images, rows, s.centring_search,
                                     s.gpus, s.training.seed, skipped_mic_ids=bad_ids)
            bad = np.isin(sub.mic, bad_ids)
            cnn[bad] = np.nan
            arrays = [(run.CNN_SCORES, cnn)]
            rotational = run.info().extraction.rotational
            evidence = None
            if rotational is not None:  # the discriminant of the training, as the network
                evidence = rotational.discriminant().score_stack(images, np.arange(len(rows)))
                evidence[bad] = np.nan
                arrays.append((run.ROTATIONAL_LLR, evidence))
        model = self._agreement_model()
        final = (cnn if model is None else
                 posterior_given(model, sub.voters, stages.image_evidence(cnn, evidence)))
        final = np.where(np.isfinite(cnn), final, np.nan)
        for name, values in arrays + [(run.SCORES, final)]:
            previous = run.array(name)[:batch.first_row]
            run.write_array(name, np.concatenate([previous, values]))
        self._split_batch(batch)
        batch.model = len(self.state.trainings)

    def _split_batch(self, batch: StreamBatch) -> None:
        _, split = self.batch_split(batch)
        batch.scored = True
        batch.n_retained, batch.n_pruned = len(split.retained), len(split.pruned)

    def batch_split(self, batch: StreamBatch):
        """(the batch's rows of the table, their split at the run's threshold); the split's
        indices are positions in those rows."""
        table, scores = self.run.consensus(), self.run.scores()
        rows = batch.rows
        distance, margin = self.split_lengths_px()
        edges = (self.run.edge_distances(table.mic[rows], table.xy[rows]) if margin > 0
                 else None)
        return rows, split_scores(scores[rows], self.state.threshold, table.mic[rows],
                                  table.xy[rows], distance, edges, margin)

    def split_lengths_px(self) -> Tuple[float, float]:
        """(minimum distance, edge margin) in pixels of the box the stream works in."""
        return box_policy.split_lengths_px(self.run.info().consensus,
                                           self.settings.min_distance,
                                           self.settings.edge_margin)

    def unpublished(self) -> List[StreamBatch]:
        """The scored batches whose coordinates the front end has not handed out yet."""
        return [b for b in self.state.batches if b.scored and not b.published]

    def mark_published(self, batches: Sequence[StreamBatch]) -> None:
        """Record that ``batches`` are in the outputs, so that none is handed out twice."""
        for batch in batches:
            batch.published = True
        self._save()

    # -- the end ------------------------------------------------------------
    def close(self) -> Split:
        """The inputs closed and every batch is scored: the run's split record, the whole
        table's (the union of the batches'), and the stream marked closed."""
        if not self.trained:
            raise RunFolderError("%s: the stream closed before the network was trained"
                                 % self.run.path)
        split = stages.split_stage(self.run, self.state.threshold, *self.split_lengths_px())
        self.state.closed = True
        self._save()
        return split


def stream_summary(run: RunFolder) -> List[str]:
    """The summary's lines on a streaming run (none for a batch run)."""
    if not run.has(STREAM_FILE):
        return []
    with open(run.file(STREAM_FILE)) as handle:
        state = json.load(handle)
    batches = state["batches"]
    scored = [b for b in batches if b["scored"]]
    line = ("Streaming: %d batches of micrographs (%d micrographs), %d scored and %d handed "
            "out" % (len(batches), sum(len(b["micrographs"]) for b in batches), len(scored),
                     sum(b["published"] for b in batches)))
    trainings = state.get("trainings") or ([state["trained_at_and"]]
                                           if state["trained_at_and"] is not None else [])
    if not trainings:
        line += "; waiting for enough AND particles to train"
    elif len(trainings) == 1:
        line += ("; the network trained on the first %d AND particles scored every batch"
                 % trainings[0])
    else:
        scored_by = ["network %d (trained on %d AND particles): batches %s"
                     % (k, n, _ranges([b["number"] for b in batches if b.get("model") == k]))
                     for k, n in enumerate(trainings, 1)]
        line += "; scored by " + "; ".join(scored_by)
    line += "; inputs closed." if state["closed"] else "; inputs still open."
    if state.get("fitted_box"):
        line += (" The first batch's AND coordinates set the box of %d px every batch "
                 "works in." % state["fitted_box"])
    skipped = [m for b in batches for m in b["skipped_micrographs"]]
    lines = [line]
    if skipped:
        lines.append("Skipped unreadable micrographs in the stream: %s." % ", ".join(skipped))
    return lines


def _ranges(numbers: Sequence[int]) -> str:
    """1, 2, 3, 5 -> '1-3, 5' ('none' when empty)."""
    if not numbers:
        return "none"
    parts, start = [], numbers[0]
    for previous, current in zip(numbers, list(numbers[1:]) + [None]):
        if current != previous + 1:
            parts.append(str(start) if start == previous else "%d-%d" % (start, previous))
            start = current
    return ", ".join(parts)
