"""Synthetic traffic patterns: which hosts send how many bytes to which.

Every generator returns ``(src int64[F], dst int64[F])`` over host indices ``0 .. hosts-1``;
:func:`flow_sizes` draws sizes, and :func:`from_config` builds a whole flow batch from a
``[traffic]`` table.

- ``permutation``: every host sends one flow to a distinct host, a seeded random derangement.
- ``all_to_all``: every ordered pair inside consecutive groups of ``group_size`` hosts.
- ``incast``: ``fan_in`` distinct random hosts send to ``target``.
- ``matrix``: a hosts x hosts matrix of bytes read from ``.npy``, ``.csv`` or ``.parquet``; every
  positive off-diagonal entry is a flow.
- ``htsim``: the flows (and triggers) of an htsim connection-matrix file
  (:mod:`fabricsim.htsim`).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from fabricsim.engine import MAX_FLOW_BYTES, MAX_FLOW_BYTES_WHY
from fabricsim.errors import ConfigError, require

__all__ = ["permutation", "all_to_all", "incast", "read_matrix", "flow_sizes", "from_config",
           "FlowBatch"]


class FlowBatch(NamedTuple):
    """Flows to simulate: ``src``, ``dst``, ``size_bytes``, ``start_ps`` (``[F]``, -1 for flows
    started by a trigger) and the ``triggers`` (or None)."""

    src: np.ndarray
    dst: np.ndarray
    size_bytes: np.ndarray
    start_ps: np.ndarray
    triggers: object = None


def permutation(hosts: int, rng: np.random.Generator):
    """A random derangement: host i sends to perm[i] != i."""
    require(hosts >= 2, "traffic.pattern", "permutation needs at least 2 hosts")
    perm = rng.permutation(hosts)
    # Repair fixed points; the result stays a permutation. Two or more: cycle them among
    # themselves. Exactly one (i): swap with a neighbour j, which is not fixed and not sent to i.
    fixed = np.flatnonzero(perm == np.arange(hosts))
    if fixed.size >= 2:
        perm[fixed] = np.roll(fixed, -1)
    elif fixed.size == 1:
        i = fixed[0]
        j = (i + 1) % hosts
        perm[i], perm[j] = perm[j], perm[i]
    src = np.arange(hosts, dtype=np.int64)
    return src, perm.astype(np.int64)


def all_to_all(hosts: int, group_size: int | None = None):
    """Every ordered pair (s, d), s != d, inside consecutive groups of ``group_size`` hosts."""
    g = hosts if group_size is None else group_size
    require(2 <= g <= hosts, "traffic.group_size", f"must lie in 2 .. {hosts} (hosts), got {g}")
    require(hosts % g == 0, "traffic.group_size", f"must divide the {hosts} hosts, got {g}")
    local_s, local_d = np.nonzero(~np.eye(g, dtype=bool))
    base = (np.arange(hosts // g, dtype=np.int64) * g)[:, None]
    return (base + local_s).ravel(), (base + local_d).ravel()


def incast(hosts: int, fan_in: int, target: int, rng: np.random.Generator):
    """``fan_in`` distinct random hosts (not the target) send to ``target``."""
    require(0 <= target < hosts, "traffic.target", f"must lie in 0 .. {hosts - 1}, got {target}")
    require(1 <= fan_in <= hosts - 1, "traffic.fan_in", f"must lie in 1 .. {hosts - 1}, got {fan_in}")
    others = np.delete(np.arange(hosts, dtype=np.int64), target)
    src = np.sort(rng.choice(others, size=fan_in, replace=False))
    return src, np.full(fan_in, target, np.int64)


def _blank(path: str) -> bool:
    """Whether the file holds nothing but white space."""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 16):
            if chunk.strip():
                return False
    return True


def read_matrix(path, hosts: int | None = None, field: str = "traffic.file") -> np.ndarray:
    """A hosts x hosts matrix of bytes from ``.npy``, ``.csv`` (no header) or ``.parquet``
    (one column per destination); any square size when ``hosts`` is None. Entries are bytes,
    0 .. :data:`fabricsim.engine.MAX_FLOW_BYTES`."""
    from fabricsim.config import require_file

    require_file(path, field)
    empty = f"{path} is empty; expected a square matrix of bytes"
    require(not _blank(path), field, empty)  # NumPy would warn and read a 0 x 1 array
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".npy":
            m = np.load(path, allow_pickle=False)
        elif ext == ".csv":
            m = np.loadtxt(path, delimiter=",", ndmin=2)
        elif ext == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            m = np.column_stack([table.column(i).to_numpy() for i in range(table.num_columns)])
        else:
            raise ConfigError(field, f"must be a .npy, .csv or .parquet file, got {path}")
    except ConfigError:
        raise
    except Exception as exc:  # a malformed file of a supported kind
        raise ConfigError(field, f"cannot read {path}: {exc}") from None
    require(m.size > 0, field, empty)
    if hosts is None:
        require(m.ndim == 2 and m.shape[0] == m.shape[1], field,
                f"matrix must be square, got shape {m.shape}")
    else:
        require(m.ndim == 2 and m.shape == (hosts, hosts), field,
                f"matrix must be {hosts} x {hosts} (hosts x hosts), got shape {m.shape}")
    require(np.issubdtype(m.dtype, np.number), field, f"matrix must hold numbers, got {m.dtype}")
    require(bool(np.all(np.isfinite(m))) and bool(np.all(m >= 0)), field,
            "matrix entries must be finite and >= 0 (bytes)")
    if m.size and m.max() > MAX_FLOW_BYTES:
        i, j = np.unravel_index(int(np.argmax(m)), m.shape)
        raise ConfigError(field, f"matrix entries are flow sizes, at most {MAX_FLOW_BYTES:,} bytes "
                                 f"({MAX_FLOW_BYTES_WHY}); got {float(m[i, j]):,.0f} at row {i}, column {j}")
    return m


def flow_sizes(n: int, size_bytes, size_min_bytes, size_max_bytes, rng: np.random.Generator):
    """Constant sizes, or seeded uniform integers in [min, max]."""
    if size_bytes is not None:
        return np.full(n, int(size_bytes), np.int64)
    return rng.integers(size_min_bytes, size_max_bytes + 1, size=n, dtype=np.int64)


def from_config(traffic, hosts: int, base_dir: str = ".") -> FlowBatch:
    """The :class:`FlowBatch` of a :class:`fabricsim.config.TrafficConfig`."""
    rng = np.random.default_rng(traffic.seed)
    offset_ps = int(round(traffic.start_us * 1e6))
    if traffic.pattern == "permutation":
        src, dst = permutation(hosts, rng)
    elif traffic.pattern == "all_to_all":
        src, dst = all_to_all(hosts, traffic.group_size)
    elif traffic.pattern == "incast":
        src, dst = incast(hosts, traffic.fan_in if traffic.fan_in is not None else hosts - 1,
                          traffic.target, rng)
    else:
        path = traffic.file if os.path.isabs(traffic.file) else os.path.join(base_dir, traffic.file)
        if traffic.pattern == "htsim":
            from fabricsim.htsim import read_connection_matrix

            cm = read_connection_matrix(path)
            require(cm.nodes <= hosts, "traffic.file",
                    f"{path} has Nodes {cm.nodes} but the fabric has only {hosts} hosts")
            start = np.where(cm.start_ps >= 0, cm.start_ps + offset_ps, -1)
            return FlowBatch(cm.src, cm.dst, cm.size_bytes, start, cm.triggers)
        m = read_matrix(path, hosts)
        src, dst = np.nonzero((m > 0) & ~np.eye(hosts, dtype=bool))
        sizes = np.round(m[src, dst]).astype(np.int64)
        start = np.full(src.shape[0], offset_ps, np.int64)
        return FlowBatch(src.astype(np.int64), dst.astype(np.int64), sizes, start)
    sizes = flow_sizes(src.shape[0], traffic.size_bytes, traffic.size_min_bytes,
                       traffic.size_max_bytes, rng)
    start = np.full(src.shape[0], offset_ps, np.int64)
    return FlowBatch(src, dst, sizes, start)
