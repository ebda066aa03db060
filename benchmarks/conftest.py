"""Shared workloads of the benchmark suite (not part of the test run: `pytest benchmarks/`)."""

import numpy as np
import pytest

from fabricsim.fabric import fat_tree
from fabricsim.traffic import all_to_all

KIB = 1024


def a2a_workload(hosts: int, group: int, seed: int = 1):
    """The B2 workload: all-to-all inside groups, sizes uniform in [64 KiB, 1 MiB] (seeded)."""
    fab = fat_tree(hosts, 100)
    src, dst = all_to_all(hosts, group)
    size = np.random.default_rng(seed).integers(64 * KIB, 1024 * KIB + 1, src.shape[0])
    return fab, src, dst, size


@pytest.fixture(scope="session")
def b2_small():
    return a2a_workload(128, 128)


@pytest.fixture(scope="session")
def b2_large():
    return a2a_workload(1024, 64)
