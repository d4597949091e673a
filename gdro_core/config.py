"""``ControllerConfig``: every setting of a controller in one frozen, validated object.

It bundles the classifier, Prompt-GDRO and Rollout-GDRO settings with the seed and the bound on
plans in flight, reads nested mappings (YAML, Hydra, JSON: :meth:`ControllerConfig.from_mapping`,
unknown keys rejected by name) and writes them back (:meth:`ControllerConfig.to_dict`). A mapping
may name a recipe (``gdro_core.recipes``) whose settings the rest of the mapping overrides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gdro_core._validation import check_int, fail, type_fail
from gdro_core.classifier import ClassifierConfig
from gdro_core.prompt import PromptConfig
from gdro_core.recipes import recipe_mapping
from gdro_core.rollout import RolloutConfig

__all__ = ["ControllerConfig", "MAX_IN_FLIGHT"]

#: Largest bound on plans in flight.
MAX_IN_FLIGHT = 1024

_SECTIONS: dict[str, type] = {
    "classifier": ClassifierConfig,
    "prompt": PromptConfig,
    "rollout": RolloutConfig,
}


#: Largest seed (numpy's generators take any integer up to it).
MAX_SEED = 2**63 - 1


def check_seed(name: str, seed: Any) -> int | None:
    """A seed: ``None`` or an integer in [0, :data:`MAX_SEED`]."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise type_fail(name, "None or an integer", seed)
    if not 0 <= int(seed) <= MAX_SEED:
        raise fail(name, f"None or an integer in [0, {MAX_SEED}]", int(seed))
    return int(seed)


#: The settings beside the sections, with their checks (given the name errors use).
_SCALARS: dict[str, Callable[[str, Any], Any]] = {
    "seed": check_seed,
    "max_in_flight": lambda name, value: check_int(name, value, lo=1, hi=MAX_IN_FLIGHT),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ControllerConfig:
    """All settings of a ``GDROController``.

    Args:
        classifier: the difficulty classifier's settings.
        prompt: the Prompt-GDRO settings.
        rollout: the Rollout-GDRO settings.
        seed: seeds the controller's ``numpy.random.Generator``; ``None`` = fresh OS entropy.
        max_in_flight: how many plans may await feedback at once, 1..1024 (1: every plan is fed
            back before the next; more for trainers that plan ahead of their feedback).

    Examples:
        >>> cfg = ControllerConfig.from_mapping(
        ...     {"prompt": {"mode": "reweight", "signal": "variance"},
        ...      "rollout": {"mode": "neyman", "mean": 8, "max": 16}, "seed": 0})
        >>> cfg.prompt.signal, cfg.rollout.mean, cfg.seed, cfg.max_in_flight
        ('variance', 8, 0, 1)
        >>> ControllerConfig.from_mapping(cfg.to_dict()) == cfg
        True
        >>> ControllerConfig.from_mapping({"prompt": {"etaa": 1.0}})
        Traceback (most recent call last):
        ...
        ValueError: config.prompt must be a mapping of PromptConfig settings (unknown key 'etaa'; known: ema, eta, exact_q, gamma, mode, score_clip, score_rule, share_floor, share_normalize, signal, weight_cap); got {'etaa': 1.0}
    """

    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    seed: int | None = None
    max_in_flight: int = 1

    def __post_init__(self) -> None:
        for name, cls in _SECTIONS.items():
            value = getattr(self, name)
            if not isinstance(value, cls):
                raise type_fail(f"ControllerConfig.{name}", f"a {cls.__name__}", value)
        for name, check in _SCALARS.items():
            object.__setattr__(self, name, check(f"ControllerConfig.{name}", getattr(self, name)))
        k, fewest = self.classifier.k, self.rollout.fewest
        if k is not None and fewest < k:
            of = "mean, in fixed mode" if self.rollout.mode == "fixed" else "min"
            raise fail(
                "ClassifierConfig.k",
                f"<= the fewest rollouts a prompt gets ({fewest}: RolloutConfig.{of})",
                k,
                fix="every prompt needs at least k rollouts for pass@k",
            )

    def loss_settings(self) -> list[tuple[str, str]]:
        """The settings that make the controller read per-prompt losses, as ``(key, value)``:
        ``("prompt.signal", ...)`` when the adversary acts on a loss signal,
        ``("rollout.arm_signal", ...)`` when the allocator's arms do. Empty when rewards are enough.

        Examples:
            >>> ControllerConfig().loss_settings()
            [('prompt.signal', 'loss')]
            >>> ControllerConfig.from_mapping({"recipe": "reward"}).loss_settings()
            []
        """
        out = [("prompt.signal", self.prompt.signal)] if self.prompt.needs_losses else []
        if self.rollout.needs_losses:
            out.append(("rollout.arm_signal", self.rollout.arm_signal))
        return out

    def replace(self, **changes: Any) -> ControllerConfig:
        """A copy with some fields changed (validated again).

        Examples:
            >>> ControllerConfig().replace(seed=3).seed
            3
        """
        return dataclasses.replace(self, **changes)

    def merged(self, overrides: Mapping[str, Any], *, where: str = "config") -> ControllerConfig:
        """This config with the settings of ``overrides`` (``from_mapping``'s shape) changed.

        A ``recipe`` in ``overrides`` applies that recipe's settings first; the other keys
        change only the fields they name. A value this config derived (``num_bins`` from the
        edges, ``window`` from the outcome, ``hysteresis`` from the narrowest bin) is derived
        again when what it derives from changes and it is not given itself.

        Examples:
            >>> cfg = ControllerConfig()
            >>> cfg.merged({"classifier": {"outcome": "any"}}).classifier.window  # derived again
            100
            >>> cfg.merged({"classifier": {"num_bins": 5}}).classifier.hysteresis
            0.06
            >>> cfg.merged({"recipe": "reward", "rollout": {"mean": 8}}).prompt.signal
            'variance'
        """
        mapping = self.to_dict()
        given = _as_dict(overrides, where)
        c, cur = mapping["classifier"], self.classifier
        new = _as_dict(given.get("classifier", {}), f"{where}.classifier")
        if "edges" in new and "num_bins" not in new and cur.num_bins == _bins_of(cur.edges):
            c["num_bins"] = 0
        if "outcome" in new and "window" not in new and cur.window == _window_of(cur.outcome):
            c["window"] = -1
        shape = {"edges", "num_bins"} & set(new)
        if shape and "hysteresis" not in new and cur.hysteresis == round(0.3 * cur.min_width, 12):
            c["hysteresis"] = -1.0
        layers = (
            [recipe_mapping(given["recipe"], where=f"{where}.recipe")] if "recipe" in given else []
        )
        layers.append({k: v for k, v in given.items() if k != "recipe"})
        for layer in layers:
            for key, value in layer.items():
                if isinstance(value, Mapping) and isinstance(mapping.get(key), dict):
                    mapping[key] = {**mapping[key], **value}
                else:
                    mapping[key] = value
        return ControllerConfig.from_mapping(mapping, where=where)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dicts (tuples as lists), the inverse of :meth:`from_mapping`.

        Examples:
            >>> d = ControllerConfig(seed=1).to_dict()
            >>> sorted(d), d["rollout"]["mean"], d["seed"]
            (['classifier', 'max_in_flight', 'prompt', 'rollout', 'seed'], 4, 1)
        """
        out: dict[str, Any] = {}
        for name in _SECTIONS:
            section = dataclasses.asdict(getattr(self, name))
            out[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in section.items()}
        out["seed"] = self.seed
        out["max_in_flight"] = self.max_in_flight
        return out

    @classmethod
    def from_mapping(cls, mapping: Any, *, where: str = "config") -> ControllerConfig:
        """Build a config from nested mappings; unknown keys are a ``ValueError`` naming them.

        Args:
            mapping: keys ``recipe`` (a name in ``gdro_core.recipes.RECIPES``, applied first),
                ``classifier``, ``prompt``, ``rollout`` (mappings of those configs' fields),
                ``seed`` and ``max_in_flight``. Lists become tuples. Missing keys keep their
                defaults (or the recipe's).
            where: how errors name the mapping (e.g. ``"data.gdro"`` for a verl config): a
                bad value is a ``ValueError`` (or ``TypeError``) starting with the key path,
                ``data.gdro.rollout: RolloutConfig.min must be ...``.

        Examples:
            >>> cfg = ControllerConfig.from_mapping({"recipe": "reward",
            ...                                      "rollout": {"mode": "bandit", "mean": 8}})
            >>> cfg.rollout.arm_signal, cfg.rollout.arm_eta, cfg.rollout.mean
            ('variance', 1000.0, 8)
        """
        top = _as_dict(mapping, where)
        unknown = sorted(set(top) - set(_SECTIONS) - set(_SCALARS) - {"recipe"})
        if unknown:
            known = ", ".join(["recipe", *_SECTIONS, *_SCALARS])
            raise fail(
                where, f"a mapping with keys among {known} (unknown key {unknown[0]!r})", top
            )
        base = recipe_mapping(top["recipe"], where=f"{where}.recipe") if "recipe" in top else {}
        kwargs: dict[str, Any] = {}
        for name, section_cls in _SECTIONS.items():
            merged = dict(_as_dict(base.get(name, {}), f"{where}.{name}"))
            merged.update(_as_dict(top.get(name, {}), f"{where}.{name}"))
            kwargs[name] = _build(section_cls, merged, f"{where}.{name}")
        for name, check in _SCALARS.items():
            if name in top or name in base:
                kwargs[name] = check(f"{where}.{name}", top.get(name, base.get(name)))
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as err:  # a check across sections
            raise type(err)(f"{where}: {err}") from None


def _bins_of(edges: tuple[float, ...] | None) -> int:
    return 10 if edges is None else len(edges) + 1


def _window_of(outcome: str) -> int:
    return 10 if outcome == "rate" else 100


def _as_dict(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):  # an OmegaConf DictConfig is a Mapping
        raise type_fail(where, "a mapping", value)
    out: dict[str, Any] = {}
    for k in value:
        if not isinstance(k, str):
            raise type_fail(f"{where} keys", "strings", k)
        out[k] = value[k]
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):  # lists, ListConfig
        return tuple(_plain(v) for v in value)
    if isinstance(value, np.ndarray):
        return tuple(value.tolist())
    return value


def _build(section_cls: type, settings: dict[str, Any], where: str) -> Any:
    names = [f.name for f in dataclasses.fields(section_cls)]
    unknown = sorted(set(settings) - set(names))
    if unknown:
        raise fail(
            where,
            f"a mapping of {section_cls.__name__} settings (unknown key {unknown[0]!r}; "
            f"known: {', '.join(sorted(names))})",
            settings,
        )
    try:
        return section_cls(**{k: _plain(v) for k, v in settings.items()})
    except (TypeError, ValueError) as err:  # the section's own message, with where it came from
        raise type(err)(f"{where}: {err}") from None
