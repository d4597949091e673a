"""vLLM server mode with unequal groups, the GPU server replaced by a stand-in.

TRL's server path sends every ``num_generations``-th row as a unique prompt and asks for
``num_generations`` completions of each. Under Rollout-GDRO a prompt's rows are ``n_i`` long, so
gdro asks for one completion per row instead. The stand-in follows the server's contract and
writes each completion from the prompt it was asked for, so a completion attached to another
prompt's row would be caught by the reward function.
"""

from __future__ import annotations

import random
from typing import Any


class ServerStandIn:
    """Answers like ``VLLMGeneration.generate`` in server mode: unique prompts x n completions."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.rng = random.Random(0)

    def sync_weights(self) -> None:
        pass

    def generate(
        self, prompts: list[list[int]], images: Any, num_generations: int, profiler: Any = None
    ) -> tuple[Any, Any, Any, Any]:
        self.calls.append((len(prompts), num_generations))
        unique = prompts[::num_generations]
        prompt_ids = [ids for ids in unique for _ in range(num_generations)]
        digit = range(4, 14)  # the tokenizer's ids of "0".."9"
        # the prompt's first two characters, then a random digit
        completion_ids = [[*ids[1:3], self.rng.choice(digit)] for ids in prompt_ids]
        logprobs = [[[-1.0]] * len(c) for c in completion_ids]
        return prompt_ids, completion_ids, logprobs, None


def echo_reward(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
    """Checks that each completion starts like its own row's prompt; short prompts pass more."""
    assert all(p.startswith(c[:2]) for p, c in zip(prompts, completions)), (prompts, completions)
    return [float(int(c[-1]) < (8 if len(p) <= 5 else 2)) for p, c in zip(prompts, completions)]


def run(make_trainer: Any, gdro: dict[str, Any]) -> tuple[Any, ServerStandIn]:
    trainer, rec = make_trainer(gdro, reward_funcs=echo_reward, max_steps=10)
    server = ServerStandIn()
    trainer.use_vllm, trainer.vllm_mode, trainer.vllm_generation = True, "server", server
    trainer.vllm_importance_sampling_correction = False
    trainer._last_loaded_step = -1
    trainer.train()
    return rec, server


def test_unequal_groups_ask_the_server_for_one_completion_per_row(make_trainer: Any) -> None:
    gdro = {"rollout": {"mode": "neyman", "max": 8}, "classifier": {"num_bins": 4}}
    rec, server = run(make_trainer, gdro)
    assert server.calls == [(16, 1)] * 5
    assert all(int(r.rollouts.sum()) == 16 for r in rec.records)
    assert any(len(set(r.rollouts.tolist())) > 1 for r in rec.records)


def test_equal_groups_keep_trls_server_batching(make_trainer: Any) -> None:
    rec, server = run(make_trainer, {"prompt": {"mode": "reweight"}})
    assert server.calls == [(16, 4)] * 5
    assert all(set(r.rollouts.tolist()) == {4} for r in rec.records)
