"""Modelling switches and profiles (fabricsim.profiles): resolution on Point, what each switch
does in closed form, and how results record them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fabricsim.errors import ConfigError
from fabricsim.experiment import Point, _workload, build_fabric, point_id
from fabricsim.profiles import (NVLINK_GBPS, PROFILES, SWITCHES, packet_mtu_bytes, resolve_switches,
                                switch_names)
from fabricsim.sweep import resolve_point
from fabricsim.workload import build_iteration
from fabricsim.workload.gating import REFERENCE_MATRIX
from fabricsim.workload.taskgraph import OPS

PAPER = {"mixtral-8x22b": dict(tp=8, ep=8, pp=8), "mixtral-8x7b": dict(tp=4, ep=8, pp=4),
         "qwen-moe": dict(tp=1, ep=16, pp=4), "llama-moe": dict(tp=1, ep=16, pp=4),
         "deepseek-r1": dict(tp=1, ep=64, pp=16, layer_split="balanced")}


def test_every_switch_has_both_profiles_and_documents_every_value():
    assert set(PROFILES) == {"released", "physical"}
    for s in SWITCHES:
        assert s.released in s.values and s.physical in s.values
        assert set(s.why) == set(s.values), s.name
    differ = [s.name for s in SWITCHES if s.released != s.physical]
    assert {"a2a_sizing", "compute_pacing", "micro_batches_rule", "nvlink"} <= set(differ)


def test_point_resolves_switches_from_its_profile_explicit_wins():
    p = Point()
    assert p.switches == PROFILES["released"]
    assert p.to_dict()["mode"] == "exact" and p.to_dict()["profile"] == "released"
    q = Point(profile="physical", mode="isolated")
    assert q.switches == {**PROFILES["physical"], "mode": "isolated"}
    # an explicit value equal to the profile's is the same point (same id)
    assert point_id(resolve_point(Point(mode="exact"))) == point_id(resolve_point(Point()))
    assert point_id(resolve_point(Point(profile="physical"))) != point_id(resolve_point(Point()))


@pytest.mark.parametrize("kw, field", [(dict(profile="paper"), "profile"),
                                       (dict(a2a_sizing="tiled"), "a2a_sizing"),
                                       (dict(mode="fast"), "mode"),
                                       (dict(nvlink="1800"), "nvlink")])
def test_bad_switch_values_name_the_field(kw, field):
    with pytest.raises(ConfigError) as e:
        Point(**kw)
    assert e.value.field == field and "must be one of" in str(e.value)


@pytest.mark.parametrize("model, gpus, expected", [
    # the released FlexFlow command: --batchsize 128 --microbatchsize 8, per data-parallel replica
    ("mixtral-8x22b", 1024, 8),   # dp 2: 128 / 8 / 2
    ("mixtral-8x7b", 1024, 2),    # dp 8
    ("qwen-moe", 1024, 1),        # dp 16: 128 / 8 / 16
    ("deepseek-r1", 1024, 16),    # dp 1
    ("mixtral-8x7b", 128, 16),    # dp 1
])
def test_micro_batches_from_the_flexflow_flags(model, gpus, expected):
    p = Point(model=model, gpus=gpus, **PAPER[model])
    assert _workload(p).n_micro_batches == expected
    assert _workload(dataclasses.replace(p, micro_batches_rule="pp")).n_micro_batches == p.pp
    assert _workload(dataclasses.replace(p, micro_batches=3)).n_micro_batches == 3
    assert _workload(dataclasses.replace(p, global_batch=256)).n_micro_batches == 2 * expected


def _dispatch_bytes(point):
    g = build_iteration(dataclasses.replace(_workload(point), micro_batches=1))
    t = int(np.flatnonzero(g.op == OPS.index("ep_dispatch"))[0])
    return int(g.flows(t)[2].sum())


@pytest.mark.parametrize("ep", [8, 16, 32])
def test_a2a_bytes_under_both_sizings(ep):
    """One dispatch of Qwen-MoE-32 (tp 1, hidden 2048, bf16, top-4): released sizing sends per GPU
    pair T * top_k * W[s % 8][d % 8] / 32768 tokens (ep/8 times a rank's copies in all), the
    renormalized reading exactly the rank's T * top_k copies."""
    tokens = 8 * 4096
    base = Point(model="qwen-moe", qwen="sec7.3", gpus=ep * 4, tp=1, ep=ep, pp=1, dp=4)
    released = _dispatch_bytes(base)
    renormalized = _dispatch_bytes(dataclasses.replace(base, a2a_sizing="renormalized"))
    w = np.array([[REFERENCE_MATRIX[s % 8, d % 8] for d in range(ep)] for s in range(ep)])
    per_pair = w * (tokens * 4) // 32768
    np.fill_diagonal(per_pair, 0)
    assert released == int(per_pair.sum()) * 2048 * 2
    if ep == 8:  # a row of 32,768 tokens x 4 copies is W x 4 exactly: both readings agree
        assert renormalized == released
    else:  # renormalized: each tiled row rescaled to the rank's copies, so ep/8 times less
        assert released / renormalized == pytest.approx(ep / 8, rel=0.01)


def test_a2a_counts_copies_halves_mixtral_dispatch():
    p = Point(model="mixtral-8x7b", gpus=32, tp=4, ep=8, pp=1)
    assert _dispatch_bytes(p) == 2 * _dispatch_bytes(dataclasses.replace(p, a2a_counts="copies"))


def test_nvlink_switch_sets_the_nvlink_capacity():
    from fabricsim.fabric import LINK_KINDS

    for fabric in ("fattree", "railopt", "mixnet", "topoopt"):
        for value in ("code", "text"):
            p = Point(model="mixtral-8x7b", gpus=32, tp=4, ep=8, pp=1, fabric=fabric, nvlink=value)
            fab, _ = build_fabric(p, build_iteration(_workload(p)))
            nv = fab.links.capacity_bps[fab.links.kind == LINK_KINDS.index("nvlink")]
            assert np.allclose(nv, NVLINK_GBPS[value] * 1e9), (fabric, value)
    assert NVLINK_GBPS["code"] == pytest.approx(600 * 2**30 * 8 / 1e9)
    assert NVLINK_GBPS["text"] == 7200.0


@pytest.mark.parametrize("fabric, released, physical", [
    ("fattree", 1500, 9000), ("oversub", 1500, 9000), ("railopt", 1500, 9000),
    ("mixnet", 9000, 9000), ("topoopt", 9000, 9000)])
def test_packet_size_per_fabric(fabric, released, physical):
    """Reference 5.2: the fat-tree binary used 1500 B packets, MixNet (and TopoOpt's flat binary)
    9000 B."""
    assert packet_mtu_bytes(PROFILES["released"]["packet_size"], fabric) == released
    assert packet_mtu_bytes(PROFILES["physical"]["packet_size"], fabric) == physical


def test_run_point_hands_the_packet_size_to_the_packet_engine(monkeypatch):
    import fabricsim.runner as runner

    seen = {}

    def fake(graph, fabric, **kw):
        seen.update(kw)
        raise RuntimeError("stop")

    monkeypatch.setattr(runner, "run_iteration", fake)
    from fabricsim.experiment import run_point

    for fabric, mtu in (("fattree", 1500), ("mixnet", 9000)):
        with pytest.raises(RuntimeError, match="stop"):
            run_point(Point(model="mixtral-8x7b", gpus=32, tp=4, ep=8, pp=1, fabric=fabric,
                            engine="packet"))
        assert seen["packet_params"].mtu_bytes == mtu and seen["mode"] == "exact"


def test_qwen_and_deepseek_switches_pick_the_catalog_entry():
    assert _workload(Point(model="qwen-moe", **PAPER["qwen-moe"])).model == "qwen-moe"
    assert _workload(Point(model="qwen-moe", **PAPER["qwen-moe"], qwen_shared="kept")).model == \
        "qwen-moe-shared"
    assert _workload(Point(model="qwen-moe", tp=1, ep=32, pp=4, qwen="sec7.3")).model == "qwen-moe-32"
    p = Point(model="deepseek-r1", gpus=1024, **PAPER["deepseek-r1"])
    assert _workload(p).model == "deepseek-r1"
    assert _workload(dataclasses.replace(p, deepseek_attention="mha")).model == "deepseek-r1-mha"


def test_resolve_switches_fills_everything():
    got = resolve_switches("physical", {"nvlink": "code"})
    assert set(got) == set(switch_names()) and got["nvlink"] == "code"
    assert got["compute_pacing"] == "load"
