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
    "bmode_colorbar",
    "db_ticks",
    "dynamic_range_explorer",
    "bmode_grid",
    "spectrum_plot",
    "psf_image",
    "envelope_histogram",
    "depth_profile_plot",
    "evaluation_pipeline",
    "auc_heatmap",
    "bland_altman_plot",
    "roc_plot",
    "label_synthetic",
    "stamp_caveat",
    "stamp_collisions",
    "class_strips",
    "image_grid",
    "STAMP_GID",
]


def class_strips(
    ax,
    values,
    labels,
    *,
    ylabel: str = "",
    title: str | None = None,
    reference=None,
    reference_label: str | None = None,
):
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


def _occupied_boxes(fig, renderer, skip=()):
    """Display-space boxes of what a reader reads: every axes (data area, ticks, labels, title, legend), figure
    legends and figure texts; ``skip``: artists to leave out (the stamp itself)."""
    boxes = []
    for artist in [*fig.axes, *fig.legends, *fig.texts]:
        if artist in skip or not artist.get_visible():
            continue
        if hasattr(artist, "get_text") and not artist.get_text():
            continue
        box = artist.get_tightbbox(renderer) if hasattr(artist, "get_tightbbox") else artist.get_window_extent(renderer)
        if box is not None and box.width > 0 and box.height > 0:
            boxes.append((artist, box))
    for sub in getattr(fig, "subfigs", []) or []:
        boxes += _occupied_boxes(sub, renderer, skip)
    return boxes


def _stamp_box(stamp, renderer):
    """The stamp's box on the canvas, its rounded frame included."""
    patch = stamp.get_bbox_patch()
    box = stamp.get_window_extent(renderer)
    if patch is not None:
        stamp.update_bbox_position_size(renderer)
        box = type(box).union([box, patch.get_window_extent(renderer)])
    return box


def _describe(artist) -> str:
    if hasattr(artist, "get_text"):
        return f"{type(artist).__name__} {artist.get_text()!r}"
    if hasattr(artist, "texts") and hasattr(artist, "legend_handles"):
        return "legend " + repr([t.get_text() for t in artist.texts])
    if hasattr(artist, "get_title"):
        return f"axes {artist.get_title()!r}"
    return type(artist).__name__


def stamp_collisions(fig, *, tight: bool = True) -> list[str]:
    """What the figure's stamp (:func:`label_synthetic`) overlaps, as the saved image shows it; [] when nothing.

    With ``tight`` the figure is saved (to memory) with ``bbox_inches="tight"``, as the notebooks' inline
    backend and ``glue`` save it, and the boxes are measured during that drawing: cropping moves legends
    anchored to the figure's edges, so a stamp clear of them on the canvas may not be clear in the image.
    A stamp (partly) outside the canvas counts as a collision too. No stamp: [].
    """
    import io

    stamps = [t for t in fig.texts if t.get_gid() == STAMP_GID]
    if not stamps:
        return []
    found: list[str] = []

    def measure(renderer):
        for stamp in stamps:
            box = _stamp_box(stamp, renderer)
            canvas = fig.bbox
            if (
                box.x0 < canvas.x0 - 0.5
                or box.y0 < canvas.y0 - 0.5
                or box.x1 > canvas.x1 + 0.5
                or box.y1 > canvas.y1 + 0.5
            ):
                found.append("the stamp runs past the figure's edge")
            for artist, other in _occupied_boxes(fig, renderer, skip=stamps):
                if box.overlaps(other):
                    found.append(f"the stamp overlaps {_describe(artist)}")

    if not tight:
        fig.canvas.draw()
        measure(fig.canvas.get_renderer())
        return found
    cid = fig.canvas.mpl_connect("draw_event", lambda event: measure(event.renderer))
    try:
        fig.savefig(io.BytesIO(), format="png", bbox_inches="tight")
    finally:
        fig.canvas.mpl_disconnect(cid)
    return found


def label_synthetic(fig, text: str = "SYNTHETIC DATA") -> None:
    """Stamp a figure whose content comes from simulated data or random weights, where it covers nothing.

    The stamp goes into a free corner of the canvas: the first of top right,
    bottom right, top left, bottom left whose box overlaps no axes (data,
    ticks, labels, titles, legends), figure legend or figure text. When no
    corner is free, the figure grows by a strip at the top, everything keeping
    its place in inches, and the stamp goes into that strip. It stays inside
    the canvas, so saving with a tight bounding box (the notebooks' inline
    backend, ``glue``) moves nothing onto it; :func:`stamp_collisions` checks
    the saved image. Call it last, after ``tight_layout`` or any other change
    of layout. The text carries the gid :data:`STAMP_GID`; a second stamp
    replaces the first.
    """
    for t in [t for t in fig.texts if t.get_gid() == STAMP_GID]:
        t.remove()
    fig.canvas.draw()  # run the layout engine so the extents below are final
    renderer = fig.canvas.get_renderer()
    margin_px = 4.0 * fig.dpi / 72
    stamp = fig.text(
        1,
        1,
        text,
        ha="right",
        va="top",
        fontsize=9,
        color="0.25",
        gid=STAMP_GID,
        bbox=dict(boxstyle="round,pad=0.25", fc="#fff3cd", ec="#d39e00", lw=0.6),
    )
    occupied = [box for _, box in _occupied_boxes(fig, renderer, skip=[stamp])]

    def place(ha, va) -> bool:
        w, h = fig.bbox.width, fig.bbox.height
        stamp.set_horizontalalignment(ha)
        stamp.set_verticalalignment(va)
        # the frame reaches past the text: measure once at the anchor, then shift inside by the overhang
        stamp.set_position((0.5, 0.5))
        box = _stamp_box(stamp, renderer)
        ox = max(box.x1 - stamp.get_window_extent(renderer).x1, 0) + margin_px
        oy = max(box.y1 - stamp.get_window_extent(renderer).y1, 0) + margin_px
        x = 1 - ox / w if ha == "right" else ox / w
        y = 1 - oy / h if va == "top" else oy / h
        stamp.set_position((x, y))
        box = _stamp_box(stamp, renderer)
        return not any(box.overlaps(o) for o in occupied)

    for ha, va in (("right", "top"), ("right", "bottom"), ("left", "top"), ("left", "bottom")):
        if place(ha, va):
            return
    # no free corner: a strip at the top, as high as the stamp and two margins
    stamp.set_position((0.5, 0.5))
    strip_in = (_stamp_box(stamp, renderer).height + 2 * margin_px) / fig.dpi
    w_in, h_in = fig.get_size_inches()
    scale = h_in / (h_in + strip_in)
    for ax in fig.axes:  # colour bars included: each keeps its place in inches
        pos = ax.get_position()
        ax.set_position([pos.x0, pos.y0 * scale, pos.width, pos.height * scale])
    for t in fig.texts:
        if t is not stamp and t.get_transform() == fig.transFigure:
            x, y = t.get_position()
            t.set_position((x, y * scale))
    fig.set_size_inches(w_in, h_in + strip_in, forward=False)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    occupied[:] = [box for _, box in _occupied_boxes(fig, renderer, skip=[stamp])]
    place("right", "top")


def stamp_caveat(fig, dataset, feature_sets: Sequence = ()) -> str:
    """Stamp a figure with the caveats of what it depends on, and nothing else; the stamp's text ('' when none).

    The stamp is decided here, from what the caller passes: the data set the
    figure shows and the feature sets (networks' outputs) it was computed
    from. A figure drawn from the data alone (a B-mode, a spectrum, a crop, a
    parametric map) passes no feature sets, so it says ``SYNTHETIC DATA`` at
    most, never ``RANDOM WEIGHTS``; a figure of features or of classifiers
    trained on them passes those feature sets
    (:func:`uslib.captions.figure_caveat` words the caveat). Call it last, as
    :func:`label_synthetic`, which places the stamp.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    dataset : uslib.data.Dataset
        The data the figure shows (its ``synthetic`` flag decides ``SYNTHETIC DATA``).
    feature_sets : sequence of FeatureSet or (backbone, weights dict)
        Only the networks the figure's content comes from; empty for a figure without one.
    """
    from .captions import figure_caveat

    text = figure_caveat(dataset, feature_sets)
    if text:
        label_synthetic(fig, text)
    return text


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


def show_bmode(
    ax,
    image,
    *,
    extent=None,
    roi=None,
    title: str | None = None,
    dynamic_range_db: float | None = None,
    colorbar: bool = False,
):
    """A B-mode image (uint8) in grey with mm axes, optionally the ROI outline and a colour bar.

    Parameters
    ----------
    ax : matplotlib Axes
    image : ndarray of uint8, shape (n_samples, n_lines)
    extent : (left, right, bottom, top) in mm, optional
    roi : ndarray of bool, optional
        Lesion mask, drawn as an orange outline.
    title : str, optional
    dynamic_range_db : float, optional
        The image's dynamic range: with ``colorbar``, the bar is labelled in dB
        re A_max (grey 0 = −DR dB, 255 = 0 dB); without it, in grey levels.
    colorbar : bool
        Add a colour bar beside the image (:func:`bmode_colorbar`).
    """
    im = ax.imshow(image, cmap="gray", vmin=0, vmax=255, extent=extent, aspect="equal", interpolation="nearest")
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
    if colorbar:
        bmode_colorbar(im, ax, dynamic_range_db)
    return ax


def bmode_colorbar(
    mappable, ax, dynamic_range_db: float | None = None, *, orientation: str = "vertical", step_db: float | None = None
):
    """Colour bar of a B-mode image: grey levels 0–255, ticked in dB re A_max when the DR is given.

    Grey level g shows ``g · DR / 255 − DR`` dB (the mapping of
    :func:`uslib.reconstruction.gray_levels`), so the bar's bottom is −DR dB
    (black) and its top 0 dB (white).

    Parameters
    ----------
    mappable : matplotlib image (``ax.imshow``'s return value)
    ax : Axes or sequence of Axes
        Where the bar takes its room from.
    dynamic_range_db : float, optional
    orientation : {"vertical", "horizontal"}
    step_db : float, optional
        Tick spacing in dB; default 10 dB (5 dB below a 30 dB range).

    Returns
    -------
    matplotlib.colorbar.Colorbar
    """
    fig = np.atleast_1d(ax).ravel()[0].figure
    kw = dict(fraction=0.046, pad=0.03) if orientation == "vertical" else dict(fraction=0.05, pad=0.03, aspect=25)
    cb = fig.colorbar(mappable, ax=ax, orientation=orientation, **kw)
    if dynamic_range_db is None:
        cb.set_ticks([0, 64, 128, 192, 255])
        cb.set_label("grey level")
        return cb
    ticks, labels = db_ticks(dynamic_range_db, step_db)
    cb.set_ticks(ticks, labels=labels)
    cb.set_label("dB re $A_\\mathrm{max}$")
    return cb


def db_ticks(dynamic_range_db: float, step_db: float | None = None) -> tuple[np.ndarray, list[str]]:
    """Grey-level positions and dB labels of a B-mode colour bar: 0 dB (white) down to −DR dB (black).

    Ticks every ``step_db`` (10 dB, or 5 dB below a 30 dB range); −DR is
    always ticked, and a tick closer to it than half a step is dropped.

    Examples
    --------
    >>> pos, labels = db_ticks(20)
    >>> labels, pos.round(1).tolist()
    (['0', '−5', '−10', '−15', '−20'], [255.0, 191.2, 127.5, 63.8, 0.0])
    >>> db_ticks(43)[1]
    ['0', '−10', '−20', '−30', '−43']
    """
    dr = float(dynamic_range_db)
    step = step_db if step_db is not None else (10.0 if dr >= 30 else 5.0)
    ticks_db = np.arange(0.0, -dr - 1e-9, -step)
    if ticks_db[-1] > -dr + 1e-9:  # -DR (black) is always ticked; drop a tick crowding it
        if ticks_db[-1] + dr < step / 2:
            ticks_db = ticks_db[:-1]
        ticks_db = np.append(ticks_db, -dr)
    return (ticks_db + dr) * 255.0 / dr, [f"{v:g}".replace("-", "\u2212") for v in ticks_db]


def dynamic_range_explorer(
    env,
    dynamic_ranges_db: Sequence[float],
    *,
    extent=None,
    roi=None,
    initial_db: float | None = None,
    figsize=(8.4, 4.0),
    dpi: int = 90,
    synthetic: bool = False,
    element_id: str = "dr-explorer",
    image_format: str = "jpeg",
) -> str:
    """A self-contained HTML slider over dynamic ranges: B-mode image and grey-level histogram per DR.

    Each dynamic range is drawn once, as an image embedded in the page (base64),
    and a few lines of JavaScript show the frame that the range input selects.
    The result needs no kernel and no network: it works in the static book.
    (Matplotlib's ``FuncAnimation.to_jshtml`` does the same but links its
    button icons from a CDN, which an offline page must not do, hence this.)

    Parameters
    ----------
    env : ndarray, shape (n_samples, n_lines)
        Envelope of one scan (:func:`uslib.reconstruction.envelope`).
    dynamic_ranges_db : sequence of float
        One frame per value, in slider order.
    extent : (left, right, bottom, top) in mm, optional
    roi : ndarray of bool, optional
        Lesion mask: outlined on the image; its pixels get their own histogram.
    initial_db : float, optional
        Frame shown first (default: the middle one).
    figsize, dpi :
        Size of each frame; small, so that the page stays light.
    synthetic : bool
        Stamp every frame with "SYNTHETIC DATA".
    element_id : str
        ``id`` of the outer ``div``; the range input and the image are inside it.
    image_format : {"jpeg", "png"}
        Encoding of the frames; JPEG keeps a page of speckle images a few
        times lighter than PNG.

    Returns
    -------
    str
        HTML: ``<div id=element_id>`` holding an ``input[type=range]``, the
        current value and an ``img``, then a ``<script>``.
    """
    import base64
    import html
    import io
    import json

    import matplotlib.pyplot as plt

    from .reconstruction import gray_levels, log_compress, to_uint8

    drs = [float(d) for d in dynamic_ranges_db]
    if not drs:
        raise ValueError("dynamic_ranges_db is empty")
    if image_format not in ("png", "jpeg"):
        raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}")
    start = len(drs) // 2 if initial_db is None else int(np.argmin(np.abs(np.asarray(drs) - initial_db)))
    env = np.asarray(env, dtype=float)
    mask = None if roi is None else np.asarray(roi, dtype=bool)
    # The panel is a few hundred pixels high: drawing every row of a ~2000-row
    # scan only costs time. Rows are taken with a stride (no averaging, so the
    # grey levels shown are the B-mode's own); histograms use every pixel.
    stride = max(1, env.shape[0] // 300)
    db = log_compress(env)  # once; each frame only maps it (bmode_from_envelope would redo the log)
    centres = np.arange(0, 256, 4) + 2
    # Every frame's fractions first: the histogram's axes are fixed from them, so that no frame (20 dB, where
    # most of a scan is black, included) draws outside its axes.
    images, scan_hist, roi_hist = [], [], []
    for dr in drs:
        img = to_uint8(gray_levels(db, dr))
        images.append(img[::stride])
        scan_hist.append(np.bincount(img.ravel(), minlength=256).reshape(-1, 4).sum(axis=1) / (4.0 * img.size))
        if mask is not None and mask.any():
            roi_hist.append(np.bincount(img[mask], minlength=256).reshape(-1, 4).sum(axis=1) / (4.0 * mask.sum()))
        else:
            roi_hist.append(None)
    black = [100 * np.mean(img == 0) for img in images]
    positive = np.concatenate([h[h > 0] for h in scan_hist + [r for r in roi_hist if r is not None]])
    y_low = 10.0 ** np.floor(np.log10(max(positive.min(), 1e-9)) - 0.3)
    y_high = 3.0  # fractions are at most 0.25 per grey level; the band above holds the legend
    decades = [10.0**k for k in range(int(np.log10(y_low)), 1)]
    frames = []
    fig, (ax_img, ax_hist) = plt.subplots(1, 2, figsize=figsize, dpi=dpi, gridspec_kw=dict(width_ratios=[1.5, 1]))
    try:
        show_bmode(ax_img, images[start], extent=extent, roi=None if mask is None else mask[::stride])
        im = ax_img.images[0]
        cbar = bmode_colorbar(im, ax_img, drs[start])
        scan_bars = ax_hist.bar(centres, np.full(centres.size, y_low), width=4, color="0.35", label="whole scan")
        (roi_line,) = ax_hist.step(
            centres,
            np.full(centres.size, np.nan),
            where="mid",
            color="#ff7f0e",
            lw=1.8,
            label="inside the ROI",
            marker=".",
            ms=3,
        )
        ax_hist.set_yscale("log")
        ax_hist.set_ylim(y_low, y_high)
        ax_hist.set_xlim(0, 256)
        # Fixed ticks: the log locator is most of the drawing time of a frame.
        ax_hist.set_yticks(decades, [f"$10^{{{int(round(np.log10(d)))}}}$" for d in decades])
        ax_hist.minorticks_off()
        ax_hist.set_xlabel("grey level")
        ax_hist.set_ylabel("fraction of pixels per grey level")
        ax_hist.legend(loc="upper right", fontsize=8, ncol=2)
        # Frames are saved at the figure's own size (every frame alike, no tight box): label_synthetic finds
        # a free corner or grows the figure once, before the first frame is saved.
        fig.tight_layout()
        if synthetic:
            label_synthetic(fig)
        for k, dr in enumerate(drs):
            im.set_data(images[k])
            ticks, tick_labels = db_ticks(dr)
            cbar.set_ticks(ticks, labels=tick_labels)
            ax_img.set_title(f"B-mode at {dr:g} dB")
            for bar, h in zip(scan_bars, scan_hist[k]):
                bar.set_height(h)  # a zero-height bar is not drawn on the log axis
            if roi_hist[k] is not None:
                roi_line.set_ydata(np.where(roi_hist[k] > 0, roi_hist[k], np.nan))
            ax_hist.set_title(f"{black[k]:.1f} % of the scan is black (grey 0)", fontsize=10)
            buf = io.BytesIO()
            fig.savefig(
                buf, format=image_format, dpi=dpi, **({"pil_kwargs": {"quality": 85}} if image_format == "jpeg" else {})
            )
            frames.append(f"data:image/{image_format};base64," + base64.b64encode(buf.getvalue()).decode("ascii"))
    finally:
        plt.close(fig)
    width_px = int(round(fig.get_size_inches()[0] * dpi))
    eid = html.escape(element_id, quote=True)
    labels = [f"{d:g} dB" for d in drs]
    alt = (
        "B-mode image of one scan and its grey-level histogram at the dynamic range the slider selects "
        f"({labels[0]} to {labels[-1]})"
    )
    return f"""<div id="{eid}" class="dr-explorer" style="max-width:{width_px}px">
<label for="{eid}-range" style="display:block">Dynamic range: <output id="{eid}-value">{labels[start]}</output></label>
<input id="{eid}-range" type="range" min="0" max="{len(drs) - 1}" step="1" value="{start}"
 aria-valuetext="{labels[start]}" style="width:100%">
<img id="{eid}-img" src="{frames[start]}" alt="{html.escape(alt, quote=True)}" style="width:100%;height:auto">
</div>
<script>
(function () {{
  var frames = {json.dumps(frames)};
  var labels = {json.dumps(labels)};
  var range = document.getElementById("{eid}-range");
  var img = document.getElementById("{eid}-img");
  var out = document.getElementById("{eid}-value");
  function show() {{
    var i = Math.max(0, Math.min(frames.length - 1, parseInt(range.value, 10) || 0));
    img.src = frames[i];
    out.textContent = labels[i];
    range.setAttribute("aria-valuetext", labels[i]);
  }}
  range.addEventListener("input", show);
  range.addEventListener("change", show);
}})();
</script>
"""


def bmode_grid(fig, envelopes, dynamic_ranges_db: Sequence[float], *, extents, rois=None, row_titles=None):
    """Scans (rows) at several dynamic ranges (columns), one dB colour bar under each column.

    Parameters
    ----------
    fig : matplotlib Figure (empty)
    envelopes : sequence of ndarray
        One envelope per row (:func:`uslib.reconstruction.envelope`).
    dynamic_ranges_db : sequence of float
    extents : sequence of (left, right, bottom, top)
        Axis extents in mm, one per row.
    rois : sequence of ndarray of bool, optional
    row_titles : sequence of str, optional
        Shown as the y label of each row's first panel.

    Returns
    -------
    ndarray of Axes, shape (n_rows, n_ranges)
    """
    from .reconstruction import bmode_from_envelope

    n_rows, n_cols = len(envelopes), len(dynamic_ranges_db)
    axes = np.atleast_2d(fig.subplots(n_rows, n_cols, squeeze=False))
    rois = rois if rois is not None else [None] * n_rows
    for i, (env, extent, roi) in enumerate(zip(envelopes, extents, rois)):
        for j, dr in enumerate(dynamic_ranges_db):
            ax = axes[i, j]
            show_bmode(ax, bmode_from_envelope(env, dr), extent=extent, roi=roi, title=f"{dr:g} dB" if i == 0 else None)
            if j:
                ax.set_ylabel("")
            elif row_titles is not None:
                ax.set_ylabel(f"{row_titles[i]}\ndepth [mm]")
            if i < n_rows - 1:
                ax.set_xlabel("")
    for j, dr in enumerate(dynamic_ranges_db):
        bmode_colorbar(axes[-1, j].images[0], axes[:, j], dr, orientation="horizontal")
    return axes


def spectrum_plot(
    ax,
    freqs_hz,
    curves: Mapping[str, np.ndarray],
    *,
    f0_hz: float | None = None,
    band_hz: tuple[float, float] | None = None,
    level_db: float = -6.0,
    floor_db: float = -40.0,
):
    """Power spectra in dB against frequency in MHz, with the -6 dB level, a band and the nominal f0.

    ``curves`` maps a legend label to a power spectrum in dB; the first is
    drawn thin and grey when there are three or more (a single line's noisy
    spectrum beside averages), the others in colour with their own styles.
    """
    f_mhz = np.asarray(freqs_hz, dtype=float) / 1e6
    styles = [dict(color="C0", lw=1.8, ls="-"), dict(color="C3", lw=1.8, ls="--"), dict(color="C2", lw=1.8, ls="-.")]
    items = list(curves.items())
    if len(items) >= 3:
        label, p = items.pop(0)
        ax.plot(f_mhz, p, color="0.65", lw=0.6, label=label)
    for (label, p), st in zip(items, styles):
        ax.plot(f_mhz, p, label=label, **st)
    ax.axhline(level_db, color="k", lw=0.8, ls=":", label=f"{level_db:g} dB")
    if band_hz is not None:
        ax.axvspan(band_hz[0] / 1e6, band_hz[1] / 1e6, color="C0", alpha=0.12, label=f"{level_db:g} dB band")
    if f0_hz is not None:
        ax.axvline(f0_hz / 1e6, color="0.3", lw=1.0, ls=(0, (6, 2, 1, 2)), label="nominal $f_0$")
    ax.set_xlim(0, f_mhz[-1])
    ax.set_ylim(floor_db, 2)
    ax.set_xlabel("frequency [MHz]")
    ax.set_ylabel("power [dB re peak]")
    ax.legend(fontsize=8, loc="upper right")
    return ax


def psf_image(ax, psf, *, dz_mm: float, dx_mm: float, title: str | None = None):
    """The pulse-echo PSF (signed) on axes in mm, centred on its peak.

    The axes are stretched to fill the panel (``aspect="auto"``): the PSF is
    a few times wider than it is long, and at equal scales it would be a sliver.
    """
    psf = np.asarray(psf, dtype=float)
    n_z, n_x = psf.shape
    half_z, half_x = (n_z - 1) / 2 * dz_mm, (n_x - 1) / 2 * dx_mm
    lim = float(np.abs(psf).max())
    im = ax.imshow(
        psf,
        cmap="RdBu_r",
        vmin=-lim,
        vmax=lim,
        extent=(-half_x, half_x, half_z, -half_z),
        aspect="auto",
        interpolation="nearest",
    )
    ax.set_xlabel("lateral [mm]")
    ax.set_ylabel("depth [mm]")
    if title:
        ax.set_title(title, fontsize=10)
    return im


def envelope_histogram(ax, env, *, bins: int = 80, title: str | None = None):
    """Histogram of an envelope scaled by its RMS, against the Rayleigh density of the same RMS.

    With ``a = A / sqrt(mean A²)``, a Rayleigh envelope has density
    ``2 a exp(−a²)`` (σ² = 1/2).
    """
    a = np.asarray(env, dtype=float).ravel()
    a = a / np.sqrt(np.mean(a**2))
    ax.hist(a, bins=bins, range=(0, 3.5), density=True, color="0.6", label="phantom speckle")
    x = np.linspace(0, 3.5, 300)
    ax.plot(x, 2 * x * np.exp(-(x**2)), color="C3", lw=1.8, label="Rayleigh")
    ax.set_xlabel(r"envelope / RMS")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def depth_profile_plot(ax, depth_mm, curves: Mapping[str, np.ndarray], *, title: str | None = None):
    """Depth profiles in dB (one curve per entry, each with its own style), depth on the x axis."""
    styles = [
        dict(color="C0", lw=1.2, ls="-"),
        dict(color="C3", lw=1.5, ls="--"),
        dict(color="C2", lw=1.2, ls="-."),
        dict(color="0.3", lw=1.2, ls=":"),
    ]
    for (label, p), st in zip(curves.items(), styles):
        ax.plot(depth_mm, p, label=label, **st)
    ax.set_xlabel("depth [mm]")
    ax.set_ylabel("dB")
    ax.legend(fontsize=8, loc="best")
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
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
        return ax.text(
            x, y, text, ha="center", va="center", fontsize=9, bbox=dict(boxstyle="round,pad=0.4", fc=fc, ec=ec)
        )

    def arrow(a, b, xa=1.0, ya=0.5, xb=0.0, yb=0.5, **kw):
        ax.annotate(
            "",
            xy=(xb, yb),
            xycoords=b,
            xytext=(xa, ya),
            textcoords=a,
            arrowprops=dict(arrowstyle="->", color=kw.get("color", "0.35"), lw=1.1, shrinkA=2, shrinkB=2),
        )

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
    ax.text(
        0.63,
        0.5,
        f"patient-level\n{n_splits}-fold split",
        ha="left",
        va="center",
        fontsize=8,
        color="0.3",
        style="italic",
    )
    return ax


def _wrap_names(names: str, per_line: int = 2) -> str:
    """'A, B, C, D' → 'A, B,\nC, D' (two names a line, for the pipeline's boxes)."""
    parts = [p.strip() for p in names.split(",")]
    lines = [", ".join(parts[i : i + per_line]) for i in range(0, len(parts), per_line)]
    return ",\n".join(lines)


def auc_heatmap(
    ax,
    table,
    *,
    value: str = "auc",
    title: str | None = None,
    vmin=0.0,
    vmax=1.0,
    fmt=".3f",
    cmap: str = "RdBu",
    cbar: bool = True,
    annot_fontsize: float = 10,
):
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
    sns.heatmap(
        pivot,
        annot=True,
        fmt=fmt,
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        center=(vmin + vmax) / 2,
        ax=ax,
        cbar=cbar,
        cbar_kws={"label": value.upper() + (" (0.5 = chance)" if value == "auc" else "")} if cbar else None,
        annot_kws={"fontsize": annot_fontsize},
        linewidths=0.5,
        linecolor="white",
    )
    ax.set_xlabel("test set")
    ax.set_ylabel("training set")
    ax.tick_params(labelsize=9)
    ax.tick_params(axis="y", labelrotation=0)
    ax.tick_params(axis="x", labelrotation=0)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def bland_altman_plot(
    ax,
    a,
    b,
    *,
    title: str | None = None,
    labels=None,
    difference_label: str = "difference (Train40 − Train60)",
    legend: bool = True,
):
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
    handles += [
        Line2D([], [], color="0.2", ls="-", lw=1, label=f"mean difference {md:+.3f}"),
        Line2D([], [], color="0.2", ls="--", lw=1, label="limits of agreement (±1.96 SD)"),
    ]
    ax.set_xlabel("mean of the two probabilities")
    ax.set_ylabel(difference_label)
    ax.set_xlim(0, 1)
    if legend:  # below the axes, where it hides no point
        ax.legend(handles=handles, fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=1, frameon=False)
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
