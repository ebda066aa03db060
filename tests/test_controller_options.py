"""The OCS controller's options (fabricsim.ocs.controller): ``variant`` (which allocator plans the
circuits), ``hold`` (which links a re-wiring takes down) and ``skip_unchanged`` (no re-wiring to
the configuration already in place).

One EP group of 4 servers (32 GPUs, tp 4, ep 8) is one OCS region; synthetic gating gives every
layer its own demand, on which the three variants differ. The expected circuits are computed here
from each dispatch's flows with ``fabricsim.ocs.allocate_circuits``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fabricsim.mixnet import HOLD_MODES, mixnet
from fabricsim.ocs import allocate_circuits
from fabricsim.ocs.allocate import VARIANTS
from fabricsim.ocs.controller import make_controller
from fabricsim.runner import run_iteration
from fabricsim.workload import WorkloadConfig, build_iteration

CFG = WorkloadConfig(model="mixtral-8x7b", gpus=32, tp=4, ep=8, pp=1, dp=1, micro_batch=1,
                     seq_len=256, micro_batches=1, gating="synthetic")
SERVERS, ALPHA, GBPS = 4, 4, 400
DELAY_MS = 1
DELAY_PS = DELAY_MS * 10**9
SLACK_PS = 10  # a blocked dispatch starts delay + 10 ps after it is ready (the released simulator)


@pytest.fixture(scope="module")
def graph():
    return build_iteration(CFG)


def fabric(circuits=None):
    return mixnet(SERVERS, GBPS, alpha=ALPHA, region_servers=SERVERS,
                  circuits=None if circuits is None else circuits[None])


def dispatches(graph) -> list:
    """The forward dispatches in execution order (one micro-batch: layer by layer)."""
    d = graph.tasks_of("ep_dispatch")
    return [int(t) for t in d[np.argsort(graph.layer[d], kind="stable")]]


def expected(graph, task, variant):
    """``allocate_circuits`` of the server-level demand of dispatch ``task``."""
    src, dst, size = graph.flows(task)
    server = src // 8, dst // 8  # 8 GPUs per server
    demand = np.zeros((SERVERS, SERVERS))
    np.add.at(demand, server, size)
    kw = dict(link_gbps=GBPS, eps_gbps=(8 - ALPHA) * GBPS) if variant == "minmax" else {}
    return allocate_circuits(demand, ALPHA, variant, **kw)


def pairs(c) -> list:
    i, j = np.nonzero(np.triu(c))
    return list(zip(i.tolist(), j.tolist(), c[i, j].tolist()))


def ready_ps(graph, result, task) -> int:
    return int(result.finish_ps[graph.pred[graph.pred_ptr[task]:graph.pred_ptr[task + 1]]].max())


# ---------------------------------------------------------------------------------------------
# variant


def test_each_variant_rewires_to_allocate_circuits_of_the_dispatch_demand(graph):
    used = {}
    for variant in VARIANTS:
        ctl = make_controller("oracle-blocking", delay_ms=DELAY_MS, variant=variant)
        r = run_iteration(graph, fabric(), controller=ctl)
        fwd = [rec for rec in r.ocs_records if rec["phase"] == "ep_dispatch"]
        order = dispatches(graph)
        assert [rec["layer"] for rec in fwd] == [int(graph.layer[t]) for t in order]
        used[variant] = []
        for rec, t in zip(fwd, order):
            want = expected(graph, t, variant)
            assert rec["pairs"] == pairs(want)  # the re-wiring before the dispatch ...
            assert np.array_equal(ctl.configs[ctl.task_group[t]][1], want)  # ... carries it
            assert rec["time_ps"] == ready_ps(graph, r, t)
            assert r.start_ps[t] == rec["time_ps"] + DELAY_PS + SLACK_PS
            used[variant].append(want)
    # on this demand the three allocators disagree, layer after layer
    for a, b in itertools.combinations(VARIANTS, 2):
        differ = sum(not np.array_equal(x, y) for x, y in zip(used[a], used[b]))
        assert differ >= len(used[a]) // 2, (a, b, differ)


# ---------------------------------------------------------------------------------------------
# hold


@pytest.mark.parametrize("hold", HOLD_MODES)
def test_hold_decides_which_links_a_controller_rewiring_takes_down(graph, hold):
    """The first dispatch's re-wiring, from the fabric's initial circuits to the dispatch's:
    ``region`` zeroes all 12 directed OCS links of the region for the delay, ``changed`` only the
    links of the pairs whose circuit count changes; then every link gets its new capacity."""
    fab = fabric()
    ctl = make_controller("oracle-blocking", delay_ms=DELAY_MS, hold=hold)
    ctl.attach(graph, fab)
    first = dispatches(graph)[0]
    old, new = fab.routing.circuits[0], expected(graph, first, "reference")
    i, j = np.nonzero(~np.eye(SERVERS, dtype=bool))
    links = fab.routing.ocs_link[i, j]
    changed = old[i, j] != new[i, j]
    assert 0 < changed.sum() < links.size  # the two modes differ on this re-wiring
    t = 5_000_000
    start, changes = ctl.on_comm_ready(first, t)
    assert start == t + DELAY_PS + SLACK_PS
    (t_down, down, down_bps), (t_up, up, up_bps) = changes
    assert (t_down, t_up) == (t, t + DELAY_PS) and np.all(down_bps == 0)
    assert sorted(down.tolist()) == sorted((links if hold == "region" else links[changed]).tolist())
    assert dict(zip(up.tolist(), up_bps.tolist())) == {
        int(link): new[a, b] * GBPS * 1e9 for link, a, b in zip(links, i, j)}


# ---------------------------------------------------------------------------------------------
# skip_unchanged


def test_skip_unchanged_skips_rewirings_to_the_configuration_in_place(graph):
    """The fabric starts on the first dispatch's circuits, and some consecutive layers get the
    same circuits: with ``skip_unchanged`` those dispatches start when ready (no record, no
    delay); without it every dispatch re-wires and waits for the delay."""
    order = dispatches(graph)
    want = [expected(graph, t, "reference") for t in order]
    same = {int(graph.layer[t]) for k, t in enumerate(order)
            if k == 0 or np.array_equal(want[k], want[k - 1])}
    assert 3 <= len(same) < len(order) // 2  # some re-wirings are identical, most are not
    fab = fabric(circuits=want[0])
    runs = {}
    for skip in (False, True):
        ctl = make_controller("oracle-blocking", delay_ms=DELAY_MS, skip_unchanged=skip)
        r = run_iteration(graph, fab, controller=ctl)
        runs[skip] = r
        layers = [rec["layer"] for rec in r.ocs_records if rec["phase"] == "ep_dispatch"]
        skipped = same if skip else set()
        assert layers == [int(graph.layer[t]) for t in order
                          if int(graph.layer[t]) not in skipped]
        for t in order:
            held = r.start_ps[t] - ready_ps(graph, r, t)
            assert held == (0 if int(graph.layer[t]) in skipped else DELAY_PS + SLACK_PS)
    saved = runs[False].iteration_time_ps - runs[True].iteration_time_ps
    assert saved >= len(same) * DELAY_PS  # each skipped forward re-wiring saves its delay


# ---------------------------------------------------------------------------------------------
# every all-to-all on its own circuits


def circuits_of(rec) -> np.ndarray:
    c = np.zeros((SERVERS, SERVERS), np.int64)
    for i, j, n in rec["pairs"]:
        c[i, j] = c[j, i] = n
    return c


@pytest.mark.parametrize("policy", ["oracle-blocking", "reuse-previous"])
@pytest.mark.parametrize("variant", ["reference", "minmax"])
def test_every_all_to_all_runs_on_the_circuits_planned_for_it(graph, policy, variant):
    """No re-wiring starts before the all-to-all planned on the circuits in place has run: the
    backward re-wiring of layer l - 1 waits for layer l's backward dispatch (before the fix it
    started with layer l's expert computation, so that dispatch ran on layer l - 1's circuits;
    with minmax, which leaves unloaded pairs without circuits, its flows never finished)."""
    fab = fabric()
    ctl = make_controller(policy, delay_ms=DELAY_MS, variant=variant)
    r = run_iteration(graph, fab, controller=ctl)
    recs = sorted(ctl.records, key=lambda rec: rec["time_ps"])
    assert len(recs) >= 2 * CFG.micro_batches * (graph.placement.model.moe_layers - 1)
    times = np.array([rec["time_ps"] for rec in recs])
    a2a = np.flatnonzero(ctl.task_region >= 0)
    assert a2a.size == 4 * graph.placement.model.moe_layers
    for t in a2a:
        before = np.searchsorted(times, r.start_ps[t], side="right")  # re-wirings begun by then
        in_place = fab.routing.circuits[0]
        if before:
            in_place = circuits_of(recs[before - 1])
            assert recs[before - 1]["end_ps"] <= r.start_ps[t]  # it waited for the re-wiring
        assert np.array_equal(in_place, ctl.configs[ctl.task_group[t]][1]), t
        assert before == len(recs) or times[before] >= r.finish_ps[t]  # none under it
