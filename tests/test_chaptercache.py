"""The chapter cache (issue 24): an unchanged chapter is reused, stamped with the current run;
a changed one (notebook, parameter, code, upstream chapter or input file) runs again.

Real papermill kernels on two small notebooks written here (as tests/test_run.py);
each cell prints a fresh random token, so a reused page shows the token of the run
that executed it.
"""

from __future__ import annotations

import shutil

import nbformat
import pytest

from uslib import chaptercache, store
from uslib.run import check_chapters, run_profile

#: Slow tier: every test here executes notebooks in real papermill kernels.
pytestmark = pytest.mark.slow


def _notebook(path, body: str):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('run_dir = "runs/tiny"  # run directory\nsvm_c = 1.0  # SVM C')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# A chapter"), params, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)


TOKEN = "import uuid\nprint('{name}', svm_c, uuid.uuid4().hex)"


@pytest.fixture
def book(tmp_path, monkeypatch):
    monkeypatch.setenv(chaptercache.CACHE_ENV, "on")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # no weights file but the test's own
    src = tmp_path / "notebooks"
    src.mkdir()
    _notebook(src / "01_one.ipynb", TOKEN.format(name="one"))
    _notebook(src / "02_two.ipynb", TOKEN.format(name="two"))
    return {"src": src, "out": tmp_path / "chapters", "run_dir": tmp_path / "run"}


def _run(book, **overrides):
    return run_profile(
        "tiny",
        notebook_dir=book["src"],
        output_dir=book["out"],
        jobs=1,
        fetch=False,
        overrides={"run_dir": str(book["run_dir"]), **overrides},
    )


def _page(book, stem):
    """(printed token, uslib metadata) of an executed chapter."""
    nb = nbformat.read(book["out"] / f"{stem}.ipynb", as_version=4)
    return nb.cells[-1].outputs[0]["text"], nb.metadata["uslib"]


def _tokens(book):
    return {s: _page(book, s)[0] for s in ("01_one", "02_two")}


def test_an_unchanged_chapter_is_reused_and_stamped_with_the_current_run(book):
    first = _run(book)
    cold = _tokens(book)
    second = _run(book)  # a full run: a new run id, nothing changed
    assert second["run_id"] != first["run_id"]
    assert _tokens(book) == cold  # the pages of the first run, not executed again
    for stem in ("01_one", "02_two"):
        meta = _page(book, stem)[1]
        assert meta["run_id"] == second["run_id"] and meta["status"] == "finished"
        assert meta["reused_from"] == first["run_id"]
    assert check_chapters(book["out"], notebook_dir=book["src"], run_dir=book["run_dir"]) == second["run_id"]
    assert store.read_run_record(book["run_dir"])["stages"]["02_two"]["status"] == "finished"
    # a third run still names the run that executed them
    _run(book)
    assert _page(book, "01_one")[1]["reused_from"] == first["run_id"]


def test_an_edited_notebook_runs_again_and_so_do_the_chapters_below_it(book):
    _run(book)
    cold = _tokens(book)
    _notebook(book["src"] / "02_two.ipynb", TOKEN.format(name="two") + "  # edited")
    _run(book)
    now = _tokens(book)
    assert now["01_one"] == cold["01_one"] and now["02_two"] != cold["02_two"]
    assert "reused_from" not in _page(book, "02_two")[1]
    _notebook(book["src"] / "01_one.ipynb", TOKEN.format(name="one") + "  # edited")
    _run(book)
    again = _tokens(book)
    assert again["01_one"] != now["01_one"] and again["02_two"] != now["02_two"]  # 02 reads 01's artefacts


def test_a_parameter_change_runs_again_but_an_undeclared_one_does_not(book):
    _run(book)
    cold = _tokens(book)
    _run(book, n_splits=4)  # no chapter declares it
    assert _tokens(book) == cold
    _run(book, svm_c=2.0)
    changed = _tokens(book)
    assert all(changed[s] != cold[s] and " 2.0 " in changed[s] for s in cold)


def test_a_code_edit_or_an_input_file_change_runs_again(book, tmp_path, monkeypatch):
    code = tmp_path / "uslib-copy"
    shutil.copytree(store.PACKAGE_DIR, code, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(store, "PACKAGE_DIR", code)
    _run(book)
    cold = _tokens(book)
    assert _run(book) and _tokens(book) == cold
    with open(code / "qus.py", "a") as fh:  # an edit of any uslib source file
        fh.write("\nEDITED = True\n")
    _run(book)
    edited = _tokens(book)
    assert all(edited[s] != cold[s] for s in cold)
    # an input file the profile names: an ImageNet weights file appears at weights_path, then changes
    weights = tmp_path / "weights"
    weights.mkdir()
    _run(book, weights_path=str(weights))
    base = _tokens(book)
    assert _run(book, weights_path=str(weights)) and _tokens(book) == base
    from uslib.features import BACKBONES

    (weights / BACKBONES["vgg19"].weights_file).write_bytes(b"weights")
    _run(book, weights_path=str(weights))
    appeared = _tokens(book)
    assert all(appeared[s] != base[s] for s in base)
    (weights / BACKBONES["vgg19"].weights_file).write_bytes(b"other weights")
    _run(book, weights_path=str(weights))
    assert all(_tokens(book)[s] != appeared[s] for s in base)


def test_a_damaged_kept_chapter_runs_again_and_the_cache_can_be_switched_off(book, monkeypatch, capsys):
    _run(book)
    cold = _tokens(book)
    kept = sorted(store.chapter_cache_path(book["run_dir"], "01_one", "x").parent.glob("*.ipynb"))
    assert [p.name.split("-")[0] for p in kept] == ["01_one", "02_two"]
    kept[0].write_text(kept[0].read_text().replace(cold["01_one"].split()[-1], "f" * 32))
    _run(book)
    err = capsys.readouterr().err  # under the runner the report reaches its terminal
    assert "damaged cache file" in err and "01_one-" in err and "running the chapter" in err
    now = _tokens(book)
    assert now["01_one"] != cold["01_one"] and now["02_two"] == cold["02_two"]
    monkeypatch.setenv(chaptercache.CACHE_ENV, "off")
    _run(book)
    assert all(_tokens(book)[s] != now[s] for s in now)
