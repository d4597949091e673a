"""The GRPO maths against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from gdro_torch.grpo import group_advantages, policy_loss


def _hand_advantages(groups: list[list[float]]) -> list[float]:
    out = []
    for g in groups:
        mean = sum(g) / len(g)
        std = math.sqrt(sum((r - mean) ** 2 for r in g) / (len(g) - 1))
        out += [
            0.0 if max(g) == min(g) else max(-5.0, min(5.0, (r - mean) / (std + 1e-6))) for r in g
        ]
    return out


def test_group_advantages_unequal_groups_match_hand_computation() -> None:
    groups = [[1.0, 0.0], [0.0, 0.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0, 0.0]]
    rewards = torch.tensor([r for g in groups for r in g], dtype=torch.float64)
    adv = group_advantages(rewards, torch.tensor([len(g) for g in groups]))
    assert adv.tolist() == pytest.approx(_hand_advantages(groups), abs=1e-12)
    # all-equal group gets exactly zero; each non-constant group's advantages sum to zero
    assert adv[7:10].tolist() == [0.0, 0.0, 0.0]
    assert float(adv[2:7].sum()) == pytest.approx(0.0, abs=1e-12)


def test_group_advantages_clip_and_validation() -> None:
    rewards = torch.tensor([1.0] + [0.0] * 39, dtype=torch.float64)
    adv = group_advantages(rewards, torch.tensor([40]))
    assert float(adv[0]) == 5.0  # (1 - 1/40) / std = 6.24..., clipped
    with pytest.raises(ValueError, match="group of 1"):
        group_advantages(torch.tensor([1.0, 0.0, 1.0]), torch.tensor([2, 1]))
    with pytest.raises(ValueError, match="sum to 3"):
        group_advantages(torch.tensor([1.0, 0.0]), torch.tensor([3]))


def test_weights_scale_the_policy_gradient_exactly() -> None:
    torch.manual_seed(0)
    logp = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.float64)
    adv = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    weights = torch.tensor([3.0, 0.5, 1.0], dtype=torch.float64)
    parts = policy_loss(logp, logp.detach(), adv, weights, mask)
    (parts.train.sum() / mask.sum()).backward()
    # at ratio 1, d/dlogp of -w*A*ratio is -w*A on every response token
    expected = -(weights * adv)[:, None] * mask / mask.sum()
    assert torch.allclose(logp.grad, expected, atol=1e-12)
    # the paper's per-response loss is unweighted: -token-mean(A) = -A at ratio 1
    assert parts.response_loss.tolist() == pytest.approx((-adv).tolist())


def test_asymmetric_clipping() -> None:
    mask = torch.ones(2, 1, dtype=torch.float64)
    old = torch.zeros(2, 1, dtype=torch.float64)
    # ratio 1.25 (inside the upper clip 1.28) and 1.3 (outside), both with positive advantage
    logp = torch.log(torch.tensor([[1.25], [1.3]], dtype=torch.float64)).requires_grad_(True)
    parts = policy_loss(
        logp, old, torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64), mask
    )
    parts.train.sum().backward()
    assert logp.grad[0, 0] == pytest.approx(-1.25)  # unclipped: gradient of -ratio
    assert logp.grad[1, 0] == 0.0  # clipped at 1.28: no gradient
    assert parts.clipped.tolist() == [0.0, 1.0]
    # negative advantage, ratio 0.75 < 0.8: the clipped branch is the min, gradient zero
    logp2 = torch.log(torch.tensor([[0.75]], dtype=torch.float64)).requires_grad_(True)
    p2 = policy_loss(
        logp2,
        old[:1],
        -torch.ones(1, dtype=torch.float64),
        torch.ones(1, dtype=torch.float64),
        mask[:1],
    )
    p2.train.sum().backward()
    assert logp2.grad[0, 0] == 0.0


def test_kl_penalty_is_k3_and_enters_the_prompt_loss() -> None:
    logp = torch.tensor([[-1.0, -2.0]], dtype=torch.float64)
    ref = torch.tensor([[-1.5, -1.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    parts = policy_loss(
        logp,
        logp,
        torch.zeros(1, dtype=torch.float64),
        torch.ones(1, dtype=torch.float64),
        mask,
        ref_logp=ref,
        kl_coef=0.1,
    )
    k3 = [math.exp(q) - q - 1 for q in (-0.5, 1.0)]
    assert parts.kl.tolist() == pytest.approx([sum(k3) / 2])
    assert parts.response_loss.tolist() == pytest.approx([0.1 * sum(k3) / 2])
