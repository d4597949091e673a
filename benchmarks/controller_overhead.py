"""Controller overhead: plan + update time per step and state bytes per prompt.

Grid: dataset sizes (14.1k, 1M, 10M prompts) x batch sizes (256, 1024, 4096 prompts) x controller
modes x kernel backends (numba, numpy). Each cell runs warm-up steps on a simulated population
(so prompts spread over the bins), then times ``plan`` + ``update`` (and ``sample`` separately)
over the measured steps and reports the median. Timings on shared machines are noisy: compare
ratios within one run, not across runs.

    python benchmarks/controller_overhead.py                  # the full grid (a few minutes)
    python benchmarks/controller_overhead.py --quick          # 14.1k and 1M, batch 256/1024
    python benchmarks/controller_overhead.py --json out.json  # also write the rows as JSON
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass

import numpy as np

from gdro_core import ClassifierConfig, GDROController, PromptConfig, RolloutConfig

# The authors' controllers, per step at batch 256 (the paper's timing_s/adv, 4B model).
PAPER_PROMPT_S = 0.355
PAPER_ROLLOUT_S = 0.446

MODES: dict[str, tuple[PromptConfig, RolloutConfig]] = {
    "prompt-reweight": (PromptConfig(mode="reweight", signal="variance"), RolloutConfig()),
    "prompt-resample": (PromptConfig(mode="resample", signal="variance"), RolloutConfig()),
    "rollout-bandit": (
        PromptConfig(mode="off", signal="variance"),
        RolloutConfig(mode="bandit", arm_signal="variance"),
    ),
    "rollout-bandit-sample": (
        PromptConfig(mode="off", signal="variance"),
        RolloutConfig(mode="bandit", arm_signal="variance", selection="sample"),
    ),
    "rollout-neyman": (PromptConfig(mode="off", signal="variance"), RolloutConfig(mode="neyman")),
    "both": (
        PromptConfig(mode="resample", signal="variance"),
        RolloutConfig(mode="bandit", arm_signal="variance"),
    ),
}


@dataclass
class Row:
    mode: str
    backend: str
    num_prompts: int
    batch: int
    plan_update_ms: float
    sample_ms: float
    bytes_per_prompt: float


def state_bytes(d: dict) -> int:
    return sum(state_bytes(v) if isinstance(v, dict) else np.asarray(v).nbytes for v in d.values())


def run_cell(mode: str, backend: str, n: int, batch: int, warmup: int, steps: int) -> Row:
    pcfg, rcfg = MODES[mode]
    ctl = GDROController(n, classifier=ClassifierConfig(window=100), prompt=pcfg, rollout=rcfg, seed=0, backend=backend)
    rng = np.random.default_rng(1)
    ability = rng.beta(0.5, 0.8, size=n)  # per-prompt success probability
    t_plan, t_sample = [], []
    for t in range(warmup + steps):
        t0 = time.perf_counter()
        ids = ctl.sample(batch)
        t1 = time.perf_counter()
        plan = ctl.plan(ids)
        t2 = time.perf_counter()
        rewards = (rng.random(plan.num_rollouts) < np.repeat(ability[ids], plan.rollouts)).astype(np.float64)
        t3 = time.perf_counter()
        ctl.update(plan, rewards)
        t4 = time.perf_counter()
        if t >= warmup:
            t_sample.append(t1 - t0)
            t_plan.append((t2 - t1) + (t4 - t3))
    return Row(mode, backend, n, batch, 1e3 * float(np.median(t_plan)), 1e3 * float(np.median(t_sample)),
               state_bytes(ctl.state_dict()) / n)


def to_markdown(rows: list[Row]) -> str:
    """One table: a row per (mode, dataset size, batch), numba and numpy side by side."""
    out = ["| mode | prompts | batch | numba ms | numpy ms | sample ms | bytes/prompt |",
           "|---|---|---|---|---|---|---|"]
    keyed = {(r.mode, r.num_prompts, r.batch, r.backend): r for r in rows}
    for (mode, n, batch, backend), r in keyed.items():
        if backend != "numba":
            continue
        twin = keyed.get((mode, n, batch, "numpy"))
        other = f"{twin.plan_update_ms:.3f}" if twin else "-"
        out.append(f"| {mode} | {n:,} | {batch} | {r.plan_update_ms:.3f} | {other} | {r.sample_ms:.3f} |"
                   f" {r.bytes_per_prompt:.1f} |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="14.1k and 1M prompts, batches 256 and 1024")
    ap.add_argument("--sizes", type=int, nargs="*", default=None)
    ap.add_argument("--batches", type=int, nargs="*", default=None)
    ap.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES))
    ap.add_argument("--backends", nargs="*", default=["numba", "numpy"], choices=["numba", "numpy"])
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--json", default=None, help="write the rows to this JSON file")
    ap.add_argument("--markdown", default=None, help="write the table to this Markdown file")
    args = ap.parse_args()
    sizes = args.sizes or ([14_100, 1_000_000] if args.quick else [14_100, 1_000_000, 10_000_000])
    batches = args.batches or ([256, 1024] if args.quick else [256, 1024, 4096])
    # compile every kernel once before timing anything
    for mode in args.modes:
        run_cell(mode, "numba", 1000, 64, 3, 1)
    rows: list[Row] = []
    print(f"{'mode':<22}{'backend':<8}{'prompts':>11}{'batch':>7}{'plan+update ms':>16}{'sample ms':>11}{'B/prompt':>10}")
    for n in sizes:
        for batch in batches:
            for mode in args.modes:
                for backend in args.backends:
                    row = run_cell(mode, backend, n, batch, args.warmup, args.steps)
                    rows.append(row)
                    print(f"{row.mode:<22}{row.backend:<8}{row.num_prompts:>11,}{row.batch:>7}"
                          f"{row.plan_update_ms:>16.3f}{row.sample_ms:>11.3f}{row.bytes_per_prompt:>10.1f}", flush=True)
    # the paper's comparison: batch 256, the largest dataset measured, numba
    print("\nAgainst the authors' controllers (batch 256, per step):")
    for mode, paper in (("prompt-reweight", PAPER_PROMPT_S), ("rollout-bandit", PAPER_ROLLOUT_S)):
        cand = [r for r in rows if r.mode == mode and r.backend == "numba" and r.batch == 256]
        if cand:
            r = max(cand, key=lambda x: x.num_prompts)
            print(f"  {mode:<18} {r.plan_update_ms:8.3f} ms vs {paper * 1e3:.0f} ms: {paper * 1e3 / r.plan_update_ms:,.0f}x faster"
                  f" ({r.num_prompts:,} prompts)")
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(to_markdown(rows))
    if args.json:
        payload = {"machine": platform.platform(), "python": platform.python_version(),
                   "rows": [r.__dict__ for r in rows]}
        with open(args.json, "w") as fh:
            json.dump(payload, fh, indent=1)


if __name__ == "__main__":
    main()
