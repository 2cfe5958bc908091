"""Tests for uslib.morphology: shapes drawn in mm on the anisotropic OASBUD grid."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from uslib.data import OASBUD_ACQUISITION, Acquisition, Dataset, Lesion, Scan
from uslib.morphology import MORPHOLOGY_FEATURES, lesion_contour, lesion_mask, morphology_features, morphology_table

ACQ = OASBUD_ACQUISITION  # dz 0.01925 mm x dx 0.0747 mm: pixels 3.9 times wider than deep


def grid(acq=ACQ, depth_mm=16.0, width_mm=16.0):
    """Pixel-centre coordinates (mm) of an image, centred on an off-grid point."""
    nz = int(depth_mm / acq.dz_mm)
    nx = int(width_mm / acq.dx_mm)
    z = np.arange(nz)[:, None] * acq.dz_mm - depth_mm / 2 + 0.3 * acq.dz_mm
    x = np.arange(nx)[None, :] * acq.dx_mm - width_mm / 2 + 0.2 * acq.dx_mm
    return z, x


def ellipse(a_depth_mm, b_width_mm, acq=ACQ):
    z, x = grid(acq)
    return (z / a_depth_mm) ** 2 + (x / b_width_mm) ** 2 <= 1.0


def star(r0_mm=4.0, amp=0.35, n_points=7, acq=ACQ):
    z, x = grid(acq)
    theta = np.arctan2(z, x)
    return np.hypot(z, x) <= r0_mm * (1 + amp * np.cos(n_points * theta))


@pytest.mark.parametrize("r_mm", [1.0, 3.0, 6.0])
def test_disc_on_anisotropic_grid(r_mm):
    f = morphology_features(ellipse(r_mm, r_mm), acquisition=ACQ)
    assert f["area_mm2"] == pytest.approx(math.pi * r_mm**2, rel=0.02)
    assert f["perimeter_mm"] == pytest.approx(2 * math.pi * r_mm, rel=0.02)
    assert f["circularity"] == pytest.approx(1.0, rel=0.05)
    assert f["solidity"] == pytest.approx(1.0, abs=0.01)
    assert f["solidity"] <= 1.0
    assert f["depth_to_width"] == pytest.approx(1.0, rel=0.03)
    assert 0.0 <= f["margin_irregularity"] < 0.01


def test_raw_staircase_contour_overestimates_perimeter():
    # The documented reason for smoothing: without it the perimeter is far too long.
    roi = ellipse(3.0, 3.0)
    raw = morphology_features(roi, acquisition=ACQ, smoothing_mm=0)
    smooth = morphology_features(roi, acquisition=ACQ)
    assert raw["perimeter_mm"] > 1.08 * 2 * math.pi * 3.0
    assert raw["circularity"] < 0.9 < smooth["circularity"]
    assert raw["area_mm2"] == smooth["area_mm2"]


def test_same_physical_disc_on_two_grids_agrees():
    coarse = Acquisition(fs_hz=20e6, n_lines=256, width_mm=38.0)  # dz 0.0385, dx 0.149
    a = morphology_features(ellipse(3.0, 3.0, ACQ), acquisition=ACQ)
    b = morphology_features(ellipse(3.0, 3.0, coarse), acquisition=coarse)
    for name in ("area_mm2", "perimeter_mm", "circularity", "solidity", "depth_to_width"):
        assert a[name] == pytest.approx(b[name], rel=0.03), name
    # In pixels the same disc is far from round: a pixel-unit perimeter would differ.
    assert ellipse(3.0, 3.0).sum(axis=0).max() > 3 * ellipse(3.0, 3.0).sum(axis=1).max()


@pytest.mark.parametrize("ratio", [2.0, 0.5])
def test_ellipse_depth_to_width(ratio):
    b = 2.5
    a = ratio * b
    f = morphology_features(ellipse(a, b), acquisition=ACQ)
    assert f["depth_to_width"] == pytest.approx(ratio, rel=0.03)
    assert f["area_mm2"] == pytest.approx(math.pi * a * b, rel=0.02)
    h = ((a - b) / (a + b)) ** 2  # Ramanujan's perimeter of an ellipse
    p_true = math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))
    assert f["perimeter_mm"] == pytest.approx(p_true, rel=0.02)
    assert f["circularity"] < 0.95
    assert f["solidity"] == pytest.approx(1.0, abs=0.01)
    # Oracle: std(r)/mean(r) of the true ellipse sampled at equal arc-length steps.
    phi = np.linspace(0, 2 * np.pi, 200_001)
    pts = np.column_stack([a * np.sin(phi), b * np.cos(phi)])
    arc = np.concatenate([[0], np.cumsum(np.hypot(*np.diff(pts, axis=0).T))])
    t = np.linspace(0, arc[-1], 4096, endpoint=False)
    r = np.hypot(np.interp(t, arc, pts[:, 0]), np.interp(t, arc, pts[:, 1]))
    assert f["margin_irregularity"] == pytest.approx(r.std() / r.mean(), rel=0.03)


def test_star_is_less_regular_than_disc():
    disc = morphology_features(ellipse(4.0, 4.0), acquisition=ACQ)
    spic = morphology_features(star(), acquisition=ACQ)
    assert spic["circularity"] < 0.8 * disc["circularity"]
    assert spic["solidity"] < 0.95 * disc["solidity"]
    assert spic["margin_irregularity"] > 0.1 > 10 * disc["margin_irregularity"]
    # r(θ) = r0 (1 + 0.35 cos 7θ): the area is π r0² (1 + amp²/2)
    assert spic["area_mm2"] == pytest.approx(math.pi * 16 * (1 + 0.35**2 / 2), rel=0.02)


def test_rectangle_area_exact_and_extent():
    roi = np.zeros((400, 120), bool)
    roi[37:337, 11:91] = True  # 300 rows x 80 columns
    f = morphology_features(roi, acquisition=ACQ)
    assert f["area_mm2"] == pytest.approx(300 * 80 * ACQ.dz_mm * ACQ.dx_mm, rel=1e-12)
    assert f["depth_to_width"] == pytest.approx((300 * ACQ.dz_mm) / (80 * ACQ.dx_mm), rel=1e-12)
    assert f["solidity"] == pytest.approx(1.0, abs=1e-3)
    # 0/1 integer masks are accepted and give the same answer
    assert morphology_features(roi.astype(np.uint8), acquisition=ACQ) == f


def test_contour_is_in_scan_coordinates():
    roi = ellipse(3.0, 2.0)
    c = lesion_contour(roi, acquisition=ACQ)
    assert c.ndim == 2 and c.shape[1] == 2 and len(c) > 100
    zz, xx = np.nonzero(roi)
    # The contour surrounds the mask's pixel centres, to within half a pixel.
    assert c[:, 0].min() == pytest.approx(zz.min() * ACQ.dz_mm, abs=2 * ACQ.dx_mm)
    assert c[:, 0].max() == pytest.approx(zz.max() * ACQ.dz_mm, abs=2 * ACQ.dx_mm)
    assert c[:, 1].min() == pytest.approx(xx.min() * ACQ.dx_mm, abs=ACQ.dx_mm)
    assert c[:, 1].max() == pytest.approx(xx.max() * ACQ.dx_mm, abs=ACQ.dx_mm)


def test_largest_component_and_holes():
    roi = ellipse(3.0, 3.0)
    big_only = morphology_features(roi, acquisition=ACQ)
    extra = roi.copy()
    extra[5:25, 5:10] = True  # a small separate blob in a corner
    hole = extra.copy()
    nz, nx = roi.shape
    hole[nz // 2 - 10 : nz // 2 + 10, nx // 2 - 3 : nx // 2 + 3] = False  # a hole inside
    assert lesion_mask(extra).sum() == roi.sum()
    assert morphology_features(hole, acquisition=ACQ) == big_only


def test_tiny_roi_falls_back_to_raw_outline():
    roi = np.zeros((20, 20), bool)
    roi[10, 10] = True
    f = morphology_features(roi, acquisition=ACQ)
    assert f["area_mm2"] == pytest.approx(ACQ.dz_mm * ACQ.dx_mm)
    assert np.isfinite(list(f.values())).all()


def test_bad_roi_raises():
    with pytest.raises(ValueError, match="empty"):
        morphology_features(np.zeros((10, 10), bool), acquisition=ACQ)
    with pytest.raises(ValueError, match="2-D"):
        morphology_features(np.ones(10, bool), acquisition=ACQ)
    with pytest.raises(ValueError, match="boolean"):
        morphology_features(np.full((10, 10), 0.5), acquisition=ACQ)
    with pytest.raises(ValueError, match="smoothing_mm"):
        morphology_features(np.ones((10, 10), bool), acquisition=ACQ, smoothing_mm=-1)


def _dataset(rois):
    lesions = []
    for i, (patient, label, masks) in enumerate(rois):
        scans = tuple(Scan(rf=np.zeros(m.shape, np.int16), roi=m, acquisition=ACQ) for m in masks)
        lesions.append(Lesion(id=f"{i}x", key=f"{i}x", patient=patient, label=label, birads="4a", scans=scans))
    return Dataset(lesions, source="hand-made test shapes", synthetic=True)


def test_morphology_table_averages_scans():
    d1, d2, s = ellipse(2.0, 2.0), ellipse(4.0, 2.0), star()
    ds = _dataset([("pa", 0, (d1, d2)), ("pb", 1, (s, s))])
    table = morphology_table(ds)
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == ["lesion", "patient", "label", *MORPHOLOGY_FEATURES]
    assert table["lesion"].tolist() == ["0x", "1x"]
    assert table["patient"].tolist() == ["pa", "pb"]
    assert table["label"].tolist() == [0, 1]
    f1 = morphology_features(d1, acquisition=ACQ)
    f2 = morphology_features(d2, acquisition=ACQ)
    fs = morphology_features(s, acquisition=ACQ)
    for name in MORPHOLOGY_FEATURES:
        assert table.loc[0, name] == pytest.approx((f1[name] + f2[name]) / 2, rel=1e-12)
        assert table.loc[1, name] == pytest.approx(fs[name], rel=1e-12)


def test_morphology_table_names_bad_scan():
    good = ellipse(2.0, 2.0)
    ds = _dataset([("pa", 0, (good, np.zeros_like(good)))])
    with pytest.raises(ValueError, match=r"lesion '0x', scan 1: roi is empty"):
        morphology_table(ds)
