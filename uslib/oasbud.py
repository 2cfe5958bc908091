"""The OASBUD file: reading, validating and writing it, and fetching the public release.

The functions read and write the public OASBUD file (Piotrzkowska-Wróblewska
et al. 2017, Zenodo record 545928) as the data model of :mod:`uslib.data`:
:func:`fetch_oasbud` downloads it with a checksum, :func:`load_oasbud` reads
it (or any file of the same schema, such as the synthetic phantom) into a
:class:`~uslib.data.Dataset`, :func:`save_oasbud` writes a
:class:`~uslib.data.Dataset` in the same schema, and lesions get their
patient from :func:`uslib.data.patient_key` unless a mapping is given.

:func:`fetch_oasbud` verifies the download by SHA-256 before it puts the file
in place (:mod:`uslib.download`). For rehearsals and mirrors only, the
environment variables ``USLIB_OASBUD_URL`` and ``USLIB_OASBUD_SHA256``
replace the Zenodo URL and the public file's checksum
(:func:`oasbud_source`); :func:`count_records` counts a file's lesions from
its variable headers, without reading the data.

The schema
----------
``OASBUD.mat`` is a MATLAB v5/v7 file (readable by :func:`scipy.io.loadmat`,
not HDF5) holding one variable ``data``, a 1×N struct array with fields

========== ===================================================== ===========
field      meaning                                               stored as
========== ===================================================== ===========
``id``     lesion id, e.g. ``1mm``, ``3als``, ``18gn_1(19GN)``   char
``rf1``    first scan, rows = depth samples, 510 columns         int16
``rf2``    the orthogonal scan, same layout (own depth)          int16
``roi1``   lesion mask of ``rf1``, same shape, 1 inside          uint8
``roi2``   lesion mask of ``rf2``                                uint8
``birads`` BI-RADS category ``3``, ``4a``, ``4b``, ``4c``, ``5`` char
``class``  0 benign, 1 malignant                                 uint8 (1×1)
========== ===================================================== ===========

The public release has 100 lesions (52 malignant, 48 benign).

Quirks the loader handles
-------------------------
* **Non-echo rows.** The first rows of every RF matrix hold constant values
  that are not echoes; left in, they dominate the maximum amplitude used for
  log compression. :func:`load_oasbud` drops the first ``skip_samples`` rows
  (default 20, as the data set authors' code does) of every RF matrix *and* its
  ROI, so depth 0 of a loaded :class:`~uslib.data.Scan` is the first kept sample.
* **No patient field.** Lesions of one patient must stay on one side of every
  cross-validation split, but the file only has lesion ids. :func:`uslib.data.patient_key`
  derives a patient from the id by a documented rule that errs toward grouping;
  ``load_oasbud(patients=...)`` overrides it with a mapping or a CSV file.
* **A repeated id.** One id occurs twice, for two different lesions. Both are
  kept; the later one gets the key ``<id>#2`` and a :class:`UserWarning` names
  the id. The file is not refused.
* **Layout.** Rows are depth, so envelope detection (Hilbert transform) runs
  along axis 0; one public Python loader ran it along the scan lines.
* **MATLAB v7.3.** A file re-saved by MATLAB as v7.3 is HDF5, which
  :func:`scipy.io.loadmat` cannot read; :func:`load_oasbud` refuses it with a
  message saying how to convert it (``save -v7``).

Geometry checks
---------------
The file stores no sampling geometry, yet every distance in mm (axial and
lateral spacing, crops, margins, speckle size) comes from the
:class:`~uslib.data.Acquisition` the scans are read with. :func:`load_oasbud` therefore
refuses an RF matrix whose geometry cannot be the acquisition's, naming the
record (index and id), the field (``rf1``/``rf2``) and both numbers:

* **Line count.** The columns of every RF matrix must equal
  ``acquisition.n_lines``. Without a ``uslib`` variable (the public file) the
  acquisition is :data:`uslib.data.OASBUD_ACQUISITION` (510 lines across 38 mm), so an RF
  with any other number of lines is an error: its lateral spacing would
  silently be wrong. The acquisition is never guessed from the data. A file
  whose ``uslib`` variable declares its own acquisition (as
  :func:`save_oasbud` writes) is read with that geometry, the RF must match
  *it*, and a :class:`UserWarning` names the file, the first record and the
  declared geometry when it differs from :data:`uslib.data.OASBUD_ACQUISITION`.
* **Depth.** After ``skip_samples`` rows are dropped, a scan needs at least
  one pulse length of rows, ``acquisition.pulse_samples`` =
  ``ceil(PULSE_CYCLES · fs / f0)`` (:data:`uslib.data.PULSE_CYCLES` = 4 cycles at the
  centre frequency: 16 samples, 0.31 mm, for OASBUD; the phantom's
  pulse-echo kernel spans 17). Fewer rows cannot hold one echo.
* **Lines.** A scan needs at least :data:`uslib.data.MIN_LINES` (16) scan lines.
* **ROI.** The ROI must cover at least one pixel, hence at least one scan
  line, after the rows are dropped.

Files written by :func:`save_oasbud` carry one more top-level variable,
``uslib`` (a struct with ``format``, ``version``, ``synthetic`` 0/1,
``source``, ``keys``, ``patients`` and ``acquisition``), so that a data set
survives the round trip with its keys, patients, provenance and synthetic
flag. The public file has no such variable; the loader uses it when present.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .data import (
    BIRADS_CATEGORIES,
    MIN_LINES,
    OASBUD_ACQUISITION,
    PULSE_CYCLES,
    Acquisition,
    Dataset,
    DatasetError,
    Lesion,
    Scan,
    patient_key,
)
from .envvars import read
from .store import atomic_path

__all__ = [
    "OASBUD_FIELDS",
    "OASBUD_URL",
    "OASBUD_SHA256",
    "OASBUD_SIZE_BYTES",
    "OASBUD_N_LESIONS",
    "OASBUD_URL_ENV",
    "OASBUD_SHA256_ENV",
    "oasbud_source",
    "default_oasbud_dir",
    "count_records",
    "load_oasbud",
    "save_oasbud",
    "fetch_oasbud",
]

#: Fields of the ``data`` struct array, in the order of the public file.
OASBUD_FIELDS: tuple[str, ...] = ("id", "rf1", "rf2", "roi1", "roi2", "birads", "class")

#: Public download of the release (Zenodo record 545928).
OASBUD_URL = "https://zenodo.org/record/545928/files/OASBUD.mat"
#: SHA-256 of ``OASBUD.mat``.
OASBUD_SHA256 = "698eadeabe451d8af3b6c8e205d2a8cbc590ab1275d188614916bceb501bcd48"
#: Size of ``OASBUD.mat`` in bytes.
OASBUD_SIZE_BYTES = 296_800_010
#: Lesions in the public ``OASBUD.mat`` (52 malignant, 48 benign).
OASBUD_N_LESIONS = 100
#: Environment variables overriding the download's URL and SHA-256 (rehearsals, mirrors): :func:`oasbud_source`.
OASBUD_URL_ENV = "USLIB_OASBUD_URL"
OASBUD_SHA256_ENV = "USLIB_OASBUD_SHA256"

_META_VAR = "uslib"
_META_FORMAT = 1
_INT16 = np.iinfo(np.int16)


def _as_str(value: Any, where: str, *, allow_empty: bool = False) -> str:
    """A MATLAB char value (as loadmat returns it) as a Python str."""
    if isinstance(value, str):
        text = value
    else:
        arr = np.asarray(value)
        if arr.dtype.kind != "U":
            raise DatasetError(f"{where} must be a string, got a {arr.dtype} array of shape {arr.shape}")
        if arr.size == 0:
            text = ""
        elif arr.size == 1:
            text = str(arr.reshape(-1)[0])
        else:
            raise DatasetError(f"{where} must be a single string, got {arr.size} rows of text")
    text = text.strip()
    if not text and not allow_empty:
        raise DatasetError(f"{where} is empty")
    return text


def _as_cellstr(value: Any, n: int, where: str) -> list[str]:
    """A MATLAB cell array of n strings as a list of str."""
    arr = np.asarray(value)
    if arr.dtype != object:
        if n == 1:  # a 1-element cell may arrive as the bare string
            return [_as_str(arr, f"{where}[0]")]
        raise DatasetError(f"{where} must be a cell array of strings, got a {arr.dtype} array")
    items = arr.reshape(-1, order="F")
    if items.size != n:
        raise DatasetError(f"{where} has {items.size} entries for {n} records")
    return [_as_str(v, f"{where}[{i}]") for i, v in enumerate(items)]


def _read_mat(path: Path) -> dict[str, Any]:
    """loadmat with every failure turned into a DatasetError naming the file."""
    import scipy.io

    try:
        return scipy.io.loadmat(
            path, variable_names=["data", _META_VAR], squeeze_me=False, struct_as_record=True, chars_as_strings=True
        )
    except NotImplementedError as exc:
        raise DatasetError(
            f"{path}: is a MATLAB v7.3 (HDF5) MAT file, which scipy.io.loadmat cannot read. "
            "Convert it to v7 in MATLAB or GNU Octave, e.g. "
            f"`load('{path.name}'); save('-v7', 'OASBUD_v7.mat', 'data')`, and load that file."
        ) from exc
    except MemoryError:
        raise
    except Exception as exc:  # scipy raises ValueError, OSError, MatReadError, zlib.error, ...
        with open(path, "rb") as fh:
            head = fh.read(8)
        hint = " (it is an HDF5 file without a MATLAB header)" if head.startswith(b"\x89HDF") else ""
        raise DatasetError(
            f"{path}: not a readable MATLAB v4/v5/v7 MAT file{hint}: {type(exc).__name__}: {exc}"
        ) from exc


def _field_names(path: Path, mat: dict[str, Any]) -> np.ndarray:
    if "data" not in mat:
        import scipy.io

        try:
            found = sorted(name for name, _, _ in scipy.io.whosmat(path))
        except Exception:  # pragma: no cover - the file was just read
            found = []
        raise DatasetError(f"{path}: no variable 'data' (variables found: {found or 'none'})")
    data = mat["data"]
    if not isinstance(data, np.ndarray) or data.dtype.names is None:
        raise DatasetError(
            f"{path}: variable 'data' must be a struct array, got {type(data).__name__} {getattr(data, 'dtype', '')}"
        )
    if data.size == 0:
        raise DatasetError(f"{path}: variable 'data' holds no records")
    records = data.reshape(-1, order="F")
    missing = [f for f in OASBUD_FIELDS if f not in data.dtype.names]
    if missing:
        rid = "?"
        if "id" in data.dtype.names:
            try:
                rid = repr(_as_str(records[0]["id"], "id", allow_empty=True))
            except DatasetError:
                pass
        fields = ", ".join(repr(f) for f in missing)
        raise DatasetError(
            f"{path.name}: record 0 (id {rid}): missing field {fields} (the schema needs {', '.join(OASBUD_FIELDS)})"
        )
    return records


def _read_label(value: Any, where: str) -> int:
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf" or arr.size != 1:
        raise DatasetError(
            f"{where}, field 'class' must be one number (0 or 1), got a {arr.dtype} array of shape {arr.shape}"
        )
    v = arr.reshape(-1)[0]
    if v not in (0, 1):
        raise DatasetError(f"{where}, field 'class' must be 0 (benign) or 1 (malignant), got {v!r}")
    return int(v)


def _read_birads(value: Any, where: str) -> str:
    text = _as_str(value, f"{where}, field 'birads'").lower()
    if text not in BIRADS_CATEGORIES:
        raise DatasetError(f"{where}, field 'birads' must be one of {list(BIRADS_CATEGORIES)}, got {text!r}")
    return text


def _geometry(acq: Acquisition) -> str:
    """An acquisition's geometry in words, for messages."""
    return (
        f"{acq.n_lines} lines across {acq.width_mm:g} mm, dx {acq.dx_mm:.4g} mm; "
        f"fs {acq.fs_hz / 1e6:g} MHz, f0 {acq.f0_hz / 1e6:g} MHz, c {acq.c_m_s:g} m/s"
    )


def _refuse_flat_rf(rf: np.ndarray, where: str, skip: int) -> None:
    """Refuse RF with no echo at all: every sample zero, or every sample the same value.

    Such a scan has no envelope to compress (all zero) or compresses to one
    grey level (constant), so every image of it would be blank or white.
    """
    lo, hi = rf.min(), rf.max()
    if lo == hi:
        what = "all zero" if hi == 0 else f"constant (every sample {hi.item()!r})"
        after = f" after skip_samples={skip}" if skip else ""
        raise DatasetError(f"{where} is {what}{after}: no echo signal to reconstruct")


def _read_scan(rf: Any, roi: Any, j: int, where: str, skip: int, acquisition: Acquisition, declared: bool) -> Scan:
    rf_name, roi_name = f"rf{j}", f"roi{j}"
    rf = np.asarray(rf)
    roi = np.asarray(roi)
    if rf.dtype.kind not in "iuf":
        raise DatasetError(f"{where}, field '{rf_name}' must be an integer or float array, got {rf.dtype}")
    if rf.ndim != 2 or rf.size == 0:
        raise DatasetError(
            f"{where}, field '{rf_name}' must be a non-empty 2-D (n_samples, n_lines) array, got shape {rf.shape}"
        )
    if rf.dtype.kind == "f" and not np.all(np.isfinite(rf)):
        raise DatasetError(f"{where}, field '{rf_name}' contains NaN or Inf")
    if roi.dtype.kind not in "biuf":
        raise DatasetError(f"{where}, field '{roi_name}' must be a 0/1 numeric array, got {roi.dtype}")
    if roi.shape != rf.shape:
        raise DatasetError(f"{where}, field '{roi_name}' has shape {roi.shape}, but '{rf_name}' has shape {rf.shape}")
    if not np.all((roi == 0) | (roi == 1)):
        bad = np.unique(roi[(roi != 0) & (roi != 1)])[:5]
        raise DatasetError(f"{where}, field '{roi_name}' must hold only 0 and 1, found {bad.tolist()}")
    if rf.shape[0] <= skip:
        raise DatasetError(f"{where}, field '{rf_name}' has {rf.shape[0]} rows, none left after skip_samples={skip}")
    _refuse_flat_rf(rf[skip:], f"{where}, field '{rf_name}'", skip)
    n_rows, n_lines = rf.shape[0] - skip, rf.shape[1]
    if n_lines != acquisition.n_lines:
        if declared:
            whose = "the file's own acquisition (variable 'uslib')"
            hint = "the RF and the declared acquisition disagree"
        else:
            whose = "the OASBUD acquisition"
            hint = (
                "the lateral spacing would be wrong; a file of another geometry must declare its "
                f"acquisition in a '{_META_VAR}' variable, as save_oasbud writes"
            )
        raise DatasetError(
            f"{where}, field '{rf_name}' has {n_lines} scan lines (columns), but {whose} "
            f"has {acquisition.n_lines} ({_geometry(acquisition)}): {hint}"
        )
    if n_lines < MIN_LINES:
        raise DatasetError(
            f"{where}, field '{rf_name}' has {n_lines} scan lines (columns), "
            f"fewer than the minimum of {MIN_LINES} (MIN_LINES)"
        )
    if n_rows < acquisition.pulse_samples:
        raise DatasetError(
            f"{where}, field '{rf_name}' has {n_rows} depth rows after skip_samples={skip}, fewer than one "
            f"pulse length of {acquisition.pulse_samples} samples (PULSE_CYCLES={PULSE_CYCLES:g} cycles at "
            f"f0 {acquisition.f0_hz / 1e6:g} MHz, fs {acquisition.fs_hz / 1e6:g} MHz)"
        )
    mask = roi[skip:].astype(bool)
    if not mask.any():
        after = f" after dropping the first {skip} rows" if skip and np.any(roi) else ""
        raise DatasetError(f"{where}, field '{roi_name}' is empty{after}")
    kept = rf[skip:]
    kept.flags.writeable = False
    mask.flags.writeable = False
    return Scan(kept, mask, acquisition)


def _read_meta(mat: dict[str, Any], n: int, path: Path) -> dict[str, Any] | None:
    """The optional ``uslib`` variable written by :func:`save_oasbud`."""
    if _META_VAR not in mat:
        return None
    where = f"{path.name}: variable '{_META_VAR}'"
    raw = mat[_META_VAR]
    if not isinstance(raw, np.ndarray) or raw.dtype.names is None or raw.size != 1:
        raise DatasetError(f"{where} must be a 1×1 struct")
    rec = raw.reshape(-1)[0]
    names = raw.dtype.names
    for f in ("synthetic", "source", "keys", "patients"):
        if f not in names:
            raise DatasetError(f"{where}: missing field '{f}'")
    synthetic = np.asarray(rec["synthetic"])
    if synthetic.dtype.kind not in "biuf" or synthetic.size != 1 or synthetic.reshape(-1)[0] not in (0, 1):
        raise DatasetError(f"{where}, field 'synthetic' must be 0 or 1")
    meta: dict[str, Any] = {
        "synthetic": bool(synthetic.reshape(-1)[0]),
        "source": _as_str(rec["source"], f"{where}, field 'source'", allow_empty=True),
        "keys": _as_cellstr(rec["keys"], n, f"{where}, field 'keys'"),
        "patients": _as_cellstr(rec["patients"], n, f"{where}, field 'patients'"),
        "acquisition": OASBUD_ACQUISITION,
        "declared": False,
    }
    dup = sorted({k for k in meta["keys"] if meta["keys"].count(k) > 1})
    if dup:
        raise DatasetError(f"{where}, field 'keys' repeats {dup}")
    if "acquisition" in names:
        acq = np.asarray(rec["acquisition"])
        fields = ("fs_hz", "f0_hz", "c_m_s", "n_lines", "width_mm")
        if acq.dtype.names is None or acq.size != 1 or not set(fields) <= set(acq.dtype.names):
            raise DatasetError(f"{where}, field 'acquisition' must be a struct with fields {fields}")
        a = acq.reshape(-1)[0]
        try:
            vals = [float(np.asarray(a[f]).reshape(-1)[0]) for f in fields]
        except (IndexError, TypeError, ValueError) as exc:
            raise DatasetError(f"{where}, field 'acquisition' must hold one number per field") from exc
        bad = [f"{f}={v!r}" for f, v in zip(fields, vals) if not (math.isfinite(v) and v > 0)]
        if bad:
            raise DatasetError(f"{where}, field 'acquisition' must hold positive finite numbers, got " + ", ".join(bad))
        if vals[3] != int(vals[3]) or vals[3] < 2:
            raise DatasetError(
                f"{where}, field 'acquisition': n_lines must be an integer of at least 2, got {vals[3]:g}"
            )
        meta["acquisition"] = Acquisition(vals[0], vals[1], vals[2], int(vals[3]), vals[4])
        meta["declared"] = True
    return meta


def _read_patient_map(patients: Mapping[str, str] | str | os.PathLike) -> tuple[dict[str, str], str]:
    """The ``patients=`` override as a dict, and a description for messages."""
    if isinstance(patients, Mapping):
        raw, what = dict(patients), "the patients mapping"
        items = list(raw.items())
    else:
        csv_path = Path(patients)
        what = f"patients CSV {csv_path}"
        if not csv_path.is_file():
            raise FileNotFoundError(f"{what}: no such file")
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = [c.strip() for c in (reader.fieldnames or [])]
            if "id" not in cols or "patient" not in cols:
                raise DatasetError(f"{what}: needs columns 'id' and 'patient', found {cols}")
            reader.fieldnames = cols
            items = [(row["id"], row["patient"]) for row in reader]
    mapping: dict[str, str] = {}
    for n, (k, v) in enumerate(items):
        k = "" if k is None else str(k).strip()
        v = "" if v is None else str(v).strip()
        if not k or not v:
            raise DatasetError(f"{what}: entry {n} has an empty id or patient ({k!r}, {v!r})")
        if k in mapping and mapping[k] != v:
            raise DatasetError(f"{what}: id {k!r} is given two patients, {mapping[k]!r} and {v!r}")
        mapping[k] = v
    return mapping, what


def _unique_keys(ids: list[str], path: Path) -> list[str]:
    """Keys equal to the ids, later repeats suffixed ``#2``, ``#3``, ... (with a warning)."""
    taken = set(ids)
    first: dict[str, int] = {}
    seen: dict[str, int] = {}
    keys = []
    for i, rid in enumerate(ids):
        if rid not in seen:
            seen[rid], first[rid] = 1, i
            keys.append(rid)
            continue
        seen[rid] += 1
        n = seen[rid]
        key_ = f"{rid}#{n}"
        while key_ in taken:
            n += 1
            key_ = f"{rid}#{n}"
        taken.add(key_)
        keys.append(key_)
        warnings.warn(
            f"{path.name}: lesion id {rid!r} occurs more than once (records {first[rid]} and {i}); "
            f"keeping both, record {i} as key {key_!r}",
            UserWarning,
            stacklevel=3,
        )
    return keys


def load_oasbud(
    path: str | os.PathLike, *, skip_samples: int = 20, patients: Mapping[str, str] | str | os.PathLike | None = None
) -> Dataset:
    """Read an OASBUD-schema MAT file into a :class:`Dataset`.

    Parameters
    ----------
    path : str or path-like
        A MAT file (v5/v7) with the ``data`` struct array described in the
        module docstring: the public ``OASBUD.mat`` or one written by
        :func:`save_oasbud`.
    skip_samples : int, default 20
        Number of leading rows (depth samples) dropped from every RF matrix and
        its ROI: OASBUD's first rows are constant non-echo values. Use 0 to
        keep the file's arrays as they are.
    patients : mapping or str or path-like, optional
        Patient of each lesion, overriding both :func:`patient_key` and the
        patients stored by :func:`save_oasbud`: a mapping, or a CSV file with
        columns ``id,patient``. Entries are looked up by lesion key first
        (so ``"18gn#2"`` can single out a repeated id), then by id. A lesion
        missing from the mapping is an error.

    Returns
    -------
    Dataset
        One :class:`Lesion` per record, in file order, each with two
        :class:`Scan` s: ``rf`` of shape ``(n_samples - skip_samples, n_lines)``
        in the stored dtype (int16 for OASBUD), ``roi`` bool of the same shape,
        both read-only. Keys are the ids, a repeated id suffixed ``#2``;
        ``source`` is the path (or the source recorded by :func:`save_oasbud`);
        ``synthetic`` is False unless the file records otherwise.

    Raises
    ------
    FileNotFoundError
        If ``path`` (or the patients CSV) does not exist.
    DatasetError
        If the file is not a readable MAT file, is MATLAB v7.3 (HDF5; convert
        it with ``save -v7``), lacks ``data`` or one of its fields, or a record
        is malformed: the message names the record (index and id) and field.
        Checked per record: ``id`` a non-empty string; ``class`` one number,
        0 or 1; ``birads`` one of :data:`BIRADS_CATEGORIES`; ``rf1``/``rf2``
        non-empty 2-D integer or finite float arrays with more than
        ``skip_samples`` rows; ``roi1``/``roi2`` numeric, only 0 and 1, the
        shape of their RF, not empty after skipping rows. Geometry (see
        "Geometry checks" in the module docstring): the RF has exactly
        ``acquisition.n_lines`` columns (510 unless the file's ``uslib``
        variable declares another acquisition), at least :data:`MIN_LINES`
        of them, and at least ``acquisition.pulse_samples`` rows left after
        ``skip_samples`` (16 for OASBUD). A declared acquisition must hold
        positive finite numbers and an integer ``n_lines`` of at least 2.

    Warns
    -----
    UserWarning
        For each repeated lesion id (both lesions are kept, under unique keys).
        Once per file whose ``uslib`` variable declares an acquisition other
        than :data:`OASBUD_ACQUISITION`: the scans are read with the declared
        geometry, and the message names the file, the first record and both
        geometries.

    Examples
    --------
    >>> import tempfile, os
    >>> rf = np.arange(40 * 510, dtype=np.int16).reshape(40, 510) % 97
    >>> roi = np.zeros((40, 510), bool); roi[25:, 100:200] = True
    >>> scans = (Scan(rf, roi), Scan(rf, roi))
    >>> ds = Dataset([Lesion("4lw", "4lw", "lw", 1, "4c", scans)], source="example")
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = save_oasbud(ds, os.path.join(tmp, "x.mat"))
    ...     back = load_oasbud(path, skip_samples=20)
    >>> back[0].scans[0].rf.shape, back[0].patient, back[0].birads
    ((20, 510), 'lw', '4c')
    """
    path = Path(path)
    skip = int(skip_samples)
    if skip != skip_samples or skip < 0:
        raise ValueError(f"skip_samples must be a non-negative integer, got {skip_samples!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (fetch the public data with uslib.oasbud.fetch_oasbud())")
    mat = _read_mat(path)
    records = _field_names(path, mat)
    n = len(records)
    meta = _read_meta(mat, n, path)
    acquisition = meta["acquisition"] if meta else OASBUD_ACQUISITION
    declared = bool(meta and meta["declared"])

    ids: list[str] = []
    parsed = []
    for i, rec in enumerate(records):
        rid = _as_str(rec["id"], f"{path.name}: record {i}, field 'id'")
        where = f"{path.name}: record {i} (id {rid!r})"
        label = _read_label(rec["class"], where)
        birads = _read_birads(rec["birads"], where)
        scans = tuple(_read_scan(rec[f"rf{j}"], rec[f"roi{j}"], j, where, skip, acquisition, declared) for j in (1, 2))
        ids.append(rid)
        parsed.append((label, birads, scans))
    del mat, records
    if acquisition != OASBUD_ACQUISITION:
        others = f" and the other {n - 1} record{'s' if n > 2 else ''} use" if n > 1 else " uses"
        warnings.warn(
            f"{path.name}: record 0 (id {ids[0]!r}){others} the file's own acquisition from variable "
            f"'{_META_VAR}' ({_geometry(acquisition)}), not the OASBUD one ({_geometry(OASBUD_ACQUISITION)})",
            UserWarning,
            stacklevel=2,
        )

    keys = meta["keys"] if meta else _unique_keys(ids, path)
    if patients is not None:
        mapping, what = _read_patient_map(patients)
        pats = []
        for i, (rid, k) in enumerate(zip(ids, keys)):
            p = mapping.get(k, mapping.get(rid))
            if p is None:
                raise DatasetError(f"{path.name}: record {i} (id {rid!r}): no patient for id {rid!r} in {what}")
            pats.append(p)
    elif meta:
        pats = meta["patients"]
    else:
        pats = [patient_key(rid) for rid in ids]

    lesions = [
        Lesion(id=rid, key=k, patient=p, label=label, birads=birads, scans=scans)
        for rid, k, p, (label, birads, scans) in zip(ids, keys, pats, parsed)
    ]
    source = meta["source"] if meta and meta["source"] else str(path)
    return Dataset(lesions, source=source, synthetic=bool(meta and meta["synthetic"]))


# -- writing -----------------------------------------------------------------


def _rf_int16(rf: np.ndarray, where: str) -> np.ndarray:
    rf = np.asarray(rf)
    if rf.ndim != 2 or rf.size == 0:
        raise DatasetError(f"{where} must be a non-empty 2-D array, got shape {rf.shape}")
    if rf.dtype == np.int16:
        return rf
    if rf.dtype.kind not in "iuf":
        raise DatasetError(f"{where} must be integer-valued numbers, got {rf.dtype}")
    if rf.dtype.kind == "f":
        if not np.all(np.isfinite(rf)):
            raise DatasetError(f"{where} contains NaN or Inf; the OASBUD schema stores int16")
        if not np.array_equal(rf, np.round(rf)):
            raise DatasetError(f"{where} is not integer-valued; the OASBUD schema stores int16")
    lo, hi = rf.min(), rf.max()
    if lo < _INT16.min or hi > _INT16.max:
        raise DatasetError(f"{where} spans [{lo}, {hi}], outside int16 [{_INT16.min}, {_INT16.max}]")
    return rf.astype(np.int16)


def _cellstr(items: list[str]) -> np.ndarray:
    """A 1-D object array of str, which savemat writes as a 1×N cell array."""
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def save_oasbud(dataset: Sequence[Lesion], path: str | os.PathLike, *, compress: bool = True) -> Path:
    """Write a data set as an OASBUD-schema MAT file, atomically.

    The ``data`` struct array has the public file's fields (``id``, ``rf1``,
    ``rf2``, ``roi1``, ``roi2``, ``birads``, ``class``; RF int16, ROI uint8,
    class uint8 1×1). A second variable ``uslib`` records keys, patients,
    source, the synthetic flag and the acquisition, which :func:`load_oasbud`
    restores, so ``load_oasbud(save_oasbud(ds, p), skip_samples=0)`` has the
    same arrays, metadata and fingerprint as ``ds``.

    Parameters
    ----------
    dataset : Dataset or sequence of Lesion
        Every lesion needs exactly two scans, integer-valued RF within int16,
        a 0/1 ROI of the RF's shape, label 0/1 and a BI-RADS category from
        :data:`BIRADS_CATEGORIES`; all scans share one :class:`Acquisition`.
    path : str or path-like
        Destination; written through a temporary file and renamed.
    compress : bool, default True
        zlib-compress the variables, like the public file (297 MB for 100
        lesions). For real-size scans this roughly halves the file at ≈10× the
        write time; measured on a 2-vCPU host for 10 lesions of
        2×(1500–2600)×510 int16 speckle: 67 MB in 0.3 s uncompressed against
        35–38 MB in 2.4–3.0 s compressed; reading 0.1–0.2 s against 0.3–0.4 s.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    DatasetError
        Naming the lesion (key and id) and the offending field.
    """
    import scipy.io

    from . import __version__

    lesions = list(dataset)
    if not lesions:
        raise DatasetError("save_oasbud: the data set holds no lesions")
    records = np.empty((1, len(lesions)), dtype=[(f, object) for f in OASBUD_FIELDS])
    acquisition = None
    for i, les in enumerate(lesions):
        where = f"lesion {i} (key {les.key!r}, id {les.id!r})"
        rid = str(les.id).strip()
        if not rid:
            raise DatasetError(f"{where}, field 'id' is empty")
        if len(les.scans) != 2:
            raise DatasetError(
                f"{where}, field 'scans': has {len(les.scans)} scans; the OASBUD schema stores exactly 2 (rf1, rf2)"
            )
        if les.label not in (0, 1):
            raise DatasetError(f"{where}, field 'label' must be 0 or 1, got {les.label!r}")
        if les.birads not in BIRADS_CATEGORIES:
            raise DatasetError(f"{where}, field 'birads' must be one of {list(BIRADS_CATEGORIES)}, got {les.birads!r}")
        row: dict[str, Any] = {"id": rid, "birads": les.birads, "class": np.array([[les.label]], dtype=np.uint8)}
        for j, scan in enumerate(les.scans, start=1):
            rf = _rf_int16(scan.rf, f"{where}, field 'rf{j}'")
            roi = np.asarray(scan.roi)
            if roi.shape != rf.shape:
                raise DatasetError(f"{where}, field 'roi{j}' has shape {roi.shape}, but 'rf{j}' has {rf.shape}")
            if roi.dtype != bool and not np.all((roi == 0) | (roi == 1)):
                raise DatasetError(f"{where}, field 'roi{j}' must hold only 0 and 1 (or bool)")
            if acquisition is None:
                acquisition = scan.acquisition
            elif scan.acquisition != acquisition:
                raise DatasetError(
                    f"{where}, field 'acquisition' of scan {j} differs from the first lesion's; "
                    "the file records one acquisition for all scans"
                )
            row[f"rf{j}"] = rf
            row[f"roi{j}"] = roi.astype(np.uint8)
        records[0, i] = tuple(row[f] for f in OASBUD_FIELDS)
    assert acquisition is not None
    meta = {
        "format": np.uint8(_META_FORMAT),
        "version": __version__,
        "synthetic": np.uint8(bool(getattr(dataset, "synthetic", False))),
        "source": str(getattr(dataset, "source", "")),
        "keys": _cellstr([str(les.key) for les in lesions]),
        "patients": _cellstr([str(les.patient) for les in lesions]),
        "acquisition": {
            "fs_hz": float(acquisition.fs_hz),
            "f0_hz": float(acquisition.f0_hz),
            "c_m_s": float(acquisition.c_m_s),
            "n_lines": float(acquisition.n_lines),
            "width_mm": float(acquisition.width_mm),
        },
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            scipy.io.savemat(fh, {"data": records, _META_VAR: meta}, do_compression=compress, oned_as="row", format="5")
    return path


def oasbud_source() -> tuple[str, str]:
    """The URL and SHA-256 that :func:`fetch_oasbud` downloads and checks.

    Zenodo record 545928 (:data:`OASBUD_URL`, :data:`OASBUD_SHA256`), unless
    the environment overrides them. The overrides are for rehearsals and
    mirrors (the tests serve a small OASBUD-schema file from a loopback HTTP
    server through them), not for everyday use:

    ``USLIB_OASBUD_URL``
        Where to download ``OASBUD.mat`` from instead of Zenodo.
    ``USLIB_OASBUD_SHA256``
        The SHA-256 that download must have instead of the public file's.

    Returns
    -------
    url, sha256 : str

    Examples
    --------
    >>> import os
    >>> oasbud_source() == (OASBUD_URL, OASBUD_SHA256) or "USLIB_OASBUD_URL" in os.environ
    True
    """
    url = read(OASBUD_URL_ENV) or OASBUD_URL
    sha = (read(OASBUD_SHA256_ENV) or OASBUD_SHA256).strip().lower()
    return url, sha


def default_oasbud_dir() -> Path:
    """Where ``oasbud_path: download`` keeps ``OASBUD.mat``: the user cache, ``pooch.os_cache("uslib")``."""
    import pooch

    return Path(pooch.os_cache("uslib"))


def fetch_oasbud(*, path: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Download ``OASBUD.mat`` (297 MB) once, verified by SHA-256.

    The file comes from :func:`oasbud_source` (Zenodo record 545928 unless
    ``USLIB_OASBUD_URL`` / ``USLIB_OASBUD_SHA256`` name a mirror) through
    :func:`uslib.download.download`: written to ``<path>.part``, resumed if
    the connection drops, checked by SHA-256 and only then renamed into
    place, so a truncated, corrupted or HTML-error-page download never leaves
    a file under the target name. A file already in place with the expected
    checksum is not downloaded again; a file already in place with another
    checksum is never overwritten (it may be the user's own data set).

    Parameters
    ----------
    path : str or path-like, optional
        A folder to keep ``OASBUD.mat`` in, or a file path ending in ``.mat``
        (``params/paper.yaml`` uses ``data/OASBUD.mat`` in the repository).
        Default: the user cache, :func:`default_oasbud_dir`.
    progress : bool, default True
        Show a download progress bar (tqdm).

    Returns
    -------
    pathlib.Path
        The local file; pass it to :func:`load_oasbud`.

    Raises
    ------
    uslib.download.DownloadError
        The download failed, ended short or has the wrong checksum (the
        message names the URL, both checksums and the path), or another file
        is in the way.
    """
    from .download import DownloadError, download, file_digest

    if path is None:
        target = default_oasbud_dir() / "OASBUD.mat"
    else:
        p = Path(path).expanduser()
        target = p if p.suffix.lower() == ".mat" else p / "OASBUD.mat"
    url, sha = oasbud_source()
    if target.is_file():
        have = file_digest(target, "sha256")
        if have == sha:
            return target
        raise DownloadError(
            f"{target} already exists with sha256 {have}, not the expected {sha} of {url}; it is left alone. "
            "To use it as it is, give its path as oasbud_path; to download the public file, move it away."
        )
    return download(url, target, sha256=sha, progress=progress, desc="OASBUD.mat")


def count_records(path: str | os.PathLike) -> int | None:
    """Number of records (lesions) of an OASBUD-schema MAT file, read from its variable headers only.

    Cheap: :func:`scipy.io.whosmat` reads the header of each variable, not
    the RF data, so this answers in well under a second even for the 297 MB
    public file. Used by the pre-flight check.

    Returns
    -------
    int or None
        The length of the ``data`` struct array; None when the file is not a
        readable MAT v5/v7 file with a ``data`` variable (:func:`load_oasbud`
        then says why).
    """
    import scipy.io

    try:
        for name, shape, _ in scipy.io.whosmat(str(path)):
            if name == "data":
                return int(np.prod(shape))
    except Exception:  # noqa: BLE001 - any unreadable file: the loader names the problem
        return None
    return None
