"""``gdro report``: plots and a Markdown summary of run directories (``gdro train`` or ``simulate``).

For each run: step-by-bin heatmaps of the batch share, the adversary's weights q, the mean
reward and, when they vary, the rollouts per prompt and the share of the rollout budget per bin;
the mean bin of the data against the adversary's, their lead-lag gap and the entropy of q (with
the shadow price when the run has one). Across runs: learning curves overlaid (training reward,
solved rate, held-out pass@8 and mean@n), the mechanism metrics overlaid (did the controllers do
anything: budget moved, q away from uniform, weight spread, groups without gradient, prompts
stuck solved or failed, visits per prompt), and, when a GRPO baseline is among the runs, the
rollouts and generated tokens each run needed to reach the baseline's final held-out mean@n
(:func:`gdro_cli.runs.rollouts_to_target`). Missing keys are fine: a panel without data is left out.

Usage::

    gdro report runs/a runs/b --out runs/compare
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from gdro_cli.figures import savefig
from gdro_cli.runs import (
    MECHANISM_KEYS,
    Run,
    is_baseline,
    load_runs,
    modes,
    rollouts_to_target,
    smooth,
)
from gdro_core._validation import check_int
from gdro_core.files import atomic_write_text

__all__ = ["add_arguments", "run", "write_report"]


def _fixed_rollouts(run: Run) -> float | None:
    """The rollouts per prompt when every logged value is the same (fixed rollouts), else None."""
    m = run.matrix("rollout/n_mean/")
    if m is None:
        return None
    values = m[1][np.isfinite(m[1])]
    return float(values[0]) if values.size and np.all(values == values[0]) else None


def _heatmaps(run: Run, path: Path) -> bool:
    import matplotlib.pyplot as plt

    fixed = _fixed_rollouts(run)
    prefixes = [
        ("batch share per bin", "classifier/share/"),
        ("adversary weight q per bin", "prompt/q/"),
        ("mean reward per bin", "train/reward/"),
    ]
    if fixed is None:  # with fixed rollouts these panels are flat (or repeat the batch share)
        prefixes += [
            ("rollouts per prompt per bin", "rollout/n_mean/"),
            ("share of the rollout budget per bin", "rollout/budget_share/"),
        ]
    panels = [
        (title, m)
        for title, prefix in prefixes
        if (m := run.matrix(prefix)) is not None and np.isfinite(m[1]).any()
    ]
    if not panels:
        return False
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(9, 2.4 * len(panels)), squeeze=False, layout="constrained"
    )
    for ax, (title, (steps, mat)) in zip(axes[:, 0], panels, strict=True):
        masked = np.ma.masked_invalid(mat.T)
        extent = (steps[0] - 0.5, steps[-1] + 0.5, -0.5, mat.shape[1] - 0.5)
        im = ax.imshow(
            masked,
            aspect="auto",
            origin="lower",
            extent=extent,
            cmap="viridis",
            interpolation="nearest",
        )
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("bin (0 = hardest)")
        fig.colorbar(im, ax=ax, pad=0.01)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(run.name + ("" if fixed is None else f" (rollouts fixed at {fixed:g} per prompt)"))
    savefig(fig, path)
    return True


def _dynamics(run: Run, path: Path) -> bool:
    import matplotlib.pyplot as plt

    B = run.num_bins
    data_bin = run.series("classifier/mean_bin")
    q = run.matrix("prompt/q/")
    adv_bin = (q[0], np.nansum(q[1] * np.arange(B), axis=1)) if q is not None else None
    lead = run.series("prompt/lead_lag")
    if not lead[0].size and adv_bin is not None and data_bin[0].size:
        common = dict(zip(*data_bin, strict=True))
        pts = [(s, a - common[s]) for s, a in zip(*adv_bin, strict=True) if s in common]
        lead = (np.array([p[0] for p in pts]), np.array([p[1] for p in pts])) if pts else lead
    panels = []
    if data_bin[0].size or adv_bin is not None:
        panels.append(
            (
                "mean bin",
                [("data  sum_b b q-hat(b)", data_bin), ("adversary  sum_b b q(b)", adv_bin)],
            )
        )
    if lead[0].size:
        panels.append(("lead-lag gap (adversary - data)", [("gap", lead)]))
    if run.series("prompt/entropy")[0].size:
        panels.append(("entropy of q (nats)", [("H(q)", run.series("prompt/entropy"))]))
    price = run.series("rollout/shadow_price")
    if price[0].size and np.any(price[1] != 0):
        panels.append(("shadow price mu", [("mu", price)]))
    unc = run.series("rollout/mean_proposed")
    target = run.series("rollout/mean")
    flat = target[0].size == unc[0].size and np.array_equal(unc[1], target[1])
    if unc[0].size and not flat:  # with fixed rollouts both lines are the same constant
        panels.append(
            (
                "mean rollouts proposed before the budget repair",
                [("unconstrained", unc), ("target", target)],
            )
        )
    if not panels:
        return False
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(9, 2.2 * len(panels)), squeeze=False, layout="constrained"
    )
    for ax, (title, lines) in zip(axes[:, 0], panels, strict=True):
        for label, s in lines:
            if s is not None and s[0].size:
                ax.plot(s[0], s[1], label=label, lw=1.2)
        if title.startswith("lead"):
            ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_title(title, fontsize=10)
        if len(lines) > 1:
            ax.legend(fontsize=8)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(run.name)
    savefig(fig, path)
    return True


def _curves(runs: list[Run], path: Path, window: int) -> bool:
    import matplotlib.pyplot as plt

    keys = [
        ("train/reward_mean", "training reward (smoothed)", True),
        ("train/solved", "prompts with a correct rollout (smoothed)", True),
        ("eval/pass@8", "held-out pass@8", False),
        ("eval/mean@", "held-out mean@n (n samples per prompt)", False),
    ]

    def series(r: Run, key: str) -> tuple[np.ndarray, np.ndarray]:
        return r.series(r.mean_key if key == "eval/mean@" else key)

    keys = [k for k in keys if any(series(r, k[0])[0].size for r in runs)]
    if not keys:
        return False
    fig, axes = plt.subplots(
        len(keys), 1, figsize=(9, 2.4 * len(keys)), squeeze=False, layout="constrained"
    )
    for ax, (key, title, smoothed) in zip(axes[:, 0], keys, strict=True):
        for r in runs:
            steps, values = series(r, key)
            if steps.size:
                ax.plot(
                    steps,
                    smooth(values, window) if smoothed else values,
                    marker=None if smoothed else "o",
                    ms=3,
                    lw=1.2,
                    label=r.name,
                )
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    axes[-1, 0].set_xlabel("step")
    savefig(fig, path)
    return True


def _mechanism(runs: list[Run], path: Path, window: int) -> bool:
    """One panel per mechanism metric over steps, the runs overlaid."""
    import matplotlib.pyplot as plt

    keys = [k for k in MECHANISM_KEYS if any(r.series(k)[0].size for r in runs)]
    if not keys:
        return False
    cols = 2
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(
        rows, cols, figsize=(11, 2.3 * rows), squeeze=False, layout="constrained"
    )
    for ax, key in zip(axes.ravel(), keys, strict=False):
        for r in runs:
            steps, values = r.series(key)
            if steps.size:
                ax.plot(steps, smooth(values, window), lw=1.1, label=r.name)
        ax.set_title(f"{MECHANISM_KEYS[key]} ({key.split('/', 1)[1]})", fontsize=9)
    for ax in axes.ravel()[len(keys) :]:
        ax.set_visible(False)
    axes[0, 0].legend(fontsize=7)
    for ax in axes[-1, :]:
        ax.set_xlabel("step")
    fig.suptitle("Mechanism: did the controllers do anything? (smoothed)", fontsize=10)
    savefig(fig, path)
    return True


def _baseline_targets(
    runs: list[Run],
) -> list[tuple[Run, Run, float, tuple[float, float, float] | None]]:
    """Each run paired with the GRPO baseline of its seed, warm-up seed and task (when exactly
    one is among the runs): ``(run, baseline, target, rollouts_to_target)``."""

    def pairing(r: Run) -> tuple[Any, ...]:
        return tuple(r.config.get(k) for k in ("seed", "sft_seed", "task", "model"))

    baselines: dict[tuple[Any, ...], list[Run]] = {}
    for r in runs:
        if is_baseline(r.config):
            baselines.setdefault(pairing(r), []).append(r)
    out = []
    for r in runs:
        match = baselines.get(pairing(r), [])
        if len(match) != 1:
            continue
        base = match[0]
        finals = base.series(base.mean_key)[1]
        if not finals.size:
            continue
        target = float(finals[-1])
        out.append((r, base, target, rollouts_to_target(r.rows, target, base.mean_key)))
    return out


def _target_plot(
    targets: list[tuple[Run, Run, float, tuple[float, float, float] | None]], path: Path
) -> bool:
    """Held-out mean@n against the rollouts spent, each baseline's final score dashed."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6), layout="constrained")
    drawn: set[str] = set()
    for r, base, target, hit in targets:
        key = base.mean_key
        spent = np.cumsum([float(x.get("train/rollouts", 0.0) or 0.0) for x in r.rows])
        pts = [(spent[i], x[key]) for i, x in enumerate(r.rows) if isinstance(x.get(key), float)]
        if not pts:
            continue
        (line,) = ax.plot(*zip(*pts, strict=True), marker="o", ms=3, lw=1.2, label=r.name)
        if hit is not None:
            ax.plot([hit[1]], [target], marker="x", ms=8, color=line.get_color())
        if base.name not in drawn:
            drawn.add(base.name)
            ax.axhline(target, color="grey", lw=0.8, ls="--")
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xlabel("rollouts generated")
    ax.set_ylabel(f"held-out {targets[0][1].mean_key.removeprefix('eval/')}")
    ax.set_title("Rollouts to reach the GRPO baseline's final score (dashed; x: first reached)")
    ax.legend(fontsize=7)
    savefig(fig, path)
    return True


def _fmt(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.3f}"


def _summary_rows(run: Run) -> list[str]:
    train_rows = [r for r in run.rows if "train/reward_mean" in r]
    tail = train_rows[-max(1, len(train_rows) // 10) :] if train_rows else []
    reward = float(np.mean([r["train/reward_mean"] for r in tail])) if tail else None
    p8 = run.series("eval/pass@8")[1]
    m8 = run.series(run.mean_key)[1]
    n = run.mean_key.rsplit("@", 1)[1]
    p, r = modes(run.config)
    mode = str(run.config.get("strategy")) if "strategy" in run.config else f"{p}/{r}"
    last = run.rows[-1] if run.rows else {}
    return [
        run.name,
        str(run.config.get("kind", "-")),
        mode,
        str(max((int(r.get("step", 0)) for r in run.rows), default=0)),
        _fmt(reward),
        f"{_fmt(p8[0] if p8.size else None)} → {_fmt(p8[-1] if p8.size else None)}",
        f"{_fmt(m8[0] if m8.size else None)} → {_fmt(m8[-1] if m8.size else None)}"
        + (f" (n={n})" if m8.size else ""),
        _fmt(last.get("classifier/mean_bin")),
        _fmt(last.get("prompt/entropy")),
    ]


def write_report(
    run_dirs: list[str | os.PathLike[str]],
    out: str | os.PathLike[str] | None = None,
    *,
    smooth: int = 0,
) -> Path:
    """Write the PNGs and ``report.md`` for ``run_dirs`` into ``out``.

    Args:
        run_dirs: Run directories (a folder holding runs, such as a simulation's, is expanded).
        out: Output directory (default: the first run's ``report/``).
        smooth: Window of the smoothed curves (:func:`gdro_cli.runs.smooth`, a trailing mean
            over the last ``smooth`` logged values; 0 = about 1/20 of the steps).

    Returns:
        The output directory.

    Raises:
        ValueError: If ``run_dirs`` is empty, a path is not a run directory, or ``smooth`` is
            negative.
        ModuleNotFoundError: If matplotlib is not installed (checked first).

    Examples:
        A run that logged only its training reward and held-out pass@8 gets the learning curves
        (its per-bin panels have no data) and a row of the summary table:

        >>> import json, tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> run_dir = Path(tmp.name) / "grpo-s0"
        >>> run_dir.mkdir()
        >>> _ = (run_dir / "config.json").write_text('{"kind": "train", "prompt": "off"}')
        >>> rows = [{"step": s, "train/reward_mean": 0.1 * s} for s in range(1, 11)]
        >>> rows += [{"step": 0, "eval/pass@8": 0.25}, {"step": 10, "eval/pass@8": 0.5}]
        >>> _ = (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
        >>> out = write_report([run_dir])
        >>> out == run_dir / "report", sorted(p.name for p in out.iterdir())
        (True, ['learning_curves.png', 'report.md'])
        >>> print((out / "report.md").read_text().splitlines()[4])
        | grpo-s0 | train | off/- | 10 | 1.000 | 0.250 → 0.500 | - → - | - | - |
        >>> tmp.cleanup()
    """
    importlib.import_module("matplotlib")  # the 'cli' extra, named before anything is read
    check_int("smooth", smooth, lo=0)
    runs = load_runs(run_dirs)
    out_dir = Path(out) if out is not None else runs[0].path / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    longest = max((len(r.rows) for r in runs), default=0)
    window = smooth or max(1, longest // 20)

    images: list[tuple[str, str]] = []
    if _curves(runs, out_dir / "learning_curves.png", window):
        images.append(("Learning curves", "learning_curves.png"))
    if _mechanism(runs, out_dir / "mechanism.png", window):
        images.append(("Mechanism metrics", "mechanism.png"))
    targets = _baseline_targets(runs)
    if targets and _target_plot(targets, out_dir / "rollouts_to_target.png"):
        images.append(("Rollouts to the GRPO baseline's final score", "rollouts_to_target.png"))
    for r in runs:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", r.name)
        if _heatmaps(r, out_dir / f"{stem}-bins.png"):
            images.append((f"{r.name}: per-bin heatmaps", f"{stem}-bins.png"))
        if _dynamics(r, out_dir / f"{stem}-dynamics.png"):
            images.append((f"{r.name}: mean bin, lead-lag, entropy", f"{stem}-dynamics.png"))

    header = [
        "run",
        "kind",
        "prompt/rollout",
        "steps",
        "reward (last 10%)",
        "pass@8 first → last",
        "mean@n first → last",
        "mean bin",
        "entropy",
    ]
    lines = ["# gdro report", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_summary_rows(r)) + " |" for r in runs]
    lines += ["", "Runs: " + ", ".join(f"`{r.path}`" for r in runs), ""]
    if targets:
        name = targets[0][1].mean_key.removeprefix("eval/")
        lines += [
            f"## Rollouts to reach the GRPO baseline's final held-out {name}",
            "",
            "Each run against the GRPO run of its seed and warm-up: the first evaluation at or "
            "above the baseline's final score, interpolated linearly from the evaluation before "
            "it.",
            "",
            "| run | baseline | target | step | rollouts | generated tokens |",
            "|---|---|---|---|---|---|",
        ]
        for r, base, target, hit in targets:
            cells = (
                ["not reached", "-", "-"]
                if hit is None
                else [
                    f"{hit[0]:.1f}",
                    f"{hit[1]:,.0f}",
                    "-" if math.isnan(hit[2]) else f"{hit[2]:,.0f}",
                ]
            )
            lines.append(f"| {r.name} | {base.name} | {target:.3f} | " + " | ".join(cells) + " |")
        lines.append("")
    for title, file in images:
        lines += [f"## {title}", "", f"![{title}]({file})", ""]
    text = "\n".join(lines)
    atomic_write_text(out_dir / "report.md", text)
    return out_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the flags of ``gdro report``.

    Examples:
        >>> parser = argparse.ArgumentParser(prog="gdro report")
        >>> add_arguments(parser)
        >>> parser.parse_args(["runs/a", "runs/b", "--smooth", "5"])
        Namespace(run_dirs=[PosixPath('runs/a'), PosixPath('runs/b')], out=None, smooth=5)
    """
    parser.add_argument(
        "run_dirs",
        nargs="+",
        type=Path,
        metavar="RUN_DIR",
        help="run directories (gdro train or gdro simulate)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output directory (default: the first run's report/)"
    )
    parser.add_argument(
        "--smooth",
        type=int,
        default=0,
        help="window of the smoothed curves, a trailing mean (0 = about 1/20 of the steps)",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``gdro report``.

    Args:
        args: The flags registered by :func:`add_arguments`.

    Returns:
        0; the output directory and the number of PNGs in it are printed.

    Examples:
        >>> import tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> run_dir = Path(tmp.name) / "run"
        >>> run_dir.mkdir()
        >>> _ = (run_dir / "config.json").write_text("{}")
        >>> _ = (run_dir / "metrics.jsonl").write_text('{"step": 1, "train/reward_mean": 0.5}\\n')
        >>> parser = argparse.ArgumentParser()
        >>> add_arguments(parser)
        >>> run(parser.parse_args([str(run_dir), "--out", f"{tmp.name}/out"]))  # doctest: +ELLIPSIS
        wrote .../out/report.md and 1 PNGs
        0
        >>> tmp.cleanup()
    """
    out = write_report(args.run_dirs, args.out, smooth=args.smooth)
    print(f"wrote {out / 'report.md'} and {len(list(out.glob('*.png')))} PNGs")
    return 0
