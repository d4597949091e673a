"""GRPOTrainer.train() for real, on CPU, in every gdro mode: budget, groups, advantages, feedback."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from trl import GRPOTrainer

from gdro_trl import GDROMixin

from .conftest import addition_dataset, grpo_args, noisy_verifier, tiny_model

BINS = {"classifier": {"num_bins": 4}}  # bins by per-completion pass rate
MODES = {
    "prompt-reweight": {"prompt": {"mode": "reweight", "eta": 5.0}, **BINS},
    "prompt-resample": {"prompt": {"mode": "resample"}, **BINS},
    "rollout-neyman": {"prompt": {"mode": "off"}, "rollout": {"mode": "neyman", "max": 8}, **BINS},
    "rollout-bandit": {"prompt": {"mode": "off"}, "rollout": {"mode": "bandit", "max": 8}, **BINS},
    "both": {
        "prompt": {"mode": "reweight", "eta": 5.0},
        "rollout": {"mode": "neyman", "max": 8},
        **BINS,
    },
}


class TRLAdvantages(GRPOTrainer):  # type: ignore[misc]
    """GRPOTrainer that keeps the advantages TRL itself computed for each generation batch."""

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output: dict[str, Any] = super()._generate_and_score_completions(inputs)
        self.trl_advantages = output["advantages"].clone()
        return output


class ProbedGDROTrainer(GDROMixin, TRLAdvantages):  # type: ignore[misc]
    """gdro over the probe: TRL's own advantages stay visible next to gdro's."""

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        self.scored_rows = Counter(int(row["gdro_prompt_id"]) for row in inputs)
        output: dict[str, Any] = super()._generate_and_score_completions(inputs)
        self.final_advantages = output["advantages"].clone()
        return output


def reference_advantages(rewards: np.ndarray, group: np.ndarray) -> np.ndarray:
    """GRPO's per-prompt normalisation, one group at a time: (r - mean) / (std + 1e-4)."""
    out = np.zeros_like(rewards)
    for g in np.unique(group):
        r = rewards[group == g]
        out[group == g] = (r - r.mean()) / (r.std(ddof=1) + 1e-4)
    return out


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_trains_with_the_exact_budget(mode: str, make_trainer: Any) -> None:
    trainer, rec = make_trainer(MODES[mode], trainer_cls=ProbedGDROTrainer, max_steps=10)
    out = trainer.train()
    assert out.global_step == 10
    records = rec.records
    assert len(records) == 5  # num_iterations=2: one generation per two steps
    for serial, record in enumerate(records, start=1):
        assert record.serial == serial and record.step == serial - 1  # one plan in flight
        # the step generated exactly the budget: 4 prompts x 4 completions on average
        assert record.prompt_ids.shape == (16,) and int(record.rollouts.sum()) == 16
        counts = Counter(record.prompt_ids.tolist())
        assert sorted(counts.values()) == sorted(record.rollouts.tolist())
        # each prompt's baseline and scale come from its own completions only
        ref = reference_advantages(record.rewards, record.group)
        np.testing.assert_allclose(record.grpo_advantages, ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(record.advantages, record.grpo_advantages * record.weights)
    # the rows TRL scored are the planned counts, and the loss gets gdro's advantages
    assert trainer.scored_rows == Counter(records[-1].prompt_ids.tolist())
    assert torch.equal(trainer.final_advantages, torch.from_numpy(records[-1].advantages))
    assert trainer.gdro.controller.step == 5
    logged = trainer.state.log_history[0]
    assert logged["gdro/completions"] == 16.0 and "gdro/pass@1" in logged
    assert "gdro/rollout/shadow_price" in logged and "gdro/prompt/entropy" in logged
    if "rollout" in MODES[mode]:
        assert any(len(set(r.rollouts.tolist())) > 1 for r in records), "groups stayed equal"
    else:  # equal groups: gdro's group advantages are TRL's own, bit for bit
        assert all(set(r.rollouts.tolist()) == {4} for r in records)
        assert torch.equal(trainer.trl_advantages, torch.from_numpy(records[-1].grpo_advantages))
    if MODES[mode]["prompt"]["mode"] == "reweight":
        assert any(np.ptp(r.weights) > 0 for r in records), "weights stayed uniform"
    else:
        assert all(np.all(r.weights == 1.0) for r in records)


def test_plain_trl_runs_the_same_configuration(tmp_path: Path) -> None:
    model, tok = tiny_model()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=noisy_verifier,
        args=grpo_args(tmp_path, max_steps=4),
        train_dataset=addition_dataset(),
        processing_class=tok,
    )
    trainer.train()
    assert trainer.state.global_step == 4
    assert not any(k.startswith("gdro/") for k in trainer.state.log_history[0])


def test_metrics_reach_the_reporter(
    make_trainer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    trainer, _ = make_trainer(
        {"rollout": {"mode": "neyman", "max": 8}},
        max_steps=4,
        logging_steps=2,
        report_to=["tensorboard"],
    )
    trainer.train()
    events = EventAccumulator(str(next(tmp_path.rglob("events.out.tfevents.*")).parent))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/gdro/completions", "train/gdro/solve_rate", "train/gdro/pass@1"} <= set(tags)
    assert "train/gdro/rollout/shadow_price" in tags
    assert [e.value for e in events.Scalars("train/gdro/completions")] == [16.0, 16.0]
