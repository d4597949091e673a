"""``train``: the run directory, resume, bad input; ``gdro train`` and ``gdro report`` end to end."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gdro_torch.config import TrainConfig
from gdro_torch.evaluate import EvalCounts, score_counts
from gdro_torch.loop import Hooks, train
from gdro_torch.rundir import read_metrics

REQUIRED = [
    "classifier/mean_bin",
    "classifier/share/0",
    "prompt/q/0",
    "prompt/entropy",
    "rollout/shadow_price",
    "rollout/mean_proposed",
    "train/reward_mean",
    "train/rollouts",
    "train/loss",
    "timing/step_s",
]


def _strip_timings(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("timing/")} for r in rows]


def test_run_directory_contents(tiny_cfg: TrainConfig, tmp_path: Path) -> None:
    cfg = tiny_cfg.replace(eval_every=2, checkpoint_every=2, controller={"rollout": {"mode": "bandit"}})
    result = train(cfg, tmp_path / "run")
    run = tmp_path / "run"
    config = json.loads((run / "config.json").read_text())
    assert config["kind"] == "train" and config["num_bins"] == 10 and config["lr"] == cfg.lr
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    for r in rows[1:]:
        assert all(k in r for k in REQUIRED)
        assert all(isinstance(v, float) for k, v in r.items() if k != "step")
    assert [("eval/pass@8" in r) for r in rows] == [True, False, True, True]
    assert "eval/pass@8/level1" in rows[0] and "eval/mean@8" in rows[0]
    assert result.steps_done == 3 and not result.interrupted
    assert result.eval_start["eval/pass@8"] == rows[0]["eval/pass@8"]
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-000003"
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir())
    assert ckpts == ["step-000002", "step-000003"]  # the last two are kept
    state = torch.load(run / "checkpoints" / "step-000003" / "trainer.pt", weights_only=True)
    assert set(state) >= {"model", "optimizer", "torch_rng", "step"} and state["step"] == 3
    assert (run / "checkpoints" / "step-000003" / "controller.npz").is_file()
    assert (run / "model" / "config.json").is_file() and (run / "init_model").is_dir()
    # per-prompt eval counts at every evaluation; they reproduce the logged metrics, and the
    # reported change is their paired difference
    evals = sorted(p.name for p in (run / "evals").iterdir())
    assert evals == ["step-000000.json", "step-000002.json", "step-000003.json"]
    first = EvalCounts.load(run / "evals" / "step-000000.json")
    final = EvalCounts.load(run / "evals" / "step-000003.json")
    assert first.correct.size == 16 and first.samples == cfg.eval_samples
    assert score_counts(final) == {k: v for k, v in rows[-1].items() if k.startswith("eval/")}
    for metric, key in (("mean@8", "eval/mean@8"), ("pass@8", "eval/pass@8")):
        change, half = result.change[metric]
        assert change == pytest.approx(rows[-1][key] - rows[0][key])
        assert half >= 0 or math.isnan(half)
    assert not [p for p in run.rglob(".*") if p.name != ".gitkeep"]  # no temp files left
    with pytest.raises(ValueError, match="already holds a run"):
        train(cfg, run)


def test_resume_reproduces_an_uninterrupted_run(tiny_cfg: TrainConfig, tmp_path: Path) -> None:
    cfg = tiny_cfg.replace(
        steps=4,
        eval_every=2,
        checkpoint_every=2,
        controller={"rollout": {"mode": "neyman"}, "prompt": {"mode": "resample"}},
        lr_schedule="cosine",
    )
    train(cfg, tmp_path / "full")
    full = _strip_timings(read_metrics(tmp_path / "full" / "metrics.jsonl"))
    # the cosine schedule: lr at the first step, 0.1 x lr at the last, falling in between
    lrs = [row["train/lr"] for row in full[1:]]
    assert lrs[0] == cfg.lr and lrs[-1] == pytest.approx(0.1 * cfg.lr)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    state = torch.load(
        tmp_path / "full" / "checkpoints" / "step-000004" / "trainer.pt", weights_only=True
    )
    assert state["optimizer"]["param_groups"][0]["lr"] == lrs[-1]  # the optimizer used it

    done = []
    hooks = Hooks(on_step=lambda s, total, m: done.append(s), should_stop=lambda: len(done) >= 3)
    part = train(cfg, tmp_path / "part", hooks=hooks)
    assert part.interrupted and part.steps_done == 3
    # a crash after step 3's metrics but before its checkpoint: resume from step 2
    (tmp_path / "part" / "checkpoints" / "latest").write_text("step-000002\n")
    resumed = train(cfg, tmp_path / "part", resume=True)
    assert resumed.steps_done == 4 and not resumed.interrupted
    assert _strip_timings(read_metrics(tmp_path / "part" / "metrics.jsonl")) == full
    for a, b in zip(
        torch.load(
            tmp_path / "full" / "checkpoints" / "step-000004" / "trainer.pt", weights_only=True
        )["model"].values(),
        torch.load(
            tmp_path / "part" / "checkpoints" / "step-000004" / "trainer.pt", weights_only=True
        )["model"].values(),
    ):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"config differs \(lr: 0.0002 -> 0.1\)"):
        train(cfg.replace(lr=0.1), tmp_path / "part", resume=True)


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"task": "no_such_task"}, "unknown task 'no_such_task'"),
        ({"task": "addition:max_digits"}, "malformed task spec"),
        ({"batch_size": 500}, "--batch-size must be <= the training split's size 200"),
    ],
)
def test_bad_input_fails_before_compute(
    tiny_cfg: TrainConfig, tmp_path: Path, changes: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        train(tiny_cfg.replace(**changes), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_bad_settings_name_the_flag(tiny_cfg: TrainConfig, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"RolloutConfig.min must be an integer in \[2, 4096\]"):
        tiny_cfg.replace(controller={"rollout": {"min": 1}})
    with pytest.raises(ValueError, match="--batch-size must be >= 2 with --rollout.mode bandit"):
        tiny_cfg.replace(controller={"rollout": {"mode": "bandit"}}, batch_size=1)
    with pytest.raises(ValueError, match=r"^controller\.rollout: RolloutConfig\.min, RolloutConfig\.mean and .*got \(2, 20, 12\)"):
        tiny_cfg.replace(controller={"rollout": {"mean": 20}})
    with pytest.raises(TypeError, match=r"TrainConfig.rollout_mean moved into the controller"):
        TrainConfig(rollout_mean=8)
    with pytest.raises(ValueError, match="--eval-samples must be >= 8"):
        tiny_cfg.replace(eval_samples=4)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ValueError, match="not a causal LM"):
        train(tiny_cfg.replace(model=str(tmp_path)), tmp_path / "run")


def test_local_model_directory_trains(
    tiny_cfg: TrainConfig, tiny_model_dir: Path, tmp_path: Path
) -> None:
    result = train(tiny_cfg.replace(model=str(tiny_model_dir), steps=1), tmp_path / "run")
    assert result.steps_done == 1


def test_reasoning_gym_task_trains(tiny_cfg: TrainConfig, tmp_path: Path) -> None:
    cfg = tiny_cfg.replace(
        task="chain_sum:min_digits=1,max_digits=2,size=40,eval_size=8",
        steps=1,
        controller={"rollout": {"mode": "neyman"}},
    )
    result = train(cfg, tmp_path / "run")
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert result.steps_done == 1 and rows[-1]["train/rollouts"] == 4 * cfg.batch_size
    assert "eval/pass@8/level1" in rows[0]


def test_vllm_backend_is_refused_without_vllm_and_a_gpu(
    tiny_cfg: TrainConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gdro_torch.generation

    monkeypatch.setattr(gdro_torch.generation, "vllm_available", lambda: False)
    with pytest.raises(ValueError, match="--backend vllm needs the vllm package and a CUDA GPU"):
        train(tiny_cfg.replace(backend="vllm"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def _gdro(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gdro_cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_smoke_preset_report_and_errors(tmp_path: Path) -> None:
    env = {**os.environ, "GDRO_CACHE_DIR": str(tmp_path / "cache")}
    done = _gdro(
        "train",
        "--preset",
        "smoke",
        "--out",
        "run",
        "--no-progress",
        "--threads",
        "1",
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "pass@8" in done.stdout and (tmp_path / "run" / "report" / "report.md").is_file()
    assert len(read_metrics(tmp_path / "run" / "metrics.jsonl")) == 4  # steps 0..3

    bad = _gdro("train", "--task", "addition:digits", "--out", "x", cwd=tmp_path, env=env)
    assert bad.returncode == 2 and not (tmp_path / "x").exists()
    assert bad.stderr.strip().splitlines() == [
        "gdro train: error: malformed task spec 'addition:digits': 'digits' is not key=value"
    ]
    bad = _gdro("train", "--resume", "run", "--lr", "0.5", cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "different config: --lr 0.5 (run has 0.0002)" in bad.stderr

    report = _gdro("report", "run", "--out", "rep", cwd=tmp_path, env=env)
    assert report.returncode == 0, report.stderr
    pngs = sorted(p.name for p in (tmp_path / "rep").glob("*.png"))
    assert pngs == ["learning_curves.png", "mechanism.png", "run-bins.png", "run-dynamics.png"]


def test_ctrl_c_saves_a_checkpoint_and_resumes(tmp_path: Path) -> None:
    env = {**os.environ, "GDRO_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [
        sys.executable,
        "-m",
        "gdro_cli",
        "train",
        "--preset",
        "smoke",
        "--steps",
        "400",
        "--out",
        "run",
        "--no-progress",
        "--no-report",
        "--threads",
        "1",
    ]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(read_metrics(metrics)) < 3:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    stopped = len(read_metrics(metrics)) - 1
    assert 2 <= stopped < 400 and "--resume run" in err
    latest = (tmp_path / "run" / "checkpoints" / "latest").read_text().strip()
    assert latest == f"step-{stopped:06d}"


def test_the_warm_up_is_reported_and_recorded_in_the_run(
    tiny_cfg: TrainConfig, tmp_path: Path
) -> None:
    cfg = tiny_cfg.replace(steps=1, sft_target_loss=0.01)  # 20 steps cannot reach it
    phases: list[str] = []
    hooks = Hooks(on_phase=lambda name, detail: phases.append(f"{name}: {detail}"))
    train(cfg, tmp_path / "a", hooks=hooks)
    saved = json.loads((tmp_path / "a" / "config.json").read_text())["sft"]
    assert saved["steps"] == 20 and saved["max_steps"] == 20 and saved["target_loss"] == 0.01
    done = [p for p in phases if p.startswith("sft: warm-up")]
    assert len(done) == 1 and done[0].startswith("sft: warm-up done: 20 steps, loss ")
    assert "its target 0.01 was not reached in 20 steps" in done[0]
    phases.clear()
    train(cfg, tmp_path / "b", hooks=hooks)  # the same warm-up, now from the cache
    assert [p for p in phases if p.startswith("sft: warm-up")][0].startswith(
        "sft: warm-up from the cache: 20 steps"
    )
    # a local model that carries an earlier warm-up's record and gets no SFT reports none
    phases.clear()
    local = tiny_cfg.replace(steps=1, model=str(tmp_path / "a" / "model"), sft_steps=0)
    train(local, tmp_path / "c", hooks=hooks)
    assert not [p for p in phases if "warm-up" in p]
    assert json.loads((tmp_path / "c" / "config.json").read_text())["sft"] is None


@pytest.mark.slow
def test_the_gpu_preset_runs_at_smoke_size_on_cpu(tmp_path: Path) -> None:
    """The ``gpu`` preset with its sizes shrunk (prompts, batch, steps, warm-up, evaluation and
    the model): two steps on the CPU (``device=auto`` finds no GPU here)."""
    from gdro_torch.config import PRESETS

    preset = PRESETS["gpu"]
    assert (preset.batch_size, preset.controller.rollout.mean, preset.steps) == (256, 4, 1000)
    assert preset.device == "auto" and preset.sft_target_loss is not None
    cfg = preset.replace(
        model="tiny-llama-0.1m",
        task="addition:min_digits=1,max_digits=12,size=64,eval_size=8",
        batch_size=8,
        steps=2,
        sft_steps=10,
        sft_batch=8,
        eval_every=1,
        checkpoint_every=1,
        eval_samples=8,
    )
    result = train(cfg, tmp_path / "run")
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert result.steps_done == 2 and not result.interrupted
    assert [r["train/rollouts"] for r in rows[1:]] == [8 * 4, 8 * 4]
    assert [r["step"] for r in rows if "eval/pass@8" in r] == [0, 1, 2]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["sft"]["steps"] == 10
