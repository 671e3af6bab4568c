"""``benchmarks/dataset.py`` end to end: the accuracy figures come from this one command, so
it runs here on the bundled demo data laid out as a dataset folder (two epochs, one round)."""
import csv
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import mrcfile
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "deepconsensus_plugin", "demo_data")


def demo_dataset(folder):
    """The bundled demo in the dataset layout (links), as a folder ``demo`` in ``folder``."""
    data = folder / "demo"
    data.mkdir()
    for name, source in (("micrographs", "micrographs"), ("picks", "coordinates"),
                         ("gt", "ground_truth")):
        os.symlink(os.path.join(DEMO, source), data / name)
    return data


def run_benchmark(data, out, *extra):
    """dataset.py on the demo folder ``data`` into ``out``; its metrics."""
    command = [sys.executable, os.path.join(ROOT, "benchmarks", "dataset.py"),
               "--data", str(data), "--out", str(out), "--pixel-size", "3.54",
               "--diameter", "54", *extra]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out / "metrics.json") as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def benchmark_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return out, run_benchmark(demo_dataset(tmp_path_factory.mktemp("data")), out,
                              "--max-epochs", "2", "--no-self-training", "--label-probe")


def test_metrics_in_three_countings_for_every_set(benchmark_run):
    out, metrics = benchmark_run
    assert metrics["pickers"] == ["crYOLO", "deepPicker", "topaz"]
    assert metrics["n_micrographs"] == 3 and not metrics["labelled_only"]
    assert set(metrics["sets"]) == {"crYOLO", "deepPicker", "topaz", "OR", "AND", "dc_retained"}
    for figures in metrics["sets"].values():
        for counting in (figures, figures["lenient"], figures["audited"]):
            assert 0 <= counting["precision"] <= 1 and 0 <= counting["recall"] <= 1
        assert figures["n"] >= figures["audited"]["n"]
    assert metrics["sets"]["OR"]["recall"] >= metrics["sets"]["dc_retained"]["recall"]
    assert 0.5 < metrics["roc_auc"] <= 1 and 0.5 < metrics["paper_roc_auc"]["roc_auc"] <= 1
    assert 0.5 < metrics["audited"]["roc_auc"] <= 1 and metrics["audited"]["n_left_out"] >= 0
    assert 0.5 < metrics["roc_auc_audit_perfect"] <= 1
    assert 0.5 < metrics["one_to_one"]["roc_auc"] <= 1
    from deepconsensus_plugin.demo import machine_has_gpu
    assert metrics["parameters"]["useGpu"] == machine_has_gpu()  # no GPU booked where none is
    close = metrics["retained_close_pairs"]
    assert close["source"] == "the run's minimum distance"
    assert close["pairs_all"] == 0 and close["duplicates_all"] == 0
    ceiling = metrics["vote_pattern_ceiling"]
    assert 0 < ceiling["f1"] <= 1
    assert len(ceiling["keep_above"]) <= 2 ** len(metrics["pickers"]) - 1
    paired = metrics["paired_bootstrap"]
    assert paired["best_picker"] == max(metrics["pickers"], key=lambda p: metrics["sets"][p]["f1"])
    for reference, against in (("best_picker", paired["best_picker"]), ("AND", "AND")):
        figures = paired["against_" + reference]
        assert figures["difference"] == pytest.approx(
            metrics["sets"]["dc_retained"]["f1"] - metrics["sets"][against]["f1"])
        assert figures["ci95"][0] <= figures["ci95"][1] and figures["n_tiles"] > 0
        assert 0 <= figures["share_first_not_worse"] <= 1
    with_scores = metrics["picker_score_ceiling"]
    assert set(with_scores["by_weight"]) == {"alone", "0.5", "1", "2", "4"}
    assert with_scores["f1"] == max(with_scores["by_weight"].values()) > 0


def test_scores_report_and_plots_written(benchmark_run):
    out, metrics = benchmark_run
    with open(out / "scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == metrics["run_info"]["consensus"]["n_or"]
    assert sum(int(r["retained"]) for r in rows) == metrics["run_info"]["split"]["n_retained"]
    report = (out / "report.md").read_text()
    assert "| dc_retained |" in report and "one-to-one" in report
    assert "Ceiling of this run's inputs" in report
    assert "the pickers' own scores" in report
    assert "Pruned at the micrograph edge" in report
    assert "The run's decisions by vote pattern" in report
    spacing = metrics["and_spacing_px"]
    assert spacing == metrics["run_info"]["consensus"]["and_spacing_px"] > 0
    alone = metrics["and_spacing_per_micrograph_px"]
    assert len(alone) == metrics["n_micrographs"]
    assert ("the AND coordinates a median %.0f px from their nearest neighbour (the "
            "coordinates' box is %.2f of that; on one micrograph alone %.0f to %.0f px)"
            % (spacing, metrics["coordinates_box_px"] / spacing, min(alone), max(alone))
            ) in report
    decided = metrics["pattern_decisions"]
    assert sum(row["retained"] for row in decided) <= metrics["run_info"]["split"]["n_retained"]
    for row in decided:
        assert row["retained"] + row["pruned_by_score"] + row["pruned_close_or_edge"] == row["n"]
    for picture in ("curves.png", "score_histogram.png"):
        assert (out / picture).stat().st_size > 0
    assert "network trained on this data." in report


def test_a_later_run_reuses_the_network_in_its_boxes(benchmark_run, tmp_path):
    """The first run's model.keras, given to a run whose coordinates are imported in boxes
    twice as large: it scores without training, in the boxes the network was trained in,
    and the outputs keep the coordinates' box."""
    out, metrics = benchmark_run
    trained = metrics["box_px"]
    reused = run_benchmark(demo_dataset(tmp_path), tmp_path / "reused", "--model",
                           str(out / "model.keras"), "--score-only", "--box", str(2 * trained))
    consensus = reused["run_info"]["consensus"]
    assert (reused["box_px"], reused["coordinates_box_px"]) == (trained, 2 * trained)
    assert consensus["box_from_network"] and reused["run_info"]["training"] is None
    assert reused["network"] == ("the model file %s, scoring without training"
                                 % (out / "model.keras"))
    assert reused["sets"]["dc_retained"]["f1"] > 0.5
    assert ("in boxes of %d px (the reused network's; the coordinates' box %d px)"
            % (trained, 2 * trained)) in (tmp_path / "reused" / "report.md").read_text()


def test_label_probe_reports_both_image_scores_on_every_labelled_micrograph(benchmark_run):
    out, metrics = benchmark_run
    probe = metrics["label_probe"]
    assert probe["micrographs"] == len(metrics["ground_truth_micrographs"]) == 3
    assert probe["boxes"] == metrics["sets"]["OR"]["n"]
    for score in ("run", "label_trained"):
        figures = probe["agreement"][score]
        assert 0 <= figures["precision"] <= 1 and 0 <= figures["recall"] <= 1
        assert 0 < figures["n"] <= probe["boxes"] and 0 <= figures["roc_auc"] <= 1
        assert 0 <= probe["roc_auc_network"][score] <= 1
    assert probe["roc_auc_within"]
    for pattern, figures in probe["roc_auc_within"].items():
        assert set(pattern.split(",")) <= set(metrics["pickers"]) and figures["n"] > 1
    assert metrics["timings_s"]["label_probe"] > 0
    assert "## With a network trained on the labels" in (out / "report.md").read_text()


def test_label_probe_never_scores_a_micrograph_with_a_network_that_saw_it(monkeypatch):
    """Leave one micrograph out: each labelled micrograph's boxes are scored by the network
    trained on the other micrographs' boxes only, its particles as positives and the rest as
    negatives, and boxes off the labelled rows stay unscored."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    import label_probe

    names = np.array(["a"] * 4 + ["b"] * 3 + ["c"] * 3 + ["unlabelled"] * 2)
    labels = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0], dtype=bool)
    rows = np.arange(10)
    trained, scored = [], {}

    def train(positives, negatives, config, model, history):
        trained.append((set(positives[0][1]), set(negatives[0][1])))

    def score(run, model, images, held_out, centring_search, seed=0):
        scored[len(trained)] = (set(held_out), centring_search)
        return np.full(len(held_out), float(len(trained)))

    monkeypatch.setattr(label_probe, "train_classifier", train)
    monkeypatch.setattr(label_probe.stages, "score_boxes", score)
    last = SimpleNamespace(architecture="fast", rounds=[SimpleNamespace(centring_search=0.05)])
    run = SimpleNamespace(info=lambda: SimpleNamespace(training=last))
    stack = np.zeros((12, 4, 4))
    scores = label_probe.leave_one_micrograph_out(run, stack, names, rows, labels, 0, "/tmp")
    assert len(trained) == 3
    for fold, (positives, negatives) in enumerate(trained, start=1):
        held_out, search = scored[fold]
        assert search == 0.05
        assert not held_out & (positives | negatives)
        assert held_out | positives | negatives == set(rows)
        assert all(labels[i] for i in positives) and not any(labels[i] for i in negatives)
        assert np.all(scores[sorted(held_out)] == fold)
    assert np.isnan(scores[10:]).all()


def test_label_probe_needs_two_labelled_micrographs(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    import label_probe

    results = SimpleNamespace(run=None, table=None, scores=np.ones(3))
    data = SimpleNamespace(truth={"a": np.zeros((1, 2))})
    with pytest.raises(ValueError, match="at least two labelled micrographs.*this run has 1"):
        label_probe.label_probe(results, np.array(["a", "a", "b"]), data, np.ones(3, bool), {},
                                (0.0, None, 0.0))


def test_vote_pattern_ceiling_finds_the_pattern_thresholds_the_labels_call_for(monkeypatch):
    """Two pickers on one micrograph: A's lone picks are particles, B's lone picks are
    junk unless the network scores them above 0.8, picks of both are particles.  The
    ceiling keeps exactly the particles (F1 1), where keeping every coordinate does not."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    from empiar_data import Dataset, DatasetSpec, audit_anchors, or_labels, vote_pattern_ceiling

    rng = np.random.default_rng(0)
    xy = np.array([(100.0 * i, 100.0 * j) for i in range(1, 9) for j in range(1, 9)])
    voters = np.zeros((len(xy), 2), dtype=bool)
    voters[:20, 0] = True                              # A alone
    voters[20:40, 1] = True                            # B alone
    voters[40:, :] = True                              # both
    network = rng.uniform(0, 1, len(xy))
    particle = voters[:, 0] | (network > 0.8)          # B's lone picks above 0.8 are particles
    names = np.array(["m"] * len(xy))
    data = Dataset(name="toy", spec=DatasetSpec(pixel_size=1.0, diameter=40.0, flip_y=False),
                   box=48, pickers=("A", "B"), names=["m"], mrc_paths={}, picks={},
                   truth={"m": xy[particle]})
    labels = or_labels(names, xy, data)
    anchors = audit_anchors(names, xy, voters.sum(1), data)
    ceiling = vote_pattern_ceiling(names, xy, np.zeros(len(xy), int), voters, network, data,
                                   labels, anchors, min_distance=20.0, steps=50)
    assert ceiling["f1"] == 1.0
    assert ceiling["keep_above"]["A"] == "all" and ceiling["keep_above"]["A,B"] == "all"
    b_alone = network[20:40]
    threshold = ceiling["keep_above"]["B"]
    assert b_alone[b_alone <= 0.8].max() < threshold <= b_alone[b_alone > 0.8].min()


def test_pattern_decisions_count_the_run_and_the_fixed_rules_per_pattern(monkeypatch):
    """A's lone picks are particles, B's are particles only above 0.8, picks of both are
    particles.  The run keeps scores >= 0.5, so it prunes half of A's lone particles and
    keeps ten of B's junk picks (0.55 to 0.75) with its five particles: keeping all of A's
    picks, or pruning all of B's, beats the run; pruning the agreed particles does not."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    from empiar_data import (Dataset, DatasetSpec, audit_anchors, evaluate_selection, or_labels,
                             pattern_decisions)

    xy = np.array([(100.0 * i, 100.0 * j) for i in range(1, 9) for j in range(1, 9)])
    voters = np.zeros((len(xy), 2), dtype=bool)
    voters[:20, 0] = True
    voters[20:40, 1] = True
    voters[40:, :] = True
    network = np.concatenate([np.linspace(0.05, 0.95, 20), np.linspace(0.85, 0.95, 5),
                              np.linspace(0.55, 0.75, 10), np.linspace(0.1, 0.4, 5),
                              np.full(24, 0.9)])
    particle = voters[:, 0] | (network > 0.8)
    names, mic = np.array(["m"] * len(xy)), np.zeros(len(xy), int)
    data = Dataset(name="toy", spec=DatasetSpec(pixel_size=1.0, diameter=40.0, flip_y=False),
                   box=48, pickers=("A", "B"), names=["m"], mrc_paths={}, picks={},
                   truth={"m": xy[particle]})
    labels = or_labels(names, xy, data)
    anchors = audit_anchors(names, xy, voters.sum(1), data)
    rows = {row["pattern"]: row for row in pattern_decisions(
        names, xy, mic, voters, network, network, 0.5, data, labels, anchors, 20.0)}
    run_f1 = evaluate_selection(names, xy, network >= 0.5, data, labels, anchors)["f1"]
    assert [row["n"] for row in rows.values()] == [24, 20, 20]
    a, b, both = rows["A"], rows["B"], rows["A,B"]
    assert a["pruned_by_score"] == a["pruned_by_score_labelled"] == 10
    assert (b["retained"], b["retained_labelled"], b["pruned_by_score"]) == (15, 5, 5)
    assert b["pruned_by_score_labelled"] == 0 and b["roc_auc"] == 1.0
    assert a["roc_auc"] is None and both["roc_auc"] is None      # one class only
    assert a["f1_all_kept"] > run_f1 and a["f1_all_pruned"] < run_f1
    assert b["f1_all_pruned"] > run_f1
    assert both["f1_all_pruned"] < run_f1
    assert all(row["pruned_close_or_edge"] == 0 for row in rows.values())


def test_the_pickers_own_scores_lift_the_ceiling_where_they_know_more_than_the_network(
        monkeypatch):
    """B's lone picks are particles where B scored them above 0.8, which the network, random
    here, does not tell: the ceiling of the votes and the network stays below 1, with B's own
    scores it reaches 1.  A's file has no scores: its column stays NaN, and so does every
    coordinate a picker did not pick."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    from empiar_data import (Dataset, DatasetSpec, audit_anchors, or_labels, pattern_decisions,
                             picker_confidences, picker_score_ceiling, vote_pattern_ceiling)

    rng = np.random.default_rng(1)
    xy = np.array([(100.0 * i, 100.0 * j) for i in range(1, 9) for j in range(1, 9)])
    voters = np.zeros((len(xy), 2), dtype=bool)
    voters[:20, 0] = True
    voters[20:40, 1] = True
    voters[40:, :] = True
    b_rows = np.flatnonzero(voters[:, 1])
    b_scores = rng.uniform(0, 1, len(b_rows))
    b_scores[:20] = np.linspace(0.5, 0.95, 20)    # B's lone picks: particles above 0.8
    particle = voters[:, 0].copy()
    particle[b_rows[:20]] = b_scores[:20] > 0.8
    network = rng.uniform(0, 1, len(xy))
    names, mic = np.array(["m"] * len(xy)), np.zeros(len(xy), int)
    # B's file lists its picks 1 px off the consensus centres, in another order
    order = rng.permutation(len(b_rows))
    data = Dataset(name="toy", spec=DatasetSpec(pixel_size=1.0, diameter=40.0, flip_y=False),
                   box=48, pickers=("A", "B"), names=["m"], mrc_paths={},
                   picks={"A": {"m": xy[voters[:, 0]]}, "B": {"m": xy[b_rows][order] + 1.0}},
                   truth={"m": xy[particle]},
                   pick_scores={"A": {"m": None}, "B": {"m": b_scores[order]}})
    labels = or_labels(names, xy, data)
    anchors = audit_anchors(names, xy, voters.sum(1), data)

    confidences = picker_confidences(names, xy, voters, data, radius=2.0)
    assert np.isnan(confidences[:, 0]).all()
    assert np.isnan(confidences[~voters[:, 1], 1]).all()
    b_own = confidences[b_rows, 1]
    assert np.array_equal(np.argsort(b_own), np.argsort(b_scores))  # the picker's own ranking
    assert abs(np.mean(b_own)) < 1e-9                                # normal scores: centred
    ceiling = vote_pattern_ceiling(names, xy, mic, voters, network, data, labels, anchors,
                                   min_distance=20.0)["f1"]
    with_scores = picker_score_ceiling(names, xy, mic, voters, network, confidences, data,
                                       labels, anchors, min_distance=20.0)
    assert ceiling < 1.0 and with_scores["f1"] == with_scores["by_weight"]["alone"] == 1.0
    rows = {row["pattern"]: row for row in pattern_decisions(
        names, xy, mic, voters, network, network, 0.5, data, labels, anchors, 20.0,
        confidences=confidences)}
    assert rows["B"]["pickers_roc_auc"] == {"B": 1.0}
    assert rows["A"]["pickers_roc_auc"] == {}       # one class only, and A has no scores


def test_audited_score_quality_leaves_out_the_agreed_picks_the_labels_miss(monkeypatch):
    """Three particles carry labels, a fourth (picked by both pickers) does not, and one
    lone pick is junk.  The network ranks the four particles above the junk: against the
    labels the unlabelled particle counts as a negative scored high (ROC-AUC 1/2); with the
    labels audited it is left out and the ranking is perfect; a ranking perfect if the audit
    is right (the unlabelled particle among the labelled ones) is reported as such."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    from empiar_data import Dataset, DatasetSpec, audit_anchors, or_labels, score_quality

    xy = np.array([[100.0, 100], [300, 100], [500, 100], [700, 100], [900, 100]])
    votes = np.array([2, 2, 2, 2, 1])
    scores = np.array([0.9, 0.8, 0.75, 0.95, 0.7])      # the unlabelled particle scores highest
    names = np.array(["m"] * len(xy))
    data = Dataset(name="toy", spec=DatasetSpec(pixel_size=1.0, diameter=40.0, flip_y=False),
                   box=48, pickers=("A", "B"), names=["m"], mrc_paths={}, picks={},
                   truth={"m": xy[:3]})
    labels = or_labels(names, xy, data)
    anchors = audit_anchors(names, xy, votes, data)
    quality = score_quality(names, xy, scores, data, labels, anchors)
    assert quality["roc_auc"] == pytest.approx(3 / 6)  # 3 labelled x 2 unlabelled, 3 misordered
    assert quality["audited"]["n_left_out"] == 1
    assert quality["audited"]["roc_auc"] == 1.0
    # the four particles first, in any order, then the junk: the unlabelled particle ties
    # with the three labelled ones, half a misordering each
    assert quality["roc_auc_audit_perfect"] == pytest.approx(1 - 1 / (2 * 2))
    perfect = np.array([0.9, 0.9, 0.9, 0.9, 0.1])
    assert score_quality(names, xy, perfect, data, labels, anchors)["roc_auc"] == \
        pytest.approx(quality["roc_auc_audit_perfect"])
    # no second box on any particle: one-to-one box labels are the lenient ones
    assert quality["one_to_one"]["roc_auc"] == quality["roc_auc"]
    assert quality["one_to_one"]["n_second_boxes"] == 0


def test_one_to_one_score_quality_calls_a_second_box_on_a_particle_a_negative(monkeypatch):
    """Two labelled particles, each with its centred box and an off-centre second box within
    the match radius, and one junk box.  Ranking the second boxes above the junk but below
    the centred boxes is perfect one to one, and the lenient labels call it imperfect."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    from empiar_data import Dataset, DatasetSpec, audit_anchors, or_labels, score_quality

    xy = np.array([[100.0, 100], [106, 100], [300, 100], [306, 100], [500, 100]])
    scores = np.array([0.9, 0.5, 0.8, 0.6, 0.1])
    names = np.array(["m"] * len(xy))
    data = Dataset(name="toy", spec=DatasetSpec(pixel_size=1.0, diameter=40.0, flip_y=False),
                   box=48, pickers=("A",), names=["m"], mrc_paths={}, picks={},
                   truth={"m": xy[[0, 2]] + 1})
    labels = or_labels(names, xy, data)
    assert labels.tolist() == [True, True, True, True, False]
    quality = score_quality(names, xy, scores, data, labels, audit_anchors(
        names, xy, np.ones(len(xy), int), data))
    assert quality["roc_auc"] == 1.0                   # every labelled box above the junk
    assert quality["one_to_one"]["n_second_boxes"] == 2
    assert quality["one_to_one"]["roc_auc"] == 1.0     # centred boxes above the second boxes
    swapped = scores[[1, 0, 3, 2, 4]]                  # the second boxes ranked first
    assert score_quality(names, xy, swapped, data, labels, {})["one_to_one"]["roc_auc"] == \
        pytest.approx(1 / 3)


def test_paired_bootstrap_sees_a_clear_difference_and_none_between_equal_sets(monkeypatch):
    """Labels on a grid over two micrographs; one set finds every particle, the other the
    same particles and one false pick per tile.  The difference is the F1 difference of the
    whole sets, its interval excludes 0 and the better set is never worse in a resample;
    a set against itself differs by exactly 0."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    from empiar_data import Dataset, DatasetSpec, evaluate_picks, paired_f1_bootstrap

    grid = np.array([(50.0 + 100 * i, 50.0 + 100 * j) for i in range(16) for j in range(16)])
    truth = {"a": grid, "b": grid + 5}
    tile = 4 * 40.0                                          # TILE_DIAMETERS x diameter
    junk = np.array([(tile * i + 1, tile * j + 1) for i in range(10) for j in range(10)])
    good = {name: centres + 2 for name, centres in truth.items()}
    worse = {name: np.vstack([centres, junk]) for name, centres in good.items()}
    data = Dataset(name="toy", spec=DatasetSpec(pixel_size=1.0, diameter=40.0, flip_y=False),
                   box=48, pickers=("A",), names=["a", "b"], mrc_paths={}, picks={},
                   truth=truth)
    paired = paired_f1_bootstrap(good, worse, data, n_resamples=500)
    expected = (evaluate_picks(good, data, {})["f1"] - evaluate_picks(worse, data, {})["f1"])
    assert paired["difference"] == pytest.approx(expected) and expected > 0.1
    assert 0 < paired["ci95"][0] < paired["difference"] < paired["ci95"][1]
    assert paired["share_first_not_worse"] == 1.0
    assert paired["n_tiles"] == 2 * 100 and paired["tile_px"] == tile
    same = paired_f1_bootstrap(good, good, data, n_resamples=200)
    assert same["difference"] == 0 and same["ci95"] == [0, 0]


def test_pickers_chosen_in_the_order_given_and_unknown_ones_named(monkeypatch, tmp_path):
    """``--pickers`` runs a subset of a dataset's pickers (how a benchmark with fewer
    pickers is one command); a folder that is not there is named in the error."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    from empiar_data import KNOWN_DATASETS, _pickers

    for picker in ("topaz", "crYOLO", "deepPicker"):
        (tmp_path / "picks" / picker).mkdir(parents=True)
    spec = KNOWN_DATASETS["empiar10017"]
    assert _pickers(str(tmp_path), spec) == ("crYOLO", "topaz", "deepPicker")
    assert _pickers(str(tmp_path), spec, ("deepPicker", "topaz")) == ("deepPicker", "topaz")
    with pytest.raises(SystemExit, match="no picker folder cryolo"):
        _pickers(str(tmp_path), spec, ("cryolo", "topaz"))
    with pytest.raises(SystemExit, match="needs at least two"):
        _pickers(str(tmp_path), spec, ("topaz",))


def test_picks_read_as_the_import_reads_them_and_the_run_box_is_the_first_pickers(
        monkeypatch, tmp_path, capsys):
    """The benchmark evaluates each picker on the picks the run imports: its files (.box,
    .star, .csv, .pos) read and matched to the micrographs as the import protocol does
    (RELION's ``<micrograph>_<suffix>`` names too; files of other micrographs left out).
    Pickers may box in different widths: the run works in the first picker's (the median of
    its files, as the import takes it, and the protocol works in its first set's box), or
    where that picker's files give none (STAR) the next one's, and the benchmark says so
    instead of refusing the dataset."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    from empiar_data import _box_size, _picker_boxes, _picker_files

    def write(picker, name, widths):
        folder = tmp_path / picker
        folder.mkdir(exist_ok=True)
        (folder / (name + ".box")).write_text(
            "".join("%d 10 %d %d 0.5\n" % (10 * i, w, w) for i, w in enumerate(widths)))

    write("crYOLO", "a", [180, 180, 182])
    write("crYOLO", "b", [180])
    write("crYOLO", "c", [180])                     # a micrograph the dataset does not have
    write("topaz", "a_autopick", [200, 200])
    write("deepPicker", "a", [180])
    (tmp_path / "relion").mkdir()
    (tmp_path / "relion" / "a_autopick.star").write_text(
        "data_\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\n15 25\n35 45\n")
    pickers = ("crYOLO", "topaz", "deepPicker", "relion")
    files = _picker_files(str(tmp_path), pickers, ["a", "b"])
    assert sorted(files["crYOLO"].micrographs) == ["a", "b"]
    assert sorted(files["topaz"].micrographs) == ["a"]
    np.testing.assert_array_equal(files["topaz"].micrographs["a"].xy, [[100, 110], [110, 110]])
    np.testing.assert_array_equal(files["relion"].micrographs["a"].xy, [[15, 25], [35, 45]])
    boxes = _picker_boxes(files)
    assert boxes == {"crYOLO": 180, "topaz": 200, "deepPicker": 180, "relion": None}
    assert _box_size(boxes, pickers) == 180
    assert "topaz 200 px" in capsys.readouterr().out
    assert _box_size(boxes, ("topaz", "crYOLO")) == 200
    assert "crYOLO 180 px" in capsys.readouterr().out
    assert _box_size(boxes, ("relion", "deepPicker")) == 180
    assert "works in deepPicker's box of 180 px" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="No picker's files give a box width.*give --box"):
        _box_size({"relion": None, "idle": None}, ("relion", "idle"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="Picker empty: .*no coordinate file matches"):
        _picker_files(str(tmp_path), ("empty", "crYOLO"), ["a"])


def test_micrograph_images_keep_their_grey_values(monkeypatch, tmp_path):
    """16-bit and float TIFFs and 16-bit PNGs are read in their own values (converting them
    to 8-bit would clip every pixel to 0-255), colour images as their luminance, and a stack
    of frames is refused with its file named."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    from empiar_data import _read_image
    from PIL import Image

    rng = np.random.default_rng(0)
    wide = rng.integers(0, 40000, (16, 24)).astype(np.uint16)
    real = (rng.normal(size=(16, 24)) * 300).astype(np.float32)
    grey = rng.integers(0, 256, (16, 24)).astype(np.uint8)
    Image.fromarray(wide).save(tmp_path / "wide.tif")
    Image.fromarray(real).save(tmp_path / "real.tif")
    Image.fromarray(wide).save(tmp_path / "wide.png")
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "colour.png")
    np.testing.assert_array_equal(_read_image(str(tmp_path / "wide.tif")), wide)
    np.testing.assert_array_equal(_read_image(str(tmp_path / "real.tif")), real)
    np.testing.assert_array_equal(_read_image(str(tmp_path / "wide.png")), wide)
    np.testing.assert_array_equal(_read_image(str(tmp_path / "grey.png")), grey)
    np.testing.assert_array_equal(_read_image(str(tmp_path / "colour.png")), grey)
    frames = [Image.fromarray(grey), Image.fromarray(grey)]
    frames[0].save(tmp_path / "movie.tif", save_all=True, append_images=frames[1:])
    with pytest.raises(SystemExit, match="movie.tif: expected a 2D image"):
        _read_image(str(tmp_path / "movie.tif"))


def test_labelled_only_keeps_the_micrographs_with_ground_truth(monkeypatch, tmp_path):
    """``--labelled-only`` runs a dataset on its labelled micrographs alone (how a smaller
    dataset is one command): the other micrographs are neither converted nor picked."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    from empiar_data import dataset_spec, load_dataset

    data = tmp_path / "demo"
    data.mkdir()
    os.symlink(os.path.join(DEMO, "micrographs"), data / "micrographs")
    os.symlink(os.path.join(DEMO, "coordinates"), data / "picks")
    (data / "gt").mkdir()
    labels = sorted(os.listdir(os.path.join(DEMO, "ground_truth")))[:2]
    for name in labels:
        os.symlink(os.path.join(DEMO, "ground_truth", name), data / "gt" / name)
    spec = dataset_spec(str(data), 3.54, 54.0)
    every = load_dataset(str(data), str(tmp_path / "every"), spec)
    labelled = load_dataset(str(data), str(tmp_path / "labelled"), spec, labelled_only=True)
    assert len(every.names) == 3
    assert labelled.names == sorted(os.path.splitext(n)[0] for n in labels)
    assert sorted(os.listdir(tmp_path / "labelled" / "micrographs")) == [
        n + ".mrc" for n in labelled.names]
    for picks in labelled.picks.values():
        assert sorted(picks) == labelled.names
    assert labelled.truth.keys() == every.truth.keys()


def test_label_files_with_commas_or_blanks_and_bad_ones_named(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    from empiar_data import read_label_csv

    files = {"commas.csv": "# CryoPPP\nx,y\n10,20\n30.5,40\n",
             "blanks.csv": "X Y diameter\n10 20 54\n30.5 40 54\n",
             "empty.csv": "x,y\n", "words.csv": "x,y\n10,20\nten,twenty\n",
             "one.csv": "10\n20\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    for name in ("commas.csv", "blanks.csv"):
        np.testing.assert_array_equal(read_label_csv(str(tmp_path / name)),
                                      [[10, 20], [30.5, 40]])
    assert read_label_csv(str(tmp_path / "empty.csv")).shape == (0, 2)
    with pytest.raises(SystemExit, match="words.csv: not a table of labelled centres"):
        read_label_csv(str(tmp_path / "words.csv"))
    with pytest.raises(SystemExit, match="one.csv: one column"):
        read_label_csv(str(tmp_path / "one.csv"))


def test_labels_in_the_other_row_order_are_refused(monkeypatch, tmp_path):
    """A wrong --flip-y mirrors the micrographs and the labels against the picks, and every
    figure would count labels against picks on the mirrored micrograph: the pickers agree
    with the labels in one row order only, so the wrong one is refused with what to give."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    from empiar_data import dataset_spec, load_dataset

    data = tmp_path / "demo"
    data.mkdir()
    for folder, source in (("micrographs", "micrographs"), ("picks", "coordinates"),
                           ("gt", "ground_truth")):
        os.symlink(os.path.join(DEMO, source), data / folder)
    right = load_dataset(str(data), str(tmp_path / "out"), dataset_spec(str(data), 3.54, 54.0))
    with pytest.raises(SystemExit, match="other row order .* Give --no-flip-y"):
        load_dataset(str(data), str(tmp_path / "out"),
                     dataset_spec(str(data), 3.54, 54.0, flip_y=True))
    # the rerun with the right order writes the micrographs anew, unmirrored
    again = load_dataset(str(data), str(tmp_path / "out"), dataset_spec(str(data), 3.54, 54.0))
    for name in right.names:
        with mrcfile.open(again.mrc_paths[name]) as written, \
                mrcfile.open(os.path.join(DEMO, "micrographs", name + ".mrc")) as source:
            np.testing.assert_array_equal(written.data, source.data)


def test_a_few_labels_near_picks_by_chance_decide_no_row_order(monkeypatch):
    """The row order is refused only when the flipped order matches many labels: 5 of 100
    near picks when flipped and none as read is chance, 30 is the other order."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    from empiar_data import DatasetSpec, Dataset, _check_label_frame

    rng = np.random.default_rng(0)
    labels = rng.uniform(50, 950, (100, 2))
    flipped = np.column_stack([labels[:, 0], 1000 - labels[:, 1]])

    def data(n_near):
        picks = flipped[:n_near] + 1.0
        return Dataset("d", DatasetSpec(pixel_size=1.0, diameter=8.0, flip_y=False), 16,
                       ("A", "B"), ["m"], {}, {"A": {"m": picks}, "B": {"m": picks}},
                       {"m": labels})

    _check_label_frame(data(5), {"m": 1000})
    with pytest.raises(SystemExit, match="30 of their 100 centres .* 0 as read"):
        _check_label_frame(data(30), {"m": 1000})


def benchmark_module():
    """benchmarks/dataset.py as a module (it is a script, not in a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "benchmark_dataset", os.path.join(ROOT, "benchmarks", "dataset.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_report_header_gives_the_boxes_a_stream_s_first_batch_would_fit():
    """The spacing's range over the micrographs one at a time, and where the run fitted its
    box, the boxes of 1.5 such spacings a stream starting on that micrograph works in."""
    metrics = {"and_spacing_px": 99.0, "coordinates_box_px": 360, "box_spacing_px": 98.8,
               "and_spacing_per_micrograph_px": [100.0, 97.0, 102.0]}
    text = benchmark_module().spacing_text(metrics)
    assert text == (", the AND coordinates a median 99 px from their nearest neighbour (the "
                    "coordinates' box is 3.64 of that; on one micrograph alone 97 to 102 px, "
                    "where a stream whose first batch is that micrograph works in boxes of 146 "
                    "to 153 px)")
    own = benchmark_module().spacing_text({**metrics, "box_spacing_px": None})
    assert own.endswith("on one micrograph alone 97 to 102 px)")


def test_the_method_flags_set_the_protocol_form():
    """Each method switch of the benchmark reaches the protocol parameter it names; an
    unset one leaves the protocol's default."""
    module = benchmark_module()
    args = module.parse_args(["--data", "d", "--out", "o", "--no-best-centred",
                              "--no-agreement", "--self-training", "--seed", "3",
                              "--consensus-radius", "0.15"])
    spec = SimpleNamespace(pixel_size=2.0, diameter=50.0)  # a DatasetSpec's two fields used
    assert module.protocol_params(args, spec) == {"combineVotes": False, "bestCentred": False,
                                                  "selfTraining": True, "seed": 3,
                                                  "consensusRadius": 0.15}
    assert module.protocol_params(module.parse_args(["--data", "d", "--out", "o"]), spec) == {}
    training = module.parse_args(["--data", "d", "--out", "o", "--batch-size", "128",
                                  "--learning-rate", "2e-4"])
    assert module.protocol_params(training, spec) == {"batchSize": 128, "learningRate": 2e-4}
    known = module.parse_args(["--data", "d", "--out", "o", "--particle-diameter", "known"])
    assert module.protocol_params(known, spec) == {"particleDiameter": 100.0}
    given = module.parse_args(["--data", "d", "--out", "o", "--particle-diameter", "180"])
    assert module.protocol_params(given, spec) == {"particleDiameter": 180.0}
    from deepconsensus_plugin.protocols import ProtDeepConsensus as Prot
    for extra, use in (([], Prot.USE_FINE_TUNE), (["--score-only"], Prot.USE_SCORE_ONLY)):
        reuse = module.parse_args(["--data", "d", "--out", "o", "--model", "/m.keras", *extra])
        assert module.protocol_params(reuse, spec) == {
            "modelSource": Prot.MODEL_FILE, "modelFile": "/m.keras", "modelUse": use}
    with pytest.raises(SystemExit):
        module.parse_args(["--data", "d", "--out", "o", "--score-only"])


def test_picker_spacing_counts_the_picks_another_picker_left_beside_its_own(monkeypatch):
    """Picker B never picks closer than 100 px; A's picks 20 to 60 px from a B pick lack
    B's vote though they lie on labels, one 150 px away lies on none, and the bands say
    so (counts and labelled shares)."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    from picker_spacing import bands, closest_spacing, nearest_other

    b = np.array([[100.0, 100.0], [200.0, 100.0], [300.0, 100.0]])
    a = np.array([[101.0, 100.0],      # confirmed (1 px)
                  [200.0, 130.0],      # beside B's pick, on a label
                  [300.0, 160.0],      # beside, on none
                  [100.0, 250.0]])     # 150 px from the nearest B pick, on a label
    truth = np.array([[100.0, 100.0], [200.0, 131.0], [100.0, 252.0]])
    assert closest_spacing({"m": b, "empty": np.empty((0, 2))}) == 100.0
    assert closest_spacing({"m": b[:1]}) == np.inf
    distance, labelled = nearest_other({"m": a}, {"m": b}, {"m": truth}, match_radius=5.0)
    assert np.allclose(distance, [1.0, 30.0, 60.0, 150.0])
    assert labelled.tolist() == [True, True, False, True]
    lone = distance > 10.0
    assert bands(distance[lone], labelled[lone], 10.0, 100.0) == [
        ("within its closest spacing", 2, 0.5), ("one to two spacings", 1, 1.0),
        ("further, or none on the micrograph", 0, pytest.approx(np.nan, nan_ok=True))]
    alone, on_label = nearest_other({"m": a}, {}, {"m": truth}, match_radius=5.0)
    assert np.isinf(alone).all() and on_label.tolist() == [True, True, False, True]


def test_picker_spacing_prints_the_counts_for_a_dataset_folder(monkeypatch, tmp_path, capsys):
    """On the demo laid out as a dataset folder: one spacing line per picker, and the lone
    picks split into the bands add up to the count it gives; an unknown picker is named."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    import picker_spacing

    data = demo_dataset(tmp_path)
    facts = ["--data", str(data), "--pixel-size", "3.54", "--diameter", "54"]
    picker_spacing.main(facts + ["--picker", "crYOLO", "--other", "topaz"])
    lines = capsys.readouterr().out.splitlines()
    pickers = [line.split(":")[0].strip() for line in lines[1:4]]
    assert pickers == ["crYOLO", "deepPicker", "topaz"]
    lone = int(lines[4].split("; ")[1].split()[0])
    assert sum(int(line.split(": ")[1].split(",")[0]) for line in lines[5:8]) == lone > 0
    with pytest.raises(SystemExit, match="has no picker 'cryolo'"):
        picker_spacing.main(facts + ["--picker", "cryolo", "--other", "topaz"])
