"""The classifier measurement of docs/classifier.md runs end to end, and its replay agrees with
the core: every rule the core implements gives the core's own rates and bins."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_quick_measurement_replays_the_core(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("classifier_outcomes", ROOT / "benchmarks" / "classifier_outcomes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["classifier_outcomes"] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["classifier_outcomes"]
    module.main(["--quick", "--out", str(tmp_path), "--record-dir", str(tmp_path)])
    report = json.loads((tmp_path / "classifier_outcomes.json").read_text())
    task = report["tasks"][0]
    assert task["rules_checked_against_core"] == 9  # any, pass@2, k=1 and the pooled rate at 6 windows
    text = (tmp_path / "classifier_outcomes.md").read_text()
    assert "any-correct" in text and "pooled" in text
