"""The controller runtime's bookkeeping: keyed by prompt id and uid, strict about bad feedback."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from verl import DataProto

from gdro_verl import feedback
from gdro_verl.config import GDROSettings
from gdro_verl.runtime import GDRORuntime, Group


def _runtime(**gdro: Any) -> GDRORuntime:
    raw = {
        "rollout": {"mean": 4, "max": 8, "mode": "neyman"},
        "prompt": {"mode": "reweight"},
        **gdro,
    }
    settings = GDROSettings.from_data_config({"gdro": raw})
    return GDRORuntime(settings, num_prompts=12, block_size=3)


def _plan_block(rt: GDRORuntime) -> list[int]:
    return [rt.next_prompt_id() for _ in range(rt.block_size)]


def _groups(rt: GDRORuntime, rewards: dict[int, list[float]]) -> dict[str, Group]:
    return {
        f"uid-{p}": Group(prompt_id=p, rewards=np.array(r, dtype=float), loss=None)
        for p, r in rewards.items()
    }


def test_feedback_is_keyed_by_prompt_id_not_arrival_order() -> None:
    a, b = _runtime(), _runtime()
    ids_a, ids_b = _plan_block(a), _plan_block(b)
    assert ids_a == ids_b
    outcome = {p: [1.0, 0.0, 0.0, 1.0][: a.planned_rollouts(p)] for p in ids_a}
    a.feedback_groups(_groups(a, outcome))
    reversed_outcome = dict(reversed(list(outcome.items())))
    b.feedback_groups(_groups(b, {p: outcome[p] for p in reversed_outcome}))
    np.testing.assert_equal(a.controller.state_dict(), b.controller.state_dict())


def test_groups_may_arrive_over_several_calls() -> None:
    rt = _runtime()
    ids = _plan_block(rt)
    assert rt.feedback_groups(_groups(rt, {ids[0]: [1, 1, 0, 0]})) == {}
    metrics = rt.feedback_groups(_groups(rt, {ids[1]: [1, 1, 1, 1], ids[2]: [0, 0, 0, 0]}))
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
            "not in the planned batch",
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
    rt.feedback_groups(_groups(rt, good))
    twin.feedback_groups(_groups(twin, good))
    bad = make(ids)
    with pytest.raises(ValueError, match=message):
        rt.feedback_groups(
            {**_groups(rt, {ids[0]: [1.0] * rt.planned_rollouts(ids[0])}), **bad}
            if ids[0] not in [g.prompt_id for g in bad.values()]
            else bad
        )
    last = _groups(rt, {ids[0]: [1.0] * rt.planned_rollouts(ids[0])})
    assert rt.feedback_groups(last) == twin.feedback_groups(last)
    np.testing.assert_equal(rt.controller.state_dict(), twin.controller.state_dict())


def test_a_uid_cannot_change_prompt() -> None:
    rt = _runtime()
    ids = _plan_block(rt)
    rt.register_batch(["u"], [ids[0]])
    with pytest.raises(ValueError, match=r"uid 'u' maps to two prompt ids"):
        rt.register_batch(["u"], [ids[1]])


def test_failed_sessions_and_empty_groups_count_as_incorrect() -> None:
    rt = _runtime()
    ids = _plan_block(rt)
    metrics = rt.feedback_groups(
        _groups(rt, {ids[0]: [1.0, 1.0], ids[1]: [1.0, 0.0, 1.0, 0.0]}), num_empty=1
    )
    assert metrics["gdro/missing_rollouts"] == 2 + 4
    assert metrics["gdro/solved_none"] == pytest.approx(1 / 3)
    with pytest.raises(RuntimeError, match="no planned batch awaits feedback"):
        rt.feedback_groups({})


def test_weights_follow_uids_and_skip_verl_padding_rows() -> None:
    rt = _runtime()
    for _ in range(6):  # enough steps for prompts to land in different bins
        ids = _plan_block(rt)
        rt.feedback_groups(_groups(rt, {p: [float(p % 2)] * rt.planned_rollouts(p) for p in ids}))
    weights = {
        f"uid-{p}": float(w) for p, w in zip(rt.plan.prompt_ids, rt.plan.weights, strict=True)
    }
    uids = [f"uid-{rt.plan.prompt_ids[1]}", "pad0123abcd", f"uid-{rt.plan.prompt_ids[0]}"]
    data = DataProto.from_dict(
        tensors={"advantages": torch.ones(3, 2)}, non_tensors={"uid": np.array(uids, dtype=object)}
    )
    rt.apply_weights(data)
    expected = torch.tensor([weights[uids[0]], 1.0, weights[uids[2]]]).unsqueeze(-1).expand(3, 2)
    torch.testing.assert_close(data.batch["advantages"], expected)
    stranger = DataProto.from_dict(
        tensors={"advantages": torch.ones(2, 2)},
        non_tensors={"uid": np.array([uids[0], "not-a-gdro-uid"], dtype=object)},
    )
    with pytest.raises(ValueError, match="no Prompt-GDRO weight for uid 'not-a-gdro-uid'"):
        rt.apply_weights(stranger)


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
