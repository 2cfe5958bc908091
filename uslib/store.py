"""Atomic writes and content-addressed keys for on-disk artifacts.

Every expensive artifact of a run is keyed by its inputs (:func:`key`) and
written through a temporary file in the same directory followed by
:func:`os.replace`, so that an interrupted run never leaves a half-written
file under a valid name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

__all__ = ["key", "atomic_path", "save_npz", "load_npz", "save_json", "load_json"]


def _canonical(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def key(*parts: Any, length: int = 16) -> str:
    """Hex digest of a canonical JSON encoding of ``parts``.

    Examples
    --------
    >>> key({"a": 1, "b": 2}) == key({"b": 2, "a": 1})
    True
    >>> len(key("x"))
    16
    """
    payload = json.dumps(_canonical(list(parts)), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp creates 0600; give the file the umask's usual mode
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Write arrays to ``path`` (.npz) atomically. Object arrays are refused."""
    for name, a in arrays.items():
        if np.asarray(a).dtype == object:
            raise TypeError(f"{name}: object arrays cannot be cached (load uses allow_pickle=False)")
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return path


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every array of an .npz file with ``allow_pickle=False``."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_canonical(obj), indent=2, default=str) + "\n")
    return path


def load_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())
