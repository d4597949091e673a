"""gdro_core under attack: corrupted checkpoints, extreme but legal inputs, configs from numpy.

Each test here pins a failure that an earlier release had (a segfault, a bare error, NaN): the
regression test for the fix. The fuzz test mutates every leaf of real states in a subprocess, so
a crash fails the test instead of killing the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gdro_core import (
    ClassifierConfig,
    ControllerConfig,
    GDROController,
    PromptConfig,
    RolloutConfig,
    _reference,
    pass_at_k,
)

ROOT = Path(__file__).resolve().parents[2]
FAIL = PromptConfig(signal="failure")


def drive(ctl: GDROController, steps: int, batch: int, seed: int = 0, loss_scale: float = 1.0,
          reward_scale: float = 1.0) -> None:
    rng = np.random.default_rng(seed)
    p = np.random.default_rng(1).beta(0.5, 0.5, ctl.num_prompts)
    for _ in range(steps):
        plan = ctl.plan(ctl.sample(batch))
        r = (rng.random(plan.num_rollouts) < np.repeat(p[plan.prompt_ids], plan.rollouts)).astype(float)
        ctl.update(plan, r * reward_scale, rng.normal(size=batch) * loss_scale)


def resample_state() -> tuple[GDROController, dict[str, Any]]:
    ctl = GDROController(40, prompt=PromptConfig(mode="resample", signal="failure"), seed=0)
    drive(ctl, 4, 8)
    ctl.plan(ctl.sample(8))  # a plan in flight
    return ctl, ctl.state_dict()


def fresh_like(ctl: GDROController) -> GDROController:
    return GDROController.from_config(ctl.config.replace(seed=0), ctl.num_prompts)


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], dict):
            assert_same(a[k], b[k])
        else:
            assert np.array_equal(np.asarray(a[k]), np.asarray(b[k])), k


# ================================================================ 1. checkpoint values that crashed
@pytest.mark.parametrize(
    ("section", "key", "value", "match"),
    [
        ("sampler", "member_pos", 2**31 - 1, r"state\['sampler'\]\['member_pos'\] must be the inverse permutation"),
        ("classifier", "bins", 255, r"state\['classifier'\]\['bins'\] must be bins in \[0, 10\); got 255"),
        ("rollout", "mu", float("nan"), r"state\['rollout'\]\['mu'\] must be a finite number"),
        ("sampler", "pos", -1, r"state\['sampler'\]\['pos'\] must be an integer in \[0, 40\]; got -1"),
    ],
)
def test_corrupted_values_are_refused_at_load(section: str, key: str, value: Any, match: str) -> None:
    ctl, d = resample_state()
    if key in ("member_pos", "bins"):
        arr = d[section][key].copy()
        arr[0] = value
        d[section][key] = arr
    elif key == "pos":
        d[section][key] = np.int64(value)
    else:
        d[section][key] = value
    target = fresh_like(ctl)
    before = target.state_dict()
    with pytest.raises(ValueError, match=match):
        target.load_state_dict(d)
    assert_same(before, target.state_dict())


def test_a_uniform_sampler_position_must_be_in_the_epoch() -> None:
    ctl = GDROController(30, prompt=FAIL, seed=0)
    d = ctl.state_dict()
    d["sampler"]["pos"] = -1
    with pytest.raises(ValueError, match=r"\['pos'\] must be an integer in \[0, 30\]; got -1"):
        fresh_like(ctl).load_state_dict(d)


# ================================================================ 2. the in-flight section and the top
def test_in_flight_records_are_validated() -> None:
    ctl, d = resample_state()
    rec = d["in_flight"]["0"]
    cases = []
    for key in ("prompt_ids", "q", "done", "serial"):
        bad = json.loads(json.dumps({k: 0 for k in rec}))  # shape of the keys only
        del bad
        broken = {k: (np.array(v) if isinstance(v, np.ndarray) else v) for k, v in rec.items()}
        del broken[key]
        cases.append((broken, rf"must be a dict with key '{key}'"))
    wrong_dtype = dict(rec, rollouts=rec["rollouts"].astype(np.float64))
    cases.append((wrong_dtype, r"\['rollouts'\] must be an array of shape \(8\) and dtype int64"))
    extra_bin = dict(rec, active=np.append(rec["active"], 9))
    cases.append((extra_bin, r"\['active'\] must be the bins present in the plan"))
    budget = dict(rec, rollouts=rec["rollouts"] + 1)
    cases.append((budget, r"\['rollouts'\] must be counts in \[4, 12\] summing to 4 x 8"))
    # fixed mode gives every prompt the mean: a plan with [2, 6, ...] is foreign even though its
    # counts lie in [min, max] and meet the budget (pass@k's k may be up to the mean)
    uneven = rec["rollouts"].copy()
    uneven[:2] = (2, 6)
    cases.append((dict(rec, rollouts=uneven), r"\['rollouts'\] must be counts in \[4, 12\]"))
    for broken, match in cases:
        d2 = dict(d, in_flight={"count": 1, "0": broken})
        with pytest.raises(ValueError, match=match):
            fresh_like(ctl).load_state_dict(d2)
    with pytest.raises(ValueError, match=r"\['count'\] must be an integer in \[0, 1\]; got 2"):
        fresh_like(ctl).load_state_dict(dict(d, in_flight={"count": 2, "0": rec, "1": rec}))


@pytest.mark.parametrize(
    ("key", "value", "exc", "match"),
    [
        ("rng", "{not json", ValueError, r"state\['rng'\] must be a numpy bit generator state as JSON"),
        ("rng", json.dumps({"bit_generator": "MT19937x"}), ValueError, r"state\['rng'\] must be"),
        ("metrics", "-1", ValueError, r"state\['metrics'\] must be '' or a JSON object of finite numbers"),
        ("metrics", '{"a": NaN}', ValueError, r"state\['metrics'\] must be"),
        ("num_prompts", np.arange(3), TypeError, r"state\['num_prompts'\] must be an integer"),
        ("step", -2, ValueError, r"state\['step'\] must be an integer >= 0; got -2"),
        ("format_version", 9, ValueError, r"state\['format_version'\] must be one of \[1, 2\]; got 9"),
    ],
)
def test_top_level_leaves_are_validated(key: str, value: Any, exc: type, match: str) -> None:
    ctl = GDROController(20, prompt=FAIL, seed=0)
    drive(ctl, 2, 5)
    d = dict(ctl.state_dict(), **{key: value})
    target = fresh_like(ctl)
    before = target.state_dict()
    with pytest.raises(exc, match=match):
        target.load_state_dict(d)
    assert_same(before, target.state_dict())


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_files_name_the_path(tmp_path: Path, damage: str) -> None:
    ctl = GDROController(20, prompt=FAIL, seed=0)
    path = tmp_path / "ctl.npz"
    ctl.save(path)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x00garbage" * 50, "empty": b""}[damage])
    with pytest.raises(ValueError, match=rf"path must be a readable .npz file written by GDROController.save; got '{path}'"):
        GDROController.load(path)


def test_a_format_1_state_loads_and_resumes(tmp_path: Path) -> None:
    ctl = GDROController(30, prompt=FAIL, rollout=RolloutConfig(mode="neyman"), seed=0)
    drive(ctl, 3, 6)
    plan = ctl.plan(ctl.sample(6))
    d = ctl.state_dict()
    old = {k: v for k, v in d.items() if k not in ("in_flight", "visits")}
    old["format_version"] = 1
    old["classifier"] = {k: v for k, v in d["classifier"].items() if k != "flags"}
    cfg = json.loads(d["config"])
    old["config"] = json.dumps({k: cfg[k] for k in ("classifier", "prompt", "rollout")}, sort_keys=True)
    rec = d["in_flight"]["0"]
    old["pending"] = {k: rec[k] for k in ("prompt_ids", "bins", "rollouts", "weights", "sample_probs",
                                          "rollout_probs", "step", "serial", "q", "active", "arm_index",
                                          "unconstrained", "mu")}
    back = fresh_like(ctl)
    back.load_state_dict(old)
    r = np.ones(plan.num_rollouts)
    ctl.update(plan, r)
    back.update(plan, r)
    assert back.step == ctl.step and np.array_equal(back.bins(np.arange(30)), ctl.bins(np.arange(30)))


# ================================================================ 3.-5. extreme but legal inputs
def finite_everywhere(ctl: GDROController) -> None:
    m = ctl.metrics()
    assert all(np.isfinite(v) for v in m.values()), [k for k, v in m.items() if not np.isfinite(v)]
    assert np.all(np.isfinite(ctl.q())) and abs(ctl.q().sum() - 1) < 1e-9
    assert np.isfinite(ctl._rstate.mu) and np.all(np.isfinite(ctl._rstate.arm_loss))
    assert np.all(np.isfinite(ctl._pstate.score))


def test_gamma_zero_keeps_weights_finite() -> None:
    ctl = GDROController(2, classifier=ClassifierConfig(num_bins=2, window=4),
                         prompt=PromptConfig(gamma=0.0, eta=100.0, score_rule="cumulative", signal="failure"),
                         seed=0)
    for t in range(40):
        plan = ctl.plan([0, 1])
        w = plan.weights
        assert np.all(np.isfinite(w)) and np.average(w, weights=plan.rollouts) == pytest.approx(1.0), t
        ctl.update(plan, np.r_[np.zeros(4), np.ones(4)])
        solved = ctl.plan([1])  # a batch whose only bin has q == 0 after a few steps
        assert solved.weights.tolist() == [1.0], t
        ctl.cancel(solved)
    assert ctl.q().min() == 0.0  # q underflowed, yet the weights are defined
    finite_everywhere(ctl)


@pytest.mark.slow
def test_gamma_zero_with_the_paper_eta_over_a_long_run() -> None:
    ctl = GDROController(2, classifier=ClassifierConfig(num_bins=2, window=4),
                         prompt=PromptConfig(gamma=0.0, score_rule="cumulative", signal="failure"), seed=0)
    rewards = np.r_[np.zeros(4), np.ones(4)]
    for _ in range(2500):
        plan = ctl.plan([0, 1])
        ctl.update(plan, rewards)
    assert np.all(np.isfinite(ctl.plan([0, 1]).weights))
    finite_everywhere(ctl)


@pytest.mark.parametrize("mode", ["reweight", "resample"])
@pytest.mark.parametrize("rule", ["ema", "cumulative"])
def test_huge_losses_and_rewards_keep_everything_finite(mode: str, rule: str) -> None:
    for rollout in (RolloutConfig(mode="bandit", selection="sample"),
                    RolloutConfig(mode="bandit", arm_rule="cumulative", dual_step=1e308, mu_max=1e308),
                    RolloutConfig(mode="neyman")):
        ctl = GDROController(60, prompt=PromptConfig(mode=mode, score_rule=rule, eta=1e308, score_clip=1e308),
                             rollout=rollout, seed=0)
        rng = np.random.default_rng(0)
        for t in range(12):
            plan = ctl.plan(ctl.sample(10))
            sign = 1.0 if t % 2 == 0 else -1.0
            losses = sign * np.full(10, 1e308)
            rewards = np.where(rng.random(plan.num_rollouts) < 0.5, 1e308, -1e308)
            ctl.update(plan, rewards, losses)
            finite_everywhere(ctl)
        plan = ctl.plan(ctl.sample(10))
        assert np.all(np.isfinite(plan.weights)) and plan.rollouts.sum() == rollout.mean * 10


def test_tiny_and_zero_values_are_fine() -> None:
    ctl = GDROController(30, prompt=PromptConfig(eta=0.0, gamma=0.0),
                         rollout=RolloutConfig(mode="bandit", arm_eta=0.0, arm_gamma=0.0, dual_step=0.0), seed=0)
    drive(ctl, 6, 6, loss_scale=1e-308, reward_scale=5e-324)
    finite_everywhere(ctl)


# ================================================================ 6. numpy and Fraction values in configs
NUMERIC_CASES = [
    ("classifier", "window", [np.int64(50), np.uint64(50), np.int32(50)]),
    ("classifier", "num_bins", [np.int64(6), np.uint8(6)]),
    ("classifier", "hysteresis", [np.float32(0.03), np.float16(0.03), Fraction(3, 100)]),
    ("classifier", "success_threshold", [np.float64(0.5), Fraction(1, 2)]),
    ("prompt", "eta", [np.float32(0.5), np.float64(0.5), Fraction(1, 2), np.int64(1)]),
    ("prompt", "gamma", [np.float16(0.01), Fraction(1, 100)]),
    ("prompt", "share_normalize", [np.bool_(True), np.bool_(False)]),
    ("prompt", "mode", [np.str_("resample")]),
    ("rollout", "mean", [np.int64(6), np.uint64(6), np.int16(6)]),
    ("rollout", "dual_step", [np.float32(0.1), Fraction(1, 10)]),
    ("rollout", "mu_max", [np.float64(2.0), np.int64(2)]),
]


@pytest.mark.parametrize(("section", "field", "value"),
                         [(s, f, v) for s, f, vs in NUMERIC_CASES for v in vs],
                         ids=lambda x: type(x).__name__ if not isinstance(x, str) else x)
def test_numpy_and_fraction_values_become_plain_python_and_save(section: str, field: str, value: Any,
                                                                 tmp_path: Path) -> None:
    cls = {"classifier": ClassifierConfig, "prompt": PromptConfig, "rollout": RolloutConfig}[section]
    cfg = cls(**{field: value})
    stored = getattr(cfg, field)
    assert type(stored) in (int, float, bool, str), type(stored)
    ctl = GDROController(20, **{section: cfg}, prompt=FAIL) if section != "prompt" else \
        GDROController(20, prompt=PromptConfig(**{field: value, "signal": "failure"}))
    drive(ctl, 2, 4)
    ctl.save(tmp_path / "c.npz")
    back = GDROController.load(tmp_path / "c.npz")
    assert getattr(getattr(back, f"{section}_config"), field) == stored


def test_controller_config_round_trips_numpy_seeds() -> None:
    cfg = ControllerConfig(seed=np.uint32(7), max_in_flight=np.int64(2))
    assert type(cfg.seed) is int and type(cfg.max_in_flight) is int
    assert ControllerConfig.from_mapping(cfg.to_dict()) == cfg


# ================================================================ 8.-9. install environments
def test_a_read_only_install_compiles_without_a_cache() -> None:
    code = (
        "from numba.core import caching\n"
        "caching.CacheImpl._locator_classes = []  # numba finds nowhere to write\n"
        "import numpy as np\n"
        "from gdro_core import GDROController, PromptConfig, RolloutConfig, _kernels\n"
        "assert _kernels.CACHE is False\n"
        "ctl = GDROController(30, prompt=PromptConfig(mode='resample', signal='failure'),\n"
        "    rollout=RolloutConfig(mode='bandit', arm_signal='variance', selection='sample'), seed=0)\n"
        "plan = ctl.plan(ctl.sample(6)); ctl.update(plan, np.ones(plan.num_rollouts)); print(ctl.step)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 0 and out.stdout.strip() == "1", out.stderr


def test_the_numpy_backend_works_without_bitwise_count(monkeypatch: pytest.MonkeyPatch) -> None:
    bits = np.random.default_rng(0).integers(0, 2**63, size=(50, 2), dtype=np.uint64)
    with_count = _reference.popcount_rows(bits)
    monkeypatch.delattr(np, "bitwise_count", raising=False)  # numpy < 2.0
    without = _reference.popcount_rows(bits)
    np.testing.assert_array_equal(with_count, without)
    ctl = GDROController(20, prompt=FAIL, seed=0, backend="numpy")
    drive(ctl, 3, 5)
    assert ctl.step == 3


# ================================================================ 10. the smaller items
def test_pass_at_k_is_correctly_rounded() -> None:
    from math import comb

    for n, c, k in [(1024, 2, 97), (1024, 500, 300), (64, 3, 8), (4096, 1, 1024), (13, 7, 5)]:
        exact = float(1 - Fraction(comb(n - c, k), comb(n, k)))
        assert pass_at_k(n, c, k) == exact, (n, c, k)
    with pytest.raises(ValueError, match="n must be integers up to 2\\*\\*62; got 18446744073709551615"):
        pass_at_k(np.uint64(2**64 - 1), 0, 1)


@pytest.mark.parametrize("seed", [-1, 2**63, np.uint64(2**64 - 1)])
def test_a_seed_out_of_range_is_named_as_given(seed: Any) -> None:
    with pytest.raises(ValueError, match=r"^seed must be an integer in \[0, 9223372036854775807\] "
                                         r"\(or a SeedSequence, or None\); got "):
        GDROController(10, seed=seed)


def test_an_edited_plan_is_rejected() -> None:
    ctl = GDROController(20, prompt=FAIL, rollout=RolloutConfig(mode="neyman"), seed=0)
    plan = ctl.plan(ctl.sample(4))
    plan.rollouts.setflags(write=True)
    plan.rollouts[0] += 1
    plan.rollouts[1] -= 1
    with pytest.raises(ValueError, match="that is not in flight"):
        ctl.update(plan, np.zeros(plan.num_rollouts))
    plan.rollouts[0] -= 1
    plan.rollouts[1] += 1
    ctl.update(plan, np.zeros(plan.num_rollouts))  # restored, it is the plan again


def test_threads_sharing_a_controller_never_get_the_same_batch() -> None:
    ctl = GDROController(50_000, prompt=FAIL, seed=0)
    got: list[np.ndarray] = []

    def work() -> None:
        for _ in range(500):
            got.append(ctl.sample(8))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = np.concatenate(got)
    assert flat.size == 4 * 500 * 8 and np.unique(flat).size == flat.size  # 16,000 of 50,000: one epoch


def test_a_large_budget_dp_warns() -> None:
    ctl = GDROController(2000, prompt=FAIL, rollout=RolloutConfig(mode="bandit", mean=100, min=2, max=257), seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import gdro_core.rollout as R

        saved, R.DP_WARN_WORK = R.DP_WARN_WORK, 1_000_000
        try:
            ctl.plan(np.arange(300))
        finally:
            R.DP_WARN_WORK = saved
    assert any(w.category is R.DPCostWarning for w in caught)


# ================================================================ the fuzz test
@pytest.mark.slow
def test_fuzzed_states_never_crash_the_process() -> None:
    out = subprocess.run([sys.executable, str(Path(__file__).with_name("fuzz_states.py")), "--quick"],
                         capture_output=True, text=True, cwd=ROOT, timeout=900,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["cases"] >= 2000 and summary["crashes"] == 0 and summary["bad_errors"] == 0
    assert summary["rejected"] > 0.5 * summary["cases"]  # most mutations must be caught at load
