"""The classifier of the cross-validation: a linear SVM with Platt probabilities.

:class:`LinearSVM` (the paper's ``SVC(kernel="linear", probability=True)``,
computed through its Gram matrix), Platt's sigmoid (:func:`platt_scaling`),
and the three calls the fold loop of :mod:`uslib.evaluation` makes per
training set: :func:`make_estimator` (a fresh classifier of the run's
:class:`~uslib.cvsettings.CVSettings`), :func:`fit_estimator` and
:func:`p_malignant`. Why the calibration is split by patient by default is in
the module notes of :mod:`uslib.evaluation`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from .cvsettings import CVSettings
from .platt import PlattFit, libsvm_platt_reverses, platt_fit

__all__ = ["platt_scaling", "platt_probability", "LinearSVM", "make_estimator", "fit_estimator", "p_malignant"]


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

    res = minimize(
        nll,
        np.array([0.0, math.log((n_neg + 1.0) / (n_pos + 1.0))]),
        jac=True,
        method="BFGS",
        options={"gtol": 1e-10, "maxiter": 1000},
    )
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
        stratified, seeded by ``random_state``) and a Platt sigmoid fitted
        to them with :func:`uslib.platt.platt_fit`, which replaces a fit whose
        slope would reverse the ranking by the constrained one (flat at the
        base rate, the SVM's order kept as tie-break); without ``groups``
        each image is its own group. The cross-validation passes each
        image's *patient* as its group (a patient's lesions never on both
        sides of a calibration split).
        ``"cv-sigmoid"``: ``CalibratedClassifierCV(method="sigmoid",
        ensemble=False)`` with a stratified shuffled 5-fold split seeded by
        ``random_state``. The class default stays ``"libsvm"`` (so that the
        estimator equals ``SVC(probability=True)``); the cross-validation
        functions of this module default to ``"grouped"`` and pass the lesions.
    random_state : int
        Seed of the internal calibration split.

    Attributes
    ----------
    platt_fit_ : uslib.platt.PlattFit or None
        The checked Platt fit (``"grouped"``: possibly constrained;
        ``"libsvm"``/``"image"``: libsvm's map, its slope checked, never
        constrained); ``None`` for ``"cv-sigmoid"``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 20)
    >>> X = rng.normal(size=(40, 5)) + 2.0 * y[:, None]
    >>> p = LinearSVM().fit(X, y).predict_proba(X)[:, 1]
    >>> bool(p[y == 1].mean() > 0.8 > 0.2 > p[y == 0].mean())
    True
    """

    def __init__(
        self,
        *,
        C: float = 1.0,
        class_weight="balanced",
        standardize: bool = True,
        calibration: str = "libsvm",
        random_state: int = 0,
    ):
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
        self.platt_fit_ = None
        if self.calibration == "grouped":
            g = np.arange(len(y)) if groups is None else np.asarray(groups)
            if g.shape != y.shape:
                raise ValueError(f"LinearSVM.fit: groups {g.shape} and y {y.shape} do not align")
            k = _calibration_splits(y, g, 5)
            if k < 2:  # a class with one group (patient): it cannot be held out by group
                warnings.warn(
                    "LinearSVM(calibration='grouped'): a class has fewer than two groups; "
                    "calibrating with each image as its own group",
                    RuntimeWarning,
                    stacklevel=2,
                )
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
                part = clone(svc).fit(
                    gram[np.ix_(train, train)], y[train], **({} if weight is None else {"sample_weight": weight[train]})
                )
                oof[test] = part.decision_function(gram[np.ix_(test, train)])
            self.model_ = svc.fit(gram, y, **fit_kw)
            # checked Platt fit: a reversing slope is replaced by the constrained one (uslib.platt)
            fit = platt_fit(oof, y == self.model_.classes_[1], sample_weight=fit_kw.get("sample_weight"))
            self.platt_ = (fit.a, fit.b)
            self.platt_fit_ = fit
        elif self.calibration in ("libsvm", "image"):
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*probability.*", category=FutureWarning)
                    svc.set_params(probability=True, random_state=self.random_state)
                    self.model_ = svc.fit(gram, y, **fit_kw)
                    # libsvm's own Platt map cannot be constrained from outside: its slope is checked and reported
                    warnings.filterwarnings("ignore", message=".*prob[AB]_.*", category=FutureWarning)
                    a, b = float(np.ravel(self.model_.probA_)[0]), float(np.ravel(self.model_.probB_)[0])
                reverses = libsvm_platt_reverses([a])
                self.platt_fit_ = PlattFit(
                    a=a,
                    b=b,
                    a_free=a,
                    b_free=b,
                    reversing=reverses,
                    constrained=False,
                    n=int(len(y)),
                    n_positive=int((y == self.model_.classes_[1]).sum()),
                )
            except (TypeError, ValueError) as exc:  # scikit-learn >= 1.11 has no `probability`
                if "probability" not in str(exc):
                    raise
                raise RuntimeError(
                    "LinearSVM(calibration='libsvm') needs SVC(probability=True), which this "
                    "scikit-learn no longer has; use calibration='cv-sigmoid'"
                ) from exc
        elif self.calibration == "cv-sigmoid":
            from sklearn.calibration import CalibratedClassifierCV

            cv = StratifiedKFold(5, shuffle=True, random_state=self.random_state)
            self.model_ = CalibratedClassifierCV(svc, method="sigmoid", ensemble=False, cv=cv).fit(gram, y, **fit_kw)
        else:
            raise ValueError(
                f"LinearSVM: calibration must be 'grouped', 'image' ('libsvm') or 'cv-sigmoid', "
                f"got {self.calibration!r}"
            )
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


def make_estimator(estimator, settings: CVSettings):
    """A fresh classifier of ``settings`` (seeded by ``settings.cv_seed``), or a clone of ``estimator``."""
    if estimator is None:
        return LinearSVM(
            C=settings.svm_c,
            class_weight=settings.class_weight,
            standardize=settings.standardize,
            random_state=settings.cv_seed,
            calibration=settings.calibration,
        )
    est = clone(estimator)
    return make_pipeline(StandardScaler(), est) if settings.standardize else est


def fit_estimator(est, X: np.ndarray, y: np.ndarray, groups: np.ndarray, sample_weight: np.ndarray | None):
    """Fit ``est``; a :class:`LinearSVM` also gets the group (patient) of each image (for grouped calibration)."""
    kw = {}
    if isinstance(est, LinearSVM):
        kw["groups"] = groups
    if sample_weight is not None:
        last = est.steps[-1][0] + "__" if hasattr(est, "steps") else ""
        kw[last + "sample_weight"] = sample_weight
    return est.fit(X, y, **kw)


def p_malignant(est, X) -> np.ndarray:
    proba = np.asarray(est.predict_proba(X))
    classes = list(np.asarray(est.classes_))
    if 1 not in classes:
        raise ValueError(f"classifier classes {classes} do not include the malignant label 1")
    return proba[:, classes.index(1)].astype(np.float64)
