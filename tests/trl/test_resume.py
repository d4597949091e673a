"""Checkpoints: the controller is saved with TRL's checkpoints and resume continues exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

GDRO = {
    "prompt": {"mode": "reweight", "eta": 5.0},
    "rollout": {"mode": "bandit", "max": 8},
    "classifier": {"num_bins": 4},
}


def plans(records: list[Any]) -> dict[int, tuple[list[int], list[int], list[float]]]:
    """Each fed-back step's plan: prompt ids per row (sorted), counts and weights per row."""
    return {
        r.serial: (
            sorted(r.prompt_ids.tolist()),
            sorted(r.rollouts.tolist()),
            sorted(r.weights.tolist()),
        )
        for r in records
        if not r.regenerated
    }


def same_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, dict):
            if not isinstance(y, dict) or not same_state(x, y):
                return False
        elif isinstance(x, np.ndarray):
            if not np.array_equal(x, np.asarray(y)):
                return False
        elif x != y:
            return False
    return True


@pytest.mark.parametrize("resume_at", [4, 3])  # 3 is in the middle of a block's reuse
def test_resume_continues_the_plans_exactly(
    resume_at: int, make_trainer: Any, tmp_path: Path
) -> None:
    full, rec_full = make_trainer(
        GDRO, out=tmp_path / "full", max_steps=10, save_strategy="steps", save_steps=1
    )
    full.train()
    checkpoint = tmp_path / "full" / f"checkpoint-{resume_at}"
    assert (checkpoint / "gdro" / "controller.npz").is_file()

    resumed, rec_resumed = make_trainer(GDRO, out=tmp_path / "resumed", max_steps=10)
    resumed.train(resume_from_checkpoint=str(checkpoint))

    assert resumed.state.global_step == 10
    before, after = plans(rec_full.records), plans(rec_resumed.records)
    first = min(after)
    assert first == (resume_at + 1) // 2 + 1 and sorted(after) == list(range(first, 6))
    assert {s: before[s] for s in after} == after
    assert any(len(set(r.rollouts.tolist())) > 1 for r in rec_resumed.records)
    regenerated = [r for r in rec_resumed.records if r.regenerated]
    assert not regenerated  # the buffered completions of a block resumed mid-reuse were kept
    assert same_state(full.gdro.controller.state_dict(), resumed.gdro.controller.state_dict())


def test_resume_needs_gdro_state(make_trainer: Any, tmp_path: Path) -> None:
    from trl import GRPOTrainer

    from .conftest import addition_dataset, grpo_args, noisy_verifier, tiny_model

    model, tok = tiny_model()
    plain = GRPOTrainer(
        model=model,
        reward_funcs=noisy_verifier,
        args=grpo_args(tmp_path / "plain", max_steps=2, save_strategy="steps", save_steps=2),
        train_dataset=addition_dataset(),
        processing_class=tok,
    )
    plain.train()
    trainer, _ = make_trainer(GDRO, out=tmp_path / "gdro", max_steps=4)
    with pytest.raises(FileNotFoundError, match="holds no gdro state"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "plain" / "checkpoint-2"))


def test_a_resume_without_the_buffered_completions_regenerates_them(
    make_trainer: Any, tmp_path: Path
) -> None:
    full, _ = make_trainer(
        GDRO, out=tmp_path / "full", max_steps=4, save_strategy="steps", save_steps=3
    )
    full.train()
    checkpoint = tmp_path / "full" / "checkpoint-3"
    (checkpoint / "gdro" / "buffer-rank0.pt").unlink()  # e.g. resumed on another world size
    resumed, rec = make_trainer(GDRO, out=tmp_path / "resumed", max_steps=6)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    first = rec.records[0]
    assert first.regenerated and first.serial == 2  # block 2 again, not fed back twice
    assert [r.serial for r in rec.records[1:]] == [3]
    assert resumed.gdro.controller.step == 3


def test_training_again_drops_the_blocks_read_ahead(make_trainer: Any) -> None:
    trainer, rec = make_trainer(GDRO, max_steps=2, num_iterations=1)
    trainer.train()
    assert trainer.gdro.num_planned == 1  # the next block was read before training stopped
    trainer.train()  # a new dataloader: that block is cancelled, not left in flight
    assert trainer.gdro.controller.step == 4 and len(trainer.gdro.controller.in_flight()) == 1


def test_resume_needs_the_same_batch_layout(make_trainer: Any, tmp_path: Path) -> None:
    full, _ = make_trainer(
        GDRO, out=tmp_path / "full", max_steps=2, save_strategy="steps", save_steps=2
    )
    full.train()
    other, _ = make_trainer(GDRO, out=tmp_path / "other", max_steps=4, num_iterations=1)
    with pytest.raises(ValueError, match=r"layout is \[4, 4, 2\] but this run has \[4, 4, 1\]"):
        other.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    assert other.gdro.controller.step == 0 and other.gdro.num_planned == 0
