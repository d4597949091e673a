"""Live progress (rich) and the end-of-run summary table of ``gdro train``."""

from __future__ import annotations

import math
import re
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

__all__ = ["ProgressDisplay", "print_summary"]

_console = Console(stderr=True)


class ProgressDisplay:
    """A progress bar for the SFT warm-up and the GRPO steps: step, reward, pass rate, ETA.

    Output goes to stderr. Without a terminal (a log file, CI) the bar is not redrawn; a line is
    logged every tenth of the way instead.

    Args:
        enabled: False prints nothing (``--no-progress``).

    Examples:
        Two GRPO steps, the second with an evaluation, logged to a captured stderr (the
        environment patch keeps the text plain and wide enough on any terminal):

        >>> import contextlib, io, os
        >>> from unittest import mock
        >>> err = io.StringIO()
        >>> plain = mock.patch.dict(os.environ, {"TTY_COMPATIBLE": "0", "COLUMNS": "100"})
        >>> step_1 = {"train/reward_mean": 0.5, "train/solved": 1.0}
        >>> step_2 = {"train/reward_mean": 0.75, "train/solved": 1.0, "eval/pass@8": 0.25}
        >>> with plain, contextlib.redirect_stderr(err), ProgressDisplay() as display:
        ...     display.phase("train", "2 steps")
        ...     display.step(1, 2, step_1)
        ...     display.step(2, 2, step_2)
        >>> print(err.getvalue())  # doctest: +ELLIPSIS
        [...] train: 2 steps ...
        ... grpo 1/2  reward 0.500  solved 1.00  pass@8 - ...
        ... grpo 2/2  reward 0.750  solved 1.00  pass@8 0.250 ...

        A warm-up that reaches its target loss at step 3 of at most 10 ends its bar there:

        >>> err = io.StringIO()
        >>> with plain, contextlib.redirect_stderr(err), ProgressDisplay() as display:
        ...     for step, loss in enumerate([0.9, 0.5, 0.2], start=1):
        ...         display.sft(step, 10, loss)
        ...     display.phase("sft", "warm-up done")
        >>> text = err.getvalue()
        >>> "sft 3/10  loss 0.200: target reached, stopped at step 3 of at most 10" in text
        True
        >>> text.splitlines()[-1].split()[2]  # the bar ends at 3 of 3
        '3/3'
        >>> err = io.StringIO()
        >>> with contextlib.redirect_stderr(err), ProgressDisplay(enabled=False) as display:
        ...     display.step(1, 2, {"train/reward_mean": 0.5})
        >>> err.getvalue()
        ''
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=_console,
            disable=not enabled,
        )
        self._tasks: dict[str, Any] = {}
        self._sft_last: tuple[int, int, float] | None = None
        # without a terminal the bar is not drawn live: log a line every 10% instead
        self._log_lines = enabled and not _console.is_terminal
        self._logged: dict[str, int] = {}

    def _log_every_tenth(self, name: str, step: int, total: int, info: str) -> None:
        tenth = step * 10 // max(total, 1)
        if self._log_lines and tenth > self._logged.get(name, 0):
            self._logged[name] = tenth
            _console.log(f"{name} {step}/{total}  {info}")

    def __enter__(self) -> ProgressDisplay:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.__exit__(*exc)

    def phase(self, name: str, detail: str) -> None:
        """A phase starts: log it above the bars.

        A warm-up that ended before its step limit (it reached its target loss) gets its bar
        finished at the step where it stopped, with the reason.
        """
        self._finish_sft()
        if self.enabled:
            self._progress.console.log(f"{name}: {detail}")

    def sft(self, step: int, total: int, loss: float) -> None:
        """SFT progress."""
        if "sft" not in self._tasks:
            self._tasks["sft"] = self._progress.add_task("sft", total=total, info="")
        self._sft_last = (step, total, loss)
        self._progress.update(self._tasks["sft"], completed=step, info=f"loss {loss:.3f}")
        self._log_every_tenth("sft", step, total, f"loss {loss:.3f}")

    def _finish_sft(self) -> None:
        last = self._sft_last
        if last is None or last[0] >= last[1]:
            return
        step, total, loss = last
        info = f"loss {loss:.3f}: target reached, stopped at step {step} of at most {total}"
        self._progress.update(self._tasks["sft"], total=step, completed=step, info=info)
        if self._log_lines:
            _console.log(f"sft {step}/{total}  {info}")
        self._sft_last = None

    def step(self, step: int, total: int, metrics: dict[str, float]) -> None:
        """GRPO progress: reward and pass rate of the step, pass@8 when evaluated."""
        if "train" not in self._tasks:
            self._tasks["train"] = self._progress.add_task(
                "grpo", total=total, completed=step - 1, info=""
            )
            self._pass8 = float("nan")
        if "eval/pass@8" in metrics:
            self._pass8 = metrics["eval/pass@8"]
        info = (
            f"reward {metrics.get('train/reward_mean', float('nan')):.3f}  "
            f"solved {metrics.get('train/solved', float('nan')):.2f}  "
            + (f"pass@8 {self._pass8:.3f}" if self._pass8 == self._pass8 else "pass@8 -")
        )
        self._progress.update(self._tasks["train"], completed=step, info=info)
        self._log_every_tenth("grpo", step, total, info)


def _level_key(key: str) -> tuple[int, str]:
    match = re.search(r"level(-?\d+)$", key)
    return (int(match.group(1)) if match else -1, key)


def print_summary(cfg: Any, task: Any, result: Any, wall_s: float) -> None:
    """Print the held-out metrics at the start and the end, and where the run lives.

    Where the result has a paired interval (``result.change``), the change reads
    ``+0.250 ± 0.062``: a 95% t-interval over held-out prompts.

    Args:
        cfg: The run's :class:`~gdro_torch.config.TrainConfig` (its modes title the table).
        task: The :class:`~gdro_torch.tasks.Task` (its spec is the caption).
        result: The :class:`~gdro_torch.loop.TrainResult` (evaluations, steps, run directory).
        wall_s: Seconds the run took.

    Examples:
        >>> import os
        >>> from pathlib import Path
        >>> from unittest import mock
        >>> from gdro_torch.config import TrainConfig
        >>> from gdro_torch.loop import TrainResult
        >>> from gdro_torch.tasks import load_task
        >>> result = TrainResult(
        ...     run_dir=Path("runs/demo"), steps_done=200, interrupted=False,
        ...     eval_start={"eval/pass@8": 0.25, "eval/pass@8/level2": 0.125, "timing/eval_s": 0.1},
        ...     eval_end={"eval/pass@8": 0.5, "eval/pass@8/level2": 0.25},
        ...     change={"pass@8": (0.25, 0.0625)},  # with its 95% interval over held-out prompts
        ... )
        >>> cfg = TrainConfig(controller={"prompt": {"mode": "off"}})
        >>> task = load_task("addition:max_digits=2")
        >>> with mock.patch.dict(os.environ, {"TTY_COMPATIBLE": "0"}):  # plain text everywhere
        ...     print_summary(cfg, task, result, wall_s=372.4)  # doctest: +NORMALIZE_WHITESPACE
                      prompt=off rollout=fixed
        ┏━━━━━━━━━━━━━━━━━┳━━━━━━━┳━━━━━━━┳━━━━━━━━━━━━━━━━┓
        ┃ held-out metric ┃ start ┃   end ┃         change ┃
        ┡━━━━━━━━━━━━━━━━━╇━━━━━━━╇━━━━━━━╇━━━━━━━━━━━━━━━━┩
        │ pass@8          │ 0.250 │ 0.500 │ +0.250 ± 0.062 │
        │ pass@8/level2   │ 0.125 │ 0.250 │         +0.125 │
        └─────────────────┴───────┴───────┴────────────────┘
                       addition:max_digits=2
        steps 200/200  wall 372 s  run runs/demo
    """
    mode = cfg.controller
    table = Table(title=f"prompt={mode.prompt.mode} rollout={mode.rollout.mode}", caption=task.spec)
    table.add_column("held-out metric")
    table.add_column("start", justify="right")
    table.add_column("end", justify="right")
    table.add_column("change", justify="right")
    keys = [
        k
        for k in result.eval_start
        if not k.startswith("eval/timing") and not k.startswith("timing")
    ]
    for key in sorted(keys, key=lambda k: ("level" in k, _level_key(k))):
        a = result.eval_start.get(key)
        b = result.eval_end.get(key)
        name = key.removeprefix("eval/")
        change = f"{b - a:+.3f}" if a is not None and b is not None else "-"
        if name in result.change and math.isfinite(result.change[name][1]):
            change += f" ± {result.change[name][1]:.3f}"  # 95% t-interval over prompts
        table.add_row(
            name,
            f"{a:.3f}" if a is not None else "-",
            f"{b:.3f}" if b is not None else "-",
            change,
        )
    console = Console()
    console.print(table)
    console.print(
        f"steps {result.steps_done}/{cfg.steps}  wall {wall_s:.0f} s  run {result.run_dir}"
    )
