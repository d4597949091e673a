"""``gdro train``'s command line: flags generated from the core's configs, presets as whole
configs, ``--help`` showing what will run, the previous release's flags for one release."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io

import pytest

from gdro_cli import flags
from gdro_cli.main import main
from gdro_cli.train import add_arguments, config_from_args
from gdro_core import ClassifierConfig, PromptConfig, RolloutConfig
from gdro_torch.config import PRESETS, TrainConfig


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gdro train")
    add_arguments(parser, argv=argv)
    return parser.parse_args(argv)


def _help(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main(["train", *argv, "--help"])
    return " ".join(out.getvalue().split())  # argparse wraps long lines


def test_every_core_setting_has_a_flag() -> None:
    names = {f.name for f in flags.flags()}
    for section, cls in (("classifier", ClassifierConfig), ("prompt", PromptConfig), ("rollout", RolloutConfig)):
        for field in dataclasses.fields(cls):
            assert f"{section}.{field.name}" in names
    text = _help([])
    for name in names:
        assert f"--{name} " in text, name


@pytest.mark.parametrize("preset", [None, "smoke", "gpu"])
def test_help_shows_the_values_the_preset_runs(preset: str | None) -> None:
    cfg = PRESETS[preset or "default"]
    text = _help([] if preset is None else ["--preset", preset])
    assert f"Prompts per step N [{cfg.batch_size}]" in text
    assert f"[{cfg.controller.rollout.mean}]" in text.rsplit("--rollout.mean MEAN", 1)[1][:300]
    assert f"[{cfg.controller.prompt.signal}]" in text.rsplit("--prompt.signal SIGNAL", 1)[1][:400]
    assert f"learning rate of the GRPO phase [{cfg.lr}]" in text


def test_a_bare_run_is_the_default_preset_and_flags_change_it() -> None:
    assert config_from_args(_parse([])) == PRESETS["default"]
    cfg = config_from_args(_parse(["--rollout.mode", "neyman", "--classifier.outcome", "any",
                                   "--batch-size", "16"]))
    assert cfg.batch_size == 16 and cfg.controller.rollout.mode == "neyman"
    assert cfg.controller.classifier.window == 100  # the outcome's own default, derived again
    assert cfg.controller.rollout.mean == 8 and cfg.lr == PRESETS["default"].lr  # the preset's
    cfg = config_from_args(_parse(["--preset", "smoke", "--recipe", "reward", "--rollout.mode", "bandit"]))
    assert (cfg.controller.rollout.arm_signal, cfg.controller.rollout.arm_eta) == ("variance", 1000.0)
    with pytest.raises(ValueError, match=r"^controller\.rollout: RolloutConfig\.min must be an integer in \[2, 4096\]; got 1$"):
        config_from_args(_parse(["--rollout.min", "1"]))


def test_the_previous_flags_still_work_for_one_release(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config_from_args(_parse(["--preset", "smoke", "--rollout-mean", "6", "--prompt", "off",
                                   "--rollout", "bandit", "--signal", "variance", "--pass-k", "2"]))
    err = capsys.readouterr().err
    assert "--rollout-mean is deprecated (gone next release): use --rollout.mean" in err
    c = cfg.controller
    assert (c.rollout.mean, c.prompt.mode, c.rollout.mode, c.prompt.signal) == (6, "off", "bandit", "variance")
    assert (c.classifier.outcome, c.classifier.k) == ("pass@k", 2)
    assert c.rollout.arm_eta == 1000.0  # --signal variance chose the reward recipe, as it did
    with pytest.raises(ValueError, match="--rollout-mean and --rollout.mean were both given"):
        config_from_args(_parse(["--rollout-mean", "6", "--rollout.mean", "4"]))


def test_a_config_of_the_previous_release_resumes_with_its_controller() -> None:
    old = {"prompt": "off", "rollout": "neyman", "rollout_mean": 8, "rollout_max": 16, "signal": "variance",
           "num_bins": 10, "window": 100, "hysteresis": None, "pass_k": None, "batch_size": 32}
    cfg = TrainConfig.from_dict(old)
    c = cfg.controller
    assert (c.classifier.outcome, c.classifier.window, c.rollout.mode, c.rollout.max) == ("any", 100, "neyman", 16)
    assert c.rollout.arm_eta == 0.65  # no recipe: exactly the RolloutConfig that release built
