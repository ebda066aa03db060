"""Scenario configuration (fabricsim.config): TOML tables into frozen dataclasses, field errors."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from fabricsim.config import (FABRIC_BUILDERS, TRAFFIC_PATTERNS, FabricConfig, RunConfig, Scenario,
                              TrafficConfig, load_scenario)
from fabricsim.errors import ConfigError, FabricsimError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAB = {"hosts": 16, "gpus_per_server": 4}


def scenario(fabric=None, traffic=None, run=None, **kw) -> Scenario:
    data = {"fabric": dict(FAB) if fabric is None else fabric,
            "traffic": {"size_bytes": 1000} if traffic is None else traffic}
    if run is not None:
        data["run"] = run
    return Scenario.from_dict(data, **kw)


def field_of(exc_info) -> str:
    return exc_info.value.field


# ------------------------------------------------------------------------------------------------
# Defaults and round trips
# ------------------------------------------------------------------------------------------------

def test_defaults_filled_in():
    s = scenario()
    assert s.name == "scenario" and s.base_dir == "."
    f, t, r = s.fabric, s.traffic, s.run
    assert (f.builder, f.hosts, f.servers, f.link_gbps, f.k, f.oversubscription, f.oversub_build,
            f.host, f.gpus_per_server, f.nvlink_gbps, f.link_delay_us, f.build) == (
        "fat_tree", 16, None, 100.0, None, 1.0, "ports", "gpu", 4, 600 * 2**30 * 8 / 1e9, 1.0, "fat-tree")
    assert (t.pattern, t.size_bytes, t.size_min_bytes, t.size_max_bytes, t.group_size, t.fan_in,
            t.target, t.file, t.start_us, t.seed) == (
        "permutation", 1000, None, None, None, None, 0, None, 0.0, 0)
    assert (r.engine, r.seed, r.tolerance, r.sample_us, r.profile) == ("flow", 0, 0.01, 10.0, "released")
    assert r == RunConfig()
    assert s.packet.mtu_bytes == 1500  # the released fat-tree binary's packets


@pytest.mark.parametrize("builder, extra, profile, nvlink_gbps, mtu", [
    ("fat_tree", "hosts = 16\ngpus_per_server = 4", "released", 600 * 2**30 * 8 / 1e9, 1500),
    ("fat_tree", "hosts = 16\ngpus_per_server = 4", "physical", 7200.0, 9000),
    ("mixnet", "servers = 4", "released", 600 * 2**30 * 8 / 1e9, 9000),
    ("rail_optimized", "servers = 4", "released", 600 * 2**30 * 8 / 1e9, 1500),
])
def test_profile_sets_nvlink_and_packet_size_defaults(tmp_path, builder, extra, profile, nvlink_gbps, mtu):
    """run.profile (or load_scenario(profile=...)) fills what the file leaves out: NVLink 600 GiB/s
    (released code) or 900 GB/s (the paper's text), and 1500 B packets on the fat-tree binaries,
    9000 B on MixNet (released) or 9000 B everywhere (physical). Explicit values win."""
    from fabricsim.config import load_scenario

    path = tmp_path / "s.toml"
    path.write_text(f'[fabric]\nbuilder = "{builder}"\n{extra}\n[traffic]\nsize_bytes = 1000\n'
                    f'[run]\nprofile = "{profile}"\n')
    s = load_scenario(path)
    assert s.fabric.nvlink_gbps == pytest.approx(nvlink_gbps) and s.packet.mtu_bytes == mtu
    other = "physical" if profile == "released" else "released"
    assert load_scenario(path, profile=other).run.profile == other
    path.write_text(f'[fabric]\nbuilder = "{builder}"\n{extra}\nnvlink_gbps = 1000\n[traffic]\n'
                    f'size_bytes = 1000\n[run]\nprofile = "{profile}"\n[packet]\nmtu_bytes = 4064\n')
    s = load_scenario(path)
    assert s.fabric.nvlink_gbps == 1000 and s.packet.mtu_bytes == 4064
    path.write_text('[fabric]\nhosts = 16\n[traffic]\nsize_bytes = 1\n[run]\nprofile = "paper"\n')
    with pytest.raises(ConfigError, match="run.profile"):
        load_scenario(path)


def test_to_dict_has_every_field_resolved():
    d = scenario(name="x").to_dict()
    assert set(d) == {"name", "fabric", "traffic", "run"}
    assert d["name"] == "x"
    assert set(d["fabric"]) == {f.name for f in dataclasses.fields(FabricConfig)}
    assert set(d["traffic"]) == {f.name for f in dataclasses.fields(TrafficConfig)}
    assert set(d["run"]) == {f.name for f in dataclasses.fields(RunConfig)}
    assert d["fabric"]["link_gbps"] == 100.0 and d["run"]["tolerance"] == 0.01
    json.dumps(d)  # JSON-ready, as recorded in trace metadata


@pytest.mark.parametrize("data", [
    {"fabric": dict(FAB), "traffic": {"size_bytes": 5}},
    {"fabric": {"hosts": 64, "k": 8, "link_gbps": 400, "oversubscription": 3, "oversub_build": "speed",
                "host": "server", "link_delay_us": 0.5},
     "traffic": {"pattern": "all_to_all", "group_size": 8, "size_min_bytes": 1, "size_max_bytes": 9,
                 "seed": 3, "start_us": 2.5},
     "run": {"seed": 7, "tolerance": 0.0, "sample_us": 0}},
    {"fabric": {"builder": "rail_optimized", "servers": 4, "build": "superpod", "nvlink_gbps": 7200},
     "traffic": {"pattern": "incast", "fan_in": 3, "target": 2, "size_bytes": 0}},
    {"fabric": dict(FAB), "traffic": {"pattern": "matrix", "file": "m.npy"}},
])
def test_from_dict_to_dict_roundtrip(data):
    s = Scenario.from_dict(data, base_dir="/some/where", name="rt")
    d = s.to_dict()
    again = Scenario.from_dict({k: d[k] for k in ("fabric", "traffic", "run")}, base_dir="/some/where",
                               name=d["name"])
    assert again == s
    assert again.to_dict() == d
    # through JSON too (what traces store)
    j = json.loads(json.dumps(d))
    assert Scenario.from_dict({k: j[k] for k in ("fabric", "traffic", "run")}, base_dir="/some/where",
                              name=j["name"]) == s
    # every key given is kept
    for table in ("fabric", "traffic", "run"):
        for key, value in data.get(table, {}).items():
            assert d[table][key] == value


def test_int_accepted_for_float_fields_and_stored_as_float():
    s = scenario(fabric={**FAB, "link_gbps": 400, "link_delay_us": 2},
                 traffic={"size_bytes": 1, "start_us": 3})
    assert isinstance(s.fabric.link_gbps, float) and s.fabric.link_gbps == 400.0
    assert isinstance(s.fabric.link_delay_us, float)
    assert isinstance(s.traffic.start_us, float)


def test_frozen():
    s = scenario()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.fabric.hosts = 32
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.name = "y"


def test_load_example_scenario():
    path = os.path.join(ROOT, "examples", "small.toml")
    s = load_scenario(path)
    assert s.name == "small"
    assert s.base_dir == os.path.join(ROOT, "examples")
    assert (s.fabric.builder, s.fabric.hosts, s.fabric.link_gbps) == ("fat_tree", 128, 100.0)
    assert (s.traffic.pattern, s.traffic.group_size, s.traffic.size_min_bytes,
            s.traffic.size_max_bytes, s.traffic.seed) == ("all_to_all", 32, 65536, 1048576, 1)
    assert (s.run.engine, s.run.sample_us) == ("flow", 10.0)


def test_load_scenario_accepts_pathlike_and_resolves_base_dir(tmp_path):
    p = tmp_path / "sub" / "my-run.toml"
    p.parent.mkdir()
    p.write_text('[fabric]\nhosts = 16\ngpus_per_server = 4\n[traffic]\nsize_bytes = 10\n')
    s = load_scenario(p)
    assert s.name == "my-run" and s.base_dir == str(p.parent)
    assert s.run == RunConfig()  # [run] is optional


def test_config_error_is_value_error_with_field():
    # k is checked when the fabric is built
    with pytest.raises(ConfigError) as ei:
        scenario(fabric={**FAB, "k": 7}).fabric.build_fabric()
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, FabricsimError)
    assert ei.value.field == "fabric.k"
    assert str(ei.value).startswith("fabric.k: ")
    assert "7" in str(ei.value)


# ------------------------------------------------------------------------------------------------
# Flow sizes: constant or spread
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("traffic", [
    {"size_bytes": 0},
    {"size_bytes": 1 << 40},
    {"size_min_bytes": 0, "size_max_bytes": 0},
    {"size_min_bytes": 10, "size_max_bytes": 10},
    {"size_min_bytes": 10, "size_max_bytes": 20},
])
def test_size_rules_accept(traffic):
    t = scenario(traffic=traffic).traffic
    for key, value in traffic.items():
        assert getattr(t, key) == value


@pytest.mark.parametrize("traffic,field", [
    ({}, "traffic.size_bytes"),  # neither
    ({"size_bytes": 1, "size_min_bytes": 1, "size_max_bytes": 2}, "traffic.size_bytes"),  # both
    ({"size_bytes": 1, "size_max_bytes": 2}, "traffic.size_bytes"),
    ({"size_min_bytes": 1}, "traffic.size_min_bytes"),  # half a spread
    ({"size_max_bytes": 1}, "traffic.size_min_bytes"),
    ({"size_min_bytes": 5, "size_max_bytes": 4}, "traffic.size_min_bytes"),
    ({"size_min_bytes": -1, "size_max_bytes": 4}, "traffic.size_min_bytes"),
    ({"size_bytes": -5}, "traffic.size_bytes"),
    ({"size_bytes": 1.5}, "traffic.size_bytes"),
    ({"size_bytes": "1k"}, "traffic.size_bytes"),
    ({"pattern": "matrix", "file": "m.npy", "size_bytes": 1}, "traffic.size_bytes"),
    ({"pattern": "matrix", "file": "m.npy", "size_min_bytes": 1, "size_max_bytes": 2}, "traffic.size_bytes"),
])
def test_size_rules_reject(traffic, field):
    with pytest.raises(ConfigError) as ei:
        scenario(traffic=traffic)
    assert field_of(ei) == field


# ------------------------------------------------------------------------------------------------
# Every other field
# ------------------------------------------------------------------------------------------------

S = {"size_bytes": 1}


@pytest.mark.parametrize("fabric,traffic,run,field", [
    # unknown keys / tables handled below; values and types here
    ({**FAB, "builder": "torus"}, S, None, "fabric.builder"),
    ({"gpus_per_server": 4}, S, None, "fabric.hosts"),  # required for fat_tree
    ({**FAB, "servers": 2}, S, None, "fabric.servers"),
    ({"builder": "rail_optimized"}, S, None, "fabric.servers"),
    ({"builder": "rail_optimized", "servers": 2, "hosts": 16}, S, None, "fabric.hosts"),
    ({**FAB, "link_gbps": "fast"}, S, None, "fabric.link_gbps"),
    ({**FAB, "link_gbps": True}, S, None, "fabric.link_gbps"),
    ({**FAB, "link_gbps": float("nan")}, S, None, "fabric.link_gbps"),
    ({**FAB, "link_gbps": float("inf")}, S, None, "fabric.link_gbps"),
    ({**FAB, "hosts": True}, S, None, "fabric.hosts"),
    ({**FAB, "hosts": 16.0}, S, None, "fabric.hosts"),
    ({**FAB, "k": "8"}, S, None, "fabric.k"),
    ({**FAB, "link_delay_us": -1}, S, None, "fabric.link_delay_us"),
    ({**FAB, "host": 1}, S, None, "fabric.host"),
    (FAB, {"pattern": "ring", **S}, None, "traffic.pattern"),
    (FAB, {"pattern": 3, **S}, None, "traffic.pattern"),
    (FAB, {"pattern": "matrix"}, None, "traffic.file"),
    (FAB, {"file": "m.npy", **S}, None, "traffic.file"),
    (FAB, {"group_size": 4, **S}, None, "traffic.group_size"),  # permutation
    (FAB, {"pattern": "all_to_all", "group_size": 1, **S}, None, "traffic.group_size"),
    (FAB, {"pattern": "all_to_all", "fan_in": 2, **S}, None, "traffic.fan_in"),
    (FAB, {"pattern": "incast", "fan_in": 0, **S}, None, "traffic.fan_in"),
    (FAB, {"start_us": -1, **S}, None, "traffic.start_us"),
    (FAB, {"seed": 1.5, **S}, None, "traffic.seed"),
    (FAB, S, {"engine": "warp"}, "run.engine"),
    (FAB, S, {"tolerance": -0.1}, "run.tolerance"),
    (FAB, S, {"sample_us": -1}, "run.sample_us"),
    (FAB, S, {"seed": "x"}, "run.seed"),
    (3, S, None, "fabric"),
    (FAB, [1], None, "traffic"),
    (FAB, S, "fast", "run"),
])
def test_bad_fields(fabric, traffic, run, field):
    with pytest.raises(ConfigError) as ei:
        scenario(fabric=fabric, traffic=traffic, run=run)
    assert field_of(ei) == field
    assert "\n" not in str(ei.value)


@pytest.mark.parametrize("table", ["fabric", "traffic", "run"])
def test_unknown_key(table):
    data = {"fabric": dict(FAB), "traffic": dict(S), "run": {}}
    data[table]["colour"] = "blue"
    with pytest.raises(ConfigError) as ei:
        Scenario.from_dict(data)
    assert ei.value.field == f"{table}.colour"
    assert "unknown key" in str(ei.value)
    # the message lists what is allowed
    cls = {"fabric": FabricConfig, "traffic": TrafficConfig, "run": RunConfig}[table]
    for f in dataclasses.fields(cls):
        assert f.name in str(ei.value)


def test_unknown_and_missing_tables():
    with pytest.raises(ConfigError) as ei:
        Scenario.from_dict({"fabric": dict(FAB), "traffic": dict(S), "sweep": {}})
    assert ei.value.field == "sweep" and "unknown table" in str(ei.value)
    with pytest.raises(ConfigError) as ei:
        Scenario.from_dict({"traffic": dict(S)})
    assert ei.value.field == "fabric"
    with pytest.raises(ConfigError) as ei:
        Scenario.from_dict({"fabric": dict(FAB)})
    assert ei.value.field == "traffic"


def test_every_builder_and_pattern_accepted():
    for b in FABRIC_BUILDERS:
        fab = dict(FAB) if b == "fat_tree" else {"builder": b, "servers": 2}
        assert scenario(fabric=fab).fabric.builder == b
    for p in TRAFFIC_PATTERNS:
        t = {"pattern": p, "file": "m.csv"} if p in ("matrix", "htsim") else {"pattern": p, **S}
        assert scenario(traffic=t).traffic.pattern == p


def test_load_scenario_file_errors(tmp_path):
    with pytest.raises(ConfigError) as ei:
        load_scenario(tmp_path / "nope.toml")
    assert ei.value.field == "scenario" and "not found" in str(ei.value)
    bad = tmp_path / "bad.toml"
    bad.write_text("[fabric\nhosts = 16\n")
    with pytest.raises(ConfigError) as ei:
        load_scenario(bad)
    assert ei.value.field == "scenario" and "not valid TOML" in str(ei.value)


def test_load_scenario_not_utf8(tmp_path):
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b"[fabric]\nhosts = 16 # caf\xe9\n[traffic]\nsize_bytes = 1\n")
    with pytest.raises(ConfigError) as ei:
        load_scenario(bad)
    assert ei.value.field == "scenario"


@pytest.mark.parametrize("packet,field", [
    ({"nic_scheduling": "drr"}, "packet.nic_scheduling"),
    ({"nic_scheduling": 1}, "packet.nic_scheduling"),
    ({"dctcp_g": 0}, "packet.dctcp_g"),
    ({"mtu_bytes": 64}, "packet.mtu_bytes"),
    ({"buffer_pkts": 0}, "packet.buffer_pkts"),
])
def test_bad_packet_fields(packet, field):
    with pytest.raises(ConfigError) as e:
        Scenario.from_dict({"fabric": dict(FAB), "traffic": {"size_bytes": 1000}, "packet": packet})
    assert field_of(e) == field


@pytest.mark.parametrize("nic", ["fifo", "round-robin"])
def test_packet_nic_scheduling_reaches_the_kernel(nic):
    s = Scenario.from_dict({"fabric": dict(FAB), "traffic": {"size_bytes": 1000},
                            "packet": {"nic_scheduling": nic}})
    assert s.packet.params().nic_scheduling == nic


def test_sweep_file_given_as_a_scenario_says_so():
    with pytest.raises(ConfigError) as e:
        load_scenario(os.path.join(ROOT, "examples", "sweep-small.toml"))
    assert field_of(e) == "scenario" and "fabricsim sweep" in str(e.value)
