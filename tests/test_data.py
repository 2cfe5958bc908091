"""Tests of the OASBUD data layer on small generated files of the public schema.

The helper :func:`write_oasbud_like` builds a ``data`` struct array with
scipy.io.savemat directly (not through uslib), so the loader is checked
against the file layout itself: 1×N struct, fields id, rf1, rf2, roi1, roi2,
birads, class; int16 RF with 510 lines and constant non-echo rows on top,
uint8 ROI, uint8 1×1 class.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from uslib import data as D
from uslib import oasbud as O
from uslib.data import Acquisition, Dataset, DatasetError, Lesion, Scan, patient_key
from uslib.oasbud import load_oasbud, save_oasbud

N_SAMPLES, N_LINES, N_SKIP = 60, 510, 20
FIELDS = ("id", "rf1", "rf2", "roi1", "roi2", "birads", "class")


def make_record(rid: str, label: int, birads: str, *, seed: int, n_samples: int = N_SAMPLES) -> dict:
    """One record as the public file stores it (arrays with non-echo rows on top)."""
    rng = np.random.default_rng(seed)
    rec = {"id": rid, "birads": birads, "class": np.array([[label]], dtype=np.uint8)}
    for j in (1, 2):
        rf = rng.integers(-2000, 2000, size=(n_samples, N_LINES), dtype=np.int16)
        rf[:N_SKIP] = 1234 + j  # constant non-echo rows, like OASBUD
        roi = np.zeros((n_samples, N_LINES), dtype=np.uint8)
        roi[N_SKIP + 10 + j : N_SKIP + 25, 100 + 20 * seed : 300] = 1
        rec[f"rf{j}"] = rf
        rec[f"roi{j}"] = roi
    return rec


def default_records() -> list[dict]:
    return [
        make_record("1mm", 1, "4c", seed=1),
        make_record("200AT", 0, "3", seed=2, n_samples=70),
        make_record("4at", 1, "5", seed=3),
        make_record("18gn_1(19GN)", 0, "4a", seed=4),
    ]


def write_oasbud_like(path: Path, records: list[dict], *, fields=FIELDS, **extra) -> Path:
    """Write ``records`` as a 1×N struct array ``data`` (plus any extra variables)."""
    arr = np.empty((1, len(records)), dtype=[(f, object) for f in fields])
    for i, rec in enumerate(records):
        arr[0, i] = tuple(rec[f] for f in fields)
    scipy.io.savemat(path, {"data": arr, **extra}, do_compression=False)
    return path


@pytest.fixture
def records():
    return default_records()


@pytest.fixture
def mat(tmp_path, records):
    return write_oasbud_like(tmp_path / "OASBUD.mat", records)


# -- reading the public layout ------------------------------------------------


def test_load_ids_labels_birads_and_shapes(mat, records):
    ds = load_oasbud(mat)
    assert isinstance(ds, Dataset)
    assert len(ds) == 4
    assert [les.id for les in ds] == ["1mm", "200AT", "4at", "18gn_1(19GN)"]
    assert ds.keys == [les.id for les in ds]
    assert ds.labels.tolist() == [1, 0, 1, 0]
    assert [les.birads for les in ds] == ["4c", "3", "5", "4a"]
    assert not ds.synthetic
    assert ds.source == str(mat)
    for les, rec in zip(ds, records):
        assert len(les.scans) == 2
        for j, scan in enumerate(les.scans, start=1):
            n = rec[f"rf{j}"].shape[0]
            assert scan.rf.shape == (n - N_SKIP, N_LINES) == scan.roi.shape
            assert scan.rf.dtype == np.int16
            assert scan.roi.dtype == bool
            np.testing.assert_array_equal(scan.rf, rec[f"rf{j}"][N_SKIP:])
            np.testing.assert_array_equal(scan.roi, rec[f"roi{j}"][N_SKIP:] == 1)
            # the constant non-echo rows are gone
            assert not np.any(np.all(scan.rf == 1234 + j, axis=1))
            assert scan.acquisition == D.OASBUD_ACQUISITION


def test_loaded_arrays_are_read_only(mat):
    scan = load_oasbud(mat)[0].scans[0]
    with pytest.raises(ValueError):
        scan.rf[0, 0] = 1
    with pytest.raises(ValueError):
        scan.roi[0, 0] = True


@pytest.mark.parametrize("skip", [0, 5, 20, 33])
def test_skip_samples_drops_rows_of_rf_and_roi(mat, records, skip):
    ds = load_oasbud(mat, skip_samples=skip)
    scan = ds["200AT"].scans[1]
    np.testing.assert_array_equal(scan.rf, records[1]["rf2"][skip:])
    np.testing.assert_array_equal(scan.roi, records[1]["roi2"][skip:].astype(bool))
    assert scan.depth_mm[0] == 0.0 and len(scan.depth_mm) == 70 - skip


def test_skip_samples_must_be_non_negative_integer(mat):
    with pytest.raises(ValueError, match="skip_samples"):
        load_oasbud(mat, skip_samples=-1)
    with pytest.raises(ValueError, match="skip_samples"):
        load_oasbud(mat, skip_samples=2.5)


def test_compressed_file_and_loose_strings(tmp_path, records):
    # the public file is zlib-compressed; birads may come in upper case / padded
    records[0]["birads"] = " 4C "
    path = tmp_path / "c.mat"
    arr = np.empty((1, 4), dtype=[(f, object) for f in FIELDS])
    for i, rec in enumerate(records):
        arr[0, i] = tuple(rec[f] for f in FIELDS)
    scipy.io.savemat(path, {"data": arr}, do_compression=True)
    ds = load_oasbud(path)
    assert ds[0].birads == "4c"
    np.testing.assert_array_equal(ds[3].scans[0].rf, records[3]["rf1"][N_SKIP:])


def test_float_rf_is_accepted_when_finite(tmp_path, records):
    records[2]["rf1"] = records[2]["rf1"].astype(np.float64) / 7
    ds = load_oasbud(write_oasbud_like(tmp_path / "f.mat", records))
    assert ds["4at"].scans[0].rf.dtype == np.float64
    np.testing.assert_allclose(ds["4at"].scans[0].rf, records[2]["rf1"][N_SKIP:])


# -- patient keys -------------------------------------------------------------


@pytest.mark.parametrize(
    "lesion_id, expected",
    [
        ("1mm", "mm"),
        ("3als", "als"),
        ("4lw", "lw"),
        ("5LW", "lw"),
        ("200AT", "at"),
        ("4at", "at"),
        ("18gn_1(19GN)", "gn"),
        ("18gn(19GN)", "gn"),
        ("123", "id:123"),
        ("123_2", "id:123"),
        (" 7xy ", "xy"),
    ],
)
def test_patient_key_rule(lesion_id, expected):
    assert patient_key(lesion_id) == expected


def test_patient_key_rejects_empty():
    with pytest.raises(ValueError, match="empty"):
        patient_key("  ")


def test_loaded_patients_follow_the_rule(tmp_path, records):
    records.append(make_record("123", 0, "3", seed=5))
    ds = load_oasbud(write_oasbud_like(tmp_path / "p.mat", records))
    assert ds.patients.tolist() == ["mm", "at", "at", "gn", "id:123"]


def test_repeated_id_is_kept_with_unique_key_and_warning(tmp_path, records):
    records.append(make_record("4at", 0, "4b", seed=6))
    records.append(make_record("4at", 1, "4a", seed=7))
    path = write_oasbud_like(tmp_path / "dup.mat", records)
    with pytest.warns(UserWarning, match=r"'4at' occurs more than once") as rec:
        ds = load_oasbud(path)
    assert len(rec) == 2
    assert "'4at#2'" in str(rec[0].message) and "'4at#3'" in str(rec[1].message)
    assert ds.keys == ["1mm", "200AT", "4at", "18gn_1(19GN)", "4at#2", "4at#3"]
    assert [les.id for les in ds][-2:] == ["4at", "4at"] and ds["4at"].birads == "5"
    assert ds["4at#2"].birads == "4b" and ds["4at#3"].label == 1
    assert ds["4at#2"].patient == "at"
    # the suffix never collides with an id that already looks like one
    records2 = default_records() + [make_record("4at#2", 0, "3", seed=8), make_record("4at", 0, "3", seed=9)]
    with pytest.warns(UserWarning, match="'4at#3'"):
        ds2 = load_oasbud(write_oasbud_like(tmp_path / "dup2.mat", records2))
    assert ds2.keys[-2:] == ["4at#2", "4at#3"]


def test_no_warning_without_repeats(mat):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_oasbud(mat)


def test_patients_csv_overrides_rule(tmp_path, mat):
    csv = tmp_path / "patients.csv"
    csv.write_text("id,patient\n1mm,P1\n200AT,P2\n4at,P3\n18gn_1(19GN),P1\nextra,P9\n")
    ds = load_oasbud(mat, patients=csv)
    assert ds.patients.tolist() == ["P1", "P2", "P3", "P1"]


def test_patients_mapping_by_key_then_id(tmp_path, records):
    records.append(make_record("4at", 0, "3", seed=6))
    path = write_oasbud_like(tmp_path / "dup.mat", records)
    mapping = {"1mm": "a", "200AT": "b", "4at": "c", "4at#2": "d", "18gn_1(19GN)": "e"}
    with pytest.warns(UserWarning):
        ds = load_oasbud(path, patients=mapping)
    assert ds.patients.tolist() == ["a", "b", "c", "e", "d"]


def test_patients_mapping_missing_id_is_error(mat):
    with pytest.raises(DatasetError, match=r"record 2 \(id '4at'\).*no patient for id '4at'"):
        load_oasbud(mat, patients={"1mm": "a", "200AT": "b", "18gn_1(19GN)": "e"})


def test_patients_csv_errors(tmp_path, mat):
    bad_cols = tmp_path / "cols.csv"
    bad_cols.write_text("lesion,who\n1mm,a\n")
    with pytest.raises(DatasetError, match="columns 'id' and 'patient'"):
        load_oasbud(mat, patients=bad_cols)
    conflict = tmp_path / "conflict.csv"
    conflict.write_text("id,patient\n1mm,a\n1mm,b\n")
    with pytest.raises(DatasetError, match="'1mm' is given two patients"):
        load_oasbud(mat, patients=conflict)
    with pytest.raises(FileNotFoundError):
        load_oasbud(mat, patients=tmp_path / "nope.csv")


# -- round trip ---------------------------------------------------------------


def _dataset(*, synthetic=True) -> Dataset:
    rng = np.random.default_rng(0)
    acq = Acquisition(fs_hz=40e6, f0_hz=10e6, c_m_s=1540.0, n_lines=N_LINES, width_mm=38.0)
    lesions = []
    specs = [("12ab", "ab", 0, "3"), ("13ab", "ab", 1, "4b"), ("7cd", "cd", 1, "5"), ("7cd#2", "cd", 0, "4a")]
    for rid, patient, label, birads in specs:
        scans = []
        for n in (45, 52):
            rf = rng.integers(-30000, 30000, size=(n, N_LINES)).astype(np.int16)
            roi = np.zeros((n, N_LINES), bool)
            roi[rng.integers(20, 30) : 40, rng.integers(50, 200) : 400] = True
            scans.append(Scan(rf, roi, acq))
        lesions.append(Lesion(rid.split("#")[0], rid, patient, label, birads, tuple(scans)))
    return Dataset(lesions, source="simulate_dataset(n=4, seed=0) — synthetic µ", synthetic=synthetic)


@pytest.mark.parametrize("compress", [False, True])
def test_round_trip_is_exact(tmp_path, compress):
    ds = _dataset()
    out = save_oasbud(ds, tmp_path / "sub" / "rt.mat", compress=compress)
    assert out == tmp_path / "sub" / "rt.mat" and out.is_file()
    assert [p.name for p in out.parent.iterdir()] == ["rt.mat"]  # no temporary left
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # keys come from the file, no repeat warning
        back = load_oasbud(out, skip_samples=0)
    assert back.keys == ds.keys
    assert [les.id for les in back] == [les.id for les in ds]
    assert back.patients.tolist() == ds.patients.tolist()
    assert back.labels.tolist() == ds.labels.tolist()
    assert [les.birads for les in back] == [les.birads for les in ds]
    assert back.source == ds.source and back.synthetic is True
    for a, b in zip(ds, back):
        for sa, sb in zip(a.scans, b.scans):
            assert sb.rf.dtype == np.int16
            np.testing.assert_array_equal(sa.rf, sb.rf)
            np.testing.assert_array_equal(sa.roi, sb.roi)
            assert sb.acquisition == sa.acquisition
    assert back.fingerprint == ds.fingerprint


def test_fingerprint_covers_patients_and_labels_content_digests_only_the_images(tmp_path):
    ds = _dataset(synthetic=True)
    path = save_oasbud(ds, tmp_path / "x.mat")
    plain = load_oasbud(path)
    merged = load_oasbud(path, patients={k: "one" for k in plain.keys})
    assert merged.fingerprint != plain.fingerprint, "patients are part of the fingerprint"
    assert merged.content_digests == plain.content_digests, "patients do not change an image"
    relabelled = D.Dataset(
        [D.Lesion(les.id, les.key, les.patient, 1 - les.label, les.birads, les.scans) for les in plain], synthetic=True
    )
    assert relabelled.fingerprint != plain.fingerprint
    assert relabelled.content_digests == plain.content_digests


def test_round_trip_public_schema(tmp_path):
    """The written file has exactly the public layout (plus the uslib variable)."""
    ds = _dataset(synthetic=False)
    path = save_oasbud(ds, tmp_path / "x.mat")
    m = scipy.io.loadmat(path)
    assert set(k for k in m if not k.startswith("__")) == {"data", "uslib"}
    data = m["data"]
    assert data.shape == (1, 4) and data.dtype.names == FIELDS
    r = data[0, 1]
    assert r["id"][0] == "13ab" and r["birads"][0] == "4b"
    assert r["class"].dtype == np.uint8 and r["class"].shape == (1, 1) and r["class"][0, 0] == 1
    assert r["rf1"].dtype == np.int16 and r["rf1"].shape == (45, N_LINES)
    assert r["roi2"].dtype == np.uint8 and set(np.unique(r["roi2"])) == {0, 1}
    assert m["uslib"][0, 0]["synthetic"][0, 0] == 0
    # skip rows on a saved file, and the fingerprint tracks the change
    skipped = load_oasbud(path, skip_samples=N_SKIP)
    assert skipped[0].scans[0].rf.shape == (45 - N_SKIP, N_LINES)
    assert skipped.fingerprint != ds.fingerprint


def test_save_then_patients_override(tmp_path):
    path = save_oasbud(_dataset(), tmp_path / "x.mat")
    ds = load_oasbud(path, skip_samples=0, patients={"12ab": "p", "13ab": "q", "7cd": "r"})
    assert ds.patients.tolist() == ["p", "q", "r", "r"]


def test_save_casts_integer_valued_float(tmp_path):
    ds = _dataset()
    les = ds[0]
    rf_f = les.scans[0].rf.astype(np.float32)
    les.scans = (Scan(rf_f, les.scans[0].roi.astype(np.uint8)), les.scans[1])
    back = load_oasbud(save_oasbud(Dataset(list(ds)), tmp_path / "f.mat"), skip_samples=0)
    assert back[0].scans[0].rf.dtype == np.int16
    np.testing.assert_array_equal(back[0].scans[0].rf, rf_f)


# -- save errors ----------------------------------------------------------------


def _with_scan(rf=None, roi=None, *, n_scans=2):
    ds = _dataset()
    les = ds[2]
    s = les.scans[0]
    new = Scan(s.rf if rf is None else rf(s.rf), s.roi if roi is None else roi(s.roi), s.acquisition)
    les.scans = (new, les.scans[1])[:n_scans] if n_scans <= 2 else (new, les.scans[1], les.scans[1])
    return Dataset(list(ds))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_scans": 1}, r"lesion 2 \(key '7cd'.*has 1 scans.*exactly 2"),
        ({"n_scans": 3}, r"lesion 2 \(key '7cd'.*has 3 scans"),
        ({"rf": lambda r: r.astype(float) + 0.5}, r"lesion 2 \(key '7cd'.*'rf1' is not integer-valued"),
        ({"rf": lambda r: r.astype(np.int32) * 4}, r"lesion 2 \(key '7cd'.*'rf1' spans .* outside int16"),
        ({"rf": lambda r: np.where(r > 0, np.nan, 0.0)}, r"lesion 2 \(key '7cd'.*'rf1' contains NaN"),
        ({"rf": lambda r: r.astype(complex)}, r"lesion 2 \(key '7cd'.*'rf1' must be integer-valued"),
        ({"roi": lambda m: m[:-1]}, r"lesion 2 \(key '7cd'.*'roi1' has shape"),
        ({"roi": lambda m: m.astype(np.uint8) * 3}, r"lesion 2 \(key '7cd'.*'roi1' must hold only 0 and 1"),
    ],
)
def test_save_errors_name_lesion_and_field(tmp_path, kwargs, match):
    target = tmp_path / "bad.mat"
    with pytest.raises(DatasetError, match=match):
        save_oasbud(_with_scan(**kwargs), target)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_save_errors_metadata(tmp_path):
    ds = _dataset()
    ds[1].birads = "6"
    with pytest.raises(DatasetError, match=r"lesion 1 \(key '13ab'.*'birads'"):
        save_oasbud(ds, tmp_path / "b.mat")
    ds = _dataset()
    ds[3].label = 2
    with pytest.raises(DatasetError, match=r"lesion 3 \(key '7cd#2'.*'label'"):
        save_oasbud(ds, tmp_path / "b.mat")
    ds = _dataset()
    s = ds[1].scans[1]
    ds[1].scans = (ds[1].scans[0], Scan(s.rf, s.roi, Acquisition(fs_hz=20e6)))
    with pytest.raises(DatasetError, match=r"lesion 1 \(key '13ab'.*'acquisition'"):
        save_oasbud(ds, tmp_path / "b.mat")
    with pytest.raises(DatasetError, match="no lesions"):
        save_oasbud(Dataset([]), tmp_path / "b.mat")


def test_save_keeps_existing_file_on_error(tmp_path):
    target = save_oasbud(_dataset(), tmp_path / "keep.mat")
    before = target.read_bytes()
    with pytest.raises(DatasetError):
        save_oasbud(_with_scan(n_scans=1), target)
    assert target.read_bytes() == before


# -- load errors ------------------------------------------------------------------


def _bad(records, i, field, value):
    records[i][field] = value
    return records


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda r: _bad(r, 1, "roi1", r[1]["roi1"][:-1]), r"record 1 \(id '200AT'\), field 'roi1' has shape"),
        (lambda r: _bad(r, 2, "rf2", np.zeros((60, 510, 2), np.int16)), r"record 2 \(id '4at'\), field 'rf2'.*2-D"),
        (lambda r: _bad(r, 0, "roi2", np.zeros((60, 510), np.uint8)), r"record 0 \(id '1mm'\), field 'roi2' is empty$"),
        (
            lambda r: _bad(r, 3, "roi1", np.pad(np.ones((5, 510), np.uint8), ((0, 55), (0, 0)))),
            r"record 3 \(id '18gn_1\(19GN\)'\), field 'roi1' is empty after dropping the first 20 rows",
        ),
        (
            lambda r: _bad(r, 1, "rf1", np.where(r[1]["rf1"] > 1900, np.inf, r[1]["rf1"].astype(float))),
            r"record 1 \(id '200AT'\), field 'rf1' contains NaN or Inf",
        ),
        (
            lambda r: _bad(r, 1, "rf2", np.full((70, 510), np.nan, np.float32)),
            r"record 1 \(id '200AT'\), field 'rf2' contains NaN or Inf",
        ),
        (
            lambda r: _bad(r, 1, "rf1", np.zeros_like(r[1]["rf1"])),
            r"record 1 \(id '200AT'\), field 'rf1' is all zero after skip_samples=20: no echo signal",
        ),
        (
            lambda r: _bad(r, 2, "rf2", np.full_like(r[2]["rf2"], 7)),
            r"record 2 \(id '4at'\), field 'rf2' is constant \(every sample 7\) after skip_samples=20",
        ),
        (lambda r: _bad(r, 2, "class", np.array([[2]], np.uint8)), r"record 2 \(id '4at'\), field 'class' must be 0"),
        (
            lambda r: _bad(r, 2, "class", np.array([[0, 1]], np.uint8)),
            r"record 2 \(id '4at'\), field 'class' must be one number",
        ),
        (lambda r: _bad(r, 2, "class", "1"), r"record 2 \(id '4at'\), field 'class' must be one number"),
        (lambda r: _bad(r, 0, "rf1", "not numbers"), r"record 0 \(id '1mm'\), field 'rf1' must be an integer or float"),
        (
            lambda r: _bad(r, 0, "rf1", r[0]["rf1"].astype(np.complex128)),
            r"record 0 \(id '1mm'\), field 'rf1' must be an integer or float array, got complex",
        ),
        (
            lambda r: _bad(r, 3, "roi2", r[3]["roi2"] * 255),
            r"record 3 \(id '18gn_1\(19GN\)'\), field 'roi2' must hold only 0 and 1, found \[255\]",
        ),
        (lambda r: _bad(r, 3, "roi2", "mask"), r"record 3 \(id '18gn_1\(19GN\)'\), field 'roi2' must be a 0/1"),
        (lambda r: _bad(r, 1, "birads", "6"), r"record 1 \(id '200AT'\), field 'birads' must be one of .* got '6'"),
        (lambda r: _bad(r, 1, "birads", np.array([[4]])), r"record 1 \(id '200AT'\), field 'birads' must be a string"),
        (lambda r: _bad(r, 1, "id", ""), r"record 1, field 'id' is empty"),
        (lambda r: _bad(r, 1, "id", np.array([[7.0]])), r"record 1, field 'id' must be a string"),
        (
            lambda r: _bad(_bad(r, 0, "rf1", np.zeros((15, 510), np.int16)), 0, "roi1", np.ones((15, 510), np.uint8)),
            r"record 0 \(id '1mm'\), field 'rf1' has 15 rows, none left after skip_samples=20",
        ),
    ],
)
def test_load_errors_name_record_and_field(tmp_path, records, mutate, match):
    path = write_oasbud_like(tmp_path / "bad.mat", mutate(records))
    with pytest.raises(DatasetError, match=match):
        load_oasbud(path)


def test_load_error_missing_field(tmp_path, records):
    path = write_oasbud_like(tmp_path / "m.mat", records, fields=tuple(f for f in FIELDS if f != "roi2"))
    with pytest.raises(DatasetError, match=r"record 0 \(id '1mm'\): missing field 'roi2'"):
        load_oasbud(path)


def test_load_error_missing_data_variable(tmp_path):
    path = tmp_path / "nodata.mat"
    scipy.io.savemat(path, {"dataset": np.zeros(3)})
    with pytest.raises(DatasetError, match=r"no variable 'data' \(variables found: \['dataset'\]\)"):
        load_oasbud(path)


def test_load_error_data_not_struct(tmp_path):
    path = tmp_path / "plain.mat"
    scipy.io.savemat(path, {"data": np.zeros((2, 2))})
    with pytest.raises(DatasetError, match="'data' must be a struct array"):
        load_oasbud(path)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"this is not a mat file at all" * 10, "not a readable MATLAB"),
        (b"", "not a readable MATLAB"),
        (b"\x89HDF\r\n\x1a\n" + bytes(600), "HDF5 file without a MATLAB header"),
    ],
)
def test_load_error_not_a_mat_file(tmp_path, content, match):
    path = tmp_path / "junk.mat"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=match):
        load_oasbud(path)


def test_load_error_truncated(tmp_path, mat):
    cut = tmp_path / "cut.mat"
    cut.write_bytes(mat.read_bytes()[:5000])
    with pytest.raises(DatasetError, match=r"cut\.mat: not a readable"):
        load_oasbud(cut)


def test_load_refuses_v73_hdf5_with_conversion_hint(tmp_path):
    """MATLAB v7.3 = a 512-byte MATLAB header (userblock) followed by HDF5."""
    path = tmp_path / "v73.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        f["data"] = np.arange(4)
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2018 HDF5 schema 1.00 ."
    with open(path, "r+b") as fh:
        fh.write(header.ljust(116, b" ") + bytes(8) + b"\x00\x02" + b"IM")
    assert h5py.is_hdf5(path)
    with pytest.raises(DatasetError, match=r"v7\.3 \(HDF5\).*save\('-v7'"):
        load_oasbud(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="fetch_oasbud"):
        load_oasbud(tmp_path / "absent.mat")


def test_load_error_bad_meta(tmp_path, records):
    meta = {
        "synthetic": np.uint8(1),
        "source": "x",
        "keys": O._cellstr(["a", "b", "c"]),
        "patients": O._cellstr(["p"] * 4),
    }
    path = write_oasbud_like(tmp_path / "meta.mat", records, uslib=meta)
    with pytest.raises(DatasetError, match=r"variable 'uslib', field 'keys' has 3 entries for 4 records"):
        load_oasbud(path)
    meta["keys"] = O._cellstr(["a", "b", "a", "c"])
    path = write_oasbud_like(tmp_path / "meta.mat", records, uslib=meta)
    with pytest.raises(DatasetError, match=r"field 'keys' repeats \['a'\]"):
        load_oasbud(path)


# -- fetch (configuration only; tests never touch the network) --------------------


def test_fetch_oasbud_configuration(monkeypatch, tmp_path):
    """Sources and targets, without the network (downloads: tests/test_download.py)."""
    import hashlib

    monkeypatch.delenv("USLIB_OASBUD_URL", raising=False)
    monkeypatch.delenv("USLIB_OASBUD_SHA256", raising=False)
    assert O.oasbud_source() == (
        "https://zenodo.org/record/545928/files/OASBUD.mat",
        "698eadeabe451d8af3b6c8e205d2a8cbc590ab1275d188614916bceb501bcd48",
    )
    assert O.OASBUD_SIZE_BYTES == 296_800_010 and "545928" in O.OASBUD_URL
    # a file already in place with the expected checksum is returned, not fetched (a folder or a .mat path)
    body = b"an OASBUD-schema file"
    (tmp_path / "OASBUD.mat").write_bytes(body)
    monkeypatch.setenv("USLIB_OASBUD_URL", "http://127.0.0.1:9/OASBUD.mat")
    monkeypatch.setenv("USLIB_OASBUD_SHA256", hashlib.sha256(body).hexdigest().upper())
    assert O.oasbud_source() == ("http://127.0.0.1:9/OASBUD.mat", hashlib.sha256(body).hexdigest())
    assert O.fetch_oasbud(path=tmp_path, progress=False) == tmp_path / "OASBUD.mat"
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "oas.mat").write_bytes(body)
    assert O.fetch_oasbud(path=tmp_path / "raw" / "oas.mat") == tmp_path / "raw" / "oas.mat"


def test_public_api_exported():
    for name in ("patient_key", "Dataset", "DatasetError"):
        assert name in D.__all__ and hasattr(D, name)
    for name in ("load_oasbud", "save_oasbud", "fetch_oasbud"):
        assert name in O.__all__ and hasattr(O, name)


# -- geometry: the RF must fit the acquisition ---------------------------------------


def _scan_arrays(n_rows: int, n_lines: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An int16 RF with non-echo rows on top and a non-empty ROI below them."""
    rng = np.random.default_rng(seed)
    rf = rng.integers(-2000, 2000, size=(n_rows, n_lines), dtype=np.int16)
    rf[: min(N_SKIP, n_rows)] = 1234
    roi = np.zeros((n_rows, n_lines), dtype=np.uint8)
    roi[N_SKIP:, n_lines // 4 : max(n_lines // 2, n_lines // 4 + 1)] = 1
    return rf, roi


def _set_scan(records, i, j, n_rows, n_lines):
    records[i][f"rf{j}"], records[i][f"roi{j}"] = _scan_arrays(n_rows, n_lines, seed=10 * i + j)
    return records


def _declared_meta(n_records: int, *, n_lines: float, width_mm: float = 38.0, **acq) -> dict:
    """The ``uslib`` variable save_oasbud writes, declaring an acquisition."""
    geometry = {"fs_hz": 40e6, "f0_hz": 10e6, "c_m_s": 1540.0, "n_lines": float(n_lines), "width_mm": width_mm}
    geometry.update(acq)
    return {
        "format": np.uint8(1),
        "version": "test",
        "synthetic": np.uint8(0),
        "source": "",
        "keys": O._cellstr([f"k{i}" for i in range(n_records)]),
        "patients": O._cellstr(["p"] * n_records),
        "acquisition": geometry,
    }


def test_pulse_samples_rule():
    # ceil(PULSE_CYCLES * fs / f0) with PULSE_CYCLES = 4
    assert D.PULSE_CYCLES == 4 and D.MIN_LINES == 16
    assert Acquisition().pulse_samples == 16
    assert Acquisition(fs_hz=20e6).pulse_samples == 8
    assert Acquisition(fs_hz=25e6, f0_hz=7e6).pulse_samples == 15  # 14.29 rounds up


@pytest.mark.parametrize("i, j", [(2, 1), (0, 2)])
def test_five_line_rf_is_refused_naming_record_field_and_counts(tmp_path, records, i, j):
    rid = records[i]["id"]
    path = write_oasbud_like(tmp_path / "narrow.mat", _set_scan(records, i, j, N_SAMPLES, 5))
    with pytest.raises(DatasetError) as err:
        load_oasbud(path)
    msg = str(err.value)
    assert msg.startswith(
        f"narrow.mat: record {i} (id {rid!r}), field 'rf{j}' has 5 scan lines (columns), "
        "but the OASBUD acquisition has 510 (510 lines across 38 mm"
    )
    assert "lateral spacing would be wrong" in msg and "'uslib' variable" in msg


def test_line_count_off_by_one_is_refused(tmp_path, records):
    path = write_oasbud_like(tmp_path / "509.mat", _set_scan(records, 1, 2, 70, N_LINES - 1))
    with pytest.raises(DatasetError, match=r"record 1 \(id '200AT'\), field 'rf2' has 509 scan lines .* has 510"):
        load_oasbud(path)


@pytest.mark.parametrize("i, j", [(3, 1), (1, 2)])
def test_too_few_depth_rows_is_refused_naming_record_and_field(tmp_path, records, i, j):
    rid = records[i]["id"]
    # 20 non-echo rows + 15 echo rows: one short of 16 = ceil(4 * 40 MHz / 10 MHz)
    path = write_oasbud_like(tmp_path / "shallow.mat", _set_scan(records, i, j, N_SKIP + 15, N_LINES))
    with pytest.raises(DatasetError) as err:
        load_oasbud(path)
    assert str(err.value) == (
        f"shallow.mat: record {i} (id {rid!r}), field 'rf{j}' has 15 depth rows after skip_samples=20, "
        "fewer than one pulse length of 16 samples (PULSE_CYCLES=4 cycles at f0 10 MHz, fs 40 MHz)"
    )


def test_depth_rule_counts_rows_after_skip(tmp_path, records):
    path = write_oasbud_like(tmp_path / "edge.mat", _set_scan(records, 0, 1, N_SKIP + 16, N_LINES))
    assert load_oasbud(path)[0].scans[0].rf.shape == (16, N_LINES)  # exactly one pulse length loads
    assert load_oasbud(path, skip_samples=0)[0].scans[0].rf.shape == (N_SKIP + 16, N_LINES)
    with pytest.raises(
        DatasetError,
        match=r"record 0 \(id '1mm'\), field 'rf1' has 15 depth rows after "
        r"skip_samples=21",
    ):
        load_oasbud(path, skip_samples=21)


def test_consistent_geometry_loads_without_warning(tmp_path, records):
    records.append(make_record("9zz", 1, "4b", seed=5, n_samples=N_SKIP + 16))
    path = write_oasbud_like(tmp_path / "ok.mat", records)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load_oasbud(path)
    for les in ds:
        for scan in les.scans:
            assert scan.rf.shape[1] == N_LINES and scan.acquisition == D.OASBUD_ACQUISITION
            assert scan.lateral_mm[-1] == pytest.approx(38.0)


@pytest.mark.parametrize("n_lines, width_mm", [(128, 38.0), (64, 12.8), (N_LINES, 50.0)])
def test_declared_geometry_is_used_with_a_warning(tmp_path, n_lines, width_mm):
    recs = [make_record("1mm", 1, "4c", seed=1), make_record("4at", 0, "3", seed=2)]
    for i in range(2):
        for j in (1, 2):
            _set_scan(recs, i, j, N_SAMPLES + 10 * j, n_lines)
    meta = _declared_meta(2, n_lines=n_lines, width_mm=width_mm)
    path = write_oasbud_like(tmp_path / "own.mat", recs, uslib=meta)
    with pytest.warns(UserWarning) as rec:
        ds = load_oasbud(path)
    assert len(rec) == 1
    msg = str(rec[0].message)
    assert msg.startswith(
        "own.mat: record 0 (id '1mm') and the other 1 record use the file's own acquisition "
        f"from variable 'uslib' ({n_lines} lines across {width_mm:g} mm"
    )
    assert "not the OASBUD one (510 lines across 38 mm" in msg
    for les in ds:
        for scan in les.scans:
            assert scan.acquisition == Acquisition(n_lines=n_lines, width_mm=width_mm)
            assert scan.acquisition.dx_mm == pytest.approx(width_mm / (n_lines - 1))
            assert scan.lateral_mm[-1] == pytest.approx(width_mm)
            assert scan.extent_mm()[1] == pytest.approx(width_mm)


def test_declared_geometry_round_trips_through_save(tmp_path):
    acq = Acquisition(fs_hz=30e6, f0_hz=7.5e6, n_lines=96, width_mm=24.0)
    rf, roi = _scan_arrays(N_SKIP + 40, 96)
    ds = Dataset([Lesion("3xy", "3xy", "xy", 0, "3", (Scan(rf, roi.astype(bool), acq),) * 2)])
    path = save_oasbud(ds, tmp_path / "rt.mat")
    with pytest.warns(UserWarning, match=r"rt\.mat: record 0 \(id '3xy'\) uses the file's own acquisition .*96 lines"):
        back = load_oasbud(path)
    assert back[0].scans[1].acquisition == acq
    assert back[0].scans[1].acquisition.dx_mm == pytest.approx(24.0 / 95)


def test_rf_disagreeing_with_declared_geometry_is_refused(tmp_path, records):
    for i in range(4):
        for j in (1, 2):
            _set_scan(records, i, j, N_SAMPLES, 128)
    _set_scan(records, 2, 2, N_SAMPLES, 127)
    path = write_oasbud_like(tmp_path / "own.mat", records, uslib=_declared_meta(4, n_lines=128))
    with pytest.raises(
        DatasetError,
        match=r"^own\.mat: record 2 \(id '4at'\), field 'rf2' has 127 scan lines "
        r"\(columns\), but the file's own acquisition \(variable 'uslib'\) "
        r"has 128 \(128 lines across 38 mm",
    ):
        load_oasbud(path)


def test_public_width_under_declared_narrow_geometry_is_refused(tmp_path, records):
    # a file declaring 128 lines whose RF still has OASBUD's 510 is refused, not silently respaced
    path = write_oasbud_like(tmp_path / "own.mat", records, uslib=_declared_meta(4, n_lines=128))
    with pytest.raises(DatasetError, match=r"record 0 \(id '1mm'\), field 'rf1' has 510 scan lines .* has 128"):
        load_oasbud(path)


def test_too_few_lines_is_refused_even_when_declared(tmp_path):
    recs = [make_record("1mm", 1, "4c", seed=1)]
    for j in (1, 2):
        _set_scan(recs, 0, j, N_SAMPLES, D.MIN_LINES - 1)
    path = write_oasbud_like(tmp_path / "few.mat", recs, uslib=_declared_meta(1, n_lines=D.MIN_LINES - 1))
    with pytest.raises(
        DatasetError,
        match=r"^few\.mat: record 0 \(id '1mm'\), field 'rf1' has 15 scan lines "
        r"\(columns\), fewer than the minimum of 16 \(MIN_LINES\)$",
    ):
        load_oasbud(path)


@pytest.mark.parametrize(
    "acq, match",
    [
        ({"n_lines": 1.0}, r"n_lines must be an integer of at least 2, got 1$"),
        ({"n_lines": 127.5}, r"n_lines must be an integer of at least 2, got 127\.5"),
        ({"n_lines": 128.0, "width_mm": -38.0}, r"positive finite numbers, got width_mm=-38\.0"),
        ({"n_lines": 128.0, "f0_hz": 0.0}, r"positive finite numbers, got f0_hz=0\.0"),
        ({"n_lines": 128.0, "fs_hz": np.nan}, r"positive finite numbers, got fs_hz=nan"),
    ],
)
def test_impossible_declared_geometry_is_refused(tmp_path, records, acq, match):
    path = write_oasbud_like(tmp_path / "bad.mat", records, uslib=_declared_meta(4, **acq))
    with pytest.raises(DatasetError, match=r"bad\.mat: variable 'uslib', field 'acquisition'.*" + match):
        load_oasbud(path)


def test_a_dataset_displays_in_a_notebook_wrapped_at_spaces_never_cut_mid_word():
    from IPython.lib.pretty import pretty

    ds = Dataset(
        list(_dataset()),
        source="uslib.phantom.simulate_dataset(n_lesions=40, seed=0, "
        "n_nonecho_rows=20, malignant_fraction=0.4, depth_range_mm=(30.0, 50.0)) "
        "phantom v1, uslib 0.1.0; synthetic convolution-model phantom",
        synthetic=True,
    )
    shown = pretty(ds)
    lines = shown.splitlines()
    assert len(lines) > 1 and max(map(len, lines)) <= 88
    assert " ".join(line.strip() for line in lines) == repr(ds), "the same text, only wrapped at spaces"
