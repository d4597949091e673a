"""The train sampler: the controller decides which prompts each step loads.

verl 0.9 builds its train sampler with ``create_rl_sampler``; the gdro plugin routes that call to
:class:`GDROSampler` for a :class:`~gdro_verl.dataset.GDRODataset` train set (no config needed).
verl 0.5-0.8 take a sampler class from ``data.sampler.{class_path,class_name}``:
:class:`GDROCurriculumSampler` fits that interface.

The sampler is *lazy*: each id is drawn at ``next()`` from the controller's current state, so the
feedback of step t shapes step t+1, and a restored checkpoint continues exactly (torchdata's
``StatefulDataLoader`` calls ``iter()`` again after ``load_state_dict``; an order fixed in
``__iter__`` would be redrawn).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import Sampler

from gdro_verl.runtime import GDRORuntime


class GDROSampler(Sampler[int]):
    """Yields the controller's prompt ids, one planned block (train batch) at a time.

    An epoch is ``(num_prompts // train_batch_size) * train_batch_size`` ids (whole steps; the
    controller's own epochs keep every prompt equally likely across steps). Its state (ids yielded
    this epoch and the controller's state) is saved in verl's ``data.pt`` through the dataloader's
    ``state_dict``.

    Args:
        data_source: A train :class:`~gdro_verl.dataset.GDRODataset`.

    Raises:
        TypeError: ``data_source`` is not a gdro train dataset.
    """

    def __init__(self, data_source: Any) -> None:
        runtime = getattr(data_source, "runtime", None)
        if not isinstance(runtime, GDRORuntime):
            raise TypeError(
                "GDROSampler needs a train gdro_verl.dataset.GDRODataset (data.custom_cls); got "
                f"{type(data_source).__name__}"
            )
        self.runtime = runtime
        self._yielded = 0
        self._resume = False

    def __len__(self) -> int:
        return self.runtime.epoch_length

    def __iter__(self) -> Iterator[int]:
        return self._generate()

    def _generate(self) -> Iterator[int]:
        # Runs at the first next(), not at iter(): the dataloader creates an iterator before
        # load_state_dict and another after it; only the one it advances counts.
        if self._resume:
            self._resume = False
        else:
            self._yielded = 0
        while self._yielded < len(self):
            prompt_id = self.runtime.next_prompt_id()
            self._yielded += 1
            yield prompt_id

    def state_dict(self) -> dict[str, Any]:
        """Ids yielded this epoch and the controller runtime's state."""
        return {"yielded": self._yielded, "runtime": self.runtime.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the next iterator continues the saved epoch."""
        self.runtime.load_state_dict(state["runtime"])
        self._yielded = int(state["yielded"])
        self._resume = True


def _curriculum_base() -> type:
    try:  # verl 0.5-0.8
        from verl.experimental.dataset.sampler import AbstractCurriculumSampler

        return AbstractCurriculumSampler  # type: ignore[no-any-return]
    except ImportError:  # verl >= 0.9 removed data.sampler
        return Sampler


class GDROCurriculumSampler(GDROSampler, _curriculum_base()):  # type: ignore[misc]
    """verl 0.5-0.8's ``data.sampler.class_path`` interface over :class:`GDROSampler`.

    Use ``data.sampler.class_path=pkg://gdro_verl.sampler`` and
    ``data.sampler.class_name=GDROCurriculumSampler``. These versions repeat every prompt
    ``rollout.n`` times, so per-prompt counts need ``rollout.mode=fixed`` (Prompt-GDRO only).

    Args:
        data_source: A train :class:`~gdro_verl.dataset.GDRODataset`.
        data_config: verl's ``data`` config (unused: the dataset already parsed ``data.gdro``).
    """

    def __init__(self, data_source: Any, data_config: Any = None) -> None:
        GDROSampler.__init__(self, data_source)
        mode = self.runtime.settings.rollout.mode
        if mode != "fixed":
            raise ValueError(
                "data.gdro.rollout.mode must be 'fixed' with verl's data.sampler interface "
                "(verl 0.5-0.8 give every prompt rollout.n rollouts; per-prompt counts need "
                f"verl 0.9); got {mode!r}"
            )

    def update(self, batch: Any) -> None:
        """verl's per-step curriculum hook: feed back the scored batch (once per step)."""
        self.runtime.feedback_from_batch(batch)
