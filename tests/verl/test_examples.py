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
