r"""Variance-weighted prompt sampling: a peer strategy to Prompt-GDRO, in the torch loop.

A user who does not adopt GDRO may instead favour prompts whose groups are likely to carry a
gradient. :class:`VarianceSampler` draws prompt :math:`i` with a weight
:math:`\max(\hat p_i(1-\hat p_i),\ 0.01)`, where :math:`\hat p_i` is the pass rate of the
prompt's latest group (a prompt never seen has weight 0.25, that of :math:`\hat p = 0.5`). It
is the simulation lab's ``VarianceSampling`` (``gdro_lab.strategies``), step for step: a
candidate pool of ``pool_factor * batch_size`` prompts from reshuffled epochs, then Gumbel
top-k of the log-weights within the pool, so a step costs O(batch), not O(N). Every prompt gets
the same number of rollouts, so a run spends exactly the rollouts of a GRPO run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

__all__ = ["VarianceSampler"]


class VarianceSampler:
    """Sample prompts in proportion to the Bernoulli variance of their latest group.

    Args:
        num_prompts: Training prompts N; ids are ``0..N-1``.
        seed: Seed of the sampler's own random stream (anything ``np.random.default_rng``
            takes; ``gdro train`` passes ``[seed, 1]``, a stream apart from the controller's).
        pool_factor: Candidate pool size, in batches (>= 1).
        floor: Smallest weight, in (0, 0.25].

    Examples:
        Prompts 0-7 always fail and prompts 8-15 are solved half the time; after a first pass
        over all of them, the sampler mostly picks the second half:

        >>> s = VarianceSampler(16, seed=0)
        >>> picks = []
        >>> for step in range(40):
        ...     ids = s.sample(4)
        ...     correct = np.where(ids >= 8, 2, 0)  # 2 of 4 rollouts correct, or none
        ...     s.observe(ids, correct, np.full(4, 4))
        ...     picks += ids.tolist() if step >= 4 else []
        >>> round(sum(i >= 8 for i in picks) / len(picks), 2)  # uniform sampling gives 0.5
        0.94

        Its state resumes bit-exactly (a checkpoint holds it):

        >>> again = VarianceSampler(16, seed=1)
        >>> again.load_state_dict(s.state_dict())
        >>> again.sample(4).tolist() == s.sample(4).tolist()
        True
        >>> s.sample(17)
        Traceback (most recent call last):
        ...
        ValueError: batch_size must be an integer in [1, 16]; got 17
    """

    def __init__(
        self,
        num_prompts: int,
        *,
        seed: int | Sequence[int],
        pool_factor: int = 4,
        floor: float = 0.01,
    ) -> None:
        if isinstance(num_prompts, bool) or not isinstance(num_prompts, int) or num_prompts < 1:
            raise ValueError(f"num_prompts must be an integer >= 1; got {num_prompts!r}")
        if isinstance(pool_factor, bool) or not isinstance(pool_factor, int) or pool_factor < 1:
            raise ValueError(f"pool_factor must be an integer >= 1; got {pool_factor!r}")
        if not 0.0 < float(floor) <= 0.25:
            raise ValueError(f"floor must be in (0, 0.25]; got {floor!r}")
        self.num_prompts = num_prompts
        self.pool_factor = pool_factor
        self.floor = float(floor)
        self._rng = np.random.default_rng(seed)
        self._perm = self._rng.permutation(num_prompts)
        self._pos = 0
        self.last_correct = np.zeros(num_prompts, dtype=np.int64)
        self.last_total = np.zeros(num_prompts, dtype=np.int64)

    def _draw(self, size: int) -> NDArray[np.int64]:
        """The next ``size`` ids of reshuffled epochs (a batch across two epochs repeats none)."""
        head = self._perm[self._pos : self._pos + size]
        self._pos += head.size
        if head.size == size:
            return head.astype(np.int64)
        self._perm = self._rng.permutation(self.num_prompts)
        fresh = ~np.isin(self._perm, head)
        self._perm = np.concatenate([self._perm[fresh], self._perm[~fresh]])
        self._pos = size - head.size
        return np.concatenate([head, self._perm[: self._pos]]).astype(np.int64)

    def weights(self, ids: NDArray[np.int64]) -> NDArray[np.float64]:
        """float64 (n,): each prompt's weight ``max(p(1-p), floor)`` (0.25 if never seen)."""
        total = self.last_total[ids].astype(np.float64)
        p = np.where(total > 0, self.last_correct[ids] / np.maximum(total, 1.0), 0.5)
        out: NDArray[np.float64] = np.maximum(p * (1.0 - p), self.floor)
        return out

    def sample(self, batch_size: int) -> NDArray[np.int64]:
        """The next batch: Gumbel top-k of the log-weights over a uniform candidate pool.

        Returns:
            int64 (batch_size,) distinct prompt ids, in pool order.

        Raises:
            ValueError: If ``batch_size`` is not in ``[1, num_prompts]``.
        """
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, (int, np.integer))
            or not 1 <= batch_size <= self.num_prompts
        ):
            raise ValueError(
                f"batch_size must be an integer in [1, {self.num_prompts}]; got {batch_size!r}"
            )
        pool = self._draw(min(self.num_prompts, self.pool_factor * int(batch_size)))
        key = np.log(self.weights(pool)) + self._rng.gumbel(size=pool.size)
        take = np.sort(np.argsort(-key, kind="stable")[: int(batch_size)])
        return pool[take]

    def observe(self, ids: Any, correct: Any, total: Any) -> None:
        """Record each prompt's latest group: ``correct`` of ``total`` rollouts.

        Raises:
            ValueError: If the arrays differ in length, an id is out of range, or a count is
                negative or above its total.
        """
        ids_a = np.asarray(ids, dtype=np.int64)
        c = np.asarray(correct, dtype=np.int64)
        n = np.asarray(total, dtype=np.int64)
        if not ids_a.shape == c.shape == n.shape or ids_a.ndim != 1:
            raise ValueError(
                f"ids, correct and total must be 1-D arrays of one length; got shapes "
                f"{ids_a.shape}, {c.shape}, {n.shape}"
            )
        if ids_a.size and (ids_a.min() < 0 or ids_a.max() >= self.num_prompts):
            raise ValueError(f"ids must be in [0, {self.num_prompts}); got {ids_a.tolist()}")
        if np.any(n < 1) or np.any(c < 0) or np.any(c > n):
            raise ValueError("correct must be in [0, total] and total >= 1 for every prompt")
        self.last_correct[ids_a] = c
        self.last_total[ids_a] = n

    def state_dict(self) -> dict[str, Any]:
        """The sampler's state (tensors, ints and a JSON string: loadable with
        ``torch.load(..., weights_only=True)``)."""
        return {
            "perm": torch.from_numpy(self._perm.astype(np.int64)),
            "pos": int(self._pos),
            "last_correct": torch.from_numpy(self.last_correct.copy()),
            "last_total": torch.from_numpy(self.last_total.copy()),
            "rng": json.dumps(self._rng.bit_generator.state),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; the next draws repeat the original's.

        Raises:
            ValueError: If the state is for another number of prompts.
        """
        perm = state["perm"].numpy().astype(np.int64)
        if perm.size != self.num_prompts:
            raise ValueError(f"sampler state is for {perm.size} prompts, not {self.num_prompts}")
        self._perm = perm
        self._pos = int(state["pos"])
        self.last_correct = state["last_correct"].numpy().astype(np.int64).copy()
        self.last_total = state["last_total"].numpy().astype(np.int64).copy()
        self._rng.bit_generator.state = json.loads(state["rng"])
