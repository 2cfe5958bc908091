"""Every ``USLIB_*`` environment variable, in one table: its meaning, default, and why a profile cannot hold it.

The parameter profile (``params/*.yaml``, :mod:`uslib.config`) is the one
place for what a run computes: it is validated, recorded in the run
directory and printed in the book. An environment variable is used only for
what a profile cannot hold, for one of three reasons:

``process``
    It must reach a process before any profile is read, or one the profile
    never reaches (TensorFlow's thread pools are fixed before its first
    operation; a Dask worker is started before a chapter's parameters exist).
``runner``
    The runner hands it to the kernels it starts (a per-chapter file, a
    note that a check passed); it is internal and changes no result.
``rehearsal``
    It points a download at a local mirror for the tests. A profile is a
    published record of a run, so a test mirror must never be writable
    there; and the overrides never change how a file is labelled (only the
    published checksum makes "imagenet" or the public OASBUD file).

:data:`VARIABLES` lists them; :func:`read` is how the library reads one
(``tests/test_envvars.py`` checks that every ``USLIB_`` name in the source
is in the table). None of them changes a computed number.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["EnvVar", "VARIABLES", "read", "read_int", "markdown_table"]


@dataclass(frozen=True)
class EnvVar:
    """One environment variable of the library.

    Attributes
    ----------
    name : str
    default : str
        What applies when it is unset or empty ('' when nothing is set).
    meaning : str
    reason : {"process", "runner", "rehearsal"}
        Why a profile cannot hold it (module docstring).
    module : str
        The ``uslib`` module that reads it.
    """

    name: str
    default: str
    meaning: str
    reason: str
    module: str


VARIABLES: dict[str, EnvVar] = {
    v.name: v
    for v in (
        EnvVar(
            "USLIB_JOBS",
            "up to 3, at most the CPU count",
            "chapters run at once by `python -m uslib run` (`--jobs` overrides it)",
            "process",
            "run",
        ),
        EnvVar(
            "USLIB_CHAPTER_CACHE",
            "on",
            "off: `python -m uslib run` executes every chapter, reusing none from the chapter cache",
            "process",
            "chaptercache",
        ),
        EnvVar(
            "USLIB_TF_THREADS",
            "TensorFlow's choice",
            "threads of both TensorFlow pools; the local Dask cluster gives each worker its thread count",
            "process",
            "tfruntime",
        ),
        EnvVar(
            "USLIB_TF_INTRA_OP_THREADS",
            "USLIB_TF_THREADS",
            "threads of TensorFlow's intra-op pool (benchmarks try several)",
            "process",
            "tfruntime",
        ),
        EnvVar(
            "USLIB_TF_INTER_OP_THREADS",
            "USLIB_TF_THREADS",
            "threads of TensorFlow's inter-op pool (benchmarks try several)",
            "process",
            "tfruntime",
        ),
        EnvVar(
            "USLIB_EVENTS_FILE",
            "",
            "the events file of the run in progress: progress and damage reports "
            "reach the runner's terminal, not a page",
            "runner",
            "store",
        ),
        EnvVar(
            "USLIB_FOLDS_CHECKED",
            "",
            "notes that the phantom's fold check passed for these parameters, so a chapter's kernel does not repeat it",
            "runner",
            "config",
        ),
        EnvVar(
            "USLIB_DIGEST_MEMO",
            "the user cache folder",
            "the JSON memo of file digests (a file is hashed once per size and modification time)",
            "process",
            "download",
        ),
        EnvVar("USLIB_OASBUD_URL", "the Zenodo record", "where OASBUD.mat is downloaded from", "rehearsal", "oasbud"),
        EnvVar(
            "USLIB_OASBUD_SHA256",
            "the public file's SHA-256",
            "the SHA-256 the OASBUD download must have",
            "rehearsal",
            "oasbud",
        ),
        EnvVar(
            "USLIB_WEIGHTS_BASE_URL",
            "the Keras weights store",
            "where ImageNet weights are downloaded from (`<base>/<module>/<file>`)",
            "rehearsal",
            "weights",
        ),
        EnvVar(
            "USLIB_WEIGHTS_MD5_INCEPTION_V3",
            "the published MD5",
            "the MD5 the InceptionV3 weights download must have",
            "rehearsal",
            "weights",
        ),
        EnvVar(
            "USLIB_WEIGHTS_MD5_VGG19",
            "the published MD5",
            "the MD5 the VGG19 weights download must have",
            "rehearsal",
            "weights",
        ),
    )
}


def read(name: str) -> str | None:
    """The value of the listed variable ``name``; None when it is unset or empty.

    Raises
    ------
    KeyError
        ``name`` is not in :data:`VARIABLES` (every variable is listed there).

    Examples
    --------
    >>> VARIABLES["USLIB_JOBS"].reason
    'process'
    """
    if name not in VARIABLES:
        raise KeyError(
            f"{name} is not a uslib environment variable (uslib.envvars.VARIABLES); "
            f"known: {', '.join(sorted(VARIABLES))}"
        )
    return os.environ.get(name) or None


def read_int(name: str, default: int = 0) -> int:
    """:func:`read` as an integer; ``default`` when unset or empty.

    Raises
    ------
    ValueError
        The value is not an integer; the message names the variable.
    """
    value = read(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer") from None


def markdown_table() -> str:
    """:data:`VARIABLES` as a Markdown table (for the documentation)."""
    rows = ["| variable | default | meaning | why not in a profile | read by |", "|---|---|---|---|---|"]
    rows += [
        f"| `{v.name}` | {v.default or '(unset)'} | {v.meaning} | {v.reason} | `uslib.{v.module}` |"
        for v in VARIABLES.values()
    ]
    return "\n".join(rows)
