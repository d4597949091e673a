"""Small-scale versions of the theory checks, on the real controller and the simulated learner.

Each tolerance comes from the bound being checked, not from the runs: the Hedge regret bound,
the exact dual-update bound (with each bandit's own dual step and price cap: the ``reward``
recipe's knobs of ``rollout-bandit`` and the paper's of ``rollout-bandit-paper``), the WSE minimum
under the exact budget, and the realised budget. The constants come from the controllers the
lab built, never from fresh configs.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from gdro_lab import theory
from gdro_lab.run import SimConfig, run_one
from gdro_lab.summary import matrix, regret, series, summarise

SMALL = {"num_prompts": 3000, "batch_size": 64, "eval_every": 50, "eval_size": 1000}


def test_prompt_gdro_regret_within_hedge_bound() -> None:
    steps = 300
    eta = theory.tuned_eta(10, steps)
    cfg = SimConfig(strategies=("prompt-reweight",), steps=steps, **SMALL,
                    controller={"prompt": {"score_rule": "cumulative", "eta": eta}})
    res = run_one(cfg, "prompt-reweight", 0)
    assert res.controller is not None and res.controller.prompt.eta == eta
    gamma = res.controller.prompt.gamma
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
    cfg = SimConfig(strategies=(name,), steps=steps, **SMALL,
                    controller={"rollout": {"dual_step": alpha}})
    res = run_one(cfg, name, 0)
    assert res.controller is not None
    rc = res.controller.rollout
    assert rc.dual_step == alpha and rc.arm_signal == "variance"
    mu_max = rc.mu_max
    realised = series(res.rows, "train/rollouts") / cfg.batch_size
    m = series(res.rows, "rollout/mean_proposed")
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


def test_an_explicit_dual_step_overrides_either_bandit_and_leaves_the_rest() -> None:
    base, over = SimConfig(), SimConfig(controller={"rollout": {"dual_step": 1e-3}})
    for name in ("rollout-bandit", "rollout-bandit-paper"):
        a, b = base.controller_config(name), over.controller_config(name)
        assert a is not None and b is not None
        assert b.rollout.dual_step == 1e-3 and a.rollout.dual_step != 1e-3
        assert dataclasses.replace(b.rollout, dual_step=a.rollout.dual_step) == a.rollout
        assert (b.prompt, b.classifier) == (a.prompt, a.classifier)


def test_theory_checks_read_eta_and_gamma_from_the_controller_built() -> None:
    # a non-default eta (and gamma) given as an override reaches the controller, and the summary
    # checks the weights against Hedge with exactly those: a summary using the default 0.65 would
    # report it and find the logged q far from Hedge's
    steps, eta, gamma = 80, 0.3, 0.05
    cfg = SimConfig(strategies=("prompt-reweight", "gdro-both"), steps=steps, **SMALL,
                    controller={"prompt": {"eta": eta, "gamma": gamma,
                                           "score_rule": "cumulative"}})
    res = [run_one(cfg, n, 0) for n in cfg.strategies]
    out = summarise(cfg, res)
    for name in cfg.strategies:
        r = out["regret"][name]
        assert (r["eta"], r["gamma"]) == (eta, gamma)
        assert r["bound"] == pytest.approx(theory.hedge_bound(10, steps, eta, gamma))
        assert r["max_abs_q_vs_hedge"] < 1e-12
        assert out["controllers"][name]["prompt"]["eta"] == eta
    wrong = regret(res[0], 10, 0.65, 0.01)  # the constants of a fresh PromptConfig()
    assert wrong is not None and wrong["max_abs_q_vs_hedge"] > 1e-3


def test_summary_checks_each_bandit_against_its_own_dual_step() -> None:
    names = ("rollout-bandit", "rollout-bandit-paper")
    cfg = SimConfig(strategies=names, steps=200, **SMALL)
    res = [run_one(cfg, n, s) for n in names for s in (0, 1)]
    out = summarise(cfg, res)
    for name in names:
        c = cfg.controller_config(name)
        assert c is not None
        rc = c.rollout
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
    out = summarise(cfg, [run_one(cfg, n, 0) for n in names])["price"]
    sized, paper = out["rollout-bandit"], out["rollout-bandit-paper"]
    assert sized["deviation"][0] < sized["deviation_flat"][0] and sized["bin_corr"] > 0
    assert paper["deviation"][0] > paper["deviation_flat"][0]
