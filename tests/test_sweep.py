"""A sweep passes every cross-validation setting: each point's summary is chapter 05's matrix there.

Stand-in features (no network) on the tiny profile's phantom with two dynamic ranges and one
backbone keep this to seconds; the chapters themselves are not run (the summary reads or computes
the same matrices, and ``tests/test_distributed.py`` runs a whole sweep with its chapters).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from uslib import config, pipeline, sweep
from uslib.cvsettings import CVSettings

#: One non-default value of every profile parameter of the settings object.
SWEPT = {
    "n_splits": 3,
    "cv_seed": 1,
    "n_repeats": 2,
    "svm_c": 0.001,
    "standardize": False,
    "calibration": "image",
    "lesion_weighting": True,
}


def test_every_setting_of_the_object_is_swept():
    assert set(SWEPT) == {n for n in CVSettings.field_names() if n in config.Profile.model_fields}


def _stand_in_features(run_dir, dataset, manifest, backbone, **_):
    """Class signal plus noise per image, a function of the image alone (as real features are)."""
    seeds = [
        int(pipeline.store.key(r.lesion, int(r.scan), float(r.dynamic_range_db))[:8], 16) for r in manifest.itertuples()
    ]
    X = np.stack([np.random.default_rng(s).standard_normal(6) for s in seeds])
    X[:, 0] += 0.9 * manifest["label"].to_numpy() + 0.05 * manifest["dynamic_range_db"].to_numpy()
    X[:, 1] *= 40.0  # a large-scale feature: standardisation matters
    return SimpleNamespace(features=X, backbone=backbone, weights={"kind": "random"}, n_computed=0, tasks=[])


def _chapter_05(params):
    """What chapter 05 computes at these parameters: its get_dataset/get_manifest/get_features/get_matrix calls."""
    run_dir = config.resolve_path(params["run_dir"])
    ds = pipeline.get_dataset(
        run_dir,
        data_source=params["data_source"],
        oasbud_path=params["oasbud_path"],
        n_lesions=params["n_lesions"],
        data_seed=params["data_seed"],
        skip_samples=params["skip_samples"],
        patients_csv=params["patients_csv"],
        cache_dir=params["cache_dir"],
    )
    manifest = pipeline.get_manifest(ds, dynamic_ranges_db=params["dynamic_ranges_db"], margins_mm=params["margins_mm"])
    cv = config.cv_settings(params)
    fsets = {b: pipeline.get_features(run_dir, ds, manifest, b) for b in params["backbones"]}
    return {
        b: pipeline.get_matrix(run_dir, fsets[b], manifest, ranges=params["dynamic_ranges_db"], settings=cv)
        for b in params["backbones"]
    }


@pytest.fixture(scope="module")
def points(tmp_path_factory):
    """(summary, chapter 05's tables) at the default point and at one point per swept setting."""
    root = tmp_path_factory.mktemp("sweep")
    base = {
        "backbones": ["inception_v3"],
        "dynamic_ranges_db": [40, 60],
        "n_repeats": 1,
        "cache_dir": str(root / "cache"),
    }
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "get_features", _stand_in_features)
        for name, value in [(None, None), *SWEPT.items()]:
            point = {} if name is None else {name: value}
            label = sweep.point_label(point) or "default"
            params = config.load_profile("tiny", overrides={**base, **point, "run_dir": str(root / label)})
            summary = sweep.point_summary(params, point)
            alone = config.load_profile("tiny", overrides={**base, **point, "run_dir": str(root / f"alone-{label}")})
            out[name] = summary, _chapter_05(alone)
    return out


@pytest.mark.slow  # one run directory per swept setting (about 15 s in all)
@pytest.mark.parametrize("name", list(SWEPT))
def test_the_summary_of_a_point_is_chapter_05s_matrix_there(points, name):
    summary, chapter = points[name]
    assert summary["point"].unique().tolist() == [sweep.point_label({name: SWEPT[name]})]
    assert summary[name].unique().tolist() == [SWEPT[name]]
    table = chapter["inception_v3"].table
    values = [c for c in sweep.SUMMARY_VALUES if c in table]
    assert values == list(sweep.SUMMARY_VALUES[: 3 if name != "n_repeats" else 5])
    got = summary[["train", "test", *values]].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, table[["train", "test", *values]].reset_index(drop=True), check_exact=True)
    # and the setting reached the classifier: the point is not the default matrix
    default = points[None][0]
    assert list(default.columns) == ["point", "backbone", "train", "test", *sweep.SUMMARY_VALUES[:3]]
    assert not got.equals(default[got.columns.intersection(default.columns)]), f"{name} had no effect"
