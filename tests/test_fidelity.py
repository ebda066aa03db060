"""``reproduce --study fidelity``: which flips run, which are provably no-ops, the summary ratios,
and the command end to end on a tiny study."""

from __future__ import annotations

import contextlib
import io
import math

import pandas as pd
import pytest

from fabricsim import fidelity
from fabricsim.cli import main
from fabricsim.experiment import Point
from fabricsim.profiles import PROFILES, SWITCHES
from fabricsim.reproduce import study_points


def _p(**kw):
    base = dict(model="mixtral-8x7b", gpus=128, tp=4, ep=8, pp=4)
    return Point(**{**base, **kw})


@pytest.mark.parametrize("switch, value, point, expected", [
    ("packet_size", "9000", _p(), False),                      # the flow engine has no packets
    ("packet_size", "9000", _p(engine="packet"), True),
    ("qwen", "sec7.3", _p(), False),                           # not Qwen-MoE
    ("qwen", "sec7.3", _p(model="qwen-moe", tp=1, ep=16), True),
    ("deepseek_attention", "mha", _p(), False),
    ("a2a_sizing", "renormalized", _p(), False),               # ep 8, 32768 x 2 copies: same rows
    ("a2a_sizing", "renormalized", _p(model="qwen-moe", tp=1, ep=16), True),
    ("a2a_counts", "copies", _p(gating="synthetic"), False),   # only the reference matrix
    ("dp_experts", "sharded", _p(model="qwen-moe", tp=1, ep=16), False),  # tp 1
    ("dp_experts", "sharded", _p(), True),
    ("micro_batches_rule", "pp", _p(gpus=1024, tp=8, pp=8, model="mixtral-8x22b"), False),  # 8 = pp
    ("micro_batches_rule", "pp", _p(), True),                  # 128 GPUs: 16 micro-batches vs 4
    ("nic_pooling", "pooled", _p(fabric="mixnet"), False),     # MixNet pools already
    ("nic_pooling", "pooled", _p(fabric="fattree"), True),
    ("nic_pooling", "per-nic", _p(fabric="railopt"), False),   # per-NIC already
    ("nic_pooling", "per-nic", _p(fabric="topoopt"), True),
    ("mode", "isolated", _p(mode="isolated"), False),          # already isolated
    ("compute_pacing", "load", _p(), True),
])
def test_applies(switch, value, point, expected):
    assert fidelity.applies(switch, value, point) is expected


def test_points_flip_one_switch_each_and_label_it():
    base = study_points("main", quick=True, models=["qwen-moe"], link_speeds=[400],
                        fabrics=["fattree", "mixnet"])
    labeled = fidelity.fidelity_points(base)
    assert [lab for lab, _ in labeled[:len(base)]] == ["baseline"] * len(base)
    released = PROFILES["released"]
    for lab, p in labeled[len(base):]:
        name, value = lab.split("=")
        differ = {k for k in released if p.switches[k] != released[k]}
        assert differ == {name} and p.switches[name] == value
        assert fidelity.applies(name, value, dataclasses_replace(p, name, released[name]))
    qwen = [p for lab, p in labeled if lab == "qwen=sec7.3"]
    assert qwen and all(p.ep == 32 for p in qwen)  # section 7.3: 32 experts, 32-way EP
    every = {f"{s.name}={v}" for s in SWITCHES for v in s.values if v != s.released}
    assert {lab for lab, _ in labeled} - {"baseline"} <= every


def dataclasses_replace(point, name, value):
    import dataclasses

    extra = {"ep": 16} if name == "qwen" else {}
    return dataclasses.replace(point, **{name: value}, **extra)


def test_summary_ratios_by_hand():
    rows = []
    for flip, (ft, mx, to) in (("baseline", (10.0, 8.0, 12.0)), ("x=y", (10.0, 12.5, 10.0))):
        for fabric, t in (("fattree", ft), ("mixnet", mx), ("topoopt", to)):
            rows.append(dict(flip=flip, model="m", link_gbps=100.0, fabric=fabric,
                             iteration_time_s=t, perf_per_dollar_norm=2.0 if fabric == "mixnet" else 1.0,
                             simulated=True))
    s = {r["flip"]: r for r in fidelity.summary_rows(rows)}
    assert s["baseline"]["mixnet_over_fattree"] == pytest.approx(0.8)
    assert s["baseline"]["topoopt_over_mixnet"] == pytest.approx(1.5)
    assert s["x=y"]["mixnet_over_fattree"] == pytest.approx(1.25)
    assert s["x=y"]["topoopt_over_mixnet"] == pytest.approx(0.8)
    assert s["x=y"]["perf_per_dollar"] == 2.0
    text = fidelity.format_summary(list(s.values()))
    assert "baseline" in text and "x=y" in text and "0.80" in text


def test_the_study_refuses_switch_options():
    with pytest.raises(Exception, match="fidelity study starts from the released profile"):
        study_points("fidelity", quick=True, compute_pacing="load")


def test_fidelity_command_on_a_tiny_study(tmp_path):
    out = tmp_path / "fid"
    buf_out, buf_err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(buf_err):
        rc = main(["reproduce", "--study", "fidelity", "--quick", "--models", "qwen-moe",
                   "--link-gbps", "400", "--fabrics", "fattree,mixnet", "--out", str(out), "--quiet"])
    assert rc == 0, buf_err.getvalue()
    df = pd.read_parquet(out / "results.parquet")
    summary = pd.read_parquet(out / "fidelity.parquet")
    flips = set(df.flip)
    # every flip covers every (fabric) point: simulated, or the baseline row where it cannot apply
    for flip in flips:
        assert set(df[df.flip == flip].fabric) == {"fattree", "mixnet"}, flip
    assert {"baseline", "a2a_sizing=renormalized", "nic_pooling=pooled", "qwen=sec7.3"} <= flips
    copied = df[~df.simulated]
    assert set(copied.flip) >= {"packet_size=9000", "deepseek_attention=mha"}
    base = df[df.flip == "baseline"].set_index("fabric").iteration_time_s
    for flip in ("packet_size=9000", "deepseek_attention=mha"):
        same = df[df.flip == flip].set_index("fabric").iteration_time_s
        assert (same == base).all()
    pooled = summary[summary.flip == "nic_pooling=pooled"].mixnet_over_fattree.iloc[0]
    baseline = summary[summary.flip == "baseline"].mixnet_over_fattree.iloc[0]
    assert math.isfinite(pooled) and pooled != baseline  # the fat-tree pooled runs differently
    assert (out / "fidelity.png").stat().st_size > 5000
    text = buf_out.getvalue()
    assert "MixNet/fat-tree" in text and "fidelity.png" in text
