"""Quantitative-ultrasound (QUS) envelope statistics.

The statistics here are computed from the *envelope* ``A`` of the RF signal,
before log compression, so none of them depends on the dynamic range chosen to
display a B-mode image — the compression-independent baseline that Byra et al.
(2018) suggest as a remedy for the reconstruction sensitivity of transfer
learning.

Envelope model
--------------
The Nakagami distribution of the envelope amplitude ``A`` has density

.. math::

    f(A) = \\frac{2 m^m}{\\Gamma(m)\\,\\Omega^m} A^{2m-1} e^{-m A^2/\\Omega},

with scale ``Ω = E[A²]`` (mean backscattered power) and shape ``m``. The
intensity ``A²`` is then Gamma distributed with shape ``m`` and scale ``Ω/m``.
``m = 1`` is Rayleigh (fully developed speckle from many random scatterers),
``m < 1`` pre-Rayleigh (few or clustered scatterers), ``m > 1`` post-Rayleigh
(a coherent or periodic component). Shape statistics (``m``, the envelope SNR,
skewness, kurtosis) are invariant to a gain ``A → cA``; ``Ω`` scales by ``c²``
and so reflects the system gain as well as the tissue.

Every function takes a non-negative, finite envelope and raises
:class:`ValueError` naming the problem otherwise.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage, optimize, special, stats

__all__ = [
    "QUS_FEATURES",
    "nakagami_moments",
    "nakagami_mle",
    "envelope_snr",
    "skewness",
    "kurtosis",
    "roi_statistics",
    "qus_features",
    "qus_table",
    "roi_db_statistics",
    "roi_db_table",
    "nakagami_map",
]

#: Feature names returned by :func:`roi_statistics`, in column order.
QUS_FEATURES: tuple[str, ...] = (
    "nakagami_m_mle",
    "nakagami_m_moments",
    "nakagami_omega",
    "envelope_snr",
    "skewness",
    "kurtosis",
)


# ---------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------
def _as_envelope(envelope, name: str = "envelope") -> np.ndarray:
    """Flatten ``envelope`` to float64 samples after checking it is a valid envelope."""
    arr = np.asarray(envelope)
    if np.iscomplexobj(arr):
        raise ValueError(f"{name} must be real (take np.abs of the analytic signal); got dtype {arr.dtype}")
    try:
        arr = arr.astype(np.float64, copy=False).ravel()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric; got dtype {arr.dtype}") from exc
    if arr.size == 0:
        raise ValueError(f"{name} is empty: no samples to estimate statistics from")
    if not np.all(np.isfinite(arr)):
        n_bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise ValueError(f"{name} contains {n_bad} NaN or infinite value(s)")
    if np.any(arr < 0):
        raise ValueError(
            f"{name} contains {int(np.count_nonzero(arr < 0))} negative value(s); "
            "an envelope is |analytic signal| >= 0 (pass the envelope, not the RF)"
        )
    return arr


def _need(arr: np.ndarray, n: int, name: str, what: str) -> None:
    if arr.size < n:
        raise ValueError(f"{name} has {arr.size} sample(s); {what} needs at least {n}")


# ---------------------------------------------------------------------------
# Nakagami estimators
# ---------------------------------------------------------------------------
def nakagami_moments(envelope) -> tuple[float, float]:
    """Nakagami shape and scale by the method of moments on the intensity.

    Parameters
    ----------
    envelope : array_like
        Envelope amplitudes ``A >= 0`` (any shape; all samples are pooled).

    Returns
    -------
    m : float
        Shape ``Ω² / Var(A²)`` (population variance, ``ddof=0``); ``inf`` for
        a constant envelope.
    omega : float
        Scale ``Ω = mean(A²)``, in squared envelope units.

    Notes
    -----
    The asymptotic variance of this estimator is ``2 m (m + 1) / n`` for ``n``
    independent samples (delta method on the Gamma-distributed intensity),
    larger than that of :func:`nakagami_mle`. Speckle samples are correlated
    over a resolution cell, so the effective ``n`` of an image region is much
    smaller than its pixel count.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a = np.abs(rng.normal(size=200_000) + 1j * rng.normal(size=200_000))  # Rayleigh
    >>> m, omega = nakagami_moments(a)
    >>> round(m, 1), round(omega, 1)
    (1.0, 2.0)
    """
    a = _as_envelope(envelope)
    _need(a, 2, "envelope", "the Nakagami moment estimator")
    y = a * a
    omega = float(y.mean())
    var = float(np.mean((y - omega) ** 2))
    if var <= 0.0:
        return math.inf, omega
    return omega * omega / var, omega


def _mle_shape(delta: float) -> float:
    """Solve ``log(m) - ψ(m) = delta`` for ``m > 0`` (``delta > 0``)."""
    # log(m) - ψ(m) is decreasing from +inf to 0 and lies strictly between
    # 1/(2m) and 1/m, so the root is bracketed by [1/(2 delta), 1/delta].
    lo, hi = 0.5 / delta, 1.0 / delta

    def f(m):
        return math.log(m) - special.digamma(m) - delta

    return float(optimize.brentq(f, lo, hi, xtol=1e-12 * hi, rtol=1e-12, maxiter=200))


def nakagami_mle(envelope) -> tuple[float, float]:
    """Nakagami shape and scale by maximum likelihood.

    Parameters
    ----------
    envelope : array_like
        Envelope amplitudes ``A > 0`` (any shape; all samples are pooled).

    Returns
    -------
    m : float
        Maximum-likelihood shape; ``inf`` for a constant envelope.
    omega : float
        Scale ``Ω = mean(A²)`` (its exact maximum-likelihood estimate).

    Raises
    ------
    ValueError
        For an invalid envelope, or one holding exact zeros (``log A²`` is
        then ``-inf`` and the likelihood is unbounded).

    Notes
    -----
    With ``Y = A² ~ Gamma(m, Ω/m)`` the likelihood equations give
    ``Ω̂ = mean(Y)`` and

    .. math:: \\log m - \\psi(m) = \\log \\hat\\Omega - \\overline{\\log Y} =: \\Delta \\ge 0,

    solved numerically with :func:`scipy.optimize.brentq` (``ψ`` is
    :func:`scipy.special.digamma`). Because ``1/(2m) < log m - ψ(m) < 1/m``,
    the root is bracketed by ``[1/(2Δ), 1/Δ]`` — no starting guess or
    Greenwood–Durand approximation is needed. The asymptotic variance is
    ``1 / (n (ψ'(m) - 1/m))`` for ``n`` independent samples. The estimate is
    not clipped to the theoretical ``m >= 1/2``.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> a = np.sqrt(rng.gamma(2.0, 3.0 / 2.0, size=100_000))  # m = 2, Ω = 3
    >>> m, omega = nakagami_mle(a)
    >>> round(m, 1), round(omega, 1)
    (2.0, 3.0)
    """
    a = _as_envelope(envelope)
    _need(a, 2, "envelope", "the Nakagami maximum-likelihood estimator")
    if np.any(a == 0):
        raise ValueError(
            f"envelope contains {int(np.count_nonzero(a == 0))} exact zero(s); "
            "the Nakagami likelihood needs A > 0 (use nakagami_moments or drop them)"
        )
    y = a * a
    omega = float(y.mean())
    # log(mean) - mean(log), computed on y / omega for numerical range.
    delta = float(-np.mean(np.log(y / omega)))
    if delta <= 0.0:
        return math.inf, omega
    return _mle_shape(delta), omega


# ---------------------------------------------------------------------------
# Other first-order envelope statistics
# ---------------------------------------------------------------------------
def envelope_snr(envelope) -> float:
    """Envelope signal-to-noise ratio ``mean(A) / std(A)`` (``ddof=0``).

    ``sqrt(π / (4 - π)) ≈ 1.913`` for fully developed (Rayleigh) speckle;
    ``inf`` for a constant envelope.

    Examples
    --------
    >>> envelope_snr([1.0, 3.0])
    2.0
    """
    a = _as_envelope(envelope)
    _need(a, 2, "envelope", "the envelope SNR")
    sd = float(a.std())
    return math.inf if sd == 0.0 else float(a.mean()) / sd


def skewness(envelope) -> float:
    """Sample skewness of the envelope (:func:`scipy.stats.skew`, biased).

    ``2 (π - 3) sqrt(π) / (4 - π)^{3/2} ≈ 0.631`` for Rayleigh speckle.
    """
    a = _as_envelope(envelope)
    _need(a, 3, "envelope", "the skewness")
    return float(stats.skew(a))


def kurtosis(envelope) -> float:
    """Sample excess kurtosis of the envelope (:func:`scipy.stats.kurtosis`, Fisher, biased).

    ``≈ 0.245`` for Rayleigh speckle (``0`` for a Gaussian).
    """
    a = _as_envelope(envelope)
    _need(a, 4, "envelope", "the kurtosis")
    return float(stats.kurtosis(a, fisher=True))


def _pooled(envelope) -> dict[str, float]:
    m_mle, omega = nakagami_mle(envelope)
    m_mom, _ = nakagami_moments(envelope)
    return {
        "nakagami_m_mle": m_mle,
        "nakagami_m_moments": m_mom,
        "nakagami_omega": omega,
        "envelope_snr": envelope_snr(envelope),
        "skewness": skewness(envelope),
        "kurtosis": kurtosis(envelope),
    }


def roi_statistics(envelope, roi) -> dict[str, float]:
    """All envelope statistics over the samples inside a region of interest.

    Parameters
    ----------
    envelope : array_like, shape (n_samples, n_lines)
        Envelope (before log compression).
    roi : array_like of bool, shape (n_samples, n_lines)
        True inside the region.

    Returns
    -------
    dict
        Keys :data:`QUS_FEATURES`: ``nakagami_m_mle``, ``nakagami_m_moments``,
        ``nakagami_omega`` (squared envelope units), ``envelope_snr``,
        ``skewness``, ``kurtosis`` (excess).

    Raises
    ------
    ValueError
        If the shapes differ, the ROI is empty or not boolean, or the envelope
        inside the ROI is invalid (negative, NaN, too few samples).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> env = np.abs(rng.normal(size=(400, 300)) + 1j * rng.normal(size=(400, 300)))
    >>> roi = np.zeros(env.shape, bool); roi[100:300, 50:250] = True
    >>> round(roi_statistics(env, roi)["nakagami_m_mle"], 1)
    1.0
    """
    env = np.asarray(envelope)
    mask = np.asarray(roi)
    if env.shape != mask.shape:
        raise ValueError(f"envelope shape {env.shape} and roi shape {mask.shape} differ")
    if mask.dtype != bool:
        if not np.isin(mask, (0, 1)).all():
            raise ValueError(f"roi must be boolean (or 0/1); got dtype {mask.dtype} with other values")
        mask = mask.astype(bool)
    if not mask.any():
        raise ValueError("roi is empty: no samples inside the region of interest")
    return _pooled(env[mask])


def _envelope_of(rf) -> np.ndarray:
    from uslib.reconstruction import envelope

    return envelope(rf, axis=0)


def qus_features(scan, *, envelope=None) -> dict[str, float]:
    """Envelope statistics of one scan's lesion ROI.

    Parameters
    ----------
    scan : uslib.data.Scan
        RF frame ``(n_samples, n_lines)`` and its lesion mask.
    envelope : ndarray, shape (n_samples, n_lines), optional
        Precomputed envelope of ``scan.rf``; by default
        :func:`uslib.reconstruction.envelope` along depth.

    Returns
    -------
    dict
        As :func:`roi_statistics`. No log compression is involved, so the
        result is the same for every dynamic range.
    """
    env = _envelope_of(scan.rf) if envelope is None else envelope
    return roi_statistics(env, scan.roi)


def qus_table(dataset):
    """Envelope statistics per lesion, averaged over its scans.

    Parameters
    ----------
    dataset : uslib.data.Dataset

    Returns
    -------
    pandas.DataFrame
        One row per lesion in data-set order; columns ``lesion`` (key),
        ``patient``, ``label``, then :data:`QUS_FEATURES`, each the mean of
        the per-scan values (:func:`qus_features`).

    Raises
    ------
    ValueError
        If a lesion has no scans or a scan's ROI is empty; the message names
        the lesion and scan.
    """
    from .data import lesion_feature_table

    return lesion_feature_table(dataset, qus_features, QUS_FEATURES)


def roi_db_statistics(scan, *, dynamic_ranges_db: Sequence[float] = (40, 50, 60), envelope=None) -> dict[str, float]:
    """Brightness of a scan's ROI in dB below the scan's peak, and its interior Nakagami m.

    The log-compressed envelope is 20·log10(A / A_max) with A_max the scan's
    maximum envelope amplitude (as in :func:`uslib.reconstruction.bmode`).

    Parameters
    ----------
    scan : uslib.data.Scan
    dynamic_ranges_db : sequence of float
        For each range r: the mean of the dB values clipped at −r inside the
        ROI (what the B-mode at r shows, in dB) and the fraction of ROI
        pixels at or below −r (black in that B-mode).
    envelope : ndarray, optional
        Precomputed envelope of ``scan.rf``.

    Returns
    -------
    dict
        ``peak_db`` (20·log10 A_max, RF units), ``roi_median_db``,
        ``background_median_db`` (every pixel outside the ROI),
        ``contrast_db`` (their difference, ROI − background),
        ``nakagami_m`` (maximum-likelihood m of the ROI envelope) and, per
        range r, ``roi_mean_db_<r>`` and ``black_fraction_<r>``.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> env = np.ones((64, 8)); env[:, 4:] = np.where(np.arange(64) % 2, 0.01, 0.001)[:, None]
    >>> roi = np.zeros(env.shape, bool); roi[16:48, 4:] = True  # half at -40 dB, half at -60 dB
    >>> r = roi_db_statistics(SimpleNamespace(rf=None, roi=roi), dynamic_ranges_db=(30, 50), envelope=env)
    >>> r["roi_median_db"], r["roi_mean_db_30"], r["black_fraction_30"], r["roi_mean_db_50"], r["black_fraction_50"]
    (-50.0, -30.0, 1.0, -45.0, 0.5)
    """
    env = np.asarray(_envelope_of(scan.rf) if envelope is None else envelope, dtype=np.float64)
    _as_envelope(env)  # checks: real, finite, non-negative
    roi = np.asarray(scan.roi).astype(bool)
    if roi.shape != env.shape or not roi.any() or roi.all():
        raise ValueError("roi_db_statistics: the ROI must match the scan and leave a background")
    peak = float(env.max())
    with np.errstate(divide="ignore"):
        db = 20.0 * np.log10(env / peak)
    inside, outside = db[roi], db[~roi]
    out = {
        "peak_db": 20.0 * math.log10(peak),
        "roi_median_db": float(np.median(inside)),
        "background_median_db": float(np.median(outside)),
    }
    out["contrast_db"] = out["roi_median_db"] - out["background_median_db"]
    out["nakagami_m"] = roi_statistics(env, roi)["nakagami_m_mle"]
    for r in dynamic_ranges_db:
        out[f"roi_mean_db_{float(r):g}"] = float(np.maximum(inside, -float(r)).mean())
        out[f"black_fraction_{float(r):g}"] = float(np.mean(inside <= -float(r)))
    return out


def roi_db_table(dataset, *, dynamic_ranges_db: Sequence[float] = (40, 50, 60)):
    """:func:`roi_db_statistics` of every scan: one row per scan.

    Returns
    -------
    pandas.DataFrame
        ``lesion``, ``patient``, ``label``, ``birads``, ``scan``, then the
        statistics.
    """
    import pandas as pd

    rows = []
    for lesion in dataset:
        for k, scan in enumerate(lesion.scans):
            rows.append(
                {
                    "lesion": lesion.key,
                    "patient": lesion.patient,
                    "label": int(lesion.label),
                    "birads": str(lesion.birads),
                    "scan": k,
                    **roi_db_statistics(scan, dynamic_ranges_db=dynamic_ranges_db),
                }
            )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------
# Parametric map
# ---------------------------------------------------------------------------
def _window_px(window_mm, acquisition, pulse_cycles: float) -> tuple[int, int]:
    if window_mm is None:
        side = 3.0 * pulse_cycles * acquisition.wavelength_mm
        window_mm = (side, side)
    elif np.ndim(window_mm) == 0:
        window_mm = (float(window_mm), float(window_mm))
    wz, wx = (float(w) for w in window_mm)
    if not (wz > 0 and wx > 0 and np.isfinite(wz) and np.isfinite(wx)):
        raise ValueError(f"window_mm must be positive and finite; got {window_mm}")
    # Odd sizes so that each window is centred on its pixel.
    nz = 2 * int(round(wz / acquisition.dz_mm / 2.0)) + 1
    nx = 2 * int(round(wx / acquisition.dx_mm / 2.0)) + 1
    return nz, nx


def nakagami_map(
    envelope,
    *,
    acquisition,
    window_mm: float | Sequence[float] | None = None,
    step_px: int | Sequence[int] = 1,
    estimator: str = "moments",
    pulse_cycles: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Sliding-window Nakagami parametric image (for teaching).

    Parameters
    ----------
    envelope : array_like, shape (n_samples, n_lines)
        Envelope before log compression, ``>= 0`` (``> 0`` for ``"mle"``).
    acquisition : uslib.data.Acquisition
        Gives the pixel spacing ``dz_mm`` × ``dx_mm`` and the wavelength.
    window_mm : float or (float, float), optional
        Window size (depth, lateral) in mm, rounded to an odd number of
        pixels. Default: a square of three pulse lengths,
        ``3 * pulse_cycles * wavelength_mm`` on a side (0.92 mm for the
        OASBUD probe: 49 samples × 13 lines) — the size commonly used for
        Nakagami imaging (Tsui & Chang, 2007).
    step_px : int or (int, int), optional
        Decimation of the output grid (depth, lateral). ``1`` (default) gives
        maps of the envelope's shape.
    estimator : {"moments", "mle"}
        Per-window estimator; see :func:`nakagami_moments` and
        :func:`nakagami_mle`.
    pulse_cycles : float
        Pulse length in cycles of the centre frequency, for the default window.

    Returns
    -------
    m_map, omega_map : ndarray of float64, shape (ceil(n_samples / step_z), ceil(n_lines / step_x))
        Element ``[i, j]`` describes the window centred on envelope pixel
        ``(i * step_z, j * step_x)``, i.e. at depth ``i * step_z * dz_mm`` and
        lateral position ``j * step_x * dx_mm`` (the grid of
        ``envelope[::step_z, ::step_x]``). ``m`` is ``inf`` where a window is
        constant.

    Notes
    -----
    The local moments ``E[A²]``, ``E[A⁴]`` (and ``E[log A²]`` for ``"mle"``)
    are box means computed with :func:`scipy.ndimage.uniform_filter` in
    ``O(n)`` time whatever the window size; windows near the image edge use
    mirrored samples (``mode="reflect"``), so the outer half-window is biased
    toward its interior. The MLE equation is solved element-wise by bisection
    on the bracket of :func:`nakagami_mle`.

    Examples
    --------
    >>> from uslib.data import Acquisition
    >>> rng = np.random.default_rng(0)
    >>> env = np.abs(rng.normal(size=(300, 120)) + 1j * rng.normal(size=(300, 120)))
    >>> m, omega = nakagami_map(env, acquisition=Acquisition(), window_mm=2.0, step_px=10)
    >>> m.shape
    (30, 12)
    >>> bool(abs(np.median(m) - 1) < 0.1)
    True
    """
    env = np.asarray(envelope)
    if env.ndim != 2:
        raise ValueError(f"envelope must be 2-D (n_samples, n_lines); got shape {env.shape}")
    _as_envelope(env)  # validity checks only
    env = env.astype(np.float64, copy=False)
    if estimator not in ("moments", "mle"):
        raise ValueError(f"estimator must be 'moments' or 'mle'; got {estimator!r}")
    steps = (int(step_px), int(step_px)) if np.ndim(step_px) == 0 else tuple(int(s) for s in step_px)
    if len(steps) != 2 or min(steps) < 1:
        raise ValueError(f"step_px must be a positive int or a pair of them; got {step_px}")
    size = _window_px(window_mm, acquisition, pulse_cycles)
    if size[0] * size[1] < 2:
        raise ValueError(f"window of {size} pixels is too small for a variance")

    y = env * env
    scale = float(y.mean())
    if scale == 0.0:
        raise ValueError("envelope is identically zero")
    y = y / scale  # keep the moments near 1 for numerical range
    sl = (slice(None, None, steps[0]), slice(None, None, steps[1]))
    mean_y = ndimage.uniform_filter(y, size=size, mode="reflect")[sl]
    omega = mean_y * scale

    if estimator == "moments":
        mean_y2 = ndimage.uniform_filter(y * y, size=size, mode="reflect")[sl]
        var = mean_y2 - mean_y * mean_y
        tiny = 1e-12 * mean_y * mean_y
        with np.errstate(divide="ignore", invalid="ignore"):
            m = np.where(var > tiny, mean_y * mean_y / np.where(var > tiny, var, 1.0), np.inf)
        return m, omega

    if np.any(env == 0):
        raise ValueError("envelope contains exact zeros; the 'mle' map needs A > 0 (use 'moments')")
    mean_log = ndimage.uniform_filter(np.log(y), size=size, mode="reflect")[sl]
    delta = np.log(mean_y) - mean_log
    m = np.full(delta.shape, np.inf)
    ok = delta > 1e-12
    d = delta[ok]
    lo, hi = 0.5 / d, 1.0 / d
    for _ in range(60):  # bisection: the bracket shrinks by 2**-60
        mid = 0.5 * (lo + hi)
        pos = np.log(mid) - special.digamma(mid) > d
        lo = np.where(pos, mid, lo)
        hi = np.where(pos, hi, mid)
    m[ok] = 0.5 * (lo + hi)
    return m, omega
