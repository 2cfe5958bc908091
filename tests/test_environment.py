"""The set-up: pins in pyproject.toml and environment.yml agree; profiles are complete."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from uslib.config import REPO_ROOT, ProfileError, load_profile, resolve_path


def _pins_pyproject() -> dict[str, str]:
    meta = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in meta.get("optional-dependencies", {}).values():
        reqs += extra
    return dict(_split(r) for r in reqs)


def _pins_environment() -> dict[str, str]:
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return dict(_split(r) for r in pip if not r.startswith("-e"))


def _split(req: str) -> tuple[str, str]:
    m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;]+)\s*", req)
    assert m, f"{req!r} is not pinned with =="
    return m.group(1).lower(), m.group(2)


def test_every_dependency_is_pinned_and_environment_yml_agrees():
    py, env = _pins_pyproject(), _pins_environment()
    assert py == env


def test_stack_of_the_compendium_is_there():
    py = _pins_pyproject()
    for name in ("jupyter-book", "papermill", "numpy", "scipy", "tensorflow-cpu", "scikit-learn",
                 "matplotlib", "seaborn", "pandas", "tqdm", "pooch", "pyyaml", "pytest"):
        assert name in py, name
    assert py["jupyter-book"].startswith("1."), "the book is Jupyter Book v1"


def test_installed_versions_match_the_pins():
    from importlib import metadata

    for name, version in _pins_pyproject().items():
        assert metadata.version(name) == version, name


@pytest.mark.parametrize("name", ["default", "tiny", "paper"])
def test_profiles_load_and_share_keys(name):
    params = load_profile(name)
    assert params["profile"] == name
    assert set(params) == set(load_profile("default")), "profiles must define the same parameters"


def test_profile_errors_are_clear(tmp_path):
    with pytest.raises(ProfileError, match="no such file"):
        load_profile(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: x\n")
    with pytest.raises(ProfileError, match="missing parameter"):
        load_profile(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ProfileError, match="mapping"):
        load_profile(bad)


def test_paths_resolve_against_the_repository_not_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_path("runs/default") == REPO_ROOT / "runs" / "default"
    assert resolve_path(tmp_path) == tmp_path


def test_ci_runs_the_readme_test_command():
    readme = (REPO_ROOT / "README.md").read_text()
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make book" in readme
    assert re.search(r"^make test$", ci, re.M)


def test_the_network_guard_refuses_remote_hosts_and_allows_loopback():
    import socket
    import urllib.request

    with pytest.raises(Exception, match="network"):
        urllib.request.urlopen("http://example.com/", timeout=2)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    cli = socket.socket()
    cli.connect(srv.getsockname())  # loopback is fine
    cli.close()
    srv.close()
