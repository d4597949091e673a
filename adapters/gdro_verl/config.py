"""The ``data.gdro`` config section and the verl settings gdro depends on.

gdro is configured under the data section, because verl hands exactly that section to the dataset
class (``data.custom_cls``) that builds the controller::

    data:
      custom_cls: {path: pkg://gdro_verl.dataset, name: GDRODataset}
      dataloader_num_workers: 0
      gdro:
        recipe: reward                                # a gdro_core recipe (default: reward)
        seed: 0
        classifier: {num_bins: 10}                    # gdro_core.ClassifierConfig fields
        prompt: {mode: reweight}                      # gdro_core.PromptConfig fields
        rollout: {mode: bandit, min: 2, max: 12}      # gdro_core.RolloutConfig; mean = rollout.n
        max_in_flight: null                           # plans awaiting feedback (null: from verl)
        correctness: auto                             # auto | acc | score
        pass_at_k: [1, 2]

The controller's part (``recipe``, ``classifier``, ``prompt``, ``rollout``, ``seed``,
``max_in_flight``) is read by ``gdro_core``'s ``ControllerConfig.from_mapping``, so the same
mapping gives the same controller as in every other gdro entry point; ``correctness``,
``loss_key`` and ``pass_at_k`` are verl's own. ``rollout.mean`` defaults to
``actor_rollout_ref.rollout.n``, the mean budget. verl reports no per-prompt losses at feedback
time, so without ``loss_key`` the default recipe is ``reward`` (reward-derived signals with the
bandit knobs sized to them).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

from gdro_verl import _compat

__all__ = ["SUPPORTED_ESTIMATORS", "GDROSettings", "RunShape", "check_trainer_config"]

Correctness = Literal["auto", "acc", "score"]
_CORRECTNESS = ("auto", "acc", "score")
_CORE_KEYS = ("recipe", "classifier", "prompt", "rollout", "seed", "max_in_flight")
_ADAPTER_KEYS = ("correctness", "loss_key", "pass_at_k")
_V1_MODES = ("sync", "colocate_async", "separate_async")
#: The recipe verl runs without ``data.gdro.loss_key`` (and without a recipe named).
DEFAULT_RECIPE = "reward"
#: Advantage estimators that group by uid with a mean/std baseline, so unequal groups (n >= 2)
#: get correct advantages (docs/verl.md).
SUPPORTED_ESTIMATORS = ("grpo", "grpo_vectorized")
REPLAY_BUFFER_NAME = "GDROReplayBuffer"
REPLAY_BUFFER_PATH = "pkg://gdro_verl.replay_buffer"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class GDROSettings:
    """gdro's settings for one verl run, parsed from ``data.gdro``.

    Attributes:
        controller: The controller's ``gdro_core`` ``ControllerConfig`` (its ``max_in_flight`` is
            replaced by the run's bound when the trainer is known).
        correctness: Where a rollout's reward comes from: ``"acc"`` (the scorer's ``acc``),
            ``"score"`` (the summed token-level score) or ``"auto"`` (``acc`` when every row has it).
        loss_key: Optional per-response reward-extra field holding a loss; averaged per prompt it is
            the controller's ``losses`` (needed for the loss signals).
        pass_at_k: The k of the logged unbiased ``gdro/pass@k`` metrics.
        max_in_flight: ``data.gdro.max_in_flight`` when given; None derives the bound from the
            trainer's settings (see :func:`check_trainer_config`).

    Examples:
        Inside verl, ``data`` is attached to the full config, so the mean budget comes from
        ``actor_rollout_ref.rollout.n``; without ``loss_key`` the ``reward`` recipe applies:

        >>> from omegaconf import OmegaConf
        >>> cfg = OmegaConf.create({
        ...     "actor_rollout_ref": {"rollout": {"n": 8}},
        ...     "data": {"gdro": {"rollout": {"mode": "bandit", "max": 16}, "pass_at_k": [2, 1]}},
        ... })
        >>> settings = GDROSettings.from_data_config(cfg.data)
        >>> settings.mean, settings.rollout.mode, settings.rollout.min, settings.rollout.max
        (8, 'bandit', 2, 16)
        >>> settings.prompt.mode, settings.prompt.signal, settings.rollout.arm_signal
        ('reweight', 'variance', 'variance')
        >>> settings.rollout.arm_eta, settings.seed, settings.correctness, settings.pass_at_k
        (1000.0, 0, 'auto', (1, 2))
    """

    controller: Any
    correctness: Correctness = "auto"
    loss_key: str | None = None
    pass_at_k: tuple[int, ...] = (1,)
    max_in_flight: int | None = None

    @property
    def classifier(self) -> Any:
        """The difficulty classifier's ``ClassifierConfig``."""
        return self.controller.classifier

    @property
    def prompt(self) -> Any:
        """The Prompt-GDRO ``PromptConfig``."""
        return self.controller.prompt

    @property
    def rollout(self) -> Any:
        """The Rollout-GDRO ``RolloutConfig``."""
        return self.controller.rollout

    @property
    def seed(self) -> int | None:
        """The controller's seed."""
        return self.controller.seed  # type: ignore[no-any-return]

    @property
    def mean(self) -> int:
        """The mean number of rollouts per prompt (``rollout.mean``)."""
        return int(self.rollout.mean)

    @classmethod
    def from_data_config(cls, data_config: Any) -> GDROSettings:
        """Parse ``data.gdro`` (absent: all defaults).

        Args:
            data_config: verl's ``data`` section (a ``DictConfig``, or a mapping in tests).

        Returns:
            The settings.

        Raises:
            ValueError: an unknown option, a bad value (named by its ``data.gdro`` key), a
                loss signal without ``loss_key``, or a missing mean budget.
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
            ValueError: data.gdro has no option 'promt'; valid options: recipe, classifier, ...
            >>> GDROSettings.from_data_config({"gdro": {"rollout": {"mean": 4, "min": 0}}})
            Traceback (most recent call last):
            ...
            ValueError: data.gdro.rollout: RolloutConfig.min must be an integer in [2, 4096]; got 0
        """
        from gdro_core.config import ControllerConfig
        from gdro_core.passk import check_ks

        raw = _compat.to_plain(_compat.select(data_config, "gdro")) or {}
        if not isinstance(raw, Mapping):
            raise ValueError(f"data.gdro must be a mapping of options; got {raw!r}")
        unknown = sorted(set(raw) - set(_CORE_KEYS) - set(_ADAPTER_KEYS))
        if unknown:
            raise ValueError(
                f"data.gdro has no option {unknown[0]!r}; valid options: "
                f"{', '.join((*_CORE_KEYS, *_ADAPTER_KEYS))}"
            )
        core = {k: v for k, v in raw.items() if k not in _ADAPTER_KEYS}
        loss_key = raw.get("loss_key")
        if loss_key is not None and (not isinstance(loss_key, str) or not loss_key):
            raise ValueError(
                f"data.gdro.loss_key must be a non-empty string or null; got {loss_key!r}"
            )
        rollout = dict(core.get("rollout") or {})
        if rollout.get("mean") is None:
            root_n = _compat.select(_compat.root_config(data_config), "actor_rollout_ref.rollout.n")
            if root_n is None:
                raise ValueError(
                    "data.gdro.rollout.mean must be set (an integer, the mean rollouts per prompt) "
                    "when the data config is not attached to a full verl config; got None"
                )
            rollout["mean"] = int(root_n)
        core["rollout"] = rollout
        if loss_key is None:  # verl reports no per-prompt losses: reward-derived signals
            core.setdefault("recipe", DEFAULT_RECIPE)
        core.setdefault("seed", 0)
        if core.get("max_in_flight", 0) is None:  # null (the documented default): derived
            del core["max_in_flight"]
        controller = ControllerConfig.from_mapping(core, where="data.gdro")
        if loss_key is None:
            _reject_loss_signals(controller)
        correctness = raw.get("correctness", "auto")
        if correctness not in _CORRECTNESS:
            raise ValueError(
                f"data.gdro.correctness must be one of {_CORRECTNESS}; got {correctness!r}"
            )
        ks = check_ks(
            "data.gdro.pass_at_k",
            raw.get("pass_at_k", 1),
            most=controller.rollout.fewest,
            why="the fewest rollouts a prompt gets: data.gdro.rollout."
            + ("mean, in fixed mode" if controller.rollout.mode == "fixed" else "min"),
        )
        return cls(
            controller=controller,
            correctness=correctness,
            loss_key=loss_key,
            pass_at_k=ks,
            max_in_flight=controller.max_in_flight if "max_in_flight" in core else None,
        )


def _reject_loss_signals(controller: Any) -> None:
    """Without ``loss_key`` verl gives the controller no losses: no signal may need them."""
    needs = controller.loss_settings()
    if not needs:
        return
    key, value = "data.gdro." + needs[0][0], needs[0][1]
    raise ValueError(
        f"{key}={value!r} needs per-prompt losses, which verl does not report at feedback time; "
        "set data.gdro.loss_key to a per-response reward-extra field holding a loss, or use a "
        f"reward-derived signal (the {DEFAULT_RECIPE!r} recipe's, e.g. {key}=variance); "
        "got loss_key=None"
    )


class RunShape(NamedTuple):
    """How feedback reaches the controller in a given verl run (from :func:`check_trainer_config`).

    Examples:
        >>> RunShape(max_in_flight=1, feedback_at_advantage=False)
        RunShape(max_in_flight=1, feedback_at_advantage=False, lookahead='')
    """

    max_in_flight: int  # plans that may await feedback at once
    feedback_at_advantage: bool  # V1 with a colocated reward model: scores arrive after sampling
    #: The verl settings that keep prompts in flight beyond one batch ("" for a sync run): named
    #: in the error when the train set has too few prompts left to plan the next batch.
    lookahead: str = ""


def _lookahead(root: Any, mode: str, dapo: bool, refill: bool) -> str:
    """The verl settings (``key=value``) that make verl request prompts ahead of feedback."""
    keys = []
    if dapo:
        keys.append("algorithm.filter_groups.max_inflight_gen_batches")
    if refill and mode == "sync":
        keys.append("trainer.v1.sampler.sync_refill_failed_groups")
    if mode != "sync":
        keys += [
            f"trainer.v1.{mode}.num_warmup_batches",
            "trainer.v1.sampler.max_off_policy_threshold",
        ]
    return ", ".join(f"{k}={_compat.select(root, k)}" for k in keys)


def _needed_in_flight(root: Any, mode: str, dapo: bool, refill: bool) -> int:
    """Plans that may await feedback at once for verl's sampling settings (a generous bound).

    One block is ``train_batch_size`` prompts planned together; a plan stays in flight until each
    of its prompts is fed back or cancelled, so one slow group keeps its block open while later
    blocks are handed out. Sync mode scores each block before the next (1). DAPO refills and
    failed-group refills pull prompts of later blocks while a step is being scored, with up to
    ``max_inflight_gen_batches`` batches generating at once. The async modes keep
    ``num_warmup_batches`` batches ahead, and verl drops a group that lives longer than
    ``max_off_policy_threshold`` steps. A plan in flight costs O(batch) memory.
    """
    if mode == "sync":
        if dapo:
            inflight = int(
                _compat.select(root, "algorithm.filter_groups.max_inflight_gen_batches", 1)
            )
            return 8 * (inflight + 1)
        return 8 if refill else 1
    warmup = float(_compat.select(root, f"trainer.v1.{mode}.num_warmup_batches", 1) or 0)
    threshold = _compat.select(root, "trainer.v1.sampler.max_off_policy_threshold")
    strategy = _compat.select(root, "trainer.v1.sampler.max_off_policy_strategy", "drop")
    lifetime = int(threshold) if threshold is not None and strategy == "drop" else 8
    return lifetime + math.ceil(warmup) + 3


def check_trainer_config(
    data_config: Any, settings: GDROSettings, *, max_samples: int | None = None
) -> RunShape:
    """Fail fast on verl settings gdro cannot work with, and say how feedback will flow.

    Data-level checks always run; trainer-level checks run when ``data_config`` is attached to the
    full verl config (as it is inside verl's trainers).

    Args:
        data_config: verl's ``data`` section.
        settings: The parsed gdro settings.
        max_samples: The train dataset's ``max_samples`` (verl passes ``data.train_max_samples``);
            None reads ``data.train_max_samples``.

    Returns:
        The run's :class:`RunShape`: ``data.gdro.max_in_flight`` (or the bound verl's sampling
        settings need) and whether scores are fed back at the advantage computation.

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
        >>> check_trainer_config(cfg.data, settings)
        RunShape(max_in_flight=1, feedback_at_advantage=False, lookahead='')

        A colocated reward model scores after the replay buffer's ``sample``: its scores are fed
        back at the advantage computation.

        >>> cfg.reward = {"reward_model": {"enable": True, "enable_resource_pool": False}}
        >>> check_trainer_config(cfg.data, settings)
        RunShape(max_in_flight=1, feedback_at_advantage=True, lookahead='')
        >>> cfg.algorithm.adv_estimator = "gae"
        >>> check_trainer_config(cfg.data, settings)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: algorithm.adv_estimator must be one of ('grpo', 'grpo_vectorized') ...got 'gae'

        A random subset of the train files must be the same subset at every start, or resumed
        prompt ids would point at other prompts:

        >>> cfg.algorithm.adv_estimator = "grpo"
        >>> cfg.data.update({"train_max_samples": 100, "shuffle": True, "seed": None})
        >>> check_trainer_config(cfg.data, settings)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: data.seed must be an integer when data.train_max_samples > 0 and ...; got None
    """
    workers = _compat.select(data_config, "dataloader_num_workers", 0)
    if workers != 0:
        raise ValueError(
            "data.dataloader_num_workers must be 0 with gdro: the sampler draws each batch from the "
            "controller's state right before the dataset reads it, and worker processes would "
            f"prefetch stale batches; got {workers}"
        )
    _check_train_subset(data_config, max_samples)
    root = _compat.root_config(data_config)
    if root is None:
        return RunShape(max_in_flight=settings.max_in_flight or 1, feedback_at_advantage=False)
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
    use_v1 = _compat.select(root, "trainer.use_v1")
    if use_v1 is None:  # verl < 0.9 has no V1 trainer (and no trainer.use_v1 key)
        use_v1 = _compat.verl_version()[:2] >= (0, 9)
    if not use_v1:  # V0 scores before the advantage step and has no DAPO or refills
        return RunShape(max_in_flight=settings.max_in_flight or 1, feedback_at_advantage=False)
    mode = str(_compat.select(root, "trainer.v1.trainer_mode", "sync"))
    if mode not in _V1_MODES:
        raise ValueError(
            f"trainer.v1.trainer_mode must be one of {_V1_MODES} with gdro; got {mode!r}"
        )
    colocated = bool(_compat.select(root, "reward.reward_model.enable", False)) and not bool(
        _compat.select(root, "reward.reward_model.enable_resource_pool", False)
    )
    dapo = bool(_compat.select(root, "algorithm.filter_groups.enable", False))
    refill = bool(_compat.select(root, "trainer.v1.sampler.sync_refill_failed_groups", False))
    if colocated:
        _check_colocated_reward(settings, mode=mode, dapo=dapo)
    path = _compat.select(root, "trainer.v1.sampler.custom_sampler.path")
    name = _compat.select(root, "trainer.v1.sampler.custom_sampler.name")
    if not path or not name or not _is_gdro_buffer(str(path), str(name)):
        raise ValueError(
            "trainer.v1.sampler.custom_sampler must select gdro's replay buffer, which feeds "
            f"rewards back to the controller: path={REPLAY_BUFFER_PATH}, name={REPLAY_BUFFER_NAME}; "
            f"got path={path!r}, name={name!r}"
        )
    needed = _needed_in_flight(root, mode, dapo, refill and mode == "sync")
    return RunShape(
        max_in_flight=settings.max_in_flight or needed,
        feedback_at_advantage=colocated,
        lookahead=_lookahead(root, mode, dapo, refill),
    )


def _check_train_subset(data_config: Any, max_samples: int | None) -> None:
    """verl's ``train_max_samples`` subset must be reproducible (prompt ids are its rows)."""
    if max_samples is None:
        max_samples = int(_compat.select(data_config, "train_max_samples", -1) or -1)
    shuffle = bool(_compat.select(data_config, "shuffle", False))
    seed = _compat.select(data_config, "seed")
    if max_samples > 0 and shuffle and seed is None:
        raise ValueError(
            "data.seed must be an integer when data.train_max_samples > 0 and data.shuffle=true "
            "with gdro: verl then keeps a random subset of the train files, drawn anew at every "
            "start without a seed, and gdro's prompt ids (rows of that subset) would point at "
            "other prompts after a resume; set data.seed, or data.shuffle=false (the first "
            f"rows), or data.train_max_samples=-1 (data.train_max_samples={max_samples}); got None"
        )


def _check_colocated_reward(settings: GDROSettings, *, mode: str, dapo: bool) -> None:
    """A colocated reward model writes ``rm_scores`` after V1's replay buffer has sampled."""
    where = (
        "a colocated reward model (reward.reward_model.enable=true, "
        "reward.reward_model.enable_resource_pool=false) on verl's V1 trainer"
    )
    if mode == "separate_async":
        raise ValueError(
            f"trainer.v1.trainer_mode='separate_async' cannot run {where}: the standalone rollout "
            "never pauses to free GPU memory for it; set "
            "reward.reward_model.enable_resource_pool=true; got trainer_mode='separate_async'"
        )
    if dapo:
        raise ValueError(
            f"algorithm.filter_groups.enable=true cannot run with {where}: groups are filtered by "
            "their reward while sampling, before that reward model scores them; set "
            "reward.reward_model.enable_resource_pool=true; got filter_groups.enable=true"
        )
    if settings.correctness == "acc":
        raise ValueError(
            f"data.gdro.correctness='acc' cannot run with {where}: it writes only rm_scores, "
            "which gdro reads at the advantage computation; set data.gdro.correctness=score or "
            "auto, or reward.reward_model.enable_resource_pool=true; got 'acc'"
        )
    if settings.loss_key is not None:
        raise ValueError(
            f"data.gdro.loss_key cannot be used with {where}: gdro reads only its rm_scores; "
            "set data.gdro.loss_key=null or reward.reward_model.enable_resource_pool=true; "
            f"got {settings.loss_key!r}"
        )


def _is_gdro_buffer(path: str, name: str) -> bool:
    if path == REPLAY_BUFFER_PATH and name == REPLAY_BUFFER_NAME:
        return True
    try:
        from verl.utils.import_utils import load_extern_type

        cls = load_extern_type(path, name)
    except Exception:  # noqa: BLE001 - any failure to load means "not ours"
        return False
    return isinstance(cls, type) and bool(getattr(cls, _compat.BUFFER_MARKER, False))
