"""Every chapter frames itself for a student (issue 22): learning objectives, prerequisites that link to where
they are taught, time to learn, a summary and further reading with DOIs. Checked on the stored notebooks.

The frames are written into the notebooks: objectives in a cell after the overview, the summary and
further reading at the end.
"""

from __future__ import annotations

import re

import nbformat
import pytest

from uslib.config import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
LINK = re.compile(r"\{(doc|ref|term|cite:[pt])\}`[^`]+`|\[[^\]]+\]\([^)]+\)")
DOI = re.compile(r"https://doi\.org/10\.\d{4,9}/\S+|\{cite:[pt]\}`[^`]+`")


def frame_problems(markdown: str) -> list[str]:
    """What a chapter's markdown lacks of the frame; [] when it has all of it."""
    problems = []
    sections = {m.group(1).strip(): m.end() for m in re.finditer(r"^## (.+)$", markdown, re.M)}

    def body(name):
        start = sections.get(name)
        if start is None:
            return None
        nxt = [s for s in sections.values() if s > start]
        end = min(nxt) if nxt else len(markdown)
        text = markdown[start:end]
        return re.sub(r"^## .*$", "", text, flags=re.M) if nxt else text

    objectives = body("Learning objectives")
    if objectives is None:
        problems.append("no '## Learning objectives'")
    else:
        n = len(re.findall(r"^\s*\d+\.\s+\S", objectives, re.M))
        if not 3 <= n <= 5:
            problems.append(f"{n} numbered objectives (3 to 5 wanted)")
    prereq = body("Prerequisites")
    rows = (
        []
        if prereq is None
        else [
            r for r in prereq.splitlines() if r.startswith("| ") and not r.startswith("| Concepts") and "---" not in r
        ]
    )
    if not rows:
        problems.append("no prerequisites table")
    unlinked = [r.split("|")[1].strip() for r in rows if not LINK.search(r)]
    if unlinked:
        problems.append(f"prerequisites without a link to where they are taught: {unlinked}")
    if prereq is not None and "**Time to learn**" not in prereq:
        problems.append("no time to learn")
    summary = body("Summary")
    if not summary or len(summary.split()) < 40:
        problems.append("no '## Summary' of at least 40 words")
    reading = body("Further reading")
    if reading is None:
        problems.append("no '## Further reading'")
    elif not re.search(r"https://doi\.org/10\.", reading):
        problems.append("further reading without a DOI link")
    return problems


def test_the_frame_check_accepts_a_framed_chapter_and_names_what_is_missing():
    framed = (
        "# T\n\n## Prerequisites\n\n| Concepts | Importance | Notes |\n|---|---|---|\n"
        "| {doc}`01_data` | Necessary | x |\n\n- **Time to learn**: about 5 minutes.\n\n## Overview\n\ntext\n\n"
        "## Learning objectives\n\n1. Do a.\n2. Do b.\n3. Do c.\n\n## Summary\n\n"
        + "word " * 40
        + "\n\n## Further reading\n\n- {cite:t}`k`, [doi:10.1/x](https://doi.org/10.1/x)\n"
    )
    assert frame_problems(framed) == []
    bare = (
        "# T\n\n## Prerequisites\n\n| Concepts | Importance | Notes |\n|---|---|---|\n| A linear SVM | Necessary | |\n"
    )
    found = "\n".join(frame_problems(bare))
    for what in ("Learning objectives", "A linear SVM", "time to learn", "Summary", "Further reading"):
        assert what in found, (what, found)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_chapter_has_objectives_linked_prerequisites_summary_and_further_reading(notebook):
    nb = nbformat.read(notebook, as_version=4)
    markdown = "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert frame_problems(markdown) == []
