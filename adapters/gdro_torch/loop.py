"""The GRPO loop with GDRO controllers, in one readable file.

One step (``grpo_step``), top to bottom:

1. the controller samples prompt ids (or, with ``sampler="variance"``, a peer strategy does)
   and plans them: each prompt's bin, rollout count n_i and advantage weight w_i, decided
   before generation from the prompts' own history;
2. generate n_i completions per prompt (groups of unequal size, one batched ``generate``);
3. score them with the task's exact verifier (reward 1 or 0);
4. group-normalised advantages per prompt group, multiplied by w_i;
5. clipped policy-gradient loss (clip 0.2/0.28), optional KL to the frozen starting policy,
   accumulated over micro-batches; one optimizer step per PPO epoch;
6. ``ctl.update(plan, rewards, losses)`` with the paper's per-prompt loss
   l(x_i) = mean over the prompt's responses of (-token-mean clipped surrogate + kl_coef * KL).

``train`` wraps it: run directory, evaluation, checkpoints, resume. With the controller's
``prompt.mode="off"`` and ``rollout.mode="fixed"`` the same loop is the GRPO baseline (uniform sampling, n-bar rollouts each).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gdro_core.files import atomic_write_text
from gdro_torch.build import (
    build_controller,
    check_inputs,
    load_policy,
    resolve_device,
    sft_steps_for,
)
from gdro_torch.config import RENAMED, TrainConfig
from gdro_torch.evaluate import EvalCounts, paired_change, sample_counts, score_counts
from gdro_torch.generation import VLLMBackend, generate
from gdro_torch.grpo import group_advantages, policy_loss, sequence_logprobs
from gdro_torch.model import load_local, save_model_dir
from gdro_torch.rundir import RunDir, read_metrics
from gdro_torch.sampling import VarianceSampler
from gdro_torch.tasks import Task

__all__ = ["Hooks", "StepContext", "TrainResult", "grpo_step", "lr_at", "train"]

CHECKPOINT_FORMAT = 1


@dataclass
class StepContext:
    """What a GRPO step works with (built once by ``train``, or by hand to drive the step).

    Attributes:
        cfg: The run's settings.
        task: The task (prompts from ``task.train``).
        ctl: The ``gdro_core.GDROController`` (see :func:`gdro_torch.build.build_controller`).
        policy: The causal LM being trained, updated in place.
        ref: A frozen copy of the starting policy for the KL term (None when ``kl_coef`` is 0).
        tokenizer: The policy's tokenizer, padding on the left.
        optimizer: The optimizer over ``policy``'s parameters.
        max_new_tokens: Longest completion.
        backend: A :class:`~gdro_torch.generation.VLLMBackend`, or None for ``generate``.
        sampler: A :class:`~gdro_torch.sampling.VarianceSampler` that picks the prompts
            (``cfg.sampler == "variance"``), or None for the controller's ``sample``.

    Examples:
        >>> from gdro_torch.build import build_controller, check_inputs, load_policy
        >>> cfg = TrainConfig(
        ...     model="tiny-llama-0.1m", task="addition:max_digits=2,size=20", batch_size=4,
        ...     sft_steps=0, kl_coef=0.0,
        ... )
        >>> task = check_inputs(cfg)
        >>> model, tok, _ = load_policy(cfg, task)  # sft_steps=0: the untrained model
        >>> ctx = StepContext(
        ...     cfg=cfg,
        ...     task=task,
        ...     ctl=build_controller(cfg, len(task.train)),
        ...     policy=model,
        ...     ref=None,
        ...     tokenizer=tok,
        ...     optimizer=torch.optim.AdamW(model.parameters(), lr=cfg.lr),
        ...     max_new_tokens=task.max_answer_chars + 1,
        ... )
        >>> ctx.max_new_tokens, ctx.backend is None
        (4, True)
    """

    cfg: TrainConfig
    task: Task
    ctl: Any  # gdro_core.GDROController
    policy: Any
    ref: Any | None  # frozen starting policy, only when kl_coef > 0
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    max_new_tokens: int
    backend: VLLMBackend | None = None
    sampler: VarianceSampler | None = None


def grpo_step(ctx: StepContext, step: int) -> dict[str, float]:
    """Run one GRPO step (steps are 0-based) and return its metrics.

    Args:
        ctx: The step's context; ``ctx.policy``, ``ctx.optimizer`` and ``ctx.ctl`` are updated.
        step: The 0-based step index (it seeds the sampling).

    Returns:
        ``ctx.ctl.metrics()`` verbatim (``batch/``, ``classifier/``, ``prompt/``, ``rollout/``,
        ``mechanism/`` where the controller reports them), then the step's own ``train/*``
        (``train/rollouts`` and ``train/tokens``: the rollouts and response tokens generated,
        ``<eos>`` included), ``sampler/*`` (with a sampler) and ``timing/*`` values, all floats.

    Examples:
        Rollout-GDRO's bandit with 4 prompts and a mean of 3 rollouts: every step spends
        exactly the budget of 12 rollouts.

        >>> from gdro_torch.build import build_controller, check_inputs, load_policy
        >>> cfg = TrainConfig(
        ...     model="tiny-llama-0.1m", task="addition:max_digits=2,size=20", batch_size=4,
        ...     controller={"rollout": {"mode": "bandit", "mean": 3}}, sft_steps=0, kl_coef=0.0,
        ... )
        >>> task = check_inputs(cfg)
        >>> model, tok, _ = load_policy(cfg, task)
        >>> ctx = StepContext(
        ...     cfg, task, build_controller(cfg, len(task.train)), model, None, tok,
        ...     torch.optim.AdamW(model.parameters(), lr=cfg.lr), max_new_tokens=3,
        ... )
        >>> [grpo_step(ctx, step)["train/rollouts"] for step in range(2)]
        [12.0, 12.0]
        >>> metrics = grpo_step(ctx, 2)
        >>> sorted({key.split("/")[0] for key in metrics})
        ['batch', 'classifier', 'mechanism', 'prompt', 'rollout', 'timing', 'train']
        >>> metrics["train/reward_mean"], metrics["train/zero_adv_groups"]  # untrained: all fail
        (0.0, 1.0)
        >>> metrics["mechanism/zero_adv_share"], metrics["mechanism/budget_moved"]  # one bin
        (1.0, 0.0)
    """
    cfg, task, ctl, policy = ctx.cfg, ctx.task, ctx.ctl, ctx.policy
    device = next(policy.parameters()).device
    t0 = time.perf_counter()

    # 1. the controller (or the peer sampler) picks the prompts; the controller plans them
    #    (bins, rollouts n_i, weights w_i)
    if ctx.sampler is not None:
        ids = ctx.sampler.sample(cfg.batch_size)
        sampler_weights = ctx.sampler.weights(ids)
        unseen = float(np.mean(ctx.sampler.last_total[ids] == 0))
    else:
        ids = ctl.sample(cfg.batch_size)
    plan = ctl.plan(ids)
    sizes = torch.tensor(np.array(plan.rollouts), dtype=torch.long)  # (n,)
    group = torch.repeat_interleave(torch.arange(len(sizes)), sizes)  # (R,) row -> prompt
    row_ids = [int(plan.prompt_ids[g]) for g in group.tolist()]  # (R,) prompt id per row
    t1 = time.perf_counter()

    # 2. generate n_i completions for prompt i: rows are grouped, in plan order
    prompts = [task.train.item(i).prompt for i in row_ids]
    ro = generate(
        policy,
        ctx.tokenizer,
        prompts,
        max_new_tokens=ctx.max_new_tokens,
        seed=cfg.seed * 1_000_003 + step + 1,
        chunk_size=max(512, len(prompts)),
        backend=ctx.backend,
    )
    t2 = time.perf_counter()

    # 3. score every completion with the exact verifier
    rewards = torch.tensor(
        [task.train.reward(i, text) for i, text in zip(row_ids, ro.texts, strict=True)],
        dtype=torch.float32,
    )  # (R,)

    # 4. group-normalised advantages (groups of unequal size), times the prompt weights
    advantages = group_advantages(rewards, sizes)  # (R,)
    weights = torch.tensor(np.array(plan.weights), dtype=torch.float32)[group]  # (R,)
    t3 = time.perf_counter()

    # 5. clipped policy-gradient loss over micro-batches, one optimizer step per epoch
    num_rows = len(row_ids)
    chunks = [
        slice(s, min(s + cfg.micro_batch, num_rows)) for s in range(0, num_rows, cfg.micro_batch)
    ]
    total_tokens = float(ro.response_mask.sum().clamp(min=1))
    old_logp: list[torch.Tensor | None] = [None] * len(chunks)
    ref_logp: list[torch.Tensor | None] = [None] * len(chunks)
    input_ids, attention_mask = ro.input_ids.to(device), ro.attention_mask.to(device)
    response_mask = ro.response_mask.to(device)
    advantages_d, weights_d = advantages.to(device), weights.to(device)
    with torch.no_grad():
        for c, rows in enumerate(chunks):
            args = (input_ids[rows], attention_mask[rows], ro.num_prompt_tokens)
            if ctx.ref is not None:
                ref_logp[c] = sequence_logprobs(ctx.ref, *args)
            if cfg.ppo_epochs > 1:  # the sampling policy's log-probs, reused by later epochs
                old_logp[c] = sequence_logprobs(policy, *args)
    response_loss = torch.zeros(num_rows)
    loss_sum = kl_sum = clip_sum = grad_norm = 0.0
    policy.train()
    for _epoch in range(cfg.ppo_epochs):
        ctx.optimizer.zero_grad(set_to_none=True)
        for c, rows in enumerate(chunks):
            mask = response_mask[rows]
            logp = sequence_logprobs(
                policy, input_ids[rows], attention_mask[rows], ro.num_prompt_tokens
            )
            old = old_logp[c]
            if old is None:  # one epoch: on-policy, the sampling policy is the current one
                old = logp.detach()
            parts = policy_loss(
                logp,
                old,
                advantages_d[rows],
                weights_d[rows],
                mask,
                clip_low=cfg.clip_low,
                clip_high=cfg.clip_high,
                ref_logp=ref_logp[c],
                kl_coef=cfg.kl_coef,
            )
            if cfg.loss_agg == "token-mean":  # every response token of the batch counts once
                loss = parts.train.sum() / total_tokens
            else:  # every response counts once
                loss = (parts.train.sum(-1) / mask.sum(-1).clamp(min=1)).sum() / num_rows
            loss.backward()  # type: ignore[no-untyped-call]
            response_loss[rows] += parts.response_loss.cpu() / cfg.ppo_epochs
            loss_sum += loss.item() / cfg.ppo_epochs
            kl_sum += float(parts.kl.sum()) / cfg.ppo_epochs
            clip_sum += float(parts.clipped.sum()) / cfg.ppo_epochs
        grad_norm = float(torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm))
        ctx.optimizer.step()
    if ctx.backend is not None:
        ctx.backend.load_weights(policy)
    t4 = time.perf_counter()

    # 6. the controller learns from this step: rewards (flat, plan order) and per-prompt losses
    prompt_loss = (
        torch.zeros(len(sizes), dtype=torch.float64).index_add_(0, group, response_loss.double())
        / sizes.double()
    )  # (n,) l(x_i)
    ctl.update(plan, rewards.double().numpy(), losses=prompt_loss.numpy())
    correct = (rewards > 0.5).double()
    correct_per_prompt = torch.zeros(len(sizes), dtype=torch.float64).index_add_(0, group, correct)
    if ctx.sampler is not None:  # the peer sampler learns each prompt's latest group
        ctx.sampler.observe(plan.prompt_ids, correct_per_prompt.long().numpy(), sizes.numpy())
    t5 = time.perf_counter()

    # metrics: the controller's verbatim, then the step's own
    row_bins = np.asarray(plan.bins)[group.numpy()]  # (R,)
    metrics = {k: float(v) for k, v in ctl.metrics().items()}
    for b in np.unique(row_bins):  # mean reward over the rollouts of bin b's prompts
        metrics[f"train/reward/{int(b)}"] = float(rewards.numpy()[row_bins == b].mean())
    solved = correct_per_prompt > 0
    if ctx.sampler is not None:
        metrics["sampler/weight_mean"] = float(sampler_weights.mean())
        metrics["sampler/unseen"] = unseen
    metrics.update(
        {
            "train/reward_mean": float(rewards.mean()),
            "train/pass_rate": float(correct.mean()),
            "train/solved": float(solved.double().mean()),
            "train/rollouts": float(num_rows),
            "train/tokens": float(ro.response_mask.sum()),
            "train/loss": loss_sum,
            "train/prompt_loss_mean": float(prompt_loss.mean()),
            "train/kl": kl_sum / num_rows,
            "train/clip_frac": clip_sum / num_rows,
            "train/grad_norm": grad_norm,
            "train/zero_adv_groups": float(
                np.mean(((correct_per_prompt == 0) | (correct_per_prompt == sizes)).numpy())
            ),
            "train/weight_max": float(np.max(plan.weights)),
            "train/response_len": float(ro.response_mask.sum(-1).mean()),
            "timing/controller_s": (t1 - t0) + (t5 - t4),
            "timing/generate_s": t2 - t1,
            "timing/score_s": t3 - t2,
            "timing/update_s": t4 - t3,
            "timing/step_s": t5 - t0,
        }
    )
    return metrics


# ---------------------------------------------------------------------------------------------
# The run around the step: run directory, evaluation, checkpoints, resume
# ---------------------------------------------------------------------------------------------


@dataclass
class Hooks:
    """Optional callbacks for a front end (progress bars, logs).

    Attributes:
        on_phase: ``on_phase(name, detail)`` when a phase starts ("sft", "eval", "train", ...).
        on_sft: ``on_sft(step, total, loss)`` during the SFT warm-up.
        on_step: ``on_step(step, total, metrics)`` after every GRPO step (1-based step).
        should_stop: Polled between steps; True stops the run after a checkpoint (Ctrl-C).

    Examples:
        Record the phases and stop before the first GRPO step:

        >>> import tempfile
        >>> cfg = TrainConfig(
        ...     model="tiny-llama-0.1m", task="addition:max_digits=2,size=20,eval_size=4",
        ...     steps=2, batch_size=4, sft_steps=0, eval_every=0, checkpoint_every=0,
        ... )
        >>> phases = []
        >>> hooks = Hooks(
        ...     on_phase=lambda name, detail: phases.append(f"{name}: {detail}"),
        ...     should_stop=lambda: True,
        ... )
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     result = train(cfg, f"{tmp}/run", hooks=hooks)
        >>> phases
        ['sft: tiny-llama-0.1m', 'eval: step 0', 'train: 2 steps']
        >>> result.steps_done, result.interrupted
        (0, True)
    """

    on_phase: Callable[[str, str], None] = lambda name, detail: None
    on_sft: Callable[[int, int, float], None] | None = None
    on_step: Callable[[int, int, dict[str, float]], None] = lambda step, total, m: None
    should_stop: Callable[[], bool] = lambda: False


@dataclass
class TrainResult:
    """The outcome of :func:`train`.

    Attributes:
        run_dir: The run directory.
        steps_done: Completed GRPO steps.
        interrupted: True if stopped early (a checkpoint was saved).
        eval_start: Evaluation before the first step.
        eval_end: Evaluation after the last completed step (empty if interrupted before it).
        change: ``{"mean@8": (change, half_width), "pass@8": (...)}``: end minus start, the
            mean over held-out prompts with its 95% t-interval (:func:`paired_change`); empty
            unless the run finished.
        wall_s: Wall-clock seconds of this call.

    Examples:
        >>> import tempfile
        >>> cfg = TrainConfig(
        ...     model="tiny-llama-0.1m", task="addition:max_digits=2,size=20,eval_size=4",
        ...     steps=1, batch_size=4, sft_steps=0, eval_every=0, checkpoint_every=0,
        ... )
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     result = train(cfg, f"{tmp}/run")
        ...     print(result.run_dir.name, result.steps_done, result.interrupted)
        run 1 False
        >>> sorted(result.eval_end)  # held-out scores at the end; all 4 prompts are level 2
        ... # doctest: +NORMALIZE_WHITESPACE
        ['eval/mean@8', 'eval/mean@8/level2', 'eval/pass@1', 'eval/pass@1/level2',
         'eval/pass@8', 'eval/pass@8/level2']
        >>> result.eval_end["eval/pass@8"], result.wall_s > 0
        (0.0, True)
        >>> result.change  # the untrained model solves nothing, before or after one step
        {'mean@8': (0.0, 0.0), 'pass@8': (0.0, 0.0)}
    """

    run_dir: Path
    steps_done: int
    interrupted: bool
    eval_start: dict[str, float] = field(default_factory=dict)
    eval_end: dict[str, float] = field(default_factory=dict)
    change: dict[str, tuple[float, float]] = field(default_factory=dict)
    wall_s: float = 0.0


def run_config(cfg: TrainConfig, task: Task) -> dict[str, Any]:
    """The ``config.json`` of a run: the settings plus what a reader of the run needs."""
    import transformers

    return {
        "kind": "train",
        "num_bins": cfg.controller.classifier.num_bins,
        **cfg.to_dict(),
        "task_spec": task.spec,
        "num_prompts": len(task.train),
        "eval_size": len(task.eval),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }


def lr_at(cfg: TrainConfig, step: int) -> float:
    """The GRPO learning rate of 0-based ``step`` under ``cfg.lr_schedule``.

    Examples:
        >>> cfg = TrainConfig(lr=1e-4, steps=3, lr_schedule="cosine")
        >>> [round(lr_at(cfg, s), 7) for s in range(3)]
        [0.0001, 5.5e-05, 1e-05]
        >>> lr_at(cfg.replace(lr_schedule="constant"), 2)
        0.0001
    """
    if cfg.lr_schedule == "constant" or cfg.steps == 1:
        return cfg.lr
    progress = step / (cfg.steps - 1)
    return cfg.lr * (0.1 + 0.45 * (1.0 + math.cos(math.pi * progress)))


def _sft_summary(sft: dict[str, Any], cached: bool) -> str:
    """One line on the warm-up: its steps and loss, and whether (and why) it stopped early."""
    line = f"warm-up {'from the cache' if cached else 'done'}: {sft['steps']} steps, "
    line += f"loss {sft['loss']:.3f}"
    target = sft.get("target_loss")
    if target is not None:
        if sft["loss"] <= target:
            line += f" (target {target}"
            if sft["steps"] < sft["max_steps"]:
                line += f" reached: stopped before the limit of {sft['max_steps']} steps"
            line += ")"
        else:
            line += (
                f"; its target {target} was not reached in {sft['max_steps']} steps, so this "
                "start is weaker than intended (see docs/torch.md; try another --sft-seed)"
            )
    return line


def config_diff(saved: dict[str, Any], cfg: TrainConfig) -> list[str]:
    """Fields of ``cfg`` whose value differs from a saved ``config.json`` (as ``name: a -> b``).

    A config saved by the previous release (flat controller settings) is converted first.
    """
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    if "controller" not in saved:  # saved by the previous release
        names |= set(RENAMED)
    try:
        old = TrainConfig.from_dict({k: v for k, v in saved.items() if k in names}).to_dict()
    except (TypeError, ValueError) as exc:
        return [f"the saved config is not valid here ({exc})"]
    return [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in cfg.to_dict().items() if old.get(k) != v]


def _trainer_state(ctx: StepContext, step: int) -> dict[str, Any]:
    state = {
        "format": CHECKPOINT_FORMAT,
        "step": step,
        "model": ctx.policy.state_dict(),
        "optimizer": ctx.optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    if ctx.sampler is not None:
        state["sampler"] = ctx.sampler.state_dict()
    return state


def _restore(ctx: StepContext, rd: RunDir) -> int:
    """Load the latest checkpoint into ``ctx``, drop later metrics; return the completed steps."""
    ckpt = rd.checkpoint_root / (rd.checkpoint_root / "latest").read_text().strip()
    state = torch.load(ckpt / "trainer.pt", weights_only=True, map_location="cpu")
    ctx.policy.load_state_dict(state["model"])
    ctx.optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    ctx.ctl = type(ctx.ctl).load(ckpt / "controller.npz")
    if ctx.sampler is not None:
        ctx.sampler.load_state_dict(state["sampler"])
    if ctx.backend is not None:
        ctx.backend.load_weights(ctx.policy)
    start = int(state["step"])
    rd.truncate_metrics(start)
    rd.open_tensorboard(purge_step=start + 1)
    return start


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    cache_dir: str | Path | None = None,
    hooks: Hooks | None = None,
) -> TrainResult:
    """Train ``cfg.model`` with GRPO and the configured GDRO controllers.

    Args:
        cfg: The settings.
        run_dir: The run directory; it must not hold a run unless ``resume`` is True.
        resume: Continue the run in ``run_dir`` from its latest checkpoint. ``cfg`` must equal
            the saved config; the continuation reproduces an uninterrupted run on CPU.
        cache_dir: SFT cache directory (default ``~/.cache/gdro``).
        hooks: Callbacks for progress display and stopping.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: Bad input (task, model, sizes), a ``run_dir`` that already holds a run, or a
            resume whose config differs; all raised before any compute.

    Examples:
        Two steps on the untrained 0.1 M model, stopped after the first and resumed:

        >>> import os, tempfile
        >>> from gdro_torch.rundir import read_metrics
        >>> cfg = TrainConfig(
        ...     model="tiny-llama-0.1m", task="addition:max_digits=2,size=20,eval_size=4",
        ...     steps=2, batch_size=4, controller={"rollout": {"mean": 3}}, sft_steps=0, eval_every=0,
        ...     checkpoint_every=0,
        ... )
        >>> done = []
        >>> stop_after_one = Hooks(
        ...     on_step=lambda step, total, metrics: done.append(step),
        ...     should_stop=lambda: len(done) >= 1,
        ... )
        >>> tmp = tempfile.TemporaryDirectory()
        >>> run = f"{tmp.name}/run"
        >>> first = train(cfg, run, hooks=stop_after_one)
        >>> first.steps_done, first.interrupted, sorted(os.listdir(f"{run}/checkpoints"))
        (1, True, ['latest', 'step-000000', 'step-000001'])
        >>> result = train(cfg, run, resume=True)
        >>> result.steps_done, result.interrupted
        (2, False)
        >>> sorted(os.listdir(run))
        ['checkpoints', 'config.json', 'evals', 'init_model', 'metrics.jsonl', 'model', 'tb']
        >>> rows = read_metrics(f"{run}/metrics.jsonl")  # step 0: the evaluation before training
        >>> [(row["step"], row.get("train/rollouts")) for row in rows]
        [(0, None), (1, 12.0), (2, 12.0)]

        A finished run is not overwritten, and a resume must keep the config:

        >>> train(cfg.replace(lr=1e-3), run, resume=True)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: cannot resume ...: config differs (lr: 0.0002 -> 0.001)
        >>> train(cfg, run)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: run directory ... already holds a run; use --resume ... or another --out
        >>> tmp.cleanup()
    """
    wall = time.perf_counter()
    hooks = hooks or Hooks()
    rd = RunDir(run_dir)

    # -- everything that can fail on user input fails here, before any compute --------------
    task = check_inputs(cfg)
    device = resolve_device(cfg)
    if resume:
        diff = config_diff(rd.read_config(), cfg)
        if diff:
            raise ValueError(f"cannot resume {rd.path}: config differs ({'; '.join(diff)})")
        if rd.latest_checkpoint() is None or not (rd.path / "init_model").is_dir():
            raise ValueError(f"cannot resume {rd.path}: it holds no checkpoint")
    elif rd.config_path.exists():
        raise ValueError(
            f"run directory {rd.path} already holds a run; use --resume {rd.path} or another --out"
        )
    ctl = build_controller(cfg, len(task.train))
    backend = None
    if cfg.backend == "vllm":
        from gdro_torch.generation import vllm_available

        if not vllm_available():
            raise ValueError(
                "--backend vllm needs the vllm package and a CUDA GPU; use --backend hf"
            )
    max_new_tokens = cfg.max_new_tokens or task.max_answer_chars + 1

    # -- the starting policy (SFT warm-up, cached) and the frozen reference -------------------
    if resume:
        policy, tokenizer = load_local(rd.path / "init_model")
    else:
        hooks.on_phase("sft", cfg.model)
        policy, tokenizer, cached = load_policy(
            cfg, task, cache_dir=cache_dir, progress=hooks.on_sft
        )
        # a local model may carry the record of an earlier warm-up: report only this run's
        sft = getattr(policy.config, "gdro_sft", None) if sft_steps_for(cfg) > 0 else None
        if sft is not None:
            hooks.on_phase("sft", _sft_summary(sft, cached))
        rd.path.mkdir(parents=True, exist_ok=True)
        rd.write_config({**run_config(cfg, task), "sft": sft})
        save_model_dir(policy, tokenizer, rd.path / "init_model")
    policy.to(device)
    ref = None
    if cfg.kl_coef > 0:
        ref = copy.deepcopy(policy).eval().requires_grad_(False)
    if cfg.backend == "vllm":
        backend = VLLMBackend(rd.path / "init_model")
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0)
    sampler = None
    if cfg.sampler == "variance":  # its own random stream, apart from the controller's
        sampler = VarianceSampler(len(task.train), seed=[cfg.seed, 1])
    ctx = StepContext(
        cfg, task, ctl, policy, ref, tokenizer, optimizer, max_new_tokens, backend, sampler
    )

    def run_eval(step: int) -> dict[str, float]:
        hooks.on_phase("eval", f"step {step}")
        t = time.perf_counter()
        counts = sample_counts(
            policy,
            tokenizer,
            task.eval,
            samples=cfg.eval_samples,
            max_new_tokens=max_new_tokens,
            seed=cfg.seed * 1_000_003 + 999_999_937,
            num_prompts=cfg.eval_prompts,
        )
        atomic_write_text(eval_path(step), counts.to_json())  # per prompt, for paired_change
        return {**score_counts(counts, (1, 8)), "timing/eval_s": time.perf_counter() - t}

    def eval_path(step: int) -> Path:
        return rd.path / "evals" / f"step-{step:06d}.json"

    # -- start, or restore the latest checkpoint -----------------------------------------------
    result = TrainResult(run_dir=rd.path, steps_done=0, interrupted=False)
    spent = {"train/rollouts_cum": 0.0, "train/tokens_cum": 0.0}  # generated so far
    if resume:
        start = _restore(ctx, rd)
        rows = read_metrics(rd.metrics_path)
        row0 = next((r for r in rows if r["step"] == 0), {})
        result.eval_start = {k: v for k, v in row0.items() if k.startswith("eval/")}
        last: dict[str, Any] = next((r for r in reversed(rows) if "train/rollouts_cum" in r), {})
        spent = {k: float(last.get(k, 0.0)) for k in spent}
    else:
        start = 0
        rd.open_tensorboard()
        rd.save_checkpoint(0, _trainer_state(ctx, 0), ctx.ctl)
    if start == 0 and not result.eval_start:  # a fresh run, or one stopped during this eval
        result.eval_start = run_eval(0)
        rd.append_metrics({"step": 0, **result.eval_start})

    # -- the loop ------------------------------------------------------------------------------
    hooks.on_phase(
        "train", f"{cfg.steps - start} steps" + ("" if device.type == "cpu" else f" on {device}")
    )
    step = start
    try:
        while step < cfg.steps:
            if hooks.should_stop():
                result.interrupted = True
                break
            lr = lr_at(cfg, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            row: dict[str, float] = {**grpo_step(ctx, step), "train/lr": lr}
            spent["train/rollouts_cum"] += row["train/rollouts"]
            spent["train/tokens_cum"] += row["train/tokens"]
            row.update(spent)
            step += 1
            if step == cfg.steps or (cfg.eval_every and step % cfg.eval_every == 0):
                row.update(run_eval(step))
            rd.append_metrics({"step": step, **row})
            if step == cfg.steps or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                rd.save_checkpoint(step, _trainer_state(ctx, step), ctx.ctl)
            hooks.on_step(step, cfg.steps, row)
        if result.interrupted and rd.latest_checkpoint() != rd.checkpoint_root / f"step-{step:06d}":
            rd.save_checkpoint(step, _trainer_state(ctx, step), ctx.ctl)
        if step == cfg.steps:
            save_model_dir(policy, tokenizer, rd.path / "model")
            last = read_metrics(rd.metrics_path)[-1]
            result.eval_end = {k: v for k, v in last.items() if k.startswith("eval/")}
            if eval_path(0).is_file() and eval_path(step).is_file():
                first, final = EvalCounts.load(eval_path(0)), EvalCounts.load(eval_path(step))
                result.change = {
                    m: paired_change(first, final, m)
                    for m in (f"mean@{cfg.eval_samples}", "pass@8")
                }
    finally:
        rd.close()
    result.steps_done = step
    result.wall_s = time.perf_counter() - wall
    return result
