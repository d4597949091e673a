"""The registry of rollout allocators: ``ALLOCATORS[mode]`` plans a step's rollout counts.

An allocator is a function ``plan(config, state, bins, rng, backend, prompt_ids) -> Allocation``;
the state update is shared (``gdro_core.rollout.update``). Built-ins: ``fixed``, ``bandit``,
``neyman``. Tests swap entries with ``monkeypatch.setitem``.
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


def _fixed(
    c: RolloutConfig,
    s: RolloutState,
    b: NDArray[np.int64],
    r: np.random.Generator,
    k: str,
    ids: NDArray[np.int64],
) -> Allocation:
    return rollout.plan_fixed(c, s, b, r, k)


def _bandit(
    c: RolloutConfig,
    s: RolloutState,
    b: NDArray[np.int64],
    r: np.random.Generator,
    k: str,
    ids: NDArray[np.int64],
) -> Allocation:
    return rollout.plan_bandit(c, s, b, r, k)


def _neyman(
    c: RolloutConfig,
    s: RolloutState,
    b: NDArray[np.int64],
    r: np.random.Generator,
    k: str,
    ids: NDArray[np.int64],
) -> Allocation:
    return rollout.plan_neyman(c, s, b, r, k, ids)


ALLOCATORS: dict[str, Allocator] = {"fixed": _fixed, "bandit": _bandit, "neyman": _neyman}
