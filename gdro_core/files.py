"""Atomic file writes, shared by the controllers' checkpoints and the adapters' run files.

A file is written to a temporary sibling, flushed to disk and moved into place with
``os.replace``, so a crash or an interrupt leaves the old file or the new one, never a truncated
file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> None:
    """Write a file atomically.

    Args:
        path: destination; its parent folders are created.
        write: called with a binary file object open on a temporary file in the same folder.

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> atomic_write(d / "a.bin", lambda fh: fh.write(b"xyz") and None)
        >>> (d / "a.bin").read_bytes(), sorted(p.name for p in d.iterdir())
        (b'xyz', ['a.bin'])
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
            os.fchmod(fh.fileno(), 0o666 & ~_umask())  # mkstemp's 0600 -> what open() would give
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""

    def write(fh: IO[bytes]) -> None:
        fh.write(data)

    atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
