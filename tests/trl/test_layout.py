"""TRL reads batches ahead of their feedback; gdro keeps exactly that many plans in flight."""

from __future__ import annotations

from typing import Any

import pytest

from gdro_trl.layout import TRLLayout

from .conftest import addition_dataset

GDRO = {"prompt": {"mode": "reweight"}, "rollout": {"mode": "neyman", "max": 8}}


@pytest.mark.parametrize(
    ("accum", "per_generation", "iterations", "expected"),
    [
        (1, 1, 1, 2),  # TRL's defaults: the next batch is read before this one is scored
        (2, 2, 1, 2),
        (2, 1, 1, 3),  # a generation per micro-batch, two micro-batches per optimizer step
        (1, 1, 2, 1),
        (1, 2, 1, 1),
        (3, 2, 1, 2),
    ],
)
def test_plans_in_flight_match_what_trl_reads_ahead(
    accum: int, per_generation: int, iterations: int, expected: int, make_trainer: Any
) -> None:
    steps = max(4, 8 // accum)
    trainer, rec = make_trainer(
        GDRO,
        dataset=addition_dataset(24),
        gradient_accumulation_steps=accum,
        steps_per_generation=per_generation,
        per_device_train_batch_size=16 // per_generation,
        num_iterations=iterations,
        max_steps=steps,
    )
    layout = trainer.gdro.layout
    assert layout == TRLLayout(
        prompts=4,
        mean=4,
        repeat=per_generation * iterations,
        blocks_per_epoch=6,
        max_in_flight=expected,
    )
    trainer.train()
    assert trainer.gdro.controller.max_in_flight == expected
    assert max(rec.in_flight) == expected  # observed when each optimizer step begins
    generations = steps * accum // (per_generation * iterations)
    assert trainer.gdro.controller.step == generations  # every block fed back, none expired
    assert [r.serial for r in rec.records] == list(range(1, len(rec.records) + 1))
    lag = [r.serial - 1 - r.step for r in rec.records]  # feedback missing when planned
    assert max(lag) == expected - 1
