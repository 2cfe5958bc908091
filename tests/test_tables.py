"""uslib.tables: one compact, one-line format for an estimate and its confidence interval."""

from __future__ import annotations

import pandas as pd
import pytest

from uslib.tables import compact, format_ci, format_ci_column


# --- format_ci --------------------------------------------------------------


def test_format_ci_is_one_compact_line():
    assert format_ci(0.7551, 0.5912, 0.9204) == "0.755 (0.59–0.92)"
    assert "\n" not in format_ci(0.5, 0.1, 0.9)
    assert format_ci(0.5, 0.1, 0.9, digits=2, ci_digits=1) == "0.50 (0.1–0.9)"


def test_format_ci_negative_bounds_use_a_minus_sign_not_the_dash():
    s = format_ci(-0.05, -0.12, 0.02)
    assert s == "−0.050 (−0.12–0.02)"
    assert "-" not in s  # ASCII hyphen would read as a range dash
    assert format_ci(-0.0001, -0.001, 0.0) == "0.000 (0.00–0.00)"  # no negative zero


def test_format_ci_nan_and_columns():
    assert format_ci(float("nan"), 0.1, 0.2).startswith("—")
    assert format_ci_column([0.5, 0.9], [0.3, 0.8], [0.7, 1.0]) == ["0.500 (0.30–0.70)", "0.900 (0.80–1.00)"]
    with pytest.raises(ValueError):
        format_ci_column([0.5], [0.1, 0.2], [0.9])


def test_compact_keeps_cells_on_one_line_and_rounds():
    t = pd.DataFrame({"AUC (95 % CI)": [format_ci(0.7551, 0.59, 0.92)], "p": [0.123456], "q": [float("nan")]})
    html = compact(t).to_html()
    assert "white-space: nowrap" in html
    assert "0.755 (0.59–0.92)" in html and ">0.123<" in html and "0.123456" not in html and ">—<" in html
