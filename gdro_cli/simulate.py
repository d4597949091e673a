"""``gdro simulate``: run strategies on the simulated GRPO learner and write a results folder.

Examples::

    gdro simulate --preset demo --out runs/demo-sim
    gdro simulate --scenario rare-hard-tail --strategies uniform,prompt-reweight,knapsack \\
        --seeds 5 --steps 1000 --out runs/rare
    gdro report runs/demo-sim --out runs/demo-sim/report

The folder holds ``results.json`` (every number), ``results.md`` (the tables), ``*.png`` (plots)
and ``runs/<strategy>-s<seed>/`` run directories (``config.json`` + ``metrics.jsonl``) that
``gdro report`` reads like training runs. The simulation itself is :mod:`gdro_lab`
(:func:`gdro_lab.run.run_one`, :func:`gdro_lab.summary.summarise`); this module is the command
around it: flags, progress bar, curriculum tables, the results folder and its figures
(:mod:`gdro_cli.figures`). A preset gives every setting; explicit flags override it.
Rerunning into the same folder replaces the run directories the previous run listed in its
``results.json``; a non-empty folder without one is refused.

The controller flags are named after the ``gdro_core.ControllerConfig`` field they set
(:data:`CONTROLLER_FLAGS`: ``--rollout.mean``, ``--prompt.eta``, ...; ``--eta``, ``--dual-step``
and the other short spellings set the same fields) and go on top of every GDRO strategy's mapping
(:data:`gdro_lab.controllers.GDRO_STRATEGIES`). ``--mean-rollouts``, the previous release's
spelling of ``--rollout.mean``, still works, with a warning, until the next release.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import shutil
import sys
import time
import typing
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gdro_cli import flags as _flags
from gdro_lab.controllers import GDRO_STRATEGIES, strategy_config
from gdro_lab.learner import LearnerConfig
from gdro_lab.run import STRATEGIES, RunResult, SimConfig, build_population, run_one, write_run
from gdro_lab.scenarios import SCENARIOS
from gdro_lab.summary import summarise, write_results

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

__all__ = [
    "CONTROLLER_FLAGS",
    "DEFAULTS",
    "PRESETS",
    "add_arguments",
    "build_config",
    "run",
    "settings",
    "simulate",
]

#: ``SimConfig`` and ``LearnerConfig`` fields that are flags (``--num-prompts``), typed and
#: documented from the classes like ``gdro train``'s.
_SIM_FLAGS = ("steps", "num_prompts", "batch_size", "eval_every", "eval_size", "target")
_LEARNER_FLAGS = ("lr_shared", "lr_own", "aggregation")
#: The settings a run without a preset uses: ``SimConfig``'s defaults, but every strategy and
#: three seeds (``--seeds`` counts them).
_FIELD_DEFAULTS = {f.name: f.default for c in (SimConfig, LearnerConfig) for f in fields(c)}
DEFAULTS: dict[str, Any] = {
    "scenario": _FIELD_DEFAULTS["scenario"],
    "strategies": ",".join(STRATEGIES),
    "seeds": 3,
    **{name: _FIELD_DEFAULTS[name] for name in _SIM_FLAGS if name != "target"},
    "print_every": 0,
}
#: Named sets of settings, each laid over :data:`DEFAULTS` (flags override both).
PRESETS: dict[str, dict[str, Any]] = {
    "demo": {"print_every": 200},
    "smoke": {"seeds": 2, "steps": 30, "num_prompts": 3000, "batch_size": 32, "eval_size": 2000},
    "full": {"seeds": 5},
}
#: The controller flags (``--SECTION.FIELD``, generated from the core's fields like ``gdro train``'s)
#: and their short spellings: each sets that ``ControllerConfig`` field in ``SimConfig.controller``,
#: on top of every strategy's mapping.
CONTROLLER_FLAGS: dict[str, str | None] = {
    "classifier.num_bins": "--num-bins", "classifier.outcome": None, "prompt.signal": "--signal",
    "prompt.score_rule": "--score-rule", "prompt.eta": "--eta", "rollout.mean": None,
    "rollout.min": None, "rollout.max": None, "rollout.dual_step": "--dual-step",
    "rollout.selection": "--selection",
}  # fmt: skip


def _strategy_values() -> dict[str, str]:
    """``SECTION.FIELD`` -> the value(s) the GDRO strategies run, for ``--help`` (each strategy's
    config built once)."""
    configs = [strategy_config(s).to_dict() for s in GDRO_STRATEGIES]
    out = {}
    for path in CONTROLLER_FLAGS:
        section, name = path.split(".")
        values = sorted({str(c[section][name]) for c in configs})
        out[path] = " or ".join(values) + (", by strategy" if len(values) > 1 else "")
    return out


class _Renamed(argparse.Action):
    """A flag of the previous release, kept until the next: warns, then sets its new field."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        new = "--" + self.dest
        print(
            f"gdro simulate: {option} is deprecated (gone next release): use {new}", file=sys.stderr
        )
        setattr(namespace, self.dest, values)


def add_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> None:
    """Register the ``gdro simulate`` flags.

    Args:
        parser: the parser (or subparser) to add them to.
        argv: the command line, so that ``--help`` shows the named preset's values.

    Examples:
        >>> parser = argparse.ArgumentParser(prog="gdro simulate")
        >>> add_arguments(parser)
        >>> args = parser.parse_args(["--preset", "smoke", "--strategies", "uniform", "knapsack",
        ...                           "--steps", "5", "--rollout.mean", "6", "--eta", "0.3",
        ...                           "--out", "runs/sim"])
        >>> args.preset, args.strategies, args.steps, args.seeds, args.no_plots
        ('smoke', ['uniform', 'knapsack'], 5, None, False)
        >>> getattr(args, "rollout.mean"), getattr(args, "prompt.eta")
        (6, 0.3)
    """
    a = parser.add_argument
    preset = _flags.named_preset(argv, PRESETS)
    shown = {**DEFAULTS, **PRESETS.get(preset or "", {})}
    a("--preset", choices=sorted(PRESETS), help="a named set of settings (flags override it)")
    a("--scenario", choices=sorted(SCENARIOS), help=f"the simulated world [{shown['scenario']}]")
    a(
        "--strategies",
        nargs="+",
        metavar="NAME",
        help=f"strategies, space- or comma-separated, from: {', '.join(STRATEGIES)} (default all)",
    )
    a("--seeds", type=int, help=f"number of seeds, run as 0..SEEDS-1 [{shown['seeds']}]")
    groups = ((SimConfig, _SIM_FLAGS, ""), (LearnerConfig, _LEARNER_FLAGS, "learner: "))
    for cls, names, of in groups:
        hints, docs = typing.get_type_hints(cls), _flags.field_help(cls)
        for name in names:
            parse, choices = _flags.parser_for(hints[name], nullable=False)
            value = shown.get(name, _FIELD_DEFAULTS[name])
            value_shown = "" if value is None else f" [{value}]"  # None: the help says what runs
            a(
                "--" + name.replace("_", "-"),
                type=parse,
                choices=choices,
                help=f"{of}{docs[name]}{value_shown}",
            )
    spec, strategy_values = {f.name: f for f in _flags.flags()}, _strategy_values()
    for path, short in CONTROLLER_FLAGS.items():
        f = spec[path]
        kw = {"choices": f.choices} if f.choices else {"type": f.parse, "metavar": f.field.upper()}
        a(
            f.option,
            *([short] if short else []),
            dest=path,
            help=f"{f.summary} [{strategy_values[path]}]",
            **kw,
        )
    a("--mean-rollouts", dest="rollout.mean", type=int, action=_Renamed, help="old --rollout.mean")
    a(
        "--print-every",
        type=int,
        help=f"print a curriculum table every N steps (0 = never) [{shown['print_every']}]",
    )
    a("--out", required=True, help="output folder")
    a("--no-plots", action="store_true", help="skip the PNG plots")
    a("--no-progress", action="store_true", help="no progress bar")


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """Merge defaults, the preset and explicit flags (in that order of precedence, last wins).

    Args:
        args: the parsed flags (a flag left at None keeps the preset's or default value).

    Returns:
        Every setting by name (:data:`DEFAULTS`'s keys plus any optional ones given), with
        ``controller``: the controller flags given, as ``SimConfig.controller`` overrides.

    Examples:
        >>> parser = argparse.ArgumentParser()
        >>> add_arguments(parser)
        >>> s = settings(parser.parse_args(["--preset", "smoke", "--steps", "5", "--out", "x",
        ...                                 "--num-bins", "5", "--rollout.mean", "6"]))
        >>> s["steps"], s["seeds"], s["eval_every"]  # flag, preset, default
        (5, 2, 10)
        >>> s["controller"]
        {'classifier': {'num_bins': 5}, 'rollout': {'mean': 6}}
    """
    merged = dict(DEFAULTS)
    if getattr(args, "preset", None):
        merged.update(PRESETS[args.preset])
    for key in (*DEFAULTS, "target", *_LEARNER_FLAGS):
        value = getattr(args, key, None)
        if value is not None:
            merged[key] = value
    controller: dict[str, dict[str, Any]] = {}
    for path in CONTROLLER_FLAGS:
        value = getattr(args, path, None)
        if value is not None:
            section, name = path.split(".")
            controller.setdefault(section, {})[name] = value
    merged["controller"] = controller
    return merged


def build_config(s: dict[str, Any]) -> SimConfig:
    """The :class:`SimConfig` for merged settings (``ValueError`` names a bad one).

    Args:
        s: the output of :func:`settings`; ``strategies`` may be comma-separated.

    Returns:
        The configuration, with seeds ``0 .. seeds - 1``.

    Raises:
        ValueError: a setting out of range.

    Examples:
        >>> s = {**DEFAULTS, "strategies": ["uniform,knapsack"], "seeds": 2, "num_prompts": 500}
        >>> cfg = build_config(s)
        >>> cfg.strategies, cfg.seeds, cfg.num_prompts, cfg.classifier.num_bins
        (('uniform', 'knapsack'), (0, 1), 500, 10)
        >>> build_config({**s, "seeds": 0})
        Traceback (most recent call last):
            ...
        ValueError: --seeds must be an integer >= 1; got 0
    """
    if s["seeds"] < 1:
        raise ValueError(f"--seeds must be an integer >= 1; got {s['seeds']}")
    learner_kw = {k: s[k] for k in _LEARNER_FLAGS if k in s}
    raw = s["strategies"]
    joined = ",".join(raw) if isinstance(raw, (list, tuple)) else str(raw)
    strategies = tuple(x.strip() for x in joined.split(",") if x.strip())
    return SimConfig(
        scenario=s["scenario"],
        strategies=strategies,
        seeds=tuple(range(s["seeds"])),
        num_prompts=s["num_prompts"],
        batch_size=s["batch_size"],
        steps=s["steps"],
        eval_every=s["eval_every"],
        eval_size=s["eval_size"],
        target=s.get("target"),
        learner=LearnerConfig(**learner_kw),
        controller=s.get("controller", {}),
    )


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out must be a folder; got the file {str(out)!r}")
    if out.is_dir() and any(out.iterdir()) and not (out / "results.json").exists():
        raise ValueError(
            f"--out must be a new or empty folder, or one gdro simulate wrote "
            f"(with results.json); got {str(out)!r}"
        )


def _remove_previous_runs(out: Path) -> None:
    """Delete the run directories a previous ``gdro simulate`` listed in ``out/results.json``.

    Only folders named there and lying directly under ``out/runs`` are removed, so ``gdro report
    out`` never mixes in runs from an earlier configuration.
    """
    path = out / "results.json"
    if not path.is_file():
        return
    try:
        listed = json.loads(path.read_text(encoding="utf-8")).get("runs", [])
    except (json.JSONDecodeError, AttributeError):
        raise ValueError(f"--out holds an unreadable results.json; got {str(out)!r}") from None
    runs_dir = (out / "runs").resolve()
    for rel in listed:
        run = (out / str(rel)).resolve()
        if run.parent == runs_dir and run.is_dir():
            shutil.rmtree(run)


def run(args: argparse.Namespace) -> int:
    """Run the simulation and write the results folder; returns the exit code.

    Args:
        args: flags parsed by a parser set up with :func:`add_arguments`.

    Returns:
        0.

    Raises:
        ValueError: a bad setting, or an ``--out`` that is a file or a non-empty folder
            ``gdro simulate`` did not write.
        ModuleNotFoundError: rich (or, unless ``--no-plots``, matplotlib) is not installed; raised
            before ``--out`` is touched.

    Examples:
        >>> import contextlib, io, tempfile
        >>> parser = argparse.ArgumentParser()
        >>> add_arguments(parser)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     args = parser.parse_args(["--strategies", "uniform,knapsack", "--seeds", "1",
        ...                               "--steps", "10", "--num-prompts", "200",
        ...                               "--batch-size", "16", "--eval-size", "200",
        ...                               "--no-plots", "--no-progress", "--out", f"{d}/sim"])
        ...     printed = io.StringIO()
        ...     with contextlib.redirect_stdout(printed):
        ...         code = run(args)
        ...     print(code, sorted(p.name for p in Path(d, "sim").iterdir()))
        ...     print(printed.getvalue().splitlines()[-1].replace(d, "DIR"))
        0 ['results.json', 'results.md', 'runs']
        plot the runs with: gdro report DIR/sim --out DIR/sim/report
    """
    for package in ("rich",) if args.no_plots else ("rich", "matplotlib"):
        importlib.import_module(package)  # the 'cli' extra, named before --out is touched
    s = settings(args)
    cfg = build_config(s)
    if s["print_every"] < 0:
        raise ValueError(f"--print-every must be an integer >= 0; got {s['print_every']}")
    out = Path(args.out)
    _check_out(out)
    _remove_previous_runs(out)
    t0 = time.perf_counter()
    simulate(
        cfg,
        out,
        print_every=int(s["print_every"]),
        progress=not args.no_progress,
        write_plots=not args.no_plots,
    )
    elapsed = time.perf_counter() - t0
    print(
        f"wrote {out}/results.md, results.json{'' if args.no_plots else ', *.png'} and "
        f"{len(cfg.strategies) * len(cfg.seeds)}"
        f" run directories under {out}/runs in {elapsed:.1f} s"
    )
    print(f"plot the runs with: gdro report {out} --out {out}/report")
    return 0


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
    from rich.table import Table

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
        write_plots: write the PNG figures (:func:`gdro_cli.figures.simulation_figures`).
        console: where to print (default: a new rich console).

    Returns:
        The ``results.json`` content.

    Examples:
        Two strategies on 200 prompts for 20 steps, printing ``prompt-reweight``'s curriculum
        every 10 steps into a string:

        >>> import io, tempfile
        >>> from rich.console import Console
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
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from gdro_cli.figures import simulation_figures  # matplotlib only when drawing

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
        summary["plots"] = simulation_figures(cfg, results, out)
    write_results(out, summary)
    console.print(_outcome_table(summary))
    return summary


def _outcome_table(summary: dict[str, Any]) -> Table:
    from rich.table import Table

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
