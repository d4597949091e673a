"""GRPO advantages for groups of unequal size, with TRL's formulas.

TRL 1.16 computes a group's baseline and scale with ``rewards.view(-1, num_generations)``, which
needs every prompt to have exactly ``num_generations`` completions in consecutive rows. Under
Rollout-GDRO prompt i has ``n_i`` of them. :func:`group_advantages` lays the rewards out as a
``(prompts, max n_i)`` table whose unused cells are NaN (completions that were never generated and
carry no reward) and applies TRL's own NaN-aware reductions (``torch.nanmean``, TRL's ``nanstd``)
along the rows. So each prompt's baseline and standard deviation come from its own completions
only, and with equal groups the result is bit-identical to TRL's.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["GroupAdvantages", "group_advantages"]

_EPS = 1e-4  # TRL's std offset


class GroupAdvantages(NamedTuple):
    """The result of :func:`group_advantages`.

    Attributes:
        advantages: float (R,), per completion, in row order; 0 for unscorable completions.
        std_is_zero: bool (R,), whether the completion's scale was zero (TRL logs the mean as
            ``frac_reward_zero_std``).

    Examples:
        >>> out = group_advantages(torch.tensor([[1.0], [1.0]]), torch.ones(1), torch.tensor([0, 0]))
        >>> out.advantages.tolist(), out.std_is_zero.tolist()
        ([0.0, 0.0], [True, True])
    """

    advantages: torch.Tensor
    std_is_zero: torch.Tensor


def _nanstd(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    from trl.trainer.utils import nanstd

    return nanstd(x) if dim is None else nanstd(x, dim=dim)


def _table(
    values: torch.Tensor, group: torch.Tensor, slot: torch.Tensor, shape: tuple[int, int]
) -> torch.Tensor:
    """``values`` (R, ...) scattered into a NaN-filled ``(G, n_max, ...)`` table."""
    out = values.new_full((*shape, *values.shape[1:]), float("nan"))
    out[group, slot] = values
    return out


def group_advantages(
    rewards_per_func: torch.Tensor,
    reward_weights: torch.Tensor,
    group: torch.Tensor,
    *,
    scale_rewards: str = "group",
    aggregation: str = "sum_then_normalize",
) -> GroupAdvantages:
    """GRPO advantages when prompt i has its own number of completions.

    Args:
        rewards_per_func: float (R, F), each completion's reward from each of the F reward
            functions, NaN where a function returned None (TRL's ``rewards_per_func``).
        reward_weights: float (F,), TRL's ``reward_weights``.
        group: int64 (R,), the group (prompt) of each completion, in ``0..G-1``; rows of a group
            need not be adjacent.
        scale_rewards: TRL's ``scale_rewards``: ``"group"`` (divide by the group's std),
            ``"batch"`` (by the batch's) or ``"none"``.
        aggregation: TRL's ``multi_objective_aggregation``: ``"sum_then_normalize"`` or
            ``"normalize_then_sum"``.

    Returns:
        The advantages and the zero-std flags, per completion in row order.

    Raises:
        ValueError: an unknown ``scale_rewards`` or ``aggregation``, or mismatched shapes.

    Examples:
        Two prompts with 3 and 2 completions (rows interleaved); one reward function:

        >>> rewards = torch.tensor([[1.0], [0.0], [1.0], [0.0], [1.0]])
        >>> group = torch.tensor([0, 1, 0, 0, 1])
        >>> out = group_advantages(rewards, torch.ones(1), group)
        >>> [round(a, 4) for a in out.advantages.tolist()]
        [0.5773, -0.707, 0.5773, -1.1545, 0.707]

        Each group is normalised by its own mean and (unbiased) std, as TRL does for equal groups:

        >>> g0 = torch.tensor([1.0, 1.0, 0.0])
        >>> ((g0 - g0.mean()) / (g0.std() + 1e-4)).tolist() == out.advantages[[0, 2, 3]].tolist()
        True
    """
    if rewards_per_func.dim() != 2 or group.shape != rewards_per_func.shape[:1]:
        raise ValueError(
            "rewards_per_func must be (R, F) and group (R,); got shapes "
            f"{tuple(rewards_per_func.shape)} and {tuple(group.shape)}"
        )
    if aggregation not in ("sum_then_normalize", "normalize_then_sum"):
        raise ValueError(
            f"aggregation must be 'sum_then_normalize' or 'normalize_then_sum'; got {aggregation!r}"
        )
    if scale_rewards not in ("group", "batch", "none"):
        raise ValueError(f"scale_rewards must be 'group', 'batch' or 'none'; got {scale_rewards!r}")
    group = group.to(device=rewards_per_func.device, dtype=torch.long)
    num_groups = int(group.max().item()) + 1 if group.numel() else 0
    # slot[j] = how many earlier rows share row j's group (its column in the table)
    order = torch.argsort(group, stable=True)
    counts = torch.bincount(group, minlength=num_groups)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(group)
    slot[order] = torch.arange(group.numel(), device=group.device) - starts[group[order]]
    shape = (num_groups, int(counts.max().item()) if num_groups else 0)
    weights = reward_weights.to(rewards_per_func.device).unsqueeze(0)
    unscorable = torch.isnan(rewards_per_func).all(dim=1)

    if aggregation == "sum_then_normalize":
        rewards = (rewards_per_func * weights).nansum(dim=1)
        rewards[unscorable] = torch.nan
        table = _table(rewards, group, slot, shape)
        mean = torch.nanmean(table, dim=1)[group]
        if scale_rewards == "batch":
            std = (
                _nanstd(rewards).expand_as(rewards)
                if rewards.numel() > 1
                else torch.zeros_like(rewards)
            )
        else:
            std = _nanstd(table, dim=1)[group]
        advantages = rewards - mean
        if scale_rewards != "none":
            advantages = advantages / (std + _EPS)
    else:
        table = _table(rewards_per_func, group, slot, shape)  # (G, n_max, F)
        mean_k = torch.nanmean(table, dim=1, keepdim=True)
        std_k = _nanstd(table, dim=1).unsqueeze(1)
        normed = ((table - mean_k) / (std_k + _EPS))[group, slot]
        rewards = (normed * weights).nansum(dim=1)
        rewards[unscorable] = torch.nan
        std = (
            _nanstd(rewards).expand_as(rewards)
            if rewards.numel() > 1
            else torch.zeros_like(rewards)
        )
        advantages = (rewards - torch.nanmean(rewards)) / (std + _EPS)
    std_is_zero = torch.isclose(std, torch.zeros_like(std))
    return GroupAdvantages(torch.nan_to_num(advantages, nan=0.0), std_is_zero)
