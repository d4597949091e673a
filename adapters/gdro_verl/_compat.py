"""The bottom layer of gdro_verl: verl's version, the row fields and markers, config reading.

Nothing here imports another gdro_verl module, and nothing here imports verl at import time:
every other module of the package may import this one. The places where gdro_verl patches
verl live in :mod:`gdro_verl.hooks`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable
from typing import Any, NamedTuple

__all__ = [
    "BUFFER_MARKER",
    "DATASET_MARKER",
    "PADDING_UID_PREFIX",
    "PROMPT_ID_FIELD",
    "ROLLOUT_N_FIELD",
    "TESTED_VERL",
    "Need",
    "api_error",
    "api_gaps",
    "checkpoint_folder",
    "is_tested_version",
    "require_api",
    "require_verl",
    "root_config",
    "sampler_state_of",
    "select",
    "to_plain",
    "verl_version",
]

#: verl releases this adapter is written and tested against (major, minor, patch). Its hooks
#: reach into verl's private methods, which change between patch releases too.
TESTED_VERL = ((0, 9, 1),)
#: Row field holding the stable prompt id (the dataset position of the prompt).
PROMPT_ID_FIELD = "gdro_prompt_id"
#: Row field V1's agent loop pops to decide how many sessions a prompt gets.
ROLLOUT_N_FIELD = "__rollout_n__"
#: verl V1 pads uneven batches with synthetic rows whose uid is ``f"pad{uuid4().hex}"``
#: (``trainer/ppo/padding_utils.py``); real uids are ``str(uuid4())``, which never start so.
PADDING_UID_PREFIX = "pad"
#: Class attribute that marks gdro's dataset class; the sampler factory reads it (and the
#: instance's ``runtime``) instead of importing the class.
DATASET_MARKER = "__gdro_dataset__"
#: Class attribute that marks gdro's replay buffer (and subclasses), read by the config check.
BUFFER_MARKER = "__gdro_replay_buffer__"


def require_verl() -> Any:
    """Import verl or fail with the install hint.

    Returns:
        The ``verl`` module.

    Raises:
        ImportError: verl is not installed; the message names the ``gdro[verl]`` extra.

    Examples:
        >>> require_verl().__name__
        'verl'
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
    """The installed verl version as ``(major, minor, patch)``; pre-release tags are dropped.

    Examples:
        >>> verl_version()[:2]
        (0, 9)
    """
    verl = require_verl()
    parts = []
    for piece in str(verl.__version__).split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


def is_tested_version() -> bool:
    """Whether the installed verl is a release this adapter is tested against.

    Examples:
        >>> is_tested_version()
        True
    """
    return verl_version() in TESTED_VERL


def _tested() -> str:
    return ", ".join(".".join(map(str, v)) for v in TESTED_VERL)


class Need(NamedTuple):
    """A piece of verl's API gdro_verl relies on: an attribute and the parameters it must take.

    Attributes:
        attr: Dotted path inside the module (``"func"`` or ``"Class.method"``).
        leading: The names its positional parameters must start with, in order (gdro's
            wrappers pass them positionally or read them by position).
        keywords: Names it must accept anywhere (gdro passes them by keyword).

    Examples:
        >>> Need("ReplayBuffer._clear_groups", ("self", "partition_id", "uids"))
        Need(attr='ReplayBuffer._clear_groups', leading=('self', 'partition_id', 'uids'), keywords=())
    """

    attr: str
    leading: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()


def api_gaps(module: Any, needs: Iterable[Need]) -> list[str]:
    """What ``module`` lacks of ``needs``: one line per missing attribute or changed signature.

    Args:
        module: A module (or any object whose attributes the needs' paths name).
        needs: What gdro_verl uses of it.

    Returns:
        Descriptions, empty when everything is there as expected.

    Examples:
        >>> import json
        >>> api_gaps(json, [Need("dumps", ("obj",)), Need("loads", ("text",)), Need("dump_all")])
        ['json.loads(s, ...) does not start with (text)', 'json.dump_all is missing']
    """
    where = getattr(module, "__name__", type(module).__name__)
    gaps = []
    for need in needs:
        obj: Any = module
        for part in need.attr.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        name = f"{where}.{need.attr}"
        if obj is None:
            gaps.append(f"{name} is missing")
            continue
        if not need.leading and not need.keywords:
            continue
        try:
            params = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            gaps.append(f"{name} has no inspectable signature")
            continue
        positional = [
            p.name
            for p in params.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if tuple(positional[: len(need.leading)]) != need.leading:
            shown = ", ".join(positional[: len(need.leading)])
            gaps.append(f"{name}({shown}, ...) does not start with ({', '.join(need.leading)})")
        absent = [k for k in need.keywords if k not in params]
        if absent:
            gaps.append(f"{name} takes no {', '.join(absent)}")
    return gaps


def require_api(module: Any, needs: Iterable[Need]) -> None:
    """Raise ``ImportError`` unless ``module`` has everything gdro_verl uses of it.

    gdro_verl hooks into verl by name; a renamed or re-signed function would otherwise be skipped
    silently (a run without weights or without feedback). Call before patching anything.

    Raises:
        ImportError: naming every missing attribute or changed signature, the verl version found
            and the one this adapter is tested with.

    Examples:
        >>> import json
        >>> require_api(json, [Need("dumps", ("obj",))])
        >>> require_api(json, [Need("dump_all")])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ImportError: gdro_verl cannot hook into verl ...: json.dump_all is missing; gdro_verl is tested with verl 0.9.1...
    """
    gaps = api_gaps(module, needs)
    if gaps:
        raise api_error(gaps)


def api_error(gaps: Iterable[str]) -> ImportError:
    """The ``ImportError`` for gaps found by :func:`api_gaps` (the verl found, the one tested).

    Examples:
        >>> print(api_error(["verl.x.f is missing"]))  # doctest: +ELLIPSIS
        gdro_verl cannot hook into verl 0.9.1: verl.x.f is missing; gdro_verl is tested with ...
    """
    found = ".".join(map(str, verl_version()))
    latest = ".".join(map(str, TESTED_VERL[-1]))
    return ImportError(
        f"gdro_verl cannot hook into verl {found}: {'; '.join(gaps)}; gdro_verl is tested "
        f"with verl {_tested()} (pip install 'verl=={latest}')"
    )


def root_config(node: Any) -> Any | None:
    """The root of an OmegaConf node (verl passes ``config.data``), or None when detached.

    Args:
        node: A ``DictConfig`` (``data`` section) or any mapping.

    Returns:
        The root ``DictConfig`` when ``node`` is a child of a larger config, else None.

    Examples:
        >>> from omegaconf import OmegaConf
        >>> cfg = OmegaConf.create({"data": {"train_batch_size": 4}, "trainer": {"use_v1": True}})
        >>> root_config(cfg.data).trainer.use_v1
        True
        >>> print(root_config({"train_batch_size": 4}))
        None
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
    """``OmegaConf.select`` for DictConfigs, a dotted ``get`` walk for plain mappings.

    Examples:
        >>> select({"a": {"b": 3}}, "a.b"), select({"a": {}}, "a.b", default=0)
        (3, 0)
    """
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
    """An OmegaConf container as plain dicts/lists (resolved); other values unchanged.

    Examples:
        >>> from omegaconf import OmegaConf
        >>> to_plain(OmegaConf.create({"ks": [1, 2]})), to_plain(3)
        ({'ks': [1, 2]}, 3)
    """
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, DictConfig | ListConfig):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return value


def sampler_state_of(loader_state: Any) -> Any:
    """The gdro sampler's state inside a saved ``StatefulDataLoader.state_dict()``, or None.

    torchdata (num_workers=0) keeps it under ``_sampler_iter_state.sampler_state`` (the batch
    sampler's iterator) or, for a stateful index sampler, under ``_index_sampler_state``.

    Examples:
        >>> sampler_state_of({"_index_sampler_state": {"yielded": 2, "runtime": {}}})
        {'yielded': 2, 'runtime': {}}
        >>> print(sampler_state_of({"_index_sampler_state": None}))
        None
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


def checkpoint_folder(config: Any, global_steps: int) -> str | None:
    """The ``global_step_N`` folder verl's V0 ``_load_checkpoint`` resumed from (its rules).

    Args:
        config: The full verl config.
        global_steps: The step verl resumed at.

    Returns:
        An absolute folder, or None when resuming is disabled.

    Examples:
        >>> checkpoint_folder({"trainer": {"resume_mode": "auto",
        ...                                 "default_local_dir": "/ckpt"}}, 4)
        '/ckpt/global_step_4'
        >>> print(checkpoint_folder({"trainer": {"resume_mode": "disable"}}, 4))
        None
    """
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
