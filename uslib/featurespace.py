"""How far the reconstructions lie apart in a network's feature space.

Beyond the paper: a number for what its Tables I–II imply. For each pair of
dynamic ranges, the mean distance between the features of the *same* crop
reconstructed at the two ranges is compared with the mean distance between
crops of *different* lesions at one range.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

__all__ = ["reconstruction_shift"]


def _mean_pairwise_between_lesions(x: np.ndarray, lesions: np.ndarray) -> float:
    """Mean Euclidean distance over all pairs of rows that belong to different lesions."""
    sq = np.einsum("ij,ij->i", x, x)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)
    other = lesions[:, None] != lesions[None, :]
    return float(np.sqrt(d2[other]).mean())


def reconstruction_shift(features, manifest: pd.DataFrame, *, standardize: bool = True) -> pd.DataFrame:
    """Distance between reconstructions of the same crop, relative to the spread of lesions.

    Parameters
    ----------
    features : ndarray, shape (n_images, n_features)
        Row-aligned with ``manifest``.
    manifest : DataFrame
        Columns ``lesion``, ``scan``, ``margin_mm``, ``dynamic_range_db``.
    standardize : bool
        z-score every feature over all images first (default), so that no
        dimension dominates by scale.

    Returns
    -------
    DataFrame
        One row per pair of dynamic ranges: ``range_a``, ``range_b``,
        ``same_crop_distance`` (mean over crops present at both ranges),
        ``between_lesion_distance`` (mean of the two ranges' mean distance
        between different lesions' crops of the same margin), ``ratio`` (the
        first over the second) and ``n_crops``.

    Examples
    --------
    Features that ignore the dynamic range give a ratio of zero:

    >>> m = pd.DataFrame({"lesion": ["a", "a", "b", "b"], "scan": 0, "margin_mm": 2.0,
    ...                   "dynamic_range_db": [40.0, 60.0, 40.0, 60.0]})
    >>> x = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    >>> float(reconstruction_shift(x, m).ratio.iloc[0])
    0.0
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != len(manifest):
        raise ValueError(f"features of shape {x.shape} do not match a manifest of {len(manifest)} rows")
    if standardize:
        sd = x.std(axis=0)
        x = (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    m = manifest.reset_index(drop=True)
    crop = m["lesion"].astype(str) + "|" + m["scan"].astype(str) + "|" + m["margin_mm"].astype(str)
    dr = m["dynamic_range_db"].to_numpy(float)
    lesions = m["lesion"].astype(str).to_numpy()
    margins = m["margin_mm"].to_numpy(float)

    between = {}
    for r in np.unique(dr):
        vals = []
        for mg in np.unique(margins):
            sel = (dr == r) & (margins == mg)
            if len(np.unique(lesions[sel])) > 1:
                vals.append(_mean_pairwise_between_lesions(x[sel], lesions[sel]))
        between[r] = float(np.mean(vals)) if vals else np.nan

    rows = []
    for a, b in itertools.combinations(np.unique(dr), 2):
        ia = pd.Series(np.flatnonzero(dr == a), index=crop[dr == a].values)
        ib = pd.Series(np.flatnonzero(dr == b), index=crop[dr == b].values)
        common = ia.index.intersection(ib.index)
        if len(common) == 0:
            continue
        d = np.linalg.norm(x[ia[common].to_numpy()] - x[ib[common].to_numpy()], axis=1).mean()
        ref = np.nanmean([between[a], between[b]])
        rows.append(
            {
                "range_a": float(a),
                "range_b": float(b),
                "same_crop_distance": float(d),
                "between_lesion_distance": float(ref),
                "ratio": float(d / ref) if ref > 0 else np.nan,
                "n_crops": int(len(common)),
            }
        )
    return pd.DataFrame(rows)
