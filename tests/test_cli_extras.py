"""A subcommand whose third-party packages are missing names the pip extra, not a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def test_help_needs_no_extra(gdro_without: Any) -> None:
    out = gdro_without({"rich", "matplotlib"}, ["simulate", "--help"])
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
                                  tmp_path: Path, gdro_without: Any) -> None:
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    out = gdro_without(blocked, argv)
    assert out.returncode == 2, out.stderr
    assert f"gdro {argv[0]}: error: gdro {argv[0]} needs the '{extra}' extra" in out.stderr
    assert f"(the package {missing!r} is not installed): pip install 'gdro[{extra}]'" in out.stderr
    assert "Traceback" not in out.stderr
