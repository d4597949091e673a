"""Config: errors raised when the train dataset is built, naming the key, the allowed values and the
value; the run shape (plans in flight, where feedback happens) derived from verl's settings."""

from __future__ import annotations

from typing import Any

import pytest
from omegaconf import OmegaConf, open_dict

from gdro_verl import runtime
from gdro_verl.config import GDROSettings, check_trainer_config

COLOCATED_RM = {
    "reward.reward_model.enable": True,
    "reward.reward_model.enable_resource_pool": False,
}


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
            {"trainer.v1.trainer_mode": "fully_async"},
            r"trainer\.v1\.trainer_mode must be one of \('sync', 'colocate_async', 'separate_async'\).*got 'fully_async'",
        ),
        (
            {"trainer.v1.sampler.custom_sampler.path": None},
            r"trainer\.v1\.sampler\.custom_sampler must select gdro's replay buffer.*got path=None",
        ),
        (
            {**COLOCATED_RM, "trainer.v1.trainer_mode": "separate_async"},
            r"trainer_mode='separate_async' cannot run a colocated reward model.*enable_resource_pool=true",
        ),
        (
            {**COLOCATED_RM, "algorithm.filter_groups.enable": True},
            r"algorithm\.filter_groups\.enable=true cannot run with a colocated reward model.*enable_resource_pool=true",
        ),
        (
            {**COLOCATED_RM, "data.gdro.correctness": "acc"},
            r"data\.gdro\.correctness='acc' cannot run with a colocated reward model.*correctness=score",
        ),
        (
            {
                "data.gdro.prompt.modee": "reweight",
            },
            r"data\.gdro\.prompt must be a mapping of PromptConfig settings \(unknown key 'modee'; known: .*mode",
        ),
        (
            {"data.gdro.typo": 1},
            r"data\.gdro has no option 'typo'; valid options: recipe, .*correctness, loss_key, pass_at_k",
        ),
        (
            {"data.gdro.recipe": "fast"},
            r"data\.gdro\.recipe must be one of \['paper', 'reward'\]; got 'fast'",
        ),
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
            {
                "data.gdro.recipe": "paper",
                "data.gdro.prompt.mode": "off",
                "data.gdro.rollout.mode": "bandit",
            },
            r"data\.gdro\.rollout\.arm_signal='loss' needs per-prompt losses",
        ),
        (
            {"data.gdro.rollout.mode": "neyman", "data.gdro.pass_at_k": [1, 4]},
            r"data\.gdro\.pass_at_k must be <= 2 \(the fewest rollouts a prompt gets: "
            r"data\.gdro\.rollout\.min: .*got \[1, 4\]",
        ),
        (
            {"data.gdro.pass_at_k": [1, 16]},
            r"data\.gdro\.pass_at_k must be <= \d+ \(the fewest rollouts a prompt gets: "
            r"data\.gdro\.rollout\.mean, in fixed mode: .*got \[1, 16\]",
        ),
        (
            {"data.gdro.correctness": "reward"},
            r"data\.gdro\.correctness must be one of .*got 'reward'",
        ),
        ({"data.gdro.seed": -1}, r"data\.gdro\.seed must be None or an integer in \[0, .*got -1"),
        (
            {"data.gdro.max_in_flight": 0},
            r"data\.gdro\.max_in_flight must be an integer in \[1, 1024\]; got 0",
        ),
        ({"data.train_batch_size": 25}, r"data\.train_batch_size must be in \[1, 24\].*got 25"),
    ],
)
def test_bad_config_is_rejected_by_name(
    h: Any, make_config: Any, overrides: dict[str, Any], message: str
) -> None:
    cfg = make_config(**overrides)
    with pytest.raises(ValueError, match=message):
        h.build_datasets(cfg)


def test_pass_at_k_may_reach_the_mean_in_fixed_mode(make_config: Any) -> None:
    # plain GRPO gives every prompt rollout.n rollouts: pass@k up to n is unbiased
    cfg = make_config(**{"data.gdro.prompt.mode": "off"})
    n = int(cfg.actor_rollout_ref.rollout.n)
    cfg = make_config(**{"data.gdro.prompt.mode": "off", "data.gdro.pass_at_k": [1, n]})
    assert GDROSettings.from_data_config(cfg.data).pass_at_k == (1, n)


def test_same_train_and_val_files_are_rejected(h: Any, make_config: Any) -> None:
    cfg = make_config()
    cfg.data.val_files = cfg.data.train_files
    with pytest.raises(ValueError, match=r"data\.train_files and data\.val_files must differ"):
        h.build_datasets(cfg)


def _train_set(cfg: Any) -> Any:
    """The train dataset as verl's trainers build it, with ``data.train_max_samples`` passed on."""
    from verl.trainer.ppo.utils import create_rl_dataset

    with open_dict(cfg):
        max_samples = cfg.data.get("train_max_samples", -1)
        return create_rl_dataset(
            cfg.data.train_files, cfg.data, None, None, is_train=True, max_samples=max_samples
        )


def test_a_random_train_subset_needs_a_seed(h: Any, make_config: Any) -> None:
    """``data.train_max_samples`` with verl's defaults ``data.shuffle=true, data.seed=null`` keeps
    another random subset at every start, and gdro's prompt ids (rows of the subset) would point
    at other prompts after a resume: rejected by name, before anything is set up. With a seed the
    subset is the same at every start (same fingerprint); without shuffling it is the first rows."""
    cfg = make_config(**{"data.train_max_samples": 12})
    assert cfg.data.shuffle is True and cfg.data.seed is None  # verl's defaults
    with pytest.raises(
        ValueError,
        match=r"data\.seed must be an integer when data\.train_max_samples > 0 and "
        r"data\.shuffle=true .*\(data\.train_max_samples=12\); got None",
    ):
        _train_set(cfg)
    assert runtime.active() is None
    seeded = make_config(**{"data.train_max_samples": 12, "data.seed": 3})
    first = _train_set(seeded)
    runtime.deactivate()
    again = _train_set(seeded)
    assert len(first) == len(again) == 12
    assert first.runtime.fingerprint == again.runtime.fingerprint
    runtime.deactivate()
    head = _train_set(make_config(**{"data.train_max_samples": 12, "data.shuffle": False}))
    assert len(head) == 12 and head.runtime.fingerprint != first.runtime.fingerprint
    runtime.deactivate()
    whole = _train_set(make_config(**{"data.train_max_samples": -1}))
    assert len(whole) == h.NUM_PROMPTS  # the whole file, shuffled or not


def test_v0_needs_no_replay_buffer(h: Any, make_config: Any) -> None:
    cfg = make_config(**{"trainer.use_v1": False, "trainer.v1.sampler.custom_sampler.path": None})
    train, _ = h.build_datasets(cfg)
    assert train.runtime is not None and train.runtime.max_in_flight == 1


def test_defaults_are_the_reward_recipe_with_the_mean_from_rollout_n(make_config: Any) -> None:
    from gdro_core.config import ControllerConfig

    settings = GDROSettings.from_data_config(make_config().data)
    assert settings.mean == 4  # actor_rollout_ref.rollout.n, read through the data node's root
    assert settings.prompt.mode == "reweight" and settings.rollout.mode == "fixed"
    # verl reports no per-prompt losses: the core's "reward" recipe, as every entry point builds it
    expected = ControllerConfig.from_mapping(
        {"recipe": "reward", "rollout": {"mean": 4}, "seed": 0}
    )
    assert settings.controller == expected
    named = GDROSettings.from_data_config(make_config(**{"data.gdro.recipe": "reward"}).data)
    assert named.controller == expected


def test_detached_data_config_needs_an_explicit_mean() -> None:
    with pytest.raises(ValueError, match=r"data\.gdro\.rollout\.mean must be set"):
        GDROSettings.from_data_config({"gdro": {}})
    settings = GDROSettings.from_data_config({"gdro": {"rollout": {"mean": 6, "max": 8}}})
    assert settings.mean == 6


@pytest.mark.parametrize(
    ("overrides", "in_flight", "at_advantage"),
    [
        ({}, 1, False),
        (COLOCATED_RM, 1, True),
        ({"algorithm.filter_groups.enable": True}, 16, False),
        (
            {
                "algorithm.filter_groups.enable": True,
                "algorithm.filter_groups.max_inflight_gen_batches": 3,
            },
            32,
            False,
        ),
        ({"trainer.v1.sampler.sync_refill_failed_groups": True}, 8, False),
        ({"trainer.v1.trainer_mode": "colocate_async"}, 8 + 1 + 3, False),
        ({**COLOCATED_RM, "trainer.v1.trainer_mode": "colocate_async"}, 12, True),
        (
            {
                "trainer.v1.trainer_mode": "separate_async",
                "trainer.v1.sampler.max_off_policy_threshold": 2,
            },
            2 + 1 + 3,
            False,
        ),
        ({"trainer.v1.trainer_mode": "colocate_async", "data.gdro.max_in_flight": 40}, 40, False),
        # null, as docs/verl.md writes it: derived from verl's settings, like leaving it out
        ({"trainer.v1.trainer_mode": "colocate_async", "data.gdro.max_in_flight": None}, 12, False),
        ({**COLOCATED_RM, "trainer.use_v1": False}, 1, False),  # V0 scores before its advantages
    ],
)
def test_run_shape_follows_verls_sampling_settings(
    h: Any, make_config: Any, overrides: dict[str, Any], in_flight: int, at_advantage: bool
) -> None:
    """The bound on plans in flight covers verl's look-ahead; a colocated reward model's scores
    are fed back at the advantage step (V1 writes them after the replay buffer's sample)."""
    cfg = make_config(**overrides)
    settings = GDROSettings.from_data_config(cfg.data)
    shape = check_trainer_config(cfg.data, settings)
    assert (shape.max_in_flight, shape.feedback_at_advantage) == (in_flight, at_advantage)
    train, _ = h.build_datasets(cfg)
    assert train.runtime.max_in_flight == in_flight
    assert train.runtime.controller.max_in_flight == in_flight
    assert train.runtime.feedback_at_advantage is at_advantage


def test_replay_buffer_takes_verls_group_filtering_from_the_config(make_config: Any) -> None:
    """verl hands a custom buffer no DAPO or refill settings; gdro's reads them from the config,
    as verl's own buffer would get them, and becomes verl's async buffer in the async modes."""
    from verl.trainer.ppo.v1.replay_buffer import ReplayBufferAsync

    from gdro_verl.replay_buffer import GDROReplayBuffer, GDROReplayBufferAsync

    cfg = make_config(
        **{
            "algorithm.filter_groups.enable": True,
            "algorithm.filter_groups.metric": "acc",
            "algorithm.filter_groups.max_inflight_gen_batches": 2,
        }
    )

    def build(mode: str) -> Any:
        sampler = cfg.trainer.v1.sampler
        return GDROReplayBuffer(
            trainer_mode=mode,
            trainer_config=cfg.trainer.v1.get(mode, OmegaConf.create({})),
            max_off_policy_threshold=sampler.max_off_policy_threshold,
            max_off_policy_strategy=sampler.max_off_policy_strategy,
            sampler_kwargs=sampler.sampler_kwargs,
            refill_fn=lambda n: n,
        )

    sync = build("sync")
    assert type(sync) is GDROReplayBuffer
    assert (sync.filter_groups_metric, sync.gen_batch_size, sync.max_inflight_gen_batches) == (
        "acc",
        1,
        2,
    )
    assert sync.train_batch_size == cfg.data.train_batch_size
    async_buffer = build("colocate_async")
    assert isinstance(async_buffer, GDROReplayBufferAsync)
    assert isinstance(async_buffer, ReplayBufferAsync)
    assert async_buffer.filter_groups_metric == "acc"


def test_replay_buffer_refuses_a_verl_that_selects_without_materialize_batch(
    make_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gdro learns which groups verl selected from ``_materialize_batch``; a verl whose ``sample``
    bypasses it is refused with an error naming the tested verl, not fed back wrongly."""
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

    from gdro_verl.replay_buffer import GDROReplayBuffer

    cfg = make_config()
    sampler = cfg.trainer.v1.sampler
    buffer = GDROReplayBuffer(
        trainer_mode="sync",
        trainer_config=OmegaConf.create({}),
        max_off_policy_threshold=sampler.max_off_policy_threshold,
        max_off_policy_strategy=sampler.max_off_policy_strategy,
        sampler_kwargs=sampler.sampler_kwargs,
    )
    calls: list[tuple[int, str, int]] = []

    def bypassing_sample(self: Any, global_steps: int, partition_id: str, batch_size: int) -> Any:
        calls.append((global_steps, partition_id, batch_size))
        return object(), {}

    monkeypatch.setattr(ReplayBuffer, "sample", bypassing_sample)
    with pytest.raises(
        RuntimeError, match=r"without calling _materialize_batch.*tested with verl 0\.9\.1"
    ):
        buffer.sample(3, "train", 6)
    assert calls == [(3, "train", 6)]
    assert buffer._selected is None and buffer._cleared == {} and buffer._silent == set()
