"""How TRL's batches map onto gdro's planned blocks, and the TRL settings gdro cannot work with.

:func:`check_trl_args` runs before any model is built: it rejects the ``GRPOConfig`` settings
under which gdro's plans could not reach generation intact (see ``docs/trl.md``) and returns the
run's :class:`TRLLayout`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from gdro_core.passk import check_ks
from gdro_trl.config import _FEWEST, GDROConfig

__all__ = ["TRLLayout", "check_trl_args"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TRLLayout:
    """How TRL's batches map onto gdro's planned blocks.

    One block is one TRL generation batch: ``prompts`` prompts whose completions sum to
    ``rows = prompts * mean`` (= ``generation_batch_size``). The sampler repeats a block's rows
    ``repeat = num_iterations * steps_per_generation`` times, as TRL's ``RepeatSampler`` does.

    Attributes:
        prompts: Prompts per block (``generation_batch_size // num_generations``).
        mean: Mean completions per prompt (``num_generations``).
        repeat: Times the dataloader reads a block (``num_iterations * steps_per_generation``).
        blocks_per_epoch: Whole blocks in one pass over the train set.
        max_in_flight: Blocks planned but not yet scored at the worst moment: TRL reads the
            ``gradient_accumulation_steps`` batches of an optimizer step ahead, plus one batch
            (accelerate's end-of-data look-ahead).

    Examples:
        TRL's defaults (``steps_per_generation = gradient_accumulation_steps``) keep two blocks
        planned; two iterations per generation keep one:

        >>> TRLLayout.from_sizes(num_prompts=64, generation_batch_size=16, num_generations=4,
        ...                      steps_per_generation=2, num_iterations=1,
        ...                      gradient_accumulation_steps=2).max_in_flight
        2
        >>> TRLLayout.from_sizes(num_prompts=64, generation_batch_size=16, num_generations=4,
        ...                      steps_per_generation=2, num_iterations=2,
        ...                      gradient_accumulation_steps=2)  # doctest: +NORMALIZE_WHITESPACE
        TRLLayout(prompts=4, mean=4, repeat=4, blocks_per_epoch=16, max_in_flight=1)
    """

    prompts: int
    mean: int
    repeat: int
    blocks_per_epoch: int
    max_in_flight: int

    @property
    def rows(self) -> int:
        """Completions per block (TRL's ``generation_batch_size``)."""
        return self.prompts * self.mean

    @property
    def epoch_length(self) -> int:
        """Dataset indices the sampler yields per epoch."""
        return self.blocks_per_epoch * self.rows * self.repeat

    @classmethod
    def from_sizes(
        cls,
        *,
        num_prompts: int,
        generation_batch_size: int,
        num_generations: int,
        steps_per_generation: int,
        num_iterations: int,
        gradient_accumulation_steps: int,
    ) -> TRLLayout:
        """The layout of a run from its sizes (see the class docstring)."""
        prompts = generation_batch_size // num_generations
        every = steps_per_generation * num_iterations  # micro-batches per block
        accum = gradient_accumulation_steps
        # At the start of optimizer step s, TRL has read micro-batches up to (s + 1) * accum; the
        # blocks read but not generated are ceil(s*accum/every) .. floor((s+1)*accum/every).
        worst = max(
            ((s + 1) * accum) // every - math.ceil(s * accum / every) + 1
            for s in range(every * accum // math.gcd(every, accum) + 1)
        )
        return cls(
            prompts=prompts,
            mean=num_generations,
            repeat=every,
            blocks_per_epoch=num_prompts // prompts,
            max_in_flight=max(1, worst),
        )


def check_trl_args(args: Any, config: GDROConfig, train_dataset: Any) -> TRLLayout:
    """Fail fast on TRL settings gdro cannot work with; return the run's block layout.

    Args:
        args: The run's ``trl.GRPOConfig`` (after its ``__post_init__``).
        config: gdro's settings.
        train_dataset: The train set given to the trainer.

    Returns:
        The :class:`TRLLayout`.

    Raises:
        ValueError: naming the setting, what gdro needs and the value found.
        TypeError: the train set is not a map-style ``datasets.Dataset``.

    Examples:
        >>> from datasets import Dataset
        >>> from trl import GRPOConfig
        >>> args = GRPOConfig(output_dir="/tmp/gdro-doc", per_device_train_batch_size=8,
        ...                   num_generations=4, use_cpu=True, report_to=[])
        >>> data = Dataset.from_dict({"prompt": [f"{i}+1=" for i in range(32)]})
        >>> check_trl_args(args, GDROConfig(), data).prompts
        2
        >>> args.dataloader_num_workers = 2
        >>> check_trl_args(args, GDROConfig(), data)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: GRPOConfig.dataloader_num_workers must be 0 with gdro: ...; got 2

        TRL's defaults (8 completions per device, ``num_generations=8``) make a generation batch
        of one prompt, where reweighting and splitting the budget do nothing:

        >>> args = GRPOConfig(output_dir="/tmp/gdro-doc", use_cpu=True, report_to=[])
        >>> check_trl_args(args, GDROConfig(), data)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: GRPOConfig.generation_batch_size // num_generations (prompts per generation batch) must be >= 2 with Prompt-GDRO reweight: ...
    """
    from datasets import Dataset

    if train_dataset is None or not isinstance(train_dataset, Dataset):
        raise TypeError(
            "train_dataset must be a map-style datasets.Dataset with gdro: the controller draws "
            "prompts by their row index (the stable prompt id), which an IterableDataset or an "
            "environment-only run does not have; got "
            f"{type(train_dataset).__name__}"
        )
    rollout = config.rollout_for(int(args.num_generations))
    check_ks("GDROConfig.pass_at_k", config.pass_at_k, most=rollout.fewest, why=_FEWEST)
    if int(args.dataloader_num_workers) != 0:
        raise ValueError(
            "GRPOConfig.dataloader_num_workers must be 0 with gdro: workers read "
            "prefetch_factor x num_workers batches ahead, so prompts would be planned several "
            "steps before the feedback that should shape them (GRPO rows are short texts; "
            f"workers gain nothing); got {args.dataloader_num_workers}"
        )
    if args.ignore_data_skip:
        raise ValueError(
            "GRPOConfig.ignore_data_skip must be False with gdro: on resume the sampler replays "
            "the interrupted epoch up to the checkpoint, which TRL skips, so the plans continue "
            "exactly; got True"
        )
    dispatch = getattr(args.accelerator_config, "dispatch_batches", None)
    if dispatch:
        raise ValueError(
            "GRPOConfig.accelerator_config.dispatch_batches must be False or None with gdro: "
            "every rank runs the same controller and reads its own rows of each planned block; "
            "got True"
        )
    layout = TRLLayout.from_sizes(
        num_prompts=len(train_dataset),
        generation_batch_size=int(args.generation_batch_size),
        num_generations=int(args.num_generations),
        steps_per_generation=int(args.steps_per_generation),
        num_iterations=int(args.num_iterations),
        gradient_accumulation_steps=int(args.gradient_accumulation_steps),
    )
    if layout.prompts < 2 and (config.prompt.mode == "reweight" or rollout.mode != "fixed"):
        wanted = [
            name
            for name, on in (
                ("Prompt-GDRO reweight", config.prompt.mode == "reweight"),
                (f"Rollout-GDRO {rollout.mode}", rollout.mode != "fixed"),
            )
            if on
        ]
        raise ValueError(
            "GRPOConfig.generation_batch_size // num_generations (prompts per generation batch) "
            f"must be >= 2 with {' and '.join(wanted)}: weights are normalised within a batch and "
            "the completion budget is split within it, so a batch of one prompt gets weight 1 "
            "and num_generations completions every step; got generation_batch_size="
            f"{args.generation_batch_size} (per_device_train_batch_size="
            f"{args.per_device_train_batch_size} x processes x steps_per_generation="
            f"{args.steps_per_generation}), num_generations={args.num_generations}: "
            f"{layout.prompts} prompt. Raise per_device_train_batch_size or steps_per_generation "
            f"so that generation_batch_size >= {2 * int(args.num_generations)}"
        )
    needed = layout.prompts * layout.max_in_flight
    if len(train_dataset) < needed:
        raise ValueError(
            f"train_dataset must hold at least {needed} prompts with gdro: TRL reads "
            f"{layout.max_in_flight} generation batch(es) of {layout.prompts} prompts ahead, and "
            "a prompt is planned in one of them at a time; got "
            f"{len(train_dataset)} prompts (lower generation_batch_size or add prompts)"
        )
    return layout
