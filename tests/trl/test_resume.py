"""Checkpoints: the controller is saved with TRL's checkpoints and resume continues exactly."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from gdro_trl import GDROGRPOTrainer

from .conftest import addition_dataset, same_state

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


def full_plans(
    records: list[Any],
) -> dict[int, tuple[list[int], list[int], list[float], list[float]]]:
    """Each fed-back step's rows in order: prompt ids, counts, weights and rewards."""
    return {
        r.serial: (
            r.prompt_ids.tolist(),
            r.rollouts.tolist(),
            r.weights.tolist(),
            r.rewards.tolist(),
        )
        for r in records
        if not r.regenerated
    }


def made(plans: list[Any]) -> dict[int, tuple[list[int], list[int], list[float]]]:
    """The controller's plans by serial: prompt ids, counts and weights."""
    return {
        p.serial: (p.prompt_ids.tolist(), p.rollouts.tolist(), p.weights.tolist()) for p in plans
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "in_flight", "resume_at"),
    [
        # a generation per step: TRL reads the next block before the step ends, 2 in flight.
        # 12 prompts are 3 blocks: steps 3 and 6 end an epoch; at step 5 the epoch's rows are
        # all read but its last block is planned and not generated
        ({"num_iterations": 1}, 2, (3, 5, 6)),
        # two generation batches per optimizer step: 3 in flight
        (
            {"num_iterations": 1, "gradient_accumulation_steps": 2, "steps_per_generation": 1},
            3,
            (1, 2),
        ),
        # one generation batch read in two halves (steps_per_generation=2)
        (
            {
                "num_iterations": 1,
                "per_device_train_batch_size": 8,
                "gradient_accumulation_steps": 2,
                "steps_per_generation": 2,
            },
            2,
            (3, 4),
        ),
        # two iterations: at step 5 the epoch's last block is in the middle of its reuse
        ({"num_iterations": 2}, 1, (5,)),
    ],
)
def test_resume_with_several_plans_in_flight(
    overrides: dict[str, Any],
    in_flight: int,
    resume_at: tuple[int, ...],
    make_trainer: Any,
    tmp_path: Path,
) -> None:
    full, rec_full = make_trainer(
        GDRO, out=tmp_path / "full", max_steps=8, save_strategy="steps", save_steps=1, **overrides
    )
    assert full.gdro.layout.max_in_flight == in_flight
    full.train()
    before, made_before = full_plans(rec_full.records), made(rec_full.plans)
    last = max(before)
    for step in resume_at:
        resumed, rec = make_trainer(
            GDRO, out=tmp_path / f"resumed-{step}", max_steps=8, **overrides
        )
        resumed.train(resume_from_checkpoint=str(tmp_path / "full" / f"checkpoint-{step}"))
        after = full_plans(rec.records)
        assert not [r for r in rec.records if r.regenerated]
        # every block fed back after the resume, and no other, exactly as in the full run
        assert sorted(after) == list(range(min(after), last + 1)), step
        assert {s: before[s] for s in after} == after, step
        # the plans made after the resume are the full run's plans of the same serial
        assert rec.plans and {p.serial: made_before[p.serial] for p in rec.plans} == made(rec.plans)
        assert same_state(full.gdro.controller.state_dict(), resumed.gdro.controller.state_dict())


def test_resume_needs_the_same_train_set(make_trainer: Any, tmp_path: Path) -> None:
    full, _ = make_trainer(
        GDRO, out=tmp_path / "full", max_steps=2, save_strategy="steps", save_steps=2
    )
    full.train()
    data = addition_dataset()
    others = {
        "reordered": data.select(range(len(data) - 1, -1, -1)),  # each id names another prompt
        "other prompts": data.map(lambda row: {"prompt": "0" + row["prompt"]}),
    }
    for name, dataset in others.items():
        assert len(dataset) == len(data)
        other, _ = make_trainer(GDRO, out=tmp_path / name, max_steps=4, dataset=dataset)
        with pytest.raises(ValueError, match="train_fingerprint is '[0-9a-f]+' but this run has"):
            other.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
        assert other.gdro.controller.step == 0 and other.gdro.num_planned == 0, name


def test_state_formats(tmp_path: Path) -> None:
    from gdro_trl import GDROConfig
    from gdro_trl.layout import TRLLayout
    from gdro_trl.runtime import GDRORuntime

    layout = TRLLayout.from_sizes(
        num_prompts=12,
        generation_batch_size=16,
        num_generations=4,
        steps_per_generation=1,
        num_iterations=1,
        gradient_accumulation_steps=1,
    )
    config = GDROConfig.from_mapping(GDRO, num_generations=4)

    def runtime(fingerprint: str) -> GDRORuntime:
        return GDRORuntime(config, layout, num_prompts=12, train_fingerprint=fingerprint)

    saved = runtime("aa")
    saved.block_rows(epoch=0, position=0)
    saved.save(tmp_path)
    state_file = tmp_path / "runtime.json"
    state = json.loads(state_file.read_text())
    assert state["format_version"] == 2 and state["train_fingerprint"] == "aa"
    with pytest.raises(ValueError, match="train_fingerprint is 'aa' but this run has 'bb'"):
        runtime("bb").load(tmp_path)
    # format 1 had no fingerprint: it still loads, unchecked
    del state["train_fingerprint"]
    state_file.write_text(json.dumps({**state, "format_version": 1}))
    loaded = runtime("bb")
    loaded.load(tmp_path)
    assert loaded.num_planned == 1 and len(loaded.controller.in_flight()) == 1
    state_file.write_text(json.dumps({**state, "format_version": 3}))
    with pytest.raises(ValueError, match=r"format_version must be one of \(1, 2\).*got 3"):
        runtime("aa").load(tmp_path)


class SaveOrder(GDROGRPOTrainer):  # type: ignore[misc]
    """Notes, when TRL starts writing a checkpoint, which gdro files are already there."""

    gdro_files_first: list[list[str]]

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        if _internal_call and output_dir is not None:
            gdro = os.path.join(output_dir, "gdro")
            found = sorted(os.listdir(gdro)) if os.path.isdir(gdro) else []
            self.__dict__.setdefault("gdro_files_first", []).append(found)
        super().save_model(output_dir, _internal_call)


def test_gdro_state_is_written_before_trls_checkpoint(make_trainer: Any, tmp_path: Path) -> None:
    trainer, _ = make_trainer(
        GDRO, trainer_cls=SaveOrder, max_steps=3, save_strategy="steps", save_steps=1
    )
    trainer.train()
    # a checkpoint TRL has begun (let alone completed) holds gdro's state; mid-reuse (steps 1
    # and 3 with num_iterations=2) also the buffered completions
    assert trainer.gdro_files_first == [
        ["buffer-rank0.pt", "controller.npz", "runtime.json"],
        ["controller.npz", "runtime.json"],
        ["buffer-rank0.pt", "controller.npz", "runtime.json"],
    ]
