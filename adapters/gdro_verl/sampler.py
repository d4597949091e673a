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

__all__ = ["GDROCurriculumSampler", "GDROSampler"]


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

    Examples:
        The sampler only needs the dataset's ``runtime``; five prompts in blocks of two make an
        epoch of four ids:

        >>> from types import SimpleNamespace
        >>> import numpy as np
        >>> from gdro_verl.config import GDROSettings
        >>> from gdro_verl.runtime import Group
        >>> settings = GDROSettings.from_data_config({"gdro": {"rollout": {"mean": 4}}})
        >>> dataset = SimpleNamespace(runtime=GDRORuntime(settings, num_prompts=5, block_size=2))
        >>> sampler = GDROSampler(dataset)
        >>> len(sampler)
        4
        >>> ids = iter(sampler)
        >>> first = [next(ids), next(ids)]
        >>> first, sampler.state_dict()["yielded"]
        ([2, 4], 2)

        The second block is drawn only after the first one is scored:

        >>> _ = dataset.runtime.feedback_groups(
        ...     {f"uid{p}": Group(p, np.array([1.0, 0.0, 0.0, 0.0]), None) for p in first}
        ... )
        >>> [next(ids), next(ids)]
        [3, 0]
        >>> GDROSampler(SimpleNamespace(runtime=None))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: GDROSampler needs a train gdro_verl.dataset.GDRODataset ...; got SimpleNamespace
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

    Raises:
        TypeError: ``data_source`` is not a gdro train dataset.
        ValueError: ``data.gdro.rollout.mode`` is not ``"fixed"``.

    Examples:
        verl calls :meth:`update` with each scored batch (here two prompts, four responses each,
        stamped with their prompt ids):

        >>> from types import SimpleNamespace
        >>> import numpy as np
        >>> import torch
        >>> from verl import DataProto
        >>> from gdro_verl.config import GDROSettings
        >>> settings = GDROSettings.from_data_config({"gdro": {"rollout": {"mean": 4}}})
        >>> dataset = SimpleNamespace(runtime=GDRORuntime(settings, num_prompts=4, block_size=2))
        >>> sampler = GDROCurriculumSampler(dataset)
        >>> ids = iter(sampler)
        >>> first = [next(ids), next(ids)]
        >>> first
        [2, 0]
        >>> batch = DataProto.from_dict(
        ...     tensors={"token_level_scores": torch.tensor([1.0, 0, 0, 0, 1, 1, 1, 0])[:, None]},
        ...     non_tensors={
        ...         "uid": np.array(["a"] * 4 + ["b"] * 4, dtype=object),
        ...         "gdro_prompt_id": np.repeat(first, 4),
        ...     },
        ... )
        >>> sampler.update(batch)
        >>> dataset.runtime.pop_metrics()["gdro/solve_rate"]
        0.5
        >>> [next(ids), next(ids)]
        [1, 3]

        Per-prompt rollout counts need verl 0.9:

        >>> raw = {"gdro": {"rollout": {"mean": 4, "mode": "bandit"}}}
        >>> bandit = GDRORuntime(GDROSettings.from_data_config(raw), num_prompts=4, block_size=2)
        >>> GDROCurriculumSampler(SimpleNamespace(runtime=bandit))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: data.gdro.rollout.mode must be 'fixed' with verl's data.sampler interface ...
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
