"""The house rules of the library, checked on its source (no imports needed).

- no module uses another module's private (``_``-prefixed) names;
- no import cycles between ``uslib`` modules;
- neither the stages nor the pipeline import the runner;
- only the store builds run-directory paths (no ``"run.json"``, ``"results"``,
  ``"features"`` literals joined onto a run directory elsewhere);
- one cross-validation loop: the fold loop is written once, in ``evaluation``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from uslib import store

PKG = Path(store.PACKAGE_DIR)
MODULES = {p.stem: ast.parse(p.read_text()) for p in sorted(PKG.glob("*.py"))}
STAGES = ("data", "oasbud", "phantom", "speckle", "lesionmodel", "reconstruction", "augmentation", "features",
          "backbones", "tfruntime", "precision", "weights", "networks", "featurecache", "extraction", "cluster",
          "evaluation", "robustness", "qus", "morphology", "featurespace", "plots", "paper")


def _imports(tree) -> dict[str, set[str]]:
    """uslib module -> names imported from it (``*module*`` for ``from . import module``)."""
    out: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").startswith("uslib")):
            mod = (node.module or "").removeprefix("uslib").lstrip(".")
            if mod:
                out.setdefault(mod, set()).update(a.name for a in node.names)
            else:
                for a in node.names:
                    out.setdefault(a.name, set()).add("*module*")
    return out


def _module_aliases(tree) -> dict[str, str]:
    """Local alias -> uslib module, for ``from . import evaluation as ev``."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and not node.module:
            for a in node.names:
                out[a.asname or a.name] = a.name
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("uslib."):
                    out[a.asname or a.name] = a.name.split(".")[1]
    return out


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_uses_another_modules_private_names(name):
    tree = MODULES[name]
    bad = [f"from .{mod} import {n}" for mod, names in _imports(tree).items() for n in names
           if n.startswith("_") and n != "__version__" and mod != name]
    aliases = _module_aliases(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            if node.attr.startswith("_") and not node.attr.startswith("__") and aliases[node.value.id] != name:
                bad.append(f"{node.value.id}.{node.attr} (line {node.lineno})")
    assert not bad, f"uslib/{name}.py uses private names of other modules: {bad}"


def _graph() -> dict[str, set[str]]:
    return {name: {m for m in _imports(tree) if m in MODULES and m != name} for name, tree in MODULES.items()}


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(n, path):
        state[n] = 1
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycles.append(path[path.index(m):] + [m] if m in path else [n, m])
            elif m not in state:
                visit(m, path + [m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("name", STAGES + ("pipeline", "store", "config", "chaptergraph", "envvars"))
def test_stages_and_pipeline_do_not_import_the_runner(name):
    assert not {"run", "pages", "__main__"} & set(_imports(MODULES[name])), f"{name} imports the runner"


RUN_DIR_NAMES = ("run.json", "results", "features", "robustness", "events.jsonl", "manifest.csv")


@pytest.mark.parametrize("name", sorted(set(MODULES) - {"store"}))
def test_only_the_store_names_run_directory_paths(name):
    found = []
    for node in ast.walk(MODULES[name]):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            for side in (node.left, node.right):
                if isinstance(side, ast.Constant) and side.value in RUN_DIR_NAMES:
                    found.append(f"/ {side.value!r} (line {node.lineno})")
    assert not found, f"uslib/{name}.py builds run-directory paths itself: {found}"


def _fold_loops(tree) -> list[int]:
    """Line numbers of ``for ... in enumerate(folds)`` / ``for tr, te in folds`` loops."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.For):
            it = node.iter
            if isinstance(it, ast.Call) and getattr(it.func, "id", "") == "enumerate" and it.args:
                it = it.args[0]
            if isinstance(it, ast.Name) and "fold" in it.id and isinstance(node.target, ast.Tuple):
                lines.append(node.lineno)
    return lines


def test_one_cross_validation_loop():
    loops = {name: _fold_loops(tree) for name, tree in MODULES.items()}
    fitting = {}
    for name, lines in loops.items():
        src = (PKG / f"{name}.py").read_text().splitlines()
        for ln in lines:  # a loop that fits a model per fold (not one that only checks or prints folds)
            body = "\n".join(src[ln - 1: ln + 25])
            if ".fit(" in body or "make()" in body:
                fitting.setdefault(name, []).append(ln)
    assert set(fitting) <= {"evaluation"} and sum(map(len, fitting.values())) == 1, \
        f"fold loops that fit models: {fitting}"
