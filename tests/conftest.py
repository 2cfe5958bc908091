"""Test-wide guard: nothing in the test process may reach beyond this machine.

Connections to loopback addresses (Jupyter kernels, the browser driver, the
download tests' web server) are allowed; any other address fails the test at
once with a clear message. The memo of file digests
(:func:`uslib.download.file_digest`) goes to a temporary folder, not the
user's cache. Chapters run by the runner's tests are executed, not reused
(:mod:`uslib.chaptercache` is off, except in its own tests).
"""

from __future__ import annotations

import ipaddress
import socket

import pytest

_real_connect = socket.socket.connect
_real_getaddrinfo = socket.getaddrinfo


def _is_local(host) -> bool:
    if host is None:
        return True
    host = host.decode() if isinstance(host, bytes) else str(host)
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_getaddrinfo(host, *args, **kwargs):
    if not _is_local(host):
        raise RuntimeError(f"test tried to resolve a network host: {host!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


def _guarded_connect(self, address):
    host = address[0] if isinstance(address, tuple) else None
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(host):
        raise RuntimeError(f"test tried to reach the network: {address!r}")
    return _real_connect(self, address)


@pytest.fixture(autouse=True, scope="session")
def _digest_memo(tmp_path_factory):
    import os

    old = os.environ.get("USLIB_DIGEST_MEMO")
    os.environ["USLIB_DIGEST_MEMO"] = str(tmp_path_factory.mktemp("memo") / "digests.json")
    yield
    if old is None:
        os.environ.pop("USLIB_DIGEST_MEMO", None)
    else:
        os.environ["USLIB_DIGEST_MEMO"] = old


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", _guarded_getaddrinfo)


@pytest.fixture(autouse=True)
def _chapters_execute(monkeypatch):
    """The runner's tests run their chapters: the reuse of unchanged chapters (issue 24) is off,
    except where tests/test_chaptercache.py turns it on."""
    monkeypatch.setenv("USLIB_CHAPTER_CACHE", "off")
