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

A communication task of a region that is re-wiring waits until the re-wiring ends (its flows would
be held by the circuits at capacity 0 anyway); EPS traffic of other tasks is unaffected.
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
        self.last_key = [None] * rt.n_regions
        self.configs = []  # (region, int64[R, R])
        self.task_group = np.full(graph.n_tasks, -1, np.int64)
        self.task_region = np.full(graph.n_tasks, -1, np.int64)
        self.exact = {}  # (region, layer, micro_batch) -> config index
        a2a = np.flatnonzero(np.isin(graph.op, _A2A))
        for t in a2a.tolist():
            src, dst, size = graph.flows(t)
            servers = rt.host_server[graph.placement.gpu(graph.stage[t], graph.dp_rank[t], 0, 0)]
            region = int(servers // r)
            self.task_region[t] = region
            if graph.op[t] != _OP["ep_dispatch"]:
                continue
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
        self.trigger = {}  # task -> list of (kind, region, config); kind "ready" | "start" | "done"
        state = {reg: self._add_config(reg, self.rt.circuits[reg]) for reg in range(self.rt.n_regions)}
        prev_actual = {}
        for t in a2a.tolist():  # task ids follow each region's execution order
            reg = int(self.task_region[t])
            key = (reg, int(g.layer[t]), int(g.micro_batch[t]))
            op = OPS[g.op[t]]
            if self.policy == "static":
                self.task_group[t] = state[reg]
                continue
            exact = self.exact[key]
            if op == "ep_dispatch" and self.policy == "oracle-blocking":
                self.trigger.setdefault(t, []).append(("ready", reg, exact, key))
                state[reg] = exact
            elif op == "ep_dispatch":
                if self.policy == "predict":
                    cfg = self._predicted(reg, key, prev_actual.get(reg))
                    if cfg is not None:
                        feeder = self._first_compute_pred(t)
                        self.trigger.setdefault(feeder, []).append(("start", reg, cfg, None))
                        state[reg] = cfg
                self.task_group[t] = state[reg]
                self.trigger.setdefault(t, []).append(("done", reg, exact, key))
                state[reg] = exact
                prev_actual[reg] = key
                continue
            elif op == "ep_combine_bwd":
                feeder = self._first_compute_pred(t)
                self.trigger.setdefault(feeder if feeder >= 0 else t, []).append(
                    ("start" if feeder >= 0 else "ready", reg, exact, key))
                state[reg] = exact
            self.task_group[t] = state[reg]

    def _first_compute_pred(self, task) -> int:
        """The earliest-created compute task among ``task``'s predecessors (-1 if none)."""
        g = self.graph
        preds = g.pred[g.pred_ptr[task]:g.pred_ptr[task + 1]]
        comp = preds[g.kind[preds] == COMPUTE]
        if comp.size:
            return int(comp.min())
        for p in preds.tolist():  # through a TP all-reduce
            pp = g.pred[g.pred_ptr[p]:g.pred_ptr[p + 1]]
            comp = pp[g.kind[pp] == COMPUTE]
            if comp.size:
                return int(comp.min())
        return -1

    def _predicted(self, region, key, prev_key):
        """Configuration for FP-1 of ``key`` from the predictor (None: keep the current one)."""
        if self.predictor is None or prev_key is None:
            return None
        g, r = self.graph, self.rt.region_servers
        ep_prev = g.a2a_tokens[g.a2a_matrix[self._dispatch_task(prev_key)]]
        pred = self.predictor.predict_matrix(key[1] - g.placement.model.dense_layers, ep_prev)
        return self._add_config(region, self._allocate(self._rank_to_server(pred, r), region))

    def _dispatch_task(self, key):
        g = self.graph
        reg, layer, mb = key
        cand = np.flatnonzero((g.op == _OP["ep_dispatch"]) & (g.layer == layer)
                              & (g.micro_batch == mb) & (self.task_region == reg))
        return int(cand[0])

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
        changes = []
        for k, reg, cfg, key in self.trigger.get(task, ()):
            if k == kind:
                phase = OPS[self.graph.op[task]] if kind != "start" else "compute-start"
                changes += self._reconfigure(reg, cfg, t, key, phase)
        return changes

    def on_comm_ready(self, task, t):
        """``(start_ps, capacity changes)`` of a communication task ready at ``t``."""
        changes = self._fire(task, "ready", t)
        reg = self.task_region[task]
        go = t
        if reg >= 0:
            if changes and self.graph.op[task] == _OP["ep_dispatch"]:
                go = int(self.busy_until[reg]) + _SLACK_PS
            else:
                go = max(t, int(self.busy_until[reg]))
        return go, changes

    def on_compute_start(self, task, t):
        return self._fire(task, "start", t)

    def on_task_done(self, task, t):
        return self._fire(task, "done", t)


def make_controller(policy: str = "oracle-blocking", *, delay_ms: float = 25.0, **kw):
    """A :class:`RegionalController` with the delay in milliseconds (1 us to 10 s and more)."""
    require(isinstance(delay_ms, (int, float)) and delay_ms >= 0, "ocs.delay_ms",
            f"must be a number >= 0, got {delay_ms!r}")
    return RegionalController(policy=policy, delay_ps=int(round(delay_ms * 1e9)), **kw)
