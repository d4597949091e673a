"""The controller's metrics: a flat ``dict[str, float]`` per step, namespaced like the paper's plots.

* ``classifier/``: bin shares of the batch, mean bin, mass in the upper bins, moves.
* ``prompt/``: the adversary's q, its entropy, scores, lead-lag against the data, weights.
* ``rollout/``: rollouts per bin, budget share per bin, the shadow price, target and proposed
  (unconstrained) budget, hits at the bounds.
* ``batch/``: rewards and success of the step's rollouts, per bin.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from gdro_core import rollout as _rollout
from gdro_core.classifier import ClassifierDelta
from gdro_core.prompt import PromptState, entropy
from gdro_core.rollout import Allocation, RolloutConfig, RolloutState

__all__ = ["initial_metrics", "step_metrics"]


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


def step_metrics(
    *,
    num_bins: int,
    bins: NDArray[np.int64],
    rollouts: NDArray[np.int64],
    weights: NDArray[np.float64],
    rewards: NDArray[np.float64],
    offsets: NDArray[np.int64],
    correct: NDArray[np.int64],
    q: NDArray[np.float64],
    alloc: Allocation,
    rcfg: RolloutConfig,
    pstate: PromptState,
    delta: ClassifierDelta,
) -> dict[str, float]:
    """Metrics of a completed step, from what its plan used and what came back.

    Args:
        num_bins: number of difficulty bins.
        bins: int64 (m,), each prompt's bin at planning time.
        rollouts: int64 (m,), rollouts per prompt.
        weights: float64 (m,), the plan's per-prompt weights.
        rewards: float64 (R,), the flat rewards in plan order.
        offsets: int64 (m+1,), prompt i's rewards are ``rewards[offsets[i]:offsets[i+1]]``.
        correct: int64 (m,), correct rollouts per prompt.
        q: float64 (B,), the adversary's distribution the plan used.
        alloc: the step's allocation (its price and unconstrained mean).
        rcfg: the allocator settings.
        pstate: the adversary's state after the step (its scores are reported).
        delta: the classifier's step (moves and pass rates).

    Examples:
        Two prompts of bin 0, two rollouts each; one prompt solves one of its two:

        >>> from gdro_core import classifier, prompt, rollout
        >>> ccfg, rcfg = classifier.ClassifierConfig(num_bins=2), rollout.RolloutConfig(mean=2)
        >>> pstate, rstate = prompt.init_state(2), rollout.init_state(rcfg, 2)
        >>> bins, correct = np.array([0, 0]), np.array([1, 0])
        >>> alloc = rollout.plan_fixed(rcfg, rstate, bins, np.random.default_rng(0), "numba")
        >>> delta = classifier.step(ccfg, classifier.init_state(ccfg, 3), np.array([0, 2]),
        ...                         classifier.outcomes(ccfg, correct, alloc.rollouts))
        >>> out = step_metrics(
        ...     num_bins=2, bins=bins, rollouts=alloc.rollouts, weights=np.ones(2),
        ...     rewards=np.array([1.0, 0.0, 0.0, 0.0]), offsets=np.array([0, 2, 4]),
        ...     correct=correct, q=np.array([0.5, 0.5]), alloc=alloc, rcfg=rcfg,
        ...     pstate=pstate, delta=delta)
        >>> out["classifier/share/0"], out["classifier/moved"], out["rollout/n_mean/0"]
        (1.0, 0.5, 2.0)
        >>> out["batch/success_rate"], out["batch/solved_any"], "rollout/n_mean/1" in out
        (0.25, 0.5, False)
    """
    m = bins.shape[0]
    cnt = np.bincount(bins, minlength=num_bins)
    shares = cnt / m
    out: dict[str, float] = {}
    _bin_block(out, shares, q, pstate)
    out["classifier/moved"] = float(np.mean(delta.new_bins != delta.old_bins))
    out["classifier/pass_rate"] = float(delta.rate.mean())
    out["prompt/weight_max"] = float(weights.max())
    out["prompt/weight_min"] = float(weights.min())
    n_tot = np.bincount(bins, weights=rollouts.astype(np.float64), minlength=num_bins)
    prompt_reward = np.add.reduceat(rewards, offsets[:-1]) / rollouts
    r_tot = np.bincount(bins, weights=prompt_reward, minlength=num_bins)
    for b in np.flatnonzero(cnt):
        out[f"rollout/n_mean/{b}"] = float(n_tot[b] / cnt[b])
        out[f"rollout/budget_share/{b}"] = float(n_tot[b] / rollouts.sum())
        out[f"batch/reward/{b}"] = float(r_tot[b] / cnt[b])
    out["rollout/shadow_price"] = float(alloc.mu)
    out["rollout/budget_target"] = float(rcfg.mean)
    out["rollout/budget_unconstrained"] = float(alloc.unconstrained)
    out["rollout/budget_realized"] = float(rollouts.sum() / m)
    out["rollout/at_min"] = float(np.mean(rollouts == rcfg.min))
    out["rollout/at_max"] = float(np.mean(rollouts == rcfg.max))
    out["batch/reward_mean"] = float(rewards.mean())
    out["batch/success_rate"] = float(correct.sum() / rollouts.sum())
    out["batch/solved_any"] = float(np.mean(correct > 0))
    return out


def initial_metrics(
    num_bins: int,
    shares: NDArray[np.float64],
    q: NDArray[np.float64],
    pstate: PromptState,
    rcfg: RolloutConfig,
    rstate: RolloutState,
) -> dict[str, float]:
    """What ``metrics()`` returns before the first update: the initial state's values.

    Args:
        num_bins: number of difficulty bins.
        shares: float64 (B,), each bin's share of the dataset.
        q: float64 (B,), the adversary's distribution.
        pstate: the adversary's state.
        rcfg: the allocator settings.
        rstate: the allocator's state.

    Examples:
        Every prompt starts in bin 0; untrained bandits over arms 2..8 propose their mean, 5:

        >>> from gdro_core import prompt, rollout
        >>> rcfg = rollout.RolloutConfig(mode="bandit", mean=4, min=2, max=8)
        >>> pstate = prompt.init_state(2)
        >>> out = initial_metrics(2, np.array([1.0, 0.0]), np.array([0.5, 0.5]), pstate, rcfg,
        ...                       rollout.init_state(rcfg, 2))
        >>> out["classifier/mean_bin"], out["prompt/q/1"], round(out["prompt/entropy"], 4)
        (0.0, 0.5, 0.6931)
        >>> out["rollout/shadow_price"], round(out["rollout/budget_unconstrained"], 6)
        (0.0, 5.0)
    """
    out: dict[str, float] = {}
    _bin_block(out, shares, q, pstate)
    out["rollout/shadow_price"] = float(rstate.mu)
    out["rollout/budget_target"] = float(rcfg.mean)
    present = shares > 0
    if rcfg.mode == "bandit":
        p = np.exp(_rollout.arm_log_probs(rcfg, rstate.arm_loss[present], rstate.mu))
        m_t = float(np.dot(shares[present], p @ rcfg.arms.astype(np.float64)))
    elif rcfg.mode == "neyman":
        v = _rollout.variance_proxy(rcfg, rstate)[present]
        n_star, _ = _rollout.neyman_continuous(
            v, shares[present], float(rcfg.mean), float(rcfg.min), float(rcfg.max)
        )
        m_t = float(np.dot(shares[present], n_star))
    else:
        m_t = float(rcfg.mean)
    out["rollout/budget_unconstrained"] = m_t
    return out
