"""Tests of fabricsim.topoopt (the TopoOpt baseline) and fabricsim.kernels.pairroute.

Expected structures follow /work/shared/reference/baselines.md section 5.4: degree d per server
(parallel links counted), rings on the real member lists plus the global step-1 ring, one
shortest path per server pair. Distances are checked against an independent breadth-first search
written here; the MP matrix of a workload against a plain per-task loop over ``graph.flows``.
"""

from __future__ import annotations

import math
from collections import deque

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fabricsim
from fabricsim.errors import ConfigError
from fabricsim.fabric import LINK_KINDS, NODE_KINDS, PATH_KINDS
from fabricsim.topoopt import (
    PATH_DIRECT,
    PATH_MULTIHOP,
    PATH_NVLINK,
    _ring_steps,
    greedy_matching,
    link_counts,
    topoopt,
    topoopt_for_workload,
    workload_traffic,
)

SERVER = NODE_KINDS.index("server")
L_OCS, L_NVLINK = LINK_KINDS.index("ocs"), LINK_KINDS.index("nvlink")
PROPS = settings(max_examples=25, deadline=None)


def strided_groups(servers, size, nbytes=1e9):
    """Residue classes mod servers/size (TopoOpt's own assumption), ``servers/size`` groups."""
    stride = servers // size
    return [(np.arange(r, servers, stride), nbytes) for r in range(stride)]


def bfs_dist(count):
    """Hop distances of the server graph whose pair (i, j) has count[i, j] links (independent)."""
    n = count.shape[0]
    nbrs = [np.flatnonzero(count[i]).tolist() for i in range(n)]
    dist = np.full((n, n), -1, np.int64)
    for s in range(n):
        dist[s, s] = 0
        q = deque([s])
        while q:
            u = q.popleft()
            for v in nbrs[u]:
                if dist[s, v] < 0:
                    dist[s, v] = dist[s, u] + 1
                    q.append(v)
    return dist


def check_fabric(f):
    """Invariants of every TopoOpt fabric: returns the link-count matrix."""
    p = f.params
    S, d = p["servers"], p["degree"]
    c = link_counts(f)
    assert np.array_equal(c, c.T) and np.all(np.diag(c) == 0)
    assert np.all(c.sum(axis=1) <= d)
    assert int((d - c.sum(axis=1)).sum()) == p["unused_ports"]
    # links: reverse twins, server links at c * B with the configured delay
    lk, nd = f.links, f.nodes
    assert np.array_equal(lk.src[lk.reverse], lk.dst) and np.array_equal(lk.dst[lk.reverse], lk.src)
    srv = lk.kind == L_OCS
    assert np.all(nd.kind[lk.src[srv]] == SERVER) and np.all(nd.kind[lk.dst[srv]] == SERVER)
    assert np.all(lk.delay_ps[srv] == p["link_delay_ps"])
    # every ordered server pair has a connected, shortest path from server i to server j
    dist = bfs_dist(c)
    assert np.all(dist >= 0), "some server pair is unreachable"
    r = f.routing
    server_node = {int(nd.server[k]): k for k in np.flatnonzero(nd.kind == SERVER)}
    for i in range(S):
        for j in range(S):
            path = r.server_path(i, j)
            assert len(path) == dist[i, j]
            if i == j:
                continue
            node = server_node[i]
            for link in path:
                assert lk.src[link] == node and lk.kind[link] == L_OCS
                node = int(lk.dst[link])
            assert node == server_node[j]
    return c


# --------------------------------------------------------------------------------------------
# Structure
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [8, 16, 4])
def test_strided_groups_128_servers_degree_8(size):
    f = topoopt(128, 400, allreduce_groups=strided_groups(128, size))
    c = check_fabric(f)
    assert np.all(c.sum(axis=1) == 8) and f.params["unused_ports"] == 0
    assert f.params["d_allreduce"] == 8 and f.params["d_mp"] == 0
    assert f.params["ring_group_size"] == size and f.params["rings_added"] == 3 * (128 // size)
    # the global ring i <-> i + 1
    assert all(c[i, (i + 1) % 128] >= 1 for i in range(128))
    # link capacities are c * B
    lk = f.links
    srv = lk.kind == L_OCS
    assert np.allclose(lk.capacity_bps[srv] / 400e9, np.rint(lk.capacity_bps[srv] / 400e9))
    assert f.n_hosts == 1024 and f.count("server") == 128 and f.count("gpu") == 1024


def test_dp_ring_consecutive_members_get_direct_links():
    rng = np.random.default_rng(1)
    perm = rng.permutation(64)
    groups = [(perm[k * 8:(k + 1) * 8], 5e8) for k in range(8)]  # scattered, non-strided members
    f = topoopt(64, 100, allreduce_groups=groups, gpus_per_server=2)
    c = check_fabric(f)
    assert np.all(c.sum(axis=1) == 8)
    for members, _ in groups:
        m = np.sort(members)
        for a, b in zip(m, np.roll(m, -1)):
            assert c[a, b] >= 1
            route = f.route([2 * a], [2 * b])  # GPU 0 of each server
            assert route.path_kind[0] == PATH_DIRECT and np.diff(route.route_ptr)[0] == 1


def test_group_size_two_fat_pairs():
    """phi(2) = 1: every ring of a 2-server group is the same partner link (baselines.md 5.4)."""
    f = topoopt(16, 100, allreduce_groups=[(np.array([2 * i, 2 * i + 1]), 1e9) for i in range(8)])
    c = check_fabric(f)
    assert f.params["ring_steps"] == [1, 1, 1]
    assert np.all(c.sum(axis=1) == 8)
    for i in range(8):
        assert c[2 * i, 2 * i + 1] == 6 + 1  # three rings of two links, plus the global ring
        assert c[2 * i + 1, (2 * i + 2) % 16] == 1  # the global ring between pairs
    # EP-like traffic across pairs rides multi-hop paths over the single-B ring
    assert f.params["max_hops"] > 1
    route = f.route([0], [8 * 7])  # GPU 0 of server 0 -> GPU 0 of server 7: over the ring
    assert route.path_kind[0] == PATH_MULTIHOP and np.diff(route.route_ptr)[0] == 7


def test_two_servers_group_spanning_everything():
    f = topoopt(2, 200, allreduce_groups=[(np.array([0, 1]), 1e9)], degree=6)
    c = check_fabric(f)
    assert c[0, 1] == 6 and f.params["ring_steps"] == [1, 1, 1]
    assert f.links.capacity_bps[f.links.kind == L_OCS].tolist() == [6 * 200e9] * 2


def test_no_groups_odd_degree_and_odd_servers():
    f = topoopt(9, 100, degree=3)  # 9 servers x 3 ports is odd: one port must stay unused
    c = check_fabric(f)
    assert f.params["unused_ports"] == 1 and sorted(c.sum(axis=1).tolist()) == [2] + [3] * 8
    f = topoopt(10, 100, degree=5, gpus_per_server=1)
    c = check_fabric(f)
    assert np.all(c.sum(axis=1) == 5)
    assert f.routing.host_nvl_up.tolist() == [-1] * 10  # one GPU per server: no NVLink


def test_overlapping_groups_respect_degree():
    groups = [(np.arange(0, 8), 3e9), (np.arange(4, 12), 2e9), (np.arange(10, 16), 1e9)]
    f = topoopt(16, 100, allreduce_groups=groups)
    c = check_fabric(f)
    assert np.all(c.sum(axis=1) == 8)
    assert all(c[i, i + 1] >= 1 for i in range(7))  # heaviest group: step 1 ring


def test_ring_steps():
    assert _ring_steps(8, 3) == [1, 3, 1]  # phi(8)/2 = 2 distinct rings, then repeats
    assert _ring_steps(16, 3) == [1, 3, 7]  # geometric between 1 and 7
    assert _ring_steps(2, 3) == [1, 1, 1]
    assert _ring_steps(16, 0) == []
    for n in range(2, 40):
        for p in range(1, 6):
            steps = _ring_steps(n, p)
            assert len(steps) == p and 1 in steps
            assert all(math.gcd(m, n) == 1 and 1 <= m <= n // 2 for m in steps)
            assert len(set(steps)) <= max(1, sum(math.gcd(m, n) == 1 for m in range(1, n)) // 2)


def test_paper_split_and_mp_matchings():
    S = 32
    groups = strided_groups(S, 8, 1e9)  # AR = 4e9
    mp = np.zeros((S, S))
    mp[0, 5] = 4e9  # MP = AR -> d_A = 4, d_MP = 4
    f = topoopt(S, 100, allreduce_groups=groups, mp_demand=mp, port_split="paper")
    c = check_fabric(f)
    assert f.params["d_allreduce"] == 4 and f.params["d_mp"] == 4
    assert np.all(c.sum(axis=1) == 8)
    assert c[0, 5] == 4  # four rounds: the discounted demand 4e9 / (c + 1) still leads
    route = f.route([0], [5 * 8])
    assert route.path_kind[0] == PATH_DIRECT
    # released split ignores MP for the ports
    g = topoopt(S, 100, allreduce_groups=groups, mp_demand=mp)
    assert g.params["d_mp"] == 0 and link_counts(g)[0, 5] == 0
    # d_A is at least 2 even with (almost) no all-reduce bytes
    h = topoopt(S, 100, allreduce_groups=[(groups[0][0], 1.0)], mp_demand=mp,
                port_split="paper")
    assert h.params["d_allreduce"] == 2 and h.params["d_mp"] == 6
    assert np.all(link_counts(h).sum(axis=1) == 8)


def test_matching_is_perfect_and_heavy():
    rng = np.random.default_rng(5)
    for n in (6, 10, 15, 20):
        w = rng.random((n, n)) ** 3
        w = np.triu(w, 1)
        w = w + w.T
        pairs = greedy_matching(w, np.ones(n, bool), np.random.default_rng(0))
        assert len(pairs) == n // 2 and len(np.unique(pairs)) == 2 * (n // 2)
        g = nx.Graph()
        g.add_weighted_edges_from((i, j, w[i, j]) for i in range(n) for j in range(i + 1, n))
        opt = sum(w[i, j] for i, j in nx.max_weight_matching(g))
        got = sum(w[i, j] for i, j in pairs)
        assert got >= 0.5 * opt - 1e-12  # greedy's guarantee (2-opt only improves it)


@PROPS
@given(S=st.integers(2, 20), d=st.integers(2, 9), split=st.sampled_from(["released", "paper"]),
       n_groups=st.integers(0, 4), seed=st.integers(0, 2**31), data=st.data())
def test_random_inputs_keep_invariants(S, d, split, n_groups, seed, data):
    rng = np.random.default_rng(seed)
    groups = [(rng.choice(S, size=int(rng.integers(1, S + 1)), replace=False), float(rng.integers(0, 10**9)))
              for _ in range(n_groups)]
    mp = rng.integers(0, 10**8, (S, S)) * (rng.random((S, S)) < 0.3)
    f = topoopt(S, 100, degree=d, allreduce_groups=groups, mp_demand=mp, port_split=split, seed=seed,
                gpus_per_server=data.draw(st.sampled_from([1, 2])))
    c = check_fabric(f)
    # a port stays unused only when no other server has a free one
    assert np.count_nonzero(c.sum(axis=1) < d) <= 1


# --------------------------------------------------------------------------------------------
# Routing and determinism
# --------------------------------------------------------------------------------------------

def test_route_covers_every_gpu_pair():
    f = topoopt(12, 100, gpus_per_server=4, allreduce_groups=strided_groups(12, 4))
    H = f.n_hosts
    src, dst = (a.ravel() for a in np.meshgrid(np.arange(H), np.arange(H), indexing="ij"))
    keep = src != dst
    src, dst = src[keep], dst[keep]
    r = f.route(src, dst)
    lk, r_ = f.links, f.routing
    dist = bfs_dist(link_counts(f))
    for k in range(src.size):
        links = r.route_links[r.route_ptr[k]:r.route_ptr[k + 1]]
        s, d = int(src[k]), int(dst[k])
        assert [links.tolist()] == f.paths(s, d)
        ss, ds = s // 4, d // 4
        if ss == ds:
            assert r.path_kind[k] == PATH_NVLINK
            assert links.tolist() == [r_.host_nvl_up[s], r_.host_nvl_down[d]]
            assert lk.src[links[0]] == f.hosts[s] and lk.dst[links[1]] == f.hosts[d]
            assert np.all(lk.kind[links] == L_NVLINK)
        else:
            assert len(links) == dist[ss, ds]
            assert r.path_kind[k] == (PATH_DIRECT if len(links) == 1 else PATH_MULTIHOP)
            assert np.all(lk.dst[links[:-1]] == lk.src[links[1:]])
    assert PATH_KINDS[PATH_NVLINK] == "nvlink"


def test_determinism_per_seed():
    kw = dict(allreduce_groups=strided_groups(64, 8), mp_demand=np.ones((64, 64)), port_split="paper")
    a, b = topoopt(64, 100, seed=3, **kw), topoopt(64, 100, seed=3, **kw)
    for x, y in zip(a.links, b.links):
        assert np.array_equal(x, y)
    assert np.array_equal(a.routing.pair_ptr, b.routing.pair_ptr)
    assert np.array_equal(a.routing.pair_links, b.routing.pair_links)
    c = topoopt(64, 100, seed=4, **kw)
    assert not (np.array_equal(link_counts(a), link_counts(c))
                and np.array_equal(a.routing.pair_links, c.routing.pair_links))
    # same topology, different seed: only the tie-breaks of the shortest paths change
    d = topoopt(128, 100, allreduce_groups=strided_groups(128, 8), seed=13)
    e = topoopt(128, 100, allreduce_groups=strided_groups(128, 8), seed=14)
    assert np.array_equal(link_counts(d), link_counts(e))
    assert np.array_equal(d.routing.pair_ptr, e.routing.pair_ptr)
    assert not np.array_equal(d.routing.pair_links, e.routing.pair_links)
    assert d.params["seed"] == 13 and topoopt(4, 100).params["seed"] == 13


# --------------------------------------------------------------------------------------------
# Workload and the flow engine
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=[(32, 4), (64, 8)], ids=["ep-in-server", "ep-across-servers"])
def graph(request):
    """Mixtral 8x7B, tp=2, pp=2, dp=2; ep=4 keeps each EP group in one server, ep=8 spans two."""
    from fabricsim.workload.taskgraph import WorkloadConfig, build_iteration

    gpus, ep = request.param
    return build_iteration(WorkloadConfig(model="mixtral-8x7b", gpus=gpus, tp=2, ep=ep, pp=2, dp=2,
                                          micro_batch=1, seq_len=256))


def test_workload_traffic_matches_task_flows(graph):
    gps, S = graph.placement.gpus_per_server, graph.placement.servers
    naive = np.zeros((S, S), np.int64)
    groups = {}
    for t in np.flatnonzero(graph.kind == 1):
        op = fabricsim.workload.taskgraph.OPS[graph.op[t]]
        src, dst, size = graph.flows(int(t))
        if op == "dp_ring":
            key = tuple(sorted(set((np.r_[src, dst] // gps).tolist())))
            if len(key) > 1:
                groups[key] = groups.get(key, 0) + int(size.sum())
            continue
        if op.startswith(("ep_", "pp_", "dp_")):
            for s, d, b in zip(src // gps, dst // gps, size):
                if s != d:
                    naive[s, d] += b
    got_groups, mp = workload_traffic(graph)
    assert np.array_equal(mp, naive) and mp.sum() > 0
    assert {tuple(m.tolist()): b for m, b in got_groups} == groups and groups


def test_topoopt_for_workload_end_to_end(graph):
    f = topoopt_for_workload(graph, 100)
    c = check_fabric(f)
    S = graph.placement.servers
    assert f.params["servers"] == S and f.n_hosts == graph.placement.gpus
    assert np.all(c.sum(axis=1) == 8) and f.params["workload"]["ep"] == graph.placement.ep
    H = f.n_hosts
    src, dst = (a.ravel() for a in np.meshgrid(np.arange(H), np.arange(H), indexing="ij"))
    keep = src != dst
    r = f.route(src[keep], dst[keep])
    assert np.all(np.diff(r.route_ptr) >= 1)
    # a few flows on the flow engine: NVLink, direct and (if any) multi-hop
    dist = bfs_dist(c)
    far = np.argwhere(dist == dist.max())[0]
    s = np.array([0, 0, 8 * far[0]])
    d = np.array([1, 8 * int(np.flatnonzero(c[0])[0]), 8 * far[1] + 3])
    res = fabricsim.simulate_flows(f, s, d, 10**8, start_ps=[0, 0, 10**11])  # flow 2 after 1
    assert res.status == "done" and np.all(res.finish_ps > 0)
    # the direct flow runs alone on its pair link: bytes / (c * B) (the fluid model has no delay)
    j = int(np.flatnonzero(c[0])[0])
    expect = 10**8 * 8 / (c[0, j] * 100e9) * 1e12
    assert res.fct_ps[1] == pytest.approx(expect, rel=1e-6)
    with pytest.raises(ConfigError) as e:
        topoopt_for_workload(graph, 100, gpus_per_server=4)
    assert e.value.field == "fabric.gpus_per_server"
    with pytest.raises(ConfigError) as e:
        topoopt_for_workload(graph, 100, mp_demand=np.zeros((S, S)))
    assert e.value.field == "fabric.mp_demand"


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,field", [
    (dict(servers=1), "fabric.servers"),
    (dict(degree=1), "fabric.degree"),
    (dict(degree=65), "fabric.degree"),
    (dict(degree=2.5), "fabric.degree"),
    (dict(port_split="greedy"), "fabric.port_split"),
    (dict(allreduce_groups=[([0, 4], 1e9)]), "fabric.allreduce_groups"),
    (dict(allreduce_groups=[([-1, 2], 1e9)]), "fabric.allreduce_groups"),
    (dict(allreduce_groups=[([0, 2], -5)]), "fabric.allreduce_groups"),
    (dict(allreduce_groups=[[0, 1, 2]]), "fabric.allreduce_groups"),
    (dict(allreduce_groups=[([0.5, 2], 1)]), "fabric.allreduce_groups"),
    (dict(mp_demand=np.zeros((3, 3))), "fabric.mp_demand"),
    (dict(mp_demand=-np.ones((4, 4))), "fabric.mp_demand"),
    (dict(link_gbps=0), "fabric.link_gbps"),
    (dict(link_delay_ps=-1), "fabric.link_delay_ps"),
    (dict(seed=-1), "fabric.seed"),
    (dict(gpus_per_server=0), "fabric.gpus_per_server"),
])
def test_errors_name_the_field(kwargs, field):
    args = dict(servers=4, link_gbps=100)
    args.update(kwargs)
    with pytest.raises(ConfigError) as e:
        topoopt(args.pop("servers"), args.pop("link_gbps"), **args)
    assert e.value.field == field
