"""One error template for every check: parameter, allowed range, value received.

``ValueError`` for a wrong value, ``TypeError`` for a wrong type. Per-step inputs are checked once
at the public boundary, vectorised, before any state changes.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from numpy.typing import NDArray


def fail(name: str, allowed: str, value: Any, *, fix: str = "") -> ValueError:
    """Build the project's ``ValueError``: ``"{name} must be {allowed}; got {value!r}"``."""
    msg = f"{name} must be {allowed}; got {_show(value)}"
    return ValueError(msg + (f". {fix}" if fix else ""))


def type_fail(name: str, allowed: str, value: Any) -> TypeError:
    """Build the project's ``TypeError`` naming the parameter, the expected type and the value."""
    return TypeError(f"{name} must be {allowed}; got {_show(value)} of type {type(value).__name__}")


def _show(value: Any) -> str:
    if isinstance(value, np.ndarray):
        flat = value.ravel()
        head = np.array2string(flat[:6], separator=", ", threshold=6)
        return f"array of shape {value.shape} and dtype {value.dtype} ({head}{'...' if flat.size > 6 else ''})"
    return repr(value)


def check_int(name: str, value: Any, *, lo: int | None = None, hi: int | None = None) -> int:
    """Return ``value`` as an ``int`` in ``[lo, hi]``; bools and floats are rejected."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise type_fail(name, "an integer", value)
    v = int(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise fail(name, _interval("an integer", lo, hi), v)
    return v


def check_float(
    name: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """Return ``value`` as a finite ``float`` in the given interval."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise type_fail(name, "a real number", value)
    v = float(value)
    ok = np.isfinite(v)
    if ok and lo is not None:
        ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
        ok = v < hi if hi_open else v <= hi
    if not ok:
        lb = "" if lo is None else ("(" if lo_open else "[") + f"{lo:g}"
        ub = "" if hi is None else f"{hi:g}" + (")" if hi_open else "]")
        if lo is not None and hi is not None:
            allowed = f"a finite number in {lb}, {ub}"
        elif lo is not None:
            allowed = f"a finite number {'>' if lo_open else '>='} {lo:g}"
        elif hi is not None:
            allowed = f"a finite number {'<' if hi_open else '<='} {hi:g}"
        else:
            allowed = "a finite number"
        raise fail(name, allowed, v)
    return v


def check_choice(name: str, value: Any, choices: tuple[str, ...] | list[str]) -> str:
    """Return ``value`` if it is one of ``choices`` (strings), else raise naming them all."""
    if not isinstance(value, str):
        raise type_fail(name, f"one of {list(choices)}", value)
    if value not in choices:
        raise fail(name, f"one of {list(choices)}", value)
    return value


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is a ``bool``; no truthiness coercion."""
    if not isinstance(value, (bool, np.bool_)):
        raise type_fail(name, "a bool", value)
    return bool(value)


def normalize(obj: Any, **values: Any) -> None:
    """Store validated values on a frozen dataclass as plain Python objects.

    Configs must save to JSON and compare equal however they were built, so numpy scalars,
    ``Fraction`` and the like are replaced by the ``int``, ``float``, ``bool`` or ``str`` that the
    check returned.
    """
    for name, value in values.items():
        object.__setattr__(obj, name, value)


def _interval(kind: str, lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return f"{kind} in [{lo}, {hi}]"
    if lo is not None:
        return f"{kind} >= {lo}"
    if hi is not None:
        return f"{kind} <= {hi}"
    return kind


def as_int_array(name: str, value: Any, *, length: int | None = None) -> NDArray[np.int64]:
    """Return a 1-D int64 copy of ``value``; non-integer dtypes (floats, bools) are a ``TypeError``."""
    arr = np.asarray(value)
    if arr.size == 0 and arr.dtype == np.float64:  # [] has no integer dtype of its own
        arr = arr.astype(np.int64)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise type_fail(name, "a 1-D array of integers", value)
    if arr.ndim != 1:
        raise fail(name, "a 1-D array", arr)
    if length is not None and arr.shape[0] != length:
        raise fail(f"len({name})", f"{length}", arr.shape[0])
    if (
        np.issubdtype(arr.dtype, np.unsignedinteger)
        and arr.size
        and arr.max() > np.iinfo(np.int64).max
    ):
        raise fail(name, "integers that fit in int64", arr)
    return arr.astype(np.int64, copy=True)


def as_ids(name: str, value: Any, num_prompts: int) -> NDArray[np.int64]:
    """Validate prompt ids: 1-D integers in ``[0, num_prompts)``, at least one, no duplicates."""
    ids = as_int_array(name, value)
    if ids.shape[0] == 0:
        raise fail(f"len({name})", ">= 1", 0)
    bad = (ids < 0) | (ids >= num_prompts)
    if bad.any():
        raise fail(
            f"{name}[{int(np.flatnonzero(bad)[0])}]",
            f"an id in [0, {num_prompts})",
            int(ids[bad][0]),
        )
    if ids.shape[0] > 1:
        srt = np.sort(ids)
        dup = srt[1:] == srt[:-1]
        if dup.any():
            raise fail(
                name, "unique ids within a batch", ids, fix=f"id {int(srt[1:][dup][0])} repeats"
            )
    return ids


def as_float_array(name: str, value: Any, *, length: int) -> NDArray[np.float64]:
    """Return a 1-D float64 copy of ``value`` with exactly ``length`` finite entries."""
    arr = np.asarray(value)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating)
        or np.issubdtype(arr.dtype, np.integer)
        or arr.dtype == np.bool_
    ):
        raise type_fail(name, "a 1-D array of real numbers", value)
    if arr.ndim != 1:
        raise fail(name, "a 1-D array", arr)
    if arr.shape[0] != length:
        raise fail(f"len({name})", f"{length}", arr.shape[0])
    out = arr.astype(np.float64, copy=True)
    bad = ~np.isfinite(out)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise fail(f"{name}[{i}]", "finite (no NaN or inf)", float(out[i]))
    return out
