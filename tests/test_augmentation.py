"""Tests of uslib.augmentation: crops in mm, resizing, the manifest, rendering, named sets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import uslib.augmentation as aug
from uslib.augmentation import (
    MANIFEST_COLUMNS,
    SETS,
    crop,
    crop_box,
    image_key,
    image_set,
    iter_images,
    render,
    resize,
    select,
    set_ranges,
)
from uslib.data import OASBUD_ACQUISITION as ACQ
from uslib.data import Dataset, Lesion, Scan
from uslib.reconstruction import bmode

N_Z, N_X = 400, 510


def make_scan(rng, z: slice, x: slice) -> Scan:
    rf = rng.normal(0, 2000, size=(N_Z, N_X)).round().astype(np.int16)
    roi = np.zeros((N_Z, N_X), bool)
    roi[z, x] = True
    return Scan(rf=rf, roi=roi, acquisition=ACQ)


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    rng = np.random.default_rng(7)
    lesions = [
        Lesion(
            "1ab",
            "1ab",
            "ab",
            0,
            "3",
            (make_scan(rng, slice(150, 250), slice(200, 220)), make_scan(rng, slice(100, 180), slice(40, 90))),
        ),
        Lesion(
            "2ab",
            "2ab",
            "ab",
            1,
            "4c",
            (make_scan(rng, slice(0, 60), slice(0, 30)), make_scan(rng, slice(300, 400), slice(480, 510))),
        ),
        Lesion(
            "3cd",
            "3cd",
            "cd",
            1,
            "5",
            (make_scan(rng, slice(200, 260), slice(250, 300)), make_scan(rng, slice(180, 230), slice(100, 180))),
        ),
    ]
    return Dataset(lesions, source="hand-made test data", synthetic=True)


# --- crop -----------------------------------------------------------------------


def test_crop_box_adds_margin_in_mm():
    roi = np.zeros((2000, 510), bool)
    roi[900:1000, 240:260] = True  # 100 samples x 20 lines
    for margin_mm in (0.1, 1, 2, 5, 10):  # 0.1 mm: 5.19 -> 5 samples, 1.34 -> 1 line (nearest, not ceil)
        mz = int(np.floor(margin_mm / 0.01925 + 0.5))
        mx = int(np.floor(margin_mm / (38 / 509) + 0.5))
        assert crop_box(roi, margin_mm=margin_mm, acquisition=ACQ) == (900 - mz, 1000 + mz, 240 - mx, 260 + mx)
    # the 2 mm numbers spelled out: 2 / 0.01925 = 103.9 -> 104 samples, 2 / 0.0747 = 26.8 -> 27 lines
    z0, z1, x0, x1 = crop_box(roi, margin_mm=2, acquisition=ACQ)
    assert (z1 - z0, x1 - x0) == (100 + 2 * 104, 20 + 2 * 27)
    assert crop_box(roi, margin_mm=0, acquisition=ACQ) == (900, 1000, 240, 260)


def test_crop_box_of_irregular_roi_is_its_bounding_box():
    zz, xx = np.mgrid[:300, :200]
    roi = (zz - 150) ** 2 / 40**2 + (xx - 90) ** 2 / 25**2 <= 1  # ellipse
    assert crop_box(roi, margin_mm=0, acquisition=ACQ) == (110, 191, 65, 116)


def test_crop_box_clipped_at_border():
    roi = np.zeros((N_Z, N_X), bool)
    roi[0:60, 0:30] = True
    assert crop_box(roi, margin_mm=5, acquisition=ACQ) == (0, 60 + 260, 0, 30 + 67)
    roi = np.zeros((N_Z, N_X), bool)
    roi[300:400, 480:510] = True
    assert crop_box(roi, margin_mm=10, acquisition=ACQ) == (0, N_Z, 480 - 134, N_X)


def test_crop_returns_the_box_of_the_image():
    img = np.arange(N_Z * N_X).reshape(N_Z, N_X)
    roi = np.zeros(img.shape, bool)
    roi[150:250, 200:220] = True
    out = crop(img, roi, margin_mm=2, acquisition=ACQ)
    np.testing.assert_array_equal(out, img[46:354, 173:247])


def test_crop_errors():
    roi = np.zeros((50, 40), bool)
    with pytest.raises(ValueError, match="empty"):
        crop_box(roi, margin_mm=2, acquisition=ACQ)
    roi[10, 10] = True
    with pytest.raises(ValueError, match="margin_mm"):
        crop_box(roi, margin_mm=-1, acquisition=ACQ)
    with pytest.raises(ValueError, match="2-D"):
        crop_box(roi[None], margin_mm=2, acquisition=ACQ)
    with pytest.raises(ValueError, match="shape"):
        crop(np.zeros((50, 41)), roi, margin_mm=2, acquisition=ACQ)


# --- resize ---------------------------------------------------------------------


@pytest.mark.parametrize("size_px", [299, 224])
def test_resize_shape_dtype_channels_range(size_px):
    rng = np.random.default_rng(0)
    img = rng.choice(np.array([0, 255], np.uint8), size=(308, 74))  # worst case for bicubic overshoot
    out = resize(img, size_px)
    assert out.shape == (size_px, size_px, 3) and out.dtype == np.float32
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])
    assert out.min() >= 0 and out.max() <= 255
    assert out.std() > 10  # not a blank image
    # out-of-range input (e.g. a float image) is clipped to [0, 255] as well
    hot = resize(np.where(img > 0, 300.0, -20.0), size_px)
    assert hot.min() == 0 and hot.max() == 255


def test_resize_preserves_values_and_ramps():
    flat = resize(np.full((500, 80), 77, np.uint8), 64)
    np.testing.assert_allclose(flat, 77, atol=1e-4)
    ramp = np.tile(np.linspace(0, 255, 600)[:, None], (1, 60))  # down along depth
    out = resize(ramp, 100)[..., 0]
    assert np.all(np.diff(out[5:-5, 50]) > 0)  # still increasing with depth
    np.testing.assert_allclose(out[:, 0], out[:, 99], atol=1e-3)  # constant across


def test_resize_antialiases_when_shrinking():
    stripes = np.zeros((1000, 50), np.uint8)
    stripes[::3] = 255  # period of 3 rows, far above the Nyquist limit of a 10x shrink
    out = resize(stripes, 100)[..., 0]
    assert np.abs(out[10:-10] - 85.0).max() < 5  # averaged to the mean, not aliased


def test_resize_errors():
    with pytest.raises(ValueError, match="size_px"):
        resize(np.zeros((10, 10)), 0)
    with pytest.raises(ValueError, match="2-D"):
        resize(np.zeros((10, 10, 3)), 32)
    with pytest.raises(ValueError, match="empty"):
        resize(np.zeros((0, 10)), 32)


# --- manifest ---------------------------------------------------------------------


def test_image_set_paper_setting(dataset):
    m = image_set(dataset)
    assert list(m.columns) == list(MANIFEST_COLUMNS)
    assert len(m) == 18 * len(dataset)
    assert (m.groupby("lesion", sort=False).size() == 18).all()
    np.testing.assert_array_equal(m["image"], np.arange(len(m)))
    assert m["margin_mm"].dtype == np.float64 and m["dynamic_range_db"].dtype == np.float64
    # order: lesion, scan, dynamic range, margin
    first = m[m["lesion"] == "1ab"]
    expected = [(s, dr, mm) for s in (0, 1) for dr in (40.0, 50.0, 60.0) for mm in (2.0, 5.0, 10.0)]
    assert list(zip(first["scan"], first["dynamic_range_db"], first["margin_mm"])) == expected
    assert list(m["lesion"].unique()) == dataset.keys
    row = m.iloc[18]
    assert (row["lesion"], row["patient"], row["label"], row["birads"]) == ("2ab", "ab", 1, "4c")


def test_image_set_custom_and_errors(dataset):
    m = image_set(dataset, dynamic_ranges_db=(45,), margins_mm=(0, 3))
    assert len(m) == len(dataset) * 2 * 1 * 2
    assert set(m["dynamic_range_db"]) == {45.0}
    with pytest.raises(ValueError, match="dynamic_ranges_db"):
        image_set(dataset, dynamic_ranges_db=(40, 0))
    with pytest.raises(ValueError, match="margins_mm"):
        image_set(dataset, margins_mm=(2, -1))
    with pytest.raises(ValueError, match="repeated"):
        image_set(dataset, margins_mm=(2, 2.0))
    empty = image_set(Dataset([]))
    assert len(empty) == 0 and list(empty.columns) == list(MANIFEST_COLUMNS)


def test_image_key_stable_and_unique(dataset):
    m = image_set(dataset)
    keys = [image_key(r) for _, r in m.iterrows()]
    assert len(set(keys)) == len(m)
    assert keys[0] == "1ab|0|2.0|40.0"
    assert [image_key(r) for r in m.itertuples()] == keys
    assert image_key(m.iloc[5].to_dict()) == keys[5]
    # independent of position and of integer vs float columns
    other = image_set(dataset, dynamic_ranges_db=(60, 40, 50), margins_mm=(10, 2, 5))
    assert set(image_key(r) for r in other.itertuples()) == set(keys)


# --- rendering ----------------------------------------------------------------


def test_render_equals_bmode_crop_resize(dataset):
    m = image_set(dataset)
    row = m[(m["lesion"] == "3cd") & (m["scan"] == 1) & (m["dynamic_range_db"] == 50) & (m["margin_mm"] == 5)].iloc[0]
    scan = dataset["3cd"].scans[1]
    expected = resize(crop(bmode(scan.rf, 50), scan.roi, margin_mm=5, acquisition=ACQ), 299)
    got = render(dataset, row, size_px=299)
    assert got.shape == (299, 299, 3) and got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    # A_max is per scan, not per crop: the crop need not reach 255
    full = bmode(scan.rf, 50)
    cropped = crop(full, scan.roi, margin_mm=5, acquisition=ACQ)
    assert cropped.max() <= full.max()


def test_render_errors(dataset):
    with pytest.raises(KeyError, match="nope"):
        render(dataset, {"lesion": "nope", "scan": 0, "margin_mm": 2.0, "dynamic_range_db": 40.0}, size_px=32)
    with pytest.raises(IndexError, match="1ab"):
        render(dataset, {"lesion": "1ab", "scan": 2, "margin_mm": 2.0, "dynamic_range_db": 40.0}, size_px=32)
    rng = np.random.default_rng(0)
    bad = make_scan(rng, slice(0, 0), slice(0, 0))  # empty ROI
    ds = Dataset([Lesion("9zz", "9zz", "zz", 0, "3", (bad,))])
    with pytest.raises(ValueError, match="9zz.*scan 0.*roi"):
        render(ds, {"lesion": "9zz", "scan": 0, "margin_mm": 2.0, "dynamic_range_db": 40.0}, size_px=32)


def test_iter_images_every_position_once_and_matches_render(dataset, monkeypatch):
    m = image_set(dataset)
    calls = []
    real_envelope = aug.envelope

    def counting_envelope(rf, **kw):
        calls.append(rf.shape)
        return real_envelope(rf, **kw)

    monkeypatch.setattr(aug, "envelope", counting_envelope)
    seen = []
    sizes = []
    for positions, batch in iter_images(dataset, m, size_px=48, batch_size=7):
        assert batch.dtype == np.float32 and batch.shape == (len(positions), 48, 48, 3)
        sizes.append(len(positions))
        seen.extend(positions.tolist())
        for p, img in zip(positions[:2], batch[:2]):  # spot checks against render
            np.testing.assert_array_equal(img, render(dataset, m.iloc[p], size_px=48))
    assert sorted(seen) == list(range(len(m)))
    assert seen == list(range(len(m)))  # image_set order is kept
    assert max(sizes) == 7 and sum(sizes) == len(m)
    # one envelope per scan for the iteration (+2 per batch for the render spot checks)
    assert len(calls) == 2 * len(dataset) + sum(min(s, 2) for s in sizes)


def test_iter_images_on_shuffled_subset(dataset):
    m = image_set(dataset)
    sub = m[select(m, "Test60dB")].sample(frac=1.0, random_state=3)  # index labels != positions
    seen = {}
    for positions, batch in iter_images(dataset, sub, size_px=32, batch_size=5):
        for p, img in zip(positions, batch):
            assert p not in seen
            seen[int(p)] = img
    assert sorted(seen) == list(range(len(sub)))
    for p in (0, len(sub) // 2, len(sub) - 1):
        np.testing.assert_array_equal(seen[p], render(dataset, sub.iloc[p], size_px=32))


def test_iter_images_errors(dataset):
    m = image_set(dataset)
    with pytest.raises(ValueError, match="batch_size"):
        next(iter_images(dataset, m, size_px=32, batch_size=0))
    with pytest.raises(ValueError, match="columns"):
        next(iter_images(dataset, m.drop(columns="margin_mm"), size_px=32))
    assert list(iter_images(dataset, m.iloc[:0], size_px=32)) == []


# --- named sets -----------------------------------------------------------------


def test_sets_and_select(dataset):
    assert set(SETS) >= {
        "Train40dB",
        "Train50dB",
        "Train60dB",
        "TrainALL",
        "Test40dB",
        "Test50dB",
        "Test60dB",
        "TestALL",
    }
    assert set_ranges("Train50dB") == (50.0,)
    assert set_ranges("TestALL") == (40.0, 50.0, 60.0)
    assert set_ranges("Train45dB") == (45.0,)
    with pytest.raises(KeyError, match="Train40"):
        set_ranges("Training40")
    m = image_set(dataset)
    for name in ("Train40dB", "Test60dB"):
        mask = select(m, name)
        assert mask.dtype == bool and mask.index.equals(m.index)
        assert (m[mask].groupby("lesion").size() == 6).all()  # 2 scans x 3 margins per lesion
        assert set(m.loc[mask, "dynamic_range_db"]) == set(set_ranges(name))
    assert select(m, "TrainALL").all()
    assert not select(m, "Test45dB").any()
    assert isinstance(select(m, "TestALL"), pd.Series)


# --- A_max scope ------------------------------------------------------------------


@pytest.fixture(scope="module")
def scaled_pair() -> Dataset:
    """Two lesions whose scans are the same RF, the second scaled by k = 10 (envelopes differ by k)."""
    rng = np.random.default_rng(3)
    rf = rng.normal(0, 100, size=(N_Z, N_X)).round()
    roi = np.zeros((N_Z, N_X), bool)
    roi[150:250, 200:260] = True
    one = Scan(rf=rf.astype(np.int16), roi=roi, acquisition=ACQ)
    ten = Scan(rf=(10 * rf).astype(np.int16), roi=roi, acquisition=ACQ)
    lesions = [Lesion("1ab", "1ab", "ab", 0, "3", (one,)), Lesion("2cd", "2cd", "cd", 1, "4c", (ten,))]
    return Dataset(lesions, source="hand-made test data", synthetic=True)


def test_dataset_a_max_is_the_largest_envelope_of_all_scans(scaled_pair):
    a_max = aug.dataset_a_max(scaled_pair)
    peaks = [float(aug.envelope(les.scans[0].rf, axis=0).max()) for les in scaled_pair]
    assert a_max == max(peaks)
    assert a_max == pytest.approx(10 * peaks[0], rel=1e-9)
    with pytest.raises(ValueError, match="non-zero envelope"):
        aug.dataset_a_max(Dataset([]))


def test_dataset_scope_offsets_db_by_20_log10_k_and_scan_scope_does_not(scaled_pair):
    one, ten = (les.scans[0] for les in scaled_pair)
    # A_max per scan: the scale drops out, the dB images agree
    np.testing.assert_allclose(aug.scan_db(ten), aug.scan_db(one), atol=1e-9)
    assert aug.scan_db(one).max() == 0.0 and aug.scan_db(ten).max() == 0.0
    # one A_max for both: the weaker scan sits 20 log10(10) = 20 dB lower everywhere
    a_max = aug.dataset_a_max(scaled_pair)
    gap = aug.scan_db(ten, a_max=a_max) - aug.scan_db(one, a_max=a_max)
    np.testing.assert_allclose(gap, 20.0, atol=1e-9)
    assert aug.scan_db(ten, a_max=a_max).max() == pytest.approx(0.0, abs=1e-12)


def test_rendering_follows_the_rows_a_max(scaled_pair):
    m = image_set(scaled_pair, dynamic_ranges_db=(60.0,), margins_mm=(5.0,))
    assert aug.scope_manifest(m, a_max_scope="scan") is m  # per scan: the manifest as it was
    scoped = aug.scope_manifest(m, a_max_scope="dataset", a_max=aug.dataset_a_max(scaled_pair))
    per_scan = [render(scaled_pair, r, size_px=48) for _, r in m.iterrows()]
    wide = [render(scaled_pair, r, size_px=48) for _, r in scoped.iterrows()]
    # per scan, both lesions give the same image; the scaled one is also unchanged by the data-set scope
    assert np.abs(per_scan[0] - per_scan[1]).max() <= 1.0
    np.testing.assert_array_equal(wide[1], per_scan[1])
    # data-set-wide, the weaker scan is 20 dB darker: 255 * 20 / 60 = 85 grey levels where nothing clips
    shift = per_scan[0] - wide[0]
    assert np.median(shift) == pytest.approx(85.0, abs=1.0)
    # iter_images renders the same
    for positions, batch in iter_images(scaled_pair, scoped, size_px=48, batch_size=1):
        np.testing.assert_array_equal(batch[0], wide[int(positions[0])])


def test_image_key_names_a_data_set_a_max_only(scaled_pair):
    m = image_set(scaled_pair, dynamic_ranges_db=(60.0,), margins_mm=(5.0,))
    scoped = aug.scope_manifest(m, a_max_scope="dataset", a_max=123.5)
    plain = [image_key(r) for r in m.itertuples()]
    assert plain == ["1ab|0|5.0|60.0", "2cd|0|5.0|60.0"]  # per scan: keys as before
    assert [image_key(r) for r in scoped.itertuples()] == [k + "|a_max=123.5" for k in plain]
    assert image_key({**m.iloc[0].to_dict(), "a_max": float("nan")}) == plain[0]
    with pytest.raises(ValueError, match="a_max_scope"):
        aug.scope_manifest(m, a_max_scope="crop")
    with pytest.raises(ValueError, match="a_max must be finite"):
        aug.scope_manifest(m, a_max_scope="dataset")
