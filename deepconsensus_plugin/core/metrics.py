"""Accuracy of a coordinate set, or of scores, against ground-truth particle centres.

Three ways of counting a coordinate set against labelled centres, each
within a match radius (a quarter of the particle diameter):

* **one-to-one** (:func:`match_one_to_one`, the primary figure, as every
  detection benchmark counts): each ground-truth centre matches at most one
  coordinate and each coordinate at most one centre, closest pairs first; a
  second pick of the same particle is a false positive.  A particle present
  twice in a refinement sits in both half-sets and inflates the FSC, so a set
  that holds duplicates must not score as if it did not.
* **lenient** (:func:`match_to_truth`): a coordinate is a true positive when
  any centre lies within the radius; recall is the share of centres with a
  coordinate within it.  Duplicates all count as true positives.
* **labels audited** (:func:`agreed_unlabelled`, :func:`audited_exclusion`):
  one-to-one, but unmatched coordinates near a place that two or more
  pickers agree on and the labels lack are left out of precision, an
  allowance for particles missing from curated labels.

Threshold-free measures (ROC-AUC, PR-AUC) rank the scores of a set's
coordinates against per-coordinate labels.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping, Optional

import numpy as np
from scipy.spatial import cKDTree
from scipy.stats import rankdata


@dataclass(frozen=True)
class PickingMetrics:
    n: int
    n_truth: int
    precision: float
    recall: float
    f1: float
    mcc: Optional[float] = None
    accuracy: Optional[float] = None

    def as_dict(self) -> dict:
        return asdict(self)


def match_to_truth(xy: np.ndarray, truth: np.ndarray,
                   radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(is each coordinate within radius of a truth centre, is each truth centre found)."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1, 2)
    if len(xy) == 0 or len(truth) == 0:
        return np.zeros(len(xy), dtype=bool), np.zeros(len(truth), dtype=bool)
    dist_xy, _ = cKDTree(truth).query(xy, distance_upper_bound=radius)
    dist_truth, _ = cKDTree(xy).query(truth, distance_upper_bound=radius)
    return np.isfinite(dist_xy), np.isfinite(dist_truth)


def match_one_to_one(xy: np.ndarray, truth: np.ndarray,
                     radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(is each coordinate matched, is each truth centre matched), one to one.

    Every (coordinate, centre) pair closer than ``radius`` is a candidate match;
    pairs are taken greedily from the closest on (ties: lower coordinate
    index, then lower centre index), each coordinate and each centre used at
    most once.  Unmatched coordinates are false positives: a particle picked
    twice gives one true positive and one false positive.  Greedy by distance
    is what detection benchmarks use; it can differ from the maximum matching
    only when two centres lie within two radii of each other, which particles
    a diameter apart do not.
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1, 2)
    is_tp = np.zeros(len(xy), dtype=bool)
    found = np.zeros(len(truth), dtype=bool)
    if len(xy) == 0 or len(truth) == 0:
        return is_tp, found
    pairs = cKDTree(xy).sparse_distance_matrix(cKDTree(truth), radius, output_type="ndarray")
    pairs = pairs[pairs["v"] < radius]   # strictly within, as match_to_truth counts
    order = np.lexsort((pairs["j"], pairs["i"], pairs["v"]))
    for i, j in zip(pairs["i"][order], pairs["j"][order]):
        if not is_tp[i] and not found[j]:
            is_tp[i] = found[j] = True
    return is_tp, found


def agreed_unlabelled(xy: np.ndarray, votes: np.ndarray, truth: np.ndarray,
                      min_distance: float, min_votes: int = 2) -> np.ndarray:
    """Which consensus (OR) coordinates are agreed on but unlabelled.

    True for a coordinate picked by at least ``min_votes`` pickers that lies
    more than ``min_distance`` (half a particle diameter) from every
    ground-truth centre: independent pickers agree on something there that
    the labels lack, which is not an off-centre pick of a labelled particle.
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1, 2)
    agreed = np.asarray(votes) >= min_votes
    if len(truth) == 0 or len(xy) == 0:
        return agreed
    distance, _ = cKDTree(truth).query(xy)
    return agreed & (distance > min_distance)


def audited_exclusion(xy: np.ndarray, is_tp: np.ndarray, anchors: np.ndarray,
                      radius: float) -> np.ndarray:
    """Which coordinates the "labels audited" count leaves out of precision.

    An unmatched coordinate (``~is_tp``) within ``radius`` (a quarter
    diameter) of an anchor (from :func:`agreed_unlabelled`) is neither a true
    nor a false positive: the labels are silent there.  Matched coordinates
    always count; recall is unchanged.
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    if len(xy) == 0 or len(anchors) == 0:
        return np.zeros(len(xy), dtype=bool)
    distance, _ = cKDTree(anchors).query(xy, distance_upper_bound=radius)
    return ~np.asarray(is_tp, bool) & np.isfinite(distance)


def close_pairs(xy: np.ndarray, groups: np.ndarray, distance: float) -> int:
    """How many pairs of coordinates of the same group (micrograph) lie closer than
    ``distance``."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    groups = np.asarray(groups)
    count = 0
    for group in np.unique(groups):
        points = xy[groups == group]
        pairs = cKDTree(points).query_pairs(distance, output_type="ndarray")
        gaps = np.linalg.norm(points[pairs[:, 0]] - points[pairs[:, 1]], axis=1)
        count += int(np.sum(gaps < distance))
    return count


def near_higher_score(xy: np.ndarray, groups: np.ndarray, scores: np.ndarray,
                      distance: float) -> np.ndarray:
    """Which coordinates lie closer than ``distance`` to a higher-scoring one of their group.

    Those are the second (third...) picks of a particle: a set without
    duplicates has none.  Equal scores rank the earlier row higher, so of
    two equal duplicates one is flagged.
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    groups, scores = np.asarray(groups), np.asarray(scores, dtype=np.float64)
    flagged = np.zeros(len(xy), dtype=bool)
    for group in np.unique(groups):
        rows = np.flatnonzero(groups == group)
        points = xy[rows]
        pairs = cKDTree(points).query_pairs(distance, output_type="ndarray")
        pairs = pairs[np.linalg.norm(points[pairs[:, 0]] - points[pairs[:, 1]], axis=1)
                      < distance]
        i, j = rows[pairs[:, 0]], rows[pairs[:, 1]]   # query_pairs gives i < j
        first_higher = scores[i] >= scores[j]
        flagged[np.where(first_higher, j, i)] = True
    return flagged


COUNTINGS = ("one_to_one", "lenient", "audited")
"""The three ways :func:`count_picks` counts a set, the first the primary figure."""


def count_picks(picks: Mapping[str, np.ndarray], truth: Mapping[str, np.ndarray],
                radius: float,
                anchors: Optional[Mapping[str, np.ndarray]] = None) -> dict[str, PickingMetrics]:
    """One-to-one, lenient and labels-audited figures of a set over labelled micrographs.

    ``picks`` and ``truth`` map micrograph names to (n, 2) centres; only the
    micrographs in ``truth`` count (a micrograph with no picks contributes
    its centres to recall).  ``anchors`` maps micrograph names to the agreed,
    unlabelled coordinates of :func:`agreed_unlabelled`; without it the
    audited figures equal the one-to-one ones.  For "audited", ``n`` is the
    number of coordinates counted in precision.
    """
    empty = np.empty((0, 2))
    one_tp, one_found, len_tp, len_found, excluded = [], [], [], [], []
    for name, centres in truth.items():
        xy = np.asarray(picks.get(name, empty), dtype=np.float64).reshape(-1, 2)
        tp, found = match_one_to_one(xy, centres, radius)
        one_tp.append(tp)
        one_found.append(found)
        tp_any, found_any = match_to_truth(xy, centres, radius)
        len_tp.append(tp_any)
        len_found.append(found_any)
        excluded.append(audited_exclusion(xy, tp, (anchors or {}).get(name, empty), radius))
    one_tp, one_found = np.concatenate(one_tp), np.concatenate(one_found)
    excluded = np.concatenate(excluded)
    return {"one_to_one": picking_metrics(one_tp, one_found),
            "lenient": picking_metrics(np.concatenate(len_tp), np.concatenate(len_found)),
            "audited": picking_metrics(one_tp[~excluded], one_found)}


def f1_score(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def mcc(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Matthews correlation coefficient of boolean predictions (0 when undefined)."""
    labels, predicted = np.asarray(labels, bool), np.asarray(predicted, bool)
    tp = float(np.sum(labels & predicted))
    tn = float(np.sum(~labels & ~predicted))
    fp = float(np.sum(~labels & predicted))
    fn = float(np.sum(labels & ~predicted))
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denominator if denominator > 0 else 0.0


def picking_metrics(is_tp: np.ndarray, found: np.ndarray,
                    reference_tp: Optional[np.ndarray] = None,
                    selected: Optional[np.ndarray] = None) -> PickingMetrics:
    """Precision, recall and F1 from :func:`match_to_truth` results.

    With ``reference_tp`` (true-positive labels of a larger candidate set, e.g.
    the OR set) and ``selected`` (which candidates this set keeps), the MCC and
    the accuracy of the selection within that candidate set are added.
    """
    n, n_truth = len(is_tp), len(found)
    precision = float(np.mean(is_tp)) if n else 0.0
    recall = float(np.mean(found)) if n_truth else 0.0
    value = correct = None
    if reference_tp is not None:
        value = mcc(reference_tp, selected)
        correct = accuracy(reference_tp, selected)
    return PickingMetrics(n, n_truth, precision, recall, f1_score(precision, recall), value,
                          correct)


def accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Share of candidates whose keep/prune decision matches their label."""
    labels, predicted = np.asarray(labels, bool), np.asarray(predicted, bool)
    return float(np.mean(labels == predicted)) if len(labels) else 0.0


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney), ties counted half; nan with one class."""
    labels = np.asarray(labels, bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pr_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision: precision averaged over the ranks of the positives."""
    labels = np.asarray(labels, bool)
    if not labels.any():
        return float("nan")
    order = np.argsort(-np.asarray(scores), kind="stable")
    hits = labels[order]
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision_at[hits].mean())


def pr_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, precision, recall-of-positives) for every distinct score, descending."""
    labels = np.asarray(labels, bool)
    order = np.argsort(-np.asarray(scores), kind="stable")
    hits = labels[order]
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    recall = tp / max(int(labels.sum()), 1)
    return np.asarray(scores)[order], precision, recall


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) over descending thresholds."""
    labels = np.asarray(labels, bool)
    order = np.argsort(-np.asarray(scores), kind="stable")
    hits = labels[order]
    tpr = np.concatenate([[0.0], np.cumsum(hits) / max(int(hits.sum()), 1)])
    fpr = np.concatenate([[0.0], np.cumsum(~hits) / max(int((~hits).sum()), 1)])
    return fpr, tpr


def picker_counts(voters: np.ndarray, retained: np.ndarray) -> dict[str, np.ndarray]:
    """Per picker: coordinates picked, retained, picked by it alone and of those retained.

    ``voters`` is the consensus table's (n, n_pickers) boolean matrix and
    ``retained`` a boolean mask over its rows.  The coordinates only one
    picker found are the ones Deep Consensus is there to judge.
    """
    voters = np.asarray(voters, dtype=bool)
    retained = np.asarray(retained, dtype=bool)
    alone = voters & (voters.sum(axis=1) == 1)[:, None]
    return {"picked": voters.sum(axis=0), "retained": (voters & retained[:, None]).sum(axis=0),
            "alone": alone.sum(axis=0), "alone_retained": (alone & retained[:, None]).sum(axis=0)}
