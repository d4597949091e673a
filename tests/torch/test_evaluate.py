"""Held-out evaluation statistics: per-prompt counts, scores and the paired start/end change."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gdro_core import pass_at_k
from gdro_torch.evaluate import EvalCounts, paired_change, score_counts


def _counts(correct: list[int], levels: list[int], n: int = 8) -> EvalCounts:
    return EvalCounts(np.array(correct, dtype=np.int64), np.array(levels, dtype=np.int64), n)


def test_score_counts_matches_a_hand_computation() -> None:
    counts = _counts([8, 4, 0, 1, 2], [1, 1, 2, 2, 2])
    out = score_counts(counts, ks=(1, 8))
    assert out["eval/mean@8"] == pytest.approx((8 + 4 + 0 + 1 + 2) / 40)
    assert out["eval/pass@1"] == pytest.approx(out["eval/mean@8"])
    assert out["eval/pass@8"] == pytest.approx(4 / 5)  # with n = k, pass@8 is "any correct"
    assert out["eval/pass@8/level2"] == pytest.approx(2 / 3)
    p2 = [float(pass_at_k(8, c, 2)) for c in (0, 1, 2)]
    assert score_counts(counts, ks=(2,))["eval/pass@2/level2"] == pytest.approx(np.mean(p2))
    with pytest.raises(ValueError, match="k <= samples"):
        score_counts(counts, ks=(9,))


def test_paired_change_is_a_t_interval_over_prompts() -> None:
    start = _counts([0, 2, 8, 1, 3], [1, 1, 2, 2, 3])
    end = _counts([4, 6, 8, 1, 2], [1, 1, 2, 2, 3])
    diffs = (end.correct - start.correct) / 8
    change, half = paired_change(start, end, "mean@8")
    assert change == pytest.approx(diffs.mean())
    assert half == pytest.approx(2.776 * diffs.std(ddof=1) / math.sqrt(5))  # t_{0.975, 4}
    # pass@8 with n = 8: a prompt counts once solved; only the first prompt changes (0 -> 1)
    assert paired_change(start, end, "pass@8")[0] == pytest.approx(1 / 5)
    assert paired_change(start, start, "pass@8") == (0.0, 0.0)


def test_paired_change_refuses_different_evaluations() -> None:
    a = _counts([1, 2], [1, 2])
    with pytest.raises(ValueError, match="same prompts"):
        paired_change(a, _counts([1, 2, 3], [1, 2, 2]))
    with pytest.raises(ValueError, match="same prompts"):
        paired_change(a, _counts([1, 2], [1, 2], n=16))
    with pytest.raises(ValueError, match="mean@8 or pass@k"):
        paired_change(a, a, "median")


def test_counts_survive_a_json_round_trip(tmp_path) -> None:
    counts = _counts([3, 0, 8], [2, 5, 1], n=8)
    path = tmp_path / "step-000000.json"
    path.write_text(counts.to_json())
    again = EvalCounts.load(path)
    assert again.samples == 8 and again.correct.dtype == np.int64
    assert again.correct.tolist() == [3, 0, 8] and again.levels.tolist() == [2, 5, 1]
