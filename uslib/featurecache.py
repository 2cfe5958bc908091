"""The on-disk cache of image features: keys, chunks and the weights sidecar.

A feature folder (:func:`uslib.store.feature_dir`) holds ``chunk-<key>.npz``
files (``keys`` and ``features`` of one batch, written atomically) and a
``weights.json`` sidecar describing the weights that filled it. Each image's
cache key (:func:`image_cache_keys`) is ``uslib.store.key(image content,
image_key(row), size_px, backbone, weights fingerprint, code fingerprint,
precision)``: the image content is the RF, ROI and acquisition of the
lesion's scans (:func:`image_content_keys`), and the code fingerprint
(:func:`stage_code`) covers every module the extraction runs and the
TensorFlow/Keras versions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from . import store
from .backbones import Backbone
from .weights import WeightsInfo

__all__ = [
    "FEATURE_PACKAGES",
    "STAGE_MODULE",
    "stage_code",
    "image_content_keys",
    "image_cache_keys",
    "scan_chunks",
    "read_sidecar",
    "write_sidecar",
    "check_sidecar",
    "write_chunk",
]

#: Packages whose versions are part of the features' code fingerprint.
FEATURE_PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "numpy", "scipy")
#: The module whose source, with every ``uslib`` module it imports, is the code of the features stage.
STAGE_MODULE = "extraction"


def stage_code() -> str:
    """The code fingerprint of the features stage (:func:`uslib.store.code_fingerprint` of :data:`STAGE_MODULE`)."""
    return store.code_fingerprint(STAGE_MODULE, packages=FEATURE_PACKAGES)


def image_cache_keys(
    manifest, bb: Backbone, info: WeightsInfo, content: dict[str, str], code: str, precision: str
) -> list[str]:
    """The cache key of every row of ``manifest`` (module docstring), in row order."""
    from .augmentation import image_key

    return [
        store.key(content[row.lesion], image_key(row), bb.size_px, bb.name, info.fingerprint, code, precision)
        for row in manifest.itertuples(index=False)
    ]


def write_sidecar(folder: Path, bb: Backbone, info: WeightsInfo) -> None:
    """Write ``weights.json``: the backbone and the weights that filled the folder."""
    store.save_json(folder / "weights.json", {"backbone": bb.name, **info.to_dict()})


def scan_chunks(folder: Path) -> tuple[dict[str, tuple[Path, int]], dict[Path, np.ndarray]]:
    """Index of the cache: image cache key -> (chunk file, row), and each chunk's features.

    Every chunk is read whole, so its zip CRCs are checked; a damaged chunk is
    reported (:func:`uslib.store.report_damage`), removed, and its images are
    recomputed.
    """
    index: dict[str, tuple[Path, int]] = {}
    payload: dict[Path, np.ndarray] = {}
    if not folder.is_dir():
        return index, payload
    for path in sorted(folder.glob("chunk-*.npz")):
        try:
            z = store.load_npz(path)
            keys, feats = z["keys"], z["features"]
            if feats.ndim != 2 or len(keys) != len(feats):
                raise store.DamagedArtefact(path, f"keys {keys.shape} and features {feats.shape} disagree")
        except KeyError as exc:
            store.report_damage(store.DamagedArtefact(path, f"member {exc} missing"), action="recomputing its images")
            continue
        except store.DamagedArtefact as exc:
            store.report_damage(exc, action="recomputing its images")
            continue
        payload[path] = feats
        for row, k in enumerate(keys.tolist()):
            index[str(k)] = (path, row)
    return index, payload


def read_sidecar(folder: Path) -> dict | None:
    """``weights.json`` of a feature folder, or None (a damaged one is reported and rewritten)."""
    side = folder / "weights.json"
    if not side.is_file():
        return None
    try:
        stored = store.load_json(side)
    except store.DamagedArtefact as exc:
        store.report_damage(exc, action="rewriting it")
        return None
    return stored if isinstance(stored, dict) else None


def image_content_keys(dataset) -> dict[str, str]:
    """Content fingerprint of each lesion's image inputs: RF, ROI and acquisition of its scans.

    Labels and patients are left out: they do not change an image, so
    regrouping patients or correcting a label reuses the features. This is
    the data set's (cached) :attr:`uslib.data.Dataset.content_digests`.
    """
    return dict(dataset.content_digests)


def write_chunk(folder: Path, keys: Sequence[str], features: np.ndarray) -> Path:
    path = folder / f"chunk-{store.key(*keys)}.npz"
    store.save_npz(path, keys=np.asarray(keys, dtype=np.str_), features=np.asarray(features, np.float32))
    return path


def check_sidecar(folder: Path, info: WeightsInfo) -> None:
    stored = read_sidecar(folder)
    if info.values_sha256 is None or stored is None:
        return
    stored = stored.get("values_sha256")
    if stored and stored != info.values_sha256:
        raise RuntimeError(
            f"feature cache {folder} was filled by a model whose weight values hash to {stored}, but the "
            f"model built now (fingerprint {info.fingerprint}) hashes to {info.values_sha256}; the random "
            "initialisation is not reproducible here. Delete that folder to recompute."
        )
