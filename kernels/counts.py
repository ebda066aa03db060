"""Integer token-count kernels of the gating generators (fabricsim.workload.gating).

Rows of counts that must sum exactly to a total with every entry in [0, cap]: water-filling
(proportional shares with a cap), cumulative rounding to integers, and sampling around expected
counts. Shapes are given per function; counts are int64, weights float64.
"""

import numpy as np

from fabricsim._jit import njit


@njit
def waterfill_row(w, total, cap, out):
    """Water-fill one row: ``out`` proportional to ``w`` (float64[n], >= 0), no entry above
    ``cap``, summing to ``total`` (needs ``cap * n >= total``).

    Entries whose share would exceed ``cap`` are fixed at ``cap`` and the rest is re-spread over
    the others in proportion to ``w`` (over all of them evenly if their weights are all 0). The
    scale only grows as entries saturate, so each pass saturates for good; at most n passes,
    usually one.
    """
    n = w.size
    sat = np.zeros(n, np.bool_)
    nsat = 0
    scale = 0.0
    while True:
        s = 0.0
        for i in range(n):
            if not sat[i]:
                s += w[i]
        rest = total - cap * nsat
        if s <= 0.0:                     # no weight left: spread the rest evenly
            for i in range(n):
                out[i] = cap if sat[i] else rest / (n - nsat)
            return
        scale = rest / s
        changed = False
        for i in range(n):
            if not sat[i] and w[i] * scale > cap:
                sat[i] = True
                nsat += 1
                changed = True
        if not changed:
            break
    for i in range(n):
        out[i] = cap if sat[i] else w[i] * scale


@njit
def waterfill_rows(w, total, cap):
    """float64[rows, n]: :func:`waterfill_row` applied to every row of ``w``."""
    out = np.empty_like(w)
    for r in range(w.shape[0]):
        waterfill_row(w[r], total, cap, out[r])
    return out


@njit
def round_row(y, total, cap, out):
    """Integer ``out`` (int64[n]) from ``y`` (float64[n], summing to ``total``, entries in
    [0, cap]) by cumulative rounding: ``out[i] = rint(Y[i]) - rint(Y[i-1])`` with ``Y`` the running
    sum (the last forced to ``total``), so each count is floor or ceil of ``y[i]`` and the row sums
    to ``total`` exactly. A count pushed outside [0, cap] by floating-point ties is repaired by
    moving the excess to the entry with the most headroom."""
    n = y.size
    run = 0.0
    prev = 0
    bad = False
    for i in range(n):
        run += y[i]
        cur = total if i == n - 1 else np.int64(np.rint(run))
        out[i] = cur - prev
        prev = cur
        if out[i] < 0 or out[i] > cap:
            bad = True
    if bad:
        short = total
        for i in range(n):
            out[i] = min(max(out[i], 0), cap)
            short -= out[i]
        while short != 0:
            j = 0
            for i in range(n):       # most headroom when short > 0, largest count when < 0
                if (short > 0 and out[i] < out[j]) or (short < 0 and out[i] > out[j]):
                    j = i
            step = min(short, cap - out[j]) if short > 0 else -min(-short, out[j])
            out[j] += step
            short -= step


@njit
def sample_rows(mean, sd, g, totals, cap):
    """Integer counts near ``mean + sd * g``, rows summing exactly to ``totals``, entries in [0, cap].

    ``mean``, ``sd``, ``g`` float64[rows, n] (expected counts, their spread, standard normals),
    ``totals`` int64[rows] (each ``mean`` row sums to it), ``cap`` int (needs ``cap * n >=
    totals``). Per row: ``mean + sd * g`` clipped to [0, cap], water-filled back to the row total
    (:func:`waterfill_row`), then cumulatively rounded (:func:`round_row`). Returns
    int64[rows, n].
    """
    rows, n = mean.shape
    w = np.empty(n)
    y = np.empty(n)
    out = np.empty((rows, n), np.int64)
    for r in range(rows):
        for i in range(n):
            v = mean[r, i] + sd[r, i] * g[r, i]
            w[i] = min(max(v, 0.0), cap) + 1e-9 * mean[r, i]   # keep every weight > 0
        waterfill_row(w, float(totals[r]), float(cap), y)
        round_row(y, totals[r], cap, out[r])
    return out


@njit
def fold_ranks(counts, per_rank):
    """int64[ep, ep]: ``counts`` (int64[ep, ep * per_rank]) summed over each rank's experts."""
    rows, ranks = counts.shape[0], counts.shape[1] // per_rank
    out = np.zeros((rows, ranks), np.int64)
    for s in range(rows):
        for d in range(ranks):
            acc = 0
            for x in range(d * per_rank, (d + 1) * per_rank):
                acc += counts[s, x]
            out[s, d] = acc
    return out
