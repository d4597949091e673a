"""The dataset class for ``data.custom_cls``: builds the controller, stamps the plan on each row.

Set::

    data.custom_cls.path=pkg://gdro_verl.dataset
    data.custom_cls.name=GDRODataset

verl uses the same class and config for the train and the validation files. The train instance
builds the run's :class:`~gdro_verl.runtime.GDRORuntime` and stamps every row with

* ``gdro_prompt_id``: the prompt's stable id, its position in this dataset, and
* ``__rollout_n__``: its planned rollout count, which verl V1's agent loop pops to decide how many
  sessions to run (V0: gdro's ``_get_gen_batch`` hook turns it into ``sample_level_repeat``).

Validation rows are left untouched, so validation keeps verl's uniform ``val_kwargs.n``. When verl
dumps rollouts (``trainer.rollout_data_dir``), the runtime appends every plan to
``gdro_plans.jsonl`` in the same folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Literal

from gdro_verl import _compat

_compat.require_verl()

from verl.utils.dataset.rl_dataset import RLHFDataset  # noqa: E402

from gdro_verl import hooks  # noqa: E402
from gdro_verl import runtime as _runtime  # noqa: E402
from gdro_verl.config import GDROSettings, check_trainer_config  # noqa: E402

__all__ = ["GDRODataset"]

Role = Literal["train", "val"]


def _as_paths(files: Any) -> list[str]:
    files = _compat.to_plain(files)
    if files is None:
        return []
    if isinstance(files, str):
        return [files]
    return [str(f) for f in files]


def _role(data_files: Any, config: Any) -> Role:
    files = _as_paths(data_files)
    train = files == _as_paths(_compat.select(config, "train_files"))
    val = files == _as_paths(_compat.select(config, "val_files"))
    if train and val:
        raise ValueError(
            "data.train_files and data.val_files must differ with gdro (the dataset tells train "
            f"from validation by its files, and only train rows are planned); both are {files}"
        )
    if not (train or val):
        raise ValueError(
            "GDRODataset data_files must equal data.train_files or data.val_files; got "
            f"{files}, train_files={_as_paths(_compat.select(config, 'train_files'))}, "
            f"val_files={_as_paths(_compat.select(config, 'val_files'))}"
        )
    return "train" if train else "val"


def _fingerprint(dataframe: Any, column: str) -> str:
    """A SHA-256 of ``column`` of every row, in row order (the prompts behind the prompt ids).

    One pass over the column when the train set is built (about 1 s per 100k chat prompts); it is
    saved with the controller, so a resume can tell that its prompt ids mean the same prompts.
    """
    digest = hashlib.sha256(f"{len(dataframe)} rows of {column!r}\n".encode())
    part = dataframe.select_columns([column]).with_format("arrow")
    for batch in part.iter(batch_size=8192):
        rows = batch.column(0).to_pylist()
        digest.update(json.dumps(rows, sort_keys=True, ensure_ascii=False, default=str).encode())
    return digest.hexdigest()


class GDRODataset(RLHFDataset):
    """verl's ``RLHFDataset`` whose train rows carry gdro's per-prompt plan.

    The class carries the marker attribute ``__gdro_dataset__``, by which verl's sampler factory
    (as routed by :mod:`gdro_verl.hooks`) recognises a gdro train dataset.

    Args:
        data_files: Parquet/JSON file(s); compared with ``config.train_files`` and
            ``config.val_files`` to tell train from validation.
        tokenizer: As for ``RLHFDataset``.
        config: verl's ``data`` config section, with gdro options under ``gdro``.
        processor: As for ``RLHFDataset``.
        max_samples: As for ``RLHFDataset``.

    Attributes:
        role: ``"train"`` or ``"val"``.
        runtime: The run's controller runtime (train only, else None). It holds a fingerprint of
            the train prompts (a hash of the prompt column, row by row), saved with the
            controller: resuming over other prompts is an error.

    Raises:
        ValueError: bad ``data.gdro`` options, ``data.dataloader_num_workers != 0``, or verl settings
            gdro cannot run with (see :func:`gdro_verl.config.check_trainer_config`).

    Examples:
        Four prompts in a parquet file per split, two prompts per step (verl's own
        ``RLHFDataset`` reads them, and prints their number):

        >>> import os, tempfile
        >>> from pathlib import Path
        >>> import datasets
        >>> import pandas as pd
        >>> from omegaconf import OmegaConf
        >>> from gdro_verl.sampler import GDROSampler
        >>> tmp = tempfile.TemporaryDirectory()
        >>> hf_cache = datasets.config.HF_DATASETS_CACHE
        >>> datasets.config.HF_DATASETS_CACHE = Path(tmp.name)  # datasets' cache in tmp too
        >>> prompts = [[{"role": "user", "content": f"What is {i} + {i}?"}] for i in range(4)]
        >>> for split in ("train", "val"):
        ...     pd.DataFrame({"prompt": prompts}).to_parquet(f"{tmp.name}/{split}.parquet")
        >>> data = OmegaConf.create({
        ...     "train_files": f"{tmp.name}/train.parquet",
        ...     "val_files": f"{tmp.name}/val.parquet",
        ...     "train_batch_size": 2,
        ...     "dataloader_num_workers": 0,
        ...     "filter_overlong_prompts": False,
        ...     "gdro": {"rollout": {"mean": 4}},
        ... })
        >>> train = GDRODataset(data.train_files, tokenizer=None, config=data)
        dataset len: 4
        >>> train.role, len(train), train.runtime.block_size
        ('train', 4, 2)

        Train rows are read through gdro's sampler, which plans each step's prompts; a row
        carries its prompt id and its planned rollout count:

        >>> ids = iter(GDROSampler(train))
        >>> row = train[next(ids)]
        >>> row["gdro_prompt_id"], row["__rollout_n__"], row["raw_prompt"][0]["content"]
        (2, 4, 'What is 2 + 2?')
        >>> train[3]  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        KeyError: "gdro: prompt id 3 is not in the planned batch; ..."

        Validation rows are left as verl makes them:

        >>> val = GDRODataset(data.val_files, tokenizer=None, config=data)
        dataset len: 4
        >>> val.is_train, val.runtime, "gdro_prompt_id" in val[0]
        (False, None, False)
        >>> from gdro_verl.runtime import active, deactivate
        >>> active() is train.runtime  # the train dataset made its controller the process's
        True
        >>> deactivate(train.runtime)
        >>> datasets.config.HF_DATASETS_CACHE = hf_cache
        >>> tmp.cleanup()
    """

    __gdro_dataset__ = True

    def __init__(
        self,
        data_files: Any,
        tokenizer: Any,
        config: Any,
        processor: Any = None,
        max_samples: int = -1,
    ) -> None:
        self.role: Role = _role(data_files, config)
        self.runtime: _runtime.GDRORuntime | None = None
        settings = shape = None
        if self.role == "train":  # validate before the (possibly slow) file loading
            settings = GDROSettings.from_data_config(config)
            shape = check_trainer_config(config, settings, max_samples=int(max_samples))
        super().__init__(
            data_files=data_files,
            tokenizer=tokenizer,
            config=config,
            processor=processor,
            max_samples=max_samples,
        )
        if settings is not None and shape is not None:
            block = int(_compat.select(config, "train_batch_size"))
            dumps = _compat.select(_compat.root_config(config), "trainer.rollout_data_dir")
            self.runtime = _runtime.GDRORuntime(
                settings,
                num_prompts=len(self),
                block_size=block,
                max_in_flight=shape.max_in_flight,
                plan_log=os.path.join(str(dumps), "gdro_plans.jsonl") if dumps else None,
                fingerprint=_fingerprint(self.dataframe, self.prompt_key),
            )
            self.runtime.feedback_at_advantage = shape.feedback_at_advantage
            self.runtime.lookahead = shape.lookahead
            hooks.install_trainer_hooks()  # checks verl's API first: may raise ImportError
            _runtime.activate(self.runtime)

    @property
    def is_train(self) -> bool:
        """Whether this is the train dataset (the one the controller plans)."""
        return self.role == "train"

    def __getitem__(self, item: int) -> dict[str, Any]:
        """Row ``item`` (its stable prompt id), stamped with its plan when training.

        Raises:
            KeyError: a train row outside the planned batch (the dataset is not being read
                through gdro's sampler).
        """
        row: dict[str, Any] = super().__getitem__(item)  # type: ignore[no-untyped-call]
        if self.runtime is not None:
            prompt_id = int(item)
            row[_compat.PROMPT_ID_FIELD] = prompt_id
            row[_compat.ROLLOUT_N_FIELD] = self.runtime.planned_rollouts(prompt_id)
        return row

    def on_batch_end(self, batch: Any) -> None:
        """verl V0's per-step hook: feed back the step unless the advantage hook already did."""
        if self.runtime is not None and self.runtime.owns_batch(batch):
            self.runtime.feedback_from_batch(batch)
