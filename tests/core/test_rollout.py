"""Rollout-GDRO specifics: full-information variance estimates, the priced bandit's fixed point."""

import numpy as np
import pytest

from gdro_core import ClassifierConfig, GDROController, PromptConfig, RolloutConfig
from gdro_core import rollout as R


def test_variance_signal_updates_every_arm_of_each_bin_present() -> None:
    cfg = RolloutConfig(mode="bandit", arm_signal="variance")
    state = R.init_state(cfg, 3)
    bins = np.array([0, 0, 2])
    alloc = R.plan_bandit(cfg, state, bins, np.random.default_rng(0), "numpy")
    correct, total = np.array([1, 2, 0]), alloc.rollouts.copy()
    new = R.update_bandit(cfg, state, alloc, bins, correct, total, None)
    v = correct * (total - correct) / (total * (total - 1))
    v0 = v[:2].mean()
    np.testing.assert_allclose(new.arm_loss[0], v0 / cfg.arms)  # first observation sets every arm
    np.testing.assert_allclose(new.arm_loss[2], 0.0)
    assert new.arm_seen[[0, 2]].all() and not new.arm_seen[1].any()
    again = R.update_bandit(cfg, new, alloc, bins, correct, total, None)
    np.testing.assert_allclose(again.arm_loss[0], v0 / cfg.arms)  # EMA of equal values
    np.testing.assert_array_equal(state.arm_loss, 0.0)  # input not mutated


def test_loss_signal_updates_only_the_played_arm() -> None:
    cfg = RolloutConfig(mode="bandit", arm_signal="loss")
    state = R.init_state(cfg, 2)
    bins = np.array([1, 1])
    alloc = R.plan_bandit(cfg, state, bins, np.random.default_rng(0), "numpy")
    new = R.update_bandit(cfg, state, alloc, bins, np.array([1, 1]), alloc.rollouts, np.array([0.5, 1.5]))
    j = alloc.arm_index[0]
    assert new.arm_loss[1, j] == pytest.approx(1.0)
    assert np.count_nonzero(new.arm_seen) == 1


@pytest.mark.parametrize("selection", ["mode", "sample"])
def test_priced_variance_bandit_approaches_the_square_root_law(selection: str) -> None:
    """With knobs sized to its loss, the bandit + dual ascent lands near the Neyman allocation."""
    n = 3000
    p = np.random.default_rng(0).beta(0.4, 0.4, n)
    common = dict(classifier=ClassifierConfig(outcome="pass@k", k=2), prompt=PromptConfig(mode="off", signal="variance"), seed=0)
    bandit = GDROController(n, rollout=RolloutConfig.variance_bandit(selection=selection), **common)
    neyman = GDROController(n, rollout=RolloutConfig(mode="neyman"), **common)
    rng = np.random.default_rng(1)
    prices, proposals = [], []
    for _ in range(250):
        for ctl in (bandit, neyman):
            plan = ctl.plan(ctl.sample(256))
            ctl.update(plan, (rng.random(plan.num_rollouts) < np.repeat(p[plan.prompt_ids], plan.rollouts)).astype(float))
        prices.append(bandit.metrics()["rollout/shadow_price"])
        proposals.append(bandit.metrics()["rollout/mean_proposed"])
    mb, mn = bandit.metrics(), neyman.metrics()
    mu_star = mn["rollout/shadow_price"]
    assert 0.5 * mu_star < np.mean(prices[-50:]) < 2.0 * mu_star  # the price found the KKT price
    assert abs(np.mean(proposals[-50:]) - 4.0) < 0.25  # the proposal meets the budget on average
    common_bins = [b for b in range(10) if f"rollout/n_mean/{b}" in mb and f"rollout/n_mean/{b}" in mn]
    nb = np.array([mb[f"rollout/n_mean/{b}"] for b in common_bins])
    nn = np.array([mn[f"rollout/n_mean/{b}"] for b in common_bins])
    assert np.corrcoef(nb, nn)[0, 1] > 0.7  # same shape across bins as the square-root law


def test_paper_knobs_leave_the_variance_bandit_flat() -> None:
    """The documented failure the variance_bandit preset fixes: eta=0.65 cannot resolve v/n."""
    cfg = RolloutConfig(mode="bandit", arm_signal="variance")
    state = R.init_state(cfg, 2)._replace(arm_loss=np.stack([0.25 / RolloutConfig().arms, 0.01 / RolloutConfig().arms]))
    p = np.exp(R.arm_log_probs(cfg, state.arm_loss, 0.0))
    assert np.abs(p[0] - p[1]).max() < 0.01  # both bins' proposals are nearly identical
    sharp = RolloutConfig.variance_bandit()
    p2 = np.exp(R.arm_log_probs(sharp, state.arm_loss, 0.005))
    assert (p2[0] @ sharp.arms) > (p2[1] @ sharp.arms) + 2  # high-variance bin proposes far more


def test_an_allocator_registered_from_outside_runs_through_the_controller(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A toy allocator, registered by name: validation, planning, feedback, save and load."""
    from gdro_core.allocators import ALLOCATORS, Allocator, register_allocator

    def plan(cfg, state, bins, rng, backend, ids):  # type: ignore[no-untyped-def]
        # prompts of the lowest bin present get max; the rest share what is left, in [min, max]
        target = np.where(bins == bins.min(), float(cfg.max), float(cfg.min))
        n = R.integerize(target * cfg.mean * bins.size / target.sum(), cfg.mean * bins.size,
                         cfg.min, cfg.max, bins, ids)
        active = np.unique(bins)
        return R.Allocation(n, np.ones(bins.size), active, np.full(active.size, -1), float(cfg.mean), state.mu)

    def update(cfg, state, alloc, bins, correct, total, losses):  # type: ignore[no-untyped-def]
        return R.update_fixed(cfg, state, alloc, bins, correct, total, losses)._replace(mu=state.mu + 1.0)

    toy = Allocator(R.init_state, plan, update, R.proposal_fixed)
    register_allocator("lowest-first", toy)
    try:
        with pytest.raises(ValueError, match="an allocator name not yet registered"):
            register_allocator("lowest-first", Allocator(R.init_state, plan, R.update_fixed, R.proposal_fixed))
        cfg = RolloutConfig(mode="lowest-first", mean=4, min=2, max=10)
        ctl = GDROController(40, prompt=PromptConfig(signal="failure"), rollout=cfg, seed=0)
        rng = np.random.default_rng(0)
        for _ in range(5):
            plan_ = ctl.plan(ctl.sample(8))
            assert plan_.rollouts.sum() == 32
            ctl.update(plan_, (rng.random(plan_.num_rollouts) < 0.5).astype(float))
        assert ctl.state_dict()["rollout"]["mu"] == 5.0  # the toy's update ran each step
        everyone = ctl.plan(np.arange(40))  # several bins present: the lowest gets more
        low = everyone.bins == everyone.bins.min()
        assert (~low).any() and everyone.rollouts[low].min() > everyone.rollouts[~low].max()
        ctl.cancel(everyone)
        ctl.save(tmp_path / "toy.npz")
        back = GDROController.load(tmp_path / "toy.npz")
        assert back.rollout_config.mode == "lowest-first"
        assert back.state_dict()["rollout"]["mu"] == 5.0
    finally:
        del ALLOCATORS["lowest-first"]
    with pytest.raises(ValueError, match=r"RolloutConfig.mode must be one of \['bandit', 'fixed', 'neyman'\]"):
        RolloutConfig(mode="lowest-first")


def test_arm_signals_come_from_the_signal_registry() -> None:
    from gdro_core.signals import SIGNALS, Signal

    cfg = RolloutConfig(mode="bandit", arm_signal="failure")
    ctl = GDROController(20, prompt=PromptConfig(signal="failure"), rollout=cfg, seed=0)
    plan = ctl.plan(ctl.sample(5))
    ctl.update(plan, np.zeros(plan.num_rollouts))  # no losses needed: failure is reward-derived
    assert ctl._rstate.arm_seen.sum() == 1
    SIGNALS["always_one"] = Signal(lambda c, n, loss: np.ones(c.shape), lambda x, clip: x, False)
    try:
        assert RolloutConfig(mode="bandit", arm_signal="always_one").arm_signal == "always_one"
    finally:
        del SIGNALS["always_one"]
    with pytest.raises(ValueError, match=r"RolloutConfig.arm_signal must be one of \['failure', 'loss', 'variance'\]"):
        RolloutConfig(arm_signal="always_one")


@pytest.mark.parametrize("mode", ["fixed", "bandit", "neyman"])
def test_no_plan_gives_a_prompt_fewer_than_fewest(mode: str) -> None:
    # RolloutConfig.fewest bounds pass@k's k (ClassifierConfig.k, the adapters' pass_at_k)
    cfg = RolloutConfig(mode=mode, mean=6, min=3, max=12)
    k = cfg.fewest
    ctl = GDROController(50, classifier=ClassifierConfig(outcome="pass@k", k=k),
                         rollout=cfg, seed=0)
    rng = np.random.default_rng(0)
    p = rng.beta(0.5, 0.5, 50)
    least = []
    for _ in range(60):
        plan = ctl.plan(ctl.sample(10))
        least.append(int(plan.rollouts.min()))
        r = (rng.random(plan.num_rollouts) < np.repeat(p[plan.prompt_ids], plan.rollouts)).astype(float)
        ctl.update(plan, r, rng.random(10))
    assert min(least) >= k == (6 if mode == "fixed" else 3)
