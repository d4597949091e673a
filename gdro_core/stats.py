"""Confidence intervals for the reports: Student-t intervals of a mean, plain numpy.

The adapters and benchmarks compare runs over seeds (a paired difference per seed) or a policy
before and after training (a paired difference per held-out prompt); both use :func:`mean_ci`.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["mean_ci", "t_quantile_975"]

# two-sided 95% Student-t quantiles t_{0.975, df}, df = 1..30
_T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (1.96 beyond 30).

    Args:
        df: Degrees of freedom, an integer >= 1.

    Returns:
        The quantile, from a table for ``df <= 30`` (three decimals), else the normal 1.96.

    Raises:
        ValueError: If ``df < 1``.

    Examples:
        >>> t_quantile_975(1), t_quantile_975(4), t_quantile_975(100)
        (12.706, 2.776, 1.96)
        >>> t_quantile_975(0)
        Traceback (most recent call last):
            ...
        ValueError: df must be an integer >= 1; got 0
    """
    if isinstance(df, bool) or not isinstance(df, int | np.integer) or df < 1:
        raise ValueError(f"df must be an integer >= 1; got {df!r}")
    return _T975[int(df) - 1] if df <= 30 else 1.96


def mean_ci(values: ArrayLike) -> tuple[float, float]:
    """Mean and the half-width of its two-sided 95% Student-t interval.

    Non-finite values are dropped. One value has no interval (half-width NaN); no value gives
    ``(nan, nan)``.

    Args:
        values: float (n,) observations, e.g. a paired difference per seed or per prompt.

    Returns:
        ``(mean, half_width)``: the interval is ``mean +- half_width``.

    Examples:
        >>> m, h = mean_ci([1.0, 2.0, 3.0]); round(m, 3), round(h, 3)
        (2.0, 2.484)
        >>> mean_ci([0.7, float("nan")])  # non-finite values are dropped; one value: no CI
        (0.7, nan)
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan
    if v.size == 1:
        return float(v[0]), math.nan
    half = t_quantile_975(int(v.size) - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return float(v.mean()), half
