"""Reuse of unchanged chapters: an executed notebook kept in the store, keyed by all its inputs.

A warm run (every artefact cached) still spent about a minute re-executing
every chapter with papermill, each in a fresh kernel that imports its stack
again. An executed chapter depends on

* its source notebook (the file's bytes),
* the parameters the runner passes it (those it declares, as
  :func:`uslib.run.run_chapter` passes them; the profile's ``scheduler``
  value, not the address of the cluster a run started),
* the code: every ``uslib`` source file (infrastructure included: plots and
  pages shape what a chapter shows) and the versions of the packages the
  run's provenance lists, and the Python version,
* its input artefacts: the keys of the chapters whose artefacts it reads
  (:data:`uslib.run.CHAPTER_NEEDS`, transitively), so a change upstream
  reaches every chapter below it, and the files outside the run the profile
  names (``oasbud_path``, ``patients_csv``, the weights files found for each
  backbone), by size and modification time.

:func:`chapter_keys` hashes these (:func:`uslib.store.key`) for every
chapter before any runs. :class:`ChapterCache` keeps each finished chapter's
executed notebook under ``<run_dir>/chapter-cache/<chapter>-<key>.ipynb``
(:func:`uslib.store.chapter_cache_path`; written atomically, sealed by a
SHA-256 sidecar) and, when a chapter's key is unchanged, copies it back
instead of running the chapter. The copy is then stamped by the runner with
the current run id like an executed chapter, and records the run it was
executed in (``reused_from`` in its ``uslib`` metadata).

Written here rather than with a notebook-caching library (jupyter-cache)
because the key must cover the uslib code and upstream chapters, which such
libraries do not know about, and the notebook must stay papermill's
executed, cleaned notebook that :func:`uslib.run.check_chapters` checks.

The environment variable :data:`CACHE_ENV` set to ``off`` (or ``0``)
re-executes every chapter (the test suite does, except the tests of this
module): a chapter whose result depends on something else in the
environment is not covered by the key.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import store
from .config import notebook_parameters
from .hygiene import repo_relative

__all__ = ["CACHE_ENV", "cache_enabled", "source_fingerprint", "input_files", "chapter_keys", "ChapterCache"]

#: Environment variable: ``off`` / ``0`` / ``false`` / ``no`` re-executes every chapter.
CACHE_ENV = "USLIB_CHAPTER_CACHE"

#: Packages whose versions are part of every chapter's key (those the provenance page lists).
PACKAGES = (
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "scikit-image",
    "tensorflow-cpu",
    "tensorflow",
    "keras",
    "matplotlib",
    "seaborn",
    "papermill",
    "jupyter-book",
    "myst-nb",
    "h5py",
    "pooch",
    "openvino",
    "nncf",
)


def cache_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether unchanged chapters are reused (:data:`CACHE_ENV` is not off).

    Examples
    --------
    >>> cache_enabled({}), cache_enabled({"USLIB_CHAPTER_CACHE": "off"})
    (True, False)
    """
    value = (os.environ if environ is None else environ).get(CACHE_ENV, "on")
    return value.strip().lower() not in ("off", "0", "false", "no")


def source_fingerprint(package_dir: str | os.PathLike | None = None) -> str:
    """SHA-256 (16 hex digits) of every ``uslib/*.py`` file's name and bytes, and the package versions."""
    import platform
    from importlib import metadata

    root = Path(package_dir) if package_dir is not None else store.PACKAGE_DIR
    h = hashlib.sha256()
    for p in sorted(root.glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return store.key(h.hexdigest(), versions, platform.python_version())


def _stat(path: Path | None) -> list | None:
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return [str(path), None]
    return [str(path), st.st_size, st.st_mtime_ns]


def input_files(params: Mapping[str, Any]) -> list:
    """The files outside the run that the profile names, with size and modification time (None: missing).

    ``oasbud_path`` (when the data are OASBUD), ``patients_csv``, and the
    ImageNet weights file found for each backbone
    (:func:`uslib.features.locate_weights`; None when there is none, i.e.
    random weights).
    """
    from .features import locate_weights

    out: list = []
    if params.get("data_source") == "oasbud" and params.get("oasbud_path") not in (None, "download"):
        out.append(["oasbud_path", _stat(store.resolve_path(params["oasbud_path"]))])
    if params.get("patients_csv"):
        out.append(["patients_csv", _stat(store.resolve_path(params["patients_csv"]))])
    if params.get("weights", "imagenet") == "imagenet":
        for b in params.get("backbones", ()):
            found, _, _ = locate_weights(b, weights_path=store.resolve_path(params.get("weights_path")))
            out.append([f"weights {b}", _stat(found)])
    return out


def _passed(notebook: Path, params: Mapping[str, Any]) -> dict[str, Any]:
    declared = notebook_parameters(notebook)
    passed = {k: v for k, v in params.items() if k in declared}
    if "run_dir" in passed:
        passed["run_dir"] = repo_relative(passed["run_dir"])
    return passed


def chapter_keys(
    notebooks: Sequence[str | os.PathLike],
    params: Mapping[str, Any],
    needs: Mapping[str, Sequence[str]],
    *,
    code: str | None = None,
    files: list | None = None,
) -> dict[str, str]:
    """The key of every chapter (module docstring), in file order.

    Parameters
    ----------
    notebooks : sequence of path
        Every source notebook, in file order.
    params : mapping
        The validated profile (:func:`uslib.config.load_profile`).
    needs : mapping
        Chapter -> the chapters whose artefacts it reads, transitively
        (:func:`uslib.run.chapter_needs` of all chapters); each must come
        before it.
    code, files : optional
        :func:`source_fingerprint` and :func:`input_files`, computed when None.
    """
    code = source_fingerprint() if code is None else code
    files = input_files(params) if files is None else files
    keys: dict[str, str] = {}
    for nb in map(Path, notebooks):
        upstream = {n: keys[n] for n in needs.get(nb.stem, ()) if n in keys}
        keys[nb.stem] = store.key(
            "chapter", hashlib.sha256(nb.read_bytes()).hexdigest(), _passed(nb, params), code, files, upstream
        )
    return keys


class ChapterCache:
    """Executed chapters of one run directory, reused while their keys are unchanged.

    Parameters
    ----------
    run_dir : path
    notebooks, params, needs
        As :func:`chapter_keys`.
    enabled : bool, optional
        Default :func:`cache_enabled`. When False, :meth:`restore` never
        reuses and :meth:`save` keeps nothing.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        notebooks: Sequence[str | os.PathLike],
        params: Mapping[str, Any],
        needs: Mapping[str, Sequence[str]],
        *,
        enabled: bool | None = None,
    ):
        self.run_dir = run_dir
        self.enabled = cache_enabled() if enabled is None else bool(enabled)
        self.keys = chapter_keys(notebooks, params, needs) if self.enabled else {}

    def path(self, stem: str) -> Path:
        """Where chapter ``stem``'s executed notebook is kept for its current key."""
        return store.chapter_cache_path(self.run_dir, stem, self.keys[stem])

    def restore(self, stem: str, out: str | os.PathLike) -> bool:
        """Copy the kept executed notebook of ``stem`` to ``out`` if its key is unchanged; True when done.

        The copy records the run it was executed in (``reused_from``) and its
        key (``chapter_key``) in its ``uslib`` metadata; the caller stamps it with
        the current run (:func:`uslib.run.stamp_chapter`). A kept notebook
        whose seal does not match is reported (:func:`uslib.store.report_damage`)
        and the chapter runs.
        """
        import nbformat

        if not self.enabled or stem not in self.keys:
            return False
        kept = self.path(stem)
        if not kept.is_file():
            return False
        try:
            store.verify(kept)
            nb = nbformat.read(kept, as_version=4)
        except store.DamagedArtefact as exc:
            store.report_damage(exc, action="running the chapter")
            return False
        meta = nb.metadata.get("uslib", {})
        origin = meta.get("reused_from") or meta.get("run_id")
        nb.metadata["uslib"] = {**meta, "reused_from": origin, "chapter_key": self.keys[stem]}
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with store.atomic_path(out) as tmp:
            nbformat.write(nb, str(tmp))
        return True

    def save(self, stem: str, out: str | os.PathLike) -> Path | None:
        """Keep the finished, stamped executed notebook ``out`` of ``stem`` under its key; drop older keys."""
        import shutil

        if not self.enabled or stem not in self.keys:
            return None
        kept = self.path(stem)
        if not kept.is_file():
            kept.parent.mkdir(parents=True, exist_ok=True)
            with store.atomic_path(kept) as tmp:
                shutil.copyfile(out, tmp)
            store.seal(kept)
        for old in kept.parent.glob(f"{stem}-*.ipynb"):
            if old != kept and old.stem.rpartition("-")[0] == stem:
                old.unlink(missing_ok=True)
                Path(f"{old}.sha256").unlink(missing_ok=True)
        return kept
