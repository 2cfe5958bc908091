"""Get-or-compute steps of the chapters and the run record."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from uslib import pipeline
from uslib.data import Dataset
from uslib.run import update_run_record


def test_phantom_is_simulated_once_and_read_back_through_the_loader(tmp_path):
    ds = pipeline.get_dataset(tmp_path, data_source="phantom", n_lesions=3, data_seed=1)
    files = list(tmp_path.glob("phantom-*.mat"))
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
    assert len(list(tmp_path.glob("phantom-*.mat"))) == 2


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
    assert pipeline.status_banner(real, [_fs("vgg19", "imagenet")]) == ""
    text = pipeline.status_banner(real, [_fs("vgg19", "random"), _fs("inception_v3", "imagenet")])
    assert "Random weights" in text and "vgg19" in text and "inception_v3" not in text
    assert "Synthetic data" not in text
    text = pipeline.status_banner(synthetic, [_fs("vgg19", "custom")])
    assert "Synthetic data" in text and "Non-ImageNet weights" in text
    assert text.startswith(":::{warning}") and text.rstrip().endswith(":::")


def test_run_record_merges_sections(tmp_path):
    update_run_record(tmp_path, stage_seconds={"a": 1.0}, profile="x")
    rec = update_run_record(tmp_path, stage_seconds={"b": 2.0})
    assert rec["stage_seconds"] == {"a": 1.0, "b": 2.0} and rec["profile"] == "x"
    assert pipeline.run_record(tmp_path) == rec
