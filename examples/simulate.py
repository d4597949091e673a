"""The simulation lab's loop, read top to bottom: one GDRO controller on the simulated learner.

``gdro simulate`` runs many strategies and seeds and writes tables and plots (the command is
``gdro_cli.simulate``, the simulator ``gdro_lab``); this script shows the loop the simulator runs
for one of them, so you can see where each piece sits::

    python examples/simulate.py              # Prompt-GDRO reweighting + Neyman rollouts
    python examples/simulate.py --steps 20   # smoke mode (the test suite runs this)
"""

from __future__ import annotations

import sys

import numpy as np

from gdro_core import ControllerConfig, GDROController
from gdro_lab.controllers import strategy_config
from gdro_lab.learner import Learner, LearnerConfig
from gdro_lab.scenarios import get_scenario

SEED, NUM_PROMPTS, BATCH = 0, 14_100, 256
STEPS = int(sys.argv[sys.argv.index("--steps") + 1]) if "--steps" in sys.argv else 600

# --- the world: a heavy-tailed population of prompts and a learner with a shared ability -----
scenario = get_scenario("stationary")
population = scenario.build(np.random.default_rng([SEED, 0]), NUM_PROMPTS)
learner = Learner(LearnerConfig(), population)
generation_rng = np.random.default_rng([SEED, 1])
everyone = np.arange(NUM_PROMPTS)
print(f"initial mean success {learner.success_prob(everyone).mean():.3f}")

# --- the controller: one config object; online bins, Prompt-GDRO on the failure rate, Neyman --
config = ControllerConfig.from_mapping({
    "recipe": "paper",                                    # the paper's settings, then ours:
    "prompt": {"mode": "reweight", "signal": "failure"},  # the simulator has no per-prompt loss
    "rollout": {"mode": "neyman", "mean": 4, "min": 2, "max": 12},
    "seed": SEED,
})
assert config == strategy_config("gdro-both", seed=SEED)  # the lab's gdro-both strategy
ctl = GDROController.from_config(config, NUM_PROMPTS)
mean = config.rollout.mean  # the budget: rollouts per prompt on average, every step

for step in range(STEPS):
    # 1. the controller picks prompts, their rollouts and weights BEFORE generation
    plan = ctl.plan(ctl.sample(BATCH))
    if plan.rollouts.sum() != mean * BATCH:  # equal compute, every step
        raise RuntimeError("the plan broke the rollout budget")
    # 2. the simulated policy answers: verdicts and each group's GRPO signal
    gen = learner.generate(generation_rng, np.asarray(plan.prompt_ids),
                           np.asarray(plan.rollouts), flip_rate=scenario.flip_rate)
    # 3. one optimiser step on the weighted advantages
    learner.train(np.asarray(plan.prompt_ids), gen.levels, gen.signal,
                  np.asarray(plan.weights), np.asarray(plan.rollouts), mean)
    # 4. the controller learns from the verdicts (bins, adversary scores, variance estimates)
    ctl.update(plan, gen.reward)
    if (step + 1) % 150 == 0:
        m = ctl.metrics()
        q = [m[f"prompt/q/{b}"] for b in range(10)]
        n = [m.get(f"rollout/n_mean/{b}", float("nan")) for b in range(10)]
        print(f"step {step + 1}: success {learner.success_prob(everyone).mean():.3f}, "
              f"mean bin {m['classifier/mean_bin']:.2f}")
        print("  q        " + " ".join(f"{x:5.2f}" for x in q))
        print("  rollouts " + " ".join(f"{x:5.1f}" for x in n))
