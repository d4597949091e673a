"""gdro_torch: a minimal torch GRPO loop driven by the gdro_core controllers.

The pieces, one concept per module:

- :mod:`gdro_torch.loop`: ``grpo_step`` and ``train`` (the readable loop).
- :mod:`gdro_torch.grpo`: group advantages, token log-probs, the clipped loss.
- :mod:`gdro_torch.generation`: batched rollouts (HF ``generate``; vLLM optional).
- :mod:`gdro_torch.model`: the embedded tiny Llama, local models, the SFT warm-up.
- :mod:`gdro_torch.tasks`: built-in addition and reasoning-gym tasks with exact rewards.
- :mod:`gdro_torch.evaluate`: held-out mean@n and pass@k per difficulty level.
- :mod:`gdro_torch.rundir`: run directories, metrics, checkpoints.
- :mod:`gdro_torch.config`: settings and presets (the command line is ``gdro_cli.train``).

Names are imported lazily, so ``import gdro_torch`` is cheap until torch is needed.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Hooks",
    "RunDir",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "group_advantages",
    "grpo_step",
    "load_task",
    "policy_loss",
    "train",
]

_WHERE = {
    "Hooks": "loop",
    "TrainResult": "loop",
    "grpo_step": "loop",
    "train": "loop",
    "TrainConfig": "config",
    "RunDir": "rundir",
    "evaluate": "evaluate",
    "load_task": "tasks",
    "group_advantages": "grpo",
    "policy_loss": "grpo",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"gdro_torch.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'gdro_torch' has no attribute {name!r}")
