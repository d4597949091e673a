"""Check from a verl run's own dumps that gdro's mechanism was exercised.

Usage::

    python examples/verl/check_run.py <trainer.rollout_data_dir> --batch 16 --n 4 --mode both \
        [--log <the run's console output or verl's file-logger jsonl>]

Reads verl's rollout dumps (``<dir>/<step>.jsonl``, one row per response, written when
``trainer.rollout_data_dir`` is set) and gdro's plan log (``<dir>/gdro_plans.jsonl``, written next to
them), for a sync trainer (one plan per step), and checks that:

1. every dumped step generated exactly ``batch * n`` responses (the exact budget);
2. each step's responses per prompt (its groups) are the counts gdro planned for that step;
3. ``--mode rollout|both``: some step's groups have unequal sizes (Rollout-GDRO moved budget);
4. ``--mode prompt|both``: some plan has a Prompt-GDRO weight other than 1;
5. some prompt was planned in two steps or more (prompts recur, so the controller learned from
   its own feedback);
6. ``--log``: every step logged with ``gdro/`` metrics reports the weights multiplied into its
   advantages (``gdro/applied/weight_{min,max,mean}``), and they are that step's plan's weights
   (min, max and the mean over its rollouts): the weights reached training.

Prints a JSON summary; exits 1 naming the first check that failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
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


_STEP = re.compile(r"\bstep:(\d+) - ")
# verl's console logger prints pprint.pformat(value): "0.5", or "np.float64(0.5)" for numpy scalars
_VALUE = r"(?:np\.\w+\()?([-+]?(?:[0-9.]+(?:[eE][-+]?\d+)?|nan|inf))"
_APPLIED = ("gdro/applied/weight_min", "gdro/applied/weight_max", "gdro/applied/weight_mean")


def load_logged(path: str) -> dict[int, dict[str, float]]:
    """The ``gdro/`` metrics a run logged, by step, from verl's console output (``step:N - k:v - ...``
    lines, as ``trainer.logger=[console]`` prints them) or its file logger's jsonl. A step logged
    twice keeps its last line."""
    logged: dict[int, dict[str, float]] = {}
    with open(path, errors="replace") as f:
        for line in f:
            record = None
            if line.startswith("{"):
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
            if isinstance(record, dict) and "step" in record and "data" in record:
                step, data = int(record["step"]), record["data"]
                found = {k: float(v) for k, v in data.items() if k.startswith("gdro/")}
            else:
                match = _STEP.search(line)
                if match is None:
                    continue
                step = int(match.group(1))
                found = {
                    m.group(1): float(m.group(2))
                    for m in re.finditer(r"(gdro/[\w/@.]+):" + _VALUE, line)
                }
            if found:
                logged[step] = found
    return logged


def check_applied(logged: dict[int, dict[str, float]], plans: list[dict[str, Any]]) -> int:
    """Check 6; returns the steps checked."""
    assert logged, "no step logged gdro/ metrics"
    for step, metrics in sorted(logged.items()):
        missing = [k for k in _APPLIED if k not in metrics]
        assert not missing, f"step {step}: {missing[0]} was not logged"
        assert 1 <= step <= len(plans), f"step {step} was logged but has no gdro plan"
        plan = plans[step - 1]
        weights, counts = plan["weights"], plan["rollouts"]
        mean = sum(w * n for w, n in zip(weights, counts, strict=True)) / sum(counts)
        for key, want in zip(_APPLIED, (min(weights), max(weights), mean), strict=True):
            assert math.isclose(metrics[key], want, rel_tol=1e-5, abs_tol=1e-6), (
                f"step {step}: {key} is {metrics[key]}, the plan's weights give {want}"
            )
    return len(logged)


def group_sizes(rows: list[dict[str, Any]]) -> list[int]:
    """Responses per prompt in one step: rows grouped by verl's uid (V1) or prompt text (V0)."""
    keys = [r["uid"].rsplit("_", 2)[0] if "uid" in r else r["input"] for r in rows]
    return sorted(Counter(keys).values())


def check(folder: str, *, batch: int, n: int, mode: str, log: str | None = None) -> dict[str, Any]:
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
    applied = None if log is None else check_applied(load_logged(log), plans)
    return {
        "steps": len(steps),
        "logged_steps_with_applied_weights": applied,
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
    parser.add_argument(
        "--log", help="the run's console output, or verl's file-logger jsonl (check 6)"
    )
    args = parser.parse_args(argv)
    try:
        summary = check(args.folder, batch=args.batch, n=args.n, mode=args.mode, log=args.log)
    except (AssertionError, OSError) as err:
        print(f"FAIL: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
