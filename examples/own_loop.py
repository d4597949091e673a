"""Add gdro to your own RL loop: a toy policy whose per-prompt success rises when trained on.

    python examples/own_loop.py            # 200 steps
    python examples/own_loop.py --steps 5  # smoke mode (the test suite runs this)
"""

from __future__ import annotations

import argparse

import numpy as np

from gdro_core import GDROController, PromptConfig, RolloutConfig


def main(steps: int = 200, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    skill = rng.normal(-1.5, 1.5, size=5000)  # a latent per-prompt ability, heavy hard tail
    ctl = GDROController(
        num_prompts=5000,
        prompt=PromptConfig(mode="reweight", signal="failure"),
        rollout=RolloutConfig(mode="neyman", mean=4),
        seed=seed,
    )
    for _ in range(steps):
        plan = ctl.plan(ctl.sample(128))  # bins, rollouts and weights, before generation
        p = 1 / (1 + np.exp(-skill[plan.prompt_ids]))  # "generate" plan.rollouts[i] answers each
        rewards = (rng.random(plan.num_rollouts) < np.repeat(p, plan.rollouts)).astype(float)
        groups = np.split(rewards, plan.offsets[1:-1])
        mixed = np.array([g.std() > 0 for g in groups])  # only mixed groups carry a GRPO gradient
        skill[plan.prompt_ids] += 0.05 * plan.weights * mixed  # "train" with the weights
        ctl.update(plan, rewards)
    return ctl.metrics()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    m = main(ap.parse_args().steps)
    print({k: round(v, 3) for k, v in m.items() if k.startswith(("classifier/mean_bin", "rollout/n_mean", "batch/"))})
