"""Shared pieces for the gdro_trl tests: TRL's real GRPOTrainer on CPU, nothing downloaded.

The policy is the embedded tiny Llama (character tokenizer, built in code); the prompts come from
the built-in addition task. An untrained model never solves addition, so the reward is a noisy
verifier whose pass rate depends on the prompt's digit count (80%, 40%, 10%): completions are
sampled, so each prompt gets a mix of rewards and the difficulty bins separate.

:func:`check_against_reference` is the independent check of a run: it replays the run with a
second controller fed by hand, from what the reward functions returned for each prompt TEXT, and
compares every plan, every completion count and every advantage the loss got.
"""

from __future__ import annotations

import functools
import os
import zlib
from collections import Counter, deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from trl import GRPOConfig  # noqa: E402

from gdro_torch.model import build_embedded  # noqa: E402
from gdro_torch.tasks import load_task  # noqa: E402

PASS_PERCENT = {1: 80, 2: 40, 3: 10}


def addition_dataset(size: int = 12) -> Dataset:
    """``size`` addition prompts of 1-3 digits, with their level."""
    task = load_task(f"addition:max_digits=3,size={size}")
    items = [task.train.item(i) for i in range(size)]
    return Dataset.from_dict(
        {"prompt": [it.prompt for it in items], "level": [it.level for it in items]}
    )


def noisy_verifier(
    prompts: list[str], completions: list[str], level: list[int], **_: Any
) -> list[float]:
    """1.0 for a completion whose hash falls under its level's pass rate, else 0.0."""
    return [
        1.0 if zlib.crc32((p + c).encode()) % 100 < PASS_PERCENT[lv] else 0.0
        for p, c, lv in zip(prompts, completions, level)
    ]


def grpo_args(out: Path, **overrides: Any) -> GRPOConfig:
    """A small CPU GRPOConfig: 4 prompts x 4 completions per generation batch."""
    base: dict[str, Any] = dict(
        output_dir=str(out),
        per_device_train_batch_size=16,
        num_generations=4,
        max_completion_length=3,
        max_steps=6,
        num_iterations=2,
        learning_rate=1e-3,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    base.update(overrides)
    return GRPOConfig(**base)


def tiny_model(seed: int = 0) -> tuple[Any, Any]:
    """The embedded 0.1M-parameter Llama and its tokenizer."""
    torch.manual_seed(seed)
    return build_embedded("tiny-llama-0.1m", seed=seed)


class RewardCall(NamedTuple):
    """One reward function's call on one generation batch (this process's rows)."""

    prompts: list[Any]  # the rows' prompts, as the reward function got them
    rewards: list[float]  # what it returned, None as NaN
    keys: list[str]  # the keyword arguments it got


class Recorder(TrainerCallback):  # type: ignore[misc]
    """Collects, per training generation batch: gdro's record, what each reward function
    returned (:func:`logged`), the advantages the loss got (this process's rows) and the
    controller's calls in order (:meth:`watch`); and the planned blocks awaiting generation when
    each optimizer step begins (after TRL has read that step's batches)."""

    def __init__(self) -> None:
        self.trainer: Any = None
        self.records: list[Any] = []
        self.in_flight: list[int] = []
        self.reward_calls: list[dict[str, RewardCall]] = []
        self.loss_advantages: list[np.ndarray] = []
        self.events: list[str] = []  # "plan" / "update" / "cancel", as the controller saw them
        self.plans: list[Any] = []  # every Plan the controller made
        self.current: dict[str, RewardCall] | None = None

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.in_flight.append(self.trainer.gdro.num_planned)

    def watch(self, controller: Any) -> None:
        """Log the controller's plan, update and cancel calls (instance attributes)."""
        plan, update, cancel = controller.plan, controller.update, controller.cancel

        def planned(*args: Any, **kwargs: Any) -> Any:
            result = plan(*args, **kwargs)
            self.events.append("plan")
            self.plans.append(result)
            return result

        def updated(*args: Any, **kwargs: Any) -> Any:
            update(*args, **kwargs)
            self.events.append("update")

        def cancelled(*args: Any, **kwargs: Any) -> Any:
            cancel(*args, **kwargs)
            self.events.append("cancel")

        controller.plan, controller.update, controller.cancel = planned, updated, cancelled


def logged(reward_func: Callable[..., list[Any]], recorder: Recorder) -> Callable[..., list[Any]]:
    """``reward_func`` (same name) that also hands its training calls to ``recorder``."""

    @functools.wraps(reward_func)
    def wrapper(*args: Any, **kwargs: Any) -> list[Any]:
        out = reward_func(*args, **kwargs)
        if recorder.current is not None:
            rewards = [float("nan") if r is None else float(r) for r in out]
            call = RewardCall(list(kwargs["prompts"]), rewards, sorted(kwargs))
            recorder.current[reward_func.__name__] = call
        return out

    return wrapper


class Recording:
    """Mixed in before a gdro trainer: hands each generation batch to the Recorder."""

    recorder: Recorder

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        training = self.model.training  # type: ignore[attr-defined]
        self.recorder.current = {} if training else None
        output: dict[str, Any] = super()._generate_and_score_completions(inputs)  # type: ignore[misc]
        if training:
            self.recorder.reward_calls.append(self.recorder.current or {})
            self.recorder.records.append(self.gdro.last_record)  # type: ignore[attr-defined]
            self.recorder.loss_advantages.append(output["advantages"].detach().cpu().numpy())
        self.recorder.current = None
        return output


@pytest.fixture
def make_trainer(tmp_path: Path) -> Callable[..., tuple[Any, Recorder]]:
    """Build a GDROGRPOTrainer on the tiny model with a Recorder attached."""

    def make(
        gdro: Any = None,
        *,
        dataset: Dataset | None = None,
        trainer_cls: Any = None,
        reward_funcs: Any = noisy_verifier,
        eval_dataset: Dataset | None = None,
        out: Path | None = None,
        trainer_kwargs: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> tuple[Any, Recorder]:
        from gdro_trl import GDROGRPOTrainer

        base = trainer_cls or GDROGRPOTrainer
        cls = type(f"Recording{base.__name__}", (Recording, base), {})
        model, tok = tiny_model()
        recorder = Recorder()
        cls.recorder = recorder
        funcs = reward_funcs if isinstance(reward_funcs, list) else [reward_funcs]
        trainer = cls(
            model=model,
            reward_funcs=[logged(f, recorder) for f in funcs],
            args=grpo_args(out or tmp_path / "run", **overrides),
            train_dataset=dataset if dataset is not None else addition_dataset(),
            eval_dataset=eval_dataset,
            processing_class=tok,
            callbacks=[recorder],
            gdro=gdro,
            **(trainer_kwargs or {}),
        )
        recorder.trainer = trainer
        recorder.watch(trainer.gdro.controller)
        return trainer, recorder

    return make


# ---------------------------------------------------------------------------- the reference


def same_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two controller ``state_dict``s are equal, array for array."""
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, dict):
            if not isinstance(y, dict) or not same_state(x, y):
                return False
        elif isinstance(x, np.ndarray | list | tuple):
            if not np.array_equal(np.asarray(x), np.asarray(y)):
                return False
        elif x != y:
            return False
    return True


def text_ids(dataset: Dataset) -> dict[str, int]:
    """Each prompt text's row in the train set (the texts must be distinct)."""
    prompts = list(dataset["prompt"])
    assert len(set(prompts)) == len(prompts), "the reference keys prompts by their text"
    return {p: i for i, p in enumerate(prompts)}


def group_reference(rewards: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """GRPO's per-prompt normalisation, one prompt at a time, unscorable (NaN) rows left out
    and given 0: (r - mean) / (std + 1e-4) over the prompt's scored rows."""
    out = np.zeros_like(rewards, dtype=np.float64)
    for p in np.unique(ids):
        rows = ids == p
        r = rewards[rows].astype(np.float64)
        scored = r[~np.isnan(r)]
        if scored.size == 0:
            continue
        std = scored.std(ddof=1) if scored.size > 1 else np.nan
        out[rows] = np.nan_to_num((r - scored.mean()) / (std + 1e-4), nan=0.0)
    return out


class Batch(NamedTuple):
    """One generation batch as the test saw it, all processes' rows in rank order."""

    ids: np.ndarray  # int64 (R,): each row's prompt id, looked up from its prompt TEXT
    rewards: dict[str, np.ndarray]  # float64 (R,) per reward function, NaN for None
    loss_advantages: np.ndarray  # float32 (R,): what the loss got


def batches_of(recorders: Sequence[Recorder], ids_of: dict[str, int]) -> list[Batch]:
    """The training generation batches of one run (one Recorder per process, in rank order)."""
    out = []
    for calls in zip(*(r.reward_calls for r in recorders), strict=True):
        names = list(calls[0])
        prompts = [p for c in calls for p in c[names[0]].prompts]
        out.append(
            Batch(
                ids=np.array([ids_of[p] for p in prompts], dtype=np.int64),
                rewards={
                    n: np.concatenate([np.asarray(c[n].rewards) for c in calls]) for n in names
                },
                loss_advantages=np.concatenate(
                    [r.loss_advantages[len(out)] for r in recorders]
                ).astype(np.float32),
            )
        )
    return out


def check_against_reference(
    *,
    controller: dict[str, Any],
    prompts_per_block: int,
    events: list[str],
    plans: list[Any],
    batches: list[Batch],
    reward_weights: Sequence[float],
    reward_func: str | None = None,
    grpo_advantages: list[np.ndarray] | None = None,
    final_state: dict[str, Any] | None = None,
) -> list[Any]:
    """Replay a run with a reference controller fed by hand; assert the run did the same.

    The reference plans a block where the run's controller did (``events``, in order), and
    feeds each block back from what the reward functions returned, matched to the plan's
    prompts by prompt text. For every generation batch it asserts that the rows are the
    reference plan's counts per prompt, and that the loss got each row's GRPO advantage times
    the reference weight of the row's own prompt. ``grpo_advantages`` (e.g. TRL's own, equal
    groups) replaces the per-prompt reference :func:`group_reference` of TRL's default settings.

    Args:
        controller: ``GDROController`` keyword arguments of the run (num_prompts, configs, seed).
        prompts_per_block: Prompts per generation batch.
        events: The run's controller calls (``Recorder.events``).
        plans: The run's plans, in order (``Recorder.plans``).
        batches: The run's generation batches (:func:`batches_of`).
        reward_weights: TRL's reward weights, in reward function order.
        reward_func: The reward function gdro is told to use (``None``: the weighted total).
        grpo_advantages: Per batch, the expected advantages before weighting.
        final_state: The run's final controller ``state_dict``, compared with the reference's.

    Returns:
        The reference plans, in order.
    """
    from gdro_core import GDROController

    ref = GDROController(**controller)
    pending: deque[Any] = deque()
    made: list[Any] = []
    fed = 0
    for event in events:
        if event == "plan":
            plan = ref.plan(ref.sample(prompts_per_block))
            pending.append(plan)
            made.append(plan)
            continue
        assert event == "update", f"the reference does not replay {event!r}"
        plan, batch = pending.popleft(), batches[fed]
        planned = dict(zip(plan.prompt_ids.tolist(), plan.rollouts.tolist()))
        assert Counter(batch.ids.tolist()) == planned, f"batch {fed}: rows are not the plan"
        names = list(batch.rewards)
        table = np.stack([batch.rewards[n] for n in names], axis=1).astype(np.float32)
        weights = np.asarray(reward_weights, dtype=np.float32)
        total = np.nansum(table * weights, axis=1)
        total[np.isnan(table).all(axis=1)] = np.nan
        signal = total if reward_func is None else table[:, names.index(reward_func)]
        signal = np.nan_to_num(signal.astype(np.float64), nan=0.0)  # unscorable: incorrect
        ref.update(plan, np.concatenate([signal[batch.ids == p] for p in plan.prompt_ids]))
        where = {int(p): i for i, p in enumerate(plan.prompt_ids)}
        w = plan.weights[[where[int(p)] for p in batch.ids]]
        if grpo_advantages is None:
            grpo = group_reference(total, batch.ids)
            np.testing.assert_allclose(
                batch.loss_advantages, grpo * w, rtol=1e-4, atol=1e-5, err_msg=f"batch {fed}"
            )
        else:
            expected = grpo_advantages[fed].astype(np.float32) * w.astype(np.float32)
            np.testing.assert_array_equal(batch.loss_advantages, expected, err_msg=f"batch {fed}")
        fed += 1
    assert fed == len(batches), f"{len(batches)} batches but {fed} updates"
    assert len(plans) == len(made)
    for ours, theirs in zip(plans, made, strict=True):
        assert ours.step == theirs.step and ours.serial == theirs.serial
        np.testing.assert_array_equal(ours.prompt_ids, theirs.prompt_ids)
        np.testing.assert_array_equal(ours.rollouts, theirs.rollouts)
        np.testing.assert_array_equal(ours.weights, theirs.weights)
    if final_state is not None:
        assert same_state(final_state, ref.state_dict())
    return made


def check_run(
    trainer: Any,
    recorder: Recorder,
    dataset: Dataset,
    *,
    grpo_advantages: list[np.ndarray] | None = None,
) -> list[Any]:
    """:func:`check_against_reference` for a one-process run built by ``make_trainer``."""
    runtime = trainer.gdro
    args = trainer.args
    return check_against_reference(
        controller=dict(
            num_prompts=len(dataset),
            classifier=runtime.config.classifier,
            prompt=runtime.config.prompt,
            rollout=runtime.rollout_config,
            seed=args.seed if runtime.config.seed is None else runtime.config.seed,
            max_in_flight=runtime.layout.max_in_flight,
        ),
        prompts_per_block=args.generation_batch_size // args.num_generations,
        events=recorder.events,
        plans=recorder.plans,
        batches=batches_of([recorder], text_ids(dataset)),
        reward_weights=trainer.reward_weights.tolist(),
        reward_func=runtime.config.reward_func,
        grpo_advantages=grpo_advantages,
        final_state=runtime.controller.state_dict(),
    )
