"""The ``nic_pooling`` readings of every fabric builder: pooled NICs against one NIC per flow.

Completion times are written by hand from the link speeds (the flow engine has no propagation
delay: a flow of ``X`` bytes alone on a path of rate ``R`` finishes at ``8 X / R``). Two servers
of 8 GPUs, ``B = 100`` Gbit/s, ``X = 10**6`` bytes, so ``T = 8 X / B = 80 us`` is one flow's time
on one NIC.
"""

from __future__ import annotations

import numpy as np
import pytest

from fabricsim import simulate_flows
from fabricsim.cost import bom_from_fabric
from fabricsim.engine import FlowSession
from fabricsim.errors import ConfigError
from fabricsim.fabric import LINK_KINDS, NIC_POOLING, NODE_KINDS, fat_tree, rail_optimized
from fabricsim.kernels import flowsim
from fabricsim.mixnet import mixnet, reconfiguration_events
from fabricsim.ocs.controller import make_controller
from fabricsim.runner import run_iteration
from fabricsim.topoopt import link_counts, topoopt
from fabricsim.workload import WorkloadConfig, build_iteration

B_GBPS = 100
B = B_GBPS * 1e9
X = 10**6
T = 80_000_000  # ps: X bytes at B
OCS, NVLINK = LINK_KINDS.index("ocs"), LINK_KINDS.index("nvlink")
SERVER = NODE_KINDS.index("server")


def finish(fabric, src, dst, size=X, **kw):
    src = np.asarray(src)
    r = simulate_flows(fabric, src, np.asarray(dst), np.full(src.size, size), tolerance=0.0, **kw)
    assert r.status == "done"
    return r


def two_server_mixnet(circuits, **kw):
    """Two servers in one region, alpha 6, ``circuits`` circuits between them."""
    c = np.array([[[0, circuits], [circuits, 0]]])
    return mixnet(2, B_GBPS, alpha=6, region_servers=2, circuits=c, **kw)


# --------------------------------------------------------------------------------------------
# Two servers: incast and a skewed sender, closed forms
# --------------------------------------------------------------------------------------------

INCAST = (np.arange(8), np.full(8, 8))  # every GPU of server 0 -> GPU 0 of server 1
SKEWED = (np.zeros(8, np.int64), np.arange(8, 16))  # GPU 0 -> every GPU of server 1


@pytest.mark.parametrize("name, build, incast_ps, skewed_ps", [
    # one NIC per GPU: the incast shares the destination NIC, the skewed sender its own NIC
    ("fat-tree per-nic", lambda: fat_tree(16, B_GBPS, nic_pooling="per-nic"), 8 * T, 8 * T),
    ("fat-tree released", lambda: fat_tree(16, B_GBPS), 8 * T, 8 * T),
    # pooled: server 1's 8 B link carries the incast, server 0's the skewed sender: B per flow
    ("fat-tree pooled", lambda: fat_tree(16, B_GBPS, nic_pooling="pooled"), T, T),
    ("3:1 fat-tree pooled", lambda: fat_tree(16, B_GBPS, oversubscription=3, nic_pooling="pooled"),
     T, T),
    # rail-optimized, one NIC per GPU: as the fat-tree
    ("rail per-nic", lambda: rail_optimized(2, B_GBPS, nic_pooling="per-nic"), 8 * T, 8 * T),
    # PXN: the incast to rank 0 leaves through GPU (0, 0)'s NIC (8 flows on one B); the skewed
    # sender's flow to rank j leaves through GPU (0, j)'s NIC, on rail j's edge switch: B each
    ("rail pooled (PXN)", lambda: rail_optimized(2, B_GBPS, nic_pooling="pooled"), 8 * T, T),
    # MixNet, 3 circuits merged: 8 flows share 3 B
    ("mixnet pooled", lambda: two_server_mixnet(3, nic_pooling="pooled"), 8 * T / 3, 8 * T / 3),
])
def test_two_server_incast_and_skewed_sender(name, build, incast_ps, skewed_ps):
    f = build()
    for (src, dst), want in ((INCAST, incast_ps), (SKEWED, skewed_ps)):
        got = finish(f, src, dst).finish_ps
        assert np.all(np.abs(got - want) <= 2), (name, got, want)


def test_one_flow_gets_the_pool_or_one_nic():
    """One GPU pair across servers: G x B pooled, B per NIC; on MixNet c x B on the aggregate
    circuits, B on one circuit; on the EPS (8 - alpha) x B or B; TopoOpt c x B or B."""
    one = ([0], [9])
    assert finish(fat_tree(16, B_GBPS, nic_pooling="pooled"), *one).finish_ps[0] == T // 8
    assert finish(fat_tree(16, B_GBPS, nic_pooling="per-nic"), *one).finish_ps[0] == T
    assert finish(rail_optimized(2, B_GBPS, nic_pooling="pooled"), *one).finish_ps[0] == T
    assert abs(finish(two_server_mixnet(3), *one).finish_ps[0] - T / 3) <= 1
    assert finish(two_server_mixnet(3, nic_pooling="per-nic"), *one).finish_ps[0] == T
    # no circuit: the EPS, 2 B per server, or one EPS NIC of B
    assert finish(two_server_mixnet(0), *one).finish_ps[0] == T // 2
    assert finish(two_server_mixnet(0, nic_pooling="per-nic"), *one).finish_ps[0] == T
    # TopoOpt with 2 servers of degree 4: 4 parallel links between them
    merged = topoopt(2, B_GBPS, degree=4)
    apart = topoopt(2, B_GBPS, degree=4, nic_pooling="per-nic")
    assert link_counts(merged)[0, 1] == link_counts(apart)[0, 1] == 4
    assert finish(merged, *one).finish_ps[0] == T // 4
    assert finish(apart, *one).finish_ps[0] == T
    # per NIC, the flows of the pair spread over its 4 links by a seeded hash, and a flow
    # finishes at (flows on its link) x T; merged, 8 X bytes share 4 B
    src, dst = np.arange(8), np.arange(8, 16)
    r = finish(apart, src, dst)
    first = r.routes.route_links[r.routes.route_ptr[:-1]]
    _, which, count = np.unique(first, return_inverse=True, return_counts=True)
    assert np.array_equal(r.finish_ps, count[which] * T)
    assert np.all(finish(merged, src, dst).finish_ps == 2 * T)
    every = apart.route(np.repeat(np.arange(8), 8), np.tile(np.arange(8, 16), 8), seed=3)
    assert set(every.route_links.tolist()) == {p[0] for p in apart.paths(0, 8)}
    assert len(apart.paths(0, 8)) == 4


def circuit_of(fabric, routes, flow):
    """The per-NIC circuit index (0 .. alpha - 1) flow ``flow`` takes between servers 0 and 1."""
    link = int(routes.route_links[routes.route_ptr[flow]])
    k = np.flatnonzero(fabric.routing.ocs_nic_link[0, 1] == link)
    if k.size == 0:  # the 1 -> 0 direction
        k = np.flatnonzero(fabric.routing.ocs_nic_link[1, 0] == link)
    return int(k[0])


def seed_where(fabric, src, dst, want):
    """The first ECMP seed whose circuit choices make ``want(choices)`` true."""
    for seed in range(200):
        r = fabric.route(np.asarray(src), np.asarray(dst), seed=seed)
        choice = [circuit_of(fabric, r, i) for i in range(len(src))]
        if want(choice):
            return seed, choice
    raise AssertionError("no seed in 0 .. 199 gives the wanted circuit choice")


@pytest.mark.parametrize("c", [2, 3, 6])
def test_per_nic_circuits(c):
    """c circuits between two servers: one flow gets B; c flows on distinct circuits c x B;
    two flows on one circuit share its B. The aggregate reading gives one flow c x B."""
    f = two_server_mixnet(c, nic_pooling="per-nic")
    assert f.params["ocs"] == "nic" and f.params["eps"] == "nic"
    links, caps = f.routing.capacities()
    assert np.array_equal(np.sort(links), np.flatnonzero(f.links.kind == OCS))
    assert sorted(caps.tolist()) == [0.0] * 2 * (6 - c) + [B] * 2 * c  # alpha links per pair
    src, dst = np.arange(c), np.arange(8, 8 + c)
    seed, _ = seed_where(f, src, dst, lambda ch: len(set(ch)) == c)
    r = finish(f, src, dst, seed=seed)
    assert np.all(r.finish_ps == T)  # c X bytes in T: c x B together
    seed, choice = seed_where(f, [0, 1], [8, 9], lambda ch: ch[0] == ch[1])
    assert np.all(finish(f, [0, 1], [8, 9], seed=seed).finish_ps == 2 * T)
    # the hash spreads flows over every circuit, and only over the pair's c circuits
    r = f.route(np.repeat(np.arange(8), 8), np.tile(np.arange(8, 16), 8), seed=1)
    used = {circuit_of(f, r, i) for i in range(64)}
    assert used == set(range(c))
    agg = two_server_mixnet(c)
    assert abs(finish(agg, [0], [8]).finish_ps[0] - T / c) <= 1
    assert np.all(np.abs(finish(agg, src, dst).finish_ps - T) <= 1)  # c flows share c x B


def test_per_nic_incast_on_circuits_follows_the_hash():
    """8 flows into one GPU over 3 per-NIC circuits: each circuit carries its flows at B, so a
    flow on a circuit with n flows finishes at n T (whatever the hash chose)."""
    f = two_server_mixnet(3, nic_pooling="per-nic")
    r = finish(f, *INCAST)
    choice = np.array([circuit_of(f, r.routes, i) for i in range(8)])
    per_circuit = np.bincount(choice, minlength=3)
    assert np.array_equal(r.finish_ps, per_circuit[choice] * T)


# --------------------------------------------------------------------------------------------
# MixNet re-configuration and the runner with per-NIC circuits
# --------------------------------------------------------------------------------------------

def test_reconfiguration_of_per_nic_circuits():
    """1 -> 3 circuits between servers 0 and 1: hold="changed" holds only the two new circuits
    (their four directed links); at the end the pair has 3 links at B and 3 at 0."""
    f = two_server_mixnet(1, nic_pooling="per-nic")
    old, new = np.array([[0, 1], [1, 0]]), np.array([[0, 3], [3, 0]])
    slots = f.routing.ocs_nic_link
    ev = reconfiguration_events(f, 0, old, new, 5, 10, hold="changed")
    held = sorted(ev.link[ev.time_ps == 5].tolist())
    assert held == sorted([int(slots[0, 1, k]) for k in (1, 2)] + [int(slots[1, 0, k]) for k in (1, 2)])
    end = dict(zip(ev.link[ev.time_ps == 15].tolist(), ev.capacity_bps[ev.time_ps == 15].tolist()))
    assert end == {int(slots[a, b, k]): (B if k < 3 else 0.0) for a, b in ((0, 1), (1, 0))
                   for k in range(6)}
    # a flow on the kept circuit (routed under the old configuration: circuit 0) runs through
    # the re-wiring with hold="changed", and is held for the 10 ps with hold="region"
    assert finish(f, [0], [8], capacity_events=ev, circuits=old[None]).finish_ps[0] == T
    ev = reconfiguration_events(f, 0, old, new, 5, 10, hold="region")
    assert (ev.time_ps == 5).sum() == 12  # every circuit link of the region
    assert finish(f, [0], [8], capacity_events=ev, circuits=old[None]).finish_ps[0] == T + 10


@pytest.mark.parametrize("pooling", NIC_POOLING)
def test_runner_with_a_controller_on_every_mixnet_reading(pooling):
    cfg = WorkloadConfig(model="mixtral-8x7b", gpus=16, tp=2, ep=8, pp=1, dp=1, micro_batch=1,
                         seq_len=256, micro_batches=2)
    g = build_iteration(cfg)
    fab = mixnet(2, B_GBPS, region_servers=2, nic_pooling=pooling)
    r = run_iteration(g, fab, controller=make_controller("oracle-blocking", delay_ms=1))
    assert r.iteration_time_ps >= g.critical_path_ps() + 10**9  # at least one 1 ms re-wiring
    assert np.all(r.finish_ps >= r.start_ps) and len(r.ocs_records) > 0


@pytest.mark.parametrize("build", [
    lambda p: fat_tree(16, B_GBPS, gpus_per_server=8, nic_pooling=p),
    lambda p: rail_optimized(2, B_GBPS, nic_pooling=p),
    lambda p: topoopt(2, B_GBPS, degree=4, nic_pooling=p),
])
def test_runner_on_every_reading(build):
    cfg = WorkloadConfig(model="mixtral-8x7b", gpus=16, tp=2, ep=8, pp=1, dp=1, micro_batch=1,
                         seq_len=256, micro_batches=2)
    g = build_iteration(cfg)
    times = {p: run_iteration(g, build(p)).iteration_time_ps for p in NIC_POOLING}
    assert all(t >= g.critical_path_ps() for t in times.values())


# --------------------------------------------------------------------------------------------
# Every variant: bytes delivered, capacities respected, routes are paths
# --------------------------------------------------------------------------------------------

VARIANTS = {
    "fat_tree/released": lambda: fat_tree(16, B_GBPS, gpus_per_server=4),
    "fat_tree/pooled": lambda: fat_tree(16, B_GBPS, gpus_per_server=4, nic_pooling="pooled"),
    "fat_tree_3to1/pooled": lambda: fat_tree(48, B_GBPS, gpus_per_server=4, oversubscription=3,
                                             nic_pooling="pooled"),
    "fat_tree_speed/pooled": lambda: fat_tree(16, B_GBPS, gpus_per_server=4, oversubscription=3,
                                              oversub_build="speed", nic_pooling="pooled"),
    "rail/per-nic": lambda: rail_optimized(4, B_GBPS, gpus_per_server=4, nic_pooling="per-nic"),
    "rail/pooled": lambda: rail_optimized(4, B_GBPS, gpus_per_server=4, nic_pooling="pooled"),
    "rail_superpod/pooled": lambda: rail_optimized(4, B_GBPS, gpus_per_server=4, build="superpod",
                                                   servers_per_leaf=2, spines=2,
                                                   nic_pooling="pooled"),
    "mixnet/pooled": lambda: mixnet(4, B_GBPS, gpus_per_server=4, alpha=2, region_servers=2,
                                    nic_pooling="pooled"),
    "mixnet/per-nic": lambda: mixnet(4, B_GBPS, gpus_per_server=4, alpha=2, region_servers=4,
                                     nic_pooling="per-nic"),
    "mixnet/ocs-nic-only": lambda: mixnet(4, B_GBPS, gpus_per_server=4, alpha=3, ocs="nic"),
    "topoopt/pooled": lambda: topoopt(4, B_GBPS, gpus_per_server=4, degree=4, nic_pooling="pooled"),
    "topoopt/per-nic": lambda: topoopt(4, B_GBPS, gpus_per_server=4, degree=4,
                                       nic_pooling="per-nic"),
}


def check_route(f, s, d, route):
    """``route`` (link ids) is a path between GPUs ``s`` and ``d``: links joined end to end,
    from a node of ``s``'s server (the GPU, its server node, NIC or PXN relay GPU) to one of
    ``d``'s, through NVLink only inside a server; and one of the fabric's paths."""
    lk, nd = f.links, f.nodes
    server = f.host_server
    assert len(route) >= 1
    assert np.all(lk.dst[route[:-1]] == lk.src[route[1:]])
    assert nd.server[lk.src[route[0]]] == server[s] and nd.server[lk.dst[route[-1]]] == server[d]
    if server[s] == server[d]:
        assert lk.src[route[0]] == f.hosts[s] and lk.dst[route[-1]] == f.hosts[d]
        assert np.all(lk.kind[route] == NVLINK)
    else:
        assert not np.any(lk.kind[route] == NVLINK)
    assert list(route) in f.paths(s, d)


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("seed", [0, 1])
def test_every_variant_delivers_every_byte_within_capacity(name, seed):
    f = VARIANTS[name]()
    rng = np.random.default_rng(seed)
    h = f.n_hosts
    n = 60
    src = rng.integers(0, h, n)
    dst = (src + rng.integers(1, h, n)) % h
    size = rng.integers(1, 4 * X, n)
    routes = f.route(src, dst, seed=seed)
    for i in range(n):
        check_route(f, int(src[i]), int(dst[i]),
                    routes.route_links[routes.route_ptr[i]:routes.route_ptr[i + 1]])
    # run to every completion instant; between two, no link carries more than its capacity
    cap = f.link_state()
    s = FlowSession(routes.route_ptr, routes.route_links, cap, size, tolerance=0.0)
    s.start(np.arange(n), 0)
    t_prev, carried = 0, np.zeros(f.n_links)
    while s.next_event_ps() < flowsim.INF_PS:
        s.advance(flowsim.INF_PS - 1, stop_at_finish=True)
        t, now = s.now_ps, s.link_bytes()
        assert np.all((now - carried) * 8 <= cap * (t - t_prev) * 1e-12 * (1 + 1e-9) + 64)
        t_prev, carried = t, now
    assert np.all(s.finish_ps >= 0)
    # every byte delivered: each link carried exactly the bytes of the flows routed over it
    want = np.zeros(f.n_links)
    np.add.at(want, routes.route_links, np.repeat(size, np.diff(routes.route_ptr)))
    assert np.allclose(carried, want, rtol=1e-9, atol=1)


def test_packet_engine_runs_every_variant():
    """ACKs ride each link's reverse twin: every variant's routes work in the packet engine, and
    no flow there beats its route's narrowest link."""
    for name, build in VARIANTS.items():
        f = build()
        src, dst = np.array([0, 1, 2]), np.array([f.n_hosts - 1, f.n_hosts - 2, 3])
        r = finish(f, src, dst, size=200_000, engine="packet")
        narrowest = np.minimum.reduceat(f.links.capacity_bps[r.routes.route_links],
                                        r.routes.route_ptr[:-1])
        assert np.all(r.finish_ps >= 200_000 * 8 / narrowest * 1e12), name


def test_per_nic_variants_give_one_flow_at_most_one_nic():
    """On the per-NIC readings every inter-server route crosses a link of at most B; on the
    pooled fat-tree none does."""
    for name in ("fat_tree/released", "rail/per-nic", "rail/pooled", "mixnet/per-nic",
                 "topoopt/per-nic", "fat_tree/pooled"):
        f = VARIANTS[name]()
        h = f.n_hosts
        src, dst = np.divmod(np.arange(h * h), h)
        keep = f.host_server[src] != f.host_server[dst]
        r = f.route(src[keep], dst[keep])
        narrowest = np.minimum.reduceat(f.links.capacity_bps[r.route_links], r.route_ptr[:-1])
        if name == "fat_tree/pooled":
            assert np.all(narrowest == 4 * B)
        else:
            assert np.all(narrowest <= B), name


# --------------------------------------------------------------------------------------------
# Structure, parameters, errors and cost
# --------------------------------------------------------------------------------------------

def test_pooled_fat_tree_structure():
    f = fat_tree(1024, B_GBPS, nic_pooling="pooled")
    p = f.params
    # 128 servers: k = 8 (k^3 / 4 = 128), every link at 8 B
    assert p["k"] == 8 and p["host_link_gbps"] == 800 and p["nic_pooling"] == "pooled"
    assert f.n_hosts == 1024 and f.count("gpu") == 1024 and f.count("server") == 128
    assert f.count("switch", "edge") == 32 and f.count("switch", "core") == 16
    eps = f.links.kind == LINK_KINDS.index("eps")
    assert np.all(f.links.capacity_bps[eps] == 800e9)
    # bisection: 1024 x B into the core, as the GPU fat-tree's 64 cores x 16 ports x B
    core = f.nodes.tier[f.links.dst] == 3
    assert f.links.capacity_bps[eps & core].sum() == 1024 * B
    # a GPU's flows to other servers start at its server node; same-server flows take NVLink
    assert f.nodes.kind[f.links.src[f.routing.host_up[5]]] == SERVER
    assert f.routing.host_up[5] == f.routing.host_up[0] != f.routing.host_up[8]


def test_bill_of_materials_of_every_reading():
    """Pooled fat-tree: each 8 B link is 8 cables, so it costs exactly the GPU fat-tree; 3:1
    pooled: 128 servers at 6 per edge switch of k = 8 give 22 edge switches x 2 uplinks, 6 pods
    of 2 aggregation switches x 4 core links, every link 8 cables (1024 + 352 + 384 = 1760 cables,
    1024 + 2 x 736 = 2496 switch ports; the GPU 3:1 build has 1720 and 2416); rail with PXN as
    rail; MixNet per-NIC: one NIC per GPU and 6 OCS ports per server, as released."""
    def items(f):
        return bom_from_fabric(f).items

    assert items(fat_tree(1024, B_GBPS, nic_pooling="pooled")) == items(fat_tree(1024, B_GBPS))
    pooled = items(fat_tree(1024, B_GBPS, oversubscription=3, nic_pooling="pooled"))
    assert pooled["fiber"][0] == 1760 and pooled["eps_port"][0] == 2496
    assert pooled["nic"][0] == 1024 and pooled["transceiver"][0] == 2 * 1760
    assert items(rail_optimized(128, B_GBPS, nic_pooling="pooled")) == \
        items(rail_optimized(128, B_GBPS))
    per_nic = items(mixnet(128, B_GBPS, region_servers=8, nic_pooling="per-nic"))
    assert per_nic["nic"][0] == 1024 and per_nic["ocs_port"][0] == 768
    # the NIC-level EPS: 256 NICs on a k = 12 fat-tree of B links (43 edge switches x 6 uplinks,
    # 8 pods x 6 aggregation switches x 6 core links): 256 + 258 + 288 cables
    assert per_nic["fiber"][0] == 256 + 258 + 288 + 768


@pytest.mark.parametrize("call, field", [
    (lambda: fat_tree(16, B_GBPS, nic_pooling="shared"), "fabric.nic_pooling"),
    (lambda: fat_tree(16, B_GBPS, host="server", nic_pooling="pooled"), "fabric.nic_pooling"),
    (lambda: rail_optimized(2, B_GBPS, nic_pooling=None), "fabric.nic_pooling"),
    (lambda: topoopt(4, B_GBPS, nic_pooling="pool"), "fabric.nic_pooling"),
    (lambda: mixnet(4, B_GBPS, nic_pooling="per-gpu"), "fabric.nic_pooling"),
    (lambda: mixnet(4, B_GBPS, ocs="pair"), "fabric.ocs"),
    (lambda: mixnet(4, B_GBPS, eps="nic", nic_pooling="pooled"), "fabric.eps"),
    (lambda: mixnet(4, B_GBPS, ocs="server-pair", nic_pooling="per-nic"), "fabric.ocs"),
    (lambda: fat_tree(2048 * 8, B_GBPS, k=8, nic_pooling="pooled"), "fabric.hosts"),
])
def test_bad_pooling_options(call, field):
    with pytest.raises(ConfigError) as e:
        call()
    assert e.value.field == field


def test_params_record_the_reading():
    assert fat_tree(16, B_GBPS).params["nic_pooling"] == "released"
    assert rail_optimized(2, B_GBPS, nic_pooling="pooled").params["routing"] == "pxn"
    m = mixnet(4, B_GBPS, nic_pooling="per-nic").params
    assert (m["eps"], m["ocs"], m["nic_pooling"]) == ("nic", "nic", "per-nic")
    m = mixnet(4, B_GBPS, ocs="nic").params  # released lets one be set on its own
    assert (m["eps"], m["ocs"], m["nic_pooling"]) == ("server", "nic", "released")
    t = topoopt(4, B_GBPS, nic_pooling="per-nic").params
    assert t["parallel_links"] == "separate" and t["nic_pooling"] == "per-nic"
    assert "nic_pooling per-nic" in fat_tree(16, B_GBPS, nic_pooling="per-nic").summary()


def test_topoopt_readings_share_topology_and_server_paths():
    kw = dict(gpus_per_server=4, degree=6, allreduce_groups=[(np.arange(8), 10**9)])
    merged = topoopt(8, B_GBPS, nic_pooling="pooled", **kw)
    apart = topoopt(8, B_GBPS, nic_pooling="per-nic", **kw)
    assert np.array_equal(link_counts(merged), link_counts(apart))
    assert link_counts(apart).max() > 1  # some pair has parallel links
    assert np.array_equal(merged.routing.pair_links, apart.routing.pair_links)
    ocs = apart.links.kind == OCS
    assert np.all(apart.links.capacity_bps[ocs] == B)
    for i in range(8):
        for j in range(8):
            a, m = apart.routing.server_path(i, j), merged.routing.server_path(i, j)
            assert len(a) == len(m)
            assert [apart.nodes.server[apart.links.dst[x]] for x in a] == \
                [merged.nodes.server[merged.links.dst[x]] for x in m]
