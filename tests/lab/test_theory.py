"""The theory helpers against textbook facts (no controller involved)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gdro_lab import theory


@given(arrays(np.float64, st.tuples(st.integers(1, 200), st.integers(2, 10)),
              elements=st.floats(0.0, 1.0)), st.floats(0.01, 2.0), st.floats(0.0, 0.2))
@settings(deadline=None, max_examples=80)
def test_hedge_regret_within_bound_for_any_sequence(gains: np.ndarray, eta: float,
                                                     gamma: float) -> None:
    q = theory.hedge_probs(gains, eta, gamma)
    np.testing.assert_allclose(q.sum(axis=1), 1.0)
    assert np.all(q >= gamma / gains.shape[1] - 1e-15)
    reg = theory.regret_curve(q, gains)
    t, b = gains.shape
    assert reg[-1] <= theory.hedge_bound(b, t, eta, gamma) + 1e-9


def test_hedge_bound_on_an_adversarial_sequence() -> None:
    # the best bin flips every step: Hedge lags one step behind each time
    t, b = 1000, 10
    gains = np.zeros((t, b))
    gains[np.arange(t), np.arange(t) % 2] = 1.0
    eta = theory.tuned_eta(b, t)
    reg = theory.regret_curve(theory.hedge_probs(gains, eta, 0.0), gains)[-1]
    assert 0.0 < reg <= theory.hedge_bound(b, t, eta, 0.0)
    assert theory.hedge_bound(b, t, eta, 0.0) == pytest.approx(math.sqrt(t * math.log(b) / 2))


def test_dual_recursion_bounds_cumulative_violation() -> None:
    # mu_{t+1} = clip(mu_t + alpha (m_t - target), 0, mu_max) implies
    # sum_{s<=t} (m_s - target) <= mu_{t+1} / alpha whenever the cap never binds
    rng = np.random.default_rng(0)
    alpha, target, mu_max = 0.05, 4.0, 1.0
    mu, mus, ms = 0.0, [], []
    for _ in range(2000):
        m = 4.0 + 2.0 * math.exp(-8 * mu) - 0.5 + rng.normal(0, 0.3)  # demand falls with price
        mus.append(mu)
        ms.append(m)
        mu = min(max(mu + alpha * (m - target), 0.0), mu_max)
    ms_a, mus_a = np.array(ms), np.array(mus + [mu])
    st_ = theory.budget_stats(np.full(2000, 4.0), ms_a, mus_a[:-1], target, alpha, mu_max)
    assert not st_.price_hit_cap
    assert np.all(np.cumsum(ms_a - target) <= mus_a[1:] / alpha + 1e-9)
    assert st_.average_violation <= st_.dual_bound
    assert np.all(st_.realised_gap == 0.0)


def test_wse_of_neyman_beats_uniform_and_optimum_beats_neyman() -> None:
    share = np.array([[0.5, 0.3, 0.2]])
    sigma = np.array([0.1, 0.3, 0.5])
    nbar = 4.0
    uni = theory.wse(share, sigma, np.full((1, 3), nbar))[0]
    ney = nbar * sigma / (share[0] @ sigma)  # n proportional to sigma
    opt = nbar * sigma ** (2 / 3) / (share[0] @ sigma ** (2 / 3))  # minimiser of WSE
    w_ney = theory.wse(share, sigma, ney[None])[0]
    w_opt = theory.wse(share, sigma, opt[None])[0]
    assert w_opt <= w_ney <= uni
    # closed forms: sqrt(sum q s / n) sum q sqrt(s) and (sum q s^(2/3))^(3/2) / sqrt(n)
    assert w_ney == pytest.approx(math.sqrt(share[0] @ sigma / nbar) * (share[0] @ np.sqrt(sigma)))
    assert w_opt == pytest.approx((share[0] @ sigma ** (2 / 3)) ** 1.5 / math.sqrt(nbar))


def test_wse_ignores_absent_bins() -> None:
    share = np.array([[1.0, 0.0]])
    assert theory.wse(share, np.array([[0.5, np.nan]]), np.array([[4.0, np.nan]]))[0] == 0.25


def test_lead_lag_finds_a_known_lag() -> None:
    t, b, lag = 400, 5, 7
    x = 2.0 + 1.5 * np.sin(np.arange(t + lag) / 15.0)
    def dist(m: np.ndarray) -> np.ndarray:  # two-point distributions with mean bin m
        lo = np.floor(m).astype(int)
        out = np.zeros((m.size, b))
        out[np.arange(m.size), lo] = 1 - (m - lo)
        out[np.arange(m.size), np.minimum(lo + 1, b - 1)] += m - lo
        return out
    q, share = dist(x[lag:]), dist(x[:t])  # the data follows the adversary 7 steps later
    delta, found, corr = theory.lead_lag(q, share, max_lag=20)
    assert found == lag and corr > 0.999
    np.testing.assert_allclose(delta, x[lag:] - x[:t], atol=1e-12)


def test_auc_and_steps_to_target() -> None:
    assert theory.area_under_curve(np.array([0.0, 1.0, 1.0])) == 0.75
    steps = np.array([0, 10, 20])
    assert theory.steps_to_target(steps, np.array([0.1, 0.5, 0.9]), 0.5) == 10.0
    assert math.isnan(theory.steps_to_target(steps, np.array([0.1, 0.2, 0.3]), 0.5))
