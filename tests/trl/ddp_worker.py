"""One rank of a 2-process CPU run (gloo), started by test_multiprocess.py (or torchrun).

Writes what this rank's controller planned and fed back, and its final state, to
``<out>/rank<r>.json``; the test compares the ranks.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

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
        reward_funcs=h.noisy_verifier,
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
    trainer.train()
    state = trainer.gdro.controller.state_dict()
    result = {
        "world": trainer.accelerator.num_processes,
        "plans": [
            [
                r.serial,
                r.prompt_ids.tolist(),
                r.rollouts.tolist(),
                r.weights.tolist(),
                r.rewards.tolist(),
            ]
            for r in recorder.records
        ],
        "step": trainer.gdro.controller.step,
        "bins": np.asarray(trainer.gdro.controller.bins(np.arange(12))).tolist(),
        "rng": str(state.get("rng")),
    }
    (out / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
