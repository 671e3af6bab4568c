"""Tests for deepconsensus_plugin.core.metrics (pure numpy/scipy, no Scipion)."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from deepconsensus_plugin.core.metrics import (COUNTINGS, PickingMetrics, agreed_unlabelled,
                                               audited_exclusion, close_pairs, count_picks,
                                               near_higher_score,
                                               f1_score, match_one_to_one, match_to_truth, mcc,
                                               picking_metrics, pr_auc, pr_curve, roc_auc,
                                               roc_curve)


# --------------------------------------------------------------------------- matching to truth

def test_match_to_truth_hand_example():
    truth = np.array([[100.0, 100.0], [200.0, 200.0], [300.0, 300.0], [400.0, 400.0]])
    xy = np.array([[103.0, 104.0],    # 5 px from truth 0: within 6
                   [200.0, 207.0],    # 7 px from truth 1: outside 6
                   [301.0, 300.0],    # near truth 2
                   [299.0, 300.0],    # also near truth 2 (a second hit on the same particle)
                   [900.0, 900.0]])   # nowhere
    is_tp, found = match_to_truth(xy, truth, radius=6.0)
    assert is_tp.tolist() == [True, False, True, True, False]
    assert found.tolist() == [True, False, True, False]
    assert is_tp.dtype == bool and found.dtype == bool


def test_match_to_truth_empty_inputs():
    truth = np.array([[1.0, 1.0], [5.0, 5.0]])
    is_tp, found = match_to_truth(np.empty((0, 2)), truth, 3.0)
    assert is_tp.shape == (0,) and found.tolist() == [False, False]
    is_tp, found = match_to_truth([[1.0, 1.0]], np.empty((0, 2)), 3.0)
    assert is_tp.tolist() == [False] and found.shape == (0,)


def test_particle_picked_twice_counts_once_one_to_one_and_twice_lenient():
    truth = np.array([[100.0, 100.0], [300.0, 300.0]])
    xy = np.array([[102.0, 100.0],    # particle 0
                   [100.0, 96.0],     # particle 0 again, off-centre
                   [300.0, 301.0]])   # particle 1
    lenient_tp, lenient_found = match_to_truth(xy, truth, radius=6.0)
    one_tp, one_found = match_one_to_one(xy, truth, radius=6.0)
    assert lenient_tp.tolist() == [True, True, True]
    assert one_tp.tolist() == [True, False, True]
    assert lenient_found.tolist() == one_found.tolist() == [True, True]
    assert picking_metrics(lenient_tp, lenient_found).precision == 1.0
    assert picking_metrics(one_tp, one_found).precision == pytest.approx(2 / 3)


def test_one_to_one_greedy_takes_the_nearer_coordinate():
    truth = np.array([[100.0, 100.0]])
    # the farther coordinate comes first in the input: the nearer one must still win
    xy = np.array([[105.0, 100.0], [101.0, 100.0]])
    is_tp, found = match_one_to_one(xy, truth, radius=6.0)
    assert is_tp.tolist() == [False, True] and found.tolist() == [True]


def test_one_to_one_greedy_by_distance_over_all_pairs():
    # coordinate 0 lies 1 px from centre A and 4 px from centre B; coordinate 1 lies
    # 3 px from A only.  Closest pair first: (0, A); then (1, A) is taken, (0, B) too:
    # B stays unmatched, which is what greedy by distance (not the maximum matching) does.
    truth = np.array([[0.0, 0.0], [5.0, 0.0]])
    xy = np.array([[1.0, 0.0], [-3.0, 0.0]])
    is_tp, found = match_one_to_one(xy, truth, radius=4.5)
    assert is_tp.tolist() == [True, False]
    assert found.tolist() == [True, False]
    # a centre between two coordinates at the same distance goes to the lower index
    is_tp, found = match_one_to_one(np.array([[-2.0, 0.0], [2.0, 0.0]]), truth[:1], 3.0)
    assert is_tp.tolist() == [True, False] and found.tolist() == [True]


def test_one_to_one_empty_inputs_and_exact_hits():
    truth = np.array([[1.0, 1.0], [5.0, 5.0]])
    is_tp, found = match_one_to_one(np.empty((0, 2)), truth, 3.0)
    assert is_tp.shape == (0,) and found.tolist() == [False, False]
    is_tp, found = match_one_to_one([[1.0, 1.0]], np.empty((0, 2)), 3.0)
    assert is_tp.tolist() == [False] and found.shape == (0,)
    # a coordinate exactly on a centre (distance 0) matches
    is_tp, found = match_one_to_one([[5.0, 5.0]], truth, 3.0)
    assert is_tp.tolist() == [True] and found.tolist() == [False, True]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), max_size=25),
       st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), max_size=25))
def test_one_to_one_is_a_matching_within_the_lenient_one(points, centres):
    xy = np.array(points, dtype=float).reshape(-1, 2)
    truth = np.array(centres, dtype=float).reshape(-1, 2)
    is_tp, found = match_one_to_one(xy, truth, 3.0)
    lenient_tp, lenient_found = match_to_truth(xy, truth, 3.0)
    assert is_tp.sum() == found.sum()            # one centre per coordinate and back
    assert not np.any(is_tp & ~lenient_tp)       # only coordinates near a centre match
    assert not np.any(found & ~lenient_found)
    # greedy leaves no pair within the radius with both ends unmatched
    for i in np.flatnonzero(~is_tp):
        for j in np.flatnonzero(~found):
            assert np.hypot(*(xy[i] - truth[j])) >= 3.0


def test_audited_exclusion_constructed_case():
    diameter = 40.0
    truth = np.array([[100.0, 100.0], [200.0, 100.0]])
    # OR set: a labelled particle (3 votes), an unlabelled place two pickers agree on
    # (60 px from the nearest label), a single-picker pick there, and a 2-vote pick
    # only 15 px off a label (an off-centre pick: not an unlabelled particle).
    or_xy = np.array([[100.0, 100.0], [200.0, 160.0], [300.0, 300.0], [115.0, 100.0]])
    votes = np.array([3, 2, 1, 2])
    agreed = agreed_unlabelled(or_xy, votes, truth, min_distance=diameter / 2)
    assert agreed.tolist() == [False, True, False, False]
    anchors = or_xy[agreed]
    # a set: a true positive, two picks near the agreed place (5 and 12 px), one far away
    xy = np.array([[101.0, 100.0], [203.0, 164.0], [200.0, 172.0], [300.0, 300.0]])
    is_tp, found = match_one_to_one(xy, truth, diameter / 4)
    assert is_tp.tolist() == [True, False, False, False]
    excluded = audited_exclusion(xy, is_tp, anchors, radius=diameter / 4)
    assert excluded.tolist() == [False, True, False, False]   # 12 px > a quarter (10 px)
    counts = count_picks({"m": xy}, {"m": truth}, diameter / 4, {"m": anchors})
    assert tuple(counts) == COUNTINGS
    assert counts["one_to_one"].n == 4 and counts["one_to_one"].precision == 0.25
    assert counts["audited"].n == 3
    assert counts["audited"].precision == pytest.approx(1 / 3)
    assert counts["audited"].recall == counts["one_to_one"].recall == 0.5
    # a matched coordinate is never excluded, even next to an anchor
    assert not audited_exclusion([[100.0, 100.0]], [True], [[100.0, 101.0]], 10.0).any()
    assert audited_exclusion(xy, is_tp, np.empty((0, 2)), 10.0).tolist() == [False] * 4


def test_count_picks_over_micrographs():
    truth = {"a": np.array([[10.0, 10.0], [50.0, 50.0]]), "b": np.array([[10.0, 10.0]])}
    picks = {"a": np.array([[11.0, 10.0], [10.0, 12.0], [90.0, 90.0]]),
             "c": np.array([[10.0, 10.0]])}   # "c" has no labels: left out; "b" has no picks
    counts = count_picks(picks, truth, 3.0)
    one, lenient = counts["one_to_one"], counts["lenient"]
    assert (one.n, one.n_truth) == (3, 3)
    assert one.precision == pytest.approx(1 / 3) and one.recall == pytest.approx(1 / 3)
    assert lenient.precision == pytest.approx(2 / 3) and lenient.recall == pytest.approx(1 / 3)
    assert counts["audited"] == one   # no anchors: nothing excluded


def test_close_pairs():
    xy = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 4.9], [100.0, 100.0], [0.0, 0.0]])
    groups = np.array(["a", "a", "a", "a", "b"])
    # pairs in "a" closer than 5: (0, 2) at 4.9 and (1, 2) at 3.0; (0, 1) at exactly 5 is not
    assert close_pairs(xy, groups, 5.0) == 2
    assert close_pairs(xy, np.zeros(5), 5.0) == 4   # one group: the copy at (0, 0) adds two
    assert close_pairs(np.empty((0, 2)), np.empty(0), 5.0) == 0


def test_near_higher_score():
    # a particle picked three times (rows 0-2), one alone (3), and a copy on another group (4)
    xy = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [50.0, 50.0], [0.0, 0.0]])
    groups = np.array([0, 0, 0, 0, 1])
    scores = np.array([0.7, 0.9, 0.7, 0.1, 0.2])
    # pairs closer than 5 px: (0, 1) at 3 px and (0, 2) at 4 px; (1, 2) at 5 px is not.
    # Row 0 is below row 1; rows 0 and 2 tie, and the earlier row 0 ranks above row 2.
    assert near_higher_score(xy, groups, scores, 5.0).tolist() == [True, False, True, False,
                                                                   False]
    assert close_pairs(xy, groups, 5.0) == 2
    assert near_higher_score(np.empty((0, 2)), np.empty(0), np.empty(0), 5.0).shape == (0,)


def test_picking_metrics_hand_example():
    truth = np.array([[100.0, 100.0], [200.0, 200.0], [300.0, 300.0], [400.0, 400.0]])
    xy = np.array([[101.0, 100.0], [300.0, 302.0], [600.0, 600.0]])
    is_tp, found = match_to_truth(xy, truth, radius=5.0)
    m = picking_metrics(is_tp, found)
    assert isinstance(m, PickingMetrics)
    assert m.n == 3 and m.n_truth == 4
    assert m.precision == pytest.approx(2 / 3)
    assert m.recall == pytest.approx(2 / 4)
    # F1 = 2 P R / (P + R) = 2 * (2/3) * (1/2) / (2/3 + 1/2) = 4/7
    assert m.f1 == pytest.approx(4 / 7)
    assert m.mcc is None
    assert m.as_dict() == {"n": 3, "n_truth": 4, "precision": m.precision,
                           "recall": m.recall, "f1": m.f1, "mcc": None, "accuracy": None}


def test_picking_metrics_with_reference_adds_mcc():
    reference_tp = np.array([True, True, True, False, False, False, True, False])
    selected = np.array([True, True, False, False, True, False, True, False])
    # the selection's own is_tp / found (subset of the reference)
    is_tp = reference_tp[selected]
    found = np.array([True, True, True, False])
    m = picking_metrics(is_tp, found, reference_tp=reference_tp, selected=selected)
    assert m.precision == pytest.approx(3 / 4)
    assert m.recall == pytest.approx(3 / 4)
    assert m.f1 == pytest.approx(3 / 4)
    # tp=3 (0,1,6) fp=1 (4) fn=1 (2) tn=3 (3,5,7): (9 - 1) / sqrt(4*4*4*4) = 0.5
    assert m.mcc == pytest.approx(0.5)
    # 6 of the 8 keep/prune decisions match the labels
    assert m.accuracy == pytest.approx(6 / 8)


def test_picking_metrics_empty():
    m = picking_metrics(np.zeros(0, bool), np.zeros(0, bool))
    assert (m.n, m.n_truth, m.precision, m.recall, m.f1) == (0, 0, 0.0, 0.0, 0.0)


def test_f1_score():
    assert f1_score(1.0, 1.0) == 1.0
    assert f1_score(0.0, 0.0) == 0.0
    assert f1_score(0.5, 1.0) == pytest.approx(2 / 3)


# --------------------------------------------------------------------------- MCC

def test_mcc_hand_computed():
    labels = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0], bool)
    predicted = np.array([1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0], bool)
    # tp=3 fn=2 fp=1 tn=6
    expected = (3 * 6 - 1 * 2) / math.sqrt((3 + 1) * (3 + 2) * (6 + 1) * (6 + 2))
    assert mcc(labels, predicted) == pytest.approx(expected)
    assert mcc(labels, predicted) == pytest.approx(16 / math.sqrt(1120))


def test_mcc_extremes_and_undefined():
    labels = np.array([True, False, True, False])
    assert mcc(labels, labels) == pytest.approx(1.0)
    assert mcc(labels, ~labels) == pytest.approx(-1.0)
    # all predicted the same: undefined, reported as 0
    assert mcc(labels, np.ones(4, bool)) == 0.0
    assert mcc(np.ones(4, bool), labels) == 0.0
    # accepts 0/1 integers
    assert mcc([1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(1.0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=60))
def test_mcc_is_the_pearson_correlation_of_the_booleans(pairs):
    labels = np.array([p[0] for p in pairs])
    predicted = np.array([p[1] for p in pairs])
    value = mcc(labels, predicted)
    assert -1.0 - 1e-12 <= value <= 1.0 + 1e-12
    if labels.std() > 0 and predicted.std() > 0:
        assert value == pytest.approx(np.corrcoef(labels, predicted)[0, 1], abs=1e-9)
    else:
        assert value == 0.0


# --------------------------------------------------------------------------- ROC-AUC

def _mann_whitney(labels, scores):
    pos = [s for s, lab in zip(scores, labels) if lab]
    neg = [s for s, lab in zip(scores, labels) if not lab]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_roc_auc_perfect_inverse_and_ties():
    labels = np.array([1, 1, 1, 0, 0, 0], bool)
    assert roc_auc(labels, [0.9, 0.8, 0.7, 0.3, 0.2, 0.1]) == 1.0
    assert roc_auc(labels, [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]) == 0.0
    assert roc_auc(labels, [0.5] * 6) == 0.5
    # perfect separation by a whisker still counts as perfect
    assert roc_auc(labels, [0.5001, 0.5001, 0.5001, 0.5, 0.5, 0.5]) == 1.0


def test_roc_auc_random_ties_are_near_half():
    rng = np.random.default_rng(0)
    labels = rng.random(2000) < 0.3
    scores = rng.integers(0, 3, size=2000).astype(float)  # scores unrelated to the labels
    assert abs(roc_auc(labels, scores) - 0.5) < 0.05


def test_roc_auc_small_example_equals_mann_whitney():
    labels = [True, False, True, False, True, False, False]
    scores = [0.8, 0.8, 0.3, 0.5, 0.9, 0.1, 0.3]
    # by hand: pos {0.8, 0.3, 0.9} vs neg {0.8, 0.5, 0.1, 0.3}
    # 0.8: 0.5 + 1 + 1 + 1 = 3.5; 0.3: 0 + 0 + 1 + 0.5 = 1.5; 0.9: 4 -> 9 / 12
    assert roc_auc(labels, scores) == pytest.approx(9 / 12)
    assert roc_auc(labels, scores) == pytest.approx(_mann_whitney(labels, scores))


def test_roc_auc_one_class_is_nan():
    assert math.isnan(roc_auc([True, True], [0.1, 0.2]))
    assert math.isnan(roc_auc([False, False], [0.1, 0.2]))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=2, max_size=40))
def test_roc_auc_matches_mann_whitney_definition(pairs):
    labels = [p[0] for p in pairs]
    scores = [float(p[1]) for p in pairs]
    if all(labels) or not any(labels):
        assert math.isnan(roc_auc(labels, scores))
        return
    assert roc_auc(labels, scores) == pytest.approx(_mann_whitney(labels, scores), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.floats(0, 1, allow_nan=False)), min_size=2,
                max_size=40, unique_by=lambda p: p[1]))
def test_roc_auc_is_the_area_under_roc_curve_without_ties(pairs):
    # (roc_curve steps per sample, not per distinct score, so ties are left out here)
    labels = np.array([p[0] for p in pairs])
    scores = np.array([p[1] for p in pairs])
    if labels.all() or not labels.any():
        return
    fpr, tpr = roc_curve(labels, scores)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert roc_auc(labels, scores) == pytest.approx(area, abs=1e-12)


# --------------------------------------------------------------------------- PR-AUC and curves

def test_pr_auc_hand_example():
    # ranked by score: P N P N P  -> precision at the positives: 1/1, 2/3, 3/5
    labels = np.array([True, False, True, False, True])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    assert pr_auc(labels, scores) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # order of the input does not matter, only the scores
    perm = np.array([4, 2, 0, 3, 1])
    assert pr_auc(labels[perm], scores[perm]) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # ranked N N P P N: precision at the positives 1/3 and 2/4
    assert pr_auc(np.array([False, True, False, True, False]),
                  np.array([0.9, 0.7, 0.8, 0.6, 0.1])) == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert pr_auc(np.array([True, True, False]), np.array([0.9, 0.8, 0.1])) == 1.0
    assert math.isnan(pr_auc(np.array([False, False]), np.array([0.1, 0.2])))


def test_pr_curve():
    labels = np.array([False, True, True, False])
    scores = np.array([0.2, 0.9, 0.4, 0.6])
    thresholds, precision, recall = pr_curve(labels, scores)
    np.testing.assert_allclose(thresholds, [0.9, 0.6, 0.4, 0.2])
    np.testing.assert_allclose(precision, [1.0, 0.5, 2 / 3, 0.5])
    np.testing.assert_allclose(recall, [0.5, 0.5, 1.0, 1.0])


def test_roc_curve_endpoints_and_shape():
    labels = np.array([True, False, True, True, False])
    scores = np.array([0.9, 0.7, 0.6, 0.2, 0.1])
    fpr, tpr = roc_curve(labels, scores)
    assert len(fpr) == len(tpr) == len(labels) + 1
    assert (fpr[0], tpr[0]) == (0.0, 0.0)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    np.testing.assert_allclose(tpr, [0, 1 / 3, 1 / 3, 2 / 3, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 0.5, 1])
    # perfect scores go straight up then right
    fpr, tpr = roc_curve(np.array([True, True, False]), np.array([0.9, 0.8, 0.1]))
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0, 0, 1])
