"""Benchmark datasets of the shared layout: conversion to the picker frame and evaluation.

Shared by ``dataset.py`` (the benchmark through Scipion), ``study.py``
(parameter studies on the core) and ``gt_audit.py``.  A dataset folder holds

* ``micrographs/*.{jpg,png,tif,mrc}`` (one format per folder),
* ``picks/<picker>/<micrograph>.box``: EMAN boxes (lower-left corner, width,
  height) in the frame of the MRC files the pickers saw (the run works in the
  first picker's box), or any other format the import protocol reads (RELION
  STAR, CSV, POS: centres, no box),
* ``gt/<micrograph>.csv``: labelled particle centres ``x,y`` for some of the
  micrographs (``#`` comment lines allowed),

and a README giving the facts that the files do not: the pixel size, the
particle diameter and whether the image rows run opposite to the pickers'
frame (then the micrographs are flipped vertically when written as MRC, and
the labels, given in the image's frame, are flipped too).  Those facts live
in :data:`KNOWN_DATASETS`, keyed by folder name; a new dataset of the same
layout gives them on the command line.
"""
from __future__ import annotations

import argparse
import glob
import os
from dataclasses import dataclass, field, replace
from typing import Optional

import mrcfile
import numpy as np
from PIL import Image
from scipy.spatial import cKDTree

from deepconsensus_plugin.core.atomic import atomic_path
from deepconsensus_plugin.core.coordinate_files import CoordinateFileError
from deepconsensus_plugin.core.extraction import MicrographError, is_tiff, read_micrograph
from deepconsensus_plugin.core.pick_inputs import (PickSet, match_micrographs,
                                                   read_coordinate_folder)
from deepconsensus_plugin.core.metrics import (COUNTINGS, agreed_unlabelled, audited_exclusion,
                                               count_picks, match_one_to_one, match_to_truth,
                                               mcc, pr_auc,
                                               roc_auc)
from deepconsensus_plugin.core.selection import split_scores

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".mrc")


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset folder's README says and its files do not."""

    pixel_size: float          # A/px of the micrographs as stored
    diameter: float            # particle diameter in px
    flip_y: bool               # image rows run opposite to the pickers' (MRC) rows
    pickers: tuple[str, ...] = ()  # input order; empty: the picks/ folders, sorted


KNOWN_DATASETS = {
    # beta-galactosidase, 4096 px JPG (CryoPPP), rows flipped against the MRC frame
    "empiar10017": DatasetSpec(pixel_size=1.77, diameter=108.0, flip_y=True,
                               pickers=("crYOLO", "topaz", "deepPicker")),
    # 80S ribosome, 1024 px PNG (CryoPPP, 4x binned), one frame everywhere
    "empiar10028": DatasetSpec(pixel_size=5.36, diameter=56.0, flip_y=False,
                               pickers=("topaz", "relion_log", "apple")),
}


def dataset_spec(data_dir: str, pixel_size: Optional[float] = None,
                 diameter: Optional[float] = None, flip_y: Optional[bool] = None) -> DatasetSpec:
    """The facts of ``data_dir``: the known dataset of that folder name, then the overrides.

    A folder not in :data:`KNOWN_DATASETS` needs the pixel size and the
    diameter; its rows are taken as unflipped unless ``flip_y`` says so.
    """
    name = os.path.basename(os.path.normpath(data_dir))
    spec = KNOWN_DATASETS.get(name)
    if spec is None:
        if pixel_size is None or diameter is None:
            raise SystemExit("%s is not a known dataset (%s): give --pixel-size and --diameter "
                             "(and --flip-y if its image rows run opposite to the picks)"
                             % (data_dir, ", ".join(KNOWN_DATASETS)))
        spec = DatasetSpec(pixel_size=pixel_size, diameter=diameter, flip_y=bool(flip_y))
    overrides = {key: value for key, value in (("pixel_size", pixel_size),
                                               ("diameter", diameter), ("flip_y", flip_y))
                 if value is not None}
    return replace(spec, **overrides)


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data`` and the facts its files do not give (``--pixel-size``, ``--diameter``,
    ``--flip-y``), as every script over a dataset folder takes them; read them back with
    :func:`spec_from_arguments`."""
    parser.add_argument("--data", required=True,
                        help="a dataset folder (micrographs/, picks/<picker>/*.box, gt/*.csv)")
    parser.add_argument("--pixel-size", type=float, default=None,
                        help="A/px of the micrographs (default: the known dataset's)")
    parser.add_argument("--diameter", type=float, default=None,
                        help="particle diameter in px (default: the known dataset's); the "
                             "match radius is a quarter of it")
    parser.add_argument("--flip-y", action=argparse.BooleanOptionalAction, default=None,
                        help="the image rows run opposite to the picks' frame (default: the "
                             "known dataset's; no for a new one)")


def spec_from_arguments(args: argparse.Namespace) -> DatasetSpec:
    """The dataset facts of arguments that :func:`add_dataset_arguments` defined."""
    return dataset_spec(args.data, args.pixel_size, args.diameter, args.flip_y)


@dataclass
class Dataset:
    name: str                              # the folder's name
    spec: DatasetSpec
    box: int                               # the run's box, px (the first picker's)
    pickers: tuple[str, ...]               # picker folders in input order
    names: list[str]                       # micrograph names, sorted
    mrc_paths: dict[str, str]              # name -> MRC file in the picker frame
    picks: dict[str, dict[str, np.ndarray]]  # picker -> name -> (n, 2) centres
    truth: dict[str, np.ndarray]           # name -> (m, 2) centres, MRC frame
    pick_scores: dict[str, dict[str, Optional[np.ndarray]]] = field(default_factory=dict)
    # picker -> name -> (n,) the picker's own score of each pick, None where its file has none
    picker_boxes: dict[str, Optional[int]] = field(default_factory=dict)
    # picker -> the box width its files give (.box), None where they give none

    @property
    def match_radius(self) -> float:
        """A quarter of the particle diameter: a coordinate this close to a label is on it."""
        return self.spec.diameter / 4


def _image_files(data_dir: str) -> list[str]:
    folder = os.path.join(data_dir, "micrographs")
    files = sorted(f for f in glob.glob(os.path.join(folder, "*"))
                   if f.lower().endswith(IMAGE_EXTENSIONS))
    extensions = {os.path.splitext(f)[1].lower() for f in files}
    if not files:
        raise SystemExit("%s holds no micrographs (%s)" % (folder, ", ".join(IMAGE_EXTENSIONS)))
    if len(extensions) > 1:
        raise SystemExit("%s mixes image formats (%s): keep one" % (folder,
                                                                    ", ".join(sorted(extensions))))
    return files


GREY_MODES = ("L", "I;16", "I;16B", "I;16L", "I", "F")
"""PIL's one-channel modes, read as they are: converting a 16-bit image to 8-bit ``L``
would clip it to 0-255."""


def _read_image(path: str) -> np.ndarray:
    """One micrograph as float32: MRC and TIFF through the run's own reader (``mrcfile``,
    ``tifffile``; a movie or a damaged file is refused, named); JPG and PNG in their own
    grey values (8 or 16 bit), colour images as their luminance."""
    if path.lower().endswith(".mrc") or is_tiff(path):
        try:
            return read_micrograph(path)
        except MicrographError as error:
            raise SystemExit(str(error)) from error
    with Image.open(path) as image:
        if image.mode not in GREY_MODES:
            image = image.convert("L")
        return np.asarray(image, dtype=np.float32)


def convert_micrographs(data_dir: str, out_dir: str, spec: DatasetSpec,
                        only: Optional[set[str]] = None) -> dict[str, str]:
    """Write each micrograph (or those named in ``only``) as MRC in the pickers' frame;
    written anew at every call, so that a rerun into the same folder with the rows'
    order corrected does not reuse the mirrored files."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for source in _image_files(data_dir):
        name = os.path.splitext(os.path.basename(source))[0]
        if only is not None and name not in only:
            continue
        path = os.path.join(out_dir, name + ".mrc")
        image = _read_image(source)
        if spec.flip_y:
            image = image[::-1]
        with atomic_path(path, ".mrc") as temporary, \
                mrcfile.new(temporary, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(image))
            mrc.voxel_size = spec.pixel_size
        paths[name] = path
    return paths


def _pickers(data_dir: str, spec: DatasetSpec,
             chosen: Optional[tuple[str, ...]] = None) -> tuple[str, ...]:
    """The pickers to run, in input order: ``chosen`` (a subset of the picker folders, in
    the order given), else every folder, the known dataset's order first."""
    folder = os.path.join(data_dir, "picks")
    found = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    if chosen:
        missing = [p for p in chosen if p not in found]
        if missing:
            raise SystemExit("%s has no picker folder %s (it has %s)"
                             % (folder, ", ".join(missing), ", ".join(found)))
        pickers = tuple(dict.fromkeys(chosen))
    else:
        pickers = tuple(p for p in spec.pickers if p in found) + tuple(
            p for p in found if p not in spec.pickers)
    if len(pickers) < 2:
        raise SystemExit("%s: %d picker(s) chosen (%s): Deep Consensus needs at least two"
                         % (folder, len(pickers), ", ".join(pickers) or "none"))
    return pickers


PICK_FILES = "*"
"""Every file of a picker folder in a format the import protocol reads."""


def _picker_files(picks_dir: str, pickers: tuple[str, ...],
                  names: list[str]) -> dict[str, PickSet]:
    """Each picker's coordinate files (.box, .star, .csv, .pos), read and matched to the
    micrograph ``names`` as the import protocol reads and matches them (RELION's
    ``<micrograph>_<suffix>`` names included), so that each picker is evaluated on the
    picks the run imports."""
    files = {}
    for picker in pickers:
        try:
            found = read_coordinate_folder(os.path.join(picks_dir, picker), PICK_FILES)
            files[picker] = match_micrographs(found, names, file_suffixes=True).picks
        except CoordinateFileError as error:
            raise SystemExit("Picker %s: %s" % (picker, error)) from error
    return files


def _picker_boxes(files: dict[str, PickSet]) -> dict[str, Optional[int]]:
    """Each picker's box width (the median over its .box files, as the import protocol
    takes it); None where its files give none (STAR, CSV, POS)."""
    return {p: int(round(f.box_size)) if f.box_size else None for p, f in files.items()}


def _box_size(widths: dict[str, Optional[int]], pickers: tuple[str, ...]) -> int:
    """The box the run works in: the first picker's (the protocol works in its first input
    set's box and notes the others); where its files give none, the first that another
    picker's give (the box-less sets are imported with it).  Pickers that boxed in another
    width are named."""
    given = [(p, widths[p]) for p in pickers if widths[p]]
    if not given:
        raise SystemExit("No picker's files give a box width (.box files do; STAR, CSV and "
                         "POS files do not): give --box")
    source, box = given[0]
    others = ["%s %d px" % (p, w) for p, w in given if w != box]
    if source != pickers[0] or others:
        print("The run works in %s's box of %d px%s." % (
            source, box, "" if not others else
            "; other pickers' boxes: %s" % ", ".join(others)), flush=True)
    return box


def read_label_csv(path: str) -> np.ndarray:
    """Labelled centres ``x,y`` of one micrograph (commas or blanks between the columns,
    further columns ignored); ``#`` comments and a header row allowed; a file that is no
    such table is refused, named."""
    with open(path) as handle:
        rows = [line.replace(",", " ") for line in handle
                if line.strip() and not line.lstrip().startswith("#")]
    if rows:
        try:
            float(rows[0].split()[0])
        except ValueError:
            rows = rows[1:]  # a header such as "x,y"
    if not rows:
        return np.zeros((0, 2))
    try:
        table = np.loadtxt(rows, ndmin=2)
    except ValueError as error:
        raise SystemExit("%s: not a table of labelled centres x,y (%s)" % (path, error)) \
            from error
    if table.shape[1] < 2:
        raise SystemExit("%s: one column; labelled centres need x and y" % path)
    return table[:, :2]


def load_dataset(data_dir: str, out_dir: str, spec: Optional[DatasetSpec] = None,
                 pickers: Optional[tuple[str, ...]] = None,
                 labelled_only: bool = False, box: Optional[int] = None) -> Dataset:
    """Read a dataset folder, writing its micrographs as MRC under ``out_dir/micrographs``;
    ``pickers`` chooses some of its picker folders (default: all); ``labelled_only`` keeps
    the micrographs with ground truth only (a smaller dataset: less to train on); ``box``
    (px) replaces the box the pickers' files give."""
    spec = spec or dataset_spec(data_dir)
    pickers = _pickers(data_dir, spec, pickers)
    labels = sorted(glob.glob(os.path.join(data_dir, "gt", "*.csv")))
    only = {os.path.splitext(os.path.basename(c))[0] for c in labels} if labelled_only else None
    paths = convert_micrographs(data_dir, os.path.join(out_dir, "micrographs"), spec, only)
    names = sorted(paths)
    picks_dir = os.path.join(data_dir, "picks")
    files = _picker_files(picks_dir, pickers, names)
    boxes = _picker_boxes(files)
    picks = {p: {n: m.xy for n, m in f.micrographs.items()} for p, f in files.items()}
    pick_scores = {p: {n: m.scores for n, m in f.micrographs.items()} for p, f in files.items()}
    truth, heights = {}, {}
    for csv in labels:
        name = os.path.splitext(os.path.basename(csv))[0]
        if name not in paths:
            raise SystemExit("%s labels a micrograph that %s lacks" % (csv, data_dir))
        with mrcfile.open(paths[name], header_only=True) as mrc:
            heights[name] = int(mrc.header.ny)
        xy = read_label_csv(csv)
        truth[name] = _flip_rows(xy, heights[name]) if spec.flip_y else xy
    if not truth:
        raise SystemExit("%s has no ground truth (gt/*.csv)" % data_dir)
    data = Dataset(os.path.basename(os.path.normpath(data_dir)), spec,
                   box or _box_size(boxes, pickers), pickers, names, paths, picks, truth,
                   pick_scores, boxes)
    _check_label_frame(data, heights)
    return data


def _flip_rows(xy: np.ndarray, height: int) -> np.ndarray:
    return np.column_stack([xy[:, 0], height - xy[:, 1]])


FRAME_MATCH_RATIO = 2.0
"""The labels are taken to lie in the other row order when, flipped, this many times as
many of them have a pick within the match radius as unflipped ..."""
FRAME_MATCH_SHARE = 0.2
"""... and at least this share of them: a few labels near picks by chance decide nothing
(in the wrong order 10% and 17% of the development datasets' labels have a pick that close,
in the right one all but a few)."""


def _check_label_frame(data: Dataset, heights: dict[str, int]) -> None:
    """Refuse labels whose rows run opposite to the picks' (``--flip-y`` wrong or missing):
    every figure would then count labels against picks on the mirrored micrograph, and the
    run's boxes would be cut from mirrored images.  The pickers agree with the labels in
    one row order and hardly in the other."""
    counts = np.zeros(2)
    for name, centres in data.truth.items():
        found = [data.picks[p][name] for p in data.pickers if name in data.picks[p]]
        if not found or not len(centres):
            continue
        tree = cKDTree(np.concatenate(found))
        for i, xy in enumerate((centres, _flip_rows(centres, heights[name]))):
            counts[i] += np.sum(tree.query(xy, distance_upper_bound=data.match_radius)[0]
                                <= data.match_radius)
    as_given, flipped = counts
    total = sum(len(c) for c in data.truth.values())
    if flipped > FRAME_MATCH_RATIO * as_given and flipped >= FRAME_MATCH_SHARE * total:
        raise SystemExit(
            "The labels of %s lie in the other row order than the picks: %d of their %d "
            "centres have a pick within %.0f px with the rows flipped, %d as read.  %s"
            % (data.name, flipped, total, data.match_radius, as_given,
               "Give --no-flip-y: the rows were flipped." if data.spec.flip_y else
               "Give --flip-y if the image rows run opposite to the picks' frame."))


def or_labels(names: np.ndarray, xy: np.ndarray, data: Dataset) -> np.ndarray:
    """Whether each candidate box lies on a labelled particle (lenient: duplicates too).

    These per-box labels rank the scores (ROC-AUC, PR-AUC) and judge each
    keep/prune decision (MCC): the network scores a box, and a second box on
    the same particle looks as much like a particle as the first.  Only
    micrographs with ground truth have true labels.
    """
    labels = np.zeros(len(xy), dtype=bool)
    for name, centres in data.truth.items():
        rows = np.flatnonzero(names == name)
        labels[rows] = match_to_truth(xy[rows], centres, data.match_radius)[0]
    return labels


def audit_anchors(names: np.ndarray, xy: np.ndarray, votes: np.ndarray,
                  data: Dataset) -> dict[str, np.ndarray]:
    """Per labelled micrograph, the OR coordinates two or more pickers agree on, unlabelled.

    Unlabelled means more than half a diameter from every label; the
    "labels audited" count leaves unmatched coordinates within a quarter
    diameter of them out of precision (see ``core.metrics``).
    """
    anchors = {}
    for name, centres in data.truth.items():
        rows = np.flatnonzero(names == name)
        agreed = agreed_unlabelled(xy[rows], votes[rows], centres, data.spec.diameter / 2)
        anchors[name] = xy[rows][agreed]
    return anchors


def evaluate_picks(picks: dict[str, np.ndarray], data: Dataset,
                   anchors: dict[str, np.ndarray]) -> dict:
    """n, precision, recall, F1 one-to-one at the top level, and as ``lenient`` and ``audited``."""
    counts = count_picks(picks, data.truth, data.match_radius, anchors)
    figures = {counting: {key: getattr(counts[counting], key)
                          for key in ("n", "precision", "recall", "f1")}
               for counting in COUNTINGS}
    return {**figures["one_to_one"], "lenient": figures["lenient"],
            "audited": figures["audited"]}


def evaluate_selection(names: np.ndarray, xy: np.ndarray, keep: np.ndarray, data: Dataset,
                       labels: np.ndarray, anchors: dict[str, np.ndarray]) -> dict:
    """The three countings of the kept candidates, and MCC of keeping within the candidates.

    Only candidates on ground-truth micrographs count; ``labels`` are their
    per-box labels (:func:`or_labels`), ``anchors`` those of :func:`audit_anchors`.
    """
    on_truth = np.isin(names, list(data.truth))
    result = evaluate_picks({n: xy[keep & (names == n)] for n in data.truth}, data, anchors)
    result["mcc"] = mcc(labels[on_truth], keep[on_truth])
    return result


TILE_DIAMETERS = 4
"""Side of the bootstrap's tiles, in particle diameters: large enough that few matches
cross a tile's border, small enough for tens of tiles per micrograph."""


def _tile_index(xy: np.ndarray, tile: float, shape: tuple[int, int]) -> np.ndarray:
    """The tile (row-major over ``shape``) each point of one micrograph lies in."""
    cell = np.clip(np.floor(xy / tile).astype(int), 0, np.array(shape) - 1)
    return cell[:, 0] * shape[1] + cell[:, 1]


def _tile_counts(picks: np.ndarray, centres: np.ndarray, radius: float, tile: float,
                 shape: tuple[int, int]) -> np.ndarray:
    """(tiles, 2): one-to-one true positives and picks per tile of one micrograph; a match
    counts in its label's tile, an unmatched pick in its own."""
    is_tp, found = match_one_to_one(picks, centres, radius)
    n_tiles = shape[0] * shape[1]
    matched = np.bincount(_tile_index(centres[found], tile, shape), minlength=n_tiles)
    unmatched = np.bincount(_tile_index(picks[~is_tp], tile, shape), minlength=n_tiles)
    return np.column_stack([matched, matched + unmatched]).astype(np.float64)


def paired_f1_bootstrap(first: dict[str, np.ndarray], second: dict[str, np.ndarray],
                        data: Dataset, n_resamples: int = 2000, seed: int = 0) -> dict:
    """How sure the one-to-one F1 difference ``first`` - ``second`` is, on these labels.

    The labelled micrographs are cut into tiles of :data:`TILE_DIAMETERS` particle
    diameters; the tiles are resampled with replacement, both sets on the same tiles
    (paired: what one set gains on a tile of thick ice the other meets there too), and the
    difference is recomputed.  Tiles rather than particles, because neighbouring particles
    share ice and contamination and are not independent; a micrograph holds tens of them.
    This measures how far the difference would move on other micrographs like these ones,
    not how far it moves with the training's seed (rerun the command for that).
    """
    tile = TILE_DIAMETERS * data.spec.diameter
    empty = np.empty((0, 2))
    parts, labels = [], []
    for name, centres in data.truth.items():
        a = np.asarray(first.get(name, empty), dtype=np.float64).reshape(-1, 2)
        b = np.asarray(second.get(name, empty), dtype=np.float64).reshape(-1, 2)
        extent = np.max(np.vstack([centres, a, b, [[0.0, 0.0]]]), axis=0)
        shape = tuple((np.floor(extent / tile).astype(int) + 1).tolist())
        parts.append(np.hstack([_tile_counts(a, centres, data.match_radius, tile, shape),
                                _tile_counts(b, centres, data.match_radius, tile, shape)]))
        labels.append(np.bincount(_tile_index(centres, tile, shape),
                                  minlength=shape[0] * shape[1]))
    counts = np.column_stack([np.vstack(parts), np.concatenate(labels)])
    counts = counts[counts.sum(axis=1) > 0]                   # tiles with neither labels nor picks

    def f1(sums: np.ndarray, tp: int, n: int) -> np.ndarray:
        return 2 * sums[..., tp] / np.maximum(sums[..., n] + sums[..., 4], 1)

    total = counts.sum(axis=0)
    observed = float(f1(total, 0, 1) - f1(total, 2, 3))
    weights = np.random.default_rng(seed).multinomial(
        len(counts), np.full(len(counts), 1 / len(counts)), size=n_resamples)
    sums = weights @ counts
    differences = f1(sums, 0, 1) - f1(sums, 2, 3)
    low, high = np.percentile(differences, [2.5, 97.5])
    return {"difference": observed, "ci95": [float(low), float(high)],
            "share_first_not_worse": float(np.mean(differences >= 0)),
            "n_tiles": int(len(counts)), "tile_px": float(tile), "n_resamples": n_resamples}


def score_quality(names: np.ndarray, xy: np.ndarray, scores: np.ndarray, data: Dataset,
                  labels: np.ndarray, anchors: dict[str, np.ndarray]) -> dict:
    """ROC-AUC and PR-AUC of ``scores`` over the candidates on labelled micrographs.

    Against the per-box labels (:func:`or_labels`), and, under ``audited``,
    with the unlabelled boxes that the "labels audited" count leaves out of
    precision left out here too (within a quarter diameter of an OR
    coordinate two or more pickers agree on, more than half a diameter from
    every label; ``n_left_out`` says how many): a particle the curated labels
    miss is a negative that no ranking can put below the labelled particles,
    so the first figure mixes the ranking with the labels' gaps.
    ``roc_auc_audit_perfect`` says how much: the first figure of a ranking that
    is perfect if the audit is right, putting the boxes it leaves out among
    the labelled particles (an image cannot tell a particle the curators
    skipped from one they kept) and every other box after them:
    ``1 - n_left_out / (2 * unlabelled boxes)``.  Not a bound: where the audit
    leaves out junk, a ranking that puts it last scores higher.

    Under ``one_to_one``, the boxes are labelled as the F1 counts them: a box is a
    particle only when it is the one matched to a label (:func:`match_one_to_one`,
    closest pairs first), so a second, off-centre box on a labelled particle is a
    negative, as the duplicate it would be in the retained set.
    """
    on_truth = np.isin(names, list(data.truth)) & np.isfinite(scores)
    left_out = np.zeros(len(xy), dtype=bool)
    one_to_one = np.zeros(len(xy), dtype=bool)
    for name, centres in data.truth.items():
        rows = np.flatnonzero(names == name)
        left_out[rows] = audited_exclusion(xy[rows], labels[rows], anchors.get(name, ()),
                                           data.match_radius)
        one_to_one[rows] = match_one_to_one(xy[rows], centres, data.match_radius)[0]
    audited = on_truth & ~left_out
    return {"roc_auc": roc_auc(labels[on_truth], scores[on_truth]),
            "pr_auc": pr_auc(labels[on_truth], scores[on_truth]),
            "roc_auc_audit_perfect": roc_auc(labels[on_truth], (labels | left_out)[on_truth]),
            "one_to_one": {"roc_auc": roc_auc(one_to_one[on_truth], scores[on_truth]),
                           "pr_auc": pr_auc(one_to_one[on_truth], scores[on_truth]),
                           "n_second_boxes": int((on_truth & labels & ~one_to_one).sum())},
            "audited": {"roc_auc": roc_auc(labels[audited], scores[audited]),
                        "pr_auc": pr_auc(labels[audited], scores[audited]),
                        "n_left_out": int((on_truth & left_out).sum())}}


def vote_pattern_ceiling(names: np.ndarray, xy: np.ndarray, mic: np.ndarray,
                         voters: np.ndarray, network: np.ndarray, data: Dataset,
                         labels: np.ndarray, anchors: dict[str, np.ndarray],
                         min_distance: float, edge_distance: Optional[np.ndarray] = None,
                         edge_margin: float = 0.0, steps: int = 20, sweeps: int = 2) -> dict:
    """The best one-to-one F1 that any combination of these votes and this network reaches.

    A combination of the pickers' votes with the network's score that is
    monotone in the score (the picker agreement, a learned second stage, a
    threshold on the score alone) keeps, for each set of pickers that picked
    a coordinate (its vote pattern), the coordinates above some score.  Here
    those per-pattern thresholds are chosen on the labels themselves
    (coordinate ascent over the scores' quantiles; the run's minimum distance
    between retained coordinates, by network score, and its edge margin): an upper bound that
    tells whether the combination or its inputs limit the ranking.  No run
    may choose thresholds this way; it has no labels.
    """
    on_truth = np.isin(names, list(data.truth))
    pattern = vote_patterns(voters)
    network = np.nan_to_num(np.asarray(network, dtype=np.float64), nan=-1.0)
    patterns = np.unique(pattern[on_truth])
    cut = {p: -np.inf for p in patterns}  # start from the OR set: every pattern kept

    def f1(cuts: dict) -> float:
        above = network >= np.array([cuts.get(p, np.inf) for p in pattern])
        return _kept_f1(above, network, names, xy, mic, data, labels, anchors, min_distance,
                        edge_distance, edge_margin)

    best = f1(cut)
    for _ in range(sweeps):
        for p in patterns:
            rows = on_truth & (pattern == p)
            options = [-np.inf, np.inf] + list(np.quantile(network[rows],
                                                           np.linspace(0, 1, steps + 1)))
            for option in options:
                trial = {**cut, p: option}
                value = f1(trial)
                if value > best:
                    best, cut = value, trial
    return {"f1": best, "keep_above": {pattern_name(p, data.pickers): _cut_text(cut[p])
                                       for p in patterns}}


PICKER_SCORE_WEIGHTS = (0.5, 1.0, 2.0, 4.0)
"""Weights of the pickers' rank-normal scores against the network's logit that
:func:`picker_score_ceiling` tries: a picker's normal scores spread by 1, the
network's logits by about 5, so the pickers weigh from little to much."""


def picker_confidences(names: np.ndarray, xy: np.ndarray, voters: np.ndarray, data: Dataset,
                       radius: float) -> np.ndarray:
    """Each picker's own score of the pick behind each of its votes, ``(n, pickers)``.

    Pickers score in units of their own (crYOLO a probability, Topaz a
    log-likelihood ratio, some none), so each picker's scores are replaced by
    their normal scores over all its picks on the run's micrographs: one
    scale for all, and each picker ranks its own picks as before.  The pick
    behind a vote is the picker's nearest within ``radius`` (the consensus
    radius) of the coordinate.  NaN where the picker did not vote for the
    coordinate or its files carry no score.
    """
    from scipy.spatial import cKDTree
    from scipy.stats import norm, rankdata

    out = np.full(voters.shape, np.nan)
    for j, picker in enumerate(data.pickers):
        by_name = data.pick_scores.get(picker, {})
        if not by_name or any(scores is None for scores in by_name.values()):
            continue
        pooled = np.concatenate(list(by_name.values()))
        if len(pooled) == 0:
            continue
        normal = norm.ppf((rankdata(pooled) - 0.5) / len(pooled))
        sizes = np.cumsum([len(scores) for scores in by_name.values()])[:-1]
        for name, own in zip(by_name, np.split(normal, sizes)):
            rows = np.flatnonzero((names == name) & voters[:, j])
            if len(rows) == 0 or len(own) == 0:
                continue
            distance, nearest = cKDTree(data.picks[picker][name]).query(xy[rows])
            near = distance <= radius + 1e-6
            out[rows[near], j] = own[nearest[near]]
    return out


def picker_score_ceiling(names: np.ndarray, xy: np.ndarray, mic: np.ndarray,
                         voters: np.ndarray, network: np.ndarray, confidences: np.ndarray,
                         data: Dataset, labels: np.ndarray, anchors: dict[str, np.ndarray],
                         min_distance: float, edge_distance: Optional[np.ndarray] = None,
                         edge_margin: float = 0.0) -> dict:
    """:func:`vote_pattern_ceiling` of the network's logit plus the pickers' own scores.

    Whether what the pickers know of their own picks (:func:`picker_confidences`,
    summed over the pickers that voted) would lift the ceiling that the votes
    and the network set: the best over :data:`PICKER_SCORE_WEIGHTS`, and the
    pickers' scores alone (``"alone"``).  Where it does not, reading the
    pickers' scores would not help the run either.
    """
    from deepconsensus_plugin.core.agreement import score_logit
    from scipy.special import expit

    total = np.nansum(confidences, axis=1)
    logit = score_logit(np.asarray(network, dtype=np.float64))
    combined = {"alone": expit(total)}
    combined.update({"%g" % w: expit((logit + w * total) / (1.0 + w))
                     for w in PICKER_SCORE_WEIGHTS})
    # a coordinate the run could not score stays out, as in the ceiling without them
    by_weight = {key: vote_pattern_ceiling(names, xy, mic, voters,
                                           np.where(np.isfinite(network), score, np.nan),
                                           data, labels, anchors, min_distance,
                                           edge_distance, edge_margin)["f1"]
                 for key, score in combined.items()}
    best = max(by_weight, key=by_weight.get)
    return {"f1": by_weight[best], "best": best, "by_weight": by_weight}


def vote_patterns(voters: np.ndarray) -> np.ndarray:
    """Each coordinate's vote pattern (which pickers picked it) as a bit mask, picker i bit i."""
    return np.asarray(voters, dtype=np.int64) @ (1 << np.arange(voters.shape[1]))


def pattern_name(pattern: int, pickers: tuple[str, ...]) -> str:
    """The pickers of a vote pattern (:func:`vote_patterns`), comma-separated, as the reports
    name it."""
    return ",".join(name for i, name in enumerate(pickers) if pattern >> i & 1)


def _kept_f1(above: np.ndarray, score: np.ndarray, names: np.ndarray, xy: np.ndarray,
             mic: np.ndarray, data: Dataset, labels: np.ndarray,
             anchors: dict[str, np.ndarray], min_distance: float,
             edge_distance: Optional[np.ndarray], edge_margin: float) -> float:
    """One-to-one F1 of keeping the rows marked ``above``, after the protocol's minimum
    distance (the better ``score`` of two close rows wins) and edge margin."""
    ranked = np.where(above, 1.0 + score, score / 2)
    split = split_scores(ranked, 1.0, mic, xy, min_distance, edge_distance, edge_margin)
    return evaluate_selection(names, xy, split.retained_mask(), data, labels, anchors)["f1"]


def pattern_decisions(names: np.ndarray, xy: np.ndarray, mic: np.ndarray, voters: np.ndarray,
                      scores: np.ndarray, network: np.ndarray, threshold: float, data: Dataset,
                      labels: np.ndarray, anchors: dict[str, np.ndarray], min_distance: float,
                      edge_distance: Optional[np.ndarray] = None,
                      edge_margin: float = 0.0,
                      confidences: Optional[np.ndarray] = None) -> list[dict]:
    """The run's decisions on each vote pattern, on the labelled micrographs: what it kept
    and pruned (lenient labels), how well the network's score ranks within the pattern
    (ROC-AUC; the final scores, near 0 or 1, tie too often to rank) and, given
    ``confidences`` (:func:`picker_confidences`), how well each voting picker's own
    score does, and the one-to-one F1 of the run had it kept, or pruned, every
    coordinate of the pattern.

    Where those two F1 differ from the run's tells where the F1 is lost: a pattern whose
    "all kept" F1 beats the run's was pruned too hard.  Rows: the most coordinates first.
    """
    on_truth = np.isin(names, list(data.truth))
    pattern = vote_patterns(voters)
    score = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-1.0)
    network = np.nan_to_num(np.asarray(network, dtype=np.float64), nan=-1.0)
    above = score >= threshold
    split = split_scores(score, threshold, mic, xy, min_distance, edge_distance, edge_margin)
    kept = split.retained_mask()
    rows = []
    for p in np.unique(pattern[on_truth]):
        mine = on_truth & (pattern == p)
        by_score = mine & ~above
        others = mine & np.logical_or(split.duplicate, split.at_edge)
        both = labels[mine].any() and not labels[mine].all()
        rows.append({
            "pattern": pattern_name(p, data.pickers), "n": int(mine.sum()),
            "labelled": int((mine & labels).sum()),
            "retained": int((mine & kept).sum()),
            "retained_labelled": int((mine & kept & labels).sum()),
            "pruned_by_score": int(by_score.sum()),
            "pruned_by_score_labelled": int((by_score & labels).sum()),
            "pruned_close_or_edge": int(others.sum()),
            "roc_auc": roc_auc(labels[mine], network[mine]) if both else None,
            "pickers_roc_auc": _own_score_aucs(p, mine, labels, confidences, data.pickers),
            "f1_all_kept": _kept_f1(above | (pattern == p), score, names, xy, mic, data,
                                    labels, anchors, min_distance, edge_distance, edge_margin),
            "f1_all_pruned": _kept_f1(above & (pattern != p), score, names, xy, mic, data,
                                      labels, anchors, min_distance, edge_distance,
                                      edge_margin)})
    return sorted(rows, key=lambda row: -row["n"])


def _own_score_aucs(pattern: int, mine: np.ndarray, labels: np.ndarray,
                    confidences: Optional[np.ndarray], pickers: tuple[str, ...]) -> dict:
    """ROC-AUC within a pattern of each voting picker's own score (pickers with scores)."""
    if confidences is None:
        return {}
    aucs = {}
    for j, picker in enumerate(pickers):
        own = confidences[mine, j]
        scored = np.isfinite(own)
        if pattern >> j & 1 and scored.any() and 0 < labels[mine][scored].sum() < scored.sum():
            aucs[picker] = roc_auc(labels[mine][scored], own[scored])
    return aucs


def _cut_text(cut: float):
    """A pattern's threshold for the JSON record: "all" or "none" where it keeps all or none."""
    return "all" if cut == -np.inf else "none" if cut == np.inf else float(cut)
