"""Checks of state-dict leaves: each failure names the key, what was expected and what was found.

Shared by every part that restores its own state (the classifier, the controller), so a
corrupted checkpoint is always a ``ValueError`` or ``TypeError`` raised before anything changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from gdro_core._validation import check_int, fail, type_fail

__all__ = [
    "array_leaf",
    "finite",
    "float_leaf",
    "int_leaf",
    "leaf",
    "require",
    "scalar",
    "section",
    "str_leaf",
]


def scalar(v: Any) -> Any:
    if isinstance(v, np.ndarray) and v.ndim == 0:
        return v.item()
    if isinstance(v, np.generic):
        return v.item()
    return v


def section(d: Any, key: str, where: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise type_fail(where, "a dict from state_dict()", d)
    if key not in d:
        raise fail(where, f"a dict with key {key!r}", f"keys {sorted(map(str, d))}")
    src = d[key]
    if not isinstance(src, dict):
        raise type_fail(f"{where}[{key!r}]", "a dict", src)
    return src


def leaf(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise fail(where, f"a dict with key {key!r}", f"keys {sorted(map(str, d))}")
    return d[key]


def int_leaf(d: dict[str, Any], key: str, where: str, lo: int = 0, hi: int | None = None) -> int:
    return check_int(f"{where}[{key!r}]", scalar(leaf(d, key, where)), lo=lo, hi=hi)


def float_leaf(
    d: dict[str, Any], key: str, where: str, lo: float | None = None, hi: float | None = None
) -> float:
    v = scalar(leaf(d, key, where))
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise type_fail(f"{where}[{key!r}]", "a real number", v)
    x = float(v)
    if not np.isfinite(x) or (lo is not None and x < lo) or (hi is not None and x > hi):
        rng = "a finite number" + (
            f" in [{lo:g}, {hi:g}]" if lo is not None and hi is not None else ""
        )
        if lo is not None and hi is None:
            rng += f" >= {lo:g}"
        raise fail(f"{where}[{key!r}]", rng, x)
    return x


def str_leaf(d: dict[str, Any], key: str, where: str) -> str:
    v = scalar(leaf(d, key, where))
    if not isinstance(v, str):
        raise type_fail(f"{where}[{key!r}]", "a string", v)
    return v


def array_leaf(
    d: dict[str, Any], key: str, where: str, dtype: Any, shape: tuple[int | None, ...]
) -> NDArray[Any]:
    raw = leaf(d, key, where)
    name = f"{where}[{key!r}]"
    if not isinstance(raw, np.ndarray):
        raise type_fail(name, f"a numpy array of dtype {np.dtype(dtype).name}", raw)
    ok = raw.dtype == np.dtype(dtype) and raw.ndim == len(shape)
    ok = ok and all(s is None or s == t for s, t in zip(shape, raw.shape, strict=False))
    if not ok:
        want = "x".join("n" if s is None else str(s) for s in shape) or "()"
        raise fail(name, f"an array of shape ({want}) and dtype {np.dtype(dtype).name}", raw)
    return np.array(raw, copy=True)


def require(ok: bool | np.bool_, name: str, allowed: str, value: Any) -> None:
    if not ok:
        raise fail(name, allowed, value)


def finite(a: NDArray[Any], name: str, lo: float | None = None, hi: float | None = None) -> None:
    bad = ~np.isfinite(a)
    if lo is not None:
        bad |= a < lo
    if hi is not None:
        bad |= a > hi
    if bad.any():
        i = int(np.flatnonzero(bad.ravel())[0])
        what = "finite values"
        if lo is not None and hi is not None:
            what += f" in [{lo:g}, {hi:g}]"
        elif lo is not None:
            what += f" >= {lo:g}"
        raise fail(name, what, f"{a.ravel()[i]!r} at flat index {i}")
