"""Plans: one step's decisions, and the controller's record of each plan still in flight.

A :class:`Plan` is what the caller gets from ``GDROController.plan``: read-only arrays in plan
order. The controller keeps an :class:`InFlight` record per outstanding plan: private copies of
the plan's arrays (so an edited plan is recognised as foreign), the allocation and q it used, and
the feedback received so far, prompt by prompt. Records are replaced, never mutated, so a rejected
call leaves them as they were.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from gdro_core._validation import as_int_array, fail
from gdro_core.rollout import Allocation

__all__ = ["InFlight", "Plan", "frozen", "new_record"]


def frozen(a: Any, dtype: Any) -> NDArray[Any]:
    """A read-only copy of ``a`` as ``dtype``.

    Examples:
        >>> x = frozen([1, 2], np.int64)
        >>> x.flags.writeable, x.dtype.name
        (False, 'int64')
    """
    out = np.array(a, dtype=dtype, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class Plan:
    """One step's decisions, in plan order. Arrays are read-only.

    Attributes:
        prompt_ids: int64 (n,), the batch's prompt ids.
        bins: int64 (n,), each prompt's bin at planning time.
        rollouts: int64 (n,), responses to generate per prompt; sum == mean * n.
        weights: float64 (n,), advantage multipliers (ones unless prompt mode is reweight).
        step: the number of plans whose feedback was complete when this one was made.
        sample_probs: float64 (n,), the probability that one slot of a batch drawn by
            ``sample(n)`` at planning time holds the prompt.
        rollout_probs: float64 (n,), probability of the prompt's rollout count given the budget
            (1 for deterministic allocations).
        serial: the controller's plan counter (1, 2, ...); identifies the plan in ``update``.

    Examples:
        >>> from gdro_core import GDROController, PromptConfig, RolloutConfig
        >>> ctl = GDROController(10, prompt=PromptConfig(signal="failure"),
        ...                      rollout=RolloutConfig(mode="neyman", mean=3), seed=0)
        >>> plan = ctl.plan([7, 2])
        >>> plan.rollouts.tolist(), plan.offsets.tolist(), plan.num_rollouts
        ([3, 3], [0, 3, 6], 6)
        >>> plan.rollouts_of([2]).tolist()
        [3]
    """

    prompt_ids: NDArray[np.int64]
    bins: NDArray[np.int64]
    rollouts: NDArray[np.int64]
    weights: NDArray[np.float64]
    step: int
    sample_probs: NDArray[np.float64]
    rollout_probs: NDArray[np.float64]
    serial: int = field(repr=False, default=0)

    @property
    def num_rollouts(self) -> int:
        """Total responses to generate (the length ``update`` expects for ``rewards``)."""
        return int(self.rollouts.sum())

    @property
    def offsets(self) -> NDArray[np.int64]:
        """int64 (n+1,): prompt i's rewards are ``rewards[offsets[i]:offsets[i+1]]``."""
        return np.concatenate([[0], np.cumsum(self.rollouts)]).astype(np.int64)

    def positions(self, prompt_ids: Any) -> NDArray[np.int64]:
        """int64 (k,): where each of ``prompt_ids`` sits in the plan (a ``ValueError`` if absent)."""
        ids = as_int_array("prompt_ids", prompt_ids)
        order = np.argsort(self.prompt_ids, kind="stable")
        srt = self.prompt_ids[order]
        at = np.searchsorted(srt, ids)
        ok = (at < srt.shape[0]) & (srt[np.minimum(at, srt.shape[0] - 1)] == ids)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise fail(f"prompt_ids[{i}]", f"a prompt of plan #{self.serial}", int(ids[i]))
        out: NDArray[np.int64] = order[at].astype(np.int64)
        return out

    def rollouts_of(self, prompt_ids: Any) -> NDArray[np.int64]:
        """int64 (k,): the planned rollout counts of ``prompt_ids``, in that order."""
        out: NDArray[np.int64] = self.rollouts[self.positions(prompt_ids)]
        return out

    def arrays(self) -> tuple[NDArray[Any], ...]:
        """The plan's arrays, in a fixed order (for identity checks and persistence)."""
        return (
            self.prompt_ids,
            self.bins,
            self.rollouts,
            self.weights,
            self.sample_probs,
            self.rollout_probs,
        )


class InFlight(NamedTuple):
    """The controller's record of one outstanding plan and the feedback it has received.

    Examples:
        >>> from gdro_core import GDROController, PromptConfig
        >>> ctl = GDROController(10, prompt=PromptConfig(signal="failure"), seed=0)
        >>> rec = ctl._in_flight[0] if ctl.plan([1, 2]) else None
        >>> rec.done.tolist(), rec.fed.tolist()
        ([False, False], [False, False])
    """

    plan: Plan  # the plan handed out
    ref: tuple[NDArray[Any], ...]  # private copies of the plan's arrays
    alloc: Allocation  # the rollout allocation the plan used
    q: NDArray[np.float64]  # (B,) the adversary's q the plan used
    bin_counts: NDArray[np.int64]  # (B,) the dataset's prompts per bin when the plan was made
    done: NDArray[np.bool_]  # (n,) fed back or cancelled
    fed: NDArray[np.bool_]  # (n,) fed back
    correct: NDArray[np.int64]  # (n,) correct rollouts (fed prompts)
    reward_mean: NDArray[np.float64]  # (n,) mean reward of the prompt's rollouts
    zero_adv: NDArray[np.bool_]  # (n,) all rollouts of the group got the same reward
    moved: NDArray[np.bool_]  # (n,) the feedback changed the prompt's bin
    rate: NDArray[np.float64]  # (n,) pass rate after the feedback
    flags: NDArray[np.uint8]  # (n,) outcome flags after the feedback
    losses: NDArray[np.float64]  # (n,) per-prompt loss (0 where none was given)
    has_loss: NDArray[np.bool_]  # (n,) a loss was given

    def same_plan(self, plan: Plan) -> bool:
        """Whether ``plan`` is this record's plan, unedited."""
        if (plan.step, plan.serial) != (self.plan.step, self.plan.serial):
            return False
        return all(
            isinstance(x, np.ndarray) and x.shape == y.shape and np.array_equal(x, y)
            for x, y in zip(plan.arrays(), self.ref, strict=True)
        )

    def awaiting(self) -> NDArray[np.int64]:
        """int64: the plan's prompt ids still awaiting feedback, in plan order."""
        out: NDArray[np.int64] = self.plan.prompt_ids[~self.done]
        return out


def new_record(
    plan: Plan, alloc: Allocation, q: NDArray[np.float64], bin_counts: NDArray[np.int64]
) -> InFlight:
    """The record of a plan that has received no feedback yet.

    Examples:
        >>> from gdro_core import GDROController, PromptConfig
        >>> ctl = GDROController(10, prompt=PromptConfig(signal="failure"), seed=0)
        >>> plan = ctl.plan([3, 4, 5])
        >>> new_record(plan, ctl._in_flight[0].alloc, ctl.q(), ctl.bin_counts()).awaiting().tolist()
        [3, 4, 5]
    """
    n = plan.prompt_ids.shape[0]
    return InFlight(
        plan=plan,
        ref=tuple(np.array(a, copy=True) for a in plan.arrays()),
        alloc=alloc,
        q=np.array(q, dtype=np.float64, copy=True),
        bin_counts=np.array(bin_counts, dtype=np.int64, copy=True),
        done=np.zeros(n, dtype=bool),
        fed=np.zeros(n, dtype=bool),
        correct=np.zeros(n, dtype=np.int64),
        reward_mean=np.zeros(n),
        zero_adv=np.zeros(n, dtype=bool),
        moved=np.zeros(n, dtype=bool),
        rate=np.zeros(n),
        flags=np.zeros(n, dtype=np.uint8),
        losses=np.zeros(n),
        has_loss=np.zeros(n, dtype=bool),
    )
