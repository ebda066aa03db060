"""Read htsim connection-matrix files, so that one workload runs in both simulators.

The format (htsim's ``ConnectionMatrix``), one item per line, blank lines and ``#`` comments
ignored::

    Nodes 16
    Connections 3
    Triggers 1
    0->5 id 0 start 0 size 2000000 send_done_trigger 0
    1->6 id 1 start 2.5 size 2000000
    2->7 id 2 trigger 0 size 1000000
    trigger id 0 oneshot

- Header: ``Nodes N`` and ``Connections C`` (required), ``Triggers T`` (optional).
- Connections: ``SRC->DST`` then key-value pairs: ``id`` (unique), ``size`` in bytes, and either
  ``start`` in microseconds or ``trigger K`` (started when trigger K fires); optional
  ``send_done_trigger K`` / ``recv_done_trigger K`` (activate K when the sender / receiver is
  done).
- Triggers: ``trigger id K oneshot`` (fires at the first activation), ``trigger id K multishot``
  (each activation starts the next of its flows, in file order) or ``trigger id K barrier N``
  (fires at the N-th activation).

Node ids are fabricsim host indices. Any other content gets a :class:`ConfigError` naming the
file, the line and what is allowed.

:func:`permutation_matrix` and :func:`all_to_all_matrix` write the workloads of htsim's own
connection-matrix generator scripts byte for byte (Python's ``random``, seed 13), so that a
measurement against htsim runs the same files (``benchmarks/bench_packetsim.py`` checks their md5).
"""

from __future__ import annotations

import os
import random
from typing import NamedTuple

import numpy as np

from fabricsim.engine import HORIZON_PS, MAX_FLOW_BYTES, MAX_FLOW_BYTES_WHY, Triggers
from fabricsim.errors import ConfigError, require

__all__ = ["ConnectionMatrix", "read_connection_matrix", "permutation_matrix", "all_to_all_matrix"]

_KINDS = {"oneshot": 0, "multishot": 1, "barrier": 2}
_CONN_KEYS = ("id", "start", "size", "trigger", "send_done_trigger", "recv_done_trigger")


class ConnectionMatrix(NamedTuple):
    """Flows of a connection-matrix file; ``start_ps`` is -1 for flows started by a trigger."""

    nodes: int
    flow_id: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    size_bytes: np.ndarray
    start_ps: np.ndarray
    triggers: Triggers | None


def read_connection_matrix(path, field: str = "traffic.file") -> ConnectionMatrix:
    """Parse an htsim connection-matrix file (see the module docstring)."""
    from fabricsim.config import require_file

    path = os.fspath(path)
    require_file(path, field)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(field, f"cannot read {path}: {exc}") from None

    def fail(lineno, msg):
        raise ConfigError(field, f"{path}, line {lineno}: {msg}")

    header: dict[str, int] = {}
    conns = []  # (lineno, src, dst, fields)
    trig_lines = []  # (lineno, id, kind, need)
    for lineno, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        tok = line.split()
        if tok[0] in ("Nodes", "Connections", "Triggers"):
            if len(tok) != 2 or not tok[1].isdigit():
                fail(lineno, f"expected '{tok[0]} <count>', got {line!r}")
            header[tok[0]] = int(tok[1])
        elif "->" in tok[0]:
            a, _, b = tok[0].partition("->")
            if not (a.isdigit() and b.isdigit()):
                fail(lineno, f"expected 'SRC->DST' with node numbers, got {tok[0]!r}")
            if len(tok) % 2 != 1:
                fail(lineno, "connection fields come in 'key value' pairs")
            fields = {}
            for key, value in zip(tok[1::2], tok[2::2]):
                if key not in _CONN_KEYS:
                    fail(lineno, f"unknown connection field {key!r}; allowed: {', '.join(_CONN_KEYS)}")
                try:
                    fields[key] = float(value) if key == "start" else int(value)
                except ValueError:
                    fail(lineno, f"{key} must be a number, got {value!r}")
                if key != "start" and not 0 <= fields[key] < 2**63:
                    fail(lineno, f"{key} must be an integer in 0 .. 2^63 - 1, got {value}")
            conns.append((lineno, int(a), int(b), fields))
        elif tok[0] == "trigger":
            if len(tok) < 4 or tok[1] != "id" or not tok[2].isdigit() or tok[3] not in _KINDS:
                fail(lineno, "expected 'trigger id K oneshot|multishot|barrier N'")
            need = 1
            if tok[3] == "barrier":
                if len(tok) != 5 or not tok[4].isdigit() or int(tok[4]) < 1:
                    fail(lineno, "a barrier trigger needs a count >= 1: 'trigger id K barrier N'")
                need = int(tok[4])
            elif len(tok) != 4:
                fail(lineno, f"unexpected text after {tok[3]!r}")
            trig_lines.append((lineno, int(tok[2]), _KINDS[tok[3]], need))
        else:
            fail(lineno, f"unrecognized line {line!r}; expected a header (Nodes, Connections, "
                         "Triggers), 'SRC->DST ...' or 'trigger id K ...'")
    for key in ("Nodes", "Connections"):
        if key not in header:
            raise ConfigError(field, f"{path}: missing header line '{key} <count>'")
    nodes = header["Nodes"]
    if len(conns) != header["Connections"]:
        raise ConfigError(field, f"{path}: header says {header['Connections']} connections, "
                                 f"found {len(conns)}")
    if "Triggers" in header and len(trig_lines) != header["Triggers"]:
        raise ConfigError(field, f"{path}: header says {header['Triggers']} triggers, found {len(trig_lines)}")

    trig_index = {}
    for lineno, tid, _, _ in trig_lines:
        if tid in trig_index:
            fail(lineno, f"trigger id {tid} defined twice")
        trig_index[tid] = len(trig_index)
    n = len(conns)
    flow_id = np.empty(n, np.int64)
    src = np.empty(n, np.int64)
    dst = np.empty(n, np.int64)
    size = np.empty(n, np.int64)
    start = np.empty(n, np.int64)
    send_done = np.full(n, -1, np.int64)
    recv_done = np.full(n, -1, np.int64)
    targets: list[list[int]] = [[] for _ in trig_lines]
    seen_ids = set()

    def trigger_ref(lineno, fields, key):
        tid = fields[key]
        if tid not in trig_index:
            fail(lineno, f"{key} {tid} names no trigger defined in the file")
        return trig_index[tid]

    for i, (lineno, a, b, fields) in enumerate(conns):
        for node in (a, b):
            if node >= nodes:
                fail(lineno, f"node {node} is not below Nodes {nodes}")
        if a == b:
            fail(lineno, f"a connection needs two distinct nodes, got {a}->{b}")
        if "size" not in fields or fields["size"] < 0:
            fail(lineno, "every connection needs 'size B' with B >= 0 bytes")
        if fields["size"] > MAX_FLOW_BYTES:
            fail(lineno, f"size must be at most {MAX_FLOW_BYTES:,} bytes ({MAX_FLOW_BYTES_WHY}), "
                         f"got {fields['size']:,}")
        if ("start" in fields) == ("trigger" in fields):
            fail(lineno, "a connection needs exactly one of 'start T' (microseconds) and 'trigger K'")
        fid = fields.get("id", i)
        if fid in seen_ids:
            fail(lineno, f"connection id {fid} used twice")
        seen_ids.add(fid)
        flow_id[i], src[i], dst[i], size[i] = fid, a, b, fields["size"]
        if "start" in fields:
            if not 0 <= fields["start"] < HORIZON_PS / 1e6:
                fail(lineno, f"start must lie in 0 .. {HORIZON_PS / 1e6:.3g} microseconds (the end of "
                             f"the simulated clock), got {fields['start']}")
            start[i] = int(round(fields["start"] * 1e6))
        else:
            start[i] = -1
            targets[trigger_ref(lineno, fields, "trigger")].append(i)
        if "send_done_trigger" in fields:
            send_done[i] = trigger_ref(lineno, fields, "send_done_trigger")
        if "recv_done_trigger" in fields:
            recv_done[i] = trigger_ref(lineno, fields, "recv_done_trigger")
    triggers = None
    if trig_lines:
        triggers = Triggers(kind=np.array([k for _, _, k, _ in trig_lines], np.int64),
                            need=np.array([nd for _, _, _, nd in trig_lines], np.int64),
                            targets=tuple(tuple(t) for t in targets), send_done=send_done,
                            recv_done=recv_done)
    return ConnectionMatrix(nodes, flow_id, src, dst, size, start, triggers)


def _matrix_text(nodes: int, flows) -> str:
    """A connection-matrix file of ``(src, dst)`` flows starting at 0, ids from 1 in order."""
    lines = [f"Nodes {nodes}", f"Connections {len(flows)}"]
    lines += [f"{a}->{b} id {i} start 0 size {size}" for i, (a, b, size) in enumerate(flows, 1)]
    return "\n".join(lines) + "\n"


def _check_counts(nodes: int, size_bytes: int, group: int | None = None) -> None:
    require(isinstance(nodes, int) and nodes >= 2, "nodes", f"must be an integer >= 2, got {nodes!r}")
    require(isinstance(size_bytes, int) and size_bytes > 0, "size_bytes",
            f"must be an integer > 0, got {size_bytes!r}")
    if group is not None:
        require(isinstance(group, int) and 2 <= group <= nodes and nodes % group == 0, "group",
                f"must be an integer in 2 .. {nodes} dividing nodes = {nodes}, got {group!r}")


def permutation_matrix(nodes: int, size_bytes: int, seed: int = 13) -> str:
    """htsim's ``perm_N_S`` file: sources and destinations shuffled (``random.seed(seed)``, then
    ``shuffle(srcs)``, ``shuffle(dsts)``), one pass swapping ``dsts[n]`` with ``dsts[(n+1) % N]``
    where ``srcs[n] == dsts[n]``; flow ``n`` is ``srcs[n]->dsts[n]``, id ``n + 1``."""
    _check_counts(nodes, size_bytes)
    srcs, dsts = list(range(nodes)), list(range(nodes))
    rng = random.Random(seed)
    rng.shuffle(srcs)
    rng.shuffle(dsts)
    for n in range(nodes):
        if srcs[n] == dsts[n]:
            m = (n + 1) % nodes
            dsts[n], dsts[m] = dsts[m], dsts[n]
    return _matrix_text(nodes, [(srcs[n], dsts[n], size_bytes) for n in range(nodes)])


def all_to_all_matrix(nodes: int, group: int, size_bytes: int = 1_000_000, seed: int = 13) -> str:
    """htsim's ``a2a_N_gG`` file: hosts shuffled (``random.seed(seed)``), group ``k`` is
    ``hosts[k*G:(k+1)*G]``, and every member sends to every other member of its group, in group
    order (``N * (G - 1)`` flows)."""
    _check_counts(nodes, size_bytes, group)
    hosts = list(range(nodes))
    random.Random(seed).shuffle(hosts)
    flows = [(s, d, size_bytes) for k in range(nodes // group)
             for s in hosts[k * group:(k + 1) * group]
             for d in hosts[k * group:(k + 1) * group] if d != s]
    return _matrix_text(nodes, flows)
