"""Fuzz the controller's state loading: mutate every leaf of real states, load, and run.

Run as a script (tests/core/test_hardening.py runs ``--quick``, in a subprocess, so that a
segfault fails the test; without it, about 59,000 cases take 4 CPU minutes): for controllers in every mode, with plans in flight and partial feedback, each leaf of the
state dict is removed, reshaped, re-typed and given extreme values, and keys are added. Every
mutated state must either be refused with a ``ValueError``/``TypeError`` or load into a controller
that then keeps working: plans meet their budgets, metrics stay finite, the state saves and loads.
The last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import traceback
from collections.abc import Iterator
from typing import Any

import numpy as np

from gdro_core import (
    ClassifierConfig,
    ControllerConfig,
    GDROController,
    PromptConfig,
    RolloutConfig,
)
from gdro_core._io import flatten, unflatten

SPECIAL = [0, -1, 1, 2, 255, 2**31 - 1, -(2**31), 2**63 - 1, float("nan"), float("inf"), -float("inf"),
           1e308, -1e308, 0.5, 1e-300]
STRINGS = ["", "{}", "[]", "-1", "null", "{not json", '{"bit_generator": "PCG64"}', "x" * 10]


def configs(quick: bool) -> Iterator[ControllerConfig]:
    classifiers = (ClassifierConfig(num_bins=5), ClassifierConfig(window=0, num_bins=3),
                   ClassifierConfig(outcome="any", num_bins=4), ClassifierConfig(outcome="pass@k", k=2, window=6))
    i = 0
    for pmode in ("off", "reweight", "resample"):
        for rollout in (RolloutConfig(mode="fixed"), RolloutConfig(mode="bandit", selection="sample"),
                        RolloutConfig(mode="bandit", arm_rule="cumulative"), RolloutConfig(mode="neyman")):
            for j, classifier in enumerate(classifiers):
                if quick and j != i % len(classifiers):  # every mode, one classifier each
                    continue
                yield ControllerConfig(classifier=classifier, prompt=PromptConfig(mode=pmode, signal="variance"),
                                       rollout=rollout, seed=1, max_in_flight=2)
            i += 1


def real_state(cfg: ControllerConfig) -> dict[str, Any]:
    ctl = GDROController.from_config(cfg, 24)
    rng = np.random.default_rng(0)
    for _ in range(3):
        plan = ctl.plan(ctl.sample(6))
        ctl.update(plan, rng.random(plan.num_rollouts), rng.normal(size=6))
    a = ctl.plan(ctl.sample(5))
    ctl.plan(ctl.sample(5))
    part = a.prompt_ids[:2]
    ctl.update(a, rng.random(int(a.rollouts_of(part).sum())), rng.normal(size=2), prompt_ids=part)
    return ctl.state_dict()


QUICK_SPECIAL = [0, -1, 2**31 - 1, float("nan"), float("inf"), 1e308]


def mutations(value: Any, quick: bool) -> Iterator[tuple[str, Any]]:
    special = QUICK_SPECIAL if quick else SPECIAL
    yield "remove", KeyError
    if isinstance(value, np.ndarray) and value.ndim >= 1:
        if value.shape[0]:
            yield "drop-last", value[:-1]
            yield "duplicate-last", np.concatenate([value, value[-1:]])
            yield "shuffle", np.random.default_rng(0).permutation(value)
        yield "zeros", np.zeros_like(value)
        yield "transpose", value.reshape(-1)[None, :] if value.ndim == 1 else value.T
        for dt in (np.float64, np.int32, np.bool_) if quick else (np.float64, np.int32, np.uint8, np.bool_, np.int64):
            if value.dtype != dt:
                try:
                    yield f"dtype-{np.dtype(dt).name}", value.astype(dt)
                except (OverflowError, ValueError):
                    pass
        if value.size:
            for s in special:
                v = value.copy()
                try:
                    with np.errstate(all="ignore"):
                        v.flat[0] = s
                        if value.size > 1:
                            v.flat[-1] = s
                except (OverflowError, ValueError, TypeError):
                    continue
                yield f"set-{s!r}", v
    elif isinstance(value, str) or (isinstance(value, np.ndarray) and value.dtype.kind == "U"):
        for s in STRINGS:
            yield f"str-{s[:8]!r}", s
        yield "int", 3
    else:
        for s in special:
            yield f"scalar-{s!r}", s
        yield "string", "7"
        yield "none", None
        yield "array", np.arange(3)
        yield "float-array", np.array(1.5)


def exercise(ctl: GDROController) -> None:
    rng = np.random.default_rng(1)
    rc = ctl.rollout_config
    for plan in ctl.in_flight():
        left = ctl.awaiting(plan)
        ctl.update(plan, rng.random(int(plan.rollouts_of(left).sum())), rng.normal(size=left.size),
                   prompt_ids=left)
    for _ in range(3):
        plan = ctl.plan(ctl.sample(6))
        assert plan.rollouts.sum() == rc.mean * 6 and plan.rollouts.min() >= rc.min
        assert np.all(np.isfinite(plan.weights)) and np.all(np.isfinite(plan.sample_probs))
        ctl.update(plan, rng.random(plan.num_rollouts), rng.normal(size=6))
    m = ctl.metrics()
    assert all(np.isfinite(v) for v in m.values())
    buf = io.BytesIO()
    np.savez(buf, **flatten(ctl.state_dict()))
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        again = unflatten({k: z[k] for k in z.files})
    twin = GDROController.from_config(ctl.config, ctl.num_prompts)
    twin.load_state_dict(again)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="every mode once, fewer values (CI)")
    args = parser.parse_args()
    summary = {"cases": 0, "rejected": 0, "accepted": 0, "crashes": 0, "bad_errors": 0}
    examples: list[str] = []
    for cfg in configs(args.quick):
        base = real_state(cfg)
        flat = flatten(base)
        for key, value in flat.items():
            for name, mutated in mutations(value, args.quick):
                summary["cases"] += 1
                d = dict(flat)
                if mutated is KeyError:
                    del d[key]
                else:
                    d[key] = mutated if isinstance(mutated, np.ndarray) else np.asarray(mutated) \
                        if mutated is not None else mutated
                try:
                    state = unflatten({k: v for k, v in d.items() if isinstance(v, np.ndarray)})
                    for k, v in d.items():
                        if not isinstance(v, np.ndarray):
                            node = state
                            *parents, leaf = k.split("/")
                            for p in parents:
                                node = node.setdefault(p, {})
                            node[leaf] = v
                except Exception:  # the mutation broke the nesting itself: not a state
                    continue
                target = GDROController.from_config(cfg, 24)
                try:
                    target.load_state_dict(state)
                except (ValueError, TypeError):
                    summary["rejected"] += 1
                    continue
                except Exception:
                    summary["bad_errors"] += 1
                    examples.append(f"load {key} {name}: {traceback.format_exc(limit=2)}")
                    continue
                summary["accepted"] += 1
                try:
                    exercise(target)
                except Exception:
                    summary["bad_errors"] += 1
                    examples.append(f"run {key} {name}: {traceback.format_exc(limit=3)}")
        # additions: an extra key in every section
        for section in ("", "classifier/", "prompt/", "rollout/", "sampler/", "in_flight/0/"):
            summary["cases"] += 1
            d = dict(flat)
            d[f"{section}extra"] = np.arange(2)
            target = GDROController.from_config(cfg, 24)
            try:
                target.load_state_dict(unflatten(d))
                summary["accepted"] += 1
                exercise(target)
            except (ValueError, TypeError):
                summary["rejected"] += 1
            except Exception:
                summary["bad_errors"] += 1
                examples.append(f"extra {section}: {traceback.format_exc(limit=2)}")
    for e in examples[:20]:
        print(e, file=sys.stderr)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
