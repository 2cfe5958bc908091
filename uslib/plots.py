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
    "image_grid",
    "STAMP_GID",
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
            ax.legend(fontsize=9, loc="best")
    ax.set_xticks([0, 1], ["benign", "malignant"])
    ax.set_xlim(-0.6, 1.6)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


STAMP_GID = "synthetic-stamp"


def label_synthetic(fig, text: str = "SYNTHETIC DATA") -> None:
    """Stamp a figure whose content comes from simulated data or random weights.

    The stamp goes *below* everything already drawn (tick labels, axis labels,
    legends), right-aligned, so it covers nothing; the notebooks' inline
    backend saves figures with a tight bounding box, which takes it in. Call it
    last, after ``tight_layout`` or any other change of layout. The text
    carries the gid :data:`STAMP_GID`.
    """
    fig.canvas.draw()  # run the layout engine so the extents below are final
    renderer = fig.canvas.get_renderer()
    others = [t for t in fig.texts if t.get_gid() == STAMP_GID]
    for t in others:  # a second stamp replaces the first
        t.remove()
    bbox = fig.get_tightbbox(renderer)  # inches, everything drawn so far
    w_in, h_in = fig.get_size_inches()
    gap_in = 0.15  # clear of the lowest text, legend rows included
    fig.text(bbox.x1 / w_in, (bbox.y0 - gap_in) / h_in, text, ha="right", va="top", fontsize=9, color="0.25",
             gid=STAMP_GID, bbox=dict(boxstyle="round,pad=0.25", fc="#fff3cd", ec="#d39e00", lw=0.6))


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


def evaluation_pipeline(ax, dynamic_ranges_db: Sequence[float] = (40, 50, 60), *, n_splits: int = 5):
    """The paper's Figure 3: raw data → reconstruction at each DR → CNN → SVM → train/test → AUC.

    Every box is joined to the next by an arrow drawn between the boxes
    themselves (``annotate`` with the text artists as coordinates), so no box
    can float unconnected; training and test sets are named from
    ``dynamic_ranges_db`` (Train40dB, …, TrainALL).
    """
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)

    def box(x, y, text, fc="#eef4fb", ec="#1f77b4"):
        return ax.text(x, y, text, ha="center", va="center", fontsize=9,
                       bbox=dict(boxstyle="round,pad=0.4", fc=fc, ec=ec))

    def arrow(a, b, xa=1.0, ya=0.5, xb=0.0, yb=0.5, **kw):
        ax.annotate("", xy=(xb, yb), xycoords=b, xytext=(xa, ya), textcoords=a,
                    arrowprops=dict(arrowstyle="->", color=kw.get("color", "0.35"), lw=1.1,
                                    shrinkA=2, shrinkB=2))

    names = [f"{d:g}" for d in dynamic_ranges_db]
    trains = ", ".join(f"Train{n}dB" for n in names) + ", TrainALL"
    tests = ", ".join(f"Test{n}dB" for n in names) + ", TestALL"
    raw = box(0.06, 0.5, "raw RF\n(2 scans\nper lesion)")
    ys = np.linspace(0.82, 0.18, len(names)) if len(names) > 1 else np.array([0.5])
    bm = [box(0.22, y, f"B-mode\n{n} dB") for y, n in zip(ys, names)]
    crop = box(0.38, 0.5, "crop ROI\n± margin,\nresize")
    cnn = box(0.53, 0.5, "CNN\nfeatures")
    green, red = dict(fc="#e8f5e9", ec="#2ca02c"), dict(fc="#fdecea", ec="#d62728")
    train = box(0.72, 0.8, "training lesions\nlinear SVM fitted on\n" + _wrap_names(trains), **green)
    test = box(0.72, 0.2, "test lesions\nP(malignant) on\n" + _wrap_names(tests), **red)
    auc = box(0.92, 0.2, "AUC per\ntrain × test\npair")
    for b in bm:
        arrow(raw, b)
        arrow(b, crop)
    arrow(crop, cnn)
    arrow(cnn, train, xa=0.8, ya=1.0, xb=0.0, yb=0.5)
    arrow(cnn, test, xa=0.8, ya=0.0, xb=0.0, yb=0.5)
    arrow(train, test, xa=0.5, ya=0.0, xb=0.5, yb=1.0)
    arrow(test, auc)
    ax.text(0.63, 0.5, f"patient-level\n{n_splits}-fold split", ha="left", va="center", fontsize=8,
            color="0.3", style="italic")
    return ax


def _wrap_names(names: str, per_line: int = 2) -> str:
    """'A, B, C, D' → 'A, B,\nC, D' (two names a line, for the pipeline's boxes)."""
    parts = [p.strip() for p in names.split(",")]
    lines = [", ".join(parts[i:i + per_line]) for i in range(0, len(parts), per_line)]
    return ",\n".join(lines)


def auc_heatmap(ax, table, *, value: str = "auc", title: str | None = None, vmin=0.0, vmax=1.0, fmt=".3f",
                cmap: str = "RdBu", cbar: bool = True, annot_fontsize: float = 10):
    """Heat map of a tidy (train, test, auc) table.

    The colour scale runs from ``vmin`` to ``vmax`` (0 to 1 by default) on a
    diverging map whose white middle is chance (0.5): an AUC below chance is
    red, above it blue, so a value under 0.5 cannot pass for 0.5.
    """
    import seaborn as sns

    pivot = table.pivot(index="train", columns="test", values=value)
    order_r = [r for r in pivot.index if r != "TrainALL"] + [r for r in pivot.index if r == "TrainALL"]
    order_c = [c for c in pivot.columns if c != "TestALL"] + [c for c in pivot.columns if c == "TestALL"]
    pivot = pivot.loc[order_r, order_c]
    # the axis titles say "training set" / "test set": tick labels keep only the range ("40dB", "ALL")
    pivot = pivot.rename(index=lambda r: str(r).removeprefix("Train"), columns=lambda c: str(c).removeprefix("Test"))
    sns.heatmap(pivot, annot=True, fmt=fmt, cmap=cmap, vmin=vmin, vmax=vmax, center=(vmin + vmax) / 2, ax=ax,
                cbar=cbar, cbar_kws={"label": value.upper() + (" (0.5 = chance)" if value == "auc" else "")} if cbar else None,
                annot_kws={"fontsize": annot_fontsize}, linewidths=0.5, linecolor="white")
    ax.set_xlabel("test set")
    ax.set_ylabel("training set")
    ax.tick_params(labelsize=9)
    ax.tick_params(axis="y", labelrotation=0)
    ax.tick_params(axis="x", labelrotation=0)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def bland_altman_plot(ax, a, b, *, title: str | None = None, labels=None,
                      difference_label: str = "difference (Train40 − Train60)", legend: bool = True):
    """Bland–Altman plot of paired probabilities ``a`` and ``b`` (the paper's Figure 4).

    Points are lesions (red malignant, blue benign when ``labels`` are given);
    the solid line is the mean difference, the dashed lines the 95 % limits of
    agreement (mean ± 1.96 SD). A legend names all of them.
    """
    from matplotlib.lines import Line2D

    a, b = np.asarray(a, float), np.asarray(b, float)
    mean, diff = (a + b) / 2, a - b
    md, sd = diff.mean(), diff.std(ddof=1)
    handles = []
    if labels is None:
        ax.scatter(mean, diff, s=16, color="0.3", alpha=0.8, edgecolors="none")
        handles.append(Line2D([], [], ls="", marker="o", color="0.3", label="lesion"))
    else:
        labels = np.asarray(labels).astype(int)
        for k, (name, colour) in enumerate((("benign", "#1f77b4"), ("malignant", "#d62728"))):
            sel = labels == k
            ax.scatter(mean[sel], diff[sel], s=16, color=colour, alpha=0.8, edgecolors="none")
            handles.append(Line2D([], [], ls="", marker="o", color=colour, label=f"{name} lesion"))
    ax.axhline(md, color="0.2", ls="-", lw=1)
    for y in (md + 1.96 * sd, md - 1.96 * sd):
        ax.axhline(y, color="0.2", ls="--", lw=1)
    handles += [Line2D([], [], color="0.2", ls="-", lw=1, label=f"mean difference {md:+.3f}"),
                Line2D([], [], color="0.2", ls="--", lw=1, label="limits of agreement (±1.96 SD)")]
    ax.set_xlabel("mean of the two probabilities")
    ax.set_ylabel(difference_label)
    ax.set_xlim(0, 1)
    if legend:  # below the axes, where it hides no point
        ax.legend(handles=handles, fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=1,
                  frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
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
    ax.legend(loc="lower right", fontsize=9)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def image_grid(fig, images, titles: Sequence[str] = (), *, ncols: int = 5, cmap: str | None = None):
    """Images in a grid of ``ncols`` columns (as many rows as needed), axes off.

    For a row of small panels that would otherwise be a strip too wide for the
    page (e.g. one lesion at every test dynamic range). ``fig`` may be a
    figure or a subfigure. Returns the list of axes that hold an image (the
    unused cells of the last row are removed).
    """
    images = list(images)
    titles = list(titles) + [""] * (len(images) - len(titles))
    ncols = max(1, min(ncols, len(images)))
    nrows = -(-len(images) // ncols)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    used = []
    for k, ax in enumerate(axes):
        if k >= len(images):
            ax.remove()
            continue
        img = np.asarray(images[k])
        if img.ndim == 2:
            ax.imshow(img, cmap=cmap or "gray", vmin=0, vmax=255)
        else:
            ax.imshow(img)
        ax.set_title(titles[k], fontsize=9)
        ax.set_axis_off()
        used.append(ax)
    return used
