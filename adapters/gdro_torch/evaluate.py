"""Held-out evaluation: mean@n and unbiased pass@k, overall and per difficulty level."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from gdro_torch.generation import generate
from gdro_torch.tasks import Split

__all__ = ["evaluate"]


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
    from gdro_core import pass_at_k

    if any(k > samples for k in ks):
        raise ValueError(f"eval pass@k needs k <= samples; got ks={ks}, samples={samples}")
    count = len(split) if num_prompts is None else min(num_prompts, len(split))
    items = [split.item(i) for i in range(count)]
    prompts = [it.prompt for _ in range(samples) for it in items]  # sample-major
    rollouts = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, seed=seed)
    correct = np.zeros(count, dtype=np.int64)
    for row, text in enumerate(rollouts.texts):
        correct[row % count] += int(split.reward(row % count, text) > 0.5)
    levels = np.array([it.level for it in items])
    groups: dict[str, np.ndarray] = {"": np.ones(count, dtype=bool)}
    for level in sorted(set(levels.tolist())):
        groups[f"/level{level}"] = levels == level
    n = np.full(count, samples, dtype=np.int64)
    out: dict[str, float] = defaultdict(float)
    for suffix, sel in groups.items():
        out[f"eval/mean@{samples}{suffix}"] = float(np.mean(correct[sel] / samples))
        for k in ks:
            out[f"eval/pass@{k}{suffix}"] = float(np.mean(pass_at_k(n[sel], correct[sel], k)))
    return dict(out)
