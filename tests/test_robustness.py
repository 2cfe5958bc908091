"""Tests of uslib.robustness: manifests, generalisation curves, baselines, caches.

Synthetic feature matrices (no network is built); a hand-made data set for
the manifests and a two-lesion phantom for the envelope-vs-display checks.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from uslib import evaluation as ev
from uslib import pipeline
from uslib.cvsettings import CVSettings
from uslib import robustness as rb
from uslib.augmentation import MANIFEST_COLUMNS, image_key, image_set
from uslib.data import Dataset, Lesion, Scan

TRAIN = (40.0, 50.0, 60.0)
UNSEEN = (30.0, 80.0)


# --------------------------------------------------------------------------- #
# Fixtures
# --------------------------------------------------------------------------- #


def toy_dataset(n_lesions=40, *, seed=0):
    """Lesions with two tiny scans each; some patients have two lesions."""
    rng = np.random.default_rng(seed)
    lesions, p = [], 0
    while len(lesions) < n_lesions:
        for _ in range(int(rng.choice([1, 1, 2]))):
            if len(lesions) == n_lesions:
                break
            i = len(lesions)
            label = int(rng.random() < 0.45)
            rf = rng.integers(-100, 100, size=(8, 6)).astype(np.int16)
            scans = tuple(Scan(rf=rf + s, roi=np.ones((8, 6), bool)) for s in range(2))
            key = f"{i}p{p}"
            lesions.append(Lesion(id=key, key=key, patient=f"p{p}", label=label, birads="4a", scans=scans))
        p += 1
    return Dataset(lesions, source="toy", synthetic=True)


@pytest.fixture(scope="module")
def toy():
    return toy_dataset()


@pytest.fixture(scope="module")
def design(toy):
    manifest, cont = rb.robustness_manifest(
        toy, train_ranges_db=TRAIN, unseen_ranges_db=UNSEEN, margins_mm=(5,), continuous_range_db=(35, 65), seed=0
    )
    return manifest, cont


def synthetic_features(manifest, *, rotate: bool, seed=0, strength=1.6, d=6):
    """Class signal along a direction that is fixed, or rotates from feature 0 (40 dB) to 1 (80 dB)."""
    rng = np.random.default_rng(seed)
    y = 2.0 * manifest["label"].to_numpy() - 1.0
    dr = manifest["dynamic_range_db"].to_numpy()
    theta = np.clip((dr - 40.0) / 40.0, 0.0, 1.0) * (np.pi / 2) if rotate else np.zeros(len(dr))
    X = rng.normal(size=(len(manifest), d))
    X[:, 0] += strength * y * np.cos(theta)
    X[:, 1] += strength * y * np.sin(theta)
    return X


@pytest.fixture(scope="module")
def phantom2():
    from uslib.phantom import simulate_dataset

    return simulate_dataset(2, seed=3)


# --------------------------------------------------------------------------- #
# continuous_manifest
# --------------------------------------------------------------------------- #


def test_continuous_manifest_columns_ranges_rounding(toy):
    m = rb.continuous_manifest(toy, range_db=(35, 65), margins_mm=(2, 5), seed=1, decimals=1)
    assert list(m.columns) == list(MANIFEST_COLUMNS)
    ref = image_set(toy, dynamic_ranges_db=(40,), margins_mm=(2, 5))
    assert dict(m.dtypes) == dict(ref.dtypes)
    # one row per (lesion, scan, margin), in that order
    assert len(m) == len(toy) * 2 * 2
    assert m[["lesion", "scan", "margin_mm"]].equals(ref[["lesion", "scan", "margin_mm"]])
    assert m["image"].tolist() == list(range(len(m)))
    dr = m["dynamic_range_db"].to_numpy()
    assert (dr >= 35).all() and (dr <= 65).all()
    np.testing.assert_allclose(dr * 10, np.round(dr * 10), atol=1e-9)
    assert len(np.unique(dr)) > len(dr) // 2  # really drawn, not constant
    m0 = rb.continuous_manifest(toy, range_db=(35, 65), margins_mm=(2, 5), seed=1, decimals=0)
    np.testing.assert_array_equal(m0["dynamic_range_db"], np.round(m0["dynamic_range_db"]))


def test_continuous_manifest_deterministic_per_seed_and_per_image(toy):
    a = rb.continuous_manifest(toy, seed=0)
    b = rb.continuous_manifest(toy, seed=0)
    c = rb.continuous_manifest(toy, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert not np.array_equal(a["dynamic_range_db"], c["dynamic_range_db"])
    # a crop's draw does not depend on the other lesions of the data set
    sub = Dataset(list(toy)[5:9], synthetic=True)
    s = rb.continuous_manifest(sub, seed=0)
    merged = s.merge(a, on=["lesion", "scan", "margin_mm"], suffixes=("_sub", "_all"))
    assert len(merged) == len(s)
    np.testing.assert_array_equal(merged["dynamic_range_db_sub"], merged["dynamic_range_db_all"])


@pytest.mark.parametrize(
    "kw",
    [
        dict(range_db=(65, 35)),
        dict(range_db=(35,)),
        dict(range_db=(0, 10)),
        dict(range_db=(35, float("nan"))),
        dict(decimals=-1),
        dict(margins_mm=(5, 5)),
        dict(seed=-1),
    ],
)
def test_continuous_manifest_rejects_bad_arguments(toy, kw):
    with pytest.raises((ValueError, TypeError)):
        rb.continuous_manifest(toy, **kw)


# --------------------------------------------------------------------------- #
# robustness_manifest
# --------------------------------------------------------------------------- #


def test_robustness_manifest_union_without_duplicates(toy, design):
    m, cont = design
    assert list(m.columns) == list(MANIFEST_COLUMNS)
    assert m["image"].tolist() == list(range(len(m)))
    keys = [image_key(r) for r in m.itertuples(index=False)]
    assert len(set(keys)) == len(keys)
    assert cont.dtype == bool and cont.shape == (len(m),)
    # the grid: every training and unseen range, for every lesion and scan
    grid = m[~cont]
    for r in TRAIN + UNSEEN:
        at = m[np.isclose(m["dynamic_range_db"], r)]
        assert len(at) == len(toy) * 2, r
    # the continuous rows are exactly continuous_manifest's images
    ref = rb.continuous_manifest(toy, range_db=(35, 65), margins_mm=(5,), seed=0)
    got = {image_key(r) for r in m[cont].itertuples(index=False)}
    assert got == {image_key(r) for r in ref.itertuples(index=False)}
    assert set(np.round(grid["dynamic_range_db"], 6)) == set(TRAIN + UNSEEN)
    # lesions in data-set order, so lesion_table (hence the folds) matches the main CV
    assert ev.lesion_table(m)["lesion"].tolist() == toy.keys


def test_robustness_manifest_deduplicates_draws_on_the_grid(toy):
    # every draw in (39.6, 40.4) rounds to 40 dB: the continuous images ARE the 40-dB grid images
    m, cont = rb.robustness_manifest(
        toy, unseen_ranges_db=UNSEEN, margins_mm=(5,), continuous_range_db=(39.6, 40.4), decimals=0
    )
    assert len(m) == len(toy) * 2 * 5
    np.testing.assert_array_equal(cont, np.isclose(m["dynamic_range_db"], 40.0))


def test_robustness_manifest_rejects_unseen_that_is_seen(toy):
    with pytest.raises(ValueError, match="repeats training"):
        rb.robustness_manifest(toy, unseen_ranges_db=(30, 50))


# --------------------------------------------------------------------------- #
# generalisation_curves
# --------------------------------------------------------------------------- #


def test_resolve_policies():
    pol = rb.resolve_policies(["Train40dB", "TrainALL", "TrainContinuous"], train_ranges_db=(30, 60))
    assert pol == {"Train40dB": (40.0,), "TrainALL": (30.0, 60.0), "TrainContinuous": "continuous"}
    assert rb.resolve_policies({"mine": (45, 55)}) == {"mine": (45.0, 55.0)}
    for bad in (["Test40dB"], ["TrainSome"], [], {"x": "everything"}):
        with pytest.raises(ValueError):
            rb.resolve_policies(bad)


def test_curves_table_shape_folds_and_signal(toy, design):
    m, cont = design
    X = synthetic_features(m, rotate=False)
    curves, preds = rb.generalisation_curves(
        X,
        m,
        continuous_mask=cont,
        settings=CVSettings(n_splits=5, cv_seed=0),
        continuous_range_db=(35, 65),
        backbone="toy",
        return_predictions=True,
    )
    assert list(curves.columns) == list(rb.CURVE_COLUMNS)
    tests = sorted(TRAIN + UNSEEN)
    assert len(curves) == len(rb.DEFAULT_POLICIES) * len(tests)
    assert set(zip(curves.policy, curves.test_range_db)) == {(p, r) for p in rb.DEFAULT_POLICIES for r in tests}
    assert (curves.n_lesions == len(toy)).all()
    assert (curves.ci_low <= curves.auc).all() and (curves.auc <= curves.ci_high).all()
    # an informative, DR-independent signal is found by every policy at every range
    assert (curves.auc > 0.8).all(), curves
    seen = curves.set_index(["policy", "test_range_db"])["seen"]
    assert seen[("Train40dB", 40.0)] and not seen[("Train40dB", 50.0)]
    assert seen[("TrainALL", 60.0)] and not seen[("TrainALL", 80.0)]
    assert seen[("TrainContinuous", 50.0)] and not seen[("TrainContinuous", 30.0)]
    # the same patient folds as the main cross-validation (uslib.evaluation on the paper's image set)
    main = ev.cross_validate(
        X[~cont & np.isin(m.dynamic_range_db, TRAIN)],
        m[~cont & np.isin(m.dynamic_range_db, TRAIN)],
        train_ranges=(40,),
        test_ranges=(40,),
        settings=CVSettings(n_splits=5, cv_seed=0),
    )
    ours = preds[(preds.policy == "TrainALL") & (preds.test_range_db == 40.0)]
    assert ours["lesion"].tolist() == main["lesion"].tolist()
    np.testing.assert_array_equal(ours["fold"].to_numpy(), main["fold"].to_numpy())
    folds = ev.patient_folds(toy.labels, toy.patients, n_splits=5, seed=0)
    for k, (_, te) in enumerate(folds):
        assert (ours["fold"].to_numpy()[te] == k).all()
    # each lesion's probability at a range is the mean over its 2 images there
    assert (preds["n_images"] == 2).all()


def test_curves_are_the_evaluation_loop_with_a_mask_training_set(design):
    m, cont = design
    X = synthetic_features(m, rotate=True)
    _, preds = rb.generalisation_curves(
        X,
        m,
        continuous_mask=cont,
        policies=["Train40dB", "TrainContinuous"],
        settings=CVSettings(n_splits=4, cv_seed=1),
        return_predictions=True,
    )
    cv = ev.cross_validated_probabilities(
        X,
        m,
        train_sets={"Train40dB": (40,), "TrainContinuous": cont},
        test_set=TRAIN + UNSEEN,
        settings=CVSettings(n_splits=4, cv_seed=1),
    )
    for (pol, r), g in preds.groupby(["policy", "test_range_db"]):
        mean, counts = cv.lesion_probabilities(pol, (r,))
        np.testing.assert_array_equal(g["probability"].to_numpy(), mean)
        np.testing.assert_array_equal(g["n_images"].to_numpy(), counts)
        np.testing.assert_array_equal(g["fold"].to_numpy(), cv.fold)


@pytest.mark.parametrize("kw", [dict(calibration="image"), dict(lesion_weighting=True)])
def test_curves_pass_the_classifier_settings_to_the_loop(design, kw):
    m, cont = design
    X = synthetic_features(m, rotate=True)
    settings = CVSettings(n_splits=4, cv_seed=1, **kw)
    _, preds = rb.generalisation_curves(
        X, m, continuous_mask=cont, policies=["Train40dB"], settings=settings, return_predictions=True
    )
    cv = ev.cross_validated_probabilities(
        X, m, train_sets={"Train40dB": (40,)}, test_set=TRAIN + UNSEEN, settings=settings
    )
    default = ev.cross_validated_probabilities(
        X, m, train_sets={"Train40dB": (40,)}, test_set=TRAIN + UNSEEN, settings=CVSettings(n_splits=4, cv_seed=1)
    )
    g = preds[preds["test_range_db"] == 40.0]
    np.testing.assert_array_equal(g["probability"].to_numpy(), cv.lesion_probabilities("Train40dB", (40,))[0])
    assert not np.allclose(g["probability"].to_numpy(), default.lesion_probabilities("Train40dB", (40,))[0])


def test_curves_reproduce_a_drop_away_from_the_training_range(design):
    m, cont = design
    X = synthetic_features(m, rotate=True, strength=2.0)
    curves = rb.generalisation_curves(
        X,
        m,
        continuous_mask=cont,
        policies=["Train40dB", "TrainContinuous"],
        settings=CVSettings(n_splits=5, cv_seed=0),
    )
    auc = curves.set_index(["policy", "test_range_db"])["auc"]
    assert auc[("Train40dB", 40.0)] > 0.9
    assert auc[("Train40dB", 80.0)] < auc[("Train40dB", 40.0)] - 0.3
    # training across 35-65 dB sees the rotated signal and holds up better at 80 dB
    assert auc[("TrainContinuous", 80.0)] > auc[("Train40dB", 80.0)]
    s = rb.curve_summary(curves).set_index("policy")
    assert s.loc["Train40dB", "worst_drop"] > 0.3
    assert s.loc["Train40dB", "range_at_min"] in (60.0, 80.0)
    assert s.loc["Train40dB", "auc_seen"] == pytest.approx(auc[("Train40dB", 40.0)])


def test_curves_uninformative_features_give_chance(design):
    m, cont = design
    X = np.random.default_rng(5).normal(size=(len(m), 6))
    curves = rb.generalisation_curves(
        X, m, continuous_mask=cont, policies=["TrainALL"], settings=CVSettings(n_splits=5)
    )
    assert abs(curves.auc.mean() - 0.5) < 0.2


def test_curves_errors(design):
    m, cont = design
    X = synthetic_features(m, rotate=False)
    with pytest.raises(ValueError, match="continuous_mask selects no image"):
        rb.generalisation_curves(X, m, continuous_mask=np.zeros(len(m), bool))
    with pytest.raises(ValueError, match="bool array"):
        rb.generalisation_curves(X, m, continuous_mask=cont[:-1])
    with pytest.raises(ValueError, match="no image with dynamic_range_db 70"):
        rb.generalisation_curves(X, m, continuous_mask=cont, test_ranges_db=(40, 70))
    with pytest.raises(ValueError, match="Train45dB"):
        rb.generalisation_curves(X, m, continuous_mask=cont, policies=["Train45dB"])
    with pytest.raises(ValueError, match="rows but the manifest"):
        rb.generalisation_curves(X[:-1], m, continuous_mask=cont)


# --------------------------------------------------------------------------- #
# Hand-crafted baselines
# --------------------------------------------------------------------------- #


def synthetic_table(ds, *, seed=0):
    rng = np.random.default_rng(seed)
    y = ds.labels.astype(float)
    cols = {c: rng.normal(size=len(ds)) for c in rb.BASELINE_SETS["QUS+Morphology"]}
    cols["nakagami_m_mle"] = cols["nakagami_m_mle"] + 2.5 * y  # QUS informative, morphology not
    return pd.DataFrame({"lesion": ds.keys, "patient": ds.patients.astype(str), "label": ds.labels, **cols})


def test_baselines_same_folds_and_signal(toy):
    table = synthetic_table(toy)
    folds = ev.patient_folds(toy.labels, toy.patients, n_splits=5, seed=0)
    base, preds = rb.handcrafted_baselines(table=table, folds=folds, return_predictions=True)
    assert list(base.columns) == ["feature_set", "auc", "ci_low", "ci_high", "n_lesions", "n_features"]
    assert base.feature_set.tolist() == ["QUS", "Morphology", "QUS+Morphology"]
    b = base.set_index("feature_set")
    assert b.loc["QUS", "auc"] > 0.85
    assert abs(b.loc["Morphology", "auc"] - 0.5) < 0.25
    assert b.loc["QUS", "n_features"] == 6 and b.loc["QUS+Morphology", "n_features"] == 12
    for k, (_, te) in enumerate(folds):
        assert (preds[preds.feature_set == "QUS"]["fold"].to_numpy()[te] == k).all()
    # the default folds are the main CV's
    base2 = rb.handcrafted_baselines(table=table, settings=CVSettings(n_splits=5, cv_seed=0))
    pd.testing.assert_frame_equal(base, base2)


def test_baselines_are_the_evaluation_loop_on_lesion_rows(toy):
    table = synthetic_table(toy)
    cols = list(rb.BASELINE_SETS["QUS"])
    _, preds = rb.handcrafted_baselines(
        table=table, feature_sets={"QUS": cols}, settings=CVSettings(n_splits=4, cv_seed=2), return_predictions=True
    )
    cv = ev.cross_validated_probabilities(
        table[cols].to_numpy(),
        table[["lesion", "patient", "label"]],
        train_sets={"QUS": None},
        settings=CVSettings(n_splits=4, cv_seed=2),
    )
    p, n = cv.lesion_probabilities("QUS")
    assert (n == 1).all()
    np.testing.assert_array_equal(preds["probability"].to_numpy(), p)
    np.testing.assert_array_equal(preds["fold"].to_numpy(), cv.fold)


def test_baselines_name_non_finite_lesion(toy):
    table = synthetic_table(toy)
    table.loc[3, "kurtosis"] = np.inf
    with pytest.raises(ValueError, match=f"lesion '{toy.keys[3]}'.*kurtosis"):
        rb.handcrafted_baselines(table=table, settings=CVSettings(n_splits=5))


def test_baselines_are_constant_across_test_ranges(toy, design):
    m, cont = design
    curves = rb.generalisation_curves(
        synthetic_features(m, rotate=True), m, continuous_mask=cont, policies=["Train40dB"], backbone="toy"
    )
    base = rb.handcrafted_baselines(table=synthetic_table(toy), settings=CVSettings(n_splits=5))
    full = rb.attach_baselines(curves, base)
    assert list(full.columns) == list(rb.CURVE_COLUMNS)
    hc = full[full.family == "handcrafted"]
    assert len(hc) == len(base) * curves.test_range_db.nunique()
    assert (hc.groupby("policy")["auc"].nunique() == 1).all()
    np.testing.assert_allclose(hc.groupby("policy", sort=False)["auc"].first().to_numpy(), base.auc.to_numpy())
    pd.testing.assert_frame_equal(full[full.family == "cnn"].reset_index(drop=True), curves)
    # while the CNN curve of the same table does move with the test range
    assert full[full.family == "cnn"].auc.nunique() > 1


def test_handcrafted_features_never_use_log_compression(phantom2, monkeypatch):
    """QUS and morphology are computed before log compression: they cannot depend on the dynamic range."""
    ref = rb.handcrafted_features(phantom2)
    assert list(ref.columns) == ["lesion", "patient", "label", *rb.BASELINE_SETS["QUS+Morphology"]]
    assert np.isfinite(ref[list(rb.BASELINE_SETS["QUS+Morphology"])].to_numpy()).all()
    import uslib.augmentation as aug
    import uslib.reconstruction as rec

    def boom(*a, **k):
        raise AssertionError("log compression / display mapping was used")

    for mod, names in (
        (rec, ("log_compress", "gray_levels", "bmode", "bmode_from_envelope")),
        (aug, ("log_compress", "gray_levels")),
    ):
        for name in names:
            monkeypatch.setattr(mod, name, boom)
    with pytest.raises(AssertionError):  # the patch is effective on the display path...
        rb.displayed_envelope(phantom2[0].scans[0], 60)
    again = rb.handcrafted_features(phantom2)  # ...and the baselines never take it
    pd.testing.assert_frame_equal(ref, again)


def test_display_path_depends_on_dynamic_range_but_envelope_qus_does_not(phantom2):
    """Negative control: the same Nakagami estimate on the displayed B-mode moves with the DR."""
    from uslib.qus import qus_features, roi_statistics
    from uslib.reconstruction import envelope

    scan = phantom2[0].scans[0]
    env = envelope(scan.rf)
    m_env = qus_features(scan)["nakagami_m_mle"]
    # gain-invariant: the normalised envelope gives the same shape
    assert roi_statistics(env / env.max(), scan.roi)["nakagami_m_mle"] == pytest.approx(m_env, rel=1e-9)
    m_disp = {dr: roi_statistics(rb.displayed_envelope(scan, dr), scan.roi)["nakagami_m_mle"] for dr in (30, 50, 80)}
    assert max(m_disp.values()) - min(m_disp.values()) > 0.05 * m_env, m_disp
    # at a wide dynamic range the display keeps nearly the whole envelope
    assert abs(m_disp[80] - m_env) < abs(m_disp[30] - m_env)
    d = rb.displayed_envelope(scan, 30)
    assert d.min() >= 10 ** (-30 / 20) - 1e-12 and d.max() <= 1 + 1e-12


# --------------------------------------------------------------------------- #
# Caches
# --------------------------------------------------------------------------- #


def test_get_curves_caches_and_rekeys(tmp_path, design, monkeypatch):
    m, cont = design
    fs = SimpleNamespace(features=synthetic_features(m, rotate=True).astype(np.float32), backbone="toy")
    kw = dict(policies=["Train40dB", "TrainContinuous"], continuous_range_db=(35, 65))
    settings = CVSettings(n_splits=5, cv_seed=0)
    c1, p1 = pipeline.get_curves(tmp_path, fs, m, cont, **kw, settings=settings)
    files = sorted(p.name for p in (tmp_path / "robustness").iterdir())
    assert any(f.startswith("curves-toy-") for f in files) and any(f.startswith("predictions-toy-") for f in files)
    assert not any(f.endswith(".tmp") for f in files)

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(rb, "generalisation_curves", boom)
    c2, p2 = pipeline.get_curves(tmp_path, fs, m, cont, **kw, settings=settings)  # hit: nothing recomputed
    pd.testing.assert_frame_equal(c1, c2)
    pd.testing.assert_frame_equal(p1, p2)
    monkeypatch.undo()  # the cached table equals a fresh computation
    c3 = rb.generalisation_curves(
        fs.features,
        m,
        continuous_mask=cont,
        policies=kw["policies"],
        continuous_range_db=(35, 65),
        settings=settings,
        backbone="toy",
    )
    pd.testing.assert_frame_equal(c1, c3, check_exact=False, rtol=1e-12)
    monkeypatch.setattr(rb, "generalisation_curves", boom)
    with pytest.raises(AssertionError, match="recomputed"):  # another C is another result
        pipeline.get_curves(tmp_path, fs, m, cont, **kw, settings=settings.replace(svm_c=0.5))
    with pytest.raises(AssertionError, match="recomputed"):  # other features are another result
        pipeline.get_curves(
            tmp_path, SimpleNamespace(features=fs.features + 1, backbone="toy"), m, cont, **kw, settings=settings
        )


def test_get_baselines_caches(tmp_path, toy, monkeypatch):
    table = synthetic_table(toy)
    calls = []

    def fake_features(ds):
        calls.append(ds)
        return table

    monkeypatch.setattr(rb, "handcrafted_features", fake_features)
    b1, p1 = pipeline.get_baselines(tmp_path, toy, settings=CVSettings(n_splits=5, cv_seed=0))
    b2, p2 = pipeline.get_baselines(tmp_path, toy, settings=CVSettings(n_splits=5, cv_seed=0))
    assert len(calls) == 1  # the feature table is cached too
    pd.testing.assert_frame_equal(b1, b2)
    pd.testing.assert_frame_equal(p1, p2)
    assert p1["lesion"].tolist()[: len(toy)] == toy.keys

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(rb, "handcrafted_baselines", boom)
    b3, _ = pipeline.get_baselines(tmp_path, toy, settings=CVSettings(n_splits=5, cv_seed=0))
    pd.testing.assert_frame_equal(b1, b3)
    with pytest.raises(AssertionError, match="recomputed"):
        pipeline.get_baselines(tmp_path, toy, settings=CVSettings(n_splits=5, cv_seed=1))  # other folds
    import json

    stages = json.loads((tmp_path / "run.json").read_text())["stage_seconds"]
    assert "robustness_baselines" in stages and "handcrafted_features" in stages
