"""The controller's side of a TRL run: planned blocks, feedback, metrics and checkpoint state.

One block is one TRL generation batch. The sampler asks :meth:`GDRORuntime.block_rows` for a block's
rows when the dataloader first reads it; the runtime then samples and plans the block (prompt ids,
completions per prompt, advantage weights) from the controller's current state. When TRL generates
that batch, :meth:`GDRORuntime.match` finds its plan from the rows' prompt ids, and
:meth:`GDRORuntime.feedback` updates the controller with the scored completions.

TRL reads batches ahead of training (an optimizer step's ``gradient_accumulation_steps`` batches,
plus one), so up to ``layout.max_in_flight`` planned blocks await feedback at once; they are the
controller's outstanding plans, oldest first, and they are scored in that order.
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gdro_trl.config import GDROConfig
from gdro_trl.layout import TRLLayout
from gdro_trl.metrics import step_metrics
from gdro_trl.records import Block, BlockMatch, StepRecord

logger = logging.getLogger(__name__)

__all__ = ["GDRORuntime"]

_FORMAT_VERSION = 2  # 2: the train set's fingerprint
_READABLE_VERSIONS = (1, 2)  # a format-1 state (no fingerprint) still loads
_CONTROLLER_FILE = "controller.npz"
_RUNTIME_FILE = "runtime.json"


class GDRORuntime:
    """The controller of one TRL run and the blocks planned from it.

    Args:
        config: gdro's settings.
        layout: How TRL's batches map onto blocks (:func:`gdro_trl.layout.check_trl_args`).
        num_prompts: Size of the train set; prompt ids are its row indices.
        reward_names: TRL's reward function names, in order (to resolve ``config.reward_func``).
        train_fingerprint: A digest of the train set's content, saved with the state; a checkpoint
            of another train set is rejected on :meth:`load` (``GDROGRPOTrainer`` hashes the
            prompt column).

    The controller is seeded with ``config.seed``, 0 when it is ``None`` (``GDROGRPOTrainer``
    sets it to ``GRPOConfig.seed`` first).

    Raises:
        ValueError: ``config.reward_func`` names no reward function.

    Examples:
        >>> layout = TRLLayout(prompts=2, mean=4, repeat=1, blocks_per_epoch=4, max_in_flight=1)
        >>> runtime = GDRORuntime(GDROConfig(), layout, num_prompts=8, reward_names=["acc"])
        >>> rows = runtime.block_rows(epoch=0, position=0)
        >>> rows.tolist()
        [2, 2, 2, 2, 4, 4, 4, 4]
        >>> match = runtime.match(rows[::-1].copy())  # rows may come in any order
        >>> match.group.tolist(), match.regenerated
        ([1, 1, 1, 1, 0, 0, 0, 0], False)
        >>> rewards = np.array([1.0, 0, 0, 0, 1, 1, 1, 1])  # per row, in the batch's order
        >>> metrics = runtime.feedback(match, rewards)
        >>> runtime.controller.step, metrics["gdro/solve_rate"]
        (1, 0.625)
    """

    def __init__(
        self,
        config: GDROConfig,
        layout: TRLLayout,
        *,
        num_prompts: int,
        reward_names: list[str] | tuple[str, ...] = (),
        train_fingerprint: str | None = None,
    ) -> None:
        from gdro_core import GDROController

        self.config = config
        self.layout = layout
        self.num_prompts = int(num_prompts)
        self.train_fingerprint = train_fingerprint
        self.rollout_config = config.rollout_for(layout.mean)
        names = list(reward_names)
        if config.reward_func is not None and config.reward_func not in names:
            raise ValueError(
                f"GDROConfig.reward_func must be one of the trainer's reward functions {names}; "
                f"got {config.reward_func!r}"
            )
        self.reward_index = None if config.reward_func is None else names.index(config.reward_func)
        self.controller = GDROController(
            self.num_prompts,
            classifier=config.classifier,
            prompt=config.prompt,
            rollout=self.rollout_config,
            seed=0 if config.seed is None else config.seed,
            max_in_flight=layout.max_in_flight,
        )
        self._queue: deque[Block] = deque()  # planned, not yet generated, oldest first
        self._last: Block | None = None  # the last generated block
        self._epoch = -1  # the sampler epoch in progress
        self._epoch_rows = 0  # rows the sampler yielded in that epoch
        self._replay_rows: int | None = None  # set on restore: the next epoch continues there
        self.trl_step = 0  # TRL's micro-step counter, saved with the checkpoint
        self.last_record: StepRecord | None = None  # the last generation batch's (by the trainer)
        self._metrics: dict[str, list[float]] = {}

    @property
    def num_planned(self) -> int:
        """Blocks planned (read by the dataloader) and not yet generated."""
        return len(self._queue)

    # ------------------------------------------------------------------ sampler side

    def iter_epoch(self) -> Iterator[int]:
        """Yield one epoch of dataset indices: each block's rows, ``layout.repeat`` times.

        Blocks are planned lazily, when their first row is read. After a restore, the first epoch
        continues the interrupted one: it yields again every row yielded before the checkpoint
        (TRL skips the consumed ones and reads the rest), without planning anything new for them.
        """
        layout = self.layout
        per_block = layout.rows * layout.repeat
        if self._replay_rows is not None:
            replay, self._replay_rows = self._replay_rows, None
        else:
            replay = 0
            self._start_epoch()
        known = {b.position: b.rows() for b in self._blocks_of(self._epoch)}
        for index in range(layout.blocks_per_epoch):
            rows = known.get(index)
            for offset in range(per_block):
                position = index * per_block + offset
                if position < replay:  # yielded before the checkpoint
                    yield 0 if rows is None else int(rows[offset % layout.rows])
                    continue
                if rows is None:
                    rows = self.block_rows(epoch=self._epoch, position=index)
                self._epoch_rows = position + 1
                yield int(rows[offset % layout.rows])

    def _start_epoch(self) -> None:
        stale = list(self._queue)
        if stale:  # a new train() on the same trainer: plans read but never generated
            logger.warning("gdro: dropping %d planned block(s) never generated", len(stale))
            for block in stale:
                self.controller.cancel(block.plan)
            self._queue.clear()
        self._epoch += 1
        self._epoch_rows = 0

    def _blocks_of(self, epoch: int) -> list[Block]:
        blocks = [b for b in self._queue if b.epoch == epoch]
        if self._last is not None and self._last.epoch == epoch:
            blocks.append(self._last)
        return blocks

    def block_rows(self, *, epoch: int, position: int) -> NDArray[np.int64]:
        """Sample and plan a new block; return its rows (prompt id per completion).

        Args:
            epoch: The sampler epoch.
            position: The block's position in the epoch.

        Returns:
            int64 (R,), R = ``layout.rows``.
        """
        ids = self.controller.sample(self.layout.prompts)
        plan = self.controller.plan(ids)
        block = Block(
            epoch=epoch,
            position=position,
            prompt_ids=np.asarray(plan.prompt_ids, dtype=np.int64),
            rollouts=np.asarray(plan.rollouts, dtype=np.int64),
            weights=np.asarray(plan.weights, dtype=np.float64),
            step=int(plan.step),
            serial=int(plan.serial),
            plan=plan,
        )
        self._queue.append(block)
        return block.rows()

    # ------------------------------------------------------------------ generation side

    def match(self, prompt_ids: NDArray[np.int64], *, regenerated: bool = False) -> BlockMatch:
        """Find the planned block of a generation batch from its rows' prompt ids.

        Args:
            prompt_ids: int64 (R,), the stable prompt id of each row of the whole generation
                batch (all ranks), in the batch's row order.
            regenerated: TRL generates in the middle of a block's reuse (its buffer was lost on
                resume): the rows are the last generated block's, already fed back.

        Returns:
            The block and each row's group.

        Raises:
            RuntimeError: the rows are not the next planned block (nor a regenerated one).
        """
        ids = np.asarray(prompt_ids, dtype=np.int64)
        if regenerated:
            candidates = [] if self._last is None else [self._last]
        else:
            candidates = list(self._queue)[:1]
        for block in candidates:
            if ids.shape == (block.rollouts.sum(),) and np.array_equal(
                np.sort(ids), np.sort(block.rows())
            ):
                if not regenerated:
                    self._queue.popleft()
                order = np.argsort(block.prompt_ids, kind="stable")
                group = order[np.searchsorted(block.prompt_ids[order], ids)]
                return BlockMatch(block, group.astype(np.int64), regenerated)
        if regenerated:
            expected = "the last generated block"
        elif self._queue:
            head = self._queue[0]
            expected = (
                f"the next planned block ({len(head.prompt_ids)} prompts, "
                f"{int(head.rollouts.sum())} completions)"
            )
        else:
            expected = "a planned block (none awaits generation)"
        raise RuntimeError(
            f"gdro: TRL generated a batch of {ids.size} completions (prompt ids "
            f"{np.unique(ids)[:8].tolist()}...) that is not {expected}; the train dataloader must "
            "come from GDROGRPOTrainer's sampler and every rank must run the same controller"
        )

    def feedback(self, match: BlockMatch, rewards: NDArray[np.float64]) -> dict[str, float]:
        """Update the controller with a generated block's rewards (unless regenerated).

        Args:
            match: The block, from :meth:`match`.
            rewards: float64 (R,), each row's reward in the batch's row order; NaN for an
                unscorable completion (every reward function returned None), which counts as
                incorrect and is logged as ``gdro/missing_rollouts``.

        Returns:
            The step's ``gdro/`` metrics, or ``{}`` for a regenerated block.
        """
        block = match.block
        if match.regenerated:
            return {}
        r = np.asarray(rewards, dtype=np.float64)
        order = np.argsort(match.group, kind="stable")  # plan order, rows of a prompt together
        r = r[order]
        missing = int(np.isnan(r).sum())
        r = np.where(np.isnan(r), 0.0, r)
        self.controller.update(block.plan, r)
        self._last = block
        threshold = self.config.classifier.success_threshold
        correct = np.add.reduceat((r > threshold).astype(np.int64), _offsets(block.rollouts))
        metrics = step_metrics(
            rollouts=block.rollouts,
            n_correct=correct,
            controller_metrics=self.controller.metrics(),
            ks=self.config.pass_at_k,
            missing=missing,
        )
        for key, value in metrics.items():
            self._metrics.setdefault(key, []).append(value)
        return metrics

    def pop_metrics(self) -> dict[str, float]:
        """The mean of each ``gdro/`` metric since the last call (TRL's logging window)."""
        out = {k: float(np.mean(v)) for k, v in self._metrics.items() if v}
        self._metrics.clear()
        return out

    # ------------------------------------------------------------------ checkpoints

    def save(self, folder: str | os.PathLike[str]) -> None:
        """Write the controller and the block bookkeeping into ``folder`` (atomically per file)."""
        from gdro_core.files import atomic_write_text

        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        self.controller.save(path / _CONTROLLER_FILE)
        state = {
            "format_version": _FORMAT_VERSION,
            "num_prompts": self.num_prompts,
            "layout": [self.layout.prompts, self.layout.mean, self.layout.repeat],
            "train_fingerprint": self.train_fingerprint,
            "epoch": self._epoch,
            "epoch_rows": self._epoch_rows,
            "queue": [_block_json(b) for b in self._queue],
            "last": None if self._last is None else _block_json(self._last),
            "trl_step": int(self.trl_step),
        }
        atomic_write_text(path / _RUNTIME_FILE, json.dumps(state))

    def load(self, folder: str | os.PathLike[str]) -> None:
        """Restore :meth:`save`'s output; the next sampler epoch continues the saved one.

        Nothing changes when the state is rejected.

        Raises:
            FileNotFoundError: ``folder`` holds no gdro state.
            ValueError: the state was written by another format, or for another train set (its
                size or content) or batch layout.
        """
        path = Path(folder)
        if not (path / _RUNTIME_FILE).is_file():
            raise FileNotFoundError(
                f"gdro: {path} holds no gdro state; resume from a checkpoint written by "
                "GDROGRPOTrainer (its checkpoint-N folders hold a gdro/ subfolder, written before "
                "the rest of the checkpoint)"
            )
        state = json.loads((path / _RUNTIME_FILE).read_text())
        if state.get("format_version") not in _READABLE_VERSIONS:
            raise ValueError(
                f"gdro checkpoint {path}: format_version must be one of {_READABLE_VERSIONS} "
                f"(this gdro_trl's); got {state.get('format_version')!r}"
            )
        if state["format_version"] == 1:  # written before fingerprints: not checked
            state["train_fingerprint"] = self.train_fingerprint
        mine = {
            "num_prompts": (self.num_prompts, "the same train set"),
            "train_fingerprint": (
                self.train_fingerprint,
                "the same train set, its prompts in the same order (the fingerprint hashes them)",
            ),
            "layout": (
                [self.layout.prompts, self.layout.mean, self.layout.repeat],
                "the same num_generations, generation batch size, steps_per_generation and "
                "num_iterations ([prompts per batch, num_generations, reads per batch])",
            ),
        }
        for key, (value, fix) in mine.items():
            if state.get(key) != value:
                raise ValueError(
                    f"gdro checkpoint {path}: {key} is {state.get(key)!r} but this run has "
                    f"{value!r}; resume with {fix}"
                )
        from gdro_core import GDROController

        restored = GDROController.load(path / _CONTROLLER_FILE, backend=self.controller.backend)
        outstanding = restored.in_flight()
        queue = [_block_from_json(b) for b in state["queue"]]
        if [b.serial for b in queue] != [int(p.serial) for p in outstanding]:
            raise ValueError(
                f"gdro checkpoint {path}: the planned blocks {[b.serial for b in queue]} are not "
                f"the controller's plans in flight {[int(p.serial) for p in outstanding]}"
            )
        self.controller.load_state_dict(restored.state_dict())  # checks the configs match
        outstanding = self.controller.in_flight()
        self._queue = deque(b._replace(plan=p) for b, p in zip(queue, outstanding, strict=True))
        self._last = None if state["last"] is None else _block_from_json(state["last"])
        self._epoch = int(state["epoch"])
        self._epoch_rows = int(state["epoch_rows"])
        self.trl_step = int(state["trl_step"])
        # TRL resumes inside the epoch unless every batch of it was trained on: rows not all read
        # yet, a block read but not generated, or the last block in the middle of its reuse.
        unfinished = (
            self._epoch_rows < self.layout.epoch_length
            or any(b.epoch == self._epoch for b in self._queue)
            or self.trl_step % self.layout.repeat != 0
        )
        self._replay_rows = self._epoch_rows if self._epoch_rows > 0 and unfinished else None


def _offsets(rollouts: NDArray[np.int64]) -> NDArray[np.int64]:
    return np.concatenate([[0], np.cumsum(rollouts)[:-1]]).astype(np.int64)


def _block_json(block: Block) -> dict[str, Any]:
    return {
        "epoch": block.epoch,
        "position": block.position,
        "prompt_ids": block.prompt_ids.tolist(),
        "rollouts": block.rollouts.tolist(),
        "weights": [float(w) for w in block.weights],  # repr round-trips float64 exactly
        "step": block.step,
        "serial": block.serial,
    }


def _block_from_json(raw: Mapping[str, Any]) -> Block:
    return Block(
        epoch=int(raw["epoch"]),
        position=int(raw["position"]),
        prompt_ids=np.asarray(raw["prompt_ids"], dtype=np.int64),
        rollouts=np.asarray(raw["rollouts"], dtype=np.int64),
        weights=np.asarray(raw["weights"], dtype=np.float64),
        step=int(raw["step"]),
        serial=int(raw["serial"]),
        plan=None,
    )
