"""gdro_verl's per-step cost at 14.1k and 10M prompts: the adapter's work and memory are O(batch).

One verl step through the adapter, without verl around it: the sampler hands out a batch of prompt
ids (``next_prompt_id``, ``planned_rollouts``: what ``GDRODataset.__getitem__`` stamps), the
dispatch binds the batch's uids (``register_batch``), the scored groups come back keyed by prompt
id (``feedback_groups``, which calls the controller's ``update``) and the advantages are weighted
(``apply_weights`` on a verl ``DataProto``). Every step plans a new block (the controller's
``sample`` and ``plan``).

For each dataset size it reports the median time per step (the sizes are timed in alternating
rounds, so both see the same machine load), split into the controller's calls and the adapter's
own bookkeeping, and the peak memory allocated during a step (``tracemalloc``,
numpy's allocations included) over the state held before it. Both should be flat in the dataset
size. For reference it also times one ``controller.state_dict()``: the copy the adapter used to
take at the start of every block (about 23 bytes a prompt), now taken only when verl checkpoints.

    python benchmarks/verl_step_cost.py                 # 14.1k and 10M prompts, batch 256
    python benchmarks/verl_step_cost.py --steps 50 --batch 1024
    python benchmarks/verl_step_cost.py --json benchmarks/results/verl_step_cost.json

Timings on shared machines are noisy: compare the two sizes within one run.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import tracemalloc
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

SIZES = (14_100, 10_000_000)
MEAN = 4


@dataclass
class Row:
    num_prompts: int
    batch: int
    step_ms: float  # median wall time of one whole step
    controller_ms: float  # of which: the controller's sample + plan + update
    adapter_ms: float  # the rest: hand-out, stamps, uid binding, grouping, weights
    step_peak_kib: float  # peak memory allocated during a step, over what was held before it
    held_kib_growth: float  # memory still held after the memory pass's steps, over before them
    state_dict_ms: float  # one controller.state_dict() (the old per-block copy)
    state_dict_mib: float  # its size


def _settings(batch: int) -> Any:
    from gdro_verl.config import GDROSettings

    raw = {"gdro": {"prompt": {"mode": "reweight"}, "rollout": {"mode": "bandit", "mean": MEAN}}}
    return GDROSettings.from_data_config(raw)


def _array_bytes(d: Any) -> int:
    if isinstance(d, dict):
        return sum(_array_bytes(v) for v in d.values())
    return int(d.nbytes) if isinstance(d, np.ndarray) else 0


class _Timed:
    """Wraps the controller's step calls to add up the time spent in them."""

    def __init__(self, controller: Any) -> None:
        self.inner = controller
        self.seconds = 0.0

    def wrap(self, name: str) -> None:
        original = getattr(self.inner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        setattr(self.inner, name, timed)


def _step(rt: Any, batch: int, step: int, rng: np.random.Generator) -> None:
    import torch
    from verl import DataProto

    from gdro_verl.feedback import Group

    ids = [rt.next_prompt_id() for _ in range(batch)]
    counts = [rt.planned_rollouts(p) for p in ids]
    uids = [f"s{step}-{i}" for i in range(batch)]
    rt.register_batch(uids, ids)
    groups = {
        uid: Group(pid, (rng.random(n) < 0.5).astype(np.float64), None)
        for uid, pid, n in zip(uids, ids, counts, strict=True)
    }
    rt.feedback_groups(groups)
    rows = np.repeat(np.array(uids, dtype=object), counts)
    data = DataProto.from_dict(
        tensors={"advantages": torch.ones(len(rows), 4)}, non_tensors={"uid": rows}
    )
    rt.apply_weights(data)


class _Subject:
    """One dataset size: its runtime (warmed up) and its timings."""

    def __init__(self, num_prompts: int, batch: int, warmup: int) -> None:
        from gdro_verl.runtime import GDRORuntime

        self.num_prompts, self.batch = num_prompts, batch
        self.rng = np.random.default_rng(0)
        self.rt = GDRORuntime(_settings(batch), num_prompts=num_prompts, block_size=batch)
        self.timed = _Timed(self.rt.controller)
        for name in ("sample", "plan", "update"):
            self.timed.wrap(name)
        self.step_no = 0
        for _ in range(warmup):
            self.step()
        self.step_s: list[float] = []
        self.controller_s: list[float] = []

    def step(self) -> None:
        _step(self.rt, self.batch, self.step_no, self.rng)
        self.step_no += 1

    def timed_steps(self, n: int) -> None:
        """Timing pass (tracemalloc off: it slows every allocation)."""
        for _ in range(n):
            self.timed.seconds = 0.0
            start = time.perf_counter()
            self.step()
            self.step_s.append(time.perf_counter() - start)
            self.controller_s.append(self.timed.seconds)

    def row(self, steps: int) -> Row:
        tracemalloc.start()  # memory pass
        held_before, _ = tracemalloc.get_traced_memory()
        peaks = []
        for _ in range(steps):
            before, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            self.step()
            peaks.append(tracemalloc.get_traced_memory()[1] - before)
        held_after, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        start = time.perf_counter()
        state = self.rt.controller.state_dict()
        state_s = time.perf_counter() - start
        return Row(
            num_prompts=self.num_prompts,
            batch=self.batch,
            step_ms=1e3 * float(np.median(self.step_s)),
            controller_ms=1e3 * float(np.median(self.controller_s)),
            adapter_ms=1e3 * float(np.median(np.subtract(self.step_s, self.controller_s))),
            step_peak_kib=float(np.median(peaks)) / 1024,
            held_kib_growth=(held_after - held_before) / 1024,
            state_dict_ms=1e3 * state_s,
            state_dict_mib=_array_bytes(state) / 2**20,
        )


def measure(batch: int, steps: int, warmup: int, rounds: int) -> list[Row]:
    """Both sizes, timed in alternating rounds so that both see the same machine load."""
    subjects = [_Subject(n, batch, warmup) for n in SIZES]
    for _ in range(rounds):
        for subject in subjects:
            subject.timed_steps(max(1, steps // rounds))
    return [subject.row(steps) for subject in subjects]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5, help="alternations between the sizes")
    parser.add_argument("--json", default=None, help="also write the rows (and machine) as JSON")
    args = parser.parse_args(argv)
    rows = measure(args.batch, args.steps, args.warmup, args.rounds)
    header = (
        f"{'prompts':>11} {'batch':>6} {'step ms':>8} {'controller ms':>14} {'adapter ms':>11} "
        f"{'step peak KiB':>14} {'held growth KiB':>16} {'state_dict ms':>14} {'state_dict MiB':>15}"
    )
    print(header)
    for r in rows:
        print(
            f"{r.num_prompts:>11,} {r.batch:>6} {r.step_ms:>8.2f} {r.controller_ms:>14.2f} "
            f"{r.adapter_ms:>11.2f} {r.step_peak_kib:>14.1f} {r.held_kib_growth:>16.1f} "
            f"{r.state_dict_ms:>14.1f} {r.state_dict_mib:>15.1f}"
        )
    if args.json:
        out = {
            "machine": {"python": platform.python_version(), "processor": platform.processor()},
            "steps": args.steps,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "rows": [asdict(r) for r in rows],
        }
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
