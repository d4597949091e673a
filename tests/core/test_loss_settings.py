"""``ControllerConfig.loss_settings`` says exactly when the controller needs per-prompt losses.

The adapters (verl, TRL) and the lab refuse a config by it before a run starts, so it must agree
with what ``GDROController.update`` itself demands, for every mode and signal.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gdro_core import SIGNALS, ControllerConfig, GDROController
from gdro_core.allocators import ALLOCATORS


@pytest.mark.parametrize(
    ("prompt_mode", "signal", "rollout_mode", "arm_signal"),
    list(itertools.product(("off", "reweight", "resample"), sorted(SIGNALS),
                           ("fixed", "bandit", "neyman"), ("loss", "variance"))),
)
def test_loss_settings_agree_with_what_update_demands(
    prompt_mode: str, signal: str, rollout_mode: str, arm_signal: str
) -> None:
    cfg = ControllerConfig.from_mapping({
        "prompt": {"mode": prompt_mode, "signal": signal},
        "rollout": {"mode": rollout_mode, "arm_signal": arm_signal, "max": 8},
        "seed": 0,
    })
    needs = dict(cfg.loss_settings())
    ctl = GDROController.from_config(cfg, 20)
    plan = ctl.plan(ctl.sample(6))
    rewards = np.zeros(plan.num_rollouts)
    if needs:
        with pytest.raises(ValueError, match="loss"):
            ctl.update(plan, rewards)
        ctl.update(plan, rewards, np.ones(6))  # the refused call lost nothing
    else:
        ctl.update(plan, rewards)
    assert ("prompt.signal" in needs) == (prompt_mode != "off" and signal == "loss")
    assert ("rollout.arm_signal" in needs) == (
        ALLOCATORS[rollout_mode].uses_arm_signal and arm_signal == "loss")
