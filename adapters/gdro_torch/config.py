"""``TrainConfig``: every setting of a ``gdro train`` run, and the presets.

A frozen, validated dataclass (style.md): a bad value raises ``ValueError`` naming the field, the
allowed range and the value received. Controller settings are checked by building the
``gdro_core`` configs, so errors surface before any model is built.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["PRESETS", "TrainConfig", "controller_configs"]

PromptMode = Literal["off", "reweight", "resample"]
RolloutMode = Literal["fixed", "bandit", "neyman"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainConfig:
    """Settings of one training run (the CLI flags map one to one onto these fields).

    Attributes:
        model: An embedded model (``tiny-llama-1m``, ``tiny-llama-0.1m``) or a local directory
            holding a transformers causal LM.
        task: Task spec: ``addition:min_digits=1,max_digits=5`` or a reasoning-gym dataset.
        seed: Seeds the RL phase: prompt order, sampling, the controller and the evaluation's
            sampling (the warm-up has its own ``sft_seed``).
        steps: GRPO steps.
        batch_size: Prompts per step, N.
        sampler: Which prompts a step trains on: ``controller`` (the controller's
            ``sample``: reshuffled epochs, or by bin with ``prompt="resample"``) or
            ``variance`` (a peer strategy: probability proportional to
            ``max(p(1-p), 0.01)``, with ``p`` the pass rate of the prompt's latest group and
            0.25 for an unseen prompt; :class:`gdro_torch.sampling.VarianceSampler`). The
            controller plans and learns from every batch either way.
        prompt: Prompt-GDRO mode: ``off`` (uniform; with ``rollout=fixed`` this is plain GRPO),
            ``reweight`` (the paper's advantage weights) or ``resample``.
        rollout: Rollout-GDRO mode: ``fixed`` (every prompt gets ``rollout_mean``), ``bandit``
            (the paper's per-bin arms under an exact budget) or ``neyman`` (square-root law).
        rollout_mean: Rollouts per prompt on average, n-bar; a step generates ``n-bar * N``.
        rollout_min: Fewest rollouts a prompt gets (>= 2: a group of 1 has no baseline).
        rollout_max: Most rollouts a prompt gets.
        selection: Budget allocator pick: ``mode`` (argmax) or ``sample``.
        num_bins: Difficulty bins B.
        window: Classifier memory in visits (0 = cumulative; None = the core's default: 10 for
            the pooled rate, 100 with --pass-k).
        hysteresis: Classifier hysteresis (None = 0.3 x the narrowest bin).
        pass_k: Classifier's k (None = the core's default outcome, the pooled per-rollout rate;
            an int = per-visit unbiased pass@k).
        signal: Prompt-GDRO signal: ``loss`` (the paper's), ``failure`` or ``variance``. With a
            reward-derived signal, ``--rollout bandit`` runs on the variance arm loss with
            ``RolloutConfig.variance_bandit`` knobs; with ``loss``, the paper's bandit.
        eta: Prompt-GDRO step size (exponential-weights temperature).
        gamma: Prompt-GDRO uniform mixing.
        ema: Prompt-GDRO score smoothing rate beta.
        weight_cap: Largest advantage weight.
        lr: AdamW learning rate of the GRPO phase.
        lr_schedule: ``constant``, or ``cosine``: from ``lr`` at the first step down to 0.1 x
            ``lr`` at the last (set from the step number, so a resumed run follows it too).
        kl_coef: Coefficient of the KL penalty to the frozen starting policy (0 = no reference).
        clip_low: Lower PPO clip range.
        clip_high: Upper PPO clip range (asymmetric, "clip-higher").
        loss_agg: ``token-mean`` (verl's default; weights a prompt by its response tokens) or
            ``seq-mean-token-mean`` (every response counts once).
        ppo_epochs: Optimizer steps per batch (>1 reuses the batch with clipped ratios).
        micro_batch: Rows per forward/backward pass (gradient accumulation).
        max_grad_norm: Gradient clipping norm.
        max_new_tokens: Longest completion (None = the task's longest answer + 1).
        sft_steps: SFT warm-up steps (None = 2500 for an embedded model, 0 for a local one).
        sft_seed: Seed of the embedded model's initialisation and of the SFT warm-up's data.
            Apart from ``seed`` so that runs with different seeds start from one warmed-up
            model, as RL runs start from one pretrained checkpoint (and share its cache entry).
        sft_batch: SFT batch size.
        sft_lr: SFT learning rate (AdamW, beta2 0.95, weight decay 0.1, constant after a
            100-step warm-up; see :func:`gdro_torch.model.sft_warmup`).
        sft_max_grad_norm: SFT gradient clipping norm (None = no clipping).
        sft_target_loss: Stop the SFT warm-up early once the mean loss of its last 100 steps
            is at most this; ``sft_steps`` is then a limit (None = run ``sft_steps``).
        eval_every: Evaluate every this many steps (0 = only at the start and the end).
        eval_prompts: Held-out prompts evaluated (None = the whole held-out split).
        eval_samples: Completions per held-out prompt, n of pass@k (>= 8 for pass@8).
        checkpoint_every: Checkpoint every this many steps (0 = only at the end).
        backend: Rollout engine: ``hf`` (``generate``) or ``vllm`` (GPU, optional).
        device: Where the policy lives: ``cpu``, ``cuda`` (refused without a CUDA GPU) or
            ``auto`` (``cuda`` when one is visible, else ``cpu``).

    Examples:
        The ``smoke`` preset on top of the defaults, then one field changed:

        >>> cfg = TrainConfig(**PRESETS["smoke"])
        >>> cfg.model, cfg.steps, cfg.batch_size, cfg.rollout_mean
        ('tiny-llama-0.1m', 3, 8, 4)
        >>> baseline = cfg.replace(prompt="off", rollout="fixed")  # plain GRPO
        >>> baseline.prompt, baseline.to_dict()["task"]
        ('off', 'addition:min_digits=1,max_digits=3,size=500,eval_size=20')

        A bad value names the flag, what is allowed and what was given:

        >>> TrainConfig(rollout_min=1)
        Traceback (most recent call last):
        ...
        ValueError: --rollout-min must be an integer >= 2 (a group of 1 has no baseline); got 1
        >>> cfg.replace(eta=-1.0)
        Traceback (most recent call last):
        ...
        ValueError: controller settings: PromptConfig.eta must be a finite number >= 0; got -1.0
    """

    model: str = "tiny-llama-1m"
    task: str = "addition:min_digits=1,max_digits=5"
    seed: int = 0
    steps: int = 200
    batch_size: int = 64
    sampler: Literal["controller", "variance"] = "controller"
    prompt: PromptMode = "reweight"
    rollout: RolloutMode = "fixed"
    rollout_mean: int = 4
    rollout_min: int = 2
    rollout_max: int = 12
    selection: Literal["mode", "sample"] = "mode"
    num_bins: int = 10
    window: int | None = None
    hysteresis: float | None = None
    pass_k: int | None = None
    signal: Literal["loss", "failure", "variance"] = "loss"
    eta: float = 0.65
    gamma: float = 0.01
    ema: float = 0.12
    weight_cap: float = 15.0
    lr: float = 2e-4
    lr_schedule: Literal["constant", "cosine"] = "constant"
    kl_coef: float = 0.001
    clip_low: float = 0.2
    clip_high: float = 0.28
    loss_agg: Literal["token-mean", "seq-mean-token-mean"] = "token-mean"
    ppo_epochs: int = 1
    micro_batch: int = 64
    max_grad_norm: float = 1.0
    max_new_tokens: int | None = None
    sft_steps: int | None = None
    sft_seed: int = 0
    sft_batch: int = 64
    sft_lr: float = 1e-3
    sft_max_grad_norm: float | None = 1.0
    sft_target_loss: float | None = None
    eval_every: int = 50
    eval_prompts: int | None = None
    eval_samples: int = 8
    checkpoint_every: int = 50
    backend: Literal["hf", "vllm"] = "hf"
    device: Literal["cpu", "cuda", "auto"] = "cpu"

    def __post_init__(self) -> None:
        def need(name: str, ok: bool, allowed: str) -> None:
            if not ok:
                raise ValueError(f"{_flag(name)} must be {allowed}; got {getattr(self, name)!r}")

        for name, lo in [
            ("steps", 1),
            ("batch_size", 1),
            ("ppo_epochs", 1),
            ("micro_batch", 1),
            ("sft_batch", 1),
            ("eval_samples", 1),
        ]:
            value = getattr(self, name)
            need(name, isinstance(value, int) and value >= lo, f"an integer >= {lo}")
        for name in ("seed", "sft_seed", "eval_every", "checkpoint_every"):
            value = getattr(self, name)
            need(name, isinstance(value, int) and value >= 0, "an integer >= 0")
        for name in ("sft_steps", "eval_prompts", "max_new_tokens"):
            value = getattr(self, name)
            need(
                name,
                value is None
                or (isinstance(value, int) and value >= (0 if name == "sft_steps" else 1)),
                "a positive integer" if name != "sft_steps" else "an integer >= 0",
            )
        for name in ("lr", "sft_lr", "max_grad_norm"):
            need(name, float(getattr(self, name)) > 0, "> 0")
        for name, unset in (("sft_max_grad_norm", "no clipping"), ("sft_target_loss", "no target")):
            value = getattr(self, name)
            need(
                name,
                value is None
                or (
                    isinstance(value, (int, float))
                    and not isinstance(value, bool)
                    and math.isfinite(value)
                    and value > 0
                ),
                f"a finite number > 0 (or unset: {unset})",
            )
        need("kl_coef", self.kl_coef >= 0, ">= 0")
        need("clip_low", 0 < self.clip_low < 1, "in (0, 1)")
        need("clip_high", self.clip_high > 0, "> 0")
        need("lr_schedule", self.lr_schedule in ("constant", "cosine"), "constant or cosine")
        need("prompt", self.prompt in ("off", "reweight", "resample"), "off, reweight or resample")
        need("rollout", self.rollout in ("fixed", "bandit", "neyman"), "fixed, bandit or neyman")
        need(
            "loss_agg",
            self.loss_agg in ("token-mean", "seq-mean-token-mean"),
            "token-mean or seq-mean-token-mean",
        )
        need("backend", self.backend in ("hf", "vllm"), "hf or vllm")
        need("device", self.device in ("cpu", "cuda", "auto"), "cpu, cuda or auto")
        need("sampler", self.sampler in ("controller", "variance"), "controller or variance")
        if self.sampler == "variance" and self.prompt == "resample":
            raise ValueError(
                "--sampler variance draws the batch itself, so it cannot be combined with "
                "--prompt resample (which also draws it); got --prompt resample"
            )
        need(
            "rollout_min",
            isinstance(self.rollout_min, int) and self.rollout_min >= 2,
            "an integer >= 2 (a group of 1 has no baseline)",
        )
        if self.eval_samples < 8:
            raise ValueError(
                f"--eval-samples must be >= 8 (pass@8 needs 8 samples per prompt); "
                f"got {self.eval_samples}"
            )
        if self.rollout != "fixed" and self.batch_size < 2:
            raise ValueError(
                f"--batch-size must be >= 2 with --rollout {self.rollout} (a budget "
                f"of one prompt leaves nothing to move); got {self.batch_size}"
            )
        controller_configs(self)  # the gdro_core configs validate the controller settings

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return dataclasses.asdict(self)


def _flag(field: str) -> str:
    return "--" + {"prompt": "prompt", "pass_k": "pass-k"}.get(field, field.replace("_", "-"))


def controller_configs(cfg: TrainConfig) -> dict[str, Any]:
    """Build the ``gdro_core`` configs for ``cfg`` (their constructors validate the values).

    Returns:
        Keyword arguments for ``GDROController`` (without ``num_prompts``).

    Raises:
        ValueError: Re-raised from the core's config classes, prefixed ``controller settings:``
            (the message names the core field, e.g. ``PromptConfig.eta``).

    Examples:
        >>> kwargs = controller_configs(TrainConfig(rollout="bandit", num_bins=5, seed=3))
        >>> sorted(kwargs)
        ['classifier', 'prompt', 'rollout', 'seed']
        >>> kwargs["classifier"].num_bins, kwargs["rollout"].mode, kwargs["seed"]
        (5, 'bandit', 3)

        With a reward-derived signal the rollout bandit runs on the variance arm loss:

        >>> kwargs = controller_configs(TrainConfig(rollout="bandit", signal="variance"))
        >>> kwargs["rollout"].arm_signal
        'variance'
    """
    from gdro_core import ClassifierConfig, PromptConfig

    try:
        return {
            "classifier": ClassifierConfig(
                num_bins=cfg.num_bins,
                window=-1 if cfg.window is None else cfg.window,
                # None: the core's derived default (0.3 x the narrowest bin)
                hysteresis=-1.0 if cfg.hysteresis is None else cfg.hysteresis,
                outcome="rate" if cfg.pass_k is None else "pass@k",
                k=cfg.pass_k,
            ),
            "prompt": PromptConfig(
                mode=cfg.prompt,
                eta=cfg.eta,
                gamma=cfg.gamma,
                ema=cfg.ema,
                weight_cap=cfg.weight_cap,
                signal=cfg.signal,
            ),
            "rollout": rollout_config(cfg),
            "seed": cfg.seed,
        }
    except (TypeError, ValueError) as exc:
        raise ValueError(f"controller settings: {exc}") from None


def rollout_config(cfg: TrainConfig) -> Any:
    """Rollout-GDRO settings: with ``signal="loss"`` the paper's bandit on the prompt loss; with a
    reward-derived signal the bandit runs on the variance loss with knobs sized to it
    (``RolloutConfig.variance_bandit``), since the loss is inert without KL (method.md 7.6)."""
    from gdro_core import RolloutConfig

    common: dict[str, Any] = dict(
        mode=cfg.rollout,
        mean=cfg.rollout_mean,
        min=cfg.rollout_min,
        max=cfg.rollout_max,
        selection=cfg.selection,
    )
    if cfg.rollout == "bandit" and cfg.signal != "loss":
        return RolloutConfig.variance_bandit(**common)
    return RolloutConfig(**common)


#: Presets: field overrides on top of the ``TrainConfig`` defaults.
PRESETS: dict[str, dict[str, Any]] = {
    # under a minute on 2 CPU cores: the 0.1 M model, a short SFT, 3 steps
    "smoke": dict(
        model="tiny-llama-0.1m",
        task="addition:min_digits=1,max_digits=3,size=500,eval_size=20",
        steps=3,
        batch_size=8,
        sft_steps=30,
        eval_every=0,
        checkpoint_every=0,
        kl_coef=0.001,
    ),
    # about 7 minutes on 2 idle CPU cores (a warm-up of about 2,500 SFT steps, 4 minutes,
    # cached afterwards, then 200 GRPO steps of 32 prompts x 8 rollouts). The warm-up runs until
    # its loss reaches 0.25, where the 1 M model is partway through learning addition and RL
    # carries it on (docs/torch.md); lr 1e-4 with a cosine decay keeps the pass@8 it gains
    # (at a constant lr it peaked near step 100, then fell back). Prompt-GDRO with the
    # variance signal: the paper's loss signal is inert with one on-policy update per batch
    # and no KL (method.md section 7.6). 500 held-out prompts x 16 samples narrow the
    # interval of the pass@8 change to about 2 points.
    "default": dict(
        task="addition:min_digits=1,max_digits=5,eval_size=500",
        batch_size=32,
        rollout_mean=8,
        kl_coef=0.0,
        signal="variance",
        lr=1e-4,
        lr_schedule="cosine",
        sft_steps=4000,
        sft_target_loss=0.25,
        eval_samples=16,
    ),
    # the paper's shape, for one GPU: 14,000 training prompts of 1-12 digit addition (twelve
    # levels, 1,000 held out), 256 prompts x 4 rollouts for 1,000 steps (each prompt seen
    # about 18 times), the embedded 34 M-parameter Llama warmed up from scratch until its SFT
    # loss reaches 0.25 (at most 20,000 steps of 256 examples), held-out evaluation of 1,000
    # prompts x 16 samples every 100 steps. Built in code: no download, nothing to install.
    # Not yet calibrated on a GPU: the warm-up's target and the learning rates are the 1 M
    # model's recipe scaled by the usual rules (lower lr for a wider model).
    "gpu": dict(
        model="tiny-llama-34m",
        task="addition:min_digits=1,max_digits=12,size=14000,eval_size=1000",
        device="auto",
        steps=1000,
        batch_size=256,
        rollout_mean=4,
        rollout_min=2,
        rollout_max=12,
        kl_coef=0.0,
        signal="variance",
        lr=3e-5,
        lr_schedule="cosine",
        micro_batch=512,
        sft_steps=20_000,
        sft_batch=256,
        sft_lr=5e-4,
        sft_target_loss=0.25,
        eval_every=100,
        eval_samples=16,
        checkpoint_every=100,
    ),
}
