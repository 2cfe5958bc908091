"""What the results' numbers mean: verdicts, reversals, degenerate fits, and their uncertainty.

Measurements on the outputs of :mod:`uslib.evaluation` and
:mod:`uslib.robustness` (plain arrays and DataFrames in, numbers out); the
sentences that read them are in :mod:`uslib.readings`.

* :func:`auc_verdict`, :func:`cell_verdicts` — each AUC above chance,
  indistinguishable from chance, or *reversed* (CI wholly below 0.5);
* :func:`out_of_fold_decisions` and :func:`decision_shift` — why a cell is
  reversed: how the SVM decision values of benign and malignant lesions move
  between the training range and the test range, in units of the
  between-class gap on the training range. The decision value is
  ``w · x + b``, so a class's mean shift *is* the projection of that class's
  mean feature shift on the SVM normal ``w``;
* :func:`fit_degeneracy` — whether a fitted configuration is degenerate
  (probabilities at 0/1, few distinct values, features tiny against C);
* :func:`raw_vs_calibrated` — the AUC of the raw decision values beside the
  calibrated one, flagged where they differ by more than their paired CI;
* :func:`clopper_pearson`, :func:`patient_bootstrap_weights`,
  :func:`weighted_auc`, :func:`table3_intervals`, :func:`drop_intervals` —
  intervals for Table III (pooled over repeats, lesions resampled by patient)
  and for chapter 07's drops (the worst-case drop bootstrapped *with* its
  maximum over ranges, so that the selection is part of the interval);
* :func:`extreme_share`, :func:`c_grid`, :func:`amax_scope_gap_db` — the open
  choices (calibration, C, A_max scope).

Why own code: the patient-grouped bootstrap of an AUC with repeated
out-of-fold predictions, and the bootstrap of a maximum over ranges, are not
in scikit-learn or scipy; they are written here as resampling *weights*
(each lesion counts as often as its patient is drawn), which gives every
replicate's AUC as one matrix product.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.svm import SVC

from . import evaluation as ev
from .cvsettings import CVSettings
from .uncertainty import (
    called_malignant,
    clopper_pearson,
    drop_intervals,
    patient_bootstrap_weights,  # noqa: F401
    table3_intervals,
    weighted_auc,
)

__all__ = [
    "VERDICTS",
    "auc_verdict",
    "cell_verdicts",
    "DecisionFunction",
    "out_of_fold_decisions",
    "decision_shift",
    "reference_test_name",
    "reversal_diagnoses",
    "matrix_reversals",
    "curve_reversals",
    "fit_degeneracy",
    "result_degeneracy",
    "raw_vs_calibrated",
    "clopper_pearson",
    "patient_bootstrap_weights",
    "weighted_auc",
    "called_malignant",
    "table3_intervals",
    "drop_intervals",
    "extreme_share",
    "sensitivity_columns",
    "calibration_extremes",
    "c_grid",
    "amax_scope_gap_db",
]

#: The three verdicts of :func:`auc_verdict`.
VERDICTS = ("above chance", "indistinguishable from chance", "reversed")

#: A probability this close to 0 or 1 counts as "at 0/1" in :func:`fit_degeneracy`.
AT_BOUND_TOL = 1e-6


# --------------------------------------------------------------------------- #
# Verdicts
# --------------------------------------------------------------------------- #


def auc_verdict(auc: float, ci_low: float, ci_high: float, *, chance: float = 0.5) -> str:
    """Above chance, indistinguishable from chance, or reversed, from an AUC's CI.

    Parameters
    ----------
    auc, ci_low, ci_high : float
        The AUC and its confidence interval.
    chance : float
        The chance level.

    Returns
    -------
    str
        ``"above chance"`` (CI wholly above ``chance``), ``"reversed"``
        (wholly below) or ``"indistinguishable from chance"`` (it contains
        ``chance``, or the CI is missing).

    Examples
    --------
    >>> auc_verdict(0.75, 0.6, 0.9), auc_verdict(0.36, 0.29, 0.43), auc_verdict(0.45, 0.3, 0.6)
    ('above chance', 'reversed', 'indistinguishable from chance')
    """
    lo, hi = float(ci_low), float(ci_high)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return VERDICTS[1]
    if lo > chance:
        return VERDICTS[0]
    if hi < chance:
        return VERDICTS[2]
    return VERDICTS[1]


def cell_verdicts(table: pd.DataFrame, *, chance: float = 0.5) -> pd.DataFrame:
    """``table`` with a ``verdict`` column (:func:`auc_verdict` of each row's ``auc``, ``ci_low``, ``ci_high``).

    Works on :attr:`uslib.evaluation.MatrixResult.table` and on the curves of
    :func:`uslib.robustness.generalisation_curves` alike.
    """
    for c in ("auc", "ci_low", "ci_high"):
        if c not in table.columns:
            raise ValueError(f"cell_verdicts: table has no column {c!r}")
    out = table.copy()
    out["verdict"] = [
        auc_verdict(a, lo, hi, chance=chance) for a, lo, hi in zip(out["auc"], out["ci_low"], out["ci_high"])
    ]
    return out


# --------------------------------------------------------------------------- #
# Decision values and how they move
# --------------------------------------------------------------------------- #


class DecisionFunction(ClassifierMixin, BaseEstimator):
    """A linear SVM whose ``predict_proba`` column 1 is its *decision value* (not a probability).

    An adapter so that the package's one cross-validation loop
    (:func:`uslib.evaluation.cross_validated_probabilities`, ``estimator=``)
    returns out-of-fold decision values instead of Platt probabilities. The
    SVM is the one of :class:`uslib.evaluation.LinearSVM` (``SVC`` on the
    linear Gram matrix, same C and class weights; standardisation is added
    by the loop), without its calibration, which does not change the
    decision function.

    Parameters
    ----------
    C : float
    class_weight : {"balanced", None} or dict
    """

    def __init__(self, *, C: float = 1.0, class_weight="balanced"):
        self.C = C
        self.class_weight = class_weight

    def fit(self, X, y, sample_weight=None):
        X = np.asarray(X, dtype=np.float64)
        self.X_fit_ = X
        kw = {} if sample_weight is None else {"sample_weight": np.asarray(sample_weight, dtype=float)}
        self.model_ = SVC(kernel="precomputed", C=self.C, class_weight=self.class_weight).fit(X @ X.T, y, **kw)
        self.classes_ = self.model_.classes_
        return self

    def decision_function(self, X) -> np.ndarray:
        """Signed distance to the hyperplane (positive: ``classes_[1]``), shape (n,)."""
        return self.model_.decision_function(np.asarray(X, dtype=np.float64) @ self.X_fit_.T)

    def predict_proba(self, X) -> np.ndarray:
        """``[-f, f]`` with f the decision value: *not* probabilities (see the class notes)."""
        f = self.decision_function(X)
        return np.column_stack([-f, f])

    def predict(self, X) -> np.ndarray:
        return self.classes_[(self.decision_function(X) > 0).astype(int)]


def out_of_fold_decisions(
    features,
    manifest: pd.DataFrame,
    *,
    train_sets: Mapping[str, object],
    test_sets: Mapping[str, Sequence[float]],
    folds=None,
    settings: CVSettings = CVSettings(),
) -> pd.DataFrame:
    """Out-of-fold SVM decision values of every lesion, per training set and test set.

    The same patient-level folds and SVM as :func:`uslib.evaluation.reconstruction_matrix`
    (same ``folds``, or ``n_splits`` and ``seed``), through its loop; a
    lesion's decision value on a test set is the mean over its images there.

    Parameters
    ----------
    features : ndarray, shape (n_images, d)
    manifest : DataFrame
        Row-aligned with ``features``.
    train_sets : mapping name -> dynamic ranges (dB) or image mask
        E.g. ``{"Train40dB": (40,)}``.
    test_sets : mapping name -> dynamic ranges (dB)
        E.g. ``{"Test40dB": (40,), "Test60dB": (60,)}``.
    folds : list of (train_idx, test_idx), optional
        The run's lesion folds (default: ``settings.n_splits`` folds seeded by
        ``settings.cv_seed``).
    settings : CVSettings
        The run's settings (``svm_c``, ``class_weight``, ``standardize``,
        ``lesion_weighting``; the calibration is not used: decision values).

    Returns
    -------
    DataFrame
        ``train``, ``test``, ``lesion``, ``patient``, ``label``, ``fold``,
        ``decision``, ``n_images`` (lesions without images in a test set are
        left out).
    """
    union = sorted({float(r) for rs in test_sets.values() for r in rs})
    cv = ev.cross_validated_probabilities(
        features,
        manifest,
        train_sets=train_sets,
        test_set=union,
        folds=folds,
        settings=settings,
        estimator=DecisionFunction(C=settings.svm_c, class_weight=settings.class_weight),
    )
    les = cv.design.lesions
    frames = []
    for trname in train_sets:
        for tname, tranges in test_sets.items():
            mean, counts = cv.lesion_probabilities(trname, tranges)
            keep = counts > 0
            frames.append(
                pd.DataFrame(
                    {
                        "train": trname,
                        "test": tname,
                        "lesion": les["lesion"][keep].to_numpy(),
                        "patient": les["patient"][keep].to_numpy(),
                        "label": les["label"][keep].to_numpy(),
                        "fold": cv.fold[keep],
                        "decision": mean[keep],
                        "n_images": counts[keep],
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def _class_shift(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict:
    """Gaps and class-mean shifts of one group of lesions scored by one set of classifiers."""
    gap_ref = float(a[y].mean() - a[~y].mean())
    gap_test = float(b[y].mean() - b[~y].mean())
    sb, sm = float(b[~y].mean() - a[~y].mean()), float(b[y].mean() - a[y].mean())
    unit = gap_ref if gap_ref > 0 else float("nan")
    return {
        "gap_reference": gap_ref,
        "gap_test": gap_test,
        "shift_benign": sb,
        "shift_malignant": sm,
        "shift_benign_gaps": sb / unit,
        "shift_malignant_gaps": sm / unit,
        "common_shift_gaps": (sb + sm) / 2 / unit,
        "differential_shift_gaps": (sb - sm) / unit,
        "gap_ratio": gap_test / unit,
    }


def decision_shift(labels, decision_reference, decision_test, fold=None) -> dict:
    """How benign and malignant decision values move from the reference (training) range to a test range.

    Each class's mean decision value on the reference range (the range the
    classifiers were trained on) and on the test range, and the change, in
    units of the between-class gap (mean malignant − mean benign) on the
    reference range. With ``fold``, every figure in gap units is computed
    within each fold — one SVM, its own scale and offset — and the median
    over folds is reported: pooled over folds, one fold's SVM whose
    values all move far (a different scale) would dominate the class means.

    Parameters
    ----------
    labels : array_like of {0, 1}, shape (n,)
    decision_reference : array_like of float, shape (n,)
        Each lesion's out-of-fold decision value on the reference range
        (e.g. Train40dB scoring Test40dB).
    decision_test : array_like of float, shape (n,)
        The same lesions, same classifiers, on the test range (e.g. Test60dB).
    fold : array_like of int, shape (n,), optional
        The fold (classifier) that scored each lesion.

    Returns
    -------
    dict
        Pooled over all lesions: ``gap_reference``, ``gap_test`` (raw
        units), ``shift_benign``, ``shift_malignant`` (raw), ``sd_reference``,
        ``sd_test`` (pooled within-class sd), ``auc_reference``,
        ``auc_test`` (of the decision values), ``n``. In gap units (median
        over folds with ``fold``, NaN where the reference gap is not
        positive): ``shift_benign_gaps``, ``shift_malignant_gaps``;
        ``common_shift_gaps`` (their mean: moves both classes alike, i.e. the
        threshold, not the ranking); ``differential_shift_gaps`` =
        (shift_benign − shift_malignant) / gap; ``gap_ratio`` = gap on the
        test range / gap on the reference range = 1 − differential (the class
        means swap order when it is negative). Counts: ``n_folds``,
        ``n_folds_swapped`` (folds whose class means swap order),
        ``n_folds_unseparated`` (folds whose reference gap is not positive).

    Examples
    --------
    Benign lesions move up by 3, malignant by 1, against a gap of 1: the
    differential shift is two gaps, so the class means swap.

    >>> d = decision_shift([0, 0, 1, 1], [-1.0, -0.5, 0.0, 0.5], [2.0, 2.5, 1.0, 1.5])
    >>> d["gap_reference"], d["gap_test"], d["differential_shift_gaps"], d["gap_ratio"], d["auc_test"]
    (1.0, -1.0, 2.0, -1.0, 0.0)
    """
    y = np.asarray(labels).astype(bool)
    a = np.asarray(decision_reference, dtype=float)
    b = np.asarray(decision_test, dtype=float)
    if not (y.shape == a.shape == b.shape) or y.ndim != 1:
        raise ValueError(
            f"decision_shift: labels {y.shape}, decision_reference {a.shape} and decision_test "
            f"{b.shape} must be 1-D and equal"
        )
    if y.all() or not y.any():
        raise ValueError("decision_shift: labels need both classes")
    f = np.zeros(y.shape, dtype=int) if fold is None else np.asarray(fold)
    if f.shape != y.shape:
        raise ValueError(f"decision_shift: fold {f.shape} and labels {y.shape} do not align")
    pooled = _class_shift(y, a, b)
    per = [
        _class_shift(y[f == k], a[f == k], b[f == k]) for k in np.unique(f) if y[f == k].any() and not y[f == k].all()
    ]
    if not per:
        raise ValueError("decision_shift: no fold holds both classes")

    def med(key):
        v = np.array([p[key] for p in per], dtype=float)
        return float(np.median(v[np.isfinite(v)])) if np.isfinite(v).any() else float("nan")

    def pooled_sd(v):
        r = np.r_[v[y] - v[y].mean(), v[~y] - v[~y].mean()]
        return float(np.sqrt(np.sum(r**2) / max(len(r) - 2, 1)))

    keys = ("shift_benign_gaps", "shift_malignant_gaps", "common_shift_gaps", "differential_shift_gaps", "gap_ratio")
    return {
        "gap_reference": pooled["gap_reference"],
        "gap_test": pooled["gap_test"],
        "shift_benign": pooled["shift_benign"],
        "shift_malignant": pooled["shift_malignant"],
        **{k: med(k) for k in keys},
        "n_folds": len(per),
        "n_folds_swapped": int(sum(p["gap_ratio"] < 0 for p in per)),
        "n_folds_unseparated": int(sum(not p["gap_reference"] > 0 for p in per)),
        "sd_reference": pooled_sd(a),
        "sd_test": pooled_sd(b),
        "auc_reference": ev.roc_auc(y, a),
        "auc_test": ev.roc_auc(y, b),
        "n": int(y.size),
    }


def reference_test_name(train: str) -> str:
    """The test set made of a training set's own ranges: ``"Train40dB"`` -> ``"Test40dB"``.

    Examples
    --------
    >>> reference_test_name("Train40dB"), reference_test_name("TrainALL")
    ('Test40dB', 'TestALL')
    """
    if not train.startswith("Train"):
        raise ValueError(f"reference_test_name: {train!r} is not a training-set name (Train...)")
    return "Test" + train[len("Train") :]


def reversal_diagnoses(
    table: pd.DataFrame,
    decisions: pd.DataFrame,
    *,
    chance: float = 0.5,
    reference: Mapping[str, str] | None = None,
    only_reversed: bool = True,
) -> pd.DataFrame:
    """:func:`decision_shift` of every reversed train/test cell (or every cell).

    Parameters
    ----------
    table : DataFrame
        ``train``, ``test``, ``auc``, ``ci_low``, ``ci_high`` (and e.g.
        ``backbone``), as :attr:`uslib.evaluation.MatrixResult.table`.
    decisions : DataFrame
        :func:`out_of_fold_decisions` with, for each training set, its
        reference test set and the cells' test sets.
    reference : mapping train -> test, optional
        The reference test set of each training set; default
        :func:`reference_test_name`.
    only_reversed : bool
        Diagnose reversed cells only.

    Returns
    -------
    DataFrame
        The table's rows (with ``verdict``) joined with the
        :func:`decision_shift` figures; cells whose training set has no
        decision values, and each training set's own reference cell, are left out.
    """
    v = cell_verdicts(table, chance=chance)
    if only_reversed:
        v = v[v["verdict"] == VERDICTS[2]]
    rows = []
    for _, row in v.iterrows():
        ref = (reference or {}).get(row["train"]) or reference_test_name(str(row["train"]))
        if row["test"] == ref:
            continue
        d = decisions[decisions["train"] == row["train"]]
        a, b = d[d["test"] == ref].set_index("lesion"), d[d["test"] == row["test"]].set_index("lesion")
        if a.empty or b.empty:
            continue
        common = a.index.intersection(b.index)
        rows.append(
            {
                **row.to_dict(),
                "reference": ref,
                **decision_shift(
                    a.loc[common, "label"],
                    a.loc[common, "decision"],
                    b.loc[common, "decision"],
                    fold=a.loc[common, "fold"],
                ),
            }
        )
    return pd.DataFrame(rows)


def matrix_reversals(
    features, manifest: pd.DataFrame, table: pd.DataFrame, *, ranges: Sequence[float], chance: float = 0.5, **cv
) -> pd.DataFrame:
    """Diagnose every reversed single-range cell of one backbone's Train×Test table.

    Runs the decision-value cross-validation (:func:`out_of_fold_decisions`)
    only for the training sets that have a reversed cell, so a table without
    one costs nothing.

    Parameters
    ----------
    features, manifest
        As for :func:`uslib.evaluation.reconstruction_matrix`.
    table : DataFrame
        :attr:`uslib.evaluation.MatrixResult.table` of that run.
    ranges : sequence of float
        The run's dynamic ranges.
    chance : float
    **cv
        ``folds`` and ``settings`` (:class:`~uslib.cvsettings.CVSettings`) of
        the run, for :func:`out_of_fold_decisions`.

    Returns
    -------
    DataFrame
        :func:`reversal_diagnoses` (empty when no cell is reversed).
    """
    v = cell_verdicts(table, chance=chance)
    single = {ev.set_name("Train", (r,)): (float(r),) for r in ranges}
    tests = {ev.set_name("Test", (r,)): (float(r),) for r in ranges}
    rev = v[(v["verdict"] == VERDICTS[2]) & v["train"].isin(list(single)) & v["test"].isin(list(tests))]
    if rev.empty:
        return pd.DataFrame()
    train_sets = {t: single[t] for t in pd.unique(rev["train"])}
    d = out_of_fold_decisions(features, manifest, train_sets=train_sets, test_sets=tests, **cv)
    return reversal_diagnoses(rev, d, chance=chance)


def curve_reversals(
    features,
    manifest: pd.DataFrame,
    curves: pd.DataFrame,
    *,
    train_sets: Mapping[str, object],
    chance: float = 0.5,
    **cv,
) -> pd.DataFrame:
    """Diagnose every reversed (policy, test range) cell of one backbone's generalisation curves.

    The reference of a policy is the test set of its *seen* ranges (column
    ``seen`` of the curves), e.g. 40 dB for Train40dB or 40/50/60 dB for
    TrainALL; the decision-value cross-validation runs only for policies
    with a reversed cell.

    Parameters
    ----------
    features, manifest
        As for :func:`uslib.robustness.generalisation_curves`.
    curves : DataFrame
        Its curves for one backbone (``policy``, ``test_range_db``, ``auc``,
        ``ci_low``, ``ci_high``, ``seen``).
    train_sets : mapping policy -> selection
        Each policy's training images (dynamic ranges, or the continuous
        image mask).
    chance : float
    **cv
        ``folds`` and ``settings`` (:class:`~uslib.cvsettings.CVSettings`) of
        the run, for :func:`out_of_fold_decisions`.

    Returns
    -------
    DataFrame
        :func:`reversal_diagnoses` rows, with ``train`` = the policy and
        ``test`` = ``"Test<r>dB"`` (empty when no cell is reversed).
    """
    v = cell_verdicts(curves, chance=chance)
    rev = v[(v["verdict"] == VERDICTS[2]) & v["policy"].isin(list(train_sets))]
    if rev.empty:
        return pd.DataFrame()
    name = lambda r: ev.set_name("Test", (r,))  # noqa: E731
    tests, ref = {}, {}
    for pol in pd.unique(rev["policy"]):
        seen = sorted(float(r) for r in v.loc[(v["policy"] == pol) & v["seen"].astype(bool), "test_range_db"])
        if not seen:
            continue
        ref[pol] = "Test" + "+".join(f"{r:g}" for r in seen) + "dB" if len(seen) > 1 else name(seen[0])
        tests[ref[pol]] = tuple(seen)
    for r in rev["test_range_db"]:
        tests[name(float(r))] = (float(r),)
    todo = [p for p in pd.unique(rev["policy"]) if p in ref]
    if not todo:
        return pd.DataFrame()
    d = out_of_fold_decisions(features, manifest, train_sets={p: train_sets[p] for p in todo}, test_sets=tests, **cv)
    cells = rev[rev["policy"].isin(todo)].assign(
        train=lambda t: t["policy"], test=lambda t: [name(float(r)) for r in t["test_range_db"]]
    )
    return reversal_diagnoses(cells, d, chance=chance, reference=ref)


# --------------------------------------------------------------------------- #
# Degenerate fits
# --------------------------------------------------------------------------- #


def fit_degeneracy(
    probabilities,
    *,
    features=None,
    penalty_c: float | None = None,
    tol: float = AT_BOUND_TOL,
    max_at_bound_share: float = 0.2,
    min_distinct_share: float = 0.25,
) -> dict:
    """Whether a fitted configuration is degenerate, from its lesion probabilities and features.

    A fit is called degenerate when at least ``max_at_bound_share`` of the
    probabilities are within ``tol`` of 0 or 1, or fewer than
    ``min_distinct_share`` of them are distinct (to ``tol``): the classifier
    then says little more than a few fixed values, and its AUC measures the
    failure of the fit, not the setting that was varied. The features'
    scale is reported beside it: a linear SVM with features of mean squared
    row norm s² behaves like one with C · s² on unit-norm rows, so
    C · s² ≪ 1 means the margin penalty dominates (the usual cause).

    Parameters
    ----------
    probabilities : array_like of float, shape (n,)
        Lesion probabilities of the fit (e.g. TrainALL on TestALL).
    features : array_like, shape (n_images, d), optional
        The features as the SVM saw them (standardised or not).
    penalty_c : float, optional
        The SVM's C (``CVSettings.svm_c`` of the fit).
    tol, max_at_bound_share, min_distinct_share : float
        The thresholds above.

    Returns
    -------
    dict
        ``n``, ``n_at_bound``, ``at_bound_share``, ``n_distinct``,
        ``distinct_share``, ``mean_row_norm`` and ``c_times_sq_norm`` (NaN
        without ``features``/``svm_c``), ``svm_c``, ``degenerate`` (bool) and
        ``reasons`` (list of str: ``"at_bound"``, ``"few_distinct"``).

    Examples
    --------
    >>> r = fit_degeneracy([0.0, 1.0, 1.0, 0.39, 0.5, 0.5, 0.0, 1.0])
    >>> r["n_at_bound"], r["n_distinct"], r["degenerate"], r["reasons"]
    (5, 4, True, ['at_bound'])
    """
    p = np.asarray(probabilities, dtype=float)
    if p.ndim != 1 or p.size == 0 or not np.isfinite(p).all():
        raise ValueError(f"fit_degeneracy: probabilities must be 1-D, finite, non-empty (shape {p.shape})")
    at_bound = (p <= tol) | (p >= 1 - tol)
    n_distinct = int(np.unique(np.round(p / tol)).size)
    norm = c_sq = float("nan")
    if features is not None:
        X = np.asarray(features, dtype=float)
        sq = np.sum(X**2, axis=1)
        norm = float(np.mean(np.sqrt(sq)))
        if penalty_c is not None:
            c_sq = float(penalty_c) * float(np.mean(sq))
    reasons = []
    if at_bound.mean() >= max_at_bound_share:
        reasons.append("at_bound")
    if n_distinct < min_distinct_share * p.size:
        reasons.append("few_distinct")
    return {
        "n": int(p.size),
        "n_at_bound": int(at_bound.sum()),
        "at_bound_share": float(at_bound.mean()),
        "n_distinct": n_distinct,
        "distinct_share": n_distinct / p.size,
        "mean_row_norm": norm,
        "c_times_sq_norm": c_sq,
        "svm_c": float("nan") if penalty_c is None else float(penalty_c),
        "degenerate": bool(reasons),
        "reasons": reasons,
    }


def result_degeneracy(
    predictions: pd.DataFrame,
    *,
    features=None,
    settings: CVSettings = CVSettings(),
    train: str = "TrainALL",
    test: str = "TestALL",
    **kw,
) -> dict:
    """:func:`fit_degeneracy` of one setting of a :class:`uslib.evaluation.MatrixResult`.

    Parameters
    ----------
    predictions : DataFrame
        :attr:`uslib.evaluation.MatrixResult.predictions` (first repeat used).
    features : ndarray, optional
        The raw features; z-scored here over all images when
        ``settings.standardize`` (each fold's scaler uses its own training
        images, so the SVM saw norms slightly different from these).
    settings : CVSettings
        The run's settings (``svm_c``, ``standardize``).
    train, test : str
        The setting.
    **kw
        Thresholds of :func:`fit_degeneracy`.
    """
    p = predictions[
        (predictions["repeat"] == predictions["repeat"].min())
        & (predictions["train"] == train)
        & (predictions["test"] == test)
    ]
    if p.empty:
        raise ValueError(f"result_degeneracy: no predictions for train {train!r}, test {test!r}")
    X = None
    if features is not None:
        X = np.asarray(features, dtype=float)
        if settings.standardize:
            sd = X.std(axis=0)
            X = (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    return fit_degeneracy(p["probability"].to_numpy(), features=X, penalty_c=settings.svm_c, **kw)


# --------------------------------------------------------------------------- #
# Raw against calibrated
# --------------------------------------------------------------------------- #


def raw_vs_calibrated(labels, decision, probability, *, alpha: float = 0.05) -> dict:
    """AUC of the raw decision values beside that of the calibrated probabilities, same lesions.

    Per-fold Platt maps are monotone, so *within* a fold they keep the
    ranking (if their slope has the right sign); pooled over folds each fold
    has its own map, and a reversing map inverts its fold. The two AUCs are
    compared by DeLong's paired test.

    Returns
    -------
    dict
        ``auc_raw``, ``auc_calibrated``, ``diff`` (calibrated − raw), its
        paired ``ci_low``/``ci_high`` (DeLong, level 1 − ``alpha``), ``p``,
        and ``differ`` (the interval excludes 0).

    Examples
    --------
    >>> r = raw_vs_calibrated([0, 0, 1, 1], [-2.0, -1.0, 1.0, 2.0], [0.9, 0.8, 0.2, 0.1])
    >>> r["auc_raw"], r["auc_calibrated"], r["differ"]
    (1.0, 0.0, True)
    """
    t = ev.delong_paired_test(labels, probability, decision)
    z = stats.norm.ppf(1 - alpha / 2)
    lo, hi = t["diff"] - z * t["se"], t["diff"] + z * t["se"]
    return {
        "auc_raw": t["auc_b"],
        "auc_calibrated": t["auc_a"],
        "diff": t["diff"],
        "ci_low": float(lo),
        "ci_high": float(hi),
        "p": t["p"],
        "differ": bool(lo > 0 or hi < 0),
    }


# --------------------------------------------------------------------------- #
# Open choices
# --------------------------------------------------------------------------- #


def extreme_share(probabilities, *, p_extreme: float = 0.05) -> float:
    """Share of probabilities below ``p_extreme`` or above 1 − ``p_extreme``.

    Examples
    --------
    >>> extreme_share([0.01, 0.5, 0.97, 0.2])
    0.5
    """
    p = np.asarray(probabilities, dtype=float)
    if p.size == 0:
        raise ValueError("extreme_share: no probabilities")
    return float(np.mean((p < p_extreme) | (p > 1 - p_extreme)))


def sensitivity_columns(
    predictions: pd.DataFrame,
    *,
    features=None,
    settings: CVSettings = CVSettings(),
    train: str = "TrainALL",
    test: str = "TestALL",
    p_extreme: float = 0.05,
) -> dict:
    """The fit-diagnostic columns of one sensitivity-table row (one fitted configuration).

    Parameters
    ----------
    predictions : DataFrame
        :attr:`uslib.evaluation.MatrixResult.predictions` of the row's run.
    features : ndarray, optional
        The raw features of the backbone.
    settings : CVSettings
        The row's settings (``svm_c``, ``standardize``).
    train, test : str
        The setting diagnosed.
    p_extreme : float
        See :func:`extreme_share`.

    Returns
    -------
    dict
        ``degenerate``, ``n``, ``n_at_bound``, ``n_distinct``, ``mean_row_norm``,
        ``c_times_sq_norm`` (:func:`result_degeneracy`) and ``extreme_share``.
    """
    deg = result_degeneracy(predictions, features=features, settings=settings, train=train, test=test)
    p = predictions[
        (predictions["repeat"] == predictions["repeat"].min())
        & (predictions["train"] == train)
        & (predictions["test"] == test)
    ]
    return {
        **{k: deg[k] for k in ("degenerate", "n", "n_at_bound", "n_distinct", "mean_row_norm", "c_times_sq_norm")},
        "extreme_share": extreme_share(p["probability"].to_numpy(), p_extreme=p_extreme),
    }


def calibration_extremes(
    runs: Mapping[str, pd.DataFrame], *, train: str = "TrainALL", test: str = "TestALL", p_extreme: float = 0.05
) -> pd.DataFrame:
    """The extreme-probability share of each calibration run, side by side.

    Parameters
    ----------
    runs : mapping calibration -> predictions
        E.g. ``{"grouped": result.predictions, "image": image_result.predictions}``
        (:attr:`uslib.evaluation.MatrixResult.predictions`, first repeat used).
    train, test : str
        The setting.
    p_extreme : float

    Returns
    -------
    DataFrame
        ``calibration``, ``extreme_share``, ``at_bound_share`` (within
        :data:`AT_BOUND_TOL` of 0/1), ``auc``, ``n_lesions``.
    """
    rows = []
    for cal, p in runs.items():
        g = p[(p["repeat"] == p["repeat"].min()) & (p["train"] == train) & (p["test"] == test)]
        if g.empty:
            raise ValueError(f"calibration_extremes: run {cal!r} has no predictions for {train} on {test}")
        prob = g["probability"].to_numpy()
        rows.append(
            {
                "calibration": cal,
                "extreme_share": extreme_share(prob, p_extreme=p_extreme),
                "at_bound_share": fit_degeneracy(prob)["at_bound_share"],
                "auc": ev.roc_auc(g["label"].to_numpy(), prob),
                "n_lesions": int(len(g)),
            }
        )
    return pd.DataFrame(rows)


def c_grid(low: float = 0.01, high: float = 100.0, *, per_decade: int = 1) -> list[float]:
    """A logarithmic grid of SVM C values, both ends included.

    Examples
    --------
    >>> c_grid()
    [0.01, 0.1, 1.0, 10.0, 100.0]
    """
    if not 0 < low < high or per_decade < 1:
        raise ValueError(f"c_grid: need 0 < low < high and per_decade >= 1, got {low}, {high}, {per_decade}")
    n = int(round(math.log10(high / low) * per_decade)) + 1
    return [float(f"{v:.6g}") for v in np.logspace(math.log10(low), math.log10(high), n)]


def amax_scope_gap_db(peak_db) -> dict:
    """How much a data-set-wide A_max would darken each scan against its own A_max.

    Parameters
    ----------
    peak_db : array_like of float, shape (n_scans,)
        Each scan's maximum echo amplitude in dB (any common reference).

    Returns
    -------
    dict
        ``gap_db`` (ndarray: data-set maximum − each scan's, ≥ 0),
        ``median_db``, ``max_db``, ``n_scans``. With a data-set A_max, scan
        i's B-mode is its own-A_max image shifted down by ``gap_db[i]`` dB
        before the dynamic-range window is applied
        (:func:`uslib.reconstruction.bmode` with ``a_max=``).

    Examples
    --------
    >>> r = amax_scope_gap_db([-1.0, 0.0, -4.0])
    >>> r["gap_db"].tolist(), r["median_db"], r["max_db"]
    ([1.0, 0.0, 4.0], 1.0, 4.0)
    """
    p = np.asarray(peak_db, dtype=float)
    if p.ndim != 1 or p.size == 0 or not np.isfinite(p).all():
        raise ValueError("amax_scope_gap_db: peak_db must be 1-D, finite and non-empty")
    gap = p.max() - p
    return {"gap_db": gap, "median_db": float(np.median(gap)), "max_db": float(gap.max()), "n_scans": int(p.size)}
