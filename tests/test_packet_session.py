"""PacketSession: the packet engine driven from outside gives what a batch run gives."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabricsim import fat_tree, simulate_flows
from fabricsim.engine import PacketSession
from fabricsim.kernels import packetsim

FAB = fat_tree(16, 100, gpus_per_server=4)
INF = packetsim.INF_PS
US = 1_000_000  # ps
# a first timeout after 1 ms rather than 1 s (the timer is first set at send + init_rto and only
# re-armed later, so with the default a flow held by a link at 0 waits 1 s before retrying)
PARAMS = packetsim.PacketParams(init_rto_ps=1000 * US)


def _scenario(seed, n=None):
    """Flows with a few distinct start times; a link of a flow in flight goes to 0 (timeouts fire
    while it is down: min RTO 1 ms) and comes back, and another link changes capacity at a start
    time. Returns (src, dst, size, start, routes, events)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 41)) if n is None else n
    src = rng.integers(0, 16, n)
    dst = (src + rng.integers(1, 16, n)) % 16
    size = rng.integers(0, 4_000_000, n)
    size[rng.random(n) < 0.1] = 0
    start = rng.choice(np.array([0, 200, 200, 1500, 6000]) * US, n)
    start[0] = 0
    routes = FAB.route(src, dst, seed=seed)
    early = np.flatnonzero(start == 0)
    f = int(early[rng.integers(0, early.size)])
    path = routes.route_links[routes.route_ptr[f]:routes.route_ptr[f + 1]]
    down = int(rng.choice([100, 200, 300])) * US
    up = down + int(rng.choice([1500, 3000, 5000])) * US
    link = int(path[rng.integers(0, path.size)])
    other = int(rng.integers(0, FAB.n_links))
    events = [[down, link, 0.0], [200 * US, other, 40e9], [up, link, 100e9]]
    events.sort(key=lambda e: e[0])  # stable: equal times keep their order
    return src, dst, size, start, routes, events


def _drive(s, start, events, plan=None):
    """Feed ``s`` the starts and capacity events at their times (advance to t - 1, inject at t)."""
    n = start.shape[0]
    finish = np.full(n, -1, np.int64)
    if plan is None:
        plan = sorted({int(t) for t in start} | {int(e[0]) for e in events})
    for t in plan:
        ids, fin = s.advance(t - 1)
        assert np.all(finish[ids] == -1)
        finish[ids] = fin
        assert s.now_ps < t or s.stats()["events"] == 0
        s.start(np.flatnonzero(start == t), t)
        for when, link, cap in events:
            if when == t:
                s.set_capacity([link], [cap], t)
    ids, fin = s.advance(INF - 1)
    finish[ids] = fin
    return finish


def _assert_same(s, batch, finish):
    assert np.array_equal(finish, batch.finish_ps)
    assert np.array_equal(s.finish_ps, batch.finish_ps)
    st_ = s.stats()
    for k in ("retransmissions", "ecn_marks", "drops", "data_link_hops", "all_link_hops"):
        assert st_[k] == batch.stats[k], k
    assert st_["data_packets"] == int(batch.extra["flow_data_pkts"].sum())
    assert np.array_equal(s.link_bytes(), batch.link_bytes)


@settings(max_examples=16)
@given(st.integers(0, 2**31), st.sampled_from(packetsim.NIC_SCHEDULING))
def test_injected_starts_and_capacity_changes_match_a_batch_run(seed, nic):
    src, dst, size, start, routes, events = _scenario(seed)
    params = PARAMS._replace(nic_scheduling=nic)
    batch = simulate_flows(FAB, src, dst, size, start, capacity_events=events, seed=seed,
                           engine="packet", packet_params=params)
    assert batch.status == "done"
    s = PacketSession.for_fabric(FAB, routes, size, params=params)
    finish = _drive(s, start, events)
    _assert_same(s, batch, finish)
    assert s.next_event_ps() == INF


def test_the_scenarios_exercise_timeouts_and_waiting():
    """The outage of the hypothesis scenario does hold flows in flight (timeouts, go-back-N)."""
    retx = 0
    for seed in range(6):
        src, dst, size, start, routes, events = _scenario(seed)
        retx += simulate_flows(FAB, src, dst, size, start, capacity_events=events, seed=seed,
                               engine="packet", packet_params=PARAMS).stats["retransmissions"]
    assert retx > 0


def test_a_session_started_at_zero_equals_the_batch_run():
    rng = np.random.default_rng(7)
    n = 32
    src = rng.integers(0, 16, n)
    dst = (src + rng.integers(1, 16, n)) % 16
    size = rng.integers(1, 3_000_000, n)
    batch = simulate_flows(FAB, src, dst, size, engine="packet", seed=3)
    s = PacketSession.for_fabric(FAB, FAB.route(src, dst, seed=3), size)
    s.start(np.arange(n), 0)
    ids, fin = s.advance(INF - 1)
    assert sorted(ids.tolist()) == list(range(n))
    assert np.array_equal(fin, batch.finish_ps[ids])
    assert np.all(np.diff(fin) >= 0)  # completion order
    _assert_same(s, batch, s.finish_ps)
    assert s.advance(INF - 1)[0].size == 0  # nothing twice


def test_pool_growth_is_transparent():
    """A tiny initial packet pool grows many times inside advance(); results do not change."""
    rng = np.random.default_rng(11)
    n = 120
    src = rng.integers(0, 16, n)
    dst = (src + rng.integers(1, 16, n)) % 16
    size = rng.integers(500_000, 2_000_000, n)
    start = rng.choice([0, 100 * US], n)
    batch = simulate_flows(FAB, src, dst, size, start, engine="packet", seed=5)
    s = PacketSession.for_fabric(FAB, FAB.route(src, dst, seed=5), size, pool_cap=2)
    assert s.st.pk.shape[0] == 2
    finish = _drive(s, start, [])
    assert s.grows >= 5 and s.stats()["pool_grows"] == s.grows
    assert s.stats()["peak_packets"] > 1024
    _assert_same(s, batch, finish)


def test_stop_at_finish_returns_at_each_completion_instant():
    src, dst, size, start, routes, events = _scenario(3)
    batch = simulate_flows(FAB, src, dst, size, start, capacity_events=events, seed=3,
                           engine="packet", packet_params=PARAMS)
    s = PacketSession.for_fabric(FAB, routes, size, params=PARAMS)
    plan = sorted({int(t) for t in start} | {int(e[0]) for e in events})
    finish = np.full(start.shape[0], -1, np.int64)
    calls = 0
    for t in plan + [INF]:
        while True:  # step from completion instant to completion instant up to t - 1
            ids, fin = s.advance(t - 1, stop_at_finish=True)
            calls += 1
            finish[ids] = fin
            if ids.size == 0:
                break
            assert np.all(fin == fin[0]) and s.now_ps == fin[0]  # one instant per call
        if t < INF:
            s.start(np.flatnonzero(start == t), t)
            for when, link, cap in events:
                if when == t:
                    s.set_capacity([link], [cap], t)
    assert np.array_equal(finish, batch.finish_ps)
    assert calls >= len(np.unique(batch.finish_ps))


def test_misuse_is_reported():
    routes = FAB.route(np.array([0, 1]), np.array([5, 6]))
    s = PacketSession.for_fabric(FAB, routes, np.array([100_000, 100_000]))
    s.start([0], 10)
    with pytest.raises(ValueError, match="one injection time"):
        s.set_capacity([0], [1.0], 20)
    with pytest.raises(ValueError, match="one injection time"):
        s.start([1], 20)
    with pytest.raises(ValueError, match="only once"):
        s.start([0], 10)
    with pytest.raises(ValueError, match="only once"):
        s.start([1, 1], 10)
    with pytest.raises(ValueError, match="only once"):
        s.start([2], 10)
    with pytest.raises(ValueError, match="link ids"):
        s.set_capacity([FAB.n_links], [1.0], 10)
    with pytest.raises(ValueError, match="link ids"):
        s.set_capacity([0], [-1.0], 10)
    with pytest.raises(ValueError, match="equal lengths"):
        s.set_capacity([0, 1], [1.0], 10)
    s.start([1], 10)  # same time: fine (the failed calls changed nothing)
    s.advance(100)
    assert s.now_ps == 10
    with pytest.raises(ValueError, match="before the engine"):
        s.set_capacity([0], [1.0], 5)
    with pytest.raises(ValueError, match="only once"):
        s.start([0], 200)
    s.set_capacity([0], [1e9], 10)  # at the engine's time: allowed
    ids, _ = s.advance(INF - 1)
    assert sorted(ids.tolist()) == [0, 1]
    s.close_capacity()
    with pytest.raises(ValueError, match="close_capacity"):
        s.set_capacity([0], [1.0], s.now_ps + 1)
    with pytest.raises(ValueError, match="255"):
        PacketSession(np.array([0, 256]), np.zeros(256, np.int64), FAB.links.reverse,
                      FAB.link_state(), FAB.links.delay_ps, np.array([1]))


def _held_scenario():
    """Flows in flight when a link of theirs goes to 0 at 100 us."""
    src = np.array([0, 1, 2, 8])
    dst = np.array([12, 13, 14, 3])
    size = np.full(4, 4_000_000)
    routes = FAB.route(src, dst)
    link = int(routes.route_links[routes.route_ptr[0] + 2])  # held: flow 0 (maybe others)
    return src, dst, size, routes, link


def test_a_link_down_for_good_leaves_the_session_idle():
    src, dst, size, routes, link = _held_scenario()
    s = PacketSession.for_fabric(FAB, routes, size, params=PARAMS)
    s.start(np.arange(4), 0)
    s.advance(100 * US - 1)
    s.set_capacity([link], [0.0], 100 * US)
    ids, _ = s.advance(INF - 1)  # returns: only retries of held flows are left
    assert s.next_event_ps() == INF
    assert s.finish_ps[0] == -1 and s.now_ps < 10**13
    # it stopped before the first timeout: nothing can progress unless something is injected
    assert s.stats()["retransmissions"] == 0
    assert packetsim.next_event_time(s.st) > s.now_ps  # that timeout is still due
    # it comes back later: the run resumes exactly where a batch run with that event would be
    up = s.now_ps + 5000 * US
    s.set_capacity([link], [100e9], up)
    s.advance(INF - 1)
    events = [[100 * US, link, 0.0], [up, link, 100e9]]
    batch = simulate_flows(FAB, src, dst, size, capacity_events=events, engine="packet",
                           packet_params=PARAMS)
    assert batch.status == "done" and batch.stats["retransmissions"] > 0
    _assert_same(s, batch, s.finish_ps)


def test_close_capacity_gives_the_batch_deadlock():
    src, dst, size, routes, link = _held_scenario()
    batch = simulate_flows(FAB, src, dst, size, capacity_events=[[100 * US, link, 0.0]],
                           engine="packet", packet_params=PARAMS)
    assert batch.status == "deadlock"
    s = PacketSession.for_fabric(FAB, routes, size, params=PARAMS)
    s.start(np.arange(4), 0)
    s.advance(100 * US - 1)
    s.set_capacity([link], [0.0], 100 * US)
    s.close_capacity()
    s.advance(INF - 1)
    assert s.next_event_ps() == INF
    _assert_same(s, batch, s.finish_ps)


def test_inject_kernel_keeps_start_and_event_order():
    """Injections at several pending times land in (time, flow) / stable time order."""
    routes = FAB.route(np.arange(6), np.arange(6) + 8)
    s = PacketSession.for_fabric(FAB, routes, np.full(6, 10_000))
    st_ = s.st
    empty = np.zeros(0, np.int64)
    assert packetsim.inject(st_, np.array([4, 1]), empty, np.zeros(0), 50) == 0
    assert packetsim.inject(st_, np.array([5]), empty, np.zeros(0), 20) == 0
    assert packetsim.inject(st_, np.array([0, 3]), empty, np.zeros(0), 50) == 0
    c = st_.clock
    order = st_.start_order[c[packetsim.C_START_PTR]:c[packetsim.C_N_TIMED]]
    assert order.tolist() == [5, 0, 1, 3, 4]
    st_ = packetsim.grow_events(st_, 3)
    for t, link in ((30, 7), (10, 8), (30, 9)):
        assert packetsim.inject(st_, empty, np.array([link]), np.array([1e9]), t) == 0
    n = st_.clock[packetsim.C_N_CAPS]
    assert st_.ev_time_ps[:n].tolist() == [10, 30, 30] and st_.ev_link[:n].tolist() == [8, 7, 9]
    assert packetsim.inject(st_, np.array([2, 2]), empty, np.zeros(0), 60) == -4
    assert st_.fi[2, packetsim.F_START] == -1  # undone


def test_a_session_too_big_for_memory_is_refused_before_allocating(monkeypatch):
    # An exact-mode training iteration on the packet engine can hold billions of packets (one
    # receive byte each): the session says so instead of NumPy failing deep inside.
    from fabricsim.errors import ConfigError

    monkeypatch.setattr("fabricsim.engine.available_memory_bytes", lambda: 10**5)
    routes = FAB.route(np.array([0, 1]), np.array([5, 6]))
    with pytest.raises(ConfigError, match=r"size_bytes: the packet engine needs about .* for 2 flows"):
        PacketSession.for_fabric(FAB, routes, np.array([10**9, 10**9]))
    PacketSession.for_fabric(FAB, routes, np.array([100_000, 100_000]))  # small enough
