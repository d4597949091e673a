"""The controller's prompt sampler: reshuffled epochs, or bins drawn from the adversary's q.

* ``uniform``: each epoch is a fresh permutation of all ids; a batch that straddles two epochs
  has no duplicate (ids that would repeat are served later in the new epoch).
* ``resample``: draw each slot's bin from q, then prompts uniformly without replacement within
  the bin. A bin that runs out sends its extra slots to the nearest bin with unused prompts (the
  harder one on a tie). Prompts are kept grouped by bin in ``members`` (contiguous segments), so
  a draw costs O(batch), independent of the dataset size.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "SamplerState",
    "init_state",
    "sample_probs",
    "sample_resample",
    "sample_uniform",
    "slot_counts",
]


class SamplerState(NamedTuple):
    """Sampler bookkeeping. Unused arrays are empty.

    Examples:
        >>> st = init_state(5, num_bins=2, resample=True, rng=np.random.default_rng(0))
        >>> st.perm.tolist(), st.members.tolist(), st.bin_start.tolist()  # all in bin 0
        ([], [0, 1, 2, 3, 4], [0, 5, 5])
        >>> st = init_state(5, num_bins=2, resample=False, rng=np.random.default_rng(0))
        >>> st.perm.tolist(), st.pos, st.epoch, st.members.tolist()
        ([2, 4, 3, 0, 1], 0, 1, [])
    """

    perm: NDArray[np.int32]  # (P,) this epoch's order (uniform); or (0,)
    pos: int  # ids of ``perm`` already served
    epoch: int  # epochs started
    members: NDArray[np.int32]  # (P,) prompt ids grouped by bin (resample); or (0,)
    member_pos: NDArray[np.int32]  # (P,) index of each prompt in ``members``; or (0,)
    bin_start: NDArray[
        np.int64
    ]  # (B+1,) segment starts in ``members``; bin b = [start[b], start[b+1])


def init_state(
    num_prompts: int, num_bins: int, resample: bool, rng: np.random.Generator
) -> SamplerState:
    """Uniform: the first epoch's permutation. Resample: every prompt in bin 0.

    Args:
        num_prompts: dataset size.
        num_bins: number of difficulty bins.
        resample: ``True`` for the resample sampler (prompts grouped by bin), ``False`` for
            reshuffled epochs.
        rng: draws the first epoch's permutation (unused when ``resample``).

    Examples:
        >>> init_state(4, 3, resample=True, rng=np.random.default_rng(0)).bin_start.tolist()
        [0, 4, 4, 4]
        >>> init_state(4, 3, resample=False, rng=np.random.default_rng(0)).perm.tolist()
        [2, 0, 1, 3]
    """
    start = np.full(num_bins + 1, num_prompts, dtype=np.int64)
    start[0] = 0
    if resample:
        ar = np.arange(num_prompts, dtype=np.int32)
        return SamplerState(np.zeros(0, np.int32), 0, 0, ar, ar.copy(), start)
    perm = rng.permutation(num_prompts).astype(np.int32)
    return SamplerState(perm, 0, 1, np.zeros(0, np.int32), np.zeros(0, np.int32), start)


def sample_uniform(
    state: SamplerState, batch_size: int, rng: np.random.Generator
) -> tuple[NDArray[np.int64], SamplerState]:
    """The next ``batch_size`` ids of the epoch order, starting a new epoch when this one ends.

    Returns ``(ids, new_state)``; ``state`` is not mutated.

    Examples:
        Two batches of 3 from 5 prompts: the second takes the epoch's last two ids and one
        from a new epoch, never repeating an id within the batch.

        >>> rng = np.random.default_rng(0)
        >>> st = init_state(5, 1, resample=False, rng=rng)
        >>> ids, st = sample_uniform(st, 3, rng)
        >>> ids.tolist(), st.pos, st.epoch
        ([2, 4, 3], 3, 1)
        >>> ids, st = sample_uniform(st, 3, rng)
        >>> ids.tolist(), st.pos, st.epoch
        ([0, 1, 4], 1, 2)
    """
    n = state.perm.shape[0]
    take = min(batch_size, n - state.pos)
    head = state.perm[state.pos : state.pos + take].astype(np.int64)
    if take == batch_size:
        return head, state._replace(pos=state.pos + take)
    need = batch_size - take
    perm = rng.permutation(n).astype(np.int32)
    window = perm[: need + take]
    clash = np.isin(window, head)
    chosen = window[~clash][:need]
    rest = window[~np.isin(window, chosen)]
    perm[: window.shape[0]] = np.concatenate([chosen, rest])
    ids = np.concatenate([head, chosen.astype(np.int64)])
    return ids, state._replace(perm=perm, pos=need, epoch=state.epoch + 1)


def slot_counts(
    q: NDArray[np.float64], sizes: NDArray[np.int64], batch_size: int, rng: np.random.Generator
) -> NDArray[np.int64]:
    """Prompts to draw per bin: multinomial from q, overflow sent to the nearest bins with room.

    Args:
        q: float64 (B,), the distribution over bins.
        sizes: int64 (B,), prompts available per bin.
        batch_size: slots to fill, at most ``sizes.sum()``.
        rng: draws the multinomial.

    Examples:
        Bin 2 holds one prompt but gets all three slots: the two extra slots go to the nearest
        bin with room (bin 1; on a tie between two bins at the same distance, the lower one).

        >>> rng = np.random.default_rng(0)
        >>> slot_counts(np.array([0.0, 0.0, 1.0]), np.array([2, 2, 1]), 3, rng).tolist()
        [0, 2, 1]
    """
    counts = rng.multinomial(batch_size, q).astype(np.int64)
    excess = np.maximum(counts - sizes, 0)
    counts -= excess
    num_bins = q.shape[0]
    for b in np.flatnonzero(excess):
        left = int(excess[b])
        for d in range(1, num_bins):
            for c in (b - d, b + d):  # the harder (lower) bin first
                if 0 <= c < num_bins and left:
                    give = min(left, int(sizes[c] - counts[c]))
                    counts[c] += give
                    left -= give
            if not left:
                break
    return counts


def sample_resample(
    state: SamplerState, q: NDArray[np.float64], batch_size: int, rng: np.random.Generator
) -> NDArray[np.int64]:
    """Draw ``batch_size`` distinct ids: bins from q, prompts uniformly within each bin.

    Examples:
        Prompts 0-2 in bin 0 and 3-4 in bin 1 (``members`` is grouped by bin), all draws on bin 1:

        >>> st = init_state(5, num_bins=2, resample=True, rng=np.random.default_rng(0))
        >>> st = st._replace(bin_start=np.array([0, 3, 5]))
        >>> q = np.array([0.0, 1.0])
        >>> sorted(sample_resample(st, q, 2, np.random.default_rng(0)).tolist())
        [3, 4]
        >>> sorted(sample_resample(st, q, 4, np.random.default_rng(0)).tolist())  # bin 1 runs out
        [1, 2, 3, 4]
    """
    sizes = np.diff(state.bin_start)
    counts = slot_counts(q, sizes, batch_size, rng)
    parts = []
    for b in np.flatnonzero(counts):
        pick = rng.choice(int(sizes[b]), size=int(counts[b]), replace=False)
        parts.append(state.members[state.bin_start[b] + pick].astype(np.int64))
    ids = np.concatenate(parts)
    return ids[rng.permutation(ids.shape[0])]


def sample_probs(
    state: SamplerState, q: NDArray[np.float64] | None, bins: NDArray[np.int64], num_prompts: int
) -> NDArray[np.float64]:
    """float64 (m,): each prompt's probability of being drawn by one draw of the sampler.

    ``q=None`` is the uniform sampler (``1 / num_prompts``); otherwise ``q(b) / size(b)``.

    Examples:
        Four prompts in bin 0 and one in bin 1, with q = (0.5, 0.5):

        >>> st = init_state(5, num_bins=2, resample=True, rng=np.random.default_rng(0))
        >>> st = st._replace(bin_start=np.array([0, 4, 5]))
        >>> sample_probs(st, np.array([0.5, 0.5]), np.array([0, 1]), num_prompts=5).tolist()
        [0.125, 0.5]
        >>> sample_probs(st, None, np.array([0, 1]), num_prompts=5).tolist()  # uniform sampler
        [0.2, 0.2]
    """
    if q is None:
        return np.full(bins.shape[0], 1.0 / num_prompts)
    sizes = np.diff(state.bin_start)
    out: NDArray[np.float64] = q[bins] / np.maximum(sizes[bins], 1)
    return out
