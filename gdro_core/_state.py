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
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from gdro_core import classifier as _clf
from gdro_core import prompt as _prompt
from gdro_core import rollout as _rollout
from gdro_core import sampler as _sampler
from gdro_core._io import load_npz, rng_state_json, save_npz
from gdro_core._reference import popcount_rows
from gdro_core._validation import check_int, fail, type_fail
from gdro_core.classifier import ClassifierConfig, ClassifierState
from gdro_core.config import ControllerConfig
from gdro_core.plan import InFlight, Plan, frozen
from gdro_core.rollout import Allocation, RolloutConfig

if TYPE_CHECKING:
    from gdro_core.controller import GDROController

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)

__all__ = [
    "FORMAT_VERSION",
    "check_classifier",
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


def to_state_dict(ctl: GDROController) -> dict[str, Any]:
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
def _scalar(v: Any) -> Any:
    if isinstance(v, np.ndarray) and v.ndim == 0:
        return v.item()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _section(d: Any, key: str, where: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise type_fail(where, "a dict from state_dict()", d)
    if key not in d:
        raise fail(where, f"a dict with key {key!r}", f"keys {sorted(map(str, d))}")
    src = d[key]
    if not isinstance(src, dict):
        raise type_fail(f"{where}[{key!r}]", "a dict", src)
    return src


def _leaf(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise fail(where, f"a dict with key {key!r}", f"keys {sorted(map(str, d))}")
    return d[key]


def _int(d: dict[str, Any], key: str, where: str, lo: int = 0, hi: int | None = None) -> int:
    return check_int(f"{where}[{key!r}]", _scalar(_leaf(d, key, where)), lo=lo, hi=hi)


def _float(
    d: dict[str, Any], key: str, where: str, lo: float | None = None, hi: float | None = None
) -> float:
    v = _scalar(_leaf(d, key, where))
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise type_fail(f"{where}[{key!r}]", "a real number", v)
    x = float(v)
    if not np.isfinite(x) or (lo is not None and x < lo) or (hi is not None and x > hi):
        rng = "a finite number" + (
            f" in [{lo:g}, {hi:g}]" if lo is not None and hi is not None else ""
        )
        if lo is not None and hi is None:
            rng += f" >= {lo:g}"
        raise fail(f"{where}[{key!r}]", rng, x)
    return x


def _str(d: dict[str, Any], key: str, where: str) -> str:
    v = _scalar(_leaf(d, key, where))
    if not isinstance(v, str):
        raise type_fail(f"{where}[{key!r}]", "a string", v)
    return v


def _array(
    d: dict[str, Any], key: str, where: str, dtype: Any, shape: tuple[int | None, ...]
) -> NDArray[Any]:
    raw = _leaf(d, key, where)
    name = f"{where}[{key!r}]"
    if not isinstance(raw, np.ndarray):
        raise type_fail(name, f"a numpy array of dtype {np.dtype(dtype).name}", raw)
    ok = raw.dtype == np.dtype(dtype) and raw.ndim == len(shape)
    ok = ok and all(s is None or s == t for s, t in zip(shape, raw.shape, strict=False))
    if not ok:
        want = "x".join("n" if s is None else str(s) for s in shape) or "()"
        raise fail(name, f"an array of shape ({want}) and dtype {np.dtype(dtype).name}", raw)
    return np.array(raw, copy=True)


def _require(ok: bool | np.bool_, name: str, allowed: str, value: Any) -> None:
    if not ok:
        raise fail(name, allowed, value)


def _finite(a: NDArray[Any], name: str, lo: float | None = None, hi: float | None = None) -> None:
    bad = ~np.isfinite(a)
    if lo is not None:
        bad |= a < lo
    if hi is not None:
        bad |= a > hi
    if bad.any():
        i = int(np.flatnonzero(bad.ravel())[0])
        what = "finite values"
        if lo is not None and hi is not None:
            what += f" in [{lo:g}, {hi:g}]"
        elif lo is not None:
            what += f" >= {lo:g}"
        raise fail(name, what, f"{a.ravel()[i]!r} at flat index {i}")


def check_classifier(
    src: dict[str, Any], config: ClassifierConfig, num_prompts: int, where: str, version: int
) -> ClassifierState:
    """A validated ``ClassifierState`` from the arrays of a state dict (copied)."""
    tpl = _clf.init_state(config, num_prompts)
    out: dict[str, NDArray[Any]] = {}
    for f in ClassifierState._fields:
        ref = getattr(tpl, f)
        if f == "flags" and version == 1 and f not in src:
            out[f] = np.zeros_like(ref)  # format 1 kept no flags: nothing known yet
            continue
        out[f] = _array(src, f, where, ref.dtype, ref.shape)
    n = f"{where}"
    window, b = config.window, config.num_bins
    filled = out["filled"].astype(np.int64)
    if window > 0:
        _finite(filled.astype(np.float64), f"{n}['filled']", 0, window)
    unseen = filled == 0
    bits = out["bits"]
    if bits.shape[1]:
        rem = window % 64
        if rem:
            top = bits[:, -1] >> np.uint64(rem)
            _require(
                not top.any(),
                f"{n}['bits']",
                f"no bits beyond the window of {window}",
                "stray bits",
            )
        pop = popcount_rows(bits)
        _require(
            (pop <= filled).all(),
            f"{n}['bits']",
            "at most 'filled' ones per row",
            "more ones than entries",
        )
    if out["vals"].shape[1]:
        _finite(out["vals"], f"{n}['vals']", 0.0, 1.0)
    if out["sums"].shape[0]:
        _finite(out["sums"], f"{n}['sums']", 0.0)
        _require(
            (out["sums"] <= filled).all(),
            f"{n}['sums']",
            "at most 'filled' per prompt",
            "larger sums",
        )
    cbins = out["bins"].astype(np.int64)
    _require((cbins < b).all(), f"{n}['bins']", f"bins in [0, {b})", int(cbins.max()))
    _require(
        not cbins[unseen].any(),
        f"{n}['bins']",
        "bin 0 for unseen prompts",
        "an unseen prompt elsewhere",
    )
    counts = np.bincount(cbins, minlength=b)
    _require(
        np.array_equal(counts, out["bin_counts"]),
        f"{n}['bin_counts']",
        f"the bin counts of 'bins' ({counts.tolist()})",
        out["bin_counts"],
    )
    flags = out["flags"]
    _require(
        not (flags & np.uint8(0xFC)).any(), f"{n}['flags']", "values in [0, 3]", int(flags.max())
    )
    _require(
        not flags[unseen].any(),
        f"{n}['flags']",
        "0 for unseen prompts",
        "flags of an unseen prompt",
    )
    return ClassifierState(**out)


def _check_prompt(src: dict[str, Any], num_bins: int, where: str) -> _prompt.PromptState:
    tpl = _prompt.init_state(num_bins)
    out = {
        f: _array(src, f, where, getattr(tpl, f).dtype, getattr(tpl, f).shape) for f in tpl._fields
    }
    _finite(out["score"], f"{where}['score']")
    _finite(out["last_gain"], f"{where}['last_gain']", 0.0, 1.0)
    return _prompt.PromptState(**out)


def _check_rollout(
    src: dict[str, Any], rcfg: RolloutConfig, num_bins: int, where: str
) -> _rollout.RolloutState:
    tpl = _rollout.init_state(rcfg, num_bins)
    arrays = {}
    for f in ("arm_loss", "arm_seen", "variance", "var_seen"):
        ref = getattr(tpl, f)
        arrays[f] = _array(src, f, where, ref.dtype, ref.shape)
    _finite(arrays["arm_loss"], f"{where}['arm_loss']")
    _finite(arrays["variance"], f"{where}['variance']", 0.0, 0.5)
    mu = _float(src, "mu", where, 0.0, rcfg.mu_max if rcfg.mode == "bandit" else None)
    return _rollout.RolloutState(mu=mu, **arrays)


def _check_sampler(
    src: dict[str, Any],
    resample: bool,
    cstate: ClassifierState,
    num_prompts: int,
    num_bins: int,
    where: str,
) -> _sampler.SamplerState:
    p = num_prompts
    tpl = _sampler.init_state(p, num_bins, resample, np.random.default_rng(0))
    arrays = {}
    for f in ("perm", "members", "member_pos", "bin_start"):
        ref = getattr(tpl, f)
        arrays[f] = _array(src, f, where, ref.dtype, ref.shape)
    pos = _int(src, "pos", where, 0, p)
    epoch = _int(src, "epoch", where, 0)
    if not resample:
        perm = arrays["perm"].astype(np.int64)
        _require(
            ((perm >= 0) & (perm < p)).all() and (np.bincount(perm, minlength=p) == 1).all(),
            f"{where}['perm']",
            f"a permutation of 0..{p - 1}",
            arrays["perm"],
        )
        _require(epoch >= 1, f"{where}['epoch']", "an integer >= 1", epoch)
        _require(
            np.array_equal(arrays["bin_start"], tpl.bin_start),
            f"{where}['bin_start']",
            "unused",
            arrays["bin_start"],
        )
    else:
        _require(
            pos == 0 and epoch == 0,
            f"{where}['pos'] and ['epoch']",
            "0 in resample mode",
            (pos, epoch),
        )
        members = arrays["members"].astype(np.int64)
        _require(
            ((members >= 0) & (members < p)).all()
            and (np.bincount(members, minlength=p) == 1).all(),
            f"{where}['members']",
            f"a permutation of 0..{p - 1}",
            arrays["members"],
        )
        mpos = arrays["member_pos"].astype(np.int64)
        _require(
            ((mpos >= 0) & (mpos < p)).all()
            and np.array_equal(members[np.clip(mpos, 0, p - 1)], np.arange(p)),
            f"{where}['member_pos']",
            "the inverse permutation of 'members'",
            arrays["member_pos"],
        )
        start = arrays["bin_start"]
        sizes = np.diff(start)
        _require(
            start[0] == 0 and start[-1] == p and np.array_equal(sizes, cstate.bin_counts),
            f"{where}['bin_start']",
            "segment starts matching the classifier's bin counts",
            start,
        )
        seg = np.repeat(np.arange(num_bins), sizes)
        _require(
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
    first = _array(src, "prompt_ids", where, np.int64, (None,))
    n = first.shape[0]
    _require(n >= 1, f"{where}['prompt_ids']", "at least one prompt", first)
    a = {k: _array(src, k, where, dt, (n,)) for k, dt in _RECORD_ARRAYS.items()}
    ids = a["prompt_ids"]
    _require(
        ((ids >= 0) & (ids < num_prompts)).all(),
        f"{where}['prompt_ids']",
        f"ids in [0, {num_prompts})",
        ids,
    )
    _require(np.unique(ids).shape[0] == n, f"{where}['prompt_ids']", "distinct ids", ids)
    _require(
        ((a["bins"] >= 0) & (a["bins"] < b)).all(),
        f"{where}['bins']",
        f"bins in [0, {b})",
        a["bins"],
    )
    r = a["rollouts"]
    _require(
        ((r >= rcfg.min) & (r <= rcfg.max)).all() and int(r.sum()) == rcfg.mean * n,
        f"{where}['rollouts']",
        f"counts in [{rcfg.min}, {rcfg.max}] summing to {rcfg.mean} x {n}",
        r,
    )
    _finite(a["weights"], f"{where}['weights']", 0.0, config.prompt.weight_cap)
    if config.prompt.mode != "reweight":
        _require(
            (a["weights"] == 1.0).all(),
            f"{where}['weights']",
            "ones (no reweighting)",
            a["weights"],
        )
    _finite(a["sample_probs"], f"{where}['sample_probs']", 0.0, 1.0)
    _finite(a["rollout_probs"], f"{where}['rollout_probs']", 0.0, 1.0)
    _require(
        (a["rollout_probs"] > 0).all(), f"{where}['rollout_probs']", "positive", a["rollout_probs"]
    )
    q = _array(src, "q", where, np.float64, (b,))
    _finite(q, f"{where}['q']", 0.0, 1.0)
    _require(abs(float(q.sum()) - 1.0) <= 1e-9, f"{where}['q']", "a distribution (sum 1)", q)
    counts = _array(src, "bin_counts", where, np.int64, (b,))
    _require(
        (counts >= 0).all() and int(counts.sum()) == num_prompts,
        f"{where}['bin_counts']",
        f"non-negative counts summing to {num_prompts}",
        counts,
    )
    active = _array(src, "active", where, np.int64, (None,))
    _require(
        np.array_equal(active, np.unique(a["bins"])),
        f"{where}['active']",
        f"the bins present in the plan ({np.unique(a['bins']).tolist()})",
        active,
    )
    arm_index = _array(src, "arm_index", where, np.int64, (active.shape[0],))
    k = rcfg.max - rcfg.min + 1
    _require(
        ((arm_index >= -1) & (arm_index < k)).all(),
        f"{where}['arm_index']",
        f"values in [-1, {k})",
        arm_index,
    )
    unconstrained = _float(src, "unconstrained", where)
    mu = _float(src, "mu", where, 0.0)
    done, fed = a["done"], a["fed"]
    _require(
        not (fed & ~done).any(),
        f"{where}['fed']",
        "only prompts marked done",
        "a fed prompt not done",
    )
    _require(not done.all(), f"{where}['done']", "some prompt still awaiting feedback", "all done")
    c = a["correct"]
    _require(
        ((c >= 0) & (c <= r)).all() and not c[~fed].any(),
        f"{where}['correct']",
        "counts in [0, rollouts]",
        c,
    )
    _finite(a["reward_mean"], f"{where}['reward_mean']")
    _finite(a["rate"], f"{where}['rate']", 0.0, 1.0)
    _finite(a["losses"], f"{where}['losses']")
    _require(
        not (a["flags"] & np.uint8(0xFC)).any(), f"{where}['flags']", "values in [0, 3]", a["flags"]
    )
    _require(
        not (a["has_loss"] & ~fed).any(), f"{where}['has_loss']", "only fed prompts", a["has_loss"]
    )
    plan_step = _int(src, "step", where, 0, step)
    plan_serial = _int(src, "serial", where, 1, serial)
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
    src = _section(d, "in_flight", "state")
    count = _int(src, "count", "state['in_flight']", 0, config.max_in_flight)
    extra = sorted(set(src) - {"count"} - {str(i) for i in range(count)})
    _require(
        not extra,
        "state['in_flight']",
        f"keys 'count' and '0'..'{count - 1}'",
        f"extra keys {extra}",
    )
    records = [
        _check_record(
            _section(src, str(i), "state['in_flight']"),
            config,
            n,
            step,
            serial,
            f"state['in_flight'][{str(i)!r}]",
        )
        for i in range(count)
    ]
    serials = [rec.plan.serial for rec in records]
    _require(
        serials == sorted(set(serials)),
        "state['in_flight']",
        "plans in increasing serial order",
        serials,
    )
    return records


def _metrics(d: dict[str, Any]) -> dict[str, float] | None:
    raw = _str(d, "metrics", "state")
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
    _require(ok, "state['metrics']", "'' or a JSON object of finite numbers", raw)
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
    version = _int(d, "format_version", where, 1)
    _require(
        version in READABLE_VERSIONS,
        f"{where}['format_version']",
        f"one of {list(READABLE_VERSIONS)}",
        version,
    )
    n = _int(d, "num_prompts", where, 1, 2**31 - 2)
    raw = _str(d, "config", where)
    try:
        saved = json.loads(raw)
        if not isinstance(saved, dict):
            raise ValueError("not an object")
        return ControllerConfig.from_mapping(saved, where=f"{where}['config']"), n
    except (ValueError, TypeError) as exc:
        raise fail(
            f"{where}['config']",
            "the JSON configuration written by state_dict()",
            raw,
            fix=str(exc),
        ) from exc


def _config_diffs(d: dict[str, Any], ctl: GDROController) -> list[str]:
    raw = _str(d, "config", "state")
    try:
        saved = json.loads(raw)
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
        sections = {k: saved[k] for k in ("classifier", "prompt", "rollout") if k in saved}
        normal = ControllerConfig.from_mapping(sections, where="state['config']").to_dict()
    except (ValueError, TypeError) as exc:
        raise fail(
            "state['config']", "the JSON configuration written by state_dict()", raw, fix=str(exc)
        ) from exc
    here = ctl._config.to_dict()
    diffs = []
    for section in ("classifier", "prompt", "rollout"):
        a, b = normal[section], here[section]
        for field in sorted(set(a) | set(b)):
            if a.get(field) != b.get(field):
                diffs.append(f"{section}.{field} (saved {a.get(field)!r}, here {b.get(field)!r})")
    return diffs


def load_into(ctl: GDROController, d: Any) -> None:
    """Validate ``d`` completely, then make it the controller's state."""
    with np.errstate(all="ignore"):  # sums over corrupted values are checked, not warned about
        _load_into(ctl, d)


def _load_into(ctl: GDROController, d: Any) -> None:
    if not isinstance(d, dict):
        raise type_fail("state", "a dict from state_dict()", d)
    version = _int(d, "format_version", "state", 1)
    _require(
        version in READABLE_VERSIONS,
        "state['format_version']",
        f"one of {list(READABLE_VERSIONS)}",
        version,
    )
    n = _int(d, "num_prompts", "state", 1, 2**31 - 2)
    diffs = [] if n == ctl._num_prompts else [f"num_prompts (saved {n}, here {ctl._num_prompts})"]
    diffs += _config_diffs(d, ctl)
    if diffs:
        raise ValueError(
            "state was saved with a different configuration; fields that differ: "
            + "; ".join(diffs)
        )
    config, b = ctl._config, ctl._config.classifier.num_bins
    step = _int(d, "step", "state")
    serial = _int(d, "serial", "state")
    cstate = check_classifier(
        _section(d, "classifier", "state"), config.classifier, n, "state['classifier']", version
    )
    visits = int(cstate.filled.sum()) if version == 1 else _int(d, "visits", "state")
    pstate = _check_prompt(_section(d, "prompt", "state"), b, "state['prompt']")
    rstate = _check_rollout(_section(d, "rollout", "state"), config.rollout, b, "state['rollout']")
    sstate = _check_sampler(
        _section(d, "sampler", "state"),
        config.prompt.mode == "resample",
        cstate,
        n,
        b,
        "state['sampler']",
    )
    rng = rng_from_json(_str(d, "rng", "state"))
    metrics = _metrics(d)
    records = _records(d, version, config, n, step, serial, cstate.bin_counts)
    # commit
    ctl._cstate, ctl._pstate, ctl._rstate, ctl._sstate = cstate, pstate, rstate, sstate
    ctl._rng, ctl._step, ctl._serial, ctl._visits = rng, step, serial, visits
    ctl._metrics, ctl._in_flight = metrics, records
    ctl._finished.clear()
