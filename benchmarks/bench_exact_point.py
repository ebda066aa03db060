"""E2: one `exact`-mode point in its own process: build time, engine run, counters, peak RSS.

Builds the point's task graph and fabric (the main study's parallelism for the model), runs
``run_iteration(mode="exact")`` and prints the wall time of each part, the iteration time, the
flow engine's counters (``solved_flows``: flows covered by exact re-solves; ``bottleneck_tries``
/ ``bottleneck_fails``: bottleneck-local attempts and those not kept) and the process's peak RSS.
``--plain`` re-solves every time over the upper component (``bottleneck_first=False``), the
engine before the bottleneck-local re-solve; ``--shared`` runs every collective in the shared
session (``solo=False``: no solo collectives timed from the memo, the runner before them); both
for side-by-side comparisons. ``solo`` prints the solo collectives and those taken over.

    python benchmarks/bench_exact_point.py --model mixtral-8x22b --gpus 32768 --fabric fattree
    python benchmarks/bench_exact_point.py --model deepseek-r1 --micro-batches 1 --plain
    python benchmarks/bench_exact_point.py --model deepseek-r1 --shared
"""

from __future__ import annotations

import argparse
import resource
import time


def main(argv=None) -> None:
    from fabricsim.experiment import PAPER_PARALLELISM, Point, _workload, build_fabric
    from fabricsim.runner import run_iteration
    from fabricsim.workload import build_iteration

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mixtral-8x22b", choices=list(PAPER_PARALLELISM))
    ap.add_argument("--gpus", type=int, default=1024)
    ap.add_argument("--fabric", default="fattree")
    ap.add_argument("--link-gbps", type=float, default=400.0)
    ap.add_argument("--micro-batches", type=int, default=None,
                    help="default: the released rule (global batch 128)")
    ap.add_argument("--plain", action="store_true", help="bottleneck_first=False")
    ap.add_argument("--shared", action="store_true", help="solo=False")
    args = ap.parse_args(argv)
    extra = {} if args.micro_batches is None else {"micro_batches": args.micro_batches}
    point = Point(model=args.model, fabric=args.fabric, gpus=args.gpus, link_gbps=args.link_gbps,
                  mode="exact", **PAPER_PARALLELISM[args.model], **extra)
    t0 = time.perf_counter()
    cfg = _workload(point)
    graph = build_iteration(cfg)
    fabric, controller = build_fabric(point, graph)
    t1 = time.perf_counter()
    result = run_iteration(graph, fabric, mode="exact", controller=controller, seed=point.seed,
                           bottleneck_first=not args.plain, solo=not args.shared)
    t2 = time.perf_counter()
    stats = result.stats
    print(f"{args.model}, {args.gpus:,} GPUs, {args.fabric}, {cfg.n_micro_batches} micro-batches, "
          f"{stats['flows']:,} flows{' (plain re-solve)' if args.plain else ''}"
          f"{' (shared session)' if args.shared else ''}")
    print(f"  build {t1 - t0:.1f} s, run_iteration {t2 - t1:.1f} s, "
          f"iteration {result.iteration_time_s!r} s")
    print(f"  solo: {stats['solo_collectives']:,} collectives, {stats['solo_taken_over']:,} taken "
          f"over; isolated simulations {stats['isolated_simulations']:,}")
    print("  engine: " + ", ".join(f"{k[7:]} {v:,}" for k, v in stats.items()
                                   if k.startswith("engine_") and isinstance(v, int)))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak RSS {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
