"""The one controller of a verl run, and the bookkeeping around it.

verl builds the train dataset, the sampler, the replay buffer and the advantage computation in one
process (the TaskRunner actor, the "driver" of the training loop). :class:`GDRORuntime` lives
there: the dataset creates it and registers it with :func:`activate`; the sampler, the replay buffer
and the advantage hooks find it with :func:`active`. Workers never hold a controller: its decisions
reach them through the batch (``gdro_prompt_id`` and ``__rollout_n__`` on each row).

Bookkeeping is keyed by stable prompt id (the prompt's dataset position) and by verl's ``uid``
(one per prompt per dispatch), never by batch position. Everything the runtime keeps besides the
controller is sized by the plans in flight, never by the dataset: a step's work and memory are
O(batch).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gdro_verl import _compat, feedback
from gdro_verl.config import GDROSettings
from gdro_verl.feedback import Group

__all__ = ["GDRORuntime", "Group", "activate", "active", "deactivate", "require_active"]

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 3  # 3: the train set's fingerprint
_READABLE_VERSIONS = (2, 3)  # a format-2 state (no fingerprint) still loads
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


def _append_plan(path: str, plan: Any) -> None:
    """One JSON line per plan (O(batch)); a resumed run appends, re-planned serials repeat."""
    import json
    import os

    record = {
        "serial": int(plan.serial),
        "step": int(plan.step),
        "prompt_ids": plan.prompt_ids.tolist(),
        "bins": plan.bins.tolist(),
        "rollouts": plan.rollouts.tolist(),
        "weights": [round(float(w), 6) for w in plan.weights],
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


class _Flight:
    """One outstanding plan: which of its prompts were handed out and which still await feedback."""

    __slots__ = ("awaiting", "cancelled", "handed", "missing", "plan", "received", "row_of")

    def __init__(self, plan: Any, handed: int = 0) -> None:
        self.plan = plan
        self.row_of = {int(p): i for i, p in enumerate(plan.prompt_ids)}
        self.awaiting = set(self.row_of)
        self.received: dict[int, Group] = {}  # fed back, padded to the planned count
        self.cancelled: set[int] = set()
        self.handed = handed  # prompts the sampler has handed out, in plan order
        self.missing = 0  # planned rollouts that never came back (failed sessions)

    @property
    def serial(self) -> int:
        return int(self.plan.serial)


class _Binding:
    """A uid's prompt and Prompt-GDRO weight, kept from dispatch until its advantages are weighted."""

    __slots__ = ("fed", "prompt_id", "weight", "weighted")

    def __init__(self, prompt_id: int, weight: float) -> None:
        self.prompt_id = prompt_id
        self.weight = weight
        self.fed = False
        self.weighted = False


class _Applied:
    """Running statistics of the Prompt-GDRO weights multiplied into advantages since last logged."""

    __slots__ = ("high", "low", "rows", "total")

    def __init__(self) -> None:
        self.rows, self.total, self.low, self.high = 0, 0.0, np.inf, -np.inf

    def add(self, weights: NDArray[np.float64]) -> None:
        if weights.size:
            self.rows += int(weights.size)
            self.total += float(weights.sum())
            self.low = min(self.low, float(weights.min()))
            self.high = max(self.high, float(weights.max()))

    def metrics(self) -> dict[str, float]:
        """``gdro/applied/*``: the weights that reached the advantages (verl's V1 aggregator reads
        ``min``/``max`` as min/max reducers and the mean as a row-weighted mean, as meant)."""
        if not self.rows:
            return {}
        return {
            "gdro/applied/weight_mean": self.total / self.rows,
            "gdro/applied/weight_min": self.low,
            "gdro/applied/weight_max": self.high,
        }


class GDRORuntime:
    """Plans each block of prompts and their rollout counts, and feeds the scored groups back.

    A *block* is ``data.train_batch_size`` prompts planned together by the controller: the
    sampler hands its ids out one at a time, and the controller plans the next block when the
    current one is used up. Scored groups come back keyed by prompt id, in any order and over
    any number of calls; a plan is complete when each of its prompts was fed back (or cancelled).
    Up to ``max_in_flight`` plans may await feedback at once (1: verl's sync trainers).

    Args:
        settings: Parsed ``data.gdro``.
        num_prompts: Train dataset size; prompt ids are ``0..num_prompts-1``.
        block_size: Prompts per block (``data.train_batch_size``).
        max_in_flight: Plans that may await feedback at once.
        plan_log: A JSONL file to append every plan to (serial, controller step, prompt ids,
            bins, rollout counts and weights), or None. The dataset sets
            ``<trainer.rollout_data_dir>/gdro_plans.jsonl`` when verl dumps rollouts.
        fingerprint: A hash of the train prompts in id order (the dataset's), saved in the state:
            loading a state saved over other prompts is an error. None: not checked.

    Raises:
        ValueError: ``block_size`` is not in ``[1, num_prompts]``, or ``max_in_flight < 1``.

    Examples:
        Six prompts, three per block, four rollouts each. The sampler's calls plan a block; the
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

        Scored groups may arrive over several calls, keyed by prompt id; the controller updates
        once all are in. A group with fewer rollouts than planned counts the missing ones as
        failures:

        >>> rt.feedback_groups({"u0": Group(0, np.ones(4), None)})
        Traceback (most recent call last):
        ...
        ValueError: gdro: uid 'u0' carries prompt id 0, which awaits no feedback
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

    def __init__(
        self,
        settings: GDROSettings,
        *,
        num_prompts: int,
        block_size: int,
        max_in_flight: int = 1,
        plan_log: str | None = None,
        fingerprint: str | None = None,
    ) -> None:
        if not 1 <= block_size <= num_prompts:
            raise ValueError(
                f"data.train_batch_size must be in [1, {num_prompts}] (the train dataset size); "
                f"got {block_size}"
            )
        self.settings = settings
        self.num_prompts = int(num_prompts)
        self.block_size = int(block_size)
        self.fingerprint = fingerprint
        self.controller = self._new_controller(max_in_flight)
        self.max_in_flight = int(self.controller.max_in_flight)
        self.plan_log = plan_log
        self._flights: dict[int, _Flight] = {}  # serial -> outstanding plan, oldest first
        self._flight_of: dict[int, int] = {}  # awaiting prompt id -> serial
        self._current: _Flight | None = None  # the block the sampler hands out
        self._last_plan: Any = None
        self._bindings: dict[str, _Binding] = {}
        self._metrics: dict[str, float] = {}
        #: Whether scores arrive only at the advantage computation (V1 with a colocated reward
        #: model); the replay buffer then feeds back only the groups that returned no rollout.
        self.feedback_at_advantage = False
        #: The verl settings that request prompts ahead of feedback (``RunShape.lookahead``),
        #: named when too few prompts are left to plan a block.
        self.lookahead = ""
        self._applied = _Applied()

    def _new_controller(self, max_in_flight: int) -> Any:
        from gdro_core import GDROController

        config = self.settings.controller.replace(max_in_flight=max_in_flight)
        return GDROController.from_config(config, self.num_prompts)

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
        """The most recent ``gdro_core.Plan`` (the block being handed out); None before any."""
        return self._last_plan

    def in_flight(self) -> tuple[Any, ...]:
        """The plans awaiting feedback, oldest first."""
        return tuple(f.plan for f in self._flights.values())

    def awaiting(self) -> int:
        """Prompts planned but not yet fed back or cancelled, over all plans in flight."""
        return len(self._flight_of)

    def next_prompt_id(self) -> int:
        """The next prompt id to load, planning a new block when the current one is used up.

        Raises:
            RuntimeError: ``max_in_flight`` plans already await feedback (no feedback path is
                configured, or verl asked for prompts the configured bound does not allow).
        """
        current = self._current
        if current is None or current.handed >= len(current.plan.prompt_ids):
            current = self._start_block()
        pid = int(current.plan.prompt_ids[current.handed])
        current.handed += 1
        return pid

    def _start_block(self) -> _Flight:
        if len(self._flights) >= self.max_in_flight:
            oldest = next(iter(self._flights.values()))
            if self.max_in_flight == 1:
                raise RuntimeError(
                    f"gdro: the batch planned for step {oldest.plan.step} was never scored, "
                    "yet verl asked for more prompts. Feedback comes from gdro's replay buffer "
                    "(V1: trainer.v1.sampler.custom_sampler.path=pkg://gdro_verl.replay_buffer, "
                    "name=GDROReplayBuffer) or the advantage hook (V0)."
                )
            raise RuntimeError(
                f"gdro: {len(self._flights)} planned batches await feedback, the most "
                f"data.gdro.max_in_flight={self.max_in_flight} allows, yet verl asked for more "
                f"prompts ({len(oldest.awaiting)} prompts of the oldest, planned at controller "
                f"step {oldest.plan.step}, are unscored); raise data.gdro.max_in_flight"
            )
        free = self.num_prompts - len(self._flight_of)
        if free < self.block_size:  # the core would reject its own batch_size: name verl's keys
            ahead = (
                f" (verl asks for prompts ahead of feedback: {self.lookahead})"
                if self.lookahead
                else ""
            )
            raise RuntimeError(
                f"gdro: data.train_batch_size={self.block_size} prompts cannot be planned: "
                f"{len(self._flight_of)} of the train set's {self.num_prompts} prompts await "
                f"feedback in {len(self._flights)} planned batches{ahead}, and a prompt is in "
                "one plan at a time; use a train set of more prompts, a smaller "
                "data.train_batch_size, or fewer batches ahead; got "
                f"{free} prompts free"
            )
        ids = self.controller.sample(self.block_size)
        flight = _Flight(self.controller.plan(ids))
        self._add_flight(flight)
        if self.plan_log is not None:
            _append_plan(self.plan_log, flight.plan)
        self._current, self._last_plan = flight, flight.plan
        return flight

    def _add_flight(self, flight: _Flight) -> None:
        self._flights[flight.serial] = flight
        for pid in flight.awaiting:
            self._flight_of[pid] = flight.serial

    def _flight_for(self, prompt_id: int) -> _Flight | None:
        serial = self._flight_of.get(prompt_id)
        return None if serial is None else self._flights[serial]

    def _dispatched_flight(self, uid: str, prompt_id: int) -> _Flight:
        """The plan of a prompt the sampler handed out and that awaits feedback, else raise."""
        flight = self._flight_for(prompt_id)
        if flight is None:
            raise ValueError(
                f"gdro: uid {uid!r} carries prompt id {prompt_id}, which awaits no feedback"
            )
        if flight.row_of[prompt_id] >= flight.handed:
            raise ValueError(
                f"gdro: uid {uid!r} carries prompt id {prompt_id}, which the sampler has not "
                "handed out yet"
            )
        return flight

    def planned_rollouts(self, prompt_id: int) -> int:
        """The planned rollout count of a prompt awaiting feedback.

        Raises:
            KeyError: the prompt is in no plan in flight (the dataset was indexed by something
                other than gdro's sampler).
        """
        flight = self._flight_for(int(prompt_id))
        if flight is None:
            raise KeyError(
                f"gdro: prompt id {prompt_id} is not in the planned batch; the train dataset must "
                "be read through gdro's sampler (create_rl_sampler is routed to it by the "
                "gdro_verl plugin; check that VERL_USE_EXTERNAL_PLUGINS does not exclude 'gdro')"
            )
        return int(flight.plan.rollouts[flight.row_of[int(prompt_id)]])

    # ------------------------------------------------------------------ uids and weights

    def _check_binding(self, uid: str, prompt_id: int, pending: Mapping[str, int]) -> None:
        """Raise unless ``uid`` may carry ``prompt_id``; changes nothing."""
        known = self._bindings.get(uid)
        bound = pending.get(uid, known.prompt_id if known is not None else prompt_id)
        if bound != prompt_id:
            raise ValueError(f"gdro: uid {uid!r} maps to two prompt ids ({bound} and {prompt_id})")

    def _bind(self, uid: str, prompt_id: int) -> _Binding:
        binding = self._bindings.get(uid)
        if binding is None:
            flight = self._flight_for(prompt_id)
            assert flight is not None  # checked by the caller
            weight = float(flight.plan.weights[flight.row_of[prompt_id]])
            binding = self._bindings[uid] = _Binding(prompt_id, weight)
        return binding

    def register_batch(self, uids: Sequence[Any], prompt_ids: Sequence[Any]) -> NDArray[np.int64]:
        """Bind dispatched uids to prompt ids and return the rows' planned counts.

        Called for every train batch sent to generation (V0 ``_get_gen_batch``, V1
        ``_submit_batch_to_rollout``), so a group that returns without any rollout can still be
        named by its uid.

        Args:
            uids: One verl uid per prompt row.
            prompt_ids: The rows' ``gdro_prompt_id`` stamps, same order.

        Returns:
            int64 (len(uids),): planned rollouts per row, in the given (batch) order.

        Raises:
            ValueError: lengths differ, a prompt awaits no feedback, or a uid is bound to
                another prompt. A rejected call binds nothing.
        """
        if len(uids) != len(prompt_ids):
            raise ValueError(f"gdro: {len(uids)} uids but {len(prompt_ids)} prompt ids")
        pairs = [(str(u), int(p)) for u, p in zip(uids, prompt_ids, strict=True)]
        pending: dict[str, int] = {}
        counts = []
        for uid, pid in pairs:  # check everything first: a rejected call changes nothing
            self._dispatched_flight(uid, pid)
            self._check_binding(uid, pid, pending)
            pending[uid] = pid
            counts.append(self.planned_rollouts(pid))
        for uid, pid in pairs:
            self._bind(uid, pid)
        return np.asarray(counts, dtype=np.int64)

    def prompt_of(self, uid: str) -> int | None:
        """The prompt id a uid was bound to at dispatch, or None."""
        binding = self._bindings.get(str(uid))
        return None if binding is None else binding.prompt_id

    def owns_batch(self, data: Any) -> bool:
        """Whether a verl ``DataProto`` holds gdro rows of this run (any uid bound here)."""
        uids = getattr(data, "non_tensor_batch", {}).get("uid")
        return uids is not None and any(str(u) in self._bindings for u in uids)

    def apply_weights(self, data: Any) -> None:
        """Multiply ``data.batch["advantages"]`` row-wise by the Prompt-GDRO weight of its uid.

        Multiplies only when ``prompt.mode == "reweight"`` and the batch's uids belong to this run;
        verl's synthetic padding rows (uid ``pad...``, masked out of the loss) keep weight 1. The
        uids' bindings are released once they are both weighted and fed back. The weights applied
        to real rows are logged as ``gdro/applied/weight_{mean,min,max}`` (all 1 unless
        reweighting), the evidence that they reached the loss.

        Raises:
            ValueError: some but not all real uids of the batch are known to the controller.
        """
        uids = [str(u) for u in data.non_tensor_batch["uid"]]
        known = [u in self._bindings for u in uids]
        if not any(known):
            return
        padding = [u.startswith(_compat.PADDING_UID_PREFIX) for u in uids]
        if not all(k or p for k, p in zip(known, padding, strict=True)):
            missing = next(u for u, k, p in zip(uids, known, padding, strict=True) if not (k or p))
            raise ValueError(f"gdro: no Prompt-GDRO weight for uid {missing!r} in a gdro batch")
        weights = np.array(
            [
                self._bindings[u].weight if k and self.settings.prompt.mode == "reweight" else 1.0
                for u, k in zip(uids, known, strict=True)
            ],
            dtype=np.float64,
        )
        if self.settings.prompt.mode == "reweight":
            adv = data.batch["advantages"]
            scale = adv.new_tensor(weights.tolist()).reshape(-1, *([1] * (adv.dim() - 1)))
            data.batch["advantages"] = adv * scale
        self._applied.add(weights[~np.asarray(padding, dtype=bool)])
        for uid in {u for u, k in zip(uids, known, strict=True) if k}:
            binding = self._bindings[uid]
            binding.weighted = True
            if binding.fed:
                del self._bindings[uid]

    # ------------------------------------------------------------------ feedback

    def feedback_groups(
        self, groups: Mapping[str, Group], *, untrained: Collection[str] = ()
    ) -> dict[str, float]:
        """Record scored groups, keyed by uid and prompt id, in any order.

        Args:
            groups: uid -> :class:`Group`. Groups of one plan may arrive over several calls and
                mixed with other plans' groups; each prompt is fed back once. A group with fewer
                rollouts than planned (failed sessions) counts the missing ones as incorrect.
            untrained: uids of groups whose advantages verl will not compute (groups it drops
                before training, e.g. DAPO-filtered ones, and groups without any rollout):
                their bindings are released now.

        Plans this call completes are completed in the order they were made, so the result does
        not depend on the order of ``groups``.

        Returns:
            The ``gdro/`` metrics of the last plan this call completed, else ``{}``.

        Raises:
            ValueError: a group's prompt awaits no feedback, arrives twice, has more rollouts than
                planned or a reward that is not finite, or its uid is bound to another prompt.
                A rejected call changes nothing.
        """
        accepted: dict[int, tuple[str, Group, int]] = {}
        pending: dict[str, int] = {}
        for raw_uid, group in groups.items():  # validate the whole call before changing anything
            uid = str(raw_uid)
            pid = int(group.prompt_id)
            flight = self._dispatched_flight(uid, pid)
            if pid in accepted:
                raise ValueError(f"gdro: prompt id {pid} was scored twice in one call")
            self._check_binding(uid, pid, pending)
            rewards = np.asarray(group.rewards, dtype=np.float64).reshape(-1)
            if not np.isfinite(rewards).all():
                raise ValueError(
                    f"gdro: prompt id {pid} (uid {uid!r}) has a reward that is not finite: "
                    f"{rewards.tolist()}"
                )
            planned, got = int(flight.plan.rollouts[flight.row_of[pid]]), rewards.size
            if got > planned:
                raise ValueError(
                    f"gdro: prompt id {pid} (uid {uid!r}) returned {got} rollouts; "
                    f"{planned} were planned"
                )
            if got < planned:
                logger.warning(
                    "gdro: prompt id %d returned %d of %d rollouts; the rest count as failures "
                    "(reward 0)",
                    pid,
                    got,
                    planned,
                )
                rewards = np.concatenate([rewards, np.zeros(planned - got)])
            if self.settings.loss_key is not None and group.loss is None:
                raise ValueError(
                    f"gdro: data.gdro.loss_key={self.settings.loss_key!r} is missing from the "
                    f"rollouts of prompt id {pid}"
                )
            pending[uid] = pid
            accepted[pid] = (uid, Group(pid, rewards, group.loss), planned - got)
        by_flight: dict[int, list[int]] = {}
        for pid in accepted:
            by_flight.setdefault(self._flight_of[pid], []).append(pid)
        for serial in sorted(by_flight):
            pids = sorted(by_flight[serial])
            self._core_update(self._flights[serial], pids, [accepted[p][1] for p in pids])
        metrics: dict[str, float] = {}
        for serial in sorted(by_flight):
            flight, pids = self._flights[serial], by_flight[serial]
            for pid in pids:
                uid, group, missing = accepted[pid]
                flight.missing += missing
                binding = self._bind(uid, pid)
                binding.fed = True
                if binding.weighted or uid in untrained:
                    del self._bindings[uid]
                flight.received[pid] = group
                flight.awaiting.discard(pid)
                del self._flight_of[pid]
            if not flight.awaiting:
                metrics = self._complete(flight)
        return metrics

    def _core_update(self, flight: _Flight, pids: list[int], groups: list[Group]) -> None:
        rewards = np.concatenate([g.rewards for g in groups]).astype(np.float64)
        losses = None
        if self.settings.loss_key is not None:
            losses = np.array([g.loss for g in groups], dtype=np.float64)
        self.controller.update(
            flight.plan, rewards, losses=losses, prompt_ids=np.asarray(pids, dtype=np.int64)
        )

    def cancel(self, prompt_ids: Iterable[int]) -> dict[str, float]:
        """Drop prompts that will bring no feedback (all their sessions failed, verl refills them).

        Returns:
            The ``gdro/`` metrics of the last plan this call completed, else ``{}``.

        Raises:
            ValueError: a prompt awaits no feedback.
        """
        pids = [int(p) for p in prompt_ids]
        if len(set(pids)) != len(pids):
            raise ValueError(f"gdro: prompt ids to cancel must be distinct; got {pids}")
        for pid in pids:
            self._dispatched_flight(f"of prompt {pid}", pid)
        by_flight: dict[int, list[int]] = {}
        for pid in pids:
            by_flight.setdefault(self._flight_of[pid], []).append(pid)
        metrics: dict[str, float] = {}
        for serial in sorted(by_flight):
            group_pids = sorted(by_flight[serial])
            flight = self._flights[serial]
            self.controller.cancel(flight.plan, np.asarray(group_pids, dtype=np.int64))
            for pid in group_pids:
                flight.cancelled.add(pid)
                flight.awaiting.discard(pid)
                del self._flight_of[pid]
            if not flight.awaiting:
                metrics = self._complete(flight)
        dropped = set(pids)
        for uid in [u for u, b in self._bindings.items() if b.prompt_id in dropped]:
            del self._bindings[uid]
        return metrics

    def _complete(self, flight: _Flight) -> dict[str, float]:
        """A plan's last prompt came back (the controller updated its adversaries): log it."""
        del self._flights[flight.serial]
        if self._current is flight:
            self._current = None
        plan = flight.plan
        scored = [int(p) for p in plan.prompt_ids if int(p) in flight.received]
        if not scored:
            return {}
        rows = [flight.row_of[p] for p in scored]
        flat = np.concatenate([flight.received[p].rewards for p in scored])
        planned = np.asarray(plan.rollouts, dtype=np.int64)[rows]
        starts = np.concatenate([[0], np.cumsum(planned)[:-1]]).astype(np.int64)
        correct = flat > self.settings.classifier.success_threshold
        self._metrics = feedback.step_metrics(
            rollouts=planned,
            n_correct=np.add.reduceat(correct.astype(np.int64), starts),
            controller_metrics=self.controller.metrics(),
            ks=self.settings.pass_at_k,
            missing=flight.missing,
        )
        return dict(self._metrics)

    def feedback_from_batch(self, data: Any) -> dict[str, float]:
        """Feed back a post-reward V0 ``DataProto`` (one row per response).

        Rows are grouped by ``uid``; each group's prompt id comes from the row stamp when present,
        else from the uid bound before generation. Groups already fed back are skipped, so a
        second call for the same step (verl's ``on_batch_end`` after the advantage hook) does
        nothing.

        Returns:
            The ``gdro/`` metrics of the plan it completed, or ``{}``.
        """
        uid_prompt = {u: b.prompt_id for u, b in self._bindings.items()}
        groups = feedback.groups_from_batch(
            data,
            uid_prompt=uid_prompt,
            correctness=self.settings.correctness,
            loss_key=self.settings.loss_key,
        )
        if not any(int(g.prompt_id) in self._flight_of for g in groups.values()):
            return {}  # this batch was fed back already
        return self.feedback_groups(groups)

    def pop_metrics(self) -> dict[str, float]:
        """The last completed plan's metrics and the weights applied since last called, once."""
        metrics, self._metrics = {**self._metrics, **self._applied.metrics()}, {}
        self._applied = _Applied()
        return metrics

    # ------------------------------------------------------------------ checkpointing

    def state_dict(self) -> dict[str, Any]:
        """Checkpointable state: numpy arrays, numbers and strings (nested dicts).

        The controller saves its plans in flight itself; besides it, the state holds only what the
        plans in flight need (their arrays, the feedback received so far, the uids bound to their
        prompts and how far the current block was handed out) and the train set's fingerprint,
        so its size beyond the controller's is O(batch).
        """
        flights = {}
        for serial, flight in self._flights.items():
            got = [int(p) for p in flight.plan.prompt_ids if int(p) in flight.received]
            groups = [flight.received[p] for p in got]
            flights[str(serial)] = {
                "received_ids": np.asarray(got, dtype=np.int64),
                "received_rewards": (
                    np.concatenate([g.rewards for g in groups]) if groups else np.zeros(0)
                ),
                "received_losses": np.array(
                    [np.nan if g.loss is None else g.loss for g in groups], dtype=np.float64
                ),
                "cancelled": np.array(sorted(flight.cancelled), dtype=np.int64),
                "handed": int(flight.handed),
                "missing": int(flight.missing),
            }
        bound = [u for u, b in self._bindings.items() if not b.fed]
        return {
            "format_version": _FORMAT_VERSION,
            "num_prompts": self.num_prompts,
            "block_size": self.block_size,
            "train_set": self.fingerprint or "",
            "controller": self.controller.state_dict(),
            "flights": flights,
            "current": -1 if self._current is None else self._current.serial,
            "uids": list(bound),
            "uid_prompts": np.array([self._bindings[u].prompt_id for u in bound], dtype=np.int64),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output; a rejected state changes nothing.

        The whole state is checked and rebuilt on a fresh controller before anything of this
        runtime is replaced.

        Raises:
            ValueError: another format version, dataset size, train set (fingerprint) or train
                batch size, a controller state the core rejects, or plans in flight that do not
                match the controller's.
        """
        version = int(state.get("format_version", 0))
        if version not in _READABLE_VERSIONS:
            raise ValueError(
                f"gdro checkpoint: format_version is {version} but this gdro_verl reads "
                f"{_READABLE_VERSIONS}; resume with the gdro_verl that wrote it, or start afresh"
            )
        for key, mine in (("num_prompts", self.num_prompts), ("block_size", self.block_size)):
            if int(state[key]) != mine:
                raise ValueError(
                    f"gdro checkpoint: {key} is {int(state[key])} but this run has "
                    f"{mine}; resume with the same data files and data.train_batch_size"
                )
        saved = str(state.get("train_set", ""))  # format 2 has no fingerprint: not checked
        if saved and self.fingerprint and saved != self.fingerprint:
            raise ValueError(
                "gdro checkpoint: it was saved over another train set (prompt fingerprint "
                f"{saved[:12]}..., this run's is {self.fingerprint[:12]}...): its prompt ids would "
                "point at other prompts; resume with the same data.train_files, "
                "data.train_max_samples (with data.shuffle and data.seed) and prompt filtering "
                "(data.filter_overlong_prompts, data.max_prompt_length), or start afresh"
            )
        controller = self._new_controller(self.max_in_flight)
        controller.load_state_dict(state["controller"])
        plans = self._restored_plans(controller, state["flights"])
        flights: dict[int, _Flight] = {}
        flight_of: dict[int, int] = {}
        for key, saved_flight in state["flights"].items():
            flight = self._restored_flight(plans[int(key)], saved_flight)
            flights[flight.serial] = flight
            flight_of.update({pid: flight.serial for pid in flight.awaiting})
        current_serial = int(state["current"])
        current = None
        if current_serial >= 0:
            current = flights.get(current_serial)
            if current is None:
                raise ValueError("gdro checkpoint: the block being handed out is not in flight")
        bindings: dict[str, _Binding] = {}
        uids = [str(u) for u in state["uids"]]
        pids = np.asarray(state["uid_prompts"], dtype=np.int64).tolist()
        if len(uids) != len(pids):
            raise ValueError(f"gdro checkpoint: {len(uids)} uids but {len(pids)} uid prompt ids")
        for uid, pid in zip(uids, pids, strict=True):
            serial = flight_of.get(int(pid))
            if serial is not None:
                flight = flights[serial]
                weight = float(flight.plan.weights[flight.row_of[int(pid)]])
                bindings[uid] = _Binding(int(pid), weight)
        # commit: everything above was built aside
        self.controller = controller
        self._flights, self._flight_of, self._bindings = flights, flight_of, bindings
        self._current = current
        self._last_plan = None if current is None else current.plan

    @staticmethod
    def _restored_flight(plan: Any, saved: Mapping[str, Any]) -> _Flight:
        """One saved plan in flight, with its feedback so far, checked against its plan."""
        flight = _Flight(plan, handed=int(saved["handed"]))
        flight.missing = int(saved["missing"])
        got = np.asarray(saved["received_ids"], dtype=np.int64).tolist()
        flat = np.asarray(saved["received_rewards"], dtype=np.float64)
        losses = np.asarray(saved["received_losses"], dtype=np.float64)
        cancelled = np.asarray(saved["cancelled"], dtype=np.int64).tolist()
        unknown = [p for p in [*got, *cancelled] if int(p) not in flight.row_of]
        if unknown or not 0 <= flight.handed <= len(flight.row_of) or len(losses) != len(got):
            raise ValueError(
                f"gdro checkpoint: the saved feedback of plan #{flight.serial} does not match "
                "the controller's plan"
            )
        sizes = [int(plan.rollouts[flight.row_of[int(p)]]) for p in got]
        if sum(sizes) != flat.size:
            raise ValueError(
                f"gdro checkpoint: plan #{flight.serial} holds {flat.size} saved rewards for "
                f"{sum(sizes)} planned rollouts"
            )
        start = 0
        for i, (pid, n) in enumerate(zip(got, sizes, strict=True)):
            loss = None if np.isnan(losses[i]) else float(losses[i])
            flight.received[int(pid)] = Group(int(pid), flat[start : start + n], loss)
            flight.awaiting.discard(int(pid))
            start += n
        for pid in cancelled:
            flight.cancelled.add(int(pid))
            flight.awaiting.discard(int(pid))
        return flight

    @staticmethod
    def _restored_plans(controller: Any, flights: Mapping[str, Any]) -> dict[int, Any]:
        """A restored controller's plans in flight, keyed by serial, matched with the runtime's."""
        plans = {int(p.serial): p for p in controller.in_flight()}
        if sorted(plans) != sorted(int(k) for k in flights):
            raise ValueError(
                "gdro checkpoint: the controller's plans in flight "
                f"{sorted(plans)} do not match the runtime's {sorted(int(k) for k in flights)}"
            )
        return plans
