"""Figures checked without eyes: legends, colour scales, the stamp's place, the pipeline's boxes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from uslib import plots  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _matrix(values):
    names = ["40dB", "50dB", "60dB", "ALL"]
    rows = [
        {"train": f"Train{a}", "test": f"Test{b}", "auc": values[i][j]}
        for i, a in enumerate(names)
        for j, b in enumerate(names)
    ]
    return pd.DataFrame(rows)


def _stamp(fig):
    stamps = [t for t in fig.texts if t.get_gid() == plots.STAMP_GID]
    assert len(stamps) == 1
    return stamps[0]


def _overlaps(a, b):
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _visible_texts(fig, exclude):
    out = []
    for t in fig.findobj(Text):
        if t is exclude or not t.get_visible() or not t.get_text().strip():
            continue
        out.append(t)
    return out


# --- the stamp ----------------------------------------------------------------


@pytest.mark.parametrize("layout", ["tight", "tight, no xlabel", "figure legend"])
def test_stamp_covers_no_text_of_the_figure(layout):
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for ax in axes:
        ax.plot([0, 1], [0, 1], label="line")
        if layout != "tight, no xlabel":
            ax.set_xlabel("test dynamic range [dB]")
        ax.set_ylabel("AUC")
        ax.set_xticks(np.linspace(0, 1, 11))
    with_fig_legend = layout == "figure legend"
    if with_fig_legend:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=2)
        fig.tight_layout(rect=(0, 0.1, 1, 1))
    else:
        fig.tight_layout(pad=0.2)
    plots.label_synthetic(fig, "SYNTHETIC DATA · RANDOM WEIGHTS")
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    stamp = _stamp(fig)
    sb = stamp.get_bbox_patch().get_window_extent(r)
    texts = _visible_texts(fig, stamp)
    assert any(t.get_text() == "0.5" for t in texts)  # tick labels are among the texts checked
    for t in texts:
        assert not _overlaps(sb, t.get_window_extent(r)), f"stamp covers {t.get_text()!r}"
    if with_fig_legend:
        assert not _overlaps(sb, fig.legends[0].get_window_extent(r))


def _pca_like_figure():
    """Chapter 04's layout: two scatter panels, a six-entry figure legend in three columns under them."""
    rng = np.random.default_rng(0)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.9))
    for ax in axes:
        for i, dr in enumerate((40, 50, 60)):
            for lab, mk in ((0, "o"), (1, "^")):
                ax.scatter(
                    *rng.normal(size=(2, 10)),
                    s=9,
                    marker=mk,
                    color=f"C{i}",
                    label=f"{dr:g} dB, {'malignant' if lab else 'benign'}",
                )
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.17, 1, 1))
    return fig


@pytest.mark.parametrize("layout", ["pca legend", "axes legend lower right", "full figure"])
def test_stamp_is_clear_of_every_legend_and_text_in_the_saved_image(layout):
    if layout == "pca legend":
        fig = _pca_like_figure()
    else:
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.plot([0, 1], [0, 1], label="60 dB, malignant")
        ax.set_title("a title across the whole width of the axes")
        ax.legend(loc="lower right" if layout != "full figure" else "upper right")
        ax.set_xlabel("x")
        fig.tight_layout(pad=0.1)
    plots.label_synthetic(fig, "SYNTHETIC DATA · RANDOM WEIGHTS")
    assert plots.stamp_collisions(fig) == [], "measured as saved with a tight bounding box"
    assert plots.stamp_collisions(fig, tight=False) == []


def test_stamp_collisions_reports_a_stamp_over_a_legend():
    fig = _pca_like_figure()
    fig.canvas.draw()
    legend = fig.legends[0].get_window_extent(fig.canvas.get_renderer())
    x, y = fig.transFigure.inverted().transform(((legend.x0 + legend.x1) / 2, (legend.y0 + legend.y1) / 2))
    fig.text(x, y, "SYNTHETIC DATA", gid=plots.STAMP_GID, ha="center", va="center")
    found = plots.stamp_collisions(fig, tight=False)
    assert found and "legend" in found[0] and "60 dB, malignant" in found[0]


def test_a_second_stamp_replaces_the_first():
    fig, ax = plt.subplots()
    plots.label_synthetic(fig)
    plots.label_synthetic(fig, "RANDOM WEIGHTS")
    assert _stamp(fig).get_text() == "RANDOM WEIGHTS"


# --- heat map -----------------------------------------------------------------


def test_heatmap_colour_scale_shows_values_below_chance():
    vals = np.full((4, 4), 0.8)
    vals[0, 1] = 0.383
    fig, ax = plt.subplots()
    plots.auc_heatmap(ax, _matrix(vals))
    mesh = ax.collections[0]
    assert mesh.norm.vmin == 0.0 and mesh.norm.vmax == 1.0
    # 0.383 and 0.5 get visibly different colours
    c383, c50 = mesh.cmap(mesh.norm(0.383)), mesh.cmap(mesh.norm(0.5))
    assert np.abs(np.subtract(c383, c50)).max() > 0.1
    annotations = [t.get_text() for t in ax.texts]
    assert "0.383" in annotations and len(annotations) == 16
    assert all(t.get_fontsize() >= 9 for t in ax.texts)


def test_heatmap_orders_all_last_and_names_the_axes():
    fig, ax = plt.subplots()
    plots.auc_heatmap(ax, _matrix(np.eye(4) * 0.2 + 0.6), cbar=False)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["40dB", "50dB", "60dB", "ALL"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["40dB", "50dB", "60dB", "ALL"]
    assert ax.get_ylabel() == "training set" and ax.get_xlabel() == "test set"


# --- Bland–Altman -------------------------------------------------------------


def test_bland_altman_has_a_legend_naming_classes_and_lines():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 1, 30), rng.uniform(0, 1, 30)
    labels = np.arange(30) % 2
    fig, ax = plt.subplots()
    plots.bland_altman_plot(ax, a, b, labels=labels)
    leg = ax.get_legend()
    assert leg is not None
    names = [t.get_text() for t in leg.get_texts()]
    assert "benign lesion" in names and "malignant lesion" in names
    md = float(np.mean(a - b))
    assert f"mean difference {md:+.3f}" in names
    assert any("limits of agreement" in n for n in names)
    ys = sorted(line.get_ydata()[0] for line in ax.get_lines())
    sd = np.std(a - b, ddof=1)
    np.testing.assert_allclose(ys, [md - 1.96 * sd, md, md + 1.96 * sd])


# --- Figure 3 -----------------------------------------------------------------


def test_pipeline_has_no_placeholders_and_every_box_is_connected():
    fig, ax = plt.subplots(figsize=(8, 3.4))
    plots.evaluation_pipeline(ax, (40, 50, 60))
    boxes = [t for t in ax.texts if t.get_bbox_patch() is not None]
    texts = " ".join(t.get_text() for t in ax.texts)
    assert "{" not in texts and "}" not in texts
    for name in ("Train40dB", "Train60dB", "TrainALL", "Test50dB", "TestALL"):
        assert name in texts
    arrows = [c for c in ax.get_children() if type(c).__name__ == "Annotation"]
    ends = {id(a.xycoords) for a in arrows} | {id(a.anncoords) for a in arrows}
    unconnected = [b.get_text() for b in boxes if id(b) not in ends]
    assert not unconnected, unconnected
    assert len(boxes) == 3 + 6  # raw, 3 B-modes, crop, CNN, train, test, AUC


# --- image grid ---------------------------------------------------------------


def test_image_grid_wraps_into_rows():
    fig = plt.figure(figsize=(8, 4))
    imgs = [np.full((8, 8), k * 20, np.uint8) for k in range(7)]
    axes = plots.image_grid(fig, imgs, [f"{k} dB" for k in range(7)], ncols=4)
    assert len(axes) == 7 and len(fig.axes) == 7
    rows = {round(ax.get_position().y0, 3) for ax in axes}
    assert len(rows) == 2


# --- the dynamic-range explorer's frames ---------------------------------------


def test_explorer_frames_keep_the_histogram_inside_its_axes_with_a_db_colour_bar(monkeypatch):
    """Every frame, 20 dB (most of the scan black) included, is checked as it is saved."""
    from matplotlib.figure import Figure

    rng = np.random.default_rng(0)
    env = rng.rayleigh(size=(300, 60)) * np.exp(-np.linspace(0, 4, 300))[:, None]
    roi = np.zeros(env.shape, bool)
    roi[120:180, 20:40] = True
    env[roi] *= 0.05  # a dark lesion: at 20 dB every ROI pixel is black
    frames, real_savefig = [], Figure.savefig

    def checked_savefig(fig, *args, **kwargs):
        ax_img, ax_hist = fig.axes[0], fig.axes[1]
        low, high = ax_hist.get_ylim()
        heights = [p.get_height() for p in ax_hist.patches]
        roi_y = np.asarray(ax_hist.lines[0].get_ydata(), float)
        colourbar = [a for a in fig.axes if a not in (ax_img, ax_hist)]
        frames.append(
            {
                "title": ax_img.get_title(),
                "bars inside": all(h == 0 or low <= h <= high for h in heights),
                "roi inside": bool(np.all(np.isnan(roi_y) | ((roi_y >= low) & (roi_y <= high)))),
                "roi drawn": bool(np.any(~np.isnan(roi_y))),
                "dB ticks": [t.get_text() for t in colourbar[0].get_yticklabels()] if colourbar else [],
                "stamp": plots.stamp_collisions(fig, tight=False),
                "image px": ax_img.get_window_extent().width,
                "hist px": ax_hist.get_window_extent().width,
            }
        )
        return real_savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", checked_savefig)
    plots.dynamic_range_explorer(env, [20, 40, 60, 80], extent=(0, 38, 40, 0), roi=roi, synthetic=True)  # the phantom's
    assert [f["title"] for f in frames] == ["B-mode at 20 dB", "B-mode at 40 dB", "B-mode at 60 dB", "B-mode at 80 dB"]
    for f in frames:
        assert f["bars inside"] and f["roi inside"] and f["roi drawn"], f
        assert f["dB ticks"][0] in ("0", "0.0") and f["dB ticks"][-1].startswith("\u2212"), f["dB ticks"]
        assert f["stamp"] == [], f["stamp"]
        assert f["image px"] >= f["hist px"], "the B-mode panel is the larger one"
    assert frames[0]["dB ticks"][-1] == "\u221220" and frames[-1]["dB ticks"][-1] == "\u221280"


# --- which stamp a figure gets: only the caveats of what it depends on -------------------


def _stamp_text(fig):
    return [t.get_text() for t in fig.texts if t.get_gid() == plots.STAMP_GID]


def test_a_figure_without_a_network_is_never_stamped_random_weights():
    from uslib.data import Dataset

    random = [("vgg19", {"kind": "random"})]
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1], [0, 1])
    assert plots.stamp_caveat(fig, Dataset([], synthetic=True)) == "SYNTHETIC DATA"
    assert _stamp_text(fig) == ["SYNTHETIC DATA"]
    fig2, ax2 = plt.subplots(figsize=(4, 3))
    ax2.plot([0, 1], [0, 1])
    assert plots.stamp_caveat(fig2, Dataset([], synthetic=True), random) == "SYNTHETIC DATA · RANDOM WEIGHTS"
    assert _stamp_text(fig2) == ["SYNTHETIC DATA · RANDOM WEIGHTS"]
    fig3, ax3 = plt.subplots(figsize=(4, 3))
    ax3.plot([0, 1], [0, 1])
    assert plots.stamp_caveat(fig3, Dataset([], synthetic=False)) == ""
    assert _stamp_text(fig3) == [], "real data and no network: nothing to stamp"
