"""gdro_lab: a fast numpy simulation lab for GRPO with and without GDRO controllers.

``gdro simulate`` (:mod:`gdro_lab.cli`) runs strategies on a simulated learner
(:mod:`gdro_lab.learner`) in a scenario (:mod:`gdro_lab.scenarios`) at equal rollout compute and
writes outcome tables, theory checks (:mod:`gdro_lab.theory`) and plots. The GDRO strategies are
``gdro_core.GDROController`` (:mod:`gdro_lab.controllers`); the alternatives users pick today live
in :mod:`gdro_lab.strategies`, separate from ``gdro_core``. Importing this package imports neither
torch nor matplotlib.
"""

from gdro_lab.learner import Generation, Learner, LearnerConfig, Population, group_signal
from gdro_lab.scenarios import SCENARIOS, Scenario, get_scenario

__all__ = [
    "SCENARIOS",
    "Generation",
    "Learner",
    "LearnerConfig",
    "Population",
    "Scenario",
    "get_scenario",
    "group_signal",
]
