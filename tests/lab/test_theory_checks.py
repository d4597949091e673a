"""Small-scale versions of the theory checks, on the real controller and the simulated learner.

Each tolerance comes from the bound being checked, not from the runs: the Hedge regret bound,
the exact dual-update bound, the WSE minimum under the exact budget, and the realised budget.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gdro_core import PromptConfig, RolloutConfig
from gdro_lab import theory
from gdro_lab.controllers import ControllerKnobs
from gdro_lab.run import SimConfig, run_one
from gdro_lab.summary import matrix, regret, series

SMALL = {"num_prompts": 3000, "batch_size": 64, "eval_every": 50, "eval_size": 1000}


def test_prompt_gdro_regret_within_hedge_bound() -> None:
    steps = 300
    eta = theory.tuned_eta(10, steps)
    gamma = PromptConfig().gamma
    cfg = SimConfig(strategies=("prompt-reweight",), steps=steps, **SMALL,
                    knobs=ControllerKnobs(score_rule="cumulative", eta=eta))
    res = run_one(cfg, "prompt-reweight", 0)
    out = regret(res, 10, eta, gamma)
    assert out is not None
    lo, hi = out["gain_range"]
    # the bound's premise: gains in [0, 1] (recovered as differences of cumulative sums <= T,
    # so up to T * 2^-52 * T of rounding)
    assert -1e-9 <= lo and hi <= 1.0 + 1e-9
    assert out["max_abs_q_vs_hedge"] < 1e-12  # the weights are Hedge's on those gains
    bound = theory.hedge_bound(10, steps, eta, gamma)
    assert out["regret"] <= bound
    assert np.all(out["curve"] <= [theory.hedge_bound(10, t + 1, eta, gamma)
                                   for t in range(steps)])


@pytest.mark.parametrize("steps", [100, 400])
def test_budget_violation_shrinks_like_one_over_sqrt_t(steps: int) -> None:
    c = 0.5
    alpha = c / math.sqrt(steps)
    mu_max = RolloutConfig().mu_max
    cfg = SimConfig(strategies=("rollout-bandit",), steps=steps, **SMALL,
                    knobs=ControllerKnobs(dual_step=alpha))
    res = run_one(cfg, "rollout-bandit", 0)
    realised = series(res.rows, "train/rollouts") / cfg.batch_size
    m = series(res.rows, "rollout/budget_unconstrained")
    mu = series(res.rows, "rollout/shadow_price")
    np.testing.assert_array_equal(realised, 4.0)  # the exact-budget DP, every step
    st = theory.budget_stats(realised, m, mu, 4.0, alpha, mu_max)
    assert not st.price_hit_cap  # premise of the bound
    # the logged price follows mu_{t+1} = clip(mu_t + alpha (m_t - target), 0, mu_max) ...
    np.testing.assert_allclose(mu[1:], np.clip(mu[:-1] + alpha * (m[:-1] - 4.0), 0, mu_max),
                               rtol=0, atol=1e-12)
    # ... hence sum_{s<=t} (m_s - target) <= mu_{t+1} / alpha and the 1/sqrt(T) average
    assert np.all(np.cumsum(m - 4.0)[:-1] <= mu[1:] / alpha + 1e-9)
    assert st.average_violation <= mu_max / (c * math.sqrt(steps))


@pytest.mark.parametrize("name", ["uniform", "rollout-neyman", "rollout-bandit", "knapsack",
                                  "gdro-both"])
def test_wse_never_beats_its_minimum_under_the_budget(name: str) -> None:
    cfg = SimConfig(strategies=(name,), steps=150, **SMALL)
    res = run_one(cfg, name, 1)
    wse = series(res.rows, "sim/wse")
    # min over {n_b > 0 : sum_b share_b n_b = mean} of sum_b share_b sigma_b / sqrt(n_b)
    np.testing.assert_array_less(series(res.rows, "sim/wse_optimal") - 1e-12, wse)
    np.testing.assert_array_less(series(res.rows, "sim/wse_optimal") - 1e-12,
                                 series(res.rows, "sim/wse_neyman_oracle"))
    # Cauchy-Schwarz: the square-root law with true variances never loses to uniform
    np.testing.assert_array_less(series(res.rows, "sim/wse_neyman_oracle") - 1e-12,
                                 series(res.rows, "sim/wse_uniform"))
    if name == "uniform":
        np.testing.assert_allclose(wse, series(res.rows, "sim/wse_uniform"), rtol=1e-12)


def test_resampling_moves_the_batch_toward_hard_bins() -> None:
    cfg = SimConfig(strategies=("uniform", "prompt-resample"), steps=200, **SMALL)
    hard = {}
    for name in cfg.strategies:
        res = run_one(cfg, name, 0)
        share = np.nan_to_num(matrix(res.rows, "classifier/share/", 10))[100:]
        hard[name] = float(share[:, :5].sum(axis=1).mean())
    assert hard["prompt-resample"] > hard["uniform"]


def test_failure_adversary_leads_toward_low_bins() -> None:
    cfg = SimConfig(strategies=("prompt-reweight",), steps=200, **SMALL)
    res = run_one(cfg, "prompt-reweight", 0)
    q = matrix(res.rows, "prompt/q/", 10)[100:]
    share = np.nan_to_num(matrix(res.rows, "classifier/share/", 10))[100:]
    delta, _, _ = theory.lead_lag(q, share)
    assert delta.mean() < 0.0  # the adversary's mean bin sits below the data's: harder bins


def test_ema_regret_is_measured_on_failure_rates_without_a_bound() -> None:
    cfg = SimConfig(strategies=("prompt-reweight", "knapsack"), steps=60, **SMALL)
    res = run_one(cfg, "prompt-reweight", 0)
    out = regret(res, 10, 0.65, 0.01, rule="ema")
    assert out is not None and not out["bound_applies"] and math.isnan(out["max_abs_q_vs_hedge"])
    lo, hi = out["gain_range"]
    assert 0.0 <= lo and hi <= 1.0  # failure rates
    # regret against the best fixed bin is at least -T*max gain and at most T*max gain
    assert abs(out["regret"]) <= 60.0
    assert regret(run_one(cfg, "knapsack", 0), 10, 0.65, 0.01, rule="ema") is None
