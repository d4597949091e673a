"""Shared fixtures for the gdro_verl tests: real verl config, datasets and dataloaders on CPU.

Everything here is verl's own machinery: the Hydra config composed from verl's packaged
``ppo_trainer.yaml``, ``RLHFDataset`` (through ``GDRODataset``) over a parquet file written per test,
verl's ``collate_fn`` and torchdata's ``StatefulDataLoader`` built as verl builds them. The tests that
run verl's training loops use ``harness.py`` (see its docstring for what stands in there), a Ray
cluster on loopback and a TransferQueue, started once per session.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import verl
from omegaconf import OmegaConf, open_dict
from torchdata.stateful_dataloader import StatefulDataLoader
from verl import DataProto
from verl.utils.dataset.rl_dataset import collate_fn

from gdro_verl import hooks, runtime

NUM_PROMPTS = 24
BATCH = 6
MEAN = 4

_spec = importlib.util.spec_from_file_location(
    "gdro_verl_harness", Path(__file__).with_name("harness.py")
)
assert _spec is not None and _spec.loader is not None
HARNESS: ModuleType = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(HARNESS)


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
    return HARNESS.write_parquet(path, num_rows, tag)  # type: ignore[no-any-return]


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
    hooks.uninstall()


@pytest.fixture(scope="session")
def transfer_queue() -> Iterator[Any]:
    """A two-CPU local Ray cluster on loopback with a TransferQueue in it; shut down afterwards."""
    import ray
    import transfer_queue as tq

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}}))
        yield tq
    finally:
        try:
            tq.close()
        finally:
            ray.shutdown()


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """gdro's embedded tiny Llama and character tokenizer as a local model directory."""
    return HARNESS.write_model(tmp_path_factory.mktemp("model") / "tiny-llama")  # type: ignore[no-any-return]


@pytest.fixture
def harness() -> ModuleType:
    """tests/verl/harness.py: verl's own training loops on CPU."""
    return HARNESS


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


def success_prob(prompt_id: int) -> float:
    """A fixed per-prompt success probability, so difficulty differs between prompts."""
    return HARNESS.success_prob(prompt_id)  # type: ignore[no-any-return]


class Helpers:
    """The helpers above, as a fixture (test modules cannot import conftest under importlib mode)."""

    NUM_PROMPTS = NUM_PROMPTS
    BATCH = BATCH
    MEAN = MEAN
    build_datasets = staticmethod(build_datasets)
    build_loader = staticmethod(build_loader)
    with_uids = staticmethod(with_uids)
    success_prob = staticmethod(success_prob)
    write_parquet = staticmethod(write_parquet)


@pytest.fixture
def h() -> type[Helpers]:
    """Shared helpers: ``h.build_datasets(cfg)``, ``h.build_loader(cfg, ds)``, ..."""
    return Helpers
