"""The data model: ultrasound RF data as lesions, scans and one acquisition geometry.

The classes here describe raw ultrasound data as the OASBUD release stores it:
a :class:`Dataset` of :class:`Lesion` s, each with two orthogonal :class:`Scan` s
of beamformed RF lines and a radiologist's region of interest, acquired with
one :class:`Acquisition` (probe and sampling geometry). :func:`patient_key`
derives a patient from a lesion id (OASBUD has no patient field), and
:func:`lesion_feature_table` averages per-scan features over a lesion.

Reading and writing the OASBUD file (its schema, quirks and geometry checks)
is :mod:`uslib.oasbud`'s job; the phantom (:mod:`uslib.phantom`) builds the
same classes.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Sequence

import numpy as np

__all__ = [
    "Acquisition",
    "OASBUD_ACQUISITION",
    "Scan",
    "Lesion",
    "Dataset",
    "DatasetError",
    "PULSE_CYCLES",
    "MIN_LINES",
    "BIRADS_CATEGORIES",
    "patient_key",
    "lesion_feature_table",
]


class DatasetError(ValueError):
    """Raised for malformed input data; the message names the record and field."""


#: Length of one pulse-echo pulse in cycles of the centre frequency: a scan
#: with fewer depth rows than ``ceil(PULSE_CYCLES · fs / f0)`` is refused.
PULSE_CYCLES: float = 4.0

#: Fewest scan lines (RF columns) a loaded scan may have.
MIN_LINES: int = 16


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
    >>> round(acq.dz_mm, 5), round(acq.dx_mm, 5), acq.pulse_samples
    (0.01925, 0.07466, 16)
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

    @property
    def pulse_samples(self) -> int:
        """One pulse length in RF samples, ``ceil(PULSE_CYCLES · fs / f0)``.

        The fewest depth rows :func:`uslib.oasbud.load_oasbud` accepts in a scan (16 for
        OASBUD: 4 cycles of 10 MHz sampled at 40 MHz).
        """
        return int(math.ceil(round(PULSE_CYCLES * self.fs_hz / self.f0_hz, 9)))


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
        self._content: dict[str, str] | None = None

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

    def _repr_pretty_(self, p, cycle: bool) -> None:
        """IPython's display (a notebook's ``ds``): the repr wrapped at spaces to 88 columns, never mid-word."""
        import textwrap

        p.text(
            textwrap.fill(
                repr(self), width=88, subsequent_indent="    ", break_long_words=False, break_on_hyphens=False
            )
        )

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
    def content_digests(self) -> dict[str, str]:
        """SHA-256 of each lesion's image inputs: RF and ROI bytes and acquisition of its scans.

        Labels, patients and BI-RADS are left out: they do not change an
        image, so features keyed by these digests survive a regrouping of
        patients or a corrected label. Computed once per data set.

        Returns
        -------
        dict
            lesion key -> hex digest (16 characters).
        """
        if self._content is None:
            out = {}
            for les in self.lesions:
                h = hashlib.sha256()
                for s in les.scans:
                    rf = np.ascontiguousarray(s.rf)
                    h.update(repr((rf.dtype.str, rf.shape, s.acquisition)).encode())
                    h.update(rf.tobytes())
                    h.update(np.packbits(np.ascontiguousarray(s.roi, dtype=bool)).tobytes())
                out[les.key] = h.hexdigest()[:16]
            self._content = out
        return self._content

    def use_content_digests(self, digests: Mapping[str, str]) -> None:
        """Adopt :attr:`content_digests` computed earlier for the same content (a memo).

        The caller vouches that ``digests`` were computed from identical
        inputs (e.g. keyed by the SHA-256 of the file this data set was read
        from); only their shape is checked here.

        Raises
        ------
        ValueError
            If the keys are not exactly this data set's lesion keys, or a
            digest is not 16 hexadecimal characters.

        Examples
        --------
        >>> ds = Dataset([])
        >>> ds.use_content_digests({})
        >>> ds.use_content_digests({"x": "0123456789abcdef"})
        Traceback (most recent call last):
        ...
        ValueError: content digests name lesions ['x'], not this data set's []
        """
        digests = {str(k): str(v) for k, v in dict(digests).items()}
        if sorted(digests) != sorted(self.keys):
            raise ValueError(
                f"content digests name lesions {sorted(digests)[:5]}, not this data set's {sorted(self.keys)[:5]}"
            )
        bad = [k for k, v in digests.items() if not re.fullmatch(r"[0-9a-f]{16}", v)]
        if bad:
            raise ValueError(f"content digests of {bad[:5]} are not 16 hexadecimal characters")
        self._content = {k: digests[k] for k in self.keys}
        self._fingerprint = None

    @property
    def fingerprint(self) -> str:
        """SHA-256 over every lesion's metadata (key, patient, label, BI-RADS) and content digest.

        Used as the data set's part of every cache key that depends on
        patients or labels (results); see :attr:`content_digests` for the
        image inputs alone.
        """
        if self._fingerprint is None:
            h = hashlib.sha256()
            digests = self.content_digests
            for les in self.lesions:
                h.update(
                    repr((les.key, les.patient, int(les.label), les.birads, len(les.scans), digests[les.key])).encode()
                )
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


#: BI-RADS categories that occur in OASBUD, in order of suspicion.
BIRADS_CATEGORIES: tuple[str, ...] = ("3", "4a", "4b", "4c", "5")


def patient_key(lesion_id: str) -> str:
    """Patient key derived from an OASBUD lesion id.

    OASBUD has no patient field. Most ids are a lesion number followed by the
    patient's initials, in either case (``4lw`` and ``5lw`` are two lesions of
    one patient, ``200AT`` and ``4at`` too); a few are digits only; one carries
    a suffix such as ``_1(19GN)``. The rule:

    1. cut the id at the first ``_`` or ``(`` (``18gn_1(19GN)`` → ``18gn``);
    2. the key is every letter left, lower-cased (``18gn`` → ``gn``,
       ``200AT`` → ``at``);
    3. an id without letters is its own patient, keyed ``id:<digits>``
       (``123`` → ``id:123``).

    The rule errs toward grouping: two patients who share initials are merged
    into one. That costs a little freedom in forming cross-validation folds but
    can never leak a patient across train and test. Pass
    ``load_oasbud(..., patients=...)`` to use a known mapping instead.

    Parameters
    ----------
    lesion_id : str
        Lesion id as stored in the file.

    Returns
    -------
    str
        Patient key.

    Raises
    ------
    ValueError
        If the id is empty.

    Examples
    --------
    >>> [patient_key(i) for i in ("1mm", "4lw", "200AT", "4at", "18gn_1(19GN)", "123")]
    ['mm', 'lw', 'at', 'at', 'gn', 'id:123']
    """
    text = str(lesion_id).strip()
    if not text:
        raise ValueError("empty lesion id: cannot derive a patient key")
    base = re.split(r"[_(]", text, maxsplit=1)[0].strip()
    letters = "".join(re.findall(r"[^\W\d_]", base)).lower()
    if letters:
        return letters
    return f"id:{base or text}"


# -- reading helpers ---------------------------------------------------------


def lesion_feature_table(dataset: Sequence[Lesion], scan_features, names: Sequence[str]):
    """One row per lesion of per-scan features averaged over the lesion's scans.

    Parameters
    ----------
    dataset : Dataset or sequence of Lesion
    scan_features : callable
        ``scan_features(scan) -> dict`` with at least the keys in ``names``.
    names : sequence of str
        Feature columns, in order.

    Returns
    -------
    pandas.DataFrame
        Columns ``lesion`` (key), ``patient``, ``label``, then ``names``.

    Raises
    ------
    ValueError
        If a lesion has no scans, or ``scan_features`` raises ValueError; the
        message names the lesion and the scan.
    """
    import pandas as pd

    rows = []
    for lesion in dataset:
        if len(lesion.scans) == 0:
            raise ValueError(f"lesion {lesion.key!r}: has no scans")
        per_scan = []
        for i, scan in enumerate(lesion.scans):
            try:
                per_scan.append(scan_features(scan))
            except ValueError as exc:
                raise ValueError(f"lesion {lesion.key!r}, scan {i}: {exc}") from exc
        row = {"lesion": lesion.key, "patient": lesion.patient, "label": int(lesion.label)}
        for name in names:
            row[name] = float(np.mean([f[name] for f in per_scan]))
        rows.append(row)
    return pd.DataFrame(rows, columns=["lesion", "patient", "label", *names])
