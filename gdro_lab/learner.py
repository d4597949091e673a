r"""A fast numpy model of GRPO learning on a population of prompts.

**The model.** Prompt :math:`i` has a latent difficulty :math:`d_i` (in logits) and the policy has
a *shared ability* :math:`\theta_\ell` on each of ``num_levels`` difficulty levels plus a small
*own* term :math:`u_i` per prompt (what the model memorises about that prompt). One rollout on
prompt :math:`i` succeeds with probability

.. math::  p_i = \sigma(\theta_{\ell(i)} + u_i - d_i - o_{k(i)}(t)),

where :math:`\ell(i)` is the level of the prompt's current difficulty and :math:`o_k(t)` a
scenario's drift offset of the prompt's topic :math:`k(i)` (zero when nothing drifts).

**The GRPO signal.** For a Bernoulli policy with logit :math:`z` the score is
:math:`\partial_z \log\pi(r) = r - p`, so the GRPO gradient on prompt :math:`i`'s logit from its
:math:`n_i` rollouts is

.. math::  g_i = \frac{1}{n_i}\sum_j A_{ij}\,(s_{ij} - p_i) = \frac{1}{n_i}\sum_j A_{ij}\, s_{ij},
           \qquad A_{ij} = \operatorname{clip}\Big(\frac{\tilde r_{ij} - \bar{\tilde r}_i}
           {\operatorname{std}_{n-1}(\tilde r_i) + 10^{-6}}, -5, 5\Big),

with :math:`s_{ij}` the true success of the rollout (the action taken), :math:`\tilde r_{ij}` the
verifier's verdict (equal to :math:`s_{ij}` unless the scenario flips verdicts) and the second form
because the advantages sum to zero within a group. A group whose verdicts are all equal has
:math:`A \equiv 0` and teaches nothing, exactly as in GRPO; with clean verdicts a mixed group has
:math:`g_i = \sqrt{(n-1)/n\cdot\bar r(1-\bar r)} > 0`.

**The update** (one optimiser step per training batch, plain SGD on the batch-mean loss):

.. math::  \theta_\ell \mathrel{+}= \eta_{\text{shared}} \sum_{\ell'} K_{\ell\ell'}
           \frac{1}{|\mathcal B|}\sum_{i\in\mathcal B:\ \ell(i)=\ell'} c_i w_i g_i, \qquad
           u_i \mathrel{+}= \eta_{\text{own}}\, c_i w_i g_i,

where :math:`w_i` is the strategy's advantage weight and :math:`c_i` the aggregation factor:
``"token"`` (verl's token-mean with equal response lengths) gives :math:`c_i = n_i/\bar n`, so a
prompt with more rollouts weighs more; ``"prompt"`` gives :math:`c_i = 1`. The transfer kernel
:math:`K_{\ell\ell'} = \exp(-\Delta/\tau_{\text{down}})` for a harder source level
(:math:`\ell' \ge \ell`, distance :math:`\Delta` in logits) and
:math:`\exp(-\Delta/\tau_{\text{up}})` for an easier one: skills learnt on hard prompts carry
over to easier ones better than the reverse (:math:`\tau_{\text{down}} > \tau_{\text{up}}`).
Prompts far above the ability frontier never get a mixed group; they become learnable only as
the frontier moves up, which is the curriculum the controllers are meant to find.

**Cost.** A step costs O(rollouts + num_levels²); nothing is O(num_prompts) except evaluation,
which runs on a fixed subsample. The per-prompt state is 9 bytes (float32 difficulty and own
term, int8 topic), so ten million prompts fit in 90 MB. The :class:`Learner` mutates its arrays
in place: copying an O(N) array every step would make the step cost grow with the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

from gdro_core._validation import check_choice, check_float, check_int

__all__ = [
    "Aggregation",
    "Generation",
    "Learner",
    "LearnerConfig",
    "Population",
    "group_signal",
    "sigmoid",
]

Aggregation = Literal["token", "prompt"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LearnerConfig:
    """Hyperparameters of the simulated learner.

    Attributes:
        num_levels: number of difficulty levels carrying a shared ability (>= 2).
        lr_shared: step size of the shared ability per unit of batch-mean signal (>= 0).
        lr_own: step size of a prompt's own term per unit of its signal (>= 0).
        transfer_down: decay length, in logits, of transfer from a harder level to easier ones
            (> 0).
        transfer_up: decay length, in logits, of transfer from an easier level to harder ones
            (> 0).
        aggregation: ``"token"`` (a prompt weighs ``n_i / mean``) or ``"prompt"`` (weighs 1).

    Examples:
        >>> cfg = LearnerConfig(num_levels=8, aggregation="prompt")
        >>> cfg.num_levels, cfg.lr_shared, cfg.transfer_down, cfg.aggregation
        (8, 0.05, 1.5, 'prompt')
        >>> LearnerConfig(num_levels=1)
        Traceback (most recent call last):
            ...
        ValueError: LearnerConfig.num_levels must be an integer >= 2; got 1
    """

    num_levels: int = 48
    lr_shared: float = 0.05
    lr_own: float = 0.05
    transfer_down: float = 1.5
    transfer_up: float = 0.4
    aggregation: Aggregation = "token"

    def __post_init__(self) -> None:
        check_int("LearnerConfig.num_levels", self.num_levels, lo=2)
        check_float("LearnerConfig.lr_shared", self.lr_shared, lo=0.0)
        check_float("LearnerConfig.lr_own", self.lr_own, lo=0.0)
        check_float("LearnerConfig.transfer_down", self.transfer_down, lo=0.0, lo_open=True)
        check_float("LearnerConfig.transfer_up", self.transfer_up, lo=0.0, lo_open=True)
        check_choice("LearnerConfig.aggregation", self.aggregation, ("token", "prompt"))


class Population(NamedTuple):
    """A fixed population of prompts.

    Attributes:
        difficulty: float32 (N,), latent difficulty in logits.
        topic: int8 (N,), topic of each prompt (indexes a scenario's drift offsets).
        level_low: lowest difficulty covered by the level grid (logits).
        level_high: highest difficulty covered by the level grid (logits).

    Examples:
        >>> pop = Population(np.array([-1.0, 0.5, 3.0], np.float32), np.array([0, 1, 1], np.int8),
        ...                  level_low=-4.0, level_high=8.0)
        >>> pop.num_prompts, pop.difficulty.tolist(), pop.level_high
        (3, [-1.0, 0.5, 3.0], 8.0)
    """

    difficulty: NDArray[np.float32]
    topic: NDArray[np.int8]
    level_low: float
    level_high: float

    @property
    def num_prompts(self) -> int:
        """Number of prompts N."""
        return int(self.difficulty.shape[0])


class Generation(NamedTuple):
    """The outcome of generating rollouts for a batch, in plan order.

    Attributes:
        success: bool (R,), whether each rollout is truly correct.
        reward: float64 (R,), the verifier's verdict in {0, 1} (flipped for noisy scenarios).
        signal: float64 (n,), the GRPO signal g_i of each prompt (0 for an all-equal group).
        prob: float64 (n,), each prompt's true success probability when it was generated.
        levels: int64 (n,), each prompt's level when it was generated.

    Examples:
        Two prompts of difficulty 0 (success probability 0.5 for a fresh learner), 4 rollouts each:

        >>> pop = Population(np.zeros(2, np.float32), np.zeros(2, np.int8), -4.0, 4.0)
        >>> learner = Learner(LearnerConfig(num_levels=4), pop)
        >>> gen = learner.generate(np.random.default_rng(0), np.array([0, 1]), np.array([4, 4]))
        >>> gen.reward.reshape(2, 4)  # prompt 1's group failed entirely: it teaches nothing
        array([[0., 1., 1., 1.],
               [0., 0., 0., 0.]])
        >>> gen.prob.tolist(), gen.levels.tolist(), np.round(gen.signal, 3).tolist()
        ([0.5, 0.5], [2, 2], [0.375, 0.0])
    """

    success: NDArray[np.bool_]
    reward: NDArray[np.float64]
    signal: NDArray[np.float64]
    prob: NDArray[np.float64]
    levels: NDArray[np.int64]


def sigmoid(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Numerically stable logistic function, float64 in (0, 1) up to rounding at the extremes.

    Examples:
        >>> np.round(sigmoid(np.array([-800.0, 0.0, 2.0, 800.0])), 4)
        array([0.    , 0.5   , 0.8808, 1.    ])
    """
    out: NDArray[np.float64] = 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))
    return out


def group_signal(
    reward: NDArray[np.float64], success: NDArray[np.bool_], rollouts: NDArray[np.int64]
) -> NDArray[np.float64]:
    """The GRPO signal of each group: mean over rollouts of advantage times true success.

    Args:
        reward: float64 (R,), verdicts in plan order, R = rollouts.sum().
        success: bool (R,), true outcomes in the same order.
        rollouts: int64 (n,), group sizes (each >= 2).

    Returns:
        float64 (n,), g_i; exactly 0 for a group whose verdicts are all equal.

    Examples:
        A mixed group of 4 with 2 correct has g = sqrt(3/4 * 1/2 * 1/2); an all-correct group
        has 0; a group of 3 with 2 truly correct has g = sqrt(2/3 * 2/3 * 1/3) = 0.385 with clean
        verdicts, and half that when one correct rollout is judged wrong:

        >>> reward = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
        >>> success = np.array([1, 0, 1, 0, 1, 1, 1, 1, 0, 1], dtype=bool)
        >>> np.round(group_signal(reward, success, np.array([4, 3, 3])), 3)
        array([0.433, 0.   , 0.192])
        >>> np.round(group_signal(success.astype(float), success, np.array([4, 3, 3])), 3)
        array([0.433, 0.   , 0.385])
    """
    n = rollouts.astype(np.float64)
    gid = np.repeat(np.arange(rollouts.size), rollouts)
    mean = np.bincount(gid, weights=reward, minlength=rollouts.size) / n
    dev = reward - mean[gid]
    var = np.bincount(gid, weights=dev * dev, minlength=rollouts.size) / (n - 1.0)
    std = np.sqrt(var)
    adv = np.clip(dev / (std[gid] + 1e-6), -5.0, 5.0)
    adv[std[gid] == 0.0] = 0.0
    out: NDArray[np.float64] = np.bincount(gid, weights=adv * success, minlength=rollouts.size) / n
    return out


class Learner:
    """The simulated policy: shared ability per level plus an own term per prompt.

    Args:
        config: the learner's hyperparameters.
        population: the prompts it trains on.

    Examples:
        >>> import numpy as np
        >>> pop = Population(np.array([0.0, 3.0], np.float32), np.zeros(2, np.int8), -1.0, 4.0)
        >>> lrn = Learner(LearnerConfig(num_levels=5), pop)
        >>> np.round(lrn.success_prob(np.array([0, 1])), 3)
        array([0.5  , 0.047])
        >>> lrn.levels(np.array([0.0, 3.0])).tolist()  # 5 levels of 1 logit over [-1, 4)
        [1, 4]

        A step with a positive signal on the hard prompt 1 (level 4) raises its level's ability
        and its own term, and, through the transfer kernel, the easier levels, the more the closer:

        >>> lrn.train(np.array([1]), np.array([4]), np.array([0.4]), np.ones(1), np.array([4]),
        ...           mean=4)
        >>> np.round(lrn.theta, 4)
        array([0.0014, 0.0027, 0.0053, 0.0103, 0.02  ])
        >>> np.round(lrn.success_prob(np.array([0, 1])), 4)
        array([0.5007, 0.0493])
    """

    def __init__(self, config: LearnerConfig, population: Population) -> None:
        self.config = config
        self.population = population
        g = config.num_levels
        self.level_width = (population.level_high - population.level_low) / g
        self.theta = np.zeros(g, dtype=np.float64)  # shared ability per level, logits
        self.own = np.zeros(population.num_prompts, dtype=np.float32)  # own term, logits
        dist = (np.arange(g)[None, :] - np.arange(g)[:, None]) * self.level_width  # l' - l
        self.kernel = np.where(
            dist >= 0.0,
            np.exp(-np.abs(dist) / config.transfer_down),
            np.exp(-np.abs(dist) / config.transfer_up),
        )  # kernel[l, l']: how much a signal at level l' moves level l

    def difficulty(
        self, ids: NDArray[np.int64], offsets: NDArray[np.float64] | None = None
    ) -> NDArray[np.float64]:
        """Current difficulty (logits) of ``ids``: latent difficulty plus their topic's offset."""
        d = self.population.difficulty[ids].astype(np.float64)
        if offsets is not None:
            d += offsets[self.population.topic[ids]]
        return d

    def levels(self, difficulty: NDArray[np.float64]) -> NDArray[np.int64]:
        """Level index in [0, num_levels) of each difficulty (clipped at the grid's ends)."""
        raw = np.floor((difficulty - self.population.level_low) / self.level_width)
        return np.clip(raw, 0, self.config.num_levels - 1).astype(np.int64)

    def success_prob(
        self, ids: NDArray[np.int64], offsets: NDArray[np.float64] | None = None
    ) -> NDArray[np.float64]:
        """True per-rollout success probability of each prompt in ``ids``, float64 in [0, 1]."""
        d = self.difficulty(ids, offsets)
        return sigmoid(self.theta[self.levels(d)] + self.own[ids] - d)

    def generate(
        self,
        rng: np.random.Generator,
        ids: NDArray[np.int64],
        rollouts: NDArray[np.int64],
        *,
        offsets: NDArray[np.float64] | None = None,
        flip_rate: float = 0.0,
    ) -> Generation:
        """Sample ``rollouts[i]`` rollouts for each prompt ``ids[i]`` and compute GRPO signals.

        Args:
            rng: the generation random stream.
            ids: int64 (n,), prompt ids.
            rollouts: int64 (n,), rollouts per prompt (each >= 2).
            offsets: float64 (num_topics,), drift offsets, or None.
            flip_rate: probability in [0, 0.5) that a verdict is flipped.

        Returns:
            The :class:`Generation`, rollouts grouped by prompt in plan order.
        """
        d = self.difficulty(ids, offsets)
        levels = self.levels(d)
        prob = sigmoid(self.theta[levels] + self.own[ids] - d)
        gid = np.repeat(np.arange(ids.size), rollouts)
        success = rng.random(gid.size) < prob[gid]
        verdict = success ^ (rng.random(gid.size) < flip_rate) if flip_rate > 0 else success
        reward = verdict.astype(np.float64)
        return Generation(success, reward, group_signal(reward, success, rollouts), prob, levels)

    def train(
        self,
        ids: NDArray[np.int64],
        levels: NDArray[np.int64],
        signal: NDArray[np.float64],
        weights: NDArray[np.float64],
        rollouts: NDArray[np.int64],
        mean: float,
    ) -> None:
        """Apply one SGD step on a training batch (see the module docstring for the rule).

        Args:
            ids: int64 (n,), prompt ids of the training batch.
            levels: int64 (n,), their levels when generated.
            signal: float64 (n,), their GRPO signals g_i.
            weights: float64 (n,), advantage weights w_i.
            rollouts: int64 (n,), their group sizes.
            mean: the budget, rollouts per prompt on average (``RolloutConfig.mean``; it
                normalises ``"token"`` aggregation).
        """
        if ids.size == 0:
            return
        cfg = self.config
        agg = rollouts / mean if cfg.aggregation == "token" else np.ones(ids.size)
        push = agg * weights * signal
        per_level = np.bincount(levels, weights=push, minlength=cfg.num_levels) / ids.size
        self.theta += cfg.lr_shared * (self.kernel @ per_level)
        np.add.at(self.own, ids, (cfg.lr_own * push).astype(np.float32))
