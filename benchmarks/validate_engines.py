"""V1: flow engine against packet engine on one Mixtral 8x22B iteration at 1024 GPUs, every fabric.

    python benchmarks/validate_engines.py [--link-gbps 400] [--mode isolated|exact]

Prints, per fabric, the iteration time on both engines, their difference and the wall time.
"""

from __future__ import annotations

import argparse
import time

from fabricsim.experiment import FABRICS, PAPER_PARALLELISM, Point, run_point


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--link-gbps", type=float, default=400.0)
    ap.add_argument("--mode", choices=["isolated", "exact"], default="isolated")
    ap.add_argument("--model", default="mixtral-8x22b")
    args = ap.parse_args()
    print("| fabric | flow engine (s) | packet engine (s) | difference | wall flow / packet |")
    print("|---|---|---|---|---|")
    for fabric in FABRICS:
        times, walls = [], []
        for engine in ("flow", "packet"):
            t0 = time.perf_counter()
            row = run_point(Point(model=args.model, fabric=fabric, gpus=1024,
                                  link_gbps=args.link_gbps, engine=engine, mode=args.mode,
                                  **PAPER_PARALLELISM[args.model]))
            times.append(row["iteration_time_s"])
            walls.append(time.perf_counter() - t0)
        print(f"| {fabric} | {times[0]:.3f} | {times[1]:.3f} | {100 * (times[1] / times[0] - 1):+.2f}% "
              f"| {walls[0]:.0f} s / {walls[1]:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
