"""The whole book, cold and warm: chapters one after another against side by side, and against a baseline.

What it runs: ``python -m uslib run --profile <profile>`` (the chapters and the
book build, as ``make book`` does) in throw-away git worktrees, so the
checkout's own book, chapters and runs are never touched:

* ``HEAD --jobs 1``: this commit's chapters one after another;
* ``HEAD``: this commit with the runner's default (chapters side by side,
  :func:`uslib.run.default_jobs`);
* ``--baseline REV`` (optional): another commit, e.g. the one before a
  change, run as it runs (its own runner and profile).

Each variant gets ``--cold`` cold runs (empty run directory) and then
``--warm`` warm runs (everything cached), in rounds that alternate the
variants (every other round in reverse order), so each ratio compares runs
made minutes apart on the same machine: these hosts are shared and noisy,
and absolute times from different runs are not comparable. The cold ratio
is the median of the per-round ratios. The load average before each run,
and the CPU seconds (user + system) of the run and its kernels, are
recorded with it: on 2 cores the cold book is bound by arithmetic, so the
CPU seconds tell work added from time lost to waiting.

Targets: the book under 15 min cold and 3 min warm on 2 cores (the design);
issue 9: cold and warm no slower than before its changes (``--baseline``);
issue 21: the default book's cold time grows by no more than 10 % (``--baseline``
the commit before); issue 24: with ``--precision int8``, <= 4 min cold and
<= 15 s warm (written to ``book_int8.json``).

Run: ``.venv/bin/python benchmarks/bench_book.py [--profile params/default.yaml]
[--baseline 7dd42aa] [--cold 1] [--warm 2]``. Writes ``runs/benchmarks/book.json``.
Minutes: on 2 cores each cold run of the default profile takes 8-10 min.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_report  # noqa: E402

from uslib.config import REPO_ROOT  # noqa: E402


def _git(*args: str, cwd: Path = REPO_ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def worktree(rev: str, root: Path) -> Path:
    """A detached worktree of ``rev`` under ``root`` (removed by :func:`remove_worktree`)."""
    path = root / f"wt-{_git('rev-parse', '--short', rev)}"
    if not path.exists():
        _git("worktree", "add", "--detach", str(path), rev)
    return path


def remove_worktree(path: Path) -> None:
    subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=REPO_ROOT, capture_output=True)


def profile_copy(tree: Path, profile: str, run_dir: Path, out: Path, precision: str | None = None) -> Path:
    """The worktree's own copy of ``profile`` with another ``run_dir`` (so each variant reads its own schema).

    ``precision`` (e.g. ``int8``) replaces the profile's.
    """
    src = Path(profile) if Path(profile).is_absolute() else tree / profile
    p = yaml.safe_load(src.read_text())
    p["run_dir"] = str(run_dir)
    if precision:
        p["precision"] = precision
    out.write_text(yaml.safe_dump(p, sort_keys=False))
    return out


class ChapterCPU:
    """CPU seconds of each chapter's kernel, sampled from ``/proc`` while a run goes on (Linux; else empty).

    A kernel is known by the events file the runner puts in its environment
    (``USLIB_EVENTS_FILE=<run>/logs/<chapter>.events.jsonl``); its CPU seconds
    are user + system time of it and its waited-for children, read every
    ``interval_s`` (the last reading before it exits, so a chapter's figure
    may miss up to ``interval_s`` of CPU time). Written here rather than
    taken from psutil, which is not among the project's dependencies, since
    it is the one reading of ``/proc`` the benchmarks need.
    """

    def __init__(self, interval_s: float = 0.5):
        import threading

        self.interval_s = interval_s
        self.seconds: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __enter__(self):
        if Path("/proc/self/environ").exists():
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    env = (proc / "environ").read_bytes().split(b"\0")
                    events = next((e for e in env if e.startswith(b"USLIB_EVENTS_FILE=")), None)
                    if events is None:
                        continue
                    fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                chapter = Path(events.split(b"=", 1)[1].decode()).name.removesuffix(".events.jsonl")
                cpu = sum(int(f) for f in fields[11:15]) / self._tick  # utime stime cutime cstime
                self.seconds[chapter] = max(self.seconds.get(chapter, 0.0), round(cpu, 1))


def timed_run(tree: Path, profile: Path, extra: list[str], log: Path) -> dict:
    """One ``python -m uslib run`` in ``tree``: wall seconds, CPU seconds and the load average before it.

    CPU seconds are user + system time of the run and every process it
    waited for (its kernels), from ``resource.getrusage(RUSAGE_CHILDREN)``;
    ``chapter CPU seconds`` splits them by chapter kernel (:class:`ChapterCPU`).
    """
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("USLIB_JOBS", None)
    t0 = time.perf_counter()
    with open(log, "w") as fh, ChapterCPU() as per_chapter:
        rc = subprocess.call(
            [sys.executable, "-m", "uslib", "run", "--profile", str(profile), *extra],
            cwd=tree,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if rc:
        raise SystemExit(f"[bench] {tree} {' '.join(extra)} failed (exit {rc}); see {log}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "seconds": round(seconds, 1),
        "cpu seconds": round(cpu, 1),
        "load before": round(load, 2),
        "chapter cpu seconds": dict(sorted(per_chapter.seconds.items())),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="params/default.yaml")
    ap.add_argument("--baseline", default=None, help="a git revision to compare with (run with its own runner)")
    ap.add_argument("--cold", type=int, default=1, help="cold runs per variant (rounds alternate the order)")
    ap.add_argument("--warm", type=int, default=2, help="warm runs per variant after its cold ones")
    ap.add_argument(
        "--sequential",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run HEAD with --jobs 1 (the reference of the ratios; --no-sequential: baseline only)",
    )
    ap.add_argument(
        "--precision",
        default=None,
        help="replace the profile's precision (e.g. int8, issue 24); the report is then book_<precision>.json",
    )
    ap.add_argument(
        "--baseline-first",
        action="store_true",
        help="start with the baseline (rounds still alternate), so a second invocation mirrors the order of a first",
    )
    ap.add_argument("--keep", action="store_true", help="keep the worktrees and logs (printed)")
    args = ap.parse_args(argv)

    head = _git("rev-parse", "--short", "HEAD")
    if _git("status", "--porcelain", "--untracked-files=no"):
        print("[bench] note: uncommitted changes are not measured; the bench runs HEAD", flush=True)
    root = Path(tempfile.mkdtemp(prefix="uslib-bench-book-", dir=REPO_ROOT / "runs"))
    variants = {f"{head} --jobs 1": (worktree("HEAD", root), ["--jobs", "1"])} if args.sequential else {}
    variants[f"{head} (default jobs)"] = (worktree("HEAD", root), [])
    if args.baseline:
        variants[f"{_git('rev-parse', '--short', args.baseline)} (baseline)"] = (worktree(args.baseline, root), [])
    runs: dict[str, dict[str, list]] = {name: {"cold": [], "warm": []} for name in variants}
    profiles = {}
    for i, (name, (tree, _)) in enumerate(variants.items()):
        profiles[name] = profile_copy(
            tree, args.profile, root / f"run-{i}", root / f"profile-{i}.yaml", precision=args.precision
        )
    try:
        order = list(enumerate(variants.items()))
        if args.baseline_first:
            order = order[::-1]
        for rnd, phase in enumerate(["cold"] * max(1, args.cold) + ["warm"] * max(0, args.warm)):
            # every other round in reverse, so no variant always runs in the residue of another
            for i, (name, (tree, extra)) in order if rnd % 2 == 0 else order[::-1]:
                if phase == "cold":
                    shutil.rmtree(root / f"run-{i}", ignore_errors=True)
                r = timed_run(tree, profiles[name], extra, root / f"log-{i}-{phase}-{len(runs[name][phase])}.txt")
                runs[name][phase].append(r)
                print(
                    f"[bench] {name}, {phase}: {r['seconds']:.1f} s, CPU {r['cpu seconds']:.1f} s "
                    f"(load before {r['load before']})",
                    flush=True,
                )
    finally:
        if not args.keep:
            for tree, _ in {str(t): (t, e) for t, e in variants.values()}.values():
                remove_worktree(tree)
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"[bench] kept {root}")

    figures: dict = {}
    for name, r in runs.items():
        figures[name] = {
            "cold [s] (median)": round(statistics.median(x["seconds"] for x in r["cold"]), 2),
            "cold CPU [s] (median)": round(statistics.median(x["cpu seconds"] for x in r["cold"]), 1),
            "warm [s] (median)": round(statistics.median(x["seconds"] for x in r["warm"]), 2) if r["warm"] else None,
            "runs": r,
        }
    refs = [(f"{head} --jobs 1", "jobs 1")] if args.sequential else []
    refs += [(name, "baseline") for name in runs if name.endswith("(baseline)")]
    for ref, label in refs:
        for name in runs:
            if name == ref or name.endswith("(baseline)"):
                continue
            pairs = [a["seconds"] / b["seconds"] for a, b in zip(runs[name]["cold"], runs[ref]["cold"])]
            figures[name][f"cold / {label} (each round)"] = [round(x, 3) for x in pairs]
            figures[name][f"cold / {label}"] = round(statistics.median(pairs), 3)
            figures[name][f"cold CPU / {label}"] = round(
                figures[name]["cold CPU [s] (median)"] / figures[ref]["cold CPU [s] (median)"], 3
            )
            if figures[name]["warm [s] (median)"] and figures[ref]["warm [s] (median)"]:
                figures[name][f"warm / {label}"] = round(
                    figures[name]["warm [s] (median)"] / figures[ref]["warm [s] (median)"], 3
                )
    write_report(
        f"book_{args.precision}" if args.precision else "book",
        figures,
        notes=f"profile {args.profile}{f' with precision {args.precision}' if args.precision else ''}; "
        f"each variant cold once, then {args.warm} warm "
        "run(s), variants alternated; ratios are within this one run",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
