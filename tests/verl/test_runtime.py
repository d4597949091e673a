"""The controller runtime's bookkeeping: keyed by prompt id and uid, strict about bad feedback,
any feedback order with several plans in flight, and checkpoints that resume exactly."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from verl import DataProto

from gdro_verl import feedback
from gdro_verl.config import GDROSettings
from gdro_verl.runtime import GDRORuntime, Group


def _runtime(
    max_in_flight: int = 1, num_prompts: int = 12, block: int = 3, **gdro: Any
) -> GDRORuntime:
    raw = {
        "rollout": {"mean": 4, "max": 8, "mode": "neyman"},
        "prompt": {"mode": "reweight"},
        **gdro,
    }
    settings_ = GDROSettings.from_data_config({"gdro": raw})
    return GDRORuntime(
        settings_, num_prompts=num_prompts, block_size=block, max_in_flight=max_in_flight
    )


def _plan_block(rt: GDRORuntime) -> list[int]:
    return [rt.next_prompt_id() for _ in range(rt.block_size)]


def _groups(rewards: dict[int, list[float]], tag: str = "") -> dict[str, Group]:
    return {
        f"uid{tag}-{p}": Group(prompt_id=p, rewards=np.array(r, dtype=float), loss=None)
        for p, r in rewards.items()
    }


def test_feedback_is_keyed_by_prompt_id_not_arrival_order() -> None:
    a, b = _runtime(), _runtime()
    ids_a, ids_b = _plan_block(a), _plan_block(b)
    assert ids_a == ids_b
    outcome = {p: [1.0, 0.0, 0.0, 1.0][: a.planned_rollouts(p)] for p in ids_a}
    a.feedback_groups(_groups(outcome))
    b.feedback_groups(_groups({p: outcome[p] for p in reversed(ids_a)}))
    np.testing.assert_equal(a.controller.state_dict(), b.controller.state_dict())


def test_groups_may_arrive_over_several_calls() -> None:
    rt = _runtime()
    ids = _plan_block(rt)
    assert rt.feedback_groups(_groups({ids[0]: [1, 1, 0, 0]})) == {}
    metrics = rt.feedback_groups(_groups({ids[1]: [1, 1, 1, 1], ids[2]: [0, 0, 0, 0]}))
    assert metrics["gdro/solve_rate"] == pytest.approx((0.5 + 1 + 0) / 3)
    # unbiased pass@1 = c/n averaged over prompts
    assert metrics["gdro/pass@1"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert metrics["gdro/solved_none"] == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda ids: {
                "u": Group(prompt_id=11 if 11 not in ids else 10, rewards=np.ones(4), loss=None)
            },
            "awaits no feedback",
        ),
        (
            lambda ids: {"u": Group(prompt_id=ids[0], rewards=np.ones(9), loss=None)},
            "returned 9 rollouts; 4 were planned",
        ),
        (
            lambda ids: {
                "u1": Group(prompt_id=ids[0], rewards=np.ones(4), loss=None),
                "u2": Group(prompt_id=ids[0], rewards=np.ones(4), loss=None),
            },
            "scored twice",
        ),
        (
            lambda ids: {
                "u": Group(prompt_id=ids[0], rewards=np.array([1.0, np.nan, 0, 0]), loss=None)
            },
            "finite",
        ),
    ],
)
def test_bad_feedback_is_rejected_and_changes_nothing(make: Any, message: str) -> None:
    rt, twin = _runtime(), _runtime()
    ids = _plan_block(rt)
    _plan_block(twin)
    good = {p: [1.0, 0.0, 1.0, 0.0][: rt.planned_rollouts(p)] for p in ids[1:]}
    rt.feedback_groups(_groups(good))
    twin.feedback_groups(_groups(good))
    bad = make(ids)
    first = _groups({ids[0]: [1.0] * rt.planned_rollouts(ids[0])}, "x")
    with pytest.raises(ValueError, match=message):
        rt.feedback_groups(
            bad if ids[0] in [g.prompt_id for g in bad.values()] else {**first, **bad}
        )
    last = _groups({ids[0]: [1.0] * rt.planned_rollouts(ids[0])}, "y")
    assert rt.feedback_groups(last) == twin.feedback_groups(last)
    np.testing.assert_equal(rt.controller.state_dict(), twin.controller.state_dict())


def test_a_uid_cannot_change_prompt_and_undispatched_prompts_take_no_feedback() -> None:
    rt = _runtime()
    ids = [rt.next_prompt_id(), rt.next_prompt_id()]
    rt.register_batch(["u"], [ids[0]])
    with pytest.raises(ValueError, match=r"uid 'u' maps to two prompt ids"):
        rt.register_batch(["u"], [ids[1]])
    not_yet = int(rt.plan.prompt_ids[2])  # planned, not handed out by the sampler yet
    with pytest.raises(
        ValueError, match=rf"prompt id {not_yet}, which the sampler has not handed out"
    ):
        rt.feedback_groups(_groups({not_yet: [1.0] * rt.planned_rollouts(not_yet)}))


def test_failed_sessions_and_silent_groups_count_as_incorrect() -> None:
    rt = _runtime()
    ids = _plan_block(rt)
    metrics = rt.feedback_groups(
        {
            **_groups({ids[0]: [1.0, 1.0], ids[1]: [1.0, 0.0, 1.0, 0.0]}),
            "silent": Group(ids[2], np.zeros(0), None),  # every session failed
        }
    )
    missing = rt.plan.rollouts.sum() - 2 - 4
    assert metrics["gdro/missing_rollouts"] == missing
    assert metrics["gdro/solved_none"] == pytest.approx(1 / 3)
    assert rt.feedback_groups({}) == {}


def test_weights_follow_uids_and_skip_verl_padding_rows() -> None:
    rt = _runtime()
    for step in range(20):  # until a block mixes prompts of different bins
        ids = _plan_block(rt)
        if len(set(np.round(rt.plan.weights, 9).tolist())) == len(ids):
            break
        groups = _groups(
            {p: list(_outcome(p, rt.planned_rollouts(p), step)) for p in ids}, str(step)
        )
        rt.feedback_groups(groups, untrained=set(groups))
    rt.register_batch([f"u{p}" for p in ids], ids)
    weights = {f"u{p}": float(w) for p, w in zip(rt.plan.prompt_ids, rt.plan.weights, strict=True)}
    assert len(set(weights.values())) == 3
    uids = [f"u{ids[1]}", "pad0123abcd", f"u{ids[0]}"]
    data = DataProto.from_dict(
        tensors={"advantages": torch.ones(3, 2)}, non_tensors={"uid": np.array(uids, dtype=object)}
    )
    rt.apply_weights(data)
    expected = torch.tensor([weights[uids[0]], 1.0, weights[uids[2]]]).unsqueeze(-1).expand(3, 2)
    torch.testing.assert_close(data.batch["advantages"], expected.float())
    stranger = DataProto.from_dict(
        tensors={"advantages": torch.ones(2, 2)},
        non_tensors={"uid": np.array([uids[0], "not-a-gdro-uid"], dtype=object)},
    )
    with pytest.raises(ValueError, match="no Prompt-GDRO weight for uid 'not-a-gdro-uid'"):
        rt.apply_weights(stranger)


def test_plans_in_flight_are_bounded_with_a_clear_error() -> None:
    rt = _runtime(max_in_flight=2)
    _plan_block(rt), _plan_block(rt)
    with pytest.raises(RuntimeError, match=r"data\.gdro\.max_in_flight=2 allows"):
        rt.next_prompt_id()
    single = _runtime()
    _plan_block(single)
    with pytest.raises(RuntimeError, match="was never scored"):
        single.next_prompt_id()


def test_pass_at_k_metric_is_the_unbiased_estimator() -> None:
    metrics = feedback.step_metrics(
        rollouts=np.array([4, 6]), n_correct=np.array([1, 0]), controller_metrics={}, ks=[2]
    )
    assert metrics["gdro/pass@2"] == pytest.approx((1 - 3 / 6 + 0.0) / 2)  # 1 - C(3,2)/C(4,2)


def test_correctness_source() -> None:
    scores = [0.0, 2.0]
    assert feedback.choose_rewards(
        acc=[True, False], scores=scores, correctness="auto"
    ).tolist() == [1.0, 0.0]
    assert (
        feedback.choose_rewards(acc=[True, False], scores=scores, correctness="score").tolist()
        == scores
    )
    with pytest.raises(
        ValueError, match=r"data\.gdro\.correctness='acc' but the reward function reports no 'acc'"
    ):
        feedback.choose_rewards(acc=None, scores=scores, correctness="acc")


# --------------------------------------------------------------------------- any order, resume


def _outcome(pid: int, n: int, salt: int) -> np.ndarray:
    return (np.random.default_rng([pid, salt]).random(n) < (pid % 5) / 4).astype(float)


@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["draw", "feed", "cancel", "fail", "save"]), st.integers(0, 10**6)
        ),
        min_size=5,
        max_size=60,
    )
)
def test_any_order_of_feedback_with_plans_in_flight_keeps_budgets_and_resumes(
    ops: list[Any],
) -> None:
    """Random interleavings of hand-out, partial feedback (any order, failed sessions included),
    cancellation and save/load, with three plans in flight: every plan meets the exact budget,
    each prompt is fed back or cancelled once, a rejected call changes nothing, and a runtime
    restored from a checkpoint behaves exactly like the one that never stopped."""
    rt, twin = (
        _runtime(max_in_flight=3, num_prompts=30, block=4),
        _runtime(max_in_flight=3, num_prompts=30, block=4),
    )
    handed: list[int] = []  # handed out, awaiting feedback
    seen_serials: set[int] = set()
    for op, r in ops:
        for runtime in (rt, twin):
            for plan in runtime.in_flight():
                assert int(plan.rollouts.sum()) == 4 * plan.prompt_ids.size
                assert plan.rollouts.min() >= 2 and plan.rollouts.max() <= 8
        if op == "draw":
            try:
                pid = rt.next_prompt_id()
            except RuntimeError as err:
                assert "max_in_flight=3" in str(err)
                with pytest.raises(RuntimeError):
                    twin.next_prompt_id()
                continue
            assert twin.next_prompt_id() == pid and pid not in handed
            handed.append(pid)
            seen_serials.add(int(rt.plan.serial))
        elif op in ("feed", "fail", "cancel") and handed:
            k = 1 + r % min(3, len(handed))
            chosen = [handed[(r // 7 + i) % len(handed)] for i in range(k)]
            chosen = list(dict.fromkeys(chosen))
            if op == "cancel":
                assert rt.cancel(chosen) == twin.cancel(chosen)
            else:
                groups = {}
                for pid in chosen:
                    n = rt.planned_rollouts(pid) - (r % 2 if op == "fail" else 0)
                    groups[f"u{r}-{pid}"] = Group(pid, _outcome(pid, n, r), None)
                assert rt.feedback_groups(groups) == twin.feedback_groups(groups)
                before = copy.deepcopy(rt.controller.state_dict())
                with pytest.raises(ValueError, match="awaits no feedback"):
                    rt.feedback_groups(groups)  # each prompt once
                np.testing.assert_equal(rt.controller.state_dict(), before)
            handed = [p for p in handed if p not in chosen]
        elif op == "save":
            state = rt.state_dict()
            rt = _runtime(max_in_flight=3, num_prompts=30, block=4)
            rt.load_state_dict(copy.deepcopy(state))
        assert rt.awaiting() == twin.awaiting()
        np.testing.assert_equal(rt.controller.state_dict(), twin.controller.state_dict())
    np.testing.assert_equal(rt.state_dict(), twin.state_dict())


def _drop_a_flight(state: dict[str, Any]) -> str:
    state["flights"].pop(sorted(state["flights"])[0])
    return "the controller's plans in flight"


def _lose_a_reward(state: dict[str, Any]) -> str:
    flight = next(f for f in state["flights"].values() if len(f["received_ids"]))
    flight["received_rewards"] = flight["received_rewards"][:-1]
    return "saved rewards for"


def _unknown_current(state: dict[str, Any]) -> str:
    state["current"] = 10**6
    return "the block being handed out is not in flight"


def _uids_without_prompts(state: dict[str, Any]) -> str:
    state["uid_prompts"] = state["uid_prompts"][:-1]
    return "uids but"


@pytest.mark.parametrize(
    "corrupt", [_drop_a_flight, _lose_a_reward, _unknown_current, _uids_without_prompts]
)
def test_a_state_rejected_after_its_controller_part_changes_nothing(corrupt: Any) -> None:
    """A saved state whose controller part loads but whose plans in flight, feedback or uids do
    not match is rejected whole: the runtime keeps its own controller, plans in flight, bindings
    and block being handed out, and goes on exactly like a twin that was never asked to load."""
    saved = _runtime(max_in_flight=3)
    for step in range(2):
        ids = _plan_block(saved)
        saved.register_batch([f"s{step}-{p}" for p in ids], ids)
        n = saved.planned_rollouts(ids[0])
        saved.feedback_groups({f"s{step}-{ids[0]}": Group(ids[0], _outcome(ids[0], n, step), None)})
    saved.next_prompt_id()  # a third block, partly handed out
    state = copy.deepcopy(saved.state_dict())
    message = corrupt(state)

    rt, twin = _runtime(max_in_flight=3), _runtime(max_in_flight=3)
    for runtime in (rt, twin):  # another history: one block fed back, one half handed out
        ids = _plan_block(runtime)
        runtime.feedback_groups(
            _groups({p: _outcome(p, runtime.planned_rollouts(p), 9) for p in ids})
        )
        runtime.register_batch(["u0"], [runtime.next_prompt_id()])
    assert rt.controller.step != saved.controller.step
    with pytest.raises(ValueError, match=message):
        rt.load_state_dict(state)
    np.testing.assert_equal(rt.state_dict(), twin.state_dict())
    assert rt.prompt_of("u0") == twin.prompt_of("u0") is not None
    assert rt.plan is not None and rt.plan.serial == twin.plan.serial
    for runtime in (rt, twin):  # both carry on alike
        rest = [runtime.next_prompt_id() for _ in range(rt.block_size - 1)]
        pids = [runtime.prompt_of("u0"), *rest]
        runtime.feedback_groups(
            _groups({p: _outcome(p, runtime.planned_rollouts(p), 5) for p in pids})
        )
    np.testing.assert_equal(rt.state_dict(), twin.state_dict())


def test_a_state_of_the_previous_format_loads_without_the_fingerprint_check() -> None:
    """A format-2 state (written before train-set fingerprints) still resumes, unchecked; a
    format-3 state over other prompts is rejected, and an unknown format is rejected by name."""
    saved = _runtime()
    saved.fingerprint = "a" * 64
    ids = _plan_block(saved)
    saved.feedback_groups(_groups({p: _outcome(p, saved.planned_rollouts(p), 1) for p in ids}))
    state = saved.state_dict()
    assert state["format_version"] == 3 and state["train_set"] == "a" * 64

    other = _runtime()
    other.fingerprint = "b" * 64
    with pytest.raises(ValueError, match="another train set"):
        other.load_state_dict(state)
    old = {k: v for k, v in state.items() if k != "train_set"} | {"format_version": 2}
    other.load_state_dict(old)
    np.testing.assert_equal(other.controller.state_dict(), saved.controller.state_dict())
    with pytest.raises(ValueError, match="format_version is 1"):
        other.load_state_dict(state | {"format_version": 1})
