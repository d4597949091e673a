"""A generation batch's ``gdro/`` metrics, under the names the verl adapter logs.

Pure numpy: planned completions and correct completions per prompt in, a flat dict out. TRL
averages each key over its logging window like its own metrics, and reports them to every logger
set in ``report_to`` (TensorBoard, W&B, ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = ["step_metrics"]


def step_metrics(
    *,
    rollouts: NDArray[np.int64],
    n_correct: NDArray[np.int64],
    controller_metrics: Mapping[str, float],
    ks: Sequence[int],
    missing: int = 0,
) -> dict[str, float]:
    """One generation batch's metrics, all under ``gdro/``.

    Args:
        rollouts: int64 (P,), completions per prompt.
        n_correct: int64 (P,), correct completions per prompt.
        controller_metrics: ``GDROController.metrics()`` after the update.
        ks: k values of the unbiased ``gdro/pass@k`` (each <= the fewest completions).
        missing: Completions that every reward function left unscored (counted incorrect).

    Returns:
        ``gdro/<key>`` for each controller metric (``classifier/*``, ``prompt/q/{b}``,
        ``rollout/n_mean/{b}``, ``rollout/shadow_price``, ...), plus ``gdro/pass@k`` (mean over
        prompts of ``1 - C(n-c, k) / C(n, k)``), ``gdro/solve_rate`` (mean per-prompt fraction
        correct: each prompt weighs the same, unlike TRL's ``reward``), ``gdro/solved_none``,
        ``gdro/solved_all`` (fractions of prompts), ``gdro/missing_rollouts`` and
        ``gdro/completions`` (completions generated, the budget).

    Examples:
        >>> m = step_metrics(rollouts=np.array([4, 4, 2]), n_correct=np.array([0, 2, 2]),
        ...                  controller_metrics={"prompt/entropy": 1.5}, ks=[1, 2])
        >>> for key, value in m.items():
        ...     print(f"{key}: {value:.3f}")
        gdro/prompt/entropy: 1.500
        gdro/pass@1: 0.500
        gdro/pass@2: 0.611
        gdro/solve_rate: 0.500
        gdro/solved_none: 0.333
        gdro/solved_all: 0.333
        gdro/missing_rollouts: 0.000
        gdro/completions: 10.000
    """
    from gdro_core.metrics import adapter_metrics

    metrics = adapter_metrics(
        rollouts=rollouts,
        n_correct=n_correct,
        controller_metrics=dict(controller_metrics),
        ks=list(ks),
        missing=missing,
    )
    metrics["gdro/completions"] = float(np.asarray(rollouts).sum())
    return metrics
