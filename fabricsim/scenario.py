"""Run a traffic scenario (a :class:`fabricsim.config.Scenario`) and summarize it.

:func:`run_scenario` checks everything it can before it builds or writes anything: the scenario's
memory needs (:func:`check_memory`), then the fabric (built before the traffic unless it is built
for the traffic), the traffic and the flows; only then does it open the output directory, which
the run owns (a previous run's files are removed first) and where ``summary.json`` comes last.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np

from fabricsim import traffic as traffic_mod
from fabricsim.config import Scenario
from fabricsim.engine import available_memory_bytes, format_bytes
from fabricsim.errors import ConfigError
from fabricsim.simulate import FlowResult, simulate_flows
from fabricsim.traces.schema import SCHEMA_VERSION, _jsonable, replaced_on_success

__all__ = ["run_scenario", "summarize", "check_memory", "estimate_memory_bytes"]

#: Peak memory per flow (bytes), measured on all-to-alls of a million flows: traffic, routes,
#: engine state and results. The packet engine adds one byte per packet (the receive bitmap).
_FLOW_BYTES = {"flow": 400, "packet": 800}


def estimate_memory_bytes(scenario: Scenario) -> dict:
    """About the peak memory of a scenario (bytes), before anything is built: ``fabric`` (building
    it), ``flows`` (traffic, routes, engine state), ``packets`` (the packet engine's receive
    bitmap, one byte per packet) and the flow count ``n_flows`` (None when a file gives the flows;
    a ``matrix`` file still counts under ``flows``: it is read whole, hosts x hosts)."""
    fab, traffic, engine = scenario.fabric, scenario.traffic, scenario.run.engine
    hosts = fab.n_hosts
    n_flows = traffic.flow_count(hosts)
    flows = packets = 0.0
    if n_flows is not None:
        flows = n_flows * _FLOW_BYTES[engine]
        if engine == "packet":
            mss = scenario.packet.mtu_bytes - scenario.packet.hdr_bytes
            packets = n_flows * np.ceil(traffic.mean_size_bytes() / mss)
    elif traffic.pattern == "matrix":
        flows = 10.0 * hosts * hosts  # the float64 matrix and the boolean masks over it
    return {"fabric": fab.estimate_bytes(), "flows": int(flows), "packets": int(packets),
            "n_flows": n_flows}


def check_memory(scenario: Scenario, available_bytes: int | None = None) -> None:
    """Refuse a scenario whose arrays cannot fit in this machine's memory, before anything is
    built: :class:`ConfigError` naming the field behind the largest part, with the estimate."""
    est = estimate_memory_bytes(scenario)
    total = est["fabric"] + est["flows"] + est["packets"]
    have = available_memory_bytes() if available_bytes is None else available_bytes
    if total <= have:
        return
    fab, traffic = scenario.fabric, scenario.traffic
    n_flows = est["n_flows"]
    what = f"{fab.n_hosts:,} hosts" if fab.builder == "fat_tree" else \
        f"{fab.servers:,} servers ({fab.n_hosts:,} GPUs)"
    need = f"about {format_bytes(total)}"
    machine = f"this machine has {format_bytes(have)} available"
    largest = max(("fabric", "flows", "packets"), key=lambda k: est[k])
    if largest == "packets":
        field = "traffic.size_bytes" if traffic.size_bytes is not None else "traffic.size_max_bytes"
        raise ConfigError(field, f"{n_flows:,} flows of {traffic.mean_size_bytes():,.0f} bytes on average "
                                 f"make {est['packets']:,} packets, one byte each in the packet engine's "
                                 f"receive bitmap: {need} with the fabric; {machine}")
    if largest == "fabric" or traffic.count_field == "fabric.hosts":
        flows_text = f"its {n_flows:,} flows" if n_flows is not None else "its flows"
        raise ConfigError(fab.size_field, f"{what} need {need} for the fabric ({fab.estimate_links():,} "
                                          f"links) and {flows_text}; {machine}")
    if n_flows is None:
        raise ConfigError(traffic.count_field, f"a {traffic.pattern} over {what} needs {need}; {machine}")
    raise ConfigError(traffic.count_field, f"{traffic.pattern} over {what} makes {n_flows:,} flows, which "
                                           f"need {need} with the fabric; {machine}")


def summarize(result: FlowResult, n_hosts: int) -> dict:
    """Headline figures of a run: completion time, per-host throughput, FCT percentiles."""
    done = result.finish_ps >= 0
    fct = result.fct_ps[done]
    # Per-host throughput: bytes a host sent / time from its first start to its last finish.
    sent = np.bincount(result.src[done], weights=result.size_bytes[done], minlength=n_hosts)
    first = np.full(n_hosts, np.iinfo(np.int64).max)
    last = np.full(n_hosts, -1)
    np.minimum.at(first, result.src[done], result.start_ps[done])
    np.maximum.at(last, result.src[done], result.finish_ps[done])
    active = (last > first) & (sent > 0)
    gbps = sent[active] * 8 / ((last[active] - first[active]) * 1e-12) / 1e9
    return {
        "status": result.status,
        "flows": int(result.src.shape[0]),
        "flows_finished": int(done.sum()),
        "bytes": int(result.size_bytes.sum()),
        "completion_ps": int(result.finish_ps[done].max()) if done.any() else -1,
        "fct_p50_ps": float(np.percentile(fct, 50)) if fct.size else None,
        "fct_p99_ps": float(np.percentile(fct, 99)) if fct.size else None,
        "host_gbps_mean": float(gbps.mean()) if gbps.size else None,
        "host_gbps_min": float(gbps.min()) if gbps.size else None,
        "senders": int(active.sum()),
        "engine_stats": result.stats,
    }


def run_scenario(scenario: Scenario, out_dir=None, progress=None) -> tuple[FlowResult, dict]:
    """Build the fabric and traffic of ``scenario``, simulate, write traces and ``summary.json``
    to ``out_dir`` (when given); returns the result and its summary.

    Bad input raises :class:`ConfigError` before ``out_dir`` is created or touched. The run owns
    ``out_dir``: the files of a previous run there are removed when the traces open, and
    ``summary.json`` is written last (a run that did not finish leaves none).
    ``result.trace_files`` lists the traces this run wrote.
    """
    if scenario.packet_keys is not None and scenario.run.engine != "packet":
        keys = f" ({', '.join(scenario.packet_keys)})" if scenario.packet_keys else ""
        warnings.warn(f"packet: the [packet] table{keys} only applies with run.engine = \"packet\"; "
                      "this run uses the flow engine", UserWarning, stacklevel=2)
    check_memory(scenario)
    fabric = None if scenario.fabric.needs_traffic else scenario.fabric.build_fabric()
    src, dst, size, start, triggers = traffic_mod.from_config(scenario.traffic,
                                                              scenario.fabric.n_hosts,
                                                              scenario.base_dir)
    if fabric is None:
        fabric = scenario.fabric.build_fabric(src, dst, size)
    resolved = scenario.to_dict()
    resolved["fabric_resolved"] = fabric.params
    sample_ps = scenario.run.sample_ps if out_dir is not None else None
    try:
        result = simulate_flows(fabric, src, dst, size, start, engine=scenario.run.engine,
                                seed=scenario.run.seed, tolerance=scenario.run.tolerance,
                                trace=out_dir, sample_ps=sample_ps, progress=progress,
                                scenario=resolved, packet_params=scenario.packet.params(),
                                triggers=triggers)
    except ConfigError as exc:
        if exc.field == "sample_ps":
            raise ConfigError("run.sample_us", exc.message) from None
        if exc.field == "size_bytes":  # the sizes come from the [traffic] table
            t = scenario.traffic
            field = ("traffic.file" if t.file is not None else
                     "traffic.size_bytes" if t.size_bytes is not None else "traffic.size_max_bytes")
            raise ConfigError(field, exc.message) from None
        raise
    summary = summarize(result, fabric.n_hosts)
    summary["fabric"] = fabric.summary()
    if out_dir is not None:
        names = [os.path.basename(p) for p in result.trace_files]
        doc = {"schema_version": SCHEMA_VERSION, "scenario": resolved, "summary": summary,
               "files": {"flows": "flows.arrows", "links": "links.h5" if "links.h5" in names else None}}
        path = os.path.join(out_dir, "summary.json")
        with replaced_on_success(path) as tmp, open(tmp, "w") as f:
            json.dump(_jsonable(doc), f, indent=2, sort_keys=True)
    return result, summary
