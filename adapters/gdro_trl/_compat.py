"""Every place where gdro_trl touches TRL's private surface, in one module, version-checked.

TRL 1.16's ``GRPOTrainer`` has no public hook for per-prompt completion counts or advantage
weights, so :class:`TRLHooks` overrides these methods (each calls TRL's own first or last):

* ``_get_train_sampler`` (a ``transformers.Trainer`` extension point): returns gdro's sampler, which
  yields each planned block's rows (prompt i repeated ``n_i`` times) instead of TRL's
  ``RepeatSampler``.
* ``_calculate_rewards``: keeps the gathered ``rewards_per_func`` (all ranks' completions).
* ``_generate_and_score_completions``: matches the generation batch to its planned block by the
  rows' ``gdro_prompt_id``; after TRL's scoring, replaces the advantages by the per-prompt group
  advantages times the Prompt-GDRO weights and feeds the rewards back to the controller.
* ``_generate_single_turn``: with vLLM in server mode and unequal groups, asks for one completion
  per row (TRL's server path assumes ``num_generations`` consecutive copies of each prompt).
* ``_save_checkpoint`` / ``_load_optimizer_and_scheduler`` (as TRL does for its entropy state): the
  controller's state is saved in ``checkpoint-N/gdro/`` *before* TRL writes the rest of the
  checkpoint (so a checkpoint complete for TRL always holds gdro's state) and restored on resume,
  together with TRL's micro-step counter ``_step`` (so generation stays aligned with the planned
  blocks) and, for a checkpoint taken in the middle of a block's reuse, each rank's buffered
  completions (``_buffered_inputs``, which TRL itself drops on resume and regenerates).
* ``_set_signature_columns_if_needed``: keeps the ``gdro_prompt_id`` column when
  ``remove_unused_columns=True``.

A ``rollout_func`` (TRL's public hook) is wrapped under Rollout-GDRO by
:func:`check_rollout_rows`, which rejects one that groups rows by ``num_generations``.

Checks, so a changed TRL fails loudly instead of training without gdro: :func:`check_trl` runs
when ``gdro_trl.trainer`` is imported and fails unless every hooked method exists with the
expected leading parameters (it warns on a TRL release this adapter was not tested with);
:func:`check_trainer` runs when a trainer is built and fails unless every private attribute gdro
reads or writes exists (:data:`PRIVATE_ATTRIBUTES`); and each generation batch fails unless TRL
logged ``frac_reward_zero_std``, which gdro replaces.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray

from gdro_trl.advantages import group_advantages
from gdro_trl.records import StepRecord

if TYPE_CHECKING:
    from gdro_trl.records import BlockMatch
    from gdro_trl.runtime import GDRORuntime

logger = logging.getLogger(__name__)

__all__: list[str] = []

#: TRL releases this adapter is tested against (major, minor).
TESTED_TRL = ((1, 16),)
#: Column stamped on the train set: each row's index, the stable prompt id.
PROMPT_ID = "gdro_prompt_id"
#: Subfolder of a TRL checkpoint holding gdro's state.
STATE_DIR = "gdro"

# GRPOTrainer methods gdro overrides -> the leading parameters it relies on.
_HOOKED = {
    "_get_train_sampler": ("self", "dataset"),
    "_calculate_rewards": ("self", "inputs", "prompts", "completions", "completion_ids_list"),
    "_generate_and_score_completions": ("self", "inputs"),
    "_generate_single_turn": (
        "self",
        "prompt_ids",
        "images",
        "multimodal_fields",
        "num_generations",
    ),
    "_save_checkpoint": ("self", "model", "trial"),
    "_load_optimizer_and_scheduler": ("self", "checkpoint"),
    "_set_signature_columns_if_needed": ("self",),
}

#: GRPOTrainer instance attributes gdro reads or writes (checked by :func:`check_trainer`).
PRIVATE_ATTRIBUTES = (
    "_step",
    "_buffered_inputs",
    "_metrics",
    "_logs",
    "_signature_columns",
    "num_iterations",
    "reward_weights",
    "scale_rewards",
    "multi_objective_aggregation",
    "reward_func_names",
    "rollout_func",
    "use_vllm",
    "vllm_mode",
)
#: TRL's metric of the share of groups whose rewards have zero std, replaced by gdro's.
ZERO_STD_METRIC = "frac_reward_zero_std"


def trl_version() -> tuple[int, int, int]:
    """The installed TRL version as ``(major, minor, patch)``; pre-release tags are dropped."""
    import trl

    parts = [0, 0, 0]
    for i, piece in enumerate(str(trl.__version__).split(".")[:3]):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts[i] = int(digits) if digits else 0
    return parts[0], parts[1], parts[2]


def check_trl() -> None:
    """Fail if TRL's ``GRPOTrainer`` lacks a hooked method; warn on an untested release.

    Raises:
        ImportError: TRL is missing, or a hooked method is gone or has another signature.
    """
    try:
        from trl.trainer.grpo_trainer import GRPOTrainer
    except ImportError as err:  # pragma: no cover - exercised only without TRL
        raise ImportError(
            "gdro_trl needs TRL; install the extra: pip install 'gdro[trl]' (trl==1.16.0)"
        ) from err
    version = trl_version()
    for name, params in _HOOKED.items():
        method = getattr(GRPOTrainer, name, None)
        found = () if method is None else tuple(inspect.signature(method).parameters)
        if found[: len(params)] != params:
            raise ImportError(
                f"gdro_trl supports TRL {TESTED_TRL}: GRPOTrainer.{name} must take {params}; "
                f"TRL {'.'.join(map(str, version))} has {found or 'no such method'}"
            )
    if version[:2] not in TESTED_TRL:
        warnings.warn(
            f"gdro_trl is tested with TRL {TESTED_TRL}; TRL {'.'.join(map(str, version))} has "
            "the hooked methods, but check docs/trl.md before relying on it",
            stacklevel=2,
        )


def check_trainer(trainer: Any) -> None:
    """Fail unless a built ``GRPOTrainer`` has every private attribute gdro relies on.

    Args:
        trainer: The trainer, after ``GRPOTrainer.__init__``.

    Raises:
        RuntimeError: an attribute of :data:`PRIVATE_ATTRIBUTES` is missing, or ``_metrics`` /
            ``_logs`` lack the entries gdro rewrites.
    """
    version = ".".join(map(str, trl_version()))
    missing = [name for name in PRIVATE_ATTRIBUTES if not hasattr(trainer, name)]
    if not missing:
        if "train" not in trainer._metrics:
            missing.append("_metrics['train']")
        if "advantages" not in trainer._logs:
            missing.append("_logs['advantages']")
    if missing:
        raise RuntimeError(
            f"gdro_trl supports TRL {TESTED_TRL}: GRPOTrainer must have the attributes "
            f"{list(PRIVATE_ATTRIBUTES)} (and _metrics['train'], _logs['advantages']); the "
            f"trainer built with TRL {version} lacks {missing}"
        )


def check_rollout_rows(
    rollout_func: Callable[[list[Any], Any], dict[str, Any]],
) -> Callable[[list[Any], Any], dict[str, Any]]:
    """Wrap a TRL ``rollout_func`` so that one grouping rows by ``num_generations`` fails.

    Under Rollout-GDRO prompt i has ``n_i`` consecutive rows, not ``num_generations``. A
    ``rollout_func`` that generates for every ``num_generations``-th row (as TRL's vLLM server
    path does) attaches completions to rows of other prompts. The wrapper checks what it returns:
    one completion per row, and no two rows with different prompts given the same prompt tokens.

    Args:
        rollout_func: ``rollout_func(prompts, trainer) -> {"prompt_ids", "completion_ids", ...}``.

    Returns:
        The checked function, with the same name.

    Raises:
        RuntimeError: (when called) the output breaks the one-completion-per-row contract.
    """

    @functools.wraps(rollout_func)
    def checked(prompts: list[Any], trainer: Any) -> dict[str, Any]:
        output = rollout_func(prompts, trainer)
        if not isinstance(output, dict) or not {"prompt_ids", "completion_ids"} <= output.keys():
            return output  # TRL reports the missing keys
        prompt_ids, completion_ids = output["prompt_ids"], output["completion_ids"]
        if len(completion_ids) != len(prompts) or len(prompt_ids) != len(prompts):
            raise RuntimeError(
                "gdro: rollout_func must return one prompt_ids and one completion_ids entry per "
                "row it receives (under Rollout-GDRO prompt i has its own number of rows); got "
                f"{len(prompt_ids)} and {len(completion_ids)} for {len(prompts)} rows"
            )
        seen: dict[tuple[int, ...], str] = {}
        for prompt, ids in zip(prompts, prompt_ids, strict=True):
            key, text = tuple(int(t) for t in ids), repr(prompt)
            if seen.setdefault(key, text) != text:
                raise RuntimeError(
                    "gdro: rollout_func returned the same prompt tokens for rows of different "
                    "prompts: it must generate one completion per row from that row's prompt, not "
                    "group rows by num_generations (under Rollout-GDRO prompt i has n_i rows); "
                    f"got the tokens of {seen[key][:60]} for a row of {text[:60]}"
                )
        return output

    return checked


def _local_prompt_ids(inputs: list[dict[str, Any]]) -> list[int]:
    try:
        return [int(row[PROMPT_ID]) for row in inputs]
    except KeyError:
        raise RuntimeError(
            f"gdro: a training row has no {PROMPT_ID!r} column; the train set must be the one "
            "given to GDROGRPOTrainer (it stamps each row with its index)"
        ) from None


class TRLHooks:
    """The private ``GRPOTrainer`` overrides (mixed in before ``GRPOTrainer``)."""

    gdro: GDRORuntime
    _gdro_rewards: torch.Tensor | None = None

    def _get_train_sampler(self, dataset: Any = None) -> Any:
        from gdro_trl.sampler import GDROSampler

        if dataset is not None and len(dataset) != self.gdro.num_prompts:
            raise ValueError(
                f"gdro: the train dataloader holds {len(dataset)} rows but the controller was "
                f"built for {self.gdro.num_prompts} prompts"
            )
        return GDROSampler(self.gdro)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()  # type: ignore[misc]
        trainer: Any = self
        columns = trainer._signature_columns
        if columns is not None and PROMPT_ID not in columns:
            trainer._signature_columns = [*columns, PROMPT_ID]

    def _calculate_rewards(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        rewards: torch.Tensor = super()._calculate_rewards(*args, **kwargs)  # type: ignore[misc]
        self._gdro_rewards = rewards
        return rewards

    def _generate_single_turn(
        self,
        prompt_ids: Any,
        images: Any,
        multimodal_fields: Any,
        num_generations: int,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        trainer: Any = self
        if (
            trainer.model.training
            and trainer.use_vllm
            and trainer.vllm_mode == "server"
            and self.gdro.rollout_config.mode != "fixed"
        ):
            num_generations = 1  # unequal groups: one server request per row
        return super()._generate_single_turn(  # type: ignore[misc]
            prompt_ids, images, multimodal_fields, num_generations, *args, **kwargs
        )

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        trainer: Any = self
        if not trainer.model.training:
            return super()._generate_and_score_completions(inputs)  # type: ignore[misc,no-any-return]
        acc = trainer.accelerator
        local = torch.tensor(_local_prompt_ids(inputs), dtype=torch.long, device=acc.device)
        prompt_ids = acc.gather(local).cpu().numpy().astype(np.int64)
        every = trainer.args.steps_per_generation * trainer.num_iterations
        match = self.gdro.match(prompt_ids, regenerated=trainer._step % every != 0)
        self._gdro_rewards = None
        output: dict[str, Any] = super()._generate_and_score_completions(inputs)  # type: ignore[misc]
        if self._gdro_rewards is None:  # pragma: no cover - TRL always scores in train mode
            raise RuntimeError("gdro: TRL generated completions without calling _calculate_rewards")
        record = _apply_plan(trainer, output, self._gdro_rewards, match, prompt_ids, len(inputs))
        self.gdro.last_record = record
        self._gdro_rewards = None
        return output

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        # gdro's state first: a checkpoint TRL has completed always holds it, and it is in the
        # folder when TRL pushes the checkpoint or rotates older ones.
        trainer: Any = self
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        folder = os.path.join(
            trainer._get_output_dir(trial=trial),
            f"{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}",
            STATE_DIR,
        )
        if trainer.args.should_save:
            self.gdro.trl_step = int(trainer._step)
            self.gdro.save(folder)
        every = trainer.args.steps_per_generation * trainer.num_iterations
        if trainer._step % every != 0 and trainer._buffered_inputs is not None:
            # In the middle of a block's reuse: keep this rank's generated completions, so the
            # resumed run trains on them instead of generating the block again.
            _save_buffer(trainer._buffered_inputs, folder, trainer.accelerator.process_index)
        super()._save_checkpoint(model, trial)  # type: ignore[misc]

    def _load_optimizer_and_scheduler(self, checkpoint: Any) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)  # type: ignore[misc]
        if checkpoint is None:
            return
        trainer: Any = self
        folder = os.path.join(checkpoint, STATE_DIR)
        self.gdro.load(folder)
        trainer._step = self.gdro.trl_step
        every = trainer.args.steps_per_generation * trainer.num_iterations
        if trainer._step % every != 0:
            path = _buffer_path(folder, trainer.accelerator.process_index)
            if os.path.isfile(path):
                trainer._buffered_inputs = torch.load(
                    path, map_location=trainer.accelerator.device, weights_only=True
                )
            else:
                logger.warning(
                    "gdro: %s is missing; TRL will generate the interrupted block again (its "
                    "plan is reused without a second feedback)",
                    path,
                )


def _buffer_path(folder: str, rank: int) -> str:
    return os.path.join(folder, f"buffer-rank{rank}.pt")


def _save_buffer(buffered: Any, folder: str, rank: int) -> None:
    from gdro_core.files import atomic_write

    os.makedirs(folder, exist_ok=True)
    atomic_write(_buffer_path(folder, rank), lambda fh: torch.save(buffered, fh))


def _apply_plan(
    trainer: Any,
    output: dict[str, Any],
    rewards_per_func: torch.Tensor,
    match: BlockMatch,
    prompt_ids: NDArray[np.int64],
    local_rows: int,
) -> StepRecord:
    """Replace ``output["advantages"]``, fix TRL's logged advantage stats, feed back."""
    runtime = trainer.gdro
    group = torch.from_numpy(match.group).to(rewards_per_func.device)
    result = group_advantages(
        rewards_per_func,
        trainer.reward_weights,
        group,
        scale_rewards=trainer.scale_rewards,
        aggregation=trainer.multi_objective_aggregation,
    )
    weights = torch.as_tensor(
        match.block.weights[match.group], dtype=result.advantages.dtype, device=group.device
    )
    final = result.advantages * weights
    start = trainer.accelerator.process_index * local_rows
    local = output["advantages"]
    output["advantages"] = final[start : start + local_rows].to(local.device, local.dtype)
    zero_std = trainer._metrics["train"].get(ZERO_STD_METRIC)
    if not zero_std:
        raise RuntimeError(
            f"gdro_trl supports TRL {TESTED_TRL}: GRPOTrainer must log {ZERO_STD_METRIC!r} when it "
            "scores a generation batch (gdro replaces it with the per-prompt value); TRL "
            f"{'.'.join(map(str, trl_version()))} did not"
        )
    zero_std[-1] = result.std_is_zero.float().mean().item()
    logged = trainer._logs["advantages"]
    for _ in range(min(len(logged), final.numel())):
        logged.pop()
    logged.extend(final.tolist())
    if runtime.reward_index is None:
        rewards = (rewards_per_func * trainer.reward_weights.to(rewards_per_func.device)).nansum(1)
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
    else:
        rewards = rewards_per_func[:, runtime.reward_index]
    rewards_np = rewards.double().cpu().numpy()
    runtime.feedback(match, rewards_np)
    return StepRecord(
        step=match.block.step,
        serial=match.block.serial,
        prompt_ids=prompt_ids,
        group=match.group,
        rollouts=match.block.rollouts,
        rewards=rewards_np,
        grpo_advantages=result.advantages.cpu().numpy(),
        weights=weights.cpu().numpy(),
        advantages=final.cpu().numpy(),
        regenerated=match.regenerated,
    )
