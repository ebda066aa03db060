"""Failures of a NIC, a GPU or a server, and how a MixNet fabric works around them.

A failure is written ``kind:target[:plane]``:

``nic:S:eps`` / ``nic:S:ocs``
    One of server ``S``'s NICs fails. ``eps``: the server's EPS link loses one NIC's bandwidth
    (``(8 - alpha - 1) * B`` left); when it had only one EPS NIC, its EPS traffic goes optically
    to the region peer it has the most circuits to and leaves through that peer's EPS NIC
    (reference section 4.1, "relay"). ``ocs``: the server has one OCS port fewer, so the region's
    allocator gives it at most ``alpha - 1`` circuits.
``gpu:G``
    GPU ``G`` fails; its work moves to a backup GPU in the region: the GPU with the same local
    index on the next server of the region. The backup is a spare (its own compute stream) that
    shares that GPU's NVLink port and NICs, so the failed GPU's TP traffic now crosses servers.
``server:S``
    Server ``S`` fails: every GPU moves to the same local index on the next server of the region
    and the server's NICs are gone (EPS link down, no circuits).

NIC and server failures change the links of a MixNet fabric (:func:`apply_failures`); GPU and
server failures remap GPUs (:func:`gpu_map`), which the runner applies to every flow. Flows
between a moved GPU and its backup's host become local (they never leave the GPU's port).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from fabricsim.errors import ConfigError, require

__all__ = ["Failure", "parse_failures", "apply_failures", "gpu_map", "FAILURE_KINDS"]

FAILURE_KINDS = ("nic", "gpu", "server")


@dataclass(frozen=True)
class Failure:
    kind: str
    target: int
    plane: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.target}" + (f":{self.plane}" if self.plane else "")


def parse_failures(spec) -> tuple:
    """Failures from strings ``"nic:3:eps"``, ``"gpu:17"``, ``"server:5"`` (or Failure objects)."""
    out = []
    for item in spec or ():
        if isinstance(item, Failure):
            out.append(item)
            continue
        require(isinstance(item, str), "failures", f"each failure is a string such as 'nic:3:eps', "
                f"'gpu:17' or 'server:5', got {item!r}")
        parts = item.split(":")
        kind = parts[0]
        require(kind in FAILURE_KINDS, "failures",
                f"{item!r}: the kind must be one of {', '.join(FAILURE_KINDS)}")
        want = 3 if kind == "nic" else 2
        require(len(parts) == want and parts[1].isdigit(), "failures",
                f"{item!r}: expected " + ("'nic:SERVER:eps|ocs'" if kind == "nic" else
                                          f"'{kind}:{'GPU' if kind == 'gpu' else 'SERVER'}'"))
        plane = parts[2] if kind == "nic" else ""
        require(kind != "nic" or plane in ("eps", "ocs"), "failures",
                f"{item!r}: a NIC is on the 'eps' or the 'ocs' plane")
        out.append(Failure(kind, int(parts[1]), plane))
    return tuple(out)


def _backup_server(rt, server: int) -> int:
    r = rt.region_servers
    require(r >= 2, "failures", "a backup needs a region of at least 2 servers")
    return server // r * r + (server % r + 1) % r


def gpu_map(fabric, failures) -> np.ndarray:
    """``int64[H]``: the host that runs each GPU's work (itself unless failed)."""
    from fabricsim.mixnet import MixNetRouting

    n = fabric.n_hosts
    mapping = np.arange(n, dtype=np.int64)
    gps = fabric.params.get("gpus_per_server", 8)
    for f in parse_failures(failures):
        if f.kind == "nic":
            continue
        rt = fabric.routing
        require(isinstance(rt, MixNetRouting), "failures",
                "GPU and server failures move work to a backup in the OCS region: a MixNet fabric")
        servers = n // gps
        if f.kind == "gpu":
            require(0 <= f.target < n, "failures", f"{f}: GPU ids are 0 .. {n - 1}")
            gpus = [f.target]
        else:
            require(0 <= f.target < servers, "failures", f"{f}: server ids are 0 .. {servers - 1}")
            gpus = range(f.target * gps, (f.target + 1) * gps)
        for g in gpus:
            mapping[g] = _backup_server(rt, g // gps) * gps + g % gps
    return mapping


def apply_failures(fabric, failures):
    """A copy of MixNet ``fabric`` with the NIC and server failures applied to its links."""
    from fabricsim.mixnet import MixNetRouting

    failures = parse_failures(failures)
    links_hit = [f for f in failures if f.kind in ("nic", "server")]
    if not links_hit:
        return fabric
    rt = fabric.routing
    require(isinstance(rt, MixNetRouting), "failures",
            "NIC and server failures are modelled on MixNet fabrics (its relay and backup rules)")
    require(rt.nic_up is None, "failures", "NIC and server failures are modelled with the "
            "server-level EPS (mixnet(..., eps='server'))")
    servers = rt.ocs_link.shape[0]
    cap = fabric.links.capacity_bps.copy()
    eps_ok = rt.eps_ok.copy()
    degree = rt.ocs_degree.copy()
    per_nic = rt.link_bps
    for f in links_hit:
        if not 0 <= f.target < servers:
            raise ConfigError("failures", f"{f}: server ids are 0 .. {servers - 1}")
        up, down = rt.eps.host_up[f.target], rt.eps.host_down[f.target]
        if f.kind == "server" or f.plane == "eps":
            left = 0.0 if f.kind == "server" else max(0.0, cap[up] - per_nic)
            cap[up] = cap[down] = left
            eps_ok[f.target] = left > 0
        if f.kind == "server" or f.plane == "ocs":
            degree[f.target] = 0 if f.kind == "server" else max(0, degree[f.target] - 1)
    circuits = limit_degree(rt.circuits, degree, rt.region_servers)
    links, caps = dataclasses.replace(rt, circuits=circuits).capacities()
    cap[links] = caps
    new_rt = dataclasses.replace(rt, circuits=circuits, eps_ok=eps_ok, ocs_degree=degree)
    new_links = fabric.links._replace(capacity_bps=cap)
    params = dict(fabric.params, failures=[str(f) for f in failures])
    return dataclasses.replace(fabric, links=new_links, routing=new_rt, params=params)


def limit_degree(circuits, degree, region_servers, demand=None):
    """``circuits`` (``int64[regions, R, R]``) with every server's circuits cut to its working OCS
    ports ``degree`` (``int64[S]``): the circuits with the least demand (else the last) go first."""
    c = np.array(circuits, np.int64)
    r = region_servers
    for s in np.flatnonzero(c.reshape(-1, r).sum(axis=1) > degree):
        reg, i = divmod(int(s), r)
        while c[reg, i].sum() > degree[s]:
            row = c[reg, i]
            cand = np.flatnonzero(row > 0)
            key = demand[reg][i, cand] + demand[reg][cand, i] if demand is not None else -cand
            j = int(cand[np.argmin(key)])
            c[reg, i, j] -= 1
            c[reg, j, i] -= 1
    return c
