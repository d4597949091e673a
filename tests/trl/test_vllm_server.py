"""vLLM server mode with unequal groups: TRL's own ``VLLMGeneration``, the server replaced.

TRL's server path (``VLLMGeneration.generate``) sends every ``num_generations``-th row as a
unique prompt and asks for ``num_generations`` completions of each. Under Rollout-GDRO a prompt's
rows are ``n_i`` long, so gdro asks for one completion per row instead. Here TRL's real
``VLLMGeneration`` runs in server mode; only its HTTP client (``VLLMClient``, which talks to the
GPU server) is replaced by an in-process stand-in that follows the client's contract: ``n``
completions per prompt it is sent, prompt-major. Each completion is written from the prompt it was
asked for, so a completion attached to another prompt's row is caught by the reward function.
"""

from __future__ import annotations

import random
from typing import Any

from trl.generation.vllm_generation import VLLMGeneration


class ServerStandIn:
    """Answers like ``trl.generation.vllm_client.VLLMClient`` (the vLLM server's client)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []  # (prompts sent, completions asked per prompt)
        self.weight_syncs = 0
        self.rng = random.Random(0)

    def generate(self, prompts: list[list[int]], n: int = 1, **_: Any) -> dict[str, Any]:
        self.calls.append((len(prompts), n))
        digit = range(4, 14)  # the tokenizer's ids of "0".."9"
        # the prompt's first two characters, then a random digit; n per prompt, prompt-major
        completion_ids = [[*ids[1:3], self.rng.choice(digit)] for ids in prompts for _ in range(n)]
        logprobs = [[[-1.0]] * len(c) for c in completion_ids]
        token_ids = [[[t] for t in c] for c in completion_ids]
        return {
            "prompt_ids": [list(ids) for ids in prompts],
            "completion_ids": completion_ids,
            "logprobs": logprobs,
            "logprob_token_ids": token_ids,
        }

    def update_named_params(self, metadata: list[Any], params: Any) -> None:
        assert len(list(params)) == len(metadata)
        self.weight_syncs += 1

    def reset_prefix_cache(self) -> None:
        pass


class OfflineVLLMGeneration(VLLMGeneration):  # type: ignore[misc]
    """TRL's ``VLLMGeneration``, connected to the stand-in instead of a server."""

    def _init_vllm(self) -> None:
        self.vllm_client = ServerStandIn()


def echo_reward(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
    """Checks that each completion starts like its own row's prompt; short prompts pass more."""
    assert all(p.startswith(c[:2]) for p, c in zip(prompts, completions)), (prompts, completions)
    return [float(int(c[-1]) < (8 if len(p) <= 5 else 2)) for p, c in zip(prompts, completions)]


def run(make_trainer: Any, gdro: dict[str, Any]) -> tuple[Any, ServerStandIn]:
    trainer, rec = make_trainer(gdro, reward_funcs=echo_reward, max_steps=10)
    generation = OfflineVLLMGeneration(
        model=trainer.model,
        accelerator=trainer.accelerator,
        processing_class=trainer.processing_class,
        mode="server",
        max_completion_length=trainer.args.max_completion_length,
    )
    trainer.use_vllm, trainer.vllm_mode, trainer.vllm_generation = True, "server", generation
    trainer.vllm_importance_sampling_correction = False  # the stand-in's logprobs are made up
    trainer._last_loaded_step = -1
    trainer.train()
    server: ServerStandIn = generation.vllm_client
    assert server.weight_syncs == 5  # TRL pushed the weights before every generation
    return rec, server


def test_unequal_groups_ask_the_server_for_one_completion_per_row(make_trainer: Any) -> None:
    gdro = {"rollout": {"mode": "neyman", "max": 8}, "classifier": {"num_bins": 4}}
    rec, server = run(make_trainer, gdro)
    assert server.calls == [(16, 1)] * 5  # every row sent, one completion each
    assert all(int(r.rollouts.sum()) == 16 for r in rec.records)
    assert any(len(set(r.rollouts.tolist())) > 1 for r in rec.records)


def test_equal_groups_keep_trls_server_batching(make_trainer: Any) -> None:
    rec, server = run(make_trainer, {"prompt": {"mode": "reweight"}})
    assert server.calls == [(4, 4)] * 5  # TRL's own: 4 unique prompts, 4 completions each
    assert all(set(r.rollouts.tolist()) == {4} for r in rec.records)
