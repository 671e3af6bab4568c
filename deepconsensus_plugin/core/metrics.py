"""Accuracy of a coordinate set, or of scores, against ground-truth particle centres.

A coordinate is a true positive when it lies within a match radius of a
ground-truth centre; recall is the share of ground-truth centres that have a
coordinate within that radius.  Threshold-free measures (ROC-AUC, PR-AUC)
rank the scores of a set's coordinates against those labels.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

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


def match_to_truth(xy: np.ndarray, truth: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(is each coordinate within radius of a truth centre, is each truth centre found)."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1, 2)
    if len(xy) == 0 or len(truth) == 0:
        return np.zeros(len(xy), dtype=bool), np.zeros(len(truth), dtype=bool)
    dist_xy, _ = cKDTree(truth).query(xy, distance_upper_bound=radius)
    dist_truth, _ = cKDTree(xy).query(truth, distance_upper_bound=radius)
    return np.isfinite(dist_xy), np.isfinite(dist_truth)


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
