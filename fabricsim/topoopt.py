"""The TopoOpt baseline: a flat direct-connect fabric of degree d per server, built once per job.

TopoOpt (NSDI 2023) gives each server ``d`` NICs wired through an optical patch panel and chooses
the wiring from the job's traffic: rings for the all-reduce groups (its TotientPerms algorithm),
optionally max-weight matchings for the rest ("MP") of the traffic, then one shortest path per
server pair with multi-hop forwarding through servers. MixNet compares against it with the
parallelization fixed, so the topology is a single TopologyFinder pass. This module follows
``reference/baselines.md`` section 5.4 ("simplest faithful implementation"); every choice the note
leaves open is marked *[choice]* below.

Fabric. Nodes: per server a ``server`` node (kind ``server``, tier ``host``) carrying the direct
links, an NVSwitch (``switch``/``nvswitch``, when ``gpus_per_server > 1``) and its GPUs (``gpu``
nodes: the hosts, one per GPU, host ``h`` on server ``h // gpus_per_server``). Links: GPU <->
NVSwitch NVLink (``nvlink_gbps``, default 600 GiB/s, 0 delay), and one duplex link of kind ``ocs``
(a patch-panel circuit: optical, but never re-wired) per server pair that has ``c >= 1`` links,
at ``c * link_gbps`` in each direction (parallel links merged, as the released flat topology's
queue at ``c x B``, ``reference/baselines.md`` 5.3), ``link_delay_ps`` (1 µs) each way. GPUs
reach their server's NICs implicitly: like the released simulators, the GPU -> NIC hop is not
modelled, so an inter-server route starts at the source server node's link and ends at the
destination server node.

NIC pooling (``nic_pooling``, the same switch as every fabric builder; see
:data:`fabricsim.fabric.NIC_POOLING`). ``released`` (default) and ``pooled``: merged parallel
links as above; a server pair's ``c`` links act as one pool, so one flow may get ``c *
B``. ``per-nic``: each of the ``c`` links is its own duplex link at ``link_gbps`` (one NIC at each
end), built one after the other, and a flow takes one of them per hop, picked by a seeded hash of
the flow (``seed`` of :meth:`Fabric.route`, :func:`fabricsim.kernels.routing.choice_hash`), so one
flow gets at most ``B``. Both readings share the topology and the server-level paths (the shortest
path search runs over server-pair *bundles* numbered as the merged links), so they differ only in
how a pair's links are shared.

Traffic (per server pair, one iteration). ``allreduce_groups``: ``[(member_servers, bytes)]``, the
bytes an all-reduce moves between servers (the ring task's total); ``mp_demand[i, j]``: every other
inter-server byte (EP all-to-all, PP). :func:`topoopt_for_workload` derives both from a task graph.

Port split. ``released`` (default; the released code): ``d_A = d`` ports for all-reduce rings (the
largest even number <= d; an odd d leaves one port to the fill step), ``d_MP = 0``. ``paper``:
``d_A = d * AR / (AR + MP)`` rounded to the nearest even number, at least 2 and at most d
(AR, MP: total all-reduce and MP bytes), ``d_MP = d - d_A``.

Rings (TotientPerms on real member lists).

1. Groups: members sorted and de-duplicated; groups with fewer than 2 servers are dropped;
   groups with the same member set are merged (bytes added) *[choice]*.
2. The heaviest group size ``n*`` (largest total bytes over its groups; ties -> larger size
   *[choice]*) gets ``p = (d_A - 2) / 2`` rings per group. The other two ports form the step-1
   ring through all servers (``i <-> i + 1 mod S``), which keeps the graph connected. If a group
   of size ``n*`` spans every server, that group's own step-1 ring is the global ring and gets
   ``p = d_A / 2`` rings. Lighter group sizes get no rings of their own (as released).
3. A ring of step ``m`` (``gcd(m, n) = 1``) links member ``i`` to member ``(i + m) mod n`` for every
   ``i``: a Hamiltonian cycle using two ports of every member (for ``n = 2`` it is two parallel
   links between the pair). Candidate steps are ``1 <= m <= n/2`` with ``gcd(m, n) = 1``
   *[choice]*: steps ``m`` and ``n - m`` give the same bidirectional ring, so TopoOpt's ``phi(n)``
   candidates hold ``phi(n) / 2`` distinct rings (``n > 2``); counting both would silently create
   parallel links. The ``p`` steps are spread geometrically between the smallest (1) and the
   largest candidate (targets ``hi ** (k / (p - 1))``, each taking the smallest unused candidate
   >= the target, else the largest unused one); step 1 is always among them, so consecutive
   members of every ring all-reduce get direct links. When ``p`` exceeds the distinct steps, the
   extra rings repeat the chosen steps in order (parallel links; group size 2 has ``phi(2) = 1``
   step, so all its rings are one fat partner link).
4. Rings are added ring-major (ring 1 of every group, by bytes descending, then ring 2, ...) and
   only where every member still has two of its ``d_A`` ring ports free, so overlapping groups
   never exceed a server's degree *[choice]*. TopoOpt's code assumes groups partition the
   servers; then every ring fits.

MP matchings (``d_MP > 0``). ``d_MP`` rounds; each round matches every server with a free MP port
(a perfect matching when their count is even, as TopoOpt's Blossom perfect matching), with pair
weight ``(D[i, j] + D[j, i]) / (c + 1)`` where ``c`` is the MP links the pair already has (the
``c / (c + 1)`` discount: net original demand / (c + 1)), and adds one link per matched pair.
Matching routine *[choice]*: greedy (pairs by weight descending, ties by a seeded random key; a
1/2-approximation of the maximum weight), then 2-opt (swap the partners of two matched pairs while
it raises the total weight). Exact Blossom is not needed by the note ("any general max-weight
matching routine is acceptable"); 128 servers take a few milliseconds per round, and on random
instances of 8-40 servers the result is within 10 % of the exact maximum (97 % on average).

Fill *[choice]*. Ports still free after rings and matchings (odd degree, overlapping groups,
servers outside every ring group) are matched the same way, round by round, with weight ``W /
(c + 1)``: ``W`` is the MP demand plus each group's ring traffic (``bytes / n`` between consecutive
members), ``c`` all links of the pair. A port stays unused only when no other server has one free
(e.g. an odd number of servers with odd degree); ``params["unused_ports"]`` counts them.

Routing. One path per ordered server pair: a breadth-first search from every server with seeded
random tie-breaks (``seed``, default 13; :func:`fabricsim.kernels.pairroute.bfs_pair_paths`), so a
direct link is used when there is one and otherwise a fewest-hop path through intermediate
servers. No ECMP. GPU-to-GPU flows ride their server pair's path; flows inside a server take
NVLink (GPU -> NVSwitch -> GPU). With ``nic_pooling="per-nic"`` each hop of a flow takes one of
its bundle's parallel links (above). Path kinds: ``nvlink``; ``direct`` for one hop and
``multihop`` for relayed paths where :data:`fabricsim.fabric.PATH_KINDS` has them (else ``tor``
and ``pod``).
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import numpy as np

from fabricsim.errors import ConfigError, require
from fabricsim.fabric import (
    LINK_DELAY_DEFAULT_PS,
    LINK_NVLINK,
    LINK_OCS,
    NODE_GPU,
    NODE_SERVER,
    NODE_SWITCH,
    PATH_KINDS,
    TIER_HOST,
    TIER_NVSWITCH,
    Fabric,
    Routes,
    _Builder,
    _check_common,
    _check_int,
    _check_pooling,
)
from fabricsim.kernels.pairroute import bfs_pair_paths, route_pairs

__all__ = ["PairTableRouting", "topoopt", "topoopt_for_workload", "workload_traffic", "link_counts",
           "greedy_matching", "PORT_SPLITS", "MAX_DEGREE", "SEED_DEFAULT"]

PORT_SPLITS = ("released", "paper")
#: Largest degree (NICs per server) accepted.
MAX_DEGREE = 64
#: The seed of the released simulators (path choice and tie-breaks).
SEED_DEFAULT = 13

PATH_NVLINK = PATH_KINDS.index("nvlink")
PATH_DIRECT = PATH_KINDS.index("direct") if "direct" in PATH_KINDS else PATH_KINDS.index("tor")
PATH_MULTIHOP = PATH_KINDS.index("multihop") if "multihop" in PATH_KINDS else PATH_KINDS.index("pod")


class PairTableRouting(NamedTuple):
    """Routing by a per-server-pair path table (one path per ordered pair; ``S`` servers).

    Hosts ``[H]``: ``host_server`` server index, ``host_nvl_up``/``host_nvl_down`` the GPU ->
    NVSwitch and NVSwitch -> GPU links (-1 when servers have one GPU). ``pair_ptr int64[S*S + 1]``
    and ``pair_links int64[nnz]``: the bundles, in path order, from server ``i`` to server ``j``
    at ``pair_links[pair_ptr[i*S + j]:pair_ptr[i*S + j + 1]]`` (empty for ``i == j``). Bundle
    ``b`` is the ``bundle_size[b]`` parallel links ``bundle_first[b] + 2 * k`` (see
    :mod:`fabricsim.kernels.pairroute`); with merged parallel links every bundle is one link and
    its id is the link id.
    """

    host_server: np.ndarray
    host_nvl_up: np.ndarray
    host_nvl_down: np.ndarray
    n_servers: int
    pair_ptr: np.ndarray
    pair_links: np.ndarray
    bundle_first: np.ndarray
    bundle_size: np.ndarray

    def route(self, src, dst, seed=0, circuits=None) -> Routes:
        """The pair's path for each flow, NVLink inside a server; each hop's parallel link is
        picked by a hash of ``(seed, flow index)`` (one link per bundle when merged: ``seed`` has
        no effect). ``circuits`` is ignored (no circuits)."""
        ptr, links, kind = route_pairs(src, dst, self.host_server, self.host_nvl_up,
                                       self.host_nvl_down, int(self.n_servers), self.pair_ptr,
                                       self.pair_links, self.bundle_first, self.bundle_size,
                                       np.uint64(seed & 0xFFFFFFFFFFFFFFFF), PATH_NVLINK,
                                       PATH_DIRECT, PATH_MULTIHOP)
        return Routes(ptr, links, kind)

    def _bundles(self, i: int, j: int) -> list:
        p = int(i) * int(self.n_servers) + int(j)
        return [int(x) for x in self.pair_links[self.pair_ptr[p]:self.pair_ptr[p + 1]]]

    def server_path(self, i: int, j: int) -> list:
        """Link ids of the path from server ``i`` to server ``j`` (each hop's first parallel link)."""
        return [int(self.bundle_first[b]) for b in self._bundles(i, j)]

    def paths(self, s: int, d: int) -> list:
        """The paths between hosts ``s`` and ``d``: NVLink, or the pair's path through every
        combination of its hops' parallel links (one path when they are merged)."""
        if s == d:
            return [[]]
        ss, ds = int(self.host_server[s]), int(self.host_server[d])
        if ss == ds:
            return [[int(self.host_nvl_up[s]), int(self.host_nvl_down[d])]]
        hops = [[int(self.bundle_first[b]) + 2 * k for k in range(int(self.bundle_size[b]))]
                for b in self._bundles(ss, ds)]
        return [list(p) for p in itertools.product(*hops)]


# --------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------

def greedy_matching(weight: np.ndarray, eligible: np.ndarray, rng: np.random.Generator,
                    two_opt: bool = True) -> np.ndarray:
    """A heavy matching over the ``eligible`` servers (every one matched but at most one).

    ``weight float64[S, S]`` symmetric, >= 0. Greedy by weight descending (ties by a random key
    from ``rng``), then 2-opt improvement: for two matched pairs ``(a, b), (c, d)`` replace them by
    ``(a, c), (b, d)`` or ``(a, d), (b, c)`` while that raises the total weight. Returns
    ``int64[M, 2]`` pairs ``(i < j)``.
    """
    idx = np.flatnonzero(eligible)
    n = idx.size
    if n < 2:
        return np.zeros((0, 2), np.int64)
    iu, ju = np.triu_indices(n, 1)
    w = weight[idx[iu], idx[ju]]
    order = np.lexsort((rng.random(w.size), -w))
    free = np.ones(n, bool)
    a_list, b_list = [], []
    left = n // 2
    for k in order:
        i, j = iu[k], ju[k]
        if free[i] and free[j]:
            free[i] = free[j] = False
            a_list.append(i)
            b_list.append(j)
            left -= 1
            if left == 0:
                break
    a = idx[np.array(a_list, np.int64)]
    b = idx[np.array(b_list, np.int64)]
    if two_opt and a.size >= 2:
        a, b = _two_opt(weight, a, b)
    pairs = np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def _two_opt(weight, a, b, max_rounds=10_000):
    """Pair-swap local search on the matching ``a[k] - b[k]`` (see :func:`greedy_matching`)."""
    a, b = a.copy(), b.copy()
    scale = max(float(weight.max()), 1.0)
    for _ in range(max_rounds):
        cur = weight[a, b]
        base = cur[:, None] + cur[None, :]
        gain1 = weight[a[:, None], a[None, :]] + weight[b[:, None], b[None, :]] - base  # (a,c),(b,d)
        gain2 = weight[a[:, None], b[None, :]] + weight[b[:, None], a[None, :]] - base  # (a,d),(b,c)
        np.fill_diagonal(gain1, -np.inf)
        np.fill_diagonal(gain2, -np.inf)
        k1 = np.unravel_index(np.argmax(gain1), gain1.shape)
        k2 = np.unravel_index(np.argmax(gain2), gain2.shape)
        g1, g2 = gain1[k1], gain2[k2]
        if max(g1, g2) <= 1e-12 * scale:
            break
        if g1 >= g2:
            x, y = k1
            a[x], b[x], a[y], b[y] = a[x], a[y], b[x], b[y]
        else:
            x, y = k2
            a[x], b[x], a[y], b[y] = a[x], b[y], b[x], a[y]
    return a, b


# --------------------------------------------------------------------------------------------
# Topology
# --------------------------------------------------------------------------------------------

def _ring_steps(n: int, p: int) -> list:
    """``p`` ring steps for groups of size ``n``: distinct ones spread geometrically, then repeats."""
    if p <= 0:
        return []
    cand = [m for m in range(1, n // 2 + 1) if math.gcd(m, n) == 1]
    if p >= len(cand):
        return [cand[k % len(cand)] for k in range(p)]
    hi = cand[-1]
    targets = [1.0] if p == 1 else [hi ** (k / (p - 1)) for k in range(p)]
    chosen = []
    for t in targets:
        free = [m for m in cand if m not in chosen]
        above = [m for m in free if m >= t - 1e-9]
        chosen.append(above[0] if above else free[-1])
    return sorted(chosen)


def _normalize_groups(groups, servers):
    """``[(members int64[n] sorted unique, bytes float)]``, merged by member set; validated."""
    field = "fabric.allreduce_groups"
    if groups is None:
        return []
    try:
        items = list(groups)
    except TypeError:
        raise ConfigError(field, f"must be a list of (member_servers, bytes) pairs, got {groups!r}") from None
    merged = {}
    for g, item in enumerate(items):
        try:
            members, size = item
        except (TypeError, ValueError):
            raise ConfigError(field, f"group {g} must be a (member_servers, bytes) pair, got {item!r}") from None
        m = np.asarray(members)
        require(m.ndim == 1 and (m.size == 0 or np.issubdtype(m.dtype, np.integer)), field,
                f"group {g}: members must be a 1-D array of server indices, got {members!r}")
        m = np.unique(m.astype(np.int64))
        if m.size and (m[0] < 0 or m[-1] >= servers):
            raise ConfigError(field, f"group {g}: member servers must lie in 0 .. {servers - 1}, "
                              f"got {int(m[0]) if m[0] < 0 else int(m[-1])}")
        require(isinstance(size, (int, float, np.integer, np.floating)) and not isinstance(size, bool)
                and math.isfinite(size) and size >= 0, field,
                f"group {g}: bytes must be a finite number >= 0, got {size!r}")
        if m.size < 2:
            continue
        key = tuple(int(x) for x in m)
        merged[key] = merged.get(key, 0.0) + float(size)
    return [(np.array(k, np.int64), b) for k, b in merged.items()]


def _check_demand(mp_demand, servers):
    field = "fabric.mp_demand"
    if mp_demand is None:
        return np.zeros((servers, servers))
    d = np.asarray(mp_demand)
    require(d.shape == (servers, servers), field,
            f"must be a {servers} x {servers} matrix (servers x servers bytes), got shape {d.shape}")
    require(np.issubdtype(d.dtype, np.number) and not np.issubdtype(d.dtype, np.complexfloating),
            field, f"must hold numbers, got dtype {d.dtype}")
    d = d.astype(np.float64)
    require(bool(np.all(np.isfinite(d))) and bool(np.all(d >= 0)), field,
            "must hold finite bytes >= 0")
    d = d.copy()
    np.fill_diagonal(d, 0.0)
    return d


def _build_links(servers, degree, groups, mp, port_split, rng):
    """The link-count matrix ``int64[S, S]`` (symmetric) and a dict of what was decided."""
    S = servers
    count = np.zeros((S, S), np.int64)
    free = np.full(S, degree, np.int64)  # all free ports

    def add(i, j, budget=None):
        count[i, j] += 1
        count[j, i] += 1
        free[i] -= 1
        free[j] -= 1
        if budget is not None:
            budget[i] -= 1
            budget[j] -= 1

    ar_bytes = float(sum(b for _, b in groups))
    mp_bytes = float(mp.sum())
    even = degree - degree % 2
    if port_split == "released" or ar_bytes + mp_bytes == 0:
        d_a = even
    else:
        d_a = int(2 * round(degree * ar_bytes / (ar_bytes + mp_bytes) / 2))
        d_a = min(max(d_a, 2), even)
    d_mp = degree - d_a if port_split == "paper" else 0
    ring_free = np.full(S, d_a, np.int64)  # free ring ports
    mp_free = np.full(S, d_mp, np.int64)  # free MP ports

    # Rings: the heaviest group size, plus the global step-1 ring.
    by_size = {}
    for m, b in groups:
        by_size[m.size] = by_size.get(m.size, 0.0) + b
    ring_size = max(by_size, key=lambda n: (by_size[n], n)) if by_size else 0
    ring_groups = sorted((g for g in groups if g[0].size == ring_size),
                         key=lambda g: (-g[1], tuple(g[0])))
    spans_all = ring_size == S
    if not spans_all:
        for i in range(S):
            add(i, (i + 1) % S, ring_free)
    p = d_a // 2 - (0 if spans_all else 1)
    steps = _ring_steps(ring_size, p) if ring_groups else []
    rings_added = 0
    for m in steps:
        for members, _ in ring_groups:
            if np.all(ring_free[members] >= 2):
                n = members.size
                for k in range(n):
                    add(members[k], members[(k + m) % n], ring_free)
                rings_added += 1
    # MP matchings (paper split) use only the d_MP ports; ring ports the rings left free go to
    # the fill step.
    mp_sym = mp + mp.T
    mp_links = np.zeros((S, S), np.int64)
    for _ in range(d_mp):
        pairs = greedy_matching(mp_sym / (mp_links + 1.0), mp_free > 0, rng)
        for i, j in pairs:
            add(i, j, mp_free)
            mp_links[i, j] += 1
            mp_links[j, i] += 1

    # Fill: every port still free.
    ring_w = np.zeros((S, S))
    for members, b in groups:
        n = members.size
        nxt = np.roll(members, -1)
        np.add.at(ring_w, (members, nxt), b / n)
    w = mp_sym + ring_w + ring_w.T
    while np.count_nonzero(free > 0) >= 2:
        pairs = greedy_matching(w / (count + 1.0), free > 0, rng)
        for i, j in pairs:
            add(i, j)
    info = dict(d_allreduce=int(d_a), d_mp=int(d_mp), ring_group_size=int(ring_size),
                ring_groups=len(ring_groups), ring_steps=[int(m) for m in steps],
                rings_added=int(rings_added), allreduce_bytes=ar_bytes, mp_bytes=mp_bytes,
                unused_ports=int(free.sum()))
    return count, info


def topoopt(servers: int, link_gbps: float, *, degree: int = 8, gpus_per_server: int = 8,
            allreduce_groups=(), mp_demand=None, port_split: str = "released",
            seed: int = SEED_DEFAULT, nvlink_gbps: float | None = None,
            link_delay_ps: int = LINK_DELAY_DEFAULT_PS, nic_pooling: str = "released") -> Fabric:
    """A TopoOpt fabric over ``servers`` servers of ``degree`` NICs at ``link_gbps`` each.

    ``allreduce_groups``: ``[(member_servers, bytes)]``; ``mp_demand``: ``servers x servers``
    bytes of the other inter-server traffic; ``port_split``: ``released`` (all ports to
    all-reduce rings) or ``paper`` (ports in proportion to bytes, MP ports by matchings);
    ``seed``: tie-breaks of the matchings and the shortest paths. ``nic_pooling``: ``released``
    or ``pooled`` (a pair's parallel links merged into one link of ``c * B``, reference
    ``baselines.md`` 5.3) or ``per-nic`` (each parallel link its own ``B`` link, a flow takes one
    by a seeded hash). See the module docstring.
    """
    servers = _check_int(servers, "fabric.servers", 2)
    degree = _check_int(degree, "fabric.degree", 2)
    require(degree <= MAX_DEGREE, "fabric.degree",
            f"must be an integer in 2 .. {MAX_DEGREE} (NICs per server), got {degree}")
    require(isinstance(link_delay_ps, (int, np.integer)) and not isinstance(link_delay_ps, bool)
            and link_delay_ps >= 0, "fabric.link_delay_ps",
            f"must be an integer >= 0 (picoseconds), got {link_delay_ps!r}")
    delay_ps = int(link_delay_ps)
    nvlink_gbps = _check_common(link_gbps, "gpu", gpus_per_server, nvlink_gbps, delay_ps, 0)
    require(port_split in PORT_SPLITS, "fabric.port_split",
            f"must be one of {', '.join(PORT_SPLITS)}, got {port_split!r}")
    seed = _check_int(seed, "fabric.seed", 0)
    nic_pooling = _check_pooling(nic_pooling)
    merged = nic_pooling != "per-nic"
    groups = _normalize_groups(allreduce_groups, servers)
    mp = _check_demand(mp_demand, servers)

    rng = np.random.default_rng(seed)
    count, info = _build_links(servers, degree, groups, mp, port_split, rng)

    g = gpus_per_server
    bps = float(link_gbps) * 1e9
    b = _Builder()
    server_node = [b.node(NODE_SERVER, TIER_HOST, server=s) for s in range(servers)]
    n_hosts = servers * g
    hosts = np.array([b.node(NODE_GPU, TIER_HOST, server=h // g, rail=h % g) for h in range(n_hosts)],
                     np.int64)
    iu, ju = np.nonzero(np.triu(count, 1))
    adj = [[] for _ in range(servers)]  # (neighbour, directed bundle id)
    # bundle 2m (i -> j) and 2m + 1 (j -> i) of pair m: the merged link ids, in both readings
    bundle_first = np.empty(2 * iu.size, np.int64)
    bundle_size = np.repeat(count[iu, ju] if not merged else np.ones(iu.size, np.int64), 2)
    for m, (i, j) in enumerate(zip(iu.tolist(), ju.tolist())):
        c = int(count[i, j])
        for k in range(1 if merged else c):
            up, _ = b.duplex(server_node[i], server_node[j], (c if merged else 1) * bps, delay_ps,
                             LINK_OCS)
            if k == 0:
                bundle_first[2 * m], bundle_first[2 * m + 1] = up, up + 1
        adj[i].append((j, 2 * m))
        adj[j].append((i, 2 * m + 1))
    nvl_up = np.full(n_hosts, -1, np.int64)
    nvl_down = np.full(n_hosts, -1, np.int64)
    if g > 1:
        for s in range(servers):
            nvs = b.node(NODE_SWITCH, TIER_NVSWITCH, server=s)
            for h in range(s * g, (s + 1) * g):
                nvl_up[h], nvl_down[h] = b.duplex(int(hosts[h]), nvs, nvlink_gbps * 1e9, 0, LINK_NVLINK)
    nodes, links = b.freeze()

    adj_ptr = np.zeros(servers + 1, np.int64)
    adj_ptr[1:] = np.cumsum([len(a) for a in adj])
    adj_nbr = np.array([v for a in adj for v, _ in a], np.int64)
    adj_link = np.array([lk for a in adj for _, lk in a], np.int64)
    pair_ptr, pair_links, dist = bfs_pair_paths(servers, adj_ptr, adj_nbr, adj_link, seed)
    if np.any(dist < 0):  # pragma: no cover - the global ring keeps every pair reachable
        raise AssertionError("topoopt: some server pair is unreachable")
    off = ~np.eye(servers, dtype=bool)
    routing = PairTableRouting(np.arange(n_hosts, dtype=np.int64) // g, nvl_up, nvl_down, servers,
                               pair_ptr, pair_links, bundle_first, bundle_size.astype(np.int64))
    params = dict(builder="topoopt", servers=servers, link_gbps=link_gbps, degree=degree,
                  gpus_per_server=g, host="gpu", port_split=port_split, seed=seed,
                  nic_pooling=nic_pooling, parallel_links="merged" if merged else "separate",
                  nvlink_gbps=nvlink_gbps, link_delay_ps=delay_ps, nvlink_delay_ps=0,
                  allreduce_groups=len(groups), direct_pairs=int(iu.size),
                  max_hops=int(dist.max()), mean_hops=float(dist[off].mean()), **info)
    return Fabric(name="topoopt", nodes=nodes, links=links, hosts=hosts, routing=routing, params=params)


def link_counts(fabric: Fabric) -> np.ndarray:
    """``int64[S, S]``: the parallel links (ports used) between each server pair of a TopoOpt fabric."""
    p = fabric.params
    require(p.get("builder") == "topoopt", "fabric", "must be a fabric built by topoopt()")
    S = int(p["servers"])
    lk, nd = fabric.links, fabric.nodes
    keep = (lk.kind == LINK_OCS) & (nd.kind[lk.src] == NODE_SERVER) & (nd.kind[lk.dst] == NODE_SERVER)
    out = np.zeros((S, S), np.int64)
    c = np.rint(lk.capacity_bps[keep] / (float(p["link_gbps"]) * 1e9)).astype(np.int64)
    np.add.at(out, (nd.server[lk.src[keep]], nd.server[lk.dst[keep]]), c)  # parallel links add
    return out


# --------------------------------------------------------------------------------------------
# From a workload
# --------------------------------------------------------------------------------------------

_EP_OPS = ("ep_dispatch", "ep_combine", "ep_combine_bwd", "ep_dispatch_bwd")
_PP_OPS = ("pp_activation", "pp_gradient")
_DP_OPS = ("dp_reduce", "dp_ring", "dp_broadcast")


def _csr_flows(graph, tasks):
    """Concatenated explicit flows (src, dst, bytes) of ``tasks`` (tasks without an a2a matrix)."""
    ptr = graph.flow_ptr
    lo, hi = ptr[tasks], ptr[tasks + 1]
    lens = hi - lo
    total = int(lens.sum())
    if total == 0:
        e = np.zeros(0, np.int64)
        return e, e, e
    idx = np.repeat(lo - np.r_[0, np.cumsum(lens)[:-1]], lens) + np.arange(total)
    return graph.flow_src[idx], graph.flow_dst[idx], graph.flow_bytes[idx]


def workload_traffic(graph):
    """Server-level traffic of one iteration of a task graph: ``(groups, mp_demand)``.

    ``groups``: ``[(member_servers int64[n], bytes)]``, one per ``dp_ring`` task (its gateways'
    servers, sorted; bytes = the ring's total), identical member sets merged. ``mp_demand
    int64[S, S]``: bytes of the inter-server flows of the EP all-to-all and PP tasks (and any
    inter-server flow of ``dp_reduce``/``dp_broadcast``, which the hierarchical all-reduce keeps
    inside servers). TP traffic stays inside servers and is left out.
    """
    pl = graph.placement
    gps = int(pl.gpus_per_server)
    S = int(pl.servers)
    mp = np.zeros((S, S), np.int64)

    def add(src, dst, size):
        ss, ds = src // gps, dst // gps
        x = ss != ds
        np.add.at(mp, (ss[x], ds[x]), size[x])

    groups = {}
    for t in graph.tasks_of("dp_ring"):
        src, dst, size = graph.flows(int(t))
        members = np.unique(np.r_[src, dst] // gps)
        if members.size < 2:
            continue
        key = tuple(int(x) for x in members)
        groups[key] = groups.get(key, 0) + int(size.sum())
    for op in ("dp_reduce", "dp_broadcast") + _PP_OPS:
        add(*_csr_flows(graph, graph.tasks_of(op)))

    # EP all-to-alls: sum the per-pair byte matrices of all tasks of one EP group, then expand once.
    ep_tasks = np.concatenate([graph.tasks_of(op) for op in _EP_OPS])
    explicit = ep_tasks[graph.a2a_matrix[ep_tasks] < 0]
    add(*_csr_flows(graph, explicit))
    ep_tasks = ep_tasks[graph.a2a_matrix[ep_tasks] >= 0]
    if ep_tasks.size:
        tp, ep = int(pl.tp), int(pl.ep)
        mats = graph.a2a_tokens[graph.a2a_matrix[ep_tasks]]
        trans = graph.a2a_transpose[ep_tasks]
        mats = np.where(trans[:, None, None], np.swapaxes(mats, 1, 2), mats)
        per_gpu = mats * int(graph.bytes_per_token) // tp  # bytes GPU (s, t) -> (d, t), every t
        per_gpu[:, np.arange(ep), np.arange(ep)] = 0
        first = np.asarray(pl.gpu(graph.stage[ep_tasks], graph.dp_rank[ep_tasks], 0, 0), np.int64)
        firsts, inv = np.unique(first, return_inverse=True)
        acc = np.zeros((firsts.size, ep, ep), np.int64)
        np.add.at(acc, inv, per_gpu)
        s_rank, d_rank = np.meshgrid(np.arange(ep), np.arange(ep), indexing="ij")
        for k, f in enumerate(firsts.tolist()):
            for t in range(tp):
                add((f + s_rank * tp + t).ravel(), (f + d_rank * tp + t).ravel(), acc[k].ravel())
    return [(np.array(k, np.int64), v) for k, v in groups.items()], mp


def topoopt_for_workload(graph, link_gbps: float, **kw) -> Fabric:
    """A TopoOpt fabric for one iteration of a :class:`~fabricsim.workload.taskgraph.TaskGraph`.

    Servers and GPUs per server come from ``graph.placement``; the all-reduce groups and the MP
    matrix from :func:`workload_traffic`. Other keywords go to :func:`topoopt`.
    """
    pl = graph.placement
    for name in ("allreduce_groups", "mp_demand", "servers"):
        require(name not in kw, f"fabric.{name}", "is derived from the workload; do not pass it")
    gps = kw.pop("gpus_per_server", pl.gpus_per_server)
    require(gps == pl.gpus_per_server, "fabric.gpus_per_server",
            f"must match the workload's gpus_per_server ({pl.gpus_per_server}), got {gps!r}")
    groups, mp = workload_traffic(graph)
    fabric = topoopt(int(pl.servers), link_gbps, gpus_per_server=int(pl.gpus_per_server),
                     allreduce_groups=groups, mp_demand=mp, **kw)
    fabric.params["workload"] = {"model": graph.config.model, "gpus": int(pl.gpus), "dp": int(pl.dp),
                                 "tp": int(pl.tp), "pp": int(pl.pp), "ep": int(pl.ep)}
    return fabric
