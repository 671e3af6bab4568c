"""core.thresholds: the automatic (Otsu) score threshold."""
import numpy as np
import pytest

from deepconsensus_plugin.core.thresholds import automatic_threshold


def test_finds_the_valley_between_two_modes():
    rng = np.random.default_rng(0)
    scores = np.clip(np.r_[rng.normal(0.15, 0.05, 700), rng.normal(0.75, 0.05, 300)], 0, 1)
    threshold = automatic_threshold(scores)
    assert 0.3 < threshold < 0.6
    # it separates the modes: almost every high-mode score is kept, almost no low one
    assert np.mean(scores[700:] >= threshold) > 0.99
    assert np.mean(scores[:700] >= threshold) < 0.01


def test_follows_the_modes_not_a_fixed_half():
    rng = np.random.default_rng(1)
    low = np.clip(rng.normal(0.02, 0.01, 500), 0, 1)
    high = np.clip(rng.normal(0.3, 0.03, 500), 0, 1)  # a shy classifier: positives at 0.3
    threshold = automatic_threshold(np.r_[low, high])
    assert 0.05 < threshold < 0.25
    assert np.mean(high >= threshold) > 0.99


@pytest.mark.parametrize("scores", [[], [0.7], [0.4, 0.4, 0.4], [np.nan, np.nan]])
def test_nothing_to_split_gives_one_half(scores):
    assert automatic_threshold(np.array(scores, dtype=float)) == 0.5


def test_ignores_nan_scores():
    scores = np.r_[np.full(10, 0.1), np.full(10, 0.9), np.full(5, np.nan)]
    assert 0.1 < automatic_threshold(scores) <= 0.9
