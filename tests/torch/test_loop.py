"""Mechanics of one GRPO step with real controllers and a 0.1 M-parameter model.

Spies wrap the real functions (generation, loss, controller update) and record what flows
through them, so each check compares the loop's plumbing with a hand computation.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest
import torch

import gdro_torch.loop as loop
from gdro_torch.build import build_controller, check_inputs, load_policy
from gdro_torch.config import TrainConfig
from gdro_torch.loop import StepContext, grpo_step


def _context(cfg: TrainConfig) -> StepContext:
    task = check_inputs(cfg)
    # a deterministic stand-in verifier on the real split: even-length completions are "correct",
    # so rewards vary even though a 20-step SFT model cannot add
    task.train.scorer = lambda answer, text: len(text) % 2 == 0
    policy, tok, _ = load_policy(cfg, task)
    ctl = build_controller(cfg, len(task.train))
    ref = copy.deepcopy(policy).requires_grad_(False) if cfg.kl_coef > 0 else None
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr)
    return StepContext(cfg, task, ctl, policy, ref, tok, opt, max_new_tokens=5)


def _prewarm(ctl: Any, num_prompts: int) -> None:
    """Spread the prompts over bins 0, ~5 and 9 through the public API (4 synthetic steps)."""
    ids = np.arange(num_prompts)
    for round_ in range(4):
        plan = ctl.plan(ids)
        rewards, losses = [], []
        for pid, n in zip(plan.prompt_ids, plan.rollouts):
            kind = pid % 3  # 0: always solved, 1: solved every other round, half the rollouts
            if kind == 0:
                rewards += [1.0] * n
            elif kind == 1 and round_ % 2 == 0:
                rewards += [1.0, 0.0] * (n // 2) + [0.0] * (n % 2)
            else:
                rewards += [0.0] * n
            losses.append([0.1, 0.3, 1.0][kind])
        ctl.update(plan, np.asarray(rewards), losses=np.asarray(losses))


def _hand_advantages(rewards: list[float], sizes: list[int]) -> list[float]:
    out, start = [], 0
    for n in sizes:
        g = rewards[start : start + n]
        start += n
        mean = sum(g) / n
        std = math.sqrt(sum((r - mean) ** 2 for r in g) / (n - 1))
        out += [
            0.0 if max(g) == min(g) else max(-5.0, min(5.0, (r - mean) / (std + 1e-6))) for r in g
        ]
    return out


class _Spy:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, ctx: StepContext) -> None:
        self.generated: list[Any] = []
        self.loss_calls: list[dict[str, Any]] = []
        self.updates: list[tuple[Any, np.ndarray, np.ndarray]] = []
        real_generate, real_loss, real_update = loop.generate, loop.policy_loss, ctx.ctl.update

        def generate(model: Any, tok: Any, prompts: list[str], **kw: Any) -> Any:
            out = real_generate(model, tok, prompts, **kw)
            self.generated.append((list(prompts), out))
            return out

        def policy_loss(logp: Any, old: Any, adv: Any, weights: Any, mask: Any, **kw: Any) -> Any:
            parts = real_loss(logp, old, adv, weights, mask, **kw)
            self.loss_calls.append(
                {
                    "adv": adv.clone(),
                    "weights": weights.clone(),
                    "response_loss": parts.response_loss.clone(),
                }
            )
            return parts

        def update(plan: Any, rewards: Any, losses: Any = None) -> None:
            self.updates.append((plan, np.array(rewards), np.array(losses)))
            real_update(plan, rewards, losses=losses)

        monkeypatch.setattr(loop, "generate", generate)
        monkeypatch.setattr(loop, "policy_loss", policy_loss)
        monkeypatch.setattr(ctx.ctl, "update", update)


@pytest.mark.parametrize("rollout", ["neyman", "bandit"])
def test_variable_groups_weights_rewards_and_losses_reach_the_right_places(
    tiny_cfg: TrainConfig, monkeypatch: pytest.MonkeyPatch, rollout: str
) -> None:
    cfg = tiny_cfg.replace(
        controller={"prompt": {"mode": "reweight"}, "rollout": {"mode": rollout}},
        batch_size=12,
        micro_batch=7,
        kl_coef=0.01,
    )
    ctx = _context(cfg)
    _prewarm(ctx.ctl, len(ctx.task.train))
    spy = _Spy(monkeypatch, ctx)
    metrics = grpo_step(ctx, step=0)

    ((prompts, ro),) = spy.generated
    ((plan, rewards, losses),) = spy.updates
    sizes = [int(n) for n in plan.rollouts]
    row_ids = [int(pid) for pid, n in zip(plan.prompt_ids, sizes) for _ in range(n)]
    if rollout == "neyman":
        assert len(set(sizes)) > 1, "the prewarmed bins should get different rollout counts"
    assert len(set(np.round(plan.weights, 9))) > 1, "reweight mode should give unequal weights"

    # generation: n_i copies of prompt i, groups contiguous, in plan order
    assert prompts == [ctx.task.train.item(i).prompt for i in row_ids]
    # the controller sees each completion's verifier reward, in plan order
    assert rewards.tolist() == [ctx.task.train.reward(i, t) for i, t in zip(row_ids, ro.texts)]
    assert 0 < rewards.mean() < 1
    # the loss sees the group-normalised advantages of unequal groups and the plan's weights
    adv = torch.cat([c["adv"] for c in spy.loss_calls]).double()
    assert adv.tolist() == pytest.approx(_hand_advantages(rewards.tolist(), sizes), abs=1e-5)
    weights = torch.cat([c["weights"] for c in spy.loss_calls]).double()
    assert weights.tolist() == pytest.approx(np.repeat(plan.weights, sizes).tolist(), rel=1e-6)
    assert len(spy.loss_calls) == math.ceil(sum(sizes) / cfg.micro_batch)
    # per-prompt losses: the mean of the prompt's response losses
    resp = torch.cat([c["response_loss"] for c in spy.loss_calls]).double().numpy()
    starts = np.cumsum([0] + sizes[:-1])
    expected = [resp[s : s + n].mean() for s, n in zip(starts, sizes)]
    assert losses.tolist() == pytest.approx(expected, rel=1e-6, abs=1e-9)
    # budget invariants
    rc = cfg.controller.rollout
    assert sum(sizes) == rc.mean * cfg.batch_size == metrics["train/rollouts"]
    assert min(sizes) >= rc.min and max(sizes) <= rc.max
    assert ro.input_ids.shape[0] == sum(sizes)


def test_weights_change_the_update(tiny_cfg: TrainConfig) -> None:
    """The same batch trained with and without Prompt-GDRO weights moves the policy differently."""
    moved = {}
    for prompt in ("reweight", "off"):
        ctx = _context(
            tiny_cfg.replace(controller={"prompt": {"mode": prompt}}, batch_size=12, kl_coef=0.0)
        )
        _prewarm(ctx.ctl, len(ctx.task.train))
        before = [p.detach().clone() for p in ctx.policy.parameters()]
        grpo_step(ctx, step=0)
        moved[prompt] = [p.detach() - b for p, b in zip(ctx.policy.parameters(), before)]
    diff = max(float((a - b).abs().max()) for a, b in zip(moved["reweight"], moved["off"]))
    assert diff > 0


@pytest.mark.parametrize(
    "prompt,rollout",
    [("off", "fixed"), ("resample", "bandit"), ("reweight", "neyman"), ("off", "bandit")],
)
def test_budget_and_metrics_every_mode(tiny_cfg: TrainConfig, prompt: str, rollout: str) -> None:
    cfg = tiny_cfg.replace(
        controller={"prompt": {"mode": prompt}, "rollout": {"mode": rollout, "mean": 3, "max": 6}}
    )
    ctx = _context(cfg)
    _prewarm(ctx.ctl, len(ctx.task.train))
    for step in range(2):
        m = grpo_step(ctx, step)
        assert m["train/rollouts"] == 3 * cfg.batch_size
        for key in (
            "classifier/mean_bin",
            "prompt/entropy",
            "rollout/shadow_price",
            "rollout/mean_proposed",
            "train/reward_mean",
            "train/loss",
            "timing/step_s",
            "classifier/share/0",
            "prompt/q/0",
        ):
            assert math.isfinite(m[key]), key
        assert any(k.startswith("train/reward/") for k in m)
        assert any(k.startswith("rollout/n_mean/") for k in m)


def test_ppo_epochs_use_the_sampling_policy_as_old(tiny_cfg: TrainConfig) -> None:
    ctx = _context(
        tiny_cfg.replace(ppo_epochs=3, lr=5e-2, kl_coef=0.0, loss_agg="seq-mean-token-mean")
    )
    m = grpo_step(ctx, 0)
    assert m["train/clip_frac"] > 0  # later epochs move the ratio past the clip range
