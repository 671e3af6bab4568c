"""EMPIAR-10017 benchmark: ProtDeepConsensus through Scipion against curated ground truth.

    python benchmarks/empiar10017.py --data ../shared/data/empiar10017 --out OUT

Builds a Scipion project, imports the 12 micrographs (full resolution, flipped
to the pickers' frame, 1.77 A/px) and the crYOLO, Topaz and DeepPicker
coordinates, runs ProtDeepConsensus with its defaults (or the options given),
and evaluates every set against the ground truth present in ``DATA/gt``.
Writes ``OUT/metrics.json``, ``OUT/scores.csv``, ``OUT/report.md`` and PNG
plots.  ``--label-noise 0,0.25,0.4`` adds the paper's Appendix C experiment:
the same pipeline through the core with that share of training labels
swapped.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from datetime import datetime

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deepconsensus_plugin import headless  # noqa: E402

from empiar_data import (MATCH_RADIUS, PICKERS, SAMPLING_RATE, evaluate_selection,  # noqa: E402
                         load_dataset, or_labels, score_quality)

SETS = ("crYOLO", "topaz", "deepPicker", "OR", "AND", "dc_retained")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the empiar10017 folder")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--min-votes", type=int, default=None,
                        help="AND = picked by at least this many pickers (default: the "
                             "protocol's default rule)")
    parser.add_argument("--network-size", type=int, default=None)
    parser.add_argument("--architecture", choices=("fast", "paper"), default=None)
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--threshold", default=None,
                        help="a number, or 'auto' for the automatic threshold")
    parser.add_argument("--label-noise", default="",
                        help="comma-separated label-noise fractions for the Appendix C curve")
    return parser.parse_args(argv)


def protocol_params(args) -> dict:
    params = {}
    if args.min_votes is not None:
        params.update(andRule=1, minVotes=args.min_votes)
    if args.network_size is not None:
        params["networkSize"] = args.network_size
    if args.architecture is not None:
        params["architecture"] = ("fast", "paper").index(args.architecture)
    if args.max_epochs is not None:
        params["maxEpochs"] = args.max_epochs
    if args.threshold == "auto":
        params["thresholdMode"] = 1
    elif args.threshold is not None:
        params["threshold"] = float(args.threshold)
    return params


def run_scipion(data, args, out) -> tuple:
    """The project run; returns (deep-consensus protocol, picker import protocols, seconds)."""
    from pwem.protocols import ProtImportMicrographs
    from pyworkflow.object import Pointer
    from pyworkflow.project import Manager

    from deepconsensus_plugin.demo import new_protocol, run_protocol
    from deepconsensus_plugin.protocols import ProtDeepConsensus, ProtImportPickerCoordinates

    name = "EMPIAR10017-" + datetime.now().strftime("%Y%m%d-%H%M%S")
    project = Manager().createProject(name)
    os.chdir(project.path)
    print("Scipion project: %s" % project.path, flush=True)
    start = time.perf_counter()
    mics = run_protocol(project, new_protocol(
        project, ProtImportMicrographs, "EMPIAR-10017",
        filesPath=os.path.dirname(next(iter(data.mrc_paths.values()))), filesPattern="*.mrc",
        samplingRate=SAMPLING_RATE, voltage=300))
    pickers = {}
    for picker in PICKERS:
        prot = new_protocol(project, ProtImportPickerCoordinates, picker,
                            filesPath=os.path.join(args.data, "picks", picker),
                            filesPattern="*.box")
        prot.inputMicrographs.set(mics)
        prot.inputMicrographs.setExtended("outputMicrographs")
        pickers[picker] = run_protocol(project, prot)
    dc = new_protocol(project, ProtDeepConsensus, "deep consensus", **protocol_params(args))
    for prot in pickers.values():
        dc.inputCoordinates.append(Pointer(prot, extended="outputCoordinates"))
    print("Running deep consensus...", flush=True)
    dc = run_protocol(project, dc)
    return dc, pickers, time.perf_counter() - start


def step_timings(prot) -> dict:
    """Seconds per protocol step, from the step records Scipion keeps."""
    timings = {}
    for step in prot.loadSteps():
        begin, end = step.initTime.get(), step.endTime.get()
        if begin and end:
            fmt = "%Y-%m-%d %H:%M:%S.%f"
            timings[step.funcName.get()] = (datetime.strptime(end, fmt)
                                            - datetime.strptime(begin, fmt)).total_seconds()
    return timings


def raw_picker_metrics(data, picker) -> dict:
    """n, precision, recall, F1 of one picker's own coordinates, as its files give them."""
    names = np.concatenate([[n] * len(xy) for n, xy in data.picks[picker].items()])
    xy = np.concatenate(list(data.picks[picker].values()))
    return evaluate_selection(names, xy, np.ones(len(xy), bool), data.truth,
                              or_labels(names, xy, data.truth))


def dc_results(dc, data) -> dict:
    """Consensus table, scores and selections of a finished run, as arrays."""
    from deepconsensus_plugin.core.pipeline import CoordinateTable

    extra = dc._getExtraPath()
    table = CoordinateTable.load(os.path.join(extra, "consensus.npz"))
    scores = np.load(os.path.join(extra, "scores.npy"))
    info = dc._readInfo()
    mics = dc._micrographs()
    names = np.array([mics[int(m)][0] for m in table.mic])
    return {"table": table, "scores": scores, "info": info, "names": names,
            "retained": scores >= info["threshold"]}


def write_scores(path, res) -> None:
    table = res["table"]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["micrograph", "x", "y", "score", "votes", "retained"])
        for name, (x, y), score, votes, kept in zip(res["names"], table.xy, res["scores"],
                                                    table.votes, res["retained"]):
            writer.writerow([name, "%.1f" % x, "%.1f" % y, "%.4f" % score, int(votes),
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
        params = dict(study.DEFAULTS, k=info["minVotes"], size=info["networkSize"],
                      arch=info["architecture"], noise=fraction)
        result = study.run_variant(data, os.path.join(out, "label_noise"), params)
        rows.append({"noise": fraction, "f1": result["dc_0.5"]["f1"],
                     "precision": result["dc_0.5"]["precision"],
                     "recall": result["dc_0.5"]["recall"], "roc_auc": result["roc_auc"]})
        print("label noise %.2f: F1 %.3f ROC-AUC %.3f" % (fraction, rows[-1]["f1"],
                                                          rows[-1]["roc_auc"]), flush=True)
    return rows


def write_report(out, metrics, plots) -> None:
    lines = ["# EMPIAR-10017 benchmark", "",
             "Ground truth: %d micrographs (%s); match radius %.0f px; threshold %.3f (%s)."
             % (len(metrics["ground_truth_micrographs"]),
                ", ".join(metrics["ground_truth_micrographs"]), MATCH_RADIUS,
                metrics["threshold"], metrics["threshold_mode"]), "",
             "| set | n | precision | recall | F1 | MCC |", "| --- | --- | --- | --- | --- | --- |"]
    for name in SETS:
        m = metrics["sets"][name]
        lines.append("| %s | %d | %.3f | %.3f | %.3f | %.3f |"
                     % (name, m["n"], m["precision"], m["recall"], m["f1"], m["mcc"]))
    lines += ["", "DC score over the OR set: ROC-AUC %.3f, PR-AUC %.3f."
              % (metrics["roc_auc"], metrics["pr_auc"]), "",
              "Time: %s; protocol %.0f s; end to end (conversion, imports, run, "
              "evaluation) %.0f s." % (", ".join("%s %.0f s" % kv for kv in
                                                 metrics["timings_s"]["steps"].items()),
                                       metrics["timings_s"]["total"],
                                       metrics["timings_s"]["end_to_end"]), ""]
    if metrics.get("label_noise"):
        lines += ["## Label noise", "", "| swapped | F1 | precision | recall | ROC-AUC |",
                  "| --- | --- | --- | --- | --- |"]
        lines += ["| %.0f%% | %.3f | %.3f | %.3f | %.3f |"
                  % (100 * r["noise"], r["f1"], r["precision"], r["recall"], r["roc_auc"])
                  for r in metrics["label_noise"]]
        lines.append("")
    lines += ["![%s](%s)" % (p, p) for p in plots]
    with open(os.path.join(out, "report.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    args.data, out = os.path.abspath(args.data), os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    headless.configure(os.path.join(out, "scipion"))
    data = load_dataset(args.data, out)
    dc, pickers, total = run_scipion(data, args, out)

    res = dc_results(dc, data)
    table, names = res["table"], res["names"]
    labels = or_labels(names, table.xy, data.truth)
    keep = {"OR": np.ones(len(table), bool), "AND": table.votes >= res["info"]["minVotes"],
            "dc_retained": res["retained"]}
    for p, picker in enumerate(PICKERS):
        keep[picker] = table.voters[:, p]
    metrics = {"sets": {}, "threshold": res["info"]["threshold"],
               "threshold_mode": res["info"].get("thresholdMode", "fixed"),
               "ground_truth_micrographs": sorted(data.truth)}
    for name in SETS:
        metrics["sets"][name] = evaluate_selection(names, table.xy, keep[name], data.truth,
                                                   labels)
    for picker in PICKERS:  # a picker's own picks, before consensus merged duplicates
        raw = raw_picker_metrics(data, picker)
        metrics["sets"][picker].update({k: raw[k] for k in ("n", "precision", "recall", "f1")})
    metrics.update(score_quality(names, res["scores"], data.truth, labels))
    metrics["auto_threshold"] = res["info"].get("autoThreshold")
    metrics["parameters"] = {k: v.get() for k, v in dc.iterDefinitionAttributes()
                             if hasattr(v, "get") and not k.startswith("input")}
    metrics["run_info"] = res["info"]
    write_scores(os.path.join(out, "scores.csv"), res)
    # End to end: micrograph conversion, Scipion imports, the run and its evaluation;
    # the optional label-noise runs are timed apart.
    metrics["timings_s"] = {"steps": step_timings(dc), "total": total,
                            "end_to_end": time.perf_counter() - start}
    fractions = [float(f) for f in args.label_noise.split(",") if f != ""]
    noise_start = time.perf_counter()
    metrics["label_noise"] = label_noise_curve(data, out, fractions, res["info"])
    metrics["timings_s"]["label_noise"] = time.perf_counter() - noise_start
    on_truth = np.isin(names, list(data.truth)) & np.isfinite(res["scores"])
    plots = write_plots(out, labels, res["scores"], res["info"]["threshold"], on_truth,
                        metrics["label_noise"])
    with open(os.path.join(out, "metrics.json"), "w") as handle:
        json.dump(metrics, handle, indent=1, default=float)
    write_report(out, metrics, plots)
    print(open(os.path.join(out, "report.md")).read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
