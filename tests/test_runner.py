"""The task-graph runner (fabricsim.runner) and the OCS controller (fabricsim.ocs.controller)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabricsim.fabric import fat_tree
from fabricsim.mixnet import mixnet
from fabricsim.kernels.routing import rename_links
from fabricsim.ocs.controller import RegionalController, make_controller
from fabricsim.runner import BREAKDOWN_KINDS, run_iteration
from fabricsim.workload import WorkloadConfig, build_iteration

# one EP group of 2 servers: one OCS region
ONE_GROUP = WorkloadConfig(model="mixtral-8x7b", gpus=16, tp=2, ep=8, pp=1, dp=1, micro_batch=1,
                           seq_len=512, micro_batches=2)
PIPELINE = WorkloadConfig(model="mixtral-8x7b", gpus=32, tp=2, ep=4, pp=2, dp=2, micro_batch=1,
                          seq_len=512, micro_batches=2)


@pytest.fixture(scope="module")
def pipeline_graph():
    return build_iteration(PIPELINE)


def test_isolated_equals_exact_when_collectives_never_overlap():
    """One EP group at a time (pp = 1, dp = 1, tp = 1): no two collectives overlap, so running
    each alone is exact (up to the picosecond rounding of completions)."""
    cfg = WorkloadConfig(model="mixtral-8x7b", gpus=8, tp=1, ep=8, pp=1, dp=1, micro_batch=1,
                         seq_len=512, micro_batches=2)
    g = build_iteration(cfg)
    fab = fat_tree(8, 100, gpus_per_server=2)
    exact = run_iteration(g, fab, mode="exact")
    iso = run_iteration(g, fab, mode="isolated")
    assert np.all(np.abs(exact.finish_ps - iso.finish_ps) <= 10)
    assert iso.stats["contended_collectives"] == 0  # the run proves its own exactness
    assert iso.stats["isolated_simulations"] < np.count_nonzero(g.kind == 1)  # memoized


@pytest.mark.parametrize("mode", ["exact", "isolated"])
def test_iteration_is_bounded_by_the_critical_path_and_breakdown_adds_up(pipeline_graph, mode):
    r = run_iteration(pipeline_graph, fat_tree(32, 100), mode=mode)
    assert r.iteration_time_ps >= pipeline_graph.critical_path_ps()
    assert np.all(r.breakdown_ps.sum(axis=1) == r.iteration_time_ps)
    assert np.all(r.finish_ps >= r.start_ps) and np.all(r.start_ps >= 0)
    # every task starts after its predecessors finish
    g = pipeline_graph
    for t in range(0, g.n_tasks, 97):
        preds = g.pred[g.pred_ptr[t]:g.pred_ptr[t + 1]]
        assert np.all(r.finish_ps[preds] <= r.start_ps[t])
    assert set(r.breakdown_s()) == set(BREAKDOWN_KINDS)


def test_fast_links_approach_the_critical_path(pipeline_graph):
    r = run_iteration(pipeline_graph, fat_tree(32, 1e6, nvlink_gbps=1e7), mode="exact")
    bound = pipeline_graph.critical_path_ps()
    assert bound <= r.iteration_time_ps <= bound * 1.01


def test_deterministic(pipeline_graph):
    a = run_iteration(pipeline_graph, fat_tree(32, 100))
    b = run_iteration(pipeline_graph, fat_tree(32, 100))
    assert np.array_equal(a.finish_ps, b.finish_ps)


def test_bottleneck_first_gives_the_plain_engine_run(pipeline_graph):
    """The runner's exact mode with the flow engine's bottleneck-local re-solve (default) and
    without it (``bottleneck_first=False``): the same task times to the picosecond rounding."""
    fab = fat_tree(32, 100)
    local = run_iteration(pipeline_graph, fab, mode="exact")
    plain = run_iteration(pipeline_graph, fab, mode="exact", bottleneck_first=False)
    assert local.stats["engine_bottleneck_tries"] > 0 == plain.stats["engine_bottleneck_tries"]
    assert local.stats["engine_solved_flows"] < plain.stats["engine_solved_flows"]
    np.testing.assert_allclose(local.finish_ps, plain.finish_ps, rtol=1e-9, atol=100)


def test_solo_collectives_give_the_shared_session_run(pipeline_graph):
    """``exact`` mode times a collective alone on its links from the isolated memo and hands it
    to the shared engine session when a flow comes onto one of its links: the same task times as
    running every flow in the session (``solo=False``), to the picosecond rounding."""
    fab = fat_tree(32, 100)
    solo = run_iteration(pipeline_graph, fab, mode="exact")
    shared = run_iteration(pipeline_graph, fab, mode="exact", solo=False)
    assert solo.stats["solo_collectives"] > solo.stats["solo_taken_over"] > 0
    assert shared.stats["solo_collectives"] == 0 == shared.stats["isolated_simulations"]
    assert solo.stats["engine_events"] < shared.stats["engine_events"]
    np.testing.assert_allclose(solo.finish_ps, shared.finish_ps, rtol=1e-9, atol=100)
    # the staleness bound couples links through event times: no solo collectives with it
    loose = run_iteration(pipeline_graph, fab, mode="exact", tolerance=0.01)
    assert loose.stats["solo_collectives"] == 0


class _FlakyLinks(RegionalController):
    """The static controller plus a capacity cut at every compute start: a link picked by the
    task's index runs at 30% for 20 us from 1 us after the start (capacity changes that land on
    the links of running collectives)."""

    def on_compute_start(self, task, t):
        links = np.array([(task * 7919) % self.fabric.n_links])
        nominal = self.fabric.links.capacity_bps[links]
        return super().on_compute_start(task, t) + [(t + 1_000_000, links, 0.3 * nominal),
                                                     (t + 21_000_000, links, nominal)]


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**16), link_gbps=st.sampled_from([25, 100, 400]),
       policy=st.sampled_from(["static", "oracle-blocking", "reuse-previous"]))
def test_solo_collectives_under_capacity_changes(seed, link_gbps, policy):
    """Solo collectives taken over when a flow or a capacity change comes onto their links
    (MixNet re-wirings, and links cut and restored under running collectives): the same task times
    as the shared session."""
    cfg = WorkloadConfig(model="mixtral-8x7b", gpus=32, tp=2, ep=8, pp=2, dp=1, micro_batch=1,
                         seq_len=256, micro_batches=2, gating="synthetic", seed=seed)
    g = build_iteration(cfg)
    runs = [run_iteration(g, mixnet(cfg.gpus // 8, link_gbps, region_servers=2),
                          controller=_FlakyLinks(policy=policy, delay_ps=50_000_000), seed=seed,
                          solo=solo) for solo in (True, False)]
    assert runs[0].stats["solo_collectives"] > 0 and runs[0].stats["solo_taken_over"] > 0
    # the 1 ps re-roundings at take-overs can grow at each collective that overlaps a 30% cut
    # (a review's sweep saw up to 1 ns, 4.4e-8 of the task time): rounding, not a different model
    np.testing.assert_allclose(runs[0].finish_ps, runs[1].finish_ps, rtol=2e-7, atol=100)


class _TimedChange:
    """A controller without circuits that sets link ``link`` to its own capacity at ``at_ps``
    (a no-op change that still takes over the solo collective on that link)."""

    def __init__(self, at_ps, link):
        self.at_ps, self.link, self.records, self.issued = at_ps, link, [], False

    def attach(self, graph, fabric):
        self.task_group = np.full(graph.n_tasks, -1, np.int64)
        self.fabric = fabric

    def routing_groups(self, graph):
        return {-1: None}

    def initial_capacity(self, capacity_bps):
        return capacity_bps

    def on_compute_start(self, task, t):
        if self.issued:
            return []
        self.issued = True
        links = np.array([self.link])
        return [(self.at_ps, links, self.fabric.links.capacity_bps[links])]

    def on_comm_ready(self, task, t):
        return t, []

    def on_task_done(self, task, t):
        return []


def test_take_over_a_picosecond_before_a_flow_completes():
    """Found by a review: a take-over 1 ps before a flow's rounded-up completion, where the flow's
    bytes settled alone come out a few 1e-11 B below 0 (it then finishes at once: 1 ps early)."""
    cfg = WorkloadConfig(model="mixtral-8x7b", gpus=16, tp=2, ep=8, pp=1, dp=1, micro_batch=1,
                         seq_len=512, micro_batches=1, gating="synthetic", seed=1)
    g = build_iteration(cfg)
    fab = fat_tree(16, 100)
    runs = [run_iteration(g, fab, controller=_TimedChange(56885460820 + 301410987, 96), solo=solo)
            for solo in (True, False)]
    assert runs[0].stats["solo_taken_over"] > 0
    np.testing.assert_allclose(runs[0].finish_ps, runs[1].finish_ps, rtol=1e-9, atol=100)


def mixnet_for(cfg, **kw):
    servers = cfg.gpus // 8
    return mixnet(servers, 100, region_servers=cfg.ep * cfg.tp // 8, **kw)


def test_oracle_blocking_holds_every_forward_dispatch_for_the_delay():
    g = build_iteration(ONE_GROUP)
    fab = mixnet_for(ONE_GROUP)
    ctl = make_controller("oracle-blocking", delay_ms=25)
    r = run_iteration(g, fab, controller=ctl)
    dispatch = g.tasks_of("ep_dispatch")
    m = g.placement.model.moe_layers
    assert len(dispatch) == ONE_GROUP.dp * m * ONE_GROUP.micro_batches
    # every FP-1 starts delay + 10 ps after it was ready (its predecessors' finish)
    ready = np.array([r.finish_ps[g.pred[g.pred_ptr[t]:g.pred_ptr[t + 1]]].max() for t in dispatch])
    assert np.all(r.start_ps[dispatch] - ready == 25_000_000_000 + 10)
    fwd = [x for x in ctl.records if x["phase"] == "ep_dispatch"]
    assert len(fwd) == len(dispatch)
    static = run_iteration(g, fab, controller=make_controller("static"))
    assert r.iteration_time_ps > static.iteration_time_ps
    assert r.breakdown_s()["ocs"] > 0 and static.breakdown_s()["ocs"] == 0


@pytest.mark.parametrize("policy", ["oracle-blocking", "reuse-previous", "static"])
@pytest.mark.parametrize("mode", ["exact", "isolated"])
def test_policies_run_and_respect_the_dependencies(policy, mode):
    g = build_iteration(ONE_GROUP)
    r = run_iteration(g, mixnet_for(ONE_GROUP), controller=make_controller(policy, delay_ms=1),
                      mode=mode)
    assert r.iteration_time_ps >= g.critical_path_ps()
    assert np.all(r.breakdown_ps.sum(axis=1) == r.iteration_time_ps)


def test_tiny_and_huge_delays():
    g = build_iteration(ONE_GROUP)
    fab = mixnet_for(ONE_GROUP)
    short = run_iteration(g, fab, controller=make_controller(delay_ms=0.001))
    long = run_iteration(g, fab, controller=make_controller(delay_ms=10_000))
    n_fp1 = len(g.tasks_of("ep_dispatch"))
    assert long.iteration_time_ps - short.iteration_time_ps >= 0.9 * n_fp1 * 10e12 / ONE_GROUP.dp


def test_timeline_and_ocs_traces(tmp_path):
    import pyarrow as pa

    from fabricsim.traces import read_metadata

    g = build_iteration(ONE_GROUP)
    ctl = make_controller("oracle-blocking", delay_ms=1)
    r = run_iteration(g, mixnet_for(ONE_GROUP), controller=ctl)
    paths = r.write_traces(tmp_path, scenario={"name": "t"})
    timeline = pa.ipc.open_stream(paths[0]).read_all()
    assert timeline.num_rows == g.n_tasks
    assert (timeline.column("finish_ps").to_numpy() >= timeline.column("start_ps").to_numpy()).all()
    assert read_metadata(timeline.schema.metadata)["scenario"]["name"] == "t"
    ocs = pa.ipc.open_stream(paths[1]).read_all().to_pandas()
    assert len(ocs) > 0 and set(ocs.phase) >= {"ep_dispatch"}
    assert (ocs.end_ps - ocs.time_ps == 1_000_000_000).all() and (ocs.circuits > 0).all()


def test_contention_is_reported_when_isolated_is_not_exact(pipeline_graph):
    iso = run_iteration(pipeline_graph, fat_tree(32, 100), mode="isolated")
    exact = run_iteration(pipeline_graph, fat_tree(32, 100), mode="exact")
    assert iso.stats["contended_collectives"] > 0
    assert iso.iteration_time_ps != exact.iteration_time_ps


@pytest.mark.parametrize("mode", ["isolated", "exact"])
def test_packet_engine_drives_the_runner_and_agrees_with_the_flow_engine(mode):
    """The same iteration on both engines: DCTCP packets and the fluid model agree within a few
    percent (slow start, ACK clocking and queueing are what the packet engine adds)."""
    from fabricsim.kernels.packetsim import PacketParams

    cfg = WorkloadConfig(model="mixtral-8x7b", gpus=8, tp=2, ep=4, pp=1, dp=1, micro_batch=1,
                         seq_len=128, micro_batches=1)
    g = build_iteration(cfg)
    fab = fat_tree(8, 100, gpus_per_server=4)
    flow = run_iteration(g, fab, mode=mode)
    packet = run_iteration(g, fab, mode=mode, engine="packet", packet_params=PacketParams())
    assert packet.stats["engine"] == "packet"
    assert np.all(packet.finish_ps >= 0)
    assert abs(packet.iteration_time_ps / flow.iteration_time_ps - 1) < 0.05


@pytest.mark.parametrize("policy", ["oracle-blocking", "reuse-previous"])
def test_regions_never_rewire_under_an_all_to_all(policy):
    """With a pipeline (1F1B) the next micro-batch's dispatch can become ready while the previous
    combine runs: a region's all-to-alls run one at a time and no re-wiring starts while one is
    in flight or ends after one has started; every all-to-all runs on its planned circuits."""
    cfg = WorkloadConfig(model="mixtral-8x7b", gpus=32, tp=2, ep=8, pp=2, dp=1, micro_batch=1,
                         seq_len=512, micro_batches=4, gating="synthetic",
                         gating_params={"skew": 1.5})
    g = build_iteration(cfg)
    fab = mixnet(4, 100, region_servers=2)
    ctl = make_controller(policy, delay_ms=25)
    r = run_iteration(g, fab, controller=ctl)
    recs = sorted(ctl.records, key=lambda x: (x["region"], x["time_ps"]))
    for a, b in zip(recs, recs[1:]):
        assert a["region"] != b["region"] or b["time_ps"] >= a["end_ps"]
    for t in np.flatnonzero(ctl.task_region >= 0):
        reg, s, f = int(ctl.task_region[t]), r.start_ps[t], r.finish_ps[t]
        before = [x for x in recs if x["region"] == reg and x["time_ps"] <= s]
        assert not any(x["time_ps"] < f and x["end_ps"] > s for x in recs if x["region"] == reg)
        if before:
            c = np.zeros_like(fab.routing.circuits[reg])
            for i, j, n in before[-1]["pairs"]:
                c[i, j] = c[j, i] = n
            assert np.array_equal(c, ctl.configs[ctl.task_group[t]][1])


def test_relay_works_under_a_controller():
    from fabricsim.failures import apply_failures

    cfg = WorkloadConfig(model="mixtral-8x7b", gpus=16, tp=2, ep=8, pp=1, dp=1, micro_batch=1,
                         seq_len=256, micro_batches=1)
    fab = apply_failures(mixnet(2, 100, region_servers=2, alpha=7), ["nic:0:eps"])
    r = run_iteration(build_iteration(cfg), fab, controller=make_controller(delay_ms=1))
    assert np.all(r.finish_ps >= 0)


def test_predict_policy_with_a_trained_predictor():
    """MixNet-Copilot: FP-1 runs on circuits predicted from the previous layer (fitted over the
    iterations before), then the region re-wires to the exact demand."""
    from fabricsim.experiment import Point, run_point

    base = dict(model="mixtral-8x7b", fabric="mixnet", gpus=32, tp=2, ep=8, pp=2, micro_batch=1,
                seq_len=512, gating="synthetic", mode="exact", micro_batches=2)
    pred = run_point(Point(policy="predict", **base))
    reuse = run_point(Point(policy="reuse-previous", **base))
    assert pred["reconfigurations"] > reuse["reconfigurations"] > 0
    assert pred["iteration_time_s"] >= pred["compute_bound_s"]


def _rename_reference(links):
    """Names by first appearance, with a dict."""
    names = {}
    for link in links:
        names.setdefault(link, len(names))
    return [names[link] for link in links], list(names)


@given(st.lists(st.integers(0, 19), max_size=60))
def test_rename_links_matches_reference_and_restores_scratch(links):
    scratch = np.full(20, -1, np.int64)
    local, used = rename_links(np.array(links, np.int64), scratch)
    ref_local, ref_used = _rename_reference(links)
    assert local.tolist() == ref_local and used.tolist() == ref_used
    assert np.all(scratch == -1)


def test_ecmp_draws_differ_between_collectives_and_repeat_for_identical_ones():
    """A collective's ECMP choices hash its own (src, dst) lists: the same collective takes the
    same paths every time (memoizable), two different ones draw independently, so their i-th
    flows do not all stack on one core link (as a hash of the flow index alone made them)."""
    from fabricsim.runner import _collective_seed

    fab = fat_tree(64, 100, k=8)
    rings = [(np.arange(t, 64, 8), np.roll(np.arange(t, 64, 8), -1)) for t in range(4)]
    seeds = [_collective_seed(0, s, d) for s, d in rings]
    assert len(set(seeds)) == 4 and seeds[0] == _collective_seed(0, *rings[0])
    assert _collective_seed(1, *rings[0]) != seeds[0]
    last_links = set()
    for (s, d), seed in zip(rings, seeds):
        r = fab.route(s, d, seed=seed)
        again = fab.route(s, d, seed=_collective_seed(0, s, d))
        assert np.array_equal(r.route_links, again.route_links)
        last_links.add(tuple(r.route_links[r.route_ptr[-2]:r.route_ptr[-1]].tolist()))
    assert len(last_links) > 1  # the rings' last flows do not all take one path
