"""The registry of rollout allocators: one name, one ``init``/``plan``/``update`` triple.

``RolloutConfig.mode`` names an entry. The controller builds the allocator's state with
``init``, asks ``plan`` for each batch's rollout counts (which must meet the exact budget and the
bounds: the controller checks), and hands each completed plan's feedback to ``update``.
``proposal`` gives the mean the allocator would propose before any step (for the initial
metrics); ``uses_arm_signal`` says whether ``update`` reads ``RolloutConfig.arm_signal`` (so the
controller knows when per-prompt losses are required). Built-ins: ``fixed``, ``bandit``,
``neyman``; :func:`register_allocator` adds more.

Examples:
    >>> import numpy as np
    >>> from gdro_core.rollout import RolloutConfig
    >>> sorted(ALLOCATORS)
    ['bandit', 'fixed', 'neyman']
    >>> cfg = RolloutConfig(mode="neyman", mean=4)
    >>> a = ALLOCATORS[cfg.mode]
    >>> alloc = a.plan(cfg, a.init(cfg, 2), np.array([0, 1]), np.random.default_rng(0), "numba",
    ...                np.array([3, 9]))
    >>> alloc.rollouts.tolist()  # both bins unobserved: same variance proxy, same share
    [4, 4]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from gdro_core._validation import fail

__all__ = ["ALLOCATORS", "Allocator", "get_allocator", "register_allocator"]

# The registry sits below gdro_core.rollout, which registers the built-ins when it is imported:
# configs validate their mode against it without an import cycle. In these signatures ``Config``
# is ``RolloutConfig``, ``State`` is ``RolloutState`` and ``Alloc`` is ``Allocation``.
PlanFn = Callable[..., Any]  # (Config, State, bins, rng, backend, prompt_ids) -> Alloc
UpdateFn = Callable[..., Any]  # (Config, State, Alloc, bins, correct, total, losses) -> State


class Allocator(NamedTuple):
    """A rollout allocator.

    Attributes:
        init: ``init(config, num_bins) -> RolloutState``, the state before any step.
        plan: ``plan(config, state, bins, rng, backend, prompt_ids) -> Allocation``: rollout
            counts in ``[config.min, config.max]`` summing to ``config.mean * len(bins)``.
        update: ``update(config, state, alloc, bins, correct, total, losses) -> RolloutState``
            after a plan's feedback (``bins``, ``correct``, ``total`` and ``losses`` over its
            fed-back prompts; ``losses`` may be ``None``).
        proposal: ``proposal(config, state, shares) -> float``, the mean rollouts the allocator
            would propose for bins with the given shares (before any step: the initial metrics).
        uses_arm_signal: whether ``update`` reads ``config.arm_signal``.

    Examples:
        >>> ALLOCATORS["bandit"].uses_arm_signal, ALLOCATORS["neyman"].uses_arm_signal
        (True, False)
    """

    init: Callable[..., Any]  # (Config, num_bins) -> State
    plan: PlanFn
    update: UpdateFn
    proposal: Callable[..., float]  # (Config, State, shares) -> float
    uses_arm_signal: bool = False


#: name -> allocator; ``gdro_core.rollout`` registers ``fixed``, ``bandit`` and ``neyman``.
ALLOCATORS: dict[str, Allocator] = {}


def get_allocator(owner: str, name: Any) -> Allocator:
    """Look up an allocator; an unknown name's error lists the registered ones.

    Examples:
        >>> get_allocator("mode", "greedy")
        Traceback (most recent call last):
        ...
        ValueError: mode must be one of ['bandit', 'fixed', 'neyman']; got 'greedy'
    """
    if not isinstance(name, str) or name not in ALLOCATORS:
        raise fail(owner, f"one of {sorted(ALLOCATORS)}", name)
    return ALLOCATORS[name]


def register_allocator(name: str, allocator: Allocator) -> None:
    """Add an allocator under ``name``; rebinding a name to a different one is a ``ValueError``.

    Examples:
        Every prompt of the lowest bin present gets ``max``, the rest share what is left:

        >>> from gdro_core import rollout
        >>> def plan(cfg, state, bins, rng, backend, ids):
        ...     n = np.full(bins.size, cfg.min)
        ...     n[int(np.argmin(bins))] += cfg.mean * bins.size - n.sum()
        ...     return rollout.Allocation(n, np.ones(bins.size), np.unique(bins),
        ...                               np.full(np.unique(bins).size, -1), float(cfg.mean), 0.0)
        >>> register_allocator("lowest", Allocator(rollout.init_state, plan,
        ...                    rollout.update_fixed, rollout.proposal_fixed))
        >>> rollout.RolloutConfig(mode="lowest", mean=3).mode
        'lowest'
        >>> del ALLOCATORS["lowest"]
    """
    if not isinstance(allocator, Allocator):
        raise TypeError(
            f"allocator must be a gdro_core.allocators.Allocator; got {type(allocator).__name__}"
        )
    if not isinstance(name, str) or not name:
        raise fail("name", "a non-empty string", name)
    if name in ALLOCATORS and ALLOCATORS[name] != allocator:
        raise fail(
            "name", f"an allocator name not yet registered (registered: {sorted(ALLOCATORS)})", name
        )
    ALLOCATORS[name] = allocator
