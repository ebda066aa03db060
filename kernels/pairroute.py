"""Routing by a per-server-pair path table (direct-connect fabrics such as TopoOpt).

Two kernels:

- :func:`bfs_pair_paths` builds the table: one shortest path (fewest hops) per ordered server pair,
  by a breadth-first search from every server. Ties between shortest paths are broken at random but
  reproducibly: the parent of node ``v`` in the search from ``s`` is, among the links ``u -> v``
  with ``dist[u] = dist[v] - 1``, the one with the smallest ``splitmix64`` hash of ``(seed, s,
  link)`` (each node picks uniformly among its shortest-path predecessors). The paths from ``s``
  therefore form a shortest-path tree.
- :func:`route_pairs` routes GPU-to-GPU flows: NVLink inside a server (``nvl_up[src]``,
  ``nvl_down[dst]``), the server pair's path otherwise, one of each hop's parallel links per flow.

Layouts. Servers ``0 .. S-1``; adjacency as CSR over servers: ``adj_ptr int64[S + 1]``,
``adj_nbr int64[A]`` (neighbour server), ``adj_link int64[A]`` (the directed *bundle* id ``u ->
nbr``: the parallel links from ``u`` to ``nbr``, see below). Path table: ``pair_ptr int64[S * S +
1]`` indexed by ``i * S + j`` and ``pair_links int64[nnz]`` (bundle ids in path order from server
``i`` to server ``j``; the diagonal is empty). Unreachable pairs also have empty paths and are
reported by ``dist == -1``.
Bundles: bundle ``b`` holds the ``bundle_size[b]`` parallel links ``bundle_first[b] + 2 * k``
(``k = 0 .. size - 1``: duplex links built one after the other, so the opposite direction's twins
are the ids + 1). A flow takes parallel link ``k = choice_hash(seed, flow, hop + 1) % size`` at
each hop (:func:`fabricsim.kernels.routing.choice_hash`); with bundles of one link (merged
parallel links) the bundle id is the link id and the path is the table's.
Routes: ``route_ptr int64[F + 1]``, ``route_links int64[nnz]``, ``path_kind int8[F]``.
"""

import numpy as np

from fabricsim._jit import njit
from fabricsim.kernels.routing import choice_hash, splitmix64


@njit
def bfs_pair_paths(n, adj_ptr, adj_nbr, adj_link, seed):
    """One seeded-random shortest path per ordered server pair.

    Returns ``(pair_ptr int64[n*n + 1], pair_links int64[nnz], dist int64[n, n])`` (hops; -1 if
    unreachable).
    """
    dist = np.full((n, n), -1, np.int64)
    parent_link = np.full((n, n), -1, np.int64)
    parent_node = np.full((n, n), -1, np.int64)
    best = np.zeros(n, np.uint64)
    queue = np.empty(n, np.int64)
    base = splitmix64(np.uint64(seed))
    for s in range(n):
        salt = splitmix64(base ^ splitmix64(np.uint64(s)))
        dist[s, s] = 0
        queue[0] = s
        head, tail = 0, 1
        while head < tail:
            u = queue[head]
            head += 1
            du = dist[s, u]
            for a in range(adj_ptr[u], adj_ptr[u + 1]):
                v = adj_nbr[a]
                if v == s:
                    continue
                key = splitmix64(salt ^ np.uint64(adj_link[a]))
                if dist[s, v] < 0:
                    dist[s, v] = du + 1
                    queue[tail] = v
                    tail += 1
                    parent_link[s, v] = adj_link[a]
                    parent_node[s, v] = u
                    best[v] = key
                elif dist[s, v] == du + 1 and key < best[v]:
                    parent_link[s, v] = adj_link[a]
                    parent_node[s, v] = u
                    best[v] = key
    ptr = np.zeros(n * n + 1, np.int64)
    for s in range(n):
        for v in range(n):
            hops = dist[s, v]
            ptr[s * n + v + 1] = ptr[s * n + v] + (hops if hops > 0 else 0)
    links = np.empty(ptr[n * n], np.int64)
    for s in range(n):
        for v in range(n):
            hops = dist[s, v]
            if hops <= 0:
                continue
            at = ptr[s * n + v] + hops - 1
            w = v
            while w != s:
                links[at] = parent_link[s, w]
                at -= 1
                w = parent_node[s, w]
    return ptr, links, dist


@njit
def route_pairs(src, dst, host_server, nvl_up, nvl_down, n_servers, pair_ptr, pair_links,
                bundle_first, bundle_size, seed, kind_nvlink, kind_direct, kind_multihop):
    """Route flows ``src[i] -> dst[i]`` (host indices) over the pair table; see the module doc.
    ``seed`` (uint64) picks each hop's parallel link."""
    n = src.shape[0]
    kind = np.empty(n, np.int8)
    length = np.empty(n, np.int64)
    for i in range(n):
        s, d = src[i], dst[i]
        ss, ds = host_server[s], host_server[d]
        if ss == ds:
            kind[i] = kind_nvlink
            length[i] = 2
        else:
            p = ss * n_servers + ds
            length[i] = pair_ptr[p + 1] - pair_ptr[p]
            kind[i] = kind_direct if length[i] == 1 else kind_multihop
    ptr = np.zeros(n + 1, np.int64)
    for i in range(n):
        ptr[i + 1] = ptr[i] + length[i]
    links = np.empty(ptr[n], np.int64)
    for i in range(n):
        s, d = src[i], dst[i]
        at = ptr[i]
        if kind[i] == kind_nvlink:
            links[at] = nvl_up[s]
            links[at + 1] = nvl_down[d]
        else:
            p = host_server[s] * n_servers + host_server[d]
            lo = pair_ptr[p]
            for k in range(length[i]):
                b = pair_links[lo + k]
                n_par = bundle_size[b]
                if n_par == 1:
                    links[at + k] = bundle_first[b]
                else:
                    pick = np.int64(choice_hash(seed, i, k + 1) % np.uint64(n_par))
                    links[at + k] = bundle_first[b] + 2 * pick
    return ptr, links, kind
