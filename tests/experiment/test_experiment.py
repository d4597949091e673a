"""The experiment's bookkeeping: equal compute across arms and paired statistics, on a tiny grid."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

SPEC = importlib.util.spec_from_file_location(
    "experiment", Path(__file__).resolve().parents[2] / "benchmarks" / "experiment.py"
)
assert SPEC is not None and SPEC.loader is not None
exp = importlib.util.module_from_spec(SPEC)
sys.modules["experiment"] = exp  # dataclasses look their module up
SPEC.loader.exec_module(exp)


def test_mean_ci_matches_a_hand_computation() -> None:
    iv = exp.mean_ci([1.0, 2.0, 3.0, 4.0])
    half = 3.182 * np.std([1, 2, 3, 4], ddof=1) / 2.0  # t(0.975, 3) * s / sqrt(4)
    assert iv.mean == pytest.approx(2.5)
    assert (iv.low, iv.high) == pytest.approx((2.5 - half, 2.5 + half))
    single = exp.mean_ci([0.3])
    assert single.n == 1 and math.isnan(single.low)
    with pytest.raises(ValueError, match="at least one value"):
        exp.mean_ci([])


def test_paired_differences_use_shared_seeds_only() -> None:
    arm = {0: 0.50, 1: 0.60, 2: 0.70, 3: 0.9}
    base = {0: 0.40, 1: 0.55, 2: 0.60}
    iv = exp.paired(arm, base)
    assert iv.n == 3 and iv.mean == pytest.approx(np.mean([0.10, 0.05, 0.10]))
    # pairing removes the seed effect: a constant shift has a zero-width interval
    shift = exp.paired({s: v + 0.1 for s, v in base.items()}, base)
    assert shift.mean == pytest.approx(0.1) and shift.high - shift.low == pytest.approx(
        0.0, abs=1e-12
    )
    with pytest.raises(ValueError, match="no seed is shared"):
        exp.paired({5: 1.0}, base)


@pytest.mark.slow
def test_tiny_grid_runs_at_equal_compute(tmp_path: Path) -> None:
    arms = ["grpo", "prompt-reweight", "rollout-neyman"]
    rc = exp.main(
        [
            "--grid",
            "tiny",
            "--out",
            str(tmp_path),
            "--arms",
            *arms,
            "--seeds",
            "2",
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert rc == 0
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["equal_compute"] is True
    per = summary["per_run"]
    budgets = {per[a][s]["rollouts"] for a in arms for s in per[a]}
    assert budgets == {2 * 4 * 4}  # steps x batch x mean rollouts, every arm and seed
    assert set(summary["arms"]) == set(arms)
    for a in arms[1:]:
        d = summary["arms"][a]["pass@8_diff"]
        want = np.mean([per[a][s]["pass@8"] - per["grpo"][s]["pass@8"] for s in ("0", "1")])
        assert d["mean"] == pytest.approx(want) and d["n"] == 2
    for a in arms:  # each run's own change: its last evaluation minus its step-0 one
        gains = []
        for s in ("0", "1"):
            rows = [
                json.loads(x) for x in (tmp_path / "runs" / f"{a}-s{s}" / "metrics.jsonl").open()
            ]
            assert rows[0]["step"] == 0 and per[a][s]["pass@8_start"] == rows[0]["eval/pass@8"]
            gains.append(rows[-1]["eval/pass@8"] - rows[0]["eval/pass@8"])
        assert summary["arms"][a]["pass@8_gain"]["mean"] == pytest.approx(np.mean(gains))
    assert summary["eval_samples"] == 8 and "mean@8 (%)" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "results.md").read_text().count("|") > 20
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert (tmp_path / "paired.png").stat().st_size > 0  # the arms against GRPO, per replicate
    # a repeated command skips finished runs and gives the same summary
    exp.main(
        [
            "--grid",
            "tiny",
            "--out",
            str(tmp_path),
            "--arms",
            *arms,
            "--seeds",
            "2",
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["per_run"] == summary["per_run"]
    # the shared warm start is never reused for another task
    with pytest.raises(ValueError, match="was warmed up with"):
        exp.main(
            [
                "--grid",
                "tiny",
                "--out",
                str(tmp_path),
                "--task",
                "addition:min_digits=1,max_digits=2",
            ]
        )


def _fake_run(
    out: Path,
    arm: str,
    seed: int,
    curve: list[tuple[int, float]],
    steps: int,
    rollouts: float = 8.0,
    mechanism: dict | None = None,
) -> None:
    """A finished run directory: per-step rows (rollouts, tokens, mechanism) and evaluations."""
    rd = exp.run_dir(out, arm, seed)
    (rd / "model").mkdir(parents=True)
    (rd / "model" / "config.json").write_text("{}")
    evals = dict(curve)
    rows = [{"step": 0, "eval/pass@8": evals[0], "eval/mean@16": evals[0]}]
    for s in range(1, steps + 1):
        row = {
            "step": s,
            "train/rollouts": rollouts,
            "train/tokens": 3 * rollouts,
            "timing/step_s": 0.5,
        }
        row.update({k: v(s) for k, v in (mechanism or {}).items()})
        if s in evals:
            row.update({"eval/pass@8": evals[s], "eval/mean@16": evals[s]})
        rows.append(row)
    (rd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_summary_rollouts_to_target_mechanism_and_equal_compute(tmp_path: Path) -> None:
    mech = {"mechanism/budget_moved": lambda s: 0.01 * s, "mechanism/q_tv": lambda s: 0.2}
    # replicate 0: GRPO ends at 0.6; "both" is at 0.5 at step 5 and 0.7 at step 10: 0.6 is
    # crossed half way, at step 7.5 = 60 rollouts (8 a step) and 180 tokens
    _fake_run(tmp_path, "grpo", 0, [(0, 0.4), (5, 0.5), (10, 0.6)], 10, mechanism=mech)
    _fake_run(tmp_path, "both", 0, [(0, 0.4), (5, 0.5), (10, 0.7)], 10, mechanism=mech)
    # replicate 1: GRPO ends at 0.5 and peaked at 0.55 at step 5, which it first crosses at
    # step 2.5 (interpolated from 0.4); "both" never gets there
    _fake_run(tmp_path, "grpo", 1, [(0, 0.4), (5, 0.6), (10, 0.5)], 10)
    _fake_run(tmp_path, "both", 1, [(0, 0.4), (5, 0.45), (10, 0.48)], 10)
    summary = exp.summarize(tmp_path, ["grpo", "both"], [0, 1], expected_rollouts=80)
    assert summary["equal_compute"] is True and summary["rollouts_per_run"] == [80]
    per = summary["per_run"]
    assert per["both"]["0"]["to_target"] == {"step": 7.5, "rollouts": 60.0, "tokens": 180.0}
    assert per["grpo"]["1"]["to_target"] == {"step": 2.5, "rollouts": 20.0, "tokens": 60.0}
    assert per["grpo"]["0"]["to_target"]["step"] == 10.0  # GRPO reaches its own end at the end
    assert per["both"]["1"]["to_target"] is None
    t = summary["arms"]["both"]["to_target"]
    assert (t["reached"], t["of"], t["rollouts"]["mean"], t["rollouts"]["n"]) == (1, 2, 60.0, 1)
    assert t["vs_grpo"]["mean"] == pytest.approx(60.0 / 80.0)
    g = summary["arms"]["grpo"]["to_target"]
    assert g["rollouts"]["mean"] == pytest.approx(50.0) and g["rollouts"]["n"] == 2
    # mechanism: the mean over steps and over the last 10% (here the last step), n/a if absent
    m = summary["arms"]["both"]["mechanism"]
    assert m["mechanism/budget_moved"]["all"] == pytest.approx(
        np.mean([0.01 * s for s in range(1, 11)])
    )
    assert m["mechanism/budget_moved"]["last10"] == pytest.approx(0.10)
    assert m["mechanism/q_tv"]["all"] == pytest.approx(0.2)  # replicate 1 logged none: skipped
    assert math.isnan(m["mechanism/visits_mean"]["all"])
    md = exp.markdown(summary, "## test")
    assert "| both | 0.055 / 0.100 | 0.200 / 0.200 | n/a |" in md
    assert "| both | 1/2 | 60 | 0.75 | 180 |" in md and "| grpo | 2/2 | 50 [" in md
    assert "Equal compute: yes; rollouts per run: [80] (expected 80)." in md
    # one run short of the budget: not equal compute
    _fake_run(tmp_path, "grpo", 2, [(0, 0.4), (10, 0.5)], 10, rollouts=7.0)
    _fake_run(tmp_path, "both", 2, [(0, 0.4), (10, 0.5)], 10)
    assert (
        exp.summarize(tmp_path, ["grpo", "both"], [0, 1, 2], expected_rollouts=80)["equal_compute"]
        is False
    )


@pytest.mark.slow
def test_tiny_long_grid_warms_up_per_replicate_pairs_within_it_and_resumes(tmp_path: Path) -> None:
    arms = ["grpo", "both", "variance-sampling"]
    argv = [
        "--grid",
        "tiny-long",
        "--out",
        str(tmp_path),
        "--arms",
        *arms,
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    assert exp.main(argv) == 0
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["equal_compute"] is True and summary["rollouts_per_run"] == [4 * 4 * 4]
    assert summary["grid"]["warmups"] == "per-replicate" and set(summary["warmups"]) == {
        "replicate 0",
        "replicate 1",
    }
    # each replicate its own warm-up (sft_seed = r), shared by the replicate's arms
    starts = {}
    for r in (0, 1):
        for a in arms:
            config = json.loads((exp.run_dir(tmp_path, a, r) / "config.json").read_text())
            assert (config["seed"], config["sft_seed"]) == (r, r)
            starts.setdefault(r, set()).add(config["model"])
        assert starts[r] == {str(exp.sft_dir(tmp_path, r))}
    stamps = [json.loads((tmp_path / f"sft-r{r}.json").read_text()) for r in (0, 1)]
    assert [s["sft_seed"] for s in stamps] == [0, 1]
    w0 = (exp.sft_dir(tmp_path, 0) / "model.safetensors").read_bytes()
    assert w0 != (exp.sft_dir(tmp_path, 1) / "model.safetensors").read_bytes()
    # the peer strategy keeps the controller fed: its mechanism metrics are logged
    rows = exp.load_rows(exp.run_dir(tmp_path, "variance-sampling", 0))
    assert all("mechanism/visits_mean" in r and "sampler/weight_mean" in r for r in rows[1:])
    assert [r["step"] for r in rows if "eval/pass@8" in r] == [0, 2, 4]
    assert rows[-1]["train/rollouts_cum"] == 64 and rows[-1]["train/tokens_cum"] == sum(
        r["train/tokens"] for r in rows[1:]
    )
    # an interrupted run (no final model, latest checkpoint at step 2) resumes from there and
    # ends exactly as before; a run that stopped before any checkpoint starts again
    rd = exp.run_dir(tmp_path, "both", 1)
    before = [
        {k: v for k, v in r.items() if not k.startswith("timing/")} for r in exp.load_rows(rd)
    ]
    shutil.rmtree(rd / "model")
    (rd / "checkpoints" / "latest").write_text("step-000002\n")
    stale = exp.run_dir(tmp_path, "grpo", 1)
    grpo_before = [
        {k: v for k, v in r.items() if not k.startswith("timing/")} for r in exp.load_rows(stale)
    ]
    shutil.rmtree(stale)
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    assert exp.main(argv) == 0
    after = [{k: v for k, v in r.items() if not k.startswith("timing/")} for r in exp.load_rows(rd)]
    assert after == before
    assert [
        {k: v for k, v in r.items() if not k.startswith("timing/")} for r in exp.load_rows(stale)
    ] == grpo_before
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["per_run"]["both"]["1"]["pass@8"] == summary["per_run"]["both"]["1"]["pass@8"]
    md = (tmp_path / "results.md").read_text()
    assert "Rollouts to reach GRPO's final held-out mean@8" in md and "budget_moved" in md
    mech = summary["arms"]["both"]["mechanism"]  # the core logs every mechanism key
    assert all(math.isfinite(v["all"]) and math.isfinite(v["last10"]) for v in mech.values())
    assert mech["mechanism/visits_mean"]["last10"] == pytest.approx(4 * 4 / 300)
    assert (tmp_path / "mechanism.png").stat().st_size > 0


def test_summary_only_trains_nothing_and_lists_unfinished_runs(tmp_path: Path) -> None:
    """While a grid runs in other processes, --summary-only reports the finished runs."""
    curve = [(0, 0.5), (4, 0.6)]
    _fake_run(tmp_path, "grpo", 0, curve, steps=4, rollouts=16.0)
    _fake_run(tmp_path, "both", 0, [(0, 0.5), (4, 0.7)], steps=4, rollouts=16.0)
    running = exp.run_dir(tmp_path, "both", 1)  # in flight: rows but no final model
    running.mkdir(parents=True)
    (running / "metrics.jsonl").write_text(json.dumps({"step": 0, "eval/pass@8": 0.4}) + "\n")
    argv = ["--grid", "tiny-long", "--out", str(tmp_path), "--arms", "grpo", "both"]
    assert exp.main([*argv, "--summary-only"]) == 0
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["unfinished"] == ["grpo-s1", "both-s1"]
    assert set(summary["per_run"]["both"]) == {"0"} and summary["warmups"] == {}
    assert summary["arms"]["both"]["pass@8_diff"]["mean"] == pytest.approx(0.1)
    assert "Interim: 2 of 4 runs unfinished" in (tmp_path / "results.md").read_text()
    # nothing was trained or warmed up, and the in-flight run was left as it was
    assert not exp.sft_dir(tmp_path, 0).exists() and not exp.run_dir(tmp_path, "grpo", 1).exists()
    assert [p.name for p in running.iterdir()] == ["metrics.jsonl"]
