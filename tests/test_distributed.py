"""Feature extraction and sweeps on a real Dask LocalCluster (2 worker processes, 1 thread each).

The same small synthetic data set (the tiny profile's phantom) and the same
randomly initialised InceptionV3 in this process and on the cluster:

- features computed on the cluster equal those computed here (measured
  bitwise equal on this machine; the stated tolerance, 1e-5 relative, is
  what oneDNN's summation order may cost when batches or thread counts
  differ), and so do the Train×Test tables computed from them;
- a worker killed while partitions are running does not fail the
  extraction, and a rerun computes nothing;
- a two-point sweep gives the AUCs of two separate runs, and extracts no
  features when the parent's exist; a sweep is validated before it runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time

import numpy as np
import pandas as pd
import pytest
import yaml
from distributed.comm.core import CommClosedError

from uslib import pipeline, scheduler, store, sweep
from uslib.config import PROFILE_DIR, REPO_ROOT, ProfileError
from uslib.cvsettings import CVSettings

#: Slow tier: every test here starts a real Dask LocalCluster (seconds each).
pytestmark = pytest.mark.slow

#: Features on the cluster may differ from in-process ones by this much (relative to the largest feature).
RTOL = 1e-5
BACKBONE = "inception_v3"
RANGES = [40, 60]
N_LESIONS = 6


@pytest.fixture(scope="module")
def client():
    with scheduler.cluster("local", n_workers=2, quiet=True) as c:
        c.wait_for_workers(2, timeout=120)
        yield c


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A 6-lesion phantom (the tiny profile's generator) and in-process features at two dynamic ranges (24 images)."""
    root = tmp_path_factory.mktemp("distributed")
    run_dir = root / "base"
    ds = pipeline.get_dataset(run_dir, n_lesions=N_LESIONS, data_seed=0)
    manifest = pipeline.get_manifest(ds, dynamic_ranges_db=RANGES, margins_mm=[5])
    fs = pipeline.get_features(run_dir, ds, manifest, BACKBONE, weights="random", progress=False, allow_download=False)
    return {"root": root, "run_dir": run_dir, "ds": ds, "manifest": manifest, "fs": fs}


def _close(a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference relative to the largest feature."""
    return float(np.abs(a - b).max() / np.abs(a).max())


def _matrix(run_dir, fs, manifest):
    return pipeline.get_matrix(
        run_dir, fs, manifest, ranges=RANGES, settings=CVSettings(n_splits=3, cv_seed=0, n_repeats=1)
    ).table


def test_cluster_features_and_tables_equal_in_process_ones(base, client):
    run_dir = base["root"] / "cluster"
    fs = pipeline.get_features(
        run_dir,
        base["ds"],
        base["manifest"],
        BACKBONE,
        weights="random",
        progress=False,
        allow_download=False,
        scheduler=client,
    )
    assert fs.n_computed == len(base["manifest"]) and fs.tasks
    assert {t["lesion"] for t in fs.tasks} == set(base["manifest"]["lesion"]), "one partition per lesion"
    assert len({t["worker"] for t in fs.tasks}) == 2, "both workers took part"
    assert sum(t["build_seconds"] > 0 for t in fs.tasks) == 2, "each worker built the network once"
    assert all(t["bytes_in"] < 10_000 for t in fs.tasks), "workers read the data file: only rows travel"
    assert fs.weights["values_sha256"] == base["fs"].weights["values_sha256"], "the same weights"
    assert _close(base["fs"].features, fs.features) <= RTOL
    a, b = _matrix(base["run_dir"], base["fs"], base["manifest"]), _matrix(run_dir, fs, base["manifest"])
    pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-9)
    assert pipeline.run_record(run_dir)["cluster"][f"features_{BACKBONE}"]["partitions"] == N_LESIONS


def test_scattered_lesions_give_the_same_features(base, client):
    """Without a readable data file (another machine), each task carries its lesion."""
    from uslib.features import extract_features

    sub = base["manifest"][base["manifest"]["lesion"].isin(base["ds"].keys[:2])]
    fs = extract_features(
        base["ds"],
        sub,
        BACKBONE,
        cache_dir=base["root"] / "scattered",
        weights="random",
        allow_download=False,
        progress=False,
        client=client,
        data_file=None,
    )
    assert fs.n_computed == len(sub) and all(t["bytes_in"] > 1_000_000 for t in fs.tasks)
    assert _close(base["fs"].features[sub.index.to_numpy()], fs.features) <= RTOL


def test_a_worker_killed_during_extraction_does_not_fail_it_and_a_rerun_computes_nothing(base, client):
    from uslib.features import extract_features

    cache = base["root"] / "killed"
    sub = base["manifest"][base["manifest"]["lesion"].isin(base["ds"].keys[:2])]
    result, error = {}, []

    def extract():
        try:
            result["fs"] = extract_features(
                base["ds"],
                sub,
                BACKBONE,
                cache_dir=cache,
                weights="random",
                allow_download=False,
                progress=False,
                client=client,
                data_file=(pipeline.run_record(base["run_dir"])["dataset"]["file"], 20),
            )
        except Exception as exc:  # reported below
            error.append(exc)

    thread = threading.Thread(target=extract)
    thread.start()
    killed = None
    polls = 0
    while killed is None and polls < 3000 and thread.is_alive():  # a hang guard, not a time limit
        polls += 1
        busy = [addr for addr, keys in client.processing().items() if keys]
        if busy:
            time.sleep(1.0)  # let the task get under way
            killed = busy[0]
            with contextlib.suppress(CommClosedError, OSError):  # the worker dies before it can answer
                client.run(os._exit, 1, workers=[killed], on_error="ignore")
        time.sleep(0.2)
    thread.join(timeout=300)
    assert killed is not None, "no task was seen running"
    assert not error, error
    fs = result["fs"]
    assert fs.n_computed == len(sub)
    assert _close(base["fs"].features[sub.index.to_numpy()], fs.features) <= RTOL
    again = extract_features(
        base["ds"],
        sub,
        BACKBONE,
        cache_dir=cache,
        weights="random",
        allow_download=False,
        progress=False,
        client=lambda: pytest.fail("a cached rerun must not need a cluster"),
    )
    assert again.n_computed == 0 and not again.tasks
    np.testing.assert_array_equal(again.features, fs.features)


def _profile(tmp_path, base, **values):
    params = yaml.safe_load((PROFILE_DIR / "tiny.yaml").read_text())
    params.update(
        run_dir=str(tmp_path / "parent"),
        cache_dir=str(base["run_dir"]),
        backbones=[BACKBONE],
        weights="random",
        dynamic_ranges_db=RANGES,
        margins_mm=[5],
        n_splits=3,
        n_repeats=1,
        n_lesions=N_LESIONS,
        **values,
    )
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_a_two_point_sweep_equals_two_separate_runs(base, client, tmp_path):
    from uslib.run import run_profile

    notebooks = tmp_path / "notebooks"  # the cross-validation chapter only: the one a sweep over svm_c needs first
    notebooks.mkdir()
    shutil.copy(REPO_ROOT / "notebooks" / "05_cross_validation.ipynb", notebooks)
    profile = _profile(tmp_path, base)
    # (on this phantom the AUCs do not move with svm_c, so the points are told apart by their folds)
    summary = sweep.run_sweep(profile, ["n_splits=2,3"], notebook_dir=notebooks, client=client)
    parent = store.run_path(tmp_path / "parent")
    record = store.read_run_record(parent)["sweep"]
    assert record["features_computed"] == 0, "the parent's features exist: the sweep extracts none"
    assert record["points"] == ["n_splits=2", "n_splits=3"] and record["chapters"] == ["05_cross_validation"]
    assert store.sweep_summary_path(parent).exists()
    by_point = {label: summary[summary["point"] == label].reset_index(drop=True) for label in record["points"]}
    assert not np.allclose(by_point["n_splits=2"]["auc"], by_point["n_splits=3"]["auc"]), "the points differ"
    for label, k in (("n_splits=2", 2), ("n_splits=3", 3)):
        point_dir = store.sweep_point_dir(parent, label)
        assert (store.sweep_chapter_dir(point_dir) / "05_cross_validation.ipynb").exists()
        alone = tmp_path / f"alone-{k}"
        run_profile(
            profile,
            overrides={"n_splits": k, "run_dir": str(alone)},
            notebook_dir=notebooks,
            output_dir=alone / "chapters",
        )
        fs = pipeline.get_features(
            alone,
            base["ds"],
            base["manifest"],
            BACKBONE,
            weights="random",
            progress=False,
            allow_download=False,
            cache_dir=base["run_dir"],
        )
        assert fs.n_computed == 0
        computed = sorted((alone / "results").iterdir())
        table = pipeline.get_matrix(
            alone, fs, base["manifest"], ranges=RANGES, settings=CVSettings(n_splits=k, n_repeats=1)
        ).table
        assert sorted((alone / "results").iterdir()) == computed, "the separate run's chapter computed this result"
        np.testing.assert_allclose(by_point[label]["auc"], table["auc"], atol=1e-12)
        np.testing.assert_allclose(by_point[label]["ci_low"], table["ci_low"], atol=1e-12)
        np.testing.assert_allclose(by_point[label]["ci_high"], table["ci_high"], atol=1e-12)
    from uslib.pages import sweep_page

    page = sweep_page(parent)
    assert "n_splits=2" in page and "## inception_v3" in page and "No sweep" not in page


def test_a_sweep_is_validated_before_anything_runs(base, tmp_path):
    profile = _profile(tmp_path, base)
    with pytest.raises(ProfileError, match=r"point svm_c=-1: svm_c: expected a value > 0"):
        sweep.plan_sweep(profile, ["svm_c=1,-1"])
    with pytest.raises(ProfileError, match="run_dir: .*cannot be swept"):
        sweep.plan_sweep(profile, ["run_dir=a,b"])
    with pytest.raises(ProfileError, match="svm_C: unknown parameter"):
        sweep.plan_sweep(profile, ["svm_C=1,2"])
    assert not (tmp_path / "parent" / "sweep").exists() or not any((tmp_path / "parent" / "sweep").iterdir())
    plan = sweep.plan_sweep(profile, ["svm_c=1,10", "n_splits=3,4"])
    assert [label for label, _ in plan.points] == [
        "svm_c=1,n_splits=3",
        "svm_c=1,n_splits=4",
        "svm_c=10,n_splits=3",
        "svm_c=10,n_splits=4",
    ]
    # chapter 04 declares the cross-validation parameters too: its exercise's decision values use the folds
    assert [c.stem for c in plan.chapters] == ["04_features", "05_cross_validation", "06_results", "07_robustness"]
    assert all(p["cache_dir"] == str(base["run_dir"]) and p["scheduler"] is None for _, p in plan.points)


def test_the_sweep_page_says_when_no_sweep_was_run(tmp_path):
    from uslib.pages import sweep_page

    assert "No sweep has been run" in sweep_page(tmp_path)
