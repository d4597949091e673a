"""The experiment: GRPO against Prompt-GDRO, Rollout-GDRO, both and a peer strategy, at equal rollouts.

One command runs a grid: it warms the policy up with SFT (one warm-up shared by every run, or,
in the ``long`` grid, one per replicate), trains each arm in each replicate for the same number
of steps and exactly the same rollouts (checked: the command fails otherwise), evaluates on
held-out prompts per difficulty level, and writes ``results.json``, ``results.md`` and plots into
``--out``. Replicate r trains with ``seed=r`` (and, with its own warm-up, ``sft_seed=r``); every
arm of a replicate starts from that replicate's warm-up, and differences to GRPO are paired
within a replicate, with 95% t-intervals over replicates. The summary shows, per arm, the
held-out accuracy, the mechanism metrics (did the controllers do anything), and the rollouts and
generated tokens each arm needed to first reach GRPO's final held-out mean@n.

    python benchmarks/experiment.py --grid tiny --out /tmp/exp          # seconds (the tests use it)
    python benchmarks/experiment.py --grid cpu --out runs/experiment-cpu  # about 55 min on one core
    python benchmarks/experiment.py --grid cpu --task chain_sum:min_terms=2,max_terms=3,min_digits=1,max_digits=3,size=400,eval_size=500

The long-horizon grid (pre-registered in docs/results.md): 1,000 training prompts of 1-5 digit
addition revisited about 32 times each (1,000 steps x 32 prompts x 8 rollouts, rollouts in
[2, 16]), the default preset's optimisation (lr 1e-4 with a cosine decay, no KL, variance
signal), 500 held-out prompts x 16 samples every 100 steps, 5 replicates with their own
warm-ups, arms grpo, prompt-reweight, rollout-neyman, both and variance-sampling. Its CPU cost
at one thread: 0.92-1.03 s of CPU time per step (measured over 39 steps of each arm from
replicate 0's warm-up) and 9-11 s per evaluation, so about 18 minutes per run and 7.6 hours for
the 25 runs, plus about 9-12 minutes per warm-up (replicate 0's stopped at its target after
2,857 steps) unless cached: about 8.4 core-hours in all, about 4.2 hours of wall time with two
replicate groups side by side on two idle cores. The run directories take about 30 MB each. As a
Makefile line::

    OMP_NUM_THREADS=1 $(BIN)/python benchmarks/experiment.py --grid long --out runs/experiment-long

or, on two cores, two processes on disjoint replicates and a last call for the summary (which
finds every run finished and only summarises)::

    OMP_NUM_THREADS=1 python benchmarks/experiment.py --grid long --out runs/experiment-long --replicates 0 1 2 &
    OMP_NUM_THREADS=1 python benchmarks/experiment.py --grid long --out runs/experiment-long --replicates 3 4; wait
    python benchmarks/experiment.py --grid long --out runs/experiment-long

Repeating a command with the same ``--out`` skips finished runs and resumes an interrupted one
from its latest checkpoint (``gdro train --resume``), so a stopped grid continues where it
stopped; a run directory with no checkpoint yet starts again.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gdro_cli.runs import MECHANISM_KEYS, mean_key, read_jsonl, rollouts_to_target, smooth
from gdro_core import stats
from gdro_core.files import atomic_write_text


def _modes(prompt: str, rollout: str) -> dict[str, Any]:
    return {"prompt": {"mode": prompt}, "rollout": {"mode": rollout}}


# each arm: the TrainConfig changes it makes (its controller modes, merged into the grid's)
ARMS: dict[str, dict[str, Any]] = {
    "grpo": {"controller": _modes("off", "fixed")},
    "prompt-reweight": {"controller": _modes("reweight", "fixed")},
    "prompt-resample": {"controller": _modes("resample", "fixed")},
    "rollout-bandit": {"controller": _modes("off", "bandit")},
    "rollout-neyman": {"controller": _modes("off", "neyman")},
    "both": {"controller": _modes("reweight", "neyman")},
    # a peer strategy: variance-weighted prompt sampling (the lab's VarianceSampling), n fixed
    "variance-sampling": {"controller": _modes("off", "fixed"), "sampler": "variance"},
}
BASELINE = "grpo"
SHORT_ARMS = [
    "grpo",
    "prompt-reweight",
    "prompt-resample",
    "rollout-bandit",
    "rollout-neyman",
    "both",
]
LONG_ARMS = ["grpo", "prompt-reweight", "rollout-neyman", "both", "variance-sampling"]

# the default preset's optimisation: 32 prompts x 8 rollouts (in [2, 16]), lr 1e-4 with a cosine
# decay, no KL, variance signal, 500 held-out prompts x 16 samples, the warm-up to SFT loss 0.25
_DEFAULT_RL = dict(
    batch_size=32,
    controller={"recipe": "reward", "rollout": {"mean": 8, "min": 2, "max": 16}},
    lr=1e-4,
    lr_schedule="cosine",
    kl_coef=0.0,
    eval_samples=16,
    sft_target_loss=0.25,
)

GRIDS: dict[str, dict[str, Any]] = {
    # the tests' grid: the 0.1M model, 2 steps, one shared warm-up
    "tiny": {
        "train": dict(
            model="tiny-llama-0.1m",
            task="addition:min_digits=1,max_digits=3,size=300,eval_size=16",
            steps=2,
            batch_size=4,
            eval_every=0,
            checkpoint_every=0,
            eval_samples=8,
        ),
        "sft_steps": 20,
        "seeds": 2,
        "warmups": "shared",
        "arms": SHORT_ARMS,
    },
    # the long grid's machinery at the tests' size: a warm-up per replicate, the long arms,
    # evaluations and checkpoints along the way
    "tiny-long": {
        "train": dict(
            model="tiny-llama-0.1m",
            task="addition:min_digits=1,max_digits=3,size=300,eval_size=16",
            steps=4,
            batch_size=4,
            controller={"rollout": {"mean": 4, "max": 8}},
            eval_every=2,
            checkpoint_every=2,
            eval_samples=8,
            lr=1e-3,
        ),
        "sft_steps": 20,
        "seeds": 2,
        "warmups": "per-replicate",
        "arms": LONG_ARMS,
    },
    # the CPU grid of docs/results.md: the default preset (1M model, its cached warm-up to SFT
    # loss 0.25 on 1-5 digit addition), 100 steps, 5 seeds sharing that warm-up, 6 arms: about
    # 35 minutes on 2 idle cores once the warm-up is cached. The controllers are near-inactive
    # here (each prompt is seen 3-4 times).
    "cpu": {
        "train": dict(
            model="tiny-llama-1m",
            task="addition:min_digits=1,max_digits=5,eval_size=500",
            steps=100,
            eval_every=50,
            checkpoint_every=0,
            **_DEFAULT_RL,
        ),
        "sft_steps": 4000,
        "seeds": 5,
        "warmups": "shared",
        "arms": SHORT_ARMS,
    },
    # the long-horizon grid (pre-registered): 1,000 prompts x 1,000 steps x 32 prompts, each
    # prompt revisited about 32 times; 5 replicates, each with its own warm-up; evaluation every
    # 10% of the run; checkpoints every 100 steps so an interrupted run resumes
    "long": {
        "train": dict(
            model="tiny-llama-1m",
            # 1,000 training prompts (the default size), spelled as the default preset spells
            # it: replicate 0 shares the cached warm-up of `make demo` and the cpu grid
            task="addition:min_digits=1,max_digits=5,eval_size=500",
            steps=1000,
            eval_every=100,
            checkpoint_every=100,
            **_DEFAULT_RL,
        ),
        "sft_steps": 4000,
        "seeds": 5,
        "warmups": "per-replicate",
        "arms": LONG_ARMS,
    },
}


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% confidence interval over n paired samples."""

    mean: float
    low: float
    high: float
    n: int

    def fmt(self, scale: float = 100.0, digits: int = 2) -> str:
        if self.n < 2:
            return f"{self.mean * scale:+.{digits}f}"
        return (
            f"{self.mean * scale:+.{digits}f} [{self.low * scale:+.{digits}f}, "
            f"{self.high * scale:+.{digits}f}]"
        )


def mean_ci(values: list[float] | np.ndarray) -> Interval:
    """Mean and 95% t-interval of ``values`` (a paired difference per replicate; NaNs dropped)."""
    v = np.asarray(values, dtype=np.float64)
    n = int(np.isfinite(v).sum())
    if n == 0:
        raise ValueError("mean_ci needs at least one value; got none")
    m, half = stats.mean_ci(v)
    return Interval(m, m - half, m + half, n)


def paired(arm: dict[int, float], base: dict[int, float]) -> Interval:
    """Paired-by-replicate difference ``arm - base`` over the replicates both have."""
    seeds = sorted(set(arm) & set(base))
    if not seeds:
        raise ValueError("no seed is shared by the arm and the baseline")
    return mean_ci([arm[s] - base[s] for s in seeds])


def run_dir(out: Path, arm: str, seed: int) -> Path:
    return out / "runs" / f"{arm}-s{seed}"


def sft_dir(out: Path, replicate: int | None) -> Path:
    """The warm start of a replicate (None: the one warm start every replicate shares)."""
    return out / ("sft_model" if replicate is None else f"sft_model-r{replicate}")


def load_rows(path: Path) -> list[dict[str, Any]]:
    """A run directory's metric rows (the project's one reader; a torn last line is skipped)."""
    return read_jsonl(path / "metrics.jsonl")


def total_rollouts(rows: list[dict[str, Any]]) -> int:
    """Rollouts generated by a run: the sum of its per-step ``train/rollouts``."""
    return int(sum(r["train/rollouts"] for r in rows if "train/rollouts" in r))


def total_tokens(rows: list[dict[str, Any]]) -> float:
    """Response tokens generated by a run (NaN if it did not log ``train/tokens``)."""
    steps = [r for r in rows if "train/rollouts" in r]
    if not steps or any("train/tokens" not in r for r in steps):
        return math.nan
    return float(sum(r["train/tokens"] for r in steps))


def final_eval(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The last row's ``eval/`` metrics (the evaluation after the last step)."""
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    return {k: v for k, v in evals[-1].items() if k.startswith("eval/")} if evals else {}


def mechanism_means(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each mechanism metric's mean over the run's steps and over its last 10% (NaN if absent)."""
    steps = [r for r in rows if "train/rollouts" in r]
    out = {}
    for key in MECHANISM_KEYS:
        values = [float(r[key]) for r in steps if isinstance(r.get(key), (int, float))]
        tail = values[-max(1, len(values) // 10) :]
        out[key] = {
            "all": float(np.mean(values)) if values else math.nan,
            "last10": float(np.mean(tail)) if values else math.nan,
        }
    return out


def summarize(
    out: Path, arms: list[str], seeds: list[int], expected_rollouts: int | None = None
) -> dict[str, Any]:
    """Per-arm metrics and paired differences to GRPO, from the run directories.

    ``expected_rollouts`` (steps x batch x mean rollouts) is what every run must have spent;
    ``equal_compute`` says whether every run spent exactly that (or, without it, the same).
    """
    per: dict[str, dict[int, dict[str, Any]]] = {a: {} for a in arms}
    rows_of: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for a in arms:
        for s in seeds:
            rows = load_rows(run_dir(out, a, s))
            if not rows or not _finished(out, a, s):
                continue  # only finished runs are summarised
            rows_of[a, s] = rows
            ev = final_eval(rows)
            mean_at = mean_key([ev])
            mean_n = int(mean_at.rsplit("@", 1)[1])
            steps = [r for r in rows if "train/rollouts" in r]
            timed = steps[1:] if len(steps) > 1 else steps  # step 1 compiles the numba kernels
            step_s = [r["timing/step_s"] for r in timed if "timing/step_s" in r]
            ctl_s = [r["timing/controller_s"] for r in timed if "timing/controller_s" in r]
            eval_s = [r["timing/eval_s"] for r in rows if "timing/eval_s" in r]
            levels = sorted({int(k.rsplit("level", 1)[1]) for k in ev if "/level" in k})
            per[a][s] = {
                "rollouts": total_rollouts(rows),
                "tokens": total_tokens(rows),
                "steps": len(steps),
                "pass@8": ev.get("eval/pass@8", math.nan),
                "pass@8_start": rows[0].get("eval/pass@8", math.nan)
                if rows[0]["step"] == 0
                else math.nan,
                "mean@n": ev.get(mean_at, math.nan),
                "n": mean_n,
                "pass@8_hard": _hardest_pass8(ev),
                "pass@8_worst": float(min(ev[f"eval/pass@8/level{lv}"] for lv in levels))
                if levels
                else math.nan,
                "step_s": float(np.mean(step_s)) if step_s else math.nan,
                "eval_s": float(np.sum(eval_s)) if eval_s else math.nan,
                "controller_share": float(np.sum(ctl_s) / np.sum(step_s))
                if step_s and ctl_s
                else math.nan,
                "mechanism": mechanism_means(rows),
            }
    # rollouts-to-target: the GRPO run of the same replicate sets the target (its final mean@n)
    for a in arms:
        for s in per[a]:
            hit = None
            target = per.get(BASELINE, {}).get(s, {}).get("mean@n", math.nan)
            if math.isfinite(target):
                hit = rollouts_to_target(rows_of[a, s], target, f"eval/mean@{per[a][s]['n']}")
            per[a][s]["target"] = target
            per[a][s]["to_target"] = (
                None if hit is None else {"step": hit[0], "rollouts": hit[1], "tokens": hit[2]}
            )
    budgets = {per[a][s]["rollouts"] for a in arms for s in per[a]}
    equal = (
        budgets == {expected_rollouts}
        if expected_rollouts is not None and budgets
        else len(budgets) <= 1
    )
    table: dict[str, Any] = {}
    for a in arms:
        if not per[a]:
            continue
        entry: dict[str, Any] = {"seeds": sorted(per[a])}
        for key in (
            "pass@8",
            "mean@n",
            "pass@8_hard",
            "pass@8_worst",
            "step_s",
            "controller_share",
        ):
            vals = [per[a][s][key] for s in sorted(per[a])]
            entry[key] = mean_ci(vals).__dict__ if np.isfinite(vals).any() else None
            if a != BASELINE and per.get(BASELINE) and key.startswith(("pass", "mean")):
                mine = {s: per[a][s][key] for s in per[a] if math.isfinite(per[a][s][key])}
                theirs = {
                    s: per[BASELINE][s][key]
                    for s in per[BASELINE]
                    if math.isfinite(per[BASELINE][s][key])
                }
                if set(mine) & set(theirs):
                    diff = paired(mine, theirs)
                    base = float(np.mean(list(theirs.values())))
                    entry[f"{key}_diff"] = diff.__dict__
                    entry[f"{key}_rel"] = diff.mean / base if base else math.nan
                else:  # no replicate has the metric in both arms
                    entry[f"{key}_diff"], entry[f"{key}_rel"] = None, math.nan
        # the run's own change: held-out pass@8 at the end minus at step 0, mean over replicates
        gains = [per[a][s]["pass@8"] - per[a][s]["pass@8_start"] for s in sorted(per[a])]
        entry["pass@8_gain"] = mean_ci(gains).__dict__ if np.isfinite(gains).any() else None
        entry["mechanism"] = {
            key: {
                part: _mean_or_nan([per[a][s]["mechanism"][key][part] for s in per[a]])
                for part in ("all", "last10")
            }
            for key in MECHANISM_KEYS
        }
        hits = {s: per[a][s]["to_target"] for s in per[a] if per[a][s]["to_target"] is not None}
        base_hits = {
            s: per[BASELINE][s]["to_target"]
            for s in per.get(BASELINE, {})
            if per[BASELINE][s]["to_target"] is not None
        }
        ratio = [
            hits[s]["rollouts"] / base_hits[s]["rollouts"]
            for s in hits
            if s in base_hits and base_hits[s]["rollouts"] > 0
        ]
        entry["to_target"] = {
            "reached": len(hits),
            "of": len(per[a]),
            "rollouts": mean_ci([h["rollouts"] for h in hits.values()]).__dict__ if hits else None,
            "tokens": mean_ci([h["tokens"] for h in hits.values()]).__dict__
            if hits and any(math.isfinite(h["tokens"]) for h in hits.values())
            else None,
            "vs_grpo": mean_ci(ratio).__dict__ if ratio else None,
        }
        table[a] = entry
    samples = sorted({per[a][s]["n"] for a in arms for s in per[a]})
    return {
        "per_run": {a: {str(s): v for s, v in d.items()} for a, d in per.items()},
        "arms": table,
        "equal_compute": equal,
        "rollouts_per_run": sorted(budgets),
        "expected_rollouts": expected_rollouts,
        "eval_samples": samples[0] if len(samples) == 1 else samples,
    }


def _mean_or_nan(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def markdown(summary: dict[str, Any], header: str) -> str:
    def iv(d: dict[str, Any] | None, scale: float = 100.0) -> str:
        return "n/a" if d is None else Interval(**d).fmt(scale)

    def pct(d: dict[str, Any] | None, scale: float = 100.0, fmt: str = ".2f") -> str:
        return "n/a" if d is None or not math.isfinite(d["mean"]) else f"{d['mean'] * scale:{fmt}}"

    n = summary.get("eval_samples", 8)
    lines = [
        header,
        "",
        f"| arm | replicates | pass@8 (%) | pass@8 gain over the run | mean@{n} (%) | pass@8, 2 hardest"
        " levels | worst-level pass@8 | s/step | controller share |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for a, e in summary["arms"].items():
        lines.append(
            f"| {a} | {len(e['seeds'])} | {pct(e['pass@8'])} | {iv(e['pass@8_gain'])} |"
            f" {pct(e['mean@n'])} | {pct(e['pass@8_hard'])} | {pct(e['pass@8_worst'])} |"
            f" {pct(e['step_s'], 1.0)} | {pct(e['controller_share'], 100.0, '.3f')}% |"
        )
    lines += [
        "",
        "Mechanism (did the controllers do anything?), mean over the run's steps / over its last 10%,"
        " averaged over replicates; n/a where the run did not log it:",
        "",
        "| arm | " + " | ".join(k.split("/", 1)[1] for k in MECHANISM_KEYS) + " |",
        "|---|" + "---|" * len(MECHANISM_KEYS),
    ]
    for a, e in summary["arms"].items():
        cells = []
        for key in MECHANISM_KEYS:
            m = e["mechanism"][key]
            cells.append(
                "n/a" if not math.isfinite(m["all"]) else f"{m['all']:.3f} / {m['last10']:.3f}"
            )
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Differences to GRPO, paired by replicate (percentage points, mean [95% CI]); relative gain in"
        " the paper's format:",
        "",
        f"| arm | Δ pass@8 | relative | Δ mean@{n} | Δ pass@8 hardest | Δ worst level |",
        "|---|---|---|---|---|---|",
    ]
    for a, e in summary["arms"].items():
        if "pass@8_diff" not in e:
            continue
        rel = f"{e['pass@8_rel'] * 100:+.1f}%" if math.isfinite(e["pass@8_rel"]) else "n/a"
        lines.append(
            f"| {a} | {iv(e['pass@8_diff'])} | {rel} | {iv(e['mean@n_diff'])} |"
            f" {iv(e['pass@8_hard_diff'])} | {iv(e['pass@8_worst_diff'])} |"
        )
    lines += [
        "",
        f"Rollouts to reach GRPO's final held-out mean@{n} (per replicate, the GRPO run of the same"
        " replicate sets the target; the first evaluation at or above it, interpolated linearly from the"
        " evaluation before it; mean [95% CI] over the replicates that reached it):",
        "",
        "| arm | reached | rollouts | × GRPO's | generated tokens |",
        "|---|---|---|---|---|",
    ]
    for a, e in summary["arms"].items():
        t = e["to_target"]

        def num(d: dict[str, Any] | None, digits: int = 0) -> str:
            if d is None:
                return "n/a"
            iv_ = Interval(**d)
            if iv_.n < 2:
                return f"{iv_.mean:,.{digits}f}"
            return f"{iv_.mean:,.{digits}f} [{iv_.low:,.{digits}f}, {iv_.high:,.{digits}f}]"

        lines.append(
            f"| {a} | {t['reached']}/{t['of']} | {num(t['rollouts'])} | {num(t['vs_grpo'], 2)} |"
            f" {num(t['tokens'])} |"
        )
    expected = summary.get("expected_rollouts")
    lines += [
        "",
        f"Equal compute: {'yes' if summary['equal_compute'] else 'NO'}; rollouts per run:"
        f" {summary['rollouts_per_run']}" + (f" (expected {expected})." if expected else "."),
    ]
    warmups = summary.get("warmups")
    if warmups:
        lines += [
            "",
            "Warm-ups (SFT steps, final loss): "
            + "; ".join(
                f"{k}: {w['steps']}, {w['loss']:.3f}"
                + ("" if w.get("reached", True) else " (target not reached)")
                for k, w in warmups.items()
            ),
        ]
    return "\n".join(lines) + "\n"


def _hardest_pass8(ev: dict[str, Any]) -> float:
    """Mean pass@8 of an evaluation row's two hardest (highest-numbered) levels; NaN without
    levels."""
    levels = sorted(int(k.rsplit("level", 1)[1]) for k in ev if k.startswith("eval/pass@8/level"))
    hard = levels[-2:]
    return float(np.mean([ev[f"eval/pass@8/level{lv}"] for lv in hard])) if hard else math.nan


def _finished(out: Path, arm: str, seed: int) -> bool:
    return (run_dir(out, arm, seed) / "model" / "config.json").is_file()


def _evals(out: Path, arm: str, seed: int) -> dict[int, tuple[float, float]]:
    """A finished run's held-out pass@8 per evaluated step: (overall, mean of the two hardest
    levels); empty for an unfinished run."""
    if not _finished(out, arm, seed):
        return {}
    found: dict[int, tuple[float, float]] = {}
    for r in load_rows(run_dir(out, arm, seed)):
        if "eval/pass@8" in r:
            overall, hard = float(r["eval/pass@8"]), _hardest_pass8(r)
            found[int(r["step"])] = (overall, overall if math.isnan(hard) else hard)
    return found


def plot_paired(out: Path, arms: list[str], seeds: list[int]) -> Path | None:
    """Each arm's held-out pass@8 minus GRPO's in the same replicate, over steps: a thin line
    per replicate and their mean, overall and on the two hardest levels (finished runs only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [a for a in arms if a != "grpo"]
    if "grpo" not in arms or not others:
        return None
    evals = {(a, s): _evals(out, a, s) for a in arms for s in seeds}  # each run read once
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=110, sharey=True)
    drawn = False
    for k, (ax, title) in enumerate(zip(axes, ["overall", "the two hardest levels"], strict=True)):
        for i, a in enumerate(others):
            color = f"C{i + 1}"
            diffs, steps = [], []
            for s in seeds:
                base, arm = evals["grpo", s], evals[a, s]
                common = sorted(set(base) & set(arm))
                if not common:
                    continue
                d = np.array([100 * (arm[x][k] - base[x][k]) for x in common])
                ax.plot(common, d, color=color, alpha=0.25, lw=0.8)
                diffs.append(d)
                steps = common
            if diffs and len({len(d) for d in diffs}) == 1:
                label = f"{a} ({len(diffs)} replicates)"
                ax.plot(steps, np.mean(diffs, axis=0), color=color, lw=2, label=label)
                drawn = True
        ax.axhline(0, color="k", lw=0.8)
        ax.set_title(f"held-out pass@8 minus GRPO's, same replicate: {title}", fontsize=9)
        ax.set_xlabel("GRPO step")
    if not drawn:
        plt.close(fig)
        return None
    axes[0].set_ylabel("percentage points")
    axes[0].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    path = out / "paired.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_curves(out: Path, arms: list[str], seeds: list[int]) -> Path:
    """Held-out pass@8 over steps, mean and 95% band over replicates, one line per arm
    (finished runs only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for a in arms:
        curves: dict[int, list[float]] = {}
        for s in seeds:
            for step, (overall, _) in _evals(out, a, s).items():
                curves.setdefault(step, []).append(overall)
        if not curves:
            continue
        xs = sorted(curves)
        ivs = [mean_ci(curves[x]) for x in xs]
        m = np.array([i.mean for i in ivs])
        ax.plot(xs, m * 100, label=a, marker="o", ms=3)
        lo = np.array([i.low if i.n > 1 else i.mean for i in ivs])
        hi = np.array([i.high if i.n > 1 else i.mean for i in ivs])
        ax.fill_between(xs, lo * 100, hi * 100, alpha=0.15)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("held-out pass@8 (%)")
    ax.legend(fontsize=8, frameon=False)
    ax.set_title("Learning curves (mean and 95% CI over replicates)", fontsize=10)
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_mechanism(out: Path, arms: list[str], seeds: list[int]) -> Path | None:
    """Each mechanism metric over steps, the mean over replicates per arm (smoothed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for key in MECHANISM_KEYS:
        for a in arms:
            runs = []
            for s in seeds:
                if not _finished(out, a, s):
                    continue
                pts = {
                    int(r["step"]): float(r[key])
                    for r in load_rows(run_dir(out, a, s))
                    if isinstance(r.get(key), (int, float))
                }
                if pts:
                    runs.append(pts)
            if not runs:
                continue
            xs = sorted(set.intersection(*(set(p) for p in runs)))
            if xs:
                ys = np.mean([[p[x] for x in xs] for p in runs], axis=0)
                ys = smooth(ys, max(1, len(xs) // 50))  # trailing: no dip at the series' ends
                series.setdefault(key, {})[a] = (np.asarray(xs), ys)
    if not series:
        return None
    keys = [k for k in MECHANISM_KEYS if k in series]
    rows = (len(keys) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(11, 2.3 * rows), squeeze=False, layout="constrained")
    for ax, key in zip(axes.ravel(), keys, strict=False):
        for a, (xs, ys) in series[key].items():
            ax.plot(xs, ys, lw=1.1, label=a)
        ax.set_title(f"{MECHANISM_KEYS[key]} ({key.split('/', 1)[1]})", fontsize=9)
    for ax in axes.ravel()[len(keys) :]:
        ax.set_visible(False)
    axes[0, 0].legend(fontsize=7)
    path = out / "mechanism.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _warm_up(
    out: Path, base: dict[str, Any], sft_steps: int, replicate: int | None, cache_dir: str | None
) -> Path:
    """The warm start (shared, or replicate r's with ``sft_seed=r``), made once per ``--out``
    and cached across grids in the SFT cache (per model, task, SFT settings and seed)."""
    from gdro_torch.build import SFT_FORMAT, check_inputs, load_policy
    from gdro_torch.config import TrainConfig
    from gdro_torch.model import save_model_dir

    path = sft_dir(out, replicate)
    extra = {} if replicate is None else {"sft_seed": replicate}
    cfg = TrainConfig(**{**base, **extra, "sft_steps": sft_steps})  # the controller is not used
    key: dict[str, Any] = {
        k: getattr(cfg, k)
        for k in (
            "model",
            "task",
            "sft_steps",
            "sft_seed",
            "sft_batch",
            "sft_lr",
            "sft_max_grad_norm",
            "sft_target_loss",
        )
    }
    key["sft_format"] = SFT_FORMAT
    stamp = path.with_name(path.name.replace("sft_model", "sft") + ".json")
    if (path / "config.json").is_file():
        saved = json.loads(stamp.read_text()) if stamp.is_file() else None
        if saved != key:
            raise ValueError(f"{path} was warmed up with {saved}, not {key}; use another --out")
        return path
    t0 = time.perf_counter()
    model, tok, cached = load_policy(cfg, check_inputs(cfg), cache_dir=cache_dir)
    save_model_dir(model, tok, path)
    atomic_write_text(stamp, json.dumps(key))
    print(
        f"SFT warm start{'' if replicate is None else f' of replicate {replicate}'}: "
        f"{'cached' if cached else f'{time.perf_counter() - t0:.0f} s'} -> {path}",
        flush=True,
    )
    return path


def _warm_up_record(path: Path) -> dict[str, Any] | None:
    record = json.loads((path / "config.json").read_text()).get("gdro_sft")
    if not isinstance(record, dict):
        return None
    target = record.get("target_loss")
    return {
        "steps": record["steps"],
        "loss": record["loss"],
        "reached": target is None or record["loss"] <= target,
    }


def _train_one(cfg: Any, rd: Path) -> Any:
    """Train one run; skip it when finished, resume it when it has a checkpoint."""
    from gdro_torch.loop import train
    from gdro_torch.rundir import RunDir

    if (rd / "model" / "config.json").is_file():
        return None  # finished earlier
    if RunDir(rd).latest_checkpoint() is not None and (rd / "init_model").is_dir():
        try:
            return train(cfg, rd, resume=True)
        except ValueError as exc:
            if "config differs" in str(exc):
                raise ValueError(
                    f"{rd} holds a run of another configuration ({exc}); use another --out"
                ) from None
            raise
    if rd.exists():
        shutil.rmtree(rd)  # stopped before its first checkpoint: start it again
    return train(cfg, rd)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--grid", choices=sorted(GRIDS), default="cpu")
    ap.add_argument("--out", type=Path, default=Path("runs/experiment"))
    ap.add_argument(
        "--arms", nargs="*", default=None, choices=list(ARMS), help="default: the grid's arms"
    )
    ap.add_argument(
        "--seeds", type=int, default=None, help="number of replicates (default: the grid's)"
    )
    ap.add_argument(
        "--replicates",
        type=int,
        nargs="*",
        default=None,
        help="run only these replicates (e.g. 0 1 2 in one process, 3 4 in another)",
    )
    ap.add_argument(
        "--warmups",
        choices=["shared", "per-replicate"],
        default=None,
        help="one warm-up for every replicate, or one per replicate (sft_seed = r); default: the grid's",
    )
    ap.add_argument("--task", default=None, help="override the grid's task spec")
    ap.add_argument("--steps", type=int, default=None, help="override the grid's GRPO steps")
    ap.add_argument("--cache-dir", default=None, help="SFT cache (default ~/.cache/gdro)")
    ap.add_argument(
        "--summary-only",
        action="store_true",
        help="train nothing: summarise the runs finished so far (e.g. while the grid runs "
        "in other processes) and list the unfinished ones",
    )
    args = ap.parse_args(argv)

    from gdro_torch.config import TrainConfig

    grid = GRIDS[args.grid]
    base = dict(grid["train"])
    if args.task:
        base["task"] = args.task
    if args.steps:
        base["steps"] = args.steps
    arms = args.arms if args.arms is not None else list(grid["arms"])
    seeds = (
        args.replicates
        if args.replicates is not None
        else list(range(args.seeds if args.seeds is not None else grid["seeds"]))
    )
    per_replicate = (args.warmups or grid["warmups"]) == "per-replicate"
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    probe = TrainConfig(**base)  # validates the grid before any compute
    expected = probe.steps * probe.batch_size * probe.controller.rollout.mean

    # 1. the warm starts: one shared, or one per replicate (cached per sft seed)
    if args.summary_only:
        starts = {
            s: path
            for s in (seeds if per_replicate else seeds[:1])
            if (path := sft_dir(out, s if per_replicate else None) / "config.json").is_file()
        }
        starts = {s: path.parent for s, path in starts.items()}
    else:
        starts = {
            s: _warm_up(out, base, grid["sft_steps"], s if per_replicate else None, args.cache_dir)
            for s in (seeds if per_replicate else seeds[:1])
        }

    # 2. every arm of every replicate from the replicate's warm start, at equal rollouts
    for s in seeds if not args.summary_only else []:
        start = starts[s] if per_replicate else starts[seeds[0]]
        for a in arms:
            rd = run_dir(out, a, s)
            extra = {"sft_seed": s} if per_replicate else {}
            cfg = TrainConfig(
                **{**base, **extra, "model": str(start), "sft_steps": 0, "seed": s}
            ).replace(**ARMS[a])
            t0 = time.perf_counter()
            res = _train_one(cfg, rd)
            if res is not None:
                print(
                    f"{a:>17} replicate {s}: pass@8 {res.eval_start.get('eval/pass@8', math.nan):.3f} -> "
                    f"{res.eval_end.get('eval/pass@8', math.nan):.3f} ({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )

    # 3. statistics, tables, plots
    summary = summarize(out, arms, seeds, expected)
    summary["grid"] = {
        "name": args.grid,
        **base,
        "seeds": seeds,
        "sft_steps": grid["sft_steps"],
        "warmups": "per-replicate" if per_replicate else "shared",
        "arms": arms,
    }
    summary["warmups"] = {
        (f"replicate {s}" if per_replicate else "shared"): rec
        for s, path in starts.items()
        if (rec := _warm_up_record(path)) is not None
    }
    unfinished = [f"{a}-s{s}" for s in seeds for a in arms if not _finished(out, a, s)]
    summary["unfinished"] = unfinished
    atomic_write_text(out / "results.json", json.dumps(summary, indent=1))
    warm = "its own warm-up per replicate" if per_replicate else "one shared warm-up"
    header = (
        f"## {args.grid} grid: {base['model']} on `{base['task']}`, {base['steps']} steps x "
        f"{base['batch_size']} prompts x {probe.controller.rollout.mean} rollouts, {len(seeds)} replicates, {warm}"
    )
    if unfinished:
        header += (
            f"\n\nInterim: {len(unfinished)} of {len(seeds) * len(arms)} runs unfinished "
            f"({', '.join(unfinished)}); the tables hold the finished ones only."
        )
    atomic_write_text(out / "results.md", markdown(summary, header))
    plot_curves(out, arms, seeds)
    plot_paired(out, arms, seeds)
    plot_mechanism(out, arms, seeds)
    print((out / "results.md").read_text())
    if args.summary_only:
        return 0
    if not summary["equal_compute"]:
        print(
            f"experiment: runs spent unequal rollouts {summary['rollouts_per_run']} (expected {expected})",
            file=sys.stderr,
        )
    return 0 if summary["equal_compute"] else 1


if __name__ == "__main__":
    sys.exit(main())
