"""Ultrasound physics for the teaching sections of chapters 01 and 02.

Small pure functions on arrays, one idea each:

* the RF spectrum of scan lines and its -6 dB band (:func:`power_spectrum_db`,
  :func:`band_edges_hz`) and the axial resolution a band allows
  (:func:`axial_resolution_mm`);
* fully developed speckle: the Rayleigh envelope's mean-to-standard-deviation
  ratio (:func:`rayleigh_snr`);
* attenuation and time-gain compensation (:func:`attenuation_loss_db`,
  :func:`depth_profile_db`, :func:`fit_slope_db_per_cm`, :func:`apply_tgc`);
* IQ demodulation, a second envelope detector beside the Hilbert transform of
  :func:`uslib.reconstruction.envelope` (:func:`iq_demodulate`,
  :func:`relative_rms_error`).

Arrays are (n_samples, n_lines) with depth along axis 0, as everywhere in
the library. Nothing here reads files.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import signal

__all__ = [
    "power_spectrum_db",
    "band_edges_hz",
    "axial_resolution_mm",
    "rayleigh_snr",
    "attenuation_loss_db",
    "depth_profile_db",
    "fit_slope_db_per_cm",
    "apply_tgc",
    "iq_demodulate",
    "relative_rms_error",
]


def power_spectrum_db(rf, fs_hz: float, *, axis: int = 0, window: str = "hann"):
    """Mean power spectrum of RF lines, in dB relative to its peak.

    Parameters
    ----------
    rf : array_like, shape (n_samples,) or (n_samples, n_lines)
        RF line(s); the spectrum is taken along ``axis`` (depth) and the power
        is averaged over the other axis (the lines), which smooths the
        speckle's noisy single-line spectrum.
    fs_hz : float
        Sampling frequency in Hz.
    axis : int
        Axis of the samples (depth).
    window : str
        Taper applied along ``axis`` before the FFT (``scipy.signal.get_window``
        name), against leakage from the line's ends.

    Returns
    -------
    freqs_hz : ndarray, shape (n_samples // 2 + 1,)
        Non-negative frequencies.
    power_db : ndarray, same shape
        ``10 log10(P / max P)``: 0 dB at the peak.

    Examples
    --------
    >>> t = np.arange(400) / 40e6
    >>> f, p = power_spectrum_db(np.cos(2 * np.pi * 10e6 * t), 40e6)
    >>> round(float(f[np.argmax(p)]) / 1e6, 6), float(p.max())
    (10.0, 0.0)
    """
    if fs_hz <= 0:
        raise ValueError(f"fs_hz must be > 0, got {fs_hz!r}")
    x = np.moveaxis(np.asarray(rf, dtype=float), axis, 0)
    if x.shape[0] < 4:
        raise ValueError(f"need at least 4 samples along axis {axis}, got {x.shape[0]}")
    w = signal.get_window(window, x.shape[0]).reshape((-1,) + (1,) * (x.ndim - 1))
    spec = np.abs(np.fft.rfft((x - x.mean(axis=0)) * w, axis=0)) ** 2
    power = spec.reshape(spec.shape[0], -1).mean(axis=1)
    if not np.any(power > 0):
        raise ValueError("rf has no power (constant lines)")
    with np.errstate(divide="ignore"):
        power_db = 10.0 * np.log10(power / power.max())
    return np.fft.rfftfreq(x.shape[0], d=1.0 / fs_hz), power_db


def band_edges_hz(freqs_hz, power_db, *, level_db: float = -6.0) -> tuple[float, float]:
    """Lower and upper frequencies where a spectrum falls ``level_db`` below its peak.

    Walks outwards from the peak to the first bins at or below the level and
    interpolates linearly between bins. A -6 dB level on a power spectrum in
    dB is the half-amplitude (-6 dB) band of the echo's amplitude spectrum.

    Parameters
    ----------
    freqs_hz, power_db : array_like, same shape
        From :func:`power_spectrum_db`.
    level_db : float
        Negative level relative to the peak.

    Returns
    -------
    (f_low_hz, f_high_hz) : tuple of float
        The centre frequency is their mean and the bandwidth their difference.

    Raises
    ------
    ValueError
        If the spectrum does not fall to the level on both sides of the peak.

    Examples
    --------
    >>> f = np.linspace(0, 20e6, 2001)
    >>> p = -6.0 * ((f - 10e6) / 3e6) ** 2           # -6 dB at 7 and 13 MHz
    >>> [round(v / 1e6, 3) for v in band_edges_hz(f, p)]
    [7.0, 13.0]
    """
    f = np.asarray(freqs_hz, dtype=float)
    p = np.asarray(power_db, dtype=float)
    if level_db >= 0:
        raise ValueError(f"level_db must be negative, got {level_db!r}")
    k = int(np.argmax(p))
    level = p[k] + level_db

    def crossing(step: int) -> float:
        i = k
        while 0 <= i + step < p.size and p[i + step] > level:
            i += step
        j = i + step
        if not 0 <= j < p.size:
            raise ValueError(f"the spectrum does not fall {-level_db:g} dB below its peak on one side")
        frac = (p[i] - level) / (p[i] - p[j])
        return float(f[i] + frac * (f[j] - f[i]))

    return crossing(-1), crossing(+1)


def axial_resolution_mm(bandwidth_hz: float, c_m_s: float = 1540.0) -> float:
    """Axial resolution ``c / (2 B)`` of a pulse-echo system of bandwidth ``B``, in mm.

    The usual rule of thumb: an echo of bandwidth ``B`` lasts about ``1/B``
    and covers half that path in depth (the factor 2: down and back). For a
    Gaussian pulse the envelope's FWHM is ``(4 ln 2 / π) c / (2 B)``
    ≈ 0.88 ``c / (2 B)``.

    Examples
    --------
    >>> round(axial_resolution_mm(7e6, 1540.0), 4)
    0.11
    """
    if bandwidth_hz <= 0 or c_m_s <= 0:
        raise ValueError("bandwidth_hz and c_m_s must be > 0")
    return c_m_s / (2.0 * bandwidth_hz) * 1e3


def rayleigh_snr() -> float:
    """Mean / standard deviation of a Rayleigh variable: ``sqrt(π / (4 − π))`` ≈ 1.913.

    For a Rayleigh envelope of scale σ, the mean is ``σ sqrt(π/2)`` and the
    variance ``(4 − π) σ² / 2``; σ cancels.

    Examples
    --------
    >>> round(rayleigh_snr(), 3)
    1.913
    """
    return math.sqrt(math.pi / (4.0 - math.pi))


def attenuation_loss_db(depth_mm, f_hz: float, alpha_db_cm_mhz: float):
    """Round-trip attenuation of an echo from ``depth_mm``: ``2 α f z``, in dB (positive = loss).

    Parameters
    ----------
    depth_mm : array_like
        Depth of the reflector in mm.
    f_hz : float
        Frequency in Hz (the model is linear in frequency).
    alpha_db_cm_mhz : float
        One-way attenuation slope in dB/cm/MHz (soft tissue ≈ 0.5–1).

    Examples
    --------
    >>> float(attenuation_loss_db(10.0, 10e6, 0.75))   # 1 cm at 10 MHz
    15.0
    """
    if f_hz < 0 or alpha_db_cm_mhz < 0:
        raise ValueError("f_hz and alpha_db_cm_mhz must be >= 0")
    return 2.0 * alpha_db_cm_mhz * (f_hz / 1e6) * np.asarray(depth_mm, dtype=float) / 10.0


def depth_profile_db(env, *, exclude=None) -> np.ndarray:
    """Mean echo intensity per depth row, in dB: ``10 log10(mean over lines of A²)``.

    Parameters
    ----------
    env : array_like, shape (n_samples, n_lines)
        Envelope (amplitudes >= 0).
    exclude : array_like of bool, same shape, optional
        Pixels left out of the means (e.g. the lesion, whose echogenicity
        differs from the background). Rows with nothing left are NaN.

    Returns
    -------
    ndarray, shape (n_samples,)

    Examples
    --------
    >>> env = np.array([[1.0, 1.0], [0.1, 10.0]])
    >>> depth_profile_db(env, exclude=np.array([[False, False], [False, True]])).round(1)
    array([  0., -20.])
    """
    a = np.asarray(env, dtype=float)
    if a.ndim != 2:
        raise ValueError(f"env must be 2-D, got shape {a.shape}")
    inten = a**2
    keep = np.ones(a.shape, bool) if exclude is None else ~np.asarray(exclude, dtype=bool)
    n = keep.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(keep, inten, 0.0).sum(axis=1) / n
        return np.where(n > 0, 10.0 * np.log10(mean), np.nan)


def fit_slope_db_per_cm(depth_mm, profile_db) -> tuple[float, float]:
    """Least-squares line through a depth profile: (slope in dB/cm, intercept in dB).

    NaN entries are ignored.

    Examples
    --------
    >>> z = np.linspace(0, 40, 81)
    >>> [round(v, 6) for v in fit_slope_db_per_cm(z, 3.0 - 2.5 * z / 10)]
    [-2.5, 3.0]
    """
    z = np.asarray(depth_mm, dtype=float) / 10.0
    p = np.asarray(profile_db, dtype=float)
    ok = np.isfinite(z) & np.isfinite(p)
    if ok.sum() < 2:
        raise ValueError("need at least two finite points to fit a slope")
    slope, intercept = np.polyfit(z[ok], p[ok], 1)
    return float(slope), float(intercept)


def apply_tgc(env, depth_mm, gain_db_per_cm: float) -> np.ndarray:
    """Time-gain compensation: multiply each row by ``10^(g z / 20)`` (a gain linear in depth).

    Parameters
    ----------
    env : array_like, shape (n_samples, n_lines)
    depth_mm : array_like, shape (n_samples,)
    gain_db_per_cm : float
        Amplitude gain per cm of depth (e.g. the negative of a fitted slope).

    Examples
    --------
    >>> apply_tgc(np.ones((2, 1)), np.array([0.0, 10.0]), 20.0).ravel()
    array([ 1., 10.])
    """
    a = np.asarray(env, dtype=float)
    z_cm = np.asarray(depth_mm, dtype=float) / 10.0
    if z_cm.shape != a.shape[:1]:
        raise ValueError(f"depth_mm has shape {z_cm.shape}, env has {a.shape[0]} rows")
    return a * (10.0 ** (gain_db_per_cm * z_cm / 20.0))[:, None]


def iq_demodulate(
    rf, fs_hz: float, f0_hz: float, *, cutoff_hz: float | None = None, order: int = 6, axis: int = 0
) -> np.ndarray:
    """Complex baseband (IQ) signal of RF lines: mix down by ``f0``, low-pass, times 2.

    ``iq = 2 · LP{ rf(t) · exp(−2πi f0 t) }``; its modulus is an envelope
    estimate, as a scanner's IQ pipeline computes it. The low-pass is a
    Butterworth filter run forwards and backwards (zero phase,
    :func:`scipy.signal.sosfiltfilt`).

    Parameters
    ----------
    rf : array_like
        Real RF line(s), samples along ``axis``.
    fs_hz, f0_hz : float
        Sampling and demodulation frequencies in Hz (``f0 < fs/2``).
    cutoff_hz : float, optional
        Low-pass cut-off; default ``f0``, half-way between the wanted band
        (around 0 Hz after mixing, a few MHz wide for a ~70 % bandwidth echo,
        shifted when attenuation has pulled the echo's centre below ``f0``)
        and the image at ``−2 f0`` that mixing creates.
    order : int
        Butterworth order.
    axis : int
        Axis of the samples (depth).

    Returns
    -------
    ndarray of complex128, same shape as ``rf``

    Examples
    --------
    >>> t = np.arange(512) / 40e6
    >>> iq = iq_demodulate(3.0 * np.cos(2 * np.pi * 10e6 * t), 40e6, 10e6)
    >>> bool(np.allclose(np.abs(iq[50:-50]), 3.0, rtol=1e-3))
    True
    """
    if not 0 < f0_hz < fs_hz / 2:
        raise ValueError(f"need 0 < f0_hz < fs_hz / 2, got f0_hz={f0_hz!r}, fs_hz={fs_hz!r}")
    cutoff = f0_hz if cutoff_hz is None else float(cutoff_hz)
    if not 0 < cutoff < fs_hz / 2:
        raise ValueError(f"cutoff_hz must be in (0, fs_hz/2), got {cutoff!r}")
    x = np.moveaxis(np.asarray(rf, dtype=float), axis, 0)
    t = np.arange(x.shape[0]) / fs_hz
    mixer = np.exp(-2j * np.pi * f0_hz * t).reshape((-1,) + (1,) * (x.ndim - 1))
    sos = signal.butter(order, cutoff, btype="low", fs=fs_hz, output="sos")
    iq = 2.0 * signal.sosfiltfilt(sos, x * mixer, axis=0)
    return np.moveaxis(iq, 0, axis)


def relative_rms_error(estimate, reference) -> float:
    """``||estimate − reference|| / ||reference||`` (root of summed squares over all elements).

    Examples
    --------
    >>> round(relative_rms_error(np.array([1.1, 2.2]), np.array([1.0, 2.0])), 6)
    0.1
    """
    e = np.asarray(estimate, dtype=float)
    r = np.asarray(reference, dtype=float)
    if e.shape != r.shape:
        raise ValueError(f"shapes differ: {e.shape} vs {r.shape}")
    norm = float(np.sqrt(np.sum(r**2)))
    if norm == 0:
        raise ValueError("reference is all zero")
    return float(np.sqrt(np.sum((e - r) ** 2))) / norm
