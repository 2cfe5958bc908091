"""Run profiles and paths.

A profile (``params/*.yaml``) is a flat mapping of notebook parameter names
to values. The runner passes each chapter the parameters it declares in its
``parameters`` cell; a chapter run on its own uses the literal defaults of
that cell, which equal ``params/default.yaml``.

Relative paths in a profile are resolved against the repository root, so a
chapter gives the same result whatever the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["REPO_ROOT", "PROFILE_DIR", "load_profile", "resolve_path", "run_dir"]

#: The repository root: the folder holding ``_config.yml`` and ``uslib/``.
REPO_ROOT = Path(__file__).resolve().parents[1]
PROFILE_DIR = REPO_ROOT / "params"

#: Parameters every profile must define.
REQUIRED = (
    "profile",
    "run_dir",
    "data_source",
    "n_lesions",
    "data_seed",
    "dynamic_ranges_db",
    "margins_mm",
    "backbones",
    "weights",
    "n_splits",
    "cv_seed",
    "svm_c",
)


class ProfileError(ValueError):
    """A profile file is missing, malformed or lacks a required parameter."""


def resolve_path(path: str | os.PathLike | None) -> Path | None:
    """Resolve ``path`` against the repository root unless it is absolute.

    Examples
    --------
    >>> resolve_path("runs/x") == REPO_ROOT / "runs" / "x"
    True
    >>> resolve_path(None) is None
    True
    """
    if path is None or path == "":
        return None
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else (REPO_ROOT / p)


def run_dir(path: str | os.PathLike) -> Path:
    """The run directory for ``path`` (resolved, created if missing)."""
    p = resolve_path(path)
    assert p is not None
    p.mkdir(parents=True, exist_ok=True)
    return p


def load_profile(profile: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML profile.

    Parameters
    ----------
    profile : str or path
        A path to a YAML file, or the name of one in ``params/``
        (``"default"``, ``"tiny"``, ``"paper"``).

    Returns
    -------
    dict
        The flat parameter mapping.

    Raises
    ------
    ProfileError
        If the file does not exist, is not a mapping, or lacks a required key.
    """
    import yaml

    p = Path(profile)
    if not p.suffix:
        p = PROFILE_DIR / f"{profile}.yaml"
    elif not p.is_absolute() and not p.exists():
        p = REPO_ROOT / p
    if not p.exists():
        raise ProfileError(f"profile {str(profile)!r}: no such file ({p})")
    try:
        params = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ProfileError(f"profile {p}: not valid YAML: {e}") from e
    if not isinstance(params, dict):
        raise ProfileError(f"profile {p}: expected a mapping of parameter names to values")
    missing = [k for k in REQUIRED if k not in params]
    if missing:
        raise ProfileError(f"profile {p}: missing parameter(s) {missing}")
    return params
