"""Fabrics as arrays: nodes, directed links, and up-down (ECMP) routing tables.

A :class:`Fabric` is static structure: which nodes exist, which directed links join them, each
link's nominal capacity, propagation delay and kind. The capacities that change during a run (an
OCS controller re-wiring circuits) are *state*, kept apart: :meth:`Fabric.link_state` returns a
fresh ``float64[L]`` copy that a run may modify.

Builders (all links at ``link_gbps`` unless said otherwise; 1 µs links by default):

- :func:`fat_tree` - 3-tier k-ary fat-tree, optionally oversubscribed r:1 at the edge tier, whose
  hosts are GPUs (one NIC each, servers of G GPUs joined by NVLink) or servers (one aggregated link).
- :func:`rail_optimized` - GPU ``i`` of every server attaches to the rail-``i`` switches; rails meet
  at the tier above (``build="fat-tree"``, the default) or at a spine tier (``build="superpod"``).

NIC pooling. Every builder (these two, :func:`fabricsim.mixnet.mixnet`,
:func:`fabricsim.topoopt.topoopt`) takes ``nic_pooling``, one of :data:`NIC_POOLING`, which says how
a server's NICs carry its GPUs' inter-server traffic:

- ``released`` (default): as the released simulator builds each fabric (reference ``mfabric.md``
  4.2 and 5.3): one NIC per GPU on the fat-trees and the rail-optimized fabric; server-level
  aggregates on MixNet (an ``(8 - alpha) B`` EPS link per server, one ``c x B`` link per server
  pair with ``c`` circuits) and TopoOpt (a pair's ``c`` parallel links merged into ``c x B``).
- ``pooled``: every fabric pools a server's NICs (NVLink + PXN-style: traffic to another server
  may leave through any of them): the fat-trees get server hosts with one ``G x B`` link each, the
  rail-optimized fabric PXN routing, MixNet and TopoOpt stay as released.
- ``per-nic``: every inter-server flow goes through one NIC of ``B`` at each end: the fat-trees and
  the rail-optimized fabric as released, MixNet with NIC-level EPS and one circuit per flow,
  TopoOpt with a pair's parallel links kept apart, one per flow.

On every pooled reading, as in the released MixNet model (reference 4.2: "no NVSwitch hop
modelled"), the GPU -> NIC hop over NVLink is not part of an inter-server route; so a single GPU
may get the whole pool (``G x B``, 6.4 Tb/s at G = 8 and B = 800 Gb/s) even where its NVLink
(600 GiB/s = 5.15 Tb/s) could not feed it.

Every builder produces a 2- or 3-tier Clos, described by :class:`ClosRouting`, whose shortest up-down
paths are enumerated in closed form: same edge switch 1 path; same pod ``U`` paths (one per edge
uplink); different pods ``U * V`` paths (edge uplink times aggregation uplink). One path per flow is
picked by a seeded hash of the flow's index (ECMP); GPUs of one server talk over NVLink.

Array layouts: node arrays are ``[N]``, link arrays ``[L]``, host arrays ``[H]`` (host index
0 .. H-1, the ids that flows use).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from fabricsim.errors import ConfigError, require
from fabricsim.kernels.routing import route_clos

__all__ = [
    "Fabric",
    "Nodes",
    "Links",
    "ClosRouting",
    "Routes",
    "fat_tree",
    "rail_optimized",
    "NODE_KINDS",
    "LINK_KINDS",
    "PATH_KINDS",
    "NVLINK_DEFAULT_GBPS",
    "LINK_DELAY_DEFAULT_PS",
    "NIC_POOLING",
    "PxnRouting",
]

# Enumerations stored as small integers in the arrays; the tuples give their names.
NODE_KINDS = ("gpu", "server", "switch", "ocs")
NODE_GPU, NODE_SERVER, NODE_SWITCH, NODE_OCS = range(4)
TIERS = ("host", "edge", "agg", "core", "nvswitch")
TIER_HOST, TIER_EDGE, TIER_AGG, TIER_CORE, TIER_NVSWITCH = range(5)
LINK_KINDS = ("nvlink", "eps", "ocs")
LINK_NVLINK, LINK_EPS, LINK_OCS = range(3)
PATH_KINDS = ("nvlink", "tor", "pod", "core", "ocs", "direct", "multihop")

#: The released MixNet simulator's intra-server bandwidth: 600 GiB/s per GPU, in Gbit/s.
NVLINK_DEFAULT_GBPS = 600 * 2**30 * 8 / 1e9
#: Largest fat-tree radix the builder picks by itself.
_MAX_K = 256
#: Per-link propagation delay of the paper's simulations: 1 µs.
LINK_DELAY_DEFAULT_PS = 1_000_000
#: How a server's NICs carry its GPUs' traffic, the ``nic_pooling`` of every builder (see the
#: module docstring).
NIC_POOLING = ("released", "pooled", "per-nic")


class Nodes(NamedTuple):
    """Node arrays, all ``[N]``; ids not applicable are -1."""

    kind: np.ndarray  # int8, index into NODE_KINDS
    tier: np.ndarray  # int8, index into TIERS
    server: np.ndarray  # int64, server index of GPUs, servers and NVSwitches
    pod: np.ndarray  # int64, pod of hosts, edge and aggregation switches
    rail: np.ndarray  # int64, rail (GPU rank in its server) of GPUs and rail switches


class Links(NamedTuple):
    """Directed link arrays, all ``[L]``."""

    src: np.ndarray  # int64 node id
    dst: np.ndarray  # int64 node id
    capacity_bps: np.ndarray  # float64 nominal capacity (run-time capacity is separate state)
    delay_ps: np.ndarray  # int64 propagation delay
    kind: np.ndarray  # int8, index into LINK_KINDS
    reverse: np.ndarray  # int64, the link in the opposite direction (its duplex twin)


class ClosRouting(NamedTuple):
    """Closed-form up-down routing tables of a 2- or 3-tier Clos.

    Hosts ``[H]``: ``host_edge`` edge switch (0 .. E-1), ``host_up``/``host_down`` the host->edge and
    edge->host links, ``host_server`` server index, ``host_nvl_up``/``host_nvl_down`` the links to and
    from the server's NVSwitch (-1 when hosts are servers).
    Edges ``[E]``: ``edge_pod``; ``edge_up[E, U]`` the edge's uplinks and ``edge_down[E, U]`` the
    matching downlinks (same aggregation switch, same parallel link), so that a same-pod path is
    ``edge_up[e1, u], edge_down[e2, u]``.
    Aggregation switches ``[A]`` (``A = pods * aggs_per_pod``, agg id ``pod * aggs_per_pod + u // par``):
    ``agg_up[A, V]`` to the cores and ``agg_down[A, V]`` back, matched by ``v``. ``V = 0`` means a
    2-tier fabric (no cores).
    """

    host_edge: np.ndarray
    host_up: np.ndarray
    host_down: np.ndarray
    host_server: np.ndarray
    host_nvl_up: np.ndarray
    host_nvl_down: np.ndarray
    edge_pod: np.ndarray
    edge_up: np.ndarray
    edge_down: np.ndarray
    edge_par: int
    agg_up: np.ndarray
    agg_down: np.ndarray

    def route(self, src, dst, seed=0, circuits=None) -> "Routes":
        """One ECMP path per flow (``src``/``dst`` checked host indices); see :meth:`Fabric.route`."""
        ptr, links, kind = route_clos(
            src, dst, np.uint64(seed & 0xFFFFFFFFFFFFFFFF), self.host_edge, self.host_up,
            self.host_down, self.host_server, self.host_nvl_up, self.host_nvl_down, self.edge_pod,
            self.edge_up, self.edge_down, self.edge_par, self.agg_up, self.agg_down,
        )
        return Routes(ptr, links, kind)

    def paths(self, s: int, d: int) -> list:
        """All shortest up-down paths between hosts ``s`` and ``d`` (lists of link ids)."""
        if s == d:
            return [[]]
        if self.host_nvl_up[s] >= 0 and self.host_server[s] == self.host_server[d]:
            return [[int(self.host_nvl_up[s]), int(self.host_nvl_down[d])]]
        es, ed = self.host_edge[s], self.host_edge[d]
        up, down = int(self.host_up[s]), int(self.host_down[d])
        if es == ed:
            return [[up, down]]
        n_up = self.edge_up.shape[1]
        if self.edge_pod[es] == self.edge_pod[ed]:
            return [[up, int(self.edge_up[es, u]), int(self.edge_down[ed, u]), down]
                    for u in range(n_up)]
        out = []
        aggs_per_pod = n_up // self.edge_par
        for u in range(n_up):
            a_s = self.edge_pod[es] * aggs_per_pod + u // self.edge_par
            a_d = self.edge_pod[ed] * aggs_per_pod + u // self.edge_par
            for v in range(self.agg_up.shape[1]):
                out.append([up, int(self.edge_up[es, u]), int(self.agg_up[a_s, v]),
                            int(self.agg_down[a_d, v]), int(self.edge_down[ed, u]), down])
        return out


class Routes(NamedTuple):
    """One route per flow, as CSR arrays.

    ``route_ptr : int64[F + 1]``, ``route_links : int64[nnz]`` (link ids in path order),
    ``path_kind : int8[F]`` (index into :data:`PATH_KINDS`).
    """

    route_ptr: np.ndarray
    route_links: np.ndarray
    path_kind: np.ndarray


class PxnRouting(NamedTuple):
    """PXN routing on a rail-optimized fabric (NCCL 2.12, reference ``baselines.md`` section 4).

    A flow from GPU ``(s, i)`` to GPU ``(d, j)`` of another server is handed over NVLink to GPU
    ``(s, j)`` of its own server, whose NIC is on the destination's rail, and takes the rail's ECMP
    path from there (``clos``: the fabric's :class:`ClosRouting`; GPU ``h`` is rank ``h % G`` of
    server ``h // G``). The NVLink hand-over is not part of the route, as the GPU -> NIC hop of the
    other pooled readings (see the module docstring). Flows inside a server take NVLink.
    """

    clos: ClosRouting
    gpus_per_server: int

    @property
    def host_server(self) -> np.ndarray:
        return self.clos.host_server

    def relay(self, src, dst):
        """``int64[F]``: the GPU whose NIC sends each flow (``src`` itself inside a server)."""
        src = np.asarray(src, np.int64)
        dst = np.asarray(dst, np.int64)
        g = self.gpus_per_server
        ss = self.clos.host_server[src]
        return np.where(ss != self.clos.host_server[dst], ss * g + dst % g, src)

    def route(self, src, dst, seed=0, circuits=None) -> Routes:
        """One ECMP path per flow from its relay GPU; see :meth:`Fabric.route`."""
        return self.clos.route(self.relay(src, dst), dst, seed, circuits)

    def paths(self, s: int, d: int) -> list:
        """All shortest up-down paths of host pair ``(s, d)`` from its relay GPU."""
        if s == d:
            return [[]]
        return self.clos.paths(int(self.relay([s], [d])[0]), d)


@dataclass(frozen=True, eq=False)
class Fabric:
    """A fabric: nodes, directed links and routing tables (static structure).

    ``hosts : int64[H]`` maps host index (the ``src``/``dst`` of flows) to node id. ``params`` holds
    the builder's resolved parameters (JSON-serializable) so that results record how the fabric was
    built.
    """

    name: str
    nodes: Nodes
    links: Links
    hosts: np.ndarray
    routing: object  # ClosRouting or another routing with route(), paths() and host_server
    params: dict = field(default_factory=dict)

    @property
    def n_nodes(self) -> int:
        return int(self.nodes.kind.shape[0])

    @property
    def n_links(self) -> int:
        return int(self.links.src.shape[0])

    @property
    def n_hosts(self) -> int:
        return int(self.hosts.shape[0])

    @property
    def host_server(self) -> np.ndarray:
        """``int64[H]`` server index of every host."""
        return self.routing.host_server

    def link_state(self) -> np.ndarray:
        """A fresh, writable copy of the nominal link capacities (``float64[L]``, bits/s)."""
        return self.links.capacity_bps.copy()

    def count(self, kind: str, tier: str | None = None) -> int:
        """Number of nodes of a kind (``gpu``, ``server``, ``switch``, ``ocs``), optionally of a tier."""
        mask = self.nodes.kind == NODE_KINDS.index(kind)
        if tier is not None:
            mask &= self.nodes.tier == TIERS.index(tier)
        return int(mask.sum())

    def route(self, src, dst, seed: int = 0, circuits=None) -> Routes:
        """Route flows ``src[i] -> dst[i]`` (host indices), one path per flow.

        In a Clos the path of flow ``i`` is one of its ECMP paths, chosen by a hash of ``(seed,
        i)``: the same inputs always give the same routes. Flows inside one server use NVLink (GPU
        hosts). ``circuits`` (MixNet: the server x server circuit matrix the routes are for; default
        the fabric's current one) is ignored by fabrics without circuits.
        """
        src, dst = self._check_hosts(src, dst)
        return self.routing.route(src, dst, seed, circuits)

    def paths(self, src: int, dst: int) -> list[list[int]]:
        """All shortest paths (lists of link ids) between two hosts; for tests and tooling."""
        return self.routing.paths(int(src), int(dst))

    def _check_hosts(self, src, dst):
        src = np.ascontiguousarray(src, dtype=np.int64)
        dst = np.ascontiguousarray(dst, dtype=np.int64)
        require(src.ndim == 1 and dst.ndim == 1 and src.shape == dst.shape, "src/dst",
                f"must be 1-D arrays of equal length, got shapes {src.shape} and {dst.shape}")
        h = self.n_hosts
        for name, arr in (("src", src), ("dst", dst)):
            if arr.size and (arr.min() < 0 or arr.max() >= h):
                raise ConfigError(name, f"host indices must lie in 0 .. {h - 1} (this fabric has {h} hosts)")
        same = np.flatnonzero(src == dst)
        if same.size:
            raise ConfigError("src/dst", f"flow {int(same[0])} has src == dst == {int(src[same[0]])}; "
                              "a flow needs two distinct hosts")
        return src, dst

    def summary(self) -> str:
        """One line describing the fabric."""
        p = self.params
        pooling = p.get("nic_pooling", "released")
        return (f"{self.name}: {self.n_hosts} {p.get('host', 'gpu')} hosts, "
                f"{self.count('switch')} switches, {self.n_links} directed links, "
                f"{p.get('link_gbps')} Gbps" + ("" if pooling == "released" else
                                                 f", nic_pooling {pooling}"))


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------

class _Builder:
    """Accumulates nodes and links as Python lists, then freezes them into arrays."""

    def __init__(self):
        self.kind, self.tier, self.server, self.pod, self.rail = [], [], [], [], []
        self.src, self.dst, self.cap, self.delay, self.lkind = [], [], [], [], []

    def node(self, kind, tier, server=-1, pod=-1, rail=-1) -> int:
        self.kind.append(kind)
        self.tier.append(tier)
        self.server.append(server)
        self.pod.append(pod)
        self.rail.append(rail)
        return len(self.kind) - 1

    def _link(self, a, b, capacity_bps, delay_ps, kind) -> int:
        self.src.append(a)
        self.dst.append(b)
        self.cap.append(capacity_bps)
        self.delay.append(delay_ps)
        self.lkind.append(kind)
        return len(self.src) - 1

    def duplex(self, a, b, capacity_bps, delay_ps, kind) -> tuple[int, int]:
        """Two directed links a->b and b->a with ids 2i and 2i + 1 (so ``reverse = id ^ 1``);
        returns their ids (up, down). Every link is built this way."""
        return self._link(a, b, capacity_bps, delay_ps, kind), self._link(b, a, capacity_bps, delay_ps, kind)

    def freeze(self):
        nodes = Nodes(np.array(self.kind, np.int8), np.array(self.tier, np.int8),
                      np.array(self.server, np.int64), np.array(self.pod, np.int64),
                      np.array(self.rail, np.int64))
        ids = np.arange(len(self.src), dtype=np.int64)
        links = Links(np.array(self.src, np.int64), np.array(self.dst, np.int64),
                      np.array(self.cap, np.float64), np.array(self.delay, np.int64),
                      np.array(self.lkind, np.int8), ids ^ 1)
        return nodes, links


def _build_clos(name, params, *, n_hosts, host_is_gpu, gpus_per_server, host_edge, edges_per_pod,
                aggs_per_pod, edge_par, core_uplinks, host_bps, edge_agg_bps, agg_core_bps,
                nvlink_bps, delay_ps, nvlink_delay_ps, edge_rail=None, pooled=False,
                routing_class=None) -> Fabric:
    """Wire a Clos from a host -> edge map.

    ``host_edge[h]`` is host ``h``'s edge switch; edges ``e`` belong to pod ``e // edges_per_pod``.
    Each edge has ``aggs_per_pod * edge_par`` uplinks (``edge_par`` parallel links to every
    aggregation switch of its pod); each aggregation switch has ``core_uplinks`` links to cores, core
    ``c`` serving aggregation position ``c // core_uplinks`` of every pod (0 = 2-tier).
    ``pooled`` (GPU hosts): the Clos's endpoints are server nodes, ``host_edge[s]`` server ``s``'s
    edge switch, each with one link of ``host_bps``; a GPU's routing-table entries are its server's
    (its flows to other servers start and end at the server node). ``routing_class`` wraps the
    :class:`ClosRouting` (called with it and ``gpus_per_server``).
    """
    b = _Builder()
    host_edge = np.asarray(host_edge, np.int64)
    n_edges = int(host_edge.max()) + 1
    n_pods = -(-n_edges // edges_per_pod)
    host_server = np.arange(n_hosts, dtype=np.int64) // gpus_per_server if host_is_gpu else \
        np.arange(n_hosts, dtype=np.int64)
    # Clos endpoints: the hosts, or with pooled NICs the servers
    n_ends = n_hosts // gpus_per_server if pooled else n_hosts
    end_of_host = host_server if pooled else np.arange(n_hosts, dtype=np.int64)

    hosts = np.empty(n_hosts, np.int64)
    for h in range(n_hosts):
        s = int(host_server[h])
        if host_is_gpu:
            e = int(host_edge[s if pooled else h])
            hosts[h] = b.node(NODE_GPU, TIER_HOST, server=s, pod=e // edges_per_pod,
                              rail=h % gpus_per_server)
        else:
            hosts[h] = b.node(NODE_SERVER, TIER_HOST, server=s, pod=int(host_edge[h]) // edges_per_pod)
    ends = np.array([b.node(NODE_SERVER, TIER_HOST, server=s, pod=int(host_edge[s]) // edges_per_pod)
                     for s in range(n_ends)], np.int64) if pooled else hosts
    edges = [b.node(NODE_SWITCH, TIER_EDGE, pod=e // edges_per_pod,
                    rail=-1 if edge_rail is None else int(edge_rail[e])) for e in range(n_edges)]
    aggs = [b.node(NODE_SWITCH, TIER_AGG, pod=p) for p in range(n_pods) for _ in range(aggs_per_pod)]
    n_cores = aggs_per_pod * core_uplinks if n_pods > 1 else 0
    cores = [b.node(NODE_SWITCH, TIER_CORE) for _ in range(n_cores)]

    end_up = np.empty(n_ends, np.int64)
    end_down = np.empty(n_ends, np.int64)
    for h in range(n_ends):
        end_up[h], end_down[h] = b.duplex(int(ends[h]), edges[int(host_edge[h])], host_bps, delay_ps,
                                          LINK_EPS)
    n_up = aggs_per_pod * edge_par
    edge_up = np.empty((n_edges, n_up), np.int64)
    edge_down = np.empty((n_edges, n_up), np.int64)
    for e in range(n_edges):
        pod = e // edges_per_pod
        for u in range(n_up):
            agg = aggs[pod * aggs_per_pod + u // edge_par]
            edge_up[e, u], edge_down[e, u] = b.duplex(edges[e], agg, edge_agg_bps, delay_ps, LINK_EPS)
    v_count = core_uplinks if n_cores else 0
    agg_up = np.empty((len(aggs), v_count), np.int64)
    agg_down = np.empty((len(aggs), v_count), np.int64)
    for a in range(len(aggs)):
        position = a % aggs_per_pod
        for v in range(v_count):
            core = cores[position * core_uplinks + v]
            agg_up[a, v], agg_down[a, v] = b.duplex(aggs[a], core, agg_core_bps, delay_ps, LINK_EPS)

    nvl_up = np.full(n_hosts, -1, np.int64)
    nvl_down = np.full(n_hosts, -1, np.int64)
    if host_is_gpu and gpus_per_server > 1:
        n_servers = n_hosts // gpus_per_server
        for s in range(n_servers):
            nvs = b.node(NODE_SWITCH, TIER_NVSWITCH, server=s)
            for h in range(s * gpus_per_server, (s + 1) * gpus_per_server):
                nvl_up[h], nvl_down[h] = b.duplex(int(hosts[h]), nvs, nvlink_bps, nvlink_delay_ps,
                                                  LINK_NVLINK)
    nodes, links = b.freeze()
    edge_pod = np.arange(n_edges, dtype=np.int64) // edges_per_pod
    routing = ClosRouting(host_edge[end_of_host], end_up[end_of_host], end_down[end_of_host],
                          host_server, nvl_up, nvl_down, edge_pod, edge_up, edge_down,
                          int(edge_par), agg_up, agg_down)
    if routing_class is not None:
        routing = routing_class(routing, gpus_per_server)
    return Fabric(name=name, nodes=nodes, links=links, hosts=hosts, routing=routing, params=params)


def _check_common(link_gbps, host, gpus_per_server, nvlink_gbps, link_delay_ps, nvlink_delay_ps):
    require(isinstance(link_gbps, (int, float)) and not isinstance(link_gbps, bool)
            and math.isfinite(link_gbps) and link_gbps > 0,
            "fabric.link_gbps", f"must be a number > 0, got {link_gbps!r}")
    require(host in ("gpu", "server"), "fabric.host", f"must be 'gpu' or 'server', got {host!r}")
    require(isinstance(gpus_per_server, int) and not isinstance(gpus_per_server, bool)
            and gpus_per_server >= 1, "fabric.gpus_per_server",
            f"must be an integer >= 1, got {gpus_per_server!r}")
    if nvlink_gbps is None:
        nvlink_gbps = NVLINK_DEFAULT_GBPS
    require(isinstance(nvlink_gbps, (int, float)) and math.isfinite(nvlink_gbps) and nvlink_gbps > 0,
            "fabric.nvlink_gbps", f"must be a number > 0, got {nvlink_gbps!r}")
    require(isinstance(link_delay_ps, (int, np.integer)) and link_delay_ps >= 0, "fabric.link_delay_ps",
            f"must be an integer >= 0 (picoseconds), got {link_delay_ps!r}")
    require(isinstance(nvlink_delay_ps, (int, np.integer)) and nvlink_delay_ps >= 0,
            "fabric.nvlink_delay_ps", f"must be an integer >= 0 (picoseconds), got {nvlink_delay_ps!r}")
    return float(nvlink_gbps)


def _check_pooling(nic_pooling) -> str:
    require(nic_pooling in NIC_POOLING, "fabric.nic_pooling",
            f"must be one of {', '.join(NIC_POOLING)}, got {nic_pooling!r}")
    return nic_pooling


def _check_int(value, name, minimum):
    require(isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum,
            name, f"must be an integer >= {minimum}, got {value!r}")
    return int(value)


def fat_tree(hosts: int, link_gbps: float, *, k: int | None = None, oversubscription: float = 1.0,
             oversub_build: str = "ports", host: str = "gpu", gpus_per_server: int = 8,
             nvlink_gbps: float | None = None, link_delay_ps: int = LINK_DELAY_DEFAULT_PS,
             nvlink_delay_ps: int = 0, nic_pooling: str = "released") -> Fabric:
    """A 3-tier k-ary fat-tree of ``hosts`` hosts, all switch links at ``link_gbps``.

    ``k`` pods of ``k/2`` edge switches. Non-blocking (``oversubscription=1``): every edge switch has
    ``k/2`` host ports and ``k/2`` uplinks, one to each of the pod's ``k/2`` aggregation switches,
    and aggregation position ``a`` links to cores ``a*k/2 .. a*k/2 + k/2 - 1`` (``k**2/4`` cores,
    ``k**3/4`` hosts; k = 16 gives exactly 1024). ``k`` defaults to the smallest even k that fits.

    Oversubscription ``r:1`` at the edge tier:

    - ``oversub_build="ports"`` (default; htsim's ``OverSubscribedFatTree``): each edge switch has
      ``k*r/(r+1)`` host ports and ``k/(r+1)`` uplinks, one per aggregation switch of the pod; cores
      ``k/(r+1) * k/2``. For 3:1, k must be a multiple of 4 (k = 16: 12 hosts + 4 uplinks per edge,
      1536 host slots). Hosts fill edge switches in order; only used edges are built.
    - ``oversub_build="speed"``: non-blocking wiring with edge-aggregation and aggregation-core links
      at ``link_gbps / r``.

    ``host="gpu"`` (default): hosts are GPUs, one NIC each at ``link_gbps``; ``gpus_per_server``
    consecutive GPUs form a server joined by an NVSwitch (links of ``nvlink_gbps``, default
    600 GiB/s as the released MixNet simulator; the paper's text says 900 GB/s). ``host="server"``:
    hosts are servers with one aggregated link at ``link_gbps`` (MixNet's electrical side).

    ``nic_pooling`` (GPU hosts; see the module docstring): ``released`` and ``per-nic`` build the
    fabric above, one NIC of ``link_gbps`` per GPU (the released fat-tree binaries, reference
    ``mfabric.md`` 5.3). ``pooled``: a server's ``G = gpus_per_server`` NICs act as one pool
    (NVLink + PXN-style), so the fat-tree is built over the ``hosts / G`` *servers*, each with one
    link of ``G * link_gbps``, and every switch link also runs at ``G * link_gbps`` (``/ r`` with
    the speed build): ``k`` (given, or the smallest that fits) is the radix for the server count,
    and the bisection is the GPU fat-tree's (non-blocking: ``hosts * link_gbps``; r:1 ports build:
    the same ratio at the edge, with edge switches of ``k * r / (r + 1)`` servers instead of GPUs,
    so the core capacity can differ by the rounding of the last edge switch). This is MixNet's EPS
    with all ``G`` NICs on it (``mfabric.md`` 4.2): the hosts stay the GPUs (joined by an
    NVSwitch), and a GPU's flows to another server start and end at its server's node, the GPU ->
    NIC hop over NVLink not modelled. ``bom_from_fabric`` counts each ``G * link_gbps`` link as
    ``G`` cables, so the non-blocking pooled fabric costs exactly the GPU fat-tree.
    """
    nvlink_gbps = _check_common(link_gbps, host, gpus_per_server, nvlink_gbps, link_delay_ps,
                                nvlink_delay_ps)
    hosts = _check_int(hosts, "fabric.hosts", 2)
    require(isinstance(oversubscription, (int, float)) and not isinstance(oversubscription, bool)
            and math.isfinite(oversubscription) and oversubscription >= 1,
            "fabric.oversubscription", f"must be a number >= 1 (r for r:1), got {oversubscription!r}")
    require(oversub_build in ("ports", "speed"), "fabric.oversub_build",
            f"must be 'ports' or 'speed', got {oversub_build!r}")
    nic_pooling = _check_pooling(nic_pooling)
    host_is_gpu = host == "gpu"
    if host_is_gpu:
        require(hosts % gpus_per_server == 0, "fabric.hosts",
                f"must be a multiple of gpus_per_server={gpus_per_server} when hosts are GPUs, got {hosts}")
    else:
        require(nic_pooling == "released", "fabric.nic_pooling",
                f"must be 'released' when hosts are servers (host = 'server' has no GPUs whose NICs "
                f"could be pooled or kept apart), got {nic_pooling!r}")
    pooled = nic_pooling == "pooled"
    ends = hosts // gpus_per_server if pooled else hosts  # the Clos's endpoints: servers if pooled
    what = f"{ends} servers ({hosts} GPUs, NICs pooled)" if pooled else f"{hosts} hosts"
    r = float(oversubscription)
    by_ports = oversub_build == "ports" and r != 1.0

    def down_ports(kk):
        """Host ports per edge switch for this k, or None if r does not split k evenly."""
        if not by_ports:
            return kk // 2
        d = kk * r / (r + 1)
        return int(round(d)) if abs(d - round(d)) < 1e-9 and round(d) < kk else None

    if k is None:
        k = next((kk for kk in range(4, _MAX_K + 1, 2)
                  if down_ports(kk) is not None and down_ports(kk) * kk * kk // 2 >= ends), None)
        if k is None:
            raise ConfigError("fabric.oversubscription" if by_ports else "fabric.hosts",
                              f"no even k <= {_MAX_K} fits {what} at {r:g}:1 (ports build: "
                              "k*r/(r+1) must be a whole number); use a ratio such as 2 or 3, the "
                              "'speed' build, or give k")
    else:
        require(isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 4 and k % 2 == 0,
                "fabric.k", f"must be an even integer >= 4, got {k!r}")
        k = int(k)
        require(down_ports(k) is not None, "fabric.k",
                f"k={k} cannot split its ports {r:g}:1 (k*r/(r+1) must be a whole number below k)")
    d = down_ports(k)
    capacity = d * k * k // 2
    require(ends <= capacity, "fabric.hosts",
            f"{what} do not fit a k={k} fat-tree (at most {capacity} at {r:g}:1); "
            "raise k or leave it unset")
    aggs_per_pod = (k - d) if by_ports else k // 2
    slow = r if (oversub_build == "speed" and r != 1.0) else 1.0
    host_edge = np.arange(ends, dtype=np.int64) // d
    bps = link_gbps * 1e9 * (gpus_per_server if pooled else 1)
    params = dict(builder="fat_tree", hosts=hosts, link_gbps=link_gbps, k=k,
                  oversubscription=r, oversub_build=oversub_build, host=host,
                  gpus_per_server=gpus_per_server, nvlink_gbps=nvlink_gbps,
                  link_delay_ps=int(link_delay_ps), nvlink_delay_ps=int(nvlink_delay_ps),
                  nic_pooling=nic_pooling, host_link_gbps=bps / 1e9)
    name = "fat_tree" if r == 1.0 else f"fat_tree_{r:g}to1"
    return _build_clos(
        name, params, n_hosts=hosts, host_is_gpu=host_is_gpu, gpus_per_server=gpus_per_server,
        host_edge=host_edge, edges_per_pod=k // 2, aggs_per_pod=aggs_per_pod, edge_par=1,
        core_uplinks=k // 2, host_bps=bps, edge_agg_bps=bps / slow, agg_core_bps=bps / slow,
        nvlink_bps=nvlink_gbps * 1e9, delay_ps=int(link_delay_ps),
        nvlink_delay_ps=int(nvlink_delay_ps), pooled=pooled)


def rail_optimized(servers: int, link_gbps: float, gpus_per_server: int = 8, *,
                   build: str = "fat-tree", servers_per_leaf: int = 32, spines: int = 16,
                   nvlink_gbps: float | None = None, link_delay_ps: int = LINK_DELAY_DEFAULT_PS,
                   nvlink_delay_ps: int = 0, nic_pooling: str = "released") -> Fabric:
    """A non-blocking rail-optimized fabric: GPU ``i`` of every server attaches to rail-``i`` switches.

    ``build="fat-tree"`` (default, R-A of the baselines note): the 3-tier k = 2G fat-tree (G =
    ``gpus_per_server``; k = 16 for 8 GPUs) with rail-mapped hosts: pod ``p`` holds servers
    ``G*p .. G*p + G-1`` and its edge switch ``r`` carries GPU ``r`` of each of them. Rails meet at
    the aggregation and core tiers. Same switch and link counts as the fat-tree.

    ``build="superpod"`` (R-B): a 2-tier leaf-spine like a DGX SuperPOD: leaf ``(group, r)`` carries
    GPU ``r`` of ``servers_per_leaf`` servers and has as many uplinks, spread evenly over ``spines``
    spine switches (``servers_per_leaf / spines`` parallel links to each).

    ``nic_pooling`` (see the module docstring): ``released`` and ``per-nic``: every flow leaves
    through its GPU's own NIC (the fat-tree binaries' one host per GPU, reference ``baselines.md``
    1 and 4). ``pooled``: PXN routing (:class:`PxnRouting`; the NCCL 2.12 scheme that the paper's
    rail-optimized baseline cites, ``baselines.md`` 4): a flow from GPU ``(s, i)`` to GPU ``(d,
    j)`` crosses NVLink to GPU ``(s, j)`` and takes rail ``j``. Same links (and cost) as
    ``released``. This is how a rail fabric pools its NICs in practice: one GPU's traffic to the
    ``G`` GPUs of another server leaves through all ``G`` NICs, while a GPU still receives through
    its own NIC only. A server-aggregate reading (one ``G x B`` link per server over the same
    non-blocking Clos) would carry the same server-level traffic as the pooled fat-tree, with the
    rails playing no part; PXN keeps what makes the fabric rail-optimized.
    """
    nvlink_gbps = _check_common(link_gbps, "gpu", gpus_per_server, nvlink_gbps, link_delay_ps,
                                nvlink_delay_ps)
    servers = _check_int(servers, "fabric.servers", 1)
    require(build in ("fat-tree", "superpod"), "fabric.build",
            f"must be 'fat-tree' or 'superpod', got {build!r}")
    nic_pooling = _check_pooling(nic_pooling)
    g = gpus_per_server
    n_hosts = servers * g
    gpu = np.arange(n_hosts, dtype=np.int64)
    server, rank = gpu // g, gpu % g
    params = dict(builder="rail_optimized", servers=servers, link_gbps=link_gbps,
                  gpus_per_server=g, build=build, host="gpu", nvlink_gbps=nvlink_gbps,
                  link_delay_ps=int(link_delay_ps), nvlink_delay_ps=int(nvlink_delay_ps),
                  nic_pooling=nic_pooling, routing="pxn" if nic_pooling == "pooled" else "direct")
    if build == "fat-tree":
        require(n_hosts >= 2, "fabric.servers", "need at least 2 GPUs in total")
        require(servers <= 2 * g * g, "fabric.servers",
                f"the fat-tree build (k = {2 * g}) holds at most {2 * g * g} servers of {g} GPUs, "
                f"got {servers}; use build = 'superpod' for more")
        k = 2 * g
        host_edge = (server // g) * g + rank  # pod = server // G, edge in pod = rank
        edges_per_pod, aggs_per_pod, par, core_up = g, g, 1, g
        params["k"] = k
    else:
        servers_per_leaf = _check_int(servers_per_leaf, "fabric.servers_per_leaf", 1)
        spines = _check_int(spines, "fabric.spines", 1)
        require(servers_per_leaf % spines == 0, "fabric.spines",
                f"must divide servers_per_leaf={servers_per_leaf}, got {spines}")
        groups = -(-servers // servers_per_leaf)
        host_edge = (server // servers_per_leaf) * g + rank
        edges_per_pod, aggs_per_pod, par, core_up = groups * g, spines, servers_per_leaf // spines, 0
        params.update(servers_per_leaf=servers_per_leaf, spines=spines)
    n_edges = int(host_edge.max()) + 1
    edge_rail = np.arange(n_edges) % g
    bps = link_gbps * 1e9
    return _build_clos(
        "rail_optimized", params, n_hosts=n_hosts, host_is_gpu=True, gpus_per_server=g,
        host_edge=host_edge, edges_per_pod=edges_per_pod, aggs_per_pod=aggs_per_pod, edge_par=par,
        core_uplinks=core_up, host_bps=bps, edge_agg_bps=bps, agg_core_bps=bps,
        nvlink_bps=nvlink_gbps * 1e9, delay_ps=int(link_delay_ps),
        nvlink_delay_ps=int(nvlink_delay_ps), edge_rail=edge_rail,
        routing_class=PxnRouting if nic_pooling == "pooled" else None)

