"""Brute-force exact fluid max-min simulation, to validate the flow engine at benchmark scale.

At every completion it re-solves max-min from scratch for all active flows (fabricsim's
``max_min_fair`` kernel, itself checked against the textbook reference in tests/) and advances
time in float64 seconds, with no incremental shortcut. Slow (about a minute for B2); run it as

    python benchmarks/exact_reference.py

and it prints the last completion of B2 from this brute force, from the engine with
``tolerance=0`` and from the default tolerance.
"""

import sys
import time

import numpy as np

from fabricsim.kernels.maxmin import max_min_fair
from fabricsim.simulate import simulate_flows


def brute_force_finish_s(route_ptr, route_links, capacity_bps, size_bytes):
    """Finish time (s) of every flow, all starting at 0, re-solving max-min at every completion."""
    n = route_ptr.shape[0] - 1
    lengths = np.diff(route_ptr)
    rem_bits = size_bytes.astype(np.float64) * 8.0
    finish = np.full(n, np.nan)
    active = np.flatnonzero(rem_bits > 0)
    finish[rem_bits <= 0] = 0.0
    t = 0.0
    while active.size:
        sub_len = lengths[active]
        sub_ptr = np.concatenate([[0], np.cumsum(sub_len)])
        starts = np.repeat(route_ptr[active], sub_len)
        offs = np.arange(sub_ptr[-1]) - np.repeat(sub_ptr[:-1], sub_len)
        rates = max_min_fair(sub_ptr, route_links[starts + offs], capacity_bps)
        dt = np.min(rem_bits[active] / rates)
        t += dt
        rem_bits[active] -= rates * dt
        done = rem_bits[active] <= 1e-9 * size_bytes[active] * 8.0 + 1e-6
        finish[active[done]] = t
        active = active[~done]
    return finish


def main():
    sys.path.insert(0, "benchmarks")
    from conftest import a2a_workload

    fab, src, dst, size = a2a_workload(128, 128)
    routes = fab.route(src, dst, seed=0)
    t0 = time.time()
    brute = brute_force_finish_s(routes.route_ptr, routes.route_links, fab.link_state(), size)
    t_brute = time.time() - t0
    exact = simulate_flows(fab, src, dst, size, seed=0, tolerance=0.0)
    fast = simulate_flows(fab, src, dst, size, seed=0)
    last = brute.max() * 1e12
    print(f"brute force (re-solve every completion): last completion {last:.0f} ps ({t_brute:.0f} s)")
    for name, res in (("engine, tolerance 0", exact), ("engine, default tolerance", fast)):
        rel = abs(res.completion_ps - last) / last
        per_flow = np.abs(res.finish_ps - brute * 1e12) / (brute * 1e12)
        print(f"{name}: last completion {res.completion_ps} ps, relative difference {rel:.2e}; "
              f"per-flow mean {per_flow.mean():.2e}, max {per_flow.max():.2e}; "
              f"{res.stats['wall_s']:.2f} s")


if __name__ == "__main__":
    main()
