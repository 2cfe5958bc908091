"""A synthetic breast-lesion phantom in the OASBUD schema (convolution model).

No machine that builds this compendium by default can reach the OASBUD data,
so the default run uses data simulated here and written in the same schema.
The simulation is the classical convolution model of speckle (Bamber &
Dickinson 1980; Meunier & Bertrand 1995):

``rf = PSF(z) ⊛ [ tgc(z) · ( echogenicity · attenuation · scatterers + noise ) ]``

* **Scatterers**: a dense random field on the RF grid itself (one Gaussian
  amplitude per sample, about 20 per resolution cell, so the envelope is
  Rayleigh-distributed with mean/std ≈ 1.91). Inside a lesion the field can be
  thinned (a Bernoulli mask of density ``p``, amplitudes scaled by
  ``1/sqrt(p)``): at a few scatterers per cell the envelope is sub-Rayleigh.
* **PSF**: separable pulse-echo point-spread function, a Gaussian-enveloped
  cosine axially (``bandwidth`` is the -6 dB fractional bandwidth) and a
  Gaussian beam laterally with FWHM ≈ λ·F# at the transmit focus (placed at
  the lesion depth), widening away from it. The depth-varying PSF is applied
  in bands a few mm apart, blended linearly (:func:`convolve_psf`). Kernels
  have unit energy, so speckle brightness does not depend on the beam width.
* **Attenuation**: 0.75 dB/cm/MHz one way, i.e. -15 dB/cm round trip at
  10 MHz, accumulated along depth over a per-pixel map (lesions attenuate
  less or more than the background: posterior enhancement or shadowing
  arises by itself). The centre frequency of the echo shifts down with depth
  as for a Gaussian spectrum (floored at ``min_carrier_fraction · f0``); a
  partial time-gain compensation (``tgc_fraction``) restores most of the
  loss; electronic noise is added before the TGC.
* **Breast**: skin (specular entry echo and dermis), subcutaneous fat with
  oblique Cooper's ligaments, a textured fibroglandular layer with fat
  islands, the retromammary fat layer, the pectoral fascia and muscle.
* **Lesions** (:class:`LesionModel`): a latent 3-D star-shaped body (an
  ellipsoid perturbed by random spherical "plane-wave" harmonics, plus
  spicules). One latent suspiciousness ``u`` per lesion (Beta(2, 4) benign,
  Beta(4, 2) malignant; AUC of ``u`` ≈ 0.89) drives every cue — aspect
  (taller-than-wide), tilt, lobulation and irregularity, spicules, margin
  sharpness, echogenic halo or thin capsule, interior echogenicity and
  heterogeneity, scatterer density, attenuation (posterior change),
  microcalcifications, BI-RADS — each with its own jitter, so the classes
  overlap and no single cue recovers ``u``.
* **Scans**: two orthogonal cross-sections of the same 3-D lesion (plane
  angles 90° ± 5° apart, small plane offsets, new speckle and a new view of
  the breast background), stored as int16 RF with ``n_nonecho_rows``
  constant rows on top that exceed every echo (the OASBUD quirk), and the
  lesion outline (without spicules) as the ROI.

Everything is deterministic from the seed. Data made here are synthetic and
everything shown from them must say so (:attr:`uslib.data.Dataset.synthetic`).

Examples
--------
>>> ds = simulate_dataset(2, seed=1, depth_range_mm=(25.0, 25.0))
>>> ds.synthetic, len(ds), ds[0].scans[0].rf.dtype, ds[0].scans[0].rf.shape[1]
(True, 2, dtype('int16'), 510)
"""

from __future__ import annotations

import math
import os
import string
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy import fft as _fft
from scipy import ndimage as _ndi
from scipy import signal as _signal

from . import __version__
from .data import OASBUD_ACQUISITION, Acquisition, Dataset, Lesion, Scan

__all__ = [
    "PHANTOM_VERSION",
    "ImagingSystem",
    "LesionModel",
    "axial_pulse",
    "lateral_beam",
    "beam_fwhm_mm",
    "psf_fwhm_mm",
    "carrier_hz",
    "pulse_echo_psf",
    "convolve_psf",
    "simulate_speckle",
    "envelope_snr",
    "speckle_size_mm",
    "random_lesion_model",
    "birads_from_suspicion",
    "simulate_scan",
    "simulate_lesion",
    "patient_assignment",
    "simulate_dataset",
]

#: Version of the generator; part of every cache key of simulated data.
PHANTOM_VERSION = "1"

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # 2.3548
_DB_PER_NEPER = 20.0 / math.log(10.0)  # 8.6859
_MAP_STEP = 4  # RF samples per row of the (coarser) tissue-map grid
_BIRADS = ("3", "4a", "4b", "4c", "5")
_BIRADS_THRESHOLDS = (0.30, 0.45, 0.60, 0.75)


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


def _system(system: ImagingSystem | None) -> ImagingSystem:
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
    s = _system(system)
    z = np.asarray(depth_mm, dtype=float)
    w = np.sqrt(1.0 + ((z - focus_depth_mm) / s.depth_of_field_mm) ** 2)
    return acquisition.wavelength_mm * s.f_number * np.minimum(w, s.max_widening)


def psf_fwhm_mm(depth_mm, *, focus_depth_mm: float, acquisition: Acquisition = OASBUD_ACQUISITION,
                system: ImagingSystem | None = None) -> tuple[float, np.ndarray]:
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
    s = _system(system)
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
    s = _system(system)
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
    s = _system(system)
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


def _max_lateral_halfwidth(acquisition: Acquisition, system: ImagingSystem, n_sigma: float = 4.0) -> int:
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
    s = _system(system)
    x = np.asarray(scatterers, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"convolve_psf: scatterers must be 2-D (n_samples, n_lines), got shape {x.shape}")
    n_z, n_x = x.shape
    dz, dx = acquisition.dz_mm, acquisition.dx_mm
    pad = _max_lateral_halfwidth(acquisition, s)
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
    >>> rf = simulate_speckle((512, 256), seed=0)
    >>> 1.7 < envelope_snr(rf) < 2.1
    True
    """
    s = _system(system)
    if not 0 < density <= 1:
        raise ValueError(f"simulate_speckle: density must be in (0, 1], got {density}")
    n_z, n_x = (int(v) for v in shape)
    if n_z < 2 or n_x < 2:
        raise ValueError(f"simulate_speckle: shape must be at least (2, 2), got {shape}")
    rng = np.random.default_rng(seed)
    pad_x = _max_lateral_halfwidth(acquisition, s)
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


def envelope_snr(rf: np.ndarray) -> float:
    """Mean / standard deviation of the envelope ``|hilbert(rf, axis=0)|``.

    1.913 for fully developed (Rayleigh) speckle; lower for sparse scatterers.

    Parameters
    ----------
    rf : ndarray, shape (n_samples, n_lines)

    Returns
    -------
    float
    """
    env = np.abs(_signal.hilbert(np.asarray(rf, dtype=float), axis=0))
    return float(env.mean() / env.std())


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


# --------------------------------------------------------------------------
# Lesion model
# --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LesionModel:
    """A latent 3-D lesion, its acoustic cues, and the breast around it.

    The body is the star-shaped set ``ρ(q) < R(d)`` in the lesion frame,
    where ``q`` is a point scaled by ``semi_axes_mm``, ``ρ = |q|``, ``d = q/ρ``
    and ``R(d) = 1 + Σ_j a_j cos(ω_j d·v_j + φ_j)``; spicules add
    ``Σ_k ℓ_k max(0, 1 - angle(d, s_k)/w_k)`` to ``R`` for the echo map only
    (the ROI is the body).

    Attributes
    ----------
    label : int
        0 benign, 1 malignant.
    birads : str
        "3", "4a", "4b", "4c" or "5".
    suspicion : float
        The latent suspiciousness u in [0, 1].
    semi_axes_mm : tuple of float
        (long horizontal, short horizontal, vertical) semi-axes.
    azimuth_deg, tilt_deg : float
        Rotation of the long axis about the vertical, and its elevation.
    harmonics : ndarray, shape (n, 6)
        Rows (v_x, v_y, v_z, ω, a, φ) of the radial perturbation.
    spicules : ndarray, shape (m, 5)
        Rows (s_x, s_y, s_z, ℓ, w) of the spicules (w in rad).
    echogenicity : float
        Interior echo amplitude relative to fibroglandular tissue.
    heterogeneity : float
        Standard deviation of the log interior texture.
    texture_mm : float
        Correlation length of the interior texture.
    density : float
        Interior scatterer density (fraction of RF grid points).
    attenuation_ratio : float
        Interior attenuation relative to the background (<1 posterior
        enhancement, >1 shadowing).
    edge_width_mm : float
        10–90 % width of the margin transition.
    halo, halo_width_mm : float
        Relative amplitude and width of an echogenic rim outside the margin.
    capsule : float
        Relative amplitude of a thin echogenic capsule on the margin.
    calcifications_per_cm2 : float
        Expected microcalcifications per cm² of section.
    depth_mm : float
        Depth of the lesion centre below the skin.
    skin_mm, fat_mm, gland_bottom_mm : float
        Dermis thickness, depth of the bottom of the subcutaneous fat and of
        the fibroglandular layer (per breast; each scan jitters them).
    """

    label: int
    birads: str
    suspicion: float
    semi_axes_mm: tuple[float, float, float]
    azimuth_deg: float
    tilt_deg: float
    harmonics: np.ndarray
    spicules: np.ndarray
    echogenicity: float
    heterogeneity: float
    texture_mm: float
    density: float
    attenuation_ratio: float
    edge_width_mm: float
    halo: float
    halo_width_mm: float
    capsule: float
    calcifications_per_cm2: float
    depth_mm: float
    skin_mm: float
    fat_mm: float
    gland_bottom_mm: float
    lobulation: float = 0.0
    irregularity: float = 0.0

    @property
    def bounding_radius_mm(self) -> float:
        """Radius of a sphere about the centre that holds the body."""
        return float(max(self.semi_axes_mm) * (1.0 + np.sum(np.abs(self.harmonics[:, 4]))))

    @property
    def extent_radius_mm(self) -> float:
        """Radius of a sphere about the centre that holds the body and its spicules."""
        spic = float(self.spicules[:, 3].max()) if len(self.spicules) else 0.0
        return float(max(self.semi_axes_mm) * (1.0 + np.sum(np.abs(self.harmonics[:, 4])) + spic))

    def rotation(self) -> np.ndarray:
        """3×3 rotation from the lesion frame to the breast frame (z = depth)."""
        a, t = math.radians(self.azimuth_deg), math.radians(self.tilt_deg)
        rz = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
        ry = np.array([[math.cos(t), 0.0, -math.sin(t)], [0.0, 1.0, 0.0], [math.sin(t), 0.0, math.cos(t)]])
        return rz @ ry

    def cues(self) -> dict:
        """The lesion's latent variable and cue values, for tables."""
        a1, a2, c = self.semi_axes_mm
        return {
            "label": int(self.label),
            "birads": self.birads,
            "suspicion": float(self.suspicion),
            "diameter_mm": float(2.0 * (a1 * a2 * c) ** (1.0 / 3.0)),
            "aspect": float(c / math.sqrt(a1 * a2)),
            "tilt_deg": float(self.tilt_deg),
            "lobulation": float(self.lobulation),
            "irregularity": float(self.irregularity),
            "n_spicules": int(len(self.spicules)),
            "echogenicity": float(self.echogenicity),
            "heterogeneity": float(self.heterogeneity),
            "density": float(self.density),
            "attenuation_ratio": float(self.attenuation_ratio),
            "edge_width_mm": float(self.edge_width_mm),
            "halo": float(self.halo),
            "capsule": float(self.capsule),
            "calcifications_per_cm2": float(self.calcifications_per_cm2),
            "depth_mm": float(self.depth_mm),
        }


def birads_from_suspicion(u: float) -> str:
    """BI-RADS category of a (noisy) suspiciousness: thresholds 0.30/0.45/0.60/0.75.

    Examples
    --------
    >>> [birads_from_suspicion(u) for u in (0.1, 0.4, 0.5, 0.7, 0.9)]
    ['3', '4a', '4b', '4c', '5']
    """
    return _BIRADS[int(np.searchsorted(_BIRADS_THRESHOLDS, u, side="right"))]


def _unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def random_lesion_model(label: int, *, seed=None, suspicion: float | None = None) -> LesionModel:
    """Draw a lesion of class ``label`` from the phantom's cue distributions.

    Parameters
    ----------
    label : int
        0 benign, 1 malignant.
    seed : int or numpy.random.SeedSequence or numpy.random.Generator, optional
    suspicion : float, optional
        Fix the latent u instead of drawing it from Beta(2, 4) (benign) or
        Beta(4, 2) (malignant).

    Returns
    -------
    LesionModel

    Examples
    --------
    >>> m = random_lesion_model(1, seed=3)
    >>> m.label, m.birads in ("3", "4a", "4b", "4c", "5"), 0 <= m.suspicion <= 1
    (1, True, True)
    """
    if label not in (0, 1):
        raise ValueError(f"random_lesion_model: label must be 0 or 1, got {label!r}")
    rng = np.random.default_rng(seed)
    u = float(rng.beta(4.0, 2.0) if label else rng.beta(2.0, 4.0)) if suspicion is None else float(suspicion)
    if not 0 <= u <= 1:
        raise ValueError(f"random_lesion_model: suspicion must be in [0, 1], got {u}")

    def jitter(sigma: float) -> float:
        return float(math.exp(sigma * rng.standard_normal()))

    birads = birads_from_suspicion(u + 0.08 * rng.standard_normal())
    # Shape: size, aspect (taller-than-wide), horizontal ellipticity, orientation.
    diameter = float(np.clip((9.0 + 7.0 * u) * jitter(0.3), 5.0, 24.0))
    aspect = float(np.clip(math.exp(-0.6 + 0.85 * u + 0.18 * rng.standard_normal()), 0.35, 1.6))
    ratio = float(rng.uniform(0.6, 1.0))
    a1 = 0.5 * diameter / (ratio**1.5 * aspect) ** (1.0 / 3.0)
    semi = np.array([a1, ratio * a1, aspect * math.sqrt(ratio) * a1])
    azimuth = float(rng.uniform(0.0, 180.0))
    tilt = float(np.clip(rng.normal(0.0, 5.0 + 25.0 * u), -45.0, 45.0))
    # Margin: low-order lobulation (both classes), higher-order irregularity (u).
    lobulation = float(rng.uniform(0.02, 0.08))
    irregularity = float(0.01 + 0.08 * u * jitter(0.4))
    n_lob, n_irr = 6, 14
    harm = np.zeros((n_lob + n_irr, 6))
    harm[:, :3] = _unit_vectors(rng, n_lob + n_irr)
    harm[:n_lob, 3] = rng.uniform(1.5, 4.0, n_lob)
    harm[n_lob:, 3] = rng.uniform(5.0, 14.0, n_irr)
    harm[:n_lob, 4] = lobulation * math.sqrt(2.0 / n_lob)
    harm[n_lob:, 4] = irregularity * math.sqrt(2.0 / n_irr)
    harm[:, 5] = rng.uniform(0.0, 2.0 * math.pi, n_lob + n_irr)
    # Keep the body inside a 15 mm sphere (fits the 38 mm field of view).
    r_b = semi.max() * (1.0 + np.abs(harm[:, 4]).sum())
    if r_b > 15.0:
        semi *= 15.0 / r_b
    # Spicules.
    n_spic = int(rng.poisson(300.0 * max(0.0, u - 0.4) ** 2 * jitter(0.5)))
    spic = np.zeros((n_spic, 5))
    if n_spic:
        spic[:, :3] = _unit_vectors(rng, n_spic)
        spic[:, 3] = rng.uniform(0.2, 0.6, n_spic) * (1.0 + 0.5 * u)
        spic[:, 4] = rng.uniform(0.03, 0.07, n_spic)
    # Interior and margin cues.
    echogenicity = float(np.clip(math.exp(-0.6 - 1.6 * u + 0.35 * rng.standard_normal()), 0.02, 1.5))
    heterogeneity = float(np.clip((0.1 + 0.5 * u) * jitter(0.35), 0.02, 1.2))
    texture_mm = float(rng.uniform(0.4, 1.2))
    density = float(np.clip(math.exp(-3.2 * u * jitter(0.4)), 0.03, 1.0))
    attenuation_ratio = float(np.clip(math.exp(1.8 * (u - 0.45) + 0.45 * rng.standard_normal()), 0.1, 5.0))
    edge_width_mm = float(0.05 + 0.6 * u * jitter(0.5))
    halo = float(max(0.0, u - 0.3) * 1.6 * rng.random()) if rng.random() < u else 0.0
    halo_width_mm = float(rng.uniform(0.5, 1.5))
    capsule = float(max(0.0, 0.55 - u) * 2.0 * rng.random()) if rng.random() < 1.0 - u else 0.0
    calcifications = float(30.0 * max(0.0, u - 0.5) * jitter(0.7)) if rng.random() < u else 0.0
    # Breast and position.
    skin_mm = float(rng.uniform(1.2, 2.2))
    fat_mm = float(rng.uniform(4.0, 10.0))
    h = float(semi.max() * (1.0 + np.abs(harm[:, 4]).sum()))
    depth_mm = max(fat_mm + rng.uniform(0.2, 0.9) * h, skin_mm + 1.5 + h)
    gland_bottom = max(fat_mm + rng.uniform(8.0, 22.0), depth_mm + h * rng.uniform(0.8, 1.2) + rng.uniform(0.5, 3.0))
    return LesionModel(
        label=int(label),
        birads=birads,
        suspicion=u,
        semi_axes_mm=tuple(float(v) for v in semi),
        azimuth_deg=azimuth,
        tilt_deg=tilt,
        harmonics=harm,
        spicules=spic,
        echogenicity=echogenicity,
        heterogeneity=heterogeneity,
        texture_mm=texture_mm,
        density=density,
        attenuation_ratio=attenuation_ratio,
        edge_width_mm=edge_width_mm,
        halo=halo,
        halo_width_mm=halo_width_mm,
        capsule=capsule,
        calcifications_per_cm2=calcifications,
        depth_mm=float(depth_mm),
        skin_mm=skin_mm,
        fat_mm=fat_mm,
        gland_bottom_mm=float(gland_bottom),
        lobulation=lobulation,
        irregularity=irregularity,
    )


# --------------------------------------------------------------------------
# Tissue maps (on a coarser "map grid": _MAP_STEP samples × 1 line)
# --------------------------------------------------------------------------


def _upsample_rows(m: np.ndarray, factor: int) -> np.ndarray:
    """Linear interpolation along axis 0: (n, ...) → ((n - 1)·factor + 1, ...)."""
    n = m.shape[0]
    if factor == 1 or n < 2:
        return m
    t = (np.arange(factor, dtype=np.float32) / factor).reshape((1, factor) + (1,) * (m.ndim - 1))
    body = m[:-1, None] * (1 - t) + m[1:, None] * t
    return np.concatenate([body.reshape(((n - 1) * factor,) + m.shape[1:]), m[-1:]], axis=0)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], corr_px: tuple[float, float]) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field with correlation ≈ ``corr_px``.

    White noise on a grid ``corr_px`` apart, smoothed there, then linearly
    interpolated to ``shape`` (cheap and deterministic).
    """
    sz = max(2, int(round(corr_px[0])))
    sx = max(2, int(round(corr_px[1])))
    coarse = rng.standard_normal((shape[0] // sz + 4, shape[1] // sx + 4)).astype(np.float32)
    coarse = _ndi.gaussian_filter(coarse, 0.7, mode="nearest")
    cols = np.ascontiguousarray(_upsample_rows(np.ascontiguousarray(coarse.T), sx).T)
    out = _upsample_rows(cols, sz)[sz : sz + shape[0], sx : sx + shape[1]]
    out = out - out.mean()
    return out / max(float(out.std()), 1e-6)


def _curve(rng: np.random.Generator, x_mm: np.ndarray, amplitude_mm: float, wavelengths_mm=(8.0, 30.0)) -> np.ndarray:
    """A smooth random undulation of RMS ≈ ``amplitude_mm`` along x."""
    y = np.zeros_like(x_mm)
    for _ in range(3):
        lam = rng.uniform(*wavelengths_mm)
        y += math.sqrt(2.0 / 3.0) * amplitude_mm * np.sin(2 * math.pi * x_mm / lam + rng.uniform(0, 2 * math.pi))
    return y


def _background(rng, model: LesionModel, z_mm: np.ndarray, x_mm: np.ndarray, dz_map: float, dx: float):
    """Echogenicity map of the breast, its skin line, and specular interfaces.

    Returns (echo (n_map, n_x) float32, skin_mm (n_x,), speculars [(depth_mm (n_x,), amplitude)]).
    """
    z = z_mm[:, None].astype(np.float32)
    n_map, n_x = z_mm.size, x_mm.size
    x = x_mm.astype(np.float64)
    skin = 0.35 + 0.3 * rng.random() + _curve(rng, x, 0.08)
    dermis = skin + model.skin_mm * rng.uniform(0.9, 1.1) + _curve(rng, x, 0.12)
    fat_b = np.maximum(model.fat_mm + rng.normal(0, 0.4) + _curve(rng, x, rng.uniform(0.6, 1.5)), dermis + 0.8)
    gland_b = np.maximum(model.gland_bottom_mm + rng.normal(0, 0.5) + _curve(rng, x, 0.8), fat_b + 2.0)
    rm_b = gland_b + rng.uniform(1.0, 3.0) + _curve(rng, x, 0.3)
    mus_b = rm_b + rng.uniform(6.0, 14.0) + _curve(rng, x, 0.8)
    fine = _smooth_noise(rng, (n_map, n_x), (0.5 / dz_map, 0.5 / dx))
    coarse = _smooth_noise(rng, (n_map, n_x), (2.0 / dz_map, 2.0 / dx))
    islands = _smooth_noise(rng, (n_map, n_x), (1.5 / dz_map, 2.5 / dx))
    f32 = np.float32

    def layer(lo, hi):
        return (z >= lo[None, :].astype(f32)) & (z < hi[None, :].astype(f32))

    echo = np.zeros((n_map, n_x), dtype=f32)
    np.putmask(echo, layer(skin, dermis), f32(0.8) * np.exp(f32(0.2) * fine))
    np.putmask(echo, layer(dermis, fat_b), f32(0.3) * np.exp(f32(0.35) * fine))
    fat_isl = np.clip((islands - 0.8) * 2.0, 0.0, 1.0)
    np.putmask(
        echo, layer(fat_b, gland_b), np.exp(f32(0.3) * fine + f32(0.25) * coarse) * (1 - f32(0.65) * fat_isl)
    )
    np.putmask(echo, layer(gland_b, rm_b), f32(0.3) * np.exp(f32(0.3) * fine))
    beta = math.radians(rng.uniform(-20.0, 20.0))
    period = rng.uniform(0.7, 1.4)
    phase = 2 * math.pi * (z * math.cos(beta) + x[None, :].astype(f32) * math.sin(beta)) / period
    stri = (0.5 * (1 + np.cos(phase + 1.5 * coarse))) ** 2
    np.putmask(echo, layer(rm_b, mus_b), f32(0.45) * (0.6 + 0.9 * stri) * np.exp(f32(0.2) * fine))
    below = z >= mus_b[None, :].astype(f32)
    np.putmask(echo, below, f32(0.35) * np.exp(f32(0.3) * fine))
    # Cooper's ligaments: thin oblique echogenic bands through the fat.
    top, bottom = float(dermis.min()), float(fat_b.max()) + 0.6
    i0, i1 = int(top / dz_map), min(int(bottom / dz_map) + 1, n_map)
    if i1 > i0:
        zz = z[i0:i1]
        in_fat = (zz >= dermis[None, :]) & (zz < fat_b[None, :] + 0.4)
        for _ in range(int(rng.integers(3, 8))):
            ang = math.radians(rng.uniform(25.0, 65.0)) * rng.choice([-1.0, 1.0])
            x0 = rng.uniform(x[0], x[-1])
            curv = rng.normal(0.0, 0.03)
            d = (x[None, :] - (x0 + math.tan(ang) * (zz - top) + curv * (zz - top) ** 2)) * math.cos(ang)
            width = rng.uniform(0.12, 0.3)
            amp = rng.uniform(1.0, 2.5)
            echo[i0:i1] += (in_fat * (amp * np.exp(-((d / width) ** 2)))).astype(f32)
    speculars = [
        (skin, float(rng.uniform(4.0, 6.0))),
        (fat_b, float(rng.uniform(0.3, 0.8))),
        (rm_b, float(rng.uniform(1.5, 3.0))),
        (mus_b, float(rng.uniform(1.0, 2.0))),
    ]
    return echo, skin, speculars


@dataclass
class _LesionMaps:
    rows: slice  # map-grid rows of the box
    cols: slice  # padded lines of the box
    dist_body: np.ndarray  # signed distance (mm) to the body boundary, map grid, + outside
    m_echo: np.ndarray  # soft interior weight of body + spicules (map grid)
    m_body: np.ndarray  # soft interior weight of the body (map grid)
    texture: np.ndarray  # multiplicative interior texture (map grid)
    extra: np.ndarray  # multiplicative halo/capsule factor (map grid)


def _lesion_maps(model: LesionModel, *, plane_angle_deg, offset_mm, zc_mm, xc_mm, z_mm, x_mm, rng) -> _LesionMaps:
    """Level sets of the lesion's cross-section on the map grid (computed on a 2× coarser grid)."""
    dz_map = float(z_mm[1] - z_mm[0])
    dx = float(x_mm[1] - x_mm[0])
    r_ext = model.extent_radius_mm + 2.0 + model.halo_width_mm
    i0 = max(int(math.floor((zc_mm - r_ext - z_mm[0]) / dz_map)), 0)
    i_end = min(int(math.ceil((zc_mm + r_ext - z_mm[0]) / dz_map)) + 1, z_mm.size)
    j0 = max(int(math.floor((xc_mm - r_ext - x_mm[0]) / dx)), 0)
    j_end = min(int(math.ceil((xc_mm + r_ext - x_mm[0]) / dx)) + 1, x_mm.size)
    # Coarse grid: every 2nd map row / line from (i0, j0); the map box ends on a coarse point.
    nci, ncj = (i_end - 1 - i0) // 2 + 1, (j_end - 1 - j0) // 2 + 1
    if nci < 2 or ncj < 2:
        raise ValueError("simulate_scan: the lesion does not fit in the scan")
    i1, j1 = i0 + 2 * (nci - 1) + 1, j0 + 2 * (ncj - 1) + 1
    t = (z_mm[i0:i1:2] - zc_mm)[:, None].astype(np.float32)  # (nci, 1)
    s = (x_mm[j0:j1:2] - xc_mm)[None, :].astype(np.float32)  # (1, ncj)
    th = math.radians(plane_angle_deg)
    h = np.array([math.cos(th), math.sin(th), 0.0])
    nrm = np.array([-math.sin(th), math.cos(th), 0.0])
    ez = np.array([0.0, 0.0, 1.0])
    m = np.diag(1.0 / np.asarray(model.semi_axes_mm)) @ model.rotation().T
    u1, u2, u3 = m @ h, m @ ez, m @ nrm  # q' = s u1 + t u2 + o u3
    f32 = np.float32
    q = [s * f32(u1[k]) + t * f32(u2[k]) + f32(offset_mm * u3[k]) for k in range(3)]
    rho = np.sqrt(q[0] ** 2 + q[1] ** 2 + q[2] ** 2)
    rho = np.maximum(rho, f32(1e-6))
    d = [qk / rho for qk in q]  # unit direction
    r_mm = np.sqrt(s**2 + t**2 + f32(offset_mm**2))
    r_body = np.ones_like(rho)
    for vx, vy, vz, om, a, ph in model.harmonics.astype(np.float32):
        r_body += a * np.cos(om * (d[0] * vx + d[1] * vy + d[2] * vz) + ph)
    r_body = np.maximum(r_body, f32(0.4))
    r_all = r_body.copy()
    if len(model.spicules):
        pn = np.cross(u1, u2)
        pn /= np.linalg.norm(pn)
        sp = model.spicules
        near = np.abs(sp[:, :3] @ pn) < np.sin(sp[:, 4] + 0.2 + abs(offset_mm) * np.linalg.norm(u3))
        for vx, vy, vz, ell, w in sp[near].astype(np.float32):
            cosang = d[0] * vx + d[1] * vy + d[2] * vz
            ang = np.sqrt(np.maximum(2.0 * (1.0 - cosang), 0.0))
            r_all += ell * np.maximum(0.0, 1.0 - ang / w)
    # Signed distance along the ray from the centre (mm), + outside.
    d_body = r_mm * (1.0 - r_body / rho)
    d_all = r_mm * (1.0 - r_all / rho)

    def up2(a):
        return _upsample_rows(_upsample_rows(a.astype(np.float32), 2).T, 2).T

    d_body, d_all = up2(d_body), up2(d_all)
    scale = max(model.edge_width_mm, 1e-3) / 4.394  # logistic 10–90 % width
    m_echo = 0.5 * (1.0 - np.tanh(d_all / (2.0 * scale)))
    m_body = 0.5 * (1.0 - np.tanh(d_body / (2.0 * scale)))
    shape = d_body.shape
    tex = _smooth_noise(rng, shape, (model.texture_mm / dz_map, model.texture_mm / dx))
    hgt = model.heterogeneity
    texture = np.exp(hgt * tex - 0.5 * hgt**2).astype(np.float32)
    extra = np.ones(shape, dtype=np.float32)
    if model.halo > 0:
        hw = model.halo_width_mm
        bump = np.exp(-(((d_all - 0.5 * hw) / (0.5 * hw)) ** 2)) * (d_all > -0.1)
        extra += np.float32(model.halo) * bump.astype(np.float32)
    if model.capsule > 0:
        extra += np.float32(model.capsule) * np.exp(-((d_body / 0.2) ** 2)).astype(np.float32)
    return _LesionMaps(slice(i0, i1), slice(j0, j1), d_body, m_echo.astype(np.float32), m_body, texture, extra)


# --------------------------------------------------------------------------
# Scans, lesions, data sets
# --------------------------------------------------------------------------


def simulate_scan(
    model: LesionModel,
    *,
    plane_angle_deg: float = 0.0,
    seed=0,
    depth_mm: float | None = None,
    n_nonecho_rows: int = 20,
    acquisition: Acquisition = OASBUD_ACQUISITION,
    system: ImagingSystem | None = None,
) -> Scan:
    """Simulate one B-scan (int16 RF and ROI) through a lesion.

    Parameters
    ----------
    model : LesionModel
        The 3-D lesion and its breast.
    plane_angle_deg : float
        Azimuth of the imaging plane; two scans of one lesion are ~90° apart.
    seed : int or numpy.random.SeedSequence or numpy.random.Generator
        Seeds the plane offset, lesion position, breast background, speckle
        and noise of this scan.
    depth_mm : float, optional
        Depth of the echo region (rows after the non-echo rows). Default: room
        for the lesion plus 10 mm, at least 30 mm. Deepened if the lesion
        would not fit with 4 mm below it.
    n_nonecho_rows : int
        Constant rows on top (value ``system.nonecho_value``), outside the ROI.
    acquisition : Acquisition
    system : ImagingSystem, optional

    Returns
    -------
    Scan
        ``rf`` int16 of shape (n_nonecho_rows + round(depth_mm/dz_mm), n_lines),
        ``roi`` bool of the same shape.
    """
    s = _system(system)
    if int(n_nonecho_rows) != n_nonecho_rows or n_nonecho_rows < 0:
        raise ValueError(f"simulate_scan: n_nonecho_rows must be a non-negative integer, got {n_nonecho_rows!r}")
    n_nonecho_rows = int(n_nonecho_rows)
    rng = np.random.default_rng(seed)
    rng_geo, rng_bg, rng_les, rng_speckle = rng.spawn(4)
    dz, dx = acquisition.dz_mm, acquisition.dx_mm
    n_lines = acquisition.n_lines
    width = (n_lines - 1) * dx

    # Geometry of this view.
    r_body = model.bounding_radius_mm
    zc = model.depth_mm + rng_geo.normal(0.0, 0.4)
    lo, hi = r_body + 1.0, width - r_body - 1.0
    xc = 0.5 * width + rng_geo.uniform(-4.0, 4.0)
    xc = float(np.clip(xc, lo, hi)) if lo < hi else 0.5 * width
    offset = rng_geo.normal(0.0, 0.08 * min(model.semi_axes_mm))
    focus = zc + rng_geo.normal(0.0, 0.5)
    needed = zc + r_body + 4.0
    if depth_mm is None:
        depth_mm = max(30.0, needed + 6.0)
    depth_mm = max(float(depth_mm), needed)
    n_echo = int(round(depth_mm / dz))

    # Grids: padded laterally (beam width) and below (pulse length).
    pad_x = _max_lateral_halfwidth(acquisition, s)
    n_pulse = axial_pulse(fs_hz=acquisition.fs_hz, f0_hz=acquisition.f0_hz, bandwidth=s.bandwidth).size
    n_map = int(math.ceil((n_echo + n_pulse) / _MAP_STEP)) + 1
    n_rows = (n_map - 1) * _MAP_STEP + 1
    dz_map = _MAP_STEP * dz
    z_map = np.arange(n_map) * dz_map
    x_mm = (np.arange(n_lines + 2 * pad_x) - pad_x) * dx

    # Echogenicity: breast, then the lesion.
    echo, skin, speculars = _background(rng_bg, model, z_map, x_mm, dz_map, dx)
    les = _lesion_maps(
        model, plane_angle_deg=plane_angle_deg, offset_mm=offset, zc_mm=zc, xc_mm=xc, z_mm=z_map, x_mm=x_mm, rng=rng_les
    )
    box = (les.rows, les.cols)
    inside = np.float32(model.echogenicity) * les.texture
    echo[box] = (echo[box] * (1 - les.m_echo) + inside * les.m_echo) * les.extra

    # Attenuation (round trip, per pixel) and TGC.
    alpha = np.float32(s.attenuation_np_mm(acquisition) * dz_map)
    att = np.full(echo.shape, alpha, dtype=np.float32)
    att[z_map[:, None] < skin[None, :]] = 0.0
    att[box] *= 1 + np.float32(model.attenuation_ratio - 1.0) * les.m_body
    np.cumsum(att, axis=0, out=att)
    tgc_log = np.float32(s.tgc_fraction * s.attenuation_np_mm(acquisition)) * z_map.astype(np.float32)
    gain = np.exp(tgc_log[:, None] - att)  # attenuation × TGC, map grid
    amp = echo * gain
    noise_std = np.float32(10.0 ** (s.noise_db / 20.0)) * np.exp(tgc_log)

    # Scatterers on the RF grid.
    var = _upsample_rows(amp * amp, _MAP_STEP)
    if model.density < 1.0:
        rb = slice(les.rows.start * _MAP_STEP, (les.rows.stop - 1) * _MAP_STEP + 1)
        p = 1.0 - np.float32(1.0 - model.density) * _upsample_rows(les.m_body, _MAP_STEP)
        keep = rng_les.random(p.shape, dtype=np.float32) < p
        var[rb, les.cols] *= keep / p
    var += _upsample_rows(noise_std**2, _MAP_STEP)[:, None]
    scat = rng_speckle.standard_normal(var.shape, dtype=np.float32)
    scat *= np.sqrt(var)
    cols = np.arange(x_mm.size)
    for depth_line, a in speculars:
        r = np.clip(np.round(depth_line / dz).astype(int), 0, n_rows - 1)
        line_amp = a * (1.0 + 0.15 * rng_speckle.standard_normal(cols.size))
        scat[r, cols] += (line_amp * gain[r // _MAP_STEP, cols]).astype(np.float32)
    if model.calcifications_per_cm2 > 0:
        core = np.argwhere(les.dist_body < -0.3)
        area_cm2 = core.shape[0] * dz_map * dx / 100.0
        n_calc = int(rng_les.poisson(model.calcifications_per_cm2 * area_cm2))
        if n_calc and core.size:
            pick = core[rng_les.integers(0, core.shape[0], n_calc)]
            mi = pick[:, 0] + les.rows.start
            mj = pick[:, 1] + les.cols.start
            r = np.minimum(mi * _MAP_STEP + rng_les.integers(0, _MAP_STEP, n_calc), n_rows - 1)
            scat[r, mj] += (rng_les.uniform(2.0, 4.0, n_calc) * gain[mi, mj]).astype(np.float32)

    rf = convolve_psf(scat, focus_depth_mm=focus, acquisition=acquisition, system=s)
    rf = rf[:n_echo, pad_x : pad_x + n_lines]

    # ROI: the body outline on the RF grid.
    roi = np.zeros((n_nonecho_rows + n_echo, n_lines), dtype=bool)
    d_full = _upsample_rows(les.dist_body, _MAP_STEP)
    r0 = les.rows.start * _MAP_STEP
    r1 = min(r0 + d_full.shape[0], n_echo)
    c0, c1 = les.cols.start - pad_x, les.cols.stop - pad_x
    k0, k1 = max(c0, 0), min(c1, n_lines)
    roi[n_nonecho_rows + r0 : n_nonecho_rows + r1, k0:k1] = d_full[: r1 - r0, k0 - c0 : k1 - c0] < 0

    # Quantise: the 99.99th percentile of |rf| at 0.75 rf_peak, clip at rf_peak.
    ref = float(np.quantile(np.abs(rf[:, ::3]), 0.9999))
    q = np.clip(np.rint(rf * np.float32(0.75 * s.rf_peak / max(ref, 1e-12))), -s.rf_peak, s.rf_peak)
    out = np.empty((n_nonecho_rows + n_echo, n_lines), dtype=np.int16)
    out[:n_nonecho_rows] = s.nonecho_value
    out[n_nonecho_rows:] = q.astype(np.int16)
    return Scan(out, roi, acquisition)


def simulate_lesion(
    model: LesionModel,
    *,
    seed=0,
    lesion_id: str = "1xx",
    patient: str | None = None,
    n_nonecho_rows: int = 20,
    depth_range_mm: tuple[float, float] = (30.0, 50.0),
    acquisition: Acquisition = OASBUD_ACQUISITION,
    system: ImagingSystem | None = None,
) -> Lesion:
    """Two orthogonal scans of one lesion model.

    The first plane's azimuth is uniform, the second is 90° ± 5° from it;
    each scan has its own depth (uniform in ``depth_range_mm``, deepened when
    the lesion needs room), plane offset, position, breast view and speckle.

    Parameters
    ----------
    model : LesionModel
    seed : int or numpy.random.SeedSequence or numpy.random.Generator
    lesion_id : str
        Used as both ``id`` and ``key``.
    patient : str, optional
        Default: the letters of ``lesion_id``, lower-cased.
    n_nonecho_rows, acquisition, system
        As for :func:`simulate_scan`.
    depth_range_mm : (float, float)
        Range of the echo depth of the scans.

    Returns
    -------
    Lesion
    """
    lo, hi = (float(v) for v in depth_range_mm)
    if not 0 < lo <= hi:
        raise ValueError(f"simulate_lesion: depth_range_mm must satisfy 0 < low <= high, got {depth_range_mm!r}")
    rng = np.random.default_rng(seed)
    theta = float(rng.uniform(0.0, 180.0))
    angles = (theta, theta + 90.0 + float(rng.normal(0.0, 5.0)))
    depths = [float(rng.uniform(lo, hi)) for _ in angles]
    scans = tuple(
        simulate_scan(
            model,
            plane_angle_deg=a,
            seed=child,
            depth_mm=d,
            n_nonecho_rows=n_nonecho_rows,
            acquisition=acquisition,
            system=system,
        )
        for a, d, child in zip(angles, depths, rng.spawn(2))
    )
    if patient is None:
        patient = "".join(ch for ch in lesion_id if ch.isalpha()).lower() or lesion_id
    return Lesion(lesion_id, lesion_id, patient, int(model.label), model.birads, scans)


def _initials(rng: np.random.Generator, n: int) -> list[str]:
    letters = np.array(list(string.ascii_lowercase))
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        k = 2 if rng.random() < 0.7 or len(seen) > 0.8 * 26**2 else 3
        name = "".join(rng.choice(letters, k))
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out


def patient_assignment(
    n_lesions: int, *, seed: int = 0, malignant_fraction: float = 0.4
) -> tuple[np.ndarray, np.ndarray]:
    """Class and patient of every lesion that :func:`simulate_dataset` makes.

    Cheap (no images are simulated) and exactly the assignment
    :func:`simulate_dataset` uses for the same arguments, so the number of
    patients of a phantom run is known before anything runs (e.g. to check
    that the cross-validation can make ``n_splits`` patient-level folds).

    Parameters
    ----------
    n_lesions : int
        Number of lesions.
    seed : int
        Seed of the simulation (``simulate_dataset(seed=...)``).
    malignant_fraction : float
        ``round(malignant_fraction · n_lesions)`` lesions are malignant.

    Returns
    -------
    labels : ndarray of int, shape (n_lesions,)
        0 benign, 1 malignant, in lesion order.
    patients : ndarray of str, shape (n_lesions,)
        Patient key (lower-case initials) of each lesion; a patient's lesions
        are consecutive, about one patient in ten has two.

    Examples
    --------
    >>> labels, patients = patient_assignment(12, seed=0)
    >>> labels.shape, patients.shape, int(labels.sum())
    ((12,), (12,), 5)
    >>> len(set(patients.tolist()))
    11
    """
    n = int(n_lesions)
    if n != n_lesions or n < 1:
        raise ValueError(f"patient_assignment: n_lesions must be a positive integer, got {n_lesions!r}")
    if not 0 <= malignant_fraction <= 1:
        raise ValueError(f"patient_assignment: malignant_fraction must be in [0, 1], got {malignant_fraction}")
    meta_ss, _ = np.random.SeedSequence(int(seed)).spawn(2)
    meta = np.random.default_rng(meta_ss)
    n_mal = int(round(malignant_fraction * n))
    labels = meta.permutation(np.r_[np.ones(n_mal, int), np.zeros(n - n_mal, int)])
    n_pairs = int(round(n / 11.0))
    sizes = meta.permutation([2] * n_pairs + [1] * (n - 2 * n_pairs))
    initials = _initials(meta, len(sizes))
    owners = [ini for ini, k in zip(initials, sizes) for _ in range(int(k))]
    return labels, np.array(owners, dtype=str)


def simulate_dataset(
    n_lesions: int,
    *,
    seed: int = 0,
    n_nonecho_rows: int = 20,
    acquisition: Acquisition = OASBUD_ACQUISITION,
    malignant_fraction: float = 0.4,
    depth_range_mm: tuple[float, float] = (30.0, 50.0),
    system: ImagingSystem | None = None,
    return_models: bool = False,
    progress: bool = False,
    workers: int | None = None,
):
    """Simulate a data set of lesions in the OASBUD schema (synthetic).

    Parameters
    ----------
    n_lesions : int
        Number of lesions (each with two orthogonal scans).
    seed : int
        Everything is deterministic from it (bit-identical int16 RF).
    n_nonecho_rows : int
        Constant non-echo rows on top of every RF matrix (the OASBUD quirk;
        ``load_oasbud`` drops 20 by default).
    acquisition : Acquisition
        Sampling geometry (default: the OASBUD probe).
    malignant_fraction : float
        ``round(malignant_fraction · n_lesions)`` lesions are malignant
        (0.4: the paper's 94/251 ≈ 0.37, the public set's 52/100).
    depth_range_mm : (float, float)
        Echo depth of the scans (deepened for lesions that need room).
    system : ImagingSystem, optional
        Scanner model.
    return_models : bool
        Also return a table of every lesion's latent suspiciousness and cues
        (the ground truth behind the images).
    progress : bool
        Show a tqdm progress bar.
    workers : int, optional
        Lesions simulated at once, in threads (NumPy and SciPy release the
        GIL in the heavy steps); None: one per CPU. Every lesion has its own
        seed (spawned from ``seed``), so the data set is the same, bit for
        bit, whatever the number of workers.

    Returns
    -------
    Dataset or (Dataset, pandas.DataFrame)
        Lesion ids follow OASBUD, ``"<lesion number><patient initials>"``
        (e.g. ``"7ab"``); numbers run 1..n, a patient's lesions are numbered
        consecutively, about one patient in ten has two lesions; ``key`` is
        the id and ``patient`` the initials (lower case). ``synthetic=True``.

    Examples
    --------
    >>> ds, cues = simulate_dataset(3, seed=0, depth_range_mm=(25.0, 25.0), return_models=True)
    >>> list(cues.columns[:4])
    ['key', 'patient', 'label', 'birads']
    """
    n = int(n_lesions)
    if n != n_lesions or n < 1:
        raise ValueError(f"simulate_dataset: n_lesions must be a positive integer, got {n_lesions!r}")
    if not 0 <= malignant_fraction <= 1:
        raise ValueError(f"simulate_dataset: malignant_fraction must be in [0, 1], got {malignant_fraction}")
    s = _system(system)
    labels, owners = patient_assignment(n, seed=seed, malignant_fraction=malignant_fraction)
    owners = owners.tolist()
    _, lesion_ss = np.random.SeedSequence(int(seed)).spawn(2)
    children = lesion_ss.spawn(n)

    def one(i: int):
        model_ss, scan_ss = children[i].spawn(2)
        model = random_lesion_model(int(labels[i]), seed=model_ss)
        lid = f"{i + 1}{owners[i]}"
        les = simulate_lesion(
            model,
            seed=scan_ss,
            lesion_id=lid,
            patient=owners[i],
            n_nonecho_rows=n_nonecho_rows,
            depth_range_mm=depth_range_mm,
            acquisition=acquisition,
            system=s,
        )
        return les, {"key": lid, "patient": owners[i], **model.cues()}

    n_workers = max(1, min(n, int(workers) if workers is not None else (os.cpu_count() or 1)))
    with ThreadPoolExecutor(n_workers, thread_name_prefix="uslib-phantom") as pool:
        done = pool.map(one, range(n))  # in lesion order
        if progress:
            from tqdm.auto import tqdm

            done = tqdm(done, total=n, desc="phantom", unit="lesion")
        results = list(done)
    lesions = [les for les, _ in results]
    rows = [row for _, row in results]
    source = (
        f"uslib.phantom.simulate_dataset(n_lesions={n}, seed={int(seed)}, n_nonecho_rows={int(n_nonecho_rows)}, "
        f"malignant_fraction={malignant_fraction}, depth_range_mm={tuple(float(v) for v in depth_range_mm)}) "
        f"phantom v{PHANTOM_VERSION}, uslib {__version__}; synthetic convolution-model phantom"
    )
    ds = Dataset(lesions, source=source, synthetic=True)
    if return_models:
        import pandas as pd

        return ds, pd.DataFrame(rows)
    return ds
