"""Get-or-compute steps of the chapters, against a run directory.

Every chapter calls these functions with its parameters. Each returns the
artefact it names, reading it from ``run_dir`` when an artefact with the same
inputs exists and computing (and atomically writing) it otherwise, so a chapter
run on its own recomputes only what is missing or stale. Each also records
what it used in ``run_dir/run.json``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import __version__
from .store import key
from .config import resolve_path

__all__ = [
    "get_dataset",
    "get_manifest",
    "get_features",
    "get_matrix",
    "run_status",
    "status_banner",
    "run_record",
]


def _run_dir(run_dir: str | os.PathLike) -> Path:
    p = resolve_path(run_dir)
    p.mkdir(parents=True, exist_ok=True)
    return p


def _record(run_dir: Path, **sections: Any) -> None:
    from .run import update_run_record

    update_run_record(run_dir, **sections)


def get_dataset(
    run_dir: str | os.PathLike,
    *,
    data_source: str = "phantom",
    oasbud_path: str | None = None,
    n_lesions: int = 40,
    data_seed: int = 0,
    skip_samples: int = 20,
    patients_csv: str | None = None,
):
    """The run's data set, read through the OASBUD loader.

    ``data_source="phantom"`` simulates ``n_lesions`` lesions (seeded) once,
    writes them in the OASBUD schema to ``run_dir`` and reads that file back;
    ``"oasbud"`` reads ``oasbud_path`` (``"download"`` fetches the Zenodo file).

    Returns
    -------
    uslib.data.Dataset
    """
    from .data import fetch_oasbud, load_oasbud

    rdir = _run_dir(run_dir)
    patients = str(resolve_path(patients_csv)) if patients_csv else None
    t0 = time.perf_counter()
    if data_source == "phantom":
        from . import phantom

        version = getattr(phantom, "PHANTOM_VERSION", __version__)
        path = rdir / f"phantom-n{int(n_lesions)}-seed{int(data_seed)}-{key(version, n_lesions, data_seed)}.mat"
        if not path.exists():
            from .data import save_oasbud

            # Uncompressed: several times faster to write and read than the compressed default.
            save_oasbud(phantom.simulate_dataset(int(n_lesions), seed=int(data_seed)), path, compress=False)
    elif data_source == "oasbud":
        if oasbud_path in (None, ""):
            raise ValueError("data_source='oasbud' needs oasbud_path: a path to OASBUD.mat, or 'download'")
        if oasbud_path == "download":
            path = Path(fetch_oasbud())
        else:
            path = resolve_path(oasbud_path)
            if not path.exists():
                raise FileNotFoundError(
                    f"OASBUD file not found at {path}. Download OASBUD.mat from Zenodo record 545928 "
                    "and put it there, or set oasbud_path: download to fetch it (checked by SHA-256)."
                )
    else:
        raise ValueError(f"data_source must be 'phantom' or 'oasbud', not {data_source!r}")
    ds = load_oasbud(path, skip_samples=int(skip_samples), patients=patients)
    _record(
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
        },
        stage_seconds={"load_dataset": round(time.perf_counter() - t0, 2)},
    )
    return ds


def get_manifest(dataset, *, dynamic_ranges_db: Sequence[float], margins_mm: Sequence[float]):
    """The image-set manifest (cheap; recomputed every time, never stale)."""
    from .augmentation import image_set

    return image_set(dataset, dynamic_ranges_db=tuple(dynamic_ranges_db), margins_mm=tuple(margins_mm))


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
    batch_size: int = 16,
    progress: bool = True,
    allow_download: bool = True,
):
    """Features of every manifest row for one backbone, from the run's feature cache.

    ``allow_download=False`` never tries to download ImageNet weights: the
    features chapter asks for them (and Keras caches a successful download);
    later chapters only look in the caches, so a failed download is not
    retried by every chapter.

    Returns
    -------
    uslib.features.FeatureSet
    """
    from .features import extract_features

    rdir = _run_dir(run_dir)
    fs = extract_features(
        dataset,
        manifest,
        backbone,
        cache_dir=rdir / "features",
        weights=None if weights in ("random", None) else weights,
        weights_path=str(resolve_path(weights_path)) if weights_path else None,
        strict=bool(strict_weights),
        seed=int(weights_seed),
        batch_size=int(batch_size),
        progress=progress,
        allow_download=allow_download,
    )
    _record(rdir, weights={backbone: dict(fs.weights)})
    return fs


def features_key(features: np.ndarray) -> str:
    """A content hash of a feature matrix (for keying what is computed from it)."""
    import hashlib

    a = np.ascontiguousarray(features)
    return hashlib.sha256(a.tobytes() + repr((a.shape, a.dtype.str)).encode()).hexdigest()[:16]


def get_matrix(
    run_dir: str | os.PathLike,
    feature_set,
    manifest,
    *,
    ranges: Sequence[float] = (40, 50, 60),
    n_splits: int = 5,
    cv_seed: int = 0,
    svm_c: float = 1.0,
    standardize: bool = True,
    n_repeats: int = 1,
):
    """The Train×Test matrix of one backbone, from ``run_dir/results/<key>/`` or computed.

    The key covers the features' content, the manifest, the CV parameters and
    the library version: another ``svm_c`` is another result, the features are
    reused.

    Returns
    -------
    uslib.evaluation.MatrixResult
    """
    from . import evaluation as ev

    rdir = _run_dir(run_dir)
    cols = ["lesion", "scan", "margin_mm", "dynamic_range_db"]
    k = key(
        features_key(feature_set.features),
        manifest[cols].astype(str).values.tolist(),
        feature_set.backbone,
        list(map(float, ranges)), n_splits, cv_seed, float(svm_c), bool(standardize), n_repeats,
        __version__,
    )
    out = rdir / "results" / f"{feature_set.backbone}-{k}"
    if (out / "metrics.json").exists():
        return ev.load_results(out)[0]
    t0 = time.perf_counter()
    result = ev.reconstruction_matrix(
        feature_set.features,
        manifest,
        backbone=feature_set.backbone,
        ranges=tuple(ranges),
        n_splits=int(n_splits),
        seed=int(cv_seed),
        svm_c=float(svm_c),
        standardize=bool(standardize),
        n_repeats=int(n_repeats),
    )
    ev.save_results(result, out)
    _record(rdir, stage_seconds={f"cv_{feature_set.backbone}": round(time.perf_counter() - t0, 2)})
    return result


def run_status(dataset, feature_sets: Sequence = ()) -> dict[str, Any]:
    """What a results page must warn about: synthetic data, random or non-ImageNet weights."""
    kinds = {fs.backbone: fs.weights.get("kind") for fs in feature_sets}
    return {
        "synthetic": bool(dataset.synthetic),
        "random_weights": sorted(b for b, k in kinds.items() if k == "random"),
        "custom_weights": sorted(b for b, k in kinds.items() if k not in ("random", "imagenet")),
    }


def status_banner(dataset, feature_sets: Sequence = ()) -> str:
    """A MyST warning box for the top of a results page ('' when nothing to warn about).

    Display it with ``IPython.display.Markdown``; the book renders Markdown
    outputs as MyST.

    Examples
    --------
    >>> from uslib.data import Dataset
    >>> "Synthetic data" in status_banner(Dataset([], synthetic=True))
    True
    >>> status_banner(Dataset([], synthetic=False))
    ''
    """
    st = run_status(dataset, feature_sets)
    parts = []
    if st["synthetic"]:
        parts.append(
            "**Synthetic data.** These results come from the simulated phantom "
            "(`uslib.phantom`), not from patients. They show what the pipeline does, "
            "not how it performs on breast lesions."
        )
    if st["random_weights"]:
        names = ", ".join(st["random_weights"])
        parts.append(
            f"**Random weights.** No ImageNet weights were available for {names}: the features come "
            "from a seeded random initialisation and are *not* transfer learning."
        )
    if st["custom_weights"]:
        names = ", ".join(st["custom_weights"])
        parts.append(
            f"**Non-ImageNet weights.** {names} used a local weights file that is not the published "
            "Keras ImageNet file (its checksum differs); see the Provenance page."
        )
    if not parts:
        return ""
    return ":::{warning}\n" + "\n\n".join(parts) + "\n:::\n"


def run_record(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's ``run.json`` as a dict (empty if the run has not started)."""
    from .store import load_json

    path = _run_dir(run_dir) / "run.json"
    return load_json(path) if path.exists() else {}
