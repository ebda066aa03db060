"""Route flows over a 2- or 3-tier Clos (fat-tree family) in closed form, one ECMP path per flow.

Inputs are the tables of :class:`fabricsim.fabric.ClosRouting` (host ``[H]``, edge ``[E, U]``,
aggregation ``[A, V]`` arrays of link ids). A flow's path index is drawn from a seeded hash of
``(seed, flow index)`` (splitmix64), so the same inputs always give the same routes:
``u = hash % U`` picks the edge uplink, ``v = (hash // U) % V`` the aggregation uplink.

Outputs: ``route_ptr : int64[F + 1]``, ``route_links : int64[nnz]`` (links in path order) and
``path_kind : int8[F]`` (0 nvlink, 1 same edge switch, 2 same pod, 3 across the core).

Other per-flow choices among parallel links (one OCS circuit of a server pair, one of a TopoOpt
pair's parallel links) use :func:`choice_hash` with a ``salt`` >= 1 per decision, a hash of the
same ``(seed, flow index)`` that is independent of the ECMP hash and of the other decisions.
"""

import numpy as np

from fabricsim._jit import njit

PATH_NVLINK, PATH_TOR, PATH_POD, PATH_CORE = 0, 1, 2, 3


@njit(inline="always")
def splitmix64(x):
    """One splitmix64 step on a uint64: a fast, well-mixed 64-bit hash."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    z = x
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit
def flow_hash(seed, i):
    """The ECMP hash of flow ``i`` under ``seed`` (both uint64-convertible)."""
    return splitmix64(splitmix64(np.uint64(seed)) ^ np.uint64(i))


@njit(inline="always")
def choice_hash(seed, i, salt):
    """The hash of decision ``salt`` (an integer >= 1) of flow ``i`` under ``seed``."""
    return splitmix64(flow_hash(seed, i) ^ splitmix64(np.uint64(salt)))


@njit
def pick(seed, index, count, salt):
    """``int64[F]``: for flow ``index[f]``, one of ``count[f]`` (>= 1) options, uniformly by
    :func:`choice_hash` ``(seed, index[f], salt)``."""
    out = np.empty(index.shape[0], np.int64)
    for f in range(index.shape[0]):
        out[f] = np.int64(choice_hash(seed, index[f], salt) % np.uint64(count[f]))
    return out


@njit
def route_clos(src, dst, seed, host_edge, host_up, host_down, host_server, nvl_up, nvl_down,
               edge_pod, edge_up, edge_down, edge_par, agg_up, agg_down):
    n = src.shape[0]
    n_up = edge_up.shape[1]
    n_core = agg_up.shape[1]
    aggs_per_pod = n_up // edge_par
    kind = np.empty(n, np.int8)
    length = np.empty(n, np.int64)
    for i in range(n):
        s, d = src[i], dst[i]
        es, ed = host_edge[s], host_edge[d]
        if nvl_up[s] >= 0 and host_server[s] == host_server[d]:
            kind[i], length[i] = PATH_NVLINK, 2
        elif es == ed:
            kind[i], length[i] = PATH_TOR, 2
        elif edge_pod[es] == edge_pod[ed]:
            kind[i], length[i] = PATH_POD, 4
        else:
            kind[i], length[i] = PATH_CORE, 6
    ptr = np.zeros(n + 1, np.int64)
    for i in range(n):
        ptr[i + 1] = ptr[i] + length[i]
    links = np.empty(ptr[n], np.int64)
    for i in range(n):
        s, d = src[i], dst[i]
        p = ptr[i]
        k = kind[i]
        if k == PATH_NVLINK:
            links[p] = nvl_up[s]
            links[p + 1] = nvl_down[d]
            continue
        links[p] = host_up[s]
        links[p + length[i] - 1] = host_down[d]
        if k == PATH_TOR:
            continue
        h = flow_hash(seed, i)
        u = np.int64(h % np.uint64(n_up))
        es, ed = host_edge[s], host_edge[d]
        links[p + 1] = edge_up[es, u]
        links[p + length[i] - 2] = edge_down[ed, u]
        if k == PATH_CORE:
            v = np.int64((h // np.uint64(n_up)) % np.uint64(n_core))
            a_s = edge_pod[es] * aggs_per_pod + u // edge_par
            a_d = edge_pod[ed] * aggs_per_pod + u // edge_par
            links[p + 2] = agg_up[a_s, v]
            links[p + 3] = agg_down[a_d, v]
    return ptr, links, kind


@njit
def rename_links(route_links, scratch):
    """Name the links of ``route_links`` (int64[n]) 0, 1, ... in order of first appearance.

    ``scratch int64[L]`` must be all -1 on entry; it is restored on exit. Returns
    ``(local int64[n], links int64[k])``: ``local[i]`` is the new name of ``route_links[i]`` and
    ``links[j]`` the link named ``j``. Two route sets with equal ``local`` (and equal route
    pointers) are the same paths up to the names of their links."""
    n = route_links.shape[0]
    local = np.empty(n, np.int64)
    links = np.empty(n, np.int64)
    k = 0
    for i in range(n):
        link = route_links[i]
        j = scratch[link]
        if j < 0:
            j = k
            scratch[link] = k
            links[k] = link
            k += 1
        local[i] = j
    for j in range(k):
        scratch[links[j]] = -1
    return local, links[:k]
