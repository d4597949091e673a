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

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text"]


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> None:
    """Write a file atomically.

    Args:
        path: destination; its parent folders are created.
        write: called with a binary file object open on a temporary file in the same folder.

    Examples:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     d = pathlib.Path(tmp)
        ...     atomic_write(d / "a.bin", lambda fh: fh.write(b"xyz") and None)
        ...     print((d / "a.bin").read_bytes(), sorted(p.name for p in d.iterdir()))
        b'xyz' ['a.bin']

        A failing writer leaves the old file and no temporary file:

        >>> def broken(fh):
        ...     fh.write(b"partial")
        ...     raise OSError("disk full")
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     d = pathlib.Path(tmp)
        ...     atomic_write(d / "a.bin", lambda fh: fh.write(b"old") and None)
        ...     try:
        ...         atomic_write(d / "a.bin", broken)
        ...     except OSError as exc:
        ...         print(exc)
        ...     print((d / "a.bin").read_bytes(), sorted(p.name for p in d.iterdir()))
        disk full
        b'old' ['a.bin']
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
    """Write ``data`` to ``path`` atomically.

    Examples:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp) / "sub" / "x.bin"  # parent folders are created
        ...     atomic_write_bytes(path, bytes([104, 105]))
        ...     print(path.read_bytes())
        b'hi'
    """

    def write(fh: IO[bytes]) -> None:
        fh.write(data)

    atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically.

    Examples:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp) / "note.txt"
        ...     atomic_write_text(path, "first")
        ...     atomic_write_text(path, "pass@k ≥ 0.5")  # replaces the file as a whole
        ...     print(path.read_text(encoding="utf-8"), path.stat().st_size)
        pass@k ≥ 0.5 14
    """
    atomic_write_bytes(path, text.encode("utf-8"))
