"""The same controller mapping gives the same controller in every entry point.

A mapping in ``ControllerConfig.from_mapping``'s shape (a recipe plus settings) is given to the
core, the simulation lab, ``gdro train`` (``TrainConfig.controller`` and its command-line flags),
verl's ``data.gdro`` and TRL's ``gdro={...}``; each builds its controller its own way. They must
build equal configs, and controllers that plan identically for the same calls. The mappings cover
both recipes and every lab strategy.
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

import numpy as np
import pytest
from omegaconf import OmegaConf

from gdro_cli.train import add_arguments, config_from_args
from gdro_core import (
    ClassifierConfig,
    ControllerConfig,
    GDROController,
    PromptConfig,
    RolloutConfig,
)
from gdro_lab.controllers import GDRO_STRATEGIES
from gdro_lab.run import SimConfig
from gdro_torch.config import TrainConfig
from gdro_trl.config import GDROConfig
from gdro_verl.config import GDROSettings

N = 40
MEAN = 4

MAPPINGS: dict[str, dict[str, Any]] = {
    **{f"lab:{name}": copy.deepcopy(m) for name, m in GDRO_STRATEGIES.items()},
    "reward:both": {"recipe": "reward", "prompt": {"mode": "reweight"},
                    "rollout": {"mode": "neyman", "max": 8}, "classifier": {"num_bins": 6}},
    "reward:resample-bandit": {"recipe": "reward", "prompt": {"mode": "resample"},
                               "rollout": {"mode": "bandit", "selection": "sample", "max": 10}},
    "paper:any": {"recipe": "paper", "prompt": {"mode": "reweight", "signal": "failure"},
                  "rollout": {"mode": "fixed"}, "classifier": {"outcome": "any", "window": 20}},
}


def _with_mean(mapping: dict[str, Any]) -> dict[str, Any]:
    m = copy.deepcopy(mapping)
    m.setdefault("rollout", {})["mean"] = MEAN
    return m


def _core(mapping: dict[str, Any], seed: int) -> ControllerConfig:
    return ControllerConfig.from_mapping({**_with_mean(mapping), "seed": seed})


def _torch(mapping: dict[str, Any], seed: int) -> ControllerConfig:
    return TrainConfig(controller=_with_mean(mapping), seed=seed).controller_config()


def _torch_flags(mapping: dict[str, Any], seed: int) -> ControllerConfig:
    argv = ["--seed", str(seed), "--recipe", mapping["recipe"]]
    for section, values in _with_mean(mapping).items():
        if isinstance(values, dict):
            for key, value in values.items():
                argv += [f"--{section}.{key}", str(value)]
    parser = argparse.ArgumentParser(prog="gdro train")
    add_arguments(parser, argv=argv)
    return config_from_args(parser.parse_args(argv)).controller_config()


def _verl(mapping: dict[str, Any], seed: int) -> ControllerConfig:
    cfg = OmegaConf.create({
        "actor_rollout_ref": {"rollout": {"n": MEAN}},
        "data": {"gdro": {**copy.deepcopy(mapping), "seed": seed}},
    })
    return GDROSettings.from_data_config(cfg.data).controller


def _trl(mapping: dict[str, Any], seed: int) -> ControllerConfig:
    cfg = GDROConfig.from_mapping({**copy.deepcopy(mapping), "seed": seed}, num_generations=MEAN)
    return ControllerConfig(classifier=cfg.classifier, prompt=cfg.prompt,
                            rollout=cfg.rollout_for(MEAN), seed=cfg.seed)


def _same(a: ControllerConfig, b: ControllerConfig) -> None:
    # max_in_flight is each trainer's own look-ahead (verl and TRL derive it), not a setting
    assert a.replace(max_in_flight=1) == b.replace(max_in_flight=1)


def _plans(cfg: ControllerConfig) -> list[tuple[Any, ...]]:
    ctl = GDROController.from_config(cfg.replace(max_in_flight=1), N)
    rng = np.random.default_rng(0)
    p = np.random.default_rng(1).beta(0.5, 0.5, N)
    out = []
    for _ in range(12):
        plan = ctl.plan(ctl.sample(8))
        r = (rng.random(plan.num_rollouts) < np.repeat(p[plan.prompt_ids], plan.rollouts)).astype(float)
        ctl.update(plan, r, rng.normal(size=8))
        out.append(tuple(a.tobytes() for a in plan.arrays()))
    return out


@pytest.mark.parametrize("name", sorted(MAPPINGS))
def test_one_mapping_one_controller_everywhere(name: str) -> None:
    mapping, seed = MAPPINGS[name], 7
    core = _core(mapping, seed)
    builders = {"torch": _torch, "torch flags": _torch_flags}
    if name.startswith("lab:"):
        builders["lab"] = lambda m, s: SimConfig(controller={"rollout": {"mean": MEAN}}).controller_config(
            name[4:], seed=s)
    reward_derived = core.prompt.signal != "loss" and not core.rollout.needs_losses
    if reward_derived:  # verl and TRL report no per-prompt losses: they refuse the loss signals
        builders["verl"] = _verl
        builders["trl"] = _trl
    want = _plans(core)
    for entry, build in builders.items():
        got = build(mapping, seed)
        _same(got, core)
        assert _plans(got) == want, entry
    assert len(builders) >= 3


def test_the_recipes_decide_the_bandit_knobs_in_one_place() -> None:
    for signal, recipe in (("variance", "reward"), ("loss", "paper")):
        for build in (_core, _torch):
            cfg = build({"recipe": recipe, "rollout": {"mode": "bandit"}}, 0)
            assert cfg.prompt.signal == signal
            assert (cfg.rollout.arm_eta, cfg.rollout.dual_step) == (
                (1000.0, 2e-4) if recipe == "reward" else (0.65, 0.05)
            )


BAD = [("rollout", "min", 1), ("prompt", "score_rule", "best"), ("classifier", "num_bins", 300),
       ("prompt", "eta", -1.0), ("rollout", "selection", "best")]


@pytest.mark.parametrize(("section", "key", "value"), BAD)
def test_a_bad_setting_gets_the_cores_message_located_in_every_entry_point(
    section: str, key: str, value: Any
) -> None:
    cls = {"classifier": ClassifierConfig, "prompt": PromptConfig, "rollout": RolloutConfig}[section]
    with pytest.raises(ValueError) as own:
        cls(**{key: value})
    bad = {section: {key: value}}
    entries: dict[str, tuple[str, Any]] = {
        "core": ("config", lambda: ControllerConfig.from_mapping(bad)),
        "torch": ("controller", lambda: TrainConfig(controller=bad)),
        "torch replace": ("controller", lambda: TrainConfig().replace(controller=bad)),
        "torch flags": ("controller", lambda: _torch_flags({"recipe": "reward", **bad}, 0)),
        "lab": ("SimConfig.controller", lambda: SimConfig(controller=bad)),
        "verl": ("data.gdro", lambda: _verl(bad, 0)),
        "trl": ("gdro", lambda: _trl(bad, 0)),
    }
    if isinstance(value, str):  # a named choice: argparse refuses it before the core sees it
        del entries["torch flags"]
    for entry, (where, build) in entries.items():
        with pytest.raises(ValueError) as err:
            build()
        assert str(err.value) == f"{where}.{section}: {own.value}", entry


def test_a_setting_across_sections_and_the_seed_are_located_too() -> None:
    # k (classifier) against min (rollout) is checked by ControllerConfig, the seed and the
    # bound on plans in flight beside the sections: each message starts with where it was given
    k_over_min = {"classifier": {"outcome": "pass@k", "k": 3},
                  "rollout": {"mode": "neyman", "min": 2}}
    with pytest.raises(ValueError) as own:
        ControllerConfig(classifier=ClassifierConfig(outcome="pass@k", k=3),
                         rollout=RolloutConfig(mode="neyman", min=2))
    for where in ("config", "data.gdro", "controller"):
        with pytest.raises(ValueError) as err:
            ControllerConfig.from_mapping(k_over_min, where=where)
        assert str(err.value) == f"{where}: {own.value}"
    with pytest.raises(ValueError) as err:
        TrainConfig(controller=k_over_min)
    assert str(err.value) == f"controller: {own.value}"
    with pytest.raises(ValueError, match=r"^data\.gdro\.seed must be None or an integer in \[0, "):
        _verl({}, -1)
    with pytest.raises(ValueError, match=r"^gdro\.seed must be None or an integer in \[0, "):
        GDROConfig.from_mapping({"seed": -1}, num_generations=MEAN)
    with pytest.raises(ValueError, match=r"^data\.gdro\.max_in_flight must be an integer in \[1, 1024\]"):
        ControllerConfig.from_mapping({"max_in_flight": 0}, where="data.gdro")
