"""The files of one Deep Consensus run, and the typed record of what its stages found.

A run folder (Scipion's ``extra/`` folder of a deep-consensus run, or the
``--out`` folder of the ``deepconsensus`` command) holds everything the
stages pass to each other: the consensus table, the negatives, the particle
stacks, each round's model, history and scores, the final scores, the
micrographs and ``info.json``.  :class:`RunFolder` is the only code that
names these files, writes them (atomically: a temporary file moved into
place, so an interrupted stage leaves the previous file or none) and reads
them back, so that any stage can start from a folder a previous one filled.

``info.json`` holds a :class:`RunInfo`: one typed section per stage (counts,
parameters, timings) and a schema version.  Stages replace their own
section; nothing else writes the file.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .atomic import atomic_path
from .pipeline import CoordinateTable
from .radial import RotationalDiscriminant
from .selection import MicrographFrame

SCHEMA_VERSION = 2
"""Version of ``info.json``'s layout; a folder written with another one is refused."""


class RunFolderError(ValueError):
    """A run folder that lacks what a stage needs, or holds files of another layout."""


@dataclass(frozen=True)
class Micrograph:
    """A micrograph of a run: ``mic_id`` its index in the tables, ``name`` the name inputs
    are matched by, ``path`` its file, ``label`` how outputs name it (Scipion's micName,
    RELION's ``_rlnMicrographName`` as the micrographs STAR file spells it)."""

    mic_id: int
    name: str
    path: str
    label: str


@dataclass(frozen=True)
class KnownParticles:
    """Images of non-particles the user gives (e.g. the particles of discarded 2D classes):
    (1-based index, file) of each, and their pixel size (Å; None: the run's).  Extraction
    cuts each to the run's field of view at that pixel size before it resizes it
    (:func:`.stages.field_in_pixels`), so that it shows ice and carbon at the scale of the
    run's boxes whatever box it was extracted with."""

    items: Sequence[Tuple[int, str]] = ()
    sampling_rate: Optional[float] = None


# ------------------------------------------------------------------ stage records

@dataclass
class PickerCoverage:
    """One input's picks against the micrographs, as the consensus found them: what
    points to coordinates of other micrographs, another frame or a picker that did not
    run on some micrographs, none of which the consensus can tell from the picks alone.
    Each count comes with the name of the first micrograph (in the run's order) where it
    happens; "" where it never does."""

    outside: int = 0
    """Picks whose centre lies outside their micrograph's pixels: no particle image can
    be cut there."""
    outside_micrograph: str = ""
    unpicked: int = 0
    """Micrographs on which this input has no pick while another input has: there its
    missing vote counts against every other input's pick."""
    unpicked_micrograph: str = ""

    def plus(self, later: "PickerCoverage") -> "PickerCoverage":
        """The coverage of this batch of micrographs and a ``later`` one together."""
        return PickerCoverage(self.outside + later.outside,
                              self.outside_micrograph or later.outside_micrograph,
                              self.unpicked + later.unpicked,
                              self.unpicked_micrograph or later.unpicked_micrograph)


@dataclass
class ConsensusInfo:
    n_pickers: int
    picker_names: List[str]
    n_micrographs: int
    box: int
    sampling_rate: Optional[float]
    radius_px: float
    min_votes: int
    n_or: int
    n_and: int
    votes_histogram: List[int]
    picker_counts: List[int]
    ignored_micrograph_entries: int = 0
    other_box_sizes: List[int] = field(default_factory=list)
    rescaled_sets: List[str] = field(default_factory=list)
    seconds: float = 0.0
    coordinates_box: Optional[int] = None
    """The input coordinates' box where the run worked in another (``box``, from a given
    particle diameter, a reused network or the AND spacing); None: the same."""
    box_from_network: bool = False
    """``box`` is the reused network's field of view (:func:`.box_policy.network_box`)."""
    box_spacing_px: Optional[float] = None
    """The AND coordinates' spacing (in the coordinates' box) that set ``box``
    (:func:`.box_policy.spacing_box`); None: the box is the coordinates' own or the given
    diameter's."""
    and_spacing_px: Optional[float] = None
    """The median distance between an AND coordinate and its nearest AND neighbour on the
    same micrograph (:func:`.pipeline.median_spacing`); None: too few to tell."""
    confirmed_share: List[float] = field(default_factory=list)
    """Per picker, the share of its picks another picker picked too, and beside it
    (``agreement_over_chance``) how many times more often than chance its best-agreeing
    partner picked them (:func:`.pipeline.agreement_shares`); empty in records made
    before they were kept."""
    agreement_over_chance: List[Optional[float]] = field(default_factory=list)
    nested_pickers: List[List[int]] = field(default_factory=list)
    """Pairs of inputs of which one holds nearly all the other's picks at the same
    positions, as ``[first, second, shared, n_first, n_second]``
    (:class:`.pipeline.SharedPicks`): one picker and a subset of its own output."""
    coverage: List[PickerCoverage] = field(default_factory=list)
    """Per picker, its picks outside their micrographs and the micrographs it left
    unpicked (:func:`.stages.picker_coverage`); empty in records made before it was
    kept."""

    @property
    def output_box(self) -> int:
        """The box the outputs carry: the input coordinates'."""
        return self.box if self.coordinates_box is None else self.coordinates_box


@dataclass
class NegativesInfo:
    n_random: int
    n_offcentre: int
    n_user_coordinates: int
    seed: int
    seconds: float = 0.0


@dataclass
class RotationalInfo:
    """The rotational-average discriminant fitted after extraction (:mod:`.radial`): its
    numbers, so that a streaming run scores later batches with it, and what it was fitted
    on."""

    power: List[float]
    weights: List[float]
    offset: float
    separation: float
    n_particles: int
    n_background: int
    seconds: float

    @classmethod
    def of(cls, discriminant: RotationalDiscriminant, n_particles: int, n_background: int,
           seconds: float) -> "RotationalInfo":
        return cls(discriminant.power.tolist(), discriminant.weights.tolist(),
                   discriminant.offset, discriminant.separation, n_particles, n_background,
                   seconds)

    def discriminant(self) -> RotationalDiscriminant:
        return RotationalDiscriminant(np.asarray(self.power, dtype=np.float64),
                                      np.asarray(self.weights, dtype=np.float64),
                                      self.offset, self.separation)


@dataclass
class ExtractionInfo:
    network_size: int
    invert: bool
    n_crossing_border: int
    skipped_micrographs: List[str]
    skipped_mic_ids: List[int]
    n_user_particles: int
    seconds: float
    rotational: Optional[RotationalInfo] = None
    """None where the run does not use the boxes' rotational averages."""
    known_particles_inverted: bool = False
    """Whether the known negative particles came with the opposite contrast of the run's
    boxes and were inverted to match (:func:`.stages.known_particles_inverted`)."""


MODEL_NEW = "new"
"""Train a new network (the default)."""
MODEL_FINE_TUNE = "fine-tune"
"""Start the training rounds from a reused model's weights."""
MODEL_SCORE_ONLY = "score-only"
"""Score with a reused model as it is: no training round."""
MODEL_USES = (MODEL_NEW, MODEL_FINE_TUNE, MODEL_SCORE_ONLY)


@dataclass
class ModelInfo:
    """Where the run's network came from: trained here (``use`` :data:`MODEL_NEW`), or a reused
    model (``source``: how the user named it, ``path``: its file) fine-tuned on this data
    (:data:`MODEL_FINE_TUNE`) or scoring without training (:data:`MODEL_SCORE_ONLY`), and
    that model's facts."""

    use: str
    source: Optional[str] = None
    path: Optional[str] = None
    architecture: Optional[str] = None
    trained_box: Optional[int] = None
    trained_sampling_rate: Optional[float] = None


@dataclass
class RoundInfo:
    round: int
    epochs: int
    val_accuracy: float
    val_loss: float
    seconds: float
    n_positives: int
    n_hard_negatives: int
    scoring_seconds: Optional[float] = None
    centring_search: float = 0.0
    """How far around each pick its scoring looked for the best-centred box (share of the
    box; 0: the pick's own box only)."""
    epoch_size: Optional[int] = None
    """The boxes each epoch showed the network (None: a folder from before it was
    recorded)."""


@dataclass
class TrainingInfo:
    architecture: str
    n_rounds: int
    rounds: List[RoundInfo] = field(default_factory=list)

    @property
    def last(self) -> Optional[RoundInfo]:
        return self.rounds[-1] if self.rounds else None

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.rounds)


@dataclass
class AgreementInfo:
    sensitivity: List[float]
    false_pick_rate: List[float]
    prior: float


@dataclass
class RankingInfo:
    auto_threshold: Optional[float]
    agreement: Optional[AgreementInfo] = None


@dataclass
class SplitInfo:
    threshold: float
    threshold_mode: str
    min_distance_px: float
    n_retained: int
    n_pruned: int
    n_duplicates: int
    n_unscored: int = 0
    edge_margin_px: float = 0.0
    n_at_edge: int = 0


@dataclass
class EvaluationInfo:
    """The scores against the user's known-good and known-bad picks (:mod:`.evaluation`),
    at the split's threshold; None where undefined (no bad picks: no precision)."""

    n_good: int
    n_bad: int
    n_good_unpicked: int
    n_bad_unpicked: int
    n_conflicting: int
    n_labelled: int
    threshold: float
    precision: Optional[float]
    recall: Optional[float]
    roc_auc: Optional[float]


@dataclass
class MethodInfo:
    """The method a front end chose (:class:`.stages.MethodOptions`), so that later
    stages run from another command (``deepconsensus score``) follow it."""

    method: str
    offcentre_negatives: bool
    self_training: bool
    combine_votes: bool
    centring_search: float = 0.0


@dataclass
class ExportInfo:
    """How the command line writes RELION files for this run: the micrographs' optics, the
    box, the micrographs STAR file the picks belong to (None for a glob), and the files
    last written."""

    pixel_size: float
    voltage: Optional[float]
    spherical_aberration: Optional[float]
    amplitude_contrast: Optional[float]
    box: int
    micrographs_star: Optional[str] = None
    files: List[str] = field(default_factory=list)


_SECTIONS = {"method": MethodInfo, "export": ExportInfo, "consensus": ConsensusInfo,
             "negatives": NegativesInfo, "extraction": ExtractionInfo,
             "model": ModelInfo, "training": TrainingInfo, "ranking": RankingInfo,
             "split": SplitInfo,
             "evaluation": EvaluationInfo}

STAGE_ORDER = ("consensus", "negatives", "extraction", "model", "training", "ranking", "split",
               "evaluation")
"""The stages' sections in pipeline order: a stage that runs again makes the later ones'
records stale (:meth:`RunFolder.record_stage`)."""


@dataclass
class RunInfo:
    """What each stage of a run found; a section is None until its stage has run."""

    schema_version: int = SCHEMA_VERSION
    method: Optional[MethodInfo] = None
    export: Optional[ExportInfo] = None
    consensus: Optional[ConsensusInfo] = None
    negatives: Optional[NegativesInfo] = None
    extraction: Optional[ExtractionInfo] = None
    model: Optional[ModelInfo] = None
    training: Optional[TrainingInfo] = None
    ranking: Optional[RankingInfo] = None
    split: Optional[SplitInfo] = None
    evaluation: Optional[EvaluationInfo] = None

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any], source: str = "info.json") -> "RunInfo":
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise RunFolderError("%s: run record of schema version %s, this version of Deep "
                                 "Consensus reads version %d; run the stages again"
                                 % (source, version, SCHEMA_VERSION))
        info = cls()
        for name, kind in _SECTIONS.items():
            section = data.get(name)
            if section is None:
                continue
            values = dict(section)
            if kind is ConsensusInfo:
                values["coverage"] = [PickerCoverage(**c) for c in values.get("coverage", [])]
            if kind is TrainingInfo:
                values["rounds"] = [RoundInfo(**r) for r in values.get("rounds", [])]
            if kind is ExtractionInfo and values.get("rotational") is not None:
                values["rotational"] = RotationalInfo(**values["rotational"])
            if kind is RankingInfo and values.get("agreement") is not None:
                values["agreement"] = AgreementInfo(**values["agreement"])
            try:
                setattr(info, name, kind(**values))
            except TypeError as error:
                raise RunFolderError("%s: section %r does not match this version (%s)"
                                     % (source, name, error)) from error
        return info


# ------------------------------------------------------------------ the folder

class RunFolder:
    """The files of one run in ``path``; every stage reads and writes them through here."""

    CONSENSUS = "consensus.npz"
    NEGATIVES = "negatives.npz"
    MICROGRAPHS = "micrographs.json"
    INFO = "info.json"
    OR_PARTICLES = "or_particles.npy"
    NEG_PARTICLES = "neg_particles.npy"
    MODEL = "model.keras"
    REUSED_MODEL = "reused_model.keras"
    """A reused model's copy, which fine-tuning starts from (the source may move or go)."""
    HISTORY = "history.csv"
    CNN_SCORES = "cnn_scores.npy"
    ROTATIONAL_LLR = "rotational_llr.npy"
    SCORES = "scores.npy"
    RETAINED_STAR = "retained.star"
    PRUNED_STAR = "pruned.star"
    COORDINATES = "coordinates"
    PICKS_CSV = "picks.csv"
    KNOWN_LABELS = "known_labels.npy"
    """(OR row, 1 good / 0 bad) of the OR coordinates the user's known picks matched."""
    SHARDS = "shards"
    ENVIRONMENT = "environment.json"
    KNOWN_PARTICLES = "known_particles.json"
    FRAMES = "micrograph_frames.json"
    """mic_id -> (rows, columns, padded rows at low and high y, padded columns at low and
    high x) of the micrographs (:class:`.selection.MicrographFrame`): what the edge rule
    needs, kept so that a viewer or a new threshold reads no micrograph."""
    SHAPES = "micrograph_shapes.json"
    """The record of runs made before the padded borders were measured: mic_id -> (rows,
    columns).  Read as frames without padding, so that such a run keeps the split it made."""

    #: What a new threshold needs: the run got to its final scores.
    SCORED = (CONSENSUS, SCORES, MICROGRAPHS, INFO)

    def __init__(self, path: str):
        self.path = os.fspath(path)

    def __repr__(self) -> str:
        return "RunFolder(%r)" % self.path

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @staticmethod
    def round_name(name: str, round_number: int, rounds: int) -> str:
        """A round's file name; the last round's is the run's (model.keras, history.csv...),
        earlier ones are ``model_round1.keras`` etc."""
        if round_number == rounds:
            return name
        root, ext = os.path.splitext(name)
        return "%s_round%d%s" % (root, round_number, ext)

    def round_file(self, name: str, round_number: int, rounds: int) -> str:
        return self.file(self.round_name(name, round_number, rounds))

    def has(self, *names: str) -> bool:
        return all(os.path.exists(self.file(name)) for name in names)

    def require(self, *names: str, stage: str = "this stage") -> None:
        missing = [name for name in names if not os.path.exists(self.file(name))]
        if missing:
            raise RunFolderError("%s lacks %s, which %s needs: run the stages before it first"
                                 % (self.path, ", ".join(missing), stage))

    def is_scored(self) -> bool:
        """Whether the run got to its final scores, with a record this version reads."""
        if not self.has(*self.SCORED):
            return False
        try:
            return self.info().ranking is not None
        except RunFolderError:
            return False

    # -- writing -----------------------------------------------------------
    @classmethod
    def shard_name(cls, kind: str, shard: int, n_shards: int, suffix: str) -> str:
        """The file of one shard (one job's share of a stage) under ``shards/``: e.g.
        ``shards/extract_2of4_or.npy``; ``shard`` counts from 1."""
        return os.path.join(cls.SHARDS, "%s_%dof%d%s" % (kind, shard, n_shards, suffix))

    def _writing(self, name: str, suffix: str = ".tmp"):
        """A temporary path that becomes the folder's file ``name`` (:func:`.atomic_path`)."""
        return atomic_path(self.file(name), suffix)

    def write_json(self, name: str, data: Any) -> None:
        with self._writing(name) as temporary, open(temporary, "w") as handle:
            json.dump(data, handle, indent=1)

    def write_array(self, name: str, values: np.ndarray) -> None:
        with self._writing(name, ".npy") as temporary:
            np.save(temporary, values)

    def write_table(self, name: str, table: CoordinateTable) -> None:
        with self._writing(name, ".npz") as temporary:
            table.save(temporary)

    def copy_in(self, source: str, name: str) -> None:
        """Copy the file ``source`` into the folder as ``name``."""
        with self._writing(name, os.path.splitext(name)[1]) as temporary:
            shutil.copyfile(source, temporary)

    def write_arrays(self, name: str, **arrays: np.ndarray) -> None:
        """Several named arrays in one ``.npz`` file (a shard's rows and report)."""
        with self._writing(name, ".npz") as temporary:
            np.savez(temporary, **arrays)

    def write_known_particles(self, known: KnownParticles) -> None:
        self.write_json(self.KNOWN_PARTICLES, {"items": [list(item) for item in known.items],
                                               "sampling_rate": known.sampling_rate})

    def known_particles(self) -> KnownParticles:
        """The known non-particle images written for the extraction (none if none were)."""
        if not self.has(self.KNOWN_PARTICLES):
            return KnownParticles()
        with open(self.file(self.KNOWN_PARTICLES)) as handle:
            record = json.load(handle)
        return KnownParticles(items=[(int(index), str(path)) for index, path in record["items"]],
                              sampling_rate=record["sampling_rate"])

    def write_micrographs(self, micrographs: List[Micrograph]) -> None:
        self.write_json(self.MICROGRAPHS, [dataclasses.asdict(m) for m in micrographs])

    def write_info(self, info: RunInfo) -> None:
        self.write_json(self.INFO, info.to_dict())

    def update_info(self, **sections: Any) -> RunInfo:
        """Replace the given sections of the run record (``consensus=ConsensusInfo(...)``)."""
        info = self.info()
        for name, value in sections.items():
            if name not in _SECTIONS:
                raise KeyError("no run record section %r" % name)
            setattr(info, name, value)
        self.write_info(info)
        return info

    def record_stage(self, name: str, section: Any) -> RunInfo:
        """Record what stage ``name`` found and forget the later stages' records, which
        described files made from the previous result."""
        info = self.info()
        setattr(info, name, section)
        for later in STAGE_ORDER[STAGE_ORDER.index(name) + 1:]:
            setattr(info, later, None)
        self.write_info(info)
        return info

    # -- reading -----------------------------------------------------------
    def info(self) -> RunInfo:
        """The run record (empty before the first stage)."""
        if not self.has(self.INFO):
            return RunInfo()
        with open(self.file(self.INFO)) as handle:
            return RunInfo.from_dict(json.load(handle), self.file(self.INFO))

    def section(self, name: str) -> Any:
        """The record of stage ``name``, refused where that stage has not run (or a later
        run of an earlier stage forgot it): what a stage reads of the ones before it."""
        section = getattr(self.info(), name)
        if section is None:
            raise RunFolderError("%s has no %s results: run that stage first" % (self.path, name))
        return section

    def micrographs(self) -> Dict[int, Micrograph]:
        """mic_id -> :class:`Micrograph` of the run's micrographs."""
        self.require(self.MICROGRAPHS, stage="reading the micrographs")
        with open(self.file(self.MICROGRAPHS)) as handle:
            records = [Micrograph(**m) for m in json.load(handle)]
        return {m.mic_id: m for m in records}

    def micrograph_frames(self, base: Optional[str] = None) -> Dict[int, MicrographFrame]:
        """mic_id -> :class:`.selection.MicrographFrame` of the run's micrographs that can
        be read.

        Measured from the files the first time (:func:`.extraction.micrograph_frame`
        reads the strips along the edges) and kept in :attr:`FRAMES`; micrographs added
        later (a streaming run's) are measured when first asked for.  A run that kept
        only :attr:`SHAPES` (made before the padding was measured) reads them as frames
        without padding.  ``base`` is the folder relative micrograph paths start from
        (default: the working directory).  An unreadable micrograph is left out and tried
        again next time.
        """
        from .extraction import MicrographError, micrograph_frame

        frames: Dict[int, MicrographFrame] = {}
        record = self.FRAMES if self.has(self.FRAMES) or not self.has(self.SHAPES) \
            else self.SHAPES
        if self.has(record):
            with open(self.file(record)) as handle:
                frames = {int(k): MicrographFrame(*(int(n) for n in v))
                          for k, v in json.load(handle).items()}
        missing = [m for m in self.micrographs().values() if m.mic_id not in frames]
        found = 0
        for mic in missing:
            path = mic.path if base is None else os.path.join(base, mic.path)
            try:
                frames[mic.mic_id] = micrograph_frame(path)
                found += 1
            except MicrographError:
                continue
        if found:
            self.write_json(self.FRAMES, {str(k): list(v) for k, v in sorted(frames.items())})
        return frames

    def edge_distances(self, mic: np.ndarray, xy: np.ndarray,
                       base: Optional[str] = None) -> np.ndarray:
        """Each coordinate's (micrograph id ``mic``, centre ``xy``) distance in px to the
        edge of its micrograph's data (infinity where the micrograph cannot be read);
        ``base`` as in :meth:`micrograph_frames`."""
        from .selection import edge_distances

        return edge_distances(mic, xy, self.micrograph_frames(base))

    def table(self, name: str = CONSENSUS) -> CoordinateTable:
        self.require(name, stage="reading %s" % name)
        return CoordinateTable.load(self.file(name))

    def consensus(self) -> CoordinateTable:
        return self.table(self.CONSENSUS)

    def negatives(self) -> CoordinateTable:
        return self.table(self.NEGATIVES)

    def array(self, name: str) -> np.ndarray:
        self.require(name, stage="reading %s" % name)
        return np.load(self.file(name))

    def arrays(self, name: str) -> Dict[str, np.ndarray]:
        """The arrays of a ``.npz`` file written by :meth:`write_arrays`."""
        self.require(name, stage="reading %s" % name)
        with np.load(self.file(name)) as data:
            return {key: data[key] for key in data.files}

    def environment(self) -> Optional[Dict[str, Any]]:
        """What the job environment reported (:func:`.runtime.environment_report`), if it ran."""
        if not self.has(self.ENVIRONMENT):
            return None
        with open(self.file(self.ENVIRONMENT)) as handle:
            return json.load(handle)

    def scores(self) -> np.ndarray:
        return self.array(self.SCORES)

    def rotational_evidence(self) -> Optional[np.ndarray]:
        """Each OR box's rotational-average log-likelihood ratio (:mod:`.radial`), or None
        where the run's extraction fitted no discriminant."""
        extracted = self.info().extraction
        if extracted is None or extracted.rotational is None:
            return None
        return self.array(self.ROTATIONAL_LLR)
