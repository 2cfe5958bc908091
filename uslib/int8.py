"""int8 inference of the feature networks (profile ``precision: int8``), with OpenVINO and NNCF.

float32 feature extraction is near its ceiling on a CPU (issue 12); CPUs
with AVX-512 VNNI, AVX-VNNI or AMX-INT8 do four int8 multiply-adds where
float32 does one. This module takes the Keras feature model that
:mod:`uslib.features` builds and

1. converts it to an OpenVINO model (:func:`convert`,
   ``openvino.convert_model`` reads a Keras model directly);
2. quantizes it after training with NNCF (:func:`quantize`,
   ``nncf.quantize``: weights per channel, activations per tensor with
   ranges measured on a calibration set), on a deterministic subset of the
   run's own images (:func:`calibration_manifest`): the same subset every
   time for the same data set, whichever chapter asks;
3. compiles it for the CPU (:func:`compile_model`) with the inference
   precision set to f32 (:data:`F32_CONFIG`): on CPUs with AMX OpenVINO
   otherwise runs every layer left unquantized in bfloat16.

Why these libraries rather than code of our own: post-training quantization
(range calibration, fake-quantize placement, int8 kernels for VNNI and AMX)
is what NNCF and OpenVINO are built and tested for; nothing here re-implements
it. Both are an optional extra (``pip install 'uslib[int8]'``), imported only
when int8 is asked for, so ``import uslib.int8`` is cheap.

Features of int8 are cached apart from float32's: :func:`cache_tag` names
the calibration subset and the OpenVINO and NNCF versions, and
:mod:`uslib.features` uses it where it uses the precision's name (the
feature folder and every image key). The quantized model is kept beside the
features (:func:`load_or_quantize`), so a later chapter does not calibrate
again. :func:`unsupported_reason` says, before anything runs, why int8 cannot
run here (no VNNI, or the packages missing).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import store

__all__ = [
    "INT8_CPU_FLAGS",
    "INT8_PACKAGES",
    "INSTALL_HINT",
    "CALIBRATION_IMAGES",
    "F32_CONFIG",
    "MODEL_FILE",
    "int8_support",
    "missing_packages",
    "unsupported_reason",
    "package_versions",
    "calibration_manifest",
    "cache_tag",
    "convert",
    "quantize",
    "compile_model",
    "load_or_quantize",
    "compiled_function",
    "runtime_precisions",
]

#: CPU flags (``/proc/cpuinfo``) of an int8 dot-product instruction: AVX-512 VNNI
#: (Cascade Lake and later, Zen 4/5), AVX-VNNI (Alder Lake and later) or AMX-INT8
#: (Sapphire Rapids and later). Without one, int8 is emulated and slower than float32.
INT8_CPU_FLAGS: tuple[str, ...] = ("avx512_vnni", "avx_vnni", "amx_int8")
#: Distributions int8 needs, as pinned in ``pyproject.toml`` (extra ``int8``).
INT8_PACKAGES: tuple[str, ...] = ("openvino", "nncf")
#: What to run when they are missing.
INSTALL_HINT = "pip install 'uslib[int8]'"
#: Largest calibration subset (images). 48 preprocessed images span the
#: data's dynamic ranges and margins; NNCF's ranges barely move beyond that
#: and each calibration image costs one forward pass.
CALIBRATION_IMAGES = 48
#: Compile options of every OpenVINO model here: float32 work in float32 (on AMX
#: CPUs the CPU plugin's default inference precision is bf16).
F32_CONFIG: dict[str, str] = {"INFERENCE_PRECISION_HINT": "f32"}
#: File name of the quantized model kept in a feature folder (``.xml`` + ``.bin``).
MODEL_FILE = "int8-model.xml"


def int8_support(flags: Sequence[str]) -> tuple[bool, str]:
    """Whether a CPU with ``flags`` has an int8 dot-product instruction, and why (in words).

    Examples
    --------
    >>> int8_support(["avx2", "avx512_vnni"])[0], int8_support(["avx2", "fma"])[0]
    (True, False)
    """
    flags = frozenset(flags)
    have = [f for f in INT8_CPU_FLAGS if f in flags]
    if have:
        return True, "CPU flags " + ", ".join(have)
    return False, ("this CPU has none of " + ", ".join(f.upper() for f in INT8_CPU_FLAGS) + " (from /proc/cpuinfo)")


def missing_packages() -> list[str]:
    """The distributions of :data:`INT8_PACKAGES` that are not installed (none imported)."""
    import importlib.util

    return [p for p in INT8_PACKAGES if importlib.util.find_spec(p) is None]


def unsupported_reason(flags: Sequence[str]) -> str | None:
    """Why ``precision: int8`` cannot run here (one line), or None when it can.

    Examples
    --------
    >>> unsupported_reason(["avx2"])
    "precision 'int8' needs an int8 dot-product instruction, but this CPU has none of AVX512_VNNI, AVX_VNNI, AMX_INT8 (from /proc/cpuinfo); set `precision: float32` in the profile"
    """
    ok, why = int8_support(flags)
    if not ok:
        return (
            f"precision 'int8' needs an int8 dot-product instruction, but {why}; "
            "set `precision: float32` in the profile"
        )
    missing = missing_packages()
    if missing:
        return (
            f"precision 'int8' needs {' and '.join(missing)} (not installed): {INSTALL_HINT}, "
            "or set `precision: float32` in the profile"
        )
    return None


def package_versions() -> dict[str, str | None]:
    """Installed versions of :data:`INT8_PACKAGES` (None where missing)."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for p in INT8_PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def calibration_manifest(dataset, content_keys: dict[str, str], size_px: int, n_images: int = CALIBRATION_IMAGES):
    """The calibration subset: the same images every time for the same data set.

    Drawn from the data set's full image grid (every scan at the paper's
    dynamic ranges and margins, :func:`uslib.augmentation.image_set`), not
    from the manifest a chapter asks for, so every chapter of a run uses the
    same quantized network and an image has the same int8 features wherever
    it appears. The images are ranked by the key of their content (RF, ROI,
    acquisition), crop and input size (:func:`uslib.store.key`) and the first
    ``n_images`` kept: a fixed pseudo-random spread over lesions, ranges and
    margins, independent of row order.

    Parameters
    ----------
    dataset : Dataset
    content_keys : dict
        Lesion key -> content fingerprint (:func:`uslib.features.image_content_keys`).
    size_px : int
        The network's input side (part of the ranking key).
    n_images : int
        At most this many (fewer when the data set has fewer images).

    Returns
    -------
    manifest : pandas.DataFrame
        The chosen rows of the image grid, in rank order, with a column
        ``calibration_key``.
    """
    from .augmentation import image_key, image_set

    if isinstance(n_images, bool) or int(n_images) < 1:
        raise ValueError(f"n_images must be a positive integer, got {n_images!r}")
    grid = image_set(dataset)
    ranks = [store.key(content_keys[row.lesion], image_key(row), int(size_px)) for row in grid.itertuples(index=False)]
    grid = grid.assign(calibration_key=ranks).sort_values("calibration_key", kind="stable")
    return grid.head(int(n_images)).reset_index(drop=True)


def cache_tag(calibration_keys: Sequence[str], versions: dict[str, str | None] | None = None) -> str:
    """The name int8 features are cached under: ``int8-<key of the calibration subset and versions>``.

    Examples
    --------
    >>> t = cache_tag(["a", "b"], {"openvino": "1", "nncf": "2"})
    >>> t.startswith("int8-"), t == cache_tag(["b", "a"], {"openvino": "1", "nncf": "2"})
    (True, True)
    >>> t == cache_tag(["a", "c"], {"openvino": "1", "nncf": "2"})
    False
    """
    versions = package_versions() if versions is None else versions
    return "int8-" + store.key(sorted(calibration_keys), CALIBRATION_IMAGES, dict(versions), length=12)


# ---------------------------------------------------------------------------
# OpenVINO and NNCF (imported lazily)
# ---------------------------------------------------------------------------


def convert(model, input_shape: Sequence[int]):
    """The OpenVINO model of a Keras ``model`` taking float32 ``(b, *input_shape)``.

    The batch dimension stays dynamic.
    """
    import warnings

    import openvino as ov

    example = np.zeros((1, *input_shape), np.float32)
    with warnings.catch_warnings():  # Keras notes that the tracer passes a tuple of one input
        warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match", category=UserWarning)
        ov_model = ov.convert_model(model, example_input=example)
    ov_model.reshape([-1, *map(int, input_shape)])
    return ov_model


def quantize(ov_model, calibration: np.ndarray):
    """NNCF post-training int8 quantization of ``ov_model`` on ``calibration`` images.

    Parameters
    ----------
    ov_model : openvino.Model
    calibration : ndarray of float32, shape (n, *input_shape)
        Preprocessed images, one calibration sample each.

    Returns
    -------
    openvino.Model
        With int8 weights and fake-quantize nodes on the activations
        (default NNCF preset: symmetric weights per channel, activations per tensor).
    """
    import logging

    import nncf

    calibration = np.asarray(calibration, np.float32)
    if calibration.ndim < 2 or len(calibration) == 0:
        raise ValueError(f"calibration must hold at least one image, got shape {calibration.shape}")
    nncf.set_log_level(logging.ERROR)  # its notes and progress bars say nothing to a reader of the book
    data = nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))])
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        return nncf.quantize(ov_model, data, subset_size=len(calibration))  # (rich progress bars: stdout)


def compile_model(ov_model):
    """``ov_model`` compiled for the CPU, float32 work in float32 (:data:`F32_CONFIG`)."""
    import openvino as ov

    return ov.Core().compile_model(ov_model, "CPU", dict(F32_CONFIG))


def compiled_function(compiled) -> Callable[[np.ndarray], np.ndarray]:
    """``f(x)``: float32 ``(b, ...)`` in, float32 ``(b, n_features)`` out, with one infer request.

    OpenVINO releases the GIL while it computes, so a prefetching thread
    (:func:`uslib.features.prefetched`) renders the next batch meanwhile.
    """
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        result = request.infer({0: np.ascontiguousarray(x, np.float32)})
        return np.array(result[compiled.output(0)], dtype=np.float32)

    return run


def runtime_precisions(compiled) -> dict[str, set[str]]:
    """Layer type -> runtime precisions of a compiled model (e.g. ``{"Convolution": {"u8", "i8"}}``)."""
    out: dict[str, set[str]] = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if "layerType" in info and "runtimePrecision" in info:
            out.setdefault(info["layerType"].astype(str), set()).add(info["runtimePrecision"].astype(str))
    return out


def _save_model(ov_model, xml_path: Path) -> None:
    """Write ``xml_path`` (+ ``.bin``) so that the ``.xml`` appears last: a reader never sees half a model."""
    import openvino as ov

    xml_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=xml_path.parent, prefix=".int8-"))
    try:
        ov.save_model(ov_model, tmp / xml_path.name, compress_to_fp16=False)
        os.replace(tmp / xml_path.with_suffix(".bin").name, xml_path.with_suffix(".bin"))
        store.seal(xml_path.with_suffix(".bin"))
        os.replace(tmp / xml_path.name, xml_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_or_quantize(
    folder: str | os.PathLike, model, input_shape: Sequence[int], calibration: Callable[[], np.ndarray]
) -> Callable[[np.ndarray], np.ndarray]:
    """The int8 feature function of ``model``, quantized once per feature folder.

    The feature folder's name already carries the weights, the code and
    :func:`cache_tag`, so a quantized model kept there (:data:`MODEL_FILE`)
    belongs to exactly these; it is read back when present. Otherwise
    ``model`` is converted (:func:`convert`), quantized on ``calibration()``
    (called only then) and saved; a model file that cannot be read is
    reported as damaged (:func:`uslib.store.report_damage`) and made again
    (the ``.bin`` is sealed by a SHA-256 sidecar, :func:`uslib.store.seal`).

    Returns
    -------
    callable
        :func:`compiled_function` of the compiled int8 model.
    """
    import openvino as ov

    xml_path = Path(folder) / MODEL_FILE
    quantized = None
    if xml_path.is_file():
        try:
            store.verify(xml_path.with_suffix(".bin"))
            quantized = ov.Core().read_model(str(xml_path))
        except store.DamagedArtefact as exc:
            store.report_damage(exc, action="quantizing again")
            xml_path.unlink(missing_ok=True)
        except Exception as exc:  # openvino raises its own RuntimeError subclasses
            store.report_damage(
                store.DamagedArtefact(xml_path, f"not a readable OpenVINO model ({exc})"), action="quantizing again"
            )
    if quantized is None:
        quantized = quantize(convert(model, input_shape), calibration())
        _save_model(quantized, xml_path)
    return compiled_function(compile_model(quantized))
