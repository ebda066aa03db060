"""Network cost model: prices per link speed, a bill of materials per fabric, performance per dollar.

Prices are Table 4 of the mFabric / MixNet paper (D.2), identical to the defaults of the project
website's calculator, plus one fiber per link at $0.3/m x 500 m = $150 (TopoOpt, the website). They
are not interpolated: a link speed without prices is an error unless a prices file (TOML) adds it.

Accounting (reference ``mfabric.md`` 7.3, the paper-consistent "actually used ports" rule): every
physical link has one fiber and two transceivers (one per end); a switch end uses one switch port,
a host end one NIC; 8 GPUs and 8 NICs per server, one NIC per GPU. With N NICs, S servers:

- ``fat_tree`` (non-blocking 3-tier) and ``rail_optimized`` (the website prices it exactly like the
  fat-tree): N NIC + 6N transceiver + 5N EPS port + 3N fiber (N host links, N edge-aggregation and
  N aggregation-core links).
- ``mixnet`` (alpha NICs per server on the OCS): with N_e = S(8 - alpha) EPS NICs and
  N_o = S alpha OCS NICs, N NIC + (6N_e + N_o) transceiver + 5N_e EPS port + N_o OCS port +
  (3N_e + N_o) fiber (an OCS link has one transceiver, at the NIC, one OCS port and one fiber).
- ``topoopt`` (flat patch panel): N (NIC + transceiver + patch-panel port) + N fiber.
- ``fat_tree_3to1`` (or ``fat_tree`` with ``oversubscription=r``): counted from the fabric that
  :func:`fabricsim.fabric.fat_tree` builds (``oversub_build="ports"``, the htsim
  ``OverSubscribedFatTree``; k = 16, 12 hosts + 4 uplinks per ToR for 1024 GPUs). Only used switches
  are built (86 of 128 ToRs, 44 of 64 aggregation switches, 32 cores), so the count is 1720 links,
  2416 ports and 3440 transceivers; the idealized 5N/3, 7N/3 and 10N/3 of the baselines note
  (1707, 2389, 3413) assume fractional switches.

:func:`bom_from_fabric` applies the same rule to any built :class:`~fabricsim.fabric.Fabric`
(links counted by kind; a link of m times the NIC speed counts as m cables); on the paper's builds
(fat-tree k = 16, rail-optimized, MixNet with 128 servers) it gives exactly the closed forms above.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from fabricsim.errors import ConfigError, require

__all__ = [
    "FABRICS",
    "FABRIC_ALIASES",
    "SPEEDS_GBPS",
    "ITEMS",
    "FIBER_USD_PER_M",
    "FIBER_LENGTH_M",
    "MAX_GPUS",
    "Prices",
    "DEFAULT_PRICES",
    "load_prices",
    "BillOfMaterials",
    "bill_of_materials",
    "bom_from_fabric",
    "network_cost_usd",
    "cost_table",
    "perf_per_dollar",
    "normalized_perf_per_dollar",
    "format_bom",
    "format_cost_table",
    "add_parser",
]

FABRICS = ("fat_tree", "fat_tree_3to1", "rail_optimized", "mixnet", "topoopt")
#: Other accepted names (the result-table names of ``fabricsim reproduce``).
FABRIC_ALIASES = MappingProxyType({"fattree": "fat_tree", "oversub": "fat_tree_3to1",
                                   "railopt": "rail_optimized"})
SPEEDS_GBPS = (100, 200, 400, 800)
#: Bill-of-materials items, in printing order, with their labels.
ITEMS = MappingProxyType({
    "nic": "NIC",
    "transceiver": "transceiver",
    "eps_port": "EPS switch port",
    "ocs_port": "OCS port",
    "patch_panel_port": "patch-panel port",
    "fiber": "fiber",
})
FIBER_USD_PER_M = 0.3
FIBER_LENGTH_M = 500.0
#: The largest cluster priced: 10^6 GPUs, several times the largest GPU clusters built. The closed
#: forms assume a 3-tier fat-tree (10^6 hosts need 160-port switches: k^3 / 4 >= 10^6), and
#: ``fat_tree_3to1`` builds the fabric to count it (10^6 GPUs: about 7 s and 0.8 GB).
MAX_GPUS = 1_000_000


def _check_price(value, name):
    require(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and value >= 0, name, f"must be a number >= 0 (USD), got {value!r}")


@dataclass(frozen=True)
class Prices:
    """Unit prices (USD) for one link speed."""

    transceiver_usd: float
    nic_usd: float
    eps_port_usd: float
    ocs_port_usd: float
    patch_panel_port_usd: float
    fiber_usd: float = FIBER_USD_PER_M * FIBER_LENGTH_M

    def __post_init__(self):
        for f in dataclasses.fields(self):
            _check_price(getattr(self, f.name), f"prices.{f.name}")
            object.__setattr__(self, f.name, float(getattr(self, f.name)))

    def unit(self, item: str) -> float:
        """The unit price of a bill-of-materials item (``nic``, ``transceiver``, ...)."""
        return float(getattr(self, f"{item}_usd"))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_PRICE_KEYS = tuple(f.name for f in dataclasses.fields(Prices))

#: Table 4 of the paper (D.2); fiber $0.3/m x 500 m. The 800G NIC is the paper's estimate (1.5x 400G).
DEFAULT_PRICES: Mapping[int, Prices] = MappingProxyType({
    100: Prices(transceiver_usd=99, nic_usd=659, eps_port_usd=187, ocs_port_usd=520,
                patch_panel_port_usd=100),
    200: Prices(transceiver_usd=239, nic_usd=1079, eps_port_usd=374, ocs_port_usd=520,
                patch_panel_port_usd=100),
    400: Prices(transceiver_usd=659, nic_usd=1499, eps_port_usd=1090, ocs_port_usd=520,
                patch_panel_port_usd=100),
    800: Prices(transceiver_usd=1399, nic_usd=2248, eps_port_usd=1400, ocs_port_usd=520,
                patch_panel_port_usd=100),
})


def load_prices(path) -> dict[int, Prices]:
    """Prices from a TOML file, on top of :data:`DEFAULT_PRICES`.

    The file has one table per link speed in Gbps, e.g. ``[prices.400]``, with any of the keys
    ``transceiver_usd``, ``nic_usd``, ``eps_port_usd``, ``ocs_port_usd``, ``patch_panel_port_usd``,
    ``fiber_usd``. A table overrides exactly the keys it gives; a speed without default prices must
    give all six. Unknown keys or speeds and negative values raise :class:`ConfigError`.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("prices", f"file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("prices", f"{path} is not valid TOML: {exc}") from None
    for key in doc:
        if key != "prices":
            raise ConfigError(key, f"unknown table in {path}; a prices file has only [prices.<Gbps>] "
                                   "tables")
    table = doc.get("prices", {})
    require(isinstance(table, dict), "prices", "must be a table of [prices.<Gbps>] tables")
    out = dict(DEFAULT_PRICES)
    for speed_key, entries in table.items():
        name = f"prices.{speed_key}"
        require(speed_key.isdigit() and int(speed_key) > 0, name,
                "unknown link speed; use an integer speed in Gbps, e.g. [prices.400] "
                f"(default speeds: {', '.join(map(str, SPEEDS_GBPS))})")
        speed = int(speed_key)
        require(isinstance(entries, dict), name, f"must be a table with keys {', '.join(_PRICE_KEYS)}")
        for key, value in entries.items():
            if key not in _PRICE_KEYS:
                raise ConfigError(f"{name}.{key}", f"unknown key; allowed keys: {', '.join(_PRICE_KEYS)}")
            _check_price(value, f"{name}.{key}")
        if speed in out:
            out[speed] = dataclasses.replace(out[speed], **{k: float(v) for k, v in entries.items()})
        else:
            missing = [k for k in _PRICE_KEYS if k not in entries]
            require(not missing, name, f"{speed} Gbps has no default prices, so the table must give "
                                       f"every key; missing: {', '.join(missing)}")
            out[speed] = Prices(**{k: float(v) for k, v in entries.items()})
    return out


def _resolve_prices(prices) -> Mapping[int, Prices]:
    if prices is None:
        return DEFAULT_PRICES
    if isinstance(prices, (str, os.PathLike)):
        return load_prices(prices)
    require(isinstance(prices, Mapping) and all(isinstance(v, Prices) for v in prices.values()),
            "prices", "must be a dict {Gbps: Prices}, a prices file path, or None (the defaults)")
    return prices


def _prices_at(prices: Mapping[int, Prices], link_gbps) -> tuple[int, Prices]:
    require(isinstance(link_gbps, numbers.Real) and not isinstance(link_gbps, bool)
            and math.isfinite(link_gbps) and link_gbps > 0, "cost.link_gbps",
            f"must be a number > 0 (Gbps), got {link_gbps!r}")
    speed = int(link_gbps) if float(link_gbps).is_integer() else None
    if speed is None or speed not in prices:
        raise ConfigError("cost.link_gbps",
                          f"no prices for {link_gbps:g} Gbps (prices are not interpolated); priced "
                          f"speeds: {', '.join(map(str, sorted(prices)))}; a prices file can add "
                          f"[prices.{link_gbps:g}]")
    return speed, prices[speed]


# --------------------------------------------------------------------------------------------
# Bill of materials
# --------------------------------------------------------------------------------------------

@dataclass
class BillOfMaterials:
    """What a fabric's network costs: ``items[name] = (count, unit_usd)`` (only items it uses)."""

    fabric: str
    gpus: int
    link_gbps: int
    items: dict
    params: dict = field(default_factory=dict)
    notes: tuple = ()

    @property
    def total_usd(self) -> float:
        return float(sum(count * unit for count, unit in self.items.values()))

    @property
    def per_gpu_usd(self) -> float:
        return self.total_usd / self.gpus

    @property
    def rows(self) -> list[tuple[str, int, float, float]]:
        """``(label, count, unit_usd, subtotal_usd)`` per item, in :data:`ITEMS` order."""
        return [(ITEMS[k], count, unit, count * unit) for k, (count, unit) in self.items.items()]

    def to_dict(self) -> dict:
        return {
            "fabric": self.fabric,
            "gpus": self.gpus,
            "link_gbps": self.link_gbps,
            "params": dict(self.params),
            "items": [{"item": k, "count": count, "unit_usd": unit, "subtotal_usd": count * unit}
                      for k, (count, unit) in self.items.items()],
            "total_usd": self.total_usd,
            "per_gpu_usd": self.per_gpu_usd,
            "notes": list(self.notes),
        }


def _make_items(p: Prices, counts: dict) -> dict:
    return {k: (int(counts[k]), p.unit(k)) for k in ITEMS if counts.get(k, 0)}


def _canonical_fabric(fabric) -> str:
    name = FABRIC_ALIASES.get(fabric, fabric)
    if name not in FABRICS:
        raise ConfigError("cost.fabric", f"unknown fabric {fabric!r}; allowed: {', '.join(FABRICS)} "
                                         f"(aliases {', '.join(FABRIC_ALIASES)})")
    return name


def bill_of_materials(fabric: str, gpus: int, link_gbps: float, *, alpha: int = 6,
                      oversubscription: float = 1.0, prices=None,
                      gpus_per_server: int = 8) -> BillOfMaterials:
    """The bill of materials of ``fabric`` for ``gpus`` GPUs (one NIC each) at ``link_gbps``.

    ``fabric`` is one of :data:`FABRICS` (or an alias of :data:`FABRIC_ALIASES`). ``alpha``: OCS
    NICs per server (``mixnet`` only). ``oversubscription``: r for an r:1 fat-tree (``fat_tree``
    only; ``fat_tree_3to1`` is r = 3). ``prices``: ``{Gbps: Prices}``, a prices TOML path, or None
    for :data:`DEFAULT_PRICES`.
    """
    name = _canonical_fabric(fabric)
    g = gpus_per_server
    require(isinstance(g, numbers.Integral) and not isinstance(g, bool) and g >= 1,
            "cost.gpus_per_server", f"must be an integer >= 1, got {g!r}")
    g = int(g)
    require(isinstance(gpus, numbers.Integral) and not isinstance(gpus, bool) and gpus >= g
            and gpus % g == 0, "cost.gpus",
            f"must be a positive multiple of gpus_per_server={g} (whole servers), got {gpus!r}")
    require(gpus <= MAX_GPUS, "cost.gpus",
            f"must be at most {MAX_GPUS:,} (10^6 GPUs: the largest cluster the cost model "
            f"prices), got {int(gpus):,}")
    require(isinstance(oversubscription, numbers.Real) and not isinstance(oversubscription, bool)
            and math.isfinite(oversubscription) and oversubscription >= 1, "cost.oversubscription",
            f"must be a number >= 1 (r for r:1), got {oversubscription!r}")
    r = float(oversubscription)
    if name == "fat_tree_3to1":
        require(r in (1.0, 3.0), "cost.oversubscription",
                f"fat_tree_3to1 is 3:1; leave oversubscription at 1 or 3, got {oversubscription!r}")
        r = 3.0
    elif name != "fat_tree":
        require(r == 1.0, "cost.oversubscription",
                f"applies to fat_tree only (got {oversubscription!r} for {name})")
    if name == "mixnet":
        alpha = int(alpha) if isinstance(alpha, numbers.Integral) else alpha
        require(isinstance(alpha, numbers.Integral) and not isinstance(alpha, bool)
                and 0 <= alpha <= g - 1, "cost.alpha",
                f"must be an integer 0 .. {g - 1} (OCS NICs per server of {g}), got {alpha!r}")
    speed, p = _prices_at(_resolve_prices(prices), link_gbps)
    n = int(gpus)
    s = n // g
    params = {"gpus_per_server": g, "servers": s}
    notes = ()
    if name in ("fat_tree", "rail_optimized") and r == 1.0:
        counts = dict(nic=n, transceiver=6 * n, eps_port=5 * n, fiber=3 * n)
        params["counted"] = "closed form (mfabric.md 7.3)"
    elif name in ("fat_tree", "fat_tree_3to1"):
        counts, built = _oversub_counts(n, r, g)
        name = f"fat_tree_{r:g}to1"
        params.update(oversubscription=r, counted="built fabric", **built)
        notes = (f"counted from fabricsim.fabric.fat_tree({n}, oversubscription={r:g}) (ports build, "
                 f"k={built['k']}): {built['edge_switches']} ToR, {built['agg_switches']} "
                 f"aggregation and {built['core_switches']} core switches in use",)
    elif name == "mixnet":
        n_e, n_o = s * (g - alpha), s * alpha
        counts = dict(nic=n, transceiver=6 * n_e + n_o, eps_port=5 * n_e, ocs_port=n_o,
                      fiber=3 * n_e + n_o)
        params.update(alpha=alpha, eps_nics=n_e, ocs_nics=n_o, counted="closed form (mfabric.md 7.3)")
    else:  # topoopt
        counts = dict(nic=n, transceiver=n, patch_panel_port=n, fiber=n)
        params["counted"] = "closed form (mfabric.md 7.3)"
    return BillOfMaterials(fabric=name, gpus=n, link_gbps=speed, items=_make_items(p, counts),
                           params=params, notes=notes)


@lru_cache(maxsize=64)
def _oversub_counts(gpus: int, r: float, g: int):
    from fabricsim.fabric import fat_tree

    fab = fat_tree(gpus, 100, oversubscription=r, gpus_per_server=g)
    counts = _count_links(fab)
    built = dict(k=int(fab.params["k"]), edge_switches=fab.count("switch", "edge"),
                 agg_switches=fab.count("switch", "agg"), core_switches=fab.count("switch", "core"))
    return counts, built


def _count_links(fab) -> dict:
    """Cables, transceivers, switch ports and NICs of a built fabric (see :func:`bom_from_fabric`)."""
    import numpy as np

    from fabricsim.fabric import LINK_EPS, NODE_SWITCH

    nic_bps = float(fab.params["link_gbps"]) * 1e9
    links, kind = fab.links, fab.nodes.kind
    fwd = np.flatnonzero((links.kind == LINK_EPS) & (np.arange(links.src.size) % 2 == 0))
    mult = links.capacity_bps[fwd] / nic_bps  # parallel cables per link
    whole = np.round(mult)
    if fwd.size and (np.any(whole < 1) or np.any(np.abs(mult - whole) > 1e-9)):
        raise ConfigError("fabric", "has links that are not whole multiples of the NIC speed (e.g. an "
                                    "oversubscription 'speed' build); cost counts cables of link_gbps")
    whole = whole.astype(np.int64)
    switch_ends = (kind[links.src[fwd]] == NODE_SWITCH).astype(np.int64) + \
        (kind[links.dst[fwd]] == NODE_SWITCH).astype(np.int64)
    cables = int(whole.sum())
    ports = int((whole * switch_ends).sum())
    nic_ends = 2 * cables - ports
    counts = dict(nic=nic_ends, transceiver=2 * cables, eps_port=ports, fiber=cables)
    n_o = fab.params.get("servers", 0) * fab.params.get("alpha", 0) if fab.params.get(
        "builder") == "mixnet" else 0
    if n_o:
        counts.update(nic=nic_ends + n_o, transceiver=2 * cables + n_o, ocs_port=n_o,
                      fiber=cables + n_o)
    return counts


def bom_from_fabric(fabric, *, prices=None) -> BillOfMaterials:
    """The bill of materials of a built :class:`~fabricsim.fabric.Fabric`, counting its links.

    Each electrical link (a duplex pair of ``eps`` links) of ``m`` times the NIC speed
    (``fabric.params["link_gbps"]``) is ``m`` cables; a cable is one fiber and two transceivers,
    and each of its ends is a switch port (switch) or a NIC (host). A MixNet fabric adds its
    ``servers * alpha`` OCS NICs, each with one transceiver, one OCS port and one fiber (its
    circuits change during a run; the cables do not). NVLink links cost nothing here.
    """
    speed, p = _prices_at(_resolve_prices(prices), float(fabric.params["link_gbps"]))
    counts = _count_links(fabric)
    g = int(fabric.params.get("gpus_per_server", 1))
    params = {k: fabric.params[k] for k in ("gpus_per_server", "alpha", "oversubscription", "k",
                                            "build") if k in fabric.params}
    params["counted"] = "built fabric"
    gpus = fabric.n_hosts if fabric.params.get("host", "gpu") == "gpu" else fabric.n_hosts * g
    return BillOfMaterials(fabric=fabric.name, gpus=int(gpus), link_gbps=speed,
                           items=_make_items(p, counts), params=params,
                           notes=(f"counted from the built fabric: {fabric.summary()}",))


def network_cost_usd(fabric: str, gpus: int, link_gbps: float, **kwargs) -> float:
    """Total network cost in USD (see :func:`bill_of_materials` for the arguments)."""
    return bill_of_materials(fabric, gpus, link_gbps, **kwargs).total_usd


def cost_table(gpus: int, link_speeds=None, fabrics=FABRICS, *, alpha: int = 6, prices=None,
               gpus_per_server: int = 8) -> list[dict]:
    """Cost of every fabric at every speed, with the ratio to the fat-tree at the same speed.

    One dict per (speed, fabric): ``fabric, link_gbps, total_usd, per_gpu_usd, vs_fat_tree``
    (cost / fat-tree cost) and ``fat_tree_over`` (fat-tree cost / cost, "x cheaper").
    """
    table = _resolve_prices(prices)
    speeds = sorted(table) if link_speeds is None else list(link_speeds)
    rows = []
    for b in speeds:
        ref = network_cost_usd("fat_tree", gpus, b, prices=table, gpus_per_server=gpus_per_server)
        for f in fabrics:
            bom = bill_of_materials(f, gpus, b, alpha=alpha, prices=table,
                                    gpus_per_server=gpus_per_server)
            rows.append(dict(fabric=bom.fabric, link_gbps=bom.link_gbps, total_usd=bom.total_usd,
                             per_gpu_usd=bom.per_gpu_usd, vs_fat_tree=bom.total_usd / ref,
                             fat_tree_over=ref / bom.total_usd))
    return rows


# --------------------------------------------------------------------------------------------
# Performance per dollar
# --------------------------------------------------------------------------------------------

def _positive(value, name):
    require(isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            and value > 0, name, f"must be a finite number > 0, got {value!r}")
    return float(value)


def perf_per_dollar(iteration_time_s: float, network_cost_usd: float) -> float:
    """``(1 / iteration_time_s) / network_cost_usd`` (iterations per second per dollar)."""
    return 1.0 / _positive(iteration_time_s, "iteration_time_s") / _positive(network_cost_usd,
                                                                             "network_cost_usd")


def normalized_perf_per_dollar(iter_s: float, cost: float, ref_iter_s: float, ref_cost: float) -> float:
    """Performance per dollar relative to a reference (the fat-tree at the same link speed):
    ``(ref_iter_s * ref_cost) / (iter_s * cost)``; > 1 means more cost-efficient than the reference."""
    return perf_per_dollar(iter_s, cost) / perf_per_dollar(ref_iter_s, ref_cost)


# --------------------------------------------------------------------------------------------
# Printing and the ``fabricsim cost`` command
# --------------------------------------------------------------------------------------------

def _usd(x: float) -> str:
    return f"${x:,.0f}" if float(x).is_integer() else f"${x:,.2f}"


def _text_table(cells: list, align: str, min_widths: tuple) -> list:
    """Rows of strings as lines: column ``j`` aligned by ``align[j]`` (``<`` or ``>``) in a width
    of at least ``min_widths[j]`` and of its longest cell plus two spaces, so that neighbouring
    columns never touch, whatever the numbers."""
    widths = [max(m, 2 + max(len(row[j]) for row in cells)) for j, m in enumerate(min_widths)]
    return ["  " + "".join(f"{c:{a}{w}}" for c, a, w in zip(row, align, widths)).rstrip()
            for row in cells]


def format_bom(bom: BillOfMaterials) -> str:
    """The bill of materials as a text table."""
    extra = ""
    if "alpha" in bom.params:
        extra = f", alpha {bom.params['alpha']}"
    if "oversubscription" in bom.params:
        extra = f", {bom.params['oversubscription']:g}:1"
    cells = [("item", "count", "unit", "subtotal")]
    cells += [(label, f"{count:,}", _usd(unit), _usd(sub)) for label, count, unit, sub in bom.rows]
    cells += [("total", "", "", _usd(bom.total_usd)), ("per GPU", "", "", _usd(bom.per_gpu_usd))]
    lines = [f"{bom.fabric}: {bom.gpus} GPUs ({bom.gpus // bom.params.get('gpus_per_server', 1)} "
             f"servers), {bom.link_gbps} Gbps{extra}"]
    lines += _text_table(cells, "<>>>", (18, 10, 12, 16))
    lines.extend(f"  note: {n}" for n in bom.notes)
    return "\n".join(lines)


def format_cost_table(rows: list[dict], gpus: int) -> str:
    """A comparison table (rows of :func:`cost_table`), with the mean ratio over speeds per fabric."""
    cells = [("Gbps", "  fabric", "total", "per GPU", "vs fat-tree", "fat-tree/this")]
    cells += [(str(r["link_gbps"]), f"  {r['fabric']}", _usd(r["total_usd"]),
               _usd(r["per_gpu_usd"]), f"{r['vs_fat_tree']:.3f}", f"{r['fat_tree_over']:.2f}x")
              for r in rows]
    lines = [f"network cost for {gpus} GPUs"]
    lines += _text_table(cells, "><>>>>", (5, 18, 16, 12, 13, 15))
    speeds = sorted({r["link_gbps"] for r in rows})
    if len(speeds) > 1:
        lines.append(f"  mean over {', '.join(map(str, speeds))} Gbps of fat-tree / fabric:")
        for f in dict.fromkeys(r["fabric"] for r in rows):
            vals = [r["fat_tree_over"] for r in rows if r["fabric"] == f]
            lines.append(f"    {f:<16}{sum(vals) / len(vals):.2f}x")
    return "\n".join(lines)


_CLI_FIELDS = {"cost.fabric": "--fabric", "cost.gpus": "--gpus", "cost.link_gbps": "--link-gbps",
               "cost.alpha": "--alpha", "cost.oversubscription": "--oversubscription",
               "cost.gpus_per_server": "--gpus-per-server"}


def _gpus_arg(text: str) -> int:
    """``--gpus``: a whole number written out (``1e6`` is refused, not rounded)."""
    try:
        return int(text)
    except ValueError:
        raise ConfigError("--gpus", f"must be a whole number of GPUs written out, e.g. 1024 or "
                                    f"1000000, got {text!r}") from None


def _cmd_cost(args) -> int:
    import json

    gpus = _gpus_arg(args.gpus)
    try:
        prices = load_prices(args.prices) if args.prices else DEFAULT_PRICES
        if args.link_gbps == "all":
            speeds = sorted(prices)
        else:
            try:
                speeds = [float(x) for x in args.link_gbps.split(",")]
            except ValueError:
                raise ConfigError("--link-gbps", f"must be a speed in Gbps, a comma list of them, or "
                                                 f"'all', got {args.link_gbps!r}") from None
            speeds = [int(b) if b.is_integer() else b for b in speeds]
        kw = dict(prices=prices, gpus_per_server=args.gpus_per_server)
        if args.fabric == "all" or len(speeds) > 1:
            require(args.oversubscription == 1.0, "--oversubscription",
                    "is for a single --fabric fat_tree; the comparison includes fat_tree_3to1")
            fabrics = FABRICS if args.fabric == "all" else (args.fabric,)
            rows = cost_table(gpus, speeds, fabrics, alpha=args.alpha, **kw)
            if args.json:
                print(json.dumps({"gpus": gpus, "alpha": args.alpha, "rows": rows}, indent=2))
            else:
                print(format_cost_table(rows, gpus))
            return 0
        bom = bill_of_materials(args.fabric, gpus, speeds[0], alpha=args.alpha,
                                oversubscription=args.oversubscription, **kw)
    except ConfigError as exc:
        if exc.field in _CLI_FIELDS:
            raise ConfigError(_CLI_FIELDS[exc.field], exc.message) from None
        raise
    print(json.dumps(bom.to_dict(), indent=2) if args.json else format_bom(bom))
    return 0


def add_parser(sub) -> None:
    """Register ``fabricsim cost`` on an argparse subparsers object."""
    c = sub.add_parser(
        "cost", help="network bill of materials of a fabric",
        description="Print the network bill of materials (item, count, unit price, subtotal, total) "
                    "of a fabric, using Table 4 of the MixNet paper and $150 fibers, counting only "
                    "used switch ports. --fabric all (or several speeds) prints a comparison with "
                    "the ratio to the fat-tree.")
    c.add_argument("--fabric", required=True, metavar="NAME",
                   help=f"{', '.join(FABRICS)}, or all")
    c.add_argument("--gpus", required=True, metavar="N",
                   help=f"GPUs (one NIC each), whole servers, at most {MAX_GPUS:,}")
    c.add_argument("--link-gbps", required=True, metavar="B",
                   help="NIC speed in Gbps (priced: 100, 200, 400, 800), a comma list, or all")
    c.add_argument("--alpha", type=int, default=6, help="OCS NICs per server (mixnet; default 6)")
    c.add_argument("--oversubscription", type=float, default=1.0, metavar="R",
                   help="r for an r:1 fat_tree (default 1)")
    c.add_argument("--gpus-per-server", type=int, default=8)
    c.add_argument("--prices", metavar="FILE", help="TOML with [prices.<Gbps>] tables overriding prices")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(func=_cmd_cost)
