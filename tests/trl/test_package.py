"""The package's import surface and its check of TRL's private methods."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from trl import GRPOTrainer

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


def test_a_trainer_without_the_private_attributes_fails_the_check(make_trainer: Any) -> None:
    trainer, _ = make_trainer({"prompt": {"mode": "reweight"}})
    _compat.check_trainer(trainer)  # TRL 1.16 has them all
    del trainer._buffered_inputs  # as if TRL renamed it
    with pytest.raises(
        RuntimeError, match=r"the trainer built with TRL 1\.16\.\d+ lacks \['_buffered_inputs'\]"
    ):
        _compat.check_trainer(trainer)
    trainer._buffered_inputs = None
    del trainer._logs["advantages"]
    with pytest.raises(RuntimeError, match=r"lacks \[\"_logs\['advantages'\]\"\]"):
        _compat.check_trainer(trainer)


class RenamedZeroStdMetric(GRPOTrainer):  # type: ignore[misc]
    """TRL as if it had renamed ``frac_reward_zero_std``."""

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output: dict[str, Any] = super()._generate_and_score_completions(inputs)
        metrics = self._metrics["train"]
        metrics["frac_zero_std"] = metrics.pop("frac_reward_zero_std")
        return output


def test_a_renamed_zero_std_metric_stops_training(make_trainer: Any) -> None:
    from gdro_trl import GDROMixin

    cls = type("GDRORenamed", (GDROMixin, RenamedZeroStdMetric), {})
    trainer, rec = make_trainer({"prompt": {"mode": "reweight"}}, trainer_cls=cls, max_steps=2)
    with pytest.raises(RuntimeError, match="must log 'frac_reward_zero_std'"):
        trainer.train()
    assert trainer.gdro.controller.step == 0  # nothing fed back
