"""The environment variables: one table names them all, and the library reads them through it."""

from __future__ import annotations

import re

import pytest

from uslib import envvars, store
from uslib.backbones import BACKBONES
from uslib.weights import weights_md5_env

PKG = store.PACKAGE_DIR
SOURCES = {p.stem: p.read_text() for p in sorted(PKG.glob("*.py"))}
NAME = re.compile(r"USLIB_[A-Z0-9_]*[A-Z0-9]\b")


def test_every_uslib_variable_in_the_source_is_in_the_table():
    found = {(m, n) for m, text in SOURCES.items() for n in NAME.findall(text)}
    missing = sorted(f"{n} (uslib/{m}.py)" for m, n in found if n not in envvars.VARIABLES)
    assert not missing, f"environment variables missing from uslib.envvars.VARIABLES: {missing}"


def test_every_backbone_has_its_weights_md5_variable():
    for name in BACKBONES:
        assert weights_md5_env(name) in envvars.VARIABLES, name


@pytest.mark.parametrize("name", sorted(envvars.VARIABLES))
def test_the_table_says_who_reads_each_variable_and_why(name):
    v = envvars.VARIABLES[name]
    assert v.reason in ("process", "runner", "rehearsal") and v.meaning
    reader = SOURCES[v.module]
    assert name in reader or (name.startswith("USLIB_WEIGHTS_MD5_") and "USLIB_WEIGHTS_MD5_" in reader), (
        f"{name}: uslib/{v.module}.py does not mention it"
    )


def test_read_refuses_an_unlisted_name_and_treats_empty_as_unset(monkeypatch):
    with pytest.raises(KeyError, match="USLIB_NOPE is not a uslib environment variable"):
        envvars.read("USLIB_NOPE")
    monkeypatch.setenv("USLIB_JOBS", "")
    assert envvars.read("USLIB_JOBS") is None and envvars.read_int("USLIB_JOBS", 7) == 7
    monkeypatch.setenv("USLIB_JOBS", "2")
    assert envvars.read("USLIB_JOBS") == "2" and envvars.read_int("USLIB_JOBS") == 2
    monkeypatch.setenv("USLIB_JOBS", "two")
    with pytest.raises(ValueError, match="USLIB_JOBS='two' must be an integer"):
        envvars.read_int("USLIB_JOBS")


def test_the_documentation_table_has_one_row_per_variable():
    rows = envvars.markdown_table().splitlines()[2:]
    assert len(rows) == len(envvars.VARIABLES)
    assert all(f"`{n}`" in "\n".join(rows) for n in envvars.VARIABLES)
