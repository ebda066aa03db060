"""E1: the runner's ``exact`` mode against ``isolated``, per model, at 1024 GPUs.

For each of the paper's models (the main study's parallelism, released profile), one iteration at
``--link-gbps`` (400) on each fabric of ``--fabrics`` (fattree, mixnet) in ``exact`` mode (every
flow shares the fabric in one flow-engine session) and in ``isolated`` mode (each collective timed
alone, memoized): wall time of ``run_point`` (task graph, fabric, routing, engine) and the
iteration-time difference. DeepSeek-R1's exact iteration (15 million flows) is far slower than
the others; ``--deepseek-micro-batches`` (default 1) limits it, ``--deepseek-tolerance`` adds runs
with the flow engine's staleness bound.

    python benchmarks/bench_exact.py [--models all] [--fabrics fattree,mixnet] [--link-gbps 400]
    python benchmarks/bench_exact.py --models deepseek-r1 --deepseek-micro-batches 16

E2 (the scale study's points): ``--gpus`` (default 1024; the micro-batches then follow the
released rule, global batch 128) and ``--modes exact`` (skip the isolated runs):

    python benchmarks/bench_exact.py --models mixtral-8x22b --gpus 32768 --modes exact
"""

from __future__ import annotations

import argparse
import resource
import time


def _run(model, fabric, link_gbps, mode, gpus, **kw):
    from fabricsim.experiment import PAPER_PARALLELISM, Point, run_point

    t0 = time.perf_counter()
    row = run_point(Point(model=model, fabric=fabric, gpus=gpus, link_gbps=link_gbps, mode=mode,
                          **PAPER_PARALLELISM[model], **kw))
    return row, time.perf_counter() - t0


def main(argv=None) -> None:
    from fabricsim.experiment import PAPER_PARALLELISM

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="all")
    ap.add_argument("--fabrics", default="fattree,mixnet")
    ap.add_argument("--link-gbps", type=float, default=400.0)
    ap.add_argument("--gpus", type=int, default=1024)
    ap.add_argument("--modes", default="exact,isolated", choices=["exact,isolated", "exact"])
    ap.add_argument("--deepseek-micro-batches", type=int, default=1)
    ap.add_argument("--deepseek-tolerance", default="0.05",
                    help="comma list of extra staleness bounds for DeepSeek-R1's exact run")
    args = ap.parse_args(argv)
    models = list(PAPER_PARALLELISM) if args.models == "all" else args.models.split(",")
    print("| model | GPUs | fabric | micro-batches | flows | isolated (s) | exact (s) | exact - isolated "
          "| wall isolated / exact |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model in models:
        extra = {}
        if model == "deepseek-r1":
            extra["micro_batches"] = args.deepseek_micro_batches
        for fabric in args.fabrics.split(","):
            iso, w_iso = (_run(model, fabric, args.link_gbps, "isolated", args.gpus, **extra)
                          if args.modes != "exact" else (None, None))
            runs = [(0.0, *_run(model, fabric, args.link_gbps, "exact", args.gpus, **extra))]
            if model == "deepseek-r1":
                runs += [(float(t), *_run(model, fabric, args.link_gbps, "exact", args.gpus,
                                          tolerance=float(t), **extra))
                         for t in args.deepseek_tolerance.split(",") if t]
            for tol, ex, w_ex in runs:
                name = f"exact, tolerance {tol:g}" if tol else "exact"
                if iso is None:
                    iso_s, diff, w_iso_s = "", "", ""
                else:
                    iso_s = f"{iso['iteration_time_s']:.3f}"
                    diff = f"{100 * (ex['iteration_time_s'] / iso['iteration_time_s'] - 1):+.2f}%"
                    w_iso_s = f"{w_iso:.1f} s"
                print(f"| {model} | {args.gpus:,} | {fabric} | {ex['micro_batches']} | "
                      f"{ex['flows']:,} | {iso_s} | {ex['iteration_time_s']:.3f} ({name}) | {diff} "
                      f"| {w_iso_s} / {w_ex:.1f} s |", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process: {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
