"""Max-min fair allocation (fabricsim.kernels.maxmin) against naive progressive filling."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import naive
from fabricsim.kernels.maxmin import max_min_fair

RTOL = 1e-9
ATOL_BPS = 1e-6


def solve(routes, capacity, caps=None, weight=None):
    ptr, links = naive.routes_to_csr(routes)
    return max_min_fair(ptr, links, np.asarray(capacity, np.float64),
                        None if caps is None else np.asarray(caps, np.float64),
                        None if weight is None else np.asarray(weight, np.float64))


# ------------------------------------------------------------------------------------------------
# Random instances
# ------------------------------------------------------------------------------------------------

capacity_values = st.one_of(st.sampled_from([0.0, 1.0, 10.0, 1e9, 1e11]),
                            st.floats(0.0, 1e11, allow_nan=False, allow_infinity=False))


@st.composite
def instances(draw, allow_empty=True):
    """(routes, capacity, caps or None, weight or None): a few links, routes of distinct links."""
    n_links = draw(st.integers(1, 6))
    n_flows = draw(st.integers(1, 10))
    capacity = draw(st.lists(capacity_values, min_size=n_links, max_size=n_links))
    use_caps = draw(st.booleans())
    caps = None
    if use_caps:
        caps = draw(st.lists(st.one_of(st.just(math.inf), st.just(0.0),
                                       st.floats(1e-3, 1e11, allow_nan=False)),
                             min_size=n_flows, max_size=n_flows))
    weight = None
    if draw(st.booleans()):
        weight = draw(st.lists(st.one_of(st.sampled_from([0.5, 1.0, 2.0, 3.0]), st.floats(0.01, 100.0)),
                               min_size=n_flows, max_size=n_flows))
    routes = []
    for f in range(n_flows):
        min_len = 0 if (allow_empty and caps is not None and caps[f] < math.inf) else 1
        route = draw(st.lists(st.integers(0, n_links - 1), min_size=min_len, max_size=n_links,
                              unique=True))
        routes.append(route)
    return routes, capacity, caps, weight


def assert_feasible(routes, capacity, caps, rates):
    assert np.all(rates >= 0.0)
    load = naive.link_loads(routes, rates, len(capacity))
    for l, c in enumerate(capacity):
        assert load[l] <= c * (1 + RTOL) + ATOL_BPS, f"link {l}: load {load[l]} > capacity {c}"
    if caps is not None:
        for f, c in enumerate(caps):
            assert rates[f] <= c * (1 + RTOL) + ATOL_BPS


def assert_bottlenecked(routes, capacity, caps, weight, rates):
    """Max-min certificate: each flow is at its cap, or crosses a saturated link on which its
    normalized rate (rate / weight) is the largest (Bertsekas & Gallager). Rates are compared
    with the same absolute tolerance as loads: below ATOL_BPS (e.g. subnormal capacities) the
    float rounding of rate / weight decides nothing."""
    w = np.ones(len(routes)) if weight is None else np.asarray(weight)
    norm = rates / w
    load = naive.link_loads(routes, rates, len(capacity))
    users = [[f for f, r in enumerate(routes) if l in r] for l in range(len(capacity))]
    for f, route in enumerate(routes):
        if caps is not None and rates[f] >= caps[f] * (1 - RTOL):
            continue
        ok = any(load[l] >= capacity[l] * (1 - RTOL) - ATOL_BPS
                 and norm[f] >= max(norm[g] for g in users[l]) * (1 - RTOL) - ATOL_BPS / w[f]
                 for l in route)
        assert ok, f"flow {f} (rate {rates[f]}) has no bottleneck"


@settings(max_examples=300)
@given(instances())
def test_matches_reference_and_is_max_min(inst):
    routes, capacity, caps, weight = inst
    rates = solve(routes, capacity, caps, weight)
    assert rates.shape == (len(routes),) and rates.dtype == np.float64
    assert_feasible(routes, capacity, caps, rates)
    assert_bottlenecked(routes, capacity, caps, weight, rates)
    expected = naive.max_min_naive(routes, capacity, caps, weight)
    np.testing.assert_allclose(rates, expected, rtol=RTOL, atol=ATOL_BPS)


@settings(max_examples=150)
@given(inst=instances(), seed=st.integers(0, 2**32 - 1))
def test_invariant_under_permutations(inst, seed):
    """Relabelling flows, relabelling links and reordering each route change nothing."""
    routes, capacity, caps, weight = inst
    rates = solve(routes, capacity, caps, weight)
    rng = np.random.default_rng(seed)
    fperm = rng.permutation(len(routes))
    lperm = rng.permutation(len(capacity))  # old link id l -> new id lperm[l]
    new_routes = [list(rng.permutation([int(lperm[l]) for l in routes[f]])) for f in fperm]
    new_capacity = np.empty(len(capacity))
    new_capacity[lperm] = capacity
    new_caps = None if caps is None else np.asarray(caps)[fperm]
    new_weight = None if weight is None else np.asarray(weight)[fperm]
    permuted = solve(new_routes, new_capacity, new_caps, new_weight)
    np.testing.assert_allclose(permuted, rates[fperm], rtol=RTOL, atol=ATOL_BPS)


@settings(max_examples=50)
@given(instances(allow_empty=False), st.floats(0.0, 1e10))
def test_flow_with_empty_route_gets_its_cap(inst, cap):
    routes, capacity, caps, weight = inst
    routes = routes + [[]]
    caps = (caps if caps is not None else [math.inf] * (len(routes) - 1)) + [cap]
    if weight is not None:
        weight = weight + [2.0]
    rates = solve(routes, capacity, caps, weight)
    assert rates[-1] == cap
    np.testing.assert_allclose(rates[:-1], solve(routes[:-1], capacity, caps[:-1],
                                                 None if weight is None else weight[:-1]),
                               rtol=RTOL, atol=ATOL_BPS)


def test_empty_route_without_cap_raises():
    with pytest.raises(ValueError, match="route_ptr"):
        solve([[0], []], [10.0])
    with pytest.raises(ValueError, match="route_ptr"):
        solve([[0], []], [10.0], caps=[5.0, math.inf])


# ------------------------------------------------------------------------------------------------
# Hand-computed cases
# ------------------------------------------------------------------------------------------------

def test_docstring_example():
    rates = solve([[0], [0, 1], [1, 2]], [10.0, 4.0, 100.0])
    np.testing.assert_allclose(rates, [8.0, 2.0, 2.0], rtol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_single_bottleneck(n):
    rates = solve([[0]] * n, [100e9])
    np.testing.assert_allclose(rates, np.full(n, 100e9 / n), rtol=1e-12)


def test_parking_lot():
    # Long flow 0 over links 0..2 (capacities 10, 4, 6); short flows 1..3 on one link each.
    rates = solve([[0, 1, 2], [0], [1], [2]], [10.0, 4.0, 6.0])
    # Link 1 is the tightest: 2 each; the other short flows take what the long flow leaves.
    np.testing.assert_allclose(rates, [2.0, 8.0, 2.0, 4.0], rtol=1e-12)


def test_equal_parking_lot():
    rates = solve([[0, 1, 2, 3], [0], [1], [2], [3]], [1e9] * 4)
    np.testing.assert_allclose(rates, np.full(5, 0.5e9), rtol=1e-12)


def test_weights_split_a_bottleneck_proportionally():
    rates = solve([[0], [0], [0, 1]], [12.0, 100.0], weight=[1.0, 2.0, 3.0])
    np.testing.assert_allclose(rates, [2.0, 4.0, 6.0], rtol=1e-12)


def test_caps_release_capacity_to_the_others():
    rates = solve([[0], [0], [0]], [12.0], caps=[1.0, math.inf, 20.0])
    np.testing.assert_allclose(rates, [1.0, 5.5, 5.5], rtol=1e-12)


def test_zero_capacity_link_holds_its_flows_only():
    rates = solve([[0, 1], [1], [2]], [0.0, 10.0, 3.0])
    np.testing.assert_array_equal(rates, [0.0, 10.0, 3.0])


def test_unused_links_and_zero_flows():
    assert solve([], [1.0, 2.0]).shape == (0,)
    np.testing.assert_allclose(solve([[2]], [1.0, 2.0, 3.0]), [3.0])


def test_bad_inputs():
    with pytest.raises(ValueError, match="route_links"):
        solve([[0, 3]], [1.0, 1.0])
    with pytest.raises(ValueError, match="capacity_bps"):
        solve([[0]], [-1.0])
    with pytest.raises(ValueError, match="weight"):
        solve([[0]], [1.0], weight=[0.0])
    with pytest.raises(ValueError, match="rate_cap_bps"):
        solve([[0]], [1.0], caps=[-1.0])


def test_reference_self_check():
    """The naive solver on the cases above (guards the reference itself)."""
    np.testing.assert_allclose(naive.max_min_naive([[0], [0, 1], [1, 2]], [10.0, 4.0, 100.0]),
                               [8.0, 2.0, 2.0])
    np.testing.assert_allclose(naive.max_min_naive([[0], [0], [0]], [12.0], [1.0, math.inf, 20.0]),
                               [1.0, 5.5, 5.5])
    np.testing.assert_allclose(naive.max_min_naive([[0], [0], [0, 1]], [12.0, 100.0],
                                                   weight=[1.0, 2.0, 3.0]), [2.0, 4.0, 6.0])
