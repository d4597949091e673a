"""Every public function and class of every gdro package carries an example that doctest runs.

"Public" is what a module exports: each package's ``__all__`` and the ``__all__`` of each of its
modules whose name does not start with an underscore (such a module must declare one, so that
nothing is public by accident). The examples themselves run under ``--doctest-modules`` (the
pytest configuration collects ``gdro_core``, ``gdro_lab``, ``gdro_cli`` and ``adapters``); this
file checks they exist.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType
from typing import Any

import pytest

PACKAGES = ["gdro_core", "gdro_torch", "gdro_verl", "gdro_trl", "gdro_lab", "gdro_cli"]


def _public_modules() -> list[str]:
    names = []
    for pkg in PACKAGES:
        module = importlib.import_module(pkg)
        names.append(pkg)
        names += [
            f"{pkg}.{info.name}"
            for info in pkgutil.iter_modules(module.__path__)
            if not info.name.startswith("_")
        ]
    return names


MODULES = _public_modules()


def _exports(module: ModuleType) -> list[tuple[str, Any]]:
    out = []
    for name in getattr(module, "__all__", []):
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            out.append((f"{obj.__module__}.{obj.__qualname__}", obj))
    return out


def _public_objects() -> list[tuple[str, Any]]:
    seen: dict[str, Any] = {}
    for name in MODULES:
        for qualname, obj in _exports(importlib.import_module(name)):
            seen.setdefault(qualname, obj)
    return sorted(seen.items())


PUBLIC = _public_objects()


@pytest.mark.parametrize("name", MODULES)
def test_public_modules_declare_their_exports(name: str) -> None:
    module = importlib.import_module(name)
    assert isinstance(getattr(module, "__all__", None), list | tuple), f"{name} has no __all__"
    for export in module.__all__:
        assert hasattr(module, export), f"{name}.__all__ names {export!r}, which is missing"


@pytest.mark.parametrize("qualname", [q for q, _ in PUBLIC])
def test_public_names_have_a_doctest_example(qualname: str) -> None:
    obj = dict(PUBLIC)[qualname]
    doc = inspect.getdoc(obj) or ""
    assert "Examples:" in doc and ">>>" in doc, f"{qualname} has no doctest example"


def test_the_public_surface_is_not_empty() -> None:
    # guards the collection above: an import-path mistake must not make every check vacuous
    packages = {q.split(".")[0] for q, _ in PUBLIC}
    assert packages == set(PACKAGES)
    assert len(PUBLIC) > 100
