"""Each numba kernel (``gdro_core._kernels``) against its numpy twin (``gdro_core._reference``).

Integers must agree exactly and floats to ``rtol=1e-12``; equal uniforms must give equal draws.
Whole controllers run with ``backend="numba"`` and ``backend="numpy"`` must make the same plans
and report the same metrics.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdro_core import ClassifierConfig, GDROController, PromptConfig, RolloutConfig
from gdro_core import _kernels as K
from gdro_core import _reference as R
from gdro_core.rollout import arm_log_probs, dp_order

RTOL = 1e-12
SETTINGS = settings(deadline=None, derandomize=True, max_examples=60)


def _assert_same(a: Any, b: Any, what: str) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, f"{what}: shapes {a.shape} != {b.shape}"
    if np.issubdtype(a.dtype, np.floating) or np.issubdtype(b.dtype, np.floating):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=0.0, err_msg=what)
    else:
        np.testing.assert_array_equal(a, b, err_msg=what)


# ----------------------------------------------------------------------------- classifier kernels
def _edges(draw: st.DrawFn) -> np.ndarray:
    if draw(st.booleans()):
        b = draw(st.integers(1, 12))
        return np.arange(1, b, dtype=np.float64) / b
    n = draw(st.integers(1, 6))
    pts = np.sort(np.array(draw(st.lists(st.integers(1, 99), min_size=n, max_size=n, unique=True)))) / 100
    return pts.astype(np.float64)


@st.composite
def classifier_inputs(draw: st.DrawFn, storage: str) -> dict[str, Any]:
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    p = draw(st.integers(1, 40))
    edges = _edges(draw)
    width = float(np.diff(np.concatenate([[0.0], edges, [1.0]])).min())
    hysteresis = draw(st.sampled_from([0.0, 0.1, 0.3, 0.49])) * width
    if storage == "bits":
        window = draw(st.sampled_from([1, 2, 63, 64, 65, 100, 127, 128, 129, 200]))
        words = -(-window // 64)
        bits = rng.integers(0, 2**63, size=(p, words), dtype=np.uint64) * np.uint64(2) + rng.integers(
            0, 2, size=(p, words), dtype=np.uint64
        )
        if window % 64:
            bits[:, -1] &= np.uint64((1 << (window % 64)) - 1)
        vals = np.zeros((p, 0))
        sums = np.zeros(0)
        count = rng.integers(0, window + 1, size=p).astype(np.uint16)
    elif storage == "vals":
        window = draw(st.sampled_from([1, 2, 5, 64, 100]))
        bits = np.zeros((p, 0), dtype=np.uint64)
        vals = rng.random((p, window))
        sums = np.zeros(0)
        count = rng.integers(0, window + 1, size=p).astype(np.uint16)
    elif storage == "pooled":
        window = draw(st.sampled_from([0, 1, 10, 100]))
        bits = np.zeros((p, 0), dtype=np.uint64)
        vals = np.zeros((p, 0))
        count = rng.integers(0, (window or 1000) + 1, size=p).astype(np.uint32 if window == 0 else np.uint16)
        mass = np.where(count > 0, rng.random(p) * 40 + 1, 0.0)
        sums = rng.random(p) * mass
    else:
        window = 0
        bits = np.zeros((p, 0), dtype=np.uint64)
        vals = np.zeros((p, 0))
        count = rng.integers(0, 1000, size=p).astype(np.uint32)
        sums = rng.random(p) * count
    if storage != "pooled":
        mass = np.zeros(0)
    bins = rng.integers(0, edges.shape[0] + 1, size=p).astype(np.uint8)
    m = draw(st.integers(1, p))
    ids = rng.permutation(p)[:m].astype(np.int64)
    trials = np.zeros(m)
    if storage == "bits":
        outcomes = rng.integers(0, 2, size=m).astype(np.float64)
    elif storage == "pooled":
        trials = rng.integers(1, 17, size=m).astype(np.float64)
        outcomes = np.floor(rng.random(m) * (trials + 1))
    else:
        outcomes = rng.random(m)
        exact = rng.random(m) < 0.3  # some exact 0/1 outcomes too
        outcomes[exact] = rng.integers(0, 2, size=int(exact.sum()))
    decay = 1.0 - 1.0 / window if window > 0 else 1.0
    return dict(bits=bits, vals=vals, sums=sums, mass=mass, count=count, bins=bins, ids=ids,
                outcomes=outcomes, trials=trials, window=window, decay=decay, edges=edges,
                hysteresis=hysteresis)


STEP_ARGS = ("bits", "vals", "sums", "mass", "count", "bins", "ids", "outcomes", "trials", "window",
             "decay", "edges", "hysteresis")


def _copy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in d.items()}


def _args(d: dict[str, Any]) -> tuple[Any, ...]:
    """classifier_step's arguments, positionally (the kernels' parameter order)."""
    return tuple(d[k] for k in STEP_ARGS)


@pytest.mark.parametrize("storage", ["bits", "vals", "sums", "pooled"])
@SETTINGS
@given(data=st.data())
def test_classifier_step_matches_reference(storage: str, data: st.DataObject) -> None:
    inp = data.draw(classifier_inputs(storage))
    before = _copy(inp)
    got = K.classifier_step(*_args(_copy(inp)))
    want = R.classifier_step(*_args(_copy(inp)))
    names = ("bit_rows", "val_rows", "new_sums", "new_mass", "new_count", "new_bins", "rate")
    for name, g, w in zip(names, got, want):
        _assert_same(g, w, f"classifier_step[{storage}].{name}")
    assert got[5].dtype == np.int64 and want[5].dtype == np.int64
    # neither twin mutates its inputs
    K.classifier_step(*_args(inp))
    R.classifier_step(*_args(inp))
    for k, v in before.items():
        _assert_same(inp[k], v, f"input {k} mutated")


@pytest.mark.parametrize("storage", ["bits", "vals", "sums", "pooled"])
@SETTINGS
@given(data=st.data())
def test_window_rate_matches_reference(storage: str, data: st.DataObject) -> None:
    inp = data.draw(classifier_inputs(storage))
    args = (inp["bits"], inp["vals"], inp["sums"], inp["mass"], inp["count"], inp["ids"])
    got = K.window_rate(*args)
    want = R.window_rate(*args)
    _assert_same(got, want, f"window_rate[{storage}]")
    assert np.all(got[inp["count"][inp["ids"]] == 0] == 0.0)


# ----------------------------------------------------------------------------- move_members
def _buckets(bin_of: np.ndarray, num_bins: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    order = np.lexsort((rng.random(bin_of.shape[0]), bin_of))
    members = order.astype(np.int32)
    member_pos = np.empty_like(members)
    member_pos[members] = np.arange(members.shape[0], dtype=np.int32)
    bin_start = np.concatenate([[0], np.cumsum(np.bincount(bin_of, minlength=num_bins))]).astype(np.int64)
    return members, member_pos, bin_start


def _check_buckets(members: np.ndarray, member_pos: np.ndarray, bin_start: np.ndarray, bin_of: np.ndarray) -> None:
    p = bin_of.shape[0]
    assert bin_start[0] == 0 and bin_start[-1] == p and np.all(np.diff(bin_start) >= 0)
    np.testing.assert_array_equal(np.sort(members), np.arange(p))
    np.testing.assert_array_equal(member_pos[members], np.arange(p))  # member_pos inverts members
    for b in range(bin_start.shape[0] - 1):
        seg = members[bin_start[b] : bin_start[b + 1]]
        np.testing.assert_array_equal(np.sort(seg), np.flatnonzero(bin_of == b), err_msg=f"bin {b}")


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), p=st.integers(1, 60), num_bins=st.integers(1, 12), frac=st.floats(0.0, 1.0))
def test_move_members_matches_reference_and_keeps_buckets(seed: int, p: int, num_bins: int, frac: float) -> None:
    rng = np.random.default_rng(seed)
    bin_of = rng.integers(0, num_bins, size=p).astype(np.int64)
    members, member_pos, bin_start = _buckets(bin_of, num_bins, rng)
    _check_buckets(members, member_pos, bin_start, bin_of)
    m = max(1, int(round(frac * p)))
    ids = rng.permutation(p)[:m].astype(np.int64)
    old = bin_of[ids].copy()
    new = rng.integers(0, num_bins, size=m).astype(np.int64)
    a = [members.copy(), member_pos.copy(), bin_start.copy()]
    b = [members.copy(), member_pos.copy(), bin_start.copy()]
    K.move_members(*a, ids, old, new)
    R.move_members(*b, ids, old, new)
    for name, x, y in zip(("members", "member_pos", "bin_start"), a, b):
        _assert_same(x, y, f"move_members.{name}")
    after = bin_of.copy()
    after[ids] = new
    _check_buckets(*a, after)


# ----------------------------------------------------------------------------- budget DPs
@st.composite
def dp_inputs(draw: st.DrawFn) -> dict[str, Any]:
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    lo = draw(st.integers(2, 4))
    hi = draw(st.integers(lo, lo + 10))
    mean = draw(st.integers(lo, hi))
    cfg = RolloutConfig(mode="bandit", mean=mean, min=lo, max=hi,
                        arm_eta=draw(st.sampled_from([0.0, 0.65, 3.0])),
                        arm_gamma=draw(st.sampled_from([0.0, 0.01, 0.5])))
    active = draw(st.integers(1, 8))
    counts = rng.integers(1, 20, size=active).astype(np.int64)
    kind = draw(st.sampled_from(["normal", "ties", "symmetric"]))
    k = hi - lo + 1
    if kind == "normal":
        losses = rng.normal(0.0, 1.0, size=(active, k))
    elif kind == "ties":  # few distinct values: exact ties in the objective
        losses = rng.integers(0, 3, size=(active, k)).astype(np.float64)
    else:  # equal counts, one loss row symmetric about the mean: ties that only `order` breaks
        counts[:] = counts[0]
        dist = np.abs(cfg.arms - mean)
        row = np.where(dist == 1, 0.0, 2.0)
        losses = np.tile(row, (active, 1))
    mu = float(draw(st.sampled_from([0.0, 0.1, 1.0])))
    logp = arm_log_probs(cfg, losses, mu)
    arms = cfg.arms.astype(np.float64)
    dev = (counts[:, None] * np.abs(arms - mean)[None, :]).astype(np.float64)
    slack = int(mean * counts.sum() - counts.sum() * lo)
    return dict(cfg=cfg, counts=counts, logp=logp, dev=dev, order=dp_order(cfg), slack=slack,
                uniforms=rng.random(active))


@settings(deadline=None, derandomize=True, max_examples=100)
@given(inp=dp_inputs())
def test_budget_dp_mode_matches_reference(inp: dict[str, Any]) -> None:
    args = (inp["counts"], inp["logp"], inp["dev"], inp["order"], inp["slack"])
    got = K.budget_dp_mode(*args)
    want = R.budget_dp_mode(*args)
    _assert_same(got, want, "budget_dp_mode")
    assert int(np.dot(inp["counts"], got)) == inp["slack"]


@settings(deadline=None, derandomize=True, max_examples=100)
@given(inp=dp_inputs())
def test_budget_dp_sample_matches_reference(inp: dict[str, Any]) -> None:
    logp = inp["logp"]  # log space: defined even where exp(logp) underflows (arm_gamma = 0)
    got_arm, got_marg = K.budget_dp_sample(inp["counts"], logp, inp["slack"], inp["uniforms"])
    want_arm, want_marg = R.budget_dp_sample(inp["counts"], logp, inp["slack"], inp["uniforms"])
    _assert_same(got_arm, want_arm, "budget_dp_sample draw")
    _assert_same(got_marg, want_marg, "budget_dp_sample marginals")
    assert int(np.dot(inp["counts"], got_arm)) == inp["slack"]


# ----------------------------------------------------------------------------- whole controllers
COMBOS = [
    (p, r, s)
    for p in ("off", "reweight", "resample")
    for r, s in (("fixed", "mode"), ("bandit", "mode"), ("bandit", "sample"), ("neyman", "mode"))
]


def _run(backend: str, prompt_mode: str, rollout_mode: str, selection: str, window: int, outcome: str,
         steps: int = 8) -> list[tuple[Any, ...]]:
    ctl = GDROController(
        60,
        classifier=ClassifierConfig(num_bins=5, window=window, outcome=outcome,
                                    k=2 if outcome == "pass@k" else None),
        prompt=PromptConfig(mode=prompt_mode, signal="loss"),
        rollout=RolloutConfig(mode=rollout_mode, selection=selection, mean=4, min=2, max=9),
        seed=123,
        backend=backend,
    )
    data = np.random.default_rng(7)
    out = []
    for _ in range(steps):
        ids = ctl.sample(16)
        plan = ctl.plan(ids)
        p_true = (plan.prompt_ids % 7) / 6.0  # a fixed difficulty per prompt
        rewards = (data.random(plan.num_rollouts) < np.repeat(p_true, plan.rollouts)).astype(np.float64)
        losses = data.normal(size=plan.prompt_ids.shape[0])
        ctl.update(plan, rewards, losses=losses)
        out.append((ids, plan.arrays(), ctl.metrics(), ctl.q()))
    return out


@pytest.mark.parametrize("storage", [(100, "rate"), (100, "any"), (0, "any"), (10, "pass@k")],
                         ids=["pooled", "bits", "cumulative", "passk"])
@pytest.mark.parametrize(("prompt_mode", "rollout_mode", "selection"), COMBOS)
def test_controller_numba_equals_numpy(prompt_mode: str, rollout_mode: str, selection: str,
                                       storage: tuple[int, str]) -> None:
    a = _run("numba", prompt_mode, rollout_mode, selection, *storage)
    b = _run("numpy", prompt_mode, rollout_mode, selection, *storage)
    for t, ((ids_a, arr_a, met_a, q_a), (ids_b, arr_b, met_b, q_b)) in enumerate(zip(a, b)):
        _assert_same(ids_a, ids_b, f"step {t} sample")
        for name, x, y in zip(("prompt_ids", "bins", "rollouts", "weights", "sample_probs", "rollout_probs"),
                              arr_a, arr_b):
            _assert_same(x, y, f"step {t} plan.{name}")
        assert met_a.keys() == met_b.keys()
        for key in met_a:
            _assert_same(met_a[key], met_b[key], f"step {t} metric {key}")
        _assert_same(q_a, q_b, f"step {t} q")
