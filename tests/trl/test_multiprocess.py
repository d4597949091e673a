"""Two processes (gloo on CPU, started as torchrun starts them): every rank plans the same
blocks and feeds back alike."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@pytest.mark.slow
def test_two_ranks_share_one_plan(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "adapters"), os.environ.get("PYTHONPATH", "")]),
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
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == 2
    assert ranks[0] == ranks[1]  # same plans, same gathered rewards, same controller state
    plans = ranks[0]["plans"]
    assert [p[0] for p in plans] == [1, 2, 3, 4, 5, 6] and ranks[0]["step"] == 6
    for _, prompt_ids, rollouts, _, rewards in plans:
        assert len(prompt_ids) == sum(rollouts) == 16 == len(rewards)
    assert any(len(set(p[2])) > 1 for p in plans)  # unequal groups split across the ranks
    assert (tmp_path / "run" / "checkpoint-6" / "gdro" / "controller.npz").is_file()
