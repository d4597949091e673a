"""Shared pytest settings and fixtures: a deterministic hypothesis profile for CI and local runs,
and ``gdro_without``, the ``gdro`` command run with some third-party packages missing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci")


ROOT = Path(__file__).resolve().parents[1]

# Runs gdro's main in a fresh interpreter where importing the blocked top-level packages fails as
# if they were not installed.
_WITHOUT = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Block())
from gdro_cli.main import main
raise SystemExit(main({argv!r}))
"""


@pytest.fixture
def gdro_without() -> Callable[[Iterable[str], Sequence[str]], subprocess.CompletedProcess[str]]:
    """``gdro_without(blocked, argv)``: ``gdro argv`` in a subprocess (from the checkout) with the
    top-level packages ``blocked`` unimportable; returns the finished process, output as text."""

    def run(blocked: Iterable[str], argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        code = _WITHOUT.format(blocked=set(blocked), argv=list(argv))
        env = dict(os.environ, PYTHONPATH=f"{ROOT}:{ROOT / 'adapters'}")
        return subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
            env=env,
        )

    return run
