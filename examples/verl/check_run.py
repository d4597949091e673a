"""Check from a verl run's own dumps that gdro's mechanism was exercised.

Usage::

    python examples/verl/check_run.py <trainer.rollout_data_dir> --batch 16 --n 4 --mode both

Reads verl's rollout dumps (``<dir>/<step>.jsonl``, one row per response, written when
``trainer.rollout_data_dir`` is set) and gdro's plan log (``<dir>/gdro_plans.jsonl``, written next to
them), for a sync trainer (one plan per step), and checks that:

1. every dumped step generated exactly ``batch * n`` responses (the exact budget);
2. each step's responses per prompt (its groups) are the counts gdro planned for that step;
3. ``--mode rollout|both``: some step's groups have unequal sizes (Rollout-GDRO moved budget);
4. ``--mode prompt|both``: some plan has a Prompt-GDRO weight other than 1;
5. some prompt was planned in two steps or more (prompts recur, so the controller learned from
   its own feedback).

Prints a JSON summary; exits 1 naming the first check that failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from typing import Any


def load_steps(folder: str) -> dict[int, list[dict[str, Any]]]:
    """verl's dumped rows by step (files ``<step>.jsonl``)."""
    steps: dict[int, list[dict[str, Any]]] = {}
    for name in os.listdir(folder):
        stem, ext = os.path.splitext(name)
        if ext == ".jsonl" and stem.isdigit():
            with open(os.path.join(folder, name)) as f:
                steps[int(stem)] = [json.loads(line) for line in f if line.strip()]
    return dict(sorted(steps.items()))


def load_plans(folder: str) -> list[dict[str, Any]]:
    """gdro's plans in the order they were made; a plan re-made after a resume replaces its
    earlier line (same serial)."""
    by_serial: dict[int, dict[str, Any]] = {}
    with open(os.path.join(folder, "gdro_plans.jsonl")) as f:
        for line in f:
            if line.strip():
                plan = json.loads(line)
                by_serial[int(plan["serial"])] = plan
    return [by_serial[s] for s in sorted(by_serial)]


def group_sizes(rows: list[dict[str, Any]]) -> list[int]:
    """Responses per prompt in one step: rows grouped by verl's uid (V1) or prompt text (V0)."""
    keys = [r["uid"].rsplit("_", 2)[0] if "uid" in r else r["input"] for r in rows]
    return sorted(Counter(keys).values())


def check(folder: str, *, batch: int, n: int, mode: str) -> dict[str, Any]:
    """Run the checks; raises ``AssertionError`` naming the first that fails."""
    steps = load_steps(folder)
    plans = load_plans(folder)
    assert steps, f"no verl rollout dumps (<step>.jsonl) in {folder}"
    assert len(plans) >= len(steps), f"{len(plans)} gdro plans for {len(steps)} dumped steps"
    unequal = 0
    for step, rows in steps.items():
        assert len(rows) == batch * n, (
            f"step {step}: {len(rows)} responses, the budget is {batch} x {n} = {batch * n}"
        )
        planned = sorted(plans[step - 1]["rollouts"])
        assert group_sizes(rows) == planned, (
            f"step {step}: group sizes {group_sizes(rows)} differ from the plan's {planned}"
        )
        unequal += len(set(planned)) > 1
    weighted = sum(any(abs(w - 1.0) > 1e-6 for w in p["weights"]) for p in plans)
    visits = Counter(pid for p in plans for pid in p["prompt_ids"])
    if mode in ("rollout", "both"):
        assert unequal > 0, "no step had unequal group sizes: Rollout-GDRO never moved budget"
    if mode in ("prompt", "both"):
        assert weighted > 0, "no plan had a Prompt-GDRO weight other than 1"
    assert max(visits.values()) >= 2, "no prompt was planned twice: the run never revisited one"
    return {
        "steps": len(steps),
        "plans": len(plans),
        "steps_with_unequal_groups": unequal,
        "plans_with_weights_not_1": weighted,
        "most_visits_of_a_prompt": max(visits.values()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="the run's trainer.rollout_data_dir")
    parser.add_argument("--batch", type=int, required=True, help="data.train_batch_size")
    parser.add_argument("--n", type=int, required=True, help="actor_rollout_ref.rollout.n")
    parser.add_argument("--mode", choices=["prompt", "rollout", "both", "off"], default="both")
    args = parser.parse_args(argv)
    try:
        summary = check(args.folder, batch=args.batch, n=args.n, mode=args.mode)
    except (AssertionError, OSError) as err:
        print(f"FAIL: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
