"""Notebook hygiene: stored without outputs, kernel python3, one parameters cell
whose literal defaults equal params/default.yaml, and a chapter that explains
before it computes."""

from __future__ import annotations

import ast
import json

import pytest

from uslib.config import load_profile
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
def test_parameter_defaults_are_literal_and_equal_the_default_profile(path):
    default = load_profile("default")
    params = notebook_parameters(path)
    assert params, f"{path.name} declares no parameters"
    for name, info in params.items():
        value = ast.literal_eval(info["default"])  # raises on a non-literal default
        if name in default:
            assert value == default[name], f"{path.name}: {name} = {value!r}, default.yaml has {default[name]!r}"
        assert info["help"], f"{path.name}: parameter {name} has no comment"
