"""The download path, rehearsed against a web server on the loopback address.

A real HTTP server (``http.server`` in a thread, on 127.0.0.1) serves an
OASBUD-schema file written here, with its own SHA-256, and a Keras-named
InceptionV3 weights file saved here, with its own MD5. The code is pointed at
it through the documented test-only overrides (``USLIB_OASBUD_URL``,
``USLIB_OASBUD_SHA256``, ``USLIB_WEIGHTS_BASE_URL``,
``USLIB_WEIGHTS_MD5_INCEPTION_V3``). The server can serve a file whole,
truncate it, serve an HTML error page instead, drop the connection mid-file
once and then honour ``Range``, or answer 404. Every failure must end in a
clear error, never in a corrupt file under the target's name.

The rehearsal of the whole recipe (fetch, then chapters 01-04 on what was
fetched) runs real notebooks, a minute or two, so it is marked ``slow`` like
the other notebook tests; ``make test`` runs it.

Also here: the pre-flight check (``python -m uslib check``): its report, its
exit status, and that it answers without TensorFlow.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from uslib import data as D
from uslib import oasbud as O
from uslib import features as F
from uslib.check import fetch_missing, format_preflight, image_counts, preflight
from uslib.config import REPO_ROOT, load_profile
from uslib.download import DownloadError, download, file_digest

HTML_PAGE = b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head><body>proxy error</body></html>\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` as ``server.modes`` says (see the module docstring)."""

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        srv = self.server
        srv.log.append((self.path, self.headers.get("Range")))
        body = srv.files.get(self.path)
        mode = srv.modes.get(self.path, "ok")
        if body is None or mode == "404":
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(HTML_PAGE)))
            self.end_headers()
            self.wfile.write(HTML_PAGE)
            return
        if mode.startswith("busy") and srv.counts.get(self.path, 0) == 0:  # busy-429-7: 429, Retry-After 7, once
            srv.counts[self.path] = 1
            _, code, after = mode.split("-")
            self.send_response(int(code))
            self.send_header("Retry-After", after)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if mode == "hold":  # 1000 bytes, then wait until the client's .part holds them, then the rest
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:1000])
            self.wfile.flush()
            for _ in range(3000):  # a hang guard: 3000 polls
                if srv.part.exists() and srv.part.stat().st_size >= 1000 or srv.stop.wait(0.01):
                    break
            srv.seen_part = srv.part.stat().st_size if srv.part.exists() else 0
            self.wfile.write(body[1000:])
            return
        if mode in ("trickle", "stall_once"):
            first = srv.counts.get(self.path, 0) == 0
            srv.counts[self.path] = srv.counts.get(self.path, 0) + 1
            start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            if mode == "trickle":  # a byte at a time, every 50 ms, until the client goes or the test ends
                for i in range(start, len(body)):
                    if srv.stop.wait(0.05):
                        return
                    try:
                        self.wfile.write(body[i : i + 1])
                        self.wfile.flush()
                    except OSError:
                        return
                return
            if first:  # 1000 bytes, then silence until the client gives up (or the test ends)
                self.wfile.write(body[:1000])
                self.wfile.flush()
                srv.stop.wait(60)
                return
            self.wfile.write(body[start:])
            return
        if mode == "html":
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(HTML_PAGE)))
            self.end_headers()
            self.wfile.write(HTML_PAGE)
            return
        start = 0
        rng = self.headers.get("Range")
        first = srv.counts.get(self.path, 0) == 0
        srv.counts[self.path] = srv.counts.get(self.path, 0) + 1
        if rng and mode in ("ok", "drop_once"):
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        if mode == "truncate" or (mode == "drop_once" and first):
            payload = payload[: len(payload) * 2 // 5]  # then the connection closes: a short read
        self.wfile.write(payload)


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.modes, srv.log, srv.counts, srv.stop = {}, {}, [], {}, threading.Event()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.stop.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def _local(monkeypatch, tmp_path):
    """No proxy between the test and its server; hash memo and Keras cache in tmp."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("USLIB_DIGEST_MEMO", str(tmp_path / "digests.json"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))


def _sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def _no_file_left(path):
    return not path.exists() and not path.with_name(path.name + ".part").exists()


# Seeded, so a run is repeatable; its first byte is not '<'.
BLOB = np.random.default_rng(20181).integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()
assert BLOB[:1] != b"<"


# --------------------------------------------------------------------------- #
# download(): each failure a clear error, never a corrupt file in place
# --------------------------------------------------------------------------- #


def test_interrupted_download_resumes_with_range(server, tmp_path):
    server.files["/f.bin"], server.modes["/f.bin"] = BLOB, "drop_once"
    target = tmp_path / "out" / "f.bin"
    download(server.url + "/f.bin", target, sha256=_sha256(BLOB), progress=False, pause_s=0)
    assert target.read_bytes() == BLOB and not target.with_name("f.bin.part").exists()
    (p1, r1), (p2, r2) = server.log
    assert r1 is None and r2 == f"bytes={len(BLOB) * 2 // 5}-", "the second request resumes where the first stopped"


def test_bytes_reach_the_part_as_they_arrive(server, tmp_path):
    # the server sends 1000 bytes and waits, the connection open, until the client's .part holds them
    server.files["/f.bin"], server.modes["/f.bin"] = BLOB, "hold"
    target = tmp_path / "f.bin"
    server.part = target.with_name("f.bin.part")
    download(server.url + "/f.bin", target, sha256=_sha256(BLOB), progress=False, pause_s=0)
    assert target.read_bytes() == BLOB and len(server.log) == 1
    assert server.seen_part == 1000, "the first bytes were on disk while the connection was still open"


def test_a_stalled_download_is_dropped_and_resumed(server, tmp_path):
    # 1000 bytes, then silence until the test ends: only the stall timeout ends that request
    server.files["/f.bin"], server.modes["/f.bin"] = BLOB, "stall_once"
    target = tmp_path / "f.bin"
    done = []
    worker = threading.Thread(
        target=lambda: done.append(
            download(
                server.url + "/f.bin", target, sha256=_sha256(BLOB), progress=False, pause_s=0, stall_s=1, timeout_s=600
            )
        )
    )
    worker.start()
    worker.join(300)  # a hang guard: without a stall timeout the first request would never end
    assert done == [target] and target.read_bytes() == BLOB
    assert len(server.log) == 2 and server.log[0][1] is None, "dropped after the stall, then asked again"


def test_a_trickling_download_stops_at_the_deadline_keeping_what_arrived(server, tmp_path):
    server.files["/f.bin"], server.modes["/f.bin"] = BLOB[:100_000], "trickle"
    target = tmp_path / "f.bin"
    part = target.with_name("f.bin.part")
    with pytest.raises(DownloadError, match=r"deadline of 2 s passed") as err:
        download(
            server.url + "/f.bin",
            target,
            sha256=_sha256(BLOB[:100_000]),
            progress=False,
            pause_s=0,
            stall_s=30,
            deadline_s=2,
            retries=3,
        )
    assert not target.exists() and part.exists() and 0 < part.stat().st_size < 100_000
    assert part.read_bytes() == BLOB[: part.stat().st_size], "the bytes reached the part as they came"
    assert f"{part.stat().st_size:,} bytes received are kept in {part}" in str(err.value)
    assert len(server.log) == 1, "a deadline is not retried"


@pytest.mark.parametrize("code, after, waited", [(429, "7", 7.0), (503, "2", 2.0), (503, "99999", 300.0)])
def test_a_busy_server_keeps_the_part_and_is_waited_for_as_it_asks(server, tmp_path, code, after, waited):
    server.files["/f.bin"], server.modes["/f.bin"] = BLOB, f"busy-{code}-{after}"
    target = tmp_path / "f.bin"
    part = target.with_name("f.bin.part")
    part.write_bytes(BLOB[:2_000_000])
    pauses = []
    download(server.url + "/f.bin", target, sha256=_sha256(BLOB), progress=False, pause_s=0.5, sleep=pauses.append)
    assert target.read_bytes() == BLOB
    assert pauses == [waited], "the server's Retry-After, at most MAX_RETRY_AFTER_S"
    assert [r for _, r in server.log] == ["bytes=2000000-", "bytes=2000000-"], "the part was kept both times"


def test_a_busy_server_that_stays_busy_keeps_the_part(server, tmp_path):
    server.files["/f.bin"], server.modes["/f.bin"] = BLOB, "busy-429-1"  # 429 whenever its count is 0
    target = tmp_path / "f.bin"
    part = target.with_name("f.bin.part")
    part.write_bytes(BLOB[:2_000_000])
    pauses = []

    def pause(seconds):  # the server is still busy when the client comes back
        server.counts["/f.bin"] = 0
        pauses.append(seconds)

    with pytest.raises(DownloadError, match=r"HTTP 429.*Retry-After 1 s.*kept in"):
        download(server.url + "/f.bin", target, sha256=_sha256(BLOB), progress=False, retries=2, sleep=pause)
    assert part.read_bytes() == BLOB[:2_000_000] and not target.exists()
    assert pauses == [1.0, 1.0] and len(server.log) == 3


def test_truncated_download_is_an_error_and_leaves_no_file_in_place(server, tmp_path):
    server.files["/f.bin"], server.modes["/f.bin"] = BLOB, "truncate"
    target = tmp_path / "f.bin"
    url = server.url + "/f.bin"
    with pytest.raises(DownloadError) as err:
        download(url, target, sha256=_sha256(BLOB), progress=False, retries=2, pause_s=0)
    msg = str(err.value)
    assert url in msg and str(target) in msg and _sha256(BLOB) in msg and "did not complete after 3 attempt" in msg
    assert f"closed after {len(BLOB) * 2 // 5:,} of {len(BLOB):,} bytes" in msg
    assert not target.exists(), "no partial file under the target's name"
    assert len(server.log) == 3


def test_wrong_hash_is_an_error_naming_url_both_hashes_and_path(server, tmp_path):
    server.files["/f.bin"] = BLOB
    target = tmp_path / "f.bin"
    url, wrong = server.url + "/f.bin", "0" * 64
    with pytest.raises(DownloadError) as err:
        download(url, target, sha256=wrong, progress=False)
    msg = str(err.value)
    assert url in msg and wrong in msg and _sha256(BLOB) in msg and str(target) in msg
    assert "HTML" not in msg
    assert _no_file_left(target)
    # md5 too, as for the weights
    with pytest.raises(DownloadError, match=f"wrong md5: expected {'1' * 32}, got {_md5(BLOB)}"):
        download(url, target, md5="1" * 32, progress=False)
    assert _no_file_left(target)


def test_binary_starting_with_angle_bracket_is_not_called_html():
    # One random file in 256 starts with b"<"; such a file is data, not a page.
    from uslib.download import looks_like_html

    assert not looks_like_html(b"<" + BLOB[:511])
    assert looks_like_html(HTML_PAGE) and looks_like_html(b"\xef\xbb\xbf \n<HTML><BODY>x")


def test_html_error_page_served_as_the_file_is_named_as_such(server, tmp_path):
    server.files["/f.bin"], server.modes["/f.bin"] = BLOB, "html"
    target = tmp_path / "f.bin"
    with pytest.raises(DownloadError) as err:
        download(server.url + "/f.bin", target, sha256=_sha256(BLOB), progress=False)
    msg = str(err.value)
    assert "the server returned an HTML page, not the file" in msg
    assert _sha256(HTML_PAGE) in msg and _sha256(BLOB) in msg and str(target) in msg
    assert _no_file_left(target)


def test_http_error_is_named_without_retries(server, tmp_path):
    target = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match=r"HTTP 404 .*HTML page, not the file.*nothing was written") as err:
        download(server.url + "/missing.bin", target, sha256="0" * 64, progress=False, pause_s=0)
    assert server.url + "/missing.bin" in str(err.value) and _no_file_left(target)
    assert len(server.log) == 1


def test_existing_target_is_replaced_only_by_a_verified_download(server, tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    server.files["/f.bin"], server.modes["/f.bin"] = BLOB, "truncate"
    with pytest.raises(DownloadError):
        download(server.url + "/f.bin", target, sha256=_sha256(BLOB), progress=False, retries=0)
    assert target.read_bytes() == b"old"


def test_file_digest_is_memoised_by_path_size_and_mtime(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    assert file_digest(f, "md5") == _md5(b"abc")
    memo = tmp_path / "digests.json"
    assert memo.exists() and str(f.resolve()) in memo.read_text()
    f.write_bytes(b"abcd")  # another size: hashed again, not served from the memo
    assert file_digest(f, "sha256") == _sha256(b"abcd")
    assert memo.read_text().count(str(f.resolve())) == 1, "the stale entry is dropped"


# --------------------------------------------------------------------------- #
# The data set and the weights, through their documented overrides
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def oasbud_bytes(tmp_path_factory):
    """An OASBUD-schema file of a few phantom lesions, as bytes (flagged as real data, like the public file)."""
    from uslib.phantom import simulate_dataset

    path = tmp_path_factory.mktemp("mirror") / "OASBUD.mat"
    O.save_oasbud(
        D.Dataset(list(simulate_dataset(4, seed=3)), source="rehearsal mirror", synthetic=False), path, compress=False
    )
    return path.read_bytes()


def _serve_oasbud(server, monkeypatch, body, mode="ok"):
    server.files["/zenodo/OASBUD.mat"], server.modes["/zenodo/OASBUD.mat"] = body, mode
    monkeypatch.setenv("USLIB_OASBUD_URL", server.url + "/zenodo/OASBUD.mat")
    monkeypatch.setenv("USLIB_OASBUD_SHA256", _sha256(body))


def test_fetch_oasbud_from_a_mirror(server, monkeypatch, tmp_path, oasbud_bytes):
    _serve_oasbud(server, monkeypatch, oasbud_bytes, mode="drop_once")
    assert O.oasbud_source() == (server.url + "/zenodo/OASBUD.mat", _sha256(oasbud_bytes))
    target = tmp_path / "data" / "OASBUD.mat"
    got = O.fetch_oasbud(path=target, progress=False)
    assert got == target and file_digest(target) == _sha256(oasbud_bytes)
    assert len(O.load_oasbud(target)) == 4 == O.count_records(target)
    n = len(server.log)
    assert O.fetch_oasbud(path=target.parent, progress=False) == target and len(server.log) == n, "not fetched again"
    # a file of the user's own at the target is never overwritten
    other = tmp_path / "mine" / "OASBUD.mat"
    other.parent.mkdir()
    other.write_bytes(b"my own data set")
    with pytest.raises(DownloadError, match="left alone"):
        O.fetch_oasbud(path=other, progress=False)
    assert other.read_bytes() == b"my own data set"


def test_fetch_oasbud_html_page(server, monkeypatch, tmp_path, oasbud_bytes):
    _serve_oasbud(server, monkeypatch, oasbud_bytes, mode="html")
    target = tmp_path / "data" / "OASBUD.mat"
    with pytest.raises(DownloadError) as err:
        O.fetch_oasbud(path=target, progress=False)
    msg = str(err.value)
    assert "HTML page, not the file" in msg and str(target) in msg and _sha256(oasbud_bytes) in msg
    assert server.url + "/zenodo/OASBUD.mat" in msg
    assert _no_file_left(target)


def test_weights_download_through_the_override_is_labelled_custom(server, monkeypatch, tmp_path):
    bb = F.BACKBONES["inception_v3"]
    body = b"not really an h5 file" * 1000
    server.files[f"/keras/inception_v3/{bb.weights_file}"] = body
    monkeypatch.setenv("USLIB_WEIGHTS_BASE_URL", server.url + "/keras/")
    monkeypatch.setenv(F.weights_md5_env(bb), _md5(body))
    info = F.resolve_weights(bb, strict=True)
    assert info.kind == "custom" and info.md5 == _md5(body) and info.source.startswith("download: ")
    assert (tmp_path / "keras" / "models" / bb.weights_file).read_bytes() == body
    # a wrong md5: strict refuses, naming the URL; nothing lands in the Keras cache
    (tmp_path / "keras" / "models" / bb.weights_file).unlink()
    monkeypatch.setenv(F.weights_md5_env(bb), "2" * 32)
    with pytest.raises(F.WeightsUnavailableError, match=r"download from http://127\.0\.0\.1.*wrong md5"):
        F.resolve_weights(bb, strict=True)
    assert _no_file_left(tmp_path / "keras" / "models" / bb.weights_file)


# --------------------------------------------------------------------------- #
# The pre-flight check
# --------------------------------------------------------------------------- #


def _profile(tmp_path, **values):
    import yaml

    base = yaml.safe_load((REPO_ROOT / "params" / "tiny.yaml").read_text())
    base.update(run_dir=str(tmp_path / "run"), **values)
    path = tmp_path / f"{values.get('profile', 'p')}.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def _check(path, env_extra=None):
    """``python -m uslib check`` in a subprocess; also the heavy modules it had imported when it answered."""
    env = {**os.environ, **(env_extra or {})}
    imported = path.with_name(path.name + ".imported")
    code = (
        "import sys\nfrom uslib.__main__ import main\nrc = main(sys.argv[2:])\n"
        "open(sys.argv[1], 'w').write(','.join(sorted(m for m in ('tensorflow', 'keras', 'papermill') "
        "if m in sys.modules)))\nsys.exit(rc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(imported), "check", "--profile", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=120,
    )
    heavy = [m for m in imported.read_text().split(",") if m] if imported.exists() else ["(did not return)"]
    return out, heavy


def test_check_reports_data_weights_downloads_disk_and_time(tmp_path, oasbud_bytes):
    bb = F.BACKBONES["inception_v3"]
    data = tmp_path / "data" / "OASBUD.mat"
    data.parent.mkdir()
    data.write_bytes(oasbud_bytes)
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / bb.weights_file).write_bytes(b"weights" * 100)
    path = _profile(
        tmp_path,
        profile="ready",
        data_source="oasbud",
        oasbud_path=str(data),
        weights_path=str(folder),
        strict_weights=True,
        allow_download=False,
        backbones=["inception_v3", "vgg19"],
        weights="imagenet",
    )
    out, heavy = _check(path)
    text = out.stdout
    # vgg19 is missing, strict, no download: cannot run
    assert out.returncode == 1, text + out.stderr
    assert f"sha256 {_sha256(oasbud_bytes)}; 4 lesions" in text
    assert f"inception_v3: custom, md5 {_md5(b'weights' * 100)}" in text
    assert "vgg19: missing" in text and "PROBLEM   weights: vgg19_weights" in text and "cannot run" in text
    assert "disk " in text and "run dir   about" in text and "time      about" in text
    # the time estimate names its source: this checkout's make bench figures, or the 2-core default
    assert "a default for 2 CPU cores" in text or "measured by make bench" in text
    assert heavy == [], "the check answers without TensorFlow"
    # with vgg19 gone from the profile it can run; the second check is answered from the hash memo:
    # a digest planted in the memo under the file's (path, size, mtime) is what the report shows
    import json

    from uslib.download import digest_memo_path

    memo = json.loads(digest_memo_path().read_text())
    entry = next(k for k in memo if k.split("|")[0] == str(data.resolve()))
    memo[entry]["sha256"] = "f" * 64
    digest_memo_path().write_text(json.dumps(memo))
    path = _profile(
        tmp_path,
        profile="ready2",
        data_source="oasbud",
        oasbud_path=str(data),
        weights_path=str(folder),
        strict_weights=True,
        allow_download=False,
        backbones=["inception_v3"],
        weights="imagenet",
    )
    out, heavy = _check(path)
    assert out.returncode == 0 and "ready to run" in out.stdout, out.stdout + out.stderr
    assert heavy == [] and f"sha256 {'f' * 64}" in out.stdout, "answered from the memo, without TensorFlow"


def test_check_lists_downloads_and_refuses_what_cannot_be_had(tmp_path, monkeypatch):
    missing = tmp_path / "data" / "OASBUD.mat"
    path = _profile(
        tmp_path,
        profile="dl",
        data_source="oasbud",
        oasbud_path=str(missing),
        allow_download=True,
        strict_weights=True,
        backbones=["inception_v3", "vgg19"],
    )
    report = preflight(load_profile(path), probe=False)  # the hosts' probe: tests below, on loopback
    assert report.ok and [d.what for d in report.downloads] == ["OASBUD.mat", "inception_v3 weights", "vgg19 weights"]
    assert report.download_bytes == O.OASBUD_SIZE_BYTES + sum(b.weights_size_bytes for b in F.BACKBONES.values())
    assert report.downloads[0].url == O.OASBUD_URL and report.downloads[0].target == str(missing)
    text = format_preflight(report)
    assert "download  3 file(s)" in text and O.OASBUD_SHA256 in text and "ready to run" in text
    assert report.n_images == {b: image_counts(O.OASBUD_N_LESIONS, load_profile(path)) for b in F.BACKBONES}
    # no downloads allowed: the data set and the strict weights are problems, exit status 1
    path = _profile(
        tmp_path,
        profile="offline",
        data_source="oasbud",
        oasbud_path=str(missing),
        allow_download=False,
        strict_weights=True,
        backbones=["vgg19"],
    )
    out, heavy = _check(path)
    assert out.returncode == 1 and out.stdout.count("PROBLEM") == 2, out.stdout
    assert f"{missing} does not exist and allow_download is false" in out.stdout
    assert heavy == [], "the check answers without TensorFlow"
    # not strict: random fallback is a warning, not a problem
    path = _profile(tmp_path, profile="lenient", allow_download=False, strict_weights=False)
    out, _ = _check(path)
    assert out.returncode == 0 and "falls back to random" in out.stdout, out.stdout


@pytest.fixture
def closed_port():
    """A loopback port nobody answers on: bound by this test (so no one else takes it), never listening."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def test_check_names_an_unreachable_data_host_and_stops(server, monkeypatch, tmp_path, closed_port):
    port = closed_port
    monkeypatch.setenv("USLIB_OASBUD_URL", f"http://127.0.0.1:{port}/OASBUD.mat")
    monkeypatch.setenv("USLIB_OASBUD_SHA256", "0" * 64)
    monkeypatch.setenv("USLIB_WEIGHTS_BASE_URL", server.url + "/keras")  # reachable
    path = _profile(
        tmp_path,
        profile="far",
        data_source="oasbud",
        oasbud_path=str(tmp_path / "OASBUD.mat"),
        allow_download=True,
        strict_weights=False,
        backbones=["inception_v3"],
        weights="imagenet",
    )
    report = preflight(load_profile(path))
    assert list(report.unreachable) == [f"127.0.0.1:{port}"], "only the host that did not answer"
    assert [p for p in report.problems if p.startswith("network:")] == [
        f"network: cannot reach 127.0.0.1:{port} ({report.unreachable[f'127.0.0.1:{port}']}) to download "
        f"OASBUD.mat: put OASBUD.mat at {tmp_path / 'OASBUD.mat'} (Zenodo record 545928)"
    ]
    out, heavy = _check(
        path,
        {
            "USLIB_OASBUD_URL": f"http://127.0.0.1:{port}/OASBUD.mat",
            "USLIB_OASBUD_SHA256": "0" * 64,
            "USLIB_WEIGHTS_BASE_URL": server.url + "/keras",
        },
    )
    assert out.returncode == 1 and f"PROBLEM   network: cannot reach 127.0.0.1:{port}" in out.stdout, out.stdout
    assert heavy == []


@pytest.mark.parametrize("strict", [False, True])
def test_check_names_an_unreachable_weights_host_and_stops_only_when_strict(monkeypatch, tmp_path, strict, closed_port):
    port = closed_port
    monkeypatch.setenv("USLIB_WEIGHTS_BASE_URL", f"http://127.0.0.1:{port}/keras")
    path = _profile(
        tmp_path, profile="w", allow_download=True, strict_weights=strict, backbones=["vgg19"], weights="imagenet"
    )
    report = preflight(load_profile(path))
    said = [w for w in (report.problems if strict else report.warnings) if w.startswith("network:")]
    assert len(said) == 1 and f"cannot reach 127.0.0.1:{port}" in said[0] and "vgg19 weights" in said[0]
    assert report.ok is not strict


def test_the_time_estimate_includes_the_downloads(server, monkeypatch, tmp_path):
    from uslib.check import DOWNLOAD_BYTES_PER_S

    monkeypatch.setenv("USLIB_WEIGHTS_BASE_URL", server.url + "/keras")
    fetch = preflight(
        load_profile(_profile(tmp_path, profile="a", allow_download=True, backbones=["vgg19"], weights="imagenet"))
    )
    offline = preflight(
        load_profile(_profile(tmp_path, profile="b", allow_download=False, backbones=["vgg19"], weights="imagenet"))
    )
    assert fetch.download_bytes == F.BACKBONES["vgg19"].weights_size_bytes and offline.download_bytes == 0
    assert fetch.seconds == pytest.approx(offline.seconds + fetch.download_bytes / DOWNLOAD_BYTES_PER_S)
    assert "downloads included" in format_preflight(fetch) and "downloads included" not in format_preflight(offline)
    assert fetch.unreachable == {} and fetch.ok


def test_the_runner_stops_on_a_failed_check_before_anything_runs(tmp_path):
    missing = tmp_path / "data" / "OASBUD.mat"
    path = _profile(tmp_path, profile="offline", data_source="oasbud", oasbud_path=str(missing), allow_download=False)
    out = subprocess.run(
        [sys.executable, "-m", "uslib", "run", "--profile", str(path), "--no-build"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert out.returncode == 1 and "PROBLEM" in out.stdout and "not running" in out.stderr, out.stdout + out.stderr
    assert "01_data: running" not in out.stdout
    assert not (tmp_path / "run" / "run.json").exists()


# --------------------------------------------------------------------------- #
# The rehearsal: a good download, then chapters 01-04 on what was fetched
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    """InceptionV3 notop weights in the Keras file format (random values, saved here), as bytes."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    bb = F.BACKBONES["inception_v3"]
    keras.utils.set_random_seed(5)
    model = keras.applications.InceptionV3(
        weights=None, include_top=bb.include_top, pooling=bb.pooling, input_shape=bb.input_shape
    )
    path = tmp_path_factory.mktemp("served") / bb.weights_file
    with h5py.File(path, "w") as fh:
        legacy_h5_format.save_weights_to_hdf5_group(fh, model)
    return path.read_bytes()


@pytest.mark.slow
def test_rehearsal_fetch_then_chapters_01_to_04(server, monkeypatch, tmp_path, oasbud_bytes, inception_weights):
    """What make book PROFILE=params/paper.yaml does on a machine with the internet, against the mirror."""
    import nbformat

    from uslib import store
    from uslib.run import run_profile

    bb = F.BACKBONES["inception_v3"]
    _serve_oasbud(server, monkeypatch, oasbud_bytes, mode="drop_once")
    server.files[f"/keras/inception_v3/{bb.weights_file}"] = inception_weights
    monkeypatch.setenv("USLIB_WEIGHTS_BASE_URL", server.url + "/keras")
    monkeypatch.setenv(F.weights_md5_env(bb), _md5(inception_weights))
    data = tmp_path / "data" / "OASBUD.mat"
    overrides = dict(
        run_dir=str(tmp_path / "run"),
        data_source="oasbud",
        oasbud_path=str(data),
        backbones=["inception_v3"],
        weights="imagenet",
        strict_weights=True,
        allow_download=True,
        margins_mm=[5],
        n_splits=2,  # chapter 04's exercise cross-validates: the 4 patients fill 2 folds, not 5
    )
    result = run_profile("tiny", only=["01", "02", "03", "04"], output_dir=tmp_path / "chapters", overrides=overrides)
    cached = tmp_path / "keras" / "models" / bb.weights_file
    assert file_digest(data) == _sha256(oasbud_bytes) and file_digest(cached, "md5") == _md5(inception_weights)
    assert not data.with_name("OASBUD.mat.part").exists()
    assert any(r for p, r in server.log if p == "/zenodo/OASBUD.mat"), "the dropped data download was resumed"
    rec = store.read_run_record(result["run_dir"])
    assert {k: v["status"] for k, v in rec["stages"].items()} == {
        "01_data": "finished",
        "02_reconstruction": "finished",
        "03_augmentation": "finished",
        "04_features": "finished",
    }
    assert rec["dataset"]["n_lesions"] == 4 and rec["dataset"]["file"] == str(data)
    w = rec["weights"]["inception_v3"]
    # the served file is not the published ImageNet file, so it is labelled custom, with its md5
    assert w["kind"] == "custom" and w["md5"] == _md5(inception_weights) and w["path"] == str(cached)
    page = nbformat.read(tmp_path / "chapters" / "04_features.ipynb", as_version=4)
    # the warning box is glued (shown under the title): its markdown is stored under a papermill.record key
    shown = "\n".join(
        text
        for c in page.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        for key, text in o.get("data", {}).items()
        if key.endswith("text/markdown")
    )
    assert "Non-ImageNet weights" in shown and _md5(inception_weights) in shown
    assert "Random weights" not in shown and "Synthetic data" not in shown
    # everything in place: a second fetch downloads nothing
    n = len(server.log)
    assert fetch_missing(load_profile("tiny", overrides=overrides), progress=False) == [] and len(server.log) == n


def test_time_estimate_uses_bench_figures_when_present_else_the_default(tmp_path):
    from uslib.check import DEFAULT_IMAGES_PER_S, throughput

    rate, source = throughput("vgg19", tmp_path)
    assert rate == DEFAULT_IMAGES_PER_S["vgg19"] and "a default for 2 CPU cores" in source
    (tmp_path / "features.json").write_text('{"figures": {"vgg19": {"extract_features cold [img/s]": 7.5}}}')
    rate, source = throughput("vgg19", tmp_path)
    assert rate == 7.5 and "measured by make bench" in source and str(tmp_path) in source
    (tmp_path / "features.json").write_text('{"figures": ')  # damaged: back to the default, said so
    assert throughput("vgg19", tmp_path)[1].startswith("a default")
