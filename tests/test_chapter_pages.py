"""Chapters 04-07 as readers meet them, checked on the stored notebooks (no execution).

- every figure is glued and shown through a ``glue:figure`` with alt text, a
  name and a caption, and no figure is left to the inline backend;
- tables of confidence intervals use ``uslib.tables`` (one line per CI);
- each chapter opens with a prerequisites / time-to-read block;
- chapter 06's warning box is the first thing under the title;
- chapter 05 has at least three exercises, each with a solution whose code runs.
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


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_opens_with_prerequisites_and_time_to_read(name):
    first = next(c for c in _nb(name).cells if c.cell_type == "markdown")  # after the install cell
    assert first.source.startswith("# ")
    head = first.source.split("## ")[0]
    assert "**Prerequisites:**" in head and re.search(r"\*\*Time to read:\*\* about \d+ minutes", head)


def test_results_page_warning_box_is_under_the_title():
    nb = _nb("06_results")
    first = next(c for c in nb.cells if c.cell_type == "markdown").source
    lines = [ln for ln in first.splitlines() if ln.strip()]
    assert lines[0].startswith("# ") and lines[1] == "```{glue:md} status_banner"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert 'glue("status_banner", Markdown(pipeline.status_banner(' in code
    assert "display(Markdown(pipeline.status_banner(" not in code  # shown once, at the top


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
    labels = [m for c in cells if c.cell_type == "markdown"
              for m in re.findall(r"```\{exercise\}[^\n]*\n:label: (\S+)", c.source)]
    assert len(labels) >= 3
    for label in labels:
        start = [i for i, c in enumerate(cells) if c.cell_type == "markdown" and f"```{{solution-start}} {label}" in c.source]
        assert len(start) == 1, f"no gated solution for {label}"
        end = next(i for i in range(start[0], len(cells))
                   if cells[i].cell_type == "markdown" and "```{solution-end}" in cells[i].source)
        body = cells[start[0] + 1:end + 1]
        code = "\n".join(c.source for c in body if c.cell_type == "code")
        assert code, f"solution of {label} holds no code"
        assert "assert " in code and "glue(" in code, f"solution of {label} neither asserts nor glues"
