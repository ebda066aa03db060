"""O1: how far the greedy circuit allocators are from the exact minmax one, and what each costs.

For one region (R servers, alpha OCS ports each, EPS (8 - alpha) x 100 Gbit/s per server) the
score of a configuration C is its all-to-all completion bound B(C)
(:func:`fabricsim.ocs.completion_bound`); the gap of a greedy variant is
``B(greedy) / B(minmax)`` (>= 1; minmax is exact). Loads:

- the released simulator's 8 x 8 trace (``REFERENCE_MATRIX``) as the server demand of one
  8-server region, alpha = 2 .. 6;
- synthetic gating (``make_expert_load("synthetic", ...)``) with ep = R, one server per EP rank:
  R = 4 (8 experts, top-2), R = 8 (8 experts, top-2: Mixtral; 64 experts, top-2), R = 16
  (64 experts, top-4: Qwen-MoE-like), skew 0 / 0.2 / 0.5 / 1.0, seeds 0-4, MoE layers 0-3,
  iteration 0, micro-batch 0; bytes = tokens x 6144 x 2 (the scale does not change any ratio).

``python benchmarks/bench_ocs.py`` prints the tables (Markdown); ``pytest benchmarks/bench_ocs.py``
times the three variants with pytest-benchmark.
"""

from __future__ import annotations

import time

import numpy as np

from fabricsim.ocs import allocate_circuits, completion_bound
from fabricsim.ocs.allocate import VARIANTS, minmax_allocation
from fabricsim.workload.gating import REFERENCE_MATRIX, make_expert_load

LINK_GBPS = 100.0
TOKEN_BYTES = 6144 * 2
GREEDY = ("paper", "reference")
#: (servers, experts, top_k) of the synthetic regions
REGIONS = ((4, 8, 2), (8, 8, 2), (8, 64, 2), (16, 64, 4))
SKEWS = (0.0, 0.2, 0.5, 1.0)
SEEDS = range(5)
LAYERS = range(4)


def eps_gbps(alpha: int) -> float:
    return (8 - alpha) * LINK_GBPS


def synthetic_demands(servers, experts, top_k, skew, seeds=SEEDS, layers=LAYERS):
    """Yield int64[R, R] server demands (bytes) of the synthetic gating model."""
    for seed in seeds:
        load = make_expert_load("synthetic", ep=servers, n_experts=experts, top_k=top_k,
                                tokens_per_rank=4096, moe_layers=max(layers) + 1, seed=seed,
                                skew=skew)
        for layer in layers:
            yield load.rank_tokens(0, layer, 0) * TOKEN_BYTES


def evaluate(d: np.ndarray, alpha: int) -> dict:
    """Bound (s), wall time (s) and circuits of every variant, plus minmax's certificate."""
    out = {}
    for variant in VARIANTS:
        t0 = time.perf_counter()
        if variant == "minmax":
            res = minmax_allocation(d, alpha)
            c = res.circuits
            out["exact"], out["nodes"] = res.exact, res.nodes
        else:
            c = allocate_circuits(d, alpha, variant)
        out[variant, "time"] = time.perf_counter() - t0
        out[variant, "bound"] = completion_bound(d, c, LINK_GBPS, eps_gbps(alpha))
        out[variant, "circuits"] = int(c.sum() // 2)
    for variant in GREEDY:
        out[variant, "gap"] = out[variant, "bound"] / out["minmax", "bound"]
    return out


def warm_up() -> None:
    """Load (or compile) the search kernel before anything is timed."""
    minmax_allocation(REFERENCE_MATRIX, 6)


def reference_trace_table() -> str:
    rows = ["| alpha | B paper (us) | B reference (us) | B minmax (us) | paper / minmax "
            "| reference / minmax | circuits paper / reference / minmax |",
            "|---|---|---|---|---|---|---|"]
    for alpha in range(2, 7):
        r = evaluate(REFERENCE_MATRIX * TOKEN_BYTES, alpha)
        rows.append(f"| {alpha} | {r['paper', 'bound'] * 1e6:.1f} | "
                    f"{r['reference', 'bound'] * 1e6:.1f} | {r['minmax', 'bound'] * 1e6:.1f} | "
                    f"{r['paper', 'gap']:.3f} | {r['reference', 'gap']:.3f} | "
                    f"{r['paper', 'circuits']} / {r['reference', 'circuits']} / "
                    f"{r['minmax', 'circuits']} |")
    return "\n".join(rows)


def synthetic_results(alphas=(2, 4, 6)) -> list:
    """One record per (region, skew, alpha, instance)."""
    records = []
    for servers, experts, top_k in REGIONS:
        for skew in SKEWS:
            for d in synthetic_demands(servers, experts, top_k, skew):
                for alpha in alphas:
                    r = evaluate(d, alpha)
                    r.update(servers=servers, experts=experts, top_k=top_k, skew=skew,
                             alpha=alpha)
                    records.append(r)
    return records


def _gap_cells(group) -> str:
    cells = []
    for variant in GREEDY:
        gaps = np.array([r[variant, "gap"] for r in group])
        cells.append(f"{gaps.mean():.3f} / {gaps.max():.3f}")
    return " | ".join(cells)


def synthetic_table(records, alpha: int) -> str:
    rows = ["| R | experts, top-k | skew | instances | paper / minmax (mean / max) "
            "| reference / minmax (mean / max) | minmax exact |",
            "|---|---|---|---|---|---|---|"]
    for servers, experts, top_k in REGIONS:
        for skew in SKEWS:
            group = [r for r in records if (r["servers"], r["experts"], r["skew"], r["alpha"])
                     == (servers, experts, skew, alpha)]
            exact = sum(r["exact"] for r in group)
            rows.append(f"| {servers} | {experts}, {top_k} | {skew} | {len(group)} | "
                        f"{_gap_cells(group)} | {exact}/{len(group)} |")
    return "\n".join(rows)


def alpha_table(records) -> str:
    alphas = sorted({r["alpha"] for r in records})
    rows = ["| R | alpha | instances | paper / minmax (mean / max) "
            "| reference / minmax (mean / max) | reference worse than minmax by > 10% |",
            "|---|---|---|---|---|---|"]
    for servers in sorted({r["servers"] for r in records}):
        for alpha in alphas:
            group = [r for r in records if (r["servers"], r["alpha"]) == (servers, alpha)]
            worse = sum(r["reference", "gap"] > 1.1 for r in group)
            rows.append(f"| {servers} | {alpha} | {len(group)} | {_gap_cells(group)} | "
                        f"{worse}/{len(group)} |")
    return "\n".join(rows)


def timing_table(records, alpha: int = 6) -> str:
    rows = ["| R | paper (ms, mean / max) | reference (ms, mean / max) "
            "| minmax (ms, mean / max) | minmax nodes (mean / max) |", "|---|---|---|---|---|"]
    for servers in sorted({r["servers"] for r in records}):
        group = [r for r in records if (r["servers"], r["alpha"]) == (servers, alpha)]
        cells = []
        for variant in VARIANTS:
            t = np.array([r[variant, "time"] for r in group]) * 1e3
            cells.append(f"{t.mean():.2f} / {t.max():.2f}")
        nodes = np.array([r["nodes"] for r in group])
        rows.append(f"| {servers} | {' | '.join(cells)} | {nodes.mean():.0f} / {nodes.max()} |")
    return "\n".join(rows)


def main() -> None:
    warm_up()
    print("## Reference 8 x 8 trace, one region of 8 servers\n")
    print(reference_trace_table())
    records = synthetic_results()
    print("\n## Synthetic gating, alpha = 6\n")
    print(synthetic_table(records, 6))
    print("\n## Synthetic gating by alpha (all skews)\n")
    print(alpha_table(records))
    print("\n## Wall time per allocation, alpha = 6 (warm)\n")
    print(timing_table(records))


# ------------------------------------------------------------------------------------------------
# pytest-benchmark
# ------------------------------------------------------------------------------------------------

def _one_demand(servers, experts, top_k):
    return next(synthetic_demands(servers, experts, top_k, 0.2, seeds=[0], layers=[0]))


def _bench(benchmark, d, alpha, variant):
    warm_up()
    c = benchmark(allocate_circuits, d, alpha, variant)
    assert (c == c.T).all() and (c.sum(axis=1) <= alpha).all()
    benchmark.extra_info["bound_us"] = completion_bound(d, c, LINK_GBPS, eps_gbps(alpha)) * 1e6


def test_o1_reference_trace(benchmark):
    _bench(benchmark, REFERENCE_MATRIX * TOKEN_BYTES, 6, "reference")


def test_o1_minmax_reference_trace(benchmark):
    assert minmax_allocation(REFERENCE_MATRIX, 6).exact
    _bench(benchmark, REFERENCE_MATRIX * TOKEN_BYTES, 6, "minmax")


def test_o1_minmax_r8(benchmark):
    d = _one_demand(8, 64, 2)
    assert minmax_allocation(d, 6).exact
    _bench(benchmark, d, 6, "minmax")


def test_o1_minmax_r16(benchmark):
    d = _one_demand(16, 64, 4)
    assert minmax_allocation(d, 6).exact
    _bench(benchmark, d, 6, "minmax")


if __name__ == "__main__":
    main()
