"""Named recipes: the settings that belong together, decided in one place.

A recipe is a nested mapping in the shape of ``ControllerConfig.from_mapping``'s input; the
mapping that names it overrides any of its settings.

* ``paper``: the paper's settings (Prompt-GDRO on the per-prompt loss, the bandits' arm loss the
  bin's mean prompt loss, arm eta 0.65, dual step 0.05, price cap 1). These are also the
  configs' defaults.
* ``reward``: reward-derived signals, for loops whose loss carries no signal (one on-policy
  update per batch and no KL: method.md section 7.6). Prompt-GDRO on the unbiased ``p(1-p)``;
  the bandits on the variance arm loss ``v_b / n`` with knobs sized to its scale: that loss is
  at most 0.125 and differs between neighbouring arms by about 0.01 near the square-root optimum,
  where the price settles near ``mu* = (sum_b q_b sqrt(v_b) / mean)^2`` (about 0.005 for mean 4),
  so arm eta 1000, dual step 2e-4 and price cap 0.1 (the paper's knobs leave the bandits flat
  and the price oscillating on it).
"""

from __future__ import annotations

import copy
from typing import Any

from gdro_core._validation import fail

__all__ = ["RECIPES", "recipe_mapping"]

RECIPES: dict[str, dict[str, Any]] = {
    "paper": {
        "prompt": {"signal": "loss"},
        "rollout": {"arm_signal": "loss", "arm_eta": 0.65, "dual_step": 0.05, "mu_max": 1.0},
    },
    "reward": {
        "prompt": {"signal": "variance"},
        "rollout": {"arm_signal": "variance", "arm_eta": 1000.0, "dual_step": 2e-4, "mu_max": 0.1},
    },
}


def recipe_mapping(name: Any, *, where: str = "recipe") -> dict[str, Any]:
    """A deep copy of the recipe's settings; an unknown name lists the known ones.

    Examples:
        >>> recipe_mapping("reward")["rollout"]["dual_step"]
        0.0002
        >>> recipe_mapping("fast")
        Traceback (most recent call last):
        ...
        ValueError: recipe must be one of ['paper', 'reward']; got 'fast'
    """
    if not isinstance(name, str) or name not in RECIPES:
        raise fail(where, f"one of {sorted(RECIPES)}", name)
    return copy.deepcopy(RECIPES[name])
