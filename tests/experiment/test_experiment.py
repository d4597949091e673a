"""The experiment's bookkeeping: equal compute across arms and paired statistics, on a tiny grid."""

from __future__ import annotations

import importlib.util
import json
import math
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
    assert shift.mean == pytest.approx(0.1) and shift.high - shift.low == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="no seed is shared"):
        exp.paired({5: 1.0}, base)


@pytest.mark.slow
def test_tiny_grid_runs_at_equal_compute(tmp_path: Path) -> None:
    arms = ["grpo", "prompt-reweight", "rollout-neyman"]
    rc = exp.main(["--grid", "tiny", "--out", str(tmp_path), "--arms", *arms, "--seeds", "2",
                   "--cache-dir", str(tmp_path / "cache")])
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
            rows = [json.loads(x) for x in (tmp_path / "runs" / f"{a}-s{s}" / "metrics.jsonl").open()]
            assert rows[0]["step"] == 0 and per[a][s]["pass@8_start"] == rows[0]["eval/pass@8"]
            gains.append(rows[-1]["eval/pass@8"] - rows[0]["eval/pass@8"])
        assert summary["arms"][a]["pass@8_gain"]["mean"] == pytest.approx(np.mean(gains))
    assert summary["eval_samples"] == 8 and "mean@8 (%)" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "results.md").read_text().count("|") > 20
    assert (tmp_path / "curves.png").stat().st_size > 0
    # a repeated command skips finished runs and gives the same summary
    exp.main(["--grid", "tiny", "--out", str(tmp_path), "--arms", *arms, "--seeds", "2",
              "--cache-dir", str(tmp_path / "cache")])
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["per_run"] == summary["per_run"]
    # the shared warm start is never reused for another task
    with pytest.raises(ValueError, match="was warmed up with"):
        exp.main(["--grid", "tiny", "--out", str(tmp_path), "--task", "addition:min_digits=1,max_digits=2"])
