"""examples/verl: the Hydra config composes over verl's own and passes verl's and gdro's checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "verl"


@pytest.mark.parametrize("mode", ["prompt", "rollout", "both", "off"])
def test_example_config_builds_a_gdro_run(h: Any, tmp_path: Path, mode: str) -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    train = h.write_parquet(tmp_path / "train.parquet", 300, "train")
    val = h.write_parquet(tmp_path / "test.parquet", 8, "test")
    with initialize_config_dir(config_dir=str(EXAMPLES), version_base=None):
        cfg = compose(
            config_name="gdro_grpo",
            overrides=[
                f"gdro={mode}",
                f"data.train_files={train}",
                f"data.val_files={val}",
                "data.filter_overlong_prompts=false",
            ],
        )
    # what verl's main_ppo checks before starting Ray
    validate_config(
        cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg)
    )
    with open_dict(cfg):
        train_ds, _ = h.build_datasets(cfg)
    rt = train_ds.runtime
    expected = {
        "prompt": ("reweight", "fixed"),
        "rollout": ("off", "bandit"),
        "both": ("reweight", "bandit"),
        "off": ("off", "fixed"),
    }[mode]
    assert (rt.settings.prompt.mode, rt.settings.rollout.mode) == expected
    batch = next(iter(h.build_loader(cfg, train_ds)))
    assert np.asarray(batch["__rollout_n__"]).sum() == 256 * 4


def test_launch_script_modes_match_the_config_group() -> None:
    script = (EXAMPLES / "run_gdro_grpo.sh").read_text()
    modes = {p.stem for p in (EXAMPLES / "gdro").glob("*.yaml")}
    assert modes == {"prompt", "rollout", "both", "off"}
    assert "prompt|rollout|both|off)" in script
    assert "--config-name=gdro_grpo" in script


def _launch(tmp_path: Path, trainer: str, *args: str) -> list[str]:
    """Run run_gdro_grpo.sh with a stand-in ``python3`` on PATH that records the command line it
    would start the (GPU) trainer with."""
    import os
    import subprocess

    bin_dir, data = tmp_path / "bin", tmp_path / "data"
    bin_dir.mkdir(exist_ok=True)
    data.mkdir(exist_ok=True)
    (data / "train.parquet").write_text("")
    record = tmp_path / f"argv-{trainer}.txt"
    stub = bin_dir / "python3"
    stub.write_text(
        f'#!/bin/sh\nif [ "$1" = "-c" ]; then exit 0; fi\nprintf "%s\\n" "$@" > {record}\n'
    )
    stub.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "N_GPUS": "2",
        "DATA_DIR": str(data),
        "TRAINER": trainer,
    }
    subprocess.run(
        ["bash", str(EXAMPLES / "run_gdro_grpo.sh"), "rollout", *args], env=env, check=True
    )
    return record.read_text().splitlines()


def test_launch_script_builds_one_trainer_command(tmp_path: Path) -> None:
    """Under ``set -u`` with no extra trainer arguments (V1) and with them (V0); every override
    appears once; extra overrides are passed through."""
    v1 = _launch(tmp_path, "v1")
    assert v1[:2] == ["-m", "verl.trainer.main_ppo"] and "gdro=rollout" in v1
    assert "trainer.use_v1=false" not in v1
    v0 = _launch(tmp_path, "v0", "trainer.total_training_steps=3")
    assert "trainer.use_v1=false" in v0 and v0[-1] == "trainer.total_training_steps=3"
    for argv in (v1, v0):
        keys = [a.split("=", 1)[0] for a in argv if "=" in a and not a.startswith("--")]
        assert len(keys) == len(set(keys)), keys
        assert "trainer.n_gpus_per_node=2" in argv


def test_example_scripts_parse() -> None:
    import subprocess

    for script in ("run_gdro_grpo.sh", "e2e_check.sh"):
        subprocess.run(["bash", "-n", str(EXAMPLES / script)], check=True)
