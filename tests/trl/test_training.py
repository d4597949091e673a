"""GRPOTrainer.train() for real, on CPU, in every gdro mode: budget, groups, advantages, feedback.

Every run is checked against a reference controller fed by hand from what the reward functions
returned for each prompt text (:func:`conftest.check_run`): the plans, the completions per prompt
and the advantage the loss got for every completion.
"""

from __future__ import annotations

import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from trl import GRPOTrainer

from gdro_trl import GDROMixin

from .conftest import addition_dataset, check_run, noisy_verifier

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
        if self.model.training:
            self.__dict__.setdefault("trl_advantages", []).append(output["advantages"].clone())
        return output


class ProbedGDROTrainer(GDROMixin, TRLAdvantages):  # type: ignore[misc]
    """gdro over the probe: TRL's own advantages stay visible next to gdro's."""

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        self.scored_rows = Counter(int(row["gdro_prompt_id"]) for row in inputs)
        return super()._generate_and_score_completions(inputs)  # type: ignore[no-any-return]


def parity_reward(completions: list[str], **_: Any) -> list[float]:
    """1.0 for a completion of even length: a second reward that changes which are correct."""
    return [float(len(c) % 2 == 0) for c in completions]


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_trains_with_the_exact_budget(mode: str, make_trainer: Any) -> None:
    trainer, rec = make_trainer(MODES[mode], trainer_cls=ProbedGDROTrainer, max_steps=10)
    out = trainer.train()
    assert out.global_step == 10
    records = rec.records
    assert len(records) == 5  # num_iterations=2: one generation per two steps
    equal = "rollout" not in MODES[mode]
    # the plans, counts, weights and the loss's advantages, against the hand-fed reference
    check_run(
        trainer,
        rec,
        addition_dataset(),
        grpo_advantages=[a.numpy() for a in trainer.trl_advantages] if equal else None,
    )
    for serial, record in enumerate(records, start=1):
        assert record.serial == serial and record.step == serial - 1  # one plan in flight
        # the step generated exactly the budget: 4 prompts x 4 completions on average
        assert record.prompt_ids.shape == (16,) and int(record.rollouts.sum()) == 16
        np.testing.assert_array_equal(record.advantages, rec.loss_advantages[serial - 1])
    # the rows TRL scored are the planned counts
    assert trainer.scored_rows == Counter(records[-1].prompt_ids.tolist())
    assert trainer.gdro.controller.step == 5
    logged = trainer.state.log_history[0]
    assert logged["gdro/completions"] == 16.0 and "gdro/pass@1" in logged
    assert "gdro/rollout/shadow_price" in logged and "gdro/prompt/entropy" in logged
    if not equal:
        assert any(len(set(r.rollouts.tolist())) > 1 for r in records), "groups stayed equal"
    else:  # equal groups: gdro's group advantages are TRL's own, bit for bit
        assert all(set(r.rollouts.tolist()) == {4} for r in records)
        for record, trl in zip(records, trainer.trl_advantages):
            assert torch.equal(trl, torch.from_numpy(record.grpo_advantages))
    if MODES[mode]["prompt"]["mode"] == "reweight":
        assert any(np.ptp(r.weights) > 0 for r in records), "weights stayed uniform"
    else:
        assert all(np.all(r.weights == 1.0) for r in records)


@pytest.mark.parametrize("aggregation", ["sum_then_normalize", "normalize_then_sum"])
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_equal_groups_get_trls_advantages_in_every_setting(
    scale: str, aggregation: str, make_trainer: Any
) -> None:
    trainer, rec = make_trainer(
        {"prompt": {"mode": "reweight", "eta": 5.0}, **BINS},
        trainer_cls=ProbedGDROTrainer,
        reward_funcs=[noisy_verifier, parity_reward],
        reward_weights=[1.0, 0.5],
        scale_rewards=scale,
        multi_objective_aggregation=aggregation,
        num_iterations=1,  # a generation per step, two planned blocks in flight
        max_steps=6,
    )
    trainer.train()
    assert len(rec.records) == 6
    for record, trl in zip(rec.records, trainer.trl_advantages, strict=True):
        assert torch.equal(trl, torch.from_numpy(record.grpo_advantages))  # TRL's, bit for bit
    assert any(np.ptp(r.weights) > 0 for r in rec.records)
    # and the loss got TRL's advantage times the weight of the completion's own prompt
    trl = [a.numpy() for a in trainer.trl_advantages]
    check_run(trainer, rec, addition_dataset(), grpo_advantages=trl)


def sometimes_unscorable(
    prompts: list[str], completions: list[str], level: list[int], **_: Any
) -> list[float | None]:
    """The noisy verifier, but None (cannot score) for about one completion in five."""
    scores = noisy_verifier(prompts, completions, level)
    return [
        None if zlib.crc32((c + p).encode()) % 5 == 0 else s
        for p, c, s in zip(prompts, completions, scores)
    ]


def test_unscorable_completions_leave_the_baseline_and_count_as_incorrect(
    make_trainer: Any,
) -> None:
    trainer, rec = make_trainer(MODES["both"], reward_funcs=sometimes_unscorable, max_steps=6)
    trainer.train()
    missing = [np.isnan(r.rewards) for r in rec.records]
    assert sum(int(m.sum()) for m in missing) > 0, "no completion was unscorable"
    for unscorable, advantages in zip(missing, rec.loss_advantages):
        assert np.all(advantages[unscorable] == 0.0)
    # the reference leaves them out of the baseline and feeds them back as incorrect (0)
    check_run(trainer, rec, addition_dataset())
    logged = [
        h["gdro/missing_rollouts"] for h in trainer.state.log_history if "gdro/completions" in h
    ]
    assert logged == [float(m.sum()) for m in missing]  # one generation per logging window


def test_a_named_reward_function_decides_correctness(make_trainer: Any) -> None:
    gdro = {**MODES["both"], "reward_func": "noisy_verifier"}
    trainer, rec = make_trainer(gdro, reward_funcs=[noisy_verifier, parity_reward], max_steps=6)
    trainer.train()
    assert trainer.gdro.reward_index == 0
    calls = [c for batch in rec.reward_calls for c in batch.values()]
    named = np.concatenate([c.rewards for c in calls[0::2]])
    total = named + np.concatenate([c.rewards for c in calls[1::2]])
    assert np.any((named > 0.5) != (total > 0.5))  # the choice changes what is correct
    check_run(trainer, rec, addition_dataset())  # the reference is fed noisy_verifier alone


def verifier_from_text(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
    """The noisy verifier with the level read from the prompt (no dataset column needed)."""
    assert "level" not in kwargs and "gdro_prompt_id" in kwargs
    level = [min(3, max(len(t) for t in p.rstrip("=").split("+"))) for p in prompts]
    return noisy_verifier(prompts, completions, level)


def test_remove_unused_columns_keeps_the_prompt_id(make_trainer: Any) -> None:
    trainer, rec = make_trainer(
        MODES["both"], reward_funcs=verifier_from_text, remove_unused_columns=True, max_steps=6
    )
    trainer.train()
    keys = rec.reward_calls[0]["verifier_from_text"].keys
    assert "level" not in keys and "gdro_prompt_id" in keys  # TRL removed the other columns
    check_run(trainer, rec, addition_dataset())


def test_the_controller_seed_defaults_to_trls(make_trainer: Any) -> None:
    first_blocks = {}
    for seed in (0, 1):
        trainer, _ = make_trainer(MODES["both"], seed=seed)
        assert trainer.gdro.config.seed == seed
        first_blocks[seed] = trainer.gdro.block_rows(epoch=0, position=0).tolist()
    assert first_blocks[0] != first_blocks[1]  # another GRPOConfig.seed, other plans
    pinned = [
        make_trainer({**MODES["both"], "seed": 7}, seed=seed)[0].gdro.block_rows(
            epoch=0, position=0
        )
        for seed in (0, 1)
    ]
    assert pinned[0].tolist() == pinned[1].tolist()  # gdro.seed set: TRL's seed changes nothing


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
