"""One experiment point: a model and its parallelism on a fabric at a link speed, simulated for one
training iteration, with its network cost. The unit that ``fabricsim reproduce`` and sweeps run.

:class:`Point` holds every parameter (JSON-able, hashable into a stable id); :func:`run_point`
builds the workload's task graph and the fabric, runs the iteration (:func:`fabricsim.runner.
run_iteration`) and returns one flat result row (a dict of scalars: the parameters, the iteration
time, its breakdown, the network cost).

Fabric names (as in the results): ``fattree`` (non-blocking fat-tree, one NIC of B per GPU),
``oversub`` (3:1 oversubscribed fat-tree, the ``ports`` build), ``railopt`` (rail-optimized,
the fat-tree build), ``topoopt`` (flat degree-8 direct-connect topology built once from the
iteration's traffic), ``mixnet`` (EPS fat-tree at (8 - alpha) B per server plus regional OCS of
alpha circuits per server, one region per EP group, controller policy ``policy``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Optional

from fabricsim.errors import require
from fabricsim.profiles import GLOBAL_BATCH_RELEASED, resolve_switches, switch_names

__all__ = ["Point", "run_point", "FABRICS", "PAPER_PARALLELISM", "point_id", "COST_NAMES"]

FABRICS = ("fattree", "oversub", "railopt", "topoopt", "mixnet")
COST_NAMES = {"fattree": "fat_tree", "oversub": "fat_tree_3to1", "railopt": "rail_optimized",
              "topoopt": "topoopt", "mixnet": "mixnet"}

#: The paper's parallel configurations at 1024 GPUs (reference section 6.2): tp, ep, pp (dp is
#: what is left), and the layer split.
PAPER_PARALLELISM = {
    "mixtral-8x22b": dict(tp=8, ep=8, pp=8),
    "mixtral-8x7b": dict(tp=4, ep=8, pp=4),
    "qwen-moe": dict(tp=1, ep=16, pp=4),
    "llama-moe": dict(tp=1, ep=16, pp=4),
    "deepseek-r1": dict(tp=1, ep=64, pp=16, layer_split="balanced"),
}


@dataclass(frozen=True)
class Point:
    """All parameters of one run. ``dp`` defaults to what the GPU count leaves; ``region_servers``
    (MixNet) to one EP group (``ep * tp / 8``); ``micro_batches`` to the ``micro_batches_rule``
    switch (``global_batch / micro_batch / dp`` or ``pp``).

    ``profile`` (``released`` or ``physical``, :mod:`fabricsim.profiles`) sets every modelling
    switch left at None (``mode``, ``a2a_sizing``, ``a2a_counts``, ``compute_pacing``,
    ``micro_batches_rule``, ``nic_pooling``, ``dp_precision``, ``dp_experts``, ``qwen``,
    ``qwen_shared``, ``deepseek_attention``, ``packet_size``, ``nvlink``); :attr:`switches` holds
    the resolved values, which :meth:`to_dict` and the results record."""

    model: str = "mixtral-8x7b"
    fabric: str = "fattree"
    link_gbps: float = 100.0
    gpus: int = 128
    tp: int = 4
    ep: int = 8
    pp: int = 4
    dp: Optional[int] = None
    micro_batch: int = 8
    seq_len: int = 4096
    micro_batches: Optional[int] = None
    layer_split: str = "even"
    gating: str = "reference"
    gating_params: dict = field(default_factory=dict)
    gpu_profile: str = "a100"
    alpha: int = 6
    delay_ms: float = 25.0
    policy: str = "oracle-blocking"
    variant: str = "reference"
    region_servers: Optional[int] = None
    engine: str = "flow"
    seed: int = 0
    tolerance: float = 0.0  # flow engine staleness bound (0: exact max-min after every event)
    failures: tuple = ()  # e.g. ("nic:3:eps", "gpu:17", "server:5"): fabricsim.failures
    global_batch: int = GLOBAL_BATCH_RELEASED  # sequences, for micro_batches_rule = "flexflow"
    profile: str = "released"
    mode: Optional[str] = None
    a2a_sizing: Optional[str] = None
    a2a_counts: Optional[str] = None
    compute_pacing: Optional[str] = None
    micro_batches_rule: Optional[str] = None
    nic_pooling: Optional[str] = None
    dp_precision: Optional[str] = None
    dp_experts: Optional[str] = None
    qwen: Optional[str] = None
    qwen_shared: Optional[str] = None
    deepseek_attention: Optional[str] = None
    packet_size: Optional[str] = None
    nvlink: Optional[str] = None

    def __post_init__(self):
        require(self.fabric in FABRICS, "fabric",
                f"must be one of {', '.join(FABRICS)}, got {self.fabric!r}")
        for name in ("link_gbps", "delay_ms", "tolerance"):
            v = getattr(self, name)
            require(isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
                    and (v > 0 if name == "link_gbps" else v >= 0), name,
                    f"must be a number {'> 0' if name == 'link_gbps' else '>= 0'}, got {v!r}")
        for name in ("gpus", "tp", "ep", "pp", "micro_batch", "seq_len", "global_batch"):
            v = getattr(self, name)
            require(isinstance(v, int) and not isinstance(v, bool) and v >= 1, name,
                    f"must be a positive integer, got {v!r}")
        require(isinstance(self.alpha, int) and not isinstance(self.alpha, bool)
                and 0 <= self.alpha <= 7, "alpha", f"must be an integer 0 .. 7, got {self.alpha!r}")
        from fabricsim.failures import parse_failures

        object.__setattr__(self, "failures", tuple(str(f) for f in parse_failures(
            self.failures.split(",") if isinstance(self.failures, str) and self.failures
            else () if isinstance(self.failures, str) else self.failures)))
        require(not self.failures or self.fabric == "mixnet", "failures",
                "failures are modelled on the mixnet fabric")
        require(self.engine in ("flow", "packet"), "engine",
                f"must be 'flow' or 'packet', got {self.engine!r}")
        object.__setattr__(self, "switches", resolve_switches(
            self.profile, {name: getattr(self, name) for name in switch_names()}))

    def to_dict(self) -> dict:
        """Every parameter, the switches resolved (what the results record and the id hashes)."""
        d = dataclasses.asdict(self)
        d["failures"] = ",".join(self.failures)
        d.update(self.switches)
        return d

    def resolved_dp(self) -> int:
        if self.dp is not None:
            return self.dp
        inner = self.tp * self.ep * self.pp
        require(self.gpus % inner == 0, "dp", f"cannot be derived: gpus {self.gpus} is not a "
                f"multiple of tp * ep * pp = {inner}")
        return self.gpus // inner


def point_id(params: dict) -> str:
    """A stable id of a point's resolved parameters (16 hex digits)."""
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def micro_batches_of(p: Point, dp: int):
    """Micro-batches per replica: ``p.micro_batches`` if given, else by the ``micro_batches_rule``
    switch: ``flexflow``, the released FlexFlow command's ``--batchsize`` / ``--microbatchsize``
    per replica (``global_batch // (micro_batch * dp)``, at least 1; reference 6.2), or ``pp``
    (None: the workload's default)."""
    if p.micro_batches is not None or p.switches["micro_batches_rule"] == "pp":
        return p.micro_batches
    return max(1, p.global_batch // (p.micro_batch * dp))


def _workload(p: Point):
    from fabricsim.profiles import WORKLOAD_SWITCHES
    from fabricsim.workload import WorkloadConfig
    from fabricsim.workload.models import resolve_model

    dp = p.resolved_dp()
    s = p.switches
    model = resolve_model(p.model, qwen=s["qwen"], qwen_shared=s["qwen_shared"],
                          deepseek_attention=s["deepseek_attention"])
    return WorkloadConfig(model=model, gpus=p.gpus, dp=dp, tp=p.tp, pp=p.pp,
                          ep=p.ep, micro_batch=p.micro_batch, seq_len=p.seq_len,
                          micro_batches=micro_batches_of(p, dp), gating=p.gating,
                          gating_params=dict(p.gating_params), seed=p.seed,
                          gpu_profile=p.gpu_profile, layer_split=p.layer_split,
                          **{name: p.switches[name] for name in WORKLOAD_SWITCHES})


def build_fabric(p: Point, graph):
    """The fabric of a point (and the OCS controller for MixNet)."""
    from fabricsim.fabric import fat_tree, rail_optimized
    from fabricsim.mixnet import mixnet
    from fabricsim.profiles import NVLINK_GBPS

    servers = p.gpus // 8
    kw = dict(nvlink_gbps=NVLINK_GBPS[p.switches["nvlink"]], nic_pooling=p.switches["nic_pooling"])
    if p.fabric == "fattree":
        return fat_tree(p.gpus, p.link_gbps, **kw), None
    if p.fabric == "oversub":
        return fat_tree(p.gpus, p.link_gbps, oversubscription=3, **kw), None
    if p.fabric == "railopt":
        return rail_optimized(servers, p.link_gbps, **kw), None
    if p.fabric == "topoopt":
        from fabricsim.topoopt import topoopt_for_workload

        return topoopt_for_workload(graph, p.link_gbps, **kw), None
    from fabricsim.ocs.controller import make_controller

    from fabricsim.failures import apply_failures

    region = p.region_servers or max(1, p.ep * p.tp // 8)
    fab = apply_failures(mixnet(servers, p.link_gbps, alpha=p.alpha, region_servers=region,
                                seed=13, **kw), p.failures)
    ctl = make_controller(p.policy, delay_ms=p.delay_ms, variant=p.variant)
    if p.policy == "predict":
        ctl.predictor = _trained_predictor(p, graph)
    return fab, ctl


def _trained_predictor(p: Point, graph, window: int = 8):
    """A Copilot predictor fitted on the rank loads of the ``window`` iterations before this one."""
    import numpy as np

    from fabricsim.ocs.copilot import CopilotPredictor
    from fabricsim.workload.gating import make_expert_load

    model = graph.placement.model
    load = make_expert_load(p.gating, ep=p.ep, n_experts=model.routed_experts, top_k=model.top_k,
                            tokens_per_rank=p.micro_batch * p.seq_len, moe_layers=model.moe_layers,
                            seed=p.seed, sizing=p.switches["a2a_sizing"],
                            counts=p.switches["a2a_counts"], **dict(p.gating_params))
    pred = CopilotPredictor(p.ep, model.moe_layers, window=window)
    for it in range(max(0, graph.config.iteration - window), graph.config.iteration):
        loads = np.stack([load.rank_tokens(it, layer, 0).sum(axis=0)
                          for layer in range(model.moe_layers)])
        pred.observe(it, loads)
    return pred


#: Fabrics whose bill changes with the nic_pooling reading (a pooled 3:1 fat-tree rounds its
#: switches differently; per-NIC MixNet has a NIC-level EPS): priced from the built fabric.
_BUILT_BILL = {("oversub", "pooled"), ("mixnet", "per-nic")}


def _cost(point: Point, fabric=None) -> float:
    """The network cost, NaN for a link speed without prices (the simulation still counts): the
    closed form of the paper's accounting (:mod:`fabricsim.cost`), or the built fabric's bill of
    materials for a ``nic_pooling`` reading that changes what is built."""
    from fabricsim.cost import SPEEDS_GBPS, bom_from_fabric, network_cost_usd

    if point.link_gbps not in SPEEDS_GBPS:
        return float("nan")
    if fabric is not None and (point.fabric, point.switches["nic_pooling"]) in _BUILT_BILL:
        return bom_from_fabric(fabric).total_usd
    return network_cost_usd(COST_NAMES[point.fabric], point.gpus, point.link_gbps,
                            alpha=point.alpha)


def run_point(point: Point, *, progress=None) -> dict:
    """Simulate one iteration of ``point``; returns its result row (flat dict of scalars)."""
    from fabricsim.runner import BREAKDOWN_KINDS, run_iteration
    from fabricsim.workload import build_iteration

    t0 = time.perf_counter()
    cfg = _workload(point)
    graph = build_iteration(cfg)
    fabric, controller = build_fabric(point, graph)
    moved = None
    if point.failures:
        from fabricsim.failures import gpu_map

        moved = gpu_map(fabric, point.failures)
    packet_params = None
    if point.engine == "packet":
        from fabricsim.kernels.packetsim import PacketParams
        from fabricsim.profiles import packet_mtu_bytes

        packet_params = PacketParams(mtu_bytes=packet_mtu_bytes(point.switches["packet_size"],
                                                                point.fabric))
    result = run_iteration(graph, fabric, mode=point.switches["mode"], controller=controller,
                           seed=point.seed, progress=progress, gpu_map=moved, engine=point.engine,
                           packet_params=packet_params, tolerance=point.tolerance)
    params = point.to_dict()
    params["dp"] = cfg.dp
    params["micro_batches"] = cfg.n_micro_batches
    row = {"point_id": point_id(params)}
    row.update({k: (json.dumps(v, sort_keys=True) if isinstance(v, dict) else v)
                for k, v in params.items()})
    breakdown = result.breakdown_s()
    row.update(iteration_time_s=result.iteration_time_s,
               compute_bound_s=graph.critical_path_ps() * 1e-12,
               **{f"{k}_s": breakdown[k] for k in BREAKDOWN_KINDS},
               network_cost_usd=_cost(point, fabric),
               reconfigurations=len(result.ocs_records), tasks=graph.n_tasks,
               contended_collectives=result.stats.get("contended_collectives", -1),
               flows=result.stats["flows"], wall_s=time.perf_counter() - t0)
    return row
