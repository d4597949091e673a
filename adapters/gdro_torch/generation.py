"""Batched rollouts: Hugging Face ``generate`` on CPU, vLLM optionally on a GPU.

Sampling is from the full distribution (``top_k=0, top_p=1, temperature=1``): truncating the
distribution would make the samples disagree with the policy being trained.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = ["Rollouts", "VLLMBackend", "generate", "vllm_available"]


class Rollouts(NamedTuple):
    """Sampled completions, ready for the training forward pass.

    Attributes:
        input_ids: int64 (B, P + T): left-padded prompts, then completions right-padded.
        attention_mask: int64 (B, P + T): 1 on real prompt tokens and on response tokens.
        response_mask: float32 (B, T): 1 on response tokens up to and including ``<eos>``.
        num_prompt_tokens: P.
        texts: The B decoded completions (special tokens and everything after ``<eos>`` dropped).

    Examples:
        Two scripted completions (a stand-in backend returns fixed token ids), the second with
        a token after its ``<eos>`` that is dropped:

        >>> from gdro_torch.model import build_char_tokenizer
        >>> tok = build_char_tokenizer()
        >>> class Scripted:  # the interface of VLLMBackend.generate
        ...     def generate(self, prompts, max_new_tokens, seed):
        ...         tokens = [["3", "<eos>"], ["2", "4", "<eos>", "9"]]
        ...         return [tok.convert_tokens_to_ids(t) for t in tokens]
        >>> prompts = ["1+2=", "12+30="]
        >>> ro = generate(None, tok, prompts, max_new_tokens=4, seed=0, backend=Scripted())
        >>> ro.texts, ro.num_prompt_tokens, tuple(ro.input_ids.shape)
        (['3', '24'], 7, (2, 10))
        >>> ro.response_mask.tolist()
        [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
        >>> ro.attention_mask.tolist()[0]  # two pad tokens on the left, one on the right
        [0, 0, 1, 1, 1, 1, 1, 1, 1, 0]
    """

    input_ids: Tensor
    attention_mask: Tensor
    response_mask: Tensor
    num_prompt_tokens: int
    texts: list[str]


def _assemble(
    tokenizer: Any,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    responses: list[list[int]],
    max_new_tokens: int,
) -> Rollouts:
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    rows, masks, texts = [], [], []
    for resp in responses:
        resp = list(resp[:max_new_tokens])
        end = resp.index(eos) + 1 if eos in resp else len(resp)
        body = resp[:end]
        texts.append(tokenizer.decode(body, skip_special_tokens=True))
        rows.append(body + [pad] * (max_new_tokens - len(body)))
        masks.append([1] * len(body) + [0] * (max_new_tokens - len(body)))
    width = max((sum(m) for m in masks), default=0)
    width = max(width, 1)
    resp_ids = torch.tensor([r[:width] for r in rows], dtype=torch.long)
    resp_mask = torch.tensor([m[:width] for m in masks], dtype=torch.long)
    return Rollouts(
        input_ids=torch.cat([prompt_ids, resp_ids], dim=1),
        attention_mask=torch.cat([prompt_mask, resp_mask], dim=1),
        response_mask=resp_mask.float(),
        num_prompt_tokens=prompt_ids.shape[1],
        texts=texts,
    )


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    max_new_tokens: int,
    seed: int,
    chunk_size: int = 512,
    backend: VLLMBackend | None = None,
) -> Rollouts:
    """Sample one completion per entry of ``prompts`` (repeat a prompt to get a group).

    Args:
        model: The policy (a causal LM, on any device; the returned tensors are on the CPU).
        tokenizer: Its tokenizer, padding on the left.
        prompts: B prompt strings.
        max_new_tokens: Longest completion, ``<eos>`` included.
        seed: Seeds torch's global generator before sampling (``generate`` takes no generator), so
            a step's samples depend only on the seed, the step and the weights.
        chunk_size: Rows per ``generate`` call.
        backend: A :class:`VLLMBackend` to sample with instead of ``generate``.

    Returns:
        :class:`Rollouts`, rows in the order of ``prompts``.

    Examples:
        A group of two completions for one prompt and one for another, from the untrained
        0.1 M model; the same seed gives the same samples:

        >>> from gdro_torch.model import build_embedded
        >>> model, tok = build_embedded("tiny-llama-0.1m", seed=0)
        >>> prompts = ["1+2=", "1+2=", "12+30="]
        >>> ro = generate(model, tok, prompts, max_new_tokens=4, seed=0)
        >>> len(ro.texts), ro.num_prompt_tokens, tuple(ro.input_ids.shape)
        (3, 7, (3, 11))
        >>> generate(model, tok, prompts, max_new_tokens=4, seed=0).texts == ro.texts
        True
    """
    enc = tokenizer(prompts, padding=True, return_tensors="pt")
    prompt_ids, prompt_mask = enc["input_ids"], enc["attention_mask"]
    if backend is not None:
        return _assemble(
            tokenizer,
            prompt_ids,
            prompt_mask,
            backend.generate(prompts, max_new_tokens, seed),
            max_new_tokens,
        )
    torch.manual_seed(seed)  # seeds the CPU and every CUDA generator
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    responses: list[list[int]] = []
    for start in range(0, len(prompts), chunk_size):
        ids = prompt_ids[start : start + chunk_size].to(device)
        mask = prompt_mask[start : start + chunk_size].to(device)
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            top_k=0,
            top_p=1.0,
            temperature=1.0,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        responses.extend(out[:, ids.shape[1] :].tolist())
    model.train(was_training)
    return _assemble(tokenizer, prompt_ids, prompt_mask, responses, max_new_tokens)


def vllm_available() -> bool:
    """True when vLLM is installed and a CUDA GPU is visible.

    Examples:
        >>> import importlib.util
        >>> has_vllm = importlib.util.find_spec("vllm") is not None
        >>> vllm_available() == (has_vllm and torch.cuda.is_available())
        True

        Without a GPU it is False whether or not vLLM is installed:

        >>> from unittest import mock
        >>> with mock.patch("torch.cuda.is_available", return_value=False):
        ...     vllm_available()
        False
    """
    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


class VLLMBackend:
    """Sampling with vLLM on a GPU; the policy's weights are pushed to it after every update.

    Optional: it needs ``vllm`` and a CUDA GPU (``vllm_available()``); the CPU loop never uses it.

    Args:
        model_dir: A transformers model directory vLLM can load (the run's starting model).
        gpu_memory_utilization: Fraction of GPU memory vLLM may take.

    Raises:
        ValueError: If vLLM or a CUDA GPU is missing.

    Examples:
        Without a GPU (or without vLLM) the constructor refuses with a hint:

        >>> from unittest import mock
        >>> with mock.patch("torch.cuda.is_available", return_value=False):
        ...     VLLMBackend("runs/demo/init_model")
        Traceback (most recent call last):
        ...
        ValueError: --backend vllm needs the vllm package and a CUDA GPU; use --backend hf on CPU

        On a GPU with vLLM (skipped here: these calls need both), it replaces ``generate``'s
        sampler and takes the policy's weights after each update:

        >>> backend = VLLMBackend("runs/demo/init_model")  # doctest: +SKIP
        >>> ro = generate(model, tok, ["1+2="], max_new_tokens=8, seed=1, backend=backend)
        ... # doctest: +SKIP
        >>> backend.load_weights(model)  # doctest: +SKIP
    """

    def __init__(self, model_dir: str | os.PathLike[str], gpu_memory_utilization: float = 0.3):
        if not vllm_available():
            raise ValueError(
                "--backend vllm needs the vllm package and a CUDA GPU; use --backend hf on CPU"
            )
        from vllm import LLM

        self._llm = LLM(
            model=str(model_dir),
            gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=True,
            dtype="float32",
        )

    def load_weights(self, model: Any) -> None:
        """Copy the policy's current weights into the vLLM engine."""
        weights = [(k, v.detach()) for k, v in model.state_dict().items()]
        engine = self._llm.llm_engine
        executor = getattr(engine, "model_executor", None)
        worker = getattr(executor, "driver_worker", None)
        if worker is not None:
            worker.model_runner.model.load_weights(weights)
        else:  # vLLM v1: run on every worker
            self._llm.collective_rpc(lambda w: w.model_runner.model.load_weights(weights))

    def generate(self, prompts: list[str], max_new_tokens: int, seed: int) -> list[list[int]]:
        """Sample one completion per prompt; returns token ids (``<eos>`` included if emitted)."""
        from vllm import SamplingParams

        # one seed per row: a shared seed would give every member of a group the same sample
        params = [
            SamplingParams(
                temperature=1.0,
                top_k=-1,
                top_p=1.0,
                max_tokens=max_new_tokens,
                seed=seed * 100_003 + i,
                skip_special_tokens=False,
            )
            for i in range(len(prompts))
        ]
        outs = self._llm.generate(prompts, params, use_tqdm=False)
        eos = self._llm.get_tokenizer().eos_token_id
        result = []
        for out in outs:
            ids = list(out.outputs[0].token_ids)
            if out.outputs[0].finish_reason == "stop" and eos not in ids:
                ids.append(eos)
            result.append(ids)
        return result
