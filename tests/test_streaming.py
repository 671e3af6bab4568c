"""Deep consensus on growing inputs, in the core (issue 14, points 1 and 4): when a
micrograph is ready, the training trigger, the stream's equality with a batch run when it
trains at the close, the exact partition with no coordinate twice, scores that stay put,
resuming after the last finished batch, and a bad micrograph skipped under the option."""
import logging
import os

import mrcfile
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from deepconsensus_plugin.core import box_policy, run_summary, stages, synthetic  # noqa: E402
from deepconsensus_plugin.core.extraction import MicrographError  # noqa: E402
from deepconsensus_plugin.core.extraction import cut_boxes, read_micrograph  # noqa: E402
from deepconsensus_plugin.core.pipeline import CoordinateTable  # noqa: E402
from deepconsensus_plugin.core.run_folder import (  # noqa: E402
    KnownParticles, Micrograph, RunFolder, RunFolderError)
from deepconsensus_plugin.core.streaming import (  # noqa: E402
    TRAINING_MINIMUM, StreamingRun, StreamSettings, ready_micrographs, stream_summary,
    training_size)

from .synthetic_inputs import consensus_input  # noqa: E402

BOX = 48
N_MICROGRAPHS = 6
SETTINGS = StreamSettings(extraction=stages.ExtractionParams(network_size=16),
                          training=stages.TrainingParams(max_epochs=2, rounds=1),
                          threshold=0.5, edge_margin=0.0)


def test_a_micrograph_is_ready_when_every_open_set_has_picked_it():
    arrived = ["a", "b", "c", "d"]
    picked = [{"a", "b", "c"}, {"a", "c"}]
    assert ready_micrographs(arrived, picked, [False, False], done=set()) == ["a", "c"]
    # b's second picker comes in a later update of its set: then b is ready
    picked[1].add("b")
    assert ready_micrographs(arrived, picked, [False, False], done={"a", "c"}) == ["b"]
    # a closed set that never picked d: it found nothing there
    assert ready_micrographs(arrived, picked, [False, True], done={"a", "b"}) == ["c"]
    assert ready_micrographs(arrived, [{"d"}, set()], [False, True], done=set()) == ["d"]


def test_training_waits_for_twenty_micrographs_of_particles_or_what_the_user_asks():
    assert training_size(10) == TRAINING_MINIMUM
    assert training_size(80) == 1600
    assert training_size(80, requested=300) == 300
    assert training_size(80, requested=5) == stages.MIN_POSITIVES


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream_data")
    mics, pickers = synthetic.make_dataset(str(folder), n_micrographs=N_MICROGRAPHS,
                                           shape=(448, 448), n_particles=40, diameter=32)
    return mics, pickers


def new_stream(folder, settings=SETTINGS, n_pickers=3):
    return StreamingRun(RunFolder(str(folder)), settings,
                        ["picker %d" % p for p in range(n_pickers)], BOX, 2.0)


def feed(stream, dataset, indices):
    """Add the micrographs ``indices`` of the dataset as one batch."""
    mics, pickers = dataset
    first = stream.next_mic_id()
    batch = [Micrograph(first + k, "mic%d" % i, mics[i].path, "mic%d.mrc" % i)
             for k, i in enumerate(indices)]
    picks = [{first + k: picker[i] for k, i in enumerate(indices)} for picker in pickers]
    return stream.add_batch(batch, picks)


def batch_run(folder, dataset, settings=SETTINGS, known=None,
              known_particles=KnownParticles()):
    """The ordinary stages on all the micrographs, in the stream's order."""
    mics, pickers = dataset
    run = RunFolder(str(folder))
    inputs = consensus_input(mics, pickers, BOX)
    stages.consensus_stage(run, inputs, settings.consensus)
    stages.negatives_stage(run, settings.negatives, known)
    stages.extraction_stage(run, settings.extraction, known_particles)
    stages.model_stage(run)
    stages.training_stage(run, 1, settings.training)
    stages.scoring_stage(run, 1, 1, seed=settings.training.seed,
                         centring_search=settings.centring_search)
    stages.ranking_stage(run, settings.combine_votes)
    return run, stages.split_stage(run, settings.threshold, *box_policy.split_lengths_px(
        run.info().consensus, settings.min_distance, settings.edge_margin))


def test_a_stream_that_trains_when_the_inputs_close_is_the_batch_run(dataset, tmp_path):
    stream = new_stream(tmp_path / "stream", StreamSettings(**{**SETTINGS.__dict__,
                                                               "train_at": 10 ** 6}))
    for indices in ([0, 1], [2, 3], [4, 5]):
        feed(stream, dataset, indices)
        assert not stream.should_train(inputs_closed=False)
    assert stream.should_train(inputs_closed=True)
    stream.train()
    split = stream.close()
    run, expected = batch_run(tmp_path / "batch", dataset)
    # the same coordinates (to the round-off of the consensus' tiling), boxes and scores
    np.testing.assert_allclose(stream.run.consensus().xy, run.consensus().xy, atol=1e-9)
    np.testing.assert_array_equal(stream.run.consensus().voters, run.consensus().voters)
    np.testing.assert_array_equal(stream.run.scores(), run.scores())
    np.testing.assert_array_equal(split.retained, expected.retained)
    np.testing.assert_array_equal(split.pruned, expected.pruned)


def test_a_stream_trains_with_the_known_negatives_as_the_batch_run_does(dataset, tmp_path):
    """Known non-particle coordinates (on the micrographs so far) and particles join the
    negatives of a stream's training as they do a batch run's: the same record, scores
    and split (before, a stream left them out without a word)."""
    mics, _ = dataset
    known = CoordinateTable.from_picks({1: mics[0].junk, 2: mics[1].junk})
    junk, _ = cut_boxes(read_micrograph(mics[2].path), mics[2].junk, BOX)
    stack = str(tmp_path / "junk.mrcs")
    mrcfile.write(stack, junk.astype(np.float32))
    particles = KnownParticles([(i + 1, stack) for i in range(len(junk))], 2.0)
    settings = StreamSettings(**{**SETTINGS.__dict__, "train_at": 10 ** 6})
    stream = new_stream(tmp_path / "stream", settings)
    for indices in ([0, 1], [2, 3], [4, 5]):
        feed(stream, dataset, indices)
    stream.train(known=known, known_particles=particles)
    split = stream.close()
    info = stream.run.info()
    assert info.negatives.n_user_coordinates == len(known) > 0
    assert info.extraction.n_user_particles == len(junk) > 0
    run, expected = batch_run(tmp_path / "batch", dataset, settings, known, particles)
    np.testing.assert_array_equal(stream.run.scores(), run.scores())
    np.testing.assert_array_equal(split.retained, expected.retained)


def test_a_stream_in_a_working_box_records_the_coordinates_box_for_its_outputs(dataset,
                                                                               tmp_path):
    """A stream told a working box (a particle diameter on the form, or a reused network's
    box) merges in it, keeps the coordinates' box for the sets it publishes and records
    where its box came from."""
    stream = StreamingRun(RunFolder(str(tmp_path / "stream")), SETTINGS,
                          ["picker %d" % p for p in range(3)], BOX, 2.0, coordinates_box=2 * BOX,
                          box_from_network=True)
    feed(stream, dataset, [0, 1])
    consensus = stream.run.info().consensus
    assert (consensus.box, consensus.coordinates_box, stream.output_box) == (BOX, 2 * BOX,
                                                                             2 * BOX)
    assert consensus.box_from_network
    assert ("Worked in boxes of %d px (the reused network's field of view" % BOX
            in "\n".join(run_summary.summary_lines(stream.run.info())))
    assert consensus.radius_px == pytest.approx(SETTINGS.consensus.radius * BOX)
    assert new_stream(tmp_path / "plain").output_box == BOX


def test_a_stream_in_a_box_too_large_fits_it_at_its_first_batch_and_keeps_it(
        dataset, tmp_path, caplog):
    """Picks in boxes of 4 diameters, the fit asked for (no diameter, a new network): the
    first batch's AND spacing sets the box every batch works in, as a batch run's
    consensus sets it on all the micrographs; a resumed stream keeps it, later batches
    do not fit again, the split's lengths follow it and the outputs keep the pickers'."""
    large = 4 * 32
    settings = StreamSettings(**{**SETTINGS.__dict__, "fit_box": True})
    names = ["picker %d" % p for p in range(3)]
    stream = StreamingRun(RunFolder(str(tmp_path / "stream")), settings, names, large, 2.0)
    feed(stream, dataset, [0, 1])
    consensus = stream.run.info().consensus
    spacing = consensus.box_spacing_px
    fitted = box_policy.spacing_box(large, spacing)
    assert fitted == round(1.5 * spacing) < large
    assert (consensus.box, consensus.coordinates_box, stream.output_box) == (fitted, large,
                                                                             large)
    assert consensus.radius_px == pytest.approx(SETTINGS.consensus.radius * fitted)
    resumed = StreamingRun(RunFolder(str(tmp_path / "stream")), settings, names, large, 2.0)
    assert (resumed.box, resumed.output_box) == (fitted, large)
    feed(resumed, dataset, [2, 3])
    feed(resumed, dataset, [4, 5])
    info = resumed.run.info().consensus
    assert (info.box, info.coordinates_box, info.box_spacing_px) == (fitted, large, spacing)
    # every batch merged in the fitted box: the batch run's table in that box
    mics, pickers = dataset
    batch = RunFolder(str(tmp_path / "batch"))
    stages.consensus_stage(batch, consensus_input(mics, pickers, fitted), settings.consensus)
    np.testing.assert_allclose(resumed.run.consensus().xy, batch.consensus().xy, atol=1e-9)
    assert resumed.split_lengths_px() == pytest.approx((0.3 * fitted, 0.0))
    # no fit where the box is not too large, a working box is given, or none is asked for
    for case, (box, coordinates_box, fit) in enumerate(((BOX, None, True), (BOX, large, True),
                                                       (large, None, False))):
        plain = StreamingRun(RunFolder(str(tmp_path / ("plain%d" % case))),
                             StreamSettings(**{**SETTINGS.__dict__, "fit_box": fit}), names,
                             box, 2.0, coordinates_box)
        feed(plain, dataset, [0, 1])
        record = plain.run.info().consensus
        assert (record.box, record.box_spacing_px) == (box, None)
    # a first batch too small to measure the spacing on keeps the given box, and says so
    sparse = StreamingRun(RunFolder(str(tmp_path / "sparse")), settings, names, large, 2.0)
    few = [Micrograph(1, "mic0", mics[0].path, "mic0.mrc")]
    with caplog.at_level(logging.WARNING, logger="deepconsensus_plugin.core.streaming"):
        sparse.add_batch(few, [{1: picker[0][:5]} for picker in pickers])
    assert sparse.run.info().consensus.box == large
    assert "too few AND coordinates with a neighbour" in caplog.text


def test_later_batches_are_scored_on_arrival_and_partition_the_or_set(dataset, tmp_path):
    stream = new_stream(tmp_path, StreamSettings(**{**SETTINGS.__dict__, "train_at": 150}))
    feed(stream, dataset, [0, 1])
    assert not stream.should_train(False)  # about 110 AND particles
    feed(stream, dataset, [2, 3])
    assert stream.should_train(False)
    stream.train()
    handed_out = stream.run.scores().copy()
    trained_evidence = stream.run.rotational_evidence()
    assert [b.scored for b in stream.state.batches] == [True, True]
    later = [feed(stream, dataset, [4]), feed(stream, dataset, [5])]
    assert all(b.scored for b in later)
    # a micrograph no picker picked comes as a batch once the sets close: no rows, scored
    blank = Micrograph(stream.next_mic_id(), "blank", dataset[0][0].path, "blank.mrc")
    empty = stream.add_batch([blank], [{} for _ in dataset[1]])
    assert (empty.scored, empty.n_rows, empty.n_retained, empty.n_pruned) == (True, 0, 0, 0)
    scores = stream.run.scores()
    np.testing.assert_array_equal(scores[:len(handed_out)], handed_out)  # kept their scores
    assert len(scores) == len(stream.run.consensus())
    # the later batches' boxes judged by the training's rotational discriminant too
    evidence = stream.run.rotational_evidence()
    assert len(evidence) == len(scores) and np.isfinite(evidence).all()
    np.testing.assert_array_equal(evidence[:len(handed_out)], trained_evidence)
    # the batches' splits: every scored OR row in exactly one batch and one output
    retained, pruned = [], []
    for batch in stream.state.batches:
        rows, split = stream.batch_split(batch)
        retained += rows[split.retained].tolist()
        pruned += rows[split.pruned].tolist()
        assert (batch.n_retained, batch.n_pruned) == (len(split.retained), len(split.pruned))
    assert len(set(retained) | set(pruned)) == len(retained) + len(pruned) == len(scores)
    whole = stream.close()
    assert sorted(retained) == whole.retained.tolist()
    assert sorted(pruned) == whole.pruned.tolist()
    info = stream.run.info()
    assert info.split.n_retained + info.split.n_pruned == info.consensus.n_or
    assert info.consensus.n_micrographs == N_MICROGRAPHS + 1
    with pytest.raises(RunFolderError, match="mic5 are already in an earlier batch"):
        feed(stream, dataset, [5])


def test_retraining_when_the_and_set_grows_scores_only_later_batches(dataset, tmp_path):
    """With a retraining factor, a newer network scores the batches after each retraining;
    what was handed out keeps its scores and the summary says which network scored what."""
    stream = new_stream(tmp_path, StreamSettings(**{**SETTINGS.__dict__, "train_at": 50,
                                                    "retrain_factor": 1.2}))
    feed(stream, dataset, [0, 1, 2])
    stream.train()
    first = stream.state.trained_at_and
    assert not stream.should_retrain()
    feed(stream, dataset, [3])  # the AND set about 4/3 of the first training's
    assert stream.should_retrain()
    handed_out = stream.run.scores().copy()
    stream.retrain()
    np.testing.assert_array_equal(stream.run.scores(), handed_out)
    assert stream.state.trainings == [first, stream.n_and()] and stream.n_and() > first
    assert not stream.should_retrain()
    for indices in ([4], [5]):
        feed(stream, dataset, indices)
    assert [b.model for b in stream.state.batches] == [1, 1, 2, 2]
    np.testing.assert_array_equal(stream.run.scores()[:len(handed_out)], handed_out)
    split = stream.close()
    assert len(split.retained) + len(split.pruned) == len(stream.run.consensus())
    line = stream_summary(stream.run)[0]
    assert "network 1 (trained on %d AND particles): batches 1-2" % first in line
    assert "network 2 (trained on %d AND particles): batches 3-4" % stream.state.trainings[1] \
        in line


def test_a_stopped_run_resumes_after_its_last_finished_batch(dataset, tmp_path, monkeypatch):
    stream = new_stream(tmp_path, StreamSettings(**{**SETTINGS.__dict__, "train_at": 150}))
    feed(stream, dataset, [0, 1])
    feed(stream, dataset, [2, 3])
    stream.train()
    feed(stream, dataset, [4])
    finished = stream.run.file("batch_0003_particles.npy")
    before = os.path.getmtime(finished), len(stream.run.consensus())

    def stopped(batch):
        raise KeyboardInterrupt  # the run is stopped while batch 4 is scored

    monkeypatch.setattr(stream, "_score_batch", stopped)
    with pytest.raises(KeyboardInterrupt):
        feed(stream, dataset, [5])
    assert len(stream.run.consensus()) > before[1]  # batch 4's rows were appended
    resumed = new_stream(tmp_path, SETTINGS)
    assert len(resumed.run.consensus()) == before[1]  # ...and are dropped
    assert resumed.state.done == {"mic0", "mic1", "mic2", "mic3", "mic4"}
    assert resumed.trained and resumed.next_mic_id() == 6
    batch = feed(resumed, dataset, [5])
    assert batch.number == 4 and batch.scored
    assert os.path.getmtime(finished) == before[0]  # the finished batch was not redone
    assert len(resumed.run.scores()) == len(resumed.run.consensus())


def test_a_bad_micrograph_is_skipped_under_the_option_and_stops_the_batch_otherwise(
        dataset, tmp_path):
    mics, pickers = dataset
    broken = tmp_path / "broken.mrc"
    broken.write_bytes(open(mics[5].path, "rb").read()[:2000])  # truncated
    bad = (list(mics[:5]) + [synthetic.SyntheticMicrograph(str(broken), mics[5].particles,
                                                           mics[5].junk)], pickers)
    strict = new_stream(tmp_path / "strict", StreamSettings(**{**SETTINGS.__dict__,
                                                               "train_at": 150}))
    feed(strict, bad, [0, 1, 2, 3])
    strict.train()
    with pytest.raises(MicrographError, match="broken.mrc"):
        feed(strict, bad, [5])
    assert [b.number for b in strict.state.batches] == [1]  # nothing half-done is recorded
    skipping = StreamSettings(**{**SETTINGS.__dict__, "train_at": 150,
                                 "extraction": stages.ExtractionParams(
                                     network_size=16, skip_bad_micrographs=True)})
    stream = new_stream(tmp_path / "skip", skipping)
    feed(stream, bad, [0, 1, 2, 3])
    stream.train()
    batch = feed(stream, bad, [5])
    later = feed(stream, bad, [4])  # the stream goes on
    assert batch.scored and batch.skipped_micrographs == [str(broken)]
    assert batch.n_retained + batch.n_pruned == 0
    assert later.scored and later.n_retained > 0
    assert np.isnan(stream.run.scores()[batch.rows]).all()


def test_one_picker_given_twice_stops_the_first_batch_and_records_nothing(dataset, tmp_path):
    mics, pickers = dataset
    stream = new_stream(tmp_path / "twice", n_pickers=4)
    with pytest.raises(ValueError, match="picks of picker 0 and picker 3 are the same"):
        feed(stream, (mics, [*pickers, pickers[0]]), [0, 1])
    assert stream.state.batches == [] and not stream.run.has(stream.run.CONSENSUS)


def test_picks_outside_and_unpicked_micrographs_are_counted_over_the_whole_stream(
        dataset, tmp_path, caplog):
    """Picker 0's coordinates doubled (another pixel size) and picker 1 not run on
    micrograph 2: each batch warns of its own in the log, and the record and summary carry
    the counts of every batch so far with the first micrograph, also after a resume."""
    mics, pickers = dataset
    doubled = [xy * 2 for xy in pickers[0]]
    partial = [xy if i != 2 else np.empty((0, 2)) for i, xy in enumerate(pickers[1])]
    inputs = (mics, [doubled, partial, pickers[2]])
    outside = [int((doubled[i] > 447.5).any(axis=1).sum()) for i in range(4)]
    stream = new_stream(tmp_path / "coverage")
    with caplog.at_level(logging.WARNING):
        feed(stream, inputs, [0, 1])
        feed(stream, inputs, [2])
    assert ("Batch 1: %d picks of picker 0 lie outside their micrograph (the first on mic0)"
            % sum(outside[:2])) in caplog.text
    assert ("Batch 2: picker 1 has no pick on 1 micrograph that other pickers picked "
            "(the first: mic2)") in caplog.text
    coverage = stream.run.info().consensus.coverage
    assert [(c.outside, c.outside_micrograph) for c in coverage] == [
        (sum(outside[:3]), "mic0"), (0, ""), (0, "")]
    assert [(c.unpicked, c.unpicked_micrograph) for c in coverage] == [
        (0, ""), (1, "mic2"), (0, "")]
    resumed = new_stream(tmp_path / "coverage")
    feed(resumed, inputs, [3])
    coverage = resumed.run.info().consensus.coverage
    assert (coverage[0].outside, coverage[1].unpicked) == (sum(outside), 1)
    summary = "\n".join(run_summary.summary_lines(resumed.run.info()))
    assert ("WARNING: %d picks of picker 0 lie outside their micrograph (the first on mic0)"
            % sum(outside)) in summary


def test_a_subset_picker_is_judged_on_the_whole_stream_and_named_in_the_summary(dataset,
                                                                                tmp_path):
    """A picker's own stricter output given as a fourth picker: each batch's warning in the
    log, and the record and summary carry the pair with the counts of every batch so far
    (kept in the stream's state, so a stopped stream resumes with them)."""
    mics, pickers = dataset
    stricter = [xy[: int(0.8 * len(xy))] for xy in pickers[0]]
    inputs = (mics, [*pickers, stricter])
    stream = new_stream(tmp_path / "subset", n_pickers=4)
    feed(stream, inputs, [0, 1])
    first, = stream.run.info().consensus.nested_pickers
    feed(stream, inputs, [2])
    nested, = stream.run.info().consensus.nested_pickers
    expected = sum(len(stricter[i]) for i in (0, 1, 2))
    assert nested[:2] == [0, 3] and nested[2] == nested[4] == expected
    assert first[2] == sum(len(stricter[i]) for i in (0, 1))
    assert nested[3] == sum(len(pickers[0][i]) for i in (0, 1, 2))
    summary = "\n".join(run_summary.summary_lines(stream.run.info()))
    assert ("WARNING: 100%% of the %d picks of picker 3 are picks of picker 0" % expected
            in summary)
    resumed = new_stream(tmp_path / "subset", n_pickers=4)
    assert resumed.state.pick_overlaps == stream.state.pick_overlaps
    feed(resumed, inputs, [3])
    assert resumed.run.info().consensus.nested_pickers[0][2] == expected + len(stricter[3])
