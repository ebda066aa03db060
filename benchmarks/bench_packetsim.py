"""P1-P3: the packet engine against htsim's figures (DCTCP, 4000 B payload + 64 B header, 1 us links).

| scenario | htsim wall | data link-hops | htsim data link-hops/s | htsim peak memory |
| P1: 128 hosts (k = 8), random permutation, 2 MB flows | 0.36 s | 0.373 M | 1.05 M/s | 14 MiB |
| P2: 1024 hosts (k = 16), all-to-all in groups of 8, 1 MB flows | 81 s | 10.5 M | 0.13 M/s | 507 MiB |
| P3: 1024 hosts, all-to-all in groups of 16, 1 MB flows | 206 s | 22.6 M | 0.11 M/s | 1,065 MiB |

Targets: >= 3x htsim's data link-hops/s at 128 hosts and >= 10x at 1024 hosts, with less memory.
``test_*`` time the warm engine (pytest-benchmark); ``python benchmarks/bench_packetsim.py`` runs each
scenario in a fresh process and prints whole-process wall time, warm wall time, link-hops/s,
events/s, peak memory (ru_maxrss), the part of it the Python/Numba runtime takes before the run,
and the engine state's own arrays (``stats["state_bytes"]``).
"""

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import pytest

from fabricsim import fat_tree, simulate_flows
from fabricsim.kernels.packetsim import PacketParams
from fabricsim.traffic import all_to_all, permutation

PARAMS = PacketParams(mtu_bytes=4064, hdr_bytes=64)
HTSIM = {"P1": (0.36, 1.05e6, 14), "P2": (81.0, 0.13e6, 507), "P3": (206.0, 0.11e6, 1065)}


def scenario(name):
    if name == "P1":
        src, dst = permutation(128, np.random.default_rng(0))
        return fat_tree(128, 100), src, dst, 2_000_000
    group = {"P2": 8, "P3": 16}[name]
    src, dst = all_to_all(1024, group)
    return fat_tree(1024, 100), src, dst, 1_000_000


def run(name):
    fab, src, dst, size = scenario(name)
    return simulate_flows(fab, src, dst, size, engine="packet", packet_params=PARAMS)


@pytest.mark.parametrize("name", ["P1", "P2", "P3"])
def test_packet_engine(benchmark, name):
    fab, _, _, _ = scenario(name)
    simulate_flows(fab, [0], [5], 10_000, engine="packet", packet_params=PARAMS)  # warm the JIT
    res = benchmark.pedantic(run, args=(name,), rounds=1 if name != "P1" else 3, iterations=1)
    assert res.status == "done"
    s = res.stats
    benchmark.extra_info.update(data_link_hops=s["data_link_hops"], all_link_hops=s["all_link_hops"],
                                events=s["events"])


def _maxrss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(name):
    """Run one scenario in this process (cold), then again (warm); print JSON figures.

    Memory: the process's peak RSS, and the runtime's part of it (the RSS after importing
    fabricsim and running a one-flow simulation, which loads the compiled engine)."""
    fab, _, _, _ = scenario("P1")
    simulate_flows(fab, [0], [5], 10_000, engine="packet", packet_params=PARAMS)
    runtime_mib = _maxrss_mib()
    t0 = time.perf_counter()
    res = run(name)
    cold = time.perf_counter() - t0
    t1 = time.perf_counter()
    res = run(name)
    warm = time.perf_counter() - t1
    s = res.stats
    print(json.dumps(dict(name=name, cold_s=cold, warm_s=warm, engine_s=s["wall_s"],
                          data_link_hops=s["data_link_hops"], all_link_hops=s["all_link_hops"],
                          events=s["events"], peak_packets=s["peak_packets"],
                          maxrss_mib=_maxrss_mib(), runtime_mib=runtime_mib,
                          state_mib=s["state_bytes"] / 2**20,
                          last_completion_ps=res.completion_ps)))


def main(names):
    print("| scenario | process wall (s) | warm wall (s) | data link-hops | data hops/s | vs htsim | "
          "all hops/s | events/s | peak RSS (MiB) | of which runtime | engine state (MiB) | htsim memory |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True,
                             check=True, env=dict(os.environ))
        process_wall = time.perf_counter() - t0
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rate = r["data_link_hops"] / r["engine_s"]
        print(f"| {name} | {process_wall:.2f} | {r['warm_s']:.2f} | {r['data_link_hops'] / 1e6:.2f} M | "
              f"{rate / 1e6:.2f} M/s | {rate / HTSIM[name][1]:.1f}x | "
              f"{r['all_link_hops'] / r['engine_s'] / 1e6:.2f} M/s | {r['events'] / r['engine_s'] / 1e6:.2f} M/s | "
              f"{r['maxrss_mib']:.0f} | {r['runtime_mib']:.0f} | {r['state_mib']:.1f} | {HTSIM[name][2]} |")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        _child(sys.argv[2])
    else:
        main(sys.argv[1:] or ["P1", "P2", "P3"])
