"""Drivers of the simulation kernels: validated arrays in, results out, traces streamed on the way.

:func:`run_flow_engine` runs the flow-level kernel (:mod:`fabricsim.kernels.flowsim`) in slices,
so that completed flows and link-utilization samples reach the trace sinks while the run goes on
(a run killed half-way leaves readable traces) and long runs can report progress.

Range of the inputs. Simulated time is int64 picoseconds, and the flow engine takes a completion
predicted later than :data:`HORIZON_PS` (9e18 ps, about 104 days) for "never". Hence the bounds
that every entry point checks (:func:`fabricsim.simulate.simulate_flows`, the scenario files):

- a flow carries at most :data:`MAX_FLOW_BYTES` = 1e15 bytes (1 PB): alone on a 1 Gbit/s link it
  lasts ``1e15 * 8 bits / 1e9 bit/s = 8e6 s`` (93 days), inside the horizon; ``bytes * 8e12 /
  rate`` (the engines' completion and serialization times in ps) then fits int64 at any rate
  >= 1 Gbit/s;
- the flows of a run carry at most :data:`MAX_TOTAL_BYTES` bytes in all, so that their total in
  bits fits int64;
- no link is loaded beyond what it can carry before the horizon (:func:`check_time_range`).

Memory. :func:`available_memory_bytes` is what the machine can still give; runs that would need
more are refused up front with an estimate (:mod:`fabricsim.scenario`, the packet engine's
per-packet receive bitmap in :func:`check_packet_sizes`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from fabricsim.errors import ConfigError
from fabricsim.kernels import flowsim

__all__ = ["EngineOutput", "CapacityEvents", "Triggers", "run_flow_engine", "run_packet_engine",
           "as_capacity_events", "FlowSession", "PacketSession", "DEFAULT_TOLERANCE",
           "HORIZON_PS", "MAX_FLOW_BYTES", "MAX_FLOW_BYTES_WHY", "MAX_TOTAL_BYTES",
           "available_memory_bytes", "format_bytes", "format_duration_ps", "check_time_range",
           "check_packet_sizes"]

#: End of the simulated clock (ps): the flow engine's "never" (see the module docstring).
HORIZON_PS = flowsim.HORIZON_PS
#: Largest flow (bytes): 1 PB, 93 days alone on a 1 Gbit/s link.
MAX_FLOW_BYTES = 10**15
#: Why (for error messages).
MAX_FLOW_BYTES_WHY = ("1 PB, 93 days alone on a 1 Gbit/s link; the simulated clock, int64 "
                      f"picoseconds, ends after {HORIZON_PS / 86400e12:.0f} days")
#: Largest total of a run's flow sizes (bytes): the total in bits fits int64.
MAX_TOTAL_BYTES = (2**63 - 1) // 8

#: Default staleness bound of the flow engine (see :func:`fabricsim.kernels.flowsim.advance`).
DEFAULT_TOLERANCE = 0.01
_SLICE_EVENTS = 20_000


class _Slicer:
    """How many events the next kernel call may handle, so that each call takes about
    ``target_s`` of wall time: between calls the driver reports progress, writes traces and lets
    Python handle Ctrl-C (a signal waits for the kernel to return). Results do not depend on the
    slicing (the kernels pause and resume exactly; tests/test_run_robustness.py checks it)."""

    def __init__(self, first: int = 1024, target_s: float = 0.2, most: int = 50 * _SLICE_EVENTS):
        self.events, self.target_s, self.most = first, target_s, most
        self._t = time.perf_counter()
        self._done = 0

    def update(self, events_done: int) -> None:
        """After a kernel call: ``events_done`` is the kernel's running event count."""
        now = time.perf_counter()
        ran, took = events_done - self._done, now - self._t
        if ran > 0 and took > 0:
            rate = ran / took
            # at most twice the last slice: events late in a run can cost far more than early ones
            self.events = int(min(self.most, 2 * self.events, max(64, rate * self.target_s)))
        self._t, self._done = now, events_done


def available_memory_bytes() -> int:
    """Memory this machine can still give a run: ``MemAvailable`` of ``/proc/meminfo`` (Linux),
    else the physical memory (``SC_PAGE_SIZE * SC_PHYS_PAGES``)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - no sysconf (Windows)
        return 2**62


def format_bytes(n: float) -> str:
    """``1,234 GB``, ``12.3 GB``, ``512 MB``: sizes in error messages."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            v = n / scale
            return f"{v:,.0f} {unit}" if v >= 100 else f"{v:.3g} {unit}"
    return f"{n:.0f} B"


def format_duration_ps(ps: float) -> str:
    """A simulated duration in years, days, hours, s, ms or us (error messages)."""
    s = ps * 1e-12
    for unit, scale in (("years", 365 * 86400.0), ("days", 86400.0), ("hours", 3600.0), ("s", 1.0),
                        ("ms", 1e-3), ("us", 1e-6)):
        if s >= scale or unit == "us":
            v = s / scale
            return f"{v:,.0f} {unit}" if v >= 100 else f"{v:.3g} {unit}"


def check_time_range(route_ptr, route_links, size_bytes, start_ps, capacity_bps,
                     events: CapacityEvents | None = None, *, until_ps: int | None = None,
                     describe_link: Callable[[int], str] | None = None) -> float:
    """Refuse flows that cannot finish inside the simulated clock; returns a lower bound of the
    run's end (ps; at most ``until_ps`` when given).

    Every byte routed over a link takes ``8 / capacity`` seconds of it, at the link's best capacity
    (nominal or any capacity event), so the first start plus ``bytes routed * 8e12 / capacity`` is
    a lower bound of the run's end on each link; if one reaches the end of the clock
    (:data:`HORIZON_PS`) the run would end in a false deadlock or wrap around int64. Raises
    :class:`ConfigError` (``size_bytes``) then (unless the run stops at ``until_ps``), and when
    the sizes add up beyond :data:`MAX_TOTAL_BYTES`. ``describe_link(l)`` names a link's kind.
    """
    size = np.asarray(size_bytes, np.float64)
    total = float(size.sum())
    if total > MAX_TOTAL_BYTES:
        raise ConfigError("size_bytes", f"the flows carry {total:,.0f} bytes in all, at most "
                          f"{MAX_TOTAL_BYTES:,} (their total in bits must fit int64)")
    cap = np.array(capacity_bps, dtype=np.float64)
    if cap.size == 0 or size.size == 0:
        return 0.0
    if events is not None and len(events):
        np.maximum.at(cap, events.link, events.capacity_bps)
    load = np.bincount(route_links, weights=np.repeat(size, np.diff(route_ptr)), minlength=cap.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        busy_ps = np.where(cap > 0, load * 8e12 / np.where(cap > 0, cap, 1.0), 0.0)
    start = np.asarray(start_ps)
    first = float(start[start >= 0].min()) if np.any(start >= 0) else 0.0
    worst = int(np.argmax(busy_ps))
    lower_ps = first + float(busy_ps[worst])
    if until_ps is not None:
        return min(lower_ps, float(until_ps))
    if lower_ps >= HORIZON_PS:
        kind = "" if describe_link is None else f"{describe_link(worst)} "
        raise ConfigError("size_bytes", f"{kind}link {worst} ({cap[worst] / 1e9:g} Gbps) would carry "
                          f"{load[worst]:,.0f} bytes, {format_duration_ps(busy_ps[worst])} of simulated "
                          f"time; the simulated clock (int64 picoseconds) ends after "
                          f"{format_duration_ps(HORIZON_PS)}: send fewer or smaller flows")
    return lower_ps


#: Packet engine state per flow (bytes, measured: tables, timers, rings, routes).
_PACKET_FLOW_BYTES = 800


def check_packet_sizes(size_bytes, params, available_bytes: int | None = None) -> None:
    """Refuse flows the packet engine cannot hold: packet sequence numbers are 32-bit, and the
    receiver keeps one byte per packet (``sum(ceil(size / mss))``), the flow state about 800 B
    per flow."""
    mss = params.mtu_bytes - params.hdr_bytes
    size = np.asarray(size_bytes, np.int64)
    if size.size == 0:
        return
    biggest = int(size.max())
    limit = (2**32 - 1) * mss
    if biggest > limit:
        raise ConfigError("size_bytes", f"the packet engine takes flows of at most 2^32 - 1 packets "
                          f"({limit:,} bytes at mtu_bytes - hdr_bytes = {mss}), got {biggest:,}")
    packets = float(np.sum(-(-size // mss)))
    need = packets + _PACKET_FLOW_BYTES * size.size
    have = available_memory_bytes() if available_bytes is None else available_bytes
    if need > have:
        raise ConfigError("size_bytes", f"the packet engine needs about {format_bytes(need)} for "
                          f"{size.size:,} flows of {packets:,.0f} packets (one byte per packet); this "
                          f"machine has {format_bytes(have)} available")


@dataclass(frozen=True)
class CapacityEvents:
    """Link-capacity changes, sorted by time: ``time_ps int64[E]``, ``link int64[E]``,
    ``capacity_bps float64[E]``. Events at one time apply in the given order."""

    time_ps: np.ndarray
    link: np.ndarray
    capacity_bps: np.ndarray

    def __len__(self) -> int:
        return int(self.time_ps.shape[0])


def as_capacity_events(events, n_links: int) -> CapacityEvents:
    """Validate capacity events given as ``None``, a :class:`CapacityEvents`, rows of
    ``(time_ps, link, capacity_bps)`` or a tuple of three arrays; returns them sorted by time."""
    if events is None:
        return CapacityEvents(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    if isinstance(events, CapacityEvents):
        t, link, cap = events.time_ps, events.link, events.capacity_bps
    elif isinstance(events, tuple) and len(events) == 3 and all(np.ndim(a) == 1 for a in events):
        t, link, cap = events
    else:
        rows = np.asarray(events, dtype=np.float64)
        if rows.size == 0:
            return as_capacity_events(None, n_links)
        if rows.ndim != 2 or rows.shape[1] != 3:
            raise ConfigError("capacity_events", "must be rows of (time_ps, link, capacity_bps), "
                              f"got an array of shape {rows.shape}")
        t, link, cap = rows[:, 0], rows[:, 1], rows[:, 2]
    t = np.asarray(t)
    link = np.asarray(link)
    cap = np.asarray(cap, dtype=np.float64)
    if not (t.shape == link.shape == cap.shape):
        raise ConfigError("capacity_events", "time_ps, link and capacity_bps must have equal lengths")
    if t.size and (np.any(t != np.round(t)) or np.any(t < 0)):
        raise ConfigError("capacity_events.time_ps", "must be integers >= 0 (picoseconds)")
    if link.size and (np.any(link != np.round(link)) or link.min() < 0 or link.max() >= n_links):
        raise ConfigError("capacity_events.link", f"must be link ids in 0 .. {n_links - 1}")
    if not np.all(np.isfinite(cap)) or np.any(cap < 0):
        raise ConfigError("capacity_events.capacity_bps", "must be finite and >= 0")
    order = np.argsort(t, kind="stable")
    return CapacityEvents(t.astype(np.int64)[order], link.astype(np.int64)[order], cap[order])


@dataclass(frozen=True)
class Triggers:
    """Flows started by the completion of other flows (htsim connection-matrix triggers).

    ``kind int64[K]`` (0 oneshot, 1 multishot, 2 barrier; see :mod:`fabricsim.kernels.triggers`),
    ``need int64[K]`` (activations a barrier waits for), ``targets`` a list of K lists of flow ids
    started by each trigger, ``send_done``/``recv_done int64[F]`` the trigger each flow activates
    when its sender / receiver is done (-1: none). Target flows have no start time (``-1``).
    """

    kind: np.ndarray
    need: np.ndarray
    targets: tuple
    send_done: np.ndarray
    recv_done: np.ndarray

    def arrays(self):
        """``(kind, need, ptr, targets, flow_trig int64[F, 2])`` for the kernels."""
        ptr = np.zeros(len(self.targets) + 1, np.int64)
        np.cumsum([len(t) for t in self.targets], out=ptr[1:])
        flat = np.array([f for t in self.targets for f in t], np.int64)
        return (np.asarray(self.kind, np.int64), np.asarray(self.need, np.int64), ptr, flat,
                np.ascontiguousarray(np.stack([self.send_done, self.recv_done], axis=1), dtype=np.int64))

    def validate(self, start_ps: np.ndarray) -> None:
        """Check ids and that exactly the target flows lack a start time."""
        n_flows = start_ps.shape[0]
        k = len(self.targets)
        if np.shape(self.kind) != (k,) or np.shape(self.need) != (k,):
            raise ConfigError("triggers", "kind, need and targets must have one entry per trigger")
        if np.any((np.asarray(self.kind) < 0) | (np.asarray(self.kind) > 2)):
            raise ConfigError("triggers.kind", "must be 0 (oneshot), 1 (multishot) or 2 (barrier)")
        for name in ("send_done", "recv_done"):
            a = np.asarray(getattr(self, name))
            if a.shape != (n_flows,) or np.any((a < -1) | (a >= k)):
                raise ConfigError(f"triggers.{name}", f"must give, per flow, a trigger id in 0 .. {k - 1} or -1")
        targeted = np.zeros(n_flows, np.int64)
        for t in self.targets:
            for f in t:
                if not 0 <= f < n_flows:
                    raise ConfigError("triggers.targets", f"flow id {f} is not in 0 .. {n_flows - 1}")
                targeted[f] += 1
        if np.any(targeted > 1):
            raise ConfigError("triggers.targets", f"flow {int(np.flatnonzero(targeted > 1)[0])} is "
                              "started by more than one trigger")
        bad = np.flatnonzero((targeted == 1) != (start_ps < 0))
        if bad.size:
            f = int(bad[0])
            raise ConfigError("start_ps", f"flow {f}: a flow has no start time (-1) exactly when a "
                              "trigger starts it")


@dataclass
class EngineOutput:
    """What an engine returns: per-flow finish times and per-link carried bytes.

    ``finish_ps int64[F]`` (-1 for a flow that did not finish), ``link_bytes float64[L]`` (bytes
    each link carried), ``status`` ``done``, ``deadlock`` (flows held by a zero-capacity link that
    never came back) or ``horizon`` (stopped at ``until_ps``), ``end_ps`` the simulated time
    reached, ``stats`` counters of the run.
    """

    finish_ps: np.ndarray
    link_bytes: np.ndarray
    status: str
    end_ps: int
    stats: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    start_ps: np.ndarray | None = None  # actual starts (flows started by triggers: -1 if never)


def run_flow_engine(route_ptr, route_links, capacity_bps, size_bytes, start_ps,
                    events: CapacityEvents, *, tolerance: float = DEFAULT_TOLERANCE,
                    weight=None, rate_cap_bps=None, until_ps: int | None = None, triggers=None,
                    on_flows: Callable | None = None, on_links: Callable | None = None,
                    sample_ps: int | None = None,
                    progress: Callable[[int, int, int], None] | None = None,
                    bottleneck_first: bool = True) -> EngineOutput:
    """Run the flow-level engine on validated arrays.

    ``bottleneck_first=False`` skips the bottleneck-local attempt of each re-solve (see
    :mod:`fabricsim.kernels.flowsim`): the same max-min rates, computed the slower way (for
    comparisons); ``stats`` counts the attempts (``bottleneck_tries``, ``bottleneck_fails``).

    ``on_flows(flow_ids, finish_ps, start_ps)`` receives each slice's completed flows;
    ``on_links(time_ps, bytes_in_interval)`` receives, every ``sample_ps`` until the last flow
    finishes, the bytes each link carried during the interval (the last interval ends at the
    last completion, or at the first sample time after it when capacity events go on);
    ``progress(done, total, now_ps)`` is called after every slice.

    A run whose flows would outlast the simulated clock (:data:`HORIZON_PS`) stops with status
    ``horizon`` and those flows unfinished (:func:`check_time_range` refuses most such runs up
    front).
    """
    if not (isinstance(tolerance, (int, float)) and np.isfinite(tolerance) and tolerance >= 0):
        raise ConfigError("tolerance", f"must be a number >= 0, got {tolerance!r}")
    st = flowsim.new_state(route_ptr, route_links, np.array(start_ps, dtype=np.int64), size_bytes,
                           np.ascontiguousarray(capacity_bps, dtype=np.float64),
                           events.time_ps, events.link, events.capacity_bps, weight, rate_cap_bps,
                           None if triggers is None else triggers.arrays(),
                           bottleneck_first=bottleneck_first)
    n_flows = route_ptr.shape[0] - 1
    horizon = flowsim.INF_PS if until_ps is None else int(until_ps)
    sampling = on_links is not None and sample_ps
    next_sample = int(st.clock[flowsim.C_NOW]) + int(sample_ps) if sampling else flowsim.INF_PS
    prev_bytes = np.zeros_like(st.bytes_acc)
    n_reported = 0
    t0 = time.perf_counter()
    slicer = _Slicer()
    while True:
        stop = min(horizon, next_sample)
        code = flowsim.advance(st, stop, slicer.events, float(tolerance))
        slicer.update(int(st.clock[flowsim.C_EVENTS]))
        n_reported = _report(st.done_order, int(st.clock[flowsim.C_N_DONE]), n_reported, st.finish_ps,
                             st.start_ps, int(st.clock[flowsim.C_NOW]), n_flows, on_flows, progress)
        if code == flowsim.PAUSED and sampling and _next_time(st) > next_sample:
            flowsim.settle_links(st, next_sample)
            on_links(next_sample, st.bytes_acc - prev_bytes)
            prev_bytes = st.bytes_acc.copy()
            next_sample += int(sample_ps)
            if int(st.clock[flowsim.C_N_DONE]) == n_flows:
                sampling = False  # the last flow finished in this interval: nothing more to see
                next_sample = flowsim.INF_PS
            continue
        if code == flowsim.PAUSED and _next_time(st) <= horizon:
            continue  # stopped by the slice size only
        break
    end_ps = int(st.clock[flowsim.C_NOW]) if code != flowsim.PAUSED else horizon
    flowsim.settle_links(st, end_ps)
    if sampling and end_ps > next_sample - int(sample_ps):
        on_links(end_ps, st.bytes_acc - prev_bytes)
    status = {flowsim.DONE: "done", flowsim.DEADLOCK: "deadlock", flowsim.PAUSED: "horizon"}[code]
    if code == flowsim.DEADLOCK and np.any((st.status == 1) & (st.rate_bps > 0)):
        status = "horizon"  # flows still moving would finish after the end of the clock
    c = st.clock
    stats = dict(events=int(c[flowsim.C_EVENTS]), exact_solves=int(c[flowsim.C_SOLVES]),
                 solved_flows=int(c[flowsim.C_SOLVED_FLOWS]), local_solves=int(c[flowsim.C_LOCAL_SOLVES]),
                 bottleneck_tries=int(c[flowsim.C_BN_TRIES]), bottleneck_fails=int(c[flowsim.C_BN_FAILS]),
                 wall_s=time.perf_counter() - t0, tolerance=float(tolerance))
    return EngineOutput(st.finish_ps.copy(), st.bytes_acc.copy(), status, end_ps, stats,
                        start_ps=st.start_ps.copy())


def _report(done_order, n_done, n_reported, finish_ps, start_ps, now_ps, n_flows, on_flows, progress):
    """Hand the flows completed since the last slice to ``on_flows`` and the count to ``progress``;
    returns the new number of reported flows."""
    if on_flows is not None and n_done > n_reported:
        ids = done_order[n_reported:n_done].copy()
        on_flows(ids, finish_ps[ids], start_ps[ids])
    if progress is not None:
        progress(n_done, n_flows, now_ps)
    return n_done


class FlowSession:
    """The flow engine driven step by step from outside (the task-graph runner's engine).

    All flows are declared up front with their routes and sizes and stay pending until
    :meth:`start` schedules them; :meth:`set_capacity` changes link capacities; :meth:`advance`
    runs the engine up to a time and returns the flows that finished. Starting flows at the times
    a batch run would give them yields bit-identical completions. ``bottleneck_first`` as in
    :func:`run_flow_engine`.
    """

    def __init__(self, route_ptr, route_links, capacity_bps, size_bytes, *,
                 tolerance: float = DEFAULT_TOLERANCE, weight=None, flow_group=None,
                 bottleneck_first: bool = True):
        if not (isinstance(tolerance, (int, float)) and np.isfinite(tolerance) and tolerance >= 0):
            raise ConfigError("tolerance", f"must be a number >= 0, got {tolerance!r}")
        n = route_ptr.shape[0] - 1
        empty = np.zeros(0, np.int64)
        self.st = flowsim.new_state(route_ptr, route_links, np.full(n, -1, np.int64),
                                    np.asarray(size_bytes, np.int64),
                                    np.ascontiguousarray(capacity_bps, dtype=np.float64),
                                    empty, empty, np.zeros(0), weight, None, None,
                                    flow_group=None if flow_group is None
                                    else np.asarray(flow_group, np.int64),
                                    bottleneck_first=bottleneck_first)
        self.groups_reported = 0
        self.tolerance = float(tolerance)
        self.n_reported = 0
        self._no_links = empty
        self._no_caps = np.zeros(0)

    @property
    def now_ps(self) -> int:
        return int(self.st.clock[flowsim.C_NOW])

    def next_event_ps(self) -> int:
        """Time of the engine's next event (``flowsim.INF_PS`` when it has nothing to do)."""
        return int(flowsim.next_event_time(self.st))

    def _inject(self, flows, links, caps, at_ps):
        code = flowsim.inject(self.st, flows, links, caps, int(at_ps))
        if code:
            raise ValueError({-1: f"cannot schedule at {at_ps} ps, before the engine's time "
                                  f"{self.now_ps} ps",
                              -2: "one injection time at a time: advance() first",
                              -3: "too many pending injections"}[code])

    def start(self, flows, at_ps: int) -> None:
        """Start pending ``flows`` (flow ids) at ``at_ps`` (>= the engine's time)."""
        flows = np.asarray(flows, np.int64)
        if flows.size and np.any(self.st.status[flows] != 0):
            raise ValueError("start(): a flow can start only once")
        self._inject(flows, self._no_links, self._no_caps, at_ps)

    def resume(self, flows, remaining_bytes, finished_ps, at_ps: int) -> None:
        """Take over pending ``flows`` that ran elsewhere until ``at_ps`` (e.g. alone on their
        links, in a session of their own): a flow with ``finished_ps >= 0`` (no later than
        ``at_ps``) is recorded as finished then; the others start at ``at_ps`` with
        ``remaining_bytes`` (float64) left. Their groups count the finished flows as done."""
        flows = np.asarray(flows, np.int64)
        finished_ps = np.asarray(finished_ps, np.int64)
        remaining_bytes = np.asarray(remaining_bytes, np.float64)
        st = self.st
        if flows.size and np.any(st.status[flows] != 0):
            raise ValueError("resume(): a flow can start only once")
        if np.any(finished_ps > at_ps) or np.any(remaining_bytes[finished_ps < 0] < 0):
            raise ValueError("resume(): a finish time after at_ps, or negative remaining bytes")
        done = finished_ps >= 0
        if done.any():
            order = np.argsort(finished_ps[done], kind="stable")
            f_done, t_done = flows[done][order], finished_ps[done][order]
            st.status[f_done] = 2
            st.finish_ps[f_done] = t_done
            st.rem_bytes[f_done] = 0.0
            n = int(st.clock[flowsim.C_N_DONE])
            st.done_order[n:n + f_done.size] = f_done
            st.clock[flowsim.C_N_DONE] = n + f_done.size
            for f, t in zip(f_done.tolist(), t_done.tolist()):
                g = st.flow_group[f]
                if g >= 0:
                    st.group_left[g] -= 1
                    if st.group_left[g] == 0:
                        st.group_done[st.clock[flowsim.C_N_GROUPS_DONE]] = g
                        st.group_time_ps[g] = t
                        st.clock[flowsim.C_N_GROUPS_DONE] += 1
        st.rem_bytes[flows[~done]] = remaining_bytes[~done]
        self._inject(flows[~done], self._no_links, self._no_caps, at_ps)

    def remaining_bytes(self, at_ps: int) -> np.ndarray:
        """Bytes each flow has left at ``at_ps`` (no earlier than the last event run, no later
        than the next), settled as the engine settles them: 0 once finished, the size if pending.
        Never below 0: a flow whose completion, rounded up to the picosecond, is after ``at_ps``
        can have settled a few 1e-11 bytes below 0 (the engine then finishes it at once)."""
        st = self.st
        rem = st.rem_bytes.copy()
        active = st.status == 1
        dt = (int(at_ps) - st.t_upd_ps[active]).astype(np.float64)
        rem[active] -= st.rate_bps[active] * dt / (8.0 * flowsim.PS_PER_S)
        return np.maximum(rem, 0.0)

    def links_active(self, links) -> bool:
        """Whether an active flow crosses one of ``links``."""
        return bool(np.any(self.st.n_act[links]))

    def set_capacity(self, links, capacity_bps, at_ps: int) -> None:
        """Set ``links`` to ``capacity_bps`` at ``at_ps`` (>= the engine's time)."""
        self._inject(self._no_links[:0], np.asarray(links, np.int64),
                     np.asarray(capacity_bps, np.float64), at_ps)

    def advance(self, until_ps: int, *, stop_at_finish: bool = False):
        """Run every event up to ``until_ps``; returns ``(flow_ids, finish_ps)`` of the flows that
        finished since the last call (int64 arrays, in completion order). With ``stop_at_finish``
        it returns once the events at the first completion's time have run (as PacketSession)."""
        clock = self.st.clock
        if stop_at_finish:
            before = int(clock[flowsim.C_N_DONE])
            while (flowsim.advance(self.st, int(until_ps), 1, self.tolerance) == flowsim.PAUSED
                   and int(clock[flowsim.C_N_DONE]) == before
                   and self.next_event_ps() <= until_ps):
                pass
        else:
            while flowsim.advance(self.st, int(until_ps), _SLICE_EVENTS, self.tolerance) == flowsim.PAUSED:
                if self.next_event_ps() > until_ps:
                    break
        n_done = int(clock[flowsim.C_N_DONE])
        ids = self.st.done_order[self.n_reported:n_done].copy()
        self.n_reported = n_done
        return ids, self.st.finish_ps[ids]

    def advance_groups(self, until_ps: int):
        """Run the engine up to ``until_ps``, stopping once the events at the time a flow group
        (``flow_group`` of the constructor) completes have run; returns ``(groups, time_ps)`` of the
        groups done since the last call (one kernel call per group completion, not per flow)."""
        clock = self.st.clock
        clock[flowsim.C_STOP_ON_GROUP] = 1
        before = int(clock[flowsim.C_N_GROUPS_DONE])
        try:
            while (flowsim.advance(self.st, int(until_ps), 50 * _SLICE_EVENTS, self.tolerance)
                   == flowsim.PAUSED and int(clock[flowsim.C_N_GROUPS_DONE]) == before
                   and self.next_event_ps() <= until_ps):
                pass
        finally:
            clock[flowsim.C_STOP_ON_GROUP] = 0
        done = int(clock[flowsim.C_N_GROUPS_DONE])
        groups = self.st.group_done[self.groups_reported:done].copy()
        self.groups_reported = done
        self.n_reported = int(clock[flowsim.C_N_DONE])
        return groups, self.st.group_time_ps[groups]

    @property
    def finish_ps(self) -> np.ndarray:
        return self.st.finish_ps

    def link_bytes(self) -> np.ndarray:
        """Bytes each link carried up to the engine's current time."""
        flowsim.settle_links(self.st, self.now_ps)
        return self.st.bytes_acc.copy()

    def stats(self) -> dict:
        """Kernel counters: event times run, exact re-solves and the flows they covered, and the
        bottleneck-local attempts (``bottleneck_tries``), of which ``bottleneck_fails`` were not
        kept."""
        clock = self.st.clock
        return {"events": int(clock[flowsim.C_EVENTS]), "solves": int(clock[flowsim.C_SOLVES]),
                "solved_flows": int(clock[flowsim.C_SOLVED_FLOWS]),
                "bottleneck_tries": int(clock[flowsim.C_BN_TRIES]),
                "bottleneck_fails": int(clock[flowsim.C_BN_FAILS])}


def _next_time(st) -> int:
    """Time of the state's next event (INF when none)."""
    return int(flowsim.next_event_time(st))


def run_packet_engine(route_ptr, route_links, reverse_link, capacity_bps, delay_ps, size_bytes,
                      start_ps, events: CapacityEvents, *, params=None, until_ps: int | None = None,
                      on_flows: Callable | None = None, on_links: Callable | None = None,
                      sample_ps: int | None = None, triggers=None,
                      progress: Callable[[int, int, int], None] | None = None) -> EngineOutput:
    """Run the packet-level engine (:mod:`fabricsim.kernels.packetsim`) on validated arrays.

    ``reverse_link int64[L]`` gives each link's opposite direction (ACK paths). ``on_links``
    receives, every ``sample_ps`` until the last flow finishes (the last sample is the first one at
    or after the last completion), the queue length in bytes of every link at that instant; the
    run itself goes on until the idle retransmission timers expire.
    ``stats`` of the output holds the run's counters and ``extra`` the per-flow and per-link
    packet counters.
    """
    from fabricsim.kernels import packetsim

    params = packetsim.PacketParams() if params is None else params
    if route_ptr.shape[0] > 1 and int(np.diff(route_ptr).max()) > 255:
        raise ConfigError("routes", "the packet engine takes routes of at most 255 links")
    ack_links = _reverse_routes(route_ptr, route_links, reverse_link)
    st = packetsim.new_state(route_ptr, route_links, ack_links, start_ps, size_bytes,
                             np.ascontiguousarray(capacity_bps, dtype=np.float64),
                             np.ascontiguousarray(delay_ps, dtype=np.int64),
                             events.time_ps, events.link, events.capacity_bps, params,
                             triggers=None if triggers is None else triggers.arrays())
    n_flows = route_ptr.shape[0] - 1
    horizon = packetsim.INF_PS if until_ps is None else int(until_ps)
    sampling = on_links is not None and sample_ps
    next_sample = int(sample_ps) if sampling else packetsim.INF_PS
    n_reported = 0
    grows = 0
    t0 = time.perf_counter()
    slicer = _Slicer(first=16 * 1024, most=50 * 25 * _SLICE_EVENTS)
    while True:
        code = packetsim.advance(st, min(horizon, next_sample), slicer.events)
        slicer.update(int(st.clock[packetsim.C_EVENTS]))
        n_reported = _report(st.done_order, int(st.clock[packetsim.C_N_DONE]), n_reported,
                             st.fi[:, packetsim.F_FINISH], st.fi[:, packetsim.F_START],
                             int(st.clock[packetsim.C_NOW]), n_flows, on_flows, progress)
        if code == packetsim.GROW:
            st = packetsim.grow(st)
            grows += 1
            continue
        if code == packetsim.PAUSED:
            nxt = int(packetsim.next_event_time(st))
            if sampling and nxt > next_sample:
                on_links(next_sample, st.lk[:, packetsim.L_QBYTES].copy())
                next_sample += int(sample_ps)
                if int(st.clock[packetsim.C_N_DONE]) == n_flows:
                    # the last flow finished in this interval; what remains are the flows' idle
                    # retransmission timers (up to init_rto, 1 s), nothing to sample
                    sampling = False
                    next_sample = packetsim.INF_PS
                continue
            if nxt <= horizon:
                continue
        break
    status = {packetsim.DONE: "done", packetsim.DEADLOCK: "deadlock", packetsim.PAUSED: "horizon"}[code]
    end_ps = int(st.clock[packetsim.C_NOW]) if code != packetsim.PAUSED else horizon
    wall = time.perf_counter() - t0
    c = st.clock
    fi, lk = st.fi, st.lk
    stats = dict(events=int(c[packetsim.C_EVENTS]), data_link_hops=int(c[packetsim.C_DATA_HOPS]),
                 all_link_hops=int(c[packetsim.C_ALL_HOPS]), peak_packets=int(c[packetsim.C_PEAK_PKTS]),
                 pool_grows=grows, state_bytes=packetsim.state_bytes(st), wall_s=wall,
                 retransmissions=int(fi[:, packetsim.F_RETX].sum()),
                 ecn_marks=int(lk[:, packetsim.L_MARKS].sum()), drops=int(lk[:, packetsim.L_DROPS].sum()),
                 peak_queue_bytes=int(lk[:, packetsim.L_PEAK].max()) if lk.shape[0] else 0)
    extra = dict(flow_data_pkts=fi[:, packetsim.F_SENT].copy(), flow_retx=fi[:, packetsim.F_RETX].copy(),
                 flow_marks=fi[:, packetsim.F_MARKS].copy(), flow_drops=fi[:, packetsim.F_DROPS].copy(),
                 link_data_pkts=lk[:, packetsim.L_DATA].copy(), link_retx=lk[:, packetsim.L_RETX].copy(),
                 link_acks=lk[:, packetsim.L_ACKS].copy(), link_marks=lk[:, packetsim.L_MARKS].copy(),
                 link_drops=lk[:, packetsim.L_DROPS].copy(),
                 link_peak_queue_bytes=lk[:, packetsim.L_PEAK].copy())
    return EngineOutput(fi[:, packetsim.F_FINISH].copy(), lk[:, packetsim.L_BYTES].astype(np.float64),
                        status, end_ps, stats, extra, start_ps=fi[:, packetsim.F_START].copy())


def _reverse_routes(route_ptr, route_links, reverse_link):
    """CSR of every route's reverse path (reverse links in reverse order), same ``route_ptr``."""
    lengths = np.diff(route_ptr)
    flow = np.repeat(np.arange(lengths.shape[0]), lengths)
    pos = np.arange(route_links.shape[0]) - route_ptr[flow]
    mirrored = route_ptr[flow] + lengths[flow] - 1 - pos
    return np.ascontiguousarray(reverse_link[route_links[mirrored]], dtype=np.int64)


class PacketSession:
    """The packet engine driven step by step from outside; the interface of :class:`FlowSession`.

    All flows are declared up front with their routes and sizes and stay pending until
    :meth:`start` schedules them; :meth:`set_capacity` changes link capacities; :meth:`advance`
    runs the engine up to a time and returns the flows that finished (packet-pool growth is
    handled on the way). Starting flows and changing capacities at the times a batch run
    (:func:`run_packet_engine`) would have them gives bit-identical results: an injection at ``t``
    runs as that run's timed START / capacity event at ``t`` would, before anything else at ``t``,
    provided the engine has not yet run events at ``t`` (advance to ``t - 1``, then inject at
    ``t``). An injection at the engine's own time after events at that time ran is processed next.

    ``reverse_link int64[L]`` gives each link's opposite direction (ACK paths) and ``delay_ps
    int64[L]`` its propagation delay; :meth:`for_fabric` takes them from a fabric.

    Links at capacity 0: while capacity changes may still come (until :meth:`close_capacity`), a
    flow held by a link at 0 keeps retrying on timeouts (a batch run does so while it has capacity
    events left), and when only such retries are left the session is idle (:meth:`next_event_ps`
    is ``INF_PS``). After :meth:`close_capacity` the batch rule applies: such a flow's timer stops
    for good. Runs in which every link at 0 comes back are exact either way.
    """

    def __init__(self, route_ptr, route_links, reverse_link, capacity_bps, delay_ps, size_bytes, *,
                 params=None, pool_cap: int | None = None, flow_group=None):
        from fabricsim.kernels import packetsim

        self._ps = packetsim
        params = packetsim.PacketParams() if params is None else params
        route_ptr = np.ascontiguousarray(route_ptr, dtype=np.int64)
        route_links = np.ascontiguousarray(route_links, dtype=np.int64)
        n = route_ptr.shape[0] - 1
        if n > 0 and int(np.diff(route_ptr).max()) > 255:
            raise ConfigError("routes", "the packet engine takes routes of at most 255 links")
        size = np.ascontiguousarray(size_bytes, dtype=np.int64)
        if size.shape != (n,):
            raise ValueError(f"size_bytes must have one entry per flow ({n}), got shape {size.shape}")
        # e.g. a whole training iteration in exact mode: refused before allocating, not by NumPy
        check_packet_sizes(size, params)
        ack_links = _reverse_routes(route_ptr, route_links, np.asarray(reverse_link, dtype=np.int64))
        empty = np.zeros(0, np.int64)
        self.st = packetsim.new_state(route_ptr, route_links, ack_links, np.full(n, -1, np.int64), size,
                                      np.ascontiguousarray(capacity_bps, dtype=np.float64),
                                      np.ascontiguousarray(delay_ps, dtype=np.int64),
                                      empty, empty, np.zeros(0), params, pool_cap=pool_cap)
        self.st.clock[packetsim.C_OPEN] = 1
        self.n_reported = 0
        self.flow_group = None if flow_group is None else np.asarray(flow_group, np.int64)
        self.group_left = None if flow_group is None else np.bincount(
            self.flow_group[self.flow_group >= 0]).astype(np.int64)
        self.grows = 0
        self._pending_at = -1
        self._no_links = empty
        self._no_caps = np.zeros(0)

    @classmethod
    def for_fabric(cls, fabric, routes, size_bytes, capacity_bps=None, params=None,
                   pool_cap: int | None = None) -> "PacketSession":
        """A session for ``routes`` (:class:`fabricsim.fabric.Routes` or ``(route_ptr,
        route_links)``) on ``fabric``: its links' reverse directions and delays, and
        ``capacity_bps`` (default the fabric's nominal capacities)."""
        route_ptr, route_links = routes[0], routes[1]
        links = fabric.links
        cap = fabric.link_state() if capacity_bps is None else capacity_bps
        return cls(route_ptr, route_links, links.reverse, cap, links.delay_ps, size_bytes,
                   params=params, pool_cap=pool_cap)

    @property
    def now_ps(self) -> int:
        return int(self.st.clock[self._ps.C_NOW])

    def next_event_ps(self) -> int:
        """Time of the engine's next event; ``INF_PS`` when it has nothing to do (or only
        retries of flows held by a link at capacity 0, which need an injection to progress)."""
        ps = self._ps
        t = int(ps.next_event_time(self.st))
        if t != ps.INF_PS and self.st.clock[ps.C_OPEN] and ps.quiescent(self.st):
            return int(ps.INF_PS)
        return t

    def _pending(self) -> bool:
        c, ps = self.st.clock, self._ps
        return bool(c[ps.C_START_PTR] < c[ps.C_N_TIMED] or c[ps.C_CAP_PTR] < c[ps.C_N_CAPS])

    def _inject(self, flows, links, caps, at_ps):
        at_ps = int(at_ps)
        if self._pending() and at_ps != self._pending_at:
            raise ValueError("one injection time at a time: advance() first")
        while True:
            code = self._ps.inject(self.st, flows, links, caps, at_ps)
            if code != -3:
                break
            self.st = self._ps.grow_events(self.st, links.shape[0])
        if code:
            raise ValueError({-1: f"cannot schedule at {at_ps} ps, before the engine's time "
                                  f"{self.now_ps} ps",
                              -4: "start(): a flow can start only once (and flow ids must be valid)",
                              -5: "set_capacity(): link ids must be valid and capacities finite "
                                  "and >= 0"}[code])
        self._pending_at = at_ps

    def start(self, flows, at_ps: int) -> None:
        """Start pending ``flows`` (flow ids) at ``at_ps`` (>= the engine's time)."""
        flows = np.ascontiguousarray(np.atleast_1d(flows), dtype=np.int64)
        if flows.ndim != 1:
            raise ValueError("start(): flows must be a 1-D array of flow ids")
        self._inject(flows, self._no_links, self._no_caps, at_ps)

    def set_capacity(self, links, capacity_bps, at_ps: int) -> None:
        """Set ``links`` to ``capacity_bps`` at ``at_ps`` (>= the engine's time)."""
        if not self.st.clock[self._ps.C_OPEN]:
            raise ValueError("set_capacity() after close_capacity()")
        links = np.ascontiguousarray(np.atleast_1d(links), dtype=np.int64)
        caps = np.ascontiguousarray(np.atleast_1d(capacity_bps), dtype=np.float64)
        if links.shape != caps.shape or links.ndim != 1:
            raise ValueError("set_capacity(): links and capacity_bps must have equal lengths")
        self._inject(self._no_links, links, caps, at_ps)

    def close_capacity(self) -> None:
        """Declare that no capacity change will come any more: from now on a flow held by a link
        at capacity 0 with no capacity event pending stops retrying (the batch run's rule)."""
        self.st.clock[self._ps.C_OPEN] = 0

    def advance(self, until_ps: int, *, stop_at_finish: bool = False):
        """Run every event up to ``until_ps``; returns ``(flow_ids, finish_ps)`` of the flows that
        finished since the last call (int64 arrays, in completion order).

        With ``stop_at_finish`` it returns as soon as every event at the time of the first
        completion has run (``now_ps`` is then that time), so that flows depending on it can be
        started at that very instant."""
        ps = self._ps
        first = self.n_reported
        lim = int(until_ps)
        stop = bool(stop_at_finish)
        while True:
            code = ps.advance(self.st, lim, _SLICE_EVENTS * 25, stop)
            if code == ps.GROW:
                self.st = ps.grow(self.st)
                self.grows += 1
                continue
            if stop and self.st.clock[ps.C_N_DONE] > first:
                lim = min(lim, int(self.st.fi[self.st.done_order[first], ps.F_FINISH]))
            if code == ps.PAUSED and int(ps.next_event_time(self.st)) <= lim:
                continue  # stopped by the slice size only
            break
        n_done = int(self.st.clock[ps.C_N_DONE])
        ids = self.st.done_order[self.n_reported:n_done].copy()
        self.n_reported = n_done
        return ids, self.st.fi[ids, ps.F_FINISH]

    def advance_groups(self, until_ps: int):
        """As :meth:`FlowSession.advance_groups`: run up to ``until_ps``, stopping at the first
        completion instant at which a flow group completes; ``(groups, time_ps)`` of those done."""
        groups, times = [], []
        while not groups:
            ids, fin = self.advance(until_ps, stop_at_finish=True)
            for f, tf in zip(ids.tolist(), fin.tolist()):
                g = int(self.flow_group[f])
                if g >= 0:
                    self.group_left[g] -= 1
                    if self.group_left[g] == 0:
                        groups.append(g)
                        times.append(tf)
            if not ids.size:  # every event up to until_ps has run
                break
        return np.array(groups, np.int64), np.array(times, np.int64)

    @property
    def finish_ps(self) -> np.ndarray:
        """``int64[F]`` finish time of every flow, -1 while unfinished."""
        return self.st.fi[:, self._ps.F_FINISH]

    def link_bytes(self) -> np.ndarray:
        """Bytes each link carried (serialized, headers included) up to the engine's time."""
        return self.st.lk[:, self._ps.L_BYTES].astype(np.float64)

    def queue_bytes(self) -> np.ndarray:
        """Bytes queued at every link now (``int64[L]``)."""
        return self.st.lk[:, self._ps.L_QBYTES].copy()

    def stats(self) -> dict:
        """Counters so far: events, data packets sent, retransmissions, ECN marks, drops, ..."""
        ps, c, fi, lk = self._ps, self.st.clock, self.st.fi, self.st.lk
        return dict(events=int(c[ps.C_EVENTS]), data_packets=int(fi[:, ps.F_SENT].sum()),
                    retransmissions=int(fi[:, ps.F_RETX].sum()),
                    ecn_marks=int(lk[:, ps.L_MARKS].sum()), drops=int(lk[:, ps.L_DROPS].sum()),
                    data_link_hops=int(c[ps.C_DATA_HOPS]), all_link_hops=int(c[ps.C_ALL_HOPS]),
                    peak_packets=int(c[ps.C_PEAK_PKTS]), pool_grows=self.grows,
                    state_bytes=ps.state_bytes(self.st),
                    peak_queue_bytes=int(lk[:, ps.L_PEAK].max()) if lk.shape[0] else 0)
