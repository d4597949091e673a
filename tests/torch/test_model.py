"""Embedded model, tokenizer, local directories, the SFT cache and generation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gdro_torch.build import load_policy
from gdro_torch.config import TrainConfig
from gdro_torch.generation import generate
from gdro_torch.grpo import sequence_logprobs
from gdro_torch.model import (
    build_char_tokenizer,
    build_embedded,
    check_model_dir,
    load_local,
    sft_warmup,
)
from gdro_torch.tasks import load_task


def test_char_tokenizer_is_one_token_per_character() -> None:
    tok = build_char_tokenizer()
    assert len(tok) == 80
    ids = tok("12+34=", add_special_tokens=True)["input_ids"]
    assert ids[0] == tok.bos_token_id and len(ids) == 7
    assert tok.decode(ids, skip_special_tokens=True) == "12+34="


def test_local_directory_round_trip(tiny_model_dir: Path) -> None:
    model, tok = load_local(tiny_model_dir)
    ref, _ = build_embedded("tiny-llama-0.1m", seed=0)
    assert 0.05e6 < sum(p.numel() for p in model.parameters()) < 0.2e6
    for (k, a), (_, b) in zip(model.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(a, b), k
    assert tok.padding_side == "left" and tok.decode(tok("7+8=")["input_ids"][1:]) == "7+8="


def test_check_model_dir_rejects_what_is_not_a_causal_lm(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nor a local directory"):
        check_model_dir(tmp_path / "missing")
    with pytest.raises(ValueError, match="no config.json"):
        check_model_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ValueError, match="'vit' model, not a causal LM"):
        check_model_dir(tmp_path)
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "bert", "architectures": ["BertForMaskedLM"]})
    )
    with pytest.raises(ValueError, match="BertForMaskedLM, not a causal LM"):
        check_model_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="holds no weights"):
        check_model_dir(tmp_path)


def test_sft_is_cached_and_reused(tmp_path: Path) -> None:
    cfg = TrainConfig(
        model="tiny-llama-0.1m", task="addition:max_digits=2,size=50", sft_steps=5, sft_batch=8
    )
    task = load_task(cfg.task)
    m1, _, hit1 = load_policy(cfg, task, cache_dir=tmp_path)
    m2, _, hit2 = load_policy(cfg, task, cache_dir=tmp_path)
    assert (hit1, hit2) == (False, True)
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    fresh, _ = build_embedded("tiny-llama-0.1m", seed=0)
    assert not torch.equal(
        next(iter(fresh.state_dict().values())), next(iter(m1.state_dict().values()))
    )
    assert len(list((tmp_path / "sft").iterdir())) == 1  # no temp directories left behind
    _, _, hit3 = load_policy(cfg.replace(sft_steps=6), task, cache_dir=tmp_path)
    assert hit3 is False  # the key covers the SFT settings


def test_the_warm_up_has_its_own_seed_shared_by_every_run_seed(tmp_path: Path) -> None:
    cfg = TrainConfig(
        model="tiny-llama-0.1m", task="addition:max_digits=2,size=50", sft_steps=4, sft_batch=8
    )
    task = load_task(cfg.task)
    first, _, _ = load_policy(cfg, task, cache_dir=tmp_path)
    other_run, _, hit = load_policy(cfg.replace(seed=7), task, cache_dir=tmp_path)
    assert hit is True  # another --seed starts from the same warmed-up model
    for a, b in zip(first.state_dict().values(), other_run.state_dict().values()):
        assert torch.equal(a, b)
    other_sft, _, hit = load_policy(cfg.replace(sft_seed=7), task, cache_dir=tmp_path)
    assert hit is False
    assert not torch.equal(
        next(iter(first.state_dict().values())), next(iter(other_sft.state_dict().values()))
    )
    # without a warm-up, sft_seed is the embedded model's initialisation seed
    bare, _, _ = load_policy(cfg.replace(sft_steps=0, sft_seed=3), task, cache_dir=tmp_path)
    fresh, _ = build_embedded("tiny-llama-0.1m", seed=3)
    for a, b in zip(bare.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="--sft-seed must be an integer >= 0; got -1"):
        cfg.replace(sft_seed=-1)


def test_sft_gradient_clipping_is_applied_and_keyed(tmp_path: Path) -> None:
    cfg = TrainConfig(
        model="tiny-llama-0.1m", task="addition:max_digits=2,size=50", sft_steps=3, sft_batch=8
    )
    task = load_task(cfg.task)
    plain, _, _ = load_policy(cfg, task, cache_dir=tmp_path)
    clipped, _, hit = load_policy(cfg.replace(sft_max_grad_norm=1e-3), task, cache_dir=tmp_path)
    assert hit is False  # its own cache entry, not the unclipped warm-up
    assert len(list((tmp_path / "sft").iterdir())) == 2
    # a tiny clip norm changes the Adam moments, so the warm-ups differ
    assert any(
        not torch.equal(a, b)
        for a, b in zip(plain.state_dict().values(), clipped.state_dict().values())
    )


def test_sft_clipping_clips_the_gradient_norm() -> None:
    """With max_grad_norm set, the norm the optimizer sees is at most that norm."""
    model, tok = build_embedded("tiny-llama-0.1m", seed=0)
    seen: list[float] = []
    original = torch.optim.AdamW.step

    def spy(self: torch.optim.Optimizer, *args: object, **kwargs: object) -> object:
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        seen.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        return original(self, *args, **kwargs)

    def examples(gen: torch.Generator, n: int) -> list[tuple[str, str]]:
        return [("12+34=", "64")] * n

    torch.optim.AdamW.step = spy  # type: ignore[method-assign]
    try:
        sft_warmup(model, tok, examples, steps=3, batch_size=4, warmup=1, max_grad_norm=0.01)
        clipped = list(seen)
        seen.clear()
        model, tok = build_embedded("tiny-llama-0.1m", seed=0)
        sft_warmup(model, tok, examples, steps=3, batch_size=4, warmup=1, max_grad_norm=None)
    finally:
        torch.optim.AdamW.step = original  # type: ignore[method-assign]
    assert len(clipped) == 3 and max(clipped) <= 0.01 * (1 + 1e-4)
    assert seen[0] > 0.1  # unclipped, the first gradient is far larger


def test_sft_clip_and_target_settings_are_validated() -> None:
    for bad in (0.0, -1.0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="--sft-max-grad-norm must be a finite number > 0"):
            TrainConfig(sft_max_grad_norm=bad)
        with pytest.raises(ValueError, match="--sft-target-loss must be a finite number > 0"):
            TrainConfig(sft_target_loss=bad)
    assert TrainConfig(sft_max_grad_norm=1).sft_max_grad_norm == 1
    assert TrainConfig(sft_target_loss=0.25).sft_target_loss == 0.25


def _repeated(gen: torch.Generator, n: int) -> list[tuple[str, str]]:
    return [("12+34=", "64")] * n


def test_sft_stops_at_its_target_loss_and_not_before() -> None:
    model, tok = build_embedded("tiny-llama-0.1m", seed=0)
    full = sft_warmup(model, tok, _repeated, steps=150, batch_size=4, lr=1e-2, warmup=1)
    # the first step whose trailing 100-step mean is <= 0.5 is where the early run must stop
    means = [sum(full[i - 99 : i + 1]) / 100 for i in range(99, len(full))]
    first = next(i for i, m in enumerate(means) if m <= 0.5) + 100
    assert first < 150
    model, tok = build_embedded("tiny-llama-0.1m", seed=0)
    early = sft_warmup(
        model, tok, _repeated, steps=150, batch_size=4, lr=1e-2, warmup=1, target_loss=0.5
    )
    assert len(early) == first and early == full[:first]
    model, tok = build_embedded("tiny-llama-0.1m", seed=0)
    unreachable = sft_warmup(
        model, tok, _repeated, steps=150, batch_size=4, lr=1e-2, warmup=1, target_loss=1e-9
    )
    assert unreachable == full  # a target never met: all the steps, the same ones


def test_sft_target_is_keyed_and_recorded_with_the_model(tmp_path: Path) -> None:
    cfg = TrainConfig(
        model="tiny-llama-0.1m", task="addition:max_digits=2,size=50", sft_steps=120, sft_batch=8
    )
    task = load_task(cfg.task)
    plain, _, _ = load_policy(cfg, task, cache_dir=tmp_path)
    assert plain.config.gdro_sft["steps"] == 120 and plain.config.gdro_sft["target_loss"] is None
    loose = cfg.replace(sft_target_loss=2.3, sft_lr=3e-3)
    model, _, hit = load_policy(loose, task, cache_dir=tmp_path)
    assert hit is False and len(list((tmp_path / "sft").iterdir())) == 2
    record = model.config.gdro_sft
    assert 100 <= record["steps"] < 120 and record["max_steps"] == 120
    assert record["loss"] <= 2.3 and record["target_loss"] == 2.3
    again, _, hit = load_policy(loose, task, cache_dir=tmp_path)
    assert hit is True and again.config.gdro_sft == record


def test_generation_matches_the_training_forward_pass() -> None:
    """Sampled tokens and their log-probs agree with the (left-padded) training forward pass."""
    model, tok = build_embedded("tiny-llama-0.1m", seed=1)
    prompts = ["1+2=", "123+45=", "9="] * 2
    ro = generate(model, tok, prompts, max_new_tokens=6, seed=3)
    again = generate(model, tok, prompts, max_new_tokens=6, seed=3)
    assert torch.equal(ro.input_ids, again.input_ids)  # seeded
    torch.manual_seed(3)
    enc = tok(prompts, padding=True, return_tensors="pt")
    out = model.generate(
        **enc,
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=1.0,
        max_new_tokens=6,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    width = ro.response_mask.shape[1]
    gen_logp = torch.stack(out.logits, 1).log_softmax(-1)[:, :width]
    tokens = ro.input_ids[:, ro.num_prompt_tokens :]
    expected = gen_logp.gather(-1, tokens[..., None]).squeeze(-1)
    with torch.no_grad():
        got = sequence_logprobs(model, ro.input_ids, ro.attention_mask, ro.num_prompt_tokens)
    mask = ro.response_mask.bool()
    assert torch.allclose(got[mask], expected[mask], atol=1e-5)
    # the mask covers the completion up to and including <eos>, nothing after it
    for row, text in zip(range(len(prompts)), ro.texts):
        toks = tokens[row][mask[row]].tolist()
        assert tok.decode(toks, skip_special_tokens=True) == text
        assert tok.eos_token_id not in toks[:-1]


def test_the_gpu_preset_model_is_tens_of_millions_of_parameters_and_fits_its_task() -> None:
    from gdro_torch.config import PRESETS
    from gdro_torch.model import EMBEDDED_MODELS

    preset = PRESETS["gpu"]
    model, tok = build_embedded(preset.model, seed=0)
    params = sum(p.numel() for p in model.parameters())
    assert 20e6 < params < 100e6
    task = load_task(preset.task)
    assert len(task.train) == 14_000 and len(task.eval) == 1_000
    levels = {task.train.item(i).level for i in range(2000)}
    assert levels == set(range(1, 13))  # a wide difficulty range
    # the longest prompt and answer fit the context, in the character vocabulary
    longest = "9" * 12 + "+" + "9" * 12 + "="
    ids = tok(longest + "9" * task.max_answer_chars)["input_ids"]
    assert tok.unk_token_id not in ids
    assert len(ids) + 1 <= EMBEDDED_MODELS[preset.model].max_positions
    # one training forward/backward and a sampled completion on the full-size model
    batch = tok([longest, "1+2="], padding=True, return_tensors="pt")
    out = model(**batch, labels=batch["input_ids"])
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.model.layers[0].mlp.up_proj.weight.grad is not None
    ro = generate(model, tok, ["1+2=", longest], max_new_tokens=task.max_answer_chars + 1, seed=0)
    assert len(ro.texts) == 2
