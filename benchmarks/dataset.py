"""Dataset benchmark: ProtDeepConsensus through Scipion against curated ground truth.

    python benchmarks/dataset.py --data ../shared/data/empiar10028 --out OUT
    python benchmarks/dataset.py --data NEW --out OUT --pixel-size 1.1 --diameter 150 [--flip-y]

Takes any dataset folder of the shared layout (``empiar_data.py``): builds a
Scipion project, imports its micrographs (written as MRC in the pickers'
frame) and every picker's coordinates, runs ProtDeepConsensus with its
defaults (or the options given), and evaluates every set (each picker, OR,
AND, DC-retained) against the ground truth in ``DATA/gt`` three ways:
one-to-one (the primary figures), lenient, and labels audited.  Also the
ROC-AUC and PR-AUC of the score over the OR set, the paper's ROC-AUC
(labelled particles against random background boxes, scored with the run's
model), the retained pairs closer than the run's minimum distance between
particles, and the time end to end.  Writes ``OUT/metrics.json``,
``OUT/scores.csv``, ``OUT/report.md`` and PNG plots.  ``--label-noise
0,0.25,0.4`` adds the paper's Appendix C experiment: the same pipeline
through the core with that share of training labels swapped.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime

import numpy as np
from scipy.special import expit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deepconsensus_plugin import headless  # noqa: E402

from empiar_data import (PICK_FILES, Dataset, add_dataset_arguments,  # noqa: E402
                         audit_anchors, evaluate_picks, evaluate_selection, load_dataset,
                         or_labels, paired_f1_bootstrap, pattern_decisions,
                         picker_confidences, picker_score_ceiling, score_quality,
                         spec_from_arguments, vote_pattern_ceiling)
from label_probe import label_probe, label_probe_text  # noqa: E402

from deepconsensus_plugin.core import box_policy, run_summary, stages  # noqa: E402
from deepconsensus_plugin.core.run_folder import RunFolder  # noqa: E402
from deepconsensus_plugin.results import RunResults  # noqa: E402

CONSENSUS_SETS = ("OR", "AND", "dc_retained")
COLUMNS = (("one-to-one", None), ("lenient", "lenient"), ("labels audited", "audited"))
"""The three countings in the report: title, key in a set's figures (None: the top level)."""


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataset_arguments(parser)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--pickers", default=None,
                        help="comma-separated picker folders to run, in this input order "
                             "(default: every folder under picks/)")
    parser.add_argument("--labelled-only", action="store_true",
                        help="run on the micrographs with ground truth only (a smaller "
                             "dataset: less to train on)")
    parser.add_argument("--min-votes", type=int, default=None,
                        help="AND = picked by at least this many pickers (default: the "
                             "protocol's default rule)")
    parser.add_argument("--box", type=int, default=None,
                        help="box size (px) of the imported coordinates, instead of the .box "
                             "files' width: how the run fares with the box another user "
                             "would choose")
    parser.add_argument("--particle-diameter", default=None, metavar="A|known",
                        help="the protocol's particle diameter in Å (the run works in boxes "
                             "of 1.5 diameters); 'known': the dataset's own diameter "
                             "(default: none, the run works in the coordinates' box)")
    parser.add_argument("--network-size", type=int, default=None)
    parser.add_argument("--architecture", choices=("fast", "paper"), default=None)
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--epoch-particles", type=int, default=None,
                        help="at most this many boxes of each class an epoch (0: all)")
    parser.add_argument("--patience", type=int, default=None,
                        help="early-stopping patience in epochs (the learning rate drops "
                             "after half of it)")
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="training batch size (boxes per step)")
    parser.add_argument("--threshold", default=None,
                        help="a number, or 'auto' for the automatic threshold")
    parser.add_argument("--method", choices=("agreement", "paper"), default=None,
                        help="'paper': the method as published (random negatives, one round, "
                             "the network's score alone)")
    parser.add_argument("--self-training", action=argparse.BooleanOptionalAction, default=None,
                        help="the second round on the first round's confident decisions")
    parser.add_argument("--off-centre", action=argparse.BooleanOptionalAction, default=None,
                        help="off-centre negatives")
    parser.add_argument("--agreement", action=argparse.BooleanOptionalAction, default=None,
                        help="combine the network's score with the pickers' votes")
    parser.add_argument("--best-centred", action=argparse.BooleanOptionalAction, default=None,
                        help="score each pick at its best-centred box (the final round)")
    parser.add_argument("--rotational-average", action=argparse.BooleanOptionalAction,
                        default=None,
                        help="add the boxes' rotational-average discriminant to the agreement")
    parser.add_argument("--consensus-radius", type=float, default=None,
                        help="consensus radius, a fraction of the box (default: the "
                             "protocol's)")
    parser.add_argument("--min-distance", type=float, default=None,
                        help="minimum distance between retained particles in A (-1: the "
                             "protocol's default, 0: keep duplicates)")
    parser.add_argument("--edge-margin", type=float, default=None,
                        help="distance from the micrograph edge under which coordinates are "
                             "pruned, in A (-1: the protocol's default, 0: keep them)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--label-noise", default="",
                        help="comma-separated label-noise fractions for the Appendix C curve")
    parser.add_argument("--label-probe", action="store_true",
                        help="also train a network on the labels (leave one labelled "
                             "micrograph out) and report what the run would give with it "
                             "(label_probe.py; a diagnostic, it uses the labels)")
    parser.add_argument("--model", default=None, metavar="FILE",
                        help="reuse the network of an earlier run (the model.keras every run "
                             "copies into its --out), fine-tuned on this dataset unless "
                             "--score-only; the run works in the boxes it was trained in")
    parser.add_argument("--score-only", action="store_true",
                        help="with --model: score with that network as it is, no training")
    args = parser.parse_args(argv)
    if args.score_only and args.model is None:
        parser.error("--score-only needs --model")
    return args


def protocol_params(args, spec) -> dict:
    from deepconsensus_plugin.protocols import ProtDeepConsensus

    params = {}
    if args.model is not None:
        params.update(modelSource=ProtDeepConsensus.MODEL_FILE,
                      modelFile=args.model,
                      modelUse=(ProtDeepConsensus.USE_SCORE_ONLY if args.score_only
                                else ProtDeepConsensus.USE_FINE_TUNE))
    if args.particle_diameter == "known":
        params["particleDiameter"] = spec.diameter * spec.pixel_size
    elif args.particle_diameter is not None:
        params["particleDiameter"] = float(args.particle_diameter)
    if args.min_votes is not None:
        params.update(andRule=1, minVotes=args.min_votes)
    if args.network_size is not None:
        params["networkSize"] = args.network_size
    if args.architecture is not None:
        params["architecture"] = ("fast", "paper").index(args.architecture)
    if args.max_epochs is not None:
        params["maxEpochs"] = args.max_epochs
    if args.epoch_particles is not None:
        params["epochParticles"] = args.epoch_particles
    if args.patience is not None:
        params["patience"] = args.patience
    if args.learning_rate is not None:
        params["learningRate"] = args.learning_rate
    if args.batch_size is not None:
        params["batchSize"] = args.batch_size
    if args.method is not None:
        params["method"] = ("agreement", "paper").index(args.method)
    for flag, name in (("self_training", "selfTraining"), ("off_centre", "offCentreNegatives"),
                       ("agreement", "combineVotes"), ("best_centred", "bestCentred"),
                       ("rotational_average", "rotationalAverage")):
        if getattr(args, flag) is not None:
            params[name] = getattr(args, flag)
    if args.consensus_radius is not None:
        params["consensusRadius"] = args.consensus_radius
    if args.min_distance is not None:
        params["minDistance"] = args.min_distance
    if args.edge_margin is not None:
        params["edgeMargin"] = args.edge_margin
    if args.seed is not None:
        params["seed"] = args.seed
    if args.threshold == "auto":
        params["thresholdMode"] = 1
    elif args.threshold is not None:
        params["threshold"] = float(args.threshold)
    return params


def run_scipion(data: Dataset, args) -> tuple:
    """The project run; returns (the finished deep-consensus protocol, seconds)."""
    from pwem.protocols import ProtImportMicrographs
    from pyworkflow.object import Pointer
    from pyworkflow.project import Manager

    from deepconsensus_plugin.demo import machine_has_gpu, new_protocol, run_protocol
    from deepconsensus_plugin.protocols import ProtDeepConsensus, ProtImportPickerCoordinates

    name = data.name + "-" + datetime.now().strftime("%Y%m%d-%H%M%S")
    project = Manager().createProject(name)
    os.chdir(project.path)
    print("Scipion project: %s" % project.path, flush=True)
    start = time.perf_counter()
    mics = run_protocol(project, new_protocol(
        project, ProtImportMicrographs, data.name,
        filesPath=os.path.dirname(next(iter(data.mrc_paths.values()))), filesPattern="*.mrc",
        samplingRate=data.spec.pixel_size, voltage=300))
    pickers = {}
    for picker in data.pickers:
        prot = new_protocol(project, ProtImportPickerCoordinates, picker,
                            filesPath=os.path.join(args.data, "picks", picker),
                            filesPattern=PICK_FILES,
                            boxSize=args.box or data.picker_boxes[picker] or data.box)
        prot.inputMicrographs.set(mics)
        prot.inputMicrographs.setExtended("outputMicrographs")
        pickers[picker] = run_protocol(project, prot)
    # a GPU booked where none is listed would only add a warning to the run's log, as in the demo
    dc = new_protocol(project, ProtDeepConsensus, "deep consensus", useGpu=machine_has_gpu(),
                      **protocol_params(args, data.spec))
    for prot in pickers.values():
        dc.inputCoordinates.append(Pointer(prot, extended="outputCoordinates"))
    print("Running deep consensus...", flush=True)
    dc = run_protocol(project, dc)
    return dc, time.perf_counter() - start


def step_timings(prot) -> dict:
    """Seconds per protocol step function, from the step records Scipion keeps (summed over
    the steps of one function: training and scoring run once per round)."""
    timings = {}
    for step in prot.loadSteps():
        begin, end = step.initTime.get(), step.endTime.get()
        if begin and end:
            fmt = "%Y-%m-%d %H:%M:%S.%f"
            seconds = (datetime.strptime(end, fmt) - datetime.strptime(begin, fmt)).total_seconds()
            name = step.funcName.get()
            timings[name] = timings.get(name, 0.0) + seconds
    return timings


def run_results(dc) -> tuple[RunResults, np.ndarray, np.ndarray]:
    """The finished run's results, each row's micrograph name, and which rows are retained.

    Retained is what ``RunResults.split`` says at the run's threshold: the
    protocol's own rule, whatever it grows into.
    """
    results = RunResults(dc._getExtraPath(), dc.getProject().getPath())
    names = np.array([results.micrographName(int(m)) for m in results.table.mic])
    return results, names, results.retainedMask(results.threshold)


def image_score(results: RunResults) -> np.ndarray:
    """What the run's agreement took from the boxes, as a probability: the network's score,
    with the rotational averages' log-odds added where the run used them (the ceiling and
    the per-pattern table judge this, the one thing besides the votes)."""
    network = results.run.array(RunFolder.CNN_SCORES)
    evidence = results.run.rotational_evidence()
    return network if evidence is None else expit(stages.image_evidence(network, evidence))


def paper_roc_auc(results: RunResults, names: np.ndarray, data: Dataset, invert: bool,
                  work_dir: str, seed: int = 0) -> dict:
    """ROC-AUC of the run's model on labelled particles against random background boxes.

    The paper's own measure: a box at every labelled centre against as many
    random boxes on the same micrographs, each at least half a box from every
    label and every OR coordinate (so they hold no picked or labelled
    particle), extracted and scored as the run does (its box, network size,
    contrast and model).  Background boxes keep an eighth of a box from each
    other (the protocol's negatives keep a quarter): dense micrographs such
    as EMPIAR-10017's hold as many as they have labels only at that spacing.
    The stacks are written under ``work_dir`` and removed.
    """
    from deepconsensus_plugin.core.extraction import extract_to_stack, micrograph_shape
    from deepconsensus_plugin.core.metrics import roc_auc
    from deepconsensus_plugin.core.negatives import sample_negatives
    from deepconsensus_plugin.core.pipeline import CoordinateTable, extraction_jobs
    from deepconsensus_plugin.core.scoring import score_stack
    from deepconsensus_plugin.core.stack import create_stack, open_stack

    box, size = results.box, results.info.extraction.network_size
    ids = {mic.name: micId for micId, mic in results.micrographs.items()}
    rng = np.random.default_rng(seed)
    particles, background, paths = {}, {}, {}
    for name, centres in data.truth.items():
        micId = ids[name]
        paths[micId] = results.micrographPath(micId)
        avoid = np.vstack([centres, results.table.xy[names == name]])
        particles[micId] = centres
        background[micId] = sample_negatives(micrograph_shape(paths[micId]), box, avoid,
                                             len(centres), box / 2, rng, spacing=box / 8)
    scores = {}
    with tempfile.TemporaryDirectory(dir=work_dir) as folder:
        for label, picks in (("particles", particles), ("background", background)):
            table = CoordinateTable.from_picks(picks)
            path = os.path.join(folder, label + ".npy")
            stack = create_stack(path, len(table), size)
            extract_to_stack(extraction_jobs(table, paths), stack, box, invert)
            stack.close()
            with open_stack(path) as images:
                scores[label] = score_stack(results.path(RunFolder.MODEL), images, seed=seed)
    labels = np.r_[np.ones(len(scores["particles"]), bool),
                   np.zeros(len(scores["background"]), bool)]
    return {"roc_auc": roc_auc(labels, np.r_[scores["particles"], scores["background"]]),
            "n_particles": len(scores["particles"]), "n_background": len(scores["background"])}


def write_scores(path, results: RunResults, names: np.ndarray, retained: np.ndarray) -> None:
    table = results.table
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["micrograph", "x", "y", "score", "votes", "retained"])
        for name, (x, y), score, votes, kept in zip(names, table.xy, results.scores,
                                                    table.votes, retained):
            writer.writerow([name, "%.1f" % x, "%.1f" % y, "%.6g" % score, int(votes),
                             int(kept)])


def write_plots(out, labels, scores, threshold, on_truth, noise_rows) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deepconsensus_plugin.core.metrics import pr_curve, roc_curve

    files = []
    y, s = labels[on_truth], scores[on_truth]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    _, precision, recall = pr_curve(y, s)
    axes[0].plot(recall, precision)
    axes[0].set(xlabel="recall (of true positives in OR)", ylabel="precision",
                title="Precision-recall of the DC score", xlim=(0, 1), ylim=(0, 1.02))
    fpr, tpr = roc_curve(y, s)
    axes[1].plot(fpr, tpr)
    axes[1].plot([0, 1], [0, 1], ":", color="grey")
    axes[1].set(xlabel="false-positive rate", ylabel="true-positive rate",
                title="ROC of the DC score")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "curves.png"), dpi=100)
    files.append("curves.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist([s[y], s[~y]], bins=40, range=(0, 1), stacked=True,
            label=["true particle", "false positive"])
    ax.axvline(threshold, color="k", linestyle="--", label="threshold %.2f" % threshold)
    ax.set(xlabel="DC score", ylabel="OR coordinates (ground-truth micrographs)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "score_histogram.png"), dpi=100)
    files.append("score_histogram.png")
    if noise_rows:
        fig, ax = plt.subplots(figsize=(6, 4))
        noise = [r["noise"] for r in noise_rows]
        ax.plot(noise, [r["f1"] for r in noise_rows], "o-", label="F1 (threshold 0.5)")
        ax.plot(noise, [r["roc_auc"] for r in noise_rows], "s-", label="ROC-AUC")
        ax.set(xlabel="share of training labels swapped", ylabel="value",
               title="Tolerance to label noise", ylim=(0, 1))
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out, "label_noise.png"), dpi=100)
        files.append("label_noise.png")
    plt.close("all")
    return files


def label_noise_curve(data, out, fractions, info) -> list[dict]:
    """F1 and ROC-AUC with a share of the training labels swapped, through the core."""
    import study

    rows = []
    for fraction in fractions:
        params = dict(study.DEFAULTS, k=info.consensus.min_votes,
                      size=info.extraction.network_size, arch=info.training.architecture,
                      noise=fraction)
        result = study.run_variant(data, os.path.join(out, "label_noise"), params)
        rows.append({"noise": fraction, "f1": result["dc_0.5"]["f1"],
                     "precision": result["dc_0.5"]["precision"],
                     "recall": result["dc_0.5"]["recall"], "roc_auc": result["roc_auc"]})
        print("label noise %.2f: F1 %.3f ROC-AUC %.3f" % (fraction, rows[-1]["f1"],
                                                          rows[-1]["roc_auc"]), flush=True)
    return rows


def _figures(m: dict) -> str:
    return "%d | %.3f | %.3f | %.3f" % (m["n"], m["precision"], m["recall"], m["f1"])


def box_origin_text(metrics: dict) -> str:
    """Where the run's box came from where it is not the coordinates': the reused network,
    the fit to the AND spacing, or the particle diameter."""
    if metrics["run_info"]["consensus"].get("box_from_network"):
        return "the reused network's"
    if metrics.get("box_spacing_px") is not None:
        return "fitted to the AND spacing"
    return "the particle diameter's"


def first_batch_spacings(data: Dataset, box: int, radius: float,
                         min_votes: int) -> list[float]:
    """Each micrograph's AND spacing as a stream whose first batch is that micrograph alone
    measures it (``box_policy.fitted_consensus`` on its picks in the coordinates' ``box``, the
    consensus ``radius`` a share of it), where it has enough AND coordinates."""
    spacings = []
    for name in data.names:
        picks = [{0: data.picks[p].get(name, np.empty((0, 2)))} for p in data.pickers]
        _, _, spacing = box_policy.fitted_consensus(picks, box, radius, min_votes, fit=True)
        if spacing is not None:
            spacings.append(spacing)
    return spacings


def spacing_text(metrics: dict) -> str:
    """The AND coordinates' spacing against the coordinates' box, for the report's header
    (the summary warns above 2; ``box_policy.CROWDED_BOX_PER_SPACING``), and its range over
    the micrographs one at a time, with the boxes a stream's first batch of one would fit
    where the run fitted its box."""
    spacing = metrics.get("and_spacing_px")
    if spacing is None:
        return ""
    box = metrics["coordinates_box_px"]
    text = (", the AND coordinates a median %.0f px from their nearest neighbour (the "
            "coordinates' box is %.2f of that" % (spacing, box / spacing))
    alone = metrics.get("and_spacing_per_micrograph_px") or []
    if alone:
        text += "; on one micrograph alone %.0f to %.0f px" % (min(alone), max(alone))
        if metrics.get("box_spacing_px") is not None:
            fitted = [box_policy.spacing_box(box, s) for s in (min(alone), max(alone))]
            text += (", where a stream whose first batch is that micrograph works in boxes "
                     "of %s to %s px" % tuple(b or box for b in fitted))
    return text + ")"


def write_report(out, metrics, plots) -> None:
    columns = " | ".join("%s n | %s P | %s R | %s F1" % ((title,) * 4) for title, _ in COLUMNS)
    lines = ["# %s benchmark" % metrics["dataset"], "",
             "Run on %d micrographs%s, pickers %s, in boxes of %d px%s%s.  Ground truth: %d "
             "particles on %d micrographs (%s); match radius %.1f px (a quarter of the %.0f "
             "px diameter); threshold %.3f (%s); network %s."
             % (metrics["n_micrographs"],
                " (the labelled ones only)" if metrics["labelled_only"] else "",
                ", ".join(metrics["pickers"]), metrics["box_px"],
                "" if metrics["coordinates_box_px"] == metrics["box_px"] else
                " (%s; the coordinates' box %d px)"
                % (box_origin_text(metrics), metrics["coordinates_box_px"]),
                spacing_text(metrics),
                metrics["n_labels"], len(metrics["ground_truth_micrographs"]),
                ", ".join(metrics["ground_truth_micrographs"]), metrics["match_radius_px"],
                metrics["diameter_px"], metrics["threshold"], metrics["threshold_mode"],
                metrics.get("network", "trained on this data")), "",
             "One-to-one: each labelled centre matches at most one coordinate, closest pairs "
             "first (the primary figures). Lenient: every coordinate near a label is a true "
             "positive (a particle picked twice counts twice). Labels audited: one-to-one, but "
             "unmatched coordinates within a quarter diameter of an OR coordinate that two or "
             "more pickers picked, more than half a diameter from every label, are left out "
             "of precision (n counts the coordinates left in). Pickers are counted on their own "
             "files; MCC is that of keeping each OR coordinate against its lenient label.", "",
             "| set | %s | MCC |" % columns, "|" + " --- |" * (2 + 4 * len(COLUMNS))]
    for name, m in metrics["sets"].items():
        lines.append("| %s | %s | %.3f |" % (name, " | ".join(
            _figures(m[key] if key else m) for _, key in COLUMNS), m["mcc"]))
    paper = metrics["paper_roc_auc"]
    pairs = metrics["retained_close_pairs"]
    audited, one = metrics["audited"], metrics["one_to_one"]
    lines += ["", bootstrap_text(metrics["paired_bootstrap"]), "",
              "DC score over the OR set (labelled micrographs, lenient labels): ROC-AUC "
              "%.3f, PR-AUC %.3f; with the labels audited (%d unlabelled boxes on agreed, "
              "unlabelled picks left out) ROC-AUC %.3f, PR-AUC %.3f. A ranking that is "
              "perfect if the audit is right (those %d boxes among the labelled particles, "
              "every other box after them) has ROC-AUC %.3f against the labels as they are. "
              "Counted one to one (a box is a particle only when it is the box matched to a "
              "label, so the %d second boxes on labelled particles are negatives, as the F1 "
              "counts them): ROC-AUC %.3f, PR-AUC %.3f."
              % (metrics["roc_auc"], metrics["pr_auc"], audited["n_left_out"],
                 audited["roc_auc"], audited["pr_auc"], audited["n_left_out"],
                 metrics["roc_auc_audit_perfect"], one["n_second_boxes"], one["roc_auc"],
                 one["pr_auc"]), "",
              "The paper's measure, the run's model on %d boxes at labelled centres against %d "
              "random background boxes (at least half a box from every label and OR "
              "coordinate): ROC-AUC %.4f." % (paper["n_particles"], paper["n_background"],
                                              paper["roc_auc"]), "",
              "Retained pairs closer than %.1f px (%s): %d on all micrographs, %d on the "
              "labelled ones; retained coordinates that close to a higher-scoring retained one: "
              "%d and %d." % (pairs["distance_px"], pairs["source"], pairs["pairs_all"],
                              pairs["pairs_labelled"], pairs["duplicates_all"],
                              pairs["duplicates_labelled"]), "",
              "Pruned at the micrograph edge (closer than %.1f px, the run's edge margin): %d."
              % (metrics["run_info"]["split"].get("edge_margin_px", 0.0),
                 metrics["run_info"]["split"].get("n_at_edge", 0)), "",
              "Ceiling of this run's inputs: the best one-to-one F1 any combination of the "
              "votes and the boxes' score (the network's, with the rotational averages where "
              "the run added them) reaches (per vote pattern, keep the coordinates "
              "above a threshold chosen on the labels; an upper bound, not a result): %.3f."
              % metrics["vote_pattern_ceiling"]["f1"], "",
              _picker_score_text(metrics["picker_score_ceiling"]), "",
              *_pattern_table(metrics),
              "Time: %s; protocol %.0f s; end to end (conversion, imports, run, "
              "evaluation) %.0f s." % (", ".join("%s %.0f s" % kv for kv in
                                                 metrics["timings_s"]["steps"].items()),
                                       metrics["timings_s"]["total"],
                                       metrics["timings_s"]["end_to_end"]), ""]
    if metrics.get("label_noise"):
        lines += ["## Label noise (one-to-one)", "",
                  "| swapped | F1 | precision | recall | ROC-AUC |",
                  "| --- | --- | --- | --- | --- |"]
        lines += ["| %.0f%% | %.3f | %.3f | %.3f | %.3f |"
                  % (100 * r["noise"], r["f1"], r["precision"], r["recall"], r["roc_auc"])
                  for r in metrics["label_noise"]]
        lines.append("")
    if metrics.get("label_probe"):
        lines += label_probe_text(metrics["label_probe"])
    lines += ["![%s](%s)" % (p, p) for p in plots]
    with open(os.path.join(out, "report.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")


def _picker_score_text(ceiling: dict) -> str:
    by_weight = ceiling["by_weight"]
    return ("The same ceiling with the pickers' own scores (normal scores of each picker's "
            "scores over its picks, summed over the pickers that picked a coordinate) added "
            "to the boxes' logit: %.3f (weights %s; their scores alone %.3f).  Where it "
            "does not pass the first, what the pickers know of their picks adds nothing "
            "the votes and the boxes' score do not." % (
                ceiling["f1"], ", ".join("%s: %.3f" % (w, f1) for w, f1 in by_weight.items()
                                         if w != "alone"), by_weight["alone"]))


def _pattern_table(metrics: dict) -> list[str]:
    """The report's lines on the run's decisions per vote pattern (labelled micrographs)."""
    lines = ["The run's decisions by vote pattern (which pickers picked a coordinate; labelled "
             "micrographs, lenient labels): what it kept and pruned, the boxes' score's "
             "ROC-AUC within the pattern, that of each picker's own score, and the one-to-one "
             "F1 of the run (%.3f) had it kept, or pruned, every coordinate of the pattern.  "
             "A pattern whose F1 all kept or all pruned passes the run's is where the run's "
             "F1 is lost." % metrics["sets"]["dc_retained"]["f1"], "",
             "| vote pattern | n | labelled | retained (labelled) | pruned by score "
             "(labelled) | pruned as close or at the edge | ROC-AUC within | pickers' own "
             "scores, ROC-AUC within | F1 all kept | F1 all pruned |", "|" + " --- |" * 10]
    for row in metrics["pattern_decisions"]:
        auc = "" if row["roc_auc"] is None else "%.3f" % row["roc_auc"]
        own = ", ".join("%s %.3f" % kv for kv in row["pickers_roc_auc"].items())
        lines.append("| %s | %d | %d | %d (%d) | %d (%d) | %d | %s | %s | %.3f | %.3f |" % (
            row["pattern"], row["n"], row["labelled"], row["retained"],
            row["retained_labelled"], row["pruned_by_score"], row["pruned_by_score_labelled"],
            row["pruned_close_or_edge"], auc, own, row["f1_all_kept"], row["f1_all_pruned"]))
    return lines + [""]


def retained_against_references(names: np.ndarray, xy: np.ndarray, keep: dict, data: Dataset,
                                sets: dict) -> dict:
    """The retained set's F1 difference from the best picker's (by one-to-one F1) and the
    AND set's, with the paired bootstrap's interval (:func:`paired_f1_bootstrap`)."""
    def on_labelled(mask: np.ndarray) -> dict:
        return {n: xy[mask & (names == n)] for n in data.truth}

    best = max(data.pickers, key=lambda picker: sets[picker]["f1"])
    retained = on_labelled(keep["dc_retained"])
    return {"best_picker": best,
            "against_best_picker": paired_f1_bootstrap(retained, data.picks[best], data),
            "against_AND": paired_f1_bootstrap(retained, on_labelled(keep["AND"]), data)}


def bootstrap_text(paired: dict) -> str:
    def one(name: str, figures: dict) -> str:
        low, high = figures["ci95"]
        return ("%s %+.4f (95%%: %+.4f to %+.4f; not worse in %.0f%% of the resamples)"
                % (name, figures["difference"], low, high,
                   100 * figures["share_first_not_worse"]))

    best = paired["against_best_picker"]
    return ("DC-retained one-to-one F1 minus that of %s and %s; paired bootstrap over %d "
            "tiles of %.0f px of the labelled micrographs, %d resamples: how far the "
            "difference would move on other micrographs like these, not with the training's "
            "seed." % (one("the best picker, " + paired["best_picker"] + ",", best),
                       one("AND", paired["against_AND"]), best["n_tiles"], best["tile_px"],
                       best["n_resamples"]))


def retained_close_pairs(results: RunResults, names: np.ndarray, retained: np.ndarray,
                         data: Dataset) -> dict:
    """Retained pairs closer than the run's minimum distance between particles.

    The run's minimum distance when it records a positive one, else half the
    particle diameter (a run that keeps duplicates is still counted): two
    retained boxes that close are one particle picked twice.
    Also the retained coordinates that close to a higher-scoring retained one
    (what a duplicate rule removes), on all micrographs and on the labelled ones.
    """
    from deepconsensus_plugin.core.metrics import close_pairs, near_higher_score

    if results.minDistancePx > 0:
        distance, source = results.minDistancePx, "the run's minimum distance"
    else:
        distance, source = data.spec.diameter / 2, "half the particle diameter"
    table = results.table
    labelled = np.isin(names, list(data.truth))
    counts = {"distance_px": distance, "source": source}
    for where, rows in (("all", retained), ("labelled", retained & labelled)):
        xy, mic = table.xy[rows], table.mic[rows]
        counts["pairs_" + where] = close_pairs(xy, mic, distance)
        counts["duplicates_" + where] = int(near_higher_score(xy, mic, results.scores[rows],
                                                              distance).sum())
    return counts


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    args.data, out = os.path.abspath(args.data), os.path.abspath(args.out)
    args.model = args.model and os.path.abspath(args.model)  # the project is another folder
    os.makedirs(out, exist_ok=True)
    headless.configure(os.path.join(out, "scipion"))
    spec = spec_from_arguments(args)
    chosen = tuple(p for p in args.pickers.split(",") if p) if args.pickers else None
    data = load_dataset(args.data, out, spec, chosen, args.labelled_only, args.box)
    dc, total = run_scipion(data, args)

    results, names, retained = run_results(dc)
    table, info = results.table, results.info
    labels = or_labels(names, table.xy, data)
    anchors = audit_anchors(names, table.xy, table.votes, data)
    keep = {"OR": np.ones(len(table), bool), "AND": table.votes >= results.minVotes,
            "dc_retained": retained}
    metrics = {"dataset": data.name, "pickers": list(data.pickers), "box_px": results.box,
               "coordinates_box_px": results.outputBox,
               "and_spacing_px": info.consensus.and_spacing_px,
               "box_spacing_px": info.consensus.box_spacing_px,
               "and_spacing_per_micrograph_px": first_batch_spacings(
                   data, results.outputBox, info.consensus.radius_px / results.box,
                   results.minVotes),
               "n_micrographs": len(data.names), "labelled_only": args.labelled_only,
               "pixel_size": spec.pixel_size, "diameter_px": spec.diameter,
               "flip_y": spec.flip_y, "match_radius_px": data.match_radius,
               "n_labels": int(sum(len(c) for c in data.truth.values())),
               "ground_truth_micrographs": sorted(data.truth), "sets": {},
               "threshold": results.threshold,
               "threshold_mode": info.split.threshold_mode,
               "network": run_summary.model_origin(info.model)}
    for p, picker in enumerate(data.pickers):
        # a picker's own picks, as its files give them (before consensus merged them);
        # MCC is that of keeping the OR coordinates it voted for
        metrics["sets"][picker] = evaluate_picks(data.picks[picker], data, anchors)
        metrics["sets"][picker]["mcc"] = evaluate_selection(
            names, table.xy, table.voters[:, p], data, labels, anchors)["mcc"]
    for name in CONSENSUS_SETS:
        metrics["sets"][name] = evaluate_selection(names, table.xy, keep[name], data, labels,
                                                   anchors)
    metrics["paired_bootstrap"] = retained_against_references(names, table.xy, keep, data,
                                                              metrics["sets"])
    metrics.update(score_quality(names, table.xy, results.scores, data, labels, anchors))
    metrics["paper_roc_auc"] = paper_roc_auc(results, names, data, dc.invertContrast.get(),
                                             out)
    metrics["retained_close_pairs"] = retained_close_pairs(results, names, retained, data)
    network = image_score(results)
    split_rules = (results.minDistancePx, results.edgeDistances(), results.edgeMarginPx)
    metrics["vote_pattern_ceiling"] = vote_pattern_ceiling(
        names, table.xy, table.mic, table.voters, network, data, labels, anchors, *split_rules)
    confidences = picker_confidences(names, table.xy, table.voters, data,
                                     info.consensus.radius_px)
    metrics["picker_score_ceiling"] = picker_score_ceiling(
        names, table.xy, table.mic, table.voters, network, confidences, data, labels, anchors,
        *split_rules)
    metrics["pattern_decisions"] = pattern_decisions(
        names, table.xy, table.mic, table.voters, results.scores, network, results.threshold,
        data, labels, anchors, *split_rules, confidences=confidences)
    metrics["auto_threshold"] = results.autoThreshold
    metrics["parameters"] = {k: v.get() for k, v in dc.iterDefinitionAttributes()
                             if hasattr(v, "get") and not k.startswith("input")}
    metrics["run_info"] = info.to_dict()
    write_scores(os.path.join(out, "scores.csv"), results, names, retained)
    # the run's network, for a later run's --model
    shutil.copyfile(RunFolder(dc._getExtraPath()).file(RunFolder.MODEL),
                    os.path.join(out, "model.keras"))
    # End to end: micrograph conversion, Scipion imports, the run and its evaluation;
    # the optional label-noise runs are timed apart.
    metrics["timings_s"] = {"steps": step_timings(dc), "total": total,
                            "end_to_end": time.perf_counter() - start}
    fractions = [float(f) for f in args.label_noise.split(",") if f != ""]
    noise_start = time.perf_counter()
    metrics["label_noise"] = label_noise_curve(data, out, fractions, info)
    metrics["timings_s"]["label_noise"] = time.perf_counter() - noise_start
    if args.label_probe:
        probe_start = time.perf_counter()
        metrics["label_probe"] = label_probe(results, names, data, labels, anchors, split_rules,
                                             seed=dc.seed.get())
        metrics["timings_s"]["label_probe"] = time.perf_counter() - probe_start
    on_truth = np.isin(names, list(data.truth)) & np.isfinite(results.scores)
    plots = write_plots(out, labels, results.scores, results.threshold, on_truth,
                        metrics["label_noise"])
    with open(os.path.join(out, "metrics.json"), "w") as handle:
        json.dump(metrics, handle, indent=1, default=float)
    write_report(out, metrics, plots)
    print(open(os.path.join(out, "report.md")).read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
