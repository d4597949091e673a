"""The GDRO strategies: named ``ControllerConfig`` mappings, and the controller behind each.

Each strategy is a mapping in the shape of ``gdro_core.ControllerConfig.from_mapping``'s input:
a core recipe (``gdro_core.recipes``: ``"paper"`` for the paper's settings, ``"reward"`` for the
knobs sized to reward-derived signals) plus the lab's choices. The lab passes no per-prompt
losses (the simulator has no token-level loss), so every strategy's Prompt-GDRO signal is the
failure rate and its bandit runs on the variance arm loss. Uniform GRPO is the controller with
the prompt adversary ``"off"`` (it still scores bins, so its metrics show what the adversary
would do) and ``"fixed"`` rollouts; ``rollout-bandit`` takes the ``reward`` recipe's bandit
knobs; ``rollout-bandit-paper`` keeps the paper's (which leave the bandits flat on that loss),
for comparison. Settings a user overrides (``SimConfig.controller``, the ``gdro simulate`` flags)
go on top of the strategy's mapping (:func:`strategy_config`), and the controller is
``GDROController.from_config`` of the result.

The controller samples the prompts (reshuffled epochs, or bins drawn from the adversary in
``"resample"`` mode), plans rollouts and weights before generation, and is updated with the
step's verdicts; the lab only generates and trains.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from gdro_core import ControllerConfig, GDROController
from gdro_core._validation import fail, type_fail
from gdro_lab.base import Proposal, TrainBatch
from gdro_lab.learner import Generation

__all__ = ["GDRO_STRATEGIES", "ControllerStrategy", "strategy_config"]


def _strategy(recipe: str, prompt: str, rollout: str, **settings: Any) -> dict[str, Any]:
    return {
        "recipe": recipe,
        "prompt": {"mode": prompt, "signal": "failure"},
        "rollout": {"mode": rollout, **settings},
    }


#: name -> its ``ControllerConfig.from_mapping`` input: a recipe, the prompt and rollout modes.
GDRO_STRATEGIES: dict[str, dict[str, Any]] = {
    "uniform": _strategy("paper", "off", "fixed"),
    "prompt-reweight": _strategy("paper", "reweight", "fixed"),
    "prompt-resample": _strategy("paper", "resample", "fixed"),
    "rollout-bandit": _strategy("reward", "off", "bandit"),
    "rollout-bandit-paper": _strategy("paper", "off", "bandit", arm_signal="variance"),
    "rollout-neyman": _strategy("paper", "off", "neyman"),
    "gdro-both": _strategy("paper", "reweight", "neyman"),
}


def strategy_config(
    name: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    seed: int | None = None,
    where: str = "overrides",
) -> ControllerConfig:
    """A strategy's ``ControllerConfig``: its mapping with ``overrides`` on top, and the seed.

    Args:
        name: a key of :data:`GDRO_STRATEGIES`.
        overrides: settings in ``ControllerConfig.from_mapping``'s shape; a section given here
            (``classifier``, ``prompt``, ``rollout``) updates the strategy's section key by key,
            any other key replaces the strategy's value.
        seed: the controller's seed (``None``: fresh OS entropy).
        where: how errors name ``overrides`` (e.g. ``"SimConfig.controller"``).

    Returns:
        ``ControllerConfig.from_mapping`` of the merged mapping.

    Examples:
        >>> cfg = strategy_config("rollout-bandit-paper", {"rollout": {"dual_step": 0.1}}, seed=3)
        >>> cfg.prompt.mode, cfg.rollout.arm_signal, cfg.rollout.arm_eta, cfg.rollout.dual_step
        ('off', 'variance', 0.65, 0.1)
        >>> cfg == ControllerConfig.from_mapping({"recipe": "paper", "seed": 3,
        ...     "prompt": {"mode": "off", "signal": "failure"},
        ...     "rollout": {"mode": "bandit", "arm_signal": "variance", "dual_step": 0.1}})
        True
        >>> strategy_config("uniform", {"prompt": {"etaa": 1.0}})
        Traceback (most recent call last):
            ...
        ValueError: overrides.prompt must be a mapping of PromptConfig settings (unknown key 'etaa'; known: ema, eta, exact_q, gamma, mode, score_clip, score_rule, share_floor, share_normalize, signal, weight_cap); got {'signal': 'failure', 'mode': 'off', 'etaa': 1.0}
        >>> strategy_config("bogus")
        Traceback (most recent call last):
            ...
        ValueError: strategy must be one of uniform, prompt-reweight, prompt-resample, rollout-bandit, rollout-bandit-paper, rollout-neyman, gdro-both; got 'bogus'
    """
    if name not in GDRO_STRATEGIES:
        raise fail("strategy", "one of " + ", ".join(GDRO_STRATEGIES), name)
    if not isinstance(overrides, Mapping | None):
        raise type_fail(where, "a mapping", overrides)
    mapping: dict[str, Any] = {**GDRO_STRATEGIES[name], "seed": seed}
    for key, value in (overrides or {}).items():
        both = isinstance(value, Mapping) and isinstance(mapping.get(key), Mapping)
        mapping[key] = {**mapping[key], **value} if both else value
    return ControllerConfig.from_mapping(mapping, where=where)


class ControllerStrategy:
    """A GDRO strategy: the controller samples, plans and learns; the lab generates and trains.

    Args:
        name: the strategy's name (a key of :data:`GDRO_STRATEGIES` in the lab).
        config: the controller's settings (e.g. from :func:`strategy_config`).
        num_prompts: population size N.
        batch_size: prompts per step.

    Attributes:
        controller: the ``GDROController.from_config(config, num_prompts)``.

    Examples:
        Four steps of ``gdro-both`` with 3 bins on 16 simulated prompts:

        >>> from gdro_lab.learner import Learner, LearnerConfig
        >>> from gdro_lab.scenarios import get_scenario
        >>> config = strategy_config("gdro-both", {"classifier": {"num_bins": 3}}, seed=0)
        >>> strategy = ControllerStrategy("gdro-both", config, num_prompts=16, batch_size=8)
        >>> pop = get_scenario("stationary").build(np.random.default_rng(0), 16)
        >>> learner, rng = Learner(LearnerConfig(), pop), np.random.default_rng(1)
        >>> for _ in range(4):
        ...     proposal = strategy.propose()
        ...     generation = learner.generate(rng, proposal.ids, proposal.rollouts)
        ...     learner.train(*strategy.observe(proposal, generation), mean=4)

        By the last step the classifier has seen every prompt; the two bins of this batch have
        similar variance proxies, so the square-root law gives every prompt the mean, 32 in all:

        >>> proposal.bins.tolist(), proposal.rollouts.tolist()
        ([0, 0, 2, 2, 2, 0, 2, 2], [4, 4, 4, 4, 4, 4, 4, 4])
        >>> m = strategy.metrics()
        >>> m["batch/reward/0"], round(m["batch/reward/2"], 3), m["rollout/mean_realized"]
        (0.0, 0.95, 4.0)
        >>> [round(m[f"prompt/q/{b}"], 3) for b in range(3)]
        [0.194, 0.594, 0.212]
    """

    def __init__(
        self, name: str, config: ControllerConfig, *, num_prompts: int, batch_size: int
    ) -> None:
        self.name = name
        self.batch_size = batch_size
        self.controller = GDROController.from_config(config, num_prompts)
        self.num_bins = int(self.controller.num_bins)

    def propose(self) -> Proposal:
        """``sample`` then ``plan``: bins, rollouts and weights decided before generation."""
        plan = self.controller.plan(self.controller.sample(self.batch_size))
        return Proposal(
            np.asarray(plan.prompt_ids),
            np.asarray(plan.rollouts),
            np.asarray(plan.weights),
            np.asarray(plan.bins),
            plan,
        )

    def observe(self, proposal: Proposal, generation: Generation) -> TrainBatch:
        """``update`` the controller with the verdicts; train on the whole batch."""
        self.controller.update(proposal.handle, generation.reward)
        return TrainBatch(
            proposal.ids, generation.levels, generation.signal, proposal.weights, proposal.rollouts
        )

    def metrics(self) -> dict[str, float]:
        """``GDROController.metrics()`` verbatim."""
        return {k: float(v) for k, v in self.controller.metrics().items()}
