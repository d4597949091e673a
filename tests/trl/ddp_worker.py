"""One rank of a 2-process CPU run (gloo), started by test_multiprocess.py (or torchrun).

Writes what this rank saw to ``<out>/rank<r>.pkl``: gdro's record of every generation batch, the
advantages the loss got on this rank, what the reward functions returned for this rank's rows,
the controller's calls and plans, and its final state. The test compares the ranks and replays the
run with a reference controller.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import sys
from pathlib import Path
from typing import Any

from gdro_trl import GDROGRPOTrainer


def _helpers() -> Any:
    """tests/trl/conftest.py, loaded under its own name (no clash with other conftest modules)."""
    path = Path(__file__).resolve().parent / "conftest.py"
    spec = importlib.util.spec_from_file_location("gdro_trl_test_helpers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    h = _helpers()
    out = Path(sys.argv[1])
    rank = int(os.environ["RANK"])
    recorder = h.Recorder()
    cls = type("RecordingTrainer", (h.Recording, GDROGRPOTrainer), {"recorder": recorder})
    model, tok = h.tiny_model()
    trainer = cls(
        model=model,
        reward_funcs=[h.logged(h.noisy_verifier, recorder)],
        args=h.grpo_args(
            out / "run",
            per_device_train_batch_size=8,
            num_iterations=1,
            max_steps=6,
            save_strategy="steps",
            save_steps=3,
        ),
        train_dataset=h.addition_dataset(12),
        processing_class=tok,
        callbacks=[recorder],
        gdro={
            "prompt": {"mode": "reweight"},
            "rollout": {"mode": "neyman", "max": 8},
            "classifier": {"num_bins": 4},
        },
    )
    recorder.trainer = trainer
    recorder.watch(trainer.gdro.controller)
    trainer.train()
    gdro = trainer.gdro
    result = {
        "world": trainer.accelerator.num_processes,
        "records": recorder.records,
        "loss_advantages": recorder.loss_advantages,
        # plain tuples: the helpers module is not importable by name where this is read
        "reward_calls": [
            {n: tuple(c) for n, c in calls.items()} for calls in recorder.reward_calls
        ],
        "events": recorder.events,
        "plans": recorder.plans,
        "state": gdro.controller.state_dict(),
        "controller": {
            "num_prompts": gdro.num_prompts,
            "classifier": gdro.config.classifier,
            "prompt": gdro.config.prompt,
            "rollout": gdro.rollout_config,
            "seed": gdro.config.seed,
            "max_in_flight": gdro.layout.max_in_flight,
        },
        "prompts_per_block": gdro.layout.prompts,
        "reward_weights": trainer.reward_weights.tolist(),
    }
    (out / f"rank{rank}.pkl").write_bytes(pickle.dumps(result))


if __name__ == "__main__":
    main()
