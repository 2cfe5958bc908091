"""The features of the missing images computed on a Dask cluster, one task per lesion.

:func:`uslib.extraction.extract_features` hands the images its cache lacks
to :func:`cluster_partitions` when given a client: every worker builds each
network once and keeps it (:func:`lesion_features`), renders its lesion's
images from the RF and returns their features; the caller writes each
partition's chunk as it arrives. Workers check that they run the same code
(:func:`uslib.featurecache.stage_code`) and see the same data (content keys).
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

import numpy as np

from . import networks, store
from .backbones import Backbone, get_backbone
from .featurecache import image_content_keys, stage_code
from .precision import check_precision, with_precision
from .tfruntime import import_tensorflow
from .weights import WeightsInfo

__all__ = ["lesion_features", "cluster_partitions"]

#: Networks built in this (worker) process: (backbone, weights fingerprint, precision) -> (run, info, build seconds).
_WORKER_MODELS: dict[tuple[str, str], tuple[Any, WeightsInfo, float]] = {}
#: Data sets read in this (worker) process: (path, size, mtime, skip_samples) -> Dataset.
_WORKER_DATA: dict[tuple[str, int, int, int], Any] = {}

_MANIFEST_COLUMNS = ["lesion", "scan", "margin_mm", "dynamic_range_db"]


def _worker_model(bb: Backbone, info: WeightsInfo, precision: str = "float32"):
    """The compiled feature function of ``bb`` with ``info``'s weights in ``precision``, built once per process."""
    memo = (bb.name, info.fingerprint, precision)
    if memo not in _WORKER_MODELS:
        import_tensorflow()  # sets the thread pools from USLIB_TF_THREADS before the first operation
        t0 = time.perf_counter()
        model, built = networks.build_model(bb, info)
        _WORKER_MODELS.clear()  # keep one network per worker: VGG19 alone is 0.5 GB
        _WORKER_MODELS[memo] = (
            networks.feature_function(with_precision(model, bb, precision), bb),
            built,
            time.perf_counter() - t0,
        )
        return _WORKER_MODELS[memo]
    run, built, _ = _WORKER_MODELS[memo]
    return run, built, 0.0


def _worker_lesion(data, lesion: str):
    """The lesion a task asks for: sent with it, or read from the data file (once per worker)."""
    if not isinstance(data, tuple):
        return data
    from .oasbud import load_oasbud

    path, skip_samples = data
    st = os.stat(path)
    memo = (str(path), st.st_size, st.st_mtime_ns, int(skip_samples))
    if memo not in _WORKER_DATA:
        _WORKER_DATA.clear()
        _WORKER_DATA[memo] = load_oasbud(path, skip_samples=int(skip_samples))
    return _WORKER_DATA[memo][lesion]


def lesion_features(
    data,
    lesion: str,
    content_key: str,
    rows,
    *,
    backbone: str,
    weights: dict,
    batch_size: int,
    code: str,
    precision: str = "float32",
) -> dict[str, Any]:
    """Features of some images of one lesion: the task a Dask worker runs.

    Parameters
    ----------
    data : Lesion or (str, int)
        The lesion itself, or ``(path, skip_samples)`` of the data file
        holding it (read once per worker process).
    lesion : str
        The lesion's key.
    content_key : str
        :func:`image_content_keys` of the lesion as the client sees it; the
        worker checks that its lesion has the same.
    rows : pandas.DataFrame
        Manifest rows (``lesion``, ``scan``, ``margin_mm``,
        ``dynamic_range_db``) of this lesion.
    backbone : str
    weights : dict
        :meth:`WeightsInfo.to_dict` of the resolved weights.
    batch_size : int
        Images per forward pass.
    code : str
        The client's code fingerprint of the features stage
        (:func:`uslib.featurecache.stage_code`); a worker running other code
        (or other TensorFlow/Keras versions) refuses the task.
    precision : {"float32", "bfloat16"}
        Arithmetic of the network (:func:`uslib.precision.with_precision`); a worker whose
        CPU lacks bfloat16 refuses the task (:func:`check_precision`).

    Returns
    -------
    dict
        ``features`` float32 ``(len(rows), n_features)`` in row order,
        ``values_sha256`` of the network built, and timings
        (``build_seconds``, ``render_seconds``, ``inference_seconds``,
        ``task_seconds``) and the worker's process id.
    """
    from .augmentation import iter_images
    from .data import Dataset

    t0 = time.perf_counter()
    mine = stage_code()
    if mine != code:
        raise RuntimeError(
            f"this worker runs other uslib code or packages (fingerprint {mine}, the client has "
            f"{code}): install the same uslib and pins on every worker"
        )
    bb = get_backbone(backbone)
    les = _worker_lesion(data, lesion)
    one = Dataset([les], source=f"lesion {lesion}")
    got = image_content_keys(one)[les.key]
    if les.key != lesion or got != content_key:
        raise RuntimeError(
            f"lesion {lesion}: the worker's data differ from the client's (content key {got}, "
            f"expected {content_key}); is the data file the same on every machine?"
        )
    fields = {k: weights.get(k) for k in WeightsInfo.__dataclass_fields__}
    run, built, build_s = _worker_model(bb, WeightsInfo(**fields), check_precision(precision))
    out = np.empty((len(rows), bb.n_features), np.float32)
    render_s = infer_s = 0.0
    t_r = time.perf_counter()
    for positions, batch in iter_images(one, rows, size_px=bb.size_px, batch_size=int(batch_size)):
        t_i = time.perf_counter()
        render_s += t_i - t_r
        out[positions] = run(networks.preprocess(batch, bb))
        t_r = time.perf_counter()
        infer_s += t_r - t_i
    return {
        "features": out,
        "values_sha256": built.values_sha256,
        "build_seconds": build_s,
        "render_seconds": render_s,
        "inference_seconds": infer_s,
        "task_seconds": time.perf_counter() - t0,
        "worker_pid": os.getpid(),
    }


def _file_readable(path: str, size: int) -> bool:
    """Whether this (worker) process sees ``path`` with ``size`` bytes."""
    try:
        return os.stat(path).st_size == size
    except OSError:
        return False


def cluster_partitions(
    client,
    dataset,
    sub,
    missing: Sequence[str],
    bb: Backbone,
    info: WeightsInfo,
    content: dict[str, str],
    code: str,
    *,
    batch_size: int,
    data_file,
    retries: int,
    precision: str = "float32",
):
    """Submit one task per lesion of the missing images; yield (keys, features, record, values) as they finish."""
    import pickle

    from distributed import as_completed

    by_lesion: dict[str, list[int]] = {}
    for i, les in enumerate(sub["lesion"].astype(str).tolist()):
        by_lesion.setdefault(les, []).append(i)
    use_path = False
    if data_file is not None:
        path, skip = str(data_file[0]), int(data_file[1])
        size = os.stat(path).st_size
        seen = client.run(_file_readable, path, size)
        use_path = bool(seen) and all(seen.values())
    weights = info.to_dict()
    futures, meta = [], {}
    for les, idx in by_lesion.items():
        rows = sub.iloc[idx][_MANIFEST_COLUMNS].reset_index(drop=True)
        if use_path:
            data, sent = (path, skip), 0
        else:  # sent with the task (not scattered): the scheduler keeps it, so a lost worker loses nothing
            data = lesion = dataset[les]
            sent = sum(np.asarray(s.rf).nbytes + np.asarray(s.roi).nbytes for s in lesion.scans)
        fut = client.submit(
            lesion_features,
            data,
            les,
            content[les],
            rows,
            backbone=bb.name,
            weights=weights,
            batch_size=batch_size,
            code=code,
            precision=precision,
            retries=retries,
            pure=False,
            key=f"uslib-features-{bb.name}-{store.key(les, [missing[i] for i in idx])}",
        )
        futures.append(fut)
        meta[fut.key] = (les, [missing[i] for i in idx], sent + len(pickle.dumps(rows)))
    for fut in as_completed(futures):
        res = fut.result()
        les, keys, bytes_in = meta[fut.key]
        feats = np.asarray(res["features"], np.float32)
        if feats.shape != (len(keys), bb.n_features):
            raise RuntimeError(
                f"{bb.name}: lesion {les}: features of shape {feats.shape}, expected ({len(keys)}, {bb.n_features})"
            )
        record = {
            "lesion": les,
            "n_images": len(keys),
            "worker": res["worker_pid"],
            **{
                k: round(float(res[k]), 4)
                for k in ("build_seconds", "render_seconds", "inference_seconds", "task_seconds")
            },
            "bytes_in": int(bytes_in),
            "bytes_out": int(feats.nbytes),
        }
        fut.release()
        yield keys, feats, record, res["values_sha256"]
