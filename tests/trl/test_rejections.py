"""Settings gdro cannot work with are rejected before training, with the setting named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from datasets import IterableDataset

from gdro_core import PromptConfig, RolloutConfig
from gdro_trl import GDROConfig, GDROGRPOTrainer

from .conftest import addition_dataset, grpo_args, noisy_verifier, tiny_model


def build(tmp_path: Path, gdro: Any = None, dataset: Any = None, **overrides: Any) -> Any:
    model, tok = tiny_model()
    return GDROGRPOTrainer(
        model=model,
        reward_funcs=noisy_verifier,
        args=grpo_args(tmp_path, **overrides),
        train_dataset=addition_dataset() if dataset is None else dataset,
        processing_class=tok,
        gdro=gdro,
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dataloader_num_workers": 2}, "dataloader_num_workers must be 0"),
        ({"ignore_data_skip": True}, "ignore_data_skip must be False"),
        ({"accelerator_config": {"dispatch_batches": True}}, "dispatch_batches must be False"),
        ({"per_device_train_batch_size": 32, "num_iterations": 1}, "must hold at least 16 prompts"),
    ],
)
def test_trl_settings_that_cannot_work(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build(tmp_path, **overrides)


def test_the_mean_budget_is_num_generations(tmp_path: Path) -> None:
    gdro = GDROConfig(rollout=RolloutConfig(mode="neyman", mean=8, max=12))
    with pytest.raises(ValueError, match="rollout.mean must equal GRPOConfig.num_generations"):
        build(tmp_path, gdro=gdro)


def test_loss_signals_are_rejected() -> None:
    with pytest.raises(ValueError, match="prompt.signal must be a reward-derived signal"):
        GDROConfig(prompt=PromptConfig(mode="reweight", signal="loss"))
    with pytest.raises(ValueError, match="arm_signal must be 'variance'"):
        GDROConfig(rollout=RolloutConfig(mode="bandit", mean=4, arm_signal="loss"))


def test_datasets_without_stable_ids(tmp_path: Path) -> None:
    stream = IterableDataset.from_generator(lambda: iter([{"prompt": "1+1="}] * 8))
    with pytest.raises(TypeError, match="map-style datasets.Dataset"):
        build(tmp_path, dataset=stream, accelerator_config={"dispatch_batches": False})
    stamped = addition_dataset().add_column("gdro_prompt_id", list(range(12)))
    with pytest.raises(ValueError, match="must not have a 'gdro_prompt_id' column"):
        build(tmp_path, dataset=stamped)


def test_unknown_options_and_reward_functions(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="has no option 'rollouts'"):
        build(tmp_path, gdro={"rollouts": {"mode": "neyman"}})
    with pytest.raises(ValueError, match=r"reward_func must be one of .*\['noisy_verifier'\]"):
        build(tmp_path, gdro={"reward_func": "accuracy"})
    with pytest.raises(TypeError, match="gdro must be a GDROConfig, a mapping or None"):
        build(tmp_path, gdro="reweight")
    with pytest.raises(ValueError, match="pass_at_k must be <= the fewest completions"):
        build(tmp_path, gdro={"rollout": {"mode": "neyman", "min": 2}, "pass_at_k": [3]})


def test_a_rejected_trainer_leaves_the_dataset_alone(tmp_path: Path) -> None:
    data = addition_dataset()
    with pytest.raises(ValueError):
        build(tmp_path, dataset=data, dataloader_num_workers=1)
    assert data.column_names == ["prompt", "level"]
