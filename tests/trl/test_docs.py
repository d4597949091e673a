"""The docs' three-line change and the example script run as written."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import addition_dataset, grpo_args, noisy_verifier, tiny_model

ROOT = Path(__file__).resolve().parents[2]


def quickstart_block() -> str:
    text = (ROOT / "docs" / "trl.md").read_text()
    marker = text.index("<!-- trl-quickstart")
    match = re.search(r"```python\n(.*?)```", text[marker:], re.S)
    assert match is not None
    return match.group(1)


def test_the_docs_snippet_trains(tmp_path: Path) -> None:
    model, tokenizer = tiny_model()
    namespace: dict[str, Any] = {
        "model": model,
        "tokenizer": tokenizer,
        "reward_funcs": [noisy_verifier],
        "training_args": grpo_args(tmp_path, max_steps=4),
        "train_dataset": addition_dataset(),
    }
    code = quickstart_block()
    assert len([line for line in code.splitlines() if "was:" in line]) == 2  # + the gdro= line
    exec(compile(code, "docs/trl.md", "exec"), namespace)
    trainer = namespace["trainer"]
    assert trainer.state.global_step == 4 and trainer.gdro.controller.step == 2
    assert trainer.gdro.rollout_config.mode == "neyman"
    assert trainer.gdro.config.prompt.mode == "reweight"


def test_the_example_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["grpo_gdro.py", "--steps", "2", "--rollout", "neyman", "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(ROOT / "examples" / "trl" / "grpo_gdro.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "trained 2 steps" in out
    assert "last step: 32 completions for 8 prompts" in out


def test_evaluation_is_left_to_trl(make_trainer: Any) -> None:
    trainer, rec = make_trainer(
        {"rollout": {"mode": "neyman", "max": 8}},
        max_steps=4,
        eval_strategy="steps",
        eval_steps=2,
        per_device_eval_batch_size=8,
        eval_dataset=addition_dataset(8),
    )
    trainer.train()
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert len(evals) == 2 and not any(k.startswith("eval_gdro") for k in evals[0])
    assert trainer.gdro.controller.step == 2 == len(rec.records)  # only training is fed back
