"""A TRL GRPO script with gdro turned on: Prompt-GDRO and Rollout-GDRO in ``GRPOTrainer``.

The script is an ordinary TRL GRPO run (a model, a prompt dataset, a reward function, a
``GRPOConfig``); the lines marked ``# gdro`` are all it takes to turn gdro on. It runs on CPU with
the embedded tiny Llama and the built-in addition task, so nothing is downloaded; pass
``--model /path/to/model`` for any local causal LM in transformers format (a GPU run uses the
same lines)::

    python examples/trl/grpo_gdro.py --steps 20                      # Prompt-GDRO, reweight
    python examples/trl/grpo_gdro.py --rollout neyman --steps 20     # + Rollout-GDRO
    python examples/trl/grpo_gdro.py --plain --steps 20              # TRL's GRPOTrainer alone
    python examples/trl/grpo_gdro.py --report-to tensorboard         # gdro/ metrics in TensorBoard

The embedded model starts untrained, so it rarely solves a sum: this shows the wiring, the exact
budget and the metrics, not learning (``gdro train`` warms the model up first; docs/torch.md).
"""

from __future__ import annotations

import argparse
import os
from collections import Counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from gdro_torch.model import EMBEDDED_MODELS, build_embedded, load_local  # noqa: E402
from gdro_torch.tasks import load_task  # noqa: E402
from gdro_trl import GDROGRPOTrainer  # noqa: E402  # gdro


def exact_answer(completions: list[str], answer: list[str], **_: object) -> list[float]:
    """1.0 for a completion that is exactly the reference answer (digits reversed), else 0.0."""
    return [float(c.strip() == a) for c, a in zip(completions, answer, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llama-0.1m", help="embedded name or local dir")
    parser.add_argument("--task", default="addition:min_digits=1,max_digits=3,size=256")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--prompts-per-step", type=int, default=8)
    parser.add_argument("--generations", type=int, default=4, help="completions per prompt (mean)")
    parser.add_argument("--prompt", default="reweight", choices=["off", "reweight", "resample"])
    parser.add_argument("--rollout", default="fixed", choices=["fixed", "neyman", "bandit"])
    parser.add_argument("--plain", action="store_true", help="TRL's GRPOTrainer, without gdro")
    parser.add_argument("--out", default="runs/trl-example")
    parser.add_argument("--report-to", default="none")
    args = parser.parse_args()

    task = load_task(args.task)
    items = [task.train.item(i) for i in range(len(task.train))]
    dataset = Dataset.from_dict(
        {"prompt": [it.prompt for it in items], "answer": [it.answer for it in items]}
    )
    if args.model in EMBEDDED_MODELS:
        model, tokenizer = build_embedded(args.model, seed=0)
    else:
        model, tokenizer = load_local(args.model)
    config = GRPOConfig(
        output_dir=args.out,
        per_device_train_batch_size=args.prompts_per_step * args.generations,
        num_generations=args.generations,
        max_completion_length=task.max_answer_chars + 1,
        max_steps=args.steps,
        learning_rate=1e-4,
        logging_steps=max(1, args.steps // 5),
        save_strategy="no",
        report_to=args.report_to,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
    )
    trainer_args = dict(
        model=model,
        reward_funcs=exact_answer,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    if args.plain:
        trainer = GRPOTrainer(**trainer_args)
    else:
        gdro = {"prompt": {"mode": args.prompt}}  # gdro
        if args.rollout != "fixed":  # gdro
            gdro["rollout"] = {"mode": args.rollout, "max": 3 * args.generations}  # gdro
        trainer = GDROGRPOTrainer(**trainer_args, gdro=gdro)  # gdro
    trainer.train()

    print(f"trained {trainer.state.global_step} steps")
    if not args.plain:
        record = trainer.gdro.last_record
        print(
            f"last step: {int(record.rollouts.sum())} completions for {len(record.rollouts)} "
            f"prompts (counts {dict(sorted(Counter(record.rollouts.tolist()).items()))}), "
            f"weights {record.weights.min():.3f}..{record.weights.max():.3f}"
        )
        metrics = trainer.gdro.controller.metrics()
        keys = ("classifier/mean_bin", "prompt/entropy", "rollout/shadow_price")
        print(", ".join(f"gdro/{k} = {metrics[k]:.4g}" for k in keys))


if __name__ == "__main__":
    main()
