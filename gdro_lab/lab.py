"""Drive a whole simulation: every strategy and seed, progress, curriculum tables, outputs."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gdro_core import ControllerConfig
from gdro_lab import plots
from gdro_lab._io import write_json, write_text
from gdro_lab.controllers import GDRO_STRATEGIES
from gdro_lab.run import RunResult, SimConfig, build_population, run_one, write_run
from gdro_lab.summary import regret, summarise, to_markdown

__all__ = ["simulate"]


def watched_strategy(cfg: SimConfig) -> str | None:
    """The strategy whose curriculum is printed: ``gdro-both`` if run, else the first GDRO one
    that is not uniform, else the first strategy."""
    if "gdro-both" in cfg.strategies:
        return "gdro-both"
    return next(
        (s for s in cfg.strategies if s in GDRO_STRATEGIES and s != "uniform"), cfg.strategies[0]
    )


def curriculum_table(name: str, step: int, row: dict[str, float], num_bins: int) -> Table:
    """A compact per-bin table: batch share, adversary weight, rollouts and reward."""
    table = Table(
        title=f"{name} step {step + 1}: mean bin {row['classifier/mean_bin']:.2f}, "
        f"reward {row['train/reward_mean']:.3f}, "
        f"price {row.get('rollout/shadow_price', 0.0):.3f}",
        title_justify="left",
        pad_edge=False,
        padding=(0, 1),
    )
    table.add_column("bin", justify="left")
    for b in range(num_bins):
        table.add_column(str(b), justify="right")
    fields = [
        ("share", "classifier/share/", "{:.2f}"),
        ("q", "prompt/q/", "{:.2f}"),
        ("rollouts", "rollout/n_mean/", "{:.1f}"),
        ("reward", "train/reward/", "{:.2f}"),
    ]
    for label, prefix, fmt in fields:
        vals = [row.get(f"{prefix}{b}") for b in range(num_bins)]
        table.add_row(label, *("-" if v is None else fmt.format(v) for v in vals))
    return table


def simulate(
    cfg: SimConfig,
    out: Path,
    *,
    print_every: int = 0,
    progress: bool = True,
    write_plots: bool = True,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run every strategy and seed of ``cfg`` and write the results folder ``out``.

    Args:
        cfg: the simulation.
        out: the output folder (created).
        print_every: print the watched strategy's curriculum table every this many steps
            (first seed; 0 = never).
        progress: show a progress bar.
        write_plots: write the PNG plots.
        console: where to print (default: a new rich console).

    Returns:
        The ``results.json`` content.

    Examples:
        Two strategies on 200 prompts for 20 steps, printing ``prompt-reweight``'s curriculum
        every 10 steps into a string:

        >>> import io, tempfile
        >>> cfg = SimConfig(strategies=("uniform", "prompt-reweight"), num_prompts=200,
        ...                 batch_size=16, steps=20, eval_every=5, eval_size=200)
        >>> log = io.StringIO()
        >>> with tempfile.TemporaryDirectory() as d:
        ...     results = simulate(cfg, Path(d), print_every=10, progress=False,
        ...                        write_plots=False, console=Console(file=log, width=100))
        ...     print(sorted(p.name for p in Path(d).iterdir()))
        ['results.json', 'results.md', 'runs']
        >>> results["runs"], results["controllers"]["prompt-reweight"]["prompt"]["eta"]
        (['runs/prompt-reweight-s0', 'runs/uniform-s0'], 0.65)
        >>> o = results["outcomes"]["prompt-reweight"]  # (mean, CI half-width) over seeds
        >>> round(o["final_mean"][0], 3), round(o["auc"][0], 3), o["reached_target"], o["seeds"]
        (0.686, 0.681, 0, 1)
        >>> for line in log.getvalue().splitlines():
        ...     if line.startswith(("prompt-reweight step", "outcomes")):
        ...         print(line.strip())
        prompt-reweight step 1: mean bin 0.00, reward 0.531, price 0.000
        prompt-reweight step 10: mean bin 0.00, reward 0.859, price 0.000
        prompt-reweight step 20: mean bin 5.56, reward 0.594, price 0.000
        outcomes (mean ± 95% CI over seeds)
    """
    console = console or Console(width=None if sys.stdout.isatty() else 110)
    out = Path(out)
    watch = watched_strategy(cfg)
    results: list[RunResult] = []
    total = len(cfg.seeds) * len(cfg.strategies) * cfg.steps
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not progress,
        transient=False,
    )
    with bar:
        task = bar.add_task("simulating", total=total)
        for seed in cfg.seeds:
            pop = build_population(cfg, seed)
            for name in cfg.strategies:
                bar.update(task, description=f"{cfg.scenario} {name} seed {seed}")
                show = print_every > 0 and name == watch and seed == cfg.seeds[0]

                def on_step(
                    t: int, row: dict[str, float], name: str = name, show: bool = show
                ) -> None:
                    bar.advance(task)
                    if show and ((t + 1) % print_every == 0 or t == 0):
                        console.print(curriculum_table(name, t, row, cfg.classifier.num_bins))

                result = run_one(cfg, name, seed, population=pop, on_step=on_step)
                write_run(out, cfg, result)
                results.append(result)
    summary = summarise(cfg, results)
    summary["runs"] = sorted(f"runs/{r.strategy}-s{r.seed}" for r in results)
    if write_plots:
        summary["plots"] = _write_plots(cfg, results, out)
    write_json(out / "results.json", summary)
    write_text(out / "results.md", to_markdown(summary) + _plot_links(summary.get("plots", [])))
    console.print(_outcome_table(summary))
    return summary


def _write_plots(cfg: SimConfig, results: list[RunResult], out: Path) -> list[str]:
    b = cfg.classifier.num_bins
    first = {s: next(r for r in results if r.strategy == s) for s in cfg.strategies}
    ctl = {s: r.controller for s, r in first.items()}  # None for the alternatives
    varying = [s for s, c in ctl.items() if c is not None and c.rollout.mode != "fixed"]
    adversary = [s for s, c in ctl.items() if c is not None and c.prompt.mode != "off"]
    names = [plots.learning_curves(results, cfg.strategies, out / "learning_curves.png")]
    for s in cfg.strategies:
        if ctl[s] is not None or s == "knapsack":
            names.append(plots.curriculum_heatmaps(first[s], b, out / f"curriculum_{s}.png"))
    if varying:
        names.append(plots.budget(results, varying, cfg.rollout.mean, out / "budget.png"))
    with_knapsack = [s for s in cfg.strategies if s == "knapsack" or s in varying]
    if with_knapsack:
        names.append(plots.wse(results, with_knapsack, out / "wse.png"))
    curves, bounds, rules = {}, {}, set()
    for s, c in ctl.items():
        reg = None if s not in adversary or c is None else regret(first[s], b, *_hedge(c))
        if reg is not None:
            curves[s], bounds[s] = reg["curve"], reg["bound"]
            rules.add(reg["bound_applies"])
    if curves:
        names.append(plots.regret(curves, bounds, out / "regret.png", applies=rules == {True}))
    if adversary:
        names.append(plots.lead_lag(results, adversary, b, out / "lead_lag.png"))
    return [p.name for p in names]


def _hedge(config: ControllerConfig) -> tuple[float, float, str]:
    """The Prompt-GDRO eta, gamma and score rule a controller was built with."""
    return config.prompt.eta, config.prompt.gamma, config.prompt.score_rule


def _plot_links(names: list[str]) -> str:
    if not names:
        return ""
    return "\n## Plots\n\n" + "".join(f"![{n}]({n})\n\n" for n in names)


def _outcome_table(summary: dict[str, Any]) -> Table:
    table = Table(title="outcomes (mean ± 95% CI over seeds)", title_justify="left")
    for col in ("strategy", "final mean", "worst bin", "AUC", "steps to target", "WSE red."):
        table.add_column(col, justify="left" if col == "strategy" else "right", no_wrap=True)

    def f(ci: tuple[float, float], d: int = 3) -> str:
        m, h = ci
        if m is None or not math.isfinite(m):
            return "n/a"
        return f"{m:.{d}f}" if h is None or not math.isfinite(h) else f"{m:.{d}f}±{h:.{d}f}"

    for name, o in summary["outcomes"].items():
        red = summary["wse"][name]["reduction"]
        table.add_row(
            name,
            f(o["final_mean"]),
            f(o["final_worst_bin"]),
            f(o["auc"]),
            f"{f(o['steps_to_target'], 0)} ({o['reached_target']}/{o['seeds']})",
            "n/a" if not np.isfinite(red[0]) else f"{100 * red[0]:.1f}%",
        )
    return table
