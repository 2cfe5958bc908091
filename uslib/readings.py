"""Sentences that read the results: each is computed from the numbers it interprets.

The results chapters glue these strings into their prose, so that a reading
stays true when the book runs on other data (OASBUD with ImageNet weights
instead of the phantom with random weights): every claim in a sentence is a
branch on the figures it quotes. The figures come from
:mod:`uslib.diagnostics` (verdicts, decision shifts, degenerate fits,
intervals) and :mod:`uslib.platt` (calibration slopes).
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd

__all__ = [
    "verdict_summary",
    "verdict_sentence",
    "reversal_reading",
    "reversal_sentences",
    "degeneracy_reading",
    "sensitivity_reading",
    "amax_scope_reading",
    "calibration_reading",
    "interval_words",
    "table3_reading",
    "drop_reading",
    "extremes_reading",
    "baseline_verdict_sentence",
]


def _ci(lo: float, hi: float, digits: int = 3) -> str:
    return f"{lo:.{digits}f} to {hi:.{digits}f}"


def _are(n: int) -> str:
    return f"{n} is" if n == 1 else f"{n} are"


def _where(row: Mapping, where) -> str:
    return ", ".join(str(row[c]) for c in where if c in row)


# --------------------------------------------------------------------------- #
# Verdicts and reversals
# --------------------------------------------------------------------------- #


def verdict_summary(verdicts: pd.DataFrame, *, where=("backbone", "train", "test")) -> dict:
    """Counts of :func:`uslib.diagnostics.cell_verdicts` and the lowest AUC.

    Returns
    -------
    dict
        ``n``, ``n_above``, ``n_chance``, ``n_reversed``, ``n_below``
        (AUC < 0.5), ``lowest``, ``lowest_ci`` (str), ``lowest_where``,
        ``lowest_verdict``.
    """
    if "verdict" not in verdicts.columns:
        raise ValueError("verdict_summary: table has no column 'verdict' (use diagnostics.cell_verdicts)")
    v = verdicts.reset_index(drop=True)
    i = int(np.nanargmin(v["auc"].to_numpy(dtype=float)))
    low = v.iloc[i]
    return {
        "n": int(len(v)),
        "n_above": int((v["verdict"] == "above chance").sum()),
        "n_chance": int((v["verdict"] == "indistinguishable from chance").sum()),
        "n_reversed": int((v["verdict"] == "reversed").sum()),
        "n_below": int((v["auc"] < 0.5).sum()),
        "lowest": float(low["auc"]),
        "lowest_ci": _ci(float(low["ci_low"]), float(low["ci_high"])),
        "lowest_where": _where(low, where),
        "lowest_verdict": str(low["verdict"]),
    }


def verdict_sentence(summary: Mapping, *, what: str = "AUCs") -> str:
    """What the AUCs of a table say about chance, from :func:`verdict_summary`.

    No stock explanation (the former ``below_chance_sentence`` blamed every
    AUC below 0.5 on weak class signal); a reversed AUC (CI wholly below 0.5) is called systematic.

    Examples
    --------
    >>> s = {"n": 16, "n_above": 10, "n_chance": 6, "n_reversed": 0, "n_below": 2, "lowest": 0.46,
    ...      "lowest_ci": "0.28 to 0.64", "lowest_where": "x", "lowest_verdict": "indistinguishable from chance"}
    >>> "none has a confidence interval wholly below 0.5" in verdict_sentence(s)
    True
    """
    n, what = summary["n"], what
    head = (
        f"Of the {n} {what}, {_are(summary['n_above'])} above chance (95 % CI wholly above 0.5), "
        f"{_are(summary['n_chance'])} indistinguishable from chance (CI contains 0.5) and "
        f"{_are(summary['n_reversed'])} reversed (CI wholly below 0.5)."
    )
    if summary["n_reversed"]:
        return (
            head + f" The lowest is {summary['lowest']:.3f} ({summary['lowest_ci']}; {summary['lowest_where']}). "
            "A reversed AUC means that the classifier ranks benign lesions above malignant ones more often "
            "than chance variation allows: a systematic effect, which the decision values below locate."
        )
    if summary["n_below"]:
        return (
            head + f" {_are(summary['n_below'])} below 0.5 (lowest {summary['lowest']:.3f}, "
            f"{summary['lowest_ci']}; {summary['lowest_where']}), but none has a confidence interval wholly "
            "below 0.5: each is compatible with a classifier that ranks no better than chance, and none "
            "shows a reversed ranking."
        )
    return head + " No AUC is below 0.5."


def reversal_reading(d: Mapping, *, where=("backbone", "train", "test")) -> str:
    """Why one reversed cell is reversed, from its :func:`uslib.diagnostics.decision_shift` figures.

    Parameters
    ----------
    d : mapping
        A row of :func:`uslib.diagnostics.reversal_diagnoses`: ``auc``,
        ``ci_low``, ``ci_high``, ``reference``, ``test``,
        ``shift_benign_gaps``, ``shift_malignant_gaps``,
        ``common_shift_gaps``, ``differential_shift_gaps``, ``gap_ratio``,
        ``n_folds``, ``n_folds_swapped``, ``n_folds_unseparated``,
        ``auc_reference``, ``auc_test``.

    Examples
    --------
    >>> d = {"backbone": "b", "train": "Train40dB", "test": "Test60dB", "reference": "Test40dB", "auc": 0.36,
    ...      "ci_low": 0.29, "ci_high": 0.43, "auc_reference": 0.75, "auc_test": 0.34,
    ...      "shift_benign_gaps": 1.1, "shift_malignant_gaps": -0.4, "common_shift_gaps": 0.35,
    ...      "differential_shift_gaps": 1.5, "gap_ratio": -0.5, "n_folds": 5, "n_folds_swapped": 4,
    ...      "n_folds_unseparated": 0}
    >>> "swap order in 4 of the 5 folds" in reversal_reading(d)
    True
    """
    cell = _where(d, where)
    head = f"{cell}: AUC {d['auc']:.3f} ({_ci(d['ci_low'], d['ci_high'])}), reversed."
    ref, test, k = d["reference"], d["test"], int(d["n_folds"])
    if d["n_folds_unseparated"] * 2 > k or not math.isfinite(d["gap_ratio"]):
        return (
            head + f" In {d['n_folds_unseparated']} of the {k} folds the classifier does not separate the "
            f"classes on {ref} either (AUC of the decision values there {d['auc_reference']:.3f}), so the "
            "reversal is not the result of a shift between ranges: the training range itself gives no "
            "learnt direction to lose."
        )
    sb, sm, D = d["shift_benign_gaps"], d["shift_malignant_gaps"], d["differential_shift_gaps"]
    n_sep = k - int(d["n_folds_unseparated"])
    folds_used = (
        f"{k} folds" if n_sep == k else f"{n_sep} of the {k} folds whose classifier separates the classes on {ref}"
    )
    if sb > 0 > sm:
        how = "benign lesions move up and malignant lesions down"
    elif sb >= 0 and sm >= 0:
        how = (
            "both classes move up, the benign lesions further"
            if sb > sm
            else "both classes move up, the malignant lesions further"
        )
    elif sb <= 0 and sm <= 0:
        how = (
            "both classes move down, the malignant lesions further"
            if sm < sb
            else "both classes move down, the benign lesions further"
        )
    else:
        how = "malignant lesions move up and benign lesions down"
    moves = (
        f" Within each fold (one SVM, its own scale), from {ref} to {test} the benign lesions' mean decision "
        f"value moves by {sb:+.2f} and the malignant lesions' by {sm:+.2f} times the fold's gap between the "
        f"class means on {ref} (medians over the {folds_used}; AUC of the decision values {d['auc_reference']:.3f} "
        f"on {ref}, {d['auc_test']:.3f} on {test}): {how}."
    )
    if d["gap_ratio"] < 0:
        why = (
            f" The difference, {D:.2f} gaps, exceeds the one gap that separated the classes, so their means "
            f"swap order in {d['n_folds_swapped']} of the {k} folds: the direction the SVM learnt on {ref} "
            f"points the other way on {test}. This is a domain shift that acts differently on the two "
            "classes, not a lack of class signal."
        )
    else:
        why = (
            f" The class means swap order in only {d['n_folds_swapped']} of the {k} folds (median gap on "
            f"{test} {d['gap_ratio']:.2f} times that on {ref}), so the shift of the class means within folds "
            "does not explain the reversal alone: it also comes from the spread within the classes, or from "
            "how the folds' differently shifted scores mix when they are pooled."
        )
    common = ""
    if abs(d["common_shift_gaps"]) >= 0.5:
        common = (
            f" Both classes also move together by {d['common_shift_gaps']:+.2f} gaps, which shifts every "
            "score against a fixed threshold without changing their order within a fold."
        )
    return head + moves + why + common


def reversal_sentences(
    diagnoses: pd.DataFrame, *, n_reversed: int | None = None, where=("backbone", "train", "test")
) -> str:
    """The readings of every diagnosed reversed cell, or a sentence saying there is none.

    Parameters
    ----------
    diagnoses : DataFrame
        :func:`uslib.diagnostics.reversal_diagnoses`.
    n_reversed : int, optional
        Number of reversed cells in the table, to say how many were not diagnosed.
    """
    if diagnoses.empty:
        if n_reversed:
            return (
                f"{n_reversed} cells are reversed, but none could be diagnosed from decision values "
                "(no decision values for their training sets)."
            )
        return "No train/test cell is reversed, so no reversal needs explaining."
    parts = [reversal_reading(r, where=where) for r in diagnoses.to_dict("records")]
    if n_reversed is not None and n_reversed > len(parts):
        parts.append(
            f"{n_reversed - len(parts)} further reversed cells have no decision-value diagnosis "
            "(a training set's own reference cell, or no decision values computed)."
        )
    return " ".join(parts)


def baseline_verdict_sentence(verdicts: pd.DataFrame, *, name: str = "feature_set") -> str:
    """What the verdicts of compression-free baselines (one AUC each, every dynamic range alike) say.

    A baseline never sees a B-mode, so a reversed baseline cannot be a shift
    between reconstructions; the sentence says so instead of diagnosing it
    with decision values across ranges.

    Examples
    --------
    >>> v = pd.DataFrame({"feature_set": ["QUS", "Morph"], "auc": [0.8, 0.2], "ci_low": [0.6, 0.05],
    ...                   "ci_high": [0.95, 0.4], "verdict": ["above chance", "reversed"]})
    >>> "1 of the 2 compression-free baselines ranks backwards" in baseline_verdict_sentence(v)
    True
    >>> baseline_verdict_sentence(v.iloc[:1]).startswith("No compression-free baseline is reversed")
    True
    """
    if "verdict" not in verdicts.columns:
        raise ValueError("baseline_verdict_sentence: table has no column 'verdict' (use diagnostics.cell_verdicts)")
    rev = verdicts[verdicts["verdict"] == "reversed"]
    n = int(len(verdicts))
    if rev.empty:
        return f"No compression-free baseline is reversed ({n} baselines, one AUC each)."
    cells = "; ".join(f"{r[name]} {r['auc']:.3f} ({_ci(r['ci_low'], r['ci_high'])})" for r in rev.to_dict("records"))
    verb = "ranks" if len(rev) == 1 else "rank"
    return (
        f"{len(rev)} of the {n} compression-free baselines {verb} backwards (CI wholly below 0.5: {cells}). "
        "A baseline never sees a B-mode and has one AUC at every dynamic range, so no shift between "
        "reconstructions can explain it: its features order these lesions against their labels whatever "
        "the reconstruction, a property of the features and of this sample of lesions."
    )


# --------------------------------------------------------------------------- #
# Degenerate fits
# --------------------------------------------------------------------------- #


def degeneracy_reading(deg: Mapping, *, setting: str) -> str:
    """What a fit's :func:`uslib.diagnostics.fit_degeneracy` means for the claim it would support.

    Examples
    --------
    >>> deg = {"n": 40, "n_at_bound": 23, "n_distinct": 4, "degenerate": True, "mean_row_norm": 0.039,
    ...        "c_times_sq_norm": 0.0015, "svm_c": 1.0, "reasons": ["at_bound", "few_distinct"]}
    >>> "degenerate fit" in degeneracy_reading(deg, setting="standardize = False")
    True
    """
    counts = (
        f"{deg['n_at_bound']} of {deg['n']} lesion probabilities are within 1e-6 of 0 or 1 and "
        f"{deg['n_distinct']} distinct values remain"
    )
    scale = ""
    c_sq = deg.get("c_times_sq_norm", float("nan"))
    if c_sq is not None and math.isfinite(c_sq):
        scale = (
            f"; the features' mean row norm is {deg['mean_row_norm']:.3g}, so C = {deg['svm_c']:g} acts "
            f"like C = {c_sq:.2g} on unit-norm features"
        )
        if c_sq < 0.01:
            scale += ", a regularisation so strong that the SVM barely uses the features"
    if deg["degenerate"]:
        return (
            f"{setting} is a degenerate fit: {counts}{scale}. Its AUC and drop describe a classifier that "
            "has collapsed to a few fixed outputs, not the effect of the choice: the row says that this "
            "setting breaks the fit, and it is evidence neither for nor against the claim."
        )
    return f"{setting} is not degenerate: {counts}{scale}."


def sensitivity_reading(rows: pd.DataFrame, *, label: str = "setting") -> str:
    """The ranges of a sensitivity table over its non-degenerate rows, naming the degenerate ones.

    Parameters
    ----------
    rows : DataFrame
        One row per setting: ``label`` column, ``auc``, ``mean_drop``,
        ``degenerate`` (bool; from :func:`uslib.diagnostics.fit_degeneracy`).

    Examples
    --------
    >>> t = pd.DataFrame({"setting": ["as run", "standardize = False"], "auc": [0.77, 0.47],
    ...                   "mean_drop": [0.18, 0.002], "degenerate": [False, True]})
    >>> print(sensitivity_reading(t))  # doctest: +NORMALIZE_WHITESPACE
    Over the 1 non-degenerate rows, TrainALL's AUC ranges from 0.770 to 0.770 and the mean drop from 0.180
    to 0.180. Left out as degenerate fits (their numbers measure a collapsed classifier, not the choice):
    standardize = False.
    """
    ok = rows[~rows["degenerate"].astype(bool)]
    bad = rows[rows["degenerate"].astype(bool)]
    if ok.empty:
        head = "Every row is a degenerate fit, so this table says nothing about the choices it varies."
    else:
        head = (
            f"Over the {len(ok)} non-degenerate rows, TrainALL's AUC ranges from {ok['auc'].min():.3f} to "
            f"{ok['auc'].max():.3f} and the mean drop from {ok['mean_drop'].min():.3f} to "
            f"{ok['mean_drop'].max():.3f}."
        )
    if bad.empty:
        return head + " No row is a degenerate fit."
    return (
        head
        + " Left out as degenerate fits (their numbers measure a collapsed classifier, not the choice): "
        + "; ".join(str(s) for s in bad[label])
        + "."
    )


def amax_scope_reading(rows: pd.DataFrame, *, backbone: str = "") -> str:
    """What the A_max scope does to TrainALL's AUC and the mean drop, read from the two ``amax_scope`` rows.

    Parameters
    ----------
    rows : DataFrame
        Two rows (:func:`uslib.pipeline.get_amax_sensitivity`), the per-scan
        one first: ``auc``, ``auc_ci_low``, ``auc_ci_high``, ``mean_drop``,
        ``drop_ci_low``, ``drop_ci_high``, ``degenerate``.
    backbone : str, optional
        Named at the start of the sentence.

    Examples
    --------
    >>> t = pd.DataFrame({"auc": [0.70, 0.52], "auc_ci_low": [0.62, 0.43], "auc_ci_high": [0.78, 0.61],
    ...                   "mean_drop": [0.10, 0.02], "drop_ci_low": [0.05, -0.03], "drop_ci_high": [0.15, 0.07],
    ...                   "degenerate": [False, False]})
    >>> print(amax_scope_reading(t))  # doctest: +NORMALIZE_WHITESPACE
    With one A_max for the whole data set, TrainALL's AUC is 0.520 (0.430 to 0.610) against 0.700 (0.620 to
    0.780) with A_max per scan on the same images, and the mean drop 0.020 against 0.100. The AUC intervals
    do not overlap: the scope of A_max changes the result.
    """
    if len(rows) != 2:
        raise ValueError(f"amax_scope_reading: expected two rows (per scan, data-set-wide), got {len(rows)}")
    scan, wide = (rows.iloc[i] for i in (0, 1))
    who = f"{backbone}: " if backbone else ""
    head = (
        f"{who}With one A_max for the whole data set, TrainALL's AUC is {wide['auc']:.3f} "
        f"({_ci(wide['auc_ci_low'], wide['auc_ci_high'])}) against {scan['auc']:.3f} "
        f"({_ci(scan['auc_ci_low'], scan['auc_ci_high'])}) with A_max per scan on the same images, and the mean "
        f"drop {wide['mean_drop']:.3f} against {scan['mean_drop']:.3f}."
    )
    bad = [name for name, r in (("per-scan", scan), ("data-set-wide", wide)) if bool(r["degenerate"])]
    if bad:
        return (
            head
            + f" The {' and '.join(bad)} row is a degenerate fit, so the comparison measures a collapse, not the scope."
        )
    overlap = wide["auc_ci_low"] <= scan["auc_ci_high"] and scan["auc_ci_low"] <= wide["auc_ci_high"]
    if overlap:
        return head + " The AUC intervals overlap: at this number of lesions the run cannot tell the two scopes apart."
    return head + " The AUC intervals do not overlap: the scope of A_max changes the result."


# --------------------------------------------------------------------------- #
# Calibration
# --------------------------------------------------------------------------- #


def calibration_reading(report: pd.DataFrame, comparison: Mapping | None = None) -> str:
    """Which Platt fits reversed, which were replaced, and whether raw and calibrated AUCs agree.

    Parameters
    ----------
    report : DataFrame
        :func:`uslib.platt.fold_report` (``reversing``, ``constrained``).
    comparison : mapping, optional
        :func:`uslib.diagnostics.raw_vs_calibrated`.

    Examples
    --------
    >>> rep = pd.DataFrame({"reversing": [False, True], "constrained": [False, True]})
    >>> calibration_reading(rep).startswith("1 of the 2 Platt fits")
    True
    """
    n, r = int(len(report)), int(report["reversing"].sum())
    fixed = int(report["constrained"].sum())
    if r == 0:
        s = f"None of the {n} Platt fits has a slope of the wrong sign: calibration keeps every fold's ranking."
    elif fixed == r:
        s = (
            f"{r} of the {n} Platt fits had a slope of the wrong sign (they would have ranked their fold's "
            "lesions backwards) and were replaced by the fit constrained to keep the SVM's order, which is "
            "flat at the fold's base rate."
        )
    else:
        s = (
            f"{r} of the {n} Platt fits have a slope of the wrong sign and {r - fixed} of them were kept: "
            "those folds' lesions are ranked backwards by calibration, not by the SVM."
        )
    if comparison:
        c = comparison
        if c["differ"]:
            s += (
                f" The calibrated AUC ({c['auc_calibrated']:.3f}) differs from that of the raw decision values "
                f"({c['auc_raw']:.3f}) by more than their paired 95 % CI ({_ci(c['ci_low'], c['ci_high'])}): "
                "calibration, not the classifier, changed the ranking."
            )
        else:
            s += (
                f" The calibrated AUC ({c['auc_calibrated']:.3f}) and that of the raw decision values "
                f"({c['auc_raw']:.3f}) agree within their paired 95 % CI ({_ci(c['ci_low'], c['ci_high'])})."
            )
    return s


# --------------------------------------------------------------------------- #
# Intervals
# --------------------------------------------------------------------------- #


def interval_words(low: float, high: float, *, null: float, above: str, below: str, within: str) -> str:
    """The words for an interval against a null value: ``above`` if wholly above, ``below``, or ``within``.

    Examples
    --------
    >>> interval_words(0.1, 0.3, null=0, above="a loss", below="a gain", within="no clear change")
    'a loss'
    """
    if low > null:
        return above
    if high < null:
        return below
    return within


def table3_reading(intervals: pd.DataFrame, *, backbone: str, rule: str = "nested") -> str:
    """Table III's metrics with their intervals, in words (:func:`uslib.diagnostics.table3_intervals`).

    Examples
    --------
    >>> t = pd.DataFrame({"metric": ["accuracy", "sensitivity", "specificity"], "estimate": [0.6, 0.7, 0.5],
    ...                   "ci_low": [0.45, 0.5, 0.3], "ci_high": [0.75, 0.9, 0.7], "n_repeats": [5] * 3})
    >>> "compatible with chance" in table3_reading(t, backbone="vgg19")
    True
    """
    t = intervals.set_index("metric")
    parts = [
        f"{m} {t.loc[m, 'estimate']:.3f} ({_ci(t.loc[m, 'ci_low'], t.loc[m, 'ci_high'])})"
        for m in ("accuracy", "sensitivity", "specificity")
    ]
    acc = interval_words(
        t.loc["accuracy", "ci_low"],
        t.loc["accuracy", "ci_high"],
        null=0.5,
        above="above chance",
        below="below chance",
        within="compatible with chance",
    )
    reps = int(t["n_repeats"].iloc[0])
    return (
        f"{backbone}, {rule} rule, pooled over {reps} repeat{'s' if reps != 1 else ''}: "
        + ", ".join(parts)
        + f" (95 % CI, patients resampled). The accuracy is {acc}."
    )


def drop_reading(row: Mapping, *, backbone: str) -> str:
    """Chapter 07's worst-case drop as descriptive, and the mean unseen drop as the estimate.

    Parameters
    ----------
    row : mapping
        The ``"worst policy"`` row of :func:`uslib.diagnostics.drop_intervals`
        for ``worst_*``, updated with the mean-unseen figures of the policy
        to quote (``mean_unseen_drop``, ``unseen_ci_low``, ``unseen_ci_high``,
        ``policy`` or ``worst_policy``).

    Examples
    --------
    >>> r = {"worst_drop": 0.54, "worst_ci_low": 0.31, "worst_ci_high": 0.68, "range_at_worst": 80.0,
    ...      "n_ranges": 9, "worst_policy": "Train40dB", "mean_unseen_drop": 0.02, "unseen_ci_low": -0.05,
    ...      "unseen_ci_high": 0.09}
    >>> "compatible with no loss" in drop_reading(r, backbone="vgg19")
    True
    """
    pol = row.get("worst_policy") or row.get("policy")
    s = (
        f"For {backbone} the largest drop, {row['worst_drop']:.3f} ({pol}, lowest at "
        f"{row['range_at_worst']:g} dB; 95 % CI {_ci(row['worst_ci_low'], row['worst_ci_high'])}, the maximum "
        f"over {int(row['n_ranges'])} test ranges taken again in every bootstrap replicate), is a maximum of "
        "noisy differences and so biased upwards: it describes the worst case seen, not the expected loss."
    )
    m = row.get("mean_unseen_drop", float("nan"))
    if m is not None and math.isfinite(m):
        words = interval_words(
            row["unseen_ci_low"],
            row["unseen_ci_high"],
            null=0.0,
            above="a loss beyond chance variation",
            below="a gain beyond chance variation",
            within="compatible with no loss",
        )
        s += (
            f" Averaged over the ranges it was not trained on, the drop is {m:.3f} "
            f"({_ci(row['unseen_ci_low'], row['unseen_ci_high'])}): {words}."
        )
    return s


def extremes_reading(table: pd.DataFrame, *, p_extreme: float = 0.05) -> str:
    """The extreme-probability share of image-level against grouped calibration.

    ``table`` is :func:`uslib.diagnostics.calibration_extremes` with the rows
    ``"grouped"`` and ``"image"``.

    Examples
    --------
    >>> t = pd.DataFrame({"calibration": ["grouped", "image"], "extreme_share": [0.1, 0.6],
    ...                   "at_bound_share": [0.0, 0.2], "auc": [0.77, 0.76]})
    >>> "more" in extremes_reading(t)
    True
    """
    t = table.set_index("calibration")
    if not {"grouped", "image"} <= set(t.index):
        raise ValueError("extremes_reading: needs the 'grouped' and the 'image' calibration rows")
    g, i = t.loc["grouped"], t.loc["image"]
    cmp = (
        "more"
        if i["extreme_share"] > g["extreme_share"]
        else ("fewer" if i["extreme_share"] < g["extreme_share"] else "as many")
    )
    s = (
        f"With image-level calibration {i['extreme_share']:.0%} of the lesion probabilities are below "
        f"{p_extreme:g} or above {1 - p_extreme:g}, against {g['extreme_share']:.0%} with calibration grouped by "
        f"patient ({cmp}), at AUC {i['auc']:.3f} against {g['auc']:.3f}."
    )
    if cmp == "more":
        s += " The image-level split lets near-duplicate images calibrate each other, and it shows."
    elif cmp == "fewer":
        s += " Here the image-level split did not make the probabilities more extreme."
    return s
