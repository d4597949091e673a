"""The controller's prompt sampler: reshuffled epochs, or bins drawn from the adversary's q.

* ``uniform``: each epoch is a fresh permutation of all ids; a batch that straddles two epochs
  has no duplicate (ids that would repeat are served later in the new epoch). Ids handed out in
  plans still in flight are skipped and served later.
* ``resample``: each bin's expected number of slots is ``m * q(b)``, capped at the prompts the bin
  has available; the mass a bin cannot take (an empty bin, a bin smaller than its share) moves to
  the nearest bins with room (the harder one on a tie). The slot counts are then drawn by
  systematic sampling (one uniform offset), so each bin gets the floor or the ceiling of its
  expected count and the batch size exactly, and prompts are drawn uniformly without replacement
  within each bin. Each prompt's probability is therefore exact and cheap: a slot holds prompt
  ``i`` of bin ``b`` with probability ``q''(b) / available(b)`` (``slot_probs``). Prompts are kept
  grouped by bin in ``members`` (contiguous segments), so a draw costs O(batch + bins),
  independent of the dataset size.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from gdro_core import _backend

__all__ = [
    "SamplerState",
    "apply_moves",
    "capped_mass",
    "init_state",
    "sample_probs",
    "sample_resample",
    "sample_uniform",
    "slot_counts",
]

_EMPTY = np.zeros(0, dtype=np.int64)


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


def _first_free(
    order: NDArray[np.int32], need: int, busy: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
    """The first ``need`` ids of ``order`` not in ``busy``, and ``order`` with them moved first."""
    free = ~np.isin(order, busy)
    pick = np.flatnonzero(free)[:need]
    chosen = order[pick]
    rest = np.delete(order, pick)
    return chosen.astype(np.int64), np.concatenate([chosen, rest]).astype(np.int32)


def sample_uniform(
    state: SamplerState,
    batch_size: int,
    rng: np.random.Generator,
    busy: NDArray[np.int64] = _EMPTY,
) -> tuple[NDArray[np.int64], SamplerState]:
    """The next ``batch_size`` ids of the epoch order, starting a new epoch when this one ends.

    Ids in ``busy`` (prompts in plans still in flight) are skipped and stay in the epoch, to be
    served later. Returns ``(ids, new_state)``; ``state`` is not mutated. The caller ensures
    ``batch_size + len(busy) <= num_prompts``.

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
        >>> st.perm.tolist()[st.pos:]
        [1, 2, 0, 3]
        >>> ids, st = sample_uniform(st, 3, rng, busy=np.array([2]))  # 2 is in flight: later
        >>> ids.tolist(), st.perm[st.pos:].tolist()
        ([1, 0, 3], [2])
    """
    n = state.perm.shape[0]
    if busy.shape[0] == 0:
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
    # some ids are in flight: skip them, keeping them in the unserved part of the epoch
    tail = state.perm[state.pos :]
    head, reordered = _first_free(tail, batch_size, busy)
    perm = state.perm.copy()
    perm[state.pos :] = reordered
    if head.shape[0] == batch_size:
        return head, state._replace(perm=perm, pos=state.pos + batch_size)
    need = batch_size - head.shape[0]
    perm = rng.permutation(n).astype(np.int32)
    fresh, perm = _first_free(perm, need, np.concatenate([busy, head]))
    return np.concatenate([head, fresh]), state._replace(perm=perm, pos=need, epoch=state.epoch + 1)


def capped_mass(
    q: NDArray[np.float64], sizes: NDArray[np.int64], batch_size: int
) -> NDArray[np.float64]:
    """float64 (B,): q with each bin capped at ``sizes[b] / batch_size``, the excess moved on.

    A bin's excess goes to the nearest bins with room, the lower (harder) one first on a tie,
    bins taken in ascending order. The result sums to 1 when ``sizes.sum() >= batch_size``, and
    ``batch_size * result[b] <= sizes[b]`` (up to rounding).

    Examples:
        Bin 2 holds one prompt but has all the mass; a batch of 3 sends 2/3 to bin 1:

        >>> capped_mass(np.array([0.0, 0.0, 1.0]), np.array([2, 2, 1]), 3).round(4).tolist()
        [0.0, 0.6667, 0.3333]
    """
    cap = sizes.astype(np.float64) / batch_size
    mass = q.astype(np.float64).copy()
    excess = np.maximum(mass - cap, 0.0)
    mass -= excess
    num_bins = q.shape[0]
    for b in np.flatnonzero(excess > 0):
        left = float(excess[b])
        for d in range(1, num_bins):
            for c in (b - d, b + d):  # the harder (lower) bin first
                if 0 <= c < num_bins and left > 0:
                    give = min(left, max(float(cap[c] - mass[c]), 0.0))
                    mass[c] += give
                    left -= give
            if left <= 0:
                break
    return mass


def slot_counts(
    q: NDArray[np.float64], sizes: NDArray[np.int64], batch_size: int, rng: np.random.Generator
) -> NDArray[np.int64]:
    """Prompts to draw per bin: systematic sampling of ``batch_size * capped_mass(q, ...)``.

    Each bin gets the floor or the ceiling of its expected count, never more than ``sizes``, and
    the counts sum to ``batch_size``. One uniform draw from ``rng``.

    Args:
        q: float64 (B,), the distribution over bins.
        sizes: int64 (B,), prompts available per bin.
        batch_size: slots to fill, at most ``sizes.sum()``.
        rng: draws the offset.

    Examples:
        Bin 2 holds one prompt but gets all three slots' mass: two slots go to bin 1.

        >>> rng = np.random.default_rng(0)
        >>> slot_counts(np.array([0.0, 0.0, 1.0]), np.array([2, 2, 1]), 3, rng).tolist()
        [0, 2, 1]
    """
    mass = capped_mass(q, sizes, batch_size)
    cum = np.cumsum(mass) * batch_size
    cum[-1] = batch_size
    u = float(rng.random())
    edges = np.floor(u + np.concatenate([[0.0], cum])).astype(np.int64)
    counts = np.diff(edges)
    # rounding can put a bin one above its size when its cap binds exactly: move the extra slot
    over = np.maximum(counts - sizes, 0)
    if over.any():
        counts -= over
        for _ in range(int(over.sum())):
            room = np.flatnonzero(counts < sizes)
            src = int(np.flatnonzero(over)[0])
            dst = int(room[np.argmin(np.abs(room - src) * 2 + (room > src))])
            counts[dst] += 1
            over[src] -= 1
    return counts


def _pick(
    start: int, size: int, busy_pos: NDArray[np.int64], k: int, rng: np.random.Generator
) -> NDArray[np.int64]:
    """``k`` distinct positions in ``[start, start + size)`` avoiding ``busy_pos``, uniformly."""
    if busy_pos.shape[0] == 0:
        return start + rng.choice(size, size=k, replace=False).astype(np.int64)
    off = np.sort(busy_pos - start)
    ranks = rng.choice(size - off.shape[0], size=k, replace=False).astype(np.int64)
    before = off - np.arange(off.shape[0])  # free positions before each busy one
    return start + ranks + np.searchsorted(before, ranks, side="right")


def _busy_by_bin(
    state: SamplerState, busy: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Positions in ``members`` of the busy ids, and the number of busy ids per bin."""
    pos = state.member_pos[busy].astype(np.int64)
    bins = np.searchsorted(state.bin_start, pos, side="right") - 1
    return pos, np.bincount(bins, minlength=state.bin_start.shape[0] - 1).astype(np.int64)


def sample_resample(
    state: SamplerState,
    q: NDArray[np.float64],
    batch_size: int,
    rng: np.random.Generator,
    busy: NDArray[np.int64] = _EMPTY,
) -> NDArray[np.int64]:
    """Draw ``batch_size`` distinct ids: slot counts per bin from q, prompts uniformly within.

    Ids in ``busy`` (prompts in plans still in flight) are never drawn. The caller ensures
    ``batch_size + len(busy) <= num_prompts``.

    Examples:
        Prompts 0-2 in bin 0 and 3-4 in bin 1 (``members`` is grouped by bin), all mass on bin 1:

        >>> st = init_state(5, num_bins=2, resample=True, rng=np.random.default_rng(0))
        >>> st = st._replace(bin_start=np.array([0, 3, 5]))
        >>> q = np.array([0.0, 1.0])
        >>> sorted(sample_resample(st, q, 2, np.random.default_rng(0)).tolist())
        [3, 4]
        >>> sorted(sample_resample(st, q, 4, np.random.default_rng(0)).tolist())  # bin 1 runs out
        [0, 1, 3, 4]
        >>> busy = np.array([4])  # prompt 4 is in flight: one slot moves to bin 0
        >>> sorted(sample_resample(st, q, 2, np.random.default_rng(0), busy=busy).tolist())
        [1, 3]
    """
    sizes = np.diff(state.bin_start)
    busy_pos, busy_n = _busy_by_bin(state, busy)
    counts = slot_counts(q, sizes - busy_n, batch_size, rng)
    parts = []
    for b in np.flatnonzero(counts):
        lo, hi = int(state.bin_start[b]), int(state.bin_start[b + 1])
        inside = busy_pos[(busy_pos >= lo) & (busy_pos < hi)]
        pick = _pick(lo, hi - lo, inside, int(counts[b]), rng)
        parts.append(state.members[pick].astype(np.int64))
    ids = np.concatenate(parts)
    return ids[rng.permutation(ids.shape[0])]


def apply_moves(
    state: SamplerState,
    ids: NDArray[np.int64],
    old_bins: NDArray[np.int64],
    new_bins: NDArray[np.int64],
    backend: str = "numba",
) -> None:
    """Move prompts between the resample sampler's bin segments, in place (O(moves x bins)).

    Examples:
        >>> st = init_state(4, num_bins=2, resample=True, rng=np.random.default_rng(0))
        >>> apply_moves(st, np.array([1]), np.array([0]), np.array([1]))
        >>> st.bin_start.tolist(), sorted(st.members[st.bin_start[1]:].tolist())
        ([0, 3, 4], [1])
    """
    _backend.kernels(backend).move_members(
        state.members, state.member_pos, state.bin_start, ids, old_bins, new_bins
    )


def sample_probs(
    state: SamplerState,
    q: NDArray[np.float64] | None,
    bins: NDArray[np.int64],
    num_prompts: int,
    batch_size: int,
    busy: NDArray[np.int64] = _EMPTY,
    ids: NDArray[np.int64] | None = None,
) -> NDArray[np.float64]:
    """float64 (m,): the probability that one slot of a ``sample(batch_size)`` batch holds each prompt.

    ``bins`` are the prompts' bins; ``ids`` their ids (needed only to give busy prompts 0).

    ``q=None`` is the uniform sampler: ``1 / num_prompts``, the rate at which reshuffled epochs
    serve every prompt. Otherwise the resample sampler's exact value
    ``capped_mass(q, available, m)[b] / available[b]`` for a prompt of bin ``b`` (its inclusion
    probability divided by ``m``), with ``available`` the bin's prompts not in ``busy``; 0 for a
    busy prompt. Summed over the dataset it is 1.

    Examples:
        Four prompts in bin 0 and one in bin 1, with q = (0.5, 0.5) and batches of 2:

        >>> st = init_state(5, num_bins=2, resample=True, rng=np.random.default_rng(0))
        >>> st = st._replace(bin_start=np.array([0, 4, 5]))
        >>> sample_probs(st, np.array([0.5, 0.5]), np.array([0, 1]), 5, 2).tolist()
        [0.125, 0.5]
        >>> sample_probs(st, np.array([0.5, 0.5]), np.array([0, 1]), 5, 4).tolist()  # bin 1 full
        [0.1875, 0.25]
        >>> sample_probs(st, None, np.array([0, 1]), 5, 2).tolist()  # uniform sampler
        [0.2, 0.2]
    """
    if q is None:
        out: NDArray[np.float64] = np.full(bins.shape[0], 1.0 / num_prompts)
    else:
        sizes = np.diff(state.bin_start)
        _, busy_n = _busy_by_bin(state, busy)
        avail = sizes - busy_n
        mass = capped_mass(q, avail, batch_size)
        out = mass[bins] / np.maximum(avail[bins], 1)
    if ids is not None and busy.shape[0]:
        out = np.where(np.isin(ids, busy), 0.0, out)
    return out
