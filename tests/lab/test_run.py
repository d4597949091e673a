"""The runner: every strategy's budget accounting, determinism per seed, report compatibility."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gdro_cli.report import load_run, write_report
from gdro_lab.controllers import ControllerKnobs
from gdro_lab.learner import Learner
from gdro_lab.run import STRATEGIES, SimConfig, build_population, make_strategy, run_one, write_run

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
        assert int(prop.rollouts.sum()) == cfg.batch_size * cfg.mean_rollouts  # equal compute
        assert np.all((prop.rollouts >= 2) & (prop.rollouts <= 12))
        assert np.all((prop.weights > 0) & (prop.weights <= 15.0))
        gen = learner.generate(rng, prop.ids, prop.rollouts)
        batch = strategy.observe(prop, gen)
        learner.train(*batch, mean_rollouts=cfg.mean_rollouts)
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


def test_importing_the_lab_imports_neither_torch_nor_matplotlib() -> None:
    code = ("import sys, gdro_lab, gdro_lab.run, gdro_lab.strategies, gdro_lab.theory; "
            "bad = [m for m in ('torch', 'matplotlib') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="strategy must be one of uniform"):
        SimConfig(strategies=("nope",))
    with pytest.raises(ValueError, match=r"strategies must not repeat; got \['uniform', 'uniform'\]"):
        SimConfig(strategies=("uniform", "uniform"))
    with pytest.raises(ValueError, match=r"mean_rollouts must be an integer in \[2, 12\]; got 13"):
        SimConfig(mean_rollouts=13)
    with pytest.raises(ValueError, match=r"ControllerKnobs.signal must be one of \['failure', "
                       r"'variance'\]; got 'loss'"):
        ControllerKnobs(signal="loss")
