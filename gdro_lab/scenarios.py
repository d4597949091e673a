r"""Scenarios: the prompt population and how it changes while the policy trains.

Each scenario builds a :class:`~gdro_lab.learner.Population` from a seed and says how the world
moves: drift offsets per topic and step, and the fraction of flipped verdicts.

* ``stationary``: heavy-tailed difficulty, :math:`d = -2.5 + 1.2\,X` with :math:`X` Lomax
  (Pareto II) of shape 1.5, capped at 8 logits: an easy core (median pass rate about 0.86) and a
  long tail of hard prompts (about 10% below 0.15, a few percent essentially unsolvable at first).
* ``drifting``: the same population split into 4 topics whose difficulty offsets follow
  :math:`o_k(t) = A\sin(2\pi t/P + 2\pi k/4)` with :math:`A = 1.5` logits and :math:`P = 400` steps,
  so which prompts are hard keeps changing and a controller must track it.
* ``rare-hard-tail``: 97% of prompts in an easy core (:math:`d \sim N(-2, 1)`) and a rare 3%
  cluster near :math:`d \sim N(3.5, 0.5)` (pass rate about 3%): GRPO rarely sees it and almost
  never sees it mixed.
* ``noisy-rewards``: the stationary population with 10% of verdicts flipped (the learner is
  trained on the noisy verdicts; evaluation uses the true success probability).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from gdro_core._validation import check_float, check_int
from gdro_lab.learner import Population

__all__ = ["SCENARIOS", "Scenario", "get_scenario"]


def _lomax_population(rng: np.random.Generator, n: int) -> NDArray[np.float32]:
    d = -2.5 + 1.2 * rng.pareto(1.5, size=n)
    return np.minimum(d, 8.0).astype(np.float32)


def _stationary(rng: np.random.Generator, n: int) -> Population:
    d = _lomax_population(rng, n)
    topic = rng.integers(0, 4, size=n, dtype=np.int8)
    return Population(d, topic, -4.0, 8.0)


def _rare_hard_tail(rng: np.random.Generator, n: int) -> Population:
    hard = rng.random(n) < 0.03
    d = np.where(hard, rng.normal(3.5, 0.5, size=n), rng.normal(-2.0, 1.0, size=n))
    topic = rng.integers(0, 4, size=n, dtype=np.int8)
    return Population(np.clip(d, -6.0, 8.0).astype(np.float32), topic, -6.0, 8.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """How a simulated world is built and how it changes.

    Attributes:
        name: registry name.
        description: one line for tables and ``--help``.
        build: ``build(rng, num_prompts)`` returns the population.
        flip_rate: probability that a verdict is flipped, in [0, 0.5).
        drift_amplitude: amplitude of the topic offsets in logits (0 = stationary).
        drift_period: period of the topic offsets in steps.
        num_topics: number of topics the offsets are defined for.

    Examples:
        The registered scenarios, and the drifting one's topic offsets a quarter period apart:

        >>> list(SCENARIOS)
        ['stationary', 'drifting', 'rare-hard-tail', 'noisy-rewards']
        >>> drifting = SCENARIOS["drifting"]
        >>> np.round(drifting.offsets(0), 3), np.round(drifting.offsets(100), 3)
        (array([ 0. ,  1.5,  0. , -1.5]), array([ 1.5,  0. , -1.5, -0. ]))
        >>> print(SCENARIOS["stationary"].offsets(0))
        None
        >>> pop = SCENARIOS["rare-hard-tail"].build(np.random.default_rng(0), 1000)
        >>> pop.num_prompts, int((pop.difficulty > 2.0).sum())  # about 3% in the hard cluster
        (1000, 33)

        A custom scenario (verdicts flipped half the time would carry no information):

        >>> flat = Scenario(name="flat", description="every prompt at difficulty 0",
        ...                 build=lambda rng, n: Population(np.zeros(n, np.float32),
        ...                                                 np.zeros(n, np.int8), -4.0, 4.0))
        >>> flat.build(np.random.default_rng(0), 3).difficulty
        array([0., 0., 0.], dtype=float32)
        >>> Scenario(name="coin", description="", build=flat.build, flip_rate=0.5)
        Traceback (most recent call last):
            ...
        ValueError: Scenario.flip_rate must be a finite number in [0, 0.5); got 0.5
    """

    name: str
    description: str
    build: Callable[[np.random.Generator, int], Population]
    flip_rate: float = 0.0
    drift_amplitude: float = 0.0
    drift_period: float = 400.0
    num_topics: int = 4

    def __post_init__(self) -> None:
        check_float("Scenario.flip_rate", self.flip_rate, lo=0.0, hi=0.5, hi_open=True)
        check_float("Scenario.drift_amplitude", self.drift_amplitude, lo=0.0)
        check_float("Scenario.drift_period", self.drift_period, lo=0.0, lo_open=True)
        check_int("Scenario.num_topics", self.num_topics, lo=1, hi=127)

    def offsets(self, step: int) -> NDArray[np.float64] | None:
        """Difficulty offset of each topic at ``step`` (float64 (num_topics,)), or None."""
        if self.drift_amplitude == 0.0:
            return None
        phase = (
            2.0 * np.pi * (step / self.drift_period + np.arange(self.num_topics) / self.num_topics)
        )
        out: NDArray[np.float64] = self.drift_amplitude * np.sin(phase)
        return out


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            name="stationary",
            description="heavy-tailed (Lomax) difficulty, fixed",
            build=_stationary,
        ),
        Scenario(
            name="drifting",
            description="heavy-tailed difficulty, 4 topics drifting by +-1.5 logits (period 400)",
            build=_stationary,
            drift_amplitude=1.5,
        ),
        Scenario(
            name="rare-hard-tail",
            description="97% easy core, 3% hard cluster (pass rate ~3%)",
            build=_rare_hard_tail,
        ),
        Scenario(
            name="noisy-rewards",
            description="heavy-tailed difficulty, 10% of verdicts flipped",
            build=_stationary,
            flip_rate=0.10,
        ),
    )
}


def get_scenario(name: str) -> Scenario:
    """Look a scenario up by name.

    Args:
        name: a key of :data:`SCENARIOS`.

    Returns:
        The :class:`Scenario`.

    Raises:
        ValueError: unknown name; the message lists the valid ones.

    Examples:
        >>> get_scenario("noisy-rewards").flip_rate
        0.1
        >>> get_scenario("drifting").description
        'heavy-tailed difficulty, 4 topics drifting by +-1.5 logits (period 400)'
        >>> try:
        ...     get_scenario("easy")
        ... except ValueError as exc:
        ...     print(exc)
        scenario must be one of stationary, drifting, rare-hard-tail, noisy-rewards; got 'easy'
    """
    if name not in SCENARIOS:
        raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}; got {name!r}")
    return SCENARIOS[name]
