"""Packet-level discrete-event engine: queues, pipes and DCTCP, compiled with Numba.

The model (every constant is a parameter; defaults are the released MixNet simulator's):

Time is int64 picoseconds. Events run in ``(time, seq)`` order, ``seq`` being a global counter
taken when an event is scheduled (flow starts take seq = flow id and capacity events seq = F,
before anything else; capacity events at one time run in their list order), so events at equal
times run in the order they were scheduled and every run is deterministic.

The event list is not one heap but a few sorted queues, merged by taking the earliest head, so
that the common events cost O(1) instead of O(log packets in flight): packet arrivals are FIFOs,
one per distinct link delay (``now + delay`` is non-decreasing, so each FIFO is sorted);
serialization ends (at most one per link) are FIFOs too, one per common serialization time (a
full-size data packet's and an ACK's at the most common link rates, up to ``MAX_TX_CLASSES``),
and a binary heap for the others (partial last packets, rare rates); retransmission timers (at
most one per flow) are a binary heap; flow starts and capacity events are pre-sorted arrays; SEND
continuations and flow starts fired by triggers (both at the current time) are FIFOs. Which
queue holds an event never changes the order events run in: that is ``(time, seq)``.

Packets. A data packet of flow ``f`` with sequence number ``s`` (0-based, in packets) carries
``min(mss, size - s*mss)`` payload bytes plus ``hdr`` header bytes (``mss = mtu - hdr``; defaults
mtu 9000 B, hdr 64 B); an ACK is ``hdr`` bytes. Data packets follow the flow's route; ACKs follow
the reverse links in reverse order. Packets live in a preallocated pool with a free list.

Links. Each directed link is an output queue (FIFO) plus a pipe. ``q_bytes`` counts every queued
packet including the one being serialized. On arrival at link ``l`` a packet is dropped when
``q_bytes + size > buffer_bytes`` (drop-tail); otherwise a *data* packet is ECN-marked (CE) when
``q_bytes > ecn_k_bytes`` before it joins (``ecn_k_bytes = K * mtu``, K = 50 by default), and it is
appended. An idle link with capacity > 0 starts serializing its head packet at once; serializing
``b`` bytes at ``c`` bit/s takes ``ceil(b * 8e12 / c)`` ps. When it ends (event TX_DONE) the packet
leaves the queue and arrives at the next hop (or its destination) ``delay_ps`` later (event
ARRIVE), and the next queued packet starts. A capacity change applies to serializations that
start after it; a link at capacity 0 starts none, so its packets wait until it comes back.

Flows. At ``start_ps`` (event START) a flow whose route crosses a link of capacity 0 waits until
every link of its route is up again (the released simulator's rule for circuits being
reconfigured); otherwise it starts: a flow of 0 bytes finishes at once, any other one sends.

Triggers (htsim's connection-matrix triggers, :mod:`fabricsim.kernels.triggers`). A flow may
name a trigger to activate when its sender is done (its last packet acknowledged) and one when its
receiver is done; a flow with no start time is started by its trigger: the activation schedules
its START at that instant (a flow of 0 bytes is done on both sides when it starts: send side
first).

Injection (:func:`inject`; :class:`fabricsim.engine.PacketSession` drives it). Pending flows
(``start_ps = -1``) can be given a start time, and capacity changes added, from outside, at any
time no earlier than the engine's clock: they take their place among the timed starts and
capacity events, so a run fed that way is bit-identical to a run that had them from the start.
While the state is *open* (``clock[C_OPEN]``: more capacity changes may come), the timer rule
below never takes a flow for stuck; instead :func:`advance` returns QUIET, before the timeout
runs, when only timeouts of flows that cannot progress are left (:func:`quiescent`).

Receiver. On a data packet: mark it received, advance the cumulative ``cum`` over received
packets, and send an ACK carrying ``ackno = cum``, ECN-echo = the packet's CE bit and the packet's
send timestamp. The flow *finishes* when its receiver holds every packet (``finish_ps``).

Sender (DCTCP over NewReno-style TCP, window in bytes, float64):

- ``send``: while ``next_seq < n_pkts`` and ``(next_seq - acked + 1) * mss <= cwnd``, send packet
  ``next_seq`` and advance it (at most ``burst`` packets per call; the rest continue in a SEND event
  at the same time). A packet below the highest sequence ever sent counts as a retransmission.
  Sending arms the retransmission timer if it is not armed.
- ``cwnd`` starts at ``init_cwnd_pkts * mss``, ``ssthresh`` at ``ssthresh_pkts * mss``.
- On an ACK (``ackno``, ``ece``, ``ts``) the packet is freed; if every packet of the flow is
  already acked nothing else happens; otherwise:

  1. RTT sample ``r = now - ts`` (float); first sample (``srtt == 0``): ``srtt = r``,
     ``rttvar = r / 2``; later: ``rttvar = 0.75 rttvar + 0.25 |srtt - r|``, then
     ``srtt = 0.875 srtt + 0.125 r``; ``rto = max(min_rto, int(srtt + 4 rttvar))`` (truncated).
     Before the first sample ``rto = init_rto`` (1 s by default, RFC 6298's initial value).
  2. DCTCP: ``seen += 1``; if ``ece``: ``marked += 1`` and, if ``ssthresh > cwnd``,
     ``ssthresh = cwnd``. When ``seen * mss >= cwnd`` (one window of ACKs):
     ``alpha = (1 - g) alpha + g marked / seen`` (g = 1/16); if ``marked > 0``:
     ``cwnd = max(cwnd (1 - alpha / 2), mss)`` and ``ssthresh = cwnd`` (one cut per window); then
     ``seen = marked = 0``.
  3. TCP. New data (``ackno > acked``): in recovery, ``ackno >= recover`` ends it
     (``cwnd = ssthresh``) and a smaller one (partial ACK) retransmits packet ``ackno``; outside
     recovery, ``cwnd += mss`` if ``cwnd < ssthresh``, else ``cwnd += mss * mss / cwnd``. Then
     ``dupacks = 0``, ``acked = ackno``, ``next_seq = max(next_seq, acked)`` and the timer deadline
     becomes ``now + rto``. Duplicate (``ackno == acked < next_seq``): ``dupacks += 1``; in
     recovery ``cwnd += mss``; otherwise the third one sets ``ssthresh = max(cwnd / 2, 2 mss)``,
     ``cwnd = ssthresh + 3 mss``, enters recovery with ``recover = next_seq`` and retransmits
     packet ``acked``. Any other ACK changes nothing here.
  4. ``send``.
- Timer (one pending TIMER event per flow at most): when it fires and every packet is acked, or
  every packet sent is (``acked >= next_seq``: nothing is outstanding, as for a flow waiting for
  its NIC in round-robin mode, whose next send re-arms it), it disarms; when the deadline moved
  later, it re-arms at the deadline (staying armed); otherwise it
  disarms and, when a link of the flow's data or ACK path is at capacity 0 with no capacity event
  left, stays off for good (the flow is stuck: the run ends in deadlock instead of retrying
  forever); otherwise it is a timeout: ``rto = min(2 rto, 60 s)`` (backoff; the next RTT sample
  recomputes it), ``ssthresh = max(cwnd / 2, 2 mss)``, ``cwnd = mss``, recovery ends,
  ``dupacks = 0``, ``next_seq = acked`` (go-back-N), then ``send`` (whose first packet re-arms
  it at the time it is sent).

NIC scheduling (``nic_scheduling``). ``"fifo"`` (the default; htsim's): ``send`` puts every data
packet the window allows into the flow's first link's FIFO at once, as above. ``"round-robin"``:
data packets wait at the sender until the first link of the flow's route pulls them, like an RDMA
NIC arbitrating among its queue pairs. Each link keeps a ring of *ready* flows (flows whose first
link it is and which it may still have a packet of). When ``send`` is called and the window allows
a packet, it sends nothing but appends the flow to the tail of its first link's ring unless the
flow is in it already, and then, if that link is idle (not serializing), has capacity > 0 and an
empty queue, the link *pulls*. A pull: while the ring is not empty, take its head flow; if its
window allows no packet (``next_seq < n_pkts`` and ``(next_seq - acked + 1) * mss <= cwnd`` is
false), remove it from the ring and go on; otherwise send its packet ``next_seq`` exactly as
``send`` does (arm the timer, enqueue it on the link, which starts serializing it; a retransmission
if below the highest sequence sent), advance ``next_seq``, then move the flow to the ring's tail if
its window allows another packet, else remove it, and stop. A link pulls again when it finishes
serializing a packet with its queue then empty and its capacity > 0 (after scheduling that packet's
ARRIVE), and when a capacity event brings it up with an empty queue. ACKs and the targeted
retransmissions (fast retransmit, partial ACK) still join the FIFO directly, so they go before
pulled packets. ``burst`` and SEND events do not apply. A flow pulled this way is never queued
behind other flows' packets at its own NIC.

Scheduling order (it fixes ``seq``, hence the order of simultaneous events): sending a data packet
first arms the timer (if unarmed) and then enqueues the packet (which may schedule its link's
TX_DONE); a TX_DONE schedules the packet's ARRIVE and then the link's next TX_DONE; a receiver
records the packet (possibly finishing the flow) and then enqueues the ACK; a capacity event that
brings a link up first restarts its queue, then starts the waiting flows whose routes are all up,
in the order they started waiting.

Outputs: ``finish_ps`` per flow; per flow data packets sent, retransmissions, CE marks received and
drops; per link data packets sent, retransmissions, ACKs, ECN marks, drops and peak queue bytes;
``q_bytes`` can be sampled between calls of :func:`advance`.

State layout (:class:`PacketState`), chosen by measurement: each entity's fields are one row of
a 2-D int64 table (a packet's fields share a cache line), column indices named below, and the hot
functions take the tables they touch as explicit arguments (Numba handles a few arrays far better
than a tuple of dozens):

- ``pk int64[cap, 4]`` packet pool (32 B a packet): ``P_FS = flow << 32 | seq`` (seq is the ackno
  of an ACK), ``P_MISC = size << 16 | hop << 8 | flags``, ``P_TS`` (send time, echoed by the ACK)
  and ``P_NEXT``; free rows are chained through ``P_NEXT``
- ``lk int64[L, 16]`` links, columns ``L_*``; ``lcap float64[L]`` their current capacity
- ``fi int64[F, 32]`` flows, columns ``F_*``; ``ff float64[F, 8]`` window state, columns ``W_*``
- ``got bool[P]`` receiver bitmap (``P = sum(n_pkts)``, indexed ``fi[f, F_BASE] + seq``)
- ``route_links``/``ack_links int64[nnz]`` forward and reverse routes (row ``fi[f, F_ROUTE]``)
- event queues: ``ar int64[C, cap, 3]`` arrival rings of (time, seq, packet) with ``ar_hc[C, 2]``
  (head, count); ``tx int64[1 + S, R, 3]`` serialization ends: ``tx[0]`` a heap of (time, seq,
  link), ``tx[1 + c]`` the ring of serialization time ``params[K_TX_SER + c]`` with (head, count)
  in ``clock[C_TXR + 2c:]`` (``R`` a power of two >= L); ``tm int64[F, 3]`` a heap; ``sd``
  and ``rd int64[F, 3]`` the SEND and triggered-start rings; ``start_order int64[F]`` (timed
  starts sorted by (time, flow), the first ``clock[C_N_TIMED]`` entries used); capacity events
  ``ev_*`` (sorted by time, the first ``clock[C_N_CAPS]`` used, the rest room for :func:`inject`);
  trigger arrays ``trig_*``, ``flow_trig``
- ``clock int64[N_CLOCK]`` scalars (``C_*``), ``params int64[K_TX_SER + MAX_TX_CLASSES]`` and
  ``g float64[1]`` the constants

The event loop (:func:`advance`) and the send path are compiled with ``refcount=False``
(:func:`fabricsim._jit.njit`): they allocate nothing, and Numba's atomic reference counting of
the arrays they pass around took about 40% of the loop's time.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fabricsim._jit import njit, prefetch_row
from fabricsim.kernels.triggers import fire, no_triggers

__all__ = ["PacketState", "PacketParams", "new_state", "advance", "grow", "state_bytes", "next_event_time",
           "inject", "grow_events", "quiescent", "NIC_SCHEDULING", "DONE", "PAUSED", "GROW", "DEADLOCK",
           "QUIET"]

INF_PS = np.iinfo(np.int64).max
MAX_RTO_PS = 60 * 10**12  # backoff ceiling: 60 s

# event kinds
EV_ARRIVE, EV_TX_DONE, EV_START, EV_TIMER, EV_CAP, EV_SEND = 0, 1, 2, 3, 4, 5
# advance() return codes
DONE, PAUSED, GROW, DEADLOCK, QUIET = 0, 1, 2, 3, 4
# clock[] indices
C_NOW, C_SEQ, C_TX_SIZE, C_FREE_HEAD, C_N_FREE, C_N_DONE, C_EVENTS = 0, 1, 2, 3, 4, 5, 6
C_N_WAITING, C_TM_SIZE, C_DATA_HOPS, C_ALL_HOPS, C_PEAK_PKTS = 7, 8, 9, 10, 11
C_START_PTR, C_CAP_PTR, C_SD_HEAD, C_SD_COUNT, C_RD_HEAD, C_RD_COUNT = 12, 13, 14, 15, 16, 17
C_N_TIMED, C_N_CAPS, C_OPEN = 18, 19, 20  # entries in start_order / ev_*; capacity changes may come
MAX_TX_CLASSES = 8  # TX_DONE rings; other serialization times go to the heap
PREFETCH_AHEAD = 16  # an arrival prefetches the packet of the arrival this many entries later
C_TXR = 24  # clock[C_TXR + 2c], clock[C_TXR + 2c + 1]: (head, count) of TX_DONE ring c
N_CLOCK = C_TXR + 2 * MAX_TX_CLASSES
# params[] indices
K_MTU, K_HDR, K_BUFFER, K_ECN_K, K_INIT_CWND, K_SSTHRESH, K_MIN_RTO, K_BURST, K_NIC_RR, K_N_TXC = range(10)
K_TX_SER = 10  # params[K_TX_SER + c]: serialization time (ps) of TX_DONE ring c
NIC_SCHEDULING = ("fifo", "round-robin")  # params[K_NIC_RR] is the index
# packet columns; flags
P_FS, P_MISC, P_TS, P_NEXT = range(4)  # (flow << 32 | seq), (size << 16 | hop << 8 | flags)
PK_COLS = 4
MASK32 = 0xFFFFFFFF
FL_ACK, FL_CE, FL_RETX = 1, 2, 4
# link columns
(L_HEAD, L_TAIL, L_QBYTES, L_BUSY, L_DATA, L_RETX, L_ACKS, L_MARKS, L_DROPS, L_PEAK, L_BYTES,
 L_CLASS, L_DELAY, L_RR_TAIL, L_TXC_DATA, L_TXC_ACK) = range(16)
# L_RR_TAIL: last flow of the ready ring (-1: empty); L_TXC_DATA/L_TXC_ACK: the TX_DONE ring of a
# full-size data packet / an ACK at the link's current capacity (-1: the heap)
# flow columns
# (every hop reads F_ROUTE and F_HOPS: they come first, in the row's first cache line)
(F_ROUTE, F_HOPS, F_STATUS, F_NEXT, F_HIGH, F_SENDQ, F_ACKED, F_CUM, F_SEEN, F_MARKED, F_DUP, F_INREC,
 F_RECOVER, F_RTO, F_DEADLINE, F_ARMED, F_FINISH, F_SENT, F_RETX, F_MARKS, F_DROPS, F_NPKTS, F_BASE,
 F_START, F_SIZE, F_RR_NEXT, F_READY) = range(27)  # F_RR_NEXT: next flow in the ready ring
# window columns
W_CWND, W_SSTH, W_ALPHA, W_SRTT, W_RTTVAR = range(5)
# flow status
F_PENDING, F_WAITING, F_ACTIVE = 0, 1, 2


class PacketParams(NamedTuple):
    """Model constants (see the module docstring)."""

    mtu_bytes: int = 9000
    hdr_bytes: int = 64
    buffer_pkts: int = 10_000
    ecn_k_pkts: int = 50
    init_cwnd_pkts: int = 10
    ssthresh_pkts: int = 10_000
    min_rto_ps: int = 1_000_000_000  # 1 ms
    init_rto_ps: int = 1_000_000_000_000  # 1 s, until the first RTT sample (RFC 6298)
    dctcp_g: float = 1.0 / 16.0
    burst: int = 256
    nic_scheduling: str = "fifo"  # or "round-robin" (see the module docstring)


class PacketState(NamedTuple):
    pk: np.ndarray
    lk: np.ndarray
    lcap: np.ndarray
    fi: np.ndarray
    ff: np.ndarray
    got: np.ndarray
    route_links: np.ndarray
    ack_links: np.ndarray
    ar: np.ndarray
    ar_hc: np.ndarray
    tx: np.ndarray
    tm: np.ndarray
    sd: np.ndarray
    start_order: np.ndarray
    rd: np.ndarray
    trig_kind: np.ndarray
    trig_need: np.ndarray
    trig_ptr: np.ndarray
    trig_targets: np.ndarray
    trig_state: np.ndarray
    flow_trig: np.ndarray
    fire_buf: np.ndarray
    waiting: np.ndarray
    done_order: np.ndarray
    ev_time_ps: np.ndarray
    ev_link: np.ndarray
    ev_capacity_bps: np.ndarray
    clock: np.ndarray
    params: np.ndarray
    g: np.ndarray


def new_state(route_ptr, route_links, ack_links, start_ps, size_bytes, capacity_bps, delay_ps,
              ev_time_ps, ev_link, ev_capacity_bps, params: PacketParams = PacketParams(),
              pool_cap: int | None = None, triggers=None) -> PacketState:
    """Allocate the engine state; ``ack_links`` is the reversed route in CSR form (same ptr).

    ``triggers``: ``(trig_kind, trig_need, trig_ptr, trig_targets, flow_trig int64[F, 2])`` (see
    :mod:`fabricsim.kernels.triggers`); flows started by a trigger have ``start_ps = -1``.
    """
    n_flows = route_ptr.shape[0] - 1
    n_links = capacity_bps.shape[0]
    mss = params.mtu_bytes - params.hdr_bytes
    if mss <= 0:
        raise ValueError("packet_params: mtu_bytes must exceed hdr_bytes")
    if params.nic_scheduling not in NIC_SCHEDULING:
        raise ValueError(f"packet_params: nic_scheduling must be one of {', '.join(NIC_SCHEDULING)}, "
                         f"not {params.nic_scheduling!r}")
    n_pkts = (size_bytes + mss - 1) // mss
    base = np.zeros(n_flows + 1, np.int64)
    np.cumsum(n_pkts, out=base[1:])
    if pool_cap is None:
        pool_cap = 4096 + 8 * params.burst
    pool_cap = 1 << max(int(pool_cap) - 1, 1).bit_length()  # a power of two (arrival rings use masks)
    delays, link_class = np.unique(delay_ps, return_inverse=True)
    n_classes = max(1, delays.shape[0])
    fi = np.zeros((n_flows, 32), np.int64)
    fi[:, F_RTO] = params.init_rto_ps
    fi[:, F_FINISH] = -1
    fi[:, F_NPKTS] = n_pkts
    fi[:, F_BASE] = base[:-1]
    fi[:, F_START] = start_ps
    fi[:, F_SIZE] = size_bytes
    fi[:, F_ROUTE] = route_ptr[:-1]
    fi[:, F_HOPS] = np.diff(route_ptr)
    ff = np.zeros((n_flows, 8))
    ff[:, W_CWND] = params.init_cwnd_pkts * mss
    ff[:, W_SSTH] = params.ssthresh_pkts * mss
    lk = np.zeros((n_links, 16), np.int64)
    lk[:, L_HEAD] = -1
    lk[:, L_TAIL] = -1
    lk[:, L_CLASS] = link_class.reshape(-1)
    lk[:, L_DELAY] = delay_ps
    lk[:, L_RR_TAIL] = -1
    tx_ser = _tx_classes(capacity_bps, params)
    pk = np.zeros((pool_cap, PK_COLS), np.int64)
    pk[:, P_NEXT] = np.append(np.arange(1, pool_cap, dtype=np.int64), -1)
    p = np.array([params.mtu_bytes, params.hdr_bytes, params.buffer_pkts * params.mtu_bytes,
                  params.ecn_k_pkts * params.mtu_bytes, params.init_cwnd_pkts * mss,
                  params.ssthresh_pkts * mss, params.min_rto_ps, params.burst,
                  NIC_SCHEDULING.index(params.nic_scheduling), tx_ser.shape[0]]
                 + tx_ser.tolist() + [0] * (MAX_TX_CLASSES - tx_ser.shape[0]), np.int64)
    _init_tx_classes(lk, capacity_bps, p)
    if triggers is None:
        triggers = no_triggers(n_flows)
    trig_kind, trig_need, trig_ptr, trig_targets, flow_trig = triggers
    timed = np.flatnonzero(start_ps >= 0)
    start_order = np.zeros(n_flows, np.int64)  # room for every flow (inject() adds pending ones)
    start_order[:timed.shape[0]] = timed[np.lexsort((timed, start_ps[timed]))]
    clock = np.zeros(N_CLOCK, np.int64)
    # dynamic seqs come after every start (seq f < F) and capacity event (seq F)
    clock[C_SEQ] = n_flows + max(ev_time_ps.shape[0], 1)
    clock[C_N_FREE] = pool_cap
    clock[C_N_TIMED] = timed.shape[0]
    clock[C_N_CAPS] = ev_time_ps.shape[0]
    return PacketState(
        pk=pk, lk=lk, lcap=capacity_bps.copy(), fi=fi, ff=ff, got=np.zeros(int(base[-1]), np.bool_),
        route_links=route_links, ack_links=ack_links,
        ar=np.zeros((n_classes, pool_cap, 3), np.int64), ar_hc=np.zeros((n_classes, 2), np.int64),
        tx=np.zeros((1 + tx_ser.shape[0], 1 << max(n_links - 1, 1).bit_length(), 3), np.int64),
        tm=np.zeros((n_flows, 3), np.int64),
        sd=np.zeros((n_flows, 3), np.int64),
        start_order=start_order,
        rd=np.zeros((n_flows, 3), np.int64), trig_kind=trig_kind, trig_need=trig_need,
        trig_ptr=trig_ptr, trig_targets=trig_targets,
        trig_state=np.zeros((trig_kind.shape[0], 2), np.int64), flow_trig=flow_trig,
        fire_buf=np.empty(n_flows, np.int64),
        waiting=np.empty(n_flows, np.int64), done_order=np.empty(n_flows, np.int64),
        ev_time_ps=np.array(ev_time_ps, np.int64), ev_link=np.array(ev_link, np.int64),
        ev_capacity_bps=np.array(ev_capacity_bps, np.float64),
        clock=clock, params=p, g=np.array([params.dctcp_g]),
    )


@njit(inline="always")
def _ser_ps(size_bytes, capacity_bps):
    """Serialization time (ps) of ``size_bytes`` at ``capacity_bps`` > 0: ``ceil(b * 8e12 / c)``."""
    return np.int64(np.ceil(size_bytes * 8e12 / capacity_bps))


def _tx_classes(capacity_bps, params: PacketParams):
    """The serialization times that get a TX_DONE ring (int64[<= MAX_TX_CLASSES]): a full-size data
    packet's and an ACK's at the link capacities, the most common capacities first."""
    caps, counts = np.unique(capacity_bps[capacity_bps > 0], return_counts=True)
    ser = []
    for c in caps[np.argsort(-counts, kind="stable")]:
        for size in (params.mtu_bytes, params.hdr_bytes):
            if size * 8e12 / c >= 2.0**62:  # absurdly slow (below 0.01 bit/s): leave it to the heap
                continue
            t = int(_ser_ps(np.int64(size), c))
            if t not in ser and len(ser) < MAX_TX_CLASSES:
                ser.append(t)
    return np.array(ser, np.int64)


@njit(inline="always")
def _set_tx_classes(lk, lcap, params, l):
    """Link ``l``'s TX_DONE rings for a full-size data packet and an ACK at its capacity."""
    lk[l, L_TXC_DATA] = -1
    lk[l, L_TXC_ACK] = -1
    if lcap[l] > 0.0:
        t_data = _ser_ps(params[K_MTU], lcap[l])
        t_ack = _ser_ps(params[K_HDR], lcap[l])
        for c in range(params[K_N_TXC]):
            if params[K_TX_SER + c] == t_data:
                lk[l, L_TXC_DATA] = c
            if params[K_TX_SER + c] == t_ack:
                lk[l, L_TXC_ACK] = c


@njit
def _init_tx_classes(lk, lcap, params):
    for l in range(lk.shape[0]):
        _set_tx_classes(lk, lcap, params, l)


def state_bytes(st: PacketState) -> int:
    """Bytes of every array of the engine state (routes and the packet pool included): the
    simulation's own memory, without the interpreter's."""
    return int(sum(a.nbytes for a in st))


def grow(st: PacketState) -> PacketState:
    """A copy of ``st`` with twice the packet pool and arrival rings."""
    old = st.pk.shape[0]
    new = 2 * old
    pk = np.zeros((new, PK_COLS), np.int64)
    pk[:old] = st.pk
    pk[old:, P_NEXT] = np.append(np.arange(old + 1, new, dtype=np.int64), st.clock[C_FREE_HEAD])
    ar = np.zeros((st.ar.shape[0], new, 3), np.int64)
    for c in range(st.ar.shape[0]):  # each ring laid out from its head
        ar[c, :old] = np.roll(st.ar[c], -int(st.ar_hc[c, 0]), axis=0)
    ar_hc = st.ar_hc.copy()
    ar_hc[:, 0] = 0
    clock = st.clock.copy()
    clock[C_FREE_HEAD] = old
    clock[C_N_FREE] += new - old
    return st._replace(pk=pk, ar=ar, ar_hc=ar_hc, clock=clock)


# ------------------------------------------------------------------------------------------
# Event queues: every entry is (time, seq, arg); the earliest head of all queues runs next
# ------------------------------------------------------------------------------------------

@njit(inline="always")
def _before(t1, s1, t2, s2):
    return t1 < t2 or (t1 == t2 and s1 < s2)


@njit(inline="always")
def _take_seq(clock):
    seq = clock[C_SEQ]
    clock[C_SEQ] += 1
    return seq


@njit(inline="always")
def _heap_push(h, size, t, seq, arg):
    """Push (t, seq, arg) onto the binary heap ``h[:size]`` (rows of (time, seq, arg))."""
    i = size
    while i > 0:
        parent = (i - 1) >> 1
        if _before(t, seq, h[parent, 0], h[parent, 1]):
            h[i, 0] = h[parent, 0]
            h[i, 1] = h[parent, 1]
            h[i, 2] = h[parent, 2]
            i = parent
        else:
            break
    h[i, 0] = t
    h[i, 1] = seq
    h[i, 2] = arg


@njit(inline="always")
def _heap_pop(h, size):
    """Drop the top of the heap ``h[:size]`` (read it first)."""
    n = size - 1
    if n <= 0:
        return
    t, s, a = h[n, 0], h[n, 1], h[n, 2]
    i = 0
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and _before(h[c + 1, 0], h[c + 1, 1], h[c, 0], h[c, 1]):
            c += 1
        if _before(h[c, 0], h[c, 1], t, s):
            h[i, 0] = h[c, 0]
            h[i, 1] = h[c, 1]
            h[i, 2] = h[c, 2]
            i = c
        else:
            break
    h[i, 0] = t
    h[i, 1] = s
    h[i, 2] = a


@njit(inline="always")
def _ring_push(ring, hc, t, seq, arg):
    """Append (t, seq, arg) to the ring ``ring`` (power-of-two rows) whose (head, count) is ``hc``."""
    i = (hc[0] + hc[1]) & (ring.shape[0] - 1)
    ring[i, 0] = t
    ring[i, 1] = seq
    ring[i, 2] = arg
    hc[1] += 1


@njit(inline="always")
def _ring_pop(ring, hc):
    arg = ring[hc[0], 2]
    hc[0] = (hc[0] + 1) & (ring.shape[0] - 1)
    hc[1] -= 1
    return arg


@njit
def _ring_push_any(ring, hc, t, seq, arg):
    """:func:`_ring_push` for a ring of any size (modulo instead of a mask)."""
    i = (hc[0] + hc[1]) % ring.shape[0]
    ring[i, 0] = t
    ring[i, 1] = seq
    ring[i, 2] = arg
    hc[1] += 1


@njit(inline="always")
def _next_event(ar, ar_hc, tx, tm, sd, rd, start_order, n_timed, fi, ev_time_ps, n_caps, clock):
    """The earliest pending event: (time, kind, source); kind -1 when none is left.

    ``n_timed``/``n_caps``: the used entries of ``start_order``/``ev_*`` (``clock[C_N_TIMED]``,
    ``clock[C_N_CAPS]``; constant during :func:`advance`).

    The source is the arrival class of EV_ARRIVE; for EV_TX_DONE 0 (the heap) or 1 + the ring; for
    EV_START 0 (a timed start) or 1 (a start fired by a trigger)."""
    best_t = INF_PS
    best_s = INF_PS
    kind = -1
    src = 0
    for c in range(ar_hc.shape[0]):
        if ar_hc[c, 1]:
            h = ar_hc[c, 0]
            if _before(ar[c, h, 0], ar[c, h, 1], best_t, best_s):
                best_t, best_s, kind, src = ar[c, h, 0], ar[c, h, 1], EV_ARRIVE, c
    if clock[C_TX_SIZE] and _before(tx[0, 0, 0], tx[0, 0, 1], best_t, best_s):
        best_t, best_s, kind, src = tx[0, 0, 0], tx[0, 0, 1], EV_TX_DONE, 0
    for c in range(1, tx.shape[0]):
        k = C_TXR + 2 * (c - 1)
        if clock[k + 1]:
            h = clock[k]
            if _before(tx[c, h, 0], tx[c, h, 1], best_t, best_s):
                best_t, best_s, kind, src = tx[c, h, 0], tx[c, h, 1], EV_TX_DONE, c
    if clock[C_TM_SIZE] and _before(tm[0, 0], tm[0, 1], best_t, best_s):
        best_t, best_s, kind = tm[0, 0], tm[0, 1], EV_TIMER
    if clock[C_SD_COUNT]:
        h = clock[C_SD_HEAD]
        if _before(sd[h, 0], sd[h, 1], best_t, best_s):
            best_t, best_s, kind = sd[h, 0], sd[h, 1], EV_SEND
    if clock[C_START_PTR] < n_timed:
        f = start_order[clock[C_START_PTR]]
        if _before(fi[f, F_START], f, best_t, best_s):
            best_t, best_s, kind, src = fi[f, F_START], f, EV_START, 0
    if clock[C_RD_COUNT]:
        h = clock[C_RD_HEAD]
        if _before(rd[h, 0], rd[h, 1], best_t, best_s):
            best_t, best_s, kind, src = rd[h, 0], rd[h, 1], EV_START, 1
    if clock[C_CAP_PTR] < n_caps:
        e = clock[C_CAP_PTR]
        seq = fi.shape[0]  # after every start at that time; capacity events run in list order
        if _before(ev_time_ps[e], seq, best_t, best_s):
            best_t, best_s, kind = ev_time_ps[e], seq, EV_CAP
    return best_t, kind, src


# ------------------------------------------------------------------------------------------
# Packets, queues and pipes
# ------------------------------------------------------------------------------------------

@njit(inline="always")
def _alloc(pk, clock):
    p = clock[C_FREE_HEAD]
    clock[C_FREE_HEAD] = pk[p, P_NEXT]
    clock[C_N_FREE] -= 1
    in_use = pk.shape[0] - clock[C_N_FREE]
    if in_use > clock[C_PEAK_PKTS]:
        clock[C_PEAK_PKTS] = in_use
    return p


@njit(inline="always")
def _free(pk, clock, p):
    pk[p, P_NEXT] = clock[C_FREE_HEAD]
    clock[C_FREE_HEAD] = p
    clock[C_N_FREE] += 1


@njit(inline="always")
def _start_tx(pk, lk, lcap, tx, clock, params, l, now):
    """Link ``l`` starts serializing its head packet: its TX_DONE joins the ring of its
    serialization time (full-size data packets and ACKs) or else the heap."""
    lk[l, L_BUSY] = 1
    p = lk[l, L_HEAD]
    size = pk[p, P_MISC] >> 16
    if pk[p, P_NEXT] >= 0:
        prefetch_row(pk, pk[p, P_NEXT])  # the next head, due when this one is done
    c = -1
    if size == params[K_MTU]:
        c = lk[l, L_TXC_DATA]
    elif size == params[K_HDR]:
        c = lk[l, L_TXC_ACK]
    if c >= 0:
        k = C_TXR + 2 * c
        _ring_push(tx[c + 1], clock[k:k + 2], now + params[K_TX_SER + c], _take_seq(clock), l)
    else:
        _heap_push(tx[0], clock[C_TX_SIZE], now + _ser_ps(size, lcap[l]), _take_seq(clock), l)
        clock[C_TX_SIZE] += 1


@njit(inline="always")
def _enqueue(pk, lk, lcap, fi, tx, clock, params, p, l, now):
    """Packet ``p`` arrives at link ``l``: drop-tail, ECN mark, append, start if idle."""
    misc = pk[p, P_MISC]
    size = misc >> 16
    flags = misc & 0xFF
    if lk[l, L_QBYTES] + size > params[K_BUFFER]:
        lk[l, L_DROPS] += 1
        if not flags & FL_ACK:
            fi[pk[p, P_FS] >> 32, F_DROPS] += 1
        _free(pk, clock, p)
        return
    if not flags & FL_ACK and lk[l, L_QBYTES] > params[K_ECN_K]:
        pk[p, P_MISC] = misc | FL_CE
        lk[l, L_MARKS] += 1
    pk[p, P_NEXT] = -1
    tail = lk[l, L_TAIL]
    if tail >= 0:
        pk[tail, P_NEXT] = p
    else:
        lk[l, L_HEAD] = p
    lk[l, L_TAIL] = p
    q = lk[l, L_QBYTES] + size
    lk[l, L_QBYTES] = q
    if q > lk[l, L_PEAK]:
        lk[l, L_PEAK] = q
    if lk[l, L_BUSY] == 0 and lcap[l] > 0.0:
        _start_tx(pk, lk, lcap, tx, clock, params, l, now)


@njit(inline="always")
def _tx_done(pk, lk, lcap, tx, ar, ar_hc, clock, params, l, now):
    """Link ``l`` finished serializing its head packet: it enters the pipe; the next one starts."""
    p = lk[l, L_HEAD]
    nxt = pk[p, P_NEXT]
    lk[l, L_HEAD] = nxt
    if nxt < 0:
        lk[l, L_TAIL] = -1
    misc = pk[p, P_MISC]
    size = misc >> 16
    lk[l, L_QBYTES] -= size
    lk[l, L_BYTES] += size
    clock[C_ALL_HOPS] += 1
    flags = misc & 0xFF
    if flags & FL_ACK:
        lk[l, L_ACKS] += 1
    else:
        lk[l, L_DATA] += 1
        clock[C_DATA_HOPS] += 1
        if flags & FL_RETX:
            lk[l, L_RETX] += 1
    pk[p, P_MISC] = misc + 256  # next hop
    c = lk[l, L_CLASS]
    _ring_push(ar[c], ar_hc[c], now + lk[l, L_DELAY], _take_seq(clock), p)
    if nxt >= 0 and lcap[l] > 0.0:
        _start_tx(pk, lk, lcap, tx, clock, params, l, now)
    else:
        lk[l, L_BUSY] = 0


# ------------------------------------------------------------------------------------------
# Transport
# ------------------------------------------------------------------------------------------

@njit(refcount=False)
def _send_data(pk, lk, lcap, fi, tx, tm, clock, params, route_links, f, seq, now, retx):
    mss = params[K_MTU] - params[K_HDR]
    p = _alloc(pk, clock)
    pk[p, P_FS] = (f << 32) | seq
    size = min(mss, fi[f, F_SIZE] - seq * mss) + params[K_HDR]
    pk[p, P_MISC] = (size << 16) | (FL_RETX if retx else 0)
    pk[p, P_TS] = now
    fi[f, F_SENT] += 1
    if retx:
        fi[f, F_RETX] += 1
    if fi[f, F_ARMED] == 0:
        fi[f, F_ARMED] = 1
        fi[f, F_DEADLINE] = now + fi[f, F_RTO]
        _heap_push(tm, clock[C_TM_SIZE], fi[f, F_DEADLINE], _take_seq(clock), f)
        clock[C_TM_SIZE] += 1
    _enqueue(pk, lk, lcap, fi, tx, clock, params, p, route_links[fi[f, F_ROUTE]], now)


@njit(inline="always")
def _window_allows(fi, ff, f, mss):
    """Flow ``f`` has a packet to send and its window (``mss`` an int) allows it."""
    return fi[f, F_NEXT] < fi[f, F_NPKTS] and (fi[f, F_NEXT] - fi[f, F_ACKED] + 1) * mss <= ff[f, W_CWND]


@njit(inline="always")
def _send_next(pk, lk, lcap, fi, tx, tm, clock, params, route_links, f, now):
    """Send flow ``f``'s packet ``next_seq`` (a retransmission if below the highest sequence
    sent) and advance ``next_seq`` and the highest sequence sent."""
    seq = fi[f, F_NEXT]
    _send_data(pk, lk, lcap, fi, tx, tm, clock, params, route_links, f, seq, now, seq < fi[f, F_HIGH])
    fi[f, F_NEXT] = seq + 1
    if seq + 1 > fi[f, F_HIGH]:
        fi[f, F_HIGH] = seq + 1


@njit(refcount=False)
def _send(pk, lk, lcap, fi, ff, tx, tm, sd, clock, params, route_links, f, now):
    """Send new packets while the window allows, at most ``burst`` now (the rest in a SEND event);
    in round-robin NIC mode, make the flow ready on its first link instead (and pull if idle)."""
    mss = params[K_MTU] - params[K_HDR]
    if params[K_NIC_RR]:
        if fi[f, F_READY] == 0 and _window_allows(fi, ff, f, mss):
            l = route_links[fi[f, F_ROUTE]]
            tail = lk[l, L_RR_TAIL]  # the ready ring: a circular list through F_RR_NEXT
            if tail < 0:
                fi[f, F_RR_NEXT] = f
            else:
                fi[f, F_RR_NEXT] = fi[tail, F_RR_NEXT]
                fi[tail, F_RR_NEXT] = f
            lk[l, L_RR_TAIL] = f
            fi[f, F_READY] = 1
            if lk[l, L_BUSY] == 0 and lk[l, L_HEAD] < 0 and lcap[l] > 0.0:
                _pull(pk, lk, lcap, fi, ff, tx, tm, clock, params, route_links, l, now)
        return
    sent = 0
    while _window_allows(fi, ff, f, mss):
        if sent == params[K_BURST]:
            if fi[f, F_SENDQ] == 0:
                fi[f, F_SENDQ] = 1
                _ring_push_any(sd, clock[C_SD_HEAD:C_SD_COUNT + 1], now, _take_seq(clock), f)
            return
        _send_next(pk, lk, lcap, fi, tx, tm, clock, params, route_links, f, now)
        sent += 1


@njit(refcount=False)
def _pull(pk, lk, lcap, fi, ff, tx, tm, clock, params, route_links, l, now):
    """Idle link ``l`` with an empty queue sends one packet of the head of its ready ring (flows
    without a packet the window allows leave the ring); the flow then goes to the ring's tail,
    or leaves it if its window allows no other packet (round-robin NIC mode)."""
    mss = params[K_MTU] - params[K_HDR]
    while lk[l, L_RR_TAIL] >= 0:
        tail = lk[l, L_RR_TAIL]
        f = fi[tail, F_RR_NEXT]  # the head
        sent = _window_allows(fi, ff, f, mss)
        if sent:
            _send_next(pk, lk, lcap, fi, tx, tm, clock, params, route_links, f, now)
            if _window_allows(fi, ff, f, mss):
                lk[l, L_RR_TAIL] = f  # the head becomes the tail
                return
        fi[f, F_READY] = 0  # leaves the ring
        if f == tail:
            lk[l, L_RR_TAIL] = -1
        else:
            fi[tail, F_RR_NEXT] = fi[f, F_RR_NEXT]
        if sent:
            return


@njit
def _finish(fi, done_order, clock, f, now):
    fi[f, F_FINISH] = now
    done_order[clock[C_N_DONE]] = f
    clock[C_N_DONE] += 1


@njit(inline="always")
def _deliver_data(pk, lk, lcap, fi, got, tx, done_order, clock, params, ack_links, p, now):
    """A data packet reaches its receiver: record it and send the cumulative ACK (reusing ``p``).

    Returns True when this packet completed the flow."""
    finished = False
    f = pk[p, P_FS] >> 32
    seq = pk[p, P_FS] & MASK32
    base = fi[f, F_BASE]
    flags = pk[p, P_MISC] & 0xFF
    if flags & FL_CE:
        fi[f, F_MARKS] += 1
    if not got[base + seq]:
        got[base + seq] = True
        c = fi[f, F_CUM]
        n = fi[f, F_NPKTS]
        while c < n and got[base + c]:
            c += 1
        fi[f, F_CUM] = c
        if c == n and fi[f, F_FINISH] < 0:
            _finish(fi, done_order, clock, f, now)
            finished = True
    # hop 0, size hdr; the CE bit becomes the ECN echo; P_TS keeps the echoed timestamp
    pk[p, P_MISC] = (params[K_HDR] << 16) | FL_ACK | (flags & FL_CE)
    pk[p, P_FS] = (f << 32) | fi[f, F_CUM]  # ackno
    _enqueue(pk, lk, lcap, fi, tx, clock, params, p, ack_links[fi[f, F_ROUTE]], now)
    return finished


@njit(inline="always")
def _on_ack(pk, lk, lcap, fi, ff, tx, tm, sd, clock, params, g, route_links, p, now):
    """An ACK reaches its sender (steps 1-4 of the module docstring). Returns True when it
    acknowledged the flow's last packet (the sender is done)."""
    f = pk[p, P_FS] >> 32
    ackno = pk[p, P_FS] & MASK32
    ece = (pk[p, P_MISC] & FL_CE) != 0
    ts = pk[p, P_TS]
    _free(pk, clock, p)
    mss = float(params[K_MTU] - params[K_HDR])
    if fi[f, F_ACKED] >= fi[f, F_NPKTS]:
        return False
    # 1. RTT estimate
    r = float(now - ts)
    if ff[f, W_SRTT] == 0.0:
        ff[f, W_SRTT] = r
        ff[f, W_RTTVAR] = r / 2.0
    else:
        ff[f, W_RTTVAR] = 0.75 * ff[f, W_RTTVAR] + 0.25 * abs(ff[f, W_SRTT] - r)
        ff[f, W_SRTT] = 0.875 * ff[f, W_SRTT] + 0.125 * r
    fi[f, F_RTO] = max(params[K_MIN_RTO], np.int64(ff[f, W_SRTT] + 4.0 * ff[f, W_RTTVAR]))
    # 2. DCTCP
    fi[f, F_SEEN] += 1
    if ece:
        fi[f, F_MARKED] += 1
        if ff[f, W_SSTH] > ff[f, W_CWND]:
            ff[f, W_SSTH] = ff[f, W_CWND]
    if fi[f, F_SEEN] * mss >= ff[f, W_CWND]:
        ff[f, W_ALPHA] = (1.0 - g) * ff[f, W_ALPHA] + g * fi[f, F_MARKED] / fi[f, F_SEEN]
        if fi[f, F_MARKED] > 0:
            ff[f, W_CWND] = max(ff[f, W_CWND] * (1.0 - ff[f, W_ALPHA] / 2.0), mss)
            ff[f, W_SSTH] = ff[f, W_CWND]
        fi[f, F_SEEN] = 0
        fi[f, F_MARKED] = 0
    # 3. TCP
    acked = fi[f, F_ACKED]
    if ackno > acked:
        if fi[f, F_INREC]:
            if ackno >= fi[f, F_RECOVER]:
                fi[f, F_INREC] = 0
                ff[f, W_CWND] = ff[f, W_SSTH]
            else:
                _send_data(pk, lk, lcap, fi, tx, tm, clock, params, route_links, f, ackno, now, True)
        elif ff[f, W_CWND] < ff[f, W_SSTH]:
            ff[f, W_CWND] += mss
        else:
            ff[f, W_CWND] += mss * mss / ff[f, W_CWND]
        fi[f, F_DUP] = 0
        fi[f, F_ACKED] = ackno
        if fi[f, F_NEXT] < ackno:
            fi[f, F_NEXT] = ackno
        fi[f, F_DEADLINE] = now + fi[f, F_RTO]
    elif ackno == acked and ackno < fi[f, F_NEXT]:
        fi[f, F_DUP] += 1
        if fi[f, F_INREC]:
            ff[f, W_CWND] += mss
        elif fi[f, F_DUP] == 3:
            ff[f, W_SSTH] = max(ff[f, W_CWND] / 2.0, 2.0 * mss)
            ff[f, W_CWND] = ff[f, W_SSTH] + 3.0 * mss
            fi[f, F_INREC] = 1
            fi[f, F_RECOVER] = fi[f, F_NEXT]
            _send_data(pk, lk, lcap, fi, tx, tm, clock, params, route_links, f, ackno, now, True)
    _send(pk, lk, lcap, fi, ff, tx, tm, sd, clock, params, route_links, f, now)
    return fi[f, F_ACKED] >= fi[f, F_NPKTS]


@njit
def _on_timer(pk, lk, lcap, fi, ff, tx, tm, sd, clock, params, route_links, ack_links, n_cap_events,
              f, now):
    if fi[f, F_ACKED] >= fi[f, F_NPKTS] or fi[f, F_ACKED] >= fi[f, F_NEXT]:
        fi[f, F_ARMED] = 0  # nothing outstanding (sending re-arms it)
        return
    if fi[f, F_DEADLINE] > now:
        _heap_push(tm, clock[C_TM_SIZE], fi[f, F_DEADLINE], _take_seq(clock), f)
        clock[C_TM_SIZE] += 1
        return
    fi[f, F_ARMED] = 0
    if clock[C_CAP_PTR] == n_cap_events and not (_route_up(fi, lcap, route_links, f)
                                                 and _route_up(fi, lcap, ack_links, f)):
        return  # a link of its path is down for good: the flow is stuck, its timer stays off
    fi[f, F_RTO] = min(2 * fi[f, F_RTO], MAX_RTO_PS)  # exponential backoff (RFC 6298, 5.5)
    mss = float(params[K_MTU] - params[K_HDR])
    ff[f, W_SSTH] = max(ff[f, W_CWND] / 2.0, 2.0 * mss)
    ff[f, W_CWND] = mss
    fi[f, F_INREC] = 0
    fi[f, F_DUP] = 0
    fi[f, F_NEXT] = fi[f, F_ACKED]
    _send(pk, lk, lcap, fi, ff, tx, tm, sd, clock, params, route_links, f, now)


@njit
def _route_up(fi, lcap, route_links, f):
    for q in range(fi[f, F_ROUTE], fi[f, F_ROUTE] + fi[f, F_HOPS]):
        if lcap[route_links[q]] <= 0.0:
            return False
    return True


@njit
def next_event_time(st):
    """Time (ps) of the next event, INF_PS when none is left."""
    return _next_event(st.ar, st.ar_hc, st.tx, st.tm, st.sd, st.rd, st.start_order,
                       st.clock[C_N_TIMED], st.fi, st.ev_time_ps, st.clock[C_N_CAPS], st.clock)[0]


@njit
def _quiescent(ar_hc, tm, fi, lcap, route_links, clock):
    """True when nothing but retransmission timers is left and none of them can make progress:
    each timer's flow is fully acknowledged, finished at its receiver, or has a data path link at
    capacity 0 (and no start or capacity event is pending)."""
    for c in range(ar_hc.shape[0]):
        if ar_hc[c, 1]:
            return False
    if clock[C_TX_SIZE] or clock[C_SD_COUNT] or clock[C_RD_COUNT]:
        return False
    for c in range(MAX_TX_CLASSES):
        if clock[C_TXR + 2 * c + 1]:
            return False
    if clock[C_START_PTR] < clock[C_N_TIMED] or clock[C_CAP_PTR] < clock[C_N_CAPS]:
        return False
    for i in range(clock[C_TM_SIZE]):
        f = tm[i, 2]
        if fi[f, F_ACKED] < fi[f, F_NPKTS] and fi[f, F_FINISH] < 0 and _route_up(fi, lcap, route_links, f):
            return False
    return True


@njit
def quiescent(st):
    """See :func:`_quiescent`: no event left can change a finish time unless something is
    injected (what is left may be retransmissions of flows held by a link at capacity 0)."""
    return _quiescent(st.ar_hc, st.tm, st.fi, st.lcap, st.route_links, st.clock)


@njit
def inject(st, flows, links, capacity_bps, at_ps):
    """Schedule, from outside, the START of pending ``flows`` (int64[n]: flows created with
    ``start_ps = -1`` that no trigger targets) and capacity changes ``links``/``capacity_bps``
    (int64[m], float64[m]) at ``at_ps`` >= the engine's current time.

    They join the pre-sorted timed starts and capacity events (``start_order``, ``ev_*``) at their
    place, so they run exactly as if they had been given to :func:`new_state`: a start with seq
    = its flow id, a capacity change with seq F, after the capacity events already listed for
    ``at_ps``. Injections may be at different times. While more capacity changes may come, set
    ``clock[C_OPEN] = 1`` (a flow held by a link at 0 then retries instead of being taken for
    stuck, and :func:`advance` returns QUIET when only such retries are left); clear it to apply
    the batch rule again.

    Returns 0, or (nothing changed) -1 if ``at_ps`` is before the engine's time, -3 if the
    capacity-event buffers are full (call :func:`grow_events`), -4 if a flow is not pending (bad
    id, already started or scheduled, or given twice), -5 if a link id or capacity is invalid.
    """
    clock, fi = st.clock, st.fi
    if at_ps < clock[C_NOW]:
        return -1
    n_links = st.lcap.shape[0]
    for i in range(links.shape[0]):
        c = capacity_bps[i]
        if links[i] < 0 or links[i] >= n_links or not (c >= 0.0 and c < np.inf):
            return -5
    if clock[C_N_CAPS] + links.shape[0] > st.ev_time_ps.shape[0]:
        return -3
    n_flows = fi.shape[0]
    for i in range(flows.shape[0]):
        f = flows[i]
        if f < 0 or f >= n_flows or fi[f, F_STATUS] != F_PENDING or fi[f, F_START] != -1:
            for j in range(i):  # undo the marks
                fi[flows[j], F_START] = -1
            return -4
        fi[f, F_START] = -2  # mark (catches duplicates)
    order = np.sort(flows)
    so = st.start_order
    lo = clock[C_START_PTR]
    for i in range(order.shape[0]):
        f = order[i]
        j = clock[C_N_TIMED]
        while j > lo and _before(at_ps, f, fi[so[j - 1], F_START], so[j - 1]):
            so[j] = so[j - 1]
            j -= 1
        so[j] = f
        fi[f, F_START] = at_ps
        clock[C_N_TIMED] += 1
    ev_t, ev_l, ev_c = st.ev_time_ps, st.ev_link, st.ev_capacity_bps
    lo = clock[C_CAP_PTR]
    for i in range(links.shape[0]):
        j = clock[C_N_CAPS]
        while j > lo and ev_t[j - 1] > at_ps:
            ev_t[j] = ev_t[j - 1]
            ev_l[j] = ev_l[j - 1]
            ev_c[j] = ev_c[j - 1]
            j -= 1
        ev_t[j] = at_ps
        ev_l[j] = links[i]
        ev_c[j] = capacity_bps[i]
        clock[C_N_CAPS] += 1
    return 0


def grow_events(st: PacketState, extra: int) -> PacketState:
    """A copy of ``st`` whose capacity-event buffers hold the pending events and room for at least
    ``extra`` more (processed events are dropped; their order is kept)."""
    c = st.clock
    lo, hi = int(c[C_CAP_PTR]), int(c[C_N_CAPS])
    keep = hi - lo
    room = max(2 * (keep + int(extra)), 16)
    t = np.zeros(room, np.int64)
    link = np.zeros(room, np.int64)
    cap = np.zeros(room)
    t[:keep] = st.ev_time_ps[lo:hi]
    link[:keep] = st.ev_link[lo:hi]
    cap[:keep] = st.ev_capacity_bps[lo:hi]
    c[C_CAP_PTR] = 0
    c[C_N_CAPS] = keep
    return st._replace(ev_time_ps=t, ev_link=link, ev_capacity_bps=cap)


@njit(refcount=False)
def advance(st, until_ps, max_events, stop_on_finish=False):
    """Process events with time <= ``until_ps``, at most ``max_events`` of them.

    With ``stop_on_finish``, a flow finishing at ``t`` lowers ``until_ps`` to ``t``: the call
    returns (PAUSED) once every event at ``t`` has run, so that the caller can react (inject) at
    that instant.

    Returns DONE (no events left and every flow finished), PAUSED (call again), GROW (the packet
    pool is nearly full: call :func:`grow` and continue), DEADLOCK (no events left but flows
    unfinished, e.g. waiting for a link that never comes back, or pending flows never injected)
    or, in an open state (``clock[C_OPEN]``, see :func:`inject`), QUIET: only retransmission
    timers of flows that cannot progress are left (:func:`quiescent`); the timeout due is not
    processed, so that a later injection resumes the run exactly where it stood.
    """
    pk, lk, lcap, fi, ff, got = st.pk, st.lk, st.lcap, st.fi, st.ff, st.got
    route_links, ack_links = st.route_links, st.ack_links
    ar, ar_hc, tx, tm, sd = st.ar, st.ar_hc, st.tx, st.tm, st.sd
    start_order, waiting, done_order, rd = st.start_order, st.waiting, st.done_order, st.rd
    trig_kind, trig_need, trig_ptr, trig_targets = st.trig_kind, st.trig_need, st.trig_ptr, st.trig_targets
    trig_state, flow_trig, fire_buf = st.trig_state, st.flow_trig, st.fire_buf
    ev_time_ps, ev_link, ev_cap = st.ev_time_ps, st.ev_link, st.ev_capacity_bps
    clock, params = st.clock, st.params
    g = st.g[0]
    n_flows = fi.shape[0]
    reserve = 4 * params[K_BURST] + 16
    n_timed, n_caps = clock[C_N_TIMED], clock[C_N_CAPS]  # only inject() changes them
    is_open = clock[C_OPEN] != 0
    # an open state never takes a flow for stuck: a capacity change may still come
    caps_left_for_timer = -1 if is_open else n_caps
    handled = 0
    while True:
        t, kind, src = _next_event(ar, ar_hc, tx, tm, sd, rd, start_order, n_timed, fi, ev_time_ps,
                                   n_caps, clock)
        if kind < 0:
            return DONE if clock[C_N_DONE] == n_flows else DEADLOCK
        if t > until_ps or handled >= max_events:
            return PAUSED
        if clock[C_N_FREE] < reserve:
            return GROW
        if is_open and kind == EV_TIMER:
            f = tm[0, 2]
            if (fi[f, F_DEADLINE] <= t and fi[f, F_ACKED] < fi[f, F_NPKTS]
                    and _quiescent(ar_hc, tm, fi, lcap, route_links, clock)):
                return QUIET  # the timeout stays due: nothing ran
        clock[C_NOW] = t
        clock[C_EVENTS] += 1
        handled += 1
        if kind == EV_ARRIVE:
            # later arrivals of this pipe: the packet of one, the route of a nearer one's flow
            mask = ar.shape[1] - 1
            if ar_hc[src, 1] > PREFETCH_AHEAD:
                prefetch_row(pk, ar[src, (ar_hc[src, 0] + PREFETCH_AHEAD) & mask, 2])
                prefetch_row(fi, pk[ar[src, (ar_hc[src, 0] + PREFETCH_AHEAD // 2) & mask, 2], P_FS] >> 32)
            p = _ring_pop(ar[src], ar_hc[src])
            f = pk[p, P_FS] >> 32
            misc = pk[p, P_MISC]
            h = (misc >> 8) & 0xFF
            is_ack = misc & FL_ACK
            if h == fi[f, F_HOPS]:
                if is_ack:
                    side = 0 if _on_ack(pk, lk, lcap, fi, ff, tx, tm, sd, clock, params, g, route_links, p, t) else -1
                else:
                    side = 1 if _deliver_data(pk, lk, lcap, fi, got, tx, done_order, clock, params,
                                              ack_links, p, t) else -1
                if side >= 0:
                    if side == 1 and stop_on_finish:
                        until_ps = t
                    if flow_trig[f, side] >= 0:
                        _fire(trig_kind, trig_need, trig_ptr, trig_targets, trig_state, fire_buf, rd,
                              clock, flow_trig[f, side], t)
            else:
                links = ack_links if is_ack else route_links
                _enqueue(pk, lk, lcap, fi, tx, clock, params, p, links[fi[f, F_ROUTE] + h], t)
        elif kind == EV_TX_DONE:
            if src == 0:
                l = tx[0, 0, 2]
                _heap_pop(tx[0], clock[C_TX_SIZE])
                clock[C_TX_SIZE] -= 1
            else:
                k = C_TXR + 2 * (src - 1)
                l = _ring_pop(tx[src], clock[k:k + 2])
            _tx_done(pk, lk, lcap, tx, ar, ar_hc, clock, params, l, t)
            if lk[l, L_RR_TAIL] >= 0 and lk[l, L_BUSY] == 0 and lk[l, L_HEAD] < 0 and lcap[l] > 0.0:
                _pull(pk, lk, lcap, fi, ff, tx, tm, clock, params, route_links, l, t)
        elif kind == EV_TIMER:
            f = tm[0, 2]
            _heap_pop(tm, clock[C_TM_SIZE])
            clock[C_TM_SIZE] -= 1
            _on_timer(pk, lk, lcap, fi, ff, tx, tm, sd, clock, params, route_links, ack_links,
                      caps_left_for_timer, f, t)
        elif kind == EV_SEND:
            h = clock[C_SD_HEAD]
            f = sd[h, 2]
            clock[C_SD_HEAD] = (h + 1) % sd.shape[0]
            clock[C_SD_COUNT] -= 1
            fi[f, F_SENDQ] = 0
            _send(pk, lk, lcap, fi, ff, tx, tm, sd, clock, params, route_links, f, t)
        elif kind == EV_START:
            if src == 0:
                f = start_order[clock[C_START_PTR]]
                clock[C_START_PTR] += 1
            else:
                h = clock[C_RD_HEAD]
                f = rd[h, 2]
                clock[C_RD_HEAD] = (h + 1) % rd.shape[0]
                clock[C_RD_COUNT] -= 1
                fi[f, F_START] = t
            if _route_up(fi, lcap, route_links, f):
                if _start_flow(pk, lk, lcap, fi, ff, tx, tm, sd, done_order, clock, params, route_links, f, t):
                    if stop_on_finish:
                        until_ps = t
                    _fire_both(trig_kind, trig_need, trig_ptr, trig_targets, trig_state, fire_buf, rd,
                               clock, flow_trig, f, t)
            else:
                fi[f, F_STATUS] = F_WAITING
                waiting[clock[C_N_WAITING]] = f
                clock[C_N_WAITING] += 1
        else:  # EV_CAP
            e = clock[C_CAP_PTR]
            clock[C_CAP_PTR] += 1
            l = ev_link[e]
            lcap[l] = ev_cap[e]
            _set_tx_classes(lk, lcap, params, l)
            if lcap[l] > 0.0:
                if lk[l, L_BUSY] == 0 and lk[l, L_HEAD] >= 0:
                    _start_tx(pk, lk, lcap, tx, clock, params, l, t)
                elif lk[l, L_BUSY] == 0 and lk[l, L_RR_TAIL] >= 0:
                    _pull(pk, lk, lcap, fi, ff, tx, tm, clock, params, route_links, l, t)
                # waiting flows whose whole route is up start now, in the order they arrived
                kept = 0
                for i in range(clock[C_N_WAITING]):
                    f = waiting[i]
                    if _route_up(fi, lcap, route_links, f):
                        if _start_flow(pk, lk, lcap, fi, ff, tx, tm, sd, done_order, clock, params,
                                       route_links, f, t):
                            if stop_on_finish:
                                until_ps = t
                            _fire_both(trig_kind, trig_need, trig_ptr, trig_targets, trig_state,
                                       fire_buf, rd, clock, flow_trig, f, t)
                    else:
                        waiting[kept] = f
                        kept += 1
                clock[C_N_WAITING] = kept


@njit
def _start_flow(pk, lk, lcap, fi, ff, tx, tm, sd, done_order, clock, params, route_links, f, now):
    """Start flow ``f``; returns True when it has no packet and so finished at once."""
    fi[f, F_STATUS] = F_ACTIVE
    if fi[f, F_NPKTS] == 0:
        _finish(fi, done_order, clock, f, now)
        return True
    _send(pk, lk, lcap, fi, ff, tx, tm, sd, clock, params, route_links, f, now)
    return False


@njit
def _fire(trig_kind, trig_need, trig_ptr, trig_targets, trig_state, fire_buf, rd, clock, k, now):
    """Activate trigger ``k``: the flows it starts get START events now (in target order)."""
    n = fire(k, trig_kind, trig_need, trig_ptr, trig_targets, trig_state, fire_buf, 0)
    for i in range(n):
        hc = clock[C_RD_HEAD:C_RD_COUNT + 1]
        _ring_push_any(rd, hc, now, _take_seq(clock), fire_buf[i])


@njit
def _fire_both(trig_kind, trig_need, trig_ptr, trig_targets, trig_state, fire_buf, rd, clock, flow_trig,
               f, now):
    """A flow finished on both sides at once (no packets): its send-done then receive-done trigger."""
    for side in range(2):
        if flow_trig[f, side] >= 0:
            _fire(trig_kind, trig_need, trig_ptr, trig_targets, trig_state, fire_buf, rd, clock,
                  flow_trig[f, side], now)
