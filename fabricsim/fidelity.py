"""``fabricsim reproduce --study fidelity``: what the paper's conclusions rest on.

The study starts from the main evaluation under the ``released`` profile (the paper's simulator,
:mod:`fabricsim.profiles`) and flips one switch at a time to each of its other values. For every
model, fabric and link speed it reports the iteration time; per model and link speed the ratios the
paper's claims are about: MixNet / fat-tree iteration time ("comparable to a non-blocking
fat-tree"), TopoOpt / MixNet ("TopoOpt 1.3-1.5x slower") and MixNet's performance per dollar
relative to the fat-tree ("1.2-1.5x at 100 Gbps, 1.9-2.3x at 400 Gbps").

A flip that cannot change a point is not simulated (:func:`applies`): the packet size without the
packet engine, the Qwen and DeepSeek switches on other models, the reference-matrix readings with
another gating, ``micro_batches_rule`` where both rules give the same count, ``a2a_sizing`` at
ep 8 when the matrix scales to whole tokens, ``dp_experts`` at tp 1, and a ``nic_pooling`` value
that is the fabric's released one. Such points take the baseline's row (``simulated`` False);
this is exact, not an approximation.
"""

from __future__ import annotations

import math

from fabricsim.profiles import PROFILES, SWITCHES

__all__ = ["fidelity_points", "applies", "label", "summary_rows", "format_summary", "CLAIMS"]

BASELINE = "released"

#: The paper's claims this study tests, as (ratio column, link speed, low, high).
CLAIMS = (
    ("perf_per_dollar", 100.0, 1.2, 1.5),   # abstract: 1.2-1.5x cost efficiency at 100 Gbps
    ("perf_per_dollar", 400.0, 1.9, 2.3),   # abstract: 1.9-2.3x at 400 Gbps
    ("topoopt_over_mixnet", None, 1.3, 1.5),  # TopoOpt 1.3-1.5x slower
)

#: Fabrics whose released attachment is per-GPU NICs (the others pool: reference 4.2, 5.3).
_PER_NIC_FABRICS = ("fattree", "oversub", "railopt")


def applies(switch: str, value: str, point) -> bool:
    """Whether setting ``switch`` to ``value`` (from the released profile) can change ``point``'s
    result; False only where the model provably ignores the switch."""
    from fabricsim.experiment import micro_batches_of

    if point.switches[switch] == value:  # e.g. a model the study runs isolated already
        return False
    if switch == "packet_size":
        return point.engine == "packet"
    if switch in ("qwen", "qwen_shared"):
        return point.model == "qwen-moe"
    if switch == "deepseek_attention":
        return point.model == "deepseek-r1"
    if switch in ("a2a_sizing", "a2a_counts") and point.gating != "reference":
        return False
    if switch == "a2a_sizing":
        copies = point.micro_batch * point.seq_len * _top_k(point)
        return point.ep != 8 or copies % 32768 != 0
    if switch == "micro_batches_rule":
        dp = point.resolved_dp()
        return point.micro_batches is None and micro_batches_of(point, dp) != point.pp
    if switch == "dp_experts":
        return point.tp > 1
    if switch == "nic_pooling":
        released_is = "per-nic" if point.fabric in _PER_NIC_FABRICS else "pooled"
        return value != released_is
    return True


def _top_k(point) -> int:
    from fabricsim.workload.models import get_model

    return get_model(point.model).top_k


def fidelity_points(base_points: list) -> list:
    """``(label, point)`` for the baseline (label ``baseline``) and every flip that applies (label
    ``switch=value``); ``base_points`` are the main study's points under the released profile."""
    import dataclasses

    out = [("baseline", p) for p in base_points]
    for s in SWITCHES:
        for value in s.values:
            if value == PROFILES[BASELINE][s.name]:
                continue
            for p in base_points:
                if applies(s.name, value, p):
                    extra = {}
                    if s.name == "qwen" and value == "sec7.3":
                        extra["ep"] = 32  # "32 experts with 32-way EP" (section 7.3)
                    out.append((f"{s.name}={value}",
                                dataclasses.replace(p, **{s.name: value}, **extra)))
    return out


def label(row: dict) -> str:
    """``baseline`` or ``switch=value``: the switches in which a result row departs from the
    released profile (for rows without a recorded ``flip``)."""
    base = PROFILES[BASELINE]
    flipped = [f"{name}={row[name]}" for name in base if row[name] != base[name]]
    return ", ".join(flipped) or "baseline"


def complete_rows(rows: list, labels: list, base_points: list) -> list:
    """The study's rows (``labels``: each row's flip, from :func:`fidelity_points`) with, for
    every flip, the baseline rows of the points it does not apply to (copied, the switch set,
    ``simulated`` False), so that every flip covers every point."""
    sims = [{**r, "flip": lab, "simulated": True} for r, lab in zip(rows, labels)]
    base = {(r["model"], r["fabric"], r["link_gbps"]): r for r in sims if r["flip"] == "baseline"}
    out = list(sims)
    for s in SWITCHES:
        for value in s.values:
            if value == PROFILES[BASELINE][s.name]:
                continue
            flip = f"{s.name}={value}"
            for p in base_points:
                key = (p.model, p.fabric, p.link_gbps)
                if not applies(s.name, value, p) and key in base:
                    out.append({**base[key], s.name: value, "flip": flip, "simulated": False})
    return out


def summary_rows(rows: list) -> list:
    """Per flip, model and link speed: MixNet / fat-tree, TopoOpt / MixNet and MixNet's
    performance per dollar relative to the fat-tree (NaN where a fabric is missing)."""
    by = {}
    for r in rows:
        by.setdefault((r["flip"], r["model"], r["link_gbps"]), {})[r["fabric"]] = r
    out = []
    for (flip, model, link), f in sorted(by.items(), key=lambda kv: (_flip_order(kv[0][0]), kv[0][1:])):
        mx, ft, to = (f.get(k, {}).get("iteration_time_s", math.nan) for k in ("mixnet", "fattree", "topoopt"))
        out.append({"flip": flip, "model": model, "link_gbps": link,
                    "mixnet_over_fattree": mx / ft, "topoopt_over_mixnet": to / mx,
                    "perf_per_dollar": f.get("mixnet", {}).get("perf_per_dollar_norm", math.nan),
                    "simulated": bool(f.get("mixnet", {}).get("simulated", True))})
    return out


def _flip_order(flip: str) -> tuple:
    if flip == "baseline":
        return (0, "")
    names = [s.name for s in SWITCHES]
    name = flip.split("=")[0]
    return (1 + (names.index(name) if name in names else len(names)), flip)


def format_summary(summary: list) -> str:
    """The summary as a table: one line per flip and model, the three ratios per link speed."""
    links = sorted({r["link_gbps"] for r in summary})
    cells = {(r["flip"], r["model"], r["link_gbps"]): r for r in summary}
    keys = []
    for r in summary:
        if (r["flip"], r["model"]) not in keys:
            keys.append((r["flip"], r["model"]))
    speeds = "/".join(f"{b:g}" for b in links)
    head = (f"{'flip':<30}{'model':<15}{'MixNet/fat-tree at ' + speeds:>36}"
            f"{'TopoOpt/MixNet':>30}{'MixNet perf/$':>30}")
    lines = [head, "-" * len(head)]

    def col(flip, model, key):
        vals = [cells.get((flip, model, b), {}).get(key, math.nan) for b in links]
        return " ".join(f"{v:6.2f}" if v == v else "   n/a" for v in vals)

    for flip, model in keys:
        lines.append(f"{flip:<30}{model:<15}{col(flip, model, 'mixnet_over_fattree'):>36}"
                     f"{col(flip, model, 'topoopt_over_mixnet'):>30}{col(flip, model, 'perf_per_dollar'):>30}")
    return "\n".join(lines)
