"""Run a traffic scenario (a :class:`fabricsim.config.Scenario`) and summarize it."""

from __future__ import annotations

import json
import os

import numpy as np

from fabricsim import traffic as traffic_mod
from fabricsim.config import Scenario
from fabricsim.simulate import FlowResult, simulate_flows
from fabricsim.traces.schema import SCHEMA_VERSION, _jsonable, replaced_on_success

__all__ = ["run_scenario", "summarize"]


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
    to ``out_dir`` (when given); returns the result and its summary."""
    src, dst, size, start, triggers = traffic_mod.from_config(scenario.traffic,
                                                              scenario.fabric.n_hosts,
                                                              scenario.base_dir)
    fabric = scenario.fabric.build_fabric(src, dst, size)
    resolved = scenario.to_dict()
    resolved["fabric_resolved"] = fabric.params
    trace = None
    if out_dir is not None:
        from fabricsim.traces import RunTrace  # PyArrow and h5py only when traces are written

        sample_ps = int(round(scenario.run.sample_us * 1e6)) or None
        trace = RunTrace(out_dir, fabric=fabric, scenario=resolved, sample_ps=sample_ps)
    try:
        result = simulate_flows(fabric, src, dst, size, start, engine=scenario.run.engine,
                                seed=scenario.run.seed, tolerance=scenario.run.tolerance,
                                trace=trace, progress=progress, scenario=resolved,
                                packet_params=scenario.packet.params(), triggers=triggers)
    finally:
        if trace is not None:
            trace.close()
    summary = summarize(result, fabric.n_hosts)
    summary["fabric"] = fabric.summary()
    if out_dir is not None:
        doc = {"schema_version": SCHEMA_VERSION, "scenario": resolved, "summary": summary,
               "files": {"flows": "flows.arrows", "links": "links.h5" if trace.links_path else None}}
        path = os.path.join(out_dir, "summary.json")
        with replaced_on_success(path) as tmp, open(tmp, "w") as f:
            json.dump(_jsonable(doc), f, indent=2, sort_keys=True)
    return result, summary
