"""One training iteration as a DAG of compute and communication tasks, held in arrays.

:func:`build_iteration` turns a :class:`WorkloadConfig` into a :class:`TaskGraph`. Per pipeline
stage and data-parallel replica, the ep * tp GPUs of an EP group run the schedule's sequence of
forward (F) and backward (B) passes over micro-batches; each pass runs the stage's layers:

========== ===================================================================================
forward    ``attention`` (with the router on MoE layers, the embedding on layer 0) ->
           [``tp_allreduce``] -> MoE: ``ep_dispatch`` (FP-1) -> ``ffn`` (shared + routed
           experts at their load) -> ``ep_combine`` (FP-2); dense: ``ffn`` -> [``tp_allreduce``];
           after the last layer ``lm_head`` (with the loss)
backward   ``lm_head`` first on the last stage; MoE: ``ep_combine_bwd`` (BP-1, "AGGREGATE
           backward") -> ``ffn`` -> ``ep_dispatch_bwd`` (BP-2); dense: ``ffn`` ->
           [``tp_allreduce``]; then ``attention`` -> [``tp_allreduce``]
between    ``pp_activation`` (stage s -> s + 1 after F), ``pp_gradient`` (s + 1 -> s after B)
stages
end        ``dp_reduce`` -> ``dp_ring`` -> ``dp_broadcast``: gradients, per stage, once every
           GPU of the group has finished its last backward computation
========== ===================================================================================

Compute tasks run on one GPU each, in the
schedule's order (each depends on the previous compute task of its GPU: one compute stream per
GPU); a collective (all-to-all, all-reduce) waits for every member and every member's next task
waits for it. An EP group's all-to-alls also run one after another in issue order (one
communicator stream per group, as NCCL runs collectives of one communicator), so a region's OCS
carries one all-to-all at a time. Byte formulas: :mod:`fabricsim.workload.traffic`.

Pipeline schedules: ``1f1b`` (default: Megatron-LM's schedule and what production MoE training
uses; the same bubble as GPipe with at most pp micro-batches of activations in flight) and
``gpipe`` (all forwards, then all backwards).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from fabricsim.errors import require
from fabricsim.kernels import dag
from fabricsim.workload import traffic
from fabricsim.workload.gating import REFERENCE_COUNTS, REFERENCE_SIZINGS
from fabricsim.workload.models import get_model
from fabricsim.workload.placement import LAYER_SPLITS, place

__all__ = ["WorkloadConfig", "TaskGraph", "build_iteration", "OPS", "COMPUTE_OPS", "COMM_OPS",
           "OP_PARALLELISM", "SCHEDULES", "FWD", "BWD", "GRAD"]

COMPUTE_OPS = ("attention", "ffn", "lm_head")
COMM_OPS = ("tp_allreduce", "ep_dispatch", "ep_combine", "ep_combine_bwd", "ep_dispatch_bwd",
            "pp_activation", "pp_gradient", "dp_reduce", "dp_ring", "dp_broadcast")
OPS = COMPUTE_OPS + COMM_OPS
OP_PARALLELISM = {"tp_allreduce": "tp", "ep_dispatch": "ep", "ep_combine": "ep",
                  "ep_combine_bwd": "ep", "ep_dispatch_bwd": "ep", "pp_activation": "pp",
                  "pp_gradient": "pp", "dp_reduce": "dp", "dp_ring": "dp", "dp_broadcast": "dp"}
SCHEDULES = ("1f1b", "gpipe")
GATING_KINDS = ("reference", "synthetic", "trace")
_RESERVED_GATING = ("seed", "ep", "n_experts", "top_k", "tokens_per_rank", "moe_layers", "sizing",
                    "counts")
COMPUTE_PACINGS = ("profile", "load")
DP_BYTES = {"fp32": 4, "bf16": 2}  # bytes per gradient element
DP_EXPERTS = ("replicated", "sharded")
FWD, BWD, GRAD = 0, 1, 2
PHASE_NAMES = ("fwd", "bwd", "grad")
_OP = {name: i for i, name in enumerate(OPS)}
COMPUTE, COMM = 0, 1


@dataclass(frozen=True)
class WorkloadConfig:
    """What one training iteration is: model, parallelism, batch shape, gating, GPU profile.

    ``micro_batch`` sequences of ``seq_len`` tokens per EP rank and micro-batch; ``micro_batches``
    per iteration and pipeline (default: pp). ``gating`` is ``reference`` (the released
    simulator's static matrix), ``synthetic`` (parameters in ``gating_params``) or ``trace``
    (``gating_params = {"path": ...}``). ``dtype_bytes``: activations and gradients (bf16: 2).

    Every data-parallel replica gets the same expert load (the gating is keyed by iteration,
    layer and micro-batch, not by replica).

    Modelling switches (:mod:`fabricsim.profiles`; defaults are the released simulator's):
    ``a2a_sizing`` and ``a2a_counts`` read the reference matrix
    (:class:`fabricsim.workload.gating.ReferenceLoad`); ``compute_pacing`` is ``profile`` (every EP
    rank's experts take the time of the mean load, ``tokens * top_k`` copies: compute never depends
    on the matrix) or ``load`` (each rank takes the time of the copies routed to it, so the busiest
    rank paces the layer); ``dp_precision`` (``fp32``: 4 B, ``bf16``: 2 B per gradient element in the
    data-parallel all-reduce); ``dp_experts`` (``replicated``: a rank's expert gradients are
    all-reduced over its dp * tp GPUs; ``sharded``: each GPU's 1/tp share over dp GPUs).

    ``expert_tp``: whether the MoE block is tensor-parallel too. ``False`` (default): experts are
    whole on every GPU of their EP rank's TP group, each GPU runs them on its sequence-parallel
    1/tp share of the tokens, and only attention and dense FFNs all-reduce over TP (Megatron-Core
    with expert tensor parallelism 1; it gives the paper's Fig. 2 traffic shares). ``True``:
    experts are split over tp like a dense FFN and the MoE block all-reduces over TP too.
    """

    model: str = "mixtral-8x7b"
    gpus: int = 128
    dp: int = 1
    tp: int = 4
    pp: int = 4
    ep: int = 8
    micro_batch: int = 8
    seq_len: int = 4096
    micro_batches: Optional[int] = None
    gating: str = "reference"
    gating_params: dict = field(default_factory=dict)
    seed: int = 0
    iteration: int = 0
    gpu_profile: str = "a100"
    compute_overrides: Optional[str] = None
    schedule: str = "1f1b"
    layer_split: str = "even"
    dtype_bytes: int = 2
    gpus_per_server: int = 8
    expert_tp: bool = False
    a2a_sizing: str = "released"
    a2a_counts: str = "tokens"
    compute_pacing: str = "profile"
    dp_precision: str = "fp32"
    dp_experts: str = "replicated"

    def __post_init__(self):
        for name in ("micro_batch", "seq_len", "dtype_bytes"):
            v = getattr(self, name)
            require(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f"workload.{name}",
                    f"must be a positive integer, got {v!r}")
        if self.micro_batches is not None:
            require(isinstance(self.micro_batches, int) and not isinstance(self.micro_batches, bool)
                    and self.micro_batches >= 1,
                    "workload.micro_batches", f"must be a positive integer, got {self.micro_batches!r}")
        for name in ("seed", "iteration"):
            v = getattr(self, name)
            require(isinstance(v, int) and not isinstance(v, bool) and v >= 0, f"workload.{name}",
                    f"must be a non-negative integer, got {v!r}")
        require(self.schedule in SCHEDULES, "workload.schedule",
                f"must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        require(self.gating in GATING_KINDS, "workload.gating",
                f"must be one of {', '.join(GATING_KINDS)}, got {self.gating!r}")
        require(self.layer_split in LAYER_SPLITS, "workload.layer_split",
                f"must be one of {', '.join(LAYER_SPLITS)}, got {self.layer_split!r}")
        require(isinstance(self.gating_params, dict), "workload.gating_params",
                f"must be a table, got {self.gating_params!r}")
        for key in self.gating_params:
            require(key not in _RESERVED_GATING, f"workload.gating_params.{key}",
                    "is set by the workload (use workload.seed / --seed for the seed); allowed: "
                    "the generator's parameters, e.g. skew, drift, layer_corr, spatial, noise")
        require(isinstance(self.expert_tp, bool), "workload.expert_tp",
                f"must be true or false, got {self.expert_tp!r}")
        for name, allowed in (("a2a_sizing", REFERENCE_SIZINGS), ("a2a_counts", REFERENCE_COUNTS),
                              ("compute_pacing", COMPUTE_PACINGS), ("dp_precision", tuple(DP_BYTES)),
                              ("dp_experts", DP_EXPERTS)):
            require(getattr(self, name) in allowed, f"workload.{name}",
                    f"must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        require(self.micro_batch * self.seq_len <= 2**31, "workload.micro_batch",
                f"micro_batch * seq_len must be <= 2**31 tokens, got {self.micro_batch * self.seq_len}")

    @property
    def n_micro_batches(self) -> int:
        return self.micro_batches if self.micro_batches is not None else self.pp

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TaskGraph:
    """The tasks of one iteration as arrays (``T`` tasks, ``E`` dependency edges).

    Per task: ``kind int8[T]`` (0 compute, 1 communication), ``op int8[T]`` (index into
    :data:`OPS`), ``gpu int64[T]`` (compute: the GPU; -1 for communication), ``duration_ps
    int64[T]`` (compute time; 0 for communication), ``bytes int64[T]`` (communication: bytes of
    all its flows), ``layer``, ``micro_batch``, ``stage``, ``dp_rank`` ``int64[T]`` (-1 where they
    do not apply), ``phase int8[T]`` (0 fwd, 1 bwd, 2 gradient sync).

    Dependencies: ``pred_ptr int64[T + 1]``, ``pred int64[E]`` (CSR over predecessors).

    Flows of communication tasks: all-to-alls are kept compact, ``a2a_matrix int64[T]`` (index
    into ``a2a_tokens int64[M, ep, ep]``, -1 for other tasks) and ``a2a_transpose bool[T]``;
    every other task lists its flows in ``flow_ptr int64[T + 1]``, ``flow_src``, ``flow_dst``,
    ``flow_bytes``. :meth:`flows` returns the flows of any task.
    """

    config: WorkloadConfig
    placement: object
    compute: object
    kind: np.ndarray
    op: np.ndarray
    gpu: np.ndarray
    duration_ps: np.ndarray
    bytes: np.ndarray
    layer: np.ndarray
    micro_batch: np.ndarray
    stage: np.ndarray
    dp_rank: np.ndarray
    phase: np.ndarray
    pred_ptr: np.ndarray
    pred: np.ndarray
    flow_ptr: np.ndarray
    flow_src: np.ndarray
    flow_dst: np.ndarray
    flow_bytes: np.ndarray
    a2a_matrix: np.ndarray
    a2a_transpose: np.ndarray
    a2a_tokens: np.ndarray
    bytes_per_token: int

    @property
    def n_tasks(self) -> int:
        return int(self.kind.size)

    def tasks_of(self, op: str) -> np.ndarray:
        """Ids of the tasks of one op (a name of :data:`OPS`), in id order (int64)."""
        require(op in OPS, "op", f"must be one of {', '.join(OPS)}, got {op!r}")
        return np.flatnonzero(self.op == _OP[op])

    def flows(self, task: int):
        """``(src_gpu, dst_gpu, bytes)`` int64 arrays of communication task ``task``."""
        m = int(self.a2a_matrix[task])
        if m >= 0:
            first = int(self.placement.gpu(self.stage[task], self.dp_rank[task], 0, 0))
            return traffic.a2a_flows(first, self.placement.tp, self.a2a_tokens[m],
                                     self.bytes_per_token, bool(self.a2a_transpose[task]))
        lo, hi = self.flow_ptr[task], self.flow_ptr[task + 1]
        return self.flow_src[lo:hi], self.flow_dst[lo:hi], self.flow_bytes[lo:hi]

    def topological_order(self) -> np.ndarray:
        return dag.topological_order(self.pred_ptr, self.pred)

    def critical_path_ps(self) -> int:
        """Iteration time with infinitely fast communication: a lower bound for every fabric."""
        finish = dag.earliest_finish(self.pred_ptr, self.pred, self.duration_ps,
                                     self.topological_order())
        return int(finish.max()) if finish.size else 0

    def bytes_by_parallelism(self) -> dict:
        """Bytes per iteration over the whole job: ``{"tp", "ep", "pp", "dp"}``."""
        out = {"tp": 0, "ep": 0, "pp": 0, "dp": 0}
        for name, par in OP_PARALLELISM.items():
            out[par] += int(self.bytes[self.op == _OP[name]].sum())
        return out

    def bytes_by_link(self) -> dict:
        """Bytes per iteration by where they travel: ``nvlink`` (same server) or ``network``."""
        gps = self.placement.gpus_per_server
        local = 0
        for t in np.flatnonzero(self.kind == COMM):
            src, dst, size = self.flows(int(t))
            local += int(size[src // gps == dst // gps].sum())
        total = int(self.bytes.sum())
        return {"nvlink": local, "network": total - local}

    def to_arrow(self):
        """The per-task columns as a ``pyarrow.Table`` (op and phase as strings)."""
        import pyarrow as pa

        return pa.table({
            "task": np.arange(self.n_tasks), "op": np.asarray(OPS, dtype=object)[self.op],
            "kind": np.where(self.kind == COMPUTE, "compute", "comm").astype(object),
            "gpu": self.gpu, "duration_ps": self.duration_ps, "bytes": self.bytes,
            "layer": self.layer, "micro_batch": self.micro_batch, "stage": self.stage,
            "dp_rank": self.dp_rank,
            "phase": np.asarray(PHASE_NAMES, dtype=object)[self.phase],
            "n_pred": np.diff(self.pred_ptr)})


class _Builder:
    """Accumulates task columns, flows and edges in chunks; :meth:`finish` makes the arrays.

    A chunk of ``n`` tasks stores each column as a scalar (the common case, expanded once at the
    end) or as an array of ``n`` values.
    """

    _DTYPES = {"kind": np.int8, "op": np.int8, "gpu": np.int64, "duration_ps": np.int64,
               "bytes": np.int64, "layer": np.int64, "micro_batch": np.int64,
               "stage": np.int64, "dp_rank": np.int64, "phase": np.int8,
               "a2a_matrix": np.int64, "a2a_transpose": bool, "n_flows": np.int64}

    def __init__(self):
        self.cols = {k: [] for k in self._DTYPES}
        self.counts = []
        self.flows = ([], [], [])
        self.edges = ([], [])
        self.n = 0

    def add(self, n, *, kind, op, stage, dp_rank, phase, gpu=-1, duration_ps=0, size=0,
            layer=-1, micro_batch=-1, a2a_matrix=-1, a2a_transpose=False, n_flows=0):
        """Append ``n`` tasks (scalars broadcast); returns their ids (int64[n])."""
        values = dict(kind=kind, op=_OP[op], gpu=gpu, duration_ps=duration_ps, bytes=size,
                      layer=layer, micro_batch=micro_batch, stage=stage, dp_rank=dp_rank,
                      phase=phase, a2a_matrix=a2a_matrix, a2a_transpose=a2a_transpose,
                      n_flows=n_flows)
        for k, v in values.items():
            self.cols[k].append(v)
        self.counts.append(n)
        ids = np.arange(self.n, self.n + n, dtype=np.int64)
        self.n += n
        return ids

    def _column(self, name):
        chunks = self.cols[name]
        scalar = [c if np.ndim(c) == 0 else 0 for c in chunks]
        out = np.repeat(np.asarray(scalar, self._DTYPES[name]), self.counts)
        at = 0
        for c, n in zip(chunks, self.counts):
            if np.ndim(c):
                out[at:at + n] = c
            at += n
        return out

    def comm(self, op, flows, *, stage, dp_rank, phase, layer=-1, micro_batch=-1):
        """One communication task with explicit flows ``(src, dst, bytes)``; returns its id."""
        src, dst, size = flows
        for acc, a in zip(self.flows, (src, dst, size)):
            acc.append(np.asarray(a, np.int64))
        return int(self.add(1, kind=COMM, op=op, stage=stage, dp_rank=dp_rank, phase=phase,
                            size=int(np.sum(size)), layer=layer, micro_batch=micro_batch,
                            n_flows=len(src))[0])

    def edge(self, before, after):
        """Edges ``before[i] -> after[i]`` (arrays broadcast; negative ``before`` ids skipped)."""
        before, after = np.broadcast_arrays(np.asarray(before, np.int64), np.asarray(after, np.int64))
        keep = before >= 0
        self.edges[0].append(before[keep].ravel())
        self.edges[1].append(after[keep].ravel())

    def finish(self):
        cat = {k: self._column(k) for k in self.cols}
        n = self.n
        src = np.concatenate(self.edges[0]) if self.edges[0] else np.zeros(0, np.int64)
        dst = np.concatenate(self.edges[1]) if self.edges[1] else np.zeros(0, np.int64)
        key = np.unique(dst * n + src)  # sorted by successor, duplicates removed
        pred = key % n if n else key
        pred_ptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(key // n if n else key, minlength=n), out=pred_ptr[1:])
        flow_ptr = np.zeros(n + 1, np.int64)
        np.cumsum(cat.pop("n_flows"), out=flow_ptr[1:])
        flows = [np.concatenate(f) if f else np.zeros(0, np.int64) for f in self.flows]
        return cat, pred_ptr, pred.astype(np.int64), flow_ptr, flows


def _schedule(kind: str, stage: int, pp: int, m: int):
    """The (micro-batch, phase) passes of one stage in order."""
    if kind == "gpipe":
        return [(i, FWD) for i in range(m)] + [(i, BWD) for i in range(m)]
    warmup = min(pp - stage - 1, m)
    order = [(i, FWD) for i in range(warmup)]
    for i in range(m - warmup):
        order += [(warmup + i, FWD), (i, BWD)]
    return order + [(i, BWD) for i in range(m - warmup, m)]


def build_iteration(config: WorkloadConfig, *, expert_load=None) -> TaskGraph:
    """The task graph of iteration ``config.iteration``; ``expert_load`` overrides the gating."""
    from fabricsim.workload.compute import ComputeModel
    from fabricsim.workload.gating import make_expert_load

    model = get_model(config.model)
    pl = place(model, config.gpus, dp=config.dp, tp=config.tp, pp=config.pp, ep=config.ep,
               gpus_per_server=config.gpus_per_server, layer_split=config.layer_split)
    cm = ComputeModel(model, tp=pl.tp, ep=pl.ep, micro_batch=config.micro_batch, seq_len=config.seq_len,
                      profile=config.gpu_profile, overrides=config.compute_overrides)
    m_count = config.n_micro_batches
    tokens = config.micro_batch * config.seq_len
    if expert_load is None:
        params = dict(config.gating_params)
        expert_load = make_expert_load(config.gating, ep=pl.ep, n_experts=model.routed_experts,
                                       top_k=model.top_k, tokens_per_rank=tokens,
                                       moe_layers=model.moe_layers, seed=config.seed,
                                       sizing=config.a2a_sizing, counts=config.a2a_counts, **params)
    act_bytes = tokens * model.hidden * config.dtype_bytes
    g = _GraphBuilder(config, model, pl, cm, expert_load, m_count, act_bytes)
    return g.build()


class _GraphBuilder:
    """Builds the passes of every (stage, dp replica); see the module docstring."""

    def __init__(self, config, model, pl, cm, load, m_count, act_bytes):
        self.config, self.model, self.pl, self.cm, self.load = config, model, pl, cm, load
        self.m = m_count
        self.act_bytes = act_bytes
        self.b = _Builder()
        self.last_compute = np.full(pl.gpus, -1, np.int64)
        self.mats = []
        self.mat_index = {}
        self.bytes_per_token = model.hidden * config.dtype_bytes
        self.times = {}
        self.last_a2a = {}

    # ----- helpers ------------------------------------------------------------------------------
    def op_ps(self, op: str, phase: str) -> int:
        """Time of an op whose cost does not depend on the expert load (memoized)."""
        key = (op, phase)
        if key not in self.times:
            self.times[key] = int(self.cm.time_ps(op, phase))
        return self.times[key]

    def rank_tokens(self, layer: int, mb: int):
        """(matrix index, int64[ep, ep]) of MoE layer ``layer`` (global index) and micro-batch."""
        key = (layer, mb)
        if key not in self.mat_index:
            r = np.asarray(self.load.rank_tokens(self.config.iteration,
                                                 layer - self.model.dense_layers, mb), np.int64)
            self.mat_index[key] = len(self.mats)
            self.mats.append(r)
        i = self.mat_index[key]
        return i, self.mats[i]

    def compute(self, gpus, durations, need, *, op, stage, dp, phase, layer, mb):
        """Compute tasks on ``gpus`` after ``need`` (int64[len(gpus)] or scalar) and after the
        previous compute task of each GPU."""
        ids = self.b.add(len(gpus), kind=COMPUTE, op=op, gpu=gpus, duration_ps=durations,
                         stage=stage, dp_rank=dp, phase=phase, layer=layer, micro_batch=mb)
        self.b.edge(need, ids)
        self.b.edge(self.last_compute[gpus], ids)
        self.last_compute[gpus] = ids
        return ids

    def tp_allreduce(self, gpus, need, *, stage, dp, phase, layer, mb):
        """One ring all-reduce per EP rank (tp GPUs each); returns each GPU's task id."""
        tp = self.pl.tp
        if tp == 1:
            return need
        out = np.empty(len(gpus), np.int64)
        need = np.broadcast_to(need, (len(gpus),))
        for r in range(len(gpus) // tp):
            members = gpus[r * tp:(r + 1) * tp]
            t = self.b.comm("tp_allreduce", traffic.ring_allreduce_flows(members, self.act_bytes),
                            stage=stage, dp_rank=dp, phase=phase, layer=layer, micro_batch=mb)
            self.b.edge(need[r * tp:(r + 1) * tp], t)
            out[r * tp:(r + 1) * tp] = t
        return out

    def a2a(self, op, need, *, stage, dp, phase, layer, mb, transpose):
        index, r = self.rank_tokens(layer, mb)
        size = traffic.a2a_bytes(r, self.bytes_per_token, self.pl.tp)
        t = int(self.b.add(1, kind=COMM, op=op, stage=stage, dp_rank=dp, phase=phase, size=size,
                           layer=layer, micro_batch=mb, a2a_matrix=index,
                           a2a_transpose=transpose)[0])
        self.b.edge(need, t)
        key = (stage, dp)  # one communicator per EP group: its all-to-alls run in issue order
        self.b.edge(self.last_a2a.get(key, -1), t)
        self.last_a2a[key] = t
        return t

    # ----- passes -------------------------------------------------------------------------------
    def layer_pass(self, gpus, need, *, stage, dp, layer, mb, phase):
        """One layer of one pass on an EP group; returns each GPU's last task id."""
        model, pl, cm = self.model, self.pl, self.cm
        ph = PHASE_NAMES[phase]
        kw = dict(stage=stage, dp=dp, phase=phase, layer=layer, mb=mb)
        moe = model.is_moe_layer(layer)
        ffn_tp = not moe or self.config.expert_tp  # is the FFN block tensor-parallel?
        t = self.op_ps
        attn_ps = t("attention", ph) + (t("gate", ph) if moe else 0)
        if layer == 0:
            attn_ps += t("embedding", ph)
        if moe:
            if self.config.compute_pacing == "load":
                _, r = self.rank_tokens(layer, mb)
                recv = r.sum(axis=0)  # token copies each EP rank's experts process
            else:  # the profile's mean load: every token's top_k copies spread evenly
                recv = np.full(pl.ep, self.config.micro_batch * self.config.seq_len * model.top_k)
            ffn_ps = (cm.time_ps("experts", ph, recv) + t("shared_experts", ph))[pl.ep_rank[gpus]]
        else:
            ffn_ps = np.full(len(gpus), t("dense_ffn", ph), np.int64)
        attn_ps = np.full(len(gpus), attn_ps, np.int64)
        head = layer == model.layers - 1  # the LM head (and loss) follows the last layer
        if head and phase == BWD:  # the loss gradient starts the backward pass
            need = self.compute(gpus, np.full(len(gpus), t("lm_head", ph), np.int64), need,
                                op="lm_head", **kw)
        if phase == FWD:
            need = self.compute(gpus, attn_ps, need, op="attention", **kw)
            need = self.tp_allreduce(gpus, need, **kw)
            if moe:
                need = self.a2a("ep_dispatch", need, transpose=False, **kw)
            need = self.compute(gpus, ffn_ps, need, op="ffn", **kw)
            if moe:
                need = self.a2a("ep_combine", need, transpose=True, **kw)
            if ffn_tp:
                need = self.tp_allreduce(gpus, need, **kw)
            if head:
                need = self.compute(gpus, np.full(len(gpus), t("lm_head", ph), np.int64), need,
                                    op="lm_head", **kw)
            return need
        if moe:
            need = self.a2a("ep_combine_bwd", need, transpose=False, **kw)
        need = self.compute(gpus, ffn_ps, need, op="ffn", **kw)
        if moe:
            need = self.a2a("ep_dispatch_bwd", need, transpose=True, **kw)
        if ffn_tp:
            need = self.tp_allreduce(gpus, need, **kw)
        need = self.compute(gpus, attn_ps, need, op="attention", **kw)
        return self.tp_allreduce(gpus, need, **kw)

    def pp_tasks(self):
        """``pp_activation`` and ``pp_gradient`` tasks of every boundary, replica, micro-batch:
        two int64[pp - 1, dp, m] arrays of task ids."""
        pl = self.pl
        act = np.full((max(pl.pp - 1, 0), pl.dp, self.m), -1, np.int64)
        grad = act.copy()
        size = self.act_bytes // pl.tp
        for s in range(pl.pp - 1):
            for d in range(pl.dp):
                lo, hi = pl.ep_group(s, d), pl.ep_group(s + 1, d)
                for mb in range(self.m):
                    act[s, d, mb] = self.b.comm("pp_activation", traffic.p2p_flows(lo, hi, size),
                                                stage=s, dp_rank=d, phase=FWD, micro_batch=mb)
                    grad[s, d, mb] = self.b.comm("pp_gradient", traffic.p2p_flows(hi, lo, size),
                                                 stage=s + 1, dp_rank=d, phase=BWD, micro_batch=mb)
        return act, grad

    def stage_passes(self, stage, dp, pp_act, pp_grad):
        pl = self.pl
        gpus = pl.ep_group(stage, dp)
        first = pl.stage_first_layer[stage]
        layers = range(first, first + pl.stage_layers[stage])
        fwd_out = {}
        for mb, phase in _schedule(self.config.schedule, stage, pl.pp, self.m):
            if phase == FWD:
                need = pp_act[stage - 1, dp, mb] if stage > 0 else -1
                for layer in layers:
                    need = self.layer_pass(gpus, need, stage=stage, dp=dp, layer=layer, mb=mb,
                                           phase=FWD)
                if stage < pl.pp - 1:
                    self.b.edge(need, pp_act[stage, dp, mb])
                fwd_out[mb] = need
            else:
                need = pp_grad[stage, dp, mb] if stage < pl.pp - 1 else fwd_out[mb]
                for layer in reversed(layers):
                    need = self.layer_pass(gpus, need, stage=stage, dp=dp, layer=layer, mb=mb,
                                           phase=BWD)
                if stage > 0:
                    self.b.edge(need, pp_grad[stage - 1, dp, mb])

    def gradient_sync(self, stage):
        """Hierarchical all-reduces of the stage's gradients (non-expert and expert groups)."""
        pl, model = self.pl, self.model
        first = pl.stage_first_layer[stage]
        layers = range(first, first + pl.stage_layers[stage])
        dense = traffic.dense_params_per_gpu(model, layers, pl.tp, first_stage=stage == 0,
                                             last_stage=stage == pl.pp - 1)
        n_moe = sum(model.is_moe_layer(layer) for layer in layers)
        split = pl.tp if self.config.expert_tp or self.config.dp_experts == "sharded" else 1
        expert = traffic.expert_params_per_gpu(model, n_moe, pl.experts_per_rank, split)
        on_stage = pl.stage == stage
        groups = [(pl.tp_rank == t) & on_stage for t in range(pl.tp)]
        sizes = [dense] * len(groups)
        if expert:  # replicas of a rank's experts: over dp, and over tp unless they are split
            for r in range(pl.ep):
                for t in range(split):
                    same_t = (pl.tp_rank == t) if split > 1 else True
                    groups.append(on_stage & (pl.ep_rank == r) & same_t)
                    sizes.append(expert)
        b = DP_BYTES[self.config.dp_precision]
        for mask, params in zip(groups, sizes):
            members = np.flatnonzero(mask)
            if members.size < 2 or params == 0:
                continue
            need = self.last_compute[members]
            for op, flows in zip(("dp_reduce", "dp_ring", "dp_broadcast"),
                                 traffic.hierarchical_allreduce_flows(
                                     members, pl.gpus_per_server, params * b)):
                if len(flows[0]) == 0:
                    continue
                t = self.b.comm(op, flows, stage=stage, dp_rank=-1, phase=GRAD)
                self.b.edge(need, t)
                need = t

    def build(self) -> TaskGraph:
        pl = self.pl
        pp_act, pp_grad = self.pp_tasks()
        for stage in range(pl.pp):
            for dp in range(pl.dp):
                self.stage_passes(stage, dp, pp_act, pp_grad)
            self.gradient_sync(stage)
        arrays, pred_ptr, pred, flow_ptr, flows = self.b.finish()
        ep = pl.ep
        mats = np.stack(self.mats) if self.mats else np.zeros((0, ep, ep), np.int64)
        graph = TaskGraph(config=self.config, placement=pl, compute=self.cm, pred_ptr=pred_ptr,
                          pred=pred, flow_ptr=flow_ptr, flow_src=flows[0], flow_dst=flows[1],
                          flow_bytes=flows[2], a2a_tokens=mats,
                          bytes_per_token=self.bytes_per_token, **arrays)
        if graph.topological_order().size != graph.n_tasks:  # pragma: no cover - a builder bug
            raise AssertionError("the task graph has a cycle")
        return graph
