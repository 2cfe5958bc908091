"""Platt maps that never invert the ranking (uslib.platt)."""

import numpy as np
import pytest

from uslib import evaluation as ev
from uslib import platt


def test_an_unconstrained_fit_equals_the_evaluation_platt_scaling():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 15)
    f = rng.normal(size=30) + 1.5 * y
    fit = platt.platt_fit(f, y)
    a, b = ev.platt_scaling(f, y)
    assert not fit.reversing and not fit.constrained
    assert fit.a < 0
    assert np.isclose(fit.a, a, rtol=1e-6) and np.isclose(fit.b, b, rtol=1e-6, atol=1e-9)


def test_a_reversing_fold_is_constrained_and_keeps_the_svms_ranking():
    # The SVM ranks its test lesions the right way round (malignant: larger f) ...
    y_test = np.array([0, 0, 0, 1, 1, 1])
    f_test = np.array([-1.5, -1.0, -0.2, 0.3, 0.9, 1.6])
    # ... but the out-of-fold decision values of its training lesions, on which Platt's
    # sigmoid is fitted, happen to run against their labels (a small, unlucky calibration set).
    y_cal = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    f_cal = np.array([-1.2, -0.8, -0.5, 0.4, 0.7, 1.1, 0.2, -0.1])
    a_free, b_free = ev.platt_scaling(f_cal, y_cal)
    assert a_free > 0  # the free fit reverses: P falls as f rises
    reversed_p = ev.platt_probability(f_test, a_free, b_free)
    assert ev.roc_auc(y_test, reversed_p) == 0.0  # the fold's ranking inverted by calibration alone
    assert ev.roc_auc(y_test, f_test) == 1.0

    fit = platt.platt_fit(f_cal, y_cal)
    assert fit.reversing and fit.constrained and np.isclose(fit.a_free, a_free, rtol=1e-6)
    p = platt.platt_map(f_test, fit)
    assert ev.roc_auc(y_test, p) == 1.0  # the SVM's order kept
    # flat at the smoothed base rate: n+ = 4 -> 5/6, n- = 4 -> 1/6, mean 1/2
    assert np.allclose(p, 0.5, atol=1e-5)

    free = platt.platt_fit(f_cal, y_cal, monotone=False)
    assert free.reversing and not free.constrained and free.a == free.a_free


def test_the_constrained_intercept_is_the_weighted_base_rate():
    y = np.array([1, 0, 0, 0])
    f = np.array([-1.0, 0.5, 1.0, 2.0])
    w = np.array([2.0, 1.0, 1.0, 1.0])
    fit = platt.platt_fit(f, y, sample_weight=w)
    t_pos, t_neg = 3 / 4, 1 / 5  # (N+ + 1)/(N+ + 2) with N+ = 2; 1/(N- + 2) with N- = 3
    base = (2 * t_pos + 3 * t_neg) / 5
    assert fit.constrained
    assert np.allclose(platt.platt_map(f, fit), base, atol=1e-5)


def test_fold_report_and_libsvm_check():
    fits = [
        ({"fold": 0}, platt.platt_fit([-1, 1, -2, 2], [0, 1, 0, 1])),
        ({"fold": 1}, platt.platt_fit([-1, 1, -2, 2], [1, 0, 1, 0])),
    ]
    rep = platt.fold_report(fits)
    assert rep["reversing"].tolist() == [False, True] and rep["constrained"].tolist() == [False, True]
    assert rep["fold"].tolist() == [0, 1]
    assert platt.libsvm_platt_reverses([0.0]) and not platt.libsvm_platt_reverses(np.array([-1.0]))


def test_bad_input_names_the_field():
    with pytest.raises(ValueError, match="labels must be 0/1"):
        platt.platt_fit([0.0, 1.0], [0, 2])
    with pytest.raises(ValueError, match="non-finite"):
        platt.platt_fit([np.nan, 1.0], [0, 1])


def test_linear_svm_replaces_a_reversing_fold_fit_and_keeps_its_ranking():
    # no class signal, 12 images: the out-of-fold decision values of a noise fit are
    # anti-correlated with the labels (seed 0), so the free Platt slope comes out reversing
    from uslib.classifier import LinearSVM

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 6)
    X = rng.normal(size=(12, 3))
    est = LinearSVM(calibration="grouped").fit(X, y, groups=np.arange(12))
    fit = est.platt_fit_
    assert fit.reversing and fit.constrained and fit.a_free > 0 > fit.a
    f = est.decision_function(X)
    p = est.predict_proba(X)[:, 1]
    # the calibrated probabilities rank the images exactly as the SVM's decision values do
    assert np.array_equal(np.argsort(f, kind="stable"), np.argsort(p, kind="stable"))
    # the free map would have ranked them backwards
    assert np.array_equal(
        np.argsort(-f, kind="stable"), np.argsort(1 / (1 + np.exp(fit.a_free * f + fit.b_free)), kind="stable")
    )


def test_cross_validation_reports_every_fold_platt_fit():
    import pandas as pd

    from uslib.crossval import cross_validated_probabilities
    from uslib.cvsettings import CVSettings

    rng = np.random.default_rng(1)
    m = pd.DataFrame(
        {
            "lesion": [f"L{i // 2}" for i in range(24)],
            "patient": [f"P{i // 4}" for i in range(24)],
            "label": [(i // 2) % 2 for i in range(24)],
            "dynamic_range_db": 40,
        }
    )
    X = rng.normal(size=(24, 3)) + m[["label"]].to_numpy(float)
    cv = cross_validated_probabilities(X, m, train_sets={"Train40dB": (40,)}, settings=CVSettings(n_splits=3))
    report = platt.fold_report(cv.platt)
    assert sorted(report["fold"]) == [0, 1, 2] and set(report["train"]) == {"Train40dB"}
    assert report["n"].sum() == 2 * 24  # each image is in the training part of two of the three folds
