"""Two processes (gloo on CPU, started as torchrun starts them): every rank plans the same
blocks, feeds back alike and trains on its own slice of the generation batch."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import (
    Recorder,
    RewardCall,
    addition_dataset,
    batches_of,
    check_against_reference,
    same_state,
    text_ids,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@pytest.mark.slow
def test_two_ranks_share_one_plan(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(
            [*os.environ.get("PYTHONPATH", "").split(os.pathsep), str(ROOT / "adapters")]
        ).strip(os.pathsep),
    }
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # the two ranks as torchrun would start them (its launcher only sets these variables)
    world = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "ddp_worker.py"), str(tmp_path)],
            cwd=tmp_path,
            env={**env, **world, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    try:
        errors = [proc.communicate(timeout=300)[1] for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    assert [proc.returncode for proc in procs] == [0, 0], errors[0][-3000:] + errors[1][-3000:]
    ranks = [pickle.loads((tmp_path / f"rank{r}.pkl").read_bytes()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    # the same controller on both ranks: every plan, every record and the whole final state
    assert same_state(ranks[0]["state"], ranks[1]["state"])
    assert ranks[0]["events"] == ranks[1]["events"]
    for a, b in zip(ranks[0]["plans"], ranks[1]["plans"], strict=True):
        assert a.serial == b.serial and np.array_equal(a.prompt_ids, b.prompt_ids)
        assert np.array_equal(a.rollouts, b.rollouts) and np.array_equal(a.weights, b.weights)
    records = ranks[0]["records"]
    assert [r.serial for r in records] == [1, 2, 3, 4, 5, 6] and ranks[0]["state"]["step"] == 6
    for r0, r1 in zip(records, ranks[1]["records"], strict=True):
        for field in ("prompt_ids", "rollouts", "weights", "rewards", "advantages"):
            assert np.array_equal(getattr(r0, field), getattr(r1, field)), field
        assert len(r0.prompt_ids) == sum(r0.rollouts) == 16
    assert any(len(set(r.rollouts.tolist())) > 1 for r in records)  # unequal groups split
    # each rank's loss got its own half of the batch: the halves, in rank order, are the batch
    for i, record in enumerate(records):
        halves = [r["loss_advantages"][i] for r in ranks]
        assert [len(h) for h in halves] == [8, 8]
        np.testing.assert_array_equal(np.concatenate(halves), record.advantages)
    # and the whole run agrees with a reference controller fed by prompt text
    recorders = []
    for r in ranks:
        recorder = Recorder()
        recorder.reward_calls = [
            {n: RewardCall(*c) for n, c in calls.items()} for calls in r["reward_calls"]
        ]
        recorder.loss_advantages = r["loss_advantages"]
        recorders.append(recorder)
    check_against_reference(
        controller=ranks[0]["controller"],
        prompts_per_block=ranks[0]["prompts_per_block"],
        events=ranks[0]["events"],
        plans=ranks[0]["plans"],
        batches=batches_of(recorders, text_ids(addition_dataset(12))),
        reward_weights=ranks[0]["reward_weights"],
        final_state=ranks[0]["state"],
    )
    assert (tmp_path / "run" / "checkpoint-6" / "gdro" / "controller.npz").is_file()
