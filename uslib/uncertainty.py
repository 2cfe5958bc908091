"""Intervals for the results chapters' figures: Table III pooled over repeats, chapter 07's drops.

Split out of :mod:`uslib.diagnostics` (which reads what the numbers mean)
because these are the resampling machinery:

* :func:`clopper_pearson` — exact binomial interval of one proportion;
* :func:`patient_bootstrap_weights`, :func:`weighted_auc` — the patient-grouped
  bootstrap as resampling *weights* (each lesion counts as often as its
  patient is drawn), so every replicate's AUC is one matrix product;
* :func:`called_malignant`, :func:`table3_intervals` — Table III's accuracy,
  sensitivity and specificity with intervals, pooled over the repeats of
  the cross-validation;
* :func:`drop_intervals` — chapter 07's drops: the worst-case drop
  bootstrapped *with* its maximum over ranges (the selection is part of the
  interval) and the mean drop over unseen ranges.

Why own code: the patient-grouped bootstrap of an AUC with repeated
out-of-fold predictions, and the bootstrap of a maximum over ranges, are not
in scikit-learn or scipy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "clopper_pearson",
    "patient_bootstrap_weights",
    "weighted_auc",
    "called_malignant",
    "table3_intervals",
    "drop_intervals",
]


def clopper_pearson(k: int, n: int, *, alpha: float = 0.05) -> tuple[float, float, float]:
    """Proportion k/n and its exact (Clopper–Pearson) interval, via :func:`scipy.stats.binomtest`.

    Examples
    --------
    >>> est, lo, hi = clopper_pearson(0, 10)
    >>> est, lo, round(hi, 4)  # 1 - 0.025 ** (1 / 10)
    (0.0, 0.0, 0.3085)
    """
    k, n = int(k), int(n)
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"clopper_pearson: need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=1 - alpha, method="exact")
    return k / n, float(ci.low), float(ci.high)


def patient_bootstrap_weights(patients, *, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """Resampling weights of a bootstrap over patients, shape (n_boot, n_lesions).

    Each replicate draws as many patients as there are, with replacement; a
    lesion weighs as many times as its patient was drawn (all lesions of a
    patient, and all repeats of a lesion, move together).

    Examples
    --------
    >>> w = patient_bootstrap_weights(["a", "a", "b"], n_boot=3)
    >>> w.shape, bool((w[:, 0] == w[:, 1]).all()), set(w.sum(axis=1) >= 0) == {True}
    ((3, 3), True, True)
    """
    p = np.asarray(patients).astype(str)
    if p.ndim != 1 or p.size == 0:
        raise ValueError("patient_bootstrap_weights: patients must be 1-D and non-empty")
    uniq, code = np.unique(p, return_inverse=True)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(uniq), np.full(len(uniq), 1.0 / len(uniq)), size=n_boot)
    return counts[:, code].astype(float)


def weighted_auc(labels, scores, weights) -> np.ndarray:
    """AUC with case weights, for one weight vector or a stack of them (Mann–Whitney, ties 1/2).

    AUC = Σᵢ Σⱼ wᵢ wⱼ [sᵢ > sⱼ] (+ ½ on ties) / (Σᵢ wᵢ · Σⱼ wⱼ) over malignant i and
    benign j; NaN for a replicate without one of the classes.

    Parameters
    ----------
    labels : array_like of {0, 1}, shape (n,)
    scores : array_like of float, shape (n,)
    weights : array_like of float, shape (n,) or (B, n)

    Returns
    -------
    float ndarray, shape () or (B,)

    Examples
    --------
    >>> float(weighted_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], [1, 1, 1, 1]))
    0.75
    >>> float(weighted_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], [0, 1, 1, 1]))  # the 0.1 benign dropped
    0.5
    """
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=float)
    w = np.asarray(weights, dtype=float)
    if y.shape != s.shape or w.shape[-1] != s.shape[0]:
        raise ValueError(f"weighted_auc: labels {y.shape}, scores {s.shape}, weights {w.shape} do not align")
    cmp = (s[y][:, None] > s[~y][None, :]) + 0.5 * (s[y][:, None] == s[~y][None, :])
    wp, wn = w[..., y], w[..., ~y]
    num = np.einsum("...i,ij,...j->...", wp, cmp, wn)
    den = wp.sum(axis=-1) * wn.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def called_malignant(scores, fold, thresholds) -> np.ndarray:
    """Per lesion, called malignant at its outer fold's nested threshold (``score >= threshold``).

    As :func:`uslib.evaluation.nested_operating_point`: a fold without a
    threshold (NaN) uses the median of the others.
    """
    s = np.asarray(scores, dtype=float)
    fold = np.asarray(fold, dtype=int)
    thr = np.asarray(thresholds, dtype=float)
    if fold.shape != s.shape or fold.min() < 0 or fold.max() >= len(thr):
        raise ValueError(f"called_malignant: fold {fold.shape} must index thresholds ({len(thr)}) for every lesion")
    if np.isnan(thr).all():
        raise ValueError("called_malignant: no fold has a threshold")
    thr = np.where(np.isnan(thr), np.nanmedian(thr), thr)
    return s >= thr[fold]


def _percentile(boot: np.ndarray, alpha: float) -> tuple[float, float]:
    ok = boot[np.isfinite(boot)]
    if ok.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(ok, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def table3_intervals(calls: pd.DataFrame, *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Accuracy, sensitivity and specificity pooled over repeats, with intervals.

    Parameters
    ----------
    calls : DataFrame
        One row per (repeat, lesion): ``repeat``, ``lesion``, ``patient``,
        ``label`` (0/1) and ``called`` (bool: called malignant at the
        threshold, e.g. :func:`called_malignant`).
    n_boot, alpha, seed
        The bootstrap.

    Returns
    -------
    DataFrame
        One row per metric (``accuracy``, ``sensitivity``, ``specificity``):
        ``estimate`` (pooled over repeats: every lesion's share of correct
        calls, averaged), ``ci_low``/``ci_high`` (percentile bootstrap over
        patients, every repeat of a drawn lesion together), ``k``/``n`` and
        ``cp_low``/``cp_high``: the exact Clopper–Pearson interval of the
        first repeat alone (lesions independent within one repeat),
        ``n_repeats``.
    """
    need = {"repeat", "lesion", "patient", "label", "called"}
    missing = sorted(need - set(calls.columns))
    if missing:
        raise ValueError(f"table3_intervals: calls lack column(s) {missing}")
    c = calls.assign(correct=(calls["called"].astype(bool) == calls["label"].astype(bool)).astype(float))
    per = c.groupby("lesion", sort=False).agg(
        patient=("patient", "first"), label=("label", "first"), correct=("correct", "mean")
    )
    y = per["label"].to_numpy().astype(bool)
    r = per["correct"].to_numpy()
    W = patient_bootstrap_weights(per["patient"].to_numpy(), n_boot=n_boot, seed=seed)
    first = c[c["repeat"] == c["repeat"].min()]
    fy, fc = first["label"].to_numpy().astype(bool), first["correct"].to_numpy().astype(bool)
    rows = []
    for name, sel, fsel in (
        ("accuracy", np.ones_like(y), np.ones_like(fy)),
        ("sensitivity", y, fy),
        ("specificity", ~y, ~fy),
    ):
        if not sel.any():
            raise ValueError(f"table3_intervals: no lesion for {name}")
        est = float(r[sel].mean())
        wsel = W[:, sel]
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = (wsel @ r[sel]) / wsel.sum(axis=1)
        lo, hi = _percentile(boot, alpha)
        k, n = int(fc[fsel].sum()), int(fsel.sum())
        _, cp_lo, cp_hi = clopper_pearson(k, n, alpha=alpha)
        rows.append(
            {
                "metric": name,
                "estimate": est,
                "ci_low": lo,
                "ci_high": hi,
                "k": k,
                "n": n,
                "cp_low": cp_lo,
                "cp_high": cp_hi,
                "n_repeats": int(c["repeat"].nunique()),
            }
        )
    return pd.DataFrame(rows)


def drop_intervals(
    predictions: pd.DataFrame, curves: pd.DataFrame, *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
) -> pd.DataFrame:
    """Chapter 07's drops with intervals: the worst case bootstrapped with its maximum, and the mean unseen drop.

    For each policy, the drop at a test range is ``auc_seen`` (mean AUC over
    the ranges the policy was trained on) minus the AUC there. The
    *worst-case drop* is the largest drop over all test ranges (as
    :func:`uslib.robustness.curve_summary`'s ``worst_drop``) and, per
    backbone, the largest over the policies too. A maximum of noisy
    differences is biased upwards, so each bootstrap replicate resamples
    patients and takes the maximum *again* (over ranges, and over policies
    for the backbone row): the interval covers the selection. The *mean
    unseen drop* averages the drop over the ranges the policy was not
    trained on — no selection, and an interval near nominal.

    Parameters
    ----------
    predictions : DataFrame
        Out-of-fold lesion probabilities of
        :func:`uslib.robustness.generalisation_curves` (``return_predictions``):
        ``backbone``, ``policy``, ``test_range_db``, ``lesion``, ``patient``,
        ``label``, ``probability``.
    curves : DataFrame
        Its curves (``backbone``, ``policy``, ``test_range_db``, ``seen``).
    n_boot, alpha, seed
        The bootstrap over patients.

    Returns
    -------
    DataFrame
        One row per (backbone, policy) and one per backbone with ``policy``
        ``"worst policy"``: ``worst_drop``, ``worst_ci_low``,
        ``worst_ci_high``, ``range_at_worst``, ``mean_unseen_drop``,
        ``unseen_ci_low``, ``unseen_ci_high`` (NaN for the backbone row and
        for a policy without unseen or seen ranges), ``n_ranges``,
        ``n_unseen``, ``worst_policy`` (backbone row).
    """
    out = []
    for bb, pb in predictions.groupby("backbone", sort=False):
        cb = curves[curves["backbone"] == bb]
        lesions = pb.drop_duplicates("lesion").set_index("lesion")
        order = lesions.index
        y = lesions["label"].to_numpy().astype(bool)
        W = patient_bootstrap_weights(lesions["patient"].to_numpy(), n_boot=n_boot, seed=seed)
        ones = np.ones(len(order))
        worst_boot, per_policy = [], []
        for pol, pp in pb.groupby("policy", sort=False):
            cp = cb[cb["policy"] == pol].set_index("test_range_db")
            ranges = sorted(pp["test_range_db"].unique())
            seen = np.array([bool(cp.loc[r, "seen"]) for r in ranges])
            if not seen.any():
                continue
            A, B = np.empty(len(ranges)), np.empty((n_boot, len(ranges)))
            for j, r in enumerate(ranges):
                s = pp[pp["test_range_db"] == r].set_index("lesion")["probability"].reindex(order).to_numpy()
                A[j], B[:, j] = weighted_auc(y, s, ones), weighted_auc(y, s, W)
            drop, drop_b = A[seen].mean() - A, B[:, seen].mean(axis=1, keepdims=True) - B
            j = int(np.argmax(drop))
            wlo, whi = _percentile(drop_b.max(axis=1), alpha)
            row = {
                "backbone": bb,
                "policy": pol,
                "worst_drop": float(drop[j]),
                "worst_ci_low": wlo,
                "worst_ci_high": whi,
                "range_at_worst": float(ranges[j]),
                "n_ranges": len(ranges),
                "n_unseen": int((~seen).sum()),
            }
            if (~seen).any():
                ulo, uhi = _percentile(drop_b[:, ~seen].mean(axis=1), alpha)
                row.update(mean_unseen_drop=float(drop[~seen].mean()), unseen_ci_low=ulo, unseen_ci_high=uhi)
            else:
                row.update(mean_unseen_drop=float("nan"), unseen_ci_low=float("nan"), unseen_ci_high=float("nan"))
            per_policy.append(row)
            worst_boot.append(drop_b.max(axis=1))
        if not per_policy:
            continue
        out.extend(per_policy)
        k = int(np.argmax([r["worst_drop"] for r in per_policy]))
        lo, hi = _percentile(np.max(np.vstack(worst_boot), axis=0), alpha)
        out.append(
            {
                "backbone": bb,
                "policy": "worst policy",
                "worst_drop": per_policy[k]["worst_drop"],
                "worst_ci_low": lo,
                "worst_ci_high": hi,
                "range_at_worst": per_policy[k]["range_at_worst"],
                "n_ranges": per_policy[k]["n_ranges"],
                "n_unseen": per_policy[k]["n_unseen"],
                "mean_unseen_drop": float("nan"),
                "unseen_ci_low": float("nan"),
                "unseen_ci_high": float("nan"),
                "worst_policy": per_policy[k]["policy"],
            }
        )
    return pd.DataFrame(out)
