"""gdro's settings for a TRL run.

A :class:`GDROConfig` holds the three core configs (classifier, Prompt-GDRO, Rollout-GDRO), the
controller seed (by default ``GRPOConfig.seed``) and the adapter's own options.
:meth:`GDROConfig.from_mapping` parses nested dicts (YAML, JSON, argparse) on gdro_core's
``reward`` recipe by default, because TRL computes no per-prompt losses when the rewards are fed
back::

    gdro = GDROConfig.from_mapping(
        {"prompt": {"mode": "reweight"}, "rollout": {"mode": "neyman"}},
        num_generations=8,
    )

The TRL settings gdro cannot work with are checked in :mod:`gdro_trl.layout`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from gdro_core import ClassifierConfig, PromptConfig, RolloutConfig
from gdro_core.config import check_seed
from gdro_core.passk import check_ks

__all__ = ["GDROConfig"]

_FEWEST = "the fewest completions a prompt gets"
_TOP_KEYS = ("recipe", "seed", "classifier", "prompt", "rollout", "reward_func", "pass_at_k")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class GDROConfig:
    """gdro's settings for one TRL ``GRPOTrainer`` run.

    Attributes:
        prompt: Prompt-GDRO settings. The signal must be reward-derived (``"failure"`` or
            ``"variance"``, the default): TRL computes the policy loss after the rewards are fed
            back.
        rollout: Rollout-GDRO settings; ``rollout.mean`` is the mean budget and must equal
            ``GRPOConfig.num_generations``. ``None``: every prompt gets ``num_generations``
            completions (Prompt-GDRO only).
        classifier: Difficulty-classifier settings.
        seed: Controller seed: the prompt order and every plan follow from it (TRL's
            ``shuffle_dataset`` no longer orders the train set). ``None`` (the default): the run's
            ``GRPOConfig.seed``, so runs that differ only in TRL's seed get different plans. The
            same on every rank.
        reward_func: Which reward decides that a completion is correct (reward >
            ``classifier.success_threshold``): ``None`` for TRL's total reward (the weighted sum of
            the reward functions), or the name of one reward function as TRL logs it
            (``rewards/<name>/mean``).
        pass_at_k: The k of the logged unbiased ``gdro/pass@k``; each k at most the fewest
            completions a prompt gets (``rollout.fewest``: ``rollout.min``, or ``rollout.mean``
            in fixed mode; ``num_generations`` without a ``rollout``).

    Examples:
        >>> cfg = GDROConfig(prompt=PromptConfig(mode="resample", signal="variance"))
        >>> cfg.prompt.mode, cfg.rollout, cfg.seed, cfg.pass_at_k
        ('resample', None, None, (1,))
        >>> cfg.rollout_for(num_generations=8).mode, cfg.rollout_for(num_generations=8).mean
        ('fixed', 8)
        >>> GDROConfig(prompt=PromptConfig())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: GDROConfig.prompt.signal must be a reward-derived signal ('failure' or ...
    """

    prompt: PromptConfig = dataclasses.field(
        default_factory=lambda: PromptConfig(mode="reweight", signal="variance")
    )
    rollout: RolloutConfig | None = None
    classifier: ClassifierConfig = dataclasses.field(default_factory=ClassifierConfig)
    seed: int | None = None
    reward_func: str | None = None
    pass_at_k: tuple[int, ...] = (1,)

    def __post_init__(self) -> None:
        for name, value, cls in (
            ("prompt", self.prompt, PromptConfig),
            ("classifier", self.classifier, ClassifierConfig),
        ):
            if not isinstance(value, cls):
                raise TypeError(
                    f"GDROConfig.{name} must be a gdro_core.{cls.__name__}; got {value!r} of "
                    f"type {type(value).__name__}"
                )
        if self.rollout is not None and not isinstance(self.rollout, RolloutConfig):
            raise TypeError(
                "GDROConfig.rollout must be a gdro_core.RolloutConfig or None; got "
                f"{self.rollout!r} of type {type(self.rollout).__name__}"
            )
        if self.prompt.needs_losses:
            raise ValueError(
                "GDROConfig.prompt.signal must be a reward-derived signal ('failure' or "
                "'variance'): TRL's GRPOTrainer computes the policy loss after the rewards are fed "
                f"back, so there are no per-prompt losses to score bins with; got "
                f"{self.prompt.signal!r}"
            )
        if self.rollout is not None and self.rollout.needs_losses:
            raise ValueError(
                "GDROConfig.rollout.arm_signal must be 'variance' in bandit mode: TRL reports no "
                "per-prompt losses at feedback time (RolloutConfig.variance_bandit(mean=...) has "
                f"knobs sized for it); got {self.rollout.arm_signal!r}"
            )
        object.__setattr__(self, "seed", check_seed("GDROConfig.seed", self.seed))
        if self.reward_func is not None and (
            not isinstance(self.reward_func, str) or not self.reward_func
        ):
            raise ValueError(
                "GDROConfig.reward_func must be None or the name of a reward function; got "
                f"{self.reward_func!r}"
            )
        most = None if self.rollout is None else self.rollout.fewest
        ks = check_ks("GDROConfig.pass_at_k", self.pass_at_k, most=most, why=_FEWEST)
        object.__setattr__(self, "pass_at_k", ks)
        k = self.classifier.k
        if k is not None and self.rollout is not None and self.rollout.fewest < k:
            raise ValueError(
                "GDROConfig.classifier.k must be <= the fewest completions a prompt gets "
                f"({self.rollout.fewest}); got {k}"
            )

    def rollout_for(self, num_generations: int) -> RolloutConfig:
        """The Rollout-GDRO config of a run with ``num_generations`` completions per prompt.

        Args:
            num_generations: ``GRPOConfig.num_generations``, the mean budget.

        Returns:
            ``rollout`` itself, or fixed ``num_generations`` when ``rollout`` is ``None``.

        Raises:
            ValueError: ``rollout.mean`` differs from ``num_generations``.

        Examples:
            >>> cfg = GDROConfig(rollout=RolloutConfig(mode="neyman", mean=4, max=8))
            >>> cfg.rollout_for(4).max
            8
            >>> cfg.rollout_for(8)
            Traceback (most recent call last):
            ...
            ValueError: GDROConfig.rollout.mean must equal GRPOConfig.num_generations (the mean budget: TRL sizes every generation batch as prompts x num_generations); got rollout.mean=4, num_generations=8
        """
        if self.rollout is None:
            n = num_generations
            return RolloutConfig(mode="fixed", mean=n, min=n, max=n)
        if self.rollout.mean != num_generations:
            raise ValueError(
                "GDROConfig.rollout.mean must equal GRPOConfig.num_generations (the mean budget: "
                "TRL sizes every generation batch as prompts x num_generations); got "
                f"rollout.mean={self.rollout.mean}, num_generations={num_generations}"
            )
        return self.rollout

    @classmethod
    def from_mapping(
        cls, raw: Mapping[str, Any] | None, *, num_generations: int | None = None
    ) -> GDROConfig:
        """Parse nested dicts (YAML, JSON) into a config, on the ``reward`` recipe by default.

        ``classifier``, ``prompt`` and ``rollout`` take every field of the matching ``gdro_core``
        config; ``recipe`` names a ``gdro_core.recipes`` recipe whose settings the rest
        overrides. The default recipe is ``"reward"`` (reward-derived signals, with the bandit
        knobs sized to them), because TRL reports no per-prompt losses when the rewards are fed
        back. ``rollout.mean`` defaults to ``num_generations``; without a ``rollout`` section every
        prompt gets ``num_generations`` completions.

        Args:
            raw: The options; ``None`` or ``{}`` gives Prompt-GDRO in reweight mode.
            num_generations: ``GRPOConfig.num_generations``; needed when a ``rollout`` section is
                given without ``mean``.

        Returns:
            The config.

        Raises:
            ValueError: an unknown option (named), or a bad value (the core's message).

        Examples:
            >>> cfg = GDROConfig.from_mapping(
            ...     {"prompt": {"mode": "reweight"}, "rollout": {"mode": "bandit", "max": 16}},
            ...     num_generations=8,
            ... )
            >>> cfg.prompt.signal, cfg.rollout.mode, cfg.rollout.mean, cfg.rollout.arm_signal
            ('variance', 'bandit', 8, 'variance')
            >>> GDROConfig.from_mapping({"promt": {}})  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            ValueError: gdro has no option 'promt'; valid options: recipe, seed, classifier, ...
            >>> GDROConfig.from_mapping({"rollout": {"mode": "neyman", "min": 1}}, num_generations=4)
            Traceback (most recent call last):
            ...
            ValueError: gdro.rollout: RolloutConfig.min must be an integer in [2, 4096]; got 1
        """
        from gdro_core.config import ControllerConfig

        raw = dict(raw or {})
        _reject_unknown("gdro", raw, _TOP_KEYS)
        core: dict[str, Any] = {
            k: raw[k] for k in ("recipe", "classifier", "prompt", "seed") if k in raw
        }
        core.setdefault("recipe", "reward")
        if raw.get("rollout") is not None:
            rollout_raw = dict(raw["rollout"])
            if rollout_raw.get("mean") is None:
                if num_generations is None:
                    raise ValueError(
                        "gdro.rollout.mean must be set (the mean completions per prompt, "
                        "GRPOConfig.num_generations) when num_generations is not given; got None"
                    )
                rollout_raw["mean"] = int(num_generations)
            core["rollout"] = rollout_raw
        elif num_generations is not None:  # validate against what every prompt will get
            n = int(num_generations)
            core["rollout"] = {"mode": "fixed", "mean": n, "min": n, "max": n}
        parsed: Any = ControllerConfig.from_mapping(core, where="gdro")
        ks = raw.get("pass_at_k", (1,))
        return cls(
            prompt=parsed.prompt,
            rollout=parsed.rollout if raw.get("rollout") is not None else None,
            classifier=parsed.classifier,
            seed=parsed.seed,
            reward_func=raw.get("reward_func"),
            pass_at_k=ks,
        )


def _reject_unknown(where: str, raw: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ValueError(
            f"{where} has no option {unknown[0]!r}; valid options: {', '.join(allowed)}"
        )
