"""Sentence builders fed contrasting inputs: a real effect, no effect, a reversal, a degenerate fit."""

import numpy as np
import pandas as pd
import pytest

from uslib import diagnostics as dg
from uslib import platt
from uslib import readings as rd


def _table(aucs, cis):
    return dg.cell_verdicts(
        pd.DataFrame(
            {
                "backbone": "b",
                "train": [f"Train{i}" for i in range(len(aucs))],
                "test": "TestX",
                "auc": aucs,
                "ci_low": [c[0] for c in cis],
                "ci_high": [c[1] for c in cis],
            }
        )
    )


def test_verdict_sentence_real_effect_no_effect_and_reversal():
    real = rd.verdict_sentence(rd.verdict_summary(_table([0.8, 0.9], [(0.65, 0.95), (0.8, 1.0)])))
    assert "2 are above chance" in real and "No AUC is below 0.5" in real and "reversed ranking" not in real
    none = rd.verdict_sentence(rd.verdict_summary(_table([0.45, 0.52], [(0.25, 0.65), (0.3, 0.7)])))
    assert "2 are indistinguishable from chance" in none
    assert "none has a confidence interval wholly below 0.5" in none and "systematic" not in none
    rev = rd.verdict_sentence(rd.verdict_summary(_table([0.36, 0.75], [(0.29, 0.43), (0.6, 0.9)])))
    assert "1 is reversed" in rev and "systematic" in rev and "0.360" in rev
    for s in (real, none, rev):
        assert "little class signal" not in s and "artefact" not in s


def _diag(sb, sm, auc=0.3, unseparated=0):
    d = {
        "backbone": "b",
        "train": "Train40dB",
        "test": "Test60dB",
        "reference": "Test40dB",
        "auc": auc,
        "ci_low": auc - 0.07,
        "ci_high": auc + 0.07,
        "auc_reference": 0.75,
        "auc_test": auc,
        "shift_benign_gaps": sb,
        "shift_malignant_gaps": sm,
        "common_shift_gaps": (sb + sm) / 2,
        "differential_shift_gaps": sb - sm,
        "n_folds": 5,
        "n_folds_unseparated": unseparated,
    }
    d["gap_ratio"] = 1 - d["differential_shift_gaps"]
    d["n_folds_swapped"] = 4 if d["gap_ratio"] < 0 else 1
    return d


def test_reversal_reading_follows_the_shift():
    swap = rd.reversal_reading(_diag(1.2, -0.3))
    assert "benign lesions move up and malignant lesions down" in swap and "swap order in 4 of the 5 folds" in swap
    assert "domain shift" in swap and "+1.20" in swap and "-0.30" in swap
    both_up = rd.reversal_reading(_diag(3.0, 1.5))
    assert "both classes move up, the benign lesions further" in both_up and "swap order in 4" in both_up
    assert "move together by +2.25 gaps" in both_up  # a large common shift is named
    kept = rd.reversal_reading(_diag(0.4, 0.1))
    assert "swap order in only 1 of the 5 folds" in kept and "domain shift" not in kept
    partly = rd.reversal_reading(_diag(1.2, -0.3, unseparated=2))
    assert "medians over the 3 of the 5 folds whose classifier separates the classes on Test40dB" in partly
    assert "medians over the 5 folds" in swap
    flat = rd.reversal_reading(_diag(0.5, 0.0, unseparated=3))
    assert "does not separate the classes on Test40dB either" in flat and "domain shift" not in flat


def test_reversal_reading_from_measured_decision_values():
    y = np.array([0, 0, 0, 1, 1, 1])
    ref = np.array([-1.0, -0.8, -0.6, 0.6, 0.8, 1.0])
    test = np.array([1.5, 1.7, 1.9, 0.2, 0.4, 0.6])  # benign up by 2.5, malignant down by 0.4
    d = {
        "backbone": "b",
        "train": "Train40dB",
        "test": "Test60dB",
        "reference": "Test40dB",
        "auc": 0.0,
        "ci_low": 0.0,
        "ci_high": 0.0,
        **dg.decision_shift(y, ref, test),
    }
    s = rd.reversal_reading(d)
    assert "benign lesions move up and malignant lesions down" in s and "swap order in 1 of the 1 folds" in s
    assert rd.reversal_sentences(pd.DataFrame([d]), n_reversed=3).count("reversed") >= 2
    assert "No train/test cell is reversed" in rd.reversal_sentences(pd.DataFrame())


def test_degeneracy_reading_and_sensitivity_ranges():
    p = np.r_[np.zeros(12), np.ones(11), np.full(9, 0.39), np.full(8, 0.5)]
    X = np.full((20, 2048), 0.039 / np.sqrt(2048))
    deg = dg.fit_degeneracy(p, features=X, penalty_c=1.0)
    s = rd.degeneracy_reading(deg, setting="standardize = False")
    assert "degenerate fit" in s and "23 of 40" in s and "barely uses the features" in s
    assert "evidence neither for nor against" in s
    ok = rd.degeneracy_reading(dg.fit_degeneracy(np.linspace(0.05, 0.95, 40)), setting="as run")
    assert "is not degenerate" in ok and "barely" not in ok
    rows = pd.DataFrame(
        {
            "setting": ["as run", "standardize = False", "C = 10"],
            "auc": [0.77, 0.47, 0.74],
            "mean_drop": [0.18, 0.002, 0.15],
            "degenerate": [False, True, False],
        }
    )
    sr = rd.sensitivity_reading(rows)
    assert "0.740 to 0.770" in sr and "0.150 to 0.180" in sr and "0.002" not in sr
    assert "standardize = False" in sr
    assert "No row is a degenerate fit" in rd.sensitivity_reading(rows.assign(degenerate=False))


def test_calibration_reading_names_reversed_and_replaced_folds():
    good = platt.fold_report([({"fold": k}, platt.platt_fit([-1, 1, -2, 2], [0, 1, 0, 1])) for k in range(3)])
    assert rd.calibration_reading(good).startswith("None of the 3 Platt fits")
    bad = platt.fold_report(
        [
            ({"fold": 0}, platt.platt_fit([-1, 1, -2, 2], [1, 0, 1, 0])),
            ({"fold": 1}, platt.platt_fit([-1, 1, -2, 2], [0, 1, 0, 1])),
        ]
    )
    s = rd.calibration_reading(bad, dg.raw_vs_calibrated([0, 0, 1, 1], [-2.0, -1.0, 1.0, 2.0], [0.9, 0.8, 0.2, 0.1]))
    assert "1 of the 2 Platt fits" in s and "were replaced" in s and "calibration, not the classifier" in s
    kept = platt.fold_report([({"fold": 0}, platt.platt_fit([-1, 1, -2, 2], [1, 0, 1, 0], monotone=False))])
    assert "were kept" in rd.calibration_reading(kept)


def test_interval_readings():
    t3 = pd.DataFrame(
        {
            "metric": ["accuracy", "sensitivity", "specificity"],
            "estimate": [0.8, 0.8, 0.8],
            "ci_low": [0.7, 0.6, 0.6],
            "ci_high": [0.9, 0.95, 0.95],
            "n_repeats": [5] * 3,
        }
    )
    assert "above chance" in rd.table3_reading(t3, backbone="b")
    assert "pooled over 5 repeats" in rd.table3_reading(t3, backbone="b")
    row = {
        "worst_drop": 0.54,
        "worst_ci_low": 0.3,
        "worst_ci_high": 0.7,
        "range_at_worst": 80.0,
        "n_ranges": 9,
        "worst_policy": "Train40dB",
        "mean_unseen_drop": 0.2,
        "unseen_ci_low": 0.1,
        "unseen_ci_high": 0.3,
    }
    assert "a loss beyond chance variation" in rd.drop_reading(row, backbone="b")
    assert "biased upwards" in rd.drop_reading(row, backbone="b")
    gain = rd.drop_reading(
        {**row, "mean_unseen_drop": -0.2, "unseen_ci_low": -0.3, "unseen_ci_high": -0.1}, backbone="b"
    )
    assert "a gain beyond chance variation" in gain
    ext = pd.DataFrame(
        {"calibration": ["grouped", "image"], "extreme_share": [0.3, 0.1], "at_bound_share": [0, 0], "auc": [0.7, 0.7]}
    )
    assert "(fewer)" in rd.extremes_reading(ext)
    with pytest.raises(ValueError, match="'image'"):
        rd.extremes_reading(ext[ext.calibration == "grouped"])


def test_baseline_verdict_sentence_reversed_and_not():
    v = pd.DataFrame(
        {
            "feature_set": ["QUS", "Morphology"],
            "auc": [0.81, 0.21],
            "ci_low": [0.66, 0.05],
            "ci_high": [0.95, 0.38],
            "verdict": ["above chance", "reversed"],
        }
    )
    s = rd.baseline_verdict_sentence(v)
    assert "1 of the 2 compression-free baselines ranks backwards" in s and "Morphology 0.210" in s
    assert "no shift between reconstructions can explain it" in s
    assert rd.baseline_verdict_sentence(v.iloc[:1]).startswith("No compression-free baseline is reversed")
    with pytest.raises(ValueError, match="verdict"):
        rd.baseline_verdict_sentence(v.drop(columns="verdict"))


def test_amax_scope_reading_contrasting_inputs():
    def rows(auc_wide, lo_wide, hi_wide, degenerate=(False, False)):
        return pd.DataFrame(
            {
                "auc": [0.70, auc_wide],
                "auc_ci_low": [0.62, lo_wide],
                "auc_ci_high": [0.78, hi_wide],
                "mean_drop": [0.10, 0.05],
                "drop_ci_low": [0.05, 0.0],
                "drop_ci_high": [0.15, 0.1],
                "degenerate": list(degenerate),
            }
        )

    effect = rd.amax_scope_reading(rows(0.50, 0.41, 0.59), backbone="inception_v3")
    assert effect.startswith("inception_v3: ") and "0.500 (0.410 to 0.590) against 0.700" in effect
    assert "do not overlap: the scope of A_max changes the result" in effect
    same = rd.amax_scope_reading(rows(0.68, 0.60, 0.76))
    assert "overlap: at this number of lesions the run cannot tell" in same and "changes the result" not in same
    collapsed = rd.amax_scope_reading(rows(0.50, 0.41, 0.59, degenerate=(False, True)))
    assert "data-set-wide row is a degenerate fit" in collapsed and "changes the result" not in collapsed
    with pytest.raises(ValueError, match="two rows"):
        rd.amax_scope_reading(rows(0.5, 0.4, 0.6).iloc[:1])
