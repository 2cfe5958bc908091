"""ImageNet CNN features of the image set, cached on disk.

Byra et al. (2018, Section II.E) use two ImageNet-trained networks as fixed
feature extractors: InceptionV3 (output of the global average pool, 2048
features) and VGG19 (output of the first fully connected layer ``fc1``, 4096
features). :data:`BACKBONES` describes both; :func:`load_backbone` builds one
with the best weights that can be had; :func:`extract_features` runs every
image of a manifest (:func:`uslib.augmentation.image_set`) through it once,
in batches, and caches the features per image on disk.

Weights policy (design.md, "Pretrained weights"), in this order:

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

Speed (issue 12): the default batch size is a rule per network
(:func:`default_batch_size`, used when ``batch_size`` is None, the profile's
default); arithmetic is float32 unless the profile asks for
``precision: bfloat16`` (:func:`check_precision`), which runs the network
with a bfloat16 dtype policy (weights and activations in bfloat16, features
returned as float32) on CPUs with AVX512_BF16 or AMX-BF16; its features are
cached apart from float32 ones (:func:`uslib.store.feature_dir`). Long
extractions report their progress to the runner's terminal
(:func:`uslib.store.report_progress`), never into a notebook.

TensorFlow is imported lazily, so ``import uslib.features`` is cheap. The
module sets ``TF_ENABLE_ONEDNN_OPTS=1`` (oneDNN kernels, off by default on
AMD CPUs; about 3-4x faster here) and ``TF_CPP_MIN_LOG_LEVEL=2`` unless the
environment already sets them; TensorFlow's start-up banner, which that
level does not silence, is filtered out of the process's standard error
when TensorFlow is first imported (:func:`import_tensorflow`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from . import store  # noqa: E402

__all__ = [
    "Backbone",
    "BACKBONES",
    "WeightsInfo",
    "WeightsUnavailableError",
    "WeightsWarning",
    "FeatureSet",
    "keras_cache_dir",
    "KERAS_APPS_URL",
    "WEIGHTS_BASE_URL_ENV",
    "weights_md5_env",
    "weights_source",
    "locate_weights",
    "download_weights",
    "resolve_weights",
    "load_backbone",
    "preprocess",
    "feature_function",
    "extract_features",
    "prefetched",
    "Prefetched",
    "lesion_features",
    "image_content_keys",
    "PRECISIONS",
    "PrecisionUnsupportedError",
    "cpu_flags",
    "bfloat16_support",
    "check_precision",
    "DEFAULT_BATCH_SIZE",
    "default_batch_size",
    "import_tensorflow",
    "with_precision",
]

#: Where ``keras.applications`` downloads its weights from.
KERAS_APPS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
#: Environment variable replacing :data:`KERAS_APPS_URL` (rehearsals, mirrors).
WEIGHTS_BASE_URL_ENV = "USLIB_WEIGHTS_BASE_URL"
#: Packages whose versions are part of the features' code fingerprint.
_FEATURE_PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "numpy", "scipy")


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights were asked for (strictly) and none could be had."""


class WeightsWarning(UserWarning):
    """Features are computed with weights other than the published ImageNet ones."""


@dataclass(frozen=True)
class Backbone:
    """A feature-extracting network of ``keras.applications``.

    Parameters
    ----------
    name : str
        Registry key.
    constructor : str
        Name of the ``keras.applications`` constructor (``"InceptionV3"``).
    module : str
        ``keras.applications`` submodule holding ``preprocess_input``.
    size_px : int
        Side of the square RGB input in pixels.
    n_features : int
        Length of the feature vector.
    include_top : bool
        Whether the classifier head is built (VGG19's ``fc1`` is part of it).
    pooling : str or None
        ``pooling`` argument of the constructor.
    feature_layer : str or None
        Name of the layer whose output is the feature vector; None for the
        model's output.
    weights_file : str
        File name of the ImageNet weights in the Keras cache.
    weights_url : str
        Where ``keras.applications`` downloads them from.
    weights_md5 : str
        MD5 of the published weights file (as checked by Keras).
    weights_size_bytes : int
        Approximate size of the published weights file (for the pre-flight
        check's download estimate).

    Examples
    --------
    >>> bb = BACKBONES["vgg19"]
    >>> bb.input_shape, bb.n_features, bb.feature_layer
    ((224, 224, 3), 4096, 'fc1')
    """

    name: str
    constructor: str
    module: str
    size_px: int
    n_features: int
    include_top: bool
    pooling: str | None
    feature_layer: str | None
    weights_file: str
    weights_url: str
    weights_md5: str
    weights_size_bytes: int = 0

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.size_px, self.size_px, 3)


#: The paper's two networks.
BACKBONES: dict[str, Backbone] = {
    "inception_v3": Backbone(
        name="inception_v3",
        constructor="InceptionV3",
        module="inception_v3",
        size_px=299,
        n_features=2048,
        include_top=False,
        pooling="avg",
        feature_layer=None,
        weights_file="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_url=KERAS_APPS_URL + "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_md5="bcbd6486424b2319ff4ef7d526e38f63",
        weights_size_bytes=87_910_968,
    ),
    "vgg19": Backbone(
        name="vgg19",
        constructor="VGG19",
        module="vgg19",
        size_px=224,
        n_features=4096,
        include_top=True,
        pooling=None,
        feature_layer="fc1",
        weights_file="vgg19_weights_tf_dim_ordering_tf_kernels.h5",
        weights_url=KERAS_APPS_URL + "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels.h5",
        weights_md5="cbe5617147190e668d6c5d5026f83318",
        weights_size_bytes=574_710_816,
    ),
}


def _backbone(backbone: str | Backbone) -> Backbone:
    if isinstance(backbone, Backbone):
        return backbone
    try:
        return BACKBONES[str(backbone)]
    except KeyError:
        raise KeyError(f"unknown backbone {backbone!r}; known: {sorted(BACKBONES)}") from None


# ---------------------------------------------------------------------------
# Precision, batch size, a quiet TensorFlow
# ---------------------------------------------------------------------------

#: Arithmetic precisions of the networks (profile key ``precision``).
PRECISIONS: tuple[str, ...] = ("float32", "bfloat16", "int8")  # int8: issue 24, uslib.int8

#: CPU flags (``/proc/cpuinfo``) that give oneDNN a native bfloat16 path:
#: AVX512_BF16 (``vdpbf16ps``, Cooper Lake, Zen 4/5) or AMX-BF16 (Sapphire Rapids).
BF16_CPU_FLAGS: tuple[str, ...] = ("avx512_bf16", "amx_bf16")


class PrecisionUnsupportedError(RuntimeError):
    """A precision was asked for that this machine cannot run natively."""


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> frozenset[str]:
    """The instruction-set flags of the first CPU listed in ``cpuinfo`` (empty where there is none).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "cpuinfo"
    >>> _ = p.write_text("processor : 0\\nflags : fpu avx2 avx512_bf16\\n")
    >>> sorted(cpu_flags(p))
    ['avx2', 'avx512_bf16', 'fpu']
    """
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def bfloat16_support(flags: Sequence[str] | None = None) -> tuple[bool, str]:
    """Whether this CPU runs bfloat16 natively, and why (in words).

    Parameters
    ----------
    flags : sequence of str, optional
        CPU flags; default :func:`cpu_flags` (read at each call, so tests can
        replace the reader).

    Examples
    --------
    >>> bfloat16_support(["avx2", "avx512_bf16"])[0], bfloat16_support(["avx2", "fma"])[0]
    (True, False)
    """
    flags = frozenset(cpu_flags() if flags is None else flags)
    have = [f for f in BF16_CPU_FLAGS if f in flags]
    if have:
        return True, "CPU flags " + ", ".join(have)
    return False, ("this CPU has neither " + " nor ".join(f.upper() for f in BF16_CPU_FLAGS)
                   + " (from /proc/cpuinfo)")


def check_precision(precision: str, *, flags: Sequence[str] | None = None) -> str:
    """Return ``precision`` if this machine can run it, else raise with the reason.

    float32 runs everywhere. bfloat16 needs a CPU with AVX512_BF16 or
    AMX-BF16 (:func:`bfloat16_support`): elsewhere TensorFlow would emulate it
    in software, slower than float32 and with bfloat16's rounding, so it is
    refused rather than run.

    Raises
    ------
    ValueError
        An unknown precision.
    PrecisionUnsupportedError
        bfloat16 on a CPU without a native path; the message says what to set.

    Examples
    --------
    >>> check_precision("float32", flags=[])
    'float32'
    >>> check_precision("bfloat16", flags=["avx2"])
    Traceback (most recent call last):
    ...
    uslib.features.PrecisionUnsupportedError: precision 'bfloat16' needs native bfloat16 arithmetic, but this CPU has neither AVX512_BF16 nor AMX_BF16 (from /proc/cpuinfo); set `precision: float32` in the profile
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bfloat16":
        ok, why = bfloat16_support(flags)
        if not ok:
            raise PrecisionUnsupportedError(
                f"precision 'bfloat16' needs native bfloat16 arithmetic, but {why}; "
                "set `precision: float32` in the profile")
    if precision == "int8":  # issue 24: VNNI and the optional packages (uslib.int8)
        from . import int8

        why = int8.unsupported_reason(cpu_flags() if flags is None else flags)
        if why:
            raise PrecisionUnsupportedError(why)
    return precision


#: Images per forward pass when the profile leaves ``batch_size`` null.
#: Why: on a CPU the convolutions are matrix products whose rows are batch x
#: height x width; InceptionV3's last blocks are 8 x 8 and 17 x 17 pixels, so
#: at 16 images their products are too small for oneDNN to keep the vector
#: units busy (issue 12 measured 51 % of the sgemm roofline at 16 images, 79 %
#: at 32 on 2 Zen 5 cores); 64 images keep the 8 x 8 layers at 4,096 rows.
#: VGG19's smallest maps are 14 x 14, already 3,136 rows at 16 images; 32
#: images amortise ``fc1``'s 411 MB of weights, read once per batch. Memory
#: stays near 2 GiB of activations for either. ``benchmarks/bench_features.py``
#: measures every batch size against the roofline and flags the default when
#: another size beats it by more than 3 %.
DEFAULT_BATCH_SIZE: dict[str, int] = {"inception_v3": 64, "vgg19": 32}


def default_batch_size(backbone: str | Backbone, batch_size: int | None = None) -> int:
    """The batch size to use: ``batch_size`` if given, else the backbone's rule (:data:`DEFAULT_BATCH_SIZE`).

    Examples
    --------
    >>> default_batch_size("inception_v3"), default_batch_size("vgg19"), default_batch_size("vgg19", 8)
    (64, 32, 8)
    """
    bb = _backbone(backbone)
    if batch_size is None:
        return DEFAULT_BATCH_SIZE.get(bb.name, 16)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    return int(batch_size)


#: Lines TensorFlow writes to standard error on start-up that say nothing to
#: a reader of this compendium (TF_CPP_MIN_LOG_LEVEL does not reach them: they
#: are logged before absl's logging is initialised).
TF_NOISE: tuple[str, ...] = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
)


@contextlib.contextmanager
def _quiet_stderr(noise: Sequence[str] = TF_NOISE):
    """Capture file descriptor 2 for the block; re-emit every line not matching ``noise``.

    Written here because the banner is written by C++ straight to the file
    descriptor, below Python's ``sys.stderr`` and any logging filter.
    """
    import sys
    import tempfile

    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            kept = [ln for ln in text.splitlines() if ln.strip() and not any(n in ln for n in noise)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")


_TF_READY = threading.Lock()

#: Environment variables setting TensorFlow's thread pools (read once, before its first operation):
#: ``USLIB_TF_THREADS`` both pools (Dask workers get it from :mod:`uslib.scheduler`),
#: ``USLIB_TF_INTRA_OP_THREADS`` / ``USLIB_TF_INTER_OP_THREADS`` one each (benchmarks try them).
THREAD_ENVS = ("USLIB_TF_THREADS", "USLIB_TF_INTRA_OP_THREADS", "USLIB_TF_INTER_OP_THREADS")


def _set_threads(tf) -> None:
    both = int(os.environ.get("USLIB_TF_THREADS", "0") or 0)
    intra = int(os.environ.get("USLIB_TF_INTRA_OP_THREADS", "0") or 0) or both
    inter = int(os.environ.get("USLIB_TF_INTER_OP_THREADS", "0") or 0) or both
    try:  # only possible before TensorFlow's first operation in this process
        if intra > 0:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter > 0:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        pass


def import_tensorflow():
    """``import tensorflow`` with its start-up banner filtered out of standard error; returns the module.

    The banner comes twice: at import, and at the first operation (another
    shared library); both happen inside the filter. Everything else written
    to standard error meanwhile is passed on.
    """
    import sys

    if "tensorflow" in sys.modules and getattr(import_tensorflow, "_done", False):
        return sys.modules["tensorflow"]
    with _TF_READY:
        if getattr(import_tensorflow, "_done", False):  # another thread imported it while this one waited
            return sys.modules["tensorflow"]
        with _quiet_stderr():
            import tensorflow as tf

            _set_threads(tf)
            tf.constant(0.0) + 0.0  # the second banner comes with the first operation
        import_tensorflow._done = True
    return tf


@contextlib.contextmanager
def _dtype_policy(name: str):
    import keras

    with _POLICY_LOCK:
        old = keras.config.dtype_policy()
        keras.config.set_dtype_policy(name)
        try:
            yield
        finally:
            keras.config.set_dtype_policy(old)


_POLICY_LOCK = threading.Lock()


def with_precision(model, backbone: str | Backbone, precision: str = "float32"):
    """The same network with the same weights, computing in ``precision``.

    float32 returns ``model``. bfloat16 builds the architecture again under
    Keras's ``"bfloat16"`` dtype policy (weights and activations in bfloat16,
    so no per-batch cast of VGG19's 0.4 GB ``fc1``) and copies ``model``'s
    weights into it (rounded to bfloat16). Its input stays float32 and
    :func:`feature_function` returns float32.
    """
    bb = _backbone(backbone)
    if precision == "float32":
        return model
    if precision == "int8":  # issue 24: not a Keras dtype policy; extract_features runs uslib.int8 instead
        raise ValueError("precision 'int8' is run by OpenVINO (uslib.int8.load_or_quantize), not by a Keras model")
    check_precision(precision)
    import_tensorflow()
    import keras

    ctor = getattr(keras.applications, bb.constructor)
    with _dtype_policy(precision):
        base = ctor(weights=None, include_top=bb.include_top, pooling=bb.pooling, input_shape=bb.input_shape)
        twin = base if bb.feature_layer is None else keras.Model(
            base.input, base.get_layer(bb.feature_layer).output, name=f"{bb.name}_{bb.feature_layer}_{precision}")
    twin.set_weights(model.get_weights())
    return twin


# ---------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------


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
        values (:func:`_values_digest`); filled in by
        :func:`load_backbone`, used to check that a random initialisation
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
        kind=kind,
        source=f"{origin}: {path}",
        fingerprint=sha[:16],
        message=message,
        path=str(path),
        md5=md5,
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
    return f"USLIB_WEIGHTS_MD5_{_backbone(backbone).name.upper()}"


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
    bb = _backbone(backbone)
    base = os.environ.get(WEIGHTS_BASE_URL_ENV)
    url = (base.rstrip("/") + "/" + bb.weights_url[len(KERAS_APPS_URL):]) if base else bb.weights_url
    md5 = (os.environ.get(weights_md5_env(bb)) or bb.weights_md5).strip().lower()
    return url, md5


def locate_weights(backbone: str | Backbone, *, weights_path: str | os.PathLike | None = None
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
    bb = _backbone(backbone)
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

    bb = _backbone(backbone)
    url, md5 = weights_source(bb)
    return download(url, keras_cache_dir() / "models" / bb.weights_file, md5=md5, progress=progress,
                    desc=f"{bb.name} weights")


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
    bb = _backbone(backbone)
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


def _external_stacklevel() -> int:
    """``stacklevel`` that points a warning at the first caller outside this module."""
    import sys

    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    return level


def _values_digest(model, n_per_tensor: int = 4096) -> str:
    """SHA-256 (16 hex) of shapes and ~``n_per_tensor`` evenly strided values of every weight.

    A sample rather than every byte: cheap (no copy of VGG19's 0.5 GB), and
    enough to tell two initialisations or two weight files apart.
    """
    tf = import_tensorflow()

    h = hashlib.sha256()
    for w in model.weights:
        flat = tf.reshape(tf.convert_to_tensor(w.value if hasattr(w, "value") else w), [-1])
        step = max(1, int(flat.shape[0]) // n_per_tensor)
        a = np.ascontiguousarray(flat[::step].numpy())
        h.update(repr((tuple(w.shape), a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _private_python_random(seed: int):
    """Keras draws each layer's initialiser seed from Python's global ``random``; give it its own.

    Other threads of the process (a Dask worker's event loop, say) also draw
    from the global generator, which would make a seeded initialisation
    differ from one process to the next. A private ``random.Random(seed)``
    has the state ``keras.utils.set_random_seed(seed)`` gives the global one,
    so a process alone draws the same seeds either way.
    """
    import random

    try:
        from keras.src.random import seed_generator as sg
    except ImportError:  # pragma: no cover - private module moved: fall back to the global generator
        yield
        return
    with _PRIVATE_RANDOM_LOCK:
        saved = sg.python_random
        sg.python_random = random.Random(seed)
        try:
            yield
        finally:
            sg.python_random = saved


_PRIVATE_RANDOM_LOCK = threading.Lock()


def _build(bb: Backbone, info: WeightsInfo):
    """Build the feature model for resolved weights; returns (model, info with values digest)."""
    import random

    import_tensorflow()
    import keras

    ctor = getattr(keras.applications, bb.constructor)
    kwargs = dict(include_top=bb.include_top, pooling=bb.pooling, input_shape=bb.input_shape)
    if info.kind == "random":
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            keras.utils.set_random_seed(int(info.seed or 0))
            with _private_python_random(int(info.seed or 0)):
                with _POLICY_LOCK:  # not while another thread builds a bfloat16 twin
                    base = ctor(weights=None, **kwargs)
        finally:  # do not leave the caller's global generators reseeded
            random.setstate(py_state)
            np.random.set_state(np_state)
    else:
        try:
            with _POLICY_LOCK:
                base = ctor(weights=info.path, **kwargs)
        except Exception as exc:
            raise WeightsUnavailableError(
                f"{bb.name}: could not load weights from {info.path}: {exc}. "
                f"Expected the keras.applications file {bb.weights_file} ({bb.weights_url})."
            ) from exc
    if bb.feature_layer is None:
        model = base
    else:
        model = keras.Model(base.input, base.get_layer(bb.feature_layer).output, name=f"{bb.name}_{bb.feature_layer}")
    return model, replace(info, values_sha256=_values_digest(model))


def load_backbone(
    name: str | Backbone,
    *,
    weights: str | None = "imagenet",
    weights_path: str | os.PathLike | None = None,
    strict: bool = False,
    seed: int = 0,
    allow_download: bool = True,
):
    """Build a feature-extracting network with the best weights available.

    Parameters
    ----------
    name : str or Backbone
        ``"inception_v3"`` or ``"vgg19"``.
    weights, weights_path, strict, seed, allow_download
        See :func:`resolve_weights`.

    Returns
    -------
    model : keras.Model
        Maps float32 ``(b, size_px, size_px, 3)`` preprocessed images
        (:func:`preprocess`) to ``(b, n_features)`` features.
    info : WeightsInfo
    """
    bb = _backbone(name)
    info = resolve_weights(
        bb, weights=weights, weights_path=weights_path, strict=strict, seed=seed, allow_download=allow_download
    )
    return _build(bb, info)


# ---------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------


def preprocess(images: np.ndarray, backbone: str | Backbone) -> np.ndarray:
    """Apply the network's own ``keras.applications`` ``preprocess_input``.

    Parameters
    ----------
    images : ndarray, shape (b, size_px, size_px, 3)
        RGB images with values in [0, 255] (from
        :func:`uslib.augmentation.iter_images`). Not modified.
    backbone : str or Backbone

    Returns
    -------
    ndarray of float32, same shape
        InceptionV3: scaled to [-1, 1]; VGG19: RGB -> BGR minus the ImageNet
        channel means.
    """
    import importlib

    bb = _backbone(backbone)
    import_tensorflow()
    mod = importlib.import_module(f"keras.applications.{bb.module}")
    x = np.array(images, dtype=np.float32, copy=True)  # preprocess_input works in place
    return np.asarray(mod.preprocess_input(x), dtype=np.float32)


def feature_function(model, backbone: str | Backbone):
    """A compiled batched inference function for ``model``.

    Wraps ``model(x, training=False)`` in :func:`tf.function` (graph mode,
    no XLA) with a batch dimension of any size, so it is traced once. A
    bfloat16 model (:func:`with_precision`) takes the same float32 input and
    its features are returned as float32.

    Returns
    -------
    callable
        ``f(x)`` with ``x`` float32 ``(b, size_px, size_px, 3)``, already
        preprocessed, returning float32 ``(b, n_features)`` as numpy.
    """
    tf = import_tensorflow()

    bb = _backbone(backbone)

    def forward(x):
        return tf.cast(model(x, training=False), tf.float32)

    fn = tf.function(
        forward,
        jit_compile=False,
        input_signature=[tf.TensorSpec((None, *bb.input_shape), tf.float32)],
        reduce_retracing=True,
    )

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(fn(tf.convert_to_tensor(x, tf.float32)).numpy(), dtype=np.float32)

    return run


@dataclass
class FeatureSet:
    """Features of every row of a manifest.

    Attributes
    ----------
    features : ndarray of float32, shape (n_images, n_features)
        Row ``i`` belongs to ``manifest.iloc[i]``.
    backbone : str
    weights : dict
        :meth:`WeightsInfo.to_dict` (``kind``, ``source``, ``fingerprint``,
        ``message``, ...).
    n_computed : int
        Distinct images run through the network in this call.
    n_cached : int
        Distinct images read from the cache.
    seconds : float
        Wall time of the call.
    tasks : list of dict
        With a Dask client, one record per partition (lesion) computed on the
        cluster: ``lesion``, ``n_images``, ``worker``, ``build_seconds`` (0
        when the worker already held the network), ``render_seconds``,
        ``inference_seconds``, ``task_seconds`` (on the worker),
        ``bytes_in`` (arguments sent), ``bytes_out`` (features returned).
    """

    features: np.ndarray
    backbone: str
    weights: dict = field(default_factory=dict)
    n_computed: int = 0
    n_cached: int = 0
    seconds: float = 0.0
    tasks: list = field(default_factory=list)

    def __repr__(self) -> str:
        return (
            f"FeatureSet({self.backbone}, features {self.features.shape}, weights {self.weights.get('kind')} "
            f"{self.weights.get('fingerprint')}, computed {self.n_computed}, cached {self.n_cached}, "
            f"{self.seconds:.1f} s)"
        )


def _scan_chunks(folder: Path) -> tuple[dict[str, tuple[Path, int]], dict[Path, np.ndarray]]:
    """Index of the cache: image cache key -> (chunk file, row), and each chunk's features.

    Every chunk is read whole, so its zip CRCs are checked; a damaged chunk is
    reported (:func:`uslib.store.report_damage`), removed, and its images are
    recomputed.
    """
    index: dict[str, tuple[Path, int]] = {}
    payload: dict[Path, np.ndarray] = {}
    if not folder.is_dir():
        return index, payload
    for path in sorted(folder.glob("chunk-*.npz")):
        try:
            z = store.load_npz(path)
            keys, feats = z["keys"], z["features"]
            if feats.ndim != 2 or len(keys) != len(feats):
                raise store.DamagedArtefact(path, f"keys {keys.shape} and features {feats.shape} disagree")
        except KeyError as exc:
            store.report_damage(store.DamagedArtefact(path, f"member {exc} missing"), action="recomputing its images")
            continue
        except store.DamagedArtefact as exc:
            store.report_damage(exc, action="recomputing its images")
            continue
        payload[path] = feats
        for row, k in enumerate(keys.tolist()):
            index[str(k)] = (path, row)
    return index, payload


def _read_sidecar(folder: Path) -> dict | None:
    """``weights.json`` of a feature folder, or None (a damaged one is reported and rewritten)."""
    side = folder / "weights.json"
    if not side.is_file():
        return None
    try:
        stored = store.load_json(side)
    except store.DamagedArtefact as exc:
        store.report_damage(exc, action="rewriting it")
        return None
    return stored if isinstance(stored, dict) else None


def image_content_keys(dataset) -> dict[str, str]:
    """Content fingerprint of each lesion's image inputs: RF, ROI and acquisition of its scans.

    Labels and patients are left out: they do not change an image, so
    regrouping patients or correcting a label reuses the features. This is
    the data set's (cached) :attr:`uslib.data.Dataset.content_digests`.
    """
    return dict(dataset.content_digests)


def _write_chunk(folder: Path, keys: Sequence[str], features: np.ndarray) -> Path:
    path = folder / f"chunk-{store.key(*keys)}.npz"
    store.save_npz(path, keys=np.asarray(keys, dtype=np.str_), features=np.asarray(features, np.float32))
    return path


def _check_sidecar(folder: Path, info: WeightsInfo) -> None:
    stored = _read_sidecar(folder)
    if info.values_sha256 is None or stored is None:
        return
    stored = stored.get("values_sha256")
    if stored and stored != info.values_sha256:
        raise RuntimeError(
            f"feature cache {folder} was filled by a model whose weight values hash to {stored}, but the "
            f"model built now (fingerprint {info.fingerprint}) hashes to {info.values_sha256}; the random "
            "initialisation is not reproducible here. Delete that folder to recompute."
        )


def extract_features(
    dataset,
    manifest,
    backbone: str | Backbone,
    *,
    cache_dir: str | os.PathLike,
    weights: str | None = "imagenet",
    weights_path: str | os.PathLike | None = None,
    strict: bool = False,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = True,
    allow_download: bool = True,
    client=None,
    data_file: tuple[str, int] | None = None,
    retries: int = 3,
    precision: str = "float32",
) -> FeatureSet:
    """Features of every image of a manifest, computed once and cached.

    Each distinct image (:func:`uslib.augmentation.image_key`) is rendered
    (:func:`uslib.augmentation.iter_images`), preprocessed
    (:func:`preprocess`) and run through the network in batches by a compiled
    function (:func:`feature_function`); the next batch is rendered in a
    helper thread while the network runs the current one (:func:`prefetched`).
    Features are cached per image under
    ``cache_dir`` with the key ``uslib.store.key(image content, image_key(row),
    size_px, backbone, weights fingerprint, code fingerprint, precision)`` — the image
    content is the RF, ROI and acquisition of the lesion's scans
    (:func:`image_content_keys`), the code fingerprint covers this module,
    the reconstruction and augmentation it calls, and the TensorFlow/Keras
    versions (:func:`uslib.store.code_fingerprint`) —
    one ``.npz`` chunk per batch written atomically, so an interrupted run
    loses at most one batch and a rerun (or a manifest with more dynamic
    ranges or margins) computes only the missing images. The network is not
    built when every image is cached.

    Parameters
    ----------
    dataset : Dataset
    manifest : pandas.DataFrame
        Rows with ``lesion``, ``scan``, ``margin_mm``, ``dynamic_range_db``
        (:func:`uslib.augmentation.image_set` or a subset of it).
    backbone : str or Backbone
        ``"inception_v3"`` or ``"vgg19"``.
    cache_dir : path-like
        Cache root; features go to ``<cache_dir>/<backbone>-<fingerprint>/``
        with a ``weights.json`` sidecar describing the weights.
    weights, weights_path, strict, seed, allow_download
        See :func:`resolve_weights`.
    batch_size : int or None
        Images per forward pass (and per cache chunk); None: the backbone's
        rule (:func:`default_batch_size`).
    progress : bool
        Show a tqdm progress bar with the throughput in images/s. Under the
        runner (whatever ``progress`` says) the count of images done is also
        appended to the run's events file (:func:`uslib.store.report_progress`)
        after every batch, and the runner shows it on its terminal.
    client : distributed.Client or callable, optional
        Compute the missing images on a Dask cluster instead of in this
        process; a callable returning a client is called only when images
        are missing (so a fully cached call starts no cluster). The missing
        images are partitioned by lesion, one task each
        (:func:`lesion_features`): every worker builds each network once and
        keeps it, renders its lesion's images from the RF and returns their
        features; this process writes each partition's chunk as soon as it
        arrives, so the store needs no shared file system and a rerun
        computes only what had not arrived. A worker lost mid-run is
        replaced and its tasks rerun (``retries``).
    data_file : (str, int), optional
        ``(path, skip_samples)`` of the file the data set was read from. When
        every worker can read it (same size), tasks carry the path and
        workers read the file (once per worker); otherwise each lesion's
        scans are sent to the cluster (``client.scatter``). Workers check
        that what they read has the content key of the lesion asked for.
    retries : int
        Times Dask reruns a partition whose worker died or that failed.
    precision : {"float32", "bfloat16", "int8"}
        Arithmetic of the network (:func:`check_precision` refuses bfloat16
        on a CPU without a native path; :func:`with_precision`). Features of
        each precision are cached apart: the folder
        (:func:`uslib.store.feature_dir`) and every image key name it.
        int8 (:mod:`uslib.int8`) runs in this process even with a
        ``client``, and its name in the cache also carries its calibration
        subset (:func:`uslib.int8.cache_tag`).

    Returns
    -------
    FeatureSet
        ``features`` float32 ``(len(manifest), n_features)`` in the manifest's
        row order.

    Notes
    -----
    On a cluster the features are those of the same network (same weights,
    checked through ``values_sha256``) on the same images, but in other
    batches and on other thread counts, so oneDNN may sum in another order.
    Measured here they were bitwise equal (``benchmarks/bench_distributed.py``
    reports the largest difference); ``tests/test_distributed.py`` allows
    1e-5 relative to the largest feature.
    """
    from .augmentation import image_key, iter_images

    t_start = time.perf_counter()
    bb = _backbone(backbone)
    batch_size = default_batch_size(bb, batch_size)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    info = resolve_weights(
        bb, weights=weights, weights_path=weights_path, strict=strict, seed=seed, allow_download=allow_download
    )
    n = len(manifest)
    content = image_content_keys(dataset)
    tag = precision  # issue 24: int8 features are cached under a tag naming their calibration subset
    if precision == "int8":
        from . import int8

        calibration = int8.calibration_manifest(dataset, content, bb.size_px)
        tag = int8.cache_tag(calibration["calibration_key"].tolist())
        client = None  # int8 runs in this process (one quantized network)
    folder = store.feature_dir(cache_dir, bb.name, info.fingerprint, tag)
    code = store.code_fingerprint("features", packages=_FEATURE_PACKAGES)
    keys = [
        store.key(content[row.lesion], image_key(row), bb.size_px, bb.name, info.fingerprint, code, tag)
        for row in manifest.itertuples(index=False)
    ]
    positions_of: dict[str, list[int]] = {}
    for pos, k in enumerate(keys):
        positions_of.setdefault(k, []).append(pos)
    out = np.empty((n, bb.n_features), np.float32)

    index, payload = _scan_chunks(folder)
    missing = [k for k in positions_of if k not in index]

    n_computed = 0
    tasks: list[dict] = []
    stage = f"{bb.name} features" + ("" if precision == "float32" else f" ({precision})")
    if missing:
        check_precision(precision)  # before a cluster starts or a network is built
    if missing and client is not None:
        client = client() if callable(client) and not hasattr(client, "submit") else client
        sub = manifest.iloc[[positions_of[k][0] for k in missing]]
        for chunk_keys, feats, record, values_sha256 in _cluster_partitions(
                client, dataset, sub, missing, bb, info, content, code,
                batch_size=int(batch_size), data_file=data_file, retries=int(retries), precision=precision):
            if not tasks:  # the first partition tells which weight values the workers built
                info = replace(info, values_sha256=values_sha256)
                _check_sidecar(folder, info)
                store.save_json(folder / "weights.json", {"backbone": bb.name, **info.to_dict()})
            elif values_sha256 != info.values_sha256:
                raise RuntimeError(f"{bb.name}: workers built different weight values ({values_sha256} and "
                                   f"{info.values_sha256}); the random initialisation is not reproducible there")
            _write_chunk(folder, chunk_keys, feats)
            for k, f in zip(chunk_keys, feats):
                out[positions_of[k]] = f
            n_computed += len(chunk_keys)
            tasks.append(record)
            store.report_progress(stage, n_computed, len(missing), seconds=time.perf_counter() - t_start)
        if n_computed != len(missing):
            raise RuntimeError(f"{bb.name}: the cluster returned {n_computed} of {len(missing)} missing images")
    elif missing:
        sub = manifest.iloc[[positions_of[k][0] for k in missing]]
        from tqdm.auto import tqdm

        # the first batch is rendered while the network is built (and TensorFlow imported)
        with prefetched(iter_images(dataset, sub, size_px=bb.size_px, batch_size=int(batch_size)),
                        lambda item: (item[0], preprocess(item[1], bb))) as batches:
            model, info = _build(bb, info)
            _check_sidecar(folder, info)
            store.save_json(folder / "weights.json", {"backbone": bb.name, **info.to_dict()})
            if precision == "int8":  # issue 24: OpenVINO + NNCF, quantized once per feature folder
                run = int8.load_or_quantize(folder, model, bb.input_shape, lambda: preprocess(np.concatenate(
                    [x for _, x in iter_images(dataset, calibration, size_px=bb.size_px)]), bb))
            else:
                run = feature_function(with_precision(model, bb, precision), bb)
            del model
            bar = tqdm(total=len(missing), desc=f"{bb.name} features", unit="img", disable=not progress)
            t_inf = time.perf_counter()
            store.report_progress(stage, 0, len(missing), seconds=0.0)
            try:
                for positions, x in batches:
                    feats = run(x)
                    if feats.shape != (len(positions), bb.n_features):
                        raise RuntimeError(
                            f"{bb.name}: features of shape {feats.shape}, expected (b, {bb.n_features})")
                    chunk_keys = [missing[p] for p in positions.tolist()]
                    _write_chunk(folder, chunk_keys, feats)
                    for k, f in zip(chunk_keys, feats):
                        out[positions_of[k]] = f
                    n_computed += len(chunk_keys)
                    bar.update(len(chunk_keys))
                    bar.set_postfix(img_s=f"{n_computed / max(time.perf_counter() - t_inf, 1e-9):.1f}")
                    store.report_progress(stage, n_computed, len(missing), seconds=time.perf_counter() - t_inf)
            finally:
                bar.close()
        if n_computed != len(missing):
            raise RuntimeError(f"{bb.name}: iter_images gave {n_computed} of {len(missing)} missing images")
    else:
        stored = _read_sidecar(folder)
        if stored is None:
            store.save_json(folder / "weights.json", {"backbone": bb.name, **info.to_dict()})
        elif stored.get("values_sha256"):
            info = replace(info, values_sha256=stored["values_sha256"])

    by_chunk: dict[Path, list[tuple[str, int]]] = {}
    for k in positions_of:
        if k in index:
            path, row = index[k]
            by_chunk.setdefault(path, []).append((k, row))
    for path, items in by_chunk.items():
        feats = payload[path]
        if feats.ndim != 2 or feats.shape[1] != bb.n_features:
            raise RuntimeError(f"feature cache chunk {path}: shape {feats.shape}, expected (b, {bb.n_features})")
        for k, row in items:
            out[positions_of[k]] = feats[row]

    return FeatureSet(
        features=out,
        backbone=bb.name,
        weights=info.to_dict(),
        n_computed=n_computed,
        n_cached=len(positions_of) - n_computed,
        seconds=time.perf_counter() - t_start,
        tasks=tasks,
    )


def prefetched(items, transform=None) -> "Prefetched":
    """Draw ``items`` (and apply ``transform``) one ahead of the caller, in a background thread.

    While the caller works on one item (a network runs a batch: TensorFlow
    releases the GIL), the next is drawn from ``items`` and transformed in a
    single helper thread, so the rendering of the next batch (NumPy and SciPy
    on one core) overlaps the network's arithmetic instead of leaving a core
    idle. The first item is started at once, before the caller asks for it:
    :func:`extract_features` builds the network meanwhile. Exactly one item
    is prepared ahead; items are drawn one at a time, in order, so ``items``
    may be a generator. The items and their order are those of the plain
    loop: only the timing changes.

    Parameters
    ----------
    items : iterable
    transform : callable, optional
        Applied to each item in the helper thread; None passes the items on.

    Returns
    -------
    Prefetched
        An iterator of ``transform(item)`` (or ``item``) in the order of
        ``items``, and a context manager: leaving the block (or
        :meth:`Prefetched.close`) waits for the item in preparation and
        draws nothing more. Whatever drawing or transforming an item raised
        is raised where the caller asks for that item.

    Examples
    --------
    >>> with prefetched(range(4), lambda i: i * i) as squares:
    ...     list(squares)
    [0, 1, 4, 9]
    """
    return Prefetched(items, transform)


class Prefetched:
    """The iterator :func:`prefetched` returns (one helper thread, one item ahead)."""

    _END = object()

    def __init__(self, items, transform=None):
        from concurrent.futures import ThreadPoolExecutor

        self._iterator = iter(items)
        self._transform = transform
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="uslib-prefetch")
        self._future = self._pool.submit(self._draw)
        self._done = False

    def _draw(self):
        item = next(self._iterator, self._END)
        return item if item is self._END or self._transform is None else self._transform(item)

    def __iter__(self) -> "Prefetched":
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        try:
            item = self._future.result()
        except BaseException:
            self.close()
            raise
        if item is self._END:
            self.close()
            raise StopIteration
        self._future = self._pool.submit(self._draw)
        return item

    def close(self) -> None:
        """Draw nothing more; wait for the item in preparation (its result or error is dropped)."""
        self._done = True
        self._pool.shutdown(wait=True)

    def __enter__(self) -> "Prefetched":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------
# On a Dask cluster
# ---------------------------------------------------------------------------

#: Networks built in this (worker) process: (backbone, weights fingerprint, precision) -> (run, info, build seconds).
_WORKER_MODELS: dict[tuple[str, str], tuple[Any, WeightsInfo, float]] = {}
#: Data sets read in this (worker) process: (path, size, mtime, skip_samples) -> Dataset.
_WORKER_DATA: dict[tuple[str, int, int, int], Any] = {}

_MANIFEST_COLUMNS = ["lesion", "scan", "margin_mm", "dynamic_range_db"]


def _worker_model(bb: Backbone, info: WeightsInfo, precision: str = "float32"):
    """The compiled feature function of ``bb`` with ``info``'s weights in ``precision``, built once per process."""
    memo = (bb.name, info.fingerprint, precision)
    if memo not in _WORKER_MODELS:
        import_tensorflow()  # sets the thread pools from USLIB_TF_THREADS before the first operation
        t0 = time.perf_counter()
        model, built = _build(bb, info)
        _WORKER_MODELS.clear()  # keep one network per worker: VGG19 alone is 0.5 GB
        _WORKER_MODELS[memo] = (feature_function(with_precision(model, bb, precision), bb), built,
                                time.perf_counter() - t0)
        return _WORKER_MODELS[memo]
    run, built, _ = _WORKER_MODELS[memo]
    return run, built, 0.0


def _worker_lesion(data, lesion: str):
    """The lesion a task asks for: sent with it, or read from the data file (once per worker)."""
    if not isinstance(data, tuple):
        return data
    from .data import load_oasbud

    path, skip_samples = data
    st = os.stat(path)
    memo = (str(path), st.st_size, st.st_mtime_ns, int(skip_samples))
    if memo not in _WORKER_DATA:
        _WORKER_DATA.clear()
        _WORKER_DATA[memo] = load_oasbud(path, skip_samples=int(skip_samples))
    return _WORKER_DATA[memo][lesion]


def lesion_features(data, lesion: str, content_key: str, rows, *, backbone: str, weights: dict,
                    batch_size: int, code: str, precision: str = "float32") -> dict[str, Any]:
    """Features of some images of one lesion: the task a Dask worker runs.

    Parameters
    ----------
    data : Lesion or (str, int)
        The lesion itself, or ``(path, skip_samples)`` of the data file
        holding it (read once per worker process).
    lesion : str
        The lesion's key.
    content_key : str
        :func:`image_content_keys` of the lesion as the client sees it; the
        worker checks that its lesion has the same.
    rows : pandas.DataFrame
        Manifest rows (``lesion``, ``scan``, ``margin_mm``,
        ``dynamic_range_db``) of this lesion.
    backbone : str
    weights : dict
        :meth:`WeightsInfo.to_dict` of the resolved weights.
    batch_size : int
        Images per forward pass.
    code : str
        The client's code fingerprint of this module; a worker running other
        code (or other TensorFlow/Keras versions) refuses the task.
    precision : {"float32", "bfloat16"}
        Arithmetic of the network (:func:`with_precision`); a worker whose
        CPU lacks bfloat16 refuses the task (:func:`check_precision`).

    Returns
    -------
    dict
        ``features`` float32 ``(len(rows), n_features)`` in row order,
        ``values_sha256`` of the network built, and timings
        (``build_seconds``, ``render_seconds``, ``inference_seconds``,
        ``task_seconds``) and the worker's process id.
    """
    from .augmentation import iter_images
    from .data import Dataset

    t0 = time.perf_counter()
    mine = store.code_fingerprint("features", packages=_FEATURE_PACKAGES)
    if mine != code:
        raise RuntimeError(f"this worker runs other uslib code or packages (fingerprint {mine}, the client has "
                           f"{code}): install the same uslib and pins on every worker")
    bb = _backbone(backbone)
    les = _worker_lesion(data, lesion)
    one = Dataset([les], source=f"lesion {lesion}")
    got = image_content_keys(one)[les.key]
    if les.key != lesion or got != content_key:
        raise RuntimeError(f"lesion {lesion}: the worker's data differ from the client's (content key {got}, "
                           f"expected {content_key}); is the data file the same on every machine?")
    fields = {k: weights.get(k) for k in WeightsInfo.__dataclass_fields__}
    run, built, build_s = _worker_model(bb, WeightsInfo(**fields), check_precision(precision))
    out = np.empty((len(rows), bb.n_features), np.float32)
    render_s = infer_s = 0.0
    t_r = time.perf_counter()
    for positions, batch in iter_images(one, rows, size_px=bb.size_px, batch_size=int(batch_size)):
        t_i = time.perf_counter()
        render_s += t_i - t_r
        out[positions] = run(preprocess(batch, bb))
        t_r = time.perf_counter()
        infer_s += t_r - t_i
    return {"features": out, "values_sha256": built.values_sha256, "build_seconds": build_s,
            "render_seconds": render_s, "inference_seconds": infer_s,
            "task_seconds": time.perf_counter() - t0, "worker_pid": os.getpid()}


def _file_readable(path: str, size: int) -> bool:
    """Whether this (worker) process sees ``path`` with ``size`` bytes."""
    try:
        return os.stat(path).st_size == size
    except OSError:
        return False


def _cluster_partitions(client, dataset, sub, missing: Sequence[str], bb: Backbone, info: WeightsInfo,
                        content: dict[str, str], code: str, *, batch_size: int, data_file, retries: int,
                        precision: str = "float32"):
    """Submit one task per lesion of the missing images; yield (keys, features, record, values) as they finish."""
    import pickle

    from distributed import as_completed

    by_lesion: dict[str, list[int]] = {}
    for i, les in enumerate(sub["lesion"].astype(str).tolist()):
        by_lesion.setdefault(les, []).append(i)
    use_path = False
    if data_file is not None:
        path, skip = str(data_file[0]), int(data_file[1])
        size = os.stat(path).st_size
        seen = client.run(_file_readable, path, size)
        use_path = bool(seen) and all(seen.values())
    weights = info.to_dict()
    futures, meta = [], {}
    for les, idx in by_lesion.items():
        rows = sub.iloc[idx][_MANIFEST_COLUMNS].reset_index(drop=True)
        if use_path:
            data, sent = (path, skip), 0
        else:  # sent with the task (not scattered): the scheduler keeps it, so a lost worker loses nothing
            data = lesion = dataset[les]
            sent = sum(np.asarray(s.rf).nbytes + np.asarray(s.roi).nbytes for s in lesion.scans)
        fut = client.submit(lesion_features, data, les, content[les], rows, backbone=bb.name, weights=weights,
                            batch_size=batch_size, code=code, precision=precision, retries=retries, pure=False,
                            key=f"uslib-features-{bb.name}-{store.key(les, [missing[i] for i in idx])}")
        futures.append(fut)
        meta[fut.key] = (les, [missing[i] for i in idx], sent + len(pickle.dumps(rows)))
    for fut in as_completed(futures):
        res = fut.result()
        les, keys, bytes_in = meta[fut.key]
        feats = np.asarray(res["features"], np.float32)
        if feats.shape != (len(keys), bb.n_features):
            raise RuntimeError(f"{bb.name}: lesion {les}: features of shape {feats.shape}, "
                               f"expected ({len(keys)}, {bb.n_features})")
        record = {"lesion": les, "n_images": len(keys), "worker": res["worker_pid"],
                  **{k: round(float(res[k]), 4) for k in ("build_seconds", "render_seconds", "inference_seconds",
                                                           "task_seconds")},
                  "bytes_in": int(bytes_in), "bytes_out": int(feats.nbytes)}
        fut.release()
        yield keys, feats, record, res["values_sha256"]
