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
from scipy import ndimage as _ndi

from . import __version__
from .data import OASBUD_ACQUISITION, Acquisition, Dataset, Lesion, Scan
from .lesionmodel import LesionModel, birads_from_suspicion, random_lesion_model
from .speckle import (
    DEFAULT_SYSTEM,
    ImagingSystem,
    axial_pulse,
    beam_fwhm_mm,
    carrier_hz,
    convolve_psf,
    lateral_beam,
    max_lateral_halfwidth,
    psf_fwhm_mm,
    pulse_echo_psf,
    resolve_system,
    simulate_speckle,
    speckle_size_mm,
)

__all__ = [
    "PHANTOM_VERSION",
    "ImagingSystem",
    "DEFAULT_SYSTEM",
    "LesionModel",
    "axial_pulse",
    "lateral_beam",
    "beam_fwhm_mm",
    "psf_fwhm_mm",
    "carrier_hz",
    "pulse_echo_psf",
    "convolve_psf",
    "simulate_speckle",
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

_MAP_STEP = 4  # RF samples per row of the (coarser) tissue-map grid


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
    np.putmask(echo, layer(fat_b, gland_b), np.exp(f32(0.3) * fine + f32(0.25) * coarse) * (1 - f32(0.65) * fat_isl))
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
    s = resolve_system(system)
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
    pad_x = max_lateral_halfwidth(acquisition, s)
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
    s = resolve_system(system)
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
