"""Draw the figures of the docs that come from no run: ``python docs/make_figures.py``."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def static_uniformity(out: Path) -> None:
    """Where uniform GRPO's rollouts go on a heavy-tailed population, bin by bin."""
    rng = np.random.default_rng(0)
    p = rng.beta(0.35, 0.5, size=100_000)  # per-prompt pass rates: a solved core and a hard tail
    bins = np.minimum((p * 10).astype(int), 9)
    n = 4
    useful = 1 - p**n - (1 - p) ** n  # P(a group of 4 has mixed rewards, i.e. a nonzero gradient)
    share = np.bincount(bins, minlength=10) / p.size
    wasted = np.bincount(bins, weights=1 - useful, minlength=10) / p.size
    x = np.arange(10)
    fig, ax = plt.subplots(figsize=(7.5, 3.4), dpi=120)
    ax.bar(x, share, color="#9ecae1", label="share of prompts = share of GRPO rollouts")
    ax.bar(x, wasted, color="#de2d26", alpha=0.8, label="rollouts in all-equal groups (zero advantage)")
    ax.set_xticks(x, [f"{b / 10:.1f}-{(b + 1) / 10:.1f}" for b in x], rotation=30, fontsize=8)
    ax.set_xlabel("pass-rate bin (bin 0 = hardest)")
    ax.set_ylabel("fraction of all rollouts")
    ax.set_title(f"Uniform GRPO, n = {n}: {wasted.sum():.0%} of rollouts carry no gradient", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


if __name__ == "__main__":
    static_uniformity(Path(__file__).parent / "img" / "static-uniformity.png")
