"""Parameter study on EMPIAR-10017 through the core (no Scipion), one variant per run.

    python benchmarks/study.py --data ../shared/data/empiar10017 --out OUT \
        --variant k=2 --variant k=3 --variant k=2,size=32 ...

Each variant is a comma-separated list of overrides of the defaults below; the
script runs the whole pipeline (consensus on all micrographs, negatives,
extraction through the core's stage functions; training, scoring) for it and
appends one JSON line to
``OUT/study.jsonl`` with the parameters, the metrics on the ground-truth
micrographs and the time taken.  Extraction stacks are cached per setting.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from empiar_data import (Dataset, audit_anchors, evaluate_selection,  # noqa: E402
                         load_dataset, or_labels, score_quality)

from deepconsensus_plugin.core import stages  # noqa: E402
from deepconsensus_plugin.core.model import DEFAULT_SIZE  # noqa: E402
from deepconsensus_plugin.core.run_folder import Micrograph, RunFolder  # noqa: E402
from deepconsensus_plugin.core.stack import open_stack  # noqa: E402
from deepconsensus_plugin.core.thresholds import automatic_threshold  # noqa: E402

DEFAULTS = {"k": 2, "radius": 0.1, "neg_ratio": 1.0, "neg_dist": 0.5, "size": DEFAULT_SIZE,
            "arch": "fast", "epochs": 30, "patience": 4, "lr": 1e-4, "batch": 64,
            "models": 1, "noise": 0.0, "seed": 0}


def parse_variant(text: str) -> dict:
    params = dict(DEFAULTS)
    for item in filter(None, text.split(",")):
        key, value = item.split("=")
        if key not in DEFAULTS:
            raise SystemExit(f"unknown parameter {key!r}; known: {', '.join(DEFAULTS)}")
        params[key] = type(DEFAULTS[key])(value)
    return params


def prepare(data: Dataset, out: str, p: dict) -> dict:
    """Consensus, negatives and particle stacks for one setting, by the pipeline's own stages
    (:mod:`deepconsensus_plugin.core.stages`, the published method's random negatives), in a
    run folder cached on disk."""
    key = "k{k}_r{radius}_n{neg_ratio}_d{neg_dist}_s{size}_seed{seed}".format(**p)
    run = RunFolder(os.path.join(out, "cache", key))
    if run.info().extraction is None:
        micrographs = [Micrograph(mic_id=i, name=n, path=data.mrc_paths[n], label=n)
                       for i, n in enumerate(data.names)]
        index = {n: i for i, n in enumerate(data.names)}
        pickers = [stages.PickerInput(name, {index[n]: xy for n, xy in picks.items()})
                   for name, picks in data.picks.items()]
        stages.consensus_stage(run, stages.ConsensusInput(micrographs, pickers, data.box, None),
                               stages.ConsensusParams(radius=p["radius"],
                                                      and_rule=stages.AND_AT_LEAST, k=p["k"]))
        stages.negatives_stage(run, stages.NegativeParams(
            ratio=p["neg_ratio"], distance=p["neg_dist"], offcentre=False, seed=p["seed"]))
        stages.extraction_stage(run, stages.ExtractionParams(network_size=p["size"]))
    table = run.consensus()
    names = np.array(data.names)[table.mic]
    positives = np.flatnonzero(table.votes >= p["k"])
    stacks = {"or": open_stack(run.file(run.OR_PARTICLES)),
              "neg": open_stack(run.file(run.NEG_PARTICLES))}
    return {"table": table, "names": names, "positives": positives, "stacks": stacks,
            "folder": run.path}


def corrupt(positives: np.ndarray, negatives: np.ndarray, fraction: float,
            rng: np.random.Generator) -> tuple[list, list]:
    """Swap ``fraction`` of each class's training labels (the paper's Appendix C)."""
    pos_flip = rng.random(len(positives)) < fraction
    neg_flip = rng.random(len(negatives)) < fraction
    return ([("or", positives[~pos_flip]), ("neg", negatives[neg_flip])],
            [("or", positives[pos_flip]), ("neg", negatives[~neg_flip])])


def train_and_score(prep: dict, p: dict) -> tuple[np.ndarray, dict]:
    from deepconsensus_plugin.core.scoring import score_stack
    from deepconsensus_plugin.core.training import TrainingConfig, train_classifier

    stacks = prep["stacks"]
    rng = np.random.default_rng(p["seed"] + 1000)
    pos_sources, neg_sources = corrupt(prep["positives"], np.arange(len(stacks["neg"])),
                                       p["noise"], rng)
    scores, info = [], {}
    for m in range(p["models"]):
        config = TrainingConfig(architecture=p["arch"], max_epochs=p["epochs"],
                                patience=p["patience"], learning_rate=p["lr"],
                                batch_size=p["batch"], seed=p["seed"] + m)
        model = os.path.join(prep["folder"], "model.keras")
        result = train_classifier([(stacks[s], rows) for s, rows in pos_sources],
                                  [(stacks[s], rows) for s, rows in neg_sources],
                                  config, model, os.path.join(prep["folder"], "history.csv"))
        scores.append(score_stack(model, stacks["or"], seed=p["seed"] + m))
        info = {"epochs": result.epochs, "val_accuracy": result.val_accuracy,
                "train_seconds": result.seconds}
    return np.mean(scores, axis=0), info


def run_variant(data: Dataset, out: str, p: dict) -> dict:
    start = time.perf_counter()
    prep = prepare(data, out, p)
    scores, info = train_and_score(prep, p)
    table, names = prep["table"], prep["names"]
    labels = or_labels(names, table.xy, data)
    anchors = audit_anchors(names, table.xy, table.votes, data)
    result = {"params": p, **info, "seconds": time.perf_counter() - start}
    result["OR"] = evaluate_selection(names, table.xy, np.ones(len(table), bool), data,
                                      labels, anchors)
    result["AND"] = evaluate_selection(names, table.xy, table.votes >= p["k"], data,
                                       labels, anchors)
    result.update(score_quality(names, table.xy, scores, data, labels, anchors))
    auto = automatic_threshold(scores)
    result["auto_threshold"] = auto
    for name, threshold in (("dc_0.5", 0.5), ("dc_auto", auto)):
        result[name] = evaluate_selection(names, table.xy, scores >= threshold, data,
                                          labels, anchors)
    np.save(os.path.join(prep["folder"], "scores.npy"), scores)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--variant", action="append", default=[""],
                        help="comma-separated overrides, e.g. k=3,size=32 (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    os.makedirs(args.out, exist_ok=True)
    data = load_dataset(args.data, args.out)
    variants = args.variant[1:] or [""]
    for text in variants:
        result = run_variant(data, args.out, parse_variant(text))
        with open(os.path.join(args.out, "study.jsonl"), "a") as handle:
            handle.write(json.dumps(result) + "\n")
        dc = result["dc_0.5"]
        print("%-30s F1 %.3f (P %.3f R %.3f) auto %.2f F1 %.3f | AUC %.3f | %.0f s"
              % (text or "defaults", dc["f1"], dc["precision"], dc["recall"],
                 result["auto_threshold"], result["dc_auto"]["f1"], result["roc_auc"],
                 result["seconds"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
