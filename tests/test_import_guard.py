"""Importing gdro_core must not import any training framework."""

import subprocess
import sys


def test_gdro_core_imports_no_framework() -> None:
    code = (
        "import sys, gdro_core\n"
        "ctl = gdro_core.GDROController(10, prompt=gdro_core.PromptConfig(signal='failure'), seed=0)\n"
        "ctl.update(ctl.plan(ctl.sample(2)), [1.0] * 8)\n"
        "bad = sorted(m for m in ('torch', 'verl', 'transformers', 'ray', 'vllm', 'tensorflow', 'jax')"
        " if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_import_compiles_nothing() -> None:
    code = "import sys, gdro_core\nprint('gdro_core._kernels' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
