"""Launching a chapter elsewhere: the repository's address and the notebooks' install cell.

The repository's URL and branch are set once, in ``_config.yml``
(``repository.url``, ``repository.branch``); the book's launch buttons
(Binder, Colab) and the first cell of every source notebook are derived
from them. That first cell installs ``uslib`` from the repository when it
cannot be imported (on Colab, which opens one notebook from GitHub and
nothing else); where ``uslib`` is installed (this checkout, Binder, the
runner) it does nothing. It is tagged ``remove-cell``: the book does not
show it.

After changing the repository's URL, rewrite the cells::

    python -m uslib.launch
"""

from __future__ import annotations

import os
from pathlib import Path

from .config import NOTEBOOK_DIR, REPO_ROOT, chapters

__all__ = ["INSTALL_TAG", "repository", "install_cell_source", "ensure_install_cell", "main"]

#: Tag of the install cell (with ``remove-cell``, which hides it in the book).
INSTALL_TAG = "uslib-install"


def repository(config_file: str | os.PathLike = REPO_ROOT / "_config.yml") -> tuple[str, str]:
    """``(url, branch)`` of the repository, from the book's ``_config.yml``."""
    import yaml

    repo = (yaml.safe_load(Path(config_file).read_text()) or {}).get("repository") or {}
    url = str(repo.get("url", "")).rstrip("/")
    if not url.startswith("https://"):
        raise ValueError(f"{config_file}: repository.url must be an https URL, got {url!r}")
    return url, str(repo.get("branch") or "main")


def install_cell_source(url: str, branch: str) -> str:
    """Source of the cell that installs uslib from ``url@branch`` when it is missing.

    Plain Python (no ``%pip`` magic), so every tool that parses the notebook reads it.

    Examples
    --------
    >>> src = install_cell_source("https://github.com/o/r", "main")
    >>> '"uslib @ git+https://github.com/o/r@main"' in src, compile(src, "cell", "exec") is not None
    (True, True)
    """
    return (
        "# Colab, or a Jupyter without this compendium: install its library, uslib, when it is missing.\n"
        "# (Here, on Binder and in the book's runner it is installed, and this cell does nothing.)\n"
        "import importlib.util, subprocess, sys\n"
        'if importlib.util.find_spec("uslib") is None:\n'
        f'    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "uslib @ git+{url}@{branch}"], '
        "check=True)"
    )


def ensure_install_cell(path: str | os.PathLike, url: str, branch: str) -> bool:
    """Make the install cell the first cell of the notebook at ``path``; True when the file changed.

    An existing install cell (tagged :data:`INSTALL_TAG`) is updated in place and
    keeps its id; otherwise a new one is inserted at the top. Outputs stay empty.
    """
    import nbformat

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    source = install_cell_source(url, branch)
    found = [c for c in nb.cells if INSTALL_TAG in c.metadata.get("tags", [])]
    if found and nb.cells[0] is found[0] and len(found) == 1 and found[0].source == source:
        return False
    for c in found:
        nb.cells.remove(c)
    cell = found[0] if found else nbformat.v4.new_code_cell()
    cell.source = source
    cell.outputs, cell.execution_count = [], None
    cell.metadata["tags"] = [INSTALL_TAG, "remove-cell"]
    nb.cells.insert(0, cell)
    nbformat.write(nb, path)
    return True


def main(notebook_dir: str | os.PathLike = NOTEBOOK_DIR) -> int:
    """``python -m uslib.launch``: (re)write the install cell of every chapter from ``_config.yml``."""
    url, branch = repository()
    for nb in chapters(notebook_dir):
        changed = ensure_install_cell(nb, url, branch)
        print(
            f"{nb.relative_to(REPO_ROOT) if nb.is_relative_to(REPO_ROOT) else nb}: "
            f"{'install cell written' if changed else 'up to date'}"
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
