"""Chapters as readers meet them (04-07; the opening block: all seven), checked on the stored notebooks (no execution).

- every figure is glued and shown through a ``glue:figure`` with alt text, a
  name and a caption, and no figure is left to the inline backend;
- tables of confidence intervals use ``uslib.tables`` (one line per CI);
- every chapter, 01-07, opens with the same Pythia-style block: a
  "Prerequisites" heading, a Concepts | Importance | Notes table and
  "Time to learn";
- the warning box of chapters 06 and 07 is the first thing under the title,
  before any code that computes;
- chapter 05 has at least three exercises, each with a solution whose code runs;
- set-up and glue-only cells hide their input (01-03 so far), and figures carry
  one numbering: the book's, the paper's named as "the paper's Figure N".
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ["04_features", "05_cross_validation", "06_results", "07_robustness"]


def _nb(name):
    return nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)


def _figures(markdown: str) -> dict[str, dict[str, str]]:
    """``glue:figure`` directives of a markdown text: name -> options (and ``caption``)."""
    out = {}
    for m in re.finditer(r"```\{glue:figure\}\s+(\S+)\n(.*?)```", markdown, flags=re.S):
        opts, caption = {}, []
        for line in m.group(2).splitlines():
            o = re.match(r":(\w+):\s*(.*)", line)
            if o and not caption:
                opts[o.group(1)] = o.group(2).strip()
            elif line.strip():
                caption.append(line.strip())
        opts["caption"] = " ".join(caption)
        out[m.group(1)] = opts
    return out


@pytest.mark.parametrize("name", CHAPTERS)
def test_every_figure_is_glued_with_alt_text_name_and_caption(name):
    nb = _nb(name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    figures = _figures(markdown)
    glued = set()
    for cell in code:
        src = cell.source
        if re.search(r"plt\.(subplots|figure)\(", src):
            names = re.findall(r"glue\(\"(fig_\w+)\",\s*fig\)", src)
            assert names, f"{name}: a cell draws a figure without gluing it:\n{src[:200]}"
            assert "plt.close(fig)" in src, f"{name}: figure {names} is glued but also left open (shown twice)"
            # shown in Jupyter by the glue call, in the book only through the captioned glue:figure
            assert "remove-output" in cell.metadata.get("tags", []), f"{name}: {names} would show twice in the book"
            glued.update(names)
    assert glued, f"{name} has no figure"
    assert glued == set(figures), f"{name}: glued {sorted(glued)} but captioned {sorted(figures)}"
    for fig, opts in figures.items():
        alt = opts.get("alt", "")
        assert len(alt.split()) >= 8 and "/" not in alt and ".png" not in alt, f"{fig}: alt text {alt!r}"
        assert opts.get("name", "").startswith("fig-"), f"{fig}: no :name:"
        assert len(opts["caption"].split()) >= 8, f"{fig}: caption {opts['caption']!r}"


ALL_CHAPTERS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
BANNER = ["```{glue:md} status_banner", ":format: myst", "```"]
TABLE_HEAD = "| Concepts | Importance | Notes |"
TIME_TO_LEARN = re.compile(r"- \*\*Time to learn\*\*: about \d+ minutes(, exercises included|, plus [^.]+)?\.")


def _opening_block(name) -> tuple[list[str], list[list[str]]]:
    """The shape of a chapter's opening (its title cell up to ``## Overview``) and its table rows.

    Each non-blank line becomes a token; a line the Pythia-style block does not
    allow becomes ``other: <line>``, so any other layout gives another shape.
    """
    first = next(c for c in _nb(name).cells if c.cell_type == "markdown")  # after the install cell
    assert "\n## Overview\n" in first.source, f"{name}: no Overview section in the title cell"
    head = first.source.split("\n## Overview\n")[0]
    lines = [ln.rstrip() for ln in head.splitlines() if ln.strip()]
    if lines[1:4] == BANNER:  # the warning box, checked below
        lines = lines[:1] + lines[4:]
    shape, rows = [], []
    for ln in lines:
        if not shape and ln.startswith("# "):
            token = "title"
        elif ln == "## Prerequisites":
            token = "prerequisites"
        elif ln == TABLE_HEAD:
            token = "table head"
        elif ln == "|---|---|---|":
            token = "table rule"
        elif ln.startswith("| ") and ln.endswith("|") and shape and shape[-1] in ("table rule", "rows"):
            token = "rows"
            rows.append([c.strip() for c in ln.strip("|").split(" | ")])
        elif TIME_TO_LEARN.fullmatch(ln):
            token = "time to learn"
        else:
            token = f"other: {ln}"
        if not (token == "rows" and shape[-1] == "rows"):
            shape.append(token)
    return shape, rows


@pytest.mark.parametrize("name", ALL_CHAPTERS)
def test_chapter_opens_with_pythia_prerequisites_and_time_to_learn(name):
    shape, rows = _opening_block(name)
    assert shape == ["title", "prerequisites", "table head", "table rule", "rows", "time to learn"], shape
    for row in rows:
        assert len(row) == 3 and row[0], f"{name}: {row}"
        assert row[1] in ("Necessary", "Helpful"), f"{name}: importance {row[1]!r}"
    markdown = "\n".join(c.source for c in _nb(name).cells if c.cell_type == "markdown")
    assert markdown.count("## Prerequisites") == 1
    assert "Before you" not in markdown and "Time to read" not in markdown  # the old styles


def test_every_chapter_opens_with_the_same_block():
    assert len(ALL_CHAPTERS) == 7, ALL_CHAPTERS
    shapes = {name: tuple(_opening_block(name)[0]) for name in ALL_CHAPTERS}
    assert len(set(shapes.values())) == 1, shapes


def _is_setup(cell) -> bool:
    """The install cell, the parameters cell and the validation cell: nothing computed yet."""
    tags = cell.metadata.get("tags", [])
    return "uslib-install" in tags or "parameters" in tags or "chapter.setup(" in cell.source


@pytest.mark.parametrize("name", ALL_CHAPTERS)
def test_warning_box_is_under_the_title_before_any_computing_code(name):
    cells = _nb(name).cells
    first = next(c for c in cells if c.cell_type == "markdown").source
    lines = [ln for ln in first.splitlines() if ln.strip()]
    assert lines[0].startswith("# ") and lines[1:4] == BANNER
    banner_at = [i for i, c in enumerate(cells) if c.cell_type == "markdown" and "{glue:md} status_banner" in c.source]
    computing_at = [i for i, c in enumerate(cells) if c.cell_type == "code" and not _is_setup(c)]
    assert len(banner_at) == 1 and computing_at and banner_at[0] < computing_at[0]
    code = "\n".join(c.source for c in cells if c.cell_type == "code")
    assert code.count('glue("status_banner", Markdown(captions.status_banner(') == 1
    assert "display(Markdown(captions.status_banner(" not in code  # shown once, at the top


@pytest.mark.parametrize("name", ["05_cross_validation", "06_results", "07_robustness"])
def test_confidence_intervals_use_the_compact_format(name):
    code = "\n".join(c.source for c in _nb(name).cells if c.cell_type == "code")
    assert "format_ci_column(" in code
    assert not re.search(r'f"\{\w+:\.3f\} \[\{\w+:\.3f\}, \{\w+:\.3f\}\]"', code), "a CI still formatted by hand"


@pytest.mark.parametrize("name", CHAPTERS)
def test_no_cached_timing_is_quoted_as_a_finding(name):
    markdown = "\n".join(c.source for c in _nb(name).cells if c.cell_type == "markdown")
    assert not re.search(r"\{glue:text\}`\w*seconds\w*", markdown)


def test_chapter_05_has_three_exercises_with_executed_solutions():
    nb = _nb("05_cross_validation")
    cells = nb.cells
    labels = [
        m
        for c in cells
        if c.cell_type == "markdown"
        for m in re.findall(r"```\{exercise\}[^\n]*\n:label: (\S+)", c.source)
    ]
    assert len(labels) >= 3
    for label in labels:
        start = [
            i for i, c in enumerate(cells) if c.cell_type == "markdown" and f"```{{solution-start}} {label}" in c.source
        ]
        assert len(start) == 1, f"no gated solution for {label}"
        end = next(
            i
            for i in range(start[0], len(cells))
            if cells[i].cell_type == "markdown" and "```{solution-end}" in cells[i].source
        )
        body = cells[start[0] + 1 : end + 1]
        code = "\n".join(c.source for c in body if c.cell_type == "code")
        assert code, f"solution of {label} holds no code"
        assert "assert " in code and "glue(" in code, f"solution of {label} neither asserts nor glues"


# --- the plumbing out of sight; one figure numbering ---------------------------------------------

#: Chapters whose set-up and glue-only cells are hidden so far (04-07 join when their cells are tagged).
PLUMBING_HIDDEN = ALL_CHAPTERS


def _only_glue(source: str) -> bool:
    """A code cell whose statements are all ``glue(...)`` calls (or loops of them)."""
    import ast

    def glue_stmt(node):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            return getattr(node.value.func, "id", "") == "glue"
        return isinstance(node, ast.For) and all(glue_stmt(b) for b in node.body)

    body = ast.parse(source).body
    return bool(body) and all(glue_stmt(s) for s in body)


def test_only_glue_recognises_glue_cells():
    assert _only_glue('glue("a", 1, display=False)\nfor k in "xy":\n    glue(k, 2, display=False)')
    assert not _only_glue('x = 1\nglue("a", x, display=False)')
    assert not _only_glue("# nothing")


@pytest.mark.parametrize("name", PLUMBING_HIDDEN)
def test_setup_and_glue_only_cells_hide_their_input(name):
    shown = []
    for cell in _nb(name).cells:
        tags = cell.metadata.get("tags", [])
        if cell.cell_type != "code" or "parameters" in tags or {"remove-cell", "remove-input"} & set(tags):
            continue
        src = cell.source
        if "chapter.setup(" in src or "status_banner" in src or src.startswith("import ") or _only_glue(src):
            shown.append(src.splitlines()[0])
    assert not shown, f"{name}: set-up or glue-only cells shown on the page: {shown}"


@pytest.mark.parametrize("name", ALL_CHAPTERS)
def test_one_figure_numbering_scheme(name):
    """The book numbers its figures (Fig. N); the paper's numbers are named as such, never as the figure's own."""
    nb = _nb(name)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for fig, opts in _figures(markdown).items():
        assert not re.match(r"(Fig\.?|Figure)\s*\d", opts["caption"]), f"{name}: {fig} caption {opts['caption'][:60]!r}"
    titles = re.findall(r"""(?:set_title|suptitle)\(\s*f?["']((?:Fig\.?|Figure)\s*\d[^"']*)""", code)
    assert not titles, f"{name}: a figure's own title carries a figure number: {titles}"
