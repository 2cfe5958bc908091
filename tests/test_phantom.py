"""Tests of the synthetic phantom (uslib.phantom): speckle physics, schema, determinism."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage, signal

from uslib import phantom as ph
from uslib.data import OASBUD_ACQUISITION, Dataset
from uslib.qus import envelope_snr

try:  # the reconstruction helper's envelope, when present
    from uslib.reconstruction import envelope as _envelope
except ImportError:  # pragma: no cover - depends on the tree
    _envelope = None


try:
    from uslib.data import patient_key
except ImportError:  # pragma: no cover
    patient_key = None


def envelope(rf):
    if _envelope is not None:
        return np.asarray(_envelope(rf, axis=0), dtype=float)
    return np.abs(signal.hilbert(np.asarray(rf, dtype=float), axis=0))


DEPTH = (25.0, 28.0)  # shallower than OASBUD's 30–50 mm, for speed


@pytest.fixture(scope="module")
def small():
    """Twelve lesions with their latent cues (shared by several tests)."""
    return ph.simulate_dataset(12, seed=5, depth_range_mm=DEPTH, return_models=True)


@pytest.fixture(scope="module")
def separable():
    """Forty lesions for the class-overlap test."""
    return ph.simulate_dataset(40, seed=11, depth_range_mm=DEPTH, return_models=True)


# -- PSF building blocks ---------------------------------------------------------------


def test_axial_pulse_spectrum_has_requested_bandwidth_and_centre():
    h = ph.axial_pulse(fs_hz=40e6, f0_hz=10e6, bandwidth=0.7, n_sigma=8)
    n = 4096
    spec = np.abs(np.fft.rfft(h, n))
    f = np.fft.rfftfreq(n, 1 / 40e6)
    assert f[np.argmax(spec)] == pytest.approx(10e6, abs=0.05e6)
    above = f[spec >= 0.5 * spec.max()]  # -6 dB band
    assert (above.max() - above.min()) / 10e6 == pytest.approx(0.7, abs=0.02)
    assert np.sum(h**2) == pytest.approx(1.0)


def test_downshifted_pulse_keeps_its_envelope():
    a = ph.axial_pulse(bandwidth=0.7)
    b = ph.axial_pulse(bandwidth=0.7, carrier_hz=7e6)
    assert a.shape == b.shape
    ea, eb = np.abs(signal.hilbert(np.pad(a, 20))), np.abs(signal.hilbert(np.pad(b, 20)))
    np.testing.assert_allclose(ea, eb, atol=0.03)
    assert not np.allclose(a, b)


def test_beam_width_is_lambda_fnumber_at_focus_and_widens():
    lam = OASBUD_ACQUISITION.wavelength_mm
    assert float(ph.beam_fwhm_mm(12.0, focus_depth_mm=12.0)) == pytest.approx(2.0 * lam)
    w = ph.beam_fwhm_mm(np.array([12.0, 20.0, 28.0, 200.0]), focus_depth_mm=12.0)
    assert np.all(np.diff(w) > 0)
    assert w[-1] == pytest.approx(4.0 * 2.0 * lam)  # capped at max_widening
    g = ph.lateral_beam(0.308, dx_mm=0.01)
    x = (np.arange(g.size) - g.size // 2) * 0.01
    half = x[g >= 0.5 * g.max()]
    assert half.max() - half.min() == pytest.approx(0.308, abs=0.02)


def test_carrier_downshift_and_floor():
    f = ph.carrier_hz(np.array([0.0, 5.0, 10.0, 100.0]))
    assert f[0] == pytest.approx(10e6)
    assert f[0] > f[1] > f[2] >= f[3] == pytest.approx(7e6)
    flat = ph.carrier_hz(10.0, system=ph.ImagingSystem(frequency_downshift=False))
    assert float(flat) == pytest.approx(10e6)


def test_pulse_echo_psf_is_separable_unit_energy():
    psf = ph.pulse_echo_psf(15.0, focus_depth_mm=15.0)
    assert np.sum(psf**2) == pytest.approx(1.0)
    assert np.linalg.matrix_rank(psf, tol=1e-8) == 1


def test_convolve_psf_impulse_response_matches_psf_at_focus():
    z_mm = 15.0
    dz = OASBUD_ACQUISITION.dz_mm
    x = np.zeros((401, 101), dtype=np.float32)
    x[200, 50] = 1.0
    rf = ph.convolve_psf(x, focus_depth_mm=z_mm, depth_offset_mm=z_mm - 200 * dz)
    psf = ph.pulse_echo_psf(z_mm, focus_depth_mm=z_mm)
    a, b = psf.shape[0] // 2, psf.shape[1] // 2
    np.testing.assert_allclose(rf[200 - a : 201 + a, 50 - b : 51 + b], psf, atol=2e-3)
    assert np.abs(rf).sum() == pytest.approx(np.abs(rf[200 - a : 201 + a, 50 - b : 51 + b]).sum(), rel=0.02)


def test_convolve_psf_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        ph.convolve_psf(np.zeros(10), focus_depth_mm=10.0)
    with pytest.raises(ValueError, match="band_blend_mm"):
        ph.ImagingSystem(band_blend_mm=10.0)


# -- speckle statistics (Rayleigh oracles) ----------------------------------------------


def test_background_speckle_is_rayleigh():
    rf = ph.simulate_speckle((1024, 510), seed=3)
    env = envelope(rf)
    snr = env.mean() / env.std()
    assert snr == pytest.approx(1.913, rel=0.05)
    assert envelope_snr(envelope(rf)) == pytest.approx(snr, rel=1e-6)


def test_sparse_scatterers_are_sub_rayleigh():
    dense = envelope_snr(envelope(ph.simulate_speckle((512, 256), seed=1, density=1.0)))
    sparse = envelope_snr(envelope(ph.simulate_speckle((512, 256), seed=1, density=0.03)))
    assert sparse < 1.5 < dense


def test_speckle_size_near_focus():
    sizes = np.array([ph.speckle_size_mm(ph.simulate_speckle((256, 510), seed=s)) for s in range(3)]).mean(0)
    axial, lateral = sizes
    assert axial == pytest.approx(0.094, rel=0.3)
    assert lateral == pytest.approx(0.32, rel=0.3)
    # far from the focus the beam, hence the lateral speckle, is wider
    far = ph.speckle_size_mm(ph.simulate_speckle((256, 510), seed=0, focus_depth_mm=2.0, depth_offset_mm=20.0))
    assert far[1] > 1.5 * lateral
    assert far[0] == pytest.approx(axial, rel=0.15)


def test_scan_interior_of_a_uniform_lesion_is_rayleigh():
    """End to end (attenuation, TGC, PSF bands, int16): a uniform region stays Rayleigh."""
    base = ph.random_lesion_model(0, seed=0, suspicion=0.1)
    harm = base.harmonics.copy()
    harm[:, 4] = 0.0
    model = replace(
        base,
        semi_axes_mm=(7.0, 6.5, 5.0),
        harmonics=harm,
        spicules=np.zeros((0, 5)),
        heterogeneity=0.0,
        density=1.0,
        attenuation_ratio=ph.ImagingSystem().tgc_fraction,  # flat after TGC
        calcifications_per_cm2=0.0,
        halo=0.0,
        capsule=0.0,
        echogenicity=0.5,
    )
    scan = ph.simulate_scan(model, seed=1, depth_mm=30.0)
    env = envelope(scan.rf[20:])
    rows, cols = np.nonzero(scan.roi[20:])
    zc, xc = int(rows.mean()), int(cols.mean())
    patch = env[zc - 150 : zc + 150, xc - 50 : xc + 50]
    assert scan.roi[20:][zc - 150 : zc + 150, xc - 50 : xc + 50].all()
    assert patch.mean() / patch.std() == pytest.approx(1.913, rel=0.05)


# -- schema, ids, determinism ------------------------------------------------------------


def test_dataset_schema(small):
    ds, cues = small
    assert isinstance(ds, Dataset) and ds.synthetic
    assert "seed=5" in ds.source and "phantom" in ds.source
    nonecho = ph.ImagingSystem().nonecho_value
    for les in ds:
        assert les.key == les.id
        assert len(les.scans) == 2
        for sc in les.scans:
            rf, roi = sc.rf, sc.roi
            assert rf.dtype == np.int16 and roi.dtype == bool
            assert rf.shape == roi.shape and rf.shape[1] == 510
            depth = (rf.shape[0] - 20) * OASBUD_ACQUISITION.dz_mm
            assert DEPTH[0] - 0.01 <= depth <= 50.0
            assert np.all(rf[:20] == nonecho)
            echo_max = np.abs(rf[20:].astype(int)).max()
            assert 10000 < echo_max < abs(nonecho)
            assert not roi[:20].any()
            rows, cols = np.nonzero(roi.any(1))[0], np.nonzero(roi.any(0))[0]
            assert roi.sum() > 1000
            assert rows[0] > 20 + 50 and rows[-1] < rf.shape[0] - 50
            assert cols[0] > 5 and cols[-1] < 504
        # the two scans are different sections of the same lesion
        a, b = les.scans
        assert a.roi.shape != b.roi.shape or not np.array_equal(a.roi, b.roi)
    assert list(cues["key"]) == ds.keys


def test_scan_depth_range_and_nonecho_rows():
    ds = ph.simulate_dataset(1, seed=2, n_nonecho_rows=7)
    for sc in ds[0].scans:
        assert np.all(sc.rf[:7] == sc.rf[0, 0]) and not np.all(sc.rf[7] == sc.rf[0, 0])
        assert 30.0 <= (sc.rf.shape[0] - 7) * OASBUD_ACQUISITION.dz_mm <= 50.0 + 1e-6
        assert not sc.roi[:7].any()


def test_ids_patients_and_class_ratio(separable):
    ds, _ = separable
    n = len(ds)
    assert int(ds.labels.sum()) == round(0.4 * n)
    ids = ds.keys
    nums = []
    for les in ds:
        m = re.fullmatch(r"(\d+)([a-z]{2,3})", les.id)
        assert m, les.id
        nums.append(int(m.group(1)))
        assert les.patient == m.group(2)
        if patient_key is not None:  # the loader's rule gives the same patient
            assert patient_key(les.id) == les.patient
    assert sorted(nums) == list(range(1, n + 1))
    assert len(set(ids)) == len(ids)
    patients, counts = np.unique(ds.patients.astype(str), return_counts=True)
    assert counts.max() == 2 and (counts == 2).sum() >= 1
    # a patient's lesions are numbered consecutively
    for p in patients[counts == 2]:
        n = sorted(int(re.match(r"\d+", i).group()) for i, q in zip(ids, ds.patients) if q == p)
        assert n[1] == n[0] + 1
    birads = set(les.birads for les in ds)
    assert birads <= {"3", "4a", "4b", "4c", "5"} and len(birads) >= 3


def test_determinism():
    a = ph.simulate_dataset(2, seed=3, depth_range_mm=(20.0, 20.0))
    b = ph.simulate_dataset(2, seed=3, depth_range_mm=(20.0, 20.0))
    c = ph.simulate_dataset(2, seed=4, depth_range_mm=(20.0, 20.0))
    assert a.fingerprint == b.fingerprint
    for la, lb in zip(a, b):
        for sa, sb in zip(la.scans, lb.scans):
            assert sa.rf.tobytes() == sb.rf.tobytes() and np.array_equal(sa.roi, sb.roi)
    assert a.fingerprint != c.fingerprint
    assert a.keys != c.keys or not np.array_equal(a[0].scans[0].rf, c[0].scans[0].rf)


def test_threads_give_the_same_data_set_bit_for_bit():
    one, cues1 = ph.simulate_dataset(4, seed=5, depth_range_mm=(20.0, 20.0), return_models=True, workers=1)
    three, cues3 = ph.simulate_dataset(4, seed=5, depth_range_mm=(20.0, 20.0), return_models=True, workers=3)
    assert one.keys == three.keys and one.fingerprint == three.fingerprint
    for la, lb in zip(one, three):
        for sa, sb in zip(la.scans, lb.scans):
            assert sa.rf.tobytes() == sb.rf.tobytes() and np.array_equal(sa.roi, sb.roi)
    assert cues1.equals(cues3)


def test_input_errors():
    with pytest.raises(ValueError, match="n_lesions"):
        ph.simulate_dataset(0)
    with pytest.raises(ValueError, match="label"):
        ph.random_lesion_model(2)
    with pytest.raises(ValueError, match="depth_range_mm"):
        ph.simulate_lesion(ph.random_lesion_model(0, seed=0), depth_range_mm=(30.0, 20.0))
    with pytest.raises(ValueError, match="density"):
        ph.simulate_speckle((64, 64), density=0.0)
    with pytest.raises(ValueError, match="n_nonecho_rows"):
        ph.simulate_scan(ph.random_lesion_model(0, seed=0), n_nonecho_rows=-1)


# -- lesion models and class overlap ---------------------------------------------------


def _auc(score, label):
    score, label = np.asarray(score, float), np.asarray(label, int)
    pos, neg = score[label == 1], score[label == 0]
    return float(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())


def test_latent_cues_follow_the_class():
    models = [ph.random_lesion_model(k % 2, seed=k) for k in range(400)]
    y = np.array([m.label for m in models])
    cue = {k: np.array([m.cues()[k] for m in models]) for k in ("suspicion", "aspect", "echogenicity", "density")}
    assert 0.8 < _auc(cue["suspicion"], y) < 0.97
    assert _auc(cue["aspect"], y) > 0.65  # taller-than-wide
    assert _auc(-cue["echogenicity"], y) > 0.65  # hypoechoic
    assert _auc(-cue["density"], y) > 0.65  # sub-Rayleigh
    birads = np.array([m.birads for m in models])
    assert np.mean(np.isin(birads[y == 0], ["3", "4a"])) > 0.6
    assert np.mean(np.isin(birads[y == 1], ["4b", "4c", "5"])) > 0.6


def test_same_lesion_two_sections_share_the_latent_shape():
    model = ph.random_lesion_model(0, seed=4, suspicion=0.1)
    les = ph.simulate_lesion(model, seed=0, depth_range_mm=DEPTH)
    areas = [sc.roi.sum() * OASBUD_ACQUISITION.dz_mm * OASBUD_ACQUISITION.dx_mm for sc in les.scans]
    a1, a2, c = model.semi_axes_mm
    # every vertical section through the centre lies between the extreme ellipses
    lo, hi = np.pi * min(a1, a2) * c * 0.5, np.pi * max(a1, a2) * c * 1.6
    assert all(lo < a < hi for a in areas), (areas, lo, hi)
    assert les.patient == "xx" and les.key == "1xx"


def _contrast_db(scan):
    roi = scan.roi
    rows, cols = np.nonzero(roi.any(1))[0], np.nonzero(roi.any(0))[0]
    z0, z1 = max(rows[0] - 120, 20), rows[-1] + 120
    x0, x1 = max(cols[0] - 30, 0), cols[-1] + 30
    env = envelope(scan.rf[z0:z1, x0:x1])
    r = roi[z0:z1, x0:x1]
    ring = ndimage.binary_dilation(r, iterations=25) & ~r
    return 20 * np.log10(env[r].mean() / env[ring].mean())


def test_class_overlap_of_a_simple_image_feature(separable):
    """Lesion/surround contrast separates the classes, but not perfectly."""
    ds, cues = separable
    y = ds.labels
    assert y.sum() == 16
    feature = [-np.mean([_contrast_db(sc) for sc in les.scans]) for les in ds]
    auc = _auc(feature, y)
    assert 0.6 < auc < 0.97, auc
    assert _auc(cues["suspicion"], y) < 0.99  # the classes overlap in the latent variable too
    # lesions are hypoechoic
    assert np.median(feature) > 3.0


# -- round trip through the OASBUD writer and loader ------------------------------------


def test_round_trip_through_oasbud_file(small, tmp_path):
    from uslib import oasbud as data

    ds, _ = small
    sub = Dataset(ds.lesions[:4], source=ds.source, synthetic=True)
    path = data.save_oasbud(sub, tmp_path / "phantom.mat")
    back = data.load_oasbud(path, skip_samples=0)
    assert back.fingerprint == sub.fingerprint
    assert back.synthetic and back.keys == sub.keys
    assert list(back.patients) == list(sub.patients)
    echo = data.load_oasbud(path)  # default drops the 20 non-echo rows
    for a, b in zip(echo, sub):
        for sa, sb in zip(a.scans, b.scans):
            np.testing.assert_array_equal(sa.rf, sb.rf[20:])
            np.testing.assert_array_equal(sa.roi, sb.roi[20:])


def test_speckle_size_equals_the_psf_envelope_width():
    """For a Gaussian PSF the intensity autocovariance has the FWHM of the PSF envelope."""
    from uslib import phantom

    rf = phantom.simulate_speckle((512, 510), seed=2, depth_offset_mm=15.0)
    axial, lateral = phantom.speckle_size_mm(rf)
    ax_psf, lat_psf = phantom.psf_fwhm_mm(15.0 + 256 * 0.01925, focus_depth_mm=15.0 + 256 * 0.01925)
    assert axial == pytest.approx(ax_psf, rel=0.1)
    assert lateral == pytest.approx(float(lat_psf), rel=0.25)
