"""Figures of the book. Each function draws on axes the caller gives it.

The chapters call these so that a figure looks the same wherever it appears;
every function takes the data it shows (nothing is read from disk here).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

__all__ = [
    "mapping_functions",
    "show_bmode",
    "evaluation_pipeline",
    "auc_heatmap",
    "bland_altman_plot",
    "roc_plot",
    "label_synthetic",
    "class_strips",
]


def class_strips(ax, values, labels, *, ylabel: str = "", title: str | None = None, reference=None,
                 reference_label: str | None = None):
    """One jittered strip of points per class (benign, malignant) with the class medians.

    ``reference``: an optional horizontal line (e.g. a theoretical value).
    """
    values = np.asarray(values, dtype=float)
    labels = np.asarray(labels).astype(int)
    rng = np.random.default_rng(0)
    for k, (name, colour) in enumerate((("benign", "C0"), ("malignant", "C3"))):
        v = values[labels == k]
        ax.scatter(k + rng.uniform(-0.15, 0.15, v.size), v, s=12, color=colour, alpha=0.7)
        if v.size:
            ax.plot([k - 0.3, k + 0.3], [np.median(v)] * 2, color="k", lw=1.5)
    if reference is not None:
        ax.axhline(reference, color="0.4", ls="--", lw=1, label=reference_label)
        if reference_label:
            ax.legend(fontsize=8, loc="best")
    ax.set_xticks([0, 1], ["benign", "malignant"])
    ax.set_xlim(-0.6, 1.6)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def label_synthetic(fig, text: str = "SYNTHETIC DATA") -> None:
    """Stamp a figure whose content comes from simulated data or random weights."""
    fig.text(0.995, 0.005, text, ha="right", va="bottom", fontsize=8, color="0.35",
             bbox=dict(boxstyle="round,pad=0.2", fc="#fff3cd", ec="#d39e00", lw=0.6))


def mapping_functions(ax, dynamic_ranges_db: Sequence[float] = (40, 50, 60), *, min_ratio_db: float = -80.0):
    """The paper's Figure 1: grey level against normalised amplitude A/A_max.

    Uses :func:`uslib.reconstruction.gray_levels` on 20·log10(A/A_max).
    """
    from .reconstruction import gray_levels

    ratio = np.logspace(min_ratio_db / 20, 0, 500)
    db = 20 * np.log10(ratio)
    for dr in dynamic_ranges_db:
        ax.plot(ratio, gray_levels(db, dr), label=f"{dr:g} dB")
    ax.set_xscale("log")
    ax.set_xlabel(r"normalised amplitude $A/A_\mathrm{max}$")
    ax.set_ylabel("grey level")
    ax.set_ylim(-5, 260)
    ax.legend(title="dynamic range")
    ax.grid(True, which="both", alpha=0.3)
    return ax


def show_bmode(ax, image, *, extent=None, roi=None, title: str | None = None):
    """A B-mode image (uint8) in grey with mm axes, optionally the ROI outline."""
    ax.imshow(image, cmap="gray", vmin=0, vmax=255, extent=extent, aspect="equal", interpolation="nearest")
    if roi is not None and np.any(roi):
        n_z, n_x = roi.shape
        if extent is not None:
            x = np.linspace(extent[0], extent[1], n_x)
            z = np.linspace(extent[3], extent[2], n_z)
        else:
            x, z = np.arange(n_x), np.arange(n_z)
        ax.contour(x, z, roi.astype(float), levels=[0.5], colors="#ff7f0e", linewidths=0.8)
    if extent is not None:
        ax.set_xlabel("lateral [mm]")
        ax.set_ylabel("depth [mm]")
    if title:
        ax.set_title(title)
    return ax


def evaluation_pipeline(ax, dynamic_ranges_db: Sequence[float] = (40, 50, 60)):
    """The paper's Figure 3: raw data → reconstruction at each DR → CNN → SVM → train/test."""
    ax.set_axis_off()
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 6)
    box = dict(boxstyle="round,pad=0.35", fc="#eef4fb", ec="#1f77b4")
    ax.text(0.8, 3, "raw RF\ndata", ha="center", va="center", bbox=box)
    n = len(dynamic_ranges_db)
    ys = np.linspace(5, 1, n)
    for y, dr in zip(ys, dynamic_ranges_db):
        ax.annotate("", xy=(2.4, y), xytext=(1.4, 3), arrowprops=dict(arrowstyle="->", color="0.4"))
        ax.text(3.1, y, f"B-mode\n{dr:g} dB", ha="center", va="center", bbox=box)
        ax.annotate("", xy=(4.6, 3), xytext=(3.8, y), arrowprops=dict(arrowstyle="->", color="0.4"))
    ax.text(5.3, 3, "crop ±margin\nresize\nCNN features", ha="center", va="center", bbox=box)
    ax.annotate("", xy=(6.9, 4.2), xytext=(6.1, 3.2), arrowprops=dict(arrowstyle="->", color="0.4"))
    ax.annotate("", xy=(6.9, 1.8), xytext=(6.1, 2.8), arrowprops=dict(arrowstyle="->", color="0.4"))
    ax.text(7.9, 4.4, "train lesions\nTrain{DR}/TrainALL\n→ linear SVM", ha="center", va="center",
            bbox=dict(boxstyle="round,pad=0.35", fc="#e8f5e9", ec="#2ca02c"))
    ax.text(7.9, 1.6, "test lesions\nTest{DR}/TestALL\n→ P(malignant)", ha="center", va="center",
            bbox=dict(boxstyle="round,pad=0.35", fc="#fdecea", ec="#d62728"))
    ax.annotate("", xy=(7.9, 2.3), xytext=(7.9, 3.7), arrowprops=dict(arrowstyle="->", color="0.2"))
    ax.text(9.6, 3, "AUC per\ntrain × test", ha="center", va="center", bbox=box)
    return ax


def auc_heatmap(ax, table, *, value: str = "auc", title: str | None = None, vmin=0.5, vmax=1.0, fmt=".3f"):
    """Heat map of a tidy (train, test, auc) table."""
    import seaborn as sns

    pivot = table.pivot(index="train", columns="test", values=value)
    order_r = [r for r in pivot.index if r != "TrainALL"] + [r for r in pivot.index if r == "TrainALL"]
    order_c = [c for c in pivot.columns if c != "TestALL"] + [c for c in pivot.columns if c == "TestALL"]
    pivot = pivot.loc[order_r, order_c]
    sns.heatmap(pivot, annot=True, fmt=fmt, cmap="viridis", vmin=vmin, vmax=vmax, ax=ax,
                cbar_kws={"label": value.upper()})
    ax.set_xlabel("")
    ax.set_ylabel("")
    if title:
        ax.set_title(title)
    return ax


def bland_altman_plot(ax, a, b, *, title: str | None = None, labels=None):
    """Bland–Altman plot of paired probabilities ``a`` and ``b`` (the paper's Figure 4)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    mean, diff = (a + b) / 2, a - b
    md, sd = diff.mean(), diff.std(ddof=1)
    colors = None if labels is None else np.where(np.asarray(labels) == 1, "#d62728", "#1f77b4")
    ax.scatter(mean, diff, s=14, c=colors, alpha=0.8, edgecolors="none")
    for y, style in ((md, "-"), (md + 1.96 * sd, "--"), (md - 1.96 * sd, "--")):
        ax.axhline(y, color="0.3", ls=style, lw=1)
    ax.set_xlabel("mean of the two probabilities")
    ax.set_ylabel("difference (Train40 − Train60)")
    ax.set_xlim(0, 1)
    if title:
        ax.set_title(title)
    return ax


def roc_plot(ax, curves: Mapping[str, tuple], *, title: str | None = None):
    """ROC curves; ``curves`` maps a legend name to (fpr, tpr, auc[, point]) (Figure 5)."""
    for name, c in curves.items():
        fpr, tpr, auc = c[:3]
        (line,) = ax.plot(fpr, tpr, lw=1.6, label=f"{name}: AUC = {auc:.3f}")
        if len(c) > 3 and c[3] is not None:
            ax.plot(*c[3], "o", color=line.get_color(), ms=6)
    ax.plot([0, 1], [0, 1], ls=":", color="0.5")
    ax.set_xlabel("1 − specificity")
    ax.set_ylabel("sensitivity")
    ax.set_aspect("equal")
    ax.legend(loc="lower right")
    if title:
        ax.set_title(title)
    return ax
