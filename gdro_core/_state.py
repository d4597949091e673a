"""The controller's state dict: writing it, and reading it back with every leaf checked.

A state that loads is one the controller could have produced: each leaf has the expected type,
dtype and shape, every value is in range, and the structure's own invariants hold (permutations,
bin counts that match the bins, the resample sampler's segments, the budgets of plans in flight).
Anything else is a ``ValueError`` naming the key, what was expected and what was found, raised
before the controller changes. Format 1 states (gdro 0.1.0) are read too.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gdro_core import classifier as _clf
from gdro_core import prompt as _prompt
from gdro_core import rollout as _rollout
from gdro_core import sampler as _sampler
from gdro_core._checks import (
    array_leaf,
    finite,
    float_leaf,
    int_leaf,
    require,
    section,
    str_leaf,
)
from gdro_core._io import (
    FORMAT_VERSION,
    READABLE_VERSIONS,
    load_npz,
    migrate_config,
    rng_state_json,
    save_npz,
)
from gdro_core._validation import fail, type_fail
from gdro_core.config import ControllerConfig
from gdro_core.plan import InFlight, Plan, frozen
from gdro_core.rollout import Allocation, RolloutConfig

__all__ = [
    "FORMAT_VERSION",
    "config_of",
    "load",
    "load_into",
    "rng_from_json",
    "save",
    "to_state_dict",
]


# ---------------------------------------------------------------------- writing
def _config_json(config: ControllerConfig) -> str:
    d = config.to_dict()
    del d["seed"]  # the saved RNG state replaces it
    return json.dumps(d, sort_keys=True)


def _record_dict(rec: InFlight) -> dict[str, Any]:
    plan, alloc = rec.plan, rec.alloc
    return {
        "prompt_ids": np.array(rec.ref[0]),
        "bins": np.array(rec.ref[1]),
        "rollouts": np.array(rec.ref[2]),
        "weights": np.array(rec.ref[3]),
        "sample_probs": np.array(rec.ref[4]),
        "rollout_probs": np.array(rec.ref[5]),
        "step": plan.step,
        "serial": plan.serial,
        "q": np.array(rec.q),
        "bin_counts": np.array(rec.bin_counts),
        "active": np.array(alloc.active),
        "arm_index": np.array(alloc.arm_index),
        "unconstrained": alloc.unconstrained,
        "mu": alloc.mu,
        "done": rec.done.copy(),
        "fed": rec.fed.copy(),
        "correct": rec.correct.copy(),
        "reward_mean": rec.reward_mean.copy(),
        "zero_adv": rec.zero_adv.copy(),
        "moved": rec.moved.copy(),
        "rate": rec.rate.copy(),
        "flags": rec.flags.copy(),
        "losses": rec.losses.copy(),
        "has_loss": rec.has_loss.copy(),
    }


def to_state_dict(ctl: Any) -> dict[str, Any]:
    """The controller's ``state_dict`` (format 2)."""
    in_flight: dict[str, Any] = {"count": len(ctl._in_flight)}
    for i, rec in enumerate(ctl._in_flight):
        in_flight[str(i)] = _record_dict(rec)
    return {
        "format_version": FORMAT_VERSION,
        "config": _config_json(ctl._config),
        "num_prompts": ctl._num_prompts,
        "step": ctl._step,
        "serial": ctl._serial,
        "visits": ctl._visits,
        "rng": rng_state_json(ctl._rng),
        "classifier": {f: np.array(v, copy=True) for f, v in ctl._cstate._asdict().items()},
        "prompt": {f: np.array(v, copy=True) for f, v in ctl._pstate._asdict().items()},
        "rollout": {f: np.array(v, copy=True) for f, v in ctl._rstate._asdict().items()},
        "sampler": {f: np.array(v, copy=True) for f, v in ctl._sstate._asdict().items()},
        "metrics": "" if ctl._metrics is None else json.dumps(ctl._metrics),
        "in_flight": in_flight,
    }


def save(path: str | os.PathLike[str], d: dict[str, Any]) -> None:
    """Write a state dict as ``.npz``, atomically."""
    save_npz(path, d)


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a state dict; a truncated or foreign file is a ``ValueError`` naming the path."""
    try:
        return load_npz(path)
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as exc:
        raise fail(
            "path",
            "a readable .npz file written by GDROController.save",
            os.fspath(path),
            fix=f"the file is truncated or corrupted ({type(exc).__name__}: {exc})",
        ) from exc


# ---------------------------------------------------------------------- reading
def _check_prompt(src: dict[str, Any], num_bins: int, where: str) -> _prompt.PromptState:
    tpl = _prompt.init_state(num_bins)
    out = {
        f: array_leaf(src, f, where, getattr(tpl, f).dtype, getattr(tpl, f).shape)
        for f in tpl._fields
    }
    finite(out["score"], f"{where}['score']")
    finite(out["last_gain"], f"{where}['last_gain']", 0.0, 1.0)
    return _prompt.PromptState(**out)


def _check_rollout(
    src: dict[str, Any], rcfg: RolloutConfig, num_bins: int, where: str
) -> _rollout.RolloutState:
    tpl = _rollout.init_state(rcfg, num_bins)
    arrays = {}
    for f in ("arm_loss", "arm_seen", "variance", "var_seen"):
        ref = getattr(tpl, f)
        arrays[f] = array_leaf(src, f, where, ref.dtype, ref.shape)
    finite(arrays["arm_loss"], f"{where}['arm_loss']")
    finite(arrays["variance"], f"{where}['variance']", 0.0, 0.5)
    mu = float_leaf(src, "mu", where, 0.0, rcfg.mu_max if rcfg.mode == "bandit" else None)
    return _rollout.RolloutState(mu=mu, **arrays)


def _check_sampler(
    src: dict[str, Any],
    resample: bool,
    cstate: _clf.ClassifierState,
    num_prompts: int,
    num_bins: int,
    where: str,
) -> _sampler.SamplerState:
    p = num_prompts
    tpl = _sampler.init_state(p, num_bins, resample, np.random.default_rng(0))
    arrays = {}
    for f in ("perm", "members", "member_pos", "bin_start"):
        ref = getattr(tpl, f)
        arrays[f] = array_leaf(src, f, where, ref.dtype, ref.shape)
    pos = int_leaf(src, "pos", where, 0, p)
    epoch = int_leaf(src, "epoch", where, 0)
    if not resample:
        perm = arrays["perm"].astype(np.int64)
        require(
            ((perm >= 0) & (perm < p)).all() and (np.bincount(perm, minlength=p) == 1).all(),
            f"{where}['perm']",
            f"a permutation of 0..{p - 1}",
            arrays["perm"],
        )
        require(epoch >= 1, f"{where}['epoch']", "an integer >= 1", epoch)
        require(
            np.array_equal(arrays["bin_start"], tpl.bin_start),
            f"{where}['bin_start']",
            "unused",
            arrays["bin_start"],
        )
    else:
        require(
            pos == 0 and epoch == 0,
            f"{where}['pos'] and ['epoch']",
            "0 in resample mode",
            (pos, epoch),
        )
        members = arrays["members"].astype(np.int64)
        require(
            ((members >= 0) & (members < p)).all()
            and (np.bincount(members, minlength=p) == 1).all(),
            f"{where}['members']",
            f"a permutation of 0..{p - 1}",
            arrays["members"],
        )
        mpos = arrays["member_pos"].astype(np.int64)
        require(
            ((mpos >= 0) & (mpos < p)).all()
            and np.array_equal(members[np.clip(mpos, 0, p - 1)], np.arange(p)),
            f"{where}['member_pos']",
            "the inverse permutation of 'members'",
            arrays["member_pos"],
        )
        start = arrays["bin_start"]
        sizes = np.diff(start)
        require(
            start[0] == 0 and start[-1] == p and np.array_equal(sizes, cstate.bin_counts),
            f"{where}['bin_start']",
            "segment starts matching the classifier's bin counts",
            start,
        )
        seg = np.repeat(np.arange(num_bins), sizes)
        require(
            np.array_equal(cstate.bins[members].astype(np.int64), seg),
            f"{where}['members']",
            "prompts grouped by their classifier bin",
            "a prompt in another bin's segment",
        )
    return _sampler.SamplerState(pos=pos, epoch=epoch, **arrays)


_RECORD_ARRAYS: dict[str, Any] = {
    "prompt_ids": np.int64,
    "bins": np.int64,
    "rollouts": np.int64,
    "weights": np.float64,
    "sample_probs": np.float64,
    "rollout_probs": np.float64,
    "done": np.bool_,
    "fed": np.bool_,
    "correct": np.int64,
    "reward_mean": np.float64,
    "zero_adv": np.bool_,
    "moved": np.bool_,
    "rate": np.float64,
    "flags": np.uint8,
    "losses": np.float64,
    "has_loss": np.bool_,
}


def _check_record(
    src: dict[str, Any],
    config: ControllerConfig,
    num_prompts: int,
    step: int,
    serial: int,
    where: str,
) -> InFlight:
    rcfg, b = config.rollout, config.classifier.num_bins
    first = array_leaf(src, "prompt_ids", where, np.int64, (None,))
    n = first.shape[0]
    require(n >= 1, f"{where}['prompt_ids']", "at least one prompt", first)
    a = {k: array_leaf(src, k, where, dt, (n,)) for k, dt in _RECORD_ARRAYS.items()}
    ids = a["prompt_ids"]
    require(
        ((ids >= 0) & (ids < num_prompts)).all(),
        f"{where}['prompt_ids']",
        f"ids in [0, {num_prompts})",
        ids,
    )
    require(np.unique(ids).shape[0] == n, f"{where}['prompt_ids']", "distinct ids", ids)
    require(
        ((a["bins"] >= 0) & (a["bins"] < b)).all(),
        f"{where}['bins']",
        f"bins in [0, {b})",
        a["bins"],
    )
    r, lo = a["rollouts"], rcfg.fewest  # fixed mode: every count is the mean
    require(
        ((r >= lo) & (r <= rcfg.max)).all() and int(r.sum()) == rcfg.mean * n,
        f"{where}['rollouts']",
        f"counts in [{lo}, {rcfg.max}] summing to {rcfg.mean} x {n}",
        r,
    )
    finite(a["weights"], f"{where}['weights']", 0.0, config.prompt.weight_cap)
    if config.prompt.mode != "reweight":
        require(
            (a["weights"] == 1.0).all(),
            f"{where}['weights']",
            "ones (no reweighting)",
            a["weights"],
        )
    finite(a["sample_probs"], f"{where}['sample_probs']", 0.0, 1.0)
    finite(a["rollout_probs"], f"{where}['rollout_probs']", 0.0, 1.0)
    require(
        (a["rollout_probs"] > 0).all(), f"{where}['rollout_probs']", "positive", a["rollout_probs"]
    )
    q = array_leaf(src, "q", where, np.float64, (b,))
    finite(q, f"{where}['q']", 0.0, 1.0)
    require(abs(float(q.sum()) - 1.0) <= 1e-9, f"{where}['q']", "a distribution (sum 1)", q)
    counts = array_leaf(src, "bin_counts", where, np.int64, (b,))
    require(
        (counts >= 0).all() and int(counts.sum()) == num_prompts,
        f"{where}['bin_counts']",
        f"non-negative counts summing to {num_prompts}",
        counts,
    )
    active = array_leaf(src, "active", where, np.int64, (None,))
    require(
        np.array_equal(active, np.unique(a["bins"])),
        f"{where}['active']",
        f"the bins present in the plan ({np.unique(a['bins']).tolist()})",
        active,
    )
    arm_index = array_leaf(src, "arm_index", where, np.int64, (active.shape[0],))
    k = rcfg.max - rcfg.min + 1
    require(
        ((arm_index >= -1) & (arm_index < k)).all(),
        f"{where}['arm_index']",
        f"values in [-1, {k})",
        arm_index,
    )
    unconstrained = float_leaf(src, "unconstrained", where)
    mu = float_leaf(src, "mu", where, 0.0)
    done, fed = a["done"], a["fed"]
    require(
        not (fed & ~done).any(),
        f"{where}['fed']",
        "only prompts marked done",
        "a fed prompt not done",
    )
    require(not done.all(), f"{where}['done']", "some prompt still awaiting feedback", "all done")
    c = a["correct"]
    require(
        ((c >= 0) & (c <= r)).all() and not c[~fed].any(),
        f"{where}['correct']",
        "counts in [0, rollouts]",
        c,
    )
    finite(a["reward_mean"], f"{where}['reward_mean']")
    finite(a["rate"], f"{where}['rate']", 0.0, 1.0)
    finite(a["losses"], f"{where}['losses']")
    require(
        not (a["flags"] & np.uint8(0xFC)).any(), f"{where}['flags']", "values in [0, 3]", a["flags"]
    )
    require(
        not (a["has_loss"] & ~fed).any(), f"{where}['has_loss']", "only fed prompts", a["has_loss"]
    )
    plan_step = int_leaf(src, "step", where, 0, step)
    plan_serial = int_leaf(src, "serial", where, 1, serial)
    plan = Plan(
        prompt_ids=frozen(ids, np.int64),
        bins=frozen(a["bins"], np.int64),
        rollouts=frozen(r, np.int64),
        weights=frozen(a["weights"], np.float64),
        step=plan_step,
        sample_probs=frozen(a["sample_probs"], np.float64),
        rollout_probs=frozen(a["rollout_probs"], np.float64),
        serial=plan_serial,
    )
    alloc = Allocation(
        rollouts=np.array(r),
        propensity=np.array(a["rollout_probs"]),
        active=active,
        arm_index=arm_index,
        unconstrained=unconstrained,
        mu=mu,
    )
    return InFlight(
        plan=plan,
        ref=tuple(np.array(x, copy=True) for x in plan.arrays()),
        alloc=alloc,
        q=q,
        bin_counts=counts,
        done=done,
        fed=fed,
        correct=c,
        reward_mean=a["reward_mean"],
        zero_adv=a["zero_adv"],
        moved=a["moved"],
        rate=a["rate"],
        flags=a["flags"],
        losses=a["losses"],
        has_loss=a["has_loss"],
    )


def _v1_pending(p: dict[str, Any], bin_counts: NDArray[np.int64]) -> dict[str, Any]:
    """A format-1 pending plan as a format-2 record with no feedback yet."""
    out = dict(p)
    if "bin_counts" not in out:
        out["bin_counts"] = bin_counts
    ids = p.get("prompt_ids")
    n = ids.shape[0] if isinstance(ids, np.ndarray) and ids.ndim == 1 else 0
    for k, dt in _RECORD_ARRAYS.items():
        if k not in out:
            out[k] = np.zeros(n, dtype=dt)
    return out


def _records(
    d: dict[str, Any],
    version: int,
    config: ControllerConfig,
    n: int,
    step: int,
    serial: int,
    bin_counts: NDArray[np.int64],
) -> list[InFlight]:
    if version == 1:
        pending = d.get("pending")
        if pending is None:
            return []
        if not isinstance(pending, dict):
            raise type_fail("state['pending']", "a dict", pending)
        return [
            _check_record(
                _v1_pending(pending, bin_counts), config, n, step, serial, "state['pending']"
            )
        ]
    src = section(d, "in_flight", "state")
    count = int_leaf(src, "count", "state['in_flight']", 0, config.max_in_flight)
    extra = sorted(set(src) - {"count"} - {str(i) for i in range(count)})
    require(
        not extra,
        "state['in_flight']",
        f"keys 'count' and '0'..'{count - 1}'",
        f"extra keys {extra}",
    )
    records = [
        _check_record(
            section(src, str(i), "state['in_flight']"),
            config,
            n,
            step,
            serial,
            f"state['in_flight'][{str(i)!r}]",
        )
        for i in range(count)
    ]
    serials = [rec.plan.serial for rec in records]
    require(
        serials == sorted(set(serials)),
        "state['in_flight']",
        "plans in increasing serial order",
        serials,
    )
    return records


def _metrics(d: dict[str, Any]) -> dict[str, float] | None:
    raw = str_leaf(d, "metrics", "state")
    if not raw:
        return None
    try:
        m = json.loads(raw)
    except ValueError as exc:
        raise fail("state['metrics']", "'' or a JSON object of metrics", raw) from exc
    ok = isinstance(m, dict) and all(
        isinstance(k, str)
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
        and np.isfinite(v)
        for k, v in m.items()
    )
    require(ok, "state['metrics']", "'' or a JSON object of finite numbers", raw)
    return {k: float(v) for k, v in m.items()}


def rng_from_json(text: str) -> np.random.Generator:
    """A ``Generator`` from ``rng_state_json`` output; anything else is a ``ValueError``."""
    try:
        state = json.loads(text)
        name = state["bit_generator"]
        cls = getattr(np.random, str(name), None)
        if not (isinstance(cls, type) and issubclass(cls, np.random.BitGenerator)):
            raise ValueError(f"unknown bit generator {name!r}")
        bg = cls()
        bg.state = state
        return np.random.Generator(bg)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise fail(
            "state['rng']", "a numpy bit generator state as JSON", text, fix=str(exc)
        ) from exc


def config_of(d: Any, *, where: str = "state") -> tuple[ControllerConfig, int]:
    """The config and ``num_prompts`` a state was saved with (``where`` names it in errors)."""
    if not isinstance(d, dict):
        raise type_fail(where, "a dict from state_dict()", d)
    version = int_leaf(d, "format_version", where, 1)
    require(
        version in READABLE_VERSIONS,
        f"{where}['format_version']",
        f"one of {list(READABLE_VERSIONS)}",
        version,
    )
    n = int_leaf(d, "num_prompts", where, 1, 2**31 - 2)
    raw = str_leaf(d, "config", where)
    try:
        saved = json.loads(raw)
        if not isinstance(saved, dict):
            raise ValueError("not an object")
        return ControllerConfig.from_mapping(migrate_config(saved), where=f"{where}['config']"), n
    except (ValueError, TypeError) as exc:
        raise fail(
            f"{where}['config']",
            "the JSON configuration written by state_dict()",
            raw,
            fix=str(exc),
        ) from exc


def _config_diffs(d: dict[str, Any], ctl: Any) -> list[str]:
    raw = str_leaf(d, "config", "state")
    try:
        saved = json.loads(raw)
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
        saved = migrate_config(saved)
        sections = {k: saved[k] for k in ("classifier", "prompt", "rollout") if k in saved}
        normal = ControllerConfig.from_mapping(sections, where="state['config']").to_dict()
    except (ValueError, TypeError) as exc:
        raise fail(
            "state['config']", "the JSON configuration written by state_dict()", raw, fix=str(exc)
        ) from exc
    here = ctl._config.to_dict()
    diffs = []
    for part in ("classifier", "prompt", "rollout"):
        a, b = normal[part], here[part]
        for field in sorted(set(a) | set(b)):
            if a.get(field) != b.get(field):
                diffs.append(f"{part}.{field} (saved {a.get(field)!r}, here {b.get(field)!r})")
    return diffs


def load_into(ctl: Any, d: Any) -> None:
    """Validate ``d`` completely, then make it the controller's state."""
    with np.errstate(all="ignore"):  # sums over corrupted values are checked, not warned about
        _load_into(ctl, d)


def _load_into(ctl: Any, d: Any) -> None:
    if not isinstance(d, dict):
        raise type_fail("state", "a dict from state_dict()", d)
    version = int_leaf(d, "format_version", "state", 1)
    require(
        version in READABLE_VERSIONS,
        "state['format_version']",
        f"one of {list(READABLE_VERSIONS)}",
        version,
    )
    n = int_leaf(d, "num_prompts", "state", 1, 2**31 - 2)
    diffs = [] if n == ctl._num_prompts else [f"num_prompts (saved {n}, here {ctl._num_prompts})"]
    diffs += _config_diffs(d, ctl)
    if diffs:
        raise ValueError(
            "state was saved with a different configuration; fields that differ: "
            + "; ".join(diffs)
        )
    config, b = ctl._config, ctl._config.classifier.num_bins
    step = int_leaf(d, "step", "state")
    serial = int_leaf(d, "serial", "state")
    cstate = _clf.check_state(
        section(d, "classifier", "state"), config.classifier, n, "state['classifier']", version
    )
    visits = int(cstate.filled.sum()) if version == 1 else int_leaf(d, "visits", "state")
    pstate = _check_prompt(section(d, "prompt", "state"), b, "state['prompt']")
    rstate = _check_rollout(section(d, "rollout", "state"), config.rollout, b, "state['rollout']")
    sstate = _check_sampler(
        section(d, "sampler", "state"),
        config.prompt.mode == "resample",
        cstate,
        n,
        b,
        "state['sampler']",
    )
    rng = rng_from_json(str_leaf(d, "rng", "state"))
    metrics = _metrics(d)
    records = _records(d, version, config, n, step, serial, cstate.bin_counts)
    # commit
    ctl._cstate, ctl._pstate, ctl._rstate, ctl._sstate = cstate, pstate, rstate, sstate
    ctl._rng, ctl._step, ctl._serial, ctl._visits = rng, step, serial, visits
    ctl._metrics, ctl._in_flight = metrics, records
    ctl._finished.clear()
