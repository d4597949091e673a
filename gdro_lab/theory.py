r"""The theory checks of ``method.md``, computed from logged trajectories.

* **Hedge regret** (method.md §4). With gains :math:`g_t\in[0,1]^B` and
  :math:`q_t = (1-\gamma)\,\mathrm{softmax}(\eta\sum_{s<t} g_s) + \gamma/B`, for every sequence
  :math:`\max_b\sum_t g_t(b) - \sum_t\langle q_t, g_t\rangle \le \ln B/\eta + \eta T/8 + \gamma T`.
* **Budget** (§5). The dual update :math:`\mu_{t+1} = \mathrm{clip}(\mu_t + \alpha(m_t-\bar n), 0,
  \mu_{\max})` with :math:`\mu_1 = 0` gives, while :math:`\mu` stays below :math:`\mu_{\max}`,
  :math:`\sum_{s\le t}(m_s-\bar n) \le \mu_{t+1}/\alpha \le \mu_{\max}/\alpha`, so the average
  violation is at most :math:`\mu_{\max}/(\alpha T)`; with :math:`\alpha\propto 1/\sqrt T` it is
  :math:`O(1/\sqrt T)`.
* **WSE** (§5). :math:`\mathrm{WSE}_t = \sum_b \hat q_t(b)\,\sigma_b/\sqrt{n_b(t)}` against
  the same sum with :math:`n_b \equiv \bar n`.
* **Lead-lag** (§9). :math:`\Delta\mu_t = \sum_b b\,q_t(b) - \sum_b b\,\hat q_t(b)`, and the lag at
  which the adversary's mean bin best correlates with the data's mean bin later on.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "BudgetStats",
    "area_under_curve",
    "budget_stats",
    "hedge_bound",
    "hedge_probs",
    "lead_lag",
    "regret_curve",
    "steps_to_target",
    "tuned_eta",
    "wse",
]


def hedge_probs(gains: NDArray[np.float64], eta: float, gamma: float) -> NDArray[np.float64]:
    """Hedge's distributions over a gain sequence, with uniform mixing.

    Args:
        gains: float64 (T, B), the gain of each bin at each step.
        eta: learning rate (> 0).
        gamma: uniform mixing weight in [0, 1].

    Returns:
        float64 (T, B): row t is :math:`(1-\\gamma)\\,\\mathrm{softmax}(\\eta\\sum_{s<t} g_s)
        + \\gamma/B`.

    Examples:
        Uniform before any gain; then the weight follows the bin that gained:

        >>> gains = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> np.round(hedge_probs(gains, eta=1.0, gamma=0.1), 3)
        array([[0.5  , 0.5  ],
               [0.708, 0.292],
               [0.843, 0.157]])
    """
    t, b = gains.shape
    cum = np.vstack([np.zeros((1, b)), np.cumsum(gains, axis=0)[:-1]]) if t else gains
    z = eta * cum
    z -= z.max(axis=1, keepdims=True)
    w = np.exp(z)
    out: NDArray[np.float64] = (1.0 - gamma) * w / w.sum(axis=1, keepdims=True) + gamma / b
    return out


def regret_curve(q: NDArray[np.float64], gains: NDArray[np.float64]) -> NDArray[np.float64]:
    """Regret after each step against the best fixed bin in hindsight (for a maximising player).

    Args:
        q: float64 (T, B), the distributions played.
        gains: float64 (T, B), the gains.

    Returns:
        float64 (T,): :math:`\\max_b\\sum_{s\\le t} g_s(b)
        - \\sum_{s\\le t}\\langle q_s,g_s\\rangle`.

    Examples:
        A uniform player against gains favouring bin 0, then bin 1:

        >>> gains = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> regret_curve(np.full((3, 2), 0.5), gains)
        array([0.5, 1. , 0.5])
    """
    out: NDArray[np.float64] = np.cumsum(gains, axis=0).max(axis=1) - np.cumsum(
        (q * gains).sum(axis=1)
    )
    return out


def hedge_bound(num_bins: int, steps: int, eta: float, gamma: float) -> float:
    """Hedge's regret bound :math:`\\ln B/\\eta + \\eta T/8 + \\gamma T` (Cesa-Bianchi-Lugosi 2.2).

    Examples:
        >>> round(hedge_bound(10, 1000, tuned_eta(10, 1000), 0.0), 1)
        33.9
    """
    return math.log(num_bins) / eta + eta * steps / 8.0 + gamma * steps


def tuned_eta(num_bins: int, steps: int) -> float:
    """The rate :math:`\\sqrt{8\\ln B/T}` minimising the Hedge bound.

    Examples:
        >>> eta = tuned_eta(10, 1000)
        >>> round(eta, 4), round(hedge_bound(10, 1000, eta, 0.0), 2)
        (0.1357, 33.93)
        >>> round(hedge_bound(10, 1000, 0.65, 0.0), 2)  # a larger rate pays eta T / 8
        84.79
    """
    return math.sqrt(8.0 * math.log(num_bins) / steps)


class BudgetStats(NamedTuple):
    """Budget accounting of a trajectory.

    Attributes:
        realised_gap: float64 (T,), realised mean rollouts per prompt minus the target.
        proposal_gap: float64 (T,), the unconstrained proposal m_t minus the target.
        running_violation: float64 (T,), :math:`\\frac1t\\sum_{s\\le t}(m_s-\\bar n)`.
        average_violation: the last entry of ``running_violation``.
        dual_bound: :math:`\\mu_{\\max}/(\\alpha T)`, the bound on ``average_violation`` while
            the price stays below its cap (inf when ``alpha`` is 0).
        price_hit_cap: whether the logged price ever reached ``mu_max``.

    Examples:
        >>> st = budget_stats(np.full(3, 4.0), np.array([6.0, 4.0, 3.0]), np.zeros(3),
        ...                   target=4.0, alpha=0.1, mu_max=1.0)
        >>> st.proposal_gap.tolist(), st.running_violation.tolist(), st.average_violation
        ([2.0, 0.0, -1.0], [2.0, 1.0, 0.3333333333333333], 0.3333333333333333)
    """

    realised_gap: NDArray[np.float64]
    proposal_gap: NDArray[np.float64]
    running_violation: NDArray[np.float64]
    average_violation: float
    dual_bound: float
    price_hit_cap: bool


def budget_stats(
    realised: NDArray[np.float64],
    proposal: NDArray[np.float64],
    price: NDArray[np.float64],
    target: float,
    alpha: float,
    mu_max: float,
) -> BudgetStats:
    """Budget accounting from logged per-step means.

    Args:
        realised: float64 (T,), realised rollouts per prompt each step.
        proposal: float64 (T,), ``rollout/mean_proposed`` each step.
        price: float64 (T,), ``rollout/shadow_price`` each step.
        target: the mean budget.
        alpha: the dual step.
        mu_max: the price cap.

    Returns:
        The :class:`BudgetStats`.

    Examples:
        Proposals around a target of 4 and the price that the dual update (alpha 0.05) gives
        them, starting at 0: the cumulative excess 1, 1.5, 1, 1 equals price / alpha, and the
        average violation 0.25 is below the bound mu_max / (alpha T) = 5:

        >>> st = budget_stats(realised=np.full(4, 4.0), proposal=np.array([5.0, 4.5, 3.5, 4.0]),
        ...                   price=np.array([0.0, 0.05, 0.075, 0.05]), target=4.0, alpha=0.05,
        ...                   mu_max=1.0)
        >>> np.cumsum(st.proposal_gap).tolist(), st.average_violation, st.dual_bound
        ([1.0, 1.5, 1.0, 1.0], 0.25, 5.0)
        >>> st.realised_gap.tolist(), st.price_hit_cap
        ([0.0, 0.0, 0.0, 0.0], False)
    """
    gap = proposal - target
    t = np.arange(1, gap.size + 1)
    running = np.cumsum(gap) / t
    bound = mu_max / (alpha * gap.size) if alpha > 0 and gap.size else math.inf
    return BudgetStats(
        realised - target,
        gap,
        running,
        float(running[-1]) if gap.size else math.nan,
        bound,
        bool(np.any(price >= mu_max - 1e-12)),
    )


def wse(
    share: NDArray[np.float64], sigma: NDArray[np.float64], rollouts: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Weighted standard error :math:`\\sum_b \\hat q_b\\sigma_b/\\sqrt{n_b}` per step.

    Args:
        share: float64 (T, B), batch share of each bin (0 for an absent bin).
        sigma: float64 (T, B) or (B,), per-rollout reward std of each bin.
        rollouts: float64 (T, B), mean rollouts per prompt of each bin (NaN/any where absent).

    Returns:
        float64 (T,).

    Examples:
        Two bins present (the third is absent: its NaN rollouts do not count); moving rollouts
        to the noisier bin lowers the WSE below that of 4 rollouts each:

        >>> share, sigma = np.array([[0.5, 0.5, 0.0]]), np.array([0.5, 0.1, 0.3])
        >>> wse(share, sigma, np.array([[4.0, 4.0, np.nan]]))
        array([0.15])
        >>> np.round(wse(share, sigma, np.array([[6.0, 2.0, np.nan]])), 4)
        array([0.1374])
    """
    n = np.where(share > 0, rollouts, 1.0)
    out: NDArray[np.float64] = np.nansum(
        np.where(share > 0, share * sigma / np.sqrt(n), 0.0), axis=1
    )
    return out


def lead_lag(
    q: NDArray[np.float64], share: NDArray[np.float64], max_lag: int = 50
) -> tuple[NDArray[np.float64], int, float]:
    """Lead of the adversary's mean bin over the data's.

    Args:
        q: float64 (T, B), adversary weights.
        share: float64 (T, B), batch shares.
        max_lag: largest lag tried, in steps.

    Returns:
        ``(delta, lag, corr)``: :math:`\\Delta\\mu_t` (float64 (T,)); the lag k in [0, max_lag]
        maximising the correlation of the adversary's mean bin at t with the data's at t + k
        (both demeaned); that correlation (NaN if a series is constant).

    Examples:
        An adversary whose mean bin the data follows 3 steps later:

        >>> a = 0.5 + 0.4 * np.sin(np.arange(43) / 4)
        >>> q = np.stack([1 - a[3:], a[3:]], axis=1)  # adversary at t: a[t + 3]
        >>> share = np.stack([1 - a[:-3], a[:-3]], axis=1)  # data at t: a[t]
        >>> delta, lag, corr = lead_lag(q, share, max_lag=10)
        >>> delta.shape, lag, round(corr, 3)
        ((40,), 3, 1.0)
    """
    bins = np.arange(q.shape[1])
    mq, ms = q @ bins, share @ bins
    delta = mq - ms
    best, best_c = 0, math.nan
    for k in range(0, min(max_lag, mq.size - 3) + 1):
        a, b = mq[: mq.size - k], ms[k:]
        if a.std() == 0 or b.std() == 0:
            continue
        c = float(np.corrcoef(a, b)[0, 1])
        if math.isnan(best_c) or c > best_c:
            best, best_c = k, c
    return delta, best, best_c


def area_under_curve(values: NDArray[np.float64]) -> float:
    """Mean of a learning curve over its evaluation points (trapezoid rule on a unit interval).

    Examples:
        >>> area_under_curve(np.array([0.0, 1.0, 1.0]))
        0.75
        >>> area_under_curve(np.array([0.4]))
        0.4
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 1:
        return float(v[0])
    return float(((v[1:] + v[:-1]) / 2.0).mean())


def steps_to_target(steps: NDArray[np.int64], values: NDArray[np.float64], target: float) -> float:
    """First evaluated step at which ``values >= target`` (NaN when never reached).

    Examples:
        >>> steps = np.array([0, 10, 20, 30])
        >>> steps_to_target(steps, np.array([0.5, 0.6, 0.75, 0.8]), 0.7)
        20.0
        >>> steps_to_target(steps, np.array([0.5, 0.6, 0.65, 0.6]), 0.7)
        nan
    """
    hit = np.flatnonzero(values >= target)
    return float(steps[hit[0]]) if hit.size else math.nan
