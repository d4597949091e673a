"""verl V1 feedback: a ``ReplayBuffer`` that reports each group's outcome to the controller.

Select it with::

    trainer.v1.sampler.custom_sampler.path=pkg://gdro_verl.replay_buffer
    trainer.v1.sampler.custom_sampler.name=GDROReplayBuffer

verl builds the buffer of every V1 trainer mode from that one class path; :class:`GDROReplayBuffer`
becomes :class:`GDROReplayBufferAsync` (verl's ``ReplayBufferAsync`` plus the same feedback) in the
async modes. verl hands a custom buffer none of its group-filtering settings, so the buffer reads
``algorithm.filter_groups`` and ``trainer.v1.sampler.sync_refill_failed_groups`` from the config
itself and passes them to verl's own sampling code.

Every train group the trainer dispatched ends in exactly one of two places, and is fed back there,
keyed by its ``gdro_prompt_id``:

* **selected** for an optimiser step (``sample``): its scores are fed back before the trainer
  asks the dataloader for more prompts and before the step's checkpoint;
* **cleared** without training (``_clear_groups``): DAPO-filtered groups, a sync DAPO step's
  surplus and async groups past the off-policy bound are fed back (their rewards are real
  outcomes); a group whose sessions all failed is cancelled, and verl refills it. With a
  colocated reward model (scores exist only at the advantage step) a cleared group has no score
  yet: it is cancelled too (``colocate_async`` groups past the off-policy bound).

Each ``sample`` call also logs the optimiser step's realised budget against the target
(``gdro/budget/*``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from gdro_verl import _compat

_compat.require_verl()

import transfer_queue as tq  # noqa: E402
import verl.trainer.ppo.v1.replay_buffer as _verl_buffer  # noqa: E402
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer, ReplayBufferAsync  # noqa: E402

from gdro_verl import feedback, hooks  # noqa: E402
from gdro_verl import runtime as _runtime  # noqa: E402
from gdro_verl.feedback import Group  # noqa: E402

__all__ = ["GDROReplayBuffer", "GDROReplayBufferAsync"]

# The classes below override private methods of verl's buffer: fail at import if they moved.
_compat.require_api(_verl_buffer, hooks.VERL_API[_verl_buffer.__name__])

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


def _read_groups(
    keys: Sequence[str], *, partition_id: str, correctness: str, loss_key: str | None
) -> dict[str, Group]:
    """Read the scored sessions of ``keys`` from TransferQueue and group them by uid.

    Args:
        keys: Trajectory keys ``f"{uid}_{session}_{index}"`` (all outputs of the sessions).
        partition_id: TransferQueue partition (``"train"``).
        correctness: ``data.gdro.correctness``.
        loss_key: ``data.gdro.loss_key`` (a ``reward_extra_info`` field) or None.

    Returns:
        uid -> Group, one reward per session (its last output's).

    Raises:
        ValueError: trajectories carry no ``gdro_prompt_id`` (the dataset is not gdro's), or a key
            does not match its row's uid.
    """
    finals = feedback.final_output_keys(keys)
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


def _filter_kwargs(trainer_mode: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The group-filtering keywords verl gives its own buffer, read from the full config."""
    root = _compat.root_config(kwargs.get("trainer_config")) or _compat.root_config(
        kwargs.get("sampler_kwargs")
    )
    if root is None or "filter_groups_metric" in kwargs:
        return {}
    dapo = bool(_compat.select(root, "algorithm.filter_groups.enable", False))
    metric = _compat.select(root, "algorithm.filter_groups.metric") if dapo else None
    refill = bool(_compat.select(root, "trainer.v1.sampler.sync_refill_failed_groups", False))
    out: dict[str, Any] = {
        "filter_groups_metric": None if metric is None else str(metric),
        "sync_refill_failed_groups": refill,
    }
    if trainer_mode == "sync":
        train_batch_size = int(_compat.select(root, "data.train_batch_size"))
        gen_batch_size = _compat.select(root, "data.gen_batch_size") or train_batch_size
        out.update(
            train_batch_size=train_batch_size,
            gen_batch_size=1 if dapo or refill else int(gen_batch_size),
            max_inflight_gen_batches=int(
                _compat.select(root, "algorithm.filter_groups.max_inflight_gen_batches", 1)
            )
            if dapo
            else 1,
        )
    return out


class GDROReplayBuffer(ReplayBuffer):
    """verl's ``ReplayBuffer`` plus controller feedback for the ``"train"`` partition.

    Constructed by verl with the keywords of ``ReplayBuffer`` (``trainer_mode``,
    ``trainer_config``, ``max_off_policy_threshold``, ``max_off_policy_strategy``,
    ``sampler_kwargs``, ``refill_fn``); in an async ``trainer_mode`` the instance is a
    :class:`GDROReplayBufferAsync`. Validation batches (``partition_id="val"``) pass through
    untouched.

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
        >>> buffer.trainer_mode, type(buffer).__name__, isinstance(buffer, ReplayBuffer)
        ('sync', 'GDROReplayBuffer', True)
        >>> buffer = GDROReplayBuffer(trainer_mode="colocate_async", **kwargs)
        >>> type(buffer).__name__, isinstance(buffer, ReplayBufferAsync)
        ('GDROReplayBufferAsync', True)
    """

    __gdro_replay_buffer__ = True

    def __new__(cls, *args: Any, **kwargs: Any) -> GDROReplayBuffer:
        mode = kwargs.get("trainer_mode", args[0] if args else "sync")
        if cls is GDROReplayBuffer and mode != "sync":
            cls = GDROReplayBufferAsync
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args:  # verl passes keywords; accept ReplayBuffer's positional order too
            names = ("trainer_mode", "trainer_config", "max_off_policy_threshold")
            kwargs.update(dict(zip(names, args, strict=False)))
            args = args[len(names) :]
        kwargs.update(_filter_kwargs(str(kwargs.get("trainer_mode")), kwargs))
        super().__init__(*args, **kwargs)
        if not isinstance(getattr(self, "partitions", None), dict):
            # _keep_cleared reads the trajectory keys of the groups verl clears from it
            raise _compat.api_error(["ReplayBuffer instances have no dict 'partitions'"])
        self._selected: list[str] | None = None  # set by _materialize_batch during sample()
        self._cleared: dict[str, Group] = {}  # dropped groups, fed back at the end of sample()
        self._silent: set[str] = set()  # dropped groups without any rollout: cancelled then

    def _materialize_batch(
        self,
        partition_id: str,
        selected_prompt_uids: list[str],
        partition_snapshot: dict[str, dict[str, Any]],
    ) -> Any:
        self._selected = list(selected_prompt_uids)
        return super()._materialize_batch(partition_id, selected_prompt_uids, partition_snapshot)

    def _clear_groups(self, partition_id: str, uids: set[str]) -> None:
        if partition_id == "train" and uids:
            self._keep_cleared(partition_id, uids)
        super()._clear_groups(partition_id, uids)

    def _keep_cleared(self, partition_id: str, uids: Iterable[str]) -> None:
        """Read the outcomes of groups verl is about to drop before training."""
        rt = _runtime.require_active()
        uids = set(uids)
        groups: dict[str, Group] = {}
        if not rt.feedback_at_advantage:  # a colocated reward model has not scored them yet
            keys = [k for k in self.partitions[partition_id] if k.split("_")[0] in uids]
            groups = _read_groups(
                keys,
                partition_id=partition_id,
                correctness=rt.settings.correctness,
                loss_key=rt.settings.loss_key,
            )
        self._cleared.update(groups)
        self._silent.update(uids - set(groups))

    def sample(
        self, global_steps: int, partition_id: str, batch_size: int
    ) -> tuple[Any, dict[str, Any]]:
        """verl's ``sample``; for ``"train"``, also feed back every group it ended.

        The selected groups and those verl dropped while sampling are fed back in one call, so the
        controller's state does not depend on which of several equally old groups verl picked.
        Groups without any rollout are cancelled (verl refills them when
        ``sync_refill_failed_groups`` is set, and trains on nothing of them otherwise).

        Returns:
            The batch metadata and verl's metrics, plus the optimiser step's budget
            (``gdro/budget/{planned,realised,target}``: planned and returned rollouts of the
            selected groups, and ``batch_size`` times the mean) and the ``gdro/`` metrics of any
            plan that completed.
        """
        self._selected = None
        meta, metrics = super().sample(global_steps, partition_id, batch_size)
        selected, self._selected = self._selected, None
        if selected is None:
            raise RuntimeError(
                "gdro: verl's ReplayBuffer.sample returned a batch without calling "
                "_materialize_batch, so gdro cannot tell which groups it selected; gdro_verl is "
                f"tested with verl {', '.join('.'.join(map(str, v)) for v in _compat.TESTED_VERL)}"
            )
        if partition_id != "train":
            return meta, metrics
        rt = _runtime.require_active()
        keys = [k for k in meta.keys if not k.startswith(_compat.PADDING_UID_PREFIX)]
        with_rollouts = {k.rsplit("_", 2)[0] for k in keys}
        groups: dict[str, Group] = {}
        if not rt.feedback_at_advantage:  # else the scores exist only at the advantage step
            groups = _read_groups(
                keys,
                partition_id=partition_id,
                correctness=rt.settings.correctness,
                loss_key=rt.settings.loss_key,
            )
        planned = 0
        for uid in selected:
            pid = groups[uid].prompt_id if uid in groups else rt.prompt_of(uid)
            if pid is None:
                raise ValueError(f"gdro: selected group {uid!r} was never dispatched by gdro")
            planned += rt.planned_rollouts(pid)
            if uid not in with_rollouts:  # every session failed: nothing to train on
                self._silent.add(uid)
        self._flush(rt, groups)
        budget = {
            "gdro/budget/planned": float(planned),
            "gdro/budget/realised": float(len(feedback.final_output_keys(keys))),
            "gdro/budget/target": float(batch_size * rt.mean),
        }
        return meta, {**metrics, **budget, **rt.pop_metrics()}

    def _flush(self, rt: Any, selected: dict[str, Group]) -> None:
        """Feed back the selected and the dropped groups at once; cancel those without rollouts."""
        cleared, silent = self._cleared, self._silent
        self._cleared, self._silent = {}, set()
        rt.feedback_groups({**cleared, **selected}, untrained=set(cleared))
        prompt_ids = {uid: rt.prompt_of(uid) for uid in silent}
        unknown = sorted(uid for uid, pid in prompt_ids.items() if pid is None)
        if unknown:
            raise ValueError(f"gdro: group {unknown[0]!r} was never dispatched by gdro")
        rt.cancel(sorted(int(pid) for pid in prompt_ids.values() if pid is not None))


class GDROReplayBufferAsync(GDROReplayBuffer, ReplayBufferAsync):
    """verl's ``ReplayBufferAsync`` (the async trainer modes) with :class:`GDROReplayBuffer`'s feedback.

    Examples:
        >>> from omegaconf import OmegaConf
        >>> buffer = GDROReplayBufferAsync(
        ...     trainer_mode="separate_async",
        ...     trainer_config=OmegaConf.create({}),
        ...     max_off_policy_threshold=4,
        ...     max_off_policy_strategy="drop",
        ...     sampler_kwargs=OmegaConf.create({}),
        ... )
        >>> hasattr(buffer, "wait_for_sampleable"), buffer.max_off_policy_threshold
        (True, 4)
    """
