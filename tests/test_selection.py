"""The retained / pruned split: threshold, duplicates, partition."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree

from deepconsensus_plugin.core.selection import (MicrographFrame, edge_distances,
                                                 find_duplicates, split_scores, tiled_plane)


def test_second_pick_of_a_particle_is_a_duplicate_of_the_better_one():
    xy = np.array([[100.0, 100.0], [110.0, 100.0], [300.0, 300.0]])
    scores = np.array([0.7, 0.9, 0.8])
    dup = find_duplicates(np.zeros(3), xy, scores, np.ones(3, bool), 30.0)
    assert dup.tolist() == [True, False, False]


def test_other_micrographs_and_unselected_rows_never_suppress():
    xy = np.array([[100.0, 100.0], [105.0, 100.0], [102.0, 100.0]])
    mic = np.array([1, 2, 1])
    scores = np.array([0.6, 0.9, 0.99])
    candidates = np.array([True, True, False])  # row 2 is below the threshold
    assert not find_duplicates(mic, xy, scores, candidates, 30.0).any()


def test_a_chain_keeps_every_other_pick_as_non_maximum_suppression_does():
    xy = np.array([[0.0, 0.0], [20.0, 0.0], [40.0, 0.0]])
    scores = np.array([0.9, 0.8, 0.7])
    dup = find_duplicates(np.zeros(3), xy, scores, np.ones(3, bool), 25.0)
    assert dup.tolist() == [False, True, False]


def test_zero_distance_disables_the_rule():
    xy = np.zeros((3, 2))
    assert not find_duplicates(np.zeros(3), xy, np.ones(3), np.ones(3, bool), 0.0).any()


def test_split_partitions_the_scored_rows_and_marks_duplicates():
    scores = np.array([0.9, 0.8, 0.2, np.nan, 0.95])
    xy = np.array([[0.0, 0.0], [10.0, 0.0], [500.0, 0.0], [800.0, 0.0], [900.0, 900.0]])
    split = split_scores(scores, 0.5, np.zeros(5), xy, 30.0)
    assert split.retained.tolist() == [0, 4]
    assert split.pruned.tolist() == [1, 2]
    assert split.duplicate.tolist() == [False, True, False, False, False]
    assert split.n_duplicates == 1
    assert split.retained_mask().tolist() == [True, False, False, False, True]


def test_tiles_keep_micrographs_apart():
    xy = np.array([[0.0, 0.0], [1000.0, 0.0], [0.0, 0.0]])
    plane = tiled_plane(np.array([3, 3, 7]), xy, 50.0)
    assert np.linalg.norm(plane[2] - plane[0]) > 50.0
    assert np.linalg.norm(plane[1] - plane[0]) == pytest.approx(1000.0)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 200), seed=st.integers(0, 10_000), distance=st.floats(1.0, 80.0))
def test_no_two_retained_coordinates_are_closer_than_the_distance(n, seed, distance):
    rng = np.random.default_rng(seed)
    mic = rng.integers(0, 3, n)
    xy = rng.uniform(0, 400, (n, 2))
    scores = rng.random(n)
    split = split_scores(scores, 0.3, mic, xy, distance)
    assert sorted(np.r_[split.retained, split.pruned].tolist()) == list(range(n))
    for m in np.unique(mic):
        kept = xy[split.retained[mic[split.retained] == m]]
        assert len(cKDTree(kept).query_pairs(distance * (1 - 1e-9))) == 0
    # every duplicate has a better-scored retained coordinate within the distance
    for row in np.flatnonzero(split.duplicate):
        same = split.retained[mic[split.retained] == mic[row]]
        near = same[np.linalg.norm(xy[same] - xy[row], axis=1) <= distance]
        assert (scores[near] >= scores[row]).any()


def test_edge_distance_is_to_the_nearest_edge_of_each_micrograph():
    xy = np.array([[0.0, 50.0], [99.0, 50.0], [50.0, 10.0], [50.0, 50.0], [5.0, 5.0]])
    mic = np.array([1, 1, 1, 2, 3])
    shapes = {1: (200, 100), 2: (60, 400)}  # (rows, columns); micrograph 3 unreadable
    distance = edge_distances(mic, xy, shapes)
    assert distance.tolist() == [0.5, 0.5, 10.5, 9.5, np.inf]


def test_edge_distance_is_to_the_edge_of_the_data_inside_a_padded_border():
    xy = np.array([[50.0, 10.0], [5.0, 100.0], [85.0, 100.0], [50.0, 195.0], [50.0, 100.0]])
    frame = MicrographFrame(rows=200, columns=100, low_y=10, high_y=0, low_x=5, high_x=20)
    distance = edge_distances(np.zeros(5), xy, {0: frame})
    # rows 0-9 and columns 0-4, 80-99 hold no data; a pick inside them lies beyond the edge
    assert distance.tolist() == [0.5, 0.5, -5.5, 4.5, 29.5]
    assert edge_distances(np.zeros(5), xy, {0: MicrographFrame(200, 100)}).tolist() == \
        edge_distances(np.zeros(5), xy, {0: (200, 100)}).tolist()


def test_coordinates_at_the_edge_are_pruned_marked_and_suppress_no_neighbour():
    # row 0 hugs the edge and scores best: it is pruned at the edge, and row 1, its
    # neighbour inside, is retained instead of being called its duplicate
    scores = np.array([0.95, 0.9, 0.2, 0.8, np.nan])
    xy = np.array([[3.0, 100.0], [20.0, 100.0], [2.0, 300.0], [200.0, 200.0], [1.0, 1.0]])
    edge = edge_distances(np.zeros(5), xy, {0: (400, 400)})
    split = split_scores(scores, 0.5, np.zeros(5), xy, 30.0, edge, 10.0)
    assert split.retained.tolist() == [1, 3]
    assert split.pruned.tolist() == [0, 2]
    assert split.at_edge.tolist() == [True, False, False, False, False]  # row 2: below threshold
    assert split.n_at_edge == 1 and split.n_duplicates == 0
    assert split_scores(scores, 0.5, np.zeros(5), xy, 30.0, edge, 0.0).retained.tolist() == [0, 3]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 150), seed=st.integers(0, 10_000), margin=st.floats(0.0, 60.0))
def test_no_retained_coordinate_is_nearer_the_edge_than_the_margin(n, seed, margin):
    rng = np.random.default_rng(seed)
    mic = rng.integers(0, 2, n)
    xy = rng.uniform(0, 300, (n, 2))
    scores = rng.random(n)
    edge = edge_distances(mic, xy, {0: (300, 300), 1: (300, 300)})
    split = split_scores(scores, 0.3, mic, xy, 20.0, edge, margin)
    assert sorted(np.r_[split.retained, split.pruned].tolist()) == list(range(n))
    assert (edge[split.retained] >= margin).all()
    assert not (split.at_edge & split.duplicate).any()
