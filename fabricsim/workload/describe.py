"""A summary of one iteration's workload (``fabricsim workload describe``)."""

from __future__ import annotations

import time

import numpy as np

from fabricsim.workload.taskgraph import BWD, COMPUTE, FWD, OPS, WorkloadConfig, build_iteration

__all__ = ["describe"]


def describe(config: WorkloadConfig, graph=None) -> dict:
    """JSON-able summary: bytes per iteration by parallelism (``tp``, ``ep``, ``dp``, ``pp``) and by
    link type, each stage's compute time on its busiest GPU, the task count and the critical path
    with infinitely fast communication (``compute_time_s``)."""
    t0 = time.perf_counter()
    if graph is None:
        graph = build_iteration(config)
    build_s = time.perf_counter() - t0
    pl = graph.placement
    by_par = graph.bytes_by_parallelism()
    total = sum(by_par.values())
    compute = graph.kind == COMPUTE
    per_gpu = {ph: np.bincount(graph.gpu[compute & (graph.phase == ph)],
                               weights=graph.duration_ps[compute & (graph.phase == ph)],
                               minlength=pl.gpus) for ph in (FWD, BWD)}
    stages = []
    for s in range(pl.pp):
        on = pl.stage == s
        busiest = int(np.argmax((per_gpu[FWD] + per_gpu[BWD]) * on))
        stages.append({"stage": s, "layers": pl.stage_layers[s],
                       "busiest_gpu": busiest,
                       "fwd_s": float(per_gpu[FWD][busiest]) * 1e-12,
                       "bwd_s": float(per_gpu[BWD][busiest]) * 1e-12})
    ops = np.bincount(graph.op, minlength=len(OPS))
    return {
        "model": graph.placement.model.name,
        "config": config.to_dict(),
        "placement": pl.describe(),
        "micro_batches": config.n_micro_batches,
        "bytes_by_parallelism": by_par,
        "bytes_share": {k: (v / total if total else 0.0) for k, v in by_par.items()},
        "bytes_by_link": graph.bytes_by_link(),
        "compute_per_stage": stages,
        "compute_time_s": graph.critical_path_ps() * 1e-12,
        "tasks": graph.n_tasks,
        "tasks_by_op": {name: int(n) for name, n in zip(OPS, ops) if n},
        "dependencies": int(graph.pred.size),
        "gpu_profile": graph.compute.describe(),
        "build_s": build_s,
    }
