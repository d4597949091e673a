"""The records gdro keeps about TRL's generation batches: planned blocks and what was done.

A :class:`Block` is one planned generation batch, a :class:`BlockMatch` a generation batch matched
to its block, and a :class:`StepRecord` what gdro did to a generation batch (exposed as
``trainer.gdro.last_record``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

__all__ = ["Block", "BlockMatch", "StepRecord"]


class Block(NamedTuple):
    """One planned generation batch.

    Attributes:
        epoch: The sampler epoch (0-based) the block belongs to.
        position: The block's position in its epoch.
        prompt_ids: int64 (P,), the block's prompts in plan order.
        rollouts: int64 (P,), completions planned per prompt.
        weights: float64 (P,), Prompt-GDRO advantage multipliers per prompt.
        step: Plans whose feedback was complete when this one was made (``Plan.step``).
        serial: The plan's number (``Plan.serial``), 1 for the run's first block.
        plan: The controller's ``Plan`` while it awaits feedback; ``None`` once restored from a
            checkpoint after its feedback.

    Examples:
        >>> block = Block(epoch=0, position=3, prompt_ids=np.array([7, 2]),
        ...               rollouts=np.array([3, 2]), weights=np.ones(2), step=5, serial=6,
        ...               plan=None)
        >>> block.rows().tolist()
        [7, 7, 7, 2, 2]
    """

    epoch: int
    position: int
    prompt_ids: NDArray[np.int64]
    rollouts: NDArray[np.int64]
    weights: NDArray[np.float64]
    step: int
    serial: int
    plan: Any

    def rows(self) -> NDArray[np.int64]:
        """int64 (R,): the prompt id of each completion row, each prompt's rows together."""
        return np.repeat(self.prompt_ids, self.rollouts)


class BlockMatch(NamedTuple):
    """A generation batch matched to its planned block.

    Attributes:
        block: The block.
        group: int64 (R,), each row's position in the block's plan (its prompt's group).
        regenerated: True when TRL generates a block whose feedback was already given (after a
            resume from a checkpoint taken in the middle of the block's reuse); it is not fed back
            again.

    Examples:
        See :class:`GDRORuntime`: ``match`` returns one.

        >>> BlockMatch._fields
        ('block', 'group', 'regenerated')
    """

    block: Block
    group: NDArray[np.int64]
    regenerated: bool


class StepRecord(NamedTuple):
    """What gdro did to one generation batch (``trainer.gdro.last_record``); global rows.

    Attributes:
        step: Plans whose feedback was complete when the block was planned (``Plan.step``); TRL
            reads ahead, so consecutive blocks may share it.
        serial: The block's plan number (``Plan.serial``): 1, 2, ... in generation order.
        prompt_ids: int64 (R,), each completion's prompt id, in the batch's row order.
        group: int64 (R,), each completion's position in the plan.
        rollouts: int64 (P,), the plan's completions per prompt.
        rewards: float64 (R,), the reward fed back (NaN: unscorable).
        grpo_advantages: float32 (R,), the per-prompt group advantages (TRL's formula).
        weights: float32 (R,), the Prompt-GDRO weight of each completion's prompt.
        advantages: float32 (R,), what the loss uses: ``grpo_advantages * weights``.
        regenerated: True when the block was generated again after a resume, without feedback.

    Examples:
        Two prompts with 3 and 1 completions (a plan's counts are at least 2; this is a shape
        illustration):

        >>> rec = StepRecord(step=0, serial=1, prompt_ids=np.array([5, 5, 9, 5]),
        ...                  group=np.array([0, 0, 1, 0]), rollouts=np.array([3, 1]),
        ...                  rewards=np.array([1.0, 0.0, 1.0, 0.0]),
        ...                  grpo_advantages=np.zeros(4, np.float32),
        ...                  weights=np.ones(4, np.float32), advantages=np.zeros(4, np.float32),
        ...                  regenerated=False)
        >>> int(rec.rollouts.sum()) == rec.prompt_ids.size
        True
    """

    step: int
    serial: int
    prompt_ids: NDArray[np.int64]
    group: NDArray[np.int64]
    rollouts: NDArray[np.int64]
    rewards: NDArray[np.float64]
    grpo_advantages: NDArray[np.float32]
    weights: NDArray[np.float32]
    advantages: NDArray[np.float32]
    regenerated: bool
