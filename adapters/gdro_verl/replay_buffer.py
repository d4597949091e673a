"""verl V1 feedback: a ``ReplayBuffer`` that reports each step's scored groups to the controller.

Select it with::

    trainer.v1.sampler.custom_sampler.path=pkg://gdro_verl.replay_buffer
    trainer.v1.sampler.custom_sampler.name=GDROReplayBuffer

In verl's ``sync`` mode, ``sample()`` returns the step's finished groups before the trainer asks the
dataloader for the next batch, so the controller has step t's rewards before it plans step t+1, and
before the step's checkpoint (resumes are exact). The returned metrics dict is merged into the
step's logged metrics by verl.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gdro_verl import _compat

_compat.require_verl()

import transfer_queue as tq  # noqa: E402
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer  # noqa: E402

from gdro_verl import feedback  # noqa: E402
from gdro_verl import runtime as _runtime  # noqa: E402
from gdro_verl.runtime import Group  # noqa: E402

__all__ = ["GDROReplayBuffer"]

_FIELDS = ("uid", _compat.PROMPT_ID_FIELD, "rm_scores", "extra_fields")


def _rows(value: Any) -> list[Any]:
    """A TensorDict column (tensor, jagged tensor or NonTensorStack) as a per-row list."""
    tolist = getattr(value, "tolist", None)
    if getattr(value, "is_nested", False):
        return list(value.unbind())
    if hasattr(value, "dim") and value.dim() > 1:
        return list(value.unbind(0))
    if tolist is not None:
        return list(tolist())
    return list(value)


def final_output_keys(keys: Sequence[str]) -> list[str]:
    """The last output of each session (the one that carries the score), in key order.

    Args:
        keys: TransferQueue keys ``f"{uid}_{session}_{index}"``.

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


def read_groups(
    keys: Sequence[str], *, partition_id: str, correctness: str, loss_key: str | None
) -> dict[str, Group]:
    """Read the scored sessions of ``keys`` from TransferQueue and group them by uid.

    Args:
        keys: The sampled batch's trajectory keys.
        partition_id: TransferQueue partition (``"train"``).
        correctness: ``data.gdro.correctness``.
        loss_key: ``data.gdro.loss_key`` (a ``reward_extra_info`` field) or None.

    Returns:
        uid -> Group, one reward per session.

    Raises:
        ValueError: trajectories carry no ``gdro_prompt_id`` (the dataset is not gdro's), or a key
            does not match its row's uid.
    """
    finals = final_output_keys(keys)
    if not finals:
        return {}
    data = tq.kv_batch_get(keys=finals, partition_id=partition_id, select_fields=list(_FIELDS))
    if _compat.PROMPT_ID_FIELD not in data.keys():
        raise ValueError(
            f"gdro: trajectories carry no {_compat.PROMPT_ID_FIELD!r}; set data.custom_cls.path="
            "pkg://gdro_verl.dataset and data.custom_cls.name=GDRODataset"
        )
    uids = [str(u) for u in _rows(data["uid"])]
    for key, uid in zip(finals, uids, strict=True):
        if key.rsplit("_", 2)[0] != uid:
            raise ValueError(f"gdro: TransferQueue key {key!r} holds a row of uid {uid!r}")
    prompt_ids = [int(p) for p in _rows(data[_compat.PROMPT_ID_FIELD])]
    scores = [float(t.float().sum()) for t in _rows(data["rm_scores"])]
    infos = [(e or {}).get("reward_extra_info") or {} for e in _rows(data["extra_fields"])]
    acc = [i["acc"] for i in infos] if infos and all("acc" in i for i in infos) else None
    rewards = feedback.choose_rewards(acc=acc, scores=scores, correctness=correctness)
    losses = None
    if loss_key is not None:
        if not all(loss_key in i for i in infos):
            raise ValueError(f"data.gdro.loss_key={loss_key!r} is missing from reward_extra_info")
        losses = np.asarray([float(i[loss_key]) for i in infos], dtype=np.float64)
    return feedback.groups_from_rows(
        uids=uids, prompt_ids=prompt_ids, rewards=rewards, losses=losses
    )


class GDROReplayBuffer(ReplayBuffer):
    """verl's sync ``ReplayBuffer`` plus controller feedback for the ``"train"`` partition.

    Constructed by verl with the keywords of ``ReplayBuffer`` (``trainer_mode``,
    ``trainer_config``, ``max_off_policy_threshold``, ``max_off_policy_strategy``,
    ``sampler_kwargs``, ``refill_fn``). Validation batches (``partition_id="val"``) pass through
    untouched.

    Raises:
        ValueError: ``trainer_mode`` is not ``"sync"``.

    Examples:
        Building one needs no cluster (``sample`` reads TransferQueue and needs a running one):

        >>> from omegaconf import OmegaConf
        >>> kwargs = dict(
        ...     trainer_config=OmegaConf.create({}),
        ...     max_off_policy_threshold=1,
        ...     max_off_policy_strategy="drop",
        ...     sampler_kwargs=OmegaConf.create({}),
        ... )
        >>> buffer = GDROReplayBuffer(trainer_mode="sync", **kwargs)
        >>> buffer.trainer_mode, isinstance(buffer, ReplayBuffer)
        ('sync', True)
        >>> GDROReplayBuffer(trainer_mode="separate_async", **kwargs)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: trainer.v1.trainer_mode must be 'sync' with gdro's replay buffer ...'separate_async'
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        mode = kwargs.get("trainer_mode", args[0] if args else None)
        if mode != "sync":
            raise ValueError(
                "trainer.v1.trainer_mode must be 'sync' with gdro's replay buffer (async modes plan "
                f"the next batch before the previous one is scored); got {mode!r}"
            )
        super().__init__(*args, **kwargs)

    def sample(
        self, global_steps: int, partition_id: str, batch_size: int
    ) -> tuple[Any, dict[str, Any]]:
        """verl's ``sample``; for ``"train"``, also score the groups and update the controller.

        Returns:
            The batch metadata and verl's metrics, plus the step's ``gdro/`` metrics on the call
            that completes the step's batch.
        """
        meta, metrics = super().sample(global_steps, partition_id, batch_size)
        if partition_id != "train":
            return meta, metrics
        rt = _runtime.require_active()
        groups = read_groups(
            meta.keys,
            partition_id=partition_id,
            correctness=rt.settings.correctness,
            loss_key=rt.settings.loss_key,
        )
        # verl selected ``batch_size`` groups; a group whose sessions all failed has no trajectory
        empty = batch_size - len(groups)
        return meta, {**metrics, **rt.feedback_groups(groups, num_empty=max(empty, 0))}
