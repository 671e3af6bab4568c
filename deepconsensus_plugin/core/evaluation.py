"""How well the scores agree with what the user knows: known-good and known-bad picks.

A user who has picked a few hundred particles (and a few hundred pieces of
ice, carbon or empty background) by hand can check a run without ground truth
from elsewhere.  Each known coordinate is matched one to one
(:func:`.metrics.match_one_to_one`) to an OR coordinate on the same micrograph
within the consensus radius, the radius within which the pickers' own picks
are one particle; the matched OR coordinates are then labelled good or bad.
On them:

* **precision**: of the labelled coordinates retained, the share that are good;
* **recall**: of the good ones the pickers picked, the share retained;
* **ROC-AUC**: how well the scores rank good above bad, whatever the threshold.

Known coordinates no picker picked cannot be retained or pruned; they are
counted, not scored.  An OR coordinate matched by both a good and a bad one
is left out (the user's labels disagree there).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .metrics import match_one_to_one, roc_auc
from .pipeline import CoordinateTable


@dataclass(frozen=True)
class KnownLabels:
    """OR rows with a label from the user's sets (1 good, 0 bad), and what did not match."""

    rows: np.ndarray
    labels: np.ndarray
    n_good: int
    n_bad: int
    n_good_unpicked: int
    n_bad_unpicked: int
    n_conflicting: int


@dataclass(frozen=True)
class Agreement:
    """Precision and recall at one threshold and the threshold-free ROC-AUC (NaN where a
    class is missing)."""

    precision: float
    recall: float
    roc_auc: float


def _matched_rows(table: CoordinateTable, known: Optional[CoordinateTable],
                  radius: float) -> tuple[np.ndarray, int, int]:
    """(OR rows matched by ``known``, known coordinates, known coordinates unmatched)."""
    if known is None or len(known) == 0:
        return np.empty(0, dtype=np.int64), 0, 0
    ours = dict(table.per_micrograph())
    rows, unmatched = [], 0
    for mic, known_rows in known.per_micrograph():
        candidates = ours.get(mic, np.empty(0, dtype=np.int64))
        is_matched, found = match_one_to_one(table.xy[candidates], known.xy[known_rows], radius)
        rows.append(candidates[is_matched])
        unmatched += int((~found).sum())
    matched = np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)
    return matched.astype(np.int64), len(known), unmatched


def known_labels(table: CoordinateTable, good: Optional[CoordinateTable],
                 bad: Optional[CoordinateTable], radius: float) -> KnownLabels:
    """Label the OR ``table``'s rows that the known-good and known-bad coordinates (in the
    table's micrograph ids and pixels) match within ``radius`` px."""
    good_rows, n_good, good_unpicked = _matched_rows(table, good, radius)
    bad_rows, n_bad, bad_unpicked = _matched_rows(table, bad, radius)
    conflicting = np.intersect1d(good_rows, bad_rows)
    good_rows = np.setdiff1d(good_rows, conflicting)
    bad_rows = np.setdiff1d(bad_rows, conflicting)
    rows = np.concatenate([good_rows, bad_rows])
    labels = np.concatenate([np.ones(len(good_rows), np.int8), np.zeros(len(bad_rows), np.int8)])
    order = np.argsort(rows, kind="stable")
    return KnownLabels(rows=rows[order], labels=labels[order], n_good=n_good, n_bad=n_bad,
                       n_good_unpicked=good_unpicked, n_bad_unpicked=bad_unpicked,
                       n_conflicting=len(conflicting))


def agreement(labels: np.ndarray, scores: np.ndarray, retained: np.ndarray) -> Agreement:
    """Precision and recall of the ``retained`` decisions and ROC-AUC of the ``scores``, all
    on the labelled rows (arrays aligned with ``labels``); unscored rows (NaN) are left out."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    retained = np.asarray(retained, dtype=bool)
    scored = np.isfinite(scores)
    labels, scores, retained = labels[scored], scores[scored], retained[scored]
    kept = int(retained.sum())
    good = int(labels.sum())
    precision = float((labels & retained).sum() / kept) if kept and (~labels).any() \
        else float("nan")
    recall = float((labels & retained).sum() / good) if good else float("nan")
    return Agreement(precision=precision, recall=recall, roc_auc=roc_auc(labels, scores))
