r"""The strategies a user would pick today instead of GDRO, written on the lab's interface.

These are deliberately *not* part of ``gdro_core``: each is a small, documented baseline that
spends the same rollouts per step as every other strategy (``batch_size * rollout.mean``, with
``rollout`` the ``gdro_core.RolloutConfig`` the controllers share), so the lab compares them with
the controllers at equal compute. All three keep a per-prompt record of the
prompt's latest group (``int16`` correct and total counts, 4 bytes per prompt) and use the
``gdro_core`` :class:`~gdro_core.DifficultyClassifier` only to *report* bins, never to decide.

* :class:`DynamicSampling` (DAPO-style): generate ``rollout.mean`` for a uniform batch, drop the
  zero-variance groups, and keep the rest in a buffer; an optimiser step runs when the buffer holds
  a full batch. At equal compute it takes fewer, fuller optimiser steps.
* :class:`VarianceSampling`: sample prompts with probability proportional to
  :math:`\max(\hat p(1-\hat p), 0.01)`, with :math:`\hat p` the pass rate of the prompt's latest
  group (0.25 for an unseen prompt), via a uniform candidate pool of ``pool_factor * batch_size``
  prompts and Gumbel top-k (Efraimidis-Spirakis) within it, so a step costs O(batch), not O(N).
* :class:`KnapsackAllocation`: uniform prompts, rollouts allocated by a value-per-cost knapsack:
  prompt :math:`i` given :math:`n` rollouts is worth
  :math:`V_i(n) = \hat p_i(1-\hat p_i)\,(1-\hat p_i^{\,n}-(1-\hat p_i)^n)` (the chance its group has
  a non-zero gradient, times the Bernoulli variance that gradient carries), each rollout costs 1;
  with :math:`\hat p_i = (c+\tfrac12)/(n+1)` (Jeffreys) from the latest group, 0.5 if unseen. The
  marginal gains are non-increasing in :math:`n`, so taking the largest marginal gains greedily,
  under ``min <= n_i <= max`` and the exact budget, is optimal.

Each takes the budget and bounds as a ``rollout`` config and bins its reports with a
``classifier`` config, the controllers' own settings types. The keywords of the previous release
(``mean_rollouts``, ``num_bins``, and the knapsack's ``min_rollouts`` and ``max_rollouts``) still
work, with a ``FutureWarning``, until the next release.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gdro_core import ClassifierConfig, DifficultyClassifier, RolloutConfig
from gdro_core._validation import check_float, check_int, fail, type_fail
from gdro_lab.base import EpochSampler, Proposal, TrainBatch, bin_metrics, last_rate
from gdro_lab.learner import Generation

__all__ = ["DynamicSampling", "KnapsackAllocation", "VarianceSampling", "knapsack_rollouts"]


_RENAMED = {"mean_rollouts": "mean", "min_rollouts": "min", "max_rollouts": "max"}


def _configs(
    owner: str, rollout: Any, classifier: Any, old: dict[str, Any]
) -> tuple[RolloutConfig, ClassifierConfig]:
    """The budget and classifier configs; until the next release, the previous release's keywords
    (``mean_rollouts``, ``num_bins``, the knapsack's ``min_rollouts``, ``max_rollouts``) build
    them instead, with a ``FutureWarning``."""
    if old:
        if set(old) - {*_RENAMED, "num_bins"} or rollout is not None or classifier is not None:
            raise TypeError(f"{owner}() takes rollout= and classifier=; got {sorted(old)}")
        warnings.warn(f"{owner}({', '.join(old)}) is deprecated", FutureWarning, stacklevel=3)
        bins = {"num_bins": old.pop("num_bins")} if "num_bins" in old else {}
        rollout = RolloutConfig(**{_RENAMED[k]: v for k, v in old.items()})
        classifier = ClassifierConfig(**bins)
    rollout = RolloutConfig() if rollout is None else rollout
    classifier = ClassifierConfig() if classifier is None else classifier
    if not isinstance(rollout, RolloutConfig):
        raise type_fail("rollout", "a gdro_core.RolloutConfig", rollout)
    if not isinstance(classifier, ClassifierConfig):
        raise type_fail("classifier", "a gdro_core.ClassifierConfig", classifier)
    return rollout, classifier


def check_k_fits(classifier: ClassifierConfig, rollout: RolloutConfig, name: str) -> None:
    """pass@k's k must fit the fewest rollouts :class:`KnapsackAllocation` may give a prompt,
    ``rollout.min`` (it allocates in ``[min, max]`` whatever ``rollout.mode`` says)."""
    k = classifier.k
    if k is not None and k > rollout.min:
        why = f"<= rollout.min ({rollout.min}): the knapsack gives a prompt min..max rollouts"
        raise fail(name, why, k)


class _History:
    """Latest-group counts per prompt plus the reporting classifier (shared by the baselines)."""

    def __init__(
        self,
        num_prompts: int,
        batch_size: int,
        rollout: RolloutConfig,
        classifier: ClassifierConfig,
        seed: int,
    ) -> None:
        check_int("batch_size", batch_size, lo=1, hi=num_prompts)
        self.num_prompts = num_prompts
        self.num_bins = classifier.num_bins
        self.batch_size = batch_size
        self.rollout = rollout
        self.rng = np.random.default_rng(seed)
        self.sampler = EpochSampler(num_prompts, self.rng)
        self.last_correct = np.zeros(num_prompts, dtype=np.int16)
        self.last_total = np.zeros(num_prompts, dtype=np.int16)
        self.classifier = DifficultyClassifier(classifier, num_prompts)
        self._metrics: dict[str, float] = {}

    def record(self, proposal: Proposal, reward: NDArray[np.float64]) -> NDArray[np.int64]:
        """Store each group's counts, update the classifier; return the correct counts (int64)."""
        gid = np.repeat(np.arange(proposal.ids.size), proposal.rollouts)
        correct = np.bincount(gid, weights=reward > 0.5, minlength=proposal.ids.size)
        correct = np.rint(correct).astype(np.int64)
        self.last_correct[proposal.ids] = correct
        self.last_total[proposal.ids] = proposal.rollouts
        self.classifier.update(proposal.ids, correct, proposal.rollouts)
        self._metrics = bin_metrics(
            proposal.bins, proposal.rollouts, self.num_bins, self.rollout.mean
        )
        return correct

    def proposal(self, ids: NDArray[np.int64], rollouts: NDArray[np.int64]) -> Proposal:
        bins = np.asarray(self.classifier.bins(ids), dtype=np.int64)
        return Proposal(ids, rollouts, np.ones(ids.size), bins)


def _select(batch: TrainBatch, index: NDArray[np.bool_] | slice) -> TrainBatch:
    """The groups of ``batch`` picked by a boolean mask or a slice."""
    return TrainBatch(
        batch.ids[index],
        batch.levels[index],
        batch.signal[index],
        batch.weights[index],
        batch.rollouts[index],
    )


def _concat(parts: list[TrainBatch]) -> TrainBatch:
    return TrainBatch(*(np.concatenate([getattr(p, f) for p in parts]) for f in TrainBatch._fields))


def _full_batch(proposal: Proposal, generation: Generation) -> TrainBatch:
    return TrainBatch(
        proposal.ids, generation.levels, generation.signal, proposal.weights, proposal.rollouts
    )


class DynamicSampling:
    """DAPO-style dynamic sampling: filter zero-variance groups, train when a batch is full.

    Args:
        num_prompts: population size N.
        batch_size: prompts generated per step, and groups per optimiser step.
        seed: seed of the prompt sampler.
        rollout: the budget, ``rollout.mean`` rollouts per prompt (default
            ``RolloutConfig()``: 4).
        classifier: the reporting classifier's settings (default ``ClassifierConfig()``: 10 bins).

    Examples:
        Each step generates 8 x 4 rollouts; only the mixed groups are kept, and the first
        optimiser step comes once 8 of them are buffered:

        >>> from gdro_lab.learner import Learner, LearnerConfig
        >>> from gdro_lab.scenarios import get_scenario
        >>> learner = Learner(LearnerConfig(),
        ...                   get_scenario("stationary").build(np.random.default_rng(0), 100))
        >>> rng = np.random.default_rng(1)
        >>> s = DynamicSampling(num_prompts=100, batch_size=8, seed=0)
        >>> for _ in range(3):
        ...     p = s.propose()
        ...     batch = s.observe(p, learner.generate(rng, p.ids, p.rollouts))
        ...     m = s.metrics()
        ...     print(int(p.rollouts.sum()), m["dapo/kept_fraction"], batch.ids.size,
        ...           m["dapo/buffer"])
        32 0.375 0 3.0
        32 0.375 0 6.0
        32 0.25 8 0.0
    """

    name = "dapo"

    def __init__(
        self,
        *,
        num_prompts: int,
        batch_size: int,
        seed: int,
        rollout: RolloutConfig | None = None,
        classifier: ClassifierConfig | None = None,
        **renamed: Any,
    ) -> None:
        r, c = _configs("DynamicSampling", rollout, classifier, renamed)
        self._h = _History(num_prompts, batch_size, r, c, seed)
        self.num_bins = self._h.num_bins
        self._buffer: list[TrainBatch] = []
        self._buffered = 0

    def propose(self) -> Proposal:
        """A uniform batch with ``rollout.mean`` each."""
        h = self._h
        ids = h.sampler.draw(h.batch_size)
        return h.proposal(ids, np.full(ids.size, h.rollout.mean, dtype=np.int64))

    def observe(self, proposal: Proposal, generation: Generation) -> TrainBatch:
        """Keep the mixed groups; return a full batch from the buffer (FIFO) or an empty one."""
        h = self._h
        correct = h.record(proposal, generation.reward)
        mixed = (correct > 0) & (correct < proposal.rollouts)
        kept = _select(_full_batch(proposal, generation), mixed)
        self._buffer.append(kept)
        self._buffered += int(mixed.sum())
        h._metrics["dapo/kept_fraction"] = float(mixed.mean())
        if self._buffered < h.batch_size:
            h._metrics["dapo/updated"] = 0.0
            h._metrics["dapo/buffer"] = float(self._buffered)
            return _select(kept, slice(0, 0))
        pool = _concat(self._buffer)
        out = _select(pool, slice(0, h.batch_size))
        rest = _select(pool, slice(h.batch_size, None))
        self._buffer = [rest]
        self._buffered = int(rest.ids.size)
        h._metrics["dapo/updated"] = 1.0
        h._metrics["dapo/buffer"] = float(self._buffered)
        return out

    def metrics(self) -> dict[str, float]:
        """Bin metrics plus ``dapo/kept_fraction``, ``dapo/updated`` and ``dapo/buffer``."""
        return dict(self._h._metrics)


class VarianceSampling:
    """Sample prompts in proportion to their estimated Bernoulli variance p(1-p).

    Args:
        num_prompts: population size N.
        batch_size: prompts per step.
        seed: seed of the sampler.
        rollout: the budget, ``rollout.mean`` rollouts per prompt (default
            ``RolloutConfig()``: 4).
        classifier: the reporting classifier's settings (default ``ClassifierConfig()``: 10 bins).
        pool_factor: candidate pool size in batches (>= 1).
        floor: smallest sampling weight, in (0, 0.25].

    Examples:
        Half the prompts are always solved (weight ``floor`` once seen), half are coin flips
        (weight 0.25); the sampler soon picks mostly the latter:

        >>> from gdro_lab.learner import Learner, LearnerConfig, Population
        >>> difficulty = np.r_[np.full(8, -10.0), np.zeros(8)].astype(np.float32)
        >>> pop = Population(difficulty, np.zeros(16, np.int8), -12.0, 4.0)
        >>> learner, rng = Learner(LearnerConfig(), pop), np.random.default_rng(1)
        >>> s = VarianceSampling(num_prompts=16, batch_size=4, seed=0,
        ...                      classifier=ClassifierConfig(num_bins=3))
        >>> picks = []
        >>> for _ in range(50):
        ...     p = s.propose()
        ...     _ = s.observe(p, learner.generate(rng, p.ids, p.rollouts))
        ...     picks += p.ids.tolist()
        >>> sum(i >= 8 for i in picks) / len(picks)  # uniform sampling would give 0.5
        0.795
    """

    name = "var-sampling"

    def __init__(
        self,
        *,
        num_prompts: int,
        batch_size: int,
        seed: int,
        rollout: RolloutConfig | None = None,
        classifier: ClassifierConfig | None = None,
        pool_factor: int = 4,
        floor: float = 0.01,
        **renamed: Any,
    ) -> None:
        r, c = _configs("VarianceSampling", rollout, classifier, renamed)
        check_int("pool_factor", pool_factor, lo=1)
        check_float("floor", floor, lo=0.0, hi=0.25, lo_open=True)
        self.pool_factor = pool_factor
        self.floor = floor
        self._h = _History(num_prompts, batch_size, r, c, seed)
        self.num_bins = self._h.num_bins

    def propose(self) -> Proposal:
        """Gumbel top-k of log-weights over a uniform candidate pool."""
        h = self._h
        pool = h.sampler.draw(min(h.num_prompts, self.pool_factor * h.batch_size))
        p = last_rate(h.last_correct, h.last_total, pool, prior=0.5, smoothing=0.0)
        key = np.log(np.maximum(p * (1.0 - p), self.floor)) + h.rng.gumbel(size=pool.size)
        take = np.sort(np.argsort(-key, kind="stable")[: h.batch_size])
        ids = pool[take]
        return h.proposal(ids, np.full(ids.size, h.rollout.mean, dtype=np.int64))

    def observe(self, proposal: Proposal, generation: Generation) -> TrainBatch:
        """Record the groups; train on all of them."""
        self._h.record(proposal, generation.reward)
        return _full_batch(proposal, generation)

    def metrics(self) -> dict[str, float]:
        """Bin metrics."""
        return dict(self._h._metrics)


def knapsack_rollouts(
    p: NDArray[np.float64], budget: int, low: int, high: int
) -> NDArray[np.int64]:
    """Greedy value-per-cost allocation of ``budget`` rollouts (optimal for concave values).

    Args:
        p: float64 (n,), estimated pass rates in [0, 1].
        budget: total rollouts, ``low * n <= budget <= high * n``.
        low: fewest rollouts per prompt (>= 1).
        high: most rollouts per prompt.

    Returns:
        int64 (n,), rollouts in [low, high] summing to ``budget``. Ties go to the earlier prompt.

    Raises:
        ValueError: ``budget`` outside ``[low * n, high * n]``.

    Examples:
        A prompt that always fails or always succeeds is worth nothing beyond ``low``:

        >>> knapsack_rollouts(np.array([0.0, 0.5, 1.0]), 12, 2, 12).tolist()
        [2, 8, 2]
        >>> knapsack_rollouts(np.array([0.9, 0.5, 0.3]), 12, 2, 12).tolist()
        [2, 5, 5]
        >>> knapsack_rollouts(np.array([0.5, 0.5]), 30, 2, 12)
        Traceback (most recent call last):
            ...
        ValueError: budget must be in [4, 24] for 2 prompts; got 30
    """
    n = p.size
    if not low * n <= budget <= high * n:
        raise ValueError(f"budget must be in [{low * n}, {high * n}] for {n} prompts; got {budget}")
    k = np.arange(low, high)[None, :]  # the n of each marginal step n -> n + 1
    pp, qq = p[:, None], 1.0 - p[:, None]
    gain = pp * qq * (pp**k * qq + qq**k * pp)  # V(n+1) - V(n), non-increasing in n
    extra = budget - low * n
    order = np.argsort(-gain.ravel(), kind="stable")[:extra]
    out: NDArray[np.int64] = low + np.bincount(order // (high - low), minlength=n).astype(np.int64)
    return out


class KnapsackAllocation:
    """Uniform prompts; rollouts by a value-per-cost knapsack on the estimated pass rate.

    Args:
        num_prompts: population size N.
        batch_size: prompts per step.
        seed: seed of the sampler.
        rollout: the budget and bounds: ``rollout.mean`` rollouts per prompt on average, each
            prompt in ``[rollout.min, rollout.max]`` (default ``RolloutConfig()``: 4 in [2, 12]).
        classifier: the reporting classifier's settings (default ``ClassifierConfig()``: 10 bins).

    Examples:
        Four easy prompts and four coin flips; after one step of 4 rollouts each, the next epoch
        (the same 8 prompts) moves rollouts from the prompts that solved all 4 to the others:

        >>> from gdro_lab.learner import Learner, LearnerConfig, Population
        >>> difficulty = np.r_[np.full(4, -10.0), np.zeros(4)].astype(np.float32)
        >>> pop = Population(difficulty, np.zeros(8, np.int8), -12.0, 4.0)
        >>> learner, rng = Learner(LearnerConfig(), pop), np.random.default_rng(1)
        >>> s = KnapsackAllocation(num_prompts=8, batch_size=8, seed=0,
        ...                        classifier=ClassifierConfig(num_bins=3))
        >>> p = s.propose()
        >>> g = learner.generate(rng, p.ids, p.rollouts)
        >>> _ = s.observe(p, g)
        >>> g.reward.reshape(8, 4).sum(axis=1)[np.argsort(p.ids)].tolist()  # correct, by id
        [4.0, 4.0, 4.0, 4.0, 3.0, 4.0, 3.0, 2.0]
        >>> p = s.propose()
        >>> p.rollouts[np.argsort(p.ids)].tolist(), int(p.rollouts.sum())
        ([3, 3, 3, 3, 6, 3, 6, 5], 32)
    """

    name = "knapsack"

    def __init__(
        self,
        *,
        num_prompts: int,
        batch_size: int,
        seed: int,
        rollout: RolloutConfig | None = None,
        classifier: ClassifierConfig | None = None,
        **renamed: Any,
    ) -> None:
        r, c = _configs("KnapsackAllocation", rollout, classifier, renamed)
        check_k_fits(c, r, "classifier.k")
        self._h = _History(num_prompts, batch_size, r, c, seed)
        self.num_bins = self._h.num_bins

    def propose(self) -> Proposal:
        """A uniform batch; rollouts from :func:`knapsack_rollouts`."""
        h = self._h
        ids = h.sampler.draw(h.batch_size)
        p = last_rate(h.last_correct, h.last_total, ids, prior=0.5, smoothing=0.5)
        r = h.rollout
        n = knapsack_rollouts(p, r.mean * ids.size, r.min, r.max)
        return h.proposal(ids, n)

    def observe(self, proposal: Proposal, generation: Generation) -> TrainBatch:
        """Record the groups; train on all of them."""
        self._h.record(proposal, generation.reward)
        return _full_batch(proposal, generation)

    def metrics(self) -> dict[str, float]:
        """Bin metrics."""
        return dict(self._h._metrics)
