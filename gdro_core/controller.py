"""``GDROController``: the classifier and both adversaries behind one stateful object.

Per step: ``sample`` a batch of prompt ids, ``plan`` it (bins, rollouts and weights, decided
before generation from the prompts' own history), generate and score, then ``update`` with the
rewards in plan order. Both adversaries can run at once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gdro_core import _backend
from gdro_core import classifier as _clf
from gdro_core import prompt as _prompt
from gdro_core import rollout as _rollout
from gdro_core import sampler as _sampler
from gdro_core._io import (
    FORMAT_VERSION,
    check_same_config,
    configs_json,
    load_npz,
    rng_from_json,
    rng_state_json,
    save_npz,
)
from gdro_core._validation import as_float_array, as_ids, check_int, fail, type_fail
from gdro_core.allocators import ALLOCATORS
from gdro_core.classifier import ClassifierConfig
from gdro_core.metrics import step_metrics
from gdro_core.prompt import PromptConfig, PromptState
from gdro_core.rollout import Allocation, RolloutConfig, RolloutState
from gdro_core.sampler import SamplerState
from gdro_core.signals import SIGNALS

Seed = int | np.random.SeedSequence | None

__all__ = ["GDROController", "Plan", "Seed"]


def _frozen(a: Any, dtype: Any) -> NDArray[Any]:
    out = np.array(a, dtype=dtype, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class Plan:
    """One step's decisions, in plan order. Arrays are read-only.

    Attributes:
        prompt_ids: int64 (n,), the batch's prompt ids.
        bins: int64 (n,), each prompt's bin at planning time.
        rollouts: int64 (n,), responses to generate per prompt; sum == mean * n.
        weights: float64 (n,), advantage multipliers (ones unless prompt mode is reweight).
        step: 0-based index of the step this plan is for (= updates so far).
        sample_probs: float64 (n,), each prompt's probability under one draw of the sampler.
        rollout_probs: float64 (n,), probability of the prompt's rollout count given the budget
            (1 for deterministic allocations).
        serial: the controller's plan counter; ``update`` accepts only the latest plan.

    Examples:
        >>> ctl = GDROController(10, prompt=PromptConfig(signal="failure"),
        ...                      rollout=RolloutConfig(mode="neyman", mean=3), seed=0)
        >>> plan = ctl.plan([7, 2])
        >>> plan.rollouts.tolist(), plan.offsets.tolist(), plan.num_rollouts
        ([3, 3], [0, 3, 6], 6)
    """

    prompt_ids: NDArray[np.int64]
    bins: NDArray[np.int64]
    rollouts: NDArray[np.int64]
    weights: NDArray[np.float64]
    step: int
    sample_probs: NDArray[np.float64]
    rollout_probs: NDArray[np.float64]
    serial: int = field(repr=False, default=0)

    @property
    def num_rollouts(self) -> int:
        """Total responses to generate (the length ``update`` expects for ``rewards``)."""
        return int(self.rollouts.sum())

    @property
    def offsets(self) -> NDArray[np.int64]:
        """int64 (n+1,): prompt i's rewards are ``rewards[offsets[i]:offsets[i+1]]``."""
        return np.concatenate([[0], np.cumsum(self.rollouts)]).astype(np.int64)

    def _arrays(self) -> tuple[NDArray[Any], ...]:
        return (
            self.prompt_ids,
            self.bins,
            self.rollouts,
            self.weights,
            self.sample_probs,
            self.rollout_probs,
        )


def _same_plan(a: Plan, b: Plan) -> bool:
    if a is b:
        return True
    if (a.step, a.serial) != (b.step, b.serial):
        return False
    return all(
        x.shape == y.shape and np.array_equal(x, y)
        for x, y in zip(a._arrays(), b._arrays(), strict=True)
    )


class GDROController:
    """Online difficulty bins, Prompt-GDRO and Rollout-GDRO for a dataset of ``num_prompts``.

    Args:
        num_prompts: dataset size; prompt ids are ``0..num_prompts-1``.
        classifier: difficulty classifier settings (default ``ClassifierConfig()``).
        prompt: Prompt-GDRO settings (default: reweight mode with the loss signal, the paper's).
        rollout: Rollout-GDRO settings (default: fixed 4 rollouts).
        seed: seeds the controller's own ``numpy.random.Generator``; ``None`` = fresh OS entropy.
        backend: ``"numba"`` (compiled kernels, default) or ``"numpy"`` (reference kernels).

    Examples:
        >>> ctl = GDROController(num_prompts=100, prompt=PromptConfig(signal="failure"), seed=0)
        >>> plan = ctl.plan(ctl.sample(8))
        >>> plan.rollouts.tolist()
        [4, 4, 4, 4, 4, 4, 4, 4]
        >>> ctl.update(plan, rewards=np.tile([1.0, 0.0, 0.0, 0.0], 8))  # 1 of 4 correct each
        >>> ctl.step, ctl.bins(plan.prompt_ids).tolist()                  # any-correct: rate 1
        (1, [9, 9, 9, 9, 9, 9, 9, 9])
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
    ) -> None:
        self._num_prompts = check_int("num_prompts", num_prompts, lo=1, hi=2**31 - 2)
        ccfg = ClassifierConfig() if classifier is None else classifier
        pcfg = PromptConfig() if prompt is None else prompt
        rcfg = RolloutConfig() if rollout is None else rollout
        for name, cfg, cls in (
            ("classifier", ccfg, ClassifierConfig),
            ("prompt", pcfg, PromptConfig),
            ("rollout", rcfg, RolloutConfig),
        ):
            if not isinstance(cfg, cls):
                raise type_fail(name, f"a {cls.__name__}", cfg)
        if ccfg.k is not None and rcfg.min < ccfg.k:
            raise fail(
                "ClassifierConfig.k and RolloutConfig.min",
                f"k <= min (min = {rcfg.min})",
                ccfg.k,
                fix="every prompt needs at least k rollouts for pass@k",
            )
        if isinstance(seed, bool) or not (
            seed is None or isinstance(seed, (int, np.integer, np.random.SeedSequence))
        ):
            raise type_fail("seed", "an int, a numpy SeedSequence or None", seed)
        _backend.kernels(backend)
        self.backend = backend
        self._ccfg, self._pcfg, self._rcfg = ccfg, pcfg, rcfg
        self._rng = np.random.default_rng(seed)
        bins = ccfg.bins
        self._cstate = _clf.init_state(ccfg, self._num_prompts)
        self._pstate: PromptState = _prompt.init_state(bins)
        self._rstate: RolloutState = _rollout.init_state(rcfg, bins)
        self._sstate: SamplerState = _sampler.init_state(
            self._num_prompts, bins, pcfg.mode == "resample", self._rng
        )
        self._step = 0
        self._serial = 0
        self._pending: tuple[Plan, Allocation, NDArray[np.float64]] | None = None
        self._metrics: dict[str, float] | None = None

    # ------------------------------------------------------------------ properties
    @property
    def num_prompts(self) -> int:
        """Dataset size."""
        return self._num_prompts

    @property
    def num_bins(self) -> int:
        """Number of difficulty bins."""
        return self._ccfg.bins

    @property
    def step(self) -> int:
        """Completed updates."""
        return self._step

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
        return self._cstate.bins[_clf._ids_any(ids, self._num_prompts)].astype(np.int64)

    def pass_rate(self, ids: Any) -> NDArray[np.float64]:
        """float64 (m,): each prompt's windowed pass rate (0 if never seen)."""
        return _clf.pass_rate(self._cstate, _clf._ids_any(ids, self._num_prompts), self.backend)

    def bin_counts(self) -> NDArray[np.int64]:
        """int64 (B,): prompts per bin over the whole dataset (a copy)."""
        return self._cstate.bin_counts.copy()

    # ------------------------------------------------------------------ the step
    def sample(self, batch_size: int) -> NDArray[np.int64]:
        """The next batch of distinct prompt ids (int64).

        In resample mode bins are drawn from q and prompts uniformly within a bin; otherwise
        reshuffled epochs without replacement. Deterministic given the seed and the state.
        """
        m = check_int("batch_size", batch_size, lo=1, hi=self._num_prompts)
        saved = self._rng.bit_generator.state
        try:
            if self._pcfg.mode == "resample":
                ids = _sampler.sample_resample(self._sstate, self.q(), m, self._rng)
            else:
                ids, self._sstate = _sampler.sample_uniform(self._sstate, m, self._rng)
        except BaseException:
            self._rng.bit_generator.state = saved
            raise
        return ids

    def plan(self, prompt_ids: Any) -> Plan:
        """Bins, rollout counts and weights for the batch, from the prompts' own history.

        A rejected call changes nothing: the previous plan stays the one ``update`` accepts.
        """
        ids = as_ids("prompt_ids", prompt_ids, self._num_prompts)
        bins = self._cstate.bins[ids].astype(np.int64)
        q = self.q()
        saved = self._rng.bit_generator.state
        try:
            alloc = ALLOCATORS[self._rcfg.mode](
                self._rcfg, self._rstate, bins, self._rng, self.backend, ids
            )
        except BaseException:
            self._rng.bit_generator.state = saved
            raise
        m = ids.shape[0]
        if (
            int(alloc.rollouts.sum()) != self._rcfg.mean * m
            or alloc.rollouts.min() < self._rcfg.min
            or alloc.rollouts.max() > self._rcfg.max
        ):
            self._rng.bit_generator.state = saved
            raise RuntimeError("allocator broke the budget invariant; this is a bug in gdro_core")
        w = _prompt.weights(self._pcfg, q, bins, alloc.rollouts)
        resample_q = q if self._pcfg.mode == "resample" else None
        probs = _sampler.sample_probs(self._sstate, resample_q, bins, self._num_prompts)
        self._serial += 1
        plan = Plan(
            prompt_ids=_frozen(ids, np.int64),
            bins=_frozen(bins, np.int64),
            rollouts=_frozen(alloc.rollouts, np.int64),
            weights=_frozen(w, np.float64),
            step=self._step,
            sample_probs=_frozen(probs, np.float64),
            rollout_probs=_frozen(alloc.propensity, np.float64),
            serial=self._serial,
        )
        self._pending = (plan, alloc, q)
        return plan

    def update(self, plan: Plan, rewards: Any, losses: Any = None) -> None:
        """Feed back a step's rewards (flat, in plan order) and optional per-prompt losses.

        Args:
            plan: the latest plan from ``plan``; a stale or foreign plan is a ``ValueError``.
            rewards: float (R,), R = ``plan.rollouts.sum()``; prompt i's rollouts are
                ``rewards[plan.offsets[i]:plan.offsets[i+1]]``. Correct means
                ``reward > success_threshold``.
            losses: float (n,) per-prompt losses, or ``None``; required when a configured rule
                uses them (``signal="loss"``, the default).

        A rejected call leaves the state exactly as it was.
        """
        if not isinstance(plan, Plan):
            raise type_fail("plan", "a Plan from this controller's plan()", plan)
        if self._pending is None or not _same_plan(plan, self._pending[0]):
            raise fail(
                "plan",
                f"this controller's latest plan (step {self._step}, plan #{self._serial})",
                f"a plan for step {plan.step}, plan #{plan.serial}",
                fix="call plan() again and update with what it returns",
            )
        current, alloc, q = self._pending
        m = current.prompt_ids.shape[0]
        r = as_float_array("rewards", rewards, length=current.num_rollouts)
        loss = None if losses is None else as_float_array("losses", losses, length=m)
        needs = self._rcfg.needs_losses or (
            self._pcfg.mode != "off" and SIGNALS[self._pcfg.signal].needs_losses
        )
        if needs and loss is None:
            what = (
                f"PromptConfig.signal={self._pcfg.signal!r}"
                if self._pcfg.mode != "off" and SIGNALS[self._pcfg.signal].needs_losses
                else f"RolloutConfig.arm_signal={self._rcfg.arm_signal!r}"
            )
            raise fail(
                "losses",
                f"a float array of {m} per-prompt losses ({what} needs them)",
                None,
                fix="pass losses=..., or choose a reward-derived signal ('failure', 'variance')",
            )
        offsets = current.offsets
        correct = np.add.reduceat((r > self._ccfg.success_threshold).astype(np.int64), offsets[:-1])
        total = current.rollouts.astype(np.int64)
        bins = current.bins
        delta = _clf.step(
            self._ccfg,
            self._cstate,
            current.prompt_ids,
            _clf.outcomes(self._ccfg, correct, total),
            self.backend,
        )
        sig = SIGNALS[self._pcfg.signal].compute(correct, total, loss)
        pstate = self._pstate
        if sig is not None:
            if self._pcfg.mode == "resample":
                shares = self._cstate.bin_counts / self._num_prompts
            else:
                shares = np.bincount(bins, minlength=self.num_bins) / m
            pstate = _prompt.update(self._pcfg, self._pstate, bins, sig, shares)
        rstate = _rollout.update(self._rcfg, self._rstate, alloc, bins, correct, total, loss)
        metrics = step_metrics(
            num_bins=self.num_bins,
            bins=bins,
            rollouts=current.rollouts,
            weights=current.weights,
            rewards=r,
            offsets=offsets,
            correct=correct,
            q=q,
            alloc=alloc,
            rcfg=self._rcfg,
            pstate=pstate,
            delta=delta,
        )
        # commit: nothing below can fail on valid state
        if self._pcfg.mode == "resample":
            _backend.kernels(self.backend).move_members(
                self._sstate.members,
                self._sstate.member_pos,
                self._sstate.bin_start,
                delta.ids,
                delta.old_bins,
                delta.new_bins,
            )
        _clf.apply(self._cstate, delta)
        self._pstate, self._rstate = pstate, rstate
        self._step += 1
        self._pending = None
        self._metrics = metrics

    def metrics(self) -> dict[str, float]:
        """Finite floats describing the last completed step (or the initial state before one).

        Keys include ``classifier/mean_bin``, ``classifier/share/{b}``, ``prompt/q/{b}``,
        ``prompt/entropy``, ``prompt/lead_lag``, ``prompt/score/{b}``, ``rollout/n_mean/{b}``
        (bins present), ``rollout/shadow_price``, ``rollout/budget_target``,
        ``rollout/budget_unconstrained``, ``batch/reward_mean``.
        """
        if self._metrics is not None:
            return dict(self._metrics)
        return self._initial_metrics()

    def _initial_metrics(self) -> dict[str, float]:
        from gdro_core.metrics import initial_metrics

        shares = self._cstate.bin_counts / self._num_prompts
        return initial_metrics(
            self.num_bins, shares, self.q(), self._pstate, self._rcfg, self._rstate
        )

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit-exactly: arrays, numbers and strings only."""
        d: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "config": configs_json(self._configs()),
            "num_prompts": self._num_prompts,
            "step": self._step,
            "serial": self._serial,
            "rng": rng_state_json(self._rng),
            "classifier": {f: np.array(v, copy=True) for f, v in self._cstate._asdict().items()},
            "prompt": {f: np.array(v, copy=True) for f, v in self._pstate._asdict().items()},
            "rollout": {f: np.array(v, copy=True) for f, v in self._rstate._asdict().items()},
            "sampler": {f: np.array(v, copy=True) for f, v in self._sstate._asdict().items()},
            "metrics": "" if self._metrics is None else json.dumps(self._metrics),
        }
        if self._pending is not None:
            plan, alloc, q = self._pending
            d["pending"] = {
                "prompt_ids": np.array(plan.prompt_ids),
                "bins": np.array(plan.bins),
                "rollouts": np.array(plan.rollouts),
                "weights": np.array(plan.weights),
                "sample_probs": np.array(plan.sample_probs),
                "rollout_probs": np.array(plan.rollout_probs),
                "step": plan.step,
                "serial": plan.serial,
                "q": np.array(q),
                "active": np.array(alloc.active),
                "arm_index": np.array(alloc.arm_index),
                "unconstrained": alloc.unconstrained,
                "mu": alloc.mu,
            }
        return d

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore a ``state_dict`` exactly (RNG included).

        A state saved with another config or ``num_prompts`` is a ``ValueError`` naming the fields
        that differ (the seed is not compared: the saved RNG state replaces it). Nothing changes
        unless the whole state is valid.
        """
        check_same_config(d, self._configs(), self._num_prompts)
        fresh = GDROController(
            self._num_prompts,
            classifier=self._ccfg,
            prompt=self._pcfg,
            rollout=self._rcfg,
            seed=0,
            backend=self.backend,
        )
        cstate = _restore(d, "classifier", fresh._cstate)
        pstate = _restore(d, "prompt", fresh._pstate)
        rstate = _restore(d, "rollout", fresh._rstate)
        sstate = _restore(d, "sampler", fresh._sstate)
        rng = rng_from_json(d.get("rng"))
        step = check_int("state['step']", d.get("step"), lo=0)
        serial = check_int("state['serial']", d.get("serial"), lo=0)
        raw_metrics = str(d.get("metrics", ""))
        metrics = json.loads(raw_metrics) if raw_metrics else None
        pending = None
        if isinstance(d.get("pending"), dict):
            p = d["pending"]
            plan = Plan(
                prompt_ids=_frozen(p["prompt_ids"], np.int64),
                bins=_frozen(p["bins"], np.int64),
                rollouts=_frozen(p["rollouts"], np.int64),
                weights=_frozen(p["weights"], np.float64),
                step=int(p["step"]),
                sample_probs=_frozen(p["sample_probs"], np.float64),
                rollout_probs=_frozen(p["rollout_probs"], np.float64),
                serial=int(p["serial"]),
            )
            alloc = Allocation(
                rollouts=np.array(plan.rollouts),
                propensity=np.array(plan.rollout_probs),
                active=np.asarray(p["active"], dtype=np.int64),
                arm_index=np.asarray(p["arm_index"], dtype=np.int64),
                unconstrained=float(p["unconstrained"]),
                mu=float(p["mu"]),
            )
            pending = (plan, alloc, np.asarray(p["q"], dtype=np.float64))
        self._cstate, self._pstate, self._rstate, self._sstate = cstate, pstate, rstate, sstate
        self._rng, self._step, self._serial = rng, step, serial
        self._metrics, self._pending = metrics, pending

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``state_dict()`` to ``path`` atomically (temp file + rename), as ``.npz``."""
        save_npz(path, self.state_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, backend: str = "numba") -> GDROController:
        """Rebuild a controller from a file written by ``save``."""
        d = load_npz(path)
        try:
            cfg = json.loads(str(d["config"]))
            ccfg = ClassifierConfig(**_tuples(cfg["classifier"]))
            pcfg = PromptConfig(**cfg["prompt"])
            rcfg = RolloutConfig(**cfg["rollout"])
            n = int(d["num_prompts"])
        except (KeyError, TypeError, ValueError) as exc:
            raise fail("path", "a file written by GDROController.save", os.fspath(path)) from exc
        ctl = cls(n, classifier=ccfg, prompt=pcfg, rollout=rcfg, seed=0, backend=backend)
        ctl.load_state_dict(d)
        return ctl

    def _configs(self) -> dict[str, Any]:
        return {"classifier": self._ccfg, "prompt": self._pcfg, "rollout": self._rcfg}


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def _restore(d: dict[str, Any], section: str, template: Any) -> Any:
    """Rebuild a NamedTuple state from ``d[section]``, checking every field against ``template``."""
    src = d.get(section)
    if not isinstance(src, dict):
        raise fail(f"state[{section!r}]", "a dict of arrays", type(src).__name__)
    out = {}
    for f, ref in template._asdict().items():
        if f not in src:
            raise fail(f"state[{section!r}]", f"a dict with key {f!r}", sorted(src))
        if isinstance(ref, np.ndarray):
            arr = np.asarray(src[f])
            if arr.dtype != ref.dtype or arr.ndim != ref.ndim or arr.shape != ref.shape:
                raise fail(
                    f"state[{section!r}][{f!r}]",
                    f"an array of shape {ref.shape} and dtype {ref.dtype}",
                    arr,
                )
            out[f] = np.array(arr, copy=True)
        else:
            out[f] = type(ref)(np.asarray(src[f]).item())
    return type(template)(**out)
