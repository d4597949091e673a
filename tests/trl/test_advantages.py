"""group_advantages: each prompt normalised by its own completions, TRL's formulas for equal groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from trl.trainer.utils import nanstd

from gdro_trl import group_advantages


def trl_equal_groups(
    rpf: torch.Tensor, w: torch.Tensor, n: int, scale: str, agg: str
) -> torch.Tensor:
    """TRL 1.16's advantage formulas for consecutive groups of n rows (its ``view(-1, n)``)."""
    unscorable = torch.isnan(rpf).all(dim=1)
    if agg == "sum_then_normalize":
        r = (rpf * w.unsqueeze(0)).nansum(dim=1)
        r[unscorable] = torch.nan
        mean = torch.nanmean(r.view(-1, n), dim=1).repeat_interleave(n)
        if scale == "batch":
            std = nanstd(r).expand_as(r)
        else:
            std = nanstd(r.view(-1, n), dim=1).repeat_interleave(n)
        adv = r - mean
        if scale != "none":
            adv = adv / (std + 1e-4)
    else:
        g = rpf.view(-1, n, rpf.shape[1])
        reward_k = (g - torch.nanmean(g, dim=1, keepdim=True)) / (
            nanstd(g, dim=1, keepdim=True) + 1e-4
        )
        r = (reward_k.view(-1, rpf.shape[1]) * w.unsqueeze(0)).nansum(dim=1)
        r[unscorable] = torch.nan
        adv = (r - torch.nanmean(r)) / (nanstd(r).expand_as(r) + 1e-4)
    return torch.nan_to_num(adv, nan=0.0)


cells = st.sampled_from([0.0, 1.0, 0.5, 2.0, float("nan")])


@given(
    groups=st.integers(1, 5),
    n=st.integers(2, 5),
    funcs=st.integers(1, 3),
    scale=st.sampled_from(["group", "batch", "none"]),
    agg=st.sampled_from(["sum_then_normalize", "normalize_then_sum"]),
    data=st.data(),
)
def test_equal_groups_are_trl_bit_for_bit(
    groups: int, n: int, funcs: int, scale: str, agg: str, data: st.DataObject
) -> None:
    values = data.draw(st.lists(cells, min_size=groups * n * funcs, max_size=groups * n * funcs))
    rpf = torch.tensor(values, dtype=torch.float32).view(groups * n, funcs)
    w = torch.tensor(
        data.draw(st.lists(st.sampled_from([1.0, 0.5, 2.0]), min_size=funcs, max_size=funcs))
    )
    group = torch.arange(groups).repeat_interleave(n)
    ours = group_advantages(rpf, w, group, scale_rewards=scale, aggregation=agg).advantages
    assert torch.equal(ours, trl_equal_groups(rpf, w, n, scale, agg))


@given(sizes=st.lists(st.integers(2, 6), min_size=1, max_size=5), seed=st.integers(0, 2**16))
def test_unequal_groups_use_their_own_completions(sizes: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(len(sizes)), sizes)
    rng.shuffle(group)  # rows of a group need not be adjacent
    rewards = rng.integers(0, 2, size=group.size).astype(np.float32)
    out = group_advantages(
        torch.from_numpy(rewards)[:, None], torch.ones(1), torch.from_numpy(group)
    ).advantages.numpy()
    for g in range(len(sizes)):
        r = rewards[group == g].astype(np.float64)
        expected = (r - r.mean()) / (r.std(ddof=1) + 1e-4)
        np.testing.assert_allclose(out[group == g], expected, rtol=1e-5, atol=1e-6)
    perm = rng.permutation(group.size)  # permuting rows permutes the advantages
    again = group_advantages(
        torch.from_numpy(rewards[perm])[:, None], torch.ones(1), torch.from_numpy(group[perm])
    ).advantages.numpy()
    np.testing.assert_allclose(again, out[perm], rtol=1e-6, atol=1e-6)


def test_unscorable_completions_get_zero_and_leave_the_baseline() -> None:
    rpf = torch.tensor([[1.0], [0.0], [float("nan")], [1.0], [1.0]])
    group = torch.tensor([0, 0, 0, 1, 1])
    out = group_advantages(rpf, torch.ones(1), group)
    r = torch.tensor([1.0, 0.0])
    assert out.advantages[2] == 0.0
    assert torch.allclose(out.advantages[:2], (r - r.mean()) / (r.std() + 1e-4))
    assert out.std_is_zero.tolist() == [False, False, False, True, True]


def test_bad_arguments_name_the_parameter() -> None:
    rpf, group = torch.zeros(4, 1), torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="scale_rewards must be"):
        group_advantages(rpf, torch.ones(1), group, scale_rewards="prompt")
    with pytest.raises(ValueError, match="aggregation must be"):
        group_advantages(rpf, torch.ones(1), group, aggregation="mean")
    with pytest.raises(ValueError, match="rewards_per_func must be"):
        group_advantages(rpf, torch.ones(1), group[:3])
