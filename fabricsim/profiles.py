"""Modelling switches and the profiles that set them.

Every modelling choice that can move a simulated iteration time, and on which the paper's released
simulator and a physically careful reading differ, is a named switch. A *profile* is a named set of
switch values:

``released`` (the default of ``fabricsim reproduce``)
    What the paper's released simulator (mixnet-sim: a FlexFlow fork for the task graph, an htsim
    fork for the network) does, for number-for-number reproduction.
``physical``
    The readings a careful engineer would pick for real hardware.

A :class:`fabricsim.experiment.Point` takes a ``profile`` and any switch explicitly (an explicit
value wins); results record the profile and every resolved switch as columns. Each switch lists its
values, the value of each profile, and where each reading comes from (the paper's text [P], the
released code and scripts [C], or a first-principles argument).

No value here was fitted to a published iteration time.
"""

from __future__ import annotations

from dataclasses import dataclass

from fabricsim.errors import require

__all__ = ["Switch", "SWITCHES", "PROFILES", "PROFILE_NAMES", "resolve_switches", "switch_names",
           "NVLINK_GBPS", "GLOBAL_BATCH_RELEASED", "packet_mtu_bytes", "WORKLOAD_SWITCHES",
           "add_switch_arguments", "switches_from_args"]


@dataclass(frozen=True)
class Switch:
    """One modelling switch: its ``values``, the ``released`` and ``physical`` profile values, and
    one line of documentation per value (``why``: value -> source)."""

    name: str
    values: tuple
    released: str
    physical: str
    what: str
    why: dict


#: NVLink bandwidth per GPU, Gbit/s: the released code's 600 GiB/s (``NVLINK_BANDWIDTH =
#: 600*1024^3`` B/s in ffapp.cpp) and the paper's text, "900 GB/s".
NVLINK_GBPS = {"code": 600 * 2**30 * 8 / 1e9, "text": 900e9 * 8 / 1e9}

#: The released FlexFlow command's global batch (``--batchsize 128 --microbatchsize 8``, reference
#: section 6.2), in sequences.
GLOBAL_BATCH_RELEASED = 128

SWITCHES = (
    Switch("a2a_sizing", ("released", "renormalized"), "released", "renormalized",
           "how the 8x8 reference matrix sizes an all-to-all at ep != 8 (gating = reference)",
           {"released": "per GPU pair total * W[s % 8][d % 8] / 32768 with total the rank's "
                        "volume at ep 8: rows are not renormalized after tiling, so a rank sends "
                        "ep/8 times as much at ep 16 and 32 [C, reference 4.2]",
            "renormalized": "each tiled row rescaled to the rank's own tokens, so a rank sends "
                            "the same volume at any ep (conservation of tokens)"}),
    Switch("a2a_counts", ("tokens", "copies"), "tokens", "tokens",
           "what the 32,768 of a reference-matrix row count (gating = reference)",
           {"tokens": "a row is one micro-batch's tokens (32,768 = 4096 sequence x 8 micro-batch, "
                      "reference 6.4), each sent to top_k experts: a rank sends top_k x the row",
            "copies": "a row already counts the token copies (top-k routing included): a rank "
                      "sends the row once, 1/top_k of the other reading"}),
    Switch("compute_pacing", ("profile", "load"), "profile", "load",
           "what sets the experts' compute time",
           {"profile": "the operator profile only, every EP rank at the mean load: the matrix "
                       "sizes flows, never compute (FlexFlow task runtimes, reference 4.2, 6.5)",
            "load": "each EP rank's experts take the time of the tokens routed to them, so the "
                    "busiest rank paces the next all-to-all"}),
    Switch("mode", ("exact", "isolated"), "exact", "exact",
           "how collectives share the fabric",
           {"exact": "every flow of the iteration shares the fabric in one engine session (the "
                     "released simulator runs the whole task graph in one htsim run, reference 4.2)",
            "isolated": "each collective timed alone on the idle fabric, memoized (a fast "
                        "approximation; contended_collectives says how many overlapped)"}),
    Switch("micro_batches_rule", ("flexflow", "pp"), "flexflow", "pp",
           "micro-batches per replica when micro_batches is not given",
           {"flexflow": "global batch / micro-batch / dp, at least 1: the released FlexFlow command "
                        "(--batchsize 128 --microbatchsize 8, reference 6.2)",
            "pp": "pp micro-batches, the fewest that fill a 1F1B pipeline"}),
    Switch("nic_pooling", ("released", "pooled", "per-nic"), "released", "released",
           "how a server's NICs carry its GPUs' traffic",
           {"released": "per fabric, as released: one NIC per GPU on the fat-trees and the "
                        "rail-optimized fabric, server-pair aggregates on MixNet's OCS and a "
                        "server-level link on its EPS (reference 4.2, 5.3)",
            "pooled": "every fabric pools a server's NICs (NVLink + PXN-style), like for like",
            "per-nic": "every fabric sends a GPU's flow through one NIC, like for like"}),
    Switch("dp_precision", ("fp32", "bf16"), "fp32", "fp32",
           "bytes per gradient element in the data-parallel all-reduce",
           {"fp32": "4 B: FlexFlow's parameters are float32 [C]; Megatron-LM with bf16 "
                    "accumulates and all-reduces gradients in fp32 by default",
            "bf16": "2 B: gradients all-reduced in the training precision"}),
    Switch("dp_experts", ("replicated", "sharded"), "replicated", "replicated",
           "which GPUs all-reduce a rank's expert gradients",
           {"replicated": "experts are whole on every GPU of their EP rank's TP group: their "
                          "gradients are all-reduced over dp * tp GPUs",
            "sharded": "experts are split over tp: each GPU's 1/tp share is all-reduced over "
                       "the dp GPUs that hold the same share"}),
    Switch("qwen", ("table1", "sec7.3"), "table1", "table1",
           "Qwen-MoE's experts and expert parallelism",
           {"table1": "64 experts, EP 16 (Table 1 [P])",
            "sec7.3": "32 experts, EP 32 ('32 experts with 32-way EP', section 7.3 [P])"}),
    Switch("qwen_shared", ("dropped", "kept"), "dropped", "kept",
           "Qwen-MoE's shared expert (4 x 1408 wide on the model card)",
           {"dropped": "as the paper's expert count (its 64 experts round 60 routed + 4 "
                       "shared-size, reference 6.3)",
            "kept": "the model card's shared expert, run by every token"}),
    Switch("deepseek_attention", ("mla", "mha"), "mla", "mla",
           "DeepSeek-R1's attention",
           {"mla": "multi-head latent attention: its real parameter count and FLOPs",
            "mha": "128 full heads of 128 (an upper bound on attention cost and parameters)"}),
    Switch("packet_size", ("per-fabric", "9000"), "per-fabric", "9000",
           "packet size of the packet engine (the flow engine has no packets)",
           {"per-fabric": "1500 B on the fat-tree binaries (fat-tree, 3:1, rail-optimized), "
                          "9000 B on MixNet and TopoOpt (reference 5.2)",
            "9000": "9000 B jumbo frames everywhere, like for like"}),
    Switch("nvlink", ("code", "text"), "code", "text",
           "NVLink bandwidth per GPU inside a server",
           {"code": "600 GiB/s (NVLINK_BANDWIDTH in the released ffapp.cpp, reference 2.3)",
            "text": "900 GB/s (the paper's server, reference 2.3)"}),
)

_BY_NAME = {s.name: s for s in SWITCHES}

#: Profile name -> {switch: value}.
PROFILES = {
    "released": {s.name: s.released for s in SWITCHES},
    "physical": {s.name: s.physical for s in SWITCHES},
}
PROFILE_NAMES = tuple(PROFILES)


def switch_names() -> tuple:
    return tuple(_BY_NAME)


def resolve_switches(profile: str, given: dict) -> dict:
    """Every switch's value: ``given[name]`` when it is not None, else the profile's; ConfigError
    naming the switch (or ``profile``) and the allowed values otherwise."""
    require(profile in PROFILES, "profile", f"must be one of {', '.join(PROFILE_NAMES)}, got {profile!r}")
    out = {}
    for name, switch in _BY_NAME.items():
        value = given.get(name)
        value = PROFILES[profile][name] if value is None else value
        require(value in switch.values, name,
                f"must be one of {', '.join(switch.values)}, got {value!r}")
        out[name] = value
    return out


#: Fabrics the released simulator ran with its fat-tree binaries (1500 B packets, reference 5.2).
_FAT_TREE_BINARY = ("fattree", "oversub", "railopt")


def packet_mtu_bytes(packet_size: str, fabric: str) -> int:
    """Packet size (bytes, header included) of the packet engine on ``fabric`` under the
    ``packet_size`` switch."""
    if packet_size == "per-fabric" and fabric in _FAT_TREE_BINARY:
        return 1500
    return 9000


#: The switches that shape the workload itself (:class:`fabricsim.workload.WorkloadConfig` fields).
WORKLOAD_SWITCHES = ("a2a_sizing", "a2a_counts", "compute_pacing", "dp_precision", "dp_experts")


def add_switch_arguments(parser, names=None) -> None:
    """``--profile`` and one ``--SWITCH`` option per switch in ``names`` (default: all), each with
    its values as choices and no default (None: the profile's value)."""
    parser.add_argument("--profile", choices=PROFILE_NAMES, default="released",
                        help="the set of modelling switches (default released: the paper's "
                             "simulator; physical: the readings for real hardware)")
    for name in names or switch_names():
        s = _BY_NAME[name]
        parser.add_argument("--" + name.replace("_", "-"), dest=name, choices=s.values,
                            help=f"{s.what} (released: {s.released}; physical: {s.physical})")


def switches_from_args(args, names=None) -> dict:
    """The resolved values of the switches ``names`` (default: all) from parsed arguments."""
    names = names or switch_names()
    resolved = resolve_switches(args.profile, {n: getattr(args, n, None) for n in names})
    return {n: resolved[n] for n in names}
