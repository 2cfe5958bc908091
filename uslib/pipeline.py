"""Get-or-compute steps of the chapters, against a run directory.

Every chapter calls these functions with its parameters. Each returns the
artefact it names, reading it from ``run_dir`` when an artefact with the same
inputs exists and computing (and atomically writing) it otherwise, so a chapter
run on its own recomputes only what is missing or stale. Each also records
what it used in ``run_dir/run.json``. Where and how artefacts are stored, and
what their keys cover, is :mod:`uslib.store`'s business; this module only
decides what to compute.
"""

from __future__ import annotations

import os
import time
import weakref
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from . import store
from .cvsettings import CVSettings
from .store import resolve_path

__all__ = [
    "get_dataset",
    "get_manifest",
    "get_features",
    "get_matrix",
    "SENSITIVITY_CHOICES",
    "get_sensitivity",
    "get_dataset_a_max",
    "amax_manifest",
    "get_amax_sensitivity",
    "get_robustness_manifest",
    "get_handcrafted_features",
    "get_roi_db_table",
    "get_curves",
    "get_baselines",
    "features_key",
    "run_record",
]

#: Columns read back as strings from the robustness CSVs.
_STR_COLUMNS = {"backbone": str, "policy": str, "family": str, "lesion": str, "patient": str, "feature_set": str}

#: Manifest columns that define a result: which images, of which lesion, patient and class.
_MANIFEST_KEY_COLUMNS = ("lesion", "patient", "label", "scan", "margin_mm", "dynamic_range_db")


#: The file each data set of this process was read from: Dataset -> (path, skip_samples). Lets
#: :func:`get_features` send workers a path instead of the scans.
_DATA_FILES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _stage_seconds(run_dir, name: str, t0: float) -> None:
    store.update_run_record(run_dir, stage_seconds={name: round(time.perf_counter() - t0, 2)})


def get_dataset(
    run_dir: str | os.PathLike,
    *,
    data_source: str = "phantom",
    oasbud_path: str | None = None,
    n_lesions: int = 40,
    data_seed: int = 0,
    skip_samples: int = 20,
    patients_csv: str | None = None,
    cache_dir: str | os.PathLike | None = None,
):
    """The run's data set, read through the OASBUD loader.

    ``data_source="phantom"`` simulates ``n_lesions`` lesions (seeded) once,
    writes them in the OASBUD schema to the run directory
    (:func:`uslib.store.phantom_path`, sealed) and reads that file back; a
    damaged or unsealed file is reported and simulated again. ``"oasbud"``
    reads ``oasbud_path`` (``"download"`` fetches the Zenodo file).
    The phantom is simulated under a lock beside its file
    (:func:`uslib.store.file_lock`), so chapters that start at the same
    time simulate it once: the others wait and read it.
    With ``cache_dir`` the phantom file is kept there instead (a folder
    shared by several runs, e.g. the points of a sweep: the file's name
    carries its key, so sharing is safe).

    Returns
    -------
    uslib.data.Dataset
    """
    from .oasbud import fetch_oasbud, load_oasbud

    rdir = store.run_path(run_dir)
    patients = str(resolve_path(patients_csv)) if patients_csv else None
    t0 = time.perf_counter()
    if data_source == "phantom":
        from . import phantom
        from .oasbud import save_oasbud

        path = store.phantom_path(
            store.cache_root(rdir, cache_dir),
            n_lesions=n_lesions,
            seed=data_seed,
            key_=store.key(store.code_fingerprint("phantom"), int(n_lesions), int(data_seed)),
        )

        def simulate():
            # Uncompressed: several times faster to write and read than the compressed default.
            save_oasbud(phantom.simulate_dataset(int(n_lesions), seed=int(data_seed)), path, compress=False)
            store.seal(path)
            return path

        with store.file_lock(path):
            store.load_or_compute(lambda: store.verify(path), simulate)
    elif data_source == "oasbud":
        if oasbud_path in (None, ""):
            raise ValueError("data_source='oasbud' needs oasbud_path: a path to OASBUD.mat, or 'download'")
        if oasbud_path == "download":
            path = Path(fetch_oasbud())
        else:
            path = resolve_path(oasbud_path)
            if not path.exists():
                raise FileNotFoundError(
                    f"OASBUD file not found at {path}. Run the book with python -m uslib run --profile P "
                    "(or python -m uslib fetch --profile P) with allow_download: true to fetch it there "
                    "(checked by SHA-256), or download OASBUD.mat from Zenodo record 545928 and put it there."
                )
    else:
        raise ValueError(f"data_source must be 'phantom' or 'oasbud', not {data_source!r}")
    ds = load_oasbud(path, skip_samples=int(skip_samples), patients=patients)
    if data_source == "phantom":
        # Hashing the RF of every lesion (Dataset.content_digests) costs a
        # fraction of a second in every chapter; the digests are a function of
        # the verified file, skip_samples and the loader, so they are kept.
        memo = store.content_digests_path(
            store.cache_root(rdir, cache_dir),
            store.key(store.sealed_digest(path), int(skip_samples), store.code_fingerprint("oasbud")),
        )

        def adopt():
            store.verify(memo)
            try:
                ds.use_content_digests(store.load_json(memo))
            except (ValueError, TypeError) as exc:
                raise store.DamagedArtefact(memo, str(exc)) from exc

        def keep():
            store.save_json(memo, ds.content_digests)
            store.seal(memo)

        store.load_or_compute(adopt, keep)
    _DATA_FILES[ds] = (str(path), int(skip_samples))
    store.update_run_record(
        rdir,
        dataset={
            "source": data_source,
            "file": str(path),
            "synthetic": bool(ds.synthetic),
            "n_lesions": len(ds),
            "n_malignant": int(ds.labels.sum()),
            "n_patients": len(set(ds.patients)),
            "fingerprint": ds.fingerprint,
            "skip_samples": int(skip_samples),
            "patients_csv": patients,
        },
        stage_seconds={"load_dataset": round(time.perf_counter() - t0, 2)},
    )
    return ds


def get_manifest(
    dataset,
    *,
    dynamic_ranges_db: Sequence[float],
    margins_mm: Sequence[float],
    run_dir: str | os.PathLike | None = None,
):
    """The image-set manifest (cheap; recomputed every time, never stale).

    With ``run_dir`` it is also written to ``<run_dir>/manifest.csv`` for
    readers who want the table outside the book.
    """
    from .augmentation import image_set

    manifest = image_set(dataset, dynamic_ranges_db=tuple(dynamic_ranges_db), margins_mm=tuple(margins_mm))
    if run_dir is not None:
        store.save_csv(store.manifest_path(run_dir), manifest)
    return manifest


def get_features(
    run_dir: str | os.PathLike,
    dataset,
    manifest,
    backbone: str,
    *,
    weights: str = "imagenet",
    weights_path: str | None = None,
    strict_weights: bool = False,
    weights_seed: int = 0,
    batch_size: int | None = None,
    progress: bool = True,
    allow_download: bool = True,
    cache_dir: str | os.PathLike | None = None,
    scheduler=None,
    precision: str = "float32",
):
    """Features of every manifest row for one backbone, from the run's feature cache.

    ``allow_download=False`` never tries to download ImageNet weights: the
    features chapter asks for them (and Keras caches a successful download);
    later chapters only look in the caches, so a failed download is not
    retried by every chapter.

    The cache is ``<cache_dir or run_dir>/features/`` (keyed by image
    content, weights and code, so several runs may share it). ``scheduler``
    (the profile key, or a ``distributed.Client``) computes the missing
    images on a Dask cluster (:func:`uslib.features.extract_features`); the
    cluster is started or connected only when images are missing, and kept
    for the rest of the process. With None everything runs here.

    Every image is keyed by its own content, crop and dynamic range, not by
    the manifest it came in, so chapters share features: the robustness
    chapter's images at the main set's ranges and margins are read from what
    the features chapter stored, never computed again. ``batch_size`` None
    is the backbone's rule (:func:`uslib.features.default_batch_size`);
    ``precision`` (float32, bfloat16 or int8) is cached apart.

    Returns
    -------
    uslib.features.FeatureSet
    """
    from .features import extract_features

    rdir = store.run_path(run_dir)
    t0 = time.perf_counter()
    client = None
    if isinstance(scheduler, str):
        from . import scheduler as sched

        def client():
            return sched.get_client(scheduler)
    elif scheduler is not None:
        client = scheduler
    fs = extract_features(
        dataset,
        manifest,
        backbone,
        cache_dir=store.features_root(store.cache_root(rdir, cache_dir)),
        client=client,
        data_file=_DATA_FILES.get(dataset),
        weights=None if weights in ("random", None) else weights,
        weights_path=str(resolve_path(weights_path)) if weights_path else None,
        strict=bool(strict_weights),
        seed=int(weights_seed),
        batch_size=None if batch_size is None else int(batch_size),
        progress=progress,
        allow_download=allow_download,
        precision=precision,
    )
    sections: dict[str, Any] = {"weights": {backbone: dict(fs.weights)}}
    if fs.n_computed:
        sections["stage_seconds"] = {f"features_{backbone}": round(time.perf_counter() - t0, 2)}
    if fs.tasks:
        sections["cluster"] = {
            f"features_{backbone}": {
                "partitions": len(fs.tasks),
                "workers": len({t["worker"] for t in fs.tasks}),
                "images": int(sum(t["n_images"] for t in fs.tasks)),
                "build_seconds": round(sum(t["build_seconds"] for t in fs.tasks), 2),
            }
        }
    store.update_run_record(rdir, **sections)
    return fs


def features_key(features: np.ndarray) -> str:
    """A content hash of a feature matrix (for keying what is computed from it)."""
    return store.array_digest(np.asarray(features))


def _manifest_key(manifest: pd.DataFrame) -> list:
    cols = [c for c in _MANIFEST_KEY_COLUMNS if c in manifest.columns]
    return [cols, manifest[cols].astype(str).values.tolist()]


def get_matrix(
    run_dir: str | os.PathLike,
    feature_set,
    manifest,
    *,
    settings: CVSettings,
    ranges: Sequence[float] = (40, 50, 60),
    nested_threshold: bool = True,
):
    """The Train×Test matrix of one backbone, from ``run_dir/results/<backbone>-<key>/`` or computed.

    ``settings`` are the run's cross-validation and classifier settings
    (:meth:`uslib.config.Profile.cv_settings`), passed whole to
    :func:`uslib.evaluation.reconstruction_matrix`. The key covers the
    features' content, the manifest (images, lesions, patients, labels),
    every setting, and the code of :mod:`uslib.evaluation` with the versions
    of numpy, scipy and scikit-learn: another ``svm_c`` or another patient
    grouping is another result; the features are reused.

    Returns
    -------
    uslib.evaluation.MatrixResult
    """
    from . import evaluation as ev

    rdir = store.run_path(run_dir)
    k = store.key(
        features_key(feature_set.features),
        _manifest_key(manifest),
        feature_set.backbone,
        list(map(float, ranges)),
        settings.key(),
        bool(nested_threshold),
        store.code_fingerprint("evaluation", packages=("numpy", "scipy", "scikit-learn", "pandas")),
    )
    out = store.results_dir(rdir, feature_set.backbone, k)

    def compute():
        from .config import check_folds_feasible

        lesions = ev.lesion_table(manifest)
        # the data set's patients are known only now (for OASBUD): an impossible n_splits names itself
        check_folds_feasible(
            settings.n_splits,
            lesions["label"].to_numpy(),
            lesions["patient"].astype(str).to_numpy(),
            seeds=settings.seeds,
            data=f"the data set ({len(lesions)} lesions)",
            source="n_splits",
        )
        t0 = time.perf_counter()
        result = ev.reconstruction_matrix(
            feature_set.features,
            manifest,
            backbone=feature_set.backbone,
            ranges=tuple(ranges),
            settings=settings,
            nested_threshold=bool(nested_threshold),
        )
        ev.save_results(result, out)
        store.seal_dir(out)
        _stage_seconds(rdir, f"cv_{feature_set.backbone}", t0)
        return result

    def load():
        store.verify_dir(out)
        return ev.load_results(out)[0]

    return store.load_or_compute(load, compute)


#: The open protocol choices the sensitivity analysis varies, one at a time: name -> what the other setting is.
SENSITIVITY_CHOICES = {
    "standardize": "per-feature standardisation switched",
    "calibration": "Platt calibration split by image instead of by patient (or the reverse)",
    "lesion_weighting": "lesion weighting switched",
    "svm_c": "SVM C at the two ends of the grid 0.01-100 (the run's own C is the first row)",
}

#: The C values of the ``svm_c`` rows: the two ends of :func:`uslib.diagnostics.c_grid` (0.01 and 100). The
#: whole five-value grid would cost three more cross-validations per backbone; the run's own C (1 by
#: default) is the ``"as run"`` row, so the two ends plus it span the grid.
SENSITIVITY_C = (0.01, 100.0)


def get_sensitivity(
    run_dir: str | os.PathLike,
    feature_set,
    manifest,
    *,
    settings: CVSettings,
    ranges: Sequence[float] = (40, 50, 60),
    baseline=None,
    n_boot: int = 2000,
) -> pd.DataFrame:
    """TrainALL/TestALL AUC and the mean matched→mismatched drop under each open choice.

    One row for the run's own ``settings`` (``baseline``, a
    :class:`~uslib.evaluation.MatrixResult` of these settings, or computed)
    and one per entry of :data:`SENSITIVITY_CHOICES` (a field of
    :class:`~uslib.cvsettings.CVSettings`) with that one choice
    switched. Each is :func:`get_matrix` with ``n_repeats=1`` and without the
    nested Table III row (cached like any matrix; the features are reused, so
    the cost is one cross-validation per row), summarised by
    :func:`uslib.evaluation.sensitivity_summary`, and diagnosed as a fit
    (:func:`uslib.diagnostics.sensitivity_columns`: a degenerate row is
    flagged, so that it is not read as the effect of its choice). The
    ``svm_c`` rows use :data:`SENSITIVITY_C`.

    Returns
    -------
    DataFrame
        ``backbone``, ``choice`` (``"as run"`` or a key of
        :data:`SENSITIVITY_CHOICES`), ``setting`` (in words), ``auc``,
        ``auc_ci_low``, ``auc_ci_high``, ``mean_drop``, ``drop_ci_low``,
        ``drop_ci_high``, ``standardize``, ``calibration``, ``lesion_weighting``,
        ``svm_c``, ``degenerate``, ``n_at_bound``, ``n_distinct``,
        ``mean_row_norm``, ``c_times_sq_norm``, ``extreme_share``.
    """
    base = {name: getattr(settings, name) for name in SENSITIVITY_CHOICES}
    other = {
        "standardize": [not base["standardize"]],
        "calibration": ["image" if base["calibration"] == "grouped" else "grouped"],
        "lesion_weighting": [not base["lesion_weighting"]],
        "svm_c": [c for c in SENSITIVITY_C if c != base["svm_c"]],
    }
    rows = []
    todo = [("as run", None)] + [(choice, v) for choice in SENSITIVITY_CHOICES for v in other[choice]]
    for choice, value in todo:
        shown = dict(base) if choice == "as run" else {**base, choice: value}
        words = (
            ", ".join(f"{k} = {v:g}" if k == "svm_c" else f"{k} = {v}" for k, v in shown.items())
            if choice == "as run"
            else (f"{choice} = {value:g}" if choice == "svm_c" else f"{choice} = {value}")
        )
        rows.append(
            _sensitivity_row(
                run_dir,
                feature_set,
                manifest,
                settings.replace(n_repeats=1, **shown),
                choice=choice,
                words=words,
                ranges=ranges,
                result=baseline if choice == "as run" else None,
                n_boot=n_boot,
                seed=settings.cv_seed,
            )
        )
    return pd.DataFrame(rows)


def _sensitivity_row(
    run_dir, feature_set, manifest, row_settings: CVSettings, *, choice, words, ranges, result, n_boot, seed
) -> dict:
    """One row of the sensitivity table: the matrix under ``row_settings`` (or ``result``), summarised and diagnosed."""
    from . import diagnostics as dg
    from . import evaluation as ev

    if result is None:
        result = get_matrix(
            run_dir, feature_set, manifest, ranges=ranges, nested_threshold=False, settings=row_settings
        )
    summary = ev.sensitivity_summary(result, n_boot=n_boot, seed=seed)
    fit = dg.sensitivity_columns(result.predictions, features=feature_set.features, settings=row_settings)
    return {
        "backbone": feature_set.backbone,
        "choice": choice,
        "setting": words,
        **summary,
        "svm_c": float(row_settings.svm_c),
        **fit,
    }


def get_dataset_a_max(run_dir: str | os.PathLike, dataset) -> float:
    """:func:`uslib.augmentation.dataset_a_max` (the data-set-wide ``A_max``), cached in the run directory.

    The key covers the data set's fingerprint and the code of
    :mod:`uslib.augmentation`; the envelopes of every scan are computed once.
    """
    from .augmentation import dataset_a_max

    rdir = store.run_path(run_dir)
    k = store.key(dataset.fingerprint, store.code_fingerprint("augmentation", packages=("numpy", "scipy")))
    path = store.robustness_path(rdir, "a-max", k)

    def compute():
        t0 = time.perf_counter()
        table = pd.DataFrame({"a_max": [dataset_a_max(dataset)]})
        _stage_seconds(rdir, "dataset_a_max", t0)
        return [table]

    return float(_get_csvs([path], compute)[0]["a_max"].iloc[0])


def amax_manifest(manifest: pd.DataFrame, *, margin_mm: float, a_max: float) -> pd.DataFrame:
    """The rows of ``manifest`` at one margin, with the data-set-wide ``A_max`` (the ``amax_scope`` rows' images).

    Row order is the manifest's (index reset), so features of the per-scan
    images of the same rows are ``features[manifest.margin_mm == margin_mm]``.
    """
    from .augmentation import scope_manifest

    at = manifest["margin_mm"].astype(float) == float(margin_mm)
    if not at.any():
        raise ValueError(f"amax_manifest: margin_mm {margin_mm!r} is not among the manifest's margins")
    return scope_manifest(manifest[at].reset_index(drop=True), a_max_scope="dataset", a_max=float(a_max))


def get_amax_sensitivity(
    run_dir: str | os.PathLike,
    feature_set,
    manifest,
    dataset_feature_set,
    dataset_manifest,
    *,
    settings: CVSettings,
    ranges: Sequence[float] = (40, 50, 60),
    n_boot: int = 2000,
) -> pd.DataFrame:
    """The ``amax_scope`` rows of the sensitivity table: A_max per scan against data-set-wide, at one margin.

    Passing every image through a network again is the cost of this choice,
    so it is measured on one margin (``dataset_manifest``, from
    :func:`amax_manifest`): one row with the per-scan images of those rows
    (taken from ``feature_set``, the run's features of ``manifest``) and
    one with the data-set-wide images (``dataset_feature_set``, its
    features). Both run the same cross-validation as :func:`get_sensitivity`
    (``settings`` whole, ``n_repeats=1``) and give its columns.
    """
    if "a_max" not in dataset_manifest.columns:
        raise ValueError("get_amax_sensitivity: dataset_manifest has no 'a_max' column (use amax_manifest)")
    margins = dataset_manifest["margin_mm"].astype(float).unique()
    if len(margins) != 1:
        raise ValueError(f"get_amax_sensitivity: dataset_manifest must hold one margin, got {sorted(margins)}")
    at = (manifest["margin_mm"].astype(float) == margins[0]).to_numpy()
    per_scan = manifest[at].reset_index(drop=True)
    cols = ["lesion", "scan", "margin_mm", "dynamic_range_db"]
    if not per_scan[cols].astype(str).equals(dataset_manifest[cols].astype(str)):
        raise ValueError("get_amax_sensitivity: dataset_manifest is not manifest's rows at its margin, in order")
    from types import SimpleNamespace

    per_scan_fs = SimpleNamespace(features=np.asarray(feature_set.features)[at], backbone=feature_set.backbone)
    row_settings = settings.replace(n_repeats=1)
    rows = []
    for scope, fs, m in (("scan", per_scan_fs, per_scan), ("dataset", dataset_feature_set, dataset_manifest)):
        words = f"A_max {'per scan' if scope == 'scan' else 'data-set-wide'}, {margins[0]:g} mm margin only"
        rows.append(
            _sensitivity_row(
                run_dir,
                fs,
                m,
                row_settings,
                choice="amax_scope",
                words=words,
                ranges=ranges,
                result=None,
                n_boot=n_boot,
                seed=settings.cv_seed,
            )
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- #
# The robustness chapter (beyond the paper)
# --------------------------------------------------------------------------- #


def _load_csvs(*paths: Path) -> list[pd.DataFrame]:
    frames = [store.load_csv(p, dtype=_STR_COLUMNS) for p in paths]
    for df in frames:
        if "seen" in df.columns:
            df["seen"] = df["seen"].astype(bool)
    return frames


def _folds_key(folds) -> list:
    return [[np.asarray(tr, int).tolist(), np.asarray(te, int).tolist()] for tr, te in folds]


def _get_csvs(paths: Sequence[Path], compute) -> list[pd.DataFrame]:
    """Load sealed CSVs, or ``compute()`` -> frames (written in order; the first path marks completion last)."""

    def run():
        frames = compute()
        for p, df in list(zip(paths, frames))[::-1]:
            store.save_csv(p, df)
        return _load_csvs(*paths)

    def load():
        for p in paths:
            store.verify(p)
        return _load_csvs(*paths)

    return store.load_or_compute(load, run)


def get_robustness_manifest(
    dataset,
    *,
    train_ranges_db: Sequence[float],
    unseen_ranges_db: Sequence[float],
    margins_mm: Sequence[float],
    continuous_range_db: Sequence[float],
    seed: int,
):
    """The robustness chapter's images (:func:`uslib.robustness.robustness_manifest`; cheap, never stale).

    One function for the chapter and for a sweep that prepares its features.

    Returns
    -------
    manifest : DataFrame
    continuous_mask : ndarray of bool
    """
    from . import robustness as rb

    return rb.robustness_manifest(
        dataset,
        train_ranges_db=train_ranges_db,
        unseen_ranges_db=unseen_ranges_db,
        margins_mm=margins_mm,
        continuous_range_db=continuous_range_db,
        seed=seed,
    )


def get_handcrafted_features(run_dir: str | os.PathLike, dataset) -> pd.DataFrame:
    """:func:`uslib.robustness.handcrafted_features`, cached in ``<run_dir>/robustness/``.

    The key covers the data set's fingerprint (content, patients, labels) and
    the code of the QUS and morphology features.
    """
    from . import robustness as rb

    rdir = store.run_path(run_dir)
    k = store.key(dataset.fingerprint, store.code_fingerprint("robustness", packages=("numpy", "scipy")))
    path = store.robustness_path(rdir, "handcrafted", k)

    def compute():
        t0 = time.perf_counter()
        table = rb.handcrafted_features(dataset)
        _stage_seconds(rdir, "handcrafted_features", t0)
        return [table]

    return _get_csvs([path], compute)[0]


def get_roi_db_table(
    run_dir: str | os.PathLike, dataset, *, dynamic_ranges_db: Sequence[float] = (40, 50, 60)
) -> pd.DataFrame:
    """:func:`uslib.qus.roi_db_table` (ROI brightness and interior Nakagami m per scan), cached.

    The key covers the data set's fingerprint, the dynamic ranges and the
    code of :mod:`uslib.qus`.
    """
    from . import qus

    rdir = store.run_path(run_dir)
    ranges = [float(r) for r in dynamic_ranges_db]
    k = store.key(dataset.fingerprint, ranges, store.code_fingerprint("qus", packages=("numpy", "scipy")))
    path = store.robustness_path(rdir, "roi-db", k)

    def compute():
        t0 = time.perf_counter()
        table = qus.roi_db_table(dataset, dynamic_ranges_db=ranges)
        _stage_seconds(rdir, "roi_db_table", t0)
        return [table]

    return _get_csvs([path], compute)[0]


def get_curves(
    run_dir: str | os.PathLike,
    feature_set,
    manifest: pd.DataFrame,
    continuous_mask=None,
    *,
    policies=None,
    test_ranges_db: Sequence[float] | None = None,
    train_ranges_db: Sequence[float] = (40, 50, 60),
    continuous_range_db: Sequence[float] | None = None,
    folds=None,
    settings: CVSettings,
    alpha: float = 0.05,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`uslib.robustness.generalisation_curves` of one backbone, from the run directory or computed.

    Files ``<run_dir>/robustness/curves-<backbone>-<key>.csv`` and
    ``predictions-<backbone>-<key>.csv``. The key covers the features'
    content, the manifest (images, patients, labels), the continuous mask,
    the policies, test ranges, folds, every setting of ``settings`` (the
    run's :class:`~uslib.cvsettings.CVSettings`, passed whole to
    :func:`uslib.robustness.generalisation_curves`) and the code of
    :mod:`uslib.robustness` and :mod:`uslib.evaluation`.

    Returns
    -------
    curves, predictions : DataFrame
    """
    from . import evaluation as ev
    from . import robustness as rb

    rdir = store.run_path(run_dir)
    if policies is None:
        policies = rb.DEFAULT_POLICIES
    if folds is None:
        lesions = ev.lesion_table(manifest)
        folds = ev.patient_folds(
            lesions["label"].to_numpy(),
            lesions["patient"].astype(str).to_numpy(),
            n_splits=settings.n_splits,
            seed=settings.cv_seed,
        )
    mask = np.zeros(len(manifest), bool) if continuous_mask is None else np.asarray(continuous_mask, bool)
    pol = rb.resolve_policies(policies, train_ranges_db=train_ranges_db)
    k = store.key(
        features_key(feature_set.features),
        _manifest_key(manifest),
        np.flatnonzero(mask).tolist(),
        {n: (list(v) if not isinstance(v, str) else v) for n, v in pol.items()},
        None if test_ranges_db is None else list(map(float, test_ranges_db)),
        list(map(float, train_ranges_db)),
        None if continuous_range_db is None else list(map(float, continuous_range_db)),
        _folds_key(folds),
        settings.key(),
        float(alpha),
        feature_set.backbone,
        store.code_fingerprint("robustness", packages=("numpy", "scipy", "scikit-learn", "pandas")),
    )
    b = feature_set.backbone
    paths = [store.robustness_path(rdir, "curves", k, b), store.robustness_path(rdir, "predictions", k, b)]

    def compute():
        t0 = time.perf_counter()
        curves, preds = rb.generalisation_curves(
            feature_set.features,
            manifest,
            continuous_mask=mask,
            policies=pol,
            test_ranges_db=test_ranges_db,
            train_ranges_db=train_ranges_db,
            continuous_range_db=continuous_range_db,
            folds=folds,
            settings=settings,
            backbone=b,
            alpha=alpha,
            return_predictions=True,
        )
        _stage_seconds(rdir, f"robustness_{b}", t0)
        return [curves, preds]

    curves, preds = _get_csvs(paths, compute)
    return curves, preds


def get_baselines(
    run_dir: str | os.PathLike, dataset, *, folds=None, settings: CVSettings, alpha: float = 0.05
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`uslib.robustness.handcrafted_baselines`, from ``<run_dir>/robustness/`` or computed.

    The features come from :func:`get_handcrafted_features`; ``settings``
    (the run's :class:`~uslib.cvsettings.CVSettings`) go whole to
    :func:`uslib.robustness.handcrafted_baselines`; the key covers the data
    set (content, patients, labels), the folds, every setting and the code.

    Returns
    -------
    baselines, predictions : DataFrame
    """
    from . import evaluation as ev
    from . import robustness as rb

    rdir = store.run_path(run_dir)
    table = get_handcrafted_features(rdir, dataset)
    if folds is None:
        folds = ev.patient_folds(
            table["label"].to_numpy(),
            table["patient"].astype(str).to_numpy(),
            n_splits=settings.n_splits,
            seed=settings.cv_seed,
        )
    k = store.key(
        dataset.fingerprint,
        _folds_key(folds),
        settings.key(),
        float(alpha),
        {n: list(c) for n, c in rb.BASELINE_SETS.items()},
        store.code_fingerprint("robustness", packages=("numpy", "scipy", "scikit-learn", "pandas")),
    )
    paths = [store.robustness_path(rdir, "baselines", k), store.robustness_path(rdir, "baseline-predictions", k)]

    def compute():
        t0 = time.perf_counter()
        base, preds = rb.handcrafted_baselines(
            table=table, folds=folds, settings=settings, alpha=alpha, return_predictions=True
        )
        _stage_seconds(rdir, "robustness_baselines", t0)
        return [base, preds]

    base, preds = _get_csvs(paths, compute)
    return base, preds


def run_record(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's ``run.json`` as a dict (empty if the run has not started)."""
    return store.read_run_record(run_dir)
