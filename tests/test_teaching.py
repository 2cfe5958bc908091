"""The teaching content of the stored notebooks: exercises with executed solutions.

Exercises are sphinx-exercise directives in MyST markdown cells. A solution
counts when it is executed code whose result is checked or shown: either the
gated form (``{solution-start}`` … ``{solution-end}``) with at least one code
cell between the two that asserts or glues, or a plain ``{solution}``
directive that cites a glued value. Fast: reads the stored notebooks only.
"""

from __future__ import annotations

import re

import nbformat
import pytest

from uslib.config import REPO_ROOT

NOTEBOOKS = REPO_ROOT / "notebooks"
#: Chapters whose exercises count towards the book's total (issue 11).
TEACHING_CHAPTERS = ("01", "02", "03", "04", "05", "06", "07")
MIN_EXERCISES = 17

_FENCE = r"(?:`{3,}|:{3,})"
_EXERCISE = re.compile(_FENCE + r"\{exercise(?:-start)?\}[^\n]*\n(?P<opts>(?:[ \t]*:[\w-]+:[^\n]*\n)*)")
_LABEL = re.compile(r":label:\s*(\S+)")
_SOLUTION = re.compile(
    _FENCE + r"\{solution\}\s+(?P<label>\S+)[^\n]*\n(?P<body>.*?)\n" + _FENCE + r"[ \t]*$", re.S | re.M
)
_SOLUTION_START = re.compile(_FENCE + r"\{solution-start\}\s+(?P<label>\S+)")
_SOLUTION_END = re.compile(_FENCE + r"\{solution-end\}")
_CHECKS = re.compile(r"^\s*assert\b|\bglue\(", re.M)


def _paths(prefixes=TEACHING_CHAPTERS):
    return sorted(p for p in NOTEBOOKS.glob("*.ipynb") if p.name[:2] in prefixes)


def exercises_with_solutions(path) -> tuple[list[str], dict[str, str]]:
    """(exercise labels, {label: why its solution does not count}) of one stored notebook.

    Labels whose solution counts are those in the first list and not in the dict.
    """
    nb = nbformat.read(path, as_version=4)
    labels: list[str] = []
    solved: set[str] = set()
    open_label: str | None = None
    open_checked = False
    for cell in nb.cells:
        src = cell.source
        if cell.cell_type == "code":
            if open_label is not None and _CHECKS.search(src):
                open_checked = True
            continue
        if cell.cell_type != "markdown":
            continue
        for m in _EXERCISE.finditer(src):
            label = _LABEL.search(m.group("opts"))
            if label:
                labels.append(label.group(1))
        for m in _SOLUTION.finditer(src):
            if "{glue" in m.group("body"):
                solved.add(m.group("label"))
        end = _SOLUTION_END.search(src)
        if end and open_label is not None:
            if open_checked:
                solved.add(open_label)
            open_label = None
        start = _SOLUTION_START.search(src)
        if start:
            open_label, open_checked = start.group("label"), False
    missing = {
        label: "no executed solution (code that asserts or glues, or glued prose)"
        for label in labels
        if label not in solved
    }
    return labels, missing


def test_the_parser_counts_only_exercises_whose_solution_is_executed(tmp_path):
    nb = nbformat.v4.new_notebook()
    fence = "```"
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"{fence}{{exercise}} A\n:label: ex-a\n\nDo it.\n{fence}"),
        nbformat.v4.new_markdown_cell(f"{fence}{{solution-start}} ex-a\n:class: dropdown\n{fence}"),
        nbformat.v4.new_code_cell("x = 1\nassert x == 1"),
        nbformat.v4.new_markdown_cell(f"{fence}{{solution-end}}\n{fence}"),
        nbformat.v4.new_markdown_cell(f"{fence}{{exercise}} B\n:label: ex-b\n\nDo it.\n{fence}"),
        nbformat.v4.new_markdown_cell(f"{fence}{{solution-start}} ex-b\n{fence}"),
        nbformat.v4.new_code_cell("print(1)"),  # neither asserts nor glues
        nbformat.v4.new_markdown_cell(f"{fence}{{solution-end}}\n{fence}"),
        nbformat.v4.new_markdown_cell(
            f"{fence}{{exercise}} C\n:label: ex-c\n{fence}\n\n"
            f"{fence}{{solution}} ex-c\nIt is {{glue:text}}`c:.2f`.\n{fence}"
        ),
        nbformat.v4.new_markdown_cell(
            f"{fence}{{exercise}} D\n:label: ex-d\n{fence}\n\n{fence}{{solution}} ex-d\nIt is 3.\n{fence}"
        ),  # typed number
        nbformat.v4.new_markdown_cell(f"{fence}{{exercise}} E\n:label: ex-e\n{fence}"),  # no solution
    ]
    path = tmp_path / "01_x.ipynb"
    nbformat.write(nb, path)
    labels, missing = exercises_with_solutions(path)
    assert labels == ["ex-a", "ex-b", "ex-c", "ex-d", "ex-e"]
    assert sorted(missing) == ["ex-b", "ex-d", "ex-e"]


@pytest.mark.parametrize("path", _paths(), ids=lambda p: p.name)
def test_every_exercise_has_an_executed_solution(path):
    labels, missing = exercises_with_solutions(path)
    assert not missing, f"{path.name}: {missing}"
    assert len(labels) == len(set(labels)), f"{path.name}: duplicate exercise labels {labels}"


def test_at_least_seventeen_exercises_with_solutions_across_the_chapters_at_least_two_in_04_06_07():
    counted = {}
    for path in _paths():
        labels, missing = exercises_with_solutions(path)
        counted[path.name] = [label for label in labels if label not in missing]
    total = sum(len(v) for v in counted.values())
    all_labels = [label for v in counted.values() for label in v]
    assert len(all_labels) == len(set(all_labels)), f"labels repeat across chapters: {counted}"
    assert total >= MIN_EXERCISES, f"{total} exercises with executed solutions, need {MIN_EXERCISES}: {counted}"
    for prefix in ("04", "06", "07"):  # the results chapters teach interpretation too (issue 21)
        got = [v for name, v in counted.items() if name.startswith(prefix)]
        assert got and len(got[0]) >= 2, f"chapter {prefix}: {got} exercises with executed solutions, need 2"


# --------------------------------------------------------------------------
# The dynamic-range explorer of chapter 02 (uslib.plots.dynamic_range_explorer)
# --------------------------------------------------------------------------


def _explorer_html(n_frames=3):
    import numpy as np

    from uslib.plots import dynamic_range_explorer

    rng = np.random.default_rng(0)
    env = rng.rayleigh(size=(120, 40)) * np.linspace(1, 0.01, 120)[:, None]  # 40 dB of decay over depth
    roi = np.zeros(env.shape, bool)
    roi[40:70, 10:25] = True
    drs = np.linspace(20, 80, n_frames)
    return dynamic_range_explorer(env, drs, extent=(0, 3, 2.3, 0), roi=roi, figsize=(4, 2), dpi=40), drs


def test_explorer_html_is_self_contained_with_one_frame_per_dynamic_range():
    html, drs = _explorer_html()
    assert html.startswith('<div id="dr-explorer"')
    assert re.search(r'<input id="dr-explorer-range" type="range" min="0" max="2"', html)
    assert '<img id="dr-explorer-img" src="data:image/jpeg;base64,' in html
    frames = re.findall(r'"data:image/jpeg;base64,[A-Za-z0-9+/=]+"', html)
    assert len(set(frames)) == len(drs)  # in the script's array; every frame differs
    assert "http" not in html  # nothing fetched from a network
    assert [f"{d:g} dB" for d in drs] == re.findall(r'"(\d+ dB)"', html.split("var labels = ")[1].split(";")[0])


CHROMIUM = __import__("shutil").which("chromium") or __import__("shutil").which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine")
def test_explorer_slider_changes_the_image_in_headless_chromium(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (a test extra) is not installed")
    html, drs = _explorer_html()
    page_path = tmp_path / "explorer.html"
    page_path.write_text(f"<!doctype html><html><body>{html}</body></html>")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            errors = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(("file:", "data:")) else r.abort())
            page.goto(page_path.as_uri(), wait_until="load")
            before = page.evaluate("document.querySelector('#dr-explorer img').src")
            page.evaluate("""() => { const r = document.querySelector('#dr-explorer input[type=range]');
                r.value = '0'; r.dispatchEvent(new Event('input')); r.dispatchEvent(new Event('change')); }""")
            after = page.evaluate("document.querySelector('#dr-explorer img').src")
            label = page.evaluate("document.querySelector('#dr-explorer output').textContent")
            loaded = page.evaluate("document.querySelector('#dr-explorer img').naturalWidth")
        finally:
            browser.close()
    assert before != after and after.startswith("data:image/jpeg;base64,")
    assert label == f"{drs[0]:g} dB"
    assert loaded > 0
    assert not errors


def test_bmode_colour_bar_is_ticked_in_db_from_minus_dr_to_zero():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from uslib.plots import show_bmode

    def bar(dr):
        fig, ax = plt.subplots()
        try:
            show_bmode(ax, np.zeros((10, 10), np.uint8), dynamic_range_db=dr, colorbar=True)
            cax = fig.axes[-1]
            return cax.get_yticks(), [t.get_text().replace("\u2212", "-") for t in cax.get_yticklabels()]
        finally:
            plt.close(fig)

    ticks, labels = bar(45)
    assert labels == ["0", "-10", "-20", "-30", "-40", "-45"]
    np.testing.assert_allclose(ticks, [255 * (45 - d) / 45 for d in (0, 10, 20, 30, 40, 45)])
    ticks, labels = bar(42)  # -40 would crowd -42 (black): dropped
    assert labels == ["0", "-10", "-20", "-30", "-42"]
    assert ticks[-1] == 0
