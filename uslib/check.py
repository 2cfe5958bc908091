"""The pre-flight check of a profile, and fetching what it lacks.

``python -m uslib check --profile P`` (and the runner, before any chapter)
answers in a few seconds, without importing TensorFlow, what a run of the
profile needs and whether it can run here:

* **the data set**: the phantom (generated into the run directory) or the
  OASBUD file: present or not, its SHA-256 (against the public file's), its
  lesion count (read from the MAT file's variable headers);
* **the weights of each backbone**: found (Keras cache or ``weights_path``)
  or not, kind (imagenet, custom or random) and MD5;
* **what would be downloaded**, from where, and its size;
* **disk**: the free space where the downloads and the run directory go,
  against what they need (estimated from the image count and feature sizes);
* **time**: a rough estimate from the image count and a feature throughput
  measured on this machine (``runs/benchmarks/features.json``, written by
  ``make bench``) or, failing that, a stated default.

* **the download hosts**: each host a download would come from is probed
  (a TCP connection, :data:`PROBE_TIMEOUT_S` seconds for all of them at
  once); one that cannot be reached is named, and stops the run when what
  it serves is needed (the OASBUD file, or weights with ``strict_weights``).

File hashes are memoised by (path, size, mtime) (:func:`uslib.download.file_digest`),
so a second check is instant even with 0.9 GB of data and weights in place.

:func:`preflight` returns a :class:`Preflight` (it reads the file system, and
touches the network only to probe the hosts of planned downloads);
:func:`format_preflight` renders it;
:func:`fetch_missing` downloads what it lists (data set by SHA-256, weights
by MD5, with progress bars), which is what makes
``make book PROFILE=params/paper.yaml`` one command on a machine with the
internet.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .store import REPO_ROOT, resolve_path

__all__ = [
    "DEFAULT_IMAGES_PER_S",
    "Download",
    "Preflight",
    "oasbud_target",
    "image_counts",
    "run_dir_bytes",
    "throughput",
    "preflight",
    "format_preflight",
    "fetch_missing",
    "path_problems",
    "require_paths",
    "probe_hosts",
    "DOWNLOAD_BYTES_PER_S",
    "PROBE_TIMEOUT_S",
]

#: Feature throughput (images/s) assumed when ``runs/benchmarks/features.json`` is absent:
#: the order of magnitude of 2 CPU cores, stated as an assumption wherever it is used.
DEFAULT_IMAGES_PER_S: dict[str, float] = {"inception_v3": 8.0, "vgg19": 4.0}
#: Bytes of a phantom lesion in the uncompressed OASBUD schema (2 scans of ≈2000×510 int16 RF + uint8 ROI).
PHANTOM_BYTES_PER_LESION = 6_500_000
#: Fixed allowance for results, robustness tables, manifest and run record, bytes.
RESULTS_BYTES = 20_000_000
#: Seconds of a run that do not scale with the images: kernels, cross-validation, the book build.
FIXED_SECONDS = 180.0
#: Seconds per lesion outside the networks (loading, reconstruction, cropping).
SECONDS_PER_LESION = 1.0
#: Download rate assumed by the time estimate, bytes/s (an assumption, stated wherever it is used).
DOWNLOAD_BYTES_PER_S = 5e6
#: Seconds the probe of the download hosts may take, all hosts together.
PROBE_TIMEOUT_S = 2.0
#: Where ``make bench`` writes its figures.
BENCH_DIR = REPO_ROOT / "runs" / "benchmarks"


@dataclass(frozen=True)
class Download:
    """One file a run would download.

    Attributes
    ----------
    what : str
        ``"OASBUD.mat"`` or ``"<backbone> weights"``.
    url : str
    target : str
        Where it goes.
    size_bytes : int or None
        Expected size (the published file's; None when unknown).
    checked_by : str
        ``"sha256 <hex>"`` or ``"md5 <hex>"``.
    """

    what: str
    url: str
    target: str
    size_bytes: int | None
    checked_by: str


@dataclass
class Preflight:
    """What a profile needs and whether it can run here (:func:`preflight`).

    Attributes
    ----------
    profile : str
    data : dict
        ``source``, ``path``, ``present``, ``sha256``, ``matches_public``,
        ``n_lesions`` (None: counted when loaded), ``note``.
    weights : dict
        Per backbone: ``kind`` (imagenet, custom, random, missing),
        ``path``, ``md5``, ``note``.
    downloads : list of Download
    n_images : dict
        Distinct images per backbone the chapters compute.
    run_dir_bytes : int
        Estimated size of the run directory after the run.
    free_bytes : dict
        Free bytes of each folder written to (run directory, data, Keras cache).
    seconds : float
        Estimated run time, s.
    throughput_source : str
        Where the images/s came from (a measured file, or the stated default).
    download_seconds : float
        Part of ``seconds`` spent downloading (at :data:`DOWNLOAD_BYTES_PER_S`).
    unreachable : dict
        ``host:port`` -> why it could not be reached, for each download host
        that did not answer the probe.
    problems : list of str
        What stops the run (exit status 1).
    warnings : list of str
        What the run will do that the user may not want (random weights, ...).
    """

    profile: str
    data: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, dict[str, Any]] = field(default_factory=dict)
    downloads: list[Download] = field(default_factory=list)
    n_images: dict[str, int] = field(default_factory=dict)
    run_dir_bytes: int = 0
    free_bytes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    throughput_source: str = ""
    download_seconds: float = 0.0
    unreachable: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing stops the run."""
        return not self.problems

    @property
    def download_bytes(self) -> int:
        return sum(d.size_bytes or 0 for d in self.downloads)


def oasbud_target(oasbud_path: str | None) -> Path | None:
    """The local file an OASBUD profile reads: ``oasbud_path`` resolved, or the user cache for ``download``."""
    from .oasbud import default_oasbud_dir

    if not oasbud_path:
        return None
    if oasbud_path == "download":
        return default_oasbud_dir() / "OASBUD.mat"
    return resolve_path(oasbud_path)


def image_counts(n_lesions: int, params: Mapping[str, Any], *, scans_per_lesion: int = 2) -> int:
    """Distinct images per backbone that chapters 04–07 compute for ``n_lesions`` lesions.

    The paper's set (every scan × dynamic range × margin) plus the robustness
    chapter's extra (range, margin) pairs and its continuous-range images.

    Examples
    --------
    >>> image_counts(10, {"dynamic_ranges_db": [40, 50, 60], "margins_mm": [5], "unseen_ranges_db": [30],
    ...                   "robustness_margins_mm": [5]})
    100
    """
    dr = {float(r) for r in params.get("dynamic_ranges_db", ())}
    margins = {float(m) for m in params.get("margins_mm", ())}
    paper = {(r, m) for r in dr for m in margins}
    rob_margins = {float(m) for m in params.get("robustness_margins_mm", ())}
    rob = {(r, m) for r in dr | {float(r) for r in params.get("unseen_ranges_db", ())} for m in rob_margins}
    pairs = len(paper | rob) + len(rob_margins)  # + one continuous-range image per scan and margin
    return int(n_lesions) * scans_per_lesion * pairs


def run_dir_bytes(n_lesions: int, n_images: Mapping[str, int], *, phantom: bool) -> int:
    """Estimated size of the run directory: features (float32) per backbone, the phantom file, results."""
    from .features import BACKBONES

    features = sum(int(n * BACKBONES[b].n_features * 4 * 1.05) for b, n in n_images.items())
    return features + (PHANTOM_BYTES_PER_LESION * int(n_lesions) if phantom else 0) + RESULTS_BYTES


def throughput(backbone: str, bench_dir: Path = BENCH_DIR) -> tuple[float, str]:
    """Feature images/s of a backbone on this machine, and where the figure comes from.

    ``extract_features cold [img/s]`` of ``<bench_dir>/features.json``
    (``make bench``) when present, else :data:`DEFAULT_IMAGES_PER_S`, said so.
    """
    import json

    path = bench_dir / "features.json"
    try:
        figures = json.loads(path.read_text()).get("figures", {})
        rate = float(figures[backbone]["extract_features cold [img/s]"])
        if rate > 0:
            return rate, f"measured by make bench ({path})"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return DEFAULT_IMAGES_PER_S.get(backbone, 4.0), "a default for 2 CPU cores (no make bench figures here)"


def _free_bytes(path: Path) -> int:
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def path_problems(params: Mapping[str, Any]) -> list[str]:
    """Every path of a profile that cannot serve, as ``"<key>: <problem>"`` lines (empty: all can).

    * ``run_dir`` and ``cache_dir``: a new or empty folder, or an existing
      uslib run directory; never ``/``, a system folder or a file
      (:func:`uslib.store.location_problem`); ``run_dir`` not in use by
      another run (:func:`uslib.store.run_lock_holder`).
    * ``oasbud_path`` (with ``data_source: oasbud``, unless ``download``):
      not a folder; a missing file is the data check's business (it may be
      downloaded there).
    * ``patients_csv``: an existing file.
    * ``weights_path`` (with ``weights: imagenet``): an existing file or folder.

    Reads the file system only; creates nothing.
    """
    from . import store

    out = []
    for key, kind in (("run_dir", "run directory"), ("cache_dir", "cache directory")):
        if params.get(key):
            problem = store.location_problem(params[key], kind=kind)
            if problem:
                out.append(f"{key}: {problem}")
    if params.get("run_dir") and not any(o.startswith("run_dir:") for o in out):
        owner = store.run_lock_holder(params["run_dir"])
        if owner is not None:
            out.append(store.busy_message(resolve_path(params["run_dir"]), owner))
    raw = params.get("oasbud_path")
    if params.get("data_source") == "oasbud" and raw and raw != "download":
        p = resolve_path(raw)
        if p.is_dir():
            out.append(f"oasbud_path: {p} is a folder, not the OASBUD.mat file")
        elif p.exists() and not p.is_file():
            out.append(f"oasbud_path: {p} is not a file")
    if params.get("patients_csv"):
        p = resolve_path(params["patients_csv"])
        if not p.is_file():
            out.append(f"patients_csv: {p} " + ("is a folder, not a CSV file" if p.is_dir() else "does not exist"))
    if params.get("weights_path") and params.get("weights", "imagenet") == "imagenet":
        p = resolve_path(params["weights_path"])
        if not p.exists():
            out.append(
                f"weights_path: {p} does not exist (it is never replaced by random weights: fix the "
                "path or remove the key)"
            )
    return out


def require_paths(params: Mapping[str, Any], *, source: str = "profile") -> None:
    """Raise :class:`uslib.config.ProfileError` naming every path of ``params`` that cannot serve.

    What :func:`path_problems` finds; the runner calls it before it writes
    anything (``run.json`` included).
    """
    problems = path_problems(params)
    if problems:
        from .config import ProfileError

        raise ProfileError(source, problems)


def _check_data(params: Mapping[str, Any], report: Preflight) -> int:
    """Fill ``report.data`` (and downloads/problems); return the lesion count used for estimates."""
    from .oasbud import OASBUD_N_LESIONS, OASBUD_SHA256, OASBUD_SIZE_BYTES, count_records, oasbud_source
    from .download import file_digest

    allow = bool(params.get("allow_download", False))
    if params.get("data_source", "phantom") == "phantom":
        n = int(params.get("n_lesions", 40))
        report.data = {
            "source": "phantom",
            "path": None,
            "present": True,
            "sha256": None,
            "matches_public": None,
            "n_lesions": n,
            "note": f"synthetic phantom, {n} lesions, simulated into the run directory on first use (cached)",
        }
        return n
    raw = params.get("oasbud_path")
    path = oasbud_target(raw)
    url, sha = oasbud_source()
    info: dict[str, Any] = {
        "source": "oasbud",
        "path": str(path),
        "present": bool(path and path.is_file()),
        "sha256": None,
        "matches_public": None,
        "n_lesions": None,
        "note": "",
    }
    report.data = info
    if path is None:
        report.problems.append("oasbud_path: data_source is oasbud but oasbud_path is not set")
        return OASBUD_N_LESIONS
    if info["present"]:
        info["sha256"] = file_digest(path, "sha256")
        info["matches_public"] = info["sha256"] == OASBUD_SHA256
        info["n_lesions"] = count_records(path)
        if info["matches_public"]:
            info["note"] = "the public OASBUD release (Zenodo 545928)"
        elif info["sha256"] == sha:
            info["note"] = f"the file served by the mirror {url} (not the public release)"
        else:
            info["note"] = "not the public release's checksum: used as given"
        if info["n_lesions"] is None:
            info["note"] += "; lesions counted when loaded (not a MAT v5/v7 file with a 'data' variable?)"
        return info["n_lesions"] or OASBUD_N_LESIONS
    if allow or raw == "download":
        size = OASBUD_SIZE_BYTES if sha == OASBUD_SHA256 else None
        report.downloads.append(Download("OASBUD.mat", url, str(path), size, f"sha256 {sha}"))
        info["note"] = "missing: will be downloaded"
    else:
        report.problems.append(
            f"oasbud_path: {path} does not exist and allow_download is false: put OASBUD.mat (Zenodo record 545928) "
            "there, or set allow_download: true to fetch it (checked by SHA-256)"
        )
        info["note"] = "missing"
    return OASBUD_N_LESIONS


def _check_weights(params: Mapping[str, Any], report: Preflight) -> None:
    from .download import file_digest
    from .features import BACKBONES, keras_cache_dir, locate_weights, weights_source

    allow = bool(params.get("allow_download", False))
    strict = bool(params.get("strict_weights", False))
    for b in params.get("backbones", ()):
        bb = BACKBONES[b]
        if params.get("weights", "imagenet") == "random":
            report.weights[b] = {
                "kind": "random",
                "path": None,
                "md5": None,
                "note": f"random initialisation asked for (seed {params.get('weights_seed', 0)})",
            }
            continue
        found, origin, _ = locate_weights(bb, weights_path=resolve_path(params.get("weights_path")))
        if found is not None:
            md5 = file_digest(found, "md5")
            kind = "imagenet" if md5 == bb.weights_md5 else "custom"
            note = f"{origin}" + ("" if kind == "imagenet" else "; not the published ImageNet file, used as given")
            report.weights[b] = {"kind": kind, "path": str(found), "md5": md5, "note": note}
            continue
        url, md5 = weights_source(bb)
        target = keras_cache_dir() / "models" / bb.weights_file
        if allow:
            size = bb.weights_size_bytes if md5 == bb.weights_md5 else None
            report.downloads.append(Download(f"{b} weights", url, str(target), size, f"md5 {md5}"))
            report.weights[b] = {
                "kind": "missing",
                "path": str(target),
                "md5": None,
                "note": "missing: will be downloaded into the Keras cache",
            }
        elif strict:
            report.weights[b] = {"kind": "missing", "path": str(target), "md5": None, "note": "missing"}
            report.problems.append(
                f"weights: {bb.weights_file} is not in the Keras cache ({target.parent}) nor at weights_path, "
                f"strict_weights is true and allow_download is false: fetch {bb.weights_url} "
                f"(md5 {bb.weights_md5}) into {target.parent}, or set allow_download: true"
            )
        elif params.get("weights_path"):  # weights were pointed at: never replaced by random ones
            report.weights[b] = {"kind": "missing", "path": str(target), "md5": None, "note": "missing"}
            if not resolve_path(params["weights_path"]).exists():
                continue  # path_problems names the path itself
            report.problems.append(
                f"weights_path: no {bb.weights_file} for {b} at {resolve_path(params['weights_path'])} nor in the "
                f"Keras cache ({target.parent}), and allow_download is false: put it there, or set "
                "allow_download: true"
            )
        else:
            report.weights[b] = {
                "kind": "random",
                "path": None,
                "md5": None,
                "note": "missing: falls back to random initialisation",
            }
            report.warnings.append(
                f"weights: no ImageNet weights for {b}: its features will come from a random "
                "initialisation, and every results page will say so"
            )


def _host_port(url: str) -> tuple[str, int] | None:
    from urllib.parse import urlsplit

    u = urlsplit(url)
    if not u.hostname:
        return None
    try:
        port = u.port
    except ValueError:
        return None
    return u.hostname, port or (443 if u.scheme == "https" else 80)


def probe_hosts(urls, *, timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, str | None]:
    """Whether the host of each URL accepts a TCP connection: ``"host:port"`` -> None, or why not.

    All hosts are probed at once, each in a daemon thread, and the answer
    comes after at most ``timeout_s`` seconds in all (a name lookup that
    hangs counts as no answer; its thread is left behind, never waited for).

    Examples
    --------
    >>> probe_hosts(["not a url"])
    {}
    """
    import socket
    import threading
    import time

    targets = {f"{h}:{p}": (h, p) for h, p in filter(None, (_host_port(u) for u in urls))}
    results: dict[str, str | None] = {}

    def probe(name: str, host: str, port: int) -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                results[name] = None
        except Exception as exc:  # noqa: BLE001 - any failure means "cannot reach"; say which
            results[name] = " ".join(f"{type(exc).__name__}: {exc}".split())

    threads = [
        threading.Thread(target=probe, args=(n, h, p), daemon=True, name=f"uslib-probe-{n}")
        for n, (h, p) in targets.items()
    ]
    for t in threads:
        t.start()
    end = time.monotonic() + timeout_s
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    return {n: results.get(n, f"no answer within {timeout_s:g} s") for n in targets}


def _check_hosts(params: Mapping[str, Any], report: Preflight) -> None:
    """Probe the hosts of the planned downloads; name those that cannot be reached."""
    if not report.downloads:
        return
    answers = probe_hosts([d.url for d in report.downloads])
    report.unreachable = {n: why for n, why in answers.items() if why is not None}
    strict = bool(params.get("strict_weights", False))
    for d in report.downloads:
        hp = _host_port(d.url)
        name = f"{hp[0]}:{hp[1]}" if hp else d.url
        if name not in report.unreachable:
            continue
        why = f"cannot reach {name} ({report.unreachable[name]}) to download {d.what}"
        if d.what == "OASBUD.mat":
            report.problems.append(f"network: {why}: put OASBUD.mat at {d.target} (Zenodo record 545928)")
        elif strict:
            report.problems.append(f"network: {why} and strict_weights is true: put the file at {d.target}")
        else:
            report.warnings.append(f"network: {why}: its features will come from a random initialisation")


def preflight(params: Mapping[str, Any], *, bench_dir: Path = BENCH_DIR, probe: bool = True) -> Preflight:
    """Check a validated profile (:func:`uslib.config.load_profile`) against this machine.

    Reads the file system (hashes memoised by path, size and mtime); touches
    the network only to probe the hosts of planned downloads
    (:func:`probe_hosts`, at most :data:`PROBE_TIMEOUT_S` seconds; ``probe``
    False skips it); no TensorFlow.

    Returns
    -------
    Preflight
    """
    report = Preflight(profile=str(params.get("profile", "")))
    report.problems.extend(path_problems(params))
    n_lesions = _check_data(params, report)
    _check_weights(params, report)
    if params.get("precision") == "bfloat16":
        from .features import bfloat16_support

        ok, why = bfloat16_support()
        if not ok:
            report.problems.append(
                f"precision: bfloat16 needs native bfloat16 arithmetic, but {why}; set precision: float32"
            )
    if params.get("precision") == "int8":
        from . import precision
        from .int8 import unsupported_reason

        why = unsupported_reason(precision.cpu_flags())
        if why:
            report.problems.append(f"precision: {why}")
    per_backbone = image_counts(n_lesions, params)
    report.n_images = {b: per_backbone for b in params.get("backbones", ())}
    report.run_dir_bytes = run_dir_bytes(n_lesions, report.n_images, phantom=params.get("data_source") == "phantom")
    seconds = FIXED_SECONDS + SECONDS_PER_LESION * n_lesions
    sources = set()
    for b, n in report.n_images.items():
        rate, src = throughput(b, bench_dir)
        seconds += n / rate
        sources.add(src)
    report.download_seconds = report.download_bytes / DOWNLOAD_BYTES_PER_S
    report.seconds = seconds + report.download_seconds
    report.throughput_source = "; ".join(sorted(sources))
    if probe:
        _check_hosts(params, report)

    rdir = resolve_path(params.get("run_dir", "runs/default"))
    needs: dict[str, int] = {str(rdir): report.run_dir_bytes}
    for d in report.downloads:
        needs[str(Path(d.target).parent)] = needs.get(str(Path(d.target).parent), 0) + (d.size_bytes or 0)
    by_device: dict[int, list[str]] = {}
    for folder in needs:
        p = Path(folder)
        while not p.exists() and p != p.parent:
            p = p.parent
        by_device.setdefault(os.stat(p).st_dev, []).append(folder)
        report.free_bytes[folder] = _free_bytes(Path(folder))
    for folders in by_device.values():
        need = sum(needs[f] for f in folders)
        free = report.free_bytes[folders[0]]
        if need > free:
            report.problems.append(
                f"disk: {', '.join(folders)} need about {_gb(need)} but the file system has {_gb(free)} free"
            )
    return report


def _gb(n_bytes: float | None) -> str:
    if n_bytes is None:
        return "size unknown"
    if n_bytes >= 1e9:
        return f"{n_bytes / 1e9:.2f} GB"
    return f"{n_bytes / 1e6:.0f} MB"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_preflight(report: Preflight) -> str:
    """The report as the terminal shows it (plain text, one item per line)."""
    d = report.data
    lines = [
        f"pre-flight check of profile {report.profile!r} (valid; n_splits is checked against the "
        "patients when the run starts)"
    ]
    if d.get("source") == "phantom":
        lines.append(f"  data      {d['note']}")
    else:
        state = "present" if d.get("present") else "MISSING"
        lines.append(f"  data      {d.get('path')}: {state}")
        if d.get("present"):
            n = d.get("n_lesions")
            lines.append(f"            sha256 {d['sha256']}; {n if n is not None else '?'} lesions; {d['note']}")
        else:
            lines.append(f"            {d['note']}")
    for b, w in report.weights.items():
        md5 = f", md5 {w['md5']}" if w.get("md5") else ""
        where = f" {w['path']}" if w.get("path") else ""
        lines.append(f"  weights   {b}: {w['kind']}{md5}{where} ({w['note']})")
    if report.downloads:
        unknown = sum(x.size_bytes is None for x in report.downloads)
        known = len(report.downloads) - unknown
        size = ", ".join(
            ([_gb(report.download_bytes)] if known else [])
            + ([f"{unknown} of unknown size (a mirror's)"] if unknown else [])
        )
        lines.append(f"  download  {len(report.downloads)} file(s), {size}")
        for x in report.downloads:
            lines.append(f"            {x.what}: {_gb(x.size_bytes)} from {x.url} -> {x.target} ({x.checked_by})")
    else:
        lines.append("  download  nothing")
    n_img = ", ".join(f"{b} {n}" for b, n in report.n_images.items()) or "none"
    from .oasbud import OASBUD_N_LESIONS

    assumed = (
        f"; assuming the public file's {OASBUD_N_LESIONS} lesions until the file is here"
        if d.get("source") == "oasbud" and d.get("n_lesions") is None
        else ""
    )
    lines.append(f"  images    {n_img} (distinct images per backbone, chapters 04-07{assumed})")
    for folder, free in report.free_bytes.items():
        lines.append(f"  disk      {folder}: {_gb(free)} free")
    lines.append(f"  run dir   about {_gb(report.run_dir_bytes)} when complete")
    downloads = (
        (
            f"; downloads included: about {_duration(report.download_seconds)} at an assumed "
            f"{DOWNLOAD_BYTES_PER_S / 1e6:g} MB/s"
        )
        if report.downloads
        else ""
    )
    lines.append(
        f"  time      about {_duration(report.seconds)} from a cold start "
        f"(images/s: {report.throughput_source}{downloads})"
    )
    for w in report.warnings:
        lines.append(f"  warning   {w}")
    for p in report.problems:
        lines.append(f"  PROBLEM   {p}")
    lines.append("  ready to run" if report.ok else f"  cannot run: {len(report.problems)} problem(s) above")
    return "\n".join(lines)


def fetch_missing(params: Mapping[str, Any], *, progress: bool = True) -> list[Path]:
    """Download what :func:`preflight` lists: the data set (SHA-256) and weights (MD5), with progress bars.

    For a strict profile a failed download raises
    :class:`uslib.download.DownloadError`; otherwise a failed weights download
    is reported and the features chapter falls back as the profile says.

    Returns
    -------
    list of pathlib.Path
        The files downloaded.
    """
    import sys

    from .oasbud import fetch_oasbud
    from .download import DownloadError
    from .features import download_weights

    report = preflight(params, probe=False)
    got: list[Path] = []
    for d in report.downloads:
        print(f"[uslib] downloading {d.what} ({_gb(d.size_bytes)}) from {d.url} to {d.target}", flush=True)
        try:
            if d.what == "OASBUD.mat":
                got.append(fetch_oasbud(path=d.target, progress=progress))
            else:
                got.append(download_weights(d.what.split()[0], progress=progress))
        except DownloadError as exc:
            if d.what == "OASBUD.mat" or params.get("strict_weights"):
                raise
            print(f"[uslib] warning: {exc}", file=sys.stderr, flush=True)
    return got
