"""The best-centred search (core.centring): shifted boxes are cut as the OR stack's are,
the best of a pick's boxes is its score, a particle picked off-centre scores as if
centred, and sharded scoring with the search merges to the one-piece scores."""
import os

import mrcfile
import numpy as np
import pytest

from deepconsensus_plugin.core import centring, shards, stages
from deepconsensus_plugin.core.extraction import (
    blank_padding, extract_particles, read_micrograph)
from deepconsensus_plugin.core.pipeline import CoordinateTable
from deepconsensus_plugin.core.run_folder import Micrograph, RunFolder, RunFolderError
from deepconsensus_plugin.core.stack import STACK_DTYPE, open_stack


def test_search_offsets_lie_evenly_on_the_circle():
    offsets = centring.search_offsets(5.0)
    assert offsets.shape == (centring.DIRECTIONS, 2)
    np.testing.assert_allclose(np.hypot(*offsets.T), 5.0)
    np.testing.assert_allclose(offsets.sum(axis=0), 0.0, atol=1e-12)  # no direction favoured
    np.testing.assert_allclose(offsets[0], [5.0, 0.0])
    assert len({tuple(np.round(o, 9)) for o in offsets}) == centring.DIRECTIONS


def test_best_of_shifts_takes_each_picks_highest_score():
    centre = np.array([0.2, 0.9, 0.5])
    shifted = np.array([[0.1, 0.4], [0.3, 0.8], [0.5, 0.5]]).reshape(-1)
    np.testing.assert_array_equal(centring.best_of_shifts(centre, shifted), [0.4, 0.9, 0.5])
    assert centring.best_of_shifts(np.empty(0), np.empty(0)).shape == (0,)


@pytest.fixture()
def extracted(prepared):
    """The run folder of ``prepared`` after extraction, its second micrograph skipped
    (truncated after the header: unreadable)."""
    run, mics = prepared
    with open(mics[1].path, "r+b") as handle:
        handle.truncate(1024)
    stages.extraction_stage(run, stages.ExtractionParams(network_size=16,
                                                         skip_bad_micrographs=True))
    return run, mics


def shifted_boxes(run, offsets):
    info = run.info()
    return centring.ShiftedBoxes(run.consensus(),
                                 {m.mic_id: m.path for m in run.micrographs().values()},
                                 offsets, info.consensus.box, info.extraction.network_size,
                                 False,
                                 info.extraction.skipped_mic_ids)


def test_shifted_boxes_are_cut_as_the_or_stack_is(extracted):
    """A zero shift gives the OR stack's rows to the bit, a shift the box extracted at the
    moved centre; rows on a skipped micrograph are zero; any slice reads the same rows."""
    run, mics = extracted
    table = run.consensus()
    offsets = np.array([[0.0, 0.0], [3.0, -2.0]])
    boxes = shifted_boxes(run, offsets)
    assert len(boxes) == 2 * len(table) and boxes.shape == (2 * len(table), 16, 16)
    every = boxes[0:len(boxes)]
    with open_stack(run.file(run.OR_PARTICLES)) as stack:
        np.testing.assert_array_equal(every[0::2], stack[0:len(stack)])
    on = np.flatnonzero(table.mic == 3)
    micrograph = read_micrograph(mics[2].path)
    expected, _ = extract_particles(micrograph, table.xy[on] + [3.0, -2.0],
                                    run.info().consensus.box, 16)
    np.testing.assert_array_equal(every[1::2][on], expected.astype(STACK_DTYPE))
    assert not every[np.repeat(table.mic == 2, 2)].any()  # skipped: never read
    np.testing.assert_array_equal(boxes[5:37], every[5:37])


def test_shifted_boxes_across_the_edge_are_those_extraction_cuts(tmp_path):
    """Boxes that cross the micrograph's edge, or its padded border, come out as
    ``extract_particles`` cuts them from the blanked micrograph (filled with its mean),
    whichever other boxes share their slice."""
    rng = np.random.default_rng(4)
    data = rng.normal(5.0, 2.0, size=(70, 90)).astype(np.float32)
    data[:, -6:] = data[:, -7:-6]  # a padded border: columns repeating their neighbour
    path = str(tmp_path / "edge.mrc")
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
    xy = np.array([[3.0, 4.0], [45.0, 35.0], [88.0, 66.0], [-5.0, 30.0], [60.0, 2.5]])
    table = CoordinateTable(mic=np.ones(len(xy), dtype=np.int64), xy=xy)
    offsets = centring.search_offsets(4.0)
    boxes = centring.ShiftedBoxes(table, {1: path}, offsets, 24, 12, True)
    centres = (xy[:, None, :] + offsets[None]).reshape(-1, 2)
    expected, crossing = extract_particles(blank_padding(read_micrograph(path)), centres, 24,
                                           12, True)
    assert crossing.sum() > len(xy) and not crossing.all()
    np.testing.assert_array_equal(boxes[0:len(boxes)], expected.astype(STACK_DTYPE))
    inside = np.flatnonzero(~crossing)[:3]  # a slice of boxes inside the edge alone
    np.testing.assert_array_equal(boxes[inside[0]:inside[0] + 1],
                                  expected[inside[:1]].astype(STACK_DTYPE))


def centre_detector(size: int, path: str) -> None:
    """A fixed network scoring how much of a bright blob lies at the box's centre: one
    convolution over the whole box with a narrow centred Gaussian, then a sigmoid."""
    import keras

    inputs = keras.layers.Input((size, size, 1))
    conv = keras.layers.Conv2D(1, size, padding="valid", activation="sigmoid")
    outputs = keras.layers.Flatten()(conv(inputs))
    model = keras.Model(inputs, outputs)
    grid = np.arange(size) - size // 2
    weights = np.exp(-(grid[:, None] ** 2 + grid[None, :] ** 2) / (2 * 1.5 ** 2))
    conv.set_weights([(weights / weights.sum() * 0.5)[:, :, None, None], np.array([-1.5])])
    model.save(path)


def test_a_particle_picked_off_centre_scores_as_if_centred(tmp_path):
    """One blob, picked at its centre and 5 px off it: the off-centre pick scores lower on
    its own box and as high as the centred pick with a search reaching the offset."""
    image = np.zeros((200, 200), dtype=np.float32)
    grid = np.arange(200)
    image += 10 * np.exp(-((grid[None, :] - 100) ** 2 + (grid[:, None] - 100) ** 2) / 8.0)
    image += np.random.default_rng(0).normal(0, 0.05, image.shape).astype(np.float32)
    path = str(tmp_path / "blob.mrc")
    with mrcfile.new(path) as mrc:
        mrc.set_data(image)
    inputs = stages.ConsensusInput(
        micrographs=[Micrograph(mic_id=1, name="blob", path=path, label=path)],
        pickers=[stages.PickerInput("centred", {1: np.array([[100.0, 100.0]])}),
                 stages.PickerInput("off-centre", {1: np.array([[105.0, 100.0]])})],
        box=40, sampling_rate=1.0)
    run = RunFolder(tmp_path / "run")
    stages.consensus_stage(run, inputs, stages.ConsensusParams(radius=0.01))
    stages.negatives_stage(run)
    stages.extraction_stage(run, stages.ExtractionParams(network_size=40))
    centre_detector(40, run.file(run.MODEL))
    own = stages.scoring_stage(run, 1, 1).copy()
    best = stages.scoring_stage(run, 1, 1, centring_search=5.0 / 40)
    centred, off = np.argsort(np.abs(run.consensus().xy[:, 0] - 100.0))
    assert own[off] < own[centred] - 0.1
    assert best[off] == pytest.approx(best[centred], abs=0.02)
    assert best[centred] == pytest.approx(own[centred], abs=1e-6)


def test_scoring_shards_with_the_search_merge_into_the_one_piece_scores(extracted, tmp_path):
    """With the search, 3 scoring shards merge to the one-piece scores to the bit, never
    below the pick's own box's; the record keeps the distance; shards scored with another
    distance are refused."""
    import keras

    from deepconsensus_plugin.core.model import build_model

    run, _ = extracted
    keras.utils.set_random_seed(0)
    build_model("fast", 16).save(run.file(run.MODEL))
    own = stages.scoring_stage(run, 1, 1).copy()
    whole = stages.scoring_stage(run, 1, 1, centring_search=0.1).copy()
    finite = np.isfinite(own)
    assert np.array_equal(finite, np.isfinite(whole)) and not finite.all()  # m2 skipped
    assert (whole[finite] >= own[finite]).all() and (whole[finite] > own[finite]).any()
    os.unlink(run.file(run.CNN_SCORES))
    for shard in (1, 2, 3):
        shards.scoring_shard_stage(run, 1, 1, shard, 3, centring_search=0.1)
    np.testing.assert_array_equal(shards.merge_scores_stage(run, 1, 1, 3), whole)
    assert run.info().training is None  # a model scoring alone: no round to record on
    shards.scoring_shard_stage(run, 1, 1, 2, 3)
    with pytest.raises(RunFolderError, match="different distances"):
        shards.merge_scores_stage(run, 1, 1, 3)
    # a shard of an earlier version, without the setting, is refused by name
    name = RunFolder.shard_name("score_round1of1", 2, 3, ".npz")
    older = {key: value for key, value in run.arrays(name).items() if key != "centring_search"}
    run.write_arrays(name, **older)
    with pytest.raises(RunFolderError, match="shard 2 of 3 .* earlier version"):
        shards.merge_scores_stage(run, 1, 1, 3)


def test_the_published_method_scores_the_pick_only():
    assert stages.MethodOptions.for_method(stages.METHOD_PUBLISHED).centring_search == 0.0
    assert stages.MethodOptions.for_method(stages.METHOD_AGREEMENT).centring_search == \
        centring.DEFAULT_SEARCH
    assert stages.MethodOptions.for_method(stages.METHOD_AGREEMENT,
                                           best_centred=False).centring_search == 0.0


def test_a_table_row_range_reads_only_its_micrographs(tmp_path):
    """A scoring shard's shifted boxes read the micrographs of its rows and no other."""
    table = CoordinateTable(mic=np.array([1, 1, 2]), xy=np.full((3, 2), 30.0))
    path = str(tmp_path / "m1.mrc")
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.random.default_rng(1).normal(size=(64, 64)).astype(np.float32))
    boxes = centring.ShiftedBoxes(table.subset(np.array([0, 1])),
                                  {1: path, 2: str(tmp_path / "missing.mrc")},
                                  centring.search_offsets(2.0), 16, 8, False)
    assert boxes[0:len(boxes)].shape == (16, 8, 8)


def test_a_search_scores_nine_boxes_per_pick():
    assert centring.boxes_per_pick(0.0) == 1
    assert centring.boxes_per_pick(centring.DEFAULT_SEARCH) == 1 + centring.DIRECTIONS == 9
