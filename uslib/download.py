"""Verified downloads: the data set and the network weights, never a corrupt file in place.

:func:`download` fetches one URL into one file and checks it against a known
hash (SHA-256 for the data set, MD5 for the Keras weights, as Keras checks
them). The rules:

* **Never a corrupt file in place.** The bytes go to ``<path>.part`` beside
  the target; only when the whole file has arrived *and* its hash matches is
  it renamed onto ``path`` (an atomic rename on one file system).
* **Clear errors.** A download that ends short, a wrong hash, an HTML page
  served in place of the file (a proxy's or a portal's error page: reported as
  "the server returned an HTML page, not the file"), or an HTTP error raises
  :class:`DownloadError`, whose message names the URL, the expected and the
  actual hash (where one was computed) and the path. A ``.part`` file with the
  wrong hash is deleted, so the next attempt starts afresh.
* **Interrupted downloads resume.** A dropped connection or a short read is
  retried (``retries`` times, with a short pause) and resumed from the bytes
  already in ``<path>.part`` with an HTTP ``Range`` request; a server that
  ignores ``Range`` (answers 200) is read from the start again. A ``.part``
  left by a download that ran out of retries is resumed by the next call.
* **Nothing hangs.** A server that sends no byte for ``stall_s`` seconds
  is a dropped connection (retried, resumed); a download that has not
  finished ``deadline_s`` seconds after it started stops with an error
  (``.part`` kept, so the next call resumes), however slowly the bytes trickle.
* **Bytes reach ``.part`` as they arrive** (reads of at most
  :data:`_CHUNK_BYTES`, each returning what the socket has, then a flush), so
  a stalled or killed download keeps what it received.
* **Busy servers are waited for.** HTTP 429 and 503 (like 5xx) keep
  ``.part`` and are retried after the server's ``Retry-After`` (seconds or
  an HTTP date; at most :data:`MAX_RETRY_AFTER_S`, never past the deadline).
* **A progress bar** (tqdm, on standard error) for every download.

**Why not pooch.** The project depends on pooch (through scikit-image) and
would use it if it could; pooch 1.9's ``HTTPDownloader`` (checked against
its source) sends no ``Range`` header, so a dropped 300 MB download restarts
from zero; it has only requests' per-read timeout, so a server that trickles
a byte every half second never times out and there is no overall deadline;
it neither tells an HTML error page from the file nor honours
``Retry-After``. Those four are the rules above, so the download loop is
kept here (on :mod:`urllib.request`, in the standard library).

:func:`file_digest` hashes a local file, memoised on disk by (path, size,
modification time), so a pre-flight check that hashes a 297 MB data set does
so once, and a rerun is instant. The memo lives in
``$XDG_CACHE_HOME/uslib/digests.json`` (``~/.cache/uslib/digests.json``);
:data:`DIGEST_MEMO_ENV` names another file.

Nothing here reaches the network unless :func:`download` is called; the URLs
and hashes it is called with come from :mod:`uslib.data`
(:func:`uslib.oasbud.oasbud_source`) and :mod:`uslib.features`
(:func:`uslib.features.weights_source`), which document the test-only
environment overrides for rehearsals against a local mirror.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path

__all__ = [
    "DownloadError",
    "MAX_RETRY_AFTER_S",
    "retry_after_seconds",
    "DIGEST_MEMO_ENV",
    "download",
    "file_digest",
    "file_digests",
    "digest_memo_path",
    "looks_like_html",
]

#: Environment variable naming the on-disk memo of file digests (a JSON file).
DIGEST_MEMO_ENV = "USLIB_DIGEST_MEMO"

#: Largest read: each read returns what the socket has (up to this), which is then written and flushed.
_CHUNK_BYTES = 1 << 16
#: Longest wait a server's Retry-After can ask for, s.
MAX_RETRY_AFTER_S = 300.0
#: HTTP answers that mean "try again later": retried, the part kept.
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class DownloadError(RuntimeError):
    """A download that did not produce the expected file; the message says why and where."""


def looks_like_html(head: bytes) -> bool:
    """Whether the first bytes of a body look like an HTML page rather than a data file.

    Examples
    --------
    A page must start (after whitespace or a byte-order mark) with ``<`` and
    name an HTML element or doctype in its first bytes; a binary file whose
    first byte happens to be ``<`` (one in 256 random files) is not a page.

    >>> looks_like_html(b"  <!DOCTYPE html><html>"), looks_like_html(b"MATLAB 5.0 MAT-file")
    (True, False)
    >>> looks_like_html(b"<" + bytes([143, 2])), looks_like_html(b"<?xml version='1.0'?><html>")
    (False, True)
    """
    text = head.lstrip(b"\xef\xbb\xbf").lstrip().lower()
    if text[:1] != b"<":
        return False
    return any(tag in text for tag in (b"<!doctype html", b"<html", b"<head", b"<body", b"<title"))


def digest_memo_path() -> Path:
    """Where :func:`file_digest` keeps its memo (``$USLIB_DIGEST_MEMO`` or the user cache)."""
    if os.environ.get(DIGEST_MEMO_ENV):
        return Path(os.environ[DIGEST_MEMO_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "uslib" / "digests.json"


def _read_memo(path: Path) -> dict:
    try:
        memo = json.loads(path.read_text())
        return memo if isinstance(memo, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_memo(path: Path, memo: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:  # a read-only home: the memo is an optimisation only
        pass


def _hash_file(path: Path, algorithms: tuple[str, ...]) -> dict[str, str]:
    hs = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            for h in hs.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hs.items()}


def file_digests(
    path: str | os.PathLike, algorithms: tuple[str, ...] = ("sha256", "md5"), *, memo: bool = True
) -> dict[str, str]:
    """Hex digests of a file, memoised on disk by (resolved path, size, mtime).

    Only the digests not yet memoised are computed, all of them in one pass
    over the file (a pre-flight check needs only the data set's SHA-256 and
    the weights' MD5; the features stage later adds the weights' SHA-256).

    Parameters
    ----------
    path : path-like
    algorithms : tuple of str
        :mod:`hashlib` names, e.g. ``("sha256", "md5")``.
    memo : bool, default True
        Use and update the on-disk memo (:func:`digest_memo_path`).

    Returns
    -------
    dict
        Algorithm -> hex digest, for each of ``algorithms``.
    """
    p = Path(path).resolve()
    st = p.stat()
    entry_key = f"{p}|{st.st_size}|{st.st_mtime_ns}"
    memo_path = digest_memo_path() if memo else None
    store_ = _read_memo(memo_path) if memo_path else {}
    entry = store_.get(entry_key)
    entry = dict(entry) if isinstance(entry, dict) else {}
    missing = tuple(a for a in algorithms if a not in entry)
    if missing:
        entry.update(_hash_file(p, missing))
        if memo_path:
            for k in [k for k in store_ if k.split("|")[0] == str(p)]:  # older versions of this file
                store_.pop(k)
            store_[entry_key] = entry
            _write_memo(memo_path, store_)
    return {a: entry[a] for a in algorithms}


def file_digest(path: str | os.PathLike, algorithm: str = "sha256", *, memo: bool = True) -> str:
    """Hex digest of a file, memoised on disk by (resolved path, size, mtime) (:func:`file_digests`).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as fh:
    ...     _ = fh.write(b"abc"); fh.flush()
    ...     file_digest(fh.name, "md5", memo=False)
    '900150983cd24fb0d6963f7d28e17f72'
    """
    return file_digests(path, (algorithm,), memo=memo)[algorithm]


def _part_path(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def _size_text(n_bytes: int | None) -> str:
    if n_bytes is None:
        return "an unknown number of bytes"
    return f"{n_bytes:,} bytes"


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delay seconds or an HTTP date); None if absent or unreadable.

    Examples
    --------
    >>> retry_after_seconds("7"), retry_after_seconds(None), retry_after_seconds("soon")
    (7.0, None, None)
    >>> retry_after_seconds("Thu, 01 Jan 1970 00:01:40 GMT", now=40.0)
    60.0
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


class _Deadline(DownloadError):
    """The overall deadline passed (not retried)."""


def _fetch_once(
    url: str, part: Path, *, timeout_s: float, progress: bool, desc: str, deadline: float | None = None
) -> tuple[int, int | None]:
    """One HTTP request, appending to (or restarting) ``part``; returns (bytes on disk, expected total).

    ``timeout_s`` bounds the connection and every read (a stall); ``deadline``
    (a :func:`time.monotonic` instant) the whole request.
    """
    from tqdm import tqdm  # plain text on stderr, never a notebook widget: the runner keeps stderr off the pages

    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "uslib", "Accept-Encoding": "identity"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the part is complete (the hash decides)
            return have, have
        head = exc.read(512) if exc.fp is not None else b""
        page = " (the server returned an HTML page, not the file)" if looks_like_html(head) else ""
        err = DownloadError(f"download of {url} failed: HTTP {exc.code} {exc.reason}{page}")
        err.retry = exc.code in RETRY_STATUS  # type: ignore[attr-defined]
        err.retry_after = retry_after_seconds(exc.headers.get("Retry-After") if exc.headers else None)  # type: ignore[attr-defined]
        raise err from exc
    with resp:
        if have and resp.status == 206:
            mode = "ab"
        else:  # 200: the server sends the whole file (it ignored Range, or there was no part)
            mode, have = "wb", 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None and length.isdigit() else None
        got = have
        bar = tqdm(
            total=total,
            initial=have,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=desc,
            disable=not progress,
            file=sys.stderr,
            leave=True,
        )
        try:
            with open(part, mode) as fh:
                while True:
                    if deadline is not None and time.monotonic() > deadline:
                        raise _Deadline(f"{got:,} bytes received")
                    chunk = resp.read1(_CHUNK_BYTES)  # what has arrived, without waiting to fill a buffer
                    if not chunk:
                        break
                    fh.write(chunk)
                    fh.flush()
                    got += len(chunk)
                    bar.update(len(chunk))
        finally:
            bar.close()
    return got, total


def download(
    url: str,
    path: str | os.PathLike,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    progress: bool = True,
    retries: int = 3,
    timeout_s: float = 60.0,
    stall_s: float = 30.0,
    deadline_s: float | None = 4 * 3600.0,
    pause_s: float = 1.0,
    desc: str | None = None,
    sleep=time.sleep,
) -> Path:
    """Download ``url`` to ``path`` through ``<path>.part``, check its hash, then rename it into place.

    Parameters
    ----------
    url : str
    path : path-like
        The target file. Its folder is created. An existing file is replaced
        only by a complete, verified download.
    sha256, md5 : str, optional
        The expected hex digest (give one; SHA-256 wins when both are given).
        Without either, the download is checked for completeness only.
    progress : bool, default True
        Show a tqdm progress bar in bytes on standard error.
    retries : int, default 3
        Further attempts after a dropped connection, a stall, a short read or
        an HTTP 429, 500, 502, 503 or 504 answer, each resuming from the bytes
        already received.
    timeout_s : float, default 60
        Longest wait for the server to accept the connection, s (the socket
        timeout is the smaller of this and ``stall_s``).
    stall_s : float, default 30
        Longest wait for the next byte, s: a longer silence is a dropped
        connection (retried, resumed).
    deadline_s : float or None, default 4 h
        The whole download, retries and waits included, must finish within
        this many seconds; then :class:`DownloadError` (``.part`` kept). None:
        no deadline.
    pause_s : float, default 1
        Pause before each retry, s, unless the server's ``Retry-After`` asks
        for another (at most :data:`MAX_RETRY_AFTER_S`).
    desc : str, optional
        Label of the progress bar (default: the file name).
    sleep : callable, default time.sleep
        How a pause is waited (tests record the pauses instead).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    DownloadError
        The download did not complete after ``retries`` further attempts
        (``<path>.part`` is kept and resumed by the next call), the server
        answered with an HTTP error, or the hash differs (``<path>.part`` is
        deleted). The message names the URL, the expected and actual hash and
        the path, and says when the server sent an HTML page instead of the
        file. ``path`` itself is never left holding a partial or wrong file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(path)
    algorithm, expected = ("sha256", sha256.lower()) if sha256 else ("md5", md5.lower()) if md5 else (None, None)
    label = desc or path.name
    last_problem = ""
    complete = False
    attempts = 0
    deadline = None if deadline_s is None else time.monotonic() + float(deadline_s)
    wait = 0.0
    for attempt in range(int(retries) + 1):
        if attempt:
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            sleep(wait)
        if deadline is not None and time.monotonic() > deadline:
            last_problem = f"the deadline of {deadline_s:g} s passed"
            break
        attempts += 1
        wait = float(pause_s)
        try:
            got, total = _fetch_once(
                url,
                part,
                timeout_s=min(float(timeout_s), float(stall_s)),
                progress=progress,
                desc=label,
                deadline=deadline,
            )
        except _Deadline as exc:
            last_problem = f"the deadline of {deadline_s:g} s passed ({exc})"
            break
        except DownloadError as exc:
            if not getattr(exc, "retry", False):
                part.unlink(missing_ok=True)
                raise DownloadError(f"{exc}; nothing was written to {path}") from exc
            last_problem = str(exc)
            asked = getattr(exc, "retry_after", None)
            if asked is not None:
                wait = min(float(asked), MAX_RETRY_AFTER_S)
                last_problem += f" (Retry-After {asked:g} s)"
            continue
        except (urllib.error.URLError, HTTPException, ConnectionError, socket.timeout, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            last_problem = f"connection failed ({type(exc).__name__}: {reason})"
            if isinstance(exc, urllib.error.URLError) and (
                isinstance(reason, ConnectionRefusedError)
                or not isinstance(reason, (socket.timeout, TimeoutError, ConnectionError))
            ):
                break  # no such host, or nobody listening: retrying will not help
            continue
        if total is not None and got < total:
            last_problem = f"the connection closed after {got:,} of {total:,} bytes"
            continue
        complete = True
        break
    if not complete:
        kept = part.stat().st_size if part.exists() else 0
        raise DownloadError(
            f"download of {url} to {path} did not complete after {attempts} attempt(s): {last_problem}. "
            + (
                f"The {kept:,} bytes received are kept in {part} and the next attempt resumes from them; "
                if kept
                else ""
            )
            + f"{path} was not written. Expected {algorithm or 'hash'} {expected or '(none given)'}."
        )
    if expected:
        actual = file_digest(part, algorithm, memo=False)
        if actual != expected:
            with open(part, "rb") as fh:
                head = fh.read(512)
            size = part.stat().st_size
            part.unlink(missing_ok=True)
            html = (
                ": the server returned an HTML page, not the file (a proxy's or portal's error page?)"
                if looks_like_html(head)
                else ""
            )
            raise DownloadError(
                f"download of {url} has the wrong {algorithm}: expected {expected}, got {actual} "
                f"({_size_text(size)}){html}. Nothing was written to {path} (the partial file was deleted)."
            )
    os.replace(part, path)
    return path
