import numpy as np
import pandas as pd
import pytest

from uslib.featurespace import reconstruction_shift


def _manifest(n_lesions=4, ranges=(40.0, 50.0, 60.0)):
    rows = [
        {"lesion": f"l{i}", "scan": 0, "margin_mm": 2.0, "dynamic_range_db": r}
        for i in range(n_lesions)
        for r in ranges
    ]
    return pd.DataFrame(rows)


def test_known_distances_without_standardisation():
    # Lesion i sits at (i, 0); the 60 dB reconstruction moves every crop by (0, 1).
    m = _manifest(n_lesions=2, ranges=(40.0, 60.0))
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float)
    out = reconstruction_shift(x, m, standardize=False)
    assert len(out) == 1
    r = out.iloc[0]
    assert r.same_crop_distance == pytest.approx(1.0)
    assert r.between_lesion_distance == pytest.approx(1.0)  # lesions 1 apart at each range
    assert r.ratio == pytest.approx(1.0)
    assert r.n_crops == 2


def test_shift_grows_with_the_range_gap():
    rng = np.random.default_rng(0)
    m = _manifest(n_lesions=6)
    base = rng.normal(size=(6, 5))
    drift = rng.normal(size=5)
    x = np.array([base[int(les[1:])] + (dr - 40) / 10 * 0.3 * drift for les, dr in zip(m.lesion, m.dynamic_range_db)])
    out = reconstruction_shift(x, m).set_index(["range_a", "range_b"])
    assert out.loc[(40.0, 60.0), "ratio"] > out.loc[(40.0, 50.0), "ratio"] > 0


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="do not match"):
        reconstruction_shift(np.zeros((3, 2)), _manifest(n_lesions=2))
