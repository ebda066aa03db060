"""The MixNet fabric: an electrical fat-tree over servers plus regional optical circuits.

Every server has 8 NICs of ``B = link_gbps``: ``alpha`` go to its region's optical circuit switch
(OCS), ``8 - alpha`` to the electrical packet-switched fabric (EPS). As in the released simulator
(reference ``mfabric.md`` sections 2.3 and 4.2):

- the EPS is a non-blocking k-ary fat-tree whose hosts are *servers*, each with one link of
  ``(8 - alpha) * B`` (k = 8 for 128 servers);
- a region is a contiguous block of ``region_servers`` servers (by default one EP group, ``ep * tp
  / 8`` servers). Its circuit configuration is a symmetric integer matrix ``C`` (region servers x
  region servers, zero diagonal, row sums <= alpha); server pair ``(i, j)`` gets a direct link of
  ``C[i][j] * B`` in each direction (one hop, 1 us), shared by all flows of the pair;
- GPUs of a server talk over NVLink (an NVSwitch per server, 600 GiB/s per GPU by default);
  GPU-to-GPU flows between servers use the pair's circuit when it has one and the EPS otherwise.
  The GPU -> NIC hop is not modelled (as in the released simulator): an inter-server route starts
  at the source server's node.

The fabric holds *every* intra-region server pair as a duplex ``ocs`` link; the ones without a
circuit have capacity 0. A circuit configuration is state: :meth:`MixNetRouting.capacities` gives
the OCS link capacities of a configuration, :func:`reconfiguration_events` the capacity events of
a change, and ``Fabric.route(src, dst, circuits=C)`` the routes under configuration ``C``
(``int64[regions, R, R]``; default: the fabric's initial configuration, seeded random with at most
alpha circuits per server, as the simulator's ``random_connect``).

NIC-level readings (``nic_pooling="per-nic"``, or ``eps``/``ocs`` one by one; see
:data:`fabricsim.fabric.NIC_POOLING`). The server-level aggregates above let one GPU-pair flow use
all of a server's EPS NICs or all of a pair's circuits. ``eps="nic"``: the EPS fat-tree's hosts
are the ``8 - alpha`` EPS NICs of every server, each with one link of ``B``; a flow leaves and
enters through one NIC each, picked by a seeded hash, and its route runs from NIC to NIC.
``ocs="nic"``: every intra-region server pair holds ``alpha`` duplex ``ocs`` links of ``B``, one
per possible circuit (one NIC at each end; a NIC carries at most one circuit, so circuit ``k`` of a
pair needs no NIC identity: it is the pair's ``k``-th link), the first ``C[i][j]`` at ``B`` and the
rest at 0; a flow on the pair's circuits takes one of the ``C[i][j]``, picked by a seeded hash
(:func:`fabricsim.kernels.routing.choice_hash`), so one flow gets at most ``B`` and ``c`` flows on
distinct circuits ``c x B``. A re-wiring that keeps ``m`` of a pair's circuits keeps its first
``m`` links (``hold="changed"`` holds only the links whose capacity changes); a relay of a server
without EPS (failures) uses the pair's first circuit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fabricsim.engine import CapacityEvents
from fabricsim.errors import ConfigError, require
from fabricsim.fabric import (LINK_DELAY_DEFAULT_PS, LINK_NVLINK, LINK_OCS, NODE_GPU, NODE_OCS,
                              NODE_SERVER, NODE_SWITCH, PATH_KINDS, TIER_HOST, TIER_NVSWITCH,
                              ClosRouting, Fabric, Routes, _Builder, _check_common, _check_int,
                              _check_pooling, fat_tree)
from fabricsim.kernels.routing import pick

__all__ = ["mixnet", "MixNetRouting", "random_circuits", "check_circuits",
           "reconfiguration_events", "HOLD_MODES", "EPS_MODES", "OCS_MODES"]

PATH_NVLINK = PATH_KINDS.index("nvlink")
PATH_OCS = PATH_KINDS.index("ocs")
#: What a reconfiguration takes down for its delay: every OCS link of the region (the released
#: simulator pauses all of the region's OCS flows) or only the links whose circuit count changes.
HOLD_MODES = ("region", "changed")
#: The EPS's hosts: one ``(8 - alpha) B`` link per server, or the ``8 - alpha`` NICs at ``B``.
EPS_MODES = ("server", "nic")
#: A server pair's circuits: one ``c x B`` link (the released simulator), or one ``B`` link each.
OCS_MODES = ("server-pair", "nic")
#: The ``(eps, ocs)`` of each ``nic_pooling``: MixNet is released with server-level aggregates.
_POOLING_MODES = {"released": ("server", "server-pair"), "pooled": ("server", "server-pair"),
                  "per-nic": ("nic", "nic")}
#: Salt of the per-flow circuit choice (:func:`fabricsim.kernels.routing.choice_hash`).
_CIRCUIT_SALT = 1


@dataclass(frozen=True, eq=False)
class MixNetRouting:
    """Routing of a MixNet fabric (arrays; ``S`` servers, ``R`` servers per region).

    ``host_server``, ``host_nvl_up``, ``host_nvl_down`` ``int64[H]`` (GPU hosts); ``eps`` the
    fat-tree's :class:`~fabricsim.fabric.ClosRouting` whose host ``s`` is server ``s`` (NIC-level
    EPS: host ``s * E + k`` is EPS NIC ``k`` of server ``s``); ``ocs_link int64[S, R]``: the link
    from server ``s`` to the server at local index ``j`` of its region (-1 for itself; per-NIC
    circuits: the pair's first circuit link); ``circuits int64[regions, R, R]``: the initial
    configuration; ``ocs_nic_link int64[S, R, alpha]``: per-NIC circuits, the pair's ``alpha``
    circuit links (else None).
    """

    host_server: np.ndarray
    host_nvl_up: np.ndarray
    host_nvl_down: np.ndarray
    eps: ClosRouting
    region_servers: int
    ocs_link: np.ndarray
    circuits: np.ndarray
    alpha: int
    link_bps: float
    eps_ok: np.ndarray = None  # bool[S]: the server still has an EPS NIC (failures)
    ocs_degree: np.ndarray = None  # int64[S]: working OCS ports per server (failures)
    nic_up: np.ndarray = None  # NIC-level EPS: int64[S, E] NIC -> edge switch links (else None)
    nic_down: np.ndarray = None  # int64[S, E] edge switch -> NIC links
    ocs_nic_link: np.ndarray = None  # per-NIC circuits: int64[S, R, alpha] (else None)

    def __post_init__(self):
        n = self.ocs_link.shape[0]
        if self.eps_ok is None:
            object.__setattr__(self, "eps_ok", np.ones(n, bool))
        if self.ocs_degree is None:
            object.__setattr__(self, "ocs_degree", np.full(n, self.alpha, np.int64))

    def relay_peer(self, server: int, circuits=None) -> int:
        """The region peer that relays the EPS traffic of a server without a working EPS NIC:
        the one it has the most circuits to (lowest index on ties)."""
        c = self.circuits if circuits is None else circuits
        r = self.region_servers
        row = c[server // r, server % r]
        if row.max() <= 0:  # routed without circuits (PP, DP): relay over the initial ones
            row = self.circuits[server // r, server % r]
        if row.max() <= 0:
            raise ConfigError("failures", f"server {server} has no working EPS NIC and no circuit "
                              "to a region peer to relay through")
        return server // r * r + int(np.argmax(row))

    @property
    def n_regions(self) -> int:
        return int(self.circuits.shape[0])

    def pair_links(self, server, peer) -> np.ndarray:
        """``int64[n, k]``: the OCS links from ``server[i]`` to the server at local index
        ``peer[i]`` of its region (``k = 1``: one link per pair; per-NIC circuits ``k = alpha``)."""
        if self.ocs_nic_link is None:
            return self.ocs_link[server, peer][:, None]
        return self.ocs_nic_link[server, peer]

    def pair_capacities(self, counts) -> np.ndarray:
        """``float64[n, k]``: the capacities of :meth:`pair_links` for pairs with ``counts[i]``
        circuits (``c * B`` on one link, or ``B`` on each of the first ``c``)."""
        counts = np.asarray(counts, np.int64)
        if self.ocs_nic_link is None:
            return counts[:, None].astype(np.float64) * self.link_bps
        slots = np.arange(self.ocs_nic_link.shape[2])
        return (slots[None, :] < counts[:, None]).astype(np.float64) * self.link_bps

    def capacities(self, circuits=None):
        """``(link_ids int64[n], capacity_bps float64[n])`` of every OCS link under ``circuits``."""
        c = self.circuits if circuits is None else circuits
        s = np.arange(self.ocs_link.shape[0])
        region, local = s // self.region_servers, s % self.region_servers
        per_link = c[region[:, None], local[:, None], np.arange(self.region_servers)[None, :]]
        keep = local[:, None] != np.arange(self.region_servers)[None, :]
        server, peer = np.nonzero(keep)
        links = self.pair_links(server, peer)
        return links.ravel(), self.pair_capacities(per_link[keep]).ravel()

    def _circuit_links(self, server, peer, counts, flow, seed) -> np.ndarray:
        """``int64[n]``: the circuit link each flow ``flow[i]`` (index in its route call) takes
        from ``server[i]`` to local peer ``peer[i]``, whose pair has ``counts[i] >= 1`` circuits."""
        if self.ocs_nic_link is None:
            return self.ocs_link[server, peer]
        k = pick(np.uint64(seed & 0xFFFFFFFFFFFFFFFF), np.asarray(flow, np.int64),
                 np.asarray(counts, np.int64), _CIRCUIT_SALT)
        return self.ocs_nic_link[server, peer, k]

    def route(self, src, dst, seed=0, circuits=None) -> Routes:
        """NVLink inside a server; the pair's circuit when ``circuits`` has one; else the EPS."""
        c = self.circuits if circuits is None else circuits
        ss, ds = self.host_server[src], self.host_server[dst]
        r = self.region_servers
        local = (ss == ds) & (self.host_nvl_up[src] >= 0)
        same_region = (ss // r == ds // r) & ~local
        optical = np.zeros(src.size, bool)
        optical[same_region] = c[ss[same_region] // r, ss[same_region] % r, ds[same_region] % r] > 0
        eps = ~(local | optical)
        # servers without a working EPS NIC reach the EPS through a region peer's circuit
        first = np.full(src.size, -1, np.int64)
        last = np.full(src.size, -1, np.int64)
        es, ed = ss.copy(), ds.copy()
        if not self.eps_ok.all():
            for i in np.flatnonzero(eps & ~self.eps_ok[ss]):
                p = self.relay_peer(int(ss[i]), c)
                first[i], es[i] = self.ocs_link[ss[i], p % r], p
            for i in np.flatnonzero(eps & ~self.eps_ok[ds]):
                p = self.relay_peer(int(ds[i]), c)
                last[i], ed[i] = self.ocs_link[p, ds[i] % r], p
            same = eps & (es == ed)  # relayed onto the peer itself: the circuits alone
            eps_path = eps & ~same
        else:
            eps_path = eps
        if self.nic_up is None:
            e = self.eps.route(es[eps_path], ed[eps_path], seed)
        else:  # NIC-level EPS: leave and enter through one NIC each, picked by a seeded hash
            e = self._nic_route(es, ed, eps_path, seed, first, last)
        length = np.where(local, 2, 1)
        length[eps] = 0
        length[eps_path] = np.diff(e.route_ptr)
        length += (first >= 0).astype(np.int64) + (last >= 0).astype(np.int64)
        ptr = np.zeros(src.size + 1, np.int64)
        np.cumsum(length, out=ptr[1:])
        links = np.empty(ptr[-1], np.int64)
        at = ptr[:-1]
        links[at[local]] = self.host_nvl_up[src[local]]
        links[at[local] + 1] = self.host_nvl_down[dst[local]]
        links[at[optical]] = self._circuit_links(
            ss[optical], ds[optical] % r, c[ss[optical] // r, ss[optical] % r, ds[optical] % r],
            np.flatnonzero(optical), seed)
        head = (first >= 0).astype(np.int64)
        links[at[first >= 0]] = first[first >= 0]
        links[ptr[1:][last >= 0] - 1] = last[last >= 0]
        if e.route_links.size:
            start = at[eps_path] + head[eps_path]
            offset = np.repeat(start - e.route_ptr[:-1], np.diff(e.route_ptr))
            links[np.arange(e.route_links.size) + offset] = e.route_links
        kind = np.empty(src.size, np.int8)
        kind[local], kind[optical] = PATH_NVLINK, PATH_OCS
        kind[eps] = PATH_OCS
        kind[eps_path] = e.path_kind
        return Routes(ptr, links, kind)

    def _nic_route(self, es, ed, eps_path, seed, first, last):
        """EPS routes between NICs of servers ``es``/``ed`` (where ``eps_path``): from the
        source NIC's link ``nic_up[s, k]`` to the destination NIC's ``nic_down[d, k']``."""
        n_nics = self.nic_up.shape[1]
        i = np.flatnonzero(eps_path)
        if np.any(first[i] >= 0) or np.any(last[i] >= 0):
            raise ConfigError("failures", "EPS relays are modelled with the server-level EPS "
                              "(eps = 'server')")
        h = (i.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed & 0xFFFFFFFF))
        k_src = ((h >> np.uint64(33)) % np.uint64(n_nics)).astype(np.int64)
        k_dst = ((h >> np.uint64(17)) % np.uint64(n_nics)).astype(np.int64)
        return self.eps.route(es[i] * n_nics + k_src, ed[i] * n_nics + k_dst, seed)

    def paths(self, s: int, d: int, circuits=None) -> list:
        """The paths of host pair ``(s, d)``: NVLink, the circuit, or every EPS path."""
        c = self.circuits if circuits is None else circuits
        ss, ds, r = int(self.host_server[s]), int(self.host_server[d]), self.region_servers
        if s == d:
            return [[]]
        if ss == ds and self.host_nvl_up[s] >= 0:
            return [[int(self.host_nvl_up[s]), int(self.host_nvl_down[d])]]
        n_circuits = int(c[ss // r, ss % r, ds % r]) if ss // r == ds // r else 0
        if n_circuits > 0:
            links = self.pair_links(np.array([ss]), np.array([ds % r]))[0]
            return [[int(link)] for link in links[:n_circuits if self.ocs_nic_link is not None else 1]]
        if self.nic_up is None:
            return self.eps.paths(ss, ds)
        n = self.nic_up.shape[1]
        return [p for a in range(n) for b in range(n) for p in self.eps.paths(ss * n + a, ds * n + b)]


def check_circuits(circuits, alpha: int, region_servers: int, n_regions: int,
                   field: str = "circuits") -> np.ndarray:
    """Validate a configuration: ``int64[regions, R, R]`` (or ``[R, R]`` for one region),
    non-negative integers, symmetric, zero diagonal, row sums <= alpha."""
    c = np.asarray(circuits)
    if c.ndim == 2 and n_regions == 1:
        c = c[None]
    require(c.shape == (n_regions, region_servers, region_servers), field,
            f"must have shape ({n_regions}, {region_servers}, {region_servers}), got {c.shape}")
    require(c.dtype.kind in "iu" or (c.dtype.kind == "f" and np.all(c == np.round(c))), field,
            "must hold whole numbers of circuits")
    c = c.astype(np.int64)
    require(bool(np.all(c >= 0)), field, "must be >= 0")
    require(bool(np.all(c == c.transpose(0, 2, 1))), field, "must be symmetric (circuits are duplex)")
    require(not np.any(np.einsum("rii->ri", c)), field, "must have a zero diagonal")
    rows = c.sum(axis=2)
    require(bool(np.all(rows <= alpha)), field,
            f"row sums (circuits per server) must be <= alpha = {alpha}, got {int(rows.max())}")
    return c


def random_circuits(region_servers: int, alpha: int, rng: np.random.Generator) -> np.ndarray:
    """A random configuration with at most ``alpha`` circuits per server (``int64[R, R]``):
    pairs in random order, one circuit at a time while both ends have free ports."""
    r = region_servers
    c = np.zeros((r, r), np.int64)
    free = np.full(r, alpha, np.int64)
    pairs = np.array([(i, j) for i in range(r) for j in range(i + 1, r)], np.int64).reshape(-1, 2)
    progress = True
    while progress and pairs.size:
        progress = False
        for i, j in pairs[rng.permutation(len(pairs))]:
            if free[i] and free[j]:
                c[i, j] += 1
                c[j, i] += 1
                free[i] -= 1
                free[j] -= 1
                progress = True
    return c


def reconfiguration_events(fabric: Fabric, region: int, old, new, start_ps: int, delay_ps: int,
                           hold: str = "region") -> CapacityEvents:
    """Capacity events of re-wiring ``region`` from configuration ``old`` to ``new`` (``[R, R]``)
    at ``start_ps``: the held links (``hold="region"``: all of the region's OCS links, the released
    simulator; ``"changed"``: those whose capacity changes, i.e. the pairs whose circuit count
    changes, or with per-NIC circuits the circuits added or removed) carry nothing until
    ``start_ps + delay_ps``, then every OCS link of the region has its new capacity."""
    rt = fabric.routing
    require(isinstance(rt, MixNetRouting), "fabric", "must be a MixNet fabric")
    require(hold in HOLD_MODES, "hold", f"must be one of {', '.join(HOLD_MODES)}, got {hold!r}")
    require(0 <= region < rt.n_regions, "region", f"must be in 0 .. {rt.n_regions - 1}, got {region}")
    r = rt.region_servers
    old = check_circuits(old, rt.alpha, r, 1, "old")[0]
    new = check_circuits(new, rt.alpha, r, 1, "new")[0]
    i, j = np.nonzero(~np.eye(r, dtype=bool))
    links = rt.pair_links(region * r + i, j).ravel()
    new_bps = rt.pair_capacities(new[i, j]).ravel()
    held = np.ones(links.size, bool) if hold == "region" else \
        rt.pair_capacities(old[i, j]).ravel() != new_bps
    t0, t1 = int(start_ps), int(start_ps) + int(delay_ps)
    time_ps = np.r_[np.full(int(held.sum()), t0), np.full(links.size, t1)].astype(np.int64)
    return CapacityEvents(time_ps, np.r_[links[held], links].astype(np.int64),
                          np.r_[np.zeros(int(held.sum())), new_bps])


def mixnet(servers: int, link_gbps: float, *, alpha: int = 6, gpus_per_server: int = 8,
           region_servers: int | None = None, ocs_ports: int | None = None,
           circuits=None, seed: int = 13, nvlink_gbps: float | None = None,
           link_delay_ps: int = LINK_DELAY_DEFAULT_PS, nvlink_delay_ps: int = 0,
           eps: str | None = None, ocs: str | None = None,
           nic_pooling: str = "released") -> Fabric:
    """A MixNet fabric of ``servers`` servers (see the module docstring).

    ``alpha`` (0 .. 8) NICs per server go to the OCS; ``region_servers`` servers per region
    (default: all servers in one region; the runner passes one EP group); ``ocs_ports`` the ports of
    one OCS (default: exactly what a region needs, ``region_servers * alpha``; a region that needs
    more is an error). ``circuits`` the initial configuration (default: seeded random).
    ``eps="server"`` (default, the released simulator): the EPS fat-tree's hosts are servers with
    one ``(8 - alpha) * B`` link; ``eps="nic"``: its hosts are the ``8 - alpha`` EPS NICs of every
    server, each at ``B``, and a flow leaves through one NIC picked by a seeded hash (so one flow
    gets at most ``B``). ``ocs="server-pair"`` (default, the released simulator, reference
    ``mfabric.md`` 4.2): a pair with ``c`` circuits is one ``c * B`` link shared by all its flows;
    ``ocs="nic"``: each circuit is its own ``B`` link and a flow takes one (module docstring).
    ``nic_pooling``: ``released`` and ``pooled`` mean the server-level aggregates (``eps``/``ocs``
    default to ``server``/``server-pair``; ``released`` lets either be set on its own), ``per-nic``
    means ``eps="nic"`` and ``ocs="nic"``; with ``pooled`` or ``per-nic``, ``eps`` and ``ocs`` must
    be left unset or agree.
    """
    nvlink_gbps = _check_common(link_gbps, "gpu", gpus_per_server, nvlink_gbps, link_delay_ps,
                                nvlink_delay_ps)
    servers = _check_int(servers, "fabric.servers", 2)
    nics = gpus_per_server  # one NIC per GPU
    alpha = _check_int(alpha, "fabric.alpha", 0)
    require(alpha <= nics - 1, "fabric.alpha", f"must be 0 .. {nics - 1} (at least one NIC stays "
            f"on the EPS of a server with {nics} NICs), got {alpha}")
    r = servers if region_servers is None else _check_int(region_servers, "fabric.region_servers", 1)
    require(servers % r == 0, "fabric.region_servers",
            f"must divide the {servers} servers (regions are equal contiguous blocks), got {r}")
    need = r * alpha
    ports = need if ocs_ports is None else _check_int(ocs_ports, "fabric.ocs_ports", 1)
    if need > ports:
        raise ConfigError("fabric.ocs_ports", f"a region of {r} servers with alpha = {alpha} needs "
                          f"{need} OCS ports, but an OCS has {ports}; use smaller regions")
    n_regions = servers // r
    link_bps = float(link_gbps) * 1e9
    nic_pooling = _check_pooling(nic_pooling)
    for field, value, allowed, want in (("fabric.eps", eps, EPS_MODES, _POOLING_MODES[nic_pooling][0]),
                                        ("fabric.ocs", ocs, OCS_MODES, _POOLING_MODES[nic_pooling][1])):
        require(value is None or value in allowed, field,
                f"must be {' or '.join(repr(a) for a in allowed)}, got {value!r}")
        require(value in (None, want) or nic_pooling == "released", field,
                f"must be {want!r} (or unset) with nic_pooling = {nic_pooling!r}, got {value!r}")
    eps = _POOLING_MODES[nic_pooling][0] if eps is None else eps
    ocs = _POOLING_MODES[nic_pooling][1] if ocs is None else ocs
    e_nics = nics - alpha
    if eps == "server":
        eps_fab = fat_tree(servers, e_nics * float(link_gbps), host="server",
                           link_delay_ps=link_delay_ps)
    else:
        eps_fab = fat_tree(servers * e_nics, float(link_gbps), host="server",
                           link_delay_ps=link_delay_ps)
    if circuits is None:
        rng = np.random.default_rng(seed)
        circuits = np.stack([random_circuits(r, alpha, rng) for _ in range(n_regions)])
    circuits = check_circuits(circuits, alpha, r, n_regions, "fabric.circuits")

    b = _Builder()  # the EPS first, so its link ids (and routing tables) stay valid
    for arr, name in zip(eps_fab.nodes, ("kind", "tier", "server", "pod", "rail")):
        getattr(b, name).extend(arr.tolist())
    for arr, name in zip(eps_fab.links[:5], ("src", "dst", "cap", "delay", "lkind")):
        getattr(b, name).extend(arr.tolist())
    nic_up = nic_down = None
    if eps == "server":
        server_node = eps_fab.hosts
    else:  # the EPS fat-tree's hosts are the NICs; a server node carries the circuits
        for h, node in enumerate(eps_fab.hosts.tolist()):
            b.server[node] = h // e_nics
        server_node = np.array([b.node(NODE_SERVER, TIER_HOST, server=s) for s in range(servers)])
        nic_up = eps_fab.routing.host_up.reshape(servers, e_nics)
        nic_down = eps_fab.routing.host_down.reshape(servers, e_nics)
    n_gpus = servers * gpus_per_server
    hosts = np.empty(n_gpus, np.int64)
    nvl_up = np.full(n_gpus, -1, np.int64)
    nvl_down = np.full(n_gpus, -1, np.int64)
    for s in range(servers):
        nvs = b.node(NODE_SWITCH, TIER_NVSWITCH, server=s)
        for g in range(s * gpus_per_server, (s + 1) * gpus_per_server):
            hosts[g] = b.node(NODE_GPU, TIER_HOST, server=s, rail=g % gpus_per_server)
            if gpus_per_server > 1:
                nvl_up[g], nvl_down[g] = b.duplex(int(hosts[g]), nvs, nvlink_gbps * 1e9,
                                                  nvlink_delay_ps, LINK_NVLINK)
    slots = 1 if ocs == "server-pair" else alpha  # links per server pair
    ocs_nic_link = np.full((servers, r, slots), -1, np.int64)
    for reg in range(n_regions):
        b.node(NODE_OCS, TIER_HOST)
        first = reg * r
        for i in range(r):
            for j in range(i + 1, r):
                c = int(circuits[reg, i, j])
                for k in range(slots):
                    cap = c * link_bps if ocs == "server-pair" else float(k < c) * link_bps
                    ocs_nic_link[first + i, j, k], ocs_nic_link[first + j, i, k] = b.duplex(
                        int(server_node[first + i]), int(server_node[first + j]), cap,
                        link_delay_ps, LINK_OCS)
    ocs_link = ocs_nic_link[:, :, 0] if slots else np.full((servers, r), -1, np.int64)
    nodes, links = b.freeze()
    routing = MixNetRouting(host_server=np.arange(n_gpus, dtype=np.int64) // gpus_per_server,
                            host_nvl_up=nvl_up, host_nvl_down=nvl_down, eps=eps_fab.routing,
                            region_servers=r, ocs_link=ocs_link, circuits=circuits, alpha=alpha,
                            link_bps=link_bps, nic_up=nic_up, nic_down=nic_down,
                            ocs_nic_link=None if ocs == "server-pair" else ocs_nic_link)
    params = dict(builder="mixnet", servers=servers, link_gbps=link_gbps, alpha=alpha,
                  gpus_per_server=gpus_per_server, region_servers=r, regions=n_regions, eps=eps,
                  ocs=ocs, nic_pooling=nic_pooling,
                  ocs_ports=ports, eps_k=eps_fab.params["k"], eps_gbps=e_nics * float(link_gbps),
                  seed=seed, nvlink_gbps=nvlink_gbps, link_delay_ps=int(link_delay_ps),
                  nvlink_delay_ps=int(nvlink_delay_ps), host="gpu")
    return Fabric(name="mixnet", nodes=nodes, links=links, hosts=hosts, routing=routing,
                  params=params)
