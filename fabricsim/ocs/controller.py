"""Regional OCS controllers: which circuits each all-to-all runs on, and when regions re-wire.

One controller per region (a contiguous block of servers; by default one EP group). The circuit
configuration for (layer, micro-batch) is ``allocate_circuits`` of the region's server-level
dispatch demand, symmetrized (a circuit carries both directions, so one configuration serves the
dispatch, the combine and both backward all-to-alls). A region's all-to-alls run one after another
(the task graph serializes an EP group's passes), so the sequence of configurations is planned
when the controller is attached; only the timing happens at run time.

Policies (reference ``mfabric.md`` 3.2-3.3; ``oracle-blocking`` is the released simulator's):

``oracle-blocking`` (default)
    When the forward dispatch (FP-1) of (layer, micro-batch) is ready, the region re-wires to the
    exact demand and the dispatch waits ``delay + 10 ps`` (the released simulator re-wires for every
    new (layer, micro-batch), even to an identical configuration, unless ``skip_unchanged``). The
    combine (FP-2) reuses it. The backward re-wiring starts when the first computation feeding the
    backward combine (BP-1) starts (the released "Aggregate" backward task) and is hidden unless that
    computation is shorter than the delay. At most one re-wiring per (layer, micro-batch, region).
``reuse-previous``
    FP-1 runs at once on the region's current circuits (the previous layer's); the region then
    re-wires to the exact demand while the experts compute, and FP-2 waits for it if needed.
``predict`` (MixNet-Copilot)
    FP-1's circuits come from a prediction of the layer's demand from the previous layer's actual
    load (:class:`fabricsim.ocs.copilot.CopilotPredictor`, fitted over earlier iterations); the
    region re-wires to it when the layer's attention starts (FP-1 waits if that is shorter than the
    delay) and to the exact demand after FP-1, as ``reuse-previous``. The traffic is the actual one,
    so a misprediction costs time.
``static``
    Never re-wires: the initial (seeded random) circuits throughout.

A communication task of a region that is re-wiring waits until the re-wiring ends (with
``hold="region"`` its flows would be held by the circuits at capacity 0 anyway; so ``hold`` only
decides which links the capacity events take down, not when tasks start); EPS traffic of other
tasks is unaffected. A region never re-wires before the all-to-all planned on its current circuits
is done: a re-wiring triggered earlier (e.g. by a computation that starts before the previous
layer's backward dispatch has run) waits for it.
"""

from __future__ import annotations

import numpy as np

from fabricsim.errors import require
from fabricsim.mixnet import HOLD_MODES, MixNetRouting, reconfiguration_events
from fabricsim.ocs.allocate import VARIANTS, allocate_circuits
from fabricsim.workload.taskgraph import COMPUTE, OPS

__all__ = ["RegionalController", "POLICIES", "make_controller"]

POLICIES = ("oracle-blocking", "reuse-previous", "predict", "static")
_OP = {name: i for i, name in enumerate(OPS)}
_A2A = [_OP[o] for o in ("ep_dispatch", "ep_combine", "ep_combine_bwd", "ep_dispatch_bwd")]
_SLACK_PS = 10  # the released simulator starts a blocked dispatch reconf_delay + 10 ps later


class RegionalController:
    """Plans and times the circuit configurations of every region (see the module docstring)."""

    def __init__(self, *, policy: str = "oracle-blocking", delay_ps: int = 25_000_000_000,
                 variant: str = "reference", hold: str = "region", skip_unchanged: bool = False,
                 predictor=None):
        require(policy in POLICIES, "ocs.policy", f"must be one of {', '.join(POLICIES)}, got {policy!r}")
        require(variant in VARIANTS, "ocs.variant",
                f"must be one of {', '.join(VARIANTS)}, got {variant!r}")
        require(hold in HOLD_MODES, "ocs.hold", f"must be one of {', '.join(HOLD_MODES)}, got {hold!r}")
        require(isinstance(delay_ps, (int, np.integer)) and delay_ps >= 0, "ocs.delay_ps",
                f"must be an integer >= 0 (picoseconds), got {delay_ps!r}")
        self.policy, self.delay_ps, self.variant, self.hold = policy, int(delay_ps), variant, hold
        self.skip_unchanged = skip_unchanged
        self.predictor = predictor
        self.records = []

    # ----- planning ------------------------------------------------------------------------------
    def attach(self, graph, fabric) -> None:
        """Plan the configuration of every all-to-all of ``graph`` on MixNet ``fabric``."""
        rt = fabric.routing
        require(isinstance(rt, MixNetRouting), "fabric", "an OCS controller needs a MixNet fabric")
        self.graph, self.fabric, self.rt = graph, fabric, rt
        r = rt.region_servers
        self.current = rt.circuits.copy()
        self.busy_until = np.zeros(rt.n_regions, np.int64)
        self.in_flight = np.zeros(rt.n_regions, np.int64)  # all-to-alls ready or running
        self.pending = [dict() for _ in range(rt.n_regions)]  # served task -> (cfg, key, phase)
        self.last_key = [None] * rt.n_regions
        self.a2a_done = np.zeros(graph.n_tasks, bool)
        self.configs = []  # (region, int64[R, R])
        self.task_group = np.full(graph.n_tasks, -1, np.int64)
        self.task_region = np.full(graph.n_tasks, -1, np.int64)
        self.exact = {}  # (region, layer, micro_batch) -> config index
        self.dispatch = {}  # (region, layer, micro_batch) -> its ep_dispatch task
        a2a = np.flatnonzero(np.isin(graph.op, _A2A))
        for t in a2a.tolist():
            servers = rt.host_server[graph.placement.gpu(graph.stage[t], graph.dp_rank[t], 0, 0)]
            region = int(servers // r)
            self.task_region[t] = region
            if graph.op[t] != _OP["ep_dispatch"]:
                continue
            self.dispatch[(region, int(graph.layer[t]), int(graph.micro_batch[t]))] = t
            src, dst, size = graph.flows(t)
            d = np.zeros((r, r))
            np.add.at(d, (rt.host_server[src] - region * r, rt.host_server[dst] - region * r), size)
            require(np.all(rt.host_server[src] // r == region) and np.all(rt.host_server[dst] // r == region),
                    "fabric.region_servers", "an EP group must lie inside one OCS region; use "
                    "region_servers = ep * tp / gpus_per_server (or a multiple of it)")
            self.exact[(region, int(graph.layer[t]), int(graph.micro_batch[t]))] = \
                self._add_config(region, self._allocate(d, region))
        self._plan_sequences(a2a)

    def _allocate(self, demand, region) -> np.ndarray:
        """Circuits for a region's server demand; servers with failed OCS ports (failures) keep
        only the circuits their working ports can hold (the least-loaded go first)."""
        from fabricsim.failures import limit_degree

        rt = self.rt
        link_gbps = rt.link_bps / 1e9
        eps_gbps = self.fabric.params["eps_gbps"]
        if self.variant == "minmax":
            c = allocate_circuits(demand, rt.alpha, "minmax", link_gbps=link_gbps, eps_gbps=eps_gbps)
        else:
            c = allocate_circuits(demand, rt.alpha, self.variant)  # symmetrizes it itself
        r = rt.region_servers
        degree = rt.ocs_degree[region * r:(region + 1) * r]
        if np.any(degree < rt.alpha):
            c = limit_degree(c[None], degree, r, demand=[demand])[0]
        return c

    def _add_config(self, region, c) -> int:
        self.configs.append((region, np.asarray(c, np.int64)))
        return len(self.configs) - 1

    def _plan_sequences(self, a2a) -> None:
        """Which configuration each all-to-all runs on, region by region, in execution order."""
        g = self.graph
        # task -> [(kind, region, config, key, served task)]; kind "ready" | "start" | "done":
        # when the task becomes ready, starts computing or is done, the region re-wires for the
        # served all-to-all (at once if the region's OCS is idle and the all-to-all before the
        # served one is done, else when both hold)
        self.trigger = {}
        self.next_a2a = {}  # all-to-all -> the region's next one
        state = {reg: self._add_config(reg, self.rt.circuits[reg]) for reg in range(self.rt.n_regions)}
        prev_actual = {}
        last = {}
        for t in a2a.tolist():  # task ids follow each region's execution order
            reg = int(self.task_region[t])
            if reg in last:
                self.next_a2a[last[reg]] = t
            last[reg] = t
            key = (reg, int(g.layer[t]), int(g.micro_batch[t]))
            op = OPS[g.op[t]]
            if self.policy == "static":
                self.task_group[t] = state[reg]
                continue
            exact = self.exact[key]
            if op == "ep_dispatch" and self.policy == "oracle-blocking":
                self.trigger.setdefault(t, []).append(("ready", reg, exact, key, t))
                state[reg] = exact
            elif op == "ep_dispatch":
                if self.policy == "predict":  # from the same micro-batch's previous layer only
                    cfg = self._predicted(reg, key, prev_actual.get((reg, key[2])))
                    if cfg is not None:
                        feeder = self._first_compute_pred(t)
                        self.trigger.setdefault(feeder if feeder >= 0 else t, []).append(
                            ("start" if feeder >= 0 else "ready", reg, cfg, None, t))
                        state[reg] = cfg
                self.task_group[t] = state[reg]
                # the combine after it runs on the exact configuration
                self.trigger.setdefault(t, []).append(("done", reg, exact, key, t))
                state[reg] = exact
                prev_actual[(reg, key[2])] = key
                continue
            elif op == "ep_combine_bwd":
                feeder = self._first_compute_pred(t)
                self.trigger.setdefault(feeder if feeder >= 0 else t, []).append(
                    ("start" if feeder >= 0 else "ready", reg, exact, key, t))
                state[reg] = exact
            self.task_group[t] = state[reg]
        self.prev_a2a = {nxt: t for t, nxt in self.next_a2a.items()}

    def _first_compute_pred(self, task, depth: int = 3) -> int:
        """The earliest-created computation feeding ``task``: among its predecessors, else through
        up to ``depth`` levels of communication (a TP all-reduce, a PP transfer from the next
        stage, whose computation is then the "later layer" the re-wiring hides behind); -1 if
        none. Never through an all-to-all: the computation before the previous layer's backward
        dispatch runs while that dispatch still needs the previous layer's circuits."""
        g = self.graph
        frontier = np.array([task])
        for _ in range(depth):
            preds = np.concatenate([g.pred[g.pred_ptr[p]:g.pred_ptr[p + 1]] for p in frontier])
            comp = preds[g.kind[preds] == COMPUTE]
            if comp.size:
                return int(comp.min())
            frontier = np.unique(preds[~np.isin(g.op[preds], _A2A)])
            if not frontier.size:
                return -1
        return -1

    def _predicted(self, region, key, prev_key):
        """Configuration for FP-1 of ``key`` from the predictor (None: keep the current one)."""
        if self.predictor is None or prev_key is None:
            return None
        g, r = self.graph, self.rt.region_servers
        ep_prev = g.a2a_tokens[g.a2a_matrix[self.dispatch[prev_key]]]
        pred = self.predictor.predict_matrix(key[1] - g.placement.model.dense_layers, ep_prev)
        return self._add_config(region, self._allocate(self._rank_to_server(pred, r), region))

    def _rank_to_server(self, rank_tokens, r):
        """Server-level demand (``[R, R]`` bytes) of a rank-level token matrix."""
        pl = self.graph.placement
        ranks_per_server = max(1, pl.gpus_per_server // pl.tp)
        ep = rank_tokens.shape[0]
        srv = np.arange(ep) // ranks_per_server
        d = np.zeros((r, r))
        np.add.at(d, (srv[:, None].repeat(ep, 1), srv[None, :].repeat(ep, 0)), rank_tokens)
        np.fill_diagonal(d, 0)
        return d * self.graph.bytes_per_token

    def routing_groups(self, graph) -> dict:
        """``{group: circuits int64[regions, R, R]}`` for the runner's routing; group -1 (every
        task but the all-to-alls) has no circuits: PP and DP traffic uses the EPS."""
        rt = self.rt
        empty = np.zeros_like(rt.circuits)
        groups = {-1: empty}
        for i in np.unique(self.task_group[self.task_group >= 0]).tolist():
            reg, c = self.configs[i]
            full = empty.copy()
            full[reg] = c
            groups[i] = full
        return groups

    def initial_capacity(self, capacity_bps):
        links, caps = self.rt.capacities(self.rt.circuits)
        capacity_bps = capacity_bps.copy()
        capacity_bps[links] = caps
        return capacity_bps

    # ----- run time ------------------------------------------------------------------------------
    def _reconfigure(self, region, config, t, key, phase):
        """Start re-wiring ``region`` to configuration ``config`` at ``t``; returns the changes."""
        if (key is not None and self.last_key[region] == key) or self.rt.region_servers < 2:
            return []  # done already for this (layer, micro-batch), or a region without pairs
        target = self.configs[config][1]
        if self.skip_unchanged and np.array_equal(target, self.current[region]):
            self.last_key[region] = key
            return []
        t = max(int(t), int(self.busy_until[region]))
        ev = reconfiguration_events(self.fabric, region, self.current[region], target, t,
                                    self.delay_ps, self.hold)
        self.current[region] = target
        self.last_key[region] = key
        self.busy_until[region] = t + self.delay_ps
        i, j = np.nonzero(np.triu(target))
        self.records.append(dict(time_ps=t, end_ps=t + self.delay_ps, region=region,
                                 layer=-1 if key is None else key[1],
                                 micro_batch=-1 if key is None else key[2], phase=phase,
                                 pairs=list(zip(i.tolist(), j.tolist(), target[i, j].tolist()))))
        changes = []
        for when in np.unique(ev.time_ps).tolist():
            sel = ev.time_ps == when
            changes.append((when, ev.link[sel], ev.capacity_bps[sel]))
        return changes

    def _fire(self, task, kind, t):
        """Re-wirings triggered by ``task`` (``kind``): now if the region's OCS is idle and the
        all-to-all before the served one is done, else deferred until it is done."""
        changes = []
        for k, reg, cfg, key, served in self.trigger.get(task, ()):
            if k != kind:
                continue
            phase = OPS[self.graph.op[task]] if kind != "start" else "compute-start"
            prev = self.prev_a2a.get(served)
            if (self.in_flight[reg] and served != task) or (prev is not None
                                                            and not self.a2a_done[prev]):
                self.pending[reg][served] = (cfg, key, phase)
            else:
                changes += self._reconfigure(reg, cfg, t, key, phase)
        return changes

    def _start_pending(self, reg, served, t):
        item = self.pending[reg].pop(served, None)
        return self._reconfigure(reg, item[0], t, item[1], item[2]) if item else []

    def on_comm_ready(self, task, t):
        """``(start_ps, capacity changes)`` of a communication task ready at ``t``."""
        reg = self.task_region[task]
        if reg < 0:
            return t, []
        changes = self._start_pending(reg, task, t)  # deferred while the previous one ran
        changes += self._fire(task, "ready", t)
        self.in_flight[reg] += 1
        if changes and self.graph.op[task] == _OP["ep_dispatch"]:
            return int(self.busy_until[reg]) + _SLACK_PS, changes
        return max(t, int(self.busy_until[reg])), changes

    def on_compute_start(self, task, t):
        return self._fire(task, "start", t)

    def on_task_done(self, task, t):
        reg = self.task_region[task]
        changes = []
        if reg >= 0:
            self.in_flight[reg] -= 1
            self.a2a_done[task] = True
            changes += self._fire(task, "done", t)
            nxt = self.next_a2a.get(task)
            if nxt is not None and not self.in_flight[reg]:
                changes += self._start_pending(reg, nxt, t)  # hides behind the computation
        return changes


def make_controller(policy: str = "oracle-blocking", *, delay_ms: float = 25.0, **kw):
    """A :class:`RegionalController` with the delay in milliseconds (1 us to 10 s and more)."""
    require(isinstance(delay_ms, (int, float)) and delay_ms >= 0, "ocs.delay_ms",
            f"must be a number >= 0, got {delay_ms!r}")
    return RegionalController(policy=policy, delay_ps=int(round(delay_ms * 1e9)), **kw)
