"""Build what a run needs: the task, the controller and the starting policy (with cached SFT)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gdro_torch.config import TrainConfig
from gdro_torch.model import (
    EMBEDDED_MODELS,
    TARGET_WINDOW,
    build_embedded,
    check_model_dir,
    default_cache_dir,
    load_local,
    save_model_dir,
    sft_key,
    sft_warmup,
)
from gdro_torch.tasks import Task, load_task, parse_task_spec

__all__ = ["build_controller", "check_inputs", "load_policy", "resolve_device", "sft_steps_for"]

SFT_FORMAT = 5  # bump when the SFT recipe or its data change: old cache entries are not reused


def check_inputs(cfg: TrainConfig) -> Task:
    """Check everything that can be checked before compute; return the task.

    Raises:
        ValueError: An unknown or malformed task, a model that is not a causal LM, a batch
            larger than the training split, ``--device cuda`` without a CUDA GPU.

    Examples:
        >>> cfg = TrainConfig(model="tiny-llama-0.1m", task="addition:max_digits=2,size=20")
        >>> check_inputs(cfg.replace(batch_size=8)).spec
        'addition:max_digits=2,size=20'
        >>> check_inputs(cfg.replace(batch_size=32))  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        ValueError: --batch-size must be <= the training split's size 20
        (task 'addition:max_digits=2,size=20'); got 32
        >>> check_inputs(cfg.replace(model="/no/such/model"))  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        ValueError: --model '/no/such/model' is neither an embedded model name
        (tiny-llama-0.1m, tiny-llama-1m, tiny-llama-34m) nor a local directory
    """
    task = load_task(cfg.task)
    resolve_device(cfg)
    if cfg.model not in EMBEDDED_MODELS:
        check_model_dir(cfg.model)
    if cfg.batch_size > len(task.train):
        raise ValueError(
            f"--batch-size must be <= the training split's size {len(task.train)} "
            f"(task {task.spec!r}); got {cfg.batch_size}"
        )
    if cfg.max_new_tokens is None and task.max_answer_chars == 0:
        raise ValueError(
            f"task {task.spec!r}: cannot infer the answer length; pass --max-new-tokens"
        )
    return task


def resolve_device(cfg: TrainConfig) -> torch.device:
    """The torch device of ``cfg.device`` (``auto``: ``cuda`` when a CUDA GPU is visible).

    Raises:
        ValueError: For ``cuda`` when no CUDA GPU is visible.

    Examples:
        >>> from unittest import mock
        >>> resolve_device(TrainConfig(device="cpu"))
        device(type='cpu')
        >>> with mock.patch("torch.cuda.is_available", return_value=False):
        ...     print(resolve_device(TrainConfig(device="auto")))
        ...     resolve_device(TrainConfig(device="cuda"))
        Traceback (most recent call last):
        ...
        ValueError: --device cuda needs a CUDA GPU and none is visible; use --device cpu or auto
    """
    if cfg.device == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if cfg.device == "cuda":
        raise ValueError(
            "--device cuda needs a CUDA GPU and none is visible; use --device cpu or auto"
        )
    return torch.device("cpu")


def build_controller(cfg: TrainConfig, num_prompts: int) -> Any:
    """The ``GDROController`` for the run's settings over ``num_prompts`` training prompts.

    Examples:
        >>> cfg = TrainConfig(batch_size=4, controller={"rollout": {"mean": 3}})
        >>> ctl = build_controller(cfg, num_prompts=20)
        >>> plan = ctl.plan(ctl.sample(4))
        >>> plan.prompt_ids.tolist(), plan.rollouts.tolist(), plan.weights.tolist()
        ([4, 19, 6, 2], [3, 3, 3, 3], [1.0, 1.0, 1.0, 1.0])
    """
    from gdro_core import GDROController

    return GDROController.from_config(cfg.controller_config(), num_prompts)


def sft_steps_for(cfg: TrainConfig) -> int:
    """SFT steps: the configured number, else 2500 for an embedded model and 0 for a local one.

    Examples:
        >>> sft_steps_for(TrainConfig(model="tiny-llama-1m"))
        2500
        >>> sft_steps_for(TrainConfig(model="/models/my-llama"))  # a local model: no warm-up
        0
        >>> sft_steps_for(TrainConfig(model="/models/my-llama", sft_steps=50))
        50
    """
    if cfg.sft_steps is not None:
        return cfg.sft_steps
    return 2500 if cfg.model in EMBEDDED_MODELS else 0


def load_policy(
    cfg: TrainConfig,
    task: Task,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> tuple[Any, Any, bool]:
    """The starting policy: the model after its SFT warm-up, loaded from the cache when possible.

    Args:
        cfg: Run settings (model, task, seed and the SFT knobs).
        task: The task (SFT trains on its ``sft`` stream).
        cache_dir: SFT cache (default :func:`gdro_torch.model.default_cache_dir`).
        progress: ``progress(step, total, loss)`` during SFT.

    Returns:
        ``(model, tokenizer, from_cache)``, the model on the CPU (the warm-up itself runs on
        ``cfg.device``). After a warm-up, ``model.config.gdro_sft`` records
        it (``steps`` run, ``max_steps``, mean ``loss`` of the last 100 steps, ``target_loss``);
        it is saved in the model's ``config.json``.

    Examples:
        Two SFT steps on the 0.1 M model; the second call finds the result in the cache:

        >>> import tempfile
        >>> cfg = TrainConfig(
        ...     model="tiny-llama-0.1m", task="addition:max_digits=2,size=20", batch_size=4,
        ...     sft_steps=2, sft_batch=4,
        ... )
        >>> task = check_inputs(cfg)
        >>> seen = []
        >>> with tempfile.TemporaryDirectory() as cache:
        ...     _, _, hit_1 = load_policy(
        ...         cfg, task, cache_dir=cache, progress=lambda s, n, loss: seen.append((s, n))
        ...     )
        ...     model, tokenizer, hit_2 = load_policy(cfg, task, cache_dir=cache)
        >>> hit_1, hit_2, seen
        (False, True, [(1, 2), (2, 2)])
        >>> record = model.config.gdro_sft  # read back from the cached config.json
        >>> record["steps"], record["max_steps"], record["target_loss"]
        (2, 2, None)
        >>> type(model).__name__, tokenizer.padding_side
        ('LlamaForCausalLM', 'left')
    """
    steps = sft_steps_for(cfg)
    if cfg.model in EMBEDDED_MODELS:
        model, tok = build_embedded(cfg.model, cfg.sft_seed)
        origin: dict[str, Any] = {
            "embedded": cfg.model,
            **dataclasses.asdict(EMBEDDED_MODELS[cfg.model]),
        }
    else:
        model, tok = load_local(cfg.model)
        cfg_file = Path(cfg.model, "config.json").resolve()
        origin = {"path": str(cfg_file.parent), "mtime": cfg_file.stat().st_mtime_ns}
    if steps == 0:
        return model, tok, False
    model.to(resolve_device(cfg))  # the warm-up runs where the policy will
    # the whole spec: the split sizes change the held-out prompts, which the SFT stream avoids
    name, sft_task = parse_task_spec(task.spec)
    key = sft_key(
        {
            "format": SFT_FORMAT,
            "origin": origin,
            "task": [name, sft_task],
            "seed": cfg.sft_seed,
            "steps": steps,
            "batch": cfg.sft_batch,
            "lr": cfg.sft_lr,
            "clip": cfg.sft_max_grad_norm,
            "target": cfg.sft_target_loss,
        }
    )
    cached = Path(cache_dir or default_cache_dir()) / "sft" / key
    if (cached / "config.json").is_file():
        model, tok = load_local(cached)
        return model, tok, True

    stream = task.sft  # it never yields a held-out prompt

    def examples(gen: torch.Generator, n: int) -> list[tuple[str, str]]:
        items = [stream.item(i) for i in torch.randint(len(stream), (n,), generator=gen).tolist()]
        return [(it.prompt, it.answer) for it in items]

    losses = sft_warmup(
        model,
        tok,
        examples,
        steps=steps,
        batch_size=cfg.sft_batch,
        lr=cfg.sft_lr,
        max_grad_norm=cfg.sft_max_grad_norm,
        target_loss=cfg.sft_target_loss,
        seed=cfg.sft_seed,
        progress=None if progress is None else (lambda s, loss: progress(s, steps, loss)),
    )
    recent = losses[-TARGET_WINDOW:]
    # the warm-up's record travels with the weights (config.json of every copy of the model)
    model.config.gdro_sft = {
        "steps": len(losses),
        "max_steps": steps,
        "loss": sum(recent) / len(recent),
        "target_loss": cfg.sft_target_loss,
    }
    save_model_dir(model, tok, cached)
    model, tok = load_local(cached)  # identical weights; the same code path as a cache hit
    return model, tok, False
