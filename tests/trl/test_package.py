"""The package's import surface and its check of TRL's private methods."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gdro_trl import _compat

ROOT = Path(__file__).resolve().parents[2]


def test_importing_gdro_trl_imports_no_framework() -> None:
    code = (
        "import sys, gdro_trl\n"
        "print(','.join(m for m in ('torch', 'trl', 'transformers') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "adapters"), str(ROOT)])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == ""


def test_a_changed_trl_method_fails_the_import_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(_compat._HOOKED, "_calculate_rewards", ("self", "inputs", "rewards"))
    with pytest.raises(ImportError, match=r"GRPOTrainer._calculate_rewards must take"):
        _compat.check_trl()
    monkeypatch.setitem(_compat._HOOKED, "_gone", ("self",))
    monkeypatch.delitem(_compat._HOOKED, "_calculate_rewards")
    with pytest.raises(ImportError, match="no such method"):
        _compat.check_trl()


def test_an_untested_trl_release_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_compat, "TESTED_TRL", ((0, 1),))
    with pytest.warns(UserWarning, match=r"tested with TRL \(\(0, 1\),\)"):
        _compat.check_trl()
    assert _compat.trl_version()[:2] == (1, 16)
