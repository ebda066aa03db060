"""Cost model: Table 4 prices, the closed-form bills of materials (mfabric.md 7.3), the paper's cost
ratios, counting from built fabrics, TOML overrides, performance per dollar, and ``fabricsim cost``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys

import pytest

from fabricsim import cost
from fabricsim.cost import (DEFAULT_PRICES, FABRICS, MAX_GPUS, SPEEDS_GBPS, BillOfMaterials, Prices,
                            bill_of_materials, bom_from_fabric, cost_table, load_prices,
                            network_cost_usd, normalized_perf_per_dollar, perf_per_dollar)
from fabricsim.errors import ConfigError

N, S = 1024, 128  # the paper's cluster: 128 servers of 8 GPUs


def counts(bom: BillOfMaterials) -> dict:
    return {k: c for k, (c, _) in bom.items.items()}


# ---------------------------------------------------------------- prices

def test_default_prices_are_table_4():
    assert SPEEDS_GBPS == (100, 200, 400, 800) and tuple(sorted(DEFAULT_PRICES)) == SPEEDS_GBPS
    table4 = {100: (99, 659, 187, 520, 100), 200: (239, 1079, 374, 520, 100),
              400: (659, 1499, 1090, 520, 100), 800: (1399, 2248, 1400, 520, 100)}
    for b, (tr, nic, eps, ocs, pp) in table4.items():
        p = DEFAULT_PRICES[b]
        assert (p.transceiver_usd, p.nic_usd, p.eps_port_usd, p.ocs_port_usd,
                p.patch_panel_port_usd) == (tr, nic, eps, ocs, pp)
        assert p.fiber_usd == 0.3 * 500 == 150
    assert DEFAULT_PRICES[800].nic_usd == pytest.approx(1.5 * DEFAULT_PRICES[400].nic_usd, abs=1)


# ---------------------------------------------------------------- closed forms at 1024 GPUs

@pytest.mark.parametrize("b", SPEEDS_GBPS)
def test_closed_forms_at_1024_gpus(b):
    p = DEFAULT_PRICES[b]
    f = p.fiber_usd
    ft = N * p.nic_usd + 6 * N * p.transceiver_usd + 5 * N * p.eps_port_usd + 3 * N * f
    for name in ("fat_tree", "rail_optimized"):
        bom = bill_of_materials(name, N, b)
        assert counts(bom) == {"nic": N, "transceiver": 6 * N, "eps_port": 5 * N, "fiber": 3 * N}
        assert bom.total_usd == pytest.approx(ft)
    n_e, n_o = S * (8 - 6), S * 6
    mx = (N * p.nic_usd + (6 * n_e + n_o) * p.transceiver_usd + 5 * n_e * p.eps_port_usd
          + n_o * p.ocs_port_usd + (3 * n_e + n_o) * f)
    bom = bill_of_materials("mixnet", N, b)
    assert counts(bom) == {"nic": N, "transceiver": 6 * n_e + n_o, "eps_port": 5 * n_e,
                           "ocs_port": n_o, "fiber": 3 * n_e + n_o}
    assert bom.total_usd == pytest.approx(mx)
    to = N * (p.nic_usd + p.transceiver_usd + p.patch_panel_port_usd) + N * f
    assert network_cost_usd("topoopt", N, b) == pytest.approx(to)


def test_mixnet_alpha_and_server_size():
    for alpha in range(0, 8):
        c = counts(bill_of_materials("mixnet", N, 400, alpha=alpha))
        n_e, n_o = S * (8 - alpha), S * alpha
        assert c["nic"] == N and c["eps_port"] == 5 * n_e and c.get("ocs_port", 0) == n_o
    c = counts(bill_of_materials("mixnet", 64, 100, alpha=2, gpus_per_server=4))
    assert c == {"nic": 64, "transceiver": 6 * 32 + 32, "eps_port": 5 * 32, "ocs_port": 32,
                 "fiber": 3 * 32 + 32}


def test_oversubscribed_fat_tree_counts_the_used_ports_of_the_k16_build():
    bom = bill_of_materials("fat_tree_3to1", N, 400)
    # k = 16, 12 hosts + 4 uplinks per ToR: 86 ToRs (85 full + 4 GPUs), 11 pods x 4 aggs, 32 cores
    assert bom.params["k"] == 16
    assert (bom.params["edge_switches"], bom.params["agg_switches"], bom.params["core_switches"]) \
        == (86, 44, 32)
    links = N + 86 * 4 + 44 * 8
    assert counts(bom) == {"nic": N, "transceiver": 2 * links, "eps_port": 2 * links - N,
                           "fiber": links}
    assert links == 1720
    # within 1% of the idealized 5N/3 links, 7N/3 ports of the baselines note
    assert counts(bom)["eps_port"] == pytest.approx(7 * N / 3, rel=0.015)
    same = bill_of_materials("fat_tree", N, 400, oversubscription=3)
    assert same.fabric == "fat_tree_3to1" and same.total_usd == bom.total_usd
    assert bill_of_materials("oversub", N, 400).total_usd == bom.total_usd  # reproduce's name


# ---------------------------------------------------------------- the paper's cost claims

def test_mixnet_is_2_3x_cheaper_at_400g_and_2_0x_on_average():
    ratios = {b: network_cost_usd("fat_tree", N, b) / network_cost_usd("mixnet", N, b)
              for b in SPEEDS_GBPS}
    assert ratios[400] == pytest.approx(2.3, abs=0.05)
    assert sum(ratios.values()) / 4 == pytest.approx(2.0, abs=0.1)
    # the exact values of the reconstructed formula (reported in the README)
    assert [round(ratios[b], 3) for b in SPEEDS_GBPS] == [1.524, 1.790, 2.289, 2.331]
    # linear per-NIC accounting: the ratio does not depend on the cluster size
    for gpus in (64, 4096, 32768):
        r = network_cost_usd("fat_tree", gpus, 400) / network_cost_usd("mixnet", gpus, 400)
        assert r == pytest.approx(ratios[400])


def test_cost_table_rows():
    rows = cost_table(N)
    assert len(rows) == len(SPEEDS_GBPS) * len(FABRICS)
    by = {(r["fabric"], r["link_gbps"]): r for r in rows}
    for b in SPEEDS_GBPS:
        assert by[("fat_tree", b)]["vs_fat_tree"] == 1.0
        assert by[("rail_optimized", b)]["fat_tree_over"] == 1.0
        r = by[("mixnet", b)]
        assert r["fat_tree_over"] == pytest.approx(1 / r["vs_fat_tree"])
        assert r["total_usd"] == pytest.approx(r["per_gpu_usd"] * N)


# ---------------------------------------------------------------- counting a built fabric

def test_bom_from_built_fabrics_gives_the_closed_forms():
    from fabricsim.fabric import fat_tree, rail_optimized
    from fabricsim.mixnet import mixnet

    for fab, name in ((fat_tree(N, 400), "fat_tree"), (rail_optimized(S, 400), "rail_optimized"),
                      (mixnet(S, 400, alpha=6), "mixnet"),
                      (fat_tree(N, 400, oversubscription=3), "fat_tree_3to1")):
        built = bom_from_fabric(fab)
        closed = bill_of_materials(name, N, 400)
        assert built.gpus == N
        assert counts(built) == counts(closed), name
        assert built.total_usd == pytest.approx(closed.total_usd)
    # the SuperPOD-style 2-tier rail build (R-B): 3N ports, 4N transceivers, 2N fibers
    c = counts(bom_from_fabric(rail_optimized(S, 100, build="superpod")))
    assert c == {"nic": N, "transceiver": 4 * N, "eps_port": 3 * N, "fiber": 2 * N}
    with pytest.raises(ConfigError, match="whole multiples"):
        bom_from_fabric(fat_tree(N, 100, oversubscription=3, oversub_build="speed"))


# ---------------------------------------------------------------- performance per dollar

def test_perf_per_dollar():
    assert perf_per_dollar(0.5, 1e6) == pytest.approx(2e-6)
    # MixNet 10% slower but 2.29x cheaper at 400G
    ft = network_cost_usd("fat_tree", N, 400)
    mx = network_cost_usd("mixnet", N, 400)
    assert normalized_perf_per_dollar(1.1, mx, 1.0, ft) == pytest.approx(ft / mx / 1.1)
    assert normalized_perf_per_dollar(2.0, ft, 2.0, ft) == 1.0
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="iteration_time_s"):
            perf_per_dollar(bad, 1.0)
        with pytest.raises(ConfigError, match="network_cost_usd"):
            perf_per_dollar(1.0, bad)


# ---------------------------------------------------------------- TOML overrides

def write(tmp_path, text, name="prices.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_toml_overrides_exactly_the_given_prices(tmp_path):
    path = write(tmp_path, "[prices.400]\ntransceiver_usd = 500\nfiber_usd = 0\n"
                           "[prices.100]\nocs_port_usd = 400.5\n")
    table = load_prices(path)
    assert set(table) == set(SPEEDS_GBPS)
    assert table[400] == Prices(transceiver_usd=500, nic_usd=1499, eps_port_usd=1090,
                                ocs_port_usd=520, patch_panel_port_usd=100, fiber_usd=0)
    assert table[100].to_dict() == {**DEFAULT_PRICES[100].to_dict(), "ocs_port_usd": 400.5}
    assert table[200] == DEFAULT_PRICES[200] and table[800] == DEFAULT_PRICES[800]
    assert DEFAULT_PRICES[400].transceiver_usd == 659  # defaults untouched
    base = bill_of_materials("mixnet", N, 400)
    new = bill_of_materials("mixnet", N, 400, prices=path)  # a path works too
    assert counts(new) == counts(base)
    tr = new.items["transceiver"][0]
    fib = new.items["fiber"][0]
    assert base.total_usd - new.total_usd == pytest.approx(tr * (659 - 500) + fib * 150)


def test_toml_can_add_a_speed_with_every_key(tmp_path):
    full = "\n".join(f"{k} = 1" for k in Prices.__dataclass_fields__)
    table = load_prices(write(tmp_path, f"[prices.1600]\n{full}\n"))
    bom = bill_of_materials("topoopt", 16, 1600, prices=table)
    assert bom.link_gbps == 1600 and bom.total_usd == 16 * 4
    with pytest.raises(ConfigError, match=r"prices\.1600: .*missing: .*fiber_usd"):
        load_prices(write(tmp_path, "[prices.1600]\nnic_usd = 1\n"))


@pytest.mark.parametrize("text, field", [
    ("[prices.400]\nnic = 1\n", "prices.400.nic"),
    ("[prices.400]\nnic_usd = -1\n", "prices.400.nic_usd"),
    ("[prices.400]\nnic_usd = 'cheap'\n", "prices.400.nic_usd"),
    ("[prices.400G]\nnic_usd = 1\n", "prices.400G"),
    ("[price.400]\nnic_usd = 1\n", "price"),
    ("[prices\nnic_usd = 1\n", "prices"),
])
def test_toml_errors_name_the_key(tmp_path, text, field):
    with pytest.raises(ConfigError) as exc:
        load_prices(write(tmp_path, text))
    assert exc.value.field == field
    assert "\n" not in str(exc.value)


def test_missing_prices_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_prices(tmp_path / "nope.toml")


# ---------------------------------------------------------------- argument errors

@pytest.mark.parametrize("kwargs, field, text", [
    (dict(fabric="clos"), "cost.fabric", "fat_tree, fat_tree_3to1, rail_optimized, mixnet, topoopt"),
    (dict(link_gbps=300), "cost.link_gbps", "100, 200, 400, 800"),
    (dict(link_gbps=400.5), "cost.link_gbps", "not interpolated"),
    (dict(link_gbps=-1), "cost.link_gbps", "> 0"),
    (dict(gpus=1020), "cost.gpus", "multiple of gpus_per_server=8"),
    (dict(gpus=0), "cost.gpus", "multiple"),
    (dict(gpus=MAX_GPUS + 8), "cost.gpus", "at most 1,000,000 (10^6 GPUs"),
    (dict(gpus=10**9), "cost.gpus", "got 1,000,000,000"),
    (dict(fabric="mixnet", alpha=8), "cost.alpha", "0 .. 7"),
    (dict(fabric="mixnet", oversubscription=3), "cost.oversubscription", "fat_tree only"),
    (dict(fabric="fat_tree_3to1", oversubscription=2), "cost.oversubscription", "3:1"),
    (dict(oversubscription=0.5), "cost.oversubscription", ">= 1"),
    (dict(prices={400: 1}), "prices", "Prices"),
])
def test_bad_arguments(kwargs, field, text):
    args = {**dict(fabric="fat_tree", gpus=N, link_gbps=400), **kwargs}
    with pytest.raises(ConfigError) as exc:
        bill_of_materials(args.pop("fabric"), args.pop("gpus"), args.pop("link_gbps"), **args)
    assert exc.value.field == field and text in exc.value.message


# ---------------------------------------------------------------- CLI (local parser, then main)

def run_local(capsys, *argv):
    """Parse with a fresh parser holding only ``fabricsim cost``; handle errors like the main CLI."""
    parser = argparse.ArgumentParser(prog="fabricsim")
    cost.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["cost", *argv])
    try:
        rc = args.func(args)
    except ConfigError as exc:
        print(f"fabricsim: error: {exc}", file=sys.stderr)
        rc = 2
    out, err = capsys.readouterr()
    return rc, out, err


BASE = ["--gpus", "1024", "--link-gbps", "400"]


def test_cli_prints_the_bill_of_materials(capsys):
    rc, out, _ = run_local(capsys, "--fabric", "mixnet", *BASE)
    assert rc == 0
    for label in ("NIC", "transceiver", "EPS switch port", "OCS port", "fiber", "total"):
        assert label in out
    assert "$5,078,272" in out  # 1024 x $4,959.25
    assert "2,304" in out and "$659" in out


def test_cli_json_shape(capsys):
    rc, out, _ = run_local(capsys, "--fabric", "fat_tree", *BASE, "--json")
    assert rc == 0
    d = json.loads(out)
    assert set(d) == {"fabric", "gpus", "link_gbps", "params", "items", "total_usd", "per_gpu_usd",
                      "notes"}
    assert (d["fabric"], d["gpus"], d["link_gbps"]) == ("fat_tree", 1024, 400)
    assert [i["item"] for i in d["items"]] == ["nic", "transceiver", "eps_port", "fiber"]
    assert all(set(i) == {"item", "count", "unit_usd", "subtotal_usd"} for i in d["items"])
    assert sum(i["subtotal_usd"] for i in d["items"]) == d["total_usd"] == 1024 * 11353


def test_cli_comparison(capsys, tmp_path):
    rc, out, _ = run_local(capsys, "--fabric", "all", "--gpus", "1024", "--link-gbps", "all")
    assert rc == 0
    assert "mixnet          1.98x" in out and "2.29x" in out
    rc, out, _ = run_local(capsys, "--fabric", "all", *BASE, "--json")
    d = json.loads(out)
    assert [r["fabric"] for r in d["rows"]] == list(FABRICS)
    assert {r["link_gbps"] for r in d["rows"]} == {400}
    path = write(tmp_path, "[prices.400]\neps_port_usd = 0\n")
    rc, out, _ = run_local(capsys, "--fabric", "topoopt", *BASE, "--prices", str(path), "--json")
    assert rc == 0 and json.loads(out)["total_usd"] == 1024 * 2408  # topoopt has no EPS ports


@pytest.mark.parametrize("argv, message", [
    (["--fabric", "clos", *BASE], "--fabric: unknown fabric 'clos'; allowed: fat_tree"),
    (["--fabric", "mixnet", "--gpus", "1024", "--link-gbps", "300"], "--link-gbps: no prices for 300"),
    (["--fabric", "mixnet", "--gpus", "1024", "--link-gbps", "fast"], "--link-gbps: must be"),
    (["--fabric", "mixnet", *BASE, "--alpha", "9"], "--alpha: must be an integer 0 .. 7"),
    (["--fabric", "mixnet", "--gpus", "1020", "--link-gbps", "400"], "--gpus: must be"),
    (["--fabric", "mixnet", "--gpus", "1e9", "--link-gbps", "400"],
     "--gpus: must be a whole number of GPUs written out, e.g. 1024 or 1000000, got '1e9'"),
    (["--fabric", "mixnet", "--gpus", "1000000000", "--link-gbps", "400"],
     "--gpus: must be at most 1,000,000 (10^6 GPUs: the largest cluster the cost model prices), "
     "got 1,000,000,000"),
    (["--fabric", "all", "--gpus", "1000000000", "--link-gbps", "all"], "--gpus: must be at most"),
])
def test_cli_errors_are_one_line(capsys, argv, message):
    rc, out, err = run_local(capsys, *argv)
    assert rc == 2 and out == ""
    assert err.startswith(f"fabricsim: error: {message}") and err.count("\n") == 1


def test_cli_bad_prices_file(capsys, tmp_path):
    path = write(tmp_path, "[prices.400]\nnic_usd = -5\n")
    rc, _, err = run_local(capsys, "--fabric", "mixnet", *BASE, "--prices", str(path))
    assert rc == 2 and "prices.400.nic_usd: must be a number >= 0" in err


def test_main_cli_cost(capsys):
    from fabricsim.cli import build_parser, main

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert "cost" in sub.choices
    assert main(["cost", "--fabric", "mixnet", *BASE, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total_usd"] == 1024 * 4959.25
    assert main(["cost", "--fabric", "mixnet", "--gpus", "1024", "--link-gbps", "300"]) == 2
    assert capsys.readouterr().err.startswith("fabricsim: error: --link-gbps: no prices for 300 Gbps")


def test_numpy_integers_are_accepted():
    import numpy as np

    bom = bill_of_materials("mixnet", np.int64(N), np.int64(400), alpha=np.int64(6))
    assert bom.total_usd == 1024 * 4959.25
    json.dumps(bom.to_dict())  # plain Python numbers


def test_tables_keep_their_columns_apart_at_the_largest_sizes():
    """The largest cluster at prices 1000x the defaults (13-digit subtotals): every cell of a
    row stays two spaces from the next, and right-aligned columns end where their headers do."""
    dear = {b: dataclasses.replace(p, **{k: v * 1000 for k, v in p.to_dict().items()})
            for b, p in DEFAULT_PRICES.items()}
    bom = bill_of_materials("mixnet", MAX_GPUS, 400, prices=dear)
    assert bom.total_usd == MAX_GPUS * 4959.25 * 1000
    lines = cost.format_bom(bom).splitlines()[1:]
    assert len(lines) == 8  # header, 5 items, total, per GPU
    assert len({len(ln) for ln in lines}) == 1  # the subtotal column is right-aligned
    for ln, cells in zip(lines, [4, 4, 4, 4, 4, 4, 2, 2]):
        assert len(re.split(r"\s{2,}", ln.strip())) == cells, ln
    assert "$4,959,250,000,000" in lines[-2] and "$1,499,000,000,000" in lines[1]

    rows = cost_table(MAX_GPUS, [100, 800], ("fat_tree", "mixnet", "topoopt"), prices=dear)
    text = cost.format_cost_table(rows, MAX_GPUS)
    body = text.splitlines()[1:8]  # header, 6 rows
    assert len({len(ln) for ln in body}) == 1
    for ln in body:
        assert len(re.split(r"\s{2,}", ln.strip())) == 6, ln
    assert "$18,092,000,000,000" in text  # fat-tree, 800 G


def test_default_sizes_print_as_before(capsys):
    """The column widths grow with the numbers only: the paper's cluster prints as documented."""
    rc, out, _ = run_local(capsys, "--fabric", "mixnet", *BASE)
    assert rc == 0 and out.splitlines()[1:3] == [
        "  item                   count        unit        subtotal",
        "  NIC                    1,024      $1,499      $1,534,976"]
