"""A large run cut into jobs, one shard each: extraction by micrographs, scoring by particles.

Scipion's executors run the jobs in parallel threads or submit them to a cluster queue
(the command line's ``deepconsensus job``).  Each shard writes its own files under
``shards/`` and a record of the rows it covers; the merge checks that the shards cover
every row exactly once before it writes the run's files, so a shard that failed (or ran
with other parameters) is refused instead of leaving zeros.  The merged files and records
are those of the one-piece stages (:func:`.stages.extraction_stage`,
:func:`.stages.scoring_stage`), which share their recording with these.
"""
from __future__ import annotations

import logging
import os
import time
from typing import List, Mapping, Sequence, Tuple

import numpy as np

from . import extraction, pipeline
from .run_folder import ExtractionInfo, KnownParticles, RunFolder, RunFolderError
from .stack import boxes_per_chunk, create_stack, open_stack
from .stages import (SCORING_BATCH, ExtractionParams, add_known_particles, record_extraction,
                     record_scores, round_model, score_boxes)

logger = logging.getLogger(__name__)


def micrograph_shards(boxes_per_micrograph: Mapping[int, int], n_shards: int
                      ) -> List[List[int]]:
    """The micrograph ids (in id order) cut into ``n_shards`` consecutive groups holding
    about as many boxes each; a group may be empty when there are few micrographs."""
    if n_shards < 1:
        raise ValueError("the number of shards must be at least 1, got %d" % n_shards)
    ids = sorted(boxes_per_micrograph)
    cumulative = np.cumsum([boxes_per_micrograph[m] for m in ids])
    total = int(cumulative[-1]) if len(ids) else 0
    cuts = [0] + [int(np.searchsorted(cumulative, total * k / n_shards, side="right"))
                  for k in range(1, n_shards)] + [len(ids)]
    cuts = np.maximum.accumulate(cuts)
    return [ids[a:b] for a, b in zip(cuts[:-1], cuts[1:])]


def particle_shards(n_particles: int, n_shards: int, batch: int = SCORING_BATCH
                    ) -> List[Tuple[int, int]]:
    """``n_shards`` consecutive (start, stop) row ranges of a stack covering it exactly,
    cut on whole batches (some are empty for small stacks)."""
    if n_shards < 1:
        raise ValueError("the number of shards must be at least 1, got %d" % n_shards)
    n_batches = -(-n_particles // batch)
    bounds = np.minimum(np.round(np.linspace(0, n_batches, n_shards + 1)).astype(np.int64)
                        * batch, n_particles)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _check_shard(shard: int, n_shards: int) -> None:
    if not 1 <= shard <= n_shards:
        raise ValueError("shard %d of %d: shards are numbered from 1 to %d"
                         % (shard, n_shards, n_shards))


def _extraction_shard_names(shard: int, n_shards: int) -> Tuple[str, str, str]:
    name = RunFolder.shard_name
    return (name("extract", shard, n_shards, "_or.npy"),
            name("extract", shard, n_shards, "_neg.npy"),
            name("extract", shard, n_shards, ".npz"))


def extraction_shard_stage(run: RunFolder, shard: int, n_shards: int,
                           params: ExtractionParams = ExtractionParams()) -> int:
    """Extract the OR and negative boxes of shard ``shard`` (from 1) of ``n_shards``
    groups of micrographs into the shard's own stacks; the number of boxes extracted.

    The shard's record (``shards/extract_KofN.npz``: the table rows it holds, its report
    and parameters) is written last, so a shard that stopped half-way has none and
    :func:`merge_extraction_stage` refuses it."""
    _check_shard(shard, n_shards)
    consensus = run.section("consensus")
    run.section("negatives")
    paths = {m.mic_id: m.path for m in run.micrographs().values()}
    table, negatives = run.consensus(), run.negatives()
    boxes = {m: 0 for m in paths}
    for mic in np.concatenate([table.mic, negatives.mic]):
        boxes[int(mic)] = boxes.get(int(mic), 0) + 1
    mine = micrograph_shards(boxes, n_shards)[shard - 1]
    or_name, neg_name, record = _extraction_shard_names(shard, n_shards)
    if run.has(record):
        os.unlink(run.file(record))
    os.makedirs(run.file(run.SHARDS), exist_ok=True)
    size = params.network_size
    reports, rows = [], []
    for source, name in ((table, or_name), (negatives, neg_name)):
        picked = np.flatnonzero(np.isin(source.mic, mine))
        stack = create_stack(run.file(name), len(picked), size)
        try:
            reports.append(extraction.extract_to_stack(
                pipeline.extraction_jobs(source.subset(picked), paths), stack,
                consensus.box, params.invert, params.skip_bad_micrographs))
            stack.flush()
        finally:
            stack.close()
        rows.append(picked)
    skipped = sorted(set(reports[0].skipped_micrographs) | set(reports[1].skipped_micrographs))
    run.write_arrays(record, or_rows=rows[0], neg_rows=rows[1], micrographs=np.array(mine),
                     network_size=size, invert=params.invert,
                     n_crossing_border=reports[0].n_crossing_border,
                     skipped=np.array(skipped, dtype=str),
                     seconds=reports[0].seconds + reports[1].seconds)
    logger.info("Shard %d of %d: %d micrographs, %d OR and %d negative boxes", shard,
                n_shards, len(mine), len(rows[0]), len(rows[1]))
    return len(rows[0]) + len(rows[1])


def _rows_exactly_once(rows: Sequence[np.ndarray], n: int, what: str, run: RunFolder) -> None:
    """Refuse shards that leave a row out or hold one twice (the merge must be exact)."""
    counts = np.bincount(np.concatenate(rows).astype(np.int64), minlength=n) if rows else \
        np.zeros(n, dtype=np.int64)
    if len(counts) > n:
        raise RunFolderError("%s: the shards hold %s rows beyond the %d of the run: they were "
                             "made from another consensus; run extraction again"
                             % (run.path, what, n))
    missing, repeated = np.flatnonzero(counts == 0), np.flatnonzero(counts > 1)
    if len(missing) or len(repeated):
        raise RunFolderError("%s: the shards miss %d and repeat %d of the %d %s rows (e.g. "
                             "row %d): run the extraction shards again"
                             % (run.path, len(missing), len(repeated), n, what,
                                (list(missing) + list(repeated))[0]))


def _copy_rows(source, target, rows: np.ndarray) -> None:
    """Row i of the ``source`` stack to row ``rows[i]`` of ``target`` (rows increasing),
    a chunk at a time (:func:`.stack.boxes_per_chunk`: a fixed count of rows grew to 64 MB
    a read at a 64 px network input) and one write per run of consecutive rows."""
    chunk = boxes_per_chunk(source.size)
    for first in range(0, len(rows), chunk):
        block = source[first:first + chunk]
        where = rows[first:first + chunk]
        breaks = np.flatnonzero(np.diff(where) != 1) + 1
        for run in np.split(np.arange(len(where)), breaks):
            start = int(where[run[0]])
            target[start:start + len(run)] = block[run]


def merge_extraction_stage(run: RunFolder, n_shards: int,
                           params: ExtractionParams = ExtractionParams(),
                           known_particles: KnownParticles = KnownParticles()) -> ExtractionInfo:
    """The run's two stacks from the ``n_shards`` extraction shards (and the known
    non-particle images after the negatives), as :func:`.stages.extraction_stage` writes
    them."""
    consensus = run.section("consensus")
    paths = {m.mic_id: m.path for m in run.micrographs().values()}
    table, negatives = run.consensus(), run.negatives()
    records = []
    for shard in range(1, n_shards + 1):
        or_name, neg_name, record = _extraction_shard_names(shard, n_shards)
        if not run.has(record, or_name, neg_name):
            raise RunFolderError("%s: extraction shard %d of %d has not finished: run it again"
                                 % (run.path, shard, n_shards))
        data = run.arrays(record)
        if int(data["network_size"]) != params.network_size or \
                bool(data["invert"]) != params.invert:
            raise RunFolderError("%s: extraction shard %d of %d was made with other settings "
                                 "(network size %d, inverted %s): run it again"
                                 % (run.path, shard, n_shards, int(data["network_size"]),
                                    bool(data["invert"])))
        records.append((or_name, neg_name, data))
    _rows_exactly_once([d["or_rows"] for _, _, d in records], len(table), "OR", run)
    _rows_exactly_once([d["neg_rows"] for _, _, d in records], len(negatives), "negative", run)
    n_user = len(known_particles.items)
    size = params.network_size
    or_stack = create_stack(run.file(run.OR_PARTICLES), len(table), size)
    neg_stack = create_stack(run.file(run.NEG_PARTICLES), len(negatives) + n_user, size)
    try:
        for or_name, neg_name, data in records:
            for name, target, rows in ((or_name, or_stack, data["or_rows"]),
                                       (neg_name, neg_stack, data["neg_rows"])):
                with open_stack(run.file(name)) as source:
                    _copy_rows(source, target, rows)
        or_stack.close()  # complete on disk: the known particles' contrast is compared with it
        inverted = add_known_particles(run, neg_stack, len(negatives), known_particles,
                                       consensus, params)
    finally:
        or_stack.close()
        neg_stack.close()
    reports = [extraction.ExtractionReport(seconds=float(data["seconds"]),
                                           skipped_micrographs=[str(p) for p in data["skipped"]])
               for _, _, data in records]
    return record_extraction(run, params, paths, n_user,
                             sum(int(data["n_crossing_border"]) for _, _, data in records),
                             reports, inverted)


class _Rows:
    """Rows ``start:stop`` of a stack, read like a stack (what scoring needs)."""

    def __init__(self, stack, start: int, stop: int):
        self.stack, self.start, self.stop = stack, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, key: slice) -> np.ndarray:
        first, last, _ = key.indices(len(self))
        return self.stack[self.start + first:self.start + max(first, last)]


def _scoring_shard_name(round_number: int, rounds: int, shard: int, n_shards: int) -> str:
    return RunFolder.shard_name("score_round%dof%d" % (round_number, rounds), shard, n_shards,
                                ".npz")


def scoring_shard_stage(run: RunFolder, round_number: int, rounds: int, shard: int,
                        n_shards: int, seed: int = 0, gpus: Sequence[int] = (),
                        centring_search: float = 0.0) -> int:
    """Score shard ``shard`` (from 1) of ``n_shards`` consecutive parts of the OR stack
    with the round's network (as :func:`.stages.scoring_stage` does) into
    ``shards/score_roundRofT_KofN.npz``; the rows scored."""
    _check_shard(shard, n_shards)
    run.section("extraction")
    model = round_model(run, round_number, rounds)
    name = _scoring_shard_name(round_number, rounds, shard, n_shards)
    with open_stack(run.file(run.OR_PARTICLES)) as stack:
        start, stop = particle_shards(len(stack), n_shards)[shard - 1]
        began = time.perf_counter()
        scores = score_boxes(run, model, _Rows(stack, start, stop), np.arange(start, stop),
                             centring_search, gpus, seed)
    run.write_arrays(name, start=start, stop=stop, n=len(stack), scores=scores,
                     centring_search=centring_search, seconds=time.perf_counter() - began)
    logger.info("Scoring shard %d of %d: rows %d to %d", shard, n_shards, start, stop - 1)
    return stop - start


def merge_scores_stage(run: RunFolder, round_number: int, rounds: int,
                       n_shards: int) -> np.ndarray:
    """The round's scores from its ``n_shards`` scoring shards, refused unless they cover
    the OR stack exactly once with one setting; recorded as :func:`.stages.scoring_stage`
    records them."""
    n = len(run.consensus())
    parts, seconds = [], 0.0
    for shard in range(1, n_shards + 1):
        name = _scoring_shard_name(round_number, rounds, shard, n_shards)
        if not run.has(name):
            raise RunFolderError("%s: scoring shard %d of %d (round %d) has not finished: run "
                                 "it again" % (run.path, shard, n_shards, round_number))
        data = run.arrays(name)
        if "centring_search" not in data:
            raise RunFolderError("%s: scoring shard %d of %d (round %d) was written by an "
                                 "earlier version of Deep Consensus: run it again"
                                 % (run.path, shard, n_shards, round_number))
        if int(data["n"]) != n or len(data["scores"]) != int(data["stop"]) - int(data["start"]):
            raise RunFolderError("%s: scoring shard %d of %d (round %d) scored another stack "
                                 "(%d rows, the run has %d): run it again"
                                 % (run.path, shard, n_shards, round_number, int(data["n"]), n))
        parts.append(data)
        seconds += float(data["seconds"])
    searches = sorted({float(d["centring_search"]) for d in parts})
    if len(searches) > 1:
        raise RunFolderError("%s: the scoring shards of round %d searched for the best-centred "
                             "box at different distances (%s of the box): run them again"
                             % (run.path, round_number, ", ".join("%g" % v for v in searches)))
    _rows_exactly_once([np.arange(int(d["start"]), int(d["stop"])) for d in parts], n, "OR",
                       run)
    scores = np.empty(n, dtype=np.float64)
    for data in parts:
        scores[int(data["start"]):int(data["stop"])] = data["scores"]
    return record_scores(run, round_number, rounds, scores, seconds,
                         searches[0] if searches else 0.0)
