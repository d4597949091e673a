"""Scale: controller and simulator step time and memory from 10k to 10M prompts.

For each dataset size N and batch size, the controller (``GDROController`` with Prompt-GDRO
reweighting and Neyman rollouts) and the simulated learner (``gdro_lab``: generate + train, no
evaluation) run warm-up steps, then the median step time over the measured steps is reported,
with the memory each holds per prompt and the peak extra memory one step allocates
(``tracemalloc``; numpy reports its buffers to it). The growth exponent is the least-squares
slope of log(step time) against log(N) at a fixed batch: about 0 means the cost does not grow
with the dataset, 1 means linear growth. The controller must stay near 0.

    python benchmarks/scale.py                   # 10k, 100k, 1M, 10M x batch 256, 1024, 4096
    python benchmarks/scale.py --quick           # 10k, 100k, 1M x batch 256, 4096
    python benchmarks/scale.py --json out.json   # also write the rows

Timings on a shared machine are noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np

from gdro_core import GDROController, PromptConfig, RolloutConfig
from gdro_lab.learner import Learner, LearnerConfig
from gdro_lab.run import SimConfig, run_one
from gdro_lab.scenarios import get_scenario


def _nbytes(obj: Any) -> int:
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def _time_steps(step: Callable[[], float], warmup: int, measured: int) -> tuple[float, int]:
    """Median seconds per step (as ``step`` reports them) and the peak bytes one step allocates."""
    for _ in range(warmup):
        step()
    times = [step() for _ in range(measured)]
    tracemalloc.start()
    step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return float(np.median(times)), int(peak)


def measure(num_prompts: int, batch: int, warmup: int, measured: int) -> dict[str, Any]:
    """One grid cell: controller and simulator step time and memory."""
    pop = get_scenario("stationary").build(np.random.default_rng([0, 0]), num_prompts)
    learner = Learner(LearnerConfig(), pop)
    rng = np.random.default_rng(1)
    ctl = GDROController(num_prompts=num_prompts, prompt=PromptConfig(signal="failure"),
                         rollout=RolloutConfig(mode="neyman"), seed=0)
    def ctl_step() -> float:
        """sample + plan + update, timed without the generation in between (seconds)."""
        t0 = time.perf_counter()
        plan = ctl.plan(ctl.sample(batch))
        t1 = time.perf_counter()
        reward = learner.generate(rng, plan.prompt_ids, plan.rollouts).reward
        t2 = time.perf_counter()
        ctl.update(plan, reward)
        return (t1 - t0) + (time.perf_counter() - t2)

    def sim_step() -> float:
        """generate + train for a uniform batch of 4 rollouts each (seconds)."""
        t0 = time.perf_counter()
        ids = np.unique(rng.integers(0, num_prompts, size=batch))
        n = np.full(ids.size, 4, dtype=np.int64)
        gen = learner.generate(rng, ids, n)
        learner.train(ids, gen.levels, gen.signal, np.ones(ids.size), n, 4)
        return time.perf_counter() - t0

    ctl_s, ctl_peak = _time_steps(ctl_step, warmup, measured)
    sim_s, sim_peak = _time_steps(sim_step, warmup, measured)
    sim_bytes = pop.difficulty.nbytes + pop.topic.nbytes + learner.own.nbytes
    return {"num_prompts": num_prompts, "batch": batch, "controller_ms": 1e3 * ctl_s,
            "controller_state_B_per_prompt": _nbytes(ctl.state_dict()) / num_prompts,
            "controller_step_peak_MB": ctl_peak / 2**20, "simulator_ms": 1e3 * sim_s,
            "simulator_state_B_per_prompt": sim_bytes / num_prompts,
            "simulator_step_peak_MB": sim_peak / 2**20}


def growth_exponent(sizes: list[int], times: list[float]) -> float:
    """Least-squares slope of log(time) against log(size)."""
    if len(sizes) < 2:
        return math.nan
    return float(np.polyfit(np.log(sizes), np.log(times), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k-1M prompts, batch 256 and 4096")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="measured steps per cell")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    sizes = [10_000, 100_000, 1_000_000] + ([] if args.quick else [10_000_000])
    batches = [256, 4096] if args.quick else [256, 1024, 4096]
    print(f"# {platform.processor() or platform.machine()}, numpy {np.__version__}")
    rows = []
    header = (f"{'prompts':>10} {'batch':>6} {'ctl ms':>8} {'ctl B/prompt':>12} "
              f"{'ctl peak MB':>11} {'sim ms':>8} {'sim B/prompt':>12} {'sim peak MB':>11}")
    print(header)
    for n in sizes:
        for b in batches:
            r = measure(n, b, args.warmup, args.steps)
            rows.append(r)
            print(f"{n:>10,} {b:>6} {r['controller_ms']:>8.2f} "
                  f"{r['controller_state_B_per_prompt']:>12.1f} "
                  f"{r['controller_step_peak_MB']:>11.2f} {r['simulator_ms']:>8.2f} "
                  f"{r['simulator_state_B_per_prompt']:>12.1f} "
                  f"{r['simulator_step_peak_MB']:>11.2f}", flush=True)
    print("\ngrowth exponent of step time in N (0 = flat, 1 = linear):")
    print(f"{'batch':>6} {'controller':>11} {'simulator':>10}")
    exps = {}
    for b in batches:
        sel = [r for r in rows if r["batch"] == b]
        e_c = growth_exponent([r["num_prompts"] for r in sel], [r["controller_ms"] for r in sel])
        e_s = growth_exponent([r["num_prompts"] for r in sel], [r["simulator_ms"] for r in sel])
        exps[b] = {"controller": e_c, "simulator": e_s}
        print(f"{b:>6} {e_c:>11.2f} {e_s:>10.2f}")
    print("\ngrowth exponent of step time in batch size, per N:")
    for n in sizes:
        sel = [r for r in rows if r["num_prompts"] == n]
        e_c = growth_exponent([r["batch"] for r in sel], [r["controller_ms"] for r in sel])
        e_s = growth_exponent([r["batch"] for r in sel], [r["simulator_ms"] for r in sel])
        print(f"{n:>10,} controller {e_c:.2f}  simulator {e_s:.2f}")
    print("\nend to end (gdro_lab.run.run_one: 1000 steps, batch 256, 100k prompts, evaluation "
          "every 10 steps on 20k prompts):")
    e2e = {}
    for name in ("uniform", "gdro-both", "knapsack"):
        cfg = SimConfig(strategies=(name,), num_prompts=100_000, steps=1000)
        t0 = time.perf_counter()
        run_one(cfg, name, 0)
        e2e[name] = time.perf_counter() - t0
        print(f"  {name:<10} {e2e[name]:.2f} s")
    if args.json:
        from gdro_lab._io import write_json

        write_json(args.json, {"rows": rows, "exponent_in_num_prompts": exps,
                               "end_to_end_s": e2e})


if __name__ == "__main__":
    main()
