"""Tests of fabricsim.fabric (builders, Fabric, paths, route) and fabricsim.kernels.routing.

Expected counts are derived by hand from /work/shared/reference/baselines.md sections 2-4, and path
sets are checked against an independent breadth-first enumeration of all shortest paths in the
directed link graph.
"""

from __future__ import annotations

import json
from collections import deque
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabricsim.errors import ConfigError
from fabricsim.fabric import (
    LINK_DELAY_DEFAULT_PS,
    LINK_KINDS,
    NODE_KINDS,
    NVLINK_DEFAULT_GBPS,
    PATH_KINDS,
    TIERS,
    fat_tree,
    rail_optimized,
)
from fabricsim.kernels.routing import flow_hash, splitmix64

GPU, SWITCH = NODE_KINDS.index("gpu"), NODE_KINDS.index("switch")
T_HOST, T_EDGE, T_AGG, T_CORE, T_NVS = (TIERS.index(t) for t in ("host", "edge", "agg", "core", "nvswitch"))
L_NVLINK, L_EPS = LINK_KINDS.index("nvlink"), LINK_KINDS.index("eps")
NVLINK_BPS = 600 * 2**30 * 8  # 600 GiB/s in bits/s
PROPS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------------------------
# Fabrics, built once per module (builders are pure functions of their arguments)
# --------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def fab(builder: str, *args, **kwargs):
    return {"fat_tree": fat_tree, "rail": rail_optimized}[builder](*args, **kwargs)


def ft1024():
    return fab("fat_tree", 1024, 100)


# Small fabrics for all-pairs checks, with (U, V) = paths per edge pair in a pod / per agg, derived
# from the builders' specs (not from the routing tables).
SMALL = {
    # k=4 full tree, GPU hosts, servers of 8 straddle 4 edge switches (2 hosts per edge) and
    # two pods: every pair is NVLink or crosses the core.
    "ft_k4_gpu": (("fat_tree", 16, 100), dict(), 2, 2),
    # k=6 (default for 32 hosts), server hosts, partial: 11 edges, 4 pods.
    "ft_k6_server": (("fat_tree", 32, 100), dict(host="server"), 3, 3),
    # k=8, 64 GPUs: 16 edges, 4 pods of 8, 16 cores.
    "ft_k8_gpu": (("fat_tree", 64, 100), dict(k=8), 4, 4),
    # k=8, one pod only (2-tier, no cores).
    "ft_k8_onepod": (("fat_tree", 16, 100), dict(k=8, gpus_per_server=4), 4, 0),
    # 3:1 by ports, k=8: 6 hosts + 2 uplinks per edge, 48 GPUs = 8 edges = 2 pods.
    "ft_3to1_ports": (("fat_tree", 48, 100), dict(oversubscription=3), 2, 4),
    # 3:1 by speed, non-blocking wiring with k=4 (server hosts, 12 of 16 slots).
    "ft_3to1_speed": (("fat_tree", 12, 100), dict(oversubscription=3, oversub_build="speed",
                                                    host="server"), 2, 2),
    # rail-optimized R-A with 4 GPUs per server: k=8, 8 servers = 2 pods.
    "rail_ft": (("rail", 8, 100, 4), dict(), 4, 4),
    # rail-optimized R-B: 2 groups of 4 servers, 2 GPUs each, 2 spines x 2 parallel links.
    "rail_superpod": (("rail", 8, 100, 2), dict(build="superpod", servers_per_leaf=4, spines=2), 4, 0),
}


def small(name):
    (builder, *args), kwargs, _, _ = SMALL[name]
    return fab(builder, *args, **kwargs)


# --------------------------------------------------------------------------------------------
# Independent helpers
# --------------------------------------------------------------------------------------------

def switch_index(f, tier):
    """Node ids of the switches of a tier, in build order (edge index e -> node id)."""
    return np.flatnonzero((f.nodes.kind == SWITCH) & (f.nodes.tier == tier))


@lru_cache(maxsize=None)
def _graph(f):
    """Plain-list views of a fabric for the oracle: in/out link lists, link ends and kinds."""
    src, dst = f.links.src.tolist(), f.links.dst.tolist()
    inc = [[] for _ in range(f.n_nodes)]
    out = [[] for _ in range(f.n_nodes)]
    for l, (u, v) in enumerate(zip(src, dst)):
        out[u].append(l)
        inc[v].append(l)
    nvl = (f.links.kind == L_NVLINK).tolist()
    is_host = (f.nodes.tier == T_HOST).tolist()
    return inc, out, src, dst, nvl, is_host, f.count("switch", "nvswitch") > 0


def same_server(f, s, d):
    """GPU hosts of one server (joined by an NVSwitch)."""
    return bool(_graph(f)[-1] and f.nodes.kind[f.hosts[s]] == GPU
                and f.nodes.server[f.hosts[s]] == f.nodes.server[f.hosts[d]])


def oracle_paths(f, s, d):
    """All shortest link paths host s -> host d that pass through no other host, by BFS.

    Same-server GPU pairs may use only NVLink links; all other pairs only non-NVLink links.
    """
    inc, out, src, dst, nvl, is_host, _ = _graph(f)
    a, b = int(f.hosts[s]), int(f.hosts[d])
    nv = same_server(f, s, d)

    def ok(l):
        return nvl[l] == nv

    dist = {a: 0}
    q = deque([a])
    while q:
        u = q.popleft()
        if u != a and is_host[u]:
            continue  # never forward through a host
        for l in out[u]:
            v = dst[l]
            if ok(l) and v not in dist:
                dist[v] = dist[u] + 1
                q.append(v)
    assert b in dist, f"host {d} unreachable from host {s}"

    def back(v):
        if v == a:
            return [[]]
        res = []
        for l in inc[v]:
            u = src[l]
            if ok(l) and dist.get(u, -9) == dist[v] - 1 and (u == a or not is_host[u]):
                res.extend(p + [l] for p in back(u))
        return res

    return back(b)


def node_seq(f, path):
    return (int(f.links.src[path[0]]),) + tuple(int(f.links.dst[l]) for l in path)


def compare_with_oracle(f, s, d, got):
    """``got`` (from Fabric.paths) lists every shortest node sequence of the oracle.

    Between a leaf and a spine joined by ``edge_par`` parallel links, paths() lists one path per
    uplink, going down the matching parallel link (baselines.md R-B: 32 paths = 16 spines x 2
    links), while the link graph has ``edge_par**2`` link-level variants per node sequence.
    """
    oracle = oracle_paths(f, s, d)
    oracle_set = {tuple(p) for p in oracle}
    assert all(tuple(p) in oracle_set for p in got), (s, d)
    groups = {}
    for p in got:
        groups.setdefault(node_seq(f, p), []).append(p)
    assert set(groups) == {node_seq(f, p) for p in oracle}, (s, d)
    par = f.routing.edge_par
    for seq, paths in groups.items():
        crosses = len(seq) > 3  # leaves the edge switch
        assert len(paths) == (par if crosses else 1), (s, d, seq)
        for column in zip(*paths):  # every parallel link is used exactly once
            assert len(set(column)) in (1, len(paths))


def check_path(f, s, d, path):
    """The path is a chain of links from host s to host d, up then down through the tiers."""
    src, dst = f.links.src, f.links.dst
    assert len(path) in (2, 4, 6)
    assert src[path[0]] == f.hosts[s] and dst[path[-1]] == f.hosts[d]
    for l1, l2 in zip(path, path[1:]):
        assert dst[l1] == src[l2]
    nodes = [int(src[path[0]])] + [int(dst[l]) for l in path]
    assert len(set(nodes)) == len(nodes)  # no loops
    rank = {T_HOST: 0, T_EDGE: 1, T_NVS: 1, T_AGG: 2, T_CORE: 3}
    ranks = [rank[int(f.nodes.tier[n])] for n in nodes]
    half = len(path) // 2
    assert ranks == list(range(half + 1)) + list(range(half - 1, -1, -1))


def route_list(routes, i):
    return routes.route_links[routes.route_ptr[i]:routes.route_ptr[i + 1]].tolist()


def expected_kind(f, s, d):
    if same_server(f, s, d):
        return 0
    e = f.routing.host_edge
    if e[s] == e[d]:
        return 1
    return 2 if f.routing.edge_pod[e[s]] == f.routing.edge_pod[e[d]] else 3


def degree(f):
    """Out-degree (= ports, links are duplex) of every node."""
    return np.bincount(f.links.src, minlength=f.n_nodes)


def tier_counts(f):
    return {t: f.count("switch", t) for t in ("edge", "agg", "core", "nvswitch")}


# --------------------------------------------------------------------------------------------
# Hash kernel
# --------------------------------------------------------------------------------------------

def test_splitmix64_reference_vectors():
    # Vigna's splitmix64: the first output from state 0, and from state 1234567.
    assert int(splitmix64(np.uint64(0))) == 0xE220A8397B1DCDAF
    assert int(splitmix64(np.uint64(1234567))) == 6457827717110365317


def test_flow_hash_definition():
    for seed, i in [(0, 0), (13, 5), (2**64 - 1, 123456)]:
        assert int(flow_hash(np.uint64(seed), np.int64(i))) == \
            int(splitmix64(np.uint64(int(splitmix64(np.uint64(seed))) ^ i)))


# --------------------------------------------------------------------------------------------
# Counts (baselines.md sections 2-4)
# --------------------------------------------------------------------------------------------

def test_fat_tree_k16_counts():
    f = ft1024()
    assert f.params["k"] == 16
    assert f.n_hosts == 1024 and f.count("gpu") == 1024 and f.count("server") == 0
    assert tier_counts(f) == dict(edge=128, agg=128, core=64, nvswitch=128)
    assert f.count("switch") == 320 + 128
    assert f.n_nodes == 1024 + 448
    # host-edge, edge-agg (128 x 8), agg-core (128 x 8), NVLink (1024), each duplex.
    assert f.n_links == 2 * (1024 + 128 * 8 + 128 * 8) + 2 * 1024 == 8192
    assert (f.links.kind == L_NVLINK).sum() == 2048
    # Every fabric switch has exactly k = 16 ports; every NVSwitch 8.
    deg = degree(f)
    assert (deg[switch_index(f, T_EDGE)] == 16).all()
    assert (deg[switch_index(f, T_AGG)] == 16).all()
    assert (deg[switch_index(f, T_CORE)] == 16).all()
    assert (deg[switch_index(f, T_NVS)] == 8).all()
    assert (deg[f.hosts] == 2).all()  # NIC + NVLink


def test_fat_tree_k16_wiring():
    f = ft1024()
    edges, aggs, cores = (switch_index(f, t) for t in (T_EDGE, T_AGG, T_CORE))
    e_of = {int(n): i for i, n in enumerate(edges)}
    a_of = {int(n): i for i, n in enumerate(aggs)}
    c_of = {int(n): i for i, n in enumerate(cores)}
    src, dst = f.links.src.tolist(), f.links.dst.tolist()
    host_edge = {}
    agg_core = set()
    edge_agg = set()
    for u, v in zip(src, dst):
        if f.nodes.tier[u] == T_HOST and v in e_of:
            host_edge[u] = e_of[v]
        elif u in e_of and v in a_of:
            edge_agg.add((e_of[u], a_of[v]))
        elif u in a_of and v in c_of:
            agg_core.add((a_of[u], c_of[v]))
    # Edge e carries hosts 8e .. 8e+7: edge = server.
    assert [host_edge[int(f.hosts[h])] for h in range(1024)] == [h // 8 for h in range(1024)]
    assert edge_agg == {(e, (e // 8) * 8 + a) for e in range(128) for a in range(8)}
    # Aggregation position a links to cores 8a .. 8a+7.
    assert agg_core == {(a, (a % 8) * 8 + j) for a in range(128) for j in range(8)}
    # Node attributes of hosts.
    h = np.arange(1024)
    assert (f.nodes.server[f.hosts] == h // 8).all()
    assert (f.nodes.rail[f.hosts] == h % 8).all()
    assert (f.nodes.pod[f.hosts] == h // 64).all()
    assert (f.nodes.pod[edges] == np.arange(128) // 8).all()
    assert (f.nodes.pod[aggs] == np.arange(128) // 8).all()
    assert (f.host_server == h // 8).all()


def test_links_are_duplex_pairs():
    for name in SMALL:
        f = small(name)
        fwd = sorted(zip(f.links.src.tolist(), f.links.dst.tolist(), f.links.kind.tolist()))
        rev = sorted(zip(f.links.dst.tolist(), f.links.src.tolist(), f.links.kind.tolist()))
        assert fwd == rev, name


@pytest.mark.parametrize("hosts,expected_k", [(16, 4), (17, 6), (128, 8), (129, 10), (250, 10),
                                              (251, 12), (1024, 16), (1025, 18)])
def test_fat_tree_default_k(hosts, expected_k):
    # Smallest even k >= 4 with k^3/4 >= hosts (server hosts: any host count).
    assert fat_tree(hosts, 100, host="server").params["k"] == expected_k


@pytest.mark.parametrize("hosts,expected_k", [(16, 4), (24, 4), (32, 8), (648, 12), (656, 16),
                                              (1024, 16)])
def test_fat_tree_default_k_3to1_ports(hosts, expected_k):
    # 3:1 by ports needs k % 4 == 0 (3k/4 host ports); capacity 3k^3/8: 24, 192, 648, 1536.
    assert fat_tree(hosts, 100, oversubscription=3).params["k"] == expected_k


def test_fat_tree_3to1_ports_1024():
    f = fab("fat_tree", 1024, 100, oversubscription=3)
    assert f.params["k"] == 16 and f.name == "fat_tree_3to1"
    # 1024 / 12 -> edges 0..85 used; 86 edges = 10 full pods + 6 edges of pod 10.
    assert tier_counts(f) == dict(edge=86, agg=11 * 4, core=32, nvswitch=128)
    assert f.n_links == 2 * (1024 + 86 * 4 + 44 * 8) + 2 * 1024
    deg = degree(f)
    edges = switch_index(f, T_EDGE)
    assert (deg[edges[:85]] == 16).all() and deg[edges[85]] == 4 + 4  # last edge: 4 hosts
    assert (deg[switch_index(f, T_CORE)] == 11).all()
    assert deg[switch_index(f, T_AGG)].max() == 16
    # Server 1 (GPUs 8..15) straddles edges 0 and 1.
    assert f.routing.host_edge[8:16].tolist() == [0] * 4 + [1] * 4
    assert len(f.paths(0, 7)) == 1 and len(f.paths(0, 7)[0]) == 2  # same server: NVLink
    assert len(f.paths(0, 11)) == 1  # same edge (GPUs 0..11), servers 0 and 1
    assert len(f.paths(0, 12)) == 4  # edge 1, same pod
    assert len(f.paths(0, 95)) == 4  # same pod (pod 0 = GPUs 0..95)
    assert len(f.paths(0, 96)) == 32  # pod 1
    assert len(f.paths(0, 1023)) == 32


def test_fat_tree_3to1_speed_1024():
    f = fab("fat_tree", 1024, 100, oversubscription=3, oversub_build="speed")
    ref = ft1024()
    assert f.params["k"] == 16
    assert tier_counts(f) == tier_counts(ref) and f.n_links == ref.n_links
    assert (f.links.src == ref.links.src).all() and (f.links.dst == ref.links.dst).all()
    host_link = (f.nodes.tier[f.links.src] == T_HOST) | (f.nodes.tier[f.links.dst] == T_HOST)
    switch_link = ~host_link
    assert np.allclose(f.links.capacity_bps[host_link & (f.links.kind == L_EPS)], 100e9)
    assert np.allclose(f.links.capacity_bps[switch_link], 100e9 / 3)
    assert switch_link.sum() == 2 * (1024 + 1024)
    assert len(f.paths(0, 8)) == 8 and len(f.paths(0, 64)) == 64


def test_fat_tree_server_hosts():
    f = fab("fat_tree", 128, 100, host="server")
    assert f.params["k"] == 8 and f.params["host"] == "server"
    assert f.count("server") == 128 and f.count("gpu") == 0
    assert tier_counts(f) == dict(edge=32, agg=32, core=16, nvswitch=0)
    assert (f.links.kind == L_NVLINK).sum() == 0
    assert f.n_links == 2 * (128 + 32 * 4 + 32 * 4)
    assert (degree(f)[f.hosts] == 1).all()
    assert (f.host_server == np.arange(128)).all()
    assert (f.routing.host_nvl_up == -1).all() and (f.routing.host_nvl_down == -1).all()
    assert (f.nodes.rail[f.hosts] == -1).all()


@pytest.mark.parametrize("hosts,k,edges,pods,cores", [
    (16, 8, 4, 1, 0),    # one pod: no core tier
    (20, 8, 5, 2, 16),   # second pod holds one edge, but all 4 of its aggs are built
    (24, 8, 6, 2, 16),
    (100, 8, 25, 7, 16),
    (3, 4, 2, 1, 0),
    (5, 4, 3, 2, 4),
])
def test_partial_fat_tree(hosts, k, edges, pods, cores):
    f = fat_tree(hosts, 100, k=k, host="server")
    assert tier_counts(f) == dict(edge=edges, agg=pods * k // 2, core=cores, nvswitch=0)
    assert f.n_links == 2 * (hosts + edges * k // 2 + (pods * k // 2 * k // 2 if cores else 0))
    assert f.routing.agg_up.shape == (pods * k // 2, k // 2 if cores else 0)
    if pods == 1:
        assert max(len(f.paths(0, d)) for d in range(1, hosts)) == k // 2


def test_rail_optimized_fat_tree_build():
    f = fab("rail", 128, 100)
    ref = ft1024()
    assert f.params["k"] == 16 and f.name == "rail_optimized"
    assert tier_counts(f) == tier_counts(ref) and f.n_links == ref.n_links == 8192
    assert sorted(degree(f).tolist()) == sorted(degree(ref).tolist())
    edges = switch_index(f, T_EDGE)
    g = np.arange(1024)
    server, rank = g // 8, g % 8
    pod = server // 8
    # GPU r of every server in pod p attaches to edge switch p*8 + r, a rail-r switch.
    attach = f.links.dst[f.routing.host_up]
    assert (attach == edges[pod * 8 + rank]).all()
    assert (f.links.src[f.routing.host_up] == f.hosts).all()
    assert (f.nodes.rail[edges] == np.arange(128) % 8).all()
    assert (f.nodes.rail[f.hosts] == rank).all()
    assert (f.nodes.rail[attach] == f.nodes.rail[f.hosts]).all()
    assert (f.nodes.pod[f.hosts] == pod).all()
    # Same rail, same pod: 1 path; cross rail in pod: 8; across pods: 64; same server: NVLink.
    assert len(f.paths(0, 8)) == 1 and expected_kind(f, 0, 8) == 1
    assert len(f.paths(0, 9)) == 8
    assert len(f.paths(0, 64)) == 64 and len(f.paths(0, 64 + 8 + 1)) == 64
    assert f.paths(0, 1) == [[int(f.routing.host_nvl_up[0]), int(f.routing.host_nvl_down[1])]]


def test_rail_optimized_superpod_build():
    f = fab("rail", 128, 100, build="superpod")
    # R-B: 4 groups of 32 servers; 32 leaves, 16 spines, no core; 2 links from each leaf to each spine.
    assert tier_counts(f) == dict(edge=32, agg=16, core=0, nvswitch=128)
    assert f.count("switch") - f.count("switch", "nvswitch") == 48
    leaves, spines = switch_index(f, T_EDGE), switch_index(f, T_AGG)
    ls = (np.isin(f.links.src, leaves) & np.isin(f.links.dst, spines))
    assert ls.sum() == 1024  # 1024 leaf-spine cables: 2048 directed links
    assert (ls | (np.isin(f.links.src, spines) & np.isin(f.links.dst, leaves))).sum() == 2048
    pairs = np.bincount(f.links.src[ls] * f.n_nodes + f.links.dst[ls])
    assert set(pairs[pairs > 0].tolist()) == {2} and (pairs > 0).sum() == 32 * 16
    assert f.n_links == 2 * (1024 + 1024 + 1024)
    deg = degree(f)
    assert (deg[leaves] == 64).all() and (deg[spines] == 64).all()
    g = np.arange(1024)
    server, rank = g // 8, g % 8
    assert (f.links.dst[f.routing.host_up] == leaves[(server // 32) * 8 + rank]).all()
    assert (f.nodes.rail[leaves] == np.arange(32) % 8).all()
    # Same leaf 1 path (2 links); otherwise 32 paths of 4 links; same server NVLink.
    assert len(f.paths(0, 8)) == 1 and len(f.paths(0, 31 * 8)) == 1
    for d in (9, 32 * 8, 32 * 8 + 1, 1023):
        p = f.paths(0, d)
        assert len(p) == 32 and {len(x) for x in p} == {4}
        assert len({tuple(x) for x in p}) == 32
    assert len(f.paths(0, 7)) == 1 and len(f.paths(0, 7)[0]) == 2


def test_capacities_and_delays_default():
    f = ft1024()
    eps = f.links.kind == L_EPS
    nvl = f.links.kind == L_NVLINK
    assert (f.links.capacity_bps[eps] == 100 * 1e9).all()
    assert NVLINK_DEFAULT_GBPS * 1e9 == pytest.approx(NVLINK_BPS, rel=1e-12)
    assert f.links.capacity_bps[nvl] == pytest.approx(NVLINK_BPS, rel=1e-12)
    assert LINK_DELAY_DEFAULT_PS == 1_000_000
    assert (f.links.delay_ps[eps] == 1_000_000).all()
    assert (f.links.delay_ps[nvl] == 0).all()
    assert f.links.capacity_bps.dtype == np.float64 and f.links.delay_ps.dtype == np.int64
    # NVLink links join a GPU and its server's NVSwitch.
    gpu_end = np.where(f.nodes.tier[f.links.src[nvl]] == T_HOST, f.links.src[nvl], f.links.dst[nvl])
    nvs_end = np.where(f.nodes.tier[f.links.src[nvl]] == T_HOST, f.links.dst[nvl], f.links.src[nvl])
    assert (f.nodes.tier[nvs_end] == T_NVS).all()
    assert (f.nodes.server[gpu_end] == f.nodes.server[nvs_end]).all()


def test_capacities_and_delays_custom():
    f = fat_tree(16, 400, k=4, nvlink_gbps=900 * 8, link_delay_ps=20_000, nvlink_delay_ps=5)
    eps = f.links.kind == L_EPS
    assert (f.links.capacity_bps[eps] == 400e9).all()
    assert (f.links.capacity_bps[~eps] == 7200e9).all()
    assert (f.links.delay_ps[eps] == 20_000).all() and (f.links.delay_ps[~eps] == 5).all()
    r = rail_optimized(4, 200, 4, build="superpod", servers_per_leaf=4, spines=2,
                       link_delay_ps=7)
    eps = r.links.kind == L_EPS
    assert (r.links.capacity_bps[eps] == 200e9).all() and (r.links.delay_ps[eps] == 7).all()


def test_link_state_is_a_writable_copy():
    f = small("ft_k4_gpu")
    before = f.links.capacity_bps.copy()
    s1 = f.link_state()
    assert s1.dtype == np.float64 and s1.shape == (f.n_links,) and s1.flags.writeable
    assert (s1 == before).all()
    s1[:] = 0.0
    assert (f.links.capacity_bps == before).all()
    s2 = f.link_state()
    assert (s2 == before).all() and not np.shares_memory(s1, s2)


def test_params_and_summary():
    f = fab("fat_tree", 1024, 100, oversubscription=3)
    p = json.loads(json.dumps(f.params))
    assert p["builder"] == "fat_tree" and p["k"] == 16 and p["oversubscription"] == 3.0
    assert p["oversub_build"] == "ports" and p["hosts"] == 1024
    assert "1024 gpu hosts" in f.summary()
    r = fab("rail", 128, 100, build="superpod")
    p = json.loads(json.dumps(r.params))
    assert p["build"] == "superpod" and p["servers_per_leaf"] == 32 and p["spines"] == 16


# --------------------------------------------------------------------------------------------
# Paths: all host pairs on small fabrics, against a BFS oracle
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SMALL))
def test_paths_all_pairs(name):
    f = small(name)
    _, _, U, V = SMALL[name]
    n = f.n_hosts
    counts = {0: 0, 1: 0, 2: 0, 3: 0}
    for s in range(n):
        for d in range(n):
            if s == d:
                assert f.paths(s, d) == [[]]
                continue
            got = f.paths(s, d)
            kind = expected_kind(f, s, d)
            counts[kind] += 1
            assert len(got) == {0: 1, 1: 1, 2: U, 3: U * V}[kind], (s, d)
            assert {len(p) for p in got} == {(2, 2, 4, 6)[kind]}
            assert len({tuple(p) for p in got}) == len(got)  # distinct
            for p in got:
                check_path(f, s, d, p)
            if kind == 0:
                assert all(f.links.kind[l] == L_NVLINK for l in got[0])
            else:
                assert all(f.links.kind[l] == L_EPS for p in got for l in p)
            compare_with_oracle(f, s, d, got)
    # Core paths exist exactly when the fabric has a core tier.
    assert (counts[3] > 0) == (V > 0)


# --------------------------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------------------------

def all_pairs(n):
    s, d = np.divmod(np.arange(n * n), n)
    keep = s != d
    return s[keep], d[keep]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_route_picks_a_listed_path(name):
    f = small(name)
    src, dst = all_pairs(f.n_hosts)
    r = f.route(src, dst, seed=13)
    assert r.route_ptr.dtype == np.int64 and r.route_links.dtype == np.int64
    assert r.path_kind.dtype == np.int8
    assert r.route_ptr.shape == (src.size + 1,) and r.route_ptr[0] == 0
    assert r.route_ptr[-1] == r.route_links.size and (np.diff(r.route_ptr) > 0).all()
    for i in range(src.size):
        s, d = int(src[i]), int(dst[i])
        path = route_list(r, i)
        assert path in f.paths(s, d), (s, d)
        assert r.path_kind[i] == expected_kind(f, s, d)
        assert len(path) == (2, 2, 4, 6)[r.path_kind[i]]


def test_route_uses_documented_hash():
    f = small("ft_k8_gpu")  # U = V = 4
    src, dst = all_pairs(f.n_hosts)
    seed = 99
    r = f.route(src, dst, seed=seed)
    ro = f.routing
    for i in np.flatnonzero(r.path_kind >= 2)[:500]:
        h = int(flow_hash(np.uint64(seed), np.int64(i)))
        u, v = h % 4, (h // 4) % 4
        path = route_list(r, i)
        assert path[1] == ro.edge_up[ro.host_edge[src[i]], u]
        if r.path_kind[i] == 3:
            a = ro.edge_pod[ro.host_edge[src[i]]] * 4 + u
            assert path[2] == ro.agg_up[a, v]


def test_route_deterministic_and_seed_dependent():
    f = ft1024()
    rng = np.random.default_rng(0)
    src = rng.integers(0, 1024, 5000)
    dst = (src + rng.integers(64, 1024 - 64, 5000)) % 1024  # always another pod
    r1, r2 = f.route(src, dst, seed=7), f.route(src.tolist(), dst.tolist(), seed=7)
    for a, b in zip(r1, r2):
        assert (a == b).all()
    r3 = f.route(src, dst, seed=8)
    assert (r3.route_ptr == r1.route_ptr).all() and (r3.path_kind == r1.path_kind).all()
    assert (r1.path_kind == 3).all()
    differ = (r1.route_links != r3.route_links).reshape(-1, 6).any(axis=1)
    assert 0.9 < differ.mean() < 1.0  # 63/64 expected
    # The hash reads the seed modulo 2**64.
    r4, r5 = f.route(src, dst, seed=-1), f.route(src, dst, seed=2**64 - 1)
    assert (r4.route_links == r5.route_links).all()
    # Membership on the 1024-GPU fabric (sampled).
    for i in range(0, 5000, 25):
        assert route_list(r1, i) in f.paths(int(src[i]), int(dst[i]))


def test_route_kinds_on_k16():
    f = ft1024()
    src = np.array([0, 0, 0, 0, 1023])
    dst = np.array([7, 8, 63, 64, 0])
    r = f.route(src, dst)
    assert r.path_kind.tolist() == [0, 2, 2, 3, 3]
    assert PATH_KINDS[:4] == ("nvlink", "tor", "pod", "core")
    assert np.diff(r.route_ptr).tolist() == [2, 4, 4, 6, 6]
    # TOR paths: same edge, different server (3:1 build, servers straddle edges).
    f3 = fab("fat_tree", 1024, 100, oversubscription=3)
    r = f3.route(np.array([7, 8]), np.array([8, 11]))
    assert r.path_kind.tolist() == [1, 0]


def test_route_empty():
    r = small("ft_k4_gpu").route(np.array([], np.int64), np.array([], np.int64))
    assert r.route_ptr.tolist() == [0] and r.route_links.size == 0 and r.path_kind.size == 0


def test_ecmp_spreads_evenly_over_core():
    f = fab("fat_tree", 128, 100, host="server")  # k = 8: 4 x 4 paths across pods
    src, dst = all_pairs(128)
    r = f.route(src, dst, seed=13)
    core = r.path_kind == 3
    assert core.sum() == 128 * 112  # pods of 16 hosts
    starts = r.route_ptr[:-1][core]
    agg_core = r.route_links[starts + 2]  # aggregation -> core uplink of each flow
    edge_agg = r.route_links[starts + 1]
    for used, n_links in ((agg_core, 32 * 4), (edge_agg, 32 * 4)):
        load = np.bincount(used, minlength=f.n_links)[np.unique(used)]
        assert load.size == n_links
        expected = used.size / n_links  # 112
        chi2 = ((load - expected) ** 2 / expected).sum()
        # Chi-square with df = 127: mean 127, sd ~16; a loose bound.
        assert chi2 < 127 + 8 * 16, chi2
        assert load.min() > 0.6 * expected and load.max() < 1.4 * expected
    # Core switches are used evenly.
    core_node = f.links.dst[agg_core]
    per_core = np.bincount(core_node)[switch_index(f, T_CORE)]
    assert per_core.min() > 0.8 * per_core.mean() and per_core.max() < 1.2 * per_core.mean()


# --------------------------------------------------------------------------------------------
# Properties (hypothesis)
# --------------------------------------------------------------------------------------------

@st.composite
def fat_tree_args(draw):
    mode = draw(st.sampled_from(["nb", "ports", "speed"]))
    host = draw(st.sampled_from(["gpu", "server"]))
    if mode == "ports":
        k = draw(st.sampled_from([4, 8]))
        d = 3 * k // 4
    else:
        k = draw(st.sampled_from([4, 6, 8]))
        d = k // 2
    g = draw(st.sampled_from([1, 2, 4])) if host == "gpu" else 1
    cap = d * k * k // 2
    hosts = draw(st.integers(max(2, g), cap)) // g * g
    kwargs = dict(k=k, host=host, gpus_per_server=g)
    if mode != "nb":
        kwargs.update(oversubscription=3, oversub_build=mode)
    return hosts, kwargs, d


@PROPS
@given(fat_tree_args(), st.integers(0, 2**32), st.data())
def test_fat_tree_structure_property(args, seed, data):
    hosts, kwargs, d = args
    k = kwargs["k"]
    f = fat_tree(hosts, 50, **kwargs)
    by_ports = kwargs.get("oversub_build") == "ports"
    up = k - d if by_ports else k // 2  # aggs per pod = edge uplinks
    edges = -(-hosts // d)
    pods = -(-edges // (k // 2))
    cores = up * k // 2 if pods > 1 else 0
    g = kwargs["gpus_per_server"]
    nvs = hosts // g if kwargs["host"] == "gpu" and g > 1 else 0
    assert tier_counts(f) == dict(edge=edges, agg=pods * up, core=cores, nvswitch=nvs)
    assert f.n_links == 2 * (hosts + edges * up + (pods * up * k // 2 if cores else 0) + nvs * g)
    deg = degree(f)
    fabric_sw = (f.nodes.kind == SWITCH) & (f.nodes.tier != T_NVS)
    assert deg[fabric_sw].max() <= k  # radix respected
    # Routes of random flows are listed paths of the right kind.
    n = data.draw(st.integers(1, 40))
    src = np.array(data.draw(st.lists(st.integers(0, hosts - 1), min_size=n, max_size=n)))
    off = np.array(data.draw(st.lists(st.integers(1, hosts - 1), min_size=n, max_size=n)))
    dst = (src + off) % hosts
    r = f.route(src, dst, seed=seed)
    for i in range(n):
        s, t = int(src[i]), int(dst[i])
        assert route_list(r, i) in f.paths(s, t)
        assert r.path_kind[i] == expected_kind(f, s, t)


@PROPS
@given(st.sampled_from(sorted(SMALL)), st.integers(-2**63, 2**64 - 1),
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 10**6)), min_size=1, max_size=60))
def test_route_property(name, seed, flows):
    f = small(name)
    n = f.n_hosts
    src = np.array([a % n for a, _ in flows])
    dst = (src + np.array([b % (n - 1) + 1 for _, b in flows])) % n
    r = f.route(src, dst, seed=seed)
    again = f.route(src, dst, seed=seed)
    assert (r.route_links == again.route_links).all()
    # Routing a prefix gives the same routes for those flows (choice depends on (seed, i) only).
    m = len(flows) // 2
    if m:
        pre = f.route(src[:m], dst[:m], seed=seed)
        assert (pre.route_links == r.route_links[:r.route_ptr[m]]).all()
    for i in range(len(flows)):
        assert route_list(r, i) in f.paths(int(src[i]), int(dst[i]))


@PROPS
@given(st.integers(1, 12), st.sampled_from([1, 2, 4]), st.data())
def test_rail_superpod_property(servers, g, data):
    spines = data.draw(st.sampled_from([1, 2, 4]))
    spl = spines * data.draw(st.integers(1, 2))
    if servers * g < 2:
        servers = 2
    f = rail_optimized(servers, 10, g, build="superpod", servers_per_leaf=spl, spines=spines)
    groups = -(-servers // spl)
    leaves = groups * g  # every rail of every group has a leaf
    assert tier_counts(f) == dict(edge=leaves, agg=spines, core=0, nvswitch=servers if g > 1 else 0)
    h = np.arange(servers * g)
    assert (f.routing.host_edge == (h // g // spl) * g + h % g).all()
    # Leaves: one port per server of their group, spl uplinks (spl // spines to each spine).
    deg = degree(f)
    in_group = np.minimum(spl, servers - np.arange(groups) * spl)
    assert (deg[switch_index(f, T_EDGE)] == np.repeat(in_group, g) + spl).all()
    assert (deg[switch_index(f, T_AGG)] == leaves * (spl // spines)).all()
    s = data.draw(st.integers(0, servers * g - 1))
    d = data.draw(st.integers(0, servers * g - 1).filter(lambda x: x != s))
    kind = expected_kind(f, s, d)
    assert kind in (0, 1, 2)
    assert len(f.paths(s, d)) == (1 if kind < 2 else spl)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call,field", [
    (lambda: fat_tree(16, 100, k=5), "fabric.k"),
    (lambda: fat_tree(16, 100, k=2), "fabric.k"),
    (lambda: fat_tree(16, 100, k=8.0), "fabric.k"),
    (lambda: fat_tree(1024, 100, k=8), "fabric.hosts"),
    (lambda: fat_tree(17, 100, k=4, host="server"), "fabric.hosts"),
    (lambda: fat_tree(200, 100, k=8, oversubscription=3), "fabric.hosts"),
    (lambda: fat_tree(12, 100), "fabric.hosts"),
    (lambda: fat_tree(1, 100, host="server"), "fabric.hosts"),
    (lambda: fat_tree(16.0, 100), "fabric.hosts"),
    (lambda: fat_tree(16, 100, oversubscription=0.5), "fabric.oversubscription"),
    (lambda: fat_tree(16, 100, oversubscription=float("nan")), "fabric.oversubscription"),
    (lambda: fat_tree(16, 100, oversubscription=3, k=10), "fabric.k"),
    (lambda: fat_tree(16, 100, oversubscription=3, oversub_build="bogus"), "fabric.oversub_build"),
    (lambda: fat_tree(16, 100, host="tpu"), "fabric.host"),
    (lambda: fat_tree(16, -100), "fabric.link_gbps"),
    (lambda: fat_tree(16, 0), "fabric.link_gbps"),
    (lambda: fat_tree(16, float("inf")), "fabric.link_gbps"),
    (lambda: fat_tree(16, 100, gpus_per_server=0), "fabric.gpus_per_server"),
    (lambda: fat_tree(16, 100, nvlink_gbps=-1), "fabric.nvlink_gbps"),
    (lambda: fat_tree(16, 100, link_delay_ps=-1), "fabric.link_delay_ps"),
    (lambda: fat_tree(16, 100, link_delay_ps=1.5), "fabric.link_delay_ps"),
    (lambda: fat_tree(16, 100, nvlink_delay_ps=-5), "fabric.nvlink_delay_ps"),
    (lambda: fat_tree(16, 100, nvlink_delay_ps=1.5), "fabric.nvlink_delay_ps"),
    (lambda: rail_optimized(2, 100, nvlink_delay_ps=-5), "fabric.nvlink_delay_ps"),
    (lambda: rail_optimized(0, 100), "fabric.servers"),
    (lambda: rail_optimized(1, 100, 1), "fabric.servers"),
    (lambda: rail_optimized(8, 100, build="clos"), "fabric.build"),
    (lambda: rail_optimized(8, 100, build="superpod", spines=5), "fabric.spines"),
    (lambda: rail_optimized(8, 100, build="superpod", servers_per_leaf=0), "fabric.servers_per_leaf"),
    (lambda: rail_optimized(8, -1), "fabric.link_gbps"),
])
def test_config_errors(call, field):
    with pytest.raises(ConfigError) as exc:
        call()
    assert exc.value.field == field
    assert str(exc.value).startswith(field + ": ")
    assert isinstance(exc.value, ValueError)


@pytest.mark.parametrize("src,dst,field", [
    ([0, 3], [1, 3], "src/dst"),
    ([0], [16], "dst"),
    ([-1], [2], "src"),
    ([16], [2], "src"),
    ([0, 1], [2], "src/dst"),
    ([[0, 1]], [[2, 3]], "src/dst"),
])
def test_route_input_errors(src, dst, field):
    f = small("ft_k4_gpu")
    with pytest.raises(ConfigError) as exc:
        f.route(np.array(src), np.array(dst))
    assert exc.value.field == field
    if len(src) == len(dst) == 2:
        assert "flow 1" in exc.value.message


def test_k_search_gives_up_with_a_clear_error():
    """A ports-build ratio that no even k can split must not hang the default-k search."""
    import math

    with pytest.raises(ConfigError) as err:
        fat_tree(16, 100, oversubscription=math.pi)
    assert err.value.field == "fabric.oversubscription"


def test_rail_fat_tree_build_rejects_more_servers_than_k_holds():
    with pytest.raises(ConfigError) as err:
        rail_optimized(129, 100)
    assert err.value.field == "fabric.servers"
    assert rail_optimized(128, 100).n_hosts == 1024
