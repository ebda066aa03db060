"""Model catalog (fabricsim.workload.models) and parallel placement (fabricsim.workload.placement)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabricsim.errors import ConfigError
from fabricsim.workload import CATALOG, get_model, load_model_toml, place
from fabricsim.workload.traffic import total_params

PAPER_MODELS = ["mixtral-8x7b", "mixtral-8x22b", "llama-moe", "qwen-moe", "deepseek-r1"]


def test_catalog_has_the_paper_models_and_their_card_variants():
    for name in PAPER_MODELS + ["mixtral-8x22b-card", "qwen-moe-32", "qwen-moe-card",
                                "qwen-moe-shared", "qwen-moe-32-shared", "deepseek-r1-mha"]:
        assert name in CATALOG
    ds = CATALOG["deepseek-r1"]
    assert (ds.dense_layers, ds.moe_layers, ds.routed_experts, ds.shared_experts, ds.top_k) == \
        (3, 58, 256, 1, 8)
    assert ds.layers == 61 and not ds.is_moe_layer(2) and ds.is_moe_layer(3)
    assert CATALOG["mixtral-8x22b"].heads == 32 and CATALOG["mixtral-8x22b-card"].heads == 48
    assert CATALOG["qwen-moe"].routed_experts == 64 and CATALOG["qwen-moe-32"].routed_experts == 32
    m = CATALOG["mixtral-8x7b"]
    assert (m.layers, m.hidden, m.expert_ffn, m.routed_experts, m.top_k, m.kv_heads) == \
        (32, 4096, 14336, 8, 2, 8)
    assert m.head_dim == 128 and m.dense_ffn == m.expert_ffn


@pytest.mark.parametrize("name, card_billions, digits", [
    ("mixtral-8x7b", 46.7, 1), ("mixtral-8x22b-card", 141, 0), ("llama-moe", 6.7, 1),
    ("qwen-moe-card", 14.3, 1), ("deepseek-r1", 671, 0),
])
def test_total_parameters_round_to_the_model_cards(name, card_billions, digits):
    """The catalog's parameter count (no norms, biases or DeepSeek's MTP module) rounds to the
    total that each model card states (reference mfabric.md section 6.3)."""
    assert round(total_params(CATALOG[name]) / 1e9, digits) == card_billions


def test_model_from_toml(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text("dense_layers = 1\nmoe_layers = 3\nhidden = 256\nexpert_ffn = 512\n"
                    "routed_experts = 4\ntop_k = 2\nheads = 4\nkv_heads = 2\nvocab = 1000\n")
    m = get_model(str(path))
    assert m.name == "tiny" and m.layers == 4 and m.head_dim == 64
    assert load_model_toml(path) == m


@pytest.mark.parametrize("text, field", [
    ("moe_layers = 1\nhidden = 8\nexpert_ffn = 8\nrouted_experts = 2\ntop_k = 1\nheads = 2\n"
     "kv_heads = 2\nvocab = 10\ncolour = 1\n", "model.colour"),
    ("hidden = 8\nexpert_ffn = 8\nrouted_experts = 2\ntop_k = 1\nheads = 2\nkv_heads = 2\n"
     "vocab = 10\n", "model.moe_layers"),
    ("moe_layers = 1\nhidden = 8\nexpert_ffn = 8\nrouted_experts = 2\ntop_k = 3\nheads = 2\n"
     "kv_heads = 2\nvocab = 10\n", "model 'bad'.top_k"),
    ("moe_layers = 1\nhidden = -8\nexpert_ffn = 8\nrouted_experts = 2\ntop_k = 1\nheads = 2\n"
     "kv_heads = 2\nvocab = 10\n", "model 'bad'.hidden"),
    ("moe_layers = [", "model"),
])
def test_bad_model_files_name_the_field(tmp_path, text, field):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        get_model(str(path))
    assert e.value.field == field


def test_unknown_model_lists_the_catalog():
    with pytest.raises(ConfigError, match="mixtral-8x7b"):
        get_model("gpt-5")


@settings(max_examples=60)
@given(st.sampled_from([1, 2, 4, 8]), st.sampled_from([1, 2, 4, 8]), st.sampled_from([1, 2, 4]),
       st.sampled_from([1, 2, 4]))
def test_placement_follows_the_released_rule(tp, ep, pp, dp):
    pl = place("mixtral-8x7b", tp * ep * pp * dp, dp=dp, tp=tp, pp=pp, ep=ep, gpus_per_server=tp)
    g = np.arange(pl.gpus)
    assert np.array_equal(pl.ep_rank, (g // tp) % ep)
    assert np.array_equal(pl.tp_rank, g % tp)
    assert np.array_equal(pl.gpu(pl.stage, pl.dp_rank, pl.ep_rank, pl.tp_rank), g)
    # each (stage, dp) EP group is a contiguous block of ep * tp GPUs
    for s in range(pp):
        for d in range(dp):
            grp = pl.ep_group(s, d)
            assert np.all(pl.stage[grp] == s) and np.all(pl.dp_rank[grp] == d)
            assert np.array_equal(np.sort(pl.ep_rank[grp] * tp + pl.tp_rank[grp]), np.arange(ep * tp))


def test_table1_regions_are_contiguous_servers():
    pl = place("mixtral-8x22b", 1024, dp=2, tp=8, pp=8, ep=8)
    assert pl.servers == 128 and pl.stage_layers == (7,) * 8
    grp = pl.ep_group(3, 1)
    assert np.unique(pl.server[grp]).size == 8  # a region: ep * tp / 8 servers


def test_deepseek_needs_a_balanced_split():
    with pytest.raises(ConfigError, match="not divisible by pp = 16.*balanced") as e:
        place("deepseek-r1", 1024, ep=64, pp=16)
    assert e.value.field == "pp"
    pl = place("deepseek-r1", 1024, ep=64, pp=16, layer_split="balanced")
    assert sum(pl.stage_layers) == 61 and pl.stage_layers[:13] == (4,) * 13 and \
        pl.stage_layers[13:] == (3,) * 3
    assert pl.layer_stage(0) == 0 and pl.layer_stage(4) == 1 and pl.layer_stage(60) == 15


@pytest.mark.parametrize("kwargs, field, text", [
    (dict(gpus=128, dp=1, tp=4, pp=4, ep=4), "parallelism", "must equal the GPU count 128"),
    (dict(gpus=128, dp=1, tp=16, pp=1, ep=8), "tp", "inside a server"),
    (dict(gpus=96, dp=1, tp=1, pp=4, ep=24), "ep", "routed experts"),
    (dict(gpus=36, dp=1, tp=1, pp=9, ep=4), "gpus", "multiple of gpus_per_server"),
    (dict(gpus=40, dp=1, tp=1, pp=5, ep=8), "pp", "not divisible"),
    (dict(gpus=64, dp=0, tp=1, pp=8, ep=8), "dp", "positive integer"),
    (dict(gpus=128, dp=1, tp=1, pp=64, ep=2), "pp", "must be <= the layers"),
])
def test_invalid_placements_name_the_rule(kwargs, field, text):
    gpus = kwargs.pop("gpus")
    with pytest.raises(ConfigError, match=text) as e:
        place("mixtral-8x7b", gpus, **kwargs)
    assert e.value.field == field


def test_tp_must_divide_heads(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text("moe_layers = 2\nhidden = 96\nexpert_ffn = 8\nrouted_experts = 2\ntop_k = 1\n"
                    "heads = 6\nkv_heads = 6\nvocab = 10\n")
    with pytest.raises(ConfigError, match="attention heads") as e:
        place(str(path), 8, tp=4, ep=2)
    assert e.value.field == "tp"
