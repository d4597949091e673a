"""The simulated learner's invariants: probabilities in [0, 1], equal groups teach nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdro_lab.learner import Learner, LearnerConfig, Population, group_signal, sigmoid


def _population(n: int, seed: int = 0) -> Population:
    rng = np.random.default_rng(seed)
    d = rng.normal(0.0, 3.0, size=n).astype(np.float32)
    return Population(d, rng.integers(0, 4, size=n, dtype=np.int8), -6.0, 6.0)


def _reference_signal(reward: np.ndarray, success: np.ndarray, rollouts: np.ndarray) -> np.ndarray:
    """Loop version of verl's GRPO advantage (std with n-1, eps 1e-6, clip 5) times success."""
    out, start = [], 0
    for n in rollouts:
        r, s = reward[start : start + n], success[start : start + n]
        start += n
        std = r.std(ddof=1)
        adv = np.zeros(n) if std == 0 else np.clip((r - r.mean()) / (std + 1e-6), -5, 5)
        out.append(float((adv * s).mean()))
    return np.array(out)


groups = st.lists(st.lists(st.booleans(), min_size=2, max_size=12), min_size=1, max_size=20)


@given(groups, st.floats(0.0, 0.4))
@settings(deadline=None, max_examples=60)
def test_group_signal_matches_loop_reference(gs: list[list[bool]], flip: float) -> None:
    rng = np.random.default_rng(len(gs))
    success = np.concatenate([np.array(g) for g in gs])
    reward = (success ^ (rng.random(success.size) < flip)).astype(np.float64)
    rollouts = np.array([len(g) for g in gs])
    np.testing.assert_allclose(group_signal(reward, success, rollouts),
                               _reference_signal(reward, success, rollouts), rtol=1e-12,
                               atol=1e-15)


@given(st.lists(st.tuples(st.integers(2, 12), st.booleans()), min_size=1, max_size=20))
@settings(deadline=None, max_examples=60)
def test_all_equal_group_teaches_nothing(spec: list[tuple[int, bool]]) -> None:
    rollouts = np.array([n for n, _ in spec])
    verdict = np.concatenate([np.full(n, v) for n, v in spec])
    signal = group_signal(verdict.astype(np.float64), verdict, rollouts)
    assert np.all(signal == 0.0)
    pop = _population(50)
    lrn = Learner(LearnerConfig(), pop)
    theta, own = lrn.theta.copy(), lrn.own.copy()
    ids = np.arange(len(spec))
    lrn.train(ids, lrn.levels(lrn.difficulty(ids)), signal, np.full(ids.size, 15.0), rollouts, 4)
    np.testing.assert_array_equal(lrn.theta, theta)
    np.testing.assert_array_equal(lrn.own, own)


@given(st.integers(2, 12), st.data())
def test_clean_mixed_group_signal_closed_form(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, n - 1))
    success = np.arange(n) < k
    g = group_signal(success.astype(np.float64), success, np.array([n]))[0]
    rbar = k / n
    # (1/n) sum_j A_j s_j with A = (s - rbar) / (std_{n-1} + 1e-6)
    expect = k * (1 - rbar) / n / (math.sqrt(n / (n - 1) * rbar * (1 - rbar)) + 1e-6)
    assert g == pytest.approx(expect, rel=1e-12)
    assert abs(g - math.sqrt((n - 1) / n * rbar * (1 - rbar))) < 1e-5


@given(st.floats(-60, 60), st.floats(-60, 60), st.floats(-60, 60))
def test_success_probability_in_unit_interval(theta: float, own: float, d: float) -> None:
    pop = Population(np.array([d], np.float32), np.zeros(1, np.int8), -6.0, 6.0)
    lrn = Learner(LearnerConfig(num_levels=4), pop)
    lrn.theta[:] = theta
    lrn.own[:] = own
    p = lrn.success_prob(np.array([0]), np.array([1.0, -1.0, 0.0, 0.0]))
    assert np.all((p >= 0.0) & (p <= 1.0)) and np.all(np.isfinite(p))


def test_probabilities_stay_valid_and_rise_under_training() -> None:
    pop = _population(2000)
    lrn = Learner(LearnerConfig(lr_shared=5.0, lr_own=5.0), pop)
    rng = np.random.default_rng(1)
    all_ids = np.arange(pop.num_prompts)
    before = lrn.success_prob(all_ids).mean()
    for _ in range(200):
        ids = rng.choice(pop.num_prompts, 64, replace=False)
        rollouts = rng.integers(2, 13, size=ids.size)
        gen = lrn.generate(rng, ids, rollouts)
        assert np.all((gen.prob >= 0) & (gen.prob <= 1))
        assert np.all(gen.signal >= 0)  # clean verdicts: the gradient only raises success
        lrn.train(ids, gen.levels, gen.signal, np.ones(ids.size), rollouts, 4)
    after = lrn.success_prob(all_ids)
    assert np.all((after >= 0) & (after <= 1)) and np.all(np.isfinite(after))
    assert after.mean() > before


def test_generate_is_deterministic_and_clean_without_flips() -> None:
    lrn = Learner(LearnerConfig(), _population(100))
    ids, n = np.arange(10), np.full(10, 6)
    a = lrn.generate(np.random.default_rng(3), ids, n)
    b = lrn.generate(np.random.default_rng(3), ids, n)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.reward, a.success.astype(np.float64))
    noisy = lrn.generate(np.random.default_rng(3), ids, n, flip_rate=0.3)
    assert noisy.reward.shape == (60,) and np.any(noisy.reward != noisy.success)


def test_flip_rate_flips_that_fraction() -> None:
    lrn = Learner(LearnerConfig(), _population(1000))
    ids = np.arange(1000)
    gen = lrn.generate(np.random.default_rng(0), ids, np.full(1000, 10), flip_rate=0.1)
    frac = float(np.mean(gen.reward != gen.success))
    assert abs(frac - 0.1) < 4 * math.sqrt(0.1 * 0.9 / 10_000)  # 4 standard errors


def test_aggregation_token_weighs_prompts_by_rollouts() -> None:
    pop = _population(10)
    ids = np.array([0, 1])
    lv = np.array([3, 3])
    sig = np.array([0.4, 0.4])
    tok, pro = Learner(LearnerConfig(), pop), Learner(LearnerConfig(aggregation="prompt"), pop)
    tok.train(ids, lv, sig, np.ones(2), np.array([2, 6]), 4)
    pro.train(ids, lv, sig, np.ones(2), np.array([2, 6]), 4)
    np.testing.assert_allclose(tok.theta, pro.theta)  # mean of n/4 over the batch is 1
    assert tok.own[1] == 3 * tok.own[0] and pro.own[1] == pro.own[0]


def test_transfer_kernel_favours_hard_to_easy() -> None:
    lrn = Learner(LearnerConfig(), _population(10))
    k = lrn.kernel
    assert k[10, 12] > k[12, 10]  # a signal two levels harder moves level 10 more
    np.testing.assert_allclose(np.diag(k), 1.0)


def test_state_is_nine_bytes_per_prompt() -> None:
    pop = _population(1000)
    lrn = Learner(LearnerConfig(), pop)
    per_prompt = (pop.difficulty.nbytes + pop.topic.nbytes + lrn.own.nbytes) / 1000
    assert per_prompt == 9.0


def test_sigmoid_is_symmetric() -> None:
    x = np.linspace(-30, 30, 101)
    np.testing.assert_allclose(sigmoid(x) + sigmoid(-x), 1.0, atol=1e-15)


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"LearnerConfig.num_levels must be an integer >= 2; got 1"):
        LearnerConfig(num_levels=1)
    with pytest.raises(ValueError, match="LearnerConfig.aggregation must be one of"):
        LearnerConfig(aggregation="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"LearnerConfig.transfer_up must be a finite number > 0"):
        LearnerConfig(transfer_up=0.0)
