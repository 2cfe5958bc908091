"""The written house: ARCHITECTURE.md's module list, the changelog's version, no citation of a missing document."""

from __future__ import annotations

import re
import subprocess
import tomllib

import uslib
from uslib.config import REPO_ROOT

MISSING_DOC = "design" + ".md"  # a document the repository does not contain


def _section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def test_architecture_lists_every_module_of_uslib_once():
    listed = re.findall(
        r"^\| `([A-Za-z0-9_]+\.py)` \|", _section((REPO_ROOT / "ARCHITECTURE.md").read_text(), "Modules"), flags=re.M
    )
    on_disk = sorted(p.name for p in (REPO_ROOT / "uslib").glob("*.py"))
    assert len(listed) == len(set(listed)), "a module is listed twice in ARCHITECTURE.md"
    assert sorted(listed) == on_disk, (
        f"ARCHITECTURE.md lists modules that are gone: {sorted(set(listed) - set(on_disk))}; "
        f"misses: {sorted(set(on_disk) - set(listed))}"
    )


def test_versions_agree_with_the_changelog():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    top = re.search(r"^## \[?(\d+\.\d+\.\d+)\]?", (REPO_ROOT / "CHANGELOG.md").read_text(), flags=re.M)
    assert top, "CHANGELOG.md has no version heading"
    assert project == uslib.__version__ == top.group(1), (project, uslib.__version__, top.group(1))


def test_nothing_cites_a_document_the_repository_does_not_contain():
    if (REPO_ROOT / MISSING_DOC).exists():
        return
    files = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.split()
    if not files:  # not a git checkout: the source folders
        files = [
            str(p.relative_to(REPO_ROOT))
            for d in ("uslib", "tests", "notebooks", "book", "benchmarks")
            for p in (REPO_ROOT / d).rglob("*")
            if p.is_file() and "chapters" not in p.parts
        ]
    citing = [
        f for f in files if (REPO_ROOT / f).is_file() and MISSING_DOC in (REPO_ROOT / f).read_text(errors="ignore")
    ]
    assert not citing, f"{MISSING_DOC} is cited by {citing}"


def test_the_makefile_has_a_fast_tier_beside_the_whole_suite():
    make = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r'^test-fast: .*\n\t\$\(PY\) -m pytest -m "not slow"$', make, flags=re.M)
    assert re.search(r"^test: .*\n\t\$\(PY\) -m pytest$", make, flags=re.M)


#: The house's guide for a module's size; a module over it says why in its docstring.
MODULE_LINES_GUIDE = 900


def test_a_module_over_the_size_guide_says_why():
    import ast

    for path in sorted((REPO_ROOT / "uslib").glob("*.py")):
        text = path.read_text()
        n_lines = len(text.splitlines())
        if n_lines <= MODULE_LINES_GUIDE + 50:  # "about 900"
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        assert "900-line guide" in doc, (
            f"uslib/{path.name} has {n_lines} lines, over the {MODULE_LINES_GUIDE}-line guide, "
            "and its docstring does not say why (split it by job, or say why it is one)"
        )
