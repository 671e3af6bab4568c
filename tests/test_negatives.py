"""Tests for deepconsensus_plugin.core.negatives (pure numpy/scipy, no Scipion)."""
import logging

import numpy as np
from hypothesis import assume, given, settings, strategies as st
from scipy.spatial import cKDTree
from scipy.spatial.distance import pdist

from deepconsensus_plugin.core.extraction import cut_boxes
from deepconsensus_plugin.core.negatives import (allocate, fraction_on_picks, picker_particles,
                                                 sample_negatives)


def _check_invariants(result, shape, box, avoid, min_distance):
    rows, cols = shape
    assert result.ndim == 2 and result.shape[1] == 2
    half = box / 2.0
    # every box wholly inside: x in [box/2, cols - box/2], y in [box/2, rows - box/2]
    assert np.all(result[:, 0] >= half) and np.all(result[:, 0] <= cols - half)
    assert np.all(result[:, 1] >= half) and np.all(result[:, 1] <= rows - half)
    # and extraction agrees: none of the boxes it cuts there crosses the border
    _, crossing = cut_boxes(np.zeros(shape, dtype=np.float32), result, box)
    assert not crossing.any()
    avoid = np.asarray(avoid, dtype=float).reshape(-1, 2)
    if len(avoid) and len(result):
        dist, _ = cKDTree(avoid).query(result)
        assert np.all(dist >= min_distance)
    if len(result) > 1:
        assert pdist(result).min() >= min_distance


def test_avoids_picks_stays_inside_and_spreads():
    rng = np.random.default_rng(0)
    shape = (400, 600)
    avoid = rng.uniform([0, 0], [600, 400], size=(40, 2))
    result = sample_negatives(shape, box=64, avoid=avoid, count=30, min_distance=32,
                              rng=np.random.default_rng(1))
    assert result.shape == (30, 2)
    _check_invariants(result, shape, 64, avoid, 32)


def test_x_is_column_and_y_is_row():
    """On a wide, short micrograph x spreads over the columns and y over the rows."""
    shape = (100, 1000)
    result = sample_negatives(shape, box=20, avoid=np.empty((0, 2)), count=40,
                              min_distance=5, rng=np.random.default_rng(3))
    assert len(result) == 40
    assert result[:, 0].max() > 500       # x reaches far along the 1000 columns
    assert result[:, 1].max() <= 90       # y never leaves the 100 rows minus half a box
    _check_invariants(result, shape, 20, np.empty((0, 2)), 5)


def test_seeded_reproducibility():
    avoid = np.array([[100.0, 100.0], [200.0, 250.0]])
    first = sample_negatives((300, 300), 32, avoid, 20, 20, np.random.default_rng(42))
    second = sample_negatives((300, 300), 32, avoid, 20, 20, np.random.default_rng(42))
    other = sample_negatives((300, 300), 32, avoid, 20, 20, np.random.default_rng(43))
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_crowded_micrograph_returns_fewer_with_warning(caplog):
    # a 200 x 200 micrograph covered by picks every 20 px, min_distance 30: nowhere is free
    g = np.arange(0, 201, 20.0)
    avoid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    with caplog.at_level(logging.WARNING, logger="deepconsensus_plugin.core.negatives"):
        result = sample_negatives((200, 200), 40, avoid, 10, 30, np.random.default_rng(0),
                                  max_rounds=5)
    assert result.shape == (0, 2)
    assert "Only 0 of 10" in caplog.text


def test_partially_crowded_returns_what_fits():
    # room for at most 4 centres 50 px apart on a 100 x 100 micrograph with box 20
    # (centres in [10, 90]^2): fewer than asked, all valid
    result = sample_negatives((100, 100), 20, np.empty((0, 2)), 50, 50,
                              np.random.default_rng(0))
    assert 1 <= len(result) < 50
    assert len(result) <= 4
    _check_invariants(result, (100, 100), 20, np.empty((0, 2)), 50)


def test_degenerate_requests():
    rng = np.random.default_rng(0)
    assert sample_negatives((100, 100), 20, np.empty((0, 2)), 0, 5, rng).shape == (0, 2)
    assert sample_negatives((100, 100), 20, np.empty((0, 2)), -3, 5, rng).shape == (0, 2)
    # box larger than the micrograph: no box fits
    assert sample_negatives((100, 50), 60, np.empty((0, 2)), 5, 5, rng).shape == (0, 2)
    # box exactly the micrograph: only the centre fits
    only = sample_negatives((64, 64), 64, np.empty((0, 2)), 3, 5, rng)
    np.testing.assert_array_equal(only, [[32.0, 32.0]])
    only = sample_negatives((41, 41), 41, np.empty((0, 2)), 1, 5, rng)
    np.testing.assert_array_equal(only, [[20.5, 20.5]])
    _check_invariants(only, (41, 41), 41, np.empty((0, 2)), 5)


def test_allocate():
    assert allocate(10, 3).tolist() == [4, 3, 3]
    assert allocate(9, 3).tolist() == [3, 3, 3]
    assert allocate(2, 5).tolist() == [1, 1, 0, 0, 0]
    assert allocate(0, 4).tolist() == [0, 0, 0, 0]
    assert allocate(7, 0).shape == (0,)
    assert allocate(7, -1).shape == (0,)
    assert allocate(10, 3).dtype == np.int64


@settings(max_examples=200, deadline=None)
@given(total=st.integers(min_value=0, max_value=10_000), n_bins=st.integers(1, 500))
def test_allocate_properties(total, n_bins):
    counts = allocate(total, n_bins)
    assert len(counts) == n_bins
    assert counts.sum() == total
    assert counts.max() - counts.min() <= 1
    assert counts.min() >= 0
    # larger shares first
    assert np.all(np.diff(counts) <= 0)


@settings(max_examples=80, deadline=None)
@given(rows=st.integers(40, 400), cols=st.integers(40, 400), box=st.integers(4, 64),
       n_avoid=st.integers(0, 60), count=st.integers(0, 40),
       min_distance=st.floats(1.0, 60.0), seed=st.integers(0, 2**32 - 1))
def test_sample_negatives_properties(rows, cols, box, n_avoid, count, min_distance, seed):
    assume(box <= min(rows, cols))
    rng = np.random.default_rng(seed)
    avoid = rng.uniform([0, 0], [cols, rows], size=(n_avoid, 2))
    result = sample_negatives((rows, cols), box, avoid, count, min_distance, rng,
                              max_rounds=10)
    assert len(result) <= count
    _check_invariants(result, (rows, cols), box, avoid, min_distance)
    # same seed, same answer
    rng2 = np.random.default_rng(seed)
    rng2.uniform(size=(n_avoid, 2))  # replay the draws made for ``avoid``
    again = sample_negatives((rows, cols), box, avoid, count, min_distance, rng2,
                             max_rounds=10)
    np.testing.assert_array_equal(result, again)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(1, 20))
def test_empty_micrograph_gets_all_it_asks_for(seed, count):
    """With plenty of room (a 1000 px micrograph, 20 px apart) the full count is returned."""
    result = sample_negatives((1000, 1000), 32, np.empty((0, 2)), count, 20,
                              np.random.default_rng(seed))
    assert len(result) == count
    _check_invariants(result, (1000, 1000), 32, np.empty((0, 2)), 20)


def test_spacing_and_existing_negatives():
    """A smaller spacing packs more negatives; ``existing`` ones are kept clear of and not
    returned."""
    rng = np.random.default_rng(5)
    avoid = np.array([[150.0, 150.0]])
    tight = sample_negatives((300, 300), 40, avoid, 200, 40, rng, spacing=10, max_rounds=20)
    loose = sample_negatives((300, 300), 40, avoid, 200, 40, np.random.default_rng(5),
                             max_rounds=20)
    assert len(tight) > 2 * len(loose)
    assert pdist(tight).min() >= 10
    _check_invariants(loose, (300, 300), 40, avoid, 40)
    existing = tight[:5]
    more = sample_negatives((300, 300), 40, avoid, 5, 40, rng, spacing=10, existing=existing)
    assert len(more) == 5
    assert cKDTree(existing).query(more)[0].min() >= 10
    assert cKDTree(avoid).query(more)[0].min() >= 40


def test_offcentre_negatives_lie_at_the_shift_and_clear_of_every_pick():
    from deepconsensus_plugin.core.negatives import offcentre_negatives

    rng = np.random.default_rng(3)
    centres = rng.uniform(100, 900, (200, 2))
    shifted = offcentre_negatives(centres, centres, (1000, 1000), shift=30.0, clearance=20.0,
                                  rng=rng)
    assert 0 < len(shifted) <= len(centres)
    dist, _ = cKDTree(centres).query(shifted)
    assert np.all(dist >= 20.0)
    # each is exactly the shift away from the centre it came from
    assert np.allclose(np.sort(cKDTree(centres).query(shifted, k=1)[0])[:1], dist.min())
    assert np.all(dist <= 30.0 + 1e-9)
    assert np.all((shifted >= 0) & (shifted < 1000))


def test_offcentre_negatives_drop_those_outside_or_near_another_pick():
    from deepconsensus_plugin.core.negatives import offcentre_negatives

    rng = np.random.default_rng(0)
    # a centre at the corner: most shifts leave the micrograph
    corner = offcentre_negatives(np.array([[1.0, 1.0]] * 50), np.empty((0, 2)), (100, 100),
                                 shift=20.0, clearance=0.0, rng=rng)
    assert len(corner) < 50 and np.all(corner >= 0)
    # a neighbour at the shift distance all around blocks every shifted box
    ring = 500 + 30 * np.column_stack([np.cos(np.linspace(0, 2 * np.pi, 200)),
                                       np.sin(np.linspace(0, 2 * np.pi, 200))])
    blocked = offcentre_negatives(np.array([[500.0, 500.0]] * 20), ring, (1000, 1000),
                                  shift=30.0, clearance=5.0, rng=rng)
    assert len(blocked) == 0
    none = offcentre_negatives(np.empty((0, 2)), ring, (1000, 1000), 30.0, 5.0, rng)
    assert none.shape == (0, 2)


def test_fraction_on_picks_counts_only_shared_micrographs():
    picks = {"a": np.array([[100.0, 100.0], [300.0, 300.0]]), "b": np.array([[50.0, 50.0]])}
    known = {"a": np.array([[103.0, 104.0], [200.0, 200.0], [300.0, 303.0]]),  # 5 and 3 px
             "c": np.array([[100.0, 100.0]])}  # a micrograph the picker did not pick
    assert fraction_on_picks(known, picks, radius=5.1) == (3, 2 / 3)
    assert fraction_on_picks(known, picks, radius=5.0) == (3, 1 / 3)  # closer than, as consensus
    assert fraction_on_picks({"c": known["c"]}, picks, radius=5.0) == (0, 0.0)
    # more than half on the picks: a picker's particles, (near, shared) to name them
    assert picker_particles(known, picks, radius=5.1) == (2, 3)
    assert picker_particles(known, picks, radius=5.0) is None
    half = {"a": known["a"][:2]}  # one of two on a pick: not more than half
    assert picker_particles(half, picks, radius=5.1) is None
