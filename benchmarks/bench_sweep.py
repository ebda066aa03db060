"""S1: sweep throughput, 1 local worker against 2 (``fabricsim.sweep``).

200 small points (Mixtral 8x7B on 128 GPUs, TP 4, EP 8, PP 4, one 1024-token sequence per rank
and micro-batch: the five fabrics x four link speeds x ten seeds; 0.35-0.55 s of CPU each) run by
:func:`fabricsim.sweep.run_sweep` into a fresh folder with 1 and then 2 local workers. Target:
2 workers give >= 1.8x the throughput of 1 on the 2-core reference machine.

Two throughputs per run: end to end (points / wall time of the whole ``run_sweep`` call: Numba
cache warm-up in the parent, worker start, every point, every Parquet file) and steady (points
finished per second between the first and the last result file, i.e. without the start-up).
Also printed: the cores the sweep's own processes used (their CPU seconds per wall second), the
cores all processes on the machine used (from /proc/stat), the points per CPU second of the
sweep's processes (the runner's CPU efficiency: what 2 workers cost over 1) and the load average. Other processes
on the machine take cores from the workers and lower the speed-up: read the figures with them.

    python benchmarks/bench_sweep.py [--points 200] [--workers 1,2]
    pytest benchmarks/bench_sweep.py        # the same measurement; asserts identical results
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

TARGET = 1.8


def sweep_points(n: int = 200):
    from fabricsim.experiment import FABRICS, Point

    # pp micro-batches and isolated collectives: the workload this benchmark has always measured
    base = dict(model="mixtral-8x7b", gpus=128, tp=4, ep=8, pp=4, micro_batch=1, seq_len=1024,
                micro_batches=4, mode="isolated")
    pts = [Point(**base, fabric=f, link_gbps=float(b), seed=s)
           for s in range(max(1, -(-n // 20))) for b in (100, 200, 400, 800) for f in FABRICS]
    return pts[:n]


def _cpu_times():
    """(busy, total) jiffies of the whole machine, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            vals = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals) - idle, sum(vals)


class _OwnCPU:
    """CPU seconds used by this process and all its descendants (the forkserver, the workers),
    sampled every 0.1 s while they live (needs psutil, which comes with dask.distributed)."""

    def __init__(self):
        import threading

        try:
            import psutil
        except ImportError:  # pragma: no cover
            self.psutil = None
            return
        self.psutil = psutil
        self.seen = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.me = psutil.Process()
        self.start = self._sample() or 0.0
        self.seen = {}
        self.thread.start()

    def _sample(self):
        for p in [self.me] + self.me.children(recursive=True):
            try:
                t = p.cpu_times()
                self.seen[p.pid] = t.user + t.system
            except self.psutil.Error:
                pass
        return sum(self.seen.values())

    def _run(self):
        while not self.stop.wait(0.1):
            self._sample()

    def seconds(self):
        if self.psutil is None:
            return None
        self.stop.set()
        self.thread.join()
        self._sample()
        return sum(self.seen.values()) - self.start


def measure(points, workers: int, root: str) -> dict:
    import pandas as pd

    from fabricsim.sweep import run_sweep

    out = os.path.join(root, f"w{workers}")
    load0 = os.getloadavg()[0]
    cpu0 = _cpu_times()
    own = _OwnCPU()
    t0 = time.perf_counter()
    report = run_sweep(points, out, workers=workers)
    wall = time.perf_counter() - t0
    own_s = own.seconds()
    cpu1 = _cpu_times()
    assert report.done == len(points) and report.failed == 0, report.failures
    files = [os.path.join(out, "points", n) for n in os.listdir(os.path.join(out, "points"))]
    mtimes = sorted(os.stat(p).st_mtime for p in files)
    span = mtimes[-1] - mtimes[0]
    steady = (len(mtimes) - 1) / span if span > 0 else float("nan")
    busy = None
    if cpu0 and cpu1:
        busy = (cpu1[0] - cpu0[0]) / max(1, cpu1[1] - cpu0[1]) * (os.cpu_count() or 1)
    df = pd.read_parquet(out).drop(columns=["wall_s"]).sort_values("point_id")
    return dict(workers=workers, points=len(points), wall_s=wall, end_to_end=len(points) / wall,
                steady=steady, busy_cores=busy, own_cores=own_s / wall if own_s else None,
                load_before=load0, load_after=os.getloadavg()[0],
                point_wall_s=float(pd.read_parquet(out).wall_s.mean()),
                results=df.reset_index(drop=True))


def run(n_points: int = 200, workers=(1, 2)) -> list:
    pts = sweep_points(n_points)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as root:
        for w in workers:
            rows.append(measure(pts, w, root))
    return rows


def per_cpu(r):
    """Points per CPU second of the sweep's own processes (None without psutil)."""
    return r["end_to_end"] / r["own_cores"] if r.get("own_cores") else None


def table(rows: list) -> str:
    base = rows[0]
    head = (f"{'workers':>7} {'points':>6} {'wall (s)':>9} {'pts/s e2e':>10} {'pts/s steady':>13} "
            f"{'x e2e':>6} {'x steady':>9} {'s/point':>8} {'sweep cores':>12} {'all cores':>10} "
            f"{'pts/cpu-s':>10} {'load 1m':>13}")
    lines = [head, "-" * len(head)]

    def cores(v):
        return f"{v:.2f}" if v is not None else "n/a"

    for r in rows:
        lines.append(f"{r['workers']:>7} {r['points']:>6} {r['wall_s']:>9.1f} "
                     f"{r['end_to_end']:>10.2f} "
                     f"{r['steady']:>13.2f} {r['end_to_end'] / base['end_to_end']:>6.2f} "
                     f"{r['steady'] / base['steady']:>9.2f} {r['point_wall_s']:>8.3f} "
                     f"{cores(r['own_cores']):>12} {cores(r['busy_cores']):>10} "
                     f"{cores(per_cpu(r)):>10} {r['load_before']:>6.2f}/{r['load_after']:<6.2f}")
    return "\n".join(lines)


def test_s1_sweep_throughput():
    import pandas as pd

    rows = run()
    print("\n" + table(rows))
    pd.testing.assert_frame_equal(rows[0]["results"], rows[1]["results"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=200)
    p.add_argument("--workers", default="1,2",
                   help="comma-separated worker counts (the first is the baseline)")
    a = p.parse_args(argv)
    import pandas as pd

    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
          f"load average {os.getloadavg()[0]:.2f} before the first run")
    rows = run(a.points, [int(x) for x in a.workers.split(",")])
    print(table(rows))
    for r in rows[1:]:
        pd.testing.assert_frame_equal(rows[0]["results"], r["results"])
    print("results identical across worker counts (every column but wall_s)")
    if len(rows) > 1:
        x = rows[-1]["end_to_end"] / rows[0]["end_to_end"]
        verdict = "meets" if x >= TARGET else "misses"
        print(f"{rows[-1]['workers']} workers: {x:.2f}x the end-to-end throughput of "
              f"{rows[0]['workers']} ({verdict} the {TARGET}x target)")
        print("sweep cores: CPU seconds of the sweep's processes per wall second; all cores: of "
              "every process on the machine. Where all cores exceeds sweep cores, other processes "
              "took CPU from the workers.")
        first, last = rows[0], rows[-1]
        if per_cpu(first) and per_cpu(last):
            eff = per_cpu(last) / per_cpu(first)
            print(f"CPU efficiency of {last['workers']} workers against {first['workers']}: "
                  f"{eff:.2f} (points per CPU second); with {last['workers']} idle cores for "
                  f"{last['workers']} workers and 1 for 1 this projects to about "
                  f"{eff * last['workers'] / first['workers']:.2f}x (an estimate, not a "
                  "measurement)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
