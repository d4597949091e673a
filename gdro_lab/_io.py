"""Atomic file writes for the lab's outputs (JSON, JSON lines, Markdown).

Every file is written to a temporary sibling and moved into place with :func:`os.replace`, so a
crash or an interrupt never leaves a truncated file behind.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gdro_core.files import atomic_write_text

__all__ = ["write_json", "write_jsonl", "write_text"]


def _clean(value: Any) -> Any:
    """Turn numpy scalars into Python numbers and non-finite floats into ``None`` (valid JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "tolist"):
        return _clean(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write_text(path, text)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (non-finite floats become ``null``)."""
    write_text(path, json.dumps(_clean(obj), indent=2, sort_keys=False) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write one JSON object per line atomically."""
    text = "".join(json.dumps(_clean(row), allow_nan=False) + "\n" for row in rows)
    write_text(path, text)
