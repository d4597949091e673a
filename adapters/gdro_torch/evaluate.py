"""Held-out evaluation: mean@n and unbiased pass@k, overall and per difficulty level.

:func:`sample_counts` samples ``n`` completions per held-out prompt and keeps the number correct
per prompt (:class:`EvalCounts`); :func:`score_counts` turns counts into the reported metrics;
:func:`evaluate` does both. :func:`paired_change` compares two evaluations of the same prompts
(a run's start and end): the mean per-prompt difference with a 95% t-interval over prompts, so a
gain is reported with its uncertainty.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gdro_torch.generation import generate
from gdro_torch.tasks import Split

__all__ = ["EvalCounts", "evaluate", "paired_change", "sample_counts", "score_counts"]


@dataclass(frozen=True, eq=False)
class EvalCounts:
    """Per-prompt outcome of one evaluation.

    Attributes:
        correct: int64 (P,) correct completions of each held-out prompt, in split order.
        levels: int64 (P,) each prompt's difficulty level.
        samples: Completions per prompt, n.

    Examples:
        >>> counts = EvalCounts(np.array([8, 3, 0]), np.array([1, 2, 3]), samples=8)
        >>> again = EvalCounts.from_json(counts.to_json())
        >>> again.correct.tolist(), again.levels.tolist(), again.samples
        ([8, 3, 0], [1, 2, 3], 8)
    """

    correct: NDArray[np.int64]
    levels: NDArray[np.int64]
    samples: int

    def to_json(self) -> str:
        """The counts as a JSON document (lists of ints)."""
        return json.dumps(
            {
                "samples": self.samples,
                "correct": self.correct.tolist(),
                "levels": self.levels.tolist(),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> EvalCounts:
        """Read what :meth:`to_json` wrote."""
        d = json.loads(text)
        return cls(
            np.asarray(d["correct"], dtype=np.int64),
            np.asarray(d["levels"], dtype=np.int64),
            int(d["samples"]),
        )

    @classmethod
    def load(cls, path: str | Path) -> EvalCounts:
        """Read a file :meth:`to_json` output was written to."""
        return cls.from_json(Path(path).read_text())


def sample_counts(
    model: Any,
    tokenizer: Any,
    split: Split,
    *,
    samples: int = 8,
    max_new_tokens: int,
    seed: int,
    num_prompts: int | None = None,
) -> EvalCounts:
    """Sample ``samples`` completions for each held-out prompt and count the correct ones.

    Args:
        model: The policy.
        tokenizer: Its tokenizer.
        split: The held-out split.
        samples: Completions per prompt, n.
        max_new_tokens: Longest completion.
        seed: Sampling seed.
        num_prompts: Evaluate the first this many prompts (default: all).

    Returns:
        :class:`EvalCounts`.

    Examples:
        >>> from gdro_torch.model import build_embedded
        >>> from gdro_torch.tasks import load_task
        >>> model, tok = build_embedded("tiny-llama-0.1m", seed=0)
        >>> split = load_task("addition:max_digits=2,eval_size=6").eval
        >>> counts = sample_counts(model, tok, split, max_new_tokens=3, seed=0)
        >>> counts.correct.tolist(), counts.levels.tolist(), counts.samples  # untrained: none
        ([0, 0, 0, 0, 0, 0], [2, 2, 2, 2, 1, 2], 8)
    """
    count = len(split) if num_prompts is None else min(num_prompts, len(split))
    items = [split.item(i) for i in range(count)]
    prompts = [it.prompt for _ in range(samples) for it in items]  # sample-major
    rollouts = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, seed=seed)
    correct = np.zeros(count, dtype=np.int64)
    for row, text in enumerate(rollouts.texts):
        correct[row % count] += int(split.reward(row % count, text) > 0.5)
    return EvalCounts(correct, np.array([it.level for it in items], dtype=np.int64), samples)


def _per_prompt(counts: EvalCounts, metric: str) -> NDArray[np.float64]:
    from gdro_core import pass_at_k

    if metric == f"mean@{counts.samples}":
        return counts.correct / counts.samples
    name, _, k = metric.partition("@")
    if name != "pass" or not k.isdigit() or not 1 <= int(k) <= counts.samples:
        raise ValueError(
            f"metric must be mean@{counts.samples} or pass@k with 1 <= k <= {counts.samples}; "
            f"got {metric!r}"
        )
    n = np.full(counts.correct.shape, counts.samples, dtype=np.int64)
    return np.asarray(pass_at_k(n, counts.correct, int(k)), dtype=np.float64)


def _check_ks(ks: tuple[int, ...], samples: int) -> None:
    if any(k > samples for k in ks):
        raise ValueError(f"eval pass@k needs k <= samples; got ks={ks}, samples={samples}")


def score_counts(counts: EvalCounts, ks: tuple[int, ...] = (1, 8)) -> dict[str, float]:
    """The reported metrics of an evaluation, overall and per level.

    Args:
        counts: Per-prompt counts.
        ks: The k of pass@k; each must be <= ``counts.samples``.

    Returns:
        ``eval/mean@{n}`` (mean success rate) and ``eval/pass@{k}`` (unbiased estimator
        1 - C(n-c, k)/C(n, k), averaged over prompts), then the same per level under
        ``.../level{d}``.

    Raises:
        ValueError: If a k exceeds ``counts.samples``.

    Examples:
        >>> counts = EvalCounts(np.array([8, 4, 0, 1]), np.array([1, 1, 2, 2]), samples=8)
        >>> out = score_counts(counts, ks=(1, 8))
        >>> round(out["eval/mean@8"], 4), out["eval/pass@8"], out["eval/pass@8/level2"]
        (0.4062, 0.75, 0.5)
    """
    _check_ks(ks, counts.samples)
    groups: dict[str, NDArray[np.bool_]] = {"": np.ones(counts.correct.shape, dtype=bool)}
    for level in sorted(set(counts.levels.tolist())):
        groups[f"/level{level}"] = counts.levels == level
    metrics = [f"mean@{counts.samples}"] + [f"pass@{k}" for k in ks]
    values = {m: _per_prompt(counts, m) for m in metrics}
    out: dict[str, float] = {}
    for suffix, sel in groups.items():
        for m in metrics:
            out[f"eval/{m}{suffix}"] = float(np.mean(values[m][sel]))
    return out


def paired_change(
    start: EvalCounts, end: EvalCounts, metric: str = "pass@8"
) -> tuple[float, float]:
    """Change of a metric between two evaluations of the same prompts, with its uncertainty.

    The per-prompt differences are the paired observations; the interval is the 95% Student-t
    interval of their mean, so it covers both which prompts were drawn and the sampling noise of
    each prompt's n completions.

    Args:
        start: Counts of the first evaluation.
        end: Counts of the second, on the same prompts with the same n.
        metric: ``mean@{n}`` or ``pass@{k}`` (k <= n).

    Returns:
        ``(mean_change, half_width)``: the change is ``mean_change +- half_width``.

    Raises:
        ValueError: If the evaluations cover different prompts or n, or ``metric`` is unknown.

    Examples:
        >>> a = EvalCounts(np.array([0, 2, 8, 1]), np.array([1, 1, 2, 2]), samples=8)
        >>> b = EvalCounts(np.array([4, 6, 8, 1]), np.array([1, 1, 2, 2]), samples=8)
        >>> change, half = paired_change(a, b, "mean@8"); round(change, 3), round(half, 3)
        (0.25, 0.459)
        >>> paired_change(a, b, "pass@9")
        Traceback (most recent call last):
        ...
        ValueError: metric must be mean@8 or pass@k with 1 <= k <= 8; got 'pass@9'
    """
    from gdro_core.stats import mean_ci

    if start.samples != end.samples or not np.array_equal(start.levels, end.levels):
        raise ValueError(
            "paired_change needs two evaluations of the same prompts with the same samples; "
            f"got {start.correct.size} prompts x {start.samples} and "
            f"{end.correct.size} prompts x {end.samples}"
        )
    return mean_ci(_per_prompt(end, metric) - _per_prompt(start, metric))


def evaluate(
    model: Any,
    tokenizer: Any,
    split: Split,
    *,
    samples: int = 8,
    ks: tuple[int, ...] = (1, 8),
    max_new_tokens: int,
    seed: int,
    num_prompts: int | None = None,
) -> dict[str, float]:
    """Sample ``samples`` completions for each held-out prompt and score them.

    Args:
        model: The policy.
        tokenizer: Its tokenizer.
        split: The held-out split.
        samples: Completions per prompt, n.
        ks: The k of pass@k; each must be <= ``samples``.
        max_new_tokens: Longest completion.
        seed: Sampling seed.
        num_prompts: Evaluate the first this many prompts (default: all).

    Returns:
        ``eval/mean@{n}`` (mean success rate) and ``eval/pass@{k}`` (unbiased estimator
        1 - C(n-c, k)/C(n, k), averaged over prompts), then the same per level under
        ``.../level{d}``.

    Raises:
        ValueError: If a k exceeds ``samples``.

    Examples:
        The untrained 0.1 M model on six held-out sums (levels 1 and 2) solves none of them:

        >>> from gdro_torch.model import build_embedded
        >>> from gdro_torch.tasks import load_task
        >>> model, tok = build_embedded("tiny-llama-0.1m", seed=0)
        >>> split = load_task("addition:max_digits=2,eval_size=6").eval
        >>> sorted({split.item(i).level for i in range(len(split))})
        [1, 2]
        >>> out = evaluate(model, tok, split, max_new_tokens=3, seed=0)
        >>> for key, value in out.items():
        ...     print(f"{key:20s} {value:.3f}")
        eval/mean@8          0.000
        eval/pass@1          0.000
        eval/pass@8          0.000
        eval/mean@8/level1   0.000
        eval/pass@1/level1   0.000
        eval/pass@8/level1   0.000
        eval/mean@8/level2   0.000
        eval/pass@1/level2   0.000
        eval/pass@8/level2   0.000
        >>> evaluate(model, tok, split, samples=4, max_new_tokens=3, seed=0)
        Traceback (most recent call last):
        ...
        ValueError: eval pass@k needs k <= samples; got ks=(1, 8), samples=4
    """
    _check_ks(ks, samples)  # before sampling: a bad k costs no compute
    counts = sample_counts(
        model,
        tokenizer,
        split,
        samples=samples,
        max_new_tokens=max_new_tokens,
        seed=seed,
        num_prompts=num_prompts,
    )
    return score_counts(counts, ks)
