"""The unbiased pass@k estimator, exact in float64."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from gdro_core._validation import fail, type_fail

__all__ = ["pass_at_k"]


def _as_int(name: str, value: Any) -> NDArray[np.int64]:
    arr = np.asarray(value)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise type_fail(name, "an integer or an array of integers", value)
    return arr.astype(np.int64)


def pass_at_k(n: Any, c: Any, k: Any) -> Any:
    r"""Unbiased estimate of pass@k from ``c`` correct answers among ``n`` samples.

    .. math::

        \mathrm{pass@}k = 1 - \binom{n-c}{k} \Big/ \binom{n}{k}
                        = 1 - \prod_{j=0}^{k-1} \frac{n-c-j}{n-j}

    The product form never forms a factorial, so it is accurate to a few ulps for any ``n``
    (tested against exact rationals up to ``n = 1024``). It is 1 when ``n - c < k``.

    Args:
        n: samples per problem, int or int array (broadcast with ``c`` and ``k``).
        c: correct samples, ``0 <= c <= n``.
        k: the k of pass@k, ``1 <= k <= n``.

    Returns:
        float64 (a Python float when all inputs are scalars).

    Raises:
        TypeError: a non-integer input (floats and bools included).
        ValueError: ``k < 1``, ``c < 0``, ``k > n`` or ``c > n``.

    Examples:
        >>> pass_at_k(4, 1, 1)
        0.25
        >>> round(pass_at_k(8, 2, 4), 6)
        0.785714
        >>> pass_at_k([4, 4], [0, 4], 2).tolist()
        [0.0, 1.0]
    """
    scalar = all(np.ndim(x) == 0 for x in (n, c, k))
    n_a, c_a, k_a = np.broadcast_arrays(_as_int("n", n), _as_int("c", c), _as_int("k", k))
    for name, bad, val in (
        ("k", k_a < 1, k_a),
        ("c", c_a < 0, c_a),
    ):
        if bad.any():
            raise fail(name, ">= 1" if name == "k" else ">= 0", int(val[bad].flat[0]))
    if (k_a > n_a).any():
        i = np.flatnonzero((k_a > n_a).ravel())[0]
        raise fail("k", f"<= n (n = {int(n_a.flat[i])})", int(k_a.flat[i]))
    if (c_a > n_a).any():
        i = np.flatnonzero((c_a > n_a).ravel())[0]
        raise fail("c", f"<= n (n = {int(n_a.flat[i])})", int(c_a.flat[i]))
    miss = (n_a - c_a).astype(np.float64)
    tot = n_a.astype(np.float64)
    ratio = np.ones(n_a.shape, dtype=np.float64)
    kmax = int(k_a.max()) if k_a.size else 0
    for j in range(kmax):
        live = j < k_a
        term = np.where(live, np.maximum(miss - j, 0.0) / np.where(live, tot - j, 1.0), 1.0)
        ratio *= term
    out = 1.0 - ratio
    return float(out) if scalar else out
