"""Fixtures for the torch-loop tests: a 0.1 M-parameter model, a small task, short runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gdro_torch.config import TrainConfig

TASK = "addition:max_digits=3,size=200,eval_size=16"


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never touch the user's SFT cache; share one cache across the session's tests."""
    monkeypatch.setenv("GDRO_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "sft-cache"))


@pytest.fixture
def tiny_cfg() -> TrainConfig:
    """Three GRPO steps of 8 prompts on the 0.1 M model after 20 SFT steps."""
    return TrainConfig(
        model="tiny-llama-0.1m",
        task=TASK,
        steps=3,
        batch_size=8,
        sft_steps=20,
        eval_every=0,
        checkpoint_every=0,
        micro_batch=16,
        seed=0,
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 0.1 M model saved as a local transformers directory (as ``--model PATH`` takes)."""
    from gdro_torch.model import build_embedded, save_model_dir

    path = tmp_path_factory.mktemp("models") / "tiny"
    model, tok = build_embedded("tiny-llama-0.1m", seed=0)
    save_model_dir(model, tok, path)
    return path


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    # one thread: tiny models gain nothing from two, and a shared CI machine cannot slow a
    # single thread into OpenMP spin-waits
    torch.set_num_threads(1)
    torch.manual_seed(0)
