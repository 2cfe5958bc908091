"""TensorFlow, imported lazily and quietly, with its thread pools set from the environment.

``import uslib.tfruntime`` is cheap: TensorFlow is imported on first use
(:func:`import_tensorflow`). The module sets ``TF_ENABLE_ONEDNN_OPTS=1``
(oneDNN kernels, off by default on AMD CPUs; about 3-4x faster here) and
``TF_CPP_MIN_LOG_LEVEL=2`` unless the environment already sets them;
TensorFlow's start-up banner, which that level does not silence, is filtered
out of the process's standard error when TensorFlow is first imported. The
thread pools follow :data:`THREAD_ENVS` (:mod:`uslib.envvars`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Sequence

from .envvars import read_int

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__all__ = ["import_tensorflow", "TF_NOISE", "THREAD_ENVS"]

#: Lines TensorFlow writes to standard error on start-up that say nothing to
#: a reader of this compendium (TF_CPP_MIN_LOG_LEVEL does not reach them: they
#: are logged before absl's logging is initialised).
TF_NOISE: tuple[str, ...] = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
)


@contextlib.contextmanager
def _quiet_stderr(noise: Sequence[str] = TF_NOISE):
    """Capture file descriptor 2 for the block; re-emit every line not matching ``noise``.

    Written here because the banner is written by C++ straight to the file
    descriptor, below Python's ``sys.stderr`` and any logging filter.
    """
    import sys
    import tempfile

    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            kept = [ln for ln in text.splitlines() if ln.strip() and not any(n in ln for n in noise)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")


_TF_READY = threading.Lock()

#: Environment variables setting TensorFlow's thread pools (read once, before its first operation):
#: ``USLIB_TF_THREADS`` both pools (Dask workers get it from :mod:`uslib.scheduler`),
#: ``USLIB_TF_INTRA_OP_THREADS`` / ``USLIB_TF_INTER_OP_THREADS`` one each (benchmarks try them).
THREAD_ENVS = ("USLIB_TF_THREADS", "USLIB_TF_INTRA_OP_THREADS", "USLIB_TF_INTER_OP_THREADS")


def _set_threads(tf) -> None:
    both = read_int("USLIB_TF_THREADS")
    intra = read_int("USLIB_TF_INTRA_OP_THREADS") or both
    inter = read_int("USLIB_TF_INTER_OP_THREADS") or both
    try:  # only possible before TensorFlow's first operation in this process
        if intra > 0:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter > 0:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        pass


def import_tensorflow():
    """``import tensorflow`` with its start-up banner filtered out of standard error; returns the module.

    The banner comes twice: at import, and at the first operation (another
    shared library); both happen inside the filter. Everything else written
    to standard error meanwhile is passed on.
    """
    import sys

    if "tensorflow" in sys.modules and getattr(import_tensorflow, "_done", False):
        return sys.modules["tensorflow"]
    with _TF_READY:
        if getattr(import_tensorflow, "_done", False):  # another thread imported it while this one waited
            return sys.modules["tensorflow"]
        with _quiet_stderr():
            import tensorflow as tf

            _set_threads(tf)
            tf.constant(0.0) + 0.0  # the second banner comes with the first operation
        import_tensorflow._done = True
    return tf
