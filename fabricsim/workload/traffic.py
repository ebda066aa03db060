"""Byte formulas of MoE training traffic, as flows ``(src_gpu, dst_gpu, bytes)``.

Notation: ``b`` bytes per element (bf16: 2), ``h`` the hidden size, ``T = micro_batch * seq_len``
tokens of one micro-batch on one EP rank, ``S = T * h * b`` the activation of one micro-batch on
one EP rank (its TP group holds it), ``tp``/``ep``/``dp``/``pp`` the degrees.

- **TP all-reduce** (NVLink, inside a server): a ring over the tp GPUs of an EP rank. Every GPU
  sends ``2 (tp - 1) / tp * S`` bytes to the next one: the ring's ``2 (tp - 1)`` steps of ``S / tp``
  bytes, merged into one flow per ring edge (same bytes per link; step latencies are not
  modelled). Megatron's tensor parallelism does two per layer forward (after attention, after
  the FFN / MoE block) and two backward (at the inputs of the same blocks).
- **EP all-to-all**, four per MoE layer and micro-batch: with ``R[s][d]`` the token copies that
  EP rank ``s`` sends to the experts of rank ``d`` (gating), GPU ``(s, t)`` sends
  ``R[s][d] * h * b / tp`` bytes to GPU ``(d, t)`` for every tp rank ``t`` and ``d != s`` (the
  released simulator's "matching tp index" rule). Dispatch (FP-1, "GROUP_BY forward") and the
  gradient of the combine (BP-1, "AGGREGATE backward") use ``R``; the combine (FP-2) and the
  gradient of the dispatch (BP-2) use its transpose.
- **PP point-to-point**, per micro-batch and stage boundary: every GPU of the stage sends
  ``S / tp`` bytes of activations to the GPU with the same (dp, ep, tp) ranks on the next stage
  forward, and the same bytes of gradients back.
- **DP gradient all-reduce**, once per iteration, hierarchical (reference section 4.1): the
  members of a group that share a server reduce to the lowest of them (its gateway) over
  NVLink, the gateways run a ring across servers (``2 (n - 1) / n * G`` bytes each), and the
  gateways broadcast back. ``G`` is a GPU's gradient in bytes (``b`` per parameter). Non-expert
  parameters (attention, router, dense and shared FFNs, embedding, LM head) are replicated over
  the ``dp * ep`` GPUs with the same (stage, tp rank); expert parameters over the ``dp * tp`` GPUs
  with the same (stage, ep rank) when experts are whole on every GPU (``expert_tp = False``, the
  default), or over the ``dp`` GPUs with the same (stage, ep rank, tp rank) when they are split.
  A GPU holds 1/tp of the attention's TP-split matrices, of the dense and shared FFNs, embedding
  and LM head, and all of the routers and of MLA's down-projections (W_DQ, W_DKV: not split by
  tensor parallelism, :mod:`fabricsim.workload.models`).

Integer bytes are floored.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ring_allreduce_flows", "a2a_flows", "a2a_bytes", "p2p_flows",
           "hierarchical_allreduce_flows", "attention_params", "dense_params_per_gpu",
           "expert_params_per_gpu", "total_params"]

_EMPTY = np.zeros(0, np.int64)


def ring_allreduce_flows(members: np.ndarray, size_bytes: int):
    """Ring all-reduce of ``size_bytes`` over ``members`` (int64[n]): member i sends
    ``2 (n - 1) * size // n`` bytes to member i + 1 (mod n). Returns ``(src, dst, bytes)``."""
    members = np.asarray(members, np.int64)
    n = members.size
    if n < 2:
        return _EMPTY, _EMPTY, _EMPTY
    per = 2 * (n - 1) * int(size_bytes) // n
    return members, np.roll(members, -1), np.full(n, per, np.int64)


def a2a_flows(first_gpu: int, tp: int, rank_tokens: np.ndarray, bytes_per_token: int,
              transpose: bool = False):
    """All-to-all of an EP group whose GPUs are ``first_gpu + ep_rank * tp + tp_rank``.

    ``rank_tokens int64[ep, ep]``: token copies from rank s to rank d; ``transpose`` sends
    ``R[d][s]`` instead. GPU (s, t) -> (d, t) carries ``R * bytes_per_token // tp``; the diagonal
    and empty pairs are left out. Returns ``(src, dst, bytes)`` int64 arrays.
    """
    r = np.asarray(rank_tokens, np.int64)
    if transpose:
        r = r.T
    ep = r.shape[0]
    s, d = np.nonzero(r * (1 - np.eye(ep, dtype=np.int64)))
    size = r[s, d] * int(bytes_per_token) // tp
    t = np.arange(tp, dtype=np.int64)
    src = (first_gpu + s[:, None] * tp + t).ravel()
    dst = (first_gpu + d[:, None] * tp + t).ravel()
    return src, dst, np.repeat(size, tp)


def a2a_bytes(rank_tokens: np.ndarray, bytes_per_token: int, tp: int) -> int:
    """Total bytes of :func:`a2a_flows` (the same for the matrix and its transpose)."""
    r = np.array(rank_tokens, np.int64)
    np.fill_diagonal(r, 0)
    return int((r * int(bytes_per_token) // tp).sum()) * tp


def p2p_flows(src_gpus: np.ndarray, dst_gpus: np.ndarray, size_bytes: int):
    """One flow of ``size_bytes`` from each ``src_gpus[i]`` to ``dst_gpus[i]``."""
    src = np.asarray(src_gpus, np.int64)
    return src, np.asarray(dst_gpus, np.int64), np.full(src.size, int(size_bytes), np.int64)


def hierarchical_allreduce_flows(members: np.ndarray, gpus_per_server: int, size_bytes: int):
    """The three steps of a hierarchical all-reduce of ``size_bytes`` per member.

    Returns ``[(src, dst, bytes)] * 3``: intra-server reduce to each server's gateway (its lowest
    member), ring all-reduce across the gateways, broadcast from the gateways. A step without
    flows has empty arrays.
    """
    members = np.sort(np.asarray(members, np.int64))
    server = members // gpus_per_server
    first = np.r_[True, server[1:] != server[:-1]]
    gateways = members[first]
    gateway_of = gateways[np.cumsum(first) - 1]
    others = ~first
    size = int(size_bytes)
    reduce = (members[others], gateway_of[others], np.full(int(others.sum()), size, np.int64))
    bcast = (reduce[1], reduce[0], reduce[2])
    return [reduce, ring_allreduce_flows(gateways, size), bcast]


def attention_params(model) -> int:
    """Parameters of one attention block: the sum of its weight matrices
    (:meth:`~fabricsim.workload.models.MoEModel.attention_matrices`: Q, K, V and output
    projections for MHA; the down- and up-projections and the output projection for MLA)."""
    return sum(model.attention_params_split())


def dense_params_per_gpu(model, layers, tp: int, *, first_stage: bool, last_stage: bool) -> int:
    """Non-expert parameters one GPU holds for ``layers`` (global layer indices) of a stage: its
    1/tp share of attention (its TP-split matrices), dense FFNs, shared experts, the embedding
    (first stage) and the LM head (last stage), plus the routers and MLA's down-projections,
    which every TP rank holds whole."""
    h = model.hidden
    split_attention, whole_attention = model.attention_params_split()
    total = 0
    whole = 0
    for layer in layers:
        total += split_attention
        whole += whole_attention
        if model.is_moe_layer(layer):
            total += 3 * h * model.shared_ffn * model.shared_experts
            whole += h * model.routed_experts
        else:
            total += 3 * h * model.dense_ffn
    total += model.vocab * h * (int(first_stage) + int(last_stage))
    return total // tp + whole


def expert_params_per_gpu(model, moe_layers_in_stage: int, experts_per_rank: int, tp: int) -> int:
    """Routed-expert parameters one GPU holds: its 1/tp share of its rank's experts."""
    return moe_layers_in_stage * experts_per_rank * 3 * model.hidden * model.expert_ffn // tp


def total_params(model) -> int:
    """All parameters of the model as the catalog describes it: embedding, every layer's
    attention, dense FFN or router + shared + routed experts, and the LM head (no norms)."""
    dense = dense_params_per_gpu(model, range(model.layers), 1, first_stage=True, last_stage=True)
    return dense + expert_params_per_gpu(model, model.moe_layers, model.routed_experts, 1)
