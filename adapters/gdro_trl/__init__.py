"""gdro for TRL: Prompt-GDRO and Rollout-GDRO inside TRL's ``GRPOTrainer``.

Turn it on in an existing GRPO script by changing three lines (see ``docs/trl.md``)::

    from gdro_trl import GDROGRPOTrainer          # instead of trl.GRPOTrainer
    trainer = GDROGRPOTrainer(..., gdro={"prompt": {"mode": "reweight"},
                                         "rollout": {"mode": "neyman"}})

Submodules import TRL lazily: ``import gdro_trl`` alone imports neither TRL nor torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "GDROConfig",
    "GDROGRPOTrainer",
    "GDROMixin",
    "GDRORuntime",
    "GDROSampler",
    "StepRecord",
    "group_advantages",
]

_WHERE = {
    "GDROConfig": "gdro_trl.config",
    "GDROGRPOTrainer": "gdro_trl.trainer",
    "GDROMixin": "gdro_trl.trainer",
    "GDRORuntime": "gdro_trl.runtime",
    "GDROSampler": "gdro_trl.sampler",
    "StepRecord": "gdro_trl.records",
    "group_advantages": "gdro_trl.advantages",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'gdro_trl' has no attribute {name!r}")
