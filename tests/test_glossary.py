"""The glossary (book/glossary.md) and the links to it.

Every glossary term that the prose of a page uses must be linked to the
glossary, with ``{term}`` somewhere on that page (once is enough: a reader
who meets "dB" sees where it is explained). Prose means the text a reader
reads as sentences: code, maths, headings, tables, directive options,
links and existing roles are left out, so neither a variable name nor a
heading nor a column head counts as a use. The hand-written pages of
``book/`` are checked, and the markdown cells of the chapters.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import yaml

from uslib.config import REPO_ROOT

GLOSSARY = REPO_ROOT / "book" / "glossary.md"
#: A use of a term in prose besides its own names (e.g. "Nakagami $m$": the maths is removed before matching).
EXTRA_USES = {
    "Nakagami m": [r"\bNakagami\b"],
    "AUC": [r"\bAUCs?\b"],
    "ROI": [r"\bROIs?\b"],
    "dynamic range": [r"\bdynamic ranges?\b"],
    "envelope": [r"\benvelopes?\b"],
}
#: Names too common as ordinary words to count as a use of the term on their own.
NOT_A_USE = {"fold", "CI", "decibel"}


def glossary_terms(text: str) -> dict[str, list[str]]:
    """``{term: [its names]}`` of a MyST ``{glossary}`` block: names are unindented lines, definitions indented."""
    m = re.search(r"```\{glossary\}\n(.*?)\n```", text, re.S)
    assert m, "no ```{glossary} block"
    terms: dict[str, list[str]] = {}
    names: list[str] = []
    for line in m.group(1).splitlines():
        if line.strip() and not line[0].isspace():
            names.append(line.strip())
        elif line.strip() and names:
            terms[names[0]] = names
            names = []
    return terms


#: Fenced blocks whose content is not prose (code, the glossary itself, pasted outputs, the bibliography).
_NOT_PROSE = re.compile(r"\{(code-cell|code-block|code|glossary|bibliography|glue:\w+|glue|math|raw|csv-table)\}")
_FENCE = re.compile(r"^\s*(`{3,}|~{3,}|:{3,})(.*)$")


def _without_fenced_code(text: str) -> str:
    """Lines of a MyST text outside non-prose fences; the fence lines and directive options dropped."""
    out, stack = [], []  # stack of (fence, keeps its content)
    for line in text.splitlines():
        m = _FENCE.match(line)
        if m:
            fence, info = m.group(1), m.group(2).strip()
            if stack and fence[0] == stack[-1][0][0] and len(fence) >= len(stack[-1][0]) and not info:
                stack.pop()
                continue
            if info or not stack or fence[0] != stack[-1][0][0]:
                keeps = info.startswith("{") and not _NOT_PROSE.match(info)
                stack.append((fence, keeps and all(k for _, k in stack)))
                continue
        if stack and not stack[-1][1]:
            continue
        if stack and re.match(r"\s*:[\w-]+:", line):  # a directive option
            continue
        out.append(line)
    return "\n".join(out)


def prose(markdown: str) -> str:
    """The sentences of a MyST page: no code, maths, headings, tables, directive options, roles or link targets."""
    text = re.sub(r"^---\n.*?\n---\n", "", markdown, flags=re.S)  # front matter
    text = _without_fenced_code(text)
    text = re.sub(r"\$\$.*?\$\$|\$[^$\n]+\$", " ", text, flags=re.S)  # maths
    text = re.sub(r"\{[\w:-]+\}`[^`]*`", " ", text)  # roles (term, cite, glue, ref, ...)
    text = re.sub(r"``[^`]*``|`[^`\n]*`", " ", text)  # inline code
    text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets
    lines = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith(("#", "|", "<", ">")):
            continue
        lines.append(line)
    return "\n".join(lines)


def linked_terms(markdown: str) -> set[str]:
    """Targets of the page's ``{term}`` roles (``{term}`text <target>``` or ``{term}`target```), lower case."""
    out = set()
    for body in re.findall(r"\{term\}`([^`]+)`", markdown):
        m = re.search(r"<([^>]+)>\s*$", body)
        out.add((m.group(1) if m else body).strip().lower())
    return out


def unlinked_uses(markdown: str, terms: dict[str, list[str]]) -> dict[str, str]:
    """``{term: an excerpt}`` for every term the prose uses and the page does not link to the glossary."""
    text, linked = prose(markdown), linked_terms(markdown)
    found = {}
    for term, names in terms.items():
        if {n.lower() for n in names} & linked:
            continue
        patterns = EXTRA_USES.get(term, []) + [
            (r"\b" if n[0].isalnum() else "") + re.escape(n) + r"\b" for n in names if n not in NOT_A_USE
        ]
        for pat in patterns:
            # an acronym or a mixed-case name (dB, ROI, Nakagami) is matched as written, a word in any case
            flags = 0 if any(c.isupper() for c in pat) else re.I
            m = re.search(pat, text, flags)
            if m:
                found[term] = text[max(0, m.start() - 40) : m.end() + 40].replace("\n", " ")
                break
    return found


def _toc_pages() -> list[Path]:
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    return [
        REPO_ROOT / f"{f}.md" for f in files if (REPO_ROOT / f"{f}.md").is_file() and not f.startswith("book/chapters/")
    ]


TERMS = glossary_terms(GLOSSARY.read_text())
HAND_WRITTEN = [p for p in _toc_pages() if p.name not in ("glossary.md", "references.md")]
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_glossary_defines_the_terms_the_chapters_assume():
    needed = {
        "dB",
        "dynamic range",
        "TGC",
        "ROI",
        "BI-RADS",
        "AUC",
        "QUS",
        "Nakagami m",
        "RF",
        "envelope",
        "speckle",
        "PSF",
        "log compression",
        "linear SVM",
        "cross-validation",
        "Platt scaling",
    }
    assert needed <= set(TERMS), needed - set(TERMS)
    toc = (REPO_ROOT / "_toc.yml").read_text()
    assert "book/glossary" in toc


def test_the_checker_finds_an_unlinked_term_and_accepts_a_linked_one():
    terms = {"dB": ["dB", "decibel"], "AUC": ["AUC"]}
    assert set(unlinked_uses("The image spans 60 dB.\n", terms)) == {"dB"}
    assert unlinked_uses("The image spans 60 {term}`dB`; again 40 dB.\n", terms) == {}
    assert unlinked_uses("# AUC\n\n| AUC |\n\n`auc = 1`\n\n$\\mathrm{AUC}$\n", terms) == {}
    assert unlinked_uses("An {term}`area <AUC>` of 0.9.\n", terms) == {}
    fenced = "```{note}\nSee the AUC.\n```\n\n```python\nauc = 'AUC'\n```\n\nat 60 dB\n"
    assert set(unlinked_uses(fenced, terms)) == {"AUC", "dB"}, "a note's text is prose, code is not"


@pytest.mark.parametrize("page", HAND_WRITTEN, ids=lambda p: p.name)
def test_hand_written_pages_link_the_glossary_terms_they_use(page):
    missing = unlinked_uses(page.read_text(), TERMS)
    assert not missing, f"{page.name}: terms used without a {{term}} link: {missing}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapters_link_the_glossary_terms_they_use(notebook):
    nb = nbformat.read(notebook, as_version=4)
    markdown = "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    missing = unlinked_uses(markdown, TERMS)
    assert not missing, f"{notebook.stem}: terms used without a {{term}} link: {sorted(missing)}"
