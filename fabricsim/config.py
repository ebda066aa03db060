"""Scenario files (TOML) into frozen dataclasses; every bad field gives one clear error.

A scenario has the tables ``[fabric]``, ``[traffic]``, ``[run]`` and (optional, packet engine)
``[packet]``; see ``examples/small.toml``
and the README for every key. Unknown keys, wrong types and out-of-range values raise
:class:`fabricsim.errors.ConfigError` naming the field (``fabric.k``) and what is allowed.
Flow sizes are bounded by :data:`fabricsim.engine.MAX_FLOW_BYTES` (1 PB); seeds are integers
>= 0 (NumPy's seeds). :meth:`FabricConfig.estimate_bytes` and :meth:`TrafficConfig.flow_count`
size a run before anything is built (:func:`fabricsim.scenario.check_memory`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Optional, get_args, get_origin, get_type_hints

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from fabricsim.engine import HORIZON_PS, MAX_FLOW_BYTES, MAX_FLOW_BYTES_WHY
from fabricsim.errors import ConfigError, require
from fabricsim.kernels.packetsim import NIC_SCHEDULING, PacketParams

_PACKET_DEFAULTS = PacketParams()

__all__ = ["FabricConfig", "TrafficConfig", "RunConfig", "PacketConfig", "Scenario", "load_scenario",
           "FABRIC_BUILDERS", "TRAFFIC_PATTERNS", "require_file"]

FABRIC_BUILDERS = ("fat_tree", "rail_optimized", "mixnet", "topoopt")
TRAFFIC_PATTERNS = ("permutation", "all_to_all", "incast", "matrix", "htsim")


def _type_name(tp) -> str:
    if get_origin(tp) is not None:
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _coerce(value, tp, name):
    """Check ``value`` against the annotation ``tp`` (int, float, str, bool, Optional[...])."""
    if get_origin(tp) is not None:  # Optional[X]
        if value is None:
            return None
        inner = [a for a in get_args(tp) if a is not type(None)]
        return _coerce(value, inner[0], name)
    if tp is bool:
        require(isinstance(value, bool), name, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        require(isinstance(value, int) and not isinstance(value, bool), name,
                f"must be an integer, got {value!r}")
        return value
    if tp is float:
        require(isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value), name, f"must be a number, got {value!r}")
        return float(value)
    if tp is str:
        require(isinstance(value, str), name, f"must be a string, got {value!r}")
        return value
    raise TypeError(tp)  # pragma: no cover


def _from_table(cls, table: Any, section: str):
    """Build dataclass ``cls`` from a TOML table, rejecting unknown keys and wrong types."""
    require(isinstance(table, dict), section, f"must be a table, got {type(table).__name__}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in table:
        if key not in names:
            raise ConfigError(f"{section}.{key}", f"unknown key; allowed keys: {', '.join(names)}")
    values = {k: _coerce(v, hints[k], f"{section}.{k}") for k, v in table.items()}
    return cls(**values)


def _choice(value, allowed, name):
    require(value in allowed, name, f"must be one of {', '.join(allowed)}, got {value!r}")


def _seed(value, name):
    require(value >= 0, name, f"must be an integer >= 0 (a NumPy seed), got {value}")


def _size(value, name):
    require(0 <= value <= MAX_FLOW_BYTES, name,
            f"must lie in 0 .. {MAX_FLOW_BYTES:,} bytes ({MAX_FLOW_BYTES_WHY}), got {value:,}")


def require_file(path, field: str) -> None:
    """Raise :class:`ConfigError` for ``field`` unless ``path`` is an existing file."""
    if os.path.isdir(path):
        raise ConfigError(field, f"{path} is a directory, expected a file")
    if not os.path.isfile(path):
        raise ConfigError(field, f"file not found: {path}")


#: Peak memory of a fabric per directed link while it is built (bytes; measured on fat-trees of
#: 16k-64k GPUs: about 1 kB per GPU host, 8 directed links each, nodes and routing tables included).
_LINK_BYTES = 128


@dataclass(frozen=True)
class FabricConfig:
    """``[fabric]``: which fabric to build (see :mod:`fabricsim.fabric`)."""

    builder: str = "fat_tree"
    hosts: Optional[int] = None  # fat_tree
    servers: Optional[int] = None  # rail_optimized
    link_gbps: float = 100.0
    k: Optional[int] = None
    oversubscription: float = 1.0
    oversub_build: str = "ports"
    host: str = "gpu"
    gpus_per_server: int = 8
    nvlink_gbps: Optional[float] = None
    link_delay_us: float = 1.0
    build: str = "fat-tree"  # rail_optimized: fat-tree | superpod
    alpha: int = 6  # mixnet: NICs per server on the OCS
    region_servers: Optional[int] = None  # mixnet: servers per OCS region (default: all)
    ocs_ports: Optional[int] = None  # mixnet: ports of one OCS
    circuits: str = "random"  # mixnet: random (seeded) | demand (allocated for the traffic)
    ocs_variant: str = "reference"  # mixnet, circuits = "demand": allocate_circuits variant
    seed: int = 13  # mixnet: initial circuits; topoopt: shortest-path tie-breaks
    degree: int = 8  # topoopt: NICs per server
    port_split: str = "paper"  # topoopt: paper (ports for the traffic matrix) | released
    nic_pooling: str = "released"  # released | pooled | per-nic (fabricsim.fabric.NIC_POOLING)

    def __post_init__(self):
        _choice(self.builder, FABRIC_BUILDERS, "fabric.builder")
        if self.builder == "fat_tree":
            require(self.hosts is not None, "fabric.hosts", "is required for builder = 'fat_tree'")
            require(self.hosts >= 2, "fabric.hosts", f"must be an integer >= 2, got {self.hosts}")
            require(self.servers is None, "fabric.servers", "is for builder = 'rail_optimized', "
                    "'mixnet' or 'topoopt'; fat_tree takes hosts")
        else:
            require(self.servers is not None, "fabric.servers",
                    f"is required for builder = '{self.builder}'")
            require(self.servers >= 1, "fabric.servers", f"must be >= 1, got {self.servers}")
            require(self.hosts is None, "fabric.hosts", f"is for builder = 'fat_tree'; {self.builder} "
                    "takes servers")
        require(self.gpus_per_server >= 1, "fabric.gpus_per_server",
                f"must be an integer >= 1, got {self.gpus_per_server}")
        require(self.oversubscription >= 1, "fabric.oversubscription",
                f"must be a number >= 1 (r for r:1), got {self.oversubscription}")
        if self.region_servers is not None:
            require(self.region_servers >= 1, "fabric.region_servers",
                    f"must be an integer >= 1, got {self.region_servers}")
        _seed(self.seed, "fabric.seed")
        require(self.link_delay_us >= 0, "fabric.link_delay_us", f"must be >= 0, got {self.link_delay_us}")
        _choice(self.circuits, ("random", "demand"), "fabric.circuits")
        _choice(self.port_split, ("paper", "released"), "fabric.port_split")
        from fabricsim.fabric import NIC_POOLING

        _choice(self.nic_pooling, NIC_POOLING, "fabric.nic_pooling")

    @property
    def n_hosts(self) -> int:
        """Hosts (flow endpoints) of the fabric this table builds."""
        if self.builder == "fat_tree":
            return self.hosts
        return self.servers * self.gpus_per_server

    @property
    def size_field(self) -> str:
        """The field that sets the fabric's size (``fabric.hosts`` or ``fabric.servers``)."""
        return "fabric.hosts" if self.builder == "fat_tree" else "fabric.servers"

    def estimate_links(self) -> int:
        """About how many directed links the fabric has, from the builders' wiring (two per duplex
        link; within one pod of the fat-tree builders' exact counts):

        - ``fat_tree``: per host its NIC link, then 1/r edge-aggregation and 1/r aggregation-core
          links (r the oversubscription of the ``ports`` build, 1 otherwise: every edge has k/(r+1)
          uplinks per k*r/(r+1) hosts, every aggregation switch as many core links as edge links),
          and one NVLink per GPU host;
        - ``rail_optimized``: the 1:1 fat-tree (``superpod``: one leaf uplink per GPU);
        - ``mixnet``: per server 3 EPS links and a circuit link to each other server of its region,
          one NVLink per GPU; ``topoopt``: ``degree`` / 2 links per server, one NVLink per GPU.
        """
        hosts, g = self.n_hosts, self.gpus_per_server
        nvlink = hosts if g > 1 and not (self.builder == "fat_tree" and self.host == "server") else 0
        if self.builder == "fat_tree":
            r = self.oversubscription if self.oversub_build == "ports" else 1.0
            duplex = hosts + 2 * hosts / r + nvlink
        elif self.builder == "rail_optimized":
            duplex = hosts + (2 * hosts if self.build == "fat-tree" else hosts) + nvlink
        elif self.builder == "mixnet":
            region = self.region_servers or self.servers
            duplex = 3 * self.servers + self.servers * (region - 1) / 2 + nvlink
        else:
            duplex = self.servers * self.degree / 2 + nvlink
        return int(2 * duplex)

    def estimate_bytes(self) -> int:
        """About the peak memory of building the fabric (bytes): :meth:`estimate_links` links plus,
        for fabrics built for the traffic, the builders' servers x servers matrices."""
        n = self.estimate_links() * _LINK_BYTES
        if self.builder == "topoopt" or (self.builder == "mixnet" and self.circuits == "demand"):
            n += 64 * self.servers ** 2  # demand, port counts and routing tables, server x server
        return int(n)

    def build_fabric(self, src=None, dst=None, size_bytes=None):
        """The fabric; ``mixnet`` with ``circuits = "demand"`` and ``topoopt`` are built for the
        traffic ``src``/``dst``/``size_bytes`` (its server-level demand)."""
        from fabricsim import fabric

        delay_ps = int(round(self.link_delay_us * 1e6))
        if self.builder == "fat_tree":
            return fabric.fat_tree(self.hosts, self.link_gbps, k=self.k,
                                   oversubscription=self.oversubscription,
                                   oversub_build=self.oversub_build, host=self.host,
                                   gpus_per_server=self.gpus_per_server, nvlink_gbps=self.nvlink_gbps,
                                   link_delay_ps=delay_ps, nic_pooling=self.nic_pooling)
        if self.builder == "rail_optimized":
            return fabric.rail_optimized(self.servers, self.link_gbps, self.gpus_per_server,
                                         build=self.build, nvlink_gbps=self.nvlink_gbps,
                                         link_delay_ps=delay_ps, nic_pooling=self.nic_pooling)
        demand = self._server_demand(src, dst, size_bytes)
        if self.builder == "topoopt":
            from fabricsim.topoopt import topoopt

            return topoopt(self.servers, self.link_gbps, degree=self.degree,
                           gpus_per_server=self.gpus_per_server, mp_demand=demand,
                           port_split=self.port_split, seed=self.seed,
                           nvlink_gbps=self.nvlink_gbps, link_delay_ps=delay_ps,
                           nic_pooling=self.nic_pooling)
        kw = dict(alpha=self.alpha, gpus_per_server=self.gpus_per_server,
                  region_servers=self.region_servers, ocs_ports=self.ocs_ports, seed=self.seed,
                  nvlink_gbps=self.nvlink_gbps, link_delay_ps=delay_ps, nic_pooling=self.nic_pooling)
        if self.circuits == "demand":
            import numpy as np

            from fabricsim.ocs import allocate_circuits

            r = self.region_servers or self.servers
            require(self.servers % r == 0, "fabric.region_servers",
                    f"must divide the {self.servers} servers, got {r}")
            kw["circuits"] = np.stack([
                allocate_circuits(demand[i:i + r, i:i + r], self.alpha, self.ocs_variant,
                                  link_gbps=self.link_gbps,
                                  eps_gbps=(self.gpus_per_server - self.alpha) * self.link_gbps)
                for i in range(0, self.servers, r)])
        from fabricsim.mixnet import mixnet

        return mixnet(self.servers, self.link_gbps, **kw)

    @property
    def needs_traffic(self) -> bool:
        """Whether the fabric is built for the traffic (``topoopt``, ``mixnet`` with demand circuits)."""
        return self.builder == "topoopt" or (self.builder == "mixnet" and self.circuits == "demand")

    def _server_demand(self, src, dst, size_bytes):
        import numpy as np

        d = np.zeros((self.servers, self.servers))
        if src is not None:
            g = self.gpus_per_server
            np.add.at(d, (np.asarray(src) // g, np.asarray(dst) // g), np.asarray(size_bytes, float))
        np.fill_diagonal(d, 0)
        return d


@dataclass(frozen=True)
class TrafficConfig:
    """``[traffic]``: which flows to send (see :mod:`fabricsim.traffic`)."""

    pattern: str = "permutation"
    size_bytes: Optional[int] = None
    size_min_bytes: Optional[int] = None
    size_max_bytes: Optional[int] = None
    group_size: Optional[int] = None  # all_to_all (default: all hosts)
    fan_in: Optional[int] = None  # incast
    target: int = 0  # incast
    file: Optional[str] = None  # matrix
    start_us: float = 0.0
    seed: int = 0

    def __post_init__(self):
        _choice(self.pattern, TRAFFIC_PATTERNS, "traffic.pattern")
        spread = self.size_min_bytes is not None or self.size_max_bytes is not None
        if self.pattern in ("matrix", "htsim"):
            what = ("a .npy, .csv or .parquet matrix of bytes, hosts x hosts" if self.pattern == "matrix"
                    else "an htsim connection-matrix file")
            require(self.file is not None, "traffic.file", f"is required for pattern = '{self.pattern}' ({what})")
            require(self.size_bytes is None and not spread, "traffic.size_bytes",
                    f"is not used with pattern = '{self.pattern}' (the file gives the sizes)")
        else:
            require(self.file is None, "traffic.file", "is only for pattern = 'matrix' or 'htsim'")
            require((self.size_bytes is not None) != spread, "traffic.size_bytes",
                    "give either size_bytes or both size_min_bytes and size_max_bytes")
        if self.size_bytes is not None:
            _size(self.size_bytes, "traffic.size_bytes")
        if spread:
            require(self.size_min_bytes is not None and self.size_max_bytes is not None,
                    "traffic.size_min_bytes", "size_min_bytes and size_max_bytes go together")
            require(0 <= self.size_min_bytes <= self.size_max_bytes, "traffic.size_min_bytes",
                    f"need 0 <= size_min_bytes <= size_max_bytes, got {self.size_min_bytes} and "
                    f"{self.size_max_bytes}")
            _size(self.size_max_bytes, "traffic.size_max_bytes")
        if self.group_size is not None:
            require(self.pattern == "all_to_all", "traffic.group_size", "is only for pattern = 'all_to_all'")
            require(self.group_size >= 2, "traffic.group_size", f"must be >= 2, got {self.group_size}")
        if self.fan_in is not None:
            require(self.pattern == "incast", "traffic.fan_in", "is only for pattern = 'incast'")
            require(self.fan_in >= 1, "traffic.fan_in", f"must be >= 1, got {self.fan_in}")
        require(0 <= self.start_us < HORIZON_PS / 1e6, "traffic.start_us",
                f"must lie in 0 .. {HORIZON_PS / 1e6:.3g} (the end of the simulated clock), "
                f"got {self.start_us}")
        _seed(self.seed, "traffic.seed")

    def flow_count(self, hosts: int) -> int | None:
        """How many flows the pattern makes on ``hosts`` hosts (None for file patterns)."""
        if self.pattern == "permutation":
            return hosts
        if self.pattern == "all_to_all":
            return hosts * ((self.group_size or hosts) - 1)
        if self.pattern == "incast":
            return self.fan_in if self.fan_in is not None else hosts - 1
        return None

    @property
    def count_field(self) -> str:
        """The field that sets how many flows there are."""
        return {"all_to_all": "traffic.group_size", "incast": "traffic.fan_in",
                "matrix": "traffic.file", "htsim": "traffic.file"}.get(self.pattern, "fabric.hosts")

    def mean_size_bytes(self) -> float:
        """Mean flow size of the synthetic patterns (0 for file patterns)."""
        if self.size_bytes is not None:
            return float(self.size_bytes)
        if self.size_min_bytes is not None:
            return (self.size_min_bytes + self.size_max_bytes) / 2
        return 0.0


@dataclass(frozen=True)
class RunConfig:
    """``[run]``: engine and trace options."""

    engine: str = "flow"
    seed: int = 0
    tolerance: float = 0.01
    sample_us: float = 10.0  # link-utilization sampling interval (0 = no links.h5)
    profile: str = "released"  # fabricsim.profiles: defaults of fabric.nvlink_gbps, packet.mtu_bytes

    def __post_init__(self):
        from fabricsim.profiles import PROFILE_NAMES
        from fabricsim.simulate import ENGINES

        _choice(self.engine, ENGINES, "run.engine")
        _choice(self.profile, PROFILE_NAMES, "run.profile")
        _seed(self.seed, "run.seed")
        require(self.tolerance >= 0, "run.tolerance", f"must be >= 0, got {self.tolerance}")
        require(self.sample_us == 0 or 1e-6 <= self.sample_us < HORIZON_PS / 1e6, "run.sample_us",
                f"must be 0 (off) or lie in 1e-06 .. {HORIZON_PS / 1e6:.3g} us (at least 1 ps), "
                f"got {self.sample_us:g}")

    @property
    def sample_ps(self) -> int | None:
        """The sampling interval in picoseconds (None: no ``links.h5``)."""
        return int(round(self.sample_us * 1e6)) or None


@dataclass(frozen=True)
class PacketConfig:
    """``[packet]``: constants of the packet engine (see :mod:`fabricsim.kernels.packetsim`).

    Defaults are the released MixNet simulator's: 9000 B packets including a 64 B header,
    10,000-packet buffers, ECN marking above 50 packets, initial window 10 packets, initial
    ssthresh 10,000 packets, minimum RTO 1 ms (initial RTO 1 s until the first RTT sample, as
    RFC 6298), DCTCP g = 1/16, and senders queueing their packets FIFO on their NIC
    (``nic_scheduling = "fifo"``; ``"round-robin"``: the NIC pulls one packet per ready flow in
    turn, as an RDMA NIC arbitrates among queue pairs).
    """

    # Defaults come from the kernel's PacketParams (times converted from ps to us).
    mtu_bytes: int = _PACKET_DEFAULTS.mtu_bytes
    hdr_bytes: int = _PACKET_DEFAULTS.hdr_bytes
    buffer_pkts: int = _PACKET_DEFAULTS.buffer_pkts
    ecn_k_pkts: int = _PACKET_DEFAULTS.ecn_k_pkts
    init_cwnd_pkts: int = _PACKET_DEFAULTS.init_cwnd_pkts
    ssthresh_pkts: int = _PACKET_DEFAULTS.ssthresh_pkts
    min_rto_us: float = _PACKET_DEFAULTS.min_rto_ps / 1e6
    init_rto_us: float = _PACKET_DEFAULTS.init_rto_ps / 1e6
    dctcp_g: float = _PACKET_DEFAULTS.dctcp_g
    nic_scheduling: str = _PACKET_DEFAULTS.nic_scheduling

    def __post_init__(self):
        require(self.hdr_bytes >= 1, "packet.hdr_bytes", f"must be >= 1, got {self.hdr_bytes}")
        require(self.mtu_bytes > self.hdr_bytes, "packet.mtu_bytes",
                f"must exceed hdr_bytes={self.hdr_bytes}, got {self.mtu_bytes}")
        for name in ("buffer_pkts", "init_cwnd_pkts", "ssthresh_pkts"):
            require(getattr(self, name) >= 1, f"packet.{name}", f"must be >= 1, got {getattr(self, name)}")
        require(self.ecn_k_pkts >= 0, "packet.ecn_k_pkts", f"must be >= 0, got {self.ecn_k_pkts}")
        require(self.min_rto_us > 0, "packet.min_rto_us", f"must be > 0, got {self.min_rto_us}")
        require(self.init_rto_us > 0, "packet.init_rto_us", f"must be > 0, got {self.init_rto_us}")
        require(0 < self.dctcp_g <= 1, "packet.dctcp_g", f"must lie in (0, 1], got {self.dctcp_g}")
        require(self.nic_scheduling in NIC_SCHEDULING, "packet.nic_scheduling",
                f"must be one of {', '.join(NIC_SCHEDULING)}, got {self.nic_scheduling!r}")

    def params(self):
        """The kernel's :class:`fabricsim.kernels.packetsim.PacketParams`."""
        return PacketParams(mtu_bytes=self.mtu_bytes, hdr_bytes=self.hdr_bytes,
                            buffer_pkts=self.buffer_pkts, ecn_k_pkts=self.ecn_k_pkts,
                            init_cwnd_pkts=self.init_cwnd_pkts, ssthresh_pkts=self.ssthresh_pkts,
                            min_rto_ps=int(round(self.min_rto_us * 1e6)),
                            init_rto_ps=int(round(self.init_rto_us * 1e6)), dctcp_g=self.dctcp_g,
                            nic_scheduling=self.nic_scheduling)


@dataclass(frozen=True)
class Scenario:
    """A whole scenario file. ``base_dir`` resolves relative paths (the file's folder)."""

    fabric: FabricConfig
    traffic: TrafficConfig
    run: RunConfig = field(default_factory=RunConfig)
    packet: PacketConfig = field(default_factory=PacketConfig)
    base_dir: str = "."
    name: str = "scenario"
    packet_keys: Optional[tuple] = None  # keys of the file's [packet] table (None: no table)

    @classmethod
    def from_dict(cls, data: dict, base_dir: str = ".", name: str = "scenario",
                  profile: Optional[str] = None) -> "Scenario":
        """The scenario of a parsed file; ``profile`` (``released`` or ``physical``) overrides
        ``run.profile``. The profile fills ``fabric.nvlink_gbps`` and ``packet.mtu_bytes`` when the
        file does not set them (:mod:`fabricsim.profiles`: the ``nvlink`` and ``packet_size``
        switches)."""
        require(isinstance(data, dict), "scenario", "must be a TOML table")
        if "fabric" not in data and ("base" in data or "grid" in data):
            raise ConfigError("scenario", "this is a sweep file ([base], [grid]): run it with "
                                          "`fabricsim sweep FILE --out DIR`")
        for key in data:
            if key not in ("fabric", "traffic", "run", "packet"):
                raise ConfigError(key, "unknown table; allowed tables: fabric, traffic, run, packet")
        require("fabric" in data, "fabric", "the [fabric] table is required")
        require("traffic" in data, "traffic", "the [traffic] table is required")
        run_table = dict(data.get("run", {})) if isinstance(data.get("run", {}), dict) else data["run"]
        if profile is not None and isinstance(run_table, dict):
            run_table["profile"] = profile
        run = _from_table(RunConfig, run_table, "run")
        fabric = _from_table(FabricConfig, data["fabric"], "fabric")
        packet_table = data.get("packet", {})
        if isinstance(packet_table, dict):
            packet_table = _profile_packet_defaults(packet_table, fabric.builder, run.profile)
        if fabric.nvlink_gbps is None:
            fabric = dataclasses.replace(fabric, nvlink_gbps=_profile_nvlink_gbps(run.profile))
        return cls(fabric=fabric,
                   traffic=_from_table(TrafficConfig, data["traffic"], "traffic"),
                   run=run, packet=_from_table(PacketConfig, packet_table, "packet"),
                   base_dir=base_dir, name=name,
                   packet_keys=tuple(data["packet"]) if "packet" in data else None)

    def to_dict(self) -> dict:
        """The resolved scenario (every default filled in), as recorded in traces and results."""
        out = {"name": self.name, "fabric": dataclasses.asdict(self.fabric),
               "traffic": dataclasses.asdict(self.traffic), "run": dataclasses.asdict(self.run)}
        if self.run.engine == "packet":
            out["packet"] = dataclasses.asdict(self.packet)
        return out


#: Scenario builders -> the released simulator's binaries' fabric names (packet size per fabric).
_BUILDER_FABRIC = {"fat_tree": "fattree", "rail_optimized": "railopt", "mixnet": "mixnet",
                   "topoopt": "topoopt"}


def _profile_nvlink_gbps(profile: str) -> float:
    from fabricsim.profiles import NVLINK_GBPS, PROFILES

    return NVLINK_GBPS[PROFILES[profile]["nvlink"]]


def _profile_packet_defaults(table: dict, builder: str, profile: str) -> dict:
    """The [packet] table with ``mtu_bytes`` from the profile when the file does not give it."""
    from fabricsim.profiles import PROFILES, packet_mtu_bytes

    if "mtu_bytes" in table:
        return table
    mtu = packet_mtu_bytes(PROFILES[profile]["packet_size"], _BUILDER_FABRIC.get(builder, builder))
    return {**table, "mtu_bytes": mtu}


def load_scenario(path, profile: Optional[str] = None) -> Scenario:
    """Read and validate a scenario TOML file (``profile`` overrides its ``run.profile``)."""
    path = os.fspath(path)
    require_file(path, "scenario")
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("scenario", f"{path} is not valid TOML: {exc}") from None
    name = os.path.splitext(os.path.basename(path))[0]
    return Scenario.from_dict(data, base_dir=os.path.dirname(os.path.abspath(path)), name=name,
                              profile=profile)
