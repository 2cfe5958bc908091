"""Features of every image of a manifest, computed once and cached on disk.

:func:`extract_features` runs every image of a manifest
(:func:`uslib.augmentation.image_set`) through a network
(:mod:`uslib.networks`) once, in batches, and caches the features per image
(:mod:`uslib.featurecache`); the next batch is rendered in a helper thread
while the network runs the current one (:func:`prefetched`), or the missing
images go to a Dask cluster (:mod:`uslib.cluster`). Long extractions report
their progress to the runner's terminal (:func:`uslib.store.report_progress`),
never into a notebook.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import featurecache, networks, store
from .backbones import Backbone, default_batch_size, get_backbone
from .cluster import cluster_partitions
from .precision import PRECISIONS, check_precision, with_precision
from .weights import WeightsInfo, resolve_weights

__all__ = ["FeatureSet", "extract_features", "prefetched", "Prefetched"]


@dataclass
class FeatureSet:
    """Features of every row of a manifest.

    Attributes
    ----------
    features : ndarray of float32, shape (n_images, n_features)
        Row ``i`` belongs to ``manifest.iloc[i]``.
    backbone : str
    weights : dict
        :meth:`WeightsInfo.to_dict` (``kind``, ``source``, ``fingerprint``,
        ``message``, ...).
    n_computed : int
        Distinct images run through the network in this call.
    n_cached : int
        Distinct images read from the cache.
    seconds : float
        Wall time of the call.
    tasks : list of dict
        With a Dask client, one record per partition (lesion) computed on the
        cluster: ``lesion``, ``n_images``, ``worker``, ``build_seconds`` (0
        when the worker already held the network), ``render_seconds``,
        ``inference_seconds``, ``task_seconds`` (on the worker),
        ``bytes_in`` (arguments sent), ``bytes_out`` (features returned).
    """

    features: np.ndarray
    backbone: str
    weights: dict = field(default_factory=dict)
    n_computed: int = 0
    n_cached: int = 0
    seconds: float = 0.0
    tasks: list = field(default_factory=list)

    def __repr__(self) -> str:
        return (
            f"FeatureSet({self.backbone}, features {self.features.shape}, weights {self.weights.get('kind')} "
            f"{self.weights.get('fingerprint')}, computed {self.n_computed}, cached {self.n_cached}, "
            f"{self.seconds:.1f} s)"
        )


def extract_features(
    dataset,
    manifest,
    backbone: str | Backbone,
    *,
    cache_dir: str | os.PathLike,
    weights: str | None = "imagenet",
    weights_path: str | os.PathLike | None = None,
    strict: bool = False,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = True,
    allow_download: bool = True,
    client=None,
    data_file: tuple[str, int] | None = None,
    retries: int = 3,
    precision: str = "float32",
) -> FeatureSet:
    """Features of every image of a manifest, computed once and cached.

    Each distinct image (:func:`uslib.augmentation.image_key`) is rendered
    (:func:`uslib.augmentation.iter_images`), preprocessed
    (:func:`uslib.networks.preprocess`) and run through the network in batches by a compiled
    function (:func:`uslib.networks.feature_function`); the next batch is rendered in a
    helper thread while the network runs the current one (:func:`prefetched`).
    Features are cached per image under
    ``cache_dir`` with the key of :func:`uslib.featurecache.image_cache_keys`
    (image content, image, size, backbone, weights, code and precision), one
    ``.npz`` chunk per batch written atomically, so an interrupted run
    loses at most one batch and a rerun (or a manifest with more dynamic
    ranges or margins) computes only the missing images. The network is not
    built when every image is cached.

    Parameters
    ----------
    dataset : Dataset
    manifest : pandas.DataFrame
        Rows with ``lesion``, ``scan``, ``margin_mm``, ``dynamic_range_db``
        (:func:`uslib.augmentation.image_set` or a subset of it).
    backbone : str or Backbone
        ``"inception_v3"`` or ``"vgg19"``.
    cache_dir : path-like
        Cache root; features go to ``<cache_dir>/<backbone>-<fingerprint>/``
        with a ``weights.json`` sidecar describing the weights.
    weights, weights_path, strict, seed, allow_download
        See :func:`uslib.weights.resolve_weights`.
    batch_size : int or None
        Images per forward pass (and per cache chunk); None: the backbone's
        rule (:func:`uslib.backbones.default_batch_size`).
    progress : bool
        Show a tqdm progress bar with the throughput in images/s. Under the
        runner (whatever ``progress`` says) the count of images done is also
        appended to the run's events file (:func:`uslib.store.report_progress`)
        after every batch, and the runner shows it on its terminal.
    client : distributed.Client or callable, optional
        Compute the missing images on a Dask cluster instead of in this
        process; a callable returning a client is called only when images
        are missing (so a fully cached call starts no cluster). The missing
        images are partitioned by lesion, one task each
        (:func:`uslib.cluster.lesion_features`): every worker builds each network once and
        keeps it, renders its lesion's images from the RF and returns their
        features; this process writes each partition's chunk as soon as it
        arrives, so the store needs no shared file system and a rerun
        computes only what had not arrived. A worker lost mid-run is
        replaced and its tasks rerun (``retries``).
    data_file : (str, int), optional
        ``(path, skip_samples)`` of the file the data set was read from. When
        every worker can read it (same size), tasks carry the path and
        workers read the file (once per worker); otherwise each lesion's
        scans are sent to the cluster (``client.scatter``). Workers check
        that what they read has the content key of the lesion asked for.
    retries : int
        Times Dask reruns a partition whose worker died or that failed.
    precision : {"float32", "bfloat16"}
        Arithmetic of the network (:func:`uslib.precision.check_precision` refuses bfloat16
        on a CPU without a native path; :func:`uslib.precision.with_precision`). Features of
        each precision are cached apart: the folder
        (:func:`uslib.store.feature_dir`) and every image key name it.
        int8 (:mod:`uslib.int8`) runs in this process even with a
        ``client``, and its name in the cache also carries its calibration
        subset (:func:`uslib.int8.cache_tag`).

    Returns
    -------
    FeatureSet
        ``features`` float32 ``(len(manifest), n_features)`` in the manifest's
        row order.

    Notes
    -----
    On a cluster the features are those of the same network (same weights,
    checked through ``values_sha256``) on the same images, but in other
    batches and on other thread counts, so oneDNN may sum in another order.
    Measured here they were bitwise equal (``benchmarks/bench_distributed.py``
    reports the largest difference); ``tests/test_distributed.py`` allows
    1e-5 relative to the largest feature.
    """

    t_start = time.perf_counter()
    bb = get_backbone(backbone)
    batch_size = default_batch_size(bb, batch_size)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    info = resolve_weights(
        bb, weights=weights, weights_path=weights_path, strict=strict, seed=seed, allow_download=allow_download
    )
    tag, calibration = precision, None
    if precision == "int8":  # cached under a tag naming the calibration subset; one quantized network, here
        from . import int8

        calibration = int8.calibration_manifest(dataset, featurecache.image_content_keys(dataset), bb.size_px)
        tag = int8.cache_tag(calibration["calibration_key"].tolist())
        client = None
    plan = _plan(
        dataset, manifest, bb, info, store.feature_dir(cache_dir, bb.name, info.fingerprint, tag), precision, tag
    )
    plan.calibration = calibration
    tasks: list[dict] = []
    if plan.missing:
        check_precision(precision)  # before a cluster starts or a network is built
        if client is not None:
            info, tasks = _compute_on_cluster(
                plan,
                dataset,
                manifest,
                info,
                client,
                batch_size=int(batch_size),
                data_file=data_file,
                retries=int(retries),
                t_start=t_start,
            )
        else:
            info = _compute_here(plan, dataset, manifest, info, batch_size=int(batch_size), progress=progress)
    else:
        info = _weights_of_cached(plan, info)
    _fill_from_cache(plan)
    return FeatureSet(
        features=plan.out,
        backbone=bb.name,
        weights=info.to_dict(),
        n_computed=plan.n_computed,
        n_cached=len(plan.positions_of) - plan.n_computed,
        seconds=time.perf_counter() - t_start,
        tasks=tasks,
    )


@dataclass
class _Plan:
    """What one call of :func:`extract_features` has to do, and its output filled in as it goes."""

    bb: Backbone
    folder: Path
    precision: str
    content: dict[str, str]
    code: str
    positions_of: dict[str, list[int]]  # image cache key -> manifest rows showing that image
    index: dict  # image cache key -> (chunk file, row) of the cached images
    payload: dict  # chunk file -> its features
    missing: list[str]  # keys of the images to compute, in manifest order
    out: np.ndarray
    n_computed: int = 0
    calibration: object = None  # int8: the calibration subset's manifest (uslib.int8.calibration_manifest)

    @property
    def stage(self) -> str:
        """The label of this extraction's progress reports."""
        return f"{self.bb.name} features" + ("" if self.precision == "float32" else f" ({self.precision})")

    def missing_rows(self, manifest):
        """One manifest row per missing image."""
        return manifest.iloc[[self.positions_of[k][0] for k in self.missing]]

    def put(self, chunk_keys, feats) -> None:
        """Write one computed chunk to the cache and into the output."""
        featurecache.write_chunk(self.folder, chunk_keys, feats)
        for k, f in zip(chunk_keys, feats):
            self.out[self.positions_of[k]] = f
        self.n_computed += len(chunk_keys)


def _plan(
    dataset, manifest, bb: Backbone, info: WeightsInfo, folder: Path, precision: str, tag: str | None = None
) -> _Plan:
    """Key every row of ``manifest``, read the cache index, and list the images it lacks.

    ``tag`` names the features in the cache (default: ``precision``; int8 adds its calibration subset).
    """
    content = featurecache.image_content_keys(dataset)
    code = featurecache.stage_code()
    keys = featurecache.image_cache_keys(manifest, bb, info, content, code, tag or precision)
    positions_of: dict[str, list[int]] = {}
    for pos, k in enumerate(keys):
        positions_of.setdefault(k, []).append(pos)
    index, payload = featurecache.scan_chunks(folder)
    return _Plan(
        bb=bb,
        folder=folder,
        precision=precision,
        content=content,
        code=code,
        positions_of=positions_of,
        index=index,
        payload=payload,
        missing=[k for k in positions_of if k not in index],
        out=np.empty((len(manifest), bb.n_features), np.float32),
    )


def _compute_on_cluster(
    plan: _Plan,
    dataset,
    manifest,
    info: WeightsInfo,
    client,
    *,
    batch_size: int,
    data_file,
    retries: int,
    t_start: float,
) -> tuple[WeightsInfo, list[dict]]:
    """The missing images on a Dask cluster (:func:`uslib.cluster.cluster_partitions`); their chunks written here."""
    bb, tasks = plan.bb, []
    client = client() if callable(client) and not hasattr(client, "submit") else client
    for chunk_keys, feats, record, values_sha256 in cluster_partitions(
        client,
        dataset,
        plan.missing_rows(manifest),
        plan.missing,
        bb,
        info,
        plan.content,
        plan.code,
        batch_size=batch_size,
        data_file=data_file,
        retries=retries,
        precision=plan.precision,
    ):
        if not tasks:  # the first partition tells which weight values the workers built
            info = replace(info, values_sha256=values_sha256)
            featurecache.check_sidecar(plan.folder, info)
            featurecache.write_sidecar(plan.folder, bb, info)
        elif values_sha256 != info.values_sha256:
            raise RuntimeError(
                f"{bb.name}: workers built different weight values ({values_sha256} and "
                f"{info.values_sha256}); the random initialisation is not reproducible there"
            )
        plan.put(chunk_keys, feats)
        tasks.append(record)
        store.report_progress(plan.stage, plan.n_computed, len(plan.missing), seconds=time.perf_counter() - t_start)
    if plan.n_computed != len(plan.missing):
        raise RuntimeError(f"{bb.name}: the cluster returned {plan.n_computed} of {len(plan.missing)} missing images")
    return info, tasks


def _compute_here(plan: _Plan, dataset, manifest, info: WeightsInfo, *, batch_size: int, progress: bool) -> WeightsInfo:
    """The missing images in this process, the next batch rendered while the network runs the current one."""
    from tqdm.auto import tqdm

    from .augmentation import iter_images

    bb, missing = plan.bb, plan.missing
    # the first batch is rendered while the network is built (and TensorFlow imported)
    with prefetched(
        iter_images(dataset, plan.missing_rows(manifest), size_px=bb.size_px, batch_size=batch_size),
        lambda item: (item[0], networks.preprocess(item[1], bb)),
    ) as batches:
        model, info = networks.build_model(bb, info)
        featurecache.check_sidecar(plan.folder, info)
        featurecache.write_sidecar(plan.folder, bb, info)
        if plan.precision == "int8":  # OpenVINO + NNCF, quantized once per feature folder
            from . import int8

            run = int8.load_or_quantize(
                plan.folder,
                model,
                bb.input_shape,
                lambda: networks.preprocess(
                    np.concatenate([x for _, x in iter_images(dataset, plan.calibration, size_px=bb.size_px)]), bb
                ),
            )
        else:
            run = networks.feature_function(with_precision(model, bb, plan.precision), bb)
        del model
        bar = tqdm(total=len(missing), desc=f"{bb.name} features", unit="img", disable=not progress)
        t_inf = time.perf_counter()
        store.report_progress(plan.stage, 0, len(missing), seconds=0.0)
        try:
            for positions, x in batches:
                feats = run(x)
                if feats.shape != (len(positions), bb.n_features):
                    raise RuntimeError(f"{bb.name}: features of shape {feats.shape}, expected (b, {bb.n_features})")
                chunk_keys = [missing[p] for p in positions.tolist()]
                plan.put(chunk_keys, feats)
                bar.update(len(chunk_keys))
                bar.set_postfix(img_s=f"{plan.n_computed / max(time.perf_counter() - t_inf, 1e-9):.1f}")
                store.report_progress(plan.stage, plan.n_computed, len(missing), seconds=time.perf_counter() - t_inf)
        finally:
            bar.close()
    if plan.n_computed != len(missing):
        raise RuntimeError(f"{bb.name}: iter_images gave {plan.n_computed} of {len(missing)} missing images")
    return info


def _weights_of_cached(plan: _Plan, info: WeightsInfo) -> WeightsInfo:
    """Every image cached: the sidecar's weight-values digest (the sidecar written if it is missing)."""
    stored = featurecache.read_sidecar(plan.folder)
    if stored is None:
        featurecache.write_sidecar(plan.folder, plan.bb, info)
    elif stored.get("values_sha256"):
        info = replace(info, values_sha256=stored["values_sha256"])
    return info


def _fill_from_cache(plan: _Plan) -> None:
    """Copy the cached images' features into the output rows that show them."""
    by_chunk: dict[Path, list[tuple[str, int]]] = {}
    for k in plan.positions_of:
        if k in plan.index:
            path, row = plan.index[k]
            by_chunk.setdefault(path, []).append((k, row))
    for path, items in by_chunk.items():
        feats = plan.payload[path]
        if feats.ndim != 2 or feats.shape[1] != plan.bb.n_features:
            raise RuntimeError(f"feature cache chunk {path}: shape {feats.shape}, expected (b, {plan.bb.n_features})")
        for k, row in items:
            plan.out[plan.positions_of[k]] = feats[row]


def prefetched(items, transform=None) -> "Prefetched":
    """Draw ``items`` (and apply ``transform``) one ahead of the caller, in a background thread.

    While the caller works on one item (a network runs a batch: TensorFlow
    releases the GIL), the next is drawn from ``items`` and transformed in a
    single helper thread, so the rendering of the next batch (NumPy and SciPy
    on one core) overlaps the network's arithmetic instead of leaving a core
    idle. The first item is started at once, before the caller asks for it:
    :func:`extract_features` builds the network meanwhile. Exactly one item
    is prepared ahead; items are drawn one at a time, in order, so ``items``
    may be a generator. The items and their order are those of the plain
    loop: only the timing changes.

    Parameters
    ----------
    items : iterable
    transform : callable, optional
        Applied to each item in the helper thread; None passes the items on.

    Returns
    -------
    Prefetched
        An iterator of ``transform(item)`` (or ``item``) in the order of
        ``items``, and a context manager: leaving the block (or
        :meth:`Prefetched.close`) waits for the item in preparation and
        draws nothing more. Whatever drawing or transforming an item raised
        is raised where the caller asks for that item.

    Examples
    --------
    >>> with prefetched(range(4), lambda i: i * i) as squares:
    ...     list(squares)
    [0, 1, 4, 9]
    """
    return Prefetched(items, transform)


class Prefetched:
    """The iterator :func:`prefetched` returns (one helper thread, one item ahead)."""

    _END = object()

    def __init__(self, items, transform=None):
        from concurrent.futures import ThreadPoolExecutor

        self._iterator = iter(items)
        self._transform = transform
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="uslib-prefetch")
        self._future = self._pool.submit(self._draw)
        self._done = False

    def _draw(self):
        item = next(self._iterator, self._END)
        return item if item is self._END or self._transform is None else self._transform(item)

    def __iter__(self) -> "Prefetched":
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        try:
            item = self._future.result()
        except BaseException:
            self.close()
            raise
        if item is self._END:
            self.close()
            raise StopIteration
        self._future = self._pool.submit(self._draw)
        return item

    def close(self) -> None:
        """Draw nothing more; wait for the item in preparation (its result or error is dropped)."""
        self._done = True
        self._pool.shutdown(wait=True)

    def __enter__(self) -> "Prefetched":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
