"""Platt maps that never silently invert a classifier's ranking.

Platt's sigmoid P(y = 1 | f) = 1 / (1 + exp(A f + B)) is monotone in the
decision value f, but its direction is the sign of A: A < 0 keeps the SVM's
ranking (larger f, larger probability), A > 0 *reverses* it. The fit is a
logistic regression on out-of-fold decision values of the training lesions;
on a small training set those values can be anti-correlated with the labels
by chance, the maximum-likelihood A comes out positive, and every test
lesion of that fold is ranked backwards although the SVM itself ranks them
the right way round. Neither libsvm nor
:class:`sklearn.calibration.CalibratedClassifierCV` constrain the sign, hence
this module (the likelihood is the one of
:func:`uslib.evaluation.platt_scaling`, with the target smoothing of Lin, Lin &
Weng 2007, so that an unconstrained fit gives the same A and B).

What a reversing fit is replaced with
-------------------------------------
The maximum-likelihood sigmoid *constrained* to keep the ranking, A ≤ −ε
(:func:`platt_fit`). The negative log-likelihood is convex in (A, B), so when
the free optimum has A > −ε the constrained optimum lies on the boundary
A = −ε: the probabilities are (to within ε) the fold's smoothed base rate, and
the SVM's own order survives as a tie-break. Why this and not another map:

* not the free (reversing) fit: its sign is decided by a few noisy
  out-of-fold values, and it turns a classifier that ranks correctly into one
  that ranks backwards — a calibration artefact reported as discrimination;
* not A = 0 exactly: a flat map ties every test lesion of the fold, so the
  fold contributes AUC 0.5 by construction, mixing a calibration failure into
  the discrimination measure;
* not the identity (or any fixed rank-preserving map such as a logistic of
  f): decision values are not probabilities, so its probabilities would be
  on an arbitrary scale, and over-confident.

The constrained map says exactly what the calibration data support: no
evidence that the decision values carry the probability in the learnt
direction (flat, at the base rate), and no licence to reverse them.

``ε`` is relative to the largest |f| of the fit (:data:`MIN_STEEPNESS`), so
the probabilities of the fold differ by at most about ε from the base rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize

__all__ = ["MIN_STEEPNESS", "PlattFit", "platt_fit", "platt_map", "libsvm_platt_reverses", "fold_report"]

#: Smallest steepness |A| · max|f| that a constrained fit keeps (its probabilities differ by at most about this).
MIN_STEEPNESS = 1e-6


@dataclass(frozen=True)
class PlattFit:
    """One Platt fit, checked for the direction of its slope.

    Attributes
    ----------
    a, b : float
        The map in use: P(y = 1 | f) = 1 / (1 + exp(a f + b)).
    a_free, b_free : float
        The unconstrained maximum-likelihood fit.
    reversing : bool
        ``a_free`` has the wrong sign (≥ 0 up to ε): the free fit would rank
        the lesions against the SVM's decision values (or tie them).
    constrained : bool
        ``a`` differs from ``a_free`` (the fit was replaced by the constrained one).
    n, n_positive : int
        Number of decision values and of positives in the fit.
    """

    a: float
    b: float
    a_free: float
    b_free: float
    reversing: bool
    constrained: bool
    n: int
    n_positive: int


def _smoothed(f, labels, sample_weight):
    f = np.asarray(f, dtype=float)
    y = np.asarray(labels)
    if f.ndim != 1 or f.shape != y.shape or f.size == 0:
        raise ValueError(f"platt_fit: decision {f.shape} and labels {y.shape} must be 1-D, equal, non-empty")
    if not np.isfinite(f).all():
        raise ValueError("platt_fit: non-finite decision values")
    if not set(np.unique(y).tolist()) <= {0, 1, False, True}:
        raise ValueError(f"platt_fit: labels must be 0/1, got {np.unique(y).tolist()}")
    y = y.astype(bool)
    w = np.ones_like(f) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    if w.shape != f.shape or (w < 0).any() or not w.sum() > 0:
        raise ValueError("platt_fit: sample_weight must be non-negative, shaped like decision, not all 0")
    n_pos, n_neg = float(w[y].sum()), float(w[~y].sum())
    t = np.where(y, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    return f, y, w, t, n_pos, n_neg


def platt_fit(decision, labels, *, sample_weight=None, monotone: bool = True) -> PlattFit:
    """Platt's sigmoid on decision values, constrained not to reverse their ranking.

    Parameters
    ----------
    decision : array_like of float, shape (n,)
        Out-of-fold decision values (positive: class 1).
    labels : array_like of {0, 1}, shape (n,)
    sample_weight : array_like of float, shape (n,), optional
    monotone : bool
        Replace a reversing fit by the constrained one (see the module notes).
        ``False`` returns the free fit in ``a``/``b`` (still flagged).

    Returns
    -------
    PlattFit

    Examples
    --------
    Decision values that rank the labels backwards: the free slope is
    positive (reversing); the constrained map is flat at the smoothed base
    rate, (2 · 3/4 + 2 · 1/4) / 4 = 1/2, and keeps the order of ``f``.

    >>> fit = platt_fit([-2.0, -1.0, 1.0, 2.0], [1, 1, 0, 0])
    >>> fit.reversing, fit.constrained, fit.a_free > 0 > fit.a
    (True, True, True)
    >>> p = platt_map([-2.0, 2.0], fit)
    >>> bool(np.allclose(p, 0.5, atol=1e-5) and p[1] > p[0])
    True
    """
    f, y, w, t, n_pos, n_neg = _smoothed(decision, labels, sample_weight)
    scale = float(np.abs(f).max()) or 1.0
    g = f / scale

    def nll(theta):
        z = theta[0] * g + theta[1]
        r = w * (1.0 / (1.0 + np.exp(-z)) - (1.0 - t))
        return float(np.sum(w * (np.logaddexp(0.0, z) - (1.0 - t) * z))), np.array([r @ g, r.sum()])

    b0 = math.log((n_neg + 1.0) / (n_pos + 1.0))
    res = minimize(nll, np.array([0.0, b0]), jac=True, method="BFGS", options={"gtol": 1e-10, "maxiter": 1000})
    a_free, b_free = float(res.x[0]), float(res.x[1])
    reversing = a_free > -MIN_STEEPNESS
    a, b = a_free, b_free
    if reversing and monotone:
        # convex NLL: the constrained optimum is on the boundary a = -eps; fit b there (1-D, convex)
        a = -MIN_STEEPNESS
        res_b = minimize(
            lambda v: nll(np.array([a, v[0]]))[0],
            np.array([b0]),
            jac=lambda v: np.array([nll(np.array([a, v[0]]))[1][1]]),
            method="BFGS",
            options={"gtol": 1e-12, "maxiter": 200},
        )
        b = float(res_b.x[0])
    return PlattFit(
        a=a / scale,
        b=b,
        a_free=a_free / scale,
        b_free=b_free,
        reversing=bool(reversing),
        constrained=bool(reversing and monotone),
        n=int(f.size),
        n_positive=int(y.sum()),
    )


def platt_map(decision, fit: PlattFit) -> np.ndarray:
    """P(y = 1 | f) = 1 / (1 + exp(a f + b)) of a :class:`PlattFit`, shape of ``decision``."""
    z = fit.a * np.asarray(decision, dtype=float) + fit.b
    return np.exp(-np.logaddexp(0.0, z))


def libsvm_platt_reverses(prob_a) -> bool:
    """Whether libsvm's Platt map reverses the ranking (``SVC.probA_``; libsvm: P = 1/(1 + exp(A f + B))).

    libsvm (``calibration="image"``) cannot be constrained from outside, but its
    slope can be checked: A ≥ 0 ranks the test images against the decision values.

    Examples
    --------
    >>> libsvm_platt_reverses([-3.2]), libsvm_platt_reverses([0.4])
    (False, True)
    """
    a = np.asarray(prob_a, dtype=float).ravel()
    if a.size != 1:
        raise ValueError(f"libsvm_platt_reverses: expected one binary probA_, got {a.size}")
    return bool(a[0] >= 0)


def fold_report(fits) -> pd.DataFrame:
    """One row per Platt fit: which reversed, which were replaced.

    Parameters
    ----------
    fits : sequence of (dict, PlattFit)
        The keys of each fit (e.g. ``{"repeat": 0, "fold": 3, "train":
        "Train40dB"}``) and the fit.

    Returns
    -------
    DataFrame
        The key columns, then ``a``, ``b``, ``a_free``, ``b_free``,
        ``reversing``, ``constrained``, ``n``, ``n_positive``.
    """
    rows = [
        {
            **dict(k),
            "a": p.a,
            "b": p.b,
            "a_free": p.a_free,
            "b_free": p.b_free,
            "reversing": p.reversing,
            "constrained": p.constrained,
            "n": p.n,
            "n_positive": p.n_positive,
        }
        for k, p in fits
    ]
    return pd.DataFrame(rows)
