"""Which weights a network gets: the Keras cache, a local file, a verified download, or a seeded random start.

Weights policy, in this order:

1. the weights file already in the Keras cache (``$KERAS_HOME/models`` or
   ``~/.keras/models``), under the name ``keras.applications`` uses;
2. a local weights file, or a folder holding it, named by ``weights_path``
   (the profile option of the same name, for offline machines);
3. a download (:func:`download_weights`) into the Keras cache, unless
   ``allow_download=False``: written beside the target, checked by MD5 as
   Keras checks it, and only then renamed into place, so a truncated or
   corrupted download never leaves a file under the name step 1 looks for;
4. otherwise ``strict=True`` raises :class:`WeightsUnavailableError`, whose
   message says which file to put where; ``strict=False`` warns
   (:class:`WeightsWarning`) and falls back to a seeded random
   initialisation, labelled ``kind="random"`` everywhere downstream.

Every result carries a :class:`WeightsInfo`: ``kind`` ("imagenet" for the
published file, "custom" for a file whose checksum differs from it,
"random"), ``source``, ``fingerprint`` (first 16 hex digits of the file's
SHA-256, or a hash of architecture + seed + Keras version for random
weights) and a human-readable ``message``. The fingerprint is part of every
cache key, so features from different weights never mix.

Test-only overrides (rehearsals, mirrors): the environment variable
``USLIB_WEIGHTS_BASE_URL`` replaces the Keras weights store
(:data:`KERAS_APPS_URL`; a mirror keeps its layout,
``<base>/<module>/<file>``), and ``USLIB_WEIGHTS_MD5_INCEPTION_V3`` /
``USLIB_WEIGHTS_MD5_VGG19`` the MD5 a download must have
(:func:`weights_source`). They change what is downloaded and how it is
checked, never how a file is labelled: a file is "imagenet" only when its MD5
is the published one (:attr:`Backbone.weights_md5`), so weights served by a
rehearsal mirror are labelled "custom" on every page.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import store
from .backbones import BACKBONES, KERAS_APPS_URL, Backbone, get_backbone
from .envvars import read

__all__ = [
    "WeightsInfo",
    "WeightsUnavailableError",
    "WeightsWarning",
    "keras_cache_dir",
    "WEIGHTS_BASE_URL_ENV",
    "weights_md5_env",
    "weights_source",
    "locate_weights",
    "download_weights",
    "resolve_weights",
]

#: Environment variable replacing :data:`KERAS_APPS_URL` (rehearsals, mirrors).
WEIGHTS_BASE_URL_ENV = "USLIB_WEIGHTS_BASE_URL"


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights were asked for (strictly) and none could be had."""


class WeightsWarning(UserWarning):
    """Features are computed with weights other than the published ImageNet ones."""


@dataclass(frozen=True)
class WeightsInfo:
    """Which weights a network was (or will be) built with.

    Attributes
    ----------
    kind : {"imagenet", "custom", "random"}
        "imagenet": the published file (MD5 as checked by Keras);
        "custom": a weights file whose MD5 differs from the published one;
        "random": seeded random initialisation.
    source : str
        Where the weights came from (``"keras cache: <path>"``,
        ``"weights_path: <path>"``, ``"download: <path>"``,
        ``"random-init seed=N"``).
    fingerprint : str
        16 hex digits: SHA-256 of the weights file, or for random weights a
        hash of kind, seed, architecture and Keras version. Part of every
        cache key.
    message : str
        Human-readable note (why random weights were used, ...).
    path : str or None
        The weights file.
    seed : int or None
        Seed of the random initialisation.
    values_sha256 : str or None
        SHA-256 (16 hex) of a strided sample of the built model's weight
        values (:func:`uslib.networks.build_model`); filled in by
        :func:`uslib.networks.load_backbone`, used to check that a random initialisation
        reproduces the one that filled a cache.
    md5 : str or None
        MD5 of the weights file (None for random weights): equal to
        :attr:`Backbone.weights_md5` exactly when ``kind`` is "imagenet".
    """

    kind: str
    source: str
    fingerprint: str
    message: str = ""
    path: str | None = None
    seed: int | None = None
    values_sha256: str | None = None
    md5: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def keras_cache_dir() -> Path:
    """The Keras home folder as Keras would choose it now.

    ``$KERAS_HOME`` if set, else ``~/.keras`` (``/tmp/.keras`` when the home
    folder is not writable). Weights live in its ``models`` subfolder.

    Examples
    --------
    >>> import os
    >>> os.environ.get("KERAS_HOME") is not None or keras_cache_dir().name == ".keras"
    True
    """
    if "KERAS_HOME" in os.environ:
        return Path(os.environ["KERAS_HOME"]).expanduser()
    home = os.path.expanduser("~")
    if not os.access(home, os.W_OK):
        home = "/tmp"
    return Path(home) / ".keras"


def _keras_cache_dirs() -> list[Path]:
    dirs = [keras_cache_dir()]
    import sys

    if "keras" in sys.modules:  # Keras fixes its home at import time
        try:
            from keras.src.backend import config as _kc

            d = Path(_kc.keras_home()).expanduser()
            if d not in dirs:
                dirs.append(d)
        except Exception:  # pragma: no cover - private API moved
            pass
    return dirs


def _file_hashes(path: Path) -> tuple[str, str]:
    """(sha256, md5) hex digests of a file, memoised by (path, size, mtime) (:func:`uslib.download.file_digest`)."""
    from .download import file_digests

    d = file_digests(path, ("sha256", "md5"))
    return d["sha256"], d["md5"]


def _file_info(bb: Backbone, path: Path, origin: str) -> WeightsInfo:
    sha, md5 = _file_hashes(path)
    if md5 == bb.weights_md5:
        kind = "imagenet"
        message = f"ImageNet weights ({bb.weights_file}, md5 {md5}) from {origin}."
    else:
        kind = "custom"
        message = (
            f"Weights file {path} (from {origin}) is not the published ImageNet file "
            f"(md5 {md5}, expected {bb.weights_md5}); its weights are used as given."
        )
    return WeightsInfo(
        kind=kind, source=f"{origin}: {path}", fingerprint=sha[:16], message=message, path=str(path), md5=md5
    )


def _keras_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("keras")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


def _random_info(bb: Backbone, seed: int, message: str) -> WeightsInfo:
    return WeightsInfo(
        kind="random",
        source=f"random-init seed={int(seed)}",
        fingerprint=store.key("random", bb.name, bb.constructor, bb.feature_layer, int(seed), _keras_version()),
        message=message,
        seed=int(seed),
    )


def _find_in_folder(bb: Backbone, folder: Path) -> Path | None:
    for cand in (folder / bb.weights_file, folder / "models" / bb.weights_file):
        if cand.is_file():
            return cand
    return None


def weights_md5_env(backbone: str | Backbone) -> str:
    """Name of the environment variable overriding a backbone's download MD5 (``USLIB_WEIGHTS_MD5_<NAME>``).

    Examples
    --------
    >>> weights_md5_env("inception_v3")
    'USLIB_WEIGHTS_MD5_INCEPTION_V3'
    """
    return f"USLIB_WEIGHTS_MD5_{get_backbone(backbone).name.upper()}"


def weights_source(backbone: str | Backbone) -> tuple[str, str]:
    """The URL a backbone's weights are downloaded from and the MD5 the download must have.

    The Keras weights store and the published MD5 unless the environment
    overrides them; the overrides are for rehearsals and mirrors (the tests
    serve small weight files from a loopback HTTP server through them):

    ``USLIB_WEIGHTS_BASE_URL``
        Replaces :data:`KERAS_APPS_URL`; the file is fetched from
        ``<base>/<module>/<weights_file>``, the Keras store's layout.
    ``USLIB_WEIGHTS_MD5_INCEPTION_V3``, ``USLIB_WEIGHTS_MD5_VGG19``
        The MD5 the downloaded file must have (:func:`weights_md5_env`).

    The label of a file never follows the override: "imagenet" means the
    published MD5 (:attr:`Backbone.weights_md5`).

    Returns
    -------
    url, md5 : str

    Examples
    --------
    >>> url, md5 = weights_source("vgg19")
    >>> url.endswith("vgg19/vgg19_weights_tf_dim_ordering_tf_kernels.h5"), len(md5)
    (True, 32)
    """
    bb = get_backbone(backbone)
    base = read(WEIGHTS_BASE_URL_ENV)
    url = (base.rstrip("/") + "/" + bb.weights_url[len(KERAS_APPS_URL) :]) if base else bb.weights_url
    md5 = (read(weights_md5_env(bb)) or bb.weights_md5).strip().lower()
    return url, md5


def locate_weights(
    backbone: str | Backbone, *, weights_path: str | os.PathLike | None = None
) -> tuple[Path | None, str, list[str]]:
    """Find a backbone's weights file on this machine, without hashing or downloading it.

    Steps 1 and 2 of the weights policy (module docstring): the Keras cache,
    then ``weights_path`` (a file, or a folder holding the file or
    ``models/<file>``; a file named for the other backbone is not used, its
    folder is searched instead).

    Returns
    -------
    path : pathlib.Path or None
        The file found, or None.
    origin : str
        ``"keras cache"`` or ``"weights_path"`` ('' when nothing was found).
    tried : list of str
        Where it looked and why each place failed, for messages.
    """
    bb = get_backbone(backbone)
    tried: list[str] = []
    for d in _keras_cache_dirs():
        cand = d / "models" / bb.weights_file
        if cand.is_file():
            return cand, "keras cache", tried
        tried.append(f"Keras cache {cand}: not found")
    if weights_path is None:
        tried.append("weights_path: not given")
        return None, "", tried
    p = Path(weights_path).expanduser()
    others = {o.weights_file: o.name for o in BACKBONES.values() if o.weights_file != bb.weights_file}
    if p.is_file() and p.name not in others:
        return p, "weights_path", tried
    if p.is_file():  # another network's file (one profile option serves both): look beside it
        found = _find_in_folder(bb, p.parent)
        if found is not None:
            return found, "weights_path", tried
        tried.append(f"weights_path {p}: is the {others[p.name]} file; no {bb.weights_file} beside it")
    elif p.is_dir():
        found = _find_in_folder(bb, p)
        if found is not None:
            return found, "weights_path", tried
        tried.append(f"weights_path {p}: folder has no {bb.weights_file}")
    else:
        tried.append(f"weights_path {p}: does not exist")
    return None, "", tried


def download_weights(backbone: str | Backbone, *, progress: bool = True) -> Path:
    """Download a backbone's weights into the Keras cache, verified by MD5; return the file.

    From :func:`weights_source` into ``keras_cache_dir()/models/<weights_file>``
    through :func:`uslib.download.download`: written beside the target,
    resumed when the connection drops, checked by MD5 and only then renamed
    into place, with a progress bar.

    Raises
    ------
    uslib.download.DownloadError
        Naming the URL, the expected and actual MD5 and the path.
    """
    from .download import download

    bb = get_backbone(backbone)
    url, md5 = weights_source(bb)
    return download(
        url, keras_cache_dir() / "models" / bb.weights_file, md5=md5, progress=progress, desc=f"{bb.name} weights"
    )


def resolve_weights(
    backbone: str | Backbone,
    *,
    weights: str | None = "imagenet",
    weights_path: str | os.PathLike | None = None,
    strict: bool = False,
    seed: int = 0,
    allow_download: bool = True,
) -> WeightsInfo:
    """Decide which weights a backbone gets, without building it.

    Parameters
    ----------
    backbone : str or Backbone
        A key of :data:`BACKBONES`.
    weights : {"imagenet", "random", None}
        ``"imagenet"`` follows the weights policy (module docstring);
        ``"random"`` or None asks for the seeded random initialisation.
    weights_path : path-like, optional
        A weights file, or a folder holding ``backbone.weights_file`` (or
        ``models/<file>``), tried after the Keras cache. A file named for
        the other backbone is not used; its folder is searched instead.
    strict : bool
        If True and no ImageNet weights can be had, raise instead of falling
        back to random weights.
    seed : int
        Seed of the random initialisation.
    allow_download : bool
        Try a download (step 3, :func:`download_weights`). Tests pass False
        unless they serve the file from a loopback mirror.

    Returns
    -------
    WeightsInfo

    Raises
    ------
    WeightsUnavailableError
        ``strict=True`` and no weights were found; the message names the
        file, the Keras cache folder, the download URL and ``weights_path``.

    Warns
    -----
    WeightsWarning
        ``strict=False`` and no weights were found (random fallback).

    Examples
    --------
    >>> info = resolve_weights("inception_v3", weights="random", seed=0)
    >>> info.kind, info.source
    ('random', 'random-init seed=0')
    """
    bb = get_backbone(backbone)
    if weights is None or weights == "random":
        return _random_info(bb, seed, f"Random initialisation (seed={int(seed)}) was asked for; not ImageNet features.")
    if weights != "imagenet":
        raise ValueError(
            f"weights must be 'imagenet', 'random' or None, got {weights!r} "
            "(give a local weights file or folder as weights_path)"
        )

    found, origin, tried = locate_weights(bb, weights_path=weights_path)
    if found is not None:
        return _file_info(bb, found, origin)
    # (c) download into the Keras cache, verified before it is put in place
    url, _ = weights_source(bb)
    if allow_download:
        try:
            return _file_info(bb, download_weights(bb), "download")
        except Exception as exc:  # no network, bad checksum, disk full, ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            tried.append(f"download from {url}: failed ({first})")
    else:
        tried.append("download: not allowed (allow_download=False)")
    # (d) none
    target = keras_cache_dir() / "models" / bb.weights_file
    how = (
        f"ImageNet weights for {bb.name} are not available. Tried: " + "; ".join(tried) + ". "
        f"To use them, fetch {bb.weights_url} (md5 {bb.weights_md5}) on a machine with network access and "
        f"either save it as {target} (the Keras cache folder {target.parent}), or put {bb.weights_file} in a "
        "folder and give that folder (or the file) as the `weights_path` option of the parameter profile."
    )
    if strict:
        raise WeightsUnavailableError(how)
    message = how + f" Falling back to random initialisation (seed={int(seed)}): these are NOT ImageNet features."
    warnings.warn(message, WeightsWarning, stacklevel=_external_stacklevel())
    return _random_info(bb, seed, message)


#: The modules of the features stage: a warning points at the first caller outside them.
_STAGE_FILES = frozenset(
    str(Path(__file__).with_name(f"{m}.py")) for m in ("features", "extraction", "cluster", "networks", "weights")
)


def _external_stacklevel() -> int:
    """``stacklevel`` that points a warning at the first caller outside the features stage's modules."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename in _STAGE_FILES:
        frame, level = frame.f_back, level + 1
    return level
