"""The one controller of a verl run, and the bookkeeping around it.

verl builds the train dataset, the sampler, the replay buffer and the advantage computation in one
process (the TaskRunner actor, the "driver" of the training loop). :class:`GDRORuntime` lives
there: the dataset creates it and registers it with :func:`activate`; the sampler, the replay buffer
and the advantage hooks find it with :func:`active`. Workers never hold a controller: its decisions
reach them through the batch (``gdro_prompt_id`` and ``__rollout_n__`` on each row).

Bookkeeping is keyed by stable prompt id (the prompt's dataset position) and by verl's ``uid``
(one per prompt per step), never by batch position.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from gdro_verl import _compat, feedback
from gdro_verl.config import GDROSettings

__all__ = ["GDRORuntime", "Group", "activate", "active", "deactivate", "require_active"]

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1
_ACTIVE: GDRORuntime | None = None


def activate(runtime: GDRORuntime) -> None:
    """Make ``runtime`` the process's controller (the last train dataset built wins).

    Examples:
        >>> from gdro_verl.config import GDROSettings
        >>> settings = GDROSettings.from_data_config({"gdro": {"rollout": {"mean": 4}}})
        >>> rt = GDRORuntime(settings, num_prompts=8, block_size=4)
        >>> activate(rt)
        >>> active() is rt
        True
        >>> deactivate(rt)
    """
    global _ACTIVE
    if _ACTIVE is not None and _ACTIVE is not runtime:
        logger.warning("gdro: a second gdro train dataset replaces the active controller")
    _ACTIVE = runtime


def deactivate(runtime: GDRORuntime | None = None) -> None:
    """Forget the active controller (only ``runtime``'s, when given).

    Examples:
        >>> from gdro_verl.config import GDROSettings
        >>> settings = GDROSettings.from_data_config({"gdro": {"rollout": {"mean": 4}}})
        >>> rt = GDRORuntime(settings, num_prompts=8, block_size=4)
        >>> other = GDRORuntime(settings, num_prompts=8, block_size=4)
        >>> activate(rt)
        >>> deactivate(other)  # not the active one: nothing changes
        >>> active() is rt
        True
        >>> deactivate()
        >>> print(active())
        None
    """
    global _ACTIVE
    if runtime is None or _ACTIVE is runtime:
        _ACTIVE = None


def active() -> GDRORuntime | None:
    """The process's controller runtime, or None when no gdro train dataset was built here.

    Examples:
        >>> from gdro_verl.config import GDROSettings
        >>> settings = GDROSettings.from_data_config({"gdro": {"rollout": {"mean": 4}}})
        >>> rt = GDRORuntime(settings, num_prompts=8, block_size=4)
        >>> activate(rt)
        >>> active().num_prompts, active().block_size
        (8, 4)
        >>> deactivate(rt)
        >>> print(active())
        None
    """
    return _ACTIVE


def require_active() -> GDRORuntime:
    """The active runtime; raises ``RuntimeError`` naming the missing config when there is none.

    Examples:
        >>> from gdro_verl.config import GDROSettings
        >>> settings = GDROSettings.from_data_config({"gdro": {"rollout": {"mean": 4}}})
        >>> rt = GDRORuntime(settings, num_prompts=8, block_size=4)
        >>> activate(rt)
        >>> require_active() is rt
        True
        >>> deactivate(rt)
        >>> require_active()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        RuntimeError: gdro: no gdro train dataset in this process; set data.custom_cls.path=...
    """
    if _ACTIVE is None:
        raise RuntimeError(
            "gdro: no gdro train dataset in this process; set data.custom_cls.path="
            "pkg://gdro_verl.dataset and data.custom_cls.name=GDRODataset"
        )
    return _ACTIVE


class Group(NamedTuple):
    """One prompt's results in one step (a verl uid group).

    Examples:
        >>> group = Group(prompt_id=3, rewards=np.array([1.0, 0.0, 1.0]), loss=None)
        >>> group.prompt_id, group.rewards.tolist(), group.loss
        (3, [1.0, 0.0, 1.0], None)
        >>> prompt_id, rewards, loss = group  # a NamedTuple
        >>> prompt_id, float(rewards.mean())
        (3, 0.6666666666666666)
    """

    prompt_id: int  # stable prompt id (dataset position)
    rewards: NDArray[np.float64]  # (n_received,) one per rollout, session order
    loss: float | None  # mean per-response loss, when data.gdro.loss_key is set


class GDRORuntime:
    """Plans each step's prompts and rollout counts, and feeds the step's rewards back.

    A *block* is one step's prompts (``data.train_batch_size`` of them): the controller samples
    and plans it when the sampler asks for its first id, and updates once every prompt of it has
    been scored. One block is pending at a time (verl's sync trainers).

    Args:
        settings: Parsed ``data.gdro``.
        num_prompts: Train dataset size; prompt ids are ``0..num_prompts-1``.
        block_size: Prompts per step (``data.train_batch_size``).

    Raises:
        ValueError: ``block_size`` is not in ``[1, num_prompts]``.

    Examples:
        Six prompts, three per step, four rollouts each. The sampler's calls plan a block; the
        next block waits until this one is scored:

        >>> from gdro_verl.config import GDROSettings
        >>> settings = GDROSettings.from_data_config({"gdro": {"rollout": {"mean": 4}}})
        >>> rt = GDRORuntime(settings, num_prompts=6, block_size=3)
        >>> rt.epoch_length, rt.mean
        (6, 4)
        >>> ids = [rt.next_prompt_id() for _ in range(3)]
        >>> ids, [rt.planned_rollouts(p) for p in ids]
        ([3, 2, 5], [4, 4, 4])
        >>> rt.next_prompt_id()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        RuntimeError: gdro: the batch planned for step 0 was never scored, yet verl asked for ...

        Scored groups may arrive over several calls; the controller updates once all are in. A
        group with fewer rollouts than planned counts the missing ones as failures:

        >>> rt.feedback_groups({"u0": Group(0, np.ones(4), None)})
        Traceback (most recent call last):
        ...
        ValueError: gdro: uid 'u0' carries prompt id 0, which is not in the planned batch of step 0
        >>> rt.feedback_groups({"u3": Group(3, np.array([1.0, 1.0, 0.0, 1.0]), None)})
        {}
        >>> metrics = rt.feedback_groups({
        ...     "u2": Group(2, np.zeros(4), None),
        ...     "u5": Group(5, np.array([1.0, 0.0]), None),  # two sessions failed
        ... })
        >>> round(metrics["gdro/solve_rate"], 3), metrics["gdro/missing_rollouts"]
        (0.333, 2.0)
        >>> rt.next_prompt_id(), rt.plan.step  # the next block is planned
        (4, 1)
    """

    def __init__(self, settings: GDROSettings, *, num_prompts: int, block_size: int) -> None:
        from gdro_core import GDROController

        if not 1 <= block_size <= num_prompts:
            raise ValueError(
                f"data.train_batch_size must be in [1, {num_prompts}] (the train dataset size); "
                f"got {block_size}"
            )
        self.settings = settings
        self.num_prompts = int(num_prompts)
        self.block_size = int(block_size)
        self.controller = GDROController(
            num_prompts=self.num_prompts,
            classifier=settings.classifier,
            prompt=settings.prompt,
            rollout=settings.rollout,
            seed=settings.seed,
        )
        self._plan: Any = None
        self._row_of: dict[int, int] = {}
        self._position = 0
        self._fed = True
        self._snapshot: dict[str, Any] | None = None
        self._abandon_ok = False
        self._uid_prompt: dict[str, int] = {}
        self._uid_weight: dict[str, float] = {}
        self._received: dict[int, Group] = {}
        self._empty = 0
        self._missing = 0
        self._metrics: dict[str, float] = {}

    # ------------------------------------------------------------------ planning

    @property
    def mean(self) -> int:
        """Mean rollouts per prompt (= ``actor_rollout_ref.rollout.n``)."""
        return self.settings.mean

    @property
    def epoch_length(self) -> int:
        """Prompt ids the sampler yields per epoch: whole blocks only (verl drops the last)."""
        return (self.num_prompts // self.block_size) * self.block_size

    @property
    def plan(self) -> Any:
        """The pending (or last) ``gdro_core.Plan``; None before the first block."""
        return self._plan

    def next_prompt_id(self) -> int:
        """The next prompt id to load, planning a new block when the current one is used up.

        Raises:
            RuntimeError: the previous block was never scored (no feedback path is configured, or
                verl asked for prompts beyond the planned batch, e.g. a DAPO refill).
        """
        if self._plan is None or self._position >= len(self._plan.prompt_ids):
            if self._plan is not None and not self._fed:
                if not self._abandon_ok:
                    raise RuntimeError(
                        f"gdro: the batch planned for step {self._plan.step} was never scored, "
                        "yet verl asked for more prompts. Feedback comes from gdro's replay buffer "
                        "(V1: trainer.v1.sampler.custom_sampler.path=pkg://gdro_verl.replay_buffer, "
                        "name=GDROReplayBuffer) or the advantage hook (V0); prompts beyond the "
                        "planned batch (DAPO, failed-group refills) are not supported."
                    )
                logger.warning(
                    "gdro: step %d restored without its feedback; skipping its update",
                    self._plan.step,
                )
            self._start_block()
        pid = int(self._plan.prompt_ids[self._position])
        self._position += 1
        return pid

    def _start_block(self) -> None:
        self._snapshot = self.controller.state_dict()
        ids = self.controller.sample(self.block_size)
        self._set_plan(self.controller.plan(ids))

    def _set_plan(self, plan: Any) -> None:
        self._plan = plan
        self._row_of = {int(p): i for i, p in enumerate(plan.prompt_ids)}
        self._position = 0
        self._fed = False
        self._abandon_ok = False
        self._uid_prompt.clear()
        self._uid_weight.clear()
        self._received.clear()
        self._empty = 0
        self._missing = 0

    def planned_rollouts(self, prompt_id: int) -> int:
        """The planned rollout count of a prompt of the pending block.

        Raises:
            KeyError: the prompt is not in the pending block (the dataset was indexed by something
                other than gdro's sampler).
        """
        row = self._row_of.get(int(prompt_id)) if self._plan is not None else None
        if row is None:
            raise KeyError(
                f"gdro: prompt id {prompt_id} is not in the planned batch; the train dataset must "
                "be read through gdro's sampler (create_rl_sampler is routed to it by the "
                "gdro_verl plugin; check that VERL_USE_EXTERNAL_PLUGINS does not exclude 'gdro')"
            )
        return int(self._plan.rollouts[row])

    # ------------------------------------------------------------------ uids and weights

    def _check_uid(self, uid: str, prompt_id: int, pending: Mapping[str, int] | None = None) -> int:
        """The plan row of ``prompt_id``, checking the uid binding; changes nothing."""
        row = self._row_of.get(prompt_id)
        if row is None:
            raise ValueError(
                f"gdro: uid {uid!r} carries prompt id {prompt_id}, which is not in the planned "
                f"batch of step {self._plan.step if self._plan is not None else '-'}"
            )
        known = self._uid_prompt.get(uid, (pending or {}).get(uid, prompt_id))
        if known != prompt_id:
            raise ValueError(f"gdro: uid {uid!r} maps to two prompt ids ({known} and {prompt_id})")
        return row

    def _bind_uid(self, uid: str, prompt_id: int) -> None:
        self._uid_prompt[uid] = prompt_id
        self._uid_weight[uid] = float(self._plan.weights[self._row_of[prompt_id]])

    def register_batch(self, uids: Sequence[Any], prompt_ids: Sequence[Any]) -> NDArray[np.int64]:
        """Bind a step's uids to prompt ids (V0, before generation) and return their counts.

        Args:
            uids: One verl uid per prompt row.
            prompt_ids: The rows' ``gdro_prompt_id`` stamps, same order.

        Returns:
            int64 (len(uids),): planned rollouts per row, in the given (batch) order.
        """
        if len(uids) != len(prompt_ids):
            raise ValueError(f"gdro: {len(uids)} uids but {len(prompt_ids)} prompt ids")
        pairs = [(str(u), int(p)) for u, p in zip(uids, prompt_ids, strict=True)]
        pending: dict[str, int] = {}
        rows = []
        for uid, pid in pairs:  # check everything first: a rejected call changes nothing
            rows.append(self._check_uid(uid, pid, pending))
            pending[uid] = pid
        for uid, pid in pairs:
            self._bind_uid(uid, pid)
        return np.asarray(self._plan.rollouts, dtype=np.int64)[rows]

    def owns_batch(self, data: Any) -> bool:
        """Whether a verl ``DataProto`` holds this step's gdro rows (any uid bound here)."""
        uids = getattr(data, "non_tensor_batch", {}).get("uid")
        return uids is not None and any(str(u) in self._uid_prompt for u in uids)

    def apply_weights(self, data: Any) -> None:
        """Multiply ``data.batch["advantages"]`` row-wise by the Prompt-GDRO weight of its uid.

        A no-op unless ``prompt.mode == "reweight"`` and the batch's uids belong to this step.
        verl's synthetic padding rows (uid ``pad...``, masked out of the loss) keep weight 1.

        Raises:
            ValueError: some but not all real uids of the batch are known to the controller.
        """
        if self.settings.prompt.mode != "reweight" or not self._uid_weight:
            return
        uids = [str(u) for u in data.non_tensor_batch["uid"]]
        known = [u in self._uid_weight for u in uids]
        if not any(known):
            return
        padding = [u.startswith(_compat.PADDING_UID_PREFIX) for u in uids]
        if not all(k or p for k, p in zip(known, padding, strict=True)):
            missing = next(u for u, k, p in zip(uids, known, padding, strict=True) if not (k or p))
            raise ValueError(f"gdro: no Prompt-GDRO weight for uid {missing!r} in a gdro batch")
        adv = data.batch["advantages"]
        weights = np.array([self._uid_weight.get(u, 1.0) for u in uids], dtype=np.float64)
        scale = adv.new_tensor(weights).reshape(-1, *([1] * (adv.dim() - 1)))
        data.batch["advantages"] = adv * scale

    # ------------------------------------------------------------------ feedback

    def feedback_groups(
        self, groups: Mapping[str, Group], *, num_empty: int = 0
    ) -> dict[str, float]:
        """Record scored groups; update the controller once the whole block is in.

        Args:
            groups: uid -> :class:`Group`. Groups may arrive over several calls (V1 with
                ``parameter_sync_step > 1``); each prompt exactly once per step.
            num_empty: Groups verl handed over without any trajectory (every session failed).
                Their prompts cannot be named, but once all other prompts are in they are the
                unscored rest of the block, and count as all-incorrect.

        Returns:
            The step's ``gdro/`` metrics when this call completed the block, else ``{}``.

        Raises:
            ValueError: a group's prompt is not planned, arrives twice, or has more rollouts
                than planned.
            RuntimeError: no block is awaiting feedback.
        """
        if self._plan is None or self._fed:
            raise RuntimeError("gdro: received scored groups but no planned batch awaits feedback")
        if num_empty < 0:
            raise ValueError(f"gdro: num_empty must be >= 0; got {num_empty}")
        # Validate the whole call before changing anything: a rejected call changes nothing.
        accepted: dict[int, tuple[str, Group]] = {}
        pending: dict[str, int] = {}
        missing = 0
        for raw_uid, group in groups.items():
            uid = str(raw_uid)
            checked = self._checked_group(uid, group, pending)
            if checked.prompt_id in self._received or checked.prompt_id in accepted:
                raise ValueError(
                    f"gdro: prompt id {checked.prompt_id} was scored twice in one step"
                )
            pending[uid] = checked.prompt_id
            accepted[checked.prompt_id] = (uid, checked)
            missing += len(checked.rewards) - len(group.rewards)
        size = len(self._plan.prompt_ids)
        done = len(self._received) + len(accepted) + self._empty + num_empty
        if done > size:
            raise ValueError(
                f"gdro: {len(self._received) + len(accepted)} scored and "
                f"{self._empty + num_empty} empty groups for a batch of {size} prompts"
            )
        for pid, (uid, group) in accepted.items():
            self._bind_uid(uid, pid)
            self._received[pid] = group
        self._missing += missing
        self._empty += num_empty
        if done < size:
            return {}
        for pid in self._plan.prompt_ids:  # the empty groups: all sessions failed
            if int(pid) not in self._received:
                planned = int(self._plan.rollouts[self._row_of[int(pid)]])
                self._missing += planned
                self._received[int(pid)] = Group(int(pid), np.zeros(planned), None)
        return self._update()

    def _checked_group(self, uid: str, group: Group, pending: Mapping[str, int]) -> Group:
        """``group`` validated against the plan, padded with failures to its planned size."""
        pid = int(group.prompt_id)
        row = self._check_uid(uid, pid, pending)
        rewards = np.asarray(group.rewards, dtype=np.float64)
        if not np.all(np.isfinite(rewards)):
            raise ValueError(
                f"gdro: prompt id {pid} (uid {uid!r}) has a reward that is not finite: "
                f"{rewards.tolist()}"
            )
        planned, got = int(self._plan.rollouts[row]), len(rewards)
        if got > planned:
            raise ValueError(
                f"gdro: prompt id {pid} (uid {uid!r}) returned {got} rollouts; {planned} were planned"
            )
        if got < planned:  # failed sessions: verl pads them downstream; count them as failures
            logger.warning(
                "gdro: prompt id %d returned %d of %d rollouts; the rest count as failures "
                "(reward 0)",
                pid,
                got,
                planned,
            )
            rewards = np.concatenate([rewards, np.zeros(planned - got)])
        return Group(prompt_id=pid, rewards=rewards, loss=group.loss)

    def _update(self) -> dict[str, float]:
        plan = self._plan
        ordered = [self._received[int(p)] for p in plan.prompt_ids]
        rewards = np.concatenate([g.rewards for g in ordered]).astype(np.float64)
        losses = None
        if self.settings.loss_key is not None:
            if any(g.loss is None for g in ordered):
                raise ValueError(
                    f"gdro: data.gdro.loss_key={self.settings.loss_key!r} is missing "
                    "from some scored rollouts"
                )
            losses = np.array([g.loss for g in ordered], dtype=np.float64)
        self.controller.update(plan, rewards, losses=losses)
        self._fed = True
        self._snapshot = None
        threshold = self.settings.classifier.success_threshold
        self._metrics = feedback.step_metrics(
            rollouts=np.asarray(plan.rollouts, dtype=np.int64),
            n_correct=np.array(
                [int(np.sum(g.rewards > threshold)) for g in ordered], dtype=np.int64
            ),
            controller_metrics=self.controller.metrics(),
            ks=self.settings.pass_at_k,
            missing=self._missing,
        )
        return dict(self._metrics)

    def feedback_from_batch(self, data: Any) -> dict[str, float]:
        """Feed back a full post-reward V0 ``DataProto`` (one row per response), once per step.

        Rows are grouped by ``uid``; each group's prompt id comes from the row stamp when present,
        else from the uid bound before generation. Calling it again for a step already scored
        (e.g. from ``on_batch_end`` after the advantage hook) does nothing.

        Returns:
            The step's ``gdro/`` metrics, or ``{}`` when nothing was fed back.
        """
        if self._plan is None or self._fed:
            return {}
        groups = feedback.groups_from_batch(
            data,
            uid_prompt=self._uid_prompt,
            correctness=self.settings.correctness,
            loss_key=self.settings.loss_key,
        )
        return self.feedback_groups(groups)

    def pop_metrics(self) -> dict[str, float]:
        """The last completed step's metrics, once (V0 returns them through verl's metrics)."""
        metrics, self._metrics = self._metrics, {}
        return metrics

    # ------------------------------------------------------------------ checkpointing

    def state_dict(self) -> dict[str, Any]:
        """Checkpointable state: numpy arrays, numbers and strings (nested dicts).

        When a block is pending, the controller state is the one taken right before it was
        planned, and the block is re-planned on load (planning is deterministic given the state),
        so the restored controller accepts that block's feedback.
        """
        pending = self._plan is not None and not self._fed
        return {
            "format_version": _FORMAT_VERSION,
            "num_prompts": self.num_prompts,
            "block_size": self.block_size,
            "controller": self._snapshot if pending else self.controller.state_dict(),
            "pending_ids": (
                np.array(self._plan.prompt_ids, dtype=np.int64)
                if pending
                else np.zeros(0, dtype=np.int64)
            ),
            "position": int(self._position) if pending else 0,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output.

        Raises:
            ValueError: another format version, dataset size or train batch size.
        """
        for key, mine in (
            ("format_version", _FORMAT_VERSION),
            ("num_prompts", self.num_prompts),
            ("block_size", self.block_size),
        ):
            if int(state[key]) != mine:
                raise ValueError(
                    f"gdro checkpoint: {key} is {int(state[key])} but this run has "
                    f"{mine}; resume with the same data files and data.train_batch_size"
                )
        self.controller.load_state_dict(state["controller"])
        self._plan, self._row_of, self._fed, self._snapshot = None, {}, True, None
        self._position = 0
        pending = np.asarray(state["pending_ids"], dtype=np.int64)
        if pending.size:
            self._start_block()
            if not np.array_equal(np.asarray(self._plan.prompt_ids), pending):
                raise RuntimeError(
                    "gdro checkpoint: re-planning the pending batch gave other "
                    "prompts; the checkpoint does not match this controller"
                )
            self._position = int(state["position"])
            self._abandon_ok = self._position >= len(pending)
