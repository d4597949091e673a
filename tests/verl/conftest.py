"""Shared fixtures for the gdro_verl tests: real verl config, datasets and dataloaders on CPU.

Everything here is verl's own machinery: the Hydra config composed from verl's packaged
``ppo_trainer.yaml``, ``RLHFDataset`` (through ``GDRODataset``) over a parquet file written per test,
verl's ``collate_fn`` and torchdata's ``StatefulDataLoader`` built as verl builds them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pytest
import verl
from omegaconf import OmegaConf, open_dict
from torchdata.stateful_dataloader import StatefulDataLoader
from verl import DataProto
from verl.utils.dataset.rl_dataset import collate_fn

from gdro_verl import _compat, runtime

NUM_PROMPTS = 24
BATCH = 6
MEAN = 4


@pytest.fixture(scope="session")
def base_config() -> Any:
    """verl's own ppo_trainer config (Hydra-composed, as ``main_ppo`` builds it), set up for gdro."""
    from hydra import compose, initialize_config_dir

    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose(
            config_name="ppo_trainer",
            overrides=[
                f"data.train_batch_size={BATCH}",
                "data.dataloader_num_workers=0",
                "data.filter_overlong_prompts=false",
                "data.custom_cls.path=pkg://gdro_verl.dataset",
                "data.custom_cls.name=GDRODataset",
                f"actor_rollout_ref.rollout.n={MEAN}",
                "algorithm.adv_estimator=grpo",
                "trainer.v1.sampler.custom_sampler.path=pkg://gdro_verl.replay_buffer",
                "trainer.v1.sampler.custom_sampler.name=GDROReplayBuffer",
                "+data.gdro.seed=0",
            ],
        )
    return cfg


def write_parquet(path: Path, num_rows: int, tag: str) -> str:
    """A small math-style dataset in verl's preprocessed layout (``extra_info.index`` all 0)."""
    rows = {
        "data_source": ["synthetic/math"] * num_rows,
        "prompt": [
            [{"role": "user", "content": f"{tag}: what is {i} + {i}?"}] for i in range(num_rows)
        ],
        "ability": ["math"] * num_rows,
        "reward_model": [{"style": "rule", "ground_truth": str(2 * i)} for i in range(num_rows)],
        # verl's "index" comes from here; it is deliberately NOT the dataset position.
        "extra_info": [{"index": 0, "split": tag} for _ in range(num_rows)],
    }
    datasets.Dataset.from_dict(rows).to_parquet(str(path))
    return str(path)


@pytest.fixture
def make_config(base_config: Any, tmp_path: Path) -> Any:
    """Build a full verl config for this test: ``make_config(**{"data.gdro.prompt.mode": ...})``."""
    train = write_parquet(tmp_path / "train.parquet", NUM_PROMPTS, "train")
    val = write_parquet(tmp_path / "val.parquet", 5, "val")

    def make(**overrides: Any) -> Any:
        cfg = OmegaConf.create(OmegaConf.to_container(base_config, resolve=False))
        OmegaConf.set_struct(cfg, False)
        cfg.data.train_files = train
        cfg.data.val_files = val
        for key, value in overrides.items():
            OmegaConf.update(cfg, key, value, force_add=True)
        return cfg

    return make


@pytest.fixture(autouse=True)
def _clean_gdro() -> Iterator[None]:
    """Each test starts without an active controller or installed verl hooks."""
    yield
    runtime.deactivate()
    _compat.uninstall()


def build_datasets(cfg: Any) -> tuple[Any, Any]:
    """Train and validation datasets, built the way verl's trainers build them."""
    from verl.trainer.ppo.utils import create_rl_dataset

    with open_dict(cfg):
        train = create_rl_dataset(cfg.data.train_files, cfg.data, None, None, is_train=True)
        val = create_rl_dataset(cfg.data.val_files, cfg.data, None, None, is_train=False)
    return train, val


def build_loader(cfg: Any, dataset: Any) -> StatefulDataLoader:
    """The train dataloader exactly as verl 0.9.1's trainers build it (sampler from verl's factory)."""
    import verl.trainer.ppo.utils as ppo_utils

    return StatefulDataLoader(
        dataset=dataset,
        batch_size=cfg.data.get("gen_batch_size", None) or cfg.data.train_batch_size,
        num_workers=cfg.data["dataloader_num_workers"],
        drop_last=True,
        collate_fn=collate_fn,
        sampler=ppo_utils.create_rl_sampler(cfg.data, dataset),
    )


def with_uids(batch_dict: dict[str, Any]) -> DataProto:
    """A loader batch as V0's fit() makes it: a DataProto plus one fresh uuid4 per prompt."""
    batch = DataProto.from_single_dict(batch_dict)
    batch.non_tensor_batch["uid"] = np.array(
        [str(uuid.uuid4()) for _ in range(len(batch))], dtype=object
    )
    return batch


def reference_controller(runtime: Any) -> Any:
    """A controller with the adapter's settings and seed 0, fed by hand as the test's oracle."""
    from gdro_core import GDROController

    st = runtime.settings
    return GDROController(
        num_prompts=NUM_PROMPTS, classifier=st.classifier, prompt=st.prompt, rollout=st.rollout, seed=0
    )


def success_prob(prompt_id: int) -> float:
    """A fixed per-prompt success probability, so difficulty differs between prompts."""
    return (prompt_id % 6) / 5.0


class Helpers:
    """The helpers above, as a fixture (test modules cannot import conftest under importlib mode)."""

    NUM_PROMPTS = NUM_PROMPTS
    BATCH = BATCH
    MEAN = MEAN
    build_datasets = staticmethod(build_datasets)
    build_loader = staticmethod(build_loader)
    with_uids = staticmethod(with_uids)
    success_prob = staticmethod(success_prob)
    reference_controller = staticmethod(reference_controller)
    write_parquet = staticmethod(write_parquet)


@pytest.fixture
def h() -> type[Helpers]:
    """Shared helpers: ``h.build_datasets(cfg)``, ``h.build_loader(cfg, ds)``, ..."""
    return Helpers
