"""The layering of the simulator and the command line.

``gdro_lab`` is the simulator: numpy models, strategies, runs and their summaries, with no
terminal output, plotting or argument parsing. ``gdro_cli`` sits above it: ``gdro simulate``
(:mod:`gdro_cli.simulate`), the figures (:mod:`gdro_cli.figures`) and ``gdro report``
(:mod:`gdro_cli.report`) share one reader of run directories and one smoothing
(:mod:`gdro_cli.runs`).
"""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import gdro_cli
import gdro_lab

LAB = Path(gdro_lab.__file__).parent
CLI = Path(gdro_cli.__file__).parent
LAB_MODULES = sorted(f"gdro_lab.{m.name}" for m in pkgutil.iter_modules([str(LAB)]))


def _imported(module: str) -> set[str]:
    """Top-level packages in ``sys.modules`` after importing ``module`` in a fresh interpreter."""
    code = (
        f"import sys, {module}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def _imports_in(path: Path) -> set[str]:
    """Every module a source file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_importing_every_lab_module_imports_no_front_end() -> None:
    assert len(LAB_MODULES) >= 9  # the walk found the package
    loaded = _imported(", ".join(["gdro_lab", *LAB_MODULES]))
    assert "gdro_lab" in loaded and "numpy" in loaded
    assert not loaded & {"rich", "matplotlib", "torch", "gdro_cli"}


@pytest.mark.parametrize("path", sorted(LAB.glob("*.py")), ids=lambda p: p.name)
def test_the_lab_source_never_reaches_for_the_front_end(path: Path) -> None:
    # lazy imports inside functions count too: the simulator draws, prints and parses nothing
    roots = {name.split(".")[0] for name in _imports_in(path)}
    assert not roots & {"rich", "matplotlib", "argparse", "gdro_cli", "torch"}


@pytest.mark.parametrize(
    "module", ["gdro_cli.runs", "gdro_cli.figures", "gdro_cli.simulate", "gdro_cli.report"]
)
def test_the_commands_import_their_heavy_packages_only_when_they_run(module: str) -> None:
    # `gdro simulate --help` and `gdro report --help` import these modules: no plotting stack
    # and no terminal UI until a figure is drawn or a simulation runs
    assert not _imported(module) & {"matplotlib", "rich", "torch"}


def test_the_front_end_modules_left_the_simulator() -> None:
    for gone in ("gdro_lab.cli", "gdro_lab.lab", "gdro_lab.plots"):
        assert importlib.util.find_spec(gone) is None, gone
    from gdro_cli import simulate

    assert callable(simulate.add_arguments) and callable(simulate.run)


def test_one_smoothing_and_one_metrics_reader() -> None:
    # every moving average and every JSON-lines reader of gdro_lab and gdro_cli is in runs.py
    smoothers, readers = set(), set()
    for path in [*LAB.glob("*.py"), *CLI.glob("*.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and "smooth" in node.name.lower():
                smoothers.add(f"{path.name}:{node.name}")
            if isinstance(node, ast.FunctionDef) and "jsonl" in node.name.lower():
                readers.add(f"{path.name}:{node.name}")
    assert smoothers == {"runs.py:smooth"}
    assert {r for r in readers if not r.split(":")[1].startswith("write")} == {"runs.py:read_jsonl"}
