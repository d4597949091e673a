"""Run directories and metrics files: the one reader and the one smoothing of the command line.

A run directory holds ``config.json`` (one JSON object) and ``metrics.jsonl`` (one flat JSON
object per line, with an integer ``step``), whether ``gdro train`` or ``gdro simulate`` wrote it.
:func:`read_jsonl` reads metrics files, :func:`load_run` and :func:`load_runs` read run
directories into :class:`Run`, and :func:`smooth` is the moving average every smoothed curve of
``gdro report`` and ``gdro simulate`` is drawn with. Nothing here imports matplotlib.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from gdro_core._validation import check_int

__all__ = [
    "MECHANISM_KEYS",
    "RENAMED_METRICS",
    "Run",
    "find_run_dirs",
    "is_baseline",
    "modes",
    "load_run",
    "load_runs",
    "mean_key",
    "read_jsonl",
    "rollouts_to_target",
    "smooth",
]

#: Metric keys of runs written by the previous release, read under today's names.
RENAMED_METRICS: dict[str, str] = {
    "rollout/budget_target": "rollout/mean",
    "rollout/budget_unconstrained": "rollout/mean_proposed",
    "rollout/budget_realized": "rollout/mean_realized",
}

#: The controllers' mechanism metrics (``GDROController.metrics()``), with a short label each.
MECHANISM_KEYS: dict[str, str] = {
    "mechanism/budget_moved": "rollout budget moved vs uniform",
    "mechanism/q_tv": "TV distance of q from uniform",
    "mechanism/weight_max_ratio": "largest weight / mean weight",
    "mechanism/weight_p90_ratio": "p90 weight / mean weight",
    "mechanism/zero_adv_share": "groups with zero advantage",
    "mechanism/always_solved_share": "batch in always-solved prompts",
    "mechanism/always_failed_share": "batch in always-failed prompts",
    "mechanism/visits_mean": "visits per training prompt",
}


def smooth(values: ArrayLike, window: int) -> NDArray[np.float64]:
    """Trailing mean over the last ``window`` finite values, the same length as ``values``.

    Position ``i`` of the result is the mean of the finite values among ``values[: i + 1]``,
    the last ``window`` of them (fewer at the start of the series, where the mean runs over what
    there is so far). A position whose value is not finite (NaN, a step that did not log the
    metric) stays NaN, so the result lines up with the steps of ``values`` and a plot of it
    against them is not shifted.

    Args:
        values: float (T,), a metric over steps, NaN where a step has no value.
        window: how many finite values each mean runs over (1 returns the finite values as they
            are).

    Returns:
        float64 (T,), the smoothed series, NaN exactly where ``values`` is not finite.

    Raises:
        ValueError: If ``window`` is below 1, or ``values`` is not one-dimensional.
        TypeError: If ``window`` is not an integer.

    Examples:
        >>> smooth([1.0, 2.0, 3.0, 4.0, 5.0], 2)
        array([1. , 1.5, 2.5, 3.5, 4.5])

        A missing value is skipped: the mean at step 3 runs over steps 1 and 3.

        >>> smooth([0.0, 2.0, float("nan"), 4.0], 2)
        array([ 0.,  1., nan,  3.])
        >>> smooth([], 10).shape
        (0,)
        >>> smooth([1.0], 0)
        Traceback (most recent call last):
            ...
        ValueError: window must be an integer >= 1; got 0
    """
    window = check_int("window", window, lo=1)
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"values must be one-dimensional; got shape {x.shape}")
    out = np.full(x.shape, np.nan)
    finite = np.isfinite(x)
    kept = x[finite]
    if kept.size:
        sums = np.convolve(kept, np.ones(min(window, kept.size)))[: kept.size]
        counts = np.minimum(np.arange(1, kept.size + 1), window)
        out[finite] = sums / counts
    return out


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, in file order.

    Lines that are not a JSON object are skipped: a torn last line of a run that is still
    writing, a blank line. A file that does not exist (a run that has not started) has no rows.

    Args:
        path: the file, e.g. a run directory's ``metrics.jsonl``.

    Returns:
        One dict per line that holds a JSON object.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = Path(d) / "metrics.jsonl"
        ...     _ = path.write_text('{"step": 0, "loss": 1.5}\\n[1, 2]\\n\\n{"step": 1, "lo')
        ...     print(read_jsonl(path), read_jsonl(Path(d) / "missing.jsonl"))
        [{'step': 0, 'loss': 1.5}] []
    """
    p = Path(path)
    rows = []
    if p.exists():
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line, or a blank one
            if isinstance(obj, dict):
                rows.append(obj)
    return rows


def mean_key(rows: list[dict[str, Any]]) -> str:
    """The overall held-out mean@n key logged in ``rows`` (``eval/mean@8`` if none).

    ``n`` is the run's samples per held-out prompt (``--eval-samples``).

    Examples:
        >>> mean_key([{"step": 0, "eval/mean@16": 0.5, "eval/mean@16/level1": 0.9}])
        'eval/mean@16'
        >>> mean_key([{"step": 1, "train/reward_mean": 0.3}])  # no evaluation logged
        'eval/mean@8'
    """
    for r in rows:
        for k in r:
            if re.fullmatch(r"eval/mean@\d+", k):
                return k
    return "eval/mean@8"


def rollouts_to_target(
    rows: list[dict[str, Any]], target: float, key: str
) -> tuple[float, float, float] | None:
    """When a run first reached a held-out score: step, rollouts and generated tokens so far.

    The evaluations (rows with ``key``) are taken in step order; the first one at or above
    ``target`` is the crossing, and the step, rollouts and tokens are interpolated linearly
    between it and the evaluation before it (the run's score is taken to move linearly between
    evaluations). Rollouts and tokens are the sums of the per-step ``train/rollouts`` and
    ``train/tokens`` up to a step.

    Args:
        rows: The run's ``metrics.jsonl`` rows.
        target: The held-out score to reach (e.g. the GRPO baseline's final ``eval/mean@16``).
        key: The held-out metric (e.g. ``eval/mean@16``).

    Returns:
        ``(step, rollouts, tokens)`` (tokens NaN when the run did not log them), or None if
        no evaluation reached ``target``.

    Examples:
        Evaluated at steps 0, 2 and 4 (0.4, 0.5, 0.7), 10 rollouts and 30 tokens a step: 0.6 is
        half way from step 2 to step 4:

        >>> rows = [{"step": 0, "eval/mean@16": 0.4}]
        >>> rows += [{"step": s, "train/rollouts": 10.0, "train/tokens": 30.0} for s in (1, 2)]
        >>> rows[-1]["eval/mean@16"] = 0.5
        >>> rows += [{"step": s, "train/rollouts": 10.0, "train/tokens": 30.0} for s in (3, 4)]
        >>> rows[-1]["eval/mean@16"] = 0.7
        >>> rollouts_to_target(rows, 0.6, "eval/mean@16")
        (3.0, 30.0, 90.0)
        >>> rollouts_to_target(rows, 0.4, "eval/mean@16")  # already there at the start
        (0.0, 0.0, 0.0)
        >>> print(rollouts_to_target(rows, 0.8, "eval/mean@16"))
        None
    """
    rollouts = tokens = 0.0
    points: list[tuple[float, float, float, float]] = []  # (step, score, rollouts, tokens)
    for r in sorted(rows, key=lambda r: int(r.get("step", 0))):
        if isinstance(r.get("train/rollouts"), (int, float)):  # a training step
            rollouts += float(r["train/rollouts"])
            spent = r.get("train/tokens")
            tokens += float(spent) if isinstance(spent, (int, float)) else math.nan
        value = r.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            points.append((float(r.get("step", 0)), float(value), rollouts, tokens))
    previous = None
    for point in points:
        if point[1] >= target:
            if previous is None or point[1] == previous[1]:
                return point[0], point[2], point[3]
            frac = (target - previous[1]) / (point[1] - previous[1])
            step, _, roll, tok = (a + frac * (b - a) for a, b in zip(previous, point, strict=True))
            return step, roll, tok
        previous = point
    return None


def modes(config: dict[str, Any]) -> tuple[str, str]:
    """A run's Prompt-GDRO and Rollout-GDRO modes, from its ``config.json`` (the controller's
    settings, or the flat ``prompt``/``rollout`` of a run written by the previous release).

    Examples:
        >>> modes({"controller": {"prompt": {"mode": "off"}, "rollout": {"mode": "neyman"}}})
        ('off', 'neyman')
        >>> modes({"prompt": "reweight", "rollout": "fixed"}), modes({})
        (('reweight', 'fixed'), ('-', '-'))
    """
    ctl = config.get("controller")
    if isinstance(ctl, dict):
        p, r = ctl.get("prompt", {}), ctl.get("rollout", {})
        return str(p.get("mode", "-")), str(r.get("mode", "-"))
    return str(config.get("prompt", "-")), str(config.get("rollout", "-"))


def is_baseline(config: dict[str, Any]) -> bool:
    """True for a GRPO baseline run: uniform prompts, fixed rollouts, the controller's sampler.

    Examples:
        >>> is_baseline({"controller": {"prompt": {"mode": "off"}, "rollout": {"mode": "fixed"}}})
        True
        >>> is_baseline({"prompt": "off", "rollout": "fixed"})  # a run of the previous release
        True
        >>> is_baseline({"prompt": "off", "rollout": "fixed", "sampler": "variance"})
        False
        >>> is_baseline({"prompt": "reweight", "rollout": "fixed"})
        False
    """
    return modes(config) == ("off", "fixed") and config.get("sampler", "controller") == "controller"


@dataclass
class Run:
    """A run directory's contents.

    Attributes:
        path: The directory.
        name: A short label (the directory name, made unique).
        config: ``config.json``.
        rows: ``metrics.jsonl``, one dict per line, in file order.

    Examples:
        Two bins; bin 1 is absent from the share at step 2:

        >>> run = Run(Path("runs/demo"), "demo", {}, [
        ...     {"step": 1, "classifier/share/0": 0.25, "classifier/share/1": 0.75, "loss": 0.9},
        ...     {"step": 2, "classifier/share/0": 1.0, "loss": float("nan")},
        ...     {"step": 3, "loss": 0.5},
        ... ])
        >>> run.num_bins  # no num_bins in the config: inferred from the keys
        2
        >>> run.series("loss")  # only the finite values
        (array([1., 3.]), array([0.9, 0.5]))
        >>> steps, share = run.matrix("classifier/share/")
        >>> steps, share
        (array([1., 2.]), array([[0.25, 0.75],
               [1.  ,  nan]]))
        >>> print(run.matrix("prompt/q/"))
        None
        >>> run.mean_key  # no held-out mean logged: the 8-sample name
        'eval/mean@8'
        >>> Run(Path("runs/x"), "x", {}, [{"step": 0, "eval/mean@16": 0.5}]).mean_key
        'eval/mean@16'
    """

    path: Path
    name: str
    config: dict[str, Any]
    rows: list[dict[str, Any]]

    @property
    def num_bins(self) -> int:
        """B from the config, else inferred from the ``.../{b}`` keys."""
        if isinstance(self.config.get("num_bins"), int):
            return int(self.config["num_bins"])
        found = [
            int(m.group(1))
            for r in self.rows
            for k in r
            if (m := re.match(r"(?:classifier/share|prompt/q|rollout/n_mean)/(\d+)$", k))
        ]
        return max(found) + 1 if found else 0

    @property
    def mean_key(self) -> str:
        """The overall held-out mean@n key the run logged (see :func:`mean_key`)."""
        return mean_key(self.rows)

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of the rows that have a finite ``key``."""
        pts = [
            (r["step"], r[key])
            for r in self.rows
            if isinstance(r.get(key), (int, float)) and math.isfinite(r[key]) and "step" in r
        ]
        if not pts:
            return np.zeros(0), np.zeros(0)
        steps, values = zip(*pts, strict=True)
        return np.asarray(steps, dtype=float), np.asarray(values, dtype=float)

    def matrix(self, prefix: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(steps, float (T, B)) of ``prefix{b}``, NaN where a bin is absent; None if no data."""
        rows = [r for r in self.rows if any(k.startswith(prefix) for k in r)]
        if not rows or self.num_bins == 0:
            return None
        mat = np.full((len(rows), self.num_bins), np.nan)
        for t, r in enumerate(rows):
            for b in range(self.num_bins):
                v = r.get(f"{prefix}{b}")
                if isinstance(v, (int, float)) and math.isfinite(v):
                    mat[t, b] = v
        return np.asarray([r.get("step", t) for t, r in enumerate(rows)], dtype=float), mat


def load_run(path: str | os.PathLike[str], name: str | None = None) -> Run:
    """Read a run directory.

    Args:
        path: The directory holding ``config.json`` and ``metrics.jsonl``.
        name: The run's label (default: the directory name).

    Returns:
        The run; lines of ``metrics.jsonl`` that are not JSON objects (a torn last line of a run
        still writing) are skipped.

    Raises:
        ValueError: If it has no ``config.json`` or ``metrics.jsonl``, or the config is not a JSON
            object.

    Examples:
        >>> import json, tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> run_dir = Path(tmp.name) / "grpo-s0"
        >>> run_dir.mkdir()
        >>> _ = (run_dir / "config.json").write_text('{"kind": "train", "num_bins": 4}')
        >>> _ = (run_dir / "metrics.jsonl").write_text(
        ...     '{"step": 1, "train/reward_mean": 0.25}\\n{"step": 2, "train/rew'
        ... )
        >>> run = load_run(run_dir)
        >>> run.name, run.config["kind"], run.num_bins, run.rows
        ('grpo-s0', 'train', 4, [{'step': 1, 'train/reward_mean': 0.25}])
        >>> load_run(tmp.name)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: ... is not a run directory: no config.json
        >>> tmp.cleanup()
    """
    p = Path(path)
    if not (p / "config.json").is_file():
        raise ValueError(f"{p} is not a run directory: no config.json")
    if not (p / "metrics.jsonl").is_file():
        raise ValueError(f"{p} is not a run directory: no metrics.jsonl")
    try:
        config = json.loads((p / "config.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p / 'config.json'}: not valid JSON ({exc.msg})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{p / 'config.json'}: expected a JSON object")
    rows = [
        {RENAMED_METRICS.get(k, k): v for k, v in row.items()}
        for row in read_jsonl(p / "metrics.jsonl")
    ]
    return Run(p, name or p.name, config, rows)


def find_run_dirs(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Run directories among ``paths``, a folder of runs standing for the runs in it.

    A path holding ``config.json`` is a run directory; a folder without one is searched one and
    two levels down (``DIR/*`` and ``DIR/runs/*``, as ``gdro simulate`` writes them), its runs in
    name order. Anything else is kept as given, for :func:`load_run` to reject by name.

    Args:
        paths: run directories or folders of them.

    Returns:
        The run directories, in the order given.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     for name in ("sim/runs/b-s0", "sim/runs/a-s0", "train-a"):
        ...         (Path(d) / name).mkdir(parents=True)
        ...         _ = (Path(d) / name / "config.json").write_text("{}")
        ...     found = find_run_dirs([Path(d) / "train-a", Path(d) / "sim", Path(d) / "nope"])
        ...     print([p.relative_to(d).as_posix() for p in found])
        ['train-a', 'sim/runs/a-s0', 'sim/runs/b-s0', 'nope']
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / "config.json").is_file() or not p.is_dir():
            out.append(p)
            continue
        found = sorted({c.parent for c in [*p.glob("*/config.json"), *p.glob("*/*/config.json")]})
        out.extend(found or [p])
    return out


def load_runs(paths: Sequence[str | os.PathLike[str]]) -> list[Run]:
    """Read the run directories among ``paths`` (:func:`find_run_dirs`), each with its own label.

    A run is labelled with its directory name; a name already taken gets ``-2``, ``-3``, ...

    Args:
        paths: run directories or folders of them.

    Returns:
        The runs, in the order :func:`find_run_dirs` gives.

    Raises:
        ValueError: If ``paths`` holds no run, or a path is not a run directory.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     for name in ("a/grpo-s0", "b/grpo-s0"):
        ...         (Path(d) / name).mkdir(parents=True)
        ...         _ = (Path(d) / name / "config.json").write_text("{}")
        ...         _ = (Path(d) / name / "metrics.jsonl").write_text('{"step": 0}\\n')
        ...     print([r.name for r in load_runs([Path(d) / "a", Path(d) / "b"])])
        ['grpo-s0', 'grpo-s0-2']
        >>> load_runs([])
        Traceback (most recent call last):
            ...
        ValueError: paths must be at least one run directory; got []
    """
    dirs = find_run_dirs(paths)
    if not dirs:
        raise ValueError(f"paths must be at least one run directory; got {list(paths)!r}")
    runs = [load_run(p) for p in dirs]
    seen: dict[str, int] = {}
    for r in runs:
        seen[r.name] = seen.get(r.name, 0) + 1
        if seen[r.name] > 1:
            r.name = f"{r.name}-{seen[r.name]}"
    return runs
