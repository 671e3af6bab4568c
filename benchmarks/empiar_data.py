"""The EMPIAR-10017 benchmark data: conversion to the picker frame and evaluation.

Shared by ``empiar10017.py`` (the benchmark through Scipion) and
``study.py`` (parameter studies on the core).  The data folder's README gives
the frames: the JPG rows run opposite to the MRC rows the pickers saw, so
micrographs are flipped vertically and written as MRC; box files give lower-
left corners; ground-truth rows are in the JPG frame.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import mrcfile
import numpy as np
from PIL import Image

from deepconsensus_plugin.core.coordinate_files import read_box
from deepconsensus_plugin.core.metrics import (f1_score, match_to_truth, mcc, pr_auc,
                                               roc_auc)

PICKERS = ("crYOLO", "topaz", "deepPicker")
SAMPLING_RATE = 1.77
BOX = 180
MATCH_RADIUS = 27.0
"""A quarter of the ~108 px particle diameter, as in the data README."""


@dataclass
class Dataset:
    names: list[str]                       # micrograph names, sorted
    mrc_paths: dict[str, str]              # name -> MRC file in the picker frame
    picks: dict[str, dict[str, np.ndarray]]  # picker -> name -> (n, 2) centres
    truth: dict[str, np.ndarray]           # name -> (m, 2) centres, MRC frame


def convert_micrographs(data_dir: str, out_dir: str) -> dict[str, str]:
    """Write each JPG micrograph, flipped to the picker frame, as MRC (once; reused after)."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for jpg in sorted(glob.glob(os.path.join(data_dir, "micrographs", "*.jpg"))):
        name = os.path.splitext(os.path.basename(jpg))[0]
        path = os.path.join(out_dir, name + ".mrc")
        if not os.path.exists(path):
            image = np.asarray(Image.open(jpg).convert("L"), dtype=np.float32)[::-1]
            tmp = path + ".tmp"
            with mrcfile.new(tmp, overwrite=True) as mrc:
                mrc.set_data(np.ascontiguousarray(image))
                mrc.voxel_size = SAMPLING_RATE
            os.replace(tmp, path)
        paths[name] = path
    return paths


def load_dataset(data_dir: str, out_dir: str) -> Dataset:
    paths = convert_micrographs(data_dir, os.path.join(out_dir, "micrographs"))
    names = sorted(paths)
    picks = {p: {n: read_box(os.path.join(data_dir, "picks", p, n + ".box")).xy
                 for n in names
                 if os.path.exists(os.path.join(data_dir, "picks", p, n + ".box"))}
             for p in PICKERS}
    truth = {}
    for csv in sorted(glob.glob(os.path.join(data_dir, "gt", "*.csv"))):
        name = os.path.splitext(os.path.basename(csv))[0]
        xy = np.loadtxt(csv, delimiter=",", comments="#", ndmin=2)[:, :2]
        height = mrcfile.open(paths[name], header_only=True).header.ny
        truth[name] = np.column_stack([xy[:, 0], int(height) - xy[:, 1]])
    return Dataset(names, paths, picks, truth)


def or_labels(names: np.ndarray, xy: np.ndarray, truth: dict[str, np.ndarray]) -> np.ndarray:
    """True-positive flags of candidate coordinates on the ground-truth micrographs."""
    labels = np.zeros(len(xy), dtype=bool)
    for name, centres in truth.items():
        rows = np.flatnonzero(names == name)
        labels[rows] = match_to_truth(xy[rows], centres, MATCH_RADIUS)[0]
    return labels


def evaluate_selection(names: np.ndarray, xy: np.ndarray, keep: np.ndarray,
                       truth: dict[str, np.ndarray], labels: np.ndarray) -> dict:
    """n, precision, recall, F1 of the kept candidates, and MCC of keeping within the candidates.

    Only candidates on ground-truth micrographs count; ``labels`` are their
    true-positive flags (:func:`or_labels`).
    """
    on_truth = np.isin(names, list(truth))
    kept = keep & on_truth
    found = [match_to_truth(xy[kept & (names == n)], c, MATCH_RADIUS)[1]
             for n, c in truth.items()]
    n = int(kept.sum())
    precision = float(labels[kept].mean()) if n else 0.0
    recall = float(np.concatenate(found).mean())
    return {"n": n, "precision": precision, "recall": recall,
            "f1": f1_score(precision, recall),
            "mcc": mcc(labels[on_truth], keep[on_truth])}


def score_quality(names: np.ndarray, scores: np.ndarray, truth: dict[str, np.ndarray],
                  labels: np.ndarray) -> dict:
    on_truth = np.isin(names, list(truth)) & np.isfinite(scores)
    return {"roc_auc": roc_auc(labels[on_truth], scores[on_truth]),
            "pr_auc": pr_auc(labels[on_truth], scores[on_truth])}
