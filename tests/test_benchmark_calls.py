"""The benchmarks call ``uslib`` as it is now: every keyword they pass is a parameter of the function.

The benchmarks are not run by the test suite (they take minutes to hours), so
a renamed or regrouped parameter (e.g. the cross-validation settings becoming
one :class:`uslib.cvsettings.CVSettings`) would otherwise break them silently
until someone measures. This reads each script's syntax tree, resolves the
names it imports from ``uslib`` and checks each call's keywords against the
function's signature.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

from uslib.config import REPO_ROOT

SCRIPTS = sorted((REPO_ROOT / "benchmarks").glob("*.py"))


def _uslib_names(tree: ast.AST) -> dict[str, object]:
    """Local name -> the uslib module or object it is bound to, from every import in the file."""
    names: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("uslib") and a.asname:
                    names[a.asname] = importlib.import_module(a.name)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("uslib") and node.level == 0:
            mod = importlib.import_module(node.module)
            for a in node.names:
                obj = getattr(mod, a.name, None)
                if obj is None:  # a submodule imported by name
                    obj = importlib.import_module(f"{node.module}.{a.name}")
                names[a.asname or a.name] = obj
    return names


def _target(func: ast.expr, names: dict[str, object]):
    if isinstance(func, ast.Name):
        return names.get(func.id)
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in names:
        return getattr(names[func.value.id], func.attr, None)
    return None


def bad_keywords(path: Path) -> list[str]:
    """``name(kw=...)`` calls in ``path`` whose keyword the called uslib function does not take."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = _uslib_names(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        fn = _target(node.func, names)
        if fn is None or inspect.ismodule(fn) or not callable(fn):
            continue
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            continue
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            continue
        for kw in node.keywords:
            if kw.arg is not None and kw.arg not in params:
                found.append(f"line {node.lineno}: {ast.unparse(node.func)}(... {kw.arg}=...)")
    return found


def test_the_check_finds_a_stale_keyword(tmp_path):
    script = tmp_path / "bench_x.py"
    script.write_text(
        "from uslib import pipeline\n"
        "def main(fs, m):\n"
        "    return pipeline.get_matrix('r', fs, m, ranges=[40, 60], svm_c=1.0)\n"
    )
    assert bad_keywords(script) == ["line 3: pipeline.get_matrix(... svm_c=...)"]
    script.write_text("from uslib import pipeline\npipeline.get_matrix('r', None, None, ranges=[40, 60])\n")
    assert bad_keywords(script) == []


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmarks_pass_only_keywords_the_functions_take(script):
    assert not bad_keywords(script), f"{script.name} calls uslib with stale keywords: {bad_keywords(script)}"
