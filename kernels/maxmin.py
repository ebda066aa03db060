"""Max-min fair rate allocation over links, in bottleneck order with an indexed heap.

Problem: flows ``f`` cross links ``route_links[route_ptr[f]:route_ptr[f+1]]``; link ``l`` has
capacity ``capacity_bps[l]``. Find the max-min fair rates (weighted: rates proportional to
``weight`` at each bottleneck), optionally capped per flow by ``rate_cap_bps``.

Algorithm (progressive filling in bottleneck order): every link with unfrozen flows has a fair
share ``residual / unfrozen_weight``; a heap keyed by that share pops the link with the smallest
one, freezes all its unfrozen flows at ``weight * share`` and charges their rates to the other
links they cross, whose keys are then repaired once per pop. A per-flow cap is a virtual link of
one flow with share ``cap / weight`` in the same heap. Cost: O((L + F + nnz) log L) per solve,
where nnz = total route length, instead of the textbook O(L * F) scan.

Array layouts (units in names):

- ``route_ptr    : int64[F + 1]``  CSR row pointer of the routes
- ``route_links  : int64[nnz]``    link ids of each route
- ``capacity_bps : float64[L]``    link capacities (>= 0)
- ``rate_cap_bps : float64[F]``    per-flow cap, ``inf`` = none (optional)
- ``weight       : float64[F]``    per-flow weight, > 0 (optional, default 1)
- returns ``float64[F]`` rates in bits per second
"""

from __future__ import annotations

import numpy as np

from fabricsim._jit import njit
from fabricsim.kernels.heaps import heap_pop, heap_push, heap_remove, heap_update

__all__ = ["max_min_fair", "fill_subset"]


@njit
def fill_subset(flows, route_ptr, route_links, residual_bps, weight, rate_cap_bps, link_local, rates_out):
    """Max-min fair rates for the flows listed in ``flows`` on the given residual capacities.

    ``flows : int64[n]`` global flow ids to solve; the other flows are not seen.
    ``residual_bps : float64[L]`` capacity available to these flows, read only on their links.
    ``link_local : int64[L]`` scratch, all -1 on entry and restored to -1 on exit.
    ``rates_out : float64[F]`` receives the rate of every listed flow.
    """
    n = flows.shape[0]
    if n == 0:
        return
    # Local link numbering; ent[fptr[a]:fptr[a+1]] are the local link ids of local flow a.
    fptr = np.empty(n + 1, np.int64)
    fptr[0] = 0
    for a in range(n):
        f = flows[a]
        fptr[a + 1] = fptr[a] + route_ptr[f + 1] - route_ptr[f]
    ent = np.empty(fptr[n], np.int64)
    n_links = 0
    for a in range(n):
        f = flows[a]
        e = fptr[a]
        for p in range(route_ptr[f], route_ptr[f + 1]):
            l = route_links[p]
            if link_local[l] < 0:
                link_local[l] = n_links
                n_links += 1
            ent[e] = link_local[l]
            e += 1
    links = np.empty(n_links, np.int64)
    count = np.zeros(n_links + 1, np.int64)
    resid = np.empty(n_links, np.float64)
    wsum = np.zeros(n_links, np.float64)
    nfree = np.zeros(n_links, np.int64)
    for a in range(n):
        f = flows[a]
        w = weight[f]
        e = fptr[a]
        for p in range(route_ptr[f], route_ptr[f + 1]):
            j = ent[e]
            e += 1
            links[j] = route_links[p]
            count[j + 1] += 1
            wsum[j] += w
            nfree[j] += 1
    for j in range(n_links):
        count[j + 1] += count[j]
        link_local[links[j]] = -1
        r = residual_bps[links[j]]
        resid[j] = r if r > 0.0 else 0.0
    inc = np.empty(count[n_links], np.int64)  # local flow indices per local link (CSR)
    fill = count[:-1].copy()
    for a in range(n):
        for e in range(fptr[a], fptr[a + 1]):
            j = ent[e]
            inc[fill[j]] = a
            fill[j] += 1

    # Heap ids: 0..n_links-1 are links, n_links + a is the cap of local flow a.
    n_ids = n_links + n
    keys = np.empty(n_ids, np.float64)
    heap = np.empty(n_ids, np.int64)
    pos = np.full(n_ids, -1, np.int64)
    size = 0
    for j in range(n_links):
        keys[j] = resid[j] / wsum[j]
        size = heap_push(heap, pos, size, keys, j)
    for a in range(n):
        f = flows[a]
        cap = rate_cap_bps[f]
        if cap < np.inf:
            keys[n_links + a] = cap / weight[f]
            size = heap_push(heap, pos, size, keys, n_links + a)

    frozen = np.zeros(n, np.bool_)
    touched = np.empty(n_links, np.int64)
    marked = np.zeros(n_links, np.bool_)
    while size > 0:
        top, size = heap_pop(heap, pos, size, keys)
        share = keys[top]
        if top >= n_links:  # a flow's own cap: that flow alone
            first, last = top - n_links, top - n_links + 1
        else:
            first, last = count[top], count[top + 1]
        n_touched = 0
        for q in range(first, last):
            a = inc[q] if top < n_links else q
            if frozen[a]:
                continue
            frozen[a] = True
            f = flows[a]
            w = weight[f]
            rate = w * share
            rates_out[f] = rate
            if pos[n_links + a] >= 0:
                size = heap_remove(heap, pos, size, keys, n_links + a)
            for e in range(fptr[a], fptr[a + 1]):
                j = ent[e]
                resid[j] -= rate
                wsum[j] -= w
                nfree[j] -= 1
                if not marked[j]:
                    marked[j] = True
                    touched[n_touched] = j
                    n_touched += 1
        for t in range(n_touched):
            j = touched[t]
            marked[j] = False
            if pos[j] < 0:
                continue
            if nfree[j] == 0:
                size = heap_remove(heap, pos, size, keys, j)
            else:
                r = resid[j] if resid[j] > 0.0 else 0.0
                keys[j] = r / wsum[j]
                heap_update(heap, pos, size, keys, j)


@njit
def _max_min_fair_all(route_ptr, route_links, capacity_bps, rate_cap_bps, weight):
    n_flows = route_ptr.shape[0] - 1
    rates = np.zeros(n_flows, np.float64)
    flows = np.arange(n_flows)
    link_local = np.full(capacity_bps.shape[0], -1, np.int64)
    fill_subset(flows, route_ptr, route_links, capacity_bps, weight, rate_cap_bps, link_local, rates)
    return rates


def max_min_fair(route_ptr, route_links, capacity_bps, rate_cap_bps=None, weight=None):
    """Max-min fair rates (bits per second) of flows over links.

    Parameters
    ----------
    route_ptr : int64[F + 1]
        CSR row pointer: flow ``f`` crosses ``route_links[route_ptr[f]:route_ptr[f + 1]]``.
    route_links : int64[nnz]
        Link ids (0 .. L-1) of every route.
    capacity_bps : float64[L]
        Link capacities in bits per second; 0 holds every flow that crosses the link at rate 0.
    rate_cap_bps : float64[F], optional
        Per-flow rate caps (``inf`` = no cap). A flow with an empty route needs a finite cap.
    weight : float64[F], optional
        Per-flow weights (> 0); at a shared bottleneck, rates are proportional to weights.

    Returns
    -------
    float64[F]
        The (weighted) max-min fair rate of every flow.
    """
    route_ptr = np.ascontiguousarray(route_ptr, dtype=np.int64)
    route_links = np.ascontiguousarray(route_links, dtype=np.int64)
    capacity_bps = np.ascontiguousarray(capacity_bps, dtype=np.float64)
    if route_ptr.ndim != 1 or route_ptr.shape[0] < 1 or route_ptr[0] != 0:
        raise ValueError("route_ptr: must be a 1-D int64 array of length F + 1 starting at 0")
    n_flows = route_ptr.shape[0] - 1
    lengths = np.diff(route_ptr)
    if np.any(lengths < 0) or route_ptr[-1] != route_links.shape[0]:
        raise ValueError("route_ptr: must be non-decreasing and end at len(route_links)")
    n_links = capacity_bps.shape[0]
    if route_links.size and (route_links.min() < 0 or route_links.max() >= n_links):
        raise ValueError(f"route_links: link ids must lie in 0 .. {n_links - 1}")
    if not np.all(np.isfinite(capacity_bps)) or np.any(capacity_bps < 0):
        raise ValueError("capacity_bps: must be finite and >= 0")
    if rate_cap_bps is None:
        rate_cap_bps = np.full(n_flows, np.inf)
    else:
        rate_cap_bps = np.ascontiguousarray(rate_cap_bps, dtype=np.float64)
        if rate_cap_bps.shape != (n_flows,):
            raise ValueError(f"rate_cap_bps: must have shape ({n_flows},)")
        if np.any(np.isnan(rate_cap_bps)) or np.any(rate_cap_bps < 0):
            raise ValueError("rate_cap_bps: must be >= 0 (inf = no cap)")
    if weight is None:
        weight = np.ones(n_flows)
    else:
        weight = np.ascontiguousarray(weight, dtype=np.float64)
        if weight.shape != (n_flows,):
            raise ValueError(f"weight: must have shape ({n_flows},)")
        if not np.all(np.isfinite(weight)) or np.any(weight <= 0):
            raise ValueError("weight: must be finite and > 0")
    empty = (lengths == 0) & ~np.isfinite(rate_cap_bps)
    if np.any(empty):
        first = int(np.flatnonzero(empty)[0])
        raise ValueError(
            f"route_ptr: flow {first} has an empty route and no rate cap; give it a route or a "
            "finite rate_cap_bps"
        )
    return _max_min_fair_all(route_ptr, route_links, capacity_bps, rate_cap_bps, weight)
