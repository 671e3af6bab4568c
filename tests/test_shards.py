"""Extraction and scoring in shards (one job each): the shards cover every row once and
merge into exactly what the one-piece stages write; a missing, repeated or foreign shard
is refused."""
import os

import numpy as np
import pytest

from deepconsensus_plugin.core import run_summary, shards, stages
from deepconsensus_plugin.core.run_folder import RunFolder, RunFolderError
from deepconsensus_plugin.core.stack import boxes_per_chunk, create_stack, open_stack

PARAMS = stages.ExtractionParams(network_size=16)


@pytest.mark.parametrize("boxes, n_shards", [
    ({1: 10, 2: 10, 3: 10, 4: 10}, 2), ({1: 100, 2: 1, 3: 1, 4: 1}, 3),
    ({5: 3, 9: 0, 7: 8}, 5), ({}, 2), ({1: 4}, 1)])
def test_micrograph_shards_hold_every_micrograph_once_in_order(boxes, n_shards):
    groups = shards.micrograph_shards(boxes, n_shards)
    assert len(groups) == n_shards
    assert [m for group in groups for m in group] == sorted(boxes)


def test_micrograph_shards_balance_the_boxes():
    groups = shards.micrograph_shards({m: 10 for m in range(1, 9)}, 4)
    assert [len(group) for group in groups] == [2, 2, 2, 2]


@pytest.mark.parametrize("n, n_shards", [(0, 3), (1, 1), (511, 2), (513, 2), (5000, 3),
                                         (1024, 7)])
def test_particle_shards_tile_the_stack_on_whole_batches(n, n_shards):
    ranges = shards.particle_shards(n, n_shards)
    assert len(ranges) == n_shards
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert all(start % stages.SCORING_BATCH == 0 for start, stop in ranges if stop > start)


def test_a_shard_number_out_of_range_is_refused():
    with pytest.raises(ValueError, match="shards must be at least 1"):
        shards.particle_shards(10, 0)


def one_piece(run, tmp_path):
    """The run's stacks and record as the one-piece extraction writes them."""
    reference = RunFolder(tmp_path / "reference")
    for name in (run.CONSENSUS, run.NEGATIVES, run.MICROGRAPHS, run.INFO):
        os.makedirs(reference.path, exist_ok=True)
        with open(run.file(name), "rb") as source, open(reference.file(name), "wb") as target:
            target.write(source.read())
    info = stages.extraction_stage(reference, PARAMS)
    return reference, info


@pytest.mark.parametrize("n_shards", [1, 3, 6])
def test_extraction_shards_merge_into_the_one_piece_stacks(prepared, tmp_path, n_shards):
    run, _ = prepared
    extracted = sum(shards.extraction_shard_stage(run, shard, n_shards, PARAMS)
                    for shard in range(1, n_shards + 1))
    assert extracted == len(run.consensus()) + len(run.negatives())  # none twice, none lost
    info = shards.merge_extraction_stage(run, n_shards, PARAMS)
    reference, expected = one_piece(run, tmp_path)
    for name in (run.OR_PARTICLES, run.NEG_PARTICLES):
        with open_stack(run.file(name)) as merged, open_stack(reference.file(name)) as whole:
            np.testing.assert_array_equal(merged[:], whole[:])
    assert (info.n_crossing_border, info.skipped_micrographs) == \
        (expected.n_crossing_border, expected.skipped_micrographs)
    assert run.info().extraction.network_size == 16


def test_rows_copied_in_chunks_land_where_the_shard_says(tmp_path):
    """A shard's rows go to their places in the run's stack, a chunk of rows at a time:
    runs of consecutive rows that cross a chunk's end, and single rows between gaps."""
    size = 200
    chunk = boxes_per_chunk(size)
    assert chunk < 40  # several chunks below
    rows = np.r_[np.arange(3, 3 + chunk + 5), chunk + 10, chunk + 12,
                 np.arange(2 * chunk + 20, 3 * chunk + 21)]
    values = np.random.default_rng(0).standard_normal((len(rows), size, size))
    source = create_stack(str(tmp_path / "shard.npy"), len(rows), size)
    source[0:len(rows)] = values
    source.close()
    target = create_stack(str(tmp_path / "run.npy"), int(rows[-1]) + 3, size)
    with open_stack(str(tmp_path / "shard.npy")) as shard:
        shards._copy_rows(shard, target, rows)
    target.close()
    with open_stack(str(tmp_path / "run.npy")) as merged:
        np.testing.assert_array_equal(merged[rows], values.astype(np.float16))
        others = np.setdiff1d(np.arange(len(merged)), rows)
        assert not merged[others].any()


def test_a_failed_shard_is_refused_and_runs_again_alone(prepared, tmp_path):
    run, mics = prepared
    os.rename(mics[3].path, mics[3].path + ".away")  # the last shard's micrograph is missing
    shards.extraction_shard_stage(run, 1, 2, PARAMS)
    with pytest.raises(Exception, match="file not found"):
        shards.extraction_shard_stage(run, 2, 2, PARAMS)
    with pytest.raises(RunFolderError, match="shard 2 of 2 has not finished"):
        shards.merge_extraction_stage(run, 2, PARAMS)
    os.rename(mics[3].path + ".away", mics[3].path)
    first = os.stat(run.file(RunFolder.shard_name("extract", 1, 2, ".npz"))).st_mtime_ns
    shards.extraction_shard_stage(run, 2, 2, PARAMS)
    shards.merge_extraction_stage(run, 2, PARAMS)
    assert os.stat(run.file(RunFolder.shard_name("extract", 1, 2, ".npz"))).st_mtime_ns == first
    reference, _ = one_piece(run, tmp_path)
    with open_stack(run.file(run.OR_PARTICLES)) as merged, \
            open_stack(reference.file(run.OR_PARTICLES)) as whole:
        np.testing.assert_array_equal(merged[:], whole[:])


def test_shards_of_another_cut_or_setting_are_refused(prepared):
    run, _ = prepared
    for shard in (1, 2):
        shards.extraction_shard_stage(run, shard, 2, PARAMS)
    with pytest.raises(RunFolderError, match="other settings"):
        shards.merge_extraction_stage(run, 2, stages.ExtractionParams(network_size=24))
    # a shard's record that claims rows of another shard: one row repeated, one missing
    name = RunFolder.shard_name("extract", 2, 2, ".npz")
    data = run.arrays(name)
    data["or_rows"] = np.concatenate([[0], data["or_rows"][1:]])
    run.write_arrays(name, **data)
    with pytest.raises(RunFolderError, match="miss 1 and repeat 1 of the"):
        shards.merge_extraction_stage(run, 2, PARAMS)


def test_skipped_micrographs_are_skipped_by_their_shard(prepared):
    run, mics = prepared
    with open(mics[1].path, "r+b") as handle:  # truncated: unreadable
        handle.truncate(100)
    params = stages.ExtractionParams(network_size=16, skip_bad_micrographs=True)
    for shard in (1, 2, 3):
        shards.extraction_shard_stage(run, shard, 3, params)
    info = shards.merge_extraction_stage(run, 3, params)
    assert info.skipped_micrographs == [mics[1].path] and info.skipped_mic_ids == [2]


def test_scoring_shards_merge_into_the_one_piece_scores(tmp_path):
    """Scores of 3 shards of a 1,300-box stack equal the one-piece scoring's to the bit and
    are recorded as it records them; a missing shard is refused.  (Random boxes and an
    untrained network: only which row gets which score matters.)"""
    import keras

    from deepconsensus_plugin.core.model import build_model
    from deepconsensus_plugin.core.pipeline import CoordinateTable
    from deepconsensus_plugin.core.run_folder import ExtractionInfo
    from deepconsensus_plugin.core.stack import create_stack

    n, n_shards = 1300, 3
    run = RunFolder(tmp_path)
    run.write_table(run.CONSENSUS, CoordinateTable(mic=np.repeat([1, 2], [700, 600]),
                                                   xy=np.zeros((n, 2))))
    run.update_info(extraction=ExtractionInfo(16, False, 0, ["m2.mrc"], [2], 0, 0.0))
    with create_stack(run.file(run.OR_PARTICLES), n, 16) as stack:
        stack[:] = np.random.default_rng(0).normal(size=(n, 16, 16))
    keras.utils.set_random_seed(0)
    build_model("fast", 16).save(run.file(run.MODEL))
    whole = stages.scoring_stage(run, 1, 1).copy()
    assert np.isnan(whole[700:]).all() and np.isfinite(whole[:700]).all()  # m2 skipped
    os.unlink(run.file(run.CNN_SCORES))
    with pytest.raises(RunFolderError, match="scoring shard 1 of 3"):
        shards.merge_scores_stage(run, 1, 1, n_shards)
    scored = [shards.scoring_shard_stage(run, 1, 1, shard, n_shards)
              for shard in range(1, n_shards + 1)]
    assert scored == [512, 512, 276]
    merged = shards.merge_scores_stage(run, 1, 1, n_shards)
    np.testing.assert_array_equal(merged, whole)
    np.testing.assert_array_equal(run.array(run.CNN_SCORES), whole)
    # a shard scored from another stack is refused
    name = RunFolder.shard_name("score_round1of1", 2, 3, ".npz")
    data = run.arrays(name)
    data["n"] = np.array(n + 1)
    run.write_arrays(name, **data)
    with pytest.raises(RunFolderError, match="scored another stack"):
        shards.merge_scores_stage(run, 1, 1, n_shards)


def test_known_particles_show_the_run_s_field_of_view(prepared, tmp_path):
    """Known negative particles extracted with a larger box are cut to the run's field of
    view at their pixel size before they are resized: images of the OR picks in boxes of
    72 px at the run's 2 Å/px become exactly the run's own boxes of those picks, in the
    one-piece extraction and the merged shards alike.  Resized whole (no pixel size
    known), they would show everything 1.5 times smaller; images narrower than the run's
    field are refused, naming the file and the box they need."""
    import mrcfile

    from deepconsensus_plugin.core.extraction import MicrographError, cut_boxes, read_micrograph
    from deepconsensus_plugin.core.run_folder import KnownParticles

    run, mics = prepared
    table = run.consensus()
    rows = np.flatnonzero(table.mic == 1)[:12]
    wide, _ = cut_boxes(read_micrograph(mics[0].path), table.xy[rows], 72)
    stack = str(tmp_path / "ice.mrcs")
    mrcfile.write(stack, wide.astype(np.float32))
    items = [(i + 1, stack) for i in range(len(rows))]
    n_negatives = len(run.negatives())

    def known_rows(info_run):
        with open_stack(info_run.file(info_run.NEG_PARTICLES)) as negatives, \
                open_stack(info_run.file(info_run.OR_PARTICLES)) as boxes:
            return np.asarray(negatives[n_negatives:]), np.asarray(boxes[rows])

    reference, _ = one_piece(run, tmp_path)
    info = stages.extraction_stage(reference, PARAMS, KnownParticles(items, 2.0))
    assert info.n_user_particles == len(rows) and not info.known_particles_inverted
    known, own = known_rows(reference)
    np.testing.assert_array_equal(known, own)
    for shard in (1, 2):
        shards.extraction_shard_stage(run, shard, 2, PARAMS)
    shards.merge_extraction_stage(run, 2, PARAMS, KnownParticles(items, 2.0))
    np.testing.assert_array_equal(known_rows(run)[0], own)
    stages.extraction_stage(reference, PARAMS, KnownParticles(items, None))
    whole, _ = known_rows(reference)
    assert np.abs(whole - own).max() > 1.0
    with pytest.raises(MicrographError, match=r"ice.mrcs: particle images of 72 px are "
                                              r"narrower than the run's boxes \(96 px"):
        stages.extraction_stage(reference, PARAMS, KnownParticles(items, 1.0))


def test_known_particles_with_inverted_contrast_are_inverted_back(prepared, tmp_path):
    """Particles extracted with the contrast inverted (RELION's and Xmipp's default) come
    with the opposite pixel skewness of the run's boxes: they are inverted to match,
    which the record, the log and the summary say; ones of the run's contrast are kept."""
    import mrcfile

    from deepconsensus_plugin.core.extraction import cut_boxes, read_micrograph
    from deepconsensus_plugin.core.run_folder import KnownParticles

    run, mics = prepared
    table = run.consensus()
    rows = np.flatnonzero(table.mic == 1)[:12]
    boxes, _ = cut_boxes(read_micrograph(mics[0].path), table.xy[rows], 48)
    stack = str(tmp_path / "inverted.mrcs")
    mrcfile.write(stack, -boxes.astype(np.float32))
    reference, _ = one_piece(run, tmp_path)
    info = stages.extraction_stage(reference, PARAMS,
                                   KnownParticles([(i + 1, stack) for i in range(12)], 2.0))
    assert info.known_particles_inverted
    with open_stack(reference.file(reference.NEG_PARTICLES)) as negatives, \
            open_stack(reference.file(reference.OR_PARTICLES)) as own:
        np.testing.assert_array_equal(np.asarray(negatives[len(negatives) - 12:]),
                                      np.asarray(own[rows]))
    assert any("opposite contrast of the micrographs and were inverted" in line
               for line in run_summary.summary_lines(reference.info()))


@pytest.mark.parametrize("run_skew, known_skew, n, inverted", [
    (-0.5, 0.4, 100, True), (-0.2, 0.2, 10, True), (0.3, -0.3, 50, True),
    (-0.5, -0.4, 100, False), (-0.5, 0.4, 9, False), (-0.5, 0.01, 100, False),
    (0.01, 0.5, 100, False)])
def test_known_particles_inverted_needs_clear_opposite_skewness(run_skew, known_skew, n,
                                                                inverted):
    assert stages.known_particles_inverted(run_skew, known_skew, n) is inverted
