"""verl's own training loops, run on CPU with gdro on: V1 ``PPOTrainer.fit`` and V0 ``RayPPOTrainer.fit``.

Each run trains several epochs of a 24-prompt parquet set, 6 prompts per step, through verl's real
config, dataset, sampler, dataloader, agent loop, rule-based reward scoring, replay buffer over a
real TransferQueue (V1), advantage computation, metrics logger, checkpoint save and
``_load_checkpoint``; only the LLM server, the GPU worker groups and a colocated reward model's
forward pass stand in (see ``harness.py``). What each test proves is in its docstring.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.slow

NUM_PROMPTS, BATCH, MEAN = 24, 6, 4
STEPS_PER_EPOCH = NUM_PROMPTS // BATCH
EPOCHS = 3
STEPS = STEPS_PER_EPOCH * EPOCHS
CONTROLLER = [  # Prompt-GDRO reweighting and Neyman rollout counts: weights and counts both vary
    "+data.gdro.prompt.mode=reweight",
    "+data.gdro.rollout.mode=neyman",
    "+data.gdro.rollout.max=8",
    "+data.gdro.pass_at_k=[1,2]",
]


def _config(harness: Any, model: str, tmp: Path, ckpt: Path, extra: list[str]) -> Any:
    train = harness.write_parquet(tmp / "train.parquet", NUM_PROMPTS, "train")
    val = harness.write_parquet(tmp / "val.parquet", 4, "val")
    return harness.compose(
        [
            f"actor_rollout_ref.model.path={model}",
            f"data.train_files={train}",
            f"data.val_files={val}",
            f"data.train_batch_size={BATCH}",
            f"actor_rollout_ref.actor.ppo_mini_batch_size={BATCH}",
            f"trainer.total_epochs={EPOCHS}",
            f"trainer.default_local_dir={ckpt}",
            "trainer.save_freq=2",
            *CONTROLLER,
            *extra,
        ]
    )


def _resume_copy(src: Path, dst: Path, step: int) -> Path:
    """A checkpoint folder holding only ``global_step_{step}``, as if the run had stopped there."""
    dst.mkdir(parents=True)
    shutil.copytree(src / f"global_step_{step}", dst / f"global_step_{step}")
    (dst / "latest_checkpointed_iteration.txt").write_text(str(step))
    return dst


def _example(name: str) -> Any:
    """A script of examples/verl (which the GPU end-to-end check runs), as a module."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "examples" / "verl" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_dumps(dumps: Path, doctored: Path, log: str) -> None:
    """examples/verl/check_run.py passes on verl's rollout dumps, gdro's plan log and verl's
    logged metrics (in the file logger's jsonl and in the console logger's format), and fails
    once a response is missing from a step, or once a step's logged applied weight is not its
    plan's."""
    import json

    check = _example("check_run")
    args = ["--batch", str(BATCH), "--n", str(MEAN), "--mode", "both"]
    assert check.main([str(dumps), *args, "--log", log]) == 0
    records = [json.loads(line) for line in Path(log).read_text().splitlines() if line.strip()]
    console = doctored.with_suffix(".console.log")
    console.write_text(
        "".join(
            "(TaskRunner pid=1) step:{} - {}\n".format(
                r["step"], " - ".join(f"{k}:np.float64({v!r})" for k, v in r["data"].items())
            )
            for r in records
        )
    )
    assert check.main([str(dumps), *args, "--log", str(console)]) == 0
    shutil.copytree(dumps, doctored)
    lines = (doctored / "3.jsonl").read_text().splitlines()
    (doctored / "3.jsonl").write_text("\n".join(lines[1:]) + "\n")
    assert check.main([str(doctored), *args]) == 1
    weighted = next(  # a step whose plan had unequal weights: log it as if they never applied
        r["data"]
        for r in records
        if r["data"].get("gdro/applied/weight_max", 1) > r["data"].get("gdro/applied/weight_min", 1)
    )
    weighted.update({k: 1.0 for k in weighted if k.startswith("gdro/applied/")})
    wrong = doctored.with_suffix(".wrong.jsonl")
    wrong.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert check.main([str(dumps), *args, "--log", str(wrong)]) == 1


def _plans(updates: list[dict[str, Any]]) -> list[list[tuple[int, int]]]:
    """Per step: (prompt id, group size) of every trained group, sorted by prompt id."""
    out = []
    for u in updates:
        sizes: dict[int, int] = {}
        for pid in u["prompt_ids"]:
            sizes[pid] = sizes.get(pid, 0) + 1
        out.append(sorted(sizes.items()))
    return out


def _trained(updates: list[dict[str, Any]]) -> list[list[tuple[int, float, float]]]:
    """Per step: every trained rollout as (prompt id, score, advantage), in a canonical order."""
    return [
        sorted(
            (p, round(s, 6), round(a, 5))
            for p, s, a in zip(u["prompt_ids"], u["scores"], u["advantages"], strict=True)
        )
        for u in updates
    ]


def _check_against_reference(harness: Any, run: Any, steps: int, start_state: Any = None) -> None:
    """Every step trained exactly its plan: the reference controller, fed by hand with the same
    scores keyed by prompt id, planned the same prompts and counts; the rollouts add up to the
    budget; the advantages are GRPO's times the prompt's weight."""
    unequal = weighted = False
    for step, (plan, update) in enumerate(
        harness.replay_plans(run.runtime, run.updates, steps=steps, start_state=start_state)
    ):
        planned = dict(zip(plan.prompt_ids.tolist(), plan.rollouts.tolist(), strict=True))
        trained = dict(_plans([update])[0])
        assert trained == planned, f"step {step}: trained {trained}, planned {planned}"
        assert sum(trained.values()) == BATCH * MEAN  # the exact budget, every step
        weight = dict(zip(plan.prompt_ids.tolist(), plan.weights.tolist(), strict=True))
        scores = np.asarray(update["scores"])
        expected = harness.grpo(scores, update["uids"]) * np.array(
            [weight[p] for p in update["prompt_ids"]]
        )
        np.testing.assert_allclose(update["advantages"], expected, rtol=1e-4, atol=1e-5)
        unequal |= len(set(planned.values())) > 1
        weighted |= len({round(w, 6) for w in weight.values()}) > 1
    assert unequal, "no step planned unequal group sizes"
    assert weighted, "no step planned unequal Prompt-GDRO weights"


def _check_applied_weights(run: Any, logged: list[dict[str, Any]]) -> None:
    """``gdro/applied/weight_{min,max,mean}`` in verl's logged metrics are the Prompt-GDRO weights
    of the rows each step trained (planned for their uids at dispatch): the weights reached the
    advantages, and they differ between prompts."""
    spread = False
    assert len(logged) == len(run.updates)
    for m, update in zip(logged, run.updates, strict=True):
        w = np.array([run.spy.dispatched[u][2] for u in update["uids"]])
        assert m["gdro/applied/weight_min"] == pytest.approx(w.min())
        assert m["gdro/applied/weight_max"] == pytest.approx(w.max())
        assert m["gdro/applied/weight_mean"] == pytest.approx(w.mean())
        spread |= bool(w.max() > w.min() + 1e-6)
    assert spread, "every step applied equal weights"


def test_v1_sync_fit_trains_every_step_on_its_plan_and_resumes_exactly(
    harness: Any, model_path: str, transfer_queue: Any, tmp_path: Path
) -> None:
    """V1 ``PPOTrainerSync.fit``, 3 epochs: each step trains exactly the controller's plan
    (prompts, unequal group sizes, exact budget), advantages are GRPO's times the weight, the
    gdro metrics reach verl's logger, verl's validation keeps its uniform ``val_kwargs.n``, the
    checkpoint holds the controller (read by ``examples/verl/inspect_checkpoint.py``), the
    applied weights are logged, and runs
    resumed from a mid-epoch and an epoch-boundary checkpoint train exactly what the
    uninterrupted run trained."""
    ckpt = tmp_path / "ckpt"
    dumps = tmp_path / "rollouts"
    validate = [
        "trainer.val_before_train=true",
        f"trainer.test_freq={STEPS // 2}",
        f"trainer.rollout_data_dir={dumps}",
    ]
    cfg = _config(harness, model_path, tmp_path, ckpt, validate)
    run = harness.run_v1(cfg, model_path, tmp_path, "a")
    assert len(run.updates) == STEPS
    _check_against_reference(harness, run, STEPS)
    logged = run.metrics()
    assert [m["step"] for m in logged] == list(range(STEPS + 1))  # 0: validation before training
    n_val = cfg.actor_rollout_ref.rollout.val_kwargs.n
    for m in (logged[0], logged[STEPS // 2], logged[STEPS]):
        assert any(k.startswith("val-core/math_dapo/acc/") and k.endswith(f"@{n_val}") for k in m)
    logged = logged[1:]
    for m in logged:
        assert m["gdro/budget/realised"] == m["gdro/budget/target"] == BATCH * MEAN
        assert m["gdro/budget/planned"] == BATCH * MEAN
        assert {"gdro/pass@1", "gdro/pass@2", "gdro/prompt/entropy"} <= set(m)
    _check_applied_weights(run, logged)
    assert all(u["padding"] == 0 for u in run.updates)  # the exact budget needs no padding rows
    inspect = _example("inspect_checkpoint")
    assert inspect.main([str(ckpt / "global_step_6"), "--expect-step", "6"]) == 0
    assert inspect.main([str(ckpt / "global_step_6"), "--expect-step", "7"]) == 1
    _check_dumps(dumps, tmp_path / "doctored", run.log_path)

    for at in (6, 8):  # mid-epoch, and the end of epoch 2
        folder = _resume_copy(ckpt, tmp_path / f"resume{at}", at)
        cfg = _config(harness, model_path, tmp_path, folder, [])
        resumed = harness.run_v1(cfg, model_path, tmp_path, f"resume{at}")
        assert resumed.workers.loaded == [str(folder / f"global_step_{at}" / "actor")]
        assert _plans(resumed.updates) == _plans(run.updates[at:])
        assert _trained(resumed.updates) == _trained(run.updates[at:])


def test_v0_fit_trains_every_step_on_its_plan_and_resumes_exactly(
    harness: Any, model_path: str, transfer_queue: Any, tmp_path: Path
) -> None:
    """V0 ``RayPPOTrainer.fit``, 3 epochs: each step's groups have their planned sizes (V0 repeats
    prompts through gdro's ``sample_level_repeat``), advantages are GRPO's times the weight, the
    gdro metrics reach verl's logger, and runs resumed mid-epoch and at an epoch boundary (where
    verl skips restoring the dataloader and gdro restores the controller itself) train exactly what
    the uninterrupted run trained."""
    ckpt = tmp_path / "ckpt"
    dumps = tmp_path / "rollouts"
    v0 = ["trainer.use_v1=false", f"trainer.rollout_data_dir={dumps}"]
    run = harness.run_v0(
        _config(harness, model_path, tmp_path, ckpt, v0), model_path, tmp_path, "a"
    )
    assert len(run.updates) == STEPS
    _check_against_reference(harness, run, STEPS)
    logged = run.metrics()
    assert [m["step"] for m in logged] == list(range(1, STEPS + 1))
    assert all({"gdro/pass@1", "gdro/rollout/shadow_price"} <= set(m) for m in logged)
    _check_applied_weights(run, logged)
    _check_dumps(dumps, tmp_path / "doctored", run.log_path)

    for at in (6, 8):
        folder = _resume_copy(ckpt, tmp_path / f"resume{at}", at)
        cfg = _config(harness, model_path, tmp_path, folder, v0)
        resumed = harness.run_v0(cfg, model_path, tmp_path, f"resume{at}")
        assert resumed.workers.loaded == [str(folder / f"global_step_{at}" / "actor")]
        assert _plans(resumed.updates) == _plans(run.updates[at:])
        assert _trained(resumed.updates) == _trained(run.updates[at:])


# --------------------------------------------------------------------------- plans in flight


def _check_trained_groups(run: Any, dispatched: dict[str, Any] | None = None) -> int:
    """For runs whose steps mix plans: every plan met the exact budget; every trained group has
    the size planned for its prompt when it was dispatched (keyed by uid, never by position), and
    advantages are GRPO's times that prompt's weight. Returns the rollouts trained."""
    dispatched = {**(dispatched or {}), **run.spy.dispatched}
    for plan in run.spy.plans:
        assert sum(plan["rollouts"]) == MEAN * len(plan["prompt_ids"])
        assert 2 <= min(plan["rollouts"]) and max(plan["rollouts"]) <= 8
    trained = 0
    for update in run.updates:
        sizes: dict[str, int] = {}
        for uid, pid in zip(update["uids"], update["prompt_ids"], strict=True):
            assert dispatched[uid][0] == pid  # the row's question is the prompt gdro planned
            sizes[uid] = sizes.get(uid, 0) + 1
        assert all(sizes[uid] == dispatched[uid][1] for uid in sizes)
        weights = np.array([dispatched[u][2] for u in update["uids"]])
        expected = harness_grpo(update) * weights
        np.testing.assert_allclose(update["advantages"], expected, rtol=1e-4, atol=1e-5)
        trained += len(update["uids"])
    return trained


def harness_grpo(update: dict[str, Any]) -> np.ndarray:
    from collections import Counter

    scores, uids = np.asarray(update["scores"]), update["uids"]
    out = np.zeros_like(scores)
    for uid, _n in Counter(uids).items():
        idx = [i for i, u in enumerate(uids) if u == uid]
        r = scores[idx]
        mean, std = (r.mean(), r.std(ddof=1)) if len(r) > 1 else (0.0, 1.0)
        out[idx] = (r - mean) / (std + 1e-6)
    return out


def _plans_after(run: Any, serial: int) -> list[tuple[list[int], list[int]]]:
    return [(p["prompt_ids"], p["rollouts"]) for p in run.spy.plans if p["serial"] > serial]


@pytest.mark.parametrize("trainer", ["v1", "v0"])
def test_colocated_reward_model_scores_are_fed_back(
    harness: Any, model_path: str, transfer_queue: Any, tmp_path: Path, trainer: str
) -> None:
    """A reward model without its own pool (verl's ``_compute_reward_colocate``; the model's
    forward pass stands in). V1 writes its scores after the replay buffer's ``sample``, so gdro
    reads them at the advantage computation; V0 scores before its advantages. Either way every
    step trains exactly its plan, with GRPO advantages times the weight, and no step fails on
    the missing ``rm_scores``."""
    rm = [
        "reward.reward_model.enable=true",
        f"reward.reward_model.model_path={model_path}",
        "reward.reward_model.enable_resource_pool=false",
    ]
    run_fit = harness.run_v1 if trainer == "v1" else harness.run_v0
    if trainer == "v0":
        rm.append("trainer.use_v1=false")
    cfg = _config(harness, model_path, tmp_path, tmp_path / "ckpt", rm)
    run = run_fit(cfg, model_path, tmp_path, f"rm-{trainer}")
    assert run.runtime.feedback_at_advantage is (trainer == "v1")
    assert run.fleet.reward.model.calls == STEPS  # the colocated model scored every step
    assert len(run.updates) == STEPS
    _check_against_reference(harness, run, STEPS)
    assert all("gdro/pass@1" in m for m in run.metrics())


def _spy_on_dropped_groups(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[float]]:
    """Watch verl's ``ReplayBuffer._clear_groups`` (calls go through unchanged): every ``"train"``
    group verl drops without training it (DAPO-filtered groups, a step's surplus), with the
    correctness of each of its sessions as verl's reward scored it (``math_dapo``'s ``acc``), read
    from TransferQueue just before verl clears it. uid -> rewards ([] for no rollout)."""
    import functools

    import transfer_queue as tq
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

    dropped: dict[str, list[float]] = {}
    clear = ReplayBuffer._clear_groups

    @functools.wraps(clear)
    def spied(self: Any, partition_id: str, uids: set[str]) -> None:
        if partition_id == "train":
            keys = [k for k in self.partitions[partition_id] if k.rsplit("_", 2)[0] in uids]
            found: dict[str, list[float]] = {str(u): [] for u in uids}
            if keys:
                rows = tq.kv_batch_get(
                    keys=keys, partition_id=partition_id, select_fields=["extra_fields"]
                )
                for key, extra in zip(keys, list(rows["extra_fields"]), strict=True):
                    acc = extra["reward_extra_info"]["acc"]
                    found[key.rsplit("_", 2)[0]].append(1.0 if acc else 0.0)
            assert not set(found) & set(dropped), "a group was dropped twice"
            dropped.update(found)
        clear(self, partition_id, uids)

    monkeypatch.setattr(ReplayBuffer, "_clear_groups", spied)
    return dropped


def _check_every_finished_group_was_fed_back(run: Any, dropped: dict[str, list[float]]) -> None:
    """The controller got the real outcome of every group that finished: the trained ones (their
    scores as trained) and the ones verl dropped, each once, for the prompt it was dispatched
    for; only groups without any rollout were cancelled."""
    trained: dict[str, list[float]] = {}
    for update in run.updates:
        for uid, score in zip(update["uids"], update["scores"], strict=True):
            trained.setdefault(uid, []).append(1.0 if score > 0 else 0.0)
    scored = {u: r for u, r in dropped.items() if r}
    assert scored and not set(scored) & set(trained)
    assert set(run.spy.fed) == set(trained) | set(scored)
    for uid, rewards in {**trained, **scored}.items():
        pid, got = run.spy.fed[uid]
        assert pid == run.spy.dispatched[uid][0]
        assert len(got) == run.spy.dispatched[uid][1]  # no session failed in this run
        assert sorted(got) == sorted(rewards), uid
    silent = sorted(run.spy.dispatched[u][0] for u, r in dropped.items() if not r)
    assert sorted(run.spy.cancelled) == silent


def test_v1_dapo_filtered_run_refills_from_the_budget_rule_and_resumes_exactly(
    harness: Any,
    model_path: str,
    transfer_queue: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DAPO dynamic sampling (``algorithm.filter_groups.enable``) in ``PPOTrainerSync.fit``: verl's
    own filter drops zero-variance groups (gdro's buffer hands it verl's settings) and refills the
    batch with more prompts, which gdro plans in blocks of ``train_batch_size`` with the exact
    budget while earlier blocks are still being scored; every group trains with its planned
    size and weight, the dropped ones are fed back too (with the outcomes verl scored for
    them), and a run resumed mid-way makes exactly the plans the uninterrupted run made."""
    dapo = [
        "algorithm.filter_groups.enable=true",
        "trainer.total_training_steps=8",
        "trainer.save_freq=4",
    ]
    train = harness.write_parquet(tmp_path / "train48.parquet", 48, "train")
    ckpt = tmp_path / "ckpt"
    cfg = _config(harness, model_path, tmp_path, ckpt, [*dapo, f"data.train_files={train}"])
    dropped = _spy_on_dropped_groups(monkeypatch)
    run = harness.run_v1(cfg, model_path, tmp_path, "dapo")
    assert len(run.updates) == 8
    _check_trained_groups(run)
    _check_every_finished_group_was_fed_back(run, dropped)
    for update in run.updates:  # verl trained no group without a learning signal
        assert all(len(set(s)) > 1 for s in _scores_by_uid(update).values())
        assert len(set(update["uids"])) == BATCH
    logged = run.metrics()
    assert sum(m.get("training/filter_groups/evicted_samples", 0) for m in logged) > 0
    assert all(m["gdro/budget/target"] == BATCH * MEAN for m in logged)
    assert len(run.spy.plans) * BATCH >= 2 * 48  # several passes over the 48 prompts
    assert run.spy.most_in_flight >= 2  # refills planned while earlier blocks were scored

    saved = harness.sampler_runtime_state(ckpt / "global_step_4")
    folder = _resume_copy(ckpt, tmp_path / "resume", 4)
    cfg = _config(harness, model_path, tmp_path, folder, [*dapo, f"data.train_files={train}"])
    resumed = harness.run_v1(cfg, model_path, tmp_path, "dapo-resumed")
    last = (
        max(int(k) for k in saved["flights"]) if saved["flights"] else saved["controller"]["serial"]
    )
    assert _plans_after(resumed, last) == _plans_after(run, last)
    _check_trained_groups(resumed, run.spy.dispatched)


def _scores_by_uid(update: dict[str, Any]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for uid, s in zip(update["uids"], update["scores"], strict=True):
        out.setdefault(uid, []).append(s)
    return out


def test_v1_failed_groups_are_cancelled_and_refilled_and_resume_exactly(
    harness: Any, model_path: str, transfer_queue: Any, tmp_path: Path
) -> None:
    """``trainer.v1.sampler.sync_refill_failed_groups``: groups whose sessions all failed are
    cancelled in the controller (no outcome counted), verl refills them with prompts gdro plans
    from the next block, every step still trains ``train_batch_size`` groups of their planned
    sizes, and a run resumed mid-epoch trains exactly what the uninterrupted one trained."""
    refill = ["trainer.v1.sampler.sync_refill_failed_groups=true", "trainer.total_epochs=2"]

    def fail(prompt: int, version: int) -> bool:
        return prompt % 5 == 2 and version % 2 == 0

    ckpt = tmp_path / "ckpt"
    cfg = _config(harness, model_path, tmp_path, ckpt, refill)
    run = harness.run_v1(cfg, model_path, tmp_path, "refill", fail=fail)
    steps = 2 * STEPS_PER_EPOCH
    assert len(run.updates) == steps
    failed = run.fleet.server.obj.failed
    assert failed  # groups did fail, and were refilled
    _check_trained_groups(run)
    for update in run.updates:
        assert len(set(update["uids"])) == BATCH
    assert run.spy.most_in_flight >= 2
    for m in run.metrics():
        assert m["gdro/budget/realised"] == m["gdro/budget/planned"]
        assert m["gdro/budget/target"] == BATCH * MEAN

    at = 2  # mid-epoch (4 steps per epoch)
    folder = _resume_copy(ckpt, tmp_path / "resume", at)
    resumed = harness.run_v1(
        _config(harness, model_path, tmp_path, folder, refill),
        model_path,
        tmp_path,
        "refill-r",
        fail=fail,
    )
    assert len(resumed.updates) == steps - at
    assert _trained(resumed.updates) == _trained(run.updates[at:])


def _check_controller_continues(run: Any, saved: Any, resumed: Any) -> None:
    """The uninterrupted run's plans have serials 1, 2, ...; the resumed controller carries on from
    the checkpoint: its new plans take the next serials (no gap, no duplicate), every plan the
    checkpoint held in flight completes, and the controller's step counts each completed plan
    once."""
    assert [p["serial"] for p in run.spy.plans] == list(range(1, len(run.spy.plans) + 1))
    start = int(saved["controller"]["serial"]) + 1  # the controller saves its last serial
    serials = [p["serial"] for p in resumed.spy.plans]
    assert serials == list(range(start, start + len(serials)))
    restored = {int(k) for k in saved["flights"]}
    assert restored and max(restored) < start
    still_open = {int(p.serial) for p in resumed.runtime.in_flight()}
    assert not restored & still_open  # every restored plan completed
    completed = len(restored) + len(serials) - len(still_open)
    assert resumed.runtime.controller.step == int(saved["controller"]["step"]) + completed


def test_v1_colocate_async_plans_ahead_and_resumes_its_plans_in_flight(
    harness: Any, model_path: str, transfer_queue: Any, tmp_path: Path
) -> None:
    """``trainer.v1.trainer_mode=colocate_async``: verl keeps a batch of prompts ahead of training
    (``num_warmup_batches``), so gdro plans blocks before earlier ones are scored and takes their
    feedback in any order; every plan meets the exact budget, every trained group has the size
    and weight planned for it, and a run resumed from a checkpoint (verl restores its
    TransferQueue and re-issues the prompts in flight) mid-epoch finishes the restored plans: the
    re-issued groups train with the counts planned before the checkpoint, and the controller
    carries on without a gap or a repeat."""
    mode = ["trainer.v1.trainer_mode=colocate_async", "trainer.save_freq=3"]
    ckpt = tmp_path / "ckpt"
    run = harness.run_v1(
        _config(harness, model_path, tmp_path, ckpt, mode), model_path, tmp_path, "async"
    )
    assert len(run.updates) == STEPS
    _check_trained_groups(run)
    assert run.spy.most_in_flight >= 2
    assert len(run.spy.plans) * BATCH >= EPOCHS * NUM_PROMPTS
    for m in run.metrics():
        assert m["gdro/budget/realised"] == m["gdro/budget/planned"]

    at = 6  # mid-epoch (4 steps per epoch)
    folder = _resume_copy(ckpt, tmp_path / "resume", at)
    saved = harness.sampler_runtime_state(folder / f"global_step_{at}")
    assert saved["flights"]  # the checkpoint holds plans in flight
    resumed = harness.run_v1(
        _config(harness, model_path, tmp_path, folder, mode), model_path, tmp_path, "async-r"
    )
    assert len(resumed.updates) == STEPS - at
    reissued = {u for update in resumed.updates for u in update["uids"]} - set(
        resumed.spy.dispatched
    )
    assert reissued and reissued <= set(run.spy.dispatched)
    _check_trained_groups(resumed, run.spy.dispatched)
    _check_controller_continues(run, saved, resumed)
    for m in resumed.metrics():
        assert m["gdro/budget/realised"] == m["gdro/budget/planned"]


def test_v1_separate_async_feeds_back_each_mini_batch(
    harness: Any, model_path: str, transfer_queue: Any, tmp_path: Path
) -> None:
    """``trainer.v1.trainer_mode=separate_async`` with two optimiser steps per global step
    (``parameter_sync_step=2``) on a standalone rollout (``hybrid_engine=false``): each
    mini-batch's groups are fed back as verl samples them, plans stay within budget, the budget
    is logged per optimiser step against half a batch and realised as planned, and a run resumed
    mid-epoch finishes the restored plans and carries the controller on."""
    mode = [
        "trainer.v1.trainer_mode=separate_async",
        "trainer.v1.separate_async.parameter_sync_step=2",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={BATCH // 2}",
        "actor_rollout_ref.hybrid_engine=false",
        "actor_rollout_ref.rollout.nnodes=1",
        "actor_rollout_ref.rollout.n_gpus_per_node=1",
        "actor_rollout_ref.rollout.checkpoint_engine.backend=nccl",
        "trainer.total_epochs=2",
        "trainer.save_freq=3",
    ]
    ckpt = tmp_path / "ckpt"
    run = harness.run_v1(
        _config(harness, model_path, tmp_path, ckpt, mode), model_path, tmp_path, "sep"
    )
    assert len(run.updates) == 2 * 2 * STEPS_PER_EPOCH  # two optimiser steps per global step
    assert all(len(set(u["uids"])) == BATCH // 2 for u in run.updates)
    _check_trained_groups(run)
    assert run.spy.most_in_flight >= 2
    for m in run.metrics():
        assert m["gdro/budget/target"] == BATCH // 2 * MEAN
        assert m["gdro/budget/realised"] == m["gdro/budget/planned"]

    at = 3  # mid-epoch
    folder = _resume_copy(ckpt, tmp_path / "resume", at)
    saved = harness.sampler_runtime_state(folder / f"global_step_{at}")
    resumed = harness.run_v1(
        _config(harness, model_path, tmp_path, folder, mode), model_path, tmp_path, "sep-r"
    )
    assert len(resumed.updates) == 2 * (2 * STEPS_PER_EPOCH - at)
    _check_trained_groups(resumed, run.spy.dispatched)
    _check_controller_continues(run, saved, resumed)
    for m in resumed.metrics():
        assert m["gdro/budget/realised"] == m["gdro/budget/planned"]
