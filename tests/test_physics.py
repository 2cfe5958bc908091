"""Tests of uslib.physics against analytic oracles on small arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from uslib import physics
from uslib.reconstruction import envelope

FS_HZ = 40e6
F0_HZ = 10e6


def gaussian_pulse(n: int, *, fc_hz: float, bandwidth_hz: float, centre: int) -> tuple[np.ndarray, np.ndarray]:
    """(rf, envelope) of a Gaussian-enveloped cosine whose amplitude spectrum has -6 dB width ``bandwidth_hz``."""
    sigma_f = bandwidth_hz / (2 * math.sqrt(2 * math.log(2)))
    sigma_t = 1.0 / (2 * math.pi * sigma_f)
    t = (np.arange(n) - centre) / FS_HZ
    env = np.exp(-0.5 * (t / sigma_t) ** 2)
    return env * np.cos(2 * np.pi * fc_hz * t), env


def test_spectrum_of_a_gaussian_pulse_has_its_centre_and_6db_band():
    rf, _ = gaussian_pulse(4096, fc_hz=8e6, bandwidth_hz=6e6, centre=2048)
    f, p = physics.power_spectrum_db(rf, FS_HZ, window="boxcar")
    lo, hi = physics.band_edges_hz(f, p)
    assert (lo + hi) / 2 == pytest.approx(8e6, rel=2e-3)
    assert hi - lo == pytest.approx(6e6, rel=2e-3)


def test_spectrum_averages_lines_and_runs_along_depth():
    rf, _ = gaussian_pulse(1024, fc_hz=F0_HZ, bandwidth_hz=7e6, centre=512)
    lines = np.stack([rf, 2 * rf, 0.5 * rf], axis=1)
    f1, p1 = physics.power_spectrum_db(rf, FS_HZ)
    f3, p3 = physics.power_spectrum_db(lines, FS_HZ)
    np.testing.assert_allclose(f1, f3)
    np.testing.assert_allclose(p1, p3, atol=1e-9)  # same shape, scaled lines: same normalised spectrum
    ft, pt = physics.power_spectrum_db(lines.T, FS_HZ, axis=1)
    np.testing.assert_allclose(pt, p3, atol=1e-9)


def test_band_edges_need_the_level_on_both_sides():
    f = np.linspace(0, 10, 11)
    with pytest.raises(ValueError, match="does not fall"):
        physics.band_edges_hz(f, -0.1 * f)  # peak at 0, never -6 dB on the left
    with pytest.raises(ValueError):
        physics.band_edges_hz(f, -f, level_db=3.0)


def test_axial_resolution_is_c_over_2b_and_matches_a_gaussian_pulse_fwhm():
    assert physics.axial_resolution_mm(7e6, 1540.0) == pytest.approx(0.11)
    # The FWHM of a Gaussian pulse envelope of -6 dB bandwidth B is (4 ln2 / pi) / B in time.
    _, env = gaussian_pulse(4001, fc_hz=F0_HZ, bandwidth_hz=7e6, centre=2000)
    fwhm_samples = np.sum(env >= 0.5)
    fwhm_mm = fwhm_samples * 1540.0 / (2 * FS_HZ) * 1e3
    assert fwhm_mm == pytest.approx(4 * math.log(2) / math.pi * physics.axial_resolution_mm(7e6), abs=0.02)


def test_rayleigh_snr_against_sampled_rayleigh_variables():
    assert physics.rayleigh_snr() == pytest.approx(1.9131, abs=1e-4)
    a = np.random.default_rng(0).rayleigh(scale=3.0, size=400_000)
    assert a.mean() / a.std() == pytest.approx(physics.rayleigh_snr(), rel=5e-3)


def test_attenuation_is_linear_in_depth_and_frequency():
    z = np.array([0.0, 10.0, 40.0])
    np.testing.assert_allclose(physics.attenuation_loss_db(z, 10e6, 0.75), [0.0, 15.0, 60.0])
    np.testing.assert_allclose(physics.attenuation_loss_db(z, 5e6, 0.75), [0.0, 7.5, 30.0])
    with pytest.raises(ValueError):
        physics.attenuation_loss_db(z, 10e6, -1.0)


def test_tgc_undoes_a_known_exponential_loss():
    z_mm = np.linspace(0, 40, 81)
    slope = -12.0  # dB/cm
    env = np.ones((z_mm.size, 5)) * 10 ** (slope * z_mm / 10 / 20)[:, None]
    profile = physics.depth_profile_db(env)
    s, b = physics.fit_slope_db_per_cm(z_mm, profile)
    assert s == pytest.approx(slope) and b == pytest.approx(0.0, abs=1e-9)
    flat = physics.apply_tgc(env, z_mm, -s)
    np.testing.assert_allclose(flat, 1.0)
    with pytest.raises(ValueError, match="rows"):
        physics.apply_tgc(env, z_mm[:-1], 1.0)


def test_depth_profile_leaves_out_excluded_pixels_and_empty_rows_are_nan():
    env = np.array([[2.0, 2.0], [1.0, 100.0], [3.0, 3.0]])
    excl = np.array([[False, False], [False, True], [True, True]])
    p = physics.depth_profile_db(env, exclude=excl)
    np.testing.assert_allclose(p[:2], [10 * np.log10(4.0), 0.0])
    assert np.isnan(p[2])


def test_fit_slope_ignores_nan():
    z = np.array([0.0, 10.0, 20.0, 30.0])
    assert physics.fit_slope_db_per_cm(z, [0.0, -1.0, np.nan, -3.0])[0] == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        physics.fit_slope_db_per_cm(z, [np.nan, np.nan, np.nan, 1.0])


def test_iq_envelope_of_a_gaussian_pulse_equals_its_analytic_envelope():
    rf, env = gaussian_pulse(1024, fc_hz=F0_HZ, bandwidth_hz=7e6, centre=512)
    iq = physics.iq_demodulate(rf, FS_HZ, F0_HZ)
    assert np.max(np.abs(np.abs(iq) - env)) < 0.01
    # the phase of the baseband signal is flat at the pulse's centre (carrier exactly at f0)
    assert abs(np.angle(iq[512])) < 0.01


def test_iq_envelope_tracks_a_downshifted_echo_and_agrees_with_hilbert():
    rf, env = gaussian_pulse(2048, fc_hz=7.5e6, bandwidth_hz=6e6, centre=1024)
    lines = np.stack([rf, np.roll(rf, 300)], axis=1)
    iq_env = np.abs(physics.iq_demodulate(lines, FS_HZ, F0_HZ))
    assert physics.relative_rms_error(iq_env, envelope(lines)) < 0.01
    # along axis 1 as well
    iq_t = np.abs(physics.iq_demodulate(lines.T, FS_HZ, F0_HZ, axis=1))
    np.testing.assert_allclose(iq_t, iq_env.T, atol=1e-12)


def test_iq_rejects_bad_frequencies():
    with pytest.raises(ValueError):
        physics.iq_demodulate(np.zeros(64), FS_HZ, 25e6)
    with pytest.raises(ValueError):
        physics.iq_demodulate(np.zeros(64), FS_HZ, F0_HZ, cutoff_hz=30e6)


def test_relative_rms_error():
    assert physics.relative_rms_error([3.0, 4.0], [3.0, 4.0]) == 0.0
    assert physics.relative_rms_error([0.0, 0.0], [3.0, 4.0]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        physics.relative_rms_error([1.0], [0.0])
