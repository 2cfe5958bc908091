"""From B-mode images to network inputs; the image-set manifest.

Byra et al. (2018, Section II.D) augment every scan twice over:

* by **reconstruction**: B-modes at dynamic ranges of 40, 50 and 60 dB
  (:mod:`uslib.reconstruction`);
* by **scale**: crops of the radiologist's ROI with a 2, 5 or 10 mm band of
  surrounding tissue (:func:`crop_box`, :func:`crop`), each resized with
  bicubic interpolation to the network's input size, grey copied to RGB
  (:func:`resize`).

With two orthogonal scans per lesion that is 2 × 3 × 3 = 18 images per
lesion. :func:`image_set` lists them as a manifest (one row per image),
:func:`render` makes one on demand and :func:`iter_images` streams batches of
them, computing each scan's envelope once. The paper's training and test sets
(``Train40dB``, ``TestALL``, ...) are rows of the manifest selected by dynamic
range (:data:`SETS`, :func:`select`).

Protocol decisions the paper leaves open:

* ``A_max`` per scan: the B-mode is computed on the whole scan, then cropped.
  The other scope, one ``A_max`` for the whole data set (:func:`dataset_a_max`),
  is chosen per manifest row by an ``a_max`` column (:func:`scope_manifest`);
  a row without one is rendered, and keyed, exactly as before;
* crop = ROI bounding box ± margin on each axis, converted to whole samples /
  lines with the acquisition's ``dz_mm`` / ``dx_mm`` and rounded to the
  nearest pixel (halves up), clipped at the image border;
* bicubic resize (``order=3``), Gaussian anti-aliasing along the axes that
  shrink, output clipped to [0, 255].
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from typing import Iterator, Sequence

import numpy as np

from .data import Acquisition, Dataset, Scan
from .reconstruction import envelope, gray_levels, log_compress, to_uint8

__all__ = [
    "PAPER_DYNAMIC_RANGES_DB",
    "PAPER_MARGINS_MM",
    "MANIFEST_COLUMNS",
    "SETS",
    "crop_box",
    "crop",
    "resize",
    "image_set",
    "image_key",
    "A_MAX_SCOPES",
    "dataset_a_max",
    "scope_manifest",
    "scan_db",
    "render",
    "iter_images",
    "set_ranges",
    "select",
]

#: Dynamic ranges of the paper, dB.
PAPER_DYNAMIC_RANGES_DB: tuple[float, ...] = (40.0, 50.0, 60.0)
#: Margins of tissue around the ROI of the paper, mm.
PAPER_MARGINS_MM: tuple[float, ...] = (2.0, 5.0, 10.0)

#: Columns of the manifest returned by :func:`image_set`, in order.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "image",
    "lesion",
    "patient",
    "label",
    "birads",
    "scan",
    "margin_mm",
    "dynamic_range_db",
)

#: The paper's named training / test sets: name -> dynamic ranges (dB) of the
#: images they contain. ``ALL`` means the paper's three ranges.
SETS: dict[str, tuple[float, ...]] = {
    "Train40dB": (40.0,),
    "Train50dB": (50.0,),
    "Train60dB": (60.0,),
    "TrainALL": PAPER_DYNAMIC_RANGES_DB,
    "Test40dB": (40.0,),
    "Test50dB": (50.0,),
    "Test60dB": (60.0,),
    "TestALL": PAPER_DYNAMIC_RANGES_DB,
}

_SET_RE = re.compile(r"^(Train|Test)(\d+(?:\.\d+)?)dB$")


# ---------------------------------------------------------------------------
# Cropping and resizing
# ---------------------------------------------------------------------------


def _margin_px(margin_mm: float, spacing_mm: float) -> int:
    # nearest whole pixel, halves rounded up (2 mm / 0.01925 mm = 103.9 -> 104)
    return int(math.floor(margin_mm / spacing_mm + 0.5))


def _check_margin(margin_mm) -> float:
    if isinstance(margin_mm, bool) or not isinstance(margin_mm, numbers.Real):
        raise TypeError(f"margin_mm must be a real number, got {margin_mm!r}")
    m = float(margin_mm)
    if not np.isfinite(m) or m < 0:
        raise ValueError(f"margin_mm must be finite and >= 0, got {m!r}")
    return m


def crop_box(roi, *, margin_mm: float, acquisition: Acquisition) -> tuple[int, int, int, int]:
    """Bounds of the ROI's bounding box widened by a margin in mm.

    Parameters
    ----------
    roi : array_like of bool, shape (n_samples, n_lines)
        Lesion mask (nonzero inside).
    margin_mm : float
        Band of surrounding tissue added on every side, in mm (>= 0).
    acquisition : Acquisition
        Gives the axial sample spacing ``dz_mm`` and line spacing ``dx_mm``.
        The margin becomes ``round(margin_mm / dz_mm)`` samples above and
        below and ``round(margin_mm / dx_mm)`` lines left and right, each
        rounded to the nearest whole pixel (halves up).

    Returns
    -------
    z0, z1, x0, x1 : int
        Half-open bounds, ``image[z0:z1, x0:x1]``, clipped to the image.

    Raises
    ------
    ValueError
        If ``roi`` is not 2-D or is empty (no pixel set), or ``margin_mm`` < 0.

    Examples
    --------
    >>> from uslib.data import OASBUD_ACQUISITION as acq
    >>> roi = np.zeros((1000, 510), bool)
    >>> roi[400:500, 200:220] = True           # 100 samples x 20 lines
    >>> crop_box(roi, margin_mm=2, acquisition=acq)   # +104 samples, +27 lines
    (296, 604, 173, 247)
    """
    m = _check_margin(margin_mm)
    mask = np.asarray(roi)
    if mask.ndim != 2:
        raise ValueError(f"roi must be 2-D (n_samples, n_lines), got shape {mask.shape}")
    mask = mask.astype(bool, copy=False)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        raise ValueError(f"roi is empty (no pixel set in shape {mask.shape})")
    cols = np.flatnonzero(mask.any(axis=0))
    mz = _margin_px(m, acquisition.dz_mm)
    mx = _margin_px(m, acquisition.dx_mm)
    n_z, n_x = mask.shape
    z0 = max(int(rows[0]) - mz, 0)
    z1 = min(int(rows[-1]) + 1 + mz, n_z)
    x0 = max(int(cols[0]) - mx, 0)
    x1 = min(int(cols[-1]) + 1 + mx, n_x)
    return z0, z1, x0, x1


def crop(image, roi, *, margin_mm: float, acquisition: Acquisition) -> np.ndarray:
    """Crop an image to the ROI's bounding box plus a margin in mm.

    Parameters
    ----------
    image : ndarray, shape (n_samples, n_lines)
        B-mode image (or any array on the RF grid).
    roi : array_like of bool, shape (n_samples, n_lines)
        Lesion mask on the same grid.
    margin_mm, acquisition
        See :func:`crop_box`.

    Returns
    -------
    cropped : ndarray
        A view ``image[z0:z1, x0:x1]`` (copy it before writing to it).

    Examples
    --------
    >>> from uslib.data import OASBUD_ACQUISITION as acq
    >>> img = np.zeros((1000, 510), np.uint8)
    >>> roi = np.zeros(img.shape, bool); roi[400:500, 200:220] = True
    >>> crop(img, roi, margin_mm=2, acquisition=acq).shape
    (308, 74)
    """
    image = np.asarray(image)
    roi = np.asarray(roi)
    if image.shape[:2] != roi.shape:
        raise ValueError(f"image shape {image.shape} does not match roi shape {roi.shape}")
    z0, z1, x0, x1 = crop_box(roi, margin_mm=margin_mm, acquisition=acquisition)
    return image[z0:z1, x0:x1]


def _check_size(size_px) -> int:
    if isinstance(size_px, bool) or not isinstance(size_px, numbers.Integral) or size_px < 1:
        raise ValueError(f"size_px must be a positive integer, got {size_px!r}")
    return int(size_px)


def resize(image, size_px: int) -> np.ndarray:
    """Resize a grey image to a square network input, grey copied to RGB.

    Bicubic interpolation (:func:`skimage.transform.resize`, ``order=3``,
    ``mode="reflect"``, ``preserve_range=True``), with skimage's Gaussian
    anti-aliasing filter when any axis shrinks (its sigma is zero along the
    axes that grow). The bicubic overshoot is clipped to [0, 255].

    Parameters
    ----------
    image : array_like, shape (n_rows, n_cols)
        Grey image with values in [0, 255] (a uint8 B-mode crop).
    size_px : int
        Output side in pixels (299 for InceptionV3, 224 for VGG19).

    Returns
    -------
    rgb : ndarray of float32, shape (size_px, size_px, 3)
        Values in [0, 255]; the three channels are equal. Network-specific
        ``preprocess_input`` is applied later, by :mod:`uslib.features`.

    Examples
    --------
    >>> img = np.full((308, 74), 200, np.uint8)
    >>> out = resize(img, 299)
    >>> out.shape, out.dtype, float(out.min()), float(out.max())
    ((299, 299, 3), dtype('float32'), 200.0, 200.0)
    """
    from skimage.transform import resize as _sk_resize

    size = _check_size(size_px)
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"image must be 2-D (grey), got shape {img.shape}")
    if img.size == 0:
        raise ValueError(f"image is empty (shape {img.shape})")
    img = img.astype(np.float64, copy=False)
    shrinking = img.shape[0] > size or img.shape[1] > size
    out = _sk_resize(img, (size, size), order=3, mode="reflect", anti_aliasing=shrinking, preserve_range=True)
    out = np.clip(out, 0.0, 255.0).astype(np.float32)
    return np.repeat(out[:, :, None], 3, axis=2)


# ---------------------------------------------------------------------------
# The image set
# ---------------------------------------------------------------------------


def _check_values(values, name: str, *, positive: bool) -> tuple[float, ...]:
    vals = tuple(float(v) for v in values)
    if not vals:
        raise ValueError(f"{name} is empty")
    for v in vals:
        if not np.isfinite(v) or (v <= 0 if positive else v < 0):
            bound = "> 0" if positive else ">= 0"
            raise ValueError(f"{name} must be finite and {bound}, got {v!r}")
    if len(set(vals)) != len(vals):
        raise ValueError(f"{name} has repeated values: {vals}")
    return vals


def image_set(
    dataset: Dataset,
    *,
    dynamic_ranges_db: Sequence[float] = PAPER_DYNAMIC_RANGES_DB,
    margins_mm: Sequence[float] = PAPER_MARGINS_MM,
):
    """The manifest of every image: scans × dynamic ranges × margins.

    Parameters
    ----------
    dataset : Dataset
    dynamic_ranges_db : sequence of float
        Dynamic ranges in dB (distinct, > 0).
    margins_mm : sequence of float
        Margins around the ROI in mm (distinct, >= 0).

    Returns
    -------
    manifest : pandas.DataFrame
        One row per image, columns :data:`MANIFEST_COLUMNS`: ``image``
        (0..n-1), ``lesion`` (key), ``patient``, ``label``, ``birads``,
        ``scan`` (index into ``lesion.scans``), ``margin_mm`` (float),
        ``dynamic_range_db`` (float). Rows are ordered by lesion (data set
        order), scan, dynamic range, margin (in the order given). For the
        paper's setting that is 18 rows per two-scan lesion.
    """
    import pandas as pd

    drs = _check_values(dynamic_ranges_db, "dynamic_ranges_db", positive=True)
    margins = _check_values(margins_mm, "margins_mm", positive=False)
    rows = []
    for les in dataset:
        for s in range(len(les.scans)):
            for dr in drs:
                for m in margins:
                    rows.append((les.key, les.patient, int(les.label), les.birads, s, m, dr))
    df = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS[1:]))
    df = df.astype({"label": np.int64, "scan": np.int64, "margin_mm": np.float64, "dynamic_range_db": np.float64})
    df.insert(0, "image", np.arange(len(df), dtype=np.int64))
    return df


def _field(row, name: str):
    if isinstance(row, Mapping):
        return row[name]
    try:
        return row[name]  # pandas Series
    except (TypeError, KeyError, IndexError):
        return getattr(row, name)  # namedtuple from itertuples()


def image_key(row) -> str:
    """Stable identifier of one image: ``"lesion|scan|margin_mm|dynamic_range_db"``.

    Parameters
    ----------
    row : pandas.Series, mapping or namedtuple
        A manifest row (from :func:`image_set`).

    Returns
    -------
    str
        Numbers are written as Python floats (``repr``), so the key does not
        depend on the manifest's dtypes or on the image's position.

    Examples
    --------
    >>> image_key({"lesion": "12ab", "scan": 1, "margin_mm": 2, "dynamic_range_db": 40.0})
    '12ab|1|2.0|40.0'
    """
    key = "|".join(
        (
            str(_field(row, "lesion")),
            str(int(_field(row, "scan"))),
            repr(float(_field(row, "margin_mm"))),
            repr(float(_field(row, "dynamic_range_db"))),
        )
    )
    a_max = _row_a_max(row)
    return key if a_max is None else f"{key}|a_max={a_max!r}"


#: Scopes of the log-compression reference ``A_max``: each scan's own maximum, or one for the data set.
A_MAX_SCOPES = ("scan", "dataset")


def _row_a_max(row) -> float | None:
    """The row's ``a_max`` (data-set-wide reference amplitude), or None (per scan) when absent or NaN."""
    try:
        value = _field(row, "a_max")
    except (AttributeError, KeyError):
        return None
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def dataset_a_max(dataset: Dataset) -> float:
    """The largest envelope amplitude over every scan of the data set (one ``A_max`` for all).

    Parameters
    ----------
    dataset : Dataset

    Returns
    -------
    float
        ``max`` over scans of ``max(envelope(rf))``, in RF units (> 0).

    Raises
    ------
    ValueError
        An empty data set, or every envelope zero.
    """
    best = 0.0
    for les in dataset:
        for s, scan in enumerate(les.scans):
            try:
                best = max(best, float(np.max(envelope(scan.rf, axis=0))))
            except ValueError as exc:
                raise ValueError(f"lesion {les.key!r} scan {s}: rf: {exc}") from None
    if not best > 0:
        raise ValueError("dataset_a_max: the data set has no scan with a non-zero envelope")
    return best


def scope_manifest(manifest, *, a_max_scope: str, a_max: float | None = None):
    """The manifest with its ``A_max`` scope: unchanged for ``"scan"``, an ``a_max`` column for ``"dataset"``.

    Parameters
    ----------
    manifest : pandas.DataFrame
        Rows of :func:`image_set`.
    a_max_scope : {"scan", "dataset"}
    a_max : float, optional
        The data-set-wide reference amplitude (:func:`dataset_a_max`);
        required for ``"dataset"``, ignored for ``"scan"``.

    Returns
    -------
    pandas.DataFrame
        For ``"dataset"`` a copy with column ``a_max``: :func:`render` and
        :func:`iter_images` log-compress those rows against it and
        :func:`image_key` names it, so their features are cached apart.
    """
    if a_max_scope not in A_MAX_SCOPES:
        raise ValueError(f"a_max_scope must be one of {A_MAX_SCOPES}, got {a_max_scope!r}")
    if a_max_scope == "scan":
        return manifest
    if a_max is None or not math.isfinite(float(a_max)) or float(a_max) <= 0:
        raise ValueError(f"a_max_scope 'dataset': a_max must be finite and > 0, got {a_max!r}")
    return manifest.assign(a_max=float(a_max))


def _get_scan(dataset: Dataset, lesion_key, scan_index) -> Scan:
    try:
        les = dataset[str(lesion_key)]
    except KeyError:
        raise KeyError(f"lesion {lesion_key!r} is not in the data set") from None
    s = int(scan_index)
    if not 0 <= s < len(les.scans):
        raise IndexError(f"lesion {les.key!r}: scan {s} out of range ({len(les.scans)} scans)")
    return les.scans[s]


def scan_db(scan: Scan, *, a_max: float | None = None) -> np.ndarray:
    """Full-scan log-compressed envelope, ``20 log10(A / A_max)`` in dB.

    Parameters
    ----------
    scan : Scan
    a_max : float, optional
        Reference amplitude; default the scan's own maximum (``A_max`` per
        scan). A data-set-wide one (:func:`dataset_a_max`) shifts the scan's
        dB image down by ``20 log10(a_max / max A)``.

    Returns
    -------
    ndarray of float64, the RF's shape
    """
    return log_compress(envelope(scan.rf, axis=0), a_max=a_max)


def _scan_db(scan: Scan, where: str, a_max: float | None = None) -> np.ndarray:
    try:
        return scan_db(scan, a_max=a_max)
    except ValueError as exc:
        raise ValueError(f"{where}: rf: {exc}") from None


def _render_from_bmode(bmode_img, scan: Scan, margin_mm, size_px, where: str) -> np.ndarray:
    try:
        cropped = crop(bmode_img, scan.roi, margin_mm=float(margin_mm), acquisition=scan.acquisition)
    except ValueError as exc:
        raise ValueError(f"{where}: roi: {exc}") from None
    return resize(cropped, size_px)


def _bmode_from_db(db: np.ndarray, dynamic_range_db) -> np.ndarray:
    # identical arithmetic to reconstruction.bmode_from_envelope
    return to_uint8(gray_levels(db, float(dynamic_range_db)))


def render(dataset: Dataset, row, *, size_px: int) -> np.ndarray:
    """Make one image of the manifest on demand.

    The scan's B-mode is reconstructed on the whole scan at the row's
    dynamic range (``A_max`` per scan, or the row's ``a_max`` when it has
    one: :func:`scope_manifest`), cropped to the ROI with the row's
    margin and resized (:func:`resize`).

    Parameters
    ----------
    dataset : Dataset
    row : pandas.Series, mapping or namedtuple
        A manifest row with ``lesion``, ``scan``, ``margin_mm``,
        ``dynamic_range_db`` and optionally ``a_max``.
    size_px : int

    Returns
    -------
    image : ndarray of float32, shape (size_px, size_px, 3), values in [0, 255]
    """
    size = _check_size(size_px)
    lesion_key, s = _field(row, "lesion"), _field(row, "scan")
    scan = _get_scan(dataset, lesion_key, s)
    where = f"lesion {lesion_key!r} scan {int(s)}"
    db = _scan_db(scan, where, _row_a_max(row))
    img = _bmode_from_db(db, _field(row, "dynamic_range_db"))
    return _render_from_bmode(img, scan, _field(row, "margin_mm"), size, where)


def iter_images(
    dataset: Dataset, manifest, *, size_px: int, batch_size: int = 16
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream the manifest's images in batches.

    Rows are grouped by (lesion, scan) in order of first appearance; each
    scan's envelope (and log compression) is computed once, each of its
    B-modes once per dynamic range; only one scan and one batch are held at
    a time. For a manifest from :func:`image_set` (or a row subset of one)
    the batches come in manifest order; in general use ``positions``.

    Parameters
    ----------
    dataset : Dataset
    manifest : pandas.DataFrame
        Rows with ``lesion``, ``scan``, ``margin_mm``, ``dynamic_range_db``
        and optionally ``a_max`` (:func:`scope_manifest`).
    size_px : int
        Output side in pixels.
    batch_size : int, optional
        Images per batch (the last batch may be smaller).

    Yields
    ------
    positions : ndarray of int64, shape (b,)
        Row positions (``manifest.iloc``, not index labels) of the images.
    batch : ndarray of float32, shape (b, size_px, size_px, 3)
        The images, identical to :func:`render` of those rows.
    """
    size = _check_size(size_px)
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    missing = [c for c in ("lesion", "scan", "margin_mm", "dynamic_range_db") if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks columns {missing}")

    lesions = manifest["lesion"].astype(str).to_numpy()
    scans = manifest["scan"].to_numpy().astype(np.int64)
    margins = manifest["margin_mm"].to_numpy().astype(np.float64)
    drs = manifest["dynamic_range_db"].to_numpy().astype(np.float64)
    a_maxes = [_row_a_max(r) for r in manifest.itertuples(index=False)] if "a_max" in manifest.columns else None

    groups: dict[tuple[str, int, float | None], list[int]] = {}
    for pos, (les, s) in enumerate(zip(lesions, scans)):
        groups.setdefault((les, int(s), None if a_maxes is None else a_maxes[pos]), []).append(pos)

    buf_pos: list[int] = []
    buf = np.empty((batch_size, size, size, 3), np.float32)
    for (les, s, a_max), positions in groups.items():
        scan = _get_scan(dataset, les, s)
        where = f"lesion {les!r} scan {s}"
        db = _scan_db(scan, where, a_max)
        bmodes: dict[float, np.ndarray] = {}
        for pos in positions:
            dr = drs[pos]
            if dr not in bmodes:
                bmodes[dr] = _bmode_from_db(db, dr)
            buf[len(buf_pos)] = _render_from_bmode(bmodes[dr], scan, margins[pos], size, where)
            buf_pos.append(pos)
            if len(buf_pos) == batch_size:
                yield np.asarray(buf_pos, np.int64), buf.copy()
                buf_pos = []
        del db, bmodes
    if buf_pos:
        yield np.asarray(buf_pos, np.int64), buf[: len(buf_pos)].copy()


# ---------------------------------------------------------------------------
# Named sets
# ---------------------------------------------------------------------------


def set_ranges(name: str) -> tuple[float, ...]:
    """Dynamic ranges (dB) of a named training or test set.

    Parameters
    ----------
    name : str
        A key of :data:`SETS` (``"Train40dB"``, ``"TestALL"``, ...), or any
        ``"Train<N>dB"`` / ``"Test<N>dB"`` for another single range.

    Returns
    -------
    tuple of float

    Examples
    --------
    >>> set_ranges("TrainALL")
    (40.0, 50.0, 60.0)
    >>> set_ranges("Test45dB")
    (45.0,)
    """
    if name in SETS:
        return SETS[name]
    m = _SET_RE.match(str(name))
    if m:
        return (float(m.group(2)),)
    raise KeyError(f"unknown image set {name!r}; known: {sorted(SETS)} or 'Train<N>dB'/'Test<N>dB'")


def select(manifest, name: str):
    """Rows of a manifest that belong to a named set.

    Parameters
    ----------
    manifest : pandas.DataFrame
        With a ``dynamic_range_db`` column.
    name : str
        See :func:`set_ranges`.

    Returns
    -------
    mask : pandas.Series of bool, indexed like ``manifest``
    """
    if "dynamic_range_db" not in manifest.columns:
        raise ValueError("manifest lacks column 'dynamic_range_db'")
    return manifest["dynamic_range_db"].astype(np.float64).isin(set_ranges(name))
