"""Circuit allocation for one OCS region: which server pairs get how many optical circuits.

A region has ``R`` servers, each with ``alpha`` NICs on the region's OCS and ``8 - alpha`` on the
electrical fabric (EPS). A circuit configuration is a symmetric matrix ``C : int64[R, R]`` with a
zero diagonal and row sums ``<= alpha``: server pair ``(i, j)`` gets ``C[i, j]`` circuits, i.e. a
direct link of ``C[i, j] * link_bps`` in each direction; pairs with ``C[i, j] == 0`` talk over the
EPS.

Input demand is ``demand_bytes : float64[R, R]``, the bytes server ``i`` sends to server ``j`` in
one all-to-all of the region (directional; the diagonal is ignored).

Variants (:data:`VARIANTS`, chosen with ``allocate_circuits(..., variant=...)``):

``paper``
    Algorithm 1 of the paper as printed (reference section 3.4), see :func:`allocate_paper`.
``reference`` (default)
    The released simulator's loop (``RegionalTopoManager::regional_topo_reconfig``, reference
    section 3.5), see :func:`allocate_reference`.
``minmax``
    fabricsim's own: an exact minimizer of the all-to-all completion bound
    :func:`completion_bound`, see :func:`allocate_minmax`.

The completion bound of a configuration (seconds) is::

    B(C) = max( max over i != j with C[i, j] > 0 of  8 * D[i, j] / (C[i, j] * link_bps),
                max over servers s of  8 * max(out_eps(s), in_eps(s)) / eps_bps )

with ``out_eps(s) = sum of D[s, j] over j != s with C[s, j] == 0`` and ``in_eps(s)`` the same over
``D[j, s]``: every direction of a circuit carries ``link_bps``, and a server's circuit-less traffic
shares its ``eps_bps`` of EPS bandwidth in each direction. It is a lower bound of the all-to-all's
completion time on the MixNet fabric with a non-blocking EPS (each term is a link that must carry
those bytes), and the objective of ``minmax``.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from fabricsim._jit import njit
from fabricsim.errors import ConfigError

__all__ = ["VARIANTS", "DEFAULT_LINK_GBPS", "DEFAULT_MAX_NODES", "MinmaxResult",
           "allocate_circuits", "completion_bound", "symmetric_demand", "allocate_paper",
           "allocate_reference", "allocate_minmax", "minmax_allocation"]

#: The allocation variants, in the order the docs describe them.
VARIANTS = ("paper", "reference", "minmax")

#: Link speed (Gbit/s) that ``minmax`` assumes when ``link_gbps`` is not given. The bound scales
#: as 1 / link_gbps when ``eps_gbps = (8 - alpha) * link_gbps``, so the chosen circuits do not
#: depend on it.
DEFAULT_LINK_GBPS = 100.0

#: The released simulator's discount: after a pair gets its c-th circuit, T /= c * 100.
REFERENCE_DISCOUNT = 100.0

#: NICs per server: ``eps_gbps`` defaults to ``(NICS_PER_SERVER - alpha) * link_gbps``.
NICS_PER_SERVER = 8


# ------------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------------

def _demand(demand_bytes) -> np.ndarray:
    """float64[R, R] copy of the demand with a zero diagonal, or :class:`ConfigError`."""
    allowed = "must be a square R x R matrix of non-negative finite numbers (bytes)"
    try:
        d = np.array(demand_bytes, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError("demand_bytes", f"{allowed}; got a non-numeric value") from None
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ConfigError("demand_bytes", f"{allowed}; got shape {d.shape}")
    if not np.isfinite(d).all():
        raise ConfigError("demand_bytes", f"{allowed}; got NaN or infinity")
    if (d < 0).any():
        raise ConfigError("demand_bytes", f"{allowed}; got a negative entry")
    np.fill_diagonal(d, 0.0)
    return d


def _alpha(alpha) -> int:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Integral) or alpha < 0:
        raise ConfigError("alpha", f"must be an integer >= 0 (OCS ports per server), got {alpha!r}")
    return int(alpha)


def _gbps(value, field: str, *, positive: bool) -> float:
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and np.isfinite(value) and (value > 0 if positive else value >= 0))
    if not ok:
        kind = "> 0" if positive else ">= 0"
        raise ConfigError(field, f"must be a finite number {kind} (Gbit/s), got {value!r}")
    return float(value)


def _circuits(circuits, r: int) -> np.ndarray:
    allowed = f"must be an {r} x {r} matrix of non-negative integers (circuits per server pair)"
    try:
        c = np.array(circuits)
    except (TypeError, ValueError):
        raise ConfigError("circuits", allowed) from None
    if c.shape != (r, r) or not (np.issubdtype(c.dtype, np.integer) or c.dtype == bool):
        if c.shape == (r, r) and np.issubdtype(c.dtype, np.floating) and np.isfinite(c).all() \
                and (c == np.round(c)).all():
            c = c.astype(np.int64)
        else:
            raise ConfigError("circuits", f"{allowed}; got shape {c.shape}, dtype {c.dtype}")
    c = c.astype(np.int64)
    if (c < 0).any():
        raise ConfigError("circuits", f"{allowed}; got a negative entry")
    return c


# ------------------------------------------------------------------------------------------------
# The completion bound
# ------------------------------------------------------------------------------------------------

def _circuit_term(bytes_, circuits, link_bps):
    """Seconds to send ``bytes_`` over ``circuits`` links of ``link_bps`` (NumPy broadcasting).

    Every variant and the search kernel evaluate this exact expression, so that a bound compared
    against a candidate value is bit-for-bit the value :func:`completion_bound` reports.
    """
    return bytes_ * 8.0 / (circuits * link_bps)


def _eps_term(load_bytes, eps_bps):
    """Seconds for a server to move ``load_bytes`` over its EPS links (0 for no load; inf when the
    server has no EPS bandwidth but has load)."""
    load = np.asarray(load_bytes, dtype=np.float64)
    if eps_bps == 0:
        return np.where(load > 0, np.inf, 0.0)
    return load * 8.0 / eps_bps


def _bound(d: np.ndarray, c: np.ndarray, link_bps: float, eps_bps: float) -> float:
    """:func:`completion_bound` on validated arrays (``d`` with a zero diagonal)."""
    if d.size == 0:
        return 0.0
    on = c > 0
    np.fill_diagonal(on, False)
    circ = _circuit_term(d[on], c[on], link_bps)
    eps = np.where(on, 0.0, d)
    loads = np.concatenate([eps.sum(axis=1), eps.sum(axis=0)])
    worst = max(float(circ.max()) if circ.size else 0.0, float(_eps_term(loads, eps_bps).max()))
    return worst


def completion_bound(demand_bytes, circuits, link_gbps, eps_gbps) -> float:
    """The region's all-to-all completion bound ``B(C)`` in seconds (module docstring).

    Parameters
    ----------
    demand_bytes : float[R, R]
        Directional server-to-server bytes (diagonal ignored).
    circuits : int[R, R]
        Circuits per server pair (``circuits[i, j] > 0`` means pair ``(i, j)`` uses its direct
        link of ``circuits[i, j] * link_gbps`` per direction; it is not checked for symmetry).
    link_gbps : float > 0
        Speed of one circuit (one NIC), Gbit/s.
    eps_gbps : float >= 0
        EPS bandwidth of one server per direction, Gbit/s (the released simulator:
        ``(8 - alpha) * link_gbps``). 0 makes any EPS traffic take forever (``inf``).
    """
    d = _demand(demand_bytes)
    c = _circuits(circuits, d.shape[0])
    link_bps = _gbps(link_gbps, "link_gbps", positive=True) * 1e9
    eps_bps = _gbps(eps_gbps, "eps_gbps", positive=False) * 1e9
    return _bound(d, c, link_bps, eps_bps)


def symmetric_demand(demand_bytes) -> np.ndarray:
    """``D + D.T`` with a zero diagonal, float64[R, R]: what the released simulator builds.

    A circuit carries both directions, so the simulator (and Algorithm 1's "sum TX and RX") ranks
    server pairs by the bytes they exchange in both directions together.
    """
    d = _demand(demand_bytes)
    return d + d.T


# ------------------------------------------------------------------------------------------------
# paper: Algorithm 1 as printed
# ------------------------------------------------------------------------------------------------

def allocate_paper(demand_bytes, alpha) -> np.ndarray:
    """Algorithm 1 of the paper, as printed (reference section 3.4). int64[R, R].

    ``S = D + D.T`` (TX and RX summed; only the upper triangle ``i < j`` is used). Every pair with
    ``S[i, j] > 0`` starts with ``T[i, j] = inf``, every other pair with ``T = 0``. Repeatedly take
    the pair with the largest ``T`` (ties: the lowest ``(i, j)`` in row-major order, so among the
    still circuit-less pairs ``(0, 1), (0, 2), ...`` first). If both servers have a free port, add
    one circuit and set ``T[i, j] = S[i, j] / C[i, j]``; otherwise **stop** (the printed
    ``break``).

    The printed stop strands ports: the first server to run out of ports ends the loop as soon as
    it is the bottleneck again, even while other servers have free ports. On the reference 8 x 8
    trace with ``alpha = 6`` every pair has demand, so server 0 takes one circuit to each of
    servers 1..6, then pair (0, 7) is the bottleneck with server 0 full: 6 circuits, 36 of the 48
    ports unused (the released code uses every port; see :func:`allocate_reference`).

    The printed algorithm has no other exit; when no pair has demand (largest ``T`` is 0) this
    implementation stops too, instead of wiring pairs that have nothing to send.
    """
    s = symmetric_demand(demand_bytes)
    alpha = _alpha(alpha)
    r = s.shape[0]
    c = np.zeros((r, r), dtype=np.int64)
    avail = np.full(r, alpha, dtype=np.int64)
    upper = np.triu(np.ones((r, r), dtype=bool), k=1)
    t = np.where(upper, np.where(s > 0, np.inf, 0.0), -1.0)  # -1: not a pair (never the max)
    while r > 1:
        i, j = divmod(int(np.argmax(t)), r)  # first maximum in row-major order
        if t[i, j] <= 0:
            break
        if avail[i] == 0 or avail[j] == 0:
            break
        _add_circuit(c, avail, i, j)
        t[i, j] = s[i, j] / c[i, j]
    return c


def _add_circuit(c: np.ndarray, avail: np.ndarray, i: int, j: int) -> None:
    c[i, j] += 1
    c[j, i] += 1
    avail[i] -= 1
    avail[j] -= 1


# ------------------------------------------------------------------------------------------------
# reference: the released simulator's loop
# ------------------------------------------------------------------------------------------------

def allocate_reference(demand_bytes, alpha) -> np.ndarray:
    """The released simulator's greedy (reference section 3.5), step for step. int64[R, R].

    ::

        T = D + D.T (zero diagonal); avail = [alpha] * R
        while sum(avail) > 0:
            (i, j) = argmax of T
            if T[i, j] == 0: break
            if avail[i] > 0 and avail[j] > 0:
                C[i, j] += 1; C[j, i] += 1; avail[i] -= 1; avail[j] -= 1
                T[i, j] = T[j, i] = T[i, j] / (C[i, j] * 100)
            if avail[i] == 0: zero row i and column i of T
            if avail[j] == 0: zero row j and column j of T

    The discount divides the *current* ``T``, as the code does, so it compounds: after ``c``
    circuits ``T = S / (100**c * c!)``. It makes every loaded pair get one circuit before any pair
    gets a second (unless the demands differ by 100x), and zeroing exhausted servers lets the
    loop continue until every port that still has a loaded partner is used.

    Tie-breaking: the released code takes the first entry of ``Matrix2D::get_sorted_indices``
    (descending); its order among equal values is not specified there. Here the argmax is the
    first maximum of the full ``R x R`` matrix in row-major order (``numpy.argmax``), i.e. what a
    stable descending sort of the flattened matrix gives: the lowest ``i``, then the lowest
    ``j``. As ``T`` is symmetric this is always an upper-triangle entry ``i < j``.
    """
    t = symmetric_demand(demand_bytes)
    alpha = _alpha(alpha)
    r = t.shape[0]
    c = np.zeros((r, r), dtype=np.int64)
    avail = np.full(r, alpha, dtype=np.int64)
    while avail.sum() > 0:
        i, j = divmod(int(np.argmax(t)), r)
        if t[i, j] == 0:
            break
        if avail[i] > 0 and avail[j] > 0:
            _add_circuit(c, avail, i, j)
            t[i, j] = t[j, i] = t[i, j] / (c[i, j] * REFERENCE_DISCOUNT)
        for k in (i, j):
            if avail[k] == 0:
                t[k, :] = 0.0
                t[:, k] = 0.0
    return c


# ------------------------------------------------------------------------------------------------
# minmax: exact minimizer of the completion bound
# ------------------------------------------------------------------------------------------------

_UNDECIDED, _CIRCUIT, _EPS = 0, 1, 2


@njit
def _eps_seconds(load, eps_bps):
    """Scalar twin of :func:`_eps_term` (same IEEE operations)."""
    if load <= 0.0:
        return 0.0
    if eps_bps == 0.0:
        return np.inf
    return load * 8.0 / eps_bps


# The search kernels share two tuples:
#   prob  = (d, pi, pj, need, order_out, order_in)      the instance (read-only)
#   state = (decided, budget, eo, ei, saved, trail)      the search state (mutated, undone)
# d : float64[R, R] directional demand (bytes, zero diagonal); pi, pj : int64[P] the pairs with
# demand (pi < pj); need : int64[P] circuits a pair takes if wired (1..alpha; alpha + 1: it
# cannot be); order_out / order_in : int64[R, R] per server, the pairs at it by outbound /
# inbound demand, largest first, padded with -1. decided : int8[P] (_UNDECIDED / _CIRCUIT /
# _EPS); budget : int64[R] free ports; eo, ei : float64[R] EPS bytes out / in of the pairs
# decided for the EPS; saved : float64[P, 4] eo[i], ei[i], eo[j], ei[j] before pair p went to
# the EPS; trail : int64[P] pairs in the order they were decided (a prefix of length tlen).

@njit
def _partner(pi, pj, q, s):
    return pj[q] if pi[q] == s else pi[q]


@njit
def _value(d, s, u, mode):
    """Demand of pair (s, u) seen from server ``s``: out (mode 0), in (1) or both (2)."""
    if mode == 0:
        return d[s, u]
    if mode == 1:
        return d[u, s]
    return d[s, u] + d[u, s]


@njit
def _floor_seconds(floor, mode, eps_bps):
    """EPS term (seconds) of a floor; the both-directions floor (mode 2) bounds out + in, whose
    half cannot exceed the larger direction."""
    return _eps_seconds(floor * 0.5 if mode == 2 else floor, eps_bps)


@njit
def _cover(prob, state, s, mode, skip, cap, table):
    """``(undecided, best)`` at server ``s`` for one ``mode`` (:func:`_value`: out, in, both).

    ``undecided`` is the demand (bytes) of the undecided pairs at ``s``; ``best`` the most of it
    that circuits can carry within ``cap`` of ``s``'s ports: a 0/1 knapsack, solved exactly by
    dynamic programming over the port count, over the undecided pairs whose partner still has
    ``need`` free ports (weights: the needs; values: the demand), pair ``skip`` left out of the
    knapsack (it still counts in ``undecided``). ``table`` : float64[>= alpha + 1] scratch; on
    return ``table[c]`` is the best for every ``c <= cap`` ports.
    """
    d, pi, pj, need, order_out, order_in = prob
    decided, budget = state[0], state[1]
    order = order_in if mode == 1 else order_out
    best = table[:cap + 1]
    best[:] = 0.0
    undecided = 0.0
    for k in range(order.shape[1]):
        q = order[s, k]
        if q < 0:
            break
        if decided[q] != _UNDECIDED:
            continue
        u = _partner(pi, pj, q, s)
        v = _value(d, s, u, mode)
        undecided += v
        w = need[q]
        if q != skip and w <= cap and budget[u] >= w:
            for c in range(cap, w - 1, -1):
                if best[c - w] + v > best[c]:
                    best[c] = best[c - w] + v
    return undecided, best[cap]


@njit
def _assign(prob, state, q, kind, tlen):
    """Decide pair ``q`` (``_CIRCUIT`` or ``_EPS``); returns the new trail length."""
    d, pi, pj, need = prob[0], prob[1], prob[2], prob[3]
    decided, budget, eo, ei, saved, trail = state
    i, j = pi[q], pj[q]
    if kind == _CIRCUIT:
        budget[i] -= need[q]
        budget[j] -= need[q]
    else:
        saved[q, 0], saved[q, 1], saved[q, 2], saved[q, 3] = eo[i], ei[i], eo[j], ei[j]
        eo[i] += d[i, j]
        ei[j] += d[i, j]
        eo[j] += d[j, i]
        ei[i] += d[j, i]
    decided[q] = kind
    trail[tlen] = q
    return tlen + 1


@njit
def _undo(prob, state, mark, tlen):
    """Undo the decisions on the trail back to length ``mark`` (exactly: loads are restored,
    not subtracted); returns ``mark``."""
    pi, pj, need = prob[1], prob[2], prob[3]
    decided, budget, eo, ei, saved, trail = state
    while tlen > mark:
        tlen -= 1
        q = trail[tlen]
        i, j = pi[q], pj[q]
        if decided[q] == _CIRCUIT:
            budget[i] += need[q]
            budget[j] += need[q]
        else:
            eo[i], ei[i], eo[j], ei[j] = saved[q, 0], saved[q, 1], saved[q, 2], saved[q, 3]
        decided[q] = _UNDECIDED
    return mark


@njit
def _settle(prob, state, tlen, eps_bps, limit, table):
    """Tighten a search node to a fixpoint; returns ``(ok, value, branch, tlen)``.

    For every server and mode (out, in, both directions), the *floor* ``committed + undecided -
    best`` (:func:`_cover`) is a lower bound on its final EPS load. ``ok`` is False when a floor
    exceeds ``limit`` (no completion is acceptable). An undecided pair that can still get
    circuits is *forced*: to circuits when leaving it on the EPS lifts a floor of one of its
    servers over ``limit``, to the EPS when wiring it (its ports taken, its demand removed) does;
    both at once also means ``ok = False``. Forcing repeats until nothing changes (decisions go
    on the trail, so the caller can undo them). Then, as every circuit takes ``need`` ports at
    both of its ends, the ports still to be used add up to an even number: if each server's
    port use is pinned (the fewest ports its floors allow equals the most it can use) and the
    total is odd, ``ok = False``. All of these remove only options that no acceptable completion
    has, so the search stays exact.

    ``value`` is then the largest floor as an EPS term (seconds; the exact worst EPS term when
    no pair can get circuits any more, a leaf: the rest goes to the EPS) and ``branch`` the pair
    to branch on: the largest eligible pair, in the tighter direction, of the server with the
    highest floor among those that have one (most constrained first); -1 at a leaf.
    """
    d, pi, pj, need, order_out, order_in = prob
    decided, budget, eo, ei = state[0], state[1], state[2], state[3]
    r = d.shape[0]
    while True:
        changed = False
        value = 0.0
        top_server, top_mode, top_floor = -1, 0, -1.0
        ports_min, ports_max = 0, 0
        for s in range(r):
            uses_min, uses_max = 0, 0
            for mode in range(3):
                committed = eo[s] if mode == 0 else ei[s] if mode == 1 else eo[s] + ei[s]
                undecided, best = _cover(prob, state, s, mode, -1, budget[s], table)
                floor = committed + undecided - best
                worst = _floor_seconds(floor, mode, eps_bps)
                if worst > limit:
                    return False, worst, -1, tlen
                if mode < 2:
                    value = max(value, worst)
                c = 0  # fewest ports with which s keeps this floor within the limit
                while _floor_seconds(committed + undecided - table[c], mode, eps_bps) > limit:
                    c += 1
                uses_min = max(uses_min, c)
                order = order_in if mode == 1 else order_out
                eligible = False
                for k in range(order.shape[1]):
                    q = order[s, k]
                    if q < 0:
                        break
                    u = _partner(pi, pj, q, s)
                    w = need[q]
                    if decided[q] != _UNDECIDED or budget[s] < w or budget[u] < w:
                        continue
                    eligible = True
                    if mode == 0:
                        uses_max += w
                    v = _value(d, s, u, mode)
                    if _floor_seconds(floor + v, mode, eps_bps) <= limit:
                        continue  # the floor rises by at most v either way: nothing forced
                    _, rest = _cover(prob, state, s, mode, q, budget[s], table)
                    no_eps = _floor_seconds(committed + undecided - rest, mode, eps_bps) > limit
                    _, rest = _cover(prob, state, s, mode, q, budget[s] - w, table)
                    no_circuit = _floor_seconds(committed + undecided - v - rest, mode,
                                                eps_bps) > limit
                    if no_eps and no_circuit:
                        return False, worst, -1, tlen
                    if no_eps or no_circuit:
                        tlen = _assign(prob, state, q, _CIRCUIT if no_eps else _EPS, tlen)
                        changed = True
                        break
                if changed:
                    break
                if eligible and mode < 2 and floor > top_floor:
                    top_server, top_mode, top_floor = s, mode, floor
            if changed:
                break
            ports_min += uses_min
            ports_max += min(uses_max, budget[s])
        if not changed:
            break
    if ports_min == ports_max and ports_min % 2 == 1:
        return False, value, -1, tlen  # every circuit takes a port at both ends: an even total
    if top_server < 0:
        return True, value, -1, tlen
    order = order_in if top_mode == 1 else order_out
    for k in range(order.shape[1]):
        q = order[top_server, k]
        u = _partner(pi, pj, q, top_server)
        if decided[q] == _UNDECIDED and budget[top_server] >= need[q] and budget[u] >= need[q]:
            return True, value, q, tlen
    return True, value, -1, tlen  # unreachable: top_server has an eligible pair


@njit
def _cover_search(d, pi, pj, need, order_out, order_in, alpha, eps_bps, limit, first, max_nodes):
    """Exact depth-first branch and bound: circuits or EPS for every candidate pair.

    Parameters
    ----------
    d, pi, pj, need, order_out, order_in
        The instance (see the comment above :func:`_partner`); pairs with ``need > alpha``
        cannot get circuits and are put on the EPS before the search starts.
    alpha : int
        Ports per server. ``eps_bps`` : float, EPS bandwidth per server and direction.
    limit : float
        Accept only configurations whose worst EPS term (seconds) is ``<= limit``.
    first : bool
        Return the first acceptable configuration (a feasibility test) instead of the best.
    max_nodes : int
        Give up after this many nodes (``nodes > max_nodes`` in the result).

    Returns ``(found, value, chosen, nodes)``: whether an acceptable configuration exists,
    its worst EPS term (seconds; the smallest possible one when ``first`` is False),
    ``chosen : bool[P]`` (the candidates that get circuits) and the number of search nodes.

    Each node is settled (:func:`_settle`: prune or force), then branches on one pair: circuits
    first, then EPS. Only options without an acceptable completion are cut and leaves are exact,
    so nothing acceptable is missed. When ``first`` is False, ``limit`` drops just below each
    configuration found, so the last one found is optimal.
    """
    r = d.shape[0]
    p_count = pi.shape[0]
    decided = np.zeros(p_count, dtype=np.int8)
    budget = np.full(r, alpha, dtype=np.int64)
    state = (decided, budget, np.zeros(r), np.zeros(r), np.zeros((p_count, 4)),
             np.zeros(p_count, dtype=np.int64))
    prob = (d, pi, pj, need, order_out, order_in)
    for q in range(p_count):  # fixed on the EPS (not on the trail: never undone)
        if need[q] > alpha:
            _assign(prob, state, q, _EPS, 0)
    table = np.zeros(alpha + 1)
    branch = np.full(p_count + 1, -1, dtype=np.int64)  # pair branched on at each depth; -1: new
    next_opt = np.zeros(p_count + 1, dtype=np.int8)   # 0: try circuits, 1: try EPS, 2: done
    mark = np.zeros(p_count + 1, dtype=np.int64)      # trail length on entering the node
    base = np.zeros(p_count + 1, dtype=np.int64)      # trail length after settling it
    chosen = np.zeros(p_count, dtype=np.bool_)
    found = False
    best = np.inf
    nodes = 0
    tlen = 0
    depth = 0
    while depth >= 0:
        q = branch[depth]
        if q < 0:  # a new node
            nodes += 1
            if nodes > max_nodes:
                break
            mark[depth] = tlen
            ok, value, q, tlen = _settle(prob, state, tlen, eps_bps, limit, table)
            if ok and q < 0:  # leaf
                found = True
                best = value
                for p in range(p_count):
                    chosen[p] = decided[p] == _CIRCUIT
                if first:
                    break
                limit = np.nextafter(value, -np.inf)
            if q < 0:
                tlen = _undo(prob, state, mark[depth], tlen)
                depth -= 1
                continue
            branch[depth] = q
            next_opt[depth] = 0
            base[depth] = tlen
        else:
            tlen = _undo(prob, state, base[depth], tlen)  # the option tried last
        if next_opt[depth] == 2:
            tlen = _undo(prob, state, mark[depth], tlen)
            branch[depth] = -1
            depth -= 1
            continue
        tlen = _assign(prob, state, q, _CIRCUIT if next_opt[depth] == 0 else _EPS, tlen)
        next_opt[depth] += 1
        depth += 1
        branch[depth] = -1
    return found, best, chosen, nodes


class MinmaxResult(NamedTuple):
    """What :func:`minmax_allocation` found.

    ``circuits`` : int64[R, R], the configuration (as :func:`allocate_circuits` returns it);
    ``bound_s`` : its completion bound ``B(C)``, seconds; ``lower_bound_s`` : a certified lower
    bound on the optimum (seconds; the optimum is ``>= lower_bound_s``, and ``== bound_s`` when
    ``exact``); ``exact`` : True when the search finished within its node budget, so that
    ``bound_s`` is the optimum; ``nodes`` : search nodes visited.
    """

    circuits: np.ndarray
    bound_s: float
    lower_bound_s: float
    exact: bool
    nodes: int


#: Default node budget of one ``minmax`` allocation (all its searches together). Deterministic:
#: the result depends on the budget, never on the clock. On the benchmark machine a node costs
#: 5-150 us (R = 4 .. 16, alpha up to 7), so the budget caps a call at under a second; realistic
#: MoE loads need a few hundred nodes at most (``benchmarks/bench_ocs.py``).
DEFAULT_MAX_NODES = 5_000

_FOUND, _NONE, _ABORTED = 0, 1, 2


class _MinmaxProblem:
    """The pairs of one ``minmax`` instance and the searches over circuit needs.

    ``m[p] = max(D_ij, D_ji)`` for the pairs ``p = (i, j), i < j`` with any demand (``pi``,
    ``pj``: int64[P]); ``terms[p, c - 1]`` is the circuit term of pair ``p`` with ``c``
    circuits, ``c = 1 .. alpha`` (seconds, float64[P, alpha]).
    """

    def __init__(self, d: np.ndarray, alpha: int, link_bps: float, eps_bps: float,
                 max_nodes: int):
        self.d, self.alpha, self.eps_bps = d, alpha, eps_bps
        iu, ju = np.triu_indices(d.shape[0], k=1)
        m = np.maximum(d[iu, ju], d[ju, iu])
        keep = m > 0
        self.pi, self.pj, self.m = iu[keep].astype(np.int64), ju[keep].astype(np.int64), m[keep]
        counts = np.arange(1, alpha + 1, dtype=np.int64)
        self.terms = _circuit_term(self.m[:, None], counts[None, :], link_bps)
        self.order_out = _pair_order(self.pi, self.pj, d, inbound=False)
        self.order_in = _pair_order(self.pi, self.pj, d, inbound=True)
        self.nodes_left = max_nodes
        self.nodes = 0

    def candidates(self) -> np.ndarray:
        """Every value the circuit part of the bound can take, sorted ascending (float64)."""
        return np.unique(self.terms)

    def needs(self, t: float) -> np.ndarray:
        """int64[P]: circuits each pair needs for a circuit term ``<= t``; ``alpha + 1`` when even
        ``alpha`` circuits are not enough (``terms`` decreases along a row)."""
        return 1 + (self.terms > t).sum(axis=1).astype(np.int64)

    def no_circuits(self) -> np.ndarray:
        return np.full(self.m.size, self.alpha + 1, dtype=np.int64)

    def search(self, need: np.ndarray, limit: float, first: bool):
        """Run :func:`_cover_search` for these needs (pairs needing ``> alpha`` go to the EPS).

        Returns ``(status, circuits)``: ``_FOUND`` with the configuration (the first acceptable
        one if ``first``, else the best), ``_NONE`` (proven: none has a worst EPS term
        ``<= limit``), or ``_ABORTED`` (node budget spent; ``circuits`` is the best found, or
        None).
        """
        found, _, chosen, nodes = _cover_search(self.d, self.pi, self.pj, need, self.order_out,
                                                self.order_in, self.alpha, self.eps_bps, limit,
                                                first, self.nodes_left)
        aborted = int(nodes) > self.nodes_left
        nodes = min(int(nodes), self.nodes_left)
        self.nodes += nodes
        self.nodes_left -= nodes
        c = None
        if found:
            r = self.d.shape[0]
            c = np.zeros((r, r), dtype=np.int64)
            c[self.pi[chosen], self.pj[chosen]] = need[chosen]
            c += c.T
        return (_ABORTED if aborted else _FOUND if found else _NONE), c


def _pair_order(pi, pj, d, *, inbound) -> np.ndarray:
    """int64[R, R]: per server, the indices of the pairs at it by that direction's demand,
    largest first (ties by pair index), padded with -1."""
    r = d.shape[0]
    order = np.full((r, r), -1, dtype=np.int64)
    for s in range(r):
        at = np.flatnonzero((pi == s) | (pj == s))
        partner = np.where(pi[at] == s, pj[at], pi[at])
        load = d[partner, s] if inbound else d[s, partner]
        at = at[np.lexsort((at, -load))]
        order[s, :at.size] = at
    return order


def _minmax_options(alpha, link_gbps, eps_gbps):
    """Validated ``(link_bps, eps_bps)`` of ``minmax`` (defaults in :func:`allocate_minmax`)."""
    link_gbps = DEFAULT_LINK_GBPS if link_gbps is None else _gbps(link_gbps, "link_gbps",
                                                                   positive=True)
    if eps_gbps is None:
        if alpha > NICS_PER_SERVER:
            raise ConfigError("eps_gbps", f"must be given when alpha > {NICS_PER_SERVER} (the "
                                          f"default is (8 - alpha) * link_gbps); alpha={alpha}")
        eps_gbps = (NICS_PER_SERVER - alpha) * link_gbps
    eps_gbps = _gbps(eps_gbps, "eps_gbps", positive=False)
    return link_gbps * 1e9, eps_gbps * 1e9


def allocate_minmax(demand_bytes, alpha, *, link_gbps=None, eps_gbps=None) -> np.ndarray:
    """The configuration with the smallest completion bound ``B(C)``. int64[R, R].

    ``link_gbps`` defaults to :data:`DEFAULT_LINK_GBPS`, ``eps_gbps`` to
    ``(8 - alpha) * link_gbps`` (required when ``alpha > 8``). Exact unless the search exceeds
    :data:`DEFAULT_MAX_NODES`; :func:`minmax_allocation` says which, and how close it got.

    **Algorithm.** Write ``m_p = max(D_ij, D_ji)`` for a server pair ``p = (i, j)``; only pairs
    with ``m_p > 0`` are ever wired. For a target ``t`` (seconds), pair ``p`` may get circuits
    only if it gets at least ``need_p(t) = min{c : 8 m_p / (c link_bps) <= t}`` of them (if that
    is ``> alpha`` it must use the EPS); extra circuits never raise ``B``. So ``B(C) <= t`` is
    possible iff some set ``S`` of pairs, each given ``need_p(t)`` circuits, uses ``<= alpha``
    ports per server and leaves every server an EPS load (each direction) within ``t``:
    ``feasible(t)``, monotone in ``t`` (needs only shrink, EPS allowances only grow). The
    circuit part of ``B`` is one of the finite values ``V = {8 m_p / (c link_bps) : p,
    c = 1..alpha}`` (sorted ``V_0 < V_1 < ...``), and ``need(t)`` is constant on each
    ``[V_{k-1}, V_k)``:

    1. binary search for the smallest ``k`` with ``feasible(V_k)``;
    2. then ``V_{k-1} < B* <= V_k``; inside ``(V_{k-1}, V_k)`` the needs are ``need(V_{k-1})``
       (no circuits at all for ``k = 0``) and the circuit part is ``<= V_{k-1}``, so ``B*`` is
       the smallest achievable worst EPS term under those needs if that is below ``V_k``, else
       ``V_k``. One minimizing search settles it.

    The better of the ``paper`` and ``reference`` configurations is the starting incumbent
    (candidates at or above its bound need no search), so ``minmax`` is never worse than them.

    **The search** (:func:`_cover_search`, Numba) is a depth-first branch and bound over "this
    pair gets its circuits, or uses the EPS". At every node (:func:`_settle`) each server gets a
    *floor*, a lower bound on its final EPS load: the load already on the EPS plus the undecided
    demand minus the most of it that circuits could still take within the server's free ports
    (an exact 0/1 knapsack over the pairs whose partner still has ports), for outbound, inbound
    and both directions together (``(out + in) / 2 <= max(out, in)``). A node is cut when a floor
    exceeds the target; a pair is *forced* to circuits (to the EPS) when leaving it off (wiring
    it) would lift a floor over the target; and a node is cut when every server's port use is
    pinned (``min == max``) to an odd total, since a circuit takes a port at both ends. Each of
    these removes only options that no acceptable completion has, and leaves are checked
    exactly, so ``feasible`` is decided exactly and the minimizing search (which lowers its
    target below each configuration it finds) ends at the optimum. The search branches on the
    largest open pair of the server with the highest floor.

    Comparisons use the very floating-point expressions :func:`completion_bound` evaluates; with
    integer byte counts (exact sums below 2**53) the optimum is exact, with fractional ones up
    to the rounding of the EPS sums.

    **Cost.** ``log2(P alpha) + 2`` searches at most. The problem is NP-hard (a knapsack per
    server under shared degree limits) and the search exponential in the worst case, but the
    floors and forcing settle realistic loads in a handful of nodes per search: R = 8 in about
    2 ms, R = 16 in about 5-10 ms (``benchmarks/bench_ocs.py``; every synthetic MoE load there
    is solved exactly). Stress tests found hard cases only at 15 servers: near-uniform demand
    (1000 or 1001 bytes per pair) with odd ``alpha``, and one heavy-tailed (log-normal) matrix.
    They exhaust :data:`DEFAULT_MAX_NODES` (under a second), and the best configuration found is
    returned with a certified gap (:func:`minmax_allocation`; measured <= 0.01 % and 4.6 %).

    **Leftover ports.** The optimum usually leaves ports free. They are given out one circuit at
    a time, deterministically, without raising ``B``: among pairs with demand whose both servers
    have a free port (and, for a pair still on the EPS, whose one-circuit term
    ``8 m_p / link_bps`` is ``<= B``), add a circuit to the pair with the longest *pair time* —
    ``8 m_p / (C_p link_bps)`` for a wired pair, the worst EPS term of its two servers for an EPS
    pair — ties to the lowest ``(i, j)``. A circuit added to a wired pair shortens its term;
    moving a pair off the EPS lowers its servers' EPS loads and adds a term ``<= B``; so ``B``
    stays the same while the secondary terms shrink. Pairs without demand never get circuits.
    """
    return minmax_allocation(demand_bytes, alpha, link_gbps=link_gbps, eps_gbps=eps_gbps).circuits


def minmax_allocation(demand_bytes, alpha, *, link_gbps=None, eps_gbps=None,
                      max_nodes=DEFAULT_MAX_NODES) -> MinmaxResult:
    """:func:`allocate_minmax` with its certificate (:class:`MinmaxResult`).

    ``max_nodes`` (int >= 1) is the node budget of all the searches together. When it runs out
    the result is the best configuration found (never worse than ``paper`` or ``reference``),
    ``exact`` is False and ``lower_bound_s`` is the largest target the searches proved
    unreachable (the optimum lies above it), so ``bound_s / lower_bound_s`` bounds the gap.
    """
    d = _demand(demand_bytes)
    alpha = _alpha(alpha)
    link_bps, eps_bps = _minmax_options(alpha, link_gbps, eps_gbps)
    if isinstance(max_nodes, bool) or not isinstance(max_nodes, numbers.Integral) \
            or max_nodes < 1:
        raise ConfigError("max_nodes", f"must be an integer >= 1, got {max_nodes!r}")
    prob = _MinmaxProblem(d, alpha, link_bps, eps_bps, int(max_nodes))
    values = prob.candidates()
    best = allocate_reference(d, alpha)  # the incumbent: the better of reference and paper
    ub = _bound(d, best, link_bps, eps_bps)

    def consider(c):
        nonlocal best, ub
        b = _bound(d, c, link_bps, eps_bps)
        if b < ub:
            best, ub = c, b

    consider(allocate_paper(d, alpha))
    exact = True
    proven_below = -np.inf  # the optimum is > this target (proven infeasible)

    # 1. smallest feasible candidate; those >= the incumbent's bound are feasible already
    lo, hi = 0, int(np.searchsorted(values, ub, side="left"))
    while lo < hi:
        mid = (lo + hi) // 2
        status, c = prob.search(prob.needs(values[mid]), values[mid], first=True)
        if status == _FOUND:
            consider(c)
            hi = mid
        else:
            if status == _NONE:
                proven_below = max(proven_below, values[mid])
            exact &= status == _NONE
            lo = mid + 1  # an aborted search counts as infeasible: the answer may be higher
    # 2. the open interval below values[hi] (or below the incumbent)
    need = prob.needs(values[hi - 1]) if hi > 0 else prob.no_circuits()
    top = min(values[hi], ub) if hi < values.size else ub
    status, c = prob.search(need, np.nextafter(top, -np.inf), first=False)
    if c is not None:
        consider(c)
    if status == _ABORTED:
        exact = False
    elif exact:
        proven_below = ub  # the optimum is ub itself
    c = _spend_leftover_ports(d, best, alpha, link_bps, eps_bps)
    bound = _bound(d, c, link_bps, eps_bps)
    lower = bound if exact else _root_lower_bound(prob, max(proven_below, 0.0), bound)
    return MinmaxResult(c, bound, lower, exact, prob.nodes)


def _root_lower_bound(prob: _MinmaxProblem, lower: float, upper: float, steps: int = 60) -> float:
    """Raise a certified lower bound ``lower`` (the optimum is above it) towards ``upper`` by
    bisection on the target ``t``, each step one root node of the search (:func:`_settle`
    proving ``feasible(t)`` false, or not). Used when the node budget ran out."""
    prob.nodes_left = 1
    for _ in range(steps):
        if not upper > lower:
            break
        t = 0.5 * (lower + upper)
        if t <= lower or t >= upper:
            break
        prob.nodes_left = 1
        status, _ = prob.search(prob.needs(t), t, first=True)
        if status == _NONE:
            lower = t
        else:
            upper = t
    return lower


def _spend_leftover_ports(d, c, alpha, link_bps, eps_bps) -> np.ndarray:
    """Give free ports to loaded pairs without raising the bound (see :func:`allocate_minmax`)."""
    r = d.shape[0]
    c = c.copy()
    bound = _bound(d, c, link_bps, eps_bps)
    m = np.maximum(d, d.T)
    upper = np.triu(m > 0, k=1)
    single = _circuit_term(m, 1, link_bps)
    while True:
        free = c.sum(axis=1) < alpha
        eligible = upper & free[:, None] & free[None, :] & ((c > 0) | (single <= bound))
        if not eligible.any():
            return c
        eps = np.where(c > 0, 0.0, d)
        worst = np.maximum(_eps_term(eps.sum(axis=1), eps_bps), _eps_term(eps.sum(axis=0), eps_bps))
        eps_pair = np.maximum(worst[:, None], worst[None, :])
        wired = _circuit_term(m, np.maximum(c, 1), link_bps)
        time = np.where(eligible, np.where(c > 0, wired, eps_pair), -1.0)
        i, j = divmod(int(np.argmax(time)), r)
        c[i, j] += 1
        c[j, i] += 1


# ------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------

def allocate_circuits(demand_bytes, alpha, variant="reference", *, link_gbps=None,
                      eps_gbps=None) -> np.ndarray:
    """Circuits per server pair for one region: symmetric ``int64[R, R]``, zero diagonal, row
    sums ``<= alpha``; no circuit joins two servers that exchange no bytes.

    Parameters
    ----------
    demand_bytes : float[R, R]
        Bytes server ``i`` sends to server ``j`` in the region's all-to-all (directional,
        non-negative, finite; the diagonal is ignored).
    alpha : int >= 0
        OCS ports (NICs) per server.
    variant : str
        One of :data:`VARIANTS`: ``"paper"``, ``"reference"`` (default), ``"minmax"``.
    link_gbps, eps_gbps : float, optional
        Used by ``minmax`` only (circuit speed, default :data:`DEFAULT_LINK_GBPS`; EPS bandwidth
        per server and direction, default ``(8 - alpha) * link_gbps``); the greedy variants rank
        pairs by bytes alone. Validated whenever given.
    """
    if variant not in VARIANTS:
        raise ConfigError("variant", f"must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if variant == "minmax":
        return allocate_minmax(demand_bytes, alpha, link_gbps=link_gbps, eps_gbps=eps_gbps)
    if link_gbps is not None:
        _gbps(link_gbps, "link_gbps", positive=True)
    if eps_gbps is not None:
        _gbps(eps_gbps, "eps_gbps", positive=False)
    if variant == "paper":
        return allocate_paper(demand_bytes, alpha)
    return allocate_reference(demand_bytes, alpha)
