"""Notebook hygiene: stored without outputs, kernel python3, one parameters cell
whose names are declared in the profile schema and whose literal defaults equal
the schema's and params/default.yaml, a validation cell right after it, and a
chapter that explains before it computes."""

from __future__ import annotations

import ast
import json

import pytest
import yaml

from uslib.config import PROFILE_DIR, parameter_specs
from uslib.launch import INSTALL_TAG, install_cell_source, repository
from uslib.run import chapters, notebook_parameters

NOTEBOOKS = chapters()


def test_the_seven_chapters_are_there():
    names = [p.stem for p in NOTEBOOKS]
    for stem in (
        "01_data",
        "02_reconstruction",
        "03_augmentation",
        "04_features",
        "05_cross_validation",
        "06_results",
        "07_robustness",
    ):
        assert stem in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_clean(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs", []) == [], f"{path.name}: a cell carries outputs"
            assert cell.get("execution_count") is None, f"{path.name}: execution count stored"
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} parameters cells"
    # the install cell for Colab comes first (hidden in the book); then the chapter explains before it computes
    assert INSTALL_TAG in nb["cells"][0].get("metadata", {}).get("tags", [])
    assert nb["cells"][1]["cell_type"] == "markdown", "a chapter explains before it computes"
    assert "".join(nb["cells"][1]["source"]).lstrip().startswith("# "), "the cell after it is the chapter title"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_first_cell_installs_uslib_from_the_configured_repository_only_when_missing(path):
    nb = json.loads(path.read_text())
    installs = [c for c in nb["cells"] if INSTALL_TAG in c.get("metadata", {}).get("tags", [])]
    assert len(installs) == 1 and installs[0] is nb["cells"][0]
    cell = installs[0]
    assert "remove-cell" in cell["metadata"]["tags"], "the book does not show it"
    url, branch = repository()
    assert "".join(cell["source"]) == install_cell_source(url, branch), "run: python -m uslib.launch"
    assert 'find_spec("uslib") is None' in "".join(cell["source"]), "installs only when uslib is missing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameter_defaults_are_literal_and_equal_the_schema_and_the_default_profile(path):
    specs = parameter_specs()
    default = yaml.safe_load((PROFILE_DIR / "default.yaml").read_text())
    params = notebook_parameters(path)
    assert params, f"{path.name} declares no parameters"
    for name, info in params.items():
        assert name in specs, f"{path.name}: parameter {name} is not declared in uslib.config.Profile"
        assert not specs[name].runner_only, f"{path.name}: {name} is marked runner-only in the schema"
        value = ast.literal_eval(info["default"])  # raises on a non-literal default
        assert value == specs[name].default, f"{path.name}: {name} = {value!r}, the schema has {specs[name].default!r}"
        if name in default:
            assert value == default[name], f"{path.name}: {name} = {value!r}, default.yaml has {default[name]!r}"
        assert info["help"], f"{path.name}: parameter {name} has no comment"


def test_every_schema_parameter_is_used_by_a_chapter_or_the_runner():
    declared = set().union(*(notebook_parameters(p) for p in NOTEBOOKS))
    for name, spec in parameter_specs().items():
        assert spec.runner_only or name in declared, f"{name}: declared in the schema, used by no chapter"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_cell_after_the_parameters_cell_validates_them(path):
    nb = json.loads(path.read_text())
    i = next(i for i, c in enumerate(nb["cells"]) if "parameters" in c.get("metadata", {}).get("tags", []))
    cell = nb["cells"][i + 1]
    assert cell["cell_type"] == "code"
    assert f'ch = chapter.setup(globals(), "{path.stem}")' in "".join(cell["source"])
    assert len("".join(cell["source"]).strip().splitlines()) <= 3  # the set-up is one call
