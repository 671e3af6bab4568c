"""The scores against the user's known-good and known-bad picks (issue 14, point 3): the
matching, the figures, the stage's record and the summary line (no TensorFlow: the scores
are stand-ins).  The protocol's path is in test_protocol.py."""
import numpy as np
import pytest

from deepconsensus_plugin.core import evaluation, plots, run_summary, stages
from deepconsensus_plugin.core.metrics import match_one_to_one
from deepconsensus_plugin.core.pipeline import CoordinateTable
from deepconsensus_plugin.core.run_folder import RunFolder
from deepconsensus_plugin.core.synthetic import make_dataset

from .synthetic_inputs import consensus_input


def table(rows):
    """A CoordinateTable of (mic, x, y) rows (sorted by micrograph, as tables are)."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    return CoordinateTable(mic=rows[:, 0].astype(np.int64), xy=rows[:, 1:])


OR = table([(1, 100, 100), (1, 200, 200), (1, 300, 300), (2, 100, 100), (2, 400, 400)])


def test_known_picks_label_the_or_coordinates_within_the_radius_one_to_one():
    good = table([(1, 103, 100), (1, 105, 100), (2, 400, 404), (2, 700, 700)])
    bad = table([(1, 300, 302), (2, 100, 100), (1, 202, 200)])
    known = evaluation.known_labels(OR, good, bad, radius=5)
    # (1, 105, 100) is a second good pick of row 0 (one to one: unmatched), (2, 700, 700) no
    # picker picked; row 1 is matched by a bad pick only
    assert known.rows.tolist() == [0, 1, 2, 3, 4]
    assert known.labels.tolist() == [1, 0, 0, 0, 1]
    assert (known.n_good, known.n_bad) == (4, 3)
    assert (known.n_good_unpicked, known.n_bad_unpicked) == (2, 0)
    assert known.n_conflicting == 0


def test_an_or_coordinate_both_good_and_bad_is_left_out():
    known = evaluation.known_labels(OR, table([(1, 100, 100)]), table([(1, 101, 100)]), 5)
    assert known.rows.tolist() == [] and known.n_conflicting == 1


def test_precision_recall_and_roc_auc_on_the_labelled_coordinates():
    labels = np.array([1, 1, 1, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.3, 0.6, 0.2, np.nan])  # NaN: unscored, left out
    retained = scores >= 0.5
    result = evaluation.agreement(labels, scores, retained)
    assert result.precision == pytest.approx(2 / 3)  # retained: 2 good, 1 bad
    assert result.recall == pytest.approx(2 / 3)
    assert result.roc_auc == pytest.approx(5 / 6)  # 6 good-bad pairs, 0.3 < 0.6 misordered
    only_good = evaluation.agreement(np.ones(3), np.array([0.9, 0.4, 0.8]),
                                     np.array([True, False, True]))
    assert np.isnan(only_good.precision) and np.isnan(only_good.roc_auc)
    assert only_good.recall == pytest.approx(2 / 3)


def test_the_known_picks_figure_draws_the_roc_and_the_figures():
    labels = np.array([1, 1, 0, 0])
    scores = np.array([0.9, 0.7, 0.6, 0.1])
    figure = plots.known_picks(labels, scores, scores >= 0.65, 0.65)
    roc, histogram = figure.axes
    assert "ROC-AUC 1.00" in [t.get_text() for t in roc.get_legend().get_texts()]
    assert histogram.get_title() == "precision 1.00, recall 1.00"


def test_the_stage_records_the_figures_at_the_split_and_the_summary_reports_them(tmp_path):
    mics, pickers = make_dataset(str(tmp_path / "data"), n_micrographs=2, shape=(384, 384),
                                 n_particles=20, diameter=32)
    run = RunFolder(str(tmp_path / "run"))
    inputs = consensus_input(mics, pickers, box=48, name="m%d", picker_name="p%d")
    stages.consensus_stage(run, inputs)
    or_table = run.consensus()
    radius = run.info().consensus.radius_px
    is_true = np.zeros(len(or_table), dtype=bool)  # one OR row per particle, as matched
    for i, mic in enumerate(mics):
        rows = np.flatnonzero(or_table.mic == i + 1)
        is_true[rows] = match_one_to_one(or_table.xy[rows], mic.particles, radius)[0]
    # stand-in scores that rank the true particles first, but for one
    scores = np.where(is_true, 0.8, 0.2)
    scores[np.flatnonzero(is_true)[0]] = 0.1
    run.write_array(run.CNN_SCORES, scores)
    stages.ranking_stage(run, combine=False)
    stages.split_stage(run, 0.5, 0)
    assert stages.evaluation_stage(run, None, None) is None and run.info().evaluation is None
    good = CoordinateTable.from_picks({i + 1: m.particles for i, m in enumerate(mics)})
    bad = CoordinateTable.from_picks({i + 1: m.junk for i, m in enumerate(mics)})
    info = stages.evaluation_stage(run, good, bad)
    n_good_picked = int(is_true.sum())
    assert info.n_good == len(good) and info.n_bad == len(bad)
    assert info.n_good - info.n_good_unpicked == n_good_picked
    assert info.recall == pytest.approx((n_good_picked - 1) / n_good_picked)
    assert info.precision == pytest.approx(1.0)
    assert info.roc_auc == pytest.approx((n_good_picked - 1) / n_good_picked)
    pairs = run.array(run.KNOWN_LABELS)
    assert len(pairs) == info.n_labelled and set(pairs[:, 1]) == {0, 1}
    summary = "\n".join(run_summary.summary_lines(run.info()))
    assert info.n_good_unpicked == 0 and info.n_bad_unpicked > 0  # pickers miss junk
    assert ("Known picks, %d good and %d bad (%d picked by no picker)"
            % (info.n_good, info.n_bad, info.n_bad_unpicked)) in summary
    assert "precision 1.00, recall %.2f at threshold 0.50; ROC-AUC %.2f" % (
        info.recall, info.roc_auc) in summary
    stages.split_stage(run, 0.3, 0)  # a new split: the evaluation is stale
    assert run.info().evaluation is None
