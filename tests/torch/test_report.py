"""``gdro report`` on synthetic run directories of both kinds, with missing keys; the one reader
and the one smoothing behind it (:mod:`gdro_cli.runs`)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdro_cli.report import write_report
from gdro_cli.runs import load_run, read_jsonl, smooth


def _write_run(path: Path, kind: str, steps: int, with_eval: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"kind": kind, "num_bins": 4}))
    rows = []
    if with_eval:
        rows.append({"step": 0, "eval/pass@8": 0.3, "eval/mean@8": 0.1})
    for s in range(1, steps + 1):
        present = [b for b in range(4) if rng.random() < 0.7] or [0]  # bins absent in some steps
        share = rng.dirichlet(np.ones(len(present)))
        q = rng.dirichlet(np.ones(4))
        row = {
            "step": s,
            "classifier/mean_bin": float(share @ np.array(present)),
            "prompt/entropy": float(-(q * np.log(q)).sum()),
            "train/reward_mean": rng.random(),
            "rollout/shadow_price": 0.01 * s,
            "rollout/mean_proposed": 4 + rng.random(),
        }
        row.update({f"classifier/share/{b}": float(v) for b, v in zip(present, share)})
        row.update({f"prompt/q/{b}": float(v) for b, v in enumerate(q)})
        row.update({f"rollout/n_mean/{b}": float(rng.integers(2, 12)) for b in present})
        row.update({f"train/reward/{b}": rng.random() for b in present})
        if with_eval and s % 5 == 0:
            row["eval/pass@8"] = 0.3 + 0.01 * s
        rows.append(row)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 9')


def test_report_plots_train_and_simulation_runs(tmp_path: Path) -> None:
    _write_run(tmp_path / "train-a", "train", 20, with_eval=True, seed=0)
    _write_run(tmp_path / "sim" / "runs" / "gdro-s0", "simulation", 30, with_eval=False, seed=1)
    _write_run(tmp_path / "sim" / "runs" / "grpo-s0", "simulation", 30, with_eval=False, seed=2)
    out = write_report([tmp_path / "train-a", tmp_path / "sim"])
    assert out == tmp_path / "train-a" / "report"
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(
        ["learning_curves.png"]
        + [f"{n}-{k}.png" for n in ("train-a", "gdro-s0", "grpo-s0") for k in ("bins", "dynamics")]
    )
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    md = (out / "report.md").read_text()
    assert (
        "| train-a | train |" in md and "0.300 → 0.500" in md and "| gdro-s0 | simulation |" in md
    )
    assert "![Learning curves](learning_curves.png)" in md


def test_report_tolerates_sparse_runs_and_rejects_non_runs(tmp_path: Path) -> None:
    run = tmp_path / "bare"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text('{"step": 1, "train/reward_mean": 0.5}\n')
    assert load_run(run).num_bins == 0
    out = write_report([run], tmp_path / "out")
    assert [p.name for p in out.glob("*.png")] == ["learning_curves.png"]
    with pytest.raises(ValueError, match="no config.json"):
        write_report([tmp_path / "missing"])


def test_report_reads_the_mean_of_any_sample_count(tmp_path: Path) -> None:
    """A run evaluated with 16 samples per prompt logs mean@16: the summary shows it."""
    run = tmp_path / "r16"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"kind": "train"}))
    rows = [
        {"step": 0, "eval/pass@8": 0.5, "eval/mean@16": 0.25},
        {"step": 1, "train/reward_mean": 0.5},
        {"step": 2, "train/reward_mean": 0.6, "eval/pass@8": 0.75, "eval/mean@16": 0.5},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_run(run).mean_key == "eval/mean@16"
    md = (write_report([run], tmp_path / "out") / "report.md").read_text()
    assert "0.500 → 0.750" in md and "0.250 → 0.500 (n=16)" in md


def _train_run(
    path: Path, config: dict, rollouts: list[list[int]], curve: dict[int, float]
) -> None:
    """A ``gdro train``-like run: per-step rollouts per bin, mechanism metrics, evaluations."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"kind": "train", "num_bins": 2, **config}))
    rows = [{"step": 0, "eval/pass@8": curve[0], "eval/mean@16": curve[0]}]
    for s, per_bin in enumerate(rollouts, start=1):
        row = {
            "step": s,
            "train/rollouts": 8.0 * 2,
            "train/tokens": 40.0,
            "classifier/share/0": 0.5,
            "classifier/share/1": 0.5,
            "rollout/mean": 8.0,
            "rollout/mean_proposed": 8.0,
            "mechanism/budget_moved": abs(per_bin[0] - 8) / 8,
            "mechanism/zero_adv_share": 0.5,
        }
        row.update({f"rollout/n_mean/{b}": float(n) for b, n in enumerate(per_bin)})
        if s in curve:
            row.update({"eval/pass@8": curve[s], "eval/mean@16": curve[s]})
        rows.append(row)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_report_mechanism_panels_rollout_panels_and_rollouts_to_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gdro_cli.report as report

    figures: dict[str, list[str]] = {}
    real_savefig = report.savefig

    def savefig(fig, path: Path) -> Path:  # record each figure's panel titles and title
        figures[path.name] = [ax.get_title() for ax in fig.axes] + [
            fig._suptitle.get_text() if fig._suptitle else ""
        ]
        return real_savefig(fig, path)

    monkeypatch.setattr(report, "savefig", savefig)
    same = {"seed": 0, "sft_seed": 0, "task": "addition", "model": "m"}
    _train_run(
        tmp_path / "grpo",
        {"prompt": "off", "rollout": "fixed", **same},
        [[8, 8]] * 4,
        {0: 0.4, 2: 0.5, 4: 0.6},
    )
    _train_run(
        tmp_path / "both",
        {"prompt": "reweight", "rollout": "neyman", **same},
        [[12, 4]] * 4,
        {0: 0.4, 2: 0.7, 4: 0.8},
    )
    other = {**same, "seed": 1}  # another seed: no baseline of its own among the runs
    _train_run(
        tmp_path / "lone",
        {"prompt": "reweight", "rollout": "fixed", **other},
        [[8, 8]] * 4,
        {0: 0.4, 4: 0.5},
    )
    out = write_report([tmp_path / "grpo", tmp_path / "both", tmp_path / "lone"], tmp_path / "out")
    # fixed rollouts: no flat rollout panels, the title says so; moving rollouts: the panels
    assert not any("rollouts per prompt" in t for t in figures["grpo-bins.png"])
    assert "grpo (rollouts fixed at 8 per prompt)" in figures["grpo-bins.png"]
    assert "rollouts per prompt per bin" in figures["both-bins.png"]
    assert "grpo-dynamics.png" not in figures or not any(
        "proposed" in t for t in figures["grpo-dynamics.png"]
    )
    # one panel per mechanism metric logged, the runs overlaid
    titles = figures["mechanism.png"]
    assert (
        sum("(budget_moved)" in t for t in titles) == 1
        and sum("(zero_adv_share)" in t for t in titles) == 1
    )
    assert not any("(q_tv)" in t for t in titles)
    # rollouts to the baseline's final mean@16 (0.6): "both" crosses it between steps 0 and 2
    # (0.4 -> 0.7): two thirds of the way, at step 4/3 = 21.3 rollouts (16 a step)
    md = (out / "report.md").read_text()
    assert "## Rollouts to reach the GRPO baseline's final held-out mean@16" in md
    assert "| both | grpo | 0.600 | 1.3 | 21 | 53 |" in md
    assert "| grpo | grpo | 0.600 | 4.0 | 64 | 160 |" in md
    assert "| lone |" not in md.split("## Rollouts")[1]
    assert (out / "rollouts_to_target.png").stat().st_size > 5000


def _trailing_mean(values: list[float], window: int) -> list[float]:
    """The oracle of ``smooth``: a loop over the finite values seen so far."""
    out, seen = [], []
    for v in values:
        if math.isfinite(v):
            seen.append(v)
            out.append(sum(seen[-window:]) / len(seen[-window:]))
        else:
            out.append(math.nan)
    return out


finite_or_missing = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False), st.just(math.nan), st.just(math.inf)
)


@given(st.lists(finite_or_missing, max_size=60), st.integers(1, 25))
@settings(max_examples=200, deadline=None)
def test_smooth_is_a_trailing_mean_over_finite_values_that_keeps_alignment(
    values: list[float], window: int
) -> None:
    out = smooth(values, window)
    assert out.shape == (len(values),)
    missing = ~np.isfinite(np.asarray(values, dtype=float))
    assert np.array_equal(np.isnan(out), missing)  # NaN exactly where the step has no value
    np.testing.assert_allclose(out, _trailing_mean(values, window), rtol=1e-9, atol=1e-6)
    finite = [v for v in values if math.isfinite(v)]
    if finite:  # a mean stays within the values it averages
        assert np.nanmin(out) >= min(finite) - 1e-6 and np.nanmax(out) <= max(finite) + 1e-6
    np.testing.assert_array_equal(smooth(values, 1)[~missing], np.asarray(finite))


def test_smooth_rejects_a_window_below_one_and_gdro_report_names_its_flag(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="window must be an integer >= 1; got 0"):
        smooth([1.0, 2.0], 0)
    with pytest.raises(TypeError, match="window must be an integer"):
        smooth([1.0, 2.0], 2.5)  # type: ignore[arg-type]
    _write_run(tmp_path / "run", "train", 10, with_eval=False, seed=0)
    with pytest.raises(ValueError, match="smooth must be an integer >= 0; got -1"):
        write_report([tmp_path / "run"], tmp_path / "out", smooth=-1)
    assert not (tmp_path / "out").exists()  # a rejected call writes nothing


@given(
    st.lists(st.dictionaries(st.sampled_from(["step", "a", "b/0"]), st.floats(0, 1)), max_size=8),
    st.sampled_from(["", "\n", '{"step": 3, "a"', "[1, 2]\n", "7\n"]),
)
@settings(max_examples=50, deadline=None)
def test_read_jsonl_returns_the_objects_and_skips_torn_or_foreign_lines(
    rows: list[dict[str, float]], tail: str
) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "metrics.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
        assert read_jsonl(path) == rows
        assert read_jsonl(Path(d) / "not-yet.jsonl") == []


def test_report_draws_smoothed_curves_against_their_own_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gdro_cli.report as report

    lines: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    real_savefig = report.savefig

    def savefig(fig, path: Path) -> Path:
        lines[path.name] = [(ln.get_xdata(), ln.get_ydata()) for ln in fig.axes[0].get_lines()]
        return real_savefig(fig, path)

    monkeypatch.setattr(report, "savefig", savefig)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    # steps 1..30, no reward logged at steps 10 and 20 (NaN written as null by a crashed step)
    reward = {s: float(s % 7) for s in range(1, 31) if s not in (10, 20)}
    rows = [{"step": s, "train/reward_mean": reward.get(s)} for s in range(1, 31)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_report([run], tmp_path / "out", smooth=4)
    ((x, y),) = lines["learning_curves.png"]
    steps = sorted(reward)
    np.testing.assert_array_equal(x, steps)  # every logged step, none shifted or dropped
    np.testing.assert_allclose(y, _trailing_mean([reward[s] for s in steps], 4))
