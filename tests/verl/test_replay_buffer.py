"""V1 feedback through verl's real ReplayBuffer over a local Ray cluster and TransferQueue.

The trainer's own ``_build_replay_buffer`` loads ``GDROReplayBuffer`` from the config's
``custom_sampler`` path; trajectories are written to TransferQueue the way verl's
``AgentLoopWorkerTQ`` writes them (``AgentLoopOutput.as_dict()`` plus every prompt field, keys
``{uid}_{session}_{index}``), in shuffled order, with the session count the row's ``__rollout_n__``
asked for.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from gdro_verl import runtime

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def transfer_queue() -> Iterator[Any]:
    """A two-CPU local Ray cluster on loopback with a TransferQueue in it; shut down afterwards."""
    import ray
    import transfer_queue as tq
    from omegaconf import OmegaConf

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}}))
        yield tq
    finally:
        try:
            tq.close()
        finally:
            ray.shutdown()


def _trainer_buffer(cfg: Any) -> Any:
    """The replay buffer as verl's V1 trainer builds it (PPOTrainer._build_replay_buffer)."""
    from verl.trainer.ppo.v1 import get_trainer_cls

    trainer = object.__new__(get_trainer_cls("sync"))
    trainer.config = cfg
    trainer.trainer_mode = "sync"
    buffer = trainer._build_replay_buffer()
    buffer.poll_interval = 0.05
    return buffer


def _agent_loop_put(tq: Any, rows: list[dict[str, Any]], rng: np.random.Generator, h: Any) -> None:
    """Write each prompt's sessions like AgentLoopWorkerTQ, then mark the prompt finished."""
    from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics, AgentLoopOutput
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    keys, fields = [], []
    for prompt in rows:
        prompt = dict(prompt)
        n = prompt.pop("__rollout_n__")  # what agent_loop_tq._run_prompt does
        for session in range(n):
            correct = bool(rng.random() < h.success_prob(int(prompt["gdro_prompt_id"])))
            output = AgentLoopOutput(
                prompt_ids=[1, 2],
                response_ids=[3, 4, 5],
                response_mask=[1, 1, 1],
                reward_score=float(correct),
                metrics=AgentLoopMetrics(),
                extra_fields={"reward_extra_info": {"acc": correct, "score": float(correct)}},
            )
            field = output.as_dict()
            field.update(prompt)
            field["session_id"] = session
            keys.append(f"{prompt['uid']}_{session}_0")
            fields.append(field)
    order = rng.permutation(len(keys))  # completion order is arbitrary
    for chunk in np.array_split(order, 3):
        tq.kv_batch_put(
            keys=[keys[i] for i in chunk],
            fields=list_of_dict_to_tensordict([fields[i] for i in chunk]),
            tags=[{"status": "success"} for _ in chunk],
            partition_id="train",
        )
    for prompt in rows:
        tq.kv_put(key=prompt["uid"], partition_id="train", tag={"status": "finished"})


def test_feedback_reaches_the_controller_by_prompt_id(
    h: Any, make_config: Any, transfer_queue: Any
) -> None:

    tq = transfer_queue
    cfg = make_config(
        **{
            "data.gdro.rollout.mode": "neyman",
            "data.gdro.rollout.max": 8,
            "data.gdro.prompt.mode": "reweight",
            "data.gdro.pass_at_k": [1, 2],
        }
    )
    train, _ = h.build_datasets(cfg)
    rt = train.runtime
    buffer = _trainer_buffer(cfg)
    assert type(buffer).__name__ == "GDROReplayBuffer"
    reference = h.reference_controller(rt)
    loader = iter(h.build_loader(cfg, train))
    rng = np.random.default_rng(0)
    for step in range(1, 4):
        batch = next(loader)  # V1's _fetch_one_gen_batch: loader batch + fresh uuid4 uids
        batch["uid"] = np.array(
            [str(uuid.uuid4()) for _ in range(len(batch["raw_prompt"]))], dtype=object
        )
        rows = [
            {k: v[i] for k, v in batch.items() if k != "dummy_tensor"}
            for i in range(len(batch["uid"]))
        ]
        tq.kv_batch_put(
            keys=list(batch["uid"]),
            partition_id="train",
            tags=[{"is_prompt": True, "status": "pending", "global_steps": step} for _ in rows],
        )
        _agent_loop_put(tq, rows, rng, h)

        meta, metrics = buffer.sample(global_steps=step, partition_id="train", batch_size=h.BATCH)

        assert len(meta.keys) == h.BATCH * h.MEAN
        assert {"gdro/pass@1", "gdro/pass@2", "gdro/solve_rate", "gdro/classifier/mean_bin"} <= set(
            metrics
        )
        # the controller saw what a direct, plan-ordered update sees
        got = tq.kv_batch_get(
            keys=meta.keys, partition_id="train", select_fields=["gdro_prompt_id", "rm_scores"]
        )
        pids = [int(p) for p in got["gdro_prompt_id"]]
        scores = [float(t.sum()) for t in got["rm_scores"]]
        plan = reference.plan(reference.sample(h.BATCH))
        by_prompt: dict[int, list[float]] = {int(p): [] for p in plan.prompt_ids}
        for p, s in zip(pids, scores, strict=True):
            by_prompt[p].append(s)
        reference.update(plan, np.concatenate([by_prompt[int(p)] for p in plan.prompt_ids]))
        np.testing.assert_equal(rt.controller.state_dict(), reference.state_dict())
        tq.kv_clear(keys=meta.keys, partition_id="train")  # verl's step cleanup
    assert runtime.active() is rt
