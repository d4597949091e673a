"""Every place where gdro_verl patches verl, in one module.

verl's extension points move between releases (see ``docs/verl.md``), so the adapter keeps its
contact surface small and duck-typed:

* **Sampler factory.** verl 0.9 builds the train sampler with
  ``verl.trainer.ppo.utils.create_rl_sampler``, imported *by name* into the V1 ``trainer_base``, the
  V0 ``ray_trainer`` and ``main_ppo_v0``. :func:`install_sampler_factory` rebinds that name in every
  loaded module to a wrapper that returns :class:`~gdro_verl.sampler.GDROSampler` for a gdro train
  dataset (recognised by its marker attribute) and defers to verl otherwise.
* **Dispatch (V1).** ``PPOTrainer._submit_batch_to_rollout`` is wrapped to bind each dispatched
  uid to its prompt id, so a group whose sessions all failed can still be named.
* **Advantage weights (V0 and V1).** Prompt-GDRO's per-prompt multipliers are applied after verl's own
  GRPO advantage computation, looked up by ``uid``: V1 wraps ``compute_advantage_for_multi_trajectories``
  as bound in ``trainer_base``; V0 wraps ``compute_advantage`` as bound in ``ray_trainer``. With a
  colocated reward model (V1), whose scores exist only after the replay buffer's ``sample``, the V1
  wrapper also feeds the scores back.
* **Variable rollout counts and feedback (V0 only).** V0's ``fit()`` repeats every prompt
  ``rollout.n`` times. The wrapped ``RayPPOTrainer._get_gen_batch`` gives the step's two batches a
  ``repeat`` that calls ``DataProto.sample_level_repeat`` with the planned counts; the wrapped
  ``compute_advantage`` feeds rewards back (before the checkpoint, so resumes are exact). V0 skips
  restoring the dataloader when a checkpoint falls on an epoch boundary; the wrapped
  ``_load_checkpoint`` then restores the controller from ``data.pt`` itself.
* **Metrics (V0 and V1).** The wrapped ``compute_data_metrics`` adds the controller's metrics of a
  plan completed since they were last logged.

Every wrapper is inert for batches that carry no gdro stamp and when no gdro train dataset exists in
the process, so installing them never changes a run that does not use gdro. Installation is
idempotent; :func:`uninstall` restores verl's functions (tests use it).

Every target, and the private methods of verl's replay buffer that :mod:`gdro_verl.replay_buffer`
overrides, is checked by name and signature (:data:`VERL_API`) before anything is patched: a verl
release that renamed one fails with an ``ImportError`` naming it, instead of training silently
without weights or feedback.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import logging
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

from gdro_verl import _compat, feedback, runtime

__all__ = [
    "VERL_API",
    "check_verl_api",
    "install_sampler_factory",
    "install_trainer_hooks",
    "restore_runtime_from_checkpoint",
    "uninstall",
]

logger = logging.getLogger(__name__)

#: Attribute marking a function as a gdro wrapper (holds the wrapped original).
_WRAPPED_ATTR = "__gdro_wrapped__"
# (module name, attribute) -> original object, for uninstall().
_ORIGINALS: dict[tuple[str, str], Any] = {}
# True while the V1 advantage wrapper runs: V1 calls V0's compute_advantage on a sub-batch, and
# the weights must be applied once, to the V1 result.
_IN_V1_ADVANTAGE: contextvars.ContextVar[bool] = contextvars.ContextVar("gdro_in_v1", default=False)

_SAMPLER_FACTORY_MODULES = (
    "verl.trainer.ppo.utils",
    "verl.trainer.ppo.v1.trainer_base",
    "verl.trainer.ppo.ray_trainer",
    "verl.trainer.main_ppo_v0",
    "verl.experimental.fully_async_policy.fully_async_rollouter",
    "verl.experimental.one_step_off_policy.main_ppo",
)
_V1 = "verl.trainer.ppo.v1.trainer_base"
_V0 = "verl.trainer.ppo.ray_trainer"


# --------------------------------------------------------------------------- patching helpers

_UTILS = "verl.trainer.ppo.utils"
_V0_MAIN = "verl.trainer.main_ppo_v0"
_BUFFER = "verl.trainer.ppo.v1.replay_buffer"
_SAMPLER_NEED = _compat.Need("create_rl_sampler", ("data_config", "dataset"))
#: What gdro_verl uses of each verl module, checked before anything is patched (a renamed target
#: must fail loudly: skipping it would train without weights or without feedback).
VERL_API: dict[str, tuple[_compat.Need, ...]] = {
    _UTILS: (_SAMPLER_NEED,),
    _V0_MAIN: (_SAMPLER_NEED,),
    _V0: (
        _SAMPLER_NEED,
        _compat.Need("compute_advantage", ("data", "adv_estimator")),
        _compat.Need("compute_data_metrics", ("batch",)),
        _compat.Need("RayPPOTrainer._get_gen_batch", ("self", "batch")),
        _compat.Need("RayPPOTrainer._load_checkpoint", ("self",)),
    ),
    _V1: (
        _SAMPLER_NEED,
        _compat.Need("compute_advantage_for_multi_trajectories", ("data", "batch_keys")),
        _compat.Need("compute_data_metrics", ("batch",)),
        _compat.Need("PPOTrainer._submit_batch_to_rollout", ("self", "batch")),
    ),
    "verl.protocol": (_compat.Need("DataProto.sample_level_repeat", ("self", "repeat_times")),),
    # gdro_verl.replay_buffer subclasses these and overrides two private methods
    _BUFFER: (
        _compat.Need(
            "ReplayBuffer.__init__",
            ("self", "trainer_mode", "trainer_config", "max_off_policy_threshold"),
            (
                "max_off_policy_strategy",
                "sampler_kwargs",
                "refill_fn",
                "filter_groups_metric",
                "train_batch_size",
                "gen_batch_size",
                "max_inflight_gen_batches",
                "sync_refill_failed_groups",
            ),
        ),
        _compat.Need("ReplayBuffer.sample", ("self", "global_steps", "partition_id", "batch_size")),
        _compat.Need(
            "ReplayBuffer._materialize_batch",
            ("self", "partition_id", "selected_prompt_uids", "partition_snapshot"),
        ),
        _compat.Need("ReplayBuffer._clear_groups", ("self", "partition_id", "uids")),
        _compat.Need(
            "ReplayBufferAsync.sample", ("self", "global_steps", "partition_id", "batch_size")
        ),
    ),
}


def check_verl_api(module_names: Iterable[str]) -> None:
    """Check every loaded module of ``module_names`` against :data:`VERL_API`, all at once.

    Modules that are not loaded are skipped (their optional dependencies may be missing).

    Raises:
        ImportError: naming every missing target or changed signature, and the verl version
            this adapter is tested with.

    Examples:
        >>> import verl.trainer.ppo.utils
        >>> check_verl_api(["verl.trainer.ppo.utils", "verl.protocol"])
    """
    gaps = []
    for name in module_names:
        module = sys.modules.get(name)
        if module is not None:
            gaps += _compat.api_gaps(module, VERL_API[name])
    if gaps:
        raise _compat.api_error(gaps)


def _rebind(module_name: str, attr: str, make: Callable[[Any], Any]) -> None:
    """Replace ``module.attr`` by ``make(original)`` once (the module is loaded and checked)."""
    module = sys.modules[module_name]
    current = getattr(module, attr)
    if getattr(current, _WRAPPED_ATTR, None) is not None:
        return
    _ORIGINALS.setdefault((module_name, attr), current)
    wrapper = make(current)
    setattr(wrapper, _WRAPPED_ATTR, current)
    setattr(module, attr, wrapper)


def _rebind_method(module_name: str, cls_name: str, meth: str, make: Callable[[Any], Any]) -> None:
    """Replace ``module.cls.meth`` by ``make(original)`` once (the module is loaded and checked)."""
    cls = getattr(sys.modules[module_name], cls_name)
    current = cls.__dict__.get(meth, getattr(cls, meth))
    if getattr(current, _WRAPPED_ATTR, None) is not None:
        return
    _ORIGINALS.setdefault((module_name, f"{cls_name}.{meth}"), current)
    wrapper = make(current)
    setattr(wrapper, _WRAPPED_ATTR, current)
    setattr(cls, meth, wrapper)


def _import_optional(module_name: str) -> bool:
    """Import a verl module if its optional dependencies are installed."""
    try:
        importlib.import_module(module_name)
    except ImportError as err:
        logger.debug("gdro_verl: %s not importable (%s); its hooks are skipped", module_name, err)
        return False
    return True


def uninstall() -> None:
    """Restore every verl function gdro_verl wrapped (for tests and clean shutdown).

    Examples:
        >>> install_sampler_factory()
        >>> import verl.trainer.ppo.utils as ppo_utils
        >>> hasattr(ppo_utils.create_rl_sampler, "__gdro_wrapped__")
        True
        >>> uninstall()
        >>> hasattr(ppo_utils.create_rl_sampler, "__gdro_wrapped__")
        False
    """
    for (module_name, attr), original in list(_ORIGINALS.items()):
        owner: Any = sys.modules.get(module_name)
        if "." in attr:  # "Class.method"
            cls_name, meth = attr.split(".", 1)
            if owner is not None and hasattr(owner, cls_name):
                setattr(getattr(owner, cls_name), meth, original)
        elif owner is not None:
            setattr(owner, attr, original)
    _ORIGINALS.clear()


# --------------------------------------------------------------------------- sampler factory


def _make_sampler_factory(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def create_rl_sampler(data_config: Any, dataset: Any) -> Any:
        if getattr(dataset, _compat.DATASET_MARKER, False) and dataset.runtime is not None:
            from gdro_verl.sampler import GDROSampler

            return GDROSampler(dataset)
        return original(data_config, dataset)

    return create_rl_sampler


def install_sampler_factory() -> None:
    """Route ``create_rl_sampler`` to gdro for gdro train datasets, in every loaded verl module.

    ``verl.trainer.ppo.utils`` is imported if needed; the trainer modules are patched only when
    already loaded (a module imported later binds the patched name from ``utils``).

    Raises:
        ImportError: a loaded trainer module no longer has ``create_rl_sampler(data_config,
            dataset)`` (see :func:`check_verl_api`).

    Examples:
        >>> install_sampler_factory()
        >>> from verl.trainer.ppo import utils
        >>> utils.create_rl_sampler.__name__, hasattr(utils.create_rl_sampler, "__gdro_wrapped__")
        ('create_rl_sampler', True)
        >>> uninstall()
    """
    if not _import_optional(_UTILS):
        raise ImportError(f"gdro_verl: {_UTILS} cannot be imported (is verl installed?)")
    required = [name for name in _SAMPLER_FACTORY_MODULES if name in VERL_API]
    check_verl_api(required)
    for name in _SAMPLER_FACTORY_MODULES:
        module = sys.modules.get(name)
        # the experimental entry points may build their samplers another way: patched if bound
        if module is not None and (name in required or hasattr(module, "create_rl_sampler")):
            _rebind(name, "create_rl_sampler", _make_sampler_factory)


# --------------------------------------------------------------------------- V1


def _column(batch: Any, key: str) -> list[Any]:
    """A TensorDict column (tensor or NonTensorStack) as a per-row list."""
    value = batch.get(key)
    tolist = getattr(value, "tolist", None)
    return list(tolist()) if tolist is not None else list(value)


def _wrap_submit(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def _submit_batch_to_rollout(self: Any, batch: Any) -> Any:
        rt = runtime.active()
        if rt is not None and _compat.PROMPT_ID_FIELD in batch.keys():
            rt.register_batch(_column(batch, "uid"), _column(batch, _compat.PROMPT_ID_FIELD))
        return original(self, batch)

    return _submit_batch_to_rollout


def _make_v1_advantage(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def compute_advantage_for_multi_trajectories(data: Any, *args: Any, **kwargs: Any) -> Any:
        token = _IN_V1_ADVANTAGE.set(True)
        try:
            out = original(data, *args, **kwargs)
        finally:
            _IN_V1_ADVANTAGE.reset(token)
        rt = runtime.active()
        if rt is None or not rt.owns_batch(out):
            return out
        if rt.feedback_at_advantage:
            keys = kwargs["batch_keys"] if "batch_keys" in kwargs else args[0]
            rt.feedback_groups(_scored_groups(rt, out, [str(k) for k in keys]))
        rt.apply_weights(out)
        return out

    return compute_advantage_for_multi_trajectories


def _scored_groups(rt: Any, data: Any, keys: list[str]) -> dict[str, feedback.Group]:
    """Groups from V1's advantage batch: each session's last output, scored by ``rm_scores``."""
    scores = data.batch["token_level_scores"].sum(dim=-1).double().cpu().numpy()
    row_of = {key: i for i, key in enumerate(keys)}
    finals = [
        k for k in feedback.final_output_keys(keys) if not k.startswith(_compat.PADDING_UID_PREFIX)
    ]
    uids = [k.rsplit("_", 2)[0] for k in finals]
    prompt_ids = []
    for uid in uids:
        pid = rt.prompt_of(uid)
        if pid is None:
            raise ValueError(
                f"gdro: uid {uid!r} of the advantage batch was never dispatched by gdro"
            )
        prompt_ids.append(pid)
    rewards = feedback.choose_rewards(
        acc=None, scores=[float(scores[row_of[k]]) for k in finals], correctness="score"
    )
    return feedback.groups_from_rows(uids=uids, prompt_ids=prompt_ids, rewards=rewards)


# --------------------------------------------------------------------------- V0


def _make_v0_advantage(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def compute_advantage(data: Any, *args: Any, **kwargs: Any) -> Any:
        out = original(data, *args, **kwargs)
        rt = runtime.active()
        if rt is not None and not _IN_V1_ADVANTAGE.get() and rt.owns_batch(out):
            rt.apply_weights(out)
            rt.feedback_from_batch(out)
        return out

    return compute_advantage


def _make_data_metrics(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def compute_data_metrics(*args: Any, **kwargs: Any) -> Any:
        metrics = original(*args, **kwargs)
        rt = runtime.active()
        if rt is not None:
            metrics.update(rt.pop_metrics())
        return metrics

    return compute_data_metrics


def _planned_repeat(dp: Any, counts: Any, expected_n: int) -> Callable[..., Any]:
    """A ``repeat`` for one V0 batch: ``sample_level_repeat`` with the planned counts."""
    from verl import DataProto

    def repeat(repeat_times: int = 2, interleave: bool = True) -> Any:
        if int(repeat_times) != expected_n or not interleave:
            raise ValueError(
                "gdro: V0 fit() repeated a planned batch with "
                f"repeat(repeat_times={repeat_times}, interleave={interleave}); expected "
                f"repeat_times == actor_rollout_ref.rollout.n == {expected_n} with interleave=True. "
                "Set actor_rollout_ref.rollout.n to data.gdro.rollout.mean."
            )
        out = DataProto.sample_level_repeat(dp, counts)  # type: ignore[no-untyped-call]
        return DataProto(
            batch=out.batch, non_tensor_batch=out.non_tensor_batch, meta_info=out.meta_info
        )

    return repeat


def _wrap_get_gen_batch(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def _get_gen_batch(self: Any, batch: Any) -> Any:
        rt = runtime.active()
        if rt is None or _compat.PROMPT_ID_FIELD not in batch.non_tensor_batch:
            return original(self, batch)
        counts = rt.register_batch(
            uids=batch.non_tensor_batch["uid"],
            prompt_ids=batch.non_tensor_batch[_compat.PROMPT_ID_FIELD],
        )
        gen_batch = original(self, batch)
        # V0's agent loop passes unknown row fields to the agent as kwargs; the count is ours.
        gen_batch.non_tensor_batch.pop(_compat.ROLLOUT_N_FIELD, None)
        batch.non_tensor_batch.pop(_compat.ROLLOUT_N_FIELD, None)
        for dp in (batch, gen_batch):
            # An instance attribute shadows DataProto.repeat for exactly these two objects.
            dp.repeat = _planned_repeat(dp, counts, rt.mean)
        return gen_batch

    return _get_gen_batch


def restore_runtime_from_checkpoint(folder: str, runtime_: Any) -> bool:
    """Load the controller state from ``folder/data.pt`` into ``runtime_``.

    For verl V0, which skips restoring the dataloader when a checkpoint falls on an epoch
    boundary (the saved loader is exhausted): the controller must still resume.

    Returns:
        Whether a gdro state was found and loaded.

    Examples:
        >>> import tempfile
        >>> import torch
        >>> from gdro_verl.config import GDROSettings
        >>> from gdro_verl.runtime import GDRORuntime
        >>> settings = GDROSettings.from_data_config({"gdro": {"rollout": {"mean": 4}}})
        >>> rt = GDRORuntime(settings, num_prompts=8, block_size=4)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     missing = restore_runtime_from_checkpoint(folder, rt)
        ...     loader_state = {"_index_sampler_state": {"yielded": 0, "runtime": rt.state_dict()}}
        ...     torch.save(loader_state, f"{folder}/data.pt")  # what verl writes
        ...     found = restore_runtime_from_checkpoint(folder, rt)
        >>> missing, found
        (False, True)
    """
    import torch

    path = os.path.join(folder, "data.pt")
    if not os.path.exists(path):
        return False
    state = _compat.sampler_state_of(torch.load(path, weights_only=False))
    if state is None:
        return False
    runtime_.load_state_dict(state["runtime"])
    return True


def _wrap_v0_load_checkpoint(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def _load_checkpoint(self: Any) -> Any:
        out = original(self)
        rt = runtime.active()
        steps = len(self.train_dataloader) if rt is not None else 0
        if (
            rt is not None
            and self.global_steps > 0
            and steps > 0
            and self.global_steps % steps == 0
        ):
            # verl skipped the dataloader restore at this epoch boundary; restore the controller
            folder = _compat.checkpoint_folder(self.config, self.global_steps)
            if folder is not None and restore_runtime_from_checkpoint(folder, rt):
                logger.info("gdro: controller restored from %s (epoch boundary)", folder)
        return out

    return _load_checkpoint


# --------------------------------------------------------------------------- installation


def install_trainer_hooks() -> None:
    """Install the dispatch, advantage-weight, feedback and metrics hooks (V0 and V1).

    Called when a gdro train dataset is built, i.e. inside the process that runs the trainer
    (verl's TaskRunner actor), after verl has imported its trainer modules. A trainer whose
    optional dependencies are missing is skipped; every target of the others is checked
    (:data:`VERL_API`, the replay buffer gdro subclasses included) before anything is patched.

    Raises:
        ImportError: a hook target is missing or its signature changed; nothing is patched then.

    Examples:
        >>> install_trainer_hooks()
        >>> from verl.trainer.ppo import ray_trainer
        >>> hasattr(ray_trainer.compute_advantage, "__gdro_wrapped__")
        True
        >>> uninstall()
    """
    # V1 first: v1.utils binds ray_trainer.compute_advantage at import, and must bind verl's own.
    has_v1 = _import_optional(_V1) and _import_optional(_BUFFER)
    has_v0 = _import_optional(_V0)
    _import_optional("verl.protocol")
    check_verl_api(
        [_UTILS, "verl.protocol", *([_V1, _BUFFER] if has_v1 else []), *([_V0] if has_v0 else [])]
    )
    install_sampler_factory()
    if has_v0:
        _rebind(_V0, "compute_advantage", _make_v0_advantage)
        _rebind(_V0, "compute_data_metrics", _make_data_metrics)
        _rebind_method(_V0, "RayPPOTrainer", "_get_gen_batch", _wrap_get_gen_batch)
        _rebind_method(_V0, "RayPPOTrainer", "_load_checkpoint", _wrap_v0_load_checkpoint)
    if has_v1:
        _rebind(_V1, "compute_advantage_for_multi_trajectories", _make_v1_advantage)
        _rebind(_V1, "compute_data_metrics", _make_data_metrics)
        _rebind_method(_V1, "PPOTrainer", "_submit_batch_to_rollout", _wrap_submit)
