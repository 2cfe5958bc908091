"""Verdicts, reversal diagnoses, degenerate fits and intervals (uslib.diagnostics)."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from uslib import diagnostics as dg
from uslib import evaluation as ev
from uslib.cvsettings import CVSettings


def test_verdicts_from_the_ci():
    t = pd.DataFrame(
        {
            "train": ["a", "b", "c", "d"],
            "test": ["x"] * 4,
            "auc": [0.8, 0.36, 0.48, 0.5],
            "ci_low": [0.6, 0.29, 0.3, np.nan],
            "ci_high": [0.95, 0.43, 0.66, np.nan],
        }
    )
    v = dg.cell_verdicts(t)
    assert v["verdict"].tolist() == [
        "above chance",
        "reversed",
        "indistinguishable from chance",
        "indistinguishable from chance",
    ]
    with pytest.raises(ValueError, match="ci_high"):
        dg.cell_verdicts(t.drop(columns="ci_high"))


def test_decision_function_adapter_equals_linear_svm():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 10)
    X = rng.normal(size=(20, 3)) + y[:, None]
    f = dg.DecisionFunction(C=0.5).fit(X, y).decision_function(X[:5])
    g = ev.LinearSVM(C=0.5, standardize=False).fit(X, y).decision_function(X[:5])
    assert np.allclose(f, g, atol=1e-9)
    assert np.allclose(dg.DecisionFunction(C=0.5).fit(X, y).predict_proba(X[:5])[:, 1], f)


def _shifted_manifest(n=12):
    """One lesion per patient, two images (40 and 60 dB); at 60 dB the feature runs against the label."""
    label = np.array([0, 1] * (n // 2))
    m = pd.DataFrame(
        {
            "lesion": np.repeat([f"l{i}" for i in range(n)], 2),
            "patient": np.repeat([f"p{i}" for i in range(n)], 2),
            "label": np.repeat(label, 2),
            "dynamic_range_db": [40.0, 60.0] * n,
        }
    )
    jitter = np.repeat(np.linspace(0, 0.2, n), 2)
    x = np.where(m["dynamic_range_db"] == 40, m["label"], 1 - m["label"]) + jitter
    return m, x[:, None].astype(float)


def test_a_reversed_cell_is_diagnosed_by_the_decision_shift():
    m, X = _shifted_manifest()
    d = dg.out_of_fold_decisions(
        X,
        m,
        train_sets={"Train40dB": (40,)},
        test_sets={"Test40dB": (40,), "Test60dB": (60,)},
        settings=CVSettings(n_splits=3, standardize=False),
    )
    assert set(d["test"]) == {"Test40dB", "Test60dB"} and (d["n_images"] == 1).all()
    a, b = d[d.test == "Test40dB"], d[d.test == "Test60dB"]
    assert ev.roc_auc(a.label, a.decision) == 1.0 and ev.roc_auc(b.label, b.decision) == 0.0
    s = dg.decision_shift(a.label.to_numpy(), a.decision.to_numpy(), b.decision.to_numpy())
    assert s["gap_reference"] > 0 > s["gap_test"]
    assert s["shift_benign"] > 0 > s["shift_malignant"]  # the feature swapped: benign up, malignant down
    assert s["differential_shift_gaps"] > 1
    assert np.isclose(s["gap_test"], s["gap_reference"] * (1 - s["differential_shift_gaps"]))
    f = dg.decision_shift(a.label.to_numpy(), a.decision.to_numpy(), b.decision.to_numpy(), fold=a.fold.to_numpy())
    assert f["n_folds"] == 3 and f["n_folds_swapped"] == 3 and f["n_folds_unseparated"] == 0
    assert f["gap_ratio"] < 0 and np.isclose(f["gap_ratio"], 1 - f["differential_shift_gaps"])

    table = pd.DataFrame(
        {
            "backbone": "x",
            "train": ["Train40dB", "Train40dB"],
            "test": ["Test40dB", "Test60dB"],
            "auc": [1.0, 0.0],
            "ci_low": [1.0, 0.0],
            "ci_high": [1.0, 0.0],
        }
    )
    diag = dg.reversal_diagnoses(table, d)
    assert diag["test"].tolist() == ["Test60dB"] and diag["verdict"].tolist() == ["reversed"]
    assert np.isclose(diag["differential_shift_gaps"].iloc[0], f["differential_shift_gaps"])


def test_per_fold_figures_are_not_dominated_by_one_folds_scale():
    # two folds: in both, benign +1 gap and malignant -1 gap (the means swap); fold 1's SVM has a
    # 100-fold larger scale, which dominates pooled means but not the per-fold medians
    y = np.array([0, 1, 0, 1])
    fold = np.array([0, 0, 1, 1])
    ref = np.array([-0.5, 0.5, -50.0, 50.0])
    test = np.array([0.5, -0.5, 50.0, -50.0])
    d = dg.decision_shift(y, ref, test, fold=fold)
    assert d["shift_benign_gaps"] == 1.0 and d["shift_malignant_gaps"] == -1.0 and d["gap_ratio"] == -1.0
    assert d["n_folds_swapped"] == 2
    test2 = test + np.array([0, 0, 400.0, 400.0])  # fold 1 also moves both classes far up together
    e = dg.decision_shift(y, ref, test2, fold=fold)
    assert e["differential_shift_gaps"] == 2.0 and e["n_folds_swapped"] == 2
    with pytest.raises(ValueError, match="fold"):
        dg.decision_shift(y, ref, test, fold=[0, 1])


def test_a_common_shift_leaves_the_ranking():
    y = np.array([0, 0, 1, 1])
    ref = np.array([-1.0, -0.6, 0.4, 1.0])
    s = dg.decision_shift(y, ref, ref + 2.5)
    assert np.isclose(s["common_shift_gaps"], 2.5 / s["gap_reference"])
    assert np.isclose(s["differential_shift_gaps"], 0.0) and s["auc_test"] == s["auc_reference"] == 1.0


def test_fit_degeneracy_flags_saturated_probabilities_and_reports_the_scale():
    healthy = dg.fit_degeneracy(np.linspace(0.1, 0.9, 40))
    assert not healthy["degenerate"] and healthy["n_distinct"] == 40
    p = np.r_[np.zeros(12), np.ones(11), np.full(9, 0.39), np.full(8, 0.5)]  # 23 of 40 at 0 or 1
    X = np.full((10, 4), 0.25)  # every row norm 0.5
    r = dg.fit_degeneracy(p, features=X, penalty_c=2.0)
    assert r["degenerate"] and r["n_at_bound"] == 23 and r["n_distinct"] == 4
    assert r["reasons"] == ["at_bound", "few_distinct"]
    assert np.isclose(r["mean_row_norm"], 0.5) and np.isclose(r["c_times_sq_norm"], 2.0 * 0.25)
    assert dg.fit_degeneracy([1 - 1e-7, 0.5, 0.6, 0.7, 0.8])["n_at_bound"] == 1


def test_raw_vs_calibrated():
    y = [0, 0, 0, 1, 1, 1]
    f = np.array([-2.0, -1.0, 0.5, -0.5, 1.0, 2.0])
    same = dg.raw_vs_calibrated(y, f, 1 / (1 + np.exp(-f)))
    assert same["diff"] == 0 and not same["differ"] and same["auc_raw"] == same["auc_calibrated"]
    flipped = dg.raw_vs_calibrated(y, f, 1 / (1 + np.exp(f)))
    assert np.isclose(flipped["auc_calibrated"], 1 - flipped["auc_raw"]) and flipped["differ"]


@pytest.mark.parametrize("k,n", [(0, 10), (10, 10), (7, 40), (20, 40)])
def test_clopper_pearson_is_the_beta_interval(k, n):
    est, lo, hi = dg.clopper_pearson(k, n)
    assert est == k / n
    assert np.isclose(lo, 0.0 if k == 0 else stats.beta.ppf(0.025, k, n - k + 1))
    assert np.isclose(hi, 1.0 if k == n else stats.beta.ppf(0.975, k + 1, n - k))
    with pytest.raises(ValueError, match="k=11"):
        dg.clopper_pearson(11, 10)


def test_patient_bootstrap_weights_move_a_patients_lesions_together():
    pats = ["a", "a", "b", "c", "d"]
    W = dg.patient_bootstrap_weights(pats, n_boot=500, seed=3)
    assert W.shape == (500, 5) and (W[:, 0] == W[:, 1]).all()
    assert np.allclose(W[:, [0, 2, 3, 4]].sum(axis=1), 4)  # four patients drawn per replicate
    assert np.isclose(W[:, 2].mean(), 1.0, atol=0.15)


def test_weighted_auc_equals_the_auc_of_the_replicated_cases():
    rng = np.random.default_rng(2)
    y = np.repeat([0, 1], 8)
    s = np.round(rng.normal(size=16) + y, 1)  # ties included
    assert np.isclose(dg.weighted_auc(y, s, np.ones(16)), ev.roc_auc(y, s))
    w = rng.integers(0, 3, size=16)
    w[0], w[-1] = 1, 1
    rep = np.repeat(np.arange(16), w)
    assert np.isclose(dg.weighted_auc(y, s, w), ev.roc_auc(y[rep], s[rep]))
    assert np.isnan(dg.weighted_auc(y, s, np.r_[np.ones(8), np.zeros(8)]))


def test_table3_intervals_pool_repeats_and_bootstrap_a_constant():
    lesions = pd.DataFrame({"lesion": list("abcdef"), "patient": list("aabcde"), "label": [0, 1, 0, 1, 0, 1]})
    perfect = pd.concat([lesions.assign(repeat=r, called=lesions.label.astype(bool)) for r in range(3)])
    t = dg.table3_intervals(perfect, n_boot=200).set_index("metric")
    assert (t["estimate"] == 1).all() and (t["ci_low"] == 1).all() and (t["ci_high"] == 1).all()
    assert t.loc["sensitivity", "k"] == 3 and t.loc["sensitivity", "n"] == 3
    assert np.isclose(t.loc["accuracy", "cp_low"], 0.025 ** (1 / 6)) and t.loc["accuracy", "n_repeats"] == 3
    # lesion 'a' is called right in one repeat of two: pooled, it counts one half
    half = pd.concat(
        [
            lesions.assign(repeat=0, called=lesions.label.astype(bool)),
            lesions.assign(repeat=1, called=lesions.label.astype(bool) ^ (lesions.lesion == "a")),
        ]
    )
    h = dg.table3_intervals(half, n_boot=200).set_index("metric")
    assert np.isclose(h.loc["specificity", "estimate"], (0.5 + 1 + 1) / 3)
    assert np.isclose(h.loc["accuracy", "estimate"], 5.5 / 6)
    assert h.loc["specificity", "k"] == 3  # the first repeat alone
    assert h.loc["specificity", "ci_low"] <= h.loc["specificity", "estimate"] <= h.loc["specificity", "ci_high"]


def test_called_malignant_uses_each_folds_threshold():
    c = dg.called_malignant([0.2, 0.6, 0.5, 0.9], [0, 0, 1, 1], [0.5, np.nan])
    assert c.tolist() == [False, True, True, True]


def _curves(aucs_by_range, seen):
    """Predictions that give AUC 1 or 0 exactly at each range (for any resample with both classes)."""
    y = np.array([0, 1] * 5)
    rows, curves = [], []
    for r, auc in aucs_by_range.items():
        p = np.where(y == 1, 0.9, 0.1) if auc == 1 else np.where(y == 1, 0.1, 0.9)
        rows.append(
            pd.DataFrame(
                {
                    "backbone": "b",
                    "policy": "Train40dB",
                    "test_range_db": r,
                    "lesion": [f"l{i}" for i in range(10)],
                    "patient": [f"p{i}" for i in range(10)],
                    "label": y,
                    "probability": p,
                }
            )
        )
        curves.append({"backbone": "b", "policy": "Train40dB", "test_range_db": r, "seen": r in seen})
    return pd.concat(rows, ignore_index=True), pd.DataFrame(curves)


def test_drop_intervals_of_a_constant_drop():
    preds, curves = _curves({30.0: 1, 40.0: 1, 60.0: 0, 80.0: 1}, seen={40.0})
    d = dg.drop_intervals(preds, curves, n_boot=300).set_index("policy")
    row = d.loc["Train40dB"]
    assert row["worst_drop"] == 1.0 and row["range_at_worst"] == 60.0
    assert row["worst_ci_low"] == row["worst_ci_high"] == 1.0
    assert np.isclose(row["mean_unseen_drop"], 1 / 3) and row["unseen_ci_low"] == row["unseen_ci_high"]
    assert d.loc["worst policy", "worst_policy"] == "Train40dB"


def test_the_bootstrapped_maximum_is_taken_in_every_replicate():
    # Noisy scores at nine ranges, two policies. In each replicate the worst drop is the maximum over
    # ranges (and, for the backbone row, over policies) of that replicate's drops, so its quantiles lie
    # at or above those of every single policy's worst drop and of its mean unseen drop.
    rng = np.random.default_rng(4)
    y = np.array([0, 1] * 20)
    rows, curves = [], []
    for pol in ("P", "Q"):
        for r in range(9):
            p = rng.normal(size=40) + 0.8 * y
            rows.append(
                pd.DataFrame(
                    {
                        "backbone": "b",
                        "policy": pol,
                        "test_range_db": float(r),
                        "lesion": [f"l{i}" for i in range(40)],
                        "patient": [f"p{i}" for i in range(40)],
                        "label": y,
                        "probability": p,
                    }
                )
            )
            curves.append({"backbone": "b", "policy": pol, "test_range_db": float(r), "seen": r < 3})
    d = dg.drop_intervals(pd.concat(rows), pd.DataFrame(curves), n_boot=400).set_index("policy")
    for pol in ("P", "Q"):
        assert d.loc["worst policy", "worst_ci_low"] >= d.loc[pol, "worst_ci_low"]
        assert d.loc["worst policy", "worst_ci_high"] >= d.loc[pol, "worst_ci_high"]
        assert d.loc[pol, "worst_ci_high"] >= d.loc[pol, "unseen_ci_high"]
        assert d.loc[pol, "worst_drop"] >= d.loc[pol, "mean_unseen_drop"]
    assert d.loc["worst policy", "worst_drop"] == d[["worst_drop"]].drop(index="worst policy").max().iloc[0]


def test_open_choice_helpers():
    assert dg.c_grid() == [0.01, 0.1, 1.0, 10.0, 100.0]
    assert len(dg.c_grid(0.1, 10, per_decade=2)) == 5
    p = pd.DataFrame(
        {
            "repeat": 0,
            "train": "TrainALL",
            "test": "TestALL",
            "label": [0, 1, 0, 1],
            "probability": [0.0, 1.0, 0.3, 0.6],
        }
    )
    t = dg.calibration_extremes({"grouped": p.assign(probability=[0.3, 0.7, 0.4, 0.6]), "image": p})
    assert t["extreme_share"].tolist() == [0.0, 0.5] and t["at_bound_share"].tolist() == [0.0, 0.5]
    g = dg.amax_scope_gap_db([0.0, -3.9, -2.0])
    assert g["max_db"] == 3.9 and g["median_db"] == 2.0


def test_sensitivity_columns_of_a_degenerate_row():
    pred = pd.DataFrame(
        {
            "repeat": 0,
            "train": "TrainALL",
            "test": "TestALL",
            "label": [0, 1] * 5,
            "probability": [0.0, 1.0] * 4 + [0.4, 0.5],
        }
    )
    X = np.full((6, 4), 0.01)
    cols = dg.sensitivity_columns(pred, features=X, settings=CVSettings(svm_c=1.0, standardize=False))
    assert cols["degenerate"] and cols["n_at_bound"] == 8 and cols["extreme_share"] == 0.8
    assert np.isclose(cols["mean_row_norm"], 0.02) and np.isclose(cols["c_times_sq_norm"], 4e-4)
    with pytest.raises(ValueError, match="TrainX"):
        dg.sensitivity_columns(pred, train="TrainX")


def test_matrix_and_curve_reversals_run_only_where_a_cell_is_reversed():
    m, X = _shifted_manifest()
    table = pd.DataFrame(
        {
            "train": ["Train40dB", "Train40dB", "Train60dB"],
            "test": ["Test40dB", "Test60dB", "Test40dB"],
            "auc": [1.0, 0.0, 0.6],
            "ci_low": [1.0, 0.0, 0.3],
            "ci_high": [1.0, 0.0, 0.9],
        }
    )
    diag = dg.matrix_reversals(X, m, table, ranges=(40, 60), settings=CVSettings(n_splits=3, standardize=False))
    assert diag[["train", "test"]].values.tolist() == [["Train40dB", "Test60dB"]]
    assert diag["differential_shift_gaps"].iloc[0] > 1
    assert dg.matrix_reversals(X, m, table.assign(ci_high=0.9, ci_low=0.3), ranges=(40, 60)).empty
    curves = pd.DataFrame(
        {
            "policy": "Train40dB",
            "test_range_db": [40.0, 60.0],
            "auc": [1.0, 0.0],
            "ci_low": [1.0, 0.0],
            "ci_high": [1.0, 0.0],
            "seen": [True, False],
        }
    )
    cd = dg.curve_reversals(
        X, m, curves, train_sets={"Train40dB": (40,)}, settings=CVSettings(n_splits=3, standardize=False)
    )
    assert cd[["train", "test", "reference"]].values.tolist() == [["Train40dB", "Test60dB", "Test40dB"]]
    assert np.isclose(cd["differential_shift_gaps"].iloc[0], diag["differential_shift_gaps"].iloc[0])


@pytest.mark.parametrize("standardize", [False, True])
def test_out_of_fold_decisions_accept_lesion_weighting(standardize):
    m, X = _shifted_manifest()
    X = np.hstack([X, np.repeat(np.linspace(0, 1, 12), 2)[:, None]])  # a second, non-constant feature
    d = dg.out_of_fold_decisions(
        X,
        m,
        train_sets={"Train40dB": (40,)},
        test_sets={"Test40dB": (40,)},
        settings=CVSettings(n_splits=3, standardize=standardize, lesion_weighting=True),
    )
    assert len(d) == 12 and np.isfinite(d["decision"]).all()
    assert ev.roc_auc(d.label, d.decision) == 1.0
