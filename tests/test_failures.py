"""Failures (fabricsim.failures): NIC, GPU and server failures on MixNet reroute and lose no bytes."""

from __future__ import annotations

import numpy as np
import pytest

from fabricsim import simulate_flows
from fabricsim.errors import ConfigError
from fabricsim.experiment import Point, run_point
from fabricsim.failures import apply_failures, gpu_map, parse_failures
from fabricsim.fabric import LINK_KINDS, fat_tree
from fabricsim.mixnet import mixnet
from fabricsim.runner import run_iteration
from fabricsim.workload import WorkloadConfig, build_iteration

OCS = LINK_KINDS.index("ocs")


def chain_ok(fab, route, a, b):
    node = a
    for link in route:
        if fab.links.src[link] != node:
            return False
        node = fab.links.dst[link]
    return node == b


def test_eps_nic_failure_relays_through_a_region_peer():
    # alpha = 7: one EPS NIC per server; losing it leaves server 0 without the EPS
    fab = apply_failures(mixnet(4, 100, gpus_per_server=8, region_servers=2, alpha=7), ["nic:0:eps"])
    rt = fab.routing
    assert not rt.eps_ok[0] and rt.eps_ok[1:].all()
    assert fab.links.capacity_bps[rt.eps.host_up[0]] == 0
    src = np.array([0, 1, 17, 30, 5])
    dst = np.array([20, 31, 2, 3, 9])       # server 0 <-> servers 2, 3 (other region), 1
    r = fab.route(src, dst)
    server_node = fab.links.src[rt.eps.host_up]
    for i in range(len(src)):
        route = r.route_links[r.route_ptr[i]:r.route_ptr[i + 1]]
        s, d = src[i] // 8, dst[i] // 8
        assert chain_ok(fab, route, server_node[s], server_node[d])
        assert not np.isin(route, [rt.eps.host_up[0], rt.eps.host_down[0]]).any()
    res = simulate_flows(fab, src, dst, np.full(5, 10**6), tolerance=0.0)
    assert res.status == "done" and np.all(res.finish_ps > 0)
    hops = np.diff(res.routes.route_ptr)
    assert np.isclose(res.link_bytes.sum(), (10**6 * hops).sum())   # no byte lost


def test_ocs_nic_failure_caps_the_servers_circuits():
    fab = apply_failures(mixnet(8, 100, region_servers=8, alpha=6), ["nic:3:ocs"])
    assert fab.routing.ocs_degree[3] == 5 and fab.routing.circuits[0, 3].sum() <= 5
    links, caps = fab.routing.capacities()
    assert np.array_equal(fab.links.capacity_bps[links], caps)


CFG = WorkloadConfig(model="mixtral-8x7b", gpus=32, tp=2, ep=8, pp=2, dp=1, micro_batch=1,
                     seq_len=512, micro_batches=2)


@pytest.mark.parametrize("failure", ["gpu:3", "server:1", "nic:0:eps", "nic:2:ocs"])
def test_iterations_with_failures_complete(failure):
    g = build_iteration(CFG)
    base = mixnet(4, 100, region_servers=2)
    fab = apply_failures(base, [failure])
    moved = gpu_map(fab, [failure])
    r = run_iteration(g, fab, gpu_map=moved)
    ok = run_iteration(g, base)
    assert np.all(r.finish_ps >= 0) and r.iteration_time_ps >= g.critical_path_ps()
    if failure == "gpu:3":
        assert moved[3] == 8 + 3 and (moved != np.arange(32)).sum() == 1
        # GPU 3's TP partner (GPU 2) now talks to server 1: its TP flows leave the server
        assert r.iteration_time_ps >= ok.iteration_time_ps
    if failure == "server:1":
        assert (moved[8:16] == np.arange(0, 8)).all()


def test_point_with_failures_and_the_study():
    row = run_point(Point(model="mixtral-8x7b", fabric="mixnet", gpus=32, tp=2, ep=8, pp=2,
                          micro_batch=1, seq_len=512, micro_batches=2, failures=("server:0",)))
    assert row["failures"] == "server:0" and row["iteration_time_s"] > 0


@pytest.mark.parametrize("spec, text", [
    (["disk:3"], "kind must be one of"),
    (["nic:3"], "expected 'nic:SERVER:eps|ocs'"),
    (["nic:3:pcie"], "'eps' or the 'ocs' plane"),
    (["gpu:x"], "expected 'gpu:GPU'"),
    ([7], "each failure is a string"),
])
def test_bad_failure_specs(spec, text):
    with pytest.raises(ConfigError, match=text):
        parse_failures(spec)


def test_failures_out_of_range_or_on_other_fabrics():
    with pytest.raises(ConfigError, match="server ids are 0 .. 3"):
        apply_failures(mixnet(4, 100, region_servers=2), ["server:9"])
    with pytest.raises(ConfigError, match="MixNet"):
        apply_failures(fat_tree(16, 100), ["nic:0:eps"])
    with pytest.raises(ConfigError, match="mixnet"):
        Point(fabric="fattree", failures=("gpu:1",))


def test_relay_at_both_ends():
    c = np.zeros((1, 4, 4), np.int64)
    c[0, 0, 1] = c[0, 1, 0] = c[0, 2, 3] = c[0, 3, 2] = 1
    fab = apply_failures(mixnet(4, 100, region_servers=4, alpha=7, circuits=c),
                         ["nic:0:eps", "nic:2:eps"])
    r = fab.route(np.array([0]), np.array([16]))       # server 0 -> server 2, no circuit
    route = r.route_links.tolist()
    server_node = fab.links.src[fab.routing.eps.host_up]
    assert chain_ok(fab, route, server_node[0], server_node[2])
    assert fab.links.kind[route[0]] == OCS and fab.links.kind[route[-1]] == OCS
    assert simulate_flows(fab, [0], [16], [10**6]).status == "done"
