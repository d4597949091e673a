"""From verl's scored rollouts to the controller's inputs, and the step's metrics.

Pure functions: verl objects in, numpy out. Rollouts are grouped by ``uid`` (verl's per-prompt,
per-step group id); a group's prompt is identified by the ``gdro_prompt_id`` stamp, never by its
position in the batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from gdro_verl._compat import PROMPT_ID_FIELD

__all__ = [
    "Group",
    "choose_rewards",
    "final_output_keys",
    "groups_from_batch",
    "groups_from_rows",
    "step_metrics",
]


class Group(NamedTuple):
    """One prompt's scored rollouts in one step (a verl uid group).

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


def final_output_keys(keys: Sequence[str]) -> list[str]:
    """The last output of each session (the one that carries the score), in key order.

    Args:
        keys: verl V1 trajectory keys ``f"{uid}_{session}_{index}"``.

    Returns:
        One key per ``(uid, session)``: the highest ``index``.

    Examples:
        Session 0 of ``u-1`` had two outputs (a multi-turn session); its last one carries the score:

        >>> final_output_keys(["u-1_0_0", "u-1_0_1", "u-1_1_0", "u-2_0_0"])
        ['u-1_0_1', 'u-1_1_0', 'u-2_0_0']
    """
    best: dict[str, tuple[int, str]] = {}
    for key in keys:
        uid, session, index = key.rsplit("_", 2)
        session_key = f"{uid}_{session}"
        if session_key not in best or best[session_key][0] < int(index):
            best[session_key] = (int(index), key)
    return [key for _, key in best.values()]


def choose_rewards(
    *, acc: Sequence[Any] | None, scores: Sequence[float], correctness: str
) -> NDArray[np.float64]:
    """Per-rollout rewards for the controller from what verl computed.

    Args:
        acc: The scorer's ``acc`` per rollout (None when it reports none).
        scores: Summed token-level score per rollout.
        correctness: ``"acc"``, ``"score"`` or ``"auto"`` (``acc`` when available).

    Returns:
        float64 (R,): ``acc`` as 0/1 floats, or the scores.

    Raises:
        ValueError: ``correctness="acc"`` but the scorer reports no ``acc``, or a value is not finite.

    Examples:
        >>> choose_rewards(acc=[True, False, True], scores=[0.9, 0.2, 0.6], correctness="auto")
        array([1., 0., 1.])
        >>> choose_rewards(acc=None, scores=[0.9, 0.2, 0.6], correctness="auto")
        array([0.9, 0.2, 0.6])
        >>> choose_rewards(acc=[True, False, True], scores=[0.9, 0.2, 0.6], correctness="score")
        array([0.9, 0.2, 0.6])
        >>> choose_rewards(acc=None, scores=[0.9], correctness="acc")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: data.gdro.correctness='acc' but the reward function reports no 'acc'; ...
    """
    if correctness == "acc" and acc is None:
        raise ValueError(
            "data.gdro.correctness='acc' but the reward function reports no 'acc'; return a dict "
            "with 'acc' from compute_score, or set data.gdro.correctness=score"
        )
    if acc is not None and correctness in ("acc", "auto"):
        values = np.asarray([float(a) for a in acc], dtype=np.float64)
    else:
        values = np.asarray(list(scores), dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("gdro: a rollout reward is not finite (NaN or inf)")
    return values


def groups_from_rows(
    *,
    uids: Sequence[Any],
    prompt_ids: Sequence[int],
    rewards: NDArray[np.float64],
    losses: NDArray[np.float64] | None = None,
) -> dict[str, Group]:
    """Group per-rollout rows by uid.

    Args:
        uids: verl uid per rollout (any order; rows of a group need not be adjacent).
        prompt_ids: Stable prompt id per rollout.
        rewards: float64 (R,) reward per rollout.
        losses: float64 (R,) optional per-rollout loss.

    Returns:
        uid -> Group(prompt_id, rewards in row order, mean loss or None).

    Raises:
        ValueError: rows of one uid carry different prompt ids, or lengths differ.

    Examples:
        >>> groups = groups_from_rows(
        ...     uids=["u1", "u2", "u1", "u2", "u1"],
        ...     prompt_ids=[7, 3, 7, 3, 7],
        ...     rewards=np.array([1.0, 0.0, 0.0, 0.0, 1.0]),
        ...     losses=np.array([0.5, 0.9, 0.3, 0.7, 0.1]),
        ... )
        >>> for uid, group in groups.items():
        ...     print(uid, group.prompt_id, group.rewards, round(group.loss, 3))
        u1 7 [1. 0. 1.] 0.3
        u2 3 [0. 0.] 0.8
        >>> groups_from_rows(uids=["u1", "u1"], prompt_ids=[7, 8], rewards=np.zeros(2))
        Traceback (most recent call last):
        ...
        ValueError: gdro: uid 'u1' has rows of prompt ids 7 and 8
    """
    if not len(uids) == len(prompt_ids) == len(rewards):
        raise ValueError(
            f"gdro: {len(uids)} uids, {len(prompt_ids)} prompt ids and {len(rewards)} rewards"
        )
    rows: dict[str, list[int]] = {}
    pid_of: dict[str, int] = {}
    for i, (uid, pid) in enumerate(zip(uids, prompt_ids, strict=True)):
        key = str(uid)
        if pid_of.setdefault(key, int(pid)) != int(pid):
            raise ValueError(f"gdro: uid {key!r} has rows of prompt ids {pid_of[key]} and {pid}")
        rows.setdefault(key, []).append(i)
    out: dict[str, Group] = {}
    for key, idx in rows.items():
        loss = None if losses is None else float(np.mean(losses[idx]))
        out[key] = Group(prompt_id=pid_of[key], rewards=rewards[idx], loss=loss)
    return out


def groups_from_batch(
    data: Any, *, uid_prompt: Mapping[str, int], correctness: str, loss_key: str | None
) -> dict[str, Group]:
    """Groups from a post-reward V0 ``DataProto`` (one row per response).

    Args:
        data: ``DataProto`` with ``non_tensor_batch["uid"]``, ``batch["token_level_scores"]`` and,
            when the scorer reports it, ``non_tensor_batch["acc"]``.
        uid_prompt: uid -> prompt id bound before generation; used when rows carry no stamp.
        correctness: See :func:`choose_rewards`.
        loss_key: Optional per-response loss field in ``non_tensor_batch``.

    Returns:
        uid -> Group.

    Raises:
        ValueError: a uid has no known prompt id, or a needed field is missing.

    Examples:
        Four responses of two prompts; the scorer reports no ``acc``, so the reward is the summed
        token-level score. These rows carry no ``gdro_prompt_id``, so the uids' bindings are used:

        >>> import torch
        >>> from verl import DataProto
        >>> data = DataProto.from_dict(
        ...     tensors={"token_level_scores": torch.tensor([[0, 1.0], [0, 0], [0, 0.5], [0, 0]])},
        ...     non_tensors={"uid": np.array(["a", "b", "a", "b"], dtype=object)},
        ... )
        >>> groups = groups_from_batch(
        ...     data, uid_prompt={"a": 4, "b": 9}, correctness="auto", loss_key=None
        ... )
        >>> {uid: (g.prompt_id, g.rewards.tolist()) for uid, g in groups.items()}
        {'a': (4, [1.0, 0.5]), 'b': (9, [0.0, 0.0])}
        >>> groups_from_batch(data, uid_prompt={"a": 4}, correctness="auto", loss_key=None)
        Traceback (most recent call last):
        ...
        ValueError: gdro: uid 'b' has no gdro_prompt_id stamp or binding
    """
    ntb = data.non_tensor_batch
    uids = [str(u) for u in ntb["uid"]]
    if PROMPT_ID_FIELD in ntb:
        prompt_ids = [int(p) for p in ntb[PROMPT_ID_FIELD]]
    else:
        unknown = [u for u in uids if u not in uid_prompt]
        if unknown:
            raise ValueError(f"gdro: uid {unknown[0]!r} has no {PROMPT_ID_FIELD} stamp or binding")
        prompt_ids = [uid_prompt[u] for u in uids]
    scores = data.batch["token_level_scores"].sum(dim=-1).double().cpu().numpy()
    rewards = choose_rewards(acc=ntb.get("acc"), scores=scores, correctness=correctness)
    losses = None
    if loss_key is not None:
        if loss_key not in ntb:
            raise ValueError(f"data.gdro.loss_key={loss_key!r} is not a field of the scored batch")
        losses = np.asarray(ntb[loss_key], dtype=np.float64)
    return groups_from_rows(uids=uids, prompt_ids=prompt_ids, rewards=rewards, losses=losses)


def step_metrics(
    *,
    rollouts: NDArray[np.int64],
    n_correct: NDArray[np.int64],
    controller_metrics: Mapping[str, float],
    ks: Sequence[int],
    missing: int = 0,
) -> dict[str, float]:
    """The step's metrics, all under ``gdro/``.

    Args:
        rollouts: int64 (N,) rollouts per prompt.
        n_correct: int64 (N,) correct rollouts per prompt.
        controller_metrics: ``GDROController.metrics()``.
        ks: k values for the unbiased ``gdro/pass@k`` (each <= min rollouts).
        missing: Rollouts planned but not returned (failed sessions).

    Returns:
        ``gdro/<controller key>`` for each controller metric, plus ``gdro/pass@k`` (mean over
        prompts of the unbiased estimator ``1 - C(n-c, k)/C(n, k)``), ``gdro/solve_rate``
        (mean per-prompt fraction correct: every prompt weighs the same, unlike verl's
        ``critic/score/mean``), ``gdro/solved_none`` and ``gdro/solved_all`` (fractions of prompts)
        and ``gdro/missing_rollouts``. No key contains the words verl's V1 metric aggregator
        reads as max/min/sum reducers.

    Examples:
        Three prompts: none, half and all of their rollouts correct; one rollout went missing:

        >>> metrics = step_metrics(
        ...     rollouts=np.array([4, 4, 2]),
        ...     n_correct=np.array([0, 2, 2]),
        ...     controller_metrics={"prompt/entropy": 1.5},
        ...     ks=[1, 2],
        ...     missing=1,
        ... )
        >>> for key, value in metrics.items():
        ...     print(f"{key}: {value:.3f}")
        gdro/prompt/entropy: 1.500
        gdro/pass@1: 0.500
        gdro/pass@2: 0.611
        gdro/solve_rate: 0.500
        gdro/solved_none: 0.333
        gdro/solved_all: 0.333
        gdro/missing_rollouts: 1.000
    """
    from gdro_core.metrics import adapter_metrics

    return adapter_metrics(
        rollouts=rollouts,
        n_correct=n_correct,
        controller_metrics=dict(controller_metrics),
        ks=list(ks),
        missing=missing,
    )
