"""Patient-level cross-validation, the reconstruction matrix and its statistics.

This module turns a feature matrix ``features`` of shape ``(n_images, d)``,
aligned row by row with an image-set manifest (columns ``image``, ``lesion``,
``patient``, ``label``, ``birads``, ``scan``, ``margin_mm``,
``dynamic_range_db``), into out-of-fold lesion probabilities for every
train/test setting of Byra et al. (2018), Section II.D, and into the numbers
of their Tables I–III and Figure 4.

One loop does every cross-validation of the package:
:func:`cross_validated_probabilities` takes named training sets and a test
set (each a list of dynamic ranges, an image mask, or every image), the
patient-level folds (:func:`resolve_folds`) and the classifier settings,
and returns the out-of-fold P(malignant) of every test image per training
set (:class:`CVProbabilities`, lesion means by
:meth:`CVProbabilities.lesion_probabilities`). :func:`cross_validate`,
:func:`reconstruction_matrix` and :mod:`uslib.robustness` (generalisation
curves, hand-crafted lesion-level baselines) are built on it.

Protocol decisions (the paper is silent or ambiguous; each is a parameter)
--------------------------------------------------------------------------
Folds
    5 folds over *lesions*, stratified by the lesion label and grouped by
    patient (:class:`sklearn.model_selection.StratifiedGroupKFold`,
    ``shuffle=True``, seeded), so that no patient has lesions on both sides of
    a split ("patient specific stratified 5-fold cross-validation").
    :func:`check_folds` guards every split.
Standardisation (``standardize=True``)
    A :class:`~sklearn.preprocessing.StandardScaler` is fitted on the training
    images of each (fold, training set) and applied to its test images. The
    paper does not say; a linear SVM with a fixed ``C = 1`` is not scale
    invariant, and feature scales differ by orders of magnitude between
    backbones (InceptionV3 average pool vs VGG19 ``fc1``) and with
    randomly initialised weights, so without it ``C = 1`` would mean a
    different regularisation for each network.
Classifier
    Linear SVM, ``C = 1``, class weights inversely proportional to the class
    frequencies in the training images (``class_weight="balanced"``). The
    paper's γ = 0.001 has no effect on a linear kernel. Per-image
    probabilities come from libsvm's Platt scaling (an internal 5-fold CV on
    the training images), as :class:`sklearn.svm.SVC` with
    ``kernel="linear", probability=True`` gives them. :class:`LinearSVM`
    computes exactly that model via the linear Gram matrix (``kernel=
    "precomputed"``, one BLAS product in float64): the same probabilities
    (measured: ≤ 1e-15 apart for float64 features, ≤ 1e-6 for float32), 6×
    to 50× faster on 2 cores for 230 to 3,600 training images of 2,048 to
    4,096 features (e.g. 3,614 × 4,096: 3 s instead of 148 s). scikit-learn 1.9 deprecates ``SVC(probability=True)`` (removal
    planned for 1.11); ``calibration="cv-sigmoid"`` gives the recommended
    replacement (:class:`~sklearn.calibration.CalibratedClassifierCV`, sigmoid,
    ``ensemble=False``, stratified shuffled 5-fold), which differs only in the
    internal CV split. In both, the internal calibration folds split images,
    not lesions, so images of one lesion fall on both sides; this is what the
    paper's software did too.
Calibration (``calibration="grouped"``, the default)
    libsvm's image-level Platt split puts near-duplicate images of one lesion
    (two scans × three margins × three dynamic ranges) on both sides of its
    internal calibration folds, so the sigmoid is fitted to decision values
    of images whose twins were in the training set: the probabilities come
    out over-confident (many lesions near 0 or 1) at the same AUC. By
    default the decision function is therefore cross-validated *by lesion*
    within the training images (:class:`~sklearn.model_selection.StratifiedGroupKFold`,
    5 folds or fewer, seeded) and Platt's sigmoid (:func:`platt_scaling`,
    with the target smoothing of Lin, Lin & Weng 2007) is fitted to those
    out-of-fold decision values; the SVM itself is then fitted on all
    training images. ``calibration="image"`` gives the paper's libsvm
    behaviour (the sensitivity run). The ranking of the test images within
    one fold is the same under both (the sigmoid is monotone); pooled AUCs
    differ slightly because each fold has its own sigmoid.
Lesion weighting (``lesion_weighting=False`` by default, as in the paper)
    Every training image counts once, so a lesion with more images weighs
    more, and TrainALL (three images per scan and margin) has about three
    times the effective C of single-range training at the same ``C``. With
    ``lesion_weighting=True`` each training image gets the sample weight
    1 / (its lesion's number of training images), so every lesion has the
    same total weight (libsvm multiplies C by the weight) whatever its image
    count and whatever the training set; the Platt fit is weighted alike.
Lesion probability
    The arithmetic mean of P(malignant) over that lesion's test images whose
    dynamic range is in the test set (6 images per dynamic range: two scans ×
    three margins; 18 for TestALL).
AUC
    From the pooled out-of-fold lesion probabilities of all folds (one ROC per
    setting, as in Figure 5), not the mean of per-fold AUCs.
Operating point
    The ROC point with the smallest Euclidean distance to (0, 1); ties go to
    the first such point in order of decreasing threshold; a lesion is called
    malignant when its probability is ≥ the threshold. Table III gives it by
    two rules (column ``rule``): ``"paper"`` chooses the threshold on the
    pooled out-of-fold probabilities and reports accuracy on those same
    probabilities (the paper's rule: the test lesions choose their own
    threshold, which is optimistic); ``"nested"`` chooses, in each outer
    fold, the threshold on the *training* lesions only — on their inner
    out-of-fold probabilities from a patient-grouped CV within the training
    lesions (:func:`nested_thresholds`; ``inner_splits`` = 3 folds by default,
    to bound its cost) — and applies it to the fold's test lesions
    (:func:`nested_operating_point`). The nested rule is the honest
    estimate of the accuracy a fixed threshold would have on new lesions.
Confidence intervals
    DeLong's variance (fast algorithm of Sun & Xu 2014) and a plain Wald
    interval AUC ± z σ clipped to [0, 1] (no logit transform: simple and
    close to nominal at AUC 0.7–0.9 with ~100 lesions; it degenerates to
    [1, 1] at AUC = 1). ``ci="bootstrap"`` gives a class-stratified
    percentile bootstrap over lesions instead.
Bland–Altman
    Per-lesion probability of the lowest-range classifier minus that of the
    highest-range one (Train40dB − Train60dB) on the same test images, for
    every test set. The paper's Figure 4 does not say which test images;
    the book shows TestALL (every test image of a lesion, scored by both).
Paired tests
    Two families of DeLong paired tests on the same lesions (column ``kind``):
    ``matched_vs_mismatched`` — for each single-range training set, its
    matched test set against each mismatched one (the paper's main claim,
    that a reconstruction mismatch costs AUC); ``trainall_vs_single`` —
    TrainALL against each single-range training set on each test set.
    ``p_holm`` is Holm-adjusted within each family (and backbone); each
    difference also has a class-stratified paired bootstrap interval over
    lesions (``diff_ci_low``/``diff_ci_high``). :func:`mismatch_drop` gives
    the mean matched→mismatched drop with its bootstrap interval.
Repeats
    ``n_repeats`` runs with seeds ``cv_seed, cv_seed + 1, ...`` (new folds and new
    SVM seed each). ``auc``/CI/Table III/Bland–Altman come from the first
    run; ``auc_mean`` and ``auc_sd`` (ddof = 1) summarise all runs.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.metrics import roc_curve as _sk_roc_curve
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from .cvsettings import CALIBRATIONS, CVSettings
from .store import atomic_path, save_json, load_json

__all__ = [
    "LeakageError",
    "platt_scaling",
    "platt_probability",
    "LinearSVM",
    "set_name",
    "lesion_table",
    "patient_folds",
    "check_folds",
    "resolve_folds",
    "Design",
    "score_fold",
    "CVProbabilities",
    "cross_validated_probabilities",
    "cross_validate",
    "MatrixResult",
    "reconstruction_matrix",
    "roc_auc",
    "roc_curve",
    "closest_to_corner",
    "operating_point",
    "nested_thresholds",
    "nested_operating_point",
    "delong_components",
    "delong_variance",
    "delong_ci",
    "delong_paired_test",
    "bootstrap_ci",
    "auc_contrast_ci",
    "mismatch_drop",
    "sensitivity_summary",
    "below_chance",
    "below_chance_sentence",
    "bland_altman",
    "save_results",
    "load_results",
]

#: Manifest columns this module reads.
REQUIRED_COLUMNS = ("lesion", "patient", "label", "dynamic_range_db")

#: Files written by :func:`save_results`.
RESULT_FILES = (
    "matrix.csv",
    "predictions.csv",
    "table3.csv",
    "bland_altman.csv",
    "paired_tests.csv",
    "metrics.json",
)

#: Families of :attr:`MatrixResult.paired_tests` (column ``kind``); Holm's adjustment is within each.
PAIRED_KINDS = ("matched_vs_mismatched", "trainall_vs_single")
#: Columns of :attr:`MatrixResult.paired_tests`.
PAIRED_COLUMNS = ("backbone", "kind", "train_a", "test_a", "train_b", "test_b", "auc_a", "auc_b", "diff", "se",
                  "z", "p", "p_holm", "diff_ci_low", "diff_ci_high")
#: Columns of :attr:`MatrixResult.table3`, one row per rule.
TABLE3_COLUMNS = ("backbone", "rule", "train", "test", "auc", "ci_low", "ci_high", "accuracy", "sensitivity",
                  "specificity", "threshold", "n_lesions", "n_malignant", "n_benign")

_STR_COLUMNS = {"backbone": str, "rule": str, "kind": str, "test_a": str, "test_b": str, "train": str, "test": str, "lesion": str, "patient": str,
                "train_a": str, "train_b": str, "a": str, "b": str}


class LeakageError(ValueError):
    """A cross-validation split lets a patient or lesion leak into its test set."""


# --------------------------------------------------------------------------- #
# Classifier
# --------------------------------------------------------------------------- #


def platt_scaling(decision, labels, *, sample_weight=None) -> tuple[float, float]:
    """Platt's sigmoid fitted to decision values: P(y = 1 | f) = 1 / (1 + exp(A f + B)).

    Maximum likelihood (Platt 1999) with the smoothed targets of Lin, Lin &
    Weng (2007): a positive counts as (N₊ + 1)/(N₊ + 2) and a negative as
    1/(N₋ + 2), where N₊ and N₋ are the (weighted) class totals, so that no
    probability is fitted to exactly 0 or 1. Minimised by BFGS with the
    analytic gradient, from A = 0 and B = log((N₋ + 1)/(N₊ + 1)).

    Parameters
    ----------
    decision : array_like of float, shape (n,)
        Decision values (positive: class 1).
    labels : array_like of {0, 1}, shape (n,)
    sample_weight : array_like of float, shape (n,), optional
        Case weights (also used for N₊ and N₋).

    Returns
    -------
    (A, B) : tuple of float
        A is negative when larger decision values mean class 1.

    Examples
    --------
    Two decision values, each with its own share of positives: the fit is
    saturated, so each probability equals the mean smoothed target there.

    >>> a, b = platt_scaling([-1, -1, -1, 1, 1, 1], [0, 0, 1, 0, 1, 1])
    >>> round(float(platt_probability([1.0], a, b)[0]), 6) == round((2 * 4 / 5 + 1 / 5) / 3, 6)
    True
    """
    f = np.asarray(decision, dtype=float)
    y = np.asarray(labels)
    if f.ndim != 1 or f.shape != y.shape or f.size == 0:
        raise ValueError(f"platt_scaling: decision {f.shape} and labels {y.shape} must be 1-D, equal, non-empty")
    if not np.isfinite(f).all():
        raise ValueError("platt_scaling: non-finite decision values")
    y = y.astype(bool)
    w = np.ones_like(f) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    if w.shape != f.shape or (w < 0).any() or not w.sum() > 0:
        raise ValueError("platt_scaling: sample_weight must be non-negative, shaped like decision, not all 0")
    n_pos, n_neg = float(w[y].sum()), float(w[~y].sum())
    t = np.where(y, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    scale = float(np.abs(f).max()) or 1.0  # decision values of any size: fit on f / scale
    g = f / scale

    def nll(theta):
        z = theta[0] * g + theta[1]
        r = w * (1.0 / (1.0 + np.exp(-z)) - (1.0 - t))  # d nll / dz, since p = 1 / (1 + e^z)
        return float(np.sum(w * (np.logaddexp(0.0, z) - (1.0 - t) * z))), np.array([r @ g, r.sum()])

    from scipy.optimize import minimize

    res = minimize(nll, np.array([0.0, math.log((n_neg + 1.0) / (n_pos + 1.0))]), jac=True, method="BFGS",
                   options={"gtol": 1e-10, "maxiter": 1000})
    return float(res.x[0] / scale), float(res.x[1])


def platt_probability(decision, a: float, b: float) -> np.ndarray:
    """P(y = 1 | f) = 1 / (1 + exp(a f + b)), shape of ``decision`` (see :func:`platt_scaling`)."""
    z = a * np.asarray(decision, dtype=float) + b
    return np.exp(-np.logaddexp(0.0, z))


def _calibration_splits(y: np.ndarray, groups: np.ndarray, n_splits: int) -> int:
    """Number of lesion-grouped calibration folds that leave both classes in every training part."""
    per_class = [len(np.unique(groups[y == c])) for c in np.unique(y)]
    return max(0, min([n_splits] + per_class))


class LinearSVM(ClassifierMixin, BaseEstimator):
    """Linear-kernel SVM with Platt probabilities, fitted through its Gram matrix.

    Equivalent to ``make_pipeline(StandardScaler(), SVC(kernel="linear",
    C=C, class_weight=class_weight, probability=True,
    random_state=random_state))`` (same probabilities to rounding error), but
    the kernel is one float64 matrix product instead of libsvm's per-row dot
    products.

    Parameters
    ----------
    C : float
        Soft-margin penalty.
    class_weight : {"balanced", None} or dict
        Passed to :class:`sklearn.svm.SVC`.
    standardize : bool
        Standardise each feature with the training mean and sd first.
    calibration : {"libsvm", "image", "grouped", "cv-sigmoid"}
        ``"libsvm"`` (or its alias ``"image"``): libsvm's Platt scaling
        (``SVC(probability=True)``, the paper's estimator; its internal
        5-fold split is over images; deprecated in scikit-learn 1.9, its
        FutureWarning is silenced here). ``"grouped"``: decision values
        cross-validated with folds grouped by ``groups`` (5 or fewer,
        stratified, seeded by ``random_state``) and :func:`platt_scaling`
        fitted to them; without ``groups`` each image is its own group.
        ``"cv-sigmoid"``: ``CalibratedClassifierCV(method="sigmoid",
        ensemble=False)`` with a stratified shuffled 5-fold split seeded by
        ``random_state``. The class default stays ``"libsvm"`` (so that the
        estimator equals ``SVC(probability=True)``); the cross-validation
        functions of this module default to ``"grouped"`` and pass the lesions.
    random_state : int
        Seed of the internal calibration split.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 20)
    >>> X = rng.normal(size=(40, 5)) + 2.0 * y[:, None]
    >>> p = LinearSVM().fit(X, y).predict_proba(X)[:, 1]
    >>> bool(p[y == 1].mean() > 0.8 > 0.2 > p[y == 0].mean())
    True
    """

    def __init__(self, *, C: float = 1.0, class_weight="balanced", standardize: bool = True,
                 calibration: str = "libsvm", random_state: int = 0):
        self.C = C
        self.class_weight = class_weight
        self.standardize = standardize
        self.calibration = calibration
        self.random_state = random_state

    def _transform(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"LinearSVM: expected (n, {self.n_features_in_}) features, got {X.shape}")
        if self.scaler_ is not None:
            X = self.scaler_.transform(X)
        return X

    def fit(self, X, y, *, groups=None, sample_weight=None) -> "LinearSVM":
        """Fit the SVM and its calibration.

        Parameters
        ----------
        X : array_like, shape (n, d)
        y : array_like, shape (n,)
        groups : array_like, shape (n,), optional
            Lesion (or other group) of each row: with ``calibration="grouped"``
            no group is on both sides of a calibration split.
        sample_weight : array_like of float, shape (n,), optional
            Per-row weights (libsvm multiplies C by them; also weights the
            Platt fit).
        """
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"LinearSVM.fit: X {X.shape} and y {y.shape} do not align")
        fit_kw = {} if sample_weight is None else {"sample_weight": np.asarray(sample_weight, dtype=float)}
        self.n_features_in_ = X.shape[1]
        self.scaler_ = StandardScaler().fit(X) if self.standardize else None
        self.X_fit_ = self.scaler_.transform(X) if self.standardize else X
        gram = self.X_fit_ @ self.X_fit_.T
        svc = SVC(kernel="precomputed", C=self.C, class_weight=self.class_weight)
        self.platt_ = None
        if self.calibration == "grouped":
            g = np.arange(len(y)) if groups is None else np.asarray(groups)
            if g.shape != y.shape:
                raise ValueError(f"LinearSVM.fit: groups {g.shape} and y {y.shape} do not align")
            k = _calibration_splits(y, g, 5)
            if k < 2:  # a class with one lesion: it cannot be held out by lesion
                warnings.warn("LinearSVM(calibration='grouped'): a class has fewer than two groups; "
                              "calibrating with each image as its own group", RuntimeWarning, stacklevel=2)
                g = np.arange(len(y))
                k = _calibration_splits(y, g, 5)
            cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=self.random_state)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
                splits = list(cv.split(gram, y, groups=g))
            # out-of-fold decision values, as cross_val_predict(method="decision_function") gives them
            # (each split's kernel block gram[train][:, train]), without its per-call overhead
            oof = np.empty(len(y), dtype=np.float64)
            weight = fit_kw.get("sample_weight")
            for train, test in splits:
                part = clone(svc).fit(gram[np.ix_(train, train)], y[train],
                                      **({} if weight is None else {"sample_weight": weight[train]}))
                oof[test] = part.decision_function(gram[np.ix_(test, train)])
            self.model_ = svc.fit(gram, y, **fit_kw)
            self.platt_ = platt_scaling(oof, y == self.model_.classes_[1], sample_weight=fit_kw.get("sample_weight"))
        elif self.calibration in ("libsvm", "image"):
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*probability.*", category=FutureWarning)
                    svc.set_params(probability=True, random_state=self.random_state)
                    self.model_ = svc.fit(gram, y, **fit_kw)
            except (TypeError, ValueError) as exc:  # scikit-learn >= 1.11 has no `probability`
                if "probability" not in str(exc):
                    raise
                raise RuntimeError(
                    "LinearSVM(calibration='libsvm') needs SVC(probability=True), which this "
                    "scikit-learn no longer has; use calibration='cv-sigmoid'") from exc
        elif self.calibration == "cv-sigmoid":
            from sklearn.calibration import CalibratedClassifierCV

            cv = StratifiedKFold(5, shuffle=True, random_state=self.random_state)
            self.model_ = CalibratedClassifierCV(svc, method="sigmoid", ensemble=False, cv=cv).fit(gram, y, **fit_kw)
        else:
            raise ValueError(f"LinearSVM: calibration must be 'grouped', 'image' ('libsvm') or 'cv-sigmoid', "
                             f"got {self.calibration!r}")
        self.classes_ = self.model_.classes_
        return self

    def _kernel(self, X) -> np.ndarray:
        return self._transform(X) @ self.X_fit_.T

    def decision_function(self, X) -> np.ndarray:
        """Signed distance to the hyperplane (positive: ``classes_[1]``), shape (n,)."""
        model = self.model_
        if self.calibration == "cv-sigmoid":
            model = model.calibrated_classifiers_[0].estimator
        return model.decision_function(self._kernel(X))

    def predict_proba(self, X) -> np.ndarray:
        """Platt probabilities, shape (n, 2), columns ordered as ``classes_``."""
        if self.platt_ is not None:
            p1 = platt_probability(self.decision_function(X), *self.platt_)
            return np.column_stack([1.0 - p1, p1])
        return self.model_.predict_proba(self._kernel(X))

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def _make_estimator(estimator, settings: CVSettings):
    """A fresh classifier of ``settings`` (seeded by ``settings.cv_seed``), or a clone of ``estimator``."""
    if estimator is None:
        return LinearSVM(C=settings.svm_c, class_weight=settings.class_weight, standardize=settings.standardize,
                         random_state=settings.cv_seed, calibration=settings.calibration)
    est = clone(estimator)
    return make_pipeline(StandardScaler(), est) if settings.standardize else est


def _fit(est, X: np.ndarray, y: np.ndarray, groups: np.ndarray, sample_weight: np.ndarray | None):
    """Fit ``est``; a :class:`LinearSVM` also gets the lesion of each image (for grouped calibration)."""
    kw = {}
    if isinstance(est, LinearSVM):
        kw["groups"] = groups
    if sample_weight is not None:
        last = est.steps[-1][0] + "__" if hasattr(est, "steps") else ""
        kw[last + "sample_weight"] = sample_weight
    return est.fit(X, y, **kw)


def _p_malignant(est, X) -> np.ndarray:
    proba = np.asarray(est.predict_proba(X))
    classes = list(np.asarray(est.classes_))
    if 1 not in classes:
        raise ValueError(f"classifier classes {classes} do not include the malignant label 1")
    return proba[:, classes.index(1)].astype(np.float64)


# --------------------------------------------------------------------------- #
# Manifest handling and folds
# --------------------------------------------------------------------------- #


def set_name(kind: str, ranges: Sequence[float], *, all_ranges: Sequence[float] | None = None) -> str:
    """Name of a train/test image set: ``"Train40dB"``, ``"TestALL"``, ``"Train40+50dB"``.

    Parameters
    ----------
    kind : {"Train", "Test"}
    ranges : sequence of float
        Dynamic ranges in dB of the set.
    all_ranges : sequence of float, optional
        The full set of ranges; a set holding all of them is called ``ALL``.

    Examples
    --------
    >>> set_name("Train", (40,)), set_name("Test", (40, 50, 60), all_ranges=(40, 50, 60))
    ('Train40dB', 'TestALL')
    """
    ranges = sorted(float(r) for r in ranges)
    if all_ranges is not None and len(ranges) > 1 and ranges == sorted(float(r) for r in all_ranges):
        return f"{kind}ALL"
    return kind + "+".join(f"{r:g}" for r in ranges) + "dB"


def _validate(features, manifest: pd.DataFrame, *, columns: Sequence[str] = REQUIRED_COLUMNS) -> np.ndarray:
    missing = [c for c in columns if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest: missing column(s) {missing}")
    X = np.asarray(features)
    if X.ndim != 2:
        raise ValueError(f"features: expected (n_images, d), got shape {X.shape}")
    if len(X) != len(manifest):
        raise ValueError(f"features: {len(X)} rows but the manifest has {len(manifest)} images")
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise ValueError(f"features: non-finite values in image row(s) {rows}")
    return X


def lesion_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per lesion (order of first appearance): ``lesion``, ``patient``, ``label``.

    Raises
    ------
    ValueError
        If a lesion has images with different patients or labels, or a label
        is not 0 (benign) / 1 (malignant).

    Examples
    --------
    >>> m = pd.DataFrame({"lesion": ["a", "a", "b"], "patient": ["p", "p", "q"],
    ...                   "label": [1, 1, 0], "dynamic_range_db": [40, 50, 40]})
    >>> lesion_table(m).to_dict("list")
    {'lesion': ['a', 'b'], 'patient': ['p', 'q'], 'label': [1, 0]}
    """
    for c in ("lesion", "patient", "label"):
        if c not in manifest.columns:
            raise ValueError(f"manifest: missing column {c!r}")
    m = manifest[["lesion", "patient", "label"]].astype({"lesion": str, "patient": str})
    for c in ("patient", "label"):
        n = m.groupby("lesion", sort=False)[c].nunique()
        if (n > 1).any():
            raise ValueError(f"manifest: lesion {n[n > 1].index[0]!r} has more than one {c}")
    labels = pd.unique(m["label"])
    if not set(np.asarray(labels).tolist()) <= {0, 1}:
        raise ValueError(f"manifest: label must be 0 (benign) or 1 (malignant), got {sorted(labels)}")
    t = m.drop_duplicates("lesion").reset_index(drop=True)
    return pd.DataFrame({"lesion": list(t["lesion"]), "patient": list(t["patient"]),
                         "label": np.asarray(t["label"], dtype=int).tolist()})


def patient_folds(labels, patients, *, n_splits: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Patient-grouped, label-stratified folds over lesions.

    Parameters
    ----------
    labels : array_like, shape (n_lesions,)
        0 benign, 1 malignant.
    patients : array_like, shape (n_lesions,)
        Patient key of each lesion; all lesions of a patient share a fold.
    n_splits : int
    seed : int
        Seed of the shuffle (:class:`~sklearn.model_selection.StratifiedGroupKFold`).

    Returns
    -------
    list of (train_idx, test_idx)
        Sorted integer lesion indices; every lesion is tested exactly once.

    Examples
    --------
    >>> folds = patient_folds([0, 1] * 6, list("aabbccddeeff"), n_splits=3)
    >>> [len(test) for _, test in folds]
    [4, 4, 4]
    """
    labels = np.asarray(labels)
    patients = np.asarray(patients).astype(str)
    if labels.ndim != 1 or labels.shape != patients.shape:
        raise ValueError(f"patient_folds: labels {labels.shape} and patients {patients.shape} must be 1-D and equal")
    n_patients = len(np.unique(patients))
    if n_splits < 2 or n_patients < n_splits:
        raise ValueError(f"patient_folds: n_splits={n_splits} needs 2 <= n_splits <= n_patients ({n_patients})")
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        folds = [(np.sort(tr), np.sort(te)) for tr, te in cv.split(np.zeros(len(labels)), labels, patients)]
    check_folds(folds, patients)
    return folds


def check_folds(folds, patients, labels=None) -> None:
    """Raise :class:`LeakageError` unless ``folds`` is a clean patient-level split.

    Checks that no patient (hence no lesion) is on both sides of any fold and
    that every lesion is tested exactly once. With ``labels``, also that every
    training set holds both classes (``ValueError`` otherwise).

    Parameters
    ----------
    folds : sequence of (train_idx, test_idx)
        Lesion indices.
    patients : array_like, shape (n_lesions,)
    labels : array_like, shape (n_lesions,), optional

    Examples
    --------
    >>> check_folds([([0], [1, 2]), ([1, 2], [0])], ["a", "b", "b"])
    >>> check_folds([([0, 1], [2]), ([2], [0, 1])], ["a", "b", "b"])
    Traceback (most recent call last):
    ...
    uslib.evaluation.LeakageError: fold 0: patient 'b' is in the training set (lesions [1]) and the test set (lesions [2])
    """
    patients = np.asarray(patients).astype(str)
    n = len(patients)
    tested = np.zeros(n, dtype=int)
    first_fold = np.full(n, -1)
    for k, (train, test) in enumerate(folds):
        train = np.asarray(train, dtype=int)
        test = np.asarray(test, dtype=int)
        for name, idx in (("train", train), ("test", test)):
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise LeakageError(f"fold {k}: {name} index out of range for {n} lesions")
        both = np.intersect1d(patients[train], patients[test])
        if both.size:
            p = str(both[0])
            raise LeakageError(
                f"fold {k}: patient {p!r} is in the training set (lesions {train[patients[train] == p].tolist()}) "
                f"and the test set (lesions {test[patients[test] == p].tolist()})")
        for i in test:
            if tested[i]:
                raise LeakageError(f"lesion {i} (patient {str(patients[i])!r}) is tested twice: "
                                   f"folds {first_fold[i]} and {k}")
            tested[i] = 1
            first_fold[i] = k
        if labels is not None:
            y = np.asarray(labels)[train]
            if len(np.unique(y)) < 2:
                raise ValueError(f"fold {k}: the training lesions hold only class {np.unique(y).tolist()}")
    never = np.flatnonzero(tested == 0)
    if never.size:
        raise LeakageError(f"lesion(s) {never[:5].tolist()} (patient {str(patients[never[0]])!r}) never tested")


def _in_ranges(dynamic_range_db: np.ndarray, ranges: Sequence[float]) -> np.ndarray:
    ranges = np.atleast_1d(np.asarray(ranges, dtype=float))
    return np.isclose(dynamic_range_db[:, None], ranges[None, :], rtol=0, atol=1e-6).any(axis=1)


def _is_mask(images) -> bool:
    return images is not None and np.asarray(images).dtype == bool


def _describe(images) -> str:
    """How a selection of images is named in error messages."""
    if images is None:
        return ""
    if _is_mask(images):
        return " in the given image mask"
    return f" with dynamic range in {list(images)} dB"


@dataclass(frozen=True, eq=False)
class Design:
    """A feature matrix and its manifest, checked and indexed once.

    Build it with :meth:`Design.build`; select images with :meth:`select`.

    Attributes
    ----------
    X : ndarray, shape (n_images, d)
        The features, as given (not copied).
    lesions : DataFrame
        :func:`lesion_table` of the manifest: ``lesion``, ``patient``,
        ``label``, one row per lesion in order of first appearance.
    code : ndarray of int, shape (n_images,)
        Row of ``lesions`` that each image belongs to.
    dynamic_range_db : ndarray of float, shape (n_images,), or None
        Dynamic range of each image, dB; ``None`` when the manifest has no
        ``dynamic_range_db`` column (e.g. one row of lesion-level features
        per lesion), in which case images can be selected by mask only.

    Examples
    --------
    >>> m = pd.DataFrame({"lesion": ["a", "a", "b"], "patient": ["p", "p", "q"],
    ...                   "label": [1, 1, 0], "dynamic_range_db": [40, 50, 40]})
    >>> d = Design.build(np.zeros((3, 2)), m)
    >>> d.code.tolist(), d.image_labels.tolist(), d.select((40,)).tolist()
    ([0, 0, 1], [1, 1, 0], [True, False, True])
    """

    X: np.ndarray
    lesions: pd.DataFrame
    code: np.ndarray
    dynamic_range_db: np.ndarray | None

    @classmethod
    def build(cls, features, manifest: pd.DataFrame) -> "Design":
        """Check ``features`` against ``manifest`` and index the images by lesion.

        Parameters
        ----------
        features : array_like, shape (n_images, d)
            Finite values, row-aligned with ``manifest``.
        manifest : DataFrame
            Columns ``lesion``, ``patient``, ``label`` and, to select images by
            dynamic range, ``dynamic_range_db``.

        Raises
        ------
        ValueError
            If a column is missing, the shapes disagree, a feature is not
            finite, or a lesion has two patients or labels.
        """
        X = _validate(features, manifest, columns=("lesion", "patient", "label"))
        lesions = lesion_table(manifest)
        code = pd.Index(lesions["lesion"]).get_indexer(manifest["lesion"].astype(str))
        dr = (np.asarray(manifest["dynamic_range_db"], dtype=float)
              if "dynamic_range_db" in manifest.columns else None)
        return cls(X, lesions, code, dr)

    @property
    def n_images(self) -> int:
        """Number of images (rows of ``X``)."""
        return len(self.X)

    @property
    def image_labels(self) -> np.ndarray:
        """Label of each image (its lesion's), shape (n_images,)."""
        return self.lesions["label"].to_numpy()[self.code]

    def select(self, images=None) -> np.ndarray:
        """Boolean mask of a selection of images, shape (n_images,).

        Parameters
        ----------
        images : None, sequence of float, or array_like of bool
            ``None``: every image. A sequence of numbers: the dynamic ranges
            (dB, matched to 1e-6 dB) whose images are selected. A boolean
            array of shape (n_images,): that mask itself.
        """
        n = self.n_images
        if images is None:
            return np.ones(n, bool)
        if _is_mask(images):
            mask = np.asarray(images)
            if mask.shape != (n,):
                raise ValueError(f"image mask: expected shape ({n},), got {mask.shape}")
            return mask
        if self.dynamic_range_db is None:
            raise ValueError("manifest: missing column(s) ['dynamic_range_db'] (needed to select images "
                             "by dynamic range)")
        return _in_ranges(self.dynamic_range_db, images)


def resolve_folds(lesions: pd.DataFrame, folds=None, *, n_splits: int = 5,
                  seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The lesion folds of a cross-validation: given ones checked, or new ones.

    Parameters
    ----------
    lesions : DataFrame
        :func:`lesion_table` of the manifest (``patient`` and ``label`` are used).
    folds : sequence of (train_idx, test_idx), optional
        Lesion indices (rows of ``lesions``); sorted and checked. Default:
        :func:`patient_folds` with ``n_splits`` and ``seed``.
    n_splits, seed : int
        For :func:`patient_folds` when ``folds`` is not given.

    Returns
    -------
    list of (train_idx, test_idx)
        Sorted integer arrays that passed :func:`check_folds` with the labels
        (no patient on both sides, every lesion tested once, both classes in
        every training set).

    Examples
    --------
    >>> les = pd.DataFrame({"lesion": list("abcd"), "patient": list("ppqr"), "label": [0, 1, 0, 1]})
    >>> [te.tolist() for _, te in resolve_folds(les, [([3, 2], [0, 1]), ([0, 1], [2, 3])])]
    [[0, 1], [2, 3]]
    """
    patients = lesions["patient"].to_numpy()
    labels = lesions["label"].to_numpy()
    if folds is None:
        folds = patient_folds(labels, patients, n_splits=n_splits, seed=seed)
    else:
        folds = [(np.sort(np.asarray(tr, dtype=int)), np.sort(np.asarray(te, dtype=int))) for tr, te in folds]
    check_folds(folds, patients, labels)
    return folds


def _lesion_weights(code: np.ndarray) -> np.ndarray:
    """1 / (number of rows of the same lesion) for each row: every lesion sums to 1."""
    counts = np.bincount(code)
    return 1.0 / counts[code]


def _fold_loop(design: Design, folds, *, train_sets: Mapping[str, object], train_rows: Mapping[str, np.ndarray],
               test_rows: np.ndarray, make, progress: bool | str = False,
               lesion_weighting: bool = False) -> tuple[dict, np.ndarray]:
    """The fold loop itself: per fold, fit one classifier per training set, score the test images once.

    ``train_rows``/``test_rows`` are image masks (:meth:`Design.select`);
    ``train_sets`` gives the selections as specified, for error messages.
    ``folds`` are used as given (the callers check them). Returns P(malignant)
    per training set and image (NaN where not scored) and each lesion's fold
    (-1 if never tested).
    """
    y_img = design.image_labels
    n_les = len(design.lesions)
    probs = {name: np.full(design.n_images, np.nan) for name in train_sets}
    fold_of = np.full(n_les, -1)
    fold_iter = folds
    if progress:
        from tqdm.auto import tqdm
        fold_iter = tqdm(folds, desc=progress if isinstance(progress, str) else None, leave=False)
    for k, (tr, te) in enumerate(fold_iter):
        fold_of[te] = k
        train_l = np.zeros(n_les, bool)
        train_l[np.asarray(tr, dtype=int)] = True
        test_l = np.zeros(n_les, bool)
        test_l[np.asarray(te, dtype=int)] = True
        scored = np.flatnonzero(test_l[design.code] & test_rows)
        for name, sel in train_rows.items():
            rows = np.flatnonzero(train_l[design.code] & sel)
            if rows.size == 0:
                raise ValueError(f"fold {k}, {name}: no training images{_describe(train_sets[name])}")
            if len(np.unique(y_img[rows])) < 2:
                raise ValueError(f"fold {k}, {name}: training images hold only class "
                                 f"{np.unique(y_img[rows]).tolist()}")
            if scored.size:
                weight = _lesion_weights(design.code[rows]) if lesion_weighting else None
                est = _fit(make(), design.X[rows], y_img[rows], design.code[rows], weight)
                probs[name][scored] = _p_malignant(est, design.X[scored])
    return probs, fold_of


def score_fold(features, manifest: pd.DataFrame, train_lesions, test_lesions, *,
               train_sets: Mapping[str, Sequence[float]], test_ranges: Sequence[float],
               settings: CVSettings = CVSettings(), estimator=None) -> dict[str, np.ndarray]:
    """Fit one classifier per training set on one fold; score the fold's test images once.

    Parameters
    ----------
    features : ndarray, shape (n_images, d)
    manifest : DataFrame
        The image-set manifest, row-aligned with ``features``.
    train_lesions, test_lesions : array_like of int
        Lesion indices into :func:`lesion_table` ``(manifest)``.
    train_sets : mapping name -> dynamic ranges (dB) or image mask
        E.g. ``{"Train40dB": (40,), "TrainALL": (40, 50, 60)}``; see
        :meth:`Design.select`.
    test_ranges : sequence of float, or image mask
        The test images to score (the union of all test sets).
    settings, estimator
        See :func:`cross_validate` (``n_splits`` and ``n_repeats`` are not used).

    Returns
    -------
    dict name -> ndarray, shape (n_images,)
        P(malignant) for the scored test images, NaN elsewhere.

    See Also
    --------
    cross_validated_probabilities : the same over all folds.
    """
    design = Design.build(features, manifest)
    make = lambda: _make_estimator(estimator, settings)  # noqa: E731
    probs, _ = _fold_loop(design, [(train_lesions, test_lesions)], train_sets=train_sets,
                          train_rows={n: design.select(s) for n, s in train_sets.items()},
                          test_rows=design.select(test_ranges), make=make,
                          lesion_weighting=settings.lesion_weighting)
    return probs


@dataclass(eq=False)
class CVProbabilities:
    """Out-of-fold probabilities of :func:`cross_validated_probabilities`.

    Attributes
    ----------
    probabilities : dict name -> ndarray, shape (n_images,)
        For each training set, P(malignant) of every test-set image, from the
        classifier of the fold in which its lesion was tested; NaN for images
        outside the test set.
    fold : ndarray of int, shape (n_lesions,)
        The fold in which each lesion (row of ``design.lesions``) was tested.
    folds : list of (train_idx, test_idx)
        The lesion folds used (sorted, checked).
    design : Design
        The checked features and manifest.
    """

    probabilities: dict
    fold: np.ndarray
    folds: list
    design: Design

    def lesion_probabilities(self, train_set, test_set=None) -> tuple[np.ndarray, np.ndarray]:
        """Mean P(malignant) per lesion over its scored images in ``test_set``.

        Parameters
        ----------
        train_set : str
            A key of ``probabilities``.
        test_set : None, sequence of float, or array_like of bool
            The images to average (see :meth:`Design.select`); default every
            scored image.

        Returns
        -------
        probability : ndarray of float, shape (n_lesions,)
            NaN for a lesion without such an image.
        n_images : ndarray of int, shape (n_lesions,)
            How many images each mean is over.
        """
        d = self.design
        p_img = self.probabilities[train_set]
        use = d.select(test_set) & np.isfinite(p_img)
        n_les = len(d.lesions)
        counts = np.bincount(d.code[use], minlength=n_les)
        sums = np.bincount(d.code[use], weights=p_img[use], minlength=n_les)
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums / counts, counts


def cross_validated_probabilities(features, manifest: pd.DataFrame, *, train_sets: Mapping[str, object],
                                  test_set=None, folds=None, settings: CVSettings = CVSettings(),
                                  estimator=None, progress: bool | str = False) -> CVProbabilities:
    """The cross-validation loop: out-of-fold P(malignant) of every test image, per training set.

    In each patient-level fold, one classifier per training set is fitted on
    the training lesions' images of that set and scores the test lesions'
    images of ``test_set`` once. Every train/test evaluation of this package
    (:func:`cross_validate`, :func:`reconstruction_matrix`,
    :func:`uslib.robustness.generalisation_curves`,
    :func:`uslib.robustness.handcrafted_baselines`) runs through this loop.

    Parameters
    ----------
    features : ndarray, shape (n_images, d)
        Row-aligned with ``manifest``; one row per image (or per lesion for
        lesion-level features).
    manifest : DataFrame
        Columns ``lesion``, ``patient``, ``label``; ``dynamic_range_db`` when
        a set is given as dynamic ranges.
    train_sets : mapping name -> selection
        Each training set's images: a sequence of dynamic ranges (dB), a
        boolean mask of shape (n_images,), or ``None`` for every image (see
        :meth:`Design.select`). E.g. ``{"Train40dB": (40,), "TrainALL": (40,
        50, 60)}``.
    test_set : selection, optional
        The images to score (the union of all test sets); default every image.
    folds : sequence of (train_idx, test_idx), optional
        Lesion folds (indices into :func:`lesion_table` ``(manifest)``);
        default :func:`patient_folds` with ``settings.n_splits`` and
        ``settings.cv_seed``. See :func:`resolve_folds`.
    settings : CVSettings
        The folds (when not given), the seed of the classifier's internal
        calibration split and the classifier (``n_repeats`` is not used:
        one pass). See :func:`cross_validate`.
    estimator
        See :func:`cross_validate`.
    progress : bool or str
        Show a tqdm bar over the folds (a str is its description).

    Returns
    -------
    CVProbabilities
        ``probabilities`` per training set and image, ``fold`` per lesion,
        the ``folds`` and the ``design``; lesion means with
        :meth:`CVProbabilities.lesion_probabilities`.

    Raises
    ------
    ValueError
        Bad inputs (see :meth:`Design.build`), no training set, or a fold's
        training set without images or with one class only.
    LeakageError
        If given ``folds`` let a patient leak into its test set.

    Examples
    --------
    Twelve patients with one lesion each, two images per lesion, and a
    feature that separates the classes perfectly:

    >>> m = pd.DataFrame({"lesion": np.repeat([f"l{i}" for i in range(12)], 2),
    ...                   "patient": np.repeat([f"p{i}" for i in range(12)], 2),
    ...                   "label": np.repeat([0, 1] * 6, 2), "dynamic_range_db": [40.0, 60.0] * 12})
    >>> X = m[["label"]].to_numpy(float) + np.tile([0.0, 0.1], 12)[:, None]
    >>> cv = cross_validated_probabilities(X, m, train_sets={"Train40dB": (40,)}, settings=CVSettings(n_splits=3))
    >>> p, n = cv.lesion_probabilities("Train40dB", (60,))
    >>> roc_auc(cv.design.lesions["label"], p), n.tolist() == [1] * 12, np.bincount(cv.fold).tolist()
    (1.0, True, [4, 4, 4])
    """
    design = Design.build(features, manifest)
    if not train_sets:
        raise ValueError("train_sets is empty")
    train_rows = {name: design.select(spec) for name, spec in train_sets.items()}
    test_rows = design.select(test_set)
    folds = resolve_folds(design.lesions, folds, n_splits=settings.n_splits, seed=settings.cv_seed)
    make = lambda: _make_estimator(estimator, settings)  # noqa: E731
    probs, fold_of = _fold_loop(design, folds, train_sets=train_sets, train_rows=train_rows, test_rows=test_rows,
                                make=make, progress=progress, lesion_weighting=settings.lesion_weighting)
    return CVProbabilities(probabilities=probs, fold=fold_of, folds=folds, design=design)


def cross_validate(features, manifest: pd.DataFrame, *, train_ranges: Sequence[float],
                   test_ranges: Sequence[float], settings: CVSettings = CVSettings(), folds=None,
                   estimator=None) -> pd.DataFrame:
    """Out-of-fold lesion probabilities for one train/test setting.

    In each patient-level fold, a classifier is trained on the training
    lesions' images whose ``dynamic_range_db`` is in ``train_ranges`` and
    scores the test lesions' images in ``test_ranges``; a lesion's
    probability is the mean P(malignant) of those images
    (:func:`cross_validated_probabilities` with one training set).

    Parameters
    ----------
    features : ndarray, shape (n_images, d)
        Row-aligned with ``manifest``.
    manifest : DataFrame
        Columns ``lesion``, ``patient``, ``label``, ``dynamic_range_db`` at least.
    train_ranges, test_ranges : sequence of float
        Dynamic ranges in dB, e.g. ``(40,)`` or ``(40, 50, 60)``.
    settings : CVSettings
        ``n_splits`` and ``cv_seed``: the folds from :func:`patient_folds`
        (ignored when ``folds`` is given; the seed also seeds the SVM's
        calibration split). ``svm_c``: SVM penalty C (paper: 1).
        ``class_weight``: paper: inversely proportional to the class
        frequencies ("balanced"). ``standardize``: fit a StandardScaler on
        each fold's training images (see the module notes).
        ``calibration``: Platt calibration of the default :class:`LinearSVM`,
        on decision values cross-validated by lesion (``"grouped"``) or
        libsvm's image-level split (``"image"``, the paper's software).
        ``lesion_weighting``: give each training lesion the same total sample
        weight, whatever its number of images (a custom ``estimator`` must
        accept ``sample_weight`` in ``fit``). ``n_repeats`` is not used.
    folds : sequence of (train_idx, test_idx), optional
        Lesion-index folds to use instead; checked with :func:`check_folds`.
    estimator : sklearn classifier, optional
        Replaces the default :class:`LinearSVM` (cloned per fit; preceded by
        a StandardScaler when ``standardize``). It must have ``predict_proba``
        and the classes 0/1.

    Returns
    -------
    DataFrame
        One row per lesion (:func:`lesion_table` order): ``lesion``,
        ``patient``, ``label``, ``fold``, ``probability``, ``n_images``.
    """
    cv = cross_validated_probabilities(features, manifest, train_sets={"train": train_ranges},
                                       test_set=test_ranges, folds=folds, settings=settings, estimator=estimator)
    mean, counts = cv.lesion_probabilities("train", test_ranges)
    lesions = cv.design.lesions
    if (counts == 0).any():
        bad = lesions["lesion"][counts == 0].iloc[0]
        raise ValueError(f"lesion {bad!r} has no image with dynamic range in {list(test_ranges)} dB")
    out = lesions.copy()
    out["fold"] = cv.fold
    out["probability"] = mean
    out["n_images"] = counts
    return out


# --------------------------------------------------------------------------- #
# Metrics
# --------------------------------------------------------------------------- #


def _binary(labels, scores, *names: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=float)
    if y.ndim != 1 or s.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and {names[0] if names else 'scores'} {s.shape} must be 1-D and equal")
    if not set(np.unique(y).tolist()) <= {0, 1, False, True}:
        raise ValueError(f"labels must be 0/1, got {np.unique(y).tolist()}")
    y = y.astype(bool)
    if y.all() or not y.any():
        raise ValueError("labels: both classes (0 and 1) are needed for an ROC analysis")
    if not np.isfinite(s).all():
        raise ValueError(f"{names[0] if names else 'scores'}: non-finite values")
    return y, s


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve, by the Mann–Whitney U statistic (ties count 1/2).

    Parameters
    ----------
    labels : array_like of {0, 1}, shape (n,)
    scores : array_like of float, shape (n,)
        Higher means more likely positive (malignant).

    Examples
    --------
    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y, s = _binary(labels, scores)
    r = stats.rankdata(s)
    m, n = y.sum(), (~y).sum()
    return float((r[y].sum() - m * (m + 1) / 2) / (m * n))


def roc_curve(labels, scores, *, drop_intermediate: bool = False):
    """ROC curve ``(fpr, tpr, thresholds)``; :func:`sklearn.metrics.roc_curve`.

    All distinct thresholds are kept by default (``drop_intermediate=False``);
    ``thresholds[0]`` is ``inf`` (no lesion called positive).
    """
    y, s = _binary(labels, scores)
    return _sk_roc_curve(y.astype(int), s, drop_intermediate=drop_intermediate)


def closest_to_corner(fpr, tpr, thresholds) -> dict:
    """The ROC point closest (Euclidean) to the corner (0, 1).

    Ties go to the first point, i.e. the highest threshold.

    Returns
    -------
    dict
        ``index``, ``threshold``, ``sensitivity`` (tpr), ``specificity``
        (1 − fpr), ``distance``.

    Examples
    --------
    >>> closest_to_corner([0, 0.1, 0.3, 1], [0, 0.6, 0.9, 1], [2, 0.8, 0.4, 0.1])["index"]
    2
    """
    fpr = np.asarray(fpr, dtype=float)
    tpr = np.asarray(tpr, dtype=float)
    thresholds = np.asarray(thresholds, dtype=float)
    if not (fpr.shape == tpr.shape == thresholds.shape) or fpr.ndim != 1 or fpr.size == 0:
        raise ValueError(f"fpr {fpr.shape}, tpr {tpr.shape}, thresholds {thresholds.shape} must be 1-D and equal")
    d = np.hypot(fpr, 1.0 - tpr)
    i = int(np.argmin(d))
    return {"index": i, "threshold": float(thresholds[i]), "sensitivity": float(tpr[i]),
            "specificity": float(1.0 - fpr[i]), "distance": float(d[i])}


def operating_point(labels, scores) -> dict:
    """Sensitivity, specificity and accuracy at the ROC point closest to (0, 1).

    A case is called positive when its score is ≥ ``threshold``.

    Examples
    --------
    >>> op = operating_point([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> op["threshold"], op["sensitivity"], op["specificity"], op["accuracy"]
    (0.8, 0.5, 1.0, 0.75)
    """
    y, s = _binary(labels, scores)
    fpr, tpr, thr = roc_curve(y, s)
    pt = closest_to_corner(fpr, tpr, thr)
    pred = s >= pt["threshold"]
    return {"threshold": pt["threshold"], "sensitivity": pt["sensitivity"],
            "specificity": pt["specificity"], "accuracy": float(np.mean(pred == y))}


def _subset_selection(design: Design, spec, rows: np.ndarray) -> np.ndarray:
    """An image selection of ``design`` restricted to ``rows`` (a mask of the sub-design's images)."""
    return design.select(spec)[rows]


def _inner_folds(lesions: pd.DataFrame, *, n_splits: int, seed: int):
    """Patient-grouped folds within a training set, with as many splits as are feasible (or None)."""
    labels = lesions["label"].to_numpy()
    patients = lesions["patient"].astype(str).to_numpy()
    most = min(int(n_splits), len(np.unique(patients)), int(labels.sum()), int((1 - labels).sum()))
    for k in range(most, 1, -1):
        try:
            return resolve_folds(lesions, patient_folds(labels, patients, n_splits=k, seed=seed))
        except ValueError:  # a grouped split left one class out of a training set: fewer splits
            continue
    return None


def nested_thresholds(features, manifest: pd.DataFrame, folds, *, train_set=None, test_set=None,
                      settings: CVSettings = CVSettings(), estimator=None) -> np.ndarray:
    """Per outer fold, the closest-to-(0, 1) threshold chosen on the training lesions alone.

    For each outer fold, the training lesions are cross-validated on their own
    (patient-grouped, label-stratified :func:`patient_folds` with
    ``settings.n_splits`` folds, fewer where the training lesions do not
    allow that many, seeded by ``settings.cv_seed``) through
    :func:`cross_validated_probabilities`;
    the threshold is the :func:`operating_point` of their inner out-of-fold
    lesion probabilities. No test lesion of the outer fold is seen.

    Parameters
    ----------
    features : ndarray, shape (n_images, d)
    manifest : DataFrame
        Row-aligned with ``features``.
    folds : sequence of (train_idx, test_idx)
        The outer lesion folds (indices into :func:`lesion_table`).
    train_set, test_set : selection
        The training images and the images averaged into a lesion
        probability (see :meth:`Design.select`); default every image.
    settings : CVSettings
        The inner cross-validation (``n_splits``, ``cv_seed``) and the
        classifier, as for :func:`cross_validated_probabilities`.
    estimator
        As for :func:`cross_validated_probabilities`.

    Returns
    -------
    ndarray of float, shape (n_folds,)
        The threshold of each outer fold (NaN where the training lesions
        cannot be cross-validated, e.g. one lesion of a class).
    """
    design = Design.build(features, manifest)
    folds = resolve_folds(design.lesions, folds)
    out = np.full(len(folds), np.nan)
    for k, split in enumerate(folds):
        train_lesions = np.asarray(split[0], dtype=int)
        rows = np.isin(design.code, train_lesions)
        code = design.code[rows]
        sub = pd.DataFrame({"lesion": design.lesions["lesion"].to_numpy()[code],
                            "patient": design.lesions["patient"].to_numpy()[code],
                            "label": design.lesions["label"].to_numpy()[code]})
        inner = _inner_folds(lesion_table(sub), n_splits=settings.n_splits, seed=settings.cv_seed)
        if inner is None:
            continue
        tr_sel, te_sel = _subset_selection(design, train_set, rows), _subset_selection(design, test_set, rows)
        cv = cross_validated_probabilities(design.X[rows], sub, train_sets={"inner": tr_sel}, test_set=te_sel,
                                           folds=inner, settings=settings, estimator=estimator)
        p, n = cv.lesion_probabilities("inner", te_sel)
        y = cv.design.lesions["label"].to_numpy()[n > 0]
        if len(np.unique(y)) == 2:
            out[k] = operating_point(y, p[n > 0])["threshold"]
    return out


def nested_operating_point(labels, scores, fold, thresholds) -> dict:
    """Accuracy, sensitivity and specificity with a threshold per outer fold.

    Lesion i is called malignant when ``scores[i] >= thresholds[fold[i]]``
    (thresholds from :func:`nested_thresholds`); the counts are pooled over
    folds. A fold without a threshold (NaN) uses the median of the others.

    Parameters
    ----------
    labels : array_like of {0, 1}, shape (n,)
    scores : array_like of float, shape (n,)
        Out-of-fold lesion probabilities.
    fold : array_like of int, shape (n,)
        The outer fold in which each lesion was tested.
    thresholds : array_like of float, shape (n_folds,)

    Returns
    -------
    dict
        ``threshold`` (median over folds), ``sensitivity``, ``specificity``,
        ``accuracy``.

    Examples
    --------
    >>> r = nested_operating_point([0, 1, 0, 1], [0.2, 0.6, 0.5, 0.9], [0, 0, 1, 1], [0.5, 0.45])
    >>> r["sensitivity"], r["specificity"], r["accuracy"]
    (1.0, 0.5, 0.75)
    """
    y, s = _binary(labels, scores)
    fold = np.asarray(fold, dtype=int)
    thr = np.asarray(thresholds, dtype=float)
    if fold.shape != y.shape or fold.min() < 0 or fold.max() >= len(thr):
        raise ValueError(f"fold {fold.shape} must index thresholds ({len(thr)}) for every lesion")
    if np.isnan(thr).all():
        nan = float("nan")
        return {"threshold": nan, "sensitivity": nan, "specificity": nan, "accuracy": nan}
    thr = np.where(np.isnan(thr), np.nanmedian(thr), thr)
    pred = s >= thr[fold]
    return {"threshold": float(np.median(thr)), "sensitivity": float(pred[y].mean()),
            "specificity": float((~pred[~y]).mean()), "accuracy": float(np.mean(pred == y))}


def delong_components(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components ``(v10, v01)``.

    ``v10[i]`` is the fraction of negatives that positive i outscores (ties
    1/2), shape (n_positive,); ``v01[j]`` the fraction of positives that
    outscore negative j, shape (n_negative,). Both average to the AUC.
    Computed from midranks (Sun & Xu 2014) in O(n log n).
    """
    y, s = _binary(labels, scores)
    x, z = s[y], s[~y]
    m, n = len(x), len(z)
    tz = stats.rankdata(np.concatenate([x, z]))
    tx, ty = stats.rankdata(x), stats.rankdata(z)
    v10 = (tz[:m] - tx) / n
    v01 = 1.0 - (tz[m:] - ty) / m
    return v10, v01


def delong_variance(labels, scores) -> float:
    """DeLong's variance of the AUC: var(v10)/m + var(v01)/n (ddof = 1)."""
    v10, v01 = delong_components(labels, scores)
    return float(_var(v10) / len(v10) + _var(v01) / len(v01))


def _var(v: np.ndarray) -> float:
    return float(np.var(v, ddof=1)) if len(v) > 1 else 0.0


def delong_ci(labels, scores, *, alpha: float = 0.05) -> tuple[float, float, float]:
    """AUC and its DeLong (Wald) confidence interval ``(auc, low, high)``, clipped to [0, 1].

    Examples
    --------
    >>> auc, lo, hi = delong_ci([0, 0, 1, 1, 1], [0.5, 0.4, 0.9, 0.6, 0.4])
    >>> round(auc, 3), lo <= auc <= hi
    (0.75, True)
    """
    auc = roc_auc(labels, scores)
    se = math.sqrt(max(delong_variance(labels, scores), 0.0))
    zq = stats.norm.ppf(1 - alpha / 2)
    return auc, float(max(0.0, auc - zq * se)), float(min(1.0, auc + zq * se))


def delong_paired_test(labels, scores_a, scores_b) -> dict:
    """DeLong's test of two correlated AUCs on the same cases.

    Returns
    -------
    dict
        ``auc_a``, ``auc_b``, ``diff`` (a − b), ``se`` of the difference,
        ``z`` and the two-sided ``p``. When the difference has zero variance,
        ``z`` is 0 and ``p`` 1 if ``diff`` is 0 (e.g. identical scores).
    """
    y, a = _binary(labels, scores_a, "scores_a")
    _, b = _binary(labels, scores_b, "scores_b")
    va10, va01 = delong_components(y, a)
    vb10, vb01 = delong_components(y, b)
    m, n = len(va10), len(va01)
    s10 = np.cov(np.vstack([va10, vb10])) if m > 1 else np.zeros((2, 2))
    s01 = np.cov(np.vstack([va01, vb01])) if n > 1 else np.zeros((2, 2))
    cov = s10 / m + s01 / n
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    auc_a, auc_b = float(va10.mean()), float(vb10.mean())
    diff = auc_a - auc_b
    se = math.sqrt(var) if var > 1e-15 else 0.0
    if se == 0.0:
        z = 0.0 if abs(diff) < 1e-12 else math.copysign(math.inf, diff)
    else:
        z = diff / se
    p = float(2 * stats.norm.sf(abs(z)))
    return {"auc_a": auc_a, "auc_b": auc_b, "diff": diff, "se": se, "z": float(z), "p": p}


def bootstrap_ci(labels, scores, *, n_boot: int = 2000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float, float]:
    """AUC and a percentile bootstrap interval, resampling cases within each class."""
    y, s = _binary(labels, scores)
    rng = np.random.default_rng(seed)
    pos, neg = s[y], s[~y]
    aucs = np.empty(n_boot)
    yb = np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]
    for b in range(n_boot):
        sb = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
        aucs[b] = roc_auc(yb, sb)
    lo, hi = np.quantile(aucs, [alpha / 2, 1 - alpha / 2])
    return roc_auc(y, s), float(lo), float(hi)


def _stratified_resamples(y: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) case indices: positives resampled among positives, negatives among negatives."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    return np.hstack([rng.choice(pos, (n_boot, len(pos))), rng.choice(neg, (n_boot, len(neg)))])


def _auc_rows(y_sorted: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUC of each row of ``scores`` (shape (B, n)) for the same labels ``y_sorted`` (shape (n,))."""
    m, n = int(y_sorted.sum()), int((~y_sorted).sum())
    r = stats.rankdata(scores, axis=-1)
    return (r[..., y_sorted].sum(axis=-1) - m * (m + 1) / 2) / (m * n)


def auc_contrast_ci(labels, scores, weights, *, n_boot: int = 2000, alpha: float = 0.05,
                    seed: int = 0) -> tuple[float, float, float]:
    """A weighted sum of correlated AUCs and its paired percentile bootstrap interval.

    The lesions are resampled with replacement within each class, once per
    replicate for all score vectors together, so correlations between the
    AUCs (same lesions) are kept.

    Parameters
    ----------
    labels : array_like of {0, 1}, shape (n,)
    scores : array_like of float, shape (k, n)
        k score vectors on the same n cases.
    weights : array_like of float, shape (k,)
        The contrast, e.g. ``[1, -1]`` for a difference of two AUCs.
    n_boot, alpha, seed
        Replicates, level 1 − ``alpha``, seed.

    Returns
    -------
    (estimate, low, high) : tuple of float

    Examples
    --------
    >>> y = [0, 0, 0, 1, 1, 1]
    >>> est, lo, hi = auc_contrast_ci(y, [[1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]], [1, -1], n_boot=200)
    >>> est, lo, hi
    (1.0, 1.0, 1.0)
    """
    S = np.atleast_2d(np.asarray(scores, dtype=float))
    w = np.asarray(weights, dtype=float)
    if w.shape != (S.shape[0],):
        raise ValueError(f"auc_contrast_ci: {S.shape[0]} score vectors but weights of shape {w.shape}")
    y, _ = _binary(labels, S[0])
    for row in S[1:]:
        _binary(labels, row)
    est = float(sum(wj * roc_auc(y, sj) for wj, sj in zip(w, S)))
    idx = _stratified_resamples(y, n_boot, seed)
    yb = y[idx[0]]
    boot = np.stack([_auc_rows(yb, sj[idx]) for sj in S], axis=1) @ w
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return est, float(lo), float(hi)


def mismatch_drop(result: "MatrixResult", *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> dict:
    """The mean matched→mismatched AUC drop of single-range training, with a bootstrap interval.

    Mean over every single-range training set r and every other single range
    r' of AUC(Train r, Test r) − AUC(Train r, Test r'), on the first repeat's
    out-of-fold lesion probabilities; the interval resamples lesions (within
    class) once for all the AUCs (:func:`auc_contrast_ci`).

    Parameters
    ----------
    result : MatrixResult
    n_boot, alpha, seed
        The bootstrap.

    Returns
    -------
    dict
        ``mean_drop``, ``ci_low``, ``ci_high``, ``n_pairs``, ``n_lesions``.
    """
    ranges = [float(r) for r in result.params["ranges"]]
    p = result.predictions
    p = p[p["repeat"] == p["repeat"].min()]
    scores, weights, y = [], [], None
    for r in ranges:
        train = set_name("Train", (r,))
        for t in ranges:
            g = p[(p["train"] == train) & (p["test"] == set_name("Test", (t,)))]
            if y is None:
                y, lesions = g["label"].to_numpy(), g["lesion"].to_numpy()
            elif not np.array_equal(g["lesion"].to_numpy(), lesions):  # pragma: no cover
                raise RuntimeError("mismatch_drop: lesion order differs between settings")
            scores.append(g["probability"].to_numpy())
            weights.append(len(ranges) - 1 if t == r else -1.0)
    n_pairs = len(ranges) * (len(ranges) - 1)
    est, lo, hi = auc_contrast_ci(y, scores, np.asarray(weights) / n_pairs, n_boot=n_boot, alpha=alpha, seed=seed)
    return {"mean_drop": est, "ci_low": lo, "ci_high": hi, "n_pairs": n_pairs, "n_lesions": int(len(y))}


def sensitivity_summary(result: "MatrixResult", *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> dict:
    """The two headline numbers of one run, each with an interval, for a sensitivity table.

    Parameters
    ----------
    result : MatrixResult
    n_boot, alpha, seed
        The bootstrap of :func:`mismatch_drop`.

    Returns
    -------
    dict
        ``auc``, ``auc_ci_low``, ``auc_ci_high``: TrainALL on TestALL (first
        repeat, the run's CI); ``mean_drop``, ``drop_ci_low``,
        ``drop_ci_high``: :func:`mismatch_drop`; and the run's
        ``standardize``, ``calibration``, ``lesion_weighting``.
    """
    ranges = [float(r) for r in result.params["ranges"]]
    t = result.table.set_index(["train", "test"])
    row = t.loc[(set_name("Train", ranges, all_ranges=ranges), set_name("Test", ranges, all_ranges=ranges))]
    drop = mismatch_drop(result, n_boot=n_boot, alpha=alpha, seed=seed)
    return {"auc": float(row["auc"]), "auc_ci_low": float(row["ci_low"]), "auc_ci_high": float(row["ci_high"]),
            "mean_drop": drop["mean_drop"], "drop_ci_low": drop["ci_low"], "drop_ci_high": drop["ci_high"],
            **{k: result.params.get(k) for k in ("standardize", "calibration", "lesion_weighting")}}


def below_chance(table: pd.DataFrame, *, where: Sequence[str] = ("train", "test")) -> dict:
    """Which AUCs of a table fall below 0.5 (for a sentence that explains them).

    Parameters
    ----------
    table : DataFrame
        Columns ``auc`` and, optionally, ``ci_high``, plus the ``where`` columns.
    where : sequence of str
        Columns that name a row (joined by ", " in ``lowest_where``).

    Returns
    -------
    dict
        ``n`` (rows), ``n_below`` (AUC < 0.5), ``n_ci_below`` (whole CI below
        0.5), ``lowest`` (the smallest AUC) and ``lowest_where``.

    Examples
    --------
    >>> t = pd.DataFrame({"train": ["a", "b"], "test": ["x", "y"], "auc": [0.8, 0.3], "ci_high": [0.9, 0.45]})
    >>> below_chance(t)
    {'n': 2, 'n_below': 1, 'n_ci_below': 1, 'lowest': 0.3, 'lowest_where': 'b, y'}
    """
    auc = table["auc"].to_numpy(dtype=float)
    i = int(np.nanargmin(auc))
    hi = table["ci_high"].to_numpy(dtype=float) if "ci_high" in table.columns else np.full(len(auc), np.nan)
    cols = [c for c in where if c in table.columns]
    return {"n": int(len(auc)), "n_below": int(np.sum(auc < 0.5)), "n_ci_below": int(np.sum(hi < 0.5)),
            "lowest": float(auc[i]), "lowest_where": ", ".join(str(table[c].iloc[i]) for c in cols)}


def below_chance_sentence(summary: Mapping, *, what: str = "AUCs") -> str:
    """The sentence a results page prints about AUCs below 0.5 (:func:`below_chance`).

    Examples
    --------
    >>> below_chance_sentence({"n": 4, "n_below": 0, "n_ci_below": 0, "lowest": 0.6, "lowest_where": "a"})
    'No AUC is below 0.5 (4 AUCs).'
    """
    if not summary["n_below"]:
        return f"No AUC is below 0.5 ({summary['n']} {what})."
    return (f"{summary['n_below']} of the {summary['n']} {what} are below 0.5 (lowest {summary['lowest']:.3f}, "
            f"{summary['lowest_where']}), {summary['n_ci_below']} of them with a confidence interval entirely "
            "below 0.5. An AUC below 0.5 means that the pooled out-of-fold probabilities rank benign lesions above "
            "malignant ones. Where the features carry little class signal (random weights, few lesions) this is "
            "an artefact of cross-validation, not a reversed signal: each fold's model learns from the lesions "
            "the fold does not test, so a fold whose test lesions are more often malignant trains on fewer "
            "malignant lesions and calibrates its probabilities lower, and a held-out lesion's own class loses "
            "a member in training; pooled over folds, both effects rank test lesions against their labels.")


def bland_altman(a, b) -> dict:
    """Bland–Altman agreement of paired measurements ``a`` and ``b``.

    Returns
    -------
    dict
        ``mean_diff`` (mean of a − b), ``sd_diff`` (ddof = 1), limits of
        agreement ``loa_low``/``loa_high`` = mean ± 1.96 sd, and ``n``.

    Examples
    --------
    >>> r = bland_altman([1.0, 2.0, 3.0], [0.0, 2.0, 2.0])
    >>> round(r["mean_diff"], 4), round(r["sd_diff"], 4), r["n"]
    (0.6667, 0.5774, 3)
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise ValueError(f"bland_altman: a {a.shape} and b {b.shape} must be 1-D, equal and non-empty")
    d = a - b
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if d.size > 1 else float("nan")
    return {"mean_diff": mean, "sd_diff": sd, "loa_low": mean - 1.96 * sd,
            "loa_high": mean + 1.96 * sd, "n": int(d.size)}


def _holm(p) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    order = np.argsort(p)
    adj = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    out = np.empty_like(p)
    out[order] = np.minimum(adj, 1.0)
    return out


# --------------------------------------------------------------------------- #
# The reconstruction matrix (Tables I–III, Figure 4)
# --------------------------------------------------------------------------- #


@dataclass
class MatrixResult:
    """Train × test AUC matrix of one backbone and everything derived from it.

    Attributes
    ----------
    backbone : str
    table : DataFrame
        Tidy, one row per (train, test): ``backbone``, ``train``, ``test``,
        ``auc``, ``ci_low``, ``ci_high``, ``n_lesions`` and, with repeats,
        ``auc_mean``, ``auc_sd``, ``n_repeats``.
    predictions : DataFrame
        Out-of-fold lesion probabilities: ``backbone``, ``repeat``, ``train``,
        ``test``, ``lesion``, ``patient``, ``label``, ``fold``,
        ``probability``, ``n_images``.
    table3 : DataFrame
        TrainALL × TestALL, one row per ``rule`` (``"paper"``: threshold
        closest to (0, 1) on the pooled out-of-fold probabilities themselves;
        ``"nested"``: per outer fold, threshold chosen on the training lesions'
        inner out-of-fold probabilities, the honest estimate): ``auc``, CI,
        ``accuracy``, ``sensitivity``, ``specificity``, ``threshold`` (nested:
        the median over folds).
    bland_altman : DataFrame
        Lowest- minus highest-range training (``a`` − ``b``) per test set.
    paired_tests : DataFrame
        DeLong paired tests, one row per comparison of setting a
        (``train_a``, ``test_a``) with setting b (``train_b``, ``test_b``) on
        the same lesions; ``kind`` ``"matched_vs_mismatched"`` (one training
        set, its matched test set against a mismatched one) or
        ``"trainall_vs_single"`` (TrainALL against a single range on one test
        set); ``diff`` = AUC a − AUC b with a paired bootstrap interval
        (``diff_ci_low``/``diff_ci_high``), ``p`` and ``p_holm`` (Holm within
        the kind). Columns :data:`PAIRED_COLUMNS`.
    folds : list of (train_idx, test_idx)
        Lesion-index folds of the first repeat (indices into ``lesions``).
    lesions : DataFrame
        :func:`lesion_table` of the manifest.
    params : dict
        The settings of the run.
    """

    backbone: str
    table: pd.DataFrame
    predictions: pd.DataFrame
    table3: pd.DataFrame
    bland_altman: pd.DataFrame
    paired_tests: pd.DataFrame
    folds: list
    lesions: pd.DataFrame
    params: dict = field(default_factory=dict)

    def matrix(self, value: str = "auc") -> pd.DataFrame:
        """Wide train × test table of ``value`` (the layout of Tables I and II)."""
        wide = self.table.pivot(index="train", columns="test", values=value)
        return wide.loc[pd.unique(self.table["train"]), pd.unique(self.table["test"])]

    def to_json(self) -> dict:
        """A JSON-ready summary (for ``metrics.json``); NaN becomes ``None``."""
        lesions = self.lesions["lesion"].tolist()
        return _jsonable({
            "backbone": self.backbone,
            "params": self.params,
            "matrix": self.table.to_dict("records"),
            "table3": self.table3.to_dict("records"),
            "bland_altman": self.bland_altman.to_dict("records"),
            "paired_tests": self.paired_tests.to_dict("records"),
            "lesions": lesions,
            "folds": [{"fold": k, "test": [lesions[i] for i in te]} for k, (_, te) in enumerate(self.folds)],
        })


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _ci(y, s, *, ci: str | None, alpha: float, n_boot: int, seed: int) -> tuple[float, float, float]:
    if ci == "delong":
        return delong_ci(y, s, alpha=alpha)
    if ci == "bootstrap":
        return bootstrap_ci(y, s, n_boot=n_boot, alpha=alpha, seed=seed)
    if ci is None:
        return roc_auc(y, s), float("nan"), float("nan")
    raise ValueError(f"ci must be 'delong', 'bootstrap' or None, got {ci!r}")


def reconstruction_matrix(features, manifest: pd.DataFrame, *, backbone: str,
                          ranges: Sequence[float] = (40, 50, 60), settings: CVSettings = CVSettings(),
                          nested_threshold: bool = True, inner_splits: int = 3, ci: str | None = "delong", alpha: float = 0.05,
                          n_boot: int = 2000, folds=None, estimator=None,
                          progress: bool = False) -> MatrixResult:
    """Train{r}dB/TrainALL × Test{r}dB/TestALL evaluation of one backbone.

    In each fold, one classifier per training set (each single range and all
    ranges together) is fitted once and scores every test image of every
    range once; the lesion probabilities of each test set are then the means
    over that set's images. See the module notes for the protocol.

    Parameters
    ----------
    features : ndarray, shape (n_images, d)
        Row-aligned with ``manifest``.
    manifest : DataFrame
        The image-set manifest.
    backbone : str
        Label stored with the results, e.g. ``"inception_v3"``.
    ranges : sequence of float
        Dynamic ranges (dB), giving ``len(ranges) + 1`` train and test sets.
    settings : CVSettings
        Patient-level folds (:func:`patient_folds`, ``n_splits``); repeat r
        of ``n_repeats`` uses ``cv_seed + r`` for the folds and the SVM
        (:meth:`CVSettings.repeat`); more than one repeat adds
        ``auc_mean``/``auc_sd`` to ``table``. The classifier: see
        :func:`cross_validate`.
    estimator
        See :func:`cross_validate`.
    ci : {"delong", "bootstrap", None}
        Confidence interval of each AUC (first repeat), level 1 − ``alpha``.
    nested_threshold : bool
        Add Table III's ``"nested"`` row (costs an inner cross-validation of
        TrainALL per fold); without it ``table3`` has the ``"paper"`` row only.
    inner_splits : int
        Folds of that inner cross-validation (:func:`nested_thresholds`).
    n_boot : int
        Bootstrap resamples (the AUC CIs when ``ci="bootstrap"``, and the
        intervals of the paired differences).
    folds : sequence of (train_idx, test_idx), optional
        Lesion folds to use (only with ``n_repeats=1``).
    progress : bool
        Show a tqdm bar over folds.

    Returns
    -------
    MatrixResult
    """
    ranges = tuple(float(r) for r in ranges)
    if len(ranges) < 2:
        raise ValueError(f"reconstruction_matrix: need at least two dynamic ranges, got {ranges}")
    n_repeats, seed = settings.n_repeats, settings.cv_seed
    if folds is not None and n_repeats != 1:
        raise ValueError("reconstruction_matrix: explicit folds need n_repeats=1")
    design = Design.build(features, manifest)
    missing = [r for r in ranges if not design.select((r,)).any()]
    if missing:
        raise ValueError(f"manifest: no image with dynamic_range_db {missing}")
    sets = [(r,) for r in ranges] + [ranges]
    train_sets = {set_name("Train", s, all_ranges=ranges): s for s in sets}
    test_sets = {set_name("Test", s, all_ranges=ranges): s for s in sets}
    train_all, test_all = set_name("Train", ranges, all_ranges=ranges), set_name("Test", ranges, all_ranges=ranges)
    lesions = design.lesions

    pred_frames, folds_first = [], None
    for rep in range(n_repeats):
        cv = cross_validated_probabilities(
            features, manifest, train_sets=train_sets, test_set=ranges, folds=folds, settings=settings.repeat(rep),
            estimator=estimator, progress=f"{backbone} repeat {rep}" if progress else False)
        if rep == 0:
            folds_first = cv.folds
        for tname, tranges in test_sets.items():
            for trname in train_sets:
                mean, counts = cv.lesion_probabilities(trname, tranges)
                keep = counts > 0
                pred_frames.append(pd.DataFrame({
                    "backbone": backbone, "repeat": rep, "train": trname, "test": tname,
                    "lesion": lesions["lesion"][keep].to_numpy(), "patient": lesions["patient"][keep].to_numpy(),
                    "label": lesions["label"][keep].to_numpy(), "fold": cv.fold[keep],
                    "probability": mean[keep], "n_images": counts[keep]}))
    predictions = pd.concat(pred_frames, ignore_index=True)
    predictions["train"] = pd.Categorical(predictions["train"], categories=list(train_sets))
    predictions["test"] = pd.Categorical(predictions["test"], categories=list(test_sets))
    predictions = (predictions.sort_values(["repeat", "train", "test"], kind="stable")
                   .astype({"train": str, "test": str}).reset_index(drop=True))
    groups = {key: g for key, g in predictions.groupby(["repeat", "train", "test"], sort=False)}

    rows = []
    for trname in train_sets:
        for tname in test_sets:
            g = groups[(0, trname, tname)]
            auc, lo, hi = _ci(g["label"].to_numpy(), g["probability"].to_numpy(), ci=ci, alpha=alpha,
                              n_boot=n_boot, seed=seed)
            row = {"backbone": backbone, "train": trname, "test": tname, "auc": auc, "ci_low": lo,
                   "ci_high": hi, "n_lesions": len(g)}
            if n_repeats > 1:
                aucs = [roc_auc(groups[(r, trname, tname)]["label"], groups[(r, trname, tname)]["probability"])
                        for r in range(n_repeats)]
                row.update(auc_mean=float(np.mean(aucs)), auc_sd=float(np.std(aucs, ddof=1)), n_repeats=n_repeats)
            rows.append(row)
    table = pd.DataFrame(rows)

    g = groups[(0, train_all, test_all)]
    y, s = g["label"].to_numpy(), g["probability"].to_numpy()
    auc, lo, hi = _ci(y, s, ci=ci, alpha=alpha, n_boot=n_boot, seed=seed)
    common = {"backbone": backbone, "train": train_all, "test": test_all, "auc": auc, "ci_low": lo, "ci_high": hi,
              "n_lesions": len(y), "n_malignant": int(y.sum()), "n_benign": int((1 - y).sum())}
    rows3 = [{**common, "rule": "paper", **operating_point(y, s)}]
    if nested_threshold:
        thresholds = nested_thresholds(features, manifest, folds_first, train_set=ranges, test_set=ranges,
                                       settings=settings.replace(n_splits=inner_splits, n_repeats=1),
                                       estimator=estimator)
        rows3.append({**common, "rule": "nested", **nested_operating_point(y, s, g["fold"].to_numpy(), thresholds)})
    table3 = pd.DataFrame(rows3)
    table3 = table3[list(TABLE3_COLUMNS)]

    lo_name, hi_name = set_name("Train", (min(ranges),)), set_name("Train", (max(ranges),))
    ba_rows, pt_rows = [], []

    def paired_row(kind, train_a, test_a, train_b, test_b):
        ga, gb = groups[(0, train_a, test_a)], groups[(0, train_b, test_b)]
        if not np.array_equal(ga["lesion"].to_numpy(), gb["lesion"].to_numpy()):  # pragma: no cover
            raise RuntimeError("paired test: lesion order differs between settings")
        ya, sa, sb = ga["label"].to_numpy(), ga["probability"].to_numpy(), gb["probability"].to_numpy()
        _, dlo, dhi = auc_contrast_ci(ya, [sa, sb], [1.0, -1.0], n_boot=n_boot, alpha=alpha, seed=seed)
        return {"backbone": backbone, "kind": kind, "train_a": train_a, "test_a": test_a, "train_b": train_b,
                "test_b": test_b, **delong_paired_test(ya, sa, sb), "diff_ci_low": dlo, "diff_ci_high": dhi}

    singles = [(set_name("Train", (r,)), set_name("Test", (r,))) for r in ranges]
    for trname, matched in singles:
        for _, other in singles:
            if other != matched:
                pt_rows.append(paired_row("matched_vs_mismatched", trname, matched, trname, other))
    for tname in test_sets:
        ga, gb = groups[(0, lo_name, tname)], groups[(0, hi_name, tname)]
        if not np.array_equal(ga["lesion"].to_numpy(), gb["lesion"].to_numpy()):  # pragma: no cover
            raise RuntimeError("Bland–Altman: lesion order differs between training sets")
        ba_rows.append({"backbone": backbone, "a": lo_name, "b": hi_name, "test": tname,
                        **bland_altman(ga["probability"].to_numpy(), gb["probability"].to_numpy())})
        for trname in train_sets:
            if trname != train_all:
                pt_rows.append(paired_row("trainall_vs_single", train_all, tname, trname, tname))
    paired = pd.DataFrame(pt_rows)
    paired["p_holm"] = np.nan
    for kind in PAIRED_KINDS:
        sel = (paired["kind"] == kind).to_numpy()
        paired.loc[sel, "p_holm"] = _holm(paired.loc[sel, "p"].to_numpy())
    paired = paired[list(PAIRED_COLUMNS)]

    params = {"ranges": list(ranges), "n_splits": settings.n_splits, "seed": seed, "svm_c": settings.svm_c,
              "class_weight": settings.class_weight, "standardize": settings.standardize,
              "calibration": settings.calibration, "lesion_weighting": settings.lesion_weighting,
              "nested_threshold": nested_threshold,
              "inner_splits": inner_splits if nested_threshold else None,
              "n_repeats": n_repeats,
              "ci": ci, "alpha": alpha, "n_boot": n_boot,
              "estimator": "LinearSVM" if estimator is None else repr(estimator),
              "n_images": int(len(design.X)), "n_features": int(design.X.shape[1]),
              "n_lesions": int(len(lesions)), "n_patients": int(lesions["patient"].nunique())}
    return MatrixResult(backbone=backbone, table=table, predictions=predictions, table3=table3,
                        bland_altman=pd.DataFrame(ba_rows), paired_tests=paired, folds=folds_first,
                        lesions=lesions, params=params)


# --------------------------------------------------------------------------- #
# Persistence
# --------------------------------------------------------------------------- #


_FRAMES = (("matrix.csv", "table"), ("predictions.csv", "predictions"), ("table3.csv", "table3"),
           ("bland_altman.csv", "bland_altman"), ("paired_tests.csv", "paired_tests"))
_INT_COLUMNS = ("repeat", "fold", "label", "n_images", "n_lesions", "n_repeats", "n", "n_malignant", "n_benign")


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def save_results(results, run_dir: str | os.PathLike) -> dict[str, Path]:
    """Write one or several :class:`MatrixResult` s into ``run_dir``.

    Files: ``matrix.csv``, ``predictions.csv``, ``table3.csv``,
    ``bland_altman.csv``, ``paired_tests.csv`` (all backbones stacked, a
    ``backbone`` column) and ``metrics.json`` (``{"backbones": [...],
    "results": {backbone: MatrixResult.to_json()}}``), each written
    atomically; ``metrics.json`` is written last.

    Returns
    -------
    dict file name -> Path
    """
    if isinstance(results, MatrixResult):
        results = [results]
    results = list(results)
    names = [r.backbone for r in results]
    if len(set(names)) != len(names):
        raise ValueError(f"save_results: duplicate backbones {names}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for fname, attr in _FRAMES:
        path = run_dir / fname
        _write_csv(pd.concat([getattr(r, attr) for r in results], ignore_index=True), path)
        out[fname] = path
    columns = {r.backbone: {attr: list(getattr(r, attr).columns) for _, attr in _FRAMES} for r in results}
    out["metrics.json"] = save_json(run_dir / "metrics.json",
                                    {"backbones": names, "columns": columns,
                                     "results": {r.backbone: r.to_json() for r in results}})
    return out


def load_results(run_dir: str | os.PathLike) -> list[MatrixResult]:
    """Read what :func:`save_results` wrote, in the saved backbone order."""
    run_dir = Path(run_dir)
    missing = [f for f in RESULT_FILES if not (run_dir / f).exists()]
    if missing:
        raise FileNotFoundError(f"{run_dir}: missing result file(s) {missing}")
    meta = load_json(run_dir / "metrics.json")
    frames = {f: pd.read_csv(run_dir / f, dtype=_STR_COLUMNS)
              for f in RESULT_FILES if f.endswith(".csv")}
    out = []
    for b in meta["backbones"]:
        js = meta["results"][b]
        pick = {}
        for fname, attr in _FRAMES:
            df = frames[fname]
            df = df.loc[df["backbone"] == b, meta["columns"][b][attr]].reset_index(drop=True)
            ints = [c for c in _INT_COLUMNS if c in df.columns and df[c].notna().all()]
            pick[fname] = df.astype({c: int for c in ints})
        lesion_keys = js["lesions"]
        pos = {k: i for i, k in enumerate(lesion_keys)}
        preds = pick["predictions.csv"]
        first = preds[(preds["repeat"] == 0)].drop_duplicates("lesion").set_index("lesion")
        lesions = pd.DataFrame({"lesion": lesion_keys,
                                "patient": [first.loc[k, "patient"] for k in lesion_keys],
                                "label": [int(first.loc[k, "label"]) for k in lesion_keys]})
        all_idx = np.arange(len(lesion_keys))
        folds = []
        for f in js["folds"]:
            te = np.sort(np.array([pos[k] for k in f["test"]], dtype=int))
            folds.append((np.setdiff1d(all_idx, te), te))
        params = dict(js["params"])
        out.append(MatrixResult(backbone=b, table=pick["matrix.csv"], predictions=preds,
                                table3=pick["table3.csv"], bland_altman=pick["bland_altman.csv"],
                                paired_tests=pick["paired_tests.csv"], folds=folds, lesions=lesions,
                                params=params))
    return out
