"""Shared pieces for the gdro_trl tests: TRL's real GRPOTrainer on CPU, nothing downloaded.

The policy is the embedded tiny Llama (character tokenizer, built in code); the prompts come from
the built-in addition task. An untrained model never solves addition, so the reward is a noisy
verifier whose pass rate depends on the prompt's digit count (80%, 40%, 10%): completions are
sampled, so each prompt gets a mix of rewards and the difficulty bins separate.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from trl import GRPOConfig  # noqa: E402

from gdro_torch.model import build_embedded  # noqa: E402
from gdro_torch.tasks import load_task  # noqa: E402

PASS_PERCENT = {1: 80, 2: 40, 3: 10}


def addition_dataset(size: int = 12) -> Dataset:
    """``size`` addition prompts of 1-3 digits, with their level."""
    task = load_task(f"addition:max_digits=3,size={size}")
    items = [task.train.item(i) for i in range(size)]
    return Dataset.from_dict(
        {"prompt": [it.prompt for it in items], "level": [it.level for it in items]}
    )


def noisy_verifier(
    prompts: list[str], completions: list[str], level: list[int], **_: Any
) -> list[float]:
    """1.0 for a completion whose hash falls under its level's pass rate, else 0.0."""
    return [
        1.0 if zlib.crc32((p + c).encode()) % 100 < PASS_PERCENT[lv] else 0.0
        for p, c, lv in zip(prompts, completions, level)
    ]


def grpo_args(out: Path, **overrides: Any) -> GRPOConfig:
    """A small CPU GRPOConfig: 4 prompts x 4 completions per generation batch."""
    base: dict[str, Any] = dict(
        output_dir=str(out),
        per_device_train_batch_size=16,
        num_generations=4,
        max_completion_length=3,
        max_steps=6,
        num_iterations=2,
        learning_rate=1e-3,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    base.update(overrides)
    return GRPOConfig(**base)


def tiny_model(seed: int = 0) -> tuple[Any, Any]:
    """The embedded 0.1M-parameter Llama and its tokenizer."""
    torch.manual_seed(seed)
    return build_embedded("tiny-llama-0.1m", seed=seed)


class Recorder(TrainerCallback):  # type: ignore[misc]
    """Collects gdro's record of every generation batch and the planned blocks awaiting
    generation when each optimizer step begins (after TRL has read that step's batches)."""

    def __init__(self) -> None:
        self.trainer: Any = None
        self.records: list[Any] = []
        self.in_flight: list[int] = []

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.in_flight.append(self.trainer.gdro.num_planned)


class Recording:
    """Mixed in before a gdro trainer: hands each generation batch's record to the Recorder."""

    recorder: Recorder

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output: dict[str, Any] = super()._generate_and_score_completions(inputs)  # type: ignore[misc]
        if self.model.training:  # type: ignore[attr-defined]
            self.recorder.records.append(self.gdro.last_record)  # type: ignore[attr-defined]
        return output


@pytest.fixture
def make_trainer(tmp_path: Path) -> Callable[..., tuple[Any, Recorder]]:
    """Build a GDROGRPOTrainer on the tiny model with a Recorder attached."""

    def make(
        gdro: Any = None,
        *,
        dataset: Dataset | None = None,
        trainer_cls: Any = None,
        reward_funcs: Any = noisy_verifier,
        eval_dataset: Dataset | None = None,
        out: Path | None = None,
        **overrides: Any,
    ) -> tuple[Any, Recorder]:
        from gdro_trl import GDROGRPOTrainer

        base = trainer_cls or GDROGRPOTrainer
        cls = type(f"Recording{base.__name__}", (Recording, base), {})
        model, tok = tiny_model()
        recorder = Recorder()
        cls.recorder = recorder
        trainer = cls(
            model=model,
            reward_funcs=reward_funcs,
            args=grpo_args(out or tmp_path / "run", **overrides),
            train_dataset=dataset if dataset is not None else addition_dataset(),
            eval_dataset=eval_dataset,
            processing_class=tok,
            callbacks=[recorder],
            gdro=gdro,
        )
        recorder.trainer = trainer
        return trainer, recorder

    return make
