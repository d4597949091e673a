"""``gdro simulate`` end to end: files, run directories ``gdro report`` reads, errors, determinism.

Each test runs the real ``gdro`` entry point (:func:`gdro_cli.main.main`, its one-line errors and
exit codes included) with ``simulate`` dispatched to :mod:`gdro_cli.simulate`.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from gdro_cli import simulate
from gdro_cli.main import main
from gdro_lab.learner import LearnerConfig
from gdro_lab.run import STRATEGIES, SimConfig


def gdro(argv: Sequence[str]) -> int:
    """``gdro ARGV``, in this process."""
    return main(list(argv))

CTL_KEYS = ("classifier/mean_bin", "prompt/entropy", "rollout/shadow_price",
            "rollout/mean_proposed", "rollout/mean")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "smoke"
    assert gdro(["simulate", "--preset", "smoke", "--out", str(out), "--no-progress"]) == 0
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
    assert config["controller"]["rollout"]["arm_eta"] == 1000.0  # the settings actually built
    assert config["controller"]["seed"] == 0 and config["controller"]["prompt"]["mode"] == "off"
    assert results["controllers"]["rollout-bandit-paper"]["rollout"]["arm_eta"] == 0.65
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
    assert gdro([*args, str(tmp_path / "a")]) == 0
    assert gdro([*args, str(tmp_path / "b")]) == 0
    assert gdro([*args, str(tmp_path / "a")]) == 0  # a folder gdro simulate wrote is reused
    for s in ("gdro-both", "knapsack", "dapo"):
        a = (tmp_path / "a" / "runs" / f"{s}-s0" / "metrics.jsonl").read_bytes()
        b = (tmp_path / "b" / "runs" / f"{s}-s0" / "metrics.jsonl").read_bytes()
        assert a == b and len(a.splitlines()) == 12


def test_seeds_differ(tmp_path: Path) -> None:
    assert gdro(["simulate", "--preset", "smoke", "--strategies", "uniform", "--steps", "5",
                 "--no-progress", "--no-plots", "--out", str(tmp_path)]) == 0
    a = (tmp_path / "runs" / "uniform-s0" / "metrics.jsonl").read_text()
    b = (tmp_path / "runs" / "uniform-s1" / "metrics.jsonl").read_text()
    assert a != b


def test_curriculum_table_is_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gdro(["simulate", "--preset", "smoke", "--strategies", "uniform,gdro-both",
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
    (["--rollout.mean", "13"], "RolloutConfig.min, RolloutConfig.mean and RolloutConfig.max "
                               "must be ordered as min <= mean <= max; got (2, 13, 12)"),
    (["--eta", "-1"], "PromptConfig.eta must be a finite number >= 0; got -1.0"),
])
def test_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  flags: list[str], message: str) -> None:
    code = gdro(["simulate", "--preset", "smoke", "--no-progress", "--out",
                 str(tmp_path / "x"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_refuses_a_foreign_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert gdro(["simulate", "--preset", "smoke", "--out", str(tmp_path)]) == 2
    assert "--out must be a new or empty folder" in capsys.readouterr().err


def test_strategies_accept_spaces_and_commas(tmp_path: Path) -> None:
    assert gdro(["simulate", "--preset", "smoke", "--strategies", "uniform", "dapo,knapsack",
                 "--seeds", "1", "--steps", "3", "--no-progress", "--no-plots",
                 "--out", str(tmp_path)]) == 0
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["dapo-s0", "knapsack-s0", "uniform-s0"]


def test_rerun_replaces_the_previous_runs(tmp_path: Path) -> None:
    base = ["simulate", "--preset", "smoke", "--seeds", "1", "--steps", "3", "--no-progress",
            "--no-plots", "--out", str(tmp_path)]
    assert gdro([*base, "--strategies", "uniform,dapo"]) == 0
    (tmp_path / "runs" / "mine").mkdir()  # not listed by gdro simulate: left alone
    assert gdro([*base, "--strategies", "knapsack"]) == 0
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["knapsack-s0", "mine"]


def test_controller_flags_set_the_controller_settings(tmp_path: Path) -> None:
    # each flag lands in SimConfig.controller, on top of every strategy's mapping, and the run
    # directories and results.json show the settings the controllers were built with
    assert gdro(["simulate", "--preset", "smoke", "--strategies", "rollout-bandit,knapsack,gdro-both",
                 "--seeds", "1", "--steps", "4", "--no-progress", "--no-plots",
                 "--rollout.mean", "6", "--rollout.min", "3", "--rollout.max", "10",
                 "--num-bins", "5", "--eta", "0.3", "--dual-step", "1e-3", "--selection", "sample",
                 "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["controller"] == {
        "classifier": {"num_bins": 5}, "prompt": {"eta": 0.3},
        "rollout": {"mean": 6, "min": 3, "max": 10, "dual_step": 1e-3, "selection": "sample"}}
    bandit = json.loads((tmp_path / "runs" / "rollout-bandit-s0" / "config.json").read_text())
    ctl = bandit["controller"]
    assert (ctl["classifier"]["num_bins"], ctl["prompt"]["eta"]) == (5, 0.3)
    assert {k: ctl["rollout"][k] for k in ("mean", "min", "max", "dual_step", "selection")} == {
        "mean": 6, "min": 3, "max": 10, "dual_step": 1e-3, "selection": "sample"}
    assert ctl["rollout"]["arm_eta"] == 1000.0  # the strategy's recipe, untouched
    assert results["controllers"]["knapsack"]["rollout"]["mean"] == 6
    for s in ("rollout-bandit", "knapsack", "gdro-both"):
        rows = [json.loads(x) for x in
                (tmp_path / "runs" / f"{s}-s0" / "metrics.jsonl").read_text().splitlines()]
        assert all(r["train/rollouts"] == 32 * 6 for r in rows)  # the budget, every strategy
        assert all(f"classifier/share/{b}" in rows[-1] for b in range(5))
    assert results["regret"]["gdro-both"]["eta"] == 0.3


def test_the_old_mean_rollouts_flag_still_works_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["simulate", "--preset", "smoke", "--strategies", "uniform", "--seeds", "1",
            "--steps", "3", "--no-progress", "--no-plots"]
    assert gdro([*base, "--mean-rollouts", "6", "--out", str(tmp_path / "old")]) == 0
    assert "--mean-rollouts is deprecated (gone next release): use --rollout.mean" in (
        capsys.readouterr().err)
    assert gdro([*base, "--rollout.mean", "6", "--out", str(tmp_path / "new")]) == 0
    runs = [(tmp_path / d / "runs" / "uniform-s0" / "metrics.jsonl").read_bytes()
            for d in ("old", "new")]
    assert runs[0] == runs[1]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gdro simulate")
    simulate.add_arguments(parser)
    return parser


def test_the_flags_and_their_spellings() -> None:
    # the command's surface: the generated --SECTION.FIELD controller flags, their short
    # spellings, the renamed --mean-rollouts, and the simulation's own flags
    flags = {o for action in _parser()._actions for o in action.option_strings}
    controller = {f"--{path}" for path in simulate.CONTROLLER_FLAGS}
    assert controller == {
        "--classifier.num_bins", "--classifier.outcome", "--prompt.signal", "--prompt.score_rule",
        "--prompt.eta", "--rollout.mean", "--rollout.min", "--rollout.max",
        "--rollout.dual_step", "--rollout.selection"}
    short = {"--num-bins", "--signal", "--score-rule", "--eta", "--dual-step", "--selection"}
    own = {"-h", "--help", "--preset", "--scenario", "--strategies", "--seeds", "--steps",
           "--num-prompts", "--batch-size", "--eval-every", "--eval-size", "--target",
           "--mean-rollouts", "--lr-shared", "--lr-own", "--aggregation", "--print-every",
           "--out", "--no-plots", "--no-progress"}
    assert flags == controller | short | own


@pytest.mark.parametrize(("long", "short", "value"), [
    ("--classifier.num_bins", "--num-bins", "5"), ("--prompt.signal", "--signal", "variance"),
    ("--prompt.score_rule", "--score-rule", "cumulative"), ("--prompt.eta", "--eta", "0.3"),
    ("--rollout.dual_step", "--dual-step", "1e-3"), ("--rollout.selection", "--selection", "sample"),
])
def test_a_short_spelling_sets_the_same_field(long: str, short: str, value: str) -> None:
    parser = _parser()
    a = parser.parse_args([long, value, "--out", "x"])
    b = parser.parse_args([short, value, "--out", "x"])
    assert a == b and simulate.settings(a)["controller"] == simulate.settings(b)["controller"]
    section, name = long[2:].split(".")
    assert simulate.settings(a)["controller"][section][name] is not None


@pytest.mark.parametrize(("blocked", "flags", "missing"), [
    ({"rich", "matplotlib"}, [], "rich"), ({"matplotlib"}, [], "matplotlib"),
    ({"rich"}, ["--no-plots"], "rich")])
def test_a_missing_extra_is_named_before_the_output_folder_is_touched(
    tmp_path: Path, blocked: set[str], flags: list[str], missing: str, gdro_without: Any
) -> None:
    out = tmp_path / "sim"
    base = ["simulate", "--preset", "smoke", "--strategies", "uniform", "--seeds", "1",
            "--steps", "3", "--no-progress", "--no-plots"]
    assert gdro([*base, "--out", str(out)]) == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    argv = [*base[:-1], *flags, "--strategies", "knapsack", "--out", str(out)]
    proc = gdro_without(blocked, argv)
    assert proc.returncode == 2, proc.stderr
    assert f"gdro simulate needs the 'cli' extra (the package {missing!r}" in proc.stderr
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing replaced


def test_simulate_with_no_plots_needs_no_matplotlib(tmp_path: Path, gdro_without: Any) -> None:
    argv = ["simulate", "--preset", "smoke", "--strategies", "uniform", "--seeds", "1",
            "--steps", "3", "--no-progress", "--no-plots", "--out", str(tmp_path / "sim")]
    proc = gdro_without({"matplotlib"}, argv)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "sim" / "results.json").is_file()


@pytest.mark.parametrize("preset", [None, "smoke", "demo"])
def test_help_shows_the_values_the_named_preset_runs(preset: str | None) -> None:
    argv = ["--preset", preset, "--help"] if preset else ["--help"]
    parser = argparse.ArgumentParser(prog="gdro simulate")
    simulate.add_arguments(parser, argv=argv)
    text = " ".join(parser.format_help().split())
    args = parser.parse_args([*argv[:-1], "--out", "x"])
    cfg = simulate.build_config(simulate.settings(args))
    s = simulate.settings(args)
    for flag, value in (("--steps", cfg.steps), ("--batch-size", cfg.batch_size),
                        ("--num-prompts", cfg.num_prompts), ("--eval-size", cfg.eval_size),
                        ("--seeds", len(cfg.seeds)), ("--lr-own", cfg.learner.lr_own),
                        ("--print-every", s["print_every"])):
        help_text = text.split(f" {flag} ", 1)[1].split(" --", 1)[0]
        assert help_text.endswith(f"[{value}]"), (flag, help_text)


def test_a_bare_run_is_simconfigs_defaults_with_every_strategy_and_three_seeds() -> None:
    # one declaration: what the command runs without flags is SimConfig's own defaults (and the
    # learner's), but for the two documented differences
    cfg = simulate.build_config(simulate.settings(_parser().parse_args(["--out", "x"])))
    assert cfg == SimConfig(strategies=STRATEGIES, seeds=(0, 1, 2))
    assert cfg.learner == LearnerConfig() and cfg.target is None


@pytest.mark.parametrize(("argv", "steps"), [
    (["--preset", "smoke", "--preset", "demo"], 1000),  # the last one wins, as in the run
    (["--pres", "smoke"], 30),  # an abbreviation, as argparse reads it
    (["--preset=smoke"], 30),
    (["--preset", "smoke", "-h", "--preset", "demo"], 30),  # argparse stops at -h
    (["--preset", "nope"], 1000),  # unknown: the defaults (the parse itself refuses it)
])
def test_help_reads_the_preset_as_the_run_will(argv: list[str], steps: int) -> None:
    parser = argparse.ArgumentParser(prog="gdro simulate")
    simulate.add_arguments(parser, argv=[*argv, "--help"])
    assert f"steps per run [{steps}]" in " ".join(parser.format_help().split())
