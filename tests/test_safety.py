"""Nothing unsafe, nothing late: where a run may write, one run per run directory, one-line failures.

* **Paths contained and checked up front.** ``run_dir`` and ``cache_dir`` are
  a new or empty folder or an existing uslib run directory, never ``/``, a
  system folder or a file; every path of a profile is checked before
  ``run.json`` exists, with one line naming the key.
* **One run per run directory** at a time; a lock left by a killed run does
  not block.
* **One-line failures**: a failed chapter is named on the terminal with its
  exception's last line and its log; an unreachable scheduler stops the run
  after the profile's connect timeout, with one line, and ``run.json`` says
  ``failed``.

The subprocess helpers report which heavy modules (TensorFlow, papermill) a
command had imported when it answered: "at once" means before those, never
a number of seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from uslib import store
from uslib.check import path_problems, preflight
from uslib.config import REPO_ROOT, ProfileError, load_profile
from uslib.run import chapter_failure_line, is_chapter_failure, run_profile

HEAVY = ("tensorflow", "keras", "papermill", "jupyter_client", "distributed")


def _profile(tmp_path: Path, name: str = "p.yaml", **values) -> Path:
    base = yaml.safe_load((REPO_ROOT / "params" / "tiny.yaml").read_text())
    base.update({"run_dir": str(tmp_path / "run"), **values})
    path = tmp_path / name
    path.write_text(yaml.safe_dump(base))
    return path


def _cli(args: list[str], cwd: Path, timeout: float = 300) -> tuple[subprocess.CompletedProcess, list[str]]:
    """``python -m uslib ARGS``; also the heavy modules imported by the time it returned."""
    code = (
        "import sys\nfrom uslib.__main__ import main\nrc = main(sys.argv[1:])\n"
        f"print('imported:', ','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
        "sys.exit(rc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)
    last = [ln for ln in out.stdout.splitlines() if ln.startswith("imported:")]
    heavy = [m for m in last[-1].removeprefix("imported:").strip().split(",") if m] if last else ["?"]
    return out, heavy


def _notebook(path: Path, body: str, params: str = 'run_dir = "runs/tiny"  # run directory') -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# A chapter"), cell, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)


# --------------------------------------------------------------------------- #
# Where a run may write
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "path, words",
    [
        ("/", "the root folder"),
        ("/etc", "system folder /etc"),
        ("/etc/uslib-run", "system folder /etc"),
        ("/usr/local/share/x", "system folder /usr"),
        ("/var/lib/x", "system folder /var"),
        ("/proc/self", "system folder /proc"),
        ("/home", "shared system folder"),
        ("/etc/passwd", "system folder /etc"),
    ],
)
def test_system_folders_are_never_run_directories(path, words):
    assert words in store.location_problem(path)
    with pytest.raises(store.UnsafeLocation, match=words):
        store.run_path(path)


def test_a_relative_path_that_climbs_into_a_system_folder_is_refused():
    climb = os.path.relpath("/etc", REPO_ROOT)  # ../../etc from the repository
    assert "system folder /etc" in store.location_problem(climb)


def test_where_a_run_directory_may_be(tmp_path):
    assert store.location_problem(tmp_path / "new" / "run") is None
    (tmp_path / "empty").mkdir()
    assert store.location_problem(tmp_path / "empty") is None
    (tmp_path / "f.txt").write_text("x")
    assert "is an existing file" in store.location_problem(tmp_path / "f.txt")
    assert "is an existing file" in store.location_problem(tmp_path / "f.txt" / "run")
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("x")
    assert "holds other files and is not a uslib run directory" in store.location_problem(other)
    (other / "run.json").write_text("{}")
    assert store.location_problem(other) is None, "an existing run directory"
    cache = tmp_path / "cache"
    (cache / "features").mkdir(parents=True)
    assert store.location_problem(cache, kind="cache directory") is None
    assert store.system_folder(tmp_path) is None, "temporary folders are fine"


def test_every_profile_path_is_named_before_anything_is_written(tmp_path):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    params = load_profile(
        _profile(
            tmp_path,
            run_dir=str(afile),
            cache_dir="/etc/hostname",
            patients_csv=str(tmp_path / "no.csv"),
            weights="imagenet",
            weights_path=str(tmp_path / "no-weights"),
            data_source="oasbud",
            oasbud_path=str(tmp_path),
        ),
        check_folds=False,
    )
    problems = path_problems(params)
    keys = [p.split(":")[0] for p in problems]
    assert keys == ["run_dir", "cache_dir", "oasbud_path", "patients_csv", "weights_path"], problems
    assert "never replaced by random weights" in problems[-1]
    report = preflight(params)
    assert not report.ok and [p for p in report.problems if p.split(":")[0] in keys][:5] == problems


@pytest.mark.parametrize(
    "values, key",
    [
        ({"run_dir": "FILE"}, "run_dir"),
        ({"cache_dir": "FILE"}, "cache_dir"),
        ({"patients_csv": "MISSING"}, "patients_csv"),
        ({"weights": "imagenet", "weights_path": "MISSING"}, "weights_path"),
    ],
)
def test_the_runner_refuses_a_bad_path_with_one_line_before_run_json(tmp_path, values, key):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    values = {
        k: str(afile) if v == "FILE" else str(tmp_path / "missing") if v == "MISSING" else v for k, v in values.items()
    }
    path = _profile(tmp_path, **values)
    out, heavy = _cli(["run", "--profile", str(path), "--no-build"], cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f": {key}: " in lines[0] and "Traceback" not in out.stderr, out.stderr
    assert heavy == [], f"imported {heavy} before refusing"
    assert not (tmp_path / "run" / "run.json").exists() and afile.read_text() == "x"
    # the pre-flight names it too
    out, heavy = _cli(["check", "--profile", str(path)], cwd=tmp_path)
    assert out.returncode == 1 and f"PROBLEM   {key}: " in out.stdout and heavy == [], out.stdout + out.stderr


def test_run_profile_refuses_a_run_dir_that_is_a_file(tmp_path):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    with pytest.raises(ProfileError, match=r"run_dir: .*a-file is an existing file"):
        run_profile("tiny", overrides={"run_dir": str(afile)}, notebook_dir=tmp_path, output_dir=tmp_path / "o")
    assert afile.read_text() == "x"


# --------------------------------------------------------------------------- #
# One run per run directory
# --------------------------------------------------------------------------- #

_HOLDER = (
    "import sys\nfrom uslib import store\n"
    "with store.run_lock(sys.argv[1], profile='first'):\n"
    "    print('held', flush=True)\n"
    "    sys.stdin.read()\n"
)


def test_a_second_run_of_one_run_directory_is_refused_naming_the_first(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(run_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert store.run_lock_holder(run_dir)["pid"] == holder.pid
        with pytest.raises(store.RunDirectoryBusy, match=rf"pid {holder.pid}, started 20\d\d-"):
            with store.run_lock(run_dir):
                pass
        out, heavy = _cli(["run", "--profile", str(_profile(tmp_path)), "--no-build"], cwd=tmp_path)
        assert out.returncode == 2, out.stdout + out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and f"pid {holder.pid}" in lines[0] and "started" in lines[0], out.stderr
        assert heavy == [] and not (run_dir / "run.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # killed: its lock went with it
    assert (run_dir / "run.lock").exists()
    assert store.run_lock_holder(run_dir) is None
    with store.run_lock(run_dir) as held:
        assert held == run_dir
        assert store.load_json(run_dir / "run.owner.json")["pid"] == os.getpid()


def test_run_profile_holds_the_run_directory_while_it_runs(tmp_path):
    src, run_dir = tmp_path / "notebooks", tmp_path / "run"
    src.mkdir()
    _notebook(
        src / "01_data.ipynb",
        "from uslib import store\nowner = store.run_lock_holder(run_dir)\n"
        "assert owner and owner['pid'] != __import__('os').getpid(), owner\nprint('held by', owner['pid'])",
    )
    run_profile("tiny", notebook_dir=src, output_dir=tmp_path / "out", overrides={"run_dir": str(run_dir)})
    assert store.run_lock_holder(run_dir) is None, "released at the end"
    assert store.read_run_record(run_dir)["status"] == "finished"


# --------------------------------------------------------------------------- #
# One-line failures
# --------------------------------------------------------------------------- #


def test_a_failed_chapter_is_named_on_one_line_with_its_log(tmp_path, capsys):
    import papermill as pm

    src, run_dir = tmp_path / "notebooks", tmp_path / "run"
    src.mkdir()
    _notebook(src / "01_data.ipynb", "def deep():\n    raise ValueError('the RF is all zero\\nsecond line')\ndeep()")
    with pytest.raises(pm.PapermillExecutionError) as info:
        run_profile("tiny", notebook_dir=src, output_dir=tmp_path / "out", overrides={"run_dir": str(run_dir)})
    assert is_chapter_failure(info.value)
    log = store.chapter_error_path(run_dir, "01_data")
    out = capsys.readouterr().out
    assert f"[uslib] 01_data: failed: ValueError: the RF is all zero second line (log: {log})" in out.splitlines()
    assert "deep()" in log.read_text() and "\x1b[" not in log.read_text(), "the full traceback, without colours"
    rec = store.read_run_record(run_dir)
    assert rec["status"] == "failed" and rec["stages"]["01_data"]["status"] == "failed"


def test_the_command_line_shows_a_failed_chapter_without_a_traceback(monkeypatch, capsys, tmp_path):
    import papermill as pm

    from uslib import run as R

    err = pm.PapermillExecutionError(2, 1, "x", "ValueError", "boom", ["\x1b[31mValueError\x1b[0m: boom"] * 40)
    assert (
        chapter_failure_line("01_data", err, tmp_path / "e.txt")
        == f"[uslib] 01_data: failed: ValueError: boom (log: {tmp_path / 'e.txt'})"
    )

    def fail(*a, **k):
        raise err

    monkeypatch.setattr(R, "run_profile", fail)
    monkeypatch.setattr(R, "main_check", lambda *a, **k: 0)
    from uslib.__main__ import main

    assert main(["run", "--profile", str(_profile(tmp_path)), "--no-build"]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "boom" not in captured.err
    assert captured.err.strip().splitlines() == [
        "[uslib] not finished: a chapter failed (the line above names it and its log)"
    ]


def test_an_unreachable_scheduler_stops_the_run_with_one_line_and_records_failed(tmp_path):
    run_dir = tmp_path / "run"
    path = _profile(tmp_path, scheduler="tcp://127.0.0.1:1", scheduler_timeout_s=1)
    src = tmp_path / "notebooks"
    src.mkdir()
    _notebook(src / "04_features.ipynb", "print('never')", params='run_dir = "x"\nscheduler = None')
    code = (
        "import sys\nfrom uslib.run import run_profile\nfrom uslib.scheduler import SchedulerUnreachable\n"
        "try:\n"
        f"    run_profile({str(path)!r}, notebook_dir={str(src)!r}, output_dir={str(tmp_path / 'out')!r})\n"
        "except SchedulerUnreachable as e:\n"
        "    print('refused:', e); sys.exit(3)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert out.returncode == 3, out.stdout + out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("refused:"))
    assert "scheduler: no Dask scheduler answered at tcp://127.0.0.1:1 within 1 s" in line
    assert "04_features: running" not in out.stdout
    assert store.read_run_record(run_dir)["status"] == "failed"


def test_the_scheduler_connect_timeout_is_in_the_schema_with_a_short_default():
    from uslib.config import Profile
    from uslib.scheduler import DEFAULT_CONNECT_TIMEOUT_S

    assert Profile().scheduler_timeout_s == DEFAULT_CONNECT_TIMEOUT_S <= 10
    assert load_profile("default")["scheduler_timeout_s"] <= 10


def test_an_unreachable_scheduler_is_one_line_on_the_command_line(tmp_path):
    path = _profile(tmp_path, scheduler="tcp://127.0.0.1:1", scheduler_timeout_s=1)
    out, _ = _cli(["run", "--profile", str(path), "--only", "04", "--no-build"], cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("uslib: error: scheduler: no Dask scheduler answered at tcp://127.0.0.1:1")
    assert "Traceback" not in out.stderr, out.stderr
    assert store.read_run_record(tmp_path / "run")["status"] == "failed"


# --------------------------------------------------------------------------- #
# Chapter 01 on a synthetic file in the OASBUD schema
# --------------------------------------------------------------------------- #


@pytest.mark.slow
def test_chapter_01_runs_on_a_synthetic_file_in_the_oasbud_schema(tmp_path):
    """A mirror rehearsal: the phantom written as OASBUD.mat and read back as data_source oasbud."""
    from uslib import phantom
    from uslib.oasbud import save_oasbud

    data = save_oasbud(phantom.simulate_dataset(8, seed=1), tmp_path / "OASBUD.mat")
    run_dir = tmp_path / "run"
    run_profile(
        "tiny",
        only=["01"],
        output_dir=tmp_path / "chapters",
        overrides={"run_dir": str(run_dir), "data_source": "oasbud", "oasbud_path": str(data), "n_splits": 3},
    )
    assert store.read_run_record(run_dir)["stages"]["01_data"]["status"] == "finished"


def test_the_readme_says_what_the_default_profile_fetches():
    """The README's network sentence agrees with params/default.yaml and the weights' source."""
    from uslib.features import BACKBONES, weights_source

    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    default = load_profile("default", check_folds=False)
    hosts = {weights_source(b)[0].split("/")[2] for b in BACKBONES.values()}
    if default["allow_download"] and default["weights"] == "imagenet":
        total_mb = sum(BACKBONES[b].weights_size_bytes for b in default["backbones"]) / 1e6
        assert "`allow_download: true`" in readme and f"about {total_mb:.0f} MB" in readme
        assert all(h in readme for h in hosts) and "`allow_download: false` keeps a run offline" in readme
    assert "Nothing reaches the network unless" not in readme or not default["allow_download"]


def test_run_all_help_prints_help_and_starts_nothing(tmp_path):
    script = REPO_ROOT / "benchmarks" / "run_all.py"
    out = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert out.returncode == 0 and out.stdout.startswith("usage: run_all.py"), out.stdout + out.stderr
    assert "[bench]" not in out.stdout, "no benchmark started"
    out = subprocess.run(
        [sys.executable, str(script), "--only", "bench_nothing"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 2 and "no such benchmark: bench_nothing.py" in out.stderr and "[bench]" not in out.stdout
