"""Generalisation to unseen reconstructions, and compression-free baselines.

Beyond the paper. Byra et al. (2018) show that a classifier trained on
B-modes of one dynamic range loses accuracy on another, and suggest two
remedies they did not test: training on images from *many* reconstructions,
and quantitative-ultrasound (QUS) features computed *before* log
compression. This module measures both:

* :func:`robustness_manifest` — the images of the paper's ranges (40, 50,
  60 dB), of *unseen* ranges (e.g. 30 and 80 dB), and of a *continuous*
  policy in which every crop gets one dynamic range drawn uniformly from an
  interval (:func:`continuous_manifest`);
* :func:`generalisation_curves` — AUC against the test dynamic range for
  several training policies (``Train40dB``, ``Train60dB``, ``TrainALL``,
  ``TrainContinuous``), through the cross-validation loop of
  :mod:`uslib.evaluation` (:func:`uslib.evaluation.cross_validated_probabilities`:
  the same patient-level folds and SVM; a continuous policy is a training
  set given as an image mask);
* :func:`handcrafted_baselines` — Nakagami/envelope statistics
  (:func:`uslib.qus.qus_table`) and ROI shape (:func:`uslib.morphology.
  morphology_table`), classified lesion by lesion through the same loop
  (one row per lesion, no dynamic range), with the same folds and SVM.
  Neither passes through log compression, so their AUC is one number
  whatever the test dynamic range; :func:`attach_baselines` repeats it per
  range for plotting (constant by construction);
* :func:`get_curves`, :func:`get_baselines` — get-or-compute against a run
  directory (``<run_dir>/robustness/``, CSV, keyed by inputs, atomic).

Protocol decisions (documented, parameterised)
----------------------------------------------
Continuous policy
    One image per (lesion, scan, margin): its dynamic range is drawn
    uniformly from ``range_db`` with a generator seeded by ``(seed, lesion,
    scan, margin)``, so a crop's draw does not depend on which other lesions
    are in the data set, and rounded to ``decimals`` (0.1 dB) so that the
    per-image feature cache key (:func:`uslib.augmentation.image_key`) is
    stable. ``TrainContinuous`` thus has as many training images as
    ``Train40dB`` (a third of ``TrainALL``'s).
Which rows belong to the continuous policy
    :func:`robustness_manifest` returns ``(manifest, continuous_mask)``; the
    manifest keeps exactly the columns of :func:`uslib.augmentation.image_set`
    (so :func:`uslib.features.extract_features` caches it as usual). A draw
    that lands on a fixed range (say 45.0 dB with 45 a test range) is the
    same image as the grid's and appears once, flagged in the mask.
Test images
    At test range ``r``: every row with ``dynamic_range_db == r`` (the grid
    images, two scans × margins per lesion); a lesion's probability is the
    mean P(malignant) over them, as in :mod:`uslib.evaluation`.
Folds
    :func:`uslib.evaluation.patient_folds` over the lesions in data-set order
    — the same folds as the main cross-validation for the same ``n_splits``
    and seed (the manifest lists lesions in data-set order).
AUC
    Pooled out-of-fold lesion probabilities, DeLong 95 % CI
    (:func:`uslib.evaluation.delong_ci`).
"""

from __future__ import annotations

import math
import numbers
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from . import evaluation as ev
from .cvsettings import CVSettings
from .augmentation import MANIFEST_COLUMNS, image_set, set_ranges
from .store import key

__all__ = [
    "CONTINUOUS",
    "DEFAULT_POLICIES",
    "CURVE_COLUMNS",
    "BASELINE_SETS",
    "continuous_manifest",
    "robustness_manifest",
    "resolve_policies",
    "generalisation_curves",
    "handcrafted_features",
    "handcrafted_baselines",
    "attach_baselines",
    "curve_summary",
    "compare_policies",
    "displayed_envelope",
]

#: Name of the policy trained on the continuous-range images.
CONTINUOUS = "TrainContinuous"

#: Training policies compared by default.
DEFAULT_POLICIES: tuple[str, ...] = ("Train40dB", "Train60dB", "TrainALL", CONTINUOUS)

#: Columns of the tables returned by :func:`generalisation_curves` and :func:`attach_baselines`.
CURVE_COLUMNS: tuple[str, ...] = (
    "backbone",
    "policy",
    "family",
    "test_range_db",
    "auc",
    "ci_low",
    "ci_high",
    "n_lesions",
    "seen",
)

#: Version of this module's results (part of every cache key).
ROBUSTNESS_VERSION = "1"


def _baseline_sets() -> dict[str, tuple[str, ...]]:
    from .morphology import MORPHOLOGY_FEATURES
    from .qus import QUS_FEATURES

    return {
        "QUS": tuple(QUS_FEATURES),
        "Morphology": tuple(MORPHOLOGY_FEATURES),
        "QUS+Morphology": tuple(QUS_FEATURES) + tuple(MORPHOLOGY_FEATURES),
    }


#: Hand-crafted feature sets: name -> columns of :func:`handcrafted_features`.
BASELINE_SETS: dict[str, tuple[str, ...]] = _baseline_sets()

_STR = {"backbone": str, "policy": str, "family": str, "lesion": str, "patient": str, "feature_set": str}


# --------------------------------------------------------------------------- #
# Manifests
# --------------------------------------------------------------------------- #


def _floats(values, name: str, *, positive: bool) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a sequence of numbers, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"{name} must hold real numbers, got {v!r}")
        f = float(v)
        if not math.isfinite(f) or (f <= 0 if positive else f < 0):
            raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'}, got {v!r}")
        out.append(f)
    if len(set(out)) != len(out):
        raise ValueError(f"{name} has repeated values: {tuple(out)}")
    return tuple(out)


def _interval(range_db, name: str = "range_db") -> tuple[float, float]:
    try:
        vals = tuple(range_db)
    except TypeError:
        raise ValueError(f"{name} must be (low_db, high_db), got {range_db!r}") from None
    if len(vals) != 2 or isinstance(range_db, str):
        raise ValueError(f"{name} must be (low_db, high_db), got {range_db!r}")
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
            raise ValueError(f"{name} must hold finite numbers, got {range_db!r}")
    lo, hi = float(vals[0]), float(vals[1])
    if not 0 < lo < hi:
        raise ValueError(f"{name} must satisfy 0 < low_db < high_db, got {range_db!r}")
    return lo, hi


def _draw_db(seed: int, lesion: str, scan: int, margin_mm: float, lo: float, hi: float, decimals: int) -> float:
    entropy = [int(seed), int(key(str(lesion), int(scan), repr(float(margin_mm))), 16)]
    u = float(np.random.default_rng(entropy).uniform(lo, hi))
    return float(min(max(round(u, decimals), lo), hi))


def continuous_manifest(
    dataset,
    *,
    range_db: Sequence[float] = (35, 65),
    margins_mm: Sequence[float] = (5,),
    seed: int = 0,
    decimals: int = 1,
) -> pd.DataFrame:
    """One image per (lesion, scan, margin) at a dynamic range drawn from an interval.

    Parameters
    ----------
    dataset : uslib.data.Dataset
    range_db : (float, float)
        Interval ``[low_db, high_db]`` of the dynamic ranges, dB.
    margins_mm : sequence of float
        Margins around the ROI, mm.
    seed : int
        Seed of the draws. Each image's generator is seeded by ``seed`` and a
        hash of (lesion key, scan, margin), so the draw of one crop does not
        depend on the other lesions of the data set.
    decimals : int
        Decimal places the drawn range is rounded to (``1``: 0.1 dB steps),
        which keeps the per-image feature cache key stable.

    Returns
    -------
    manifest : pandas.DataFrame
        Columns exactly :data:`uslib.augmentation.MANIFEST_COLUMNS`, one row
        per (lesion, scan, margin) in that order, ``image`` = 0..n-1 and
        ``dynamic_range_db`` in ``[low_db, high_db]``.

    Examples
    --------
    >>> from uslib.phantom import simulate_dataset
    >>> m = continuous_manifest(simulate_dataset(2, seed=0), range_db=(35, 65), margins_mm=(2, 5))
    >>> len(m), bool(m.dynamic_range_db.between(35, 65).all())
    (8, True)
    """
    lo, hi = _interval(range_db)
    margins = _floats(margins_mm, "margins_mm", positive=False)
    if not margins:
        raise ValueError("margins_mm is empty")
    if isinstance(decimals, bool) or not isinstance(decimals, numbers.Integral) or decimals < 0:
        raise ValueError(f"decimals must be an integer >= 0, got {decimals!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    rows = []
    for les in dataset:
        for s in range(len(les.scans)):
            for m in margins:
                rows.append(
                    (
                        les.key,
                        les.patient,
                        int(les.label),
                        les.birads,
                        s,
                        m,
                        _draw_db(seed, les.key, s, m, lo, hi, int(decimals)),
                    )
                )
    df = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS[1:]))
    df = df.astype({"label": np.int64, "scan": np.int64, "margin_mm": np.float64, "dynamic_range_db": np.float64})
    df.insert(0, "image", np.arange(len(df), dtype=np.int64))
    return df


def robustness_manifest(
    dataset,
    *,
    train_ranges_db: Sequence[float] = (40, 50, 60),
    unseen_ranges_db: Sequence[float] = (30, 35, 45, 55, 65, 70, 80),
    margins_mm: Sequence[float] = (5,),
    continuous_range_db: Sequence[float] = (35, 65),
    seed: int = 0,
    decimals: int = 1,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Every image of the robustness experiment, and which belong to the continuous policy.

    The union of :func:`uslib.augmentation.image_set` at the training and
    unseen ranges (the grid) and :func:`continuous_manifest`; an image in both
    appears once.

    Parameters
    ----------
    dataset : uslib.data.Dataset
    train_ranges_db : sequence of float
        The paper's ranges, dB (training sets ``Train<r>dB`` and ``TrainALL``).
    unseen_ranges_db : sequence of float
        Further test ranges, dB; none may repeat a training range.
    margins_mm : sequence of float
        Margins of every image (grid and continuous), mm.
    continuous_range_db : (float, float)
        Interval of the continuous policy, dB.
    seed, decimals
        See :func:`continuous_manifest`.

    Returns
    -------
    manifest : pandas.DataFrame
        Columns exactly :data:`uslib.augmentation.MANIFEST_COLUMNS`; rows
        ordered by lesion (data-set order), scan, dynamic range, margin;
        ``image`` renumbered 0..n-1; no two rows are the same image.
    continuous_mask : ndarray of bool, shape (len(manifest),)
        True for the images of the continuous policy.

    Examples
    --------
    >>> from uslib.phantom import simulate_dataset
    >>> m, cont = robustness_manifest(simulate_dataset(2, seed=0), unseen_ranges_db=(30, 80))
    >>> sorted(set(m.dynamic_range_db[~cont]))
    [30.0, 40.0, 50.0, 60.0, 80.0]
    >>> int(cont.sum())          # 2 lesions x 2 scans x 1 margin
    4
    """
    train = _floats(train_ranges_db, "train_ranges_db", positive=True)
    unseen = _floats(unseen_ranges_db, "unseen_ranges_db", positive=True) if len(unseen_ranges_db) else ()
    both = sorted(set(train) & set(unseen))
    if both:
        raise ValueError(f"unseen_ranges_db repeats training range(s) {both} dB")
    margins = _floats(margins_mm, "margins_mm", positive=False)
    grid = image_set(dataset, dynamic_ranges_db=tuple(sorted(train + unseen)), margins_mm=margins)
    cont = continuous_manifest(dataset, range_db=continuous_range_db, margins_mm=margins, seed=seed, decimals=decimals)
    grid["_continuous"] = False
    cont["_continuous"] = True
    df = pd.concat([grid, cont], ignore_index=True)
    order = {k: i for i, k in enumerate(les.key for les in dataset)}
    mpos = {m: i for i, m in enumerate(margins)}
    df["_les"] = df["lesion"].map(order)
    df["_mar"] = df["margin_mm"].map(mpos)
    ident = ["lesion", "scan", "margin_mm", "dynamic_range_db"]
    flag = df.groupby(ident, sort=False)["_continuous"].transform("any")
    df["_continuous"] = flag
    df = df.drop_duplicates(ident, keep="first")
    df = df.sort_values(["_les", "scan", "dynamic_range_db", "_mar"], kind="stable").reset_index(drop=True)
    mask = df["_continuous"].to_numpy(dtype=bool)
    df = df[list(MANIFEST_COLUMNS)].copy()
    df["image"] = np.arange(len(df), dtype=np.int64)
    return df, mask


# --------------------------------------------------------------------------- #
# Generalisation curves
# --------------------------------------------------------------------------- #


def resolve_policies(policies, *, train_ranges_db: Sequence[float] = (40, 50, 60)) -> dict[str, object]:
    """Training policies as ``name -> dynamic ranges (dB)`` or ``"continuous"``.

    Parameters
    ----------
    policies : sequence of str or mapping
        Names: ``"TrainContinuous"`` (the continuous images), ``"TrainALL"``
        (``train_ranges_db``), ``"Train<N>dB"`` (one range). A mapping gives
        each name its ranges directly (a sequence of dB, or ``"continuous"``).
    train_ranges_db : sequence of float
        What ``"TrainALL"`` means.

    Examples
    --------
    >>> resolve_policies(["Train40dB", "TrainALL", "TrainContinuous"])
    {'Train40dB': (40.0,), 'TrainALL': (40.0, 50.0, 60.0), 'TrainContinuous': 'continuous'}
    """
    if isinstance(policies, Mapping):
        items = list(policies.items())
    else:
        items = [(p, None) for p in policies]
    if not items:
        raise ValueError("policies is empty")
    out: dict[str, object] = {}
    for name, spec in items:
        name = str(name)
        if name in out:
            raise ValueError(f"policy {name!r} given twice")
        if spec is None:
            if name == CONTINUOUS:
                spec = "continuous"
            elif name == "TrainALL":
                spec = _floats(train_ranges_db, "train_ranges_db", positive=True)
            elif name.startswith("Train"):
                try:
                    spec = set_ranges(name)
                except KeyError:
                    raise ValueError(
                        f"unknown policy {name!r}: use 'Train<N>dB', 'TrainALL' or {CONTINUOUS!r}, or give a mapping"
                    ) from None
            else:
                raise ValueError(f"unknown policy {name!r}: use 'Train<N>dB', 'TrainALL' or {CONTINUOUS!r}")
        if isinstance(spec, str):
            if spec != "continuous":
                raise ValueError(f"policy {name!r}: ranges must be dB values or 'continuous', got {spec!r}")
        else:
            spec = _floats(spec, f"policy {name!r}", positive=True)
            if not spec:
                raise ValueError(f"policy {name!r} has no dynamic range")
        out[name] = spec
    return out


def _continuous_mask(continuous_mask, n: int) -> np.ndarray:
    if continuous_mask is None:
        return np.zeros(n, bool)
    mask = np.asarray(continuous_mask)
    if mask.shape != (n,) or mask.dtype != bool:
        raise ValueError(f"continuous_mask must be a bool array of shape ({n},), got {mask.dtype} {mask.shape}")
    return mask


def generalisation_curves(
    features,
    manifest: pd.DataFrame,
    *,
    continuous_mask=None,
    policies=DEFAULT_POLICIES,
    test_ranges_db: Sequence[float] | None = None,
    train_ranges_db: Sequence[float] = (40, 50, 60),
    continuous_range_db: Sequence[float] | None = None,
    folds=None,
    settings: CVSettings = CVSettings(),
    backbone: str = "",
    alpha: float = 0.05,
    estimator=None,
    return_predictions: bool = False,
):
    """AUC against the test dynamic range, one curve per training policy.

    In each patient-level fold, one classifier per policy is fitted on the
    training lesions' images of that policy (``Train40dB``: rows at 40 dB;
    ``TrainALL``: 40/50/60 dB; ``TrainContinuous``: the continuous rows) and
    scores the test lesions' images of every test range once
    (:func:`uslib.evaluation.cross_validated_probabilities`, the continuous
    policy as an image mask); a lesion's probability at range ``r`` is the
    mean over its images at ``r``. The
    pooled out-of-fold probabilities give one AUC (DeLong CI) per (policy,
    test range).

    Parameters
    ----------
    features : ndarray, shape (n_images, d)
        Row-aligned with ``manifest``.
    manifest : DataFrame
        From :func:`robustness_manifest` (columns of
        :func:`uslib.augmentation.image_set`).
    continuous_mask : ndarray of bool, shape (n_images,)
        Rows of the continuous policy; needed when a policy is continuous.
    policies : sequence of str or mapping
        See :func:`resolve_policies`.
    test_ranges_db : sequence of float, optional
        Default: every dynamic range of the rows outside ``continuous_mask``.
    train_ranges_db : sequence of float
        The ranges of ``TrainALL``.
    continuous_range_db : (float, float), optional
        Interval of the continuous policy, for the ``seen`` column; default
        the span of the continuous rows' ranges.
    folds : sequence of (train_idx, test_idx), optional
        Lesion folds (indices into :func:`uslib.evaluation.lesion_table`
        ``(manifest)``); default :func:`uslib.evaluation.patient_folds`
        with ``settings.n_splits`` and ``settings.cv_seed``.
    settings : CVSettings
        The folds (when not given), the SVM's internal calibration split
        (``cv_seed``) and the classifier, as
        :func:`uslib.evaluation.cross_validate` (default: linear SVM, C = 1,
        balanced, z-scored on each fold's training images, Platt calibration
        split by lesion, no lesion weighting). ``n_repeats`` is not used.
    estimator
        As :func:`uslib.evaluation.cross_validate`.
    backbone : str
        Label stored in the table.
    alpha : float
        CI level 1 − ``alpha``.
    return_predictions : bool
        Also return the out-of-fold lesion probabilities.

    Returns
    -------
    curves : DataFrame
        One row per (policy, test range), columns :data:`CURVE_COLUMNS`:
        ``backbone``, ``policy``, ``family`` (``"cnn"``), ``test_range_db``,
        ``auc``, ``ci_low``, ``ci_high``, ``n_lesions``, ``seen`` (the test
        range is among the policy's training ranges, or inside the continuous
        interval).
    predictions : DataFrame, only with ``return_predictions``
        ``backbone``, ``policy``, ``test_range_db``, ``lesion``, ``patient``,
        ``label``, ``fold``, ``probability``, ``n_images``.
    """
    design = ev.Design.build(features, manifest)
    cmask = _continuous_mask(continuous_mask, design.n_images)
    pol = resolve_policies(policies, train_ranges_db=train_ranges_db)
    grid_dr = design.dynamic_range_db[~cmask]
    if test_ranges_db is None:
        test = tuple(sorted(set(np.round(grid_dr, 6).tolist())))
    else:
        test = _floats(test_ranges_db, "test_ranges_db", positive=True)
    if not test:
        raise ValueError("no test dynamic range")
    for r in test:
        if not design.select((r,)).any():
            raise ValueError(f"manifest: no image with dynamic_range_db {r:g} (a test range)")
    train_sets: dict[str, object] = {}
    seen_of: dict[str, np.ndarray] = {}
    for name, spec in pol.items():
        if spec == "continuous":
            if not cmask.any():
                raise ValueError(f"policy {name!r}: continuous_mask selects no image")
            train_sets[name] = cmask
            lo, hi = (
                _interval(continuous_range_db, "continuous_range_db")
                if continuous_range_db is not None
                else (float(design.dynamic_range_db[cmask].min()), float(design.dynamic_range_db[cmask].max()))
            )
            seen_of[name] = np.array([lo - 1e-6 <= r <= hi + 1e-6 for r in test])
        else:
            missing = [r for r in spec if not design.select((r,)).any()]
            if missing:
                raise ValueError(f"policy {name!r}: manifest has no image with dynamic_range_db {missing}")
            train_sets[name] = spec
            seen_of[name] = np.array([any(abs(r - s) < 1e-6 for s in spec) for r in test])

    cv = ev.cross_validated_probabilities(
        features, manifest, train_sets=train_sets, test_set=test, folds=folds, settings=settings, estimator=estimator
    )
    fold_of = cv.fold

    les = design.lesions
    rows_out, preds = [], []
    for name in pol:
        for j, r in enumerate(test):
            mean, counts = cv.lesion_probabilities(name, (r,))
            if (counts == 0).any():
                bad = les["lesion"][counts == 0].iloc[0]
                raise ValueError(f"lesion {bad!r} has no image at the test range {r:g} dB")
            y = les["label"].to_numpy()
            auc, lo, hi = ev.delong_ci(y, mean, alpha=alpha)
            rows_out.append(
                {
                    "backbone": backbone,
                    "policy": name,
                    "family": "cnn",
                    "test_range_db": float(r),
                    "auc": auc,
                    "ci_low": lo,
                    "ci_high": hi,
                    "n_lesions": int(len(y)),
                    "seen": bool(seen_of[name][j]),
                }
            )
            if return_predictions:
                preds.append(
                    pd.DataFrame(
                        {
                            "backbone": backbone,
                            "policy": name,
                            "test_range_db": float(r),
                            "lesion": les["lesion"].to_numpy(),
                            "patient": les["patient"].to_numpy(),
                            "label": y,
                            "fold": fold_of,
                            "probability": mean,
                            "n_images": counts.astype(int),
                        }
                    )
                )
    curves = pd.DataFrame(rows_out, columns=list(CURVE_COLUMNS))
    if return_predictions:
        return curves, pd.concat(preds, ignore_index=True)
    return curves


# --------------------------------------------------------------------------- #
# Hand-crafted, compression-free baselines
# --------------------------------------------------------------------------- #


def handcrafted_features(dataset) -> pd.DataFrame:
    """QUS envelope statistics and ROI shape features per lesion.

    Neither uses log compression: QUS (:func:`uslib.qus.qus_table`) is
    computed from the envelope of the RF data, morphology
    (:func:`uslib.morphology.morphology_table`) from the ROI mask.

    Returns
    -------
    DataFrame
        One row per lesion in data-set order: ``lesion``, ``patient``,
        ``label``, then the columns of every set in :data:`BASELINE_SETS`.
    """
    from .morphology import morphology_table
    from .qus import qus_table

    q = qus_table(dataset)
    m = morphology_table(dataset)
    if list(q["lesion"]) != list(m["lesion"]):  # pragma: no cover - both follow data-set order
        raise RuntimeError("qus_table and morphology_table list lesions in different orders")
    return pd.concat([q, m.drop(columns=["lesion", "patient", "label"])], axis=1)


def handcrafted_baselines(
    dataset=None,
    *,
    table: pd.DataFrame | None = None,
    folds=None,
    settings: CVSettings = CVSettings(),
    feature_sets: Mapping[str, Sequence[str]] | None = None,
    alpha: float = 0.05,
    estimator=None,
    return_predictions: bool = False,
):
    """Lesion-level cross-validated AUC of the hand-crafted feature sets.

    One feature vector per lesion (means over its scans); in each fold the
    same SVM as :func:`generalisation_curves` (linear, ``svm_c``, balanced,
    z-scored on the training lesions) is fitted on the training lesions and
    gives P(malignant) of the test lesions
    (:func:`uslib.evaluation.cross_validated_probabilities` on one row per
    lesion).

    Parameters
    ----------
    dataset : uslib.data.Dataset, optional
        Source of :func:`handcrafted_features` when ``table`` is not given.
    table : DataFrame, optional
        Precomputed :func:`handcrafted_features` (lesions in data-set order).
    folds : sequence of (train_idx, test_idx), optional
        Lesion folds over the table's rows (data-set order); default
        :func:`uslib.evaluation.patient_folds` (``settings.n_splits``,
        ``settings.cv_seed``) — the folds of the main cross-validation.
    feature_sets : mapping name -> columns, optional
        Default :data:`BASELINE_SETS` (``QUS``, ``Morphology``,
        ``QUS+Morphology``).
    settings, estimator, alpha
        As :func:`generalisation_curves` (one row per lesion: lesion-grouped
        calibration is the image-level one here, and ``lesion_weighting`` is
        moot: every lesion has one row, so it is not applied).
    return_predictions : bool
        Also return the out-of-fold probabilities.

    Returns
    -------
    baselines : DataFrame
        ``feature_set``, ``auc``, ``ci_low``, ``ci_high``, ``n_lesions``,
        ``n_features``.
    predictions : DataFrame, only with ``return_predictions``
        ``feature_set``, ``lesion``, ``patient``, ``label``, ``fold``,
        ``probability``.

    Raises
    ------
    ValueError
        If a feature is not finite for some lesion (named), or a column is missing.
    """
    if table is None:
        if dataset is None:
            raise ValueError("handcrafted_baselines needs a dataset or a table")
        table = handcrafted_features(dataset)
    sets = dict(BASELINE_SETS if feature_sets is None else feature_sets)
    if not sets:
        raise ValueError("feature_sets is empty")
    lesions = ev.lesion_table(table)
    if len(lesions) != len(table):
        raise ValueError("table: each lesion must appear once")
    y = lesions["label"].to_numpy()
    patients = lesions["patient"].to_numpy()
    folds = ev.resolve_folds(lesions, folds, n_splits=settings.n_splits, seed=settings.cv_seed)
    settings = settings.replace(lesion_weighting=False)  # one row per lesion: every lesion weighs the same
    rows, preds = [], []
    for name, cols in sets.items():
        cols = list(cols)
        missing = [c for c in cols if c not in table.columns]
        if missing:
            raise ValueError(f"feature set {name!r}: table lacks column(s) {missing}")
        X = table[cols].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(X)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise ValueError(
                f"feature set {name!r}: lesion {table['lesion'].iloc[i]!r} has a non-finite {cols[j]} ({X[i, j]})"
            )
        # one row per lesion, no dynamic range: every row trains (in its training folds) and is tested
        cv = ev.cross_validated_probabilities(
            X,
            table[["lesion", "patient", "label"]],
            train_sets={name: None},
            folds=folds,
            settings=settings,
            estimator=estimator,
        )
        p, _ = cv.lesion_probabilities(name)
        auc, lo, hi = ev.delong_ci(y, p, alpha=alpha)
        rows.append(
            {
                "feature_set": str(name),
                "auc": auc,
                "ci_low": lo,
                "ci_high": hi,
                "n_lesions": int(len(y)),
                "n_features": len(cols),
            }
        )
        if return_predictions:
            preds.append(
                pd.DataFrame(
                    {
                        "feature_set": str(name),
                        "lesion": lesions["lesion"].to_numpy(),
                        "patient": patients,
                        "label": y,
                        "fold": cv.fold,
                        "probability": p,
                    }
                )
            )
    out = pd.DataFrame(rows)
    if return_predictions:
        return out, pd.concat(preds, ignore_index=True)
    return out


def attach_baselines(curves: pd.DataFrame, baselines: pd.DataFrame) -> pd.DataFrame:
    """The curves table with the hand-crafted baselines repeated at every test range.

    The baselines never see a B-mode, so each has one AUC for all dynamic
    ranges; the rows added per (backbone, test range) carry that same value
    (``family="handcrafted"``, ``seen=True``), for plotting beside the CNN
    curves.

    Examples
    --------
    >>> c = pd.DataFrame({"backbone": "b", "policy": "TrainALL", "family": "cnn",
    ...                   "test_range_db": [30.0, 80.0], "auc": [0.9, 0.7], "ci_low": 0.5,
    ...                   "ci_high": 1.0, "n_lesions": 10, "seen": False})
    >>> b = pd.DataFrame({"feature_set": ["QUS"], "auc": [0.8], "ci_low": [0.6], "ci_high": [0.95],
    ...                   "n_lesions": [10]})
    >>> attach_baselines(c, b).query("family == 'handcrafted'").auc.tolist()
    [0.8, 0.8]
    """
    extra = []
    for (bb,), g in curves.groupby(["backbone"], sort=False):
        for r in pd.unique(g["test_range_db"]):
            for b in baselines.itertuples(index=False):
                extra.append(
                    {
                        "backbone": bb,
                        "policy": b.feature_set,
                        "family": "handcrafted",
                        "test_range_db": float(r),
                        "auc": b.auc,
                        "ci_low": b.ci_low,
                        "ci_high": b.ci_high,
                        "n_lesions": int(b.n_lesions),
                        "seen": True,
                    }
                )
    return pd.concat([curves[list(CURVE_COLUMNS)], pd.DataFrame(extra, columns=list(CURVE_COLUMNS))], ignore_index=True)


def curve_summary(curves: pd.DataFrame) -> pd.DataFrame:
    """Per (backbone, policy): range of the AUC across test ranges and the worst-case drop.

    Returns
    -------
    DataFrame
        ``backbone``, ``policy``, ``family``, ``auc_min``, ``range_at_min``
        (dB), ``auc_max``, ``range_at_max``, ``spread`` (max − min),
        ``auc_seen`` (mean AUC at the test ranges the policy was trained on;
        NaN if none), ``worst_drop`` (``auc_seen`` − ``auc_min``) and
        ``n_ranges``.
    """
    rows = []
    for (bb, pol), g in curves.groupby(["backbone", "policy"], sort=False):
        i_min, i_max = g["auc"].idxmin(), g["auc"].idxmax()
        seen = g.loc[g["seen"].astype(bool), "auc"]
        auc_seen = float(seen.mean()) if len(seen) else float("nan")
        rows.append(
            {
                "backbone": bb,
                "policy": pol,
                "family": g["family"].iloc[0],
                "auc_min": float(g.loc[i_min, "auc"]),
                "range_at_min": float(g.loc[i_min, "test_range_db"]),
                "auc_max": float(g.loc[i_max, "auc"]),
                "range_at_max": float(g.loc[i_max, "test_range_db"]),
                "spread": float(g["auc"].max() - g["auc"].min()),
                "auc_seen": auc_seen,
                "worst_drop": auc_seen - float(g["auc"].min()),
                "n_ranges": int(len(g)),
            }
        )
    return pd.DataFrame(rows)


def compare_policies(predictions: pd.DataFrame, *, a: str = CONTINUOUS, b: str = "TrainALL") -> pd.DataFrame:
    """DeLong paired test of two policies at every test range (same lesions, same folds).

    Returns
    -------
    DataFrame
        ``backbone``, ``test_range_db``, ``policy_a``, ``policy_b``, then
        :func:`uslib.evaluation.delong_paired_test`'s ``auc_a``, ``auc_b``,
        ``diff``, ``se``, ``z``, ``p``.
    """
    rows = []
    for (bb, r), g in predictions.groupby(["backbone", "test_range_db"], sort=False):
        ga = g[g["policy"] == a].set_index("lesion")
        gb = g[g["policy"] == b].set_index("lesion")
        if ga.empty or gb.empty:
            raise ValueError(f"predictions lack policy {a!r} or {b!r} ({bb}, {r:g} dB)")
        gb = gb.reindex(ga.index)
        res = ev.delong_paired_test(ga["label"].to_numpy(), ga["probability"].to_numpy(), gb["probability"].to_numpy())
        rows.append({"backbone": bb, "test_range_db": float(r), "policy_a": a, "policy_b": b, **res})
    return pd.DataFrame(rows)


def displayed_envelope(scan, dynamic_range_db: float) -> np.ndarray:
    """The amplitude a B-mode at one dynamic range still shows, ``A / A_max``.

    Inverts the display mapping of :func:`uslib.reconstruction.bmode`: grey
    level ``g`` ↦ ``10 ** ((g / 255 · DR − DR) / 20)``. Everything below
    ``−DR`` dB is clipped to the floor and every value is quantised to 256
    levels, so envelope statistics of this image depend on ``DR`` — unlike
    those of the envelope itself (:func:`uslib.qus.qus_features`), which the
    baselines use. For teaching and as the negative control of the tests.

    Parameters
    ----------
    scan : uslib.data.Scan
    dynamic_range_db : float

    Returns
    -------
    ndarray of float64, shape (n_samples, n_lines), values in [10**(-DR/20), 1]
    """
    from .reconstruction import bmode

    dr = float(dynamic_range_db)
    g = bmode(scan.rf, dr).astype(np.float64)
    return 10.0 ** ((g / 255.0 * dr - dr) / 20.0)
