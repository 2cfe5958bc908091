"""ruff, configured in pyproject.toml ([tool.ruff]), passes on the library, tests and benchmarks."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from uslib.config import REPO_ROOT


def test_ruff_check_passes():
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed here (it is pinned in the `test` extra: pip install -e '.[test]')")
    res = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, f"ruff check found problems:\n{res.stdout}{res.stderr}"


def test_ruff_format_leaves_the_code_as_it_is():
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed here (it is pinned in the `test` extra: pip install -e '.[test]')")
    res = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "--no-cache", "uslib", "tests", "benchmarks"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, f"ruff format would change these files (run `ruff format`):\n{res.stdout}{res.stderr}"
