"""Traffic patterns (fabricsim.traffic): permutation, all-to-all, incast, matrix files, sizes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabricsim.config import TrafficConfig
from fabricsim.errors import ConfigError
from fabricsim.traffic import all_to_all, flow_sizes, from_config, incast, permutation, read_matrix


def rng(seed):
    return np.random.default_rng(seed)


# ------------------------------------------------------------------------------------------------
# permutation
# ------------------------------------------------------------------------------------------------

def check_derangement(hosts, src, dst):
    assert src.dtype == np.int64 and dst.dtype == np.int64
    np.testing.assert_array_equal(src, np.arange(hosts))  # every host sends exactly once
    np.testing.assert_array_equal(np.sort(dst), np.arange(hosts))  # ... and receives exactly once
    assert not np.any(src == dst), f"fixed point at {np.flatnonzero(src == dst)}"


@settings(max_examples=300)
@given(hosts=st.integers(2, 300), seed=st.integers(0, 2**32 - 1))
def test_permutation_is_derangement(hosts, seed):
    src, dst = permutation(hosts, rng(seed))
    check_derangement(hosts, src, dst)


@pytest.mark.parametrize("hosts", [2, 3, 4, 5, 6, 7])
def test_permutation_is_derangement_small_exhaustive_seeds(hosts):
    # Small host counts are where random permutations have several fixed points.
    for seed in range(2000):
        src, dst = permutation(hosts, rng(seed))
        check_derangement(hosts, src, dst)


def test_permutation_seeded():
    a = permutation(64, rng(5))
    b = permutation(64, rng(5))
    c = permutation(64, rng(6))
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_permutation_needs_two_hosts():
    with pytest.raises(ConfigError):
        permutation(1, rng(0))


# ------------------------------------------------------------------------------------------------
# all_to_all
# ------------------------------------------------------------------------------------------------

@st.composite
def hosts_and_group(draw):
    g = draw(st.integers(2, 24))
    n_groups = draw(st.integers(1, 8))
    return g * n_groups, g


@given(hg=hosts_and_group())
def test_all_to_all_groups(hg):
    hosts, g = hg
    src, dst = all_to_all(hosts, g)
    assert src.dtype == np.int64 and dst.dtype == np.int64
    assert src.shape == dst.shape == (hosts * (g - 1),)
    assert not np.any(src == dst)
    np.testing.assert_array_equal(src // g, dst // g)  # stays inside consecutive groups
    pairs = set(zip(src.tolist(), dst.tolist()))
    assert len(pairs) == src.size  # no duplicates
    for grp in range(hosts // g):
        members = range(grp * g, (grp + 1) * g)
        expected = {(s, d) for s in members for d in members if s != d}
        got = {p for p in pairs if p[0] // g == grp}
        assert got == expected  # g * (g - 1) per group
    # each host sends and receives g - 1 flows
    np.testing.assert_array_equal(np.bincount(src, minlength=hosts), g - 1)
    np.testing.assert_array_equal(np.bincount(dst, minlength=hosts), g - 1)


def test_all_to_all_default_group_is_all_hosts():
    src, dst = all_to_all(16)
    assert src.size == 16 * 15
    assert set(zip(src.tolist(), dst.tolist())) == {(s, d) for s in range(16) for d in range(16) if s != d}


@pytest.mark.parametrize("hosts,g", [(16, 3), (16, 5), (12, 8), (10, 4), (16, 32), (16, 1), (16, 0),
                                     (16, -2)])
def test_all_to_all_bad_group_size(hosts, g):
    with pytest.raises(ConfigError) as ei:
        all_to_all(hosts, g)
    assert ei.value.field == "traffic.group_size"
    assert str(hosts) in str(ei.value)


@given(hosts=st.integers(2, 200), data=st.data())
def test_all_to_all_accepts_exactly_divisors(hosts, data):
    g = data.draw(st.integers(2, hosts))
    if hosts % g == 0:
        assert all_to_all(hosts, g)[0].size == hosts * (g - 1)
    else:
        with pytest.raises(ConfigError):
            all_to_all(hosts, g)


# ------------------------------------------------------------------------------------------------
# incast
# ------------------------------------------------------------------------------------------------

@given(hosts=st.integers(2, 200), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_incast_distinct_senders(hosts, data, seed):
    target = data.draw(st.integers(0, hosts - 1))
    fan_in = data.draw(st.integers(1, hosts - 1))
    src, dst = incast(hosts, fan_in, target, rng(seed))
    assert src.dtype == np.int64 and dst.dtype == np.int64
    assert src.shape == dst.shape == (fan_in,)
    assert np.all(dst == target)
    assert target not in src
    assert np.unique(src).size == fan_in
    assert np.all((src >= 0) & (src < hosts))


def test_incast_full_fan_in_is_everyone_else():
    src, dst = incast(8, 7, 3, rng(0))
    assert sorted(src.tolist()) == [0, 1, 2, 4, 5, 6, 7]


@pytest.mark.parametrize("fan_in,target,field", [(0, 0, "traffic.fan_in"), (16, 0, "traffic.fan_in"),
                                                 (3, 16, "traffic.target"), (3, -1, "traffic.target")])
def test_incast_errors(fan_in, target, field):
    with pytest.raises(ConfigError) as ei:
        incast(16, fan_in, target, rng(0))
    assert ei.value.field == field


# ------------------------------------------------------------------------------------------------
# sizes and from_config
# ------------------------------------------------------------------------------------------------

def test_flow_sizes_constant_and_uniform():
    np.testing.assert_array_equal(flow_sizes(5, 7, None, None, rng(0)), np.full(5, 7))
    assert flow_sizes(5, 7, None, None, rng(0)).dtype == np.int64
    s = flow_sizes(20000, None, 10, 20, rng(1))
    assert s.dtype == np.int64 and s.min() == 10 and s.max() == 20  # inclusive bounds
    np.testing.assert_array_equal(s, flow_sizes(20000, None, 10, 20, rng(1)))
    np.testing.assert_array_equal(flow_sizes(4, None, 9, 9, rng(1)), np.full(4, 9))


def test_from_config_patterns():
    t = TrafficConfig(pattern="all_to_all", group_size=4, size_min_bytes=1, size_max_bytes=100,
                      seed=3, start_us=2.5)
    src, dst, size, start, _ = from_config(t, 16)
    assert src.size == 16 * 3
    assert np.all(start == 2_500_000) and start.dtype == np.int64
    assert np.all((size >= 1) & (size <= 100))
    src2, dst2, size2, _, _ = from_config(t, 16)
    np.testing.assert_array_equal(size, size2)  # seeded

    src, dst, size, start, _ = from_config(TrafficConfig(size_bytes=5), 32)
    check_derangement(32, src, dst)
    assert np.all(size == 5) and np.all(start == 0)

    src, dst, size, _, _ = from_config(TrafficConfig(pattern="incast", size_bytes=5, target=4), 16)
    assert sorted(src.tolist()) == [h for h in range(16) if h != 4] and np.all(dst == 4)
    src, dst, size, _, _ = from_config(TrafficConfig(pattern="incast", size_bytes=5, fan_in=3, seed=9), 16)
    assert src.size == 3 and 0 not in src


def test_from_config_seed_changes_traffic():
    a = from_config(TrafficConfig(size_bytes=1, seed=1), 64)[1]
    b = from_config(TrafficConfig(size_bytes=1, seed=2), 64)[1]
    assert not np.array_equal(a, b)


# ------------------------------------------------------------------------------------------------
# matrix files
# ------------------------------------------------------------------------------------------------

def make_matrix(hosts=8, seed=0):
    r = rng(seed)
    m = r.integers(0, 5000, size=(hosts, hosts)).astype(np.float64)
    m[r.random((hosts, hosts)) < 0.4] = 0
    np.fill_diagonal(m, 123)  # the diagonal is never a flow
    return m


def write_matrix(path, m):
    ext = path.suffix
    if ext == ".npy":
        np.save(path, m)
    elif ext == ".csv":
        np.savetxt(path, m, delimiter=",")
    else:
        pq.write_table(pa.table({f"d{j}": m[:, j] for j in range(m.shape[1])}), path)


@pytest.mark.parametrize("ext", [".npy", ".csv", ".parquet"])
def test_matrix_formats(tmp_path, ext):
    m = make_matrix()
    path = tmp_path / f"m{ext}"
    write_matrix(path, m)
    np.testing.assert_array_equal(read_matrix(str(path), 8), m)
    # relative to base_dir
    src, dst, size, start, _ = from_config(TrafficConfig(pattern="matrix", file=path.name, start_us=1),
                                        8, str(tmp_path))
    es, ed = np.nonzero((m > 0) & ~np.eye(8, dtype=bool))
    np.testing.assert_array_equal(src, es)
    np.testing.assert_array_equal(dst, ed)
    np.testing.assert_array_equal(size, m[es, ed].astype(np.int64))
    assert np.all(start == 1_000_000)
    assert src.dtype == dst.dtype == size.dtype == np.int64


def test_matrix_absolute_path_ignores_base_dir(tmp_path):
    m = make_matrix()
    path = tmp_path / "m.npy"
    np.save(path, m)
    src, *_ = from_config(TrafficConfig(pattern="matrix", file=str(path)), 8, "/nonexistent")
    assert src.size == np.count_nonzero((m > 0) & ~np.eye(8, dtype=bool))


@pytest.mark.parametrize("case", ["missing", "ext", "shape", "1d", "negative", "nan", "csv_header",
                                  "parquet_cols", "strings", "object"])
def test_matrix_errors(tmp_path, case):
    m = make_matrix()
    path = tmp_path / "m.npy"
    if case == "missing":
        path = tmp_path / "nope.npy"
    elif case == "ext":
        path = tmp_path / "m.txt"
        np.savetxt(path, m)
    elif case == "shape":
        np.save(path, np.ones((3, 3)))
    elif case == "1d":
        np.save(path, np.ones(64))
    elif case == "negative":
        m[1, 2] = -1
        np.save(path, m)
    elif case == "nan":
        m[1, 2] = np.nan
        np.save(path, m)
    elif case == "csv_header":
        path = tmp_path / "m.csv"
        path.write_text(",".join(f"d{j}" for j in range(8)) + "\n"
                        + "\n".join(",".join("1" for _ in range(8)) for _ in range(8)) + "\n")
    elif case == "parquet_cols":
        path = tmp_path / "m.parquet"
        write_matrix(path, m[:, :5])
    elif case == "strings":
        np.save(path, np.full((8, 8), "x"))
    elif case == "object":
        np.save(path, np.empty((8, 8), dtype=object), allow_pickle=True)
    with pytest.raises(ConfigError) as ei:
        read_matrix(str(path), 8)
    assert ei.value.field == "traffic.file"
    assert "\n" not in str(ei.value)
