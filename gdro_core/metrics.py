"""The controller's metrics: a flat ``dict[str, float]`` per step, namespaced like the paper's plots.

* ``classifier/``: bin shares of the batch, mean bin, mass in the upper bins, moves.
* ``prompt/``: the adversary's q, its entropy, scores, lead-lag against the data, weights.
* ``rollout/``: rollouts per bin, budget share per bin, the shadow price, target and proposed
  (unconstrained) budget, hits at the bounds.
* ``batch/``: rewards and success of the step's rollouts, per bin.
* ``mechanism/``: whether the controllers did anything (budget moved, q away from uniform, weight
  spread, groups with no gradient, prompts stuck solved or failed, visits per prompt).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from gdro_core._numeric import bin_mean, stable_mean
from gdro_core.classifier import SEEN_CORRECT, SEEN_WRONG
from gdro_core.prompt import PromptState, entropy
from gdro_core.rollout import Allocation, RolloutConfig, RolloutState

__all__ = [
    "adapter_metrics",
    "Feedback",
    "bin_mean",
    "initial_metrics",
    "stable_mean",
    "step_metrics",
]


def _bin_block(
    out: dict[str, float], shares: NDArray[np.float64], q: NDArray[np.float64], pstate: PromptState
) -> None:
    b = shares.shape[0]
    idx = np.arange(b)
    for i in range(b):
        out[f"classifier/share/{i}"] = float(shares[i])
        out[f"prompt/q/{i}"] = float(q[i])
        out[f"prompt/score/{i}"] = float(pstate.score[i])
    mean_bin = float(np.dot(idx, shares))
    out["classifier/mean_bin"] = mean_bin
    if b > 3:
        out["classifier/mass_ge3"] = float(shares[3:].sum())
    if b > 8:
        out["classifier/mass_ge8"] = float(shares[8:].sum())
    out["prompt/entropy"] = entropy(q)
    out["prompt/lead_lag"] = float(np.dot(idx, q)) - mean_bin


class Feedback(NamedTuple):
    """What came back for the prompts of one plan, per prompt in plan order (the fed-back ones).

    Examples:
        >>> fb = Feedback(correct=np.array([1, 0]), reward_mean=np.array([0.5, 0.0]),
        ...               zero_adv=np.array([False, True]), moved=np.array([True, False]),
        ...               rate=np.array([1.0, 0.0]), flags=np.array([3, 2], dtype=np.uint8))
        >>> fb.correct.tolist(), fb.zero_adv.tolist()
        ([1, 0], [False, True])
    """

    correct: NDArray[np.int64]  # (f,) correct rollouts per prompt
    reward_mean: NDArray[np.float64]  # (f,) mean reward of the prompt's rollouts
    zero_adv: NDArray[np.bool_]  # (f,) every rollout of the group got the same reward
    moved: NDArray[np.bool_]  # (f,) the prompt's bin changed with this feedback
    rate: NDArray[np.float64]  # (f,) the prompt's pass rate after the feedback
    flags: NDArray[np.uint8]  # (f,) the prompt's outcome flags after the feedback


def step_metrics(
    *,
    num_bins: int,
    bins: NDArray[np.int64],
    rollouts: NDArray[np.int64],
    weights: NDArray[np.float64],
    feedback: Feedback,
    q: NDArray[np.float64],
    alloc: Allocation,
    rcfg: RolloutConfig,
    prompt_mode: str,
    pstate: PromptState,
    visits_mean: float,
) -> dict[str, float]:
    """Metrics of a plan whose feedback is complete, over its fed-back prompts.

    Args:
        num_bins: number of difficulty bins.
        bins: int64 (f,), each prompt's bin at planning time.
        rollouts: int64 (f,), rollouts per prompt.
        weights: float64 (f,), the plan's per-prompt weights.
        feedback: the prompts' feedback (:class:`Feedback`).
        q: float64 (B,), the adversary's distribution the plan used.
        alloc: the plan's allocation (its price and unconstrained mean).
        rcfg: the allocator settings.
        prompt_mode: the Prompt-GDRO mode (``"off"`` applies no q: ``mechanism/q_tv`` is 0).
        pstate: the adversary's state after the update (its scores are reported).
        visits_mean: feedback visits per prompt of the dataset so far.

    The ``mechanism/`` keys say whether the controllers did anything: ``budget_moved`` (half the
    L1 distance between the planned and the uniform rollout counts, over the budget),
    ``q_tv`` (total variation of the applied q from uniform), ``weight_max_ratio`` and
    ``weight_p90_ratio`` (largest and 90th-percentile weight over the mean weight),
    ``zero_adv_share`` (groups whose rewards were all equal: no gradient),
    ``always_solved_share`` / ``always_failed_share`` (prompts every rollout of which, at every
    visit so far, was correct / wrong) and ``visits_mean``.

    Examples:
        Two prompts of bin 0, two rollouts each; one prompt solves one of its two:

        >>> from gdro_core import prompt, rollout
        >>> rcfg = rollout.RolloutConfig(mean=2)
        >>> bins = np.array([0, 0])
        >>> alloc = rollout.plan_fixed(rcfg, rollout.init_state(rcfg, 2), bins,
        ...                            np.random.default_rng(0), "numba")
        >>> fb = Feedback(correct=np.array([1, 0]), reward_mean=np.array([0.5, 0.0]),
        ...               zero_adv=np.array([False, True]), moved=np.array([True, False]),
        ...               rate=np.array([1.0, 0.0]), flags=np.array([3, 2], dtype=np.uint8))
        >>> out = step_metrics(
        ...     num_bins=2, bins=bins, rollouts=alloc.rollouts, weights=np.ones(2), feedback=fb,
        ...     q=np.array([0.5, 0.5]), alloc=alloc, rcfg=rcfg, prompt_mode="off",
        ...     pstate=prompt.init_state(2), visits_mean=0.5)
        >>> out["classifier/share/0"], out["classifier/moved"], out["rollout/n_mean/0"]
        (1.0, 0.5, 2.0)
        >>> out["batch/success_rate"], out["batch/solved_any"], "rollout/n_mean/1" in out
        (0.25, 0.5, False)
        >>> out["mechanism/zero_adv_share"], out["mechanism/always_failed_share"]
        (0.5, 0.5)
    """
    m = bins.shape[0]
    cnt = np.bincount(bins, minlength=num_bins)
    shares = cnt / m
    out: dict[str, float] = {}
    _bin_block(out, shares, q, pstate)
    out["classifier/moved"] = float(np.mean(feedback.moved))
    out["classifier/pass_rate"] = float(feedback.rate.mean())
    out["prompt/weight_max"] = float(weights.max())
    out["prompt/weight_min"] = float(weights.min())
    n_tot = np.bincount(bins, weights=rollouts.astype(np.float64), minlength=num_bins)
    r_bin = bin_mean(bins, feedback.reward_mean, num_bins)
    for b in np.flatnonzero(cnt):
        out[f"rollout/n_mean/{b}"] = float(n_tot[b] / cnt[b])
        out[f"rollout/budget_share/{b}"] = float(n_tot[b] / rollouts.sum())
        out[f"batch/reward/{b}"] = float(r_bin[b])
    out["rollout/shadow_price"] = float(alloc.mu)
    out["rollout/mean"] = float(rcfg.mean)
    out["rollout/mean_proposed"] = float(alloc.unconstrained)
    out["rollout/mean_realized"] = float(rollouts.sum() / m)
    out["rollout/at_min"] = float(np.mean(rollouts == rcfg.min))
    out["rollout/at_max"] = float(np.mean(rollouts == rcfg.max))
    out["batch/reward_mean"] = stable_mean(feedback.reward_mean, rollouts.astype(np.float64))
    out["batch/success_rate"] = float(feedback.correct.sum() / rollouts.sum())
    out["batch/solved_any"] = float(np.mean(feedback.correct > 0))
    out.update(_mechanism(rollouts, weights, feedback, q, rcfg.mean, prompt_mode, visits_mean))
    return out


def _mechanism(
    rollouts: NDArray[np.int64],
    weights: NDArray[np.float64],
    feedback: Feedback,
    q: NDArray[np.float64],
    mean: int,
    prompt_mode: str,
    visits_mean: float,
) -> dict[str, float]:
    m = rollouts.shape[0]
    w_mean = float(weights.mean())
    flags = feedback.flags
    applied = prompt_mode != "off"
    return {
        "mechanism/budget_moved": float(np.abs(rollouts - mean).sum() / (2.0 * mean * m)),
        "mechanism/q_tv": float(0.5 * np.abs(q - 1.0 / q.shape[0]).sum()) if applied else 0.0,
        "mechanism/weight_max_ratio": float(weights.max() / w_mean) if w_mean > 0 else 1.0,
        "mechanism/weight_p90_ratio": float(np.quantile(weights, 0.9) / w_mean)
        if w_mean > 0
        else 1.0,
        "mechanism/zero_adv_share": float(np.mean(feedback.zero_adv)),
        "mechanism/always_solved_share": float(np.mean(flags == SEEN_CORRECT)),
        "mechanism/always_failed_share": float(np.mean(flags == SEEN_WRONG)),
        "mechanism/visits_mean": float(visits_mean),
    }


def initial_metrics(
    num_bins: int,
    shares: NDArray[np.float64],
    q: NDArray[np.float64],
    pstate: PromptState,
    rcfg: RolloutConfig,
    rstate: RolloutState,
    prompt_mode: str = "off",
    proposal: float | None = None,
) -> dict[str, float]:
    """What ``metrics()`` returns before the first update: the initial state's values.

    Args:
        num_bins: number of difficulty bins.
        shares: float64 (B,), each bin's share of the dataset.
        q: float64 (B,), the adversary's distribution.
        pstate: the adversary's state.
        rcfg: the allocator settings.
        rstate: the allocator's state.
        prompt_mode: the Prompt-GDRO mode (``"off"``: ``mechanism/q_tv`` is 0).
        proposal: the mean rollouts the allocator proposes (``Allocator.proposal``); ``None`` =
            the budget.

    Examples:
        Every prompt starts in bin 0; untrained bandits over arms 2..8 propose their mean, 5:

        >>> from gdro_core import prompt, rollout
        >>> rcfg = rollout.RolloutConfig(mode="bandit", mean=4, min=2, max=8)
        >>> pstate = prompt.init_state(2)
        >>> rstate, shares = rollout.init_state(rcfg, 2), np.array([1.0, 0.0])
        >>> out = initial_metrics(2, shares, np.array([0.5, 0.5]), pstate, rcfg, rstate,
        ...                       proposal=rollout.proposal_bandit(rcfg, rstate, shares))
        >>> out["classifier/mean_bin"], out["prompt/q/1"], round(out["prompt/entropy"], 4)
        (0.0, 0.5, 0.6931)
        >>> out["rollout/shadow_price"], round(out["rollout/mean_proposed"], 6)
        (0.0, 5.0)
    """
    out: dict[str, float] = {}
    _bin_block(out, shares, q, pstate)
    out["rollout/shadow_price"] = float(rstate.mu)
    out["rollout/mean"] = float(rcfg.mean)
    m_t = float(rcfg.mean) if proposal is None else float(proposal)
    out["rollout/mean_proposed"] = m_t
    tv = float(0.5 * np.abs(q - 1.0 / q.shape[0]).sum()) if prompt_mode != "off" else 0.0
    out.update(
        {
            "mechanism/budget_moved": 0.0,
            "mechanism/q_tv": tv,
            "mechanism/weight_max_ratio": 1.0,
            "mechanism/weight_p90_ratio": 1.0,
            "mechanism/zero_adv_share": 0.0,
            "mechanism/always_solved_share": 0.0,
            "mechanism/always_failed_share": 0.0,
            "mechanism/visits_mean": 0.0,
        }
    )
    return out


def adapter_metrics(
    *,
    rollouts: NDArray[np.int64],
    n_correct: NDArray[np.int64],
    controller_metrics: dict[str, float],
    ks: list[int] | tuple[int, ...],
    missing: int = 0,
    prefix: str = "gdro/",
) -> dict[str, float]:
    """The metrics an adapter logs for a batch of groups, all under ``prefix``.

    Args:
        rollouts: int64 (N,), rollouts per prompt.
        n_correct: int64 (N,), correct rollouts per prompt.
        controller_metrics: ``GDROController.metrics()``.
        ks: k values of the unbiased ``pass@k`` (each at most the fewest rollouts).
        missing: rollouts planned but not returned (failed sessions).
        prefix: the namespace of every key.

    Returns:
        ``{prefix}<controller key>`` for each controller metric, plus ``pass@k`` (the mean over
        prompts of ``1 - C(n-c, k)/C(n, k)``), ``solve_rate`` (the mean per-prompt fraction
        correct: every prompt weighs the same), ``solved_none`` and ``solved_all`` (fractions of
        prompts) and ``missing_rollouts``.

    Examples:
        >>> m = adapter_metrics(rollouts=np.array([4, 4, 2]), n_correct=np.array([0, 2, 2]),
        ...                     controller_metrics={"prompt/entropy": 1.5}, ks=[1, 2], missing=1)
        >>> {k: round(v, 3) for k, v in m.items()}  # doctest: +NORMALIZE_WHITESPACE
        {'gdro/prompt/entropy': 1.5, 'gdro/pass@1': 0.5, 'gdro/pass@2': 0.611,
         'gdro/solve_rate': 0.5, 'gdro/solved_none': 0.333, 'gdro/solved_all': 0.333,
         'gdro/missing_rollouts': 1.0}
    """
    from gdro_core.passk import pass_at_k

    out = {f"{prefix}{k}": float(v) for k, v in controller_metrics.items()}
    n = np.asarray(rollouts, dtype=np.int64)
    c = np.asarray(n_correct, dtype=np.int64)
    for k in ks:
        out[f"{prefix}pass@{k}"] = float(np.mean(pass_at_k(n, c, int(k))))
    out[f"{prefix}solve_rate"] = float(np.mean(c / n))
    out[f"{prefix}solved_none"] = float(np.mean(c == 0))
    out[f"{prefix}solved_all"] = float(np.mean(c == n))
    out[f"{prefix}missing_rollouts"] = float(missing)
    return out
