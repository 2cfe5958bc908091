"""The house rules of the library, checked on its source (no imports needed).

- no module uses another module's private (``_``-prefixed) names;
- no import cycles between ``uslib`` modules;
- neither the stages nor the pipeline import the runner;
- only the store builds run-directory paths (no ``"run.json"``, ``"results"``,
  ``"features"`` literals joined onto a run directory elsewhere);
- one cross-validation loop: a loop that fits a model per split is the fold loop of ``crossval``
  (or another place listed in ``PER_SPLIT_FITS``, with its reason);
- the cross-validation settings travel as one object (``uslib.cvsettings.CVSettings``).
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from uslib import store

PKG = Path(store.PACKAGE_DIR)
MODULES = {p.stem: ast.parse(p.read_text()) for p in sorted(PKG.glob("*.py"))}
STAGES = (
    "data",
    "oasbud",
    "phantom",
    "speckle",
    "lesionmodel",
    "reconstruction",
    "augmentation",
    "features",
    "backbones",
    "tfruntime",
    "precision",
    "weights",
    "networks",
    "featurecache",
    "extraction",
    "cluster",
    "evaluation",
    "robustness",
    "qus",
    "morphology",
    "featurespace",
    "plots",
    "paper",
    "classifier",
    "folds",
    "crossval",
    "statistics",
    "platt",
    "diagnostics",
    "uncertainty",
)


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
    bad = [
        f"from .{mod} import {n}"
        for mod, names in _imports(tree).items()
        for n in names
        if n.startswith("_") and n != "__version__" and mod != name
    ]
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
                cycles.append(path[path.index(m) :] + [m] if m in path else [n, m])
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


#: What the profile schema may import: the store, the settings object, and the fold primitives it checks
#: ``n_splits`` with; and the phantom's patient rule (:func:`uslib.phantom.patient_assignment`), which
#: tells before anything runs how many patients a phantom run has (a known exception, to be inverted).
CONFIG_MAY_IMPORT = {"store", "cvsettings", "folds", "phantom"}
#: Modules of the cross-validation with no ``uslib`` dependency beyond these (they sit below the stages).
LEAVES = {
    "cvsettings": set(),
    "folds": set(),
    "statistics": set(),
    "classifier": {"cvsettings", "platt"},
    "platt": set(),
    "uncertainty": set(),
    "readings": set(),
}


def test_config_depends_on_no_stage():
    assert set(_imports(MODULES["config"])) <= CONFIG_MAY_IMPORT, sorted(_imports(MODULES["config"]))


@pytest.mark.parametrize("name", sorted(LEAVES))
def test_the_cross_validation_modules_are_layered(name):
    assert set(_imports(MODULES[name])) <= LEAVES[name], f"{name} imports {sorted(_imports(MODULES[name]))}"


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


_FIT_CALLS = ("fit", "fit_transform", "partial_fit", "fit_predict", "fit_estimator")
#: The loops that may fit a model per split, with the reason each is allowed.
PER_SPLIT_FITS = {
    ("crossval", "_fold_loop"): "the cross-validation loop: every train/test evaluation of the package runs here",
    ("classifier", "LinearSVM.fit"): "the classifier's own calibration: Platt's sigmoid is fitted to decision values "
    "cross-validated by lesion inside the training images of one outer split",
}


def _split_like(node, assigned: dict) -> bool:
    """An iterable of splits: ``x.split(...)``, a name or attribute about folds/splits, or one assigned from those."""
    if isinstance(node, ast.Call):
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr == "split":
            return True
        # enumerate(folds), list(cv.split(...)), tqdm(folds), zip(folds, ...)
        return any(_split_like(a, assigned) for a in node.args)
    if isinstance(node, ast.Name):
        return any(w in node.id.lower() for w in ("fold", "split")) or any(
            _split_like(v, {}) for v in assigned.get(node.id, [])
        )
    if isinstance(node, ast.Attribute):
        return any(w in node.attr.lower() for w in ("fold", "split"))
    return False


def _fits(body) -> bool:
    for stmt in body:
        for n in ast.walk(stmt):
            if isinstance(n, ast.Call):
                f = n.func
                name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                if name in _FIT_CALLS:
                    return True
    return False


def _per_split_fits(tree) -> list[tuple[str, int]]:
    """(qualified function, line) of every for-loop over splits whose body fits a model."""
    out = []

    def visit(node, qual: str):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{qual}{child.name}.")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{qual}{child.name}"
                assigned: dict[str, list] = {}
                for n in ast.walk(child):
                    if isinstance(n, ast.Assign):
                        for t in n.targets:
                            if isinstance(t, ast.Name):
                                assigned.setdefault(t.id, []).append(n.value)
                for n in ast.walk(child):
                    if isinstance(n, ast.For) and _split_like(n.iter, assigned) and _fits(n.body):
                        out.append((name, n.lineno))
                    elif isinstance(n, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
                        elts = [n.key, n.value] if isinstance(n, ast.DictComp) else [n.elt]
                        if any(_split_like(g.iter, assigned) for g in n.generators) and _fits(elts):
                            out.append((name, n.lineno))
                visit(child, f"{name}.")

    visit(tree, "")
    return out


def test_one_cross_validation_loop():
    """Any loop that fits a model per split, wherever it is, is one of :data:`PER_SPLIT_FITS`."""
    found = {(mod, fn): line for mod, tree in MODULES.items() for fn, line in _per_split_fits(tree)}
    unexpected = {f"{m}.{f} (line {ln})" for (m, f), ln in found.items() if (m, f) not in PER_SPLIT_FITS}
    assert not unexpected, f"loops that fit a model per split outside the cross-validation loop: {unexpected}"
    missing = set(PER_SPLIT_FITS) - set(found)
    assert not missing, f"allowed per-split fits no longer found (update PER_SPLIT_FITS): {missing}"


def test_the_per_split_finder_sees_loops_the_old_rule_missed():
    src = textwrap.dedent("""
        def calibrate(svc, gram, y, g):
            splits = list(cv.split(gram, y, groups=g))
            for train, test in splits:
                clone(svc).fit(gram[train], y[train])
        def checks_only(folds):
            for tr, te in folds:
                print(len(tr))
        def per_fold(folds, X, y):
            return [model().fit(X[tr], y[tr]) for tr, _ in folds]
    """)
    assert [f for f, _ in _per_split_fits(ast.parse(src))] == ["calibrate", "per_fold"]


#: Settings of :class:`uslib.cvsettings.CVSettings` that travel in the object, never as loose arguments
#: (``n_splits`` is also the argument of the fold primitives, e.g. ``patient_folds``, so it is not counted).
_THREADED = ("svm_c", "class_weight", "standardize", "calibration", "lesion_weighting", "n_repeats", "cv_seed")
#: Where a setting may be a parameter: the schema, the object itself, and the classifier (its own constructor).
_SETTINGS_HOME = {"config", "cvsettings", "classifier"}


def _signatures_with(name: str) -> list[str]:
    """``module.function`` of every function with a parameter ``name`` (outside the settings' home)."""
    out = []
    for mod, tree in MODULES.items():
        if mod in _SETTINGS_HOME:
            continue
        classifier = {
            id(n) for c in ast.walk(tree) if isinstance(c, ast.ClassDef) and c.name == "LinearSVM" for n in ast.walk(c)
        }  # the classifier's own constructor, wherever it lives
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and id(fn) not in classifier:
                a = fn.args
                if name in {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs}:
                    out.append(f"{mod}.{fn.name}")
    return sorted(out)


def test_settings_travel_as_one_object():
    """A cross-validation setting is a parameter of at most two functions outside its home.

    The settings go whole (:class:`uslib.cvsettings.CVSettings`) from the profile to the
    classifier; a function that takes ``svm_c`` (or ``calibration``, ...) by itself is a
    place a new setting would have to be threaded by hand.
    """
    from uslib.cvsettings import CVSettings

    assert set(_THREADED) <= set(CVSettings.field_names())
    found = {name: _signatures_with(name) for name in _THREADED}
    assert all(len(v) <= 2 for v in found.values()), f"settings passed loose: {found}"
    assert not found["svm_c"], f"svm_c is a parameter of {found['svm_c']}"
