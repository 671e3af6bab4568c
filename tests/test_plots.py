"""The viewer's figures, drawn from plain arrays (no Scipion)."""
import matplotlib
import numpy as np
import pytest
from matplotlib.collections import PatchCollection
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from deepconsensus_plugin.core import plots
from deepconsensus_plugin.core.metrics import picker_counts
from deepconsensus_plugin.core.selection import GALLERY_KINDS, gallery_rows


def bar_total(ax):
    """Sum of the histogram bars' heights (stacked bars are one rectangle per vote level)."""
    return sum(bar.get_height() for container in ax.containers for bar in container)


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


@pytest.mark.parametrize("with_votes", [False, True])
def test_histogram_counts_every_scored_coordinate(with_votes):
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.random(500), [np.nan] * 7, [0.0, 1.0]])
    votes = rng.integers(1, 4, len(scores))
    fig = plots.score_histogram(scores, 0.6, votes=votes if with_votes else None,
                                auto_threshold=0.4)
    ax = fig.axes[0]
    assert bar_total(ax) == 502
    texts = legend_texts(ax)
    n_kept = int(np.sum(scores >= 0.6))
    assert f"retained {n_kept:,} ({100 * n_kept / 502:.1f}%)" in texts
    assert f"pruned {502 - n_kept:,} ({100 * (502 - n_kept) / 502:.1f}%)" in texts
    assert "threshold 0.60" in texts and "automatic 0.40" in texts
    assert "7 on skipped micrographs" in ax.get_title()
    if with_votes:
        assert {"picked by 1", "picked by 2", "picked by 3"} <= set(texts)
    kept_curve = fig.axes[1].lines[0]
    x, y = kept_curve.get_data()
    assert y[np.searchsorted(x, 0.6)] == pytest.approx(n_kept / 502)


def test_histogram_counts_duplicates_among_the_pruned():
    scores = np.array([0.9, 0.8, 0.7, 0.2])
    duplicate = np.array([False, True, False, False])
    texts = legend_texts(plots.score_histogram(scores, 0.5, duplicate=duplicate).axes[0])
    assert "retained 2 (50.0%)" in texts
    assert "pruned 2 (50.0%),\n1 duplicates" in texts


def test_histogram_counts_coordinates_at_the_edge_among_the_pruned():
    scores = np.array([0.9, 0.8, 0.7, 0.2])
    duplicate = np.array([False, True, False, False])
    at_edge = np.array([False, False, True, False])
    texts = legend_texts(plots.score_histogram(scores, 0.5, duplicate=duplicate,
                                               at_edge=at_edge).axes[0])
    assert "retained 1 (25.0%)" in texts
    assert "pruned 3 (75.0%),\n1 duplicates, 1 at the edge" in texts


def test_training_curves_plot_the_history_and_mark_the_kept_epoch():
    history = {"epoch": [0, 1, 2], "loss": [0.7, 0.4, 0.3], "val_loss": [0.6, 0.35, 0.4],
               "accuracy": [0.5, 0.8, 0.9], "val_accuracy": [0.55, 0.85, 0.8]}
    fig = plots.training_curves(history)
    loss_ax, acc_ax = fig.axes
    assert loss_ax.lines[0].get_ydata().tolist() == history["loss"]
    assert loss_ax.lines[1].get_ydata().tolist() == history["val_loss"]
    assert acc_ax.lines[1].get_ydata().tolist() == history["val_accuracy"]
    assert loss_ax.lines[0].get_xdata().tolist() == [1, 2, 3]
    assert "kept (epoch 2)" in legend_texts(loss_ax)


def test_training_curves_say_when_there_is_no_history():
    fig = plots.training_curves({})
    assert fig.axes[0].texts[0].get_text() == "no training history"


@pytest.mark.parametrize("kind", GALLERY_KINDS)
def test_gallery_rows_pick_the_right_end_in_decreasing_score(kind):
    rng = np.random.default_rng(1)
    scores = rng.random(200)
    scores[:5] = np.nan
    rows = gallery_rows(scores, 12, kind, 0.3)
    assert len(rows) == 12 and not np.isnan(scores[rows]).any()
    assert np.all(np.diff(scores[rows]) <= 0)
    others = np.setdiff1d(np.flatnonzero(np.isfinite(scores)), rows)
    if kind == "highest":
        assert scores[rows].min() >= scores[others].max()
    elif kind == "lowest":
        assert scores[rows].max() <= scores[others].min()
    else:
        assert np.abs(scores[rows] - 0.3).max() <= np.abs(scores[others] - 0.3).min()


def test_gallery_has_one_framed_box_per_row():
    stack = np.random.default_rng(2).normal(size=(30, 16, 16)).astype(np.float16)
    scores = np.linspace(0, 1, 30)
    rows = [29, 20, 3, 0, 15, 7, 8]
    fig = plots.gallery(stack, rows, n_cols=3, scores=scores, threshold=0.5, title="t")
    assert len(fig.axes) == len(rows)
    for ax, row in zip(fig.axes, rows):
        np.testing.assert_array_equal(ax.images[0].get_array(), stack[row].astype(np.float32))
        assert ax.get_title() == f"{scores[row]:.3f}"
        expected = plots.RETAINED_COLOUR if scores[row] >= 0.5 else plots.PRUNED_COLOUR
        assert ax.spines["left"].get_edgecolor() == pytest.approx(
            tuple(int(expected[i:i + 2], 16) / 255 for i in (1, 3, 5)) + (1.0,))
    # The legend names the frames' colours and the threshold.
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["retained (score >= 0.50)",
                                                          "pruned (score < 0.50)"]
    assert [to_hex(h.get_edgecolor()) for h in legend.legend_handles] == [
        plots.RETAINED_COLOUR.lower(), plots.PRUNED_COLOUR.lower()]
    assert not plots.gallery(stack, rows, n_cols=3, scores=scores).legends  # no frames


def test_micrograph_overlay_draws_both_sets_on_the_image():
    image = np.random.default_rng(3).normal(size=(300, 400)).astype(np.float32)
    retained = np.array([[50.0, 60.0], [200.0, 100.0], [390.0, 290.0]])
    pruned = np.array([[120.0, 150.0]])
    fig = plots.micrograph_overlay(image, retained, pruned, box=40, title="mic_7")
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), image)
    circles = [c for c in ax.collections if isinstance(c, PatchCollection)]
    assert [len(c.get_paths()) for c in circles] == [3, 1]
    assert ax.get_title() == "mic_7"
    assert legend_texts(ax) == ["retained (3)", "pruned (1)"]


def test_micrograph_overlay_bins_large_images_but_keeps_pixel_axes():
    image = np.arange(2500 * 2000, dtype=np.float32).reshape(2500, 2000)
    fig = plots.micrograph_overlay(image, np.empty((0, 2)), np.empty((0, 2)), box=10,
                                   max_size=1000)
    ax = fig.axes[0]
    assert ax.images[0].get_array().shape == (833, 666)
    assert ax.get_xlim() == (0, 2000) and ax.get_ylim() == (2500, 0)


def test_picker_table_counts():
    voters = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1], [0, 0, 1], [0, 1, 0], [1, 0, 0]],
                      dtype=bool)
    retained = np.array([1, 1, 1, 0, 0, 1], dtype=bool)
    counts = picker_counts(voters, retained)
    assert counts["picked"].tolist() == [4, 3, 2]
    assert counts["retained"].tolist() == [4, 2, 1]
    assert counts["alone"].tolist() == [2, 1, 1]
    assert counts["alone_retained"].tolist() == [2, 0, 0]
    fig = plots.picker_table(voters, retained, ["a", "b", "c"])
    table = fig.axes[1].tables[0]
    cells = table.get_celld()
    assert [cells[0, c].get_text().get_text() for c in range(6)] == list(plots.PICKER_COLUMNS)
    assert [cells[2, c].get_text().get_text() for c in range(6)] == \
        ["b", "3", "2", "66.7", "1", "0"]
    assert [cells[4, c].get_text().get_text() for c in range(6)] == \
        ["any (OR)", "6", "4", "66.7", "4", "2"]
    bars = fig.axes[0].patches
    assert [b.get_width() for b in bars] == [4, 3, 2, 4, 2, 1]


def test_save_png_draws_into_a_given_figure_without_a_display(tmp_path):
    figure = Figure()
    fig = plots.score_histogram(np.linspace(0, 1, 11), 0.5, figure=figure)
    assert fig is figure
    path = plots.save_png(fig, str(tmp_path / "h.png"), dpi=50)
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_gallery_frames_duplicates_as_pruned():
    stack = np.zeros((3, 8, 8), dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.2])
    duplicate = np.array([False, True, False])
    fig = plots.gallery(stack, [0, 1, 2], n_cols=3, scores=scores, threshold=0.5,
                        duplicate=duplicate)
    titles = [ax.get_title() for ax in fig.axes]
    colours = [ax.spines["left"].get_edgecolor() for ax in fig.axes]
    assert titles == ["0.900", "0.800 dup", "0.200"]
    assert [matplotlib.colors.to_hex(c) for c in colours] == [
        plots.RETAINED_COLOUR.lower(), plots.PRUNED_COLOUR.lower(), plots.PRUNED_COLOUR.lower()]


def test_gallery_frames_coordinates_at_the_edge_as_pruned():
    stack = np.zeros((3, 8, 8), dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.2])
    fig = plots.gallery(stack, [0, 1, 2], n_cols=3, scores=scores, threshold=0.5,
                        duplicate=np.zeros(3, bool), at_edge=np.array([True, False, False]))
    titles = [ax.get_title() for ax in fig.axes]
    colours = [ax.spines["left"].get_edgecolor() for ax in fig.axes]
    assert titles == ["0.900 edge", "0.800", "0.200"]
    assert [matplotlib.colors.to_hex(c) for c in colours] == [
        plots.PRUNED_COLOUR.lower(), plots.RETAINED_COLOUR.lower(), plots.PRUNED_COLOUR.lower()]
    assert any("edge: at the edge" in t.get_text() for t in fig.legends[0].get_texts())
