"""The MixNet fabric (fabricsim.mixnet): structure, routing under circuits, reconfiguration events."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabricsim import simulate_flows
from fabricsim.errors import ConfigError
from fabricsim.fabric import LINK_KINDS, PATH_KINDS
from fabricsim.mixnet import check_circuits, mixnet, random_circuits, reconfiguration_events
from fabricsim.traces.flows import PATH_KIND_NAMES

OCS = LINK_KINDS.index("ocs")


def test_structure_of_the_paper_build():
    f = mixnet(128, 100, region_servers=8)
    p = f.params
    assert p["eps_k"] == 8 and p["regions"] == 16 and p["eps_gbps"] == 200
    assert f.n_hosts == 1024 and f.count("ocs") == 16 and f.count("gpu") == 1024
    ocs = f.links.kind == OCS
    assert ocs.sum() == 16 * 8 * 7  # every ordered intra-region server pair
    # EPS host links run at (8 - alpha) * B
    eps_host_links = f.routing.eps.host_up
    assert np.all(f.links.capacity_bps[eps_host_links] == 200e9)
    # circuits: symmetric, <= alpha per server, capacities C * B
    c = f.routing.circuits
    assert np.all(c == c.transpose(0, 2, 1)) and c.sum(axis=2).max() <= 6
    links, cap = f.routing.capacities()
    assert np.array_equal(np.sort(links), np.flatnonzero(ocs))
    assert np.array_equal(f.links.capacity_bps[links], cap)
    assert PATH_KIND_NAMES == PATH_KINDS


def route_is_a_path(f, route, src_node, dst_node):
    nodes = [src_node]
    for link in route:
        assert f.links.src[link] == nodes[-1]
        nodes.append(int(f.links.dst[link]))
    return nodes[-1] == dst_node


@settings(max_examples=30)
@given(st.integers(0, 2**31), st.sampled_from([2, 4]), st.integers(0, 3))
def test_routes_follow_the_circuits(seed, region_servers, alpha):
    f = mixnet(8, 100, gpus_per_server=4, region_servers=region_servers, alpha=alpha)
    rng = np.random.default_rng(seed)
    circuits = np.stack([random_circuits(region_servers, alpha, rng)
                         for _ in range(8 // region_servers)])
    src = rng.integers(0, 32, 200)
    dst = (src + rng.integers(1, 32, 200)) % 32
    r = f.route(src, dst, seed=seed, circuits=circuits)
    server = f.host_server
    server_node = f.links.src[f.routing.eps.host_up]
    for i in range(200):
        route = r.route_links[r.route_ptr[i]:r.route_ptr[i + 1]].tolist()
        s, d = server[src[i]], server[dst[i]]
        if s == d:
            assert PATH_KINDS[r.path_kind[i]] == "nvlink"
            assert route_is_a_path(f, route, f.hosts[src[i]], f.hosts[dst[i]])
            continue
        assert route_is_a_path(f, route, server_node[s], server_node[d])
        same = s // region_servers == d // region_servers
        has_circuit = same and circuits[s // region_servers, s % region_servers,
                                        d % region_servers] > 0
        if has_circuit:
            assert len(route) == 1 and f.links.kind[route[0]] == OCS
            assert PATH_KINDS[r.path_kind[i]] == "ocs"
        else:
            assert all(f.links.kind[link] != OCS for link in route)
        assert route in f.routing.paths(int(src[i]), int(dst[i]), circuits)


@pytest.mark.parametrize("kwargs, field", [
    (dict(alpha=8), "fabric.alpha"),
    (dict(alpha=-1), "fabric.alpha"),
    (dict(region_servers=3), "fabric.region_servers"),
    (dict(region_servers=8, ocs_ports=40), "fabric.ocs_ports"),
])
def test_invalid_mixnet_parameters(kwargs, field):
    with pytest.raises(ConfigError) as e:
        mixnet(16, 100, **kwargs)
    assert e.value.field == field


@pytest.mark.parametrize("c, text", [
    ([[0, 1], [0, 0]], "symmetric"),
    ([[1, 0], [0, 1]], "zero diagonal"),
    ([[0, 7], [7, 0]], "alpha"),
    ([[0, -1], [-1, 0]], ">= 0"),
    ([[0, 1, 0], [1, 0, 0], [0, 0, 0]], "shape"),
])
def test_bad_circuit_matrices(c, text):
    with pytest.raises(ConfigError, match=text):
        check_circuits(c, 6, 2, 1)


def two_server_region():
    """One region of 2 servers (4 GPUs each) and a second region, 100 Gbps, alpha 2."""
    return mixnet(4, 100, gpus_per_server=4, region_servers=2, alpha=2,
                  circuits=np.array([[[0, 1], [1, 0]], [[0, 0], [0, 0]]]))


@pytest.mark.parametrize("engine", ["flow", "packet"])
@pytest.mark.parametrize("hold", ["region", "changed"])
def test_reconfiguration_holds_exactly_the_affected_flows_for_the_delay(engine, hold):
    f = two_server_region()
    old = np.array([[0, 1], [1, 0]])
    new = np.array([[0, 2], [2, 0]])
    t0, delay = 1_000_000, 25_000_000_000  # at 1 us, 25 ms
    ev = reconfiguration_events(f, 0, old, new, t0, delay, hold=hold)
    final = np.stack([new, np.zeros((2, 2), np.int64)])
    # flow 0: server 0 -> 1 over the circuit (re-wired), starts during the reconfiguration;
    # flow 1: server 2 -> 3 (region 1, no circuit): over the EPS, not affected
    src, dst = np.array([0, 8]), np.array([4, 12])
    size = np.array([2_000_000, 2_000_000])
    start = np.array([t0 + 1000, t0 + 1000])
    routes_kw = dict(engine=engine, tolerance=0.0)
    held = simulate_flows(f, src, dst, size, start, capacity_events=ev, circuits=final, **routes_kw)
    static = mixnet(4, 100, gpus_per_server=4, region_servers=2, alpha=2, circuits=final)
    ref = simulate_flows(static, src, dst, size, np.array([t0 + delay, t0 + 1000]), **routes_kw)
    assert held.finish_ps[0] == ref.finish_ps[0]      # held for exactly the rest of the delay
    assert held.finish_ps[1] == ref.finish_ps[1]      # EPS flow unaffected


@pytest.mark.parametrize("delay_ps", [0, 1_000_000, 10_000_000_000_000])  # 0, 1 us, 10 s
def test_delays_from_zero_to_ten_seconds(delay_ps):
    """A delay of 0 equals a static fabric with the final circuits; 1 us and 10 s work."""
    f = two_server_region()
    new = np.array([[0, 2], [2, 0]])
    final = np.stack([new, np.zeros((2, 2), np.int64)])
    ev = reconfiguration_events(f, 0, f.routing.circuits[0], new, 0, delay_ps)
    src, dst, size = np.array([0, 1]), np.array([4, 5]), np.array([10**6, 10**6])
    got = simulate_flows(f, src, dst, size, capacity_events=ev, circuits=final, tolerance=0.0)
    static = mixnet(4, 100, gpus_per_server=4, region_servers=2, alpha=2, circuits=final)
    want = simulate_flows(static, src, dst, size, tolerance=0.0)
    assert np.array_equal(got.finish_ps, want.finish_ps + delay_ps)


def swap_pair(c):
    """``c`` with one circuit swap: (i, j) and (k, m) become (i, k) and (j, m), four servers;
    every row sum stays. Returns the new matrix and the four changed (unordered) pairs."""
    for i, j, k, m in itertools.permutations(range(c.shape[0]), 4):
        if c[i, j] and c[k, m]:
            new = c.copy()
            for a, b, d in ((i, j, -1), (k, m, -1), (i, k, 1), (j, m, 1)):
                new[a, b] += d
                new[b, a] += d
            return new, {(i, j), (k, m), (i, k), (j, m)}
    raise AssertionError("no two disjoint circuits to swap")


def test_reconfiguration_events_shape():
    f = mixnet(16, 100, region_servers=8)  # alpha 6: every server's ports are in use
    old = f.routing.circuits[1]
    assert np.all(old.sum(axis=1) == 6)
    new, pairs = swap_pair(old)
    changed = {(a, b) for a, b in zip(*np.nonzero(old != new))}
    assert changed == pairs | {(b, a) for a, b in pairs} and len(changed) == 8
    ocs = f.routing.ocs_link
    region = ocs[8:16][ocs[8:16] >= 0]
    ev = reconfiguration_events(f, 1, old, new, 5, 10, hold="region")
    assert (ev.time_ps == 5).sum() == 56 and (ev.time_ps == 15).sum() == 56
    assert set(ev.link[ev.time_ps == 5].tolist()) == set(region.tolist())
    assert np.all(ev.capacity_bps[ev.time_ps == 5] == 0)
    ev = reconfiguration_events(f, 1, old, new, 5, 10, hold="changed")
    held = ev.link[ev.time_ps == 5]
    assert sorted(held.tolist()) == sorted(int(ocs[8 + a, b]) for a, b in changed)
    assert np.all(ev.capacity_bps[ev.time_ps == 5] == 0)
    # at the end every link of the region has its new capacity
    end = dict(zip(ev.link[ev.time_ps == 15].tolist(), ev.capacity_bps[ev.time_ps == 15]))
    assert set(end) == set(region.tolist())
    for a in range(8):
        for b in range(8):
            if a != b:
                assert end[int(ocs[8 + a, b])] == new[a, b] * 100e9


@pytest.mark.parametrize("engine", ["flow", "packet"])
def test_hold_changed_keeps_unchanged_circuits_carrying_traffic(engine):
    """One region of 4 servers, alpha 2: circuits (0,1), (2,3), (0,2), (1,3) become (0,1),
    (2,3), (0,3), (1,2). With hold="changed" a flow on the unchanged (0,1) circuit runs through
    the re-wiring as on a static fabric, and a flow on the new (0,3) circuit waits for the delay;
    with hold="region" both wait."""
    old = np.array([[0, 1, 1, 0], [1, 0, 0, 1], [1, 0, 0, 1], [0, 1, 1, 0]])
    new = np.array([[0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0]])
    f = mixnet(4, 100, gpus_per_server=4, region_servers=4, alpha=2, circuits=old[None])
    static = mixnet(4, 100, gpus_per_server=4, region_servers=4, alpha=2, circuits=new[None])
    t0, delay = 1_000_000, 25_000_000_000  # at 1 us, 25 ms
    src, dst = np.array([0, 1]), np.array([4, 12])  # server 0 -> 1 (kept), server 0 -> 3 (new)
    size = np.array([2_000_000, 2_000_000])
    start = np.array([t0 + 1000, t0 + 1000])
    kw = dict(engine=engine, tolerance=0.0, circuits=new[None])
    ev = reconfiguration_events(f, 0, old, new, t0, delay, hold="changed")
    ocs = f.routing.ocs_link
    assert sorted(ev.link[ev.time_ps == t0].tolist()) == sorted(
        int(ocs[a, b]) for a, b in ((0, 2), (2, 0), (1, 3), (3, 1), (0, 3), (3, 0), (1, 2), (2, 1)))
    changed = simulate_flows(f, src, dst, size, start, capacity_events=ev, **kw)
    region = simulate_flows(f, src, dst, size, start, **kw, capacity_events=reconfiguration_events(
        f, 0, old, new, t0, delay, hold="region"))
    free = simulate_flows(static, src, dst, size, start, **kw)
    late = simulate_flows(static, src, dst, size, np.array([t0 + delay] * 2), **kw)
    # 2 MB at 100 Gbps: 160 us, well inside the 25 ms delay
    assert free.finish_ps[0] - start[0] >= 160_000_000 and free.finish_ps[0] < t0 + delay
    assert changed.finish_ps[0] == free.finish_ps[0]       # the kept circuit carries on
    assert changed.finish_ps[1] == late.finish_ps[1]       # the new circuit waits for the delay
    assert region.finish_ps[0] == late.finish_ps[0] > t0 + delay  # hold="region": both wait
    assert region.finish_ps[1] == late.finish_ps[1]


def test_nic_level_eps():
    f = mixnet(8, 100, gpus_per_server=4, region_servers=4, alpha=2, eps="nic")
    assert f.params["eps"] == "nic" and f.params["eps_gbps"] == 200
    rng = np.random.default_rng(1)
    src = rng.integers(0, 32, 300)
    dst = (src + rng.integers(1, 32, 300)) % 32
    none = np.zeros_like(f.routing.circuits)
    r = f.route(src, dst, circuits=none)
    nic_node = f.links.src[f.routing.nic_up]  # [S, E]: the EPS NICs, hosts of the EPS fat-tree
    assert np.array_equal(f.nodes.server[nic_node], np.repeat(np.arange(8), 2).reshape(8, 2))
    assert np.array_equal(f.links.dst[f.routing.nic_down], nic_node)
    used = set()
    for i in range(300):
        route = r.route_links[r.route_ptr[i]:r.route_ptr[i + 1]].tolist()
        s, d = f.host_server[src[i]], f.host_server[dst[i]]
        if s == d:
            continue
        # from one EPS NIC of the source server to one of the destination server
        assert route[0] in f.routing.nic_up[s] and route[-1] in f.routing.nic_down[d]
        assert route_is_a_path(f, route, f.links.src[route[0]], f.links.dst[route[-1]])
        assert route in f.routing.paths(int(src[i]), int(dst[i]), none)
        used.add(route[0])
    assert used == set(f.routing.nic_up.ravel().tolist())  # the hash spreads flows over NICs
    # one flow leaves through one NIC: at most B (the server-level EPS gives it (8 - alpha) B)
    one = simulate_flows(f, [0], [31], [10**6], circuits=none, tolerance=0.0)
    agg = mixnet(8, 100, gpus_per_server=4, region_servers=4, alpha=2)
    one_agg = simulate_flows(agg, [0], [31], [10**6], circuits=none, tolerance=0.0)
    assert one.finish_ps[0] == 2 * one_agg.finish_ps[0]
    with pytest.raises(ConfigError, match="eps"):
        mixnet(8, 100, eps="rail")
