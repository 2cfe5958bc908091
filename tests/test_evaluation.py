"""Tests of uslib.evaluation on synthetic manifests and feature matrices."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from uslib import evaluation as ev
from uslib.cvsettings import CVSettings
from uslib.evaluation import (
    LeakageError,
    LinearSVM,
    bland_altman,
    check_folds,
    closest_to_corner,
    cross_validate,
    delong_ci,
    delong_components,
    delong_paired_test,
    delong_variance,
    lesion_table,
    load_results,
    operating_point,
    patient_folds,
    reconstruction_matrix,
    roc_auc,
    roc_curve,
    save_results,
    set_name,
)

RANGES = (40.0, 50.0, 60.0)


# --------------------------------------------------------------------------- #
# Synthetic data
# --------------------------------------------------------------------------- #


def make_manifest(n_patients=20, *, seed=0, p_malignant=0.4, ranges=RANGES, margins=(2.0, 5.0, 10.0)):
    """Manifest in the augmentation module's row order; some patients with 2–3 lesions."""
    rng = np.random.default_rng(seed)
    rows, n_les = [], 0
    for p in range(n_patients):
        for _ in range(int(rng.choice([1, 1, 2, 3]))):
            label = int(rng.random() < p_malignant)
            key = f"{n_les}{chr(97 + p % 26)}{p}"
            for scan in (0, 1):
                for dr in ranges:
                    for mm in margins:
                        rows.append(
                            {
                                "lesion": key,
                                "patient": f"P{p}",
                                "label": label,
                                "birads": "4a",
                                "scan": scan,
                                "margin_mm": mm,
                                "dynamic_range_db": dr,
                            }
                        )
            n_les += 1
    m = pd.DataFrame(rows)
    m.insert(0, "image", np.arange(len(m)))
    return m


def make_features(manifest, *, d=8, signal=1.5, seed=0):
    """Features with a class signal along one direction, lesion effects and per-range shifts."""
    rng = np.random.default_rng(seed + 1000)
    code = pd.factorize(manifest["lesion"])[0]
    y = manifest["label"].to_numpy()
    direction = np.zeros(d)
    direction[0] = 1.0
    shift = {r: rng.normal(scale=0.5, size=d) for r in np.unique(manifest["dynamic_range_db"])}
    X = rng.normal(scale=0.7, size=(code.max() + 1, d))[code] + rng.normal(scale=0.5, size=(len(y), d))
    X += signal * np.outer(y - 0.5, direction)
    X += np.stack([shift[r] for r in manifest["dynamic_range_db"]])
    return (10.0 * X).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    m = make_manifest(24, seed=3)
    return make_features(m, seed=3), m


@pytest.fixture(scope="module")
def result(data):
    X, m = data
    return reconstruction_matrix(X, m, backbone="toy", settings=CVSettings(cv_seed=0, n_repeats=1))


FIT_LOG: list = []


class ColumnProba(ClassifierMixin, BaseEstimator):
    """Injected estimator: P(malignant) of an image is its feature column 0; logs its training rows."""

    def fit(self, X, y):
        FIT_LOG.append(np.asarray(X)[:, 1].astype(int).copy())
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        p = np.asarray(X, dtype=float)[:, 0]
        return np.column_stack([1 - p, p])


# --------------------------------------------------------------------------- #
# Folds
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_patient_folds_keep_patients_together(seed):
    les = lesion_table(make_manifest(30, seed=seed))
    patients, labels = les["patient"].to_numpy(), les["label"].to_numpy()
    assert les.groupby("patient").size().max() >= 2  # multi-lesion patients exist
    folds = patient_folds(labels, patients, n_splits=5, seed=seed)
    assert len(folds) == 5
    tested = np.concatenate([te for _, te in folds])
    assert np.array_equal(np.sort(tested), np.arange(len(les)))
    for tr, te in folds:
        assert not set(patients[tr]) & set(patients[te])
        assert np.array_equal(np.sort(np.r_[tr, te]), np.arange(len(les)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_patient_folds_are_stratified(seed):
    les = lesion_table(make_manifest(30, seed=seed + 10))
    labels = les["label"].to_numpy()
    frac = labels.mean()
    for _, te in patient_folds(labels, les["patient"].to_numpy(), seed=seed):
        assert abs(labels[te].sum() - frac * len(te)) <= 1.5


def test_patient_folds_seeded():
    les = lesion_table(make_manifest(30, seed=4))
    y, p = les["label"].to_numpy(), les["patient"].to_numpy()
    a, b, c = (patient_folds(y, p, seed=s) for s in (7, 7, 8))
    assert all(np.array_equal(x[1], z[1]) for x, z in zip(a, b))
    assert not all(np.array_equal(x[1], z[1]) for x, z in zip(a, c))


def test_patient_folds_errors():
    with pytest.raises(ValueError, match="n_splits"):
        patient_folds([0, 1, 0, 1], ["a", "a", "b", "b"], n_splits=5)
    with pytest.raises(ValueError, match="1-D and equal"):
        patient_folds([0, 1, 0], ["a", "b"])


def test_check_folds_detects_leaks():
    patients = np.array(["a", "b", "b", "c", "d"])
    good = [(np.array([0, 3, 4]), np.array([1, 2])), (np.array([1, 2]), np.array([0, 3, 4]))]
    check_folds(good, patients)
    leak = [(np.array([0, 1, 3]), np.array([2, 4])), (np.array([2, 4]), np.array([0, 1, 3]))]
    with pytest.raises(LeakageError, match=r"fold 0: patient 'b'"):
        check_folds(leak, patients)
    twice = [(np.array([3, 4]), np.array([0, 1, 2])), (np.array([1, 2]), np.array([0, 3, 4]))]
    with pytest.raises(LeakageError, match="tested twice"):
        check_folds(twice, patients)
    never = [(np.array([3, 4]), np.array([1, 2])), (np.array([1, 2]), np.array([3]))]
    with pytest.raises(LeakageError, match="never tested"):
        check_folds(never, patients)
    with pytest.raises(ValueError, match="only class"):
        check_folds(good, patients, labels=[1, 0, 0, 1, 1])


def test_cross_validate_refuses_leaking_folds(data):
    X, m = data
    les = lesion_table(m)
    p = les["patient"].to_numpy()
    shared = les.index[les["patient"] == les.groupby("patient").size().idxmax()].to_numpy()
    assert len(shared) >= 2
    te = np.r_[shared[:1], np.setdiff1d(np.arange(len(les)), shared)[::2]]
    folds = [(np.setdiff1d(np.arange(len(les)), te), te), (te, np.setdiff1d(np.arange(len(les)), te))]
    with pytest.raises(LeakageError, match=repr(str(p[shared[0]]))):
        cross_validate(X, m, train_ranges=(40,), test_ranges=(40,), folds=folds)


# --------------------------------------------------------------------------- #
# Cross-validation
# --------------------------------------------------------------------------- #


def test_lesion_probability_is_mean_of_its_test_images():
    m = make_manifest(12, seed=5)
    rng = np.random.default_rng(5)
    X = np.column_stack([rng.random(len(m)), m["image"].to_numpy()]).astype(float)
    FIT_LOG.clear()
    out = cross_validate(
        X,
        m,
        train_ranges=(40,),
        test_ranges=(50, 60),
        settings=CVSettings(n_splits=3, cv_seed=1, standardize=False),
        estimator=ColumnProba(),
    )
    # oracle: mean of column 0 over that lesion's 50/60 dB images
    sel = m["dynamic_range_db"].isin([50.0, 60.0])
    want = pd.Series(X[sel.to_numpy(), 0]).groupby(m.loc[sel, "lesion"].to_numpy()).mean()
    assert np.allclose(out["probability"].to_numpy(), want.loc[out["lesion"]].to_numpy(), rtol=0, atol=1e-12)
    assert (out["n_images"] == 12).all()
    # each fit saw exactly the 40 dB images of that fold's training lesions
    les = lesion_table(m)
    folds = patient_folds(les["label"], les["patient"], n_splits=3, seed=1)
    assert len(FIT_LOG) == 3
    for (tr, _), seen in zip(folds, FIT_LOG):
        expect = m.index[m["lesion"].isin(les["lesion"][tr]) & (m["dynamic_range_db"] == 40.0)].to_numpy()
        assert np.array_equal(np.sort(seen), expect)
    assert out["fold"].tolist() == [next(k for k, (_, te) in enumerate(folds) if i in te) for i in range(len(les))]


def test_cross_validate_seeded(data):
    X, m = data
    a = cross_validate(X, m, train_ranges=(40,), test_ranges=(60,), settings=CVSettings(cv_seed=0))
    b = cross_validate(X, m, train_ranges=(40,), test_ranges=(60,), settings=CVSettings(cv_seed=0))
    c = cross_validate(X, m, train_ranges=(40,), test_ranges=(60,), settings=CVSettings(cv_seed=1))
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns[:5]) == ["lesion", "patient", "label", "fold", "probability"]
    assert not np.allclose(a["probability"], c["probability"])
    assert ((a["probability"] > 0) & (a["probability"] < 1)).all()


def test_cross_validate_input_errors(data):
    X, m = data
    with pytest.raises(ValueError, match="rows"):
        cross_validate(X[:-1], m, train_ranges=(40,), test_ranges=(40,))
    bad = m.copy()
    bad.loc[0, "label"] = 1 - bad.loc[0, "label"]
    with pytest.raises(ValueError, match=f"lesion {m.loc[0, 'lesion']!r} has more than one label"):
        cross_validate(X, bad, train_ranges=(40,), test_ranges=(40,))
    with pytest.raises(ValueError, match="no image with dynamic range"):
        cross_validate(X, m, train_ranges=(40,), test_ranges=(45,))
    Xn = X.copy()
    Xn[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"image row\(s\) \[3\]"):
        cross_validate(Xn, m, train_ranges=(40,), test_ranges=(40,))


# --------------------------------------------------------------------------- #
# The one cross-validation loop
# --------------------------------------------------------------------------- #


def separable(n_patients=15, *, seed=0):
    """Patients with 1-2 lesions, 2 images per lesion at each of 40/60 dB; feature 0 = label + small noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        for j in range(1 + p % 2):
            label = (p + j) % 2
            for dr in (40.0, 60.0):
                for scan in (0, 1):
                    rows.append(
                        {
                            "lesion": f"L{p}-{j}",
                            "patient": f"P{p}",
                            "label": label,
                            "scan": scan,
                            "dynamic_range_db": dr,
                        }
                    )
    m = pd.DataFrame(rows)
    X = np.column_stack([m["label"] + rng.uniform(-0.2, 0.2, len(m)), np.arange(len(m))]).astype(float)
    return X, m


def test_loop_separable_features_auc_one_each_lesion_tested_once():
    X, m = separable()
    cv = ev.cross_validated_probabilities(
        X[:, :1],
        m,
        train_sets={"Train40dB": (40,), "all": None},
        test_set=(60,),
        settings=CVSettings(n_splits=3, cv_seed=2),
    )
    les = cv.design.lesions
    assert les["lesion"].tolist() == list(pd.unique(m["lesion"]))
    # every lesion is tested exactly once, and the folds are patient-grouped
    assert sorted(np.concatenate([te for _, te in cv.folds]).tolist()) == list(range(len(les)))
    assert set(cv.fold.tolist()) == {0, 1, 2}
    for k, (tr, te) in enumerate(cv.folds):
        assert (cv.fold[te] == k).all()
        assert not set(les["patient"][tr]) & set(les["patient"][te])
    assert (les.groupby("patient")["lesion"].size() == 2).any()
    assert (pd.Series(cv.fold).groupby(les["patient"].to_numpy()).nunique() == 1).all()
    assert [len(te) for _, te in cv.folds] == np.bincount(cv.fold).tolist()
    for name in ("Train40dB", "all"):
        p_img = cv.probabilities[name]
        # scored: exactly the 60 dB images; NaN elsewhere
        np.testing.assert_array_equal(np.isfinite(p_img), m["dynamic_range_db"].to_numpy() == 60.0)
        p, n = cv.lesion_probabilities(name, (60,))
        assert (n == 2).all()
        assert roc_auc(les["label"], p) == 1.0
        assert p[les["label"] == 1].min() > 0.5 > p[les["label"] == 0].max()
        # nothing was scored at 40 dB
        p40, n40 = cv.lesion_probabilities(name, (40,))
        assert (n40 == 0).all() and np.isnan(p40).all()
    # the folds are those of patient_folds, and explicit folds give the same result
    assert all(
        np.array_equal(a[1], b[1])
        for a, b in zip(cv.folds, patient_folds(les["label"], les["patient"], n_splits=3, seed=2))
    )
    again = ev.cross_validated_probabilities(
        X[:, :1],
        m,
        train_sets={"Train40dB": (40,)},
        test_set=(60,),
        folds=cv.folds[::-1],
        settings=CVSettings(cv_seed=2),
    )
    np.testing.assert_array_equal(again.probabilities["Train40dB"], cv.probabilities["Train40dB"])


def test_loop_masks_lesion_means_and_training_rows():
    X, m = separable(12, seed=1)
    mask = (m["scan"] == 0).to_numpy()  # a training set given as an image mask
    FIT_LOG.clear()
    cv = ev.cross_validated_probabilities(
        X,
        m,
        train_sets={"scan0": mask},
        settings=CVSettings(n_splits=4, cv_seed=0, standardize=False),
        estimator=ColumnProba(),
    )
    les = cv.design.lesions
    # oracle: P(malignant) of an image is its column 0; a lesion's probability is the mean over its images
    want = pd.Series(X[:, 0]).groupby(m["lesion"].to_numpy()).mean().loc[les["lesion"]].to_numpy()
    p, n = cv.lesion_probabilities("scan0")
    np.testing.assert_allclose(p, want, rtol=0, atol=1e-12)
    assert (n == 4).all()
    np.testing.assert_allclose(cv.probabilities["scan0"], X[:, 0], rtol=0, atol=0)
    # each fit saw the scan-0 images of that fold's training lesions, nothing else
    assert len(FIT_LOG) == 4
    for (tr, _), seen in zip(cv.folds, FIT_LOG):
        expect = np.flatnonzero(mask & m["lesion"].isin(les["lesion"][tr]).to_numpy())
        np.testing.assert_array_equal(np.sort(seen), expect)


def test_loop_lesion_level_features_without_dynamic_range():
    X, m = separable(10, seed=2)
    table = m.drop_duplicates("lesion")[["lesion", "patient", "label"]].reset_index(drop=True)
    Xl = X[m.drop_duplicates("lesion").index]
    Xl[:, 1] = np.arange(len(Xl))  # row numbers, logged by ColumnProba.fit
    FIT_LOG.clear()
    cv = ev.cross_validated_probabilities(
        Xl,
        table,
        train_sets={"lesions": None},
        settings=CVSettings(n_splits=5, cv_seed=0, standardize=False),
        estimator=ColumnProba(),
    )
    p, n = cv.lesion_probabilities("lesions")
    np.testing.assert_array_equal(p, Xl[:, 0])  # one row per lesion: its probability is its own score
    assert (n == 1).all() and set(cv.fold.tolist()) == set(range(5))
    for (tr, _), seen in zip(cv.folds, FIT_LOG):  # each fit used exactly its training lesions' rows
        np.testing.assert_array_equal(seen, tr)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['dynamic_range_db'\]"):
        ev.cross_validated_probabilities(Xl, table, train_sets={"x": (40,)}, settings=CVSettings(n_splits=5))


def test_loop_errors():
    X, m = separable(10)
    with pytest.raises(ValueError, match="train_sets is empty"):
        ev.cross_validated_probabilities(X, m, train_sets={})
    with pytest.raises(ValueError, match="image mask"):
        ev.cross_validated_probabilities(X, m, train_sets={"x": np.ones(3, bool)})
    with pytest.raises(ValueError, match=r"fold 0, x: no training images with dynamic range in \[50\] dB"):
        ev.cross_validated_probabilities(X, m, train_sets={"x": (50,)}, settings=CVSettings(n_splits=3))
    benign = (m["label"] == 0).to_numpy()
    with pytest.raises(ValueError, match="fold 0, x: training images hold only class"):
        ev.cross_validated_probabilities(X, m, train_sets={"x": benign}, settings=CVSettings(n_splits=3))
    les = lesion_table(m)
    n = len(les)
    leak = [(np.arange(1, n), np.array([0, 1])), (np.array([0]), np.arange(1, n))]
    with pytest.raises(LeakageError):
        ev.cross_validated_probabilities(X, m, train_sets={"x": None}, folds=leak)


def test_cross_validate_and_matrix_are_the_loop(result, data):
    X, m = data
    cv = ev.cross_validated_probabilities(
        X, m, train_sets={"Train50dB": (50,), "TrainALL": RANGES}, test_set=RANGES, settings=CVSettings(cv_seed=0)
    )
    p = result.predictions
    for train, test, te_r in (("Train50dB", "Test40dB", (40,)), ("TrainALL", "TestALL", RANGES)):
        mean, counts = cv.lesion_probabilities(train, te_r)
        g = p[(p["train"] == train) & (p["test"] == test)]
        np.testing.assert_array_equal(g["probability"].to_numpy(), mean)
        np.testing.assert_array_equal(g["n_images"].to_numpy(), counts)
        np.testing.assert_array_equal(g["fold"].to_numpy(), cv.fold)
    one = cross_validate(X, m, train_ranges=(50,), test_ranges=(40,), settings=CVSettings(cv_seed=0))
    # scoring fewer test images at once changes BLAS rounding only
    np.testing.assert_allclose(
        one["probability"].to_numpy(), cv.lesion_probabilities("Train50dB", (40,))[0], rtol=0, atol=1e-12
    )
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(result.folds, cv.folds))


def test_linear_svm_equals_sklearn_svc_probability():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(25, int), np.ones(35, int)]
    X = rng.normal(size=(60, 20)) * rng.uniform(0.1, 50, 20) + 0.8 * y[:, None]
    Xt = rng.normal(size=(15, 20)) * 10
    ours = LinearSVM(C=1.0, random_state=3).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ref = make_pipeline(
            StandardScaler(), SVC(kernel="linear", C=1.0, class_weight="balanced", probability=True, random_state=3)
        ).fit(X, y)
    assert np.allclose(ours.predict_proba(Xt), ref.predict_proba(Xt), atol=1e-8)
    assert np.allclose(ours.decision_function(Xt), ref.decision_function(Xt), atol=1e-8)
    cal = LinearSVM(calibration="cv-sigmoid").fit(X, y)
    p, d = cal.predict_proba(Xt)[:, 1], cal.decision_function(Xt)
    assert np.array_equal(np.argsort(p), np.argsort(d))  # sigmoid of the decision function
    with pytest.raises(ValueError, match="calibration"):
        LinearSVM(calibration="isotonic").fit(X, y)


# --------------------------------------------------------------------------- #
# Metrics
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("seed", range(4))
def test_roc_auc_equals_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 40)
    y[:2] = [0, 1]
    s = rng.integers(0, 5, 40).astype(float)  # many ties
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_roc_auc_errors():
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="0/1"):
        roc_auc([0, 2, 1], [0.1, 0.2, 0.3])


def test_delong_hand_example():
    # positives X = 0.9, 0.6, 0.4; negatives Y = 0.5, 0.4 (one tie: 0.4 vs 0.4 counts 1/2)
    y = [1, 1, 1, 0, 0]
    s = [0.9, 0.6, 0.4, 0.5, 0.4]
    v10, v01 = delong_components(y, s)
    # V10_i = mean_j psi(X_i, Y_j): 0.9 -> (1+1)/2, 0.6 -> (1+1)/2, 0.4 -> (0+0.5)/2
    assert np.allclose(v10, [1.0, 1.0, 0.25])
    # V01_j = mean_i psi(X_i, Y_j): 0.5 -> (1+1+0)/3, 0.4 -> (1+1+0.5)/3
    assert np.allclose(v01, [2 / 3, 2.5 / 3])
    auc = (1.0 + 1.0 + 0.25) / 3  # 0.75
    s10 = ((1 - auc) ** 2 * 2 + (0.25 - auc) ** 2) / 2  # 0.1875
    s01 = ((2 / 3 - auc) ** 2 + (2.5 / 3 - auc) ** 2) / 1  # 1/72
    assert s10 == pytest.approx(0.1875) and s01 == pytest.approx(1 / 72)
    var = s10 / 3 + s01 / 2  # 5/72
    assert delong_variance(y, s) == pytest.approx(var, abs=1e-12)
    a, lo, hi = delong_ci(y, s)
    assert a == pytest.approx(0.75)
    assert lo == pytest.approx(max(0.0, 0.75 - 1.959963984540054 * math.sqrt(5 / 72)))
    assert hi == pytest.approx(1.0)  # 0.75 + 0.516 clipped
    assert lo <= a <= hi


def _psi(x, z):
    return (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])


def test_delong_matches_bruteforce_and_paired_test():
    rng = np.random.default_rng(11)
    y = np.r_[np.ones(17, int), np.zeros(23, int)]
    a = np.round(rng.normal(size=40) + y, 1)
    b = np.round(0.5 * a + rng.normal(size=40), 1)
    comps = {}
    for name, s in (("a", a), ("b", b)):
        psi = _psi(s[y == 1], s[y == 0])
        comps[name] = (psi.mean(axis=1), psi.mean(axis=0))
        v10, v01 = delong_components(y, s)
        assert np.allclose(v10, comps[name][0]) and np.allclose(v01, comps[name][1])
    s10 = np.cov(np.vstack([comps["a"][0], comps["b"][0]]))
    s01 = np.cov(np.vstack([comps["a"][1], comps["b"][1]]))
    cov = s10 / 17 + s01 / 23
    z = (comps["a"][0].mean() - comps["b"][0].mean()) / math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    res = delong_paired_test(y, a, b)
    assert res["z"] == pytest.approx(z)
    assert res["p"] == pytest.approx(2 * (1 - 0.5 * (1 + math.erf(abs(z) / math.sqrt(2)))))
    assert res["auc_a"] == pytest.approx(roc_auc_score(y, a)) and res["auc_b"] == pytest.approx(roc_auc_score(y, b))
    swapped = delong_paired_test(y, b, a)
    assert swapped["z"] == pytest.approx(-res["z"]) and swapped["p"] == pytest.approx(res["p"])


def test_paired_test_identical_scores():
    rng = np.random.default_rng(2)
    y = np.r_[np.ones(10, int), np.zeros(12, int)]
    s = rng.random(22)
    res = delong_paired_test(y, s, s)
    assert res["diff"] == 0 and res["z"] == 0 and res["p"] == 1


def test_closest_to_corner_hand_made_roc():
    fpr = np.array([0.0, 0.0, 0.1, 0.2, 0.5, 1.0])
    tpr = np.array([0.0, 0.4, 0.72, 0.79, 0.95, 1.0])
    thr = np.array([np.inf, 0.9, 0.7, 0.6, 0.4, 0.1])
    # distances to (0, 1): 1, 0.6, sqrt(0.0884)=0.2973, sqrt(0.0841)=0.29, 0.5025, 1
    # (Youden's J = tpr - fpr would pick index 2: 0.62 > 0.59)
    pt = closest_to_corner(fpr, tpr, thr)
    assert pt["index"] == 3 and pt["threshold"] == 0.6
    assert pt["sensitivity"] == 0.79 and pt["specificity"] == pytest.approx(0.8)
    assert pt["distance"] == pytest.approx(0.29)
    # ties go to the first point (highest threshold)
    assert closest_to_corner([0.0, 0.5], [0.5, 1.0], [2.0, 1.0])["index"] == 0


def test_operating_point_hand_made():
    y = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    s = [0.1, 0.2, 0.3, 0.4, 0.75, 0.5, 0.6, 0.7, 0.8, 0.9]
    # score >= 0.5 calls 5/5 positives and 1/5 negatives positive: distance 0.2 (best)
    op = operating_point(y, s)
    assert op["threshold"] == 0.5
    assert op["sensitivity"] == 1.0 and op["specificity"] == pytest.approx(0.8) and op["accuracy"] == 0.9
    fpr, tpr, thr = roc_curve(y, s)
    assert np.isinf(thr[0]) and len(thr) == 11  # every distinct threshold kept


def test_bland_altman_known_arrays():
    res = bland_altman([1.0, 2.0, 3.0, 4.0], [0.0, 2.0, 2.0, 4.0])  # differences 1, 0, 1, 0
    sd = math.sqrt(1 / 3)
    assert res["mean_diff"] == pytest.approx(0.5) and res["sd_diff"] == pytest.approx(sd)
    assert res["loa_low"] == pytest.approx(0.5 - 1.96 * sd) and res["loa_high"] == pytest.approx(0.5 + 1.96 * sd)
    assert res["n"] == 4
    with pytest.raises(ValueError, match="equal"):
        bland_altman([1.0, 2.0], [1.0])


def test_bootstrap_ci_contains_auc():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(20, int), np.zeros(20, int)]
    s = rng.normal(size=40) + y
    auc, lo, hi = ev.bootstrap_ci(y, s, n_boot=300, seed=1)
    assert lo < auc < hi and auc == pytest.approx(roc_auc_score(y, s))


# --------------------------------------------------------------------------- #
# The reconstruction matrix
# --------------------------------------------------------------------------- #


def test_set_names():
    assert set_name("Train", (40,)) == "Train40dB"
    assert set_name("Test", (60.0,)) == "Test60dB"
    assert set_name("Train", (40, 50, 60), all_ranges=RANGES) == "TrainALL"
    assert set_name("Train", (40, 50), all_ranges=RANGES) == "Train40+50dB"


def test_matrix_shape_and_signal(result, data):
    X, m = data
    n_les = m["lesion"].nunique()
    t = result.table
    assert len(t) == 16
    trains = ["Train40dB", "Train50dB", "Train60dB", "TrainALL"]
    tests = ["Test40dB", "Test50dB", "Test60dB", "TestALL"]
    assert list(t["train"]) == [a for a in trains for _ in tests]
    assert list(t["test"]) == tests * 4
    assert (t["n_lesions"] == n_les).all()
    assert (t["auc"] > 0.75).all()  # the class signal is there
    assert ((t["ci_low"] <= t["auc"]) & (t["auc"] <= t["ci_high"])).all()
    assert result.matrix().shape == (4, 4)
    p = result.predictions
    assert len(p) == 16 * n_les
    n_img = p.groupby("test")["n_images"].unique()
    assert list(n_img["TestALL"]) == [18] and list(n_img["Test40dB"]) == [6]
    # table AUCs are those of the pooled predictions
    g = p[(p["train"] == "Train50dB") & (p["test"] == "Test60dB")]
    row = t[(t["train"] == "Train50dB") & (t["test"] == "Test60dB")].iloc[0]
    assert row["auc"] == pytest.approx(roc_auc_score(g["label"], g["probability"]))


def test_matrix_reuses_fits_consistently_with_cross_validate(result, data):
    X, m = data
    p = result.predictions
    for train, test, tr_r, te_r in (("TrainALL", "TestALL", RANGES, RANGES), ("Train40dB", "Test60dB", (40,), (60,))):
        cv = cross_validate(X, m, train_ranges=tr_r, test_ranges=te_r, settings=CVSettings(cv_seed=0))
        g = p[(p["train"] == train) & (p["test"] == test)]
        assert np.allclose(g["probability"].to_numpy(), cv["probability"].to_numpy(), atol=1e-12)
        assert g["fold"].tolist() == cv["fold"].tolist()


def test_matrix_derived_tables(result):
    t3 = result.table3.iloc[0]
    assert (t3["train"], t3["test"]) == ("TrainALL", "TestALL")
    lo, hi = sorted([t3["sensitivity"], t3["specificity"]])
    assert lo - 1e-12 <= t3["accuracy"] <= hi + 1e-12  # accuracy is a weighted mean of the two
    ba = result.bland_altman
    assert list(ba["test"]) == ["Test40dB", "Test50dB", "Test60dB", "TestALL"]
    assert (ba["a"] == "Train40dB").all() and (ba["b"] == "Train60dB").all()
    p = result.predictions
    d = (
        p[(p["train"] == "Train40dB") & (p["test"] == "TestALL")]["probability"].to_numpy()
        - p[(p["train"] == "Train60dB") & (p["test"] == "TestALL")]["probability"].to_numpy()
    )
    assert ba.iloc[3]["mean_diff"] == pytest.approx(d.mean()) and ba.iloc[3]["n"] == len(d)
    pt = result.paired_tests
    assert list(pt.columns) == list(ev.PAIRED_COLUMNS)
    single = pt[pt["kind"] == "trainall_vs_single"]
    assert (
        len(single) == 12 and (single["train_a"] == "TrainALL").all() and (single["test_a"] == single["test_b"]).all()
    )
    mm = pt[pt["kind"] == "matched_vs_mismatched"]
    assert len(mm) == 6 and (mm["train_a"] == mm["train_b"]).all()
    assert (mm["train_a"].str[5:] == mm["test_a"].str[4:]).all() and (mm["test_a"] != mm["test_b"]).all()
    assert ((pt["p"] <= pt["p_holm"]) & (pt["p_holm"] <= 1)).all()
    assert ((pt["diff_ci_low"] <= pt["diff"] + 1e-12) & (pt["diff"] <= pt["diff_ci_high"] + 1e-12)).all()
    for kind, g in pt.groupby("kind"):  # Holm within each family: the smallest p is multiplied by its size
        i = g["p"].idxmin()
        assert g.loc[i, "p_holm"] == pytest.approx(min(1.0, len(g) * g.loc[i, "p"]))
    js = result.to_json()
    json.dumps(js, allow_nan=False)
    assert len(js["matrix"]) == 16 and len(js["folds"]) == 5


def test_matrix_reproducible_and_seed_dependent(result, data):
    X, m = data
    again = reconstruction_matrix(X, m, backbone="toy", settings=CVSettings(cv_seed=0, n_repeats=1))
    pd.testing.assert_frame_equal(again.predictions, result.predictions)
    pd.testing.assert_frame_equal(again.table, result.table)
    other = reconstruction_matrix(X, m, backbone="toy", settings=CVSettings(cv_seed=1, n_repeats=1))
    assert not np.allclose(other.predictions["probability"], result.predictions["probability"])


def test_matrix_repeats(result, data):
    X, m = data
    rep = reconstruction_matrix(X, m, backbone="toy", settings=CVSettings(cv_seed=0, n_repeats=2), ci=None)
    assert sorted(rep.predictions["repeat"].unique()) == [0, 1]
    first = rep.predictions[rep.predictions["repeat"] == 0].reset_index(drop=True)
    pd.testing.assert_frame_equal(first, result.predictions)
    # repeat 1 is the run with seed + 1 (new folds, new SVM seed)
    second = rep.predictions[rep.predictions["repeat"] == 1].reset_index(drop=True)
    seed1 = reconstruction_matrix(
        X, m, backbone="toy", settings=CVSettings(cv_seed=1, n_repeats=1), ci=None
    ).predictions
    pd.testing.assert_frame_equal(second.drop(columns="repeat"), seed1.drop(columns="repeat"))
    aucs = [
        roc_auc_score(g["label"], g["probability"])
        for _, g in rep.predictions[
            (rep.predictions["train"] == "TrainALL") & (rep.predictions["test"] == "TestALL")
        ].groupby("repeat")
    ]
    row = rep.table[(rep.table["train"] == "TrainALL") & (rep.table["test"] == "TestALL")].iloc[0]
    assert row["auc_mean"] == pytest.approx(np.mean(aucs)) and row["auc_sd"] == pytest.approx(np.std(aucs, ddof=1))
    assert rep.table["ci_low"].isna().all()
    with pytest.raises(ValueError, match="n_repeats"):
        reconstruction_matrix(X, m, backbone="toy", settings=CVSettings(n_repeats=2), folds=result.folds)


def test_matrix_missing_range(data):
    X, m = data
    with pytest.raises(ValueError, match=r"dynamic_range_db \[70.0\]"):
        reconstruction_matrix(X, m, backbone="toy", ranges=(40, 70), settings=CVSettings(n_repeats=1))


def test_every_fold_platt_fit_is_reported_and_table3_carries_intervals(result):
    # grouped calibration: one checked Platt fit per (repeat, fold, training set)
    n_train_sets = result.table["train"].nunique()
    assert len(result.platt) == len(result.folds) * n_train_sets
    assert set(result.platt["train"]) == set(result.table["train"])
    assert (result.platt.loc[~result.platt.reversing, "platt_a"] < 0).all()  # a kept fit ranks the SVM's way
    assert (result.platt["platt_a"] < 0).all()  # and a reversing one was replaced by the constrained fit
    nested = result.table3.set_index("rule").loc["nested"]
    for m in ("accuracy", "sensitivity", "specificity"):
        assert nested[f"{m}_ci_low"] <= nested[m] <= nested[f"{m}_ci_high"]
        assert nested[f"{m}_ci_high"] - nested[f"{m}_ci_low"] > 0  # a few dozen lesions: not a point
    assert nested["metric_ci_repeats"] == 1
    paper = result.table3.set_index("rule").loc["paper"]  # the paper's rule carries intervals too
    for m in ("accuracy", "sensitivity", "specificity"):
        assert paper[f"{m}_ci_low"] <= paper[m] <= paper[f"{m}_ci_high"]


def test_table3_metrics_are_averaged_over_the_repeats(data, result):
    """Oracle: each rule's accuracy is the mean of the per-repeat accuracies, each repeat computed alone.

    The paper's rule: each repeat's own closest-to-(0, 1) threshold on its own predictions. The nested
    rule: each repeat's own outer folds and inner cross-validations (seed cv_seed + r). ``result`` is
    repeat 0 alone (cv_seed 0, one repeat).
    """
    X, m = data
    res = reconstruction_matrix(X, m, backbone="toy", settings=CVSettings(cv_seed=0, n_repeats=2))
    t3 = res.table3.set_index("rule")
    p = res.predictions
    per_repeat_paper = []
    for r in range(2):
        g = p[(p["repeat"] == r) & (p["train"] == "TrainALL") & (p["test"] == "TestALL")]
        per_repeat_paper.append(ev.operating_point(g["label"], g["probability"])["accuracy"])
    second = reconstruction_matrix(X, m, backbone="toy", settings=CVSettings(cv_seed=1, n_repeats=1))
    per_repeat_nested = [t.set_index("rule").loc["nested", "accuracy"] for t in (result.table3, second.table3)]
    assert t3.loc["paper", "accuracy"] == pytest.approx(np.mean(per_repeat_paper), abs=1e-12)
    assert t3.loc["nested", "accuracy"] == pytest.approx(np.mean(per_repeat_nested), abs=1e-12)
    assert per_repeat_nested[0] != per_repeat_nested[1]  # the repeats differ: the mean is not one repeat's
    assert (t3["metric_ci_repeats"] == 2).all()
    # the threshold shown is the first repeat's
    assert t3.loc["nested", "threshold"] == result.table3.set_index("rule").loc["nested", "threshold"]


def test_save_load_round_trip(tmp_path, result, data):
    X, m = data
    other = reconstruction_matrix(X, m, backbone="other", settings=CVSettings(cv_seed=2, n_repeats=2))
    paths = save_results([result, other], tmp_path / "run")
    assert sorted(paths) == sorted(ev.RESULT_FILES)
    json.loads(
        (tmp_path / "run" / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}")
    )
    back = load_results(tmp_path / "run")
    assert [r.backbone for r in back] == ["toy", "other"]
    for orig, got in zip([result, other], back):
        for attr in ("table", "predictions", "table3", "bland_altman", "paired_tests", "platt"):
            pd.testing.assert_frame_equal(getattr(orig, attr), getattr(got, attr), check_exact=True)
        pd.testing.assert_frame_equal(orig.lesions, got.lesions, check_dtype=False)
        assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(orig.folds, got.folds))
        assert got.params == json.loads(json.dumps(orig.to_json()["params"]))
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        (tmp_path / "run" / "metrics.json").unlink()
        load_results(tmp_path / "run")


# --------------------------------------------------------------------------- #
# Table III by two rules: the paper's and the nested threshold
# --------------------------------------------------------------------------- #


class MeanDifference(ClassifierMixin, BaseEstimator):
    """A fast linear classifier for simulations: the class-mean difference, squashed by a logistic."""

    def fit(self, X, y):
        X, y = np.asarray(X, float), np.asarray(y)
        self.w_ = X[y == 1].mean(0) - X[y == 0].mean(0)
        self.b_ = 0.5 * (X[y == 1].mean(0) + X[y == 0].mean(0)) @ self.w_
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        p = 1.0 / (1.0 + np.exp(-(np.asarray(X, float) @ self.w_ - self.b_)))
        return np.column_stack([1 - p, p])


def _null_accuracies(seed, *, n=40, d=5):
    """Accuracy of the nested and of the paper rule on features with no class signal."""
    rng = np.random.default_rng(seed)
    m = pd.DataFrame(
        {
            "lesion": [f"l{i}" for i in range(n)],
            "patient": [f"p{i}" for i in range(n)],
            "label": np.repeat([0, 1], n // 2),
        }
    )
    X = rng.normal(size=(n, d))
    kw = dict(estimator=MeanDifference(), settings=CVSettings(n_splits=5, cv_seed=seed, standardize=False))
    cv = ev.cross_validated_probabilities(X, m, train_sets={"t": None}, **kw)
    p, _ = cv.lesion_probabilities("t")
    y = m["label"].to_numpy()
    thr = ev.nested_thresholds(X, m, cv.folds, **kw)
    assert not np.isnan(thr).any()  # inf (call every lesion benign) is a legitimate choice
    return ev.nested_operating_point(y, p, cv.fold, thr)["accuracy"], ev.operating_point(y, p)["accuracy"]


@pytest.mark.slow  # a simulation of many nested cross-validations
def test_nested_threshold_accuracy_is_chance_without_signal():
    """Simulated oracle: with no signal and balanced classes, a threshold that never saw the
    test lesions gives accuracy 0.5 in expectation; the paper's rule (threshold chosen on the
    test predictions) is optimistic."""
    n_seeds, n = 100, 40
    acc = np.array([_null_accuracies(s, n=n) for s in range(n_seeds)])
    nested, paper = acc.mean(axis=0)
    sd = max(math.sqrt(0.25 / n), acc[:, 0].std(ddof=1))  # binomial sd of one run, or the observed one
    tol = 3.0 * sd / math.sqrt(n_seeds)
    assert abs(nested - 0.5) < tol, (nested, tol)
    assert paper > 0.5 + tol  # the paper's rule sees its own test lesions


def test_nested_operating_point_uses_each_folds_threshold():
    r = ev.nested_operating_point([0, 1, 0, 1], [0.2, 0.6, 0.5, 0.9], [0, 0, 1, 1], [0.5, 0.45])
    assert (r["sensitivity"], r["specificity"], r["accuracy"], r["threshold"]) == (1.0, 0.5, 0.75, 0.475)
    r = ev.nested_operating_point([0, 1, 0, 1], [0.2, 0.6, 0.5, 0.9], [0, 0, 1, 1], [0.55, np.nan])
    assert r["accuracy"] == 1.0  # a fold without a threshold uses the others' median
    with pytest.raises(ValueError, match="fold"):
        ev.nested_operating_point([0, 1], [0.2, 0.6], [0, 2], [0.5, 0.5])


def test_table3_has_both_rules(result):
    t3 = result.table3
    assert list(t3["rule"]) == ["paper", "nested"]
    assert list(t3.columns) == list(ev.TABLE3_COLUMNS)
    assert t3["auc"].nunique() == 1  # the AUC does not depend on the threshold rule
    for _, row in t3.iterrows():
        lo, hi = sorted([row["sensitivity"], row["specificity"]])
        assert lo - 1e-12 <= row["accuracy"] <= hi + 1e-12


# --------------------------------------------------------------------------- #
# Platt scaling and lesion-grouped calibration
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("weighted", [False, True])
def test_platt_scaling_analytic_two_values(weighted):
    """With two distinct decision values the logistic fit is saturated: the fitted probability
    at each value is the (weighted) mean of the smoothed targets of Lin et al. (2007) there."""
    f = np.array([-2.0] * 5 + [3.0] * 7)
    y = np.array([0, 0, 0, 0, 1] + [0, 0, 1, 1, 1, 1, 1])
    w = np.linspace(0.5, 2.0, 12) if weighted else np.ones(12)
    n_pos, n_neg = w[y == 1].sum(), w[y == 0].sum()
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    q = [np.average(t[f == v], weights=w[f == v]) for v in (-2.0, 3.0)]
    a, b = ev.platt_scaling(f, y, sample_weight=w if weighted else None)
    np.testing.assert_allclose(ev.platt_probability([-2.0, 3.0], a, b), q, rtol=0, atol=1e-7)
    # p = 1 / (1 + exp(a f + b)): the two logits fix a and b
    la, lb = (np.log(1 / qi - 1) for qi in q)
    assert a == pytest.approx((lb - la) / 5.0, abs=1e-5) and b == pytest.approx(la + 2.0 * (lb - la) / 5.0, abs=1e-5)


def test_platt_scaling_is_scale_free_and_checks_inputs():
    rng = np.random.default_rng(0)
    f = rng.normal(size=50)
    y = (f + rng.normal(size=50) > 0).astype(int)
    a, b = ev.platt_scaling(f, y)
    a2, b2 = ev.platt_scaling(1000.0 * f, y)
    assert a < 0 and a2 == pytest.approx(a / 1000.0, rel=1e-5) and b2 == pytest.approx(b, abs=1e-6)
    with pytest.raises(ValueError, match="non-finite"):
        ev.platt_scaling([0.0, np.inf], [0, 1])
    with pytest.raises(ValueError, match="sample_weight"):
        ev.platt_scaling([0.0, 1.0], [0, 1], sample_weight=[-1.0, 1.0])


def _near_duplicates(seed, *, n_lesions=40, n_images=12, d=100, signal=2.0, image_noise=0.3):
    """Lesions in a high-dimensional feature space, each seen as near-duplicate images."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n_lesions // 2)
    m = pd.DataFrame(
        {
            "lesion": np.repeat([f"l{i}" for i in range(n_lesions)], n_images),
            "patient": np.repeat([f"p{i}" for i in range(n_lesions)], n_images),
            "label": np.repeat(y, n_images),
        }
    )
    lesion = rng.normal(size=(n_lesions, d))
    lesion[:, 0] += signal * (2 * y - 1)
    X = np.repeat(lesion, n_images, axis=0) + image_noise * rng.normal(size=(n_lesions * n_images, d))
    return X, m


def test_grouped_calibration_is_not_over_confident():
    """Simulated oracle: image-level Platt calibration sees twins of its held-out images and pushes
    lesion probabilities to 0 or 1; lesion-grouped calibration does not, at a similar AUC."""
    extreme, log_loss, auc = {"grouped": [], "image": []}, {"grouped": [], "image": []}, {"grouped": [], "image": []}
    for seed in range(4):
        X, m = _near_duplicates(100 + seed)
        for cal in extreme:
            cv = ev.cross_validated_probabilities(
                X, m, train_sets={"t": None}, settings=CVSettings(calibration=cal, cv_seed=seed)
            )
            p, _ = cv.lesion_probabilities("t")
            y = cv.design.lesions["label"].to_numpy()
            extreme[cal].append(np.mean((p < 0.05) | (p > 0.95)))
            log_loss[cal].append(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
            auc[cal].append(roc_auc(y, p))
    assert np.mean(extreme["grouped"]) < 0.15 < 0.25 < np.mean(extreme["image"])
    assert np.mean(log_loss["grouped"]) < np.mean(log_loss["image"])
    assert abs(np.mean(auc["grouped"]) - np.mean(auc["image"])) < 0.06


def test_linear_svm_grouped_calibration():
    X, m = _near_duplicates(0, n_lesions=20, n_images=4, d=10)
    y = m["label"].to_numpy()
    groups = pd.factorize(m["lesion"])[0]
    svm = LinearSVM(calibration="grouped").fit(X, y, groups=groups)
    p, d = svm.predict_proba(X)[:, 1], svm.decision_function(X)
    a, b = svm.platt_
    np.testing.assert_allclose(p, ev.platt_probability(d, a, b))
    assert a < 0 and np.array_equal(np.argsort(p, kind="stable"), np.argsort(d, kind="stable"))
    image = LinearSVM(calibration="image").fit(X, y)
    assert np.allclose(image.decision_function(X), d)  # same SVM, another calibration
    with pytest.warns(RuntimeWarning, match="two groups"):
        one = LinearSVM(calibration="grouped").fit(X, y, groups=np.where(y == 1, 0, 1))
    np.testing.assert_allclose(one.decision_function(X), d)
    with pytest.raises(ValueError, match="calibration: expected one of"):
        CVSettings(calibration="libsvm-ish")


@pytest.mark.parametrize("weighted", [False, True])
def test_grouped_calibration_equals_sklearn_cross_val_predict(weighted):
    """Oracle: the Platt fit of grouped calibration is the one scikit-learn's own cross_val_predict
    (lesion-grouped, stratified, seeded folds on the standardised linear kernel) leads to, exactly."""
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict

    X, m = _near_duplicates(3, n_lesions=20, n_images=4, d=10)
    y = m["label"].to_numpy()
    groups = pd.factorize(m["lesion"])[0]
    weight = np.random.default_rng(1).uniform(0.5, 2.0, len(y)) if weighted else None
    svm = LinearSVM(calibration="grouped", random_state=4).fit(X, y, groups=groups, sample_weight=weight)
    Z = StandardScaler().fit_transform(X)
    cv = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=4)
    oof = cross_val_predict(
        SVC(kernel="precomputed", class_weight="balanced"),
        Z @ Z.T,
        y,
        groups=groups,
        cv=cv,
        method="decision_function",
        params={} if weight is None else {"sample_weight": weight},
    )
    assert svm.platt_ == ev.platt_scaling(oof, y == 1, sample_weight=weight)


# --------------------------------------------------------------------------- #
# Tested claims: matched against mismatched reconstruction
# --------------------------------------------------------------------------- #


def test_planted_mismatch_flip_is_significant_after_holm():
    """Simulated oracle: the class signal points one way at 40 dB and the other way at 60 dB, so a
    classifier trained at one range ranks lesions backwards at the other; the matched-vs-mismatched
    DeLong tests must be significant after Holm, and the mean drop's interval must exclude 0."""
    m = make_manifest(16, seed=4, ranges=(40.0, 60.0), margins=(5.0,))
    rng = np.random.default_rng(7)
    code = pd.factorize(m["lesion"])[0]
    y = m["label"].to_numpy()
    sign = np.where(m["dynamic_range_db"].to_numpy() == 40.0, 1.0, -1.0)
    X = rng.normal(scale=0.5, size=(code.max() + 1, 4))[code] + rng.normal(scale=0.3, size=(len(m), 4))
    X[:, 0] += 0.8 * sign * (y - 0.5)  # matched AUC about 0.9, mismatched about 0.2
    X[:, 1] += 3.0 * (sign > 0)  # the two ranges also sit apart, as reconstructions do
    r = reconstruction_matrix(X, m, backbone="flip", ranges=(40, 60), n_boot=500, settings=CVSettings(n_repeats=1))
    mm = r.paired_tests[r.paired_tests["kind"] == "matched_vs_mismatched"]
    assert len(mm) == 2
    assert (mm["diff"] > 0.5).all() and (mm["p_holm"] < 0.05).all() and (mm["diff_ci_low"] > 0).all()
    drop = ev.mismatch_drop(r, n_boot=500)
    assert drop["n_pairs"] == 2 and drop["ci_low"] > 0.3
    assert drop["mean_drop"] == pytest.approx(mm["diff"].mean())


def test_auc_contrast_ci_oracles():
    y = np.repeat([0, 1], 15)
    s = np.random.default_rng(0).normal(size=30) + y
    est, lo, hi = ev.auc_contrast_ci(y, [s, s], [1.0, -1.0], n_boot=300)
    assert (est, lo, hi) == (0.0, 0.0, 0.0)  # identical scores: the difference is 0 in every resample
    est, lo, hi = ev.auc_contrast_ci(y, [s], [1.0], n_boot=300, seed=1)
    assert (est, lo, hi) == pytest.approx(ev.bootstrap_ci(y, s, n_boot=300, seed=1), abs=0.05)
    with pytest.raises(ValueError, match="weights"):
        ev.auc_contrast_ci(y, [s, s], [1.0])


# --------------------------------------------------------------------------- #
# Lesion weighting
# --------------------------------------------------------------------------- #


class WeightLog(ClassifierMixin, BaseEstimator):
    """Injected estimator that records the sample weights it is fitted with."""

    log = []

    def fit(self, X, y, sample_weight=None):
        WeightLog.log.append((np.asarray(X)[:, 1].astype(int), sample_weight))
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        p = np.full(len(X), 0.5)
        return np.column_stack([1 - p, p])


def test_lesion_weighting_gives_every_lesion_total_weight_one():
    m = make_manifest(12, seed=5)
    m = m[~((m["lesion"] == m["lesion"].iloc[0]) & (m["margin_mm"] == 2.0))].reset_index(drop=True)  # 12 images
    code = pd.factorize(m["lesion"])[0]
    X = np.column_stack([np.zeros(len(m)), code])
    WeightLog.log.clear()
    ev.cross_validated_probabilities(
        X,
        m,
        train_sets={"all": None, "40": (40,)},
        estimator=WeightLog(),
        settings=CVSettings(n_splits=3, standardize=False, lesion_weighting=True),
    )
    assert len(WeightLog.log) == 6
    for lesion_code, w in WeightLog.log:
        totals = np.bincount(lesion_code, weights=w)[np.unique(lesion_code)]
        np.testing.assert_allclose(totals, 1.0)
    WeightLog.log.clear()
    ev.cross_validated_probabilities(
        X, m, train_sets={"all": None}, estimator=WeightLog(), settings=CVSettings(n_splits=3, standardize=False)
    )
    assert all(w is None for _, w in WeightLog.log)


def test_lesion_weighted_svm_on_duplicates_equals_the_svm_on_lesions():
    """Analytic oracle: k identical images of a lesion, each with weight 1/k, are one image of
    weight 1 in the SVM's dual, so the weighted fit on duplicated images equals the plain fit on
    one image per lesion."""
    rng = np.random.default_rng(3)
    y_les = np.repeat([0, 1], 10)
    X_les = rng.normal(size=(20, 5)) + 1.2 * y_les[:, None]
    k = rng.integers(1, 7, 20)
    code = np.repeat(np.arange(20), k)
    svm = dict(C=0.5, class_weight=None, standardize=False, calibration="image")
    dup = LinearSVM(**svm).fit(X_les[code], y_les[code], sample_weight=1.0 / k[code])
    one = LinearSVM(**svm).fit(X_les, y_les)
    Xt = rng.normal(size=(30, 5))
    np.testing.assert_allclose(dup.decision_function(Xt), one.decision_function(Xt), rtol=0, atol=2e-3)
    plain = LinearSVM(**svm).fit(X_les[code], y_les[code])
    assert np.abs(plain.decision_function(Xt) - one.decision_function(Xt)).max() > 0.05


# --------------------------------------------------------------------------- #
# BLAS threads of the fold loop
# --------------------------------------------------------------------------- #


class BlasThreadLog(WeightLog):
    """Injected estimator that records the BLAS thread counts in force while it is fitted (scores as WeightLog)."""

    log = []

    def fit(self, X, y, sample_weight=None):
        from threadpoolctl import threadpool_info

        BlasThreadLog.log.append({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
        self.classes_ = np.array([0, 1])
        return self


def test_fold_loop_fits_with_one_blas_thread_and_restores_the_setting():
    from threadpoolctl import threadpool_info, threadpool_limits

    from uslib import crossval

    m = make_manifest(12, seed=5)
    X = np.random.default_rng(0).normal(size=(len(m), 3))
    with threadpool_limits(limits=2, user_api="blas"):
        BlasThreadLog.log.clear()
        ev.cross_validated_probabilities(
            X, m, train_sets={"all": None}, estimator=BlasThreadLog(), settings=CVSettings(n_splits=3)
        )
        after = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    assert crossval.FOLD_BLAS_THREADS == 1
    assert len(BlasThreadLog.log) == 3 and all(s == {1} for s in BlasThreadLog.log)
    assert after == {2}  # the caller's setting is back once the loop ends
