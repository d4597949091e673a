"""``TrainConfig``: every setting of a ``gdro train`` run, and the presets.

A frozen, validated dataclass (style.md): a bad value raises ``ValueError`` naming the field, the
allowed range and the value received. The controller's settings are one
``gdro_core.ControllerConfig`` (the ``controller`` field), validated by the core; nothing here
re-declares them. Presets are whole configs.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gdro_core import ControllerConfig

__all__ = ["PRESETS", "RENAMED", "TrainConfig", "controller_from_legacy"]

#: Settings of the previous release that moved into ``controller`` (old name -> new flag).
RENAMED: dict[str, str] = {
    "prompt": "prompt.mode",
    "rollout": "rollout.mode",
    "rollout_mean": "rollout.mean",
    "rollout_min": "rollout.min",
    "rollout_max": "rollout.max",
    "selection": "rollout.selection",
    "num_bins": "classifier.num_bins",
    "window": "classifier.window",
    "hysteresis": "classifier.hysteresis",
    "pass_k": "classifier.k",
    "signal": "prompt.signal",
    "eta": "prompt.eta",
    "gamma": "prompt.gamma",
    "ema": "prompt.ema",
    "weight_cap": "prompt.weight_cap",
}


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
        batch_size: Prompts per step N.
        sampler: Which prompts a step trains on: ``controller`` (the controller's ``sample``)
            or ``variance`` (a peer strategy, by the pass-rate variance of the prompt's latest
            group). ``controller`` draws reshuffled epochs, or by bin with
            ``prompt.mode="resample"``; ``variance`` draws with probability proportional to
            ``max(p(1-p), 0.01)``, with ``p`` the pass rate of the prompt's latest group and
            0.25 for an unseen prompt (:class:`gdro_torch.sampling.VarianceSampler`). The
            controller plans and learns from every batch either way.
        controller: The controller: a ``gdro_core.ControllerConfig`` (or a mapping in
            ``ControllerConfig.from_mapping``'s shape). ``prompt.mode="off"`` with
            ``rollout.mode="fixed"`` is plain GRPO; ``rollout.mean`` is the budget (a step
            generates ``rollout.mean * batch_size`` rollouts). Its seed must be unset: ``seed``
            seeds the controller. On the command line: ``--recipe`` and ``--SECTION.FIELD``.
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
            100-step warm-up). See :func:`gdro_torch.model.sft_warmup`.
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
        The ``smoke`` preset, then its controller changed: a mapping is merged into it.

        >>> cfg = PRESETS["smoke"]
        >>> cfg.model, cfg.steps, cfg.batch_size, cfg.controller.rollout.mean
        ('tiny-llama-0.1m', 3, 8, 4)
        >>> baseline = cfg.replace(controller={"prompt": {"mode": "off"}})  # plain GRPO
        >>> baseline.controller.prompt.mode, baseline.controller.rollout.mode
        ('off', 'fixed')

        A bad value names the setting, what is allowed and what was given:

        >>> cfg.replace(controller={"rollout": {"min": 1}})
        Traceback (most recent call last):
        ...
        ValueError: controller.rollout: RolloutConfig.min must be an integer in [2, 4096]; got 1
        >>> TrainConfig(rollout_mean=8)
        Traceback (most recent call last):
        ...
        TypeError: TrainConfig.rollout_mean moved into the controller: use controller={'rollout': {'mean': 8}} (flag --rollout.mean)
    """

    model: str = "tiny-llama-1m"
    task: str = "addition:min_digits=1,max_digits=5"
    seed: int = 0
    steps: int = 200
    batch_size: int = 64
    sampler: Literal["controller", "variance"] = "controller"
    controller: ControllerConfig = field(default_factory=ControllerConfig)
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
        if isinstance(self.controller, Mapping):
            built = ControllerConfig.from_mapping(self.controller, where="controller")
            object.__setattr__(self, "controller", built)
        if not isinstance(self.controller, ControllerConfig):
            raise TypeError(
                "TrainConfig.controller must be a gdro_core.ControllerConfig or a mapping; got "
                f"{type(self.controller).__name__}"
            )
        if self.controller.seed is not None:
            raise ValueError(
                "TrainConfig.controller.seed must be unset (--seed seeds the controller); "
                f"got {self.controller.seed}"
            )

        def need(name: str, ok: bool, allowed: str) -> None:
            if not ok:
                raise ValueError(f"{_flag(name)} must be {allowed}; got {getattr(self, name)!r}")

        for name, (lo, optional) in _INTEGERS.items():
            value = getattr(self, name)
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= lo
            need(
                name,
                ok or (optional and value is None),
                f"an integer >= {lo}" + optional * " (or unset)",
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
        for name, allowed in _CHOICES.items():
            need(
                name, getattr(self, name) in allowed, ", ".join(allowed[:-1]) + " or " + allowed[-1]
            )
        if self.sampler == "variance" and self.controller.prompt.mode == "resample":
            raise ValueError(
                "--sampler variance draws the batch itself, so it cannot be combined with "
                "--prompt.mode resample (which also draws it); got --prompt.mode resample"
            )
        if self.eval_samples < 8:
            raise ValueError(
                f"--eval-samples must be >= 8 (pass@8 needs 8 samples per prompt); "
                f"got {self.eval_samples}"
            )
        mode = self.controller.rollout.mode
        if mode != "fixed" and self.batch_size < 2:
            raise ValueError(
                f"--batch-size must be >= 2 with --rollout.mode {mode} (a budget "
                f"of one prompt leaves nothing to move); got {self.batch_size}"
            )

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again).

        A mapping given for ``controller`` is merged into the current controller's settings,
        section by section (``{"prompt": {"mode": "off"}}`` changes that field only); a
        ``recipe`` in it applies that recipe's settings first.
        """
        given = changes.get("controller")
        if isinstance(given, Mapping):
            changes["controller"] = self.controller.merged(given, where="controller")
        return dataclasses.replace(self, **changes)

    def controller_config(self) -> ControllerConfig:
        """The controller's config, seeded with ``seed``.

        Examples:
            >>> TrainConfig(seed=3).controller_config().seed
            3
        """
        return self.controller.replace(seed=self.seed)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (the controller as ``ControllerConfig.to_dict``)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["controller"] = self.controller.to_dict()
        del out["controller"]["seed"]
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """The inverse of :meth:`to_dict`; a config saved by the previous release is converted
        (its flat controller settings moved into ``controller``).

        Examples:
            >>> TrainConfig.from_dict({"prompt": "off", "rollout_mean": 8}).controller.rollout.mean
            8
        """
        d = dict(d)
        legacy = {k: d.pop(k) for k in list(d) if k in RENAMED}
        if legacy:
            if "controller" in d:
                raise ValueError(
                    f"config has both 'controller' and the old settings {sorted(legacy)}"
                )
            d["controller"] = controller_from_legacy(legacy)
        return cls(**d)


#: Integer settings: the least value and whether unset (None) is allowed.
_INTEGERS: dict[str, tuple[int, bool]] = {
    "steps": (1, False), "batch_size": (1, False), "ppo_epochs": (1, False),
    "micro_batch": (1, False), "sft_batch": (1, False), "eval_samples": (1, False),
    "seed": (0, False), "sft_seed": (0, False), "eval_every": (0, False),
    "checkpoint_every": (0, False), "sft_steps": (0, True), "eval_prompts": (1, True),
    "max_new_tokens": (1, True),
}  # fmt: skip
#: The settings with named choices (their ``Literal`` annotations).
_CHOICES: dict[str, tuple[str, ...]] = {
    name: typing.get_args(hint)
    for name, hint in typing.get_type_hints(TrainConfig).items()
    if typing.get_origin(hint) is Literal
}


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


_OLD_DEFAULTS: dict[str, Any] = dict(
    prompt="reweight", rollout="fixed", rollout_mean=4, rollout_min=2, rollout_max=12,
    selection="mode", num_bins=10, window=100, hysteresis=None, pass_k=None, signal="loss",
    eta=0.65, gamma=0.01, ema=0.12, weight_cap=15.0,
)  # fmt: skip


def controller_from_legacy(old: Mapping[str, Any]) -> dict[str, Any]:
    """The controller mapping for the previous release's flat settings (missing ones: its
    defaults), giving exactly the controller that release built: the paper's any-correct
    classifier outcome (or pass@k), and a bandit on the variance arm loss with the ``reward``
    recipe's knobs when the signal was reward-derived.

    Examples:
        >>> m = controller_from_legacy({"rollout": "bandit", "signal": "variance"})
        >>> m["recipe"], m["rollout"]["mode"], m["classifier"]["outcome"]
        ('reward', 'bandit', 'any')
    """
    o = {**_OLD_DEFAULTS, **old}
    classifier: dict[str, Any] = {"num_bins": o["num_bins"], "k": o["pass_k"]}
    if o["pass_k"] is not None:
        classifier.update(outcome="pass@k", window=-1 if o["window"] is None else o["window"])
    elif o["window"] is None:  # written between the releases: the core's default outcome
        classifier.update(outcome="rate", window=-1)
    else:
        classifier.update(outcome="any", window=o["window"])
    if o["hysteresis"] is not None:
        classifier["hysteresis"] = o["hysteresis"]
    prompt = {k: o[k] for k in ("eta", "gamma", "ema", "weight_cap", "signal")}
    prompt["mode"] = o["prompt"]
    rollout = {
        "mode": o["rollout"],
        "mean": o["rollout_mean"],
        "min": o["rollout_min"],
        "max": o["rollout_max"],
        "selection": o["selection"],
    }
    out: dict[str, Any] = {"classifier": classifier, "prompt": prompt, "rollout": rollout}
    if o["rollout"] == "bandit" and o["signal"] != "loss":
        out["recipe"] = "reward"
    return out


def _refuse_renamed(cls: type) -> None:
    """Make the previous release's keyword arguments a clear error naming the new spelling."""
    init = cls.__dict__["__init__"]

    def __init__(self: Any, **kwargs: Any) -> None:
        old = sorted(set(kwargs) & set(RENAMED))
        if old:
            name = old[0]
            section, key = RENAMED[name].split(".")
            raise TypeError(
                f"TrainConfig.{name} moved into the controller: use "
                f"controller={{{section!r}: {{{key!r}: {kwargs[name]!r}}}}} "
                f"(flag --{RENAMED[name]})"
            )
        init(self, **kwargs)

    __init__.__doc__ = init.__doc__
    cls.__init__ = __init__  # type: ignore[misc]


_refuse_renamed(TrainConfig)


#: Presets: whole configs; ``gdro train --preset NAME`` runs one, and its flags change it.
PRESETS: dict[str, TrainConfig] = {
    # under a minute on 2 CPU cores: the 0.1 M model, a short SFT, 3 steps
    "smoke": TrainConfig(
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
    "default": TrainConfig(
        task="addition:min_digits=1,max_digits=5,eval_size=500",
        batch_size=32,
        controller=ControllerConfig.from_mapping({"recipe": "reward", "rollout": {"mean": 8}}),
        kl_coef=0.0,
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
    "gpu": TrainConfig(
        model="tiny-llama-34m",
        task="addition:min_digits=1,max_digits=12,size=14000,eval_size=1000",
        device="auto",
        steps=1000,
        batch_size=256,
        controller=ControllerConfig.from_mapping({"recipe": "reward", "rollout": {"mean": 4}}),
        kl_coef=0.0,
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
