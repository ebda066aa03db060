"""Plain-Python reference of the packet-level engine (``fabricsim.kernels.packetsim``).

Slow and readable: one ``heapq`` event list of ``(time_ps, seq, kind, payload)``, Python objects
for packets, links and flows. It is written from the model described in the kernel's module
docstring and shares no code with the kernel. Only its outputs are meant to be compared.

Model summary (see the kernel docstring for the full text):

- Events run in ``(time, seq)`` order. Flow ``f`` starts with seq ``f``, capacity event ``e`` with
  seq ``F + e``; every other event takes the next value of a global counter (starting at ``F + E``)
  when it is scheduled.
- Each directed link is a drop-tail FIFO (``q_bytes`` includes the packet being serialized) with
  ECN marking of data packets (``q_bytes > K * mtu`` before joining) and a pipe of ``delay_ps``.
  Serializing ``b`` bytes at ``c`` bit/s takes ``ceil(b * 8e12 / c)`` ps; a link of capacity 0
  starts no serialization.
- Senders run DCTCP over NewReno with a byte window; receivers send one cumulative ACK per data
  packet, echoing CE and the send timestamp. One lazy retransmission timer per flow.
- NIC scheduling: ``"fifo"`` (default) puts every packet the window allows into the first link's
  FIFO at once; ``"round-robin"`` keeps, per link, a ring of ready flows (flows whose first link it
  is) and lets the link *pull* one data packet at a time from the ring's head flow whenever it is
  idle, up and has an empty queue. ACKs and fast/partial-ACK retransmissions still go straight into
  the FIFO; ``burst`` and SEND events do not apply.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field

# event kinds (names only; the order of simultaneous events is fixed by seq alone)
START, CAPACITY, ARRIVE, TX_DONE, TIMER, SEND = "start", "capacity", "arrive", "tx_done", "timer", "send"
NIC_SCHEDULING = ("fifo", "round-robin")


@dataclass
class RefParams:
    """Same fields and defaults as ``PacketParams`` (kept separate: the reference is independent)."""

    mtu_bytes: int = 9000
    hdr_bytes: int = 64
    buffer_pkts: int = 10_000
    ecn_k_pkts: int = 50
    init_cwnd_pkts: int = 10
    ssthresh_pkts: int = 10_000
    min_rto_ps: int = 1_000_000_000
    init_rto_ps: int = 1_000_000_000_000
    dctcp_g: float = 1.0 / 16.0
    burst: int = 256
    nic_scheduling: str = "fifo"  # "fifo" or "round-robin"

    def __post_init__(self):
        if self.nic_scheduling not in NIC_SCHEDULING:
            raise ValueError(f"nic_scheduling must be one of {NIC_SCHEDULING}, not {self.nic_scheduling!r}")


@dataclass
class Packet:
    flow: "Flow"
    seq: int  # data: sequence number; ACK: ackno (cumulative)
    size: int
    is_ack: bool = False
    ce: bool = False  # data: congestion experienced; ACK: ECN echo
    retx: bool = False
    ts: int = 0  # send time of the data packet (echoed by its ACK)
    hop: int = 0  # index of the next link of its path


@dataclass
class Link:
    id: int
    capacity: float
    delay: int
    queue: list = field(default_factory=list)  # FIFO, queue[0] is being serialized when busy
    q_bytes: int = 0
    busy: bool = False
    ready: deque = field(default_factory=deque)  # round-robin: flows this link pulls from, head first
    # counters
    bytes_sent: int = 0
    data_sent: int = 0
    retx_sent: int = 0
    acks_sent: int = 0
    marks: int = 0
    drops: int = 0
    peak_q_bytes: int = 0


@dataclass
class Flow:
    id: int
    size: int
    start: int
    path: list  # Link objects, data direction
    ack_path: list  # Link objects, ACK direction
    n_pkts: int
    state: str = "pending"  # pending / waiting / active
    finish: int = -1
    # receiver
    received: set = field(default_factory=set)
    cum: int = 0
    # sender
    next_seq: int = 0
    highest_sent: int = 0
    acked: int = 0
    cwnd: float = 0.0
    ssthresh: float = 0.0
    alpha: float = 0.0
    srtt: float = 0.0
    rttvar: float = 0.0
    rto: int = 0
    seen: int = 0
    marked: int = 0
    dupacks: int = 0
    in_recovery: bool = False
    recover: int = 0
    timer_armed: bool = False
    deadline: int = 0
    send_pending: bool = False
    in_ring: bool = False  # round-robin: in its first link's ready ring
    # counters
    data_sent: int = 0
    retx: int = 0
    marks_received: int = 0
    drops: int = 0
    timeouts: int = 0
    fast_retransmits: int = 0


class RefPacketSim:
    """Packet-level reference simulator.

    ``routes``: list (one per flow) of lists of link ids; ``reverse_link[l]``: the opposite link;
    ``capacity_bps``/``delay_ps``: per link; ``size_bytes``/``start_ps``: per flow; ``events``:
    list of ``(time_ps, link, capacity_bps)``, already in the order they apply.
    """

    def __init__(self, routes, reverse_link, capacity_bps, delay_ps, size_bytes, start_ps,
                 events=(), params: RefParams | None = None):
        p = params or RefParams()
        p.__post_init__()  # fields may have been changed after construction
        self.p = p
        self.round_robin = p.nic_scheduling == "round-robin"
        self.mss = p.mtu_bytes - p.hdr_bytes
        assert self.mss > 0
        self.buffer_bytes = p.buffer_pkts * p.mtu_bytes
        self.ecn_bytes = p.ecn_k_pkts * p.mtu_bytes
        self.links = [Link(i, float(c), int(d)) for i, (c, d) in enumerate(zip(capacity_bps, delay_ps))]
        self.flows = []
        for f, (route, size, start) in enumerate(zip(routes, size_bytes, start_ps)):
            size = int(size)
            path = [self.links[int(l)] for l in route]
            ack_path = [self.links[int(reverse_link[int(l)])] for l in reversed(route)]
            fl = Flow(f, size, int(start), path, ack_path, n_pkts=-(-size // self.mss))
            fl.cwnd = float(p.init_cwnd_pkts * self.mss)
            fl.ssthresh = float(p.ssthresh_pkts * self.mss)
            fl.rto = p.init_rto_ps
            self.flows.append(fl)
        self.events = []
        for f, fl in enumerate(self.flows):
            heapq.heappush(self.events, (fl.start, f, START, fl))
        n_flows = len(self.flows)
        for e, (t, l, c) in enumerate(events):
            heapq.heappush(self.events, (int(t), n_flows + e, CAPACITY, (int(l), float(c))))
        self.seq = n_flows + len(events)
        self.cap_left = len(events)  # capacity events not yet applied
        self.now = 0
        self.n_events = 0
        self.waiting = []  # flows held by a down link, in the order they started waiting
        self.done_order = []
        self.data_hops = 0
        self.all_hops = 0
        self.n_waited = 0  # flows that found their route down at start
        self.n_send_events = 0  # SEND continuations (burst limit reached)

    # ---------------------------------------------------------------- event list
    def schedule(self, time, kind, payload):
        heapq.heappush(self.events, (time, self.seq, kind, payload))
        self.seq += 1

    def run(self, until_ps=None):
        """Process every event with time <= ``until_ps``; returns 'done', 'deadlock' or 'horizon'."""
        while self.events:
            t = self.events[0][0]
            if until_ps is not None and t > until_ps:
                return "horizon"
            t, _, kind, payload = heapq.heappop(self.events)
            assert t >= self.now, "time went backwards"
            self.now = t
            self.n_events += 1
            if kind == START:
                self.on_start(payload)
            elif kind == CAPACITY:
                self.on_capacity(*payload)
            elif kind == ARRIVE:
                self.on_arrive(payload)
            elif kind == TX_DONE:
                self.on_tx_done(payload)
            elif kind == TIMER:
                self.on_timer(payload)
            elif kind == SEND:
                self.n_send_events += 1
                payload.send_pending = False
                self.send(payload)
            else:  # pragma: no cover
                raise AssertionError(kind)
        return "done" if all(f.finish >= 0 for f in self.flows) else "deadlock"

    # ---------------------------------------------------------------- links
    def serialization_ps(self, link, nbytes):
        return int(math.ceil(nbytes * 8e12 / link.capacity))

    def start_serializing(self, link):
        link.busy = True
        self.schedule(self.now + self.serialization_ps(link, link.queue[0].size), TX_DONE, link)

    def enqueue(self, link, pkt):
        if link.q_bytes + pkt.size > self.buffer_bytes:
            link.drops += 1
            if not pkt.is_ack:
                pkt.flow.drops += 1
            return
        if not pkt.is_ack and link.q_bytes > self.ecn_bytes:
            pkt.ce = True
            link.marks += 1
        link.queue.append(pkt)
        link.q_bytes += pkt.size
        link.peak_q_bytes = max(link.peak_q_bytes, link.q_bytes)
        if not link.busy and link.capacity > 0:
            self.start_serializing(link)

    def on_tx_done(self, link):
        pkt = link.queue.pop(0)
        link.q_bytes -= pkt.size
        link.bytes_sent += pkt.size
        self.all_hops += 1
        if pkt.is_ack:
            link.acks_sent += 1
        else:
            link.data_sent += 1
            self.data_hops += 1
            if pkt.retx:
                link.retx_sent += 1
        pkt.hop += 1
        self.schedule(self.now + link.delay, ARRIVE, pkt)
        if link.queue and link.capacity > 0:
            self.start_serializing(link)
        else:
            link.busy = False
        if self.round_robin and not link.queue and link.capacity > 0:
            self.pull(link)

    def on_arrive(self, pkt):
        path = pkt.flow.ack_path if pkt.is_ack else pkt.flow.path
        if pkt.hop < len(path):
            self.enqueue(path[pkt.hop], pkt)
        elif pkt.is_ack:
            self.sender_on_ack(pkt)
        else:
            self.receiver_on_data(pkt)

    def on_capacity(self, link_id, capacity):
        self.cap_left -= 1
        link = self.links[link_id]
        link.capacity = capacity
        if capacity > 0:
            if not link.busy and link.queue:
                self.start_serializing(link)
            elif self.round_robin and not link.queue:  # (an empty queue means an idle link)
                self.pull(link)
            still = []
            for fl in self.waiting:
                if self.route_up(fl):
                    self.start_flow(fl)
                else:
                    still.append(fl)
            self.waiting = still

    # ---------------------------------------------------------------- flows
    def route_up(self, fl):
        return all(l.capacity > 0 for l in fl.path)

    def on_start(self, fl):
        if self.route_up(fl):
            self.start_flow(fl)
        else:
            fl.state = "waiting"
            self.n_waited += 1
            self.waiting.append(fl)

    def start_flow(self, fl):
        fl.state = "active"
        if fl.n_pkts == 0:
            self.finish(fl)
        else:
            self.send(fl)

    def finish(self, fl):
        fl.finish = self.now
        self.done_order.append(fl.id)

    # ---------------------------------------------------------------- receiver
    def receiver_on_data(self, pkt):
        fl = pkt.flow
        if pkt.ce:
            fl.marks_received += 1
        if pkt.seq not in fl.received:
            fl.received.add(pkt.seq)
            while fl.cum in fl.received:
                fl.cum += 1
            if fl.cum == fl.n_pkts and fl.finish < 0:
                self.finish(fl)
        ack = Packet(fl, seq=fl.cum, size=self.p.hdr_bytes, is_ack=True, ce=pkt.ce, ts=pkt.ts)
        self.enqueue(fl.ack_path[0], ack)

    # ---------------------------------------------------------------- sender
    def transmit(self, fl, seq, retx):
        """Put data packet ``seq`` of ``fl`` on its first link (arming the timer first)."""
        size = min(self.mss, fl.size - seq * self.mss) + self.p.hdr_bytes
        pkt = Packet(fl, seq=seq, size=size, retx=retx, ts=self.now)
        fl.data_sent += 1
        if retx:
            fl.retx += 1
        if not fl.timer_armed:
            fl.timer_armed = True
            fl.deadline = self.now + fl.rto
            self.schedule(fl.deadline, TIMER, fl)
        self.enqueue(fl.path[0], pkt)

    def window_allows(self, fl):
        return fl.next_seq < fl.n_pkts and (fl.next_seq - fl.acked + 1) * self.mss <= fl.cwnd

    def send_next(self, fl):
        """Transmit packet ``next_seq`` of ``fl`` and advance ``next_seq`` (and the highest sent)."""
        seq = fl.next_seq
        self.transmit(fl, seq, retx=seq < fl.highest_sent)
        fl.next_seq += 1
        fl.highest_sent = max(fl.highest_sent, fl.next_seq)

    def send(self, fl):
        if self.round_robin:
            if not self.window_allows(fl):
                return
            link = fl.path[0]
            if not fl.in_ring:
                fl.in_ring = True
                link.ready.append(fl)
            if not link.busy and link.capacity > 0 and not link.queue:
                self.pull(link)
            return
        count = 0
        while self.window_allows(fl):
            if count == self.p.burst:  # more may go: continue in a SEND event now
                if not fl.send_pending:
                    fl.send_pending = True
                    self.schedule(self.now, SEND, fl)
                return
            self.send_next(fl)
            count += 1

    def pull(self, link):
        """Round-robin: the idle link takes one data packet from the first ready flow that has one."""
        ring = link.ready
        while ring:
            fl = ring[0]
            if not self.window_allows(fl):
                ring.popleft()
                fl.in_ring = False
                continue
            self.send_next(fl)
            ring.popleft()
            if self.window_allows(fl):
                ring.append(fl)
            else:
                fl.in_ring = False
            return

    def sender_on_ack(self, ack):
        fl = ack.flow
        mss = float(self.mss)
        if fl.acked >= fl.n_pkts:
            return
        # 1. RTT estimate
        r = float(self.now - ack.ts)
        if fl.srtt == 0.0:
            fl.srtt = r
            fl.rttvar = r / 2.0
        else:
            fl.rttvar = 0.75 * fl.rttvar + 0.25 * abs(fl.srtt - r)
            fl.srtt = 0.875 * fl.srtt + 0.125 * r
        fl.rto = max(self.p.min_rto_ps, int(fl.srtt + 4.0 * fl.rttvar))
        # 2. DCTCP
        g = self.p.dctcp_g
        fl.seen += 1
        if ack.ce:
            fl.marked += 1
            if fl.ssthresh > fl.cwnd:
                fl.ssthresh = fl.cwnd
        if fl.seen * mss >= fl.cwnd:
            fl.alpha = (1.0 - g) * fl.alpha + g * fl.marked / fl.seen
            if fl.marked > 0:
                fl.cwnd = max(fl.cwnd * (1.0 - fl.alpha / 2.0), mss)
                fl.ssthresh = fl.cwnd
            fl.seen = 0
            fl.marked = 0
        # 3. NewReno
        ackno = ack.seq
        if ackno > fl.acked:
            if fl.in_recovery:
                if ackno >= fl.recover:
                    fl.in_recovery = False
                    fl.cwnd = fl.ssthresh
                else:  # partial ACK
                    self.transmit(fl, ackno, retx=True)
            elif fl.cwnd < fl.ssthresh:
                fl.cwnd += mss
            else:
                fl.cwnd += mss * mss / fl.cwnd
            fl.dupacks = 0
            fl.acked = ackno
            fl.next_seq = max(fl.next_seq, fl.acked)
            fl.deadline = self.now + fl.rto
        elif ackno == fl.acked and ackno < fl.next_seq:
            fl.dupacks += 1
            if fl.in_recovery:
                fl.cwnd += mss
            elif fl.dupacks == 3:
                fl.ssthresh = max(fl.cwnd / 2.0, 2.0 * mss)
                fl.cwnd = fl.ssthresh + 3.0 * mss
                fl.in_recovery = True
                fl.recover = fl.next_seq
                fl.fast_retransmits += 1
                self.transmit(fl, fl.acked, retx=True)
        # 4. send what the window allows
        self.send(fl)

    def on_timer(self, fl):
        if fl.acked >= fl.n_pkts or fl.acked >= fl.next_seq:  # nothing outstanding
            fl.timer_armed = False
            return
        if fl.deadline > self.now:  # moved later by an ACK: fire again then
            self.schedule(fl.deadline, TIMER, fl)
            return
        fl.timer_armed = False
        if self.cap_left == 0 and not all(l.capacity > 0 for l in fl.path + fl.ack_path):
            return  # a link of its path is down for good: the flow is stuck, the timer stays off
        fl.timeouts += 1
        fl.rto = min(2 * fl.rto, 60 * 10**12)  # exponential backoff, capped at 60 s
        mss = float(self.mss)
        fl.ssthresh = max(fl.cwnd / 2.0, 2.0 * mss)
        fl.cwnd = mss
        fl.in_recovery = False
        fl.dupacks = 0
        fl.next_seq = fl.acked
        self.send(fl)

    # ---------------------------------------------------------------- results
    def results(self):
        fl, lk = self.flows, self.links
        return dict(
            finish_ps=[f.finish for f in fl],
            link_bytes=[l.bytes_sent for l in lk],
            done_order=list(self.done_order),
            events=self.n_events,
            data_link_hops=self.data_hops,
            all_link_hops=self.all_hops,
            retransmissions=sum(f.retx for f in fl),
            ecn_marks=sum(l.marks for l in lk),
            drops=sum(l.drops for l in lk),
            peak_queue_bytes=max((l.peak_q_bytes for l in lk), default=0),
            flow_data_pkts=[f.data_sent for f in fl],
            flow_retx=[f.retx for f in fl],
            flow_marks=[f.marks_received for f in fl],
            flow_drops=[f.drops for f in fl],
            link_data_pkts=[l.data_sent for l in lk],
            link_retx=[l.retx_sent for l in lk],
            link_acks=[l.acks_sent for l in lk],
            link_marks=[l.marks for l in lk],
            link_drops=[l.drops for l in lk],
            link_peak_queue_bytes=[l.peak_q_bytes for l in lk],
            timeouts=sum(f.timeouts for f in fl),
            fast_retransmits=sum(f.fast_retransmits for f in fl),
            queue_bytes=[l.q_bytes for l in lk],
            waited=self.n_waited,
            send_events=self.n_send_events,
        )


def simulate(routes, reverse_link, capacity_bps, delay_ps, size_bytes, start_ps, events=(),
             params=None, until_ps=None):
    """Run the reference; returns ``(status, results dict)``."""
    sim = RefPacketSim(routes, reverse_link, capacity_bps, delay_ps, size_bytes, start_ps, events,
                       params)
    status = sim.run(until_ps)
    return status, sim.results()
