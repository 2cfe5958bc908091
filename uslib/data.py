"""The data model and the OASBUD data layer.

The classes here describe raw ultrasound data as the OASBUD release stores it:
a :class:`Dataset` of :class:`Lesion` s, each with two orthogonal :class:`Scan` s
of beamformed RF lines and a radiologist's region of interest, acquired with
one :class:`Acquisition` (probe and sampling geometry).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

__all__ = [
    "Acquisition",
    "OASBUD_ACQUISITION",
    "Scan",
    "Lesion",
    "Dataset",
    "DatasetError",
]


class DatasetError(ValueError):
    """Raised for malformed input data; the message names the record and field."""


@dataclass(frozen=True)
class Acquisition:
    """Sampling geometry of a linear-array RF acquisition.

    Parameters
    ----------
    fs_hz : float
        RF sampling frequency in Hz.
    f0_hz : float
        Transmit centre frequency in Hz.
    c_m_s : float
        Assumed speed of sound in m/s.
    n_lines : int
        Number of scan lines (columns of the RF matrix).
    width_mm : float
        Lateral extent from the first to the last scan line in mm.

    Examples
    --------
    >>> acq = Acquisition()
    >>> round(acq.dz_mm, 5), round(acq.dx_mm, 5)
    (0.01925, 0.07466)
    """

    fs_hz: float = 40e6
    f0_hz: float = 10e6
    c_m_s: float = 1540.0
    n_lines: int = 510
    width_mm: float = 38.0

    @property
    def dz_mm(self) -> float:
        """Axial sample spacing c / (2 fs) in mm."""
        return self.c_m_s / (2.0 * self.fs_hz) * 1e3

    @property
    def dx_mm(self) -> float:
        """Lateral line spacing width / (n_lines - 1) in mm."""
        return self.width_mm / (self.n_lines - 1)

    @property
    def wavelength_mm(self) -> float:
        """Wavelength c / f0 at the centre frequency in mm."""
        return self.c_m_s / self.f0_hz * 1e3


#: Ultrasonix SonixTouch with the L14-5/38 probe, as used for OASBUD.
OASBUD_ACQUISITION = Acquisition()


@dataclass(eq=False)
class Scan:
    """One RF frame and its lesion mask.

    Parameters
    ----------
    rf : ndarray, shape (n_samples, n_lines)
        Beamformed RF lines; rows are depth samples, columns are scan lines.
    roi : ndarray of bool, shape (n_samples, n_lines)
        Lesion mask, True inside the lesion.
    acquisition : Acquisition
        Sampling geometry.
    """

    rf: np.ndarray
    roi: np.ndarray
    acquisition: Acquisition = OASBUD_ACQUISITION

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.rf.shape)

    @property
    def depth_mm(self) -> np.ndarray:
        """Depth of each row in mm, from the first stored sample."""
        return np.arange(self.rf.shape[0]) * self.acquisition.dz_mm

    @property
    def lateral_mm(self) -> np.ndarray:
        """Lateral position of each scan line in mm, from the first line."""
        return np.arange(self.rf.shape[1]) * self.acquisition.dx_mm

    def extent_mm(self) -> tuple[float, float, float, float]:
        """(left, right, bottom, top) in mm, for ``imshow(extent=...)``."""
        n_z, n_x = self.rf.shape
        a = self.acquisition
        return (0.0, (n_x - 1) * a.dx_mm, (n_z - 1) * a.dz_mm, 0.0)


@dataclass(eq=False)
class Lesion:
    """A breast lesion with its scans.

    Parameters
    ----------
    id : str
        Identifier as stored in the source file (may repeat in OASBUD).
    key : str
        Unique key within the data set (``id``, suffixed where ids repeat).
    patient : str
        Patient key; lesions of one patient never straddle CV folds.
    label : int
        0 benign, 1 malignant.
    birads : str
        BI-RADS category ("3", "4a", "4b", "4c", "5").
    scans : tuple of Scan
        Usually two orthogonal scans.
    """

    id: str
    key: str
    patient: str
    label: int
    birads: str
    scans: tuple[Scan, ...] = field(default_factory=tuple)


class Dataset(Sequence[Lesion]):
    """An ordered, immutable collection of lesions with unique keys.

    Parameters
    ----------
    lesions : sequence of Lesion
    source : str
        Where the data came from (a path, or a description of a simulation).
    synthetic : bool
        True for simulated data; everything shown from it is labelled so.
    """

    def __init__(self, lesions: Sequence[Lesion], *, source: str = "", synthetic: bool = False):
        self.lesions: tuple[Lesion, ...] = tuple(lesions)
        keys = [les.key for les in self.lesions]
        if len(set(keys)) != len(keys):
            dup = sorted({k for k in keys if keys.count(k) > 1})
            raise DatasetError(f"lesion keys must be unique; repeated: {dup}")
        self._index = {k: i for i, k in enumerate(keys)}
        self.source = source
        self.synthetic = bool(synthetic)
        self._fingerprint: str | None = None

    # Sequence protocol -------------------------------------------------
    def __len__(self) -> int:
        return len(self.lesions)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, str):
            return self.lesions[self._index[i]]
        return self.lesions[i]

    def __iter__(self) -> Iterator[Lesion]:
        return iter(self.lesions)

    def __repr__(self) -> str:
        kind = "synthetic" if self.synthetic else "real"
        return f"Dataset({len(self)} lesions, {int(self.labels.sum())} malignant, {kind}, source={self.source!r})"

    # Convenience -------------------------------------------------------
    @property
    def keys(self) -> list[str]:
        return [les.key for les in self.lesions]

    @property
    def labels(self) -> np.ndarray:
        return np.array([les.label for les in self.lesions], dtype=int)

    @property
    def patients(self) -> np.ndarray:
        return np.array([les.patient for les in self.lesions], dtype=object)

    def summary(self):
        """One row per lesion: key, id, patient, label, class, BI-RADS, scan shapes.

        Returns
        -------
        pandas.DataFrame
        """
        import pandas as pd

        rows = []
        for les in self.lesions:
            rows.append(
                {
                    "key": les.key,
                    "id": les.id,
                    "patient": les.patient,
                    "label": les.label,
                    "class": "malignant" if les.label == 1 else "benign",
                    "birads": les.birads,
                    "n_scans": len(les.scans),
                    "shapes": ", ".join(f"{s.rf.shape[0]}×{s.rf.shape[1]}" for s in les.scans),
                }
            )
        return pd.DataFrame(rows)

    @property
    def fingerprint(self) -> str:
        """SHA-256 over every lesion's metadata, RF and ROI bytes (hex, 16 chars).

        Used as the data set's part of every cache key.
        """
        if self._fingerprint is None:
            h = hashlib.sha256()
            for les in self.lesions:
                h.update(repr((les.key, les.patient, int(les.label), les.birads, len(les.scans))).encode())
                for s in les.scans:
                    rf = np.ascontiguousarray(s.rf)
                    h.update(repr((rf.dtype.str, rf.shape, s.acquisition)).encode())
                    h.update(rf.tobytes())
                    h.update(np.packbits(np.ascontiguousarray(s.roi, dtype=bool)).tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint
