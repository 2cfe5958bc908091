"""The imaging system and the speckle it makes: pulse-echo PSF, convolution, simulated speckle.

The convolution model of speckle (Bamber & Dickinson 1980; Meunier &
Bertrand 1995) as :mod:`uslib.phantom` uses it: an :class:`ImagingSystem`
(pulse, beam, attenuation, noise), its separable depth-dependent pulse-echo
point-spread function (:func:`pulse_echo_psf`, applied in depth bands by
:func:`convolve_psf`), speckle of a uniform scatterer field
(:func:`simulate_speckle`) and its measured size (:func:`speckle_size_mm`).
The envelope statistics of speckle are :mod:`uslib.qus`'s job
(:func:`uslib.qus.envelope_snr`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import fft as _fft
from scipy import ndimage as _ndi
from scipy import signal as _signal

from .data import OASBUD_ACQUISITION, Acquisition

__all__ = [
    "ImagingSystem",
    "DEFAULT_SYSTEM",
    "resolve_system",
    "axial_pulse",
    "lateral_beam",
    "beam_fwhm_mm",
    "psf_fwhm_mm",
    "carrier_hz",
    "pulse_echo_psf",
    "max_lateral_halfwidth",
    "convolve_psf",
    "simulate_speckle",
    "speckle_size_mm",
]

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # 2.3548
_DB_PER_NEPER = 20.0 / math.log(10.0)  # 8.6859


# --------------------------------------------------------------------------
# Imaging system
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ImagingSystem:
    """Parameters of the simulated scanner (PSF, attenuation, gain, storage).

    Parameters
    ----------
    bandwidth : float
        -6 dB fractional bandwidth of the pulse-echo spectrum (0.7 = 70 %).
    f_number : float
        Transmit F-number; the lateral FWHM at the focus is λ·F#.
    depth_of_field_mm : float
        Depth from the focus at which the beam is √2 times wider.
    max_widening : float
        Cap on the beam widening away from the focus.
    band_spacing_mm : float
        Spacing of the depth bands of the depth-varying PSF.
    band_blend_mm : float
        Width of the linear cross-fade between adjacent bands (at most
        ``band_spacing_mm``; equal to it gives triangular weights).
    attenuation_db_cm_mhz : float
        One-way attenuation slope (0.75 dB/cm/MHz: -15 dB/cm round trip at 10 MHz).
    frequency_downshift : bool
        Shift the echo's carrier down with depth (Gaussian-spectrum model).
    min_carrier_fraction : float
        Floor of the downshifted carrier, as a fraction of f0.
    tgc_fraction : float
        Fraction (in dB) of the background round-trip loss restored by the TGC.
    noise_db : float
        RMS electronic noise before the TGC, in dB relative to the RMS echo of
        unit-echogenicity tissue without attenuation.
    rf_peak : int
        The 99.99th percentile of |RF| is stored at 0.75·rf_peak; |RF| is
        clipped at rf_peak.
    nonecho_value : int
        Value of the constant non-echo rows on top of every scan; its
        magnitude exceeds every echo sample.
    """

    bandwidth: float = 0.70
    f_number: float = 2.0
    depth_of_field_mm: float = 8.0
    max_widening: float = 4.0
    band_spacing_mm: float = 4.0
    band_blend_mm: float = 1.5
    attenuation_db_cm_mhz: float = 0.75
    frequency_downshift: bool = True
    min_carrier_fraction: float = 0.7
    tgc_fraction: float = 0.85
    noise_db: float = -78.0
    rf_peak: int = 20000
    nonecho_value: int = 32767

    def __post_init__(self):
        if not 0.05 <= self.bandwidth <= 1.5:
            raise ValueError(f"ImagingSystem.bandwidth must be in [0.05, 1.5], got {self.bandwidth}")
        if self.f_number <= 0 or self.depth_of_field_mm <= 0 or self.band_spacing_mm <= 0:
            raise ValueError("ImagingSystem.f_number, depth_of_field_mm and band_spacing_mm must be positive")
        if not 0 < self.band_blend_mm <= self.band_spacing_mm:
            raise ValueError("ImagingSystem.band_blend_mm must be in (0, band_spacing_mm]")
        if self.max_widening < 1:
            raise ValueError(f"ImagingSystem.max_widening must be >= 1, got {self.max_widening}")
        if not 0 < self.rf_peak < abs(self.nonecho_value) <= 32767:
            raise ValueError("ImagingSystem needs 0 < rf_peak < |nonecho_value| <= 32767")

    def attenuation_np_mm(self, acquisition: Acquisition = OASBUD_ACQUISITION) -> float:
        """Round-trip amplitude attenuation at f0, in neper per mm."""
        return 2.0 * self.attenuation_db_cm_mhz * (acquisition.f0_hz / 1e6) / 10.0 / _DB_PER_NEPER


DEFAULT_SYSTEM = ImagingSystem()


def resolve_system(system: ImagingSystem | None) -> ImagingSystem:
    """``system``, or :data:`DEFAULT_SYSTEM` when it is None."""
    return DEFAULT_SYSTEM if system is None else system


# --------------------------------------------------------------------------
# Point-spread function
# --------------------------------------------------------------------------


def axial_pulse(
    *,
    fs_hz: float = OASBUD_ACQUISITION.fs_hz,
    f0_hz: float = OASBUD_ACQUISITION.f0_hz,
    bandwidth: float = 0.7,
    carrier_hz: float | None = None,
    n_sigma: float = 3.5,
) -> np.ndarray:
    """Pulse-echo waveform: a Gaussian-enveloped cosine sampled at ``fs_hz``.

    Parameters
    ----------
    fs_hz : float
        Sampling frequency in Hz (one sample = c/(2 fs) of depth).
    f0_hz : float
        Nominal centre frequency in Hz; with ``bandwidth`` it sets the width
        of the spectrum (-6 dB width = ``bandwidth · f0_hz``).
    bandwidth : float
        -6 dB fractional bandwidth.
    carrier_hz : float, optional
        Carrier frequency (default ``f0_hz``); lower after attenuation downshift.
    n_sigma : float
        Half-length of the kernel in envelope standard deviations.

    Returns
    -------
    ndarray of float64, shape (2 m + 1,)
        Symmetric kernel with unit energy (sum of squares = 1).

    Examples
    --------
    >>> h = axial_pulse(fs_hz=40e6, f0_hz=10e6, bandwidth=0.7)
    >>> h.shape, round(float(np.sum(h**2)), 6), int(np.argmax(h))
    ((17,), 1.0, 8)
    """
    if fs_hz <= 0 or f0_hz <= 0 or bandwidth <= 0:
        raise ValueError("axial_pulse: fs_hz, f0_hz and bandwidth must be positive")
    fc = f0_hz if carrier_hz is None else float(carrier_hz)
    sigma_f = bandwidth * f0_hz / _FWHM_PER_SIGMA
    sigma_n = fs_hz / (2.0 * math.pi * sigma_f)  # envelope std in samples
    m = int(math.ceil(n_sigma * sigma_n))
    n = np.arange(-m, m + 1, dtype=float)
    h = np.exp(-0.5 * (n / sigma_n) ** 2) * np.cos(2.0 * math.pi * fc / fs_hz * n)
    return h / np.sqrt(np.sum(h**2))


def lateral_beam(fwhm_mm: float, *, dx_mm: float = OASBUD_ACQUISITION.dx_mm, n_sigma: float = 4.0) -> np.ndarray:
    """Lateral pulse-echo beam profile: a Gaussian of the given FWHM on the line grid.

    Parameters
    ----------
    fwhm_mm : float
        Full width at half maximum of the amplitude profile in mm.
    dx_mm : float
        Line spacing in mm.
    n_sigma : float
        Half-length in standard deviations.

    Returns
    -------
    ndarray of float64, shape (2 m + 1,)
        Unit-energy kernel.

    Examples
    --------
    >>> g = lateral_beam(0.308, dx_mm=38 / 509)
    >>> round(float(np.sum(g**2)), 6), g.shape
    (1.0, (17,))
    """
    if fwhm_mm <= 0 or dx_mm <= 0:
        raise ValueError("lateral_beam: fwhm_mm and dx_mm must be positive")
    sigma = fwhm_mm / _FWHM_PER_SIGMA / dx_mm
    m = int(math.ceil(n_sigma * sigma))
    n = np.arange(-m, m + 1, dtype=float)
    g = np.exp(-0.5 * (n / sigma) ** 2)
    return g / np.sqrt(np.sum(g**2))


def beam_fwhm_mm(
    depth_mm,
    *,
    focus_depth_mm: float,
    acquisition: Acquisition = OASBUD_ACQUISITION,
    system: ImagingSystem | None = None,
) -> np.ndarray:
    """Lateral FWHM of the pulse-echo beam at ``depth_mm``.

    ``λ·F# · min(sqrt(1 + ((z - z_f)/DOF)²), max_widening)``.

    Examples
    --------
    >>> float(np.round(beam_fwhm_mm(20.0, focus_depth_mm=20.0), 3))
    0.308
    """
    s = resolve_system(system)
    z = np.asarray(depth_mm, dtype=float)
    w = np.sqrt(1.0 + ((z - focus_depth_mm) / s.depth_of_field_mm) ** 2)
    return acquisition.wavelength_mm * s.f_number * np.minimum(w, s.max_widening)


def psf_fwhm_mm(
    depth_mm,
    *,
    focus_depth_mm: float,
    acquisition: Acquisition = OASBUD_ACQUISITION,
    system: ImagingSystem | None = None,
) -> tuple[float, np.ndarray]:
    """Full widths at half maximum of the pulse-echo PSF's envelope: (axial, lateral), mm.

    Axially, the Gaussian envelope of :func:`axial_pulse` has σ = f_s / (2π σ_f)
    samples with σ_f = bandwidth · f0 / 2.3548; laterally, :func:`beam_fwhm_mm`.
    For a Gaussian PSF the FWHM of the speckle's intensity autocovariance
    equals the FWHM of the PSF envelope, so these are the expected speckle
    sizes (:func:`speckle_size_mm`).

    Examples
    --------
    >>> ax, lat = psf_fwhm_mm(20.0, focus_depth_mm=20.0)
    >>> round(ax, 3), float(np.round(lat, 3))
    (0.097, 0.308)
    """
    s = resolve_system(system)
    sigma_f = s.bandwidth * acquisition.f0_hz / _FWHM_PER_SIGMA
    sigma_samples = acquisition.fs_hz / (2.0 * math.pi * sigma_f)
    axial = _FWHM_PER_SIGMA * sigma_samples * acquisition.dz_mm
    return float(axial), beam_fwhm_mm(depth_mm, focus_depth_mm=focus_depth_mm, acquisition=acquisition, system=s)


def carrier_hz(depth_mm, *, acquisition: Acquisition = OASBUD_ACQUISITION, system: ImagingSystem | None = None):
    """Centre frequency of echoes from ``depth_mm`` after round-trip attenuation.

    For a Gaussian spectrum of standard deviation σ_f, a linear-in-frequency
    attenuation ``exp(-β f z)`` shifts the centre down by ``σ_f² β z``; the
    result is floored at ``min_carrier_fraction · f0``.

    Examples
    --------
    >>> round(float(carrier_hz(10.0)) / 1e6, 2)
    8.47
    """
    s = resolve_system(system)
    z = np.asarray(depth_mm, dtype=float)
    f0 = acquisition.f0_hz
    if not s.frequency_downshift:
        return np.full_like(z, f0)
    sigma_f = s.bandwidth * f0 / _FWHM_PER_SIGMA
    beta = s.attenuation_np_mm(acquisition) / f0  # Np / (mm Hz), round trip
    return np.maximum(f0 - sigma_f**2 * beta * np.maximum(z, 0.0), s.min_carrier_fraction * f0)


def pulse_echo_psf(
    depth_mm: float,
    *,
    focus_depth_mm: float,
    acquisition: Acquisition = OASBUD_ACQUISITION,
    system: ImagingSystem | None = None,
) -> np.ndarray:
    """Separable pulse-echo PSF at one depth, on the RF grid.

    Parameters
    ----------
    depth_mm : float
        Depth at which the PSF is evaluated.
    focus_depth_mm : float
        Transmit focus.
    acquisition : Acquisition
    system : ImagingSystem, optional

    Returns
    -------
    ndarray of float64, shape (n_axial, n_lateral)
        Outer product of :func:`axial_pulse` (at the downshifted carrier) and
        :func:`lateral_beam` (at the beam width of that depth); unit energy.

    Examples
    --------
    >>> psf = pulse_echo_psf(20.0, focus_depth_mm=20.0)
    >>> psf.shape, round(float(np.sum(psf**2)), 6)
    ((17, 17), 1.0)
    """
    s = resolve_system(system)
    a = axial_pulse(
        fs_hz=acquisition.fs_hz,
        f0_hz=acquisition.f0_hz,
        bandwidth=s.bandwidth,
        carrier_hz=float(carrier_hz(depth_mm, acquisition=acquisition, system=s)),
    )
    g = lateral_beam(
        float(beam_fwhm_mm(depth_mm, focus_depth_mm=focus_depth_mm, acquisition=acquisition, system=s)),
        dx_mm=acquisition.dx_mm,
    )
    return np.outer(a, g)


def max_lateral_halfwidth(acquisition: Acquisition, system: ImagingSystem, n_sigma: float = 4.0) -> int:
    """The widest lateral half-width (in lines) of the PSF anywhere in depth: the padding a convolution needs."""
    sigma = acquisition.wavelength_mm * system.f_number * system.max_widening / _FWHM_PER_SIGMA / acquisition.dx_mm
    return int(math.ceil(n_sigma * sigma)) + 1


def convolve_psf(
    scatterers: np.ndarray,
    *,
    focus_depth_mm: float,
    acquisition: Acquisition = OASBUD_ACQUISITION,
    system: ImagingSystem | None = None,
    depth_offset_mm: float = 0.0,
) -> np.ndarray:
    """Convolve a scatterer map with the depth-varying pulse-echo PSF.

    The PSF is evaluated at band centres ``focus ± k · band_spacing_mm``;
    each band's output (lateral Gaussian by FFT along the lines, exact
    transfer function; axial pulse by direct convolution along depth) is
    computed over the rows where its weight is non-zero, and adjacent bands
    are cross-faded linearly over ``band_blend_mm`` (weights sum to 1). Outside the array the field is zero.

    Parameters
    ----------
    scatterers : ndarray, shape (n_samples, n_lines)
        Scatterer amplitudes on the RF grid (row = depth sample).
    focus_depth_mm : float
        Transmit focus depth (same origin as ``depth_offset_mm``).
    acquisition : Acquisition
    system : ImagingSystem, optional
    depth_offset_mm : float
        Depth of row 0.

    Returns
    -------
    ndarray of float32, shape (n_samples, n_lines)
        Beamformed RF (before gain and quantisation).
    """
    s = resolve_system(system)
    x = np.asarray(scatterers, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"convolve_psf: scatterers must be 2-D (n_samples, n_lines), got shape {x.shape}")
    n_z, n_x = x.shape
    dz, dx = acquisition.dz_mm, acquisition.dx_mm
    pad = max_lateral_halfwidth(acquisition, s)
    n_fft = _fft.next_fast_len(n_x + 2 * pad, real=True)
    spec = _fft.rfft(x, n=n_fft, axis=1)
    freq = _fft.rfftfreq(n_fft)  # cycles per line
    z = depth_offset_mm + np.arange(n_z) * dz
    step, blend = s.band_spacing_mm, s.band_blend_mm
    half = 0.5 * (step + blend)  # half-support of a band's weight
    k0 = math.floor((z[0] - focus_depth_mm) / step)
    k1 = math.ceil((z[-1] - focus_depth_mm) / step)
    out = np.zeros((n_z, n_x), dtype=np.float32)
    for k in range(k0, k1 + 1):
        c = focus_depth_mm + k * step
        r0 = max(int(math.floor((c - half - depth_offset_mm) / dz)) + 1, 0)
        r1 = min(int(math.ceil((c + half - depth_offset_mm) / dz)), n_z)
        if r1 <= r0:
            continue
        # Trapezoid: 1 within (step - blend)/2 of the centre, linear to 0 at ``half``.
        w = np.clip((half - np.abs(z[r0:r1] - c)) / blend, 0.0, 1.0)
        if not np.any(w > 0):
            continue
        pulse = axial_pulse(
            fs_hz=acquisition.fs_hz,
            f0_hz=acquisition.f0_hz,
            bandwidth=s.bandwidth,
            carrier_hz=float(carrier_hz(c, acquisition=acquisition, system=s)),
        ).astype(np.float32)
        m = pulse.size // 2
        a0, a1 = max(r0 - m, 0), min(r1 + m, n_z)
        sigma = float(beam_fwhm_mm(c, focus_depth_mm=focus_depth_mm, acquisition=acquisition, system=s))
        sigma = sigma / _FWHM_PER_SIGMA / dx
        # Fourier transform of the unit-energy sampled Gaussian (exact up to aliasing).
        gain = math.sqrt(2.0 * sigma * math.sqrt(math.pi))
        h = (gain * np.exp(-2.0 * math.pi**2 * sigma**2 * freq**2)).astype(np.float32)
        lat = _fft.irfft(spec[a0:a1] * h, n=n_fft, axis=1)[:, :n_x]
        band = _ndi.convolve1d(lat, pulse, axis=0, mode="constant")
        out[r0:r1] += w.astype(np.float32)[:, None] * band[r0 - a0 : r1 - a0]
    return out


# --------------------------------------------------------------------------
# Speckle and its statistics
# --------------------------------------------------------------------------


def simulate_speckle(
    shape: tuple[int, int] = (1024, 510),
    *,
    seed=0,
    density: float = 1.0,
    focus_depth_mm: float | None = None,
    depth_offset_mm: float = 20.0,
    acquisition: Acquisition = OASBUD_ACQUISITION,
    system: ImagingSystem | None = None,
) -> np.ndarray:
    """RF of a homogeneous speckle patch (no attenuation, no layers, no noise).

    Parameters
    ----------
    shape : (n_samples, n_lines)
    seed : int or numpy.random.SeedSequence or numpy.random.Generator
    density : float
        Fraction of RF grid points that hold a scatterer (1 = every point,
        ≈ 20 scatterers per resolution cell; below ≈ 0.5 the envelope becomes
        sub-Rayleigh).
    focus_depth_mm : float, optional
        Transmit focus; default the patch centre.
    depth_offset_mm : float
        Depth of the patch's first row.
    acquisition : Acquisition
    system : ImagingSystem, optional

    Returns
    -------
    ndarray of float64, shape ``shape``

    Examples
    --------
    >>> from uslib.qus import envelope_snr
    >>> from uslib.reconstruction import envelope
    >>> rf = simulate_speckle((512, 256), seed=0)
    >>> 1.7 < envelope_snr(envelope(rf)) < 2.1
    True
    """
    s = resolve_system(system)
    if not 0 < density <= 1:
        raise ValueError(f"simulate_speckle: density must be in (0, 1], got {density}")
    n_z, n_x = (int(v) for v in shape)
    if n_z < 2 or n_x < 2:
        raise ValueError(f"simulate_speckle: shape must be at least (2, 2), got {shape}")
    rng = np.random.default_rng(seed)
    pad_x = max_lateral_halfwidth(acquisition, s)
    pad_z = axial_pulse(fs_hz=acquisition.fs_hz, f0_hz=acquisition.f0_hz, bandwidth=s.bandwidth).size
    field_ = rng.standard_normal((n_z + 2 * pad_z, n_x + 2 * pad_x), dtype=np.float32)
    if density < 1:
        field_ *= (rng.random(field_.shape, dtype=np.float32) < density) / np.float32(math.sqrt(density))
    if focus_depth_mm is None:
        focus_depth_mm = depth_offset_mm + 0.5 * n_z * acquisition.dz_mm
    rf = convolve_psf(
        field_,
        focus_depth_mm=focus_depth_mm,
        acquisition=acquisition,
        system=s,
        depth_offset_mm=depth_offset_mm - pad_z * acquisition.dz_mm,
    )
    return rf[pad_z : pad_z + n_z, pad_x : pad_x + n_x].astype(np.float64)


def _fwhm_from_profile(p: np.ndarray) -> float:
    """Full width at half maximum (in samples) of a profile peaked at index 0, symmetric."""
    below = np.nonzero(p < 0.5)[0]
    if below.size == 0:
        return float("nan")
    i = int(below[0])
    frac = (p[i - 1] - 0.5) / (p[i - 1] - p[i])
    return 2.0 * (i - 1 + frac)


def speckle_size_mm(rf: np.ndarray, *, acquisition: Acquisition = OASBUD_ACQUISITION) -> tuple[float, float]:
    """Speckle size: FWHM of the autocovariance of the envelope intensity.

    Parameters
    ----------
    rf : ndarray, shape (n_samples, n_lines)
        RF of a homogeneous speckle region.
    acquisition : Acquisition
        Gives the sample and line spacing.

    Returns
    -------
    (axial_mm, lateral_mm) : tuple of float
        Full widths at half maximum of the normalised intensity
        autocovariance through its peak, along depth and across lines.
    """
    env = np.abs(_signal.hilbert(np.asarray(rf, dtype=float), axis=0))
    inten = env**2
    inten = inten - inten.mean()
    n_z, n_x = inten.shape
    f = _fft.rfft2(inten, s=(2 * n_z, 2 * n_x))
    acov = _fft.irfft2(np.abs(f) ** 2, s=(2 * n_z, 2 * n_x))
    acov = acov / acov[0, 0]
    ax = _fwhm_from_profile(acov[: n_z // 2, 0])
    lat = _fwhm_from_profile(acov[0, : n_x // 2])
    return ax * acquisition.dz_mm, lat * acquisition.dx_mm
