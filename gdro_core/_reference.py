"""Plain-numpy twins of the numba kernels in ``_kernels.py``: the test oracle and the ``numpy`` backend.

Every function here has the same signature and the same results as its twin (integers exactly,
floats to ``rtol=1e-12``). Inputs are never mutated, except by ``move_members``, whose job is the
in-place update of the resample sampler's bucket array.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

EDGE_EPS = 1e-12  # a rate within this of an edge counts as on it (edges go to the upper bin)

_U1 = np.uint64(1)
_U63 = np.uint64(63)


def bin_of(rate: NDArray[np.float64], edges: NDArray[np.float64]) -> NDArray[np.int64]:
    """Bin index of each rate: the number of interior edges ``<= rate`` (edge ties go up)."""
    return np.searchsorted(edges, rate + EDGE_EPS, side="right").astype(np.int64)


def classifier_step(
    bits: NDArray[np.uint64],
    vals: NDArray[np.float64],
    sums: NDArray[np.float64],
    mass: NDArray[np.float64],
    count: NDArray[np.integer],
    bins: NDArray[np.uint8],
    ids: NDArray[np.int64],
    outcomes: NDArray[np.float64],
    trials: NDArray[np.float64],
    window: int,
    decay: float,
    edges: NDArray[np.float64],
    hysteresis: float,
) -> tuple[
    NDArray[np.uint64],
    NDArray[np.float64],
    NDArray[np.float64],
    NDArray[np.float64],
    NDArray[np.int64],
    NDArray[np.int64],
    NDArray[np.float64],
]:
    """One history entry per prompt in ``ids``; returns the new rows, counts, bins and rates.

    Exactly one storage is in use: ``bits`` (num_prompts, W) when W > 0 (0/1 outcomes, bit 0 the
    newest), else ``vals`` (num_prompts, H) when H > 0 (real outcomes, column 0 the newest), else
    ``sums`` with ``mass`` (pooled rate: ``sums`` and ``mass`` are the decayed correct and
    total rollouts, ``outcomes`` and ``trials`` this visit's counts), else ``sums`` alone
    (cumulative mode, ``window == 0``). Returns ``(bit_rows (m, W), val_rows (m, H), new_sums,
    new_mass, new_count, new_bins, rate)``.
    """
    m = ids.shape[0]
    w_words, h = bits.shape[1], vals.shape[1]
    new_mass = np.zeros(0, dtype=np.float64)
    old_count = count[ids].astype(np.int64)
    old_bins = bins[ids].astype(np.int64)
    bit_rows = np.zeros((m, w_words), dtype=np.uint64)
    val_rows = np.zeros((m, h), dtype=np.float64)
    new_sums = np.zeros(0, dtype=np.float64)
    if w_words > 0:
        rows = bits[ids]
        bit_rows = rows << _U1
        if w_words > 1:
            bit_rows[:, 1:] |= rows[:, :-1] >> _U63
        bit_rows[:, 0] |= (outcomes > 0.5).astype(np.uint64)
        rem = window % 64
        if rem:
            bit_rows[:, -1] &= np.uint64((1 << rem) - 1)
        new_count = np.minimum(old_count + 1, window)
        pop = popcount_rows(bit_rows)
        rate = pop / new_count
    elif h > 0:
        vrows = vals[ids]
        val_rows[:, 1:] = vrows[:, :-1]
        val_rows[:, 0] = outcomes
        new_count = np.minimum(old_count + 1, window)
        live = np.arange(h)[None, :] < new_count[:, None]
        acc = np.zeros(m, dtype=np.float64)
        for j in range(h):  # newest first, the same order as the kernel
            acc += np.where(live[:, j], val_rows[:, j], 0.0)
        rate = acc / new_count
    elif mass.shape[0] > 0:
        new_sums = decay * sums[ids] + outcomes
        new_mass = decay * mass[ids] + trials
        new_count = np.minimum(old_count + 1, window) if window > 0 else old_count + 1
        rate = new_sums / new_mass
    else:
        new_sums = sums[ids] + outcomes
        new_count = old_count + 1
        rate = new_sums / new_count
    raw = bin_of(rate, edges)
    up = bin_of(rate - hysteresis, edges)
    down = bin_of(rate + hysteresis, edges)
    stay_up = np.where(up > old_bins, up, old_bins)
    stay_down = np.where(down < old_bins, down, old_bins)
    moved = np.where(raw > old_bins, stay_up, np.where(raw < old_bins, stay_down, old_bins))
    new_bins = np.where(old_count == 0, raw, moved)
    return bit_rows, val_rows, new_sums, new_mass, new_count, new_bins, rate


def popcount_rows(bits: NDArray[np.uint64]) -> NDArray[np.int64]:
    """int64 (m,): the number of set bits in each row (``np.bitwise_count`` where numpy has it)."""
    if bits.shape[1] == 0:
        return np.zeros(bits.shape[0], dtype=np.int64)
    count = getattr(np, "bitwise_count", None)  # numpy >= 2.0
    if count is not None:
        out: NDArray[np.int64] = count(bits).astype(np.int64).sum(axis=1)
        return out
    as_bytes = np.ascontiguousarray(bits).view(np.uint8).reshape(bits.shape[0], -1)
    out = np.unpackbits(as_bytes, axis=1).sum(axis=1, dtype=np.int64)
    return out


def window_rate(
    bits: NDArray[np.uint64],
    vals: NDArray[np.float64],
    sums: NDArray[np.float64],
    mass: NDArray[np.float64],
    count: NDArray[np.integer],
    ids: NDArray[np.int64],
) -> NDArray[np.float64]:
    """Current pass rate of each prompt in ``ids`` (0 for a prompt never observed)."""
    cnt = count[ids].astype(np.int64)
    if bits.shape[1] > 0:
        num = popcount_rows(bits[ids]).astype(np.float64)
    elif vals.shape[1] > 0:
        rows = vals[ids]
        live = np.arange(vals.shape[1])[None, :] < cnt[:, None]
        num = np.zeros(ids.shape[0])
        for j in range(vals.shape[1]):
            num += np.where(live[:, j], rows[:, j], 0.0)
    elif mass.shape[0] > 0:
        w = mass[ids]
        return np.where(cnt > 0, sums[ids] / np.where(w > 0, w, 1.0), 0.0)
    else:
        num = sums[ids].astype(np.float64)
    return np.where(cnt > 0, num / np.maximum(cnt, 1), 0.0)


def move_members(
    members: NDArray[np.int32],
    member_pos: NDArray[np.int32],
    bin_start: NDArray[np.int64],
    ids: NDArray[np.int64],
    old_bins: NDArray[np.int64],
    new_bins: NDArray[np.int64],
) -> None:
    """Move prompts between the contiguous per-bin segments of ``members``, in place.

    ``members[bin_start[b]:bin_start[b+1]]`` lists the prompts of bin ``b``, and
    ``member_pos[p]`` is prompt ``p``'s index in ``members``. A move by ``d`` bins costs ``d``
    swaps, so the cost is independent of the dataset size.
    """
    for i in range(ids.shape[0]):
        p, a, b = int(ids[i]), int(old_bins[i]), int(new_bins[i])
        while a < b:  # move to the end of bin a, then shift the boundary left
            last = int(bin_start[a + 1]) - 1
            _swap(members, member_pos, int(member_pos[p]), last)
            bin_start[a + 1] -= 1
            a += 1
        while a > b:  # move to the front of bin a, then shift the boundary right
            first = int(bin_start[a])
            _swap(members, member_pos, int(member_pos[p]), first)
            bin_start[a] += 1
            a -= 1


def _swap(members: NDArray[np.int32], member_pos: NDArray[np.int32], i: int, j: int) -> None:
    pi, pj = members[i], members[j]
    members[i], members[j] = pj, pi
    member_pos[pj], member_pos[pi] = i, j


def budget_dp_mode(
    counts: NDArray[np.int64],
    logp: NDArray[np.float64],
    dev: NDArray[np.float64],
    order: NDArray[np.int64],
    slack: int,
) -> NDArray[np.int64]:
    """Exact-budget argmax: arm index per bin maximising ``sum logp[b, j_b]``.

    Subject to ``sum_b counts[b] * j_b == slack`` (arm indices count up from the minimum arm).
    Ties go to the smaller total deviation ``sum dev[b, j_b]``, then to the first arm in
    ``order`` (arms sorted by distance to the mean, the lower first), bins processed in order.
    """
    num_active, k = logp.shape
    val = np.full(slack + 1, -np.inf)
    dv = np.full(slack + 1, np.inf)
    val[0], dv[0] = 0.0, 0.0
    choice = np.zeros((num_active, slack + 1), dtype=np.int64)
    for b in range(num_active):
        nval = np.full(slack + 1, -np.inf)
        ndv = np.full(slack + 1, np.inf)
        nch = np.zeros(slack + 1, dtype=np.int64)
        for j in order:
            shift = int(counts[b]) * int(j)
            if shift > slack:
                continue
            cv = val[: slack + 1 - shift] + logp[b, j]
            cd = dv[: slack + 1 - shift] + dev[b, j]
            tv, td = nval[shift:], ndv[shift:]
            ok = np.isfinite(cv)
            better = ok & ((cv > tv) | ((cv == tv) & (cd < td)))
            tv[better], td[better] = cv[better], cd[better]
            nch[shift:][better] = j
        val, dv = nval, ndv
        choice[b] = nch
    if not np.isfinite(val[slack]):
        raise RuntimeError(
            "budget DP found no feasible allocation"
        )  # unreachable: all-mean is feasible
    out = np.zeros(num_active, dtype=np.int64)
    s = slack
    for b in range(num_active - 1, -1, -1):
        out[b] = choice[b, s]
        s -= int(counts[b]) * int(out[b])
    return out


def _lae(a: NDArray[np.float64] | float, b: NDArray[np.float64] | float) -> NDArray[np.float64]:
    """log(exp(a) + exp(b)) elementwise, exact at -inf (the kernels use the same formula)."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    hi, lo = np.maximum(a, b), np.minimum(a, b)
    with np.errstate(invalid="ignore"):
        out = hi + np.log1p(np.exp(lo - hi))
    return np.where(np.isneginf(lo), hi, out)


def _logsumexp(x: NDArray[np.float64]) -> float:
    """log(sum(exp(x))), -inf for an empty or all -inf ``x`` (vectorised; the kernel adds the
    terms one by one, so the two agree to rounding)."""
    top = float(x.max()) if x.size else -np.inf
    if top == -np.inf:
        return -np.inf
    return top + float(np.log(np.exp(x - top).sum()))


def budget_dp_sample(
    counts: NDArray[np.int64],
    logp: NDArray[np.float64],
    slack: int,
    uniforms: NDArray[np.float64],
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Draw arms from ``prod_b p_b`` conditioned on ``sum_b counts[b] * j_b == slack``.

    ``logp`` (A, K) holds the bandits' log-probabilities. Forward partition sums over running
    totals (in log space, so no probability underflows), then backward sampling with
    ``uniforms[b]`` (inverse CDF, arms in index order). The same messages give the exact
    conditional marginals ``P(j_b = j | budget)``. Returns ``(arm index per bin, marginals)``.
    """
    num_active, k = logp.shape
    ninf = -np.inf
    fwd = np.full((num_active + 1, slack + 1), ninf)
    fwd[0, 0] = 0.0
    for b in range(num_active):
        for j in range(k):
            shift = int(counts[b]) * j
            if shift <= slack:
                fwd[b + 1, shift:] = _lae(
                    fwd[b + 1, shift:], fwd[b, : slack + 1 - shift] + logp[b, j]
                )
    bwd = np.full((num_active + 1, slack + 1), ninf)
    bwd[num_active, slack] = 0.0
    for b in range(num_active - 1, -1, -1):
        for j in range(k):
            shift = int(counts[b]) * j
            if shift <= slack:
                bwd[b, : slack + 1 - shift] = _lae(
                    bwd[b, : slack + 1 - shift], logp[b, j] + bwd[b + 1, shift:]
                )
    marg = np.zeros((num_active, k))
    for b in range(num_active):
        lm = np.full(k, ninf)
        for j in range(k):
            shift = int(counts[b]) * j
            if shift <= slack:
                terms = fwd[b, : slack + 1 - shift] + bwd[b + 1, shift:]
                lm[j] = logp[b, j] + _logsumexp(terms)
        top = lm.max()
        marg[b] = np.exp(lm - top)
        marg[b] /= marg[b].sum()
    out = np.zeros(num_active, dtype=np.int64)
    s = slack
    for b in range(num_active - 1, -1, -1):
        lw = np.full(k, ninf)
        for j in range(k):
            shift = int(counts[b]) * j
            if shift <= s:
                lw[j] = fwd[b, s - shift] + logp[b, j]
        w = np.exp(lw - lw.max())
        cdf = np.cumsum(w)
        j = min(int(np.searchsorted(cdf, uniforms[b] * cdf[-1], side="right")), k - 1)
        while j > 0 and w[j] <= 0.0:  # never land on an infeasible arm through rounding
            j -= 1
        out[b] = j
        s -= int(counts[b]) * j
    return out, marg
