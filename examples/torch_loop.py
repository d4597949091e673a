"""Drive the torch GRPO step by hand: GRPO against Prompt-GDRO on the same starting model.

``gdro train`` does all of this (plus checkpoints, TensorBoard and resume); this script shows the
pieces: a task, a starting policy (cached SFT warm-up), a controller per arm, ``grpo_step`` and
held-out evaluation. It shares the SFT cache with ``gdro train`` (the default preset), so after
``make demo`` it starts at once; otherwise the 1 M model's warm-up takes about 3 minutes first.
Each arm then takes about 0.8 s per step on 2 CPU cores::

    python examples/torch_loop.py --steps 50
"""

from __future__ import annotations

import argparse
import copy

import torch

from gdro_torch.build import build_controller, check_inputs, load_policy
from gdro_torch.config import TrainConfig
from gdro_torch.evaluate import evaluate
from gdro_torch.loop import StepContext, grpo_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--model", default="tiny-llama-1m")
    parser.add_argument("--sft-steps", type=int, default=None, help="default: 2000 (cached)")
    args = parser.parse_args()

    base = TrainConfig(
        model=args.model,
        task="addition:min_digits=1,max_digits=5,eval_size=100",
        steps=args.steps,
        batch_size=32,
        controller={"rollout": {"mean": 8}},
        sft_steps=args.sft_steps,
        kl_coef=0.0,
        lr=5e-5,
    )
    task = check_inputs(base)
    start, tokenizer, cached = load_policy(base, task)  # SFT once, then from ~/.cache/gdro
    print(f"starting policy ready (from cache: {cached})")
    max_new_tokens = task.max_answer_chars + 1

    def held_out(model: torch.nn.Module) -> float:
        return evaluate(model, tokenizer, task.eval, max_new_tokens=max_new_tokens, seed=123)[
            "eval/pass@8"
        ]

    print(f"pass@8 before: {held_out(start):.3f}")
    arms = {
        "GRPO": base.replace(controller={"prompt": {"mode": "off"}, "rollout": {"mode": "fixed"}}),
        "Prompt-GDRO": base.replace(
            controller={"recipe": "reward", "prompt": {"mode": "reweight"}}
        ),
    }
    for name, cfg in arms.items():
        policy = copy.deepcopy(start)
        ctx = StepContext(
            cfg=cfg,
            task=task,
            ctl=build_controller(cfg, len(task.train)),
            policy=policy,
            ref=None,
            tokenizer=tokenizer,
            optimizer=torch.optim.AdamW(policy.parameters(), lr=cfg.lr),
            max_new_tokens=max_new_tokens,
        )
        for step in range(cfg.steps):
            m = grpo_step(ctx, step)
            if (step + 1) % 5 == 0:
                print(
                    f"{name:12s} step {step + 1:3d}  reward {m['train/reward_mean']:.3f}  "
                    f"mean bin {m['classifier/mean_bin']:.2f}  "
                    f"max weight {m['train/weight_max']:.2f}"
                )
        print(f"{name:12s} pass@8 after: {held_out(policy):.3f}")


if __name__ == "__main__":
    main()
