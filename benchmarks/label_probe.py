"""What a network trained on the labels would give the run: a diagnostic that uses the labels.

Where the run's image score ranks the picks of one vote pattern poorly (EMPIAR-10017's
crYOLO-only picks), is the information in the boxes at all, or would a better network
change the retained set?  Each labelled micrograph's OR boxes are scored by a network of
the run's architecture and input size trained on the other labelled micrographs' OR boxes,
labelled particle or not (leave one micrograph out, so that no box is scored by a network
that saw it), and that score takes the network's place in the run's recipe: the
agreement of the votes and the image evidence (the rotational averages' log-odds added
where the run has them), fitted over the labelled micrographs, split with the run's
threshold, minimum distance and edge margin.  The same agreement with the run's own
network score over the same micrographs is the row to compare with (the agreement
whatever the run's method, so that both rows are decided alike).  No run can do this (it
has no labels): the figures bound what a better image score could give at this sampling.
"""
from __future__ import annotations

import os
import tempfile
from typing import Optional

import numpy as np

from deepconsensus_plugin.core import stages
from deepconsensus_plugin.core.metrics import roc_auc
from deepconsensus_plugin.core.run_folder import RunFolder
from deepconsensus_plugin.core.selection import split_scores
from deepconsensus_plugin.core.stack import open_stack
from deepconsensus_plugin.core.training import TrainingConfig, train_classifier
from empiar_data import Dataset, evaluate_selection, vote_patterns, pattern_name

PROBE_TRAINING = dict(max_epochs=40, patience=6, learning_rate=1e-3)
"""A few thousand boxes of three or four micrographs, against the run's tens of thousands:
a tenfold learning rate and more patience let the small training converge."""


def leave_one_micrograph_out(run: RunFolder, stack, names: np.ndarray, rows: np.ndarray,
                             labels: np.ndarray, seed: int, work_dir: str) -> np.ndarray:
    """Scores of the OR boxes ``rows`` (NaN elsewhere), each micrograph's by a network
    trained on the other micrographs' boxes among ``rows``, ``labels`` their classes, and
    scored as the run's last round scored (best-centred where it searched)."""
    scores = np.full(len(names), np.nan)
    last = run.info().training
    config = TrainingConfig(architecture=last.architecture, seed=seed, **PROBE_TRAINING)
    model, history = os.path.join(work_dir, "probe.keras"), os.path.join(work_dir, "probe.csv")
    for name in sorted(set(names[rows])):
        held_out = rows[names[rows] == name]
        train = rows[names[rows] != name]
        train_classifier([(stack, train[labels[train]])], [(stack, train[~labels[train]])],
                         config, model, history)
        scores[held_out] = stages.score_boxes(run, model, stack[held_out], held_out,
                                              last.rounds[-1].centring_search, seed=seed)
    return scores


def _agreement(voters: np.ndarray, network: np.ndarray, rotational: Optional[np.ndarray],
               rows: np.ndarray) -> np.ndarray:
    """The run's agreement (:func:`.stages.agreement_posterior`) fitted over ``rows`` only
    (NaN elsewhere)."""
    posterior = np.full(len(voters), np.nan)
    posterior[rows] = stages.agreement_posterior(
        voters[rows], network[rows], None if rotational is None else rotational[rows])[0]
    return posterior


def label_probe(results, names: np.ndarray, data: Dataset, labels: np.ndarray,
                anchors: dict[str, np.ndarray], split_rules: tuple, seed: int = 0) -> dict:
    """The leave-one-micrograph-out network's ranking within each vote pattern and the run's
    retained set with it, beside the run's own network on the same micrographs.  Called
    from the project folder, as ``dataset.py`` runs: the run folder names its micrographs
    relative to it, as the protocol's steps see them (the best-centred search reads them)."""
    run, table = results.run, results.table
    rows = np.flatnonzero(np.isin(names, list(data.truth)) & np.isfinite(results.scores))
    if len(set(names[rows])) < 2:
        raise ValueError("the label probe needs at least two labelled micrographs with "
                         "scored picks; this run has %d" % len(set(names[rows])))
    network = run.array(RunFolder.CNN_SCORES)
    with open_stack(run.file(RunFolder.OR_PARTICLES)) as stack, \
            tempfile.TemporaryDirectory() as work_dir:
        learned = leave_one_micrograph_out(run, stack, names, rows, labels, seed, work_dir)
    rotational = run.rotational_evidence()
    threshold, (min_distance, edges, margin) = results.threshold, split_rules

    def decided(score: np.ndarray) -> dict:
        posterior = _agreement(table.voters, score, rotational, rows)
        keep = split_scores(np.where(np.isfinite(posterior), posterior, -1.0), threshold,
                            table.mic, table.xy, min_distance, edges, margin).retained_mask()
        figures = evaluate_selection(names, table.xy, keep, data, labels, anchors)
        return {"n": figures["n"], "precision": figures["precision"],
                "recall": figures["recall"], "f1": figures["f1"],
                "roc_auc": roc_auc(labels[rows], posterior[rows])}

    pattern = vote_patterns(table.voters)
    within = {}
    for p in np.unique(pattern[rows]):
        mine = rows[pattern[rows] == p]
        if 0 < labels[mine].sum() < len(mine):
            within[pattern_name(p, data.pickers)] = {
                "n": int(len(mine)), "label_trained": roc_auc(labels[mine], learned[mine]),
                "run": roc_auc(labels[mine], network[mine])}
    return {"micrographs": int(len(set(names[rows]))), "boxes": int(len(rows)),
            "roc_auc_network": {"label_trained": roc_auc(labels[rows], learned[rows]),
                                "run": roc_auc(labels[rows], network[rows])},
            "roc_auc_within": within,
            "agreement": {"label_trained": decided(learned), "run": decided(network)}}


def label_probe_text(probe: dict) -> list[str]:
    """The report's section on the probe."""
    lines = ["## With a network trained on the labels (`--label-probe`)", "",
             "Each of the %d labelled micrographs' %d OR boxes scored by a network of the run's "
             "kind trained on the other labelled micrographs' boxes, labelled or not; that "
             "score in the network's place in the agreement over the labelled micrographs. "
             "No run has labels: this bounds what a better image score could give."
             % (probe["micrographs"], probe["boxes"]), "",
             "| image score | network ROC-AUC | retained n | P | R | F1 | ROC-AUC |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for key, name in (("run", "the run's network"), ("label_trained", "trained on the labels")):
        figures = probe["agreement"][key]
        lines.append("| %s | %.3f | %d | %.3f | %.3f | %.4f | %.4f |" % (
            name, probe["roc_auc_network"][key], figures["n"], figures["precision"],
            figures["recall"], figures["f1"], figures["roc_auc"]))
    lines += ["",
              "| vote pattern | n | ROC-AUC within, the run's network | trained on the labels |",
              "| --- | --- | --- | --- |"]
    for name, figures in sorted(probe["roc_auc_within"].items(), key=lambda kv: -kv[1]["n"]):
        lines.append("| %s | %d | %.3f | %.3f |" % (name, figures["n"], figures["run"],
                                                    figures["label_trained"]))
    return lines + [""]
