"""Plans reach the rows: verl's dataset factory, sampler factory, collate_fn and StatefulDataLoader."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch
from torchdata.stateful_dataloader.sampler import RandomSampler

from gdro_verl import runtime
from gdro_verl.dataset import GDRODataset
from gdro_verl.runtime import Group
from gdro_verl.sampler import GDROSampler

BATCH, MEAN, NUM_PROMPTS = 6, 4, 24  # as in conftest
BANDIT = {
    "data.gdro.rollout.mode": "bandit",
    "data.gdro.rollout.max": 8,
    "data.gdro.prompt.mode": "reweight",
}


def success_prob(prompt_id: int) -> float:
    return (prompt_id % 6) / 5.0


def fake_feedback(
    rt: runtime.GDRORuntime, batch_dict: dict[str, Any], step: int
) -> dict[str, float]:
    """Score a loader batch with deterministic per-prompt outcomes and feed it back by prompt id."""
    ids = np.asarray(batch_dict["gdro_prompt_id"], dtype=np.int64)
    counts = np.asarray(batch_dict["__rollout_n__"], dtype=np.int64)
    groups = {}
    for pid, n in zip(ids, counts, strict=True):
        rng = np.random.default_rng([int(pid), step])
        rewards = (rng.random(int(n)) < success_prob(int(pid))).astype(np.float64)
        groups[f"uid{step}x{pid}"] = Group(prompt_id=int(pid), rewards=rewards, loss=None)
    return rt.feedback_groups(groups)


def test_dataset_class_and_sampler_come_from_verl_factories(h: Any, make_config: Any) -> None:
    cfg = make_config(**BANDIT)
    train, val = h.build_datasets(cfg)
    assert isinstance(train, GDRODataset) and train.is_train and train.runtime is runtime.active()
    assert isinstance(val, GDRODataset) and not val.is_train and val.runtime is None
    loader = h.build_loader(cfg, train)
    assert isinstance(loader.sampler, GDROSampler)
    assert len(loader) == NUM_PROMPTS // BATCH
    # verl's factory is untouched for anything that is not a gdro train dataset
    import verl.trainer.ppo.utils as ppo_utils

    with_shuffle = cfg.data.copy()
    assert isinstance(ppo_utils.create_rl_sampler(with_shuffle, val), RandomSampler)


def test_counts_are_stamped_and_respect_the_budget(h: Any, make_config: Any) -> None:
    cfg = make_config(**BANDIT)
    train, val = h.build_datasets(cfg)
    rt = train.runtime
    loader = h.build_loader(cfg, train)
    seen: list[np.ndarray] = []
    for step, batch in zip(range(3), loader, strict=False):
        ids = np.asarray(batch["gdro_prompt_id"], dtype=np.int64)
        counts = np.asarray(batch["__rollout_n__"], dtype=np.int64)
        assert counts.sum() == BATCH * MEAN  # invariant 1: sum n_i = train_batch_size x rollout.n
        assert counts.min() >= 2 and counts.max() <= 8  # invariant 2
        assert len(set(ids.tolist())) == BATCH
        # the stamp is the plan, row by row, keyed by prompt id
        plan = rt.plan
        by_id = dict(zip(plan.prompt_ids.tolist(), plan.rollouts.tolist(), strict=True))
        assert [by_id[i] for i in ids.tolist()] == counts.tolist()
        # verl's own "index" (extra_info.index, 0 here) is untouched and not used as the id
        assert set(np.asarray(batch["index"]).tolist()) == {0}
        fake_feedback(rt, batch, step)
        seen.append(ids)
    assert rt.controller.metrics()  # the controller was updated
    # validation rows keep verl's uniform val_kwargs.n: no stamps at all
    row = val[0]
    assert "__rollout_n__" not in row and "gdro_prompt_id" not in row


def test_rollout_counts_vary_once_bins_differ(h: Any, make_config: Any) -> None:
    cfg = make_config(**{**BANDIT, "data.gdro.rollout.mode": "neyman"})
    train, _ = h.build_datasets(cfg)
    loader = h.build_loader(cfg, train)
    varied = False
    step = 0
    for _epoch in range(3):  # the loader restarts each epoch, as verl V0's fit() loop does
        for batch in loader:
            counts = np.asarray(batch["__rollout_n__"])
            assert counts.sum() == BATCH * MEAN
            varied |= len(set(counts.tolist())) > 1
            fake_feedback(train.runtime, batch, step)
            step += 1
    assert varied


def test_missing_feedback_is_an_error(h: Any, make_config: Any) -> None:
    cfg = make_config(**BANDIT)
    train, _ = h.build_datasets(cfg)
    it = iter(h.build_loader(cfg, train))
    next(it)
    with pytest.raises(RuntimeError, match="never scored"):
        next(it)


def _save(loader: Any) -> Any:
    """verl's checkpoint: torch.save(train_dataloader.state_dict()) and torch.load(weights_only=False)."""
    buf = io.BytesIO()
    torch.save(loader.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def _run(
    loader_iter: Any, rt: runtime.GDRORuntime, steps: range
) -> list[tuple[list[int], list[int]]]:
    out = []
    for step in steps:
        batch = next(loader_iter)
        out.append(
            (
                np.asarray(batch["gdro_prompt_id"]).tolist(),
                np.asarray(batch["__rollout_n__"]).tolist(),
            )
        )
        fake_feedback(rt, batch, step)
    return out


@pytest.mark.parametrize(
    "save_after", [2, 4]
)  # mid-epoch and at the epoch boundary (4 steps/epoch)
def test_checkpoint_round_trip_through_the_dataloader(
    h: Any, make_config: Any, save_after: int
) -> None:
    cfg = make_config(**BANDIT)
    train, _ = h.build_datasets(cfg)
    loader = h.build_loader(cfg, train)
    it = iter(loader)
    _run(it, train.runtime, range(save_after))
    state = _save(loader)
    controller_state = train.runtime.controller.state_dict()

    def next_steps(loader: Any, rt: runtime.GDRORuntime, it: Any) -> list[Any]:
        got = []
        for step in range(save_after, save_after + 3):
            try:
                got += _run(it, rt, range(step, step + 1))
            except StopIteration:  # verl V1 re-iterates at an epoch's end
                it = iter(loader)
                got += _run(it, rt, range(step, step + 1))
        return got

    expected = next_steps(loader, train.runtime, it)

    # a fresh process: new datasets, loader and controller, restored from data.pt
    runtime.deactivate()
    train2, _ = h.build_datasets(cfg)
    loader2 = h.build_loader(cfg, train2)
    loader2.load_state_dict(state)
    it2 = iter(loader2)
    restored = train2.runtime.controller.state_dict()
    assert restored.keys() == controller_state.keys()
    got = next_steps(loader2, train2.runtime, it2)
    assert got == expected
    np.testing.assert_equal(
        train2.runtime.controller.state_dict(), train.runtime.controller.state_dict()
    )


def test_pending_batch_survives_a_checkpoint(h: Any, make_config: Any) -> None:
    """Saved after the loader planned a batch but before its feedback: the plan is restored."""
    cfg = make_config(**BANDIT)
    train, _ = h.build_datasets(cfg)
    loader = h.build_loader(cfg, train)
    it = iter(loader)
    _run(it, train.runtime, range(1))
    pending = next(it)
    state = _save(loader)
    expected = fake_feedback(train.runtime, pending, 1)

    runtime.deactivate()
    train2, _ = h.build_datasets(cfg)
    loader2 = h.build_loader(cfg, train2)
    loader2.load_state_dict(state)
    iter(loader2)
    assert train2.runtime.plan.prompt_ids.tolist() == train.runtime.plan.prompt_ids.tolist()
    assert fake_feedback(train2.runtime, pending, 1) == expected


def test_checkpoint_from_another_train_set_of_the_same_size_is_rejected(
    h: Any, make_config: Any, tmp_path: Any
) -> None:
    """The state holds a fingerprint of the train prompts: resuming over another file of the same
    size (other questions) is an error that changes nothing, while the same prompts written to
    another file resume."""
    cfg = make_config(**BANDIT)
    train, _ = h.build_datasets(cfg)
    loader = h.build_loader(cfg, train)
    _run(iter(loader), train.runtime, range(2))
    state = _save(loader)

    runtime.deactivate()
    other = make_config(**BANDIT)
    other.data.train_files = h.write_parquet(tmp_path / "other.parquet", NUM_PROMPTS, "other")
    train2, _ = h.build_datasets(other)
    assert len(train2) == len(train)
    loader2 = h.build_loader(other, train2)
    before = train2.runtime.state_dict()
    with pytest.raises(ValueError, match="saved over another train set"):
        loader2.load_state_dict(state)
        iter(loader2)
    np.testing.assert_equal(train2.runtime.state_dict(), before)

    runtime.deactivate()
    copied = make_config(**BANDIT)
    copied.data.train_files = h.write_parquet(tmp_path / "copy.parquet", NUM_PROMPTS, "train")
    train3, _ = h.build_datasets(copied)
    loader3 = h.build_loader(copied, train3)
    loader3.load_state_dict(state)
    iter(loader3)
    np.testing.assert_equal(
        train3.runtime.controller.state_dict(), train.runtime.controller.state_dict()
    )


def test_checkpoint_with_another_batch_size_is_rejected(h: Any, make_config: Any) -> None:
    cfg = make_config(**BANDIT)
    train, _ = h.build_datasets(cfg)
    state = train.runtime.state_dict()
    other = make_config(**BANDIT, **{"data.train_batch_size": 4})
    runtime.deactivate()
    train2, _ = h.build_datasets(other)
    with pytest.raises(ValueError, match="block_size is 6 but this run has 4"):
        train2.runtime.load_state_dict(state)


def test_too_few_free_prompts_for_the_next_batch_is_a_clear_error(
    h: Any, make_config: Any, tmp_path: Any
) -> None:
    """A prompt is in one plan at a time. DAPO lets verl ask for batches ahead of feedback: with 12
    prompts and data.train_batch_size=6, a third batch while two await feedback cannot be planned.
    The error names the verl settings (not the core's parameters), and changes nothing: once a
    batch is fed back, the next one is planned from its prompts."""
    cfg = make_config(**BANDIT, **{"algorithm.filter_groups.enable": True})
    cfg.data.train_files = h.write_parquet(tmp_path / "train12.parquet", 12, "train")
    train, _ = h.build_datasets(cfg)
    rt = train.runtime
    assert rt.max_in_flight == 16  # DAPO's bound: 8 x (max_inflight_gen_batches + 1)
    loader = h.build_loader(cfg, train)
    first, second = list(loader)  # one epoch, nothing fed back yet
    with pytest.raises(
        RuntimeError,
        match=r"data\.train_batch_size=6 prompts cannot be planned: 12 of the train set's 12 "
        r"prompts await feedback in 2 planned batches \(verl asks for prompts ahead of feedback: "
        r"algorithm\.filter_groups\.max_inflight_gen_batches=\d+\).*got 0 prompts free",
    ):
        next(iter(loader))
    assert rt.awaiting() == 12 and len(rt.in_flight()) == 2
    fake_feedback(rt, first, 0)
    third = next(iter(loader))
    ids = sorted(np.asarray(third["gdro_prompt_id"]).tolist())
    assert ids == sorted(np.asarray(first["gdro_prompt_id"]).tolist())
    assert np.asarray(third["__rollout_n__"]).sum() == BATCH * MEAN
    fake_feedback(rt, second, 1)
