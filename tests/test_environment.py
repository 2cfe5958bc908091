"""The set-up: pins in pyproject.toml and environment.yml agree; the supported Pythons
are where every pin installs (python-support.toml) and are stated alike everywhere;
`make` picks a suitable interpreter or stops at once; profiles are complete."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
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
    for name in (
        "jupyter-book",
        "papermill",
        "numpy",
        "scipy",
        "tensorflow-cpu",
        "scikit-learn",
        "matplotlib",
        "seaborn",
        "pandas",
        "tqdm",
        "pooch",
        "pyyaml",
        "pytest",
    ):
        assert name in py, name
    assert py["jupyter-book"].startswith("1."), "the book is Jupyter Book v1"


def test_installed_versions_match_the_pins():
    from importlib import metadata

    for name, version in _pins_pyproject().items():
        if name == "tensorflow-cpu" and not _installed(name):  # `make venv TF=tensorflow[and-cuda]==<pin>`
            name = "tensorflow"
        assert metadata.version(name) == version, name


def _installed(name: str) -> bool:
    from importlib import metadata

    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


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


# --- Supported Pythons: python-support.toml records where each pin installs ---------


def _support() -> dict:
    return tomllib.loads((REPO_ROOT / "python-support.toml").read_text())


def _v(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


def _supported() -> list[str]:
    """The Pythons every pin installs on, oldest first (computed, never typed)."""
    record = _support()
    common = set(record["checked"])
    for entry in record["pins"].values():
        common &= set(entry["pythons"])
    return sorted(common, key=_v)


def _next_minor(text: str) -> str:
    major, minor = _v(text)
    return f"{major}.{minor + 1}"


def test_python_support_record_has_every_pin_at_its_pinned_version():
    record = _support()
    recorded = {name.lower(): entry["version"] for name, entry in record["pins"].items()}
    assert recorded == _pins_pyproject(), "python-support.toml must list every pin, at its version"
    for name, entry in record["pins"].items():
        assert entry["pythons"], name
        assert set(entry["pythons"]) <= set(record["checked"]), name


def test_supported_pythons_are_a_contiguous_run_the_pins_share():
    supported = _supported()
    assert supported, "no Python has a wheel for every pin"
    for older, newer in zip(supported, supported[1:]):
        assert _next_minor(older) == newer, f"gap in the supported Pythons: {supported}"


def test_requires_python_states_the_supported_range():
    lo, hi = _supported()[0], _supported()[-1]
    meta = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert meta["requires-python"] == f">={lo},<{_next_minor(hi)}"


def test_readme_states_the_supported_range():
    lo, hi = _supported()[0], _supported()[-1]
    stated = re.findall(r"Python (3\.\d+)–(3\.\d+)", (REPO_ROOT / "README.md").read_text())
    assert stated, "the README names no Python range"
    assert set(stated) == {(lo, hi)}


def test_environment_yml_states_the_supported_range():
    lo, hi = _supported()[0], _supported()[-1]
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pythons = [d for d in env["dependencies"] if isinstance(d, str) and re.match(r"python\b", d)]
    assert pythons == [f"python>={lo},<{_next_minor(hi)}"]


def test_makefile_tries_the_supported_pythons():
    m = re.search(r"^PY_SUPPORTED\s*:=\s*(.*)$", (REPO_ROOT / "Makefile").read_text(), re.M)
    assert m and m.group(1).split() == _supported()


def test_the_suite_runs_on_a_supported_python():
    assert f"{sys.version_info[0]}.{sys.version_info[1]}" in _supported()


# --- `make` picks an interpreter for a new .venv, or stops at once with one line ----

MAKE = shutil.which("make")
needs_make = pytest.mark.skipif(MAKE is None, reason="make is not installed")


def _fake_python(path, version: str | None):
    """A stand-in interpreter that reports `version`; None: one that fails like a pyenv shim.

    Each call appends its arguments to ``calls.log`` beside it, so a test can tell a version
    query (``-c ...``) from real work (``-m venv``, ``-m pip``).
    """
    log = f'echo "$@" >> "{path.parent / "calls.log"}"\n'
    if version is None:
        body = f'echo "pyenv: {path.name}: command not found" >&2\nexit 127\n'
    else:
        body = f"echo {version}\n"
    path.write_text("#!/bin/sh\n" + log + body)
    path.chmod(0o755)
    return path


def _work_done(tmp_path) -> list[str]:
    """Calls of the fake interpreters under ``tmp_path`` other than version queries (venv, pip, ...)."""
    return [
        line
        for log in tmp_path.rglob("calls.log")
        for line in log.read_text().splitlines()
        if not line.startswith("-c ")
    ]


def _make(tmp_path, *args, pythons: dict[str, str | None] | None = None):
    """Runs make in the repository with PATH holding only the fake `pythons`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, version in (pythons or {}).items():
        _fake_python(bin_dir / name, version)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "LC_ALL": "C"}
    done = subprocess.run([MAKE, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    return done, _work_done(tmp_path)


def _stopped_with_one_line(done, work) -> str:
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Python 3.11, 3.12 or 3.13" in lines[0] and "PYTHON=python3." in lines[0]
    assert "Traceback" not in done.stderr and "ERROR" not in done.stderr
    assert work == [], f"the interpreters were asked to work before the refusal: {work}"
    return lines[0]


@needs_make
@pytest.mark.parametrize("version", ["3.10", "3.14"])
def test_make_book_stops_at_once_on_an_unsupported_python(tmp_path, version):
    venv = tmp_path / "venv"
    fake = _fake_python(tmp_path / "python-fake", version)
    done, work = _make(tmp_path, "book", f"VENV={venv}", f"PYTHON={fake}")
    line = _stopped_with_one_line(done, work)
    assert f"PYTHON={fake} is Python {version}" in line
    assert "Install one and choose it: make book PYTHON=python3.13" in line
    assert not venv.exists(), "nothing is made before the check"


@needs_make
def test_make_names_a_suitable_python_when_the_one_given_is_not(tmp_path):
    fake = _fake_python(tmp_path / "python-fake", "3.14")
    done, work = _make(
        tmp_path,
        "-n",
        "test",
        f"VENV={tmp_path / 'venv'}",
        f"PYTHON={fake}",
        pythons={"python3.13": None, "python3.12": "3.12"},
    )
    line = _stopped_with_one_line(done, work)
    assert "Choose python3.12: make test PYTHON=python3.12" in line
    assert "pyenv" not in done.stderr


@needs_make
def test_make_falls_back_to_the_newest_versioned_python(tmp_path):
    venv = tmp_path / "venv"
    done, work = _make(
        tmp_path,
        "-n",
        "book",
        f"VENV={venv}",
        pythons={"python3": "3.10", "python3.13": None, "python3.12": "3.12", "python3.11": "3.11"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"python3.12 -m venv {venv}"
    assert done.stderr == ""
    assert work == [], "a dry run (-n) only asks the interpreters their version"


@needs_make
def test_make_keeps_python3_when_it_is_supported(tmp_path):
    venv = tmp_path / "venv"
    done, _ = _make(tmp_path, "-n", "book", f"VENV={venv}", pythons={"python3": "3.12", "python3.13": "3.13"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"python3 -m venv {venv}"


@needs_make
@pytest.mark.parametrize("version", ["3.10", "3.14", None])
def test_make_stops_when_neither_python3_nor_a_versioned_python_fits(tmp_path, version):
    done, work = _make(
        tmp_path, "-n", "book", f"VENV={tmp_path / 'venv'}", pythons={"python3": version, "python3.12": None}
    )
    line = _stopped_with_one_line(done, work)
    found = f"is Python {version}" if version else "does not run"
    assert f"python3 {found} and none of python3.13, python3.12 or python3.11 runs here" in line
    assert "pyenv" not in done.stderr


@needs_make
def test_make_refuses_a_stale_venv_of_an_unsupported_python(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    _fake_python(venv / "bin" / "python", "3.10")
    done, work = _make(tmp_path, "test", f"VENV={venv}", pythons={"python3": "3.12"})
    assert done.returncode != 0 and work == [], work
    assert done.stderr.strip().count("\n") == 0
    assert "is Python 3.10" in done.stderr and f"rm -rf {venv}" in done.stderr


@needs_make
def test_make_does_not_look_for_python_when_the_venv_is_fresh(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    _fake_python(venv / "bin" / "python", "3.14")
    (venv / ".installed").touch()  # newer than pyproject.toml
    done, _ = _make(tmp_path, "-n", "test", f"VENV={venv}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{venv}/bin/python -m pytest"]


def test_binder_builds_the_compendium_from_the_root_environment_yml():
    """The book's Binder button needs no other file: repo2docker reads environment.yml at the root
    (there is no binder/ folder to take precedence) and its pip section installs this package."""
    assert not (REPO_ROOT / "binder").exists() and not (REPO_ROOT / ".binder").exists()
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert "-e ." in pip, "uslib itself is installed"
    assert "ipykernel" in _pins_environment(), "the notebooks' python3 kernel"


@needs_make
def test_a_rebuild_keeps_the_tensorflow_build_the_venv_was_made_with(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    _fake_python(venv / "bin" / "python", "3.12")
    stamp = venv / ".installed"
    stamp.write_text("TF=tensorflow[and-cuda]==2.21.0\n")
    os.utime(stamp, (0, 0))  # older than pyproject.toml: a pull changed the pins, so make rebuilds
    done, work = _make(tmp_path, "-n", "venv", f"VENV={venv}")
    assert done.returncode == 0, done.stderr
    steps = done.stdout
    assert "install --quiet -r" in steps and "'tensorflow[and-cuda]==2.21.0'" in steps
    assert "-e '.[test]'" not in steps, "the pins' tensorflow-cpu would be installed over the CUDA build"
    assert "printf 'TF=%s\\n' 'tensorflow[and-cuda]==2.21.0'" in steps, "the choice is recorded again"
    # a venv made without TF rebuilds with the pins as they are
    stamp.write_text("TF=\n")
    os.utime(stamp, (0, 0))
    done, _ = _make(tmp_path, "-n", "venv", f"VENV={venv}")
    assert "-e '.[test]'" in done.stdout and "tensorflow[and-cuda]" not in done.stdout


def test_the_requirements_of_a_tf_build_are_the_pins_without_tensorflow_cpu():
    code = re.search(r"^py_reqs := (.*)$", (REPO_ROOT / "Makefile").read_text(), re.M).group(1)
    code = code.replace("\\\\n", "\\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pins = project["dependencies"] + project["optional-dependencies"]["test"]
    assert out.stdout.split() == [p for p in pins if not p.startswith("tensorflow-cpu")]
    assert len(out.stdout.split()) == len(pins) - 1
