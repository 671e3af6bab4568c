"""Tests for deepconsensus_plugin.core.pipeline (pure numpy/scipy, no Scipion)."""
import logging

import numpy as np
import pytest
from scipy.spatial import cKDTree
from scipy.spatial.distance import pdist

from deepconsensus_plugin.core import pipeline
from deepconsensus_plugin.core.consensus import consensus
from deepconsensus_plugin.core.pipeline import (CoordinateTable, consensus_table,
                                                extraction_jobs, negatives_table)


def _table(mic, xy, voters=None):
    return CoordinateTable(mic=np.asarray(mic, dtype=np.int64),
                           xy=np.asarray(xy, dtype=np.float64).reshape(-1, 2),
                           voters=None if voters is None else np.asarray(voters, dtype=bool))


# --------------------------------------------------------------------------- CoordinateTable

def test_save_load_round_trip_with_voters(tmp_path):
    table = _table([1, 1, 4], [[1.5, 2.25], [3.0, 4.0], [100.125, 7.0]],
                   [[True, False, True], [False, False, True], [True, True, True]])
    path = str(tmp_path / "or.npz")
    table.save(path)
    loaded = CoordinateTable.load(path)
    np.testing.assert_array_equal(loaded.mic, table.mic)
    np.testing.assert_array_equal(loaded.xy, table.xy)
    np.testing.assert_array_equal(loaded.voters, table.voters)
    assert loaded.voters.dtype == bool
    assert loaded.xy.dtype == np.float64
    assert loaded.votes.tolist() == [2, 1, 3]
    assert len(loaded) == 3


def test_save_load_round_trip_without_voters(tmp_path):
    table = _table([0, 2], [[1.0, 2.0], [3.0, 4.0]])
    path = str(tmp_path / "neg.npz")
    table.save(path)
    loaded = CoordinateTable.load(path)
    assert loaded.voters is None
    np.testing.assert_array_equal(loaded.mic, [0, 2])
    np.testing.assert_array_equal(loaded.xy, table.xy)
    # a table without voters counts one vote per coordinate
    assert loaded.votes.tolist() == [1, 1]


def test_save_load_empty(tmp_path):
    table = CoordinateTable.from_picks({})
    path = str(tmp_path / "empty.npz")
    table.save(path)
    loaded = CoordinateTable.load(path)
    assert len(loaded) == 0
    assert loaded.xy.shape == (0, 2)
    assert list(loaded.per_micrograph()) == []


def test_from_picks_sorts_by_micrograph_and_drops_empty():
    picks = {5: np.array([[50.0, 51.0]]),
             2: np.array([[20.0, 21.0], [22.0, 23.0]]),
             3: np.empty((0, 2)),
             0: [[1, 2]]}
    table = CoordinateTable.from_picks(picks)
    assert table.mic.tolist() == [0, 2, 2, 5]
    np.testing.assert_array_equal(table.xy, [[1, 2], [20, 21], [22, 23], [50, 51]])
    assert table.xy.dtype == np.float64
    assert table.mic.dtype == np.int64
    assert table.voters is None

    empty = CoordinateTable.from_picks({1: np.empty((0, 2))})
    assert len(empty) == 0 and empty.xy.shape == (0, 2)


def test_per_micrograph_grouping_and_subset():
    table = _table([0, 0, 3, 3, 3, 7], np.arange(12.0).reshape(6, 2),
                   np.eye(6, 2, dtype=bool))
    groups = [(m, rows.tolist()) for m, rows in table.per_micrograph()]
    assert groups == [(0, [0, 1]), (3, [2, 3, 4]), (7, [5])]
    assert all(isinstance(m, int) for m, _ in table.per_micrograph())

    sub = table.subset(np.array([1, 2, 5]))
    assert sub.mic.tolist() == [0, 3, 7]
    np.testing.assert_array_equal(sub.xy, [[2, 3], [4, 5], [10, 11]])
    np.testing.assert_array_equal(sub.voters, table.voters[[1, 2, 5]])
    mask = table.xy[:, 0] > 5
    assert table.subset(mask).mic.tolist() == [3, 3, 7]
    assert _table([1], [[0, 0]]).subset(np.array([0])).voters is None


def test_per_micrograph_single_group():
    table = _table([4, 4, 4], np.zeros((3, 2)))
    groups = list(table.per_micrograph())
    assert len(groups) == 1 and groups[0][0] == 4
    assert groups[0][1].tolist() == [0, 1, 2]


# --------------------------------------------------------------------------- consensus_table

def test_consensus_table_across_micrographs():
    picker_a = {0: np.array([[10.0, 10.0], [50.0, 50.0]]),
                1: np.array([[100.0, 100.0]]),
                2: np.array([[7.0, 7.0]])}
    picker_b = {0: np.array([[11.0, 10.0]]),
                1: np.array([[101.0, 100.0], [300.0, 300.0]])}
    # micrograph 2 is missing from B: counts as picked by B with nothing
    picker_c = {1: np.array([[102.0, 100.0]]),
                2: np.array([[8.0, 7.0]]),
                9: np.array([[1.0, 1.0]])}
    table = consensus_table([picker_a, picker_b, picker_c], radius=5.0)

    assert table.voters.shape == (len(table), 3)
    assert np.all(np.diff(table.mic) >= 0)  # sorted by micrograph
    rows = {(int(m), tuple(np.round(xy, 6))): tuple(map(bool, v))
            for m, xy, v in zip(table.mic, table.xy, table.voters)}
    assert rows == {
        (0, (10.5, 10.0)): (True, True, False),
        (0, (50.0, 50.0)): (True, False, False),
        (1, (101.0, 100.0)): (True, True, True),
        (1, (300.0, 300.0)): (False, True, False),
        (2, (7.5, 7.0)): (True, False, True),
        (9, (1.0, 1.0)): (False, False, True),
    }
    assert [m for m, _ in table.per_micrograph()] == [0, 1, 2, 9]
    assert sorted(table.votes.tolist()) == [1, 1, 1, 2, 2, 3]


def test_consensus_table_does_not_match_across_micrographs():
    a = {0: np.array([[10.0, 10.0]])}
    b = {1: np.array([[10.0, 10.0]])}
    table = consensus_table([a, b], radius=5.0)
    assert table.mic.tolist() == [0, 1]
    assert table.votes.tolist() == [1, 1]


def test_consensus_table_equals_micrograph_by_micrograph_consensus():
    """Matching all micrographs on one tiled plane gives the per-micrograph result."""
    rng = np.random.default_rng(4)
    pickers = [{}, {}, {}]
    for m in (0, 3, 4, 7):
        truth = rng.uniform(-20, 900, size=(60, 2))  # border picks may be negative
        for p, picker in enumerate(pickers):
            keep = rng.random(len(truth)) < 0.8
            picker[m] = np.vstack([truth[keep] + rng.normal(scale=2, size=(keep.sum(), 2)),
                                   rng.uniform(0, 900, size=(5 + p, 2))])
    del pickers[1][4]
    table = consensus_table(pickers, radius=9.0)
    for m, rows in table.per_micrograph():
        expected = consensus([p.get(m, np.empty((0, 2))) for p in pickers], 9.0)
        np.testing.assert_allclose(table.xy[rows], expected.xy, atol=1e-9)
        np.testing.assert_array_equal(table.voters[rows], expected.voters)
    assert sorted(set(table.mic.tolist())) == [0, 3, 4, 7]


def test_consensus_table_in_chunks_is_the_one_plane_table_to_the_bit():
    """Merging a few micrographs at a time bounds the consensus's memory; it must not
    move a coordinate by a rounding step, nor change a vote or a row's place: the
    micrographs come in no order, one picker lacks one, one has no picks, and one
    holds more picks than a chunk."""
    rng = np.random.default_rng(21)
    pickers = [{}, {}, {}]
    for m in (9, 2, 14, 5, 0, 11, 7):
        truth = rng.uniform(-15, 700, size=(300 if m == 5 else 40, 2))
        for p, picker in enumerate(pickers):
            keep = rng.random(len(truth)) < 0.8
            found = truth[keep] + rng.normal(scale=2.5, size=(keep.sum(), 2))
            picker[m] = np.vstack([found, found[:3] + 1.0, rng.uniform(0, 700, (4 + p, 2))])
    del pickers[2][11]
    pickers[1][7] = np.empty((0, 2))
    whole = consensus_table(pickers, radius=7.0, chunk_picks=10 ** 9)
    assert sorted(set(whole.mic.tolist())) == [0, 2, 5, 7, 9, 11, 14]
    for chunk_picks in (1, 150, 400):
        chunked = consensus_table(pickers, radius=7.0, chunk_picks=chunk_picks)
        np.testing.assert_array_equal(chunked.mic, whole.mic)
        np.testing.assert_array_equal(chunked.xy, whole.xy)
        np.testing.assert_array_equal(chunked.voters, whole.voters)


def test_consensus_table_does_not_depend_on_the_order_of_the_input_sets():
    """The same rows in the same order whatever order the form lists the pickers in (box
    files hold whole pixels, so ties in distance are common): training, which draws its
    positives and validation split from these rows, then sees the same data."""
    rng = np.random.default_rng(11)
    pickers = [{}, {}, {}]
    for m in (0, 2, 5):
        truth = rng.uniform(0, 600, size=(80, 2))
        for picker in pickers:
            keep = rng.random(len(truth)) < 0.8
            found = truth[keep] + rng.normal(scale=3, size=(keep.sum(), 2))
            picker[m] = np.round(np.vstack([found, rng.uniform(0, 600, size=(10, 2))]))
    first = consensus_table(pickers, radius=8.0)
    for order in ([1, 2, 0], [2, 0, 1], [0, 2, 1]):
        other = consensus_table([pickers[i] for i in order], radius=8.0)
        np.testing.assert_array_equal(other.mic, first.mic)
        np.testing.assert_allclose(other.xy, first.xy, atol=1e-9)
        np.testing.assert_array_equal(other.voters, first.voters[:, order])


def test_consensus_table_empty():
    table = consensus_table([{}, {}], radius=5.0)
    assert len(table) == 0
    assert table.xy.shape == (0, 2)
    assert table.voters.shape == (0, 2)
    # a micrograph that every picker left empty yields no rows
    table = consensus_table([{3: np.empty((0, 2))}, {}], radius=5.0)
    assert len(table) == 0 and table.voters.shape == (0, 2)


def test_shared_picks_finds_one_picker_given_twice_and_its_subsets_and_nothing_else():
    rng = np.random.default_rng(0)
    picks = {1: rng.uniform(0, 500, (8, 2)), 2: rng.uniform(0, 500, (6, 2)), 3: np.empty((0, 2))}
    # the same picks, written in another order and rounded as another file format would
    twice = {m: np.round(xy[::-1], 1) for m, xy in picks.items() if len(xy)}
    other = {m: rng.uniform(0, 500, xy.shape) for m, xy in picks.items()}
    assert pipeline.shared_picks([picks, other, twice]) == [pipeline.SharedPicks(0, 2, 14, 14, 14)]
    # a second picker agrees with the first within a few pixels: nothing in common
    agrees = {m: xy + rng.normal(0, 3, xy.shape) for m, xy in picks.items()}
    assert pipeline.shared_picks([picks, agrees]) == []
    # the same picker at a stricter threshold: a subset, named, not refused
    stricter = {1: picks[1][:7], 2: picks[2][:5]}
    subset, = pipeline.shared_picks([stricter, picks])
    assert (subset.shared, subset.share, subset.identical) == (12, 1.0, False)
    few = {1: picks[1][:5]}  # under MIN_SAME_PICKS, a coincidence of a tiny set
    assert pipeline.shared_picks([few, {1: few[1].copy()}]) == []
    with pytest.raises(ValueError, match="the picks of 'a' and 'c' are the same 14 coordinates"):
        pipeline.require_different_pickers(pipeline.pick_overlaps([picks, other, twice]),
                                           ["'a'", "'b'", "'c'"])
    assert pipeline.require_different_pickers(pipeline.pick_overlaps([stricter, picks]),
                                              ["'a'", "'b'"]) == [subset]
    # the counts add up over micrographs (a stream keeps them batch by batch): each half
    # alone holds too few shared picks to say anything, together they make the subset
    halves = [pipeline.pick_overlaps([{m: p[m] for m in mics if m in p}
                                      for p in (stricter, picks)])
              for mics in ({1}, {2, 3})]
    assert not halves[0][0].notable and not halves[1][0].notable
    assert halves[0][0].plus(halves[1][0]) == subset


# --------------------------------------------------------------------------- negatives_table

def _check_negatives(neg, avoid, shapes, box, min_distance):
    for m, rows in neg.per_micrograph():
        xy = neg.xy[rows]
        r, c = shapes[m]
        assert np.all(xy >= box / 2)
        assert np.all(xy[:, 0] <= c - box / 2) and np.all(xy[:, 1] <= r - box / 2)
        avoid_xy = avoid.xy[avoid.mic == m]
        if len(avoid_xy):
            assert cKDTree(avoid_xy).query(xy)[0].min() >= min_distance
        if len(xy) > 1:  # negatives keep a quarter box from each other
            assert pdist(xy).min() >= box / 4


def test_negatives_table_total_and_even_spread():
    shapes = {0: (500, 500), 3: (400, 600), 5: (500, 500)}
    avoid = _table([0, 0, 5], [[250, 250], [100, 100], [400, 300]])
    neg = negatives_table(avoid, shapes, box=40, total=31, min_distance=20, seed=1)
    assert len(neg) == 31
    assert neg.voters is None
    counts = {m: len(rows) for m, rows in neg.per_micrograph()}
    assert counts == {0: 11, 3: 10, 5: 10}
    _check_negatives(neg, avoid, shapes, 40, 20)
    # micrographs absent from ``shapes`` get nothing even if they hold picks
    assert set(neg.mic.tolist()) <= set(shapes)


def test_negatives_table_is_seeded():
    shapes = {0: (300, 300), 1: (300, 300)}
    avoid = _table([1], [[150, 150]])
    a = negatives_table(avoid, shapes, 32, 12, 16, seed=7)
    b = negatives_table(avoid, shapes, 32, 12, 16, seed=7)
    c = negatives_table(avoid, shapes, 32, 12, 16, seed=8)
    np.testing.assert_array_equal(a.mic, b.mic)
    np.testing.assert_array_equal(a.xy, b.xy)
    assert not np.array_equal(a.xy, c.xy)


def test_negatives_table_shortfall_goes_to_the_next_micrographs(caplog):
    # micrograph 0 is crowded: picks every 10 px, min_distance 20 -> no room at all
    g = np.arange(0, 201, 10.0)
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    avoid = _table(np.zeros(len(grid), dtype=int), grid)
    shapes = {0: (200, 200), 1: (1000, 1000), 2: (1000, 1000)}
    neg = negatives_table(avoid, shapes, box=32, total=30, min_distance=20, seed=0)
    counts = {m: len(rows) for m, rows in neg.per_micrograph()}
    assert 0 not in counts
    assert len(neg) == 30                    # nothing lost: 0's share went to 1 and 2
    assert counts[1] == 20 and counts[2] == 10
    _check_negatives(neg, avoid, shapes, 32, 20)


def test_negatives_table_shortfall_of_the_last_micrograph_goes_back_to_earlier_ones():
    g = np.arange(0, 201, 10.0)
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    avoid = _table(np.full(len(grid), 2), grid)   # the crowded micrograph sorts last
    shapes = {0: (1000, 1000), 1: (1000, 1000), 2: (200, 200)}
    neg = negatives_table(avoid, shapes, box=32, total=30, min_distance=20, seed=0)
    counts = {m: len(rows) for m, rows in neg.per_micrograph()}
    assert len(neg) == 30
    assert 2 not in counts
    assert counts[0] + counts[1] == 30 and counts[0] >= 10 and counts[1] >= 10
    assert np.all(np.diff(neg.mic) >= 0)           # still sorted by micrograph
    _check_negatives(neg, avoid, shapes, 32, 20)   # extras keep away from earlier negatives


def test_negatives_table_second_pass_skips_micrographs_that_are_full():
    # micrograph 0 holds one box only (box = micrograph); 1 is crowded; 2 has room
    g = np.arange(0, 201, 10.0)
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    avoid = _table(np.full(len(grid), 3), grid)
    shapes = {0: (64, 64), 1: (1000, 1000), 3: (200, 200)}
    neg = negatives_table(avoid, shapes, box=64, total=9, min_distance=20, seed=0)
    counts = {m: len(rows) for m, rows in neg.per_micrograph()}
    assert counts == {0: 1, 1: 8}
    _check_negatives(neg, avoid, shapes, 64, 20)


def test_negatives_table_warns_when_nothing_can_take_the_rest(caplog):
    shapes = {0: (64, 64)}  # box 64: exactly one centre fits
    avoid = _table([], np.empty((0, 2)))
    with caplog.at_level(logging.WARNING):
        neg = negatives_table(avoid, shapes, box=64, total=5, min_distance=10, seed=0)
    assert len(neg) == 1
    np.testing.assert_array_equal(neg.xy, [[32.0, 32.0]])
    assert "4 of 5 negatives could not be placed" in caplog.text


def test_negatives_table_zero_total_and_no_micrographs():
    avoid = _table([0], [[10, 10]])
    assert len(negatives_table(avoid, {0: (100, 100)}, 20, 0, 10, seed=0)) == 0
    assert len(negatives_table(avoid, {}, 20, 10, 10, seed=0)) == 0


# --------------------------------------------------------------------------- extraction_jobs

def test_extraction_jobs_order_and_content():
    table = _table([2, 2, 5, 9], [[1, 1], [2, 2], [5, 5], [9, 9]])
    paths = {2: "/m/two.mrc", 5: "/m/five.mrc", 9: "/m/nine.mrc", 11: "/m/unused.mrc"}
    jobs = list(extraction_jobs(table, paths))
    assert [p for p, _ in jobs] == ["/m/two.mrc", "/m/five.mrc", "/m/nine.mrc"]
    np.testing.assert_array_equal(jobs[0][1], [[1, 1], [2, 2]])
    np.testing.assert_array_equal(jobs[1][1], [[5, 5]])
    np.testing.assert_array_equal(jobs[2][1], [[9, 9]])
    # the centres concatenated in job order are the table's rows in order
    np.testing.assert_array_equal(np.vstack([xy for _, xy in jobs]), table.xy)
    assert list(extraction_jobs(_table([], np.empty((0, 2))), paths)) == []


def test_extraction_jobs_missing_path_raises():
    table = _table([1], [[0, 0]])
    with pytest.raises(KeyError):
        list(extraction_jobs(table, {}))


def test_merge_tables_sorts_by_micrograph_and_keeps_every_row():
    a = pipeline.CoordinateTable(mic=np.array([0, 2]), xy=np.array([[1.0, 1.0], [2.0, 2.0]]))
    b = pipeline.CoordinateTable(mic=np.array([1, 0]), xy=np.array([[3.0, 3.0], [4.0, 4.0]]))
    merged = pipeline.merge_tables(a, b)
    assert merged.mic.tolist() == [0, 0, 1, 2]
    assert merged.xy[:, 0].tolist() == [1.0, 4.0, 3.0, 2.0]
    assert len(pipeline.merge_tables()) == 0


def test_offcentre_table_skips_unreadable_micrographs():
    positives = pipeline.CoordinateTable(mic=np.array([0, 1]),
                                         xy=np.array([[200.0, 200.0], [200.0, 200.0]]))
    shifted = pipeline.offcentre_table(positives, positives, {0: (400, 400)}, shift=50.0,
                                       clearance=10.0, seed=0)
    assert shifted.mic.tolist() == [0]
    assert np.linalg.norm(shifted.xy[0] - [200.0, 200.0]) == pytest.approx(50.0)


def test_self_training_rows_take_confident_decisions_only():
    posterior = np.array([0.99, 0.95, 0.5, 0.05, 0.01, np.nan, 0.99])
    positive = np.array([True, False, False, False, True, False, False])
    usable = np.array([True, True, True, True, True, True, False])
    chosen, hard = pipeline.self_training_rows(posterior, positive, usable, 0.9)
    assert chosen.tolist() == [0, 1, 4]  # the AND set stays, confident particles join it
    assert hard.tolist() == [3]          # confident junk outside the AND set


def test_median_spacing_is_the_nearest_neighbour_distance_within_each_micrograph():
    """A square lattice of pitch 30 px on one micrograph and of 50 px on another: every
    coordinate's nearest neighbour lies one pitch away, and coordinates of different
    micrographs are never neighbours (the second lattice sits on top of the first)."""
    fine = np.stack(np.meshgrid(np.arange(5) * 30.0, np.arange(5) * 30.0), -1).reshape(-1, 2)
    coarse = np.stack(np.meshgrid(np.arange(3) * 50.0, np.arange(3) * 50.0), -1).reshape(-1, 2)
    both = CoordinateTable(mic=np.repeat([1, 2], [len(fine), len(coarse)]),
                           xy=np.concatenate([fine, coarse + 1.0]))
    assert pipeline.median_spacing(both) == 30.0  # 25 of the 34 at 30 px
    second = CoordinateTable(mic=np.full(len(coarse), 2), xy=coarse)
    assert pipeline.median_spacing(second, min_neighbours=9) == 50.0
    # too few coordinates with a neighbour to tell: one per micrograph, or under the minimum
    assert pipeline.median_spacing(CoordinateTable(mic=np.arange(5), xy=coarse[:5])) is None
    assert pipeline.median_spacing(second, min_neighbours=10) is None
    assert pipeline.median_spacing(CoordinateTable(mic=np.empty(0, dtype=int),
                                                   xy=np.empty((0, 2)))) is None


def test_agreement_shares_count_confirmations_and_agreement_over_chance():
    """Two pickers on a 10 x 10 lattice of pitch 50 px, one missing a fifth of it; a third
    picks between the lattice points, 25 px from every particle, so nobody confirms it.
    Chance: the discs of radius 5 px of the partner's coordinates over the area all the
    coordinates span with the radius around them (x 0 to 475, y 0 to 450)."""
    grid = np.stack(np.meshgrid(np.arange(10) * 50.0, np.arange(10) * 50.0), -1).reshape(-1, 2)
    between = grid[:50] + 25.0
    table = consensus_table([{1: grid}, {1: grid[20:]}, {1: between}], radius=5.0)
    confirmed, over_chance = pipeline.agreement_shares(table, radius=5.0)
    assert confirmed == pytest.approx([0.8, 1.0, 0.0])
    disc_share = np.pi * 25 / (485 * 460)  # of one coordinate
    # the first picker's best partner is the second: 80 of its 100 picks against
    # 100 picks x 80 discs of chance; the second's is the first: 80 of 80 against 80 x 100
    assert over_chance == pytest.approx([80 / (100 * 80 * disc_share),
                                         80 / (80 * 100 * disc_share), 0.0])
    lone = consensus_table([{1: grid}, {2: grid}], radius=5.0)  # never on one micrograph
    assert pipeline.agreement_shares(lone, radius=5.0) == ([0.0, 0.0], [None, None])
