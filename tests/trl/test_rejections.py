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
    with pytest.raises(ValueError, match=r"GDROConfig\.pass_at_k must be <= 2 \(the fewest completions a prompt gets: .*got \[3\]"):
        build(tmp_path, gdro={"rollout": {"mode": "neyman", "min": 2}, "pass_at_k": [3]})


def test_a_rejected_trainer_leaves_the_dataset_alone(tmp_path: Path) -> None:
    data = addition_dataset()
    with pytest.raises(ValueError):
        build(tmp_path, dataset=data, dataloader_num_workers=1)
    assert data.column_names == ["prompt", "level"]


@pytest.mark.parametrize(
    ("gdro", "named"),
    [
        ({"prompt": {"mode": "reweight"}}, "Prompt-GDRO reweight"),
        ({"prompt": {"mode": "resample"}, "rollout": {"mode": "neyman"}}, "Rollout-GDRO neyman"),
    ],
)
def test_a_generation_batch_of_one_prompt_is_rejected(
    tmp_path: Path, gdro: dict[str, Any], named: str
) -> None:
    # 4 completions per device and num_generations=4: one prompt per generation batch
    message = (
        rf"prompts per generation batch\) must be >= 2 with {named}: .*"
        r"generation_batch_size=4 .* 1 prompt\. Raise .* generation_batch_size >= 8"
    )
    with pytest.raises(ValueError, match=message):
        build(tmp_path, gdro=gdro, per_device_train_batch_size=4)


def test_resampling_alone_works_on_one_prompt_per_batch(tmp_path: Path) -> None:
    trainer = build(tmp_path, gdro={"prompt": {"mode": "resample"}}, per_device_train_batch_size=4)
    assert trainer.gdro.layout.prompts == 1  # the sampling distribution still picks the prompt


def one_row_rollout(group_by_num_generations: bool) -> Any:
    """A TRL ``rollout_func`` on CPU: each completion is its prompt's first two tokens and a digit.

    ``group_by_num_generations``: generate for every ``num_generations``-th row and attach the
    completions to the following rows, as TRL's own server path does.
    """

    def rollout_func(prompts: list[str], trainer: Any) -> dict[str, Any]:
        n = trainer.num_generations
        source = (
            [p for p in prompts[::n] for _ in range(n)] if group_by_num_generations else prompts
        )
        prompt_ids = [list(ids) for ids in trainer.processing_class(source)["input_ids"]]
        digits = trainer.processing_class([str(i % 10) for i in range(len(source))])["input_ids"]
        completion_ids = [[*ids[:2], d[-1]] for ids, d in zip(prompt_ids, digits, strict=True)]
        logprobs = [[-1.0] * len(c) for c in completion_ids]
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": logprobs}

    return rollout_func


def test_a_rollout_func_grouping_rows_by_num_generations_is_rejected(
    make_trainer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")  # TRL's note that rollout_func is new
    gdro = {"rollout": {"mode": "neyman", "max": 8}, "classifier": {"num_bins": 4}}
    trainer, rec = make_trainer(
        gdro, max_steps=10, trainer_kwargs={"rollout_func": one_row_rollout(False)}
    )
    trainer.train()  # one completion per row: fine, with unequal groups
    assert any(len(set(r.rollouts.tolist())) > 1 for r in rec.records)
    trainer, rec = make_trainer(
        gdro, max_steps=10, trainer_kwargs={"rollout_func": one_row_rollout(True)}
    )
    with pytest.raises(RuntimeError, match="must generate one completion per row"):
        trainer.train()
    assert rec.records and all(set(r.rollouts.tolist()) == {4} for r in rec.records)


def test_pass_at_k_and_seed_accept_what_yaml_and_numpy_give() -> None:
    import numpy as np
    from omegaconf import OmegaConf

    raw = OmegaConf.create({"pass_at_k": [2, 1, 2], "seed": 3})
    cfg = GDROConfig.from_mapping(raw, num_generations=4)
    assert cfg.pass_at_k == (1, 2) and cfg.seed == 3
    cfg = GDROConfig(pass_at_k=(np.int64(2),), seed=np.uint32(5))  # type: ignore[arg-type]
    assert cfg.pass_at_k == (2,) and type(cfg.pass_at_k[0]) is int and cfg.seed == 5
    assert GDROConfig(pass_at_k=range(1, 3)).pass_at_k == (1, 2)  # type: ignore[arg-type]
    for bad in ([], [0], [True], ["1"], 1.5):
        with pytest.raises(ValueError, match=r"^GDROConfig\.pass_at_k must be an integer >= 1 "):
            GDROConfig(pass_at_k=bad)
    with pytest.raises(ValueError, match=r"^GDROConfig\.seed must be None or an integer in \[0, "):
        GDROConfig(seed=2**63)
    with pytest.raises(TypeError, match=r"^GDROConfig\.seed must be None or an integer; got True"):
        GDROConfig(seed=True)
