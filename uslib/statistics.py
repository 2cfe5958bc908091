"""Statistics of out-of-fold probabilities: ROC AUC and its intervals, paired tests, agreement.

ROC AUC (:func:`roc_auc`) and the operating point closest to (0, 1), with
a threshold per fold (:func:`nested_operating_point`); DeLong's variance,
interval and paired test (fast algorithm of Sun & Xu 2014); class-stratified
bootstrap intervals of an AUC or of a contrast of AUCs on the same lesions;
Holm's step-down adjustment; Bland–Altman agreement; and the count of AUCs
whose interval lies below chance. Pure functions of labels and scores:
nothing here fits a model.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats
from sklearn.metrics import roc_curve as _sk_roc_curve

__all__ = [
    "roc_auc",
    "roc_curve",
    "closest_to_corner",
    "operating_point",
    "nested_operating_point",
    "delong_components",
    "delong_variance",
    "delong_ci",
    "delong_paired_test",
    "bootstrap_ci",
    "auc_contrast_ci",
    "bland_altman",
    "holm",
]


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
    return {
        "index": i,
        "threshold": float(thresholds[i]),
        "sensitivity": float(tpr[i]),
        "specificity": float(1.0 - fpr[i]),
        "distance": float(d[i]),
    }


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
    return {
        "threshold": pt["threshold"],
        "sensitivity": pt["sensitivity"],
        "specificity": pt["specificity"],
        "accuracy": float(np.mean(pred == y)),
    }


def nested_operating_point(labels, scores, fold, thresholds) -> dict:
    """Accuracy, sensitivity and specificity with a threshold per outer fold.

    Lesion i is called malignant when ``scores[i] >= thresholds[fold[i]]``
    (thresholds from :func:`uslib.evaluation.nested_thresholds`); the counts are pooled over
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
    return {
        "threshold": float(np.median(thr)),
        "sensitivity": float(pred[y].mean()),
        "specificity": float((~pred[~y]).mean()),
        "accuracy": float(np.mean(pred == y)),
    }


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


def bootstrap_ci(
    labels, scores, *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float]:
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


def auc_contrast_ci(
    labels, scores, weights, *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float]:
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
    return {
        "mean_diff": mean,
        "sd_diff": sd,
        "loa_low": mean - 1.96 * sd,
        "loa_high": mean + 1.96 * sd,
        "n": int(d.size),
    }


def holm(p) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    order = np.argsort(p)
    adj = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    out = np.empty_like(p)
    out[order] = np.minimum(adj, 1.0)
    return out
