"""Formatting of the book's tables: compact cells that fit the page column.

Pure functions on numbers (no I/O). The chapters use :func:`format_ci` wherever
an estimate is shown with its confidence interval, so every table writes an
interval the same way, on one line: ``0.755 (0.59–0.92)``. Every other number
of a table or a generated page goes through :func:`format_number`: no
``-0.00``, no exponent notation (``5.100e+02``) for ordinary quantities, a
true minus sign, and the same decimals wherever the same ``digits`` is asked.
"""

from __future__ import annotations

import math
from typing import Iterable

__all__ = ["format_number", "quantity_table", "format_ci", "format_ci_column", "compact"]

EN_DASH = "\u2013"


def format_number(x, digits: int | None = None, *, signed: bool = False, significant: int = 4) -> str:
    """One number as the book prints it.

    Parameters
    ----------
    x : float, int or None
        NaN and None print as ``—``; an integer (or a float with no fraction
        when ``digits`` is None) prints without decimals.
    digits : int, optional
        Decimals. Without it, ``significant`` significant figures in fixed
        notation (never an exponent), trailing zeros dropped.
    signed : bool
        A ``+`` before positive numbers (for differences and changes).
    significant : int
        Significant figures when ``digits`` is None.

    Returns
    -------
    str
        With a true minus sign (U+2212); a value that rounds to zero prints
        without a sign (``0.00``, never ``−0.00``).

    Examples
    --------
    >>> format_number(510.0), format_number(40e6), format_number(0.000123456), format_number(3)
    ('510', '40000000', '0.0001235', '3')
    >>> format_number(-0.0004, 2), format_number(-4.2, 1), format_number(0.81, 3)
    ('0.00', '−4.2', '0.810')
    >>> format_number(0.012, 3, signed=True), format_number(-0.0001, 3, signed=True), format_number(None)
    ('+0.012', '0.000', '—')
    """
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, bool):
        return str(x)
    v = float(x)
    if math.isinf(v):
        return "\u2212∞" if v < 0 else "∞"
    if digits is None:
        if isinstance(x, int) or v.is_integer() and abs(v) >= 1:
            s = f"{v:.0f}"
        else:
            magnitude = math.floor(math.log10(abs(v))) if v else 0
            s = f"{v:.{max(0, significant - 1 - magnitude)}f}"
            if "." in s:
                s = s.rstrip("0").rstrip(".")
    else:
        s = f"{v:.{digits}f}"
    if s.startswith("-") and float(s) == 0:  # no "-0.00"
        s = s[1:]
    if signed and not s.startswith("-") and float(s) != 0:
        s = "+" + s
    return s.replace("-", "\u2212")


def quantity_table(values: dict, *, name: str = "value", digits: dict | None = None):
    """A one-column table of named quantities (e.g. an acquisition's ``fs_hz``, ``dz_mm``), each by :func:`format_number`.

    pandas would print a column mixing 40 000 000 and 0.0193 in exponent
    notation (``4.000e+07``); here each row keeps its own scale.

    Examples
    --------
    >>> quantity_table({"fs_hz": 40e6, "c_m_s": 1540.0, "dz_mm": 0.01925, "n_lines": 510})["value"].tolist()
    ['40000000', '1540', '0.01925', '510']
    """
    import pandas as pd

    digits = digits or {}
    return pd.Series({k: format_number(v, digits.get(k)) for k, v in values.items()}, name=name).to_frame()


def _fmt(x: float, digits: int) -> str:
    return format_number(x, digits)


def format_ci(estimate: float, low: float, high: float, *, digits: int = 3, ci_digits: int = 2) -> str:
    """An estimate with its confidence interval, on one line: ``0.755 (0.59–0.92)``.

    Parameters
    ----------
    estimate, low, high : float
        The point estimate and the interval's bounds. NaN prints as ``—``.
    digits : int
        Decimals of the estimate.
    ci_digits : int
        Decimals of the bounds (fewer than the estimate's, to keep the cell
        narrow: an interval is less precise than its centre anyway).

    Returns
    -------
    str
        ``"<estimate> (<low>–<high>)"`` with an en dash between the bounds and
        a true minus sign (U+2212) for negative numbers, so that a negative
        bound cannot be confused with the dash.

    Examples
    --------
    >>> format_ci(0.7551, 0.5912, 0.9204)
    '0.755 (0.59–0.92)'
    >>> format_ci(-0.05, -0.12, 0.021)
    '−0.050 (−0.12–0.02)'
    >>> format_ci(float("nan"), 0.1, 0.2)
    '— (0.10–0.20)'
    """
    return f"{_fmt(estimate, digits)} ({_fmt(low, ci_digits)}{EN_DASH}{_fmt(high, ci_digits)})"


def format_ci_column(
    estimates: Iterable[float], lows: Iterable[float], highs: Iterable[float], *, digits: int = 3, ci_digits: int = 2
) -> list[str]:
    """:func:`format_ci` over three equally long sequences (e.g. DataFrame columns).

    Examples
    --------
    >>> format_ci_column([0.5, 0.9], [0.3, 0.8], [0.7, 1.0])
    ['0.500 (0.30–0.70)', '0.900 (0.80–1.00)']
    """
    estimates, lows, highs = list(estimates), list(lows), list(highs)
    if not len(estimates) == len(lows) == len(highs):
        raise ValueError(f"lengths differ: {len(estimates)}, {len(lows)}, {len(highs)}")
    return [format_ci(e, lo, hi, digits=digits, ci_digits=ci_digits) for e, lo, hi in zip(estimates, lows, highs)]


def compact(table, *, precision: int = 3, font_size: str = "0.9em"):
    """A DataFrame styled to stay narrow in the book: data cells never wrap, a slightly smaller font.

    Without it the book theme squeezes a wide table into the column by
    wrapping each ``0.755 (0.59–0.92)`` cell at its dash and space, so one
    cell takes two lines. Numbers are shown with ``precision`` decimals and
    missing values as ``—``.

    Returns
    -------
    pandas.io.formats.style.Styler
        Display it as the last expression of a cell (HTML output).

    Examples
    --------
    >>> import pandas as pd
    >>> html = compact(pd.DataFrame({"AUC (95 % CI)": [format_ci(0.75, 0.6, 0.9)]})).to_html()
    >>> "white-space: nowrap" in html and "0.750 (0.60–0.90)" in html
    True
    """
    return (
        table.style.format(precision=precision, na_rep="—")
        .format_index(precision=precision, na_rep="—")
        .set_table_styles(
            [
                {"selector": "td", "props": f"white-space: nowrap; font-size: {font_size};"},
                {"selector": "th", "props": f"font-size: {font_size};"},
            ]
        )
    )
