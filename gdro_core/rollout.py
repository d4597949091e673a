r"""Rollout-GDRO: per-bin rollout counts under an exact mean budget.

``bandit`` mode: each bin runs an exponential-weights bandit over the arms ``min..max`` with the
paper's penalised loss :math:`L_b(n) = -\hat J_b(n) + \mu n`; an exact-budget dynamic program
then picks one arm per bin present so that :math:`\sum_b N_b n_b = \bar n N`. The shadow price
moves by dual ascent on the mean the bandits propose *before* that repair,

.. math:: \mu \leftarrow \mathrm{clip}(\mu + \alpha (m_t - \bar n), 0, \mu_{max}),
          \qquad m_t = \sum_b \hat q_b \, \mathbb{E}_{p_b}[n],

so it moves even though every plan meets the budget exactly. ``neyman`` mode: the closed form
:math:`n_b \propto \sqrt{v_b}` (the square-root law) with bounds, integerised exactly.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

from gdro_core import _backend
from gdro_core._numeric import bin_mean
from gdro_core._validation import check_choice, check_float, check_int, fail, normalize
from gdro_core.allocators import ALLOCATORS, Allocator, get_allocator, register_allocator
from gdro_core.recipes import RECIPES
from gdro_core.signals import SIGNALS, get_signal, unbiased_variance


def _signal_name(owner: str, name: Any) -> str:
    get_signal(owner, name)
    return str(name)


def _allocator_name(owner: str, name: Any) -> str:
    get_allocator(owner, name)
    return str(name)


#: Bound on arm loss estimates and logits: values beyond it (only from extreme inputs) are clipped
#: so that sums and exponentials stay finite.
BOUND = 1e300

#: DP cells (bins x arms x budget states) above which planning warns that it may take seconds.
DP_WARN_WORK = 200_000_000


class DPCostWarning(RuntimeWarning):
    """The exact-budget DP of this step is large enough to take seconds.

    Examples:
        Arms 2..257 at a batch of 1,024 make 300 million cells; the threshold is lowered here
        so that the example runs fast:

        >>> import warnings, gdro_core.rollout as R
        >>> saved, R.DP_WARN_WORK = R.DP_WARN_WORK, 100
        >>> cfg = RolloutConfig(mode="bandit", mean=4, min=2, max=12)
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     _ = plan_bandit(cfg, init_state(cfg, 3), np.arange(30) % 3,
        ...                     np.random.default_rng(0), "numpy")
        >>> R.DP_WARN_WORK = saved
        >>> [w.category.__name__ for w in caught]
        ['DPCostWarning']
    """


RolloutMode = Literal["fixed", "bandit", "neyman"]
Selection = Literal["mode", "sample"]

__all__ = [
    "Allocation",
    "DPCostWarning",
    "RolloutConfig",
    "RolloutMode",
    "RolloutState",
    "Selection",
    "arm_log_probs",
    "dp_order",
    "init_state",
    "integerize",
    "neyman_continuous",
    "plan_bandit",
    "plan_fixed",
    "plan_neyman",
    "proposal_bandit",
    "proposal_fixed",
    "proposal_neyman",
    "update_bandit",
    "update_fixed",
    "update_neyman",
    "update_variance",
    "update_arm_estimates",
    "variance_proxy",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutConfig:
    """Settings of the Rollout-GDRO allocator.

    Args:
        mode: a name in ``gdro_core.allocators.ALLOCATORS``: ``"fixed"`` (every prompt gets
            ``mean``), ``"bandit"`` (the paper's per-bin bandits under the exact-budget DP),
            ``"neyman"`` (the square-root law), or one registered with ``register_allocator``.
        mean: the budget, rollouts per prompt on average (an integer; exact every step).
        min: fewest rollouts an allocator gives a prompt, ``>= 2`` (a group of 1 has no
            baseline); fixed mode gives every prompt ``mean`` (see :attr:`fewest`).
        max: most rollouts a prompt gets.
        dual_step: step size alpha of the shadow price's dual ascent, ``>= 0`` (0.05).
        mu_max: the price is projected onto ``[0, mu_max]``, ``> 0`` (1.0).
        variance_floor: floor of the Bernoulli variance proxy in neyman mode, in (0, 0.25].
        selection: ``"mode"`` (the DP's argmax) or ``"sample"`` (a draw conditioned on the
            budget, with exact propensities for importance weighting).
        arm_eta: inverse temperature of the arm bandits, ``>= 0`` (0.65).
        arm_gamma: uniform mixing over arms, in [0, 1] (0.01).
        arm_ema: EMA rate of the arm loss estimates, in (0, 1] (0.4).
        arm_signal: primal arm loss, a name in ``gdro_core.signals.SIGNALS``: ``"loss"`` (the
            bin's mean prompt loss, the paper's -J;
            bandit feedback, importance-weighted) or ``"variance"`` (the bin's mean unbiased
            p(1-p) divided by n: full information, since one step's estimate of p(1-p) gives
            the loss of every arm; priced, it is minimised at the square-root law). See
            ``RolloutConfig.variance_bandit`` for knobs sized to its scale.
        arm_rule: ``"ema"`` (discounted estimates) or ``"cumulative"`` (EXP3 sums).

    Examples:
        >>> RolloutConfig(mode="bandit").arms.tolist()
        [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    """

    mode: str = "fixed"
    mean: int = 4
    min: int = 2
    max: int = 12
    dual_step: float = 0.05
    mu_max: float = 1.0
    variance_floor: float = 0.01
    selection: Selection = "mode"
    arm_eta: float = 0.65
    arm_gamma: float = 0.01
    arm_ema: float = 0.4
    arm_signal: str = "loss"
    arm_rule: Literal["ema", "cumulative"] = "ema"

    def __post_init__(self) -> None:
        normalize(
            self,
            mode=str(_allocator_name("RolloutConfig.mode", self.mode)),
            mean=check_int("RolloutConfig.mean", self.mean, lo=2, hi=4096),
            min=check_int("RolloutConfig.min", self.min, lo=2, hi=4096),
            max=check_int("RolloutConfig.max", self.max, lo=2, hi=4096),
        )
        if not self.min <= self.mean <= self.max:
            raise fail(
                "RolloutConfig.min, RolloutConfig.mean and RolloutConfig.max",
                "ordered as min <= mean <= max",
                (self.min, self.mean, self.max),
            )
        if self.max - self.min + 1 > 256:
            raise fail(
                "RolloutConfig.max - RolloutConfig.min + 1 (the number of arms)",
                "<= 256",
                self.max - self.min + 1,
            )
        normalize(
            self,
            dual_step=check_float("RolloutConfig.dual_step", self.dual_step, lo=0.0),
            mu_max=check_float("RolloutConfig.mu_max", self.mu_max, lo=0.0, lo_open=True),
            variance_floor=check_float(
                "RolloutConfig.variance_floor", self.variance_floor, lo=0.0, hi=0.25, lo_open=True
            ),
            selection=str(
                check_choice("RolloutConfig.selection", self.selection, ("mode", "sample"))
            ),
            arm_eta=check_float("RolloutConfig.arm_eta", self.arm_eta, lo=0.0),
            arm_gamma=check_float("RolloutConfig.arm_gamma", self.arm_gamma, lo=0.0, hi=1.0),
            arm_ema=check_float(
                "RolloutConfig.arm_ema", self.arm_ema, lo=0.0, hi=1.0, lo_open=True
            ),
            arm_signal=str(_signal_name("RolloutConfig.arm_signal", self.arm_signal)),
            arm_rule=str(
                check_choice("RolloutConfig.arm_rule", self.arm_rule, ("ema", "cumulative"))
            ),
        )

    @classmethod
    def variance_bandit(cls, **overrides: Any) -> RolloutConfig:
        """Bandit mode with the ``reward`` recipe's rollout settings (``gdro_core.recipes``).

        The arm loss ``v_b / n`` is at most 0.125 and differs between neighbouring arms by about
        0.01 near the square-root optimum, where the price settles near
        ``mu* = (sum_b q_b sqrt(v_b) / mean)^2`` (about 0.005 for mean 4). The paper's
        ``arm_eta=0.65`` and ``dual_step=0.05`` (sized for its loss signal) leave the bandits
        flat and the price oscillating; ``arm_eta=1000``, ``dual_step=2e-4`` and ``mu_max=0.1``
        make the bandits track ``sqrt(v_b / mu)`` and the allocation approach the Neyman law.

        Examples:
            >>> cfg = RolloutConfig.variance_bandit(mean=4)
            >>> cfg.mode, cfg.arm_signal, cfg.arm_eta, cfg.dual_step
            ('bandit', 'variance', 1000.0, 0.0002)
        """
        base: dict[str, Any] = dict(mode="bandit", **RECIPES["reward"]["rollout"])
        base.update(overrides)
        return cls(**base)

    @property
    def arms(self) -> NDArray[np.int64]:
        """int64 (K,): the arm values ``min..max``."""
        return np.arange(self.min, self.max + 1, dtype=np.int64)

    @property
    def fewest(self) -> int:
        """The fewest rollouts a plan gives a prompt: ``mean`` in fixed mode, else ``min``
        (the bound pass@k's k must respect).

        Examples:
            >>> RolloutConfig(mean=8).fewest, RolloutConfig(mode="neyman", mean=8).fewest
            (8, 2)
        """
        return self.mean if self.mode == "fixed" else self.min

    @property
    def needs_losses(self) -> bool:
        """True when the configured rule reads per-prompt losses."""
        return ALLOCATORS[self.mode].uses_arm_signal and SIGNALS[self.arm_signal].needs_losses


class RolloutState(NamedTuple):
    """What the allocator carries between steps.

    Examples:
        >>> st = init_state(RolloutConfig(mode="bandit", min=2, max=6), num_bins=3)
        >>> st.arm_loss.shape, st.arm_seen.any(), st.mu  # 3 bins x arms 2..6
        ((3, 5), np.False_, 0.0)
        >>> st.variance.tolist(), st.var_seen.tolist()
        ([0.25, 0.25, 0.25], [False, False, False])
    """

    arm_loss: NDArray[np.float64]  # (B, K) primal arm loss estimates L_b(n), price excluded
    arm_seen: NDArray[np.bool_]  # (B, K) arm played at least once in the bin
    mu: float  # the shadow price (rollouts^-1 in loss units)
    variance: NDArray[np.float64]  # (B,) EMA of the bin's unbiased Bernoulli variance p(1-p)
    var_seen: NDArray[np.bool_]  # (B,) bin observed at least once


class Allocation(NamedTuple):
    """One step's rollout decision.

    Examples:
        >>> cfg = RolloutConfig(mode="fixed", mean=4)
        >>> alloc = plan_fixed(cfg, init_state(cfg, 3), np.array([0, 0, 2]),
        ...                    np.random.default_rng(0), "numba")
        >>> alloc.rollouts.tolist(), alloc.propensity.tolist()
        ([4, 4, 4], [1.0, 1.0, 1.0])
        >>> alloc.active.tolist(), alloc.arm_index.tolist(), alloc.unconstrained, alloc.mu
        ([0, 2], [2, 2], 4.0, 0.0)
    """

    rollouts: NDArray[np.int64]  # (m,) rollouts per prompt, sum == mean * m
    propensity: NDArray[np.float64]  # (m,) P(prompt's arm | budget); 1 when deterministic
    active: NDArray[np.int64]  # (A,) bins present, ascending
    arm_index: NDArray[np.int64]  # (A,) chosen arm index per active bin (-1: split/closed form)
    unconstrained: float  # m_t, the mean the bandits (or the closed form) propose
    mu: float  # the price the plan used


def init_state(config: RolloutConfig, num_bins: int) -> RolloutState:
    """No arm played, price 0, variance proxy 0.25 (the maximum) for unseen bins.

    Args:
        config: the allocator settings; the arms ``min..max`` fix the width of ``arm_loss``.
        num_bins: number of difficulty bins.

    Examples:
        >>> st = init_state(RolloutConfig(mode="neyman", mean=4, min=2, max=8), num_bins=2)
        >>> st.arm_loss.shape, st.mu, st.variance.tolist()
        ((2, 7), 0.0, [0.25, 0.25])
    """
    k = config.max - config.min + 1
    return RolloutState(
        arm_loss=np.zeros((num_bins, k)),
        arm_seen=np.zeros((num_bins, k), dtype=bool),
        mu=0.0,
        variance=np.full(num_bins, 0.25),
        var_seen=np.zeros(num_bins, dtype=bool),
    )


def arm_log_probs(
    config: RolloutConfig, arm_loss: NDArray[np.float64], mu: float
) -> NDArray[np.float64]:
    r"""float64 (..., K): the log-probabilities :math:`\log p_b(n)` of the arms of each bin.

    .. math:: p_b = (1-\gamma)\,\mathrm{softmax}(-\eta(\hat L_b + \mu n)) + \gamma/K

    Examples:
        With no loss estimates the arms are uniform; a positive price tilts them to fewer
        rollouts.

        >>> cfg = RolloutConfig(mode="bandit", mean=4, min=2, max=6, arm_gamma=0.0)
        >>> np.exp(arm_log_probs(cfg, np.zeros(5), mu=0.0)).round(3).tolist()
        [0.2, 0.2, 0.2, 0.2, 0.2]
        >>> np.exp(arm_log_probs(cfg, np.zeros(5), mu=1.0)).round(3).tolist()
        [0.497, 0.26, 0.136, 0.071, 0.037]
    """
    k = arm_loss.shape[-1]
    with np.errstate(over="ignore", invalid="ignore"):
        logits = -config.arm_eta * (arm_loss + mu * config.arms.astype(np.float64))
    if not np.all(np.abs(logits) <= BOUND):  # only for extreme estimates, prices or eta
        with np.errstate(over="ignore", invalid="ignore"):
            x = np.clip(arm_loss + mu * config.arms.astype(np.float64), -BOUND, BOUND)
            logits = np.nan_to_num(np.clip(-config.arm_eta * x, -BOUND, BOUND), nan=0.0)
    z = logits - logits.max(axis=-1, keepdims=True)
    ls: NDArray[np.float64] = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    if config.arm_gamma == 0.0:
        return ls
    if config.arm_gamma == 1.0:
        return np.full_like(ls, -np.log(k))
    out: NDArray[np.float64] = np.logaddexp(
        np.log1p(-config.arm_gamma) + ls, np.log(config.arm_gamma / k)
    )
    return out


def dp_order(config: RolloutConfig) -> NDArray[np.int64]:
    """Arm indices by distance to the mean, the lower arm first: the DP's tie-break order.

    Examples:
        >>> cfg = RolloutConfig(mode="bandit", mean=4, min=2, max=6)
        >>> dp_order(cfg).tolist(), cfg.arms[dp_order(cfg)].tolist()
        ([2, 1, 3, 0, 4], [4, 3, 5, 2, 6])
    """
    arms = config.arms
    return np.lexsort((arms, np.abs(arms - config.mean))).astype(np.int64)


def batch_counts(
    bins: NDArray[np.int64], num_bins: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The bins present (ascending) and their prompt counts."""
    cnt = np.bincount(bins, minlength=num_bins)
    active = np.flatnonzero(cnt).astype(np.int64)
    return active, cnt[active].astype(np.int64)


def plan_fixed(
    config: RolloutConfig,
    state: RolloutState,
    bins: NDArray[np.int64],
    rng: np.random.Generator,
    backend: str,
    prompt_ids: NDArray[np.int64] | None = None,
) -> Allocation:
    """Every prompt gets ``mean``.

    Examples:
        >>> cfg = RolloutConfig(mean=3, min=2, max=8)
        >>> plan_fixed(cfg, init_state(cfg, 2), np.array([1, 0, 1]),
        ...            np.random.default_rng(0), "numba").rollouts.tolist()
        [3, 3, 3]
    """
    active, _ = batch_counts(bins, state.variance.shape[0])
    m = bins.shape[0]
    return Allocation(
        np.full(m, config.mean, dtype=np.int64),
        np.ones(m),
        active,
        np.full(active.shape[0], config.mean - config.min),
        float(config.mean),
        state.mu,
    )


def plan_bandit(
    config: RolloutConfig,
    state: RolloutState,
    bins: NDArray[np.int64],
    rng: np.random.Generator,
    backend: str,
    prompt_ids: NDArray[np.int64] | None = None,
) -> Allocation:
    """Bandit proposals, repaired to the exact budget by the DP (argmax or conditioned draw).

    Examples:
        Both bins' estimates favour the largest arm (6): the bandits propose 5.1 rollouts per
        prompt on average (``unconstrained``), and the DP still meets the budget of 4 exactly.

        >>> cfg = RolloutConfig(mode="bandit", mean=4, min=2, max=6)
        >>> st = init_state(cfg, 2)._replace(arm_loss=np.tile(-np.arange(5.0), (2, 1)))
        >>> alloc = plan_bandit(cfg, st, np.array([0, 0, 1]), np.random.default_rng(0), "numba")
        >>> alloc.rollouts.tolist(), alloc.arm_index.tolist(), round(alloc.unconstrained, 4)
        ([3, 3, 6], [1, 4], 5.0983)
    """
    active, counts = batch_counts(bins, state.variance.shape[0])
    m = bins.shape[0]
    logp = arm_log_probs(config, state.arm_loss[active], state.mu)
    p = np.exp(logp)
    arms = config.arms.astype(np.float64)
    unconstrained = float(np.dot(counts / m, p @ arms))
    slack = int(config.mean * m - counts.sum() * config.min)
    work = active.shape[0] * arms.shape[0] * (slack + 1)
    if work > DP_WARN_WORK:
        warnings.warn(
            f"Rollout-GDRO's exact-budget DP has {work:.2g} cells this step ({active.shape[0]} "
            f"bins x {arms.shape[0]} arms x {slack + 1} budget states) and may take seconds; "
            "fewer arms (RolloutConfig.max - min) or a smaller batch make it cheaper",
            DPCostWarning,
            stacklevel=3,
        )
    kern = _backend.kernels(backend)
    if config.selection == "mode":
        dev = counts[:, None] * np.abs(arms - config.mean)[None, :]
        arm_index = kern.budget_dp_mode(
            counts, logp, dev.astype(np.float64), dp_order(config), slack
        )
        prop_bin = np.ones(active.shape[0])
    else:
        u = rng.random(active.shape[0])
        arm_index, marg = kern.budget_dp_sample(counts, logp, slack, u)
        prop_bin = marg[np.arange(active.shape[0]), arm_index]
    pos = np.searchsorted(active, bins)
    rollouts = (config.min + arm_index[pos]).astype(np.int64)
    return Allocation(
        rollouts, prop_bin[pos], active, arm_index.astype(np.int64), unconstrained, state.mu
    )


def neyman_continuous(
    v: NDArray[np.float64], shares: NDArray[np.float64], mean: float, lo: float, hi: float
) -> tuple[NDArray[np.float64], float]:
    r"""The bounded square-root law: ``n_b = clip(sqrt(v_b / mu), lo, hi)`` with ``sum shares*n = mean``.

    Without binding bounds this is :math:`n_b^* = \bar n \sqrt{v_b} / \sum_j \hat q_j \sqrt{v_j}`
    and :math:`\mu^* = (\sum_b \hat q_b \sqrt{v_b} / \bar n)^2` (the KKT price). With bounds the
    total is piecewise ``a + c / sqrt(mu)`` between the prices where a bin hits a bound, so the
    exact solution is found on the right piece in closed form (no iteration). ``v`` must be
    positive (floored) and ``lo <= mean <= hi``. Returns ``(n (A,), mu)``.

    Examples:
        >>> n, mu = neyman_continuous(np.array([0.01, 0.25]), np.array([0.5, 0.5]), 4.0, 0.0, 1e9)
        >>> n.round(6).tolist(), round(mu, 6)
        ([1.333333, 6.666667], 0.005625)
    """
    sv = np.sqrt(v)
    if hi <= lo:
        return np.full(v.shape, lo), 0.0
    # s = sqrt(mu). Bin b sits at hi for s <= sv_b/hi, at lo for s >= sv_b/lo, free in between;
    # on each piece between consecutive breakpoints the total is fixed + c/s: solve it there.
    cuts = np.concatenate([sv / hi, sv / lo]) if lo > 0 else sv / hi
    pts = np.unique(cuts)
    lower = np.concatenate([[0.0], pts])
    upper = np.concatenate([pts, [np.inf]])
    rep = np.where(np.isinf(upper), 2.0 * lower + 1.0, 0.5 * (lower + upper))
    at_hi = sv[None, :] / hi >= rep[:, None]
    at_lo = (sv[None, :] / lo <= rep[:, None]) if lo > 0 else np.zeros_like(at_hi)
    free = ~at_hi & ~at_lo
    fixed = hi * (at_hi * shares).sum(axis=1) + lo * (at_lo * shares).sum(axis=1)
    c = (free * (shares * sv)).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cand = c / (mean - fixed)
    ok = (
        (c > 0) & (mean - fixed > 0) & (cand >= lower * (1 - 1e-12)) & (cand <= upper * (1 + 1e-12))
    )
    if ok.any():
        s_root = float(cand[np.flatnonzero(ok)[0]])
    elif mean >= hi:  # everyone at hi: the largest price that keeps them there
        s_root = float(pts[0])
    else:  # everyone at lo
        s_root = float(pts[-1])
    return np.clip(sv / s_root, lo, hi), s_root * s_root


def integerize(
    target: NDArray[np.float64],
    total: int,
    lo: int,
    hi: int,
    bins: NDArray[np.int64],
    prompt_ids: NDArray[np.int64],
) -> NDArray[np.int64]:
    """Round per-prompt targets to integers in ``[lo, hi]`` that sum to ``total`` exactly.

    Each prompt gets ``floor(target)``; the remaining units go one each to the largest fractional
    parts (ties: lower bin, then lower prompt id), never above ``hi``; a surplus is taken back from
    the smallest fractional parts, never below ``lo``.

    Examples:
        >>> integerize(np.array([3.4, 3.6, 5.0]), 12, 2, 8, np.zeros(3, np.int64), np.arange(3))
        array([3, 4, 5])

        Two equal fractional parts and one unit to give: the lower bin wins the tie.

        >>> integerize(np.array([2.5, 2.5, 7.0]), 12, 2, 8, np.array([1, 0, 2]), np.arange(3))
        array([2, 3, 7])
    """
    t = np.clip(target, lo, hi)
    n = np.floor(t).astype(np.int64)
    frac = t - n
    gap = int(total - n.sum())
    if gap > 0:
        room = n < hi
        order = np.lexsort((prompt_ids, bins, -frac))
        order = order[room[order]]
        n[order[:gap]] += 1
    elif gap < 0:
        room = n > lo
        order = np.lexsort((prompt_ids, -bins, frac))
        order = order[room[order]]
        n[order[:-gap]] -= 1
    return n


def variance_proxy(config: RolloutConfig, state: RolloutState) -> NDArray[np.float64]:
    """float64 (B,): the bins' variance proxy, floored (0.25 for a bin never observed).

    Examples:
        >>> cfg = RolloutConfig(mode="neyman", variance_floor=0.05)
        >>> st = init_state(cfg, 3)._replace(variance=np.array([0.0, 0.1, 0.2]),
        ...                                  var_seen=np.array([True, True, False]))
        >>> variance_proxy(cfg, st).tolist()
        [0.05, 0.1, 0.25]
    """
    v = np.where(state.var_seen, state.variance, 0.25)
    return np.maximum(v, config.variance_floor)


def plan_neyman(
    config: RolloutConfig,
    state: RolloutState,
    bins: NDArray[np.int64],
    rng: np.random.Generator,
    backend: str,
    prompt_ids: NDArray[np.int64] | None = None,
) -> Allocation:
    """The square-root law over the bins present, integerised under the exact budget.

    Examples:
        Bins with more outcome variance get more rollouts; the mean stays 4 exactly.

        >>> cfg = RolloutConfig(mode="neyman", mean=4, min=2, max=8)
        >>> st = init_state(cfg, 3)._replace(variance=np.array([0.01, 0.1, 0.25]),
        ...                                  var_seen=np.ones(3, dtype=bool))
        >>> alloc = plan_neyman(cfg, st, np.array([0, 1, 2, 2]), np.random.default_rng(0),
        ...                     "numba", prompt_ids=np.array([5, 6, 7, 8]))
        >>> alloc.rollouts.tolist(), round(alloc.mu, 4)
        ([2, 4, 5, 5], 0.0088)
    """
    active, counts = batch_counts(bins, state.variance.shape[0])
    m = bins.shape[0]
    v = variance_proxy(config, state)[active]
    n_star, mu = neyman_continuous(
        v, counts / m, float(config.mean), float(config.min), float(config.max)
    )
    pos = np.searchsorted(active, bins)
    ids = np.arange(m, dtype=np.int64) if prompt_ids is None else prompt_ids
    rollouts = integerize(n_star[pos], config.mean * m, config.min, config.max, bins, ids)
    return Allocation(
        rollouts,
        np.ones(m),
        active,
        np.full(active.shape[0], -1),
        float(np.dot(counts / m, n_star)),
        mu,
    )


def arm_signal(
    config: RolloutConfig,
    correct: NDArray[np.int64],
    total: NDArray[np.int64],
    losses: NDArray[np.float64] | None,
) -> NDArray[np.float64] | None:
    """Per-prompt primal arm loss from the registered signal ``config.arm_signal``.

    ``None`` when the signal needs losses that were not given.

    Examples:
        >>> cfg = RolloutConfig(mode="bandit", arm_signal="failure")
        >>> arm_signal(cfg, np.array([1, 4]), np.array([4, 4]), None).tolist()
        [0.75, 0.0]
    """
    return SIGNALS[config.arm_signal].compute(correct, total, losses)


def update_arm_estimates(
    config: RolloutConfig,
    arm_loss: NDArray[np.float64],
    arm_seen: NDArray[np.bool_],
    rows: NDArray[np.int64],
    cols: NDArray[np.int64],
    ell: NDArray[np.float64],
    propensity: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    r"""New arm estimates after bins ``rows`` played arms ``cols`` and saw primal losses ``ell``.

    The importance-weighted estimate is :math:`\hat\ell = \ell / \pi` with :math:`\pi` the
    propensity of the played arm (1 under deterministic ``selection="mode"``):

    * ``arm_rule="cumulative"``: EXP3, :math:`\hat L_b(n) \mathrel{+}= \hat\ell\,1\{n = n_b\}`.
    * ``"ema"`` with ``selection="sample"``: discounted EXP3, every arm of the bin decays by
      :math:`1-\rho` and the played arm gains :math:`\rho\hat\ell`; unbiased for the arms' losses.
    * ``"ema"`` with ``selection="mode"``: an EMA of the played arm's observed loss (its first
      observation sets it); unplayed arms keep their estimates.

    Inputs are not mutated. Returns ``(arm_loss, arm_seen)``.

    Examples:
        Bin 0 plays arm index 2 (4 rollouts) twice, with losses -0.8 then -0.3 (EMA rate 0.4):

        >>> cfg = RolloutConfig(mode="bandit", mean=4, min=2, max=6)
        >>> st = init_state(cfg, 1)
        >>> one = np.ones(1)
        >>> loss, seen = update_arm_estimates(
        ...     cfg, st.arm_loss, st.arm_seen, np.array([0]), np.array([2]), np.array([-0.8]), one)
        >>> loss, seen = update_arm_estimates(
        ...     cfg, loss, seen, np.array([0]), np.array([2]), np.array([-0.3]), one)
        >>> loss[0].round(3).tolist(), seen[0].tolist()
        ([0.0, 0.0, -0.6, 0.0, 0.0], [False, False, True, False, False])
    """
    arm_loss, arm_seen = arm_loss.copy(), arm_seen.copy()
    with np.errstate(over="ignore"):
        est = ell / propensity
    if not np.all(np.abs(est) <= BOUND):  # a huge loss or a tiny propensity
        est = np.clip(est, -BOUND, BOUND)
    rho = config.arm_ema
    if config.arm_rule == "cumulative":
        arm_loss[rows, cols] += est
    elif config.selection == "sample":
        arm_loss[rows] *= 1.0 - rho
        arm_loss[rows, cols] += rho * est
    else:
        seen = arm_seen[rows, cols]
        arm_loss[rows, cols] = np.where(seen, (1 - rho) * arm_loss[rows, cols] + rho * est, est)
    arm_seen[rows, cols] = True
    if not np.all(np.abs(arm_loss) <= BOUND):  # cumulative sums of extreme losses
        arm_loss = np.clip(arm_loss, -BOUND, BOUND)
    return arm_loss, arm_seen


def update_all_arms(
    config: RolloutConfig,
    arm_loss: NDArray[np.float64],
    arm_seen: NDArray[np.bool_],
    rows: NDArray[np.int64],
    losses: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """New arm estimates when bins ``rows`` observed the loss of every arm (``losses`` (A, K)).

    Full information (no importance weights): ``"ema"`` moves every arm of the bin toward its
    loss at rate ``arm_ema`` (a bin's first observation sets it), ``"cumulative"`` adds it
    (Hedge). Inputs are not mutated.
    """
    arm_loss, arm_seen = arm_loss.copy(), arm_seen.copy()
    if config.arm_rule == "cumulative":
        arm_loss[rows] += losses
    else:
        seen = arm_seen[rows]
        rho = config.arm_ema
        arm_loss[rows] = np.where(seen, (1 - rho) * arm_loss[rows] + rho * losses, losses)
    arm_seen[rows] = True
    return arm_loss, arm_seen


def update_variance(
    config: RolloutConfig,
    state: RolloutState,
    bins: NDArray[np.int64],
    correct: NDArray[np.int64],
    total: NDArray[np.int64],
) -> tuple[RolloutState, NDArray[np.float64]]:
    """The state with each present bin's variance proxy updated, and the bins' mean ``p(1-p)``.

    Every allocator tracks the proxy (the ``neyman`` law reads it). Returns ``(state, v_mean)``
    with ``v_mean`` float64 (B,), 0 for bins absent from the step.

    Examples:
        >>> cfg = RolloutConfig(mode="neyman")
        >>> st, v = update_variance(cfg, init_state(cfg, 2), np.array([0, 0]),
        ...                         np.array([1, 2]), np.array([4, 4]))
        >>> st.variance.round(4).tolist(), st.var_seen.tolist(), v.round(4).tolist()
        ([0.2917, 0.25], [True, False], [0.2917, 0.0])
    """
    num_bins = state.variance.shape[0]
    cnt = np.bincount(bins, minlength=num_bins)
    present = cnt > 0
    pv = unbiased_variance(correct, total)
    v_mean = np.bincount(bins, weights=pv, minlength=num_bins) / np.maximum(cnt, 1)
    variance = state.variance.copy()
    fresh, old = present & ~state.var_seen, present & state.var_seen
    variance[fresh] = v_mean[fresh]
    variance[old] = (1 - config.arm_ema) * variance[old] + config.arm_ema * v_mean[old]
    return state._replace(variance=variance, var_seen=state.var_seen | present), v_mean


def update_fixed(
    config: RolloutConfig,
    state: RolloutState,
    alloc: Allocation,
    bins: NDArray[np.int64],
    correct: NDArray[np.int64],
    total: NDArray[np.int64],
    losses: NDArray[np.float64] | None,
) -> RolloutState:
    """``fixed`` mode: only the variance proxy moves (see :func:`update_variance`).

    Examples:
        >>> cfg = RolloutConfig()
        >>> st = update_fixed(cfg, init_state(cfg, 1), None, np.array([0]), np.array([2]),
        ...                   np.array([4]), None)
        >>> st.variance.round(4).tolist(), st.mu
        ([0.3333], 0.0)
    """
    return update_variance(config, state, bins, correct, total)[0]


def update_neyman(
    config: RolloutConfig,
    state: RolloutState,
    alloc: Allocation,
    bins: NDArray[np.int64],
    correct: NDArray[np.int64],
    total: NDArray[np.int64],
    losses: NDArray[np.float64] | None,
) -> RolloutState:
    """``neyman`` mode: the variance proxy, and the KKT price of the plan as ``mu``.

    Examples:
        >>> cfg = RolloutConfig(mode="neyman")
        >>> bins = np.array([0, 1])
        >>> alloc = plan_neyman(cfg, init_state(cfg, 2), bins, np.random.default_rng(0), "numba")
        >>> st = update_neyman(cfg, init_state(cfg, 2), alloc, bins, np.array([1, 0]),
        ...                    alloc.rollouts, None)
        >>> st.mu == alloc.mu, st.var_seen.tolist()
        (True, [True, True])
    """
    return update_variance(config, state, bins, correct, total)[0]._replace(mu=alloc.mu)


def update_bandit(
    config: RolloutConfig,
    state: RolloutState,
    alloc: Allocation,
    bins: NDArray[np.int64],
    correct: NDArray[np.int64],
    total: NDArray[np.int64],
    losses: NDArray[np.float64] | None,
) -> RolloutState:
    """``bandit`` mode: variance proxy, arm estimates, and the dual ascent on the price.

    A signal whose ``per_rollout_variance`` is set (``variance``: ``c(n-c)/(n(n-1))`` is
    unbiased for ``v_b`` whatever ``n`` was played) reveals the loss ``v_b / n`` of every arm:
    full information. Any other signal is bandit feedback for the played arm, importance
    weighted by its propensity.

    Args:
        config: the allocator settings.
        state: the state the step was planned with (not mutated).
        alloc: the step's allocation.
        bins: int64 (m,), each prompt's bin at planning time.
        correct: int64 (m,), correct rollouts per prompt.
        total: int64 (m,), rollouts per prompt.
        losses: float64 (m,) per-prompt losses, or ``None``.

    Examples:
        The bandits proposed 5.1 rollouts per prompt against a budget of 4, so the price rises
        by ``dual_step * (5.0983 - 4)``.

        >>> cfg = RolloutConfig(mode="bandit", mean=4, min=2, max=6)
        >>> st = init_state(cfg, 2)._replace(arm_loss=np.tile(-np.arange(5.0), (2, 1)))
        >>> bins = np.array([0, 0, 1])
        >>> alloc = plan_bandit(cfg, st, bins, np.random.default_rng(0), "numba")
        >>> new = update_bandit(cfg, st, alloc, bins, correct=np.array([1, 2, 0]),
        ...                     total=alloc.rollouts, losses=np.array([0.3, 0.1, 0.5]))
        >>> round(new.mu, 4), new.variance.round(4).tolist(), new.var_seen.tolist()
        (0.0549, [0.3333, 0.0], [True, True])
        >>> new.arm_loss[:, [1, 4]].tolist()  # the played arms took the bins' mean loss
        [[0.2, -4.0], [-1.0, 0.5]]
    """
    state, v_mean = update_variance(config, state, bins, correct, total)
    arm_loss, arm_seen = state.arm_loss, state.arm_seen
    signal = SIGNALS[config.arm_signal]
    if signal.per_rollout_variance:
        full = v_mean[alloc.active][:, None] / config.arms[None, :].astype(np.float64)
        arm_loss, arm_seen = update_all_arms(config, arm_loss, arm_seen, alloc.active, full)
    else:
        sig = signal.compute(correct, total, losses)
        if sig is not None:
            ell = bin_mean(bins, sig, state.variance.shape[0])[alloc.active]
            pos = np.searchsorted(alloc.active, bins)
            prop = np.zeros(alloc.active.shape[0])
            prop[pos] = alloc.propensity
            arm_loss, arm_seen = update_arm_estimates(
                config, arm_loss, arm_seen, alloc.active, alloc.arm_index, ell, prop
            )
    with np.errstate(over="ignore"):
        mu = float(
            np.clip(
                state.mu + config.dual_step * (alloc.unconstrained - config.mean),
                0.0,
                config.mu_max,
            )
        )
    return state._replace(arm_loss=arm_loss, arm_seen=arm_seen, mu=mu)


def proposal_fixed(
    config: RolloutConfig, state: RolloutState, shares: NDArray[np.float64]
) -> float:
    """The mean rollouts ``fixed`` mode proposes: the budget.

    Examples:
        >>> cfg = RolloutConfig(mean=6, max=12)
        >>> proposal_fixed(cfg, init_state(cfg, 2), np.array([1.0, 0.0]))
        6.0
    """
    return float(config.mean)


def proposal_bandit(
    config: RolloutConfig, state: RolloutState, shares: NDArray[np.float64]
) -> float:
    """The mean the bins' bandits propose before the budget repair, over bins with ``shares > 0``.

    Examples:
        >>> cfg = RolloutConfig(mode="bandit", mean=4, min=2, max=8)
        >>> round(proposal_bandit(cfg, init_state(cfg, 2), np.array([1.0, 0.0])), 6)  # uniform
        5.0
    """
    present = shares > 0
    p = np.exp(arm_log_probs(config, state.arm_loss[present], state.mu))
    return float(np.dot(shares[present], p @ config.arms.astype(np.float64)))


def proposal_neyman(
    config: RolloutConfig, state: RolloutState, shares: NDArray[np.float64]
) -> float:
    """The mean of the bounded square-root law over bins with ``shares > 0`` (the budget).

    Examples:
        >>> cfg = RolloutConfig(mode="neyman")
        >>> proposal_neyman(cfg, init_state(cfg, 2), np.array([0.5, 0.5]))
        4.0
    """
    present = shares > 0
    v = variance_proxy(config, state)[present]
    n_star, _ = neyman_continuous(
        v, shares[present], float(config.mean), float(config.min), float(config.max)
    )
    return float(np.dot(shares[present], n_star))


for _name, _allocator in (
    ("fixed", Allocator(init_state, plan_fixed, update_fixed, proposal_fixed)),
    (
        "bandit",
        Allocator(init_state, plan_bandit, update_bandit, proposal_bandit, uses_arm_signal=True),
    ),
    ("neyman", Allocator(init_state, plan_neyman, update_neyman, proposal_neyman)),
):
    register_allocator(_name, _allocator)
