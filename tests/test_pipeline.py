"""Get-or-compute steps of the chapters and the run record."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from uslib import captions, pipeline
from uslib.data import Dataset
from uslib.store import update_run_record


def test_phantom_is_simulated_once_and_read_back_through_the_loader(tmp_path):
    ds = pipeline.get_dataset(tmp_path, data_source="phantom", n_lesions=3, data_seed=1)
    files = list(tmp_path.glob("data/phantom-*.mat"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    again = pipeline.get_dataset(tmp_path, data_source="phantom", n_lesions=3, data_seed=1)
    assert files[0].stat().st_mtime_ns == mtime, "the phantom file is reused, not rewritten"
    assert again.fingerprint == ds.fingerprint and ds.synthetic and len(ds) == 3
    rec = pipeline.run_record(tmp_path)["dataset"]
    assert rec["fingerprint"] == ds.fingerprint and rec["synthetic"] is True and rec["n_lesions"] == 3
    # the non-echo rows were dropped by the loader
    assert all(s.rf.shape[0] == ds_s.rf.shape[0] for s, ds_s in zip(ds[0].scans, again[0].scans))
    other = pipeline.get_dataset(tmp_path, data_source="phantom", n_lesions=3, data_seed=2)
    assert other.fingerprint != ds.fingerprint
    assert len(list(tmp_path.glob("data/phantom-*.mat"))) == 2


def test_missing_oasbud_file_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="Zenodo record 545928"):
        pipeline.get_dataset(tmp_path, data_source="oasbud", oasbud_path=str(tmp_path / "OASBUD.mat"))
    with pytest.raises(ValueError, match="oasbud_path"):
        pipeline.get_dataset(tmp_path, data_source="oasbud", oasbud_path=None)
    with pytest.raises(ValueError, match="phantom' or 'oasbud"):
        pipeline.get_dataset(tmp_path, data_source="csv")


def _fs(backbone, kind):
    return SimpleNamespace(backbone=backbone, weights={"kind": kind})


def test_banner_names_what_to_distrust():
    synthetic, real = Dataset([], synthetic=True), Dataset([], synthetic=False)
    assert ":::{warning}" not in captions.status_banner(real, [_fs("vgg19", "imagenet")])
    text = captions.status_banner(real, [_fs("vgg19", "random"), _fs("inception_v3", "imagenet")])
    warning = text.split(":::{note}")[0]
    assert "Random weights" in warning and "vgg19" in warning and "inception_v3" not in warning
    assert "Synthetic data" not in text
    text = captions.status_banner(synthetic, [_fs("vgg19", "custom")])
    assert "Synthetic data" in text and "Non-ImageNet weights" in text
    assert text.startswith(":::{warning}") and text.rstrip().endswith(":::")


def _info(backbone, path, md5):
    """The weights dict a feature set carries, made by the real WeightsInfo."""
    from uslib.features import BACKBONES, WeightsInfo

    kind = "imagenet" if md5 == BACKBONES[backbone].weights_md5 else "custom"
    return WeightsInfo(kind=kind, source=f"keras cache: {path}", fingerprint="0" * 16, path=path, md5=md5).to_dict()


def test_real_imagenet_weights_are_named_with_their_md5_and_no_warning_remains():
    from uslib.features import BACKBONES

    real = Dataset([], synthetic=False)
    inc, vgg = BACKBONES["inception_v3"], BACKBONES["vgg19"]
    both = [
        ("inception_v3", _info("inception_v3", "/k/a.h5", inc.weights_md5)),
        ("vgg19", _info("vgg19", "/k/b.h5", vgg.weights_md5)),
    ]
    text = captions.status_banner(real, both)
    assert ":::{warning}" not in text and text.startswith(":::{note}")
    assert f"ImageNet weights (md5 {inc.weights_md5})" in text and f"ImageNet weights (md5 {vgg.weights_md5})" in text
    assert captions.weights_note(both) == text
    # a mirror's file (another md5) is labelled custom: a warning naming its md5, no ImageNet note for it
    mirror = [("inception_v3", _info("inception_v3", "/k/a.h5", "0123456789abcdef0123456789abcdef")), both[1]]
    text = captions.status_banner(real, mirror)
    warning, note = text.split(":::{note}")
    assert "Non-ImageNet weights" in warning and "inception_v3 (md5 0123456789abcdef0123456789abcdef)" in warning
    assert "vgg19" not in warning and f"ImageNet weights (md5 {vgg.weights_md5})" in note
    assert "inception_v3" not in note
    # feature-set objects work the same as (backbone, dict) pairs
    fs = SimpleNamespace(backbone="vgg19", weights=both[1][1])
    assert captions.weights_note([fs]) == captions.weights_note([both[1]])
    assert captions.weights_note([_fs("vgg19", "random")]) == ""


def test_run_record_merges_sections(tmp_path):
    update_run_record(tmp_path, stage_seconds={"a": 1.0}, profile="x")
    rec = update_run_record(tmp_path, stage_seconds={"b": 2.0})
    assert rec["stage_seconds"] == {"a": 1.0, "b": 2.0} and rec["profile"] == "x"
    assert pipeline.run_record(tmp_path) == rec


# --------------------------------------------------------------------------- #
# Every artefact is a function of data, code and parameters
# --------------------------------------------------------------------------- #

import shutil
import warnings

import numpy as np
import pandas as pd

from uslib import store
from uslib.cvsettings import CVSettings


@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    ds = pipeline.get_dataset(run_dir, data_source="phantom", n_lesions=12, data_seed=0)
    manifest = pipeline.get_manifest(ds, dynamic_ranges_db=(40, 60), margins_mm=(5,))
    rng = np.random.default_rng(0)
    # stand-in features (no network): class signal plus noise, one row per image
    X = rng.standard_normal((len(manifest), 8)) + manifest["label"].to_numpy()[:, None] * 0.8
    return {"run_dir": run_dir, "ds": ds, "manifest": manifest, "fs": SimpleNamespace(features=X, backbone="toy")}


SETTINGS = CVSettings(n_splits=3, cv_seed=0, n_repeats=1)


def _matrix(run, manifest=None, **changes):
    """get_matrix of the stand-in features with :data:`SETTINGS` changed by ``changes``."""
    return pipeline.get_matrix(
        run["run_dir"],
        run["fs"],
        run["manifest"] if manifest is None else manifest,
        ranges=(40, 60),
        settings=SETTINGS.replace(**changes),
    )


def _result_dirs(run):
    return {p.name for p in (run["run_dir"] / "results").iterdir()}


def test_regrouped_patients_give_new_results_with_new_folds(phantom_run, tmp_path):
    run = phantom_run
    before = _matrix(run)
    dirs = _result_dirs(run)
    # merge the 12 lesions into 6 patients, each holding one benign and one malignant lesion
    ds = run["ds"]
    ben = [les.key for les in ds if les.label == 0]
    mal = [les.key for les in ds if les.label == 1]
    pairs = list(zip(ben, mal)) + [(k,) for k in ben[len(mal) :] + mal[len(ben) :]]
    rows = [f"{k},P{i % 6}" for i, group in enumerate(pairs) for k in group]
    csv = tmp_path / "patients.csv"
    csv.write_text("id,patient\n" + "\n".join(rows) + "\n")
    ds6 = pipeline.get_dataset(run["run_dir"], data_source="phantom", n_lesions=12, data_seed=0, patients_csv=str(csv))
    assert ds6.fingerprint != ds.fingerprint and len(set(ds6.patients)) == 6
    manifest6 = pipeline.get_manifest(ds6, dynamic_ranges_db=(40, 60), margins_mm=(5,))
    after = _matrix(run, manifest6)
    assert _result_dirs(run) - dirs, "a new result was computed"
    assert after.lesions["patient"].nunique() == 6 and before.lesions["patient"].nunique() > 6
    folds_before = [sorted(te.tolist()) for _, te in before.folds]
    folds_after = [sorted(te.tolist()) for _, te in after.folds]
    assert folds_after != folds_before
    for _, te in after.folds:  # patient-level: no patient on both sides of a fold
        test_patients = set(after.lesions["patient"].iloc[te])
        assert not test_patients & set(after.lesions["patient"].drop(index=te))


def test_flipped_labels_give_new_results(phantom_run):
    run = phantom_run
    before = _matrix(run)
    dirs = _result_dirs(run)
    flipped = run["manifest"].assign(label=1 - run["manifest"]["label"])
    after = _matrix(run, flipped)
    assert _result_dirs(run) - dirs, "a new result was computed"
    np.testing.assert_array_equal(after.lesions["label"].to_numpy(), 1 - before.lesions["label"].to_numpy())
    # a linear SVM with balanced class weights and lesion-grouped Platt calibration is symmetric in the
    # labels: flipped labels give P(malignant) close to 1 - the old one and the same AUCs, from a new result
    p_before, p_after = before.predictions["probability"].to_numpy(), after.predictions["probability"].to_numpy()
    assert not np.allclose(p_after, p_before)
    np.testing.assert_allclose(p_after, 1.0 - p_before, atol=0.01)  # up to the smoothing of the Platt targets


def test_a_code_edit_in_evaluation_recomputes_results_and_nothing_upstream(phantom_run, tmp_path, monkeypatch):
    run = phantom_run
    _matrix(run)
    dirs = _result_dirs(run)
    phantom_file = next((run["run_dir"] / "data").glob("phantom-*.mat"))
    mtime = phantom_file.stat().st_mtime_ns
    pkg = tmp_path / "uslib"
    shutil.copytree(store.PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "evaluation.py").write_text((pkg / "evaluation.py").read_text() + "\n\nEDITED = True\n")
    monkeypatch.setattr(store, "PACKAGE_DIR", pkg)
    again = _matrix(run)
    assert len(_result_dirs(run) - dirs) == 1, "the edited stage recomputed its result"
    ds = pipeline.get_dataset(run["run_dir"], data_source="phantom", n_lesions=12, data_seed=0)
    assert phantom_file.stat().st_mtime_ns == mtime, "the data set upstream was not rebuilt"
    assert ds.fingerprint == run["ds"].fingerprint and len(again.lesions) == 12


def test_a_damaged_result_is_named_and_recomputed(phantom_run, monkeypatch):
    run = phantom_run
    monkeypatch.delenv(store.EVENTS_ENV, raising=False)
    first = _matrix(run, svm_c=3.0)
    out = next(
        p
        for p in (run["run_dir"] / "results").iterdir()
        if (p / "matrix.csv").exists()
        and store.load_json(p / "metrics.json")["results"]["toy"]["params"].get("svm_c") == 3.0
    )
    (out / "predictions.csv").write_text((out / "predictions.csv").read_text()[:200])
    with pytest.warns(store.DamagedArtefactWarning, match="predictions.csv"):
        again = _matrix(run, svm_c=3.0)
    assert again.table["auc"].tolist() == first.table["auc"].tolist()
    assert store.verify_dir(out) == out


def test_a_truncated_phantom_file_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.delenv(store.EVENTS_ENV, raising=False)
    ds = pipeline.get_dataset(tmp_path, data_source="phantom", n_lesions=2, data_seed=3)
    path = next((tmp_path / "data").glob("phantom-*.mat"))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(store.DamagedArtefactWarning, match=path.name):
        again = pipeline.get_dataset(tmp_path, data_source="phantom", n_lesions=2, data_seed=3)
    assert again.fingerprint == ds.fingerprint
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipeline.get_dataset(tmp_path, data_source="phantom", n_lesions=2, data_seed=3)


def test_content_digests_are_kept_with_the_phantom_and_a_damaged_memo_is_recomputed(tmp_path, monkeypatch):
    from uslib.oasbud import load_oasbud

    monkeypatch.delenv(store.EVENTS_ENV, raising=False)
    ds = pipeline.get_dataset(tmp_path, data_source="phantom", n_lesions=2, data_seed=4, skip_samples=20)
    path = next((tmp_path / "data").glob("phantom-*.mat"))
    fresh = load_oasbud(path, skip_samples=20).content_digests  # hashed from the RF, no memo
    memos = list((tmp_path / "data").glob("content-*.json"))
    assert len(memos) == 1 and ds.content_digests == fresh
    again = pipeline.get_dataset(tmp_path, data_source="phantom", n_lesions=2, data_seed=4, skip_samples=20)
    assert again.content_digests == fresh and again.fingerprint == ds.fingerprint
    other = pipeline.get_dataset(tmp_path, data_source="phantom", n_lesions=2, data_seed=4, skip_samples=30)
    assert len(list((tmp_path / "data").glob("content-*.json"))) == 2, "skip_samples is part of the key"
    assert other.content_digests == load_oasbud(path, skip_samples=30).content_digests != fresh
    memos[0].write_text(memos[0].read_text().replace(fresh[ds.keys[0]], "0" * 16))
    with pytest.warns(store.DamagedArtefactWarning, match=memos[0].name):
        repaired = pipeline.get_dataset(tmp_path, data_source="phantom", n_lesions=2, data_seed=4, skip_samples=20)
    assert repaired.content_digests == fresh


def test_n_splits_above_what_the_patients_allow_names_the_key(phantom_run):
    from uslib.config import ProfileError

    with pytest.raises(ProfileError, match=r"n_splits.*got 12"):
        _matrix(phantom_run, n_splits=12)


def test_sensitivity_switches_one_choice_per_row_and_reuses_the_cache(phantom_run):
    run = phantom_run
    base = _matrix(run)
    kw = {"ranges": (40, 60), "settings": SETTINGS, "n_boot": 200}
    sens = pipeline.get_sensitivity(run["run_dir"], run["fs"], run["manifest"], baseline=base, **kw)
    c_values = [c for c in pipeline.SENSITIVITY_C if c != SETTINGS.svm_c]
    assert list(sens["choice"]) == [
        "as run",
        "standardize",
        "calibration",
        "lesion_weighting",
        *["svm_c"] * len(c_values),
    ]
    assert sens[sens.choice == "svm_c"]["svm_c"].tolist() == c_values and len(c_values) == 2
    # every row is diagnosed as a fit (degenerate or not), with its share of extreme probabilities
    assert sens["degenerate"].isin([True, False]).all() and sens["extreme_share"].between(0, 1).all()
    first = sens.iloc[0]
    assert (first["standardize"], first["calibration"], first["lesion_weighting"]) == (True, "grouped", False)
    switched = sens[sens.choice != "svm_c"].set_index("choice")
    assert not switched.loc["standardize", "standardize"]
    assert switched.loc["calibration", "calibration"] == "image"
    assert switched.loc["lesion_weighting", "lesion_weighting"]
    t = base.table.set_index(["train", "test"])
    assert first["auc"] == pytest.approx(t.loc[("TrainALL", "TestALL"), "auc"])
    assert ((sens["auc_ci_low"] <= sens["auc"]) & (sens["auc"] <= sens["auc_ci_high"])).all()
    assert (
        (sens["drop_ci_low"] <= sens["mean_drop"] + 1e-12) & (sens["mean_drop"] <= sens["drop_ci_high"] + 1e-12)
    ).all()
    dirs = _result_dirs(run)
    again = pipeline.get_sensitivity(run["run_dir"], run["fs"], run["manifest"], baseline=base, **kw)
    assert _result_dirs(run) == dirs, "nothing is recomputed"
    pd.testing.assert_frame_equal(again, sens)


def test_amax_scope_rows_are_computed_with_the_sensitivity_columns(phantom_run):
    from uslib import augmentation as aug

    run = phantom_run
    a_max = pipeline.get_dataset_a_max(run["run_dir"], run["ds"])
    assert a_max == aug.dataset_a_max(run["ds"])
    assert pipeline.get_dataset_a_max(run["run_dir"], run["ds"]) == a_max  # read back from the run directory
    m = pipeline.amax_manifest(run["manifest"], margin_mm=5, a_max=a_max)
    assert (m["a_max"] == a_max).all() and len(m) == len(run["manifest"])
    with pytest.raises(ValueError, match="margin_mm 2"):
        pipeline.amax_manifest(run["manifest"], margin_mm=2, a_max=a_max)
    # stand-in features of the data-set-wide images: another draw, with a weaker class signal
    rng = np.random.default_rng(1)
    X = rng.standard_normal((len(m), 8)) + m["label"].to_numpy()[:, None] * 0.3
    wide = SimpleNamespace(features=X, backbone="toy")
    kw = {"ranges": (40, 60), "settings": SETTINGS, "n_boot": 200}
    rows = pipeline.get_amax_sensitivity(run["run_dir"], run["fs"], run["manifest"], wide, m, **kw)
    sens = pipeline.get_sensitivity(run["run_dir"], run["fs"], run["manifest"], **kw)
    assert list(rows["choice"]) == ["amax_scope", "amax_scope"]
    assert list(rows["setting"]) == ["A_max per scan, 5 mm margin only", "A_max data-set-wide, 5 mm margin only"]
    assert list(rows.columns) == list(sens.columns)
    # the per-scan row at the only margin is the run's own setting; the data-set-wide row is its own fit
    assert rows.iloc[0]["auc"] == pytest.approx(sens.iloc[0]["auc"])
    assert rows.iloc[0]["mean_drop"] == pytest.approx(sens.iloc[0]["mean_drop"])
    assert rows.iloc[1]["auc"] != rows.iloc[0]["auc"] and 0 <= rows.iloc[1]["auc"] <= 1
    assert rows["degenerate"].isin([True, False]).all() and rows["extreme_share"].between(0, 1).all()
    with pytest.raises(ValueError, match="no 'a_max' column"):
        pipeline.get_amax_sensitivity(run["run_dir"], run["fs"], run["manifest"], wide, run["manifest"], **kw)
