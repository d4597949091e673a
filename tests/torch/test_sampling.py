"""The variance-weighted sampler: the lab's strategy step for step, and in ``gdro train``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gdro_torch.config import TrainConfig
from gdro_torch.loop import Hooks, train
from gdro_torch.rundir import read_metrics
from gdro_torch.sampling import VarianceSampler


def test_it_draws_what_the_lab_strategy_draws() -> None:
    """Fed the same group outcomes, it picks the same prompts as the lab's VarianceSampling."""
    from gdro_core import RolloutConfig
    from gdro_lab.learner import Generation
    from gdro_lab.strategies import VarianceSampling

    n, batch, rollouts = 50, 6, 4
    lab = VarianceSampling(
        num_prompts=n, batch_size=batch, seed=7, rollout=RolloutConfig(mean=rollouts)
    )
    ours = VarianceSampler(n, seed=7)
    rate = np.random.default_rng(1).random(n)  # each prompt's true pass rate
    outcomes = np.random.default_rng(2)
    for _ in range(30):
        proposal = lab.propose()
        ids = ours.sample(batch)
        assert ids.tolist() == proposal.ids.tolist()
        reward = (outcomes.random((batch, rollouts)) < rate[ids, None]).astype(np.float64)
        lab.observe(
            proposal,
            Generation(
                success=reward.ravel() > 0.5,
                reward=reward.ravel(),
                signal=np.zeros(batch),
                prob=rate[ids],
                levels=np.zeros(batch, np.int64),
            ),
        )
        ours.observe(ids, reward.sum(axis=1).astype(np.int64), np.full(batch, rollouts))
    # the weights: max(p(1-p), 0.01) of the latest group, 0.25 for a prompt never seen
    seen = ours.last_total > 0
    p = ours.last_correct[seen] / ours.last_total[seen]
    assert ours.weights(np.flatnonzero(seen)).tolist() == pytest.approx(
        np.maximum(p * (1 - p), 0.01).tolist()
    )
    assert set(ours.weights(np.flatnonzero(~seen)).tolist()) <= {0.25}


def test_bad_input_is_refused_and_changes_nothing() -> None:
    s = VarianceSampler(10, seed=0)
    with pytest.raises(ValueError, match="batch_size must be an integer in"):
        s.sample(0)
    with pytest.raises(ValueError, match=r"correct must be in \[0, total\]"):
        s.observe([1, 2], [3, 0], [2, 2])
    with pytest.raises(ValueError, match=r"ids must be in \[0, 10\)"):
        s.observe([10], [0], [2])
    assert not s.last_total.any()
    with pytest.raises(ValueError, match="floor must be in"):
        VarianceSampler(10, seed=0, floor=0.5)
    with pytest.raises(ValueError, match="cannot be combined with --prompt.mode resample"):
        TrainConfig(sampler="variance", controller={"prompt": {"mode": "resample"}})


def test_train_with_the_variance_sampler_logs_the_controller_and_resumes_exactly(
    tiny_cfg: TrainConfig, tmp_path: Path
) -> None:
    cfg = tiny_cfg.replace(
        sampler="variance",
        controller={"prompt": {"mode": "off"}, "rollout": {"mode": "fixed"}},
        steps=4,
        checkpoint_every=2,
        eval_every=2,
    )
    train(cfg, tmp_path / "full")
    full = read_metrics(tmp_path / "full" / "metrics.jsonl")
    steps = full[1:]
    assert [r["train/rollouts"] for r in steps] == [cfg.batch_size * cfg.controller.rollout.mean] * 4
    for r in steps:  # the controller plans and learns from every batch: its metrics are there
        assert {"mechanism/visits_mean", "classifier/mean_bin", "sampler/weight_mean"} <= set(r)
    assert steps[0]["sampler/unseen"] == 1.0 and steps[0]["sampler/weight_mean"] == 0.25
    assert steps[-1]["mechanism/visits_mean"] == pytest.approx(4 * cfg.batch_size / 200)
    # tokens: the responses' tokens (rollouts x mean response length), summed step by step
    for r in steps:
        assert r["train/tokens"] == pytest.approx(r["train/rollouts"] * r["train/response_len"])
    assert [r["train/tokens_cum"] for r in steps] == pytest.approx(
        np.cumsum([r["train/tokens"] for r in steps]).tolist()
    )
    assert [r["train/rollouts_cum"] for r in steps] == [32.0, 64.0, 96.0, 128.0]
    state = torch.load(
        tmp_path / "full" / "checkpoints" / "step-000004" / "trainer.pt", weights_only=True
    )
    assert int(state["sampler"]["last_total"].sum()) > 0

    done: list[int] = []
    hooks = Hooks(on_step=lambda s, total, m: done.append(s), should_stop=lambda: len(done) >= 3)
    train(cfg, tmp_path / "part", hooks=hooks)
    (tmp_path / "part" / "checkpoints" / "latest").write_text("step-000002\n")
    train(cfg, tmp_path / "part", resume=True)

    def strip(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if not k.startswith("timing/")} for r in rows]

    assert strip(read_metrics(tmp_path / "part" / "metrics.jsonl")) == strip(full)
    assert json.loads((tmp_path / "full" / "config.json").read_text())["sampler"] == "variance"
