"""The runner: every strategy's budget accounting, determinism per seed, report compatibility."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gdro_cli.report import write_report
from gdro_cli.runs import load_run
from gdro_core import ClassifierConfig, ControllerConfig, GDROController, RolloutConfig
from gdro_lab.controllers import GDRO_STRATEGIES, ControllerStrategy
from gdro_lab.learner import Learner
from gdro_lab.run import STRATEGIES, SimConfig, build_population, make_strategy, run_one, write_run
from gdro_lab.strategies import KnapsackAllocation

SMALL = {"num_prompts": 2000, "batch_size": 48, "eval_every": 10, "eval_size": 500}


@pytest.mark.parametrize("name", STRATEGIES)
def test_budget_accounting_every_step(name: str) -> None:
    cfg = SimConfig(strategies=(name,), steps=40, **SMALL)
    pop = build_population(cfg, 0)
    learner = Learner(cfg.learner, pop)
    strategy = make_strategy(name, cfg, 0)
    rng = np.random.default_rng(5)
    trained = 0
    for _ in range(cfg.steps):
        prop = strategy.propose()
        assert prop.ids.dtype == np.int64 and np.unique(prop.ids).size == cfg.batch_size
        assert np.all((prop.ids >= 0) & (prop.ids < cfg.num_prompts))
        assert int(prop.rollouts.sum()) == cfg.batch_size * cfg.rollout.mean  # equal compute
        assert np.all((prop.rollouts >= 2) & (prop.rollouts <= 12))
        assert np.all((prop.weights > 0) & (prop.weights <= 15.0))
        gen = learner.generate(rng, prop.ids, prop.rollouts)
        batch = strategy.observe(prop, gen)
        learner.train(*batch, mean=cfg.rollout.mean)
        trained += batch.ids.size
    # only dynamic sampling holds groups back (at most one batch in its buffer)
    if name == "dapo":
        assert trained <= cfg.steps * cfg.batch_size
    else:
        assert trained == cfg.steps * cfg.batch_size


@pytest.mark.parametrize("name", STRATEGIES)
def test_deterministic_per_seed(name: str) -> None:
    cfg = SimConfig(strategies=(name,), steps=25, **SMALL)
    a, b = run_one(cfg, name, 7), run_one(cfg, name, 7)
    assert a.rows == b.rows
    np.testing.assert_array_equal(a.eval_mean, b.eval_mean)
    assert run_one(cfg, name, 8).rows != a.rows


def test_report_reads_the_run_dirs(tmp_path: Path) -> None:
    cfg = SimConfig(strategies=("gdro-both", "knapsack"), steps=20, **SMALL)
    for name in cfg.strategies:
        write_run(tmp_path / "sim", cfg, run_one(cfg, name, 0))
    run = load_run(tmp_path / "sim" / "runs" / "gdro-both-s0")
    assert run.num_bins == 10 and len(run.rows) == 20
    steps, q = run.matrix("prompt/q/") or (None, None)
    assert q is not None and q.shape == (20, 10)
    out = write_report([tmp_path / "sim"], tmp_path / "report")  # the folder expands to its runs
    text = (out / "report.md").read_text()
    assert "gdro-both-s0" in text and "knapsack-s0" in text
    assert list(out.glob("*.png"))


def test_pass_at_k_bins_fit_the_knapsacks_fewest_rollouts() -> None:
    # the knapsack gives a prompt rollout.min..max rollouts whatever the mode: k above min would
    # fail mid-run, so it is refused up front (SimConfig and the strategy itself)
    pass_k = {"classifier": {"outcome": "pass@k", "k": 4}}
    with pytest.raises(ValueError, match=r"^SimConfig\.controller\.classifier\.k must be <= "
                                         r"rollout\.min \(2\): the knapsack .*; got 4$"):
        SimConfig(strategies=("knapsack",), controller=pass_k)
    with pytest.raises(ValueError, match=r"^classifier\.k must be <= rollout\.min \(2\)"):
        KnapsackAllocation(num_prompts=10, batch_size=4, seed=0,
                           classifier=ClassifierConfig(outcome="pass@k", k=4))
    SimConfig(strategies=("uniform", "rollout-neyman"), controller=pass_k | {"rollout": {"min": 4}})
    cfg = SimConfig(strategies=("knapsack",), num_prompts=32, batch_size=16, steps=40,
                    eval_every=10, eval_size=32,
                    controller={"classifier": {"outcome": "pass@k", "k": 2}})
    assert len(run_one(cfg, "knapsack", 0).rows) == 40  # the whole run, k at min


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="strategy must be one of uniform"):
        SimConfig(strategies=("nope",))
    with pytest.raises(ValueError, match=r"strategies must not repeat; got \['uniform', 'uniform'\]"):
        SimConfig(strategies=("uniform", "uniform"))
    with pytest.raises(ValueError, match=r"RolloutConfig.min, RolloutConfig.mean and "
                       r"RolloutConfig.max must be ordered as min <= mean <= max; got \(2, 13, 12\)"):
        SimConfig(controller={"rollout": {"mean": 13}})
    with pytest.raises(ValueError, match=r"SimConfig.controller.prompt.signal must be a "
                       r"reward-derived signal .*; got 'loss'"):
        SimConfig(controller={"prompt": {"signal": "loss"}})
    # with the adversary off too: it still scores bins (its metrics), and the lab has no losses
    with pytest.raises(ValueError, match=r"SimConfig.controller.prompt.signal must be a "
                       r"reward-derived signal .*; got 'loss'"):
        SimConfig(strategies=("rollout-neyman",), controller={"prompt": {"signal": "loss"}})
    with pytest.raises(ValueError, match=r"SimConfig.controller.rollout.arm_signal must be a "
                       r"reward-derived signal .*; got 'loss'"):
        SimConfig(strategies=("rollout-bandit",), controller={"rollout": {"arm_signal": "loss"}})
    with pytest.raises(ValueError, match=r"SimConfig.controller.prompt must be a mapping of "
                       r"PromptConfig settings \(unknown key 'etaa'"):
        SimConfig(controller={"prompt": {"etaa": 0.1}})
    with pytest.raises(ValueError, match="SimConfig.controller must be a mapping with keys among"):
        SimConfig(controller={"rollouts": {"mean": 6}})
    for bad, name in [({"seed": 3}, "seed"), ({"recipe": "reward"}, "recipe"),
                      ({"prompt": {"mode": "resample"}}, "prompt.mode"),
                      ({"rollout": {"mode": "bandit"}}, "rollout.mode")]:
        with pytest.raises(ValueError, match=rf"SimConfig.controller.{name} must be left to the "
                           "strategies"):
            SimConfig(controller=bad)
    with pytest.raises(TypeError, match="SimConfig.controller must be a mapping"):
        SimConfig(controller=[("rollout", {"mean": 6})])  # type: ignore[arg-type]


def test_old_mean_rollouts_keyword_is_an_alias_for_one_release() -> None:
    with pytest.warns(FutureWarning, match=r"SimConfig\(mean_rollouts=\) is deprecated"):
        cfg = SimConfig(mean_rollouts=6)
    assert cfg == SimConfig(controller={"rollout": {"mean": 6}}) and cfg.rollout.mean == 6
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="SimConfig.mean_rollouts"):
        SimConfig(mean_rollouts=6, controller={"rollout": {"mean": 4}})


def _drive(ctl: GDROController, steps: int, seed: int) -> list[tuple[np.ndarray, ...]]:
    """Sample, plan and update ``steps`` times with rewards from a fixed stream; the plans."""
    rng, plans = np.random.default_rng(seed), []
    for _ in range(steps):
        plan = ctl.plan(ctl.sample(24))
        plans.append(plan.arrays())
        ctl.update(plan, (rng.random(int(plan.rollouts.sum())) < 0.3).astype(np.float64))
    return plans


OVERRIDES = [{}, {"classifier": {"num_bins": 5}, "prompt": {"eta": 0.3, "score_rule": "cumulative"},
                  "rollout": {"mean": 6, "min": 3, "max": 9, "dual_step": 1e-3}}]


@pytest.mark.parametrize("overrides", OVERRIDES)
@pytest.mark.parametrize("name", list(GDRO_STRATEGIES))
def test_each_strategy_is_its_mapping_through_from_config(name: str, overrides: dict) -> None:
    # the lab's controller is GDROController.from_config(ControllerConfig.from_mapping(m), n) for
    # m = the strategy's mapping with the overrides on top, section by section
    cfg = SimConfig(strategies=(name,), num_prompts=300, batch_size=24, controller=overrides)
    strategy = make_strategy(name, cfg, seed=7)
    assert isinstance(strategy, ControllerStrategy)
    mapping = {**GDRO_STRATEGIES[name], "seed": 7}
    for section, settings in overrides.items():
        mapping[section] = {**mapping.get(section, {}), **settings}
    expected = GDROController.from_config(ControllerConfig.from_mapping(mapping), 300)
    assert strategy.controller.config == expected.config
    for a, b in zip(_drive(strategy.controller, 12, 1), _drive(expected, 12, 1), strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    assert strategy.controller.metrics() == expected.metrics()


def test_the_strategies_name_a_core_recipe_and_differ_only_where_they_say() -> None:
    cfg = SimConfig(strategies=tuple(GDRO_STRATEGIES))
    configs = {name: cfg.controller_config(name) for name in GDRO_STRATEGIES}
    assert {m["recipe"] for m in GDRO_STRATEGIES.values()} <= {"paper", "reward"}
    for c in configs.values():
        assert c is not None and c.prompt.signal == "failure"  # the lab passes no losses
        assert (c.classifier, c.rollout.mean, c.rollout.min, c.rollout.max) == (
            cfg.classifier, cfg.rollout.mean, cfg.rollout.min, cfg.rollout.max)
    # the sized bandit is the reward recipe's, the paper variant keeps the paper's knobs
    assert configs["rollout-bandit"].rollout == RolloutConfig.variance_bandit()
    assert configs["rollout-bandit-paper"].rollout == RolloutConfig(mode="bandit",
                                                                    arm_signal="variance")
    modes = {n: (c.prompt.mode, c.rollout.mode) for n, c in configs.items() if c is not None}
    assert modes == {"uniform": ("off", "fixed"), "prompt-reweight": ("reweight", "fixed"),
                     "prompt-resample": ("resample", "fixed"), "rollout-bandit": ("off", "bandit"),
                     "rollout-bandit-paper": ("off", "bandit"), "rollout-neyman": ("off", "neyman"),
                     "gdro-both": ("reweight", "neyman")}
