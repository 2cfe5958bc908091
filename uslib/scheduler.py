"""Where the heavy work runs: in this process, or on a Dask distributed cluster.

The profile key ``scheduler`` (:class:`uslib.config.Profile`) says where
feature extraction and sweeps run:

``null``
    In this process, exactly as without Dask.
``"local"``
    A :class:`distributed.LocalCluster` on this machine, sized to it: one
    worker process per core, one thread each (:func:`local_cluster_size`).
    Workers listen on 127.0.0.1 only.
an address (``"tcp://host:8786"``)
    An existing cluster: started by ``dask scheduler`` / ``dask worker``, by
    dask-jobqueue on Slurm or PBS, dask-kubernetes, or a hosted service.
    Every worker must have the same ``uslib`` and pins installed (a worker
    with other code refuses its tasks).

This module only makes and closes connections and says where the cluster's
dashboard is; what runs on the cluster is the stages' business
(:func:`uslib.features.lesion_features`). It imports nothing of the runner.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from typing import Any, Iterator

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "SchedulerUnreachable",
    "local_cluster_size",
    "cluster",
    "get_client",
    "describe",
    "announce",
]

#: Clients made by :func:`get_client` in this process, by scheduler spec.
_CLIENTS: dict[str, Any] = {}

#: Seconds to wait for a scheduler address to answer (the profile key ``scheduler_timeout_s``).
DEFAULT_CONNECT_TIMEOUT_S = 10.0


class SchedulerUnreachable(ConnectionError):
    """A scheduler address that did not answer in time; the message is one line naming it."""


def local_cluster_size(n_cpus: int | None = None) -> dict[str, int]:
    """Workers and threads of the ``"local"`` cluster: one single-threaded worker process per core.

    One thread per worker, and TensorFlow told to use one thread per worker
    too (environment variable ``USLIB_TF_THREADS``), so that the workers do
    not oversubscribe the cores.

    Examples
    --------
    >>> local_cluster_size(8)
    {'n_workers': 8, 'threads_per_worker': 1}
    """
    n = int(n_cpus or os.cpu_count() or 1)
    return {"n_workers": max(1, n), "threads_per_worker": 1}


def _local_cluster(**kwargs):
    from distributed import LocalCluster

    size = {**local_cluster_size(), **kwargs}
    # workers compute as this process would: the same oneDNN setting, one TensorFlow thread per Dask thread
    env = {
        "USLIB_TF_THREADS": str(size["threads_per_worker"]),
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1"),
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    }
    return LocalCluster(processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0", env=env, **size)


def _connect(spec: str, *, timeout_s: float | None = None, **kwargs):
    """A client for ``spec`` (``"local"`` or an address) and the cluster it started (or None).

    An address that does not answer within ``timeout_s`` seconds
    (:data:`DEFAULT_CONNECT_TIMEOUT_S` when None) raises
    :class:`SchedulerUnreachable`, whose message is one line.
    """
    from distributed import Client

    if spec == "local":
        lc = _local_cluster(**kwargs)
        return Client(lc), lc
    timeout = float(timeout_s if timeout_s is not None else DEFAULT_CONNECT_TIMEOUT_S)
    try:
        return Client(spec, timeout=timeout), None
    except (OSError, TimeoutError) as exc:  # distributed raises OSError ("Timed out trying to connect ...")
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if len(reason) > 200:
            reason = reason[:200] + "…"
        raise SchedulerUnreachable(
            f"scheduler: no Dask scheduler answered at {spec} within {timeout:g} s ({reason}); start one there, "
            "set scheduler: local, or remove the key (scheduler_timeout_s sets the wait)"
        ) from None


@contextlib.contextmanager
def cluster(spec: str | None, *, quiet: bool = False, timeout_s: float | None = None, **local_kwargs) -> Iterator[Any]:
    """A Dask client for a ``scheduler`` value, closed (with any cluster it started) on exit.

    Parameters
    ----------
    spec : str or None
        The profile's ``scheduler``: None yields None (work in this process),
        ``"local"`` starts a LocalCluster, anything else is an address.
    quiet : bool
        Do not print the dashboard link (:func:`announce`).
    timeout_s : float, optional
        Seconds to wait for an address to answer (default
        :data:`DEFAULT_CONNECT_TIMEOUT_S`); then :class:`SchedulerUnreachable`.
    **local_kwargs
        Passed to :class:`distributed.LocalCluster` for ``"local"``
        (e.g. ``n_workers=2``), over :func:`local_cluster_size`.

    Yields
    ------
    distributed.Client or None
    """
    if spec is None:
        yield None
        return
    client, lc = _connect(spec, timeout_s=timeout_s, **local_kwargs)
    try:
        if not quiet:
            announce(client)
        yield client
    finally:
        client.close()
        if lc is not None:
            lc.close()


def get_client(spec: str):
    """A client for ``spec`` kept for the life of this process (a chapter run on its own).

    The first call starts the LocalCluster (or connects) and prints the
    dashboard link; later calls return the same client, so the workers keep
    the networks they built between backbones and chapters. Closed at exit.
    """
    if spec not in _CLIENTS:
        client, lc = _connect(spec)
        _CLIENTS[spec] = client
        announce(client)

        def close():
            with contextlib.suppress(Exception):
                client.close()
                if lc is not None:
                    lc.close()

        atexit.register(close)
    return _CLIENTS[spec]


def describe(client) -> dict[str, Any]:
    """Address, workers, threads and dashboard link of a client's cluster (for ``run.json``)."""
    info = client.scheduler_info(n_workers=-1)
    workers = info.get("workers", {})
    return {
        "address": client.scheduler.address,
        "n_workers": len(workers),
        "threads": int(sum(w.get("nthreads", 0) for w in workers.values())),
        "dashboard": client.dashboard_link,
    }


def announce(client, file=None) -> None:
    """Print the cluster's address, size and dashboard link (stderr by default)."""
    d = describe(client)
    print(
        f"[uslib] Dask cluster {d['address']}: {d['n_workers']} workers, {d['threads']} threads; "
        f"dashboard {d['dashboard']}",
        file=file or sys.stderr,
        flush=True,
    )
