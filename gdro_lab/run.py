"""Run strategies on the simulated learner and collect their trajectories.

One *run* is a strategy, a scenario and a seed. The seed fixes the population (shared by every
strategy with that seed: common random numbers), the generation stream, the evaluation subsample
and the strategy's own randomness, so a run is a deterministic function of its configuration.
Each run writes a run directory that ``gdro report`` reads like a training run::

    DIR/runs/<strategy>-s<seed>/config.json     {"kind": "simulation", "num_bins": B, ...}
    DIR/runs/<strategy>-s<seed>/metrics.jsonl   one flat JSON object per step

The controller settings are one ``gdro_core.ControllerConfig`` per GDRO strategy: the strategy's
mapping (:data:`gdro_lab.controllers.GDRO_STRATEGIES`) with ``SimConfig.controller`` on top.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import InitVar, asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from gdro_core import ClassifierConfig, ControllerConfig, RolloutConfig
from gdro_core._validation import check_float, check_int, fail, type_fail
from gdro_core.rollout import neyman_continuous
from gdro_core.signals import SIGNALS
from gdro_lab._io import write_json, write_jsonl
from gdro_lab.base import Strategy
from gdro_lab.controllers import GDRO_STRATEGIES, ControllerStrategy, strategy_config
from gdro_lab.learner import Learner, LearnerConfig, Population
from gdro_lab.scenarios import get_scenario
from gdro_lab.strategies import (
    DynamicSampling,
    KnapsackAllocation,
    VarianceSampling,
    check_k_fits,
)

__all__ = [
    "ALTERNATIVES",
    "STRATEGIES",
    "RunResult",
    "SimConfig",
    "build_population",
    "make_strategy",
    "run_dir_name",
    "run_one",
    "write_run",
]

ALTERNATIVES = {
    "dapo": DynamicSampling,
    "var-sampling": VarianceSampling,
    "knapsack": KnapsackAllocation,
}
STRATEGIES: tuple[str, ...] = (*GDRO_STRATEGIES, *ALTERNATIVES)


@dataclass(frozen=True, slots=True, kw_only=True)
class SimConfig:
    """Everything a simulation needs.

    Attributes:
        scenario: a key of :data:`gdro_lab.scenarios.SCENARIOS`.
        strategies: names from :data:`STRATEGIES`.
        seeds: the seeds; one run per strategy and seed.
        num_prompts: population size N (>= batch_size).
        batch_size: prompts per step.
        steps: steps per run.
        eval_every: steps between evaluations (the last step is always evaluated).
        eval_size: prompts in the fixed evaluation subsample (all prompts when N is smaller).
        target: mean success that "steps to target" waits for (unset, None: halve the initial
            failure rate).
        learner: the learner's hyperparameters.
        controller: controller settings in ``gdro_core.ControllerConfig.from_mapping``'s shape
            (sections ``classifier``, ``prompt``, ``rollout``), put on top of every GDRO
            strategy's mapping (:func:`gdro_lab.controllers.strategy_config`); e.g.
            ``{"rollout": {"mean": 8}, "prompt": {"eta": 0.1}}``. The budget
            ``rollout.mean`` (4), the bounds ``rollout.min`` and ``rollout.max`` (2, 12) and the
            classifier settings (10 bins) hold for every strategy, the alternatives included.
            Each strategy decides its modes and recipe (``prompt.mode``, ``rollout.mode``,
            ``recipe``) and each run its seed, so those keys are refused. Signals must be
            reward-derived: the simulator has no per-prompt loss.
        mean_rollouts: the previous release's name of ``controller["rollout"]["mean"]``,
            accepted with a ``FutureWarning`` until the next release (not stored).

    Examples:
        A tiny simulation (the defaults are the paper-sized one):

        >>> cfg = SimConfig(strategies=("uniform", "knapsack"), num_prompts=200, batch_size=16,
        ...                 steps=20, eval_every=5, eval_size=200,
        ...                 controller={"rollout": {"mean": 6}})
        >>> cfg.scenario, cfg.seeds, cfg.rollout.mean, cfg.rollout.max, cfg.classifier.num_bins
        ('stationary', (0,), 6, 12, 10)
        >>> SimConfig(num_prompts=100, batch_size=200)
        Traceback (most recent call last):
            ...
        ValueError: batch_size must be an integer in [1, 100]; got 200
        >>> SimConfig(strategies=("uniform", "uniform"))
        Traceback (most recent call last):
            ...
        ValueError: strategies must not repeat; got ['uniform', 'uniform']
        >>> SimConfig(controller={"prompt": {"signal": "loss"}})
        Traceback (most recent call last):
            ...
        ValueError: SimConfig.controller.prompt.signal must be a reward-derived signal (the simulator passes no per-prompt losses): one of ['failure', 'variance']; got 'loss'
    """

    scenario: str = "stationary"
    strategies: tuple[str, ...] = ("uniform", "prompt-reweight", "rollout-neyman")
    seeds: tuple[int, ...] = (0,)
    num_prompts: int = 14_100
    batch_size: int = 256
    steps: int = 1000
    eval_every: int = 10
    eval_size: int = 20_000
    target: float | None = None
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    controller: dict[str, Any] = field(default_factory=dict)
    mean_rollouts: InitVar[int | None] = None

    def __post_init__(self, mean_rollouts: int | None) -> None:
        get_scenario(self.scenario)
        if not self.strategies:
            raise ValueError("strategies must name at least one of " + ", ".join(STRATEGIES))
        for s in self.strategies:
            if s not in STRATEGIES:
                raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}; got {s!r}")
        if len(set(self.strategies)) != len(self.strategies):
            raise ValueError(f"strategies must not repeat; got {list(self.strategies)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one; got {list(self.seeds)}")
        for seed in self.seeds:
            check_int("seed", seed, lo=0)
        check_int("num_prompts", self.num_prompts, lo=2)
        check_int("batch_size", self.batch_size, lo=1, hi=self.num_prompts)
        check_int("steps", self.steps, lo=1)
        check_int("eval_every", self.eval_every, lo=1)
        check_int("eval_size", self.eval_size, lo=1)
        if self.target is not None:
            check_float("target", self.target, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        object.__setattr__(self, "controller", _overrides(self.controller, mean_rollouts))
        shared = self._shared()
        if "knapsack" in self.strategies:
            check_k_fits(shared.classifier, shared.rollout, "SimConfig.controller.classifier.k")
        for name in self.strategies:
            config = self.controller_config(name)
            if config is not None:
                _check_reward_derived(config)

    def _shared(self) -> ControllerConfig:
        return ControllerConfig.from_mapping(self.controller, where="SimConfig.controller")

    @property
    def rollout(self) -> RolloutConfig:
        """The rollout settings every strategy shares (``controller["rollout"]`` on the core's
        defaults): ``mean``, the budget; ``min`` and ``max``, the bounds."""
        return self._shared().rollout

    @property
    def classifier(self) -> ClassifierConfig:
        """The classifier settings every strategy bins its prompts with."""
        return self._shared().classifier

    def controller_config(self, name: str, seed: int | None = None) -> ControllerConfig | None:
        """The ``ControllerConfig`` of a GDRO strategy (``None`` for an alternative).

        Examples:
            >>> cfg = SimConfig(controller={"rollout": {"dual_step": 1e-3}})
            >>> c = cfg.controller_config("rollout-bandit", seed=2)
            >>> c.rollout.mode, c.rollout.arm_eta, c.rollout.dual_step, c.seed
            ('bandit', 1000.0, 0.001, 2)
            >>> cfg.controller_config("knapsack") is None
            True
        """
        if name not in GDRO_STRATEGIES:
            return None
        return strategy_config(name, self.controller, seed=seed, where="SimConfig.controller")

    def settings(self, name: str) -> dict[str, Any]:
        """A strategy's controller settings, ``ControllerConfig.to_dict()``: a GDRO strategy's
        whole config (seed ``None``), an alternative's ``classifier`` and ``rollout`` sections.

        Examples:
            >>> cfg = SimConfig()
            >>> cfg.settings("rollout-bandit")["rollout"]["dual_step"]
            0.0002
            >>> sorted(cfg.settings("dapo")), cfg.settings("dapo")["rollout"]["mean"]
            (['classifier', 'rollout'], 4)
        """
        d = (self.controller_config(name) or self._shared()).to_dict()
        return d if name in GDRO_STRATEGIES else {k: d[k] for k in ("classifier", "rollout")}


def _overrides(controller: Any, mean_rollouts: int | None) -> dict[str, Any]:
    """``SimConfig.controller`` as plain dicts, checked, with the old ``mean_rollouts`` in it."""
    if not isinstance(controller, Mapping):
        raise type_fail("SimConfig.controller", "a mapping", controller)
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in controller.items()}
    for path in ("recipe", "seed", "prompt.mode", "rollout.mode"):
        *section, key = path.split(".")
        where = out.get(section[0]) if section else out
        if isinstance(where, dict) and key in where:
            why = "left to the strategies (each decides its modes and recipe; each run, its seed)"
            raise fail(f"SimConfig.controller.{path}", why, where[key])
    if mean_rollouts is not None:  # the previous release's name, accepted until the next one
        msg = "SimConfig(mean_rollouts=) is deprecated: use controller={'rollout': {'mean': ...}}"
        warnings.warn(msg, FutureWarning, stacklevel=4)
        rollout = out.get("rollout") or {}
        if not isinstance(rollout, dict) or rollout.get("mean", mean_rollouts) != mean_rollouts:
            raise fail("SimConfig.mean_rollouts", "absent or equal to rollout.mean", mean_rollouts)
        out["rollout"] = {**rollout, "mean": mean_rollouts}
    return out


def _check_reward_derived(config: ControllerConfig) -> None:
    """The lab feeds back rewards only: refuse signals that need per-prompt losses."""
    allowed = f"one of {sorted(n for n, s in SIGNALS.items() if not s.needs_losses)}"
    why = "a reward-derived signal (the simulator passes no per-prompt losses): " + allowed
    if SIGNALS[config.prompt.signal].needs_losses:  # also when off: the adversary still scores
        raise fail("SimConfig.controller.prompt.signal", why, config.prompt.signal)
    if config.rollout.needs_losses:
        raise fail("SimConfig.controller.rollout.arm_signal", why, config.rollout.arm_signal)


class RunResult(NamedTuple):
    """The trajectory of one run.

    Attributes:
        strategy: strategy name.
        seed: the seed.
        rows: per-step metric rows (as written to ``metrics.jsonl``).
        eval_steps: int64 (K,), the evaluated steps (0 = before training).
        eval_mean: float64 (K,), mean true success on the evaluation subsample.
        eval_strata: float64 (K, S), mean true success per stratum of initial pass rate.
        strata_size: int64 (S,), evaluation prompts per stratum.
        target: the steps-to-target threshold used.
        controller: the settings the run's controller was built with
            (``GDROController.config``); ``None`` for the alternatives.

    Examples:
        >>> cfg = SimConfig(strategies=("knapsack",), num_prompts=200, batch_size=16, steps=20,
        ...                 eval_every=5, eval_size=200)
        >>> r = run_one(cfg, "knapsack", seed=0)
        >>> r.strategy, r.seed, len(r.rows), r.eval_steps.tolist()
        ('knapsack', 0, 20, [0, 5, 10, 15, 20])
        >>> np.round(r.eval_mean, 3).tolist(), round(r.target, 3)
        ([0.675, 0.678, 0.681, 0.683, 0.686], 0.837)
        >>> r.eval_strata.shape, r.strata_size.tolist()  # strata of initial pass rate, 0.1 wide
        ((5, 10), [24, 9, 3, 4, 7, 7, 7, 24, 69, 46])
        >>> r.controller is None, run_one(cfg, "uniform", seed=0).controller.prompt.mode
        (True, 'off')
    """

    strategy: str
    seed: int
    rows: list[dict[str, float]]
    eval_steps: NDArray[np.int64]
    eval_mean: NDArray[np.float64]
    eval_strata: NDArray[np.float64]
    strata_size: NDArray[np.int64]
    target: float
    controller: ControllerConfig | None = None


def make_strategy(name: str, cfg: SimConfig, seed: int) -> Strategy:
    """Build a strategy by name for a configuration and seed.

    Args:
        name: a name in :data:`STRATEGIES`.
        cfg: the simulation configuration (sizes and controller settings).
        seed: the strategy's seed.

    Returns:
        A :class:`~gdro_lab.controllers.ControllerStrategy` for a GDRO name (its controller is
        ``GDROController.from_config(cfg.controller_config(name, seed), cfg.num_prompts)``),
        else one of :data:`ALTERNATIVES` with the shared ``cfg.rollout`` and ``cfg.classifier``.

    Examples:
        >>> cfg = SimConfig(num_prompts=200, batch_size=16)
        >>> [type(make_strategy(name, cfg, seed=0)).__name__ for name in ("gdro-both", "dapo")]
        ['ControllerStrategy', 'DynamicSampling']
        >>> s = make_strategy("knapsack", cfg, seed=0)
        >>> s.name, s.num_bins, int(s.propose().rollouts.sum())
        ('knapsack', 10, 64)
    """
    config = cfg.controller_config(name, seed)
    if config is not None:
        return ControllerStrategy(
            name, config, num_prompts=cfg.num_prompts, batch_size=cfg.batch_size
        )
    alt: Any = ALTERNATIVES[name]
    strategy: Strategy = alt(
        num_prompts=cfg.num_prompts,
        batch_size=cfg.batch_size,
        seed=seed,
        rollout=cfg.rollout,
        classifier=cfg.classifier,
    )
    return strategy


def build_population(cfg: SimConfig, seed: int) -> Population:
    """The scenario's population for ``seed`` (identical for every strategy).

    Examples:
        >>> cfg = SimConfig(num_prompts=200, batch_size=16)
        >>> a, b = build_population(cfg, 0), build_population(cfg, 0)
        >>> a.num_prompts, np.array_equal(a.difficulty, b.difficulty)
        (200, True)
        >>> np.round(a.difficulty[:4], 2)
        array([-1.81, -1.33, -2.48, -2.5 ], dtype=float32)
    """
    return get_scenario(cfg.scenario).build(np.random.default_rng([seed, 0]), cfg.num_prompts)


def _step_stats(
    num_bins: int,
    mean: int,
    bins: NDArray[np.int64],
    rollouts: NDArray[np.int64],
    reward: NDArray[np.float64],
    prob: NDArray[np.float64],
    signal: NDArray[np.float64],
    bounds: tuple[int, int] = (2, 12),
) -> dict[str, float]:
    """Per-step training and WSE metrics from the batch (bins as planned, true probabilities).

    ``sim/wse`` uses each bin's true per-rollout reward std this step. ``sim/mu_star`` and
    ``sim/neyman_n/{b}`` are the square-root law on this batch with the bins' true mean p(1-p)
    within ``bounds`` (continuous, no variance floor): its KKT price and per-bin rollouts, the
    reference for Rollout-GDRO's price and allocation. ``sim/signal_mean/{b}``
    and ``sim/signal_sq/{b}`` (mean and mean square of the per-prompt GRPO signal, the lab's
    per-prompt loss up to sign) let the summary estimate the paper's per-bin loss std once per run.
    """
    gid = np.repeat(np.arange(bins.size), rollouts)
    counts = np.bincount(bins, minlength=num_bins)
    r_bin = np.bincount(bins[gid], weights=reward, minlength=num_bins)
    n_bin = np.bincount(bins, weights=rollouts, minlength=num_bins)
    out = {"train/reward_mean": float(reward.mean()), "train/rollouts": float(reward.size)}
    for b in np.flatnonzero(counts):
        out[f"train/reward/{b}"] = float(r_bin[b] / n_bin[b])
    share = counts / bins.size
    var = np.bincount(bins, weights=prob * (1.0 - prob), minlength=num_bins)
    sigma = np.sqrt(var / np.maximum(counts, 1))
    nb = np.where(counts > 0, n_bin / np.maximum(counts, 1), 1.0)
    out["sim/wse"] = float(np.sum(share * sigma / np.sqrt(nb)))
    out["sim/wse_uniform"] = float(np.sum(share * sigma) / math.sqrt(mean))
    # continuous benchmarks on the same batch: n_b proportional to sigma_b (the square-root law
    # with true variances) and the WSE minimiser n_b proportional to sigma_b^(2/3)
    out["sim/wse_neyman_oracle"] = float(
        math.sqrt(np.sum(share * sigma) / mean) * np.sum(share * np.sqrt(sigma))
    )
    out["sim/wse_optimal"] = float(np.sum(share * sigma ** (2.0 / 3.0)) ** 1.5 / math.sqrt(mean))
    present = np.flatnonzero(counts)
    n_star, mu_star = neyman_continuous(
        np.maximum(sigma[present] ** 2, 1e-12),
        share[present],
        float(mean),
        float(bounds[0]),
        float(bounds[1]),
    )
    out["sim/mu_star"] = float(mu_star)
    for b, n in zip(present, n_star, strict=True):
        out[f"sim/neyman_n/{b}"] = float(n)
    g1 = np.bincount(bins, weights=signal, minlength=num_bins)
    g2 = np.bincount(bins, weights=signal * signal, minlength=num_bins)
    for b in np.flatnonzero(counts):
        out[f"sim/sigma/{b}"] = float(sigma[b])
        out[f"sim/signal_mean/{b}"] = float(g1[b] / counts[b])
        out[f"sim/signal_sq/{b}"] = float(g2[b] / counts[b])
    return out


def run_one(
    cfg: SimConfig,
    strategy_name: str,
    seed: int,
    *,
    population: Population | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> RunResult:
    """Simulate one strategy for ``cfg.steps`` steps.

    Args:
        cfg: the simulation configuration.
        strategy_name: one of ``cfg.strategies`` (any name in :data:`STRATEGIES`).
        seed: the run's seed.
        population: the seed's population, to share it between strategies (built if None).
        on_step: called after each step with the step index and its metric row.

    Returns:
        The :class:`RunResult`.

    Examples:
        >>> cfg = SimConfig(strategies=("gdro-both",), num_prompts=200, batch_size=16, steps=20,
        ...                 eval_every=10, eval_size=200,
        ...                 controller={"classifier": {"num_bins": 5}})
        >>> seen = []
        >>> r = run_one(cfg, "gdro-both", seed=0, on_step=lambda t, row: seen.append(t))
        >>> len(seen), r.eval_steps.tolist(), np.round(r.eval_mean, 3).tolist()
        (20, [0, 10, 20], [0.675, 0.681, 0.687])
        >>> row = r.rows[-1]
        >>> row["step"], row["train/rollouts"], row["train/groups_trained"]
        (19, 64.0, 16.0)
        >>> [round(row[f"prompt/q/{b}"], 2) for b in range(5)]  # the adversary's bin weights
        [0.29, 0.29, 0.29, 0.08, 0.06]
    """
    scenario = get_scenario(cfg.scenario)
    pop = build_population(cfg, seed) if population is None else population
    learner = Learner(cfg.learner, pop)
    strategy = make_strategy(strategy_name, cfg, seed)
    rollout = cfg.rollout
    gen_rng = np.random.default_rng([seed, 1])
    eval_ids = _eval_ids(pop.num_prompts, cfg.eval_size, seed)
    p0 = learner.success_prob(eval_ids, scenario.offsets(0))
    strata = np.minimum((p0 * 10).astype(np.int64), 9)
    strata_size = np.bincount(strata, minlength=10)
    target = cfg.target if cfg.target is not None else 1.0 - (1.0 - float(p0.mean())) / 2.0

    evals: list[tuple[int, float, NDArray[np.float64]]] = []

    def evaluate(step: int) -> dict[str, float]:
        p = learner.success_prob(eval_ids, scenario.offsets(step))
        per = np.bincount(strata, weights=p, minlength=10) / np.maximum(strata_size, 1)
        per = np.where(strata_size > 0, per, np.nan)
        evals.append((step, float(p.mean()), per))
        row = {
            "eval/mean_success": float(p.mean()),
            "eval/worst_bin_success": float(np.nanmin(per)),
            # exact expectations under the true p: mean@8 = E[p], pass@8 = E[1 - (1-p)^8]
            "eval/mean@8": float(p.mean()),
            "eval/pass@8": float(np.mean(1.0 - (1.0 - p) ** 8)),
        }
        row.update({f"eval/success/{s}": float(per[s]) for s in np.flatnonzero(strata_size)})
        pass8 = np.bincount(strata, weights=1.0 - (1.0 - p) ** 8, minlength=10)
        row.update(
            {
                f"eval/pass@8/{s}": float(pass8[s] / strata_size[s])
                for s in np.flatnonzero(strata_size)
            }
        )
        return row

    evaluate(0)
    rows: list[dict[str, float]] = []
    for t in range(cfg.steps):
        offsets = scenario.offsets(t)
        prop = strategy.propose()
        gen = learner.generate(
            gen_rng, prop.ids, prop.rollouts, offsets=offsets, flip_rate=scenario.flip_rate
        )
        batch = strategy.observe(prop, gen)
        learner.train(*batch, mean=rollout.mean)
        row: dict[str, Any] = strategy.metrics()
        row.pop("step", None)  # the controller's own counter; the row's step is the 0-based index
        row = {"step": t, **row}
        row.update(
            _step_stats(
                strategy.num_bins,
                rollout.mean,
                prop.bins,
                prop.rollouts,
                gen.reward,
                gen.prob,
                gen.signal,
                (rollout.min, rollout.max),
            )
        )
        row["train/groups_trained"] = float(batch.ids.size)
        if (t + 1) % cfg.eval_every == 0 or t + 1 == cfg.steps:
            row.update(evaluate(t + 1))
        rows.append(row)
        if on_step is not None:
            on_step(t, row)
    return RunResult(
        strategy_name,
        seed,
        rows,
        np.array([e[0] for e in evals], dtype=np.int64),
        np.array([e[1] for e in evals]),
        np.vstack([e[2] for e in evals]),
        strata_size,
        target,
        strategy.controller.config if isinstance(strategy, ControllerStrategy) else None,
    )


def _eval_ids(num_prompts: int, eval_size: int, seed: int) -> NDArray[np.int64]:
    if eval_size >= num_prompts:
        return np.arange(num_prompts, dtype=np.int64)
    rng = np.random.default_rng([seed, 2])
    return np.sort(rng.choice(num_prompts, size=eval_size, replace=False)).astype(np.int64)


def run_dir_name(strategy: str, seed: int) -> str:
    """Folder name of a run under ``DIR/runs``.

    Examples:
        >>> run_dir_name("prompt-reweight", 3)
        'prompt-reweight-s3'
    """
    return f"{strategy}-s{seed}"


def write_run(out: Path, cfg: SimConfig, result: RunResult) -> Path:
    """Write a run directory (``config.json`` and ``metrics.jsonl``) under ``out/runs``.

    Args:
        out: the results folder.
        cfg: the simulation configuration.
        result: the run.

    Returns:
        The run directory, ``out/runs/<strategy>-s<seed>``.

    Examples:
        >>> import json, tempfile
        >>> cfg = SimConfig(strategies=("knapsack",), num_prompts=200, batch_size=16, steps=5,
        ...                 eval_size=200)
        >>> result = run_one(cfg, "knapsack", seed=0)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = write_run(Path(d), cfg, result)
        ...     config = json.loads((path / "config.json").read_text())
        ...     lines = (path / "metrics.jsonl").read_text().splitlines()
        ...     print(path.relative_to(d).as_posix(), sorted(f.name for f in path.iterdir()))
        runs/knapsack-s0 ['config.json', 'metrics.jsonl']
        >>> config["kind"], config["strategy"], config["num_bins"], len(lines)
        ('simulation', 'knapsack', 10, 5)
        >>> config["controller"]["rollout"]["mean"], config["prompt"], config["rollout"]
        (4, 'knapsack', 'lab')
    """
    path = Path(out) / "runs" / run_dir_name(result.strategy, result.seed)
    ctl = result.controller
    config = {
        "kind": "simulation",
        "num_bins": cfg.classifier.num_bins,
        "strategy": result.strategy,
        "seed": result.seed,
        "scenario": cfg.scenario,
        "prompt": result.strategy if ctl is None else ctl.prompt.mode,
        "rollout": "lab" if ctl is None else ctl.rollout.mode,
        "num_prompts": cfg.num_prompts,
        "batch_size": cfg.batch_size,
        "steps": cfg.steps,
        "learner": asdict(cfg.learner),
        "target": result.target,
        "controller": cfg.settings(result.strategy) if ctl is None else ctl.to_dict(),
    }
    write_jsonl(path / "metrics.jsonl", result.rows)
    write_json(path / "config.json", config)
    return path
