"""What every strategy in the lab exposes, and the helpers they share.

A *strategy* decides, each step, which prompts to generate for, how many rollouts each gets and
how much each counts (its advantage weight); after generation it says which groups to train on
now. The runner (:mod:`gdro_lab.run`) drives every strategy through the same three calls::

    proposal = strategy.propose()                    # ids, rollouts, weights, bins
    generation = learner.generate(rng, proposal.ids, proposal.rollouts, ...)
    batch = strategy.observe(proposal, generation)   # what the optimiser step uses
    learner.train(*batch)
    row = strategy.metrics()                         # flat floats for metrics.jsonl

Every strategy spends exactly ``batch_size * mean_rollouts`` rollouts per step (equal compute).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import numpy as np
from numpy.typing import NDArray

from gdro_lab.learner import Generation


class Proposal(NamedTuple):
    """A strategy's decision for one step, in plan order.

    Attributes:
        ids: int64 (n,), prompt ids, unique.
        rollouts: int64 (n,), rollouts per prompt, summing to ``batch_size * mean_rollouts``.
        weights: float64 (n,), advantage weights.
        bins: int64 (n,), the online classifier's bins at planning time.
        handle: strategy-private object (the controller's ``Plan`` for GDRO strategies).
    """

    ids: NDArray[np.int64]
    rollouts: NDArray[np.int64]
    weights: NDArray[np.float64]
    bins: NDArray[np.int64]
    handle: Any = None


class TrainBatch(NamedTuple):
    """The groups an optimiser step trains on (see :meth:`gdro_lab.learner.Learner.train`).

    Attributes:
        ids: int64 (m,), prompt ids.
        levels: int64 (m,), their levels when generated.
        signal: float64 (m,), their GRPO signals.
        weights: float64 (m,), advantage weights.
        rollouts: int64 (m,), group sizes.
    """

    ids: NDArray[np.int64]
    levels: NDArray[np.int64]
    signal: NDArray[np.float64]
    weights: NDArray[np.float64]
    rollouts: NDArray[np.int64]


class Strategy(Protocol):
    """The interface the runner drives (see the module docstring)."""

    name: str
    num_bins: int

    def propose(self) -> Proposal:
        """Decide the next step's prompts, rollouts and weights."""
        ...

    def observe(self, proposal: Proposal, generation: Generation) -> TrainBatch:
        """Take the step's generation (verdicts, signals); return the groups to train on now."""
        ...

    def metrics(self) -> dict[str, float]:
        """Flat float metrics describing the step just observed."""
        ...


class EpochSampler:
    """Reshuffled epochs without replacement; a batch straddling two epochs has no duplicate.

    Args:
        num_prompts: population size N.
        rng: the sampler's random stream.
    """

    def __init__(self, num_prompts: int, rng: np.random.Generator) -> None:
        self.num_prompts = num_prompts
        self.rng = rng
        self._perm = rng.permutation(num_prompts)
        self._pos = 0

    def draw(self, size: int) -> NDArray[np.int64]:
        """The next ``size`` ids (int64, unique; ``size <= num_prompts``)."""
        head = self._perm[self._pos : self._pos + size]
        self._pos += head.size
        if head.size == size:
            return head.astype(np.int64)
        self._perm = self.rng.permutation(self.num_prompts)
        # ids already in this batch move behind the ones we take from the new epoch
        fresh = ~np.isin(self._perm, head)
        self._perm = np.concatenate([self._perm[fresh], self._perm[~fresh]])
        need = size - head.size
        self._pos = need
        return np.concatenate([head, self._perm[:need]]).astype(np.int64)


def bin_metrics(
    bins: NDArray[np.int64], rollouts: NDArray[np.int64], num_bins: int, mean_rollouts: int
) -> dict[str, float]:
    """Classifier and rollout metrics in ``GDROController.metrics()`` form.

    Args:
        bins: int64 (n,), bins of the step's prompts.
        rollouts: int64 (n,), their rollouts.
        num_bins: B.
        mean_rollouts: the budget's mean rollouts per prompt.

    Returns:
        ``classifier/share/{b}`` for every bin, ``classifier/mean_bin``,
        ``rollout/n_mean/{b}`` for the bins present and ``rollout/budget_target``.
    """
    counts = np.bincount(bins, minlength=num_bins)
    share = counts / bins.size
    out: dict[str, float] = {f"classifier/share/{b}": float(share[b]) for b in range(num_bins)}
    out["classifier/mean_bin"] = float(share @ np.arange(num_bins))
    n_sum = np.bincount(bins, weights=rollouts, minlength=num_bins)
    for b in np.flatnonzero(counts):
        out[f"rollout/n_mean/{b}"] = float(n_sum[b] / counts[b])
    out["rollout/budget_target"] = float(mean_rollouts)
    return out


def last_rate(
    last_correct: NDArray[np.int16], last_total: NDArray[np.int16], ids: NDArray[np.int64],
    prior: float, smoothing: float
) -> NDArray[np.float64]:
    """Per-prompt pass-rate estimate from the prompt's latest group.

    ``(c + smoothing) / (n + 2 * smoothing)`` for a prompt seen before, ``prior`` otherwise.
    """
    c = last_correct[ids].astype(np.float64)
    n = last_total[ids].astype(np.float64)
    est = (c + smoothing) / np.maximum(n + 2.0 * smoothing, 1e-12)
    out: NDArray[np.float64] = np.where(n > 0, est, prior)
    return out
