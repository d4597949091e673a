"""``gdro simulate`` end to end: files, run directories ``gdro report`` reads, errors, determinism."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from gdro_cli.main import main
from gdro_lab.run import STRATEGIES

CTL_KEYS = ("classifier/mean_bin", "prompt/entropy", "rollout/shadow_price",
            "rollout/budget_unconstrained", "rollout/budget_target")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "smoke"
    assert main(["simulate", "--preset", "smoke", "--out", str(out), "--no-progress"]) == 0
    return out


def test_smoke_writes_results_plots_and_run_dirs(smoke: Path) -> None:
    results = json.loads((smoke / "results.json").read_text())
    assert set(results["outcomes"]) == set(STRATEGIES)
    assert len(results["runs"]) == 2 * len(STRATEGIES)
    md = (smoke / "results.md").read_text()
    for heading in ("## Outcomes", "## Rollout budget", "## Weighted standard error",
                    "## Rollout-GDRO price and allocation", "## Prompt-GDRO regret",
                    "## Curriculum", "## Plots"):
        assert heading in md
    # the bandit variants are checked against their own dual step and price cap
    assert set(results["price"]) == {"rollout-bandit", "rollout-bandit-paper", "rollout-neyman",
                                     "gdro-both"}
    assert results["budget"]["rollout-bandit"]["dual_step"] == 2e-4
    assert results["budget"]["rollout-bandit-paper"]["dual_step"] == 0.05
    config = json.loads((smoke / "runs" / "rollout-bandit-s0" / "config.json").read_text())
    assert config["rollout_config"]["arm_eta"] == 1000.0
    for name in results["plots"]:
        assert (smoke / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(smoke.rglob("*.tmp"))  # atomic writes leave no temporary files


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_run_dirs_follow_the_report_format(smoke: Path, strategy: str) -> None:
    run = smoke / "runs" / f"{strategy}-s1"
    config = json.loads((run / "config.json").read_text())
    assert isinstance(config["kind"], str) and config["num_bins"] == 10
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(30))
    for r in rows:
        assert type(r["step"]) is int
        assert all(isinstance(v, float) and math.isfinite(v) for k, v in r.items() if k != "step")
        assert "train/reward_mean" in r and r["train/rollouts"] == 32 * 4
        assert any(k.startswith("train/reward/") for k in r)
        assert all(f"classifier/share/{b}" in r for b in range(10))
        assert any(k.startswith("rollout/n_mean/") for k in r)
    if strategy not in ("dapo", "var-sampling", "knapsack"):
        assert all(k in rows[-1] for k in CTL_KEYS)
        assert all(f"prompt/q/{b}" in rows[-1] for b in range(10))
    assert "eval/mean_success" in rows[-1] and "eval/worst_bin_success" in rows[-1]


def test_same_seed_same_bytes_and_rerun_in_place(tmp_path: Path) -> None:
    args = ["simulate", "--preset", "smoke", "--strategies", "gdro-both,knapsack,dapo",
            "--seeds", "1", "--steps", "12", "--no-progress", "--no-plots", "--out"]
    assert main([*args, str(tmp_path / "a")]) == 0
    assert main([*args, str(tmp_path / "b")]) == 0
    assert main([*args, str(tmp_path / "a")]) == 0  # a folder gdro simulate wrote is reused
    for s in ("gdro-both", "knapsack", "dapo"):
        a = (tmp_path / "a" / "runs" / f"{s}-s0" / "metrics.jsonl").read_bytes()
        b = (tmp_path / "b" / "runs" / f"{s}-s0" / "metrics.jsonl").read_bytes()
        assert a == b and len(a.splitlines()) == 12


def test_seeds_differ(tmp_path: Path) -> None:
    assert main(["simulate", "--preset", "smoke", "--strategies", "uniform", "--steps", "5",
                 "--no-progress", "--no-plots", "--out", str(tmp_path)]) == 0
    a = (tmp_path / "runs" / "uniform-s0" / "metrics.jsonl").read_text()
    b = (tmp_path / "runs" / "uniform-s1" / "metrics.jsonl").read_text()
    assert a != b


def test_curriculum_table_is_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--preset", "smoke", "--strategies", "uniform,gdro-both",
                 "--seeds", "1", "--steps", "10", "--print-every", "5", "--no-progress",
                 "--no-plots", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "gdro-both step 5" in out and "gdro-both step 10" in out
    assert "share" in out and "rollouts" in out


@pytest.mark.parametrize(("flags", "message"), [
    (["--strategies", "uniform,bogus"], "strategy must be one of uniform, prompt-reweight"),
    (["--steps", "0"], "steps must be an integer >= 1; got 0"),
    (["--seeds", "0"], "--seeds must be an integer >= 1; got 0"),
    (["--batch-size", "5000"], r"batch_size must be an integer in [1, 3000]; got 5000"),
    (["--target", "1.5"], "target must be a finite number in (0, 1); got 1.5"),
    (["--print-every", "-1"], "--print-every must be an integer >= 0; got -1"),
])
def test_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  flags: list[str], message: str) -> None:
    code = main(["simulate", "--preset", "smoke", "--no-progress", "--out",
                 str(tmp_path / "x"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_refuses_a_foreign_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["simulate", "--preset", "smoke", "--out", str(tmp_path)]) == 2
    assert "--out must be a new or empty folder" in capsys.readouterr().err


def test_strategies_accept_spaces_and_commas(tmp_path: Path) -> None:
    assert main(["simulate", "--preset", "smoke", "--strategies", "uniform", "dapo,knapsack",
                 "--seeds", "1", "--steps", "3", "--no-progress", "--no-plots",
                 "--out", str(tmp_path)]) == 0
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["dapo-s0", "knapsack-s0", "uniform-s0"]


def test_rerun_replaces_the_previous_runs(tmp_path: Path) -> None:
    base = ["simulate", "--preset", "smoke", "--seeds", "1", "--steps", "3", "--no-progress",
            "--no-plots", "--out", str(tmp_path)]
    assert main([*base, "--strategies", "uniform,dapo"]) == 0
    (tmp_path / "runs" / "mine").mkdir()  # not listed by gdro simulate: left alone
    assert main([*base, "--strategies", "knapsack"]) == 0
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["knapsack-s0", "mine"]
