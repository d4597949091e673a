"""gdro_lab: a fast numpy simulation lab for GRPO with and without GDRO controllers.

It runs strategies on a simulated learner (:mod:`gdro_lab.learner`) in a scenario
(:mod:`gdro_lab.scenarios`) at equal rollout compute (:func:`run_one`, one strategy and seed of a
:class:`SimConfig`), writes each run as a run directory (:func:`write_run`) and aggregates the
runs into outcome tables and theory checks (:func:`summarise`, :func:`to_markdown`,
:func:`write_results`, :mod:`gdro_lab.theory`). The GDRO strategies are
``gdro_core.GDROController`` (:mod:`gdro_lab.controllers`); the alternatives users pick today live
in :mod:`gdro_lab.strategies`, separate from ``gdro_core``. This package is the simulator only:
the ``gdro simulate`` command, its progress bar, tables and figures are
:mod:`gdro_cli.simulate` and :mod:`gdro_cli.figures`. Importing it imports neither torch, rich
nor matplotlib.
"""

from gdro_lab.learner import Generation, Learner, LearnerConfig, Population, group_signal
from gdro_lab.run import STRATEGIES, RunResult, SimConfig, run_one, write_run
from gdro_lab.scenarios import SCENARIOS, Scenario, get_scenario
from gdro_lab.summary import summarise, to_markdown, write_results

__all__ = [
    "SCENARIOS",
    "STRATEGIES",
    "Generation",
    "Learner",
    "LearnerConfig",
    "Population",
    "RunResult",
    "Scenario",
    "SimConfig",
    "get_scenario",
    "group_signal",
    "run_one",
    "summarise",
    "to_markdown",
    "write_results",
    "write_run",
]
