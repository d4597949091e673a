"""Means that stay finite for any finite input: computed plainly, rescaled only on overflow."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["bin_mean", "stable_mean"]


def stable_mean(values: NDArray[np.float64], weights: NDArray[np.float64] | None = None) -> float:
    """The (weighted) mean of finite values, finite however large they are.

    Computed as numpy does; only when that overflows are the values scaled down first.

    Examples:
        >>> stable_mean(np.array([1.0, 0.0, 0.5])), stable_mean(np.array([1e308, 1e308]))
        (0.5, 1e+308)
    """
    with np.errstate(over="ignore", invalid="ignore"):
        plain = float(np.average(values, weights=weights))
    if np.isfinite(plain) or not values.size:
        return plain
    scale = float(np.abs(values).max())
    return float(np.average(values / scale, weights=weights)) * scale


def bin_mean(
    bins: NDArray[np.int64], values: NDArray[np.float64], num_bins: int
) -> NDArray[np.float64]:
    """float64 (B,): the mean of ``values`` per bin (0 for an empty bin), finite for finite values.

    Computed by sums and counts; only when a sum overflows are that bin's values scaled first.

    Examples:
        >>> bin_mean(np.array([0, 0, 2]), np.array([1.0, 0.0, 1e308]), 3).tolist()
        [0.5, 0.0, 1e+308]
        >>> bin_mean(np.array([1, 1]), np.array([1e308, 1e308]), 2).tolist()  # the sum overflows
        [0.0, 1e+308]
    """
    cnt = np.bincount(bins, minlength=num_bins)
    with np.errstate(over="ignore", invalid="ignore"):
        tot = np.bincount(bins, weights=values, minlength=num_bins)
    out: NDArray[np.float64] = np.where(cnt > 0, tot / np.maximum(cnt, 1), 0.0)
    if np.all(np.isfinite(out)):
        return out
    scale = np.ones(num_bins)
    np.maximum.at(scale, bins, np.abs(values))
    tot = np.bincount(bins, weights=values / scale[bins], minlength=num_bins)
    safe: NDArray[np.float64] = np.where(cnt > 0, tot / np.maximum(cnt, 1), 0.0) * scale
    return np.where(np.isfinite(out), out, safe)
