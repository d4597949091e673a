"""Run verl 0.9.1's own training loops on CPU, with gdro on.

``run_v1`` drives ``PPOTrainer.fit`` (any V1 trainer mode) and ``run_v0`` drives
``RayPPOTrainer.fit``, each over a small parquet dataset for several epochs. Everything verl does on
the trainer's side runs for real: the Hydra config, ``RLHFDataset`` (through ``GDRODataset``), the
sampler factory and ``StatefulDataLoader``, the V1 replay buffer over a real TransferQueue, the agent
loops (``AgentLoopWorkerTQ`` / ``AgentLoopWorker``, ``SingleTurnAgentLoop``, verl's
``LLMServerClient``), rule-based reward scoring by verl's ``RewardLoopWorker`` and
``math_dapo`` scorer, advantage computation, metrics, the file logger, checkpoint save and
``_load_checkpoint`` resume. The tokenizer is a real HuggingFace tokenizer (gdro's embedded
character tokenizer, saved with a tiny Llama as a local model directory).

What stands in, and nothing else:

* the LLM server (``ScriptedLLM``) and its load balancer: a prompt "What is i + i?" is answered
  correctly with probability ``success_prob(i)``, decided by a generator seeded with the prompt,
  the weights version the trainer last pushed and a per-prompt draw count, so a resumed run draws
  exactly what an uninterrupted one draws;
* the GPU worker groups (``ActorWorkers``): log-probs are zeros, and ``update_actor`` records what
  it would train on (keys, uids, prompt ids, scores, advantages);
* the weight push (``Weights``): it sets the server's weights version;
* a colocated reward model's forward pass (``RewardModel``): it scores with verl's rule scorer;
* Ray actors of the agent loop, reward and server run in this process (``LocalActor``: a thread
  with its own event loop, called as ``handle.method.remote(...)``), and the V1 agent-loop
  manager's dispatch is a direct call that waits until every dispatched prompt finished.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import verl
from omegaconf import OmegaConf, open_dict

MEAN = 4

#: verl config overrides shared by every loop run: small batches, CPU, the file logger, no
#: validation, checkpoints wherever the test says.
BASE_OVERRIDES = [
    "data.dataloader_num_workers=0",
    "data.filter_overlong_prompts=false",
    "data.max_prompt_length=64",
    "data.max_response_length=16",
    "data.custom_cls.path=pkg://gdro_verl.dataset",
    "data.custom_cls.name=GDRODataset",
    f"actor_rollout_ref.rollout.n={MEAN}",
    "actor_rollout_ref.rollout.name=vllm",
    "actor_rollout_ref.rollout.prompt_length=64",
    "actor_rollout_ref.rollout.response_length=16",
    "actor_rollout_ref.rollout.agent.num_workers=1",
    "actor_rollout_ref.actor.use_kl_loss=false",
    "algorithm.adv_estimator=grpo",
    "algorithm.use_kl_in_reward=false",
    "reward.num_workers=1",
    "trainer.v1.sampler.custom_sampler.path=pkg://gdro_verl.replay_buffer",
    "trainer.v1.sampler.custom_sampler.name=GDROReplayBuffer",
    "trainer.logger=[file]",
    "trainer.val_before_train=false",
    "trainer.test_freq=-1",
    "trainer.n_gpus_per_node=1",
    "trainer.nnodes=1",
    "trainer.device=cpu",
    "trainer.resume_mode=auto",
    "+data.gdro.seed=0",
]


def success_prob(prompt_id: int) -> float:
    """Prompt i is answered correctly with probability (i mod 6) / 5: 0, 0.2, ..., 1."""
    return (prompt_id % 6) / 5.0


# --------------------------------------------------------------------------- files


def question_id(raw_prompt: Any) -> int:
    """The i of a "What is i + i?" chat prompt: its row in the train file, read from its text."""
    match = re.search(r"What is (\d+) \+", list(raw_prompt)[-1]["content"])
    assert match is not None, raw_prompt
    return int(match.group(1))


def write_parquet(path: Path, num_rows: int, split: str) -> str:
    """Questions "What is i + i?" in verl's row layout, scored by verl's ``math_dapo`` scorer.

    Train rows ask i = 0, 1, ... (so i is the row, the prompt's id); other splits ask i = 1000,
    1001, ..., questions the train set never asks.
    """
    first = 0 if split == "train" else 1000
    numbers = range(first, first + num_rows)
    rows = {
        "data_source": ["math_dapo"] * num_rows,
        "prompt": [[{"role": "user", "content": f"What is {i} + {i}?"}] for i in numbers],
        "ability": ["math"] * num_rows,
        "reward_model": [{"style": "rule", "ground_truth": str(2 * i)} for i in numbers],
        # verl's "index" comes from here; it is deliberately NOT the dataset position.
        "extra_info": [{"index": 0, "split": split} for _ in range(num_rows)],
    }
    datasets.Dataset.from_dict(rows).to_parquet(str(path))
    return str(path)


def write_model(folder: Path) -> str:
    """gdro's embedded tiny Llama and character tokenizer, with a plain chat template."""
    from gdro_torch.model import build_embedded, save_model_dir

    model, tokenizer = build_embedded("tiny-llama-0.1m", seed=0)
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    save_model_dir(model, tokenizer, folder)
    return str(folder)


def compose(overrides: list[str]) -> Any:
    """verl's own ``ppo_trainer`` config, composed by Hydra as ``main_ppo`` composes it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = hydra_compose(config_name="ppo_trainer", overrides=BASE_OVERRIDES + overrides)
    OmegaConf.set_struct(cfg, False)
    return cfg


# --------------------------------------------------------------------------- in-process actors


class _Method:
    def __init__(self, actor: LocalActor, name: str) -> None:
        self._actor, self._name = actor, name

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        future = self._actor.submit(getattr(self._actor.obj, self._name), *args, **kwargs)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return future
        return asyncio.wrap_future(future, loop=loop)


class LocalActor:
    """An object living on its own thread and event loop, called like a Ray actor handle."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self.obj = self.submit(factory).result()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` (awaited if it returns an awaitable) on the actor's loop; a future."""

        async def job() -> Any:
            out = fn(*args, **kwargs)
            return await out if inspect.isawaitable(out) else out

        return asyncio.run_coroutine_threadsafe(job(), self._loop)

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(self, name)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


# --------------------------------------------------------------------------- stand-ins


class ScriptedLLM:
    """Stands in for the vLLM server: answers "What is i + i?" right with probability p(i).

    ``fail(i, version)`` (optional) makes every session of prompt i fail at that weights version.
    """

    def __init__(self, model_path: str, fail: Callable[[int, int], bool] | None = None) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        self.version = 0  # the weights version the trainer last pushed
        self.fail = fail
        self.failed: list[tuple[int, int]] = []
        self._draws: Counter[tuple[int, int]] = Counter()

    async def generate(self, request_id: str, *, prompt_ids: list[int], **kwargs: Any) -> Any:
        from verl.workers.rollout.replica import TokenOutput

        text = self.tokenizer.decode(prompt_ids, skip_special_tokens=True)
        match = re.search(r"What is (\d+) \+", text)
        assert match is not None, text
        i = int(match.group(1))
        if self.fail is not None and self.fail(i, self.version):
            self.failed.append((i, self.version))
            raise RuntimeError(f"scripted failure of prompt {i} at weights version {self.version}")
        k = self._draws[(i, self.version)]
        self._draws[(i, self.version)] += 1
        correct = np.random.default_rng([i, self.version, k]).random() < success_prob(i)
        answer = 2 * i if correct else 2 * i + 1
        ids = self.tokenizer.encode(f"Answer: {answer}", add_special_tokens=False)
        ids.append(self.tokenizer.eos_token_id)
        return TokenOutput(
            token_ids=ids,
            log_probs=[-0.5] * len(ids),
            stop_reason="completed",
            extra_fields={"global_steps": self.version},
        )


class OneServerBalancer:
    """Stands in for verl's global load balancer actor, with one server."""

    def __init__(self, server: LocalActor) -> None:
        self.server = server

    async def require_acquire_fields(self) -> list[str]:
        return []

    async def require_release_fields(self) -> list[str]:
        return []

    async def acquire_server(self, request_id: str, **_: Any) -> tuple[str, LocalActor]:
        return "server-0", self.server

    def release_server(self, server_id: str, **_: Any) -> None:
        return None


class Weights:
    """Stands in for the checkpoint engine: pushing weights sets the server's weights version."""

    def __init__(self, server: LocalActor) -> None:
        self.server = server
        self.pushed: list[int] = []

    def update_weights(self, global_steps: int | None = None, **_: Any) -> dict[str, Any]:
        if global_steps is not None:
            self.server.obj.version = int(global_steps)
            self.pushed.append(int(global_steps))
        return {}

    def sleep_replicas(self) -> None:
        return None

    def abort_replicas(self, **_: Any) -> None:
        return None

    def resume_generation_replicas(self) -> None:
        return None


class ActorWorkers:
    """Stands in for the actor worker group: zero log-probs; records what each update trains on."""

    def __init__(self) -> None:
        self._dispatch_info: dict[str, list[int]] = {}
        self.updates: list[dict[str, Any]] = []
        self.loaded: list[str] = []

    def _query_dispatch_info(self, role: str) -> list[int]:
        return [0]

    def init_model(self) -> None:
        return None

    def load_checkpoint(self, local_path: str, *args: Any, **kwargs: Any) -> None:
        self.loaded.append(local_path)

    def save_checkpoint(self, local_path: str, *args: Any, **kwargs: Any) -> None:
        os.makedirs(local_path, exist_ok=True)

    # separate_async keeps the proximal policy on CPU between mini-batches
    def save_model_to_cpu(self, index: int) -> None:
        return None

    def restore_model_from_cpu(self, index: int) -> None:
        return None

    def clear_cpu_model(self, index: int) -> None:
        return None

    # V1: batches are TransferQueue metadata; outputs are written back to TransferQueue.
    def compute_log_prob(self, batch: Any) -> Any:
        import transfer_queue as tq
        from tensordict import TensorDict

        if isinstance(batch, TensorDict):  # V0: a no-padding TensorDict
            return self._v0_log_prob(batch)
        data = tq.kv_batch_get(
            keys=batch.keys, partition_id=batch.partition_id, select_fields=["input_ids"]
        )
        zeros = torch.nested.as_nested_tensor(
            [torch.zeros(len(row)) for row in data["input_ids"].unbind()], layout=torch.jagged
        )
        out = TensorDict({"log_probs": zeros, "entropy": zeros.clone()}, batch_size=len(batch))
        tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=out)
        return batch

    def update_actor(self, batch: Any) -> Any:
        import transfer_queue as tq
        from tensordict import TensorDict

        if isinstance(batch, TensorDict):
            return self._v0_update(batch)
        fields = ["uid", "raw_prompt", "advantages", "rm_scores"]
        data = tq.kv_batch_get(
            keys=batch.keys, partition_id=batch.partition_id, select_fields=fields
        )
        real = [not tag.get("is_padding", False) for tag in batch.tags]
        self.updates.append(
            {
                "keys": [k for k, r in zip(batch.keys, real, strict=True) if r],
                "uids": [str(u) for u, r in zip(data["uid"], real, strict=True) if r],
                "prompt_ids": [
                    question_id(p) for p, r in zip(data["raw_prompt"], real, strict=True) if r
                ],
                "scores": [
                    float(t.sum())
                    for t, r in zip(data["rm_scores"].unbind(), real, strict=True)
                    if r
                ],
                "advantages": [
                    float(t[0]) for t, r in zip(data["advantages"].unbind(), real, strict=True) if r
                ],
                "padding": len(real) - sum(real),
            }
        )
        return {"metrics": {"mfu": 0.0, "pg_loss": 0.0}}

    # V0
    def _v0_log_prob(self, batch: Any) -> Any:
        from tensordict import NonTensorData, TensorDict

        ids = batch["input_ids"]
        zeros = torch.nested.as_nested_tensor(
            [torch.zeros(len(row)) for row in ids.unbind()], layout=torch.jagged
        )
        return TensorDict(
            {"log_probs": zeros, "entropy": zeros.clone(), "metrics": NonTensorData({"mfu": 0.0})},
            batch_size=len(ids),
        )

    def _v0_update(self, batch: Any) -> Any:
        from tensordict import NonTensorData, TensorDict
        from verl.utils import tensordict_utils as tu

        mask = batch["response_mask"].bool()
        adv = batch["advantages"]
        self.updates.append(
            {
                "keys": None,
                "uids": [str(u) for u in tu.get(batch, "uid")],
                "prompt_ids": [question_id(p) for p in tu.get(batch, "raw_prompt")],
                "scores": batch["token_level_scores"].sum(-1).tolist(),
                "advantages": [float(a[m][0]) for a, m in zip(adv, mask, strict=True)],
                "padding": 0,
            }
        )
        return TensorDict({"metrics": NonTensorData({"mfu": 0.0, "pg_loss": 0.0})}, batch_size=[])


class RewardModel:
    """Stands in for a colocated reward model's forward pass: verl's rule scorer as the judge."""

    def __init__(self, model_path: str) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        self.calls = 0

    def compute_rm_score(self, data: Any) -> Any:
        from tensordict import TensorDict
        from verl import DataProto
        from verl.utils.reward_score import default_compute_score

        self.calls += 1
        responses = data.batch["responses"]
        lengths = data.batch["attention_mask"][:, -responses.shape[1] :].sum(-1)
        scores = torch.zeros(responses.shape, dtype=torch.float32)
        for i, raw in enumerate(data.non_tensor_batch["raw_prompt"]):
            question = raw[-1]["content"]
            truth = str(2 * int(re.search(r"What is (\d+)", question).group(1)))
            text = self.tokenizer.decode(responses[i, : lengths[i]], skip_special_tokens=True)
            result = default_compute_score("math_dapo", text, truth)
            scores[i, int(lengths[i]) - 1] = float(result["score"])
        return DataProto(
            batch=TensorDict({"rm_scores": scores}, batch_size=len(responses)),
            meta_info={"reward_extra_keys": []},
        )


class RewardLoop:
    """The trainer's reward loop manager: verl's ``RewardLoopWorker`` (rule scoring) in process,
    plus a stood-in reward model when the config enables one without its own pool."""

    def __init__(self, config: Any, model_path: str) -> None:
        from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

        rm = config.reward.reward_model
        self.colocated = bool(rm.enable) and not bool(rm.enable_resource_pool)
        self.worker = LocalActor(lambda: RewardLoopWorker(config, None))
        self.model = RewardModel(model_path) if self.colocated else None

    @property
    def reward_loop_worker_handles(self) -> list[LocalActor] | None:
        return None if self.colocated else [self.worker]

    def compute_rm_score(self, data: Any) -> Any:
        assert self.model is not None
        return self.model.compute_rm_score(data)


class AgentLoopsTQ:
    """V1's agent-loop manager: dispatches to verl's ``AgentLoopWorkerTQ`` in process and waits
    until every dispatched prompt finished (an infinitely fast rollout fleet)."""

    def __init__(self, config: Any, client: Any, reward_handles: Any) -> None:
        from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopWorkerTQ

        worker_cls = AgentLoopWorkerTQ.__ray_actor_class__
        self.worker = LocalActor(lambda: worker_cls(config, client, None, reward_handles))
        self.dispatched = 0

    def generate_sequences(self, prompts: Any) -> None:
        self.dispatched += len(prompts)
        self.worker.generate_sequences.remote(prompts).result()

        async def drain() -> None:
            while self.worker.obj.background_tasks:
                await asyncio.gather(*list(self.worker.obj.background_tasks))

        self.worker.submit(drain).result()


class Fleet:
    """The stood-in rollout side of one trainer process: server, balancer, client, weights."""

    def __init__(
        self,
        config: Any,
        model_path: str,
        client_cls: Any = None,
        fail: Callable[[int, int], bool] | None = None,
    ) -> None:
        from verl.workers.rollout.llm_server import LLMServerClient

        self.server = LocalActor(lambda: ScriptedLLM(model_path, fail))
        self.balancer = LocalActor(lambda: OneServerBalancer(self.server))
        self.client = (client_cls or LLMServerClient)(
            config=config, load_balancer_handle=self.balancer
        )
        self.weights = Weights(self.server)
        self.reward = RewardLoop(config, model_path)
        self.actors: list[LocalActor] = [self.server, self.balancer, self.reward.worker]

    def close(self) -> None:
        for actor in self.actors:
            actor.close()


# --------------------------------------------------------------------------- the runs


class Spy:
    """Records what the runtime decides, by wrapping its methods on the instance (calls go
    through unchanged): every plan the controller made, every dispatched uid's planned count,
    every group fed back (with the rewards the controller got) and every prompt cancelled."""

    def __init__(self) -> None:
        self.plans: list[dict[str, Any]] = []
        # uid -> (prompt id, planned count, Prompt-GDRO weight)
        self.dispatched: dict[str, tuple[int, int, float]] = {}
        self.most_in_flight = 0
        # uid -> (prompt id, rewards) of every group fed back, and every prompt id cancelled
        self.fed: dict[str, tuple[int, list[float]]] = {}
        self.cancelled: list[int] = []

    def attach(self, rt: Any) -> None:
        register, load = rt.register_batch, rt.load_state_dict
        feed, cancel = rt.feedback_groups, rt.cancel

        def spy_on(controller: Any) -> None:
            plan = controller.plan

            def spied_plan(*args: Any, **kwargs: Any) -> Any:
                return record(plan(*args, **kwargs))

            controller.plan = spied_plan

        def record(out: Any) -> Any:
            self.plans.append(
                {
                    "serial": int(out.serial),
                    "prompt_ids": out.prompt_ids.tolist(),
                    "rollouts": out.rollouts.tolist(),
                    "weights": out.weights.tolist(),
                }
            )
            self.most_in_flight = max(self.most_in_flight, len(rt.controller.in_flight()))
            return out

        def spied_register(uids: Any, prompt_ids: Any) -> Any:
            counts = register(uids, prompt_ids)
            restored = [  # plans in flight that a checkpoint restored, made before this run
                {"prompt_ids": p.prompt_ids.tolist(), "weights": p.weights.tolist()}
                for p in rt.in_flight()
            ]
            for uid, pid, n in zip(uids, prompt_ids, counts, strict=True):
                plan = next(
                    p for p in [*restored, *reversed(self.plans)] if int(pid) in p["prompt_ids"]
                )
                weight = plan["weights"][plan["prompt_ids"].index(int(pid))]
                self.dispatched[str(uid)] = (int(pid), int(n), float(weight))
            return counts

        def spied_feedback(groups: Any, **kwargs: Any) -> Any:
            out = feed(groups, **kwargs)
            for uid, group in groups.items():
                assert str(uid) not in self.fed, f"group {uid} fed back twice"
                self.fed[str(uid)] = (int(group.prompt_id), np.asarray(group.rewards).tolist())
            return out

        def spied_cancel(prompt_ids: Any) -> Any:
            prompt_ids = [int(p) for p in prompt_ids]
            out = cancel(prompt_ids)
            self.cancelled += prompt_ids
            return out

        def spied_load(state: Any) -> None:
            load(state)  # a restore swaps in a new controller: spy on that one
            spy_on(rt.controller)

        spy_on(rt.controller)
        rt.register_batch = spied_register
        rt.load_state_dict = spied_load
        rt.feedback_groups = spied_feedback
        rt.cancel = spied_cancel


class Run:
    """What one ``fit()`` did: the trainer, its stand-ins, the logged metrics and the updates."""

    def __init__(
        self, trainer: Any, workers: ActorWorkers, fleet: Fleet, log_path: str, spy: Spy
    ) -> None:
        self.trainer = trainer
        self.workers = workers
        self.fleet = fleet
        self.log_path = log_path
        self.spy = spy

    @property
    def runtime(self) -> Any:
        return self.trainer.train_dataset.runtime

    @property
    def updates(self) -> list[dict[str, Any]]:
        return self.workers.updates

    def metrics(self) -> list[dict[str, Any]]:
        """The metrics verl's file logger wrote, one dict per step (with its "step")."""
        with open(self.log_path) as f:
            return [{"step": r["step"], **r["data"]} for r in map(json.loads, f) if r["data"]]


def _log_path(tmp: Path, name: str) -> str:
    """Where verl's file logger writes (``VERL_FILE_LOGGER_PATH``, set for the run's ``fit``)."""
    return str(tmp / f"{name}.jsonl")


def _fit(fit: Callable[[], Any], log_path: str) -> None:
    previous = os.environ.get("VERL_FILE_LOGGER_PATH")
    os.environ["VERL_FILE_LOGGER_PATH"] = log_path
    try:
        fit()
    finally:
        if previous is None:
            del os.environ["VERL_FILE_LOGGER_PATH"]
        else:
            os.environ["VERL_FILE_LOGGER_PATH"] = previous


def _fresh_transfer_queue() -> None:
    """Empty the session's TransferQueue, as a new trainer process would find it."""
    import transfer_queue as tq

    for partition in ("train", "val"):
        keys = list((tq.kv_list(partition) or {}).get(partition, {}))
        if keys:
            tq.kv_clear(keys=keys, partition_id=partition)


def run_v1(
    cfg: Any,
    model_path: str,
    tmp: Path,
    name: str,
    *,
    fail: Callable[[int, int], bool] | None = None,
) -> Run:
    """Build a V1 trainer of ``trainer.v1.trainer_mode`` as ``PPOTrainer.init`` does, with the GPU
    parts stood in, then run its own ``fit``."""
    from verl.trainer.ppo.v1 import get_trainer_cls
    from verl.workers.rollout.llm_server import FullyAsyncLLMServerClient

    _fresh_transfer_queue()
    log_path = _log_path(tmp, name)
    mode = cfg.trainer.v1.trainer_mode
    client_cls = None if mode == "sync" else FullyAsyncLLMServerClient
    fleet = Fleet(cfg, model_path, client_cls, fail)
    trainer = get_trainer_cls(mode)(cfg)
    # PPOTrainer._setup, CPU parts as they are:
    trainer._init_tokenizer()
    trainer._init_dataloader()
    trainer._init_dump_executor()
    trainer._init_resource_pool_mgr()
    # ... and the GPU parts stood in:
    workers = ActorWorkers()
    trainer.ref_in_actor = False
    trainer.actor_rollout_wg = workers
    trainer.reward_loop_manager = fleet.reward
    trainer.teacher_model_manager = None
    trainer.distillation_config = None
    trainer.checkpoint_manager = fleet.weights
    if mode == "separate_async":  # PPOTrainerSeparateAsync._setup, rollout served standalone
        from verl.trainer.ppo.v1.trainer_separate_async import HybridEngineMode

        trainer.standalone_checkpoint_manager = fleet.weights
        trainer.current_mode = HybridEngineMode.TRAINER
    trainer.checkpoint_manager.sleep_replicas()
    spy = Spy()
    spy.attach(trainer.train_dataset.runtime)
    trainer._load_checkpoint()
    trainer.on_init_end()
    loops = AgentLoopsTQ(cfg, fleet.client, fleet.reward.reward_loop_worker_handles)
    fleet.actors.append(loops.worker)
    try:
        _fit(lambda: trainer.fit(loops), log_path)
    finally:
        fleet.close()
    return Run(trainer, workers, fleet, log_path, spy)


def run_v0(cfg: Any, model_path: str, tmp: Path, name: str) -> Run:
    """Build a V0 ``RayPPOTrainer`` as ``main_ppo_v0`` does, with the GPU parts stood in, then run
    its own ``fit``."""
    from verl.experimental.agent_loop import AgentLoopManager, AgentLoopWorker
    from verl.single_controller.ray import ResourcePoolManager
    from verl.trainer.ppo import utils as ppo_utils
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer, Role
    from verl.utils import hf_tokenizer
    from verl.utils.dataset.rl_dataset import collate_fn

    log_path = _log_path(tmp, name)
    fleet = Fleet(cfg, model_path)
    tokenizer = hf_tokenizer(model_path)
    spy = Spy()
    with open_dict(cfg):
        train = ppo_utils.create_rl_dataset(
            cfg.data.train_files, cfg.data, tokenizer, None, is_train=True
        )
        val = ppo_utils.create_rl_dataset(
            cfg.data.val_files, cfg.data, tokenizer, None, is_train=False
        )
    trainer = RayPPOTrainer(
        config=cfg,
        tokenizer=tokenizer,
        processor=None,
        role_worker_mapping={Role.ActorRollout: object},
        resource_pool_manager=ResourcePoolManager(
            resource_pool_spec={"global_pool": [1]}, mapping={Role.ActorRollout: "global_pool"}
        ),
        train_dataset=train,
        val_dataset=val,
        collate_fn=collate_fn,
        train_sampler=ppo_utils.create_rl_sampler(cfg.data, train),
    )
    spy.attach(train.runtime)
    # RayPPOTrainer.init_workers, with the GPU parts stood in:
    workers = ActorWorkers()
    trainer.actor_rollout_wg = workers
    trainer.checkpoint_manager = fleet.weights
    trainer.reward_loop_manager = fleet.reward
    manager = AgentLoopManager(cfg, fleet.client, None, fleet.reward.reward_loop_worker_handles)
    worker = LocalActor(
        lambda: AgentLoopWorker(cfg, fleet.client, None, fleet.reward.reward_loop_worker_handles)
    )
    manager.agent_loop_workers = [worker]
    fleet.actors.append(worker)
    trainer.async_rollout_manager = manager
    try:
        _fit(trainer.fit, log_path)
    finally:
        fleet.close()
    return Run(trainer, workers, fleet, log_path, spy)


# --------------------------------------------------------------------------- checks


def sampler_runtime_state(folder: Path) -> Any:
    """The gdro runtime state verl saved in ``folder/data.pt`` (with the dataloader's)."""
    from gdro_verl._compat import sampler_state_of

    state = sampler_state_of(torch.load(folder / "data.pt", weights_only=False))
    assert state is not None
    return state["runtime"]


def grpo(scores: np.ndarray, groups: list[str]) -> np.ndarray:
    """verl's GRPO outcome advantage by hand: (r - mean) / (unbiased std + 1e-6) per group."""
    out = np.zeros_like(scores)
    for g in set(groups):
        idx = [i for i, x in enumerate(groups) if x == g]
        r = scores[idx]
        mean, std = (r.mean(), r.std(ddof=1)) if len(r) > 1 else (0.0, 1.0)
        out[idx] = (r - mean) / (std + 1e-6)
    return out


def group_sizes(update: dict[str, Any]) -> dict[str, int]:
    """Rollouts per uid in one recorded update."""
    return dict(Counter(update["uids"]))


def replay_plans(
    runtime: Any, updates: list[dict[str, Any]], *, steps: int, start_state: Any = None
) -> Iterator[tuple[Any, dict[str, Any]]]:
    """A reference controller with the run's settings, planned and fed by hand from the recorded
    updates (one block per update, sync trainers): yields ``(reference plan, update)``."""
    from gdro_core import GDROController

    st = runtime.settings
    ref = GDROController(
        num_prompts=runtime.num_prompts,
        classifier=st.classifier,
        prompt=st.prompt,
        rollout=st.rollout,
        seed=st.seed,
    )
    if start_state is not None:
        ref.load_state_dict(start_state)
    for update in updates[:steps]:
        plan = ref.plan(ref.sample(runtime.block_size))
        yield plan, update
        by_prompt: dict[int, list[float]] = {int(p): [] for p in plan.prompt_ids}
        for p, s in zip(update["prompt_ids"], update["scores"], strict=True):
            by_prompt[p].append(s)
        ref.update(plan, np.concatenate([by_prompt[int(p)] for p in plan.prompt_ids]))
