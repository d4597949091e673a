"""Classifier outcome rules: which per-step outcome tracks prompts' true pass rates best.

Plain GRPO (uniform prompts, a fixed number of rollouts, no controller acting) runs on the tasks
the project ships, from the default preset's cached SFT warm-up. Every step's per-prompt
``(prompt id, correct, rollouts)`` is recorded, and at a few checkpoints every training prompt's
true pass rate is measured with many samples. Candidate outcome rules are then replayed offline
on the recorded stream, with the core's 10 equal-width bins and 0.03 hysteresis, and scored
against the true rates: mean absolute error and Spearman correlation (prompts seen at least
once), the spread over the bins (histogram, entropy, top and bottom shares), the prompts with a
low true rate that sit in the top bin, where an unseen prompt goes, and how the bins move when a
prompt gets fewer or more rollouts (each visit subsampled to a random n in [2, 8], and every
visit at n = 2 against n = 8), the feedback loop Rollout-GDRO would close.

    python benchmarks/classifier_outcomes.py           # both tasks (docs/classifier.md)
    python benchmarks/classifier_outcomes.py --quick   # tiny sizes, about a minute
    python benchmarks/classifier_outcomes.py --replay  # re-score the recorded streams only

The recorded streams are kept in ``--record-dir`` (``runs/classifier-outcomes``); a stream whose
settings match is reused, so a second run only replays. Results go to ``--out``
(``benchmarks/results/classifier_outcomes.{json,md}``; with ``--quick``,
``runs/classifier-outcomes-quick``). Run with ``OMP_NUM_THREADS=1``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gdro_core import ClassifierConfig, DifficultyClassifier, pass_at_k
from gdro_core.files import atomic_write_text

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

NUM_BINS = 10
HYSTERESIS = 0.03
EDGES = np.arange(1, NUM_BINS, dtype=np.float64) / NUM_BINS
EDGE_EPS = 1e-12  # the core's tie rule: a rate on an edge goes to the upper bin
RECORD_FORMAT = 1


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskRun:
    """One task's GRPO run and its truth measurements."""

    name: str  # short label used in tables and file names
    task: str  # task spec
    model: str = "tiny-llama-1m"
    steps: int = 300
    batch_size: int = 32
    rollouts: int = 8
    lr: float = 1e-4
    checkpoint_every: int = 100
    truth_samples: int = 32
    sft_steps: int | None = None  # None: the default preset's (4,000, stopping at loss 0.25)
    seed: int = 0

    @property
    def checkpoints(self) -> list[int]:
        """Steps after which the true pass rates are measured (0 = the starting policy)."""
        return list(range(0, self.steps + 1, self.checkpoint_every))


FULL_RUNS = [
    TaskRun(name="addition", task="addition:min_digits=1,max_digits=5,size=1000"),
    TaskRun(
        name="chain_sum",
        task="chain_sum:min_terms=2,max_terms=3,min_digits=1,max_digits=3,size=400",
    ),
]
QUICK_RUNS = [
    TaskRun(
        name="addition-quick",
        task="addition:min_digits=1,max_digits=2,size=48",
        model="tiny-llama-0.1m",
        steps=12,
        batch_size=8,
        checkpoint_every=6,
        truth_samples=8,
        sft_steps=300,
    ),
]


# ---------------------------------------------------------------------------------------------
# Recording: GRPO by hand, every step's counts, true pass rates at the checkpoints
# ---------------------------------------------------------------------------------------------


class _Recorder:
    """Forwards to the controller and keeps each step's per-prompt counts from ``update``."""

    def __init__(self, ctl: Any) -> None:
        self._ctl = ctl
        self.ids: list[I64] = []
        self.correct: list[I64] = []
        self.total: list[I64] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctl, name)

    def update(self, plan: Any, rewards: Any, losses: Any = None) -> None:
        r = np.asarray(rewards, dtype=np.float64)
        offsets = np.concatenate([[0], np.cumsum(plan.rollouts)])
        correct = np.add.reduceat((r > 0.5).astype(np.int64), offsets[:-1])
        self.ids.append(np.array(plan.prompt_ids, dtype=np.int64))
        self.correct.append(correct.astype(np.int64))
        self.total.append(np.array(plan.rollouts, dtype=np.int64))
        self._ctl.update(plan, rewards, losses)


def _log(*args: Any) -> None:
    print(*args, flush=True)


def record(run: TaskRun, log: Any = _log) -> dict[str, Any]:
    """Run GRPO for ``run.steps`` steps; return the stream and the truth at the checkpoints."""
    import torch

    from gdro_torch.build import build_controller, check_inputs, load_policy
    from gdro_torch.config import PRESETS, TrainConfig
    from gdro_torch.evaluate import sample_counts
    from gdro_torch.loop import StepContext, grpo_step, lr_at

    preset: TrainConfig = PRESETS["default"]
    if run.sft_steps is not None:
        preset = preset.replace(sft_steps=run.sft_steps, sft_target_loss=None)
    cfg = preset.replace(
        model=run.model,
        task=run.task,
        steps=run.steps,
        batch_size=run.batch_size,
        controller={"rollout": {"mean": run.rollouts, "mode": "fixed"}, "prompt": {"mode": "off"}},
        lr=run.lr,
        seed=run.seed,
    )
    task = check_inputs(cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    policy, tokenizer, cached = load_policy(cfg, task)
    sft_s, sft_cpu = time.perf_counter() - t0, time.process_time() - c0
    sft = dict(getattr(policy.config, "gdro_sft", None) or {})
    log(f"[{run.name}] warm-up {'from the cache' if cached else 'done'} ({sft_s:.0f} s): {sft}")
    max_new_tokens = cfg.max_new_tokens or task.max_answer_chars + 1
    recorder = _Recorder(build_controller(cfg, len(task.train)))
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0)
    ctx = StepContext(cfg, task, recorder, policy, None, tokenizer, optimizer, max_new_tokens)

    truth: list[I64] = []
    train_s = truth_s = train_cpu = truth_cpu = 0.0

    def measure(step: int) -> None:
        nonlocal truth_s, truth_cpu
        t, c = time.perf_counter(), time.process_time()
        counts = sample_counts(
            policy,
            tokenizer,
            task.train,
            samples=run.truth_samples,
            max_new_tokens=max_new_tokens,
            seed=7_777_777 + step,
        )
        truth.append(counts.correct.astype(np.int64))
        truth_s += time.perf_counter() - t
        truth_cpu += time.process_time() - c
        p = counts.correct / run.truth_samples
        log(
            f"[{run.name}] step {step}: true pass rate mean {p.mean():.3f}, "
            f"share < 0.1 {np.mean(p < 0.1):.2f}, share > 0.9 {np.mean(p > 0.9):.2f} "
            f"({time.perf_counter() - t:.0f} s)"
        )

    measure(0)
    for step in range(run.steps):
        t, c = time.perf_counter(), time.process_time()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, step)
        grpo_step(ctx, step)
        train_s += time.perf_counter() - t
        train_cpu += time.process_time() - c
        if (step + 1) % run.checkpoint_every == 0:
            log(f"[{run.name}] {step + 1} steps ({train_s:.0f} s of training)")
            measure(step + 1)
    return {
        "ids": np.stack(recorder.ids),
        "correct": np.stack(recorder.correct),
        "total": np.stack(recorder.total),
        "truth": np.stack(truth),
        "meta": {
            "format": RECORD_FORMAT,
            "run": dataclasses.asdict(run),
            "task_spec": task.spec,
            "num_prompts": len(task.train),
            "levels": [task.train.item(i).level for i in range(len(task.train))],
            "sft": sft,
            "sft_from_cache": cached,
            "seconds": {"sft": sft_s, "train": train_s, "truth": truth_s},
            "cpu_seconds": {"sft": sft_cpu, "train": train_cpu, "truth": truth_cpu},
        },
    }


def load_or_record(run: TaskRun, record_dir: Path, replay_only: bool) -> dict[str, Any]:
    """The recorded stream of ``run`` from ``record_dir`` if its settings match, else a new one."""
    path = record_dir / f"{run.name}.npz"
    if path.is_file():
        with np.load(path) as z:
            data: dict[str, Any] = {k: z[k] for k in ("ids", "correct", "total", "truth")}
            data["meta"] = json.loads(str(z["meta"]))
        if data["meta"]["run"] == dataclasses.asdict(run) and (
            data["meta"]["format"] == RECORD_FORMAT
        ):
            print(f"[{run.name}] reusing the recorded stream {path}", flush=True)
            return data
        print(f"[{run.name}] {path} holds other settings: recording again")
    if replay_only:
        raise SystemExit(f"--replay: no recorded stream for {run.name} in {record_dir}")
    data = record(run)
    record_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp,
        ids=data["ids"],
        correct=data["correct"],
        total=data["total"],
        truth=data["truth"],
        meta=np.array(json.dumps(data["meta"])),
    )
    tmp.replace(path)
    return data


# ---------------------------------------------------------------------------------------------
# Outcome rules, replayed offline
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A candidate rule: how a prompt's visits become the rate its bin is read from.

    kinds:
        ``any``: window mean of "any rollout correct" (the core today, ``k=None``);
        ``passk``: window mean of the step's unbiased pass@k (``k=1``: the per-rollout rate c/n);
        ``beta``: Beta posterior mean over pooled counts, ``(a + sum c) / (a + b + sum n)``, over
            a window of visits (``window > 0``) or with per-visit forgetting ``decay`` (``window
            == 0``: ``S_c <- decay * S_c + c``, ``S_n <- decay * S_n + n``);
        ``beta-eb``: the same with forgetting, the prior centred on the population's running
            pass rate (strength ``a + b``) instead of ``a / (a + b)``;
        ``beta-lower``: the forgetting posterior's mean minus ``z`` posterior standard deviations.
    """

    name: str
    kind: str
    window: int = 0
    k: int = 0
    a: float = 0.0
    b: float = 0.0
    decay: float = 1.0
    z: float = 0.0
    bytes_per_prompt: float = 0.0  # the state a core implementation keeps per prompt
    note: str = ""


def _rules() -> list[Rule]:
    h = 100
    lam = 1.0 - 1.0 / h  # total weight 1/(1-decay) = H visits, as the window holds H
    window_note = "100 float64 + 2 B count + 1 B bin (the core's k path)"
    sums = "2 float32 sums + 1 B bin"
    rules = [
        Rule(
            "any-correct, H=100 (today)",
            "any",
            window=h,
            bytes_per_prompt=19,
            note="16 B of bits + 2 B count + 1 B bin",
        ),
        Rule(
            "pass@2 (= k=n_min), H=100",
            "passk",
            window=h,
            k=2,
            bytes_per_prompt=803,
            note=window_note,
        ),
        Rule(
            "per-rollout c/n (k=1), H=100",
            "passk",
            window=h,
            k=1,
            bytes_per_prompt=803,
            note=window_note,
        ),
        Rule(
            "Beta(0.5,0.5) pooled, H=100",
            "beta",
            window=h,
            a=0.5,
            b=0.5,
            bytes_per_prompt=203,
            note="100 x (c, n) as uint8 + 2 B count + 1 B bin",
        ),
        Rule(
            "Beta(1,1) pooled, H=100",
            "beta",
            window=h,
            a=1.0,
            b=1.0,
            bytes_per_prompt=203,
            note="100 x (c, n) as uint8 + 2 B count + 1 B bin",
        ),
    ]
    for d in (1.0, lam, 0.95, 0.9, 0.8, 0.7, 0.5):
        label = "cumulative" if d == 1.0 else f"decay {d:g}"
        rules.append(
            Rule(
                f"pooled c/n, no prior, {label}",
                "beta",
                decay=d,
                bytes_per_prompt=9,
                note=sums + "; unseen: rate 0",
            )
        )
    for d in (lam, 0.9):
        rules.append(
            Rule(
                f"Beta(0.5,0.5) decay {d:g}",
                "beta",
                a=0.5,
                b=0.5,
                decay=d,
                bytes_per_prompt=9,
                note=sums,
            )
        )
    for d in (1.0, lam, 0.9, 0.8):
        label = "cumulative" if d == 1.0 else f"decay {d:g}"
        rules.append(
            Rule(f"Beta(1,1) {label}", "beta", a=1.0, b=1.0, decay=d, bytes_per_prompt=9, note=sums)
        )
    rules += [
        Rule(
            f"Beta-EB(s=2) decay {lam:g}",
            "beta-eb",
            a=1.0,
            b=1.0,
            decay=lam,
            bytes_per_prompt=9,
            note=sums + "; 2 global floats",
        ),
        Rule(
            f"Beta(1,1) decay {lam:g}, mean - 1 sd",
            "beta-lower",
            a=1.0,
            b=1.0,
            decay=lam,
            z=1.0,
            bytes_per_prompt=9,
            note=sums,
        ),
    ]
    return rules


def bin_of(rate: F64) -> I64:
    """The core's bin of each rate (equal-width bins, edge ties go up)."""
    return np.searchsorted(EDGES, rate + EDGE_EPS, side="right").astype(np.int64)


def hysteresis_bins(rate: F64, old_bins: I64, first: NDArray[np.bool_]) -> I64:
    """The core's hysteresis rule; a prompt's first classification uses none."""
    raw, up, down = bin_of(rate), bin_of(rate - HYSTERESIS), bin_of(rate + HYSTERESIS)
    stay_up = np.where(up > old_bins, up, old_bins)
    stay_down = np.where(down < old_bins, down, old_bins)
    moved = np.where(raw > old_bins, stay_up, np.where(raw < old_bins, stay_down, old_bins))
    return np.where(first, raw, moved)


class Replay:
    """One rule's per-prompt state over a stream of steps."""

    def __init__(self, rule: Rule, num_prompts: int) -> None:
        self.rule = rule
        p = num_prompts
        self.visits = np.zeros(p, dtype=np.int64)
        w = max(rule.window, 1)
        self.val = np.zeros((p, w))  # window rules: per-visit outcome (or c), newest first
        self.num = np.zeros((p, w))  # window rules: per-visit n, newest first
        self.s_c = np.zeros(p)  # forgetting rules: decayed sums
        self.s_n = np.zeros(p)
        self.prior_mean = 0.5  # beta-eb: the population's running pass rate
        self.pop_c = 0.0
        self.pop_n = 0.0
        self.moves = 0  # bin changes on revisits (first classifications not counted)
        self.revisits = 0
        self.bins = bin_of(self.rate(np.arange(p)))  # unseen prompts: the bin of their rate

    def rate(self, ids: I64) -> F64:
        """Current rate of each prompt in ``ids``."""
        r, v = self.rule, self.visits[ids]
        live = np.minimum(v, max(r.window, 1))
        mask = np.arange(self.val.shape[1])[None, :] < live[:, None]
        if r.kind in ("any", "passk"):
            total = np.where(mask, self.val[ids], 0.0).sum(axis=1)
            return np.where(v > 0, total / np.maximum(live, 1), 0.0)
        if r.kind == "beta" and r.window > 0:
            c = np.where(mask, self.val[ids], 0.0).sum(axis=1)
            n = np.where(mask, self.num[ids], 0.0).sum(axis=1)
            return np.asarray((r.a + c) / (r.a + r.b + n), dtype=np.float64)
        s = r.a + r.b
        if r.kind == "beta-eb":
            return np.asarray(
                (s * self.prior_mean + self.s_c[ids]) / (s + self.s_n[ids]), dtype=np.float64
            )
        mean = (r.a + self.s_c[ids]) / np.maximum(s + self.s_n[ids], 1e-300)
        if r.kind == "beta-lower":
            sd = np.sqrt(mean * (1.0 - mean) / (s + self.s_n[ids] + 1.0))
            return np.asarray(np.clip(mean - r.z * sd, 0.0, 1.0), dtype=np.float64)
        return np.asarray(mean, dtype=np.float64)

    def update(self, ids: I64, c: I64, n: I64) -> None:
        """One visit of each prompt in ``ids`` (unique) with ``c`` of ``n`` rollouts correct."""
        r = self.rule
        first = self.visits[ids] == 0
        if r.window > 0:
            if r.kind == "any":
                v = (c > 0).astype(np.float64)
            elif r.kind == "passk":
                v = np.asarray(pass_at_k(n, c, r.k), dtype=np.float64)
            else:
                v = c.astype(np.float64)
            rows, nums = self.val[ids], self.num[ids]
            rows[:, 1:], nums[:, 1:] = rows[:, :-1], nums[:, :-1]
            rows[:, 0], nums[:, 0] = v, n
            self.val[ids], self.num[ids] = rows, nums
        else:
            self.s_c[ids] = r.decay * self.s_c[ids] + c
            self.s_n[ids] = r.decay * self.s_n[ids] + n
            if r.kind == "beta-eb":  # the batch's pooled rate, smoothed over steps
                self.pop_c = r.decay * self.pop_c + float(c.sum()) / len(ids)
                self.pop_n = r.decay * self.pop_n + float(n.sum()) / len(ids)
                self.prior_mean = self.pop_c / self.pop_n
        self.visits[ids] += 1
        new_bins = hysteresis_bins(self.rate(ids), self.bins[ids], first)
        self.moves += int(((new_bins != self.bins[ids]) & ~first).sum())
        self.revisits += int((~first).sum())
        self.bins[ids] = new_bins

    def current_bins(self) -> I64:
        """Every prompt's bin; for ``beta-eb`` unseen prompts follow the population's rate."""
        out = self.bins.copy()
        if self.rule.kind == "beta-eb":
            unseen = self.visits == 0
            out[unseen] = bin_of(np.full(int(unseen.sum()), self.prior_mean))
        return out


def replay(
    rule: Rule, stream: tuple[I64, I64, I64], num_prompts: int, at: list[int]
) -> list[dict[str, Any]]:
    """Replay ``rule`` on the stream; the state after ``t`` steps for every ``t`` in ``at``."""
    ids, correct, total = stream
    rep = Replay(rule, num_prompts)
    out: list[dict[str, Any]] = []
    everyone = np.arange(num_prompts)
    for t in range(ids.shape[0] + 1):
        if t in at:
            out.append(
                {
                    "rate": rep.rate(everyone),
                    "bins": rep.current_bins(),
                    "visits": rep.visits.copy(),
                    "moves": rep.moves,
                    "revisits": rep.revisits,
                }
            )
        if t < ids.shape[0]:
            rep.update(ids[t], correct[t], total[t])
    return out


def _core_config(rule: Rule) -> ClassifierConfig | None:
    """The core's config that computes ``rule``, if the core has it (None otherwise)."""
    fields = {f.name for f in dataclasses.fields(ClassifierConfig)}
    kw: dict[str, Any] = {}
    if rule.kind == "any" and rule.window > 0:
        kw = {"window": rule.window, "k": None}
        if "outcome" in fields:
            kw["outcome"] = "any"
    elif rule.kind == "passk" and rule.window > 0:
        kw = {"window": rule.window, "k": rule.k}
        if "outcome" in fields:
            kw["outcome"] = "pass@k"
    elif (
        "outcome" in fields
        and rule.kind == "beta"
        and rule.window == 0
        and rule.a == rule.b == 0.0
        and 0.0 < rule.decay <= 1.0
    ):
        window = 0 if rule.decay == 1.0 else round(1.0 / (1.0 - rule.decay))
        if window == 0 or abs(1.0 - 1.0 / window - rule.decay) < 1e-12:
            kw = {"window": window, "outcome": "rate"}
    return ClassifierConfig(**kw) if kw else None


def check_against_core(stream: tuple[I64, I64, I64], num_prompts: int, at: list[int]) -> int:
    """The replay of every rule the core implements gives the core's own rates and bins.

    Returns:
        The number of rules checked.
    """
    checked = 0
    everyone = np.arange(num_prompts)
    ids, correct, total = stream
    for rule in _rules():
        cfg = _core_config(rule)
        if cfg is None:
            continue
        clf = DifficultyClassifier(cfg, num_prompts)
        mine = replay(rule, stream, num_prompts, at)
        for j, t in enumerate(at):
            for s in range(0 if j == 0 else at[j - 1], t):
                clf.update(ids[s], correct[s], total[s])
            if not np.array_equal(clf.bins(everyone), mine[j]["bins"]) or not np.allclose(
                clf.pass_rate(everyone), mine[j]["rate"], rtol=0, atol=1e-9
            ):
                raise AssertionError(f"replay of {rule.name!r} differs from the core at step {t}")
        checked += 1
    return checked


def subsample(
    stream: tuple[I64, I64, I64], rng: np.random.Generator, lo: int, hi: int
) -> tuple[I64, I64, I64]:
    """Keep a random n in [lo, hi] of each visit's rollouts (c follows the hypergeometric law)."""
    ids, correct, total = stream
    n = rng.integers(lo, hi + 1, size=total.shape)
    n = np.minimum(n, total)
    c = rng.hypergeometric(correct, total - correct, n)
    return ids, c.astype(np.int64), n.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------


def ranks(x: F64) -> F64:
    """Ranks with ties averaged (1-based)."""
    order = np.argsort(x, kind="stable")
    sx = x[order]
    r = np.empty(len(x))
    start = 0
    while start < len(x):
        end = start
        while end + 1 < len(x) and sx[end + 1] == sx[start]:
            end += 1
        r[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return r


def spearman(x: F64, y: F64) -> float:
    """Spearman's rank correlation (nan when either side is constant)."""
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def entropy_bits(hist: I64) -> float:
    """Shannon entropy (bits) of a histogram."""
    p = hist[hist > 0] / hist.sum()
    return float(-(p * np.log2(p)).sum()) if p.size else 0.0


def score(state: dict[str, Any], true_p: F64, own: F64 | None) -> dict[str, Any]:
    """Tracking and spread of one rule's state against the true pass rates."""
    seen = state["visits"] > 0
    rate, bins = state["rate"][seen], state["bins"][seen]
    p = true_p[seen]
    hist = np.bincount(bins, minlength=NUM_BINS)
    top, bottom = bins == NUM_BINS - 1, bins == 0
    true_bins = bin_of(p)
    unseen_bins = state["bins"][~seen]
    return {
        "seen": int(seen.sum()),
        "mae": float(np.abs(rate - p).mean()) if p.size else math.nan,
        "bias": float((rate - p).mean()) if p.size else math.nan,
        "mae_own": None if own is None or not p.size else float(np.abs(rate - own[seen]).mean()),
        "spearman": spearman(rate, p),
        "hist": hist.tolist(),
        "entropy": entropy_bits(hist),
        "top": float(top.mean()) if p.size else math.nan,
        "bottom": float(bottom.mean()) if p.size else math.nan,
        "top_below_0.5": int((top & (p < 0.5)).sum()),
        "top_below_0.1": int((top & (p < 0.1)).sum()),
        "bottom_above_0.5": int((bottom & (p > 0.5)).sum()),
        # where the hard tail sits: share of the prompts with a true rate below 0.1 in bins 0-1
        "hard_in_low_bins": float(np.mean(bins[p < 0.1] <= 1)) if (p < 0.1).any() else math.nan,
        "bin_exact": float(np.mean(bins == true_bins)) if p.size else math.nan,
        "bin_within_1": float(np.mean(np.abs(bins - true_bins) <= 1)) if p.size else math.nan,
        "unseen": int((~seen).sum()),
        "unseen_bin": sorted(set(unseen_bins.tolist())),
    }


def own_target(rule: Rule, truth_c: I64, samples: int, n: int) -> F64 | None:
    """What a rule estimates on an n-rollout stream: pass@n (any), pass@k, or the rate itself."""
    m = np.full(truth_c.shape, samples, dtype=np.int64)
    if rule.kind == "any":
        return np.asarray(pass_at_k(m, truth_c, n), dtype=np.float64)
    if rule.kind == "passk" and rule.k > 1:
        return np.asarray(pass_at_k(m, truth_c, rule.k), dtype=np.float64)
    return None


def truth_reference(true_p: F64, seen: NDArray[np.bool_]) -> dict[str, Any]:
    """The spread the bins would have if they held the true rates (seen prompts)."""
    hist = np.bincount(bin_of(true_p[seen]), minlength=NUM_BINS)
    return {
        "hist": hist.tolist(),
        "entropy": entropy_bits(hist),
        "top": float(hist[-1] / max(hist.sum(), 1)),
        "bottom": float(hist[0] / max(hist.sum(), 1)),
    }


def evaluate_task(data: dict[str, Any], rng_seed: int = 0) -> dict[str, Any]:
    """Every rule on the recorded stream and its subsampled versions, scored per checkpoint."""
    meta = data["meta"]
    run = meta["run"]
    num_prompts = meta["num_prompts"]
    at = run_checkpoints(run)
    samples, rollouts = run["truth_samples"], run["rollouts"]
    full = (data["ids"], data["correct"], data["total"])
    checked = check_against_core(full, num_prompts, at)
    rng = np.random.default_rng([rng_seed, 1])
    streams = {
        "n=8": full,
        "random n in [2,8]": subsample(full, rng, 2, rollouts),
        "n=2": subsample(full, np.random.default_rng([rng_seed, 2]), 2, 2),
    }
    truth_c = data["truth"]
    true_p = truth_c / samples
    # the noise of the truth itself: E|p_hat - p| of a binomial mean over `samples` draws
    noise = np.sqrt(2 / np.pi) * np.sqrt(true_p * (1 - true_p) / samples)
    rules = _rules()
    result: dict[str, Any] = {
        "meta": {k: v for k, v in meta.items() if k != "levels"},
        "checkpoints": at,
        "truth": {
            "mean": [float(x.mean()) for x in true_p],
            "share_below_0.1": [float(np.mean(x < 0.1)) for x in true_p],
            "share_above_0.9": [float(np.mean(x > 0.9)) for x in true_p],
            "noise_mae": [float(x.mean()) for x in noise],
        },
        "rules": [dataclasses.asdict(r) for r in rules],
        "rules_checked_against_core": checked,
        "streams": {},
    }
    for sname, stream in streams.items():
        per_rule: dict[str, Any] = {}
        states_by_rule = {r.name: replay(r, stream, num_prompts, at) for r in rules}
        for r in rules:
            rows = []
            for j, t in enumerate(at):
                own = own_target(r, truth_c[j], samples, rollouts) if sname == "n=8" else None
                cur = states_by_rule[r.name][j]
                prev = states_by_rule[r.name][max(j - 1, 0)]
                revisits = cur["revisits"] - prev["revisits"]
                rows.append(
                    {
                        "step": t,
                        "unseen_bin_initial": int(states_by_rule[r.name][0]["bins"][0]),
                        # share of revisits since the previous checkpoint that changed the bin
                        "churn": (cur["moves"] - prev["moves"]) / revisits if revisits else None,
                        **score(cur, true_p[j], own),
                    }
                )
            per_rule[r.name] = rows
        seen_last = states_by_rule[rules[0].name][-1]["visits"] > 0
        result["streams"][sname] = {
            "rules": per_rule,
            "truth_bins": [
                truth_reference(true_p[j], states_by_rule[rules[0].name][j]["visits"] > 0)
                for j in range(len(at))
            ],
        }
        if sname == "random n in [2,8]":
            # allocation feedback: does a prompt's rate error grow with its mean rollout count?
            mean_n = np.zeros(num_prompts)
            visits = np.zeros(num_prompts)
            for ids_t, n_t in zip(stream[0], stream[2], strict=True):
                mean_n[ids_t] += n_t
                visits[ids_t] += 1
            mean_n = mean_n / np.maximum(visits, 1)
            for r in rules:
                st = states_by_rule[r.name][-1]
                err = st["rate"][seen_last] - true_p[-1][seen_last]
                x = mean_n[seen_last]
                slope = float(np.polyfit(x, err, 1)[0]) if np.ptp(x) > 0 else math.nan
                per_rule[r.name][-1]["error_slope_per_rollout"] = slope
    # the n=2 against n=8 shift, final checkpoint, prompts seen in both
    shift: dict[str, Any] = {}
    for r in rules:
        s8 = replay(r, streams["n=8"], num_prompts, at[-1:])[0]
        s2 = replay(r, streams["n=2"], num_prompts, at[-1:])[0]
        seen = s8["visits"] > 0
        shift[r.name] = {
            "rate_shift": float((s8["rate"][seen] - s2["rate"][seen]).mean()),
            "bin_shift": float((s8["bins"][seen] - s2["bins"][seen]).mean()),
            "bins_moved": float(np.mean(s8["bins"][seen] != s2["bins"][seen])),
        }
    result["n_shift_2_to_8"] = shift
    return result


def run_checkpoints(run: dict[str, Any]) -> list[int]:
    """The checkpoint steps of a recorded run."""
    return list(range(0, run["steps"] + 1, run["checkpoint_every"]))


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def _f(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{nd}f}"


def markdown(results: dict[str, Any]) -> str:
    """The results as markdown tables (docs/classifier.md quotes them)."""
    lines = ["# Classifier outcome rules: measurement", ""]
    lines.append(
        f"Generated by `{results['command']}` ({results['machine']}). Replaying and scoring "
        f"took {results['wall_s']:.0f} s; recording each task's stream (warm-up, GRPO, truth) is "
        "timed in its section. Bins: 10 equal-width, hysteresis 0.03, as the core."
    )
    for tres in results["tasks"]:
        meta, at = tres["meta"], tres["checkpoints"]
        run, last = meta["run"], len(at) - 1
        sec = meta["seconds"]
        lines += [
            "",
            f"## {run['name']}: `{meta['task_spec']}`",
            "",
            f"{meta['num_prompts']} training prompts, {run['model']}, {run['steps']} GRPO steps x "
            f"{run['batch_size']} prompts x {run['rollouts']} rollouts (lr {run['lr']:g}, cosine), "
            f"true pass rate from {run['truth_samples']} samples per prompt at steps "
            f"{', '.join(map(str, at))}. Warm-up: {meta['sft'].get('steps', '-')} SFT steps, "
            f"loss {_f(meta['sft'].get('loss'))}. Wall time on the shared machine: warm-up "
            f"{sec['sft']:.0f} s{' (cached)' if meta['sft_from_cache'] else ''}, training "
            f"{sec['train']:.0f} s, truth {sec['truth']:.0f} s"
            + (
                f" (CPU time {cpu['sft']:.0f} s, {cpu['train']:.0f} s, {cpu['truth']:.0f} s)."
                if (cpu := meta.get("cpu_seconds"))
                else "."
            ),
            "",
            "True pass rate (mean; share < 0.1; share > 0.9) by checkpoint: "
            + "; ".join(
                f"step {t}: {tres['truth']['mean'][j]:.3f}, "
                f"{tres['truth']['share_below_0.1'][j]:.2f}, "
                f"{tres['truth']['share_above_0.9'][j]:.2f}"
                for j, t in enumerate(at)
            )
            + ". Noise of the truth itself (expected |error| of a "
            + f"{run['truth_samples']}-sample rate): {tres['truth']['noise_mae'][last]:.3f}.",
        ]
        full = tres["streams"]["n=8"]
        ref = full["truth_bins"][last]
        seen = full["rules"][next(iter(full["rules"]))][last]["seen"]
        lines += [
            "",
            f"### Final checkpoint (step {at[last]}), every visit with {run['rollouts']} rollouts",
            "",
            f"{seen} of {meta['num_prompts']} prompts seen. MAE and Spearman against the true "
            "per-rollout pass rate; MAE own = against what the rule estimates (pass@8 for "
            "any-correct, pass@2 for pass@2); bias = mean signed error. Unseen bin: where a "
            "prompt sits before its first visit. Churn: share of revisits since the previous "
            "checkpoint that changed the prompt's bin. Top/bottom: share of the seen prompts in "
            "bin 9 / bin 0. top<0.5, top<0.1: prompts in bin 9 whose true rate is below 0.5 / "
            "0.1; p<0.1 in bins 0-1: share of the prompts with a true rate below 0.1 that sit "
            "in bin 0 or 1. "
            "exact / ±1: bin equal to (within one of) the bin of the true rate. Entropy in bits "
            f"(max {math.log2(NUM_BINS):.2f}); the true rates' own bins: entropy "
            f"{ref['entropy']:.2f}, top {ref['top']:.2f}, bottom {ref['bottom']:.2f}, "
            f"histogram {ref['hist']}.",
            "",
            "| rule | MAE | bias | MAE own | Spearman | entropy | top | bottom | top<0.5 "
            "| top<0.1 | p<0.1 in bins 0-1 | exact | ±1 | churn | unseen bin | bins 0..9 |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, rows in full["rules"].items():
            s = rows[last]
            lines.append(
                f"| {name} | {_f(s['mae'])} | {s['bias']:+.3f} | {_f(s['mae_own'])} | "
                f"{_f(s['spearman'])} | {_f(s['entropy'], 2)} | {_f(s['top'], 2)} | "
                f"{_f(s['bottom'], 2)} | {s['top_below_0.5']} | {s['top_below_0.1']} | "
                f"{_f(s['hard_in_low_bins'], 2)} | "
                f"{_f(s['bin_exact'], 2)} | {_f(s['bin_within_1'], 2)} | {_f(s['churn'], 2)} | "
                f"{s['unseen_bin_initial']} | {' '.join(map(str, s['hist']))} |"
            )
        lines += [
            "",
            "### Tracking over the run (MAE / Spearman per checkpoint, n = 8 and random n)",
            "",
            "Prompts seen by each checkpoint: "
            + ", ".join(
                f"step {t}: {full['rules'][next(iter(full['rules']))][j]['seen']}"
                for j, t in enumerate(at)
            )
            + ".",
            "",
            "| rule | "
            + " | ".join(f"step {t}, n=8" for t in at[1:])
            + " | "
            + " | ".join(f"step {t}, n∈[2,8]" for t in at[1:])
            + " |",
            "|---|" + "---|" * (2 * (len(at) - 1)),
        ]
        rnd = tres["streams"]["random n in [2,8]"]
        for name in full["rules"]:
            cells = [
                f"{_f(full['rules'][name][j]['mae'])} / {_f(full['rules'][name][j]['spearman'], 2)}"
                for j in range(1, len(at))
            ] + [
                f"{_f(rnd['rules'][name][j]['mae'])} / {_f(rnd['rules'][name][j]['spearman'], 2)}"
                for j in range(1, len(at))
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "### Sensitivity to the rollout count (final checkpoint)",
            "",
            "Random n: every visit subsampled to n in [2, 8]; slope: change of the rate's error "
            "per extra rollout of a prompt's mean n. n = 2 -> 8: the same visits with 2 "
            "rollouts, then all 8: mean change of the rate and of the bin, share of prompts "
            "whose bin differs.",
            "",
            "| rule | MAE, random n | Spearman, random n | top<0.5, random n | slope per rollout "
            "| MAE, n=2 | rate shift 2->8 | bin shift 2->8 | bins moved |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name in full["rules"]:
            s = rnd["rules"][name][last]
            sh = tres["n_shift_2_to_8"][name]
            lines.append(
                f"| {name} | {_f(s['mae'])} | {_f(s['spearman'])} | {s['top_below_0.5']} | "
                f"{_f(s.get('error_slope_per_rollout'), 4)} | "
                f"{_f(tres['streams']['n=2']['rules'][name][last]['mae'])} | "
                f"{_f(sh['rate_shift'])} | "
                f"{_f(sh['bin_shift'], 2)} | {_f(sh['bins_moved'], 2)} |"
            )
    lines += ["", "## Memory per prompt", "", "| rule | bytes | state |", "|---|---|---|"]
    for r in results["tasks"][0]["rules"]:
        lines.append(f"| {r['name']} | {r['bytes_per_prompt']:g} | {r['note']} |")
    return "\n".join(lines) + "\n"


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    return x


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Record (or reuse) the streams, replay every rule, write the JSON and markdown results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, about a minute")
    parser.add_argument("--replay", action="store_true", help="only re-score recorded streams")
    parser.add_argument("--tasks", nargs="*", default=None, help="task names (default: all)")
    parser.add_argument("--record-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    runs = QUICK_RUNS if args.quick else FULL_RUNS
    if args.tasks:
        runs = [r for r in runs if r.name in args.tasks]
    record_dir = args.record_dir or Path(
        "runs/classifier-outcomes-quick" if args.quick else "runs/classifier-outcomes"
    )
    out = args.out or Path("runs/classifier-outcomes-quick" if args.quick else "benchmarks/results")
    wall = time.perf_counter()
    tasks = [evaluate_task(load_or_record(r, record_dir, args.replay)) for r in runs]
    import platform

    results = {
        "command": "python benchmarks/classifier_outcomes.py" + (" --quick" if args.quick else ""),
        "machine": f"{platform.machine()}, {platform.python_version()}, OMP_NUM_THREADS="
        + str(__import__("os").environ.get("OMP_NUM_THREADS", "unset")),
        "wall_s": time.perf_counter() - wall,
        "num_bins": NUM_BINS,
        "hysteresis": HYSTERESIS,
        "tasks": tasks,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "classifier_outcomes.json", json.dumps(_jsonable(results)) + "\n")
    atomic_write_text(out / "classifier_outcomes.md", markdown(results))
    print(f"wrote {out / 'classifier_outcomes.json'} and {out / 'classifier_outcomes.md'}")
    return results


if __name__ == "__main__":
    main()
