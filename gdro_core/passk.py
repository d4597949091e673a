"""The unbiased pass@k estimator, exact in float64 (the correctly rounded value)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache
from math import comb
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gdro_core._validation import fail, type_fail

__all__ = ["check_ks", "pass_at_k"]


def check_ks(name: str, ks: Any, *, most: int | None = None, why: str = "") -> tuple[int, ...]:
    """The k values of logged pass@k metrics, checked: an integer >= 1 or a non-empty sequence of
    them, each at most ``most`` (the fewest rollouts a prompt gets, so every estimate is
    unbiased) when given. Returned sorted, without repeats.

    Args:
        name: how errors name the setting (``data.gdro.pass_at_k``).
        ks: the value given.
        most: the largest k allowed; None: no bound.
        why: what ``most`` is, for the error.

    Examples:
        >>> check_ks("pass_at_k", [4, 1, 4], most=4)
        (1, 4)
        >>> check_ks("pass_at_k", [1, 8], most=4, why="rollout.min")
        Traceback (most recent call last):
        ...
        ValueError: pass_at_k must be <= 4 (rollout.min: every prompt needs k rollouts for an unbiased estimate); got [1, 8]
    """
    if isinstance(ks, np.ndarray) and ks.ndim == 1:
        ks = ks.tolist()
    many = isinstance(ks, Sequence) and not isinstance(ks, (str, bytes))
    given = [ks] if isinstance(ks, numbers.Integral) else list(ks) if many else []
    if not given or any(isinstance(k, bool) or not isinstance(k, numbers.Integral) for k in given):
        raise fail(name, "an integer >= 1 or a non-empty list of them", _plain(ks))
    seq = [int(k) for k in given]
    if min(seq) < 1:
        raise fail(name, "an integer >= 1 or a non-empty list of them", seq)
    if most is not None and max(seq) > most:
        need = "every prompt needs k rollouts for an unbiased estimate"
        raise fail(name, f"<= {most} ({why}: {need})" if why else f"<= {most} ({need})", seq)
    return tuple(sorted(set(seq)))


def _plain(value: Any) -> Any:
    """A sequence as a list, for error messages (an OmegaConf ListConfig prints like one)."""
    return (
        list(value)
        if isinstance(value, Sequence) and not isinstance(value, (str, bytes))
        else value
    )


def _as_int(name: str, value: Any) -> NDArray[np.int64]:
    arr = np.asarray(value)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise type_fail(name, "an integer or an array of integers", value)
    if np.issubdtype(arr.dtype, np.unsignedinteger) and arr.size and arr.max() > 2**62:
        raise fail(name, "integers up to 2**62", int(arr.max()))
    return arr.astype(np.int64)


@lru_cache(maxsize=65536)
def _exact(n: int, c: int, k: int) -> float:
    """``1 - C(n-c, k) / C(n, k)``, correctly rounded to float64."""
    if n - c < k:
        return 1.0
    return float(1 - Fraction(comb(n - c, k), comb(n, k)))


def pass_at_k(n: Any, c: Any, k: Any) -> Any:
    r"""Unbiased estimate of pass@k from ``c`` correct answers among ``n`` samples.

    .. math::

        \mathrm{pass@}k = 1 - \binom{n-c}{k} \Big/ \binom{n}{k}
                        = 1 - \prod_{j=0}^{k-1} \frac{n-c-j}{n-j}

    The value is computed in exact integer arithmetic and rounded once, so it is the float64
    nearest to the true estimate for any ``n`` (each distinct ``(n, c, k)`` is computed once and
    cached; a step sees few distinct ones). It is 1 when ``n - c < k``.

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
    nf, cf, kf = n_a.ravel(), c_a.ravel(), k_a.ravel()
    if nf.size and int(nf.max()) < 2**20:  # one int64 key per triple: a fast 1-D unique
        key = (nf << 40) | (cf << 20) | kf
        uniq_key, inverse = np.unique(key, return_inverse=True)
        uniq = np.stack([uniq_key >> 40, (uniq_key >> 20) & 0xFFFFF, uniq_key & 0xFFFFF], axis=1)
    else:
        uniq, inverse = np.unique(np.stack([nf, cf, kf], axis=1), axis=0, return_inverse=True)
    vals = np.array([_exact(int(a), int(b), int(c)) for a, b, c in uniq], dtype=np.float64)
    out = vals[inverse.ravel()].reshape(n_a.shape)
    return float(out) if scalar else out
