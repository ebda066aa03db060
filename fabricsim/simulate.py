"""The public entry point for simulating a batch of flows on a fabric: :func:`simulate_flows`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from fabricsim.engine import DEFAULT_TOLERANCE, as_capacity_events, run_flow_engine, run_packet_engine
from fabricsim.errors import ConfigError, require
from fabricsim.fabric import PATH_KINDS, Fabric, Routes

__all__ = ["FlowResult", "simulate_flows", "ENGINES"]

ENGINES = ("flow", "packet")


@dataclass
class FlowResult:
    """Result of :func:`simulate_flows`.

    Per flow ``[F]``: ``src``, ``dst`` (host indices), ``size_bytes``, ``start_ps``, ``finish_ps``
    (int64, -1 if the flow did not finish) and the ``routes`` taken. Per link ``[L]``:
    ``link_bytes`` (bytes carried). ``status`` is ``done``, ``deadlock`` or ``horizon``.
    """

    src: np.ndarray
    dst: np.ndarray
    size_bytes: np.ndarray
    start_ps: np.ndarray
    finish_ps: np.ndarray
    link_bytes: np.ndarray
    routes: Routes
    engine: str
    status: str
    end_ps: int
    stats: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def fct_ps(self) -> np.ndarray:
        """Flow completion times (finish - start), int64 ps; -1 for unfinished flows."""
        return np.where(self.finish_ps >= 0, self.finish_ps - self.start_ps, -1)

    @property
    def completion_ps(self) -> int:
        """Finish time of the last flow (ps); -1 if some flow did not finish."""
        if self.finish_ps.size == 0:
            return 0
        return -1 if np.any(self.finish_ps < 0) else int(self.finish_ps.max())

    def to_pandas(self):
        """One row per flow (needs pandas)."""
        import pandas as pd

        return pd.DataFrame({
            "flow_id": np.arange(self.src.shape[0]), "src": self.src, "dst": self.dst,
            "size_bytes": self.size_bytes, "start_ps": self.start_ps, "finish_ps": self.finish_ps,
            "fct_ps": self.fct_ps,
            "path_kind": pd.Categorical.from_codes(self.routes.path_kind, categories=list(PATH_KINDS)),
        })


def _int_array(values, name, n, minimum=0):
    arr = np.asarray(values)
    if arr.ndim == 0:
        arr = np.full(n, arr)
    require(arr.shape == (n,), name, f"must have one value per flow ({n}), got shape {arr.shape}")
    if arr.size:
        require(np.issubdtype(arr.dtype, np.number) and not np.issubdtype(arr.dtype, np.complexfloating),
                name, f"must be numbers, got dtype {arr.dtype}")
        require(bool(np.all(np.isfinite(arr))) and bool(np.all(arr == np.round(arr))), name,
                "must be whole numbers")
        bad = np.flatnonzero(arr < minimum)
        require(bad.size == 0, name,
                f"must be >= {minimum}, got {arr[bad[0]] if bad.size else ''} for flow {bad[0] if bad.size else ''}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def simulate_flows(fabric: Fabric, src, dst, size_bytes, start_ps=None, *, engine: str = "flow",
                   seed: int = 0, capacity_events=None, trace=None,
                   tolerance: float = DEFAULT_TOLERANCE, until_ps: int | None = None,
                   progress=None, scenario: dict | None = None, packet_params=None,
                   triggers=None, circuits=None) -> FlowResult:
    """Simulate flows ``src[i] -> dst[i]`` of ``size_bytes[i]`` starting at ``start_ps[i]``.

    Parameters
    ----------
    fabric : Fabric
        The fabric (see :mod:`fabricsim.fabric`); flows use its host indices 0 .. H-1.
    src, dst : int arrays [F]
        Source and destination hosts of each flow (distinct).
    size_bytes : int array [F] or scalar
        Bytes to deliver (>= 0).
    start_ps : int array [F] or scalar, optional
        Arrival times in picoseconds (default 0).
    engine : str
        ``"flow"``: the fluid, max-min fair engine; ``"packet"``: the packet-level engine (queues,
        pipes, DCTCP; see :mod:`fabricsim.kernels.packetsim`).
    seed : int
        Seed of the ECMP path choice.
    capacity_events : optional
        Link-capacity changes ``(time_ps, link, capacity_bps)``: rows, a tuple of three arrays or a
        :class:`fabricsim.engine.CapacityEvents`. A link at capacity 0 holds its flows.
    trace : str, os.PathLike or fabricsim.traces.RunTrace, optional
        Directory (or open trace) receiving ``flows.arrows`` and ``links.h5``.
    tolerance : float
        Flow engine: how stale rates may get after a departure, as a fraction of the departed
        flow's age, before the exact max-min re-solve (0 = exact after every event).
    until_ps : int, optional
        Stop at this time; unfinished flows get ``finish_ps = -1`` and status ``horizon``.
    progress : callable, optional
        ``progress(done, total, now_ps)``, called as the run goes.
    scenario : dict, optional
        The resolved scenario to record in the trace metadata.
    packet_params : fabricsim.kernels.packetsim.PacketParams, optional
        Packet engine constants (MTU, buffer, ECN threshold, windows, RTO).
    triggers : fabricsim.engine.Triggers, optional
        Flows started by other flows' completion; those flows have ``start_ps = -1``.
    circuits : int array [regions, R, R], optional
        MixNet: the circuit configuration the flows are routed for (pairs with a circuit use it,
        the others the EPS); default the fabric's initial one. Other fabrics ignore it.
    """
    require(isinstance(fabric, Fabric), "fabric", f"must be a fabricsim Fabric, got {type(fabric).__name__}")
    require(engine in ENGINES, "engine", f"must be one of {', '.join(ENGINES)}, got {engine!r}")
    require(isinstance(seed, (int, np.integer)) and not isinstance(seed, bool), "seed",
            f"must be an integer, got {seed!r}")
    src_a = np.asarray(src)
    require(src_a.ndim == 1, "src", f"must be a 1-D array, got shape {src_a.shape}")
    n = src_a.shape[0]
    src_a = _int_array(src_a, "src", n)
    dst_a = _int_array(dst, "dst", n)
    size = _int_array(size_bytes, "size_bytes", n)
    start = _int_array(0 if start_ps is None else start_ps, "start_ps", n,
                       minimum=0 if triggers is None else -1)
    if triggers is not None:
        triggers.validate(start)
    routes = fabric.route(src_a, dst_a, seed=int(seed), circuits=circuits)
    events = as_capacity_events(capacity_events, fabric.n_links)

    sink = _open_trace(trace, fabric, scenario, dict(engine=engine, seed=int(seed), flows=n,
                                                     tolerance=tolerance))
    try:
        on_flows = on_links = None
        sample_ps = None
        if sink is not None:
            def on_flows(ids, finish, started):
                sink.write_flows(ids, src_a[ids], dst_a[ids], size[ids], started, finish,
                                 routes.path_kind[ids])
            if sink.sample_ps:
                sample_ps = sink.sample_ps
                on_links = sink.write_link_sample if engine == "flow" else sink.write_queue_sample
        if engine == "flow":
            out = run_flow_engine(routes.route_ptr, routes.route_links, fabric.link_state(), size,
                                  start, events, tolerance=tolerance, until_ps=until_ps,
                                  on_flows=on_flows, on_links=on_links, sample_ps=sample_ps,
                                  triggers=triggers, progress=progress)
        else:
            links = fabric.links
            out = run_packet_engine(routes.route_ptr, routes.route_links, links.reverse,
                                    fabric.link_state(), links.delay_ps, size, start, events,
                                    params=packet_params, until_ps=until_ps, on_flows=on_flows,
                                    on_links=on_links, sample_ps=sample_ps, triggers=triggers,
                                    progress=progress)
        if sink is not None:
            unfinished = np.flatnonzero(out.finish_ps < 0)
            if unfinished.size:
                on_flows(unfinished, out.finish_ps[unfinished], out.start_ps[unfinished])
    finally:
        if sink is not None and not isinstance(trace, _trace_type()):
            sink.close()
    if out.start_ps is not None:
        start = out.start_ps
    return FlowResult(src_a, dst_a, size, start, out.finish_ps, out.link_bytes, routes, engine,
                      out.status, out.end_ps, out.stats, out.extra)


def _trace_type():
    from fabricsim.traces import RunTrace

    return RunTrace


def _open_trace(trace, fabric, scenario, run_info):
    if trace is None:
        return None
    RunTrace = _trace_type()
    if isinstance(trace, RunTrace):
        return trace
    if isinstance(trace, (str, os.PathLike)):
        resolved = dict(scenario or {})
        resolved.setdefault("fabric", fabric.params)
        resolved.setdefault("run", run_info)
        return RunTrace(trace, fabric=fabric, scenario=resolved)
    raise ConfigError("trace", f"must be a directory path or a fabricsim.traces.RunTrace, got {type(trace).__name__}")
