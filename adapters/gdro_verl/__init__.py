"""gdro for verl: Prompt-GDRO and Rollout-GDRO as a drop-in for verl's GRPO trainers.

Turn it on with a few config lines (see ``docs/verl.md`` and ``examples/verl/``)::

    data.custom_cls.path=pkg://gdro_verl.dataset  data.custom_cls.name=GDRODataset
    data.dataloader_num_workers=0
    +data.gdro.prompt.mode=reweight  +data.gdro.rollout.mode=bandit
    trainer.v1.sampler.custom_sampler.path=pkg://gdro_verl.replay_buffer
    trainer.v1.sampler.custom_sampler.name=GDROReplayBuffer

The package's entry point (``gdro_verl.plugin``) is loaded by ``import verl`` in every Ray process.
Submodules import verl lazily: ``import gdro_verl`` alone imports neither verl nor torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "GDROCurriculumSampler",
    "GDRODataset",
    "GDROReplayBuffer",
    "GDROReplayBufferAsync",
    "GDRORuntime",
    "GDROSampler",
    "GDROSettings",
]

_WHERE = {
    "GDROCurriculumSampler": "gdro_verl.sampler",
    "GDRODataset": "gdro_verl.dataset",
    "GDROReplayBuffer": "gdro_verl.replay_buffer",
    "GDROReplayBufferAsync": "gdro_verl.replay_buffer",
    "GDRORuntime": "gdro_verl.runtime",
    "GDROSampler": "gdro_verl.sampler",
    "GDROSettings": "gdro_verl.config",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'gdro_verl' has no attribute {name!r}")
