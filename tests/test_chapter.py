"""A chapter's set-up in one call: parameters checked at once, data loaded on first use, as the pipeline gives it."""

from __future__ import annotations

import pytest

from uslib import chapter, config, pipeline


def test_setup_checks_the_parameters_and_loads_nothing(tmp_path):
    ns = {"run_dir": str(tmp_path / "run"), "n_lesions": 3, "data_seed": 1, "svm_c": 10, "calibration": "image"}
    ch = chapter.setup(ns, "no_such_chapter")
    assert ch.params == ns and ch.cv == config.cv_settings(ns) and ch.cv.svm_c == 10.0
    assert ch.param("n_splits") == config.Profile().n_splits  # not declared: the schema's default
    assert not (tmp_path / "run").exists(), "nothing is computed before it is used"
    with pytest.raises(config.ProfileError, match=r"chapter no_such_chapter: svm_c: expected a number, got '10'"):
        chapter.setup({**ns, "svm_c": "10"}, "no_such_chapter")


def test_the_data_and_images_are_the_pipelines(tmp_path):
    ns = {
        "run_dir": str(tmp_path / "run"),
        "data_source": "phantom",
        "n_lesions": 3,
        "data_seed": 1,
        "dynamic_ranges_db": [40, 60],
        "margins_mm": [5],
    }
    ch = chapter.Chapter("no_such_chapter", ns)
    ds = ch.dataset
    assert ch.dataset is ds  # computed once
    again = pipeline.get_dataset(tmp_path / "run", data_source="phantom", n_lesions=3, data_seed=1)
    assert ds.fingerprint == again.fingerprint and ch.run_dir == tmp_path / "run"
    want = pipeline.get_manifest(again, dynamic_ranges_db=[40, 60], margins_mm=[5])
    assert ch.manifest.equals(want)
