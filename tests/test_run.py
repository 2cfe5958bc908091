"""The runner: one run id per run, each stage's status in run.json, and no book from mixed runs.

These run real papermill kernels on two small notebooks written here, so they
take seconds, not the minutes of the real chapters (tests/test_book.py).
"""

from __future__ import annotations

import json
import re

import nbformat
import papermill as pm
import pytest

from uslib import store
from uslib.config import REPO_ROOT
from uslib.hygiene import ABSOLUTE_PATH, repo_relative
from uslib.run import BACKGROUND_NICE, BookError, check_chapters, run_profile


def _notebook(path, body: str):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('run_dir = "runs/tiny"  # run directory\nsvm_c = 1.0  # SVM C')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# A chapter"), params, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)


@pytest.fixture
def book(tmp_path):
    src = tmp_path / "notebooks"
    src.mkdir()
    _notebook(src / "01_one.ipynb", "print('one', svm_c)")
    _notebook(
        src / "02_two.ipynb",
        "import os\nassert float(os.environ.get('FAIL_TWO', '0')) != svm_c, 'asked to fail'\nprint('two', svm_c)",
    )
    return {"src": src, "out": tmp_path / "chapters", "run_dir": tmp_path / "run"}


def _run(book, **kw):
    overrides = {"run_dir": str(book["run_dir"]), **kw.pop("overrides", {})}
    return run_profile("tiny", notebook_dir=book["src"], output_dir=book["out"], overrides=overrides, **kw)


def _meta(book, name):
    return nbformat.read(book["out"] / name, as_version=4).metadata["uslib"]


def test_one_run_stamps_every_chapter_and_records_each_stage(book):
    result = _run(book)
    rec = store.read_run_record(book["run_dir"])
    assert rec["run_id"] == result["run_id"] and rec["status"] == "finished" and rec["finished"]
    assert {k: v["status"] for k, v in rec["stages"].items()} == {"01_one": "finished", "02_two": "finished"}
    for name in ("01_one.ipynb", "02_two.ipynb"):
        assert _meta(book, name) == {
            "run_id": result["run_id"],
            "profile": "tiny",
            "run_dir": repo_relative(book["run_dir"]),
            "status": "finished",
        }
    assert check_chapters(book["out"], notebook_dir=book["src"]) == result["run_id"]
    # a partial re-run with the same parameters continues the same run: still one book
    again = _run(book, only=["02"])
    assert again["run_id"] == result["run_id"]
    assert check_chapters(book["out"], notebook_dir=book["src"], run_dir=book["run_dir"]) == result["run_id"]


def test_a_book_from_chapters_of_two_runs_is_refused(book):
    first = _run(book)
    second = _run(book, only=["02"], overrides={"svm_c": 2.0})  # other parameters: another run
    assert second["run_id"] != first["run_id"]
    with pytest.raises(BookError, match=r"different runs.*01_one.*02_two|different runs.*02_two.*01_one"):
        check_chapters(book["out"], notebook_dir=book["src"])


def test_a_chapter_from_an_older_run_than_the_record_is_refused(book, tmp_path):
    _run(book)
    _run(book, overrides={"run_dir": str(tmp_path / "elsewhere")})  # a newer run elsewhere overwrites the chapters
    with pytest.raises(BookError, match="records run"):
        check_chapters(book["out"], notebook_dir=book["src"], run_dir=book["run_dir"])


def test_a_failed_chapter_is_recorded_and_refused(book, monkeypatch):
    first = _run(book)
    store.update_run_record(book["run_dir"], stage_seconds={"total": 1.0})  # as main_run records it
    monkeypatch.setenv("FAIL_TWO", "1.0")
    with pytest.raises(pm.PapermillExecutionError, match="asked to fail"):
        _run(book)
    rec = store.read_run_record(book["run_dir"])
    assert rec["status"] == "failed" and rec.get("finished") is None, "no stale 'finished' from the run before"
    assert rec["run_id"] != first["run_id"]
    assert rec["stages"]["01_one"]["status"] == "finished" and rec["stages"]["02_two"]["status"] == "failed"
    assert "total" not in rec["stage_seconds"]
    assert _meta(book, "02_two.ipynb")["status"] == "failed"
    with pytest.raises(BookError, match="02_two failed"):
        check_chapters(book["out"], notebook_dir=book["src"])


def test_a_hand_run_chapter_is_not_published(book):
    _run(book)
    pm.execute_notebook(
        str(book["src"] / "01_one.ipynb"), str(book["out"] / "01_one.ipynb"), kernel_name="python3", progress_bar=False
    )
    with pytest.raises(BookError, match="01_one was not executed by the runner"):
        check_chapters(book["out"], notebook_dir=book["src"])


def test_damage_reports_reach_the_terminal_not_the_page(book, capsys):
    _run(book)
    # a chapter that meets a damaged cache file: the report goes to the runner's terminal
    _notebook(
        book["src"] / "01_one.ipynb",
        "from uslib import store\n"
        f"p = store.save_json({str(book['run_dir'] / 'x.json')!r}, {{'a': 1}})\n"
        "p.write_text('{')\n"
        "store.load_or_compute(lambda: store.load_json(p), lambda: store.save_json(p, {'a': 1}))",
    )
    _run(book)
    err = capsys.readouterr().err
    assert "damaged cache file" in err and "x.json" in err
    page = json.dumps(nbformat.read(book["out"] / "01_one.ipynb", as_version=4).cells[-1].get("outputs", []))
    assert "damaged" not in page and "Warning" not in page


def test_executed_chapters_have_no_stderr_and_no_absolute_paths(tmp_path):
    """What a chapter writes to standard error, and the machine's paths, never reach the page."""
    src = tmp_path / "notebooks"
    src.mkdir()
    run_dir = tmp_path / "run"
    body = (
        "import sys, warnings, os\n"
        "print('noise from a library', file=sys.stderr)\n"
        "warnings.warn('a warning naming ' + os.getcwd())\n"
        "print('the run directory is', os.path.abspath(run_dir))\n"
        "print('the code is in', os.path.abspath('uslib/run.py'))\n"
        "print('the cache is in', os.path.expanduser('~/.keras/models'))"
    )
    _notebook(src / "01_one.ipynb", body)
    out = tmp_path / "chapters"
    run_profile("tiny", notebook_dir=src, output_dir=out, overrides={"run_dir": str(run_dir)})
    executed = nbformat.read(out / "01_one.ipynb", as_version=4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("name") == "stderr"], "stderr reached the page"
    text = json.dumps(
        {
            "outputs": outputs,
            "metadata": executed.metadata,
            "injected": [c.source for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])],
        }
    )
    assert str(REPO_ROOT) not in text
    assert not re.search(r"(?<![.\w])" + re.escape(str(run_dir)), text), "the absolute run directory is shown"
    assert not ABSOLUTE_PATH.search(text), ABSOLUTE_PATH.search(text)
    stdout = "".join(o.get("text", "") for o in outputs if o.get("name") == "stdout")
    assert f"the run directory is {repo_relative(run_dir)}" in stdout
    assert "the code is in uslib/run.py" in stdout and "the cache is in ~/.keras/models" in stdout
    # the standard error is kept, off the page, in the run directory
    log = store.chapter_log_path(run_dir, "01_one").read_text()
    assert "noise from a library" in log and "a warning naming" in log
    # the two parameter cells are hidden and replaced by one note of the values that applied
    tags = [c.metadata.get("tags", []) for c in executed.cells]
    assert sum("remove-cell" in t and ("parameters" in t or "injected-parameters" in t) for t in tags) == 2
    note = next(c for c in executed.cells if "uslib-parameters-used" in c.metadata.get("tags", []))
    assert f'| `run_dir` | **`"{repo_relative(run_dir)}"`** | `"runs/tiny"` |' in note.source
    assert "| `svm_c` | `1.0` | `1.0` |" in note.source


# --------------------------------------------------------------------------- #
# Chapters side by side: each after what it reads, the record under a lock
# --------------------------------------------------------------------------- #


def _wait_for(marker: str) -> str:
    """Cell source that waits for a marker file another chapter writes (a hang guard of 10 min)."""
    return (
        "import pathlib, time\n"
        f"m = pathlib.Path(run_dir) / {marker!r}\n"
        "for _ in range(12000):\n"
        "    if m.exists():\n"
        "        break\n"
        "    time.sleep(0.05)\n"
        f"assert m.exists(), 'no {marker}'\n"
    )


def _mark(marker: str) -> str:
    return f"import pathlib\n(pathlib.Path(run_dir) / {marker!r}).write_text('x')\n"


def test_chapters_run_side_by_side_each_after_what_it_reads(tmp_path):
    # 02 and 04 need only 01: they run at the same time (each waits for the other to start, so run one
    # after the other they could not finish); 05 needs 04 and starts once 04 has finished.
    src, run_dir = tmp_path / "notebooks", tmp_path / "run"
    src.mkdir()
    run_dir.mkdir()
    _notebook(src / "01_data.ipynb", _mark("01.end"))
    nice = "import os\n(pathlib.Path(run_dir) / '{0}.nice').write_text(str(os.nice(0)))\n"
    _notebook(
        src / "02_reconstruction.ipynb",
        _wait_for("01.end") + _mark("02.start") + _wait_for("04.start") + nice.format("02"),
    )
    _notebook(
        src / "04_features.ipynb", _mark("04.start") + _wait_for("02.start") + _mark("04.end") + nice.format("04")
    )
    _notebook(
        src / "05_cross_validation.ipynb",
        "import pathlib\nassert (pathlib.Path(run_dir) / '04.end').exists(), '05 started before 04 finished'\n",
    )
    result = run_profile(
        "tiny", notebook_dir=src, output_dir=tmp_path / "out", overrides={"run_dir": str(run_dir)}, jobs=2
    )
    rec = store.read_run_record(run_dir)
    assert rec["status"] == "finished" and rec["execution"] == {"jobs": 2}
    assert set(result["stage_seconds"]) == {"01_data", "02_reconstruction", "04_features", "05_cross_validation"}
    assert all(v["status"] == "finished" for v in rec["stages"].values())
    # 02 ran beside 04, which heads the longer chain (04 then 05): 02's kernel yielded the CPU to it
    assert int((run_dir / "02.nice").read_text()) - int((run_dir / "04.nice").read_text()) == BACKGROUND_NICE


def test_one_job_runs_the_chapters_one_after_another_in_file_order(tmp_path):
    src, run_dir = tmp_path / "notebooks", tmp_path / "run"
    src.mkdir()
    run_dir.mkdir()
    for stem in ("01_data", "02_reconstruction", "04_features"):
        _notebook(
            src / f"{stem}.ipynb",
            "import pathlib\n"
            f"with open(pathlib.Path(run_dir) / 'order.txt', 'a') as fh:\n    fh.write({stem!r} + ' ')\n",
        )
    run_profile("tiny", notebook_dir=src, output_dir=tmp_path / "out", overrides={"run_dir": str(run_dir)}, jobs=1)
    assert (run_dir / "order.txt").read_text().split() == ["01_data", "02_reconstruction", "04_features"]
    assert store.read_run_record(run_dir)["execution"] == {"jobs": 1}


def test_a_failed_chapter_starts_nothing_new_and_the_others_finish(tmp_path):
    src, run_dir = tmp_path / "notebooks", tmp_path / "run"
    src.mkdir()
    _notebook(src / "01_data.ipynb", "pass")
    _notebook(src / "02_reconstruction.ipynb", "raise ValueError('02 asked to fail')")
    # 04 runs until the runner has recorded 02's failure (and a moment more), so 05 could start only if a
    # failure did not stop new starts
    _notebook(
        src / "04_features.ipynb",
        "import time\nfrom uslib import store\nfor _ in range(6000):\n"
        "    if store.read_run_record(run_dir).get('stages', {}).get('02_reconstruction', {}).get('status') "
        "== 'failed':\n        break\n    time.sleep(0.1)\ntime.sleep(1.5)",
    )
    _notebook(src / "05_cross_validation.ipynb", "pass")
    with pytest.raises(pm.PapermillExecutionError, match="02 asked to fail"):
        run_profile("tiny", notebook_dir=src, output_dir=tmp_path / "out", overrides={"run_dir": str(run_dir)}, jobs=2)
    rec = store.read_run_record(run_dir)
    stages = {k: v["status"] for k, v in rec["stages"].items()}
    assert stages == {"01_data": "finished", "02_reconstruction": "failed", "04_features": "finished"}
    assert rec["status"] == "failed"


@pytest.mark.slow  # a runner child and two kernels (3-6 s)
def test_ctrl_c_interrupts_the_running_chapters_and_records_it(tmp_path):
    # The runner in a child process, two chapters sleeping side by side; SIGINT to the runner (as Ctrl-C)
    # interrupts both kernels, records both stages and the run as interrupted, and leaves no kernel behind.
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    src, run_dir = tmp_path / "notebooks", tmp_path / "run"
    src.mkdir()
    _notebook(src / "01_data.ipynb", "pass")
    for stem in ("02_reconstruction", "04_features"):
        _notebook(
            src / f"{stem}.ipynb", _mark(f"{stem}.start") + "import time\nfor _ in range(6000):\n    time.sleep(0.1)"
        )  # 10 min: only an interrupt ends it in time
    # A process started in the background by a non-interactive shell (nohup ... &, a CI step) inherits SIGINT
    # ignored, and Python then installs no Ctrl-C handler: the runner child restores it, as a terminal would have.
    code = (
        "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "import sys\nfrom uslib.run import run_profile\n"
        f"run_profile('tiny', notebook_dir={str(src)!r}, output_dir={str(tmp_path / 'out')!r}, "
        f"overrides={{'run_dir': {str(run_dir)!r}}}, jobs=2)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        while not all((run_dir / f"{s}.start").exists() for s in ("02_reconstruction", "04_features")):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        kernels = [p for p in psutil.Process(proc.pid).children(recursive=True) if "ipykernel" in " ".join(p.cmdline())]
        assert len(kernels) == 2
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)  # a hang guard: the chapters' loops would run 10 min
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    rec = store.read_run_record(run_dir)
    assert rec["status"] == "interrupted"
    assert {k: v["status"] for k, v in rec["stages"].items()} == {
        "01_data": "finished",
        "02_reconstruction": "interrupted",
        "04_features": "interrupted",
    }
    psutil.wait_procs(kernels, timeout=10)
    assert not [k for k in kernels if k.is_running() and k.status() != psutil.STATUS_ZOMBIE], "a kernel was left"


def test_run_record_updates_from_many_processes_lose_nothing(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys\nfrom uslib import store\n"
        "w = sys.argv[1]\n"
        "for i in range(30):\n"
        "    store.update_run_record(sys.argv[2], stages={f'{w}-{i}': {'status': 'finished'}})\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(w), str(tmp_path)], cwd=REPO_ROOT) for w in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 4
    assert len(store.read_run_record(tmp_path)["stages"]) == 120


def test_every_chapter_waits_only_for_earlier_chapters():
    from uslib.config import chapters
    from uslib.run import CHAPTER_NEEDS, chapter_needs

    stems = [nb.stem for nb in chapters()]
    assert set(CHAPTER_NEEDS) == set(stems), "a new chapter must say what it reads (uslib.run.CHAPTER_NEEDS)"
    for s, needs in CHAPTER_NEEDS.items():
        assert all(stems.index(n) < stems.index(s) for n in needs), s
    needs = chapter_needs(stems)
    assert needs["06_results"] == ("04_features", "05_cross_validation")
    assert needs["02_reconstruction"] == ("01_data",) and needs["07_robustness"] == ("04_features",)
    assert needs["04_features"] == ()  # it starts beside 01: the data set is simulated once, under a lock


def test_reports_of_the_runner_process_and_its_workers_reach_the_terminal(tmp_path, capsys):
    # A cluster's workers inherit the runner's events file, not a chapter's: what they report is shown too.
    src, run_dir = tmp_path / "notebooks", tmp_path / "run"
    src.mkdir()
    _notebook(
        src / "01_data.ipynb",
        "import json, time\nfrom uslib import store\n"
        "with open(store.events_path(run_dir), 'a') as fh:\n"
        "    fh.write(json.dumps({'path': 'worker-chunk.npz', 'reason': 'bad CRC', 'action': 'recomputing'}) + '\\n')\n",
    )
    run_profile("tiny", notebook_dir=src, output_dir=tmp_path / "out", overrides={"run_dir": str(run_dir)}, jobs=1)
    err = capsys.readouterr().err
    assert "damaged cache file worker-chunk.npz (bad CRC): recomputing" in err
