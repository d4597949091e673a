"""``gdro train``: the command line of the torch GRPO loop.

Settings come from, in increasing priority: the ``--preset`` (a whole ``TrainConfig``; ``default``
when none is named), then the flags given. The run's own settings have one flag per field
(``--batch-size``); the controller's come from the core: ``--recipe`` and one ``--SECTION.FIELD``
flag per ``ClassifierConfig``/``PromptConfig``/``RolloutConfig`` field (``--rollout.mean``),
generated from the configs (:mod:`gdro_cli.flags`). ``--help`` shows the values the preset will
run. With ``--resume RUN_DIR`` the settings come from the run's ``config.json``; a flag that
contradicts it is an error. The previous release's controller flags (``--rollout-mean``,
``--signal``, ...) still work for one release, with a warning.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import time
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gdro_cli import flags as _flags
from gdro_torch.config import PRESETS, RENAMED, TrainConfig

__all__ = ["add_arguments", "config_from_args", "run"]

#: The flag groups of ``--help``: title -> ``TrainConfig`` fields (each flag's help is the first
#: clause of the field's text in ``TrainConfig``'s docstring).
_GROUPS: dict[str, tuple[str, ...]] = {
    "model and task": ("model", "task", "seed", "steps", "batch_size", "sampler"),
    "optimisation": (
        "lr", "lr_schedule", "kl_coef", "clip_low", "clip_high", "loss_agg", "ppo_epochs",
        "micro_batch", "max_grad_norm", "max_new_tokens", "backend", "device",
    ),
    "SFT warm-up (cached)": (
        "sft_steps", "sft_seed", "sft_batch", "sft_lr", "sft_max_grad_norm", "sft_target_loss",
    ),
    "evaluation and checkpoints": ("eval_every", "eval_prompts", "eval_samples", "checkpoint_every"),
}  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> None:
    """Register the flags of ``gdro train``.

    Every :class:`~gdro_torch.config.TrainConfig` field but ``controller`` gets a flag
    (``batch_size`` becomes ``--batch-size``), and the controller gets ``--recipe`` and one
    ``--SECTION.FIELD`` flag per core setting (:func:`gdro_cli.flags.add_controller_arguments`).
    All default to None, so that :func:`config_from_args` can tell the flags given from the
    preset's values; the help shows the values of the preset named in ``argv`` (``default``
    when none is), which is what the run will use.

    Args:
        parser: the subcommand's parser.
        argv: the command line, to show the named preset's values in ``--help``.

    Raises:
        RuntimeError: If a ``TrainConfig`` field has no flag (a programming error).

    Examples:
        >>> import argparse, contextlib, io
        >>> parser = argparse.ArgumentParser(prog="gdro train")
        >>> add_arguments(parser)
        >>> args = parser.parse_args(["--preset", "smoke", "--batch-size", "4", "--rollout.mode=bandit"])
        >>> args.preset, args.batch_size, getattr(args, "rollout.mode"), args.lr  # --lr: None
        ('smoke', 4, 'bandit', None)

        The help shows what a bare ``gdro train`` runs (the ``default`` preset):

        >>> text = parser.format_help()
        >>> "Prompts per step N [32]" in text, "--rollout.mean MEAN" in text
        (True, True)
    """
    preset = PRESETS[_flags.named_preset(argv, PRESETS) or "default"]
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="default (when none is named): about 7 minutes (4 of them a cached warm-up), GRPO "
        "+ Prompt-GDRO on 1-5 digit addition; smoke: under a minute; gpu: the paper's shape "
        "(14k prompts, 256 x 4 rollouts, 1,000 steps, a 34M model warmed up from scratch) for "
        "one GPU. The [values] below are the named preset's",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="run directory (default runs/train-<preset>-<prompt mode>-<rollout mode>-s<seed>)",
    )
    parser.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its latest checkpoint",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="SFT cache (default $GDRO_CACHE_DIR or ~/.cache/gdro)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice; 1 on a busy machine)",
    )
    parser.add_argument("--no-report", action="store_true", help="skip the plots at the end")
    hints, docs = typing.get_type_hints(TrainConfig), _flags.field_help(TrainConfig)
    for title, names in _GROUPS.items():
        group = parser.add_argument_group(title)
        for name in names:
            parse, choices = _flags.parser_for(hints[name], nullable=False)
            group.add_argument(
                "--" + name.replace("_", "-"),
                dest=name,
                type=parse,
                choices=choices,
                default=None,
                help=f"{docs[name]} [{getattr(preset, name)}]",
            )
    missing = {f.name for f in dataclasses.fields(TrainConfig)} - {"controller"}
    missing -= {n for names in _GROUPS.values() for n in names}
    if missing:  # every setting has a flag
        raise RuntimeError(f"TrainConfig fields without a flag: {sorted(missing)}")
    _flags.add_controller_arguments(parser, preset.controller)
    parsers = {f.name: f.parse for f in _flags.flags()}
    for old, new in RENAMED.items():  # the previous release's spellings, for one release
        flag = "--" + old.replace("_", "-")
        parser.add_argument(flag, dest="legacy." + old, type=parsers[new], help=argparse.SUPPRESS)


def _apply_legacy(args: argparse.Namespace) -> None:
    """Map the previous release's controller flags onto the new ones, with a warning."""
    for old, new in RENAMED.items():
        value = getattr(args, "legacy." + old, None)
        if value is None:
            continue
        if getattr(args, new, None) is not None:
            raise ValueError(f"--{old.replace('_', '-')} and --{new} were both given")
        print(
            f"gdro train: --{old.replace('_', '-')} is deprecated (gone next release): "
            f"use --{new}"
            + (" (and --recipe reward for a reward-derived signal)" if old == "signal" else ""),
            file=sys.stderr,
        )
        setattr(args, new, value)
        if old == "pass_k":
            setattr(args, "classifier.outcome", "pass@k")
        if old == "signal" and getattr(args, "recipe", None) is None:
            args.recipe = "paper" if value == "loss" else "reward"


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Merge the preset (or the resumed run's config) and the explicit flags.

    Raises:
        ValueError: For an invalid value, ``--preset`` together with ``--resume``, or a flag
            that contradicts the resumed run's config.

    Examples:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="gdro train")
        >>> add_arguments(parser)
        >>> cfg = config_from_args(parser.parse_args(["--preset", "smoke", "--seed", "3"]))
        >>> cfg.model, cfg.steps, cfg.seed, cfg.lr  # the preset, one flag, a default
        ('tiny-llama-0.1m', 3, 3, 0.0002)
        >>> cfg = config_from_args(parser.parse_args(["--rollout.mode", "neyman"]))
        >>> cfg.batch_size, cfg.controller.rollout.mode, cfg.controller.prompt.signal
        (32, 'neyman', 'variance')
        >>> config_from_args(parser.parse_args(["--preset", "smoke", "--resume", "runs/x"]))
        Traceback (most recent call last):
        ...
        ValueError: --preset cannot be combined with --resume (the run's config is used)
        >>> config_from_args(parser.parse_args(["--eval-samples", "4"]))
        Traceback (most recent call last):
        ...
        ValueError: --eval-samples must be >= 8 (pass@8 needs 8 samples per prompt); got 4
    """
    _apply_legacy(args)
    names = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "controller"]
    explicit = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    if args.resume is not None:
        if args.preset is not None:
            raise ValueError("--preset cannot be combined with --resume (the run's config is used)")
        from gdro_torch.rundir import RunDir

        saved = RunDir(args.resume).read_config()
        keep = set(names) | ({"controller"} if "controller" in saved else set(RENAMED))
        base = TrainConfig.from_dict({k: v for k, v in saved.items() if k in keep})
        mismatch = [
            f"--{n.replace('_', '-')} {v!r} (run has {getattr(base, n)!r})"
            for n, v in explicit.items()
            if getattr(base, n) != v
        ]
        given = _flags.overrides(args)
        if given or getattr(args, "recipe", None):
            if _flags.apply(base.controller, args) != base.controller:
                mismatch.append(f"controller flags {given} (the run has other values)")
        if mismatch:
            raise ValueError(
                f"cannot resume {args.resume} with a different config: " + "; ".join(mismatch)
            )
        return base
    base = PRESETS[args.preset or "default"]
    return base.replace(**explicit, controller=_flags.apply(base.controller, args))


class _StopFlag:
    """SIGINT handler: the first Ctrl-C asks the loop to checkpoint and stop; the second aborts.

    Until ``arm()`` (during the SFT warm-up, when there is no run state to save) Ctrl-C aborts
    at once.
    """

    def __init__(self) -> None:
        self.requested = False
        self.armed = False
        self._previous: Any = None

    def arm(self, phase: str) -> None:
        """Called at each phase start; from the first phase after SFT on, Ctrl-C checkpoints."""
        self.armed = self.armed or phase != "sft"

    def __enter__(self) -> _StopFlag:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested or not self.armed:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\ngdro train: Ctrl-C, saving a checkpoint after this step (again to abort)",
            file=sys.stderr,
        )


def run(args: argparse.Namespace) -> int:
    """Run ``gdro train``; returns 0, or 130 when stopped by Ctrl-C (after a checkpoint).

    Prints the start/end summary table to stdout and, unless ``--no-report``, writes the plots
    and ``report.md`` under ``RUN_DIR/report``.

    Raises:
        ValueError: Bad settings or inputs, raised before any compute.

    Examples:
        One GRPO step of the smoke preset on a small task, without SFT, progress bar or report:

        >>> import argparse, contextlib, io, os, tempfile
        >>> from unittest import mock
        >>> parser = argparse.ArgumentParser(prog="gdro train")
        >>> add_arguments(parser)
        >>> flags = ["--preset", "smoke", "--task", "addition:max_digits=2,size=20,eval_size=4"]
        >>> flags += ["--steps", "1", "--sft-steps", "0", "--no-progress", "--no-report"]
        >>> stdout = io.StringIO()
        >>> with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(stdout):
        ...     with mock.patch.dict(os.environ, {"TTY_COMPATIBLE": "0"}):  # plain text
        ...         code = run(parser.parse_args([*flags, "--out", f"{tmp}/run"]))
        ...     files = sorted(os.listdir(f"{tmp}/run"))
        >>> code, files
        (0, ['checkpoints', 'config.json', 'evals', 'init_model', 'metrics.jsonl', 'model', 'tb'])
        >>> stdout.getvalue().splitlines()[-1]  # doctest: +ELLIPSIS
        'steps 1/1  wall ... s  run .../run'

        Bad input fails before anything is built:

        >>> run(parser.parse_args(["--preset", "smoke", "--batch-size", "999"]))
        ... # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        ValueError: --batch-size must be <= the training split's size 500
        (task 'addition:eval_size=20,max_digits=3,min_digits=1,size=500'); got 999
    """
    from gdro_torch.build import check_inputs

    cfg = config_from_args(args)
    task = check_inputs(cfg)  # fail fast, before the heavy imports and any compute
    if args.resume is not None:
        out = args.resume
    else:
        out = args.out or Path("runs") / (
            f"train-{args.preset or 'default'}-{cfg.controller.prompt.mode}-"
            f"{cfg.controller.rollout.mode}-s{cfg.seed}"
        )
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be an integer >= 1; got {args.threads}")
    import torch

    from gdro_torch.build import resolve_device

    if cfg.model == "tiny-llama-34m" and resolve_device(cfg).type == "cpu":
        print(
            "gdro train: the 34 M model runs on the CPU here (no CUDA GPU is visible); "
            "a step of the gpu preset takes minutes on a CPU",
            file=sys.stderr,
        )

    from gdro_torch.loop import Hooks, train
    from gdro_torch.progress import ProgressDisplay, print_summary

    if args.threads is not None:
        torch.set_num_threads(args.threads)

    with _StopFlag() as stop, ProgressDisplay(enabled=not args.no_progress) as display:

        def on_phase(name: str, detail: str) -> None:
            stop.arm(name)
            display.phase(name, detail)

        hooks = Hooks(
            on_phase=on_phase,
            on_sft=display.sft,
            on_step=display.step,
            should_stop=lambda: stop.requested,
        )
        start = time.perf_counter()
        result = train(
            cfg, out, resume=args.resume is not None, cache_dir=args.cache_dir, hooks=hooks
        )
    print_summary(cfg, task, result, time.perf_counter() - start)
    if result.interrupted:
        print(
            f"gdro train: stopped at step {result.steps_done}; continue with "
            f"gdro train --resume {out}",
            file=sys.stderr,
        )
        return 130
    if not args.no_report:
        from gdro_cli.report import write_report

        report_dir = write_report([out], out / "report")
        print(f"report: {report_dir / 'report.md'}")
    return 0
