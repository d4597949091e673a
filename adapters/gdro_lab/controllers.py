"""The GDRO strategies: ``gdro_core.GDROController`` driven through the lab's interface.

Uniform GRPO is the controller with the prompt adversary ``"off"`` (it still scores bins, so its
metrics show what the adversary would do) and ``"fixed"`` rollouts; the other names switch on
Prompt-GDRO, Rollout-GDRO or both. Rollout-GDRO's bandit runs on the variance arm loss (the
simulator has no token-level loss) with ``RolloutConfig.variance_bandit``'s knobs, sized to that
loss (``rollout-bandit``); ``rollout-bandit-paper`` keeps the paper's knobs (arm eta 0.65, dual
step 0.05, price cap 1), which leave the bandits flat on this loss, for comparison. The
controller samples the prompts (reshuffled epochs, or bins drawn from the adversary in
``"resample"`` mode), plans rollouts and weights before generation, and is updated with the
step's verdicts; the lab only generates and trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gdro_core import ClassifierConfig, GDROController, PromptConfig, RolloutConfig
from gdro_core._validation import check_choice, check_float, check_int
from gdro_lab.base import Proposal, TrainBatch
from gdro_lab.learner import Generation

__all__ = [
    "GDRO_MODES",
    "PAPER_KNOBS",
    "ControllerKnobs",
    "ControllerStrategy",
    "make_controller",
    "rollout_config",
]

# name -> (prompt mode, rollout mode)
GDRO_MODES: dict[str, tuple[str, str]] = {
    "uniform": ("off", "fixed"),
    "prompt-reweight": ("reweight", "fixed"),
    "prompt-resample": ("resample", "fixed"),
    "rollout-bandit": ("off", "bandit"),
    "rollout-bandit-paper": ("off", "bandit"),
    "rollout-neyman": ("off", "neyman"),
    "gdro-both": ("reweight", "neyman"),
}
# bandit strategies that keep RolloutConfig's paper defaults instead of variance_bandit's knobs
PAPER_KNOBS = frozenset({"rollout-bandit-paper"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ControllerKnobs:
    """Controller settings the lab exposes (everything else keeps ``gdro_core``'s defaults).

    Attributes:
        num_bins: classifier bins.
        signal: Prompt-GDRO signal, ``"failure"`` or ``"variance"`` (reward-derived).
        score_rule: ``"ema"`` (the paper's rule) or ``"cumulative"`` (textbook Hedge).
        eta: Prompt-GDRO temperature (None = the core's default).
        min_rollouts: fewest rollouts per prompt.
        max_rollouts: most rollouts per prompt.
        dual_step: step size of the shadow price (None = the default of the strategy's rollout
            config: 2e-4 for ``rollout-bandit``, ``RolloutConfig.variance_bandit``'s; 0.05, the
            paper's, for ``rollout-bandit-paper``).
        selection: Rollout-GDRO bandit selection, ``"mode"`` or ``"sample"``.
        arm_signal: Rollout-GDRO bandit arm loss; ``"variance"`` (reward-derived, the bin's
            unbiased p(1-p) over n) since the simulator has no token-level loss.

    Examples:
        >>> knobs = ControllerKnobs(num_bins=5, score_rule="cumulative")
        >>> knobs.num_bins, knobs.score_rule, knobs.min_rollouts, knobs.max_rollouts
        (5, 'cumulative', 2, 12)
        >>> ControllerKnobs(signal="loss")
        Traceback (most recent call last):
            ...
        ValueError: ControllerKnobs.signal must be one of ['failure', 'variance']; got 'loss'
    """

    num_bins: int = 10
    signal: str = "failure"
    score_rule: str = "ema"
    eta: float | None = None
    min_rollouts: int = 2
    max_rollouts: int = 12
    dual_step: float | None = None
    selection: str = "mode"
    arm_signal: str = "variance"

    def __post_init__(self) -> None:
        check_int("ControllerKnobs.num_bins", self.num_bins, lo=1)
        check_choice("ControllerKnobs.signal", self.signal, ("failure", "variance"))
        check_choice("ControllerKnobs.score_rule", self.score_rule, ("ema", "cumulative"))
        check_choice("ControllerKnobs.selection", self.selection, ("mode", "sample"))
        check_choice("ControllerKnobs.arm_signal", self.arm_signal, ("variance",))
        check_int("ControllerKnobs.min_rollouts", self.min_rollouts, lo=2)
        check_int("ControllerKnobs.max_rollouts", self.max_rollouts, lo=self.min_rollouts)
        if self.eta is not None:
            check_float("ControllerKnobs.eta", self.eta, lo=0.0)
        if self.dual_step is not None:
            check_float("ControllerKnobs.dual_step", self.dual_step, lo=0.0)


def rollout_config(name: str, *, mean_rollouts: int, knobs: ControllerKnobs) -> RolloutConfig:
    """The Rollout-GDRO settings behind a GDRO strategy name (a key of :data:`GDRO_MODES`).

    Bandit mode uses the variance arm loss: ``RolloutConfig.variance_bandit`` (arm eta 1000, dual
    step 2e-4, price cap 0.1) except for the names in :data:`PAPER_KNOBS`, which keep the core's
    paper defaults (0.65, 0.05, 1.0). An explicit ``knobs.dual_step`` overrides either.

    Examples:
        >>> cfg = rollout_config("rollout-bandit", mean_rollouts=4, knobs=ControllerKnobs())
        >>> cfg.arm_signal, cfg.arm_eta, cfg.dual_step, cfg.mu_max
        ('variance', 1000.0, 0.0002, 0.1)
        >>> cfg = rollout_config("rollout-bandit-paper", mean_rollouts=4,
        ...                      knobs=ControllerKnobs(dual_step=0.1))
        >>> cfg.arm_signal, cfg.arm_eta, cfg.dual_step, cfg.mu_max
        ('variance', 0.65, 0.1, 1.0)
    """
    rollout_mode = GDRO_MODES[name][1]
    kw: dict[str, Any] = {
        "mean": mean_rollouts,
        "min": knobs.min_rollouts,
        "max": knobs.max_rollouts,
        "selection": knobs.selection,
    }
    if knobs.dual_step is not None:
        kw["dual_step"] = knobs.dual_step
    if rollout_mode == "bandit" and name not in PAPER_KNOBS:
        return RolloutConfig.variance_bandit(arm_signal=knobs.arm_signal, **kw)
    kw["mode"] = rollout_mode
    if rollout_mode == "bandit":
        kw["arm_signal"] = knobs.arm_signal
    return RolloutConfig(**kw)


def make_controller(
    name: str, *, num_prompts: int, mean_rollouts: int, seed: int, knobs: ControllerKnobs
) -> GDROController:
    """Build the controller behind a GDRO strategy name (a key of :data:`GDRO_MODES`).

    Args:
        name: the strategy name.
        num_prompts: population size N.
        mean_rollouts: mean rollouts per prompt (the budget).
        seed: the controller's seed.
        knobs: controller settings.

    Returns:
        A fresh ``gdro_core.GDROController``.

    Examples:
        >>> c = make_controller("gdro-both", num_prompts=100, mean_rollouts=4, seed=0,
        ...                     knobs=ControllerKnobs(num_bins=5))
        >>> c.num_bins, c.prompt_config.mode, c.rollout_config.mode, c.prompt_config.eta
        (5, 'reweight', 'neyman', 0.65)
        >>> plan = c.plan(c.sample(8))  # nothing seen yet: every prompt in bin 0, 4 rollouts
        >>> plan.bins.tolist(), plan.rollouts.tolist()
        ([0, 0, 0, 0, 0, 0, 0, 0], [4, 4, 4, 4, 4, 4, 4, 4])
    """
    prompt_mode = GDRO_MODES[name][0]
    prompt_kw: dict[str, Any] = {
        "mode": prompt_mode,
        "signal": knobs.signal,
        "score_rule": knobs.score_rule,
    }
    if knobs.eta is not None:
        prompt_kw["eta"] = knobs.eta
    return GDROController(
        num_prompts=num_prompts,
        classifier=ClassifierConfig(num_bins=knobs.num_bins),
        prompt=PromptConfig(**prompt_kw),
        rollout=rollout_config(name, mean_rollouts=mean_rollouts, knobs=knobs),
        seed=seed,
    )


class ControllerStrategy:
    """A GDRO strategy: the controller samples, plans and learns; the lab generates and trains.

    Args:
        name: a key of :data:`GDRO_MODES`.
        num_prompts: population size N.
        batch_size: prompts per step.
        mean_rollouts: mean rollouts per prompt (the budget).
        seed: the controller's seed.
        knobs: controller settings.

    Examples:
        Four steps of ``gdro-both`` on 16 simulated prompts with 3 bins:

        >>> from gdro_lab.learner import Learner, LearnerConfig
        >>> from gdro_lab.scenarios import get_scenario
        >>> knobs = ControllerKnobs(num_bins=3)
        >>> strategy = ControllerStrategy("gdro-both", num_prompts=16, batch_size=8,
        ...                               mean_rollouts=4, seed=0, knobs=knobs)
        >>> pop = get_scenario("stationary").build(np.random.default_rng(0), 16)
        >>> learner, rng = Learner(LearnerConfig(), pop), np.random.default_rng(1)
        >>> for _ in range(4):
        ...     proposal = strategy.propose()
        ...     generation = learner.generate(rng, proposal.ids, proposal.rollouts)
        ...     learner.train(*strategy.observe(proposal, generation), mean_rollouts=4)

        By the last step the classifier has seen every prompt; the plan gives the prompts of bin
        0 (all failed in this batch) more rollouts than those of bin 2, 32 in all:

        >>> proposal.bins.tolist(), proposal.rollouts.tolist()
        ([0, 0, 2, 2, 2, 0, 2, 2], [5, 5, 3, 4, 3, 5, 4, 3])
        >>> m = strategy.metrics()
        >>> m["batch/reward/0"], round(m["batch/reward/2"], 3), m["rollout/budget_realized"]
        (0.0, 0.933, 4.0)
        >>> [round(m[f"prompt/q/{b}"], 3) for b in range(3)]
        [0.353, 0.291, 0.356]
    """

    def __init__(
        self,
        name: str,
        *,
        num_prompts: int,
        batch_size: int,
        mean_rollouts: int,
        seed: int,
        knobs: ControllerKnobs,
    ) -> None:
        self.name = name
        self.batch_size = batch_size
        self.controller = make_controller(
            name, num_prompts=num_prompts, mean_rollouts=mean_rollouts, seed=seed, knobs=knobs
        )
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
