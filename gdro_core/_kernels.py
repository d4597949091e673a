"""numba kernels: the default backend. Each has a plain-numpy twin in ``_reference.py``.

The kernels are compiled lazily on first call, so importing ``gdro_core`` compiles nothing. The
machine code is cached on disk when numba has somewhere to write it (the package's
``__pycache__``, ``NUMBA_CACHE_DIR`` or the user's cache directory); from a read-only install
with none of these, the kernels compile in memory each process instead of failing. They allocate
their outputs and never mutate inputs, except ``move_members``, which updates the resample
sampler's bucket array in place.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from gdro_core._reference import EDGE_EPS


def can_cache() -> bool:
    """Whether numba can cache this module's kernels on disk (it asks numba's own locators)."""
    import inspect

    def probe() -> None:  # pragma: no cover - never called, only located
        return None

    try:
        from numba.core import caching

        impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
        locators = list(impl._locator_classes) if impl is not None else None
    except (ImportError, AttributeError):
        locators = None
    if locators is None:  # a numba whose internals moved: let it decide
        return True
    source = inspect.getfile(probe)
    return any(cls.from_function(probe, source) is not None for cls in locators)


CACHE = can_cache()


@njit(cache=CACHE, inline="always")
def _popcount(x: np.uint64) -> np.int64:
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


@njit(cache=CACHE, inline="always")
def _bin(rate, edges):  # type: ignore[no-untyped-def]
    x = rate + EDGE_EPS
    lo, hi = 0, edges.shape[0]
    while lo < hi:  # number of edges <= x
        mid = (lo + hi) // 2
        if edges[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=CACHE)
def classifier_step(
    bits, vals, sums, mass, count, bins, ids, outcomes, trials, window, decay, edges, hysteresis
):  # type: ignore[no-untyped-def]
    m = ids.shape[0]
    w_words = bits.shape[1]
    h = vals.shape[1]
    pooled = mass.shape[0] > 0
    bit_rows = np.zeros((m, w_words), dtype=np.uint64)
    val_rows = np.zeros((m, h), dtype=np.float64)
    new_sums = np.zeros(m if (w_words == 0 and h == 0) else 0, dtype=np.float64)
    new_mass = np.zeros(m if pooled else 0, dtype=np.float64)
    new_count = np.zeros(m, dtype=np.int64)
    new_bins = np.zeros(m, dtype=np.int64)
    rate = np.zeros(m, dtype=np.float64)
    rem = window % 64
    mask = (np.uint64(1) << np.uint64(rem)) - np.uint64(1) if rem else np.uint64(0)
    for i in range(m):
        p = ids[i]
        oc = np.int64(count[p])
        ob = np.int64(bins[p])
        if w_words > 0:
            carry = np.uint64(1) if outcomes[i] > 0.5 else np.uint64(0)
            pop = 0
            for w in range(w_words):
                word = bits[p, w]
                nw = (word << np.uint64(1)) | carry
                carry = word >> np.uint64(63)
                if w == w_words - 1 and rem:
                    nw = nw & mask
                bit_rows[i, w] = nw
                pop += _popcount(nw)
            nc = min(oc + 1, window)
            r = pop / nc
        elif h > 0:
            val_rows[i, 0] = outcomes[i]
            for j in range(1, h):
                val_rows[i, j] = vals[p, j - 1]
            nc = min(oc + 1, window)
            acc = 0.0
            for j in range(nc):
                acc += val_rows[i, j]
            r = acc / nc
        elif pooled:
            s = decay * sums[p] + outcomes[i]
            w = decay * mass[p] + trials[i]
            new_sums[i] = s
            new_mass[i] = w
            nc = min(oc + 1, window) if window > 0 else oc + 1
            r = s / w
        else:
            s = sums[p] + outcomes[i]
            new_sums[i] = s
            nc = oc + 1
            r = s / nc
        raw = _bin(r, edges)
        if oc == 0:
            nb = raw
        elif raw > ob:
            up = _bin(r - hysteresis, edges)
            nb = up if up > ob else ob
        elif raw < ob:
            down = _bin(r + hysteresis, edges)
            nb = down if down < ob else ob
        else:
            nb = ob
        new_count[i] = nc
        new_bins[i] = nb
        rate[i] = r
    return bit_rows, val_rows, new_sums, new_mass, new_count, new_bins, rate


@njit(cache=CACHE)
def window_rate(bits, vals, sums, mass, count, ids):  # type: ignore[no-untyped-def]
    m = ids.shape[0]
    out = np.zeros(m, dtype=np.float64)
    for i in range(m):
        p = ids[i]
        c = np.int64(count[p])
        if c == 0:
            continue
        if bits.shape[1] > 0:
            pop = 0
            for w in range(bits.shape[1]):
                pop += _popcount(bits[p, w])
            out[i] = pop / c
        elif vals.shape[1] > 0:
            acc = 0.0
            for j in range(c):
                acc += vals[p, j]
            out[i] = acc / c
        elif mass.shape[0] > 0:
            out[i] = sums[p] / mass[p]
        else:
            out[i] = sums[p] / c
    return out


@njit(cache=CACHE)
def move_members(members, member_pos, bin_start, ids, old_bins, new_bins):  # type: ignore[no-untyped-def]
    for i in range(ids.shape[0]):
        p = ids[i]
        a = old_bins[i]
        b = new_bins[i]
        while a < b:
            j = bin_start[a + 1] - 1
            k = member_pos[p]
            q = members[j]
            members[k], members[j] = q, p
            member_pos[q], member_pos[p] = k, j
            bin_start[a + 1] -= 1
            a += 1
        while a > b:
            j = bin_start[a]
            k = member_pos[p]
            q = members[j]
            members[k], members[j] = q, p
            member_pos[q], member_pos[p] = k, j
            bin_start[a] += 1
            a -= 1


@njit(cache=CACHE)
def budget_dp_mode(counts, logp, dev, order, slack):  # type: ignore[no-untyped-def]
    num_active, k = logp.shape
    val = np.full(slack + 1, -np.inf)
    dv = np.full(slack + 1, np.inf)
    val[0] = 0.0
    dv[0] = 0.0
    choice = np.zeros((num_active, slack + 1), dtype=np.int64)
    nval = np.empty(slack + 1)
    ndv = np.empty(slack + 1)
    # feasibility windows: totals reachable so far, and totals that can still reach `slack`
    suffix = np.zeros(num_active + 1, dtype=np.int64)
    for b in range(num_active - 1, -1, -1):
        suffix[b] = suffix[b + 1] + counts[b] * (k - 1)
    reach = 0
    for b in range(num_active):
        c = counts[b]
        reach_new = min(reach + c * (k - 1), slack)
        lo = max(0, slack - suffix[b + 1])
        nval[:] = -np.inf
        ndv[:] = np.inf
        for jj in range(k):
            j = order[jj]
            shift = c * j
            lp = logp[b, j]
            de = dev[b, j]
            s_lo = max(lo, shift)
            s_hi = min(reach_new, reach + shift)
            for s in range(s_lo, s_hi + 1):
                prev = val[s - shift]
                if prev == -np.inf:
                    continue
                cv = prev + lp
                cd = dv[s - shift] + de
                if cv > nval[s] or (cv == nval[s] and cd < ndv[s]):
                    nval[s] = cv
                    ndv[s] = cd
                    choice[b, s] = j
        val[:] = nval
        dv[:] = ndv
        reach = reach_new
    out = np.zeros(num_active, dtype=np.int64)
    s = slack
    for b in range(num_active - 1, -1, -1):
        out[b] = choice[b, s]
        s -= counts[b] * out[b]
    return out


@njit(cache=CACHE, inline="always")
def _lae(a, b):  # type: ignore[no-untyped-def]
    hi = max(a, b)
    lo = min(a, b)
    if lo == -np.inf:
        return hi
    return hi + np.log1p(np.exp(lo - hi))


@njit(cache=CACHE)
def budget_dp_sample(counts, logp, slack, uniforms):  # type: ignore[no-untyped-def]
    num_active, k = logp.shape
    fwd = np.full((num_active + 1, slack + 1), -np.inf)
    fwd[0, 0] = 0.0
    for b in range(num_active):
        c = counts[b]
        for j in range(k):
            shift = c * j
            if shift > slack:
                continue
            lp = logp[b, j]
            for s in range(shift, slack + 1):
                fwd[b + 1, s] = _lae(fwd[b + 1, s], fwd[b, s - shift] + lp)
    bwd = np.full((num_active + 1, slack + 1), -np.inf)
    bwd[num_active, slack] = 0.0
    for b in range(num_active - 1, -1, -1):
        c = counts[b]
        for j in range(k):
            shift = c * j
            if shift > slack:
                continue
            lp = logp[b, j]
            for s in range(0, slack + 1 - shift):
                bwd[b, s] = _lae(bwd[b, s], lp + bwd[b + 1, s + shift])
    marg = np.zeros((num_active, k))
    lm = np.empty(k)
    for b in range(num_active):
        c = counts[b]
        top = -np.inf
        for j in range(k):
            lm[j] = -np.inf
            shift = c * j
            if shift > slack:
                continue
            acc = -np.inf
            for s in range(0, slack + 1 - shift):
                acc = _lae(acc, fwd[b, s] + bwd[b + 1, s + shift])
            lm[j] = logp[b, j] + acc
            top = max(top, lm[j])
        tot = 0.0
        for j in range(k):
            marg[b, j] = np.exp(lm[j] - top)
            tot += marg[b, j]
        for j in range(k):
            marg[b, j] /= tot
    out = np.zeros(num_active, dtype=np.int64)
    s = slack
    lw = np.empty(k)
    w = np.empty(k)
    for b in range(num_active - 1, -1, -1):
        c = counts[b]
        top = -np.inf
        for j in range(k):
            shift = c * j
            lw[j] = fwd[b, s - shift] + logp[b, j] if shift <= s else -np.inf
            top = max(top, lw[j])
        total = 0.0
        for j in range(k):
            w[j] = np.exp(lw[j] - top)
            total += w[j]
        target = uniforms[b] * total
        pick = k - 1
        cdf = 0.0
        for j in range(k):
            cdf += w[j]
            if cdf > target:
                pick = j
                break
        while pick > 0 and w[pick] <= 0.0:
            pick -= 1
        out[b] = pick
        s -= c * pick
    return out, marg
