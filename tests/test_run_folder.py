"""The run folder and its typed record, and the stages that need no network, on synthetic data."""
import glob
import json
import logging
import os
import re
from dataclasses import replace

import numpy as np
import pytest
import starfile

from deepconsensus_plugin.core import box_policy, run_summary, stages, synthetic
from deepconsensus_plugin.core.run_folder import (MODEL_NEW, SCHEMA_VERSION, AgreementInfo,
                                                  ExportInfo, ModelInfo, RankingInfo, RoundInfo,
                                                  RunFolder, RunFolderError, RunInfo,
                                                  TrainingInfo)

from .synthetic_inputs import consensus_input

BOX = 48


def test_the_record_reads_back_as_written(tmp_path):
    run = RunFolder(tmp_path)
    assert run.info() == RunInfo()  # before the first stage
    info = RunInfo(training=TrainingInfo("fast", 2, [RoundInfo(1, 3, 0.9, 0.3, 5.0, 120, 0),
                                                     RoundInfo(2, 4, 0.95, 0.2, 6.0, 130, 40)]),
                   ranking=RankingInfo(0.42, AgreementInfo([0.9, 0.8], [0.1, 0.3], 0.6)))
    run.write_info(info)
    assert run.info() == info
    assert run.info().training.last.val_accuracy == 0.95
    assert json.loads((tmp_path / "info.json").read_text())["schema_version"] == SCHEMA_VERSION
    assert [p.name for p in tmp_path.iterdir()] == ["info.json"]  # no temporary file left


def test_a_record_of_another_layout_is_refused_naming_the_file(tmp_path):
    (tmp_path / "info.json").write_text(json.dumps({"nOr": 10, "box": 48}))
    with pytest.raises(RunFolderError, match="info.json: run record of schema version None"):
        RunFolder(tmp_path).info()
    for name in RunFolder.SCORED[:-1]:
        (tmp_path / name).write_bytes(b"")
    assert not RunFolder(tmp_path).is_scored()  # the viewer and threshold protocol pass it by
    (tmp_path / "info.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION,
                                                    "ranking": {"threshold": 0.5}}))
    with pytest.raises(RunFolderError, match="section 'ranking'"):
        RunFolder(tmp_path).info()


def test_a_stage_run_again_forgets_the_later_records(tmp_path):
    run = RunFolder(tmp_path)
    run.update_info(ranking=RankingInfo(0.5), training=TrainingInfo("fast", 1))
    run.record_stage("training", TrainingInfo("paper", 1))
    assert run.info().ranking is None and run.info().training.architecture == "paper"
    with pytest.raises(KeyError):
        run.update_info(rounds=[])


def test_a_stage_before_its_inputs_says_what_to_run(tmp_path):
    with pytest.raises(RunFolderError, match="consensus"):
        stages.negatives_stage(RunFolder(tmp_path))


def test_a_stage_s_record_is_read_only_while_that_stage_stands(tmp_path):
    """What a stage reads of an earlier one (RunFolder.section): the record as written,
    refused once an earlier stage ran again and forgot it, naming the folder and stage."""
    run = RunFolder(tmp_path)
    run.record_stage("training", TrainingInfo("fast", 1))
    assert run.section("training") == TrainingInfo("fast", 1)
    run.record_stage("model", ModelInfo(MODEL_NEW))  # a new network: training is to come
    with pytest.raises(RunFolderError, match=r"%s has no training results: run that stage "
                                             r"first" % re.escape(str(tmp_path))):
        run.section("training")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    mics, pickers = synthetic.make_dataset(str(folder), n_micrographs=2, shape=(512, 512),
                                           n_particles=60, diameter=32)
    return consensus_input(mics, pickers, BOX, name="synthetic_%03d", label="Movies/%s.mrc")


def test_stages_up_to_extraction_and_from_ranking_to_star_files(tmp_path, dataset):
    """Every stage but training and scoring (which need TensorFlow, see test_cli.py):
    their files, records and the STAR files of the export."""
    run = RunFolder(tmp_path)
    consensus = stages.consensus_stage(run, dataset, stages.ConsensusParams(and_rule="all"))
    table = run.consensus()
    assert consensus.n_or == len(table) and consensus.min_votes == 3
    assert consensus.n_and == int((table.votes == 3).sum())
    assert sorted(run.micrographs()) == [1, 2]
    assert run.micrographs()[2].label == "Movies/synthetic_001.mrc"
    negatives = stages.negatives_stage(run, stages.NegativeParams(offcentre=True, seed=1))
    assert negatives.n_random == consensus.n_and and negatives.n_offcentre > 0
    assert len(run.negatives()) == negatives.n_random + negatives.n_offcentre
    bars = []

    class Bar:
        def __init__(self, description, total, unit):
            self.total, self.done = total, 0
            bars.append(self)

        def update(self, n):
            self.done += n

        def close(self):
            pass

    extracted = stages.extraction_stage(run, stages.ExtractionParams(network_size=16),
                                        progress=Bar)
    assert extracted.skipped_micrographs == [] and extracted.network_size == 16
    assert [(b.done, b.total) for b in bars] == [(len(table) + len(run.negatives()),) * 2]

    # a stand-in for the network's scores, then the real ranking, split and export
    scores = np.linspace(0, 1, len(table))
    run.write_array(run.CNN_SCORES, scores)
    ranking = stages.ranking_stage(run, combine=False)
    np.testing.assert_array_equal(run.scores(), scores)
    assert 0 < ranking.auto_threshold < 1
    split = stages.split_stage(run, 0.5, min_distance=0)
    assert len(split.retained) == int((scores >= 0.5).sum())
    assert run.info().split.n_retained == len(split.retained)
    run.update_info(export=ExportInfo(pixel_size=2.0, voltage=300, spherical_aberration=2.7,
                                      amplitude_contrast=0.1, box=BOX))
    export = stages.export_stage(run, split)
    retained = starfile.read(run.file(run.RETAINED_STAR), always_dict=True)["particles"]
    pruned = starfile.read(run.file(run.PRUNED_STAR), always_dict=True)["particles"]
    assert len(retained) == len(split.retained) and len(pruned) == len(split.pruned)
    assert set(retained["rlnMicrographName"]) <= {m.label for m in dataset.micrographs}
    assert all(os.path.exists(f) for f in export.files)
    # an earlier export's files of micrographs no longer in the run, and its RELION 3.1
    # suffix file, go: RELION's Extract would read them for micrographs of those names
    coordinates = run.file(run.COORDINATES)
    stale = [os.path.join(coordinates, "Movies", "gone_deepconsensus.star"),
             os.path.join(coordinates, "Old", "gone_deepconsensus.star"),
             os.path.join(coordinates, "coords_suffix_deepconsensus.star")]
    for path in stale:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write("data_\n")
    kept = sorted(glob.glob(os.path.join(coordinates, "**", "*.star"), recursive=True))
    assert stages.export_stage(run, split).files == export.files
    assert not any(os.path.exists(path) for path in stale)
    assert not os.path.exists(os.path.join(coordinates, "Old"))
    assert sorted(glob.glob(os.path.join(coordinates, "**", "*.star"), recursive=True)) == [
        path for path in kept if path not in stale]
    assert len(kept) - len(stale) == len(dataset.micrographs) + 1  # and the list
    summary = "\n".join(run_summary.summary_lines(run.info()))
    assert summary.startswith("Kept {:,} of {:,}".format(len(retained), len(table)))
    # consensus again: everything recorded after it describes files of the old consensus
    stages.consensus_stage(run, dataset)
    assert run.info().negatives is None and run.info().split is None


def test_the_split_prunes_picks_at_the_micrograph_edge_and_keeps_the_frames(tmp_path, dataset):
    """The edge rule through the stages: the micrographs' frames are measured once and kept,
    the record counts the coordinates pruned at the edge, the summary says so, and the
    results a viewer reads cut the same way."""
    from deepconsensus_plugin.core.selection import MicrographFrame, edge_distances
    from deepconsensus_plugin.results import RunResults

    run = RunFolder(tmp_path)
    stages.consensus_stage(run, dataset)
    table = run.consensus()
    scores = np.full(len(table), 0.9)
    run.write_array(run.CNN_SCORES, scores)
    stages.ranking_stage(run, combine=False)
    edge = edge_distances(table.mic, table.xy, {1: (512, 512), 2: (512, 512)})
    margin = float(np.quantile(edge, 0.25))  # the synthetic particles keep off the edges
    split = stages.split_stage(run, 0.5, min_distance=0, edge_margin=margin)
    assert run.has(run.FRAMES)
    assert run.micrograph_frames() == {1: MicrographFrame(512, 512), 2: MicrographFrame(512, 512)}
    near = edge < margin
    assert near.any() and not near.all()
    assert split.at_edge.tolist() == near.tolist()
    assert sorted(split.retained.tolist()) == np.flatnonzero(~near).tolist()
    record = run.info().split
    assert record.n_at_edge == int(near.sum()) and record.edge_margin_px == margin
    summary = run_summary.summary_lines(run.info())[0]
    assert "{:,} at the micrograph edge".format(int(near.sum())) in summary
    # the viewer's and re-threshold's reading: the kept shapes, no micrograph needed
    for mic in run.micrographs().values():
        os.rename(mic.path, mic.path + ".gone")
    try:
        again = RunResults(str(tmp_path)).split(0.5)
    finally:
        for mic in run.micrographs().values():
            os.rename(mic.path + ".gone", mic.path)
    assert again.at_edge.tolist() == near.tolist()


def test_frames_measure_the_padding_once_and_an_older_run_keeps_its_shapes(tmp_path):
    """A padded micrograph's frame is measured from its file and kept; a run folder made
    before frames were measured (micrograph_shapes.json only) keeps the edges it split with."""
    import mrcfile

    from deepconsensus_plugin.core.selection import MicrographFrame

    mics, pickers = synthetic.make_dataset(str(tmp_path / "data"), n_micrographs=2,
                                           shape=(256, 256), n_particles=40, diameter=32)
    data = consensus_input(mics, pickers, BOX, name="synthetic_%03d", label="Movies/%s.mrc")
    run = RunFolder(tmp_path / "run")
    stages.consensus_stage(run, data)
    path = run.micrographs()[1].path
    with mrcfile.open(path) as mrc:
        image = mrc.data.copy()
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.pad(image[:, 20:], ((0, 0), (20, 0)), mode="edge"))
    assert run.micrograph_frames() == {1: MicrographFrame(256, 256, low_x=20),
                                       2: MicrographFrame(256, 256)}
    with mrcfile.new(path, overwrite=True) as mrc:       # the record answers, not the file
        mrc.set_data(image)
    assert run.micrograph_frames()[1].low_x == 20

    older = RunFolder(tmp_path / "older")
    stages.consensus_stage(older, data)
    older.write_json(older.SHAPES, {"1": [256, 256], "2": [256, 256]})
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.pad(image[:, 20:], ((0, 0), (20, 0)), mode="edge"))
    assert older.micrograph_frames() == {1: MicrographFrame(256, 256),
                                         2: MicrographFrame(256, 256)}
    assert not older.has(older.FRAMES)


def test_a_box_many_times_the_particles_spacing_is_named_in_the_summary_and_log(
        tmp_path, dataset, caplog):
    """The same picks with the pickers' box three times as large, no diameter and no fit
    (a reused network keeps its box): the record keeps the AND coordinates' spacing, and
    the summary and the log ask for the particle diameter; in the pickers' own box they do
    not."""
    own = stages.consensus_stage(RunFolder(tmp_path / "own"), dataset)
    assert box_policy.CROWDED_BOX_PER_SPACING * own.and_spacing_px < 3 * BOX
    assert not box_policy.crowded_box(own)
    with caplog.at_level("WARNING", logger="deepconsensus_plugin"):
        large = stages.consensus_stage(RunFolder(tmp_path / "large"),
                                       replace(dataset, box=3 * BOX))
    assert box_policy.crowded_box(large)
    summary = "\n".join(run_summary.summary_lines(RunFolder(tmp_path / "large").info()))
    assert ("lie a median %.0f px from their nearest neighbour, under 0.5 of the %d px box"
            % (large.and_spacing_px, 3 * BOX)) in summary
    assert "give the particle diameter" in caplog.text
    # where the large box is a reused network's, a diameter would not reuse it: train anew
    caplog.clear()
    with caplog.at_level("WARNING", logger="deepconsensus_plugin"):
        network = stages.consensus_stage(RunFolder(tmp_path / "network"),
                                         replace(dataset, box=3 * BOX, box_from_network=True))
    assert box_policy.crowded_box(network)
    assert "the reused network was trained in boxes this large" in caplog.text
    assert "the reused network was trained in boxes this large" in "\n".join(
        run_summary.summary_lines(RunFolder(tmp_path / "network").info()))


def test_a_training_run_fits_a_box_too_large_for_the_spacing(tmp_path, dataset):
    """The same picks in a box three times the pickers' with the fit asked for (no diameter,
    a network to train): the run works in boxes of 1.5 AND spacings, merges with the radius
    of that box, and records the coordinates' box for the outputs and the spacing that set
    the box; the summary says so instead of warning.  In the pickers' own box, with a
    diameter's box, or without the fit asked for (a reused network) the box stays."""
    large = replace(dataset, box=3 * BOX, fit_box=True)
    info = stages.consensus_stage(RunFolder(tmp_path / "fit"), large)
    spacing = stages.consensus_stage(RunFolder(tmp_path / "warned"),
                                     replace(large, fit_box=False)).and_spacing_px
    assert info.box == box_policy.spacing_box(3 * BOX, spacing) == round(1.5 * spacing)
    assert (info.coordinates_box, info.output_box, info.box_spacing_px) == (
        3 * BOX, 3 * BOX, spacing)
    assert info.radius_px == pytest.approx(0.1 * info.box)
    assert not box_policy.crowded_box(info)
    summary = "\n".join(run_summary.summary_lines(RunFolder(tmp_path / "fit").info()))
    assert ("Worked in boxes of %d px (1.5 times the AND coordinates' median spacing of %.0f px"
            % (info.box, spacing)) in summary
    assert "nearest neighbour" not in summary
    own = stages.consensus_stage(RunFolder(tmp_path / "own"), replace(dataset, fit_box=True))
    assert (own.box, own.coordinates_box, own.box_spacing_px) == (BOX, None, None)
    diameter = stages.consensus_stage(RunFolder(tmp_path / "diameter"),
                                      replace(large, box=BOX, coordinates_box=3 * BOX))
    assert (diameter.box, diameter.coordinates_box, diameter.box_spacing_px) == (
        BOX, 3 * BOX, None)


def test_one_picker_given_twice_is_refused_before_anything_is_written(tmp_path, dataset):
    twice = replace(dataset, pickers=[*dataset.pickers, replace(dataset.pickers[0], name="copy")])
    run = RunFolder(tmp_path)
    with pytest.raises(ValueError, match="picks of %s and copy are the same"
                                         % dataset.pickers[0].name):
        stages.consensus_stage(run, twice)
    assert not run.has(run.CONSENSUS) and run.info().consensus is None


def test_a_picker_and_its_subset_run_with_a_warning_in_the_record_log_and_summary(
        tmp_path, dataset, caplog):
    first = dataset.pickers[0]
    stricter = replace(first, name="stricter", picks={m: xy[: len(xy) * 2 // 3]
                                                      for m, xy in first.picks.items()})
    run = RunFolder(tmp_path)
    with caplog.at_level(logging.WARNING):
        info = stages.consensus_stage(run, replace(dataset, pickers=[*dataset.pickers, stricter]))
    n_stricter = sum(len(xy) for xy in stricter.picks.values())
    assert info.nested_pickers == [[0, 3, n_stricter, sum(len(xy) for xy in first.picks.values()),
                                    n_stricter]]
    warning = "100%% of the %d picks of stricter are picks of %s" % (n_stricter, first.name)
    assert warning in caplog.text
    assert any(warning in line for line in run_summary.summary_lines(run.info()))
    clean = stages.consensus_stage(RunFolder(tmp_path / "clean"), dataset)
    assert clean.nested_pickers == []
    assert not any("subset" in line for line in run_summary.summary_lines(
        RunFolder(tmp_path / "clean").info()))


def test_a_picker_in_another_frame_is_named_in_the_log_and_summary(tmp_path, dataset, caplog):
    """One picker's coordinates divided by 4, as if picked on micrographs binned by 4 and
    never scaled back: the others confirm it about as often as chance."""
    first = dataset.pickers[0]
    binned = replace(first, picks={m: xy / 4 for m, xy in first.picks.items()})
    run = RunFolder(tmp_path)
    with caplog.at_level(logging.WARNING):
        info = stages.consensus_stage(run, replace(dataset, pickers=[binned,
                                                                     *dataset.pickers[1:]]))
    assert info.agreement_over_chance[0] < run_summary.CONFIRMATION_OVER_CHANCE
    warning = "The picks of %s agree with no other picker's better than random" % first.name
    assert warning in caplog.text
    assert sum(warning in line for line in run_summary.summary_lines(run.info())) == 1
    clean = stages.consensus_stage(RunFolder(tmp_path / "clean"), dataset)
    assert min(clean.agreement_over_chance) > 5
    assert not any("no better than random" in line for line in run_summary.summary_lines(
        RunFolder(tmp_path / "clean").info()))


def test_picks_outside_their_micrograph_are_counted_per_picker_to_the_pixel(tmp_path, dataset):
    """The pixels of a 512 px micrograph span -0.5 to 511.5: a centre there is inside, one
    a hair beyond is outside.  The first micrograph holding such a pick is named, and a
    micrograph that cannot be read is left to the stages that read it."""
    first, second = dataset.micrographs
    inside = np.array([[-0.5, 10.0], [511.5, 511.5], [256.0, 0.0]])
    outside = np.array([[-0.6, 10.0], [10.0, 511.6], [1024.0, 1024.0]])
    picks = [{1: np.vstack([inside, outside[:1]]), 2: outside[1:]}, {1: inside, 2: inside}]
    coverage = stages.picker_coverage(dataset.micrographs, picks)
    assert [(c.outside, c.outside_micrograph) for c in coverage] == [(3, first.name), (0, "")]
    missing = replace(first, path=str(tmp_path / "gone.mrc"))
    assert stages.picker_coverage([missing, second], picks)[0].outside == 2


def test_a_picker_with_picks_outside_or_micrographs_unpicked_is_named_in_log_and_summary(
        tmp_path, dataset, caplog):
    """Coordinates scaled by 2 (picked on micrographs of half the pixel size) put about
    three quarters of one picker's picks outside the micrographs; a picker that was not run
    on the second micrograph leaves it unpicked while the others picked it.  Each is one
    warning naming the picker and the first micrograph, in the log, the record (read back)
    and the summary; a clean run has none."""
    first, second, third = dataset.pickers
    doubled = replace(first, picks={m: xy * 2 for m, xy in first.picks.items()})
    partial = replace(second, picks={1: second.picks[1], 2: np.empty((0, 2))})
    run = RunFolder(tmp_path)
    with caplog.at_level(logging.WARNING):
        info = stages.consensus_stage(run, replace(dataset, pickers=[doubled, partial, third]))
    n_outside = sum(int(((xy * 2) > 511.5).any(axis=1).sum()) for xy in first.picks.values())
    assert n_outside > 0.5 * sum(len(xy) for xy in first.picks.values())
    assert run.info().consensus.coverage == info.coverage
    assert [(c.outside, c.unpicked) for c in info.coverage] == [(n_outside, 0), (0, 1), (0, 0)]
    mic1, mic2 = (m.name for m in dataset.micrographs)
    warnings = ["%d picks of %s lie outside their micrograph (the first on %s)"
                % (n_outside, first.name, mic1),
                "%s has no pick on 1 micrograph that other pickers picked (the first: %s)"
                % (second.name, mic2)]
    summary = run_summary.summary_lines(run.info())
    for warning in warnings:
        assert warning in caplog.text
        assert sum(line.startswith("WARNING: " + warning) for line in summary) == 1
    stages.consensus_stage(RunFolder(tmp_path / "clean"), dataset)
    clean = RunFolder(tmp_path / "clean").info()
    assert all(c.outside == c.unpicked == 0 for c in clean.consensus.coverage)
    assert not any("outside their micrograph" in line or "has no pick on" in line
                   for line in run_summary.summary_lines(clean))


def test_a_working_box_drives_the_run_and_the_coordinates_box_is_kept(tmp_path, dataset):
    """Where the run works in a box other than the coordinates' (a particle diameter was
    given), the consensus radius is a share of the working box; the record keeps the
    coordinates' box for the outputs, and the summary says which is which."""
    from deepconsensus_plugin.results import RunResults

    work = replace(dataset, box=BOX // 2, coordinates_box=BOX)
    run = RunFolder(tmp_path / "worked")
    info = stages.consensus_stage(run, work)
    assert (info.box, info.coordinates_box, info.output_box) == (BOX // 2, BOX, BOX)
    assert info.radius_px == pytest.approx(0.1 * (BOX // 2))
    same = stages.consensus_stage(RunFolder(tmp_path / "own"), dataset)
    assert (same.box, same.coordinates_box, same.output_box) == (BOX, None, BOX)
    # the AND coordinates' spacing does not depend on the box the run works in
    assert same.and_spacing_px is not None
    assert info.and_spacing_px == pytest.approx(same.and_spacing_px, rel=0.05)
    summary = "\n".join(run_summary.summary_lines(run.info()))
    assert ("Worked in boxes of %d px (1.5 times the particle diameter given) instead of "
            "the coordinates' %d px" % (BOX // 2, BOX)) in summary
    assert "Worked in boxes" not in "\n".join(run_summary.summary_lines(RunFolder(
        tmp_path / "own").info()))
    run.write_array(run.CNN_SCORES, np.full(len(run.consensus()), 0.9))
    stages.ranking_stage(run, combine=False)
    stages.split_stage(run, 0.5, min_distance=0)
    results = RunResults(str(tmp_path / "worked"), str(tmp_path))
    assert (results.box, results.outputBox) == (BOX // 2, BOX)
