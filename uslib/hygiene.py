"""What a published page may show of the machine that made it: no absolute paths.

The executed chapters (:func:`uslib.run.clean_chapter`) and the generated
reference pages (:mod:`uslib.pages`) pass their text through
:func:`replace_paths`: the run directory is shown relative to the repository
root (the chapters' working directory), a path inside the repository becomes
relative (``uslib/pipeline.py``), and the home folder becomes ``~`` (the
Keras cache: ``~/.keras/models/...``). :data:`ABSOLUTE_PATH` is what the tests
look for on the pages.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from .store import REPO_ROOT, resolve_path

__all__ = ["ABSOLUTE_PATH", "repo_relative", "path_replacements", "replace_paths"]

#: An absolute path of a machine (``/home/...``, ``/tmp/...``, ``/work/...``): never on a published page.
ABSOLUTE_PATH = re.compile(
    r"(?<![\w.~:/-])/(?:home|root|tmp|work|Users|var|opt|usr|mnt|srv|private|data|scratch|builds)/"
)


def repo_relative(path: str | os.PathLike) -> str:
    """A path as the chapters see it: relative to the repository root (their working directory).

    A relative path is exact there (every path of a profile is resolved against
    the repository root), so it can be shown and passed on unchanged.

    Examples
    --------
    >>> repo_relative(REPO_ROOT / "runs" / "tiny")
    'runs/tiny'
    >>> repo_relative("runs/tiny")
    'runs/tiny'
    """
    path = resolve_path(path)
    try:
        return path.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return Path(os.path.relpath(path, REPO_ROOT)).as_posix()


def path_replacements(run_dir: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """``(absolute path, shown as)`` pairs, longest first, that :func:`replace_paths` applies.

    Examples
    --------
    >>> dict(path_replacements(REPO_ROOT / "runs" / "x"))[str(REPO_ROOT / "runs" / "x")]
    'runs/x'
    """
    pairs = []
    if run_dir is not None:
        pairs.append((str(resolve_path(run_dir)), repo_relative(run_dir)))
    pairs.append((str(REPO_ROOT), "."))
    home = os.path.expanduser("~").rstrip(os.sep)
    if home and home != "~":
        pairs.append((home, "~"))
    return sorted(set(pairs), key=lambda p: -len(p[0]))


def _pattern(pairs: list[tuple[str, str]]) -> re.Pattern:
    # one pass over the text, longest path first, each only as a whole path (then "/" or no path character)
    return re.compile(
        "|".join(f"(?P<p{i}>{re.escape(old)})(?:(?P<s{i}>/)|(?![\\w.-]))" for i, (old, _) in enumerate(pairs))
    )


def replace_paths(value: Any, pairs: list[tuple[str, str]]) -> tuple[Any, int]:
    """``value`` (a str, or JSON-like lists and dicts of them) with the paths of ``pairs`` replaced; and the count.

    A path inside the repository loses the ``./`` (``<repo>/uslib/run.py`` ->
    ``uslib/run.py``). Values under ``image/*`` keys (base64 pictures) are left alone.

    Examples
    --------
    >>> pairs = [("/w/repo/runs/t", "runs/t"), ("/w/repo", "."), ("/home/me", "~")]
    >>> replace_paths("/w/repo/uslib/run.py:3, /w/repo/runs/t/x, /home/me/.keras, /w/repo-old, /w/repo", pairs)
    ('uslib/run.py:3, runs/t/x, ~/.keras, /w/repo-old, .', 4)
    """
    if not pairs:
        return value, 0
    pattern = _pattern(pairs)

    def sub(m: re.Match) -> str:
        i = int(next(k for k, v in m.groupdict().items() if v is not None and k.startswith("p"))[1:])
        shown, slash = pairs[i][1], m.group(f"s{i}")
        if slash and shown == ".":
            return ""
        return shown + (slash or "")

    def one(text: str) -> tuple[str, int]:
        return pattern.subn(sub, text)

    def walk(v: Any) -> tuple[Any, int]:
        if isinstance(v, str):
            return one(v)
        if isinstance(v, list):
            done = [walk(x) for x in v]
            return [x for x, _ in done], sum(n for _, n in done)
        if isinstance(v, dict):
            out, total = type(v)(), 0
            for k, x in v.items():
                if isinstance(k, str) and k.startswith("image/"):
                    out[k] = x
                    continue
                out[k], n = walk(x)
                total += n
            return out, total
        return v, 0

    return walk(value)
