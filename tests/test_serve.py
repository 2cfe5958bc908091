"""``python -m uslib serve``: the built book over HTTP on the loopback address (search needs it)."""

from __future__ import annotations

import threading
import urllib.request

import pytest

from uslib.__main__ import main
from uslib.serve import book_server


def test_serves_the_book_on_loopback_only(tmp_path):
    (tmp_path / "index.html").write_text("<html>the book</html>")
    (tmp_path / "searchindex.js").write_text("Search.setIndex({})")
    server = book_server(tmp_path, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/searchindex.js", timeout=10) as r:
            assert r.read() == b"Search.setIndex({})"
    finally:
        server.shutdown()
        server.server_close()


def test_an_unbuilt_book_is_one_line_naming_the_build(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="build the book first"):
        book_server(tmp_path)
    assert main(["serve", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "python -m uslib run" in err
