"""The run directory: config, per-step metrics, TensorBoard events and checkpoints.

Layout (shared with ``gdro simulate``, read by ``gdro report``)::

    RUN_DIR/
      config.json          # {"kind": "train", "num_bins": B, ...}
      metrics.jsonl        # one JSON object per step: {"step": s, "<key>": float, ...}
      tb/                  # TensorBoard event files
      init_model/          # the starting policy (after SFT), the KL reference on resume
      checkpoints/step-000050/{trainer.pt, controller.npz}
      checkpoints/latest   # name of the newest complete checkpoint
      model/               # the final policy (transformers format)

Every file is written atomically (temp file + ``os.replace``); a checkpoint directory is
complete before ``latest`` names it, so a crash never leaves a half-written checkpoint in use.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gdro_core.files import atomic_write_text

__all__ = ["RunDir", "atomic_write_text", "read_metrics"]


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a ``metrics.jsonl``; a torn last line (a crash mid-write) is ignored.

    Returns:
        One dict per readable line, in file order; an empty list if the file does not exist.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = Path(tmp, "metrics.jsonl")
        ...     _ = path.write_text('{"step": 1, "loss": 0.5}\\n{"step": 2, "loss": 0.4}\\n{"st')
        ...     rows = read_metrics(path)
        >>> rows
        [{'step': 1, 'loss': 0.5}, {'step': 2, 'loss': 0.4}]
        >>> read_metrics("no/such/metrics.jsonl")
        []
    """
    rows: list[dict[str, Any]] = []
    p = Path(path)
    if not p.exists():
        return rows
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key == "step":
            out[key] = int(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
            out[key] = value if math.isfinite(value) else None
        else:
            out[key] = value
    return out


class RunDir:
    """A run directory (see the module docstring for the layout).

    Args:
        path: The directory.

    Examples:
        Config, metrics and checkpoints of a run (only the last ``keep=2`` checkpoints stay):

        >>> import tempfile
        >>> from gdro_core import GDROController
        >>> tmp = tempfile.TemporaryDirectory()
        >>> rd = RunDir(Path(tmp.name, "run"))
        >>> rd.path.mkdir()
        >>> rd.write_config({"kind": "train", "num_bins": 10})
        >>> rd.read_config()
        {'kind': 'train', 'num_bins': 10}
        >>> for step in (1, 2, 3):
        ...     rd.append_metrics({"step": step, "train/loss": 1 / step, "train/kl": float("nan")})
        >>> read_metrics(rd.metrics_path)[0]  # non-finite values are written as null
        {'step': 1, 'train/kl': None, 'train/loss': 1.0}
        >>> rd.truncate_metrics(2)  # what a resume from step 2 does
        >>> [row["step"] for row in read_metrics(rd.metrics_path)]
        [1, 2]
        >>> ctl = GDROController(num_prompts=4)
        >>> for step in (1, 2, 3):
        ...     _ = rd.save_checkpoint(step, {"step": step}, ctl)
        >>> rd.latest_checkpoint().name, [p.name for p in rd.iter_checkpoints()]
        ('step-000003', ['step-000002', 'step-000003'])
        >>> sorted(p.name for p in rd.latest_checkpoint().iterdir())
        ['controller.npz', 'trainer.pt']
        >>> RunDir(tmp.name).read_config()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: ... is not a run directory: no config.json
        >>> tmp.cleanup()
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._writer: Any = None

    # -- config --------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    def write_config(self, config: dict[str, Any]) -> None:
        """Write ``config.json`` atomically."""
        atomic_write_text(self.config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")

    def read_config(self) -> dict[str, Any]:
        """Read ``config.json``.

        Raises:
            ValueError: If it is missing or not a JSON object.
        """
        if not self.config_path.is_file():
            raise ValueError(f"{self.path} is not a run directory: no config.json")
        try:
            data = json.loads(self.config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{self.config_path}: not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{self.config_path}: expected a JSON object")
        return data

    # -- metrics -------------------------------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def append_metrics(self, row: dict[str, Any]) -> None:
        """Append one step's metrics (``step`` plus flat floats) to ``metrics.jsonl``, TensorBoard.

        Non-finite floats are written as ``null``.
        """
        row = _clean(row)
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
            f.flush()
        if self._writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, float):
                    self._writer.add_scalar(key, value, row["step"])
            self._writer.flush()

    def truncate_metrics(self, last_step: int) -> None:
        """Keep only the rows with ``step <= last_step`` (used on resume), atomically."""
        rows = [r for r in read_metrics(self.metrics_path) if int(r["step"]) <= last_step]
        atomic_write_text(
            self.metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        )

    def open_tensorboard(self, purge_step: int | None = None) -> None:
        """Start writing TensorBoard events under ``tb/`` (dropping events after ``purge_step``)."""
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(self.path / "tb"), purge_step=purge_step)

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # -- checkpoints ---------------------------------------------------------------------------
    @property
    def checkpoint_root(self) -> Path:
        return self.path / "checkpoints"

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint directory, or None."""
        pointer = self.checkpoint_root / "latest"
        if not pointer.is_file():
            return None
        target = self.checkpoint_root / pointer.read_text(encoding="utf-8").strip()
        return target if target.is_dir() else None

    def save_checkpoint(
        self, step: int, trainer_state: dict[str, Any], controller: Any, keep: int = 2
    ) -> Path:
        """Write ``trainer.pt`` and ``controller.npz`` to a new checkpoint; point ``latest`` at it.

        Args:
            step: Completed updates.
            trainer_state: Model, optimizer and RNG state (anything ``torch.save`` takes).
            controller: The ``GDROController`` (saved with its own ``save``).
            keep: Number of checkpoints kept; older ones are deleted.

        Returns:
            The checkpoint directory.
        """
        import torch

        root = self.checkpoint_root
        root.mkdir(parents=True, exist_ok=True)
        name = f"step-{step:06d}"
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
        try:
            torch.save(trainer_state, tmp / "trainer.pt")
            controller.save(tmp / "controller.npz")
            final = root / name
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        atomic_write_text(root / "latest", name + "\n")
        for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def iter_checkpoints(self) -> Iterator[Path]:
        """Checkpoint directories, oldest first."""
        yield from sorted(p for p in self.checkpoint_root.glob("step-*") if p.is_dir())
