"""End to end: every chapter runs through papermill on params/tiny.yaml, the book
builds (strict: Sphinx warnings are errors), and the rendered pages hold the
paper's tables and figures; the results page loads in headless Chromium.

The run goes into a temporary copy of the book's sources, so it leaves the
user's book/chapters/, _build/ and runs/ alone.
"""

from __future__ import annotations

import re
import shutil
import time

import nbformat
import pytest

from uslib import pipeline
from uslib.config import REPO_ROOT, load_profile
from uslib.run import build_book, chapters, run_chapter, run_profile
from uslib.pages import write_generated_pages

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("book")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(REPO_ROOT / name, root / name)
    shutil.copytree(REPO_ROOT / "book", root / "book", ignore=shutil.ignore_patterns("chapters"))
    run_dir = root / "run"
    t0 = time.perf_counter()
    result = run_profile("tiny", output_dir=root / "book" / "chapters", overrides={"run_dir": str(run_dir)})
    write_generated_pages(run_dir, out_dir=root / "book" / "chapters")
    index = build_book(root)
    return {"root": root, "run_dir": run_dir, "index": index, "result": result,
            "seconds": time.perf_counter() - t0, "html": root / "_build" / "html"}


def _page(built, stem):
    return (built["html"] / "book" / "chapters" / f"{stem}.html").read_text()


def test_every_chapter_ran_and_the_book_built(built):
    assert built["index"].exists()
    for nb in chapters():
        out = built["root"] / "book" / "chapters" / nb.name
        executed = nbformat.read(out, as_version=4)
        errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if o.get("output_type") == "error"]
        assert not errors, f"{nb.name}: {errors[:1]}"
        assert (built["html"] / "book" / "chapters" / f"{nb.stem}.html").exists()
    record = pipeline.run_record(built["run_dir"])
    assert set(record["stage_seconds"]) >= {nb.stem for nb in chapters()}
    assert record["dataset"]["synthetic"] is True
    assert set(record["weights"]) == set(load_profile("tiny")["backbones"])


def test_results_page_has_tables_figures_and_the_warning(built):
    html = _page(built, "06_results")
    for title in ("Table I", "Table II", "Table III", "Figure 3", "Figure 4", "Figure 5"):
        assert title in html, title
    assert html.count("<table") >= 3
    assert len(re.findall(r"<img [^>]*src=\"[^\"]+\.png\"", html)) >= 3
    assert "Synthetic data." in html and "admonition warning" in html
    # glued numbers were substituted into the prose (an unresolved glue also fails the strict build)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html))
    assert re.search(r"mean drop from a matched to a mismatched test set is -?\d\.\d{3} \[-?\d\.\d{3}, -?\d\.\d{3}\] AUC",
                     text)
    assert re.search(r"The largest single drop, -?\d\.\d{3} AUC", text)
    assert re.search(r"of the \d+ comparisons, TrainALL has the higher AUC in \d+", text)
    assert re.search(r"the nested rule gives an accuracy of \d\.\d{3} against \d\.\d{3} by the paper", text)
    assert "Sensitivity analysis" in text and "Beside a one-number control" in text
    assert re.search(r"(No AUC is below 0\.5|\d+ of the \d+ AUCs of Tables I and II are below 0\.5)", text)


def test_reconstruction_page_has_figures_1_and_2(built):
    html = _page(built, "02_reconstruction")
    assert "Figure 1" in html and "Figure 2" in html
    assert len(re.findall(r"<img [^>]*src=\"[^\"]+\.png\"", html)) >= 4


def test_reference_pages_are_generated(built):
    params = (built["html"] / "book" / "chapters" / "parameters.html").read_text()
    assert "svm_c" in params and "dynamic_ranges_db" in params
    prov = (built["html"] / "book" / "chapters" / "provenance.html").read_text()
    assert "Stage timings" in prov and "tensorflow" in prov.lower()
    bench = (built["html"] / "book" / "chapters" / "benchmarks.html").read_text()
    assert "Targets" in bench and "This build" in bench and "04_features" in bench


def test_rerunning_cross_validation_with_new_c_reuses_features(built, tmp_path):
    params = {**load_profile("tiny"), "run_dir": str(built["run_dir"]), "svm_c": 10.0}
    nb = next(p for p in chapters() if p.stem.startswith("05"))
    before = set((built["run_dir"] / "results").iterdir())
    t0 = time.perf_counter()
    out = run_chapter(nb, params, output_dir=tmp_path)
    seconds = time.perf_counter() - t0
    executed = nbformat.read(out, as_version=4)
    text = "\n".join(str(o) for c in executed.cells for o in c.get("outputs", []))
    assert "leakage check passed" in text, "the chapter ran its folds"
    ds = pipeline.get_dataset(built["run_dir"], **{k: params[k] for k in (
        "data_source", "oasbud_path", "n_lesions", "data_seed", "skip_samples", "patients_csv")})
    manifest = pipeline.get_manifest(ds, dynamic_ranges_db=params["dynamic_ranges_db"], margins_mm=params["margins_mm"])
    import warnings

    from uslib.features import WeightsWarning

    recorded = pipeline.run_record(built["run_dir"])["weights"]
    for b in params["backbones"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", WeightsWarning)  # the labelled random fallback where no weights exist
            fs = pipeline.get_features(built["run_dir"], ds, manifest, b, weights=params["weights"], progress=False,
                                       allow_download=False)
        assert fs.n_computed == 0
        assert fs.weights["fingerprint"] == recorded[b]["fingerprint"], "the same weights as the chapters used"
    new = set((built["run_dir"] / "results").iterdir()) - before
    # per backbone: the matrix with C = 10 and its lesion-weighting counterpart (chapter 05 shows both)
    assert len(new) == 2 * len(params["backbones"]), sorted(p.name for p in new)
    print(f"05_cross_validation with svm_c=10 re-ran in {seconds:.1f} s")


def test_a_failing_chapter_stops_the_run(tmp_path):
    import papermill as pm

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    p = nbformat.v4.new_code_cell("x = 1  # a parameter")
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell("raise RuntimeError('boom')")]
    path = tmp_path / "99_fail.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(pm.PapermillExecutionError, match="boom"):
        run_chapter(path, {"x": 2}, output_dir=tmp_path / "out", cell_timeout_s=60)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian package 'chromium'; .ci/run installs it)")
def test_results_page_loads_in_headless_chromium_with_every_image(built):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (a test extra) is not installed")
    page_path = built["html"] / "book" / "chapters" / "06_results.html"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        try:
            page = browser.new_page()
            page.goto(page_path.as_uri(), wait_until="load")
            images = page.evaluate(
                "Array.from(document.querySelectorAll('main img')).map(i => [i.src, i.complete, i.naturalWidth])"
            )
            title = page.title()
            shot = built["root"] / "results.png"
            page.screenshot(path=str(shot), full_page=False)
        finally:
            browser.close()
    assert "Results" in title
    assert len(images) >= 3
    broken = [src for src, complete, width in images if not complete or width == 0]
    assert not broken, f"images that did not load: {broken}"
    assert shot.stat().st_size > 0
