"""End to end: every chapter runs through papermill on params/tiny.yaml, the book
builds (strict: Sphinx warnings are errors), and the rendered pages hold the
paper's tables and figures; the results page loads in headless Chromium.

The run goes into a temporary copy of the book's sources, so it leaves the
user's book/chapters/, _build/ and runs/ alone.
"""

from __future__ import annotations

import json
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
    shutil.copytree(REPO_ROOT / "_static", root / "_static")
    run_dir = root / "run"
    t0 = time.perf_counter()
    result = run_profile("tiny", output_dir=root / "book" / "chapters", overrides={"run_dir": str(run_dir)})
    write_generated_pages(run_dir, out_dir=root / "book" / "chapters")
    index = build_book(root)
    return {
        "root": root,
        "run_dir": run_dir,
        "index": index,
        "result": result,
        "seconds": time.perf_counter() - t0,
        "html": root / "_build" / "html",
    }


def _page(built, stem):
    return (built["html"] / "book" / "chapters" / f"{stem}.html").read_text()


def test_every_chapter_ran_and_the_book_built(built):
    assert built["index"].exists()
    for nb in chapters():
        out = built["root"] / "book" / "chapters" / nb.name
        executed = nbformat.read(out, as_version=4)
        errors = [
            o
            for c in executed.cells
            if c.cell_type == "code"
            for o in c.get("outputs", [])
            if o.get("output_type") == "error"
        ]
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
    assert re.search(
        r"mean drop from a matched to a mismatched test set is -?\d\.\d{3} \[-?\d\.\d{3}, -?\d\.\d{3}\] AUC", text
    )
    assert re.search(r"The largest single drop, -?\d\.\d{3} AUC", text)
    assert re.search(r"of the \d+ comparisons, TrainALL has the higher AUC in \d+", text)
    assert re.search(r"the nested rule gives an accuracy of \d\.\d{3} against \d\.\d{3} by the paper", text)
    assert "Sensitivity analysis" in text and "Beside a one-number control" in text
    assert re.search(
        r"Of the \d+ AUCs of Tables I and II, .* above chance .* indistinguishable from chance .* reversed", text
    )


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
    ds = pipeline.get_dataset(
        built["run_dir"],
        **{
            k: params[k]
            for k in ("data_source", "oasbud_path", "n_lesions", "data_seed", "skip_samples", "patients_csv")
        },
    )
    manifest = pipeline.get_manifest(ds, dynamic_ranges_db=params["dynamic_ranges_db"], margins_mm=params["margins_mm"])
    import warnings

    from uslib.features import WeightsWarning

    recorded = pipeline.run_record(built["run_dir"])["weights"]
    for b in params["backbones"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", WeightsWarning)  # the labelled random fallback where no weights exist
            fs = pipeline.get_features(
                built["run_dir"], ds, manifest, b, weights=params["weights"], progress=False, allow_download=False
            )
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


@pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on this machine (Debian package 'chromium'; .ci/run installs it)"
)
def test_results_page_loads_in_headless_chromium_with_every_image(built):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (a test extra) is not installed")
    page_path = built["html"] / "book" / "chapters" / "06_results.html"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
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


# --------------------------------------------------------------------------- #
# Every page as a reader meets it (issue 11)
# --------------------------------------------------------------------------- #


def _html_pages(html_dir):
    """Every page of the built book (not the redirecting index, not the theme's own files)."""
    return sorted(
        p
        for p in html_dir.rglob("*.html")
        if not {"_static", "_sources", "_images"} & set(p.relative_to(html_dir).parts)
        and not (p.parent == html_dir and p.name == "index.html")
    )


def _notebook_text(path) -> tuple[str, list]:
    """Everything of a notebook a reader can see or download, as text (pictures left out); and its outputs."""
    nb = nbformat.read(path, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = json.dumps(
        {
            "outputs": [{k: v for k, v in o.items() if k != "data"} for o in outputs]
            + [{k: v for k, v in o.get("data", {}).items() if not k.startswith("image/")} for o in outputs],
            "metadata": nb.metadata,
            "sources": [c.source for c in nb.cells],
        }
    )
    return text, outputs


def test_executed_chapters_carry_no_stderr_and_no_absolute_paths(built):
    from uslib.hygiene import ABSOLUTE_PATH

    for nb in chapters():
        path = built["root"] / "book" / "chapters" / nb.name
        # the downloadable copy the book serves is the same cleaned notebook
        for copy in (path, built["html"] / "_sources" / "book" / "chapters" / nb.name):
            text, outputs = _notebook_text(copy)
            assert not [o for o in outputs if o.get("name") == "stderr"], f"{copy}: stderr on the page"
            assert "Downloading data from" not in text, f"{copy}: download chatter"
            found = ABSOLUTE_PATH.search(text) or (str(REPO_ROOT) in text and str(REPO_ROOT))
            assert not found, f"{copy}: an absolute path: {text[max(0, text.find(str(found)) - 120) :][:240]}"
        # the two parameter cells are hidden, and one note says which values applied
        executed = nbformat.read(path, as_version=4)
        notes = [c for c in executed.cells if "uslib-parameters-used" in c.metadata.get("tags", [])]
        assert len(notes) == 1 and "| parameter | value used | default |" in notes[0].source, nb.name


def _tracked_files() -> set[str]:
    import subprocess

    out = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    return set(out.splitlines())


def test_every_launch_link_targets_a_tracked_notebook(built):
    from urllib.parse import parse_qs, unquote, urlparse

    tracked = _tracked_files()
    links = {}
    for page in _html_pages(built["html"]):
        for href in re.findall(
            r'href="(https://(?:mybinder\.org|colab\.research\.google\.com)/[^"]+)"', page.read_text()
        ):
            links.setdefault(page.relative_to(built["html"]).as_posix(), []).append(href.replace("&amp;", "&"))
    for nb in chapters():  # every chapter can be launched on Binder and on Colab
        hrefs = links.get(f"book/chapters/{nb.stem}.html", [])
        assert any("mybinder.org" in h for h in hrefs) and any("colab" in h for h in hrefs), (nb.stem, hrefs)
    for page, hrefs in links.items():
        for href in hrefs:
            url = urlparse(href)
            if url.netloc == "mybinder.org":
                path = unquote(parse_qs(url.query)["urlpath"][0]).split("/tree/", 1)[1]
            else:
                path = url.path.split("/blob/", 1)[1].split("/", 1)[1]
            assert path in tracked, f"{page}: {href} opens {path}, which git does not track"
            assert path.startswith("notebooks/") and path.endswith(".ipynb"), (page, href)


def test_maths_engine_is_served_with_the_book(built):
    html = built["html"]
    assert (html / "_static" / "mathjax" / "tex-mml-chtml.js").is_file()
    assert list((html / "_static" / "mathjax" / "output" / "chtml" / "fonts").rglob("*.woff")), "MathJax fonts"
    for page in _html_pages(html):
        text = page.read_text()
        remote = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', text)
        assert not remote, f"{page.name} loads {remote}"
        if "math notranslate" in text:
            assert re.search(r'<script[^>]+src="(\.\./)*_static/mathjax/tex-mml-chtml\.js', text), page.name


def test_reference_pages_read_true(built):
    chapters_dir = built["html"] / "book" / "chapters"
    text = lambda p: re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", p.read_text()))  # noqa: E731
    params = text(chapters_dir / "parameters.html")
    assert not re.search("[\u2018\u2019\u201c\u201d]", params), "curly quotes break copy-paste of values"
    prov = text(chapters_dir / "provenance.html")
    record = pipeline.run_record(built["run_dir"])
    assert f"run `{record['run_id']}`" in (built["root"] / "book" / "chapters" / "provenance.md").read_text()
    total = sum(v["seconds"] for v in record["stages"].values())
    assert f"all chapters {total:.1f}" in prov, "the total is this run's"
    bench = text(chapters_dir / "benchmarks.html")
    from uslib.pages import PLACEHOLDER

    assert "Measured" in bench or ("This build" in bench and not PLACEHOLDER.search(bench))
    refs = (built["html"] / "book" / "references.html").read_text()
    sources = "".join(
        p.read_text() for p in [*(REPO_ROOT / "book").glob("*.md"), *(REPO_ROOT / "notebooks").glob("*.ipynb")]
    )
    cited = {k.strip() for group in re.findall(r"\{cite:[pt]\}`([^`]+)`", sources) for k in group.split(",")}
    in_bib = set(re.findall(r"^@\w+\{([^,]+),", (REPO_ROOT / "book" / "references.bib").read_text(), re.M))
    assert cited <= in_bib
    assert refs.count('role="doc-biblioentry"') == len(cited), "the bibliography lists the cited works only"
    assert re.search(r"\[Byra et al\., 2018\]|Byra et al\., 2018", refs), "author-year labels"
    from uslib.sphinxext import in_words, toc_chapters

    intro = text(built["html"] / "book" / "intro.html")
    assert len(toc_chapters(REPO_ROOT / "_toc.yml")) == len(chapters())
    assert f"{in_words(len(chapters()))} parameterised chapters" in intro


CHECK_PAGE_JS = r"""
async () => {
  for (const img of document.images) { img.loading = "eager"; }
  await Promise.all(Array.from(document.images).map(i => i.complete ? null
      : new Promise(r => { i.addEventListener("load", r); i.addEventListener("error", r); })));
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const article = document.querySelector("article.bd-article") || document.querySelector("main");
  const edge = article.getBoundingClientRect().right + 1;
  const images = Array.from(document.images).filter(i => i.getAttribute("src"))
      .map(i => [i.getAttribute("src"), i.complete && i.naturalWidth > 0]);
  const copy = article.cloneNode(true);
  copy.querySelectorAll("pre, code, script, style, mjx-container, .highlight").forEach(e => e.remove());
  const text = copy.textContent;
  const tables = [];
  for (const t of article.querySelectorAll("table")) {
    if (t.getBoundingClientRect().right <= edge) continue;
    let box = null;
    for (let a = t.parentElement; a && a !== article.parentElement; a = a.parentElement) {
      const ox = getComputedStyle(a).overflowX;
      if (ox === "auto" || ox === "scroll") { box = a; break; }
    }
    if (!box || box.getBoundingClientRect().right > edge) tables.push(t.outerHTML.slice(0, 120));
  }
  const maths = Array.from(article.querySelectorAll(".math")).filter(m => !m.querySelector("mjx-container"));
  // glued text set in bold (myst-nb's stylesheet bolds span.pasted-text)
  const boldGlue = Array.from(article.querySelectorAll(".pasted-text"))
      .filter(e => parseInt(getComputedStyle(e).fontWeight, 10) >= 600).map(e => e.textContent.slice(0, 60));
  // bibliography labels and citations
  const labels = Array.from(document.querySelectorAll(
      'span.label, .citation .label, a[role="doc-biblioref"], [role="doc-biblioentry"]'))
      .map(e => e.textContent);
  // "the figure below" / "the sensitivity analysis above": is the thing on that side?
  const pointing = [];
  const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
  const phrase = /\b((?:[A-Za-z-]+\s+){0,2})(figures?|plots?|images?|panels?|tables?|analysis|section|slider|exercises?)\s+(below|above)\b/gi;
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (node.parentElement.closest("pre, code, script, style, mjx-container")) continue;
    for (const m of node.textContent.matchAll(phrase)) {
      const noun = m[2].toLowerCase(), way = m[3].toLowerCase();
      let targets;
      if (/^(figure|plot|image|panel)/.test(noun)) targets = article.querySelectorAll("img, figure, .dr-explorer");
      else if (/^table/.test(noun)) targets = article.querySelectorAll("table");
      else if (noun === "slider") targets = article.querySelectorAll('input[type="range"]');
      else {
        // the longest name that a heading carries: "the sensitivity analysis", "sensitivity analysis", "analysis"
        const words = (m[1] + noun).trim().toLowerCase().split(/\s+/);
        const headings = Array.from(article.querySelectorAll("h1, h2, h3, h4, .admonition-title"));
        targets = [];
        for (let k = 0; k < words.length && !targets.length; k++) {
          const name = words.slice(k).join(" ");
          targets = headings.filter(h => h.textContent.toLowerCase().includes(name));
        }
        if (!targets.length) continue;  // nothing named so on the page: not a pointer this check can follow
      }
      const after = Array.from(targets).some(t => node.compareDocumentPosition(t) & Node.DOCUMENT_POSITION_FOLLOWING);
      const before = Array.from(targets).some(t => node.compareDocumentPosition(t) & Node.DOCUMENT_POSITION_PRECEDING);
      if ((way === "below" && !after) || (way === "above" && !before)) pointing.push(m[0]);
    }
  }
  return {images, text, tables, unrendered: maths.map(m => m.textContent.slice(0, 60)),
          merrors: article.querySelectorAll("mjx-merror").length, boldGlue, labels, pointing};
}
"""

WIDTH_JS = r"""
async () => {
  for (const img of document.images) { img.loading = "eager"; }
  await Promise.all(Array.from(document.images).map(i => i.complete ? null
      : new Promise(r => { i.addEventListener("load", r); i.addEventListener("error", r); })));
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const vw = document.documentElement.clientWidth;
  const wide = document.documentElement.scrollWidth;
  const culprits = [];
  if (wide > vw + 1) {
    for (const e of document.querySelectorAll("body *")) {
      const r = e.getBoundingClientRect();
      if (r.right > vw + 1 && r.width > 0 && !e.closest("[style*='overflow'], .uslib-table-scroll, pre, .highlight")) {
        culprits.push(e.tagName.toLowerCase() + "." + (e.className || "").toString().slice(0, 40) + ": "
                      + (e.textContent || "").trim().slice(0, 50));
        if (culprits.length >= 3) break;
      }
    }
  }
  return {vw, wide, culprits};
}
"""

RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\\(?:mathcal|frac|sqrt|begin|end|left|right|mathrm|text|cdot)\b")
#: TeX left in a bibliography label or entry: an accent command (\'o, \"o, \l) or a group opened by a command.
RAW_TEX_NAME = re.compile(r"\\['\"`^~=.cvHuklLoO]|\{\\|[{}]")

EXPLORER_JS = r"""
async () => {
  const box = document.getElementById("dr-explorer");
  if (!box) return {error: "no element with id dr-explorer"};
  const range = box.querySelector('input[type="range"]'), img = box.querySelector("img");
  if (!range || !img) return {error: "dr-explorer lacks an input[type=range] or an img"};
  const before = img.getAttribute("src");
  const lo = Number(range.min || 0), hi = Number(range.max || 100), now = Number(range.value);
  range.value = String(now === hi ? lo : hi);
  range.dispatchEvent(new Event("input", {bubbles: true}));
  range.dispatchEvent(new Event("change", {bubbles: true}));
  await new Promise(r => setTimeout(r, 100));
  return {before, after: img.getAttribute("src"), value: range.value};
}
"""


def _file_only(found: list):
    """A route handler that lets ``file:`` requests through and blocks (and notes) every other."""

    def route(r, request):
        if request.url.startswith("file:"):
            return r.continue_()
        found.append(f"request left the disk: {request.url}")
        return r.abort()

    return route


def check_pages(html_dir, *, viewport=(1280, 900)):
    """Open every page of a built book in headless Chromium with every non-file request blocked.

    Returns ``{page: [problem, ...]}`` for the pages with problems: console
    errors and uncaught exceptions, requests that left the disk, images that
    did not load, raw TeX left in the text or in a bibliography label, maths
    MathJax did not render, tables wider than the article outside a
    horizontally scrolling box, glued text set in bold, placeholder wording
    (:data:`uslib.pages.PLACEHOLDER`; every built page is in the table of
    contents), "the figure below" with no figure below (or above), and, at a
    390 px wide viewport (a phone), a page wider than the screen. On the
    chapter 02 page, the dynamic-range explorer must change its image.
    """
    from uslib.pages import PLACEHOLDER

    from playwright.sync_api import sync_playwright

    problems: dict[str, list[str]] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            for page_path in _html_pages(html_dir):
                name = page_path.relative_to(html_dir).as_posix()
                found: list[str] = []
                context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
                page = context.new_page()

                page.route("**/*", _file_only(found))
                page.on(
                    "console",
                    lambda m, found=found: found.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
                )
                page.on("pageerror", lambda e, found=found: found.append(f"uncaught: {e}"))
                page.goto(page_path.as_uri(), wait_until="load")
                res = page.evaluate(CHECK_PAGE_JS)
                found += [f"image did not load: {src}" for src, ok in res["images"] if not ok]
                tex = sorted({m.group(0) for m in RAW_TEX.finditer(res["text"])})
                if tex:
                    i = RAW_TEX.search(res["text"]).start()
                    found.append(f"raw TeX {tex} in the text: ...{res['text'][max(0, i - 60) : i + 60]}...")
                found += [f"maths not rendered: {m}" for m in res["unrendered"]]
                if res["merrors"]:
                    found.append(f"{res['merrors']} MathJax errors")
                found += [f"table past the article edge, not in a scrolling box: {t}" for t in res["tables"]]
                found += [f"glued text in bold: {t!r}" for t in res["boldGlue"]]
                found += [f"raw TeX in a reference label: {t[:80]!r}" for t in res["labels"] if RAW_TEX_NAME.search(t)]
                placeholder = PLACEHOLDER.search(res["text"])
                if placeholder:
                    found.append(f"placeholder wording on a page of the table of contents: {placeholder.group(0)!r}")
                found += [
                    f"{t!r} points where there is nothing of the kind (it is on the other side, or missing)"
                    for t in res["pointing"]
                ]
                if name == "book/chapters/02_reconstruction.html":
                    ex = page.evaluate(EXPLORER_JS)
                    if "error" in ex:
                        found.append(f"dynamic-range explorer: {ex['error']}")
                    elif ex["before"] == ex["after"]:
                        found.append(f"dynamic-range explorer: the image did not change ({ex})")
                context.close()
                phone = browser.new_context(viewport={"width": 390, "height": 844})
                small = phone.new_page()
                small.route("**/*", _file_only([]))
                small.goto(page_path.as_uri(), wait_until="load")
                width = small.evaluate(WIDTH_JS)
                phone.close()
                if width["wide"] > width["vw"] + 1:
                    found.append(f"{width['wide']} px wide at a {width['vw']} px viewport: {width['culprits']}")
                if found:
                    problems[name] = found
        finally:
            browser.close()
    return problems


@pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on this machine (Debian package 'chromium'; .ci/run installs it)"
)
def test_every_page_reads_cleanly_in_headless_chromium_offline(built):
    pytest.importorskip("playwright.sync_api", reason="playwright (a test extra) is not installed")
    problems = check_pages(built["html"])
    assert not problems, "\n".join(f"{page}:\n  " + "\n  ".join(p) for page, p in problems.items())


@pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on this machine (Debian package 'chromium'; .ci/run installs it)"
)
def test_the_page_check_finds_each_problem_it_looks_for(tmp_path):
    """The reader's checks can fail: a page with each problem, and a clean page."""
    pytest.importorskip("playwright.sync_api", reason="playwright (a test extra) is not installed")
    style = "<style>span.pasted-text{font-weight:bold}</style>"
    bad = (
        f"<html><head>{style}</head><body><main><article class='bd-article'>"
        "<p>The AUC is <span class='pasted-text'>0.81</span>.</p>"
        "<p>See the figure below. No sweep has been run for this run directory.</p>"
        "<p><span class='label'>[Piotrzkowska-Wr\\'oblewska et al., 2017]</span></p>"
        "<div style='width:600px'>wide</div>"
        "</article></main></body></html>"
    )
    good = (
        "<html><body><main><article class='bd-article'><img alt='a' src='data:image/gif;base64,"
        "R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw=='><p>The figure above shows it; the AUC is <span class='pasted-text'>0.81</span>.</p>"
        "</article></main></body></html>"
    )
    (tmp_path / "bad.html").write_text(bad)
    (tmp_path / "good.html").write_text(good)
    problems = check_pages(tmp_path)
    assert "good.html" not in problems, problems.get("good.html")
    found = "\n".join(problems["bad.html"])
    for what in (
        "glued text in bold",
        "raw TeX in a reference label",
        "placeholder wording",
        "figure below' points where",
        "px wide at a 390 px viewport",
    ):
        assert what in found, f"{what!r} not reported:\n{found}"


@pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on this machine (Debian package 'chromium'; .ci/run installs it)"
)
def test_search_from_a_file_finds_pages_names_the_server_and_logs_no_errors(built):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (a test extra) is not installed")
    errors, left = [], []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.route("**/*", _file_only(left))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto((built["html"] / "search.html").as_uri() + "?q=speckle", wait_until="load")
            page.wait_for_function("document.querySelectorAll('#search-results li').length > 0", timeout=20000)
            hint = page.evaluate("(document.querySelector('.uslib-serve-hint') || {}).textContent || ''")
        finally:
            browser.close()
    assert "python -m uslib serve" in hint
    assert not errors and not left, (errors[:3], left[:3])
