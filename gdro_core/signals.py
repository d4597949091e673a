"""Per-prompt signals that drive the adversaries: a registry of named functions.

A signal maps a step's per-prompt outcomes to one float per prompt (``compute``) and maps a bin
mean of it onto [0, 1] for the textbook Hedge rule (``to_unit``). Built-ins:

* ``loss``: the caller's per-prompt loss (the paper's signal); needs ``losses``.
* ``failure``: ``1 - c/n``, the fraction of wrong rollouts.
* ``variance``: ``c(n-c) / (n(n-1))``, unbiased for the Bernoulli variance ``p(1-p)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from gdro_core._validation import fail

Array = NDArray[np.float64]

__all__ = ["SIGNALS", "Signal", "register_signal", "unbiased_variance"]


class Signal(NamedTuple):
    """A registered signal.

    Attributes:
        compute: ``compute(n_correct, n_total, losses)`` returns float64 (m,), or ``None`` when
            the signal needs ``losses`` and none were given.
        to_unit: ``to_unit(bin_means, clip)`` maps bin means onto [0, 1] (the Hedge rule).
        needs_losses: whether ``compute`` reads ``losses``.
        per_rollout_variance: the signal estimates, unbiasedly whatever the rollout count, a
            per-prompt variance ``v`` whose rollout-GDRO arm loss is ``v / n``: one step then
            reveals the loss of every arm (full information).

    Examples:
        >>> import numpy as np
        >>> SIGNALS["variance"].compute(np.array([1, 2]), np.array([2, 4]), None).tolist()
        [0.5, 0.3333333333333333]
    """

    compute: Callable[[NDArray[np.int64], NDArray[np.int64], Array | None], Array | None]
    to_unit: Callable[[Array, float], Array]
    needs_losses: bool
    per_rollout_variance: bool = False


def _loss(c: NDArray[np.int64], n: NDArray[np.int64], losses: Array | None) -> Array | None:
    return None if losses is None else np.asarray(losses, dtype=np.float64)


def _loss_unit(x: Array, clip: float) -> Array:
    with np.errstate(over="ignore", invalid="ignore"):
        out: Array = (np.clip(x, -clip, clip) + clip) / (2.0 * clip)
    if np.all(np.isfinite(out)):
        return out
    return np.clip(x, -clip, clip) / clip * 0.5 + 0.5  # clip near the float64 maximum


def _failure(c: NDArray[np.int64], n: NDArray[np.int64], losses: Array | None) -> Array:
    return 1.0 - c / n


def unbiased_variance(c: NDArray[np.int64], n: NDArray[np.int64]) -> Array:
    """float64: ``c(n-c) / (n(n-1))``, unbiased for p(1-p) from c successes in n draws (0 if n < 2).

    Examples:
        >>> unbiased_variance(np.array([0, 1, 2, 1]), np.array([4, 4, 4, 1])).round(4).tolist()
        [0.0, 0.25, 0.3333, 0.0]
    """
    denom = n * (n - 1)
    out: Array = np.where(denom > 0, c * (n - c) / np.maximum(denom, 1), 0.0)
    return out


def _variance(c: NDArray[np.int64], n: NDArray[np.int64], losses: Array | None) -> Array:
    return unbiased_variance(c, n)


def _unit(x: Array, clip: float) -> Array:
    return np.clip(x, 0.0, 1.0)


def _variance_unit(x: Array, clip: float) -> Array:
    return np.clip(4.0 * x, 0.0, 1.0)


SIGNALS: dict[str, Signal] = {
    "loss": Signal(_loss, _loss_unit, True),
    "failure": Signal(_failure, _unit, False),
    "variance": Signal(_variance, _variance_unit, False, per_rollout_variance=True),
}


def register_signal(name: str, signal: Signal) -> None:
    """Add a signal under ``name``; rebinding a name to a different signal is a ``ValueError``.

    Examples:
        >>> sig = Signal(lambda c, n, l: (c == 0).astype(float), lambda x, clip: x, False)
        >>> register_signal("all_wrong", sig)
        >>> "all_wrong" in SIGNALS
        True
        >>> del SIGNALS["all_wrong"]
    """
    if not isinstance(signal, Signal):
        raise TypeError(f"signal must be a gdro_core.signals.Signal; got {type(signal).__name__}")
    if name in SIGNALS and SIGNALS[name] is not signal:
        raise fail(
            "name", f"a signal name not yet registered (registered: {sorted(SIGNALS)})", name
        )
    SIGNALS[name] = signal


def get_signal(owner: str, name: str) -> Signal:
    """Look up a signal; an unknown name's error lists the valid ones."""
    if not isinstance(name, str) or name not in SIGNALS:
        raise fail(owner, f"one of {sorted(SIGNALS)}", name)
    return SIGNALS[name]
