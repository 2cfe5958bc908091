"""Where a run may write: the run directory's location checked, created and held.

One job: a run (or cache) directory is never ``/``, a system folder or an
existing file (:func:`location_problem`, :func:`system_folder`); it is
resolved against the repository root and created only when it may be
(:func:`run_path`); and one ``uslib run`` at a time holds it
(:func:`run_lock`, the ``filelock`` package, so a killed run's lock never
blocks). It imports nothing from ``uslib``: :mod:`uslib.store` (the layout
inside the directory) builds on it and re-exports its names.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "REPO_ROOT",
    "resolve_path",
    "run_path",
    "UnsafeLocation",
    "SYSTEM_TREES",
    "SHARED_FOLDERS",
    "TEMP_TREES",
    "CACHE_ENTRIES",
    "system_folder",
    "location_problem",
    "RunDirectoryBusy",
    "run_lock_holder",
    "run_lock",
    "busy_message",
]

#: The repository root: the folder holding ``_config.yml`` and ``uslib/``. Relative
#: run directories and data paths are resolved against it.
REPO_ROOT = Path(__file__).resolve().parents[1]


def resolve_path(path: str | os.PathLike | None) -> Path | None:
    """Resolve ``path`` against the repository root unless it is absolute.

    Examples
    --------
    >>> resolve_path("runs/x") == REPO_ROOT / "runs" / "x"
    True
    >>> resolve_path(None) is None
    True
    """
    if path is None or path == "":
        return None
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else (REPO_ROOT / p)


def run_path(run_dir: str | os.PathLike) -> Path:
    """The run directory, resolved against the repository root and created.

    Raises
    ------
    UnsafeLocation
        If it is ``/`` or lies in a system folder (:func:`system_folder`):
        nothing is created there.
    """
    p = resolve_path(run_dir)
    if p is None:
        raise ValueError("run_dir must be a path")
    where = system_folder(p)
    if where:
        raise UnsafeLocation(f"{p} is {where}: uslib writes only into folders of its own (e.g. runs/NAME)")
    p.mkdir(parents=True, exist_ok=True)
    return p


# --------------------------------------------------------------------------- #
# Where a run may write
# --------------------------------------------------------------------------- #


class UnsafeLocation(ValueError):
    """A run or cache directory that uslib must not write into (``/``, a system folder, a file, ...)."""


#: Folders of the operating system: nothing inside them is a run directory (temporary folders excepted).
SYSTEM_TREES = (
    "/etc",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/boot",
    "/dev",
    "/proc",
    "/sys",
    "/var",
    "/run",
    "/snap",
    "/System",
    "/Library",
    "/private/etc",
    "/private/var",
)
#: Folders that hold others' folders: never a run directory themselves (what is inside them may be).
SHARED_FOLDERS = (
    "/",
    "/home",
    "/Users",
    "/root",
    "/mnt",
    "/media",
    "/srv",
    "/opt",
    "/tmp",
    "/var/tmp",
    "/private/tmp",
    "/dev/shm",
)
#: Temporary folders, where a run directory may be although they lie in a system folder.
TEMP_TREES = ("/tmp", "/var/tmp", "/dev/shm", "/private/tmp", "/private/var/folders", "/var/folders")
#: What a run directory holds (the layout above): a folder that holds nothing else is an existing run or
#: cache directory even without a run record.
CACHE_ENTRIES = frozenset(
    {
        "run.json",
        "run.json.lock",
        "run.lock",
        "run.owner.json",
        "events.jsonl",
        "logs",
        "data",
        "features",
        "results",
        "robustness",
        "sweep",
        "manifest.csv",
        "manifest.csv.sha256",
        "chapters",
    }
)


def _within(p: Path, tree: str) -> bool:
    return p == Path(tree) or Path(tree) in p.parents


def system_folder(path: str | os.PathLike) -> str | None:
    """What makes ``path`` a folder uslib never writes into, in words; None when it may.

    ``path`` as given and with its links resolved are both checked against
    :data:`SHARED_FOLDERS` (the folder itself) and :data:`SYSTEM_TREES`
    (anything inside them, except temporary folders, :data:`TEMP_TREES` and
    the system's, and the repository and the user's home wherever they are).

    Examples
    --------
    >>> system_folder("/"), system_folder("/etc/x"), system_folder("/home"), system_folder("/home/me/runs/a")
    ('the root folder', 'inside the system folder /etc', 'a shared system folder', None)
    """
    temp = (*TEMP_TREES, tempfile.gettempdir())
    home = Path.home()
    own = [REPO_ROOT] + ([home] if str(home) not in SHARED_FOLDERS and home != Path("/") else [])
    given = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    for p in dict.fromkeys((given, given.resolve())):
        if p == Path("/"):
            return "the root folder"
        if str(p) in SHARED_FOLDERS:
            return "a shared system folder"
        if any(_within(p, t) for t in (*temp, *own)) and p != Path(tempfile.gettempdir()):
            continue  # a temporary folder, the repository or the user's home (wherever they are)
        for tree in SYSTEM_TREES:
            if _within(p, tree):
                return f"inside the system folder {tree}"
    return None


def location_problem(path: str | os.PathLike, *, kind: str = "run directory") -> str | None:
    """Why ``path`` cannot be a run (or cache) directory, in words; None when it can.

    It can be a folder that does not exist yet, an empty folder, or an
    existing uslib run directory (one that holds a run record, ``run.json``,
    or nothing but what a run directory holds, :data:`CACHE_ENTRIES`). It can never be
    ``/`` or a system folder (:func:`system_folder`), nor an existing file.

    Examples
    --------
    >>> location_problem("/etc")
    '/etc is inside the system folder /etc: choose a folder of your own, e.g. runs/NAME'
    """
    p = resolve_path(path)
    if p is None:
        return None
    where = system_folder(p)
    if where:
        return f"{p} is {where}: choose a folder of your own, e.g. runs/NAME"
    if p.exists() and not p.is_dir():
        return f"{p} is an existing file, not a folder"
    for parent in p.parents:  # a file where a parent folder belongs
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is an existing file, not a folder"
            break
    if p.is_dir():
        try:
            entries = {e.name for e in p.iterdir() if not e.name.startswith(".")}
        except OSError as exc:
            return f"{p} cannot be read ({exc.strerror or type(exc).__name__})"
        if entries and "run.json" not in entries and not entries <= CACHE_ENTRIES:
            return f"{p} holds other files and is not a uslib {kind} (no run.json): choose a new or empty folder"
    return None


class RunDirectoryBusy(RuntimeError):
    """Another ``uslib run`` holds the run directory; the message names it (pid, start time)."""


def _owner_path(run_dir: Path) -> Path:
    return run_dir / "run.owner.json"


def _write_owner(run_dir: Path, owner: dict[str, Any]) -> None:
    """Write ``run.owner.json`` atomically (a temporary file renamed into place)."""
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".run.owner.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(owner, f)
        os.replace(tmp, _owner_path(run_dir))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_lock_holder(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run that holds ``run_dir`` now (``pid``, ``started``, ``profile``), or None.

    None also when the holder is this process (its own run asks).

    A lock left by a killed run holds nothing: the operating system released
    it with the process (the ``filelock`` package: ``fcntl`` on POSIX).
    Nothing is created when the folder does not exist.
    """
    from filelock import FileLock, Timeout

    p = resolve_path(run_dir)
    if p is None or not (p / "run.lock").exists():
        return None
    lock = FileLock(str(p / "run.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        try:
            owner = json.loads(_owner_path(p).read_text())
        except (OSError, ValueError):
            owner = {}
        owner = owner if isinstance(owner, dict) else {}
        return None if owner.get("pid") == os.getpid() else owner  # this process's own run holds it
    lock.release()
    return None


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike, **about: Any) -> Iterator[Path]:
    """Hold ``<run_dir>/run.lock`` for one run: a second run of the same directory is refused at once.

    The holder's pid, start time and ``about`` (e.g. the profile) are written
    to ``run.owner.json`` for the refusal to name. The lock goes with the
    process, so a killed run never blocks the next one.

    Raises
    ------
    RunDirectoryBusy
        Naming the run that holds the directory (pid and start time).
    """
    from filelock import FileLock, Timeout

    p = run_path(run_dir)
    lock = FileLock(str(p / "run.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunDirectoryBusy(busy_message(p, run_lock_holder(p) or {})) from None
    try:
        _write_owner(
            p,
            {"pid": os.getpid(), "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **about},
        )
        yield p
    finally:
        _owner_path(p).unlink(missing_ok=True)
        lock.release()


def busy_message(run_dir: Path, owner: dict[str, Any]) -> str:
    """The one line that refuses a second run of ``run_dir``, naming the first (pid, start time)."""
    who = f"pid {owner.get('pid', '?')}, started {owner.get('started', '?')}"
    if owner.get("profile"):
        who += f", profile {owner['profile']}"
    return (
        f"run_dir {run_dir} is in use by another uslib run ({who}): wait for it to finish, stop it, "
        "or choose another run_dir"
    )
