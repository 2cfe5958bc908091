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
from uslib.run import chapters, notebook_parameters

NOTEBOOKS = chapters()


def test_the_six_chapters_are_there():
    names = [p.stem for p in NOTEBOOKS]
    for stem in ("01_data", "02_reconstruction", "03_augmentation", "04_features",
                 "05_cross_validation", "06_results", "07_robustness"):
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
    assert nb["cells"][0]["cell_type"] == "markdown", "a chapter explains before it computes"
    assert "".join(nb["cells"][0]["source"]).lstrip().startswith("# "), "first cell is the chapter title"


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
    assert f'params = config.chapter_parameters(globals(), "{path.stem}")' in "".join(cell["source"])
