"""The run directory: its layout, atomic and verified I/O, cache keys, the run record.

This is the only module that knows where an artefact lives and how it is
written. (Where the run directory itself may be, and who holds it, is
:mod:`uslib.locations`; its names are re-exported here.) At about 970 lines
it is over the house's 900-line guide on purpose: the layout, the verified
I/O and the keys are one contract, what is written where, sealed how and
keyed by what, and each of them uses the others' private helpers. Everything expensive that a chapter computes is stored under the
run directory (``runs/<profile>/`` by default) with a name that carries a key
of *all* its inputs, so nothing stale is ever served:

==============================================  =============================================
path under the run directory                    what, and what its key covers
==============================================  =============================================
``run.json``                                    the run record (:func:`update_run_record`):
                                                run id, profile, parameters, provenance,
                                                each stage's status and seconds
``run.json.lock``                               the lock every update of the record takes, so
                                                that chapters running at the same time never
                                                lose each other's entries
``events.jsonl``                                damaged cache files found and repaired during
                                                a run (:func:`report_damage`) and the progress
                                                of long stages (:func:`report_progress`) outside
                                                any chapter; the runner prints them to the terminal
``logs/<chapter>.events.jsonl``                 the same, for one chapter (:func:`events_path`):
                                                each chapter's kernel has its own file, so
                                                chapters may run side by side
``logs/<chapter>.stderr.txt``                   what a chapter wrote to standard error, kept off
                                                its page
``logs/<chapter>.error.txt``                    the full traceback of a chapter that failed (the
                                                terminal shows its last line)
``run.lock``, ``run.owner.json``                held by the one run of this directory at a time
                                                (:func:`run_lock`): its pid and start time
``data/phantom-n<N>-seed<S>-<key>.mat``         the synthetic data set in the OASBUD schema;
                                                key: n, seed, code of ``phantom`` (and what it
                                                imports); sealed by a ``.sha256`` sidecar;
                                                simulated under ``<name>.lock`` (:func:`file_lock`),
                                                so chapters started together simulate it once
``data/content-<key>.json``                     per-lesion content digests of a phantom file
                                                (:attr:`uslib.data.Dataset.content_digests`), so
                                                a chapter need not hash the RF again; key: the
                                                file's sealed SHA-256, ``skip_samples``, code of
                                                ``data``; sealed by a ``.sha256`` sidecar
``features/<backbone>-<weights>[-<prec>]/``     CNN features, one ``chunk-<key>.npz`` per
                                                batch (zip CRC-checked) and ``weights.json``;
                                                key of each image: the RF/ROI content of its
                                                scan, crop margin, dynamic range, input size,
                                                weights, arithmetic precision (float32 folders
                                                carry no suffix, bfloat16 ones ``-bfloat16``)
                                                and code of ``features`` (and what it
                                                imports), TensorFlow/Keras versions
``results/<backbone>-<key>/``                   the Train×Test matrix (CSV + ``metrics.json``,
                                                sealed by ``SEAL``); key: feature content, the
                                                manifest including patients and labels, the data
                                                set, CV parameters, code of ``evaluation``
``robustness/<kind>[-<backbone>]-<key>.csv``    robustness curves, predictions, handcrafted
                                                features and baselines (sealed); key as above
                                                plus the chapter's own parameters; also
                                                ``roi-db-<key>.csv``, the ROI brightness per
                                                scan (key: data set, ranges, code of ``qus``)
``chapter-cache/<chapter>-<key>.ipynb``         an executed chapter, reused while its key holds
                                                (:mod:`uslib.chaptercache`): its notebook, the
                                                parameters passed to it, every uslib source
                                                file and package version, the keys of the
                                                chapters it reads, the profile's input files;
                                                sealed by a ``.sha256`` sidecar
``sweep/<param=value,...>/``                    one point of a sweep (``python -m uslib sweep``):
                                                a run directory of its own (``run.json``,
                                                ``results/``, ``chapters/``) whose data set and
                                                features are the parent's (profile key
                                                ``cache_dir``)
``sweep/summary.csv``                           AUC with its CI per point, backbone and
                                                Train/Test setting (sealed)
==============================================  =============================================

``data/`` and ``features/`` are keyed by content alone, so several runs may
share them: with the profile key ``cache_dir`` they live in that folder
(:func:`cache_root`) instead of the run directory.

Three rules hold for every file here:

- **Atomic.** A file is written beside its target and renamed onto it
  (:func:`atomic_path`), so an interrupted run never leaves a half-written
  file under a valid name.
- **Verified.** Every cache read checks the file: ``.npz`` by the zip CRC of
  every member, JSON by parsing, everything else by a SHA-256 seal written
  after the file (:func:`seal`, :func:`verify`). A damaged cache file raises
  :class:`DamagedArtefact`; the pipeline reports it (:func:`report_damage`)
  and recomputes. A damaged *record* (``run.json``) raises
  :class:`DamagedRecord`, whose message names the file and the way out.
- **Keyed by data, code and parameters.** :func:`key` hashes a canonical
  JSON encoding of its parts; :func:`code_fingerprint` hashes the source
  (syntax tree, docstrings and comments excluded) of a stage's module and of
  every ``uslib`` module it imports, so an edit to a stage's code invalidates
  that stage's artefacts and nothing upstream of it.
"""

from __future__ import annotations

import ast
import contextlib
import datetime as _dt
import hashlib
import json
import os
import sys
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .locations import (  # noqa: F401  (re-exported: the run directory's location, created and held)
    CACHE_ENTRIES,
    REPO_ROOT,
    SHARED_FOLDERS,
    SYSTEM_TREES,
    TEMP_TREES,
    RunDirectoryBusy,
    UnsafeLocation,
    busy_message,
    location_problem,
    resolve_path,
    run_lock,
    run_lock_holder,
    run_path,
    system_folder,
)

__all__ = [
    "DamagedArtefact",
    "DamagedRecord",
    "DamagedArtefactWarning",
    "key",
    "array_digest",
    "code_fingerprint",
    "stage_modules",
    "atomic_path",
    "save_npz",
    "load_npz",
    "save_json",
    "load_json",
    "save_csv",
    "load_csv",
    "seal",
    "verify",
    "seal_dir",
    "verify_dir",
    "report_damage",
    "report_progress",
    "load_or_compute",
    "read_events",
    "EVENTS_ENV",
    "PACKAGE_DIR",
    "SEAL",
    "REPO_ROOT",
    "resolve_path",
    "run_path",
    "manifest_path",
    "record_path",
    "events_path",
    "chapter_log_path",
    "phantom_path",
    "features_root",
    "feature_dir",
    "results_dir",
    "robustness_path",
    "cache_root",
    "sweep_dir",
    "sweep_point_dir",
    "sweep_chapter_dir",
    "sweep_summary_path",
    "read_run_record",
    "update_run_record",
    "file_lock",
    "chapter_error_path",
    "UnsafeLocation",
    "RunDirectoryBusy",
    "system_folder",
    "location_problem",
    "run_lock",
    "run_lock_holder",
]

#: Environment variable naming the events file of the run in progress. The
#: runner sets it for the kernels it starts, so that damage reports reach its
#: terminal instead of a book page.
EVENTS_ENV = "USLIB_EVENTS_FILE"

#: File that seals a results directory: the SHA-256 of every file in it.
SEAL = ".complete.json"


#: Where :func:`code_fingerprint` reads the ``uslib`` sources (this package).
PACKAGE_DIR = Path(__file__).resolve().parent

#: Infrastructure modules left out of code fingerprints: they move bytes and
#: name files but compute nothing that ends up in an artefact.
INFRASTRUCTURE = frozenset(
    {
        "store",
        "locations",
        "envvars",
        "config",
        "run",
        "pages",
        "pipeline",
        "plots",
        "paper",
        "scheduler",
        "sweep",
        "__main__",
        "__init__",
    }
)


class DamagedArtefact(RuntimeError):
    """A cache file that cannot be trusted (truncated, corrupt, unsealed).

    The pipeline reports it and recomputes the artefact.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"damaged cache file {self.path}: {reason}")


class DamagedRecord(RuntimeError):
    """A record (``run.json``) that cannot be read; its message says what to do."""


class DamagedArtefactWarning(UserWarning):
    """Warned when a damaged cache file was found and will be recomputed."""


# --------------------------------------------------------------------------- #
# Keys
# --------------------------------------------------------------------------- #


def _canonical(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _canonical(obj.tolist())
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
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


def array_digest(*arrays: np.ndarray, length: int = 16) -> str:
    """SHA-256 of the bytes, dtypes and shapes of ``arrays`` (hex).

    Examples
    --------
    >>> a = np.arange(4)
    >>> array_digest(a) == array_digest(a.copy())
    True
    >>> array_digest(a) == array_digest(a.reshape(2, 2))
    False
    """
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(repr((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:length]


def _imports(tree: ast.AST) -> set[str]:
    """Names of the ``uslib`` modules a module imports (relative or absolute)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 1 or mod.startswith("uslib"):
                base = mod.removeprefix("uslib").lstrip(".") if node.level == 0 else mod
                if base:
                    out.add(base.split(".")[0])
                else:  # from . import x, y
                    out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("uslib."):
                    out.add(a.name.split(".")[1])
    return out


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(getattr(body[0], "value", None), ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


_SOURCE_CACHE: dict[tuple[str, int, int], tuple[str, set[str]]] = {}


def _module_digest(path: Path) -> tuple[str, set[str]]:
    """(digest of the syntax tree without docstrings, uslib modules imported) of one source file.

    Parsing and dumping a module's tree costs about 0.1 s, paid again in every
    chapter's kernel. Like Python's own bytecode cache, the result is kept in
    the module's ``__pycache__`` folder, under the SHA-256 of the source bytes
    (and the Python version, whose ``ast.dump`` it is): any edit makes a new
    name, so a stale entry is never read. An unreadable or unwritable entry is
    ignored and the tree is parsed.
    """
    st = path.stat()
    ck = (str(path), st.st_mtime_ns, st.st_size)
    if ck in _SOURCE_CACHE:
        return _SOURCE_CACHE[ck]
    source = path.read_bytes()
    tag = f"py{sys.version_info[0]}{sys.version_info[1]}-{hashlib.sha256(source).hexdigest()[:32]}"
    memo = path.parent / "__pycache__" / f"{path.stem}.uslib-ast-{tag}.json"
    try:
        entry = json.loads(memo.read_text())
        digest, deps = str(entry["digest"]), set(entry["imports"])
    except (OSError, ValueError, KeyError, TypeError):
        tree = ast.parse(source, filename=str(path))
        deps = _imports(tree)
        digest = hashlib.sha256(ast.dump(_strip_docstrings(tree)).encode()).hexdigest()
        try:
            with atomic_path(memo) as tmp:
                tmp.write_text(json.dumps({"digest": digest, "imports": sorted(deps)}))
        except OSError:
            pass
    _SOURCE_CACHE[ck] = (digest, deps)
    return digest, deps


def stage_modules(module: str, *, package_dir: str | os.PathLike | None = None) -> list[str]:
    """``module`` and every ``uslib`` module it imports, transitively (infrastructure excluded).

    Examples
    --------
    >>> "reconstruction" in stage_modules("augmentation")
    True
    >>> "store" in stage_modules("features")
    False
    """
    root = Path(package_dir) if package_dir is not None else PACKAGE_DIR
    seen: list[str] = []
    todo = [module]
    while todo:
        m = todo.pop()
        if m in seen or (m in INFRASTRUCTURE and m != module):
            continue
        path = root / f"{m}.py"
        if not path.is_file():
            continue
        seen.append(m)
        todo.extend(sorted(_module_digest(path)[1]))
    return sorted(seen)


def code_fingerprint(module: str, *, packages: Sequence[str] = (), package_dir: str | os.PathLike | None = None) -> str:
    """Fingerprint of the code that produces a stage's artefacts.

    Hashes the syntax tree (docstrings and comments excluded) of ``module``
    and of every ``uslib`` module it imports (:func:`stage_modules`), and
    the installed versions of ``packages``. Editing the computation in any
    of them changes the fingerprint; editing prose does not.

    Parameters
    ----------
    module : str
        A ``uslib`` module name, e.g. ``"evaluation"``.
    packages : sequence of str
        Distribution names whose versions are part of the code
        (e.g. ``("scikit-learn", "numpy")``).
    package_dir : path, optional
        Where the ``uslib`` sources are read (default :data:`PACKAGE_DIR`).

    Examples
    --------
    >>> len(code_fingerprint("evaluation"))
    16
    >>> code_fingerprint("evaluation") == code_fingerprint("evaluation", packages=("numpy",))
    False
    """
    from importlib import metadata

    root = Path(package_dir) if package_dir is not None else PACKAGE_DIR
    parts = {m: _module_digest(root / f"{m}.py")[0] for m in stage_modules(module, package_dir=root)}
    versions = {}
    for p in packages:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    return key(parts, versions)


# --------------------------------------------------------------------------- #
# Atomic, verified I/O
# --------------------------------------------------------------------------- #


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
    """Read every array of an .npz file (``allow_pickle=False``), checking each member's CRC.

    Raises
    ------
    DamagedArtefact
        If the file is truncated, not a zip file, or a member fails its CRC.
    FileNotFoundError
        If there is no file.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, KeyError) as exc:
        raise DamagedArtefact(path, f"{type(exc).__name__}: {exc}") from exc


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_canonical(obj), indent=2, default=str) + "\n")
    return path


def load_json(path: str | os.PathLike) -> Any:
    """Read a JSON file.

    Raises
    ------
    FileNotFoundError
        If there is no such path.
    DamagedArtefact
        If the file is not valid JSON (truncated, empty, undecodable bytes) or
        a folder stands in its place.
    """
    path = Path(path)
    text = _read_bytes(path)
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DamagedArtefact(path, f"not valid JSON ({exc})") from exc


def _read_bytes(path: Path) -> bytes:
    """The bytes of ``path``; a folder (or anything else unreadable as a file) there is a :class:`DamagedArtefact`."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise
    except IsADirectoryError as exc:
        raise DamagedArtefact(path, "a folder stands where a file belongs") from exc
    except OSError as exc:
        raise DamagedArtefact(path, f"unreadable ({type(exc).__name__}: {exc})") from exc


def _seal_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def seal(path: str | os.PathLike) -> Path:
    """Write ``<path>.sha256`` holding the SHA-256 of ``path`` (after ``path`` is complete)."""
    path = Path(path)
    side = _seal_path(path)
    with atomic_path(side) as tmp:
        tmp.write_text(f"{_sha256_file(path)}  {path.name}\n")
    return side


_HEX64 = frozenset("0123456789abcdef")


def _is_sha256(text: Any) -> bool:
    return isinstance(text, str) and len(text) == 64 and set(text) <= _HEX64


def sealed_digest(path: str | os.PathLike) -> str:
    """The SHA-256 recorded in ``path``'s seal (:func:`seal`); after :func:`verify`, the file's own.

    Raises
    ------
    DamagedArtefact
        Naming ``path``, if there is no seal, or the seal is not one (empty,
        undecodable bytes, no 64-digit hexadecimal digest, a folder).
    """
    path = Path(path)
    side = _seal_path(path)
    try:
        raw = _read_bytes(side)
    except FileNotFoundError:
        raise DamagedArtefact(path, "no seal (the write did not finish)") from None
    except DamagedArtefact as exc:
        raise DamagedArtefact(path, f"its seal {side.name} is damaged ({exc.reason})") from exc
    try:
        words = raw.decode("ascii").split()
    except UnicodeDecodeError:
        words = []
    if not words or not _is_sha256(words[0]):
        raise DamagedArtefact(path, f"its seal {side.name} holds no SHA-256 digest")
    return words[0]


def verify(path: str | os.PathLike) -> Path:
    """Check ``path`` against its seal (:func:`seal`).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist (not yet computed).
    DamagedArtefact
        If the seal is missing (the write was interrupted) or damaged
        (:func:`sealed_digest`), a folder stands where the file belongs, or the
        content differs.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    if not path.is_file():
        raise DamagedArtefact(path, "a folder stands where a file belongs" if path.is_dir() else "not a file")
    expected = sealed_digest(path)
    try:
        actual = _sha256_file(path)
    except OSError as exc:
        raise DamagedArtefact(path, f"unreadable ({type(exc).__name__}: {exc})") from exc
    if actual != expected:
        raise DamagedArtefact(path, f"content SHA-256 {actual[:12]}… differs from its seal {expected[:12]}…")
    return path


def save_csv(path: str | os.PathLike, df) -> Path:
    """Write a DataFrame as CSV atomically (no index) and seal it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    seal(path)
    return path


def load_csv(path: str | os.PathLike, **read_csv_kwargs):
    """Read a sealed CSV (:func:`save_csv`) after verifying it; raises :class:`DamagedArtefact`."""
    import pandas as pd

    verify(path)
    return pd.read_csv(path, **read_csv_kwargs)


def seal_dir(folder: str | os.PathLike) -> Path:
    """Write ``SEAL`` in ``folder``: the SHA-256 of every other file in it. Written last."""
    folder = Path(folder)
    files = {
        p.name: _sha256_file(p)
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != SEAL and not p.name.startswith(".")
    }
    return save_json(folder / SEAL, {"files": files})


def verify_dir(folder: str | os.PathLike) -> Path:
    """Check every file of a sealed folder (:func:`seal_dir`).

    The seal must be ``{"files": {name: sha256, ...}}`` naming at least one
    file, and every file of the folder (other than hidden ones) must be named
    in it: a seal of another shape, or one that leaves a file out, vouches
    for nothing.

    Raises
    ------
    FileNotFoundError
        If the folder does not exist.
    DamagedArtefact
        Naming the folder, if the seal is missing, unreadable or of the wrong
        shape, or a file is missing, unsealed or differs.
    """
    folder = Path(folder)
    if not folder.is_dir():
        if folder.exists():
            raise DamagedArtefact(folder, "a file stands where a sealed folder belongs")
        raise FileNotFoundError(folder)
    seal_file = folder / SEAL
    if not seal_file.exists():
        raise DamagedArtefact(folder, "no seal (the write did not finish)")
    try:
        content = load_json(seal_file)
    except DamagedArtefact as exc:
        raise DamagedArtefact(folder, f"its seal {SEAL} is damaged ({exc.reason})") from exc
    files = content.get("files") if isinstance(content, dict) else None
    if (
        not isinstance(files, dict)
        or not files
        or not all(isinstance(n, str) and n and "/" not in n and _is_sha256(d) for n, d in files.items())
    ):
        raise DamagedArtefact(folder, f"its seal {SEAL} is not a list of files and their SHA-256 digests")
    present = {p.name for p in folder.iterdir() if p.name != SEAL and not p.name.startswith(".")}
    unsealed = sorted(present - set(files))
    if unsealed:
        raise DamagedArtefact(folder, f"{unsealed[0]} is not in its seal")
    for name, digest in files.items():
        p = folder / name
        if not p.is_file():
            raise DamagedArtefact(folder, f"{name} is missing from the sealed folder")
        if _sha256_file(p) != digest:
            raise DamagedArtefact(folder, f"{name}: content differs from the folder's seal")
    return folder


# --------------------------------------------------------------------------- #
# Damage reports
# --------------------------------------------------------------------------- #


def report_damage(error: DamagedArtefact, *, action: str = "recomputing it", remove: bool = True) -> None:
    """Report a damaged cache file and (by default) remove it, so it is recomputed.

    Under the runner (environment variable :data:`EVENTS_ENV` set) the report
    is appended to the run's events file and printed by the runner on its
    terminal, so it never lands on a book page. Otherwise it is a
    :class:`DamagedArtefactWarning`.
    """
    path = Path(error.path)
    if remove:
        import shutil

        for p in (path, _seal_path(path)):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
                    p.unlink()
    message = f"damaged cache file {path} ({error.reason}): {action}"
    events = os.environ.get(EVENTS_ENV)
    if events:
        line = json.dumps(
            {
                "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "path": str(path),
                "reason": error.reason,
                "action": action,
            }
        )
        with open(events, "a") as fh:  # one short line per append: atomic on POSIX
            fh.write(line + "\n")
    else:
        warnings.warn(message, DamagedArtefactWarning, stacklevel=2)


def report_progress(stage: str, done: int, total: int, *, seconds: float, unit: str = "img") -> bool:
    """Tell the runner's terminal how far a long stage is; never print into a notebook.

    Under the runner (:data:`EVENTS_ENV` set) one JSON line ``{"kind":
    "progress", "stage", "done", "total", "seconds", "unit"}`` is appended to
    the run's events file; the runner reads it while the chapter runs and
    shows images done/total, the rate and the time left on its terminal.
    Without the runner nothing happens (a chapter run alone stays quiet).

    Parameters
    ----------
    stage : str
        What is progressing, e.g. ``"inception_v3 features"``.
    done, total : int
        Units done so far, and in all.
    seconds : float
        Wall time since the stage started its first unit.
    unit : str
        What a unit is (``"img"``).

    Returns
    -------
    bool
        Whether a line was written.
    """
    events = os.environ.get(EVENTS_ENV)
    if not events:
        return False
    line = json.dumps(
        {
            "kind": "progress",
            "stage": str(stage),
            "done": int(done),
            "total": int(total),
            "seconds": round(float(seconds), 3),
            "unit": str(unit),
        }
    )
    with open(events, "a") as fh:  # one short line per append: atomic on POSIX
        fh.write(line + "\n")
    return True


def read_events(path: str | os.PathLike, *, start: int = 0) -> tuple[list[dict], int]:
    """Events appended to ``path`` after byte ``start``; returns (events, new offset)."""
    path = Path(path)
    if not path.is_file():
        return [], start
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read()
    events = []
    for line in data.decode(errors="replace").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            events.append(json.loads(line))
    return events, start + len(data)


def load_or_compute(load: Callable[[], Any], compute: Callable[[], Any], *, missing=(FileNotFoundError,)) -> Any:
    """``load()``; if the artefact is missing, ``compute()``; if damaged, report, then ``compute()``."""
    try:
        return load()
    except missing:
        return compute()
    except DamagedArtefact as exc:
        report_damage(exc)
        return compute()


# --------------------------------------------------------------------------- #
# Layout
# --------------------------------------------------------------------------- #


def record_path(run_dir: str | os.PathLike) -> Path:
    """``<run_dir>/run.json``."""
    return run_path(run_dir) / "run.json"


def manifest_path(run_dir: str | os.PathLike) -> Path:
    """``<run_dir>/manifest.csv``: the image-set manifest, for readers."""
    return run_path(run_dir) / "manifest.csv"


def events_path(run_dir: str | os.PathLike, chapter: str | None = None) -> Path:
    """``<run_dir>/events.jsonl``, or ``<run_dir>/logs/<chapter>.events.jsonl`` for one chapter's kernel."""
    if chapter is None:
        return run_path(run_dir) / "events.jsonl"
    return run_path(run_dir) / "logs" / f"{chapter}.events.jsonl"


def chapter_log_path(run_dir: str | os.PathLike, chapter: str) -> Path:
    """``<run_dir>/logs/<chapter>.stderr.txt``: what a chapter wrote to standard error (kept off its page)."""
    return run_path(run_dir) / "logs" / f"{chapter}.stderr.txt"


def chapter_error_path(run_dir: str | os.PathLike, chapter: str) -> Path:
    """``<run_dir>/logs/<chapter>.error.txt``: the full traceback of a chapter that failed."""
    return run_path(run_dir) / "logs" / f"{chapter}.error.txt"


def phantom_path(run_dir: str | os.PathLike, *, n_lesions: int, seed: int, key_: str) -> Path:
    """``<run_dir>/data/phantom-n<N>-seed<S>-<key>.mat``."""
    return run_path(run_dir) / "data" / f"phantom-n{int(n_lesions)}-seed{int(seed)}-{key_}.mat"


def content_digests_path(root: str | os.PathLike, key_: str) -> Path:
    """``<root>/data/content-<key>.json``: the memoised content digests of a data file."""
    return run_path(root) / "data" / f"content-{key_}.json"


def features_root(run_dir: str | os.PathLike) -> Path:
    """``<run_dir>/features``: root of the feature caches."""
    return run_path(run_dir) / "features"


def feature_dir(root: str | os.PathLike, backbone: str, weights_fingerprint: str, precision: str = "float32") -> Path:
    """``<root>/<backbone>-<weights fingerprint>[-<precision>]``: one backbone's feature chunks.

    Features computed in another arithmetic precision than float32 (the
    profile key ``precision``) live in a folder of their own, so a bfloat16
    run never serves features to a float32 one or the other way round (their
    per-image keys differ too).

    Examples
    --------
    >>> feature_dir("f", "vgg19", "abc").name, feature_dir("f", "vgg19", "abc", "bfloat16").name
    ('vgg19-abc', 'vgg19-abc-bfloat16')
    """
    if not precision or "/" in precision or precision.startswith("."):
        raise ValueError(f"not a precision name: {precision!r}")
    suffix = "" if precision == "float32" else f"-{precision}"
    return Path(root) / f"{backbone}-{weights_fingerprint}{suffix}"


def cache_root(run_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where a run keeps its content-keyed caches (``data/``, ``features/``): ``cache_dir``, else the run directory."""
    return run_path(cache_dir) if cache_dir not in (None, "") else run_path(run_dir)


def sweep_dir(run_dir: str | os.PathLike) -> Path:
    """``<run_dir>/sweep``: the points of the run's sweeps and their summary."""
    return run_path(run_dir) / "sweep"


def sweep_point_dir(run_dir: str | os.PathLike, label: str) -> Path:
    """``<run_dir>/sweep/<label>``: one point's run directory (label e.g. ``svm_c=0.1,n_splits=5``)."""
    if not label or "/" in label or label.startswith("."):
        raise ValueError(f"not a sweep point label: {label!r}")
    return sweep_dir(run_dir) / label


def sweep_chapter_dir(point_dir: str | os.PathLike) -> Path:
    """``<point run dir>/chapters``: the executed chapters of one sweep point."""
    return run_path(point_dir) / "chapters"


def sweep_summary_path(run_dir: str | os.PathLike) -> Path:
    """``<run_dir>/sweep/summary.csv``: AUC per sweep point, backbone and Train/Test setting."""
    return sweep_dir(run_dir) / "summary.csv"


def chapter_cache_path(run_dir: str | os.PathLike, chapter: str, key_: str) -> Path:
    """``<run_dir>/chapter-cache/<chapter>-<key>.ipynb``: an executed chapter kept for reuse (:mod:`uslib.chaptercache`)."""
    if not chapter or "/" in chapter or chapter.startswith("."):
        raise ValueError(f"not a chapter name: {chapter!r}")
    return run_path(run_dir) / "chapter-cache" / f"{chapter}-{key_}.ipynb"


def results_dir(run_dir: str | os.PathLike, backbone: str, key_: str) -> Path:
    """``<run_dir>/results/<backbone>-<key>``: one Train×Test matrix."""
    return run_path(run_dir) / "results" / f"{backbone}-{key_}"


def robustness_path(run_dir: str | os.PathLike, kind: str, key_: str, backbone: str | None = None) -> Path:
    """``<run_dir>/robustness/<kind>[-<backbone>]-<key>.csv``."""
    name = f"{kind}-{backbone}-{key_}.csv" if backbone else f"{kind}-{key_}.csv"
    return run_path(run_dir) / "robustness" / name


# --------------------------------------------------------------------------- #
# The run record
# --------------------------------------------------------------------------- #


def read_run_record(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``<run_dir>/run.json`` as a dict (``{}`` if the run has not started).

    Raises
    ------
    DamagedRecord
        If the file exists but cannot be read; the message names the file
        and the way out.
    """
    path = record_path(run_dir)
    if not path.exists():
        return {}
    try:
        rec = load_json(path)
    except DamagedArtefact as exc:
        rm = "rm -r" if path.is_dir() else "rm"
        raise DamagedRecord(
            f"the run record {path} is damaged ({exc.reason}). It holds only provenance, not results: "
            f"delete it ({rm} {path}) and run again; the cached artefacts beside it are reused."
        ) from exc
    if not isinstance(rec, dict):
        raise DamagedRecord(f"the run record {path} is not a JSON object: delete it (rm {path}) and run again")
    return rec


def file_lock(path: str | os.PathLike):
    """An inter-process lock for computing ``path`` once: ``with file_lock(path): load_or_compute(...)``.

    The lock file is ``<path>.lock`` (the ``filelock`` package: ``fcntl`` on
    POSIX, ``msvcrt`` on Windows); it is released when the process ends, so
    an interrupted run leaves nothing locked.
    """
    from filelock import FileLock

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock")


def update_run_record(run_dir: str | os.PathLike, **sections: Any) -> dict[str, Any]:
    """Merge ``sections`` into ``<run_dir>/run.json`` (atomic write); return the record.

    Each keyword is a top-level section; a dict section is merged one level
    deep so that chapters can add their own entries (e.g. ``weights``). A
    value of ``None`` removes the section.

    The read, merge and write happen under ``run.json.lock`` (the
    ``filelock`` package: ``fcntl`` locks on POSIX, ``msvcrt`` on Windows),
    so chapters that run at the same time, in other processes, never lose
    each other's entries.
    """
    path = record_path(run_dir)
    with file_lock(path):
        record = read_run_record(run_dir)
        for k, v in sections.items():
            if v is None:
                record.pop(k, None)
            elif isinstance(v, dict) and isinstance(record.get(k), dict):
                record[k] = {**record[k], **v}
            else:
                record[k] = v
        save_json(path, record)
    return record
