"""gdro's overhead inside TRL's GRPOTrainer, against plain TRL on the same run.

Every arm trains the same model from the same weights on the same prompts with the same
GRPOConfig (the embedded Llama on CPU, addition prompts, a noisy verifier reward), once with
``trl.GRPOTrainer`` and once with ``gdro_trl.GDROGRPOTrainer`` per gdro mode. Arms alternate
within each repeat. Reported per arm, per optimizer step (from one step's end to the next, so data
loading and planning count; after the warm-up steps): the median CPU time of the process (robust
to other processes on a shared machine; torch runs one thread) and its difference to plain TRL,
the mean time spent in gdro's own code (planning blocks in the sampler, matching, advantages,
feedback; measured around those calls), the median wall time, and the tokens processed. Every
arm generates the same number of completions per step, each of the full length.

    python benchmarks/trl_overhead.py                   # about 3 minutes on 2 CPU cores
    python benchmarks/trl_overhead.py --quick           # a smoke run (seconds)
    python benchmarks/trl_overhead.py --json out.json   # also write the rows as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import zlib
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from transformers.trainer_callback import PrinterCallback  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from gdro_torch.model import build_embedded  # noqa: E402
from gdro_torch.tasks import load_task  # noqa: E402
from gdro_trl import GDROGRPOTrainer, _compat, runtime  # noqa: E402

ARMS: dict[str, dict[str, Any] | None] = {
    "plain TRL": None,
    "Prompt-GDRO (reweight)": {"prompt": {"mode": "reweight"}},
    "Rollout-GDRO (neyman)": {"prompt": {"mode": "off"}, "rollout": {"mode": "neyman"}},
    "both (reweight + bandit)": {"prompt": {"mode": "reweight"}, "rollout": {"mode": "bandit"}},
}
PASS = {1: 80, 2: 60, 3: 40, 4: 20, 5: 5}


def verifier(prompts: list[str], completions: list[str], level: list[int], **_: Any) -> list[float]:
    """A noisy verifier whose pass rate falls with the prompt's digit count."""
    return [
        1.0 if zlib.crc32((p + c).encode()) % 100 < PASS[lv] else 0.0
        for p, c, lv in zip(prompts, completions, level, strict=True)
    ]


class GdroClock:
    """Seconds spent in gdro's own code: block planning, matching, advantages and feedback."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._originals: list[tuple[Any, str, Any]] = []

    def _wrap(self, owner: Any, name: str) -> None:
        original = getattr(owner, name)
        clock = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                clock.seconds += time.perf_counter() - start

        self._originals.append((owner, name, original))
        setattr(owner, name, timed)

    def __enter__(self) -> GdroClock:
        self._wrap(runtime.GDRORuntime, "block_rows")
        self._wrap(runtime.GDRORuntime, "match")
        self._wrap(_compat, "_apply_plan")  # advantages, weights, log fixes, feedback
        return self

    def __exit__(self, *exc: Any) -> None:
        for owner, name, original in reversed(self._originals):
            setattr(owner, name, original)


class StepTimer(TrainerCallback):  # type: ignore[misc]
    """Wall time from one optimizer step's end to the next (data loading and planning included),
    and the part of it spent in gdro's code."""

    def __init__(self, clock: GdroClock) -> None:
        self.clock = clock
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.gdro: list[float] = []
        self._last = self._now()

    def _now(self) -> tuple[float, float, float]:
        return time.perf_counter(), time.process_time(), self.clock.seconds

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._last = self._now()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        now = self._now()
        self.times.append(now[0] - self._last[0])
        self.cpu.append(now[1] - self._last[1])
        self.gdro.append(now[2] - self._last[2])
        self._last = now


def run_arm(
    gdro: dict[str, Any] | None, args: argparse.Namespace, dataset: Dataset
) -> dict[str, float]:
    model, tok = build_embedded(args.model, seed=0)
    clock = GdroClock()
    timer = StepTimer(clock)
    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out,
            per_device_train_batch_size=args.prompts * args.generations,
            num_generations=args.generations,
            max_completion_length=args.completion_length,
            max_steps=args.warmup + args.steps,
            learning_rate=1e-4,
            report_to=[],
            use_cpu=True,
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            seed=0,
            # every completion runs to the full length: arms that draw other prompts (and
            # train differently) still generate and train on the same number of tokens
            generation_kwargs={"min_new_tokens": args.completion_length},
        )
        kwargs: dict[str, Any] = dict(
            model=model,
            reward_funcs=verifier,
            args=config,
            train_dataset=dataset,
            processing_class=tok,
            callbacks=[timer],
        )
        torch.manual_seed(0)
        trainer = GRPOTrainer(**kwargs) if gdro is None else GDROGRPOTrainer(**kwargs, gdro=gdro)
        trainer.remove_callback(PrinterCallback)
        with clock:
            trainer.train()
    return {
        "step_s": statistics.median(timer.times[args.warmup :]),
        "cpu_s": statistics.median(timer.cpu[args.warmup :]),
        "gdro_s": statistics.mean(timer.gdro[args.warmup :]),
        "tokens": trainer.state.num_input_tokens_seen / len(timer.times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llama-1m")
    parser.add_argument("--prompts", type=int, default=16, help="prompts per step")
    parser.add_argument("--generations", type=int, default=8, help="completions per prompt (mean)")
    parser.add_argument("--completion-length", type=int, default=8)
    parser.add_argument("--dataset", type=int, default=256, help="training prompts")
    parser.add_argument("--steps", type=int, default=20, help="measured steps per run")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.quick:
        args.model, args.prompts, args.generations = "tiny-llama-0.1m", 4, 4
        args.completion_length, args.dataset, args.steps, args.warmup, args.repeats = 4, 32, 3, 1, 1
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    task = load_task(f"addition:min_digits=1,max_digits=5,size={args.dataset}")
    items = [task.train.item(i) for i in range(args.dataset)]
    dataset = Dataset.from_dict(
        {"prompt": [it.prompt for it in items], "level": [it.level for it in items]}
    )
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in ARMS}
    warm = argparse.Namespace(**{**vars(args), "steps": 2, "warmup": 0})
    for gdro in ARMS.values():  # compile gdro_core's numba kernels, warm TRL's code paths
        run_arm(gdro, warm, dataset)
    for _ in range(args.repeats):
        for name, gdro in ARMS.items():
            samples[name].append(run_arm(gdro, args, dataset))
    base = statistics.median(s["cpu_s"] for s in samples["plain TRL"])
    rows = []
    print(
        f"{args.model}, {args.prompts} prompts x {args.generations} completions per step "
        f"(max {args.completion_length} tokens), {args.steps} measured steps x {args.repeats} "
        f"runs, torch threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}"
    )
    print(
        f"{'arm':<26} {'CPU ms/step':>11} {'vs plain':>9} {'gdro ms/step':>13} "
        f"{'wall ms/step':>13} {'tokens/step':>12}"
    )
    for name, runs in samples.items():
        cpu = statistics.median(s["cpu_s"] for s in runs)
        wall = statistics.median(s["step_s"] for s in runs)
        own = statistics.median(s["gdro_s"] for s in runs)
        tokens = statistics.median(s["tokens"] for s in runs)
        rows.append(
            {
                "arm": name,
                "cpu_ms": 1e3 * cpu,
                "vs_plain": cpu / base - 1,
                "gdro_ms": 1e3 * own,
                "wall_ms": 1e3 * wall,
                "tokens_per_step": tokens,
                "runs_cpu_ms": [1e3 * s["cpu_s"] for s in runs],
                "runs_wall_ms": [1e3 * s["step_s"] for s in runs],
            }
        )
        print(
            f"{name:<26} {1e3 * cpu:>11.1f} {100 * (cpu / base - 1):>+8.1f}% {1e3 * own:>13.2f} "
            f"{1e3 * wall:>13.1f} {tokens:>12.0f}"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"config": vars(args), "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
