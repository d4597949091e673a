"""The registry of rollout allocators: ``ALLOCATORS[mode]`` plans a step's rollout counts.

An allocator is ``plan(config, state, bins, rng, backend, prompt_ids) -> Allocation``; the state
update is shared (``gdro_core.rollout.update``). Built-ins: ``fixed``, ``bandit``, ``neyman``.
Tests swap entries with ``monkeypatch.setitem``.

Examples:
    >>> import numpy as np
    >>> from gdro_core.rollout import RolloutConfig, init_state
    >>> sorted(ALLOCATORS)
    ['bandit', 'fixed', 'neyman']
    >>> cfg = RolloutConfig(mode="neyman", mean=4)
    >>> alloc = ALLOCATORS[cfg.mode](cfg, init_state(cfg, 2), np.array([0, 1]),
    ...                              np.random.default_rng(0), "numba", np.array([3, 9]))
    >>> alloc.rollouts.tolist()  # both bins unobserved: same variance proxy, same share
    [4, 4]
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

__all__ = ["ALLOCATORS", "Allocator"]

ALLOCATORS: dict[str, Allocator] = {
    "fixed": rollout.plan_fixed,
    "bandit": rollout.plan_bandit,
    "neyman": rollout.plan_neyman,
}
