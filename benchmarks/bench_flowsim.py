"""B2: the flow engine on a coupled all-to-all (every flow shares the core).

128-host non-blocking fat-tree (k = 8), 100 Gbps, 1 us links, all-to-all of 16,256 flows starting
together, sizes uniform in [64 KiB, 1 MiB] (seeded). Target: <= 2 s with the last completion within
0.1% of an exact fluid max-min solution (`tolerance=0`, checked by `test_b2_accuracy`). Also run at
1024 hosts (k = 16) with all-to-all inside groups of 64 hosts (64,512 flows).
"""

import numpy as np

from fabricsim.simulate import simulate_flows


def _run(fab, src, dst, size, tolerance=0.01):
    return simulate_flows(fab, src, dst, size, seed=0, tolerance=tolerance)


def _bench(benchmark, workload, rounds=3):
    fab, src, dst, size = workload
    _run(fab, src[:64], dst[:64], size[:64])  # warm the JIT
    res = benchmark.pedantic(_run, args=(fab, src, dst, size), rounds=rounds, iterations=1)
    assert res.status == "done"
    benchmark.extra_info.update(flows=int(src.shape[0]), last_completion_ps=int(res.completion_ps),
                                **{k: v for k, v in res.stats.items() if k != "wall_s"})
    return res


def test_b2_all_to_all_128(benchmark, b2_small):
    _bench(benchmark, b2_small)


def test_b2_groups_of_64_at_1024(benchmark, b2_large):
    _bench(benchmark, b2_large, rounds=1)


def test_b2_accuracy(b2_small):
    """The default tolerance against the exact engine (tolerance 0): last completion within 0.1%."""
    fab, src, dst, size = b2_small
    fast = _run(fab, src, dst, size)
    exact = _run(fab, src, dst, size, tolerance=0.0)
    rel = abs(fast.completion_ps - exact.completion_ps) / exact.completion_ps
    per_flow = np.abs(fast.finish_ps - exact.finish_ps) / exact.finish_ps
    print(f"\nB2 last completion: default {fast.completion_ps} ps, exact {exact.completion_ps} ps, "
          f"relative difference {rel:.2e}; per-flow mean {per_flow.mean():.2e}, max {per_flow.max():.2e}")
    assert rel <= 1e-3
