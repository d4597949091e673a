"""The figures of ``gdro simulate`` and the PNG writer every figure of the command line goes through.

Learning curves, curriculum heatmaps, the shadow price and budget, the weighted standard error,
the Prompt-GDRO regret and the lead-lag of the adversary against the data, drawn from the
simulator's runs (:class:`gdro_lab.run.RunResult`). Smoothed curves use
:func:`gdro_cli.runs.smooth`, the one moving average of ``gdro report`` and ``gdro simulate``: a
trailing mean that keeps each curve's length, so it is drawn against the steps its values belong
to. :func:`savefig` writes a PNG atomically (``gdro report`` uses it too). matplotlib (the
``cli`` extra) is imported when a figure is drawn, not when this module is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from gdro_cli.runs import smooth
from gdro_core.files import atomic_write
from gdro_lab.run import RunResult, SimConfig
from gdro_lab.summary import matrix, series
from gdro_lab.summary import regret as regret_stats

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "budget",
    "curriculum_heatmaps",
    "lead_lag",
    "learning_curves",
    "regret",
    "savefig",
    "simulation_figures",
    "wse",
]


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def savefig(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG (110 dpi, tight bounding box) atomically, then close it.

    Args:
        fig: the figure.
        path: the PNG to write; its folder is created.

    Returns:
        ``path``.

    Examples:
        >>> import tempfile
        >>> plt = _pyplot()
        >>> fig, ax = plt.subplots()
        >>> _ = ax.plot([0, 1], [1, 0])
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = savefig(fig, Path(d) / "sub" / "line.png")
        ...     print(path.name, path.read_bytes()[:4], plt.fignum_exists(fig.number))
        line.png b'\\x89PNG' False
    """
    path = Path(path)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110, bbox_inches="tight"))
    _pyplot().close(fig)
    return path


def _first(results: Sequence[RunResult], name: str) -> RunResult | None:
    """The first run (the first seed) of strategy ``name``."""
    return next((r for r in results if r.strategy == name), None)


def _steps(run: RunResult) -> NDArray[np.float64]:
    """The steps of a run's metric rows, the x of every curve over steps."""
    return series(run.rows, "step")


def learning_curves(results: Sequence[RunResult], strategies: Sequence[str], path: Path) -> Path:
    """Mean and worst-bin success over steps, mean over seeds with a min-max band.

    Args:
        results: the runs (every seed of every strategy).
        strategies: the strategies to draw, in legend order.
        path: the PNG to write.

    Returns:
        ``path``.

    Examples:
        >>> import tempfile
        >>> from gdro_lab.run import run_one
        >>> cfg = SimConfig(strategies=("uniform", "knapsack"), num_prompts=200, batch_size=16,
        ...                 steps=20, eval_every=5, eval_size=200)
        >>> runs = [run_one(cfg, s, 0) for s in cfg.strategies]
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = learning_curves(runs, cfg.strategies, Path(d) / "learning_curves.png")
        ...     print(path.name, path.read_bytes()[:4], sorted(p.name for p in Path(d).iterdir()))
        learning_curves.png b'\\x89PNG' ['learning_curves.png']
    """
    fig, axes = _pyplot().subplots(1, 2, figsize=(11, 4))
    for name in strategies:
        runs = [r for r in results if r.strategy == name]
        if not runs:
            continue
        steps = runs[0].eval_steps
        for ax, vals in (
            (axes[0], [r.eval_mean for r in runs]),
            (axes[1], [np.nanmin(r.eval_strata, axis=1) for r in runs]),
        ):
            v = np.vstack(vals)
            (line,) = ax.plot(steps, v.mean(axis=0), label=name)
            ax.fill_between(steps, v.min(axis=0), v.max(axis=0), alpha=0.15, color=line.get_color())
    axes[0].set(title="mean success", xlabel="step", ylabel="success probability")
    axes[1].set(title="worst-bin success", xlabel="step")
    axes[0].legend(fontsize=8)
    return savefig(fig, path)


def curriculum_heatmaps(result: RunResult, num_bins: int, path: Path) -> Path:
    """Steps x bins heatmaps of batch share, adversary weight and rollouts per prompt.

    Args:
        result: one run.
        num_bins: bins of its metrics.
        path: the PNG to write.

    Returns:
        ``path``.

    Examples:
        >>> import tempfile
        >>> from gdro_lab.run import run_one
        >>> cfg = SimConfig(strategies=("gdro-both",), num_prompts=200, batch_size=16,
        ...                 steps=20, eval_every=5, eval_size=200)
        >>> runs = [run_one(cfg, s, 0) for s in cfg.strategies]
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = curriculum_heatmaps(runs[0], 10, Path(d) / "curriculum_gdro-both.png")
        ...     print(path.name, path.stat().st_size > 0)
        curriculum_gdro-both.png True
    """
    from matplotlib.colors import PowerNorm

    panels = [
        (
            "batch share (sqrt colour scale)",
            matrix(result.rows, "classifier/share/", num_bins, 0.0),
            PowerNorm(0.5),
        ),
        ("adversary weight q", matrix(result.rows, "prompt/q/", num_bins), None),
        (
            "rollouts per prompt (blank: bin absent)",
            matrix(result.rows, "rollout/n_mean/", num_bins),
            None,
        ),
    ]
    fig, axes = _pyplot().subplots(1, 3, figsize=(15, 3.8))
    for ax, (title, m, norm) in zip(axes, panels, strict=True):
        im = ax.imshow(
            m.T,
            aspect="auto",
            origin="lower",
            interpolation="nearest",
            extent=(0, m.shape[0], -0.5, num_bins - 0.5),
            cmap="viridis",
            norm=norm,
        )
        ax.set(title=f"{result.strategy}: {title}", xlabel="step", ylabel="bin")
        fig.colorbar(im, ax=ax)
    return savefig(fig, path)


def budget(
    results: Sequence[RunResult], strategies: Sequence[str], target: float, path: Path
) -> Path:
    """Shadow price (log scale) beside the square-root law's KKT price mu* on the first strategy's
    batches (dotted, 10-step mean), and the unconstrained proposal m_t (10-step mean) against the
    target, over steps (first seed).

    Args:
        results: the runs.
        strategies: strategies whose rollouts vary (they log a price and a proposal).
        target: the mean budget, drawn as a dashed line.
        path: the PNG to write.

    Returns:
        ``path``.

    Examples:
        >>> import tempfile
        >>> from gdro_lab.run import run_one
        >>> cfg = SimConfig(strategies=("rollout-bandit", "rollout-neyman"), num_prompts=200,
        ...                 batch_size=16, steps=20, eval_every=5, eval_size=200)
        >>> runs = [run_one(cfg, s, 0) for s in cfg.strategies]
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = budget(runs, cfg.strategies, cfg.rollout.mean, Path(d) / "budget.png")
        ...     print(path.name, path.stat().st_size > 0)
        budget.png True
    """
    fig, axes = _pyplot().subplots(1, 2, figsize=(11, 4))
    for name in strategies:
        run = _first(results, name)
        if run is None:
            continue
        steps = _steps(run)
        price = series(run.rows, "rollout/shadow_price")
        prop = series(run.rows, "rollout/mean_proposed")
        axes[0].plot(steps, np.where(price > 0, price, np.nan), label=name)
        if name == strategies[0]:
            axes[0].plot(
                steps,
                smooth(series(run.rows, "sim/mu_star"), 10),
                ls=":",
                color="k",
                lw=1.8,
                zorder=5,
                label=f"mu* (square-root law, true variances, {name}'s batches)",
            )
        axes[1].plot(steps, smooth(prop, 10), label=name)
    axes[1].axhline(target, color="k", lw=1, ls="--", label="target")
    axes[0].set_yscale("log")
    axes[0].set(title="shadow price mu_t (log scale)", xlabel="step")
    axes[1].set(title="unconstrained mean rollouts m_t (10-step mean)", xlabel="step")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=8)
    return savefig(fig, path)


def wse(results: Sequence[RunResult], strategies: Sequence[str], path: Path) -> Path:
    """WSE of each strategy relative to uniform rollouts on the same batches (first seed, 20-step
    mean).

    Args:
        results: the runs.
        strategies: the strategies to draw.
        path: the PNG to write.

    Returns:
        ``path``.

    Examples:
        >>> import tempfile
        >>> from gdro_lab.run import run_one
        >>> cfg = SimConfig(strategies=("rollout-neyman", "knapsack"), num_prompts=200,
        ...                 batch_size=16, steps=20, eval_every=5, eval_size=200)
        >>> runs = [run_one(cfg, s, 0) for s in cfg.strategies]
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = wse(runs, cfg.strategies, Path(d) / "wse.png")
        ...     print(path.name, path.stat().st_size > 0)
        wse.png True
    """
    fig, ax = _pyplot().subplots(figsize=(7, 4))
    for name in strategies:
        run = _first(results, name)
        if run is None:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):  # no spread in a batch: no ratio
            ratio = series(run.rows, "sim/wse") / series(run.rows, "sim/wse_uniform")
        ax.plot(_steps(run), smooth(ratio, 20), label=name)
    ax.axhline(1.0, color="k", lw=1, ls="--")
    ax.set(title="WSE / WSE(uniform n) (20-step mean)", xlabel="step")
    ax.legend(fontsize=8)
    return savefig(fig, path)


def regret(
    curves: dict[str, NDArray[np.float64]],
    bounds: dict[str, float],
    path: Path,
    *,
    applies: bool = True,
) -> Path:
    """Prompt-GDRO regret over steps, and the Hedge bound at the horizon (dashed).

    Args:
        curves: strategy name to its regret after each step.
        bounds: strategy name to its bound (or reference value) at the horizon.
        path: the PNG to write.
        applies: whether the bound holds (the cumulative rule); otherwise the legend calls it a
            reference.

    Returns:
        ``path``.

    Examples:
        >>> import tempfile
        >>> from gdro_lab import theory
        >>> gains = np.random.default_rng(0).random((50, 4))
        >>> eta = theory.tuned_eta(4, 50)
        >>> curve = theory.regret_curve(theory.hedge_probs(gains, eta, 0.0), gains)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = regret({"hedge": curve}, {"hedge": theory.hedge_bound(4, 50, eta, 0.0)},
        ...                   Path(d) / "regret.png")
        ...     print(path.name, path.stat().st_size > 0)
        regret.png True
    """
    fig, ax = _pyplot().subplots(figsize=(7, 4))
    kind = "bound" if applies else "reference (EMA rule: no bound)"
    for name, curve in curves.items():
        (line,) = ax.plot(curve, label=f"{name} regret")
        ax.axhline(
            bounds[name],
            color=line.get_color(),
            ls="--",
            lw=1,
            label=f"{name} {kind} {bounds[name]:.1f}",
        )
    ax.set(title="regret against the best fixed bin", xlabel="step")
    ax.legend(fontsize=8)
    return savefig(fig, path)


def lead_lag(
    results: Sequence[RunResult], strategies: Sequence[str], num_bins: int, path: Path
) -> Path:
    """Mean bin of the adversary's weights against the batch's over steps (first seed, 10-step
    mean).

    Args:
        results: the runs.
        strategies: strategies that log adversary weights ``prompt/q/{b}``.
        num_bins: bins of their metrics.
        path: the PNG to write.

    Returns:
        ``path``.

    Examples:
        >>> import tempfile
        >>> from gdro_lab.run import run_one
        >>> cfg = SimConfig(strategies=("prompt-reweight",), num_prompts=200, batch_size=16,
        ...                 steps=20, eval_every=5, eval_size=200)
        >>> runs = [run_one(cfg, s, 0) for s in cfg.strategies]
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = lead_lag(runs, cfg.strategies, 10, Path(d) / "lead_lag.png")
        ...     print(path.name, path.stat().st_size > 0)
        lead_lag.png True
    """
    fig, ax = _pyplot().subplots(figsize=(8, 4))
    bins = np.arange(num_bins)
    for name in strategies:
        run = _first(results, name)
        if run is None:
            continue
        steps = _steps(run)
        q = matrix(run.rows, "prompt/q/", num_bins)
        share = np.nan_to_num(matrix(run.rows, "classifier/share/", num_bins))
        (line,) = ax.plot(steps, smooth(q @ bins, 10), label=f"{name}: weights q")
        ax.plot(
            steps,
            smooth(share @ bins, 10),
            ls="--",
            color=line.get_color(),
            label=f"{name}: batch share",
        )
    ax.set(
        title="mean bin of adversary weights vs data (10-step mean)",
        xlabel="step",
        ylabel="mean bin",
    )
    ax.legend(fontsize=8)
    return savefig(fig, path)


def simulation_figures(cfg: SimConfig, results: Sequence[RunResult], out: Path) -> list[str]:
    """Write every figure that applies to a simulation's runs into ``out``.

    The learning curves always; a curriculum heatmap per controller strategy and ``knapsack``;
    the budget figure when some strategy's rollouts vary; the WSE figure for those and
    ``knapsack``; the regret and lead-lag figures when some strategy's adversary is on. The
    figures of one run draw its first seed.

    Args:
        cfg: the simulation configuration.
        results: every run.
        out: the folder to write the PNGs into.

    Returns:
        The file names written, in the order of the list above.

    Examples:
        >>> import tempfile
        >>> from gdro_lab.run import run_one
        >>> cfg = SimConfig(strategies=("prompt-reweight", "knapsack"), num_prompts=200,
        ...                 batch_size=16, steps=20, eval_every=5, eval_size=200)
        >>> runs = [run_one(cfg, s, 0) for s in cfg.strategies]
        >>> with tempfile.TemporaryDirectory() as d:
        ...     simulation_figures(cfg, runs, Path(d))
        ['learning_curves.png', 'curriculum_prompt-reweight.png', 'curriculum_knapsack.png', \
'wse.png', 'regret.png', 'lead_lag.png']
    """
    b = cfg.classifier.num_bins
    first = {s: next(r for r in results if r.strategy == s) for s in cfg.strategies}
    ctl = {s: r.controller for s, r in first.items()}  # None for the alternatives
    varying = [s for s, c in ctl.items() if c is not None and c.rollout.mode != "fixed"]
    adversary = [s for s, c in ctl.items() if c is not None and c.prompt.mode != "off"]
    names = [learning_curves(results, cfg.strategies, out / "learning_curves.png")]
    for s in cfg.strategies:
        if ctl[s] is not None or s == "knapsack":
            names.append(curriculum_heatmaps(first[s], b, out / f"curriculum_{s}.png"))
    if varying:
        names.append(budget(results, varying, cfg.rollout.mean, out / "budget.png"))
    with_knapsack = [s for s in cfg.strategies if s == "knapsack" or s in varying]
    if with_knapsack:
        names.append(wse(results, with_knapsack, out / "wse.png"))
    curves, bounds, rules = {}, {}, set()
    for s, c in ctl.items():
        if s not in adversary or c is None:
            continue
        reg = regret_stats(first[s], b, c.prompt.eta, c.prompt.gamma, c.prompt.score_rule)
        if reg is not None:
            curves[s], bounds[s] = reg["curve"], reg["bound"]
            rules.add(reg["bound_applies"])
    if curves:
        names.append(regret(curves, bounds, out / "regret.png", applies=rules == {True}))
    if adversary:
        names.append(lead_lag(results, adversary, b, out / "lead_lag.png"))
    return [p.name for p in names]
