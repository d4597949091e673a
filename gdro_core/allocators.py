"""The registry of rollout allocators: ``ALLOCATORS[mode]`` plans a step's rollout counts.

An allocator is ``plan(config, state, bins, rng, backend, prompt_ids) -> Allocation``; the state
update is shared (``gdro_core.rollout.update``). Built-ins: ``fixed``, ``bandit``, ``neyman``.
Tests swap entries with ``monkeypatch.setitem``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from gdro_core import rollout
from gdro_core.rollout import Allocation, RolloutConfig, RolloutState

Allocator = Callable[
    [RolloutConfig, RolloutState, NDArray[np.int64], np.random.Generator, str, NDArray[np.int64]],
    Allocation,
]

ALLOCATORS: dict[str, Allocator] = {
    "fixed": rollout.plan_fixed,
    "bandit": rollout.plan_bandit,
    "neyman": rollout.plan_neyman,
}
