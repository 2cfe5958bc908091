"""Execute the chapters with papermill and build the book.

``python -m uslib run --profile params/default.yaml`` runs every notebook in
``notebooks/`` in order into ``book/chapters/``, passing each the profile's
values for the parameters it declares, records provenance and stage timings
in ``<run_dir>/run.json``, writes the generated reference pages (parameter
table, provenance) and builds the HTML book with Jupyter Book
(``execute_notebooks: off``: the book shows exactly what the runner computed).

At about 1,040 lines it is over the house's 900-line guide: it is the one
place that starts, watches, records and stops chapters (lanes, the run lock,
the event tail, failure lines, the chapter cache hook, the book build), and
the chapter graph (:mod:`uslib.chaptergraph`) and the chapter cache
(:mod:`uslib.chaptercache`) are already out of it.
A chapter that fails stops the run (no other chapter starts) and the book is
not built.

**Chapters side by side.** Up to ``jobs`` chapters run at once
(``--jobs``; by default as many as the chapter graph allows, at most the
CPU count): a chapter starts once the chapters whose artefacts it reads have
finished (:data:`CHAPTER_NEEDS`), the longest remaining path first
(:func:`lane_priority`, from the previous run's timings). What a chapter
shows does not depend on this: every artefact is keyed by its inputs and
written atomically, the run record is updated under a lock, and each
kernel reports to an events file of its own. With ``jobs=1`` the chapters
run one after another in file order.

**One run per book.** Every run gets a run id (recorded in ``run.json``);
each executed chapter carries it in its notebook metadata (``uslib``:
run id, profile, run directory, status), and :func:`check_chapters` refuses
to build a book from chapters of different runs, from a chapter that failed
or was interrupted, or from chapters whose run is not the one the run
directory records. ``run.json`` records each stage's status (``running``,
``finished``, ``failed``, ``interrupted``) and seconds.

**The terminal shows progress, not noise.** While a chapter runs, the
runner reads the run's events file (:func:`uslib.store.report_progress`,
:func:`uslib.store.report_damage`) and prints each long stage's progress
(images done/total, images/s, time left) on its own terminal, never into
the notebook (:func:`format_progress`). Kernels talk to the runner over IPC
sockets (:class:`IPCKernelManager`), not TCP, so ipykernel has no
unencrypted-TCP warning to print.
"""

from __future__ import annotations

import ast
import contextlib
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from . import __version__, chaptercache, envvars, scheduler, store
from .chaptergraph import CHAPTER_NEEDS, TYPICAL_SECONDS, chapter_needs, chapter_sorter, lane_priority
from .hygiene import path_replacements, replace_paths, repo_relative
from .config import CHAPTER_DIR, NOTEBOOK_DIR, REPO_ROOT, chapters, load_profile, notebook_parameters, resolve_path

__all__ = [
    "NOTEBOOK_DIR",
    "CHAPTER_DIR",
    "chapters",
    "notebook_parameters",
    "run_chapter",
    "run_profile",
    "build_book",
    "provenance",
    "check_chapters",
    "BookError",
    "clean_chapter",
    "parameters_used_markdown",
    "format_progress",
    "CHAPTER_NEEDS",
    "chapter_needs",
    "lane_priority",
    "default_jobs",
    "EventTail",
    "IPCKernelManager",
]

KERNEL_NAME = "python3"

#: Packages whose versions go into the provenance record.
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
)


class BookError(RuntimeError):
    """The executed chapters cannot be published as one book."""


def _kernel_manager_class():
    """A Jupyter kernel manager whose kernels listen on IPC (Unix) sockets instead of TCP.

    The kernel is on this machine, so IPC is enough and is reachable by this
    user only; over TCP every chapter's kernel prints ipykernel's warning
    about unencrypted TCP on the runner's terminal. Made on first use, so
    ``import uslib.run`` stays cheap.
    """
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class IPCKernelManager(AsyncKernelManager):
        #: Variables added to the kernel's environment (a subclass per chapter sets them: :func:`_chapter_kernels`).
        extra_env: dict[str, str] = {}
        #: Key (the executed notebook's path) under which the kernel's process id is kept while it runs.
        chapter: str | None = None
        #: Niceness added to the kernel (POSIX): a chapter running beside a longer one yields the CPU to it.
        nice: int = 0

        async def start_kernel(self, **kw):
            if self.extra_env:
                kw["env"] = {**(kw.get("env") or os.environ), **self.extra_env}
            out = await super().start_kernel(**kw)
            pid = getattr(self.provisioner, "pid", None)
            if self.chapter and pid:
                _KERNEL_PIDS[self.chapter] = int(pid)
            if self.nice and pid and hasattr(os, "setpriority"):
                with contextlib.suppress(OSError):  # the threads the kernel starts from now on inherit it
                    os.setpriority(os.PRIO_PROCESS, int(pid), os.getpriority(os.PRIO_PROCESS, int(pid)) + self.nice)
            return out

        @default("transport")
        def _default_transport(self):
            return "tcp" if os.name == "nt" else "ipc"  # ZeroMQ has no IPC transport on Windows

        @default("ip")
        def _default_ip(self):  # the sockets' path prefix: short, since a Unix socket path has ~107 bytes
            import uuid

            return os.path.join(_ipc_dir(), f"k-{uuid.uuid4().hex[:8]}")

    return IPCKernelManager


_IPC_DIR: list[str] = []
#: Process id of each running chapter's kernel (executed notebook path -> pid), to interrupt chapters run
#: side by side. Keyed by path, not name, so that sweep points running the same chapter at once stay apart.
_KERNEL_PIDS: dict[str, int] = {}


def _chapter_kernels(chapter: str, env: Mapping[str, str], nice: int = 0):
    """The IPC kernel manager class for one chapter: its kernel gets ``env`` and ``nice``, registered under ``chapter``."""
    base = _kernel_manager_class()
    return type(base.__name__, (base,), {"extra_env": dict(env), "chapter": chapter, "nice": int(nice)})


def _ipc_dir() -> str:
    """A private folder for this process's kernel sockets, in a short temporary path; removed at exit."""
    if not _IPC_DIR:
        import atexit
        import shutil
        import tempfile

        base = tempfile.gettempdir()
        d = tempfile.mkdtemp(prefix="uslib-", dir=base if len(base) <= 40 else "/tmp")
        atexit.register(shutil.rmtree, d, ignore_errors=True)
        _IPC_DIR.append(d)
    return _IPC_DIR[0]


def __getattr__(name: str):  # IPCKernelManager, built lazily
    if name == "IPCKernelManager":
        return _kernel_manager_class()
    raise AttributeError(name)


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def format_progress(event: dict[str, Any]) -> str:
    """One terminal line for a progress event (:func:`uslib.store.report_progress`).

    Examples
    --------
    >>> format_progress({"stage": "vgg19 features", "done": 300, "total": 1800, "seconds": 60.0, "unit": "img"})
    'vgg19 features: 300/1800 img (17 %), 5.0 img/s, about 5 min 00 s left'
    >>> format_progress({"stage": "vgg19 features", "done": 0, "total": 1800, "seconds": 0.0, "unit": "img"})
    'vgg19 features: 0/1800 img (0 %), starting'
    """
    done, total = int(event.get("done", 0)), int(event.get("total", 0))
    seconds, unit = float(event.get("seconds", 0.0)), event.get("unit", "img")
    share = f"{done / total:.0%}".replace("%", " %") if total else "?"
    head = f"{event.get('stage', '?')}: {done}/{total} {unit} ({share})"
    if done <= 0 or seconds <= 0:
        return f"{head}, starting"
    rate = done / seconds
    if done >= total:
        return f"{head}, {rate:.1f} {unit}/s, done in {_duration(seconds)}"
    return f"{head}, {rate:.1f} {unit}/s, about {_duration((total - done) / rate)} left"


class EventTail:
    """Prints what the chapters append to the run's events file, while they run.

    :meth:`poll` reads the lines appended since the last call and prints
    damage reports at once and progress at most every ``every_s`` seconds per
    stage (always the first and the last of a stage); :meth:`running` does
    that in a thread every ``interval_s`` seconds for the duration of a
    ``with`` block.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        offset: int = 0,
        prefix: str = "[uslib]",
        every_s: float = 10.0,
        interval_s: float = 2.0,
        stream=None,
        clock=time.monotonic,
    ):
        import threading

        self.path, self.offset, self.prefix = Path(path), int(offset), prefix
        self.every_s, self.interval_s, self.clock = float(every_s), float(interval_s), clock
        self.stream = stream
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def _print(self, text: str) -> None:
        stream = self.stream or sys.stderr
        stream.write(f"{self.prefix} {text}\n")  # one write: lines of chapters side by side never merge
        stream.flush()

    def poll(self) -> int:
        """Print what is new; return the number of lines printed."""
        with self._lock:
            events, self.offset = store.read_events(self.path, start=self.offset)
            printed = 0
            for e in events:
                if e.get("kind") == "progress":
                    stage, now = str(e.get("stage")), self.clock()
                    last = self._last.get(stage)
                    final = int(e.get("done", 0)) >= int(e.get("total", 0))
                    if last is None or final or now - last >= self.every_s:
                        self._print(format_progress(e))
                        self._last[stage] = now
                        printed += 1
                    if final:
                        self._last.pop(stage, None)
                else:
                    self._print(f"warning: damaged cache file {e.get('path')} ({e.get('reason')}): {e.get('action')}")
                    printed += 1
            return printed

    @contextlib.contextmanager
    def running(self):
        import threading

        stop = threading.Event()

        def loop():
            while not stop.wait(self.interval_s):
                with contextlib.suppress(Exception):  # a display problem must not stop a run
                    self.poll()

        t = threading.Thread(target=loop, name="uslib-event-tail", daemon=True)
        t.start()
        try:
            yield self
        finally:
            stop.set()
            t.join()
            self.poll()


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
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
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


def run_chapter(
    notebook: str | os.PathLike,
    params: dict[str, Any],
    *,
    output_dir: str | os.PathLike = CHAPTER_DIR,
    cell_timeout_s: float | None = None,
    kernel_env: Mapping[str, str] | None = None,
    nice: int = 0,
) -> Path:
    """Execute one notebook with the profile's values for its declared parameters.

    Parameters not declared by the notebook are not passed. ``kernel_env``
    is added to the kernel's environment (the runner gives each chapter its
    own events file); ``nice`` is added to the kernel's niceness (POSIX; the
    runner lowers a chapter that runs beside a longer one, so the longer one
    keeps the CPU). Returns the path of the executed notebook. Raises
    ``papermill.PapermillExecutionError`` if a cell fails (the executed
    notebook, with the traceback, is still written).
    """
    import papermill as pm

    notebook = Path(notebook)
    declared = notebook_parameters(notebook)
    passed = {k: v for k, v in params.items() if k in declared}
    if "run_dir" in passed:  # the kernel runs in the repository root: a relative path is exact, and portable
        passed["run_dir"] = repo_relative(passed["run_dir"])
    out = Path(output_dir) / notebook.name
    out.parent.mkdir(parents=True, exist_ok=True)
    timeout = cell_timeout_s if cell_timeout_s is not None else params.get("cell_timeout_s", 3600)
    try:
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
            kernel_manager_class=_chapter_kernels(str(out), kernel_env or {}, nice),
        )
    finally:
        _KERNEL_PIDS.pop(str(out), None)
        if out.exists():
            run_dir = params.get("run_dir")
            log = store.chapter_log_path(run_dir, notebook.stem) if run_dir else None
            cleaned = clean_chapter(out, run_dir=run_dir, log_file=log, profile=params.get("profile"))
            if cleaned["stderr"]:
                shown = repo_relative(log) if log is not None else "nowhere"
                _say(
                    f"[uslib] {notebook.stem}: {cleaned['stderr']} standard-error output(s) kept off the page, "
                    f"in {shown}"
                )
    return out


def _assignments(source: str) -> dict[str, str]:
    """``name -> source text of its value`` for the top-level ``name = value`` lines of a cell."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = ast.get_source_segment(source, node.value) or ""
    return out


def parameters_used_markdown(
    defaults: dict[str, str], used: dict[str, str], *, profile: str | None = None, chapter: str | None = None
) -> str:
    """Markdown of the note that replaces a chapter's two parameter cells on its page.

    ``defaults``: name -> value text of the chapter's ``parameters`` cell;
    ``used``: name -> value text papermill injected (absent: the default applied).

    Examples
    --------
    >>> print(parameters_used_markdown({"svm_c": "1.0", "n_splits": "5"}, {"svm_c": "10"}).splitlines()[-3])
    | `svm_c` | **`10`** | `1.0` |
    """
    source = f"`notebooks/{chapter}.ipynb`" if chapter else "the source notebook"
    who = f"with profile `{profile}`" if profile else "by the runner"
    lines = [
        ":::{admonition} Parameters of this run",
        ":class: note dropdown",
        f"This chapter ran {who}. Its `parameters` cell ({source}) holds the defaults; the runner "
        "(papermill) put this run's values in a cell right after it, which is the one that applied. Both "
        "cells are in the downloadable notebook; here they are replaced by this table (**bold**: not the "
        "default). What each parameter means: {doc}`parameters`.",
        "",
        "| parameter | value used | default |",
        "|---|---|---|",
    ]
    for name, default in defaults.items():
        value, default = used.get(name, default).replace("|", "\\|"), default.replace("|", "\\|")
        shown = f"`{value}`" if value == default else f"**`{value}`**"
        lines.append(f"| `{name}` | {shown} | `{default}` |")
    lines.append(":::")
    return "\n".join(lines)


def clean_chapter(
    path: str | os.PathLike,
    *,
    run_dir: str | os.PathLike | None = None,
    log_file: str | os.PathLike | None = None,
    profile: str | None = None,
) -> dict[str, int]:
    """Make an executed chapter publishable, in place (atomically).

    * Standard-error outputs (TensorFlow's C++ log lines, warnings, progress
      bars) leave the page: their text is appended to ``log_file`` (when
      given) and they are removed from the notebook.
    * Absolute paths in outputs and in the notebook's metadata become
      relative (:func:`path_replacements`).
    * The ``parameters`` cell and papermill's ``injected-parameters`` cell are
      tagged ``remove-cell`` (they stay in the downloadable notebook) and a
      note right after them lists the values that applied
      (:func:`parameters_used_markdown`).

    Returns
    -------
    dict
        ``stderr``: outputs moved off the page; ``paths``: paths made relative.
    """
    import nbformat

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    pairs = path_replacements(run_dir)
    moved: list[str] = []
    n_paths = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream" and o.get("name") == "stderr":
                moved.append(o.get("text", ""))
                continue
            cleaned, n = replace_paths(dict(o), pairs)
            n_paths += n
            kept.append(nbformat.from_dict(cleaned))
        cell.outputs = kept
    pm_meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):  # papermill records both notebooks' absolute paths
        if isinstance(pm_meta.get(key), str) and os.path.isabs(pm_meta[key]):
            pm_meta[key] = repo_relative(pm_meta[key])
            n_paths += 1
    meta, n = replace_paths(json.loads(json.dumps(nb.metadata)), pairs)
    nb.metadata = nbformat.from_dict(meta)
    n_paths += n
    _explain_parameter_cells(nb, profile=profile, chapter=path.stem)
    if moved and log_file is not None:
        log_file = Path(log_file)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "w") as fh:
            fh.write("".join(moved))
    with store.atomic_path(path) as tmp:
        nbformat.write(nb, str(tmp))
    return {"stderr": len(moved), "paths": n_paths}


NOTE_TAG = "uslib-parameters-used"


def _explain_parameter_cells(nb, *, profile: str | None, chapter: str) -> None:
    import nbformat

    tags = lambda c: c.metadata.get("tags", [])  # noqa: E731
    idx = {t: i for i, c in enumerate(nb.cells) for t in ("parameters", "injected-parameters") if t in tags(c)}
    if "parameters" not in idx or any(NOTE_TAG in tags(c) for c in nb.cells):
        return
    defaults = _assignments(nb.cells[idx["parameters"]].source)
    used = _assignments(nb.cells[idx["injected-parameters"]].source) if "injected-parameters" in idx else {}
    for i in idx.values():
        cell = nb.cells[i]
        if "remove-cell" not in tags(cell):
            cell.metadata["tags"] = [*tags(cell), "remove-cell"]
    note = nbformat.v4.new_markdown_cell(parameters_used_markdown(defaults, used, profile=profile, chapter=chapter))
    note.metadata["tags"] = [NOTE_TAG]
    nb.cells.insert(max(idx.values()) + 1, note)


def _new_run_id() -> str:
    import uuid

    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{uuid.uuid4().hex[:8]}"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def stamp_chapter(path: str | os.PathLike, **meta: Any) -> None:
    """Write ``meta`` into the ``uslib`` metadata of an executed notebook (atomically)."""
    import nbformat

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    nb.metadata["uslib"] = {**nb.metadata.get("uslib", {}), **meta}
    with store.atomic_path(path) as tmp:
        nbformat.write(nb, str(tmp))


def is_chapter_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a chapter's failure (a cell raised, the kernel died, a cell ran out of time)."""
    import nbclient.exceptions
    import papermill.exceptions

    return isinstance(
        exc,
        (
            papermill.exceptions.PapermillExecutionError,
            nbclient.exceptions.CellTimeoutError,
            nbclient.exceptions.DeadKernelError,
        ),
    )


def chapter_failure_line(stem: str, exc: BaseException, log: str | os.PathLike) -> str:
    """The one terminal line of a failed chapter; its full traceback is written to ``log``.

    The line names the chapter, the exception's last line and the log, e.g.
    ``[uslib] 01_data: failed: ValueError: boom (log: runs/x/logs/01_data.error.txt)``.
    """
    import traceback

    log = Path(log)
    text = getattr(exc, "traceback", None)  # papermill: the kernel's traceback, lines with ANSI colours
    if isinstance(text, list) and text:
        import re

        body = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(text))
    else:
        body = "".join(traceback.format_exception(exc))
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if ename:
        last = f"{ename}: {evalue}" if evalue else str(ename)
    else:
        last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    last = " ".join(last.split())  # the exception's message, on one line
    if len(last) > 300:
        last = last[:300] + "…"
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(body + "\n")
    except OSError:
        pass
    shown = repo_relative(log) if log.resolve().is_relative_to(REPO_ROOT) else str(log)
    return f"[uslib] {stem}: failed: {last} (log: {shown})"


#: Niceness added to a chapter's kernel while it runs beside a chapter on a longer chain.
BACKGROUND_NICE = 10


#: Environment variable that sets the number of chapters run at once (:func:`default_jobs`).
JOBS_ENV = "USLIB_JOBS"


def default_jobs(cpu_count: int | None = None, *, os_name: str = os.name) -> int:
    """Chapters run side by side by default: up to 3 (the widest point of the chapter graph), at most the CPUs.

    ``USLIB_JOBS`` overrides it. On Windows chapters run one at a time (the
    runner interrupts kernels with SIGINT, which Windows processes lack).

    Examples
    --------
    >>> default_jobs(2, os_name="posix"), default_jobs(16, os_name="posix"), default_jobs(16, os_name="nt")
    (2, 3, 1)
    """
    if os_name == "nt":
        return 1
    if envvars.read(JOBS_ENV):
        return max(1, envvars.read_int(JOBS_ENV))
    return max(1, min(3, cpu_count if cpu_count is not None else (os.cpu_count() or 1)))


def _say(line: str) -> None:
    """One line on standard output in a single write, so lines of chapters running side by side never merge."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _interrupt_kernels(executed: Iterable[str | os.PathLike]) -> None:
    """Send SIGINT to the kernels writing these executed notebooks (the running cell raises KeyboardInterrupt)."""
    import signal

    for c in executed:
        pid = _KERNEL_PIDS.get(str(c))
        if pid:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGINT)


def _run_lanes(
    stems: Sequence[str],
    needs: Mapping[str, Sequence[str]],
    priority: Mapping[str, float],
    run_one: Callable[[str, Callable[[], bool], bool], None],
    *,
    jobs: int,
    interrupt: Callable[[Iterable[str]], None],
) -> None:
    """Run ``run_one(stem, interrupted, background)`` for each chapter, up to ``jobs`` at once, after what it needs.

    Ready chapters start by ``priority``, largest first; ``background`` is
    True for a chapter that starts while a chapter of larger priority runs
    (it should yield the CPU to it: the longer chain sets the run's length).

    The first failure stops new starts; the chapters already running finish,
    then the failure is raised. A KeyboardInterrupt (Ctrl-C) interrupts the
    running chapters' kernels, waits for them to stop (a second Ctrl-C
    stops waiting) and is raised again.
    """
    import concurrent.futures as cf

    order = {s: i for i, s in enumerate(stems)}
    graph, ready = chapter_sorter(stems, needs), []
    running: dict[cf.Future, str] = {}
    failure: BaseException | None = None
    stop = {"interrupted": False}
    pool = cf.ThreadPoolExecutor(max_workers=max(1, int(jobs)), thread_name_prefix="uslib-chapter")
    try:
        while graph.is_active() or running:
            if failure is None:
                ready = sorted(
                    [*ready, *graph.get_ready()],  # one job: file order
                    key=lambda s: (-priority.get(s, 0.0) if jobs > 1 else 0.0, order[s]),
                )
                for s in ready[: max(0, int(jobs) - len(running))]:
                    ready.remove(s)
                    background = any(priority.get(r, 0.0) > priority.get(s, 0.0) for r in running.values())
                    running[pool.submit(run_one, s, lambda: stop["interrupted"], background)] = s
            if not running:
                break
            finished, _ = cf.wait(list(running), timeout=1.0, return_when=cf.FIRST_COMPLETED)
            for f in finished:
                s = running.pop(f)
                exc = f.exception()
                if exc is None:
                    graph.done(s)
                elif failure is None:
                    failure = exc
    except KeyboardInterrupt:
        stop["interrupted"] = True
        with contextlib.suppress(KeyboardInterrupt):
            while running:  # an idle kernel ignores SIGINT, so keep asking until each chapter has stopped
                interrupt(list(running.values()))
                finished, _ = cf.wait(list(running), timeout=1.0)
                for f in finished:
                    running.pop(f)
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    if failure is not None:
        raise failure


def run_profile(
    profile: str | os.PathLike,
    *,
    only: Iterable[str] | None = None,
    output_dir: str | os.PathLike = CHAPTER_DIR,
    overrides: dict[str, Any] | None = None,
    notebook_dir: str | os.PathLike = NOTEBOOK_DIR,
    fetch: bool = True,
    jobs: int | None = None,
) -> dict[str, Any]:
    """Execute the chapters of a profile, side by side where they allow; record the run in run.json.

    The whole profile is validated first (:func:`uslib.config.load_profile`),
    before any chapter starts. A full run starts a new run id; a partial run
    (``only``) continues the run recorded in the run directory when its
    parameters are the same, and starts a new one otherwise (a book then
    needs the other chapters re-run: :func:`check_chapters`).

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
    notebook_dir : path
        Where the source notebooks are.
    fetch : bool, default True
        First download what the profile lacks and may download
        (:func:`uslib.check.fetch_missing`: the OASBUD file checked by
        SHA-256, ImageNet weights checked by MD5, with progress bars), so
        that the chapters find everything in place.
    jobs : int, optional
        Chapters run at once (:func:`default_jobs` when None): each starts
        when the chapters it needs (:func:`chapter_needs`) have finished.

    Returns
    -------
    dict
        ``params``, ``run_dir``, ``run_id``, ``stage_seconds``.

    Raises
    ------
    uslib.config.ProfileError
        A path of the profile cannot serve (:func:`uslib.check.path_problems`):
        nothing is written, ``run.json`` included.
    uslib.store.RunDirectoryBusy
        Another run holds the run directory (:func:`uslib.store.run_lock`).
    """
    from .check import require_paths

    params = load_profile(profile, overrides=overrides)
    require_paths(params, source=f"profile {profile}")
    with store.run_lock(params["run_dir"], profile=params.get("profile")):
        return _run_locked(params, only=only, output_dir=output_dir, notebook_dir=notebook_dir, fetch=fetch, jobs=jobs)


def _run_locked(params: dict[str, Any], *, only, output_dir, notebook_dir, fetch: bool, jobs) -> dict[str, Any]:
    """:func:`run_profile` once the profile is valid and the run directory is this run's alone."""
    if fetch:
        from .check import fetch_missing

        fetch_missing(params)
    # Kernels inherit the environment: quiet TensorFlow's C++ logging, use oneDNN.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    rdir = store.run_path(params["run_dir"])
    previous = store.read_run_record(rdir)  # a damaged record stops here, naming the file
    only = list(only) if only else None
    same = previous.get("parameters") == params and previous.get("run_id")
    run_id = previous["run_id"] if (only and same) else _new_run_id()
    fresh = run_id != previous.get("run_id")
    if fresh:  # a new run starts with no stages and no timings of the run before
        store.update_run_record(rdir, stages=None, stage_seconds=None, finished=None, scheduler=None, cluster=None)
    store.update_run_record(
        rdir,
        run_id=run_id,
        profile=params.get("profile"),
        parameters=params,
        provenance=provenance(),
        started=_now() if fresh else previous.get("started"),
        finished=None,
        status="running",
    )
    events_file = store.events_path(rdir)
    old_env = os.environ.get(store.EVENTS_ENV)
    os.environ[store.EVENTS_ENV] = str(events_file)  # what this process itself reports (downloads, a cluster)
    timings: dict[str, float] = {}
    resources = contextlib.ExitStack()
    try:
        every = chapters(notebook_dir)
        selected = [nb for nb in every if not only or any(nb.name.startswith(o) for o in only)]
        # One cluster for the whole run (its workers keep the networks between chapters), started only
        # when a chapter that runs declares `scheduler`; the chapters get its address and start nothing.
        wanted = params.get("scheduler") if any("scheduler" in notebook_parameters(nb) for nb in selected) else None
        client = resources.enter_context(scheduler.cluster(wanted, timeout_s=params.get("scheduler_timeout_s")))
        chapter_params = params
        if client is not None:
            chapter_params = {**params, "scheduler": client.scheduler.address}
            store.update_run_record(rdir, scheduler={"spec": params["scheduler"], **scheduler.describe(client)})
        by_stem = {nb.stem: nb for nb in selected}
        needs = chapter_needs([nb.stem for nb in every], by_stem)
        priority = lane_priority(needs, {**TYPICAL_SECONDS, **(previous.get("stage_seconds") or {})})
        n_jobs = max(1, int(jobs)) if jobs is not None else default_jobs()
        kept = chaptercache.ChapterCache(rdir, every, params, chapter_needs([nb.stem for nb in every]))
        store.update_run_record(rdir, execution={"jobs": n_jobs})

        def run_one(stem: str, interrupted: Callable[[], bool], background: bool) -> None:
            nb = by_stem[stem]
            t0 = time.perf_counter()
            _say(f"[uslib] {stem}: running")
            store.update_run_record(rdir, stages={stem: {"status": "running", "started": _now()}})
            out = Path(output_dir) / nb.name
            status = "failed"
            chapter_events = store.events_path(rdir, stem)
            chapter_events.parent.mkdir(parents=True, exist_ok=True)
            chapter_events.unlink(missing_ok=True)
            tail = EventTail(chapter_events, prefix=f"[uslib] {stem}:")
            try:
                with tail.running():
                    if kept.restore(stem, out):  # unchanged notebook, parameters, code and inputs
                        _say(f"[uslib] {stem}: unchanged, reused from {repo_relative(kept.path(stem))}")
                    else:
                        run_chapter(
                            nb,
                            chapter_params,
                            output_dir=output_dir,
                            kernel_env={store.EVENTS_ENV: str(chapter_events)},
                            nice=BACKGROUND_NICE if background else 0,
                        )
                status = "finished"
            except BaseException as exc:
                status = "interrupted" if interrupted() or isinstance(exc, KeyboardInterrupt) else "failed"
                if status == "failed":
                    _say(chapter_failure_line(stem, exc, store.chapter_error_path(rdir, stem)))
                raise
            finally:
                timings[stem] = round(time.perf_counter() - t0, 2)
                if out.exists():
                    stamp_chapter(
                        out, run_id=run_id, profile=params.get("profile"), run_dir=repo_relative(rdir), status=status
                    )
                    if status == "finished":
                        kept.save(stem, out)
                store.update_run_record(
                    rdir,
                    stages={stem: {"status": status, "seconds": timings[stem], "ended": _now()}},
                    stage_seconds={stem: timings[stem]},
                    **({} if status == "finished" else {"status": status}),
                )
            _say(f"[uslib] {stem}: done in {timings[stem]:.1f} s")

        # What this process and a cluster's workers report (they inherit EVENTS_ENV) is shown too.
        runner_tail = EventTail(events_file, offset=events_file.stat().st_size if events_file.exists() else 0)
        with runner_tail.running():
            _run_lanes(
                [nb.stem for nb in selected],
                needs,
                priority,
                run_one,
                jobs=n_jobs,
                interrupt=lambda stems: _interrupt_kernels(Path(output_dir) / by_stem[s].name for s in stems),
            )
    except BaseException as exc:  # the record never stays at "running" (an unreachable scheduler, a failure)
        store.update_run_record(rdir, status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
        raise
    finally:
        resources.close()
        if old_env is None:
            os.environ.pop(store.EVENTS_ENV, None)
        else:
            os.environ[store.EVENTS_ENV] = old_env
    store.update_run_record(rdir, finished=_now(), status="finished")
    return {"params": params, "run_dir": rdir, "run_id": run_id, "stage_seconds": timings}


def check_chapters(
    chapter_dir: str | os.PathLike = CHAPTER_DIR,
    *,
    run_dir: str | os.PathLike | None = None,
    notebook_dir: str | os.PathLike = NOTEBOOK_DIR,
) -> str:
    """Check that the executed chapters make one book; return their run id.

    Every chapter of ``notebook_dir`` must have been executed into
    ``chapter_dir`` by the runner, have finished, and carry the same run id,
    which must be the run id of ``run_dir``'s ``run.json`` (by default the
    run directory the chapters name).

    Raises
    ------
    BookError
        Naming the chapters at fault and what to run.
    """
    import nbformat

    chapter_dir = Path(chapter_dir)
    problems, ids, dirs = [], {}, set()
    for nb in chapters(notebook_dir):
        out = chapter_dir / nb.name
        if not out.exists():
            problems.append(f"{nb.stem} has not been executed")
            continue
        meta = nbformat.read(out, as_version=4).metadata.get("uslib")
        if not meta or not meta.get("run_id"):
            problems.append(f"{nb.stem} was not executed by the runner (no run id)")
            continue
        if meta.get("status") != "finished":
            problems.append(f"{nb.stem} {meta.get('status', 'did not finish')} in run {meta['run_id']}")
        ids.setdefault(meta["run_id"], []).append(nb.stem)
        dirs.add(meta.get("run_dir"))
    if len(ids) > 1:
        problems.append(
            "the chapters come from different runs: "
            + "; ".join(f"run {r}: {', '.join(c)}" for r, c in sorted(ids.items()))
        )
    if not problems:
        (run_id,) = ids
        rdir = Path(run_dir) if run_dir is not None else (resolve_path(dirs.pop()) if len(dirs) == 1 else None)
        if rdir is None:
            problems.append("the chapters name different run directories")
        else:
            recorded = store.read_run_record(rdir).get("run_id")
            if recorded != run_id:
                problems.append(
                    f"the chapters come from run {run_id}, but {store.record_path(rdir)} records run "
                    f"{recorded}: the provenance page would describe another run"
                )
    if problems:
        raise BookError(
            "cannot build one book from these chapters: "
            + "; ".join(problems)
            + ". Run every chapter with one profile: python -m uslib run --profile P"
        )
    return run_id


def build_book(
    root: str | os.PathLike = REPO_ROOT, *, strict: bool = True, run_dir: str | os.PathLike | None = None
) -> Path:
    """``jupyter-book build`` of ``root`` (the repository root); returns ``_build/html/index.html``.

    The executed chapters under ``root/book/chapters`` are checked first
    (:func:`check_chapters`): a book is built from one run only. With
    ``strict`` every Sphinx warning is an error (``-W --keep-going``).
    """
    root = Path(root)
    check_chapters(root / "book" / "chapters", run_dir=run_dir)
    cmd = [
        sys.executable,
        "-c",
        "from jupyter_book.cli.main import main; main()",
        "build",
        str(root),
        "--builder",
        "html",
    ]
    if strict:
        cmd += ["-W", "--keep-going"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root)
    if proc.returncode != 0:
        raise RuntimeError(f"jupyter-book build failed (exit {proc.returncode}); see the log above")
    index = root / "_build" / "html" / "index.html"
    print(f"[uslib] book built in {time.perf_counter() - t0:.1f} s: {index}", flush=True)
    return index


def main_check(profile: str, *, params: dict[str, Any] | None = None) -> int:
    """``python -m uslib check``: print the pre-flight check; 0 when the profile can run here, else 1.

    ``params``: the profile already loaded (the runner validates it fully
    first); by default it is loaded here without the phantom's fold check,
    so the answer comes in a second or two.
    """
    from .check import format_preflight, preflight

    report = preflight(params if params is not None else load_profile(profile, check_folds=False))
    print(format_preflight(report), flush=True)
    return 0 if report.ok else 1


def main_run(profile: str, *, only: list[str] | None = None, build: bool = True, jobs: int | None = None) -> int:
    """``python -m uslib run``: the pre-flight check, then the chapters, the generated pages, the book.

    A profile that cannot run here (:func:`uslib.check.preflight`) stops
    before anything is downloaded or computed, with exit status 1.
    """
    from .pages import write_generated_pages

    from .check import require_paths

    t0 = time.perf_counter()
    params = load_profile(profile)
    require_paths(params, source=f"profile {profile}")  # a bad path or a busy run_dir: one line, nothing written
    if main_check(profile, params=params) != 0:
        print(
            "[uslib] not running: fix the problems above (python -m uslib check --profile P repeats the check)",
            file=sys.stderr,
            flush=True,
        )
        return 1
    try:
        result = run_profile(profile, only=only, jobs=jobs)
    except Exception as exc:
        if not is_chapter_failure(exc):
            raise
        print(
            "[uslib] not finished: a chapter failed (the line above names it and its log)", file=sys.stderr, flush=True
        )
        return 1
    rdir = result["run_dir"]
    if build:
        check_chapters(CHAPTER_DIR, run_dir=rdir)
        write_generated_pages(rdir)
        t1 = time.perf_counter()
        build_book(run_dir=rdir)
        store.update_run_record(rdir, stage_seconds={"book_build": round(time.perf_counter() - t1, 2)})
    total = time.perf_counter() - t0
    store.update_run_record(rdir, stage_seconds={"total": round(total, 2)})
    print(f"[uslib] total {total:.1f} s", flush=True)
    return 0


def main_build(profile: str) -> int:
    """``python -m uslib build``: build the book from the executed chapters of one run."""
    from .pages import write_generated_pages

    rdir = store.run_path(load_profile(profile)["run_dir"])
    check_chapters(CHAPTER_DIR, run_dir=rdir)
    write_generated_pages(rdir)
    build_book(run_dir=rdir)
    return 0
