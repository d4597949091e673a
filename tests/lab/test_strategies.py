"""The alternative strategies: budgets, the knapsack's optimality, the samplers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdro_core import ClassifierConfig, RolloutConfig
from gdro_lab.base import EpochSampler, bin_metrics
from gdro_lab.learner import Learner, LearnerConfig
from gdro_lab.scenarios import get_scenario
from gdro_lab.strategies import (
    DynamicSampling,
    KnapsackAllocation,
    VarianceSampling,
    knapsack_rollouts,
)

ALTERNATIVES = (DynamicSampling, VarianceSampling, KnapsackAllocation)


def _value(p: np.ndarray, n: np.ndarray) -> float:
    return float(np.sum(p * (1 - p) * (1 - p**n - (1 - p) ** n)))


@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=3), st.data())
@settings(deadline=None, max_examples=60)
def test_knapsack_is_optimal_against_brute_force(ps: list[float], data: st.DataObject) -> None:
    p = np.array(ps)
    low, high = 2, 8
    budget = data.draw(st.integers(low * p.size, high * p.size))
    n = knapsack_rollouts(p, budget, low, high)
    assert n.sum() == budget and np.all((n >= low) & (n <= high))
    best = max(_value(p, np.array(c)) for c in itertools.product(range(low, high + 1), repeat=p.size)
               if sum(c) == budget)
    assert _value(p, n) == pytest.approx(best, rel=1e-12, abs=1e-15)


def test_knapsack_rejects_an_infeasible_budget() -> None:
    with pytest.raises(ValueError, match=r"budget must be in \[4, 24\] for 2 prompts; got 30"):
        knapsack_rollouts(np.array([0.5, 0.5]), 30, 2, 12)


def test_epoch_sampler_covers_each_id_once_per_epoch() -> None:
    s = EpochSampler(10, np.random.default_rng(0))
    draws = [s.draw(4) for _ in range(10)]  # 40 ids = 4 epochs
    flat = np.concatenate(draws)
    for d in draws:
        assert np.unique(d).size == d.size
    for e in range(4):  # every block of 10 consecutive draws is one epoch: all ids once
        assert np.unique(flat[10 * e : 10 * e + 10]).size == 10
    counts = np.bincount(flat, minlength=10)
    assert np.all(counts == 4)


@pytest.mark.parametrize("cls", ALTERNATIVES)
def test_every_step_spends_exactly_the_budget(cls: type) -> None:
    scen = get_scenario("stationary")
    pop = scen.build(np.random.default_rng(0), 2000)
    lrn = Learner(LearnerConfig(), pop)
    rng = np.random.default_rng(1)
    s = cls(num_prompts=2000, batch_size=50, seed=0)
    for _ in range(40):
        prop = s.propose()
        assert prop.rollouts.sum() == 200 and np.all((prop.rollouts >= 2) & (prop.rollouts <= 12))
        assert np.unique(prop.ids).size == 50 and np.all((prop.bins >= 0) & (prop.bins < 10))
        gen = lrn.generate(rng, prop.ids, prop.rollouts)
        batch = s.observe(prop, gen)
        lrn.train(*batch, mean=4)
        m = s.metrics()
        assert m["rollout/mean"] == 4.0
        assert sum(m[f"classifier/share/{b}"] for b in range(10)) == pytest.approx(1.0)


def test_dynamic_sampling_trains_full_batches_of_mixed_groups() -> None:
    pop = get_scenario("stationary").build(np.random.default_rng(0), 3000)
    lrn = Learner(LearnerConfig(), pop)
    rng = np.random.default_rng(2)
    s = DynamicSampling(num_prompts=3000, batch_size=40, seed=0)
    mixed_total, trained_total = 0, 0
    for _ in range(30):
        prop = s.propose()
        gen = lrn.generate(rng, prop.ids, prop.rollouts)
        c = np.add.reduceat(gen.reward, np.r_[0, np.cumsum(prop.rollouts)[:-1]])
        mixed_total += int(np.sum((c > 0) & (c < prop.rollouts)))
        batch = s.observe(prop, gen)
        assert batch.ids.size in (0, 40)
        assert np.all(batch.signal != 0.0)  # every trained group carries gradient
        trained_total += batch.ids.size
        assert s.metrics()["dapo/updated"] == float(batch.ids.size == 40)
    assert trained_total + s.metrics()["dapo/buffer"] == mixed_total  # nothing lost or doubled


def test_variance_sampling_prefers_informative_prompts() -> None:
    n = 400
    s = VarianceSampling(num_prompts=n, batch_size=20, seed=0)
    h = s._h
    h.last_total[:] = 4
    h.last_correct[: n // 2] = 4  # solved last time: weight = floor 0.01
    h.last_correct[n // 2 :] = 2  # mixed last time: weight 0.25
    picks = np.concatenate([s.propose().ids for _ in range(50)])
    frac_mixed = float(np.mean(picks >= n // 2))
    # in a pool of 80 with half of each, 20 draws by weight 25:1 pick mixed ones >90% of the time
    assert frac_mixed > 0.9


def test_knapsack_gives_informative_prompts_more_rollouts() -> None:
    s = KnapsackAllocation(num_prompts=100, batch_size=100, seed=0)
    h = s._h
    h.last_total[:] = 4
    h.last_correct[:50] = 4
    h.last_correct[50:] = 2
    prop = s.propose()
    informative = prop.ids >= 50
    assert prop.rollouts[informative].mean() > prop.rollouts[~informative].mean()
    assert prop.rollouts.sum() == 400


def test_bin_metrics_shape() -> None:
    m = bin_metrics(np.array([0, 0, 3]), np.array([2, 4, 6]), 4, 4)
    assert m["classifier/share/0"] == pytest.approx(2 / 3) and m["classifier/share/1"] == 0.0
    assert m["rollout/n_mean/0"] == 3.0 and m["rollout/n_mean/3"] == 6.0
    assert "rollout/n_mean/1" not in m and m["classifier/mean_bin"] == pytest.approx(1.0)


def test_bad_arguments_name_the_parameter() -> None:
    with pytest.raises(ValueError, match=r"batch_size must be an integer in \[1, 10\]; got 11"):
        DynamicSampling(num_prompts=10, batch_size=11, seed=0)
    with pytest.raises(ValueError, match=r"floor must be a finite number in \(0, 0.25\]"):
        VarianceSampling(num_prompts=10, batch_size=5, seed=0, floor=0.0)
    with pytest.raises(TypeError, match="rollout must be a gdro_core.RolloutConfig; got 4"):
        KnapsackAllocation(num_prompts=10, batch_size=5, seed=0, rollout=4)  # type: ignore[arg-type]


def test_the_budget_bounds_and_bins_come_from_the_core_configs() -> None:
    # the knapsack spends rollout.mean per prompt within [rollout.min, rollout.max]; every
    # alternative reports bins with the classifier config it is given
    rollout, classifier = RolloutConfig(mean=6, min=3, max=9), ClassifierConfig(num_bins=4)
    pop = get_scenario("stationary").build(np.random.default_rng(0), 500)
    lrn, rng = Learner(LearnerConfig(), pop), np.random.default_rng(1)
    for cls in ALTERNATIVES:
        s = cls(num_prompts=500, batch_size=20, seed=0, rollout=rollout, classifier=classifier)
        assert s.num_bins == 4
        for _ in range(30):
            prop = s.propose()
            assert prop.rollouts.sum() == 120 and np.all((prop.rollouts >= 3) & (prop.rollouts <= 9))
            s.observe(prop, lrn.generate(rng, prop.ids, prop.rollouts))
            assert s.metrics()["rollout/mean"] == 6.0
            assert np.all(prop.bins < 4)


@pytest.mark.parametrize("cls", ALTERNATIVES)
def test_old_keywords_still_work_for_one_release(cls: type) -> None:
    old = {"mean_rollouts": 6, "num_bins": 5}
    if cls is KnapsackAllocation:
        old.update(min_rollouts=3, max_rollouts=9)
    with pytest.warns(FutureWarning, match=r"\(mean_rollouts, num_bins.*\) is deprecated"):
        a = cls(num_prompts=300, batch_size=16, seed=4, **old)
    b = cls(num_prompts=300, batch_size=16, seed=4,
            rollout=RolloutConfig(mean=6, **({"min": 3, "max": 9} if "min_rollouts" in old else {})),
            classifier=ClassifierConfig(num_bins=5))
    pop = get_scenario("stationary").build(np.random.default_rng(0), 300)
    la, lb = Learner(LearnerConfig(), pop), Learner(LearnerConfig(), pop)
    ra, rb = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(10):  # the same decisions, step after step
        pa, pb = a.propose(), b.propose()
        for x, y in zip(pa[:4], pb[:4], strict=True):
            np.testing.assert_array_equal(x, y)
        a.observe(pa, la.generate(ra, pa.ids, pa.rollouts))
        b.observe(pb, lb.generate(rb, pb.ids, pb.rollouts))
    assert a.metrics() == b.metrics()
    with pytest.raises(TypeError, match=r"takes rollout= and classifier=; got \['mean_rollouts'\]"):
        cls(num_prompts=300, batch_size=16, seed=0, rollout=RolloutConfig(), mean_rollouts=4)
    with pytest.raises(TypeError, match=r"takes rollout= and classifier=; got \['mean'\]"):
        cls(num_prompts=300, batch_size=16, seed=0, mean=4)
