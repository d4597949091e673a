"""Small-scale versions of the theory checks, on the real controller and the simulated learner.

Each tolerance comes from the bound being checked, not from the runs: the Hedge regret bound,
the exact dual-update bound (with each bandit's own dual step and price cap: the sized
``RolloutConfig.variance_bandit`` knobs of ``rollout-bandit`` and the paper's of
``rollout-bandit-paper``), the WSE minimum under the exact budget, and the realised budget.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gdro_core import PromptConfig, RolloutConfig
from gdro_lab import theory
from gdro_lab.controllers import ControllerKnobs, rollout_config
from gdro_lab.run import SimConfig, run_one
from gdro_lab.summary import matrix, regret, series, summarise

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


# alpha = c / sqrt(T): the sized bandit's dual step 2e-4 at T = 1000, and the paper's 0.05 there
@pytest.mark.parametrize(("name", "c"), [("rollout-bandit", 2e-4 * math.sqrt(1000)),
                                         ("rollout-bandit-paper", 0.05 * math.sqrt(1000))])
@pytest.mark.parametrize("steps", [100, 400])
def test_budget_violation_shrinks_like_one_over_sqrt_t(name: str, c: float, steps: int) -> None:
    alpha = c / math.sqrt(steps)
    knobs = ControllerKnobs(dual_step=alpha)
    rc = rollout_config(name, mean_rollouts=4, knobs=knobs)
    assert rc.dual_step == alpha and rc.arm_signal == "variance"
    mu_max = rc.mu_max
    cfg = SimConfig(strategies=(name,), steps=steps, **SMALL, knobs=knobs)
    res = run_one(cfg, name, 0)
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


@pytest.mark.parametrize("name", ["uniform", "rollout-neyman", "rollout-bandit",
                                  "rollout-bandit-paper", "knapsack", "gdro-both"])
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


def test_bandit_strategies_use_their_own_knobs() -> None:
    knobs = ControllerKnobs()
    sized = rollout_config("rollout-bandit", mean_rollouts=4, knobs=knobs)
    assert sized == RolloutConfig.variance_bandit(mean=4, min=2, max=12, selection="mode")
    paper = rollout_config("rollout-bandit-paper", mean_rollouts=4, knobs=knobs)
    assert paper == RolloutConfig(mode="bandit", arm_signal="variance", mean=4)
    assert rollout_config("rollout-neyman", mean_rollouts=4, knobs=knobs).mode == "neyman"
    # an explicit dual step overrides either variant and leaves the rest alone
    over = rollout_config("rollout-bandit", mean_rollouts=4, knobs=ControllerKnobs(dual_step=1e-3))
    assert over.dual_step == 1e-3 and over.arm_eta == sized.arm_eta and over.mu_max == sized.mu_max


def test_summary_checks_each_bandit_against_its_own_dual_step() -> None:
    names = ("rollout-bandit", "rollout-bandit-paper")
    cfg = SimConfig(strategies=names, steps=200, **SMALL)
    res = [run_one(cfg, n, s) for n in names for s in (0, 1)]
    out = summarise(cfg, res, eta=0.65, gamma=0.01)
    for name in names:
        rc = rollout_config(name, mean_rollouts=4, knobs=cfg.knobs)
        b = out["budget"][name]
        assert b["dual"] and b["dual_step"] == rc.dual_step and b["mu_max"] == rc.mu_max
        assert b["dual_bound"] == pytest.approx(rc.mu_max / (rc.dual_step * cfg.steps))
        assert not b["price_hit_cap"]
        # the recursion is exact (float64 rounding) and the cumulative bound holds
        assert b["dual_recursion_error"] <= 1e-12 and b["cumulative_slack"] <= 1e-9
        assert b["average_violation"][0] <= b["dual_bound"]


def test_sized_bandit_moves_toward_the_square_root_law_and_paper_knobs_do_not() -> None:
    # deviation of rollouts per prompt from the square-root law on the same batches (true
    # variances), against every prompt at the mean budget: sized knobs beat it, the paper's
    # knobs (bandit flat, allocation driven by the price alone) do not
    names = ("rollout-bandit", "rollout-bandit-paper")
    cfg = SimConfig(strategies=names, steps=300, **SMALL)
    out = summarise(cfg, [run_one(cfg, n, 0) for n in names], eta=0.65, gamma=0.01)["price"]
    sized, paper = out["rollout-bandit"], out["rollout-bandit-paper"]
    assert sized["deviation"][0] < sized["deviation_flat"][0] and sized["bin_corr"] > 0
    assert paper["deviation"][0] > paper["deviation_flat"][0]
