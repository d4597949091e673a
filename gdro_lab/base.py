"""What every strategy in the lab exposes, and the helpers they share.

A *strategy* decides, each step, which prompts to generate for, how many rollouts each gets and
how much each counts (its advantage weight); after generation it says which groups to train on
now. The runner (:mod:`gdro_lab.run`) drives every strategy through the same three calls::

    proposal = strategy.propose()                    # ids, rollouts, weights, bins
    generation = learner.generate(rng, proposal.ids, proposal.rollouts, ...)
    batch = strategy.observe(proposal, generation)   # what the optimiser step uses
    learner.train(*batch, mean=rollout.mean)
    row = strategy.metrics()                         # flat floats for metrics.jsonl

Every strategy spends exactly ``batch_size * rollout.mean`` rollouts per step (equal compute), with
``rollout`` the ``gdro_core.RolloutConfig`` of the simulation (:attr:`gdro_lab.run.SimConfig.rollout`).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import numpy as np
from numpy.typing import NDArray

from gdro_lab.learner import Generation

__all__ = ["EpochSampler", "Proposal", "Strategy", "TrainBatch", "bin_metrics", "last_rate"]


class Proposal(NamedTuple):
    """A strategy's decision for one step, in plan order.

    Attributes:
        ids: int64 (n,), prompt ids, unique.
        rollouts: int64 (n,), rollouts per prompt, summing to ``batch_size * rollout.mean``.
        weights: float64 (n,), advantage weights.
        bins: int64 (n,), the online classifier's bins at planning time.
        handle: strategy-private object (the controller's ``Plan`` for GDRO strategies).

    Examples:
        >>> p = Proposal(ids=np.array([3, 7]), rollouts=np.array([2, 6]),
        ...              weights=np.array([1.0, 0.5]), bins=np.array([0, 4]))
        >>> int(p.rollouts.sum()), p.weights.tolist(), p.handle
        (8, [1.0, 0.5], None)
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

    Examples:
        The fields are :meth:`~gdro_lab.learner.Learner.train`'s positional arguments, so a batch
        unpacks into it; only prompt 1, whose group was mixed (non-zero signal), moves:

        >>> from gdro_lab.learner import Learner, LearnerConfig, Population
        >>> pop = Population(np.zeros(2, np.float32), np.zeros(2, np.int8), -1.0, 1.0)
        >>> learner = Learner(LearnerConfig(num_levels=2, lr_shared=0.0, lr_own=1.0), pop)
        >>> batch = TrainBatch(ids=np.array([0, 1]), levels=np.array([1, 1]),
        ...                    signal=np.array([0.0, 0.5]), weights=np.ones(2),
        ...                    rollouts=np.array([4, 4]))
        >>> learner.train(*batch, mean=4)
        >>> learner.own.tolist()
        [0.0, 0.5]
    """

    ids: NDArray[np.int64]
    levels: NDArray[np.int64]
    signal: NDArray[np.float64]
    weights: NDArray[np.float64]
    rollouts: NDArray[np.int64]


class Strategy(Protocol):
    """The interface the runner drives (see the module docstring).

    Attributes:
        name: the strategy's name (as in :data:`gdro_lab.run.STRATEGIES`).
        num_bins: bins its metrics report.

    Examples:
        The runner's loop, here with the knapsack baseline on 16 simulated prompts (from the
        third step on it has seen each prompt once and moves rollouts to the uncertain ones):

        >>> from gdro_core import ClassifierConfig
        >>> from gdro_lab.learner import Learner, LearnerConfig
        >>> from gdro_lab.scenarios import get_scenario
        >>> from gdro_lab.strategies import KnapsackAllocation
        >>> pop = get_scenario("stationary").build(np.random.default_rng(0), 16)
        >>> learner = Learner(LearnerConfig(), pop)
        >>> strategy: Strategy = KnapsackAllocation(num_prompts=16, batch_size=8, seed=0,
        ...                                         classifier=ClassifierConfig(num_bins=5))
        >>> rng = np.random.default_rng(1)
        >>> for _ in range(3):
        ...     proposal = strategy.propose()
        ...     generation = learner.generate(rng, proposal.ids, proposal.rollouts)
        ...     batch = strategy.observe(proposal, generation)
        ...     learner.train(*batch, mean=4)
        >>> strategy.name, int(proposal.rollouts.sum()), proposal.rollouts.tolist()
        ('knapsack', 32, [4, 2, 5, 5, 4, 5, 5, 2])
        >>> strategy.metrics()["rollout/mean"]
        4.0
    """

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

    Examples:
        >>> s = EpochSampler(5, np.random.default_rng(0))
        >>> a, b = s.draw(3), s.draw(3)
        >>> a.tolist(), b.tolist()
        ([2, 4, 3], [0, 1, 4])
        >>> sorted(a.tolist() + b.tolist()[:2])  # the first epoch gives every id once
        [0, 1, 2, 3, 4]
        >>> len(set(b.tolist()))  # the batch straddling two epochs repeats none
        3
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
    bins: NDArray[np.int64], rollouts: NDArray[np.int64], num_bins: int, mean: int
) -> dict[str, float]:
    """Classifier and rollout metrics in ``GDROController.metrics()`` form.

    Args:
        bins: int64 (n,), bins of the step's prompts.
        rollouts: int64 (n,), their rollouts.
        num_bins: B.
        mean: the budget, rollouts per prompt on average (``RolloutConfig.mean``).

    Returns:
        ``classifier/share/{b}`` for every bin, ``classifier/mean_bin``,
        ``rollout/n_mean/{b}`` for the bins present and ``rollout/mean``.

    Examples:
        >>> m = bin_metrics(np.array([0, 0, 2]), np.array([2, 4, 6]), num_bins=3, mean=4)
        >>> for key, value in m.items():
        ...     print(key, round(value, 3))
        classifier/share/0 0.667
        classifier/share/1 0.0
        classifier/share/2 0.333
        classifier/mean_bin 0.667
        rollout/n_mean/0 3.0
        rollout/n_mean/2 6.0
        rollout/mean 4.0
    """
    counts = np.bincount(bins, minlength=num_bins)
    share = counts / bins.size
    out: dict[str, float] = {f"classifier/share/{b}": float(share[b]) for b in range(num_bins)}
    out["classifier/mean_bin"] = float(share @ np.arange(num_bins))
    n_sum = np.bincount(bins, weights=rollouts, minlength=num_bins)
    for b in np.flatnonzero(counts):
        out[f"rollout/n_mean/{b}"] = float(n_sum[b] / counts[b])
    out["rollout/mean"] = float(mean)
    return out


def last_rate(
    last_correct: NDArray[np.int16],
    last_total: NDArray[np.int16],
    ids: NDArray[np.int64],
    prior: float,
    smoothing: float,
) -> NDArray[np.float64]:
    """Per-prompt pass-rate estimate from the prompt's latest group.

    ``(c + smoothing) / (n + 2 * smoothing)`` for a prompt seen before, ``prior`` otherwise.

    Args:
        last_correct: int16 (N,), correct rollouts in each prompt's latest group.
        last_total: int16 (N,), size of that group (0 = never seen).
        ids: int64 (n,), the prompts to estimate.
        prior: the estimate for an unseen prompt.
        smoothing: pseudo-count added to both outcomes (0.5: Jeffreys).

    Returns:
        float64 (n,), the estimates.

    Examples:
        Prompt 0 had 3 of 4 correct, prompt 1 was never seen:

        >>> correct, total = np.array([3, 0], np.int16), np.array([4, 0], np.int16)
        >>> last_rate(correct, total, np.array([0, 1]), prior=0.5, smoothing=0.5).tolist()
        [0.7, 0.5]
        >>> last_rate(correct, total, np.array([0]), prior=0.5, smoothing=0.0).tolist()
        [0.75]
    """
    c = last_correct[ids].astype(np.float64)
    n = last_total[ids].astype(np.float64)
    est = (c + smoothing) / np.maximum(n + 2.0 * smoothing, 1e-12)
    out: NDArray[np.float64] = np.where(n > 0, est, prior)
    return out
