"""The arithmetic precision of the networks: which this machine can run, and the network in it.

float32 runs everywhere. ``precision: bfloat16`` (issue 12) runs the network
with a bfloat16 dtype policy (weights and activations in bfloat16, features
returned as float32) on CPUs with AVX512_BF16 or AMX-BF16
(:func:`check_precision` refuses it elsewhere); its features are cached apart
from float32 ones (:func:`uslib.store.feature_dir`).

A new precision (say int8) is added here: its name in :data:`PRECISIONS`, the
CPU check in :func:`check_precision`, and the network converted to it in
:func:`with_precision`; then the name in the ``precision`` parameter of the
profile schema (:class:`uslib.config.Profile`; ``tests/test_features.py``
checks the two lists agree). The extraction and the cache keys (feature
folder and image keys name the precision) need nothing more.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Sequence

from .backbones import Backbone, get_backbone
from .tfruntime import import_tensorflow

__all__ = [
    "PRECISIONS",
    "BF16_CPU_FLAGS",
    "PrecisionUnsupportedError",
    "cpu_flags",
    "bfloat16_support",
    "check_precision",
    "with_precision",
    "DTYPE_POLICY_LOCK",
]

#: Arithmetic precisions of the networks (profile key ``precision``).
PRECISIONS: tuple[str, ...] = ("float32", "bfloat16", "int8")  # int8: run by OpenVINO (uslib.int8)

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
    return False, ("this CPU has neither " + " nor ".join(f.upper() for f in BF16_CPU_FLAGS) + " (from /proc/cpuinfo)")


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
    uslib.precision.PrecisionUnsupportedError: precision 'bfloat16' needs native bfloat16 arithmetic, but this CPU has neither AVX512_BF16 nor AMX_BF16 (from /proc/cpuinfo); set `precision: float32` in the profile
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bfloat16":
        ok, why = bfloat16_support(flags)
        if not ok:
            raise PrecisionUnsupportedError(
                f"precision 'bfloat16' needs native bfloat16 arithmetic, but {why}; "
                "set `precision: float32` in the profile"
            )
    if precision == "int8":  # VNNI and the optional packages (uslib.int8)
        from . import int8

        why = int8.unsupported_reason(cpu_flags() if flags is None else flags)
        if why:
            raise PrecisionUnsupportedError(why)
    return precision


#: Held while Keras's global dtype policy is changed, and while a network is built under it
#: (:func:`uslib.networks.build_model` holds it too, so no network is built under another policy).
DTYPE_POLICY_LOCK = threading.Lock()


@contextlib.contextmanager
def _dtype_policy(name: str):
    import keras

    with DTYPE_POLICY_LOCK:
        old = keras.config.dtype_policy()
        keras.config.set_dtype_policy(name)
        try:
            yield
        finally:
            keras.config.set_dtype_policy(old)


def with_precision(model, backbone: str | Backbone, precision: str = "float32"):
    """The same network with the same weights, computing in ``precision``.

    float32 returns ``model``. bfloat16 builds the architecture again under
    Keras's ``"bfloat16"`` dtype policy (weights and activations in bfloat16,
    so no per-batch cast of VGG19's 0.4 GB ``fc1``) and copies ``model``'s
    weights into it (rounded to bfloat16). Its input stays float32 and
    :func:`uslib.networks.feature_function` returns float32.
    """
    bb = get_backbone(backbone)
    if precision == "float32":
        return model
    if precision == "int8":  # not a Keras dtype policy: extraction runs uslib.int8 instead
        raise ValueError("precision 'int8' is run by OpenVINO (uslib.int8.load_or_quantize), not by a Keras model")
    check_precision(precision)
    import_tensorflow()
    import keras

    ctor = getattr(keras.applications, bb.constructor)
    with _dtype_policy(precision):
        base = ctor(weights=None, include_top=bb.include_top, pooling=bb.pooling, input_shape=bb.input_shape)
        twin = (
            base
            if bb.feature_layer is None
            else keras.Model(
                base.input, base.get_layer(bb.feature_layer).output, name=f"{bb.name}_{bb.feature_layer}_{precision}"
            )
        )
    twin.set_weights(model.get_weights())
    return twin
