"""Every example runs, in a smoke mode, so none rots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, timeout: int = 300, env: dict[str, str] | None = None) -> str:
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout, env=None if env is None else {**os.environ, **env})
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_own_loop() -> None:
    out = run("examples/own_loop.py", "--steps", "5")
    assert "classifier/mean_bin" in out


def test_simulate_loop() -> None:
    out = run("examples/simulate.py", "--steps", "20")
    assert "initial mean success" in out


@pytest.mark.slow
def test_read_run_on_a_simulated_run(tmp_path: Path) -> None:
    run("-m", "gdro_cli", "simulate", "--preset", "smoke", "--out", str(tmp_path / "sim"))
    run_dir = sorted((tmp_path / "sim" / "runs").iterdir())[0]
    out = run("examples/read_run.py", str(run_dir), "--out", str(tmp_path / "c.png"))
    assert "steps; last mean bin" in out
    assert (tmp_path / "c.png").stat().st_size > 1000


@pytest.mark.slow
def test_torch_loop(tmp_path: Path) -> None:
    out = run("examples/torch_loop.py", "--steps", "1", "--sft-steps", "5",
              env={"GDRO_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"})
    assert "starting policy ready" in out
