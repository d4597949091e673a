"""Feedback in any order: several plans in flight, parts of plans, cancellations, resume.

The state machine drives random interleavings of sample / plan / update (whole or in parts) /
cancel / save-load / rejected calls against a model of what must be in flight, and checks the
invariants of the sequential contract after every rule. The equivalence tests pin the semantics:
feeding a plan back in parts, in any order, ends in exactly the state of one whole update.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from gdro_core import ClassifierConfig, GDROController, Plan, PromptConfig, RolloutConfig
from gdro_core import sampler as S

FAIL = PromptConfig(signal="failure")


def rewards_for(plan: Plan, ids: np.ndarray, rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    n = plan.rollouts_of(ids)
    return (rng.random(int(n.sum())) < np.repeat(p[ids], n)).astype(float)


def assert_state_equal(a: dict, b: dict, skip: tuple[str, ...] = ()) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if k in skip:
            continue
        if isinstance(a[k], dict):
            assert_state_equal(a[k], b[k])
        else:
            x, y = np.asarray(a[k]), np.asarray(b[k])
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), k


CONFIGS = [
    dict(prompt=PromptConfig(signal="variance"), rollout=RolloutConfig(mode="neyman", mean=4, max=8)),
    dict(prompt=PromptConfig(mode="resample", signal="failure"), rollout=RolloutConfig(mode="fixed")),
    dict(prompt=PromptConfig(signal="loss"),
         rollout=RolloutConfig(mode="bandit", selection="sample", arm_signal="loss", mean=4, max=8)),
    dict(prompt=PromptConfig(mode="off", signal="variance"),
         rollout=RolloutConfig(mode="bandit", arm_signal="variance", arm_eta=1000.0, dual_step=2e-4, mu_max=0.1)),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["neyman", "resample", "bandit-loss", "bandit-variance"])
def test_parts_in_any_order_equal_one_whole_update(cfg: dict[str, Any]) -> None:
    p = np.random.default_rng(7).beta(0.5, 0.5, 200)
    whole = GDROController(200, seed=1, **cfg)
    parts = GDROController(200, seed=1, **cfg)
    rng = np.random.default_rng(3)
    resample = cfg["prompt"].mode == "resample"
    for _ in range(12):
        ids = whole.sample(24)
        if resample:  # within-bin order of the sampler's segments depends on the order of moves
            parts.sample(24)
        else:
            np.testing.assert_array_equal(ids, parts.sample(24))
        a, b = whole.plan(ids), parts.plan(ids)
        assert all(np.array_equal(x, y) for x, y in zip(a.arrays(), b.arrays()))
        order = rng.permutation(ids)
        chunks = np.array_split(order, rng.integers(1, 5))
        per_prompt = {int(i): rewards_for(a, np.array([i]), rng, p) for i in ids}
        losses = {int(i): float(rng.normal()) for i in ids}
        whole.update(a, np.concatenate([per_prompt[int(i)] for i in a.prompt_ids]),
                     np.array([losses[int(i)] for i in a.prompt_ids]))
        for chunk in chunks:
            parts.update(b, np.concatenate([per_prompt[int(i)] for i in chunk]),
                         np.array([losses[int(i)] for i in chunk]), prompt_ids=chunk)
        assert whole.metrics() == parts.metrics()
    sa, sb = whole.state_dict(), parts.state_dict()
    assert_state_equal(sa, sb, skip=("sampler", "rng"))
    if resample:  # the same prompts in every bin's segment, in another order
        start = sa["sampler"]["bin_start"]
        np.testing.assert_array_equal(start, sb["sampler"]["bin_start"])
        for lo, hi in zip(start[:-1], start[1:]):
            assert set(sa["sampler"]["members"][lo:hi]) == set(sb["sampler"]["members"][lo:hi])
    else:
        assert_state_equal(sa, sb)


def test_plans_fed_back_out_of_order_update_the_adversaries_once_each() -> None:
    ctl = GDROController(50, prompt=FAIL, rollout=RolloutConfig(mode="neyman"), seed=0, max_in_flight=3)
    plans = [ctl.plan(ctl.sample(8)) for _ in range(3)]
    assert [p.serial for p in ctl.in_flight()] == [1, 2, 3]
    for ids in (plans[0].prompt_ids, plans[1].prompt_ids):
        assert not np.isin(ids, plans[2].prompt_ids).any()  # sample skips prompts in flight
    ctl.update(plans[2], np.ones(plans[2].num_rollouts))
    assert ctl.step == 1 and ctl.metrics()["batch/success_rate"] == 1.0
    ctl.update(plans[0], np.zeros(plans[0].num_rollouts))
    assert ctl.step == 2 and ctl.metrics()["batch/success_rate"] == 0.0
    assert [p.serial for p in ctl.in_flight()] == [2]
    assert ctl.plan(ctl.sample(8)).step == 2  # planned with the history of two plans


def test_the_oldest_plan_expires_when_too_many_are_in_flight() -> None:
    ctl = GDROController(50, prompt=FAIL, seed=0, max_in_flight=2)
    a = ctl.plan(np.arange(4))
    ctl.update(a, np.ones(8), prompt_ids=[0, 1])  # half of it fed back
    b = ctl.plan(np.arange(4, 8))
    c = ctl.plan(np.arange(8, 12))  # a expires: its feedback so far updates the adversaries
    assert ctl.step == 1 and [p.serial for p in ctl.in_flight()] == [b.serial, c.serial]
    assert c.step == 1
    with pytest.raises(ValueError, match=r"plan #1, already expired \(max_in_flight = 2 plans"):
        ctl.update(a, np.ones(8), prompt_ids=[2, 3])
    assert ctl.pass_rate([0, 1, 2, 3]).tolist() == [1.0, 1.0, 0.0, 0.0]


def test_overlap_is_refused_unless_asked_for() -> None:
    ctl = GDROController(20, prompt=FAIL, seed=0, max_in_flight=3)
    ctl.plan([1, 2, 3])
    before = ctl.state_dict()
    with pytest.raises(ValueError, match=r"prompt_ids\[1\] must be an id not awaiting feedback in another plan \(plan #1\); got 3"):
        ctl.plan([5, 3])
    assert_state_equal(before, ctl.state_dict())
    both = ctl.plan([5, 3], allow_overlap=True)
    assert both.sample_probs.tolist() == [1 / 20, 0.0]  # sample() never draws a prompt in flight
    ctl.update(both, np.ones(8))
    assert ctl.pass_rate([3]).tolist() == [1.0]
    with pytest.raises(ValueError, match=r"got 3"):
        ctl.plan([3])  # fed back in plan 2, still awaited in plan 1
    ctl.cancel(ctl.in_flight()[0], [3])
    ctl.plan([3])
    assert len(ctl.in_flight()) == 2


def test_partial_updates_reject_bad_parts_without_state_change() -> None:
    ctl = GDROController(30, prompt=FAIL, rollout=RolloutConfig(mode="neyman", mean=4, max=8), seed=0, max_in_flight=2)
    plan = ctl.plan(np.arange(6))
    ctl.update(plan, np.zeros(int(plan.rollouts_of([0]).sum())), prompt_ids=[0])
    before = ctl.state_dict()
    n1 = int(plan.rollouts_of([1]).sum())
    for kwargs, match in [
        (dict(rewards=np.zeros(4), prompt_ids=[0]), r"prompt_ids\[0\] must be a prompt of plan #1 still awaiting feedback; got 0"),
        (dict(rewards=np.zeros(4), prompt_ids=[9]), r"prompt_ids\[0\] must be a prompt of plan #1; got 9"),
        (dict(rewards=np.zeros(n1 + 1), prompt_ids=[1]), rf"len\(rewards\) must be {n1}; got {n1 + 1}"),
        (dict(rewards=np.zeros(2 * n1), prompt_ids=[1, 1]), "unique ids within a batch"),
    ]:
        with pytest.raises(ValueError, match=match):
            ctl.update(plan, **kwargs)
        assert_state_equal(before, ctl.state_dict())
    with pytest.raises(ValueError, match="not in flight"):
        ctl.cancel(GDROController(30, prompt=FAIL, seed=5).plan([1]))
    assert_state_equal(before, ctl.state_dict())


def test_cancelled_prompts_can_be_planned_again_and_give_no_outcome() -> None:
    ctl = GDROController(10, prompt=FAIL, seed=0, max_in_flight=2)
    plan = ctl.plan([0, 1, 2])
    ctl.cancel(plan, [1])
    again = ctl.plan([1])
    ctl.update(plan, np.ones(8))  # prompts 0 and 2: the plan is complete
    assert ctl.step == 1 and ctl.metrics()["batch/solved_any"] == 1.0
    assert ctl.pass_rate([1]).tolist() == [0.0] and ctl.bins([1]).tolist() == [0]
    ctl.cancel(again)  # nothing fed back: the adversaries do not move
    assert ctl.step == 1 and ctl.in_flight() == ()


@pytest.mark.parametrize("how", ["state_dict", "file"])
def test_resume_with_plans_in_flight_is_bit_exact(how: str, tmp_path: Any) -> None:
    cfg = dict(prompt=PromptConfig(mode="resample", signal="variance"),
               rollout=RolloutConfig(mode="bandit", selection="sample", arm_signal="variance"))
    p = np.random.default_rng(0).beta(0.5, 0.5, 120)

    def drive(ctl: GDROController, rng: np.random.Generator, plans: list[Plan], steps: int) -> list[Any]:
        out = []
        for _ in range(steps):
            if len(plans) < 3:
                plans.append(ctl.plan(ctl.sample(10)))
            plan = plans[int(rng.integers(len(plans)))]
            left = ctl.awaiting(plan)
            part = rng.choice(left, size=int(rng.integers(1, left.size + 1)), replace=False)
            if rng.random() < 0.2:
                ctl.cancel(plan, part)
            else:
                ctl.update(plan, rewards_for(plan, part, rng, p), prompt_ids=part)
            plans[:] = list(ctl.in_flight())
            out.append((ctl.step, sorted(ctl.metrics().items()), [q.serial for q in ctl.in_flight()]))
        return out

    a = GDROController(120, seed=4, max_in_flight=3, **cfg)
    plans: list[Plan] = []
    drive(a, np.random.default_rng(1), plans, 25)
    assert len(a.in_flight()) >= 2 and any(a.awaiting(q).size < q.prompt_ids.size for q in a.in_flight())
    if how == "file":
        a.save(tmp_path / "ctl.npz")
        b = GDROController.load(tmp_path / "ctl.npz")
    else:
        b = GDROController(120, seed=99, max_in_flight=3, **cfg)
        b.load_state_dict(a.state_dict())
    assert_state_equal(a.state_dict(), b.state_dict())
    plans_b = list(b.in_flight())
    assert all(x.serial == y.serial and all(np.array_equal(u, v) for u, v in zip(x.arrays(), y.arrays()))
               for x, y in zip(plans, plans_b))
    ra, rb = drive(a, np.random.default_rng(2), plans, 30), drive(b, np.random.default_rng(2), plans_b, 30)
    assert ra == rb
    assert_state_equal(a.state_dict(), b.state_dict())


# ====================================================================== the interleaving machine
class InFlightMachine(RuleBasedStateMachine):
    """Random interleavings against a model of plans in flight and the contract's invariants."""

    plans = Bundle("plans")

    @initialize(
        cfg=st.sampled_from(CONFIGS), bound=st.integers(1, 4), seed=st.integers(0, 2**16),
        n=st.integers(25, 40),
    )
    def setup(self, cfg: dict[str, Any], bound: int, seed: int, n: int) -> None:
        self.cfg, self.n = cfg, n
        self.ctl = GDROController(n, seed=seed, max_in_flight=bound, **cfg)
        self.rng = np.random.default_rng(seed)
        self.p = self.rng.beta(0.5, 0.5, n)
        self.model: dict[int, set[int]] = {}  # serial -> prompt ids awaiting feedback
        self.fed: dict[int, int] = {}  # serial -> prompts fed back so far
        self.step = 0
        self.visits = 0
        self.visits_at_step = 0.0

    def _retire(self, serial: int) -> None:
        del self.model[serial]
        if self.fed.pop(serial) > 0:
            self.step += 1
            self.visits_at_step = self.visits / self.n

    @rule(target=plans, size=st.integers(1, 6))
    def make_plan(self, size: int) -> Plan:
        busy = set().union(*self.model.values()) if self.model else set()
        size = min(size, self.n - len(busy))
        ids = self.ctl.sample(size)
        assert not busy & set(ids.tolist()) and len(set(ids.tolist())) == size
        if len(self.model) == self.ctl.max_in_flight:
            self._retire(min(self.model))
        plan = self.ctl.plan(ids)
        rc = self.ctl.rollout_config
        assert plan.rollouts.sum() == rc.mean * size and plan.rollouts.min() >= rc.min and plan.rollouts.max() <= rc.max
        assert np.all(plan.sample_probs >= 0) and np.all(plan.sample_probs <= 1)
        self.model[plan.serial] = set(ids.tolist())
        self.fed[plan.serial] = 0
        return plan

    @precondition(lambda self: bool(self.model))
    @rule(plan=plans, data=st.data(), cancel=st.booleans())
    def feed(self, plan: Plan, data: st.DataObject, cancel: bool) -> None:
        if plan.serial not in self.model:
            before = self.ctl.state_dict()
            with pytest.raises(ValueError, match="still in flight"):
                self.ctl.update(plan, np.zeros(plan.num_rollouts))
            assert_state_equal(before, self.ctl.state_dict())
            return
        left = sorted(self.model[plan.serial])
        part = data.draw(st.lists(st.sampled_from(left), min_size=1, max_size=len(left), unique=True))
        if cancel:
            self.ctl.cancel(plan, part)
        else:
            self.ctl.update(plan, rewards_for(plan, np.array(part), self.rng, self.p),
                            self.rng.normal(size=len(part)), prompt_ids=part)
            self.fed[plan.serial] += len(part)
            self.visits += len(part)
        self.model[plan.serial] -= set(part)
        if not self.model[plan.serial]:
            self._retire(plan.serial)

    @precondition(lambda self: bool(self.model))
    @rule(plan=plans)
    def rejected_update(self, plan: Plan) -> None:
        before = self.ctl.state_dict()
        with pytest.raises(ValueError):
            self.ctl.update(plan, np.zeros(plan.num_rollouts + 1))
        assert_state_equal(before, self.ctl.state_dict())

    @rule()
    def save_and_load(self) -> None:
        twin = GDROController(self.n, seed=12345, max_in_flight=self.ctl.max_in_flight, **self.cfg)
        twin.load_state_dict(self.ctl.state_dict())
        assert_state_equal(self.ctl.state_dict(), twin.state_dict())
        self.ctl = twin  # the plans handed out before keep working after a resume

    @invariant()
    def matches_the_model(self) -> None:
        assert {p.serial: set(self.ctl.awaiting(p).tolist()) for p in self.ctl.in_flight()} == self.model
        assert self.ctl.step == self.step
        m = self.ctl.metrics()
        assert all(np.isfinite(v) for v in m.values())
        if self.step:
            assert m["mechanism/visits_mean"] == pytest.approx(self.visits_at_step)
        counts = self.ctl.bin_counts()
        assert counts.sum() == self.n and np.array_equal(counts, np.bincount(self.ctl.bins(np.arange(self.n)), minlength=10))


TestInFlightMachine = InFlightMachine.TestCase
TestInFlightMachine.settings = settings(deadline=None, derandomize=True, max_examples=40, stateful_step_count=30)


# ====================================================================== exact sampling probabilities
@pytest.mark.parametrize("busy", [False, True])
def test_resample_probabilities_match_monte_carlo_frequencies(busy: bool) -> None:
    rng = np.random.default_rng(0)
    n, b, m = 60, 6, 12
    sizes = np.array([0, 3, 30, 0, 20, 7])  # two empty bins, one small bin with a large share
    bins = np.repeat(np.arange(b), sizes)
    st0 = S.init_state(n, b, True, rng)
    st0 = st0._replace(bin_start=np.concatenate([[0], np.cumsum(sizes)]))
    q = np.array([0.3, 0.25, 0.05, 0.2, 0.1, 0.1])
    taken = np.array([1, 2, 40], dtype=np.int64) if busy else np.zeros(0, dtype=np.int64)
    probs = S.sample_probs(st0, q, bins, n, m, taken, np.arange(n))
    assert probs.sum() == pytest.approx(1.0, abs=1e-12)
    draws = 40_000
    hits = np.zeros(n)
    for _ in range(draws):
        hits[S.sample_resample(st0, q, m, rng, taken)] += 1
    freq = hits / (draws * m)  # per-slot frequency
    # binomial standard error of a frequency p over draws batches: sqrt(p(1-p)/draws)/m ... bounded
    se = np.sqrt(np.maximum(probs * m * (1 - probs * m), 1e-12) / draws) / m
    assert np.all(np.abs(freq - probs) <= 5 * se + 1e-12)
    assert np.all(freq[taken] == 0)


def test_controller_sample_probs_sum_to_one_over_the_dataset_in_resample_mode() -> None:
    ctl = GDROController(
        40, classifier=ClassifierConfig(num_bins=4, window=4),
        prompt=PromptConfig(mode="resample", signal="failure", eta=50.0, gamma=0.0), seed=0,
    )
    plan = ctl.plan(np.arange(40))
    ctl.update(plan, np.repeat(np.r_[np.ones(10), np.zeros(30)], 4))
    everyone = ctl.plan(np.arange(40))  # probabilities of a batch of 40 from 40: 1/40 each
    np.testing.assert_allclose(everyone.sample_probs, 1 / 40)
    ctl.cancel(everyone)
    part = ctl.plan(np.arange(12))
    sizes = np.diff(ctl._sstate.bin_start)
    full = S.sample_probs(ctl._sstate, ctl.q(), ctl.bins(np.arange(40)), 40, 12)
    assert full.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_array_equal(part.sample_probs, full[:12])
    assert sizes.tolist() == [30, 0, 0, 10]


@given(m=st.integers(1, 50), seed=st.integers(0, 1000))
@settings(deadline=None, derandomize=True, max_examples=60)
def test_slot_counts_are_floor_or_ceiling_of_the_expected_counts(m: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    b = int(rng.integers(1, 8))
    sizes = rng.integers(0, 12, size=b)
    if sizes.sum() < m:
        sizes[0] += m - sizes.sum()
    q = rng.dirichlet(np.ones(b))
    mass = S.capped_mass(q, sizes, m)
    counts = S.slot_counts(q, sizes, m, rng)
    assert counts.sum() == m and np.all(counts <= sizes) and np.all(counts >= 0)
    assert np.all(np.abs(counts - m * mass) < 1 + 1e-9)
