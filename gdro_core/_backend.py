"""Kernel backends: ``"numba"`` (default, compiled) and ``"numpy"`` (the reference twins)."""

from __future__ import annotations

from types import ModuleType
from typing import Literal

from gdro_core._validation import check_choice

Backend = Literal["numba", "numpy"]
BACKENDS: tuple[str, ...] = ("numba", "numpy")


def kernels(backend: str) -> ModuleType:
    """Return the module of kernels for ``backend`` (imported on first use)."""
    check_choice("backend", backend, BACKENDS)
    if backend == "numba":
        from gdro_core import _kernels

        return _kernels
    from gdro_core import _reference

    return _reference
