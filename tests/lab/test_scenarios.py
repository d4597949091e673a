"""Scenarios: deterministic populations, heavy tails, drift and noise as documented."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gdro_lab.learner import Learner, LearnerConfig, sigmoid
from gdro_lab.scenarios import SCENARIOS, Scenario, get_scenario


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_population_is_a_function_of_the_seed(name: str) -> None:
    s = get_scenario(name)
    a = s.build(np.random.default_rng([3, 0]), 5000)
    b = s.build(np.random.default_rng([3, 0]), 5000)
    c = s.build(np.random.default_rng([4, 0]), 5000)
    np.testing.assert_array_equal(a.difficulty, b.difficulty)
    np.testing.assert_array_equal(a.topic, b.topic)
    assert not np.array_equal(a.difficulty, c.difficulty)
    assert a.difficulty.dtype == np.float32 and a.topic.dtype == np.int8
    assert a.level_low <= float(a.difficulty.min()) and float(a.difficulty.max()) <= a.level_high


def test_stationary_difficulty_is_heavy_tailed() -> None:
    d = get_scenario("stationary").build(np.random.default_rng(0), 200_000).difficulty
    p0 = sigmoid(-d.astype(np.float64))
    assert 0.8 < np.median(p0) < 0.9  # an easy core
    # Lomax(1.5) tail: P(X > x) = (1 + x)^-1.5, so P(d > 1.9) = (1 + 4.4/1.2)^-1.5 ~ 0.099
    frac = float(np.mean(d > 1.9))
    assert abs(frac - (1 + 4.4 / 1.2) ** -1.5) < 4 * math.sqrt(0.1 * 0.9 / 200_000)


def test_rare_hard_tail_fraction() -> None:
    n = 100_000
    d = get_scenario("rare-hard-tail").build(np.random.default_rng(0), n).difficulty
    frac = float(np.mean(d > 1.5))  # the core N(-2, 1) is above 1.5 with probability 2e-4
    assert abs(frac - 0.03) < 4 * math.sqrt(0.03 * 0.97 / n) + 2.5e-4


def test_drift_offsets_rotate_and_cancel() -> None:
    s = get_scenario("drifting")
    offsets = np.array([s.offsets(t) for t in range(800)])
    assert offsets.shape == (800, 4)
    np.testing.assert_allclose(offsets.sum(axis=1), 0.0, atol=1e-12)  # topics cancel out
    np.testing.assert_allclose(offsets[:400], offsets[400:], atol=1e-12)  # period 400
    assert np.abs(offsets).max() == pytest.approx(1.5)
    assert get_scenario("stationary").offsets(10) is None


def test_drift_changes_success_probabilities() -> None:
    s = get_scenario("drifting")
    pop = s.build(np.random.default_rng(0), 1000)
    lrn = Learner(LearnerConfig(), pop)
    ids = np.arange(1000)
    assert not np.allclose(lrn.success_prob(ids, s.offsets(0)), lrn.success_prob(ids, s.offsets(100)))


def test_noisy_rewards_flip_rate() -> None:
    assert get_scenario("noisy-rewards").flip_rate == 0.1
    assert all(get_scenario(n).flip_rate == 0.0 for n in ("stationary", "drifting"))


def test_unknown_scenario_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="scenario must be one of stationary, drifting, "
                       "rare-hard-tail, noisy-rewards; got 'flat'"):
        get_scenario("flat")


def test_scenario_fields_are_validated() -> None:
    build = get_scenario("stationary").build
    with pytest.raises(ValueError, match=r"Scenario.flip_rate must be a finite number in "
                       r"\[0, 0.5\); got 0.5"):
        Scenario(name="x", description="", build=build, flip_rate=0.5)
    with pytest.raises(ValueError, match=r"Scenario.drift_period must be a finite number > 0"):
        Scenario(name="x", description="", build=build, drift_period=0.0)
