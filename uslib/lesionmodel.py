"""The lesion model of the phantom: a latent 3-D lesion and the acoustic cues its suspiciousness drives.

One latent suspiciousness ``u`` per lesion (Beta(2, 4) benign, Beta(4, 2)
malignant) drives every cue of a :class:`LesionModel` — shape, margin,
halo or capsule, echogenicity, texture, scatterer density, attenuation,
microcalcifications and BI-RADS (:func:`birads_from_suspicion`) — each with
its own jitter (:func:`random_lesion_model`). :mod:`uslib.phantom` turns a
model into tissue maps and RF.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["LesionModel", "random_lesion_model", "birads_from_suspicion"]

_BIRADS = ("3", "4a", "4b", "4c", "5")
_BIRADS_THRESHOLDS = (0.30, 0.45, 0.60, 0.75)


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
