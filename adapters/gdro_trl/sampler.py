"""The train sampler: the controller decides which prompts TRL generates for, and how often.

TRL's ``RepeatSampler`` yields each prompt of a generation batch ``num_generations`` times in a
row, and the whole batch ``num_iterations * steps_per_generation`` times (the dataloader reads a
batch once per micro-step; TRL generates on the first read and reuses the completions after).
:class:`GDROSampler` keeps that shape, but each batch is a block planned by the controller, and
prompt i is yielded ``n_i`` times, its planned number of completions. The batch size is unchanged:
the counts sum to ``num_generations`` per prompt on average, exactly.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Sampler

from gdro_trl.runtime import GDRORuntime

__all__ = ["GDROSampler"]


class GDROSampler(Sampler[int]):
    """Yields the rows of the controller's planned blocks, one epoch per iteration.

    Blocks are planned lazily, when the dataloader first reads them, so the feedback of earlier
    blocks shapes later ones. An epoch is ``num_prompts // prompts_per_block`` blocks, as with
    TRL's sampler; the controller's own epochs keep every prompt equally likely across them.

    Args:
        runtime: The run's :class:`~gdro_trl.runtime.GDRORuntime`.

    Examples:
        Two prompts per block, two completions each on average, every block read twice:

        >>> from gdro_trl.config import GDROConfig
        >>> from gdro_trl.layout import TRLLayout
        >>> layout = TRLLayout(prompts=2, mean=2, repeat=2, blocks_per_epoch=3, max_in_flight=1)
        >>> sampler = GDROSampler(GDRORuntime(GDROConfig(), layout, num_prompts=6))
        >>> len(sampler)
        24
        >>> rows = iter(sampler)
        >>> [next(rows) for _ in range(8)]  # block 0: prompts 3 and 2, twice
        [3, 3, 2, 2, 3, 3, 2, 2]
    """

    def __init__(self, runtime: GDRORuntime) -> None:
        if not isinstance(runtime, GDRORuntime):
            raise TypeError(
                "GDROSampler needs a gdro_trl.runtime.GDRORuntime; got "
                f"{runtime!r} of type {type(runtime).__name__}"
            )
        self.runtime = runtime

    def __len__(self) -> int:
        return self.runtime.layout.epoch_length

    def __iter__(self) -> Iterator[int]:
        return self.runtime.iter_epoch()
