"""Online difficulty classifier: each prompt's pass rate from its feedback, binned.

The default outcome, ``"rate"``, pools the prompt's correct and total rollouts over its visits
with exponential forgetting (``window`` visits as the memory: decay ``1 - 1/window``), so the
rate estimates the per-rollout pass rate whatever the rollout counts were. ``"any"`` (the
paper's) takes the mean of the last ``window`` per-visit outcomes "some rollout correct";
``"pass@k"`` the mean of per-visit unbiased pass@k. The rate picks a bin (bin 0 = the lowest pass
rates), with hysteresis so a prompt near an edge does not flip back and forth. An unseen prompt
has rate 0 and sits in bin 0. docs/classifier.md has the measurement behind the default.

With the default (``outcome="rate"``) each prompt costs two float64 (decayed correct and total
rollouts), a 2-byte visit count, a 1-byte bin and a 1-byte record of which rollout outcomes it has
ever shown (``flags``: some correct, some wrong): 20 bytes; ``"any"`` with ``window <= 128`` keeps
2 words of bit-packed outcomes instead of the two floats: also 20 bytes.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from gdro_core import _backend
from gdro_core._checks import array_leaf, finite, require
from gdro_core._io import FORMAT_VERSION, check_same_config, configs_json
from gdro_core._reference import bin_of, popcount_rows
from gdro_core._validation import (
    as_ids,
    as_int_array,
    check_choice,
    check_float,
    check_int,
    fail,
    normalize,
    type_fail,
)
from gdro_core.passk import pass_at_k

MAX_BINS = 255
MAX_WINDOW = 4096
#: The classifier's per-visit outcomes (``ClassifierConfig.outcome``).
OUTCOMES = ("rate", "any", "pass@k")


@dataclass(frozen=True, slots=True, kw_only=True)
class ClassifierConfig:
    """Settings of the online difficulty classifier.

    Args:
        num_bins: number of difficulty bins, 1..255; 0 (the default) = derived: 10, or
            ``len(edges) + 1``. The config stores the derived value.
        edges: interior bin edges, strictly increasing in (0, 1); ``None`` = equal-width bins.
        window: a prompt's memory in visits, 0..4096; 0 = cumulative (all history); a negative
            value (the default) = derived: 10 for ``outcome="rate"`` (decay 0.9, measured best in
            docs/classifier.md), 100 for ``"any"`` and ``"pass@k"`` (the paper's scripts). The
            config stores the derived value.
        hysteresis: margin a rate must clear beyond an edge before the bin changes, ``>= 0`` and
            below half the narrowest bin; a negative value (the default) = derived: 0.3 x the
            narrowest bin width (0.03 for 10 bins). The config stores the derived value.
        success_threshold: a rollout is correct when ``reward > success_threshold``.
        outcome: what a visit adds to the history: ``"rate"`` (its correct and total rollouts,
            pooled with forgetting: tracks the per-rollout pass rate and does not depend on how
            many rollouts a prompt got; the default), ``"any"`` (1 if any rollout was correct,
            the paper's; saturates when prompts get many rollouts) or ``"pass@k"`` (the visit's
            unbiased pass@k, needs ``k``).
        k: the k of ``outcome="pass@k"`` (``None`` otherwise).

    Examples:
        >>> ClassifierConfig().num_bins, ClassifierConfig().hysteresis  # derived defaults
        (10, 0.03)
        >>> ClassifierConfig(edges=(0.2, 0.5)).num_bins
        3
        >>> ClassifierConfig() == ClassifierConfig(num_bins=10, hysteresis=0.03)
        True
    """

    num_bins: int = 0
    edges: tuple[float, ...] | None = None
    window: int = -1
    hysteresis: float = -1.0
    success_threshold: float = 0.5
    outcome: str = "rate"
    k: int | None = None

    def __post_init__(self) -> None:
        derive_bins = self.num_bins is None or (
            isinstance(self.num_bins, numbers.Integral)
            and not isinstance(self.num_bins, bool)
            and self.num_bins == 0
        )
        if self.edges is not None:
            if not isinstance(self.edges, tuple):
                raise type_fail("ClassifierConfig.edges", "a tuple of floats or None", self.edges)
            edges = tuple(
                check_float(
                    f"ClassifierConfig.edges[{i}]", e, lo=0.0, hi=1.0, lo_open=True, hi_open=True
                )
                for i, e in enumerate(self.edges)
            )
            normalize(self, edges=edges)
            if any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
                raise fail("ClassifierConfig.edges", "strictly increasing", self.edges)
            if len(edges) + 1 > MAX_BINS:
                raise fail("len(ClassifierConfig.edges)", f"<= {MAX_BINS - 1}", len(edges))
            if not derive_bins:
                nb = check_int("ClassifierConfig.num_bins", self.num_bins, lo=0, hi=MAX_BINS)
                if nb != len(edges) + 1:
                    raise fail(
                        "ClassifierConfig.num_bins and ClassifierConfig.edges",
                        f"consistent (num_bins == len(edges) + 1 = {len(edges) + 1}, or 0)",
                        nb,
                    )
            normalize(self, num_bins=len(edges) + 1)
        elif derive_bins:
            normalize(self, num_bins=10)
        else:
            normalize(
                self,
                num_bins=check_int("ClassifierConfig.num_bins", self.num_bins, lo=0, hi=MAX_BINS),
            )
        normalize(
            self,
            outcome=str(check_choice("ClassifierConfig.outcome", self.outcome, OUTCOMES)),
            success_threshold=check_float(
                "ClassifierConfig.success_threshold", self.success_threshold
            ),
        )
        window = check_int("ClassifierConfig.window", self.window, hi=MAX_WINDOW)
        if window < 0:
            window = 10 if self.outcome == "rate" else 100
        normalize(self, window=window)
        if self.k is not None:
            normalize(self, k=check_int("ClassifierConfig.k", self.k, lo=1, hi=1024))
        if (self.outcome == "pass@k") != (self.k is not None):
            raise fail(
                "ClassifierConfig.k",
                "an integer with outcome='pass@k' and None otherwise",
                self.k,
                fix=f"outcome is {self.outcome!r}",
            )
        if self.hysteresis is None:  # configs saved before the derived value was stored
            normalize(self, hysteresis=-1.0)
        h = check_float("ClassifierConfig.hysteresis", self.hysteresis)
        limit = self.min_width / 2
        if h < 0:
            h = round(0.3 * self.min_width, 12)  # 0.03, not 0.030000000000000002
        elif not h < limit:
            raise fail(
                "ClassifierConfig.hysteresis",
                f">= 0 and below half the narrowest bin width ({limit:g}), or negative (derived)",
                h,
            )
        normalize(self, hysteresis=h)

    @property
    def bins(self) -> int:
        """Deprecated: ``num_bins``."""
        warnings.warn(
            "ClassifierConfig.bins is deprecated; use ClassifierConfig.num_bins",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.num_bins

    @property
    def margin(self) -> float:
        """Deprecated: ``hysteresis``."""
        warnings.warn(
            "ClassifierConfig.margin is deprecated; use ClassifierConfig.hysteresis",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.hysteresis

    @property
    def edge_array(self) -> NDArray[np.float64]:
        """float64 (bins - 1,): interior edges; a rate equal to an edge goes to the upper bin."""
        if self.edges is not None:
            return np.asarray(self.edges, dtype=np.float64)
        b = self.num_bins
        return np.arange(1, b, dtype=np.float64) / b

    @property
    def min_width(self) -> float:
        """Width of the narrowest bin."""
        pts = np.concatenate([[0.0], self.edge_array, [1.0]])
        return float(np.diff(pts).min())

    @property
    def bit_packed(self) -> bool:
        """True when outcomes are 0/1 in a sliding window, stored one bit per step."""
        return self.outcome == "any" and self.window > 0

    @property
    def decay(self) -> float:
        """The ``"rate"`` outcome's forgetting factor per visit: ``1 - 1/window`` (1 if cumulative)."""
        return 1.0 - 1.0 / self.window if self.window > 0 else 1.0


class ClassifierState(NamedTuple):
    """Per-prompt history. One storage is in use; the unused arrays have a zero-length axis.

    ``sums`` and ``mass`` hold the decayed correct and total rollouts (``outcome="rate"``);
    ``bits`` holds 0/1 outcomes one bit per visit (``"any"`` with a window); ``vals`` holds
    pass@k outcomes (``"pass@k"`` with a window); ``sums`` alone holds cumulative outcome sums
    (``"any"`` or ``"pass@k"`` with ``window=0``).

    Examples:
        >>> st = init_state(ClassifierConfig(num_bins=4), num_prompts=3)
        >>> st.sums.shape, st.mass.shape, st.bits.shape  # the default: pooled rates
        ((3,), (3,), (3, 0))
        >>> st = init_state(ClassifierConfig(num_bins=4, window=100, outcome="any"), num_prompts=3)
        >>> st.bits.shape, st.vals.shape, st.sums.shape  # 100 visits fit in 2 words
        ((3, 2), (3, 0), (0,))
        >>> st.filled.tolist(), st.bins.tolist(), st.bin_counts.tolist(), st.flags.tolist()
        ([0, 0, 0], [0, 0, 0], [3, 0, 0, 0], [0, 0, 0])
        >>> init_state(ClassifierConfig(window=0, outcome="any"), num_prompts=3).sums.tolist()
        [0.0, 0.0, 0.0]
    """

    bits: NDArray[np.uint64]  # (num_prompts, ceil(window/64)) 0/1 outcomes, bit 0 newest; or (P, 0)
    vals: NDArray[np.float64]  # (num_prompts, window) pass@k outcomes, column 0 newest; or (P, 0)
    sums: NDArray[np.float64]  # (num_prompts,) decayed correct rollouts, or outcome sums; or (0,)
    mass: NDArray[np.float64]  # (num_prompts,) decayed total rollouts (outcome "rate"); or (0,)
    filled: (
        NDArray[np.uint16] | NDArray[np.uint32]
    )  # (num_prompts,) entries held (uint32 if window 0)
    bins: NDArray[np.uint8]  # (num_prompts,) current bin, 0 = lowest pass rate
    bin_counts: NDArray[np.int64]  # (num_bins,) prompts per bin over the whole dataset
    flags: NDArray[np.uint8]  # (num_prompts,) bit 0: a correct rollout seen, bit 1: a wrong one


#: ``ClassifierState.flags`` bits: some rollout of the prompt was correct / was wrong, ever.
SEEN_CORRECT = 1
SEEN_WRONG = 2


def seen_flags(n_correct: NDArray[np.int64], n_total: NDArray[np.int64]) -> NDArray[np.uint8]:
    """uint8 (m,): the ``flags`` bits one visit sets (``SEEN_CORRECT`` and/or ``SEEN_WRONG``).

    Examples:
        >>> seen_flags(np.array([0, 2, 4]), np.array([4, 4, 4])).tolist()
        [2, 3, 1]
    """
    out: NDArray[np.uint8] = (
        (n_correct > 0) * SEEN_CORRECT + (n_correct < n_total) * SEEN_WRONG
    ).astype(np.uint8)
    return out


class ClassifierDelta(NamedTuple):
    """The rows one ``step`` changes; ``apply`` writes them into the state in place.

    Examples:
        >>> cfg = ClassifierConfig(num_bins=4, window=3, outcome="any")
        >>> delta = step(cfg, init_state(cfg, 3), np.array([0, 2]), np.array([1, 0]), np.array([4, 4]))
        >>> delta.ids.tolist(), delta.rate.tolist(), delta.filled.tolist()
        ([0, 2], [1.0, 0.0], [1, 1])
        >>> delta.old_bins.tolist(), delta.new_bins.tolist(), delta.bits.tolist()
        ([0, 0], [3, 0], [[1], [0]])
    """

    ids: NDArray[np.int64]  # (m,) prompt ids
    bits: NDArray[np.uint64]  # (m, W) new bit rows
    vals: NDArray[np.float64]  # (m, H) new value rows
    sums: NDArray[np.float64]  # (m,) or (0,) new sums
    mass: NDArray[np.float64]  # (m,) or (0,) new decayed rollout totals
    filled: NDArray[np.int64]  # (m,) new counts
    old_bins: NDArray[np.int64]  # (m,) bins before the step
    new_bins: NDArray[np.int64]  # (m,) bins after the step
    rate: NDArray[np.float64]  # (m,) pass rates after the step
    flags: NDArray[np.uint8]  # (m,) new outcome flags


def init_state(config: ClassifierConfig, num_prompts: int) -> ClassifierState:
    """Every prompt unseen: no history, rate 0, bin 0.

    Args:
        config: the classifier settings; they fix which history arrays are used and their width.
        num_prompts: dataset size, ``>= 1``.

    Examples:
        >>> st = init_state(ClassifierConfig(num_bins=3), num_prompts=4)
        >>> st.bins.tolist(), st.bin_counts.tolist()
        ([0, 0, 0, 0], [4, 0, 0])
        >>> init_state(ClassifierConfig(), num_prompts=0)
        Traceback (most recent call last):
        ...
        ValueError: num_prompts must be an integer in [1, 2147483646]; got 0
    """
    p = check_int("num_prompts", num_prompts, lo=1, hi=2**31 - 2)
    words = -(-config.window // 64) if config.bit_packed else 0
    width = config.window if (config.outcome == "pass@k" and config.window > 0) else 0
    pooled = config.outcome == "rate"
    counts = np.zeros(config.num_bins, dtype=np.int64)
    counts[0] = p
    filled: NDArray[np.uint16] | NDArray[np.uint32] = (
        np.zeros(p, dtype=np.uint32) if config.window == 0 else np.zeros(p, dtype=np.uint16)
    )
    return ClassifierState(
        bits=np.zeros((p, words), dtype=np.uint64),
        vals=np.zeros((p, width), dtype=np.float64),
        sums=np.zeros(p if (config.window == 0 or pooled) else 0, dtype=np.float64),
        mass=np.zeros(p if pooled else 0, dtype=np.float64),
        filled=filled,
        bins=np.zeros(p, dtype=np.uint8),
        bin_counts=counts,
        flags=np.zeros(p, dtype=np.uint8),
    )


def outcomes(
    config: ClassifierConfig, n_correct: NDArray[np.int64], n_total: NDArray[np.int64]
) -> NDArray[np.float64]:
    """A visit's outcome per prompt: the correct rollouts (``"rate"``, pooled with the totals),
    ``n_correct > 0`` (``"any"``) or the unbiased pass@k (``"pass@k"``).

    Examples:
        >>> correct, total = np.array([0, 1, 3]), np.array([4, 4, 4])
        >>> outcomes(ClassifierConfig(), correct, total).tolist()
        [0.0, 1.0, 3.0]
        >>> outcomes(ClassifierConfig(outcome="any"), correct, total).tolist()
        [0.0, 1.0, 1.0]
        >>> outcomes(ClassifierConfig(outcome="pass@k", k=2), correct, total).tolist()
        [0.0, 0.5, 1.0]
    """
    if config.outcome == "rate":
        return n_correct.astype(np.float64)
    if config.outcome == "any":
        return (n_correct > 0).astype(np.float64)
    assert config.k is not None  # checked by the config
    short = n_total < config.k
    if short.any():
        raise fail(
            "n_total",
            f">= ClassifierConfig.k = {config.k} for every prompt",
            int(n_total[short][0]),
            fix="give each prompt at least k rollouts (RolloutConfig.fewest >= k)",
        )
    return np.asarray(pass_at_k(n_total, n_correct, config.k), dtype=np.float64)


def step(
    config: ClassifierConfig,
    state: ClassifierState,
    ids: NDArray[np.int64],
    n_correct: NDArray[np.int64],
    n_total: NDArray[np.int64],
    backend: str = "numba",
) -> ClassifierDelta:
    """One history entry per prompt in ``ids``, from its correct and total rollouts, without
    touching ``state``.

    Hysteresis (``h`` = ``config.hysteresis``, ``b`` = stored bin, ``bin(x)`` = the bin of rate ``x``):
    if ``bin(rate) > b`` move to ``bin(rate - h)`` when that is above ``b``; if ``bin(rate) < b``
    move to ``bin(rate + h)`` when that is below ``b``; otherwise stay. A prompt's first
    classification uses no hysteresis. The prompts' ``flags`` take the visit's outcomes.

    Examples:
        Two bins split at 0.5 with a 0.2 margin: a prompt solved once, then failed, drifts
        down to a rate of 0.25 before it leaves the upper bin.

        >>> cfg = ClassifierConfig(num_bins=2, window=0, hysteresis=0.2, outcome="any")
        >>> st = init_state(cfg, num_prompts=1)
        >>> for c in [4, 0, 0, 0]:
        ...     delta = step(cfg, st, np.array([0]), np.array([c]), np.array([4]))
        ...     apply(st, delta)
        ...     print(round(float(delta.rate[0]), 3), int(delta.new_bins[0]))
        1.0 1
        0.5 1
        0.333 1
        0.25 0

        The pooled rate counts rollouts, not visits: 3 of 4, then 1 of 12 (decay 0.9):

        >>> cfg = ClassifierConfig(num_bins=10)
        >>> st = init_state(cfg, num_prompts=1)
        >>> for c, n in [(3, 4), (1, 12)]:
        ...     apply(st, step(cfg, st, np.array([0]), np.array([c]), np.array([n])))
        >>> round(float(pass_rate(st, np.array([0]))[0]), 4)  # (0.9 x 3 + 1) / (0.9 x 4 + 12)
        0.2372
    """
    k = _backend.kernels(backend)
    edges, margin = _edges_margin(config)
    bit_rows, val_rows, new_sums, new_mass, new_count, new_bins, rate = k.classifier_step(
        state.bits,
        state.vals,
        state.sums,
        state.mass,
        state.filled,
        state.bins,
        ids,
        outcomes(config, n_correct, n_total),
        n_total.astype(np.float64),
        config.window,
        config.decay,
        edges,
        margin,
    )
    return ClassifierDelta(
        ids=ids,
        bits=bit_rows,
        vals=val_rows,
        sums=new_sums,
        mass=new_mass,
        filled=new_count,
        old_bins=state.bins[ids].astype(np.int64),
        new_bins=new_bins,
        rate=rate,
        flags=state.flags[ids] | seen_flags(n_correct, n_total),
    )


@lru_cache(maxsize=64)
def _edges_margin(config: ClassifierConfig) -> tuple[NDArray[np.float64], float]:
    """The edge array and hysteresis of a config, computed once (configs are frozen and hashable)."""
    edges = config.edge_array
    edges.setflags(write=False)
    return edges, config.hysteresis


def apply(state: ClassifierState, delta: ClassifierDelta) -> None:
    """Write ``delta`` into ``state`` in place.

    Per-prompt arrays are updated in place rather than copied: a copy would make every step cost
    O(dataset size). Everything that can fail happens in ``step``, before this.

    Examples:
        >>> cfg = ClassifierConfig(num_bins=4, window=3, outcome="any")
        >>> st = init_state(cfg, num_prompts=3)
        >>> delta = step(cfg, st, np.array([0, 2]), np.array([1, 0]), np.array([4, 4]))
        >>> st.bins.tolist()  # step left the state alone
        [0, 0, 0]
        >>> apply(st, delta)
        >>> st.bins.tolist(), st.bin_counts.tolist(), st.filled.tolist()
        ([3, 0, 0], [2, 0, 0, 1], [1, 0, 1])
    """
    ids = delta.ids
    if state.bits.shape[1]:
        state.bits[ids] = delta.bits
    if state.vals.shape[1]:
        state.vals[ids] = delta.vals
    if state.sums.shape[0]:
        state.sums[ids] = delta.sums
    if state.mass.shape[0]:
        state.mass[ids] = delta.mass
    state.filled[ids] = delta.filled
    state.bins[ids] = delta.new_bins
    state.flags[ids] = delta.flags
    b = state.bin_counts.shape[0]
    state.bin_counts[:] += np.bincount(delta.new_bins, minlength=b) - np.bincount(
        delta.old_bins, minlength=b
    )


def pass_rate(
    state: ClassifierState, ids: NDArray[np.int64], backend: str = "numba"
) -> NDArray[np.float64]:
    """float64 (m,): each prompt's current pass rate (0 for an unseen prompt).

    Examples:
        >>> cfg = ClassifierConfig(window=2, outcome="any")
        >>> st = init_state(cfg, num_prompts=2)
        >>> for c in [1, 0, 0]:  # the window keeps the last two visits
        ...     apply(st, step(cfg, st, np.array([0]), np.array([c]), np.array([4])))
        ...     print(pass_rate(st, np.array([0, 1])).tolist())
        [1.0, 0.0]
        [0.5, 0.0]
        [0.0, 0.0]
    """
    out: NDArray[np.float64] = _backend.kernels(backend).window_rate(
        state.bits, state.vals, state.sums, state.mass, state.filled, ids
    )
    return out


def bin_of_rate(config: ClassifierConfig, rate: Any) -> NDArray[np.int64]:
    """The bin of each pass rate, without hysteresis (edge ties go to the upper bin).

    Examples:
        >>> bin_of_rate(ClassifierConfig(num_bins=100), [0.57, 0.999, 1.0]).tolist()
        [57, 99, 99]
    """
    return bin_of(np.asarray(rate, dtype=np.float64), config.edge_array)


class DifficultyClassifier:
    """Stateful wrapper: per-prompt windows and bins for ``num_prompts`` prompts.

    Args:
        config: the classifier settings.
        num_prompts: dataset size; prompt ids are ``0..num_prompts-1``.
        backend: ``"numba"`` (default) or ``"numpy"`` (the reference kernels).

    Examples:
        >>> clf = DifficultyClassifier(ClassifierConfig(num_bins=4, window=3), num_prompts=3)
        >>> clf.update([0, 1], n_correct=[1, 0], n_total=[4, 4])
        >>> clf.update([0], n_correct=[0], n_total=[4])  # 1 of 8 rollouts, the first decayed
        >>> clf.pass_rate([0, 1, 2]).round(4).tolist(), clf.bins([0, 1, 2]).tolist()
        ([0.1, 0.0, 0.0], [0, 0, 0])
    """

    def __init__(
        self,
        config: ClassifierConfig | None = None,
        num_prompts: int = 1,
        *,
        backend: str = "numba",
    ) -> None:
        if config is None:
            config = ClassifierConfig()
        if not isinstance(config, ClassifierConfig):
            raise type_fail("config", "a ClassifierConfig", config)
        _backend.kernels(backend)
        self.config = config
        self.num_prompts = check_int("num_prompts", num_prompts, lo=1, hi=2**31 - 2)
        self.backend = backend
        self.state = init_state(config, self.num_prompts)

    def bins(self, ids: Any) -> NDArray[np.int64]:
        """int64 (m,): the current bin of each prompt (duplicates allowed here)."""
        idx = check_ids(ids, self.num_prompts)
        return self.state.bins[idx].astype(np.int64)

    def pass_rate(self, ids: Any) -> NDArray[np.float64]:
        """float64 (m,): the current pass rate of each prompt."""
        return pass_rate(self.state, check_ids(ids, self.num_prompts), self.backend)

    def update(self, ids: Any, n_correct: Any, n_total: Any) -> None:
        """Add one window entry per prompt; ``ids`` unique, ``0 <= n_correct <= n_total``, ``n_total >= 1``."""
        idx = as_ids("ids", ids, self.num_prompts)
        correct, total = check_counts(n_correct, n_total, idx.shape[0])
        apply(self.state, step(self.config, self.state, idx, correct, total, self.backend))

    def state_dict(self) -> dict[str, Any]:
        """Arrays and plain values only; ``load_state_dict`` restores it exactly."""
        d: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "config": configs_json({"classifier": self.config}),
            "num_prompts": self.num_prompts,
        }
        d.update({f: np.array(getattr(self.state, f), copy=True) for f in ClassifierState._fields})
        return d

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore a ``state_dict``; another config or dataset size is a ``ValueError``."""
        version = check_same_config(d, {"classifier": self.config}, self.num_prompts)
        self.state = check_state(d, self.config, self.num_prompts, "state", version)


def check_state(
    src: dict[str, Any], config: ClassifierConfig, num_prompts: int, where: str, version: int
) -> ClassifierState:
    """A validated ``ClassifierState`` from the arrays of a state dict (copied).

    Every field is checked against the state ``init_state`` would build (dtype, shape), then the
    values: counts within the window, no bits beyond it and no more ones than entries, rates in
    [0, 1], bins in range (bin 0 for unseen prompts), bin counts that match the bins, flags in
    [0, 3]. Format 1 states carry no flags; they start at 0.

    Args:
        src: the arrays (a state dict's classifier section).
        config: the classifier settings the state must fit.
        num_prompts: dataset size.
        where: how errors name ``src`` (e.g. ``"state['classifier']"``).
        version: the state-dict format.

    Examples:
        >>> cfg = ClassifierConfig(num_bins=3)
        >>> st = init_state(cfg, 2)
        >>> d = st._asdict(); d["bins"] = np.array([0, 7], dtype=np.uint8)
        >>> check_state(d, cfg, 2, "state", 2)
        Traceback (most recent call last):
        ...
        ValueError: state['bins'] must be bins in [0, 3); got 7
    """
    tpl = init_state(config, num_prompts)
    out: dict[str, NDArray[Any]] = {}
    for f in ClassifierState._fields:
        ref = getattr(tpl, f)
        if f == "flags" and version == 1 and f not in src:
            out[f] = np.zeros_like(ref)  # format 1 kept no flags: nothing known yet
            continue
        if f == "mass" and f not in src and ref.shape[0] == 0:
            out[f] = ref  # states written before the pooled rate existed
            continue
        out[f] = array_leaf(src, f, where, ref.dtype, ref.shape)
    n = f"{where}"
    window, b = config.window, config.num_bins
    filled = out["filled"].astype(np.int64)
    if window > 0:
        finite(filled.astype(np.float64), f"{n}['filled']", 0, window)
    unseen = filled == 0
    bits = out["bits"]
    if bits.shape[1]:
        rem = window % 64
        if rem:
            top = bits[:, -1] >> np.uint64(rem)
            require(
                not top.any(),
                f"{n}['bits']",
                f"no bits beyond the window of {window}",
                "stray bits",
            )
        pop = popcount_rows(bits)
        require(
            (pop <= filled).all(),
            f"{n}['bits']",
            "at most 'filled' ones per row",
            "more ones than entries",
        )
    if out["vals"].shape[1]:
        finite(out["vals"], f"{n}['vals']", 0.0, 1.0)
    mass = out["mass"]
    if mass.shape[0]:
        finite(mass, f"{n}['mass']", 0.0)
        require(
            np.array_equal(mass == 0, unseen),
            f"{n}['mass']",
            "0 exactly for unseen prompts",
            "a seen prompt without rollouts, or an unseen one with some",
        )
        finite(out["sums"], f"{n}['sums']", 0.0)
        require(
            (out["sums"] <= mass).all(),
            f"{n}['sums']",
            "at most 'mass' per prompt (a rate <= 1)",
            "more correct than total rollouts",
        )
    elif out["sums"].shape[0]:
        finite(out["sums"], f"{n}['sums']", 0.0)
        require(
            (out["sums"] <= filled).all(),
            f"{n}['sums']",
            "at most 'filled' per prompt",
            "larger sums",
        )
    cbins = out["bins"].astype(np.int64)
    require((cbins < b).all(), f"{n}['bins']", f"bins in [0, {b})", int(cbins.max()))
    require(
        not cbins[unseen].any(),
        f"{n}['bins']",
        "bin 0 for unseen prompts",
        "an unseen prompt elsewhere",
    )
    counts = np.bincount(cbins, minlength=b)
    require(
        np.array_equal(counts, out["bin_counts"]),
        f"{n}['bin_counts']",
        f"the bin counts of 'bins' ({counts.tolist()})",
        out["bin_counts"],
    )
    flags = out["flags"]
    require(
        not (flags & np.uint8(0xFC)).any(), f"{n}['flags']", "values in [0, 3]", int(flags.max())
    )
    require(
        not flags[unseen].any(),
        f"{n}['flags']",
        "0 for unseen prompts",
        "flags of an unseen prompt",
    )
    return ClassifierState(**out)


def check_counts(
    n_correct: Any, n_total: Any, m: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Validate per-prompt correct and total counts: integers, ``0 <= c <= n``, ``n >= 1``."""
    c = as_int_array("n_correct", n_correct, length=m)
    n = as_int_array("n_total", n_total, length=m)
    if (n < 1).any():
        raise fail("n_total", "integers >= 1", int(n[n < 1][0]))
    bad = (c < 0) | (c > n)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise fail(f"n_correct[{i}]", f"in [0, n_total[{i}] = {int(n[i])}]", int(c[i]))
    return c, n


def check_ids(ids: Any, num_prompts: int) -> NDArray[np.int64]:
    """int64 (m,): ``ids`` as prompt ids in ``[0, num_prompts)`` (repeats allowed).

    Examples:
        >>> check_ids([3, 3, 0], 4).tolist()
        [3, 3, 0]
        >>> check_ids([4], 4)
        Traceback (most recent call last):
        ...
        ValueError: ids must be ids in [0, 4); got 4
    """
    idx = as_int_array("ids", ids)
    bad = (idx < 0) | (idx >= num_prompts)
    if bad.any():
        raise fail("ids", f"ids in [0, {num_prompts})", int(idx[bad][0]))
    return idx


__all__ = [
    "ClassifierConfig",
    "ClassifierState",
    "ClassifierDelta",
    "DifficultyClassifier",
    "init_state",
    "outcomes",
    "step",
    "apply",
    "pass_rate",
    "bin_of_rate",
    "check_ids",
    "check_state",
    "seen_flags",
    "SEEN_CORRECT",
    "SEEN_WRONG",
]
