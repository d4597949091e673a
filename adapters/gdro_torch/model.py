"""Models for the torch loop: the embedded tiny Llama, local checkpoints, and the SFT warm-up.

The embedded model is a randomly initialised Llama with a character tokenizer (one character,
one token), built in code so nothing is ever downloaded. A short supervised warm-up (SFT) teaches
it the task's answer format; its result is cached on disk, keyed by everything that determines it,
so later runs with the same model, task and seed skip it.

Any causal LM saved in a local directory (transformers format) can be used instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import string
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "EMBEDDED_MODELS",
    "EmbeddedSpec",
    "build_char_tokenizer",
    "build_embedded",
    "check_model_dir",
    "default_cache_dir",
    "load_local",
    "save_model_dir",
    "sft_warmup",
]

#: The character vocabulary of the embedded tokenizer: 4 specials, 74 characters, 2 tags.
CHARS = list("0123456789+-*/=()?:., ") + list(string.ascii_letters)
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
TAGS = ["<answer>", "</answer>"]


@dataclass(frozen=True)
class EmbeddedSpec:
    """Architecture of an embedded tiny Llama.

    Attributes:
        hidden_size: Width of the residual stream.
        num_layers: Number of decoder layers.
        intermediate_size: Width of the MLP.
        num_heads: Attention heads (as many key/value heads).
        max_positions: Longest sequence (prompt + completion) in tokens.

    Examples:
        >>> EMBEDDED_MODELS["tiny-llama-0.1m"]  # doctest: +NORMALIZE_WHITESPACE
        EmbeddedSpec(hidden_size=64, num_layers=2, intermediate_size=256, num_heads=4,
                     max_positions=128)
        >>> spec = EmbeddedSpec(hidden_size=32, num_layers=1, intermediate_size=64, num_heads=2)
        >>> spec.max_positions  # the default context length
        128
    """

    hidden_size: int
    num_layers: int
    intermediate_size: int
    num_heads: int
    max_positions: int = 128


#: Embedded models by name: about 0.1 M parameters (tests), 1 M (CPU experiments) and 34 M
#: (the ``gpu`` preset).
EMBEDDED_MODELS: dict[str, EmbeddedSpec] = {
    "tiny-llama-0.1m": EmbeddedSpec(
        hidden_size=64, num_layers=2, intermediate_size=256, num_heads=4
    ),
    "tiny-llama-1m": EmbeddedSpec(
        hidden_size=128, num_layers=4, intermediate_size=512, num_heads=4
    ),
    "tiny-llama-34m": EmbeddedSpec(
        hidden_size=512, num_layers=8, intermediate_size=2048, num_heads=8
    ),
}


def build_char_tokenizer() -> Any:
    """Build the embedded character tokenizer (80 symbols, left padding, ``<bos>`` prepended).

    Returns:
        A ``transformers.PreTrainedTokenizerFast``.

    Examples:
        One token per character, ``<bos>`` first; the answer tags are single tokens:

        >>> tok = build_char_tokenizer()
        >>> len(tok), tok.padding_side
        (80, 'left')
        >>> ids = tok("12+3=")["input_ids"]
        >>> ids, tok.decode(ids, skip_special_tokens=True)
        ([1, 5, 6, 14, 7, 18], '12+3=')
        >>> tok.convert_ids_to_tokens(tok("<answer>7</answer>")["input_ids"])
        ['<bos>', '<answer>', '7', '</answer>']
        >>> tok("é")["input_ids"]  # outside the vocabulary: <unk> (id 3)
        [1, 3]
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = SPECIALS + CHARS + TAGS
    core = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"</?answer>|."), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", 1)]
    )
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
    )


def build_embedded(name: str, seed: int) -> tuple[Any, Any]:
    """Build an embedded tiny Llama with random weights and its character tokenizer.

    Args:
        name: A key of :data:`EMBEDDED_MODELS`.
        seed: Seed of the weight initialisation.

    Returns:
        ``(model, tokenizer)``, the model in float32 on CPU.

    Raises:
        ValueError: If ``name`` is not an embedded model.

    Examples:
        >>> model, tok = build_embedded("tiny-llama-0.1m", seed=0)
        >>> sum(p.numel() for p in model.parameters()), model.config.num_hidden_layers
        (136512, 2)
        >>> again, _ = build_embedded("tiny-llama-0.1m", seed=0)  # same seed, same weights
        >>> all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))
        True
        >>> build_embedded("tiny-llama-7b", seed=0)  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        ValueError: unknown embedded model 'tiny-llama-7b';
        expected one of ['tiny-llama-0.1m', 'tiny-llama-1m', 'tiny-llama-34m']
    """
    if name not in EMBEDDED_MODELS:
        raise ValueError(
            f"unknown embedded model {name!r}; expected one of {sorted(EMBEDDED_MODELS)}"
        )
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = EMBEDDED_MODELS[name]
    tok = build_char_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)  # type: ignore[no-untyped-call]
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def check_model_dir(path: str | os.PathLike[str]) -> None:
    """Check, without loading weights, that ``path`` holds a causal LM in transformers format.

    Raises:
        ValueError: If it is not a directory, has no ``config.json``, its architecture is not a
            causal language model, or it holds no weights.

    Examples:
        >>> import tempfile
        >>> model, tok = build_embedded("tiny-llama-0.1m", seed=0)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     save_model_dir(model, tok, f"{tmp}/tiny")
        ...     print(check_model_dir(f"{tmp}/tiny"))  # a causal LM: no error
        ...     try:
        ...         check_model_dir(tmp)
        ...     except ValueError as exc:
        ...         print(str(exc).replace(tmp, "TMP"))
        None
        --model 'TMP' has no config.json: not a transformers model directory
    """
    p = Path(path)
    if not p.is_dir():
        raise ValueError(
            f"--model {str(path)!r} is neither an embedded model name "
            f"({', '.join(sorted(EMBEDDED_MODELS))}) nor a local directory"
        )
    if not (p / "config.json").is_file():
        raise ValueError(
            f"--model {str(path)!r} has no config.json: not a transformers model directory"
        )
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        cfg = AutoConfig.from_pretrained(p, local_files_only=True)
    except Exception as exc:  # transformers raises several types for a broken config
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"--model {str(path)!r}: cannot read config.json ({first})") from None
    if cfg.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ValueError(f"--model {str(path)!r} is a {cfg.model_type!r} model, not a causal LM")
    archs = getattr(cfg, "architectures", None) or []
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    if archs and not any(a in causal or a.endswith("ForCausalLM") for a in archs):
        raise ValueError(f"--model {str(path)!r} holds a {archs[0]}, not a causal LM")
    if not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")):
        raise ValueError(f"--model {str(path)!r} holds no weights (*.safetensors or *.bin)")


def load_local(path: str | os.PathLike[str]) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer from a local directory (never from a hub).

    Returns:
        ``(model, tokenizer)``, the model in float32 on CPU, the tokenizer padding on the left.

    Raises:
        ValueError: If ``path`` does not hold a causal LM (see :func:`check_model_dir`).

    Examples:
        >>> import tempfile
        >>> model, tok = build_embedded("tiny-llama-0.1m", seed=0)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     save_model_dir(model, tok, tmp)
        ...     loaded, loaded_tok = load_local(tmp)
        >>> type(loaded).__name__, loaded.dtype, loaded_tok.padding_side
        ('LlamaForCausalLM', torch.float32, 'left')
        >>> all(torch.equal(a, b) for a, b in zip(model.parameters(), loaded.parameters()))
        True
        >>> load_local("no/such/model")  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        ValueError: --model 'no/such/model' is neither an embedded model name
        (tiny-llama-0.1m, tiny-llama-1m, tiny-llama-34m) nor a local directory
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    check_model_dir(path)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # no "Loading weights" bar
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, dtype=torch.float32
        )
    finally:
        if bar:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def save_model_dir(model: Any, tokenizer: Any, path: str | os.PathLike[str]) -> None:
    """Write ``model`` and ``tokenizer`` to ``path`` atomically (temp directory + rename).

    An existing ``path`` is replaced as a whole; parent directories are created.

    Examples:
        >>> import os, tempfile
        >>> model, tok = build_embedded("tiny-llama-0.1m", seed=0)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     save_model_dir(model, tok, f"{tmp}/runs/model")
        ...     files = sorted(os.listdir(f"{tmp}/runs/model"))
        >>> [f for f in ("config.json", "model.safetensors", "tokenizer.json") if f in files]
        ['config.json', 'model.safetensors', 'tokenizer.json']
    """
    from transformers.utils import logging as hf_logging

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # no bar for 4 MB
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if bar:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def default_cache_dir() -> Path:
    """The SFT cache: ``$GDRO_CACHE_DIR``, else ``$XDG_CACHE_HOME/gdro``, else ``~/.cache/gdro``.

    Examples:
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, {"GDRO_CACHE_DIR": "/data/gdro-cache"}):
        ...     print(default_cache_dir())
        /data/gdro-cache
        >>> with mock.patch.dict(os.environ, {"GDRO_CACHE_DIR": "", "XDG_CACHE_HOME": "/xdg"}):
        ...     print(default_cache_dir())
        /xdg/gdro
    """
    if os.environ.get("GDRO_CACHE_DIR"):
        return Path(os.environ["GDRO_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gdro"


def sft_key(fields: dict[str, Any]) -> str:
    """A short, stable hash of everything that determines an SFT result."""
    blob = json.dumps(fields, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


#: Steps whose mean SFT loss is compared with ``target_loss``.
TARGET_WINDOW = 100


def sft_warmup(
    model: Any,
    tokenizer: Any,
    examples: Callable[[torch.Generator, int], list[tuple[str, str]]],
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    warmup: int = 100,
    max_grad_norm: float | None = 1.0,
    weight_decay: float = 0.1,
    beta2: float = 0.95,
    target_loss: float | None = None,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Supervised warm-up on (prompt, answer) pairs; the loss covers answer tokens and ``<eos>``.

    AdamW with the usual small-LM settings (beta2 0.95, weight decay 0.1, the gradient clipped
    at norm 1), ``warmup`` linear steps, then a constant learning rate. On addition the 1 M
    model's loss falls in a sudden drop once it has learned to line the digits up; these
    settings bring the drop forward (about step 1,000-2,000 against 2,000-3,000 for plain Adam
    with a cosine decay) and make the accuracy after it far higher (docs/torch.md).

    Args:
        model: The causal LM, trained in place on the device it is on.
        tokenizer: Its tokenizer (``<bos>`` is added by the tokenizer where it does so).
        examples: ``examples(generator, batch_size)`` returns a batch of (prompt, answer) strings.
        steps: Optimizer steps.
        batch_size: Pairs per step.
        lr: AdamW learning rate, reached after ``warmup`` linear steps, then held.
        warmup: Linear warm-up steps.
        max_grad_norm: Clip the gradient to this global norm before each step (None = no
            clipping).
        weight_decay: AdamW's decoupled weight decay.
        beta2: AdamW's second-moment decay (beta1 is 0.9).
        target_loss: Stop before ``steps`` once the mean loss of the last 100 steps
            (``TARGET_WINDOW``) is at most this (None = always run ``steps``). How
            far the 1 M model has come by a given step varies with the seed and the machine;
            its loss says where it is.
        seed: Seed of the example stream.
        progress: Called as ``progress(step, loss)`` after each step.

    Returns:
        The loss of every step run.

    Examples:
        Five steps on one repeated pair: the loss starts near ln(80), a uniform guess over the
        vocabulary, and falls:

        >>> model, tok = build_embedded("tiny-llama-0.1m", seed=0)
        >>> def examples(gen, n):
        ...     return [("1+2=", "3")] * n
        >>> losses = sft_warmup(model, tok, examples, steps=5, batch_size=4, lr=1e-2, warmup=1)
        >>> len(losses), round(losses[0], 1), losses[-1] < losses[0] - 1
        (5, 4.4, True)
        >>> model.training  # left in eval mode
        False

        With a target loss it stops as soon as the recent steps reach it:

        >>> model, tok = build_embedded("tiny-llama-0.1m", seed=0)
        >>> losses = sft_warmup(
        ...     model, tok, examples, steps=500, batch_size=4, lr=1e-2, warmup=1, target_loss=0.5
        ... )
        >>> len(losses) < 500, sum(losses[-TARGET_WINDOW:]) / TARGET_WINDOW <= 0.5
        (True, True)
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(
        model.parameters(), lr=lr, betas=(0.9, beta2), weight_decay=weight_decay
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup)))
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    device = next(model.parameters()).device  # the batches go where the model is
    model.train()
    losses = []
    for step in range(steps):
        rows, labels = [], []
        for prompt, answer in examples(gen, batch_size):
            p = tokenizer(prompt, add_special_tokens=True)["input_ids"]
            a = tokenizer(answer, add_special_tokens=False)["input_ids"] + [eos]
            rows.append(p + a)
            labels.append([-100] * len(p) + a)
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        lab = torch.tensor([r + [-100] * (width - len(r)) for r in labels])
        mask = (torch.arange(width)[None, :] < torch.tensor([len(r) for r in rows])[:, None]).long()
        ids, lab, mask = ids.to(device), lab.to(device), mask.to(device)
        loss = model(input_ids=ids, attention_mask=mask, labels=lab).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step + 1, losses[-1])
        recent = losses[-TARGET_WINDOW:]
        if target_loss is not None and len(recent) == TARGET_WINDOW:
            if sum(recent) / TARGET_WINDOW <= target_loss:
                break
    model.eval()
    return losses
