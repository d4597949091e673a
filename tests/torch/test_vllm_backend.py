"""The vLLM backend's wiring, driven through a stand-in ``vllm`` module.

vLLM needs a CUDA GPU, which CI does not have, so these tests put a small stand-in ``vllm``
package in ``sys.modules``: its ``LLM`` samples with Hugging Face ``generate`` from the model
directory it is given, and records what the backend asks of it. They check our side of the
contract (one request per row with its own seed, full-distribution sampling, ``<eos>`` handling,
weights pushed after every update through either engine layout); they do not show that a real
vLLM release accepts these calls.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from gdro_torch.config import TrainConfig
from gdro_torch.generation import VLLMBackend, generate
from gdro_torch.loop import train
from gdro_torch.model import build_embedded, load_local, save_model_dir, sft_warmup
from gdro_torch.rundir import read_metrics


class _SamplingParams:
    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)


class _Weights:
    """The object whose ``load_weights`` the backend calls (vLLM's model inside its runner)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.loads = 0

    def load_weights(self, weights: list[tuple[str, torch.Tensor]]) -> None:
        names = [name for name, _ in weights]
        assert len(names) == len(set(names))
        self.model.load_state_dict(dict(weights), strict=True)
        self.loads += 1


class _LLM:
    """Samples like vLLM's offline ``LLM`` would, with ``generate`` on CPU."""

    layout = "v0"  # "v0": engine.model_executor.driver_worker; "v1": collective_rpc only
    drop_eos = False  # True: return stopped sequences without their <eos> token
    last: _LLM | None = None

    def __init__(self, model: str, **kwargs: Any) -> None:
        self.model, self.tokenizer = load_local(model)
        self.kwargs = kwargs
        self.weights = _Weights(self.model)
        self.requests: list[tuple[str, Any]] = []
        runner = SimpleNamespace(model_runner=SimpleNamespace(model=self.weights))
        executor = SimpleNamespace(driver_worker=runner) if self.layout == "v0" else None
        self.llm_engine = SimpleNamespace(model_executor=executor)
        self._worker = runner
        _LLM.last = self

    def get_tokenizer(self) -> Any:
        return self.tokenizer

    def collective_rpc(self, method: Any) -> list[Any]:
        return [method(self._worker)]

    @torch.no_grad()
    def generate(self, prompts: list[str], params: list[Any], use_tqdm: bool) -> list[Any]:
        eos = self.tokenizer.eos_token_id
        outs = []
        for prompt, p in zip(prompts, params, strict=True):
            assert (p.temperature, p.top_k, p.top_p) == (1.0, -1, 1.0)
            self.requests.append((prompt, p))
            torch.manual_seed(p.seed)
            ids = self.tokenizer(prompt, return_tensors="pt")["input_ids"]
            new = self.model.generate(
                input_ids=ids,
                do_sample=True,
                top_k=0,
                max_new_tokens=p.max_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=eos,
            )[0, ids.shape[1] :].tolist()
            reason = "stop" if eos in new else "length"
            if eos in new:
                new = new[: new.index(eos) + (0 if self.drop_eos else 1)]
            outs.append(
                SimpleNamespace(outputs=[SimpleNamespace(token_ids=new, finish_reason=reason)])
            )
        return outs


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> type[_LLM]:
    import gdro_torch.generation

    module = types.ModuleType("vllm")
    module.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    module.LLM = _LLM  # type: ignore[attr-defined]
    module.SamplingParams = _SamplingParams  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setattr(gdro_torch.generation, "vllm_available", lambda: True)
    monkeypatch.setattr(_LLM, "layout", "v0")
    monkeypatch.setattr(_LLM, "drop_eos", False)
    monkeypatch.setattr(_LLM, "last", None)
    return _LLM


@pytest.mark.parametrize("layout", ["v0", "v1"])
def test_train_samples_with_the_engine_and_pushes_weights_after_every_update(
    stand_in: type[_LLM], layout: str, tiny_cfg: TrainConfig, tmp_path: Path
) -> None:
    stand_in.layout = layout
    cfg = tiny_cfg.replace(
        backend="vllm", steps=2, controller={"rollout": {"mode": "bandit", "mean": 3}}
    )
    result = train(cfg, tmp_path / "run")
    llm = stand_in.last
    assert llm is not None and result.steps_done == 2
    assert llm.kwargs["dtype"] == "float32" and llm.kwargs["enforce_eager"] is True
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    budget = cfg.batch_size * cfg.controller.rollout.mean
    assert [r["train/rollouts"] for r in rows[1:]] == [budget, budget]
    # every rollout is one request with its own seed; a step's seeds are all different
    assert len(llm.requests) == 2 * budget
    for step in range(2):
        seeds = [p.seed for _, p in llm.requests[step * budget : (step + 1) * budget]]
        assert len(set(seeds)) == budget
    # the engine was built from the starting policy, and each update was pushed into it
    assert llm.weights.loads == 2
    final, _ = load_local(tmp_path / "run" / "model")
    for (name, a), b in zip(
        final.state_dict().items(), llm.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_completions_keep_or_gain_their_eos(stand_in: type[_LLM], tmp_path: Path) -> None:
    model, tok = build_embedded("tiny-llama-0.1m", seed=0)
    pairs = [("1+2=", "3"), ("12+30=", "24")]
    sft_warmup(
        model, tok, lambda gen, n: pairs * (n // 2), steps=30, batch_size=8, lr=1e-2, warmup=1
    )
    save_model_dir(model, tok, tmp_path / "m")
    prompts = ["1+2=", "1+2=", "12+30=", "12+30="]
    backend = VLLMBackend(tmp_path / "m")
    kept = generate(None, tok, prompts, max_new_tokens=5, seed=3, backend=backend)
    stand_in.drop_eos = True  # an engine that leaves <eos> out of a stopped sequence
    gained = generate(None, tok, prompts, max_new_tokens=5, seed=3, backend=backend)
    eos = tok.eos_token_id
    responses = kept.input_ids[:, kept.num_prompt_tokens :]
    stopped = [eos in row for row in responses.tolist()]
    assert any(stopped)  # the warmed-up model ends its answers; else this test shows nothing
    assert kept.texts == gained.texts
    assert torch.equal(kept.response_mask, gained.response_mask)
    assert torch.equal(kept.input_ids, gained.input_ids)
    # two requests for the same prompt get different seeds (else a group would be one sample)
    seeds = [p.seed for _, p in stand_in.last.requests[:4]]  # type: ignore[union-attr]
    assert len(set(seeds)) == 4
