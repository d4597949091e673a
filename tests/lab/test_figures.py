"""``gdro simulate``'s figures: which are drawn, and smoothed curves aligned with their steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gdro_cli import figures
from gdro_cli.runs import smooth
from gdro_lab.run import RunResult, SimConfig, run_one
from gdro_lab.summary import matrix, series

CFG = SimConfig(
    strategies=("prompt-resample", "rollout-bandit", "gdro-both", "knapsack", "dapo"),
    num_prompts=400,
    batch_size=24,
    steps=40,
    eval_every=10,
    eval_size=400,
)


@pytest.fixture(scope="module")
def runs() -> list[RunResult]:
    return [run_one(CFG, s, seed) for s in CFG.strategies for seed in (0, 1)]


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[list[tuple[np.ndarray, np.ndarray]]]]:
    """The lines of each figure written, per axes: ``{file name: [[(x, y), ...], ...]}``."""
    out: dict[str, list[list[tuple[np.ndarray, np.ndarray]]]] = {}
    real = figures.savefig

    def savefig(fig, path: Path) -> Path:
        out[Path(path).name] = [
            [
                (np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float))
                for ln in ax.get_lines()
            ]
            for ax in fig.axes
        ]
        return real(fig, path)

    monkeypatch.setattr(figures, "savefig", savefig)
    return out


def test_the_figures_that_apply_are_written(runs: list[RunResult], tmp_path: Path, drawn) -> None:
    names = figures.simulation_figures(CFG, runs, tmp_path)
    assert names == [
        "learning_curves.png",
        "curriculum_prompt-resample.png",
        "curriculum_rollout-bandit.png",
        "curriculum_gdro-both.png",
        "curriculum_knapsack.png",
        "budget.png",
        "wse.png",
        "regret.png",
        "lead_lag.png",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    for name in names:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(drawn) == sorted(names)


def test_smoothed_curves_keep_their_steps(runs: list[RunResult], tmp_path: Path, drawn) -> None:
    figures.simulation_figures(CFG, runs, tmp_path)
    steps = np.arange(CFG.steps, dtype=float)
    first = {r.strategy: r for r in reversed(runs)}  # each strategy's first seed
    bandit = first["rollout-bandit"].rows
    price_axes, proposal_axes = drawn["budget.png"][:2]
    # mu*: the 10-step trailing mean of the first varying strategy's batches, step for step
    (x, y) = price_axes[1]
    np.testing.assert_array_equal(x, steps)
    np.testing.assert_allclose(y, smooth(series(bandit, "sim/mu_star"), 10))
    (x, y) = proposal_axes[0]
    np.testing.assert_array_equal(x, steps)
    np.testing.assert_allclose(y, smooth(series(bandit, "rollout/mean_proposed"), 10))
    # the first step of a smoothed curve is that step's own value, not a mean of later ones
    assert y[0] == series(bandit, "rollout/mean_proposed")[0]
    # lead-lag: the adversary's and the data's mean bin, both at their own steps
    rows = first["gdro-both"].rows
    bins = np.arange(CFG.classifier.num_bins)
    q_bin = smooth(matrix(rows, "prompt/q/", 10) @ bins, 10)
    data_bin = smooth(np.nan_to_num(matrix(rows, "classifier/share/", 10)) @ bins, 10)
    lines = drawn["lead_lag.png"][0]  # per adversary strategy in order: weights q, batch share
    assert len(lines) == 4
    for (x, y), expected in zip(lines[2:], (q_bin, data_bin)):
        np.testing.assert_array_equal(x, steps)
        np.testing.assert_allclose(y, expected)
    for x, y in drawn["wse.png"][0][:-1]:  # the last line is the reference at 1
        assert x.size == y.size == CFG.steps


def test_a_step_without_a_value_leaves_a_gap_not_a_dip(tmp_path: Path, drawn) -> None:
    # a batch whose every bin is solved or failed has no spread: its WSE ratio is 0/0, which
    # the curve skips (the step stays blank), instead of averaging a 0 into its neighbours
    rows = [{"step": t, "sim/wse": 0.9, "sim/wse_uniform": 1.0} for t in range(30)]
    rows[12] = {"step": 12, "sim/wse": 0.0, "sim/wse_uniform": 0.0}
    run = RunResult(
        "knapsack", 0, rows, np.array([0]), np.array([0.5]), np.array([[0.5]]), np.array([1]), 0.7
    )
    figures.wse([run], ["knapsack"], tmp_path / "wse.png")
    ((x, y), _) = drawn["wse.png"][0]
    np.testing.assert_array_equal(x, np.arange(30))
    assert np.isnan(y[12]) and np.allclose(np.delete(y, 12), 0.9)
