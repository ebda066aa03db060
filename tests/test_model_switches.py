"""Model-architecture switches: DeepSeek-R1's multi-head latent attention (MLA) against full heads,
the Qwen-MoE variants with and without the card's shared expert, and resolve_model."""

from __future__ import annotations

import numpy as np
import pytest

from fabricsim.errors import ConfigError
from fabricsim.workload import WorkloadConfig, build_iteration, get_model
from fabricsim.workload.compute import ComputeModel
from fabricsim.workload.models import CATALOG, MoEModel, resolve_model
from fabricsim.workload.taskgraph import COMPUTE, DP_BYTES
from fabricsim.workload.traffic import attention_params, dense_params_per_gpu, total_params

# DeepSeek-V3's MLA matrices (hidden 7168, 128 heads, q_lora_rank 1536, kv_lora_rank 512,
# qk_nope 128, qk_rope 64, v 128), by hand
W_DQ = 7168 * 1536                  # 11,010,048
W_UQ = 1536 * (128 * (128 + 64))    # 37,748,736
W_DKV = 7168 * (512 + 64)           # 4,128,768
W_UKV = 512 * (128 * (128 + 128))   # 16,777,216
W_O = (128 * 128) * 7168            # 117,440,512
MLA_LAYER = 187_105_280             # their sum; RMSNorm weights not counted
MHA_LAYER = 7168 * 3 * 128 * 128 + 128 * 128 * 7168  # Q, K, V and O of 128 heads of 128


def test_mla_parameters_per_layer_are_the_matrices_sum():
    ds = CATALOG["deepseek-r1"]
    assert ds.attention == "mla"
    assert W_DQ + W_UQ + W_DKV + W_UKV + W_O == MLA_LAYER
    assert [(n, r * c, split) for n, r, c, split in ds.attention_matrices()] == [
        ("W_DQ", W_DQ, False), ("W_UQ", W_UQ, True), ("W_DKV", W_DKV, False),
        ("W_UKV", W_UKV, True), ("W_O", W_O, True)]
    assert attention_params(ds) == MLA_LAYER
    assert ds.attention_params_split() == (W_UQ + W_UKV + W_O, W_DQ + W_DKV)
    assert (ds.qk_head_dim, ds.value_head_dim) == (192, 128)
    mha = CATALOG["deepseek-r1-mha"]
    assert mha.attention == "mha" and attention_params(mha) == MHA_LAYER == 469_762_048


def test_deepseek_total_parameters_near_the_card():
    """The card's 671B is the main model; not modelled: the multi-token-prediction module (the
    HF checkpoint's 685B = 671B + 14B MTP), RMSNorm weights (~1M) and the routers' bias terms
    (256 per layer). The catalog's count lands within 0.01% of 671B."""
    ds, mha = CATALOG["deepseek-r1"], CATALOG["deepseek-r1-mha"]
    total = total_params(ds)
    by_hand = (61 * MLA_LAYER
               + 3 * 3 * 7168 * 18432                           # dense FFNs
               + 58 * (257 * 3 * 7168 * 2048 + 7168 * 256)      # 256 routed + 1 shared, router
               + 2 * 129280 * 7168)                             # embedding and LM head
    assert total == by_hand == 671_025_397_760
    assert abs(total / 671e9 - 1) < 1e-4
    # full heads: only the attention differs
    assert total_params(mha) - total == 61 * (MHA_LAYER - MLA_LAYER)
    assert total_params(mha) == 688_267_460_608


def test_mla_down_projections_are_whole_on_every_tp_rank():
    ds = CATALOG["deepseek-r1"]
    whole = W_DQ + W_DKV
    split = MLA_LAYER - whole
    layers = range(3, 7)  # four MoE layers, no embedding or LM head
    for tp in (1, 2, 8):
        got = dense_params_per_gpu(ds, layers, tp, first_stage=False, last_stage=False)
        shared = 3 * 7168 * 2048
        assert got == 4 * (split + shared) // tp + 4 * (whole + 7168 * 256)


def test_mla_attention_flops_per_token_by_hand():
    s = 4096
    core = 2.0 * 1 * s * s * 128 * (192 + 128)  # scores over 192, values over 128, per sequence
    one = ComputeModel("deepseek-r1", tp=1, micro_batch=1, seq_len=s)
    assert one.flops("attention") == s * 2 * MLA_LAYER + core
    assert one.flops("attention") / s == 374_210_560 + 335_544_320  # per token
    # tp 8: the down-projections run whole on every rank, the rest is split
    eight = ComputeModel("deepseek-r1", tp=8, micro_batch=1, seq_len=s)
    assert eight.flops("attention") == s * 2 * (W_DQ + W_DKV) + (s * 2 * (W_UQ + W_UKV + W_O)
                                                                  + core) / 8
    causal = ComputeModel("deepseek-r1", tp=1, micro_batch=1, seq_len=s, causal=True)
    assert causal.flops("attention") == s * 2 * MLA_LAYER + core / 2
    # full heads: projections 2 * 469.8M per token, scores + values 4 s H d
    mha = ComputeModel("deepseek-r1-mha", tp=1, micro_batch=1, seq_len=s)
    assert mha.flops("attention") == s * 2 * MHA_LAYER + 4.0 * s * s * 128 * 128
    # time: FLOPs over peak times efficiency (a100: 312 TFLOPS at 0.55)
    assert one.time_ps("attention", "fwd") == round(one.flops("attention") / (312e12 * 0.55) * 1e12)
    assert one.time_ps("attention", "fwd") < mha.time_ps("attention", "fwd")


def test_mla_from_toml_and_without_query_compression(tmp_path):
    path = tmp_path / "lite.toml"  # DeepSeek-V2-Lite-like: no q_lora_rank
    path.write_text('moe_layers = 2\nhidden = 64\nexpert_ffn = 32\nrouted_experts = 4\n'
                    'top_k = 2\nheads = 4\nkv_heads = 4\nhead_dim = 8\nvocab = 100\n'
                    'attention = "mla"\nkv_lora_rank = 16\nqk_rope_head_dim = 4\n')
    m = get_model(str(path))
    assert (m.q_lora_rank, m.qk_nope_head_dim, m.v_head_dim) == (None, 8, 8)
    assert [(n, r, c) for n, r, c, _ in m.attention_matrices()] == [
        ("W_Q", 64, 4 * 12), ("W_DKV", 64, 20), ("W_UKV", 16, 4 * 16), ("W_O", 32, 64)]
    assert attention_params(m) == 64 * 48 + 64 * 20 + 16 * 64 + 32 * 64
    cm = ComputeModel(m, tp=2, micro_batch=1, seq_len=10)
    assert cm.flops("attention") == (2 * 10 * (64 * 48 + 16 * 64 + 32 * 64)
                                     + 2 * 100 * 4 * (12 + 8)) / 2 + 2 * 10 * 64 * 20


@pytest.mark.parametrize("extra, field, text", [
    ('attention = "gqa"\n', "attention", "must be one of mha, mla"),
    ('kv_lora_rank = 16\n', "kv_lora_rank", "applies to attention = 'mla' only"),
    ('attention = "mla"\nqk_rope_head_dim = 4\n', "kv_lora_rank", "is required"),
    ('attention = "mla"\nkv_lora_rank = 16\n', "qk_rope_head_dim", "is required"),
    ('attention = "mla"\nkv_lora_rank = 0\nqk_rope_head_dim = 4\n', "kv_lora_rank",
     "positive integer"),
])
def test_bad_attention_fields_name_the_field(tmp_path, extra, field, text):
    path = tmp_path / "bad.toml"
    path.write_text("moe_layers = 1\nhidden = 64\nexpert_ffn = 8\nrouted_experts = 2\ntop_k = 1\n"
                    "heads = 4\nkv_heads = 4\nvocab = 10\n" + extra)
    with pytest.raises(ConfigError, match=text) as e:
        get_model(str(path))
    assert e.value.field == f"model 'bad'.{field}"


def test_mla_needs_a_key_value_head_per_head():
    with pytest.raises(ConfigError, match="must equal heads") as e:
        MoEModel("m", dense_layers=0, moe_layers=1, hidden=64, expert_ffn=8, routed_experts=2,
                 top_k=1, heads=4, kv_heads=2, vocab=10, attention="mla", kv_lora_rank=16,
                 qk_rope_head_dim=4)
    assert e.value.field == "model 'm'.kv_heads"


# --------------------------------------------------------------------------------------------
# Qwen-MoE


def test_qwen_variants():
    base = CATALOG["qwen-moe"]
    for name, routed, shared in (("qwen-moe", 64, 0), ("qwen-moe-shared", 64, 1),
                                 ("qwen-moe-32", 32, 0), ("qwen-moe-32-shared", 32, 1),
                                 ("qwen-moe-card", 60, 1)):
        m = CATALOG[name]
        assert (m.routed_experts, m.shared_experts) == (routed, shared), name
        assert m.shared_ffn == (4 * 1408 if shared else 1408)
        assert (m.layers, m.hidden, m.expert_ffn, m.top_k, m.heads) == \
            (base.layers, base.hidden, base.expert_ffn, base.top_k, base.heads)
    # the card's 60 experts do not divide by Table 1's EP 16: why qwen-moe-shared exists
    with pytest.raises(ConfigError, match="routed experts") as e:
        ComputeModel("qwen-moe-card", tp=1, micro_batch=1, seq_len=64, ep=16)
    assert e.value.field == "ep"
    # the shared expert adds exactly its FFN to the parameter count
    assert total_params(CATALOG["qwen-moe-shared"]) - total_params(base) == 24 * 3 * 2048 * 5632


def test_shared_expert_compute_time_by_hand():
    plain = ComputeModel("qwen-moe", tp=1, micro_batch=8, seq_len=4096, ep=16)
    shared = ComputeModel("qwen-moe-shared", tp=1, micro_batch=8, seq_len=4096, ep=16)
    flops = 2.0 * 8 * 4096 * 3 * 2048 * 5632  # T tokens through one 2048 x 5632 SwiGLU FFN
    assert shared.flops("shared_experts") == flops
    fwd_ps = round(flops / (312e12 * 0.70) * 1e12)  # a100 at 0.70
    assert shared.time_ps("shared_experts", "fwd") == fwd_ps
    assert plain.time_ps("shared_experts", "fwd") == 0
    for phase, factor in (("fwd", 1), ("bwd", 2)):
        diff = shared.layer_time_ps(True, phase) - plain.layer_time_ps(True, phase)
        assert abs(diff - factor * fwd_ps) <= 1, phase


def test_shared_expert_in_the_task_graph_compute_and_dp_bytes():
    """EP 16 over two servers, tp 1, two stages of 12 MoE layers, dp 1: each stage's non-expert
    gradient is all-reduced over its 16 GPUs (2 gateways), 2 * 15 gradients per stage."""
    cfg = dict(gpus=32, dp=1, tp=1, pp=2, ep=16, micro_batch=1, seq_len=64, micro_batches=2)
    plain = build_iteration(WorkloadConfig(model="qwen-moe", **cfg))
    shared_cfg = WorkloadConfig(model="qwen-moe-shared", **cfg)
    shared = build_iteration(shared_cfg)
    extra_params = 12 * 3 * 2048 * 5632  # per GPU per stage
    b = DP_BYTES[shared_cfg.dp_precision]
    want = 2 * 2 * 15 * extra_params * b
    got = shared.bytes_by_parallelism()["dp"] - plain.bytes_by_parallelism()["dp"]
    assert got == want
    for k in ("tp", "ep", "pp"):
        assert shared.bytes_by_parallelism()[k] == plain.bytes_by_parallelism()[k]
    # compute: every GPU runs its stage's 12 MoE layers for 2 micro-batches, fwd and bwd
    cm = ComputeModel("qwen-moe-shared", tp=1, micro_batch=1, seq_len=64, ep=16)
    per_pass = cm.time_ps("shared_experts", "fwd") + cm.time_ps("shared_experts", "bwd")
    busy = [np.bincount(g.gpu[g.kind == COMPUTE], weights=g.duration_ps[g.kind == COMPUTE],
                        minlength=32) for g in (shared, plain)]
    assert np.array_equal(busy[0] - busy[1], np.full(32, 12 * 2 * per_pass))


# --------------------------------------------------------------------------------------------
# resolve_model


@pytest.mark.parametrize("kwargs, want", [
    ({}, "qwen-moe"),
    (dict(qwen_shared="kept"), "qwen-moe-shared"),
    (dict(qwen_shared=True), "qwen-moe-shared"),
    (dict(qwen="sec7.3"), "qwen-moe-32"),
    (dict(qwen="sec7.3", qwen_shared=False), "qwen-moe-32"),
    (dict(qwen="sec7.3", qwen_shared="kept"), "qwen-moe-32-shared"),
    (dict(deepseek_attention="mha"), "qwen-moe"),
])
def test_resolve_qwen(kwargs, want):
    assert resolve_model("qwen-moe", **kwargs) == want
    assert want in CATALOG


def test_resolve_deepseek_and_others():
    assert resolve_model("deepseek-r1") == "deepseek-r1"
    assert resolve_model("deepseek-r1", deepseek_attention="mha") == "deepseek-r1-mha"
    assert resolve_model("deepseek-r1", qwen="sec7.3", qwen_shared="kept") == "deepseek-r1"
    # other models, explicit variants and TOML paths are returned unchanged
    for name in ("mixtral-8x7b", "qwen-moe-32", "qwen-moe-card", "deepseek-r1-mha", "m.toml"):
        assert resolve_model(name, qwen="sec7.3", qwen_shared="kept",
                             deepseek_attention="mha") == name


@pytest.mark.parametrize("kwargs, field", [
    (dict(qwen="table2"), "qwen"),
    (dict(qwen=None), "qwen"),
    (dict(qwen_shared="yes"), "qwen_shared"),
    (dict(qwen_shared=1), "qwen_shared"),
    (dict(deepseek_attention="MLA"), "deepseek_attention"),
    (dict(deepseek_attention=["mla"]), "deepseek_attention"),
])
def test_resolve_bad_switches_name_the_switch(kwargs, field):
    for name in ("qwen-moe", "mixtral-8x7b"):  # validated whatever the model
        with pytest.raises(ConfigError, match="must be one of") as e:
            resolve_model(name, **kwargs)
        assert e.value.field == field
    with pytest.raises(ConfigError) as e:
        resolve_model(None)
    assert e.value.field == "model"
