"""Config errors: raised when the train dataset is built, naming the key, the allowed values and the value."""

from __future__ import annotations

from typing import Any

import pytest

from gdro_verl.config import GDROSettings


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"data.dataloader_num_workers": 8}, r"data\.dataloader_num_workers must be 0 .*got 8"),
        (
            {"actor_rollout_ref.rollout.n": 8, "data.gdro.rollout.mean": 4},
            r"actor_rollout_ref\.rollout\.n must equal data\.gdro\.rollout\.mean.*rollout\.n=8, data\.gdro\.rollout\.mean=4",
        ),
        ({"data.gdro.rollout.mean": 5}, r"rollout\.n=4, data\.gdro\.rollout\.mean=5"),
        (
            {"algorithm.adv_estimator": "gae"},
            r"algorithm\.adv_estimator must be one of .*'grpo'.*got 'gae'",
        ),
        (
            {"algorithm.filter_groups.enable": True},
            r"algorithm\.filter_groups\.enable must be false",
        ),
        (
            {"trainer.v1.trainer_mode": "colocate_async"},
            r"trainer\.v1\.trainer_mode must be 'sync'.*got 'colocate_async'",
        ),
        (
            {"trainer.v1.sampler.sync_refill_failed_groups": True},
            r"trainer\.v1\.sampler\.sync_refill_failed_groups must be false",
        ),
        (
            {"trainer.v1.sampler.custom_sampler.path": None},
            r"trainer\.v1\.sampler\.custom_sampler must select gdro's replay buffer.*got path=None",
        ),
        (
            {"data.gdro.prompt.modee": "reweight"},
            r"data\.gdro\.prompt has no option 'modee'; valid options: mode, ",
        ),
        ({"data.gdro.typo": 1}, r"data\.gdro has no option 'typo'"),
        ({"data.gdro.rollout.min": 1}, r"data\.gdro\.rollout: .*RolloutConfig\.min.*got 1"),
        ({"data.gdro.rollout.max": 3}, r"data\.gdro\.rollout: .*RolloutConfig\.max.*\(2, 4, 3\)"),
        (
            {"data.gdro.prompt.mode": "upweight"},
            r"data\.gdro\.prompt: .*PromptConfig\.mode.*'upweight'",
        ),
        (
            {"data.gdro.prompt.signal": "loss"},
            r"data\.gdro\.prompt\.signal='loss' needs per-prompt losses.*data\.gdro\.loss_key",
        ),
        (
            {"data.gdro.rollout.arm_signal": "loss", "data.gdro.rollout.mode": "bandit"},
            r"data\.gdro\.rollout\.arm_signal='loss' needs per-prompt losses",
        ),
        (
            {"data.gdro.pass_at_k": [1, 4]},
            r"data\.gdro\.pass_at_k must be <= data\.gdro\.rollout\.min \(2\).*\[1, 4\]",
        ),
        (
            {"data.gdro.correctness": "reward"},
            r"data\.gdro\.correctness must be one of .*got 'reward'",
        ),
        ({"data.gdro.seed": -1}, r"data\.gdro\.seed must be an integer >= 0; got -1"),
        ({"data.train_batch_size": 25}, r"data\.train_batch_size must be in \[1, 24\].*got 25"),
    ],
)
def test_bad_config_is_rejected_by_name(
    h: Any, make_config: Any, overrides: dict[str, Any], message: str
) -> None:
    cfg = make_config(**overrides)
    with pytest.raises(ValueError, match=message):
        h.build_datasets(cfg)


def test_same_train_and_val_files_are_rejected(h: Any, make_config: Any) -> None:
    cfg = make_config()
    cfg.data.val_files = cfg.data.train_files
    with pytest.raises(ValueError, match=r"data\.train_files and data\.val_files must differ"):
        h.build_datasets(cfg)


def test_v0_needs_no_replay_buffer(h: Any, make_config: Any) -> None:
    cfg = make_config(**{"trainer.use_v1": False, "trainer.v1.sampler.custom_sampler.path": None})
    train, _ = h.build_datasets(cfg)
    assert train.runtime is not None


def test_defaults_and_mean_from_rollout_n(make_config: Any) -> None:
    settings = GDROSettings.from_data_config(make_config().data)
    assert settings.mean == 4  # actor_rollout_ref.rollout.n, read through the data node's root
    assert settings.prompt.mode == "reweight" and settings.rollout.mode == "fixed"
    # verl reports no per-prompt losses: reward-derived signals by default
    assert settings.prompt.signal == "failure" and settings.rollout.arm_signal == "variance"


def test_detached_data_config_needs_an_explicit_mean() -> None:
    with pytest.raises(ValueError, match=r"data\.gdro\.rollout\.mean must be set"):
        GDROSettings.from_data_config({"gdro": {}})
    settings = GDROSettings.from_data_config({"gdro": {"rollout": {"mean": 6, "max": 8}}})
    assert settings.mean == 6


def test_replay_buffer_rejects_async_modes() -> None:
    from omegaconf import OmegaConf

    from gdro_verl.replay_buffer import GDROReplayBuffer

    with pytest.raises(
        ValueError, match=r"trainer\.v1\.trainer_mode must be 'sync'.*got 'separate_async'"
    ):
        GDROReplayBuffer(
            trainer_mode="separate_async",
            trainer_config=OmegaConf.create({}),
            max_off_policy_threshold=None,
            max_off_policy_strategy="drop",
            sampler_kwargs=OmegaConf.create({}),
            refill_fn=None,
        )
