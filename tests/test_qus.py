"""Tests for uslib.qus: envelope statistics against analytic Nakagami/Rayleigh oracles."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import signal, special

from uslib.data import OASBUD_ACQUISITION, Dataset, Lesion, Scan
from uslib.qus import (
    QUS_FEATURES,
    envelope_snr,
    kurtosis,
    nakagami_map,
    nakagami_mle,
    nakagami_moments,
    qus_features,
    qus_table,
    roi_statistics,
    skewness,
)

ACQ = OASBUD_ACQUISITION
RAYLEIGH_SNR = math.sqrt(math.pi / (4 - math.pi))  # 1.913
RAYLEIGH_SKEW = 2 * (math.pi - 3) * math.sqrt(math.pi) / (4 - math.pi) ** 1.5  # 0.631
RAYLEIGH_EXCESS_KURT = -(6 * math.pi**2 - 24 * math.pi + 16) / (4 - math.pi) ** 2  # 0.245


def se_mle(m, n):
    """Asymptotic SE of the Nakagami shape MLE (inverse Fisher information of the Gamma shape)."""
    return math.sqrt(1.0 / (n * (special.polygamma(1, m) - 1.0 / m)))


def se_moments(m, n):
    """Asymptotic SE of the moment estimator Ω²/Var(A²) (delta method): sqrt(2 m (m+1) / n)."""
    return math.sqrt(2.0 * m * (m + 1.0) / n)


def rayleigh(rng, shape, sigma=1.0):
    return np.abs(sigma * (rng.normal(size=shape) + 1j * rng.normal(size=shape)))


def nakagami(rng, m, omega, shape):
    return np.sqrt(rng.gamma(m, omega / m, size=shape))


def speckle_rf(rng, shape=(800, 64)):
    """Band-limited Gaussian RF: white scatterers convolved with a 10 MHz Gaussian pulse along depth."""
    t = (np.arange(-24, 25)) / ACQ.fs_hz
    pulse = np.cos(2 * np.pi * ACQ.f0_hz * t) * np.exp(-0.5 * (t / 0.1e-6) ** 2)
    scat = rng.normal(size=(shape[0] + len(pulse) - 1, shape[1]))
    return np.apply_along_axis(lambda c: np.convolve(c, pulse, mode="valid"), 0, scat)


# --------------------------------------------------------------------------- estimators
def test_rayleigh_gives_m_one_and_known_snr():
    rng = np.random.default_rng(0)
    n = 60_000
    a = rayleigh(rng, n, sigma=1.5)
    m_mle, om_mle = nakagami_mle(a)
    m_mom, om_mom = nakagami_moments(a)
    assert abs(m_mle - 1.0) < 3 * se_mle(1.0, n)
    assert abs(m_mom - 1.0) < 3 * se_moments(1.0, n)
    omega = 2 * 1.5**2
    assert om_mle == om_mom
    assert abs(om_mle - omega) < 3 * omega / math.sqrt(n)  # Var(A²) = Ω²/m
    assert envelope_snr(a) == pytest.approx(RAYLEIGH_SNR, rel=0.02)
    assert skewness(a) == pytest.approx(RAYLEIGH_SKEW, abs=0.05)
    assert kurtosis(a) == pytest.approx(RAYLEIGH_EXCESS_KURT, abs=0.1)


@pytest.mark.parametrize("m", [0.5, 2.0, 5.0])
def test_nakagami_shape_and_scale_recovered(m):
    rng = np.random.default_rng(int(m * 10))
    n, omega = 40_000, 3.0
    a = nakagami(rng, m, omega, n)
    m_mle, om = nakagami_mle(a)
    m_mom, _ = nakagami_moments(a)
    assert abs(m_mle - m) < 3 * se_mle(m, n)
    assert abs(m_mom - m) < 3 * se_moments(m, n)
    assert abs(om - omega) < 3 * omega / math.sqrt(m * n)
    # Nakagami SNR: Γ(m+½)/sqrt(m Γ(m)² - Γ(m+½)²)
    g = special.gamma(m + 0.5) / special.gamma(m)
    assert envelope_snr(a) == pytest.approx(g / math.sqrt(m - g * g), rel=0.03)


def test_standard_errors_used_above_match_repeated_draws():
    # The 3-SE tolerances are only meaningful if the SE formulas are right.
    rng = np.random.default_rng(7)
    m, n, reps = 2.0, 400, 300
    draws = nakagami(rng, m, 1.0, (reps, n))
    mle = np.array([nakagami_mle(d)[0] for d in draws])
    mom = np.array([nakagami_moments(d)[0] for d in draws])
    assert mle.std() == pytest.approx(se_mle(m, n), rel=0.2)
    assert mom.std() == pytest.approx(se_moments(m, n), rel=0.25)
    assert mle.std() < mom.std()  # MLE is the more efficient estimator
    assert abs(mle.mean() - m) < 4 * se_mle(m, n) / math.sqrt(reps) + 0.02 * m  # small O(1/n) bias


def test_mle_solves_likelihood_equation():
    rng = np.random.default_rng(3)
    a = nakagami(rng, 1.7, 2.0, 5000)
    m, omega = nakagami_mle(a)
    delta = math.log(omega) - np.mean(np.log(a**2))
    assert math.log(m) - special.digamma(m) == pytest.approx(delta, rel=1e-9)


def test_constant_envelope_gives_infinite_m():
    a = np.full(100, 2.0)
    assert nakagami_moments(a) == (math.inf, 4.0)
    assert nakagami_mle(a)[0] == math.inf
    assert envelope_snr(a) == math.inf


def test_scale_invariance_of_shape_statistics():
    rng = np.random.default_rng(4)
    a = nakagami(rng, 0.8, 1.0, 10_000)
    f1 = roi_statistics(a[None, :], np.ones((1, a.size), bool))
    f3 = roi_statistics(3 * a[None, :], np.ones((1, a.size), bool))
    for name in ("nakagami_m_mle", "nakagami_m_moments", "envelope_snr", "skewness", "kurtosis"):
        assert f3[name] == pytest.approx(f1[name], rel=1e-9), name
    assert f3["nakagami_omega"] == pytest.approx(9 * f1["nakagami_omega"], rel=1e-12)


# --------------------------------------------------------------------------- ROI / scan / table
def test_roi_statistics_pools_roi_samples_only():
    rng = np.random.default_rng(5)
    env = rayleigh(rng, (200, 100))
    roi = np.zeros(env.shape, bool)
    roi[50:150, 20:80] = True
    env[~roi] = 1e3  # anything outside must not matter
    f = roi_statistics(env, roi)
    assert list(f) == list(QUS_FEATURES)
    inside = env[roi]
    assert f["nakagami_m_mle"] == nakagami_mle(inside)[0]
    assert f["nakagami_m_moments"] == nakagami_moments(inside)[0]
    assert f["nakagami_omega"] == pytest.approx(np.mean(inside**2))
    assert f["envelope_snr"] == envelope_snr(inside)
    assert f["skewness"] == skewness(inside) and f["kurtosis"] == kurtosis(inside)


def _scan(rng, scale=1.0):
    rf = speckle_rf(rng) * scale
    roi = np.zeros(rf.shape, bool)
    roi[200:600, 10:54] = True
    return Scan(rf=rf, roi=roi, acquisition=ACQ)


def test_qus_features_of_speckle_are_rayleigh_and_gain_invariant():
    scan = _scan(np.random.default_rng(6))
    f = qus_features(scan)
    # Band-limited Gaussian RF has a Rayleigh envelope; samples are correlated over
    # ~1 pulse length along depth, hence the loose tolerance.
    assert f["nakagami_m_mle"] == pytest.approx(1.0, abs=0.1)
    assert f["envelope_snr"] == pytest.approx(RAYLEIGH_SNR, rel=0.06)
    # A gain of 3 (any dynamic range / display setting) leaves the shape statistics alone.
    g = qus_features(Scan(rf=3 * scan.rf, roi=scan.roi, acquisition=ACQ))
    for name in ("nakagami_m_mle", "nakagami_m_moments", "envelope_snr", "skewness", "kurtosis"):
        assert g[name] == pytest.approx(f[name], rel=1e-9), name
    assert g["nakagami_omega"] == pytest.approx(9 * f["nakagami_omega"], rel=1e-9)
    # A supplied envelope is used as is.
    env = np.abs(signal.hilbert(scan.rf, axis=0))
    assert qus_features(scan, envelope=env) == pytest.approx(f, rel=1e-9)
    assert qus_features(scan, envelope=2 * env)["nakagami_omega"] == pytest.approx(4 * f["nakagami_omega"])


def test_qus_table_one_row_per_lesion_mean_over_scans():
    rng = np.random.default_rng(8)
    s1, s2, s3 = _scan(rng), _scan(rng, scale=2.0), _scan(rng)
    ds = Dataset(
        [
            Lesion(id="1ab", key="1ab", patient="ab", label=0, birads="3", scans=(s1, s2)),
            Lesion(id="2cd", key="2cd", patient="cd", label=1, birads="5", scans=(s3,)),
        ],
        source="hand-made speckle",
        synthetic=True,
    )
    table = qus_table(ds)
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == ["lesion", "patient", "label", *QUS_FEATURES]
    assert table["lesion"].tolist() == ["1ab", "2cd"]
    assert table["patient"].tolist() == ["ab", "cd"]
    assert table["label"].tolist() == [0, 1]
    f1, f2, f3 = qus_features(s1), qus_features(s2), qus_features(s3)
    for name in QUS_FEATURES:
        assert table.loc[0, name] == pytest.approx((f1[name] + f2[name]) / 2, rel=1e-12)
        assert table.loc[1, name] == pytest.approx(f3[name], rel=1e-12)


def test_qus_table_names_bad_scan():
    rng = np.random.default_rng(9)
    bad = _scan(rng)
    bad = Scan(rf=bad.rf, roi=np.zeros_like(bad.roi), acquisition=ACQ)
    ds = Dataset([Lesion(id="7ef", key="7ef", patient="ef", label=1, birads="4c", scans=(_scan(rng), bad))])
    with pytest.raises(ValueError, match=r"lesion '7ef', scan 1: roi is empty"):
        qus_table(ds)


# --------------------------------------------------------------------------- parametric map
@pytest.mark.parametrize("estimator", ["moments", "mle"])
def test_map_of_homogeneous_rayleigh_field_is_one(estimator):
    rng = np.random.default_rng(10)
    env = rayleigh(rng, (600, 200))
    m, omega = nakagami_map(env, acquisition=ACQ, window_mm=2.0, estimator=estimator, step_px=2)
    n_win = 105 * 27  # 2 mm -> 105 samples x 27 lines
    se = se_moments(1, n_win) if estimator == "moments" else se_mle(1, n_win)
    assert m.shape == (300, 100) and omega.shape == m.shape
    assert abs(np.median(m) - 1.0) < 0.03
    # iid samples, so the SE is exact. Interior windows (half a window from the edge,
    # on the step-2 grid): 5 SE over ~40 independent windows. Edge windows reuse mirrored
    # samples (down to n/4 distinct ones at a corner, SE x2): 8 SE.
    inner = (slice(26, -26), slice(7, -7))
    assert np.all(np.abs(m[inner] - 1.0) < 5 * se)
    assert np.all(np.abs(m - 1.0) < 8 * se)
    assert np.all(np.abs(omega[inner] - 2.0) < 5 * 2.0 / math.sqrt(n_win))


@pytest.mark.parametrize("estimator", ["moments", "mle"])
def test_map_window_matches_pooled_estimator(estimator):
    # Default window: three 2-cycle pulse lengths = 0.92 mm -> 49 samples x 13 lines.
    rng = np.random.default_rng(11)
    env = nakagami(rng, 1.5, 2.0, (300, 80))
    m, omega = nakagami_map(env, acquisition=ACQ, estimator=estimator)
    assert m.shape == env.shape
    pooled = nakagami_mle if estimator == "mle" else nakagami_moments
    for i, j in [(100, 40), (200, 20), (24, 6)]:
        win = env[i - 24 : i + 25, j - 6 : j + 7]
        m_ref, om_ref = pooled(win)
        assert m[i, j] == pytest.approx(m_ref, rel=1e-6)
        assert omega[i, j] == pytest.approx(om_ref, rel=1e-9)


def test_map_shows_two_regions_and_decimated_grid():
    rng = np.random.default_rng(12)
    nz, nx = 500, 160
    env = np.empty((nz, nx))
    env[:, :80] = nakagami(rng, 0.5, 1.0, (nz, 80))  # pre-Rayleigh, weak
    env[:, 80:] = nakagami(rng, 3.0, 4.0, (nz, 80))  # post-Rayleigh, strong
    full_m, full_om = nakagami_map(env, acquisition=ACQ, window_mm=1.5)
    m, om = nakagami_map(env, acquisition=ACQ, window_mm=1.5, step_px=(5, 4))
    assert m.shape == (100, 40)
    np.testing.assert_allclose(m, full_m[::5, ::4], rtol=1e-12)
    np.testing.assert_allclose(om, full_om[::5, ::4], rtol=1e-12)
    half = 11  # half window in lines (1.5 mm / 0.0747 mm -> 21 lines)
    left, right = full_m[:, : 80 - half], full_m[:, 80 + half :]
    assert np.median(left) == pytest.approx(0.5, rel=0.1)
    assert np.median(right) == pytest.approx(3.0, rel=0.1)
    assert left.max() < right.min()
    assert np.median(full_om[:, : 80 - half]) == pytest.approx(1.0, rel=0.1)
    assert np.median(full_om[:, 80 + half :]) == pytest.approx(4.0, rel=0.1)


def test_map_constant_window_is_inf():
    env = np.ones((100, 40))
    env[:, 30:] = np.random.default_rng(0).rayleigh(size=(100, 10))
    m, omega = nakagami_map(env, acquisition=ACQ, window_mm=0.5)
    assert np.isinf(m[50, 5]) and omega[50, 5] == pytest.approx(1.0)
    assert np.isfinite(m[50, 35])


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "func", [nakagami_moments, nakagami_mle, envelope_snr, skewness, kurtosis], ids=lambda f: f.__name__
)
def test_bad_envelope_raises(func):
    with pytest.raises(ValueError, match="empty"):
        func(np.array([]))
    with pytest.raises(ValueError, match="negative"):
        func(np.array([1.0, -0.5, 2.0, 3.0]))
    with pytest.raises(ValueError, match="NaN"):
        func(np.array([1.0, np.nan, 2.0, 3.0]))
    with pytest.raises(ValueError, match="real"):
        func(np.array([1.0, 2.0, 3.0, 4.0]) + 0j)
    with pytest.raises(ValueError, match="at least"):
        func(np.array([1.0]))


def test_bad_roi_and_map_arguments_raise():
    env = np.ones((10, 10))
    with pytest.raises(ValueError, match="roi is empty"):
        roi_statistics(env, np.zeros((10, 10), bool))
    with pytest.raises(ValueError, match="shape"):
        roi_statistics(env, np.ones((10, 11), bool))
    with pytest.raises(ValueError, match="boolean"):
        roi_statistics(env, np.full((10, 10), 2))
    with pytest.raises(ValueError, match="zero"):
        nakagami_mle(np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="2-D"):
        nakagami_map(np.ones(10), acquisition=ACQ)
    with pytest.raises(ValueError, match="negative"):
        nakagami_map(-env, acquisition=ACQ)
    with pytest.raises(ValueError, match="estimator"):
        nakagami_map(env, acquisition=ACQ, estimator="median")
    with pytest.raises(ValueError, match="window_mm"):
        nakagami_map(env, acquisition=ACQ, window_mm=0)
    with pytest.raises(ValueError, match="step_px"):
        nakagami_map(env, acquisition=ACQ, step_px=0)
    with pytest.raises(ValueError, match="zeros"):
        nakagami_map(np.zeros((10, 10)) + np.eye(10), acquisition=ACQ, estimator="mle")


def test_roi_db_statistics_recovers_a_planted_contrast():
    from types import SimpleNamespace

    from uslib.qus import roi_db_statistics

    rng = np.random.default_rng(0)
    env = np.abs(rng.normal(size=(300, 200)) + 1j * rng.normal(size=(300, 200)))
    roi = np.zeros(env.shape, bool)
    roi[100:200, 50:150] = True
    env[roi] *= 0.1  # -20 dB
    r = roi_db_statistics(SimpleNamespace(rf=None, roi=roi), dynamic_ranges_db=(40,), envelope=env)
    assert r["contrast_db"] == pytest.approx(-20.0, abs=0.3)
    assert r["nakagami_m"] == pytest.approx(1.0, abs=0.05)  # Rayleigh inside
    assert 0 < r["black_fraction_40"] < 0.2 and r["roi_mean_db_40"] >= -40
    with pytest.raises(ValueError, match="background"):
        roi_db_statistics(SimpleNamespace(rf=None, roi=np.ones(env.shape, bool)), envelope=env)
