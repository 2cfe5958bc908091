"""Serve the built book on this machine: ``python -m uslib serve``.

Opened as a file (``file://``), the book reads fine but its search cannot
fetch the pages' summaries (browsers refuse those requests), so results show
titles only. Python's own :mod:`http.server` fixes that in one line, bound to
127.0.0.1 so that nothing outside this machine can reach it; no package is
needed for so small a job.
"""

from __future__ import annotations

import functools
import http.server
import os
from pathlib import Path

from .config import REPO_ROOT

__all__ = ["BOOK_HTML", "book_server", "serve"]

#: Where ``jupyter-book build`` (``python -m uslib run`` / ``build``) writes the HTML book.
BOOK_HTML = REPO_ROOT / "_build" / "html"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


def book_server(
    html_dir: str | os.PathLike = BOOK_HTML, *, port: int = 8000, host: str = "127.0.0.1"
) -> http.server.ThreadingHTTPServer:
    """An HTTP server of ``html_dir`` on ``host:port`` (not started; ``port=0``: any free port).

    Raises
    ------
    FileNotFoundError
        ``html_dir`` holds no ``index.html`` (the book is not built), naming the command that builds it.
    """
    html_dir = Path(html_dir)
    if not (html_dir / "index.html").is_file():
        raise FileNotFoundError(
            f"{html_dir} holds no index.html: build the book first "
            "(python -m uslib run --profile P, or python -m uslib build --profile P)"
        )
    handler = functools.partial(_QuietHandler, directory=str(html_dir))
    return http.server.ThreadingHTTPServer((host, port), handler)


def serve(html_dir: str | os.PathLike = BOOK_HTML, *, port: int = 8000) -> int:
    """Serve the book until Ctrl-C, printing its address; returns 0."""
    with book_server(html_dir, port=port) as server:
        host, port = server.server_address[:2]
        print(f"The book is at http://{host}:{port}/ (search included); Ctrl-C stops the server.", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
    return 0
