"""Execute the chapters with papermill and build the book.

``python -m uslib run --profile params/default.yaml`` runs every notebook in
``notebooks/`` in order into ``book/chapters/``, passing each the profile's
values for the parameters it declares, records provenance and stage timings
in ``<run_dir>/run.json``, writes the generated reference pages (parameter
table, provenance) and builds the HTML book with Jupyter Book
(``execute_notebooks: off``: the book shows exactly what the runner computed).
A chapter that fails stops the run and the book is not built.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from . import __version__
from .store import load_json, save_json
from .config import REPO_ROOT, load_profile, resolve_path

__all__ = [
    "NOTEBOOK_DIR",
    "CHAPTER_DIR",
    "chapters",
    "notebook_parameters",
    "run_chapter",
    "run_profile",
    "build_book",
    "provenance",
    "update_run_record",
]

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
CHAPTER_DIR = REPO_ROOT / "book" / "chapters"
KERNEL_NAME = "python3"

#: Packages whose versions go into the provenance record.
PACKAGES = (
    "numpy", "scipy", "pandas", "scikit-learn", "scikit-image", "tensorflow-cpu",
    "tensorflow", "keras", "matplotlib", "seaborn", "papermill", "jupyter-book",
    "myst-nb", "h5py", "pooch",
)


def chapters(notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The source notebooks, in book order (their file names sort in order)."""
    return sorted(p for p in Path(notebook_dir).glob("[0-9][0-9]_*.ipynb"))


def notebook_parameters(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Parameters declared in a notebook's ``parameters`` cell.

    Returns
    -------
    dict
        name -> {"default": literal text, "type": inferred type, "help": comment}.
    """
    import papermill as pm

    info = pm.inspect_notebook(str(path))
    return {
        name: {"default": p["default"], "type": p["inferred_type_name"], "help": p["help"]}
        for name, p in info.items()
    }


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    from importlib import metadata

    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_commit() -> str | None:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def provenance() -> dict[str, Any]:
    """Software and machine facts recorded with every run."""
    return {
        "uslib": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "packages": package_versions(),
        "git_commit": git_commit(),
    }


def update_run_record(run_dir: str | os.PathLike, **sections: Any) -> dict[str, Any]:
    """Merge ``sections`` into ``<run_dir>/run.json`` (atomic write); return the record.

    Each keyword is a top-level section; a dict section is merged one level
    deep so that chapters can add their own entries (e.g. ``weights``).
    """
    path = Path(run_dir) / "run.json"
    record = load_json(path) if path.exists() else {}
    for k, v in sections.items():
        if isinstance(v, dict) and isinstance(record.get(k), dict):
            record[k] = {**record[k], **v}
        else:
            record[k] = v
    save_json(path, record)
    return record


def run_chapter(
    notebook: str | os.PathLike,
    params: dict[str, Any],
    *,
    output_dir: str | os.PathLike = CHAPTER_DIR,
    cell_timeout_s: float | None = None,
) -> Path:
    """Execute one notebook with the profile's values for its declared parameters.

    Parameters not declared by the notebook are not passed. Returns the path of
    the executed notebook. Raises ``papermill.PapermillExecutionError`` if a
    cell fails (the executed notebook, with the traceback, is still written).
    """
    import papermill as pm

    notebook = Path(notebook)
    declared = notebook_parameters(notebook)
    passed = {k: v for k, v in params.items() if k in declared}
    if "run_dir" in passed:
        passed["run_dir"] = str(resolve_path(passed["run_dir"]))
    out = Path(output_dir) / notebook.name
    out.parent.mkdir(parents=True, exist_ok=True)
    timeout = cell_timeout_s if cell_timeout_s is not None else params.get("cell_timeout_s", 3600)
    pm.execute_notebook(
        str(notebook),
        str(out),
        parameters=passed,
        kernel_name=KERNEL_NAME,
        cwd=str(REPO_ROOT),
        execution_timeout=timeout,
        progress_bar=False,
        log_output=False,
        report_mode=False,
    )
    return out


def run_profile(
    profile: str | os.PathLike,
    *,
    only: Iterable[str] | None = None,
    output_dir: str | os.PathLike = CHAPTER_DIR,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Execute the chapters of a profile in order; record timings in run.json.

    Parameters
    ----------
    profile : str or path
        Profile name or YAML path.
    only : iterable of str, optional
        Run only chapters whose file name starts with one of these prefixes
        (e.g. ``["05"]``).
    output_dir : path
        Where the executed notebooks go (``book/chapters/``).
    overrides : dict, optional
        Parameter values that replace the profile's (e.g. another ``run_dir``).
    """
    params = load_profile(profile, overrides=overrides)
    # Kernels inherit the environment: quiet TensorFlow's C++ logging, use oneDNN.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    rdir = resolve_path(params["run_dir"])
    rdir.mkdir(parents=True, exist_ok=True)
    update_run_record(
        rdir,
        profile=params.get("profile"),
        parameters=params,
        provenance=provenance(),
        started=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    timings: dict[str, float] = {}
    for nb in chapters():
        if only and not any(nb.name.startswith(o) for o in only):
            continue
        t0 = time.perf_counter()
        print(f"[uslib] {nb.stem}: running", flush=True)
        try:
            run_chapter(nb, params, output_dir=output_dir)
        finally:
            timings[nb.stem] = round(time.perf_counter() - t0, 2)
            update_run_record(rdir, stage_seconds={nb.stem: timings[nb.stem]})
        print(f"[uslib] {nb.stem}: done in {timings[nb.stem]:.1f} s", flush=True)
    update_run_record(rdir, finished=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    return {"params": params, "run_dir": rdir, "stage_seconds": timings}


def build_book(root: str | os.PathLike = REPO_ROOT, *, strict: bool = True) -> Path:
    """``jupyter-book build`` of ``root`` (the repository root); returns ``_build/html/index.html``.

    With ``strict`` every Sphinx warning is an error (``-W --keep-going``).
    """
    root = Path(root)
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()",
           "build", str(root), "--builder", "html"]
    if strict:
        cmd += ["-W", "--keep-going"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root)
    if proc.returncode != 0:
        raise RuntimeError(f"jupyter-book build failed (exit {proc.returncode}); see the log above")
    index = root / "_build" / "html" / "index.html"
    print(f"[uslib] book built in {time.perf_counter() - t0:.1f} s: {index}", flush=True)
    return index


def main_run(profile: str, *, only: list[str] | None = None, build: bool = True) -> int:
    from .pages import write_generated_pages

    t0 = time.perf_counter()
    result = run_profile(profile, only=only)
    write_generated_pages(result["run_dir"])
    if build:
        t1 = time.perf_counter()
        build_book()
        update_run_record(result["run_dir"], stage_seconds={"book_build": round(time.perf_counter() - t1, 2)})
    total = time.perf_counter() - t0
    update_run_record(result["run_dir"], stage_seconds={"total": round(total, 2)})
    print(f"[uslib] total {total:.1f} s", flush=True)
    return 0
