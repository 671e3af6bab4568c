"""Figures of a Deep Consensus run: scores, training, particles, micrographs, pickers.

A pruning is judged by looking at it, so every figure the viewer shows is
drawn here from plain arrays, with numpy and matplotlib only (no pyplot, no
Scipion).  Each function draws into a :class:`matplotlib.figure.Figure` that
it creates, or into one it is given: the Tk viewer passes the pyplot-managed
figure of pwem's plotter so that the window shows it, while tests and the
README script draw into a plain figure and write it with :func:`save_png`,
which needs no display.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, Patch

from . import metrics

RETAINED_COLOUR = "#009E73"
"""Okabe-Ito bluish green and vermillion: told apart with the common colour blindnesses."""
PRUNED_COLOUR = "#D55E00"


def _figure(figure: Optional[Figure], size: tuple[float, float]) -> Figure:
    """The figure to draw into: ``figure`` cleared, or a new one of ``size`` inches."""
    if figure is None:
        return Figure(figsize=size)
    figure.clear()
    figure.set_size_inches(*size)
    return figure


def save_png(figure: Figure, path: str, dpi: int = 100) -> str:
    """Write ``figure`` as a PNG with the Agg renderer (no display needed); return ``path``."""
    figure.savefig(path, dpi=dpi, format="png")
    return path


def _count(n: int, total: int) -> str:
    return f"{n:,} ({100.0 * n / max(total, 1):.1f}%)"


def _pruned_by_rule(n_duplicates: int, n_at_edge: int) -> str:
    """The legend's second line on the pruned: those the rules moved there (none: empty)."""
    parts = ([f"{n_duplicates:,} duplicates"] if n_duplicates else []) + (
        [f"{n_at_edge:,} at the edge"] if n_at_edge else [])
    return ",\n" + ", ".join(parts) if parts else ""


def score_histogram(scores: np.ndarray, threshold: float, votes: Optional[np.ndarray] = None,
                    auto_threshold: Optional[float] = None, bins: int = 50,
                    duplicate: Optional[np.ndarray] = None,
                    at_edge: Optional[np.ndarray] = None,
                    figure: Optional[Figure] = None) -> Figure:
    """Histogram of the OR set's scores with the threshold and what it keeps.

    With ``votes`` the bars are stacked by how many pickers picked each
    coordinate, which shows whether the network disagrees with the vote
    (single-picker picks scoring high are particles only one picker found).
    The line on the right axis is the fraction that a threshold at each
    score would keep, so a new threshold can be read off before re-running.
    ``duplicate`` marks the coordinates above the threshold that the minimum
    distance moves to the pruned set, ``at_edge`` those the edge margin moves
    there (:mod:`.selection` decides which); the counts include them among the
    pruned.
    """
    scores = np.asarray(scores, dtype=np.float64)
    scored = np.isfinite(scores)
    values = scores[scored]
    above = scored & (scores >= threshold)
    n_duplicates = 0 if duplicate is None else int(np.count_nonzero(duplicate & above))
    n_at_edge = 0 if at_edge is None else int(np.count_nonzero(at_edge & above))
    n_retained = int(np.count_nonzero(above)) - n_duplicates - n_at_edge
    n_pruned = len(values) - n_retained
    fig = _figure(figure, (9.0, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ax.axvspan(0.0, threshold, color=PRUNED_COLOUR, alpha=0.08, lw=0)
    ax.axvspan(threshold, 1.0, color=RETAINED_COLOUR, alpha=0.08, lw=0)
    if votes is None:
        ax.hist(values, bins=edges, color="#4C72B0", label="coordinates")
    else:
        votes = np.asarray(votes)[scored]
        levels = np.unique(votes)
        colours = [_viridis(i, len(levels)) for i in range(len(levels))]
        labels = [f"picked by {v}" for v in levels]
        ax.hist([values[votes == v] for v in levels], bins=edges, stacked=True,
                histtype="barstacked", color=colours, label=labels)
    handles = ax.get_legend_handles_labels()[0]
    ax.axvline(threshold, color="black", lw=1.5, ls="--")
    handles.append(Line2D([], [], color="black", lw=1.5, ls="--",
                          label=f"threshold {threshold:.2f}"))
    if auto_threshold is not None and abs(auto_threshold - threshold) > 1e-9:
        ax.axvline(auto_threshold, color="grey", lw=1.2, ls=":")
        handles.append(Line2D([], [], color="grey", lw=1.2, ls=":",
                              label=f"automatic {auto_threshold:.2f}"))
    handles.append(Patch(color=RETAINED_COLOUR, alpha=0.35,
                         label="retained " + _count(n_retained, len(values))))
    handles.append(Patch(color=PRUNED_COLOUR, alpha=0.35,
                         label="pruned " + _count(n_pruned, len(values))
                         + _pruned_by_rule(n_duplicates, n_at_edge)))
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("Deep Consensus score")
    ax.set_ylabel("coordinates")
    title = f"Scores of {len(scores):,} OR coordinates"
    if len(values) < len(scores):
        title += f" ({len(scores) - len(values):,} on skipped micrographs)"
    ax.set_title(title)
    kept = ax.twinx()
    cuts = np.sort(values)
    grid = np.linspace(0.0, 1.0, 201)
    kept.plot(grid, 1.0 - np.searchsorted(cuts, grid, side="left") / max(len(cuts), 1),
              color="0.25", lw=1)
    kept.set_ylim(0.0, 1.02)
    kept.set_ylabel("fraction kept by a threshold here")
    handles.append(Line2D([], [], color="0.25", lw=1, label="kept by a threshold here"))
    # Outside the axes: score distributions fill either end and the curve crosses the middle.
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.1, 1.0), fontsize="small")
    fig.tight_layout()
    return fig


def _viridis(i: int, n: int) -> tuple:
    """The i-th of n distinct colours from viridis, avoiding its darkest and lightest ends."""
    return colormaps["viridis"](0.15 + 0.7 * i / max(n - 1, 1))


def training_curves(history: Mapping[str, Sequence[float]],
                    figure: Optional[Figure] = None, title: Optional[str] = None) -> Figure:
    """Loss and accuracy per epoch, training and validation, from the saved history.

    The epoch with the lowest validation loss is marked: early stopping keeps
    that epoch's weights, so it is the network that scored the particles.
    ``title`` (where the network came from) heads the figure.
    """
    fig = _figure(figure, (9.0, 3.8))
    if title:
        fig.suptitle(title, fontsize="medium")
    loss_ax = fig.add_subplot(1, 2, 1)
    acc_ax = fig.add_subplot(1, 2, 2)
    n = len(history.get("loss", ()))
    if n == 0:
        for ax in (loss_ax, acc_ax):
            ax.text(0.5, 0.5, "no training history", ha="center", va="center",
                    transform=ax.transAxes)
        return fig
    epochs = np.arange(1, n + 1)
    best = int(np.argmin(history["val_loss"])) + 1 if "val_loss" in history else None
    for ax, key, name in ((loss_ax, "loss", "Loss"), (acc_ax, "accuracy", "Accuracy")):
        ax.plot(epochs, history[key], "o-", ms=3, label="training")
        if "val_" + key in history:
            ax.plot(epochs, history["val_" + key], "s-", ms=3, label="validation")
        if best is not None:
            ax.axvline(best, color="grey", ls=":", lw=1, label=f"kept (epoch {best})")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout(rect=(0, 0, 1, 0.93) if title else None)
    return fig


def gallery(stack: np.ndarray, rows: Sequence[int], n_cols: int = 10,
            scores: Optional[np.ndarray] = None, title: str = "",
            threshold: Optional[float] = None, duplicate: Optional[np.ndarray] = None,
            at_edge: Optional[np.ndarray] = None,
            figure: Optional[Figure] = None) -> Figure:
    """A montage of the extracted boxes ``stack[rows]``, one small axes per box.

    Each box is labelled with its score when ``scores`` is given, and framed
    in the retained or pruned colour when ``threshold`` is too, so a glance
    tells which side of the cut every particle is on; a legend under the
    title says which colour is which.  ``duplicate`` marks coordinates above
    the threshold that are pruned as the second pick of a particle: they are
    framed as pruned and their score is marked "dup"; ``at_edge`` likewise
    those pruned at the micrograph's edge, marked "edge".
    """
    rows = np.asarray(rows, dtype=np.int64)
    n_cols = max(1, min(n_cols, len(rows)))
    n_rows = max(1, math.ceil(len(rows) / n_cols))
    framed = scores is not None and threshold is not None
    title_height = 0.5 if title else 0.1
    top = title_height + (0.3 if framed else 0.0)  # inches above the boxes
    fig = _figure(figure, (max(1.05 * n_cols + 0.2, 4.0 if framed else 0.0),
                           1.15 * n_rows + top))
    if title:
        fig.suptitle(title)
    if framed:
        fig.legend(handles=[
            Patch(facecolor="none", edgecolor=RETAINED_COLOUR, linewidth=2,
                  label=f"retained (score >= {threshold:.2f})"),
            Patch(facecolor="none", edgecolor=PRUNED_COLOUR, linewidth=2,
                  label=f"pruned (score < {threshold:.2f}"
                        + (", or dup: a duplicate" if duplicate is not None else "")
                        + (", or edge: at the edge" if at_edge is not None else "") + ")")],
            loc="upper center",
            bbox_to_anchor=(0.5, 1.0 - (title_height - 0.05) / fig.get_figheight()),
            ncol=2, fontsize=8, frameon=False, handlelength=1.2)
    for i, row in enumerate(rows):
        ax = fig.add_subplot(n_rows, n_cols, i + 1)
        ax.imshow(np.asarray(stack[row], dtype=np.float32), cmap="gray", interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if scores is not None:
            is_duplicate = duplicate is not None and bool(duplicate[row])
            is_at_edge = at_edge is not None and bool(at_edge[row])
            mark = " dup" if is_duplicate else " edge" if is_at_edge else ""
            ax.set_title(f"{scores[row]:.3f}" + mark, fontsize=7, pad=2)
            if threshold is not None:
                kept = scores[row] >= threshold and not (is_duplicate or is_at_edge)
                colour = RETAINED_COLOUR if kept else PRUNED_COLOUR
                for spine in ax.spines.values():
                    spine.set_edgecolor(colour)
                    spine.set_linewidth(2)
    if not len(rows):
        ax = fig.add_subplot(1, 1, 1)
        ax.axis("off")
        ax.text(0.5, 0.5, "no scored particles", ha="center", va="center")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, wspace=0.05, hspace=0.3,
                        top=1.0 - top / fig.get_figheight())
    return fig


def bin_image(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean of ``factor`` x ``factor`` blocks (the ragged edge is cut): a light preview."""
    if factor <= 1:
        return np.asarray(image, dtype=np.float32)
    rows, cols = (s // factor * factor for s in image.shape)
    blocks = np.asarray(image[:rows, :cols], dtype=np.float32)
    return blocks.reshape(rows // factor, factor, cols // factor, factor).mean(axis=(1, 3))


def micrograph_overlay(image: np.ndarray, retained_xy: np.ndarray, pruned_xy: np.ndarray,
                       box: float, title: str = "", max_size: int = 1024,
                       figure: Optional[Figure] = None) -> Figure:
    """One micrograph with its retained and pruned picks as circles of two colours.

    Circles are half the box across, about a particle's size, so that
    neighbours stay apart on crowded micrographs.  The image is binned to at
    most ``max_size`` pixels a side for display and its contrast clipped to
    the 1st-99th percentile; axes stay in the micrograph's pixels, so
    coordinates are drawn as they are stored.
    """
    height, width = image.shape
    factor = max(1, math.ceil(max(height, width) / max_size))
    shown = bin_image(image, factor)
    low, high = np.percentile(shown, [1, 99])
    aspect = height / width
    fig = _figure(figure, (7.5, 7.5 * aspect + 0.8))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(shown, cmap="gray", vmin=low, vmax=high, interpolation="bilinear",
              extent=(0, shown.shape[1] * factor, shown.shape[0] * factor, 0))
    radius = box / 4.0
    for xy, colour in ((retained_xy, RETAINED_COLOUR), (pruned_xy, PRUNED_COLOUR)):
        circles = [Circle((x, y), radius) for x, y in np.asarray(xy).reshape(-1, 2)]
        ax.add_collection(PatchCollection(circles, facecolor="none", edgecolor=colour,
                                          linewidth=1.2))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(handles=[
        Line2D([], [], ls="", marker="o", mfc="none", mec=RETAINED_COLOUR, mew=1.2,
               label=f"retained ({len(retained_xy):,})"),
        Line2D([], [], ls="", marker="o", mfc="none", mec=PRUNED_COLOUR, mew=1.2,
               label=f"pruned ({len(pruned_xy):,})")],
              loc="upper right", fontsize="small", framealpha=0.9)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


PICKER_COLUMNS = ("picker", "picked", "retained", "% retained", "picked alone",
                  "alone, retained")


def picker_table_rows(voters: np.ndarray, retained: np.ndarray,
                      picker_names: Sequence[str]) -> list[list[str]]:
    """The per-picker table as text rows (see :data:`PICKER_COLUMNS`), with an OR row last."""
    counts = metrics.picker_counts(voters, retained)
    rows = [[name, f"{picked:,}", f"{kept:,}", f"{100.0 * kept / max(picked, 1):.1f}",
             f"{alone:,}", f"{alone_kept:,}"]
            for name, picked, kept, alone, alone_kept in zip(
                picker_names, counts["picked"], counts["retained"], counts["alone"],
                counts["alone_retained"])]
    total, kept = len(retained), int(np.count_nonzero(retained))
    rows.append(["any (OR)", f"{total:,}", f"{kept:,}", f"{100.0 * kept / max(total, 1):.1f}",
                 f"{int(counts['alone'].sum()):,}", f"{int(counts['alone_retained'].sum()):,}"])
    return rows


def picker_table(voters: np.ndarray, retained: np.ndarray, picker_names: Sequence[str],
                 figure: Optional[Figure] = None) -> Figure:
    """How many of each picker's coordinates were retained: bars and the numbers."""
    counts = metrics.picker_counts(voters, retained)
    names = list(picker_names)
    fig = _figure(figure, (7.5, 2.0 + 0.55 * len(names)))
    ax, table_ax = fig.subplots(2, 1, height_ratios=[len(names), len(names) + 2])
    positions = np.arange(len(names))
    ax.barh(positions, counts["picked"], color="0.8", label="picked")
    ax.barh(positions, counts["retained"], color=RETAINED_COLOUR, label="retained")
    ax.set_yticks(positions, names)
    ax.invert_yaxis()
    ax.set_xlabel("coordinates")
    ax.set_title("Coordinates retained per picker")
    ax.legend(fontsize="small", loc="lower right")
    table_ax.axis("off")
    table = table_ax.table(cellText=picker_table_rows(voters, retained, names),
                           colLabels=PICKER_COLUMNS, cellLoc="right", bbox=[0, 0, 1, 1],
                           colWidths=[0.26, 0.12, 0.12, 0.14, 0.18, 0.18])
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    fig.tight_layout()
    # The table spans the figure, not just the room the bars' picker names leave.
    box = table_ax.get_position()
    table_ax.set_position([0.03, box.y0, 0.94, box.height])
    return fig


def known_picks(labels: np.ndarray, scores: np.ndarray, retained: np.ndarray, threshold: float,
                figure: Optional[Figure] = None) -> Figure:
    """The scores against the user's known-good (label 1) and known-bad (0) picks: the ROC
    curve with the threshold's operating point, and the scores of each kind as histograms
    with precision, recall and ROC-AUC (:func:`.evaluation.agreement`) in the title."""
    from .evaluation import agreement

    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    retained = np.asarray(retained, dtype=bool)
    scored = np.isfinite(scores)
    labels, scores, retained = labels[scored], scores[scored], retained[scored]
    result = agreement(labels, scores, retained)
    fig = _figure(figure, (9.0, 3.8))
    roc_ax = fig.add_subplot(1, 2, 1)
    hist_ax = fig.add_subplot(1, 2, 2)
    if labels.any() and (~labels).any():
        fpr, tpr = metrics.roc_curve(labels, scores)
        roc_ax.plot(fpr, tpr, "-", label="ROC-AUC %.2f" % result.roc_auc)
        roc_ax.plot([(retained & ~labels).sum() / (~labels).sum()],
                    [(retained & labels).sum() / labels.sum()], "o", color="black",
                    label="threshold %.2f" % threshold)
        roc_ax.legend(fontsize="small", loc="lower right")
    else:
        roc_ax.text(0.5, 0.5, "ROC needs good and bad picks", ha="center", va="center",
                    transform=roc_ax.transAxes)
    roc_ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    roc_ax.set_xlabel("known-bad retained (false-positive rate)")
    roc_ax.set_ylabel("known-good retained (recall)")
    roc_ax.set_title("ROC on the known picks")
    bins = np.linspace(0, 1, 21)
    for mask, name, colour in ((labels, "known good", "tab:green"),
                               (~labels, "known bad", "tab:orange")):
        if mask.any():
            hist_ax.hist(scores[mask], bins=bins, alpha=0.6, color=colour,
                         label="%s (%d)" % (name, mask.sum()))
    hist_ax.axvline(threshold, color="black", ls="--", lw=1)
    hist_ax.set_xlabel("score")
    hist_ax.set_title("precision %s, recall %s" % tuple(
        "n/a" if math.isnan(v) else "%.2f" % v for v in (result.precision, result.recall)))
    hist_ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
