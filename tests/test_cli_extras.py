"""A subcommand whose third-party packages are missing names the pip extra, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BLOCK = """
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


def test_help_needs_no_extra() -> None:
    code = BLOCK.format(blocked={"rich", "matplotlib"}, argv=["simulate", "--help"])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=300, env=dict(os.environ, PYTHONPATH=f"{ROOT}:{ROOT / 'adapters'}"))
    assert out.returncode == 0 and "usage: gdro simulate" in out.stdout


@pytest.mark.parametrize(
    ("argv", "blocked", "extra", "missing"),
    [
        (["simulate", "--preset", "smoke", "--out", "OUT"], ["rich", "matplotlib"], "cli", "rich"),
        (["report", "runs/x"], ["matplotlib"], "cli", "matplotlib"),
        (["train", "--preset", "smoke"], ["torch"], "torch", "torch"),
    ],
)
def test_a_missing_extra_is_named(argv: list[str], blocked: list[str], extra: str, missing: str,
                                  tmp_path: Path) -> None:
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    code = BLOCK.format(blocked=set(blocked), argv=argv)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=300, env=dict(os.environ, PYTHONPATH=f"{ROOT}:{ROOT / 'adapters'}"))
    assert out.returncode == 2, out.stderr
    assert f"gdro {argv[0]}: error: gdro {argv[0]} needs the '{extra}' extra" in out.stderr
    assert f"(the package {missing!r} is not installed): pip install 'gdro[{extra}]'" in out.stderr
    assert "Traceback" not in out.stderr
