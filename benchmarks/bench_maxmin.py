"""B1: max-min fair allocation on a k = 16 fat-tree (1024 GPU hosts, 100 Gbps).

Targets (2-core machine): 100,000 random flows <= 100 ms per solve; the full 1024-host all-to-all
(1,047,552 flows) <= 2 s per solve.
"""

import numpy as np
import pytest

from fabricsim.fabric import fat_tree
from fabricsim.kernels.maxmin import max_min_fair
from fabricsim.traffic import all_to_all


@pytest.fixture(scope="module")
def k16():
    return fat_tree(1024, 100)


def _solve_bench(benchmark, fab, src, dst):
    routes = fab.route(src, dst, seed=0)
    cap = fab.link_state()
    max_min_fair(routes.route_ptr, routes.route_links, cap)  # warm the JIT
    rates = benchmark.pedantic(max_min_fair, args=(routes.route_ptr, routes.route_links, cap),
                               rounds=5, iterations=1, warmup_rounds=1)
    load = np.bincount(routes.route_links, weights=np.repeat(rates, np.diff(routes.route_ptr)),
                       minlength=cap.shape[0])
    assert np.all(load <= cap * (1 + 1e-9))
    benchmark.extra_info.update(flows=int(src.shape[0]), route_entries=int(routes.route_links.shape[0]))


def test_b1_random_100k(benchmark, k16):
    rng = np.random.default_rng(0)
    src = rng.integers(0, 1024, 100_000)
    dst = (src + rng.integers(1, 1024, src.shape[0])) % 1024
    _solve_bench(benchmark, k16, src, dst)


def test_b1_full_all_to_all(benchmark, k16):
    src, dst = all_to_all(1024)
    _solve_bench(benchmark, k16, src, dst)
