"""Circuit allocation of one OCS region (fabricsim.ocs.allocate): paper, reference, minmax."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabricsim.errors import ConfigError
from fabricsim.ocs import allocate_circuits, completion_bound
from fabricsim.ocs.allocate import (VARIANTS, allocate_minmax, minmax_allocation,
                                    symmetric_demand)
from fabricsim.workload.gating import REFERENCE_MATRIX, make_expert_load

LINK_GBPS = 100.0


def eps_gbps(alpha):
    return (8 - alpha) * LINK_GBPS


# ------------------------------------------------------------------------------------------------
# Plain reference implementations (lists and loops, written from the reference text)
# ------------------------------------------------------------------------------------------------

def naive_bound(d, c, link_gbps, eps_gbps_):
    """B(C) in seconds, one pair and one server at a time."""
    r = len(d)
    link, eps = link_gbps * 1e9, eps_gbps_ * 1e9
    worst = 0.0
    for i in range(r):
        for j in range(r):
            if i != j and c[i][j] > 0:
                worst = max(worst, d[i][j] * 8.0 / (c[i][j] * link))
    for s in range(r):
        out = sum(d[s][j] for j in range(r) if j != s and c[s][j] == 0)
        inn = sum(d[j][s] for j in range(r) if j != s and c[j][s] == 0)
        for load in (out, inn):
            if load > 0:
                worst = max(worst, np.inf if eps == 0 else load * 8.0 / eps)
    return worst


def naive_reference(d, alpha):
    """The released simulator's loop (reference section 3.5), scanning for the first maximum."""
    r = len(d)
    t = [[0.0 if i == j else float(d[i][j]) + float(d[j][i]) for j in range(r)] for i in range(r)]
    conn = [[0] * r for _ in range(r)]
    avail = [alpha] * r
    while sum(avail) > 0:
        bi, bj = 0, 0
        for i in range(r):
            for j in range(r):
                if t[i][j] > t[bi][bj]:
                    bi, bj = i, j
        if t[bi][bj] == 0:
            break
        if avail[bi] > 0 and avail[bj] > 0:
            conn[bi][bj] += 1
            conn[bj][bi] += 1
            avail[bi] -= 1
            avail[bj] -= 1
            t[bi][bj] = t[bj][bi] = t[bi][bj] / (conn[bi][bj] * 100)
        for k in (bi, bj):
            if avail[k] == 0:
                for x in range(r):
                    t[k][x] = t[x][k] = 0.0
    return conn


def naive_paper(d, alpha):
    """Algorithm 1 as printed: T = inf for loaded pairs, D/C once wired; break when the
    bottleneck pair has no free port (upper triangle, first maximum in row-major order)."""
    r = len(d)
    s = [[float(d[i][j]) + float(d[j][i]) for j in range(r)] for i in range(r)]
    conn = [[0] * r for _ in range(r)]
    avail = [alpha] * r

    def t(i, j):
        if s[i][j] == 0:
            return 0.0
        return np.inf if conn[i][j] == 0 else s[i][j] / conn[i][j]

    while True:
        pairs = [(i, j) for i in range(r) for j in range(i + 1, r)]
        if not pairs:
            break
        bi, bj = max(pairs, key=lambda p: (t(*p), -p[0], -p[1]))
        if t(bi, bj) == 0 or avail[bi] == 0 or avail[bj] == 0:
            break
        conn[bi][bj] += 1
        conn[bj][bi] += 1
        avail[bi] -= 1
        avail[bj] -= 1
    return conn


def brute_force_min(d, alpha, link_gbps, eps_gbps_):
    """The smallest B(C) over every symmetric configuration with row sums <= alpha."""
    r = len(d)
    pairs = [(i, j) for i in range(r) for j in range(i + 1, r)]
    best = np.inf
    for counts in itertools.product(range(alpha + 1), repeat=len(pairs)):
        deg = [0] * r
        c = [[0] * r for _ in range(r)]
        for (i, j), k in zip(pairs, counts):
            deg[i] += k
            deg[j] += k
            c[i][j] = c[j][i] = k
        if max(deg, default=0) <= alpha:
            best = min(best, naive_bound(d, c, link_gbps, eps_gbps_))
    return best


# ------------------------------------------------------------------------------------------------
# Strategies
# ------------------------------------------------------------------------------------------------

@st.composite
def demands(draw, min_r=1, max_r=8, max_bytes=10**6):
    """Integer byte matrices (float64 sums are exact), often with zero and tied entries."""
    r = draw(st.integers(min_r, max_r))
    style = draw(st.sampled_from(["random", "sparse", "ties", "uniform"]))
    if style == "uniform":
        value = draw(st.integers(0, max_bytes))
        d = np.full((r, r), value, dtype=np.int64)
    else:
        hi = 3 if style == "ties" else max_bytes
        d = np.array(draw(st.lists(st.integers(0, hi), min_size=r * r, max_size=r * r)),
                     dtype=np.int64).reshape(r, r)
        if style == "sparse":
            mask = draw(st.lists(st.booleans(), min_size=r * r, max_size=r * r))
            d = d * np.array(mask, dtype=np.int64).reshape(r, r)
    np.fill_diagonal(d, draw(st.integers(0, max_bytes)))  # the diagonal is ignored
    return d


def check_configuration(c, d, alpha):
    r = d.shape[0]
    assert isinstance(c, np.ndarray) and c.dtype == np.int64 and c.shape == (r, r)
    assert (c == c.T).all()
    assert (np.diag(c) == 0).all()
    assert (c >= 0).all()
    assert (c.sum(axis=1) <= alpha).all()
    idle = (d + d.T) == 0
    np.fill_diagonal(idle, False)
    assert (c[idle] == 0).all(), "a circuit between servers that exchange no bytes"


# ------------------------------------------------------------------------------------------------
# The reference trace
# ------------------------------------------------------------------------------------------------

def test_reference_trace_gives_24_circuits():
    """The paper: 24 optical circuits for 8 EP participants with alpha = 6 (Mixtral 8x22B)."""
    c = allocate_circuits(REFERENCE_MATRIX, 6)
    check_configuration(c, REFERENCE_MATRIX, 6)
    assert (c.sum(axis=1) == 6).all()
    assert c.sum() // 2 == 24
    assert (c == np.array(naive_reference(REFERENCE_MATRIX.tolist(), 6))).all()


def test_paper_strands_ports_on_the_reference_trace():
    """As printed, the loop breaks at the first exhausted bottleneck server: server 0 wires
    servers 1..6, then pair (0, 7) is the bottleneck with server 0 full."""
    c = allocate_circuits(REFERENCE_MATRIX, 6, "paper")
    check_configuration(c, REFERENCE_MATRIX, 6)
    assert c.sum(axis=1).tolist() == [6, 1, 1, 1, 1, 1, 1, 0]
    assert c.sum() // 2 == 6
    free = c.sum(axis=1) < 6
    assert free[1] and free[2] and REFERENCE_MATRIX[1, 2] > 0  # loaded pair, both ends free


@pytest.mark.parametrize("alpha", range(0, 9))
def test_variants_on_the_reference_trace(alpha):
    d = REFERENCE_MATRIX
    bounds = {}
    for variant in VARIANTS:
        c = allocate_circuits(d, alpha, variant)
        check_configuration(c, d, alpha)
        bounds[variant] = completion_bound(d, c, LINK_GBPS, eps_gbps(alpha))
    assert bounds["minmax"] <= bounds["reference"]
    assert bounds["minmax"] <= bounds["paper"]
    assert minmax_allocation(d, alpha).exact


def test_symmetric_demand():
    d = np.arange(9.0).reshape(3, 3)
    s = symmetric_demand(d)
    assert s.dtype == np.float64
    assert s.tolist() == [[0, 4, 8], [4, 0, 12], [8, 12, 0]]


# ------------------------------------------------------------------------------------------------
# Properties of every variant
# ------------------------------------------------------------------------------------------------

@settings(max_examples=150)
@given(d=demands(), alpha=st.integers(0, 9), variant=st.sampled_from(VARIANTS))
def test_configuration_properties(d, alpha, variant):
    before = d.copy()
    eps = 50.0 if alpha > 8 else None
    c = allocate_circuits(d, alpha, variant, eps_gbps=eps)
    check_configuration(c, d, alpha)
    assert (d == before).all(), "the input was modified"
    again = allocate_circuits(d.astype(np.float64).tolist(), alpha, variant, eps_gbps=eps)
    assert (c == again).all(), "not deterministic (or depends on the input's type)"


@settings(max_examples=150)
@given(d=demands(), alpha=st.integers(0, 8))
def test_greedy_variants_match_plain_implementations(d, alpha):
    assert (allocate_circuits(d, alpha, "reference")
            == np.array(naive_reference(d.tolist(), alpha), dtype=np.int64)).all()
    assert (allocate_circuits(d, alpha, "paper")
            == np.array(naive_paper(d.tolist(), alpha), dtype=np.int64)).all()


@settings(max_examples=150)
@given(d=demands(), alpha=st.integers(0, 8))
def test_minmax_is_never_worse_than_the_greedy_variants(d, alpha):
    res = minmax_allocation(d, alpha)
    assert res.exact
    assert res.bound_s == completion_bound(d, res.circuits, LINK_GBPS, eps_gbps(alpha))
    for variant in ("paper", "reference"):
        c = allocate_circuits(d, alpha, variant)
        assert res.bound_s <= completion_bound(d, c, LINK_GBPS, eps_gbps(alpha))


@settings(max_examples=200)
@given(d=demands(max_r=4, max_bytes=1000), alpha=st.integers(0, 3),
       eps=st.sampled_from([0.0, 50.0, 100.0, 300.0]))
def test_minmax_equals_brute_force(d, alpha, eps):
    res = minmax_allocation(d, alpha, link_gbps=LINK_GBPS, eps_gbps=eps)
    optimum = brute_force_min(d.tolist(), alpha, LINK_GBPS, eps)
    assert res.exact
    assert res.bound_s == optimum == res.lower_bound_s
    assert naive_bound(d.tolist(), res.circuits.tolist(), LINK_GBPS, eps) == optimum


@settings(max_examples=100)
@given(d=demands(min_r=2, max_r=4, max_bytes=1000), alpha=st.integers(1, 3),
       max_nodes=st.integers(1, 3))
def test_minmax_certificate_when_the_budget_runs_out(d, alpha, max_nodes):
    """With a tiny node budget the result is still valid, and its lower bound is sound."""
    res = minmax_allocation(d, alpha, max_nodes=max_nodes)
    check_configuration(res.circuits, d, alpha)
    optimum = brute_force_min(d.tolist(), alpha, LINK_GBPS, eps_gbps(alpha))
    assert res.lower_bound_s <= optimum <= res.bound_s
    if res.exact:
        assert res.bound_s == optimum == res.lower_bound_s
    assert res.bound_s <= completion_bound(d, allocate_circuits(d, alpha), LINK_GBPS,
                                           eps_gbps(alpha))


@settings(max_examples=100)
@given(d=demands(), alpha=st.integers(0, 8))
def test_minmax_spends_leftover_ports(d, alpha):
    """No loaded pair with a free port at both ends could take one more circuit without
    raising the bound (see allocate_minmax, "Leftover ports")."""
    res = minmax_allocation(d, alpha)
    c = res.circuits
    free = c.sum(axis=1) < alpha
    for i, j in itertools.combinations(range(d.shape[0]), 2):
        m = max(d[i, j], d[j, i])
        if m > 0 and free[i] and free[j]:
            assert c[i, j] == 0 and m * 8.0 / (LINK_GBPS * 1e9) > res.bound_s


@settings(max_examples=100)
@given(d=demands(), c=st.data())
def test_completion_bound_matches_plain_implementation(d, c):
    r = d.shape[0]
    circuits = np.array(c.draw(st.lists(st.integers(0, 3), min_size=r * r, max_size=r * r)),
                        dtype=np.int64).reshape(r, r)
    eps = c.draw(st.sampled_from([0.0, 100.0, 250.0]))
    assert completion_bound(d, circuits, 100.0, eps) == naive_bound(d.tolist(), circuits.tolist(),
                                                                   100.0, eps)


def test_minmax_does_not_depend_on_the_link_speed():
    """With eps = (8 - alpha) * link the bound scales as 1 / link and the choice is the same."""
    d = REFERENCE_MATRIX * 1_000_003
    for alpha in (2, 6):
        a = allocate_minmax(d, alpha, link_gbps=100)
        b = allocate_minmax(d, alpha, link_gbps=400)
        assert (a == b).all()


def test_minmax_fractional_demand():
    """Fractional bytes are accepted; the result is optimal up to the rounding of EPS sums."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        d = rng.random((4, 4)) * 1e6
        res = minmax_allocation(d, 2)
        optimum = brute_force_min(d.tolist(), 2, LINK_GBPS, eps_gbps(2))
        assert res.bound_s == pytest.approx(optimum, rel=1e-12)


# ------------------------------------------------------------------------------------------------
# Scale: MoE loads up to 16 servers, and the known hard case
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("servers, experts, top_k", [(4, 8, 2), (8, 64, 2), (16, 64, 4)])
def test_minmax_is_exact_on_synthetic_moe_loads(servers, experts, top_k):
    load = make_expert_load("synthetic", ep=servers, n_experts=experts, top_k=top_k,
                            tokens_per_rank=4096, moe_layers=2, seed=7, skew=0.5)
    for layer in range(2):
        d = load.rank_tokens(0, layer, 0) * 4096 * 2  # tokens x hidden x 2 bytes
        for alpha in (2, 6):
            res = minmax_allocation(d, alpha)
            assert res.exact
            check_configuration(res.circuits, d, alpha)
            ref = completion_bound(d, allocate_circuits(d, alpha), LINK_GBPS, eps_gbps(alpha))
            assert res.bound_s <= ref


def test_minmax_gap_certificate_on_a_hard_instance():
    """Near-uniform demand on 15 servers with alpha = 7: 105 ports cannot all be used (odd),
    and 1-byte differences make the optimum expensive to prove. The budgeted search returns a
    configuration whose certified gap is tiny."""
    rng = np.random.default_rng(0)
    d = np.where(rng.random((15, 15)) < 0.5, 1000.0, 1001.0)
    res = minmax_allocation(d, 7)
    check_configuration(res.circuits, d, 7)
    assert 0 < res.lower_bound_s <= res.bound_s
    assert res.bound_s / res.lower_bound_s < 1.001
    assert res.bound_s <= completion_bound(d, allocate_circuits(d, 7), LINK_GBPS, eps_gbps(7))


def test_uniform_odd_region_is_exact():
    """Uniform demand, 15 servers, odd alpha: the parity cut proves the optimum at the root."""
    d = np.full((15, 15), 1000.0)
    for alpha in (1, 3):
        assert minmax_allocation(d, alpha).exact


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("demand", [
    np.zeros((2, 3)), np.zeros(4), [[0, -1], [1, 0]], [[0, np.nan], [1, 0]],
    [[0, np.inf], [1, 0]], [["a", "b"], ["c", "d"]], [[0, 1], [1]],
])
def test_bad_demand(demand):
    for variant in VARIANTS:
        with pytest.raises(ConfigError) as err:
            allocate_circuits(demand, 2, variant)
        assert err.value.field == "demand_bytes"
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("alpha", [-1, 1.5, 2.0, "2", True, None])
def test_bad_alpha(alpha):
    for variant in VARIANTS:
        with pytest.raises(ConfigError) as err:
            allocate_circuits(np.ones((3, 3)), alpha, variant)
        assert err.value.field == "alpha"
        assert "integer >= 0" in str(err.value)


def test_bad_variant():
    with pytest.raises(ConfigError) as err:
        allocate_circuits(np.ones((3, 3)), 2, "greedy")
    assert err.value.field == "variant"
    assert "paper, reference, minmax" in str(err.value)


def test_bad_speeds():
    d = np.ones((3, 3))
    for kwargs, field in [(dict(link_gbps=0), "link_gbps"), (dict(link_gbps=np.nan), "link_gbps"),
                          (dict(eps_gbps=-1), "eps_gbps"), (dict(eps_gbps="x"), "eps_gbps")]:
        for variant in VARIANTS:
            with pytest.raises(ConfigError) as err:
                allocate_circuits(d, 2, variant, **kwargs)
            assert err.value.field == field
    with pytest.raises(ConfigError) as err:  # (8 - alpha) * link would be negative
        allocate_circuits(d, 9, "minmax")
    assert err.value.field == "eps_gbps"
    assert (allocate_circuits(d, 9, "minmax", eps_gbps=0).sum(axis=1) <= 9).all()
    with pytest.raises(ConfigError) as err:
        minmax_allocation(d, 2, max_nodes=0)
    assert err.value.field == "max_nodes"


def test_completion_bound_errors_and_edges():
    d = np.ones((3, 3))
    with pytest.raises(ConfigError) as err:
        completion_bound(d, np.zeros((2, 2), dtype=int), 100, 200)
    assert err.value.field == "circuits"
    with pytest.raises(ConfigError) as err:
        completion_bound(d, -np.ones((3, 3), dtype=int), 100, 200)
    assert err.value.field == "circuits"
    with pytest.raises(ConfigError) as err:
        completion_bound(d, np.zeros((3, 3)) + 0.5, 100, 200)
    assert err.value.field == "circuits"
    assert completion_bound(d, np.zeros((3, 3), dtype=int), 100, 0) == np.inf
    assert completion_bound(np.zeros((3, 3)), np.zeros((3, 3), dtype=int), 100, 0) == 0.0
    assert completion_bound(np.zeros((0, 0)), np.zeros((0, 0), dtype=int), 100, 0) == 0.0
    # each server sends 2 x 2 bytes over its EPS at 1 Gbit/s: 32 ns
    assert completion_bound(2 * d, np.zeros((3, 3), dtype=int), 100, 1) == pytest.approx(32e-9)


def test_tiny_regions():
    for variant in VARIANTS:
        assert allocate_circuits(np.zeros((0, 0)), 3, variant).shape == (0, 0)
        assert allocate_circuits([[5.0]], 3, variant).tolist() == [[0]]
    for variant in ("paper", "reference"):
        assert allocate_circuits([[0, 7], [0, 0]], 3, variant).tolist() == [[0, 3], [3, 0]]
    # minmax: 3 circuits (300 Gbit/s) are slower than the 500 Gbit/s EPS, so the pair stays off
    assert allocate_circuits([[0, 7], [0, 0]], 3, "minmax").tolist() == [[0, 0], [0, 0]]
    assert allocate_circuits([[0, 7], [0, 0]], 6, "minmax").tolist() == [[0, 6], [6, 0]]
