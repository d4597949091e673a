"""gdro's patches of verl: inert for anything that is not a gdro batch, strict about a wrong ``n``,
and the verl 0.5-0.8 sampler interface. (verl's own loops run in ``test_loops.py``.)"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from verl import DataProto

from gdro_verl import hooks, runtime

REWEIGHT_NEYMAN = {
    "data.gdro.rollout.mode": "neyman",
    "data.gdro.rollout.max": 8,
    "data.gdro.prompt.mode": "reweight",
}


def _scored(batch: DataProto, rng: np.random.Generator, h: Any) -> DataProto:
    """Synthetic one-token responses scored by the prompt's own success probability."""
    n = len(batch)
    pids = np.asarray(batch.non_tensor_batch["gdro_prompt_id"], dtype=np.int64)
    correct = np.array([rng.random() < h.success_prob(int(p)) for p in pids], dtype=np.float64)
    batch.batch["response_mask"] = torch.ones(n, 1, dtype=torch.long)
    batch.batch["token_level_scores"] = torch.from_numpy(correct).float()[:, None]
    batch.batch["token_level_rewards"] = batch.batch["token_level_scores"].clone()
    batch.non_tensor_batch["acc"] = correct.astype(bool)
    return batch


def test_v0_repeat_with_another_n_is_rejected(h: Any, make_config: Any) -> None:
    from verl.trainer.ppo import ray_trainer

    cfg = make_config(**REWEIGHT_NEYMAN, **{"trainer.use_v1": False})
    train, _ = h.build_datasets(cfg)
    batch = h.with_uids(next(iter(h.build_loader(cfg, train))))
    gen_batch = ray_trainer.RayPPOTrainer._get_gen_batch(None, batch)
    assert "__rollout_n__" not in gen_batch.non_tensor_batch
    with pytest.raises(ValueError, match="actor_rollout_ref.rollout.n == 4"):
        gen_batch.repeat(repeat_times=3, interleave=True)


def test_v0_validation_batches_are_untouched(h: Any, make_config: Any) -> None:
    """verl's _validate() calls _get_gen_batch too: without stamps it is verl's own."""
    from torchdata.stateful_dataloader import StatefulDataLoader
    from verl.trainer.ppo import ray_trainer
    from verl.utils.dataset.rl_dataset import collate_fn

    cfg = make_config(**REWEIGHT_NEYMAN, **{"trainer.use_v1": False})
    _, val = h.build_datasets(cfg)
    batch = h.with_uids(next(iter(StatefulDataLoader(val, batch_size=5, collate_fn=collate_fn))))
    gen = ray_trainer.RayPPOTrainer._get_gen_batch(None, batch)
    assert "repeat" not in vars(gen)
    assert len(gen.repeat(repeat_times=3, interleave=True)) == 15


def test_advantage_hooks_leave_batches_of_other_runs_alone(h: Any, make_config: Any) -> None:
    """With gdro's hooks installed, a batch whose uids gdro never dispatched gets verl's own
    advantages, in V0 and V1, and no controller update."""
    from verl.trainer.ppo import ray_trainer
    from verl.trainer.ppo.core_algos import AdvantageEstimator
    from verl.trainer.ppo.v1 import trainer_base

    cfg = make_config(**REWEIGHT_NEYMAN)
    train, _ = h.build_datasets(cfg)  # installs the hooks
    before = train.runtime.controller.state_dict()
    uids = np.array(["a", "a", "b", "b", "b"], dtype=object)
    scores = torch.tensor([[1.0], [0.0], [1.0], [1.0], [0.0]])

    def batch() -> DataProto:
        return DataProto.from_dict(
            tensors={
                "response_mask": torch.ones(5, 1, dtype=torch.long),
                "token_level_rewards": scores.clone(),
                "token_level_scores": scores.clone(),
            },
            non_tensors={"uid": uids.copy()},
        )

    kwargs = dict(adv_estimator=AdvantageEstimator.GRPO, num_repeat=2, config=cfg.algorithm)
    for hooked in (
        ray_trainer.compute_advantage,
        trainer_base.compute_advantage_for_multi_trajectories,
    ):
        assert hasattr(hooked, "__gdro_wrapped__")
        extra = (
            {"batch_keys": [f"{u}_{i}_0" for i, u in enumerate(uids)]}
            if hooked.__name__.endswith("trajectories")
            else {}
        )
        ours = hooked(batch(), **extra, **kwargs)
        theirs = hooked.__gdro_wrapped__(batch(), **extra, **kwargs)
        torch.testing.assert_close(ours.batch["advantages"], theirs.batch["advantages"])
    np.testing.assert_equal(train.runtime.controller.state_dict(), before)
    hooks.uninstall()
    assert not hasattr(ray_trainer.compute_advantage, "__gdro_wrapped__")
    assert not hasattr(trainer_base.compute_advantage_for_multi_trajectories, "__gdro_wrapped__")


def test_curriculum_sampler_interface_feeds_back_through_update(h: Any, make_config: Any) -> None:
    """verl 0.5-0.8's data.sampler interface: (data_source, data_config) and update(batch)."""
    from torchdata.stateful_dataloader import StatefulDataLoader
    from verl.utils.dataset.rl_dataset import collate_fn

    from gdro_verl.sampler import GDROCurriculumSampler

    cfg = make_config(**{"data.gdro.prompt.mode": "reweight", "trainer.use_v1": False})
    train, _ = h.build_datasets(cfg)
    sampler = GDROCurriculumSampler(train, cfg.data)
    loader = StatefulDataLoader(
        train, batch_size=h.BATCH, sampler=sampler, collate_fn=collate_fn, drop_last=True
    )
    batch = h.with_uids(next(iter(loader)))
    batch = batch.repeat(repeat_times=h.MEAN, interleave=True)  # uniform n, as verl 0.5-0.8 do
    _scored(batch, np.random.default_rng(0), h)
    batch = batch.select_idxs(np.random.default_rng(1).permutation(len(batch)))
    sampler.update(batch)
    assert train.runtime.controller.step == 1
    assert train.runtime.pop_metrics()["gdro/solve_rate"] == pytest.approx(
        float(batch.non_tensor_batch["acc"].mean())
    )
    bad = make_config(**{"data.gdro.rollout.mode": "bandit", "trainer.use_v1": False})
    runtime.deactivate()
    train_bad, _ = h.build_datasets(bad)
    with pytest.raises(
        ValueError, match=r"data\.gdro\.rollout\.mode must be 'fixed'.*got 'bandit'"
    ):
        GDROCurriculumSampler(train_bad, bad.data)


def _changed_clear_groups(self: Any, partition_id: str, keys: list[str]) -> None:
    """A ``ReplayBuffer._clear_groups`` whose second argument was renamed."""


@pytest.mark.parametrize(
    ("module", "cls", "attr", "replacement", "named"),
    [
        (  # V1's advantage step renamed: V1 would train without weights and without feedback
            "verl.trainer.ppo.v1.trainer_base",
            "",
            "compute_advantage_for_multi_trajectories",
            None,
            r"verl\.trainer\.ppo\.v1\.trainer_base\.compute_advantage_for_multi_trajectories "
            r"is missing",
        ),
        (  # V0's dispatch renamed: V0 would repeat every prompt rollout.n times
            "verl.trainer.ppo.ray_trainer",
            "RayPPOTrainer",
            "_get_gen_batch",
            None,
            r"verl\.trainer\.ppo\.ray_trainer\.RayPPOTrainer\._get_gen_batch is missing",
        ),
        (  # a private method gdro's replay buffer overrides, with another signature
            "verl.trainer.ppo.v1.replay_buffer",
            "ReplayBuffer",
            "_clear_groups",
            _changed_clear_groups,
            r"verl\.trainer\.ppo\.v1\.replay_buffer\.ReplayBuffer\._clear_groups\(self, "
            r"partition_id, keys, \.\.\.\) does not start with \(self, partition_id, uids\)",
        ),
    ],
    ids=["v1-advantage-renamed", "v0-dispatch-renamed", "buffer-method-resigned"],
)
def test_a_changed_verl_api_fails_the_install_by_name_and_patches_nothing(
    h: Any,
    make_config: Any,
    monkeypatch: pytest.MonkeyPatch,
    module: str,
    cls: str,
    attr: str,
    replacement: Any,
    named: str,
) -> None:
    """Building a gdro train dataset against a verl whose hook target is gone (or re-signed)
    raises ``ImportError`` naming it and the tested verl release, before anything is patched or
    activated, instead of training silently without gdro. (verl's object is put back after.)"""
    import importlib

    from verl.trainer.ppo import ray_trainer
    from verl.trainer.ppo import utils as ppo_utils
    from verl.trainer.ppo.v1 import trainer_base

    hooks.uninstall()  # the plugin routes create_rl_sampler at import: start unpatched
    owner = importlib.import_module(module)
    target = getattr(owner, cls) if cls else owner
    if replacement is None:
        monkeypatch.delattr(target, attr)
    else:
        monkeypatch.setattr(target, attr, replacement)
    with pytest.raises(ImportError, match=rf"{named}.*tested with verl 0\.9\.1"):
        h.build_datasets(make_config(**REWEIGHT_NEYMAN))
    assert runtime.active() is None
    for patched in (
        ppo_utils.create_rl_sampler,
        ray_trainer.compute_advantage,
        ray_trainer.RayPPOTrainer._load_checkpoint,
        trainer_base.compute_data_metrics,
        trainer_base.PPOTrainer._submit_batch_to_rollout,
    ):
        assert not hasattr(patched, "__gdro_wrapped__"), patched
    monkeypatch.undo()  # verl as released: the same build installs the hooks
    h.build_datasets(make_config(**REWEIGHT_NEYMAN))
    assert hasattr(trainer_base.compute_advantage_for_multi_trajectories, "__gdro_wrapped__")
