"""The ``data.gdro`` config section and the verl settings gdro depends on.

gdro is configured under the data section, because verl hands exactly that section to the dataset
class (``data.custom_cls``) that builds the controller::

    data:
      custom_cls: {path: pkg://gdro_verl.dataset, name: GDRODataset}
      dataloader_num_workers: 0
      gdro:
        seed: 0
        classifier: {num_bins: 10, window: 100}       # gdro_core.ClassifierConfig fields
        prompt: {mode: reweight, signal: failure}     # gdro_core.PromptConfig fields
        rollout: {mode: bandit, min: 2, max: 12}      # gdro_core.RolloutConfig; mean = rollout.n
        correctness: auto                             # auto | acc | score
        pass_at_k: [1, 2]

Every option of the three core configs is accepted under its section with the core's own default
and validation. ``rollout.mean`` defaults to ``actor_rollout_ref.rollout.n``, the mean budget.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

from gdro_verl import _compat

__all__ = ["SUPPORTED_ESTIMATORS", "GDROSettings", "check_trainer_config"]

Correctness = Literal["auto", "acc", "score"]
_CORRECTNESS = ("auto", "acc", "score")
_TOP_KEYS = ("seed", "classifier", "prompt", "rollout", "correctness", "loss_key", "pass_at_k")
#: Advantage estimators that group by uid with a mean/std baseline, so unequal groups (n >= 2)
#: get correct advantages (docs/verl.md).
SUPPORTED_ESTIMATORS = ("grpo", "grpo_vectorized")
REPLAY_BUFFER_NAME = "GDROReplayBuffer"
REPLAY_BUFFER_PATH = "pkg://gdro_verl.replay_buffer"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class GDROSettings:
    """gdro's settings for one verl run, parsed from ``data.gdro``.

    Attributes:
        classifier: Difficulty-classifier config (``data.gdro.classifier``).
        prompt: Prompt-GDRO config (``data.gdro.prompt``).
        rollout: Rollout-GDRO config (``data.gdro.rollout``); ``rollout.mean`` is the mean budget
            and must equal ``actor_rollout_ref.rollout.n``.
        seed: Controller seed; the same seed gives the same prompt order and plans on every run.
        correctness: Where a rollout's reward comes from: ``"acc"`` (the scorer's ``acc``),
            ``"score"`` (the summed token-level score) or ``"auto"`` (``acc`` when every row has it).
        loss_key: Optional per-response reward-extra field holding a loss; averaged per prompt it is
            the controller's ``losses`` (needed for ``prompt.signal="loss"``).
        pass_at_k: The k of the logged unbiased ``gdro/pass@k`` metrics.

    Examples:
        Inside verl, ``data`` is attached to the full config, so the mean budget comes from
        ``actor_rollout_ref.rollout.n``; the loss-driven signals default to reward-derived ones:

        >>> from omegaconf import OmegaConf
        >>> cfg = OmegaConf.create({
        ...     "actor_rollout_ref": {"rollout": {"n": 8}},
        ...     "data": {"gdro": {"rollout": {"mode": "bandit", "max": 16}, "pass_at_k": [2, 1]}},
        ... })
        >>> settings = GDROSettings.from_data_config(cfg.data)
        >>> settings.mean, settings.rollout.mode, settings.rollout.min, settings.rollout.max
        (8, 'bandit', 2, 16)
        >>> settings.prompt.mode, settings.prompt.signal, settings.rollout.arm_signal
        ('reweight', 'failure', 'variance')
        >>> settings.seed, settings.correctness, settings.pass_at_k
        (0, 'auto', (1, 2))
    """

    classifier: Any
    prompt: Any
    rollout: Any
    seed: int = 0
    correctness: Correctness = "auto"
    loss_key: str | None = None
    pass_at_k: tuple[int, ...] = (1,)

    @property
    def mean(self) -> int:
        """The mean number of rollouts per prompt (``rollout.mean``)."""
        return int(self.rollout.mean)

    @classmethod
    def from_data_config(cls, data_config: Any) -> GDROSettings:
        """Parse ``data.gdro`` (absent: all defaults) into core configs.

        Args:
            data_config: verl's ``data`` section (a ``DictConfig``, or a mapping in tests).

        Returns:
            The settings.

        Raises:
            ValueError: an unknown option, a bad value (the core config's message, prefixed with the
                config key), or a missing mean budget.
            ImportError: gdro_core is not installed.

        Examples:
            A plain mapping works too (as in tests); detached from a verl config it must name the
            mean budget itself:

            >>> GDROSettings.from_data_config({"gdro": {"rollout": {"mean": 6}}}).mean
            6
            >>> typo = {"gdro": {"rollout": {"mean": 4}, "promt": {}}}
            >>> GDROSettings.from_data_config(typo)  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            ValueError: data.gdro has no option 'promt'; valid options: seed, classifier, ...
            >>> GDROSettings.from_data_config({"gdro": {"rollout": {"mean": 4, "min": 0}}})
            Traceback (most recent call last):
            ...
            ValueError: data.gdro.rollout: RolloutConfig.min must be an integer in [2, 4096]; got 0
        """
        from gdro_core import ClassifierConfig, PromptConfig, RolloutConfig

        raw = _compat.to_plain(_compat.select(data_config, "gdro")) or {}
        if not isinstance(raw, Mapping):
            raise ValueError(f"data.gdro must be a mapping of options; got {raw!r}")
        _reject_unknown("data.gdro", raw, _TOP_KEYS)
        rollout_raw = dict(raw.get("rollout") or {})
        if rollout_raw.get("mean") is None:
            root_n = _compat.select(_compat.root_config(data_config), "actor_rollout_ref.rollout.n")
            if root_n is None:
                raise ValueError(
                    "data.gdro.rollout.mean must be set (an integer, the mean rollouts per prompt) "
                    "when the data config is not attached to a full verl config; got None"
                )
            rollout_raw["mean"] = int(root_n)
        loss_key = raw.get("loss_key")
        if loss_key is not None and (not isinstance(loss_key, str) or not loss_key):
            raise ValueError(
                f"data.gdro.loss_key must be a non-empty string or null; got {loss_key!r}"
            )
        prompt_raw = dict(raw.get("prompt") or {})
        if loss_key is None:  # verl reports no per-prompt losses: reward-derived signals
            _default_signal("data.gdro.prompt", "signal", prompt_raw, PromptConfig, "failure")
            _default_signal(
                "data.gdro.rollout", "arm_signal", rollout_raw, RolloutConfig, "variance"
            )
        classifier = _build("data.gdro.classifier", ClassifierConfig, raw.get("classifier"))
        prompt = _build("data.gdro.prompt", PromptConfig, prompt_raw)
        rollout = _build("data.gdro.rollout", RolloutConfig, rollout_raw)
        seed = raw.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"data.gdro.seed must be an integer >= 0; got {seed!r}")
        correctness = raw.get("correctness", "auto")
        if correctness not in _CORRECTNESS:
            raise ValueError(
                f"data.gdro.correctness must be one of {_CORRECTNESS}; got {correctness!r}"
            )
        ks = raw.get("pass_at_k", [1])
        ks = [ks] if isinstance(ks, int) else list(ks)
        if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
            raise ValueError(f"data.gdro.pass_at_k must be a list of integers >= 1; got {ks!r}")
        if max(ks) > rollout.min:
            raise ValueError(
                f"data.gdro.pass_at_k must be <= data.gdro.rollout.min ({rollout.min}) so every "
                f"prompt has enough rollouts for an unbiased estimate; got {ks!r}"
            )
        return cls(
            classifier=classifier,
            prompt=prompt,
            rollout=rollout,
            seed=seed,
            correctness=correctness,
            loss_key=loss_key,
            pass_at_k=tuple(sorted(set(ks))),
        )


def _reject_unknown(where: str, raw: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ValueError(
            f"{where} has no option {unknown[0]!r}; valid options: {', '.join(allowed)}"
        )


def _default_signal(where: str, field: str, raw: dict[str, Any], cls: type, default: str) -> None:
    """Default a loss-driven signal to a reward-derived one; reject an explicit ``"loss"``."""
    if field not in {f.name for f in dataclasses.fields(cls)}:
        return
    if raw.get(field) == "loss":
        raise ValueError(
            f"{where}.{field}='loss' needs per-prompt losses, which verl does not report at "
            "feedback time; set data.gdro.loss_key to a per-response reward-extra field holding "
            f"a loss, or use a reward-derived signal such as {where}.{field}={default}; "
            "got loss_key=None"
        )
    raw.setdefault(field, default)


def _build(where: str, cls: type, raw: Any) -> Any:
    raw = dict(raw or {})
    allowed = tuple(f.name for f in dataclasses.fields(cls))
    _reject_unknown(where, raw, allowed)
    for key, value in raw.items():  # YAML lists -> tuples so configs stay hashable
        if isinstance(value, list):
            raw[key] = tuple(value)
    try:
        return cls(**raw)
    except (ValueError, TypeError) as err:
        raise type(err)(f"{where}: {err}") from err


def check_trainer_config(data_config: Any, settings: GDROSettings) -> None:
    """Fail fast on verl settings gdro cannot work with.

    Data-level checks always run; trainer-level checks run when ``data_config`` is attached to the
    full verl config (as it is inside verl's trainers).

    Args:
        data_config: verl's ``data`` section.
        settings: The parsed gdro settings.

    Raises:
        ValueError: naming the config key, the allowed value(s) and the value found.

    Examples:
        A V1 run must select gdro's replay buffer, which feeds the rewards back:

        >>> from omegaconf import OmegaConf
        >>> cfg = OmegaConf.create({
        ...     "actor_rollout_ref": {"rollout": {"n": 4}},
        ...     "algorithm": {"adv_estimator": "grpo"},
        ...     "trainer": {"use_v1": True, "v1": {"trainer_mode": "sync"}},
        ...     "data": {"dataloader_num_workers": 0, "gdro": {}},
        ... })
        >>> settings = GDROSettings.from_data_config(cfg.data)
        >>> check_trainer_config(cfg.data, settings)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: trainer.v1.sampler.custom_sampler must select gdro's replay buffer, ...
        >>> cfg.trainer.v1.sampler = {"custom_sampler": {
        ...     "path": "pkg://gdro_verl.replay_buffer", "name": "GDROReplayBuffer"}}
        >>> check_trainer_config(cfg.data, settings)  # passes: returns None
        >>> cfg.algorithm.adv_estimator = "gae"
        >>> check_trainer_config(cfg.data, settings)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: algorithm.adv_estimator must be one of ('grpo', 'grpo_vectorized') ...got 'gae'
    """
    workers = _compat.select(data_config, "dataloader_num_workers", 0)
    if workers != 0:
        raise ValueError(
            "data.dataloader_num_workers must be 0 with gdro: the sampler draws each batch from the "
            "controller's state right before the dataset reads it, and worker processes would "
            f"prefetch stale batches; got {workers}"
        )
    root = _compat.root_config(data_config)
    if root is None:
        return
    n = _compat.select(root, "actor_rollout_ref.rollout.n")
    if n is not None and int(n) != settings.mean:
        raise ValueError(
            "actor_rollout_ref.rollout.n must equal data.gdro.rollout.mean (the mean budget: verl "
            f"sizes mini-batches by rollout.n); got rollout.n={n}, data.gdro.rollout.mean={settings.mean}"
        )
    estimator = str(_compat.select(root, "algorithm.adv_estimator", "grpo"))
    if estimator not in SUPPORTED_ESTIMATORS:
        raise ValueError(
            f"algorithm.adv_estimator must be one of {SUPPORTED_ESTIMATORS} with gdro (group "
            f"baselines keyed by uid handle unequal group sizes); got {estimator!r}"
        )
    if _compat.select(root, "algorithm.filter_groups.enable", False):
        raise ValueError(
            "algorithm.filter_groups.enable must be false with gdro: DAPO refills pull prompts "
            "outside the planned batch; got true"
        )
    use_v1 = _compat.select(root, "trainer.use_v1")
    if use_v1 is None:  # verl < 0.9 has no V1 trainer (and no trainer.use_v1 key)
        use_v1 = _compat.verl_version()[:2] >= (0, 9)
    if not use_v1:
        return
    mode = _compat.select(root, "trainer.v1.trainer_mode", "sync")
    if mode != "sync":
        raise ValueError(
            "trainer.v1.trainer_mode must be 'sync' with gdro: async modes plan the next batch "
            f"before the previous one is scored; got {mode!r}"
        )
    if _compat.select(root, "trainer.v1.sampler.sync_refill_failed_groups", False):
        raise ValueError(
            "trainer.v1.sampler.sync_refill_failed_groups must be false with gdro: refills pull "
            "prompts outside the planned batch; got true"
        )
    path = _compat.select(root, "trainer.v1.sampler.custom_sampler.path")
    name = _compat.select(root, "trainer.v1.sampler.custom_sampler.name")
    if not path or not name or not _is_gdro_buffer(str(path), str(name)):
        raise ValueError(
            "trainer.v1.sampler.custom_sampler must select gdro's replay buffer, which feeds "
            f"rewards back to the controller: path={REPLAY_BUFFER_PATH}, name={REPLAY_BUFFER_NAME}; "
            f"got path={path!r}, name={name!r}"
        )


def _is_gdro_buffer(path: str, name: str) -> bool:
    if path == REPLAY_BUFFER_PATH and name == REPLAY_BUFFER_NAME:
        return True
    try:
        from verl.utils.import_utils import load_extern_type

        from gdro_verl.replay_buffer import GDROReplayBuffer

        cls = load_extern_type(path, name)
    except Exception:  # noqa: BLE001 - any failure to load means "not ours"
        return False
    return isinstance(cls, type) and issubclass(cls, GDROReplayBuffer)
