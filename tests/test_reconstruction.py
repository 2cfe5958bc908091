"""Tests of uslib.reconstruction against analytic oracles and an independent implementation."""

from __future__ import annotations

import numpy as np
import pytest

from uslib.reconstruction import FLOOR_DB, bmode, bmode_from_envelope, envelope, gray_levels, log_compress

FS_HZ = 40e6
FC_HZ = 5.3e6  # deliberately not on an FFT bin: the edges are not periodic
FM_HZ = 0.31e6
N = 3000
INNER = slice(N // 10, N - N // 10)  # away from the edges


def am_tone(phase: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(signal, modulation) of (1 + 0.5 cos(2 pi fm t)) cos(2 pi fc t + phase)."""
    t = np.arange(N) / FS_HZ
    mod = 1.0 + 0.5 * np.cos(2 * np.pi * FM_HZ * t)
    return mod * np.cos(2 * np.pi * FC_HZ * t + phase), mod


def reference_bmode(rf: np.ndarray, dr: float) -> np.ndarray:
    """Straightforward implementation of the paper's formula (numpy FFT, not scipy).

    Analytic signal by zeroing negative frequencies along depth, A = |analytic|,
    A_log = 20 log10(A / A_max), clip to [-DR, 0], map linearly to [0, 255], round.
    """
    x = rf.astype(float)
    n = x.shape[0]
    h = np.zeros(n)
    h[0] = 1.0
    if n % 2 == 0:
        h[n // 2] = 1.0
        h[1 : n // 2] = 2.0
    else:
        h[1 : (n + 1) // 2] = 2.0
    a = np.abs(np.fft.ifft(np.fft.fft(x, axis=0) * h[:, None], axis=0))
    a_log = 20 * np.log10(a / a.max())
    g = (np.clip(a_log, -dr, 0) + dr) / dr * 255
    return np.round(g).astype(np.uint8)


# --- envelope -----------------------------------------------------------------


def test_envelope_of_am_tone_is_its_modulation():
    x, mod = am_tone()
    env = envelope(x)
    assert env.dtype == np.float64 and env.shape == x.shape
    rel = np.abs(env[INNER] - mod[INNER]) / mod[INNER]
    assert rel.max() < 1e-2


def test_envelope_runs_along_depth_not_across_lines():
    phases = np.linspace(0, np.pi, 7)
    cols = [am_tone(p) for p in phases]
    rf = np.stack([c[0] for c in cols], axis=1)  # (n_samples, n_lines), each column an AM tone
    mod = cols[0][1]
    env = envelope(rf)  # default axis=0
    rel = np.abs(env[INNER] - mod[INNER, None]) / mod[INNER, None]
    assert rel.max() < 1e-2
    # the transposed layout with axis=1 gives the same envelope
    np.testing.assert_allclose(envelope(rf.T, axis=1).T, env, rtol=1e-12, atol=1e-12)
    # across lines (the known bug) it is not the modulation
    wrong = envelope(rf, axis=1)
    assert (np.abs(wrong[INNER] - mod[INNER, None]) / mod[INNER, None]).max() > 0.1


def test_envelope_accepts_int16_and_rejects_bad_input():
    rf = (1000 * am_tone()[0]).astype(np.int16)[:, None]
    assert envelope(rf).dtype == np.float64
    with pytest.raises(ValueError, match="NaN"):
        envelope(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="empty"):
        envelope(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="axis"):
        envelope(np.zeros((4, 3)), axis=2)
    with pytest.raises(TypeError):
        envelope(np.array([["a"]]))


# --- log compression and grey levels -----------------------------------------------


def test_known_amplitude_ratio_gives_known_db():
    env = np.array([[2.0, 0.2], [0.02, 2e-3]])
    np.testing.assert_allclose(log_compress(env), [[0.0, -20.0], [-40.0, -60.0]], atol=1e-12)
    # explicit A_max: A / A_max = 0.1 -> -20 dB, 2 / 0.2 -> +20 dB
    np.testing.assert_allclose(log_compress(env, a_max=0.2), [[20.0, 0.0], [-20.0, -40.0]], atol=1e-12)


def test_log_compress_zero_gets_floor_never_inf():
    db = log_compress(np.array([1.0, 0.0, 1e-300]))
    assert np.all(np.isfinite(db))
    assert db[0] == 0.0 and db[1] == FLOOR_DB and db[2] == FLOOR_DB


@pytest.mark.parametrize(
    "env, kwargs, match",
    [
        (np.zeros((3, 3)), {}, "all zero"),
        (np.array([1.0, -0.5]), {}, "negative"),
        (np.array([1.0, np.inf]), {}, "NaN or infinite"),
        (np.array([1.0, 0.5]), {"a_max": 0.0}, "a_max"),
        (np.array([1.0, 0.5]), {"a_max": np.nan}, "a_max"),
    ],
)
def test_log_compress_errors(env, kwargs, match):
    with pytest.raises(ValueError, match=match):
        log_compress(env, **kwargs)


def test_gray_levels_mapping():
    assert gray_levels(np.array(-20.0), 40) == pytest.approx(127.5, abs=1e-12)
    assert gray_levels(np.array(-20.0), 50) == pytest.approx(153.0, abs=1e-12)
    g = gray_levels(np.array([-1000.0, -60.0, -40.0, 0.0, 6.0]), 40)
    np.testing.assert_allclose(g, [0.0, 0.0, 0.0, 255.0, 255.0])
    # linear in between: slope 255 / DR
    db = np.linspace(-60, 0, 13)
    np.testing.assert_allclose(np.diff(gray_levels(db, 60)), 255 / 60 * 5)


@pytest.mark.parametrize("dr", [0, -40, np.nan, np.inf])
def test_gray_levels_rejects_bad_dynamic_range(dr):
    with pytest.raises(ValueError, match="dynamic_range_db"):
        gray_levels(np.zeros(3), dr)


# --- B-mode ---------------------------------------------------------------------


def test_bmode_from_envelope_known_levels_and_rounding():
    env = np.array([[1.0, 0.1], [1e-3, 0.0]])
    np.testing.assert_array_equal(bmode_from_envelope(env, 40), [[255, 128], [0, 0]])  # 127.5 -> 128
    np.testing.assert_array_equal(bmode_from_envelope(env, 50), [[255, 153], [0, 0]])
    np.testing.assert_array_equal(bmode_from_envelope(env, 60), [[255, 170], [0, 0]])
    # A_max given larger than the maximum: the brightest sample is no longer 255
    assert bmode_from_envelope(env, 40, a_max=10.0)[0, 0] == 128


def test_bmode_matches_independent_implementation():
    rng = np.random.default_rng(42)
    rf = rng.normal(0, 3000, size=(512, 96)).round().astype(np.int16)
    for dr in (40, 50, 60):
        got = bmode(rf, dr)
        ref = reference_bmode(rf, dr)
        assert got.dtype == np.uint8 and got.shape == rf.shape
        diff = np.abs(got.astype(int) - ref.astype(int))
        assert diff.max() <= 1
        assert (diff == 0).mean() > 0.99
        assert got.max() == 255


def test_bmode_from_one_envelope_equals_bmode():
    rng = np.random.default_rng(1)
    rf = rng.integers(-4000, 4000, size=(300, 40)).astype(np.int16)
    env = envelope(rf)
    for dr in (40, 50, 60):
        np.testing.assert_array_equal(bmode_from_envelope(env, dr), bmode(rf, dr))
    # wider dynamic range: never darker
    assert np.all(bmode(rf, 60) >= bmode(rf, 40))


@pytest.mark.parametrize(
    "rf, dr, exc, match",
    [
        (np.ones(10), 40, ValueError, "2-D"),
        (np.ones((4, 4, 2)), 40, ValueError, "2-D"),
        (np.ones((4, 4)), 0, ValueError, "dynamic_range_db"),
        (np.ones((4, 4)), -50, ValueError, "dynamic_range_db"),
        (np.full((4, 4), np.nan), 40, ValueError, "NaN"),
        (np.ones((4, 4)), "40", TypeError, "dynamic_range_db"),
    ],
)
def test_bmode_rejects_bad_input(rf, dr, exc, match):
    with pytest.raises(exc, match=match):
        bmode(rf, dr)
