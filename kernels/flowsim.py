"""Flow-level (fluid, max-min fair) event-driven engine.

Flows arrive at ``start_ps``, share link capacity max-min fairly and leave when their bytes are
delivered; link capacities change at given times (OCS reconfiguration). Between events all rates
are constant, so the engine jumps from event to event: arrival, completion, capacity change.
Events at the same picosecond are coalesced into one re-balance.

Re-balancing. A feasible allocation is max-min fair iff every flow has a *bottleneck*: a
saturated link on which its normalized rate (rate / weight) is the largest, or its own rate cap
(Bertsekas & Gallager). Two facts keep re-balancing local:

- *Certificates*: after a departure only the flows on the departed flow's links can lose their
  bottleneck; if none does, the allocation is still exactly max-min and nothing is re-solved (the
  common case in a symmetric all-to-all).
- *Levels*: progressive filling freezes flows in increasing order of normalized rate. An event
  whose effect starts at level ``theta`` (a departed flow's rate; an arriving flow's lowest equal
  share ``capacity / flows`` on its links; a changed link's old top rate or new equal share) leaves
  every flow below ``theta`` untouched, so the exact re-solve covers only the flows at or above
  ``theta`` connected to the event through such flows (:func:`_upper_component`), on the capacity
  the others leave (:func:`fabricsim.kernels.maxmin.fill_subset`).
- *Bottleneck structure*: a change of rates on a saturated link is absorbed by the flows at
  that link's top normalized rate (those bottlenecked there), and goes on from them through their
  own saturated links; an unsaturated link passes nothing on. So every re-solve first tries the
  set reached that way (:func:`_bottleneck_component`, usually a fraction of the upper
  component), solved with every other flow fixed, and keeps the result only if it is provably
  max-min: every flow whose certificate could have changed still has its bottleneck
  (:func:`_solve_certified`). Otherwise everything is restored, the flows found without a
  bottleneck (and those they must make room for) join the set, and the attempt is repeated, up to
  ``BN_ROUNDS`` times in all, before the upper component is solved.
  Either way the allocation is max-min fair; ``clock[C_BN_TRIES]`` counts the attempts and
  ``clock[C_BN_FAILS]`` those not kept; ``clock[C_BN_OFF] = 1`` skips them (comparisons).

Arrivals and capacity changes re-solve exactly at once. A departure whose neighbours lose their
certificate re-solves exactly at once when ``tolerance == 0``; with ``tolerance > 0`` the
uncertified neighbours that have slack on every link first share the freed capacity among
themselves (:func:`_local_solve`: feasible, work-conserving, cheap) and the exact re-solve of all
pending departures follows within ``tolerance`` times the departed flow's age (earlier if any
arrival or capacity change comes first). Rates are feasible at all times; between a departure and
its exact re-solve they may be less fair than max-min. On the B2 benchmark (128-host all-to-all,
16,256 flows) ``tolerance = 0.01`` gives the exact last completion and a mean per-flow completion
error of 0.2% at a fraction of the exact cost.

Times are int64 picoseconds; a flow's completion is rounded up to the next picosecond. Bytes are
tracked as float64 remaining bytes per flow, updated lazily when its rate changes.

State layout (:class:`FlowState`; F flows, L links, nnz = total route length):

- routes ``route_ptr int64[F+1]``, ``route_links int64[nnz]``, ``entry_flow int64[nnz]``
- link -> route-entry incidence ``lf_ptr int64[L+1]``; active entries of link ``l`` are
  ``lf_act[lf_ptr[l] : lf_ptr[l] + n_act[l]]`` (route-entry indices), ``entry_slot int64[nnz]``
  the slot of each entry in ``lf_act``
- flows ``start_ps``, ``size_bytes``, ``weight``, ``rate_cap_bps``, ``order`` (by start),
  ``status int8`` (0 pending, 1 active, 2 done), ``rate_bps``, ``rem_bytes``, ``t_upd_ps``,
  ``finish_ps`` (-1 until done), ``fin_key`` (predicted finish, heap key)
- links ``capacity_bps`` (run-time state), ``load_bps``, ``maxnorm`` (largest rate/weight),
  ``bytes_acc`` (bytes carried up to ``t_link_ps``); scratch ``resid_bps``, ``other_bps`` and
  ``other_top`` (what the flows outside a re-solve leave and keep)
- capacity events ``ev_time_ps``, ``ev_link``, ``ev_capacity_bps`` sorted by time
- ``clock int64[16]``: scalars, see the ``C_*`` indices below
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fabricsim._jit import njit
from fabricsim.kernels.heaps import heap_pop, heap_push, heap_update
from fabricsim.kernels.maxmin import fill_subset
from fabricsim.kernels.triggers import fire, no_triggers

__all__ = ["FlowState", "new_state", "advance", "next_event_time", "settle_links", "inject"]

INF_PS = np.iinfo(np.int64).max
#: End of the simulated clock: a completion predicted later is "never" (INF_PS), so that
#: ``now + dt`` cannot wrap around int64; about 104 days. fabricsim.engine bounds inputs by it.
HORIZON_PS = 9 * 10**18
CERT_TOL = 1e-9
MAX_ROUNDS = 4
BN_ROUNDS = 2  # bottleneck-local attempts of a re-solve before the upper component
PS_PER_S = 1e12

# clock[] indices
C_NOW, C_NEXT_ARRIVAL, C_NEXT_EVENT, C_HEAP_SIZE, C_N_DONE, C_N_ACTIVE = 0, 1, 2, 3, 4, 5
C_EVENTS, C_SOLVES, C_SOLVED_FLOWS, C_N_DIRTY, C_RESOLVE_AT, C_LOCAL_SOLVES = 6, 7, 8, 9, 10, 11
C_EXT_AT, C_N_EXT_FLOWS, C_N_EXT_CAPS = 12, 13, 14  # injected arrivals / capacity changes
C_N_GROUPS_DONE, C_STOP_ON_GROUP = 15, 16  # completed flow groups; advance() stops after one
C_BN_TRIES, C_BN_FAILS = 17, 18  # bottleneck-local re-solves tried / not certified
C_BN_OFF = 19  # 1: skip the bottleneck-local attempt (every re-solve covers the upper component)

# advance() return codes
DONE, PAUSED, DEADLOCK = 0, 1, 2


class FlowState(NamedTuple):
    route_ptr: np.ndarray
    route_links: np.ndarray
    entry_flow: np.ndarray
    lf_ptr: np.ndarray
    lf_act: np.ndarray
    entry_slot: np.ndarray
    n_act: np.ndarray
    start_ps: np.ndarray
    size_bytes: np.ndarray
    weight: np.ndarray
    rate_cap_bps: np.ndarray
    order: np.ndarray
    status: np.ndarray
    rate_bps: np.ndarray
    rem_bytes: np.ndarray
    t_upd_ps: np.ndarray
    finish_ps: np.ndarray
    fin_key: np.ndarray
    heap: np.ndarray
    heap_pos: np.ndarray
    done_order: np.ndarray
    in_set: np.ndarray
    set_buf: np.ndarray
    capacity_bps: np.ndarray
    load_bps: np.ndarray
    maxnorm: np.ndarray
    bytes_acc: np.ndarray
    t_link_ps: np.ndarray
    link_local: np.ndarray
    link_mark: np.ndarray
    link_buf: np.ndarray
    resid_bps: np.ndarray
    other_bps: np.ndarray
    other_top: np.ndarray
    prev_load: np.ndarray
    prev_top: np.ndarray
    old_rate: np.ndarray
    in_dirty: np.ndarray
    dirty_buf: np.ndarray
    theta: np.ndarray
    ev_time_ps: np.ndarray
    ev_link: np.ndarray
    ev_capacity_bps: np.ndarray
    trig_kind: np.ndarray
    trig_need: np.ndarray
    trig_ptr: np.ndarray
    trig_targets: np.ndarray
    trig_state: np.ndarray
    flow_trig: np.ndarray
    ready_buf: np.ndarray
    ext_flows: np.ndarray
    ext_links: np.ndarray
    ext_caps: np.ndarray
    flow_group: np.ndarray
    group_left: np.ndarray
    group_done: np.ndarray
    group_time_ps: np.ndarray
    clock: np.ndarray


def new_state(route_ptr, route_links, start_ps, size_bytes, capacity_bps, ev_time_ps, ev_link,
              ev_capacity_bps, weight=None, rate_cap_bps=None, triggers=None,
              flow_group=None, bottleneck_first=True) -> FlowState:
    """Allocate the engine state for validated inputs (see :func:`fabricsim.simulate_flows`).

    ``triggers``: ``(trig_kind, trig_need, trig_ptr, trig_targets, flow_trig int64[F, 2])`` (see
    :mod:`fabricsim.kernels.triggers`); flows started by a trigger have ``start_ps = -1``.
    ``flow_group``: ``int64[F]``, the group of each flow (``0 .. G-1``, -1: none; e.g. the
    collective it belongs to). A group is done when its last flow finishes: ``group_done[:n]``
    (``n = clock[C_N_GROUPS_DONE]``) lists the done groups in completion order and
    ``group_time_ps[g]`` when; with ``clock[C_STOP_ON_GROUP]`` set, :func:`advance` returns after
    the event time at which a group completes (a driver that waits for whole collectives needs no
    call per flow completion). ``bottleneck_first=False`` sets ``clock[C_BN_OFF]`` (see the module
    docstring).
    """
    n_flows = route_ptr.shape[0] - 1
    n_links = capacity_bps.shape[0]
    nnz = route_links.shape[0]
    entry_flow = np.repeat(np.arange(n_flows, dtype=np.int64), np.diff(route_ptr))
    lf_ptr = np.zeros(n_links + 1, np.int64)
    np.cumsum(np.bincount(route_links, minlength=n_links), out=lf_ptr[1:])
    if weight is None:
        weight = np.ones(n_flows)
    if rate_cap_bps is None:
        rate_cap_bps = np.full(n_flows, np.inf)
    timed = np.flatnonzero(start_ps >= 0)
    order = timed[np.argsort(start_ps[timed], kind="stable")].astype(np.int64)
    if triggers is None:
        triggers = no_triggers(n_flows)
    trig_kind, trig_need, trig_ptr, trig_targets, flow_trig = triggers
    if flow_group is None:
        flow_group = np.full(n_flows, -1, np.int64)
    n_groups = int(flow_group.max()) + 1 if n_flows else 0
    group_left = np.bincount(flow_group[flow_group >= 0], minlength=n_groups).astype(np.int64)
    clock = np.zeros(20, np.int64)
    clock[C_RESOLVE_AT] = INF_PS
    clock[C_EXT_AT] = INF_PS
    clock[C_BN_OFF] = not bottleneck_first
    clock[C_NOW] = int(start_ps[timed].min()) if timed.size else 0
    if ev_time_ps.shape[0]:
        clock[C_NOW] = min(clock[C_NOW], int(ev_time_ps[0]))
    return FlowState(
        route_ptr=route_ptr, route_links=route_links, entry_flow=entry_flow, lf_ptr=lf_ptr,
        lf_act=np.empty(nnz, np.int64), entry_slot=np.full(nnz, -1, np.int64),
        n_act=np.zeros(n_links, np.int64), start_ps=start_ps,
        size_bytes=size_bytes, weight=weight, rate_cap_bps=rate_cap_bps, order=order,
        status=np.zeros(n_flows, np.int8), rate_bps=np.zeros(n_flows), rem_bytes=size_bytes.astype(np.float64),
        t_upd_ps=np.zeros(n_flows, np.int64), finish_ps=np.full(n_flows, -1, np.int64),
        fin_key=np.full(n_flows, INF_PS, np.int64), heap=np.empty(n_flows, np.int64),
        heap_pos=np.full(n_flows, -1, np.int64), done_order=np.empty(n_flows, np.int64),
        in_set=np.zeros(n_flows, np.bool_), set_buf=np.empty(n_flows, np.int64),
        capacity_bps=capacity_bps.copy(), load_bps=np.zeros(n_links), maxnorm=np.zeros(n_links),
        bytes_acc=np.zeros(n_links), t_link_ps=np.full(n_links, clock[C_NOW], np.int64),
        link_local=np.full(n_links, -1, np.int64), link_mark=np.zeros(n_links, np.bool_),
        link_buf=np.empty(n_links, np.int64),
        resid_bps=np.zeros(n_links), other_bps=np.zeros(n_links), other_top=np.zeros(n_links),
        prev_load=np.zeros(n_links), prev_top=np.zeros(n_links),
        old_rate=np.zeros(n_flows), in_dirty=np.zeros(n_flows, np.bool_),
        dirty_buf=np.empty(n_flows, np.int64), theta=np.full(1, np.inf),
        ev_time_ps=ev_time_ps, ev_link=ev_link, ev_capacity_bps=ev_capacity_bps,
        trig_kind=trig_kind, trig_need=trig_need, trig_ptr=trig_ptr, trig_targets=trig_targets,
        trig_state=np.zeros((trig_kind.shape[0], 2), np.int64), flow_trig=flow_trig,
        ready_buf=np.empty(n_flows, np.int64), ext_flows=np.empty(n_flows, np.int64),
        ext_links=np.empty(n_links, np.int64), ext_caps=np.empty(n_links),
        flow_group=np.ascontiguousarray(flow_group, dtype=np.int64), group_left=group_left,
        group_done=np.empty(n_groups, np.int64), group_time_ps=np.full(n_groups, -1, np.int64),
        clock=clock,
    )


# ------------------------------------------------------------------------------------------
# Link bookkeeping
# ------------------------------------------------------------------------------------------

@njit(inline="always")
def _settle_link(bytes_acc, load_bps, t_link_ps, l, now):
    """Add the bytes link ``l`` carried since its last settlement at its current load."""
    dt = now - t_link_ps[l]
    if dt > 0:
        bytes_acc[l] += load_bps[l] * dt / (8.0 * PS_PER_S)
        t_link_ps[l] = now


@njit(refcount=False)
def _refresh_links(st, n_links, now):
    """For the links ``link_buf[:n_links]``: clear their mark, settle their carried bytes, and
    recompute their load and largest normalized rate from their active flows."""
    for m in range(n_links):
        l = st.link_buf[m]
        st.link_mark[l] = False
        _settle_link(st.bytes_acc, st.load_bps, st.t_link_ps, l, now)
        load = 0.0
        top = 0.0
        base = st.lf_ptr[l]
        for q in range(base, base + st.n_act[l]):
            f = st.entry_flow[st.lf_act[q]]
            r = st.rate_bps[f]
            load += r
            norm = r / st.weight[f]
            if norm > top:
                top = norm
        st.load_bps[l] = load
        st.maxnorm[l] = top


@njit(refcount=False)
def settle_links(st, now):
    """Settle every link's carried bytes up to ``now`` (for sampling and final totals)."""
    for l in range(st.load_bps.shape[0]):
        _settle_link(st.bytes_acc, st.load_bps, st.t_link_ps, l, now)


@njit(inline="always")
def _certified(st, f):
    """True when flow ``f`` has a bottleneck: its cap, or a saturated link where it is the largest."""
    r = st.rate_bps[f]
    cap = st.rate_cap_bps[f]
    if cap < np.inf and r >= cap * (1.0 - CERT_TOL):
        return True
    norm = r / st.weight[f]
    for p in range(st.route_ptr[f], st.route_ptr[f + 1]):
        l = st.route_links[p]
        if (st.load_bps[l] >= st.capacity_bps[l] * (1.0 - CERT_TOL)
                and norm >= st.maxnorm[l] * (1.0 - CERT_TOL)):
            return True
    return False


# ------------------------------------------------------------------------------------------
# Flow bookkeeping
# ------------------------------------------------------------------------------------------

@njit(inline="always")
def _settle_flow(rem_bytes, rate_bps, t_upd_ps, f, now):
    dt = now - t_upd_ps[f]
    if dt > 0:
        rem_bytes[f] -= rate_bps[f] * dt / (8.0 * PS_PER_S)
        t_upd_ps[f] = now


@njit(inline="always")
def _predict(rem_bytes, rate_bps, f, now):
    """Predicted completion (ps) of an active flow settled at ``now``."""
    rem = rem_bytes[f]
    if rem <= 1e-9:
        return now
    r = rate_bps[f]
    if r <= 0.0:
        return INF_PS
    dt = np.ceil(rem * 8.0 * PS_PER_S / r)
    if dt >= HORIZON_PS - now:
        return INF_PS
    return now + np.int64(dt)


@njit(refcount=False)
def _activate(st, f, now):
    st.status[f] = 1
    st.t_upd_ps[f] = now
    st.rate_bps[f] = 0.0
    for p in range(st.route_ptr[f], st.route_ptr[f + 1]):
        l = st.route_links[p]
        q = st.lf_ptr[l] + st.n_act[l]
        st.lf_act[q] = p
        st.entry_slot[p] = q
        st.n_act[l] += 1
    st.fin_key[f] = _predict(st.rem_bytes, st.rate_bps, f, now)
    st.clock[C_HEAP_SIZE] = heap_push(st.heap, st.heap_pos, st.clock[C_HEAP_SIZE], st.fin_key, f)
    st.clock[C_N_ACTIVE] += 1


@njit(refcount=False)
def _deactivate(st, f):
    """Remove a finished flow from its links' active lists (swap with the last active entry)."""
    for p in range(st.route_ptr[f], st.route_ptr[f + 1]):
        l = st.route_links[p]
        last = st.lf_ptr[l] + st.n_act[l] - 1
        q = st.entry_slot[p]
        moved = st.lf_act[last]
        st.lf_act[q] = moved
        st.entry_slot[moved] = q
        st.entry_slot[p] = -1
        st.n_act[l] -= 1
    st.rate_bps[f] = 0.0
    st.clock[C_N_ACTIVE] -= 1


@njit(inline="always")
def _push_unique(flag, buf, i, n):
    """Append ``i`` to ``buf[:n]`` unless ``flag[i]`` is already set; returns the new count."""
    if not flag[i]:
        flag[i] = True
        buf[n] = i
        n += 1
    return n


# ------------------------------------------------------------------------------------------
# Re-balance
# ------------------------------------------------------------------------------------------

@njit(refcount=False)
def _grow_set(st, n_set, theta, by_level):
    """Breadth-first from the flows already in the set, through links (each link scanned once,
    ``link_mark``; every link of the set ends up marked in ``link_buf[:n_links]``) and through
    the flows each link passes on: with ``by_level``, those at or above the level ``theta``
    (:func:`_upper_component`); otherwise, on a saturated link only, those at its top normalized
    rate (:func:`_bottleneck_component`). Returns ``(n_set, n_links)``."""
    head = 0
    n_seen = 0
    while head < n_set:
        f = st.set_buf[head]
        head += 1
        for p in range(st.route_ptr[f], st.route_ptr[f + 1]):
            l = st.route_links[p]
            if st.link_mark[l]:
                continue
            n_seen = _push_unique(st.link_mark, st.link_buf, l, n_seen)
            if by_level:
                n_set = _pass_on_by_level(st, l, theta * (1.0 - CERT_TOL), n_set)
            elif st.load_bps[l] >= st.capacity_bps[l] * (1.0 - CERT_TOL):
                n_set = _pass_on_top(st, l, n_set)
    return n_set, n_seen


@njit(inline="always")
def _pass_on_by_level(st, l, cut, n_set):
    """Add link ``l``'s flows at normalized rate >= ``cut`` to the set; record what the others
    keep on it (``other_bps``, ``other_top``)."""
    other = 0.0
    top = 0.0
    base = st.lf_ptr[l]
    for q in range(base, base + st.n_act[l]):
        g = st.entry_flow[st.lf_act[q]]
        norm = st.rate_bps[g] / st.weight[g]
        if st.in_set[g] or norm >= cut:
            n_set = _push_unique(st.in_set, st.set_buf, g, n_set)
        else:
            other += st.rate_bps[g]
            if norm > top:
                top = norm
    st.other_bps[l] = other
    st.other_top[l] = top
    return n_set


@njit(inline="always")
def _pass_on_top(st, l, n_set):
    """Add link ``l``'s flows at its top normalized rate to the set."""
    cut = st.maxnorm[l] * (1.0 - CERT_TOL)
    base = st.lf_ptr[l]
    for q in range(base, base + st.n_act[l]):
        g = st.entry_flow[st.lf_act[q]]
        if st.rate_bps[g] / st.weight[g] >= cut:
            n_set = _push_unique(st.in_set, st.set_buf, g, n_set)
    return n_set


@njit(inline="always")
def _upper_component(st, n_set, theta):
    """Extend the set with every active flow of normalized rate >= ``theta`` connected to it.

    Breadth-first from the flows already in the set, through links (each link's active list is
    scanned once, ``link_mark``) and through flows at or above the level ``theta`` only: flows
    below it keep their rates (see the module docstring). A flow on a scanned link is in the final
    set iff it is already flagged or at the level, so the same scan records, per link, what the
    flows left out keep: their total rate ``other_bps`` and top normalized rate ``other_top``.
    The scanned links (every link of the set) stay marked in ``link_buf[:n_links]``.
    Returns ``(n_set, n_links)``.
    """
    return _grow_set(st, n_set, theta, True)


@njit(refcount=False)
def _settle_and_mark(st, n_set, now):
    """Settle the flows ``set_buf[:n_set]`` at ``now`` and mark (``link_buf``) the links they
    cross; returns the number of marked links."""
    n_marked = 0
    for a in range(n_set):
        f = st.set_buf[a]
        _settle_flow(st.rem_bytes, st.rate_bps, st.t_upd_ps, f, now)
        for p in range(st.route_ptr[f], st.route_ptr[f + 1]):
            n_marked = _push_unique(st.link_mark, st.link_buf, st.route_links[p], n_marked)
    return n_marked


@njit(inline="always")
def _fill_set(st, flows, n_links, now):
    """Max-min rates for ``flows`` on the capacity the other flows leave (``other_bps`` of the
    links ``link_buf[:n_links]``, every link of the set), then each of those links unmarked, its
    carried bytes settled and its load and top normalized rate set to the others' (``other_bps``,
    ``other_top``) plus the set's."""
    for m in range(n_links):
        l = st.link_buf[m]
        st.resid_bps[l] = st.capacity_bps[l] - st.other_bps[l]
    fill_subset(flows, st.route_ptr, st.route_links, st.resid_bps, st.weight, st.rate_cap_bps,
                st.link_local, st.rate_bps)
    for m in range(n_links):
        l = st.link_buf[m]
        st.link_mark[l] = False
        _settle_link(st.bytes_acc, st.load_bps, st.t_link_ps, l, now)
        st.load_bps[l] = st.other_bps[l]
        st.maxnorm[l] = st.other_top[l]
    for a in range(flows.shape[0]):
        f = flows[a]
        r = st.rate_bps[f]
        norm = r / st.weight[f]
        for p in range(st.route_ptr[f], st.route_ptr[f + 1]):
            l = st.route_links[p]
            st.load_bps[l] += r
            if norm > st.maxnorm[l]:
                st.maxnorm[l] = norm


@njit(inline="always")
def _keep_rates(st, flows, now):
    """Finish a kept re-solve of ``flows``: clear their set flags and predict the finish of each
    whose rate changed (``old_rate[a]``: the rate of ``flows[a]`` before; an unchanged rate keeps
    its predicted finish and heap place)."""
    for a in range(flows.shape[0]):
        f = flows[a]
        st.in_set[f] = False
        if st.rate_bps[f] != st.old_rate[a]:
            st.fin_key[f] = _predict(st.rem_bytes, st.rate_bps, f, now)
            heap_update(st.heap, st.heap_pos, st.clock[C_HEAP_SIZE], st.fin_key, f)
    st.clock[C_SOLVES] += 1
    st.clock[C_SOLVED_FLOWS] += flows.shape[0]


@njit(refcount=False)
def _solve_set(st, n_set, n_links, now):
    """Re-solve the flows in ``set_buf[:n_set]`` on the capacity the other active flows leave
    (``other_bps`` of the links ``link_buf[:n_links]``, from :func:`_upper_component`), refresh
    those links (carried bytes, load, top rate) and the flows' predicted finishes, and empty the
    set."""
    flows = st.set_buf[:n_set]
    for a in range(n_set):
        f = flows[a]
        _settle_flow(st.rem_bytes, st.rate_bps, st.t_upd_ps, f, now)
        st.old_rate[a] = st.rate_bps[f]
    _fill_set(st, flows, n_links, now)
    _keep_rates(st, flows, now)


@njit(inline="always")
def _bottleneck_component(st, n_set):
    """Extend the set along the bottleneck structure: from each flow in it, through each of its
    saturated links, to the flows at that link's top normalized rate (the flows bottlenecked there,
    which give or take whatever the set's flows take or give on that link). Links that are not
    saturated are crossed by no flow's bottleneck and stop the search. Every link of the set ends
    up marked in ``link_buf[:n_links]``. Returns ``(n_set, n_links)``. Usually far smaller than
    :func:`_upper_component`'s set; :func:`_solve_certified` checks that it sufficed.
    """
    return _grow_set(st, n_set, 0.0, False)


@njit(refcount=False)
def _solve_certified(st, n_set, n_links, now):
    """Re-solve ``set_buf[:n_set]`` with every other flow fixed and keep the result only if it
    is max-min fair for the whole fabric, i.e. every flow whose certificate could have changed
    still has a bottleneck (Bertsekas & Gallager): the set's flows, and the other flows at the old
    top of each link of the set that lost its saturation or whose top normalized rate rose (the
    flows that link certified). Flows of no link of the set kept their rates and their links'
    state, hence their certificates. What the others leave on a link is its load less the set's
    rates (no scan of its flows); the top normalized rate outside the set is the link's old top
    when the set's flows were all below it, else found by a scan of the link's flows.

    Kept: the set is emptied, the links refreshed, changed finishes predicted; returns 0.
    Not kept: rates and link state are restored exactly as on entry and the links unmarked; the
    flows found without a bottleneck outside the set, and those above a set flow left without
    one on its saturated links, are appended to the set (flagged): returns the new set size
    ``n > n_set`` to try again with, or ``-n_set`` when nothing was found to add.
    """
    flows = st.set_buf[:n_set]
    for m in range(n_links):
        l = st.link_buf[m]
        st.prev_load[l] = st.load_bps[l]
        st.prev_top[l] = st.maxnorm[l]
        st.other_bps[l] = st.load_bps[l]
        st.resid_bps[l] = 0.0  # here: the set's top normalized rate on the link
    for a in range(n_set):  # what the others leave: each link's load less the set's rates
        f = flows[a]
        _settle_flow(st.rem_bytes, st.rate_bps, st.t_upd_ps, f, now)
        st.old_rate[a] = st.rate_bps[f]
        norm = st.rate_bps[f] / st.weight[f]
        for p in range(st.route_ptr[f], st.route_ptr[f + 1]):
            l = st.route_links[p]
            st.other_bps[l] -= st.rate_bps[f]
            if norm > st.resid_bps[l]:
                st.resid_bps[l] = norm
    for m in range(n_links):  # the others' top: the old one, unless the set may have held it
        l = st.link_buf[m]    # (then scan for it)
        if st.other_bps[l] < 0.0:  # rounding when the set holds all of it: exactly nothing left
            st.other_bps[l] = 0.0
        if st.resid_bps[l] < st.maxnorm[l] * (1.0 - CERT_TOL):
            st.other_top[l] = st.maxnorm[l]
            continue
        top = 0.0
        base = st.lf_ptr[l]
        for q in range(base, base + st.n_act[l]):
            g = st.entry_flow[st.lf_act[q]]
            if not st.in_set[g] and st.rate_bps[g] / st.weight[g] > top:
                top = st.rate_bps[g] / st.weight[g]
        st.other_top[l] = top
    _fill_set(st, flows, n_links, now)
    st.clock[C_BN_TRIES] += 1
    n_more = n_set  # flows found to need a re-solve too are appended to the set
    ok = True
    for a in range(n_set):
        f = st.set_buf[a]
        if _certified(st, f):
            continue
        ok = False
        # f has no bottleneck: the flows above it on its saturated links must make room
        cut = st.rate_bps[f] / st.weight[f] * (1.0 + CERT_TOL)
        for p in range(st.route_ptr[f], st.route_ptr[f + 1]):
            l = st.route_links[p]
            if st.load_bps[l] < st.capacity_bps[l] * (1.0 - CERT_TOL):
                continue
            base = st.lf_ptr[l]
            for q in range(base, base + st.n_act[l]):
                g = st.entry_flow[st.lf_act[q]]
                if st.rate_bps[g] / st.weight[g] > cut:
                    n_more = _push_unique(st.in_set, st.set_buf, g, n_more)
    for m in range(n_links):
        l = st.link_buf[m]
        floor = st.capacity_bps[l] * (1.0 - CERT_TOL)
        if st.maxnorm[l] <= st.prev_top[l] and (st.load_bps[l] >= floor or st.prev_load[l] < floor):
            continue
        # only the flows this link certified (at its old top) can have lost their bottleneck here
        cut = st.prev_top[l] * (1.0 - CERT_TOL)
        base = st.lf_ptr[l]
        for q in range(base, base + st.n_act[l]):
            g = st.entry_flow[st.lf_act[q]]
            if (not st.in_set[g] and st.rate_bps[g] / st.weight[g] >= cut
                    and not _certified(st, g)):
                n_more = _push_unique(st.in_set, st.set_buf, g, n_more)
    if not ok or n_more > n_set:
        st.clock[C_BN_FAILS] += 1
        for a in range(n_set):
            st.rate_bps[st.set_buf[a]] = st.old_rate[a]
        for m in range(n_links):
            l = st.link_buf[m]
            st.load_bps[l] = st.prev_load[l]
            st.maxnorm[l] = st.prev_top[l]
        return n_more if n_more > n_set else -n_set
    _keep_rates(st, flows, now)
    return 0


@njit(refcount=False)
def _check_departure(st, n_marked, level, now, tolerance, age_ps):
    """After departures: find the flows on the refreshed links that lost their certificate.

    Nothing happens when every neighbour keeps a bottleneck (the allocation is still exactly
    max-min). Otherwise the uncertified flows join the pending exact re-solve, which gets level
    ``min(theta, level)`` (``level``: the departed flows' smallest normalized rate) and is due
    ``tolerance * age_ps`` from now; until then they share the freed capacity among themselves
    (:func:`_local_solve`): those with slack on every link are put in ``set_buf`` and their number
    is returned.
    """
    n_set = 0
    queued = False
    for m in range(n_marked):
        l = st.link_buf[m]
        base = st.lf_ptr[l]
        for q in range(base, base + st.n_act[l]):
            f = st.entry_flow[st.lf_act[q]]
            if st.in_set[f] or _certified(st, f):
                continue
            st.clock[C_N_DIRTY] = _push_unique(st.in_dirty, st.dirty_buf, f, st.clock[C_N_DIRTY])
            queued = True
            # Only a flow with slack on every link can take more while the others stay fixed.
            can_grow = True
            for p in range(st.route_ptr[f], st.route_ptr[f + 1]):
                k = st.route_links[p]
                if st.load_bps[k] >= st.capacity_bps[k] * (1.0 - CERT_TOL):
                    can_grow = False
                    break
            if can_grow:
                n_set = _push_unique(st.in_set, st.set_buf, f, n_set)
    if queued:
        if level < st.theta[0]:
            st.theta[0] = level
        due = now + np.int64(tolerance * age_ps)
        if due < st.clock[C_RESOLVE_AT]:
            st.clock[C_RESOLVE_AT] = due
    return n_set


@njit(refcount=False)
def _local_solve(st, n_set, now):
    """Share the capacity that the other flows leave among ``set_buf[:n_set]`` (max-min among
    them, the others fixed), with link loads updated incrementally; empties the set.

    Feasible and cheap (O(routes of the set)) but not exactly max-min for the whole fabric: the
    flows stay queued for the exact re-solve. ``maxnorm`` only grows here, so it may overstate a
    link's top rate until that re-solve; that only makes certificates stricter.
    """
    flows = st.set_buf[:n_set]
    n_marked = _settle_and_mark(st, n_set, now)
    for m in range(n_marked):
        l = st.link_buf[m]
        st.link_mark[l] = False
        _settle_link(st.bytes_acc, st.load_bps, st.t_link_ps, l, now)
        st.resid_bps[l] = st.capacity_bps[l] - st.load_bps[l]
    for a in range(n_set):
        f = flows[a]
        st.old_rate[a] = st.rate_bps[f]
        for p in range(st.route_ptr[f], st.route_ptr[f + 1]):
            st.resid_bps[st.route_links[p]] += st.rate_bps[f]
    fill_subset(flows, st.route_ptr, st.route_links, st.resid_bps, st.weight, st.rate_cap_bps,
                st.link_local, st.rate_bps)
    for a in range(n_set):
        f = flows[a]
        st.in_set[f] = False
        r = st.rate_bps[f]
        norm = r / st.weight[f]
        for p in range(st.route_ptr[f], st.route_ptr[f + 1]):
            l = st.route_links[p]
            st.load_bps[l] += r - st.old_rate[a]
            if norm > st.maxnorm[l]:
                st.maxnorm[l] = norm
        st.fin_key[f] = _predict(st.rem_bytes, st.rate_bps, f, now)
        heap_update(st.heap, st.heap_pos, st.clock[C_HEAP_SIZE], st.fin_key, f)
    st.clock[C_LOCAL_SOLVES] += 1


@njit(inline="always")
def _arrive(st, f, now, n_set, n_marked):
    """Activate flow ``f``, put it in the re-solve set and mark its links."""
    _activate(st, f, now)
    n_set = _push_unique(st.in_set, st.set_buf, f, n_set)
    for p in range(st.route_ptr[f], st.route_ptr[f + 1]):
        n_marked = _push_unique(st.link_mark, st.link_buf, st.route_links[p], n_marked)
    return n_set, n_marked


@njit(refcount=False)
def next_event_time(st):
    """Time (ps) of the next arrival, completion, capacity change or due re-solve; INF_PS if none."""
    clock = st.clock
    t = clock[C_RESOLVE_AT]
    if clock[C_NEXT_ARRIVAL] < st.order.shape[0]:
        t = min(t, st.start_ps[st.order[clock[C_NEXT_ARRIVAL]]])
    if clock[C_NEXT_EVENT] < st.ev_time_ps.shape[0]:
        t = min(t, st.ev_time_ps[clock[C_NEXT_EVENT]])
    if clock[C_HEAP_SIZE] > 0:
        t = min(t, st.fin_key[st.heap[0]])
    if clock[C_N_EXT_FLOWS] + clock[C_N_EXT_CAPS] > 0:
        t = min(t, clock[C_EXT_AT])
    return t


@njit(refcount=False)
def inject(st, flows, links, capacity_bps, at_ps):
    """Schedule, from outside, the arrival of pending ``flows`` (int64[n]; flows created with
    ``start_ps = -1``) and capacity changes ``links``/``capacity_bps`` (int64[m], float64[m]) at
    ``at_ps``, no earlier than the engine's current time. Everything injected before the next
    :func:`advance` shares one time. Returns 0, or -1 if ``at_ps`` is in the past, -2 if it differs
    from an injection still pending, -3 if the buffers are full."""
    clock = st.clock
    if at_ps < clock[C_NOW]:
        return -1
    if clock[C_N_EXT_FLOWS] + clock[C_N_EXT_CAPS] > 0 and clock[C_EXT_AT] != at_ps:
        return -2
    if (clock[C_N_EXT_FLOWS] + flows.shape[0] > st.ext_flows.shape[0]
            or clock[C_N_EXT_CAPS] + links.shape[0] > st.ext_links.shape[0]):
        return -3
    clock[C_EXT_AT] = at_ps
    for i in range(flows.shape[0]):
        st.ext_flows[clock[C_N_EXT_FLOWS]] = flows[i]
        clock[C_N_EXT_FLOWS] += 1
    for i in range(links.shape[0]):
        st.ext_links[clock[C_N_EXT_CAPS]] = links[i]
        st.ext_caps[clock[C_N_EXT_CAPS]] = capacity_bps[i]
        clock[C_N_EXT_CAPS] += 1
    return 0


@njit(inline="always")
def _change_capacity(st, l, capacity, t, n_set, theta):
    """Set link ``l`` to ``capacity``; its flows join the re-solve set. Returns (n_set, theta)."""
    _settle_link(st.bytes_acc, st.load_bps, st.t_link_ps, l, t)
    st.capacity_bps[l] = capacity
    base = st.lf_ptr[l]
    wsum = 0.0
    for q in range(base, base + st.n_act[l]):
        g = st.entry_flow[st.lf_act[q]]
        wsum += st.weight[g]
        n_set = _push_unique(st.in_set, st.set_buf, g, n_set)
    if wsum > 0.0:
        theta = min(theta, st.maxnorm[l], st.capacity_bps[l] / wsum)
    return n_set, theta


@njit(refcount=False)
def advance(st, until_ps, max_events, tolerance):
    """Run events with time <= ``until_ps``, at most ``max_events`` event times.

    ``tolerance`` (>= 0): a departure that leaves neighbours without a bottleneck triggers their
    re-solve at once when 0 (exact), or up to ``tolerance`` times the departed flow's age later,
    batching departures (rates stay feasible meanwhile; freed capacity idles until then).
    Arrivals and capacity changes always re-solve at once.

    Flows started by a trigger (:mod:`fabricsim.kernels.triggers`) arrive at the instant the
    completion that fires it happens (the send and receive sides of a flow finish together in
    the fluid model).

    Returns DONE (every flow finished and no capacity event left), PAUSED (stopped by
    ``until_ps``, ``max_events`` or, with ``clock[C_STOP_ON_GROUP]``, after the event time at
    which a flow group completed; call again to continue) or DEADLOCK (nothing left to happen
    but flows unfinished: held at rate 0 by a link that never comes back, or never triggered).
    """
    clock = st.clock
    n_timed = st.order.shape[0]
    n_events = st.ev_time_ps.shape[0]
    handled = 0
    groups_at_entry = clock[C_N_GROUPS_DONE]
    while True:
        if clock[C_STOP_ON_GROUP] and clock[C_N_GROUPS_DONE] > groups_at_entry:
            return PAUSED
        t = next_event_time(st)
        if t == INF_PS:
            if clock[C_N_DONE] < st.start_ps.shape[0]:
                return DEADLOCK
            return DONE
        if t > until_ps or handled >= max_events:
            return PAUSED
        handled += 1
        clock[C_NOW] = t
        clock[C_EVENTS] += 1
        n_set = 0
        n_marked = 0
        theta = np.inf
        level = np.inf
        oldest = 0
        n_ready = 0
        # 1. completions: remember the departed flows' smallest level and largest age
        while clock[C_HEAP_SIZE] > 0 and st.fin_key[st.heap[0]] == t:
            f, clock[C_HEAP_SIZE] = heap_pop(st.heap, st.heap_pos, clock[C_HEAP_SIZE], st.fin_key)
            _settle_flow(st.rem_bytes, st.rate_bps, st.t_upd_ps, f, t)
            norm = st.rate_bps[f] / st.weight[f]
            if norm < level:
                level = norm
            if t - st.start_ps[f] > oldest:
                oldest = t - st.start_ps[f]
            st.rem_bytes[f] = 0.0
            st.status[f] = 2
            st.finish_ps[f] = t
            st.done_order[clock[C_N_DONE]] = f
            clock[C_N_DONE] += 1
            g = st.flow_group[f]
            if g >= 0:
                st.group_left[g] -= 1
                if st.group_left[g] == 0:
                    st.group_done[clock[C_N_GROUPS_DONE]] = g
                    st.group_time_ps[g] = t
                    clock[C_N_GROUPS_DONE] += 1
            for side in range(2):  # send-done, then receive-done trigger
                k = st.flow_trig[f, side]
                if k >= 0:
                    n_ready = fire(k, st.trig_kind, st.trig_need, st.trig_ptr, st.trig_targets,
                                   st.trig_state, st.ready_buf, n_ready)
            _deactivate(st, f)
            for p in range(st.route_ptr[f], st.route_ptr[f + 1]):
                n_marked = _push_unique(st.link_mark, st.link_buf, st.route_links[p], n_marked)
        _refresh_links(st, n_marked, t)
        if n_marked:
            n_local = _check_departure(st, n_marked, level, t, tolerance, oldest)
            if n_local and tolerance > 0.0:
                _local_solve(st, n_local, t)
            else:
                for a in range(n_local):
                    st.in_set[st.set_buf[a]] = False
        # 2. capacity changes: flows on a changed link may move from its old top level or from
        #    its new fair share, whichever is lower
        while clock[C_NEXT_EVENT] < n_events and st.ev_time_ps[clock[C_NEXT_EVENT]] == t:
            e = clock[C_NEXT_EVENT]
            clock[C_NEXT_EVENT] += 1
            n_set, theta = _change_capacity(st, st.ev_link[e], st.ev_capacity_bps[e], t, n_set, theta)
        injected = clock[C_EXT_AT] == t
        if injected:
            for i in range(clock[C_N_EXT_CAPS]):
                n_set, theta = _change_capacity(st, st.ext_links[i], st.ext_caps[i], t, n_set, theta)
            clock[C_N_EXT_CAPS] = 0
        # 3. arrivals: a new flow can only disturb levels above its links' equal shares
        n_new = 0
        n_marked = 0
        while clock[C_NEXT_ARRIVAL] < n_timed and st.start_ps[st.order[clock[C_NEXT_ARRIVAL]]] == t:
            f = st.order[clock[C_NEXT_ARRIVAL]]
            clock[C_NEXT_ARRIVAL] += 1
            n_set, n_marked = _arrive(st, f, t, n_set, n_marked)
            n_new += 1
        for i in range(n_ready):  # flows triggered by this instant's completions
            f = st.ready_buf[i]
            st.start_ps[f] = t
            n_set, n_marked = _arrive(st, f, t, n_set, n_marked)
            n_new += 1
        if injected:  # flows started from outside (inject)
            for i in range(clock[C_N_EXT_FLOWS]):
                f = st.ext_flows[i]
                st.start_ps[f] = t
                n_set, n_marked = _arrive(st, f, t, n_set, n_marked)
                n_new += 1
            clock[C_N_EXT_FLOWS] = 0
            clock[C_EXT_AT] = INF_PS
        if n_new:
            for m in range(n_marked):
                l = st.link_buf[m]
                st.link_mark[l] = False
                base = st.lf_ptr[l]
                wsum = 0.0
                for q in range(base, base + st.n_act[l]):
                    wsum += st.weight[st.entry_flow[st.lf_act[q]]]
                theta = min(theta, st.capacity_bps[l] / wsum)
            for a in range(n_set - n_new, n_set):
                f = st.set_buf[a]
                if st.rate_cap_bps[f] < np.inf:
                    theta = min(theta, st.rate_cap_bps[f] / st.weight[f])
        # 4. the pending departures' re-solve joins when due or when anything else re-solves
        if clock[C_N_DIRTY] and (n_set or t >= clock[C_RESOLVE_AT]):
            theta = min(theta, st.theta[0])
            for a in range(clock[C_N_DIRTY]):
                f = st.dirty_buf[a]
                st.in_dirty[f] = False
                if st.status[f] == 1:
                    n_set = _push_unique(st.in_set, st.set_buf, f, n_set)
            clock[C_N_DIRTY] = 0
            clock[C_RESOLVE_AT] = INF_PS
            st.theta[0] = np.inf
        if n_set:
            n_first = n_set
            kept = False
            n_try = n_set
            for _ in range(BN_ROUNDS * (1 - clock[C_BN_OFF])):
                n_set, n_links = _bottleneck_component(st, n_try)
                n_try = _solve_certified(st, n_set, n_links, t)
                kept = n_try == 0
                if n_try <= 0:
                    break
            if not kept:
                for a in range(n_first, abs(n_try)):
                    st.in_set[st.set_buf[a]] = False
                n_set, n_links = _upper_component(st, n_first, theta)
                _solve_set(st, n_set, n_links, t)
