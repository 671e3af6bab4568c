"""Tests for deepconsensus_plugin.core.consensus (pure numpy/scipy, no Scipion)."""
import numpy as np
from hypothesis import given, settings, strategies as st
from scipy.spatial import cKDTree

from deepconsensus_plugin.core.consensus import (Consensus, _candidate_pairs, _greedy_groups,
                                                 _join_closest_first, consensus,
                                                 merge_duplicates, rescale)


def _rows(result: Consensus) -> dict:
    """Consensus as {rounded (x, y): tuple of voters}, independent of row order."""
    return {tuple(np.round(xy, 6)): tuple(bool(v) for v in voters)
            for xy, voters in zip(result.xy, result.voters)}


# --------------------------------------------------------------------------- hand-made sets

def test_three_pickers_known_and_or_sets():
    a = np.array([[100.0, 100.0], [300.0, 300.0], [500.0, 100.0], [700.0, 700.0]])
    b = np.array([[101.0, 100.0], [302.0, 300.0], [900.0, 900.0]])
    c = np.array([[102.0, 100.0], [500.0, 102.0], [50.0, 800.0]])
    result = consensus([a, b, c], radius=5.0)

    expected = {
        (101.0, 100.0): (True, True, True),    # all three, mean of 100, 101, 102
        (301.0, 300.0): (True, True, False),   # A and B
        (500.0, 101.0): (True, False, True),   # A and C
        (700.0, 700.0): (True, False, False),  # A only
        (900.0, 900.0): (False, True, False),  # B only
        (50.0, 800.0): (False, False, True),   # C only
    }
    assert _rows(result) == expected
    assert len(result) == 6
    assert result.voters.shape == (6, 3)
    assert result.voters.dtype == bool
    votes = dict(zip(map(tuple, np.round(result.xy, 6)), result.votes))
    assert votes[(101.0, 100.0)] == 3
    assert votes[(301.0, 300.0)] == 2
    assert votes[(500.0, 101.0)] == 2
    assert votes[(700.0, 700.0)] == 1
    assert result.votes.dtype == np.int64
    # AND sets at 2 and 3 votes, OR set is everything
    assert sorted(map(tuple, np.round(result.xy[result.and_mask(3)], 6))) == [(101.0, 100.0)]
    assert sorted(map(tuple, np.round(result.xy[result.and_mask(2)], 6))) == [
        (101.0, 100.0), (301.0, 300.0), (500.0, 101.0)]
    assert result.and_mask(1).all()
    assert not result.and_mask(4).any()


def test_averaged_position_is_exact_mean_of_matched_picks():
    picks = [np.array([[10.0, 20.0]]), np.array([[12.0, 23.0]]),
             np.array([[11.0, 17.0]]), np.array([[13.0, 20.0]])]
    result = consensus(picks, radius=5.0)
    assert len(result) == 1
    np.testing.assert_allclose(result.xy[0], [11.5, 20.0], atol=1e-12)
    assert result.votes.tolist() == [4]


def test_matching_is_one_to_one():
    """Two particles of picker B near one pick of A: only one of them votes for it."""
    a = np.array([[100.0, 100.0]])
    b = np.array([[103.0, 100.0], [96.0, 100.0]])  # 6 px apart, not duplicates at radius 5
    result = consensus([a, b], radius=5.0)
    assert len(result) == 2
    assert result.votes.sum() == 3
    assert sorted(result.votes.tolist()) == [1, 2]
    # the nearer one (103) is the one matched; 96 stays B's alone
    assert _rows(result) == {(101.5, 100.0): (True, True), (96.0, 100.0): (False, True)}
    # each picker votes at most once for each consensus coordinate, and exactly once per pick
    assert result.voters[:, 0].sum() == 1
    assert result.voters[:, 1].sum() == 2


def test_one_to_one_a_taken_pick_leaves_its_neighbour_the_next():
    """A pick whose nearest partner is taken pairs with the next nearest within the radius."""
    a = np.array([[0.0, 0.0], [5.0, 0.0]])
    b = np.array([[5.0, -1.0], [2.6, 3.0]])   # 4.66 apart: not duplicates at radius 4.5
    # A(5,0)-B(5,-1) is the closest pair.  B(2.6,3)'s nearest pick of A is A(5,0) (3.84),
    # already taken; it pairs with A(0,0) (3.97 < 4.5) instead of staying alone.
    result = consensus([a, b], radius=4.5)
    assert _rows(result) == {(5.0, -0.5): (True, True), (1.3, 1.5): (True, True)}


def test_a_chain_of_picks_longer_than_the_radius_is_not_one_particle():
    """Three pickers' picks 9 and 9.5 px apart in a row (radius 10): the closest pair joins;
    the third lies 14 px from their mean, so it stays alone although 9.5 px from one of
    them."""
    picks = [np.array([[x, 0.0]]) for x in (0.0, 9.0, 18.5)]
    result = consensus(picks, radius=10.0)
    assert _rows(result) == {(4.5, 0.0): (True, True, False), (18.5, 0.0): (False, False, True)}


def test_radius_boundary_just_inside_and_just_outside():
    radius = 10.0
    a = np.array([[0.0, 0.0]])
    inside = consensus([a, np.array([[radius - 1e-6, 0.0]])], radius)
    outside = consensus([a, np.array([[radius + 1e-6, 0.0]])], radius)
    assert len(inside) == 1 and inside.votes.tolist() == [2]
    assert len(outside) == 2 and outside.votes.tolist() == [1, 1]
    # also diagonally: the radius is Euclidean, not per axis
    d = (radius - 1e-3) / np.sqrt(2)
    assert len(consensus([a, np.array([[d, d]])], radius)) == 1
    d = (radius + 1e-3) / np.sqrt(2)
    assert len(consensus([a, np.array([[d, d]])], radius)) == 2


def test_duplicates_within_one_picker_are_merged_and_vote_once():
    a = np.array([[100.0, 100.0], [102.0, 100.0], [400.0, 400.0]])
    b = np.array([[101.0, 100.0]])
    result = consensus([a, b], radius=5.0)
    assert len(result) == 2
    rows = _rows(result)
    # A's duplicates merge to (101, 100), then B's pick at (101, 100) matches it
    assert rows == {(101.0, 100.0): (True, True), (400.0, 400.0): (True, False)}
    assert result.votes.max() <= 2


def test_merge_duplicates_pairs_and_chains():
    xy = np.array([[0.0, 0.0], [3.0, 0.0], [6.0, 0.0],     # chain: 0-3, 3-6 within 4
                   [100.0, 100.0], [100.0, 102.0],        # pair
                   [50.0, 50.0]])                          # alone
    merged = merge_duplicates(xy, radius=4.0)
    got = sorted(map(tuple, np.round(merged, 9)))
    assert got == [(3.0, 0.0), (50.0, 50.0), (100.0, 101.0)]


def test_merge_duplicates_keeps_distinct_and_copes_with_edge_cases():
    xy = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    merged = merge_duplicates(xy, radius=5.0)
    np.testing.assert_array_equal(merged, xy)
    assert merged is not xy  # a copy, not the input
    assert merge_duplicates(np.empty((0, 2)), 5.0).shape == (0, 2)
    np.testing.assert_array_equal(merge_duplicates([[1.0, 2.0]], 5.0), [[1.0, 2.0]])
    # radius 0 merges nothing, even exact duplicates
    same = np.array([[1.0, 1.0], [1.0, 1.0]])
    assert len(merge_duplicates(same, 0.0)) == 2
    assert len(merge_duplicates(same, 0.5)) == 1
    # flat input is reshaped to (n, 2)
    assert merge_duplicates(np.array([1.0, 2.0, 30.0, 40.0]), 1.0).shape == (2, 2)


def test_empty_pickers():
    a = np.array([[10.0, 10.0], [50.0, 50.0]])
    empty = np.empty((0, 2))
    result = consensus([empty, a, empty], radius=3.0)
    assert len(result) == 2
    assert result.voters.shape == (2, 3)
    assert result.voters[:, 1].all() and not result.voters[:, [0, 2]].any()
    np.testing.assert_array_equal(np.sort(result.xy, axis=0), a)

    nothing = consensus([empty, empty], radius=3.0)
    assert len(nothing) == 0
    assert nothing.xy.shape == (0, 2)
    assert nothing.voters.shape == (0, 2)
    assert nothing.votes.shape == (0,)

    none = consensus([], radius=3.0)
    assert len(none) == 0 and none.voters.shape == (0, 0)


def test_single_picker_is_its_deduplicated_picks():
    a = np.array([[10.0, 10.0], [11.0, 10.0], [50.0, 50.0]])
    result = consensus([a], radius=3.0)
    assert _rows(result) == {(10.5, 10.0): (True,), (50.0, 50.0): (True,)}


def test_rescale():
    xy = np.array([[100.0, 50.0], [0.0, 1.0]])
    np.testing.assert_allclose(rescale(xy, 1.0, 2.0), [[50.0, 25.0], [0.0, 0.5]])
    np.testing.assert_allclose(rescale(xy, 2.0, 1.0), [[200.0, 100.0], [0.0, 2.0]])
    np.testing.assert_array_equal(rescale(xy, 1.3, 1.3), xy)
    np.testing.assert_allclose(rescale(rescale(xy, 1.1, 3.7), 3.7, 1.1), xy)
    out = rescale([[1, 2]], 1.0, 4.0)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, [[0.25, 0.5]])


def test_large_random_sets_are_consistent():
    """Correctness on 10^4 points per picker (a sanity check that large inputs work; no timing)."""
    rng = np.random.default_rng(7)
    truth = rng.uniform(0, 20000, size=(10_000, 2))
    radius = 5.0
    pickers = []
    for _ in range(3):
        keep = rng.random(len(truth)) < 0.9
        pickers.append(truth[keep] + rng.normal(scale=0.5, size=(keep.sum(), 2)))
    result = consensus(pickers, radius)
    deduped = [merge_duplicates(p, radius) for p in pickers]
    assert result.votes.sum() == sum(len(d) for d in deduped)
    for p, d in enumerate(deduped):
        assert result.voters[:, p].sum() == len(d)
    assert result.votes.min() >= 1 and result.votes.max() <= 3
    # almost every true particle picked by all three should be found with 3 votes
    all_three = len(truth) * 0.9 ** 3
    assert (result.votes == 3).sum() > 0.95 * all_three
    # and each consensus coordinate is near a true particle
    dist, _ = cKDTree(truth).query(result.xy)
    assert np.percentile(dist, 99) < 3.0


# --------------------------------------------------------------------------- properties

coordinate = st.floats(min_value=0, max_value=200, allow_nan=False, allow_infinity=False)
point_set = st.lists(st.tuples(coordinate, coordinate), min_size=0, max_size=30)


@settings(max_examples=150, deadline=None)
@given(picks=st.lists(point_set, min_size=1, max_size=5),
       radius=st.floats(min_value=0.5, max_value=30))
def test_consensus_properties(picks, radius):
    arrays = [np.array(p, dtype=np.float64).reshape(-1, 2) for p in picks]
    result = consensus(arrays, radius)
    n_pickers = len(arrays)
    deduped = [merge_duplicates(a, radius) for a in arrays]

    assert result.voters.shape == (len(result), n_pickers)
    assert result.xy.shape == (len(result), 2)
    votes = result.votes
    if len(result):
        assert votes.min() >= 1
        assert votes.max() <= n_pickers
    for p, d in enumerate(deduped):
        assert result.voters[:, p].sum() == len(d)
    assert votes.sum() == sum(len(d) for d in deduped)

    # Within radius of an input pick after deduplication: every pick of a group lies
    # closer than the radius to the group's mean.
    # (Against raw picks this need not hold: a ring of duplicates merges to its centre.)
    everything = np.vstack(arrays)
    if len(result):
        dist, _ = cKDTree(np.vstack(deduped)).query(result.xy)
        assert np.all(dist < radius)
        # each consensus coordinate lies within the bounding box of the input (means)
        assert np.all(result.xy >= everything.min(axis=0) - 1e-9)
        assert np.all(result.xy <= everything.max(axis=0) + 1e-9)


@settings(max_examples=100, deadline=None)
@given(points=point_set, radius=st.floats(min_value=0.1, max_value=30))
def test_merge_duplicates_properties(points, radius):
    xy = np.array(points, dtype=np.float64).reshape(-1, 2)
    merged = merge_duplicates(xy, radius)
    assert merged.shape[1] == 2
    assert len(merged) <= len(xy)
    assert (len(merged) == 0) == (len(xy) == 0)
    if len(xy):
        # every input is within radius of another input of its cluster, so a merged centre
        # lies within the bounding box of the input
        assert np.all(merged >= xy.min(axis=0) - 1e-9)
        assert np.all(merged <= xy.max(axis=0) + 1e-9)
        # points that are all farther than radius apart stay untouched
        if len(cKDTree(xy).query_pairs(radius)) == 0:
            np.testing.assert_array_equal(merged, xy)
        # merging is idempotent in count only when clusters are far apart; at least it
        # never increases
        assert len(merge_duplicates(merged, radius)) <= len(merged)


@settings(max_examples=60, deadline=None)
@given(points=st.lists(st.tuples(coordinate, coordinate), min_size=1, max_size=30,
                       unique=True),
       n_pickers=st.integers(min_value=1, max_value=4))
def test_identical_pickers_agree_everywhere(points, n_pickers):
    xy = np.array(points, dtype=np.float64)
    radius = 2.0
    result = consensus([xy.copy() for _ in range(n_pickers)], radius)
    deduped = merge_duplicates(xy, radius)
    assert len(result) == len(deduped)
    assert np.all(result.votes == n_pickers)
    np.testing.assert_allclose(np.sort(result.xy, axis=0), np.sort(deduped, axis=0), atol=1e-9)


def test_order_of_pickers_changes_nothing_where_picks_crowd():
    """B's pick lies as close to A's first pick as to A's second: merging the pickers one
    after the other into running means let the order decide; closest pairs first, ties
    broken by position, does not."""
    a = np.array([[0.0, 0.0], [8.0, 0.0]])   # two particles of A, 8 px apart
    b = np.array([[4.0, 0.0]])               # 4 px from each, at radius 5
    c = np.array([[9.0, 1.0]])               # near A's second, 5.1 px from B
    results = [consensus(list(p), radius=5.0) for p in ([a, b, c], [b, c, a], [c, a, b])]
    columns = ([0, 1, 2], [2, 0, 1], [1, 2, 0])  # where pickers A, B, C sit in each call
    for result, cols in zip(results, columns):
        np.testing.assert_array_equal(result.xy, results[0].xy)
        np.testing.assert_array_equal(result.voters[:, cols], results[0].voters)
    # C joins A's second pick (the closest pair); B is 4 px from both of A's picks and the
    # tie goes to the pair that lies first by position, A's first pick
    assert _rows(results[0]) == {(2.0, 0.0): (True, True, False),
                                 (8.5, 0.5): (True, False, True)}


integer_point_set = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)),
                             min_size=0, max_size=25)


@settings(max_examples=100, deadline=None)
@given(picks=st.lists(integer_point_set, min_size=2, max_size=4),
       radius=st.floats(min_value=1.0, max_value=15), data=st.data())
def test_consensus_does_not_depend_on_picker_order(picks, radius, data):
    """Integer coordinates (box files) make ties in distance common: the result is the same
    rows in the same order, with the voters' columns permuted like the pickers."""
    arrays = [np.array(p, dtype=np.float64).reshape(-1, 2) for p in picks]
    order = data.draw(st.permutations(range(len(arrays))))
    first = consensus(arrays, radius)
    second = consensus([arrays[i] for i in order], radius)
    np.testing.assert_allclose(second.xy, first.xy, atol=1e-9)
    np.testing.assert_array_equal(second.voters, first.voters[:, list(order)])


@settings(max_examples=150, deadline=None)
@given(picks=st.lists(integer_point_set, min_size=2, max_size=5),
       radius=st.floats(min_value=1.0, max_value=25))
def test_simple_components_are_grouped_as_the_pair_loop_would(picks, radius):
    """The shortcut (a component of at most three picks of different pickers is one group)
    gives the groups that joining every pair closest first, one by one, gives."""
    cleaned = [merge_duplicates(np.array(p, dtype=np.float64).reshape(-1, 2), radius)
               for p in picks]
    xy = np.vstack(cleaned)
    owner = np.repeat(np.arange(len(cleaned)), [len(c) for c in cleaned])
    pairs, distance = _candidate_pairs(xy, owner, radius)
    one_by_one = _greedy_groups(xy, owner, pairs, distance, radius)
    shortcut = _join_closest_first(xy, owner, radius)
    # the same partition of the picks, whatever the groups are numbered
    assert len(set(zip(one_by_one.tolist(), shortcut.tolist()))) == len(set(one_by_one.tolist()))
    assert len(set(shortcut.tolist())) == len(set(one_by_one.tolist()))
