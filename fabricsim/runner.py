"""Execute one training iteration's task graph on a fabric: the iteration time and where it goes.

:func:`run_iteration` runs a :class:`~fabricsim.workload.TaskGraph` on a
:class:`~fabricsim.fabric.Fabric`. A compute task takes its modelled time on its GPU once all its
predecessors are done (the graph chains each GPU's compute tasks in schedule order: one compute
stream per GPU); a communication task turns into flows; it is done when its last flow is. The
iteration time is the finish of the last task. An OCS controller (:mod:`fabricsim.ocs.controller`)
may delay a communication task (a blocking reconfiguration) and changes link capacities.

Two modes:

- ``exact`` (default): every flow of the iteration runs in one flow-engine session
  (:class:`fabricsim.engine.FlowSession`), started when its task starts, sharing links max-min
  fairly with everything else in flight.

  *Solo collectives* (flow engine, ``tolerance=0``; ``solo=False`` turns it off). A max-min fair
  allocation splits over the connected components of the flow-link graph, and the engine's
  arithmetic for a component depends only on that component's events, so a collective none of
  whose links carries another flow runs exactly as it would alone, until a flow or a capacity
  change comes onto one of its links. Such a collective is timed from the isolated memo below
  (``stats["solo_collectives"]``) and holds its links; when a flow or a capacity change comes onto
  one of them at ``t``, the collective is run alone up to ``t`` in a session of its own and the
  shared session takes its flows over from there, finished ones recorded and the others with
  their remaining bytes (:meth:`fabricsim.engine.FlowSession.resume`;
  ``stats["solo_taken_over"]``). Task times equal the shared session's to the picosecond rounding
  of completions (``tests/test_runner.py``; a take-over re-rounds its flows' completions by up to
  1 ps, and under repeated capacity cuts such differences can grow: up to 1 ns, 4e-8 relative, in
  a sweep of 449 configurations); with ``tolerance > 0`` the engine's deferred
  re-solves couple components through event times, so every flow runs in the session.
- ``isolated``: each communication task is simulated alone on the idle fabric (with its circuit
  configuration) and then takes that time, memoized over tasks with identical flows and
  circuits. It is exact when communication tasks that overlap in time share no link (one EP group
  at a time, or groups confined to their own servers and circuits); otherwise it ignores
  contention between concurrent collectives. ``tests/test_runner.py`` compares it with ``exact``;
  ``stats["contended_collectives"]`` counts the collectives that overlapped in time with another
  on a shared link in the run (0: the isolated result is exact).

The breakdown charges each GPU's idle time before a compute task to the kind of the predecessor
that finished last (``tp``, ``ep``, ``pp``, ``dp`` communication; ``ocs`` for the part of an
all-to-all held by a blocking reconfiguration; ``wait`` when it is another GPU's computation),
and the time after a GPU's last compute task to the communication that ends the iteration.
"""

from __future__ import annotations

import hashlib
import heapq
import time
from dataclasses import dataclass, field

import numpy as np

from fabricsim.engine import FlowSession, PacketSession
from fabricsim.errors import require
from fabricsim.fabric import Fabric
from fabricsim.kernels import dag, flowsim
from fabricsim.kernels.routing import rename_links
from fabricsim.workload.taskgraph import COMM, COMPUTE, OP_PARALLELISM, OPS, TaskGraph

__all__ = ["run_iteration", "IterationResult", "MODES", "BREAKDOWN_KINDS"]

MODES = ("exact", "isolated")
ENGINES = ("flow", "packet")
BREAKDOWN_KINDS = ("compute", "tp", "ep", "pp", "dp", "ocs", "wait")
_KIND_OF_OP = np.array([BREAKDOWN_KINDS.index(OP_PARALLELISM.get(op, "wait")) for op in OPS])
_INF = flowsim.INF_PS


@dataclass
class IterationResult:
    """One iteration: ``iteration_time_ps``, per-task ``start_ps``/``finish_ps`` (``int64[T]``),
    ``breakdown_ps`` (``int64[gpus, len(BREAKDOWN_KINDS)]``), OCS records and run statistics."""

    graph: TaskGraph
    iteration_time_ps: int
    start_ps: np.ndarray
    finish_ps: np.ndarray
    breakdown_ps: np.ndarray
    ocs_records: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    @property
    def iteration_time_s(self) -> float:
        return self.iteration_time_ps * 1e-12

    def breakdown_s(self) -> dict:
        """Mean over GPUs of each kind, in seconds (``compute`` + the rest = iteration time)."""
        mean = self.breakdown_ps.mean(axis=0) * 1e-12
        return {k: float(v) for k, v in zip(BREAKDOWN_KINDS, mean)}

    def timeline(self):
        """Per-task columns of the graph plus ``start_ps`` and ``finish_ps`` (``pyarrow.Table``)."""
        table = self.graph.to_arrow()
        return table.append_column("start_ps", [self.start_ps]).append_column(
            "finish_ps", [self.finish_ps])

    def ocs_table(self):
        """One row per circuit of every re-wiring: ``time_ps``, ``end_ps``, ``region``, ``layer``,
        ``micro_batch``, ``phase``, ``server_i``, ``server_j`` (region-local), ``circuits``."""
        import pyarrow as pa

        rows = [dict(time_ps=r["time_ps"], end_ps=r["end_ps"], region=r["region"],
                     layer=r["layer"], micro_batch=r["micro_batch"], phase=r["phase"],
                     server_i=i, server_j=j, circuits=c)
                for r in self.ocs_records for i, j, c in r["pairs"]]
        schema = pa.schema([("time_ps", pa.int64()), ("end_ps", pa.int64()), ("region", pa.int64()),
                            ("layer", pa.int64()), ("micro_batch", pa.int64()),
                            ("phase", pa.string()), ("server_i", pa.int64()),
                            ("server_j", pa.int64()), ("circuits", pa.int64())])
        return pa.Table.from_pylist(rows, schema=schema)

    def write_traces(self, out_dir, scenario: dict | None = None) -> list:
        """``timeline.arrows`` (per task) and ``ocs.arrows`` (per re-wiring and circuit) as Arrow
        IPC streams in ``out_dir``, with the schema version and ``scenario`` in their metadata."""
        import os

        import pyarrow as pa

        from fabricsim.traces.schema import metadata, replaced_on_success

        os.makedirs(out_dir, exist_ok=True)
        paths = []
        for name, table in (("timeline.arrows", self.timeline()), ("ocs.arrows", self.ocs_table())):
            path = os.path.join(out_dir, name)
            table = table.replace_schema_metadata(metadata(scenario))
            with replaced_on_success(path) as tmp, pa.OSFile(tmp, "wb") as sink, \
                    pa.ipc.new_stream(sink, table.schema) as w:
                w.write_table(table)
            paths.append(path)
        return paths


def _task_flows(graph: TaskGraph, gpu_map=None):
    """Flows of every communication task, concatenated: ``(ptr int64[T+1], src, dst, bytes)``.
    ``gpu_map`` moves GPUs (failures); flows that become local are left out (no network)."""
    comm = np.flatnonzero(graph.kind == COMM)
    parts = [graph.flows(int(t)) for t in comm]
    if gpu_map is not None:
        parts = [(gpu_map[a], gpu_map[b], c) for a, b, c in parts]
        parts = [(a[a != b], b[a != b], c[a != b]) for a, b, c in parts]
    counts = np.zeros(graph.n_tasks, np.int64)
    counts[comm] = [len(p[0]) for p in parts]
    ptr = np.zeros(graph.n_tasks + 1, np.int64)
    np.cumsum(counts, out=ptr[1:])
    cat = [np.concatenate([p[i] for p in parts]) if parts else np.zeros(0, np.int64)
           for i in range(3)]
    return ptr, cat[0], cat[1], cat[2]


def _collective_seed(seed: int, src, dst) -> int:
    """The ECMP seed of one collective: a hash of ``seed`` and its flows' (src, dst) lists."""
    h = hashlib.blake2b(np.int64(seed).tobytes(), digest_size=8)
    h.update(np.ascontiguousarray(src, np.int64).tobytes())
    h.update(np.ascontiguousarray(dst, np.int64).tobytes())
    return int.from_bytes(h.digest(), "little") >> 1


def _route_all(fabric, graph, controller, ptr, src, dst, seed):
    """Routes of every flow, task by task: the ECMP choice of a task's ``i``-th flow hashes
    ``(seed, the task's (src, dst) lists, i)``, so identical collectives (the same GPU pairs) take
    identical paths, as persistent connections between the same GPUs do, while different
    collectives draw their paths independently (as the released simulator's random choice per
    flow). All-to-alls run on the circuits the controller plans for them; everything else uses the
    fabric's default routing (MixNet: no circuits, the EPS)."""
    n = src.size
    groups = controller.routing_groups(graph) if controller is not None else {-1: None}
    task_group = controller.task_group if controller is not None else \
        np.full(graph.n_tasks, -1, np.int64)
    routes = []
    lengths = np.zeros(n, np.int64)
    for t in np.flatnonzero(np.diff(ptr)).tolist():
        lo, hi = ptr[t], ptr[t + 1]
        r = fabric.route(src[lo:hi], dst[lo:hi], seed=_collective_seed(seed, src[lo:hi], dst[lo:hi]),
                         circuits=groups[int(task_group[t])])
        lengths[lo:hi] = np.diff(r.route_ptr)
        routes.append(r.route_links)
    route_ptr = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=route_ptr[1:])
    links = np.concatenate(routes) if routes else np.zeros(0, np.int64)
    return route_ptr, links


def _session(engine, fabric, route_ptr, route_links, capacity_bps, size, tolerance, packet_params,
             flow_group=None, bottleneck_first=True):
    """A step-by-step engine session over the given flows (all pending); ``flow_group`` (the
    task of each flow) lets the session report whole collectives (``advance_groups``)."""
    if engine == "flow":
        return FlowSession(route_ptr, route_links, capacity_bps, size, tolerance=tolerance,
                           flow_group=flow_group, bottleneck_first=bottleneck_first)
    return PacketSession(route_ptr, route_links, fabric.links.reverse, capacity_bps,
                         fabric.links.delay_ps, size, params=packet_params, flow_group=flow_group)


class _Isolated:
    """Durations of communication tasks run alone on the idle fabric, memoized over identical
    flow problems: same routes up to renaming the links, same sizes, same link capacities and
    delays (an engine's completion times depend on nothing else, so a hit is exact)."""

    def __init__(self, fabric, route_ptr, route_links, size, tolerance, engine, packet_params,
                 bottleneck_first=True):
        self.fabric, self.route_ptr, self.route_links = fabric, route_ptr, route_links
        self.size, self.tolerance = size, tolerance
        self.engine, self.packet_params = engine, packet_params
        self.bottleneck_first = bottleneck_first
        self.memo = {}
        self.simulated = 0
        self.scratch = np.full(fabric.n_links, -1, np.int64)  # for rename_links

    def _problem(self, lo, hi):
        """Flows ``lo:hi`` as a problem of their own: (route_ptr, route_links, size)."""
        rp = self.route_ptr[lo:hi + 1] - self.route_ptr[lo]
        rl = self.route_links[self.route_ptr[lo]:self.route_ptr[hi]]
        return rp, rl, self.size[lo:hi]

    def links(self, lo, hi) -> np.ndarray:
        """The distinct links of flows ``lo:hi``."""
        return rename_links(self._problem(lo, hi)[1], self.scratch)[1]

    def _run(self, lo, hi, capacity_bps, until_ps):
        rp, rl, size = self._problem(lo, hi)
        if self.engine == "flow":  # on its own links only: the state's link arrays stay small
            rl, used = rename_links(rl, self.scratch)
            capacity_bps = capacity_bps[used]
        s = _session(self.engine, self.fabric, rp, rl, capacity_bps, size, self.tolerance,
                     self.packet_params, bottleneck_first=self.bottleneck_first)
        s.start(np.arange(hi - lo), 0)
        s.advance(until_ps)
        return s

    def duration_ps(self, lo, hi, capacity_bps) -> int:
        if hi == lo:
            return 0
        rp, rl, size = self._problem(lo, hi)
        # links renamed by first appearance: collectives that are the same flow problem up to
        # the names of their links (e.g. the same all-to-all in another pod) share one entry
        local, used = rename_links(rl, self.scratch)
        h = hashlib.blake2b(digest_size=16)
        back = self.fabric.links.reverse[used]  # the packet engine's ACK path
        delay = self.fabric.links.delay_ps
        for a in (rp, local, size, capacity_bps[used], delay[used], capacity_bps[back], delay[back]):
            h.update(np.ascontiguousarray(a).tobytes())
        key = h.digest()
        if key not in self.memo:
            self.memo[key] = int(self._run(lo, hi, capacity_bps, _INF - 1).finish_ps.max())
            self.simulated += 1
        return self.memo[key]

    def progress_at(self, lo, hi, capacity_bps, at_ps):
        """Flows ``lo:hi`` run alone from time 0 (flow engine), as they stand at ``at_ps`` once
        every event up to it has run: ``(finish_ps, remaining_bytes)``, -1 and the bytes left for
        flows not finished."""
        s = self._run(lo, hi, capacity_bps, at_ps)
        return s.finish_ps.copy(), s.remaining_bytes(at_ps)


def run_iteration(graph: TaskGraph, fabric: Fabric, *, mode: str = "exact", controller=None,
                  tolerance: float = 0.0, seed: int = 0, progress=None,
                  gpu_map=None, engine: str = "flow", packet_params=None,
                  bottleneck_first: bool = True, solo: bool = True) -> IterationResult:
    """Execute ``graph`` on ``fabric`` (see the module docstring); ``controller`` is an OCS
    controller for MixNet fabrics (:func:`fabricsim.ocs.controller.make_controller`);
    ``gpu_map`` (``int64[H]``, :func:`fabricsim.failures.gpu_map`) moves failed GPUs' traffic;
    ``progress(tasks_done, tasks, sim_ps)`` is called as tasks finish (often: throttle it);
    ``bottleneck_first=False``: the flow engine's slower plain re-solve, for comparisons
    (:class:`fabricsim.engine.FlowSession`); ``solo=False``: in ``exact`` mode, every collective's
    flows run in the shared engine session, even those alone on their links (see the module
    docstring), for comparisons."""
    require(mode in MODES, "mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    require(engine in ENGINES, "engine", f"must be one of {', '.join(ENGINES)}, got {engine!r}")
    require(isinstance(fabric, Fabric), "fabric", "must be a fabricsim Fabric")
    require(fabric.n_hosts >= graph.placement.gpus, "fabric",
            f"has {fabric.n_hosts} hosts, the workload needs {graph.placement.gpus} GPUs")
    t_wall = time.perf_counter()
    n = graph.n_tasks
    ptr, src, dst, size = _task_flows(graph, gpu_map)
    if controller is not None:
        controller.attach(graph, fabric)
    route_ptr, route_links = _route_all(fabric, graph, controller, ptr, src, dst, seed)
    capacity = fabric.link_state()
    if controller is not None:
        capacity = controller.initial_capacity(capacity)
    exact = mode == "exact"
    flow_task = np.repeat(np.arange(n), np.diff(ptr))
    session = _session(engine, fabric, route_ptr, route_links, capacity, size, tolerance,
                       packet_params, flow_group=flow_task,
                       bottleneck_first=bottleneck_first) if exact else None
    # exact mode times a collective alone on its links from the memo (the module docstring)
    solo = exact and solo and engine == "flow" and tolerance == 0.0
    isolated = _Isolated(fabric, route_ptr, route_links, size, tolerance, engine, packet_params,
                         bottleneck_first) if solo or not exact else None
    solo = _Solo(isolated, session, capacity, ptr) if solo else None
    succ_ptr, succ = dag.successors(graph.pred_ptr, graph.pred)
    waiting = np.diff(graph.pred_ptr).astype(np.int64)
    has_flows = np.diff(ptr) > 0
    start = np.full(n, -1, np.int64)
    finish = np.full(n, -1, np.int64)
    held = np.zeros(n, np.int64)  # ps a communication task waited for a blocking reconfiguration
    # (time, seq, kind, payload): 0 task done, 1 start flows, 2 capacity change, 3 a solo
    # collective done (unless the engine took it over)
    events = []
    seq = 0
    pending_caps = []  # capacity changes from the controller not yet in the engine

    def push(t, kind, payload):
        nonlocal seq
        heapq.heappush(events, (int(t), seq, kind, payload))
        seq += 1

    def apply_changes(changes):
        for t, links, caps in changes:
            if exact:
                push(t, 2, (links, caps))
            else:
                capacity[links] = caps  # isolated: the state seen by tasks starting later

    def begin(task, t):
        """Task ``task`` has all its inputs at ``t``."""
        if graph.kind[task] == COMPUTE:
            start[task] = t
            if controller is not None:
                apply_changes(controller.on_compute_start(task, t))
            push(t + int(graph.duration_ps[task]), 0, task)
            return
        go = t
        if controller is not None:
            go, changes = controller.on_comm_ready(task, t)
            apply_changes(changes)
            held[task] = go - t
        start[task] = go
        if exact and has_flows[task]:
            push(go, 1, task)
        else:
            d = 0 if exact else isolated.duration_ps(ptr[task], ptr[task + 1], capacity)
            push(go + d, 0, task)

    def done(task, t):
        finish[task] = t
        if controller is not None:
            apply_changes(controller.on_task_done(task, t))
        for e in range(succ_ptr[task], succ_ptr[task + 1]):
            s = succ[e]
            waiting[s] -= 1
            if waiting[s] == 0:
                begin(s, t)

    for task in np.flatnonzero(waiting == 0):
        begin(int(task), 0)
    n_done = 0
    while True:
        t_py = events[0][0] if events else _INF
        t_eng = session.next_event_ps() if exact else _INF
        if t_eng == _INF and t_py == _INF:
            break
        if t_eng <= t_py:  # run the engine to the next collective's end (or to t_py)
            tasks, fin = session.advance_groups(min(t_py, _INF - 1))
            for task, tf in zip(tasks.tolist(), fin.tolist()):
                done(task, tf)
                n_done += 1
            if progress is not None and tasks.size:
                progress(n_done, n, int(fin.max()))
            continue
        t = t_py
        starts = []
        while events and events[0][0] == t:
            _, _, kind, payload = heapq.heappop(events)
            if kind == 0:
                done(payload, t)
                n_done += 1
            elif kind == 1:
                starts.append(payload)
            elif kind == 2:
                pending_caps.append(payload)
            elif solo.finish(payload):  # 3: not taken over
                done(payload, t)
                n_done += 1
        if exact:
            flows = []  # of the collectives to start in the session at t
            if pending_caps:
                links = np.concatenate([p[0] for p in pending_caps])
                caps = np.concatenate([p[1] for p in pending_caps])
                if solo:
                    solo.take_over(links, t, flows)
                session.set_capacity(links, caps, t)
                capacity[links] = caps
                pending_caps = []
            for task in starts:
                if solo:
                    solo.place(task, t, flows, push)
                else:
                    flows.append(np.arange(ptr[task], ptr[task + 1]))
            if flows:
                session.start(np.concatenate(flows), t)
            if solo:
                solo.end_of_step()
        if progress is not None:
            progress(n_done, n, t)
    if np.any(finish < 0):
        stuck = int(np.flatnonzero(finish < 0)[0])
        raise RuntimeError(f"task {stuck} ({OPS[graph.op[stuck]]}) never finished: a flow is held "
                           "by a link that never comes back")
    iteration_ps = int(finish.max()) if n else 0
    breakdown = _breakdown(graph, start, finish, held, iteration_ps)
    stats = dict(mode=mode, tasks=n, flows=int(src.size), wall_s=time.perf_counter() - t_wall,
                 isolated_simulations=isolated.simulated if isolated else 0)
    if not exact:
        stats["contended_collectives"] = _contended(ptr, route_ptr, route_links, start, finish,
                                                    fabric.n_links)
    stats["engine"] = engine
    if exact:
        stats.update(solo_collectives=solo.started if solo else 0,
                     solo_taken_over=solo.taken_over if solo else 0)
        stats.update({f"engine_{k}": v for k, v in session.stats().items()})
    return IterationResult(graph, iteration_ps, start, finish, breakdown,
                           controller.records if controller is not None else [], stats)


class _Solo:
    """``exact`` mode's solo collectives (see the module docstring): each holds its links
    (``owner``) until it is done or the shared session takes it over. ``capacity`` is the
    runner's copy of the session's link capacities, kept current by the runner."""

    def __init__(self, isolated: _Isolated, session: FlowSession, capacity, ptr):
        self.isolated, self.session, self.capacity, self.ptr = isolated, session, capacity, ptr
        n_links = capacity.shape[0]
        self.owner = np.full(n_links, -1, np.int64)  # the solo collective on each link
        self.shared = np.zeros(n_links, bool)  # links given to the session at the current time
        self.marked = []  # the links set in ``shared`` (cleared by end_of_step)
        self.runs = {}  # solo collective -> (start ps, its links)
        self.started = self.taken_over = 0

    def finish(self, task) -> bool:
        """Solo collective ``task`` is done (its timed end), unless it was taken over."""
        run = self.runs.pop(task, None)
        if run is None:
            return False
        self.owner[run[1]] = -1
        return True

    def _give(self, links):
        self.shared[links] = True
        self.marked.append(links)

    def take_over(self, links, t, flows) -> None:
        """The session takes over, at ``t``, the solo collectives on ``links``: their flows as
        they stand after running alone since they started (``resume``), or, started at ``t``
        itself, appended to ``flows`` to start with the others."""
        held = self.owner[links]
        for task in np.unique(held[held >= 0]).tolist():
            t0, used = self.runs.pop(task)
            self.owner[used] = -1
            self._give(used)
            lo, hi = self.ptr[task], self.ptr[task + 1]
            if t == t0:
                flows.append(np.arange(lo, hi))
            else:
                fin, rem = self.isolated.progress_at(lo, hi, self.capacity, t - t0)
                self.session.resume(np.arange(lo, hi), rem, np.where(fin >= 0, fin + t0, -1), t)
            self.taken_over += 1

    def place(self, task, t, flows, push) -> None:
        """Collective ``task`` starts at ``t``: solo if none of its links carries a flow or is
        down (its end pushed as event 3), else its flows join ``flows`` for the session."""
        lo, hi = self.ptr[task], self.ptr[task + 1]
        used = self.isolated.links(lo, hi)
        self.take_over(used, t, flows)
        if self.shared[used].any() or self.session.links_active(used) or \
                not np.all(self.capacity[used] > 0):
            self._give(used)
            flows.append(np.arange(lo, hi))
            return
        self.owner[used] = task
        self.runs[task] = (t, used)
        push(t + self.isolated.duration_ps(lo, hi, self.capacity), 3, task)
        self.started += 1

    def end_of_step(self) -> None:
        """The runner moves on from the current time: ``shared`` is empty again."""
        for links in self.marked:
            self.shared[links] = False
        self.marked.clear()


def _contended(ptr, route_ptr, route_links, start, finish, n_links) -> int:
    """Communication tasks that ran while another one used one of their links: 0 means the
    isolated mode was exact for this run."""
    tasks = np.flatnonzero(np.diff(ptr))
    if tasks.size < 2:
        return 0
    scratch = np.full(n_links, -1, np.int64)
    links = [rename_links(route_links[route_ptr[ptr[t]]:route_ptr[ptr[t + 1]]], scratch)[1]
             for t in tasks]  # each task's distinct links
    events = sorted([(int(finish[t]), 0, i) for i, t in enumerate(tasks)]
                    + [(int(start[t]), 1, i) for i, t in enumerate(tasks)])
    busy = np.zeros(n_links, np.int64)  # collectives in flight on each link
    hit = np.zeros(tasks.size, bool)
    active = set()
    for _, kind, i in events:  # at equal times finishes (0) come before starts (1)
        if kind == 0:
            busy[links[i]] -= 1
            active.discard(i)
            continue
        if busy[links[i]].any():
            hit[i] = True
            for j in active:
                if not hit[j] and np.intersect1d(links[i], links[j]).size:
                    hit[j] = True
        busy[links[i]] += 1
        active.add(i)
    return int(hit.sum())


def _breakdown(graph, start, finish, held, iteration_ps):
    """Per GPU: compute time, and idle time charged to the predecessor that finished last
    (``int64[gpus, len(BREAKDOWN_KINDS)]``; vectorized over tasks)."""
    gpus = graph.placement.gpus
    out = np.zeros((gpus, len(BREAKDOWN_KINDS)), np.int64)
    compute = np.flatnonzero(graph.kind == COMPUTE)
    if compute.size == 0:  # communication only: every GPU waits throughout
        out[:, BREAKDOWN_KINDS.index("wait")] = iteration_ps
        return out
    np.add.at(out[:, 0], graph.gpu[compute], graph.duration_ps[compute])
    order = compute[np.lexsort((start[compute], graph.gpu[compute]))]
    og = graph.gpu[order]
    first = np.r_[True, og[1:] != og[:-1]]
    last = np.r_[og[1:] != og[:-1], True]
    gap = start[order] - np.where(first, 0, np.r_[0, finish[order][:-1]])
    # the predecessor that finished last, per task: the last edge after sorting by finish
    n_pred = np.diff(graph.pred_ptr)
    edge_task = np.repeat(np.arange(graph.n_tasks), n_pred)
    by = np.lexsort((finish[graph.pred], edge_task))
    gate = np.full(graph.n_tasks, -1, np.int64)
    has = n_pred > 0
    gate[has] = graph.pred[by][graph.pred_ptr[1:][has] - 1]
    # after its last computation a GPU waits for the task that ends the iteration
    tail_gate = int(np.argmax(finish)) if finish.size else -1
    rows = np.r_[og, og[last]]
    gaps = np.r_[gap, iteration_ps - finish[order][last]]
    gates = np.r_[gate[order], np.full(int(last.sum()), tail_gate)]
    keep = gaps > 0
    rows, gaps, gates = rows[keep], gaps[keep], gates[keep]
    safe = np.maximum(gates, 0)
    is_comm = (gates >= 0) & (graph.kind[safe] != COMPUTE)
    stall = np.where(is_comm, np.minimum(gaps, held[safe]), 0)
    kind = np.where(is_comm, _KIND_OF_OP[graph.op[safe]], BREAKDOWN_KINDS.index("wait"))
    np.add.at(out, (rows, kind), gaps - stall)
    np.add.at(out[:, BREAKDOWN_KINDS.index("ocs")], rows, stall)
    idle = np.setdiff1d(np.arange(gpus), og)  # GPUs without computation idle throughout
    out[idle, BREAKDOWN_KINDS.index("wait")] += iteration_ps
    return out
