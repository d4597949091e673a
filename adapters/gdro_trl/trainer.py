"""``GDROGRPOTrainer``: TRL's ``GRPOTrainer`` with Prompt-GDRO and Rollout-GDRO.

Three changed lines turn gdro on in an existing GRPO script: the import, the class name and a
``gdro=`` argument::

    from gdro_trl import GDROGRPOTrainer
    trainer = GDROGRPOTrainer(model=..., reward_funcs=..., args=grpo_config,
                              train_dataset=dataset,
                              gdro={"prompt": {"mode": "reweight"}, "rollout": {"mode": "neyman"}})

:class:`GDROMixin` carries all of it, so a project that already subclasses ``GRPOTrainer`` mixes it
in first: ``class MyTrainer(GDROMixin, MyGRPOTrainer)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from gdro_trl import _compat
from gdro_trl.config import GDROConfig
from gdro_trl.layout import check_trl_args
from gdro_trl.runtime import GDRORuntime

_compat.check_trl()

from trl.trainer.grpo_trainer import GRPOTrainer  # noqa: E402  (after the version check)

__all__ = ["GDROGRPOTrainer", "GDROMixin"]


class GDROMixin(_compat.TRLHooks):
    """Prompt-GDRO and Rollout-GDRO for a ``GRPOTrainer`` (or a subclass), mixed in first.

    Takes every argument of ``trl.GRPOTrainer`` plus ``gdro``. Before TRL builds anything it checks
    the ``GRPOConfig`` (:func:`gdro_trl.layout.check_trl_args`) and stamps each train row with its
    index (column ``gdro_prompt_id``, the stable prompt id; reward functions receive it as a
    keyword like every other column). It hashes the train set's prompts (the fingerprint that
    ties a checkpoint to its train set), seeds the controller with ``GRPOConfig.seed`` unless
    ``gdro.seed`` is set, and after TRL's ``__init__`` checks the private attributes it relies on
    (:func:`gdro_trl._compat.check_trainer`); under Rollout-GDRO a ``rollout_func`` is wrapped by
    :func:`gdro_trl._compat.check_rollout_rows`.

    Args:
        *args: ``GRPOTrainer``'s positional arguments.
        gdro: A :class:`~gdro_trl.config.GDROConfig`, or a mapping parsed by
            :meth:`GDROConfig.from_mapping` (``rollout.mean`` defaults to ``num_generations``).
            ``None``: Prompt-GDRO in reweight mode with the defaults.
        **kwargs: ``GRPOTrainer``'s keyword arguments; ``args`` (a ``GRPOConfig``) and
            ``train_dataset`` (a ``datasets.Dataset``) are required.

    Attributes:
        gdro: The run's :class:`~gdro_trl.runtime.GDRORuntime`: ``gdro.controller`` is the
            ``GDROController``, ``gdro.last_record`` what was done to the last generation batch.

    Raises:
        ValueError, TypeError: a setting gdro cannot work with (the message names it).

    Examples:
        A mixin composes with a project's own trainer class:

        >>> from trl import GRPOTrainer
        >>> class MyTrainer(GRPOTrainer):
        ...     pass
        >>> class MyGDROTrainer(GDROMixin, MyTrainer):
        ...     pass
        >>> [c.__name__ for c in MyGDROTrainer.__mro__[:4]]
        ['MyGDROTrainer', 'GDROMixin', 'TRLHooks', 'MyTrainer']
    """

    def __init__(
        self, *args: Any, gdro: GDROConfig | Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        bound = inspect.signature(GRPOTrainer.__init__).bind(self, *args, **kwargs)
        params = bound.arguments
        grpo_args = params.get("args")
        if grpo_args is None:
            raise ValueError(
                "args must be a trl.GRPOConfig with gdro (gdro reads num_generations and the "
                "batch sizes from it before the trainer is built); got None"
            )
        if isinstance(gdro, GDROConfig):
            config = gdro
        elif gdro is None or isinstance(gdro, Mapping):
            config = GDROConfig.from_mapping(gdro, num_generations=int(grpo_args.num_generations))
        else:
            raise TypeError(
                f"gdro must be a GDROConfig, a mapping or None; got {gdro!r} of type "
                f"{type(gdro).__name__}"
            )
        dataset: Any = params.get("train_dataset")
        layout = check_trl_args(grpo_args, config, dataset)
        if _compat.PROMPT_ID in dataset.column_names:
            raise ValueError(
                f"train_dataset must not have a {_compat.PROMPT_ID!r} column: gdro stamps each row "
                "with its index there; got a dataset that already has one"
            )
        if config.seed is None:
            config = dataclasses.replace(config, seed=int(grpo_args.seed))
        fingerprint = _train_fingerprint(dataset)
        params["train_dataset"] = dataset.add_column(
            _compat.PROMPT_ID, np.arange(len(dataset), dtype=np.int64)
        )
        del params["self"]
        super().__init__(**params)
        trainer: Any = self
        _compat.check_trainer(trainer)
        self.gdro = GDRORuntime(
            config,
            layout,
            num_prompts=len(dataset),
            reward_names=list(trainer.reward_func_names),
            train_fingerprint=fingerprint,
        )
        if trainer.rollout_func is not None and self.gdro.rollout_config.mode != "fixed":
            trainer.rollout_func = _compat.check_rollout_rows(trainer.rollout_func)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the ``gdro/`` metrics of the logging window, then log as TRL does."""
        trainer: Any = self
        if trainer.model.training and hasattr(self, "gdro"):
            logs.update(self.gdro.pop_metrics())
        super().log(logs, start_time)  # type: ignore[misc]


def _train_fingerprint(dataset: Any) -> str:
    """A digest of the train set's ``prompt`` column (every column without one), in row order.

    Text and numbers are hashed as JSON; other objects in a prompt (an image in a message, say)
    only by their type name, so the digest is the same in every process and after a restart.
    """
    columns = ["prompt"] if "prompt" in dataset.column_names else list(dataset.column_names)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps([len(dataset), columns]).encode())
    for batch in dataset.select_columns(columns).iter(batch_size=1024):
        rows = [batch[c] for c in columns]
        text = json.dumps(rows, sort_keys=True, default=lambda obj: type(obj).__name__)
        digest.update(text.encode())
    return digest.hexdigest()


class GDROGRPOTrainer(GDROMixin, GRPOTrainer):
    """TRL's ``GRPOTrainer`` with gdro: ``GRPOTrainer``'s arguments plus ``gdro``.

    See :class:`GDROMixin` for the arguments and ``docs/trl.md`` for how each TRL setting works
    with gdro.

    Examples:
        >>> import os; os.environ["HF_HUB_OFFLINE"] = "1"
        >>> from datasets import Dataset
        >>> from trl import GRPOConfig
        >>> from gdro_torch.model import build_embedded
        >>> model, tokenizer = build_embedded("tiny-llama-0.1m", seed=0)
        >>> data = Dataset.from_dict({"prompt": [f"{i}+{i}=" for i in range(16)]})
        >>> def reward(completions, **kwargs):
        ...     return [float(len(c) % 2) for c in completions]
        >>> args = GRPOConfig(output_dir="/tmp/gdro-doc-trainer", per_device_train_batch_size=8,
        ...                   num_generations=4, max_completion_length=3, max_steps=2,
        ...                   use_cpu=True, report_to=[], save_strategy="no")
        >>> trainer = GDROGRPOTrainer(model=model, reward_funcs=reward, args=args,
        ...                           train_dataset=data, processing_class=tokenizer,
        ...                           gdro={"rollout": {"mode": "neyman", "max": 6}})
        >>> _ = trainer.train()  # doctest: +ELLIPSIS
        {'train_runtime': ...}
        >>> trainer.gdro.controller.step, int(trainer.gdro.last_record.rollouts.sum())
        (2, 8)
    """
