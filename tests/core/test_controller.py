"""The GDROController contract of api.md: sampling, planning, updating, metrics, persistence."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from gdro_core import ClassifierConfig, GDROController, Plan, PromptConfig, RolloutConfig

FAIL = PromptConfig(signal="failure")


def simulate(ctl: GDROController, steps: int, batch: int, seed: int = 0, losses: bool = False) -> list[Plan]:
    rng = np.random.default_rng(seed)
    p_true = np.random.default_rng(123).beta(0.4, 0.6, ctl.num_prompts)
    plans = []
    for _ in range(steps):
        plan = ctl.plan(ctl.sample(batch))
        r = (rng.random(plan.num_rollouts) < np.repeat(p_true[plan.prompt_ids], plan.rollouts)).astype(float)
        ctl.update(plan, r, rng.normal(size=len(plan.prompt_ids)) if losses else None)
        plans.append(plan)
    return plans


def assert_state_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], dict):
            assert_state_equal(a[k], b[k])
        else:
            x, y = np.asarray(a[k]), np.asarray(b[k])
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), k


def test_paper_defaults() -> None:
    ctl = GDROController(num_prompts=50, seed=0)
    assert ctl.prompt_config.mode == "reweight" and ctl.prompt_config.signal == "loss"
    assert ctl.rollout_config.mode == "fixed" and ctl.rollout_config.mean == 4
    assert ctl.num_bins == 10
    plan = ctl.plan(ctl.sample(4))
    assert plan.rollouts.tolist() == [4, 4, 4, 4] and plan.step == 0
    with pytest.raises(ValueError, match="losses must be a float array of 4 per-prompt losses"):
        ctl.update(plan, np.zeros(16))
    ctl.update(plan, np.zeros(16), losses=np.ones(4))
    assert ctl.step == 1


def test_epochs_cover_every_id_once_and_straddle_without_duplicates() -> None:
    ctl = GDROController(10, prompt=FAIL, seed=3)
    draws = [ctl.sample(4) for _ in range(5)]  # 20 ids = 2 epochs; batches 3 and 5 straddle
    for d in draws:
        assert len(set(d.tolist())) == len(d) and d.dtype == np.int64
    flat = np.concatenate(draws)
    assert sorted(flat[:10].tolist()) == list(range(10))
    assert sorted(flat[10:20].tolist()) == list(range(10))
    again = GDROController(10, prompt=FAIL, seed=3)
    np.testing.assert_array_equal(np.concatenate([again.sample(4) for _ in range(5)]), flat)


def test_straddling_batch_pushes_repeats_later_in_the_new_epoch() -> None:
    for seed in range(20):
        ctl = GDROController(5, prompt=FAIL, seed=seed)
        a = ctl.sample(3)
        b = ctl.sample(4)  # 2 from epoch 1, 2 from epoch 2 that are not already in b
        c = ctl.sample(3)  # rest of epoch 2
        assert len(set(b.tolist())) == 4
        assert sorted(np.concatenate([a, b[:2]]).tolist()) == list(range(5))
        assert sorted(np.concatenate([b[2:], c]).tolist()) == list(range(5))


@pytest.mark.parametrize("bad", [0, 11, -1])
def test_sample_batch_size_range(bad: int) -> None:
    ctl = GDROController(10, prompt=FAIL, seed=0)
    with pytest.raises(ValueError, match=rf"batch_size must be an integer in \[1, 10\]; got {bad}"):
        ctl.sample(bad)
    with pytest.raises(TypeError, match="batch_size must be an integer"):
        ctl.sample(2.0)  # type: ignore[arg-type]


def test_resample_draws_bins_from_q_and_falls_back_to_the_nearest_harder_bin() -> None:
    ctl = GDROController(
        40, classifier=ClassifierConfig(num_bins=4, window=4),
        prompt=PromptConfig(mode="resample", signal="failure", eta=50.0, gamma=0.0), seed=0,
    )
    # ids 0..9 solved (bin 3), 10..39 unsolved (bin 0)
    plan = ctl.plan(np.arange(40))
    ctl.update(plan, np.repeat(np.r_[np.ones(10), np.zeros(30)], 4))
    assert ctl.bin_counts().tolist() == [30, 0, 0, 10]
    q = ctl.q()
    assert q[0] > 0.99  # failure signal: bin 0 scores 1/0.75, bin 3 scores 0
    ids = ctl.sample(35)  # bin 0 holds 30: 5 overflow to the nearest bins with prompts (bin 3)
    assert len(set(ids.tolist())) == 35
    assert (ids >= 10).sum() == 30
    plan = ctl.plan(ids)
    # every prompt of bin 0 is in every batch: each holds one slot of 35 with probability 1/35
    np.testing.assert_allclose(plan.sample_probs[ids >= 10], 1 / 35)
    np.testing.assert_allclose(plan.sample_probs[ids < 10], 5 / 35 / 10)


def test_plan_uses_each_prompts_own_bin_whatever_the_order() -> None:
    ctl = GDROController(20, prompt=FAIL, rollout=RolloutConfig(mode="neyman"), seed=0)
    simulate(ctl, 5, 10)
    ids = np.arange(20)
    plan = ctl.plan(ids)
    perm = np.random.default_rng(0).permutation(20)
    plan2 = ctl.plan(ids[perm])
    np.testing.assert_array_equal(plan2.bins, plan.bins[perm])
    np.testing.assert_array_equal(plan2.bins, ctl.bins(ids[perm]))
    np.testing.assert_array_equal(np.sort(plan2.rollouts), np.sort(plan.rollouts))


def test_plan_arrays_are_read_only() -> None:
    ctl = GDROController(20, prompt=FAIL, seed=0)
    plan = ctl.plan(ctl.sample(4))
    for arr in (plan.prompt_ids, plan.bins, plan.rollouts, plan.weights, plan.sample_probs):
        with pytest.raises(ValueError):
            arr[0] = 0


def test_stale_and_foreign_plans_are_rejected_without_state_change() -> None:
    ctl = GDROController(20, prompt=FAIL, seed=0)
    other = GDROController(20, prompt=FAIL, seed=1)
    old = ctl.plan(np.arange(4))
    new = ctl.plan(np.arange(4, 8))
    foreign = other.plan(np.arange(4, 8))
    before = ctl.state_dict()
    for bad, why in ((old, r"plan #1, already expired \(max_in_flight = 1 plans"), (foreign, "a plan for step 0, plan #1, that is not in flight")):
        with pytest.raises(ValueError, match=r"plan must be a plan of this controller still in flight \(plans in flight: \[2\]\); got '" + why):
            ctl.update(bad, np.zeros(16))
        assert_state_equal(before, ctl.state_dict())
    ctl.update(new, np.zeros(16))
    with pytest.raises(ValueError, match="plan #2, already fed back"):
        ctl.update(new, np.zeros(16))  # already consumed


def test_rejected_plan_keeps_the_previous_plan() -> None:
    ctl = GDROController(20, prompt=FAIL, rollout=RolloutConfig(mode="bandit", selection="sample", arm_signal="variance"), seed=0)
    plan = ctl.plan(np.arange(4))
    before = ctl.state_dict()
    for bad, err in [([1, 1], ValueError), ([20], ValueError), ([-1], ValueError), ([1.5], TypeError), ([], ValueError)]:
        with pytest.raises(err, match="prompt_ids"):
            ctl.plan(bad)
        assert_state_equal(before, ctl.state_dict())
    ctl.update(plan, np.zeros(16))


@pytest.mark.parametrize(
    ("rewards", "losses", "match"),
    [
        (np.zeros(15), None, r"len\(rewards\) must be 16; got 15"),
        (np.r_[np.zeros(15), np.nan], None, r"rewards\[15\] must be finite"),
        (np.r_[np.zeros(15), np.inf], None, r"rewards\[15\] must be finite"),
        (np.zeros(16), np.r_[0.0, 0, 0, np.nan], r"losses\[3\] must be finite"),
        (np.zeros(16), np.zeros(3), r"len\(losses\) must be 4; got 3"),
        (np.zeros((4, 4)), None, "rewards must be a 1-D array"),
        (np.array(["a"] * 16), None, "rewards must be a 1-D array of real numbers"),
    ],
)
def test_rejected_update_changes_nothing(rewards: np.ndarray, losses: np.ndarray | None, match: str) -> None:
    ctl = GDROController(20, prompt=FAIL, rollout=RolloutConfig(mode="bandit", arm_signal="variance"), seed=0)
    simulate(ctl, 3, 4)
    plan = ctl.plan(ctl.sample(4))
    before = ctl.state_dict()
    with pytest.raises((ValueError, TypeError), match=match):
        ctl.update(plan, rewards, losses)
    assert_state_equal(before, ctl.state_dict())
    ctl.update(plan, np.zeros(16))  # the plan is still the one update accepts


def test_update_reads_rewards_in_plan_order() -> None:
    ctl = GDROController(6, classifier=ClassifierConfig(num_bins=2, window=4), prompt=FAIL,
                         rollout=RolloutConfig(mean=3, min=2, max=4), seed=0)
    plan = ctl.plan([5, 0, 3])
    rewards = np.array([0, 0, 0, 1, 1, 0, 1, 1, 1.0])  # prompt 5: none, 0: two, 3: three
    ctl.update(plan, rewards)
    assert ctl.pass_rate([5, 0, 3]).tolist() == [0.0, 2 / 3, 1.0]
    assert ctl.bins([5, 0, 3]).tolist() == [0, 1, 1]


def test_reweight_weights_have_rollout_weighted_mean_one_and_cap() -> None:
    ctl = GDROController(200, prompt=PromptConfig(signal="failure"), rollout=RolloutConfig(mode="neyman"), seed=0)
    simulate(ctl, 10, 50)
    plan = ctl.plan(ctl.sample(50))
    assert np.average(plan.weights, weights=plan.rollouts) == pytest.approx(1.0, abs=1e-12)
    capped = GDROController(200, prompt=PromptConfig(signal="failure", weight_cap=1.0), seed=0)
    simulate(capped, 5, 50)
    assert capped.plan(capped.sample(50)).weights.max() <= 1.0


def test_both_adversaries_run_together() -> None:
    ctl = GDROController(
        500, prompt=PromptConfig(mode="resample", signal="variance"),
        rollout=RolloutConfig(mode="bandit", arm_signal="variance", selection="sample"), seed=0,
    )
    plans = simulate(ctl, 30, 64)
    assert all(p.rollouts.sum() == 4 * 64 for p in plans)
    assert len({tuple(p.rollouts) for p in plans}) > 1  # rollouts vary
    m = ctl.metrics()
    assert m["rollout/shadow_price"] > 0.0  # the price moved
    assert abs(m["rollout/mean_proposed"] - 4) < 3


def test_metrics_before_and_after_the_first_update() -> None:
    ctl = GDROController(30, prompt=FAIL, rollout=RolloutConfig(mode="bandit", arm_signal="variance"), seed=0)
    m0 = ctl.metrics()
    assert m0["rollout/shadow_price"] == 0.0
    assert not any(k.startswith("rollout/n_mean/") for k in m0)
    np.testing.assert_allclose([m0[f"prompt/q/{b}"] for b in range(10)], 0.1)
    assert m0["rollout/mean_proposed"] == pytest.approx(7.0)  # uniform over 2..12
    simulate(ctl, 2, 10)
    m = ctl.metrics()
    required = ["classifier/mean_bin", "prompt/entropy", "rollout/shadow_price", "rollout/mean",
                "rollout/mean_proposed"] + [f"classifier/share/{b}" for b in range(10)] + [f"prompt/q/{b}" for b in range(10)]
    for k in required:
        assert k in m
    assert any(k.startswith("rollout/n_mean/") for k in m)
    assert all(isinstance(v, float) and np.isfinite(v) for v in m.values())
    assert m == ctl.metrics()  # a function of the state


def test_memory_is_at_most_32_bytes_per_prompt() -> None:
    n = 20_000
    for pcfg in (PromptConfig(), PromptConfig(mode="resample")):
        ctl = GDROController(n, prompt=pcfg, rollout=RolloutConfig(mode="bandit"), classifier=ClassifierConfig(window=128), seed=0)

        def nbytes(d: dict) -> int:
            return sum(nbytes(v) if isinstance(v, dict) else np.asarray(v).nbytes for v in d.values())

        assert nbytes(ctl.state_dict()) / n <= 32


def test_save_load_round_trip(tmp_path: Path) -> None:
    cfg = dict(prompt=PromptConfig(mode="resample", signal="variance"),
               rollout=RolloutConfig(mode="bandit", arm_signal="variance", selection="sample"))
    ctl = GDROController(300, seed=5, **cfg)
    simulate(ctl, 7, 32)
    plan = ctl.plan(ctl.sample(32))  # saved between plan and update
    path = tmp_path / "sub" / "gdro.npz"
    ctl.save(path)
    with np.load(path, allow_pickle=False) as z:
        assert "classifier/bits" in z.files
    back = GDROController.load(path)
    assert_state_equal(ctl.state_dict(), back.state_dict())
    r = np.ones(plan.num_rollouts)
    ctl.update(plan, r)
    back.update(plan, r)  # the pending plan survives the round trip
    assert ctl.metrics() == back.metrics()
    np.testing.assert_array_equal(ctl.sample(32), back.sample(32))


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctl = GDROController(50, prompt=FAIL, seed=0)
    path = tmp_path / "gdro.npz"
    ctl.save(path)
    good = path.read_bytes()
    simulate(ctl, 2, 10)

    def broken(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        ctl.save(path)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gdro.npz"]  # no temp file left


def test_load_from_another_config_names_the_fields() -> None:
    ctl = GDROController(50, prompt=FAIL, seed=0)
    other = GDROController(50, prompt=PromptConfig(signal="failure", eta=1.0),
                           rollout=RolloutConfig(mean=5), seed=0)
    with pytest.raises(ValueError, match=r"prompt.eta \(saved 0.65, here 1.0\); rollout.mean \(saved 4, here 5\)"):
        other.load_state_dict(ctl.state_dict())
    before = other.state_dict()
    assert_state_equal(before, other.state_dict())
    seeded = GDROController(50, prompt=FAIL, seed=99)
    seeded.load_state_dict(ctl.state_dict())  # the seed is not compared
    np.testing.assert_array_equal(seeded.sample(10), ctl.sample(10))


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: RolloutConfig(min=1), r"RolloutConfig.min must be an integer in \[2, 4096\]; got 1"),
        (lambda: RolloutConfig(min=5, mean=4), "RolloutConfig.min, RolloutConfig.mean and RolloutConfig.max must be ordered as min <= mean <= max; got \\(5, 4, 12\\)"),
        (lambda: RolloutConfig(mean=13), "min <= mean <= max; got \\(2, 13, 12\\)"),
        (lambda: RolloutConfig(mean=4.5), "RolloutConfig.mean must be an integer; got 4.5"),
        (lambda: RolloutConfig(mode="greedy"), r"RolloutConfig.mode must be one of \['bandit', 'fixed', 'neyman'\]; got 'greedy'"),
        (lambda: RolloutConfig(mu_max=0), r"RolloutConfig.mu_max must be a finite number > 0; got 0"),
        (lambda: RolloutConfig(variance_floor=0.3), r"RolloutConfig.variance_floor must be a finite number in \(0, 0.25\]; got 0.3"),
        (lambda: RolloutConfig(selection="argmax"), "RolloutConfig.selection must be one of"),
        (lambda: RolloutConfig(arm_gamma=1.5), r"RolloutConfig.arm_gamma must be a finite number in \[0, 1\]; got 1.5"),
        (lambda: RolloutConfig(arm_ema=0), r"RolloutConfig.arm_ema must be a finite number in \(0, 1\]; got 0"),
        (lambda: PromptConfig(mode="both"), "PromptConfig.mode must be one of"),
        (lambda: PromptConfig(eta=-1), "PromptConfig.eta must be a finite number >= 0; got -1"),
        (lambda: PromptConfig(gamma=2), r"PromptConfig.gamma must be a finite number in \[0, 1\]; got 2"),
        (lambda: PromptConfig(ema=0), r"PromptConfig.ema must be a finite number in \(0, 1\]; got 0"),
        (lambda: PromptConfig(weight_cap=0.5), "PromptConfig.weight_cap must be a finite number >= 1; got 0.5"),
        (lambda: PromptConfig(score_clip=0), "PromptConfig.score_clip must be a finite number > 0; got 0"),
        (lambda: PromptConfig(signal="reward"), r"PromptConfig.signal must be one of \['failure', 'loss', 'variance'\]; got 'reward'"),
        (lambda: PromptConfig(score_rule="hedge"), "PromptConfig.score_rule must be one of"),
        (lambda: PromptConfig(share_normalize=1), "PromptConfig.share_normalize must be a bool"),
        (lambda: GDROController(0), r"num_prompts must be an integer in \[1, 2147483646\]; got 0"),
        (lambda: GDROController(10, seed="a"), "seed must be an int, a numpy SeedSequence or None"),
        (lambda: GDROController(10, backend="cuda"), r"backend must be one of \['numba', 'numpy'\]; got 'cuda'"),
        (lambda: GDROController(10, prompt=RolloutConfig()), "prompt must be a PromptConfig"),
        (lambda: GDROController(10, classifier=ClassifierConfig(outcome="pass@k", k=3),
                                rollout=RolloutConfig(mode="neyman", min=2)),
         r"ClassifierConfig.k must be <= the fewest rollouts a prompt gets \(2: RolloutConfig.min\); got 3"),
        (lambda: GDROController(10, classifier=ClassifierConfig(outcome="pass@k", k=5),
                                rollout=RolloutConfig(mean=4)),
         r"ClassifierConfig.k must be <= the fewest rollouts a prompt gets \(4: RolloutConfig.mean, in fixed mode\); got 5"),
    ],
)
def test_config_errors(factory, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises((ValueError, TypeError), match=match):
        factory()


def test_neyman_gives_more_rollouts_to_high_variance_bins() -> None:
    ctl = GDROController(4, classifier=ClassifierConfig(num_bins=2, window=8), prompt=FAIL,
                         rollout=RolloutConfig(mode="neyman", mean=4, min=2, max=12), seed=0)
    # prompts 0,1: p = 1/2 (variance 0.25-ish); prompts 2,3: never solved (variance 0, floored)
    for _ in range(3):
        plan = ctl.plan([0, 1, 2, 3])
        r = []
        for pid, n in zip(plan.prompt_ids, plan.rollouts, strict=True):
            r += ([1.0, 0.0] * n)[:n] if pid < 2 else [0.0] * n
        ctl.update(plan, np.array(r))
    plan = ctl.plan([0, 1, 2, 3])
    assert plan.rollouts.sum() == 16
    assert plan.rollouts[:2].min() > plan.rollouts[2:].max()


def test_saved_files_get_the_usual_permissions(tmp_path: Path) -> None:
    ctl = GDROController(10, prompt=FAIL, seed=0)
    ctl.save(tmp_path / "a.npz")
    (tmp_path / "b.txt").write_text("x")  # what a plain open() gives under this umask
    assert (tmp_path / "a.npz").stat().st_mode & 0o777 == (tmp_path / "b.txt").stat().st_mode & 0o777
