"""gdro_core: Group-DRO controllers for GRPO, framework-free (numpy and numba only).

* an online difficulty classifier (sliding-window pass rates, bins, hysteresis);
* Prompt-GDRO, an exponential-weights adversary over bins that reweights or resamples prompts;
* Rollout-GDRO, per-bin rollout counts under an exact mean budget with a moving shadow price,
  or the square-root (Neyman) law.

Importing this package never imports torch, verl or any training framework.
"""

from gdro_core.classifier import ClassifierConfig, DifficultyClassifier
from gdro_core.config import ControllerConfig
from gdro_core.controller import GDROController, Plan
from gdro_core.passk import pass_at_k
from gdro_core.prompt import PromptConfig
from gdro_core.recipes import RECIPES
from gdro_core.rollout import RolloutConfig
from gdro_core.signals import SIGNALS, Signal, register_signal

__all__ = [
    "ClassifierConfig",
    "ControllerConfig",
    "DifficultyClassifier",
    "GDROController",
    "Plan",
    "PromptConfig",
    "RECIPES",
    "RolloutConfig",
    "SIGNALS",
    "Signal",
    "pass_at_k",
    "register_signal",
]
__version__ = "0.1.0"
