"""The public entry point for simulating a batch of flows on a fabric: :func:`simulate_flows`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from fabricsim.engine import (DEFAULT_TOLERANCE, HORIZON_PS, MAX_FLOW_BYTES, MAX_FLOW_BYTES_WHY,
                              as_capacity_events, check_packet_sizes, check_time_range, format_bytes,
                              format_duration_ps, run_flow_engine, run_packet_engine)
from fabricsim.errors import ConfigError, require
from fabricsim.fabric import LINK_KINDS, PATH_KINDS, Fabric, Routes

__all__ = ["FlowResult", "simulate_flows", "ENGINES"]

ENGINES = ("flow", "packet")


@dataclass
class FlowResult:
    """Result of :func:`simulate_flows`.

    Per flow ``[F]``: ``src``, ``dst`` (host indices), ``size_bytes``, ``start_ps``, ``finish_ps``
    (int64, -1 if the flow did not finish) and the ``routes`` taken. Per link ``[L]``:
    ``link_bytes`` (bytes carried). ``status`` is ``done``, ``deadlock`` or ``horizon``.
    ``trace_files``: the trace files this run wrote (paths; empty without a trace).
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
    trace_files: tuple = ()

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


def _int_array(values, name, n, minimum=0, maximum=None, why=""):
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
        if maximum is not None:  # before the int64 conversion, which would wrap
            bad = np.flatnonzero(arr > maximum)
            if bad.size:
                raise ConfigError(name, f"must be <= {maximum:,}{why}, got {float(arr[bad[0]]):,.0f} "
                                  f"for flow {bad[0]}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def simulate_flows(fabric: Fabric, src, dst, size_bytes, start_ps=None, *, engine: str = "flow",
                   seed: int = 0, capacity_events=None, trace=None,
                   tolerance: float = DEFAULT_TOLERANCE, until_ps: int | None = None,
                   progress=None, scenario: dict | None = None, packet_params=None,
                   triggers=None, circuits=None, sample_ps: int | None = None) -> FlowResult:
    """Simulate flows ``src[i] -> dst[i]`` of ``size_bytes[i]`` starting at ``start_ps[i]``.

    Parameters
    ----------
    fabric : Fabric
        The fabric (see :mod:`fabricsim.fabric`); flows use its host indices 0 .. H-1.
    src, dst : int arrays [F]
        Source and destination hosts of each flow (distinct).
    size_bytes : int array [F] or scalar
        Bytes to deliver (0 .. 1e15 each, see :mod:`fabricsim.engine` for the bounds).
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
        Directory (or open trace) receiving ``flows.arrows`` and ``links.h5``. A directory is
        opened once every input is validated; the run owns it: the files of a previous run there
        (``summary.json``, ``flows.arrows``, ``links.h5``) are removed first.
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
    sample_ps : int, optional
        With ``trace`` a directory: write ``links.h5``, one sample every ``sample_ps`` (link
        utilization, or queue lengths with the packet engine) until the last flow finishes.
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
    size = _int_array(size_bytes, "size_bytes", n, maximum=MAX_FLOW_BYTES, why=f" ({MAX_FLOW_BYTES_WHY})")
    start = _int_array(0 if start_ps is None else start_ps, "start_ps", n,
                       minimum=0 if triggers is None else -1, maximum=HORIZON_PS - 1,
                       why=" (the end of the simulated clock, int64 picoseconds)")
    if triggers is not None:
        triggers.validate(start)
    if sample_ps is not None:
        require(isinstance(trace, (str, os.PathLike)), "sample_ps",
                "applies only with trace a directory (a RunTrace has its own sample_ps)")
        require(isinstance(sample_ps, (int, np.integer)) and not isinstance(sample_ps, bool)
                and sample_ps >= 1, "sample_ps", f"must be an integer >= 1 (picoseconds), got {sample_ps!r}")
    routes = fabric.route(src_a, dst_a, seed=int(seed), circuits=circuits)
    events = as_capacity_events(capacity_events, fabric.n_links)
    lower_ps = check_time_range(routes.route_ptr, routes.route_links, size, start, fabric.link_state(),
                                events, until_ps=until_ps,
                                describe_link=lambda l: LINK_KINDS[fabric.links.kind[l]])
    if engine == "packet":
        from fabricsim.kernels.packetsim import PacketParams

        check_packet_sizes(size, PacketParams() if packet_params is None else packet_params)
    if sample_ps is not None:
        _check_sample_count(trace, int(sample_ps), lower_ps, fabric.n_links)
    elif trace is not None and not isinstance(trace, (str, os.PathLike)) \
            and isinstance(trace, _trace_type()) and trace.sample_ps:
        _check_sample_count(trace.out_dir, trace.sample_ps, lower_ps, fabric.n_links)

    sink = _open_trace(trace, fabric, scenario, dict(engine=engine, seed=int(seed), flows=n,
                                                     tolerance=tolerance), sample_ps, n)
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
                      out.status, out.end_ps, out.stats, out.extra,
                      trace_files=tuple(sink.files) if sink is not None else ())


def _check_sample_count(out_dir, sample_ps: int, lower_ps: float, n_links: int) -> None:
    """Refuse a sampling interval whose ``links.h5`` cannot fit the free disk space: the run lasts
    at least ``lower_ps`` (:func:`fabricsim.engine.check_time_range`), one float32 per link and
    sample."""
    import shutil

    samples = lower_ps / sample_ps
    need = samples * (4.0 * n_links + 8.0)
    where = os.path.abspath(os.fspath(out_dir))
    while not os.path.exists(where):
        where = os.path.dirname(where)
    free = shutil.disk_usage(where).free
    if need > free:
        raise ConfigError("sample_ps", f"the run lasts at least {format_duration_ps(lower_ps)} of "
                          f"simulated time: {samples:,.0f} samples of {n_links:,} links need about "
                          f"{format_bytes(need)} in links.h5; the disk has {format_bytes(free)} free")


def _trace_type():
    from fabricsim.traces import RunTrace

    return RunTrace


def _open_trace(trace, fabric, scenario, run_info, sample_ps, n_flows):
    if trace is None:
        return None
    RunTrace = _trace_type()
    if isinstance(trace, RunTrace):
        return trace
    if isinstance(trace, (str, os.PathLike)):
        resolved = dict(scenario or {})
        resolved.setdefault("fabric", fabric.params)
        resolved.setdefault("run", run_info)
        return RunTrace(trace, fabric=fabric, scenario=resolved, sample_ps=sample_ps, flows=n_flows)
    raise ConfigError("trace", f"must be a directory path or a fabricsim.traces.RunTrace, got {type(trace).__name__}")
