r"""Prompt-GDRO: a multiplicative-weights adversary over difficulty bins.

Before a step the adversary's distribution over the ``B`` bins is

.. math::

    q(b) = (1-\gamma)\,\mathrm{softmax}(\eta\, s)_b + \gamma / B,
    \qquad s_b = \mathrm{clip}(S(b), -C, C)

with ``S`` the EMA of the share-debiased bin signal (the paper's rule), or the cumulative gain
in [0, 1] (``score_rule="cumulative"``, textbook Hedge). After the step, for each bin present,
:math:`\tilde\lambda(b) = \bar\lambda(b) / \max(\hat q(b), \varphi)` and
:math:`S(b) \leftarrow (1-\beta) S(b) + \beta \tilde\lambda(b)` (or :math:`\tilde\lambda(b)` at the
bin's first observation). Bins absent from the step keep their score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

from gdro_core._numeric import bin_mean
from gdro_core._validation import check_bool, check_choice, check_float, normalize
from gdro_core.signals import SIGNALS, get_signal

__all__ = [
    "PromptConfig",
    "PromptMode",
    "PromptState",
    "ScoreRule",
    "entropy",
    "init_state",
    "BOUND",
    "log_probs",
    "log_softmax",
    "probs",
    "update",
    "weights",
]

PromptMode = Literal["off", "reweight", "resample"]
ScoreRule = Literal["ema", "cumulative"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptConfig:
    """Settings of the Prompt-GDRO adversary.

    Args:
        mode: ``"off"`` (weights 1, the adversary still scores bins for its metrics),
            ``"reweight"`` (per-prompt advantage multipliers, the paper's method) or
            ``"resample"`` (the controller's sampler draws bins from q).
        eta: inverse temperature of the exponential weights, ``>= 0`` (0.65).
        gamma: uniform mixing over all bins, in [0, 1] (0.01).
        ema: EMA rate beta of the bin scores, in (0, 1] (0.12), weight on the new value.
        weight_cap: largest per-prompt weight in reweight mode, ``>= 1`` (15).
        share_normalize: divide a bin's mean signal by its share (counters frequency bias).
        share_floor: the share floor phi, in (0, 1]; ``None`` = 1/(2B).
        score_clip: the clip C of scores (and of losses in the cumulative rule), ``> 0`` (3).
        signal: the per-prompt signal, a name in ``gdro_core.signals.SIGNALS``
            (``"loss"``, ``"failure"``, ``"variance"``).
        score_rule: ``"ema"`` (the paper's heuristic) or ``"cumulative"`` (Hedge on gains in
            [0, 1], for which the regret bound ``ln B / eta + eta T / 8`` holds).
        exact_q: reweight by ``q / share`` instead of ``q``, so the effective bin weights equal q.

    Examples:
        >>> PromptConfig().mode, PromptConfig().eta
        ('reweight', 0.65)
    """

    mode: PromptMode = "reweight"
    eta: float = 0.65
    gamma: float = 0.01
    ema: float = 0.12
    weight_cap: float = 15.0
    share_normalize: bool = True
    share_floor: float | None = None
    score_clip: float = 3.0
    signal: str = "loss"
    score_rule: ScoreRule = "ema"
    exact_q: bool = False

    def __post_init__(self) -> None:
        normalize(
            self,
            mode=str(check_choice("PromptConfig.mode", self.mode, ("off", "reweight", "resample"))),
            eta=check_float("PromptConfig.eta", self.eta, lo=0.0),
            gamma=check_float("PromptConfig.gamma", self.gamma, lo=0.0, hi=1.0),
            ema=check_float("PromptConfig.ema", self.ema, lo=0.0, hi=1.0, lo_open=True),
            weight_cap=check_float("PromptConfig.weight_cap", self.weight_cap, lo=1.0),
            share_normalize=check_bool("PromptConfig.share_normalize", self.share_normalize),
            score_clip=check_float(
                "PromptConfig.score_clip", self.score_clip, lo=0.0, lo_open=True
            ),
            score_rule=str(
                check_choice("PromptConfig.score_rule", self.score_rule, ("ema", "cumulative"))
            ),
            exact_q=check_bool("PromptConfig.exact_q", self.exact_q),
        )
        if self.share_floor is not None:
            normalize(
                self,
                share_floor=check_float(
                    "PromptConfig.share_floor", self.share_floor, lo=0.0, hi=1.0, lo_open=True
                ),
            )
        get_signal("PromptConfig.signal", self.signal)
        normalize(self, signal=str(self.signal))

    def floor(self, num_bins: int) -> float:
        """The share floor in use: ``share_floor`` or 1/(2B)."""
        return 1.0 / (2 * num_bins) if self.share_floor is None else float(self.share_floor)

    @property
    def needs_losses(self) -> bool:
        """True when the adversary acts (mode not ``off``) on a signal that reads losses."""
        return self.mode != "off" and SIGNALS[self.signal].needs_losses


class PromptState(NamedTuple):
    """What the adversary carries between steps.

    Examples:
        >>> st = init_state(3)
        >>> st._fields
        ('score', 'seen', 'last_gain')
        >>> st.score.tolist(), st.seen.tolist()
        ([0.0, 0.0, 0.0], [False, False, False])
        >>> update(PromptConfig(signal="failure"), st, np.array([1]), np.array([0.5]),
        ...        np.array([0.0, 1.0, 0.0])).score.tolist()
        [0.0, 0.5, 0.0]
    """

    score: NDArray[np.float64]  # (B,) EMA score S(b) (ema) or cumulative gain (cumulative)
    seen: NDArray[np.bool_]  # (B,) bin observed at least once
    last_gain: NDArray[np.float64]  # (B,) latest gain in [0, 1] per bin (cumulative rule)


def init_state(num_bins: int) -> PromptState:
    """All scores 0, no bin seen: q is uniform.

    Examples:
        >>> st = init_state(4)
        >>> st.score.tolist(), probs(PromptConfig(), st).tolist()
        ([0.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25])
    """
    return PromptState(
        score=np.zeros(num_bins), seen=np.zeros(num_bins, dtype=bool), last_gain=np.zeros(num_bins)
    )


def log_softmax(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Stable log-softmax: finite for every finite input, however large.

    Examples:
        >>> np.exp(log_softmax(np.array([0.0, np.log(3.0)]))).round(6).tolist()
        [0.25, 0.75]
        >>> log_softmax(np.array([1000.0, 0.0])).tolist()  # exp(1000) would overflow
        [0.0, -1000.0]
    """
    z = x - x.max()
    out: NDArray[np.float64] = z - np.log(np.exp(z).sum())
    return out


#: Bound on scores, signals and logits: values beyond it (only from extreme inputs, e.g. losses
#: near 1e308) are clipped so that sums and exponentials stay finite.
BOUND = 1e300


def _logits(config: PromptConfig, state: PromptState) -> NDArray[np.float64]:
    if config.score_rule == "ema":
        s = np.where(state.seen, np.clip(state.score, -config.score_clip, config.score_clip), 0.0)
    else:
        s = state.score
    with np.errstate(over="ignore", invalid="ignore"):
        x = config.eta * s
    if np.all(np.abs(x) <= BOUND):
        out: NDArray[np.float64] = x
        return out
    return np.nan_to_num(np.clip(x, -BOUND, BOUND), nan=0.0)  # eta = 0 times inf


def log_probs(config: PromptConfig, state: PromptState) -> NDArray[np.float64]:
    """float64 (B,): ``log q``, finite even where q underflows to 0 (``gamma = 0``).

    Examples:
        >>> st = init_state(2)._replace(score=np.array([0.0, 3.0]), seen=np.ones(2, bool))
        >>> log_probs(PromptConfig(eta=1000.0, gamma=0.0, score_clip=3.0), st).tolist()
        [-3000.0, 0.0]
    """
    ls = log_softmax(_logits(config, state))
    b = ls.shape[0]
    if config.gamma == 0.0:
        return ls
    if config.gamma == 1.0:
        return np.full(b, -np.log(b))
    out: NDArray[np.float64] = np.logaddexp(np.log1p(-config.gamma) + ls, np.log(config.gamma / b))
    return out


def probs(config: PromptConfig, state: PromptState) -> NDArray[np.float64]:
    """float64 (B,): the adversary's distribution q over bins; sums to 1, each ``>= gamma/B``.

    Examples:
        >>> st = init_state(4)._replace(score=np.array([1.0, 0, 0, 0]), seen=np.ones(4, bool))
        >>> probs(PromptConfig(eta=1.0, gamma=0.0), st).round(3).tolist()
        [0.475, 0.175, 0.175, 0.175]
    """
    b = state.score.shape[0]
    soft = np.exp(log_softmax(_logits(config, state)))
    q: NDArray[np.float64] = (1.0 - config.gamma) * soft + config.gamma / b
    return q


def bin_means(
    bins: NDArray[np.int64], values: NDArray[np.float64], num_bins: int
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Per-bin mean of ``values`` over the prompts in each bin, and which bins are present.

    Finite for any finite values (the sum is scaled when it would overflow).
    """
    cnt = np.bincount(bins, minlength=num_bins)
    return bin_mean(bins, values, num_bins), cnt > 0


def update(
    config: PromptConfig,
    state: PromptState,
    bins: NDArray[np.int64],
    signal: NDArray[np.float64],
    shares: NDArray[np.float64],
) -> PromptState:
    """The new state after a step with per-prompt ``signal`` on prompts in ``bins``.

    Args:
        bins: int64 (m,), each prompt's bin at planning time.
        signal: float64 (m,), the per-prompt signal (see ``gdro_core.signals``).
        shares: float64 (B,), each bin's share used for debiasing: the batch share, or in
            resample mode the bin's share of the whole dataset.

    Returns:
        A new ``PromptState``; ``state`` is not mutated.

    Examples:
        Bin 0 holds two of the three prompts (share 2/3) with mean failure 0.75, so its
        debiased score is 0.75 / (2/3) = 1.125; bin 1 is absent and keeps its score.

        >>> cfg = PromptConfig(signal="failure")
        >>> bins = np.array([0, 0, 2])
        >>> shares = np.bincount(bins, minlength=3) / 3
        >>> st = update(cfg, init_state(3), bins, np.array([1.0, 0.5, 0.0]), shares)
        >>> st.score.tolist(), st.seen.tolist()
        ([1.125, 0.0, 0.0], [True, False, True])
        >>> st = update(cfg, st, bins, np.array([0.0, 0.0, 1.0]), shares)  # EMA, rate 0.12
        >>> st.score.round(4).tolist()
        [0.99, 0.0, 0.36]
    """
    num_bins = state.score.shape[0]
    mean, present = bin_means(bins, signal, num_bins)
    score = state.score.copy()
    seen = state.seen | present
    last_gain = state.last_gain.copy()
    if config.score_rule == "ema":
        debiased = mean
        if config.share_normalize:
            with np.errstate(over="ignore"):
                debiased = mean / np.maximum(shares, config.floor(num_bins))
        if not np.all(np.abs(debiased) <= BOUND):  # only for extreme signals
            debiased = np.clip(debiased, -BOUND, BOUND)
        fresh = present & ~state.seen
        old = present & state.seen
        score[fresh] = debiased[fresh]
        score[old] = (1.0 - config.ema) * score[old] + config.ema * debiased[old]
    else:
        gain = SIGNALS[config.signal].to_unit(mean, config.score_clip)
        last_gain[present] = gain[present]
        score = score + np.where(seen, last_gain, 0.0)
    return PromptState(score=score, seen=seen, last_gain=last_gain)


def weights(
    config: PromptConfig,
    q: NDArray[np.float64],
    bins: NDArray[np.int64],
    rollouts: NDArray[np.int64],
    log_q: NDArray[np.float64] | None = None,
) -> NDArray[np.float64]:
    r"""float64 (m,): per-prompt advantage multipliers (all ones unless mode is ``reweight``).

    :math:`w_i = \min(\mathrm{cap},\ u_i \sum_k n_k / \sum_k n_k u_k)` with :math:`u_i = q(g(x_i))`
    (or :math:`q/\hat q` with ``exact_q``), so the rollout-weighted mean is 1 unless the cap binds.

    Examples:
        >>> q, bins, n = np.array([0.5, 0.3, 0.2]), np.array([0, 1, 2, 2]), np.array([4, 4, 4, 4])
        >>> w = weights(PromptConfig(), q, bins, n)
        >>> w.round(4).tolist(), round(float(np.average(w, weights=n)), 12)
        ([1.6667, 1.0, 0.6667, 0.6667], 1.0)
        >>> weights(PromptConfig(weight_cap=1.5), q, bins, n).round(4).tolist()
        [1.5, 1.0, 0.6667, 0.6667]
        >>> weights(PromptConfig(mode="off"), q, bins, n).tolist()
        [1.0, 1.0, 1.0, 1.0]

        When q underflows to 0 on every bin of the batch (``gamma = 0``), ``log_q`` keeps the
        weights defined:

        >>> lq = np.array([-800.0, -801.0, 0.0])
        >>> weights(PromptConfig(), np.exp(lq), np.array([0, 1]), np.array([4, 4]), lq).round(4).tolist()
        [1.4621, 0.5379]
    """
    m = bins.shape[0]
    if config.mode != "reweight":
        return np.ones(m)
    u = q[bins]
    share = np.bincount(bins, minlength=q.shape[0]) / m
    if config.exact_q:
        u = u / share[bins]
    n = rollouts.astype(np.float64)
    denom = float(np.dot(n, u))
    if denom > 0.0 and np.isfinite(denom):
        w: NDArray[np.float64] = np.minimum(config.weight_cap, u * n.sum() / denom)
        return w
    # every bin of the batch has q == 0 in float64: the same formula in log space
    lq = np.log(np.maximum(q, np.finfo(np.float64).tiny)) if log_q is None else log_q
    lu = lq[bins] - (np.log(share[bins]) if config.exact_q else 0.0)
    top = float(lu.max())
    rel = np.exp(lu - top)
    w = np.minimum(config.weight_cap, rel * n.sum() / float(np.dot(n, rel)))
    return w


def entropy(q: NDArray[np.float64]) -> float:
    """Shannon entropy of q in nats; exp(entropy) is the effective number of bins.

    Examples:
        >>> import math
        >>> round(entropy(np.full(4, 0.25)), 6), round(math.exp(entropy(np.full(4, 0.25))), 6)
        (1.386294, 4.0)
        >>> round(math.exp(entropy(np.array([0.5, 0.5, 0.0]))), 6)  # empty bins add nothing
        2.0
    """
    nz = q[q > 0]
    return float(-(nz * np.log(nz)).sum())
