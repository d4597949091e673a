"""verl's V0 step and V1 advantage path on CPU with real DataProto and GRPO advantage code.

V0 (``trainer.use_v1=false``) is replayed the way ``RayPPOTrainer.fit()`` runs it: uids, the
(hooked) ``_get_gen_batch``, the two ``repeat(rollout.n)`` calls, ``union``, a shuffle (what
``_balance_batch`` does), ``compute_advantage`` and ``compute_data_metrics``; only the rollout
server is replaced by synthetic responses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from verl import DataProto

from gdro_verl import runtime
from gdro_verl.runtime import Group

RESP_LEN = 3
PROMPT_LEN = 2
REWEIGHT_BANDIT = {
    "data.gdro.rollout.mode": "neyman",
    "data.gdro.rollout.max": 8,
    "data.gdro.prompt.mode": "reweight",
}


def _grpo_reference(scores: np.ndarray, uids: list[str], weights: dict[str, float]) -> np.ndarray:
    """GRPO by hand: (r - group mean) / (unbiased group std + 1e-6), 0 for singletons' std 1."""
    out = np.zeros_like(scores)
    for uid in set(uids):
        idx = [i for i, u in enumerate(uids) if u == uid]
        r = scores[idx]
        std = r.std(ddof=1) if len(r) > 1 else 1.0
        mean = r.mean() if len(r) > 1 else 0.0
        out[idx] = (r - mean) / (std + 1e-6) * weights.get(uid, 1.0)
    return out


def _score(batch: DataProto, rng: np.random.Generator, h: Any) -> np.ndarray:
    """Synthetic responses, scored by the prompt's own success probability (keyed by prompt id)."""
    n = len(batch)
    pids = np.asarray(batch.non_tensor_batch["gdro_prompt_id"], dtype=np.int64)
    correct = np.array([rng.random() < h.success_prob(int(p)) for p in pids], dtype=np.float64)
    scores = torch.zeros(n, RESP_LEN)
    scores[:, -1] = torch.from_numpy(correct).float()
    batch.batch["response_mask"] = torch.ones(n, RESP_LEN, dtype=torch.long)
    batch.batch["attention_mask"] = torch.ones(n, PROMPT_LEN + RESP_LEN, dtype=torch.long)
    batch.batch["token_level_scores"] = scores
    batch.batch["token_level_rewards"] = scores.clone()
    batch.non_tensor_batch["acc"] = correct.astype(bool)
    return correct


def _forever(loader: Any) -> Any:
    """Batches across epochs, one at a time (verl re-iterates the loader at each epoch's end)."""
    while True:
        yield from loader


def _v0_step(cfg: Any, loader_iter: Any, rng: np.random.Generator, h: Any) -> tuple[DataProto, Any]:
    """One V0 step up to the advantages, with the rows shuffled before compute_advantage."""
    from verl.trainer.ppo import ray_trainer
    from verl.trainer.ppo.core_algos import AdvantageEstimator

    rt = runtime.require_active()
    batch = h.with_uids(next(loader_iter))
    plan = rt.plan
    gen_batch = ray_trainer.RayPPOTrainer._get_gen_batch(None, batch)
    n = cfg.actor_rollout_ref.rollout.n
    prompts = gen_batch.repeat(repeat_times=n, interleave=True)
    gen_batch_output = DataProto.from_dict(  # "generation": the agent loop returns responses
        tensors={
            "prompts": torch.ones(len(prompts), PROMPT_LEN, dtype=torch.long),
            "responses": torch.ones(len(prompts), RESP_LEN, dtype=torch.long),
        },
        non_tensors=dict(prompts.non_tensor_batch),
    )
    batch = batch.repeat(repeat_times=n, interleave=True)
    batch = batch.union(gen_batch_output)
    assert len(batch) == h.BATCH * h.MEAN
    _score(batch, rng, h)
    batch = batch.select_idxs(rng.permutation(len(batch)))  # position must not matter
    batch = ray_trainer.compute_advantage(
        batch,
        adv_estimator=AdvantageEstimator.GRPO,
        num_repeat=n,
        norm_adv_by_std_in_grpo=True,
        config=cfg.algorithm,
    )
    return batch, plan


def test_v0_step_counts_advantages_feedback_and_metrics(h: Any, make_config: Any) -> None:
    from verl.trainer.ppo import ray_trainer


    cfg = make_config(**REWEIGHT_BANDIT, **{"trainer.use_v1": False})
    train, _ = h.build_datasets(cfg)
    rt = train.runtime
    reference = h.reference_controller(rt)
    it = _forever(h.build_loader(cfg, train))
    rng = np.random.default_rng(0)
    saw_unequal = saw_weights = False
    for _ in range(10):
        batch, plan = _v0_step(cfg, it, rng, h)
        # counts honoured: each uid's group has its prompt's planned size
        uids = [str(u) for u in batch.non_tensor_batch["uid"]]
        pids = np.asarray(batch.non_tensor_batch["gdro_prompt_id"], dtype=np.int64)
        planned = dict(zip(plan.prompt_ids.tolist(), plan.rollouts.tolist(), strict=True))
        sizes = {u: uids.count(u) for u in set(uids)}
        assert all(sizes[u] == planned[int(p)] for u, p in zip(uids, pids, strict=True))
        saw_unequal |= len(set(sizes.values())) > 1
        # advantages: verl's GRPO on unequal groups, times the prompt's weight (by uid, not row)
        weight_of = dict(zip(plan.prompt_ids.tolist(), plan.weights.tolist(), strict=True))
        weights = {u: weight_of[int(p)] for u, p in zip(uids, pids, strict=True)}
        saw_weights |= len(set(np.round(list(weights.values()), 9))) > 1
        scores = batch.batch["token_level_scores"].sum(-1).double().numpy()
        adv = batch.batch["advantages"][:, -1].double().numpy()
        np.testing.assert_allclose(
            adv, _grpo_reference(scores, uids, weights), rtol=1e-5, atol=1e-5
        )
        # feedback: the controller got each prompt's rewards, in plan order, whatever the row order
        ref_plan = reference.plan(reference.sample(h.BATCH))
        assert ref_plan.prompt_ids.tolist() == plan.prompt_ids.tolist()
        by_prompt = {int(p): [] for p in plan.prompt_ids}
        for p, s in zip(pids, scores, strict=True):
            by_prompt[int(p)].append(s)
        reference.update(ref_plan, np.concatenate([by_prompt[int(p)] for p in plan.prompt_ids]))
        np.testing.assert_equal(rt.controller.state_dict(), reference.state_dict())
        # metrics come back through verl's own compute_data_metrics
        metrics = ray_trainer.compute_data_metrics(batch=batch, use_critic=False)
        assert metrics["gdro/pass@1"] == pytest.approx(
            np.mean([np.mean(by_prompt[int(p)]) for p in plan.prompt_ids])
        )
        assert "gdro/rollout/shadow_price" in metrics and "critic/score/mean" in metrics
        # verl's on_batch_end afterwards is a no-op (feedback came before the checkpoint)
        before = rt.controller.state_dict()
        train.on_batch_end(batch)
        np.testing.assert_equal(rt.controller.state_dict(), before)
    assert saw_unequal and saw_weights


def test_v0_repeat_with_another_n_is_rejected(h: Any, make_config: Any) -> None:
    from verl.trainer.ppo import ray_trainer

    cfg = make_config(**REWEIGHT_BANDIT, **{"trainer.use_v1": False})
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

    cfg = make_config(**REWEIGHT_BANDIT, **{"trainer.use_v1": False})
    _, val = h.build_datasets(cfg)
    batch = h.with_uids(next(iter(StatefulDataLoader(val, batch_size=5, collate_fn=collate_fn))))
    gen = ray_trainer.RayPPOTrainer._get_gen_batch(None, batch)
    assert "repeat" not in vars(gen)
    assert len(gen.repeat(repeat_times=3, interleave=True)) == 15


def test_v1_advantages_are_weighted_by_uid(h: Any, make_config: Any) -> None:
    """V1's multi-trajectory GRPO (verl's code) then the Prompt-GDRO weight of each uid."""
    from verl.trainer.ppo.core_algos import AdvantageEstimator
    from verl.trainer.ppo.v1 import trainer_base

    cfg = make_config(**REWEIGHT_BANDIT)
    train, _ = h.build_datasets(cfg)
    rt = train.runtime
    loader = _forever(h.build_loader(cfg, train))
    rng = np.random.default_rng(1)
    # run until a step's plan has unequal weights (prompts of several bins)
    for step in range(20):
        batch = next(loader)
        pids = np.asarray(batch["gdro_prompt_id"], dtype=np.int64)
        counts = np.asarray(batch["__rollout_n__"], dtype=np.int64)
        groups = {
            f"u{step}p{p}": Group(
                prompt_id=int(p),
                rewards=(rng.random(int(c)) < h.success_prob(int(p))).astype(float),
                loss=None,
            )
            for p, c in zip(pids, counts, strict=True)
        }
        rt.feedback_groups(groups)
        if len(set(np.round(rt.plan.weights, 9).tolist())) > 1:
            break
    # the step's advantage computation, as V1's _compute_advantage builds its DataProto
    keys, scores = [], []
    for uid, group in groups.items():
        for session, r in enumerate(group.rewards):
            keys.append(f"{uid}_{session}_0")
            scores.append(r)
    order = rng.permutation(len(keys))
    keys = [keys[i] for i in order]
    score_t = torch.zeros(len(keys), RESP_LEN)
    score_t[:, -1] = torch.tensor([scores[i] for i in order])
    data = DataProto.from_dict(
        tensors={
            "response_mask": torch.ones(len(keys), RESP_LEN, dtype=torch.long),
            "token_level_rewards": score_t,
            "token_level_scores": score_t,
        },
        non_tensors={"uid": np.array([k.split("_")[0] for k in keys], dtype=object)},
    )
    kwargs = dict(
        batch_keys=keys,
        adv_estimator=AdvantageEstimator.GRPO,
        num_repeat=h.MEAN,
        norm_adv_by_std_in_grpo=True,
        config=cfg.algorithm,
    )
    plain = trainer_base.compute_advantage_for_multi_trajectories.__gdro_wrapped__(
        DataProto.from_dict(
            tensors=dict(data.batch.items()), non_tensors=dict(data.non_tensor_batch)
        ),
        **kwargs,
    )
    weighted = trainer_base.compute_advantage_for_multi_trajectories(data, **kwargs)
    weight_of = dict(zip(rt.plan.prompt_ids.tolist(), rt.plan.weights.tolist(), strict=True))
    w = torch.tensor([weight_of[groups[k.split("_")[0]].prompt_id] for k in keys]).unsqueeze(-1)
    assert len(set(w.flatten().tolist())) > 1
    torch.testing.assert_close(weighted.batch["advantages"], plain.batch["advantages"] * w.float())


def test_v0_trainer_builds_its_dataloader_with_the_gdro_sampler(h: Any, make_config: Any) -> None:
    """RayPPOTrainer.__init__ (no workers started) creates its train loader through verl's factory."""
    from verl.single_controller.ray import ResourcePoolManager
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer, Role

    from gdro_verl.sampler import GDROSampler

    cfg = make_config(**REWEIGHT_BANDIT, **{"trainer.use_v1": False})
    train, val = h.build_datasets(cfg)
    trainer = RayPPOTrainer(
        config=cfg,
        tokenizer=None,
        processor=None,
        role_worker_mapping={Role.ActorRollout: object},
        resource_pool_manager=ResourcePoolManager(resource_pool_spec={}, mapping={}),
        train_dataset=train,
        val_dataset=val,
        collate_fn=None,
        train_sampler=None,
    )
    assert isinstance(trainer.train_dataloader.sampler, GDROSampler)
    assert len(trainer.train_dataloader) == h.NUM_PROMPTS // h.BATCH


def test_v0_epoch_boundary_checkpoint_still_restores_the_controller(
    h: Any, make_config: Any, tmp_path: Any
) -> None:
    """verl V0 skips the dataloader restore at an epoch boundary; gdro reads data.pt itself."""
    from gdro_verl import _compat

    cfg = make_config(
        **REWEIGHT_BANDIT,
        **{"trainer.use_v1": False, "trainer.default_local_dir": str(tmp_path / "ckpt")},
    )
    train, _ = h.build_datasets(cfg)
    loader = h.build_loader(cfg, train)
    rng = np.random.default_rng(0)
    for batch in loader:  # one full epoch, as V0's fit() runs it
        groups = {
            f"u{p}": Group(
                prompt_id=int(p), rewards=(rng.random(int(c)) < 0.5).astype(float), loss=None
            )
            for p, c in zip(batch["gdro_prompt_id"], batch["__rollout_n__"], strict=True)
        }
        train.runtime.feedback_groups(groups)
    steps = len(loader)
    folder = _compat._checkpoint_folder(cfg, steps)
    assert folder == str(tmp_path / "ckpt" / f"global_step_{steps}")
    os.makedirs(folder)
    torch.save(
        loader.state_dict(), os.path.join(folder, "data.pt")
    )  # what V0 _save_checkpoint writes

    # examples/verl/inspect_checkpoint.py (the GPU e2e check) reads the same file
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "inspect_checkpoint",
        Path(__file__).resolve().parents[2] / "examples/verl/inspect_checkpoint.py",
    )
    inspect = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(inspect)
    assert inspect.main([folder, "--expect-step", str(steps)]) == 0
    assert inspect.main([folder, "--expect-step", str(steps + 1)]) == 1

    runtime.deactivate()
    train2, _ = h.build_datasets(cfg)
    assert _compat.restore_runtime_from_checkpoint(folder, train2.runtime)
    np.testing.assert_equal(
        train2.runtime.controller.state_dict(), train.runtime.controller.state_dict()
    )
    # the next epoch is the one the uninterrupted run would draw
    first = next(iter(h.build_loader(cfg, train2)))
    expected = next(iter(loader))
    assert list(first["gdro_prompt_id"]) == list(expected["gdro_prompt_id"])


def test_curriculum_sampler_interface_feeds_back_through_update(h: Any, make_config: Any) -> None:
    """verl 0.5-0.8's data.sampler interface: (data_source, data_config) and update(batch)."""
    from gdro_verl.sampler import GDROCurriculumSampler

    cfg = make_config(**{"data.gdro.prompt.mode": "reweight", "trainer.use_v1": False})
    train, _ = h.build_datasets(cfg)
    sampler = GDROCurriculumSampler(train, cfg.data)
    from torchdata.stateful_dataloader import StatefulDataLoader
    from verl.utils.dataset.rl_dataset import collate_fn

    loader = StatefulDataLoader(
        train, batch_size=h.BATCH, sampler=sampler, collate_fn=collate_fn, drop_last=True
    )
    batch = h.with_uids(next(iter(loader)))
    batch = batch.repeat(repeat_times=h.MEAN, interleave=True)  # uniform n, as verl 0.5-0.8 do
    _score(batch, np.random.default_rng(0), h)
    batch = batch.select_idxs(np.random.default_rng(1).permutation(len(batch)))
    sampler.update(batch)
    assert train.runtime.controller.metrics()["classifier/mean_bin"] >= 0
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
