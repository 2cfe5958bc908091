"""B-mode reconstruction from raw RF data (Byra et al. 2018, Section II.B).

The paper's procedure, one function per step:

1. :func:`envelope` — amplitude ``A`` of the analytic signal (Hilbert
   transform) of every RF line, computed along depth (axis 0);
2. :func:`log_compress` — ``A_log = 20 log10(A / A_max)`` in dB, with
   ``A_max`` the largest amplitude of the scan (Eq. 1);
3. :func:`gray_levels` — the mapping function of Fig. 1: dB values clipped to
   ``[-DR, 0]`` and mapped linearly onto ``[0, 255]``, where ``DR`` is the
   dynamic range ("threshold level"), 40, 50 or 60 dB in the paper;
4. :func:`bmode` — all of the above, rounded to ``uint8``.

The envelope does not depend on the dynamic range, so several B-modes of one
scan are best made from one envelope with :func:`bmode_from_envelope`.

``A_max`` is taken per scan, from the data given: non-echo rows at the top of
an OASBUD RF matrix must be dropped *before* (the loader does so), otherwise
they set ``A_max``.
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy.signal import hilbert

__all__ = ["FLOOR_DB", "envelope", "log_compress", "gray_levels", "to_uint8", "bmode", "bmode_from_envelope"]

#: dB value given to zero amplitudes by :func:`log_compress` (instead of -inf).
#: Far below any dynamic range used for display, so it always maps to grey 0.
FLOOR_DB = -300.0


def _as_finite_float(a, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real-valued, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _check_2d(arr: np.ndarray, name: str) -> None:
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_lines), got shape {arr.shape}")


def _check_dynamic_range(dynamic_range_db) -> float:
    if isinstance(dynamic_range_db, bool) or not isinstance(dynamic_range_db, numbers.Real):
        raise TypeError(f"dynamic_range_db must be a real number, got {dynamic_range_db!r}")
    dr = float(dynamic_range_db)
    if not np.isfinite(dr) or dr <= 0:
        raise ValueError(f"dynamic_range_db must be finite and > 0, got {dr!r}")
    return dr


def envelope(rf, *, axis: int = 0) -> np.ndarray:
    """Envelope (amplitude of the analytic signal) of RF lines.

    Parameters
    ----------
    rf : array_like, shape (n_samples, n_lines)
        Beamformed RF data, any real dtype (OASBUD stores int16). Rows are
        depth samples, columns are scan lines.
    axis : int, optional
        Axis along which the RF lines run: depth, axis 0 for OASBUD-shaped
        data. (Running the transform across lines is a known mistake.)

    Returns
    -------
    env : ndarray of float64, same shape as ``rf``
        ``|rf + j H{rf}|`` with ``H`` the Hilbert transform along ``axis``
        (:func:`scipy.signal.hilbert`, FFT of the full line length).

    Raises
    ------
    ValueError
        If ``rf`` is empty or holds non-finite values.

    Examples
    --------
    >>> t = np.arange(256) / 40e6                      # 40 MHz sampling
    >>> rf = 3.0 * np.cos(2 * np.pi * 10e6 * t)        # 10 MHz tone, amplitude 3
    >>> env = envelope(rf[:, None] * np.ones((1, 4)))  # four identical lines
    >>> env.shape, env.dtype
    ((256, 4), dtype('float64'))
    >>> bool(np.allclose(env, 3.0))
    True
    """
    arr = _as_finite_float(rf, "rf")
    if not -arr.ndim <= axis < arr.ndim:
        raise ValueError(f"axis {axis} out of range for rf of shape {arr.shape}")
    return np.abs(hilbert(arr, axis=axis))


def log_compress(envelope, *, a_max: float | None = None) -> np.ndarray:
    """Log-compress an envelope to dB relative to its maximum (Eq. 1).

    ``A_log = 20 log10(A / A_max)``.

    Parameters
    ----------
    envelope : array_like
        Non-negative amplitudes, e.g. from :func:`envelope`.
    a_max : float, optional
        Reference amplitude ``A_max`` (> 0). Default: the maximum of
        ``envelope`` itself, i.e. per scan, so that the brightest sample is
        0 dB.

    Returns
    -------
    db : ndarray of float64, same shape
        Log-compressed amplitude in dB (<= 0 when ``a_max`` is the maximum).
        Zero amplitudes get :data:`FLOOR_DB` (-300 dB), and nothing is ever
        below it, so the result is always finite.

    Raises
    ------
    ValueError
        If the envelope is empty, negative or non-finite, if it is all zero
        and no ``a_max`` is given, or if ``a_max`` is not finite and > 0.

    Examples
    --------
    >>> log_compress(np.array([1.0, 0.1, 0.01, 0.0]))
    array([   0.,  -20.,  -40., -300.])
    """
    env = _as_finite_float(envelope, "envelope")
    if np.any(env < 0):
        raise ValueError("envelope has negative values; amplitudes must be >= 0")
    if a_max is None:
        a_max = float(env.max())
        if a_max <= 0:
            raise ValueError("envelope is all zero: A_max = 0, dB undefined")
    else:
        a_max = float(a_max)
        if not np.isfinite(a_max) or a_max <= 0:
            raise ValueError(f"a_max must be finite and > 0, got {a_max!r}")
    with np.errstate(divide="ignore"):
        db = 20.0 * np.log10(env / a_max)
    # -inf (zeros) and anything under the floor (tiny ratios) -> FLOOR_DB
    return np.maximum(db, FLOOR_DB)


def gray_levels(db, dynamic_range_db: float) -> np.ndarray:
    """Map dB values onto grey levels (the mapping function of Fig. 1).

    ``g = 255 (clip(db, -DR, 0) + DR) / DR``: ``-DR`` dB and below give 0,
    0 dB and above give 255, linear in between.

    Parameters
    ----------
    db : array_like
        Log-compressed amplitude in dB (see :func:`log_compress`).
    dynamic_range_db : float
        Dynamic range ``DR`` (the paper's "threshold level") in dB, > 0.

    Returns
    -------
    gray : ndarray of float64, same shape, values in [0, 255]
        Not rounded; :func:`bmode` rounds.

    Examples
    --------
    >>> gray_levels(np.array([-60.0, -40.0, -20.0, 0.0, 3.0]), 40)
    array([  0. ,   0. , 127.5, 255. , 255. ])
    """
    dr = _check_dynamic_range(dynamic_range_db)
    db = _as_finite_float(db, "db")
    return (np.clip(db, -dr, 0.0) + dr) * (255.0 / dr)


def to_uint8(gray) -> np.ndarray:
    """Round grey levels in [0, 255] half up to ``uint8`` (the last step of :func:`bmode`).

    Parameters
    ----------
    gray : array_like
        Grey levels from :func:`gray_levels`, within [0, 255].

    Returns
    -------
    ndarray of uint8, same shape

    Examples
    --------
    >>> to_uint8(np.array([0.0, 127.49, 127.5, 255.0]))
    array([  0, 127, 128, 255], dtype=uint8)
    """
    return np.floor(np.asarray(gray, dtype=float) + 0.5).astype(np.uint8)


def bmode_from_envelope(env, dynamic_range_db: float, *, a_max: float | None = None) -> np.ndarray:
    """B-mode image at one dynamic range from a precomputed envelope.

    Parameters
    ----------
    env : array_like, shape (n_samples, n_lines)
        Envelope of a scan, from :func:`envelope`.
    dynamic_range_db : float
        Dynamic range in dB, > 0.
    a_max : float, optional
        Reference amplitude; default the maximum of ``env`` (per scan).

    Returns
    -------
    image : ndarray of uint8, shape (n_samples, n_lines)
        ``gray_levels(log_compress(env), DR)`` rounded half up.

    Examples
    --------
    >>> env = np.array([[1.0, 0.1], [0.01, 0.0]])
    >>> bmode_from_envelope(env, 40)
    array([[255, 128],
           [  0,   0]], dtype=uint8)
    >>> bmode_from_envelope(env, 50)
    array([[255, 153],
           [ 51,   0]], dtype=uint8)
    """
    dr = _check_dynamic_range(dynamic_range_db)
    env = _as_finite_float(env, "env")
    _check_2d(env, "env")
    return to_uint8(gray_levels(log_compress(env, a_max=a_max), dr))


def bmode(rf, dynamic_range_db: float, *, a_max: float | None = None) -> np.ndarray:
    """B-mode image of one RF scan: envelope, log compression, grey mapping.

    Parameters
    ----------
    rf : array_like, shape (n_samples, n_lines)
        RF scan; the envelope is taken along depth (axis 0).
    dynamic_range_db : float
        Dynamic range in dB, > 0 (40, 50, 60 in the paper).
    a_max : float, optional
        Reference amplitude; default the scan's maximum envelope amplitude.

    Returns
    -------
    image : ndarray of uint8, shape (n_samples, n_lines)

    Raises
    ------
    ValueError
        If ``rf`` is not 2-D, empty or non-finite, or ``dynamic_range_db`` <= 0.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> rf = rng.integers(-2000, 2000, size=(400, 8)).astype(np.int16)
    >>> img = bmode(rf, 50)
    >>> img.shape, img.dtype, int(img.max())
    ((400, 8), dtype('uint8'), 255)
    """
    dr = _check_dynamic_range(dynamic_range_db)
    arr = _as_finite_float(rf, "rf")
    _check_2d(arr, "rf")
    return bmode_from_envelope(envelope(arr, axis=0), dr, a_max=a_max)
