"""Every place where gdro_verl touches verl, in one module.

verl's extension points move between releases (see ``docs/verl.md``), so the adapter keeps its
contact surface small, duck-typed and version-checked here:

* **Sampler factory.** verl 0.9 builds the train sampler with
  ``verl.trainer.ppo.utils.create_rl_sampler``, imported *by name* into the V1 ``trainer_base``, the
  V0 ``ray_trainer`` and ``main_ppo_v0``. :func:`install_sampler_factory` rebinds that name in every
  loaded module to a wrapper that returns :class:`~gdro_verl.sampler.GDROSampler` for a gdro train
  dataset and defers to verl otherwise.
* **Advantage weights (V0 and V1).** Prompt-GDRO's per-prompt multipliers are applied after verl's own
  GRPO advantage computation, looked up by ``uid``: V1 wraps ``compute_advantage_for_multi_trajectories``
  as bound in ``trainer_base``; V0 wraps ``compute_advantage`` as bound in ``ray_trainer``.
* **Variable rollout counts and feedback (V0 only).** V0's ``fit()`` repeats every prompt
  ``rollout.n`` times. The wrapped ``RayPPOTrainer._get_gen_batch`` gives the step's two batches a
  ``repeat`` that calls ``DataProto.sample_level_repeat`` with the planned counts; the wrapped
  ``compute_advantage`` feeds rewards back (before the checkpoint, so resumes are exact) and the
  wrapped ``compute_data_metrics`` returns the controller's metrics. V0 skips restoring the
  dataloader when a checkpoint falls on an epoch boundary; the wrapped ``_load_checkpoint`` then
  restores the controller from ``data.pt`` itself.

Every wrapper is inert for batches that carry no gdro stamp and when no gdro train dataset exists in
the process, so installing them never changes a run that does not use gdro. Installation is
idempotent; :func:`uninstall` restores verl's functions (tests use it).
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import logging
import sys
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

#: verl releases this adapter is written and tested against (major, minor).
TESTED_VERL = ((0, 9),)
#: Row field holding the stable prompt id (the dataset position of the prompt).
PROMPT_ID_FIELD = "gdro_prompt_id"
#: Row field V1's agent loop pops to decide how many sessions a prompt gets.
ROLLOUT_N_FIELD = "__rollout_n__"
#: verl V1 pads uneven batches with synthetic rows whose uid is ``f"pad{uuid4().hex}"``
#: (``trainer/ppo/padding_utils.py``); real uids are ``str(uuid4())``, which never start so.
PADDING_UID_PREFIX = "pad"
#: Attribute marking a function as a gdro wrapper (holds the wrapped original).
_WRAPPED_ATTR = "__gdro_wrapped__"

# (module name, attribute) -> original object, for uninstall().
_ORIGINALS: dict[tuple[str, str], Any] = {}
# True while the V1 advantage wrapper runs: V1 calls V0's compute_advantage on a sub-batch, and
# the weights must be applied once, to the V1 result.
_IN_V1_ADVANTAGE: contextvars.ContextVar[bool] = contextvars.ContextVar("gdro_in_v1", default=False)


def require_verl() -> Any:
    """Import verl or fail with the install hint.

    Returns:
        The ``verl`` module.

    Raises:
        ImportError: verl is not installed; the message names the ``gdro[verl]`` extra.
    """
    try:
        import verl
    except ImportError as err:  # pragma: no cover - exercised only without verl
        raise ImportError(
            "gdro_verl needs verl; install the extra: pip install 'gdro[verl]' "
            "(verl==0.9.1; install torch first, see docs/verl.md)"
        ) from err
    return verl


def verl_version() -> tuple[int, int, int]:
    """The installed verl version as ``(major, minor, patch)``; pre-release tags are dropped."""
    verl = require_verl()
    parts = []
    for piece in str(verl.__version__).split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


def is_tested_version() -> bool:
    """Whether the installed verl's (major, minor) is one this adapter is tested against."""
    return verl_version()[:2] in TESTED_VERL


def root_config(node: Any) -> Any | None:
    """The root of an OmegaConf node (verl passes ``config.data``), or None when detached.

    Args:
        node: A ``DictConfig`` (``data`` section) or any mapping.

    Returns:
        The root ``DictConfig`` when ``node`` is a child of a larger config, else None.
    """
    get_root = getattr(node, "_get_root", None)
    if get_root is None:
        return None
    try:
        root = get_root()
    except Exception:  # noqa: BLE001 - a detached or plain node has no usable root
        return None
    return None if root is node else root


def select(cfg: Any, key: str, default: Any = None) -> Any:
    """``OmegaConf.select`` for DictConfigs, a dotted ``get`` walk for plain mappings."""
    if cfg is None:
        return default
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.select(cfg, key, default=default)
    except ImportError:  # pragma: no cover - omegaconf comes with verl
        pass
    node = cfg
    for part in key.split("."):
        if node is None or not hasattr(node, "get"):
            return default
        node = node.get(part)
    return default if node is None else node


def to_plain(value: Any) -> Any:
    """An OmegaConf container as plain dicts/lists (resolved); other values unchanged."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, DictConfig | ListConfig):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return value


# --------------------------------------------------------------------------- patching helpers


def _rebind(module_name: str, attr: str, make: Callable[[Any], Any]) -> bool:
    """Replace ``module.attr`` by ``make(original)`` once; return whether the module was loaded."""
    module = sys.modules.get(module_name)
    if module is None or not hasattr(module, attr):
        return False
    current = getattr(module, attr)
    if getattr(current, _WRAPPED_ATTR, None) is not None:
        return True
    _ORIGINALS.setdefault((module_name, attr), current)
    wrapper = make(current)
    setattr(wrapper, _WRAPPED_ATTR, current)
    setattr(module, attr, wrapper)
    return True


def _import_optional(module_name: str) -> bool:
    """Import a verl module if its optional dependencies are installed."""
    try:
        importlib.import_module(module_name)
    except ImportError as err:
        logger.debug("gdro_verl: %s not importable (%s); its hooks are skipped", module_name, err)
        return False
    return True


def uninstall() -> None:
    """Restore every verl function gdro_verl wrapped (for tests and clean shutdown)."""
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

_SAMPLER_FACTORY_MODULES = (
    "verl.trainer.ppo.utils",
    "verl.trainer.ppo.v1.trainer_base",
    "verl.trainer.ppo.ray_trainer",
    "verl.trainer.main_ppo_v0",
    "verl.experimental.fully_async_policy.fully_async_rollouter",
    "verl.experimental.one_step_off_policy.main_ppo",
)


def _make_sampler_factory(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def create_rl_sampler(data_config: Any, dataset: Any) -> Any:
        from gdro_verl.dataset import GDRODataset

        if isinstance(dataset, GDRODataset) and dataset.is_train:
            from gdro_verl.sampler import GDROSampler

            return GDROSampler(dataset)
        return original(data_config, dataset)

    return create_rl_sampler


def install_sampler_factory() -> None:
    """Route ``create_rl_sampler`` to gdro for gdro train datasets, in every loaded verl module.

    ``verl.trainer.ppo.utils`` is imported if needed; the trainer modules are patched only when
    already loaded (a module imported later binds the patched name from ``utils``).
    """
    _import_optional("verl.trainer.ppo.utils")
    for name in _SAMPLER_FACTORY_MODULES:
        _rebind(name, "create_rl_sampler", _make_sampler_factory)


# --------------------------------------------------------------------------- advantage, V0 hooks


def _make_v1_advantage(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def compute_advantage_for_multi_trajectories(data: Any, *args: Any, **kwargs: Any) -> Any:
        token = _IN_V1_ADVANTAGE.set(True)
        try:
            out = original(data, *args, **kwargs)
        finally:
            _IN_V1_ADVANTAGE.reset(token)
        from gdro_verl import runtime

        rt = runtime.active()
        if rt is not None:
            rt.apply_weights(out)
        return out

    return compute_advantage_for_multi_trajectories


def _make_v0_advantage(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def compute_advantage(data: Any, *args: Any, **kwargs: Any) -> Any:
        out = original(data, *args, **kwargs)
        from gdro_verl import runtime

        rt = runtime.active()
        if rt is not None and not _IN_V1_ADVANTAGE.get() and rt.owns_batch(out):
            rt.apply_weights(out)
            rt.feedback_from_batch(out)
        return out

    return compute_advantage


def _make_v0_data_metrics(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def compute_data_metrics(*args: Any, **kwargs: Any) -> Any:
        metrics = original(*args, **kwargs)
        from gdro_verl import runtime

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
        from gdro_verl import runtime

        rt = runtime.active()
        if rt is None or PROMPT_ID_FIELD not in batch.non_tensor_batch:
            return original(self, batch)
        counts = rt.register_batch(
            uids=batch.non_tensor_batch["uid"],
            prompt_ids=batch.non_tensor_batch[PROMPT_ID_FIELD],
        )
        gen_batch = original(self, batch)
        # V0's agent loop passes unknown row fields to the agent as kwargs; the count is ours.
        gen_batch.non_tensor_batch.pop(ROLLOUT_N_FIELD, None)
        batch.non_tensor_batch.pop(ROLLOUT_N_FIELD, None)
        for dp in (batch, gen_batch):
            # An instance attribute shadows DataProto.repeat for exactly these two objects.
            dp.repeat = _planned_repeat(dp, counts, rt.mean)
        return gen_batch

    return _get_gen_batch


def sampler_state_of(loader_state: Any) -> Any:
    """The gdro sampler's state inside a saved ``StatefulDataLoader.state_dict()``, or None.

    torchdata (num_workers=0) keeps it under ``_sampler_iter_state.sampler_state`` (the batch
    sampler's iterator) or, for a stateful index sampler, under ``_index_sampler_state``.
    """
    if not isinstance(loader_state, dict):
        return None
    for outer, inner in (("_sampler_iter_state", "sampler_state"), ("_index_sampler_state", None)):
        node = loader_state.get(outer)
        if isinstance(node, dict) and inner is not None:
            node = node.get(inner)
        if isinstance(node, dict) and "runtime" in node:
            return node
    return None


def restore_runtime_from_checkpoint(folder: str, runtime_: Any) -> bool:
    """Load the controller state from ``folder/data.pt`` into ``runtime_``.

    For verl V0, which skips restoring the dataloader when a checkpoint falls on an epoch
    boundary (the saved loader is exhausted): the controller must still resume.

    Returns:
        Whether a gdro state was found and loaded.
    """
    import os

    import torch

    path = os.path.join(folder, "data.pt")
    if not os.path.exists(path):
        return False
    state = sampler_state_of(torch.load(path, weights_only=False))
    if state is None:
        return False
    runtime_.load_state_dict(state["runtime"])
    return True


def _checkpoint_folder(config: Any, global_steps: int) -> str | None:
    """The folder verl's ``_load_checkpoint`` resumed from (same resolution rules)."""
    import os

    mode = select(config, "trainer.resume_mode", "auto")
    if mode == "resume_path":
        folder = str(select(config, "trainer.resume_from_path"))
    elif mode == "auto":
        folder = os.path.join(
            str(select(config, "trainer.default_local_dir")), f"global_step_{global_steps}"
        )
    else:
        return None
    return folder if os.path.isabs(folder) else os.path.join(os.getcwd(), folder)


def _wrap_v0_load_checkpoint(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def _load_checkpoint(self: Any) -> Any:
        out = original(self)
        from gdro_verl import runtime

        rt = runtime.active()
        steps = len(self.train_dataloader) if rt is not None else 0
        if (
            rt is not None
            and self.global_steps > 0
            and steps > 0
            and self.global_steps % steps == 0
        ):
            # verl skipped the dataloader restore at this epoch boundary; restore the controller
            folder = _checkpoint_folder(self.config, self.global_steps)
            if folder is not None and restore_runtime_from_checkpoint(folder, rt):
                logger.info("gdro: controller restored from %s (epoch boundary)", folder)
        return out

    return _load_checkpoint


def _rebind_method(module_name: str, cls_name: str, meth: str, make: Callable[[Any], Any]) -> None:
    module = sys.modules.get(module_name)
    cls = getattr(module, cls_name, None) if module is not None else None
    if cls is None or not hasattr(cls, meth):
        return
    current = cls.__dict__.get(meth, getattr(cls, meth))
    if getattr(current, _WRAPPED_ATTR, None) is not None:
        return
    _ORIGINALS.setdefault((module_name, f"{cls_name}.{meth}"), current)
    wrapper = make(current)
    setattr(wrapper, _WRAPPED_ATTR, current)
    setattr(cls, meth, wrapper)


def install_trainer_hooks() -> None:
    """Install the advantage-weight (V0, V1) and V0 count/feedback/metrics hooks.

    Called when a gdro train dataset is built, i.e. inside the process that runs the trainer
    (verl's TaskRunner actor), after verl has imported its trainer modules. Each trainer's hooks
    are skipped when its optional dependencies are missing.
    """
    install_sampler_factory()
    # V1 first: v1.utils binds ray_trainer.compute_advantage at import, and must bind verl's own.
    has_v1 = _import_optional("verl.trainer.ppo.v1.trainer_base")
    if _import_optional("verl.trainer.ppo.ray_trainer"):
        name = "verl.trainer.ppo.ray_trainer"
        _rebind(name, "compute_advantage", _make_v0_advantage)
        _rebind(name, "compute_data_metrics", _make_v0_data_metrics)
        _rebind_method(name, "RayPPOTrainer", "_get_gen_batch", _wrap_get_gen_batch)
        _rebind_method(name, "RayPPOTrainer", "_load_checkpoint", _wrap_v0_load_checkpoint)
    if has_v1:
        _rebind(
            "verl.trainer.ppo.v1.trainer_base",
            "compute_advantage_for_multi_trajectories",
            _make_v1_advantage,
        )
