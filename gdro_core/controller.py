"""``GDROController``: the classifier and both adversaries behind one stateful object.

Per step: ``sample`` a batch of prompt ids, ``plan`` it (bins, rollouts and weights, decided
before generation from the prompts' own history), generate and score, then ``update`` with the
rewards. Both adversaries can run at once.

Feedback may come in any order: up to ``max_in_flight`` plans can await it at once, and a plan
can be fed back in parts (a subset of its prompts per call) or have prompts cancelled. The
classifier takes each prompt's outcome as it arrives; the adversaries update once per plan, when
its last prompt is fed back or cancelled. Every public method holds the controller's lock, so one
controller can be shared between threads.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gdro_core import _backend
from gdro_core import _state as _st
from gdro_core import classifier as _clf
from gdro_core import prompt as _prompt
from gdro_core import sampler as _sampler
from gdro_core._validation import as_float_array, as_ids, check_bool, check_int, fail, type_fail
from gdro_core.allocators import ALLOCATORS
from gdro_core.classifier import ClassifierConfig
from gdro_core.config import MAX_SEED, ControllerConfig
from gdro_core.metrics import Feedback, initial_metrics, step_metrics
from gdro_core.plan import InFlight, Plan, frozen, new_record
from gdro_core.prompt import PromptConfig, PromptState
from gdro_core.rollout import Allocation, RolloutConfig, RolloutState
from gdro_core.signals import SIGNALS

Seed = int | np.random.SeedSequence | None

__all__ = ["GDROController", "Plan", "Seed"]

_EXPIRED_MEMORY = 256  # how many finished plans the controller remembers for its error messages


class GDROController:
    """Online difficulty bins, Prompt-GDRO and Rollout-GDRO for a dataset of ``num_prompts``.

    Args:
        num_prompts: dataset size; prompt ids are ``0..num_prompts-1``.
        classifier: difficulty classifier settings (default ``ClassifierConfig()``).
        prompt: Prompt-GDRO settings (default: reweight mode with the loss signal, the paper's).
        rollout: Rollout-GDRO settings (default: fixed 4 rollouts).
        seed: seeds the controller's own ``numpy.random.Generator``; ``None`` = fresh OS entropy.
        backend: ``"numba"`` (compiled kernels, default) or ``"numpy"`` (reference kernels).
        max_in_flight: how many plans may await feedback at once (1..1024).

    Examples:
        >>> ctl = GDROController(num_prompts=100, prompt=PromptConfig(signal="failure"), seed=0)
        >>> plan = ctl.plan(ctl.sample(8))
        >>> plan.rollouts.tolist()
        [4, 4, 4, 4, 4, 4, 4, 4]
        >>> ctl.update(plan, rewards=np.tile([1.0, 0.0, 0.0, 0.0], 8))  # 1 of 4 correct each
        >>> ctl.step, ctl.bins(plan.prompt_ids).tolist()           # pass rate 1/4: bin 2
        (1, [2, 2, 2, 2, 2, 2, 2, 2])

        Two plans in flight, the second fed back first and in two parts:

        >>> ctl = GDROController(100, prompt=PromptConfig(signal="failure"), seed=0,
        ...                      max_in_flight=2)
        >>> a, b = ctl.plan([1, 2]), ctl.plan([3, 4])
        >>> ctl.update(b, np.zeros(4), prompt_ids=[4])
        >>> ctl.update(b, np.ones(4), prompt_ids=[3])
        >>> ctl.step, [p.serial for p in ctl.in_flight()]
        (1, [1])
    """

    def __init__(
        self,
        num_prompts: int,
        *,
        classifier: ClassifierConfig | None = None,
        prompt: PromptConfig | None = None,
        rollout: RolloutConfig | None = None,
        seed: Seed = None,
        backend: str = "numba",
        max_in_flight: int = 1,
    ) -> None:
        n = check_int("num_prompts", num_prompts, lo=1, hi=2**31 - 2)
        for name, cfg, cls in (
            ("classifier", classifier, ClassifierConfig),
            ("prompt", prompt, PromptConfig),
            ("rollout", rollout, RolloutConfig),
        ):
            if cfg is not None and not isinstance(cfg, cls):
                raise type_fail(name, f"a {cls.__name__}", cfg)
        if isinstance(seed, bool) or not (
            seed is None or isinstance(seed, (int, np.integer, np.random.SeedSequence))
        ):
            raise type_fail("seed", "an int, a numpy SeedSequence or None", seed)
        if isinstance(seed, (int, np.integer)) and not 0 <= seed <= MAX_SEED:
            raise fail(
                "seed", f"an integer in [0, {MAX_SEED}] (or a SeedSequence, or None)", int(seed)
            )
        config = ControllerConfig(
            classifier=ClassifierConfig() if classifier is None else classifier,
            prompt=PromptConfig() if prompt is None else prompt,
            rollout=RolloutConfig() if rollout is None else rollout,
            seed=None if isinstance(seed, np.random.SeedSequence) else seed,
            max_in_flight=max_in_flight,
        )
        _backend.kernels(backend)
        self.backend = backend
        self._config = config
        self._num_prompts = n
        self._ccfg, self._pcfg, self._rcfg = config.classifier, config.prompt, config.rollout
        self._lock = threading.RLock()
        self._rng = np.random.default_rng(seed)
        bins = self._ccfg.num_bins
        self._cstate = _clf.init_state(self._ccfg, n)
        self._pstate: PromptState = _prompt.init_state(bins)
        self._allocator = ALLOCATORS[self._rcfg.mode]
        self._rstate: RolloutState = self._allocator.init(self._rcfg, bins)
        self._sstate = _sampler.init_state(n, bins, self._pcfg.mode == "resample", self._rng)
        self._step = 0
        self._serial = 0
        self._visits = 0
        self._in_flight: list[InFlight] = []
        self._finished: OrderedDict[int, tuple[str, int]] = OrderedDict()
        self._metrics: dict[str, float] | None = None

    @classmethod
    def from_config(
        cls, config: ControllerConfig, num_prompts: int, *, backend: str = "numba"
    ) -> GDROController:
        """The controller a ``ControllerConfig`` describes.

        Args:
            config: all the controller's settings.
            num_prompts: dataset size.
            backend: ``"numba"`` or ``"numpy"``.

        Examples:
            >>> cfg = ControllerConfig.from_mapping({"recipe": "reward", "seed": 0,
            ...                                      "rollout": {"mode": "neyman"}})
            >>> GDROController.from_config(cfg, 10).rollout_config.mode
            'neyman'
        """
        if not isinstance(config, ControllerConfig):
            raise type_fail("config", "a ControllerConfig", config)
        return cls(
            num_prompts,
            classifier=config.classifier,
            prompt=config.prompt,
            rollout=config.rollout,
            seed=config.seed,
            backend=backend,
            max_in_flight=config.max_in_flight,
        )

    # ------------------------------------------------------------------ properties
    @property
    def config(self) -> ControllerConfig:
        """All settings (the seed is the one the controller was built with)."""
        return self._config

    @property
    def num_prompts(self) -> int:
        """Dataset size."""
        return self._num_prompts

    @property
    def num_bins(self) -> int:
        """Number of difficulty bins."""
        return self._ccfg.num_bins

    @property
    def step(self) -> int:
        """Plans whose feedback is complete (the adversaries' update count)."""
        return self._step

    @property
    def max_in_flight(self) -> int:
        """How many plans may await feedback at once."""
        return self._config.max_in_flight

    @property
    def classifier_config(self) -> ClassifierConfig:
        """The classifier settings."""
        return self._ccfg

    @property
    def prompt_config(self) -> PromptConfig:
        """The Prompt-GDRO settings."""
        return self._pcfg

    @property
    def rollout_config(self) -> RolloutConfig:
        """The Rollout-GDRO settings."""
        return self._rcfg

    def q(self) -> NDArray[np.float64]:
        """float64 (B,): the adversary's current distribution over bins (a copy)."""
        return _prompt.probs(self._pcfg, self._pstate)

    def bins(self, ids: Any) -> NDArray[np.int64]:
        """int64 (m,): the current bin of each prompt."""
        return self._cstate.bins[_clf.check_ids(ids, self._num_prompts)].astype(np.int64)

    def pass_rate(self, ids: Any) -> NDArray[np.float64]:
        """float64 (m,): each prompt's windowed pass rate (0 if never seen)."""
        return _clf.pass_rate(self._cstate, _clf.check_ids(ids, self._num_prompts), self.backend)

    def bin_counts(self) -> NDArray[np.int64]:
        """int64 (B,): prompts per bin over the whole dataset (a copy)."""
        return self._cstate.bin_counts.copy()

    def in_flight(self) -> tuple[Plan, ...]:
        """The plans awaiting feedback, oldest first."""
        with self._lock:
            return tuple(rec.plan for rec in self._in_flight)

    def awaiting(self, plan: Plan) -> NDArray[np.int64]:
        """int64: the prompt ids of an outstanding ``plan`` still awaiting feedback, in plan order."""
        with self._lock:
            return self._find(plan)[1].awaiting()

    def _busy(self, records: list[InFlight]) -> NDArray[np.int64]:
        if not records:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate([rec.awaiting() for rec in records]))

    # ------------------------------------------------------------------ the step
    def sample(self, batch_size: int) -> NDArray[np.int64]:
        """The next batch of distinct prompt ids (int64), none of them in a plan in flight.

        In resample mode the batch's bins follow q and prompts are uniform within a bin;
        otherwise reshuffled epochs without replacement. Deterministic given the seed, the state
        and the plans in flight.
        """
        with self._lock:
            busy = self._busy(self._in_flight)
            hi = self._num_prompts - busy.shape[0]
            m = check_int("batch_size", batch_size)
            if not 1 <= m <= hi:
                note = f" ({busy.shape[0]} prompts are in plans in flight)" if busy.shape[0] else ""
                raise fail("batch_size", f"an integer in [1, {hi}]{note}", m)
            saved = self._rng.bit_generator.state
            try:
                if self._pcfg.mode == "resample":
                    ids = _sampler.sample_resample(self._sstate, self.q(), m, self._rng, busy)
                else:
                    ids, self._sstate = _sampler.sample_uniform(self._sstate, m, self._rng, busy)
            except BaseException:
                self._rng.bit_generator.state = saved
                raise
            return ids

    def plan(self, prompt_ids: Any, *, allow_overlap: bool = False) -> Plan:
        """Bins, rollout counts and weights for the batch, from the prompts' own history.

        Args:
            prompt_ids: int (m,), distinct ids in ``[0, num_prompts)``.
            allow_overlap: allow ids that are awaiting feedback in another plan in flight.

        When ``max_in_flight`` plans are already in flight, the oldest expires first: its
        prompts still awaiting feedback are cancelled, its feedback so far updates the
        adversaries, and an ``update`` with it is a ``ValueError``. A rejected call changes
        nothing.
        """
        with self._lock:
            ids = as_ids("prompt_ids", prompt_ids, self._num_prompts)
            check_bool("allow_overlap", allow_overlap)
            records = list(self._in_flight)
            expired = records.pop(0) if len(records) >= self.max_in_flight else None
            finish = None
            if expired is not None:
                finish = self._finish(expired._replace(done=np.ones_like(expired.done)))
            if not allow_overlap:
                self._check_overlap(ids, records)
            pstate, rstate = (self._pstate, self._rstate) if finish is None else finish[:2]
            bins = self._cstate.bins[ids].astype(np.int64)
            q = _prompt.probs(self._pcfg, pstate)
            saved = self._rng.bit_generator.state
            try:
                alloc = self._allocator.plan(self._rcfg, rstate, bins, self._rng, self.backend, ids)
                _check_budget(self._rcfg, alloc, ids.shape[0])
                w = _prompt.weights(
                    self._pcfg, q, bins, alloc.rollouts, _prompt.log_probs(self._pcfg, pstate)
                )
                probs = _sampler.sample_probs(
                    self._sstate,
                    q if self._pcfg.mode == "resample" else None,
                    bins,
                    self._num_prompts,
                    ids.shape[0],
                    self._busy(records),
                    ids,
                )
            except BaseException:
                self._rng.bit_generator.state = saved
                raise
            serial = self._serial + 1
            plan = Plan(
                prompt_ids=frozen(ids, np.int64),
                bins=frozen(bins, np.int64),
                rollouts=frozen(alloc.rollouts, np.int64),
                weights=frozen(w, np.float64),
                step=self._step if finish is None else self._step + finish[3],
                sample_probs=frozen(probs, np.float64),
                rollout_probs=frozen(alloc.propensity, np.float64),
                serial=serial,
            )
            # commit
            self._serial = serial
            if expired is not None:
                self._remember(expired.plan, "expired")
                self._apply_finish(finish)
            self._in_flight = [*records, new_record(plan, alloc, q, self._cstate.bin_counts)]
            return plan

    def update(
        self, plan: Plan, rewards: Any, losses: Any = None, *, prompt_ids: Any = None
    ) -> None:
        """Feed back rewards (flat) and optional per-prompt losses for a plan in flight.

        Args:
            plan: a plan from this controller's ``plan`` that is still in flight (any of them,
                in any order); an expired, finished, edited or foreign plan is a ``ValueError``.
            rewards: float (R,), flat: prompt after prompt, each with exactly its planned
                rollout count, in plan order (or in the order of ``prompt_ids``). Correct means
                ``reward > success_threshold``.
            losses: float (k,) per-prompt losses, or ``None``; required when a configured rule
                uses them (``signal="loss"``, the default).
            prompt_ids: ``None`` (every prompt of the plan still awaiting feedback) or a subset
                of them, in any order.

        The classifier takes the prompts' outcomes now; the adversaries update when the plan's
        last prompt is fed back or cancelled, from all its fed-back prompts. A rejected call
        leaves the state exactly as it was.
        """
        with self._lock:
            index, rec = self._find(plan)
            pos = self._positions(rec, prompt_ids)
            rollouts = rec.plan.rollouts[pos]
            r = as_float_array("rewards", rewards, length=int(rollouts.sum()))
            loss = None if losses is None else as_float_array("losses", losses, length=pos.size)
            self._check_losses(loss, pos.size)
            offsets = np.concatenate([[0], np.cumsum(rollouts)]).astype(np.int64)
            starts = offsets[:-1]
            correct = np.add.reduceat(
                (r > self._ccfg.success_threshold).astype(np.int64), starts
            ).astype(np.int64)
            ids = rec.plan.prompt_ids[pos]
            delta = _clf.step(self._ccfg, self._cstate, ids, correct, rollouts, self.backend)
            new = _record_feedback(rec, pos, r, starts, rollouts, correct, delta, loss)
            visits = self._visits + int(pos.size)
            finish = self._finish(new, visits) if new.done.all() else None
            # commit: nothing below can fail on a valid state
            if self._pcfg.mode == "resample":
                _sampler.apply_moves(
                    self._sstate, delta.ids, delta.old_bins, delta.new_bins, self.backend
                )
            _clf.apply(self._cstate, delta)
            self._visits = visits
            self._replace_record(index, new, finish, "fed back")

    def cancel(self, plan: Plan, prompt_ids: Any = None) -> None:
        """Drop prompts of a plan in flight without feedback (failed sessions, filtered groups).

        Args:
            plan: a plan still in flight.
            prompt_ids: ``None`` (every prompt still awaiting feedback) or a subset of them.

        Cancelled prompts can be planned again at once. When nothing of the plan awaits feedback
        any more, the adversaries update from its fed-back prompts (if any).

        Examples:
            >>> ctl = GDROController(10, prompt=PromptConfig(signal="failure"), seed=0)
            >>> plan = ctl.plan([1, 2, 3])
            >>> ctl.update(plan, np.zeros(8), prompt_ids=[1, 3])
            >>> ctl.cancel(plan)                     # prompt 2's session failed
            >>> ctl.step, ctl.in_flight()
            (1, ())
        """
        with self._lock:
            index, rec = self._find(plan)
            pos = self._positions(rec, prompt_ids)
            done = rec.done.copy()
            done[pos] = True
            new = rec._replace(done=done)
            finish = self._finish(new) if done.all() else None
            self._replace_record(index, new, finish, "cancelled")

    def metrics(self) -> dict[str, float]:
        """Finite floats describing the last plan whose feedback completed (or the initial state).

        Keys include ``classifier/mean_bin``, ``classifier/share/{b}``, ``prompt/q/{b}``,
        ``prompt/entropy``, ``prompt/lead_lag``, ``prompt/score/{b}``, ``rollout/n_mean/{b}``
        (bins present), ``rollout/shadow_price``, ``rollout/mean``,
        ``rollout/mean_proposed``, ``batch/reward_mean`` and the ``mechanism/`` keys
        (see ``gdro_core.metrics.step_metrics``).
        """
        with self._lock:
            if self._metrics is not None:
                return dict(self._metrics)
            shares = self._cstate.bin_counts / self._num_prompts
            return initial_metrics(
                self.num_bins,
                shares,
                self.q(),
                self._pstate,
                self._rcfg,
                self._rstate,
                self._pcfg.mode,
                self._allocator.proposal(self._rcfg, self._rstate, shares),
            )

    # ------------------------------------------------------------------ internals
    def _find(self, plan: Plan) -> tuple[int, InFlight]:
        if not isinstance(plan, Plan):
            raise type_fail("plan", "a Plan from this controller's plan()", plan)
        for i, rec in enumerate(self._in_flight):
            if rec.plan.serial == plan.serial and rec.same_plan(plan):
                return i, rec
        outstanding = [rec.plan.serial for rec in self._in_flight]
        seen = self._finished.get(plan.serial)
        why = seen[0] if seen is not None and seen[1] == _fingerprint(plan) else None
        if why is not None:
            detail = f"plan #{plan.serial}, already {why}"
            if why == "expired":
                detail += f" (max_in_flight = {self.max_in_flight} plans were made after it)"
        else:
            detail = f"a plan for step {plan.step}, plan #{plan.serial}, that is not in flight"
        raise fail(
            "plan",
            f"a plan of this controller still in flight (plans in flight: {outstanding})",
            detail,
            fix="update with a plan that plan() returned and that still awaits feedback",
        )

    def _positions(self, rec: InFlight, prompt_ids: Any) -> NDArray[np.int64]:
        if prompt_ids is None:
            return np.flatnonzero(~rec.done).astype(np.int64)
        ids = as_ids("prompt_ids", prompt_ids, self._num_prompts)
        pos = rec.plan.positions(ids)
        finished = rec.done[pos]
        if finished.any():
            i = int(np.flatnonzero(finished)[0])
            raise fail(
                f"prompt_ids[{i}]",
                f"a prompt of plan #{rec.plan.serial} still awaiting feedback",
                int(ids[i]),
                fix="each prompt is fed back or cancelled once",
            )
        return pos

    def _check_overlap(self, ids: NDArray[np.int64], records: list[InFlight]) -> None:
        for rec in records:
            clash = np.isin(ids, rec.awaiting())
            if clash.any():
                i = int(np.flatnonzero(clash)[0])
                raise fail(
                    f"prompt_ids[{i}]",
                    f"an id not awaiting feedback in another plan (plan #{rec.plan.serial})",
                    int(ids[i]),
                    fix="feed that plan back or cancel the prompt first, or pass allow_overlap=True",
                )

    def _check_losses(self, loss: NDArray[np.float64] | None, m: int) -> None:
        if loss is None and (self._pcfg.needs_losses or self._rcfg.needs_losses):
            what = (
                f"PromptConfig.signal={self._pcfg.signal!r}"
                if self._pcfg.needs_losses
                else f"RolloutConfig.arm_signal={self._rcfg.arm_signal!r}"
            )
            raise fail(
                "losses",
                f"a float array of {m} per-prompt losses ({what} needs them)",
                None,
                fix="pass losses=..., or choose a reward-derived signal ('failure', 'variance')",
            )

    def _finish(
        self, rec: InFlight, visits: int | None = None
    ) -> tuple[PromptState, RolloutState, dict[str, float] | None, int]:
        """The adversaries' update for a plan with nothing left awaiting feedback (pure)."""
        f = np.flatnonzero(rec.fed)
        if f.size == 0:
            return self._pstate, self._rstate, None, 0
        plan = rec.plan
        bins, correct, total = plan.bins[f], rec.correct[f], plan.rollouts[f]
        loss = rec.losses[f] if rec.has_loss[f].all() else None
        sig = SIGNALS[self._pcfg.signal].compute(correct, total, loss)
        pstate = self._pstate
        if sig is not None:
            if self._pcfg.mode == "resample":  # the dataset's shares the plan was drawn with
                shares = rec.bin_counts / self._num_prompts
            else:
                shares = np.bincount(bins, minlength=self.num_bins) / f.size
            pstate = _prompt.update(self._pcfg, self._pstate, bins, sig, shares)
        alloc = _restrict(rec.alloc, f, bins)
        rstate = self._allocator.update(self._rcfg, self._rstate, alloc, bins, correct, total, loss)
        metrics = step_metrics(
            num_bins=self.num_bins,
            bins=bins,
            rollouts=total,
            weights=plan.weights[f],
            feedback=Feedback(
                correct=correct,
                reward_mean=rec.reward_mean[f],
                zero_adv=rec.zero_adv[f],
                moved=rec.moved[f],
                rate=rec.rate[f],
                flags=rec.flags[f],
            ),
            q=rec.q,
            alloc=alloc,
            rcfg=self._rcfg,
            prompt_mode=self._pcfg.mode,
            pstate=pstate,
            visits_mean=(self._visits if visits is None else visits) / self._num_prompts,
        )
        return pstate, rstate, metrics, 1

    def _apply_finish(
        self, finish: tuple[PromptState, RolloutState, dict[str, float] | None, int] | None
    ) -> None:
        if finish is None or finish[3] == 0:
            return
        self._pstate, self._rstate, self._metrics = finish[0], finish[1], finish[2]
        self._step += 1

    def _replace_record(
        self,
        index: int,
        new: InFlight,
        finish: tuple[PromptState, RolloutState, dict[str, float] | None, int] | None,
        why: str,
    ) -> None:
        if finish is None:
            self._in_flight[index] = new
            return
        del self._in_flight[index]
        self._remember(new.plan, why)
        self._apply_finish(finish)

    def _remember(self, plan: Plan, why: str) -> None:
        self._finished[plan.serial] = (why, _fingerprint(plan))
        while len(self._finished) > _EXPIRED_MEMORY:
            self._finished.popitem(last=False)

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit-exactly: arrays, numbers and strings only.

        Plans in flight are included with the feedback they have received so far.
        """
        with self._lock:
            return _st.to_state_dict(self)

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore a ``state_dict`` exactly (RNG and plans in flight included).

        Every leaf is checked (type, shape, dtype, range and the state's own invariants) before
        anything is assigned; a state saved with another config or ``num_prompts`` is a
        ``ValueError`` naming the fields that differ (the seed is not compared: the saved RNG
        state replaces it). Nothing changes unless the whole state is valid.
        """
        with self._lock:
            _st.load_into(self, d)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``state_dict()`` to ``path`` atomically (temp file + rename), as ``.npz``."""
        _st.save(path, self.state_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, backend: str = "numba") -> GDROController:
        """Rebuild a controller from a file written by ``save``; a corrupted file is a ``ValueError``."""
        d = _st.load(path)
        config, n = _st.config_of(d, where=os.fspath(path))
        ctl = cls.from_config(config, n, backend=backend)
        ctl.load_state_dict(d)
        return ctl


def _fingerprint(plan: Plan) -> int:
    """A hash of a plan's identity and arrays (for error messages about finished plans)."""
    return hash((plan.step, plan.serial, *(a.tobytes() for a in plan.arrays())))


def _check_budget(rcfg: RolloutConfig, alloc: Allocation, m: int) -> None:
    if (
        int(alloc.rollouts.sum()) != rcfg.mean * m
        or alloc.rollouts.min() < rcfg.min
        or alloc.rollouts.max() > rcfg.max
    ):
        raise RuntimeError("allocator broke the budget invariant; this is a bug in gdro_core")


def _restrict(alloc: Allocation, f: NDArray[np.int64], bins: NDArray[np.int64]) -> Allocation:
    """The allocation seen by the fed-back prompts ``f`` only (their bins, their propensities)."""
    if f.shape[0] == alloc.rollouts.shape[0]:
        return alloc
    keep = np.isin(alloc.active, bins)
    return alloc._replace(
        rollouts=alloc.rollouts[f],
        propensity=alloc.propensity[f],
        active=alloc.active[keep],
        arm_index=alloc.arm_index[keep],
    )


def _group_means(
    r: NDArray[np.float64], starts: NDArray[np.int64], n: NDArray[np.int64]
) -> NDArray[np.float64]:
    """Each group's mean reward, finite for any finite rewards (scaled only on overflow)."""
    with np.errstate(over="ignore", invalid="ignore"):
        out: NDArray[np.float64] = np.add.reduceat(r, starts) / n
    if np.all(np.isfinite(out)):
        return out
    scale = float(np.abs(r).max())
    safe: NDArray[np.float64] = np.add.reduceat(r / scale, starts) / n * scale
    return np.where(np.isfinite(out), out, safe)


def _record_feedback(
    rec: InFlight,
    pos: NDArray[np.int64],
    r: NDArray[np.float64],
    starts: NDArray[np.int64],
    rollouts: NDArray[np.int64],
    correct: NDArray[np.int64],
    delta: _clf.ClassifierDelta,
    loss: NDArray[np.float64] | None,
) -> InFlight:
    """A new record with the feedback of the prompts at ``pos`` (``rec`` is not mutated)."""

    def put(arr: NDArray[Any], values: Any) -> NDArray[Any]:
        out = arr.copy()
        out[pos] = values
        return out

    zero_adv = np.maximum.reduceat(r, starts) == np.minimum.reduceat(r, starts)
    return rec._replace(
        done=put(rec.done, True),
        fed=put(rec.fed, True),
        correct=put(rec.correct, correct),
        reward_mean=put(rec.reward_mean, _group_means(r, starts, rollouts)),
        zero_adv=put(rec.zero_adv, zero_adv),
        moved=put(rec.moved, delta.new_bins != delta.old_bins),
        rate=put(rec.rate, delta.rate),
        flags=put(rec.flags, delta.flags),
        losses=put(rec.losses, 0.0 if loss is None else loss),
        has_loss=put(rec.has_loss, loss is not None),
    )
