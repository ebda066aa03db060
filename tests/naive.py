"""Plain-Python reference implementations of the Numba kernels, for the tests.

Written for readability, not speed, and independently of the kernels: they share no code with
``fabricsim.kernels`` and follow the textbook definitions.

- :class:`RefHeap`          a priority set keyed by ``(key, id)`` (reference for ``kernels.heaps``)
- :func:`max_min_naive`     progressive filling, O(L * F) per step (reference for ``kernels.maxmin``)
- :func:`fluid_sim`         event-driven fluid simulator that re-solves max-min from scratch at every
                            event (reference for ``kernels.flowsim``)

Units follow the project: time in picoseconds, sizes in bytes, rates in bits per second.
"""

from __future__ import annotations

import math

import numpy as np

PS_PER_S = 1e12
BITS_PER_BYTE = 8.0

# Two levels closer than this (relatively) are treated as the same level when freezing flows.
_LEVEL_RTOL = 1e-12


# ------------------------------------------------------------------------------------------------
# Routes
# ------------------------------------------------------------------------------------------------

def routes_to_csr(routes):
    """List of link-id lists -> (route_ptr int64[F+1], route_links int64[nnz])."""
    ptr = np.zeros(len(routes) + 1, np.int64)
    ptr[1:] = np.cumsum([len(r) for r in routes]) if routes else []
    links = np.array([l for r in routes for l in r], dtype=np.int64)
    return ptr, links


def csr_to_routes(route_ptr, route_links):
    """(route_ptr, route_links) -> list of link-id lists."""
    return [list(map(int, route_links[route_ptr[f]:route_ptr[f + 1]]))
            for f in range(len(route_ptr) - 1)]


# ------------------------------------------------------------------------------------------------
# Heap
# ------------------------------------------------------------------------------------------------

class RefHeap:
    """A set of ids with keys; ``pop`` returns the id with the smallest ``(key, id)``."""

    def __init__(self):
        self.keys = {}

    def __len__(self):
        return len(self.keys)

    def __contains__(self, item):
        return item in self.keys

    def push(self, item, key):
        assert item not in self.keys
        self.keys[item] = key

    def update(self, item, key):
        assert item in self.keys
        self.keys[item] = key

    def remove(self, item):
        del self.keys[item]

    def pop(self):
        item = min(self.keys, key=lambda i: (self.keys[i], i))
        del self.keys[item]
        return item

    def sorted_ids(self):
        return sorted(self.keys, key=lambda i: (self.keys[i], i))


# ------------------------------------------------------------------------------------------------
# Max-min fairness
# ------------------------------------------------------------------------------------------------

def max_min_naive(routes, capacity_bps, rate_cap_bps=None, weight=None):
    """Weighted max-min fair rates by textbook progressive filling.

    ``routes``: list of link-id lists (one per flow). All unfrozen flows grow together, flow ``f``
    at ``weight[f]`` times a common level; the level stops at the first constraint that binds: a
    link whose residual capacity (capacity minus the rates of its frozen flows) is used up by its
    unfrozen flows, or a flow's own cap. The flows of that constraint freeze; repeat until all are
    frozen. Every step scans all links and flows: O(L * F) per step, at most F steps.
    """
    n_flows = len(routes)
    capacity = [float(c) for c in capacity_bps]
    caps = [math.inf] * n_flows if rate_cap_bps is None else [float(c) for c in rate_cap_bps]
    w = [1.0] * n_flows if weight is None else [float(x) for x in weight]
    users = [[] for _ in capacity]
    for f, route in enumerate(routes):
        for l in route:
            users[l].append(f)

    rate = [0.0] * n_flows
    frozen = [False] * n_flows
    while not all(frozen):
        # The level at which each constraint would bind.
        link_level = {}
        for l, flows in enumerate(users):
            free = [f for f in flows if not frozen[f]]
            if not free:
                continue
            used = sum(rate[f] for f in flows if frozen[f])
            link_level[l] = max(capacity[l] - used, 0.0) / sum(w[f] for f in free)
        cap_level = {f: caps[f] / w[f] for f in range(n_flows) if not frozen[f] and caps[f] < math.inf}
        level = min(list(link_level.values()) + list(cap_level.values()), default=math.inf)
        if level == math.inf:
            f = frozen.index(False)
            raise ValueError(f"flow {f} crosses no link and has no cap: its rate is unbounded")
        limit = level * (1.0 + _LEVEL_RTOL)
        for l, lv in link_level.items():
            if lv <= limit:
                for f in users[l]:
                    if not frozen[f]:
                        frozen[f] = True
                        rate[f] = w[f] * level
        for f, lv in cap_level.items():
            if not frozen[f] and lv <= limit:
                frozen[f] = True
                rate[f] = caps[f]
    return np.array(rate, dtype=np.float64)


def link_loads(routes, rates, n_links):
    """Sum of the rates crossing each link."""
    load = np.zeros(n_links)
    for f, route in enumerate(routes):
        for l in route:
            load[l] += rates[f]
    return load


# ------------------------------------------------------------------------------------------------
# Fluid simulator
# ------------------------------------------------------------------------------------------------

def fluid_sim(routes, capacity_bps, size_bytes, start_ps, events=(), weight=None, rate_cap_bps=None,
              until_ps=None):
    """Event-driven fluid simulation with exact max-min rates between events.

    ``events``: rows ``(time_ps, link, capacity_bps)``; events at one time apply in the given order.
    At every event time: apply capacity changes, admit arrivals, re-solve max-min from scratch
    (:func:`max_min_naive`) over the active flows, then jump to the next arrival, capacity change or
    completion. Completion times are exact floats (no rounding to picoseconds).

    Returns ``(finish_ps float64[F], link_bytes float64[L], status)``; ``finish_ps`` is NaN for a
    flow that did not finish; ``status`` is ``done``, ``deadlock`` (flows left that nothing will
    ever move) or ``horizon`` (stopped at ``until_ps``).
    """
    n_flows = len(routes)
    n_links = len(capacity_bps)
    capacity = [float(c) for c in capacity_bps]
    size = [float(s) for s in size_bytes]
    start = [float(s) for s in start_ps]
    w = [1.0] * n_flows if weight is None else list(weight)
    caps = [math.inf] * n_flows if rate_cap_bps is None else list(rate_cap_bps)
    events = sorted([(float(t), int(l), float(c)) for t, l, c in events], key=lambda e: e[0])
    horizon = math.inf if until_ps is None else float(until_ps)

    remaining = list(size)
    finish = [math.nan] * n_flows
    state = ["pending"] * n_flows  # pending -> active -> done
    link_bytes = [0.0] * n_links
    times = start + [e[0] for e in events]
    if not times:
        return np.array(finish), np.array(link_bytes), "done"
    now = min(times)
    ev = 0

    while True:
        status = None
        if now > horizon:  # the first event is already past the horizon
            status = "horizon"
            break
        while ev < len(events) and events[ev][0] <= now:
            capacity[events[ev][1]] = events[ev][2]
            ev += 1
        for f in range(n_flows):
            if state[f] == "pending" and start[f] <= now:
                state[f] = "active"
            if state[f] == "active" and remaining[f] <= 0.0:
                state[f] = "done"
                finish[f] = now
        active = [f for f in range(n_flows) if state[f] == "active"]
        rates = {}
        if active:
            r = max_min_naive([routes[f] for f in active], capacity,
                              [caps[f] for f in active], [w[f] for f in active])
            rates = dict(zip(active, r))

        # Next event: arrival, capacity change or completion.
        completion = {f: now + remaining[f] * BITS_PER_BYTE * PS_PER_S / rates[f]
                      for f in active if rates[f] > 0.0}
        candidates = [start[f] for f in range(n_flows) if state[f] == "pending"]
        if ev < len(events):
            candidates.append(events[ev][0])
        candidates.extend(completion.values())
        nxt = min(candidates, default=math.inf)
        if nxt == math.inf:
            status = "deadlock" if active else "done"
            break
        if nxt > horizon:
            nxt, status = horizon, "horizon"

        dt = nxt - now
        for f in active:
            moved = min(rates[f] * dt / (BITS_PER_BYTE * PS_PER_S), remaining[f])
            if f in completion and completion[f] <= nxt * (1.0 + _LEVEL_RTOL):
                moved = remaining[f]  # finishes in this step (absorbs float dust)
                finish[f] = completion[f]
                state[f] = "done"
            remaining[f] -= moved
            for l in routes[f]:
                link_bytes[l] += moved
        now = nxt
        if status == "horizon":
            break
    return np.array(finish), np.array(link_bytes), status


# ------------------------------------------------------------------------------------------------
# Task DAGs (fabricsim.kernels.dag)
# ------------------------------------------------------------------------------------------------

def dag_earliest_finish_naive(preds, duration):
    """Finish time of each task (start = latest predecessor finish), by memoized recursion.

    ``preds``: list of predecessor lists. Returns None if the graph has a cycle.
    """
    finish = {}
    visiting = set()

    def visit(t):
        if t in finish:
            return finish[t]
        if t in visiting:
            raise RecursionError("cycle")
        visiting.add(t)
        start = max((visit(p) for p in preds[t]), default=0)
        visiting.discard(t)
        finish[t] = start + duration[t]
        return finish[t]

    try:
        return [visit(t) for t in range(len(preds))]
    except RecursionError:
        return None
